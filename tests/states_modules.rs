//! States, modules, filters, `treefy_states` and `StateFinder` (SEMANTICS §5 and §6).

use stategrad::prelude::*;
use stategrad::{FoundStates, NestedStates, StateKey, StateSnapshot};
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::Arc;

// ------------------------------------------------------------------------ fixtures

#[derive(Module)]
struct Linear {
    weight: State,
    bias: State,
}

impl Linear {
    fn new(n_in: usize, n_out: usize) -> Self {
        Linear {
            weight: ParamState::new(Tensor::zeros(&[n_in, n_out])),
            bias: ParamState::new(Tensor::zeros(&[n_out])),
        }
    }
}

#[derive(Module)]
struct Rnn {
    h: State,
    delay: State,
    stats: State,
}

#[derive(Module)]
struct Net {
    layers: Vec<Linear>,
    heads: BTreeMap<String, Linear>,
    #[module(rename = "norm")]
    normalization: Option<Linear>,
    dropout: Option<Linear>,
    rnn: Rnn,
    #[module(skip)]
    #[allow(dead_code)]
    width: usize,
    #[module(skip)]
    frozen: State,
    rng: State,
}

fn net() -> Net {
    let head = |tag: &str| Linear {
        weight: ParamState::new(Tensor::zeros(&[4, 1]))
            .tagged("head")
            .tagged(tag),
        bias: ParamState::new(Tensor::zeros(&[1])),
    };
    Net {
        layers: vec![Linear::new(2, 4), Linear::new(4, 4)],
        heads: BTreeMap::from([
            ("b".to_string(), head("second")),
            ("a".to_string(), head("first")),
        ]),
        normalization: Some(Linear::new(4, 4)),
        dropout: None,
        rnn: Rnn {
            h: HiddenState::new(Tensor::zeros(&[4])),
            delay: DelayState::new(Tensor::zeros(&[3, 4])),
            stats: BatchState::new(Tensor::zeros(&[4])),
        },
        width: 4,
        frozen: ParamState::new(Tensor::ones(&[1])),
        rng: RandomState::new(Tensor::zeros(&[2])),
    }
}

const ALL_KEYS: [&str; 14] = [
    "('heads', 'a', 'bias')",
    "('heads', 'a', 'weight')",
    "('heads', 'b', 'bias')",
    "('heads', 'b', 'weight')",
    "('layers', 0, 'bias')",
    "('layers', 0, 'weight')",
    "('layers', 1, 'bias')",
    "('layers', 1, 'weight')",
    "('norm', 'bias')",
    "('norm', 'weight')",
    "('rng',)",
    "('rnn', 'delay')",
    "('rnn', 'h')",
    "('rnn', 'stats')",
];

fn keys(map: &StateMap) -> Vec<String> {
    map.keys().map(|p| p.to_string()).collect()
}

fn keys_of(m: &impl Module, filter: impl Into<Filter>) -> Vec<String> {
    keys(&m.states(filter))
}

// ------------------------------------------------------------------------ modules and paths

#[test]
fn derive_nested_vec_map_option_skip_rename() {
    let m = net();
    let all = m.all_states();
    assert_eq!(keys(&all), ALL_KEYS);
    // `states(true)` is the same as `all_states()`.
    assert_eq!(keys_of(&m, true), ALL_KEYS);

    // The map's values are the module's own handles.
    assert!(all[&path!("layers", 0, "weight")].same(&m.layers[0].weight));
    assert!(all[&path!("layers", 1, "bias")].same(&m.layers[1].bias));
    assert!(all[&path!("heads", "a", "weight")].same(&m.heads["a"].weight));
    assert!(all[&path!("norm", "weight")].same(&m.normalization.as_ref().unwrap().weight));
    assert!(all[&path!("rnn", "h")].same(&m.rnn.h));
    assert!(all[&path!("rng")].same(&m.rng));

    // Skipped fields are not visited; `None` contributes nothing; renamed fields use the new key.
    assert!(!all.values().any(|s| s.same(&m.frozen)));
    assert!(!ALL_KEYS
        .iter()
        .any(|k| k.contains("dropout") || k.contains("normalization")));

    // Path display mirrors Python tuples.
    assert_eq!(
        path!("layers", 0, "weight").to_string(),
        "('layers', 0, 'weight')"
    );
    assert_eq!(format!("{:?}", path!("bias")), "('bias',)");
    assert_eq!(Path::new().to_string(), "()");
    let mut p = Path::new();
    p.push_name("layers");
    p.push_index(0);
    p.push_name("weight");
    assert_eq!(p, path!("layers", 0usize, "weight"));
    assert!(p.contains(&PathKey::from(0usize)));
    p.pop();
    assert_eq!(p.to_string(), "('layers', 0)");
}

#[test]
fn states_are_sorted_by_path() {
    let m = net();
    let paths: Vec<Path> = m.all_states().into_keys().collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);

    // Vec items keep numeric order: 2 < 10 (not "10" < "2").
    let many: Vec<State> = (0..12)
        .map(|i| State::new(Tensor::scalar(i as f32)))
        .collect();
    let ks = keys(&many.all_states());
    assert_eq!(ks[0], "(0,)");
    assert_eq!(ks[2], "(2,)");
    assert_eq!(ks[10], "(10,)");
    assert_eq!(ks[11], "(11,)");
    for (i, (p, s)) in many.all_states().into_iter().enumerate() {
        assert_eq!(p, path!(i));
        assert_eq!(s.value().item().unwrap(), i as f64);
    }
}

