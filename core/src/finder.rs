//! [`StateFinder`]: which states a function touches, found by running it without changing any
//! state value.

use crate::error::{Error, Result};
use crate::jit::JitOutput;
use crate::module::{Filter, Path};
use crate::state::State;
use crate::trace::with_states;
use crate::trace::ExitPolicy;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// Which accesses to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Usage {
    /// Every touched state, in first-access order.
    #[default]
    All,
    /// States only read (written ones excluded).
    Read,
    /// States written.
    Write,
    /// Both lists: use [`StateFinder::find_both`].
    Both,
}

impl std::str::FromStr for Usage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Usage> {
        match s {
            "all" => Ok(Usage::All),
            "read" => Ok(Usage::Read),
            "write" => Ok(Usage::Write),
            "both" => Ok(Usage::Both),
            other => Err(Error::InvalidOption {
                option: "usage",
                msg: format!("{other:?} is not one of 'all', 'read', 'write', 'both'"),
            }),
        }
    }
}

/// The key of a found state in a dict result: an index, or a name from `key_fn`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateKey {
    /// Position after filtering (the default keys 0, 1, …).
    Index(usize),
    /// A name.
    Name(String),
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateKey::Index(i) => write!(f, "{i}"),
            StateKey::Name(n) => write!(f, "{n}"),
        }
    }
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateKey::Index(i) => write!(f, "{i}"),
            StateKey::Name(n) => write!(f, "{n:?}"),
        }
    }
}

impl From<usize> for StateKey {
    fn from(i: usize) -> Self {
        StateKey::Index(i)
    }
}
impl From<&str> for StateKey {
    fn from(s: &str) -> Self {
        StateKey::Name(s.to_string())
    }
}

/// Found states keyed by [`StateKey`] (the `return_type='dict'` form).
pub type FoundStates = BTreeMap<StateKey, State>;

/// `{read, write}` lists for [`Usage::Both`].
#[derive(Clone, Debug)]
pub struct ReadWrite<T> {
    /// States only read.
    pub read: T,
    /// States written.
    pub write: T,
}

type KeyFn = Arc<dyn Fn(usize, &State) -> Option<String> + Send + Sync>;

/// Discovers the states a function uses, by running it in a frame that restores every state.
/// The function returns a tree of tensors or a `Result` of one; its error (or a shape error or
/// panic inside it) is the finder's error.
///
/// ```
/// use stategrad_core::{ParamState, State, StateFinder, Tensor, Usage};
/// let scale = ParamState::new(Tensor::scalar(1.5f32)).named("scale");
/// let cache = State::new(Tensor::scalar(0.0f32)).named("cache");
/// let (s, c) = (scale.clone(), cache.clone());
/// let energy = move |x: Tensor| {
///     let y = &x * &s.value();
///     c.set_value(y.sum());
///     y.square().sum()
/// };
/// let found = StateFinder::new(energy).filter(ParamState).find(Tensor::ones(&[2])).unwrap();
/// assert_eq!(found.len(), 1);
/// assert_eq!(cache.value().item().unwrap(), 0.0); // nothing changed
///
/// let failing = |x: Tensor| -> stategrad_core::Result<Tensor> { x.try_matmul(&x.sum()) };
/// assert!(StateFinder::new(failing).find(Tensor::ones(&[2])).is_err());
/// ```
pub struct StateFinder<F> {
    f: F,
    filter: Filter,
    usage: Usage,
    key_fn: Option<KeyFn>,
}

impl<F> StateFinder<F> {
    /// A finder over `f` with no filter, usage `all`.
    pub fn new(f: F) -> Self {
        StateFinder {
            f,
            filter: Filter::Everything,
            usage: Usage::All,
            key_fn: None,
        }
    }

    /// Report only states matching `filter` (the path given to predicates is empty).
    pub fn filter(mut self, filter: impl Into<Filter>) -> Self {
        self.filter = filter.into();
        self
    }

    /// Which accesses to report.
    pub fn usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }

    /// Name dict keys: `key_fn(index, state)`; a missing or duplicate key falls back to the
    /// state's name (`state_{i}` for an unnamed state), with `_1`, `_2`, … added until unused.
    pub fn key_fn(
        mut self,
        f: impl Fn(usize, &State) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.key_fn = Some(Arc::new(f));
        self
    }

    /// Run `f(args)` with every state restored afterwards; touched states with read/write flags.
    fn trace<A, O>(&self, args: A) -> Result<Vec<(State, bool)>>
    where
        F: Fn(A) -> O,
        O: JitOutput,
    {
        let (_, touched) = with_states(HashMap::new(), ExitPolicy::RestoreAll, || {
            (self.f)(args).into_result().map(drop)
        })?;
        Ok(touched
            .into_iter()
            .filter(|(s, _)| self.filter.matches(&Path::new(), s))
            .map(|(s, a)| (s, a.written))
            .collect())
    }

    fn select(&self, found: &[(State, bool)], usage: Usage) -> Vec<State> {
        found
            .iter()
            .filter(|(_, w)| match usage {
                Usage::Read => !*w,
                Usage::Write => *w,
                _ => true,
            })
            .map(|(s, _)| s.clone())
            .collect()
    }

    fn keyed(&self, states: Vec<State>) -> FoundStates {
        let Some(key_fn) = &self.key_fn else {
            return states
                .into_iter()
                .enumerate()
                .map(|(i, s)| (StateKey::Index(i), s))
                .collect();
        };
        let mut used = HashSet::new();
        let mut out = BTreeMap::new();
        for (i, s) in states.into_iter().enumerate() {
            // As the reference: a free key_fn key is kept; otherwise the base is the state's name
            // (or `state_{i}` without one), suffixed `_1`, `_2`, … until unused.
            let key = match key_fn(i, &s) {
                Some(k) if !used.contains(&k) => k,
                _ => {
                    let base = match s.name() {
                        Some(n) if !n.is_empty() => n.to_string(),
                        _ => format!("state_{i}"),
                    };
                    let mut key = base.clone();
                    let mut n = 1;
                    while used.contains(&key) {
                        key = format!("{base}_{n}");
                        n += 1;
                    }
                    key
                }
            };
            used.insert(key.clone());
            out.insert(StateKey::Name(key), s);
        }
        out
    }

    /// The found states as a dict (the default `return_type`).
    pub fn find<A, O>(&self, args: A) -> Result<FoundStates>
    where
        F: Fn(A) -> O,
        O: JitOutput,
    {
        Ok(self.keyed(self.find_list(args)?))
    }

    /// The found states as a list (`return_type='list'` or `'tuple'`).
    pub fn find_list<A, O>(&self, args: A) -> Result<Vec<State>>
    where
        F: Fn(A) -> O,
        O: JitOutput,
    {
        if self.usage == Usage::Both {
            return Err(Error::InvalidOption {
                option: "usage",
                msg: "usage 'both' gives two collections: call find_both".into(),
            });
        }
        let found = self.trace(args)?;
        Ok(self.select(&found, self.usage))
    }

    /// `{read: …, write: …}` dicts (`usage='both'`).
    pub fn find_both<A, O>(&self, args: A) -> Result<ReadWrite<FoundStates>>
    where
        F: Fn(A) -> O,
        O: JitOutput,
    {
        let found = self.trace(args)?;
        Ok(ReadWrite {
            read: self.keyed(self.select(&found, Usage::Read)),
            write: self.keyed(self.select(&found, Usage::Write)),
        })
    }
}
