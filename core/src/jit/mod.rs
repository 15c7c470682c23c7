//! `jit`: trace a function once per signature, keep its tape, and replay the tape on later calls.
//!
//! The key is the arguments' shapes, dtypes and static values; the states the function touches
//! are inputs (their shapes are checked on every call: a changed shape retraces, a changed value
//! does not) and the states it writes are outputs, written back after each replay. Reading a
//! traced value inside the function (to branch on it) is an error ([`crate::Error::TracedValueRead`]);
//! use [`Tensor::select`] / [`where_`](crate::where_) for data-dependent choices. A replay runs
//! only the primitives the outputs need (dead code is dropped) and goes through the same
//! primitives as eager code, so `grad(jit(f))`, `jit(grad(f))` and Jacobians of jitted
//! functions all work.
//!
//! How a replay runs (when no enclosing transform records it):
//! - **Small programs** (values totalling at most 32K elements, every primitive with a slice
//!   kernel) run on one per-thread arena: each value has a fixed slot and each primitive is one
//!   step specialised at compile time ([`stategrad_simd::arena`]). The steps run as closures
//!   at first; after [`NATIVE_AFTER_RUNS`](stategrad_simd::arena::NATIVE_AFTER_RUNS) runs the
//!   program becomes one generated native function (Cranelift; one-element values in registers,
//!   short slots inline, the rest calls into their closures), with the same bits; a loop that
//!   will pass that count gets its code before its first iteration. Written states are
//!   updated **in place** (into the old value's buffer) when the state holds the only reference
//!   to its value: a value anyone kept is never changed. [`Jit::call_loop`] runs many iterations
//!   of such a body on the arena.
//! - **Larger programs** run their steps in order; runs of elementwise primitives over one size
//!   and the sums ending them become one fused pass (blocks in L1, chunks over rayon; a product
//!   read once by a sum becomes one multiply-add op, rounded as the two ops). Each value is
//!   dropped right after its last read, and a fused pass writes its output **in place** into the
//!   buffer of an input it reads for the last time when nothing else holds it. GEMMs stay GEMMs.
//!
//! Results equal eager ones (the replay runs the same kernels with the same rounding).

use crate::error::{from_panic, Error, Result};
use crate::fuse;
use crate::lower::{self, LIn, LStep, Lowered};
use crate::prim::{apply, Kernel, Primitive};
use crate::state::State;
use crate::tensor::{Buffer, DType, Tensor};
use crate::trace::{self, Node, Tape};
use crate::transform::{Args, Tree};
use dashmap::DashMap;
use smallvec::SmallVec;
use stategrad_simd::Par;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
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

#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
struct Key {
    leaves: Vec<(Vec<usize>, DType)>,
    statics: Vec<String>,
}

/// Where a compiled output comes from.
#[derive(Clone)]
enum Source {
    Node(u32),
    Const(Tensor),
}

/// One step of a compiled program: a primitive applied to earlier values or constants.
struct Step {
    prim: Arc<dyn Primitive>,
    inputs: Vec<Source>,
    out: u32,
    shape: crate::tensor::Shape,
    dtype: DType,
}

struct Compiled<T> {
    /// Number of value slots (tape nodes).
    n_values: usize,
    /// The live operations in order, after dead-code and common-subexpression elimination.
    steps: Vec<Step>,
    /// The same program with runs of elementwise steps fused (used when no enclosing transform
    /// records the replay).
    plan: Vec<fuse::Instr<Source>>,
    /// Per instruction of `plan`: the values read for the last time there (not outputs or
    /// written states), dropped right after it so their buffers serve the next steps.
    frees: Vec<SmallVec<[u32; 4]>>,
    /// The program on one arena when it is small and every step has a slice kernel.
    small: Option<Lowered>,
    /// Nodes of `outputs` then `writes` (what a small replay hands back), when all are nodes.
    small_wanted: Vec<u32>,
    arg_nodes: Vec<u32>,
    state_inputs: Vec<(State, u32, Vec<usize>, DType)>,
    outputs: Vec<Source>,
    writes: Vec<(State, Source)>,
    template: T,
    /// The arguments' key it was compiled for.
    key: Key,
    /// When it last served a call (the cache's clock), for least-recently-used eviction.
    used: AtomicU64,
}

impl<T> Compiled<T> {
    /// Whether the states this program reads still have the traced shapes and dtypes.
    fn states_fit(&self) -> bool {
        self.state_inputs.iter().all(|(s, _, shape, dt)| {
            let v = s.raw_value();
            v.shape() == shape.as_slice() && v.dtype() == *dt
        })
    }

    /// For a small program looped on its arena: `(written, read)` slot pairs of every state it
    /// both writes and reads (the write feeds the next iteration's read). `None` if a written
    /// value's shape differs from the read one's (the loop must then retrace).
    fn state_carries(&self) -> Option<Vec<(u32, u32)>> {
        let lw = self.small.as_ref()?;
        let mut carries = Vec::new();
        for (k, (s, _)) in self.writes.iter().enumerate() {
            let w = self.small_wanted[self.outputs.len() + k];
            if let Some((_, r, ..)) = self.state_inputs.iter().find(|(t, ..)| t.same(s)) {
                if lw.shape_of(w) != lw.shape_of(*r) {
                    return None;
                }
                carries.push((w, *r));
            }
        }
        Some(carries)
    }

    /// Whether this program was compiled for these arguments (and the states still fit).
    fn fits(&self, leaves: &[Tensor], statics: &[String]) -> bool {
        self.key.statics == statics
            && self.key.leaves.len() == leaves.len()
            && self
                .key
                .leaves
                .iter()
                .zip(leaves)
                .all(|((shape, dt), t)| t.shape() == shape.as_slice() && t.dtype() == *dt)
            && self.states_fit()
    }
}

