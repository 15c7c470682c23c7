//! The registry and the plugin: lookups, typed errors, malformed results.

use stategrad_core::transform::{grad_pure, Order, PureFn, TransformOutput};
use stategrad_core::{
    path, Error, GradientTransform, ParamState, Params, Path, Result, State, Tensor,
    TransformPlugin,
};
use stategrad_plugins::{
    from_registry, processed_grad, scale, GradSet, GradientProcessor, ProcessedGrad, Processor,
    Registry,
};
use std::collections::BTreeMap;
use std::sync::Arc;

fn sq(x: Tensor) -> Tensor {
    x.square().sum()
}

#[test]
fn builtins_are_registered() {
    let r = Registry::new();
    for t in [
        "grad",
        "vector_grad",
        "jacrev",
        "jacfwd",
        "hessian",
        "scaled_grad",
        "clipped_grad",
    ] {
        assert!(r.has_transform(t), "{t}");
    }
    for p in [
        "identity",
        "scale",
        "clip_by_global_norm",
        "clip_by_value",
        "add_noise",
        "zero_nans",
        "nan_guard",
    ] {
        assert!(r.has_processor(p), "{p}");
    }
    assert!(Registry::empty().transform_names().is_empty());
    let names = r.transform_names();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    // Each built-in transform runs through the registry.
    let x = Tensor::new([1.0f32, 2.0]);
    let g = r
        .gradient_transform(sq, "grad", Params::new())
        .unwrap()
        .call(x.clone())
        .unwrap();
    assert_eq!(g.to_string(), "[2. 4.]");
    let g = r
        .gradient_transform(|x: Tensor| x.square(), "vector_grad", Params::new())
        .unwrap()
        .call(x.clone())
        .unwrap();
    assert_eq!(g.to_string(), "[2. 4.]");
    for name in ["jacrev", "jacfwd"] {
        let j = r
            .gradient_transform(|x: Tensor| x.square(), name, Params::new())
            .unwrap()
            .call(x.clone())
            .unwrap();
        assert_eq!(j.to_string(), "[[2. 0.]\n [0. 4.]]", "{name}");
    }
    for (name, params, want) in [
        (
            "clip_by_value",
            Params::new().with("min", -1.0).with("max", 3.0),
            "[2. 3.]",
        ),
        (
            "add_noise",
            Params::new().with("std", 0.0).with("seed", 3),
            "[2. 4.]",
        ),
        ("zero_nans", Params::new(), "[2. 4.]"),
        ("nan_guard", Params::new(), "[2. 4.]"),
        ("identity", Params::new(), "[2. 4.]"),
    ] {
        let g = r
            .gradient_transform(sq, name, params)
            .unwrap()
            .call(x.clone())
            .unwrap();
        assert_eq!(g.to_string(), want, "{name}");
    }
    // The plugin's name is the registered one.
    assert_eq!(
        r.gradient_transform(sq, "scale", Params::new().with("scale", 2))
            .unwrap()
            .plugin_name(),
        "scale"
    );
    // Hessian is second-order: refused with a typed error.
    assert!(matches!(
        r.gradient_transform(sq, "hessian", Params::new()),
        Err(Error::Unsupported(_))
    ));
    assert_eq!(
        r.transform("hessian", &Params::new()).unwrap().order(),
        Order::Second
    );
}

