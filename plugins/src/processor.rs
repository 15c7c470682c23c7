//! The [`GradientProcessor`] contract (optax's `init`/`update` over the whole gradient set, with
//! the parameters), its object-safe face [`DynProcessor`] and opaque [`ProcState`], the stateful
//! runner, and the combinators [`identity`], [`chain`] and [`masked`].

use crate::gradset::{GradSet, LabelledTree};
use stategrad_core::{Error, Path, Result, State};
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

// ------------------------------------------------------------------ the typed trait

/// A gradient transformation over the whole gradient set, in the optax model: `init` makes the
/// processor's own [`State`](GradientProcessor::State) from the first gradients, `update` maps
/// gradients to processed gradients and advances the state. Both see the parameters the
/// gradients belong to when the caller has them (`params`: one entry per gradient, same labels
/// in the same order), as optax's `update(updates, state, params=None)`.
///
/// `update` must return the same entries (number, order, labels, shapes, dtypes) it was given;
/// [`update_checked`] (used by every runner in this crate) reports anything else as
/// [`Error::MalformedPluginResult`]. Processors are shared between threads (`Send + Sync`);
/// per-run state lives in the state, not in `self`.
///
/// Every `GradientProcessor` is a [`DynProcessor`] (a blanket impl), which is what [`chain`],
/// [`masked`], the [`Registry`](crate::Registry) and the runners take: `Arc::new(p) as
/// Processor`.
///
/// A stateless processor keeps `State = ()` and the default `init`:
///
/// ```
/// use stategrad_core::{Result, Tensor};
/// use stategrad_plugins::{GradSet, GradientProcessor};
///
/// /// Adds `c` to every gradient.
/// struct Shift(f64);
/// impl GradientProcessor for Shift {
///     type State = ();
///     fn name(&self) -> &str { "shift" }
///     fn update(&self, grads: GradSet, _: &mut (), _: Option<&GradSet>) -> Result<GradSet> {
///         grads.try_map(|_, g| g.try_add_scalar(self.0))
///     }
/// }
/// let set = GradSet::from_tree(&Tensor::new([1.0f32, 2.0]));
/// let out = Shift(1.0).update(set, &mut (), None).unwrap();
/// assert_eq!(out.tensors().next().unwrap().to_string(), "[2. 3.]");
/// ```
///
/// A stateful one names its state type (see the crate docs for a momentum example).
pub trait GradientProcessor: Send + Sync + 'static {
    /// What the processor carries from one step to the next (`()` for none). `Default` is the
    /// state before `init` has sized it; `init` is what the runners call.
    type State: Clone + Default + Send + Sync + 'static;

    /// The processor's name (used in errors and the registry).
    fn name(&self) -> &str;

    /// The initial state for gradients like `grads` (and their parameters, when given). The
    /// default is `State::default()`.
    fn init(&self, grads: &GradSet, params: Option<&GradSet>) -> Result<Self::State> {
        let _ = (grads, params);
        Ok(Self::State::default())
    }

    /// Process one step's gradients, advancing `state`. `params`, when given, has one entry per
    /// gradient with the same label ([`update_checked`] checks this).
    fn update(
        &self,
        grads: GradSet,
        state: &mut Self::State,
        params: Option<&GradSet>,
    ) -> Result<GradSet>;

    /// True if the state carries anything from one step to the next. `jit` refuses stateful
    /// processors inside a trace (see [`StatefulProcessor::apply_set`]). The default: the state
    /// type is not zero-sized (`()` and other empty types are stateless).
    fn is_stateful(&self) -> bool {
        std::mem::size_of::<Self::State>() != 0
    }
}

// ------------------------------------------------------------------ the opaque state

/// A state behind a box: any `Clone + Send + Sync` value, cloneable as a whole.
trait AnyState: Any + Send + Sync {
    fn clone_box(&self) -> Box<dyn AnyState>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn type_name(&self) -> &'static str;
}

impl<S: Clone + Send + Sync + 'static> AnyState for S {
    fn clone_box(&self) -> Box<dyn AnyState> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<S>()
    }
}