#[derive(Module)]
struct Pair(
    Linear,
    #[module(skip)]
    #[allow(dead_code)]
    f32,
    Linear,
);

#[derive(Module)]
struct Generic<T> {
    r#type: T,
    #[module(skip)]
    _marker: PhantomData<fn() -> T>,
}

#[derive(Module)]
struct Containers {
    arr: [State; 2],
    boxed: Box<Linear>,
    shared: Arc<Linear>,
    hmap: HashMap<String, State>,
    nested: Vec<Vec<State>>,
    maybe: Option<Vec<State>>,
    #[module(skip)]
    _unit: (),
}

#[derive(Module)]
struct Empty;

#[test]
fn derive_tuple_generic_and_container_fields() {
    let pair = Pair(Linear::new(1, 1), 0.5, Linear::new(1, 1));
    assert_eq!(
        keys(&pair.all_states()),
        [
            "(0, 'bias')",
            "(0, 'weight')",
            "(2, 'bias')",
            "(2, 'weight')"
        ]
    );

    let g = Generic {
        r#type: Linear::new(1, 1),
        _marker: PhantomData,
    };
    assert_eq!(
        keys(&g.all_states()),
        ["('type', 'bias')", "('type', 'weight')"]
    );

    let c = Containers {
        arr: [
            State::new(Tensor::scalar(0.0f32)),
            State::new(Tensor::scalar(1.0f32)),
        ],
        boxed: Box::new(Linear::new(1, 1)),
        shared: Arc::new(Linear::new(1, 1)),
        hmap: HashMap::from([
            ("y".to_string(), State::new(Tensor::scalar(0.0f32))),
            ("x".to_string(), State::new(Tensor::scalar(0.0f32))),
        ]),
        nested: vec![vec![], vec![State::new(Tensor::scalar(0.0f32))]],
        maybe: Some(vec![State::new(Tensor::scalar(0.0f32))]),
        _unit: (),
    };
    assert_eq!(
        keys(&c.all_states()),
        [
            "('arr', 0)",
            "('arr', 1)",
            "('boxed', 'bias')",
            "('boxed', 'weight')",
            "('hmap', 'x')",
            "('hmap', 'y')",
            "('maybe', 0)",
            "('nested', 1, 0)",
            "('shared', 'bias')",
            "('shared', 'weight')",
        ]
    );

    assert!(Empty.all_states().is_empty());
    // A bare State is a module with the empty path.
    let s = State::new(Tensor::scalar(1.0f32));
    assert_eq!(keys(&s.all_states()), ["()"]);
}

#[derive(Module)]
struct Tied {
    a: Linear,
    b: Linear,
    c: State,
}

#[test]
fn shared_state_appears_once_under_first_path() {
    let a = Linear::new(2, 2);
    let b = Linear {
        weight: a.weight.clone(),
        bias: ParamState::new(Tensor::zeros(&[2])),
    };
    let c = a.bias.clone();
    let m = Tied { a, b, c };
    let all = m.all_states();
    assert_eq!(
        keys(&all),
        ["('a', 'bias')", "('a', 'weight')", "('b', 'bias')"]
    );
    assert!(all[&path!("a", "weight")].same(&m.b.weight));
    assert!(all[&path!("a", "bias")].same(&m.c));
    assert_eq!(m.state_list().len(), 3);

    // Filters see the state under its first path only.
    assert!(m.states(Filter::path_contains("c")).is_empty());
    assert_eq!(keys_of(&m, Filter::path_contains("b")), ["('b', 'bias')"]);

    // Same in a list: the second occurrence is dropped.
    let s = State::new(Tensor::scalar(0.0f32));
    let v = vec![s.clone(), State::new(Tensor::scalar(0.0f32)), s.clone()];
    assert_eq!(keys(&v.all_states()), ["(0,)", "(1,)"]);
}

#[derive(Module)]
struct TiedOutOfOrder {
    zeta: State,
    alpha: State,
}

/// The reference walks a node's attributes in sorted order, so "first path" is the first in the
/// sorted traversal, whatever order the fields are declared in.
#[test]
fn shared_state_first_path_is_first_in_sorted_order() {
    let s = ParamState::new(Tensor::scalar(1.0f32));
    let m = TiedOutOfOrder {
        zeta: s.clone(),
        alpha: s.clone(),
    };
    assert_eq!(keys(&m.all_states()), ["('alpha',)"]);
    let list = m.state_list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].0, path!("alpha"));
    let nested = treefy_states(&m, true);
    assert_eq!(
        nested
            .to_flat()
            .keys()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        ["('alpha',)"]
    );
}

// ------------------------------------------------------------------------ filters

