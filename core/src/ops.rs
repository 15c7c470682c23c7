//! The tensor operations users call. Each `try_x` returns a [`Result`]; the plain form raises the
//! error as a typed panic that transforms turn back into `Err` (see [`crate::tensor`]).

use crate::error::{Error, Result};
use crate::options::KeepDims;
use crate::prim::{self, apply, Binary, Cast, MatMul, Primitive, Reduce, Select, Unary};
use crate::tensor::{DType, Tensor};
use stategrad_simd::{BinaryOp, ReduceOp, UnaryOp};
use std::sync::{Arc, OnceLock};

/// The shared primitive object of each elementwise op: made once, so that an operation costs no
/// allocation for its primitive (per-call dispatch matters for small models).
fn unary_prim(op: UnaryOp) -> Arc<dyn Primitive> {
    static CACHE: OnceLock<Vec<Arc<dyn Primitive>>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        UnaryOp::ALL
            .iter()
            .map(|&o| Arc::new(Unary(o)) as Arc<dyn Primitive>)
            .collect()
    });
    let i = UnaryOp::ALL
        .iter()
        .position(|&o| o == op)
        .expect("every op is in ALL");
    all[i].clone()
}

fn binary_prim(op: BinaryOp) -> Arc<dyn Primitive> {
    static CACHE: OnceLock<Vec<Arc<dyn Primitive>>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        BinaryOp::ALL
            .iter()
            .map(|&o| Arc::new(Binary(o)) as Arc<dyn Primitive>)
            .collect()
    });
    let i = BinaryOp::ALL
        .iter()
        .position(|&o| o == op)
        .expect("every op is in ALL");
    all[i].clone()
}

fn stop_gradient_prim() -> Arc<dyn Primitive> {
    static PRIM: OnceLock<Arc<dyn Primitive>> = OnceLock::new();
    PRIM.get_or_init(|| Arc::new(prim::StopGradient)).clone()
}

pub(crate) use crate::panics::ok;

/// Normalise numpy-style axes (negative counts from the end) into sorted unique indices.
pub(crate) fn normalize_axes(op: &'static str, axes: &[isize], ndim: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let ax = if a < 0 { a + ndim as isize } else { a };
        if ax < 0 || ax >= ndim as isize {
            return Err(Error::InvalidArgument {
                op,
                msg: format!("axis {a} is out of bounds for a tensor of rank {ndim}"),
            });
        }
        if out.contains(&(ax as usize)) {
            return Err(Error::InvalidArgument {
                op,
                msg: format!("axis {a} repeated"),
            });
        }
        out.push(ax as usize);
    }
    out.sort_unstable();
    Ok(out)
}

pub(crate) fn normalize_axis(op: &'static str, axis: isize, ndim: usize) -> Result<usize> {
    Ok(normalize_axes(op, &[axis], ndim)?[0])
}

