//! [`State`]: a shared, named, kinded handle to a value that functions read and write.
//!
//! Kinds form a hierarchy (SEMANTICS §6): `State` ⊃ `ShortTermState` ⊃ {`HiddenState`,
//! `DelayState`}, `State` ⊃ `LongTermState` ⊃ {`ParamState`, `BatchState`}, `State` ⊃
//! `RandomState`. A filter by kind matches the kind and all its subkinds.
//!
//! Inside a transform every read and write is seen by the transform: reads of differentiated
//! states return the traced input, writes are kept after the call, and if the function fails every
//! state is restored to the value it had on entry.
//!
//! # Tree-valued states
//!
//! A state of any kind may hold a tree of tensors instead of one tensor
//! (`ParamState::tree(TensorTree::map([("weight", w), ("bias", b)]))`, see [`State::tree`]): it
//! holds one ordinary tensor state per leaf, and modules, filters, transforms and `jit` see
//! those leaves under the paths extended by their keys. [`State::value`] and
//! [`State::set_value`] read and write one tensor, so on a tree state they raise
//! [`Error::TreeState`](crate::Error::TreeState); use [`State::tree_value`],
//! [`State::set_tree_value`], [`State::leaf`] and [`State::leaves`].
//!
//! # Threading model
//!
//! A `State` is shared between threads (`Send + Sync`); its value is one tensor behind a
//! read-write lock (a tree state: one per leaf, each leaf a state of its own, so what follows
//! holds leaf by leaf).
//!
//! - **Atomic**: each [`State::value`] and [`State::set_value`] outside a transform. A read sees a
//!   whole value that some write stored, never a mix of two writes (tensors are immutable; a
//!   write swaps the handle).
//! - **A transaction per transform**: the outermost transform on a thread (`grad`, `jit`,
//!   `vmap`, `for_loop`, `scan`, `cond`, a `StateFinder` …) reads each state once, at its first
//!   access, into a view private to the thread; the function's later reads and writes go to
//!   that view. When the transform ends, only the states it **wrote** are published (each
//!   atomically, in first-access order), and only if it succeeded: a transform that only reads a
//!   state, or that fails, never overwrites what other threads wrote meanwhile. A compiled
//!   loop's iterations are one such transaction.
//! - **A race (last writer wins)**: a read-modify-write such as
//!   `s.set_value(s.value() + 1.0)` from two threads at once, outside or inside transforms. Two
//!   transforms that write the same state publish one after the other; neither sees the other's
//!   write. Serialise such updates yourself (one writer per state, or a lock around the step),
//!   as with any shared variable.
//!
//! ```
//! use stategrad_core::{grad, State, Tensor};
//! let w = State::new(Tensor::scalar(2.0f64));
//! std::thread::scope(|s| {
//!     // A reader inside a transform never publishes its (stale) view of `w`.
//!     s.spawn(|| {
//!         for _ in 0..100 {
//!             grad(|x: Tensor| (&x * &w.value()).sum()).call(Tensor::ones(&[2])).unwrap();
//!         }
//!     });
//!     for _ in 0..100 {
//!         w.set_value(w.value() + 1.0); // the only writer: no update is lost
//!     }
//! });
//! assert_eq!(w.value().item().unwrap(), 102.0);
//! ```

use crate::tensor::{Float, Tensor};
use parking_lot::RwLock;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod tree;

/// States of a module keyed by path, sorted (what `module.states(filter)` returns).
pub type StateMap = std::collections::BTreeMap<crate::path::Path, State>;

/// A state's unique id.
pub type StateId = u64;

static NEXT_STATE: AtomicU64 = AtomicU64::new(1);

/// A new id; a state made inside a traced function is local to its frames.
fn fresh_id() -> StateId {
    let id = NEXT_STATE.fetch_add(1, Ordering::Relaxed);
    if crate::trace::tracing() {
        crate::trace::on_state_created(id);
    }
    id
}

/// The kind of a state; kinds form a hierarchy (see [`StateKind::is_a`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateKind {
    /// The root kind: every state is a `State`.
    State,
    /// Short-lived state (reset between sequences).
    ShortTerm,
    /// Hidden state of a recurrent computation (a `ShortTerm` state).
    Hidden,
    /// Delay buffer (a `ShortTerm` state).
    Delay,
    /// Long-lived state.
    LongTerm,
    /// A trainable parameter (a `LongTerm` state).
    Param,
    /// Batch statistics (a `LongTerm` state).
    Batch,
    /// A random key.
    Random,
}

