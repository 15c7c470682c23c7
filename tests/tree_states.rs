//! Tree-valued states (issue 15, part 3): a `State` of any kind holding a tree of tensors,
//! `ParamState::tree(TensorTree::map([("weight", w), ("bias", b)]))`, seen by modules, filters,
//! `treefy_states`, `grad`, `jit` and `StateFinder` through its leaves.

use stategrad::prelude::*;
use stategrad::tree::Tree;
use stategrad::{NestedStates, StateSnapshot};
use std::collections::BTreeMap;

// ------------------------------------------------------------------------ fixtures

/// A model whose parameters are tree-valued states.
#[derive(Module)]
struct TreeMlp {
    /// `{'bias': (2,), 'weight': (3, 2)}`
    layer: State,
    /// `[{'w': (2, 2)}, {'w': (2, 2)}]`
    blocks: State,
    /// `{'mean': (2,)}`, written by the forward pass.
    stats: State,
}

/// The same model with one tensor state per field: its paths equal `TreeMlp`'s.
#[derive(Module)]
struct Layer {
    weight: State,
    bias: State,
}
#[derive(Module)]
struct Block {
    w: State,
}
#[derive(Module)]
struct Stats {
    mean: State,
}
#[derive(Module)]
struct FlatMlp {
    layer: Layer,
    blocks: Vec<Block>,
    stats: Stats,
}

fn t(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(data.to_vec(), shape).unwrap()
}

fn weight() -> Tensor {
    t(&[0.5, -0.3, 0.8, 0.1, -0.6, 0.4], &[3, 2])
}
fn bias() -> Tensor {
    t(&[0.1, -0.2], &[2])
}
fn block_w(i: usize) -> Tensor {
    let s = 1.0 + i as f32;
    t(&[0.7 / s, -0.2, 0.3, 0.9 / s], &[2, 2])
}
fn input() -> Tensor {
    t(
        &[
            1.0, 2.0, -1.0, 0.5, -0.5, 1.5, 2.0, 0.0, 1.0, -1.0, 1.0, 0.5,
        ],
        &[4, 3],
    )
}

fn tree_mlp() -> TreeMlp {
    TreeMlp {
        layer: ParamState::tree(TensorTree::map([("weight", weight()), ("bias", bias())]))
            .named("layer"),
        blocks: ParamState::tree(TensorTree::list([
            TensorTree::map([("w", block_w(0))]),
            TensorTree::map([("w", block_w(1))]),
        ]))
        .named("blocks"),
        stats: BatchState::tree(TensorTree::map([("mean", Tensor::zeros(&[2]))])).named("stats"),
    }
}

fn flat_mlp() -> FlatMlp {
    FlatMlp {
        layer: Layer {
            weight: ParamState::new(weight()),
            bias: ParamState::new(bias()),
        },
        blocks: (0..2)
            .map(|i| Block {
                w: ParamState::new(block_w(i)),
            })
            .collect(),
        stats: Stats {
            mean: BatchState::new(Tensor::zeros(&[2])),
        },
    }
}

impl TreeMlp {
    /// Reads the layer as a whole tree, the blocks leaf by leaf; writes the batch mean.
    fn loss(&self, x: &Tensor) -> Tensor {
        let layer = self.layer.tree_value();
        let w = layer.get("weight").unwrap().as_tensor().unwrap();
        let b = layer.get("bias").unwrap().as_tensor().unwrap();
        let mut h = (x.matmul(w) + b).tanh();
        for i in 0..2 {
            let wi = self.blocks.leaf_at(&path!(i, "w")).unwrap().value();
            h = h.matmul(&wi).tanh();
        }
        self.stats
            .set_tree_value(TensorTree::map([("mean", h.mean_along(&[0], false))]))
            .unwrap();
        h.square().sum()
    }
}

impl FlatMlp {
    fn loss(&self, x: &Tensor) -> Tensor {
        let mut h = (x.matmul(&self.layer.weight.value()) + self.layer.bias.value()).tanh();
        for b in &self.blocks {
            h = h.matmul(&b.w.value()).tanh();
        }
        self.stats.mean.set_value(h.mean_along(&[0], false));
        h.square().sum()
    }
}