/// Turn a traced tape into a program: keep the operations some output needs (dead-code
/// elimination), detach constants once, and make repeated identical operations on the same
/// values (same primitive and parameters, same inputs) reuse the first result (CSE).
fn compile_steps(tape: &Tape, roots: &[&Source]) -> (Vec<Step>, Vec<(u32, u32)>) {
    let mut live = vec![false; tape.nodes.len()];
    for src in roots {
        if let Source::Node(n) = src {
            live[*n as usize] = true;
        }
    }
    for i in (0..live.len()).rev() {
        if let (true, Node::Op(op)) = (live[i], &tape.nodes[i]) {
            for p in op.parents.iter().flatten() {
                live[*p as usize] = true;
            }
        }
    }
    // `alias[i]` is the node whose value node `i` reuses.
    let mut alias: Vec<u32> = (0..tape.nodes.len() as u32).collect();
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut steps = Vec::new();
    let mut aliased = Vec::new();
    for (i, node) in tape.nodes.iter().enumerate() {
        let Node::Op(op) = node else { continue };
        if !live[i] {
            continue;
        }
        let inputs: Vec<Source> = op
            .parents
            .iter()
            .zip(&op.inputs)
            .map(|(p, c)| match p {
                Some(p) => Source::Node(alias[*p as usize]),
                None => Source::Const(c.detach()),
            })
            .collect();
        let key = format!(
            "{:?}|{}",
            op.prim,
            inputs
                .iter()
                .map(|s| match s {
                    Source::Node(n) => format!("n{n}"),
                    Source::Const(t) => format!("c{:p}", Arc::as_ptr(&t.0.buf)),
                })
                .collect::<Vec<_>>()
                .join(",")
        );
        if let Some(&first) = seen.get(&key) {
            alias[i] = first;
            aliased.push((i as u32, first));
            continue;
        }
        seen.insert(key, i as u32);
        steps.push(Step {
            prim: op.prim.clone(),
            inputs,
            out: i as u32,
            shape: op.output.shape().into(),
            dtype: op.output.dtype(),
        });
    }
    (steps, aliased)
}

