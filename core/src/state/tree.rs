//! Tree-valued states: a [`State`] holding a [`TensorTree`] (`ParamState({'weight': W, 'bias':
//! b})` in the reference).
//!
//! A tree state is a handle whose value is a fixed structure (maps with string keys, lists,
//! nested) with one ordinary tensor state per leaf. Each leaf has its own id, the parent's kind
//! and tags, and the name `parent.key` when the parent is named. Every transform (views,
//! rollback on error, `jit` inputs and in-place writes, gradients, `vmap`, `StateFinder`) works
//! on the leaves as on any tensor state, and [`Module::visit_states`](crate::Module) visits
//! the leaves under the path extended by their keys, so `module.states(ParamState)` lists
//! `('layer', 'weight')`, `('layer', 'bias')`, … and `grad_states(model.states(ParamState))`
//! gives one gradient per leaf.

use super::{fresh_id, Slot, State, StateInner, StateKind};
use crate::error::{Error, Result};
use crate::path::{Path, PathKey};
use crate::state::StateMap;
use crate::tensor::Tensor;
use crate::tensor_tree::TensorTree;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The children of a tree state: one state (a tensor state or a nested tree state) per key.
#[derive(Clone)]
pub(crate) enum Children {
    Map(BTreeMap<String, State>),
    List(Vec<State>),
}

impl Children {
    /// The children with their keys, in key order.
    pub(crate) fn entries(&self) -> Vec<(PathKey, &State)> {
        match self {
            Children::Map(m) => m
                .iter()
                .map(|(k, s)| (PathKey::from(k.as_str()), s))
                .collect(),
            Children::List(l) => l.iter().enumerate().map(|(i, s)| (i.into(), s)).collect(),
        }
    }

    fn get(&self, key: &PathKey) -> Option<&State> {
        match (self, key) {
            (Children::Map(m), PathKey::Name(n)) => m.get(&**n),
            (Children::List(l), PathKey::Index(i)) => l.get(*i),
            _ => None,
        }
    }

    /// The same children renamed under `parent` (`parent.key`, unnamed without a parent name)
    /// and carrying `tags`.
    pub(super) fn rebuilt(self, parent: Option<&str>, tags: &[String]) -> Children {
        let child = |key: &dyn fmt::Display, s: State| {
            let name = parent.map(|p| format!("{p}.{key}"));
            s.rebuild(&|n, t| {
                n.clone_from(&name);
                *t = tags.to_vec();
            })
        };
        match self {
            Children::Map(m) => Children::Map(
                m.into_iter()
                    .map(|(k, s)| {
                        let s = child(&k, s);
                        (k, s)
                    })
                    .collect(),
            ),
            Children::List(l) => Children::List(
                l.into_iter()
                    .enumerate()
                    .map(|(i, s)| child(&i, s))
                    .collect(),
            ),
        }
    }

    /// The current values, without recording a read.
    fn raw_tree(&self) -> TensorTree {
        let raw = |s: &State| match s.children() {
            Some(c) => c.raw_tree(),
            None => TensorTree::Leaf(s.raw_value()),
        };
        match self {
            Children::Map(m) => {
                TensorTree::Map(m.iter().map(|(k, s)| (k.clone(), raw(s))).collect())
            }
            Children::List(l) => TensorTree::List(l.iter().map(raw).collect()),
        }
    }
}

impl fmt::Debug for Children {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.raw_tree())
    }
}

impl State {
    /// A plain tree-valued `State` holding `value`: one tensor state per leaf (see
    /// [`State::tree_with_kind`]).
    ///
    /// ```
    /// use stategrad_core::{path, State, Tensor, TensorTree};
    /// let s = State::tree(TensorTree::map([
    ///     ("a", TensorTree::from(Tensor::scalar(1.0f32))),
    ///     ("b", TensorTree::list([Tensor::scalar(2.0f32), Tensor::scalar(3.0f32)])),
    /// ]))
    /// .named("s");
    /// assert!(s.is_tree());
    /// assert_eq!(s.leaf_at(&path!("b", 1)).unwrap().name(), Some("s.b.1"));
    /// assert_eq!(s.leaves().len(), 3);
    /// ```
    pub fn tree(value: impl Into<TensorTree>) -> State {
        State::tree_with_kind(StateKind::State, value)
    }

