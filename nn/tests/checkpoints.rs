//! Checkpoints: round trips (dtypes and bits kept), the mismatch report, partial loading, the
//! model + optimizer file, and the dotted names.

use stategrad_core::{
    grad, path, DType, Error, Filter, Module, ParamState, Path, PathKey, State, StateKind,
    StateMap, Tensor, TensorTree,
};
use stategrad_nn::checkpoint::{
    load_bytes, load_file, merge_prefixed, read_bytes, save_file, to_bytes, CheckpointError,
    Loader, MODEL_PREFIX, OPTIM_PREFIX,
};
use stategrad_optim::{adam, Optimizer};

/// A small model with states of every dtype, a list and a tree-valued state.
struct Net {
    layers: Vec<Layer>,
    steps: State,
    mask: State,
    extra: State,
}

struct Layer {
    weight: State,
    bias: State,
}

impl Module for Layer {
    fn visit_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State)) {
        path.push_name("weight");
        self.weight.visit_states(path, visitor);
        path.pop();
        path.push_name("bias");
        self.bias.visit_states(path, visitor);
        path.pop();
    }
}

impl Module for Net {
    fn visit_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State)) {
        path.push_name("layers");
        self.layers.visit_states(path, visitor);
        path.pop();
        path.push_name("steps");
        self.steps.visit_states(path, visitor);
        path.pop();
        path.push_name("mask");
        self.mask.visit_states(path, visitor);
        path.pop();
        path.push_name("extra");
        self.extra.visit_states(path, visitor);
        path.pop();
    }
}

fn net(seed: f64) -> Net {
    Net {
        layers: vec![
            Layer {
                weight: ParamState::new(
                    Tensor::new([[0.1f32, -0.2, 0.3], [f32::MIN_POSITIVE, -0.0, 1e-30]]) * seed,
                ),
                bias: ParamState::new(Tensor::new([1.0f32, 2.0, 3.0]) * seed),
            },
            Layer {
                weight: ParamState::new(
                    Tensor::new([[0.1f64 / 3.0], [std::f64::consts::PI], [-7.5]]) * seed,
                ),
                bias: ParamState::new(Tensor::new([seed / 7.0])),
            },
        ],
        steps: State::with_kind(
            StateKind::LongTerm,
            Tensor::new([seed as i64 * 1_000_000_007, -3]),
        ),
        mask: State::new(Tensor::new([[true, false], [seed > 1.5, true]])),
        extra: State::tree(TensorTree::map([
            ("a.b", TensorTree::from(Tensor::scalar(seed as i32))),
            ("7", TensorTree::from(Tensor::new([seed, -seed]))),
        ])),
    }
}

fn bits(t: &Tensor) -> Vec<u64> {
    match t.dtype() {
        DType::F32 => t
            .to_vec::<f32>()
            .iter()
            .map(|v| v.to_bits() as u64)
            .collect(),
        DType::F64 => t.to_vec::<f64>().iter().map(|v| v.to_bits()).collect(),
        DType::I32 => t.to_vec::<i32>().iter().map(|&v| v as u32 as u64).collect(),
        DType::I64 => t.to_vec::<i64>().iter().map(|&v| v as u64).collect(),
        DType::Bool => t.to_vec::<bool>().iter().map(|&v| v as u64).collect(),
    }
}

fn assert_same_values(a: &StateMap, b: &StateMap) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for ((p, x), (_, y)) in a.iter().zip(b) {
        let (x, y) = (x.value(), y.value());
        assert_eq!(x.dtype(), y.dtype(), "{p}");
        assert_eq!(x.shape(), y.shape(), "{p}");
        assert_eq!(bits(&x), bits(&y), "{p}");
    }
}

fn snapshot(m: &StateMap) -> Vec<(Path, Tensor)> {
    m.iter().map(|(p, s)| (p.clone(), s.value())).collect()
}

#[test]
fn module_round_trip_keeps_dtypes_and_bits() {
    let a = net(2.0);
    let b = net(1.0);
    let sa = a.all_states();
    let sb = b.all_states();
    // The tree state's leaves are listed under extended paths.
    assert!(sa.contains_key(&path!("extra", "a.b")));
    assert!(sa.contains_key(&path!("extra", "7")));
    let bytes = to_bytes(&sa).unwrap();
    let names: Vec<String> = read_bytes(&bytes).unwrap().into_keys().collect();
    assert_eq!(
        names,
        [
            r"extra.\#7",
            r"extra.a\.b",
            "layers.0.bias",
            "layers.0.weight",
            "layers.1.bias",
            "layers.1.weight",
            "mask",
            "steps"
        ]
    );
    let dtypes: Vec<DType> = read_bytes(&bytes)
        .unwrap()
        .values()
        .map(Tensor::dtype)
        .collect();
    assert_eq!(
        dtypes,
        [
            DType::F64,
            DType::I32,
            DType::F32,
            DType::F32,
            DType::F64,
            DType::F64,
            DType::Bool,
            DType::I64
        ]
    );
    let loaded = load_bytes(&sb, &bytes).unwrap();
    assert_eq!(loaded.len(), 8);
    assert_same_values(&sa, &sb);
    // -0.0 and subnormal-adjacent values survive bit for bit.
    assert_eq!(
        b.layers[0].weight.value().to_vec::<f32>()[4].to_bits(),
        (-0.0f32).to_bits()
    );
    assert_eq!(
        b.mask.value().to_vec::<bool>(),
        vec![true, false, true, true]
    );
}

