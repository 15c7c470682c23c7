//! [`SimdVec`] on x86-64 registers for the ISAs chosen at run time: x86-64-v3, AVX2 + FMA
//! (`__m256`, `__m256d`), and x86-64-v4, AVX-512 (`__m512`, `__m512d`).
//!
//! `wide`'s types pick their implementation when the crate is compiled (`cfg(target_feature)`),
//! so in a build for baseline x86-64 they are SSE2 pairs whatever the host can do. These types
//! are compiled for the wider ISA instead, and [`isa`](crate::isa) instantiates the kernels
//! with them inside `#[target_feature]` functions once the CPU is known to have it.
//!
//! Arithmetic, comparisons, `round`, `mul_add` (fused), `div_fast` and `pow2_int` are the same
//! instructions `wide` uses in a native build, so results are the same bits as that build's.
//! `ln`, `sin_cos`, `pow` and `f64` `exp` come from `wide` lane group by lane group (its
//! polynomials at the width the build enables).
//!
//! # Soundness
//! The types cannot be named outside this crate (public items of a private module, reached
//! only as associated types of the sealed `Element` internals). Their methods call the ISA's
//! intrinsics, which is sound only on a CPU that has the ISA. Code instantiated with one of
//! them is handed out only by [`isa::with_vec`](crate::isa::with_vec), which picks a type only
//! after detecting its ISA on this CPU (`STATEGRAD_ISA` can only lower the choice), and by unit
//! tests that check detection first; so wherever such code runs, the instructions exist.

use std::arch::x86_64::*;
use std::ops::{Add, BitAnd, BitOr, Div, Mul, Neg, Not, Sub};

use crate::vector::{exp_f32, SimdVec};

/// 8 `f32` lanes in an AVX register (AVX2 + FMA).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct F32x8(__m256);
/// 4 `f64` lanes in an AVX register (AVX2 + FMA).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct F64x4(__m256d);
/// 16 `f32` lanes in an AVX-512 register (AVX-512 F + DQ).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct F32x16(__m512);
/// 8 `f64` lanes in an AVX-512 register (AVX-512 F + DQ).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct F64x8(__m512d);

