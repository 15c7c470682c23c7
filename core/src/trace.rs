//! The tape and the trace frames.
//!
//! Every transform call opens a [`Frame`] on a thread-local stack. A frame has a unique level id.
//! A value recorded on a frame's tape carries a tag `(level, node)`; a tensor may carry tags of
//! several nested levels at once, which is what makes `grad(grad(f))` work: an operation whose
//! inputs are tagged at several active levels is recorded on each of those tapes. Tags of levels
//! that are no longer on the stack are ignored, so a tape never outlives its transform call and no
//! graph hangs off a tensor.
//!
//! Frames also track state accesses (first-access order, read/write), substitute state values
//! (the pure-function view of a stateful function), and restore states on exit.

use crate::error::{Error, Result};
use crate::panics::from_panic;
use crate::prim::Primitive;
use crate::state::{State, StateId};
use crate::tensor::{Tags, Tensor};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

static NEXT_LEVEL: AtomicU64 = AtomicU64::new(1);

/// One recorded operation.
pub(crate) struct OpNode {
    pub(crate) prim: Arc<dyn Primitive>,
    /// Node id of each input on this tape, `None` for a constant at this level.
    pub(crate) parents: Vec<Option<u32>>,
    /// The inputs as they were seen (with their tags of other levels, for higher order).
    pub(crate) inputs: Vec<Tensor>,
    /// The output as it was produced.
    pub(crate) output: Tensor,
}

/// A tape node: an input of the differentiated function, or an operation.
pub(crate) enum Node {
    Input,
    Op(OpNode),
}

/// The Wengert list of one level, in topological order.
#[derive(Default)]
pub struct Tape {
    pub(crate) nodes: Vec<Node>,
}

impl Tape {
    /// Number of recorded nodes (inputs and operations).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// How a state was used inside a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// The value was read.
    pub read: bool,
    /// The value was written.
    pub written: bool,
}

/// What a frame does with the states it touched when it closes normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExitPolicy {
    /// Written states keep their new values (stripped of this level's tag); read-only ones are
    /// restored to their entry values.
    KeepWrites,
    /// Every touched state is restored (StateFinder, shape evaluation).
    RestoreAll,
}

pub(crate) struct Frame {
    pub(crate) level: u64,
    pub(crate) records: bool,
    pub(crate) tape: Tape,
    pub(crate) policy: ExitPolicy,
    /// Touched states in first-access order, with their entry values and usage.
    pub(crate) touched: Vec<(State, Tensor, Access)>,
    touched_index: HashMap<StateId, usize>,
    /// Values substituted for states at their first access in this frame.
    pub(crate) overrides: HashMap<StateId, Tensor>,
    /// A `jit` trace: every state's first access makes it an input of the tape, and reading a
    /// traced value is an error.
    pub(crate) jit: bool,
    /// Records operations on abstract values (a `jit` trace, or a transposition that pulls back
    /// an abstract cotangent, see [`push_abstract_frame`]).
    sees_abstract: bool,
    /// The states that became tape inputs (jit frames), with their input nodes.
    pub(crate) state_inputs: Vec<(State, u32)>,
    /// States created while this frame was open: local to the traced function, never tracked
    /// (the reference does not report them either).
    created: HashSet<StateId>,
}