/// The shape of one compiled program (see [`Jit::program_stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// `stategrad_simd::tuning`).
    pub native: bool,
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
/// compiled program. Such code should keep its state in a [`State`] (which the trace sees and
/// every replay updates) or refuse to run here, as stateful gradient processors do.
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
    trace::jit_tracing()
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
                for i in &c.plan {
                    if let fuse::Instr::Fused(g) = i {
                        passes += 1;
                        fused += g.ops.len() + g.sums.len() + g.elided + g.contracted;
                    }
                }
                out.push(ProgramStats {
                    primitives: c.steps.len(),
                    fused_passes: passes,
                    fused_primitives: fused,
                    arena: c.small.is_some(),
                    native: c.small.as_ref().is_some_and(|lw| lw.program.is_native()),
                });
            }
        }
        out
    }

    /// The last program, when it runs on the arena and no enclosing transform records (a
    /// compiled loop or scan can then run all its iterations there).
    fn last_small(&self) -> Option<Arc<Compiled<O::Tree>>> {
        if trace::recording() {
            return None;
        }
        self.last.lock().clone().filter(|c| c.small.is_some())
    }

    /// Iterations `start..end` of a [`for_loop`] over this (single tensor argument) function, on
    /// one arena when its last program is a small one: states written by an iteration are copied
    /// to the slots the next one reads, and only the last iteration's outputs and states come
    /// out as tensors. `None` when that does not apply (the caller then loops over `call`).
    fn replay_loop(&self, start: usize, end: usize) -> Option<Result<O::Tree>> {
        let c = self.last_small()?;
        let lw = c.small.as_ref()?;
        if !c.fits(&[Tensor::scalar(start as f32)], &[]) {
            return None;
        }
        let carries = c.state_carries()?;
        let iter_node = *c.arg_nodes.first()?;
        let first = Tensor::scalar(start as f32);
        Some(Ok(replay_small_with(&c, lw, &[first], |inputs| {
            lw.run_loop(inputs, iter_node, (start, end), &carries)
        })))
    }

    /// Rows `start..end` of a [`scan`] over this (`(carry, x)` argument, `(carry, y)` output)
    /// function, on one arena when its last program is a small one: the carry and the written
    /// states are copied to the slots the next iteration reads, each row of `xs` into the `x`
    /// slot. Returns the last iteration's outputs and the stacked `y` rows; `None` when that
    /// does not apply (the caller then loops over `call`).
    fn replay_scan(
        &self,
        carry: &Tensor,
        xs: &Tensor,
        (start, end): (usize, usize),
    ) -> Option<Result<(O::Tree, Tensor)>> {
        let c = self.last_small()?;
        let lw = c.small.as_ref()?;
        let row = xs.try_index_axis(0, start as isize).ok()?;
        let leaves = [carry.clone(), row];
        if !c.fits(&leaves, &[]) || c.outputs.len() != 2 || xs.dtype() != lw.dtype {
            return None;
        }
        let (&c_in, &x_in) = (c.arg_nodes.first()?, c.arg_nodes.get(1)?);
        let (c_out, y_out) = (c.small_wanted[0], c.small_wanted[1]);
        if lw.shape_of(c_out) != lw.shape_of(c_in) {
            return None;
        }
        let mut carries = c.state_carries()?;
        carries.push((c_out, c_in));
        let mut ys = None;
        let out = replay_small_with(&c, lw, &leaves, |inputs| {
            ys = Some(lw.run_scan(inputs, x_in, xs, (start, end), &carries, y_out));
        });
        Some(Ok((out, ys?)))
    }

    /// Forget every compiled tape.
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

    /// Call the function: replay a compiled tape when one fits, else trace and compile.
    pub fn call(&self, args: A) -> Result<O::Tree>
    where
        F: Fn(A) -> O,
    {
        let (leaves, statics) = args.jit_leaves();
        let last = self.last.lock().clone();
        if let Some(c) = last.filter(|c| c.fits(&leaves, &statics)) {
            return replay(&c, &leaves);
        }
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
            return replay(&c, &leaves);
        }
        let (out, mut compiled) = self.trace(args, &leaves)?;
        compiled.key = key.clone();
        compiled.used = AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed));
        let compiled = Arc::new(compiled);
        self.evict_for_one();
        self.cache.entry(key).or_default().push(compiled.clone());
        self.cached.fetch_add(1, Ordering::Relaxed);
        self.set_last(compiled);
        Ok(out)
    }

    /// The shapes and dtypes of the outputs (in tree order) without changing any state: from the
    /// compiled tape when one fits, else by tracing (the trace is kept for later calls).
    pub fn eval_shape(&self, args: A) -> Result<Vec<(Vec<usize>, DType)>>
    where
        F: Fn(A) -> O,
    {
        let (out, _) = crate::transform::engine::with_states(
            std::collections::HashMap::new(),
            crate::trace::ExitPolicy::RestoreAll,
            || self.call(args),
        )?;
        let mut shapes = Vec::new();
        out.for_each_tensor(&mut |t| shapes.push((t.shape().to_vec(), t.dtype())));
        Ok(shapes)
    }

    fn trace(&self, args: A, leaves: &[Tensor]) -> Result<(O::Tree, Compiled<O::Tree>)>
    where
        F: Fn(A) -> O,
    {
        self.traces.fetch_add(1, Ordering::Relaxed);
        let guard = trace::push_jit_frame();
        let level = guard.level();
        let mut tagged = Vec::with_capacity(leaves.len());
        let mut arg_nodes = Vec::with_capacity(leaves.len());
        for l in leaves {
            let (t, n) = guard.input(l);
            tagged.push(t);
            arg_nodes.push(n);
        }
        let mut a = args;
        a.jit_replace(&mut tagged.into_iter());
        let res = match catch_unwind(AssertUnwindSafe(|| (self.f)(a).into_result())) {
            Ok(r) => r,
            Err(p) => Err(from_panic(p)),
        };
        // Record the written states' final values before the frame strips its tags.
        let frame_writes: Vec<(State, Tensor)> = match &res {
            Ok(_) => trace::frame_written_states(level),
            Err(_) => Vec::new(),
        };
        let frame = guard.close(res.is_ok());
        let out = res?;
        let source = |t: &Tensor| match trace::node_of(t, level) {
            Some(n) => Source::Node(n),
            None => Source::Const(trace::strip(t, level)),
        };
        let mut outputs = Vec::new();
        out.for_each_tensor(&mut |t| outputs.push(source(t)));
        let writes: Vec<(State, Source)> = frame_writes
            .iter()
            .map(|(s, v)| (s.clone(), source(v)))
            .collect();
        let state_inputs: Vec<(State, u32, Vec<usize>, DType)> = frame
            .state_inputs
            .iter()
            .map(|(s, n)| {
                let entry = frame
                    .touched
                    .iter()
                    .find(|(t, _, _)| t.same(s))
                    .map(|(_, e, _)| e.clone())
                    .expect("internal error: state input not touched");
                (s.clone(), *n, entry.shape().to_vec(), entry.dtype())
            })
            .collect();
        let roots: Vec<&Source> = outputs
            .iter()
            .chain(writes.iter().map(|(_, s)| s))
            .collect();
        let (steps, aliased) = compile_steps(&frame.tape, &roots);
        // Outputs that were eliminated as duplicates read the value they duplicate.
        let redirect = |s: &Source| match s {
            Source::Node(n) => Source::Node(
                aliased
                    .iter()
                    .find(|(from, _)| from == n)
                    .map_or(*n, |&(_, to)| to),
            ),
            c => c.clone(),
        };
        let outputs: Vec<Source> = outputs.iter().map(redirect).collect();
        let writes: Vec<(State, Source)> = writes
            .iter()
            .map(|(s, src)| (s.clone(), redirect(src)))
            .collect();
        let plan = {
            let mut numel: HashMap<u32, usize> = HashMap::new();
            for (n, l) in arg_nodes.iter().zip(leaves) {
                numel.insert(*n, l.numel());
            }
            for (_, n, shape, _) in &state_inputs {
                numel.insert(*n, shape.iter().product::<usize>());
            }
            for st in &steps {
                numel.insert(st.out, st.shape.iter().product());
            }
            let views: Vec<fuse::StepView<'_, Source>> = steps
                .iter()
                .map(|st| fuse::StepView {
                    fusion: st.prim.fusion(),
                    inputs: &st.inputs,
                    out: st.out,
                    shape: &st.shape,
                    dtype: st.dtype,
                })
                .collect();
            let root_nodes: Vec<u32> = outputs
                .iter()
                .chain(writes.iter().map(|(_, s)| s))
                .filter_map(|s| match s {
                    Source::Node(n) => Some(*n),
                    Source::Const(_) => None,
                })
                .collect();
            // A large constant whose elements are all equal (a broadcast cotangent seed, a
            // `full`) is read by a fused pass as one scalar, not streamed from memory.
            let mut uniform: HashMap<*const Buffer, Option<Source>> = HashMap::new();
            for st in &steps {
                for src in &st.inputs {
                    if let Source::Const(t) = src {
                        if t.numel() >= fuse::FUSE_MIN {
                            uniform
                                .entry(Arc::as_ptr(&t.0.buf))
                                .or_insert_with(|| uniform_scalar(t).map(Source::Const));
                        }
                    }
                }
            }
            fuse::plan(
                &views,
                |s| match s {
                    Source::Node(n) => (numel.get(n).copied().unwrap_or(0), None),
                    Source::Const(t) => (
                        t.numel(),
                        uniform.get(&Arc::as_ptr(&t.0.buf)).and_then(|u| u.clone()),
                    ),
                },
                |s| match s {
                    Source::Node(n) => Some(*n),
                    Source::Const(_) => None,
                },
                |s| match s {
                    Source::Const(t) => t.numel() == 1 && t.to_vec::<f64>()[0] == 1.0,
                    Source::Node(_) => false,
                },
                &root_nodes,
            )
        };
        let frees = last_uses(&plan, &steps, &outputs, &writes);
        let small = lower_program(
            &steps,
            &arg_nodes,
            leaves,
            &state_inputs,
            frame.tape.nodes.len(),
        );
        let small_wanted: Vec<u32> = outputs
            .iter()
            .chain(writes.iter().map(|(_, s)| s))
            .filter_map(|s| match s {
                Source::Node(n) => Some(*n),
                Source::Const(_) => None,
            })
            .collect();
        let small = small.filter(|_| small_wanted.len() == outputs.len() + writes.len());
        let result = out.map_tensors(&mut |t| trace::strip(t, level));
        Ok((
            result,
            Compiled {
                n_values: frame.tape.nodes.len(),
                steps,
                plan,
                frees,
                small,
                small_wanted,
                arg_nodes,
                state_inputs,
                outputs,
                writes,
                template: out,
                key: Key::default(),
                used: AtomicU64::new(0),
            },
        ))
    }
}

