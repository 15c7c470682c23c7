//! Elementwise primitives: unary and binary ops (with numpy broadcasting), `where`, casts.

use super::*;
use crate::error::{Error, Result};
use crate::tensor::{Buffer, DType, Elem, Tensor};
use stategrad_simd::{self as simd, BinaryOp, Par, UnaryOp};
use std::sync::Arc;

/// Elementwise unary operation.
#[derive(Debug)]
pub(crate) struct Unary(pub UnaryOp);

impl Primitive for Unary {
    fn name(&self) -> &'static str {
        match self.0 {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Log1p => "log1p",
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
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        let exact = matches!(
            self.0,
            UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign | UnaryOp::Square
        );
        match inputs[0] {
            d if d.is_float() || (exact && d.is_int()) => Ok(()),
            d if exact => Err(data::unsupported(
                self.name(),
                d,
                "a float or integer tensor",
            )),
            d => Err(data::unsupported(
                self.name(),
                d,
                "a float tensor (cast integers with `astype`)",
            )),
        }
    }
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        Ok(Aval::like(inputs[0]))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        fn int_unary<T: data::Int>(op: UnaryOp, a: &[T]) -> Vec<T> {
            let f: fn(T) -> T = match op {
                UnaryOp::Neg => T::wrapping_neg,
                UnaryOp::Abs => T::wrapping_abs,
                UnaryOp::Sign => T::signum,
                _ => |x: T| x.wrapping_mul(x),
            };
            a.iter().map(|&v| f(v)).collect()
        }
        let out = match x.buf() {
            Buffer::I32(a) => Buffer::I32(int_unary(self.0, a)),
            Buffer::I64(a) => Buffer::I64(int_unary(self.0, a)),
            _ => fill_like!(x, x.numel(), |a, o| simd::unary(self.0, a, o, par())),
        };
        Ok(Tensor::from_buffer(out, x.shape()))
    }

    fn vjp(
        &self,
        inputs: &[&Tensor],
        y: &Tensor,
        g: &Tensor,
        _: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        let x = inputs[0];
        let d = match self.0 {
            UnaryOp::Neg => g.try_neg()?,
            UnaryOp::Exp => g.try_mul(y)?,
            UnaryOp::Log => g.try_div(x)?,
            UnaryOp::Log1p => g.try_div(&x.try_add_scalar(1.0)?)?,
            UnaryOp::Tanh => g.try_mul(&y.try_square()?.try_rsub_scalar(1.0)?)?,
            UnaryOp::Sigmoid => g.try_mul(y)?.try_mul(&y.try_rsub_scalar(1.0)?)?,
            UnaryOp::Relu => g.try_mul(&x.gt_mask_scalar(0.0))?,
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
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        data::one_dtype(self.name(), inputs)?;
        let exact = matches!(
            self.0,
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Max | BinaryOp::Min
        );
        match inputs[0] {
            d if d.is_float() || (exact && d.is_int()) => Ok(()),
            d => Err(data::unsupported(
                self.name(),
                d,
                "float (or, for + - * maximum minimum, integer) tensors",
            )),
        }
    }
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        let (a, b) = (inputs[0], inputs[1]);
        let shape = broadcast_shapes(self.name(), a.shape(), b.shape())?;
        Ok(Aval::new(shape, a.dtype()))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let (a, b) = (inputs[0], inputs[1]);
        let shape = self.abstract_eval(inputs)?.shape;
        let n: usize = shape.iter().product();
        fn int_binary<T: data::Int>(
            op: BinaryOp,
            a: &Tensor,
            x: &[T],
            b: &Tensor,
            y: &[T],
            shape: &[usize],
        ) -> Vec<T> {
            let f: fn(T, T) -> T = match op {
                BinaryOp::Add => T::wrapping_add,
                BinaryOp::Sub => T::wrapping_sub,
                BinaryOp::Mul => T::wrapping_mul,
                BinaryOp::Max => std::cmp::max,
                _ => std::cmp::min,
            };
            let (sa, sb) = (
                broadcast_strides(a.shape(), shape),
                broadcast_strides(b.shape(), shape),
            );
            data::map2(x, &sa, y, &sb, shape, f)
        }
        match (a.buf(), b.buf()) {
            (Buffer::I32(x), Buffer::I32(y)) => {
                return Ok(Tensor::from_buffer(
                    Buffer::I32(int_binary(self.0, a, x, b, y, &shape)),
                    &shape,
                ))
            }
            (Buffer::I64(x), Buffer::I64(y)) => {
                return Ok(Tensor::from_buffer(
                    Buffer::I64(int_binary(self.0, a, x, b, y, &shape)),
                    &shape,
                ))
            }
            _ => {}
        }
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
                        let safe_a = Tensor::try_select(&a.eq_mask_scalar(0.0), &a.ones_like(), a)?;
                        g.try_mul(y)?.try_mul(&safe_a.try_log()?)
                    })
                    .transpose()?,
            ),
            BinaryOp::Max | BinaryOp::Min => {
                // Ties split the cotangent evenly, as JAX does.
                let (first, second) = if self.0 == BinaryOp::Max {
                    (a.try_gt_mask(b)?, b.try_gt_mask(a)?)
                } else {
                    (a.try_lt_mask(b)?, b.try_lt_mask(a)?)
                };
                let tie = a.try_eq_mask(b)?.try_mul_scalar(0.5)?;
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
            ga.map(|t| t.try_sum_to(a.shape())).transpose()?,
            gb.map(|t| t.try_sum_to(b.shape())).transpose()?,
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
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        data::one_dtype("select", &inputs[1..])
    }
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        let (c, a, b) = (inputs[0], inputs[1], inputs[2]);
        let s1 = broadcast_shapes("select", c.shape(), a.shape())?;
        let shape = broadcast_shapes("select", &s1, b.shape())?;
        Ok(Aval::new(shape, a.dtype()))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let (c, a, b) = (inputs[0], inputs[1], inputs[2]);
        let shape = self.abstract_eval(inputs)?.shape;
        let n: usize = shape.iter().product();
        let (sc, sa, sb) = (
            broadcast_strides(c.shape(), &shape),
            broadcast_strides(a.shape(), &shape),
            broadcast_strides(b.shape(), &shape),
        );
        if let Some(out) = select_data(c, a, b, [&sc, &sa, &sb], &shape) {
            return Ok(Tensor::from_buffer(out, &shape));
        }
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
    ) -> Result<Vec<Option<Tensor>>> {
        let (c, a, b) = (inputs[0], inputs[1], inputs[2]);
        let zero = g.zeros_like_scalar();
        Ok(vec![
            None,
            needs[1]
                .then(|| Tensor::try_select(c, g, &zero)?.try_sum_to(a.shape()))
                .transpose()?,
            needs[2]
                .then(|| Tensor::try_select(c, &zero, g)?.try_sum_to(b.shape()))
                .transpose()?,
        ])
    }
}

