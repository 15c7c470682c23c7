//! `jit`: trace a function once per signature, keep its tape, and replay the tape on later calls.
//!
//! The trace is abstract: the function sees tensors with shapes and dtypes but no data, each
//! primitive runs only its abstract rule (`Primitive::abstract_eval`), and operations on
//! constants (a cotangent seed, a draw from a constant key) are staged as steps too, computed
//! once when the tape is compiled. So tracing runs no kernel ([`kernel_calls`] counts them),
//! [`Jit::eval_shape`] computes nothing, and every call, the first included, is a replay.
//!
//! The key is the arguments' shapes, dtypes and static values; the states the function touches
//! are inputs (their shapes are checked on every call: a changed shape retraces, a changed value
//! does not) and the states it writes are outputs, written back after each replay. Reading a
//! traced value inside the function (to branch on it) is an error ([`crate::Error::TracedValueRead`]);
//! use [`Tensor::select`](crate::Tensor::select) / [`where_`](crate::where_) for data-dependent
//! choices. A replay runs only the primitives the outputs need (dead code is dropped) and goes
//! through the same primitives as eager code, so `grad(jit(f))`, `jit(grad(f))` and Jacobians of
//! jitted functions all work.
//!
//! How a replay runs (when no enclosing transform records it):
//! - **Small programs** (values totalling at most 32K elements, every primitive with a slice
//!   kernel) run on one per-thread arena: each value has a fixed slot and each primitive is one
//!   step specialised at compile time ([`stategrad_exec::arena`]). The steps run as closures
//!   at first; after [`NATIVE_AFTER_RUNS`](stategrad_exec::arena::NATIVE_AFTER_RUNS) runs the
//!   program becomes one generated native function (Cranelift; one-element values in registers,
//!   short slots inline, the rest calls into their closures), with the same bits; a loop that
//!   will pass that count gets its code before its first iteration. Written states are
//!   updated **in place** (into the old value's buffer) when the state holds the only reference
//!   to its value: a value anyone kept is never changed. [`Jit::call_loop`] runs many iterations
//!   of such a body on the arena, as one generated function once the body has native code.
//!   Arena programs are shared by structure across the process (at most
//!   [`SHARED_PROGRAM_LIMIT`], see [`clear_shared_programs`]): functions that trace to the same
//!   steps, such as the fresh function of each [`for_loop`] call, share one run count and
//!   one native code.
//! - **Larger programs** run their steps in order; runs of elementwise primitives over one size
//!   and the sums ending them become one fused pass (blocks in L1, chunks over rayon; a product
//!   read once by a sum becomes one multiply-add op, rounded as the two ops). Each value is
//!   dropped right after its last read, and a fused pass writes its output **in place** into the
//!   buffer of an input it reads for the last time when nothing else holds it. GEMMs stay GEMMs.
//!
//! Results equal eager ones (the replay runs the same kernels with the same rounding).

mod control;
pub(crate) mod fuse;
pub(crate) mod lower;
mod program;
mod replay;
mod shared;
mod trace;

pub use crate::prim::kernel_calls;
pub use control::{cond, for_loop, scan};
pub use shared::{clear_shared_programs, SHARED_PROGRAM_LIMIT};

/// Frees the process-wide cache of generated code for fused passes (shared by every jitted
/// function; bounded by [`stategrad_exec::tuning::fused_code_cache_limit`]) and returns how many
/// pass structures it held. Programs keep running: a structure gets its code again once it has
/// done enough work. [`Jit::clear_cache`] frees one function's programs.
///
/// ```
/// use stategrad_core::jit::clear_code_cache;
/// clear_code_cache();
/// assert_eq!(clear_code_cache(), 0);
/// ```
pub fn clear_code_cache() -> usize {
    stategrad_exec::clear_code_cache()
}
pub(crate) use program::{Compiled, Source};
pub(crate) use trace::trace_program;

use crate::error::Result;
use crate::tensor::DType;
use crate::trace::jit_tracing;
use crate::tree::{Args, Tree};
use dashmap::DashMap;
use replay::replay;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// What a jitted function may return: a [`Tree`] of tensors, or a `Result` of one.
pub trait JitOutput {
    /// The tree.
    type Tree: Tree + Clone;
    /// Split off the error.
    fn into_result(self) -> Result<Self::Tree>;
}