thread_local! {
    /// The primitive a replay on this thread is running, for the message of an internal error.
    static RUNNING: std::cell::Cell<&'static str> = const { std::cell::Cell::new("replay") };
}

/// Replay a compiled program. A panic inside it is a defect of the engine (the trace already ran
/// the same primitives on the same shapes), so it comes back as [`Error::Internal`] naming the
/// primitive that was running, never as an unwind out of [`Jit::call`]; typed operator errors
/// come back as themselves. States are written only after every value is computed.
fn replay<T: Tree + Clone>(c: &Compiled<T>, leaves: &[Tensor]) -> Result<T> {
    protect(|| replay_unprotected(c, leaves))
}

/// Run `body`, turning a panic into the typed error it carries, or [`Error::Internal`].
fn protect<R>(body: impl FnOnce() -> Result<R>) -> Result<R> {
    RUNNING.with(|r| r.set("replay"));
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(p) => Err(match from_panic(p) {
            Error::Panicked(msg) => Error::Internal {
                primitive: RUNNING.with(|r| r.get()).to_string(),
                msg,
            },
            e => e,
        }),
    }
}

fn replay_unprotected<T: Tree + Clone>(c: &Compiled<T>, leaves: &[Tensor]) -> Result<T> {
    if let (Some(lw), false) = (&c.small, trace::recording()) {
        RUNNING.with(|r| r.set("arena program"));
        return replay_small(c, lw, leaves);
    }
    let mut vals: Vec<Option<Tensor>> = vec![None; c.n_values];
    for (n, l) in c.arg_nodes.iter().zip(leaves) {
        vals[*n as usize] = Some(l.clone());
    }
    for (s, n, _, _) in &c.state_inputs {
        // A read through `value()`, so enclosing transforms see (and may differentiate) it.
        vals[*n as usize] = Some(s.value());
    }
    let run_step = |step: &Step, vals: &mut Vec<Option<Tensor>>| -> Result<()> {
        let out = {
            let refs: SmallVec<[&Tensor; 4]> = step
                .inputs
                .iter()
                .map(|src| match src {
                    Source::Node(n) => vals[*n as usize]
                        .as_ref()
                        .expect("internal error: replay order"),
                    Source::Const(t) => t,
                })
                .collect();
            RUNNING.with(|r| r.set(step.prim.name()));
            apply(step.prim.clone(), &refs)?
        };
        vals[step.out as usize] = Some(out);
        Ok(())
    };
    if trace::recording() {
        // An enclosing transform must see every primitive: run the program unfused.
        for step in &c.steps {
            run_step(step, &mut vals)?;
        }
    } else {
        for (instr, dead) in c.plan.iter().zip(&c.frees) {
            match instr {
                fuse::Instr::Step(i) => run_step(&c.steps[*i], &mut vals)?,
                fuse::Instr::Fused(g) => {
                    RUNNING.with(|r| r.set("fused pass"));
                    // A value read here for the last time is handed over (not cloned), so the
                    // pass can write an output into its buffer when nothing else holds it.
                    let inputs: Vec<(Tensor, bool)> = g
                        .inputs
                        .iter()
                        .map(|x| match x {
                            fuse::Input::Full(Source::Node(n)) if dead.contains(n) => {
                                let t = vals[*n as usize].take();
                                (t.expect("internal error: replay order"), true)
                            }
                            fuse::Input::Full(s) | fuse::Input::Scalar(s) => match s {
                                Source::Node(n) => (
                                    vals[*n as usize]
                                        .clone()
                                        .expect("internal error: replay order"),
                                    false,
                                ),
                                Source::Const(t) => (t.clone(), false),
                            },
                        })
                        .collect();
                    let par = if trace::sequential() {
                        Par::Seq
                    } else {
                        Par::Rayon
                    };
                    for (node, t) in fuse::run(g, inputs, par)? {
                        vals[node as usize] = Some(t);
                    }
                }
            }
            for n in dead {
                vals[*n as usize] = None;
            }
        }
    }
    let get = |s: &Source| match s {
        Source::Node(n) => vals[*n as usize]
            .clone()
            .expect("internal error: output not computed"),
        Source::Const(t) => t.clone(),
    };
    let outs: Vec<Tensor> = c.outputs.iter().map(get).collect();
    let written: Vec<Tensor> = c.writes.iter().map(|(_, src)| get(src)).collect();
    for ((s, _), v) in c.writes.iter().zip(written) {
        s.set_value(v);
    }
    let mut it = outs.into_iter();
    Ok(c.template
        .map_tensors(&mut |_| it.next().expect("internal error: output count")))
}

