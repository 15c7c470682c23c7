//! `digits_epoch_mlp`: ONE epoch of the digits MLP of `examples/digits.rs` (64-128-10, ReLU,
//! softmax cross-entropy, Adam lr 1e-3 with betas 0.9/0.999 and eps 1e-8, batch 64, drop_last:
//! 1437 training rows, 22 steps) for stategrad (jitted, the example's program), candle
//! (hand-written linear layers, candle-nn's `cross_entropy` and `AdamW` with weight decay 0,
//! which is Adam) and burn (`burn::nn::Linear` in a `#[derive(Module)]`, `CrossEntropyLoss`,
//! `AdamConfig` with epsilon 1e-8).
//!
//! Same data and order for every library: the example's split (`digits.split(360, 0)`, features
//! / 16) and the example's epoch-0 order (`Batches::shuffle(0).order(0)`), used by every epoch
//! (a fixed permutation, computed once). Same initial weights: stategrad's `Mlp` after
//! `random::seed(0)`, copied into candle and burn. Data are loaded once, outside the timed loop;
//! one timed iteration is one epoch with the host-side batching each library needs (stategrad:
//! `Batches::epoch`, i.e. an index tensor and `take`; candle: `index_select`; burn: `select`),
//! and reads the last step's loss back to the host once.
//!
//! Guards before timing: (1) from the same weights, one epoch of candle and of burn reproduces
//! stategrad's 22 per-step losses (to 2e-3); (2) after 10 epochs every library's training loss
//! (full training set) is below 0.35 and its training accuracy above 90 %.

use criterion::{BenchmarkId, Criterion, Throughput};

pub const BATCH: usize = 64;
pub const HIDDEN: usize = 128;
pub const LR: f64 = 1e-3;

/// The example's data as host vectors, plus stategrad's initial weights.
pub struct Digits {
    /// Training features, row-major `[n, 64]`, already divided by 16.
    pub x: Vec<f32>,
    pub y: Vec<i32>,
    pub n: usize,
    /// The epoch order (indices into the training rows), a permutation of `0..n`.
    pub order: Vec<i64>,
    /// w1 `[64, 128]`, b1 `[128]`, w2 `[128, 10]`, b2 `[10]`.
    pub init: [Vec<f32>; 4],
}

impl Digits {
    pub fn steps(&self) -> usize {
        self.n / BATCH
    }
    /// Training accuracy of logits `[n, 10]` (row-major).
    pub fn accuracy(&self, logits: &[f32]) -> f64 {
        let hits = (0..self.n)
            .filter(|&i| {
                let row = &logits[i * 10..(i + 1) * 10];
                let arg = (0..10)
                    .max_by(|&a, &b| row[a].partial_cmp(&row[b]).unwrap())
                    .unwrap();
                arg as i32 == self.y[i]
            })
            .count();
        hits as f64 / self.n as f64
    }
}

/// The stategrad side: the example's model, optimizer, jitted step and batches.
pub mod sg {
    use stategrad::nn::activation::Activation;
    use stategrad::nn::data::{load_digits, Batches};
    use stategrad::nn::layers::Mlp;
    use stategrad::nn::loss::{softmax_cross_entropy, Reduction};
    use stategrad::optim::{self, Optimizer};
    use stategrad::prelude::*;

    pub struct Sg {
        pub model: Mlp,
        pub params: StateMap,
        pub opt: optim::Optim,
        pub batches: Batches,
        pub train_x: Tensor,
        pub train_y: Tensor,
    }

    /// The example's set-up: seed 0, the split, the model, Adam, the batches.
    pub fn new() -> Sg {
        stategrad::random::seed(0);
        let digits = load_digits().unwrap();
        let (train, _test) = digits.split(360, 0).unwrap();
        let scale = |x: &Tensor| x / 16.0;
        let model = Mlp::new(&[64, super::HIDDEN, 10], Activation::Relu);
        let params = model.states(ParamState);
        let opt = optim::adam(super::LR).build(&params).unwrap();
        let train_x = scale(&train.features);
        let batches = Batches::new(&[train_x.clone(), train.labels.clone()], super::BATCH)
            .unwrap()
            .shuffle(0)
            .drop_last(true);
        Sg {
            model,
            params,
            opt,
            batches,
            train_x,
            train_y: train.labels,
        }
    }

