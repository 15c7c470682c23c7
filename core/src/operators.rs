//! The arithmetic operators on tensors (`+ - * /` and unary `-`), and Rust numbers as their
//! scalar operands.

use crate::ops::ok;
use crate::tensor::Tensor;
use std::ops;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A Rust number that may stand on the right of `+ - * /` with a tensor of either dtype:
/// `&g * lr` and `g / lr` take `lr: f32` or `lr: f64`. The scalar takes the tensor's dtype (a
/// weak type, as in JAX), so an `f64` learning rate keeps an `f32` gradient `f32`.
///
/// On the left only `f64` is accepted (`2.0 * &x`, `lr * &g` with `lr: f64`): a second impl
/// there would make every unsuffixed literal on the left ambiguous (`(2.0 * &x).sum()` would
/// need annotations). With an `f32` on the left, write it on the right (`&g * lr`, the same
/// for `*` and `+`) or widen it (`f64::from(lr) * &g`).
///
/// ```
/// use stategrad_core::{DType, Tensor};
/// let g32 = Tensor::new([1.0f32, 2.0]);
/// let g64 = Tensor::new([1.0f64, 2.0]);
/// let (lr32, lr64) = (0.5f32, 0.5f64);
/// assert_eq!((&g32 * lr32).dtype(), DType::F32);
/// assert_eq!((&g32 * lr64).dtype(), DType::F32);
/// assert_eq!((&g64 * lr32).dtype(), DType::F64);
/// assert_eq!((lr64 * &g32).to_vec::<f32>(), vec![0.5, 1.0]);
/// assert_eq!((f64::from(lr32) * &g64).to_vec::<f64>(), vec![0.5, 1.0]);
/// assert_eq!((2.0 * &g32 - 1.0).to_vec::<f32>(), vec![1.0, 3.0]);
/// ```
pub trait ScalarOperand: Copy + sealed::Sealed {
    /// The value as an `f64` (exact for both).
    fn to_f64(self) -> f64;
}

impl ScalarOperand for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl ScalarOperand for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

// ------------------------------------------------------------------ operators

macro_rules! impl_binop {
    ($tr:ident, $method:ident, $try_method:ident, $scalar:ident) => {
        impl ops::$tr<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                ok(self.$try_method(rhs))
            }
        }
        impl ops::$tr<Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                ok(self.$try_method(&rhs))
            }
        }
        impl ops::$tr<&Tensor> for Tensor {
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
        // A scalar on the right may be `f32` or `f64` (one generic impl, see `ScalarOperand`).
        // On the left only `f64`: with a second impl an unsuffixed literal (`2.0 * &x`) would
        // no longer infer. The scalar takes the tensor's dtype (a weak type, as in JAX).
        impl ops::$tr<&Tensor> for f64 {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                ok(Tensor::weak_scalar(self, rhs.dtype()).$try_method(rhs))
            }
        }
        impl ops::$tr<Tensor> for f64 {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                ok(Tensor::weak_scalar(self, rhs.dtype()).$try_method(&rhs))
            }
        }
        impl<S: ScalarOperand> ops::$tr<S> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: S) -> Tensor {
                ok(self.$try_method(&Tensor::weak_scalar(rhs.to_f64(), self.dtype())))
            }
        }
        impl<S: ScalarOperand> ops::$tr<S> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: S) -> Tensor {
                ok(self.$try_method(&Tensor::weak_scalar(rhs.to_f64(), self.dtype())))
            }
        }
    };
}

impl_binop!(Add, add, try_add, add_scalar);
impl_binop!(Sub, sub, try_sub, sub_scalar);
impl_binop!(Mul, mul, try_mul, mul_scalar);
impl_binop!(Div, div, try_div, div_scalar);

impl ops::Neg for &Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}

impl ops::Neg for Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        Tensor::neg(&self)
    }
}

#[cfg(test)]
mod tests {
    use crate::{DType, Tensor};

    #[test]
    fn either_float_type_on_the_right_takes_the_tensors_dtype() {
        for dt in [DType::F32, DType::F64] {
            let g = Tensor::new([2.0f64, 4.0]).cast(dt);
            let check = |t: Tensor, want: [f64; 2]| {
                assert_eq!(t.dtype(), dt);
                assert_eq!(t.to_f64_vec(), want.to_vec());
            };
            check(&g * 0.5f32, [1.0, 2.0]);
            check(&g * 0.5f64, [1.0, 2.0]);
            check(g.clone() / 2.0f32, [1.0, 2.0]);
            check(&g + 1.0f32, [3.0, 5.0]);
            check(g.clone() - 1.0f32, [1.0, 3.0]);
            check(0.5f64 * &g, [1.0, 2.0]);
            check(1.0 - g.clone(), [-1.0, -3.0]);
            check(8.0 / &g, [4.0, 2.0]);
            // Unsuffixed literals still infer on both sides.
            check((2.0 * &g * 0.25).neg().neg(), [1.0, 2.0]);
        }
    }
}
