//! Primitives: each declares, in one place, its shape rule and kernel (`forward`) and its
//! transpose/VJP (`vjp`), written in differentiable tensor operations so derivatives of
//! derivatives need no special code. Forward-mode products are derived from these rules by
//! linear transposition (see [`crate::transform::jvp`]); batched Jacobians replay them per chunk.

use crate::error::{Error, Result};
use crate::tensor::{Buffer, DType, Float, Shape, Tensor};
use crate::trace;
use stategrad_simd::{self as simd, BinaryOp, Par, ReduceOp, UnaryOp};
use std::fmt;
use std::sync::Arc;

/// One differentiable operation.
pub trait Primitive: Send + Sync + fmt::Debug {
    /// The name used in errors and `debug_nan` reports.
    fn name(&self) -> &'static str;
    /// Shape rule and kernel: compute the output from the inputs' data (their tags are ignored).
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
    /// Fusion rule: how `jit` may run this primitive inside a fused elementwise pass (`None`:
    /// it runs on its own).
    fn fusion(&self) -> Option<Fusion> {
        None
    }
    /// Slice kernel for `jit`'s small-program replay ([`crate::jit::lower`]): the kernel that
    /// computes this primitive's output (of shape `out`) from inputs of shapes `inputs` and one
    /// dtype, or `None` when it has no such form (the program then replays through `forward`).
    fn lower(&self, _inputs: &[&[usize]], _out: &[usize]) -> Option<Kernel> {
        None
    }
    /// Transpose rule: cotangents of the inputs given the output cotangent `g`, for the inputs
    /// where `needs[i]` (`None` is a symbolic zero). `g` may carry `nb` leading batch dimensions
    /// (a chunk of Jacobian rows in one pass); each result then has those batch dimensions
    /// followed by its input's shape. Rules written with broadcasting ops batch for free; rules
    /// that name shapes or axes use [`batched`] and shift axes by `nb`.
    fn vjp(
        &self,
        inputs: &[&Tensor],
        output: &Tensor,
        g: &Tensor,
        needs: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>>;
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
    /// A strided read of the input into `out` (a broadcast).
    Gather { strides: Vec<usize>, out: Shape },
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

/// The shape `g`'s `nb` batch dimensions followed by `shape`.
pub(crate) fn batched(g: &Tensor, nb: usize, shape: &[usize]) -> Vec<usize> {
    g.shape()[..nb].iter().chain(shape).copied().collect()
}

/// Sum `t` (`nb` batch dims, then an output shape) down to the batch dims followed by `shape`:
/// the transpose of broadcasting `shape` to the output, keeping the batch dims apart from the
/// dims broadcasting added on the left.
pub(crate) fn sum_to_batched(t: &Tensor, nb: usize, shape: &[usize]) -> Result<Tensor> {
    if nb == 0 {
        return t.try_sum_to(shape);
    }
    let rank = t.ndim().saturating_sub(nb);
    let mut padded: Vec<usize> = t.shape()[..nb].to_vec();
    padded.extend(std::iter::repeat_n(1, rank.saturating_sub(shape.len())));
    padded.extend_from_slice(shape);
    t.try_sum_to(&padded)?
        .try_reshape_to(&batched(t, nb, shape))
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

/// Apply a primitive: run its kernel and record it on every open tape that sees its inputs.
pub(crate) fn apply(prim: Arc<dyn Primitive>, inputs: &[&Tensor]) -> Result<Tensor> {
    // An output buffer that cannot be allocated is raised from deep in a kernel; it comes back
    // here as the `Err` of this operation.
    let out = crate::panics::catching(|| prim.forward(inputs))?;
    Ok(trace::record(&prim, inputs, out))
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
/// data and `$o` to the output, both of the same element type (one body for f32 and f64).
macro_rules! fill_like {
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

// ------------------------------------------------------------------ elementwise

/// Elementwise unary operation.
#[derive(Debug)]
pub(crate) struct Unary(pub UnaryOp);

impl Primitive for Unary {
    fn name(&self) -> &'static str {
        match self.0 {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Relu => "relu",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Abs => "abs",
            UnaryOp::Sign => "sign",
            UnaryOp::Square => "square",
            UnaryOp::Recip => "reciprocal",
        }
    }

    fn fusion(&self) -> Option<Fusion> {
        Some(Fusion::Unary(self.0))
    }
    fn lower(&self, _: &[&[usize]], _: &[usize]) -> Option<Kernel> {
        Some(Kernel::Unary(self.0))
    }
    fn batch(&self, this: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        apply(this.clone(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        let out = fill_like!(x, x.numel(), |a, o| simd::unary(self.0, a, o, par()));
        Ok(Tensor::from_buffer(out, x.shape()))
    }

    fn vjp(
        &self,
        inputs: &[&Tensor],
        y: &Tensor,
        g: &Tensor,
        _: &[bool],
        _nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = inputs[0];
        let d = match self.0 {
            UnaryOp::Neg => g.try_neg()?,
            UnaryOp::Exp => g.try_mul(y)?,
            UnaryOp::Log => g.try_div(x)?,
            UnaryOp::Tanh => g.try_mul(&y.try_square()?.try_rsub_scalar(1.0)?)?,
            UnaryOp::Sigmoid => g.try_mul(y)?.try_mul(&y.try_rsub_scalar(1.0)?)?,
            UnaryOp::Relu => g.try_mul(&x.gt_scalar(0.0))?,
            UnaryOp::Sin => g.try_mul(&x.try_cos()?)?,
            UnaryOp::Cos => g.try_mul(&x.try_sin()?)?.try_neg()?,
            UnaryOp::Sqrt => g.try_div(y)?.try_mul_scalar(0.5)?,
            UnaryOp::Abs => g.try_mul(&x.sign())?,
            UnaryOp::Sign => return Ok(vec![None]),
            UnaryOp::Square => g.try_mul(x)?.try_mul_scalar(2.0)?,
            UnaryOp::Recip => g.try_mul(&y.try_square()?)?.try_neg()?,
        };
        Ok(vec![Some(d)])
    }
}

/// Elementwise binary operation with numpy broadcasting (operands share a dtype).
#[derive(Debug)]
pub(crate) struct Binary(pub BinaryOp);

pub(crate) fn binary_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "add",
        BinaryOp::Sub => "sub",
        BinaryOp::Mul => "mul",
        BinaryOp::Div => "div",
        BinaryOp::Pow => "pow",
        BinaryOp::Max => "maximum",
        BinaryOp::Min => "minimum",
        BinaryOp::Gt => "greater",
        BinaryOp::Ge => "greater_equal",
        BinaryOp::Lt => "less",
        BinaryOp::Le => "less_equal",
        BinaryOp::Eq => "equal",
        BinaryOp::Ne => "not_equal",
    }
}

fn is_comparison(op: BinaryOp) -> bool {
    matches!(
        op,
        BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Eq | BinaryOp::Ne
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn binary_kernel<T: simd::Element>(
    op: BinaryOp,
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out_shape: &[usize],
    o: &mut [T],
    p: Par,
) {
    if a.len() == o.len() && b.len() == o.len() {
        simd::binary(op, a, b, o, p)
    } else if b.len() == 1 && a.len() == o.len() {
        simd::binary_scalar(op, a, b[0], o, p)
    } else if a.len() == 1 && b.len() == o.len() {
        simd::scalar_binary(op, a[0], b, o, p)
    } else {
        // Only a true broadcast needs strides.
        let (sa, sb) = (
            broadcast_strides(a_shape, out_shape),
            broadcast_strides(b_shape, out_shape),
        );
        simd::binary_strided(op, a, &sa, b, &sb, out_shape, o)
    }
}

impl Primitive for Binary {
    fn name(&self) -> &'static str {
        binary_name(self.0)
    }

    fn fusion(&self) -> Option<Fusion> {
        Some(Fusion::Binary(self.0))
    }
    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Option<Kernel> {
        Some(Kernel::Binary {
            op: self.0,
            a: inputs[0].into(),
            b: inputs[1].into(),
            out: out.into(),
        })
    }
    fn batch(
        &self,
        this: &Arc<dyn Primitive>,
        inputs: &[&Tensor],
        batched: &[bool],
    ) -> Result<Tensor> {
        batch_broadcasting(this, inputs, batched)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let (a, b) = (inputs[0], inputs[1]);
        let shape = broadcast_shapes(self.name(), a.shape(), b.shape())?;
        let n: usize = shape.iter().product();
        let mut out = new_buffer(a.dtype(), n);
        match (a.buf(), b.buf(), &mut out) {
            (Buffer::F32(x), Buffer::F32(y), Buffer::F32(o)) => {
                binary_kernel(self.0, x, a.shape(), y, b.shape(), &shape, o, par())
            }
            (Buffer::F64(x), Buffer::F64(y), Buffer::F64(o)) => {
                binary_kernel(self.0, x, a.shape(), y, b.shape(), &shape, o, par())
            }
            _ => {
                return Err(Error::DTypeMismatch {
                    op: self.name(),
                    lhs: a.dtype().name(),
                    rhs: b.dtype().name(),
                })
            }
        }
        Ok(Tensor::from_buffer(out, &shape))
    }

    fn vjp(
        &self,
        inputs: &[&Tensor],
        y: &Tensor,
        g: &Tensor,
        needs: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (inputs[0], inputs[1]);
        if is_comparison(self.0) {
            return Ok(vec![None, None]);
        }
        let (ga, gb): (Option<Tensor>, Option<Tensor>) = match self.0 {
            BinaryOp::Add => (Some(g.clone()), Some(g.clone())),
            BinaryOp::Sub => (Some(g.clone()), needs[1].then(|| g.try_neg()).transpose()?),
            BinaryOp::Mul => (
                needs[0].then(|| g.try_mul(b)).transpose()?,
                needs[1].then(|| g.try_mul(a)).transpose()?,
            ),
            BinaryOp::Div => (
                needs[0].then(|| g.try_div(b)).transpose()?,
                needs[1]
                    .then(|| g.try_mul(y)?.try_div(b)?.try_neg())
                    .transpose()?,
            ),
            BinaryOp::Pow => (
                needs[0]
                    .then(|| g.try_mul(b)?.try_mul(&a.try_pow(&b.try_sub_scalar(1.0)?)?))
                    .transpose()?,
                needs[1]
                    .then(|| {
                        // d/db a^b = a^b log a, taken as 0 where a == 0 (as JAX does).
                        let safe_a = Tensor::try_select(&a.eq_scalar(0.0), &a.ones_like(), a)?;
                        g.try_mul(y)?.try_mul(&safe_a.try_log()?)
                    })
                    .transpose()?,
            ),
            BinaryOp::Max | BinaryOp::Min => {
                // Ties split the cotangent evenly, as JAX does.
                let (first, second) = if self.0 == BinaryOp::Max {
                    (a.try_gt(b)?, b.try_gt(a)?)
                } else {
                    (a.try_lt(b)?, b.try_lt(a)?)
                };
                let tie = a.try_eq(b)?.try_mul_scalar(0.5)?;
                (
                    needs[0]
                        .then(|| g.try_mul(&first.try_add(&tie)?))
                        .transpose()?,
                    needs[1]
                        .then(|| g.try_mul(&second.try_add(&tie)?))
                        .transpose()?,
                )
            }
            _ => unreachable!("comparisons handled above"),
        };
        Ok(vec![
            ga.map(|t| sum_to_batched(&t, nb, a.shape())).transpose()?,
            gb.map(|t| sum_to_batched(&t, nb, b.shape())).transpose()?,
        ])
    }
}

/// `select(cond, a, b)`: `a` where `cond != 0`, else `b`, with broadcasting.
#[derive(Debug)]
pub(crate) struct Select;

impl Primitive for Select {
    fn name(&self) -> &'static str {
        "select"
    }

    fn batch(
        &self,
        this: &Arc<dyn Primitive>,
        inputs: &[&Tensor],
        batched: &[bool],
    ) -> Result<Tensor> {
        batch_broadcasting(this, inputs, batched)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let (c, a, b) = (inputs[0], inputs[1], inputs[2]);
        let s1 = broadcast_shapes("select", c.shape(), a.shape())?;
        let shape = broadcast_shapes("select", &s1, b.shape())?;
        let n: usize = shape.iter().product();
        let (sc, sa, sb) = (
            broadcast_strides(c.shape(), &shape),
            broadcast_strides(a.shape(), &shape),
            broadcast_strides(b.shape(), &shape),
        );
        let c = c.cast_data(a.dtype());
        let mut out = new_buffer(a.dtype(), n);
        match (c.buf(), a.buf(), b.buf(), &mut out) {
            (Buffer::F32(c), Buffer::F32(x), Buffer::F32(y), Buffer::F32(o)) => {
                simd::select_strided(c, &sc, x, &sa, y, &sb, &shape, o)
            }
            (Buffer::F64(c), Buffer::F64(x), Buffer::F64(y), Buffer::F64(o)) => {
                simd::select_strided(c, &sc, x, &sa, y, &sb, &shape, o)
            }
            _ => {
                return Err(Error::DTypeMismatch {
                    op: "select",
                    lhs: a.dtype().name(),
                    rhs: b.dtype().name(),
                })
            }
        }
        Ok(Tensor::from_buffer(out, &shape))
    }

    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        needs: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        let (c, a, b) = (inputs[0], inputs[1], inputs[2]);
        let zero = g.zeros_like_scalar();
        Ok(vec![
            None,
            needs[1]
                .then(|| sum_to_batched(&Tensor::try_select(c, g, &zero)?, nb, a.shape()))
                .transpose()?,
            needs[2]
                .then(|| sum_to_batched(&Tensor::try_select(c, &zero, g)?, nb, b.shape()))
                .transpose()?,
        ])
    }
}

/// Change of dtype.
#[derive(Debug)]
pub(crate) struct Cast(pub DType);

impl Primitive for Cast {
    fn name(&self) -> &'static str {
        "convert_element_type"
    }
    fn batch(&self, this: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        apply(this.clone(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        Ok(Tensor::from_buffer(
            inputs[0].buf().cast(self.0),
            inputs[0].shape(),
        ))
    }
    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        _: &[bool],
        _nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.cast(inputs[0].dtype()))])
    }
}

