//! The seed notebook (BrainState's autodiff tutorial), sections 1–5, cell by cell.
//!
//! Each test reproduces one code cell (the computations are those of
//! `examples/seed_tutorial.rs`), rebuilds what the cell prints with the same format strings, and
//! compares it with the notebook's recorded output, byte for byte. Individual values are also
//! asserted one by one so that a failure names the value that differs.

use stategrad::prelude::*;
use stategrad::StateKey;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Simple linear regression model (notebook §2.1).
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

/// `xs = linspace(-1, 1, 5).reshape(-1, 1)`, `y_true = 3 xs + 1`.
fn data() -> (Tensor, Tensor) {
    let xs = Tensor::linspace(-1.0, 1.0, 5).reshape(&[-1, 1]);
    let y_true = 3.0 * &xs + 1.0;
    (xs, y_true)
}

/// Compare a cell's rebuilt output with the notebook's, showing both on failure.
fn assert_output(got: &str, expected: &str) {
    assert_eq!(
        got, expected,
        "\n--- got ---\n{got}\n--- expected ---\n{expected}"
    );
}

// ---------------------------------------------------------------------------------- §1

/// Cell 3: `grad` w.r.t. arguments, `argnums=0` and `argnums=[0, 1]`.
#[test]
fn cell_03_argnums() -> Result<()> {
    let loss_fn = |(x, y, scale): (Tensor, Tensor, f64)| scale * (&x - &y).square().sum();
    let x = Tensor::new([1.0f32, 2.0, 3.0]);
    let y = Tensor::new([0.5f32, 1.5, 2.5]);
    let scale = 2.0;
    let mut out = String::new();

    let grad_x = grad(loss_fn)
        .argnums(0)
        .call((x.clone(), y.clone(), scale))?;
    assert_eq!(format!("{grad_x}"), "[2. 2. 2.]");
    writeln!(out, "Gradient w.r.t. x: {grad_x}").unwrap();

    let [grad_x, grad_y] = grad(loss_fn)
        .argnums([0, 1])
        .call((x.clone(), y.clone(), scale))?;
    assert_eq!(format!("{grad_x}"), "[2. 2. 2.]");
    assert_eq!(format!("{grad_y}"), "[-2. -2. -2.]");
    writeln!(out, "Gradient w.r.t. x: {grad_x}").unwrap();
    writeln!(out, "Gradient w.r.t. y: {grad_y}").unwrap();

    // Gradients have the argument's shape and dtype.
    assert_eq!(grad_x.shape(), x.shape());
    assert_eq!(grad_y.dtype(), y.dtype());

    assert_output(
        &out,
        "Gradient w.r.t. x: [2. 2. 2.]\n\
         Gradient w.r.t. x: [2. 2. 2.]\n\
         Gradient w.r.t. y: [-2. -2. -2.]\n",
    );
    Ok(())
}

// ---------------------------------------------------------------------------------- §2

/// Cell 5: gradients w.r.t. the model's `ParamState`s, with `return_value`.
#[test]
fn cell_05_param_state_grads() -> Result<()> {
    let model = LinearRegressor::new(1);
    let (xs, y_true) = data();
    let mse_loss = |(x, target): (Tensor, Tensor)| (model.call(&x) - target).square().mean();

    let (param_grads, loss_value) = grad(mse_loss)
        .grad_states(model.states(ParamState))
        .return_value()
        .call((xs, y_true))?;

    assert_eq!(format!("{loss_value:.4}"), "5.5000");
    let keys: Vec<String> = param_grads.keys().map(|p| p.to_string()).collect();
    assert_eq!(keys, ["('bias',)", "('weight',)"]);
    assert_eq!(format!("{}", param_grads[&path!("bias")]), "[-2.]");
    assert_eq!(format!("{}", param_grads[&path!("weight")]), "[[-3.]]");

    let mut out = String::new();
    writeln!(out, "Loss: {loss_value:.4}").unwrap();
    writeln!(out, "\nParameter gradients:").unwrap();
    for (path, g) in &param_grads {
        writeln!(out, "  {path}: {g}").unwrap();
    }
    assert_output(
        &out,
        "Loss: 5.5000\n\
         \n\
         Parameter gradients:\n  \
         ('bias',): [-2.]\n  \
         ('weight',): [[-3.]]\n",
    );

    // Read-only states keep their value.
    assert_eq!(format!("{}", model.weight.value()), "[[0.]]");
    assert_eq!(format!("{}", model.bias.value()), "[0.]");
    Ok(())
}

