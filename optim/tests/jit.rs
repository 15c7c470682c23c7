//! Jitted training steps equal eager ones (the moments and the count are state inputs and
//! outputs, the learning rate a function of the count), and the seed tutorial's §7 loop.

use stategrad_core::{
    grad, jit, path, random, Module, ParamState, Path, Result, State, StateMap, Tensor,
};
use stategrad_optim::{
    adam, exponential_decay, rmsprop, sgd, warmup_cosine_decay, Optim, Optimizer,
};
use std::collections::BTreeMap;

struct Model {
    w: State,
    b: State,
}

impl Model {
    fn new() -> Model {
        Model {
            w: ParamState::new(Tensor::new([[0.1f64], [-0.2], [0.3]])),
            b: ParamState::new(Tensor::new([0.0f64])),
        }
    }
    fn params(&self) -> StateMap {
        [(path!("w"), self.w.clone()), (path!("b"), self.b.clone())].into()
    }
    fn loss(&self, x: &Tensor, y: &Tensor) -> Tensor {
        (x.matmul(&self.w.value()) + self.b.value() - y)
            .square()
            .mean()
    }
}

fn data() -> (Tensor, Tensor) {
    let xs: Vec<f64> = (0..24).map(|i| ((i * 7 % 11) as f64 - 5.0) / 4.0).collect();
    let x = Tensor::from_vec(xs, &[8, 3]).unwrap();
    let y = x.matmul(&Tensor::new([[1.5f64], [-2.0], [0.5]])) + 0.7;
    (x, y)
}

fn values(states: &StateMap) -> BTreeMap<Path, Vec<f64>> {
    states
        .iter()
        .map(|(p, s)| (p.clone(), s.value().to_vec::<f64>()))
        .collect()
}

/// 50 eager steps and 50 jitted steps of the same optimizer on two copies of the model.
fn eager_vs_jit(make: impl Fn(&StateMap) -> Result<Optim>) {
    let (x, y) = data();
    let steps = 50;

    let eager = Model::new();
    let eager_opt = make(&eager.params()).unwrap();
    for _ in 0..steps {
        let grads = grad(|(x, y): (Tensor, Tensor)| eager.loss(&x, &y))
            .grad_states(eager.params())
            .call((x.clone(), y.clone()))
            .unwrap();
        eager_opt.step(&grads).unwrap();
    }

    let jitted = Model::new();
    let opt = make(&jitted.params()).unwrap();
    let params = jitted.params();
    let step = jit(|(x, y): (Tensor, Tensor)| -> Result<Tensor> {
        let (grads, loss) = grad(|(x, y): (Tensor, Tensor)| jitted.loss(&x, &y))
            .grad_states(params.clone())
            .return_value()
            .call((x, y))?;
        opt.step(&grads)?;
        Ok(loss)
    });
    let first_loss = step.call((x.clone(), y.clone())).unwrap().item().unwrap();
    for _ in 1..steps {
        step.call((x.clone(), y.clone())).unwrap();
    }
    assert_eq!(step.trace_count(), 1);
    assert_eq!(opt.count().value().item().unwrap(), steps as f64);
    let last_loss = jitted.loss(&x, &y).item().unwrap();
    assert!(last_loss < first_loss / 2.0, "{first_loss} -> {last_loss}");

    // Parameters, moments and count agree to 1e-12.
    let (e, j) = (
        values(&eager.params())
            .into_iter()
            .chain(values(&eager_opt.states())),
        values(&jitted.params())
            .into_iter()
            .chain(values(&opt.states())),
    );
    let (e, j): (Vec<_>, Vec<_>) = (e.collect(), j.collect());
    assert_eq!(e.len(), j.len());
    for ((pe, ve), (pj, vj)) in e.into_iter().zip(j) {
        assert_eq!(pe, pj);
        assert_eq!(ve.len(), vj.len(), "{pe}");
        for (a, b) in ve.iter().zip(&vj) {
            assert!(
                (a - b).abs() <= 1e-12 * a.abs().max(1.0),
                "{pe}: eager {a}, jit {b}"
            );
        }
    }
}

#[test]
fn adam_with_warmup_cosine_decay_jitted_equals_eager() {
    let schedule = warmup_cosine_decay(0.0, 0.05, 10, 50);
    eager_vs_jit(|p| adam(schedule).build(p));
}

#[test]
fn sgd_nesterov_jitted_equals_eager() {
    eager_vs_jit(|p| {
        sgd(warmup_cosine_decay(0.001, 0.02, 5, 60))
            .momentum(0.9)
            .nesterov(true)
            .clip_by_global_norm(5.0)
            .build(p)
    });
}