/// The state of a processor behind a [`Processor`] (a `dyn` [`DynProcessor`]): its
/// [`GradientProcessor::State`] in a box, or nothing yet.
///
/// [`ProcState::default`] is a fresh state: every runner initialises it with the processor's
/// `init` on first use. Read the typed state back with [`ProcState::downcast_ref`]; handing a
/// state of one processor to another whose state type differs is an [`Error::PluginParam`]
/// (parameter `state`), never a panic.
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_plugins::{add_noise, apply, ProcState};
/// let noisy = add_noise(0.1, 7);
/// let mut state = ProcState::default();
/// apply(&*noisy, &mut state, &Tensor::zeros(&[2])).unwrap();
/// assert_eq!(state.downcast_ref::<u64>(), Some(&1)); // add_noise counts its steps
/// ```
#[derive(Default)]
pub struct ProcState {
    inner: Option<(Box<dyn AnyState>, Arc<str>)>,
}

impl Clone for ProcState {
    fn clone(&self) -> Self {
        ProcState {
            inner: self
                .inner
                .as_ref()
                .map(|(s, owner)| ((**s).clone_box(), owner.clone())),
        }
    }
}

impl fmt::Debug for ProcState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => write!(f, "ProcState(fresh)"),
            Some((s, owner)) => write!(f, "ProcState({} of `{owner}`)", (**s).type_name()),
        }
    }
}

impl ProcState {
    /// A fresh state (the processor's `init` fills it on first use).
    pub fn fresh() -> ProcState {
        ProcState::default()
    }

    /// A state holding `state`, as made by the processor named `owner`.
    pub fn new<S: Clone + Send + Sync + 'static>(state: S, owner: &str) -> ProcState {
        ProcState {
            inner: Some((Box::new(state), owner.into())),
        }
    }

    /// True before the first `init`.
    pub fn is_fresh(&self) -> bool {
        self.inner.is_none()
    }

    /// The typed state, if it is an `S`.
    pub fn downcast_ref<S: 'static>(&self) -> Option<&S> {
        (*self.inner.as_ref()?.0).as_any().downcast_ref()
    }

    /// The typed state, mutably, if it is an `S`.
    pub fn downcast_mut<S: 'static>(&mut self) -> Option<&mut S> {
        (*self.inner.as_mut()?.0).as_any_mut().downcast_mut()
    }

    /// The Rust type name of the state (`None` while fresh).
    pub fn type_name(&self) -> Option<&'static str> {
        self.inner.as_ref().map(|(s, _)| (**s).type_name())
    }

    /// The name of the processor that made the state (`None` while fresh).
    pub fn owner(&self) -> Option<&str> {
        self.inner.as_ref().map(|(_, o)| &**o)
    }

    /// The typed state for `processor`, initialised with `init` if fresh; a typed error if it
    /// holds another type.
    fn typed<P: GradientProcessor>(
        &mut self,
        processor: &P,
        grads: &GradSet,
        params: Option<&GradSet>,
    ) -> Result<&mut P::State> {
        if self.inner.is_none() {
            *self = ProcState::new(processor.init(grads, params)?, processor.name());
        }
        let (s, owner) = self.inner.as_mut().expect("initialised above");
        let got = (**s).type_name();
        let owner = owner.clone();
        (**s)
            .as_any_mut()
            .downcast_mut::<P::State>()
            .ok_or_else(|| Error::PluginParam {
                plugin: processor.name().to_string(),
                name: "state".into(),
                msg: format!(
                    "expected a state of type {}, got a {got} made by `{owner}`",
                    std::any::type_name::<P::State>()
                ),
            })
    }
}

// ------------------------------------------------------------------ the dyn trait

/// The object-safe face of every [`GradientProcessor`] (blanket-implemented), with the state
/// boxed in a [`ProcState`]. [`Processor`] is an `Arc<dyn DynProcessor>`; call its methods
/// through the inherent `name`, `init`, `update` and `is_stateful` of `dyn DynProcessor`.
///
/// You do not implement this trait: implement [`GradientProcessor`].
pub trait DynProcessor: Send + Sync {
    /// [`GradientProcessor::name`].
    fn dyn_name(&self) -> &str;
    /// [`GradientProcessor::init`], boxed.
    fn dyn_init(&self, grads: &GradSet, params: Option<&GradSet>) -> Result<ProcState>;
    /// [`GradientProcessor::update`] on the boxed state (initialised first if fresh).
    fn dyn_update(
        &self,
        grads: GradSet,
        state: &mut ProcState,
        params: Option<&GradSet>,
    ) -> Result<GradSet>;
    /// [`GradientProcessor::is_stateful`].
    fn dyn_is_stateful(&self) -> bool;
    /// The Rust type name of the processor's state.
    fn state_type_name(&self) -> &'static str;
}