#[test]
fn kind_filters_match_subkinds() {
    let m = net();
    let params = [
        "('heads', 'a', 'bias')",
        "('heads', 'a', 'weight')",
        "('heads', 'b', 'bias')",
        "('heads', 'b', 'weight')",
        "('layers', 0, 'bias')",
        "('layers', 0, 'weight')",
        "('layers', 1, 'bias')",
        "('layers', 1, 'weight')",
        "('norm', 'bias')",
        "('norm', 'weight')",
    ];
    assert_eq!(keys_of(&m, ParamState), params);
    assert_eq!(keys_of(&m, StateKind::Param), params);
    assert_eq!(keys_of(&m, ParamState::KIND), params);

    // ParamState is a LongTermState is a State.
    let mut long_term: Vec<String> = params.iter().map(|s| s.to_string()).collect();
    long_term.push("('rnn', 'stats')".into());
    long_term.sort();
    assert_eq!(keys_of(&m, LongTermState), long_term);
    assert_eq!(keys_of(&m, AnyState), ALL_KEYS);
    assert_eq!(keys_of(&m, StateKind::State), ALL_KEYS);

    // HiddenState and DelayState are ShortTermStates.
    assert_eq!(
        keys_of(&m, ShortTermState),
        ["('rnn', 'delay')", "('rnn', 'h')"]
    );
    assert_eq!(keys_of(&m, HiddenState), ["('rnn', 'h')"]);
    assert_eq!(keys_of(&m, DelayState), ["('rnn', 'delay')"]);
    assert_eq!(keys_of(&m, BatchState), ["('rnn', 'stats')"]);
    assert_eq!(keys_of(&m, RandomState), ["('rng',)"]);

    // Kinds do not match their parents.
    let lt = LongTermState::new(Tensor::scalar(0.0f32));
    assert!(!Filter::from(ParamState).matches(&Path::new(), &lt));
    assert!(Filter::from(LongTermState).matches(&Path::new(), &lt));
    assert!(Filter::from(AnyState).matches(&Path::new(), &lt));
    let plain = State::new(Tensor::scalar(0.0f32));
    assert!(!Filter::from(LongTermState).matches(&Path::new(), &plain));
    assert!(!Filter::from(ShortTermState).matches(&Path::new(), &plain));

    // The kind tree itself.
    assert!(StateKind::Param.is_a(StateKind::LongTerm));
    assert!(StateKind::Param.is_a(StateKind::State));
    assert!(StateKind::Hidden.is_a(StateKind::ShortTerm));
    assert!(StateKind::Delay.is_a(StateKind::ShortTerm));
    assert!(StateKind::Batch.is_a(StateKind::LongTerm));
    assert!(!StateKind::Hidden.is_a(StateKind::LongTerm));
    assert!(!StateKind::Random.is_a(StateKind::LongTerm));
    assert!(!StateKind::State.is_a(StateKind::Param));
    assert_eq!(m.rnn.h.kind(), StateKind::Hidden);
    assert_eq!(m.rnn.h.kind().class_name(), "HiddenState");
}

#[test]
fn tag_true_false_any_pred_filters() {
    let m = net();
    assert_eq!(
        keys_of(&m, "head"),
        ["('heads', 'a', 'weight')", "('heads', 'b', 'weight')"]
    );
    assert_eq!(
        keys_of(&m, Filter::tag("first")),
        ["('heads', 'a', 'weight')"]
    );
    assert_eq!(
        keys_of(&m, String::from("second")),
        ["('heads', 'b', 'weight')"]
    );
    assert!(m.states("no-such-tag").is_empty());
    assert_eq!(m.heads["a"].weight.tags(), ["head", "first"]);

    assert_eq!(keys_of(&m, true), ALL_KEYS);
    assert!(m.states(false).is_empty());

    // A list means any of.
    let hidden_or_rng = ["('rng',)", "('rnn', 'h')"];
    assert_eq!(
        keys_of(&m, vec![StateKind::Hidden, StateKind::Random]),
        hidden_or_rng
    );
    assert_eq!(
        keys_of(
            &m,
            vec![Filter::from(HiddenState), Filter::from(RandomState)]
        ),
        hidden_or_rng
    );
    assert_eq!(
        keys_of(
            &m,
            Filter::any([Filter::from(RandomState), Filter::from(HiddenState)])
        ),
        hidden_or_rng
    );
    assert_eq!(
        keys_of(&m, vec![Filter::from(RandomState), Filter::tag("first")]),
        ["('heads', 'a', 'weight')", "('rng',)"]
    );
    assert!(m.states(Vec::<Filter>::new()).is_empty());

    // A predicate on (path, state).
    let deep_params =
        Filter::pred(|p: &Path, s: &State| p.keys().len() == 3 && s.kind() == StateKind::Param);
    assert_eq!(keys_of(&m, deep_params.clone()), &ALL_KEYS[..8]);
    let by_shape = Filter::pred(|_: &Path, s: &State| s.shape() == [4, 4]);
    assert_eq!(
        keys_of(&m, by_shape),
        ["('layers', 1, 'weight')", "('norm', 'weight')"]
    );
    let by_last_key =
        Filter::pred(|p: &Path, _: &State| p.keys().last() == Some(&PathKey::from("bias")));
    assert_eq!(keys_of(&m, by_last_key).len(), 5);
}

