//! Invariants of the built-in processors and combinators.

use stategrad_core::{path, Error, Path, Tensor};
use stategrad_plugins::{
    add_decayed_weights, add_noise, apply, apply_with_params, chain, clip_by_global_norm,
    clip_by_value, filter_mask, identity, masked, nan_guard, scale, update_checked, zero_nans,
    GradSet, GradientProcessor, ProcState, Processor, StatefulProcessor,
};
use std::collections::BTreeMap;

fn grads() -> BTreeMap<Path, Tensor> {
    [
        (path!("bias"), Tensor::new([-2.0f32, 0.5])),
        (
            path!("layers", 0, "weight"),
            Tensor::new([[-3.0f32, 1.0], [0.25, 4.0]]),
        ),
        (path!("scale"), Tensor::scalar(1.5f32)),
    ]
    .into_iter()
    .collect()
}

fn run(p: &Processor, g: &BTreeMap<Path, Tensor>) -> BTreeMap<Path, Tensor> {
    apply(&**p, &mut p.init(&GradSet::from_tree(g), None).unwrap(), g).unwrap()
}

fn same(a: &BTreeMap<Path, Tensor>, b: &BTreeMap<Path, Tensor>, rtol: f64) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, ta), (kb, tb))| ka == kb && ta.allclose(tb, rtol, 1e-7))
}

fn global_norm(g: &BTreeMap<Path, Tensor>) -> f64 {
    GradSet::from_tree(g).global_norm().unwrap().item().unwrap()
}

