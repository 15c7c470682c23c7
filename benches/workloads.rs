//! Criterion benchmarks of the BENCHMARK-WORKLOADS.md workloads (W1, W3, W4, W5) at 1 and 2
//! threads. Each workload checks its result against a reference once before timing.
//!
//! Run: `cargo bench --bench workloads` (HTML reports in target/criterion).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use stategrad::prelude::*;
use stategrad::{jit, random};

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
}

fn tanh_net(n: usize) -> (Tensor, Tensor, Tensor, Tensor, Tensor) {
    random::seed(1);
    let s = 1.0 / (n as f64).sqrt();
    (
        random::normal(&[n, n]) * s,
        random::normal(&[n]) * 0.1,
        random::normal(&[n, n]) * s,
        random::normal(&[n]) * 0.1,
        random::normal(&[n]),
    )
}

/// W3: the full 256x256 Jacobian of a two-layer tanh network, both modes.
fn w3(c: &mut Criterion) {
    let n = 256;
    let (w1, b1, w2, b2, x) = tanh_net(n);
    let f = |x: Tensor| (w2.matmul(&(w1.matmul(&x) + &b1).tanh()) + &b2).tanh();
    let jr = jacrev(f).call(x.clone()).unwrap();
    let jf = jacfwd(f).call(x.clone()).unwrap();
    assert!(jr.allclose(&jf, 1e-4, 1e-5), "W3 guard: jacrev != jacfwd");
    let mut g = c.benchmark_group("W3_jacobian_256");
    g.sample_size(10);
    for threads in [1, 2] {
        let p = pool(threads);
        g.bench_with_input(BenchmarkId::new("jacrev", threads), &threads, |bch, _| {
            p.install(|| bch.iter(|| jacrev(f).call(x.clone()).unwrap()))
        });
        g.bench_with_input(BenchmarkId::new("jacfwd", threads), &threads, |bch, _| {
            p.install(|| bch.iter(|| jacfwd(f).call(x.clone()).unwrap()))
        });
    }
    g.finish();
}

/// W4 (scaled to n = 128 to keep the suite short): the Hessian of logsumexp(A x) + 0.5 |x|^2.
fn w4(c: &mut Criterion) {
    let n = 128;
    random::seed(2);
    let a = random::normal(&[n, n]) * (1.0 / (n as f64).sqrt());
    let x = random::normal(&[n]);
    let f = |x: Tensor| a.matmul(&x).logsumexp(&[0], false) + 0.5 * x.square().sum();
    let h = hessian(f).call(x.clone()).unwrap();
    let ht = h.t();
    assert!(
        h.allclose(&ht, 1e-4, 1e-5),
        "W4 guard: Hessian not symmetric"
    );
    let mut g = c.benchmark_group("W4_hessian_128");
    g.sample_size(10);
    for threads in [1, 2] {
        let p = pool(threads);
        g.bench_with_input(BenchmarkId::new("hessian", threads), &threads, |bch, _| {
            p.install(|| bch.iter(|| hessian(f).call(x.clone()).unwrap()))
        });
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
    for threads in [1, 2] {
        let p = pool(threads);
        g.bench_with_input(BenchmarkId::new("eager", threads), &threads, |bch, _| {
            p.install(|| bch.iter(|| grad(f).call(x.clone()).unwrap()))
        });
        g.bench_with_input(BenchmarkId::new("jit", threads), &threads, |bch, _| {
            p.install(|| bch.iter(|| jf.call(x.clone()).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, w1, w3, w4, w5);
criterion_main!(benches);
