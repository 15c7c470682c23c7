//! AdamW's mask, the optimizer's states (paths, shapes, reset), and typed errors.

use stategrad_core::{path, Error, Filter, ParamState, Path, State, StateMap, Tensor};
use stategrad_optim::{
    adagrad, adam, adamw, cosine_decay, rmsprop, sgd, warmup_cosine_decay, Optimizer,
};
use std::collections::BTreeMap;

fn layer() -> (State, State, StateMap) {
    let w = ParamState::new(Tensor::new([[1.0f64, -2.0], [3.0, 4.0]]));
    let b = ParamState::new(Tensor::new([0.5f64, -0.5]));
    let params = [
        (path!("layer", "weight"), w.clone()),
        (path!("layer", "bias"), b.clone()),
    ]
    .into();
    (w, b, params)
}

fn zero_grads(params: &StateMap) -> BTreeMap<Path, Tensor> {
    params
        .iter()
        .map(|(p, s)| (p.clone(), s.value().zeros_like()))
        .collect()
}

#[test]
fn adamw_mask_leaves_biases_undecayed() {
    // With zero gradients Adam's own update is 0, so only the decay moves a parameter:
    // p <- p - lr * wd * p.
    let masks: Vec<(&str, Box<dyn Fn() -> stategrad_optim::Adam>)> = vec![
        (
            "filter",
            Box::new(|| {
                adamw(0.1)
                    .weight_decay(0.5)
                    .mask(Filter::not(Filter::path_contains("bias")))
            }),
        ),
        (
            "fn",
            Box::new(|| {
                adamw(0.1)
                    .weight_decay(0.5)
                    .mask_fn(|p: &Path| !p.contains(&"bias".into()))
            }),
        ),
    ];
    for (what, make) in masks {
        let (w, b, params) = layer();
        let opt = make().build(&params).unwrap();
        let (w0, b0) = (w.value().to_vec::<f64>(), b.value().to_vec::<f64>());
        opt.step(&zero_grads(&params)).unwrap();
        assert_eq!(b.value().to_vec::<f64>(), b0, "{what}: bias untouched");
        let want: Vec<f64> = w0.iter().map(|v| v - 0.1 * (0.5 * v)).collect();
        assert_eq!(w.value().to_vec::<f64>(), want, "{what}: weight decayed");
    }

    // Without a mask both decay.
    let (_, b, params) = layer();
    adamw(0.1)
        .weight_decay(0.5)
        .build(&params)
        .unwrap()
        .step(&zero_grads(&params))
        .unwrap();
    assert_eq!(b.value().to_vec::<f64>(), vec![0.475, -0.475]);
}

fn keys(states: &StateMap) -> Vec<String> {
    states.keys().map(|p| p.to_string()).collect()
}

#[test]
fn states_have_documented_paths_and_shapes() {
    let (_, _, params) = layer();
    let opt = adam(1e-3).build(&params).unwrap();
    let states = opt.states();
    assert_eq!(
        keys(&states),
        [
            "('count',)",
            "('mu', 'layer', 'bias')",
            "('mu', 'layer', 'weight')",
            "('nu', 'layer', 'bias')",
            "('nu', 'layer', 'weight')",
        ]
    );
    assert_eq!(states[&path!("count")].shape(), Vec::<usize>::new());
    assert_eq!(states[&path!("mu", "layer", "weight")].shape(), vec![2, 2]);
    assert_eq!(states[&path!("nu", "layer", "bias")].shape(), vec![2]);
    assert!(states
        .values()
        .all(|s| s.value().to_vec::<f64>().iter().all(|&v| v == 0.0)));
    assert_eq!(opt.params().len(), 2);

    let slots = |o: &dyn Optimizer| {
        let mut names: Vec<String> = o.states().keys().map(|p| p.keys()[0].to_string()).collect();
        names.dedup();
        names
    };
    assert_eq!(slots(&sgd(0.1).build(&params).unwrap()), ["'count'"]);
    assert_eq!(
        slots(&sgd(0.1).momentum(0.9).build(&params).unwrap()),
        ["'count'", "'trace'"]
    );
    assert_eq!(
        slots(&rmsprop(0.1).build(&params).unwrap()),
        ["'count'", "'nu'"]
    );
    assert_eq!(
        slots(
            &rmsprop(0.1)
                .centered(true)
                .momentum(0.9)
                .build(&params)
                .unwrap()
        ),
        ["'count'", "'mu'", "'nu'", "'trace'"]
    );
    let ada = adagrad(0.1).build(&params).unwrap();
    assert_eq!(slots(&ada), ["'count'", "'sum_of_squares'"]);
    assert_eq!(
        ada.states()[&path!("sum_of_squares", "layer", "weight")]
            .value()
            .to_vec::<f64>(),
        vec![0.1; 4]
    );
}

