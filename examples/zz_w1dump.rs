use stategrad::jit::jit;
use stategrad::prelude::*;
fn main() {
    let w = ParamState::new(Tensor::zeros(&[1, 1]));
    let b = ParamState::new(Tensor::zeros(&[1]));
    let x = Tensor::linspace(-1.0, 1.0, 20).reshape(&[-1, 1]);
    let y = 3.0 * &x + 1.0;
    let params: StateMap = [(path!("b"), b.clone()), (path!("w"), w.clone())]
        .into_iter()
        .collect();
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
        Ok::<_, stategrad::Error>(l)
    };
    let body = jit(|_i: Tensor| step((x.clone(), y.clone())));
    stategrad::exec::tuning::set_arena_native_after_runs(2);
    body.call_loop(10).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..2000 {
        body.call_loop(1000).unwrap();
    }
    println!("{:.1} ns/step", t.elapsed().as_nanos() as f64 / 2e6);
}
