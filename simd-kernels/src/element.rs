//! The [`Element`] trait (implemented for `f32` and `f64` only) and its sealed per-type parts.

use std::fmt::{Debug, Display, LowerExp};
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

use crate::vector::SimdVec;
use crate::{BinaryOp, UnaryOp};

/// A float element type the kernels work on: `f32` or `f64` (sealed).
pub trait Element:
    Copy
    + Send
    + Sync
    + PartialOrd
    + Default
    + Debug
    + Display
    + LowerExp
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + sealed::Sealed
{
    /// `0.0`.
    const ZERO: Self;
    /// `1.0`.
    const ONE: Self;
    /// `+inf`.
    const INFINITY: Self;
    /// `-inf`.
    const NEG_INFINITY: Self;
    /// A quiet NaN.
    const NAN: Self;
    /// Machine epsilon.
    const EPSILON: Self;
    /// `"f32"` or `"f64"`.
    const NAME: &'static str;
    /// The widest vector type the build enables (`wide`'s `f32x16`/`f64x8` with AVX-512F,
    /// `f32x8`/`f64x4` otherwise): the [`Isa::Baseline`](crate::isa::Isa::Baseline) path.
    /// The kernels run on the widest ISA the CPU has ([`isa::with_vec`](crate::isa::with_vec)),
    /// which may be wider than this.
    type Vec: SimdVec<Elem = Self>;
    /// Converts from `f64` (rounding to nearest for `f32`).
    fn from_f64(v: f64) -> Self;
    /// Converts to `f64` (exact).
    fn to_f64(self) -> f64;
    /// Whether the value is NaN.
    fn is_nan(self) -> bool;
}

pub(crate) mod sealed {
    use super::*;

    /// Per-type internals: the native vector type, scalar math and the gemm backend.
    pub trait Sealed: Sized {
        /// Largest finite value.
        const MAX: Self;
        /// Smallest positive normal value.
        const MIN_POSITIVE: Self;
        /// Vector `exp` is used for `EXP_LO <= x <= EXP_HI` (normal, finite results).
        const EXP_LO: Self;
        /// See [`Sealed::EXP_LO`].
        const EXP_HI: Self;
        /// Vector `sin`/`cos` are used for `|x| <= TRIG_MAX`.
        const TRIG_MAX: Self;
        /// ... and where the reduced argument `r` satisfies `|r| >= TRIG_REL * k` (`k` the
        /// multiple of π/2 subtracted), i.e. where range reduction is accurate relative to `r`.
        const TRIG_REL: Self;
        /// Three-part split of π/2 used to estimate the reduced argument.
        const PIO2: [Self; 3];
        /// The vector type of [`Isa::Avx2`](crate::isa::Isa::Avx2).
        #[cfg(target_arch = "x86_64")]
        type Avx2: SimdVec<Elem = Self>;
        /// The vector type of [`Isa::Avx512`](crate::isa::Isa::Avx512).
        #[cfg(target_arch = "x86_64")]
        type Avx512: SimdVec<Elem = Self>;
        /// `tanh` on a vector (full domain, ≤ 2 ulp).
        fn tanh_vec<V: SimdVec<Elem = Self>>(x: V) -> V;
        /// Scalar unary op using `std`.
        fn unary_ref(op: UnaryOp, x: Self) -> Self;
        /// Scalar binary op using `std`.
        fn binary_ref(op: BinaryOp, a: Self, b: Self) -> Self;

        /// `matrixmultiply::{s,d}gemm`.
        ///
        /// # Safety
        /// Same contract as `matrixmultiply::sgemm`: all indices reachable from the pointers
        /// with the given dims and strides must be in bounds, and C's elements must not alias.
        unsafe fn gemm_raw(
            m: usize,
            k: usize,
            n: usize,
            alpha: Self,
            a: *const Self,
            rsa: isize,
            csa: isize,
            b: *const Self,
            rsb: isize,
            csb: isize,
            beta: Self,
            c: *mut Self,
            rsc: isize,
            csc: isize,
        );
    }
}

