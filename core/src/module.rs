//! Modules, paths and filters: how states are found in a model.

use crate::state::{State, StateKind};
use crate::tensor::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

pub use crate::path::{Path, PathKey};
pub use crate::state::StateMap;

/// Anything whose states can be listed by path. `#[derive(Module)]` writes it from the fields.
///
/// ```
/// use stategrad_core::{Module, ParamState, Path, State, Tensor};
/// struct Linear { weight: State, bias: State }
/// impl Module for Linear {
///     fn visit_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State)) {
///         path.push_name("weight"); self.weight.visit_states(path, visitor); path.pop();
///         path.push_name("bias"); self.bias.visit_states(path, visitor); path.pop();
///     }
/// }
/// let m = Linear { weight: ParamState::new(Tensor::zeros(&[1, 1])), bias: ParamState::new(Tensor::zeros(&[1])) };
/// let keys: Vec<String> = m.states(ParamState).keys().map(|p| p.to_string()).collect();
/// assert_eq!(keys, ["('bias',)", "('weight',)"]);
/// ```
pub trait Module {
    /// Visit every state reachable from `self`, in field order. Implementations push a key on
    /// `path` before visiting a child and pop it afterwards.
    fn visit_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State));

    /// Every state, once, under its first path, sorted by path. As in the reference, which
    /// walks a node's attributes in sorted order, a state reachable by several paths is listed
    /// under the smallest one, whatever the order of the fields.
    fn state_list(&self) -> Vec<(Path, State)> {
        let mut index: HashMap<crate::state::StateId, usize> = HashMap::new();
        let mut out: Vec<(Path, State)> = Vec::new();
        self.visit_states(&mut Path::new(), &mut |p, s| match index.get(&s.id()) {
            Some(&i) => {
                if *p < out[i].0 {
                    out[i].0 = p.clone();
                }
            }
            None => {
                index.insert(s.id(), out.len());
                out.push((p.clone(), s.clone()));
            }
        });
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The states matching `filter`, keyed by path and sorted.
    fn states(&self, filter: impl Into<Filter>) -> StateMap {
        let filter = filter.into();
        self.state_list()
            .into_iter()
            .filter(|(p, s)| filter.matches(p, s))
            .collect()
    }

    /// Every state, keyed by path and sorted.
    fn all_states(&self) -> StateMap {
        self.state_list().into_iter().collect()
    }

    /// Split the states over several filters: each state goes to the first filter it matches
    /// (states matching none are left out; put `true` last to catch the rest).
    fn states_split(&self, filters: &[Filter]) -> Vec<StateMap> {
        let mut out = vec![StateMap::new(); filters.len()];
        for (p, s) in self.state_list() {
            if let Some(i) = filters.iter().position(|f| f.matches(&p, &s)) {
                out[i].insert(p, s);
            }
        }
        out
    }
}

/// A tensor state visits itself; a tree-valued state ([`State::tree`]) visits each of its leaves
/// under the path extended by the leaf's keys (`('layer', 'weight')`), so filters, `states_split`
/// and `treefy_states` see the leaves.
impl Module for State {
    fn visit_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State)) {
        match self.children() {
            None => visitor(path, self),
            Some(c) => {
                for (k, s) in c.entries() {
                    path.0.push(k);
                    s.visit_states(path, visitor);
                    path.pop();
                }
            }
        }
    }
}

impl<T: Module> Module for Vec<T> {
    fn visit_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State)) {
        for (i, m) in self.iter().enumerate() {
            path.push_index(i);
            m.visit_states(path, visitor);
            path.pop();
        }
    }
}

impl<T: Module, const N: usize> Module for [T; N] {
    fn visit_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State)) {
        for (i, m) in self.iter().enumerate() {
            path.push_index(i);
            m.visit_states(path, visitor);
            path.pop();
        }
    }
}

impl<T: Module> Module for Option<T> {
    fn visit_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State)) {
        if let Some(m) = self {
            m.visit_states(path, visitor)
        }
    }
}

impl<T: Module + ?Sized> Module for Box<T> {
    fn visit_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State)) {
        (**self).visit_states(path, visitor)
    }
}

impl<T: Module + ?Sized> Module for Arc<T> {
    fn visit_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State)) {
        (**self).visit_states(path, visitor)
    }
}

impl<T: Module + ?Sized> Module for &T {
    fn visit_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State)) {
        (**self).visit_states(path, visitor)
    }
}