// ------------------------------------------------------------------ reductions

/// Reduction over `axes` (sorted, unique), keeping them as size-1 dims if `keepdims`.
#[derive(Debug)]
pub(crate) struct Reduce {
    pub op: ReduceOp,
    pub axes: Vec<usize>,
    pub keepdims: bool,
}

pub(crate) fn reduced_shape(shape: &[usize], axes: &[usize], keepdims: bool) -> Shape {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| {
            if axes.contains(&i) {
                keepdims.then_some(1)
            } else {
                Some(d)
            }
        })
        .collect()
}

impl Primitive for Reduce {
    fn name(&self) -> &'static str {
        match self.op {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Max => "reduce_max",
            ReduceOp::Min => "reduce_min",
        }
    }

    fn fusion(&self) -> Option<Fusion> {
        // Only a reduction to one element ends a fused pass (checked by the planner).
        (self.op == ReduceOp::Sum).then_some(Fusion::SumAll)
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Option<Kernel> {
        let shape = inputs[0];
        if shape.contains(&0) {
            return None;
        }
        Some(if self.axes.len() == shape.len() {
            Kernel::ReduceAll(self.op)
        } else {
            Kernel::ReduceAxes {
                op: self.op,
                shape: shape.into(),
                axes: self.axes.clone(),
            }
        })
    }
    fn batch(&self, _: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        let shifted = Reduce {
            op: self.op,
            axes: self.axes.iter().map(|a| a + 1).collect(),
            keepdims: self.keepdims,
        };
        apply(Arc::new(shifted), inputs)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        let shape = reduced_shape(x.shape(), &self.axes, self.keepdims);
        if self.op != ReduceOp::Sum && x.numel() == 0 {
            return Err(Error::InvalidArgument {
                op: self.name(),
                msg: "reduction of an empty tensor has no identity".into(),
            });
        }
        let n: usize = shape.iter().product();
        let all = self.axes.len() == x.ndim();
        let out = fill_like!(x, n, |a, o| if all {
            o[0] = simd::reduce_all(self.op, a)
        } else {
            simd::reduce_axes(self.op, a, x.shape(), &self.axes, o)
        });
        Ok(Tensor::from_buffer(out, &shape))
    }

    fn vjp(
        &self,
        inputs: &[&Tensor],
        y: &Tensor,
        g: &Tensor,
        _: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = inputs[0];
        let keep = reduced_shape(x.shape(), &self.axes, true);
        let gk = g.try_reshape_to(&batched(g, nb, &keep))?;
        let d = match self.op {
            ReduceOp::Sum => gk.try_broadcast_to(&batched(g, nb, x.shape()))?,
            ReduceOp::Max | ReduceOp::Min => {
                // The cotangent is shared evenly among the positions that attain the extreme.
                let yk = y.try_reshape_to(&keep)?;
                let mask = x.try_eq(&yk)?;
                let count = mask.try_sum_axes(&self.axes, true)?;
                mask.try_div(&count)?.try_mul(&gk)?
            }
        };
        Ok(vec![Some(d)])
    }
}

