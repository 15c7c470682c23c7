//! Operations on data of any dtype: creation of integer and bool tensors, casts, comparisons
//! and logical operations (which give bool tensors).
//!
//! Integer and bool tensors are data: labels, indices, masks, counts. They flow through every
//! transform (`grad`, `jit`, `vmap`) as values that are not differentiated; asking for a
//! gradient with respect to one is an [`Error::NonDifferentiableArg`] (arguments) or
//! [`Error::UnsupportedDType`] (states).
//!
//! ```
//! use stategrad_core::{DType, Tensor};
//! let labels = Tensor::new([2i32, 0, 1]);
//! let pred = Tensor::new([2i32, 1, 1]);
//! let hits = pred.eq(&labels);
//! assert_eq!(hits.to_string(), "[ True False  True]");
//! assert_eq!(hits.sum().to_string(), "2"); // a count, as int32
//! assert_eq!(hits.astype(DType::F32).mean().item().unwrap(), (2.0f32 / 3.0) as f64);
//! ```

use crate::error::{Error, Result};
use crate::panics::raise;
use crate::prim::{apply, Compare, Logical, LogicalOp, Primitive};
use crate::tensor::{DType, Elem, Tensor};
use stategrad_simd::BinaryOp;
use std::ops;
use std::sync::{Arc, OnceLock};

#[track_caller]
fn ok<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => raise(e),
    }
}

fn compare_prim(op: BinaryOp) -> Arc<dyn Primitive> {
    static CACHE: OnceLock<Vec<(BinaryOp, Arc<dyn Primitive>)>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        [
            BinaryOp::Gt,
            BinaryOp::Ge,
            BinaryOp::Lt,
            BinaryOp::Le,
            BinaryOp::Eq,
            BinaryOp::Ne,
        ]
        .into_iter()
        .map(|o| (o, Arc::new(Compare(o)) as Arc<dyn Primitive>))
        .collect()
    });
    all.iter()
        .find(|(o, _)| *o == op)
        .map(|(_, p)| p.clone())
        .expect("every comparison is cached")
}

impl Tensor {
    /// Zeros of `dtype`.
    ///
    /// ```
    /// use stategrad_core::{DType, Tensor};
    /// assert_eq!(Tensor::zeros_dtype(&[3], DType::I64).to_string(), "[0 0 0]");
    /// ```
    #[track_caller]
    pub fn zeros_dtype(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full_dtype(shape, 0.0, dtype)
    }

    /// Ones of `dtype`.
    ///
    /// ```
    /// use stategrad_core::{DType, Tensor};
    /// assert_eq!(Tensor::ones_dtype(&[2], DType::Bool).to_string(), "[ True  True]");
    /// ```
    #[track_caller]
    pub fn ones_dtype(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full_dtype(shape, 1.0, dtype)
    }

    /// A tensor of `shape` filled with `value`, of `value`'s type (exact for 64-bit integers).
    ///
    /// ```
    /// use stategrad_core::{DType, Tensor};
    /// let t = Tensor::filled(&[2], i64::MAX);
    /// assert_eq!((t.dtype(), t.to_vec::<i64>()), (DType::I64, vec![i64::MAX; 2]));
    /// ```
    #[track_caller]
    pub fn filled<T: Elem>(shape: &[usize], value: T) -> Tensor {
        ok(Tensor::try_filled(shape, value))
    }

    /// [`Tensor::filled`], or the error of [`Tensor::try_full_dtype`].
    pub fn try_filled<T: Elem>(shape: &[usize], value: T) -> Result<Tensor> {
        let n = crate::tensor::shape_numel("full", shape)?;
        let mut v = Vec::new();
        v.try_reserve_exact(n)
            .map_err(|_| Error::AllocationFailed {
                op: "full",
                elements: n,
                dtype: T::DTYPE.name(),
            })?;
        v.resize(n, value);
        Tensor::from_vec(v, shape)
    }

