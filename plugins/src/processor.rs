//! The [`GradientProcessor`] contract (optax's `init`/`update` over the whole gradient set), its
//! state, the stateful runner, and the combinators [`identity`], [`chain`] and [`masked`].

use crate::gradset::{GradSet, LabelledTree};
use stategrad_core::{Error, Result, Tensor};
use std::fmt;
use std::sync::{Arc, Mutex};

/// The state a processor carries from one step to the next (a step counter, accumulators).
///
/// Built-in processors use `Empty` (stateless), `Count` (the noise step) and `Chain` (one state
/// per stage); `Tensors` is for processors of your own (momentum, running averages).
#[derive(Clone, Debug, Default)]
pub enum ProcState {
    /// No state.
    #[default]
    Empty,
    /// A step counter.
    Count(u64),
    /// Tensors, typically one per gradient.
    Tensors(Vec<Tensor>),
    /// One state per stage of a [`chain`] (or the inner processor of [`masked`]).
    Chain(Vec<ProcState>),
}

impl ProcState {
    /// The counter of a `Count` state (an `Empty` one becomes `Count(0)`); a typed error naming
    /// `processor` for any other state.
    pub fn counter_mut(&mut self, processor: &str) -> Result<&mut u64> {
        if matches!(self, ProcState::Empty) {
            *self = ProcState::Count(0);
        }
        if !matches!(self, ProcState::Count(_)) {
            return Err(wrong_state(processor, "Count", self));
        }
        match self {
            ProcState::Count(c) => Ok(c),
            _ => Err(wrong_state(processor, "Count", self)),
        }
    }

    /// The stage states of a `Chain` state of length `n` (an `Empty` one becomes `n` empty
    /// states); a typed error naming `processor` for any other state.
    pub fn chain_mut(&mut self, processor: &str, n: usize) -> Result<&mut Vec<ProcState>> {
        if matches!(self, ProcState::Empty) {
            *self = ProcState::Chain(vec![ProcState::Empty; n]);
        }
        if !matches!(self, ProcState::Chain(v) if v.len() == n) {
            return Err(wrong_state(processor, &format!("Chain of {n}"), self));
        }
        match self {
            ProcState::Chain(v) => Ok(v),
            _ => Err(wrong_state(processor, &format!("Chain of {n}"), self)),
        }
    }

    /// True if this state carries anything from one step to the next (a counter, tensors, or a
    /// stage holding either): a processor with such a state is stateful.
    pub fn is_stateful(&self) -> bool {
        match self {
            ProcState::Empty => false,
            ProcState::Count(_) | ProcState::Tensors(_) => true,
            ProcState::Chain(v) => v.iter().any(ProcState::is_stateful),
        }
    }

    fn kind(&self) -> String {
        match self {
            ProcState::Empty => "Empty".into(),
            ProcState::Count(_) => "Count".into(),
            ProcState::Tensors(v) => format!("Tensors of {}", v.len()),
            ProcState::Chain(v) => format!("Chain of {}", v.len()),
        }
    }
}

fn wrong_state(processor: &str, want: &str, got: &ProcState) -> Error {
    Error::PluginParam {
        plugin: processor.to_string(),
        name: "state".into(),
        msg: format!("expected a {want} state, got {}", got.kind()),
    }
}