impl<K: fmt::Display + Ord, T: Module> Module for BTreeMap<K, T> {
    fn visit_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State)) {
        for (k, m) in self {
            path.push_name(&k.to_string());
            m.visit_states(path, visitor);
            path.pop();
        }
    }
}

impl<K: fmt::Display + Ord, T: Module> Module for HashMap<K, T> {
    fn visit_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State)) {
        // Sorted so that the first-path rule for shared states is deterministic.
        let mut entries: Vec<(&K, &T)> = self.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        for (k, m) in entries {
            path.push_name(&k.to_string());
            m.visit_states(path, visitor);
            path.pop();
        }
    }
}

macro_rules! no_states {
    ($($t:ty),*) => {$(
        impl Module for $t {
            fn visit_states(&self, _: &mut Path, _: &mut dyn FnMut(&Path, &State)) {}
        }
    )*};
}
no_states!(
    f32,
    f64,
    i32,
    i64,
    u32,
    u64,
    usize,
    isize,
    bool,
    String,
    &str,
    (),
    Tensor
);

// ------------------------------------------------------------------ filters

/// A predicate over `(path, state)`.
pub type Predicate = Arc<dyn Fn(&Path, &State) -> bool + Send + Sync>;

/// Selects states: by kind (subkinds match), tag, everything/nothing, any-of, predicate, and the
/// combinators `Any`, `All`, `Not`, `PathContains`.
///
/// ```
/// use stategrad_core::{Filter, ParamState, Path, State, StateKind, Tensor};
/// let p = ParamState::new(Tensor::scalar(1.0f32));
/// assert!(Filter::from(StateKind::LongTerm).matches(&Path::new(), &p));
/// assert!(Filter::not(StateKind::Hidden).matches(&Path::new(), &p));
/// assert!(!Filter::from(false).matches(&Path::new(), &p));
/// ```
#[derive(Clone)]
pub enum Filter {
    /// The kind or one of its subkinds.
    Kind(StateKind),
    /// States carrying this tag.
    Tag(String),
    /// Every state (`True` / `...` in the reference).
    Everything,
    /// No state (`False`).
    Nothing,
    /// Any of these (a list in the reference).
    Any(Vec<Filter>),
    /// All of these.
    All(Vec<Filter>),
    /// The negation.
    Not(Box<Filter>),
    /// Paths that contain this key.
    PathContains(PathKey),
    /// A predicate.
    Pred(Predicate),
}

impl Filter {
    /// True if the state at `path` is selected.
    pub fn matches(&self, path: &Path, state: &State) -> bool {
        match self {
            Filter::Kind(k) => state.kind().is_a(*k),
            Filter::Tag(t) => state.tags().iter().any(|x| x == t),
            Filter::Everything => true,
            Filter::Nothing => false,
            Filter::Any(fs) => fs.iter().any(|f| f.matches(path, state)),
            Filter::All(fs) => fs.iter().all(|f| f.matches(path, state)),
            Filter::Not(f) => !f.matches(path, state),
            Filter::PathContains(k) => path.contains(k),
            Filter::Pred(p) => p(path, state),
        }
    }

    /// Any of the filters.
    pub fn any<I: IntoIterator<Item = F>, F: Into<Filter>>(fs: I) -> Filter {
        Filter::Any(fs.into_iter().map(Into::into).collect())
    }

    /// All of the filters.
    pub fn all<I: IntoIterator<Item = F>, F: Into<Filter>>(fs: I) -> Filter {
        Filter::All(fs.into_iter().map(Into::into).collect())
    }

    /// The negation.
    #[allow(clippy::should_implement_trait)]
    pub fn not(f: impl Into<Filter>) -> Filter {
        Filter::Not(Box::new(f.into()))
    }

    /// Paths containing `key`.
    pub fn path_contains(key: impl Into<PathKey>) -> Filter {
        Filter::PathContains(key.into())
    }

    /// A predicate over `(path, state)`.
    pub fn pred(f: impl Fn(&Path, &State) -> bool + Send + Sync + 'static) -> Filter {
        Filter::Pred(Arc::new(f))
    }

    /// A tag filter.
    pub fn tag(t: impl Into<String>) -> Filter {
        Filter::Tag(t.into())
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Kind(k) => write!(f, "{}", k.class_name()),
            Filter::Tag(t) => write!(f, "Tag({t:?})"),
            Filter::Everything => write!(f, "Everything"),
            Filter::Nothing => write!(f, "Nothing"),
            Filter::Any(v) => write!(f, "Any({v:?})"),
            Filter::All(v) => write!(f, "All({v:?})"),
            Filter::Not(x) => write!(f, "Not({x:?})"),
            Filter::PathContains(k) => write!(f, "PathContains({k})"),
            Filter::Pred(_) => write!(f, "Pred(..)"),
        }
    }
}