    /// `start, start+step, …` below `stop`, of `dtype` (`numpy.arange(start, stop, step,
    /// dtype)`); the values are computed in f64 and converted. Errors as [`Tensor::arange`].
    ///
    /// ```
    /// use stategrad_core::{DType, Tensor};
    /// assert_eq!(Tensor::arange_dtype(0.0, 5.0, 1.0, DType::I32).unwrap().to_string(), "[0 1 2 3 4]");
    /// assert_eq!(Tensor::arange_dtype(3.0, 0.0, -1.5, DType::F64).unwrap().to_string(), "[3.  1.5]");
    /// ```
    pub fn arange_dtype(start: f64, stop: f64, step: f64, dtype: DType) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() {
            return Err(Error::InvalidArgument {
                op: "arange",
                msg: format!("step must be finite and non-zero, got {step}"),
            });
        }
        let len = ((stop - start) / step).ceil();
        if !len.is_finite() || len >= usize::MAX as f64 {
            return Err(Error::InvalidArgument {
                op: "arange",
                msg: format!("arange({start}, {stop}, {step}) has no representable length"),
            });
        }
        let n = len.max(0.0) as usize;
        let mut v: Vec<f64> = Vec::new();
        v.try_reserve_exact(n)
            .map_err(|_| Error::AllocationFailed {
                op: "arange",
                elements: n,
                dtype: dtype.name(),
            })?;
        v.extend((0..n).map(|i| start + i as f64 * step));
        Ok(Tensor::from_vec(v, &[n])?.cast_data(dtype))
    }

    /// `num` evenly spaced values from `start` to `stop` inclusive, of `dtype`.
    ///
    /// ```
    /// use stategrad_core::{DType, Tensor};
    /// assert_eq!(Tensor::linspace_dtype(0.0, 1.0, 3, DType::F64).to_string(), "[0.  0.5 1. ]");
    /// ```
    #[track_caller]
    pub fn linspace_dtype(start: f64, stop: f64, num: usize, dtype: DType) -> Tensor {
        let step = if num > 1 {
            (stop - start) / (num - 1) as f64
        } else {
            0.0
        };
        let v: Vec<f64> = (0..num)
            .map(|i| {
                if i + 1 == num && num > 1 {
                    stop
                } else {
                    start + i as f64 * step
                }
            })
            .collect();
        ok(Tensor::from_vec(v, &[num])).cast_data(dtype)
    }

    /// Convert to `dtype` (numpy's `astype`; the same as [`Tensor::cast`]). Float to integer
    /// truncates toward zero (saturating, NaN becomes 0), anything to bool is `x != 0`.
    /// Differentiable between float dtypes; through an integer or bool no gradient flows.
    ///
    /// ```
    /// use stategrad_core::{DType, Tensor};
    /// let x = Tensor::new([-1.7f32, 0.0, 2.5]);
    /// assert_eq!(x.astype(DType::I32).to_string(), "[-1  0  2]");
    /// assert_eq!(x.astype(DType::Bool).to_string(), "[ True False  True]");
    /// ```
    #[track_caller]
    pub fn astype(&self, dtype: DType) -> Tensor {
        self.cast(dtype)
    }

    fn compare(&self, op: BinaryOp, other: &Tensor) -> Result<Tensor> {
        let dt = self.dtype().promote(other.dtype());
        if self.dtype() != dt || other.dtype() != dt {
            return self.cast(dt).compare(op, &other.cast(dt));
        }
        apply(compare_prim(op), &[self, other])
    }

    fn logical(&self, op: LogicalOp, other: Option<&Tensor>) -> Result<Tensor> {
        let truth = |t: &Tensor| {
            if t.dtype() == DType::Bool {
                t.clone()
            } else {
                t.cast(DType::Bool)
            }
        };
        let a = truth(self);
        match other {
            Some(b) => apply(Arc::new(Logical(op)), &[&a, &truth(b)]),
            None => apply(Arc::new(Logical(op)), &[&a]),
        }
    }

    /// Elementwise logical and (operands of other dtypes count as `x != 0`); also `&a & &b`.
    pub fn try_logical_and(&self, other: &Tensor) -> Result<Tensor> {
        self.logical(LogicalOp::And, Some(other))
    }
    /// Infallible form of [`Tensor::try_logical_and`].
    #[track_caller]
    pub fn logical_and(&self, other: &Tensor) -> Tensor {
        ok(self.try_logical_and(other))
    }
    /// Elementwise logical or; also `&a | &b`.
    pub fn try_logical_or(&self, other: &Tensor) -> Result<Tensor> {
        self.logical(LogicalOp::Or, Some(other))
    }
    /// Infallible form of [`Tensor::try_logical_or`].
    #[track_caller]
    pub fn logical_or(&self, other: &Tensor) -> Tensor {
        ok(self.try_logical_or(other))
    }
    /// Elementwise exclusive or; also `&a ^ &b`.
    pub fn try_logical_xor(&self, other: &Tensor) -> Result<Tensor> {
        self.logical(LogicalOp::Xor, Some(other))
    }
    /// Infallible form of [`Tensor::try_logical_xor`].
    #[track_caller]
    pub fn logical_xor(&self, other: &Tensor) -> Tensor {
        ok(self.try_logical_xor(other))
    }
    /// Elementwise logical not; also `!&a`.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let m = Tensor::new([1.0f32, -2.0, 3.0]).gt_scalar(0.0);
    /// assert_eq!((!&m).to_string(), "[False  True False]");
    /// assert_eq!((&m & &!&m).to_string(), "[False False False]");
    /// ```
    pub fn try_logical_not(&self) -> Result<Tensor> {
        self.logical(LogicalOp::Not, None)
    }
    /// Infallible form of [`Tensor::try_logical_not`].
    #[track_caller]
    pub fn logical_not(&self) -> Tensor {
        ok(self.try_logical_not())
    }
}