/// The scalar reference of every op: a `match` on `$op` (of `$x: Self`).
macro_rules! unary_scalar {
    ({ $op:expr, $x:expr }
        $($(#[$doc:meta])* $o:ident, $class:ident, |$px:ident| $s:expr, |$pv:ident| $e:expr;)*) => {
        match $op {
            $(UnaryOp::$o => {
                let $px: Self = $x;
                $s
            })*
        }
    };
}

/// Scalar functions `std` lacks, from `libm`.
pub(crate) trait Libm {
    /// The error function.
    fn erf(self) -> Self;
}

impl Libm for f32 {
    #[inline]
    fn erf(self) -> Self {
        libm::erff(self)
    }
}

impl Libm for f64 {
    #[inline]
    fn erf(self) -> Self {
        libm::erf(self)
    }
}

macro_rules! impl_element {
    ($t:ident, $vec:ty, [$avx2:ty, $avx512:ty], $gemm:path, $tanh:path,
     exp: [$exp_lo:expr, $exp_hi:expr], trig: [$trig_max:expr, $trig_rel:expr, $pio2:expr]) => {
        impl Element for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const INFINITY: Self = $t::INFINITY;
            const NEG_INFINITY: Self = $t::NEG_INFINITY;
            const NAN: Self = $t::NAN;
            const EPSILON: Self = $t::EPSILON;
            const NAME: &'static str = stringify!($t);
            type Vec = $vec;
            #[inline]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn is_nan(self) -> bool {
                $t::is_nan(self)
            }
        }

        impl sealed::Sealed for $t {
            const MAX: Self = $t::MAX;
            const MIN_POSITIVE: Self = $t::MIN_POSITIVE;
            const EXP_LO: Self = $exp_lo;
            const EXP_HI: Self = $exp_hi;
            const TRIG_MAX: Self = $trig_max;
            const TRIG_REL: Self = $trig_rel;
            const PIO2: [Self; 3] = $pio2;
            #[cfg(target_arch = "x86_64")]
            type Avx2 = $avx2;
            #[cfg(target_arch = "x86_64")]
            type Avx512 = $avx512;

            #[inline(always)]
            fn tanh_vec<V: SimdVec<Elem = Self>>(x: V) -> V {
                $tanh(x)
            }

            #[inline]
            fn unary_ref(op: UnaryOp, x: Self) -> Self {
                unary_table!(unary_scalar { op, x })
            }

            #[inline]
            fn binary_ref(op: BinaryOp, a: Self, b: Self) -> Self {
                let flag = |c: bool| if c { 1.0 } else { 0.0 };
                match op {
                    BinaryOp::Add => a + b,
                    BinaryOp::Sub => a - b,
                    BinaryOp::Mul => a * b,
                    BinaryOp::Div => a / b,
                    BinaryOp::Pow => a.powf(b),
                    BinaryOp::Max => {
                        if a.is_nan() || a > b {
                            a
                        } else {
                            b
                        }
                    }
                    BinaryOp::Min => {
                        if a.is_nan() || a < b {
                            a
                        } else {
                            b
                        }
                    }
                    BinaryOp::Gt => flag(a > b),
                    BinaryOp::Ge => flag(a >= b),
                    BinaryOp::Lt => flag(a < b),
                    BinaryOp::Le => flag(a <= b),
                    BinaryOp::Eq => flag(a == b),
                    BinaryOp::Ne => flag(a != b),
                }
            }

            #[inline]
            unsafe fn gemm_raw(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
            ) {
                // SAFETY: forwarded verbatim; the caller upholds matrixmultiply's contract.
                unsafe { $gemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
use crate::x86::{F32x16 as X86F32x16, F32x8 as X86F32x8, F64x4 as X86F64x4, F64x8 as X86F64x8};
// Off x86-64 the names are unused (the associated types are cfg'd out); keep the macro uniform.
#[cfg(not(target_arch = "x86_64"))]
type X86F32x8 = ();
#[cfg(not(target_arch = "x86_64"))]
type X86F32x16 = ();
#[cfg(not(target_arch = "x86_64"))]
type X86F64x4 = ();
#[cfg(not(target_arch = "x86_64"))]
type X86F64x8 = ();

#[cfg(target_feature = "avx512f")]
type F32Vec = wide::f32x16;
#[cfg(not(target_feature = "avx512f"))]
type F32Vec = wide::f32x8;
#[cfg(target_feature = "avx512f")]
type F64Vec = wide::f64x8;
#[cfg(not(target_feature = "avx512f"))]
type F64Vec = wide::f64x4;

// Domains: see `vector.rs` and the `accuracy` tests. `PIO2` is the Cody-Waite split of π/2 used
// by `wide`'s sin/cos; `TRIG_REL` bounds the absolute reduction error (split error plus the
// rounding of `k * PIO2[2]`, ~6e-15·k for f32 and ~8e-33·k for f64) to < 0.1 ulp of `r`.
impl_element!(f32, F32Vec, [X86F32x8, X86F32x16], matrixmultiply::sgemm, crate::vector::tanh_f32,
    exp: [-87.0, 88.0],
    trig: [8192.0, 1e-6, [1.5703125, 4.837_513e-4, 7.549_79e-8]]);
impl_element!(f64, F64Vec, [X86F64x4, X86F64x8], matrixmultiply::dgemm, crate::vector::tanh_f64,
    exp: [-708.3, 709.7],
    trig: [6.7e7, 1e-15, [1.5707963109016418, 1.5893254712295857e-8, 6.123233995736766e-17]]);

/// `s` as f32 elements when `T` is f32 (for kernels with an f32-only fast path), else `None`.
pub(crate) fn as_f32<T: Element>(s: &[T]) -> Option<&[f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        // SAFETY: T is f32 (checked just above): same layout, same length, same borrow.
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) })
}

/// [`as_f32`] for a mutable slice.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn as_f32_mut<T: Element>(s: &mut [T]) -> Option<&mut [f32]> {
    if std::any::TypeId::of::<T>() != std::any::TypeId::of::<f32>() {
        return None;
    }
    // SAFETY: T is f32 (checked just above): same layout, same length; the borrow of `s` moves
    // into the result.
    Some(unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) })
}