#[test]
fn unknown_names_list_the_known_ones() {
    let r = Registry::new();
    match r.transform("gradd", &Params::new()) {
        Err(Error::UnknownPlugin { kind, name, known }) => {
            assert_eq!(kind, "transform plugin");
            assert_eq!(name, "gradd");
            assert!(
                known.contains("grad") && known.contains("jacrev"),
                "{known}"
            );
        }
        other => panic!("{other:?}"),
    }
    match r.processor("clip", &Params::new()) {
        Err(Error::UnknownPlugin { kind, known, .. }) => {
            assert_eq!(kind, "gradient processor");
            assert!(known.contains("clip_by_global_norm"), "{known}");
        }
        other => panic!("{other:?}"),
    }
    match from_registry(sq, "nope", Params::new()) {
        Err(e @ Error::UnknownPlugin { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("`nope`") && msg.contains("jacfwd") && msg.contains("zero_nans"),
                "{msg}"
            );
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("found"),
    }
}

#[test]
fn parameters_are_checked() {
    let r = Registry::new();
    let missing = r
        .processor("clip_by_global_norm", &Params::new())
        .unwrap_err();
    assert!(
        matches!(&missing, Error::PluginParam { plugin, name, msg } if plugin == "clip_by_global_norm" && name == "max_norm" && msg.contains("missing")),
        "{missing:?}"
    );
    let mistyped = r
        .processor(
            "clip_by_global_norm",
            &Params::new().with("max_norm", "big"),
        )
        .unwrap_err();
    assert!(
        matches!(&mistyped, Error::PluginParam { msg, .. } if msg.contains("expected float")),
        "{mistyped:?}"
    );
    let bad = r
        .processor("clip_by_global_norm", &Params::new().with("max_norm", -2.0))
        .unwrap_err();
    assert!(
        matches!(&bad, Error::PluginParam { msg, .. } if msg.contains(">= 0")),
        "{bad:?}"
    );
    let typo = r
        .processor("clip_by_global_norm", &Params::new().with("max_nrom", 1.0))
        .unwrap_err();
    assert!(
        matches!(&typo, Error::PluginParam { name, .. } if name == "max_nrom"),
        "{typo:?}"
    );
    let seed = r
        .processor(
            "add_noise",
            &Params::new().with("std", 1.0).with("seed", 1.5),
        )
        .unwrap_err();
    assert!(
        matches!(&seed, Error::PluginParam { name, .. } if name == "seed"),
        "{seed:?}"
    );
    let order = r
        .processor(
            "clip_by_value",
            &Params::new().with("min", 1.0).with("max", 0.0),
        )
        .unwrap_err();
    assert!(matches!(&order, Error::PluginParam { .. }), "{order:?}");
    let extra = r
        .processor("zero_nans", &Params::new().with("x", 1))
        .unwrap_err();
    assert!(matches!(&extra, Error::PluginParam { .. }), "{extra:?}");
    // Transform plugins name themselves.
    let e = r.transform("clipped_grad", &Params::new()).unwrap_err();
    assert!(
        matches!(&e, Error::PluginParam { plugin, .. } if plugin == "clipped_grad"),
        "{e:?}"
    );
    let e = r
        .transform("scaled_grad", &Params::new().with("scale", f64::NAN))
        .unwrap_err();
    assert!(
        matches!(&e, Error::PluginParam { plugin, .. } if plugin == "scaled_grad"),
        "{e:?}"
    );
    // Through from_registry.
    assert!(matches!(
        from_registry(sq, "scale", Params::new()),
        Err(Error::PluginParam { .. })
    ));
    // Ints widen to floats.
    assert!(r
        .processor("scale", &Params::new().with("scale", 2))
        .is_ok());
}

#[test]
fn duplicates_and_replacement() {
    let r = Registry::new();
    let e = r
        .register_processor("scale", |_: &Params| Ok(scale(1.0)))
        .unwrap_err();
    assert!(
        matches!(&e, Error::DuplicatePlugin { kind: "gradient processor", name } if name == "scale"),
        "{e:?}"
    );
    let e = r
        .register_transform_plugin("grad", Arc::new(stategrad_core::transform::GradPlugin))
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::DuplicatePlugin {
                kind: "transform plugin",
                ..
            }
        ),
        "{e:?}"
    );
    // replace_* overwrites and hands back the old factory.
    let old = r.replace_processor("scale", |_: &Params| Ok(scale(3.0)));
    assert!(old.is_some());
    let g = r
        .gradient_transform(sq, "scale", Params::new())
        .unwrap()
        .call(Tensor::new([1.0f32]))
        .unwrap();
    assert_eq!(g.to_string(), "[6.]");
    assert!(r.unregister_processor("scale").is_some());
    assert!(!r.has_processor("scale"));
    assert!(r
        .register_processor("scale", |_: &Params| Ok(scale(1.0)))
        .is_ok());
    assert!(r.unregister_transform("nope").is_none());
}

/// A plugin that returns one gradient too few.
struct Short;
impl TransformPlugin for Short {
    fn name(&self) -> &str {
        "short"
    }
    fn transform(&self, f: &PureFn<'_>, inputs: &[Tensor], _: &Params) -> Result<TransformOutput> {
        let (mut grads, value) = grad_pure(f, inputs)?;
        grads.pop();
        Ok(TransformOutput { grads, value })
    }
}

/// A plugin with gradients of the wrong shape.
struct Reshaped;
impl TransformPlugin for Reshaped {
    fn name(&self) -> &str {
        "reshaped"
    }
    fn transform(&self, f: &PureFn<'_>, inputs: &[Tensor], _: &Params) -> Result<TransformOutput> {
        let (grads, value) = grad_pure(f, inputs)?;
        let grads = grads
            .iter()
            .map(|g| g.try_reshape(&[-1, 1]))
            .collect::<Result<_>>()?;
        Ok(TransformOutput { grads, value })
    }
}