// ------------------------------------------------------------------ layout

/// Broadcast to a larger shape (materialised).
#[derive(Debug)]
pub(crate) struct BroadcastTo(pub Shape);

impl Primitive for BroadcastTo {
    fn name(&self) -> &'static str {
        "broadcast_in_dim"
    }
    fn fusion(&self) -> Option<Fusion> {
        Some(Fusion::Splat)
    }
    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Option<Kernel> {
        Some(if inputs[0] == out {
            Kernel::Copy
        } else {
            Kernel::Gather {
                strides: broadcast_strides(inputs[0], out),
                out: out.into(),
            }
        })
    }
    fn batch(&self, _: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        let x = align_batched(inputs[0], true, self.0.len())?;
        let mut shape: Shape = Shape::from_slice(&[x.shape()[0]]);
        shape.extend_from_slice(&self.0);
        apply(Arc::new(BroadcastTo(shape)), &[&x])
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        let shape = broadcast_shapes("broadcast_to", x.shape(), &self.0)?;
        if shape.as_slice() != self.0.as_slice() {
            return Err(Error::ShapeMismatch {
                op: "broadcast_to",
                lhs: x.shape().into(),
                rhs: self.0.as_slice().into(),
            });
        }
        if x.shape() == shape.as_slice() {
            return Ok(x.detach());
        }
        if x.numel() == 1 {
            // A scalar broadcast is a fill, not a strided gather.
            let n = shape.iter().product();
            return Ok(Tensor::from_buffer(
                Buffer::filled(x.dtype(), n, x.buf().get_f64(0)),
                &shape,
            ));
        }
        let st = broadcast_strides(x.shape(), &shape);
        Ok(gather(x, &st, 0, &shape))
    }
    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        _: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(sum_to_batched(g, nb, inputs[0].shape())?)])
    }
}