fn keys(m: &StateMap) -> Vec<String> {
    m.keys().map(|p| p.to_string()).collect()
}

fn values(m: &StateMap) -> Vec<Vec<f32>> {
    m.values().map(|s| s.value().to_vec::<f32>()).collect()
}

const PARAM_PATHS: [&str; 4] = [
    "('blocks', 0, 'w')",
    "('blocks', 1, 'w')",
    "('layer', 'bias')",
    "('layer', 'weight')",
];

// ------------------------------------------------------------------------ construction

#[test]
fn leaves_are_tensor_states_of_the_parent_kind_named_and_tagged() {
    let p = ParamState::tree(TensorTree::map([
        ("weight", TensorTree::from(weight())),
        ("extra", TensorTree::list([bias(), bias()])),
    ]))
    .named("layer")
    .tagged("trainable");
    assert!(p.is_tree() && p.kind() == StateKind::Param);
    assert_eq!(p.structure(), "{'extra': [*, *], 'weight': *}");
    let leaves = p.leaves();
    assert_eq!(
        keys(&leaves),
        ["('extra', 0)", "('extra', 1)", "('weight',)"]
    );
    let mut ids: Vec<_> = leaves.values().map(State::id).collect();
    ids.push(p.id());
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "every leaf has its own id");
    for s in leaves.values() {
        assert!(!s.is_tree());
        assert_eq!(s.kind(), StateKind::Param);
        assert_eq!(s.tags(), ["trainable"]);
    }
    let names: Vec<_> = leaves.values().map(|s| s.name().unwrap()).collect();
    assert_eq!(names, ["layer.extra.0", "layer.extra.1", "layer.weight"]);
    // The subtree is a tree state too.
    let extra = p.leaf("extra").unwrap();
    assert!(extra.is_tree() && extra.name() == Some("layer.extra"));
    assert!(extra.leaf(1).unwrap().same(&leaves[&path!("extra", 1)]));
    assert!(p.leaf_at(&path!()).unwrap().same(&p));

    // A leaf tree is a tensor state; an unnamed tree has unnamed leaves.
    assert!(!State::tree(weight()).is_tree());
    let u = HiddenState::tree(TensorTree::list([bias()]));
    assert_eq!(u.leaf(0).unwrap().name(), None);
    assert_eq!(u.leaf(0).unwrap().kind(), StateKind::Hidden);
    assert_eq!(
        State::tree_with_kind(StateKind::Delay, TensorTree::list([bias()]))
            .leaf(0)
            .unwrap()
            .kind(),
        StateKind::Delay
    );
}

#[test]
fn tree_value_display_and_debug() {
    let p = ParamState::tree(TensorTree::map([
        ("b", bias()),
        ("a", Tensor::scalar(1.0f32)),
    ]))
    .named("p");
    let v = p.tree_value();
    assert!(v.same_structure(&TensorTree::map([
        ("a", Tensor::zeros(&[])),
        ("b", Tensor::zeros(&[]))
    ])));
    assert_eq!(
        v.get("b").unwrap().as_tensor().unwrap().to_vec::<f32>(),
        [0.1, -0.2]
    );
    let shown = v.to_string();
    assert!(
        shown.starts_with("{'a': ") && shown.contains(", 'b': "),
        "{shown}"
    );
    let dbg = format!("{p:?}");
    assert!(
        dbg.starts_with("ParamState(name=\"p\", tree={'a': "),
        "{dbg}"
    );
    assert_eq!(
        v.leaves()
            .iter()
            .map(|(p, _)| p.to_string())
            .collect::<Vec<_>>(),
        ["('a',)", "('b',)"]
    );
}

// ------------------------------------------------------------------------ modules and filters

