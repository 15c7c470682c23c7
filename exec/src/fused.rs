//! [`fused`]: one pass of an element-wise expression over many positions.
//!
//! The expression is a list of ops over inputs (slices or broadcast scalars) and earlier ops.
//! Positions are split into fixed chunks of [`FUSED_CHUNK`] (spread over rayon), each chunk is
//! walked in blocks of [`FUSED_BLOCK`] elements, and every op of the expression runs its vector
//! kernel over the block before the next op starts: the block's intermediates (one small buffer
//! per op) stay in L1, only the requested outputs are written to memory, and the vector kernel
//! of each op is entered once per block rather than once per element.
//!
//! On x86-64 hosts with AVX-512F, runs of consecutive ops (often the whole pass) are compiled
//! to one loop that keeps every intermediate in registers (`fused_native`), with the same
//! results bit for bit.

use rayon::prelude::*;

use crate::fused_native as native;
use crate::{BinaryOp, Element, Par, ReduceOp, UnaryOp};
use stategrad_simd::block::{binary_block, unary2_block, unary_block, Bcast, SimdVec, Src};
use stategrad_simd::isa::{with_vec, VecFn};
use stategrad_simd::reduce_all;

/// Positions per parallel task. Fixed (not derived from the thread count), so sums combine
/// the same partials in the same order for any number of threads.
pub const FUSED_CHUNK: usize = 1 << 13;

/// Positions per block: every op's intermediate for a block (1 KiB of `f32`) stays in L1.
pub const FUSED_BLOCK: usize = 256;

/// A pass is split over the rayon pool only when its work ([`fused_pass_work`]) reaches this.
/// Handing chunks to the pool and waiting for them costs tens of microseconds on the hosts
/// measured (two thread wake-ups when the caller is outside the pool): a 14-op pass (an Adam
/// update) on 2 threads was slower split than not up to 32K positions (33 against 28 µs) and
/// faster from 64K (50 against 58 µs).
pub const FUSED_PAR_MIN_WORK: usize = 1 << 20;

/// Ops a pass counts as at least, in [`fused_pass_work`]: a pass of a few ops still loads and
/// stores every position, which takes as long as several ops' arithmetic. Counting a 2-op
/// pass as 2 kept the training step's passes over 128K–400K positions (bias, ReLU and its
/// mask, the SGD updates) on one thread; split (from 64K positions whatever the op count) the
/// jitted W2 step on 2 threads went from 4.48–4.58 to 4.33–4.36 ms, 1 thread unchanged
/// (alternated processes, one AVX-512 host; BENCHMARKS.md, issue 17 session 16).
pub const FUSED_PASS_MIN_OPS: usize = 16;

/// The work of a pass of `n` positions with `ops` ops and sums, against which
/// [`tuning::fused_par_min_work`](crate::tuning::fused_par_min_work) decides whether it is
/// split: `n` times the op count, counted as at least [`FUSED_PASS_MIN_OPS`].
///
/// ```
/// use stategrad_exec::{fused_pass_work, FUSED_PAR_MIN_WORK};
/// assert!(fused_pass_work(1 << 16, 1) >= FUSED_PAR_MIN_WORK);
/// assert!(fused_pass_work(1 << 15, 14) < FUSED_PAR_MIN_WORK);
/// ```
pub fn fused_pass_work(n: usize, ops: usize) -> usize {
    n.saturating_mul(ops.max(FUSED_PASS_MIN_OPS))
}

/// Operand of a fused op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FusedArg {
    /// Input `i` of the pass.
    Input(usize),
    /// The result of op `k` (an earlier op).
    Op(usize),
}

/// One element-wise op of a fused expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FusedOp {
    /// `op(a)`.
    Unary(UnaryOp, FusedArg),
    /// `op(a, b)`.
    Binary(BinaryOp, FusedArg, FusedArg),
    /// `a` itself (a copy, or a scalar broadcast to every position).
    Copy(FusedArg),
    /// `a * b + c`, rounded after the product and after the sum (the numbers of a `Mul` then
    /// an `Add`, in one pass over the block).
    MulAdd(FusedArg, FusedArg, FusedArg),
    /// `c - a * b`, rounded as a `Mul` then a `Sub`.
    NegMulAdd(FusedArg, FusedArg, FusedArg),
}

