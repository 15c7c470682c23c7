//! Criterion benchmarks of the BENCHMARK-WORKLOADS.md workloads (W1–W7) at 1 and 2
//! threads (W2, W3, W4 and W6 are defined in `common/workloads.rs`, shared with
//! `peak_memory.rs`). Each workload checks its result against a reference once before timing.
//!
//! Run: `cargo bench --bench workloads` (HTML reports in target/criterion).

#[path = "common/workloads.rs"]
mod defs;
mod hand_fused;

use defs::{W2, W3, W4, W6};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use stategrad::jit::for_loop;
use stategrad::prelude::*;
use stategrad::{jit, random};

/// Thread counts to measure: 1 and 2, or the comma-separated list in
/// `STATEGRAD_BENCH_THREADS` (e.g. `1,2,4,8,16` on a larger machine).
fn thread_counts() -> Vec<usize> {
    std::env::var("STATEGRAD_BENCH_THREADS")
        .ok()
        .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1, 2])
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .expect("thread pool")
}

/// W1: the seed's linear regression step, value and grad w.r.t. W, b, then SGD.
fn w1(c: &mut Criterion) {
    let w = ParamState::new(Tensor::zeros(&[1, 1]));
    let b = ParamState::new(Tensor::zeros(&[1]));
    let params: StateMap = [(path!("b"), b.clone()), (path!("w"), w.clone())]
        .into_iter()
        .collect();
    let x = Tensor::linspace(-1.0, 1.0, 20).reshape(&[-1, 1]);
    let y = 3.0 * &x + 1.0;
    let loss = |(x, y): (Tensor, Tensor)| {
        let mse = (x.matmul(&w.value()) + b.value() - y).square().mean();
        mse + 0.01 * (w.value().square().sum() + b.value().square().sum())
    };
    let step = |(x, y): (Tensor, Tensor)| {
        let (g, l) = grad(loss)
            .grad_states(params.clone())
            .return_value()
            .call((x, y))?;
        for (p, s) in &params {
            s.set_value(s.value() - 0.1 * &g[p]);
        }
        Ok(l)
    };
    let jstep = jit(step);
    // Guard: one eager step from zero gives the known loss (mean(y^2) = 10.368...).
    let l0 = step((x.clone(), y.clone())).unwrap().item().unwrap();
    let expect = y.to_vec::<f64>().iter().map(|v| v * v).sum::<f64>() / 20.0;
    assert!((l0 - expect).abs() < 1e-4, "W1 guard: {l0} vs {expect}");
    let mut g = c.benchmark_group("W1_linear_step");
    g.bench_function("eager", |bch| {
        bch.iter(|| step((x.clone(), y.clone())).unwrap())
    });
    g.bench_function("jit", |bch| {
        bch.iter(|| jstep.call((x.clone(), y.clone())).unwrap())
    });
    g.finish();
    // 1000 steps inside one compiled loop (JAX: `fori_loop` under jit, 39 ns per step).
    let steps = 1000;
    let looped = || for_loop(steps, |_i: Tensor| step((x.clone(), y.clone())));
    // Guard: the loop equals 1000 single jitted steps from the same start.
    let start: Vec<Tensor> = params.values().map(|s| s.value()).collect();
    let l_loop = looped().unwrap();
    let after_loop: Vec<Tensor> = params.values().map(|s| s.value()).collect();
    for (s, v) in params.values().zip(&start) {
        s.set_value(v.clone());
    }
    let mut l_steps = Tensor::scalar(0.0f32);
    for _ in 0..steps {
        l_steps = jstep.call((x.clone(), y.clone())).unwrap();
    }
    assert!(l_loop.allclose(&l_steps, 1e-5, 1e-6), "W1 loop guard");
    for (s, v) in params.values().zip(&after_loop) {
        assert!(s.value().allclose(v, 1e-5, 1e-6), "W1 loop guard (params)");
    }
    // The same loop with its body compiled once (JAX's figure excludes compilation too): every
    // call replays the cached program 1000 times on one arena.
    let body = jit(|_i: Tensor| step((x.clone(), y.clone())));
    for (s, v) in params.values().zip(&start) {
        s.set_value(v.clone());
    }
    let l_body = body.call_loop(steps).unwrap();
    assert!(l_body.allclose(&l_steps, 1e-5, 1e-6), "W1 call_loop guard");
    let mut g = c.benchmark_group("W1_linear_loop_1000");
    g.bench_function("for_loop", |bch| bch.iter(|| looped().unwrap()));
    g.bench_function("call_loop", |bch| {
        bch.iter(|| body.call_loop(steps).unwrap())
    });
    g.finish();
}