#[test]
fn module_states_and_filters_reach_into_the_tree() {
    let m = tree_mlp();
    let flat = flat_mlp();
    assert_eq!(keys(&m.states(ParamState)), PARAM_PATHS);
    assert_eq!(keys(&m.states(ParamState)), keys(&flat.states(ParamState)));
    assert_eq!(keys(&m.all_states()), keys(&flat.all_states()));
    assert_eq!(keys(&m.states(BatchState)), ["('stats', 'mean')"]);
    assert!(m.states(ParamState)[&path!("layer", "weight")].same(&m.layer.leaf("weight").unwrap()));

    assert_eq!(
        keys(&m.states(Filter::path_contains("weight"))),
        ["('layer', 'weight')"]
    );
    assert_eq!(
        keys(&m.states(Filter::path_contains(1))),
        ["('blocks', 1, 'w')"]
    );
    assert_eq!(
        keys(&m.states(Filter::all([
            Filter::from(ParamState),
            Filter::path_contains("layer")
        ]))),
        ["('layer', 'bias')", "('layer', 'weight')"]
    );
    assert!(m.states(Filter::from(HiddenState)).is_empty());

    let split = m.states_split(&[
        Filter::path_contains("blocks"),
        ParamState.into(),
        true.into(),
    ]);
    assert_eq!(
        keys(&split[0]),
        ["('blocks', 0, 'w')", "('blocks', 1, 'w')"]
    );
    assert_eq!(
        keys(&split[1]),
        ["('layer', 'bias')", "('layer', 'weight')"]
    );
    assert_eq!(keys(&split[2]), ["('stats', 'mean')"]);

    // Tags given to the tree reach the leaves, so tag filters select them.
    let tagged = ParamState::tree(TensorTree::map([("w", weight())])).tagged("frozen");
    let both = BTreeMap::from([("t", tagged), ("plain", ParamState::new(bias()))]);
    assert_eq!(keys(&both.states("frozen")), ["('t', 'w')"]);
}

#[test]
fn treefy_states_nests_the_tree() {
    let m = tree_mlp();
    let nested = treefy_states(&m, ParamState);
    let leaf = |n: &NestedStates| match n {
        NestedStates::Leaf(StateSnapshot { state, value }) => {
            (state.clone(), value.shape().to_vec())
        }
        NestedStates::Node(_) => panic!("a node where a leaf was expected"),
    };
    let layer = nested.get("layer").unwrap();
    let (w, shape) = leaf(layer.get("weight").unwrap());
    assert!(w.same(&m.layer.leaf("weight").unwrap()));
    assert_eq!(shape, [3, 2]);
    assert_eq!(leaf(layer.get("bias").unwrap()).1, [2]);
    let (b1, shape) = leaf(
        nested
            .get("blocks")
            .unwrap()
            .get(1)
            .unwrap()
            .get("w")
            .unwrap(),
    );
    assert!(b1.same(&m.blocks.leaf_at(&path!(1, "w")).unwrap()));
    assert_eq!(shape, [2, 2]);
    assert!(nested.get("stats").is_none());
    let flat: Vec<String> = nested.to_flat().keys().map(|p| p.to_string()).collect();
    assert_eq!(flat, PARAM_PATHS);

    // A tree state alone nests from its own keys.
    let alone = treefy_states(&m.layer, true);
    assert_eq!(leaf(alone.get("weight").unwrap()).1, [3, 2]);
}

// ------------------------------------------------------------------------ grad

#[test]
fn grad_over_tree_leaves_equals_separate_tensor_states() -> Result<()> {
    let (m, flat) = (tree_mlp(), flat_mlp());
    let x = input();
    let (g, l) = grad(|x: Tensor| m.loss(&x))
        .grad_states(m.states(ParamState))
        .return_value()
        .call(x.clone())?;
    let (gf, lf) = grad(|x: Tensor| flat.loss(&x))
        .grad_states(flat.states(ParamState))
        .return_value()
        .call(x.clone())?;
    assert_eq!(l.item()?, lf.item()?);
    let gkeys: Vec<String> = g.keys().map(|p| p.to_string()).collect();
    assert_eq!(gkeys, PARAM_PATHS);
    assert_eq!(g.keys().collect::<Vec<_>>(), gf.keys().collect::<Vec<_>>());
    for (p, gt) in &g {
        assert_eq!(gt.shape(), m.states(ParamState)[p].shape().as_slice());
        assert_eq!(gt.to_vec::<f32>(), gf[p].to_vec::<f32>(), "gradient at {p}");
        assert!(gt.abs().sum().item()? > 0.0, "a real gradient at {p}");
    }
    // The write to the batch state is kept, as with tensor states.
    assert_eq!(
        m.stats.leaf("mean")?.value().to_vec::<f32>(),
        flat.stats.mean.value().to_vec::<f32>()
    );
    assert!(m.stats.leaf("mean")?.value().abs().sum().item()? > 0.0);

    // One tree's leaves as the container: gradients keyed by the paths inside the tree.
    let gl = grad(|x: Tensor| m.loss(&x))
        .grad_states(m.layer.leaves())
        .call(x.clone())?;
    let lk: Vec<String> = gl.keys().map(|p| p.to_string()).collect();
    assert_eq!(lk, ["('bias',)", "('weight',)"]);
    assert_eq!(
        gl[&path!("weight")].to_vec::<f32>(),
        g[&path!("layer", "weight")].to_vec::<f32>()
    );
    Ok(())
}