/// Everything for one type: the operators, the lane-mask helpers and [`SimdVec`].
///
/// Every `unsafe` block here calls an intrinsic of the type's ISA on registers only (loads and
/// stores say why their pointers are valid). SAFETY: a value of the type exists only on a CPU
/// that has that ISA (module docs), so the instructions exist.
macro_rules! x86_vec {
    ($t:ident($reg:ty): $e:ty, $bits:ty, $n:literal, wide = $wide:ty,
     [$add:ident, $sub:ident, $mul:ident, $div:ident, $and:ident, $or:ident, $xor:ident,
      $set1:ident, $loadu:ident, $storeu:ident, $sqrt:ident, $fmadd:ident, $round:ident],
     cmp = |$ca:ident, $cb:ident| $cmp:expr,
     blend = |$m:ident, $bt:ident, $bf:ident| $blend:expr,
     movemask = |$mm:ident| $movemask:expr,
     pow2_int = |$pv:ident| $pow2:expr,
     exp = |$ev:ident| $exp:expr
     $(, div_fast = |$dn:ident, $dd:ident| $div_fast:expr)?) => {
        impl $t {
            #[inline(always)]
            fn xor(self, o: Self) -> Self {
                Self(unsafe { $xor(self.0, o.0) })
            }
            #[inline(always)]
            fn cmp<const P: i32>(self, o: Self) -> Self {
                let ($ca, $cb) = (self.0, o.0);
                Self(unsafe { $cmp })
            }
            #[inline(always)]
            fn to_array(self) -> [$e; $n] {
                let mut a = [0.0; $n];
                self.store(&mut a);
                a
            }
            /// `f` on `wide`'s type of the same width.
            #[inline(always)]
            fn via_wide(self, f: impl FnOnce($wide) -> $wide) -> Self {
                Self::load(&f(<$wide>::from(self.to_array())).to_array())
            }
        }

        impl Add for $t {
            type Output = Self;
            #[inline(always)]
            fn add(self, o: Self) -> Self {
                Self(unsafe { $add(self.0, o.0) })
            }
        }
        impl Sub for $t {
            type Output = Self;
            #[inline(always)]
            fn sub(self, o: Self) -> Self {
                Self(unsafe { $sub(self.0, o.0) })
            }
        }
        impl Mul for $t {
            type Output = Self;
            #[inline(always)]
            fn mul(self, o: Self) -> Self {
                Self(unsafe { $mul(self.0, o.0) })
            }
        }
        impl Div for $t {
            type Output = Self;
            #[inline(always)]
            fn div(self, o: Self) -> Self {
                Self(unsafe { $div(self.0, o.0) })
            }
        }
        impl Neg for $t {
            type Output = Self;
            /// A sign flip (not `0 - x`), so `-(+0) = -0` as in `std`.
            #[inline(always)]
            fn neg(self) -> Self {
                self.xor(Self::splat(-0.0))
            }
        }
        impl BitAnd for $t {
            type Output = Self;
            #[inline(always)]
            fn bitand(self, o: Self) -> Self {
                Self(unsafe { $and(self.0, o.0) })
            }
        }
        impl BitOr for $t {
            type Output = Self;
            #[inline(always)]
            fn bitor(self, o: Self) -> Self {
                Self(unsafe { $or(self.0, o.0) })
            }
        }
        impl Not for $t {
            type Output = Self;
            #[inline(always)]
            fn not(self) -> Self {
                self.xor(Self::splat(<$e>::from_bits(<$bits>::MAX)))
            }
        }

        impl SimdVec for $t {
            type Elem = $e;
            const LANES: usize = $n;
            #[inline(always)]
            fn splat(x: $e) -> Self {
                Self(unsafe { $set1(x) })
            }
            #[inline(always)]
            fn load(s: &[$e]) -> Self {
                assert_eq!(s.len(), $n, "load: slice length != LANES");
                // SAFETY: `s` holds exactly `LANES` elements (asserted); the load is unaligned.
                Self(unsafe { $loadu(s.as_ptr().cast()) })
            }
            #[inline(always)]
            fn store(self, s: &mut [$e]) {
                assert_eq!(s.len(), $n, "store: slice length != LANES");
                // SAFETY: `s` holds exactly `LANES` elements (asserted); the store is unaligned.
                unsafe { $storeu(s.as_mut_ptr().cast(), self.0) }
            }
            #[inline(always)]
            fn gt(self, o: Self) -> Self {
                self.cmp::<_CMP_GT_OQ>(o)
            }
            #[inline(always)]
            fn ge(self, o: Self) -> Self {
                self.cmp::<_CMP_GE_OQ>(o)
            }
            #[inline(always)]
            fn lt(self, o: Self) -> Self {
                self.cmp::<_CMP_LT_OQ>(o)
            }
            #[inline(always)]
            fn le(self, o: Self) -> Self {
                self.cmp::<_CMP_LE_OQ>(o)
            }
            #[inline(always)]
            fn eq(self, o: Self) -> Self {
                self.cmp::<_CMP_EQ_OQ>(o)
            }
            #[inline(always)]
            fn ne(self, o: Self) -> Self {
                self.cmp::<_CMP_NEQ_UQ>(o)
            }
            #[inline(always)]
            fn select(self, t: Self, f: Self) -> Self {
                let ($m, $bt, $bf) = (self.0, t.0, f.0);
                Self(unsafe { $blend })
            }
            #[inline(always)]
            fn any(self) -> bool {
                self.bitmask() != 0
            }
            #[inline(always)]
            fn bitmask(self) -> u32 {
                let $mm = self.0;
                unsafe { $movemask }
            }
            #[inline(always)]
            fn abs(self) -> Self {
                self & !Self::splat(-0.0)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                Self(unsafe { $sqrt(self.0) })
            }
            #[inline(always)]
            fn round(self) -> Self {
                Self(unsafe { $round::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(self.0) })
            }
            #[inline(always)]
            fn mul_add(self, m: Self, a: Self) -> Self {
                Self(unsafe { $fmadd(self.0, m.0, a.0) })
            }
            #[inline(always)]
            fn flip_signs(self, sign: Self) -> Self {
                self.xor(sign & Self::splat(-0.0))
            }
            #[inline(always)]
            fn exp_raw(self) -> Self {
                let $ev = self;
                $exp
            }
            #[inline(always)]
            fn pow2_int(self) -> Self {
                let $pv = self;
                $pow2
            }
            $(
                #[inline(always)]
                fn div_fast(self, den: Self) -> Self {
                    let ($dn, $dd) = (self, den);
                    $div_fast
                }
            )?
            #[inline(always)]
            fn ln_raw(self) -> Self {
                self.via_wide(|w| w.ln())
            }
            #[inline(always)]
            fn sin_cos_raw(self) -> (Self, Self) {
                let (s, c) = <$wide>::from(self.to_array()).sin_cos();
                (Self::load(&s.to_array()), Self::load(&c.to_array()))
            }
            #[inline(always)]
            fn pow_raw(self, e: Self) -> Self {
                let e = <$wide>::from(e.to_array());
                self.via_wide(|w| w.powf_simd(e))
            }
        }
    };
}