    /// A tree-valued state of the given kind. Each leaf is an ordinary tensor state of the same
    /// kind (with its own id); a nested map or list is a nested tree state. A
    /// [`TensorTree::Leaf`] gives an ordinary tensor state.
    ///
    /// Name and tag a tree state with [`State::named`] and [`State::tagged`] as any state: the
    /// leaves get the tags, and the names `parent.key` (`layer.weight`, `layer.blocks.0`).
    ///
    /// ```
    /// use stategrad_core::{ParamState, StateKind, Tensor, TensorTree};
    /// let p = ParamState::tree(TensorTree::map([
    ///     ("weight", Tensor::zeros(&[2, 3])),
    ///     ("bias", Tensor::zeros(&[3])),
    /// ]))
    /// .named("layer")
    /// .tagged("trainable");
    /// let w = p.leaf("weight").unwrap();
    /// assert_eq!(w.kind(), StateKind::Param);
    /// assert_eq!(w.name(), Some("layer.weight"));
    /// assert_eq!(w.tags(), ["trainable"]);
    /// assert_eq!(w.shape(), [2, 3]);
    /// ```
    pub fn tree_with_kind(kind: StateKind, value: impl Into<TensorTree>) -> State {
        let children = match value.into() {
            TensorTree::Leaf(t) => return State::with_kind(kind, t),
            TensorTree::Map(m) => Children::Map(
                m.into_iter()
                    .map(|(k, v)| (k, State::tree_with_kind(kind, v)))
                    .collect(),
            ),
            TensorTree::List(l) => Children::List(
                l.into_iter()
                    .map(|v| State::tree_with_kind(kind, v))
                    .collect(),
            ),
        };
        State(Arc::new(StateInner {
            id: fresh_id(),
            kind,
            name: None,
            tags: Vec::new(),
            slot: Slot::Tree(children),
        }))
    }

    /// The children of a tree state, `None` for a tensor state.
    pub(crate) fn children(&self) -> Option<&Children> {
        match &self.0.slot {
            Slot::Tree(c) => Some(c),
            Slot::Tensor(_) => None,
        }
    }

    /// True if this state holds a tree of tensors (made by [`State::tree`] or a `tree`
    /// constructor such as `ParamState::tree`), false for a tensor state.
    pub fn is_tree(&self) -> bool {
        self.children().is_some()
    }

    /// The value as a tree: the leaves' values in the state's structure, a
    /// [`TensorTree::Leaf`] for a tensor state. Inside a transform each leaf read is recorded as
    /// [`State::value`] records it. Outside a transform the leaves are read one by one (see
    /// [`State::set_tree_value`] on atomicity).
    ///
    /// ```
    /// use stategrad_core::{State, Tensor, TensorTree};
    /// let s = State::tree(TensorTree::list([Tensor::scalar(1.0f32), Tensor::scalar(2.0f32)]));
    /// let v = s.tree_value();
    /// assert_eq!(v.get(1).unwrap().as_tensor().unwrap().item().unwrap(), 2.0);
    /// assert!(State::new(Tensor::scalar(0.0f32)).tree_value().is_leaf());
    /// ```
    pub fn tree_value(&self) -> TensorTree {
        match self.children() {
            None => TensorTree::Leaf(self.value()),
            Some(Children::Map(m)) => {
                TensorTree::Map(m.iter().map(|(k, s)| (k.clone(), s.tree_value())).collect())
            }
            Some(Children::List(l)) => TensorTree::List(l.iter().map(State::tree_value).collect()),
        }
    }

