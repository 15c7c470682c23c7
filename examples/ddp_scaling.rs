//! The W2 training step (MLP 784-512-512-10, ReLU, softmax cross-entropy, SGD) data-parallel
//! over MPI: prints the time per step and the part spent averaging gradients.
//!
//! Weak scaling, one thread per process:
//! `RAYON_NUM_THREADS=1 mpirun -n 1 target/release/examples/ddp_scaling 128` against
//! `RAYON_NUM_THREADS=1 mpirun -n 2 target/release/examples/ddp_scaling 256`
//! (each process computes 128 examples; efficiency = the first time / the second).
//! Add `--oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo` for TCP loopback (as CI
//! runs), or `--oversubscribe --mca btl self,vader` for shared memory.
//!
//! Measured on the 2-core AMD EPYC host while other agents compiled on it (five alternated
//! rounds, medians per round; see BENCHMARKS.md, "Data-parallel scaling (MPI)"): 1 process
//! 5.6–7.3 ms per step (0.22–0.40 ms of it in `all_reduce_grads`), 2 processes 8.2–10.0 ms over
//! TCP (2.1–4.0 ms averaging) and 8.0–8.9 ms over vader (2.0–2.6 ms averaging): efficiency
//! 62–89 % (TCP) and 69–86 % (vader), short of the 90 % goal. The rest is the all-reduce of
//! 2.7 MB of gradients, which cannot overlap the single jitted gradient call.
use stategrad::distributed::{shard, World};
use stategrad::nn::activation::Activation;
use stategrad::nn::layers::Mlp;
use stategrad::nn::loss::{softmax_cross_entropy, Reduction};
use stategrad::optim::{self, Optimizer};
use stategrad::prelude::*;
use std::time::{Duration, Instant};

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let world = World::init()?;
    let global: usize = std::env::args().nth(1).map_or(Ok(256), |a| a.parse())?;
    stategrad::random::seed(0);
    let model = Mlp::new(&[784, 512, 512, 10], Activation::Relu);
    let params = model.states(ParamState);
    let opt = optim::sgd(0.01).build(&params)?;
    world.broadcast_states(&params, 0)?;
    let mine = shard(global, world.rank(), world.size());
    let x = stategrad::random::normal(&[mine.len(), 784]);
    let labels: Vec<i32> = (0..mine.len() as i32).map(|i| i % 10).collect();
    let y = Tensor::from_vec(labels, &[mine.len()])?;
    let local_grad = jit(|(x, y): (Tensor, Tensor)| {
        let loss = |(x, y): (Tensor, Tensor)| {
            softmax_cross_entropy(&model.forward(&x), &y, Reduction::Mean)
        };
        grad(loss).grad_states(params.clone()).call((x, y))
    });
    let (mut total, mut reduce) = (Vec::new(), Vec::new());
    let (warmup, steps) = (5, 100);
    for k in 0..warmup + steps {
        world.barrier()?;
        let t0 = Instant::now();
        let g = local_grad.call((x.clone(), y.clone()));
        let t1 = Instant::now();
        let avg = world.all_reduce_grads(g, mine.len())?;
        let t2 = Instant::now();
        opt.step(&avg)?;
        if k >= warmup {
            total.push(t0.elapsed());
            reduce.push(t2 - t1);
        }
    }
    // Rank 0's view; the median as well as the mean, since a shared host deschedules a rank
    // now and then and one such step weighs on the mean.
    if world.is_root() {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mean = |v: &[Duration]| ms(v.iter().sum::<Duration>()) / v.len() as f64;
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            ms(v[v.len() / 2])
        };
        println!(
            "{} process(es), global batch {global}: per step {:.2} ms mean, {:.2} ms median; averaging gradients {:.2} ms mean, {:.2} ms median",
            world.size(),
            mean(&total),
            median(&mut total),
            mean(&reduce),
            median(&mut reduce)
        );
    }
    Ok(())
}
