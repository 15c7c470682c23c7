//! Arena programs: a list of steps over one flat buffer (the arena), each reading earlier
//! parts of it and writing its own slot. A compiled small `jit` program runs this way: every
//! value has a fixed offset, every step is specialised when the program is built, and nothing
//! is allocated per call.
//!
//! An [`ArenaProgram`] runs its steps as closures built once per step, or — where the target
//! has a native code generator (the `native` feature, Cranelift) — as one generated function in
//! which the simple steps (arithmetic on short slots, one-element ops, short sums, dot
//! products) are inlined with their values kept in registers, and every other step is a call
//! into its closure. Both give the same bits: the inlined steps are exact IEEE operations in the
//! order the closures perform them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::arena_loop::ArenaLoop;
use crate::codegen::{self, Code};
use crate::tuning;
use crate::{BinaryOp, Element, Par, ReduceOp, UnaryOp};
use stategrad_simd::reference;

/// An operand of an elementwise binary step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArenaOpd {
    /// The step's length of elements from this offset.
    Slice(usize),
    /// The one element at this offset, broadcast.
    Splat(usize),
    /// A constant value, broadcast.
    Imm(f64),
}

/// One step of an arena program. Offsets are in elements; every operand lies below the step's
/// output slot (`out`), which it writes whole.
#[derive(Clone, Debug, PartialEq)]
pub enum ArenaStep {
    /// `out[..n] = op(x[..n])`.
    Unary {
        /// The op.
        op: UnaryOp,
        /// Operand offset.
        x: usize,
        /// Output offset.
        out: usize,
        /// Elements.
        n: usize,
    },
    /// `out[..n] = op(a, b)` elementwise.
    Binary {
        /// The op.
        op: BinaryOp,
        /// Left operand.
        a: ArenaOpd,
        /// Right operand.
        b: ArenaOpd,
        /// Output offset.
        out: usize,
        /// Elements.
        n: usize,
    },
    /// `out[0] = op(x[0])`.
    Unary1 {
        /// The op.
        op: UnaryOp,
        /// Operand offset.
        x: usize,
        /// Output offset.
        out: usize,
    },
    /// `out[0] = op(a, b)`.
    Binary1 {
        /// The op.
        op: BinaryOp,
        /// Left operand.
        a: ArenaOpd,
        /// Right operand.
        b: ArenaOpd,
        /// Output offset.
        out: usize,
    },
    /// `out[0] = sum(x[..n])`, as [`reduce_all`](stategrad_simd::reduce_all).
    Sum {
        /// Operand offset.
        x: usize,
        /// Elements summed.
        n: usize,
        /// Output offset.
        out: usize,
    },
    /// `out[i * n + j] = a[i * rsa] * b[j * csb]`: a product with one inner index.
    Outer {
        /// Left factor offset.
        a: usize,
        /// Its stride.
        rsa: usize,
        /// Right factor offset.
        b: usize,
        /// Its stride.
        csb: usize,
        /// Rows.
        m: usize,
        /// Columns.
        n: usize,
        /// Output offset.
        out: usize,
    },
    /// `out[0] = dot(a[0], a[sa], …; b[0], b[sb], …)` over `k` terms, as [`dot`](stategrad_simd::dot).
    Dot {
        /// Left offset.
        a: usize,
        /// Its stride.
        sa: usize,
        /// Right offset.
        b: usize,
        /// Its stride.
        sb: usize,
        /// Terms.
        k: usize,
        /// Output offset.
        out: usize,
    },
    /// A step given as a closure ([`ArenaFn`]) that writes `out[..n]`.
    Call {
        /// Output offset.
        out: usize,
        /// Elements written.
        n: usize,
    },
}

/// A step as a closure over the whole arena.
pub type ArenaFn<T> = Box<dyn Fn(&mut [T]) + Send + Sync>;

/// A binary operand at run time.
#[derive(Clone, Copy)]
enum Val<'a, T> {
    S(&'a [T]),
    C(T),
}

