//! The seed tutorial's plugin numbers: `scaled_grad` (0.5) and `clipped_grad` (max_norm 0.1) on
//! the linear model y = x@W + b.

use stategrad_core::{path, ParamState, Params, Path, State, Tensor};
use stategrad_plugins::{clipped_grad, from_registry, scaled_grad, GradSet, Registry};
use std::collections::BTreeMap;

struct Model {
    weight: State,
    bias: State,
}

impl Model {
    fn new() -> Model {
        Model {
            weight: ParamState::new(Tensor::zeros(&[1, 1])),
            bias: ParamState::new(Tensor::zeros(&[1])),
        }
    }
    fn params(&self) -> BTreeMap<Path, State> {
        [
            (path!("weight"), self.weight.clone()),
            (path!("bias"), self.bias.clone()),
        ]
        .into_iter()
        .collect()
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.weight.value()) + self.bias.value()
    }
}

fn data() -> (Tensor, Tensor) {
    let xs = Tensor::linspace(-1.0, 1.0, 5).reshape(&[-1, 1]);
    let ys = 3.0 * &xs + 1.0;
    (xs, ys)
}

#[test]
fn scaled_grad_matches_the_seed() {
    let model = Model::new();
    let loss = |(x, y): (Tensor, Tensor)| (model.forward(&x) - y).square().mean();
    let grads = scaled_grad(loss, 0.5)
        .grad_states(model.params())
        .call(data())
        .unwrap();
    assert_eq!(grads[&path!("bias")].to_string(), "[-1.]");
    assert_eq!(grads[&path!("weight")].to_string(), "[[-1.5]]");
}

#[test]
fn clipped_grad_matches_the_seed() {
    let model = Model::new();
    let loss = |(x, y): (Tensor, Tensor)| (model.forward(&x) - y).square().mean();
    let (grads, value) = clipped_grad(loss, 0.1)
        .grad_states(model.params())
        .return_value()
        .call(data())
        .unwrap();
    assert_eq!(format!("{value:.4}"), "5.5000");
    let b = &grads[&path!("bias")];
    let w = &grads[&path!("weight")];
    assert_eq!(b.to_string(), "[-0.05547]");
    assert_eq!(w.to_string(), "[[-0.08320501]]");
    assert_eq!(format!("{:.4}", b.norm()), "0.0555");
    assert_eq!(format!("{:.4}", w.norm()), "0.0832");
    // The global norm covers all gradients: ≈ max_norm.
    let global = GradSet::from_tree(&grads)
        .global_norm()
        .unwrap()
        .item()
        .unwrap();
    assert!((global - 0.1).abs() < 1e-6, "{global}");
}

#[test]
fn registry_gives_the_same_numbers() {
    let model = Model::new();
    let loss = |(x, y): (Tensor, Tensor)| (model.forward(&x) - y).square().mean();
    for (name, params) in [
        ("clipped_grad", Params::new().with("max_norm", 0.1)),
        ("clip_by_global_norm", Params::new().with("max_norm", 0.1)),
    ] {
        let grads = from_registry(loss, name, params)
            .unwrap()
            .grad_states(model.params())
            .call(data())
            .unwrap();
        assert_eq!(grads[&path!("bias")].to_string(), "[-0.05547]", "{name}");
        assert_eq!(
            grads[&path!("weight")].to_string(),
            "[[-0.08320501]]",
            "{name}"
        );
    }
    for name in ["scaled_grad", "scale"] {
        let grads = Registry::global()
            .gradient_transform(loss, name, Params::new().with("scale", 0.5))
            .unwrap()
            .grad_states(model.params())
            .call(data())
            .unwrap();
        assert_eq!(grads[&path!("bias")].to_string(), "[-1.]", "{name}");
        assert_eq!(grads[&path!("weight")].to_string(), "[[-1.5]]", "{name}");
    }
}

#[test]
fn states_and_arguments_share_one_global_norm() {
    let model = Model::new();
    let loss = |(x, y): (Tensor, Tensor)| (model.forward(&x) - y).square().mean();
    let (v, [gx, gy]) = clipped_grad(loss, 0.1)
        .grad_states(model.params())
        .argnums([0, 1])
        .call(data())
        .unwrap();
    let mut set = GradSet::from_tree(&v);
    set.push(path!("x"), gx);
    set.push(path!("y"), gy);
    let n = set.global_norm().unwrap().item().unwrap();
    assert!((n - 0.1).abs() < 1e-6, "{n}");
}

#[test]
fn processed_gradients_can_be_differentiated_again() {
    use stategrad_core::grad;
    // d/dx Σ scaled_grad(Σx², 0.5)(x) = d/dx Σ x = 1.
    let outer = |x: Tensor| {
        scaled_grad(|x: Tensor| x.square().sum(), 0.5)
            .call(x)
            .map(|g| g.sum())
    };
    let g = grad(outer).call(Tensor::new([1.0f32, -2.0])).unwrap();
    assert_eq!(g.to_string(), "[1. 1.]");
    // Through the clip, inactive (norm 2·|x| < 10): d/dx Σ 2x = 2.
    let outer = |x: Tensor| {
        clipped_grad(|x: Tensor| x.square().sum(), 10.0)
            .call(x)
            .map(|g| g.sum())
    };
    let g = grad(outer).call(Tensor::new([1.0f32, -2.0])).unwrap();
    assert!(g.allclose(&Tensor::new([2.0f32, 2.0]), 1e-5, 1e-6), "{g}");
}
