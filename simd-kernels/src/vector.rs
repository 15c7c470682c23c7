//! A small vector abstraction over `wide`'s float types, and the vector math built on it.
//!
//! Transcendental functions return `(value, bad)` where `bad` is a lane mask of results that lie
//! outside the validated domain of the vector approximation; callers recompute those lanes with
//! `std` (see `elementwise::zip_map`).

use std::ops::{Add, BitAnd, BitOr, Div, Mul, Neg, Not, Sub};

use crate::element::sealed::Sealed;
use crate::Element;

/// Operations on a SIMD vector of `LANES` elements. Comparison results are lane masks (all bits
/// set or all clear) that can be combined with `&`, `|`, `!`.
pub trait SimdVec:
    Copy
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + BitAnd<Output = Self>
    + BitOr<Output = Self>
    + Not<Output = Self>
{
    /// The lane type.
    type Elem: Element;
    /// Number of lanes (at most 16).
    const LANES: usize;
    /// All lanes equal to `x`.
    fn splat(x: Self::Elem) -> Self;
    /// Loads `s[..LANES]` (`s.len() == LANES`).
    fn load(s: &[Self::Elem]) -> Self;
    /// Stores into `s[..LANES]` (`s.len() == LANES`).
    fn store(self, s: &mut [Self::Elem]);
    /// `self > o` lane mask.
    fn gt(self, o: Self) -> Self;
    /// `self >= o` lane mask.
    fn ge(self, o: Self) -> Self;
    /// `self < o` lane mask.
    fn lt(self, o: Self) -> Self;
    /// `self <= o` lane mask.
    fn le(self, o: Self) -> Self;
    /// `self == o` lane mask.
    fn eq(self, o: Self) -> Self;
    /// `self != o` lane mask (true for NaN).
    fn ne(self, o: Self) -> Self;
    /// `self` is a mask: picks `t` where set, `f` elsewhere.
    fn select(self, t: Self, f: Self) -> Self;
    /// Whether any lane of the mask is set.
    fn any(self) -> bool;
    /// Bit `i` set iff lane `i` of the mask is set.
    fn bitmask(self) -> u32;
    /// Absolute value (clears the sign bit).
    fn abs(self) -> Self;
    /// IEEE square root.
    fn sqrt(self) -> Self;
    /// Round to nearest, ties to even.
    fn round(self) -> Self;
    /// `self * m + a` (fused where the target has FMA).
    fn mul_add(self, m: Self, a: Self) -> Self;
    /// Flips the sign of lanes where `sign` has its sign bit set.
    fn flip_signs(self, sign: Self) -> Self;
    /// `e^x` for `Elem::EXP_LO <= x <= Elem::EXP_HI`; other lanes hold unspecified values
    /// (callers mask them). `f32` uses [`exp_f32`], `f64` `wide`'s `exp`.
    fn exp_raw(self) -> Self;
    /// `2^n` for integer-valued `n` in the normal exponent range (unspecified elsewhere).
    fn pow2_int(self) -> Self;
    /// `self / den` for `den` of magnitude in `[2^-125, 2^125]` (other lanes hold unspecified
    /// values): a division, or where the target has a reciprocal estimate (AVX-512 `f32`) the
    /// product with its refined reciprocal (within 1 ulp of it). For denominators known to lie
    /// in that range.
    #[inline(always)]
    fn div_fast(self, den: Self) -> Self {
        self / den
    }
    /// `wide`'s `ln` (unchecked).
    fn ln_raw(self) -> Self;
    /// `wide`'s `sin_cos` (unchecked).
    fn sin_cos_raw(self) -> (Self, Self);
    /// `wide`'s `powf_simd` (unchecked).
    fn pow_raw(self, e: Self) -> Self;

    /// The all-clear mask (also `+0.0` in every lane).
    #[inline(always)]
    fn none() -> Self {
        Self::splat(Self::Elem::ZERO)
    }

    /// Folds the lanes pairwise with `f` (lane `i` with lane `i + LANES/2`, and so on), then
    /// `f(init, result)`.
    #[inline(always)]
    fn fold_lanes(
        self,
        init: Self::Elem,
        f: impl Fn(Self::Elem, Self::Elem) -> Self::Elem,
    ) -> Self::Elem {
        // Pairwise halving: log2(LANES) dependent steps instead of LANES.
        let mut buf = [Self::Elem::ZERO; 16];
        self.store(&mut buf[..Self::LANES]);
        let mut w = Self::LANES / 2;
        while w > 0 {
            for i in 0..w {
                buf[i] = f(buf[i], buf[i + w]);
            }
            w /= 2;
        }
        f(init, buf[0])
    }
}