impl StateKind {
    /// The kind this one directly specialises, `None` for the root.
    pub fn parent(self) -> Option<StateKind> {
        use StateKind::*;
        match self {
            State => None,
            ShortTerm | LongTerm | Random => Some(State),
            Hidden | Delay => Some(ShortTerm),
            Param | Batch => Some(LongTerm),
        }
    }

    /// True if `self` is `other` or one of its subkinds.
    ///
    /// ```
    /// use stategrad_core::StateKind;
    /// assert!(StateKind::Param.is_a(StateKind::LongTerm));
    /// assert!(StateKind::Param.is_a(StateKind::State));
    /// assert!(!StateKind::LongTerm.is_a(StateKind::Param));
    /// ```
    pub fn is_a(self, other: StateKind) -> bool {
        let mut k = Some(self);
        while let Some(cur) = k {
            if cur == other {
                return true;
            }
            k = cur.parent();
        }
        false
    }

    /// The reference's class name (`ParamState`, …).
    pub fn class_name(self) -> &'static str {
        use StateKind::*;
        match self {
            State => "State",
            ShortTerm => "ShortTermState",
            Hidden => "HiddenState",
            Delay => "DelayState",
            LongTerm => "LongTermState",
            Param => "ParamState",
            Batch => "BatchState",
            Random => "RandomState",
        }
    }
}

pub(crate) struct StateInner {
    id: StateId,
    kind: StateKind,
    name: Option<String>,
    tags: Vec<String>,
    slot: Slot,
}

/// What a state holds: one tensor, or (a tree-valued state) one child state per key.
pub(crate) enum Slot {
    Tensor(RwLock<Tensor>),
    Tree(tree::Children),
}

/// A shared handle to a mutable value, seen by every transform (`Arc`, `Send + Sync`).
///
/// Cloning a `State` clones the handle: both refer to the same value.
///
/// ```
/// use stategrad_core::{State, Tensor};
/// let s = State::new(Tensor::scalar(2.0f32)).named("s");
/// let t = s.clone();
/// t.set_value(Tensor::scalar(3.0f32));
/// assert_eq!(s.value().item().unwrap(), 3.0);
/// assert_eq!(s.name(), Some("s"));
/// ```
#[derive(Clone)]
pub struct State(pub(crate) Arc<StateInner>);

impl State {
    /// A plain `State` holding `value`.
    pub fn new(value: impl Into<Tensor>) -> State {
        State::with_kind(StateKind::State, value)
    }

    /// A state of the given kind.
    ///
    /// A state made inside a traced function (a transform or a `StateFinder` call) is local to
    /// that call: its accesses are not tracked and it is never reported.
    pub fn with_kind(kind: StateKind, value: impl Into<Tensor>) -> State {
        let id = fresh_id();
        State(Arc::new(StateInner {
            id,
            kind,
            name: None,
            tags: Vec::new(),
            slot: Slot::Tensor(RwLock::new(value.into())),
        }))
    }

    /// A copy of the handle with the name and tags changed by `f` (a tree state's children get
    /// the same tags and names under the new name).
    fn rebuild(self, f: &dyn Fn(&mut Option<String>, &mut Vec<String>)) -> State {
        let inner = Arc::try_unwrap(self.0).unwrap_or_else(|arc| StateInner {
            id: arc.id,
            kind: arc.kind,
            name: arc.name.clone(),
            tags: arc.tags.clone(),
            slot: match &arc.slot {
                Slot::Tensor(v) => Slot::Tensor(RwLock::new(v.read().clone())),
                Slot::Tree(c) => Slot::Tree(c.clone()),
            },
        });
        let (mut name, mut tags) = (inner.name, inner.tags);
        f(&mut name, &mut tags);
        let slot = match inner.slot {
            Slot::Tree(c) => Slot::Tree(c.rebuilt(name.as_deref(), &tags)),
            other => other,
        };
        State(Arc::new(StateInner {
            id: inner.id,
            kind: inner.kind,
            name,
            tags,
            slot,
        }))
    }

    /// Give the state a name (builder; use on a freshly made state).
    pub fn named(self, name: impl Into<String>) -> State {
        let name = name.into();
        self.rebuild(&|n, _| *n = Some(name.clone()))
    }

