//! Primitives: each declares, in one place, its abstract rule (`abstract_eval`: shapes and
//! dtypes in, the output's out, no data read), its kernel call (`forward`) and its
//! transpose/VJP (`vjp`), written in differentiable tensor operations so derivatives of
//! derivatives need no special code. Forward-mode products are derived from these rules by
//! linear transposition (see [`crate::transform::jvp`]); batched Jacobians replay them per chunk.

use crate::error::{Error, Result};
use crate::tensor::{Buffer, DType, Shape, Tensor};
use crate::trace;
use smallvec::SmallVec;
use stategrad_simd::{BinaryOp, Par, ReduceOp, UnaryOp};
use std::fmt;
use std::sync::Arc;

/// One differentiable operation.
pub trait Primitive: Send + Sync + fmt::Debug {
    /// The name used in errors and `debug_nan` reports.
    fn name(&self) -> &'static str;
    /// Dtype rule: whether the primitive accepts inputs of these dtypes, checked before
    /// [`Primitive::forward`] runs. The default accepts floats only.
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        data::floats_only(self.name(), inputs)
    }
    /// Abstract rule: the output's shape and dtype from the inputs' shapes and dtypes, with the
    /// shape errors [`Primitive::forward`] would give. It reads no data (the inputs may be
    /// abstract), so `jit` traces and `eval_shape` evaluates without running a kernel.
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval>;
    /// Kernel: compute the output from the inputs' data (their tags are ignored).
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor>;
    /// Batch rule (vmap): apply the primitive to inputs of which those flagged in `batched` carry
    /// a leading batch axis (the rest are shared by every example); the result carries the batch
    /// axis. `this` is the primitive itself, to apply. The default maps example by example.
    fn batch(
        &self,
        this: &Arc<dyn Primitive>,
        inputs: &[&Tensor],
        batched: &[bool],
    ) -> Result<Tensor> {
        batch_by_loop(this, inputs, batched)
    }
    /// Whether its rules are user code (a custom VJP/JVP rule) that may read data or leave the
    /// engine's tracking; engine shortcuts that rely on rules being written with primitives
    /// (forward products from an abstract cotangent) skip programs that hold one.
    fn user_rules(&self) -> bool {
        false
    }
    /// Fusion rule: how `jit` may run this primitive inside a fused elementwise pass (`None`:
    /// it runs on its own).
    fn fusion(&self) -> Option<Fusion> {
        None
    }
    /// Whether this primitive's kernel, at these input and output shapes, may split its work
    /// over the rayon pool: a `jit` replay called from outside the pool is then handed to the
    /// pool whole (one hand-off instead of one per kernel). Default: no (layout, index and
    /// reduction kernels run on the caller's thread); the elementwise arithmetic, products,
    /// random draws and custom functions say when they split.
    fn splits_work(&self, _inputs: &[&[usize]], _out: &[usize]) -> bool {
        false
    }
    /// Slice kernel for `jit`'s small-program replay ([`crate::jit::lower`]): the kernel that
    /// computes this primitive's output (of shape `out`) from inputs of shapes `inputs` and one
    /// dtype, or `None` when it has no such form (the program then replays through `forward`).
    fn lower(&self, _inputs: &[&[usize]], _out: &[usize]) -> Option<Kernel> {
        None
    }
    /// Transpose rule: cotangents of the inputs given the output cotangent `g` (of the
    /// output's shape), for the inputs where `needs[i]` (`None` is a symbolic zero). A chunk of
    /// Jacobian rows pulled back in one pass is this rule batched by the batch rules of the
    /// operations it is written with (vmap of the pullback, see `vmap::batched_vjp`), so
    /// [`Primitive::batch`] is the one batching rule.
    fn vjp(
        &self,
        inputs: &[&Tensor],
        output: &Tensor,
        g: &Tensor,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor>>>;
}

/// An abstract value: what a primitive's output will be, without its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aval {
    /// The output's shape.
    pub shape: Shape,
    /// The output's dtype.
    pub dtype: DType,
}

impl Aval {
    /// The aval of `shape` and `dtype`.
    pub(crate) fn new(shape: impl Into<Shape>, dtype: DType) -> Aval {
        Aval {
            shape: shape.into(),
            dtype,
        }
    }
    /// The aval of a tensor of `t`'s shape and dtype.
    pub(crate) fn like(t: &Tensor) -> Aval {
        Aval::new(t.shape(), t.dtype())
    }
}