/// `select` of integer or bool values (a plain loop; floats take the SIMD kernel: `None`).
fn select_data(
    c: &Tensor,
    a: &Tensor,
    b: &Tensor,
    [sc, sa, sb]: [&[usize]; 3],
    shape: &[usize],
) -> Option<Buffer> {
    fn pick<T: Elem>(
        cond: &[bool],
        x: &[T],
        y: &[T],
        st: [&[usize]; 3],
        shape: &[usize],
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(shape.iter().product());
        data::for_each_offset(shape, st, [0, 0, 0], |[i, j, k]| {
            out.push(if cond[i] { x[j] } else { y[k] })
        });
        out
    }
    let cond = || c.buf().to_vec_as::<bool>();
    let st = [sc, sa, sb];
    // The dtype rule made `a` and `b` alike.
    Some(match (a.buf(), b.buf()) {
        (Buffer::I32(x), Buffer::I32(y)) => Buffer::I32(pick(&cond(), x, y, st, shape)),
        (Buffer::I64(x), Buffer::I64(y)) => Buffer::I64(pick(&cond(), x, y, st, shape)),
        (Buffer::Bool(x), Buffer::Bool(y)) => Buffer::Bool(pick(&cond(), x, y, st, shape)),
        _ => return None,
    })
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
    fn check_dtypes(&self, _: &[DType]) -> Result<()> {
        Ok(())
    }
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        Ok(Aval::new(inputs[0].shape(), self.0))
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
    ) -> Result<Vec<Option<Tensor>>> {
        // Through integers and bools nothing flows: a float cast to an integer gets a zero
        // gradient, as in JAX.
        if !inputs[0].dtype().is_float() || !self.0.is_float() {
            return Ok(vec![None]);
        }
        Ok(vec![Some(g.cast(inputs[0].dtype()))])
    }
}

/// A comparison (`<`, `==`, ...) of two tensors of one dtype with numpy broadcasting, giving a
/// bool tensor. Not differentiable.
#[derive(Debug)]
pub(crate) struct Compare(pub BinaryOp);

