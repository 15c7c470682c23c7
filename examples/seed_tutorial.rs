//! The BrainState autodiff tutorial (the seed notebook), section by section, in Rust.
//!
//! Run: `cargo run --release --example seed_tutorial`. Every printed line matches the notebook
//! (float32, as it ran), except §7's noise, which the notebook never seeded.

use stategrad::jit;
use stategrad::plugins::Registry;
use stategrad::prelude::*;
use stategrad::transform::{grad_pure, PureFn, TransformOutput};
use std::collections::BTreeMap;
use std::sync::Arc;

/// §6.1: a custom transform that scales every gradient by the parameter `scale`.
struct ScaledGradTransform;

impl TransformPlugin for ScaledGradTransform {
    fn name(&self) -> &str {
        "scaled_grad"
    }
    fn transform(
        &self,
        f: &PureFn<'_>,
        inputs: &[Tensor],
        params: &Params,
    ) -> Result<TransformOutput> {
        let scale = params.f64(self.name(), "scale")?;
        let (grads, value) = grad_pure(f, inputs)?; // the plain gradient is the base transform
        let grads = grads.iter().map(|g| scale * g).collect();
        Ok(TransformOutput { grads, value })
    }
}

/// §6.2: a custom transform that clips by the global norm over *all* gradients.
struct ClippedGradTransform;

impl TransformPlugin for ClippedGradTransform {
    fn name(&self) -> &str {
        "clipped_grad"
    }
    fn transform(
        &self,
        f: &PureFn<'_>,
        inputs: &[Tensor],
        params: &Params,
    ) -> Result<TransformOutput> {
        let max_norm = params.f64(self.name(), "max_norm")?;
        let (grads, value) = grad_pure(f, inputs)?;
        let sq: f64 = grads
            .iter()
            .map(|g| g.square().sum().item())
            .sum::<Result<f64>>()?;
        let scale = (max_norm / (sq.sqrt() + 1e-6)).min(1.0);
        let grads = grads.iter().map(|g| scale * g).collect();
        Ok(TransformOutput { grads, value })
    }
}

/// Simple linear regression model (§2.1).
#[derive(Module)]
struct LinearRegressor {
    weight: State,
    bias: State,
}

impl LinearRegressor {
    fn new(in_features: usize) -> Self {
        LinearRegressor {
            weight: ParamState::new(Tensor::zeros(&[in_features, 1])),
            bias: ParamState::new(Tensor::zeros(&[1])),
        }
    }
    fn call(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.weight.value()) + self.bias.value()
    }
}