/// Cell 7: `module.states(ParamState)` and `treefy_states(..).to_flat()` agree.
#[test]
fn cell_07_retrieving_states() {
    let model = LinearRegressor::new(1);
    let mut out = String::new();

    let params_method1 = model.states(ParamState);
    writeln!(out, "Using model.states():").unwrap();
    for (path, state) in &params_method1 {
        writeln!(out, "  {path}: shape={}", state.value().shape_display()).unwrap();
    }
    assert_eq!(
        format!("{}", params_method1[&path!("bias")].value().shape_display()),
        "(1,)"
    );
    assert_eq!(
        format!(
            "{}",
            params_method1[&path!("weight")].value().shape_display()
        ),
        "(1, 1)"
    );

    let params_method2 = treefy_states(&model, ParamState);
    writeln!(out, "\nUsing brainstate.graph.treefy_states():").unwrap();
    for (path, state) in params_method2.to_flat() {
        writeln!(out, "  {path}: shape={}", state.value.shape_display()).unwrap();
    }

    // Both methods return the same states (same keys, same handles).
    assert!(params_method1.keys().eq(params_method2.to_flat().keys()));
    for (path, snap) in params_method2.to_flat() {
        assert!(snap.state.same(&params_method1[&path]));
    }

    assert_output(
        &out,
        "Using model.states():\n  \
         ('bias',): shape=(1,)\n  \
         ('weight',): shape=(1, 1)\n\
         \n\
         Using brainstate.graph.treefy_states():\n  \
         ('bias',): shape=(1,)\n  \
         ('weight',): shape=(1, 1)\n",
    );
}

/// Cell 9: `StateFinder` on `energy`, then gradients w.r.t. the found states.
#[test]
fn cell_09_state_finder() -> Result<()> {
    let scale = ParamState::new(Tensor::scalar(1.5f32)).named("scale");
    let offset = ParamState::new(Tensor::scalar(-0.2f32)).named("offset");
    let cache = State::new(Tensor::scalar(0.0f32)).named("cache"); // not a ParamState
    let energy = |x: Tensor| {
        let shifted = &x * &scale.value() + offset.value();
        scale.set_value(scale.value() + 0.0); // dummy update: marks `scale` as written
        cache.set_value(shifted.sum());
        shifted.square().sum()
    };
    let mut out = String::new();

    let finder = StateFinder::new(energy)
        .filter(ParamState)
        .usage(Usage::All);
    let all_param_states = finder.find(Tensor::ones(&[2]))?;
    writeln!(out, "States found by StateFinder:").unwrap();
    for (name, state) in &all_param_states {
        writeln!(out, "  {name}: {}", state.name().unwrap_or("?")).unwrap();
    }
    assert_eq!(all_param_states.len(), 2);
    assert!(all_param_states[&StateKey::from(0)].same(&scale));
    assert!(all_param_states[&StateKey::from(1)].same(&offset));
    // The finder changed nothing.
    assert_eq!(format!("{}", cache.value()), "0.0");

    let (state_grads, energy_value) = grad(energy)
        .grad_states(all_param_states.clone())
        .return_value()
        .call(Tensor::new([1.0f32, 3.0]))?;
    assert_eq!(format!("{energy_value:.4}"), "20.1800");
    let keys: Vec<String> = state_grads.keys().map(|k| k.to_string()).collect();
    assert_eq!(keys, ["0", "1"]);
    assert_eq!(
        format!("{}", state_grads[&StateKey::from(0)]),
        "28.400001525878906"
    );
    assert_eq!(
        format!("{}", state_grads[&StateKey::from(1)]),
        "11.200000762939453"
    );

    writeln!(out, "\nEnergy: {energy_value:.4}").unwrap();
    writeln!(out, "Gradients:").unwrap();
    for (key, g) in &state_grads {
        writeln!(out, "  {key}: {g}").unwrap();
    }

    assert_output(
        &out,
        "States found by StateFinder:\n  \
         0: scale\n  \
         1: offset\n\
         \n\
         Energy: 20.1800\n\
         Gradients:\n  \
         0: 28.400001525878906\n  \
         1: 11.200000762939453\n",
    );

    // The written states keep the values written inside `grad`: scale unchanged (+0.0), cache =
    // sum(x * 1.5 - 0.2) = 1.3 + 4.3.
    assert_eq!(scale.value().item()?, 1.5);
    assert!((cache.value().item()? - 5.6).abs() < 1e-5);
    Ok(())
}

/// Cell 11: gradients w.r.t. a plain `State` given in a list.
#[test]
fn cell_11_any_state() -> Result<()> {
    let regular_state = State::new(Tensor::scalar(2.0f32)).named("regular_state");
    let compute_with_state = |x: Tensor| (&x * &regular_state.value()).square().sum();
    let gradient = grad(compute_with_state)
        .grad_states(vec![regular_state.clone()])
        .call(Tensor::new([1.0f32, 2.0, 3.0]))?;
    assert_eq!(gradient.len(), 1);
    assert_eq!(format!("{}", gradient[0]), "56.0");
    assert!(gradient[0].is_scalar());
    assert_output(
        &format!("Gradient w.r.t. regular State: {}\n", gradient[0]),
        "Gradient w.r.t. regular State: 56.0\n",
    );
    Ok(())
}