    /// Write a tree value: every leaf of `value` to the leaf state at the same path. The
    /// structure (keys and list lengths at every level) must be the state's, else
    /// [`Error::TreeStructureMismatch`] and nothing is written. Inside a transform each leaf
    /// write is recorded as [`State::set_value`] records it. A tensor state accepts a
    /// [`TensorTree::Leaf`].
    ///
    /// Outside a transform each leaf is written atomically, not the tree as a whole: another
    /// thread may read some leaves old and some new. Inside a transform the tree is written as
    /// part of the transform's transaction (all leaves published when it succeeds, none when it
    /// fails).
    ///
    /// ```
    /// use stategrad_core::{Error, State, Tensor, TensorTree};
    /// let s = State::tree(TensorTree::map([("a", Tensor::scalar(1.0f32))]));
    /// s.set_tree_value(TensorTree::map([("a", Tensor::scalar(5.0f32))])).unwrap();
    /// assert_eq!(s.leaf("a").unwrap().value().item().unwrap(), 5.0);
    /// let err = s.set_tree_value(TensorTree::map([("b", Tensor::scalar(0.0f32))])).unwrap_err();
    /// assert!(matches!(err, Error::TreeStructureMismatch { .. }));
    /// assert_eq!(s.leaf("a").unwrap().value().item().unwrap(), 5.0);
    /// ```
    pub fn set_tree_value(&self, value: impl Into<TensorTree>) -> Result<()> {
        let value = value.into();
        if !self.fits(&value) {
            return Err(Error::TreeStructureMismatch {
                state: self.label(),
                expected: self.structure(),
                found: value.structure(),
            });
        }
        self.write_tree(value);
        Ok(())
    }

    fn fits(&self, value: &TensorTree) -> bool {
        match (self.children(), value) {
            (None, TensorTree::Leaf(_)) => true,
            (Some(Children::Map(m)), TensorTree::Map(v)) => {
                m.len() == v.len()
                    && m.iter()
                        .zip(v)
                        .all(|((ka, s), (kb, t))| ka == kb && s.fits(t))
            }
            (Some(Children::List(l)), TensorTree::List(v)) => {
                l.len() == v.len() && l.iter().zip(v).all(|(s, t)| s.fits(t))
            }
            _ => false,
        }
    }

    /// Write a value whose structure fits (checked by [`State::fits`]).
    fn write_tree(&self, value: TensorTree) {
        match (self.children(), value) {
            (None, TensorTree::Leaf(t)) => self.set_value(t),
            (Some(Children::Map(m)), TensorTree::Map(v)) => {
                for (s, (_, t)) in m.values().zip(v) {
                    s.write_tree(t)
                }
            }
            (Some(Children::List(l)), TensorTree::List(v)) => {
                for (s, t) in l.iter().zip(v) {
                    s.write_tree(t)
                }
            }
            _ => unreachable!("the structure was checked before writing"),
        }
    }

