//! The README's claim about `examples/digits.rs`: the same program (64-128-10 MLP, Adam 1e-3,
//! 30 epochs of 64-example batches, jitted step) reaches at least 95 % test accuracy, and a
//! checkpoint round trip keeps it exactly.

use stategrad::nn::activation::Activation;
use stategrad::nn::checkpoint::{load_bytes, to_bytes};
use stategrad::nn::data::{load_digits, Batches};
use stategrad::nn::layers::Mlp;
use stategrad::nn::loss::{softmax_cross_entropy, Reduction};
use stategrad::nn::metrics::accuracy;
use stategrad::optim::{self, Optimizer};
use stategrad::prelude::*;

#[test]
fn the_digits_example_trains_to_over_95_percent() {
    stategrad::random::seed(0);
    let digits = load_digits().unwrap();
    let (train, test) = digits.split(360, 0).unwrap();
    let scale = |x: &Tensor| x / 16.0;
    let model = Mlp::new(&[64, 128, 10], Activation::Relu);
    let params = model.states(ParamState);
    let opt = optim::adam(1e-3).build(&params).unwrap();
    let step = jit(|(x, y): (Tensor, Tensor)| -> stategrad::Result<Tensor> {
        let loss = |(x, y): (Tensor, Tensor)| {
            softmax_cross_entropy(&model.forward(&x), &y, Reduction::Mean)
        };
        let (grads, l) = grad(loss)
            .grad_states(params.clone())
            .return_value()
            .call((x, y))?;
        opt.step(&grads)?;
        Ok(l)
    });
    let batches = Batches::new(&[scale(&train.features), train.labels.clone()], 64)
        .unwrap()
        .shuffle(0)
        .drop_last(true);
    for epoch in 0..30 {
        for b in batches.epoch(epoch) {
            step.call((b[0].clone(), b[1].clone())).unwrap();
        }
    }
    assert_eq!(step.trace_count(), 1);
    let acc = |m: &Mlp| {
        accuracy(&m.forward(&scale(&test.features)), &test.labels)
            .item()
            .unwrap()
    };
    let a = acc(&model);
    assert!(a >= 0.95, "test accuracy {a}");
    let fresh = Mlp::new(&[64, 128, 10], Activation::Relu);
    load_bytes(&fresh.states(ParamState), &to_bytes(&params).unwrap()).unwrap();
    assert_eq!(acc(&fresh), a);
}