// ---------------------------------------------------------------------------------- §3

/// Cell 13: `grad_states` and `argnums` together, with `return_value`.
#[test]
fn cell_13_argnums_and_grad_states() -> Result<()> {
    let reg_model = LinearRegressor::new(1);
    let (xs, y_true) = data();
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
        .call((Tensor::scalar(0.5f32), xs, y_true))?;

    assert_eq!(format!("{loss_val:.4}"), "5.5000");
    assert_eq!(format!("{coeff_grad:.4}"), "0.0000");
    assert!(coeff_grad.is_scalar());
    assert_eq!(format!("{}", state_grads[&path!("bias")]), "[-2.]");
    assert_eq!(format!("{}", state_grads[&path!("weight")]), "[[-3.]]");

    let mut out = String::new();
    writeln!(out, "Loss: {loss_val:.4}").unwrap();
    writeln!(out, "Gradient w.r.t. l2_coeff: {coeff_grad:.4}").unwrap();
    writeln!(out, "\nState gradients:").unwrap();
    for (path, g) in &state_grads {
        writeln!(out, "  {path}: {g}").unwrap();
    }
    assert_output(
        &out,
        "Loss: 5.5000\n\
         Gradient w.r.t. l2_coeff: 0.0000\n\
         \n\
         State gradients:\n  \
         ('bias',): [-2.]\n  \
         ('weight',): [[-3.]]\n",
    );
    Ok(())
}

// ---------------------------------------------------------------------------------- §4