/// For each instruction of `plan`, the nodes it reads for the last time, except the program's
/// outputs and written states (liveness: the replay drops them there).
fn last_uses(
    plan: &[fuse::Instr<Source>],
    steps: &[Step],
    outputs: &[Source],
    writes: &[(State, Source)],
) -> Vec<SmallVec<[u32; 4]>> {
    let mut last: HashMap<u32, usize> = HashMap::new();
    for (k, instr) in plan.iter().enumerate() {
        let reads: Vec<&Source> = match instr {
            fuse::Instr::Step(i) => steps[*i].inputs.iter().collect(),
            fuse::Instr::Fused(g) => g
                .inputs
                .iter()
                .map(|x| match x {
                    fuse::Input::Full(s) | fuse::Input::Scalar(s) => s,
                })
                .collect(),
        };
        for src in reads {
            if let Source::Node(n) = src {
                last.insert(*n, k);
            }
        }
    }
    for src in outputs.iter().chain(writes.iter().map(|(_, s)| s)) {
        if let Source::Node(n) = src {
            last.remove(n);
        }
    }
    let mut frees = vec![SmallVec::new(); plan.len()];
    for (n, k) in last {
        frees[k].push(n);
    }
    frees
}

/// Replay a lowered program: arguments and state values in, outputs and written states out.
fn replay_small<T: Tree + Clone>(c: &Compiled<T>, lw: &Lowered, leaves: &[Tensor]) -> Result<T> {
    Ok(replay_small_with(c, lw, leaves, |inputs| lw.run(inputs)))
}

/// Feed a small program's arguments (`leaves`) and current state values to `run`, which leaves
/// the results in this thread's arena; then write the written states (in place where their old
/// value has no other reference: our reads are dropped first) and give back the outputs.
fn replay_small_with<T: Tree + Clone>(
    c: &Compiled<T>,
    lw: &Lowered,
    leaves: &[Tensor],
    run: impl FnOnce(&[(u32, &Tensor)]),
) -> T {
    {
        // Read through `value()`, so enclosing frames register the reads.
        let values: SmallVec<[Tensor; 4]> =
            c.state_inputs.iter().map(|(s, ..)| s.value()).collect();
        let inputs: SmallVec<[(u32, &Tensor); 8]> = c
            .arg_nodes
            .iter()
            .copied()
            .zip(leaves)
            .chain(c.state_inputs.iter().map(|(_, n, ..)| *n).zip(&values))
            .collect();
        run(&inputs);
    }
    let (outs, writes) = c.small_wanted.split_at(c.outputs.len());
    let mut it = lw.take(outs).into_iter();
    for ((s, _), &node) in c.writes.iter().zip(writes) {
        lw.store(node, s);
    }
    c.template
        .map_tensors(&mut |_| it.next().expect("internal error: output count"))
}