thread_local! {
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

/// True while any frame is open on this thread (a transform is running).
pub(crate) fn tracing() -> bool {
    FRAMES.with(|f| !f.borrow().is_empty())
}

/// True while a recording frame is open on this thread (work must stay here to be recorded).
pub(crate) fn recording() -> bool {
    FRAMES.with(|f| f.borrow().iter().any(|fr| fr.records))
}

/// Handle to an open frame. Closing it (or dropping it during a panic) pops the frame.
pub(crate) struct FrameGuard {
    level: u64,
    closed: bool,
}

/// Open a frame. `records` frames build a tape; others only track states.
pub(crate) fn push_frame(
    records: bool,
    policy: ExitPolicy,
    overrides: HashMap<StateId, Tensor>,
) -> FrameGuard {
    crate::panics::install_quiet_hook();
    crate::panics::frame_opened();
    let level = NEXT_LEVEL.fetch_add(1, Ordering::Relaxed);
    FRAMES.with(|f| {
        f.borrow_mut().push(Frame {
            level,
            records,
            tape: Tape::default(),
            policy,
            touched: Vec::new(),
            touched_index: HashMap::new(),
            overrides,
            jit: false,
            sees_abstract: false,
            state_inputs: Vec::new(),
            created: HashSet::new(),
        })
    });
    FrameGuard {
        level,
        closed: false,
    }
}

/// Open a `jit` tracing frame (records every op on traced values; states become abstract
/// inputs). Every touched state is restored when it closes: a trace computes no values, the
/// replay that follows writes them.
pub(crate) fn push_jit_frame() -> FrameGuard {
    let g = push_frame(true, ExitPolicy::RestoreAll, HashMap::new());
    FRAMES.with(|f| {
        if let Some(top) = f.borrow_mut().last_mut() {
            top.jit = true;
            top.sees_abstract = true;
        }
    });
    g
}

/// Open a recording frame that records operations on abstract values (its own abstract inputs)
/// outside any `jit` trace: the forward product transposes a pullback recorded from an
/// abstract cotangent. Operations on concrete values alone still compute.
pub(crate) fn push_abstract_frame() -> FrameGuard {
    let g = push_frame(true, ExitPolicy::KeepWrites, HashMap::new());
    FRAMES.with(|f| {
        if let Some(top) = f.borrow_mut().last_mut() {
            top.sees_abstract = true;
        }
    });
    g
}

/// True while a `jit` trace is open on this thread.
pub(crate) fn jit_tracing() -> bool {
    FRAMES.with(|f| f.borrow().iter().any(|fr| fr.jit))
}

thread_local! {
    /// Open [`concrete`] scopes on this thread: inside one, operations on constants compute.
    static CONCRETE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// True while operations on constants are staged into a `jit` trace (they become steps of
/// the program, folded when it is compiled) instead of computed: a `jit` frame is open and no
/// [`concrete`] scope is.
pub(crate) fn stages_constants() -> bool {
    CONCRETE.with(|c| c.get() == 0) && jit_tracing()
}

/// Run `f` with operations on constants computed even inside a `jit` trace (engine code that
/// needs values: folding a program's constants, probing a custom function's forward).
pub(crate) fn concrete<R>(f: impl FnOnce() -> R) -> R {
    struct Scope;
    impl Drop for Scope {
        fn drop(&mut self) {
            CONCRETE.with(|c| c.set(c.get() - 1));
        }
    }
    CONCRETE.with(|c| c.set(c.get() + 1));
    let _scope = Scope;
    f()
}

/// True if `t` is traced by an open `jit` frame (its value must not steer the computation).
pub(crate) fn jit_traced(t: &Tensor) -> bool {
    if t.tags().is_empty() {
        return false;
    }
    FRAMES.with(|f| {
        f.borrow()
            .iter()
            .any(|fr| fr.jit && t.tags().iter().any(|&(l, _)| l == fr.level))
    })
}

impl FrameGuard {
    pub(crate) fn level(&self) -> u64 {
        self.level
    }

    /// Record a new input node on this frame's tape and return `t` tagged with it.
    pub(crate) fn input(&self, t: &Tensor) -> (Tensor, u32) {
        self.new_input(|id| {
            let mut tags = t.tags().clone();
            tags.push((self.level, id));
            t.with_tags(tags)
        })
    }

    /// Record a new input node on this `jit` frame's tape and return an abstract tensor of
    /// `t`'s shape and dtype tagged with it (and nothing else: the trace records on no
    /// enclosing tape; the replay that follows does).
    pub(crate) fn abstract_input(&self, t: &Tensor) -> (Tensor, u32) {
        self.new_input(|id| abstract_input(t, self.level, id))
    }

    fn new_input(&self, value: impl FnOnce(u32) -> Tensor) -> (Tensor, u32) {
        FRAMES.with(|f| {
            let mut frames = f.borrow_mut();
            let frame = frames
                .iter_mut()
                .find(|fr| fr.level == self.level)
                .expect("internal error: frame not on the stack");
            let id = frame.tape.nodes.len() as u32;
            frame.tape.nodes.push(Node::Input);
            (value(id), id)
        })
    }

    /// Close the frame. On success, states are finalised by the frame's policy; on failure every
    /// touched state is restored to its entry value.
    pub(crate) fn close(mut self, ok: bool) -> Frame {
        self.closed = true;
        let frame = pop(self.level);
        finish_states(&frame, ok);
        frame
    }
}

impl Drop for FrameGuard {
    fn drop(&mut self) {
        if !self.closed {
            // Only reached while unwinding past the guard: restore and pop.
            let frame = pop(self.level);
            finish_states(&frame, false);
        }
    }
}

/// Run `body` with the given state values substituted at first access, as one call of the pure
/// function. Catches panics (typed operator errors become their `Error`); on failure every state
/// is restored. Returns the result and the states the call touched, in first-access order.
pub(crate) fn with_states<R>(
    overrides: HashMap<StateId, Tensor>,
    policy: ExitPolicy,
    body: impl FnOnce() -> Result<R>,
) -> Result<(R, Vec<(State, Access)>)> {
    let guard = push_frame(false, policy, overrides);
    let res = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => Err(from_panic(payload)),
    };
    let frame = guard.close(res.is_ok());
    let touched = frame.touched.into_iter().map(|(s, _, a)| (s, a)).collect();
    res.map(|r| (r, touched))
}

fn pop(level: u64) -> Frame {
    FRAMES.with(|f| {
        let mut frames = f.borrow_mut();
        let top = frames
            .pop()
            .expect("internal error: frame stack empty on close");
        assert_eq!(
            top.level, level,
            "internal error: frames closed out of order"
        );
        crate::panics::frame_closed();
        top
    })
}

fn frame_is_outermost(level: u64, outermost: &Option<u64>) -> bool {
    *outermost == Some(level)
}

fn finish_states(frame: &Frame, ok: bool) {
    finish_views(frame, ok);
    // The outermost frame on this thread ends its views. Only a state this call wrote and kept is
    // published: publishing a read-only (or restored) view would overwrite values that other
    // threads wrote meanwhile with this thread's stale copy.
    if FRAMES.with(|f| f.borrow().is_empty()) {
        let keeps = ok && frame.policy == ExitPolicy::KeepWrites;
        for (state, _, access) in &frame.touched {
            state.end_view(keeps && access.written);
        }
    }
}

fn finish_views(frame: &Frame, ok: bool) {
    for (state, entry, access) in frame.touched.iter().rev() {
        if ok && access.written && frame.policy == ExitPolicy::KeepWrites {
            let v = state.raw_value();
            if v.tags().iter().any(|&(l, _)| l == frame.level) {
                let tags: Tags = v
                    .tags()
                    .iter()
                    .copied()
                    .filter(|&(l, _)| l != frame.level)
                    .collect();
                state.raw_set(v.with_tags(tags));
            }
        } else {
            state.raw_set(entry.clone());
        }
    }
}

/// Called by [`State`] when a state is made while frames are open: it is local to every open
/// frame, whose accesses to it are not tracked.
pub(crate) fn on_state_created(id: StateId) {
    FRAMES.with(|f| {
        for frame in f.borrow_mut().iter_mut() {
            frame.created.insert(id);
        }
    });
}

/// Called by [`State`] on every read or write. Registers the access in every open frame (outer
/// first) and applies the first frame override; returns nothing, the state's stored value is the
/// current view.
pub(crate) fn on_state_access(state: &State, write: bool) {
    FRAMES.with(|f| {
        let mut frames = f.borrow_mut();
        let outermost = frames.first().map(|fr| fr.level);
        for frame in frames.iter_mut() {
            let id = state.id();
            if frame.created.contains(&id) {
                continue;
            }
            match frame.touched_index.get(&id) {
                Some(&i) => {
                    let acc = &mut frame.touched[i].2;
                    if write {
                        acc.written = true;
                    } else {
                        acc.read = true;
                    }
                }
                None => {
                    if frame_is_outermost(frame.level, &outermost) {
                        state.begin_view();
                    }
                    let entry = state.raw_value();
                    frame.touched_index.insert(id, frame.touched.len());
                    frame.touched.push((
                        state.clone(),
                        entry,
                        Access {
                            read: !write,
                            written: write,
                        },
                    ));
                    if let Some(v) = frame.overrides.get(&id) {
                        state.raw_set(v.clone());
                    } else if frame.jit {
                        let node = frame.tape.nodes.len() as u32;
                        frame.tape.nodes.push(Node::Input);
                        state.raw_set(abstract_input(&state.raw_value(), frame.level, node));
                        frame.state_inputs.push((state.clone(), node));
                    }
                }
            }
        }
    });
}

/// The abstract tensor a `jit` trace of `level` sees for `t`: its shape and dtype, tagged as
/// input `node` of that level only.
fn abstract_input(t: &Tensor, level: u64, node: u32) -> Tensor {
    let mut tags = Tags::new();
    tags.push((level, node));
    Tensor::abstract_value(t.shape().into(), t.dtype(), tags)
}

/// Record `prim(inputs) = output` on every open recording frame where an input is tagged, and
/// return the output tagged accordingly. `output` carries no tags on entry.
pub(crate) fn record(prim: &Arc<dyn Primitive>, inputs: &[&Tensor], output: Tensor) -> Tensor {
    // An operation on constants inside a `jit` trace is a step of the innermost trace.
    let staged = output.is_abstract() && inputs.iter().all(|t| !t.is_abstract());
    if !staged && inputs.iter().all(|t| t.tags().is_empty()) {
        return output;
    }
    FRAMES.with(|f| {
        let mut frames = f.borrow_mut();
        let mut tags = Tags::new();
        let mut pending = Vec::new();
        // An abstract value exists only inside a `jit` trace (or an abstract transposition):
        // frames opened before the outermost such frame never see it (a replay records there
        // instead).
        let first = if output.is_abstract() {
            frames
                .iter()
                .position(|fr| fr.sees_abstract)
                .unwrap_or(frames.len())
        } else {
            0
        };
        let innermost_jit = frames.iter().rposition(|fr| fr.jit);
        for (fi, frame) in frames
            .iter()
            .enumerate()
            .skip(first)
            .filter(|(_, fr)| fr.records)
        {
            let level = frame.level;
            let parents: Vec<Option<u32>> = inputs
                .iter()
                .map(|t| t.tags().iter().find(|&&(l, _)| l == level).map(|&(_, n)| n))
                .collect();
            if parents.iter().all(Option::is_none) && !(staged && innermost_jit == Some(fi)) {
                continue;
            }
            tags.push((level, frame.tape.nodes.len() as u32));
            pending.push((fi, parents));
        }
        if tags.is_empty() {
            return output;
        }
        // Each node keeps the output with its tags at every level (as it keeps its inputs), so a
        // VJP rule written with the output (`exp`, `tanh`, `sqrt`, `div`, ...) stays
        // differentiable at the outer levels: grad(grad(exp)) needs d(exp(x))/dx through `y`.
        let output = output.with_tags(tags);
        for (fi, parents) in pending {
            frames[fi].tape.nodes.push(Node::Op(OpNode {
                prim: prim.clone(),
                parents,
                inputs: inputs.iter().map(|&t| t.clone()).collect(),
                output: output.clone(),
            }));
        }
        output
    })
}

/// Remove the tag of `level` from a tensor (after its frame closed).
pub(crate) fn strip(t: &Tensor, level: u64) -> Tensor {
    if t.tags().iter().any(|&(l, _)| l == level) {
        t.with_tags(
            t.tags()
                .iter()
                .copied()
                .filter(|&(l, _)| l != level)
                .collect(),
        )
    } else {
        t.clone()
    }
}

/// The node of `t` on the tape of `level`, if it is recorded there.
pub(crate) fn node_of(t: &Tensor, level: u64) -> Option<u32> {
    t.tags().iter().find(|&&(l, _)| l == level).map(|&(_, n)| n)
}

/// Options of a backward pass.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BackwardOpts {
    /// Check every cotangent for NaN/Inf and name the primitive that produced it.
    pub(crate) debug_nan: bool,
    /// Leading batch dimensions of the cotangent (a chunk of rows pulled back in one pass).
    pub(crate) nb: usize,
    /// How a primitive's VJP rule runs on such a chunk (required when `nb > 0`): vmap's
    /// batching, passed in by the transform so the tape does not depend on vmap.
    pub(crate) chunk_vjp: Option<ChunkVjp>,
}