/// A primitive's forward computation as one kernel on slices (see [`Primitive::lower`]); run by
/// [`crate::jit::lower`].
#[derive(Clone, Debug)]
pub(crate) enum Kernel {
    /// Elementwise unary op.
    Unary(UnaryOp),
    /// Elementwise binary op with numpy broadcasting of `a` and `b` to `out`.
    Binary {
        op: BinaryOp,
        a: Shape,
        b: Shape,
        out: Shape,
    },
    /// Reduction of every element.
    ReduceAll(ReduceOp),
    /// Reduction of `shape` over `axes`.
    ReduceAxes {
        op: ReduceOp,
        shape: Shape,
        axes: Vec<usize>,
    },
    /// The same elements (a reshape, a broadcast to the same shape).
    Copy,
    /// A strided read of the input into `out` from element `offset` (a broadcast, a slice).
    Gather {
        strides: Vec<usize>,
        offset: usize,
        out: Shape,
    },
    /// A strided read with signed strides (a slice with negative steps), or, with `scatter`, its
    /// transpose: zeros with the input written at those positions (`shape` is then the input's).
    Strided {
        strides: Vec<isize>,
        offset: usize,
        shape: Shape,
        scatter: bool,
    },
    /// One `(m x k) @ (k x n)` product with the operands' row/column strides.
    Gemm(MatDims),
}

/// How a primitive takes part in `jit`'s elementwise fusion ([`crate::jit::fuse`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fusion {
    /// Elementwise on one operand.
    Unary(UnaryOp),
    /// Elementwise on two operands of the output's size or scalars.
    Binary(BinaryOp),
    /// The sum of every element (ends a fused pass).
    SumAll,
    /// A one-element tensor broadcast to every position (or a copy of an equal-size one).
    Splat,
    /// The same elements under another shape.
    Copy,
}

/// The fallback batch rule: slice each batched input per example, apply, stack.
pub(crate) fn batch_by_loop(
    this: &Arc<dyn Primitive>,
    inputs: &[&Tensor],
    batched: &[bool],
) -> Result<Tensor> {
    let n = batch_size(inputs, batched);
    let outs = (0..n)
        .map(|b| {
            let ex: Vec<Tensor> = inputs
                .iter()
                .zip(batched)
                .map(|(t, &bt)| {
                    if bt {
                        t.try_index_axis(0, b as isize)
                    } else {
                        Ok((*t).clone())
                    }
                })
                .collect::<Result<_>>()?;
            let refs: Vec<&Tensor> = ex.iter().collect();
            apply(this.clone(), &refs)
        })
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Tensor> = outs.iter().collect();
    Tensor::try_stack(&refs, 0)
}

fn batch_size(inputs: &[&Tensor], batched: &[bool]) -> usize {
    inputs
        .iter()
        .zip(batched)
        .find(|(_, &b)| b)
        .map_or(1, |(t, _)| t.shape()[0])
}

/// The per-example rank of an input.
fn example_rank(t: &Tensor, batched: bool) -> usize {
    t.ndim() - usize::from(batched)
}

/// A batched input reshaped to `(B, 1, …, 1, example shape)` of per-example rank `rank`, so
/// that numpy broadcasting against unbatched operands (which align from the right) keeps the
/// batch axis apart. Unbatched inputs are returned as they are.
fn align_batched(t: &Tensor, batched: bool, rank: usize) -> Result<Tensor> {
    let r = example_rank(t, batched);
    if !batched || r >= rank {
        return Ok(t.clone());
    }
    let mut shape = vec![t.shape()[0]];
    shape.extend(std::iter::repeat_n(1, rank - r));
    shape.extend_from_slice(&t.shape()[1..]);
    t.try_reshape_to(&shape)
}

/// Batch rule of broadcasting primitives (elementwise, select, matmul): align every batched
/// operand to the largest per-example rank, then apply the primitive unchanged.
pub(crate) fn batch_broadcasting(
    this: &Arc<dyn Primitive>,
    inputs: &[&Tensor],
    batched: &[bool],
) -> Result<Tensor> {
    let rank = inputs
        .iter()
        .zip(batched)
        .map(|(t, &b)| example_rank(t, b))
        .max()
        .unwrap_or(0);
    let aligned: Vec<Tensor> = inputs
        .iter()
        .zip(batched)
        .map(|(t, &b)| align_batched(t, b, rank))
        .collect::<Result<_>>()?;
    let refs: Vec<&Tensor> = aligned.iter().collect();
    apply(this.clone(), &refs)
}