/// Lower a compiled program to one arena (see [`crate::lower`]), if every value is small, every
/// value and constant has one dtype and every step has a slice kernel.
fn lower_program(
    steps: &[Step],
    arg_nodes: &[u32],
    leaves: &[Tensor],
    state_inputs: &[(State, u32, Vec<usize>, DType)],
    n_nodes: usize,
) -> Option<Lowered> {
    let dtype = steps.first()?.dtype;
    let mut slots: Vec<Option<(usize, crate::tensor::Shape)>> = vec![None; n_nodes];
    let mut size = 0usize;
    type Slots = Vec<Option<(usize, crate::tensor::Shape)>>;
    let place = |slots: &mut Slots, size: &mut usize, node: u32, shape: &[usize], dt: DType| {
        if dt != dtype {
            return None;
        }
        let len = shape.iter().product::<usize>();
        *size = lower::slot_start(*size, len);
        slots[node as usize] = Some((*size, shape.into()));
        *size += len;
        (*size <= lower::SMALL_MAX).then_some(())
    };
    for (n, l) in arg_nodes.iter().zip(leaves) {
        place(&mut slots, &mut size, *n, l.shape(), l.dtype())?;
    }
    for (_, n, shape, dt) in state_inputs {
        place(&mut slots, &mut size, *n, shape, *dt)?;
    }
    // Slots below this hold arguments and state inputs (a loop's carries overwrite them).
    let inputs_end = size;
    let mut lsteps = Vec::with_capacity(steps.len());
    let mut consts = Vec::new();
    for st in steps {
        let mut in_shapes: SmallVec<[crate::tensor::Shape; 2]> = SmallVec::new();
        for src in &st.inputs {
            match src {
                Source::Node(n) => in_shapes.push(slots[*n as usize].as_ref()?.1.clone()),
                Source::Const(t) if t.dtype() == dtype => in_shapes.push(t.shape().into()),
                Source::Const(_) => return None,
            }
        }
        let shapes: SmallVec<[&[usize]; 2]> = in_shapes.iter().map(|s| &s[..]).collect();
        let kernel = st.prim.lower(&shapes, &st.shape)?;
        let binary = matches!(kernel, Kernel::Binary { .. });
        let mut inputs: SmallVec<[LIn; 2]> = SmallVec::new();
        for src in &st.inputs {
            match src {
                Source::Node(n) => {
                    let (off, shape) = slots[*n as usize].as_ref()?;
                    inputs.push(LIn::Slot(*off, shape.iter().product()));
                }
                Source::Const(t) => match uniform_scalar(t).filter(|_| binary) {
                    Some(v) => inputs.push(LIn::Imm(v.item().ok()?)),
                    None => inputs.push(const_slot(&mut size, &mut consts, t)),
                },
            }
        }
        // A copy of a step's result (a reshape) is the same slot under another shape.
        if let (Kernel::Copy, [LIn::Slot(off, _)]) = (&kernel, &inputs[..]) {
            if *off >= inputs_end {
                slots[st.out as usize] = Some((*off, st.shape.clone()));
                continue;
            }
        }
        place(&mut slots, &mut size, st.out, &st.shape, st.dtype)?;
        let out = slots[st.out as usize].as_ref()?.0;
        let n = st.shape.iter().product();
        let step = LStep::new(kernel.clone(), &inputs, out, n).or_else(|| {
            // A broadcast the direct forms cannot take: the constant gets a slot after all.
            let ins: SmallVec<[LIn; 2]> = st
                .inputs
                .iter()
                .zip(&inputs)
                .map(|(src, i)| match (src, i) {
                    (Source::Const(t), LIn::Imm(_)) => const_slot(&mut size, &mut consts, t),
                    _ => *i,
                })
                .collect();
            LStep::new(kernel, &ins, out, n)
        })?;
        lsteps.push(step);
    }
    Some(Lowered {
        dtype,
        size,
        slots,
        consts,
        program: lower::build(dtype, &lsteps, size),
    })
}

/// A slot for constant `t` at the end of the arena (`size` elements so far), its value copied
/// in at the start of every run.
fn const_slot(size: &mut usize, consts: &mut Vec<(usize, Tensor)>, t: &Tensor) -> LIn {
    let off = lower::slot_start(*size, t.numel());
    *size = off + t.numel();
    consts.push((off, t.clone()));
    LIn::Slot(off, t.numel())
}

impl<F: Fn(Tensor) -> O, O: JitOutput> Jit<F, Tensor, O>
where
    O::Tree: Send + Sync,
{
    /// Run this jitted loop body for `i in 0..n` (`i` a 0-d f32 tensor) and return the last
    /// output: [`for_loop`] over a body compiled once. The first call traces; later calls replay
    /// the cached program, and when it is a small one all `n` iterations run on one arena (states
    /// written by an iteration are copied to the slots the next one reads; only the last
    /// iteration's outputs and states become tensors). Errors as [`Jit::call`]; `n == 0` is
    /// [`crate::Error::InvalidArgument`].
    ///
    /// ```
    /// use stategrad_core::{jit, State, Tensor};
    /// let x = State::new(Tensor::scalar(1.0f32));
    /// let body = jit(|_i: Tensor| {
    ///     x.set_value(x.value() * 2.0);
    ///     x.value()
    /// });
    /// assert_eq!(body.call_loop(10).unwrap().item().unwrap(), 1024.0);
    /// assert_eq!(body.call_loop(2).unwrap().item().unwrap(), 4096.0);
    /// assert_eq!(body.trace_count(), 1);
    /// ```
    pub fn call_loop(&self, n: usize) -> Result<O::Tree> {
        if n == 0 {
            return Err(crate::error::Error::InvalidArgument {
                op: "for_loop",
                msg: "needs at least one iteration".into(),
            });
        }
        // One transaction: an iteration that fails restores every state to its entry value.
        all_or_nothing(|| {
            let mut out = self.call(Tensor::scalar(0.0f32))?;
            if n > 1 {
                if let Some(last) = self.replay_loop(1, n) {
                    return last;
                }
            }
            for i in 1..n {
                out = self.call(Tensor::scalar(i as f32))?;
            }
            Ok(out)
        })
    }
}

/// Run `step(i)` for `i in 0..n`, tracing it once and replaying its compiled tape for every
/// iteration (JAX's `fori_loop` over a stateful body). `i` is a traced 0-d f32 tensor: use it in
/// arithmetic; reading it as a number is an error, as in `jit`. States the step writes carry
/// from one iteration to the next; under a transform, gradients flow through every iteration.
/// Returns the last step's output.
///
/// ```
/// use stategrad_core::{jit::for_loop, State, Tensor};
/// let x = State::new(Tensor::scalar(1.0f32));
/// let last = for_loop(10, |_i: Tensor| {
///     x.set_value(x.value() * 2.0);
///     x.value()
/// })
/// .unwrap();
/// assert_eq!(last.item().unwrap(), 1024.0);
/// ```
pub fn for_loop<F, O>(n: usize, step: F) -> Result<O::Tree>
where
    F: Fn(Tensor) -> O,
    O: JitOutput,
    O::Tree: Send + Sync,
{
    jit(step).call_loop(n)
}

