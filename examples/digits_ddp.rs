//! The digits MLP trained data-parallel over MPI: every rank takes its shard of each global
//! batch, gradients are averaged across ranks, every rank applies the same Adam step.
//!
//! `cargo build --release --features distributed --example digits_ddp`, then
//! `mpirun -n 2 target/release/examples/digits_ddp` (same final accuracy as `-n 1`).
//!
//! At the end rank 0 alone writes the checkpoint of the model and the optimizer
//! (`World::save_checkpoint`), and `World::load_checkpoint` reads it back as a resumed run would:
//! rank 0 reads the file, every rank receives its values.
use stategrad::distributed::{shard, World};
use stategrad::nn::activation::Activation;
use stategrad::nn::checkpoint::{merge_prefixed, MODEL_PREFIX, OPTIM_PREFIX};
use stategrad::nn::data::{load_digits, Batches};
use stategrad::nn::layers::Mlp;
use stategrad::nn::loss::{softmax_cross_entropy, Reduction};
use stategrad::nn::metrics::accuracy;
use stategrad::optim::{self, Optimizer};
use stategrad::prelude::*;
use std::time::{Duration, Instant};

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let world = World::init()?;
    stategrad::random::seed(world.rank() as u64); // different on purpose: rank 0's wins below
    let digits = load_digits()?;
    let (train, test) = digits.split(360, 0)?;
    let scale = |x: &Tensor| x / 16.0;
    let model = Mlp::new(&[64, 128, 10], Activation::Relu);
    let params = model.states(ParamState);
    let opt = optim::adam(1e-3).build(&params)?;
    world.broadcast_states(&params, 0)?;
    world.broadcast_states(&opt.states(), 0)?;

    let local_grad = jit(|(x, y): (Tensor, Tensor)| {
        let loss = |(x, y): (Tensor, Tensor)| {
            softmax_cross_entropy(&model.forward(&x), &y, Reduction::Mean)
        };
        grad(loss).grad_states(params.clone()).call((x, y))
    });
    let global = 64;
    let batches = Batches::new(&[scale(&train.features), train.labels.clone()], global)?
        .shuffle(0)
        .drop_last(true);
    let mine = shard(global, world.rank(), world.size());
    let (mut compute, mut reduce, mut steps) = (Duration::ZERO, Duration::ZERO, 0u32);
    for epoch in 0..30 {
        for b in batches.epoch(epoch) {
            let t0 = Instant::now();
            let x = b[0].slice_axis(0, mine.start, mine.end);
            let y = b[1].slice_axis(0, mine.start, mine.end);
            let g = local_grad.call((x, y));
            let t1 = Instant::now();
            let avg = world.all_reduce_grads(g, mine.len())?;
            let t2 = Instant::now();
            opt.step(&avg)?;
            compute += t1 - t0 + t2.elapsed();
            reduce += t2 - t1;
            steps += 1;
        }
    }
    let acc = accuracy(&model.forward(&scale(&test.features)), &test.labels).item()?;
    let both = || merge_prefixed([(MODEL_PREFIX, params.clone()), (OPTIM_PREFIX, opt.states())]);
    let file = std::env::temp_dir().join("digits_ddp.safetensors");
    world.save_checkpoint(&both(), &file)?;
    world.load_checkpoint(&both(), &file)?;
    let reloaded = accuracy(&model.forward(&scale(&test.features)), &test.labels).item()?;
    assert_eq!(acc, reloaded, "the checkpoint holds the trained model");
    if world.is_root() {
        println!("checkpoint written by rank 0 to {}", file.display());
        println!(
            "{} rank(s): test accuracy {:.1} %, per step {:.1} µs computing, {:.1} µs in all-reduce",
            world.size(),
            100.0 * acc,
            compute.as_secs_f64() * 1e6 / steps as f64,
            reduce.as_secs_f64() * 1e6 / steps as f64
        );
    }
    Ok(())
}