impl<P: GradientProcessor> DynProcessor for P {
    fn dyn_name(&self) -> &str {
        self.name()
    }
    fn dyn_init(&self, grads: &GradSet, params: Option<&GradSet>) -> Result<ProcState> {
        Ok(ProcState::new(self.init(grads, params)?, self.name()))
    }
    fn dyn_update(
        &self,
        grads: GradSet,
        state: &mut ProcState,
        params: Option<&GradSet>,
    ) -> Result<GradSet> {
        let typed = state.typed(self, &grads, params)?;
        self.update(grads, typed, params)
    }
    fn dyn_is_stateful(&self) -> bool {
        GradientProcessor::is_stateful(self)
    }
    fn state_type_name(&self) -> &'static str {
        std::any::type_name::<P::State>()
    }
}

impl dyn DynProcessor + '_ {
    /// The processor's name.
    pub fn name(&self) -> &str {
        self.dyn_name()
    }
    /// The initial state, boxed.
    pub fn init(&self, grads: &GradSet, params: Option<&GradSet>) -> Result<ProcState> {
        self.dyn_init(grads, params)
    }
    /// One step, unchecked (prefer [`update_checked`]).
    pub fn update(
        &self,
        grads: GradSet,
        state: &mut ProcState,
        params: Option<&GradSet>,
    ) -> Result<GradSet> {
        self.dyn_update(grads, state, params)
    }
    /// True if the processor carries state from one step to the next.
    pub fn is_stateful(&self) -> bool {
        self.dyn_is_stateful()
    }
}

impl fmt::Debug for dyn DynProcessor + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GradientProcessor({})", self.name())
    }
}

/// A shared processor, as the constructors of this crate return it.
pub type Processor = Arc<dyn DynProcessor>;

// ------------------------------------------------------------------ running

/// A typed error about the `params` handed to a processor.
fn params_error(processor: &str, msg: String) -> Error {
    Error::PluginParam {
        plugin: processor.to_string(),
        name: "params".into(),
        msg,
    }
}

/// Check that `params` has one entry per gradient, with the same label and shape.
fn check_params(processor: &str, grads: &GradSet, params: &GradSet) -> Result<()> {
    if params.len() != grads.len() {
        return Err(params_error(
            processor,
            format!("{} parameters for {} gradients", params.len(), grads.len()),
        ));
    }
    for ((l, g), (lp, p)) in grads.iter().zip(params.iter()) {
        if l != lp {
            return Err(params_error(
                processor,
                format!("gradient {l} is paired with parameter {lp}"),
            ));
        }
        if g.shape() != p.shape() {
            return Err(params_error(
                processor,
                format!(
                    "gradient {l} has shape {} but its parameter {}",
                    g.shape_display(),
                    p.shape_display()
                ),
            ));
        }
    }
    Ok(())
}

/// Run `processor.update` and check that it returned the entries it was given (same number,
/// labels, shapes and dtypes); anything else is [`Error::MalformedPluginResult`]. `params`, when
/// given, must pair every gradient with a parameter of the same label and shape (else
/// [`Error::PluginParam`] for the parameter `params`). A fresh `state` is initialised first.
pub fn update_checked(
    processor: &dyn DynProcessor,
    grads: GradSet,
    state: &mut ProcState,
    params: Option<&GradSet>,
) -> Result<GradSet> {
    if let Some(p) = params {
        check_params(processor.name(), &grads, p)?;
    }
    let before: Vec<(Path, Vec<usize>, stategrad_core::DType)> = grads
        .iter()
        .map(|(l, t)| (l.clone(), t.shape().to_vec(), t.dtype()))
        .collect();
    // The update runs on a copy (its tensors are shared, not copied), committed only when the
    // whole update succeeded: a failing stage, or a processor failing halfway through its
    // gradients, leaves the caller's state as it was.
    let mut next = state.clone();
    let out = processor.update(grads, &mut next, params)?;
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
            return Err(malformed(format!("entry {l} came back labelled {l2}")));
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
    *state = next;
    Ok(out)
}