#[test]
fn file_round_trip() {
    let a = net(3.0);
    let b = net(1.0);
    let dir = std::env::temp_dir().join(format!("stategrad-nn-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("model.safetensors");
    save_file(&a.all_states(), &file).unwrap();
    load_file(&b.all_states(), &file).unwrap();
    assert_same_values(&a.all_states(), &b.all_states());
    let missing = load_file(&b.all_states(), dir.join("nope.safetensors")).unwrap_err();
    assert!(matches!(missing, CheckpointError::Io { op: "read", .. }));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn model_and_optimizer_in_one_file() {
    let model = net(1.0);
    let params = model.states(StateKind::Param);
    let opt = adam(0.01).build(&params).unwrap();
    // A few steps so the moments and the count are not their initial values.
    for _ in 0..3 {
        let g = grad(|_: Tensor| {
            model
                .layers
                .iter()
                .map(|l| {
                    l.weight.value().astype(DType::F64).square().sum()
                        + l.bias.value().astype(DType::F64).sum()
                })
                .fold(Tensor::scalar(0.0f64), |a, b| a + b)
        })
        .grad_states(params.clone())
        .call(Tensor::scalar(0.0f64))
        .unwrap();
        opt.step(&g).unwrap();
    }
    let all = || {
        merge_prefixed([
            (MODEL_PREFIX, model.all_states()),
            (OPTIM_PREFIX, opt.states()),
        ])
    };
    let bytes = to_bytes(&all()).unwrap();
    let names: Vec<String> = read_bytes(&bytes).unwrap().into_keys().collect();
    assert!(names.contains(&"model.layers.0.weight".to_string()));
    assert!(names.contains(&"optim.count".to_string()));
    assert!(names.contains(&"optim.mu.layers.1.bias".to_string()));
    assert!(names.contains(&"optim.nu.layers.0.weight".to_string()));

    // A fresh model and optimizer, loaded from the file, equal the trained ones.
    let fresh = net(5.0);
    let fresh_opt = adam(0.01).build(&fresh.states(StateKind::Param)).unwrap();
    let fresh_all = merge_prefixed([
        (MODEL_PREFIX, fresh.all_states()),
        (OPTIM_PREFIX, fresh_opt.states()),
    ]);
    load_bytes(&fresh_all, &bytes).unwrap();
    assert_same_values(&all(), &fresh_all);
    assert_eq!(fresh_opt.count().value().item().unwrap(), 3.0);
    assert_same_values(&opt.states(), &fresh_opt.states());
}

#[test]
fn every_mismatch_is_reported_and_nothing_is_written() {
    let source: StateMap = [
        (path!("a"), State::new(Tensor::new([1.0f32, 2.0]))),
        (path!("b"), State::new(Tensor::new([[1.0f32, 2.0]]))),
        (path!("c"), State::new(Tensor::new([1.0f64, 2.0]))),
        (path!("gone"), State::new(Tensor::new([1.0f32]))),
    ]
    .into();
    let bytes = to_bytes(&source).unwrap();
    let a = State::new(Tensor::new([0.0f32, 0.0])); // matches: would be loaded
    let b = State::new(Tensor::new([0.0f32, 0.0])); // shape (2,) vs (1, 2)
    let c = State::new(Tensor::new([0.0f32, 0.0])); // dtype float32 vs float64
    let d = State::new(Tensor::new([0i64])); // missing
    let target: StateMap = [
        (path!("a"), a.clone()),
        (path!("b"), b.clone()),
        (path!("c"), c.clone()),
        (path!("layers", 0, "d"), d.clone()),
    ]
    .into();
    let before = snapshot(&target);
    let err = load_bytes(&target, &bytes).unwrap_err();
    let report = err.report().expect("a mismatch report").clone();
    assert_eq!(report.missing, [path!("layers", 0, "d")]);
    assert_eq!(report.unexpected, ["gone"]);
    assert_eq!(report.shape_mismatches.len(), 1);
    assert_eq!(report.shape_mismatches[0].path, path!("b"));
    assert_eq!(report.shape_mismatches[0].expected, [2]);
    assert_eq!(report.shape_mismatches[0].found, [1, 2]);
    assert_eq!(report.dtype_mismatches.len(), 1);
    assert_eq!(report.dtype_mismatches[0].path, path!("c"));
    assert_eq!(report.dtype_mismatches[0].expected, DType::F32);
    assert_eq!(report.dtype_mismatches[0].found, "float64");
    let msg = err.to_string();
    for part in [
        "layers.0.d",
        "gone",
        "(1, 2)",
        "float64",
        "nothing was loaded",
    ] {
        assert!(msg.contains(part), "{msg}");
    }
    // Nothing written, not even the state that matched.
    for ((p, old), (_, s)) in before.iter().zip(&target) {
        assert_eq!(bits(old), bits(&s.value()), "{p}");
    }
    assert_eq!(a.value().to_vec::<f32>(), vec![0.0, 0.0]);
    // Into the core error.
    let core: Error = err.into();
    assert!(matches!(
        core,
        Error::InvalidArgument {
            op: "checkpoint",
            ..
        }
    ));
}

#[test]
fn partial_loading_with_a_filter() {
    let pretrained = net(2.0);
    let bytes = to_bytes(&pretrained.all_states()).unwrap();
    let model = net(1.0);
    let before = snapshot(&model.all_states());
    // Only the first layer's parameters.
    let loaded = Loader::new()
        .filter(Filter::all([
            Filter::from(StateKind::Param),
            Filter::path_contains(0usize),
        ]))
        .load_bytes(&model.all_states(), &bytes)
        .unwrap();
    assert_eq!(
        loaded,
        [path!("layers", 0, "bias"), path!("layers", 0, "weight")]
    );
    let after = model.all_states();
    for ((p, old), (_, s)) in before.iter().zip(&after) {
        let src = &pretrained.all_states()[p];
        if loaded.contains(p) {
            assert_eq!(bits(&s.value()), bits(&src.value()), "{p}");
        } else {
            assert_eq!(bits(&s.value()), bits(old), "{p} was written");
        }
    }

    // A file with only the backbone loads into a bigger model with the filter, and the
    // filter's states must all be there.
    let backbone: StateMap = pretrained
        .all_states()
        .into_iter()
        .filter(|(p, _)| p.contains(&PathKey::from("layers")))
        .collect();
    let bytes = to_bytes(&backbone).unwrap();
    let model = net(1.0);
    assert!(load_bytes(&model.all_states(), &bytes).is_err());
    let n = Loader::new()
        .filter(Filter::path_contains("layers"))
        .load_bytes(&model.all_states(), &bytes)
        .unwrap()
        .len();
    assert_eq!(n, 4);
    assert_same_values(&backbone, &model.states(Filter::path_contains("layers")));
    // Missing states among the selected ones are still reported.
    let err = Loader::new()
        .filter(Filter::path_contains("steps"))
        .load_bytes(&model.all_states(), &bytes)
        .unwrap_err();
    assert_eq!(err.report().unwrap().missing, [path!("steps")]);
    assert!(err.report().unwrap().unexpected.is_empty());

    // Tensors with no state at all are unexpected, unless allowed.
    let mut bigger = pretrained.all_states();
    bigger.insert(path!("head", "weight"), State::new(Tensor::zeros(&[2])));
    let bytes = to_bytes(&bigger).unwrap();
    let err = load_bytes(&model.all_states(), &bytes).unwrap_err();
    assert_eq!(err.report().unwrap().unexpected, ["head.weight"]);
    assert_eq!(
        Loader::new()
            .allow_unexpected(true)
            .load_bytes(&model.all_states(), &bytes)
            .unwrap()
            .len(),
        8
    );
}

#[test]
fn bad_bytes_are_a_format_error() {
    let m: StateMap = [(path!("x"), State::new(Tensor::zeros(&[1])))].into();
    assert!(matches!(
        load_bytes(&m, b"not a checkpoint"),
        Err(CheckpointError::Format(_))
    ));
}

#[test]
fn duplicate_names_are_rejected() {
    let tree = State::tree(TensorTree::map([("b", Tensor::zeros(&[1]))]));
    let m: StateMap = [
        (path!("a"), tree),
        (path!("a", "b"), State::new(Tensor::zeros(&[1]))),
    ]
    .into();
    assert!(matches!(to_bytes(&m), Err(CheckpointError::DuplicateName(n)) if n == "a.b"));
}

#[test]
fn dotted_paths_round_trip() {
    let cases = [
        (path!("layers", 0, "weight"), "layers.0.weight"),
        (path!("bias"), "bias"),
        (Path::new(), ""),
        (path!(12usize), "12"),
        (path!("a.b", "c"), r"a\.b.c"),
        (path!("0"), r"\#0"),
        (path!("x", ""), r"x.\#"),
        (path!("", "y"), r"\#.y"),
        (path!(r"back\slash", "#tag"), r"back\\slash.#tag"),
        (path!("...", 3, "1.5"), r"\.\.\..3.1\.5"),
    ];
    for (p, dotted) in cases {
        assert_eq!(p.to_dotted(), dotted, "{p}");
        assert_eq!(Path::from_dotted(dotted).unwrap(), p, "{dotted}");
    }
    // Index and name "0" are different paths with different names.
    assert_ne!(path!(0usize).to_dotted(), path!("0").to_dotted());
    // Malformed escapes and oversized indices are typed errors.
    for bad in [r"a\b", r"a\", r"a.b\#c", "99999999999999999999999999"] {
        assert!(
            matches!(Path::from_dotted(bad), Err(Error::InvalidArgument { .. })),
            "{bad}"
        );
    }
    // The Python-tuple Display is unchanged.
    assert_eq!(
        path!("layers", 0, "weight").to_string(),
        "('layers', 0, 'weight')"
    );
}
