//! Peers in the same run: stategrad, candle and burn on W1, W2 and W5 of
//! shared/BENCHMARK-WORKLOADS.md (and stategrad alone on W1 in one loop, W3 and W4, which the
//! peers lack: `loops_jacobians/mod.rs`) and on one epoch of the digits MLP of examples/digits.rs
//! (`digits_epoch/mod.rs`), one criterion group per workload with one bench function per
//! library, so that the ratios come from one process on one machine state.
//!
//! Run: `cd benches/peers && cargo bench --bench peers` (see README.md for the thread setup), or
//! `benches/peers/run.sh` for these groups, JAX and PyTorch interleaved, and the merged table.
//!
//! Every library gets identical f32 inputs (and, for W2, identical initial weights) from one
//! fixed-seed generator, and each library's result is checked once against an f64 reference before
//! anything is timed: a fast wrong answer is not a result.
//!
//! Threads (bench ids end in the thread count):
//! - stategrad and burn (flex backend) run on the *current* rayon pool, so each is benched inside
//!   explicit rayon pools of 1 and 2 threads in the same process.
//! - candle sizes its own worker pool and its GEMM parallelism from `RAYON_NUM_THREADS` (else the
//!   physical core count) once per process, so candle is benched only at that count. This binary
//!   sets `RAYON_NUM_THREADS` to the number of logical CPUs when it is unset, so `candle/N` is
//!   labelled truthfully; run `RAYON_NUM_THREADS=1 cargo bench --bench peers -- candle` for
//!   candle at one thread.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

/// The digits epoch (`digits_epoch_mlp`): stategrad, candle and burn training the example's MLP.
mod digits_epoch;
/// W1 in one compiled loop, W3 and W4: stategrad only (the peers have none), beside JAX/PyTorch.
mod loops_jacobians;

// ---------------------------------------------------------------------------------------------
// Shared set-up: threads, fixed-seed inputs, f64 references.
// ---------------------------------------------------------------------------------------------

/// The thread counts at which pool-controllable libraries are benched.
const THREADS: [usize; 2] = [1, 2];

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .expect("thread pool")
}

/// The thread count candle uses in this process (it reads `RAYON_NUM_THREADS`).
fn candle_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .expect("RAYON_NUM_THREADS is set in main")
}

/// SplitMix64 with Box-Muller normals: the one source of every input, for every library.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
    fn normals(&mut self, n: usize, scale: f64) -> Vec<f32> {
        let mut v = Vec::with_capacity(n + 1);
        while v.len() < n {
            let (u1, u2) = (self.uniform(), self.uniform());
            let r = (-2.0 * u1.ln()).sqrt();
            let t = 2.0 * std::f64::consts::PI * u2;
            v.push((r * t.cos() * scale) as f32);
            v.push((r * t.sin() * scale) as f32);
        }
        v.truncate(n);
        v
    }
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y).abs())
        .fold(0.0, f64::max)
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().map(|v| v.abs()).fold(0.0, f64::max)
}

// ---------------------------------------------------------------------------------------------
// W1: the seed's linear-regression step.
// ---------------------------------------------------------------------------------------------

const W1_N: usize = 20;
const W1_LR: f64 = 0.1;

fn w1_data() -> (Vec<f32>, Vec<f32>) {
    // x = linspace(-1, 1, 20), y = 3x + 1, both rounded to f32 once.
    let x: Vec<f32> = (0..W1_N)
        .map(|i| (-1.0 + 2.0 * i as f64 / (W1_N - 1) as f64) as f32)
        .collect();
    let y: Vec<f32> = x.iter().map(|&v| (3.0 * v as f64 + 1.0) as f32).collect();
    (x, y)
}

/// Closed form in f64: (loss, dL/dW, dL/db) at scalar W, b.
fn w1_ref(w: f64, b: f64) -> (f64, f64, f64) {
    let (x, y) = w1_data();
    let n = W1_N as f64;
    let (mut loss, mut gw, mut gb) = (0.0, 0.0, 0.0);
    for i in 0..W1_N {
        let (xi, yi) = (x[i] as f64, y[i] as f64);
        let r = xi * w + b - yi;
        loss += r * r / n;
        gw += 2.0 * r * xi / n;
        gb += 2.0 * r / n;
    }
    (loss + 0.01 * (w * w + b * b), gw + 0.02 * w, gb + 0.02 * b)
}

/// What every library's W1 must expose to the guard.
trait W1Lib {
    /// Loss and (dW, db) at the current parameters, without updating them.
    fn value_and_grad(&self) -> (f64, f64, f64);
    /// The timed step (value and grad, then SGD). Returns the loss before the update.
    fn step(&self) -> f64;
    /// Current (W, b).
    fn params(&self) -> (f64, f64);
}