    /// Add a tag (builder; use on a freshly made state). Tags are matched by tag filters.
    pub fn tagged(self, tag: impl Into<String>) -> State {
        let tag = tag.into();
        self.rebuild(&|_, t| t.push(tag.clone()))
    }

    /// The unique id.
    pub fn id(&self) -> StateId {
        self.0.id
    }

    /// The kind.
    pub fn kind(&self) -> StateKind {
        self.0.kind
    }

    /// The name, if one was given.
    pub fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }

    /// The tags.
    pub fn tags(&self) -> &[String] {
        &self.0.tags
    }

    /// A label for messages: the name, else the kind and id.
    pub fn label(&self) -> String {
        match self.name() {
            Some(n) => format!("`{n}`"),
            None => format!("{}#{}", self.kind().class_name(), self.id()),
        }
    }

    /// Read the value. Inside a transform this is recorded (and may return a traced value).
    ///
    /// A tree-valued state ([`State::tree`]) has no single tensor: reading it raises
    /// [`Error::TreeState`](crate::Error::TreeState) (a panic outside transforms, the `Err` of
    /// the transform inside one). Read it with [`State::tree_value`], or use
    /// [`State::try_value`] to get the error as a value.
    #[track_caller]
    pub fn value(&self) -> Tensor {
        self.tensor_only("value");
        if crate::trace::tracing() {
            crate::trace::on_state_access(self, false);
        }
        self.raw_value()
    }

    /// Write the value. Inside a transform the write is recorded and kept after the call.
    ///
    /// A tree-valued state raises [`Error::TreeState`](crate::Error::TreeState), as
    /// [`State::value`] does; write it with [`State::set_tree_value`].
    #[track_caller]
    pub fn set_value(&self, value: impl Into<Tensor>) {
        self.tensor_only("set_value");
        if crate::trace::tracing() {
            crate::trace::on_state_access(self, true);
        }
        self.raw_set(value.into());
    }

    /// The shape of the current value (does not count as a read). A tree-valued state raises
    /// [`Error::TreeState`](crate::Error::TreeState), as [`State::value`] does.
    #[track_caller]
    pub fn shape(&self) -> Vec<usize> {
        self.tensor_only("shape");
        self.raw_value().shape().to_vec()
    }

    /// The lock of a tensor state's value (an internal error for a tree state: the engine only
    /// ever sees its tensor leaves).
    #[track_caller]
    fn cell(&self) -> &RwLock<Tensor> {
        match &self.0.slot {
            Slot::Tensor(v) => v,
            Slot::Tree(_) => crate::panics::raise(crate::Error::Internal {
                primitive: "state".into(),
                msg: format!("{} holds a tree of tensors, not a tensor", self.label()),
            }),
        }
    }

    /// The value this thread sees: its transform's view while one is open here, else the shared
    /// value.
    pub(crate) fn raw_value(&self) -> Tensor {
        if let Some(v) = views::get(self.0.id) {
            return v;
        }
        self.cell().read().clone()
    }

    /// Write the value this thread sees (the view of its open transform, if any).
    pub(crate) fn raw_set(&self, v: Tensor) {
        if let Err(v) = views::set(self.0.id, v) {
            *self.cell().write() = v;
        }
    }

    /// Write `data` (of `shape`) as the new value, into the current value's buffer when this
    /// state holds the only reference to it (an in-place update: no allocation, and no one can
    /// observe the old value changing), else as a new tensor. Same semantics as
    /// [`State::set_value`].
    pub(crate) fn set_from_slice<T: Float>(&self, shape: &[usize], data: &[T]) {
        let fresh = || {
            let mut buf = crate::tensor::Buffer::for_overwrite(T::DTYPE, data.len());
            let mut v = T::take_vec(&mut buf);
            v.copy_from_slice(data);
            Tensor::from_buffer(T::into_buffer(v), shape)
        };
        if crate::trace::tracing() || views::any() {
            return self.set_value(fresh());
        }
        let mut g = self.cell().write();
        match g.unique_data_mut::<T>(shape) {
            Some(v) => v.copy_from_slice(data),
            None => *g = fresh(),
        }
    }

    /// Start a per-thread view of this state (a transform on this thread touched it): until
    /// [`State::end_view`], reads and writes on this thread go to the view, so transforms on
    /// other threads never see this thread's traced values.
    pub(crate) fn begin_view(&self) {
        let v = self.cell().read().clone();
        views::begin(self.0.id, v);
    }

    /// End this thread's view; with `publish`, its value becomes the shared value.
    pub(crate) fn end_view(&self, publish: bool) {
        if let Some(v) = views::end(self.0.id) {
            if publish {
                *self.cell().write() = v;
            }
        }
    }

    /// True if both handles refer to the same state.
    pub fn same(&self, other: &State) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.kind().class_name())?;
        if let Some(n) = self.name() {
            write!(f, "name={n:?}, ")?;
        }
        match &self.0.slot {
            Slot::Tensor(_) => write!(f, "value={})", self.raw_value()),
            Slot::Tree(c) => write!(f, "tree={c:?})"),
        }
    }
}

impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.same(other)
    }
}
impl Eq for State {}

macro_rules! kind_marker {
    ($(#[$doc:meta])* $name:ident => $kind:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name;
        impl $name {
            #[doc = concat!("A new `", stringify!($name), "` holding `value`.")]
            #[allow(clippy::new_ret_no_self)]
            pub fn new(value: impl Into<Tensor>) -> State {
                State::with_kind(StateKind::$kind, value)
            }
            #[doc = concat!("A new tree-valued `", stringify!($name), "` holding `value` (see [`State::tree`]).")]
            pub fn tree(value: impl Into<crate::TensorTree>) -> State {
                State::tree_with_kind(StateKind::$kind, value)
            }
            /// The kind this marker stands for.
            pub const KIND: StateKind = StateKind::$kind;
        }
        impl From<$name> for StateKind {
            fn from(_: $name) -> StateKind {
                StateKind::$kind
            }
        }
    };
}

kind_marker!(
    /// Trainable parameters. `ParamState::new(v)` makes one; `ParamState` is also a filter.
    ///
    /// ```
    /// use stategrad_core::{ParamState, StateKind, Tensor};
    /// let w = ParamState::new(Tensor::zeros(&[2, 1]));
    /// assert!(w.kind().is_a(StateKind::LongTerm));
    /// ```
    ParamState => Param
);
kind_marker!(
    /// Short-lived state; parent of `HiddenState` and `DelayState`.
    ShortTermState => ShortTerm
);
kind_marker!(
    /// Long-lived state; parent of `ParamState` and `BatchState`.
    LongTermState => LongTerm
);
kind_marker!(
    /// Hidden state of a recurrent computation.
    HiddenState => Hidden
);
kind_marker!(
    /// Delay buffer.
    DelayState => Delay
);
kind_marker!(
    /// Batch statistics.
    BatchState => Batch
);
kind_marker!(
    /// A random key.
    RandomState => Random
);
kind_marker!(
    /// The root kind, as a filter: matches every state.
    AnyState => State
);

/// True if this thread holds a view of some state (a transform on it touched one).
pub(crate) fn thread_has_views() -> bool {
    views::any()
}

/// Per-thread views of states touched by the transforms open on this thread.
mod views {
    use super::StateId;
    use crate::tensor::Tensor;
    use std::cell::RefCell;
    use std::collections::HashMap;

    thread_local! {
        static VIEWS: RefCell<HashMap<StateId, Tensor>> = RefCell::new(HashMap::new());
    }

    pub(super) fn get(id: StateId) -> Option<Tensor> {
        VIEWS
            .try_with(|m| {
                let m = m.borrow();
                if m.is_empty() {
                    None
                } else {
                    m.get(&id).cloned()
                }
            })
            .ok()
            .flatten()
    }

    /// True if this thread has any view open.
    pub(super) fn any() -> bool {
        VIEWS.try_with(|m| !m.borrow().is_empty()).unwrap_or(false)
    }

    /// Writes the view if there is one; gives the value back otherwise.
    pub(super) fn set(id: StateId, v: Tensor) -> Result<(), Tensor> {
        let mut v = Some(v);
        let _ = VIEWS.try_with(|m| {
            let mut m = m.borrow_mut();
            if m.is_empty() {
                return;
            }
            if let Some(slot) = m.get_mut(&id) {
                *slot = v.take().expect("set once");
            }
        });
        match v {
            None => Ok(()),
            Some(v) => Err(v),
        }
    }

    pub(super) fn begin(id: StateId, v: Tensor) {
        let _ = VIEWS.try_with(|m| {
            m.borrow_mut().entry(id).or_insert(v);
        });
    }

    pub(super) fn end(id: StateId) -> Option<Tensor> {
        VIEWS
            .try_with(|m| m.borrow_mut().remove(&id))
            .ok()
            .flatten()
    }
}
