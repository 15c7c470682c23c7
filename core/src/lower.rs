//! Small-program replay for `jit`: when every value of a compiled program is small and every
//! primitive has a slice kernel ([`crate::prim::Primitive::lower`]), the program runs on one
//! per-thread arena: each value has a fixed slot, each step is one kernel call on slices, and
//! no tensor is made until the outputs. Per-call overhead (W1: ~30 primitives on 20-element
//! tensors) is then the kernels themselves, not tensor handles, reference counts and buffer
//! bookkeeping per primitive.

use crate::prim::{binary_kernel, Kernel};
use crate::tensor::{DType, Float, Shape, Tensor};
use smallvec::SmallVec;
use stategrad_simd::{self as simd, BinaryOp, Par, ReduceOp};
use std::cell::RefCell;

/// Programs whose values total more elements than this replay through tensors (their kernels,
/// not the dispatch, dominate).
pub(crate) const SMALL_MAX: usize = 1 << 15;

/// Where a lowered step reads an operand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum LIn {
    /// Arena slot `(offset, len)`.
    Slot(usize, usize),
    /// A constant whose elements are all this value (only binary steps take one).
    Imm(f64),
}

/// An operand of an elementwise binary step, resolved at lowering.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Opd {
    /// The step's length of elements from this offset.
    Slice(usize),
    /// The one element at this offset, broadcast.
    Splat(usize),
    /// A constant value, broadcast.
    Imm(f64),
}

/// One step, specialised at lowering so that the common small cases (same-length or scalar
/// operands, full sums, rank-1 products) run as a direct loop with no shape logic per call.
#[derive(Clone, Debug)]
pub(crate) enum LStep {
    /// `out[..n] = op(x[..n])`.
    Unary {
        op: simd::UnaryOp,
        x: usize,
        out: usize,
        n: usize,
    },
    /// `out[..n] = op(a, b)` elementwise, each operand a slice, a broadcast element or a value.
    Binary {
        op: BinaryOp,
        a: Opd,
        b: Opd,
        out: usize,
        n: usize,
    },
    /// `out[0] = op(x[0])`: a one-element unary step.
    Unary1 {
        op: simd::UnaryOp,
        x: usize,
        out: usize,
    },
    /// `out[0] = op(a, b)`: a one-element binary step.
    Binary1 {
        op: BinaryOp,
        a: Opd,
        b: Opd,
        out: usize,
    },
    /// `out[0] = sum(x[..n])`.
    Sum { x: usize, n: usize, out: usize },
    /// `out[i * n + j] = a[i * rsa] * b[j * csb]`: a product with one inner index.
    Outer {
        a: usize,
        rsa: usize,
        b: usize,
        csb: usize,
        m: usize,
        n: usize,
        out: usize,
    },
    /// `out[0] = dot(a[0], a[sa], …; b[0], b[sb], …)` over `k` terms: a `1 x k` by `k x 1`
    /// product.
    Dot {
        a: usize,
        sa: usize,
        b: usize,
        sb: usize,
        k: usize,
        out: usize,
    },
    /// Any other kernel on slots `(offset, len)`.
    Kernel {
        kernel: Kernel,
        inputs: SmallVec<[(usize, usize); 2]>,
        out: usize,
        n: usize,
    },
}