// `2^n` for f32: `(n + 127) · 2^23` is the IEEE bit pattern, converted to an integer exactly.
x86_vec!(F32x8(__m256): f32, u32, 8, wide = wide::f32x8,
    [_mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps, _mm256_div_ps, _mm256_and_ps, _mm256_or_ps,
     _mm256_xor_ps, _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_sqrt_ps,
     _mm256_fmadd_ps, _mm256_round_ps],
    cmp = |a, b| _mm256_cmp_ps::<P>(a, b),
    blend = |m, t, f| _mm256_blendv_ps(f, t, m),
    movemask = |m| _mm256_movemask_ps(m) as u32,
    pow2_int = |v| {
        let bits = v.mul_add(F32x8::splat(8_388_608.0), F32x8::splat(127.0 * 8_388_608.0));
        F32x8(unsafe { _mm256_castsi256_ps(_mm256_cvtps_epi32(bits.0)) })
    },
    exp = |v| exp_f32(v));
x86_vec!(F32x16(__m512): f32, u32, 16, wide = wide::f32x16,
[_mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps, _mm512_div_ps, _mm512_and_ps, _mm512_or_ps,
 _mm512_xor_ps, _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_sqrt_ps,
 _mm512_fmadd_ps, _mm512_roundscale_ps],
cmp = |a, b| _mm512_castsi512_ps(_mm512_movm_epi32(_mm512_cmp_ps_mask::<P>(a, b))),
blend = |m, t, f| _mm512_mask_blend_ps(_mm512_movepi32_mask(_mm512_castps_si512(m)), f, t),
movemask = |m| _mm512_movepi32_mask(_mm512_castps_si512(m)) as u32,
pow2_int = |v| {
    let bits = v.mul_add(F32x16::splat(8_388_608.0), F32x16::splat(127.0 * 8_388_608.0));
    F32x16(unsafe { _mm512_castsi512_ps(_mm512_cvtps_epi32(bits.0)) })
},
exp = |v| exp_f32(v),
// `n / d` as `n` times AVX-512's 14-bit reciprocal estimate refined by one Newton step, as
// `wide::f32x16` does in a native build (see `vector::div_f32x16`).
div_fast = |n, d| {
    let r = F32x16(unsafe { _mm512_rcp14_ps(d.0) });
    n * r.mul_add((-d).mul_add(r, F32x16::splat(1.0)), r)
});
// `2^n` for f64: adding 2^52 puts the integer `n + 1023` in the low mantissa bits; shifting
// them left by 52 makes them the exponent field.
x86_vec!(F64x4(__m256d): f64, u64, 4, wide = wide::f64x4,
    [_mm256_add_pd, _mm256_sub_pd, _mm256_mul_pd, _mm256_div_pd, _mm256_and_pd, _mm256_or_pd,
     _mm256_xor_pd, _mm256_set1_pd, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_sqrt_pd,
     _mm256_fmadd_pd, _mm256_round_pd],
    cmp = |a, b| _mm256_cmp_pd::<P>(a, b),
    blend = |m, t, f| _mm256_blendv_pd(f, t, m),
    movemask = |m| _mm256_movemask_pd(m) as u32,
    pow2_int = |v| {
        let b = (v + F64x4::splat(1023.0 + 4_503_599_627_370_496.0)).0;
        F64x4(unsafe { _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_castpd_si256(b))) })
    },
    exp = |v| v.via_wide(|w| w.exp()));
x86_vec!(F64x8(__m512d): f64, u64, 8, wide = wide::f64x8,
    [_mm512_add_pd, _mm512_sub_pd, _mm512_mul_pd, _mm512_div_pd, _mm512_and_pd, _mm512_or_pd,
     _mm512_xor_pd, _mm512_set1_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_sqrt_pd,
     _mm512_fmadd_pd, _mm512_roundscale_pd],
    cmp = |a, b| _mm512_castsi512_pd(_mm512_movm_epi64(_mm512_cmp_pd_mask::<P>(a, b))),
    blend = |m, t, f| _mm512_mask_blend_pd(_mm512_movepi64_mask(_mm512_castpd_si512(m)), f, t),
    movemask = |m| u32::from(_mm512_movepi64_mask(_mm512_castpd_si512(m))),
    pow2_int = |v| {
        let b = (v + F64x8::splat(1023.0 + 4_503_599_627_370_496.0)).0;
        F64x8(unsafe { _mm512_castsi512_pd(_mm512_slli_epi64::<52>(_mm512_castpd_si512(b))) })
    },
    exp = |v| v.via_wide(|w| w.exp()));