impl<T: Tree + Clone> JitOutput for T {
    type Tree = T;
    fn into_result(self) -> Result<T> {
        Ok(self)
    }
}

impl<T: Tree + Clone> JitOutput for Result<T> {
    type Tree = T;
    fn into_result(self) -> Result<T> {
        self
    }
}

/// What a program is compiled for: the arguments' shapes and dtypes and their static values.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
struct Key {
    leaves: Vec<(Vec<usize>, DType)>,
    statics: Vec<String>,
}

/// The shape of one compiled program (see [`Jit::program_stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProgramStats {
    /// Primitives run per replay (after dead-code and common-subexpression elimination).
    pub primitives: usize,
    /// Fused elementwise passes.
    pub fused_passes: usize,
    /// Primitives run inside those passes.
    pub fused_primitives: usize,
    /// Whether replays run on one arena with a slice kernel per primitive (small programs whose
    /// primitives all have one; enclosing transforms still see the primitives one by one).
    pub arena: bool,
    /// Whether that arena program runs as generated native code now (it switches once hot; see
    /// `stategrad_exec::tuning`).
    pub native: bool,
    /// Whether [`Jit::call_loop`] over it runs all its iterations as one generated function
    /// (no dispatch per iteration); generated with the program's own code, at the first loop.
    pub native_loop: bool,
    /// Whether a kernel of it splits its work over the rayon pool; a call from a thread
    /// outside the pool (with no transform open on it) then runs the whole replay on a pool
    /// thread, one hand-off instead of one per kernel, where the pool has more than one thread.
    /// The program's primitives, a custom function's forward closure among them, then run on
    /// that thread, not the caller's.
    pub uses_pool: bool,
}

/// A jitted function; see the [module docs](self).
///
/// ```
/// use stategrad_core::{jit, State, Tensor};
/// let counter = State::new(Tensor::scalar(0.0f32));
/// let step = jit(|x: Tensor| {
///     counter.set_value(counter.value() + 1.0);
///     (&x * 2.0).sum()
/// });
/// assert_eq!(step.call(Tensor::new([1.0f32, 2.0])).unwrap().item().unwrap(), 6.0);
/// assert_eq!(step.call(Tensor::new([3.0f32, 4.0])).unwrap().item().unwrap(), 14.0);
/// assert_eq!(counter.value().item().unwrap(), 2.0);
/// assert_eq!(step.trace_count(), 1);
/// ```
pub struct Jit<F, A, O: JitOutput> {
    f: F,
    /// Compiled programs by argument key (several per key when the states' shapes differ).
    cache: DashMap<Key, Vec<Arc<Compiled<O::Tree>>>>,
    /// Programs in `cache`, at most `limit`; the clock that stamps each use.
    cached: AtomicUsize,
    limit: usize,
    clock: AtomicU64,
    /// The program of the last call: checked first, without building and hashing a key.
    last: parking_lot::Mutex<Option<Arc<Compiled<O::Tree>>>>,
    traces: AtomicUsize,
    _m: PhantomData<fn(A) -> O>,
}

/// True while `jit` traces a function on this thread: code that keeps host-side state between
/// calls (a counter, a random stream) runs only once per trace, and its result is frozen into the
/// compiled program. Such code should keep its state in a [`State`](crate::State) (which the
/// trace sees and every replay updates) or refuse to run here, as stateful gradient processors
/// do.
///
/// ```
/// use stategrad_core::{jit, jit::in_jit_trace, Tensor};
/// assert!(!in_jit_trace());
/// let f = jit(|x: Tensor| {
///     assert!(in_jit_trace());
///     x * 2.0
/// });
/// f.call(Tensor::new([1.0f32])).unwrap();
/// ```
pub fn in_jit_trace() -> bool {
    jit_tracing()
}

/// How many compiled programs a [`Jit`] keeps by default (see [`Jit::with_cache_limit`]).
pub const DEFAULT_CACHE_LIMIT: usize = 256;