/// Operand `o` of an `n`-element step, read from the part of the arena below its output.
fn val<T: Element>(lo: &[T], o: ArenaOpd, n: usize) -> Val<'_, T> {
    match o {
        ArenaOpd::Slice(off) => Val::S(&lo[off..off + n]),
        ArenaOpd::Splat(off) => Val::C(lo[off]),
        ArenaOpd::Imm(v) => Val::C(T::from_f64(v)),
    }
}

/// `out[0] = f(a, b)` with the operand forms resolved now.
fn scalar_step<T: Element>(
    f: impl Fn(T, T) -> T + Copy + Send + Sync + 'static,
    a: ArenaOpd,
    b: ArenaOpd,
    out: usize,
) -> ArenaFn<T> {
    let at = |o: ArenaOpd| match o {
        ArenaOpd::Slice(p) | ArenaOpd::Splat(p) => Ok(p),
        ArenaOpd::Imm(v) => Err(T::from_f64(v)),
    };
    match (at(a), at(b)) {
        (Ok(p), Ok(q)) => Box::new(move |r: &mut [T]| r[out] = f(r[p], r[q])),
        (Ok(p), Err(y)) => Box::new(move |r: &mut [T]| r[out] = f(r[p], y)),
        (Err(x), Ok(q)) => Box::new(move |r: &mut [T]| r[out] = f(x, r[q])),
        (Err(x), Err(y)) => {
            let v = f(x, y);
            Box::new(move |r: &mut [T]| r[out] = v)
        }
    }
}

/// A closure giving `kernel` the step's two operands (read below `out`) and its output slot.
fn binary_step<T: Element>(
    a: ArenaOpd,
    b: ArenaOpd,
    out: usize,
    n: usize,
    kernel: impl Fn(Val<'_, T>, Val<'_, T>, &mut [T]) + Send + Sync + 'static,
) -> ArenaFn<T> {
    Box::new(move |r: &mut [T]| {
        let (lo, hi) = r.split_at_mut(out);
        kernel(val(lo, a, n), val(lo, b, n), &mut hi[..n]);
    })
}

/// `out[..n] = f(a, b)` elementwise.
fn map_step<T: Element>(
    f: impl Fn(T, T) -> T + Copy + Send + Sync + 'static,
    a: ArenaOpd,
    b: ArenaOpd,
    out: usize,
    n: usize,
) -> ArenaFn<T> {
    binary_step(a, b, out, n, move |a, b, out| match (a, b) {
        (Val::S(a), Val::S(b)) => out
            .iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(o, (&a, &b))| *o = f(a, b)),
        (Val::S(a), Val::C(b)) => out.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a, b)),
        (Val::C(a), Val::S(b)) => out.iter_mut().zip(b).for_each(|(o, &b)| *o = f(a, b)),
        (Val::C(a), Val::C(b)) => out.fill(f(a, b)),
    })
}

/// `out[..n] = op(a, b)` through the SIMD kernels (ops other than the four arithmetic ones, at
/// `SIMD_MIN_LEN` elements or more: what eager code runs).
fn kernel_binary_step<T: Element>(
    op: BinaryOp,
    a: ArenaOpd,
    b: ArenaOpd,
    out: usize,
    n: usize,
) -> ArenaFn<T> {
    binary_step(a, b, out, n, move |a, b, out| match (a, b) {
        (Val::S(a), Val::S(b)) => stategrad_simd::binary(op, a, b, out, Par::Seq),
        (Val::S(a), Val::C(b)) => stategrad_simd::binary_scalar(op, a, b, out, Par::Seq),
        (Val::C(a), Val::S(b)) => stategrad_simd::scalar_binary(op, a, b, out, Par::Seq),
        (Val::C(a), Val::C(b)) => out.fill(reference::binary_op(op, a, b)),
    })
}