#[test]
fn combinator_filters() {
    let m = net();
    assert_eq!(
        keys_of(&m, Filter::path_contains("layers")),
        [
            "('layers', 0, 'bias')",
            "('layers', 0, 'weight')",
            "('layers', 1, 'bias')",
            "('layers', 1, 'weight')",
        ]
    );
    // Index keys and map keys are path keys too.
    assert_eq!(
        keys_of(&m, Filter::path_contains(1usize)),
        ["('layers', 1, 'bias')", "('layers', 1, 'weight')"]
    );
    assert_eq!(
        keys_of(&m, Filter::path_contains("a")),
        ["('heads', 'a', 'bias')", "('heads', 'a', 'weight')"]
    );
    // A key matches whole keys only.
    assert!(m.states(Filter::path_contains("layer")).is_empty());

    assert_eq!(
        keys_of(
            &m,
            Filter::all([
                Filter::path_contains("layers"),
                Filter::path_contains("weight")
            ])
        ),
        ["('layers', 0, 'weight')", "('layers', 1, 'weight')"]
    );
    assert_eq!(
        keys_of(
            &m,
            Filter::all([Filter::from(ParamState), Filter::tag("head")])
        )
        .len(),
        2
    );
    // All of nothing is everything; any of nothing is nothing.
    assert_eq!(keys_of(&m, Filter::all(Vec::<Filter>::new())), ALL_KEYS);
    assert!(m.states(Filter::any(Vec::<Filter>::new())).is_empty());

    let not_params = [
        "('rng',)",
        "('rnn', 'delay')",
        "('rnn', 'h')",
        "('rnn', 'stats')",
    ];
    assert_eq!(keys_of(&m, Filter::not(ParamState)), not_params);
    assert_eq!(keys_of(&m, Filter::not(false)), ALL_KEYS);
    assert!(m.states(Filter::not(true)).is_empty());
    assert_eq!(
        keys_of(
            &m,
            Filter::all([Filter::from(LongTermState), Filter::not(ParamState)])
        ),
        ["('rnn', 'stats')"]
    );
    assert_eq!(
        keys_of(
            &m,
            Filter::not(Filter::any([
                Filter::from(ParamState),
                Filter::from(ShortTermState)
            ]))
        ),
        ["('rng',)", "('rnn', 'stats')"]
    );
    // Filters are Debug-printable.
    assert_eq!(format!("{:?}", Filter::from(ParamState)), "ParamState");
    assert_eq!(
        format!("{:?}", Filter::not(HiddenState)),
        "Not(HiddenState)"
    );
}

#[test]
fn states_split_first_match_wins() {
    let m = net();
    let maps = m.states_split(&[
        Filter::from(ParamState),
        Filter::from(LongTermState),
        Filter::from(true),
    ]);
    assert_eq!(maps.len(), 3);
    assert_eq!(keys(&maps[0]), keys_of(&m, ParamState));
    assert_eq!(keys(&maps[1]), ["('rnn', 'stats')"]);
    assert_eq!(
        keys(&maps[2]),
        ["('rng',)", "('rnn', 'delay')", "('rnn', 'h')"]
    );
    // Every state lands in exactly one map.
    let total: usize = maps.iter().map(|mm| mm.len()).sum();
    assert_eq!(total, ALL_KEYS.len());

    // A broader filter first takes everything it matches.
    let maps = m.states_split(&[
        Filter::from(LongTermState),
        Filter::from(ParamState),
        Filter::from(true),
    ]);
    assert_eq!(maps[0].len(), 11);
    assert!(maps[1].is_empty());
    assert_eq!(
        keys(&maps[2]),
        ["('rng',)", "('rnn', 'delay')", "('rnn', 'h')"]
    );

    // Without a catch-all, unmatched states are left out.
    let maps = m.states_split(&[Filter::from(HiddenState), Filter::path_contains("layers")]);
    assert_eq!(keys(&maps[0]), ["('rnn', 'h')"]);
    assert_eq!(maps[1].len(), 4);

    // A catch-all first swallows everything.
    let maps = m.states_split(&[Filter::from(true), Filter::from(ParamState)]);
    assert_eq!(maps[0].len(), ALL_KEYS.len());
    assert!(maps[1].is_empty());

    assert!(m.states_split(&[]).is_empty());
}

// ------------------------------------------------------------------------ treefy_states

#[test]
fn treefy_states_flat_keys_match_module_states() {
    let m = net();
    let filters: Vec<Filter> = vec![
        Filter::from(true),
        Filter::from(ParamState),
        Filter::from(ShortTermState),
        Filter::path_contains("layers"),
        Filter::tag("head"),
        Filter::from(false),
    ];
    for f in filters {
        let flat = treefy_states(&m, f.clone()).to_flat();
        assert_eq!(
            flat.keys().collect::<Vec<_>>(),
            m.states(f.clone()).keys().collect::<Vec<_>>(),
            "{f:?}"
        );
        for (p, snap) in &flat {
            assert!(snap.state.same(&m.states(f.clone())[p]));
        }
    }

    // The nested form is keyed by name (or index) at each level.
    m.layers[0].weight.set_value(Tensor::full(&[2, 4], 7.0));
    let nested = treefy_states(&m, ParamState);
    let leaf = nested
        .get("layers")
        .and_then(|n| n.get(0usize))
        .and_then(|n| n.get("weight"));
    match leaf {
        Some(NestedStates::Leaf(StateSnapshot { state, value })) => {
            assert!(state.same(&m.layers[0].weight));
            assert_eq!(value.shape(), &[2, 4]);
            assert!(value.to_f64_vec().iter().all(|&v| v == 7.0));
        }
        other => panic!("expected a leaf, got {other:?}"),
    }
    assert!(matches!(
        nested.get("heads").and_then(|n| n.get("b")),
        Some(NestedStates::Node(_))
    ));
    assert!(nested.get("rnn").is_none()); // filtered out
    assert!(nested.get("layers").and_then(|n| n.get(5usize)).is_none());

    // Snapshots are values: changing the state afterwards does not change them.
    m.layers[0].weight.set_value(Tensor::zeros(&[2, 4]));
    let flat = nested.to_flat();
    assert!(flat[&path!("layers", 0, "weight")]
        .value
        .to_f64_vec()
        .iter()
        .all(|&v| v == 7.0));

    // from_flat(to_flat(x)) round-trips.
    let back = NestedStates::from_flat(&flat);
    let flat2 = back.to_flat();
    assert_eq!(
        flat.keys().collect::<Vec<_>>(),
        flat2.keys().collect::<Vec<_>>()
    );
    for (p, snap) in &flat {
        assert!(snap.state.same(&flat2[p].state));
        assert_eq!(snap.value.to_f64_vec(), flat2[p].value.to_f64_vec());
    }
    // Round trip of an empty selection and of a single root state.
    assert!(treefy_states(&m, false).to_flat().is_empty());
    assert!(NestedStates::from_flat(&BTreeMap::new())
        .to_flat()
        .is_empty());
    let s = State::new(Tensor::scalar(3.0f32));
    let root = treefy_states(&s, true).to_flat();
    assert_eq!(root.len(), 1);
    assert_eq!(root.keys().next().unwrap(), &Path::new());
}

