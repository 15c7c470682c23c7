//! Invariants of the built-in processors and combinators.

use stategrad_core::{path, Error, Path, Tensor};
use stategrad_plugins::{
    add_noise, apply, chain, clip_by_global_norm, clip_by_value, identity, masked, nan_guard,
    scale, update_checked, zero_nans, GradSet, GradientProcessor, ProcState, Processor,
    StatefulProcessor,
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
    apply(&**p, &mut p.init(&GradSet::from_tree(g)), g).unwrap()
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
    let labels: Vec<&str> = set.labels().collect();
    assert_eq!(
        labels,
        ["('bias',)", "('layers', 0, 'weight')", "('scale',)"]
    );
    // Tuples and Vecs: positions, joined with '/'.
    let t = (
        grads(),
        vec![Tensor::scalar(1.0f32), Tensor::scalar(2.0f32)],
    );
    let set = GradSet::from_tree(&t);
    assert_eq!(set.labels().next(), Some("0/('bias',)"));
    assert_eq!(set.labels().nth(4), Some("1/1"));
    let back = set.to_tree(&t).unwrap();
    assert_eq!(back.1[1].to_string(), "2.0");
    // Any Tree with flat indices.
    let set = GradSet::from_tree_indexed(&t);
    assert_eq!(set.labels().collect::<Vec<_>>(), ["0", "1", "2", "3", "4"]);
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
    let p = masked(scale(0.0), |l: &str| l.contains("weight"));
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
        &masked(clip_by_global_norm(0.1), |l: &str| l.contains("bias")),
        &g,
    );
    assert!((out[&path!("bias")].norm().item().unwrap() - 0.1).abs() < 1e-6);
    assert!(out[&path!("scale")].shares_buffer(&g[&path!("scale")]));
    // Nothing selected: nothing changes.
    let out = run(&masked(scale(3.0), |_: &str| false), &g);
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
    assert!(matches!(a.state(), Some(ProcState::Count(2))));
    // Explicit state: step 0 again.
    let again = apply(&*add_noise(0.1, 42), &mut ProcState::Empty, &g).unwrap();
    assert!(same(&again, &a1, 0.0));
    // Roughly N(0, std²).
    let big = Tensor::zeros(&[20_000]);
    let n = apply(&*add_noise(2.0, 1), &mut ProcState::Count(5), &big)
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
        apply(&*add_noise(0.1, 1), &mut ProcState::Empty, &g64)
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

    let err = apply(&*nan_guard(), &mut ProcState::Empty, &g).unwrap_err();
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
        apply(&*nan_guard(), &mut ProcState::Empty, &inf),
        Err(Error::NonFinite { .. })
    ));
    // Finite: passes through.
    assert!(same(&run(&nan_guard(), &grads()), &grads(), 0.0));
    // zero_nans then nan_guard still fails on the infinity.
    assert!(apply(
        &*chain(vec![zero_nans(), nan_guard()]),
        &mut ProcState::Empty,
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
        let r = apply(&*p, &mut ProcState::Empty, &g);
        assert!(
            matches!(r, Err(Error::PluginParam { .. })),
            "{}: {r:?}",
            p.name()
        );
    }
    // A state of the wrong kind.
    let r = apply(&*add_noise(0.1, 0), &mut ProcState::Tensors(vec![]), &g);
    assert!(
        matches!(r, Err(Error::PluginParam { ref name, .. }) if name == "state"),
        "{r:?}"
    );
    let r = apply(
        &*chain(vec![identity(), identity()]),
        &mut ProcState::Chain(vec![ProcState::Empty]),
        &g,
    );
    assert!(matches!(r, Err(Error::PluginParam { .. })), "{r:?}");
}

/// Drops the last gradient: a malformed processor.
struct Dropper;
impl GradientProcessor for Dropper {
    fn name(&self) -> &str {
        "dropper"
    }
    fn update(&self, grads: GradSet, _: &mut ProcState) -> stategrad_core::Result<GradSet> {
        let mut e = grads.into_entries();
        e.pop();
        Ok(GradSet::from_entries(e))
    }
}

/// Reshapes: malformed too.
struct Flattener;
impl GradientProcessor for Flattener {
    fn name(&self) -> &str {
        "flattener"
    }
    fn update(&self, grads: GradSet, _: &mut ProcState) -> stategrad_core::Result<GradSet> {
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
        let r = apply(&*p, &mut ProcState::Empty, &g);
        assert!(
            matches!(&r, Err(Error::MalformedPluginResult { plugin, .. }) if *plugin == name),
            "{r:?}"
        );
        // Inside a chain or a mask, the culprit is named too.
        let r = apply(
            &*chain(vec![identity(), p.clone()]),
            &mut ProcState::Empty,
            &g,
        );
        assert!(
            matches!(&r, Err(Error::MalformedPluginResult { plugin, .. }) if *plugin == name),
            "{r:?}"
        );
        let r = update_checked(
            &*masked(p.clone(), |_: &str| true),
            GradSet::from_tree(&g),
            &mut ProcState::Empty,
        );
        assert!(
            matches!(&r, Err(Error::MalformedPluginResult { plugin, .. }) if *plugin == name),
            "{r:?}"
        );
    }
}
