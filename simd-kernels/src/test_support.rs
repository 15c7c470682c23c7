//! Test helpers shared by the unit tests of `stategrad-simd` and `stategrad-exec` (the latter
//! includes this file by path): a seeded generator, special values, ulp distances.
#![allow(dead_code)]

use super::Element;

/// Deterministic xorshift generator.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub(crate) fn vec<T: Element>(&mut self, n: usize, lo: f64, hi: f64) -> Vec<T> {
        (0..n).map(|_| T::from_f64(self.range(lo, hi))).collect()
    }
}

/// Special values (NaN, ±inf, ±0, subnormal, extremes, small integers).
pub(crate) fn specials<T: Element>() -> Vec<T> {
    let mut v = vec![
        T::NAN,
        -T::NAN,
        T::INFINITY,
        T::NEG_INFINITY,
        T::ZERO,
        -T::ZERO,
        T::ONE,
        -T::ONE,
    ];
    for x in [
        2.0, -2.0, 0.5, 3.0, -3.0, 1e-3, 1e-30, -1e-30, 1e30, 1e-40, -1e-40, 100.0, -100.0, 1e4,
    ] {
        v.push(T::from_f64(x));
    }
    v.extend([
        T::from_f64(if T::NAME == "f32" {
            f32::MAX as f64
        } else {
            f64::MAX
        }),
        T::from_f64(if T::NAME == "f32" {
            f32::MIN_POSITIVE as f64
        } else {
            f64::MIN_POSITIVE
        }),
    ]);
    v
}

/// Random values in `[lo, hi)` with the specials mixed in every few elements.
pub(crate) fn mixed<T: Element>(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<T> {
    let sp = specials::<T>();
    (0..n)
        .map(|i| {
            if i % 5 == 3 {
                sp[rng.below(sp.len())]
            } else {
                T::from_f64(rng.range(lo, hi))
            }
        })
        .collect()
}

/// Distance in units in the last place (0 if both NaN, `u64::MAX` if only one is NaN).
pub(crate) fn ulps<T: Element>(a: T, b: T) -> u64 {
    let (a, b) = (a.to_f64(), b.to_f64());
    if a.is_nan() || b.is_nan() {
        return if a.is_nan() && b.is_nan() {
            0
        } else {
            u64::MAX
        };
    }
    if a == b {
        return 0;
    }
    // Map to a monotonic integer scale of the element type.
    let ord = |x: f64| -> i128 {
        if T::NAME == "f32" {
            let b = (x as f32).to_bits() as i32;
            (if b < 0 { i32::MIN.wrapping_sub(b) } else { b }) as i128
        } else {
            let b = x.to_bits() as i64;
            (if b < 0 { i64::MIN.wrapping_sub(b) } else { b }) as i128
        }
    };
    (ord(a) - ord(b)).unsigned_abs() as u64
}

/// Bitwise equal, or both NaN.
pub(crate) fn same<T: Element>(a: T, b: T) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_f64().to_bits() == b.to_f64().to_bits()
}

pub(crate) fn assert_ulps<T: Element>(got: &[T], want: &[T], max: u64, what: &str) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            ulps(g, w) <= max,
            "{what}: [{i}] got {g:?} want {w:?} ({} ulp)",
            ulps(g, w)
        );
    }
}