// ------------------------------------------------------------------------ StateFinder

/// The seed's `energy`: reads `scale` and `offset`, writes `scale` (dummy) and `cache`.
struct Seed {
    scale: State,
    offset: State,
    cache: State,
}

fn seed() -> Seed {
    Seed {
        scale: ParamState::new(Tensor::scalar(1.5f32)).named("scale"),
        offset: ParamState::new(Tensor::scalar(-0.2f32)).named("offset"),
        cache: State::new(Tensor::scalar(0.0f32)).named("cache"),
    }
}

impl Seed {
    fn energy(&self) -> impl Fn(Tensor) -> Tensor + '_ {
        move |x: Tensor| {
            let shifted = &x * &self.scale.value() + self.offset.value();
            self.scale.set_value(self.scale.value() + 0.0);
            self.cache.set_value(shifted.sum());
            shifted.square().sum()
        }
    }
    fn values(&self) -> [f64; 3] {
        [
            self.scale.value().item().unwrap(),
            self.offset.value().item().unwrap(),
            self.cache.value().item().unwrap(),
        ]
    }
}

fn names(states: &[State]) -> Vec<&str> {
    states.iter().map(|s| s.name().unwrap_or("?")).collect()
}

fn dict(found: &FoundStates) -> Vec<String> {
    found
        .iter()
        .map(|(k, s)| format!("{k}: {}", s.name().unwrap_or("?")))
        .collect()
}

#[test]
fn finder_usage_all_read_write_both() -> Result<()> {
    let s = seed();
    let energy = s.energy();
    let x = Tensor::ones(&[2]);

    let all = StateFinder::new(&energy)
        .usage(Usage::All)
        .find_list(x.clone())?;
    assert_eq!(names(&all), ["scale", "offset", "cache"]);
    assert!(all[0].same(&s.scale) && all[1].same(&s.offset) && all[2].same(&s.cache));
    // Usage::All is the default.
    assert_eq!(
        names(&StateFinder::new(&energy).find_list(x.clone())?),
        ["scale", "offset", "cache"]
    );

    let read = StateFinder::new(&energy)
        .usage(Usage::Read)
        .find_list(x.clone())?;
    assert_eq!(names(&read), ["offset"]);
    let write = StateFinder::new(&energy)
        .usage(Usage::Write)
        .find_list(x.clone())?;
    assert_eq!(names(&write), ["scale", "cache"]);

    let both = StateFinder::new(&energy)
        .usage(Usage::Both)
        .find_both(x.clone())?;
    assert_eq!(dict(&both.read), ["0: offset"]);
    assert_eq!(dict(&both.write), ["0: scale", "1: cache"]);
    // find_both does not depend on the usage setting.
    let both = StateFinder::new(&energy).find_both(x.clone())?;
    assert_eq!(dict(&both.write), ["0: scale", "1: cache"]);
    // Usage::Both has two collections: the single-collection calls refuse it.
    let err = StateFinder::new(&energy)
        .usage(Usage::Both)
        .find_list(x.clone())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                option: "usage",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(StateFinder::new(&energy)
        .usage(Usage::Both)
        .find(x.clone())
        .is_err());

    // Dict form: keys 0, 1, … after filtering.
    let params = StateFinder::new(&energy)
        .filter(ParamState)
        .usage(Usage::All)
        .find(x.clone())?;
    assert_eq!(dict(&params), ["0: scale", "1: offset"]);
    assert!(params[&StateKey::from(0)].same(&s.scale));
    assert!(params[&StateKey::Index(1)].same(&s.offset));
    let params_list = StateFinder::new(&energy)
        .filter(ParamState)
        .find_list(x.clone())?;
    assert_eq!(names(&params_list), ["scale", "offset"]);
    let param_writes = StateFinder::new(&energy)
        .filter(ParamState)
        .usage(Usage::Write)
        .find(x.clone())?;
    assert_eq!(dict(&param_writes), ["0: scale"]);
    let not_params = StateFinder::new(&energy)
        .filter(Filter::not(ParamState))
        .find(x.clone())?;
    assert_eq!(dict(&not_params), ["0: cache"]);
    let by_name = StateFinder::new(&energy)
        .filter(Filter::pred(|_: &Path, st: &State| {
            st.name() == Some("offset")
        }))
        .find(x.clone())?;
    assert_eq!(dict(&by_name), ["0: offset"]);

    // Nothing changed: the cache would be 1.3 * 2 = 2.6 after a real call.
    assert_eq!(s.values(), [1.5, s.offset.value().item()?, 0.0]);
    assert!((s.offset.value().item()? + 0.2).abs() < 1e-7);
    Ok(())
}