/// Guard: from zero, the loss and gradients match the closed form; two timed steps follow the f64
/// SGD trajectory and return the closed-form losses.
fn w1_guard(name: &str, lib: &dyn W1Lib) {
    let tol = 1e-4;
    let (l, gw, gb) = lib.value_and_grad();
    let (rl, rgw, rgb) = w1_ref(0.0, 0.0);
    assert!(
        (l - rl).abs() < tol && (gw - rgw).abs() < tol && (gb - rgb).abs() < tol,
        "W1 guard {name}: value_and_grad ({l}, {gw}, {gb}) vs closed form ({rl}, {rgw}, {rgb})"
    );
    let (mut w, mut b) = (0.0f64, 0.0f64);
    for s in 0..2 {
        let (rl, rgw, rgb) = w1_ref(w, b);
        let l = lib.step();
        w -= W1_LR * rgw;
        b -= W1_LR * rgb;
        let (pw, pb) = lib.params();
        assert!(
            (l - rl).abs() < tol && (pw - w).abs() < tol && (pb - b).abs() < tol,
            "W1 guard {name}, step {s}: loss {l} vs {rl}, W {pw} vs {w}, b {pb} vs {b}"
        );
    }
}

mod w1_stategrad {
    use stategrad::prelude::*;

    pub struct Sg {
        w: State,
        b: State,
        params: StateMap,
        x: Tensor,
        y: Tensor,
    }

    pub fn new() -> Sg {
        let (x, y) = super::w1_data();
        let w = ParamState::new(Tensor::zeros(&[1, 1]));
        let b = ParamState::new(Tensor::zeros(&[1]));
        let params: StateMap = [(path!("b"), b.clone()), (path!("w"), w.clone())]
            .into_iter()
            .collect();
        Sg {
            w,
            b,
            params,
            x: Tensor::from_vec(x, &[super::W1_N, 1]).unwrap(),
            y: Tensor::from_vec(y, &[super::W1_N, 1]).unwrap(),
        }
    }

    impl Sg {
        pub fn loss(&self, (x, y): (Tensor, Tensor)) -> Tensor {
            let (w, b) = (self.w.value(), self.b.value());
            let mse = (x.matmul(&w) + &b - y).square().mean();
            mse + 0.01 * (w.square().sum() + b.square().sum())
        }
        pub fn step(&self, xy: (Tensor, Tensor)) -> Result<Tensor> {
            let (g, l) = grad(|xy| self.loss(xy))
                .grad_states(self.params.clone())
                .return_value()
                .call(xy)?;
            for (p, s) in &self.params {
                s.set_value(s.value() - super::W1_LR * &g[p]);
            }
            Ok(l)
        }
        pub fn xy(&self) -> (Tensor, Tensor) {
            (self.x.clone(), self.y.clone())
        }
        pub fn value_and_grad(&self) -> (f64, f64, f64) {
            let (g, l) = grad(|xy| self.loss(xy))
                .grad_states(self.params.clone())
                .return_value()
                .call(self.xy())
                .unwrap();
            (
                l.item().unwrap(),
                g[&path!("w")].to_vec::<f64>()[0],
                g[&path!("b")].to_vec::<f64>()[0],
            )
        }
        pub fn params(&self) -> (f64, f64) {
            (
                self.w.value().to_vec::<f64>()[0],
                self.b.value().to_vec::<f64>()[0],
            )
        }
    }

    impl super::W1Lib for Sg {
        fn value_and_grad(&self) -> (f64, f64, f64) {
            Sg::value_and_grad(self)
        }
        fn step(&self) -> f64 {
            Sg::step(self, self.xy()).unwrap().item().unwrap()
        }
        fn params(&self) -> (f64, f64) {
            Sg::params(self)
        }
    }

    /// The same step under `jit` (forward, backward and update replayed as one program).
    pub struct SgJit<'a, F: Fn((Tensor, Tensor)) -> Result<Tensor>> {
        pub sg: &'a Sg,
        pub jstep: stategrad::Jit<F, (Tensor, Tensor), Result<Tensor>>,
    }

    impl<F: Fn((Tensor, Tensor)) -> Result<Tensor>> super::W1Lib for SgJit<'_, F> {
        fn value_and_grad(&self) -> (f64, f64, f64) {
            self.sg.value_and_grad()
        }
        fn step(&self) -> f64 {
            self.jstep.call(self.sg.xy()).unwrap().item().unwrap()
        }
        fn params(&self) -> (f64, f64) {
            self.sg.params()
        }
    }
}

mod w1_candle {
    use candle_core::{Device, Result, Tensor, Var};

    pub struct Cd {
        w: Var,
        b: Var,
        x: Tensor,
        y: Tensor,
    }

    pub fn new() -> Cd {
        let (x, y) = super::w1_data();
        let dev = Device::Cpu;
        Cd {
            w: Var::from_vec(vec![0.0f32], (1, 1), &dev).unwrap(),
            b: Var::from_vec(vec![0.0f32], 1, &dev).unwrap(),
            x: Tensor::from_vec(x, (super::W1_N, 1), &dev).unwrap(),
            y: Tensor::from_vec(y, (super::W1_N, 1), &dev).unwrap(),
        }
    }