/// A gradient transformation over the whole gradient set, in the optax model: `init` makes the
/// state from the first gradients, `update` maps gradients to processed gradients and advances
/// the state.
///
/// `update` must return the same entries (number, order, labels, shapes, dtypes) it was given;
/// [`update_checked`] (used by every runner in this crate) reports anything else as
/// [`Error::MalformedPluginResult`]. Processors are shared between threads (`Send + Sync`);
/// per-run state lives in the [`ProcState`], not in `self`.
///
/// ```
/// use stategrad_core::{Result, Tensor};
/// use stategrad_plugins::{GradSet, GradientProcessor, ProcState};
///
/// /// Adds `c` to every gradient.
/// struct Shift(f64);
/// impl GradientProcessor for Shift {
///     fn name(&self) -> &str { "shift" }
///     fn update(&self, grads: GradSet, _: &mut ProcState) -> Result<GradSet> {
///         grads.try_map(|_, g| g.try_add_scalar(self.0))
///     }
/// }
/// let set = GradSet::from_tree(&Tensor::new([1.0f32, 2.0]));
/// let out = Shift(1.0).update(set, &mut ProcState::Empty).unwrap();
/// assert_eq!(out.tensors().next().unwrap().to_string(), "[2. 3.]");
/// ```
pub trait GradientProcessor: Send + Sync {
    /// The processor's name (used in errors and the registry).
    fn name(&self) -> &str;
    /// The initial state for gradients like `grads` (stateless processors keep the default).
    fn init(&self, grads: &GradSet) -> ProcState {
        let _ = grads;
        ProcState::Empty
    }
    /// Process one step's gradients.
    fn update(&self, grads: GradSet, state: &mut ProcState) -> Result<GradSet>;
}

impl fmt::Debug for dyn GradientProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GradientProcessor({})", self.name())
    }
}

/// A shared processor, as the constructors of this crate return it.
pub type Processor = Arc<dyn GradientProcessor>;

/// Run `processor.update` and check that it returned the entries it was given (same number,
/// labels, shapes and dtypes); anything else is [`Error::MalformedPluginResult`].
pub fn update_checked(
    processor: &dyn GradientProcessor,
    grads: GradSet,
    state: &mut ProcState,
) -> Result<GradSet> {
    let before: Vec<(String, Vec<usize>, stategrad_core::DType)> = grads
        .iter()
        .map(|(l, t)| (l.to_string(), t.shape().to_vec(), t.dtype()))
        .collect();
    let out = processor.update(grads, state)?;
    let malformed = |msg: String| Error::MalformedPluginResult {
        plugin: processor.name().to_string(),
        msg,
    };
    if out.len() != before.len() {
        return Err(malformed(format!(
            "{} gradients for {} given",
            out.len(),
            before.len()
        )));
    }
    for ((l, shape, dtype), (l2, t)) in before.iter().zip(out.iter()) {
        if l != l2 {
            return Err(malformed(format!("entry `{l}` came back labelled `{l2}`")));
        }
        if t.shape() != shape.as_slice() || t.dtype() != *dtype {
            return Err(malformed(format!(
                "gradient {l} came back with shape {} and dtype {}, was {} and {}",
                t.shape_display(),
                t.dtype().name(),
                stategrad_core::ShapeDisplay(shape.clone()),
                dtype.name()
            )));
        }
    }
    Ok(out)
}

/// Apply `processor` once to any labelled gradient container (a path-keyed map, a `Vec`, a
/// tuple, …), with explicit state: initialise it with `processor.init` the first time (or pass
/// [`ProcState::Empty`], which every built-in accepts as fresh).
///
/// ```
/// use stategrad_core::{path, Path, Tensor};
/// use stategrad_plugins::{apply, clip_by_global_norm, ProcState};
/// use std::collections::BTreeMap;
///
/// let grads: BTreeMap<Path, Tensor> = [
///     (path!("bias"), Tensor::new([-2.0f32])),
///     (path!("weight"), Tensor::new([[-3.0f32]])),
/// ].into_iter().collect();
/// let clipped = apply(&*clip_by_global_norm(0.1), &mut ProcState::Empty, &grads).unwrap();
/// assert_eq!(clipped[&path!("bias")].to_string(), "[-0.05547]");
/// ```
pub fn apply<T: LabelledTree>(
    processor: &dyn GradientProcessor,
    state: &mut ProcState,
    grads: &T,
) -> Result<T> {
    let set = GradSet::from_tree(grads);
    let out = update_checked(processor, set, state)?;
    out.to_tree(grads)
}