impl ArenaStep {
    /// This step as a closure over the arena (`None` for [`ArenaStep::Call`], which is one).
    /// Each op computes what the slice kernels compute on the same operands.
    pub fn closure<T: Element>(&self) -> Option<ArenaFn<T>> {
        macro_rules! by_op {
            ($op:expr, $mk:ident, $($arg:expr),*) => {
                match $op {
                    BinaryOp::Add => $mk(|a: T, b: T| a + b, $($arg),*),
                    BinaryOp::Sub => $mk(|a: T, b: T| a - b, $($arg),*),
                    BinaryOp::Mul => $mk(|a: T, b: T| a * b, $($arg),*),
                    BinaryOp::Div => $mk(|a: T, b: T| a / b, $($arg),*),
                    op => $mk(move |a: T, b: T| reference::binary_op(op, a, b), $($arg),*),
                }
            };
        }
        Some(match *self {
            ArenaStep::Binary1 { op, a, b, out } => by_op!(op, scalar_step, a, b, out),
            // Below `SIMD_MIN_LEN` the slice kernels compute every op with std math per element.
            ArenaStep::Binary { op, a, b, out, n }
                if n < stategrad_simd::SIMD_MIN_LEN
                    || matches!(
                        op,
                        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div
                    ) =>
            {
                by_op!(op, map_step, a, b, out, n)
            }
            ArenaStep::Unary1 { op, x, out } => match op {
                UnaryOp::Neg => Box::new(move |r: &mut [T]| r[out] = -r[x]),
                UnaryOp::Square => Box::new(move |r: &mut [T]| r[out] = r[x] * r[x]),
                op => Box::new(move |r: &mut [T]| {
                    r[out] = reference::unary_op(op, r[x]);
                }),
            },
            ArenaStep::Binary { op, a, b, out, n } => kernel_binary_step(op, a, b, out, n),
            // Exact one-operation ops inline, the rest through the SIMD kernel (what eager runs).
            ArenaStep::Unary { op, x, out, n } => Box::new(move |r: &mut [T]| {
                let (lo, hi) = r.split_at_mut(out);
                let (x, o) = (&lo[x..x + n], &mut hi[..n]);
                match op {
                    UnaryOp::Neg => o.iter_mut().zip(x).for_each(|(o, &v)| *o = -v),
                    UnaryOp::Square => o.iter_mut().zip(x).for_each(|(o, &v)| *o = v * v),
                    _ => stategrad_simd::unary(op, x, o, Par::Seq),
                }
            }),
            ArenaStep::Outer {
                a,
                rsa,
                b,
                csb,
                m,
                n,
                out,
            } => Box::new(move |r: &mut [T]| {
                // `chunks_exact_mut(0)` panics; a product without columns writes nothing.
                if n == 0 {
                    return;
                }
                let (lo, hi) = r.split_at_mut(out);
                for (i, row) in hi[..m * n].chunks_exact_mut(n).enumerate() {
                    let ai = lo[a + i * rsa];
                    for (j, o) in row.iter_mut().enumerate() {
                        *o = ai * lo[b + j * csb];
                    }
                }
            }),
            ArenaStep::Sum { x, n, out } => Box::new(move |r: &mut [T]| {
                r[out] = stategrad_simd::reduce_all(ReduceOp::Sum, &r[x..x + n]);
            }),
            ArenaStep::Dot {
                a,
                sa,
                b,
                sb,
                k,
                out,
            } => Box::new(move |r: &mut [T]| {
                r[out] = stategrad_simd::dot(k, &r[a..], sa, &r[b..], sb)
            }),
            ArenaStep::Call { .. } => return None,
        })
    }

    /// The ranges `(offset, elements)` this step reads (a strided operand as the span from its
    /// first to its last element; a [`ArenaStep::Call`]'s closure checks its own). A span too
    /// long for `usize` is given as `usize::MAX` elements.
    pub fn reads(&self) -> Vec<(usize, usize)> {
        self.checked_reads()
            .into_iter()
            .map(|(p, len)| (p, len.unwrap_or(usize::MAX)))
            .collect()
    }