pub(crate) fn gather(x: &Tensor, strides: &[usize], offset: usize, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let out = fill_like!(x, n, |a, o| simd::gather_strided(
        a, strides, offset, shape, o
    ));
    Tensor::from_buffer(out, shape)
}

/// The identity with a zero derivative (JAX's `lax.stop_gradient`). Unlike
/// [`Tensor::detach`], which makes a constant, it stays a step of a `jit` program, so every
/// replay recomputes it from that call's inputs.
#[derive(Debug)]
pub(crate) struct StopGradient;

impl Primitive for StopGradient {
    fn name(&self) -> &'static str {
        "stop_gradient"
    }
    fn fusion(&self) -> Option<Fusion> {
        Some(Fusion::Copy)
    }
    fn lower(&self, _: &[&[usize]], _: &[usize]) -> Option<Kernel> {
        Some(Kernel::Copy)
    }
    fn batch(&self, this: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        apply(this.clone(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        Ok(inputs[0].detach())
    }
    fn vjp(
        &self,
        _: &[&Tensor],
        _: &Tensor,
        _: &Tensor,
        _: &[bool],
        _nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None])
    }
}

/// Same data, another shape (no copy).
#[derive(Debug)]
pub(crate) struct Reshape(pub Shape);

impl Primitive for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn fusion(&self) -> Option<Fusion> {
        Some(Fusion::Copy)
    }
    fn lower(&self, _: &[&[usize]], _: &[usize]) -> Option<Kernel> {
        Some(Kernel::Copy)
    }
    fn batch(&self, _: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        let mut shape: Shape = Shape::from_slice(&[inputs[0].shape()[0]]);
        shape.extend_from_slice(&self.0);
        apply(Arc::new(Reshape(shape)), inputs)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        Ok(Tensor::from_parts(
            x.0.buf.clone(),
            self.0.clone(),
            Default::default(),
        ))
    }
    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        _: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.try_reshape_to(&batched(
            g,
            nb,
            inputs[0].shape(),
        ))?)])
    }
}