macro_rules! comparisons {
    ($($(#[$doc:meta])* $name:ident, $try_name:ident, $scalar:ident, $try_scalar:ident => $op:ident;)*) => {
        impl Tensor {
            $(
                $(#[$doc])*
                pub fn $try_name(&self, other: &Tensor) -> Result<Tensor> {
                    self.compare(BinaryOp::$op, other)
                }
                $(#[$doc])*
                #[track_caller]
                pub fn $name(&self, other: &Tensor) -> Tensor {
                    ok(self.$try_name(other))
                }
                $(#[$doc])*
                /// (with a scalar right operand: of the tensor's dtype for floats; an integer or
                /// bool tensor is compared as float32, as JAX compares it with a Python float)
                pub fn $try_scalar(&self, other: f64) -> Result<Tensor> {
                    self.compare(BinaryOp::$op, &Tensor::weak_scalar(other, self.dtype()))
                }
                $(#[$doc])*
                /// (with a scalar right operand)
                #[track_caller]
                pub fn $scalar(&self, other: f64) -> Tensor {
                    ok(self.$try_scalar(other))
                }
            )*
        }
    };
}

comparisons! {
    /// `self > other` elementwise with broadcasting, as a bool tensor (not differentiable).
    gt, try_gt, gt_scalar, try_gt_scalar => Gt;
    /// `self >= other` elementwise with broadcasting, as a bool tensor (not differentiable).
    ge, try_ge, ge_scalar, try_ge_scalar => Ge;
    /// `self < other` elementwise with broadcasting, as a bool tensor (not differentiable).
    lt, try_lt, lt_scalar, try_lt_scalar => Lt;
    /// `self <= other` elementwise with broadcasting, as a bool tensor (not differentiable).
    le, try_le, le_scalar, try_le_scalar => Le;
    /// `self == other` elementwise with broadcasting, as a bool tensor (not differentiable).
    eq, try_eq, eq_scalar, try_eq_scalar => Eq;
    /// `self != other` elementwise with broadcasting, as a bool tensor (not differentiable).
    ne, try_ne, ne_scalar, try_ne_scalar => Ne;
}

macro_rules! logical_operator {
    ($tr:ident, $method:ident, $try_method:ident) => {
        impl ops::$tr<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                ok(self.$try_method(rhs))
            }
        }
        impl ops::$tr<Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                ok(self.$try_method(&rhs))
            }
        }
    };
}

logical_operator!(BitAnd, bitand, try_logical_and);
logical_operator!(BitOr, bitor, try_logical_or);
logical_operator!(BitXor, bitxor, try_logical_xor);

impl ops::Not for &Tensor {
    type Output = Tensor;
    #[track_caller]
    fn not(self) -> Tensor {
        self.logical_not()
    }
}

impl ops::Not for Tensor {
    type Output = Tensor;
    #[track_caller]
    fn not(self) -> Tensor {
        self.logical_not()
    }
}