/// W3: the full 256x256 Jacobian of a two-layer tanh network, both modes.
fn w3(c: &mut Criterion) {
    let w3 = W3::new(256);
    w3.check();
    let f = |x: Tensor| w3.f(x);
    let x = &w3.x;
    // Jitted, as JAX's figures are: one program, its elementwise steps fused.
    let jrev = jit(|x: Tensor| jacrev(f).call(x));
    let jfwd = jit(|x: Tensor| jacfwd(f).call(x));
    let want = jacrev(f).call(x.clone()).unwrap();
    for got in [jrev.call(x.clone()), jfwd.call(x.clone())] {
        assert!(got.unwrap().allclose(&want, 1e-4, 1e-5), "W3 guard: jit");
    }
    let mut g = c.benchmark_group("W3_jacobian_256");
    g.sample_size(10);
    for threads in thread_counts() {
        let p = pool(threads);
        g.bench_with_input(BenchmarkId::new("jacrev", threads), &threads, |bch, _| {
            p.install(|| bch.iter(|| jacrev(f).call(x.clone()).unwrap()))
        });
        g.bench_with_input(BenchmarkId::new("jacfwd", threads), &threads, |bch, _| {
            p.install(|| bch.iter(|| jacfwd(f).call(x.clone()).unwrap()))
        });
        g.bench_with_input(
            BenchmarkId::new("jit_jacrev", threads),
            &threads,
            |bch, _| p.install(|| bch.iter(|| jrev.call(x.clone()).unwrap())),
        );
        g.bench_with_input(
            BenchmarkId::new("jit_jacfwd", threads),
            &threads,
            |bch, _| p.install(|| bch.iter(|| jfwd.call(x.clone()).unwrap())),
        );
    }
    g.finish();
}

/// W4: the 512x512 Hessian of logsumexp(A x) + 0.5 |x|^2.
fn w4(c: &mut Criterion) {
    let w4 = W4::new(512);
    w4.check();
    let f = |x: Tensor| w4.f(x);
    let x = &w4.x;
    let jhess = jit(|x: Tensor| hessian(f).call(x));
    let want = hessian(f).call(x.clone()).unwrap();
    assert!(
        jhess.call(x.clone()).unwrap().allclose(&want, 1e-4, 1e-5),
        "W4 guard: jit"
    );
    let mut g = c.benchmark_group("W4_hessian_512");
    g.sample_size(10);
    for threads in thread_counts() {
        let p = pool(threads);
        g.bench_with_input(BenchmarkId::new("hessian", threads), &threads, |bch, _| {
            p.install(|| bch.iter(|| hessian(f).call(x.clone()).unwrap()))
        });
        g.bench_with_input(
            BenchmarkId::new("jit_hessian", threads),
            &threads,
            |bch, _| p.install(|| bch.iter(|| jhess.call(x.clone()).unwrap())),
        );
    }
    g.finish();
}