/// `Jit::call_loop`: 50 training steps in one call (one arena program, the states carried from
/// iteration to iteration) equal 50 eager steps; the staircase schedule's floor included.
#[test]
fn call_loop_equals_eager_steps() {
    let make = |p: &StateMap| {
        rmsprop(exponential_decay(0.02, 7, 0.5).staircase(true))
            .centered(true)
            .momentum(0.5)
            .build(p)
    };
    let (x, y) = data();
    let eager = Model::new();
    let eager_opt = make(&eager.params()).unwrap();
    for _ in 0..50 {
        let grads = grad(|(x, y): (Tensor, Tensor)| eager.loss(&x, &y))
            .grad_states(eager.params())
            .call((x.clone(), y.clone()))
            .unwrap();
        eager_opt.step(&grads).unwrap();
    }

    let looped = Model::new();
    let opt = make(&looped.params()).unwrap();
    let params = looped.params();
    let body = jit(|_i: Tensor| -> Result<Tensor> {
        let (grads, loss) = grad(|(x, y): (Tensor, Tensor)| looped.loss(&x, &y))
            .grad_states(params.clone())
            .return_value()
            .call((x.clone(), y.clone()))?;
        opt.step(&grads)?;
        Ok(loss)
    });
    body.call_loop(20).unwrap();
    body.call_loop(30).unwrap();
    assert_eq!(body.trace_count(), 1);
    assert_eq!(opt.count().value().item().unwrap(), 50.0);
    let e = values(&eager.params())
        .into_iter()
        .chain(values(&eager_opt.states()));
    let l = values(&looped.params())
        .into_iter()
        .chain(values(&opt.states()));
    let (e, l): (Vec<_>, Vec<_>) = (e.collect(), l.collect());
    assert_eq!(e.len(), l.len());
    for ((pe, ve), (pl, vl)) in e.into_iter().zip(l) {
        assert_eq!(pe, pl);
        assert_eq!(ve.len(), vl.len(), "{pe}");
        for (a, b) in ve.iter().zip(&vl) {
            assert!(
                (a - b).abs() <= 1e-12 * a.abs().max(1.0),
                "{pe}: eager {a}, loop {b}"
            );
        }
    }
}

/// A rate read as a Rust number at trace time would be the step-0 rate (0 here) forever: the
/// jitted parameters would never move.
#[test]
fn jitted_schedule_is_not_baked_in() {
    let m = Model::new();
    let opt = sgd(warmup_cosine_decay(0.0, 0.1, 5, 20))
        .build(&m.params())
        .unwrap();
    let (x, y) = data();
    let params = m.params();
    let step = jit(|(x, y): (Tensor, Tensor)| -> Result<Tensor> {
        let (grads, loss) = grad(|(x, y): (Tensor, Tensor)| m.loss(&x, &y))
            .grad_states(params.clone())
            .return_value()
            .call((x, y))?;
        opt.step(&grads)?;
        Ok(loss)
    });
    let w0 = m.w.value().to_vec::<f64>();
    step.call((x.clone(), y.clone())).unwrap(); // rate 0: nothing moves
    assert_eq!(m.w.value().to_vec::<f64>(), w0);
    step.call((x.clone(), y.clone())).unwrap(); // rate 0.02
    assert_ne!(m.w.value().to_vec::<f64>(), w0);
    assert!((opt.learning_rate().item().unwrap() - 0.04).abs() < 1e-15);
    assert_eq!(step.trace_count(), 1);
}

// ------------------------------------------------------------------ the tutorial's §7

struct LinearRegressor {
    weight: State,
    bias: State,
}

impl Module for LinearRegressor {
    fn visit_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State)) {
        path.push_name("weight");
        self.weight.visit_states(path, visitor);
        path.pop();
        path.push_name("bias");
        self.bias.visit_states(path, visitor);
        path.pop();
    }
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

/// Train with the tutorial's loss; `update` is the hand-written loop's body or `opt.step`.
fn train(
    model: &LinearRegressor,
    data: &(Tensor, Tensor),
    mut update: impl FnMut(&BTreeMap<Path, Tensor>) -> Result<()>,
) {
    let training_loss = jit(|(x, y): (Tensor, Tensor)| {
        let pred = model.call(&x);
        let mse = (pred - y).square().mean();
        let l2 = 0.01 * (model.weight.value().square().sum() + model.bias.value().square().sum());
        (&mse + &l2, BTreeMap::from([("mse", mse), ("l2", l2)]))
    });
    let loss_grad_fn = grad(|a: (Tensor, Tensor)| training_loss.call(a))
        .grad_states(model.states(ParamState))
        .has_aux()
        .return_value();
    for _ in 0..50 {
        let (grads, _loss, _aux) = loss_grad_fn.call(data.clone()).unwrap();
        update(&grads).unwrap();
    }
}

#[test]
fn seed_tutorial_section_7_with_optim_sgd() {
    random::seed(0);
    let x_train = Tensor::linspace(-1.0, 1.0, 20).reshape(&[-1, 1]);
    let y_train = 3.0 * &x_train + 1.0 + 0.1 * random::normal(x_train.shape());
    let data = (x_train, y_train);

    let hand = LinearRegressor::new(1);
    let learning_rate = 0.1;
    train(&hand, &data, |grads| {
        for (path, state) in hand.states(ParamState) {
            state.set_value(state.value() - learning_rate * &grads[&path]);
        }
        Ok(())
    });

    let model = LinearRegressor::new(1);
    let opt = sgd(0.1).build(&model.states(ParamState)).unwrap();
    train(&model, &data, |grads| opt.step(grads));

    let (w, b) = (
        model.weight.value().item().unwrap(),
        model.bias.value().item().unwrap(),
    );
    assert_eq!(w, hand.weight.value().item().unwrap());
    assert_eq!(b, hand.bias.value().item().unwrap());
    assert!(
        (w - 3.0).abs() < 0.5 && (b - 1.0).abs() < 0.2,
        "w {w}, b {b}"
    );
    assert_eq!(opt.count().value().item().unwrap(), 50.0);
}