/// Apply `processor` once to any labelled gradient container (a path-keyed map, a `Vec`, a
/// tuple, …), with explicit state: pass a fresh [`ProcState::default`] the first time (it is
/// initialised with the processor's `init`), then the same state at every step.
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
/// let clipped = apply(&*clip_by_global_norm(0.1), &mut ProcState::default(), &grads).unwrap();
/// assert_eq!(clipped[&path!("bias")].to_string(), "[-0.05547]");
/// ```
pub fn apply<T: LabelledTree>(
    processor: &dyn DynProcessor,
    state: &mut ProcState,
    grads: &T,
) -> Result<T> {
    let set = GradSet::from_tree(grads);
    let out = update_checked(processor, set, state, None)?;
    out.to_tree(grads)
}

/// [`apply`] with the parameters the gradients belong to (a container labelled like `grads`,
/// e.g. the parameter values under the same paths).
///
/// ```
/// use stategrad_core::{path, Path, Tensor};
/// use stategrad_plugins::{add_decayed_weights, apply_with_params, ProcState};
/// use std::collections::BTreeMap;
///
/// let grads: BTreeMap<Path, Tensor> = [(path!("w"), Tensor::new([1.0f32, 1.0]))].into_iter().collect();
/// let params: BTreeMap<Path, Tensor> = [(path!("w"), Tensor::new([10.0f32, -10.0]))].into_iter().collect();
/// let out = apply_with_params(&*add_decayed_weights(0.1), &mut ProcState::default(), &grads, &params).unwrap();
/// assert_eq!(out[&path!("w")].to_string(), "[2. 0.]");
/// ```
pub fn apply_with_params<T: LabelledTree, Q: LabelledTree>(
    processor: &dyn DynProcessor,
    state: &mut ProcState,
    grads: &T,
    params: &Q,
) -> Result<T> {
    let set = GradSet::from_tree(grads);
    let params = GradSet::from_tree(params);
    let out = update_checked(processor, set, state, Some(&params))?;
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
/// assert_eq!(noisy.state().unwrap().downcast_ref::<u64>(), Some(&2));
/// noisy.reset();
/// assert!(noisy.apply(&g).unwrap().allclose(&a, 0.0, 0.0)); // same seed, same first step
/// ```
pub struct StatefulProcessor {
    processor: Processor,
    state: Mutex<ProcState>,
}

impl StatefulProcessor {
    /// Wrap a processor, with no state yet.
    pub fn new(processor: Processor) -> StatefulProcessor {
        StatefulProcessor {
            processor,
            state: Mutex::new(ProcState::default()),
        }
    }

    /// The processor.
    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    /// A copy of the current state (`None` before the first call).
    pub fn state(&self) -> Option<ProcState> {
        let s = self.lock();
        (!s.is_fresh()).then(|| s.clone())
    }

    /// Forget the state: the next call starts afresh.
    pub fn reset(&self) {
        *self.lock() = ProcState::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProcState> {
        // A panic in a processor only loses that step's state update.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Process a gradient set, advancing the state.
    ///
    /// Inside a `jit` trace a stateful processor (see [`GradientProcessor::is_stateful`]) is an
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
        self.apply_set_with_params(grads, None)
    }

    /// [`StatefulProcessor::apply_set`] with the parameters (one per gradient, same labels).
    pub fn apply_set_with_params(
        &self,
        grads: GradSet,
        params: Option<&GradSet>,
    ) -> Result<GradSet> {
        if stategrad_core::jit::in_jit_trace() && self.processor.is_stateful() {
            return Err(Error::Unsupported(format!(
                "the stateful gradient processor `{}` inside jit: its state lives on the host, \
                 so every replay would repeat the traced step; apply it outside the jitted \
                 function",
                self.processor.name()
            )));
        }
        let mut guard = self.lock();
        // Updated on a copy, so that a failing or panicking processor leaves no half-updated
        // state behind.
        let mut state = guard.clone();
        let out = update_checked(&*self.processor, grads, &mut state, params)?;
        *guard = state;
        Ok(out)
    }

    /// Process any labelled gradient container, advancing the state.
    pub fn apply<T: LabelledTree>(&self, grads: &T) -> Result<T> {
        self.apply_set(GradSet::from_tree(grads))?.to_tree(grads)
    }

    /// Process any labelled gradient container together with its parameters (a container
    /// labelled the same way), advancing the state: what [`add_decayed_weights`] needs.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// use stategrad_plugins::{add_decayed_weights, chain, scale, StatefulProcessor};
    /// // optax.chain(add_decayed_weights(0.5), scale(-1.0)): the update of SGD with decay.
    /// let p = StatefulProcessor::new(chain(vec![add_decayed_weights(0.5), scale(-1.0)]));
    /// let g = Tensor::new([1.0f32, 0.0]);
    /// let w = Tensor::new([2.0f32, 4.0]);
    /// assert_eq!(p.apply_with_params(&g, &w).unwrap().to_string(), "[-2. -2.]");
    /// ```
    ///
    /// [`add_decayed_weights`]: crate::add_decayed_weights
    pub fn apply_with_params<T: LabelledTree, Q: LabelledTree>(
        &self,
        grads: &T,
        params: &Q,
    ) -> Result<T> {
        let params = GradSet::from_tree(params);
        self.apply_set_with_params(GradSet::from_tree(grads), Some(&params))?
            .to_tree(grads)
    }
}

impl fmt::Debug for StatefulProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatefulProcessor")
            .field("processor", &self.processor.name())
            .field("state", &*self.lock())
            .finish()
    }
}