    impl Cd {
        fn loss(&self) -> Result<Tensor> {
            let pred = self.x.matmul(&self.w)?.broadcast_add(&self.b)?;
            let mse = (pred - &self.y)?.sqr()?.mean_all()?;
            let reg = ((self.w.sqr()?.sum_all()? + self.b.sqr()?.sum_all()?)? * 0.01)?;
            mse + reg
        }
        /// Loss and gradients (dW, db).
        fn loss_grads(&self) -> Result<(Tensor, Tensor, Tensor)> {
            let loss = self.loss()?;
            let grads = loss.backward()?;
            let gw = grads.get(&self.w).expect("grad w").clone();
            let gb = grads.get(&self.b).expect("grad b").clone();
            Ok((loss, gw, gb))
        }
        pub fn step(&self) -> Result<Tensor> {
            let (loss, gw, gb) = self.loss_grads()?;
            self.w.set(&(self.w.as_tensor() - (gw * super::W1_LR)?)?)?;
            self.b.set(&(self.b.as_tensor() - (gb * super::W1_LR)?)?)?;
            Ok(loss)
        }
    }

    fn scalar(t: &Tensor) -> f64 {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64
    }

    impl super::W1Lib for Cd {
        fn value_and_grad(&self) -> (f64, f64, f64) {
            let (l, gw, gb) = self.loss_grads().unwrap();
            (scalar(&l), scalar(&gw), scalar(&gb))
        }
        fn step(&self) -> f64 {
            scalar(&Cd::step(self).unwrap())
        }
        fn params(&self) -> (f64, f64) {
            (scalar(&self.w), scalar(&self.b))
        }
    }
}

mod w1_burn {
    use burn::tensor::{Device, Tensor, TensorData};
    use std::sync::Mutex;

    pub struct Bn {
        w: Mutex<Tensor<2>>,
        b: Mutex<Tensor<1>>,
        x: Tensor<2>,
        y: Tensor<2>,
    }

    pub fn device() -> Device {
        Device::flex().autodiff()
    }

    pub fn new() -> Bn {
        let (x, y) = super::w1_data();
        let dev = device();
        let w = Tensor::<2>::from_data(TensorData::new(vec![0.0f32], [1, 1]), &dev).require_grad();
        let b = Tensor::<1>::from_data(TensorData::new(vec![0.0f32], [1]), &dev).require_grad();
        Bn {
            w: Mutex::new(w),
            b: Mutex::new(b),
            x: Tensor::from_data(TensorData::new(x, [super::W1_N, 1]), &dev),
            y: Tensor::from_data(TensorData::new(y, [super::W1_N, 1]), &dev),
        }
    }

    impl Bn {
        fn loss_grads(&self) -> (Tensor<1>, Tensor<2>, Tensor<1>) {
            let (w, b) = (
                self.w.lock().unwrap().clone(),
                self.b.lock().unwrap().clone(),
            );
            let pred = self.x.clone().matmul(w.clone()) + b.clone().unsqueeze::<2>();
            let mse = (pred - self.y.clone()).square().mean();
            let reg = (w.clone().square().sum() + b.clone().square().sum()).mul_scalar(0.01);
            let loss = mse + reg;
            let grads = loss.backward();
            let gw = w.grad(&grads).expect("grad w");
            let gb = b.grad(&grads).expect("grad b");
            (loss, gw, gb)
        }
        pub fn step(&self) -> Tensor<1> {
            let (loss, gw, gb) = self.loss_grads();
            let w = self.w.lock().unwrap().clone().inner() - gw.mul_scalar(super::W1_LR);
            let b = self.b.lock().unwrap().clone().inner() - gb.mul_scalar(super::W1_LR);
            *self.w.lock().unwrap() = w.autodiff().require_grad();
            *self.b.lock().unwrap() = b.autodiff().require_grad();
            loss
        }
    }

    fn scalar<const D: usize>(t: &Tensor<D>) -> f64 {
        t.to_data().try_to_vec::<f32>().unwrap()[0] as f64
    }

    impl super::W1Lib for Bn {
        fn value_and_grad(&self) -> (f64, f64, f64) {
            let (l, gw, gb) = self.loss_grads();
            (scalar(&l), scalar(&gw), scalar(&gb))
        }
        fn step(&self) -> f64 {
            scalar(&Bn::step(self))
        }
        fn params(&self) -> (f64, f64) {
            (
                scalar(&*self.w.lock().unwrap()),
                scalar(&*self.b.lock().unwrap()),
            )
        }
    }
}