/// Axis permutation (materialised).
#[derive(Debug)]
pub(crate) struct Permute(pub Vec<usize>);

impl Primitive for Permute {
    fn name(&self) -> &'static str {
        "transpose"
    }
    fn batch(&self, _: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        let perm: Vec<usize> = std::iter::once(0)
            .chain(self.0.iter().map(|p| p + 1))
            .collect();
        apply(Arc::new(Permute(perm)), inputs)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        let cs = contiguous_strides(x.shape());
        let shape: Shape = self.0.iter().map(|&p| x.shape()[p]).collect();
        let st: Vec<usize> = self.0.iter().map(|&p| cs[p]).collect();
        Ok(gather(x, &st, 0, &shape))
    }
    fn vjp(
        &self,
        _: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        _: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        let mut inv = vec![0; self.0.len()];
        for (i, &p) in self.0.iter().enumerate() {
            inv[p] = i;
        }
        let perm: Vec<usize> = (0..nb).chain(inv.iter().map(|&p| p + nb)).collect();
        Ok(vec![Some(g.try_permute(&perm)?)])
    }
}

/// Strided slice `start..end` step `step` (step >= 1) on every axis.
#[derive(Debug)]
pub(crate) struct Slice {
    pub starts: Vec<usize>,
    pub ends: Vec<usize>,
    pub steps: Vec<usize>,
}

impl Primitive for Slice {
    fn name(&self) -> &'static str {
        "slice"
    }
    fn batch(&self, _: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        let shifted = Slice {
            starts: std::iter::once(0)
                .chain(self.starts.iter().copied())
                .collect(),
            ends: std::iter::once(inputs[0].shape()[0])
                .chain(self.ends.iter().copied())
                .collect(),
            steps: std::iter::once(1)
                .chain(self.steps.iter().copied())
                .collect(),
        };
        apply(Arc::new(shifted), inputs)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        let cs = contiguous_strides(x.shape());
        let shape: Shape = (0..x.ndim())
            .map(|i| (self.ends[i].saturating_sub(self.starts[i])).div_ceil(self.steps[i]))
            .collect();
        let st: Vec<usize> = (0..x.ndim()).map(|i| cs[i] * self.steps[i]).collect();
        let off: usize = (0..x.ndim()).map(|i| cs[i] * self.starts[i]).sum();
        if shape.iter().product::<usize>() == 0 {
            return Ok(Tensor::full_dtype(&shape, 0.0, x.dtype()));
        }
        Ok(gather(x, &st, off, &shape))
    }
    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        _: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = inputs[0];
        let pad = Arc::new(Pad {
            starts: std::iter::repeat_n(0, nb)
                .chain(self.starts.iter().copied())
                .collect(),
            steps: std::iter::repeat_n(1, nb)
                .chain(self.steps.iter().copied())
                .collect(),
            shape: batched(g, nb, x.shape()).into(),
        });
        Ok(vec![Some(apply(pad, &[g])?)])
    }
}

