//! Arena programs: a list of steps over one flat buffer (the arena), each reading earlier
//! parts of it and writing its own slot. A compiled small `jit` program runs this way: every
//! value has a fixed offset, every step is specialised when the program is built, and nothing
//! is allocated per call.
//!
//! An [`ArenaProgram`] runs its steps as closures built once per step, or — where the target
//! has a native code generator (the `codegen` feature, Cranelift) — as one generated function in
//! which the simple steps (arithmetic on short slots, one-element ops, short sums, dot
//! products) are inlined with their values kept in registers, and every other step is a call
//! into its closure. Both give the same bits: the inlined steps are exact IEEE operations in the
//! order the closures perform them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::codegen::{self, Code};
use crate::{reference, BinaryOp, Element, Par, ReduceOp, UnaryOp};

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
    /// `out[0] = sum(x[..n])`, as [`crate::reduce_all`].
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
    /// `out[0] = dot(a[0], a[sa], …; b[0], b[sb], …)` over `k` terms, as [`crate::dot`].
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
        (Val::S(a), Val::S(b)) => crate::binary(op, a, b, out, Par::Seq),
        (Val::S(a), Val::C(b)) => crate::binary_scalar(op, a, b, out, Par::Seq),
        (Val::C(a), Val::S(b)) => crate::scalar_binary(op, a, b, out, Par::Seq),
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
                if n < crate::SIMD_MIN_LEN
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
                    _ => crate::unary(op, x, o, Par::Seq),
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
                let (lo, hi) = r.split_at_mut(out);
                for (i, row) in hi[..m * n].chunks_exact_mut(n).enumerate() {
                    let ai = lo[a + i * rsa];
                    for (j, o) in row.iter_mut().enumerate() {
                        *o = ai * lo[b + j * csb];
                    }
                }
            }),
            ArenaStep::Sum { x, n, out } => Box::new(move |r: &mut [T]| {
                r[out] = crate::reduce_all(ReduceOp::Sum, &r[x..x + n]);
            }),
            ArenaStep::Dot {
                a,
                sa,
                b,
                sb,
                k,
                out,
            } => Box::new(move |r: &mut [T]| r[out] = crate::dot(k, &r[a..], sa, &r[b..], sb)),
            ArenaStep::Call { .. } => return None,
        })
    }

    /// The ranges `(offset, elements)` this step reads (a strided operand as the span from its
    /// first to its last element; a [`ArenaStep::Call`]'s closure checks its own).
    pub fn reads(&self) -> Vec<(usize, usize)> {
        let opd = |o: ArenaOpd, n: usize| match o {
            ArenaOpd::Slice(p) => Some((p, n)),
            ArenaOpd::Splat(p) => Some((p, 1)),
            ArenaOpd::Imm(_) => None,
        };
        let span = |p: usize, count: usize, stride: usize| (p, (count.max(1) - 1) * stride + 1);
        match *self {
            ArenaStep::Unary { x, n, .. } | ArenaStep::Sum { x, n, .. } => vec![(x, n)],
            ArenaStep::Unary1 { x, .. } => vec![(x, 1)],
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

    /// The output slot `(offset, elements)` this step writes.
    pub fn output(&self) -> (usize, usize) {
        match *self {
            ArenaStep::Unary { out, n, .. }
            | ArenaStep::Binary { out, n, .. }
            | ArenaStep::Call { out, n } => (out, n),
            ArenaStep::Outer { out, m, n, .. } => (out, m * n),
            ArenaStep::Unary1 { out, .. }
            | ArenaStep::Binary1 { out, .. }
            | ArenaStep::Sum { out, .. }
            | ArenaStep::Dot { out, .. } => (out, 1),
        }
    }
}

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

/// How many runs [`ArenaProgram::new`] waits before generating native code.
pub const NATIVE_AFTER_RUNS: usize = 10_000;

/// A program of [`ArenaStep`]s ready to run on an arena of at least `size` elements: closures
/// from the start, native code (see [`Native`]) once generated.
pub struct ArenaProgram<T: Element> {
    size: usize,
    steps: Vec<ArenaStep>,
    fns: Vec<ArenaFn<T>>,
    native: Native,
    runs: AtomicUsize,
    code: OnceLock<Option<Code<T>>>,
}

impl<T: Element> std::fmt::Debug for ArenaProgram<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArenaProgram")
            .field("steps", &self.steps.len())
            .field("native", &self.native)
            .field("is_native", &self.is_native())
            .finish()
    }
}