/// The VJP of a primitive for a chunk of cotangents with `nb` leading batch dimensions:
/// `(prim, inputs, output, g, needs, nb)`.
pub(crate) type ChunkVjp = fn(
    &Arc<dyn Primitive>,
    &[&Tensor],
    &Tensor,
    &Tensor,
    &[bool],
    usize,
) -> Result<Vec<Option<Tensor>>>;

/// The first primitive whose cotangent went non-finite in a `debug_nan` backward pass.
#[derive(Default)]
pub(crate) struct NanReport {
    pub(crate) first: Option<String>,
}

/// Reverse-mode sweep over a closed tape: the cotangent `cot` of node `out`, pulled back to the
/// nodes in `wanted`. Cotangents are computed with tensor operations, so an enclosing open frame
/// records them (higher-order derivatives). `None` means a symbolic zero.
pub(crate) fn backward(
    tape: &Tape,
    out: u32,
    cot: Tensor,
    wanted: &[u32],
    opts: BackwardOpts,
) -> Result<Vec<Option<Tensor>>> {
    backward_reporting(tape, out, cot, wanted, opts, &mut NanReport::default())
}

/// [`backward`], recording in `report` the first primitive whose cotangent is not finite (with
/// `debug_nan`); the sweep goes on so the caller can say which inputs were reached.
pub(crate) fn backward_reporting(
    tape: &Tape,
    out: u32,
    cot: Tensor,
    wanted: &[u32],
    opts: BackwardOpts,
    report: &mut NanReport,
) -> Result<Vec<Option<Tensor>>> {
    // A wanted node may come after `out` (the output is itself an earlier input, as in
    // f(x, y) = x): it gets no cotangent, a symbolic zero.
    let len = wanted.iter().copied().fold(out, u32::max) as usize + 1;
    let mut cots: Vec<Option<Tensor>> = vec![None; len];
    cots[out as usize] = Some(cot);
    let lowest = wanted.iter().copied().min().unwrap_or(0) as usize;
    for i in (lowest..=out as usize).rev() {
        let Some(g) = cots[i].take() else { continue };
        match &tape.nodes[i] {
            Node::Input => cots[i] = Some(g),
            Node::Op(op) => {
                if op.parents.iter().all(Option::is_none) {
                    continue;
                }
                let needs: Vec<bool> = op.parents.iter().map(Option::is_some).collect();
                let input_refs: Vec<&Tensor> = op.inputs.iter().collect();
                let grads = match (opts.nb, opts.chunk_vjp) {
                    (0, _) => op.prim.vjp(&input_refs, &op.output, &g, &needs)?,
                    (nb, Some(chunk_vjp)) => {
                        chunk_vjp(&op.prim, &input_refs, &op.output, &g, &needs, nb)?
                    }
                    (_, None) => {
                        return Err(Error::Unsupported(
                            "internal error: a chunked backward pass without a chunk rule".into(),
                        ))
                    }
                };
                let batch_shape = |x: &Tensor| -> Vec<usize> {
                    g.shape()[..opts.nb]
                        .iter()
                        .chain(x.shape())
                        .copied()
                        .collect()
                };
                for ((parent, grad), input) in op.parents.iter().zip(grads).zip(&op.inputs) {
                    let (Some(p), Some(grad)) = (parent, grad) else {
                        continue;
                    };
                    if grad.shape() != batch_shape(input).as_slice() {
                        return Err(Error::Unsupported(format!(
                            "internal error: vjp of `{}` gave shape {} for an input of shape {}",
                            op.prim.name(),
                            grad.shape_display(),
                            input.shape_display()
                        )));
                    }
                    if opts.debug_nan
                        && report.first.is_none()
                        && grad.f64_data().iter().any(|v| !v.is_finite())
                    {
                        report.first = Some(format!("{} (backward)", op.prim.name()));
                    }
                    let slot = &mut cots[*p as usize];
                    *slot = Some(match slot.take() {
                        None => grad,
                        Some(acc) => acc.try_add(&grad)?,
                    });
                }
            }
        }
    }
    Ok(wanted.iter().map(|&w| cots[w as usize].clone()).collect())
}