/// `out[offset + Σ idx·strides] = src[idx]` for every index of a contiguous `src` of `shape`.
fn scatter_strided<T: Copy>(
    src: &[T],
    strides: &[usize],
    offset: usize,
    shape: &[usize],
    out: &mut [T],
) {
    let nd = shape.len();
    let mut idx = vec![0usize; nd];
    let mut pos = offset;
    for &v in src {
        out[pos] = v;
        for d in (0..nd).rev() {
            idx[d] += 1;
            pos += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            pos -= strides[d] * shape[d];
            idx[d] = 0;
        }
    }
}

/// Scatter into zeros of `shape` at `start + i*step`: the transpose of [`Slice`].
#[derive(Debug)]
pub(crate) struct Pad {
    pub starts: Vec<usize>,
    pub steps: Vec<usize>,
    pub shape: Shape,
}

impl Primitive for Pad {
    fn name(&self) -> &'static str {
        "pad"
    }
    fn batch(&self, _: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        let shifted = Pad {
            starts: std::iter::once(0)
                .chain(self.starts.iter().copied())
                .collect(),
            steps: std::iter::once(1)
                .chain(self.steps.iter().copied())
                .collect(),
            shape: std::iter::once(inputs[0].shape()[0])
                .chain(self.shape.iter().copied())
                .collect(),
        };
        apply(Arc::new(shifted), inputs)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let g = inputs[0];
        let n: usize = self.shape.iter().product();
        let cs = contiguous_strides(&self.shape);
        // Each source element lands at `start + i*step` per axis: element strides of the output.
        let offset: usize = (0..g.ndim()).map(|d| self.starts[d] * cs[d]).sum();
        let strides: Vec<usize> = (0..g.ndim()).map(|d| self.steps[d] * cs[d]).collect();
        let out = fill_like!(zeroed g, n, |src, o| scatter_strided(
            src,
            &strides,
            offset,
            g.shape(),
            o
        ));
        Ok(Tensor::from_buffer(out, &self.shape))
    }
    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        _: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = inputs[0];
        let ends: Vec<usize> = (0..x.ndim())
            .map(|d| self.starts[d] + (x.shape()[d].saturating_sub(1)) * self.steps[d] + 1)
            .collect();
        let sl = Arc::new(Slice {
            starts: std::iter::repeat_n(0, nb)
                .chain(self.starts.iter().copied())
                .collect(),
            ends: g.shape()[..nb].iter().copied().chain(ends).collect(),
            steps: std::iter::repeat_n(1, nb)
                .chain(self.steps.iter().copied())
                .collect(),
        });
        Ok(vec![Some(apply(sl, &[g])?)])
    }
}

/// Copy the blocks of `inputs` (all of `T`'s dtype) into `out`, interleaved along `axis`.
fn concat_into<T: Float>(
    inputs: &[&Tensor],
    axis: usize,
    outer: usize,
    inner: usize,
    out: &mut [T],
) {
    let mut pos = 0;
    for o in 0..outer {
        for t in inputs {
            let w = t.shape()[axis] * inner;
            let src = T::slice(t.buf()).expect("internal error: concat operands share a dtype");
            out[pos..pos + w].copy_from_slice(&src[o * w..(o + 1) * w]);
            pos += w;
        }
    }
}

/// Concatenation along `axis`.
#[derive(Debug)]
pub(crate) struct Concat(pub usize);

impl Primitive for Concat {
    fn name(&self) -> &'static str {
        "concatenate"
    }
    fn batch(
        &self,
        _: &Arc<dyn Primitive>,
        inputs: &[&Tensor],
        batched: &[bool],
    ) -> Result<Tensor> {
        // Every operand gets the batch axis (shared ones are broadcast along it).
        let n = batch_size(inputs, batched);
        let all: Vec<Tensor> = inputs
            .iter()
            .zip(batched)
            .map(|(t, &b)| {
                if b {
                    Ok((*t).clone())
                } else {
                    let mut shape = vec![n];
                    shape.extend_from_slice(t.shape());
                    t.try_broadcast_to(&shape)
                }
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = all.iter().collect();
        apply(Arc::new(Concat(self.0 + 1)), &refs)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let axis = self.0;
        let first = inputs[0];
        for t in inputs {
            let ok = t.ndim() == first.ndim()
                && (0..t.ndim()).all(|d| d == axis || t.shape()[d] == first.shape()[d]);
            if !ok {
                return Err(Error::ShapeMismatch {
                    op: "concatenate",
                    lhs: first.shape().into(),
                    rhs: t.shape().into(),
                });
            }
        }
        let mut shape: Shape = first.shape().into();
        shape[axis] = inputs
            .iter()
            .try_fold(0usize, |acc, t| acc.checked_add(t.shape()[axis]))
            .ok_or_else(|| Error::ShapeOverflow {
                op: "concatenate",
                shape: first.shape().into(),
            })?;
        let total = crate::tensor::shape_numel("concatenate", &shape)?;
        let outer: usize = first.shape()[..axis].iter().product();
        let inner: usize = first.shape()[axis + 1..].iter().product();
        let out = fill_like!(first, total, |_x, o| concat_into(
            inputs, axis, outer, inner, o
        ));
        Ok(Tensor::from_buffer(out, &shape))
    }
    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        needs: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        let mut start = 0;
        let mut res = Vec::with_capacity(inputs.len());
        for (t, &need) in inputs.iter().zip(needs) {
            let len = t.shape()[self.0];
            res.push(
                need.then(|| g.try_slice_axis(self.0 + nb, start, start + len))
                    .transpose()?,
            );
            start += len;
        }
        Ok(res)
    }
}