/// A processor together with its state, safe to share between threads: the state is
/// initialised on the first call and advanced by each one.
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_plugins::{add_noise, StatefulProcessor};
/// let noisy = StatefulProcessor::new(add_noise(0.1, 7));
/// let g = Tensor::zeros(&[3]);
/// let a = noisy.apply(&g).unwrap();
/// let b = noisy.apply(&g).unwrap(); // a later step: different noise
/// assert!(!a.allclose(&b, 0.0, 0.0));
/// noisy.reset();
/// assert!(noisy.apply(&g).unwrap().allclose(&a, 0.0, 0.0)); // same seed, same first step
/// ```
pub struct StatefulProcessor {
    processor: Processor,
    state: Mutex<Option<ProcState>>,
}

impl StatefulProcessor {
    /// Wrap a processor, with no state yet.
    pub fn new(processor: Processor) -> StatefulProcessor {
        StatefulProcessor {
            processor,
            state: Mutex::new(None),
        }
    }

    /// The processor.
    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    /// A copy of the current state (`None` before the first call).
    pub fn state(&self) -> Option<ProcState> {
        self.lock().clone()
    }

    /// Forget the state: the next call starts afresh.
    pub fn reset(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ProcState>> {
        // A panic in a processor only loses that step's state update.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Process a gradient set, advancing the state.
    ///
    /// Inside a `jit` trace a stateful processor (see [`ProcState::is_stateful`]) is an
    /// [`Error::Unsupported`]: its state lives on the host, so the trace would run it once and
    /// every replay would reuse that step's result (the same noise, a counter stuck at 1). A
    /// failed update leaves the state as it was.
    ///
    /// ```
    /// use stategrad_core::{jit, Error, Tensor};
    /// use stategrad_plugins::{add_noise, scale, StatefulProcessor};
    /// let noisy = StatefulProcessor::new(add_noise(0.1, 7));
    /// let f = jit(|g: Tensor| noisy.apply(&g));
    /// assert!(matches!(f.call(Tensor::zeros(&[3])), Err(Error::Unsupported(m)) if m.contains("inside jit")));
    /// let scaled = StatefulProcessor::new(scale(2.0)); // stateless: fine under jit
    /// let f = jit(|g: Tensor| scaled.apply(&g).unwrap());
    /// assert_eq!(f.call(Tensor::ones(&[2])).unwrap().to_string(), "[2. 2.]");
    /// ```
    pub fn apply_set(&self, grads: GradSet) -> Result<GradSet> {
        let mut guard = self.lock();
        let mut state = match guard.as_ref() {
            Some(s) => s.clone(),
            None => self.processor.init(&grads),
        };
        if stategrad_core::jit::in_jit_trace() && state.is_stateful() {
            return Err(Error::Unsupported(format!(
                "the stateful gradient processor `{}` inside jit: its state lives on the host, \
                 so every replay would repeat the traced step; apply it outside the jitted \
                 function",
                self.processor.name()
            )));
        }
        // Updated on a copy, so that a failing or panicking processor leaves no half-updated
        // state behind.
        let out = update_checked(&*self.processor, grads, &mut state)?;
        *guard = Some(state);
        Ok(out)
    }

    /// Process any labelled gradient container, advancing the state.
    pub fn apply<T: LabelledTree>(&self, grads: &T) -> Result<T> {
        self.apply_set(GradSet::from_tree(grads))?.to_tree(grads)
    }
}

impl fmt::Debug for StatefulProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatefulProcessor")
            .field("processor", &self.processor.name())
            .field("state", &self.state())
            .finish()
    }
}

// ------------------------------------------------------------------ combinators

/// The processor that changes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl GradientProcessor for Identity {
    fn name(&self) -> &str {
        "identity"
    }
    fn update(&self, grads: GradSet, _: &mut ProcState) -> Result<GradSet> {
        Ok(grads)
    }
}

/// The processor that changes nothing.
pub fn identity() -> Processor {
    Arc::new(Identity)
}

/// Stages applied in order, each with its own state (`ProcState::Chain`).
pub struct Chain {
    stages: Vec<Processor>,
    name: String,
}