impl From<StateKind> for Filter {
    fn from(k: StateKind) -> Filter {
        Filter::Kind(k)
    }
}
impl From<bool> for Filter {
    fn from(b: bool) -> Filter {
        if b {
            Filter::Everything
        } else {
            Filter::Nothing
        }
    }
}
impl From<&str> for Filter {
    fn from(t: &str) -> Filter {
        Filter::Tag(t.to_string())
    }
}
impl From<String> for Filter {
    fn from(t: String) -> Filter {
        Filter::Tag(t)
    }
}
impl<F: Into<Filter>> From<Vec<F>> for Filter {
    fn from(v: Vec<F>) -> Filter {
        Filter::any(v)
    }
}
macro_rules! marker_filter {
    ($($m:ident),*) => {$(
        impl From<crate::state::$m> for Filter {
            fn from(m: crate::state::$m) -> Filter {
                Filter::Kind(m.into())
            }
        }
    )*};
}
marker_filter!(
    ParamState,
    ShortTermState,
    LongTermState,
    HiddenState,
    DelayState,
    BatchState,
    RandomState,
    AnyState
);

// ------------------------------------------------------------------ treefy_states

/// A state and a snapshot of its value, as `treefy_states` returns them.
#[derive(Clone, Debug)]
pub struct StateSnapshot {
    /// The state.
    pub state: State,
    /// Its value when the snapshot was taken.
    pub value: Tensor,
}

/// A nested map of state snapshots keyed by the path's keys at each level.
#[derive(Clone, Debug)]
pub enum NestedStates {
    /// A state.
    Leaf(StateSnapshot),
    /// A level of keys.
    Node(BTreeMap<PathKey, NestedStates>),
}

impl NestedStates {
    /// The flat, path-keyed map; its keys equal those of `module.states(..)`.
    pub fn to_flat(&self) -> BTreeMap<Path, StateSnapshot> {
        let mut out = BTreeMap::new();
        fn walk(n: &NestedStates, p: &mut Path, out: &mut BTreeMap<Path, StateSnapshot>) {
            match n {
                NestedStates::Leaf(s) => {
                    out.insert(p.clone(), s.clone());
                }
                NestedStates::Node(m) => {
                    for (k, v) in m {
                        p.0.push(k.clone());
                        walk(v, p, out);
                        p.pop();
                    }
                }
            }
        }
        walk(self, &mut Path::new(), &mut out);
        out
    }

    /// Rebuild the nested form from a flat map (the inverse of [`NestedStates::to_flat`]).
    pub fn from_flat(flat: &BTreeMap<Path, StateSnapshot>) -> NestedStates {
        let mut root = NestedStates::Node(BTreeMap::new());
        for (p, s) in flat {
            if p.0.is_empty() {
                // The root itself is a state (`treefy_states(&state, ..)`).
                root = NestedStates::Leaf(s.clone());
                continue;
            }
            let mut node = &mut root;
            for (i, k) in p.0.iter().enumerate() {
                let NestedStates::Node(m) = node else { break };
                node = m.entry(k.clone()).or_insert_with(|| {
                    if i + 1 == p.0.len() {
                        NestedStates::Leaf(s.clone())
                    } else {
                        NestedStates::Node(BTreeMap::new())
                    }
                });
            }
        }
        root
    }

    /// The child at `key`, if this is a node.
    pub fn get(&self, key: impl Into<PathKey>) -> Option<&NestedStates> {
        match self {
            NestedStates::Node(m) => m.get(&key.into()),
            NestedStates::Leaf(_) => None,
        }
    }
}

/// Snapshots of the states of `node` matching `filter`, as a nested map (`brainstate.graph.treefy_states`).
pub fn treefy_states(node: &(impl Module + ?Sized), filter: impl Into<Filter>) -> NestedStates {
    let filter = filter.into();
    let flat: BTreeMap<Path, StateSnapshot> = node
        .state_list()
        .into_iter()
        .filter(|(p, s)| filter.matches(p, s))
        .map(|(p, s)| {
            let value = s.raw_value().detach();
            (p, StateSnapshot { state: s, value })
        })
        .collect();
    NestedStates::from_flat(&flat)
}