impl LStep {
    /// The step running `kernel` on `inputs` into `out[..n]` (every input slot precedes `out`).
    /// `None` if an input is an [`LIn::Imm`] the chosen form cannot take.
    pub(crate) fn new(kernel: Kernel, inputs: &[LIn], out: usize, n: usize) -> Option<LStep> {
        let opd = |i: &LIn| match *i {
            LIn::Slot(off, len) if len == n => Some(Opd::Slice(off)),
            LIn::Slot(off, 1) => Some(Opd::Splat(off)),
            LIn::Imm(v) => Some(Opd::Imm(v)),
            LIn::Slot(..) => None,
        };
        let slot = |i: &LIn| match *i {
            LIn::Slot(off, len) => Some((off, len)),
            LIn::Imm(_) => None,
        };
        Some(match (&kernel, inputs) {
            (Kernel::Unary(op), [LIn::Slot(x, _)]) if n == 1 => LStep::Unary1 {
                op: *op,
                x: *x,
                out,
            },
            (Kernel::Binary { op, .. }, [a, b]) if n == 1 => LStep::Binary1 {
                op: *op,
                a: opd(a)?,
                b: opd(b)?,
                out,
            },
            (Kernel::Unary(op), [LIn::Slot(x, _)]) => LStep::Unary {
                op: *op,
                x: *x,
                out,
                n,
            },
            (Kernel::Binary { op, .. }, [a, b]) if opd(a).is_some() && opd(b).is_some() => {
                LStep::Binary {
                    op: *op,
                    a: opd(a)?,
                    b: opd(b)?,
                    out,
                    n,
                }
            }
            // A sum into one element over a contiguous slice: what `reduce_axes` computes then.
            (Kernel::ReduceAll(ReduceOp::Sum), [LIn::Slot(x, len)])
            | (
                Kernel::ReduceAxes {
                    op: ReduceOp::Sum, ..
                },
                [LIn::Slot(x, len)],
            ) if n == 1 => LStep::Sum {
                x: *x,
                n: *len,
                out,
            },
            (Kernel::Gemm(d), [LIn::Slot(a, _), LIn::Slot(b, _)]) if d.k == 1 => LStep::Outer {
                a: *a,
                rsa: d.rsa,
                b: *b,
                csb: d.csb,
                m: d.m,
                n: d.n,
                out,
            },
            (Kernel::Gemm(d), [LIn::Slot(a, _), LIn::Slot(b, _)]) if d.m == 1 && d.n == 1 => {
                LStep::Dot {
                    a: *a,
                    sa: d.csa,
                    b: *b,
                    sb: d.rsb,
                    k: d.k,
                    out,
                }
            }
            _ => LStep::Kernel {
                inputs: inputs.iter().map(slot).collect::<Option<_>>()?,
                kernel,
                out,
                n,
            },
        })
    }
}

/// A binary operand at run time.
#[derive(Clone, Copy)]
enum Val<'a, T> {
    S(&'a [T]),
    C(T),
}

/// Operand `o` of an `n`-element step, read from the part of the arena below its output.
fn val<T: Float>(lo: &[T], o: Opd, n: usize) -> Val<'_, T> {
    match o {
        Opd::Slice(off) => Val::S(&lo[off..off + n]),
        Opd::Splat(off) => Val::C(lo[off]),
        Opd::Imm(v) => Val::C(T::from_f64(v)),
    }
}

/// A step compiled to a closure for one element type: the op and the operand forms are fixed
/// when it is built, so a replay makes one indirect call per step and no decisions inside it.
pub(crate) type StepFn<T> = Box<dyn Fn(&mut [T]) + Send + Sync>;

/// A program's steps as closures, for its element type.
pub(crate) enum StepFns {
    F32(Vec<StepFn<f32>>),
    F64(Vec<StepFn<f64>>),
}

impl std::fmt::Debug for StepFns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = match self {
            StepFns::F32(v) => v.len(),
            StepFns::F64(v) => v.len(),
        };
        write!(f, "StepFns({n})")
    }
}

/// `out[0] = f(a, b)` with the operand forms resolved now.
fn scalar_step<T: Float>(
    f: impl Fn(T, T) -> T + Copy + Send + Sync + 'static,
    a: Opd,
    b: Opd,
    out: usize,
) -> StepFn<T> {
    let at = |o: Opd| match o {
        Opd::Slice(p) | Opd::Splat(p) => Ok(p),
        Opd::Imm(v) => Err(T::from_f64(v)),
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

/// `out[..n] = f(a, b)` elementwise.
fn map_step<T: Float>(
    f: impl Fn(T, T) -> T + Copy + Send + Sync + 'static,
    a: Opd,
    b: Opd,
    out: usize,
    n: usize,
) -> StepFn<T> {
    Box::new(move |r: &mut [T]| {
        let (lo, hi) = r.split_at_mut(out);
        let out = &mut hi[..n];
        match (val(lo, a, n), val(lo, b, n)) {
            (Val::S(a), Val::S(b)) => out
                .iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(o, (&a, &b))| *o = f(a, b)),
            (Val::S(a), Val::C(b)) => out.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a, b)),
            (Val::C(a), Val::S(b)) => out.iter_mut().zip(b).for_each(|(o, &b)| *o = f(a, b)),
            (Val::C(a), Val::C(b)) => out.fill(f(a, b)),
        }
    })
}