impl Chain {
    /// The stages.
    pub fn stages(&self) -> &[Processor] {
        &self.stages
    }
}

impl GradientProcessor for Chain {
    fn name(&self) -> &str {
        &self.name
    }
    fn init(&self, grads: &GradSet) -> ProcState {
        ProcState::Chain(self.stages.iter().map(|p| p.init(grads)).collect())
    }
    fn update(&self, mut grads: GradSet, state: &mut ProcState) -> Result<GradSet> {
        let states = state.chain_mut(&self.name, self.stages.len())?;
        for (p, s) in self.stages.iter().zip(states.iter_mut()) {
            grads = update_checked(&**p, grads, s)?;
        }
        Ok(grads)
    }
}

/// Apply `stages` one after the other (`optax.chain`); an empty chain is the identity.
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_plugins::{chain, clip_by_value, scale, StatefulProcessor};
/// let p = StatefulProcessor::new(chain(vec![scale(10.0), clip_by_value(-1.0, 1.0)]));
/// assert_eq!(p.apply(&Tensor::new([0.05f32, 0.5])).unwrap().to_string(), "[0.5 1. ]");
/// ```
pub fn chain(stages: Vec<Processor>) -> Processor {
    let name = format!(
        "chain({})",
        stages
            .iter()
            .map(|p| p.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Arc::new(Chain { stages, name })
}

/// Apply an inner processor only to the gradients whose label the predicate selects; the others
/// pass through untouched. The inner processor sees (and its global quantities cover) only the
/// selected gradients.
pub struct Masked {
    inner: Processor,
    select: Box<dyn Fn(&str) -> bool + Send + Sync>,
    name: String,
}

impl GradientProcessor for Masked {
    fn name(&self) -> &str {
        &self.name
    }
    fn init(&self, grads: &GradSet) -> ProcState {
        let (sub, _) = self.split(grads.clone());
        ProcState::Chain(vec![self.inner.init(&sub)])
    }
    fn update(&self, grads: GradSet, state: &mut ProcState) -> Result<GradSet> {
        let states = state.chain_mut(&self.name, 1)?;
        let (sub, positions) = self.split(grads.clone());
        let processed = update_checked(&*self.inner, sub, &mut states[0])?;
        let mut entries = grads.into_entries();
        for (pos, (_, t)) in positions.into_iter().zip(processed) {
            entries[pos].1 = t;
        }
        Ok(GradSet::from_entries(entries))
    }
}

impl Masked {
    /// The selected sub-set and the positions of its entries in the full set.
    fn split(&self, grads: GradSet) -> (GradSet, Vec<usize>) {
        let mut positions = Vec::new();
        let mut sub = GradSet::new();
        for (i, (l, t)) in grads.into_iter().enumerate() {
            if (self.select)(&l) {
                positions.push(i);
                sub.push(l, t);
            }
        }
        (sub, positions)
    }
}

/// Apply `inner` only to gradients whose label satisfies `select` (`optax.masked`).
///
/// ```
/// use stategrad_core::{path, Path, Tensor};
/// use stategrad_plugins::{masked, scale, StatefulProcessor};
/// use std::collections::BTreeMap;
/// let grads: BTreeMap<Path, Tensor> = [
///     (path!("bias"), Tensor::new([1.0f32])),
///     (path!("weight"), Tensor::new([1.0f32])),
/// ].into_iter().collect();
/// // Scale only the weights.
/// let p = StatefulProcessor::new(masked(scale(0.5), |label: &str| label.contains("weight")));
/// let out = p.apply(&grads).unwrap();
/// assert_eq!(out[&path!("bias")].to_string(), "[1.]");
/// assert_eq!(out[&path!("weight")].to_string(), "[0.5]");
/// ```
pub fn masked(
    inner: Processor,
    select: impl Fn(&str) -> bool + Send + Sync + 'static,
) -> Processor {
    let name = format!("masked({})", inner.name());
    Arc::new(Masked {
        inner,
        select: Box::new(select),
        name,
    })
}