impl<T: Element> ArenaProgram<T> {
    /// Builds the program: `calls` are the closures of the [`ArenaStep::Call`] steps, in order.
    /// Native code is generated after [`NATIVE_AFTER_RUNS`] runs when [`native_code_enabled`]
    /// (see [`ArenaProgram::with_native`]).
    ///
    /// # Panics
    /// If the number of `calls` differs from the number of `Call` steps, or a step reads or
    /// writes past `size`.
    ///
    /// # Example
    /// ```
    /// use stategrad_simd::arena::{ArenaOpd, ArenaProgram, ArenaStep};
    /// use stategrad_simd::BinaryOp;
    /// // arena: [x0, x1, y0, y1, sum]; y = x * 2, sum = y0 + y1 (a closure step)
    /// let steps = [
    ///     ArenaStep::Binary { op: BinaryOp::Mul, a: ArenaOpd::Slice(0), b: ArenaOpd::Imm(2.0), out: 2, n: 2 },
    ///     ArenaStep::Call { out: 4, n: 1 },
    /// ];
    /// let add: Box<dyn Fn(&mut [f32]) + Send + Sync> = Box::new(|r| r[4] = r[2] + r[3]);
    /// let p = ArenaProgram::new(&steps, vec![add], 5);
    /// let mut arena = [1.0f32, 2.5, 0.0, 0.0, 0.0];
    /// p.run(&mut arena);
    /// assert_eq!(arena, [1.0, 2.5, 2.0, 5.0, 7.0]);
    /// ```
    pub fn new(steps: &[ArenaStep], calls: Vec<ArenaFn<T>>, size: usize) -> Self {
        let native = if native_code_enabled() {
            Native::AfterRuns(NATIVE_AFTER_RUNS)
        } else {
            Native::Never
        };
        Self::with_native(steps, calls, size, native)
    }

    /// [`ArenaProgram::new`] with native code generated as `native` says (if the host has a
    /// code generator at all, and generation succeeds; else the closures run).
    ///
    /// # Panics
    /// As [`ArenaProgram::new`].
    pub fn with_native(
        steps: &[ArenaStep],
        calls: Vec<ArenaFn<T>>,
        size: usize,
        native: Native,
    ) -> Self {
        let mut calls = calls.into_iter();
        let fns: Vec<ArenaFn<T>> = steps
            .iter()
            .map(|s| {
                let (out, n) = s.output();
                assert!(
                    out + n <= size,
                    "ArenaProgram: a step writes past the arena"
                );
                // Generated code reads without bounds checks: every read must be in the arena.
                for (at, len) in s.reads() {
                    assert!(
                        at + len <= size,
                        "ArenaProgram: a step reads past the arena"
                    );
                }
                s.closure()
                    .unwrap_or_else(|| calls.next().expect("ArenaProgram: too few calls"))
            })
            .collect();
        assert!(calls.next().is_none(), "ArenaProgram: too many calls");
        let program = ArenaProgram {
            size,
            steps: steps.to_vec(),
            fns,
            native,
            runs: AtomicUsize::new(0),
            code: OnceLock::new(),
        };
        if native == Native::Now {
            program.native_code();
        }
        program
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

    /// Tells the program it is about to run `n` times (a loop): when that takes it to its
    /// [`Native::AfterRuns`] threshold, the native code is generated now, before the first of
    /// those runs, rather than partway through.
    pub fn expect_runs(&self, n: usize) {
        if let Native::AfterRuns(t) = self.native {
            if self.code.get().is_none() && self.runs.load(Ordering::Relaxed) + n >= t {
                self.native_code();
            }
        }
    }

    /// Whether the program now runs as generated native code.
    pub fn is_native(&self) -> bool {
        matches!(self.code.get(), Some(Some(_)))
    }

    /// Runs every step on `arena`.
    ///
    /// # Panics
    /// If `arena` is shorter than the program's size, or a closure step panics (the panic is
    /// passed on).
    pub fn run(&self, arena: &mut [T]) {
        assert!(arena.len() >= self.size, "ArenaProgram: arena too short");
        let code = match (self.code.get(), self.native) {
            (Some(code), _) => code.as_ref(),
            (None, Native::AfterRuns(n)) if self.runs.fetch_add(1, Ordering::Relaxed) + 1 >= n => {
                self.native_code()
            }
            _ => None,
        };
        match code {
            Some(code) => code.run(&mut arena[..self.size], &self.fns),
            None => self.fns.iter().for_each(|f| f(arena)),
        }
    }
}

/// Whether [`ArenaProgram::new`] generates native code: the `codegen` feature is on, the host
/// has a code generator, and native code is not switched off (see [`codegen_switched_off`]).
pub fn native_code_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| !codegen_switched_off() && codegen::available())
}

/// Whether the environment variable `STATEGRAD_NO_CODEGEN` is set (read once): then every arena
/// program runs as closures and every fused pass on its block kernels, for comparison. Results
/// are the same bits either way.
///
/// ```
/// use stategrad_simd::arena::{codegen_switched_off, native_code_enabled};
/// assert_eq!(
///     codegen_switched_off(),
///     std::env::var_os("STATEGRAD_NO_CODEGEN").is_some()
/// );
/// // Switched off means no native code for arena programs either.
/// assert!(!(codegen_switched_off() && native_code_enabled()));
/// ```
pub fn codegen_switched_off() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| std::env::var_os("STATEGRAD_NO_CODEGEN").is_some())
}