#[test]
fn finder_first_access_order_and_write_first() -> Result<()> {
    let a = State::new(Tensor::scalar(1.0f32)).named("a");
    let b = State::new(Tensor::scalar(2.0f32)).named("b");
    let c = State::new(Tensor::scalar(3.0f32)).named("c");
    // c is written before anything else, then read; b read twice; a read last.
    let f = |x: Tensor| {
        c.set_value(x.sum());
        let y = c.value() * b.value() + b.value();
        y * a.value()
    };
    assert_eq!(
        names(&StateFinder::new(f).find_list(Tensor::ones(&[3]))?),
        ["c", "b", "a"]
    );
    assert_eq!(
        names(
            &StateFinder::new(f)
                .usage(Usage::Read)
                .find_list(Tensor::ones(&[3]))?
        ),
        ["b", "a"]
    );
    assert_eq!(
        names(
            &StateFinder::new(f)
                .usage(Usage::Write)
                .find_list(Tensor::ones(&[3]))?
        ),
        ["c"]
    );
    assert_eq!(c.value().item()?, 3.0);

    // A function that touches nothing.
    assert!(StateFinder::new(|x: Tensor| x.square())
        .find(Tensor::ones(&[1]))?
        .is_empty());
    Ok(())
}

#[test]
fn finder_changes_no_state_value() -> Result<()> {
    let w = ParamState::new(Tensor::new([1.0f32, 2.0])).named("w");
    let count = State::new(Tensor::scalar(0.0f32)).named("count");
    let step = |x: Tensor| {
        w.set_value(w.value() * 10.0 + &x);
        count.set_value(count.value() + 1.0);
        w.value().sum()
    };
    let before_w = w.value();
    for _ in 0..3 {
        StateFinder::new(step).find(Tensor::ones(&[2]))?;
        StateFinder::new(step)
            .usage(Usage::Write)
            .find_list(Tensor::ones(&[2]))?;
        StateFinder::new(step).find_both(Tensor::ones(&[2]))?;
    }
    assert_eq!(w.value().to_f64_vec(), [1.0, 2.0]);
    assert!(w.value().shares_buffer(&before_w));
    assert_eq!(count.value().item()?, 0.0);
    // A real call does change them.
    step(Tensor::ones(&[2]));
    assert_eq!(w.value().to_f64_vec(), [11.0, 21.0]);
    assert_eq!(count.value().item()?, 1.0);
    Ok(())
}

#[test]
fn finder_ignores_states_created_inside() -> Result<()> {
    let outer = ParamState::new(Tensor::scalar(2.0f32)).named("outer");
    let f = |x: Tensor| {
        let local = ParamState::new(x.sum()).named("local");
        local.set_value(local.value() * outer.value());
        let scratch = State::new(Tensor::scalar(0.0f32)).named("scratch");
        scratch.set_value(local.value());
        scratch.value() + local.value()
    };
    let found = StateFinder::new(f).find_list(Tensor::ones(&[2]))?;
    assert_eq!(names(&found), ["outer"]);
    let both = StateFinder::new(f).find_both(Tensor::ones(&[2]))?;
    assert_eq!(dict(&both.read), ["0: outer"]);
    assert!(both.write.is_empty());
    assert_eq!(outer.value().item()?, 2.0);
    Ok(())
}

/// States made inside a traced function are plain local variables there; a transform opened
/// inside that function still tracks them (they exist before it starts).
#[test]
fn states_created_inside_transforms_are_local() -> Result<()> {
    // Inside grad: the gradient flows through the local state like through a variable.
    let g = grad(|x: Tensor| {
        let local = State::new(x.clone());
        local.set_value(local.value() * 2.0);
        local.value().sum()
    })
    .call(Tensor::new([1.0f32, 2.0]))?;
    assert_eq!(g.to_f64_vec(), [2.0, 2.0]);

    // A nested transform w.r.t. a state made by the enclosing function.
    let outer = ParamState::new(Tensor::scalar(3.0f32)).named("outer");
    let f = |x: Tensor| {
        let local = State::new(x.clone()).named("local");
        grad(|y: Tensor| (&y * &local.value()).sum() * outer.value())
            .grad_states(local.clone())
            .call(Tensor::new([1.0f32, 2.0]))
            .unwrap()
    };
    assert_eq!(f(Tensor::new([5.0f32, 5.0])).to_f64_vec(), [3.0, 6.0]);
    let found = StateFinder::new(f).find_list(Tensor::new([5.0f32, 5.0]))?;
    assert_eq!(names(&found), ["outer"]);
    assert_eq!(outer.value().item()?, 3.0);
    Ok(())
}