// ------------------------------------------------------------------ matmul

/// One `(m x k) @ (k x n)` product of two tensors' data read with the given strides.
fn plain_gemm(
    a: &Tensor,
    rsa: usize,
    csa: usize,
    b: &Tensor,
    rsb: usize,
    csb: usize,
    m: usize,
    k: usize,
    n: usize,
) -> Tensor {
    let mut out = new_buffer(a.dtype(), m * n);
    let p = par();
    match (a.buf(), b.buf(), &mut out) {
        (Buffer::F32(x), Buffer::F32(y), Buffer::F32(o)) => {
            simd::gemm(m, k, n, 1.0, x, rsa, csa, y, rsb, csb, 0.0, o, n, 1, p)
        }
        (Buffer::F64(x), Buffer::F64(y), Buffer::F64(o)) => {
            simd::gemm(m, k, n, 1.0, x, rsa, csa, y, rsb, csb, 0.0, o, n, 1, p)
        }
        _ => unreachable!("matmul operands share a dtype"),
    }
    Tensor::from_buffer(out, &[m, n])
}

/// The dims of one `op(A) @ op(B)` product and the row/column strides of `op(A)` and `op(B)`
/// inside one matrix, from the operands' last two dims.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatDims {
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) rsa: usize,
    pub(crate) csa: usize,
    pub(crate) rsb: usize,
    pub(crate) csb: usize,
}

impl MatMul {
    /// `None` when the inner dims differ (or an operand has fewer than two dims).
    fn dims(&self, a: &[usize], b: &[usize]) -> Option<MatDims> {
        let (&[.., ar, ac], &[.., br, bc]) = (a, b) else {
            return None;
        };
        let (m, k) = if self.ta { (ac, ar) } else { (ar, ac) };
        let (k2, n) = if self.tb { (bc, br) } else { (br, bc) };
        let (rsa, csa) = if self.ta { (1, ac) } else { (ac, 1) };
        let (rsb, csb) = if self.tb { (1, bc) } else { (bc, 1) };
        (k == k2).then_some(MatDims {
            m,
            k,
            n,
            rsa,
            csa,
            rsb,
            csb,
        })
    }
}

/// `op(A) @ op(B)` over the last two dims, batch dims broadcast; `op` transposes when the flag
/// is set (no copy: the kernel reads with swapped strides).
#[derive(Debug)]
pub(crate) struct MatMul {
    pub ta: bool,
    pub tb: bool,
}

impl Primitive for MatMul {
    fn name(&self) -> &'static str {
        "dot_general"
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Option<Kernel> {
        let (a, b) = (inputs[0], inputs[1]);
        if a.len() != 2 || b.len() != 2 {
            return None;
        }
        let d = self.dims(a, b)?;
        (d.k > 0).then_some(Kernel::Gemm(d))
    }