#[test]
fn labels_are_paths() {
    let set = GradSet::from_tree(&grads());
    let labels: Vec<String> = set.labels().map(Path::to_string).collect();
    assert_eq!(
        labels,
        ["('bias',)", "('layers', 0, 'weight')", "('scale',)"]
    );
    assert_eq!(set.labels().nth(1), Some(&path!("layers", 0, "weight")));
    // Tuples and Vecs: positions, then the map's path keys.
    let t = (
        grads(),
        vec![Tensor::scalar(1.0f32), Tensor::scalar(2.0f32)],
    );
    let set = GradSet::from_tree(&t);
    assert_eq!(set.labels().next(), Some(&path!(0, "bias")));
    assert_eq!(set.labels().nth(4), Some(&path!(1, 1)));
    let back = set.to_tree(&t).unwrap();
    assert_eq!(back.1[1].to_string(), "2.0");
    // Any Tree with flat indices.
    let set = GradSet::from_tree_indexed(&t);
    let flat: Vec<Path> = (0..5usize).map(|i| path!(i)).collect();
    assert_eq!(set.labels().cloned().collect::<Vec<_>>(), flat);
    // A set of the wrong size does not rebuild.
    let mut short = GradSet::from_tree(&t);
    short.entries_mut()[0].1 = Tensor::zeros(&[3]);
    assert!(matches!(
        short.to_tree(&t),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        GradSet::new().to_tree(&t),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn clip_by_global_norm_bounds_the_norm() {
    let g = grads();
    let n0 = global_norm(&g);
    for max_norm in [0.1, 1.0, 2.5, n0 * 0.999] {
        let c = run(&clip_by_global_norm(max_norm), &g);
        let n = global_norm(&c);
        assert!(n <= max_norm * (1.0 + 1e-6), "{n} > {max_norm}");
        // Active: equal to the bound (up to the 1e-6 of the formula and f32 rounding).
        assert!((n - max_norm).abs() <= max_norm * 1e-5, "{n} vs {max_norm}");
        // All gradients scaled by one factor: directions kept.
        let k = c[&path!("bias")].to_f64_vec()[0] / g[&path!("bias")].to_f64_vec()[0];
        for (p, t) in &c {
            assert!(t.allclose(&g[p].mul_scalar(k), 1e-5, 1e-7));
        }
        // Clipping twice changes nothing (beyond the 1e-6 relative of the formula).
        let cc = run(&clip_by_global_norm(max_norm), &c);
        assert!(same(&c, &cc, 1e-5));
    }
    // Inactive: unchanged.
    let c = run(&clip_by_global_norm(n0 * 2.0), &g);
    assert!(same(&c, &g, 0.0));
    // Empty set, zero gradients: fine.
    let empty: BTreeMap<Path, Tensor> = BTreeMap::new();
    assert!(run(&clip_by_global_norm(1.0), &empty).is_empty());
    let zeros = g.iter().map(|(k, v)| (k.clone(), v.zeros_like())).collect();
    assert!(same(&run(&clip_by_global_norm(1.0), &zeros), &zeros, 0.0));
}

#[test]
fn chain_and_identity() {
    let g = grads();
    let a = clip_by_global_norm(1.0);
    assert!(same(
        &run(&chain(vec![a.clone(), identity()]), &g),
        &run(&a, &g),
        0.0
    ));
    assert!(same(
        &run(&chain(vec![identity(), a.clone()]), &g),
        &run(&a, &g),
        0.0
    ));
    assert!(same(&run(&chain(vec![]), &g), &g, 0.0));
    assert!(same(&run(&identity(), &g), &g, 0.0));
    // Order matters: scale then clip_by_value.
    let c = run(&chain(vec![scale(10.0), clip_by_value(-1.0, 1.0)]), &g);
    assert_eq!(c[&path!("bias")].to_string(), "[-1.  1.]");
    assert_eq!(
        chain(vec![scale(2.0), identity()]).name(),
        "chain(scale, identity)"
    );
}

#[test]
fn scale_one_is_identity() {
    let g = grads();
    assert!(same(&run(&scale(1.0), &g), &g, 0.0));
    let h = run(&scale(-0.5), &g);
    assert_eq!(h[&path!("bias")].to_string(), "[ 1.   -0.25]");
}

#[test]
fn clip_by_value_clamps() {
    let g = grads();
    let c = run(&clip_by_value(-1.0, 1.0), &g);
    assert_eq!(
        c[&path!("layers", 0, "weight")].to_string(),
        "[[-1.    1.  ]\n [ 0.25  1.  ]]"
    );
    assert!(c
        .values()
        .all(|t| t.to_f64_vec().iter().all(|x| (-1.0..=1.0).contains(x))));
    // Twice is once.
    assert!(same(&run(&clip_by_value(-1.0, 1.0), &c), &c, 0.0));
}

#[test]
fn masked_leaves_unselected_paths_untouched() {
    let g = grads();
    let p = masked(scale(0.0), |l: &Path| l.contains(&"weight".into()));
    let out = run(&p, &g);
    assert_eq!(
        out[&path!("layers", 0, "weight")].to_f64_vec(),
        vec![0.0; 4]
    );
    for k in [path!("bias"), path!("scale")] {
        assert!(out[&k].shares_buffer(&g[&k]), "{k} was touched");
    }
    // The inner processor's global quantities cover the selection only.
    let out = run(
        &masked(clip_by_global_norm(0.1), |l: &Path| *l == path!("bias")),
        &g,
    );
    assert!((out[&path!("bias")].norm().item().unwrap() - 0.1).abs() < 1e-6);
    assert!(out[&path!("scale")].shares_buffer(&g[&path!("scale")]));
    // Nothing selected: nothing changes.
    let out = run(&masked(scale(3.0), |_: &Path| false), &g);
    assert!(same(&out, &g, 0.0));
}

#[test]
fn add_noise_is_reproducible_from_its_seed() {
    let g = grads();
    let a = StatefulProcessor::new(add_noise(0.1, 42));
    let b = StatefulProcessor::new(add_noise(0.1, 42));
    let c = StatefulProcessor::new(add_noise(0.1, 43));
    let (a1, a2) = (a.apply(&g).unwrap(), a.apply(&g).unwrap());
    let (b1, b2) = (b.apply(&g).unwrap(), b.apply(&g).unwrap());
    assert!(same(&a1, &b1, 0.0) && same(&a2, &b2, 0.0));
    assert!(!same(&a1, &a2, 0.0), "each step draws new noise");
    assert!(
        !same(&a1, &c.apply(&g).unwrap(), 0.0),
        "another seed, other noise"
    );
    assert_eq!(a.state().unwrap().downcast_ref::<u64>(), Some(&2));
    // Explicit state: step 0 again.
    let again = apply(&*add_noise(0.1, 42), &mut ProcState::default(), &g).unwrap();
    assert!(same(&again, &a1, 0.0));
    // Roughly N(0, std²).
    let big = Tensor::zeros(&[20_000]);
    let n = apply(
        &*add_noise(2.0, 1),
        &mut ProcState::new(5u64, "add_noise"),
        &big,
    )
    .unwrap()
    .to_f64_vec();
    let mean = n.iter().sum::<f64>() / n.len() as f64;
    let var = n.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n.len() as f64;
    assert!(mean.abs() < 0.05, "mean {mean}");
    assert!((var.sqrt() - 2.0).abs() < 0.05, "std {}", var.sqrt());
    // std 0: unchanged.
    assert!(same(&run(&add_noise(0.0, 9), &g), &g, 0.0));
    // Keeps the dtype.
    let g64 = Tensor::new([1.0f64, 2.0]);
    assert_eq!(
        apply(&*add_noise(0.1, 1), &mut ProcState::default(), &g64)
            .unwrap()
            .dtype(),
        g64.dtype()
    );
}

#[test]
fn nan_handling() {
    let mut g = grads();
    g.insert(
        path!("layers", 1, "weight"),
        Tensor::new([1.0f32, f32::NAN, f32::INFINITY]),
    );
    let z = run(&zero_nans(), &g);
    assert_eq!(
        z[&path!("layers", 1, "weight")].to_f64_vec(),
        vec![1.0, 0.0, f64::INFINITY]
    );
    assert!(same(&run(&zero_nans(), &grads()), &grads(), 0.0));

    let err = apply(&*nan_guard(), &mut ProcState::default(), &g).unwrap_err();
    match &err {
        Error::NonFinite {
            location: Some(l), ..
        } => {
            assert!(l.contains("('layers', 1, 'weight')"), "{l}");
            assert!(l.contains("element 1"), "{l}");
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(err.to_string().contains("('layers', 1, 'weight')"));
    // Inf alone is caught too; f64 as well.
    let inf = Tensor::new([0.0f64, f64::NEG_INFINITY]);
    assert!(matches!(
        apply(&*nan_guard(), &mut ProcState::default(), &inf),
        Err(Error::NonFinite { .. })
    ));
    // Finite: passes through.
    assert!(same(&run(&nan_guard(), &grads()), &grads(), 0.0));
    // zero_nans then nan_guard still fails on the infinity.
    assert!(apply(
        &*chain(vec![zero_nans(), nan_guard()]),
        &mut ProcState::default(),
        &g
    )
    .is_err());
}

#[test]
fn bad_parameters_and_states_are_typed_errors() {
    let g = grads();
    for p in [
        clip_by_global_norm(-1.0),
        clip_by_global_norm(f64::NAN),
        clip_by_value(1.0, -1.0),
        clip_by_value(f64::NAN, 1.0),
        scale(f64::INFINITY),
        add_noise(-1.0, 0),
    ] {
        let r = apply(&*p, &mut ProcState::default(), &g);
        assert!(
            matches!(r, Err(Error::PluginParam { .. })),
            "{}: {r:?}",
            p.name()
        );
    }
    // A state of the wrong kind.
    let r = apply(
        &*add_noise(0.1, 0),
        &mut ProcState::new(Vec::<Tensor>::new(), "momentum"),
        &g,
    );
    assert!(
        matches!(r, Err(Error::PluginParam { ref name, .. }) if name == "state"),
        "{r:?}"
    );
    let r = apply(
        &*chain(vec![identity(), identity()]),
        &mut ProcState::new(vec![ProcState::default()], "chain"),
        &g,
    );
    assert!(matches!(r, Err(Error::PluginParam { .. })), "{r:?}");
}

/// Drops the last gradient: a malformed processor.
struct Dropper;
impl GradientProcessor for Dropper {
    type State = ();
    fn name(&self) -> &str {
        "dropper"
    }
    fn update(
        &self,
        grads: GradSet,
        _: &mut (),
        _: Option<&GradSet>,
    ) -> stategrad_core::Result<GradSet> {
        let mut e = grads.into_entries();
        e.pop();
        Ok(GradSet::from_entries(e))
    }
}

/// Reshapes: malformed too.
struct Flattener;
impl GradientProcessor for Flattener {
    type State = ();
    fn name(&self) -> &str {
        "flattener"
    }
    fn update(
        &self,
        grads: GradSet,
        _: &mut (),
        _: Option<&GradSet>,
    ) -> stategrad_core::Result<GradSet> {
        grads.try_map(|_, g| g.try_reshape(&[-1]))
    }
}

#[test]
fn malformed_processors_are_reported() {
    let g = grads();
    for p in [
        std::sync::Arc::new(Dropper) as Processor,
        std::sync::Arc::new(Flattener),
    ] {
        let name = p.name().to_string();
        let r = apply(&*p, &mut ProcState::default(), &g);
        assert!(
            matches!(&r, Err(Error::MalformedPluginResult { plugin, .. }) if *plugin == name),
            "{r:?}"
        );
        // Inside a chain or a mask, the culprit is named too.
        let r = apply(
            &*chain(vec![identity(), p.clone()]),
            &mut ProcState::default(),
            &g,
        );
        assert!(
            matches!(&r, Err(Error::MalformedPluginResult { plugin, .. }) if *plugin == name),
            "{r:?}"
        );
        let r = update_checked(
            &*masked(p.clone(), |_: &Path| true),
            GradSet::from_tree(&g),
            &mut ProcState::default(),
            None,
        );
        assert!(
            matches!(&r, Err(Error::MalformedPluginResult { plugin, .. }) if *plugin == name),
            "{r:?}"
        );
    }
}

// ------------------------------------------------------------------ typed states, parameters

/// Heavy-ball momentum: `m ← μ·m + g`; returns `m`. Its state is its own type.
struct Momentum {
    mu: f64,
}

#[derive(Clone, Default, Debug)]
struct MomentumState {
    m: Vec<Tensor>,
    steps: usize,
}

impl GradientProcessor for Momentum {
    type State = MomentumState;
    fn name(&self) -> &str {
        "momentum"
    }
    fn init(&self, grads: &GradSet, _: Option<&GradSet>) -> stategrad_core::Result<MomentumState> {
        Ok(MomentumState {
            m: grads.tensors().map(Tensor::zeros_like).collect(),
            steps: 0,
        })
    }
    fn update(
        &self,
        grads: GradSet,
        state: &mut MomentumState,
        _: Option<&GradSet>,
    ) -> stategrad_core::Result<GradSet> {
        let mut i = 0;
        let out = grads.try_map(|_, g| {
            let m = state.m[i].try_mul_scalar(self.mu)?.try_add(&g)?;
            state.m[i] = m.clone();
            i += 1;
            Ok(m)
        })?;
        state.steps += 1;
        Ok(out)
    }
}

#[test]
fn a_user_processor_keeps_its_typed_state_across_steps() {
    let p = StatefulProcessor::new(std::sync::Arc::new(Momentum { mu: 0.5 }));
    assert!(p.processor().is_stateful());
    let g = grads();
    let s1 = p.apply(&g).unwrap();
    assert!(same(&s1, &g, 0.0));
    let s2 = p.apply(&g).unwrap();
    let s3 = p.apply(&g).unwrap();
    // m3 = g·(1 + 0.5 + 0.25)
    for (k, t) in &g {
        assert!(s2[k].allclose(&t.mul_scalar(1.5), 1e-6, 1e-7), "{k}");
        assert!(s3[k].allclose(&t.mul_scalar(1.75), 1e-6, 1e-7), "{k}");
    }
    let st = p.state().unwrap();
    let typed = st.downcast_ref::<MomentumState>().unwrap();
    assert_eq!(typed.steps, 3);
    assert_eq!(typed.m.len(), 3);
    assert_eq!(st.owner(), Some("momentum"));
    // The same processor in a chain, masked, and from the registry.
    let reg = stategrad_plugins::Registry::empty();
    reg.register_processor("momentum", |_: &stategrad_core::Params| {
        Ok(std::sync::Arc::new(Momentum { mu: 0.5 }) as Processor)
    })
    .unwrap();
    let inner = reg
        .processor("momentum", &stategrad_core::Params::new())
        .unwrap();
    let p = StatefulProcessor::new(chain(vec![
        masked(inner, |l: &Path| *l == path!("bias")),
        scale(2.0),
    ]));
    p.apply(&g).unwrap();
    let out = p.apply(&g).unwrap();
    assert!(out[&path!("bias")].allclose(&g[&path!("bias")].mul_scalar(3.0), 1e-6, 1e-7));
    assert!(out[&path!("scale")].allclose(&g[&path!("scale")].mul_scalar(2.0), 1e-6, 1e-7));
    assert!(p.processor().is_stateful());
    assert!(
        !StatefulProcessor::new(chain(vec![scale(2.0), masked(identity(), |_: &Path| true)]))
            .processor()
            .is_stateful()
    );
}

#[test]
fn a_state_from_another_processor_is_a_typed_error() {
    let g = grads();
    // Momentum's state handed to add_noise (a counter).
    let mut momentum_state = ProcState::default();
    apply(&Momentum { mu: 0.9 }, &mut momentum_state, &g).unwrap();
    let r = apply(&*add_noise(0.1, 0), &mut momentum_state, &g);
    match &r {
        Err(Error::PluginParam { plugin, name, msg }) => {
            assert_eq!(plugin, "add_noise");
            assert_eq!(name, "state");
            assert!(
                msg.contains("MomentumState") && msg.contains("`momentum`"),
                "{msg}"
            );
        }
        r => panic!("unexpected {r:?}"),
    }
    // And the other way round.
    let mut counter = ProcState::default();
    apply(&*add_noise(0.1, 0), &mut counter, &g).unwrap();
    assert_eq!(counter.downcast_ref::<u64>(), Some(&1));
    let r = apply(&Momentum { mu: 0.9 }, &mut counter, &g);
    assert!(
        matches!(&r, Err(Error::PluginParam { name, .. }) if name == "state"),
        "{r:?}"
    );
    // The failed call left the state alone.
    assert_eq!(counter.downcast_ref::<u64>(), Some(&1));
}

fn params() -> BTreeMap<Path, Tensor> {
    [
        (path!("bias"), Tensor::new([10.0f32, -4.0])),
        (
            path!("layers", 0, "weight"),
            Tensor::new([[1.0f32, 2.0], [3.0, -8.0]]),
        ),
        (path!("scale"), Tensor::scalar(2.0f32)),
    ]
    .into_iter()
    .collect()
}

#[test]
fn add_decayed_weights_is_g_plus_wd_p_and_needs_params() {
    let (g, w) = (grads(), params());
    let wd = 0.25;
    let out =
        apply_with_params(&*add_decayed_weights(wd), &mut ProcState::default(), &g, &w).unwrap();
    for (k, t) in &g {
        let want = t.try_add(&w[k].mul_scalar(wd)).unwrap();
        assert!(out[k].allclose(&want, 1e-6, 1e-7), "{k}: {}", out[k]);
    }
    // Without parameters: a typed error naming them.
    let r = apply(&*add_decayed_weights(wd), &mut ProcState::default(), &g);
    assert!(
        matches!(&r, Err(Error::PluginParam { plugin, name, .. }) if plugin == "add_decayed_weights" && name == "params"),
        "{r:?}"
    );
    let r = StatefulProcessor::new(add_decayed_weights(wd)).apply(&g);
    assert!(matches!(&r, Err(Error::PluginParam { .. })), "{r:?}");
    // Parameters that do not pair with the gradients.
    let mut fewer = params();
    fewer.remove(&path!("scale"));
    let r = apply_with_params(
        &*add_decayed_weights(wd),
        &mut ProcState::default(),
        &g,
        &fewer,
    );
    assert!(
        matches!(&r, Err(Error::PluginParam { name, .. }) if name == "params"),
        "{r:?}"
    );
    let mut renamed = params();
    let b = renamed.remove(&path!("bias")).unwrap();
    renamed.insert(path!("aaa"), b);
    let r = apply_with_params(
        &*add_decayed_weights(wd),
        &mut ProcState::default(),
        &g,
        &renamed,
    );
    assert!(
        matches!(&r, Err(Error::PluginParam { ref msg, .. }) if msg.contains("('aaa',)")),
        "{r:?}"
    );
    // A bad decay is a typed error, from the registry too.
    let r = apply_with_params(
        &*add_decayed_weights(f64::NAN),
        &mut ProcState::default(),
        &g,
        &w,
    );
    assert!(matches!(&r, Err(Error::PluginParam { .. })), "{r:?}");
    let reg = stategrad_plugins::Registry::new();
    let p = reg
        .processor(
            "add_decayed_weights",
            &stategrad_core::Params::new().with("weight_decay", wd),
        )
        .unwrap();
    let out2 = StatefulProcessor::new(p).apply_with_params(&g, &w).unwrap();
    assert!(same(&out, &out2, 0.0));
    assert!(matches!(
        reg.processor("add_decayed_weights", &stategrad_core::Params::new()),
        Err(Error::PluginParam { .. })
    ));
    assert!(matches!(
        reg.processor(
            "add_decayed_weights",
            &stategrad_core::Params::new()
                .with("weight_decay", 0.1)
                .with("decay", 0.1)
        ),
        Err(Error::PluginParam { .. })
    ));
}

#[test]
fn masked_by_path_keeps_decay_off_the_biases() {
    let (g, w) = (grads(), params());
    let decay = masked(add_decayed_weights(0.5), |p: &Path| {
        p.keys().last() == Some(&"weight".into())
    });
    let out = StatefulProcessor::new(decay)
        .apply_with_params(&g, &w)
        .unwrap();
    for k in [path!("bias"), path!("scale")] {
        assert!(out[&k].shares_buffer(&g[&k]), "{k} was touched");
    }
    let k = path!("layers", 0, "weight");
    assert!(out[&k].allclose(&g[&k].try_add(&w[&k].mul_scalar(0.5)).unwrap(), 1e-6, 1e-7));

    // The same with a state Filter, via filter_mask.
    let states: BTreeMap<Path, stategrad_core::State> = w
        .iter()
        .map(|(p, t)| {
            let s = stategrad_core::ParamState::new(t.clone());
            let s = if *p == path!("bias") {
                s.tagged("no_decay")
            } else {
                s
            };
            (p.clone(), s)
        })
        .collect();
    let decay = masked(
        add_decayed_weights(0.5),
        filter_mask(
            &states,
            stategrad_core::Filter::not(stategrad_core::Filter::tag("no_decay")),
        ),
    );
    let out = StatefulProcessor::new(decay)
        .apply_with_params(&g, &w)
        .unwrap();
    assert!(out[&path!("bias")].shares_buffer(&g[&path!("bias")]));
    assert!(out[&k].allclose(&g[&k].try_add(&w[&k].mul_scalar(0.5)).unwrap(), 1e-6, 1e-7));
    assert!(!out[&path!("scale")].allclose(&g[&path!("scale")], 0.0, 0.0));
}

#[test]
fn chain_of_decay_and_scale_is_optax_sgd_with_weight_decay() {
    // optax.chain(optax.add_decayed_weights(wd), optax.scale(-lr)): u = -lr · (g + wd · p).
    let (g, w) = (grads(), params());
    let (wd, lr) = (0.1, 0.01);
    let sgd = StatefulProcessor::new(chain(vec![add_decayed_weights(wd), scale(-lr)]));
    assert!(!sgd.processor().is_stateful());
    let u = sgd.apply_with_params(&g, &w).unwrap();
    for (k, t) in &g {
        let want = t.try_add(&w[k].mul_scalar(wd)).unwrap().mul_scalar(-lr);
        assert!(u[k].allclose(&want, 1e-6, 1e-8), "{k}: {} vs {want}", u[k]);
    }
    // Order matters: scale first, then decay, is -lr·g + wd·p.
    let other = StatefulProcessor::new(chain(vec![scale(-lr), add_decayed_weights(wd)]));
    let v = other.apply_with_params(&g, &w).unwrap();
    let k = path!("bias");
    let want = g[&k]
        .mul_scalar(-lr)
        .try_add(&w[&k].mul_scalar(wd))
        .unwrap();
    assert!(v[&k].allclose(&want, 1e-6, 1e-8));
    // Without params the chain fails at the decay stage, naming it.
    let r = sgd.apply(&g);
    assert!(
        matches!(&r, Err(Error::PluginParam { plugin, .. }) if plugin == "add_decayed_weights"),
        "{r:?}"
    );
}

#[test]
fn add_decayed_weights_as_a_plugin_uses_the_inputs() {
    // As a transform plugin, the parameters are the values the gradient was taken at.
    let w = stategrad_core::ParamState::new(Tensor::new([1.0f32, -2.0]));
    let states: BTreeMap<Path, stategrad_core::State> =
        [(path!("w"), w.clone())].into_iter().collect();
    let f = |x: Tensor| (&x * &w.value()).sum();
    let (gw, gx) = stategrad_plugins::from_registry(
        f,
        "add_decayed_weights",
        stategrad_core::Params::new().with("weight_decay", 0.5),
    )
    .unwrap()
    .grad_states(states)
    .argnums(0)
    .call(Tensor::new([3.0f32, 4.0]))
    .unwrap();
    // d/dw = x, plus 0.5·w; d/dx = w, plus 0.5·x.
    assert_eq!(gw[&path!("w")].to_string(), "[3.5 3. ]");
    assert_eq!(gx.to_string(), "[2.5 0. ]");
}

/// A failing stage of a chain leaves the state given by the caller as it was: `add_noise`'s
/// step counter does not advance, so the next call draws the noise it would have drawn.
#[test]
fn a_failing_update_leaves_an_explicit_state_unchanged() {
    let g = grads();
    let failing = chain(vec![
        add_noise(0.1, 7),
        std::sync::Arc::new(Dropper) as Processor,
    ]);
    let mut st = ProcState::default();
    assert!(matches!(
        apply(&*failing, &mut st, &g),
        Err(Error::MalformedPluginResult { .. })
    ));
    assert!(st.is_fresh(), "a failed first call initialised the state");

    let guarded = chain(vec![add_noise(0.1, 7), nan_guard()]);
    let mut st = ProcState::default();
    apply(&*guarded, &mut st, &g).unwrap();
    let want = apply(&*guarded, &mut st.clone(), &g).unwrap();
    let nan: BTreeMap<Path, Tensor> = g.iter().map(|(p, t)| (p.clone(), t * f64::NAN)).collect();
    assert!(apply(&*guarded, &mut st, &nan).is_err());
    let got = apply(&*guarded, &mut st, &g).unwrap();
    assert!(
        same(&want, &got, 0.0),
        "the failed call advanced the noise counter"
    );
}
