//! Elementwise primitives: unary and binary ops (with numpy broadcasting), `where`, casts.

use super::*;
use crate::error::{Error, Result};
use crate::tensor::{Buffer, DType, Elem, Tensor};
use stategrad_simd::{self as simd, BinaryOp, Par, UnaryOp};
use std::sync::Arc;

/// The unary primitives, one row each:
///
/// ```text
/// doc  method, try_method, "primitive name", KernelOp, ints, [example in] => [example out],
///      |x, y, g| cotangent of x (`y` the output, `g` its cotangent; `None`: none flows);
/// ```
///
/// `ints` is `int(f)` for an op also defined on integer tensors (`f` on one element of an
/// `Int` type `T`), `float` for one that casts integers to float32 first. A row gives the
/// `Tensor` methods (with a runnable example built from the example values, in f64), the
/// primitive's name, its integer kernel and its derivative rule; the float kernel is the row of
/// the same op in `stategrad_simd`'s table.
macro_rules! unary_prims {
    ($($(#[$doc:meta])* $name:ident, $try_name:ident, $prim:literal, $op:ident, $ints:ident $(($int:expr))?,
        [$($xin:expr),*] => [$($xout:expr),*], |$x:ident, $y:ident, $g:ident| $vjp:expr;)*) => {
        impl Tensor {
            $(
                $(#[$doc])*
                ///
                /// # Example
                /// ```
                /// use stategrad_core::Tensor;
                #[doc = concat!("let y = Tensor::new([", stringify!($($xin),*), "]).", stringify!($name), "();")]
                #[doc = concat!("let want = [", stringify!($($xout),*), "];")]
                /// let got = y.to_vec::<f64>();
                /// assert!(got.iter().zip(want).all(|(a, b): (&f64, f64)| (a - b).abs() < 1e-12));
                /// ```
                pub fn $try_name(&self) -> Result<Tensor> {
                    self.unary(UnaryOp::$op)
                }
                $(#[$doc])*
                ///
                /// # Example
                /// ```
                /// use stategrad_core::Tensor;
                #[doc = concat!("let y = Tensor::new([", stringify!($($xin),*), "]).", stringify!($name), "();")]
                #[doc = concat!("let want = [", stringify!($($xout),*), "];")]
                /// let got = y.to_vec::<f64>();
                /// assert!(got.iter().zip(want).all(|(a, b): (&f64, f64)| (a - b).abs() < 1e-12));
                /// ```
                #[track_caller]
                pub fn $name(&self) -> Tensor {
                    crate::panics::ok(self.$try_name())
                }
            )*
        }

        fn unary_name(op: UnaryOp) -> &'static str {
            match op {
                $(UnaryOp::$op => $prim,)*
            }
        }

        /// The op on integer elements, if it is defined there.
        fn unary_int<T: data::Int>(op: UnaryOp) -> Option<fn(T) -> T> {
            match op {
                $(UnaryOp::$op => unary_int_fn!($ints $(($int))?),)*
            }
        }

        /// The cotangent of the input of `op`, given input `x`, output `y` and cotangent `g`.
        fn unary_vjp(op: UnaryOp, x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
            Ok(match op {
                $(UnaryOp::$op => {
                    let ($x, $y, $g) = (x, y, g);
                    let _ = ($x, $y, $g);
                    $vjp
                })*
            })
        }
    };
}

/// A row's integer kernel: `None` for `float`, `Some(f)` for `int(f)`.
macro_rules! unary_int_fn {
    (float) => {
        None
    };
    (int($f:expr)) => {
        Some($f)
    };
}

unary_prims! {
    /// Elementwise negation.
    neg, try_neg, "neg", Neg, int(T::wrapping_neg), [1.5, -2.0] => [-1.5, 2.0],
        |x, y, g| Some(g.try_neg()?);
    /// Elementwise `e^x`.
    exp, try_exp, "exp", Exp, float, [0.0, 1.0] => [1.0, std::f64::consts::E],
        |x, y, g| Some(g.try_mul(y)?);
    /// Elementwise natural logarithm.
    log, try_log, "log", Log, float, [1.0, std::f64::consts::E] => [0.0, 1.0],
        |x, y, g| Some(g.try_div(x)?);
    /// Elementwise `ln(1 + x)`, accurate where `x` is tiny (`(1e-10).log1p() == 1e-10`).
    log1p, try_log1p, "log1p", Log1p, float, [1e-10, 0.0] => [1e-10, 0.0],
        |x, y, g| Some(g.try_div(&x.try_add_scalar(1.0)?)?);
    /// Elementwise hyperbolic tangent.
    tanh, try_tanh, "tanh", Tanh, float, [0.0, 1.0] => [0.0, 1f64.tanh()],
        |x, y, g| Some(g.try_mul(&y.try_square()?.try_rsub_scalar(1.0)?)?);
    /// Elementwise logistic sigmoid `1 / (1 + e^-x)`.
    sigmoid, try_sigmoid, "sigmoid", Sigmoid, float, [0.0, 2.0] => [0.5, 1.0 / (1.0 + (-2f64).exp())],
        |x, y, g| Some(g.try_mul(y)?.try_mul(&y.try_rsub_scalar(1.0)?)?);
    /// Elementwise `max(x, 0)`.
    relu, try_relu, "relu", Relu, float, [-1.0, 2.0] => [0.0, 2.0],
        |x, y, g| Some(g.try_mul(&x.gt_mask_scalar(0.0))?);
    /// Elementwise sine.
    sin, try_sin, "sin", Sin, float, [0.0, 1.0] => [0.0, 1f64.sin()],
        |x, y, g| Some(g.try_mul(&x.try_cos()?)?);
    /// Elementwise cosine.
    cos, try_cos, "cos", Cos, float, [0.0, 1.0] => [1.0, 1f64.cos()],
        |x, y, g| Some(g.try_mul(&x.try_sin()?)?.try_neg()?);
    /// Elementwise square root.
    sqrt, try_sqrt, "sqrt", Sqrt, float, [4.0, 2.0] => [2.0, std::f64::consts::SQRT_2],
        |x, y, g| Some(g.try_div(y)?.try_mul_scalar(0.5)?);
    /// Elementwise absolute value.
    abs, try_abs, "abs", Abs, int(T::wrapping_abs), [-1.5, 2.0] => [1.5, 2.0],
        |x, y, g| Some(g.try_mul(&x.sign())?);
    /// Elementwise sign (-1, 0, 1); its derivative is zero.
    sign, try_sign, "sign", Sign, int(T::signum), [-3.0, 0.0, 2.0] => [-1.0, 0.0, 1.0],
        |x, y, g| None;
    /// Elementwise `x * x`.
    square, try_square, "square", Square, int(|v: T| v.wrapping_mul(v)), [-3.0, 0.5] => [9.0, 0.25],
        |x, y, g| Some(g.try_mul(x)?.try_mul_scalar(2.0)?);
    /// Elementwise `1 / x`.
    recip, try_recip, "reciprocal", Recip, float, [4.0, -0.5] => [0.25, -2.0],
        |x, y, g| Some(g.try_mul(&y.try_square()?)?.try_neg()?);
    /// Elementwise error function `2/√π ∫₀ˣ e^(-t²) dt`.
    erf, try_erf, "erf", Erf, float, [0.0, 1.0] => [0.0, 0.8427007929497149],
        |x, y, g| Some(g.try_mul(&x.try_square()?.try_neg()?.try_exp()?.try_mul_scalar(std::f64::consts::FRAC_2_SQRT_PI)?)?);
}

/// Whether `op` is defined on integer tensors (others cast them to float32 first, as in JAX).
pub(crate) fn unary_on_ints(op: UnaryOp) -> bool {
    unary_int::<i64>(op).is_some()
}

/// Elementwise unary operation.
#[derive(Debug)]
pub(crate) struct Unary(pub UnaryOp);

impl Primitive for Unary {
    fn name(&self) -> &'static str {
        unary_name(self.0)
    }

    fn fusion(&self) -> Option<Fusion> {
        Some(Fusion::Unary(self.0))
    }
    fn splits_work(&self, _: &[&[usize]], out: &[usize]) -> bool {
        super::splits_elementwise(out)
    }
    fn lower(&self, _: &[&[usize]], _: &[usize]) -> Option<Kernel> {
        Some(Kernel::Unary(self.0))
    }
    fn batch(&self, this: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        apply(this.clone(), inputs)
    }
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        let on_ints = unary_on_ints(self.0);
        match inputs[0] {
            d if d.is_float() || (on_ints && d.is_int()) => Ok(()),
            d if on_ints => Err(data::unsupported(
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
        fn int_unary<T: data::Int>(op: UnaryOp, a: &[T]) -> Result<Vec<T>> {
            let f = unary_int::<T>(op)
                .ok_or_else(|| data::unsupported(unary_name(op), T::DTYPE, "a float tensor"))?;
            Ok(a.iter().map(|&v| f(v)).collect())
        }
        let out = match x.buf() {
            Buffer::I32(a) => Buffer::I32(int_unary(self.0, a)?),
            Buffer::I64(a) => Buffer::I64(int_unary(self.0, a)?),
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
        Ok(vec![unary_vjp(self.0, inputs[0], y, g)?])
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
    fn splits_work(&self, _: &[&[usize]], out: &[usize]) -> bool {
        super::splits_elementwise(out)
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