thread_local! {
    /// Kernel calls ([`Primitive::forward`]) on this thread, for [`kernel_calls`].
    static KERNEL_CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many primitive kernels this thread has run (eager operations and step-by-step `jit`
/// replays; fused passes and arena programs run their own kernels and are not counted). A
/// diagnostic: tracing and `eval_shape` leave it unchanged.
pub fn kernel_calls() -> u64 {
    KERNEL_CALLS.with(|c| c.get())
}

/// Count `n` kernels run on this thread's behalf by a pool thread (a replay handed to the pool).
pub(crate) fn count_kernel_calls(n: u64) {
    KERNEL_CALLS.with(|c| c.set(c.get() + n));
}

/// Apply a primitive: run its kernel (or, when an input is abstract or a `jit` trace stages
/// constants, only its abstract rule) and record it on every open tape that sees its inputs.
pub(crate) fn apply(prim: Arc<dyn Primitive>, inputs: &[&Tensor]) -> Result<Tensor> {
    let dtypes: SmallVec<[DType; 4]> = inputs.iter().map(|t| t.dtype()).collect();
    prim.check_dtypes(&dtypes)?;
    if inputs.iter().any(|t| t.is_abstract()) || trace::stages_constants() {
        let aval = crate::panics::catching(|| prim.abstract_eval(inputs))?;
        let out = Tensor::abstract_value(aval.shape, aval.dtype, Default::default());
        return Ok(trace::record(&prim, inputs, out));
    }
    KERNEL_CALLS.with(|c| c.set(c.get() + 1));
    // An output buffer that cannot be allocated is raised from deep in a kernel; it comes back
    // here as the `Err` of this operation.
    let out = crate::panics::catching(|| prim.forward(inputs))?;
    Ok(trace::record(&prim, inputs, out))
}

/// Whether an elementwise kernel with an output of shape `out` splits over the pool (above
/// [`stategrad_simd::PAR_CHUNK`] elements).
pub(crate) fn splits_elementwise(out: &[usize]) -> bool {
    out.iter().product::<usize>() > stategrad_simd::PAR_CHUNK
}

pub(crate) fn par() -> Par {
    if crate::parallel::sequential() {
        Par::Seq
    } else {
        Par::Rayon
    }
}

// ------------------------------------------------------------------ shape helpers

/// numpy broadcasting of two shapes.
pub(crate) fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Shape> {
    let n = a.len().max(b.len());
    let mut out = Shape::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: a.into(),
                    rhs: b.into(),
                })
            }
        });
    }
    crate::tensor::shape_numel(op, &out)?;
    Ok(out)
}

pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![0; shape.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        s[i] = acc;
        acc *= shape[i];
    }
    s
}

/// Element strides to read a tensor of `shape` broadcast to `out` (0 on broadcast dims).
pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let cs = contiguous_strides(shape);
    let off = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < off || shape[i - off] == 1 {
                0
            } else {
                cs[i - off]
            }
        })
        .collect()
}

/// An output buffer for a kernel that writes every element (contents unspecified until then).
fn new_buffer(dtype: DType, n: usize) -> Buffer {
    Buffer::for_overwrite(dtype, n)
}

/// A fresh buffer of `x`'s dtype with `n` elements, written by `$body` with `$a` bound to `x`'s
/// data and `$o` to the output, both of the same element type (one body for f32 and f64; with
/// `any`, one body for every dtype).
macro_rules! fill_like {
    (any zeroed $x:expr, $n:expr, |$a:ident, $o:ident| $body:expr) => {{
        let mut out = Buffer::filled($x.dtype(), $n, 0.0);
        match ($x.buf(), &mut out) {
            (Buffer::F32($a), Buffer::F32($o)) => $body,
            (Buffer::F64($a), Buffer::F64($o)) => $body,
            (Buffer::I32($a), Buffer::I32($o)) => $body,
            (Buffer::I64($a), Buffer::I64($o)) => $body,
            (Buffer::Bool($a), Buffer::Bool($o)) => $body,
            _ => unreachable!("output buffer made with the input dtype"),
        }
        out
    }};
    (any $x:expr, $n:expr, |$a:ident, $o:ident| $body:expr) => {
        fill_like!(any zeroed $x, $n, |$a, $o| $body)
    };
    (zeroed $x:expr, $n:expr, |$a:ident, $o:ident| $body:expr) => {{
        let out = Buffer::filled($x.dtype(), $n, 0.0);
        fill_like!(@run $x, out, |$a, $o| $body)
    }};
    ($x:expr, $n:expr, |$a:ident, $o:ident| $body:expr) => {{
        let out = new_buffer($x.dtype(), $n);
        fill_like!(@run $x, out, |$a, $o| $body)
    }};
    (@run $x:expr, $out:ident, |$a:ident, $o:ident| $body:expr) => {{
        let mut out = $out;
        match ($x.buf(), &mut out) {
            (Buffer::F32($a), Buffer::F32($o)) => $body,
            (Buffer::F64($a), Buffer::F64($o)) => $body,
            _ => unreachable!("output buffer made with the input dtype"),
        }
        out
    }};
}

// The families of primitives (after `fill_like!`, which they use).
pub(crate) mod data;
mod elementwise;
mod index;
mod layout;
mod matmul;
mod reduce;
mod slice;

pub(crate) use elementwise::*;
pub(crate) use index::*;
pub(crate) use layout::*;
pub(crate) use matmul::*;
pub(crate) use reduce::*;
pub(crate) use slice::*;