    impl Sg {
        pub fn data(&self) -> super::Digits {
            let p = |l: usize, k: &str| self.params[&path!("layers", l, k)].value().to_vec::<f32>();
            super::Digits {
                x: self.train_x.to_vec::<f32>(),
                y: self.train_y.to_vec::<i32>(),
                n: self.batches.len(),
                order: self.batches.order(0),
                init: [p(0, "weight"), p(0, "bias"), p(1, "weight"), p(1, "bias")],
            }
        }

        /// The example's step body (to be wrapped in `jit`).
        pub fn step(&self, (x, y): (Tensor, Tensor)) -> stategrad::Result<Tensor> {
            let loss = |(x, y): (Tensor, Tensor)| {
                softmax_cross_entropy(&self.model.forward(&x), &y, Reduction::Mean)
            };
            let (grads, l) = grad(loss)
                .grad_states(self.params.clone())
                .return_value()
                .call((x, y))?;
            self.opt.step(&grads)?;
            Ok(l)
        }

        /// Logits on the whole training set and their mean cross-entropy.
        pub fn eval(&self) -> (Vec<f32>, f64) {
            let logits = self.model.forward(&self.train_x);
            let loss = softmax_cross_entropy(&logits, &self.train_y, Reduction::Mean);
            (logits.to_vec::<f32>(), loss.item().unwrap())
        }
    }

    /// One epoch in the fixed order (`Batches::epoch(0)` every time): the jitted step per batch.
    /// `losses` records every step's loss (guards); otherwise only the last one is read.
    pub fn epoch<F>(
        sg: &Sg,
        step: &stategrad::Jit<F, (Tensor, Tensor), stategrad::Result<Tensor>>,
        mut losses: Option<&mut Vec<f32>>,
    ) -> f32
    where
        F: Fn((Tensor, Tensor)) -> stategrad::Result<Tensor>,
    {
        let mut last = None;
        for b in sg.batches.epoch(0) {
            let l = step.call((b[0].clone(), b[1].clone())).unwrap();
            if let Some(v) = losses.as_deref_mut() {
                v.push(l.item().unwrap() as f32);
            }
            last = Some(l);
        }
        last.unwrap().item().unwrap() as f32
    }
}

/// candle: `Var`s, hand-written linear layers, candle-nn's cross-entropy and AdamW (decay 0).
pub mod cd {
    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};

    pub struct Cd {
        vars: Vec<Var>,
        opt: AdamW,
        x: Tensor,
        y: Tensor,
        order: Vec<u32>,
        steps: usize,
    }

    pub fn new(d: &super::Digits) -> Cd {
        let dev = Device::Cpu;
        let shapes: [&[usize]; 4] = [&[64, super::HIDDEN], &[super::HIDDEN], &[super::HIDDEN, 10], &[10]];
        let vars: Vec<Var> = d
            .init
            .iter()
            .zip(shapes)
            .map(|(v, s)| Var::from_vec(v.clone(), s, &dev).unwrap())
            .collect();
        let params = ParamsAdamW {
            lr: super::LR,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let opt = AdamW::new(vars.clone(), params).unwrap();
        let y: Vec<u32> = d.y.iter().map(|&v| v as u32).collect();
        Cd {
            vars,
            opt,
            x: Tensor::from_vec(d.x.clone(), (d.n, 64), &dev).unwrap(),
            y: Tensor::from_vec(y, d.n, &dev).unwrap(),
            order: d.order.iter().map(|&i| i as u32).collect(),
            steps: d.steps(),
        }
    }

    impl Cd {
        fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
            let v = &self.vars;
            let h = x.matmul(v[0].as_tensor())?.broadcast_add(v[1].as_tensor())?.relu()?;
            h.matmul(v[2].as_tensor())?.broadcast_add(v[3].as_tensor())
        }

        pub fn epoch(&mut self, mut losses: Option<&mut Vec<f32>>) -> f32 {
            let mut last = None;
            for s in 0..self.steps {
                let rows = &self.order[s * super::BATCH..(s + 1) * super::BATCH];
                let idx = Tensor::from_slice(rows, super::BATCH, &Device::Cpu).unwrap();
                let xb = self.x.index_select(&idx, 0).unwrap();
                let yb = self.y.index_select(&idx, 0).unwrap();
                let loss = candle_nn::loss::cross_entropy(&self.logits(&xb).unwrap(), &yb).unwrap();
                self.opt.backward_step(&loss).unwrap();
                if let Some(v) = losses.as_deref_mut() {
                    v.push(loss.to_scalar::<f32>().unwrap());
                }
                last = Some(loss);
            }
            last.unwrap().to_scalar::<f32>().unwrap()
        }

        pub fn eval(&self) -> (Vec<f32>, f64) {
            let logits = self.logits(&self.x).unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits, &self.y).unwrap();
            let l = loss.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            (logits.flatten_all().unwrap().to_vec1::<f32>().unwrap(), l)
        }
    }
}