#[test]
fn finder_key_fn() -> Result<()> {
    let s = seed();
    let energy = s.energy();
    let x = Tensor::ones(&[2]);
    let keyed = |kf: fn(usize, &State) -> Option<String>| {
        StateFinder::new(&energy).key_fn(kf).find(x.clone())
    };

    // Keys from key_fn.
    let found = keyed(|i, _| Some(format!("k{i}")))?;
    assert_eq!(dict(&found), ["k0: scale", "k1: offset", "k2: cache"]);
    assert!(found[&StateKey::from("k2")].same(&s.cache));
    // Missing keys fall back to the state's name.
    let found = keyed(|_, _| None)?;
    assert!(found[&StateKey::from("scale")].same(&s.scale));
    assert!(found[&StateKey::from("offset")].same(&s.offset));
    assert!(found[&StateKey::from("cache")].same(&s.cache));
    // Duplicate keys fall back to the name.
    let found = keyed(|_, _| Some("same".into()))?;
    assert!(found[&StateKey::from("same")].same(&s.scale));
    assert!(found[&StateKey::from("offset")].same(&s.offset));
    assert!(found[&StateKey::from("cache")].same(&s.cache));
    // Mixed: a key equal to a later state's name pushes that state to a suffixed name.
    let found = keyed(|i, _| (i == 0).then(|| "cache".to_string()))?;
    assert!(found[&StateKey::from("cache")].same(&s.scale));
    assert!(found[&StateKey::from("offset")].same(&s.offset));
    assert!(found[&StateKey::from("cache_1")].same(&s.cache));
    // With a filter, indices are positions after filtering.
    let found = StateFinder::new(&energy)
        .filter(Filter::not(ParamState))
        .key_fn(|i, _| Some(format!("k{i}")))
        .find(x.clone())?;
    assert_eq!(dict(&found), ["k0: cache"]);
    assert_eq!(s.values()[2], 0.0);
    Ok(())
}

#[test]
fn finder_key_fn_unnamed_and_colliding_names() -> Result<()> {
    // Unnamed states: `state_{i}`.
    let u0 = State::new(Tensor::scalar(1.0f32));
    let u1 = State::new(Tensor::scalar(2.0f32));
    let f = |x: Tensor| &x * &u0.value() + u1.value();
    let found = StateFinder::new(f)
        .key_fn(|_, _| None)
        .find(Tensor::ones(&[1]))?;
    assert!(found[&StateKey::from("state_0")].same(&u0));
    assert!(found[&StateKey::from("state_1")].same(&u1));
    // A key_fn key that collides with a fallback gets `_1`.
    let found = StateFinder::new(f)
        .key_fn(|i, _| (i == 0).then(|| "state_1".to_string()))
        .find(Tensor::ones(&[1]))?;
    assert!(found[&StateKey::from("state_1")].same(&u0));
    assert!(found[&StateKey::from("state_1_1")].same(&u1));
    // A duplicate key on an unnamed state falls back to `state_{i}`.
    let found = StateFinder::new(f)
        .key_fn(|_, _| Some("x".into()))
        .find(Tensor::ones(&[1]))?;
    assert!(found[&StateKey::from("x")].same(&u0));
    assert!(found[&StateKey::from("state_1")].same(&u1));

    // Several states with the same name: the name, then `_1`, `_2`.
    let d0 = State::new(Tensor::scalar(0.0f32)).named("dup");
    let d1 = State::new(Tensor::scalar(1.0f32)).named("dup");
    let d2 = State::new(Tensor::scalar(2.0f32)).named("dup");
    let g = |x: Tensor| &x + d0.value() + d1.value() + d2.value();
    let found = StateFinder::new(g)
        .key_fn(|_, _| None)
        .find(Tensor::ones(&[1]))?;
    assert_eq!(
        found.keys().map(|k| k.to_string()).collect::<Vec<_>>(),
        ["dup", "dup_1", "dup_2"]
    );
    assert!(found[&StateKey::from("dup")].same(&d0));
    assert!(found[&StateKey::from("dup_1")].same(&d1));
    assert!(found[&StateKey::from("dup_2")].same(&d2));
    // Duplicate key_fn keys on same-named states also end up `dup`, `dup_1`, `dup_2`.
    let found = StateFinder::new(g)
        .key_fn(|_, _| Some("k".into()))
        .find(Tensor::ones(&[1]))?;
    assert_eq!(
        found.keys().map(|k| k.to_string()).collect::<Vec<_>>(),
        ["dup", "dup_1", "k"]
    );
    assert!(found[&StateKey::from("k")].same(&d0));
    assert!(found[&StateKey::from("dup")].same(&d1));
    assert!(found[&StateKey::from("dup_1")].same(&d2));
    // Without key_fn the keys are indices, whatever the names.
    let found = StateFinder::new(g).find(Tensor::ones(&[1]))?;
    assert_eq!(
        found.keys().map(|k| k.to_string()).collect::<Vec<_>>(),
        ["0", "1", "2"]
    );
    Ok(())
}

#[test]
fn usage_parses_and_rejects_bogus() {
    assert_eq!("all".parse::<Usage>().unwrap(), Usage::All);
    assert_eq!("read".parse::<Usage>().unwrap(), Usage::Read);
    assert_eq!("write".parse::<Usage>().unwrap(), Usage::Write);
    assert_eq!("both".parse::<Usage>().unwrap(), Usage::Both);
    assert_eq!(Usage::default(), Usage::All);
    let err = "bogus".parse::<Usage>().unwrap_err();
    match &err {
        Error::InvalidOption { option, msg } => {
            assert_eq!(*option, "usage");
            assert!(msg.contains("bogus"), "{msg}");
        }
        other => panic!("expected InvalidOption, got {other:?}"),
    }
    assert!(err.to_string().contains("bogus"));
    assert!("All".parse::<Usage>().is_err());
    assert!("".parse::<Usage>().is_err());
}

// ------------------------------------------------------------------------ State itself

