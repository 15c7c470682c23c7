//! The README's claims about `examples/digits.rs`: the same programs (AdamW with warm-up +
//! cosine, no decay on biases, 20 epochs of 32-example batches, one jitted step per batch)
//! train the 64-128-10 MLP to at least 97 % and the small CNN to at least 98 % test accuracy,
//! and a checkpoint round trip of model and optimizer keeps the accuracy exactly. The CNN takes
//! over a minute unoptimised, so it runs with `--include-ignored` (in release, a few seconds);
//! the example itself asserts both figures.

use stategrad::nn::activation::Activation::Relu;
use stategrad::nn::checkpoint::{load_bytes, merge_prefixed, to_bytes};
use stategrad::nn::data::{load_digits, Batches, Dataset};
use stategrad::nn::layers::{Conv2d, Flatten, Layer, Linear, MaxPool2d, Mlp, Padding, Sequential};
use stategrad::nn::loss::{softmax_cross_entropy, Reduction};
use stategrad::nn::metrics::accuracy;
use stategrad::optim::{adamw, warmup_cosine_decay, Optim, Optimizer};
use stategrad::prelude::*;
use std::sync::Mutex;

/// The random state is global: one model at a time.
static TURN: Mutex<()> = Mutex::new(());
const EPOCHS: usize = 20;

/// The example's `train`, without the progress bars: the final test accuracy (after a
/// checkpoint round trip into a fresh model and optimizer, checked to be the same).
fn train<M: Layer + Module>(make: impl Fn() -> M, shape: &[isize]) -> f64 {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    stategrad::random::seed(0);
    let (train, test) = load_digits().unwrap().split(360, 0).unwrap();
    let x = |d: &Dataset| d.features.reshape(shape) / 16.0;
    let data = [x(&train), train.labels.clone()];
    let batches = Batches::new(&data, 32).unwrap().shuffle(0).drop_last(true);
    let n = batches.num_batches();
    let lr = warmup_cosine_decay(0.0, 3e-3, (EPOCHS * n / 10) as u64, (EPOCHS * n) as u64);
    let optimizer = adamw(lr).mask(Filter::not(Filter::path_contains("bias")));
    let model = make();
    let p = model.states(ParamState);
    let opt = optimizer.build(&p).unwrap();
    let step = jit(|xy: (Tensor, Tensor)| -> stategrad::Result<Tensor> {
        let loss = |(x, y): (Tensor, Tensor)| {
            softmax_cross_entropy(&model.forward(&x), &y, Reduction::Mean)
        };
        let (grads, l) = grad(loss).grad_states(p.clone()).return_value().call(xy)?;
        opt.step(&grads)?;
        Ok(l)
    });
    for epoch in 0..EPOCHS {
        for b in batches.epoch(epoch as u64) {
            step.call((b[0].clone(), b[1].clone())).unwrap();
        }
    }
    assert_eq!(step.trace_count(), 1);
    let test_acc = |m: &M| {
        accuracy(&m.forward(&x(&test)), &test.labels)
            .item()
            .unwrap()
    };
    let ckpt = |m: &M, o: &Optim| {
        merge_prefixed([("model.", m.states(ParamState)), ("optim.", o.states())])
    };
    let bytes = to_bytes(&ckpt(&model, &opt)).unwrap();
    let fresh = make();
    let fresh_opt = optimizer.build(&fresh.states(ParamState)).unwrap();
    load_bytes(&ckpt(&fresh, &fresh_opt), &bytes).unwrap();
    let acc = test_acc(&model);
    assert_eq!(test_acc(&fresh), acc);
    assert_eq!(
        fresh_opt.count().value().item().unwrap(),
        (EPOCHS * n) as f64
    );
    acc
}

#[test]
fn the_digits_example_trains_the_mlp_to_over_97_percent() {
    let a = train(|| Mlp::new(&[64, 128, 10], Relu), &[-1, 64]);
    assert!(a >= 0.97, "MLP test accuracy {a}");
}

#[test]
#[ignore = "76 s in the debug profile: cargo test --release --test digits_training -- --include-ignored"]
fn the_digits_example_trains_the_cnn_to_over_98_percent() {
    let conv = |i, o| Conv2d::builder(i, o, (3, 3)).padding(Padding::Same).build();
    let block = |s: Sequential, i, o| s.push(conv(i, o)).push(Relu).push(MaxPool2d::new((2, 2)));
    let cnn = || {
        block(block(Sequential::new(), 1, 16), 16, 32)
            .push(Flatten::new())
            .push(Linear::new(128, 10))
    };
    let a = train(cnn, &[-1, 8, 8, 1]);
    assert!(a >= 0.98, "CNN test accuracy {a}");
}