#[test]
fn a_tree_state_as_grad_states_is_a_typed_error_naming_the_fix() {
    let m = tree_mlp();
    let before = values(&m.all_states());
    let err = grad(|x: Tensor| m.loss(&x))
        .grad_states(m.layer.clone())
        .call(input())
        .unwrap_err();
    match &err {
        Error::TreeState { op, hint, .. } => {
            assert_eq!(*op, "grad_states");
            assert!(hint.contains("leaves()"), "{hint}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("`layer`"), "{err}");
    // Also inside a container.
    let err = grad(|x: Tensor| m.loss(&x))
        .grad_states(vec![m.layer.leaf("weight").unwrap(), m.blocks.clone()])
        .call(input())
        .unwrap_err();
    assert!(matches!(
        err,
        Error::TreeState {
            op: "grad_states",
            ..
        }
    ));
    assert_eq!(values(&m.all_states()), before, "nothing ran");
}

// ------------------------------------------------------------------------ jit

fn sgd_step(m: &TreeMlp, x: Tensor) -> Result<Tensor> {
    let params = m.states(ParamState);
    let (g, l) = grad(|x: Tensor| m.loss(&x))
        .grad_states(params.clone())
        .return_value()
        .call(x)?;
    for (p, s) in &params {
        s.set_value(s.value() - 0.1 * &g[p]);
    }
    Ok(l)
}

#[test]
fn jitted_sgd_on_tree_leaves_equals_eager() -> Result<()> {
    let (eager, jitted) = (tree_mlp(), tree_mlp());
    let weight_leaf = jitted.layer.leaf("weight")?;
    let step = jit(|x: Tensor| sgd_step(&jitted, x));
    let x = input();
    let mut losses = Vec::new();
    for _ in 0..5 {
        let le = sgd_step(&eager, x.clone())?;
        let lj = step.call(x.clone())?;
        assert!(lj.allclose(&le, 1e-5, 1e-6), "{lj} vs {le}");
        losses.push(lj.item()?);
    }
    assert_eq!(step.trace_count(), 1);
    assert!(
        losses.windows(2).all(|w| w[1] < w[0]),
        "training: {losses:?}"
    );
    for (a, b) in eager
        .all_states()
        .values()
        .zip(jitted.all_states().values())
    {
        assert!(a.value().allclose(&b.value(), 1e-5, 1e-6), "{a:?} vs {b:?}");
    }
    // Updated in place: the leaf handle taken before training sees the trained value.
    assert!(!weight_leaf.value().allclose(&weight(), 1e-3, 1e-3));
    assert_eq!(
        weight_leaf.value().to_vec::<f32>(),
        jitted
            .layer
            .tree_value()
            .get("weight")
            .unwrap()
            .as_tensor()
            .unwrap()
            .to_vec::<f32>()
    );
    Ok(())
}

#[test]
fn a_changed_leaf_shape_retraces() -> Result<()> {
    let p = ParamState::tree(TensorTree::map([("w", weight()), ("b", bias())]));
    let f = jit(|x: Tensor| {
        (x.matmul(&p.leaf("w").unwrap().value()) + p.leaf("b").unwrap().value()).sum()
    });
    let x = input();
    let want = (x.matmul(&weight()) + bias()).sum();
    assert!(f.call(x.clone())?.allclose(&want, 1e-5, 1e-6));
    // New values of the same shapes: no retrace.
    p.set_tree_value(TensorTree::map([("w", weight() * 2.0), ("b", bias())]))?;
    let want2 = (x.matmul(&(weight() * 2.0)) + bias()).sum();
    assert!(f.call(x.clone())?.allclose(&want2, 1e-5, 1e-6));
    assert_eq!(f.trace_count(), 1);
    // A leaf of a new shape: the structure is the same, the program is retraced.
    let w3 = Tensor::ones(&[3, 5]);
    let b3 = Tensor::ones(&[5]);
    p.set_tree_value(TensorTree::map([("w", w3.clone()), ("b", b3.clone())]))?;
    let got = f.call(x.clone())?;
    assert_eq!(f.trace_count(), 2);
    assert!(got.allclose(&(x.matmul(&w3) + b3).sum(), 1e-5, 1e-6));
    Ok(())
}

// ------------------------------------------------------------------------ rollback

#[test]
fn a_failing_function_leaves_every_leaf_unchanged() {
    let m = tree_mlp();
    let before = values(&m.all_states());
    let failing = |x: Tensor| -> Result<Tensor> {
        m.layer.leaf("weight")?.set_value(Tensor::zeros(&[3, 2]));
        m.stats
            .set_tree_value(TensorTree::map([("mean", Tensor::ones(&[2]))]))?;
        let l = m.loss(&x);
        l.try_matmul(&x) // a scalar times a matrix: a shape error after the writes
    };
    // Under jit.
    let err = jit(failing).call(input()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ShapeMismatch { .. } | Error::InvalidArgument { .. }
        ),
        "{err:?}"
    );
    assert_eq!(values(&m.all_states()), before);
    // Under grad.
    let err = grad(failing)
        .grad_states(m.states(ParamState))
        .call(input())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ShapeMismatch { .. } | Error::InvalidArgument { .. }
        ),
        "{err:?}"
    );
    assert_eq!(values(&m.all_states()), before);
    // Reading a whole tree as one tensor inside a transform is the transform's typed error,
    // after a leaf write: that write is rolled back too.
    let err = jit(|x: Tensor| {
        m.blocks
            .leaf_at(&path!(0, "w"))
            .unwrap()
            .set_value(Tensor::zeros(&[2, 2]));
        &x.sum() + &m.layer.value().sum()
    })
    .call(input())
    .unwrap_err();
    match err {
        Error::TreeState { op, hint, .. } => {
            assert_eq!(op, "value");
            assert!(hint.contains("tree_value()"), "{hint}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(values(&m.all_states()), before);
}

// ------------------------------------------------------------------------ StateFinder

#[test]
fn state_finder_reports_the_leaves() -> Result<()> {
    let m = tree_mlp();
    let x = input();
    let f = |x: Tensor| m.loss(&x);
    let params = StateFinder::new(f)
        .filter(ParamState)
        .find_list(x.clone())?;
    let found: Vec<_> = params.iter().map(|s| s.name().unwrap()).collect();
    assert_eq!(
        found,
        ["layer.bias", "layer.weight", "blocks.0.w", "blocks.1.w"]
    );
    assert!(params[1].same(&m.layer.leaf("weight")?));
    assert!(params.iter().all(|s| !s.is_tree()));

    let writes = StateFinder::new(f)
        .usage(Usage::Write)
        .key_fn(|_, s| s.name().map(str::to_string))
        .find(x.clone())?;
    let wk: Vec<String> = writes.keys().map(|k| k.to_string()).collect();
    assert_eq!(wk, ["stats.mean"]);
    assert!(writes[&StateKey::from("stats.mean")].same(&m.stats.leaf("mean")?));
    assert_eq!(
        m.stats.leaf("mean")?.value().to_vec::<f32>(),
        [0.0, 0.0],
        "nothing changed"
    );
    Ok(())
}

// ------------------------------------------------------------------------ errors

#[test]
fn structure_mismatches_are_typed_and_write_nothing() {
    let p = ParamState::tree(TensorTree::map([
        ("a", TensorTree::from(bias())),
        ("z", TensorTree::list([bias(), bias()])),
    ]))
    .named("p");
    let before = values(&p.leaves());
    let ones = || Tensor::ones(&[2]);
    let cases = [
        // A missing key (the matching `a` is not written either).
        TensorTree::map([("a", ones())]),
        // An extra key.
        TensorTree::map([
            ("a", TensorTree::from(ones())),
            ("b", ones().into()),
            ("z", TensorTree::list([ones(), ones()])),
        ]),
        // A list of the wrong length.
        TensorTree::map([
            ("a", TensorTree::from(ones())),
            ("z", TensorTree::list([ones()])),
        ]),
        // A tensor where a list is.
        TensorTree::map([("a", ones()), ("z", ones())]),
        // A list where a map is, and a lone tensor.
        TensorTree::list([ones()]),
        TensorTree::from(ones()),
    ];
    for case in cases {
        let err = p.set_tree_value(case.clone()).unwrap_err();
        match &err {
            Error::TreeStructureMismatch {
                state,
                expected,
                found,
            } => {
                assert_eq!(state, "`p`");
                assert_eq!(expected, "{'a': *, 'z': [*, *]}");
                assert_eq!(found, &case.structure());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            values(&p.leaves()),
            before,
            "nothing written for {}",
            case.structure()
        );
    }
    // A tensor state takes a leaf only.
    let s = State::new(bias());
    assert!(s.set_tree_value(Tensor::ones(&[3])).is_ok());
    assert_eq!(s.shape(), [3]);
    assert!(matches!(
        s.set_tree_value(TensorTree::list([bias()])),
        Err(Error::TreeStructureMismatch { .. })
    ));

    // Missing children.
    match p.leaf("b").unwrap_err() {
        Error::NoSuchLeaf {
            path, structure, ..
        } => {
            assert_eq!(path, "'b'");
            assert_eq!(structure, "{'a': *, 'z': [*, *]}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(p.leaf(0), Err(Error::NoSuchLeaf { .. })));
    assert!(matches!(
        p.leaf_at(&path!("z", 2)),
        Err(Error::NoSuchLeaf { .. })
    ));
    assert!(matches!(
        p.leaf_at(&path!("a", "x")),
        Err(Error::NoSuchLeaf { .. })
    ));
    assert!(matches!(s.leaf("a"), Err(Error::NoSuchLeaf { .. })));

    // Tensor-only access on a tree: a typed error, or a panic naming the fix outside transforms.
    assert!(matches!(
        p.try_value(),
        Err(Error::TreeState { op: "value", .. })
    ));
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.value())).unwrap_err();
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("tree_value()"), "{msg}");
    let panic =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.set_value(bias()))).unwrap_err();
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("set_tree_value"), "{msg}");
    assert_eq!(values(&p.leaves()), before);
}

// ------------------------------------------------------------------------ vmap and optimizers

#[test]
fn per_example_gradients_of_tree_leaves_under_vmap() -> Result<()> {
    let p = ParamState::tree(TensorTree::map([
        ("w", Tensor::new([0.5f64, -1.0, 2.0])),
        ("b", Tensor::scalar(0.25f64)),
    ]));
    let loss = |x: Tensor| {
        let v = p.tree_value();
        let (w, b) = (
            v.get("w").unwrap().as_tensor().unwrap(),
            v.get("b").unwrap().as_tensor().unwrap(),
        );
        (&(&x * w).sum() + b).square()
    };
    let xs = Tensor::new([[1.0f64, 2.0, 3.0], [0.0, -1.0, 0.5], [2.0, 0.0, -2.0]]);
    let g = vmap(|x: Tensor| grad(loss).grad_states(p.leaves()).call(x)).call(xs.clone())?;
    assert_eq!(g[&path!("w")].shape(), &[3, 3]);
    assert_eq!(g[&path!("b")].shape(), &[3]);
    let rows = xs.to_vec::<f64>();
    let (gw, gb) = (
        g[&path!("w")].to_vec::<f64>(),
        g[&path!("b")].to_vec::<f64>(),
    );
    for i in 0..3 {
        let x = &rows[3 * i..3 * i + 3];
        let r = 0.5 * x[0] - x[1] + 2.0 * x[2] + 0.25;
        assert!((gb[i] - 2.0 * r).abs() < 1e-12, "example {i}");
        for j in 0..3 {
            assert!(
                (gw[3 * i + j] - 2.0 * r * x[j]).abs() < 1e-12,
                "example {i}, w[{j}]"
            );
        }
    }
    Ok(())
}

#[test]
fn an_optimizer_over_tree_leaves_trains_them_in_place_under_jit() -> Result<()> {
    let (m, flat) = (tree_mlp(), flat_mlp());
    let (params, flat_params) = (m.states(ParamState), flat.states(ParamState));
    let opt = stategrad::optim::adam(0.05).build(&params)?;
    let flat_opt = stategrad::optim::adam(0.05).build(&flat_params)?;
    // The optimizer's moments mirror the tree through the paths.
    assert!(opt.states().contains_key(&path!("mu", "layer", "weight")));
    let step = jit(|x: Tensor| -> Result<Tensor> {
        let (g, l) = grad(|x: Tensor| m.loss(&x))
            .grad_states(params.clone())
            .return_value()
            .call(x)?;
        opt.step(&g)?;
        Ok(l)
    });
    let x = input();
    for _ in 0..4 {
        let l = step.call(x.clone())?;
        let (g, lf) = grad(|x: Tensor| flat.loss(&x))
            .grad_states(flat_params.clone())
            .return_value()
            .call(x.clone())?;
        flat_opt.step(&g)?;
        assert!(l.allclose(&lf, 1e-5, 1e-6), "{l} vs {lf}");
    }
    assert_eq!(step.trace_count(), 1);
    for (p, s) in &params {
        assert!(
            s.value().allclose(&flat_params[p].value(), 1e-5, 1e-6),
            "{p}"
        );
    }
    assert!(!m.layer.leaf("bias")?.value().allclose(&bias(), 1e-3, 1e-3));
    Ok(())
}

// ------------------------------------------------------------------------ trees as arguments

#[test]
fn a_tensor_tree_argument_gets_a_tree_gradient_and_jits() -> Result<()> {
    let f = |t: TensorTree| {
        let w = t.get("w").unwrap().as_tensor().unwrap();
        let xs = t.get("xs").unwrap();
        let mut acc = Tensor::scalar(0.0f64);
        for (_, x) in xs.leaves() {
            acc = acc + (w * &x).sum();
        }
        acc.square()
    };
    let tree = TensorTree::map([
        ("w", TensorTree::from(Tensor::new([1.0f64, 2.0]))),
        (
            "xs",
            TensorTree::list([Tensor::new([1.0f64, 0.0]), Tensor::new([0.0f64, 3.0])]),
        ),
    ]);
    // s = w.(x0 + x1) = 1 + 6 = 7; d s^2 / dw = 2 s (x0 + x1), d s^2 / dx_i = 2 s w.
    let g = grad(f).call(tree.clone())?;
    assert!(g.same_structure(&tree));
    let at = |p: Path| g.get_path(&p).unwrap().as_tensor().unwrap().to_vec::<f64>();
    assert_eq!(at(path!("w")), [14.0, 42.0]);
    assert_eq!(at(path!("xs", 0)), [14.0, 28.0]);
    assert_eq!(at(path!("xs", 1)), [14.0, 28.0]);
    let j = jit(f);
    assert_eq!(j.call(tree.clone())?.item()?, 49.0);
    assert_eq!(
        j.call(tree.map_tensors(&mut |t| t * 2.0))?.item()?,
        49.0 * 16.0
    );
    assert_eq!(j.trace_count(), 1);
    // A jitted function may return a tree.
    let double = jit(|t: TensorTree| t.map_tensors(&mut |x| x * 2.0));
    let out = double.call(tree.clone())?;
    assert_eq!(
        out.get("w").unwrap().as_tensor().unwrap().to_vec::<f64>(),
        [2.0, 4.0]
    );
    Ok(())
}