fn main() -> Result<()> {
    // ------------------------------------------------------------ §1 argnums
    let loss_fn = |(x, y, scale): (Tensor, Tensor, f64)| scale * (&x - &y).square().sum();
    let x = Tensor::new([1.0f32, 2.0, 3.0]);
    let y = Tensor::new([0.5f32, 1.5, 2.5]);
    let scale = 2.0;

    let grad_x = grad(loss_fn)
        .argnums(0)
        .call((x.clone(), y.clone(), scale))?;
    println!("Gradient w.r.t. x: {grad_x}");

    let [grad_x, grad_y] = grad(loss_fn).argnums([0, 1]).call((x, y, scale))?;
    println!("Gradient w.r.t. x: {grad_x}");
    println!("Gradient w.r.t. y: {grad_y}");

    // ------------------------------------------------------------ §2.1 ParamState
    let model = LinearRegressor::new(1);
    let xs = Tensor::linspace(-1.0, 1.0, 5).reshape(&[-1, 1]);
    let y_true = 3.0 * &xs + 1.0;

    let mse_loss = |(x, target): (Tensor, Tensor)| (model.call(&x) - target).square().mean();
    let (param_grads, loss_value) = grad(mse_loss)
        .grad_states(model.states(ParamState))
        .return_value()
        .call((xs.clone(), y_true.clone()))?;
    println!("Loss: {loss_value:.4}");
    println!("\nParameter gradients:");
    for (path, g) in &param_grads {
        println!("  {path}: {g}");
    }

    // ------------------------------------------------------------ §2.2 retrieving states
    let params_method1 = model.states(ParamState);
    println!("Using model.states():");
    for (path, state) in &params_method1 {
        println!("  {path}: shape={}", state.value().shape_display());
    }
    let params_method2 = treefy_states(&model, ParamState);
    println!("\nUsing brainstate.graph.treefy_states():");
    for (path, state) in params_method2.to_flat() {
        println!("  {path}: shape={}", state.value.shape_display());
    }
    assert!(params_method1.keys().eq(params_method2.to_flat().keys()));

    // ------------------------------------------------------------ §2.3 StateFinder
    let scale = ParamState::new(Tensor::scalar(1.5f32)).named("scale");
    let offset = ParamState::new(Tensor::scalar(-0.2f32)).named("offset");
    let cache = State::new(Tensor::scalar(0.0f32)).named("cache"); // not a ParamState
    let energy = |x: Tensor| {
        let shifted = &x * &scale.value() + offset.value();
        scale.set_value(scale.value() + 0.0); // dummy update: marks `scale` as written
        cache.set_value(shifted.sum());
        shifted.square().sum()
    };
    let finder = StateFinder::new(energy)
        .filter(ParamState)
        .usage(Usage::All);
    let all_param_states = finder.find(Tensor::ones(&[2]))?;
    println!("States found by StateFinder:");
    for (name, state) in &all_param_states {
        println!("  {name}: {}", state.name().unwrap_or("?"));
    }
    let (state_grads, energy_value) = grad(energy)
        .grad_states(all_param_states.clone())
        .return_value()
        .call(Tensor::new([1.0f32, 3.0]))?;
    println!("\nEnergy: {energy_value:.4}");
    println!("Gradients:");
    for (key, g) in &state_grads {
        println!("  {key}: {g}");
    }

    // ------------------------------------------------------------ §2.4 any State
    let regular_state = State::new(Tensor::scalar(2.0f32)).named("regular_state");
    let compute_with_state = |x: Tensor| (&x * &regular_state.value()).square().sum();
    let gradient = grad(compute_with_state)
        .grad_states(vec![regular_state.clone()])
        .call(Tensor::new([1.0f32, 2.0, 3.0]))?;
    println!("Gradient w.r.t. regular State: {}", gradient[0]);

    // ------------------------------------------------------------ §3 argnums + grad_states
    let reg_model = LinearRegressor::new(1);
    let penalized_loss = |(l2_coeff, inputs, target): (Tensor, Tensor, Tensor)| {
        let pred = reg_model.call(&inputs);
        let mse = (pred - target).square().mean();
        let l2 = reg_model.weight.value().square().sum() + reg_model.bias.value().square().sum();
        mse + l2_coeff * l2
    };
    let ((state_grads, coeff_grad), loss_val) = grad(penalized_loss)
        .grad_states(reg_model.states(ParamState))
        .argnums(0)
        .return_value()
        .call((Tensor::scalar(0.5f32), xs.clone(), y_true.clone()))?;
    println!("Loss: {loss_val:.4}");
    println!("Gradient w.r.t. l2_coeff: {coeff_grad:.4}");
    println!("\nState gradients:");
    for (path, g) in &state_grads {
        println!("  {path}: {g}");
    }

    // ------------------------------------------------------------ §4.2 all return options
    let example_model = LinearRegressor::new(1);
    let loss_with_metrics = |(l2_coeff, x, target): (Tensor, Tensor, Tensor)| {
        let pred = example_model.call(&x);
        let mse = (&pred - &target).square().mean();
        let l2 = example_model.weight.value().square().sum();
        let loss = &mse + l2_coeff * &l2;
        let metrics = BTreeMap::from([
            ("mae", (&pred - &target).abs().mean()),
            ("mse", mse),
            ("l2", l2),
        ]);
        (loss, metrics)
    };
    let ((state_grads, coeff_grad), loss_val, aux_metrics) = grad(loss_with_metrics)
        .grad_states(example_model.states(ParamState))
        .argnums(0)
        .has_aux()
        .return_value()
        .call((Tensor::scalar(0.3f32), xs.clone(), y_true.clone()))?;
    println!("Loss: {loss_val:.4}");
    println!("\nGradient w.r.t. l2_coeff: {coeff_grad:.4}");
    println!("\nState gradients:");
    for (path, g) in &state_grads {
        println!("  {path}: {g}");
    }
    println!("\nAuxiliary metrics:");
    for (key, val) in &aux_metrics {
        println!("  {key}: {val:.4}");
    }

    // ------------------------------------------------------------ §5.1 vector_grad
    let vector_fun = |x: Tensor| {
        Tensor::stack(
            &[
                &(x.at(0) * x.at(1)),
                &x.at(0).sin(),
                &(x.at(0).square() + x.at(1).square()),
            ],
            0,
        )
    };
    let x0 = Tensor::new([1.0f32, 2.0]);
    let result = vector_grad(vector_fun).call(x0.clone())?;
    println!("Vector gradient: {result}");

    // ------------------------------------------------------------ §5.2 jacrev / jacfwd
    let multi_output =
        |x: Tensor| Tensor::stack(&[&(x.at(0) * x.at(1)), &x.at(0).sin(), &x.at(1).exp()], 0);
    let result_rev = jacrev(multi_output).call(x0.clone())?;
    println!("Jacobian (reverse-mode):");
    println!("{result_rev}");
    let result_fwd = jacfwd(multi_output).call(x0.clone())?;
    println!("\nJacobian (forward-mode):");
    println!("{result_fwd}");
    assert!(result_rev.allclose(&result_fwd, 1e-5, 1e-8));
    let result_alias = jacobian(multi_output).call(x0.clone())?;
    assert!(result_rev.allclose(&result_alias, 1e-5, 1e-8));

    // ------------------------------------------------------------ §5.3 hessian
    let quadratic = |x: Tensor| x.dot(&x);
    let result = hessian(quadratic).call(x0.clone())?;
    println!("Hessian:");
    println!("{result}");
    assert!(result.allclose(&(2.0 * Tensor::eye(2)), 1e-6, 1e-8));

    // ------------------------------------------------------------ §5.4 transforms with states
    let jac_model = LinearRegressor::new(2);
    let model_output = |x: Tensor| jac_model.call(&x);
    let param_jacobian = jacrev(model_output)
        .grad_states(jac_model.states(ParamState))
        .call(Tensor::new([1.0f32, 2.0]))?;
    println!("Jacobian w.r.t. parameters:");
    for (path, jac) in &param_jacobian {
        println!("  {path}: shape={}", jac.shape_display());
    }

    // ------------------------------------------------------------ §6 GradientTransform
    // Plugins register once, by name, and are picked by name with typed parameters.
    let registry = Registry::empty();
    registry.register_transform_plugin("scaled_grad", Arc::new(ScaledGradTransform))?;
    registry.register_transform_plugin("clipped_grad", Arc::new(ClippedGradTransform))?;

    let custom_model = LinearRegressor::new(1);
    let custom_loss =
        |(x, target): (Tensor, Tensor)| (custom_model.call(&x) - target).square().mean();
    let scaled_grad_fn = registry
        .gradient_transform(custom_loss, "scaled_grad", Params::new().with("scale", 0.5))?
        .grad_states(custom_model.states(ParamState));
    let scaled_grads = scaled_grad_fn.call((xs.clone(), y_true.clone()))?;
    println!("Scaled gradients:");
    for (path, g) in &scaled_grads {
        println!("  {path}: {g}");
    }
    let normal_grads = grad(custom_loss)
        .grad_states(custom_model.states(ParamState))
        .call((xs.clone(), y_true.clone()))?;
    println!("\nNormal gradients:");
    for (path, g) in &normal_grads {
        println!("  {path}: {g}");
    }

    let clip_model = LinearRegressor::new(1);
    let clip_loss = |(x, target): (Tensor, Tensor)| (clip_model.call(&x) - target).square().mean();
    let clipped_grad_fn = GradientTransform::new(
        clip_loss,
        Arc::new(ClippedGradTransform),
        Params::new().with("max_norm", 0.1),
    )
    .grad_states(clip_model.states(ParamState));
    let clipped_grads = clipped_grad_fn.call((xs.clone(), y_true.clone()))?;
    println!("Clipped gradients:");
    for (path, g) in &clipped_grads {
        println!("  {path}: {g}");
        println!("    norm: {:.4}", g.norm());
    }

    // ------------------------------------------------------------ §7 training loop
    // The notebook never seeded its noise, so its digits cannot be reproduced; we seed it.
    stategrad::random::seed(0);
    let training_model = LinearRegressor::new(1);
    let (true_weight, true_bias) = (3.0, 1.0);
    let x_train = Tensor::linspace(-1.0, 1.0, 20).reshape(&[-1, 1]);
    let y_train =
        true_weight * &x_train + true_bias + 0.1 * stategrad::random::normal(x_train.shape());

    let training_loss = jit(|(x, y): (Tensor, Tensor)| {
        let pred = training_model.call(&x);
        let mse = (pred - y).square().mean();
        let l2 = 0.01
            * (training_model.weight.value().square().sum()
                + training_model.bias.value().square().sum());
        (&mse + &l2, BTreeMap::from([("mse", mse), ("l2", l2)]))
    });
    let loss_grad_fn = grad(|a: (Tensor, Tensor)| training_loss.call(a))
        .grad_states(training_model.states(ParamState))
        .has_aux()
        .return_value();

    let learning_rate = 0.1;
    let num_epochs = 50;
    println!("Training started...");
    println!("Initial weight: {}", training_model.weight.value());
    println!("Initial bias: {}", training_model.bias.value());
    for epoch in 0..num_epochs {
        let (grads, loss_val, aux) = loss_grad_fn.call((x_train.clone(), y_train.clone()))?;
        for (path, state) in training_model.states(ParamState) {
            state.set_value(state.value() - learning_rate * &grads[&path]);
        }
        if (epoch + 1) % 10 == 0 {
            println!("\nEpoch {}:", epoch + 1);
            println!("  Loss: {loss_val:.4}");
            println!("  MSE: {:.4}", aux["mse"]);
            println!("  L2: {:.6}", aux["l2"]);
            println!("  Weight: {}", training_model.weight.value());
            println!("  Bias: {}", training_model.bias.value());
        }
    }
    println!("\nTraining completed!");
    println!(
        "Final weight: {} (true: {true_weight:.1})",
        training_model.weight.value()
    );
    println!(
        "Final bias: {} (true: {true_bias:.1})",
        training_model.bias.value()
    );
    println!(
        "(jit traced the loss {} time(s) for {num_epochs} epochs)",
        training_loss.trace_count()
    );
    Ok(())
}