fn w1(c: &mut Criterion) {
    // Guards, each on fresh parameters.
    w1_guard("stategrad_eager", &w1_stategrad::new());
    {
        let sg = w1_stategrad::new();
        let jstep = stategrad::jit(|xy| sg.step(xy));
        w1_guard("stategrad_jit", &w1_stategrad::SgJit { sg: &sg, jstep });
    }
    w1_guard("candle", &w1_candle::new());
    w1_guard("burn", &w1_burn::new());

    let mut g = c.benchmark_group("W1_linear_step");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for t in THREADS {
        let p = pool(t);
        let sg = w1_stategrad::new();
        g.bench_function(BenchmarkId::new("stategrad_eager", t), |bch| {
            p.install(|| bch.iter(|| sg.step(sg.xy()).unwrap()))
        });
        let sg = w1_stategrad::new();
        let jstep = stategrad::jit(|xy| sg.step(xy));
        g.bench_function(BenchmarkId::new("stategrad_jit", t), |bch| {
            p.install(|| bch.iter(|| jstep.call(sg.xy()).unwrap()))
        });
        let bn = w1_burn::new();
        g.bench_function(BenchmarkId::new("burn", t), |bch| {
            p.install(|| bch.iter(|| bn.step()))
        });
    }
    let cd = w1_candle::new();
    g.bench_function(BenchmarkId::new("candle", candle_threads()), |bch| {
        bch.iter(|| cd.step().unwrap())
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// W2: one SGD step of the 784-512-512-10 ReLU MLP, softmax cross-entropy, batch 256.
// ---------------------------------------------------------------------------------------------

const W2_B: usize = 256;
const W2_DIMS: [usize; 4] = [784, 512, 512, 10];
const W2_LR: f64 = 0.01;

/// Identical inputs for every library: He-normal weights (in x out, row-major), zero biases,
/// standard-normal x, one-hot labels (i * 7) % 10.
struct W2Data {
    /// w0, b0, w1, b1, w2, b2 (flat, row-major).
    params: Vec<Vec<f32>>,
    x: Vec<f32>,
    y: Vec<f32>,
}

fn w2_data() -> W2Data {
    let mut rng = Rng(6);
    let mut params = Vec::new();
    for l in 0..3 {
        let s = (2.0 / W2_DIMS[l] as f64).sqrt();
        params.push(rng.normals(W2_DIMS[l] * W2_DIMS[l + 1], s));
        params.push(vec![0.0f32; W2_DIMS[l + 1]]);
    }
    let x = rng.normals(W2_B * W2_DIMS[0], 1.0);
    let mut y = vec![0.0f32; W2_B * 10];
    for i in 0..W2_B {
        y[i * 10 + (i * 7) % 10] = 1.0;
    }
    W2Data { params, x, y }
}

fn w2_shapes() -> Vec<Vec<usize>> {
    (0..3)
        .flat_map(|l| vec![vec![W2_DIMS[l], W2_DIMS[l + 1]], vec![W2_DIMS[l + 1]]])
        .collect()
}

/// Naive f64 matmul: (m x k) @ (k x n); `ta`/`tb` read a or b transposed.
fn matmul64(a: &[f64], b: &[f64], m: usize, k: usize, n: usize, ta: bool, tb: bool) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let av = if ta { a[p * m + i] } else { a[i * k + p] };
            if av == 0.0 {
                continue;
            }
            let row = &mut out[i * n..(i + 1) * n];
            if tb {
                for j in 0..n {
                    row[j] += av * b[j * k + p];
                }
            } else {
                let br = &b[p * n..(p + 1) * n];
                for j in 0..n {
                    row[j] += av * br[j];
                }
            }
        }
    }
    out
}

/// The f64 reference: loss and the gradients of all six parameters, by hand.
fn w2_ref(d: &W2Data) -> (f64, Vec<Vec<f64>>) {
    let p: Vec<Vec<f64>> = d
        .params
        .iter()
        .map(|v| v.iter().map(|&e| e as f64).collect())
        .collect();
    let x: Vec<f64> = d.x.iter().map(|&e| e as f64).collect();
    let [d0, d1, d2, d3] = W2_DIMS;
    let b = W2_B;
    let dense = |inp: &[f64], w: &[f64], bias: &[f64], k: usize, n: usize, relu: bool| {
        let mut o = matmul64(inp, w, b, k, n, false, false);
        for i in 0..b {
            for j in 0..n {
                let v = o[i * n + j] + bias[j];
                o[i * n + j] = if relu { v.max(0.0) } else { v };
            }
        }
        o
    };
    let h1 = dense(&x, &p[0], &p[1], d0, d1, true);
    let h2 = dense(&h1, &p[2], &p[3], d1, d2, true);
    let z = dense(&h2, &p[4], &p[5], d2, d3, false);
    let mut loss = 0.0;
    let mut dz = vec![0.0; b * d3];
    for i in 0..b {
        let row = &z[i * d3..(i + 1) * d3];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        for j in 0..d3 {
            let yv = d.y[i * d3 + j] as f64;
            loss -= yv * (row[j] - lse) / b as f64;
            dz[i * d3 + j] = ((row[j] - lse).exp() - yv) / b as f64;
        }
    }
    let colsum = |g: &[f64], n: usize| {
        let mut s = vec![0.0; n];
        for i in 0..b {
            for j in 0..n {
                s[j] += g[i * n + j];
            }
        }
        s
    };
    let back = |g: &[f64], w: &[f64], h: &[f64], k: usize, n: usize| {
        // (g @ w^T) masked by the ReLU of h.
        let mut o = matmul64(g, w, b, n, k, false, true);
        for (v, &hv) in o.iter_mut().zip(h) {
            if hv <= 0.0 {
                *v = 0.0;
            }
        }
        o
    };
    let gw2 = matmul64(&h2, &dz, d2, b, d3, true, false);
    let gb2 = colsum(&dz, d3);
    let dh2 = back(&dz, &p[4], &h2, d2, d3);
    let gw1 = matmul64(&h1, &dh2, d1, b, d2, true, false);
    let gb1 = colsum(&dh2, d2);
    let dh1 = back(&dh2, &p[2], &h1, d1, d2);
    let gw0 = matmul64(&x, &dh1, d0, b, d1, true, false);
    let gb0 = colsum(&dh1, d1);
    (loss, vec![gw0, gb0, gw1, gb1, gw2, gb2])
}