// ------------------------------------------------------------------ combinators

/// The processor that changes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl GradientProcessor for Identity {
    type State = ();
    fn name(&self) -> &str {
        "identity"
    }
    fn update(&self, grads: GradSet, _: &mut (), _: Option<&GradSet>) -> Result<GradSet> {
        Ok(grads)
    }
}

/// The processor that changes nothing.
pub fn identity() -> Processor {
    Arc::new(Identity)
}

/// Stages applied in order, each with its own state (the chain's state is one [`ProcState`]
/// per stage); every stage sees the same parameters.
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
    type State = Vec<ProcState>;
    fn name(&self) -> &str {
        &self.name
    }
    fn init(&self, grads: &GradSet, params: Option<&GradSet>) -> Result<Vec<ProcState>> {
        self.stages.iter().map(|p| p.init(grads, params)).collect()
    }
    fn update(
        &self,
        mut grads: GradSet,
        states: &mut Vec<ProcState>,
        params: Option<&GradSet>,
    ) -> Result<GradSet> {
        if states.is_empty() {
            // A default (fresh) chain state: each stage initialises its own on first use.
            states.resize_with(self.stages.len(), ProcState::default);
        }
        if states.len() != self.stages.len() {
            return Err(Error::PluginParam {
                plugin: self.name.clone(),
                name: "state".into(),
                msg: format!(
                    "expected {} stage states, got {}",
                    self.stages.len(),
                    states.len()
                ),
            });
        }
        for (p, s) in self.stages.iter().zip(states.iter_mut()) {
            grads = update_checked(&**p, grads, s, params)?;
        }
        Ok(grads)
    }
    fn is_stateful(&self) -> bool {
        self.stages.iter().any(|p| p.is_stateful())
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

/// A predicate over gradient labels, as [`masked`] takes it.
pub type PathPredicate = Box<dyn Fn(&Path) -> bool + Send + Sync>;

/// Apply an inner processor only to the gradients whose path the predicate selects; the others
/// pass through untouched. The inner processor sees (and its global quantities cover) only the
/// selected gradients, and only their parameters. Its state is the inner processor's.
pub struct Masked {
    inner: Processor,
    select: PathPredicate,
    name: String,
}

impl GradientProcessor for Masked {
    type State = ProcState;
    fn name(&self) -> &str {
        &self.name
    }
    fn init(&self, grads: &GradSet, params: Option<&GradSet>) -> Result<ProcState> {
        let (sub, positions) = self.split(grads.clone());
        let sub_params = params.map(|p| pick(p, &positions));
        self.inner.init(&sub, sub_params.as_ref())
    }
    fn update(
        &self,
        grads: GradSet,
        state: &mut ProcState,
        params: Option<&GradSet>,
    ) -> Result<GradSet> {
        let (sub, positions) = self.split(grads.clone());
        let sub_params = params.map(|p| pick(p, &positions));
        let processed = update_checked(&*self.inner, sub, state, sub_params.as_ref())?;
        let mut entries = grads.into_entries();
        for (pos, (_, t)) in positions.into_iter().zip(processed) {
            entries[pos].1 = t;
        }
        Ok(GradSet::from_entries(entries))
    }
    fn is_stateful(&self) -> bool {
        self.inner.is_stateful()
    }
}

/// The entries of `set` at `positions`.
fn pick(set: &GradSet, positions: &[usize]) -> GradSet {
    positions
        .iter()
        .filter_map(|&i| set.entries().get(i).cloned())
        .collect()
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

/// Apply `inner` only to gradients whose [`Path`] satisfies `select` (`optax.masked`).
///
/// The usual use: weight decay on the weights, not on the biases.
///
/// ```
/// use stategrad_core::{path, Path, Tensor};
/// use stategrad_plugins::{add_decayed_weights, masked, StatefulProcessor};
/// use std::collections::BTreeMap;
/// let grads: BTreeMap<Path, Tensor> = [
///     (path!("bias"), Tensor::new([1.0f32])),
///     (path!("weight"), Tensor::new([1.0f32])),
/// ].into_iter().collect();
/// let params: BTreeMap<Path, Tensor> = [
///     (path!("bias"), Tensor::new([100.0f32])),
///     (path!("weight"), Tensor::new([100.0f32])),
/// ].into_iter().collect();
/// // Decay only the weights.
/// let decay = masked(add_decayed_weights(1e-2), |p: &Path| p.contains(&"weight".into()));
/// let out = StatefulProcessor::new(decay).apply_with_params(&grads, &params).unwrap();
/// assert_eq!(out[&path!("bias")].to_string(), "[1.]");
/// assert_eq!(out[&path!("weight")].to_string(), "[2.]");
/// ```
///
/// To select by a state [`Filter`](stategrad_core::Filter) (kinds, tags, path keys), build the
/// predicate from the states with [`filter_mask`].
pub fn masked(
    inner: Processor,
    select: impl Fn(&Path) -> bool + Send + Sync + 'static,
) -> Processor {
    let name = format!("masked({})", inner.name());
    Arc::new(Masked {
        inner,
        select: Box::new(select),
        name,
    })
}

/// A [`masked`] predicate from a state [`Filter`](stategrad_core::Filter): selects the paths
/// whose state in `states` matches `filter`. A filter tests a `(path, state)` pair (kinds and
/// tags need the state), so it cannot judge a bare label: give it the states the gradients were
/// taken for (what `.grad_states(..)` got, or `module.states(..)`), keyed by the same paths.
///
/// ```
/// use stategrad_core::{path, Filter, ParamState, Path, State, Tensor};
/// use stategrad_plugins::{add_decayed_weights, filter_mask, masked, StatefulProcessor};
/// use std::collections::BTreeMap;
/// let w = ParamState::new(Tensor::new([100.0f32]));
/// let b = ParamState::new(Tensor::new([100.0f32]));
/// let states: BTreeMap<Path, State> =
///     [(path!("bias"), b.clone()), (path!("weight"), w.clone())].into_iter().collect();
/// let decay = masked(add_decayed_weights(1e-2), filter_mask(&states, Filter::path_contains("weight")));
/// let grads: BTreeMap<Path, Tensor> =
///     [(path!("bias"), Tensor::new([1.0f32])), (path!("weight"), Tensor::new([1.0f32]))].into_iter().collect();
/// let values: BTreeMap<Path, Tensor> = states.iter().map(|(p, s)| (p.clone(), s.value())).collect();
/// let out = StatefulProcessor::new(decay).apply_with_params(&grads, &values).unwrap();
/// assert_eq!(out[&path!("bias")].to_string(), "[1.]");
/// assert_eq!(out[&path!("weight")].to_string(), "[2.]");
/// ```
pub fn filter_mask(
    states: &BTreeMap<Path, State>,
    filter: impl Into<stategrad_core::Filter>,
) -> impl Fn(&Path) -> bool + Send + Sync + 'static {
    let filter = filter.into();
    let selected: std::collections::BTreeSet<Path> = states
        .iter()
        .filter(|(p, s)| filter.matches(p, s))
        .map(|(p, _)| p.clone())
        .collect();
    move |p: &Path| selected.contains(p)
}