impl FusedOp {
    /// The op's operands, in order.
    ///
    /// ```
    /// use stategrad_exec::{BinaryOp, FusedArg, FusedOp};
    /// let op = FusedOp::Binary(BinaryOp::Add, FusedArg::Input(0), FusedArg::Op(1));
    /// assert!(op.operands().eq([FusedArg::Input(0), FusedArg::Op(1)]));
    /// ```
    pub fn operands(&self) -> impl Iterator<Item = FusedArg> {
        let (a, b, c) = match *self {
            FusedOp::Unary(_, a) | FusedOp::Copy(a) => (Some(a), None, None),
            FusedOp::Binary(_, a, b) => (Some(a), Some(b), None),
            FusedOp::MulAdd(a, b, c) | FusedOp::NegMulAdd(a, b, c) => (Some(a), Some(b), Some(c)),
        };
        [a, b, c].into_iter().flatten()
    }

    /// Replaces each operand `a` by `f(a)` (renumbering ops, say).
    ///
    /// ```
    /// use stategrad_exec::{FusedArg, FusedOp, UnaryOp};
    /// let mut op = FusedOp::Unary(UnaryOp::Exp, FusedArg::Op(3));
    /// op.map_operands(|a| match a {
    ///     FusedArg::Op(k) => FusedArg::Op(k - 1),
    ///     i => i,
    /// });
    /// assert_eq!(op, FusedOp::Unary(UnaryOp::Exp, FusedArg::Op(2)));
    /// ```
    pub fn map_operands(&mut self, f: impl Fn(FusedArg) -> FusedArg) {
        match self {
            FusedOp::Unary(_, a) | FusedOp::Copy(a) => *a = f(*a),
            FusedOp::Binary(_, a, b) => (*a, *b) = (f(*a), f(*b)),
            FusedOp::MulAdd(a, b, c) | FusedOp::NegMulAdd(a, b, c) => {
                (*a, *b, *c) = (f(*a), f(*b), f(*c))
            }
        }
    }
}

/// An input of a fused pass.
#[derive(Clone, Copy, Debug)]
pub enum FusedInput<'a, T> {
    /// One element per position.
    Slice(&'a [T]),
    /// One value for every position.
    Scalar(T),
    /// The initial contents of output `j` (its index in [`FusedOutputs::values`]): an input
    /// whose buffer is reused for that output (an in-place update). Each block of it is read
    /// before that block of the output is written.
    Output(usize),
}

/// Where a fused pass puts its results.
#[derive(Debug)]
pub struct FusedOutputs<'o, T> {
    /// `(op, buffer)`: the value of op `k` at every position is written to the buffer.
    pub values: Vec<(usize, &'o mut [T])>,
    /// Operands whose values are summed over all positions.
    pub sums: Vec<FusedArg>,
}

/// A raw output pointer shared by the chunk tasks; each task writes only its own chunk.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: tasks write disjoint ranges of the buffer behind the pointer (see `fused`), and the
// buffer outlives the parallel section (it is borrowed mutably for the whole call).
unsafe impl<T: Send> Send for OutPtr<T> {}
// SAFETY: as above; no two tasks touch the same element.
unsafe impl<T: Send> Sync for OutPtr<T> {}