/// A processor that returns an extra gradient.
struct Extra;
impl GradientProcessor for Extra {
    type State = ();
    fn name(&self) -> &str {
        "extra"
    }
    fn update(&self, mut grads: GradSet, _: &mut (), _: Option<&GradSet>) -> Result<GradSet> {
        grads.push(path!("bogus"), Tensor::zeros(&[1]));
        Ok(grads)
    }
}

/// A processor that panics (through an infallible operator).
struct Panicky;
impl GradientProcessor for Panicky {
    type State = ();
    fn name(&self) -> &str {
        "panicky"
    }
    fn update(&self, grads: GradSet, _: &mut (), _: Option<&GradSet>) -> Result<GradSet> {
        let t: Vec<Tensor> = grads.tensors().cloned().collect();
        let _ = &t[0] + &Tensor::zeros(&[7]); // shape mismatch
        Ok(grads)
    }
}

#[test]
fn malformed_results_are_typed_errors() {
    let r = Registry::empty();
    r.register_transform_plugin("short", Arc::new(Short))
        .unwrap();
    r.register_transform_plugin("reshaped", Arc::new(Reshaped))
        .unwrap();
    r.register_processor("extra", |_: &Params| Ok(Arc::new(Extra) as Processor))
        .unwrap();
    let w = ParamState::new(Tensor::new([1.0f32, 2.0]));
    let states: BTreeMap<Path, State> = [(path!("w"), w.clone())].into_iter().collect();
    let f = |x: Tensor| (&x * &w.value()).sum();
    for name in ["short", "reshaped"] {
        let e = r
            .gradient_transform(f, name, Params::new())
            .unwrap()
            .grad_states(states.clone())
            .argnums(0)
            .call(Tensor::new([1.0f32, 1.0]))
            .unwrap_err();
        assert!(
            matches!(&e, Error::MalformedPluginResult { plugin, .. } if plugin == name),
            "{e:?}"
        );
    }
    let e = r
        .gradient_transform(f, "extra", Params::new())
        .unwrap()
        .call(Tensor::new([1.0f32, 1.0]))
        .unwrap_err();
    assert!(
        matches!(&e, Error::MalformedPluginResult { plugin, .. } if plugin == "extra"),
        "{e:?}"
    );
    // A panicking processor becomes an error; the state is restored and the plugin still works.
    let e = processed_grad(f, Arc::new(Panicky))
        .call(Tensor::new([1.0f32, 1.0]))
        .unwrap_err();
    assert!(matches!(&e, Error::ShapeMismatch { .. }), "{e:?}");
    assert_eq!(w.value().to_string(), "[1. 2.]");
}

#[test]
fn plugin_labels_inputs_and_keeps_state() {
    // A processor that records the labels it sees.
    struct Record(std::sync::Mutex<Vec<String>>);
    impl GradientProcessor for Record {
        type State = u64;
        fn name(&self) -> &str {
            "record"
        }
        fn update(&self, grads: GradSet, count: &mut u64, _: Option<&GradSet>) -> Result<GradSet> {
            *count += 1;
            *self.0.lock().unwrap() = grads.labels().map(Path::to_string).collect();
            Ok(grads)
        }
    }
    let rec = Arc::new(Record(Default::default()));
    let plugin = Arc::new(ProcessedGrad::named("rec", rec.clone()));
    let w = ParamState::new(Tensor::new([1.0f32]));
    let g = GradientTransform::new(
        |x: Tensor| (&x * &w.value()).sum(),
        plugin.clone(),
        Params::new(),
    )
    .grad_states(w.clone())
    .argnums(0)
    .call(Tensor::new([2.0f32]))
    .unwrap();
    assert_eq!(g.0.to_string(), "[2.]");
    assert_eq!(*rec.0.lock().unwrap(), ["('state', 0)", "('arg', 0)"]);
    // An argument holding several tensors.
    let f = |(xs,): (Vec<Tensor>,)| {
        xs.iter()
            .map(|x| x.sum())
            .fold(w.value().sum(), |a, b| a + b)
    };
    let g = GradientTransform::new(f, plugin.clone(), Params::new())
        .argnums(0)
        .call((vec![Tensor::scalar(1.0f32); 2],))
        .unwrap();
    assert_eq!(g.len(), 2);
    assert_eq!(*rec.0.lock().unwrap(), ["('arg', 0, 0)", "('arg', 0, 1)"]);
    assert_eq!(plugin.state().unwrap().downcast_ref::<u64>(), Some(&2));
    plugin.reset();
    assert!(plugin.state().is_none());
    assert!(plugin.base().name() == "grad");
    assert_eq!(
        format!("{:?}", plugin.processor()),
        "GradientProcessor(record)"
    );
}