    /// [`ArenaStep::reads`], with `None` for a span whose length overflows `usize`.
    fn checked_reads(&self) -> Vec<(usize, Option<usize>)> {
        let opd = |o: ArenaOpd, n: usize| match o {
            ArenaOpd::Slice(p) => Some((p, Some(n))),
            ArenaOpd::Splat(p) => Some((p, Some(1))),
            ArenaOpd::Imm(_) => None,
        };
        let span = |p: usize, count: usize, stride: usize| {
            let len = (count.max(1) - 1)
                .checked_mul(stride)
                .and_then(|s| s.checked_add(1));
            (p, len)
        };
        match *self {
            ArenaStep::Unary { x, n, .. } | ArenaStep::Sum { x, n, .. } => vec![(x, Some(n))],
            ArenaStep::Unary1 { x, .. } => vec![(x, Some(1))],
            ArenaStep::Binary { a, b, n, .. } => opd(a, n).into_iter().chain(opd(b, n)).collect(),
            ArenaStep::Binary1 { a, b, .. } => opd(a, 1).into_iter().chain(opd(b, 1)).collect(),
            ArenaStep::Outer {
                a,
                rsa,
                b,
                csb,
                m,
                n,
                ..
            } => vec![span(a, m, rsa), span(b, n, csb)],
            ArenaStep::Dot {
                a, sa, b, sb, k, ..
            } => vec![span(a, k, sa), span(b, k, sb)],
            ArenaStep::Call { .. } => vec![],
        }
    }

    /// The output slot `(offset, elements)` this step writes (`usize::MAX` elements for an
    /// outer product whose size overflows `usize`).
    pub fn output(&self) -> (usize, usize) {
        let (out, n) = self.checked_output();
        (out, n.unwrap_or(usize::MAX))
    }

    /// [`ArenaStep::output`], with `None` for a size that overflows `usize`.
    fn checked_output(&self) -> (usize, Option<usize>) {
        match *self {
            ArenaStep::Unary { out, n, .. }
            | ArenaStep::Binary { out, n, .. }
            | ArenaStep::Call { out, n } => (out, Some(n)),
            ArenaStep::Outer { out, m, n, .. } => (out, m.checked_mul(n)),
            ArenaStep::Unary1 { out, .. }
            | ArenaStep::Binary1 { out, .. }
            | ArenaStep::Sum { out, .. }
            | ArenaStep::Dot { out, .. } => (out, Some(1)),
        }
    }

    /// Whether the step's closure reads its operands from the part of the arena below its
    /// output (it splits the arena there to hold both at once).
    fn reads_below_output(&self) -> bool {
        matches!(
            self,
            ArenaStep::Unary { .. } | ArenaStep::Binary { .. } | ArenaStep::Outer { .. }
        )
    }

    /// Checks that the step, as step `index` of a program over `size` elements, touches only
    /// the arena: its output and every read end at or below `size` (computed without
    /// overflow), and a step whose closure splits the arena at its output reads below it.
    fn check(&self, index: usize, size: usize) -> Result<(), ArenaError> {
        let outside = ArenaError::OutsideArena { step: index };
        let end = |at: usize, len: Option<usize>| len.and_then(|l| at.checked_add(l));
        let (out, n) = self.checked_output();
        if end(out, n).is_none_or(|e| e > size) {
            return Err(outside);
        }
        let limit = if self.reads_below_output() { out } else { size };
        for (at, len) in self.checked_reads() {
            match end(at, len) {
                Some(e) if e <= limit => {}
                Some(e) if e <= size => return Err(ArenaError::ReadsAtOutput { step: index }),
                _ => return Err(outside),
            }
        }
        Ok(())
    }
}

/// Checks every step of a program over `size` elements (see [`ArenaStep::check`]): what makes
/// generated code, which indexes without bounds checks, stay in the arena.
pub(crate) fn check_steps(steps: &[ArenaStep], size: usize) -> Result<(), ArenaError> {
    steps
        .iter()
        .enumerate()
        .try_for_each(|(k, s)| s.check(k, size))
}