impl Primitive for Compare {
    fn name(&self) -> &'static str {
        binary_name(self.0)
    }
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        data::one_dtype(self.name(), inputs)
    }
    fn batch(
        &self,
        this: &Arc<dyn Primitive>,
        inputs: &[&Tensor],
        batched: &[bool],
    ) -> Result<Tensor> {
        batch_broadcasting(this, inputs, batched)
    }
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        let (a, b) = (inputs[0], inputs[1]);
        let shape = broadcast_shapes(self.name(), a.shape(), b.shape())?;
        Ok(Aval::new(shape, DType::Bool))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let (a, b) = (inputs[0], inputs[1]);
        let shape = self.abstract_eval(inputs)?.shape;
        let (sa, sb) = (
            broadcast_strides(a.shape(), &shape),
            broadcast_strides(b.shape(), &shape),
        );
        fn cmp<T: Elem + PartialOrd>(
            op: BinaryOp,
            x: &[T],
            sa: &[usize],
            y: &[T],
            sb: &[usize],
            shape: &[usize],
        ) -> Vec<bool> {
            let f: fn(&T, &T) -> bool = match op {
                BinaryOp::Gt => T::gt,
                BinaryOp::Ge => T::ge,
                BinaryOp::Lt => T::lt,
                BinaryOp::Le => T::le,
                BinaryOp::Eq => T::eq,
                _ => T::ne,
            };
            data::map2(x, sa, y, sb, shape, |p, q| f(&p, &q))
        }
        let out = match (a.buf(), b.buf()) {
            (Buffer::F32(x), Buffer::F32(y)) => cmp(self.0, x, &sa, y, &sb, &shape),
            (Buffer::F64(x), Buffer::F64(y)) => cmp(self.0, x, &sa, y, &sb, &shape),
            (Buffer::I32(x), Buffer::I32(y)) => cmp(self.0, x, &sa, y, &sb, &shape),
            (Buffer::I64(x), Buffer::I64(y)) => cmp(self.0, x, &sa, y, &sb, &shape),
            (Buffer::Bool(x), Buffer::Bool(y)) => cmp(self.0, x, &sa, y, &sb, &shape),
            _ => {
                return Err(Error::DTypeMismatch {
                    op: self.name(),
                    lhs: a.dtype().name(),
                    rhs: b.dtype().name(),
                })
            }
        };
        Ok(Tensor::from_buffer(Buffer::Bool(out), &shape))
    }
    fn vjp(
        &self,
        _: &[&Tensor],
        _: &Tensor,
        _: &Tensor,
        _: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None, None])
    }
}

/// A logical operation on bool tensors (`and`, `or`, `xor` with broadcasting; `not`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogicalOp {
    And,
    Or,
    Xor,
    Not,
}

/// [`LogicalOp`] as a primitive. Not differentiable.
#[derive(Debug)]
pub(crate) struct Logical(pub LogicalOp);

impl Primitive for Logical {
    fn name(&self) -> &'static str {
        match self.0 {
            LogicalOp::And => "and",
            LogicalOp::Or => "or",
            LogicalOp::Xor => "xor",
            LogicalOp::Not => "not",
        }
    }
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        match inputs.iter().find(|d| **d != DType::Bool) {
            Some(d) => Err(data::unsupported(
                self.name(),
                *d,
                "bool tensors (compare, or `astype(DType::Bool)`)",
            )),
            None => Ok(()),
        }
    }
    fn batch(
        &self,
        this: &Arc<dyn Primitive>,
        inputs: &[&Tensor],
        batched: &[bool],
    ) -> Result<Tensor> {
        batch_broadcasting(this, inputs, batched)
    }
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        let a = inputs[0];
        if self.0 == LogicalOp::Not {
            return Ok(Aval::new(a.shape(), DType::Bool));
        }
        let shape = broadcast_shapes(self.name(), a.shape(), inputs[1].shape())?;
        Ok(Aval::new(shape, DType::Bool))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let a = inputs[0];
        let x = a.buf().to_vec_as::<bool>();
        if self.0 == LogicalOp::Not {
            return Ok(Tensor::from_buffer(
                Buffer::Bool(x.iter().map(|v| !v).collect()),
                a.shape(),
            ));
        }
        let b = inputs[1];
        let y = b.buf().to_vec_as::<bool>();
        let shape = broadcast_shapes(self.name(), a.shape(), b.shape())?;
        let (sa, sb) = (
            broadcast_strides(a.shape(), &shape),
            broadcast_strides(b.shape(), &shape),
        );
        let f: fn(bool, bool) -> bool = match self.0 {
            LogicalOp::And => |p, q| p & q,
            LogicalOp::Or => |p, q| p | q,
            _ => |p, q| p ^ q,
        };
        Ok(Tensor::from_buffer(
            Buffer::Bool(data::map2(&x, &sa, &y, &sb, &shape, f)),
            &shape,
        ))
    }
    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        _: &Tensor,
        _: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None; inputs.len()])
    }
}