/// What every library's W2 must expose to the guard.
trait W2Lib {
    /// Loss and the six gradients (flat) at the current parameters, without updating them.
    fn value_and_grad(&self) -> (f64, Vec<Vec<f32>>);
    /// The timed step; returns the loss before the update.
    fn step(&self) -> f64;
    /// The six parameters, flat.
    fn params(&self) -> Vec<Vec<f32>>;
}

/// Guard: the initial loss is near ln(10) and equal to the f64 reference (hence equal across
/// libraries); every gradient matches the reference; one timed step moves every parameter by
/// -lr * gradient.
fn w2_guard(name: &str, lib: &dyn W2Lib, d: &W2Data, rl: f64, rg: &[Vec<f64>]) {
    assert!(
        (rl - 10f64.ln()).abs() < 1.5,
        "W2 reference loss {rl} not near ln 10"
    );
    let (l, g) = lib.value_and_grad();
    assert!(
        (l - rl).abs() < 1e-4 * rl.max(1.0),
        "W2 guard {name}: loss {l} vs f64 reference {rl}"
    );
    for (i, (gi, ri)) in g.iter().zip(rg).enumerate() {
        let err = max_abs_diff(gi, ri);
        assert!(
            err <= 1e-3 * max_abs(ri) + 1e-6,
            "W2 guard {name}: gradient {i} off by {err} (max |g| {})",
            max_abs(ri)
        );
    }
    let l = lib.step();
    assert!(
        (l - rl).abs() < 1e-4 * rl.max(1.0),
        "W2 guard {name}: step loss {l} vs {rl}"
    );
    for (i, (new, old)) in lib.params().iter().zip(&d.params).enumerate() {
        // (old - new) / lr is the applied gradient; f32 cancellation bounds the tolerance.
        let applied: Vec<f32> = old
            .iter()
            .zip(new)
            .map(|(&o, &n)| ((o as f64 - n as f64) / W2_LR) as f32)
            .collect();
        let err = max_abs_diff(&applied, &rg[i]);
        assert!(
            err <= 2e-2 * max_abs(&rg[i]) + 1e-4,
            "W2 guard {name}: step applied gradient {i} off by {err} (max |g| {})",
            max_abs(&rg[i])
        );
    }
}

mod w2_stategrad {
    use stategrad::prelude::*;

    pub struct Sg {
        pub params: StateMap,
        names: Vec<Path>,
        x: Tensor,
        y: Tensor,
    }

    const NAMES: [&str; 6] = ["w0", "b0", "w1", "b1", "w2", "b2"];

    pub fn new(d: &super::W2Data) -> Sg {
        let mut params = StateMap::new();
        let mut names = Vec::new();
        for ((n, v), s) in NAMES.iter().zip(&d.params).zip(super::w2_shapes()) {
            params.insert(
                path!(*n),
                ParamState::new(Tensor::from_vec(v.clone(), &s).unwrap()),
            );
            names.push(path!(*n));
        }
        Sg {
            params,
            names,
            x: Tensor::from_vec(d.x.clone(), &[super::W2_B, 784]).unwrap(),
            y: Tensor::from_vec(d.y.clone(), &[super::W2_B, 10]).unwrap(),
        }
    }

    impl Sg {
        fn p(&self, i: usize) -> Tensor {
            self.params[&self.names[i]].value()
        }
        pub fn loss(&self, (x, y): (Tensor, Tensor)) -> Tensor {
            let h = (x.matmul(&self.p(0)) + self.p(1)).relu();
            let h = (h.matmul(&self.p(2)) + self.p(3)).relu();
            let logits = h.matmul(&self.p(4)) + self.p(5);
            -(logits.log_softmax(-1) * y).sum_along(&[-1], false).mean()
        }
        pub fn xy(&self) -> (Tensor, Tensor) {
            (self.x.clone(), self.y.clone())
        }
        pub fn step(&self, xy: (Tensor, Tensor)) -> Result<Tensor> {
            let (g, l) = grad(|xy| self.loss(xy))
                .grad_states(self.params.clone())
                .return_value()
                .call(xy)?;
            for (p, s) in &self.params {
                s.set_value(s.value() - super::W2_LR * &g[p]);
            }
            Ok(l)
        }
        pub fn value_and_grad(&self) -> (f64, Vec<Vec<f32>>) {
            let (g, l) = grad(|xy| self.loss(xy))
                .grad_states(self.params.clone())
                .return_value()
                .call(self.xy())
                .unwrap();
            (
                l.item().unwrap(),
                self.names.iter().map(|n| g[n].to_vec::<f32>()).collect(),
            )
        }
        pub fn params(&self) -> Vec<Vec<f32>> {
            (0..6).map(|i| self.p(i).to_vec::<f32>()).collect()
        }
    }