/// Evaluates `ops` at `n` positions, writing the values of `out.values` and returning the sums
/// of `out.sums` (in that order). Sums add one partial per [`FUSED_CHUNK`] in chunk order, so
/// the result does not depend on the thread count.
///
/// Transcendental ops use their vector path with the usual per-lane `std` fallback (see the
/// crate's accuracy notes), on blocks of any length.
///
/// # Errors
/// A [`FusedError`] (and nothing is computed or written) if an op reads itself or a later op,
/// an index is out of range, or an input slice or output buffer does not have `n` elements.
///
/// # Example
/// ```
/// use stategrad_exec::{fused, BinaryOp, FusedArg, FusedInput, FusedOp, FusedOutputs, Par, UnaryOp};
/// // y = x * x + 1, and sum(y)
/// let x = [1.0f32, 2.0, 3.0];
/// let ops = [
///     FusedOp::Unary(UnaryOp::Square, FusedArg::Input(0)),
///     FusedOp::Binary(BinaryOp::Add, FusedArg::Op(0), FusedArg::Input(1)),
/// ];
/// let mut y = [0.0f32; 3];
/// let sums = fused(
///     &ops,
///     &[FusedInput::Slice(&x), FusedInput::Scalar(1.0)],
///     FusedOutputs { values: vec![(1, &mut y[..])], sums: vec![FusedArg::Op(1)] },
///     3,
///     Par::Seq,
/// )
/// .unwrap();
/// assert_eq!(y, [2.0, 5.0, 10.0]);
/// assert_eq!(sums, vec![17.0]);
/// ```
pub fn fused<T: Element>(
    ops: &[FusedOp],
    inputs: &[FusedInput<'_, T>],
    out: FusedOutputs<'_, T>,
    n: usize,
    par: Par,
) -> Result<Vec<T>, FusedError> {
    fused_with(ops, inputs, out, n, par, NativeCode::Tiered)
}

/// Why [`fused`] refused a pass (before computing anything).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FusedError {
    /// Op `op` reads an input that does not exist, or an op that is not before it.
    BadOperand {
        /// The op's index.
        op: usize,
    },
    /// Input `input` is a slice whose length is not the pass's length.
    InputLength {
        /// The input's index.
        input: usize,
        /// Its length.
        len: usize,
    },
    /// Input `input` reads output `output`, which does not exist.
    BadAliasedOutput {
        /// The input's index.
        input: usize,
        /// The output it names.
        output: usize,
    },
    /// Output `output` is the value of op `op`, which does not exist.
    BadOutputOp {
        /// The output's index.
        output: usize,
        /// The op it names.
        op: usize,
    },
    /// Output `output`'s buffer length is not the pass's length.
    OutputLength {
        /// The output's index.
        output: usize,
        /// Its length.
        len: usize,
    },
    /// Sum `sum` reads an input or op that does not exist.
    BadSum {
        /// The sum's index.
        sum: usize,
    },
    /// The pass is too long to keep one partial per chunk and sum in memory.
    TooLong,
}

impl std::fmt::Display for FusedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FusedError::BadOperand { op } => write!(
                f,
                "fused: op {op} reads an input or op that does not exist before it"
            ),
            FusedError::InputLength { input, len } => {
                write!(f, "fused: input {input} has {len} elements, not the pass's")
            }
            FusedError::BadAliasedOutput { input, output } => write!(
                f,
                "fused: input {input} reads output {output}, which does not exist"
            ),
            FusedError::BadOutputOp { output, op } => {
                write!(f, "fused: output {output} is op {op}, which does not exist")
            }
            FusedError::OutputLength { output, len } => {
                write!(
                    f,
                    "fused: output {output} has {len} elements, not the pass's"
                )
            }
            FusedError::BadSum { sum } => {
                write!(f, "fused: sum {sum} reads an operand that does not exist")
            }
            FusedError::TooLong => write!(f, "fused: the pass is too long"),
        }
    }
}

impl std::error::Error for FusedError {}

/// When a pass runs generated code (where the host has it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NativeCode {
    /// Never: the block kernels only.
    #[cfg_attr(not(test), allow(dead_code))]
    Never,
    /// Once its structure has gone through [`crate::tuning::fused_native_after_elements`]
    /// positions.
    Tiered,
    /// From this call on.
    #[cfg_attr(not(test), allow(dead_code))]
    Now,
}

