//! Plugins and gradient processors: the built-ins, one of each written from scratch, the
//! registry, and a short training loop.
//!
//! Run with `cargo run --example custom_plugin`.

use stategrad::plugins::{
    chain, clipped_grad, from_registry, masked, nan_guard, scaled_grad, GradSet, GradientProcessor,
    Processor, Registry, StatefulProcessor,
};
use stategrad::prelude::*;
use stategrad::transform::{grad_pure, PureFn, TransformOutput};
use std::sync::Arc;

#[derive(Module)]
struct LinearRegressor {
    weight: State,
    bias: State,
}

impl LinearRegressor {
    fn new() -> Self {
        LinearRegressor {
            weight: ParamState::new(Tensor::zeros(&[1, 1])),
            bias: ParamState::new(Tensor::zeros(&[1])),
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.weight.value()) + self.bias.value()
    }
}

/// A transform plugin from scratch: signSGD's gradient, `step · sign(∂f)`.
struct SignGrad;

impl TransformPlugin for SignGrad {
    fn name(&self) -> &str {
        "sign_grad"
    }
    fn transform(
        &self,
        f: &PureFn<'_>,
        inputs: &[Tensor],
        params: &Params,
    ) -> Result<TransformOutput> {
        let step = params.f64_or(self.name(), "step", 1.0)?;
        let (grads, value) = grad_pure(f, inputs)?;
        let grads = grads
            .iter()
            .map(|g| g.try_sign()?.try_mul_scalar(step))
            .collect::<Result<Vec<_>>>()?;
        Ok(TransformOutput { grads, value })
    }
}

/// A gradient processor from scratch: rescale the whole set to unit global norm.
struct Normalize;

impl GradientProcessor for Normalize {
    type State = ();
    fn name(&self) -> &str {
        "normalize"
    }
    fn update(&self, grads: GradSet, _: &mut (), _: Option<&GradSet>) -> Result<GradSet> {
        let norm = grads.global_norm()?.try_add_scalar(1e-12)?;
        grads.try_map(|_, g| g.try_div(&norm.cast(g.dtype())))
    }
}

fn main() -> Result<()> {
    let model = LinearRegressor::new();
    let xs = Tensor::linspace(-1.0, 1.0, 5).reshape(&[-1, 1]);
    let ys = 3.0 * &xs + 1.0;
    let loss = |(x, y): (Tensor, Tensor)| (model.forward(&x) - y).square().mean();
    let data = (xs.clone(), ys.clone());

    // 1. The built-in processed-gradient transforms.
    let g = scaled_grad(loss, 0.5)
        .grad_states(model.states(ParamState))
        .call(data.clone())?;
    println!(
        "scaled_grad(0.5):   bias {}  weight {}",
        g[&path!("bias")],
        g[&path!("weight")]
    );
    let g = clipped_grad(loss, 0.1)
        .grad_states(model.states(ParamState))
        .call(data.clone())?;
    println!(
        "clipped_grad(0.1):  bias {}  weight {}  (norms {:.4}, {:.4})",
        g[&path!("bias")],
        g[&path!("weight")],
        g[&path!("bias")].norm(),
        g[&path!("weight")].norm()
    );

    // 2. Register the plugins written above, then use everything by name.
    let registry = Registry::global();
    registry.register_transform_plugin("sign_grad", Arc::new(SignGrad))?;
    registry.register_processor("normalize", |_: &Params| {
        Ok(Arc::new(Normalize) as Processor)
    })?;
    for (name, params) in [
        ("grad", Params::new()),
        ("sign_grad", Params::new().with("step", 0.01)),
        ("normalize", Params::new()),
        ("clip_by_global_norm", Params::new().with("max_norm", 0.1)),
        (
            "clip_by_value",
            Params::new().with("min", -1.0).with("max", 1.0),
        ),
    ] {
        let g = from_registry(loss, name, params)?
            .grad_states(model.states(ParamState))
            .call(data.clone())?;
        println!(
            "{name:>20}: bias {}  weight {}",
            g[&path!("bias")],
            g[&path!("weight")]
        );
    }

    // 3. Errors are typed, never panics.
    if let Err(e) = from_registry(loss, "clip_by_norm", Params::new()) {
        println!("unknown name  -> {e}");
    }
    if let Err(e) = from_registry(loss, "clip_by_global_norm", Params::new()) {
        println!("missing param -> {e}");
    }
    if let Err(e) = registry.register_transform_plugin("sign_grad", Arc::new(SignGrad)) {
        println!("duplicate     -> {e}");
    }

    // 4. Processors on the gradients a transform returns, labelled by path: clip the weights
    //    only, then check for NaN/Inf. The state (if any) persists across steps.
    let post = StatefulProcessor::new(chain(vec![
        masked(
            registry.processor("clip_by_global_norm", &Params::new().with("max_norm", 0.5))?,
            |label: &Path| label.contains(&"weight".into()),
        ),
        nan_guard(),
    ]));
    let lr = 0.5;
    for step in 0..=40 {
        let (grads, value) = grad(loss)
            .grad_states(model.states(ParamState))
            .return_value()
            .call(data.clone())?;
        let grads = post.apply(&grads)?;
        for (p, s) in model.states(ParamState) {
            s.set_value(s.value() - lr * &grads[&p]);
        }
        if step % 10 == 0 {
            println!("step {step:2}: loss {value:.4}");
        }
    }
    println!(
        "learned weight {} bias {} (target 3, 1)",
        model.weight.value(),
        model.bias.value()
    );
    Ok(())
}