    impl super::W2Lib for Sg {
        fn value_and_grad(&self) -> (f64, Vec<Vec<f32>>) {
            Sg::value_and_grad(self)
        }
        fn step(&self) -> f64 {
            Sg::step(self, self.xy()).unwrap().item().unwrap()
        }
        fn params(&self) -> Vec<Vec<f32>> {
            Sg::params(self)
        }
    }

    pub struct SgJit<'a, F: Fn((Tensor, Tensor)) -> Result<Tensor>> {
        pub sg: &'a Sg,
        pub jstep: stategrad::Jit<F, (Tensor, Tensor), Result<Tensor>>,
    }

    impl<F: Fn((Tensor, Tensor)) -> Result<Tensor>> super::W2Lib for SgJit<'_, F> {
        fn value_and_grad(&self) -> (f64, Vec<Vec<f32>>) {
            self.sg.value_and_grad()
        }
        fn step(&self) -> f64 {
            self.jstep.call(self.sg.xy()).unwrap().item().unwrap()
        }
        fn params(&self) -> Vec<Vec<f32>> {
            self.sg.params()
        }
    }
}

mod w2_candle {
    use candle_core::{Device, Result, Tensor, Var, D};

    pub struct Cd {
        params: Vec<Var>,
        x: Tensor,
        y: Tensor,
    }

    pub fn new(d: &super::W2Data) -> Cd {
        let dev = Device::Cpu;
        let params = d
            .params
            .iter()
            .zip(super::w2_shapes())
            .map(|(v, s)| Var::from_vec(v.clone(), s, &dev).unwrap())
            .collect();
        Cd {
            params,
            x: Tensor::from_vec(d.x.clone(), (super::W2_B, 784), &dev).unwrap(),
            y: Tensor::from_vec(d.y.clone(), (super::W2_B, 10), &dev).unwrap(),
        }
    }

    /// candle-nn's `ops::log_softmax`, written with candle-core ops.
    fn log_softmax(xs: &Tensor) -> Result<Tensor> {
        let max = xs.max_keepdim(D::Minus1)?;
        let diff = xs.broadcast_sub(&max)?;
        let sum_exp = diff.exp()?.sum_keepdim(D::Minus1)?;
        diff.broadcast_sub(&sum_exp.log()?)
    }

    impl Cd {
        fn loss(&self) -> Result<Tensor> {
            let p = &self.params;
            let h = self.x.matmul(&p[0])?.broadcast_add(&p[1])?.relu()?;
            let h = h.matmul(&p[2])?.broadcast_add(&p[3])?.relu()?;
            let logits = h.matmul(&p[4])?.broadcast_add(&p[5])?;
            (log_softmax(&logits)? * &self.y)?.sum(1)?.mean_all()?.neg()
        }
        fn loss_grads(&self) -> Result<(Tensor, Vec<Tensor>)> {
            let loss = self.loss()?;
            let grads = loss.backward()?;
            let g = self
                .params
                .iter()
                .map(|v| grads.get(v).expect("grad").clone())
                .collect();
            Ok((loss, g))
        }
        pub fn step(&self) -> Result<Tensor> {
            let (loss, g) = self.loss_grads()?;
            for (v, g) in self.params.iter().zip(g) {
                v.set(&(v.as_tensor() - (g * super::W2_LR)?)?)?;
            }
            Ok(loss)
        }
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    impl super::W2Lib for Cd {
        fn value_and_grad(&self) -> (f64, Vec<Vec<f32>>) {
            let (l, g) = self.loss_grads().unwrap();
            (flat(&l)[0] as f64, g.iter().map(flat).collect())
        }
        fn step(&self) -> f64 {
            flat(&Cd::step(self).unwrap())[0] as f64
        }
        fn params(&self) -> Vec<Vec<f32>> {
            self.params.iter().map(|v| flat(v)).collect()
        }
    }
}

mod w2_burn {
    use burn::tensor::{activation, Tensor, TensorData};
    use std::sync::Mutex;

    pub struct Bn {
        /// w0, w1, w2 (in x out) and b0, b1, b2.
        ws: Mutex<Vec<Tensor<2>>>,
        bs: Mutex<Vec<Tensor<1>>>,
        x: Tensor<2>,
        y: Tensor<2>,
    }

    pub fn new(d: &super::W2Data) -> Bn {
        let dev = super::w1_burn::device();
        let dims = super::W2_DIMS;
        let ws = (0..3)
            .map(|l| {
                Tensor::<2>::from_data(
                    TensorData::new(d.params[2 * l].clone(), [dims[l], dims[l + 1]]),
                    &dev,
                )
                .require_grad()
            })
            .collect();
        let bs = (0..3)
            .map(|l| {
                Tensor::<1>::from_data(
                    TensorData::new(d.params[2 * l + 1].clone(), [dims[l + 1]]),
                    &dev,
                )
                .require_grad()
            })
            .collect();
        Bn {
            ws: Mutex::new(ws),
            bs: Mutex::new(bs),
            x: Tensor::from_data(TensorData::new(d.x.clone(), [super::W2_B, 784]), &dev),
            y: Tensor::from_data(TensorData::new(d.y.clone(), [super::W2_B, 10]), &dev),
        }
    }