/// `scan(f, carry, xs)`: `carry, y = f(carry, x)` for every row `x` of `xs` (along axis 0),
/// traced once and replayed per row; returns the final carry and the stacked `y`s. States the
/// body writes carry over too, and gradients flow through the whole loop. A small body runs
/// every row on one arena (carry and states copied between iterations, like
/// [`Jit::call_loop`]); under a recording transform each row is a recorded replay.
///
/// ```
/// use stategrad_core::{jit::scan, Tensor};
/// let xs = Tensor::new([1.0f32, 2.0, 3.0]);
/// let (total, partial) = scan(|(c, x): (Tensor, Tensor)| (&c + &x, &c + &x), Tensor::scalar(0.0f32), &xs).unwrap();
/// assert_eq!(total.item().unwrap(), 6.0);
/// assert_eq!(partial.to_string(), "[1. 3. 6.]");
/// ```
pub fn scan<F>(f: F, init: Tensor, xs: &Tensor) -> Result<(Tensor, Tensor)>
where
    F: Fn((Tensor, Tensor)) -> (Tensor, Tensor),
{
    let n = *xs
        .shape()
        .first()
        .ok_or_else(|| crate::error::Error::InvalidArgument {
            op: "scan",
            msg: "xs must have a leading axis to scan over".into(),
        })?;
    if n == 0 {
        return Ok((init, Tensor::zeros(&[0])));
    }
    all_or_nothing(|| scan_rows(f, init, xs, n))
}

/// Run `body` as one transaction over the states it touches: if it fails (or panics), every
/// state is back at its entry value, however many iterations had already written it.
fn all_or_nothing<R>(body: impl FnOnce() -> Result<R>) -> Result<R> {
    let (r, _) =
        crate::transform::engine::with_states(HashMap::new(), trace::ExitPolicy::KeepWrites, body)?;
    Ok(r)
}

fn scan_rows<F>(f: F, init: Tensor, xs: &Tensor, n: usize) -> Result<(Tensor, Tensor)>
where
    F: Fn((Tensor, Tensor)) -> (Tensor, Tensor),
{
    let body = jit(f);
    let (mut carry, y0) = body.call((init, xs.try_index_axis(0, 0)?))?;
    if n > 1 {
        if let Some(r) = body.replay_scan(&carry, xs, (1, n)) {
            let ((last, _), rest) = r?;
            // A leading axis on the first row is a reshape (no copy); the concat is the one copy.
            let first = y0.try_reshape_to(&[&[1], y0.shape()].concat())?;
            return Ok((last, Tensor::try_concat(&[&first, &rest], 0)?));
        }
    }
    let mut ys = Vec::with_capacity(n);
    ys.push(y0);
    for i in 1..n {
        let x = xs.try_index_axis(0, i as isize)?;
        let (c, y) = body.call((carry, x))?;
        carry = c;
        ys.push(y);
    }
    let refs: Vec<&Tensor> = ys.iter().collect();
    Ok((carry, Tensor::try_stack(&refs, 0)?))
}

/// `cond(pred, on_true, on_false)`: a data-dependent choice that works inside `jit`.
///
/// Outside `jit` (or when `pred` is not traced) only the chosen branch runs. Under `jit` both
/// branches are traced (each sees the states as they were before the `cond`), and the outputs
/// and every state either branch writes become an elementwise select on `pred`, so one compiled
/// program serves both outcomes. `pred` must have one element (nonzero is true); the branches
/// must return trees of the same structure and shapes. Gradients flow through the chosen branch.
///
/// ```
/// use stategrad_core::{jit, jit::cond, Tensor};
/// let f = jit(|x: Tensor| cond(&x.sum().gt_scalar(0.0), || &x * 2.0, || -&x));
/// assert_eq!(f.call(Tensor::new([1.0f32, 2.0])).unwrap().to_string(), "[2. 4.]");
/// assert_eq!(f.call(Tensor::new([-1.0f32, -2.0])).unwrap().to_string(), "[1. 2.]");
/// assert_eq!(f.trace_count(), 1);
/// ```
pub fn cond<T: Tree + Clone>(
    pred: &Tensor,
    on_true: impl FnOnce() -> T,
    on_false: impl FnOnce() -> T,
) -> Result<T> {
    if pred.numel() != 1 {
        return Err(crate::error::Error::InvalidArgument {
            op: "cond",
            msg: format!(
                "the predicate must have one element, it has shape {}",
                pred.shape_display()
            ),
        });
    }
    if !trace::jit_traced(pred) {
        return Ok(if pred.buf().get_f64(0) != 0.0 {
            on_true()
        } else {
            on_false()
        });
    }
    let branch = |f: Box<dyn FnOnce() -> T + '_>| {
        crate::transform::engine::with_states(HashMap::new(), trace::ExitPolicy::RestoreAll, || {
            let out = f();
            Ok((out, trace::innermost_written()))
        })
        .map(|(r, _)| r)
    };
    let (t_out, t_writes) = branch(Box::new(on_true))?;
    let (f_out, f_writes) = branch(Box::new(on_false))?;
    let mut f_leaves = Vec::new();
    f_out.for_each_tensor(&mut |t| f_leaves.push(t.clone()));
    let mut t_count = 0;
    t_out.for_each_tensor(&mut |_| t_count += 1);
    if t_count != f_leaves.len() {
        return Err(crate::error::Error::InvalidArgument {
            op: "cond",
            msg: format!(
                "the branches return {t_count} and {} tensors",
                f_leaves.len()
            ),
        });
    }
    // As in JAX, the branches must agree in shape and dtype: a select would broadcast, giving
    // the traced program a shape that neither branch has on its own.
    let same_type = |a: &Tensor, b: &Tensor| -> Result<()> {
        if a.shape() != b.shape() {
            return Err(crate::error::Error::ShapeMismatch {
                op: "cond",
                lhs: a.shape_display(),
                rhs: b.shape_display(),
            });
        }
        if a.dtype() != b.dtype() {
            return Err(crate::error::Error::DTypeMismatch {
                op: "cond",
                lhs: a.dtype().name(),
                rhs: b.dtype().name(),
            });
        }
        Ok(())
    };
    let mut err = None;
    let mut it = f_leaves.iter();
    let out = t_out.map_tensors(&mut |a| {
        let b = it.next().expect("counted above");
        same_type(a, b)
            .and_then(|()| Tensor::try_select(pred, a, b))
            .unwrap_or_else(|e| {
                err.get_or_insert(e);
                a.clone()
            })
    });
    if let Some(e) = err {
        return Err(e);
    }
    // States written by either branch take the selected value (the other branch's value, or the
    // value before the cond, where a branch left the state alone).
    let mut states: Vec<State> = Vec::new();
    for (s, _) in t_writes.iter().chain(&f_writes) {
        if !states.iter().any(|x| x.same(s)) {
            states.push(s.clone());
        }
    }
    // Every selected value is computed before any state is written: a failure leaves them all.
    let mut selected = Vec::with_capacity(states.len());
    for s in &states {
        let before = s.value();
        let pick = |w: &[(State, Tensor)]| {
            w.iter()
                .find(|(x, _)| x.same(s))
                .map_or(before.clone(), |(_, v)| v.clone())
        };
        let (t, f) = (pick(&t_writes), pick(&f_writes));
        same_type(&t, &f)?;
        selected.push(Tensor::try_select(pred, &t, &f)?);
    }
    for (s, v) in states.iter().zip(selected) {
        s.set_value(v);
    }
    Ok(out)
}