/// The NaN check of `debug_nan` on forward values: the first primitive on the tape whose output
/// is not finite while its inputs are.
pub(crate) fn first_nonfinite(tape: &Tape) -> Option<String> {
    tape.nodes.iter().find_map(|n| match n {
        Node::Op(op) => {
            let bad = |t: &Tensor| t.f64_data().iter().any(|v| !v.is_finite());
            (bad(&op.output) && !op.inputs.iter().any(bad)).then(|| op.prim.name().to_string())
        }
        Node::Input => None,
    })
}

/// Drop the tags of levels that are no longer open (keeps results light and fast to use).
pub(crate) fn strip_dead(t: &Tensor) -> Tensor {
    if t.tags().is_empty() {
        return t.clone();
    }
    FRAMES.with(|f| {
        let frames = f.borrow();
        let live: Tags = t
            .tags()
            .iter()
            .copied()
            .filter(|&(l, _)| frames.iter().any(|fr| fr.level == l))
            .collect();
        if live.len() == t.tags().len() {
            t.clone()
        } else {
            t.with_tags(live)
        }
    })
}

/// The states written in the frame of `level` with their current (traced) values.
pub(crate) fn frame_written_states(level: u64) -> Vec<(State, Tensor)> {
    FRAMES.with(|f| {
        f.borrow()
            .iter()
            .find(|fr| fr.level == level)
            .map(|fr| {
                fr.touched
                    .iter()
                    .filter(|(_, _, a)| a.written)
                    .map(|(s, _, _)| (s.clone(), s.raw_value()))
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// The states written so far in the innermost open frame, with their current values.
pub(crate) fn innermost_written() -> Vec<(State, Tensor)> {
    FRAMES.with(|f| {
        f.borrow()
            .last()
            .map(|fr| {
                fr.touched
                    .iter()
                    .filter(|(_, _, a)| a.written)
                    .map(|(s, _, _)| (s.clone(), s.raw_value()))
                    .collect()
            })
            .unwrap_or_default()
    })
}