    impl Bn {
        fn loss_grads(&self) -> (Tensor<1>, Vec<Tensor<2>>, Vec<Tensor<1>>) {
            let ws = self.ws.lock().unwrap().clone();
            let bs = self.bs.lock().unwrap().clone();
            let dense =
                |h: Tensor<2>, l: usize| h.matmul(ws[l].clone()) + bs[l].clone().unsqueeze::<2>();
            let h = activation::relu(dense(self.x.clone(), 0));
            let h = activation::relu(dense(h, 1));
            let logits = dense(h, 2);
            let loss = (activation::log_softmax(logits, 1) * self.y.clone())
                .sum_dim(1)
                .mean()
                .neg();
            let grads = loss.backward();
            let gw = ws.iter().map(|w| w.grad(&grads).expect("grad w")).collect();
            let gb = bs.iter().map(|b| b.grad(&grads).expect("grad b")).collect();
            (loss, gw, gb)
        }
        pub fn step(&self) -> Tensor<1> {
            let (loss, gw, gb) = self.loss_grads();
            let mut ws = self.ws.lock().unwrap();
            for (w, g) in ws.iter_mut().zip(gw) {
                let new = w.clone().inner() - g.mul_scalar(super::W2_LR);
                *w = new.autodiff().require_grad();
            }
            let mut bs = self.bs.lock().unwrap();
            for (b, g) in bs.iter_mut().zip(gb) {
                let new = b.clone().inner() - g.mul_scalar(super::W2_LR);
                *b = new.autodiff().require_grad();
            }
            loss
        }
    }

    fn flat<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
        t.to_data().try_to_vec::<f32>().unwrap()
    }

    /// Interleave into the w0, b0, w1, b1, w2, b2 order.
    fn interleave(ws: &[Tensor<2>], bs: &[Tensor<1>]) -> Vec<Vec<f32>> {
        (0..3).flat_map(|l| [flat(&ws[l]), flat(&bs[l])]).collect()
    }

    impl super::W2Lib for Bn {
        fn value_and_grad(&self) -> (f64, Vec<Vec<f32>>) {
            let (l, gw, gb) = self.loss_grads();
            (flat(&l)[0] as f64, interleave(&gw, &gb))
        }
        fn step(&self) -> f64 {
            flat(&Bn::step(self))[0] as f64
        }
        fn params(&self) -> Vec<Vec<f32>> {
            interleave(&self.ws.lock().unwrap(), &self.bs.lock().unwrap())
        }
    }
}