#[test]
fn reset_restores_count_and_slots() {
    let (w, _, params) = layer();
    let opt = adam(cosine_decay(0.1, 10)).build(&params).unwrap();
    let grads: BTreeMap<Path, Tensor> = params
        .iter()
        .map(|(p, s)| (p.clone(), s.value().ones_like()))
        .collect();
    opt.step(&grads).unwrap();
    opt.step(&grads).unwrap();
    assert_eq!(opt.count().value().item().unwrap(), 2.0);
    assert!(opt.learning_rate().item().unwrap() < 0.1);
    let w2 = w.value().to_vec::<f64>();
    opt.reset();
    assert_eq!(opt.count().value().item().unwrap(), 0.0);
    assert_eq!(opt.learning_rate().item().unwrap(), 0.1);
    for s in opt.states().values() {
        assert!(s.value().to_vec::<f64>().iter().all(|&v| v == 0.0));
    }
    assert_eq!(w.value().to_vec::<f64>(), w2, "parameters are not reset");
}

#[test]
fn empty_param_set_is_a_no_op() {
    let opt = adam(0.1).build(&StateMap::new()).unwrap();
    opt.step(&BTreeMap::new()).unwrap();
    assert_eq!(keys(&opt.states()), ["('count',)"]);
    assert_eq!(opt.count().value().item().unwrap(), 0.0);
}

#[test]
fn bad_gradients_are_typed_errors_and_write_nothing() {
    let (w, b, params) = layer();
    let opt = sgd(0.1).momentum(0.9).build(&params).unwrap();
    let good: BTreeMap<Path, Tensor> = params
        .iter()
        .map(|(p, s)| (p.clone(), s.value().ones_like()))
        .collect();
    let snapshot = |o: &dyn Optimizer| -> Vec<Vec<f64>> {
        o.states()
            .values()
            .chain([&w, &b])
            .map(|s| s.value().to_vec::<f64>())
            .collect()
    };
    let before = snapshot(&opt);

    let mut extra = good.clone();
    extra.insert(path!("layer", "gamma"), Tensor::new([1.0f64]));
    let e = opt.step(&extra).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidArgument {
                op: "optim.step",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("('layer', 'gamma')"), "{e}");

    let mut missing = good.clone();
    missing.remove(&path!("layer", "bias"));
    let e = opt.step(&missing).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("no gradient for the parameter at ('layer', 'bias')"),
        "{e}"
    );

    let mut wrong_shape = good.clone();
    wrong_shape.insert(path!("layer", "bias"), Tensor::new([1.0f64, 2.0, 3.0]));
    let e = opt.step(&wrong_shape).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ShapeMismatch {
                op: "optim.step",
                ..
            }
        ),
        "{e}"
    );

    assert_eq!(snapshot(&opt), before, "a failed step writes nothing");

    // A parameter reshaped after build no longer matches its slots.
    let (w2, _, params2) = layer();
    let opt2 = adam(0.1).build(&params2).unwrap();
    w2.set_value(Tensor::zeros(&[3]).cast(stategrad_core::DType::F64));
    let mut g2 = zero_grads(&params2);
    g2.insert(path!("layer", "weight"), Tensor::zeros(&[3]));
    assert!(matches!(opt2.step(&g2), Err(Error::ShapeMismatch { .. })));

    opt.step(&good).unwrap();
    assert_ne!(snapshot(&opt), before);
}