/// `out[..n] = op(a, b)` through the SIMD kernels (ops other than the four arithmetic ones, at
/// `SIMD_MIN_LEN` elements or more: what eager code runs).
fn kernel_binary_step<T: Float>(op: BinaryOp, a: Opd, b: Opd, out: usize, n: usize) -> StepFn<T> {
    Box::new(move |r: &mut [T]| {
        let (lo, hi) = r.split_at_mut(out);
        let out = &mut hi[..n];
        match (val(lo, a, n), val(lo, b, n)) {
            (Val::S(a), Val::S(b)) => simd::binary(op, a, b, out, Par::Seq),
            (Val::S(a), Val::C(b)) => simd::binary_scalar(op, a, b, out, Par::Seq),
            (Val::C(a), Val::S(b)) => simd::scalar_binary(op, a, b, out, Par::Seq),
            (Val::C(a), Val::C(b)) => out.fill(simd::reference::binary_op(op, a, b)),
        }
    })
}

impl LStep {
    /// This step as a closure over the arena.
    fn compile<T: Float>(&self) -> StepFn<T> {
        macro_rules! by_op {
            ($op:expr, $mk:ident, $($arg:expr),*) => {
                match $op {
                    BinaryOp::Add => $mk(|a: T, b: T| a + b, $($arg),*),
                    BinaryOp::Sub => $mk(|a: T, b: T| a - b, $($arg),*),
                    BinaryOp::Mul => $mk(|a: T, b: T| a * b, $($arg),*),
                    BinaryOp::Div => $mk(|a: T, b: T| a / b, $($arg),*),
                    op => $mk(move |a: T, b: T| simd::reference::binary_op(op, a, b), $($arg),*),
                }
            };
        }
        match *self {
            LStep::Binary1 { op, a, b, out } => by_op!(op, scalar_step, a, b, out),
            // Below `SIMD_MIN_LEN` the slice kernels compute every op with std math per element.
            LStep::Binary { op, a, b, out, n }
                if n < simd::SIMD_MIN_LEN
                    || matches!(
                        op,
                        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div
                    ) =>
            {
                by_op!(op, map_step, a, b, out, n)
            }
            LStep::Unary1 { op, x, out } => match op {
                simd::UnaryOp::Neg => Box::new(move |r: &mut [T]| r[out] = -r[x]),
                simd::UnaryOp::Square => Box::new(move |r: &mut [T]| r[out] = r[x] * r[x]),
                op => Box::new(move |r: &mut [T]| {
                    r[out] = simd::reference::unary_op(op, r[x]);
                }),
            },
            LStep::Binary { op, a, b, out, n } => kernel_binary_step(op, a, b, out, n),
            // Exact one-operation ops inline, the rest through the SIMD kernel (what eager runs).
            LStep::Unary { op, x, out, n } => Box::new(move |r: &mut [T]| {
                let (lo, hi) = r.split_at_mut(out);
                let (x, o) = (&lo[x..x + n], &mut hi[..n]);
                match op {
                    simd::UnaryOp::Neg => o.iter_mut().zip(x).for_each(|(o, &v)| *o = -v),
                    simd::UnaryOp::Square => o.iter_mut().zip(x).for_each(|(o, &v)| *o = v * v),
                    _ => simd::unary(op, x, o, Par::Seq),
                }
            }),
            LStep::Outer {
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
            LStep::Sum { x, n, out } => Box::new(move |r: &mut [T]| {
                r[out] = simd::reduce_all(ReduceOp::Sum, &r[x..x + n]);
            }),
            LStep::Dot {
                a,
                sa,
                b,
                sb,
                k,
                out,
            } => Box::new(move |r: &mut [T]| r[out] = simd::dot(k, &r[a..], sa, &r[b..], sb)),
            LStep::Kernel {
                ref kernel,
                ref inputs,
                out,
                n,
            } => {
                let (kernel, inputs) = (kernel.clone(), inputs.clone());
                Box::new(move |r: &mut [T]| {
                    let (lo, hi) = r.split_at_mut(out);
                    let lo: &[T] = lo;
                    let ins: SmallVec<[&[T]; 4]> =
                        inputs.iter().map(|&(o, l)| &lo[o..o + l]).collect();
                    kernel.run(&ins, &mut hi[..n]);
                })
            }
        }
    }
}

/// Compile every step for the program's element type.
pub(crate) fn compile_steps(dtype: DType, steps: &[LStep]) -> StepFns {
    match dtype {
        DType::F32 => StepFns::F32(steps.iter().map(LStep::compile::<f32>).collect()),
        DType::F64 => StepFns::F64(steps.iter().map(LStep::compile::<f64>).collect()),
    }
}

/// A lowered program.
#[derive(Debug)]
pub(crate) struct Lowered {
    pub(crate) dtype: DType,
    /// Arena elements.
    pub(crate) size: usize,
    /// `(offset, shape)` of each tape node that has a slot, by node index.
    pub(crate) slots: Vec<Option<(usize, Shape)>>,
    /// Constants copied into their slots at the start of every call.
    pub(crate) consts: Vec<(usize, Tensor)>,
    /// The steps as closures (see [`LStep`] for what each does).
    pub(crate) steps: StepFns,
}

impl Kernel {
    /// Run the kernel sequentially on slices (`ins` in the primitive's input order).
    pub(crate) fn run<T: simd::Element>(&self, ins: &[&[T]], out: &mut [T]) {
        match self {
            Kernel::Unary(op) => simd::unary(*op, ins[0], out, Par::Seq),
            Kernel::Binary {
                op,
                a,
                b,
                out: shape,
            } => binary_kernel(*op, ins[0], a, ins[1], b, shape, out, Par::Seq),
            Kernel::ReduceAll(op) => out[0] = simd::reduce_all(*op, ins[0]),
            Kernel::ReduceAxes { op, shape, axes } => {
                simd::reduce_axes(*op, ins[0], shape, axes, out)
            }
            Kernel::Copy => out.copy_from_slice(ins[0]),
            Kernel::Gather {
                strides,
                out: shape,
            } => simd::gather_strided(ins[0], strides, 0, shape, out),
            Kernel::Gemm(d) => simd::gemm(
                d.m,
                d.k,
                d.n,
                T::ONE,
                ins[0],
                d.rsa,
                d.csa,
                ins[1],
                d.rsb,
                d.csb,
                T::ZERO,
                out,
                d.n,
                1,
                Par::Seq,
            ),
        }
    }
}

/// Element types with a per-thread arena.
pub(crate) trait ArenaFloat: Float {
    /// This thread's arena as `size` elements starting on a 64-byte boundary (slot offsets are
    /// laid out against that boundary; see [`slot_start`]).
    fn with_arena<R>(size: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
    /// The program's steps compiled for this type (its dtype is checked before).
    fn steps(s: &StepFns) -> &[StepFn<Self>];
}

/// Where a slot of `len` elements goes when the arena has `size` elements so far: vectors of 8
/// or more start on a 64-byte line (a vector load or store across two lines costs twice, and a
/// load of a value just stored across lines cannot be forwarded from the store: a 20-element
/// map step measured alone runs about twice as fast aligned, the whole W1 loop ~5 %), single
/// values pack.
pub(crate) fn slot_start(size: usize, len: usize) -> usize {
    if len >= 8 {
        size.next_multiple_of(16)
    } else {
        size
    }
}

fn aligned<T: Float, R>(v: &mut Vec<T>, size: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let pad = 64 / std::mem::size_of::<T>();
    if v.len() < size + pad {
        v.resize(size + pad, T::ZERO);
    }
    let at = v.as_ptr().align_offset(64).min(pad);
    f(&mut v[at..at + size])
}

thread_local! {
    static ARENA_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static ARENA_F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

impl ArenaFloat for f32 {
    fn with_arena<R>(size: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        ARENA_F32.with(|a| aligned(&mut a.borrow_mut(), size, f))
    }
    fn steps(s: &StepFns) -> &[StepFn<Self>] {
        match s {
            StepFns::F32(v) => v,
            StepFns::F64(_) => &[],
        }
    }
}

impl ArenaFloat for f64 {
    fn with_arena<R>(size: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        ARENA_F64.with(|a| aligned(&mut a.borrow_mut(), size, f))
    }
    fn steps(s: &StepFns) -> &[StepFn<Self>] {
        match s {
            StepFns::F64(v) => v,
            StepFns::F32(_) => &[],
        }
    }
}

impl Lowered {
    /// Run the program on this thread's arena: `inputs` are `(node, value)` for the argument
    /// and state nodes. The results stay in the arena for [`Lowered::take`] and
    /// [`Lowered::store`] (until the next program runs on this thread).
    pub(crate) fn run(&self, inputs: &[(u32, &Tensor)]) {
        match self.dtype {
            DType::F32 => f32::with_arena(self.size, |a| {
                self.load(a, inputs);
                self.exec(a)
            }),
            DType::F64 => f64::with_arena(self.size, |a| {
                self.load(a, inputs);
                self.exec(a)
            }),
        }
    }

    fn slot(&self, node: u32) -> &(usize, Shape) {
        self.slots[node as usize]
            .as_ref()
            .expect("internal error: lowered node without a slot")
    }

    /// The shape of a node's slot.
    pub(crate) fn shape_of(&self, node: u32) -> &[usize] {
        &self.slot(node).1
    }

    /// Run the program for `i` in `start..end`, with `i` written (as a number) into the slot of
    /// `iter_node` each time and, after each run, every `(from, to)` of `carries` copied from
    /// slot `from` to slot `to` (written states feeding the next iteration's reads). The last
    /// iteration's values stay in the arena, as after [`Lowered::run`].
    pub(crate) fn run_loop(
        &self,
        inputs: &[(u32, &Tensor)],
        iter_node: u32,
        (start, end): (usize, usize),
        carries: &[(u32, u32)],
    ) {
        match self.dtype {
            DType::F32 => self.loop_typed::<f32>(inputs, iter_node, (start, end), carries),
            DType::F64 => self.loop_typed::<f64>(inputs, iter_node, (start, end), carries),
        }
    }

    fn loop_typed<T: ArenaFloat>(
        &self,
        inputs: &[(u32, &Tensor)],
        iter_node: u32,
        (start, end): (usize, usize),
        carries: &[(u32, u32)],
    ) {
        let moves: SmallVec<[(usize, usize, usize); 4]> = carries
            .iter()
            .map(|&(from, to)| {
                let (f, shape) = self.slot(from);
                (*f, self.slot(to).0, shape.iter().product())
            })
            .collect();
        let it = self.slot(iter_node).0;
        T::with_arena(self.size, |arena| {
            self.load(arena, inputs);
            for i in start..end {
                arena[it] = T::from_f64(i as f64);
                self.exec(arena);
                if i + 1 < end {
                    for &(f, t, len) in &moves {
                        arena.copy_within(f..f + len, t);
                    }
                }
            }
        })
    }

    /// A scan over the rows `start..end` of `xs`: each iteration copies row `i` into the slot
    /// of `x_node`, runs the program, appends the value of `y_node` to the result, and (before
    /// the next one) copies every `(from, to)` of `carries`. Returns the stacked `y` rows
    /// (`[end - start, ..y's shape]`); the last iteration's values stay in the arena.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_scan(
        &self,
        inputs: &[(u32, &Tensor)],
        x_node: u32,
        xs: &Tensor,
        (start, end): (usize, usize),
        carries: &[(u32, u32)],
        y_node: u32,
    ) -> Tensor {
        match self.dtype {
            DType::F32 => self.scan_typed::<f32>(inputs, x_node, xs, (start, end), carries, y_node),
            DType::F64 => self.scan_typed::<f64>(inputs, x_node, xs, (start, end), carries, y_node),
        }
    }

    fn scan_typed<T: ArenaFloat>(
        &self,
        inputs: &[(u32, &Tensor)],
        x_node: u32,
        xs: &Tensor,
        (start, end): (usize, usize),
        carries: &[(u32, u32)],
        y_node: u32,
    ) -> Tensor {
        let moves: SmallVec<[(usize, usize, usize); 4]> = carries
            .iter()
            .map(|&(from, to)| {
                let (f, shape) = self.slot(from);
                (*f, self.slot(to).0, shape.iter().product())
            })
            .collect();
        let (x_off, x_shape) = self.slot(x_node);
        let x_len: usize = x_shape.iter().product();
        let (y_off, y_shape) = self.slot(y_node);
        let y_len: usize = y_shape.iter().product();
        let data = T::slice(xs.buf()).expect("internal error: scan xs dtype");
        let mut buf = crate::tensor::Buffer::for_overwrite(T::DTYPE, (end - start) * y_len);
        let mut ys = T::take_vec(&mut buf);
        T::with_arena(self.size, |arena| {
            self.load(arena, inputs);
            for (i, row) in ys
                .chunks_exact_mut(y_len.max(1))
                .enumerate()
                .take(end - start)
            {
                let r = start + i;
                arena[*x_off..*x_off + x_len].copy_from_slice(&data[r * x_len..(r + 1) * x_len]);
                self.exec(arena);
                row.copy_from_slice(&arena[*y_off..*y_off + y_len]);
                if r + 1 < end {
                    for &(f, t, len) in &moves {
                        arena.copy_within(f..f + len, t);
                    }
                }
            }
        });
        let mut shape: Vec<usize> = vec![end - start];
        shape.extend_from_slice(y_shape);
        Tensor::from_buffer(T::into_buffer(ys), &shape)
    }

    /// Tensors of the `wanted` nodes' values from the last run on this thread.
    pub(crate) fn take(&self, wanted: &[u32]) -> Vec<Tensor> {
        match self.dtype {
            DType::F32 => f32::with_arena(self.size, |a| self.collect(a, wanted)),
            DType::F64 => f64::with_arena(self.size, |a| self.collect(a, wanted)),
        }
    }

    /// Write `node`'s value from the last run on this thread into `state` (in place when the
    /// state holds the only reference to its value, see [`crate::State::set_from_slice`]).
    pub(crate) fn store(&self, node: u32, state: &crate::State) {
        let (off, shape) = self.slot(node);
        let len: usize = shape.iter().product();
        match self.dtype {
            DType::F32 => f32::with_arena(self.size, |a| {
                state.set_from_slice(shape, &a[*off..*off + len])
            }),
            DType::F64 => f64::with_arena(self.size, |a| {
                state.set_from_slice(shape, &a[*off..*off + len])
            }),
        }
    }

    fn load<T: ArenaFloat>(&self, arena: &mut [T], inputs: &[(u32, &Tensor)]) {
        for (node, t) in inputs {
            let (off, _) = self.slot(*node);
            let data = T::slice(t.buf()).expect("internal error: lowered input dtype");
            arena[*off..*off + data.len()].copy_from_slice(data);
        }
        for (off, t) in &self.consts {
            let data = T::slice(t.buf()).expect("internal error: lowered const dtype");
            arena[*off..*off + data.len()].copy_from_slice(data);
        }
    }

    fn exec<T: ArenaFloat>(&self, arena: &mut [T]) {
        for st in T::steps(&self.steps) {
            st(arena);
        }
    }

    fn collect<T: ArenaFloat>(&self, arena: &[T], wanted: &[u32]) -> Vec<Tensor> {
        wanted
            .iter()
            .map(|n| {
                let (off, shape) = self.slot(*n);
                let len: usize = shape.iter().product();
                let mut buf = crate::tensor::Buffer::for_overwrite(T::DTYPE, len);
                let mut v = T::take_vec(&mut buf);
                v.copy_from_slice(&arena[*off..*off + len]);
                Tensor::from_buffer(T::into_buffer(v), shape)
            })
            .collect()
    }
}