fn w2(c: &mut Criterion) {
    let d = w2_data();
    let (rl, rg) = w2_ref(&d);
    w2_guard("stategrad_eager", &w2_stategrad::new(&d), &d, rl, &rg);
    {
        let sg = w2_stategrad::new(&d);
        let jstep = stategrad::jit(|xy| sg.step(xy));
        w2_guard(
            "stategrad_jit",
            &w2_stategrad::SgJit { sg: &sg, jstep },
            &d,
            rl,
            &rg,
        );
    }
    w2_guard("candle", &w2_candle::new(&d), &d, rl, &rg);
    w2_guard("burn", &w2_burn::new(&d), &d, rl, &rg);
    eprintln!(
        "W2 guards passed: initial loss {rl:.6} (ln 10 = {:.6}) in every library",
        10f64.ln()
    );

    // GEMM flops of one step: forward, plus twice that backward minus the first layer's input
    // gradient. Criterion reports them as elements/s, i.e. FLOP/s.
    let flops = 2 * 256 * (784 * 512 + 512 * 512 + 512 * 10) * 3 - 2 * 256 * 784 * 512;
    let mut g = c.benchmark_group("W2_mlp_step_b256");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(flops as u64));
    for t in THREADS {
        let p = pool(t);
        let sg = w2_stategrad::new(&d);
        g.bench_function(BenchmarkId::new("stategrad_eager", t), |bch| {
            p.install(|| bch.iter(|| sg.step(sg.xy()).unwrap()))
        });
        let sg = w2_stategrad::new(&d);
        let jstep = stategrad::jit(|xy| sg.step(xy));
        g.bench_function(BenchmarkId::new("stategrad_jit", t), |bch| {
            p.install(|| bch.iter(|| jstep.call(sg.xy()).unwrap()))
        });
        let bn = w2_burn::new(&d);
        g.bench_function(BenchmarkId::new("burn", t), |bch| {
            p.install(|| bch.iter(|| bn.step()))
        });
    }
    let cd = w2_candle::new(&d);
    g.bench_function(BenchmarkId::new("candle", candle_threads()), |bch| {
        bch.iter(|| cd.step().unwrap())
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// W5: grad of sum(tanh(x) * sigmoid(x) + 0.5 * x * x) over 16M f32.
// ---------------------------------------------------------------------------------------------

const W5_N: usize = 1 << 24;

/// Guard: gradient elements (a spread of 4099 indices) against the closed form in f64.
fn w5_guard(name: &str, x: &[f32], g: &[f32]) {
    assert_eq!(g.len(), W5_N, "W5 guard {name}: length");
    let mut worst = 0.0f64;
    for i in (0..W5_N)
        .step_by(W5_N / 4096)
        .chain([1, W5_N / 2 + 1, W5_N - 1])
    {
        let xi = x[i] as f64;
        let (t, s) = (xi.tanh(), 1.0 / (1.0 + (-xi).exp()));
        let want = (1.0 - t * t) * s + t * s * (1.0 - s) + xi;
        worst = worst.max((g[i] as f64 - want).abs() / want.abs().max(1.0));
    }
    assert!(worst < 1e-4, "W5 guard {name}: worst error {worst}");
}

mod w5_candle {
    use candle_core::{Result, Tensor, Var};

    /// candle-core has no sigmoid primitive (candle-nn has a custom op); sigmoid(x) =
    /// 0.5 * tanh(x / 2) + 0.5 is exact and cannot overflow.
    pub fn grad(x: &Var) -> Result<Tensor> {
        let sig = x.affine(0.5, 0.0)?.tanh()?.affine(0.5, 0.5)?;
        let f = ((x.tanh()? * sig)? + x.sqr()?.affine(0.5, 0.0)?)?.sum_all()?;
        let grads = f.backward()?;
        Ok(grads.get(x).expect("grad x").clone())
    }
}

mod w5_burn {
    use burn::tensor::{activation, Tensor};

    pub fn grad(x: &Tensor<1>) -> Tensor<1> {
        let f = (x.clone().tanh() * activation::sigmoid(x.clone())
            + x.clone().square().mul_scalar(0.5))
        .sum();
        let grads = f.backward();
        x.grad(&grads).expect("grad x")
    }
}

fn w5(c: &mut Criterion) {
    use stategrad::prelude::*;
    let xs = Rng(3).normals(W5_N, 1.0);

    // stategrad
    let x_sg = Tensor::from_vec(xs.clone(), &[W5_N]).unwrap();
    let f = |x: Tensor| (x.tanh() * x.sigmoid() + 0.5 * &x * &x).sum();
    w5_guard(
        "stategrad_eager",
        &xs,
        &grad(f).call(x_sg.clone()).unwrap().to_vec::<f32>(),
    );
    let jf = jit(move |x: Tensor| grad(f).call(x));
    w5_guard(
        "stategrad_jit",
        &xs,
        &jf.call(x_sg.clone()).unwrap().to_vec::<f32>(),
    );

    // candle
    let x_cd = candle_core::Var::from_vec(xs.clone(), W5_N, &candle_core::Device::Cpu).unwrap();
    w5_guard(
        "candle",
        &xs,
        &w5_candle::grad(&x_cd).unwrap().to_vec1::<f32>().unwrap(),
    );

    // burn
    let dev = w1_burn::device();
    let x_bn = burn::tensor::Tensor::<1>::from_data(
        burn::tensor::TensorData::new(xs.clone(), [W5_N]),
        &dev,
    )
    .require_grad();
    w5_guard(
        "burn",
        &xs,
        &w5_burn::grad(&x_bn).to_data().try_to_vec::<f32>().unwrap(),
    );

    let mut g = c.benchmark_group("W5_elementwise_grad_16M");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(128 << 20));
    for t in THREADS {
        let p = pool(t);
        g.bench_function(BenchmarkId::new("stategrad_eager", t), |bch| {
            p.install(|| bch.iter(|| grad(f).call(x_sg.clone()).unwrap()))
        });
        g.bench_function(BenchmarkId::new("stategrad_jit", t), |bch| {
            p.install(|| bch.iter(|| jf.call(x_sg.clone()).unwrap()))
        });
        g.bench_function(BenchmarkId::new("burn", t), |bch| {
            p.install(|| bch.iter(|| w5_burn::grad(&x_bn)))
        });
    }
    g.bench_function(BenchmarkId::new("candle", candle_threads()), |bch| {
        bch.iter(|| w5_candle::grad(&x_cd).unwrap())
    });
    g.finish();
}

fn main() {
    // candle takes its thread count from RAYON_NUM_THREADS (else the physical core count); pin it
    // to the logical CPU count when unset so that the `candle/N` label is what candle uses.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Single-threaded here: nothing has started a thread yet.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    eprintln!(
        "peers: stategrad and burn at {THREADS:?} threads (rayon pools); candle at RAYON_NUM_THREADS={}",
        candle_threads()
    );
    let mut c = Criterion::default().configure_from_args();
    w1(&mut c);
    loops_jacobians::w1_loop(&mut c);
    w2(&mut c);
    w5(&mut c);
    loops_jacobians::jacobians(&mut c);
    digits_epoch::bench(&mut c);
    c.final_summary();
}