/// burn (flex backend, autodiff): a `#[derive(Module)]` of two `burn::nn::Linear`s,
/// `CrossEntropyLoss`, burn-optim's Adam.
pub mod bn {
    use burn::module::{Module, Param};
    use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
    use burn::nn::Linear;
    use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
    use burn::tensor::{activation, Device, Int, Tensor, TensorData};

    #[derive(Module, Debug)]
    pub struct Net {
        l1: Linear,
        l2: Linear,
    }

    impl Net {
        fn forward(&self, x: Tensor<2>) -> Tensor<2> {
            self.l2.forward(activation::relu(self.l1.forward(x)))
        }
    }

    pub struct Bn {
        net: Option<Net>,
        opt: ModuleOptimizer,
        ce: CrossEntropyLoss,
        x: Tensor<2>,
        y: Tensor<1, Int>,
        order: Vec<i64>,
        steps: usize,
        dev: Device,
    }

    pub fn new(d: &super::Digits) -> Bn {
        let dev = crate::w1_burn::device();
        let h = super::HIDDEN;
        let w = |v: &Vec<f32>, r: usize, c: usize| Param::from_data(TensorData::new(v.clone(), [r, c]), &dev);
        let b = |v: &Vec<f32>, n: usize| Some(Param::from_data(TensorData::new(v.clone(), [n]), &dev));
        let net = Net {
            l1: Linear {
                weight: w(&d.init[0], 64, h),
                bias: b(&d.init[1], h),
            },
            l2: Linear {
                weight: w(&d.init[2], h, 10),
                bias: b(&d.init[3], 10),
            },
        };
        let opt = AdamConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.999)
            .with_epsilon(1e-8)
            .init();
        let y: Vec<i64> = d.y.iter().map(|&v| v as i64).collect();
        Bn {
            net: Some(net),
            opt,
            ce: CrossEntropyLossConfig::new().init(&dev),
            x: Tensor::from_data(TensorData::new(d.x.clone(), [d.n, 64]), &dev),
            y: Tensor::from_data(TensorData::new(y, [d.n]), &dev),
            order: d.order.clone(),
            steps: d.steps(),
            dev,
        }
    }

    fn scalar(t: &Tensor<1>) -> f32 {
        t.to_data().try_to_vec::<f32>().unwrap()[0]
    }

    impl Bn {
        pub fn epoch(&mut self, mut losses: Option<&mut Vec<f32>>) -> f32 {
            let mut net = self.net.take().unwrap();
            let mut last = None;
            for s in 0..self.steps {
                let rows = self.order[s * super::BATCH..(s + 1) * super::BATCH].to_vec();
                let idx = Tensor::<1, Int>::from_data(TensorData::new(rows, [super::BATCH]), &self.dev);
                let xb = self.x.clone().select(0, idx.clone());
                let yb = self.y.clone().select(0, idx);
                let loss = self.ce.forward(net.forward(xb), yb);
                let grads = GradientsParams::from_grads(loss.backward(), &net);
                net = self.opt.step(super::LR, net, grads);
                if let Some(v) = losses.as_deref_mut() {
                    v.push(scalar(&loss));
                }
                last = Some(loss);
            }
            self.net = Some(net);
            scalar(&last.unwrap())
        }

        pub fn eval(&self) -> (Vec<f32>, f64) {
            let logits = self.net.as_ref().unwrap().forward(self.x.clone());
            let loss = self.ce.forward(logits.clone(), self.y.clone());
            (logits.to_data().try_to_vec::<f32>().unwrap(), scalar(&loss) as f64)
        }
    }
}