/// [`fused`], with generated code when `native` says (the same bits either way; tests compare
/// the two).
pub(crate) fn fused_with<T: Element>(
    ops: &[FusedOp],
    inputs: &[FusedInput<'_, T>],
    out: FusedOutputs<'_, T>,
    n: usize,
    par: Par,
    native: NativeCode,
) -> Result<Vec<T>, FusedError> {
    check(ops, inputs, &out, n)?;
    let n_chunks = n.div_ceil(FUSED_CHUNK);
    // One row of partial sums per chunk (at least one element, so every chunk gets a row).
    let row = out.sums.len().max(1);
    let partials_len = n_chunks.checked_mul(row).ok_or(FusedError::TooLong)?;
    // A pass of scalars only has no slice bounding its length: the partials of an absurd one
    // are refused here rather than aborting the process in the allocator.
    let mut partials: Vec<T> = Vec::new();
    partials
        .try_reserve_exact(partials_len)
        .map_err(|_| FusedError::TooLong)?;
    partials.resize(partials_len, T::ZERO);
    let outputs: Vec<usize> = out.values.iter().map(|(k, _)| *k).collect();
    let direct = direct_op(ops, &outputs, &out.sums);
    let native = match native {
        NativeCode::Never => None,
        _ if n < NATIVE_MIN_LEN => None,
        NativeCode::Tiered => native::plan(ops, inputs, &outputs, &out.sums, direct, n),
        NativeCode::Now => native::plan(ops, inputs, &outputs, &out.sums, direct, usize::MAX),
    };
    let native = native.as_deref();
    let layout = PassLayout::new(ops, inputs, &outputs, direct, native);
    let targets: Vec<(usize, OutPtr<T>)> = out
        .values
        .into_iter()
        .map(|(k, b)| (k, OutPtr(b.as_mut_ptr())))
        .collect();
    let n_sums = out.sums.len();
    let task = |scratch: &mut Vec<T>, c: usize, part: &mut [T]| {
        let start = c * FUSED_CHUNK;
        let end = n.min(start + FUSED_CHUNK);
        let outs: Vec<(usize, &mut [T])> = targets
            .iter()
            .map(|&(k, p)| {
                // SAFETY: `p` points to a buffer of `n` elements (checked), borrowed mutably for
                // this call; chunk `c` is `start..end` within it and no other task uses it.
                (k, unsafe {
                    std::slice::from_raw_parts_mut(p.0.add(start), end - start)
                })
            })
            .collect();
        run_chunk(
            ops,
            inputs,
            native,
            &layout,
            outs,
            &out.sums,
            start,
            end,
            scratch,
            &mut part[..n_sums],
        );
    };
    // Waking the pool costs more than a short pass saves (see FUSED_PAR_MIN_WORK), and with
    // one thread a split only adds the hand-off to the pool.
    let work = fused_pass_work(n, ops.len() + n_sums);
    if par.splits() && n_chunks > 1 && work >= crate::tuning::fused_par_min_work() {
        partials
            .par_chunks_mut(row)
            .enumerate()
            .for_each_init(Vec::new, |s, (c, p)| task(s, c, p));
    } else {
        let mut scratch = Vec::new();
        for (c, p) in partials.chunks_mut(row).enumerate() {
            task(&mut scratch, c, p);
        }
    }
    let mut sums = vec![T::ZERO; n_sums];
    for p in partials.chunks(row) {
        for (s, v) in sums.iter_mut().zip(p) {
            *s += *v;
        }
    }
    Ok(sums)
}

/// What every chunk of a pass shares (made once per call).
struct PassLayout<T> {
    /// `(input, output)`: inputs read from an output's buffer. One scratch block per op, then
    /// one per such input (copied in at the start of each block, before anything writes that
    /// block of the output).
    aliased: Vec<(usize, usize)>,
    /// The output (its index in the outputs) that the last op writes straight into, when it is
    /// an output that no sum reads (no block copy).
    direct: Option<usize>,
    /// Op `k` pairs with op `k + 1` when both are unary ops of one operand (run in one loop).
    paired: Vec<bool>,
    /// The scalars each generated run reads, in its table order.
    run_scalars: Vec<Vec<T>>,
}

impl<T: Element> PassLayout<T> {
    fn new(
        ops: &[FusedOp],
        inputs: &[FusedInput<'_, T>],
        outputs: &[usize],
        direct_op: Option<usize>,
        native: Option<&native::Plan>,
    ) -> Self {
        let aliased = inputs
            .iter()
            .enumerate()
            .filter_map(|(i, x)| match x {
                FusedInput::Output(j) => Some((i, *j)),
                _ => None,
            })
            .collect();
        let direct = direct_op.and_then(|d| outputs.iter().position(|&k| k == d));
        let covered = |k: usize| native.is_some_and(|p| p.covers(k));
        let paired = (0..ops.len())
            .map(|k| match (ops[k], ops.get(k + 1)) {
                (FusedOp::Unary(_, a), Some(&FusedOp::Unary(_, b))) => {
                    let run_or_direct = covered(k) || covered(k + 1) || direct_op == Some(k + 1);
                    a == b && !run_or_direct
                }
                _ => false,
            })
            .collect();
        let run_scalars = native.map_or(Vec::new(), |p| {
            p.runs
                .iter()
                .map(|r| {
                    r.scalars
                        .iter()
                        .map(|&i| match inputs[i] {
                            FusedInput::Scalar(v) => v,
                            _ => unreachable!("a run's scalars are scalar inputs"),
                        })
                        .collect()
                })
                .collect()
        });
        Self {
            aliased,
            direct,
            paired,
            run_scalars,
        }
    }
}

/// Passes shorter than this never make or look up generated code (a few blocks: the lookup
/// would cost more than it saves).
const NATIVE_MIN_LEN: usize = 4 * FUSED_BLOCK;

/// The op written straight into its output buffer rather than through a scratch block: the
/// last op, when it is exactly one output and no sum reads it. Every other output is copied
/// from the op's scratch block, which a direct op never fills: an op that is two outputs goes
/// through its scratch block like any other.
fn direct_op(ops: &[FusedOp], outputs: &[usize], sums: &[FusedArg]) -> Option<usize> {
    let last = ops.len().checked_sub(1)?;
    let once = outputs.iter().filter(|&&k| k == last).count() == 1;
    (once && !sums.contains(&FusedArg::Op(last))).then_some(last)
}

/// Everything the pass indexes with: operands, aliased outputs, output ops and sums in range,
/// every slice and buffer of `n` elements (the chunk tasks index them without checks).
fn check<T>(
    ops: &[FusedOp],
    inputs: &[FusedInput<'_, T>],
    out: &FusedOutputs<'_, T>,
    n: usize,
) -> Result<(), FusedError> {
    let arg_ok = |a: FusedArg, k: usize| match a {
        FusedArg::Input(i) => i < inputs.len(),
        FusedArg::Op(j) => j < k,
    };
    for (k, op) in ops.iter().enumerate() {
        if !op.operands().all(|a| arg_ok(a, k)) {
            return Err(FusedError::BadOperand { op: k });
        }
    }
    for (i, x) in inputs.iter().enumerate() {
        match *x {
            FusedInput::Slice(s) if s.len() != n => {
                return Err(FusedError::InputLength {
                    input: i,
                    len: s.len(),
                })
            }
            FusedInput::Output(j) if j >= out.values.len() => {
                return Err(FusedError::BadAliasedOutput {
                    input: i,
                    output: j,
                })
            }
            _ => {}
        }
    }
    for (j, (k, b)) in out.values.iter().enumerate() {
        if *k >= ops.len() {
            return Err(FusedError::BadOutputOp { output: j, op: *k });
        }
        if b.len() != n {
            return Err(FusedError::OutputLength {
                output: j,
                len: b.len(),
            });
        }
    }
    match out.sums.iter().position(|s| !arg_ok(*s, ops.len())) {
        Some(sum) => Err(FusedError::BadSum { sum }),
        None => Ok(()),
    }
}

/// An operand within one block: a slice of the block's length or a scalar.
#[derive(Clone, Copy)]
enum Val<'a, T> {
    Block(&'a [T]),
    Scalar(T),
}

#[allow(clippy::too_many_arguments)]
fn run_chunk<T: Element>(
    ops: &[FusedOp],
    inputs: &[FusedInput<'_, T>],
    native: Option<&native::Plan>,
    layout: &PassLayout<T>,
    mut outs: Vec<(usize, &mut [T])>,
    sums: &[FusedArg],
    start: usize,
    end: usize,
    scratch: &mut Vec<T>,
    part: &mut [T],
) {
    let PassLayout {
        aliased,
        direct,
        paired,
        run_scalars,
    } = layout;
    let slot_of = |i: usize| aliased.iter().position(|&(a, _)| a == i).unwrap_or(0);
    // Blocks start on 64-byte boundaries: a vector load or store that straddles two cache lines
    // costs twice, and a load of a block just stored across lines cannot be forwarded from the
    // store (measured: 7 cycles per op per vector unaligned, against 1–2 aligned).
    let needed = (ops.len() + aliased.len()) * FUSED_BLOCK;
    scratch.resize(needed + 64 / std::mem::size_of::<T>(), T::ZERO);
    let at = scratch
        .as_ptr()
        .align_offset(64)
        .min(scratch.len() - needed);
    let (scratch, alias_buf) = scratch[at..at + needed].split_at_mut(ops.len() * FUSED_BLOCK);
    let direct = *direct;
    let last = ops.len().wrapping_sub(1);
    let mut b0 = start;
    if let Some(run) = native.filter(|p| p.whole).map(|p| &p.runs[0]) {
        // One call for the chunk's whole vectors (no block state to keep in L1); the rest, or
        // all of it when a lane needs `std`, goes block by block below.
        let body = (end - start) / (run.step / size_of::<T>()) * (run.step / size_of::<T>());
        let mut table = [std::ptr::null_mut::<u8>(); native::MAX_BASES];
        for (t, base) in table.iter_mut().zip(&run.bases) {
            *t = match (*base, direct) {
                (native::Base::Input(i), _) => match inputs[i] {
                    FusedInput::Slice(s) => s[start..end].as_ptr().cast_mut().cast(),
                    FusedInput::Output(j) => outs[j].1.as_mut_ptr().cast(),
                    FusedInput::Scalar(_) => unreachable!("scalars are not bases"),
                },
                (native::Base::Direct, Some(d)) => outs[d].1.as_mut_ptr().cast(),
                _ => unreachable!("a whole-pass run writes the direct output only"),
            };
        }
        // SAFETY: every base points at the chunk's `end - start >= body` elements (input
        // slices only read; the direct output, which an input may share, borrowed mutably by
        // this task alone), the scalars are the run's, and `body` is a whole number of the
        // run's steps.
        if body > 0 && unsafe { run.call(&table, &run_scalars[0], body) } {
            b0 += body;
        }
    }
    while b0 < end {
        let len = FUSED_BLOCK.min(end - b0);
        let off = b0 - start;
        for (slot, &(_, j)) in aliased.iter().enumerate() {
            alias_buf[slot * FUSED_BLOCK..slot * FUSED_BLOCK + len]
                .copy_from_slice(&outs[j].1[off..off + len]);
        }
        let alias: &[T] = alias_buf;
        let aliased_block = |i: usize| {
            let s = slot_of(i) * FUSED_BLOCK;
            &alias[s..s + len]
        };
        // Ops before this one were done (by a pair or a run of generated code).
        let mut next = 0;
        for (k, op) in ops.iter().enumerate() {
            if k < next {
                continue;
            }
            // The code covers whole loop iterations (one or two vectors): a shorter last block
            // of the pass runs on the kernels.
            let covers = |run: &native::Run| (len * size_of::<T>()).is_multiple_of(run.step);
            if let Some((r, run)) = native.and_then(|p| p.run_at(k)).filter(|(_, r)| covers(r)) {
                let scratch_at = scratch.as_mut_ptr();
                let mut table = [std::ptr::null_mut::<u8>(); native::MAX_BASES];
                for (t, base) in table.iter_mut().zip(&run.bases) {
                    *t = match *base {
                        native::Base::Input(i) => match inputs[i] {
                            FusedInput::Slice(s) => s[b0..b0 + len].as_ptr().cast_mut().cast(),
                            FusedInput::Output(_) => aliased_block(i).as_ptr().cast_mut().cast(),
                            FusedInput::Scalar(_) => unreachable!("scalars are not bases"),
                        },
                        // SAFETY: op `j`'s scratch block lies inside `scratch`.
                        native::Base::Scratch(j) => unsafe {
                            scratch_at.add(j * FUSED_BLOCK).cast()
                        },
                        native::Base::Direct => match direct {
                            Some(d) => outs[d].1[off..off + len].as_mut_ptr().cast(),
                            None => unreachable!("a direct base exists only with a direct output"),
                        },
                    };
                }
                // SAFETY: every base points at `len` elements of a buffer that lives through
                // the call (input slices and the alias block are only read; the run stores only
                // to scratch blocks and the direct output, which nothing else borrows now), the
                // scalars are the run's, and `len` is a whole number of the run's steps.
                if unsafe { run.call(&table, &run_scalars[r], len) } {
                    next = run.end;
                    continue;
                }
                // A lane needs `std`: the block kernels redo the run's ops on this block (over
                // the code's partial results; their inputs are untouched).
            }
            let (done, rest) = scratch.split_at_mut(k * FUSED_BLOCK);
            if paired[k] {
                let (FusedOp::Unary(u0, a), FusedOp::Unary(u1, _)) = (*op, ops[k + 1]) else {
                    unreachable!("paired ops are unary")
                };
                let x = match a {
                    FusedArg::Op(j) => Some(&done[j * FUSED_BLOCK..j * FUSED_BLOCK + len]),
                    FusedArg::Input(i) => match inputs[i] {
                        FusedInput::Slice(s) => Some(&s[b0..b0 + len]),
                        FusedInput::Output(_) => Some(aliased_block(i)),
                        FusedInput::Scalar(_) => None,
                    },
                };
                if let Some(x) = x {
                    let (d0, d1) = rest.split_at_mut(FUSED_BLOCK);
                    unary2_block((u0, u1), x, &mut d0[..len], &mut d1[..len]);
                    next = k + 2;
                    continue;
                }
            }
            let dst = match direct {
                Some(d) if k == last => &mut outs[d].1[off..off + len],
                _ => &mut rest[..len],
            };
            let get = |a: FusedArg| -> Val<'_, T> {
                match a {
                    FusedArg::Op(j) => Val::Block(&done[j * FUSED_BLOCK..j * FUSED_BLOCK + len]),
                    FusedArg::Input(i) => match inputs[i] {
                        FusedInput::Slice(s) => Val::Block(&s[b0..b0 + len]),
                        FusedInput::Output(_) => Val::Block(aliased_block(i)),
                        FusedInput::Scalar(v) => Val::Scalar(v),
                    },
                }
            };
            match *op {
                FusedOp::Unary(u, a) => match get(a) {
                    Val::Block(x) => unary_block(u, x, dst, true),
                    Val::Scalar(v) => dst.fill(stategrad_simd::reference::unary_op(u, v)),
                },
                FusedOp::Binary(b, x, y) => match (get(x), get(y)) {
                    (Val::Block(x), Val::Block(y)) => binary_block(b, x, y, dst, true),
                    (Val::Block(x), Val::Scalar(y)) => bin(b, x, Bcast(y), dst),
                    (Val::Scalar(x), Val::Block(y)) => bin(b, Bcast(x), y, dst),
                    (Val::Scalar(x), Val::Scalar(y)) => {
                        dst.fill(stategrad_simd::reference::binary_op(b, x, y))
                    }
                },
                FusedOp::MulAdd(x, y, z) => mul_add(get(x), get(y), get(z), false, dst),
                FusedOp::NegMulAdd(x, y, z) => mul_add(get(x), get(y), get(z), true, dst),
                FusedOp::Copy(a) => match get(a) {
                    Val::Block(x) => dst.copy_from_slice(x),
                    Val::Scalar(v) => dst.fill(v),
                },
            }
        }
        for (i, (k, o)) in outs.iter_mut().enumerate() {
            if direct != Some(i) {
                o[off..off + len]
                    .copy_from_slice(&scratch[*k * FUSED_BLOCK..*k * FUSED_BLOCK + len]);
            }
        }
        for (acc, s) in part.iter_mut().zip(sums) {
            *acc += match *s {
                FusedArg::Op(j) => reduce_all(
                    ReduceOp::Sum,
                    &scratch[j * FUSED_BLOCK..j * FUSED_BLOCK + len],
                ),
                FusedArg::Input(i) => match inputs[i] {
                    FusedInput::Slice(x) => reduce_all(ReduceOp::Sum, &x[b0..b0 + len]),
                    FusedInput::Output(_) => reduce_all(ReduceOp::Sum, aliased_block(i)),
                    FusedInput::Scalar(v) => v * T::from_f64(len as f64),
                },
            };
        }
        b0 += len;
    }
}

#[inline(always)]
fn bin<T: Element, A: Src<T>, B: Src<T>>(op: BinaryOp, a: A, b: B, dst: &mut [T]) {
    binary_block(op, a, b, dst, true)
}

/// `dst = a * b + c` (or `c - a * b`) for any mix of blocks and scalars.
fn mul_add<T: Element>(a: Val<'_, T>, b: Val<'_, T>, c: Val<'_, T>, neg: bool, dst: &mut [T]) {
    use Val::{Block as K, Scalar as S};
    match (a, b, c) {
        (K(a), K(b), K(c)) => fma_block(a, b, c, neg, dst),
        (K(a), K(b), S(c)) => fma_block(a, b, Bcast(c), neg, dst),
        (K(a), S(b), K(c)) => fma_block(a, Bcast(b), c, neg, dst),
        (K(a), S(b), S(c)) => fma_block(a, Bcast(b), Bcast(c), neg, dst),
        (S(a), K(b), K(c)) => fma_block(Bcast(a), b, c, neg, dst),
        (S(a), K(b), S(c)) => fma_block(Bcast(a), b, Bcast(c), neg, dst),
        (S(a), S(b), K(c)) => fma_block(Bcast(a), Bcast(b), c, neg, dst),
        (S(a), S(b), S(c)) => dst.fill(if neg { c - a * b } else { a * b + c }),
    }
}

/// [`fma_v`] on the vector type of the ISA the kernels run on.
fn fma_block<T: Element, A: Src<T>, B: Src<T>, C: Src<T>>(
    a: A,
    b: B,
    c: C,
    neg: bool,
    out: &mut [T],
) {
    struct F<'a, T, A, B, C>(A, B, C, bool, &'a mut [T]);
    impl<T: Element, A: Src<T>, B: Src<T>, C: Src<T>> VecFn<T> for F<'_, T, A, B, C> {
        type Output = ();
        #[inline(always)]
        fn call<V: SimdVec<Elem = T>>(self) {
            fma_v::<V, A, B, C>(self.0, self.1, self.2, self.3, self.4)
        }
    }
    with_vec(F(a, b, c, neg, out))
}

#[inline(always)]
fn fma_v<V: SimdVec, A: Src<V::Elem>, B: Src<V::Elem>, C: Src<V::Elem>>(
    a: A,
    b: B,
    c: C,
    neg: bool,
    out: &mut [V::Elem],
) {
    let l = V::LANES;
    let body = out.len() - out.len() % l;
    for (ci, o) in out[..body].chunks_exact_mut(l).enumerate() {
        let i = ci * l;
        let p: V = a.vec::<V>(i) * b.vec(i);
        let r = if neg { c.vec::<V>(i) - p } else { p + c.vec(i) };
        r.store(o);
    }
    for (i, o) in out.iter_mut().enumerate().skip(body) {
        let p = a.get(i) * b.get(i);
        *o = if neg { c.get(i) - p } else { p + c.get(i) };
    }
}