/// W5: grad of sum(tanh(x)*sigmoid(x) + 0.5 x^2) over 16M elements.
fn w5(c: &mut Criterion) {
    let n = 1 << 24;
    random::seed(3);
    let x = random::normal(&[n]);
    let f = |x: Tensor| (x.tanh() * x.sigmoid() + 0.5 * &x * &x).sum();
    let gx = grad(f).call(x.clone()).unwrap();
    // Guard on a few elements against the closed form.
    let xs = x.to_vec::<f64>();
    let gs = gx.to_vec::<f64>();
    for i in [0, 1, n / 2, n - 1] {
        let (t, s) = (xs[i].tanh(), 1.0 / (1.0 + (-xs[i]).exp()));
        let want = (1.0 - t * t) * s + t * s * (1.0 - s) + xs[i];
        assert!((gs[i] - want).abs() < 1e-4, "W5 guard at {i}");
    }
    let mut g = c.benchmark_group("W5_elementwise_grad_16M");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(128 << 20));
    let jf = jit(move |x: Tensor| grad(f).call(x));
    // The reference point of the goal: one hand-written pass, same vector math (checked first).
    let xv = x.to_vec::<f32>();
    let mut hand = vec![0.0f32; n];
    hand_fused::w5_grad_hand_fused(&xv, &mut hand, stategrad::simd::Par::Rayon);
    let jg = jf.call(x.clone()).unwrap().to_vec::<f32>();
    let worst = hand
        .iter()
        .zip(&jg)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-5, "W5 hand-fused guard: {worst}");
    for threads in thread_counts() {
        let p = pool(threads);
        g.bench_with_input(BenchmarkId::new("eager", threads), &threads, |bch, _| {
            p.install(|| bch.iter(|| grad(f).call(x.clone()).unwrap()))
        });
        g.bench_with_input(
            BenchmarkId::new("hand_fused", threads),
            &threads,
            |bch, _| {
                p.install(|| {
                    bch.iter(|| {
                        hand_fused::w5_grad_hand_fused(&xv, &mut hand, stategrad::simd::Par::Rayon)
                    })
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("jit", threads), &threads, |bch, _| {
            p.install(|| bch.iter(|| jf.call(x.clone()).unwrap()))
        });
    }
    g.finish();
}

/// W2: one SGD training step of the 784-512-512-10 MLP at batch 256.
fn w2(c: &mut Criterion) {
    let w2 = W2::new();
    w2.check();
    let step = |xy: (Tensor, Tensor)| w2.step(xy);
    let mut g = c.benchmark_group("W2_mlp_step_b256");
    g.sample_size(10);
    g.throughput(Throughput::Elements(W2::FLOPS as u64));
    for threads in thread_counts() {
        let p = pool(threads);
        g.bench_with_input(BenchmarkId::new("eager", threads), &threads, |bch, _| {
            p.install(|| bch.iter(|| step(w2.xy()).unwrap()))
        });
        // The same step compiled: forward, backward and update in one program.
        let jstep = jit(step);
        let lj = p.install(|| jstep.call(w2.xy())).unwrap();
        assert!(lj.item().unwrap().is_finite(), "W2 jit guard");
        g.bench_with_input(BenchmarkId::new("jit", threads), &threads, |bch, _| {
            p.install(|| bch.iter(|| jstep.call(w2.xy()).unwrap()))
        });
    }
    g.finish();
}

/// W6: per-example gradients of the W2 MLP at batch 64 (vmap of grad).
fn w6(c: &mut Criterion) {
    let w6 = W6::new();
    w6.check();
    let per_example = |xy: (Tensor, Tensor)| w6.example_grad(xy);
    let mut g = c.benchmark_group("W6_per_example_grads_b64");
    g.sample_size(10);
    for threads in thread_counts() {
        let p = pool(threads);
        g.bench_with_input(
            BenchmarkId::new("vmap_grad", threads),
            &threads,
            |bch, _| p.install(|| bch.iter(|| vmap(per_example).call(w6.xy()).unwrap())),
        );
    }
    g.finish();
}

/// W7: the machine limits — SGEMM at 1024³ and 2048³ through the tensor API, and the triad
/// a = b + s·c over 64M floats (jitted: one fused pass).
fn w7(c: &mut Criterion) {
    let mut g = c.benchmark_group("W7_limits");
    g.sample_size(10);
    for n in [1024usize, 2048] {
        random::seed(7);
        let a = random::normal(&[n, n]);
        let b = random::normal(&[n, n]);
        let c0 = a.matmul(&b);
        // Guard: one entry against a dot product in f64.
        let (av, bv) = (a.to_vec::<f64>(), b.to_vec::<f64>());
        let want: f64 = (0..n).map(|k| av[3 * n + k] * bv[k * n + 5]).sum();
        let got = c0.to_vec::<f64>()[3 * n + 5];
        assert!(
            (got - want).abs() < 1e-3 * (1.0 + want.abs()),
            "W7 guard: {got} vs {want}"
        );
        g.throughput(Throughput::Elements((2 * n * n * n) as u64));
        for threads in thread_counts() {
            let p = pool(threads);
            g.bench_with_input(
                BenchmarkId::new(format!("sgemm_{n}"), threads),
                &threads,
                |bch, _| p.install(|| bch.iter(|| a.matmul(&b))),
            );
        }
    }
    let n = 1 << 26;
    let b = Tensor::ones(&[n]);
    let cc = Tensor::full(&[n], 2.0);
    let triad = jit(|(b, c): (Tensor, Tensor)| &b + 3.0 * &c);
    let t = triad.call((b.clone(), cc.clone())).unwrap();
    assert_eq!(t.to_vec::<f32>()[n - 1], 7.0, "W7 triad guard");
    g.throughput(Throughput::Bytes((3 * 4 * n) as u64));
    for threads in thread_counts() {
        let p = pool(threads);
        g.bench_with_input(
            BenchmarkId::new("triad_64M", threads),
            &threads,
            |bch, _| p.install(|| bch.iter(|| triad.call((b.clone(), cc.clone())).unwrap())),
        );
    }
    g.finish();
}

/// Per-call dispatch: the cost of one tiny primitive, and of one tiny gradient, eager and jitted.
fn dispatch(c: &mut Criterion) {
    let x = Tensor::new([1.0f32, 2.0, 3.0]);
    let f = |x: Tensor| (&x * &x).sum();
    let jf = jit(|x: Tensor| grad(f).call(x));
    assert_eq!(
        jf.call(x.clone()).unwrap().to_vec::<f32>(),
        vec![2.0, 4.0, 6.0]
    );
    let mut g = c.benchmark_group("dispatch");
    g.bench_function("add_3", |bch| bch.iter(|| &x + &x));
    g.bench_function("grad_3_eager", |bch| {
        bch.iter(|| grad(f).call(x.clone()).unwrap())
    });
    g.bench_function("grad_3_jit", |bch| bch.iter(|| jf.call(x.clone()).unwrap()));
    g.finish();
}

/// Kernels on their own (`stategrad::simd`, sequential): elementwise ops and reductions over
/// 1M f32 (GB/s), and the GEMM shapes of W2 (forward and backward), W3 and W4 (GFLOP/s) at 1
/// and 2 threads. Each checks one output element against a direct computation first.
fn kernels(c: &mut Criterion) {
    use stategrad::simd::{self, BinaryOp, Par, ReduceOp, UnaryOp};
    let n = 1 << 20;
    random::seed(9);
    let a = random::normal(&[n]).to_vec::<f32>();
    let b = random::normal(&[n]).to_vec::<f32>();
    let mut o = vec![0.0f32; n];
    let mut g = c.benchmark_group("kernels_elementwise_1M");
    g.throughput(Throughput::Bytes((3 * 4 * n) as u64));
    simd::binary(BinaryOp::Mul, &a, &b, &mut o, Par::Seq);
    assert_eq!(o[7], a[7] * b[7], "kernel guard");
    g.bench_function("mul", |bch| {
        bch.iter(|| simd::binary(BinaryOp::Mul, &a, &b, &mut o, Par::Seq))
    });
    g.throughput(Throughput::Bytes((2 * 4 * n) as u64));
    for op in [UnaryOp::Exp, UnaryOp::Tanh, UnaryOp::Sigmoid] {
        simd::unary(op, &a, &mut o, Par::Seq);
        let want = simd::reference::unary_op(op, a[5]);
        assert!(
            (o[5] - want).abs() <= 1e-6 * want.abs().max(1.0),
            "kernel guard {op:?}"
        );
        g.bench_function(format!("{op:?}").to_lowercase(), |bch| {
            bch.iter(|| simd::unary(op, &a, &mut o, Par::Seq))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("kernels_reduce_1M");
    g.throughput(Throughput::Bytes((4 * n) as u64));
    g.bench_function("sum_all", |bch| {
        bch.iter(|| simd::reduce_all(ReduceOp::Sum, &a))
    });
    let mut rows = vec![0.0f32; 1024];
    g.bench_function("sum_rows_1024x1024", |bch| {
        bch.iter(|| simd::reduce_axes(ReduceOp::Sum, &a, &[1024, 1024], &[1], &mut rows))
    });
    let mut cols = vec![0.0f32; 1024];
    g.bench_function("sum_cols_1024x1024", |bch| {
        bch.iter(|| simd::reduce_axes(ReduceOp::Sum, &a, &[1024, 1024], &[0], &mut cols))
    });
    g.finish();
    // (name, m, k, n, A transposed, B transposed)
    let shapes = [
        ("w2_fwd_256x784x512", 256, 784, 512, false, false),
        ("w2_fwd_256x512x512", 256, 512, 512, false, false),
        ("w2_fwd_256x512x10", 256, 512, 10, false, false),
        ("w2_dx_256x512x784_bt", 256, 512, 784, false, true),
        ("w2_dw_784x256x512_at", 784, 256, 512, true, false),
        ("w2_dw_512x256x512_at", 512, 256, 512, true, false),
        ("w3_256x256x256", 256, 256, 256, false, false),
        ("w4_512x512x512", 512, 512, 512, false, false),
    ];
    let mut g = c.benchmark_group("kernels_gemm");
    g.sample_size(20);
    for (name, m, k, nn, ta, tb) in shapes {
        let x = random::normal(&[m * k]).to_vec::<f32>();
        let y = random::normal(&[k * nn]).to_vec::<f32>();
        let mut z = vec![0.0f32; m * nn];
        let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
        let (rsb, csb) = if tb { (1, k) } else { (nn, 1) };
        let product = |z: &mut [f32], par: Par| {
            simd::gemm(
                m, k, nn, 1.0, &x, rsa, csa, &y, rsb, csb, 0.0, z, nn, 1, par,
            )
        };
        product(&mut z, Par::Seq);
        let want: f64 = (0..k)
            .map(|p| x[rsa + p * csa] as f64 * y[p * rsb + 2 * csb] as f64)
            .sum();
        assert!(
            (z[nn + 2] as f64 - want).abs() < 1e-3 * (k as f64).sqrt(),
            "GEMM guard {name}"
        );
        g.throughput(Throughput::Elements((2 * m * k * nn) as u64));
        for threads in thread_counts() {
            let p = pool(threads);
            g.bench_with_input(BenchmarkId::new(name, threads), &threads, |bch, _| {
                p.install(|| bch.iter(|| product(&mut z, Par::Rayon)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, w1, w2, w3, w4, w5, w6, w7, dispatch, kernels);
criterion_main!(benches);