#[test]
fn state_handles_names_tags_kinds() {
    let s = State::new(Tensor::scalar(2.0f32))
        .named("s")
        .tagged("t")
        .tagged("u");
    let t = s.clone();
    assert!(s.same(&t));
    assert_eq!(s, t);
    assert_eq!(s.id(), t.id());
    t.set_value(Tensor::scalar(3.0f32));
    assert_eq!(s.value().item().unwrap(), 3.0);
    assert_eq!(s.name(), Some("s"));
    assert_eq!(s.tags(), ["t", "u"]);
    assert_eq!(s.kind(), StateKind::State);
    assert!(Filter::from("t").matches(&Path::new(), &s));
    assert!(!Filter::from("v").matches(&Path::new(), &s));

    // Distinct states with equal values are different states.
    let a = State::new(Tensor::scalar(1.0f32));
    let b = State::new(Tensor::scalar(1.0f32));
    assert!(!a.same(&b));
    assert_ne!(a.id(), b.id());
    assert_eq!(a.name(), None);
    assert!(a.label().starts_with("State#"));
    assert_eq!(s.label(), "`s`");

    assert_eq!(ParamState::new(Tensor::zeros(&[2, 3])).shape(), vec![2, 3]);
    assert_eq!(
        format!("{:?}", ParamState::new(Tensor::scalar(1.0f32)).named("p")),
        "ParamState(name=\"p\", value=1.0)"
    );
    assert_eq!(
        State::with_kind(StateKind::Batch, Tensor::scalar(0.0f32)).kind(),
        StateKind::Batch
    );
}

// ------------------------------------------------------------------------ threads

const fn assert_send_sync<T: Send + Sync>() {}
const _: () = assert_send_sync::<State>();
const _: () = assert_send_sync::<Filter>();
const _: () = assert_send_sync::<StateMap>();
const _: () = assert_send_sync::<Tensor>();

#[test]
fn states_across_threads() {
    let shared = State::new(Tensor::full(&[64], 1.0)).named("shared");
    let own: Vec<State> = (0..8).map(|_| State::new(Tensor::scalar(0.0f32))).collect();

    // Each thread reads the shared state and writes its own.
    std::thread::scope(|scope| {
        for (i, s) in own.iter().enumerate() {
            let shared = &shared;
            scope.spawn(move || {
                for _ in 0..100 {
                    s.set_value(shared.value().sum() * i as f64);
                }
            });
        }
    });
    for (i, s) in own.iter().enumerate() {
        assert_eq!(s.value().item().unwrap(), 64.0 * i as f64);
    }

    // Concurrent writers and readers of one state: every read sees one whole written value.
    let target = State::new(Tensor::full(&[256], 0.0));
    std::thread::scope(|scope| {
        for k in 1..=4 {
            let target = target.clone(); // moved into the thread: handles are Send
            scope.spawn(move || {
                for _ in 0..200 {
                    target.set_value(Tensor::full(&[256], k as f32));
                }
            });
        }
        for _ in 0..4 {
            let target = &target;
            scope.spawn(move || {
                for _ in 0..200 {
                    let v = target.value().to_vec::<f32>();
                    assert!(v.iter().all(|&x| x == v[0]), "torn read");
                    assert!((0.0..=4.0).contains(&v[0]));
                }
            });
        }
    });
    let last = target.value().to_vec::<f32>()[0];
    assert!((1.0..=4.0).contains(&last));

    // Transforms run on several threads at once, each with its own trace.
    let w = ParamState::new(Tensor::new([1.0f32, 2.0, 3.0])).named("w");
    let results: Vec<(Tensor, Tensor)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let w = w.clone();
                scope.spawn(move || {
                    let x = Tensor::full(&[3], i as f32);
                    let f = |x: Tensor| (&x * &w.value()).sum();
                    let gw = grad(f).grad_states(w.clone()).call(x.clone()).unwrap();
                    let gx = grad(f).call(x).unwrap();
                    (gw, gx)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (gw, gx)) in results.iter().enumerate() {
        assert_eq!(gw.to_f64_vec(), [i as f64; 3]);
        assert_eq!(gx.to_f64_vec(), [1.0, 2.0, 3.0]);
    }
    assert_eq!(w.value().to_f64_vec(), [1.0, 2.0, 3.0]);

    // A module's states can be collected on another thread.
    let m = net();
    let ks = std::thread::scope(|scope| scope.spawn(|| keys(&m.all_states())).join().unwrap());
    assert_eq!(ks, ALL_KEYS);
}

/// Transforms over one shared state on several threads at once: each thread's traced view of
/// the state is its own (a transform never sees another thread's traced value), and the state
/// is unchanged afterwards.
#[test]
fn concurrent_transforms_on_one_state_do_not_interfere() {
    let w = ParamState::new(Tensor::new([1.0f32, 2.0, 3.0])).named("w");
    std::thread::scope(|scope| {
        for i in 0..8 {
            let w = w.clone();
            scope.spawn(move || {
                for r in 0..200 {
                    let c = (i * 1000 + r) as f32;
                    let x = Tensor::full(&[3], c);
                    let f = |x: Tensor| (&x * &w.value()).sum();
                    let gw = grad(f).grad_states(w.clone()).call(x.clone()).unwrap();
                    assert_eq!(gw.to_f64_vec(), [c as f64; 3], "thread {i} round {r}");
                    let h = jit(|x: Tensor| grad(f).grad_states(w.clone()).call(x));
                    assert_eq!(h.call(x).unwrap().to_f64_vec(), [c as f64; 3]);
                }
            });
        }
    });
    assert_eq!(w.value().to_f64_vec(), [1.0, 2.0, 3.0]);
}