    /// The structure, for messages: `{'bias': *, 'weight': *}`, `[*, *]`, `*` for a tensor
    /// state.
    pub fn structure(&self) -> String {
        match self.children() {
            None => "*".into(),
            Some(Children::Map(m)) => {
                let items: Vec<String> = m
                    .iter()
                    .map(|(k, s)| format!("'{k}': {}", s.structure()))
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
            Some(Children::List(l)) => {
                let items: Vec<String> = l.iter().map(State::structure).collect();
                format!("[{}]", items.join(", "))
            }
        }
    }

    /// The child of a tree state under `key` (a name in a map, an index in a list): a tensor
    /// leaf, or in a nested tree the subtree as a tree state. [`Error::NoSuchLeaf`] if there is
    /// none (or this is a tensor state). The child is the same state the tree holds: reading
    /// and writing it reads and writes the tree.
    ///
    /// ```
    /// use stategrad_core::{Error, ParamState, Tensor, TensorTree};
    /// let p = ParamState::tree(TensorTree::map([("bias", Tensor::zeros(&[2]))]));
    /// p.leaf("bias").unwrap().set_value(Tensor::ones(&[2]));
    /// assert_eq!(p.tree_value().get("bias").unwrap().as_tensor().unwrap().sum().item().unwrap(), 2.0);
    /// assert!(matches!(p.leaf("weight"), Err(Error::NoSuchLeaf { .. })));
    /// ```
    pub fn leaf(&self, key: impl Into<PathKey>) -> Result<State> {
        let key = key.into();
        self.children()
            .and_then(|c| c.get(&key))
            .cloned()
            .ok_or_else(|| self.no_leaf(key.to_string()))
    }

    /// The state at `path` inside the tree (this state for the empty path), for nested trees:
    /// `state.leaf_at(&path!("encoder", 0, "weight"))`. [`Error::NoSuchLeaf`] if there is none.
    pub fn leaf_at(&self, path: &Path) -> Result<State> {
        let mut cur = self.clone();
        for k in path.keys() {
            cur = match cur.children().and_then(|c| c.get(k)) {
                Some(s) => s.clone(),
                None => return Err(self.no_leaf(path.to_string())),
            };
        }
        Ok(cur)
    }

    fn no_leaf(&self, path: String) -> Error {
        Error::NoSuchLeaf {
            state: self.label(),
            path,
            structure: self.structure(),
        }
    }

    /// Every tensor leaf keyed by its path inside the tree, sorted (a tensor state gives itself
    /// at the empty path). The map is a `grad_states` container: `grad_states(p.leaves())` gives
    /// one gradient per leaf, keyed by the same paths.
    ///
    /// ```
    /// use stategrad_core::{grad, path, ParamState, Tensor, TensorTree};
    /// let p = ParamState::tree(TensorTree::map([
    ///     ("w", Tensor::scalar(3.0f64)),
    ///     ("b", Tensor::scalar(1.0f64)),
    /// ]));
    /// let q = p.clone();
    /// let loss = move |x: Tensor| {
    ///     let (w, b) = (q.leaf("w").unwrap().value(), q.leaf("b").unwrap().value());
    ///     (&(&w * &x) + &b).square().sum()
    /// };
    /// let g = grad(loss).grad_states(p.leaves()).call(Tensor::scalar(2.0f64)).unwrap();
    /// // d/dw (w x + b)^2 = 2 (w x + b) x = 28, d/db = 2 (w x + b) = 14
    /// assert_eq!(g[&path!("w")].item().unwrap(), 28.0);
    /// assert_eq!(g[&path!("b")].item().unwrap(), 14.0);
    /// ```
    pub fn leaves(&self) -> StateMap {
        let mut out = StateMap::new();
        fn walk(s: &State, p: &mut Path, out: &mut StateMap) {
            match s.children() {
                None => {
                    out.insert(p.clone(), s.clone());
                }
                Some(c) => {
                    for (k, child) in c.entries() {
                        p.0.push(k);
                        walk(child, p, out);
                        p.pop();
                    }
                }
            }
        }
        walk(self, &mut Path::new(), &mut out);
        out
    }

    /// The value of a tensor state, or [`Error::TreeState`] for a tree-valued state (where
    /// [`State::value`] raises it).
    ///
    /// ```
    /// use stategrad_core::{Error, State, Tensor, TensorTree};
    /// let t = State::tree(TensorTree::map([("a", Tensor::scalar(1.0f32))]));
    /// assert!(matches!(t.try_value(), Err(Error::TreeState { .. })));
    /// assert_eq!(State::new(Tensor::scalar(1.0f32)).try_value().unwrap().item().unwrap(), 1.0);
    /// ```
    pub fn try_value(&self) -> Result<Tensor> {
        if self.is_tree() {
            return Err(self.tree_error("value"));
        }
        Ok(self.value())
    }

    /// The error of a tensor-only operation `op` on this tree state.
    pub(crate) fn tree_error(&self, op: &'static str) -> Error {
        let hint = match op {
            "set_value" => "write it with `set_tree_value(..)`, or a leaf with `leaf(key)?.set_value(..)`",
            "grad_states" => "pass its leaves, `grad_states(state.leaves())` (one gradient per leaf, keyed by path), or the module's `states(..)`",
            _ => "read it with `tree_value()`, or a leaf with `leaf(key)?.value()`",
        };
        Error::TreeState {
            state: self.label(),
            op,
            hint: hint.into(),
        }
    }

    /// Raise [`Error::TreeState`] if this is a tree state (for tensor-only operations).
    #[track_caller]
    pub(super) fn tensor_only(&self, op: &'static str) {
        if self.is_tree() {
            crate::panics::raise(self.tree_error(op))
        }
    }
}