/// Cell 16: every option at once: `((V, G), L, X)` with an aux dict of metrics.
#[test]
fn cell_16_all_return_options() -> Result<()> {
    let example_model = LinearRegressor::new(1);
    let (xs, y_true) = data();
    let loss_with_metrics = |(l2_coeff, x, target): (Tensor, Tensor, Tensor)| {
        let pred = example_model.call(&x);
        let mse = (&pred - &target).square().mean();
        let l2 = example_model.weight.value().square().sum();
        let loss = &mse + l2_coeff * &l2;
        // Inserted in the notebook's order; the result comes back sorted.
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
        .call((Tensor::scalar(0.3f32), xs, y_true))?;

    assert_eq!(format!("{loss_val:.4}"), "5.5000");
    assert_eq!(format!("{coeff_grad:.4}"), "0.0000");
    assert_eq!(format!("{}", state_grads[&path!("bias")]), "[-2.]");
    assert_eq!(format!("{}", state_grads[&path!("weight")]), "[[-3.]]");
    let aux_keys: Vec<&str> = aux_metrics.keys().copied().collect();
    assert_eq!(aux_keys, ["l2", "mae", "mse"]);
    assert_eq!(format!("{:.4}", aux_metrics["l2"]), "0.0000");
    assert_eq!(format!("{:.4}", aux_metrics["mae"]), "2.0000");
    assert_eq!(format!("{:.4}", aux_metrics["mse"]), "5.5000");

    let mut out = String::new();
    writeln!(out, "Loss: {loss_val:.4}").unwrap();
    writeln!(out, "\nGradient w.r.t. l2_coeff: {coeff_grad:.4}").unwrap();
    writeln!(out, "\nState gradients:").unwrap();
    for (path, g) in &state_grads {
        writeln!(out, "  {path}: {g}").unwrap();
    }
    writeln!(out, "\nAuxiliary metrics:").unwrap();
    for (key, val) in &aux_metrics {
        writeln!(out, "  {key}: {val:.4}").unwrap();
    }
    assert_output(
        &out,
        "Loss: 5.5000\n\
         \n\
         Gradient w.r.t. l2_coeff: 0.0000\n\
         \n\
         State gradients:\n  \
         ('bias',): [-2.]\n  \
         ('weight',): [[-3.]]\n\
         \n\
         Auxiliary metrics:\n  \
         l2: 0.0000\n  \
         mae: 2.0000\n  \
         mse: 5.5000\n",
    );
    Ok(())
}

// ---------------------------------------------------------------------------------- §5

/// Cell 18: `vector_grad` = grad of the sum of the outputs.
#[test]
fn cell_18_vector_grad() -> Result<()> {
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
    let result = vector_grad(vector_fun).call(x0)?;
    assert_eq!(format!("{result}"), "[4.5403023 5.       ]");
    assert_output(
        &format!("Vector gradient: {result}\n"),
        "Vector gradient: [4.5403023 5.       ]\n",
    );
    Ok(())
}

/// Cell 20: `jacrev`, `jacfwd` and `jacobian` agree.
#[test]
fn cell_20_jacobians() -> Result<()> {
    let multi_output =
        |x: Tensor| Tensor::stack(&[&(x.at(0) * x.at(1)), &x.at(0).sin(), &x.at(1).exp()], 0);
    let x0 = Tensor::new([1.0f32, 2.0]);
    let expected = "[[2.        1.       ]\n [0.5403023 0.       ]\n [0.        7.389056 ]]";

    let result_rev = jacrev(multi_output).call(x0.clone())?;
    assert_eq!(result_rev.shape(), &[3, 2]);
    assert_eq!(format!("{result_rev}"), expected);

    let result_fwd = jacfwd(multi_output).call(x0.clone())?;
    assert_eq!(result_fwd.shape(), &[3, 2]);
    assert_eq!(format!("{result_fwd}"), expected);
    assert!(result_rev.allclose(&result_fwd, 1e-5, 1e-8));

    let result_alias = jacobian(multi_output).call(x0)?;
    assert!(result_rev.allclose(&result_alias, 1e-5, 1e-8));
    assert_eq!(format!("{result_alias}"), expected);

    let mut out = String::new();
    writeln!(out, "Jacobian (reverse-mode):").unwrap();
    writeln!(out, "{result_rev}").unwrap();
    writeln!(out, "\nJacobian (forward-mode):").unwrap();
    writeln!(out, "{result_fwd}").unwrap();
    assert_output(
        &out,
        "Jacobian (reverse-mode):\n\
         [[2.        1.       ]\n \
         [0.5403023 0.       ]\n \
         [0.        7.389056 ]]\n\
         \n\
         Jacobian (forward-mode):\n\
         [[2.        1.       ]\n \
         [0.5403023 0.       ]\n \
         [0.        7.389056 ]]\n",
    );
    Ok(())
}

/// Cell 22: the Hessian of `x·x` is `2 I`.
#[test]
fn cell_22_hessian() -> Result<()> {
    let quadratic = |x: Tensor| x.dot(&x);
    let x0 = Tensor::new([1.0f32, 2.0]);
    let result = hessian(quadratic).call(x0)?;
    assert_eq!(result.shape(), &[2, 2]);
    assert_eq!(format!("{result}"), "[[2. 0.]\n [0. 2.]]");
    assert!(result.allclose(&(2.0 * Tensor::eye(2)), 1e-6, 1e-8));
    assert_output(
        &format!("Hessian:\n{result}\n"),
        "Hessian:\n\
         [[2. 0.]\n \
         [0. 2.]]\n",
    );
    Ok(())
}

/// Cell 24: `jacrev` w.r.t. a model's states: output dims first, then the state's dims.
#[test]
fn cell_24_jacobian_wrt_states() -> Result<()> {
    let jac_model = LinearRegressor::new(2);
    let model_output = |x: Tensor| jac_model.call(&x);
    let param_jacobian = jacrev(model_output)
        .grad_states(jac_model.states(ParamState))
        .call(Tensor::new([1.0f32, 2.0]))?;

    let keys: Vec<String> = param_jacobian.keys().map(|p| p.to_string()).collect();
    assert_eq!(keys, ["('bias',)", "('weight',)"]);
    assert_eq!(
        format!("{}", param_jacobian[&path!("bias")].shape_display()),
        "(1, 1)"
    );
    assert_eq!(
        format!("{}", param_jacobian[&path!("weight")].shape_display()),
        "(1, 2, 1)"
    );
    // d(x @ W + b)/dW[i, 0] = x[i]; d/db = 1.
    assert_eq!(param_jacobian[&path!("weight")].to_f64_vec(), [1.0, 2.0]);
    assert_eq!(param_jacobian[&path!("bias")].to_f64_vec(), [1.0]);

    let mut out = String::new();
    writeln!(out, "Jacobian w.r.t. parameters:").unwrap();
    for (path, jac) in &param_jacobian {
        writeln!(out, "  {path}: shape={}", jac.shape_display()).unwrap();
    }
    assert_output(
        &out,
        "Jacobian w.r.t. parameters:\n  \
         ('bias',): shape=(1, 1)\n  \
         ('weight',): shape=(1, 2, 1)\n",
    );

    // The same layout from forward mode.
    let fwd = jacfwd(model_output)
        .grad_states(jac_model.states(ParamState))
        .call(Tensor::new([1.0f32, 2.0]))?;
    assert_eq!(
        format!("{}", fwd[&path!("weight")].shape_display()),
        "(1, 2, 1)"
    );
    assert_eq!(format!("{}", fwd[&path!("bias")].shape_display()), "(1, 1)");
    assert!(fwd[&path!("weight")].allclose(&param_jacobian[&path!("weight")], 1e-6, 1e-8));
    Ok(())
}
