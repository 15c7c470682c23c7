//! A digits classifier (64-128-10 MLP, Adam) trained with one jitted step per mini-batch, then
//! checkpointed with safetensors and reloaded. `cargo run --release --example digits`
use indicatif::ProgressBar;
use stategrad::nn::activation::Activation;
use stategrad::nn::checkpoint::{load_file, merge_prefixed, save_file};
use stategrad::nn::data::{load_digits, Batches};
use stategrad::nn::layers::Mlp;
use stategrad::nn::loss::{softmax_cross_entropy, Reduction};
use stategrad::nn::metrics::accuracy;
use stategrad::optim::{self, Optimizer};
use stategrad::prelude::*;

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    stategrad::random::seed(0);
    let digits = load_digits()?;
    let (train, test) = digits.split(360, 0)?;
    let scale = |x: &Tensor| x / 16.0;
    let model = Mlp::new(&[64, 128, 10], Activation::Relu);
    let params = model.states(ParamState);
    let opt = optim::adam(1e-3).build(&params)?;

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
    let batches = Batches::new(&[scale(&train.features), train.labels.clone()], 64)?
        .shuffle(0)
        .drop_last(true);
    let epochs = 30;
    let bar = ProgressBar::new(epochs);
    let mut last = 0.0;
    for epoch in 0..epochs {
        for b in batches.epoch(epoch) {
            last = step.call((b[0].clone(), b[1].clone()))?.item()?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let test_acc = |m: &Mlp| accuracy(&m.forward(&scale(&test.features)), &test.labels);
    let acc = test_acc(&model).item()?;
    println!(
        "final train loss {last:.4}, test accuracy {:.1} %",
        100.0 * acc
    );
    assert_eq!(step.trace_count(), 1);

    // Checkpoint model and optimizer in one file, reload into a fresh model.
    let file = std::env::temp_dir().join("digits_mlp.safetensors");
    save_file(
        &merge_prefixed([("model.", params.clone()), ("optim.", opt.states())]),
        &file,
    )?;
    let fresh = Mlp::new(&[64, 128, 10], Activation::Relu);
    let fresh_opt = optim::adam(1e-3).build(&fresh.states(ParamState))?;
    let all = merge_prefixed([
        ("model.", fresh.states(ParamState)),
        ("optim.", fresh_opt.states()),
    ]);
    load_file(&all, &file)?;
    assert_eq!(test_acc(&fresh).item()?, acc);
    println!("reloaded from {}: same accuracy", file.display());
    Ok(())
}