/// Why an [`ArenaProgram`] was not built, or did not run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArenaError {
    /// Step `step` writes or reads past the arena's size (or its extent overflows `usize`).
    OutsideArena {
        /// The step's index.
        step: usize,
    },
    /// Step `step` (an elementwise or outer-product step) reads at or above its own output
    /// slot; its operands must lie below it.
    ReadsAtOutput {
        /// The step's index.
        step: usize,
    },
    /// The number of closures differs from the number of [`ArenaStep::Call`] steps.
    CallCount {
        /// Closures given.
        calls: usize,
        /// `Call` steps in the program.
        call_steps: usize,
    },
    /// A loop ([`ArenaLoop`]) reaches past the program's size, or its offsets or iteration
    /// numbers overflow `usize`.
    LoopOutsideArena,
    /// The arena given to [`ArenaProgram::run`] is shorter than the program's size.
    ArenaTooShort {
        /// Elements given.
        len: usize,
        /// The program's size.
        size: usize,
    },
}

impl std::fmt::Display for ArenaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArenaError::OutsideArena { step } => {
                write!(
                    f,
                    "arena program: step {step} reads or writes past the arena"
                )
            }
            ArenaError::ReadsAtOutput { step } => write!(
                f,
                "arena program: step {step} reads at or above its output slot"
            ),
            ArenaError::CallCount { calls, call_steps } => write!(
                f,
                "arena program: {calls} closures for {call_steps} call steps"
            ),
            ArenaError::LoopOutsideArena => write!(
                f,
                "arena program: the loop reaches past the arena (or its numbers overflow)"
            ),
            ArenaError::ArenaTooShort { len, size } => write!(
                f,
                "arena program: arena of {len} elements, the program needs {size}"
            ),
        }
    }
}

impl std::error::Error for ArenaError {}

/// When an [`ArenaProgram`] gets native code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Native {
    /// Never: the steps always run as closures.
    Never,
    /// When it is built.
    Now,
    /// Once it has run this many times (closures until then): generating the code of a
    /// 30-step program takes about a millisecond, what ten thousand runs of W1's step save, so a
    /// program run a few times never pays for it and a training loop pays once.
    AfterRuns(usize),
}

/// Loops over one program that get generated code of their own (a program shared by functions
/// with the same steps serves each function's loop); later ones run the program's code once per
/// iteration.
pub const LOOPS_KEPT: usize = 8;

/// How many runs [`ArenaProgram::new`] waits before generating native code, by default (see
/// [`tuning::arena_native_after_runs`]).
pub const NATIVE_AFTER_RUNS: usize = 10_000;

/// A program of [`ArenaStep`]s ready to run on an arena of at least `size` elements: closures
/// from the start, native code (see [`Native`]) once generated.
pub struct ArenaProgram<T: Element> {
    size: usize,
    steps: Vec<ArenaStep>,
    fns: Vec<ArenaFn<T>>,
    /// The policy given to [`ArenaProgram::with_native`]; `None` for [`ArenaProgram::new`]'s:
    /// after [`tuning::arena_native_after_runs`] runs, if [`tuning::codegen_enabled`] then.
    native: Option<Native>,
    runs: AtomicUsize,
    code: OnceLock<Option<Code<T>>>,
    /// The generated loops (see [`ArenaProgram::run_loop`]), each with the loop it was
    /// generated for (`None`: generation declined or failed for it); at most [`LOOPS_KEPT`].
    looped: Mutex<Vec<(ArenaLoop, Option<Arc<Code<T>>>)>>,
}

impl<T: Element> std::fmt::Debug for ArenaProgram<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArenaProgram")
            .field("steps", &self.steps.len())
            .field("native", &self.policy())
            .field("is_native", &self.is_native())
            .finish()
    }
}