macro_rules! binary_ops {
    ($($(#[$doc:meta])* $vis:vis $name:ident, $try_name:ident, $scalar:ident, $try_scalar:ident => $op:ident;)*) => {
        impl Tensor {
            $(
                $(#[$doc])*
                $vis fn $try_name(&self, other: &Tensor) -> Result<Tensor> {
                    self.binary(BinaryOp::$op, other)
                }
                $(#[$doc])*
                #[track_caller]
                #[allow(dead_code)]
                $vis fn $name(&self, other: &Tensor) -> Tensor {
                    ok(self.$try_name(other))
                }
                $(#[$doc])*
                /// (with a scalar right operand, weakly typed: it takes the tensor's dtype, or
                /// float32 for an integer or bool tensor, as a Python float does in JAX)
                $vis fn $try_scalar(&self, other: f64) -> Result<Tensor> {
                    self.binary(BinaryOp::$op, &Tensor::weak_scalar(other, self.dtype()))
                }
                $(#[$doc])*
                /// (with a scalar right operand, weakly typed)
                #[track_caller]
                #[allow(dead_code)]
                $vis fn $scalar(&self, other: f64) -> Tensor {
                    ok(self.$try_scalar(other))
                }
            )*
        }
    };
}

binary_ops! {
    /// Elementwise sum with broadcasting.
    pub add, try_add, add_scalar, try_add_scalar => Add;
    /// Elementwise difference with broadcasting.
    pub sub, try_sub, sub_scalar, try_sub_scalar => Sub;
    /// Elementwise product with broadcasting.
    pub mul, try_mul, mul_scalar, try_mul_scalar => Mul;
    /// Elementwise quotient with broadcasting.
    pub div, try_div, div_scalar, try_div_scalar => Div;
    /// Elementwise power with broadcasting.
    pub pow, try_pow, powf, try_powf => Pow;
    /// Elementwise maximum with broadcasting (ties share the gradient).
    pub maximum, try_maximum, maximum_scalar, try_maximum_scalar => Max;
    /// Elementwise minimum with broadcasting (ties share the gradient).
    pub minimum, try_minimum, minimum_scalar, try_minimum_scalar => Min;
    // Comparisons as 1.0/0.0 masks of the operands' float dtype: what derivative rules
    // multiply by (they fuse in `jit`; the public comparisons give bool tensors).
    pub(crate) gt_mask, try_gt_mask, gt_mask_scalar, try_gt_mask_scalar => Gt;
    pub(crate) lt_mask, try_lt_mask, lt_mask_scalar, try_lt_mask_scalar => Lt;
    pub(crate) eq_mask, try_eq_mask, eq_mask_scalar, try_eq_mask_scalar => Eq;
}

impl Tensor {
    /// A 0-d constant of `dtype`.
    #[track_caller]
    pub fn scalar_of(v: f64, dtype: DType) -> Tensor {
        Tensor::full_dtype(&[], v, dtype)
    }

    pub(crate) fn zeros_like_scalar(&self) -> Tensor {
        Tensor::scalar_of(0.0, self.dtype())
    }

    pub(crate) fn cast_data(&self, dtype: DType) -> Tensor {
        if self.dtype() == dtype {
            self.clone()
        } else {
            Tensor::from_buffer(self.buf().cast(dtype), self.shape())
        }
    }

    /// `other - self` for a scalar `other`.
    pub fn try_rsub_scalar(&self, other: f64) -> Result<Tensor> {
        Tensor::weak_scalar(other, self.dtype()).binary(BinaryOp::Sub, self)
    }

    fn binary(&self, op: BinaryOp, other: &Tensor) -> Result<Tensor> {
        let mut dt = self.dtype().promote(other.dtype());
        // Division and powers of integers are float (numpy's true division).
        if !dt.is_float() && matches!(op, BinaryOp::Div | BinaryOp::Pow) {
            dt = DType::F32;
        }
        if self.dtype() != dt || other.dtype() != dt {
            return self.cast(dt).binary(op, &other.cast(dt));
        }
        apply(binary_prim(op), &[self, other])
    }

    /// `op` of the tensor: the method each row of `prim::elementwise`'s `unary_prims!` gives.
    pub(crate) fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        // Transcendental functions of integers are float32, as in JAX.
        if self.dtype().is_int() && !prim::unary_on_ints(op) {
            return self.cast(DType::F32).unary(op);
        }
        apply(unary_prim(op), &[self])
    }

    /// A 0-d constant of `v` as an operand of a `dtype` tensor: of that dtype when it is a
    /// float, float32 for integers and bools (a Rust float is a weakly typed float, as a Python
    /// float is in JAX).
    pub(crate) fn weak_scalar(v: f64, dtype: DType) -> Tensor {
        Tensor::scalar_of(v, if dtype.is_float() { dtype } else { DType::F32 })
    }

    /// Convert to `dtype` (differentiable; the gradient is cast back).
    #[track_caller]
    pub fn cast(&self, dtype: DType) -> Tensor {
        if self.dtype() == dtype {
            return self.clone();
        }
        ok(apply(Arc::new(Cast(dtype)), &[self]))
    }

    /// `on_true` where `cond != 0`, else `on_false`, with broadcasting (`jnp.where`).
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let x = Tensor::new([-1.0f32, 2.0]);
    /// let y = Tensor::select(&x.gt_scalar(0.0), &x, &x.zeros_like());
    /// assert_eq!(y.to_vec::<f32>(), vec![0.0, 2.0]);
    /// ```
    pub fn try_select(cond: &Tensor, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let dt = on_true.dtype().promote(on_false.dtype());
        apply(
            Arc::new(Select),
            &[cond, &on_true.cast(dt), &on_false.cast(dt)],
        )
    }

    /// Infallible form of [`Tensor::try_select`].
    #[track_caller]
    pub fn select(cond: &Tensor, on_true: &Tensor, on_false: &Tensor) -> Tensor {
        ok(Tensor::try_select(cond, on_true, on_false))
    }

    // ---------------------------------------------------------- reductions

    fn reduce(
        &self,
        op: ReduceOp,
        axes: Vec<usize>,
        keepdims: impl Into<KeepDims>,
    ) -> Result<Tensor> {
        let keepdims = bool::from(keepdims.into());
        // A sum of bools counts them (as int32, as in JAX).
        if op == ReduceOp::Sum && self.dtype() == DType::Bool {
            return self.cast(DType::I32).reduce(op, axes, keepdims);
        }
        if axes.is_empty() {
            return Ok(self.clone());
        }
        if axes.iter().all(|&a| self.shape().get(a) == Some(&1)) {
            // Each output element is its one input element (as numpy's reductions give it, a
            // -0.0 included): a reshape, not a pass over the data (W4's Hessian summed a
            // 512x512 batch over a size-1 axis this way, 38 µs of its replay).
            let shape = prim::reduced_shape(self.shape(), &axes, keepdims);
            return self.try_reshape_to(&shape);
        }
        apply(Arc::new(Reduce { op, axes, keepdims }), &[self])
    }

    /// Sum of all elements (0-d).
    #[track_caller]
    pub fn sum(&self) -> Tensor {
        ok(self.reduce(ReduceOp::Sum, (0..self.ndim()).collect(), false))
    }

    /// Sum over `axes` (negative counts from the end).
    pub fn try_sum_axes(&self, axes: &[usize], keepdims: impl Into<KeepDims>) -> Result<Tensor> {
        let ax: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
        self.try_sum_along(&ax, keepdims)
    }

    /// Sum over `axes` (negative counts from the end), optionally keeping them as size-1 dims.
    pub fn try_sum_along(&self, axes: &[isize], keepdims: impl Into<KeepDims>) -> Result<Tensor> {
        let axes = normalize_axes("sum", axes, self.ndim())?;
        self.reduce(ReduceOp::Sum, axes, keepdims)
    }

    /// Infallible form of [`Tensor::try_sum_along`].
    #[track_caller]
    pub fn sum_along(&self, axes: &[isize], keepdims: impl Into<KeepDims>) -> Tensor {
        ok(self.try_sum_along(axes, keepdims))
    }

    /// Mean of all elements (0-d).
    #[track_caller]
    ///
    /// The mean of no elements is NaN, as in numpy and JAX (`0 * (1 / 0)`; its gradient is an
    /// empty tensor).
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// assert_eq!(Tensor::new([1.0f32, 2.0]).mean().item().unwrap(), 1.5);
    /// assert!(Tensor::zeros(&[0]).mean().item().unwrap().is_nan());
    /// ```
    pub fn mean(&self) -> Tensor {
        let n = self.numel() as f64;
        self.sum().mul_scalar(1.0 / n)
    }

    /// Mean over `axes`; NaN where the reduced axes are empty (numpy, JAX).
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let m = Tensor::zeros(&[0, 2]).mean_along(&[0], false);
    /// assert!(m.to_vec::<f32>().iter().all(|v| v.is_nan()));
    /// ```
    pub fn try_mean_along(&self, axes: &[isize], keepdims: impl Into<KeepDims>) -> Result<Tensor> {
        let ax = normalize_axes("mean", axes, self.ndim())?;
        let n: usize = ax.iter().map(|&a| self.shape()[a]).product();
        self.reduce(ReduceOp::Sum, ax, keepdims)?
            .try_mul_scalar(1.0 / n as f64)
    }

    /// Infallible form of [`Tensor::try_mean_along`].
    #[track_caller]
    pub fn mean_along(&self, axes: &[isize], keepdims: impl Into<KeepDims>) -> Tensor {
        ok(self.try_mean_along(axes, keepdims))
    }

    /// Maximum of all elements (0-d); errors on an empty tensor.
    pub fn try_max(&self) -> Result<Tensor> {
        self.reduce(ReduceOp::Max, (0..self.ndim()).collect(), false)
    }

    /// Infallible form of [`Tensor::try_max`].
    #[track_caller]
    pub fn max(&self) -> Tensor {
        ok(self.try_max())
    }

    /// Maximum over `axes`.
    pub fn try_max_along(&self, axes: &[isize], keepdims: impl Into<KeepDims>) -> Result<Tensor> {
        let ax = normalize_axes("max", axes, self.ndim())?;
        self.reduce(ReduceOp::Max, ax, keepdims)
    }

    /// Infallible form of [`Tensor::try_max_along`].
    #[track_caller]
    pub fn max_along(&self, axes: &[isize], keepdims: impl Into<KeepDims>) -> Tensor {
        ok(self.try_max_along(axes, keepdims))
    }

    /// Minimum of all elements (0-d).
    #[track_caller]
    pub fn min(&self) -> Tensor {
        ok(self.reduce(ReduceOp::Min, (0..self.ndim()).collect(), false))
    }

    /// Minimum over `axes`.
    pub fn try_min_along(&self, axes: &[isize], keepdims: impl Into<KeepDims>) -> Result<Tensor> {
        let ax = normalize_axes("min", axes, self.ndim())?;
        self.reduce(ReduceOp::Min, ax, keepdims)
    }

    /// Infallible form of [`Tensor::try_min_along`].
    #[track_caller]
    pub fn min_along(&self, axes: &[isize], keepdims: impl Into<KeepDims>) -> Tensor {
        ok(self.try_min_along(axes, keepdims))
    }

    /// Sum over broadcast dimensions so the result has `shape` (the transpose of broadcasting).
    pub fn try_sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let nd = self.ndim();
        if shape.len() > nd {
            return Err(Error::ShapeMismatch {
                op: "sum_to",
                lhs: self.shape().into(),
                rhs: shape.into(),
            });
        }
        let off = nd - shape.len();
        let mut axes = Vec::new();
        for i in 0..nd {
            if i < off || (shape[i - off] == 1 && self.shape()[i] != 1) {
                axes.push(i);
            } else if shape[i - off] != self.shape()[i] {
                return Err(Error::ShapeMismatch {
                    op: "sum_to",
                    lhs: self.shape().into(),
                    rhs: shape.into(),
                });
            }
        }
        self.reduce(ReduceOp::Sum, axes, true)?
            .try_reshape_to(shape)
    }

    /// `log(sum(exp(x)))` over `axes`, computed stably.
    pub fn try_logsumexp(&self, axes: &[isize], keepdims: impl Into<KeepDims>) -> Result<Tensor> {
        let ax = normalize_axes("logsumexp", axes, self.ndim())?;
        let axi: Vec<isize> = ax.iter().map(|&a| a as isize).collect();
        // The shift's gradient cancels exactly, so it is cut; it must stay a computed value
        // (not `detach`, a constant) so that a `jit` replay shifts by its own inputs' maximum.
        // An infinite maximum (a row of -inf) shifts by 0: `m - m` is 0 exactly when finite.
        let m = self.try_max_along(&axi, true)?.stop_gradient();
        let m = Tensor::select(
            &m.try_sub(&m)?.try_eq_mask_scalar(0.0)?,
            &m,
            &m.zeros_like(),
        );
        let s = self
            .try_sub(&m)?
            .try_exp()?
            .try_sum_along(&axi, true)?
            .try_log()?
            .try_add(&m)?;
        if keepdims.into() == KeepDims::Yes {
            Ok(s)
        } else {
            s.try_reshape_to(&prim::reduced_shape(self.shape(), &ax, false))
        }
    }

    /// Infallible form of [`Tensor::try_logsumexp`].
    #[track_caller]
    pub fn logsumexp(&self, axes: &[isize], keepdims: impl Into<KeepDims>) -> Tensor {
        ok(self.try_logsumexp(axes, keepdims))
    }

    /// The same values with a zero derivative (JAX's `lax.stop_gradient`): gradients do not flow
    /// through it, while `jit` still recomputes it on every call (unlike
    /// [`Tensor::detach`], which turns a traced value into a constant).
    ///
    /// ```
    /// use stategrad_core::{grad, Tensor};
    /// // d/dx [x * stop_gradient(x)] = stop_gradient(x) = x.
    /// let g = grad(|x: Tensor| (&x * &x.stop_gradient()).sum()).call(Tensor::new([3.0f32])).unwrap();
    /// assert_eq!(g.to_string(), "[3.]");
    /// ```
    #[track_caller]
    pub fn stop_gradient(&self) -> Tensor {
        ok(apply(stop_gradient_prim(), &[self]))
    }

    /// `log_softmax` along `axis`.
    pub fn try_log_softmax(&self, axis: isize) -> Result<Tensor> {
        self.try_sub(&self.try_logsumexp(&[axis], true)?)
    }

    /// Infallible form of [`Tensor::try_log_softmax`].
    #[track_caller]
    pub fn log_softmax(&self, axis: isize) -> Tensor {
        ok(self.try_log_softmax(axis))
    }

    /// `softmax` along `axis`.
    pub fn try_softmax(&self, axis: isize) -> Result<Tensor> {
        self.try_log_softmax(axis)?.try_exp()
    }

    /// Infallible form of [`Tensor::try_softmax`].
    #[track_caller]
    pub fn softmax(&self, axis: isize) -> Tensor {
        ok(self.try_softmax(axis))
    }

    /// The Euclidean (Frobenius) norm of all elements.
    #[track_caller]
    pub fn norm(&self) -> Tensor {
        self.square().sum().sqrt()
    }

    // ---------------------------------------------------------- matmul

    /// `op(self) @ op(other)` on the last two dims, transposing either operand without a copy.
    pub fn try_matmul_t(&self, other: &Tensor, ta: bool, tb: bool) -> Result<Tensor> {
        if self.dtype() != other.dtype() {
            let dt = self.dtype().promote(other.dtype());
            return self.cast(dt).try_matmul_t(&other.cast(dt), ta, tb);
        }
        apply(Arc::new(MatMul { ta, tb }), &[self, other])
    }

    /// numpy's `matmul`: 1-D·1-D is a dot product, 1-D vectors are promoted to a row/column and
    /// the added axis is removed, N-D operands are stacks of matrices with broadcast batch dims.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let x = Tensor::new([[1.0f32, 2.0]]);
    /// let w = Tensor::new([[3.0f32], [4.0]]);
    /// assert_eq!(x.matmul(&w).to_string(), "[[11.]]");
    /// let v = Tensor::new([1.0f32, 2.0]);
    /// assert_eq!(v.matmul(&v).item().unwrap(), 5.0);
    /// ```
    pub fn try_matmul(&self, other: &Tensor) -> Result<Tensor> {
        let err = || Error::ShapeMismatch {
            op: "matmul",
            lhs: self.shape().into(),
            rhs: other.shape().into(),
        };
        if self.ndim() == 0 || other.ndim() == 0 {
            return Err(err());
        }
        let a = if self.ndim() == 1 {
            self.try_reshape_to(&[1, self.numel()])?
        } else {
            self.clone()
        };
        let b = if other.ndim() == 1 {
            other.try_reshape_to(&[other.numel(), 1])?
        } else {
            other.clone()
        };
        let c = a.try_matmul_t(&b, false, false).map_err(|e| match e {
            Error::ShapeMismatch { .. } => err(),
            e => e,
        })?;
        let mut shape: Vec<usize> = c.shape().to_vec();
        if other.ndim() == 1 {
            shape.pop();
        }
        if self.ndim() == 1 {
            let n = shape.len();
            shape.remove(n - 1 - usize::from(other.ndim() != 1));
        }
        c.try_reshape_to(&shape)
    }

    /// Infallible form of [`Tensor::try_matmul`].
    #[track_caller]
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        ok(self.try_matmul(other))
    }

    /// Dot product (`jnp.dot`): the same as [`Tensor::matmul`] for 1-D and 2-D operands.
    #[track_caller]
    pub fn dot(&self, other: &Tensor) -> Tensor {
        self.matmul(other)
    }
}

/// `jnp.where(cond, x, y)`.
#[track_caller]
pub fn where_(cond: &Tensor, x: &Tensor, y: &Tensor) -> Tensor {
    Tensor::select(cond, x, y)
}
