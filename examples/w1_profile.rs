//! Profiling harness for the W1 jitted step (not part of the guide): `perf record` this.
use stategrad::prelude::*;

fn main() {
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
    let step = jit(|(x, y): (Tensor, Tensor)| {
        let (g, l) = grad(loss)
            .grad_states(params.clone())
            .return_value()
            .call((x, y))?;
        for (p, s) in &params {
            s.set_value(s.value() - 0.1 * &g[p]);
        }
        Ok::<Tensor, Error>(l)
    });
    let n = 200_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        step.call((x.clone(), y.clone())).unwrap();
    }
    println!("{:.2} us/step", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}