impl<T: Element> ArenaProgram<T> {
    /// Builds the program: `calls` are the closures of the [`ArenaStep::Call`] steps, in order.
    /// Native code is generated after [`tuning::arena_native_after_runs`] runs (default
    /// [`NATIVE_AFTER_RUNS`]) if [`native_code_enabled`] when the program reaches them (see
    /// [`ArenaProgram::with_native`] for a fixed policy).
    ///
    /// # Errors
    /// [`ArenaError::CallCount`] if the number of `calls` differs from the number of `Call`
    /// steps; [`ArenaError::OutsideArena`] if a step reads or writes past `size` (or its
    /// extent overflows `usize`); [`ArenaError::ReadsAtOutput`] if an elementwise or
    /// outer-product step reads at or above its output slot.
    ///
    /// # Example
    /// ```
    /// use stategrad_exec::arena::{ArenaOpd, ArenaProgram, ArenaStep};
    /// use stategrad_exec::BinaryOp;
    /// // arena: [x0, x1, y0, y1, sum]; y = x * 2, sum = y0 + y1 (a closure step)
    /// let steps = [
    ///     ArenaStep::Binary { op: BinaryOp::Mul, a: ArenaOpd::Slice(0), b: ArenaOpd::Imm(2.0), out: 2, n: 2 },
    ///     ArenaStep::Call { out: 4, n: 1 },
    /// ];
    /// let add: Box<dyn Fn(&mut [f32]) + Send + Sync> = Box::new(|r| r[4] = r[2] + r[3]);
    /// let p = ArenaProgram::new(&steps, vec![add], 5).unwrap();
    /// let mut arena = [1.0f32, 2.5, 0.0, 0.0, 0.0];
    /// p.run(&mut arena).unwrap();
    /// assert_eq!(arena, [1.0, 2.5, 2.0, 5.0, 7.0]);
    /// ```
    pub fn new(
        steps: &[ArenaStep],
        calls: Vec<ArenaFn<T>>,
        size: usize,
    ) -> Result<Self, ArenaError> {
        let mut program = Self::with_native(steps, calls, size, Native::Never)?;
        program.native = None;
        Ok(program)
    }

    /// [`ArenaProgram::new`] with native code generated as `native` says (if the host has a
    /// code generator at all, and generation succeeds; else the closures run).
    ///
    /// # Errors
    /// As [`ArenaProgram::new`].
    pub fn with_native(
        steps: &[ArenaStep],
        calls: Vec<ArenaFn<T>>,
        size: usize,
        native: Native,
    ) -> Result<Self, ArenaError> {
        // Generated code indexes without bounds checks: every access must be in the arena.
        check_steps(steps, size)?;
        let call_steps = steps
            .iter()
            .filter(|s| matches!(s, ArenaStep::Call { .. }))
            .count();
        if calls.len() != call_steps {
            return Err(ArenaError::CallCount {
                calls: calls.len(),
                call_steps,
            });
        }
        let mut calls = calls.into_iter();
        let fns: Vec<ArenaFn<T>> = steps
            .iter()
            .filter_map(|s| s.closure().or_else(|| calls.next()))
            .collect();
        let program = ArenaProgram {
            size,
            steps: steps.to_vec(),
            fns,
            native: Some(native),
            runs: AtomicUsize::new(0),
            code: OnceLock::new(),
            looped: Mutex::new(Vec::new()),
        };
        if native == Native::Now {
            program.native_code();
        }
        Ok(program)
    }