macro_rules! impl_simd_vec {
    ($($v:ident: $t:ident x $n:literal, $exp:expr, [$bias:expr, $mant:expr] $(, div = $div:expr)?);*) => {$(
        impl SimdVec for wide::$v {
            type Elem = $t;
            const LANES: usize = $n;
            #[inline(always)]
            fn splat(x: $t) -> Self {
                wide::$v::splat(x)
            }
            #[inline(always)]
            fn load(s: &[$t]) -> Self {
                let arr: [$t; $n] = s.try_into().expect("load: slice length != LANES");
                wide::$v::new(arr)
            }
            #[inline(always)]
            fn store(self, s: &mut [$t]) {
                s.copy_from_slice(self.as_array());
            }
            #[inline(always)]
            fn gt(self, o: Self) -> Self {
                self.simd_gt(o)
            }
            #[inline(always)]
            fn ge(self, o: Self) -> Self {
                self.simd_ge(o)
            }
            #[inline(always)]
            fn lt(self, o: Self) -> Self {
                self.simd_lt(o)
            }
            #[inline(always)]
            fn le(self, o: Self) -> Self {
                self.simd_le(o)
            }
            #[inline(always)]
            fn eq(self, o: Self) -> Self {
                self.simd_eq(o)
            }
            #[inline(always)]
            fn ne(self, o: Self) -> Self {
                self.simd_ne(o)
            }
            #[inline(always)]
            fn select(self, t: Self, f: Self) -> Self {
                wide::$v::select(self, t, f)
            }
            #[inline(always)]
            fn any(self) -> bool {
                wide::$v::any(self)
            }
            #[inline(always)]
            fn bitmask(self) -> u32 {
                self.to_bitmask()
            }
            #[inline(always)]
            fn abs(self) -> Self {
                wide::$v::abs(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                wide::$v::sqrt(self)
            }
            #[inline(always)]
            fn round(self) -> Self {
                self.round_ties_even()
            }
            #[inline(always)]
            fn mul_add(self, m: Self, a: Self) -> Self {
                wide::$v::mul_add(self, m, a)
            }
            #[inline(always)]
            fn flip_signs(self, sign: Self) -> Self {
                wide::$v::flip_signs(self, sign)
            }
            #[inline(always)]
            fn exp_raw(self) -> Self {
                $exp(self)
            }
            $(
                #[inline(always)]
                fn div_fast(self, den: Self) -> Self {
                    $div(self, den)
                }
            )?
            #[inline(always)]
            fn pow2_int(self) -> Self {
                // (n + bias) · 2^mant is an exact integer: the IEEE bits of 2^n.
                let bits = self.mul_add(Self::splat($mant), Self::splat($bias * $mant));
                bytemuck::cast(bits.round_int())
            }
            #[inline(always)]
            fn ln_raw(self) -> Self {
                self.ln()
            }
            #[inline(always)]
            fn sin_cos_raw(self) -> (Self, Self) {
                self.sin_cos()
            }
            #[inline(always)]
            fn pow_raw(self, e: Self) -> Self {
                self.powf_simd(e)
            }
        }
    )*};
}

impl_simd_vec!(
    f32x8: f32 x 8, exp_f32, [127.0, 8_388_608.0];
    f32x16: f32 x 16, exp_f32, [127.0, 8_388_608.0], div = div_f32x16;
    f64x4: f64 x 4, wide::f64x4::exp, [1023.0, 4_503_599_627_370_496.0];
    f64x8: f64 x 8, wide::f64x8::exp, [1023.0, 4_503_599_627_370_496.0]
);

/// `n / d` as `n` times `1 / d` from AVX-512's 14-bit estimate and one Newton step
/// (`r + r(1 - dr)`: relative error about 2^-28 before rounding) for `|d|` in
/// `[2^-125, 2^125]`: about 4× the throughput of a division, which is what bounds `tanh` and
/// `sigmoid`.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
#[inline(always)]
fn div_f32x16(n: wide::f32x16, d: wide::f32x16) -> wide::f32x16 {
    use std::arch::x86_64::{_mm512_loadu_ps, _mm512_rcp14_ps, _mm512_storeu_ps};
    let a = d.to_array();
    let mut r = [0.0f32; 16];
    // SAFETY: `avx512f` is enabled for this build (the cfg above); both pointers are to
    // 16-element f32 arrays, which the unaligned load and store read/write exactly.
    unsafe { _mm512_storeu_ps(r.as_mut_ptr(), _mm512_rcp14_ps(_mm512_loadu_ps(a.as_ptr()))) };
    let r = wide::f32x16::from(r);
    n * r.mul_add((-d).mul_add(r, wide::f32x16::splat(1.0)), r)
}

/// `n / d` by division where AVX-512 is not enabled.
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
#[inline(always)]
fn div_f32x16(n: wide::f32x16, d: wide::f32x16) -> wide::f32x16 {
    n / d
}

/// `e^x` for `f32` lanes in `[-87, 88]` (Cephes `expf`: `x = r·ln2 + t`, `|t| <= ln2/2`, a
/// degree-7 polynomial in `t`, then `2^r` built from its exponent bits), ≤ 1 ulp there. Lanes
/// outside that range (and NaN) hold unspecified finite or infinite values; callers mask them.
/// About 3× faster than `wide`'s `exp`, which handles the whole domain in every call.
#[inline(always)]
pub fn exp_f32<V: SimdVec<Elem = f32>>(x: V) -> V {
    let r = (x * V::splat(std::f32::consts::LOG2_E)).round();
    let t = r.mul_add(V::splat(-0.693_359_4), x);
    let t = r.mul_add(V::splat(2.121_944_4e-4), t);
    let p = V::splat(1.987_569_1e-4)
        .mul_add(t, V::splat(1.398_199_9e-3))
        .mul_add(t, V::splat(8.333_452e-3))
        .mul_add(t, V::splat(4.166_579_6e-2))
        .mul_add(t, V::splat(1.666_666_5e-1))
        .mul_add(t, V::splat(0.5));
    let e = p.mul_add(t * t, t) + V::splat(1.0);
    // Out-of-range `r` would build a wrong exponent; clamp so every lane stays a number.
    let r = max(min(r, V::splat(127.0)), V::splat(-126.0));
    e * r.pow2_int()
}

#[inline(always)]
fn c<V: SimdVec>(x: V::Elem) -> V {
    V::splat(x)
}

#[inline(always)]
fn cf<V: SimdVec>(x: f64) -> V {
    V::splat(V::Elem::from_f64(x))
}

/// Maximum with NaN propagation: `a` if `a` is NaN or `a > b`, else `b` (NaN if `b` is NaN).
#[inline(always)]
pub fn max<V: SimdVec>(a: V, b: V) -> V {
    (a.ne(a) | a.gt(b)).select(a, b)
}

/// Minimum with NaN propagation (mirror of [`max`]).
#[inline(always)]
pub fn min<V: SimdVec>(a: V, b: V) -> V {
    (a.ne(a) | a.lt(b)).select(a, b)
}

/// `-1`, `1`, or `x` itself for zeros and NaN.
#[inline(always)]
pub fn sign<V: SimdVec>(x: V) -> V {
    let z = V::none();
    x.gt(z).select(cf(1.0), x.lt(z).select(cf(-1.0), x))
}

/// `op` lane by lane with its scalar reference, for an op without vector code: the reference's
/// bits, nothing left to recompute.
#[inline(always)]
pub fn via_reference<V: SimdVec>(op: crate::UnaryOp, v: V) -> (V, V) {
    // The widest vector has 16 lanes (`f32` on AVX-512).
    let mut buf = [V::Elem::ZERO; 16];
    let lanes = &mut buf[..V::LANES];
    v.store(lanes);
    for l in lanes.iter_mut() {
        *l = crate::reference::unary_op(op, *l);
    }
    (V::load(lanes), V::none())
}

/// Checked `exp`: vector result is used where the result is finite and normal.
#[inline(always)]
pub fn exp<V: SimdVec>(x: V) -> (V, V) {
    let ok = x.ge(c(V::Elem::EXP_LO)) & x.le(c(V::Elem::EXP_HI));
    (x.exp_raw(), !ok)
}

/// Checked natural log: vector result is used for finite, normal, positive inputs.
#[inline(always)]
pub fn ln<V: SimdVec>(x: V) -> (V, V) {
    let ok = x.ge(c(V::Elem::MIN_POSITIVE)) & x.le(c(V::Elem::MAX));
    (x.ln_raw(), !ok)
}

/// Checked `ln(1 + x)`: `ln(u) + (x - (u - 1)) / u` with `u = 1 + x` rounded, the second term
/// putting back what the rounding of `u` lost (so tiny `x` give `x`); lanes where `ln(u)` is
/// not valid (`x <= -1`, NaN, infinite) are recomputed with `std`.
#[inline(always)]
pub fn log1p<V: SimdVec>(x: V) -> (V, V) {
    let one = c(V::Elem::ONE);
    let u = x + one;
    let (l, bad) = ln(u);
    // Where `u` rounds to 1, `x` itself is the answer (and keeps the sign of a zero).
    (u.eq(one).select(x, l + (x - (u - one)) / u), bad)
}

/// Lanes where the vector `sin`/`cos` are accurate: `|x| <= TRIG_MAX` and the reduced argument
/// is not so close to zero that the Cody-Waite reduction error becomes visible.
#[inline(always)]
fn trig_bad<V: SimdVec>(x: V) -> V {
    let a = x.abs();
    let k = (a * cf(std::f64::consts::FRAC_2_PI)).round();
    let [p0, p1, p2] = V::Elem::PIO2;
    let r = k.mul_add(c(-p0), a);
    let r = k.mul_add(c(-p1), r);
    let r = k.mul_add(c(-p2), r);
    let ok = a.le(c(V::Elem::TRIG_MAX)) & r.abs().ge(k * c(V::Elem::TRIG_REL));
    !ok
}

/// Checked sine.
#[inline(always)]
pub fn sin<V: SimdVec>(x: V) -> (V, V) {
    (x.sin_cos_raw().0, trig_bad(x))
}

/// Checked cosine.
#[inline(always)]
pub fn cos<V: SimdVec>(x: V) -> (V, V) {
    (x.sin_cos_raw().1, trig_bad(x))
}

/// Checked sigmoid, same formula as the scalar reference (`1/(1+e^-x)` for `x >= 0`,
/// `e^x/(1+e^x)` otherwise) with a vector `exp`.
#[inline(always)]
pub fn sigmoid<V: SimdVec>(x: V) -> (V, V) {
    let na = -x.abs();
    let one = cf::<V>(1.0);
    let e = na.exp_raw();
    // One reciprocal with the numerator chosen per lane; `1 + e` is in `(1, 2]`.
    let r = x.ge(V::none()).select(one, e).div_fast(one + e);
    (r, !na.ge(c(V::Elem::EXP_LO)))
}

/// Whether `wide`'s `mul_add` is fused on this target. `wide`'s `pow` relies on it for its
/// error compensation (without FMA its error reaches ~50 ulp), so without FMA `Pow` always
/// uses `std`.
pub const FMA: bool = cfg!(any(
    target_feature = "fma",
    all(target_arch = "aarch64", target_feature = "neon")
));

/// Checked `a.powf(b)`: vector result is used for finite normal nonzero `a`, `|b| <= 32`, and a
/// finite normal result (NaN results, e.g. negative `a` with non-integer `b`, go to `std`).
#[inline(always)]
pub fn pow<V: SimdVec>(a: V, b: V) -> (V, V) {
    let r = a.pow_raw(b);
    let (min, max) = (c::<V>(V::Elem::MIN_POSITIVE), c::<V>(V::Elem::MAX));
    let (aa, ra) = (a.abs(), r.abs());
    // `wide`'s error grows with |b| (≤ 3 ulp up to 32, ~10 ulp at 128); this bound also keeps
    // its odd-integer test (for negative `a`) away from integer saturation.
    let ok = aa.ge(min) & aa.le(max) & b.abs().le(cf(32.0)) & ra.ge(min) & ra.le(max);
    (r, !ok)
}

/// Shared tail of `tanh`: `small` is `tanh(|x|)` for `|x| < 0.625`; above, use
/// `1 - 2 / (e^(2|x|) + 1)` (no cancellation there). The sign is restored at the end so that
/// `tanh(-0) = -0`.
#[inline(always)]
fn tanh_tail<V: SimdVec>(x: V, a: V, small: V) -> V {
    let one = cf::<V>(1.0);
    // Above 44 (f32) tanh rounds to 1 and e^(2a) leaves exp's fast range: clamp.
    // `e^(2a) + 1` is in `[2, e^88 + 1]`: above 2^125 the reciprocal may flush to zero, and
    // `1 - 0` is the right answer there.
    let big = one - cf::<V>(2.0).div_fast(min(a + a, c(V::Elem::EXP_HI)).exp_raw() + one);
    a.lt(cf(0.625)).select(small, big).flip_signs(x)
}

/// `tanh` for `f32` (Cephes `tanhf` polynomial below 0.625), ≤ 2 ulp, full domain.
#[inline(always)]
pub fn tanh_f32<V: SimdVec<Elem = f32>>(x: V) -> V {
    let a = x.abs();
    let z = a * a;
    let p = V::splat(-5.704_988_7e-3)
        .mul_add(z, V::splat(2.063_909e-2))
        .mul_add(z, V::splat(-5.373_971_6e-2))
        .mul_add(z, V::splat(1.333_144_2e-1))
        .mul_add(z, V::splat(-3.333_328e-1));
    tanh_tail(x, a, a.mul_add(z * p, a))
}

/// `tanh` for `f64` (Cephes rational approximation below 0.625), ≤ 2 ulp, full domain.
#[inline(always)]
pub fn tanh_f64<V: SimdVec<Elem = f64>>(x: V) -> V {
    let a = x.abs();
    let z = a * a;
    let p = V::splat(-9.643_991_794_250_523e-1)
        .mul_add(z, V::splat(-9.928_772_310_019_186e1))
        .mul_add(z, V::splat(-1.614_687_684_417_084_5e3));
    let q = (z + V::splat(1.128_116_784_916_329_3e2))
        .mul_add(z, V::splat(2.235_488_390_601_004_6e3))
        .mul_add(z, V::splat(4.844_063_053_251_255e3));
    tanh_tail(x, a, a.mul_add(z * p / q, a))
}

/// `tanh` for the vector's element type.
#[inline(always)]
pub fn tanh<V: SimdVec>(x: V) -> (V, V) {
    (V::Elem::tanh_vec(x), V::none())
}