    fn batch(
        &self,
        this: &Arc<dyn Primitive>,
        inputs: &[&Tensor],
        batched: &[bool],
    ) -> Result<Tensor> {
        batch_broadcasting(this, inputs, batched)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let (a, b) = (inputs[0], inputs[1]);
        let err = || Error::ShapeMismatch {
            op: "matmul",
            lhs: a.shape().into(),
            rhs: b.shape().into(),
        };
        if a.ndim() < 2 || b.ndim() < 2 {
            return Err(err());
        }
        if a.dtype() != b.dtype() {
            return Err(Error::DTypeMismatch {
                op: "matmul",
                lhs: a.dtype().name(),
                rhs: b.dtype().name(),
            });
        }
        let (ar, ac) = (a.shape()[a.ndim() - 2], a.shape()[a.ndim() - 1]);
        let (br, bc) = (b.shape()[b.ndim() - 2], b.shape()[b.ndim() - 1]);
        let MatDims {
            m,
            k,
            n,
            rsa,
            csa,
            rsb,
            csb,
        } = self.dims(a.shape(), b.shape()).ok_or_else(err)?;
        let batch = broadcast_shapes(
            "matmul",
            &a.shape()[..a.ndim() - 2],
            &b.shape()[..b.ndim() - 2],
        )
        .map_err(|_| err())?;
        let nb: usize = batch.iter().product();
        let bsa = broadcast_strides(&a.shape()[..a.ndim() - 2], &batch);
        let bsb = broadcast_strides(&b.shape()[..b.ndim() - 2], &batch);
        let mut shape = batch.clone();
        shape.push(m);
        shape.push(n);
        // Zero-size operands can ask for an output whose size does not fit.
        crate::tensor::shape_numel("matmul", &shape)?;
        let mut out = new_buffer(a.dtype(), nb * m * n);
        if k == 0 {
            return Ok(Tensor::full_dtype(&shape, 0.0, a.dtype()));
        }
        // A stack of products with one shared operand is one large GEMM (the common case of
        // batched Jacobian chunks): fold the batch into the rows of A, or into the columns of B.
        if nb > 1 && b.ndim() == 2 && !self.ta && a.shape()[..a.ndim() - 2] == batch[..] {
            let c = plain_gemm(a, ac, 1, b, rsb, csb, nb * m, k, n);
            return Ok(c.with_shape(shape));
        }
        if nb > 1 && a.ndim() == 2 && n == 1 && b.shape()[..b.ndim() - 2] == batch[..] {
            // A stack of matrix-vector products (batched Jacobian columns): row b of the
            // output is A @ v_b, so the whole stack is V (nb x k) @ op(A)^T, already in the
            // output's layout.
            let c = plain_gemm(b, br * bc, rsb, a, csa, rsa, nb, k, m);
            return Ok(c.with_shape(shape));
        }
        if nb > 1 && a.ndim() == 2 && b.shape()[..b.ndim() - 2] == batch[..] {
            let bp = gather(b, &[rsb, br * bc, csb], 0, &[k, nb, n]);
            let cp = plain_gemm(a, rsa, csa, &bp, nb * n, 1, m, k, nb * n);
            return Ok(gather(&cp, &[n, nb * n, 1], 0, &[nb, m, n]).with_shape(shape));
        }
        let p = if nb > 1 { Par::Seq } else { par() };
        let offsets = |bi: usize, strides: &[usize], mat: usize| -> usize {
            let mut rem = bi;
            let mut off = 0;
            for d in (0..batch.len()).rev() {
                off += (rem % batch[d]) * strides[d];
                rem /= batch[d];
            }
            off * mat
        };
        macro_rules! run {
            ($x:expr, $y:expr, $o:expr, $zero:expr, $one:expr) => {{
                let body = |bi: usize, c: &mut [_]| {
                    let oa = offsets(bi, &bsa, ar * ac);
                    let ob = offsets(bi, &bsb, br * bc);
                    simd::gemm(
                        m,
                        k,
                        n,
                        $one,
                        &$x[oa..oa + ar * ac],
                        rsa,
                        csa,
                        &$y[ob..ob + br * bc],
                        rsb,
                        csb,
                        $zero,
                        c,
                        n,
                        1,
                        p,
                    );
                };
                if nb > 1 && !crate::parallel::sequential() && m * n * k * nb > (1 << 18) {
                    use rayon::prelude::*;
                    $o.par_chunks_mut((m * n).max(1))
                        .enumerate()
                        .for_each(|(bi, c)| body(bi, c));
                } else {
                    for bi in 0..nb {
                        body(bi, &mut $o[bi * m * n..(bi + 1) * m * n]);
                    }
                }
            }};
        }
        match (a.buf(), b.buf(), &mut out) {
            (Buffer::F32(x), Buffer::F32(y), Buffer::F32(o)) => run!(x, y, o, 0.0f32, 1.0f32),
            (Buffer::F64(x), Buffer::F64(y), Buffer::F64(o)) => run!(x, y, o, 0.0f64, 1.0f64),
            _ => unreachable!("dtypes checked above"),
        }
        Ok(Tensor::from_buffer(out, &shape))
    }

    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        needs: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (inputs[0], inputs[1]);
        let ga = needs[0]
            .then(|| {
                let d = if self.ta {
                    b.try_matmul_t(g, self.tb, true)?
                } else {
                    g.try_matmul_t(b, false, !self.tb)?
                };
                sum_to_batched(&d, nb, a.shape())
            })
            .transpose()?;
        let gb = needs[1]
            .then(|| {
                let d = if self.tb {
                    g.try_matmul_t(a, true, self.ta)?
                } else {
                    a.try_matmul_t(g, !self.ta, false)?
                };
                sum_to_batched(&d, nb, b.shape())
            })
            .transpose()?;
        Ok(vec![ga, gb])
    }
}