    /// The native code, generated on the first call. A generator that fails — an error, or a
    /// panic (say, a host that refuses executable memory) — leaves the program on its closures
    /// for good, and the run goes on.
    fn native_code(&self) -> Option<&Code<T>> {
        self.code
            .get_or_init(|| {
                let compile = || codegen::compile::<T>(&self.steps, self.size);
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(compile))
                    .ok()
                    .flatten()
            })
            .as_ref()
    }

    /// The policy in force now: a fixed one, or the tuned threshold of [`ArenaProgram::new`]'s
    /// (`Never` while code generation is switched off).
    fn policy(&self) -> Native {
        match self.native {
            Some(native) => native,
            None if native_code_enabled() => Native::AfterRuns(tuning::arena_native_after_runs()),
            None => Native::Never,
        }
    }

    /// Tells the program it is about to run `n` times (a loop): when that takes it to its
    /// [`Native::AfterRuns`] threshold, the native code is generated now, before the first of
    /// those runs, rather than partway through.
    pub fn expect_runs(&self, n: usize) {
        if self.code.get().is_some() {
            return;
        }
        if let Native::AfterRuns(t) = self.policy() {
            if self.runs.load(Ordering::Relaxed).saturating_add(n) >= t {
                self.native_code();
            }
        }
    }

    /// The generated function of a whole loop `lp` over this program, once the program itself
    /// runs as native code. A program shared by several functions may serve several loops
    /// (the same steps, other carries): each gets its own code, up to [`LOOPS_KEPT`].
    pub(crate) fn loop_code(&self, lp: &ArenaLoop) -> Option<Arc<Code<T>>> {
        if !self.is_native() {
            return None;
        }
        let mut looped = self.looped.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, code)) = looped.iter().find(|(spec, _)| spec == lp) {
            return code.clone();
        }
        if looped.len() >= LOOPS_KEPT {
            return None;
        }
        let compile = || codegen::compile_loop::<T>(&self.steps, self.size, lp);
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(compile))
            .ok()
            .flatten()
            .map(Arc::new);
        looped.push((lp.clone(), code.clone()));
        code
    }

    /// Whether the loop `lp` over the program ([`ArenaProgram::run_loop`]) runs as one
    /// generated function now.
    pub fn loop_is_native(&self, lp: &ArenaLoop) -> bool {
        let looped = self.looped.lock().unwrap_or_else(|p| p.into_inner());
        looped
            .iter()
            .any(|(spec, code)| spec == lp && code.is_some())
    }

    /// Elements of the arena the program runs on.
    pub fn size(&self) -> usize {
        self.size
    }

    /// One closure per step, as generated code calls them.
    pub(crate) fn closures(&self) -> &[ArenaFn<T>] {
        &self.fns
    }

    /// Whether the program now runs as generated native code.
    pub fn is_native(&self) -> bool {
        matches!(self.code.get(), Some(Some(_)))
    }

    /// Runs every step on the first `size` elements of `arena`.
    ///
    /// # Errors
    /// [`ArenaError::ArenaTooShort`] (and nothing runs) if `arena` is shorter than the
    /// program's size.
    ///
    /// # Panics
    /// If a closure step panics (the panic is passed on).
    pub fn run(&self, arena: &mut [T]) -> Result<(), ArenaError> {
        let Some(arena) = arena.get_mut(..self.size) else {
            return Err(ArenaError::ArenaTooShort {
                len: arena.len(),
                size: self.size,
            });
        };
        let code = match self.code.get() {
            Some(code) => code.as_ref(),
            // Until the code exists: the threshold (tuned, or the switch, may change between
            // runs) read now.
            None => match self.policy() {
                Native::AfterRuns(n)
                    if self.runs.fetch_add(1, Ordering::Relaxed) >= n.saturating_sub(1) =>
                {
                    self.native_code()
                }
                _ => None,
            },
        };
        match code {
            Some(code) => code.run(arena, &self.fns),
            None => self.fns.iter().for_each(|f| f(arena)),
        }
        Ok(())
    }
}

/// Whether [`ArenaProgram::new`]'s programs get native code now: the `native` feature is on,
/// the host has a code generator, and code generation is not switched off (see
/// [`codegen_switched_off`]).
pub fn native_code_enabled() -> bool {
    tuning::codegen_enabled() && codegen::available()
}

/// Whether code generation is switched off: the environment variable `STATEGRAD_NO_CODEGEN`
/// was set when first read, or [`tuning::set_codegen_enabled`] switched it off (the negation
/// of [`tuning::codegen_enabled`]). Then arena programs of [`ArenaProgram::new`] stay on their
/// closures and fused passes on their block kernels, for comparison. Results are the same
/// bits either way.
///
/// ```
/// use stategrad_exec::arena::{codegen_switched_off, native_code_enabled};
/// assert_eq!(
///     codegen_switched_off(),
///     std::env::var_os("STATEGRAD_NO_CODEGEN").is_some()
/// );
/// // Switched off means no native code for arena programs either.
/// assert!(!(codegen_switched_off() && native_code_enabled()));
/// stategrad_exec::tuning::set_codegen_enabled(false);
/// assert!(codegen_switched_off() && !native_code_enabled());
/// ```
pub fn codegen_switched_off() -> bool {
    !tuning::codegen_enabled()
}
