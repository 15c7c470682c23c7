//! W1 as 1000 steps in one compiled loop, W3 (the 256×256 Jacobian, both modes) and W4 (the
//! 512×512 Hessian): stategrad only (candle and burn have no compiled loop, Jacobian or
//! Hessian), eager and jitted, beside the JAX and PyTorch scripts' `W1_loop1000`, `W3_jacrev`,
//! `W3_jacfwd` and `W4_fwdrev` in run.sh. Each result is checked against its closed form first.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use stategrad::prelude::*;

use super::{pool, Rng, THREADS};

fn tensor(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape).unwrap()
}

fn check(what: &str, got: &Tensor, want: &Tensor) {
    let err = (got.cast(DType::F64) - want).abs().max().item().unwrap();
    let scale = want.abs().max().item().unwrap();
    assert!(err <= 1e-4 * (1.0 + scale), "{what}: max error {err}");
}

/// 1000 SGD steps of W1 inside one `call_loop` (JAX: `fori_loop` under `jit`).
pub fn w1_loop(c: &mut Criterion) {
    let mut g = c.benchmark_group("W1_loop_1000");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for t in THREADS {
        let p = pool(t);
        let sg = super::w1_stategrad::new();
        let body = stategrad::jit(|_i: Tensor| sg.step(sg.xy()));
        // Guard: 1000 looped steps end where 1000 single steps end.
        let (w0, b0) = sg.params();
        let looped = body.call_loop(1000).unwrap().item().unwrap();
        let single = super::w1_stategrad::new();
        let mut last = 0.0;
        for _ in 0..1000 {
            last = single.step(single.xy()).unwrap().item().unwrap();
        }
        assert!((looped - last).abs() <= 1e-5 * (1.0 + last.abs()), "W1 loop guard");
        assert_eq!((w0, b0), (0.0, 0.0));
        g.bench_function(BenchmarkId::new("stategrad_jit", t), |bch| {
            p.install(|| bch.iter(|| body.call_loop(1000).unwrap()))
        });
    }
    g.finish();
}

/// W3 and W4, eager and jitted.
pub fn jacobians(c: &mut Criterion) {
    let mut rng = Rng(3);
    let n = 256;
    let sc = 1.0 / (n as f64).sqrt();
    let w1 = tensor(rng.normals(n * n, sc), &[n, n]);
    let b1 = tensor(rng.normals(n, 0.1), &[n]);
    let w2 = tensor(rng.normals(n * n, sc), &[n, n]);
    let b2 = tensor(rng.normals(n, 0.1), &[n]);
    let x3 = tensor(rng.normals(n, 1.0), &[n]);
    let f3 = |x: Tensor| (w2.matmul(&(w1.matmul(&x) + &b1).tanh()) + &b2).tanh();
    {
        // J = diag(1 - y²) W2 diag(1 - h²) W1, in f64.
        let d = |t: &Tensor| t.cast(DType::F64);
        let h = (d(&w1).matmul(&d(&x3)) + d(&b1)).tanh();
        let y = (d(&w2).matmul(&h) + d(&b2)).tanh();
        let inner = (1.0 - h.square()).reshape(&[-1, 1]) * d(&w1);
        let want = (1.0 - y.square()).reshape(&[-1, 1]) * d(&w2).matmul(&inner);
        check("W3 jacrev", &jacrev(f3).call(x3.clone()).unwrap(), &want);
        check("W3 jacfwd", &jacfwd(f3).call(x3.clone()).unwrap(), &want);
    }
    let jrev = stategrad::jit(|x: Tensor| jacrev(f3).call(x));
    let jfwd = stategrad::jit(|x: Tensor| jacfwd(f3).call(x));
    let same = |a: Tensor, b: Tensor| assert!(a.allclose(&b, 1e-4, 1e-5), "W3 jit guard");
    same(jrev.call(x3.clone()).unwrap(), jacrev(f3).call(x3.clone()).unwrap());
    same(jfwd.call(x3.clone()).unwrap(), jacrev(f3).call(x3.clone()).unwrap());
    for (group, fwd) in [("W3_jacrev_256", false), ("W3_jacfwd_256", true)] {
        let mut g = c.benchmark_group(group);
        g.sample_size(10);
        for t in THREADS {
            let p = pool(t);
            g.bench_function(BenchmarkId::new("stategrad_eager", t), |bch| {
                p.install(|| {
                    bch.iter(|| match fwd {
                        true => jacfwd(f3).call(x3.clone()).unwrap(),
                        false => jacrev(f3).call(x3.clone()).unwrap(),
                    })
                })
            });
            g.bench_function(BenchmarkId::new("stategrad_jit", t), |bch| {
                p.install(|| {
                    bch.iter(|| match fwd {
                        true => jfwd.call(x3.clone()).unwrap(),
                        false => jrev.call(x3.clone()).unwrap(),
                    })
                })
            });
        }
        g.finish();
    }

    let n = 512;
    let a = tensor(rng.normals(n * n, 1.0 / (n as f64).sqrt()), &[n, n]);
    let x4 = tensor(rng.normals(n, 1.0), &[n]);
    let f4 = |x: Tensor| a.matmul(&x).logsumexp(&[0], false) + 0.5 * x.square().sum();
    {
        // H = Aᵀ (diag(p) - p pᵀ) A + I with p = softmax(A x), in f64.
        let a64 = a.cast(DType::F64);
        let z = a64.matmul(&x4.cast(DType::F64));
        let p = (&z - z.max()).exp();
        let p = &p / p.sum();
        let pa = p.reshape(&[1, -1]).matmul(&a64);
        let mid = p.reshape(&[-1, 1]) * &a64;
        let want = a64.t().matmul(&mid) - pa.t().matmul(&pa) + Tensor::eye_dtype(n, DType::F64);
        check("W4 hessian", &hessian(f4).call(x4.clone()).unwrap(), &want);
    }
    let jh = stategrad::jit(|x: Tensor| hessian(f4).call(x));
    assert!(
        jh.call(x4.clone())
            .unwrap()
            .allclose(&hessian(f4).call(x4.clone()).unwrap(), 1e-4, 1e-5),
        "W4 jit guard"
    );
    let mut g = c.benchmark_group("W4_hessian_512");
    g.sample_size(10);
    for t in THREADS {
        let p = pool(t);
        g.bench_function(BenchmarkId::new("stategrad_eager", t), |bch| {
            p.install(|| bch.iter(|| hessian(f4).call(x4.clone()).unwrap()))
        });
        g.bench_function(BenchmarkId::new("stategrad_jit", t), |bch| {
            p.install(|| bch.iter(|| jh.call(x4.clone()).unwrap()))
        });
    }
    g.finish();
}