#[test]
fn nan_hyper_parameters_are_typed_errors_at_build() {
    let (_, _, params) = layer();
    let option = |r: stategrad_core::Result<stategrad_optim::Optim>| match r {
        Err(Error::InvalidOption { option, .. }) => option,
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("built with a bad hyper-parameter"),
    };
    let nan = f64::NAN;
    assert_eq!(option(sgd(nan).build(&params)), "learning_rate");
    assert_eq!(option(sgd(0.1).momentum(nan).build(&params)), "momentum");
    assert_eq!(option(adam(0.1).b1(nan).build(&params)), "b1");
    assert_eq!(option(adam(0.1).b2(f64::INFINITY).build(&params)), "b2");
    assert_eq!(option(adam(0.1).eps(nan).build(&params)), "eps");
    assert_eq!(
        option(adamw(0.1).weight_decay(nan).build(&params)),
        "weight_decay"
    );
    assert_eq!(option(rmsprop(0.1).decay(nan).build(&params)), "decay");
    assert_eq!(option(adagrad(0.1).eps(nan).build(&params)), "eps");
    assert_eq!(
        option(adagrad(0.1).initial_accumulator_value(-1.0).build(&params)),
        "initial_accumulator_value"
    );
    assert_eq!(
        option(sgd(0.1).clip_by_global_norm(nan).build(&params)),
        "clip_by_global_norm"
    );
    assert_eq!(
        option(sgd(0.1).clip_by_global_norm(0.0).build(&params)),
        "clip_by_global_norm"
    );
    assert_eq!(
        option(sgd(cosine_decay(nan, 10)).build(&params)),
        "init_value"
    );
    assert_eq!(
        option(sgd(cosine_decay(0.1, 0)).build(&params)),
        "decay_steps"
    );
    assert_eq!(
        option(adam(warmup_cosine_decay(0.0, 0.1, 10, 10)).build(&params)),
        "decay_steps"
    );
}

#[test]
fn optimizers_are_usable_as_trait_objects() {
    let (_, _, params) = layer();
    let opts: Vec<Box<dyn Optimizer>> = vec![
        Box::new(sgd(0.1).build(&params).unwrap()),
        Box::new(adam(0.1).build(&params).unwrap()),
        Box::new(rmsprop(0.1).build(&params).unwrap()),
        Box::new(adagrad(0.1).build(&params).unwrap()),
    ];
    let grads = zero_grads(&params);
    for o in &opts {
        o.step(&grads).unwrap();
        assert_eq!(o.count().value().item().unwrap(), 1.0);
    }
}

#[test]
fn states_restore_a_checkpoint() {
    // Train a few steps, copy params and optimizer states into a fresh copy, continue both.
    let (_, _, params) = layer();
    let opt = adamw(warmup_cosine_decay(0.0, 0.1, 2, 20))
        .build(&params)
        .unwrap();
    let grads = |ps: &StateMap| -> BTreeMap<Path, Tensor> {
        ps.iter()
            .map(|(p, s)| (p.clone(), s.value().square() - 1.0))
            .collect()
    };
    for _ in 0..3 {
        opt.step(&grads(&params)).unwrap();
    }
    let (_, _, params2) = layer();
    let opt2 = adamw(warmup_cosine_decay(0.0, 0.1, 2, 20))
        .build(&params2)
        .unwrap();
    for (path, s) in params.iter().chain(&opt.states()) {
        let target = params2
            .get(path)
            .cloned()
            .unwrap_or_else(|| opt2.states()[path].clone());
        target.set_value(s.value());
    }
    for _ in 0..3 {
        opt.step(&grads(&params)).unwrap();
        opt2.step(&grads(&params2)).unwrap();
    }
    for ((p, a), (_, b)) in params
        .iter()
        .chain(&opt.states())
        .zip(params2.iter().chain(&opt2.states()))
    {
        assert_eq!(a.value().to_vec::<f64>(), b.value().to_vec::<f64>(), "{p}");
    }
}

/// A step count restored with another shape (a `[1]` tensor from a checkpoint) would broadcast
/// into every update: it is a typed error, and nothing is written.
#[test]
fn a_non_scalar_count_is_a_typed_error() {
    let (w, b, params) = layer();
    let opt = adam(0.1).build(&params).unwrap();
    opt.count().set_value(Tensor::new([0.0f64]));
    let before: Vec<Vec<f64>> = [&w, &b].iter().map(|s| s.value().to_vec()).collect();
    let e = opt.step(&zero_grads(&params)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidArgument {
                op: "optim.step",
                ..
            }
        ),
        "{e:?}"
    );
    let after: Vec<Vec<f64>> = [&w, &b].iter().map(|s| s.value().to_vec()).collect();
    assert_eq!(before, after);
    assert_eq!(opt.count().shape(), vec![1]);
}