/// Guard (2): training loss and accuracy on the whole training set after 10 epochs.
fn check_trained(name: &str, d: &Digits, (logits, loss): (Vec<f32>, f64)) {
    let acc = d.accuracy(&logits);
    eprintln!("digits guard {name}: after 10 epochs train loss {loss:.4}, train accuracy {:.1} %", 100.0 * acc);
    assert!(
        loss < 0.35 && acc > 0.90,
        "digits guard {name}: after 10 epochs train loss {loss} (want < 0.35), accuracy {acc} (want > 0.90)"
    );
}

fn close(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "digits guard {name}: step count");
    let err = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        err < 2e-3,
        "digits guard {name}: per-step losses differ from stategrad's by {err}\n got {got:?}\nwant {want:?}"
    );
    eprintln!("digits guard {name}: 22 per-step losses equal stategrad's to {err:.1e}");
}

pub fn bench(c: &mut Criterion) {
    use stategrad::jit;
    // Guards: stategrad (the example's program) for 10 epochs, recording epoch 1's step losses.
    let s = sg::new();
    let d = s.data();
    assert_eq!((d.n, d.steps()), (1437, 22), "digits: 1437 training rows, 22 steps");
    eprintln!(
        "digits: {} training rows, {} steps per epoch, order starts {:?}, labels {:?}",
        d.n,
        d.steps(),
        &d.order[..6],
        d.order[..6].iter().map(|&i| d.y[i as usize]).collect::<Vec<_>>()
    );
    let mut want = Vec::new();
    {
        let step = jit(|xy| s.step(xy));
        sg::epoch(&s, &step, Some(&mut want));
        assert!(want[0] > 2.0 && want[21] < want[0], "digits guard stategrad: losses {want:?}");
        for _ in 1..10 {
            sg::epoch(&s, &step, None);
        }
        assert_eq!(step.trace_count(), 1, "digits: the step traced once");
    }
    check_trained("stategrad_jit", &d, s.eval());
    let mut cdm = cd::new(&d);
    let mut got = Vec::new();
    cdm.epoch(Some(&mut got));
    close("candle", &got, &want);
    for _ in 1..10 {
        cdm.epoch(None);
    }
    check_trained("candle", &d, cdm.eval());
    let mut bnm = bn::new(&d);
    got.clear();
    bnm.epoch(Some(&mut got));
    close("burn", &got, &want);
    for _ in 1..10 {
        bnm.epoch(None);
    }
    check_trained("burn", &d, bnm.eval());

    let mut g = c.benchmark_group("digits_epoch_mlp");
    g.sample_size(20);
    // Throughput: training examples per epoch (22 x 64).
    g.throughput(Throughput::Elements((d.steps() * BATCH) as u64));
    for t in crate::THREADS {
        let p = crate::pool(t);
        let s = sg::new();
        let step = jit(|xy| s.step(xy));
        g.bench_function(BenchmarkId::new("stategrad_jit", t), |bch| {
            p.install(|| bch.iter(|| sg::epoch(&s, &step, None)))
        });
        let mut m = bn::new(&d);
        g.bench_function(BenchmarkId::new("burn", t), |bch| {
            p.install(|| bch.iter(|| m.epoch(None)))
        });
    }
    let mut m = cd::new(&d);
    g.bench_function(BenchmarkId::new("candle", crate::candle_threads()), |bch| {
        bch.iter(|| m.epoch(None))
    });
    g.finish();
}