/// Compile `f` (see [`Jit`]).
pub fn jit<F: Fn(A) -> O, A, O: JitOutput>(f: F) -> Jit<F, A, O> {
    Jit {
        f,
        cache: DashMap::new(),
        cached: AtomicUsize::new(0),
        limit: DEFAULT_CACHE_LIMIT,
        clock: AtomicU64::new(0),
        last: parking_lot::Mutex::new(None),
        traces: AtomicUsize::new(0),
        _m: PhantomData,
    }
}

impl<F, A: Args, O: JitOutput> Jit<F, A, O>
where
    O::Tree: Send + Sync,
{
    /// How many times the function was traced (once per new key).
    pub fn trace_count(&self) -> usize {
        self.traces.load(Ordering::Relaxed)
    }

    /// For each compiled program (one per traced key): the number of primitives it runs after
    /// dead-code and common-subexpression elimination, how many fused passes it makes, and how
    /// many primitives those passes absorb.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        let mut out = Vec::new();
        for entry in self.cache.iter() {
            for c in entry.value() {
                let (mut passes, mut fused) = (0, 0);
                for i in &c.body.plan {
                    if let fuse::Instr::Fused(g) = i {
                        passes += 1;
                        fused += g.ops.len() + g.sums.len() + g.elided + g.contracted;
                    }
                }
                out.push(ProgramStats {
                    primitives: c.body.steps.len(),
                    fused_passes: passes,
                    fused_primitives: fused,
                    arena: c.small.is_some(),
                    native: c.small.as_ref().is_some_and(|lw| lw.program.is_native()),
                    native_loop: c.loop_is_native(),
                    uses_pool: c.body.uses_pool,
                });
            }
        }
        out
    }

    /// Forget every compiled tape of this function. Its arena programs (and their native code)
    /// go when no other function shares them and [`clear_shared_programs`] has run. The
    /// generated code of large fused passes is shared by every function of the process
    /// (one structure serves every program that has it); [`clear_code_cache`] frees it.
    pub fn clear_cache(&self) {
        self.cache.clear();
        self.cached.store(0, Ordering::Relaxed);
        *self.last.lock() = None;
    }

    /// Keep at most `limit` compiled programs (at least one): when a new signature would exceed
    /// it, the program used least recently is dropped, with its native code (a later call with
    /// that signature traces again). The default is [`DEFAULT_CACHE_LIMIT`]; each program holds
    /// its steps, constants and arena (a few KB for small programs).
    ///
    /// ```
    /// use stategrad_core::{jit, Tensor};
    /// let f = jit(|x: Tensor| &x * 2.0).with_cache_limit(2);
    /// for n in 1..=5 {
    ///     f.call(Tensor::ones(&[n])).unwrap();
    /// }
    /// assert_eq!(f.cache_len(), 2);
    /// f.call(Tensor::ones(&[5])).unwrap(); // still cached
    /// assert_eq!(f.trace_count(), 5);
    /// f.call(Tensor::ones(&[1])).unwrap(); // evicted: traced again
    /// assert_eq!(f.trace_count(), 6);
    /// ```
    pub fn with_cache_limit(mut self, limit: usize) -> Self {
        self.limit = limit.max(1);
        self
    }

    /// The number of compiled programs held now.
    pub fn cache_len(&self) -> usize {
        self.cached.load(Ordering::Relaxed)
    }

    /// Make `c` the program checked first. Calls served through `last` skip the clock, so the
    /// program it replaces is stamped now, as used until this moment.
    fn set_last(&self, c: Arc<Compiled<O::Tree>>) {
        c.used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        if let Some(old) = self.last.lock().replace(c) {
            old.used.store(
                self.clock.fetch_add(1, Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
    }

    /// Make room for one more program: drop least recently used ones (never the last one run).
    fn evict_for_one(&self) {
        let last = self.last.lock().clone();
        while self.cached.load(Ordering::Relaxed) >= self.limit {
            let mut oldest: Option<(u64, Key, *const Compiled<O::Tree>)> = None;
            for entry in self.cache.iter() {
                for c in entry.value() {
                    if last.as_ref().is_some_and(|l| Arc::ptr_eq(l, c)) {
                        continue;
                    }
                    let t = c.used.load(Ordering::Relaxed);
                    if oldest.as_ref().is_none_or(|(o, ..)| t < *o) {
                        oldest = Some((t, entry.key().clone(), Arc::as_ptr(c)));
                    }
                }
            }
            let Some((_, key, ptr)) = oldest else { return };
            if let Some(mut v) = self.cache.get_mut(&key) {
                let before = v.len();
                v.retain(|c| Arc::as_ptr(c) != ptr);
                self.cached.fetch_sub(before - v.len(), Ordering::Relaxed);
            }
            self.cache.remove_if(&key, |_, v| v.is_empty());
        }
    }

    /// Call the function: replay a compiled tape when one fits, else trace (abstractly: no
    /// kernel runs during a trace) and compile, then replay the new program.
    pub fn call(&self, args: A) -> Result<O::Tree>
    where
        F: Fn(A) -> O,
    {
        let (leaves, statics) = args.jit_leaves();
        let last = self.last.lock().clone();
        if let Some(c) = last.filter(|c| c.fits(&leaves, &statics)) {
            return replay(&c, &leaves);
        }
        let c = self.compiled_for(args, &leaves, statics)?;
        replay(&c, &leaves)
    }

    /// The program fitting `args` (whose tensors are `leaves`): from the cache, or traced and
    /// cached.
    fn compiled_for(
        &self,
        args: A,
        leaves: &[crate::Tensor],
        statics: Vec<String>,
    ) -> Result<Arc<Compiled<O::Tree>>>
    where
        F: Fn(A) -> O,
    {
        let key = Key {
            leaves: leaves
                .iter()
                .map(|t| (t.shape().to_vec(), t.dtype()))
                .collect(),
            statics,
        };
        // Clone the fitting program out of the map before running it (no guard held across
        // user code).
        let fitting: Option<Arc<Compiled<O::Tree>>> = self
            .cache
            .get(&key)
            .and_then(|v| v.iter().find(|c| c.states_fit()).cloned());
        if let Some(c) = fitting {
            self.set_last(c.clone());
            return Ok(c);
        }
        let mut compiled = self.trace(args, leaves)?;
        compiled.key = key.clone();
        compiled.used = AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed));
        let compiled = Arc::new(compiled);
        self.evict_for_one();
        self.cache.entry(key).or_default().push(compiled.clone());
        self.cached.fetch_add(1, Ordering::Relaxed);
        self.set_last(compiled.clone());
        Ok(compiled)
    }

    /// The shapes and dtypes of the outputs (in tree order), computing nothing: from the
    /// compiled tape when one fits, else by an abstract trace (which is not compiled nor kept:
    /// it counts in [`Jit::trace_count`], and the first call traces again). No kernel runs,
    /// no tensor buffer is allocated and no state changes.
    ///
    /// ```
    /// use stategrad_core::{jit, jit::kernel_calls, DType, Tensor};
    /// let f = jit(|(x, w): (Tensor, Tensor)| x.matmul(&w).tanh().sum());
    /// let (x, w) = (Tensor::ones(&[64, 32]), Tensor::ones(&[32, 8]));
    /// let before = kernel_calls();
    /// let shapes = f.eval_shape((x, w)).unwrap();
    /// assert_eq!(shapes, vec![(vec![], DType::F32)]);
    /// assert_eq!(kernel_calls(), before);
    /// ```
    pub fn eval_shape(&self, args: A) -> Result<Vec<(Vec<usize>, DType)>>
    where
        F: Fn(A) -> O,
    {
        let (leaves, statics) = args.jit_leaves();
        let key = Key {
            leaves: leaves
                .iter()
                .map(|t| (t.shape().to_vec(), t.dtype()))
                .collect(),
            statics,
        };
        let cached: Option<Arc<Compiled<O::Tree>>> = self
            .cache
            .get(&key)
            .and_then(|v| v.iter().find(|c| c.states_fit()).cloned());
        let mut shapes = Vec::new();
        let mut push = |t: &crate::Tensor| shapes.push((t.shape().to_vec(), t.dtype()));
        match cached {
            Some(c) => c.template.for_each_tensor(&mut push),
            None => self.trace_shapes(args, &leaves)?.for_each_tensor(&mut push),
        }
        Ok(shapes)
    }
}