/// A traced program of `f` at `args`, for `vmap`'s batched interpretation (states are left as
/// they were).
pub(crate) struct Traced<T> {
    compiled: Compiled<T>,
}

impl<T: Tree + Clone> Traced<T> {
    /// States the traced function writes (refused by `vmap`).
    pub(crate) fn written_states(&self) -> Vec<State> {
        self.compiled
            .writes
            .iter()
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Run the program on inputs of which those flagged carry a leading batch axis, through
    /// each primitive's batch rule; outputs come with their flag (unbatched outputs are the same
    /// for every example). Written states are not applied.
    pub(crate) fn run_batched(
        &self,
        leaves: &[(Tensor, bool)],
    ) -> Result<(T, Vec<(Tensor, bool)>)> {
        let c = &self.compiled;
        let mut vals: Vec<Option<(Tensor, bool)>> = vec![None; c.n_values];
        for (n, l) in c.arg_nodes.iter().zip(leaves) {
            vals[*n as usize] = Some(l.clone());
        }
        for (s, n, _, _) in &c.state_inputs {
            vals[*n as usize] = Some((s.value(), false));
        }
        for step in &c.steps {
            let out = {
                let mut refs: SmallVec<[&Tensor; 4]> = SmallVec::new();
                let mut flags: SmallVec<[bool; 4]> = SmallVec::new();
                for src in &step.inputs {
                    match src {
                        Source::Node(n) => {
                            let (t, b) = vals[*n as usize]
                                .as_ref()
                                .expect("internal error: replay order");
                            refs.push(t);
                            flags.push(*b);
                        }
                        Source::Const(t) => {
                            refs.push(t);
                            flags.push(false);
                        }
                    }
                }
                if flags.iter().any(|&b| b) {
                    (step.prim.batch(&step.prim, &refs, &flags)?, true)
                } else {
                    (apply(step.prim.clone(), &refs)?, false)
                }
            };
            vals[step.out as usize] = Some(out);
        }
        let outs = c
            .outputs
            .iter()
            .map(|s| match s {
                Source::Node(n) => vals[*n as usize]
                    .clone()
                    .expect("internal error: output not computed"),
                Source::Const(t) => (t.clone(), false),
            })
            .collect();
        Ok((c.template.clone(), outs))
    }
}

/// Trace `f` once at `args` (restoring every state afterwards).
pub(crate) fn trace_for_batching<F, A, O>(f: &F, args: A) -> Result<Traced<O::Tree>>
where
    F: Fn(A) -> O,
    A: Args,
    O: JitOutput,
    O::Tree: Send + Sync,
{
    let j = jit(|a: A| f(a));
    let (leaves, _) = args.jit_leaves();
    let ((_, compiled), _) = crate::transform::engine::with_states(
        HashMap::new(),
        trace::ExitPolicy::RestoreAll,
        || j.trace(args, &leaves),
    )?;
    Ok(Traced { compiled })
}

/// The value of every element of `t` as a one-element tensor, if they are all equal (bitwise,
/// so `-0.0` and NaN payloads are kept).
fn uniform_scalar(t: &Tensor) -> Option<Tensor> {
    fn first_if_uniform<T: Copy + PartialEq>(v: &[T], bits: impl Fn(T) -> u64) -> Option<T> {
        let f = *v.first()?;
        v.iter().all(|&x| bits(x) == bits(f)).then_some(f)
    }
    match t.buf() {
        Buffer::F32(v) => first_if_uniform(v, |x: f32| x.to_bits().into()).map(Tensor::scalar),
        Buffer::F64(v) => first_if_uniform(v, f64::to_bits).map(Tensor::scalar),
    }
}
