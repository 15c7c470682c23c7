//! Random numbers from a counter-based generator (Threefry-2x32, as JAX uses), driven by a
//! global [`RandomState`](crate::RandomState) that is itself a [`State`].
//!
//! Each sample derives a fresh sub-key from the global key and advances the key, through
//! primitives, so sampling inside `grad` or `jit` advances the key as the reference does (under
//! `jit` the sampling is part of the compiled tape: every replay draws new numbers). Element `i`
//! of a sample depends only on the key and `i`, so results do not depend on thread counts or
//! chunking.
//!
//! ```
//! use stategrad_core::random;
//! random::seed(42);
//! let a = random::normal(&[3]);
//! random::seed(42);
//! let b = random::normal(&[3]);
//! assert_eq!(a.to_vec::<f32>(), b.to_vec::<f32>());
//! let c = random::normal(&[3]);
//! assert_ne!(a.to_vec::<f32>(), c.to_vec::<f32>());
//! ```

use crate::error::{Error, Result};
use crate::prim::{apply, Aval, Primitive};
use crate::state::{State, StateKind};
use crate::tensor::{Buffer, DType, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

const ROT: [u32; 8] = [13, 15, 26, 6, 17, 29, 16, 24];

/// Threefry-2x32 with 20 rounds: the block cipher behind JAX's PRNG.
pub fn threefry2x32(key: [u32; 2], ctr: [u32; 2]) -> [u32; 2] {
    let ks = [key[0], key[1], key[0] ^ key[1] ^ 0x1BD1_1BDA];
    let mut x = [ctr[0].wrapping_add(ks[0]), ctr[1].wrapping_add(ks[1])];
    for group in 0..5u32 {
        for r in 0..4 {
            let rot = ROT[((group % 2) * 4 + r) as usize];
            x[0] = x[0].wrapping_add(x[1]);
            x[1] = x[1].rotate_left(rot) ^ x[0];
        }
        let g = group as usize + 1;
        x[0] = x[0].wrapping_add(ks[g % 3]);
        x[1] = x[1].wrapping_add(ks[(g + 1) % 3]).wrapping_add(g as u32);
    }
    x
}

fn key_words(key: &Tensor) -> [u32; 2] {
    let d = key.f64_data();
    [
        d.first().copied().unwrap_or(0.0) as u32,
        d.get(1).copied().unwrap_or(0.0) as u32,
    ]
}

fn key_tensor(w: [u32; 2]) -> Tensor {
    Tensor::from_buffer(Buffer::F64(vec![w[0] as f64, w[1] as f64]), &[2])
}

/// A key (a 2-element tensor of 32-bit words) from a seed.
pub fn key(seed: u64) -> Tensor {
    key_tensor([(seed >> 32) as u32, seed as u32])
}

/// The distribution a [`Sample`] draws from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Dist {
    /// Standard normal.
    Normal,
    /// Uniform on `[lo, hi)`.
    Uniform(f64, f64),
    /// Integers uniform on `[lo, hi)`, as floats.
    RandInt(i64, i64),
    /// 1 with probability `p`, else 0.
    Bernoulli(f64),
}

/// Derive sub-key `index` from a key (non-differentiable).
#[derive(Debug)]
struct FoldIn(u32);

impl Primitive for FoldIn {
    fn name(&self) -> &'static str {
        "random_fold_in"
    }
    fn abstract_eval(&self, _: &[&Tensor]) -> Result<Aval> {
        Ok(Aval::new(&[2][..], DType::F64))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        Ok(key_tensor(threefry2x32(
            key_words(inputs[0]),
            [self.0, 0x5EED_0000],
        )))
    }
    fn vjp(
        &self,
        _: &[&Tensor],
        _: &Tensor,
        _: &Tensor,
        _: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None])
    }
}

/// Draw a tensor of `shape` from a key (non-differentiable).
#[derive(Debug)]
struct Sample {
    shape: Shape,
    dtype: DType,
    dist: Dist,
}

fn draw(k: [u32; 2], i: usize, dist: Dist) -> f64 {
    let b = threefry2x32(k, [i as u32, (i as u64 >> 32) as u32]);
    let unit =
        |w: u32| (w >> 8) as f64 / (1u64 << 24) as f64 + (w & 0xFF) as f64 / (1u64 << 32) as f64;
    match dist {
        Dist::Normal => {
            // Box-Muller on the two words; u1 in (0, 1] keeps the log finite.
            let u1 = (b[0] as f64 + 1.0) / 4_294_967_296.0;
            let u2 = b[1] as f64 / 4_294_967_296.0;
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
        Dist::Uniform(lo, hi) => lo + (hi - lo) * unit(b[0]),
        Dist::RandInt(lo, hi) => {
            // In i128: `hi - lo` and `lo + r` overflow i64 for the widest ranges.
            let span = (hi as i128 - lo as i128).max(1) as u128;
            let r = ((b[0] as u128) << 32 | b[1] as u128) % span;
            (lo as i128 + r as i128) as f64
        }
        Dist::Bernoulli(p) => {
            if unit(b[0]) < p {
                1.0
            } else {
                0.0
            }
        }
    }
}

/// Draws made at once from this many on are spread over the rayon pool.
const PAR_DRAWS: usize = 1 << 16;

impl Primitive for Sample {
    fn name(&self) -> &'static str {
        "random_bits"
    }
    fn splits_work(&self, _: &[&[usize]], out: &[usize]) -> bool {
        out.iter().product::<usize>() >= PAR_DRAWS
    }
    fn abstract_eval(&self, _: &[&Tensor]) -> Result<Aval> {
        crate::tensor::shape_numel("random", &self.shape)?;
        Ok(Aval::new(self.shape.clone(), self.dtype))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let k = key_words(inputs[0]);
        let n = crate::tensor::shape_numel("random", &self.shape)?;
        let mut buf = Buffer::try_filled("random", DType::F64, n, 0.0)?;
        let fill = |(i, x): (usize, &mut f64)| *x = draw(k, i, self.dist);
        if let Buffer::F64(v) = &mut buf {
            if n >= PAR_DRAWS && crate::parallel::may_split() {
                v.par_iter_mut().enumerate().for_each(fill);
            } else {
                v.iter_mut().enumerate().for_each(fill);
            }
        }
        Ok(Tensor::from_buffer(buf.cast(self.dtype), &self.shape))
    }
    fn vjp(
        &self,
        _: &[&Tensor],
        _: &Tensor,
        _: &Tensor,
        _: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None])
    }
}

/// Split a key into two independent keys.
pub fn split_key(key: &Tensor) -> (Tensor, Tensor) {
    let a = apply(Arc::new(FoldIn(0)), &[key]).expect("internal error: fold_in of a key");
    let b = apply(Arc::new(FoldIn(1)), &[key]).expect("internal error: fold_in of a key");
    (a, b)
}

/// Refuse distribution parameters numpy refuses, and shapes whose size does not fit.
fn check(op: &'static str, shape: &[usize], dist: Dist) -> Result<()> {
    crate::tensor::shape_numel(op, shape)?;
    let bad = |msg: String| Err(Error::InvalidArgument { op, msg });
    match dist {
        Dist::Normal => Ok(()),
        Dist::Uniform(lo, hi) if !(lo.is_finite() && hi.is_finite()) => {
            bad(format!("bounds must be finite, got [{lo}, {hi})"))
        }
        Dist::RandInt(lo, hi) if lo >= hi => bad(format!("low {lo} must be below high {hi}")),
        Dist::Bernoulli(p) if !(0.0..=1.0).contains(&p) => {
            bad(format!("p must be in [0, 1], got {p}"))
        }
        _ => Ok(()),
    }
}

fn try_sample_with(
    op: &'static str,
    key: &Tensor,
    shape: &[usize],
    dtype: DType,
    dist: Dist,
) -> Result<Tensor> {
    check(op, shape, dist)?;
    apply(
        Arc::new(Sample {
            shape: shape.into(),
            dtype,
            dist,
        }),
        &[key],
    )
}

#[cfg(test)]
fn sample_with(key: &Tensor, shape: &[usize], dtype: DType, dist: Dist) -> Tensor {
    try_sample_with("random", key, shape, dtype, dist).expect("valid test sample")
}

/// Draw from the global state's next key. The state advances only when the draw succeeds, so a
/// bad argument leaves it as it was.
fn try_sample(op: &'static str, shape: &[usize], dtype: DType, dist: Dist) -> Result<Tensor> {
    check(op, shape, dist)?;
    let st = default_state();
    let (next, sub) = split_key(&st.value());
    let out = try_sample_with(op, &sub, shape, dtype, dist)?;
    st.set_value(next);
    Ok(out)
}

#[track_caller]
fn ok(r: Result<Tensor>) -> Tensor {
    match r {
        Ok(t) => t,
        Err(e) => crate::panics::raise(e),
    }
}

/// Standard normal samples drawn with an explicit key (no global state involved).
#[track_caller]
pub fn normal_with_key(key: &Tensor, shape: &[usize]) -> Tensor {
    ok(try_sample_with(
        "normal",
        key,
        shape,
        DType::F32,
        Dist::Normal,
    ))
}

/// The global random state (kind `RandomState`). Unseeded, it starts from the clock, like the
/// reference; call [`seed`] for reproducible runs.
pub fn default_state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        State::with_kind(StateKind::Random, key(t)).named("random_key")
    })
}

/// Reseed the global random state.
pub fn seed(s: u64) {
    default_state().set_value(key(s));
}

/// Run `f` with the global state seeded by `s`, then restore the previous key (also when `f`
/// panics).
///
/// ```
/// use stategrad_core::random;
/// let before = random::default_state().value().to_vec::<f32>();
/// let r = std::panic::catch_unwind(|| random::seed_context(3, || panic!("inside")));
/// assert!(r.is_err());
/// assert_eq!(random::default_state().value().to_vec::<f32>(), before);
/// ```
pub fn seed_context<R>(s: u64, f: impl FnOnce() -> R) -> R {
    struct Restore(Tensor);
    impl Drop for Restore {
        fn drop(&mut self) {
            default_state().set_value(self.0.clone());
        }
    }
    let _restore = Restore(default_state().value());
    seed(s);
    f()
}

/// Split the global key: advance it and return a fresh sub-key.
pub fn next_key() -> Tensor {
    let st = default_state();
    let (next, sub) = split_key(&st.value());
    st.set_value(next);
    sub
}

/// Standard normal samples (f32). Panics (at the caller's line; inside a transform, the
/// transform returns the error) where [`try_normal`] errs.
#[track_caller]
pub fn normal(shape: &[usize]) -> Tensor {
    ok(try_normal(shape))
}

/// Standard normal samples (f32); [`Error::ShapeOverflow`] or [`Error::AllocationFailed`] for a
/// shape too large, with the global key left as it was.
///
/// ```
/// use stategrad_core::{random, Error};
/// assert_eq!(random::try_normal(&[2, 3]).unwrap().shape(), &[2, 3]);
/// assert!(matches!(random::try_normal(&[usize::MAX, 2]), Err(Error::ShapeOverflow { .. })));
/// ```
pub fn try_normal(shape: &[usize]) -> Result<Tensor> {
    try_sample("normal", shape, DType::F32, Dist::Normal)
}

/// Standard normal samples of `dtype`.
#[track_caller]
pub fn normal_dtype(shape: &[usize], dtype: DType) -> Tensor {
    ok(try_normal_dtype(shape, dtype))
}

/// Standard normal samples of `dtype`, or the errors of [`try_normal`].
///
/// ```
/// use stategrad_core::{random, DType};
/// assert_eq!(random::try_normal_dtype(&[2], DType::F64).unwrap().dtype(), DType::F64);
/// ```
pub fn try_normal_dtype(shape: &[usize], dtype: DType) -> Result<Tensor> {
    try_sample("normal", shape, dtype, Dist::Normal)
}

/// Uniform samples on `[lo, hi)` (f32).
#[track_caller]
pub fn uniform(shape: &[usize], lo: f64, hi: f64) -> Tensor {
    ok(try_uniform(shape, lo, hi))
}

/// Uniform samples on `[lo, hi)` (f32); non-finite bounds are an [`Error::InvalidArgument`].
///
/// ```
/// use stategrad_core::random;
/// assert!(random::try_uniform(&[3], 0.0, 1.0).is_ok());
/// assert!(random::try_uniform(&[3], 0.0, f64::NAN).is_err());
/// ```
pub fn try_uniform(shape: &[usize], lo: f64, hi: f64) -> Result<Tensor> {
    try_sample("uniform", shape, DType::F32, Dist::Uniform(lo, hi))
}

/// Integers uniform on `[lo, hi)`, stored as f32.
#[track_caller]
pub fn randint(shape: &[usize], lo: i64, hi: i64) -> Tensor {
    ok(try_randint(shape, lo, hi))
}

/// Integers uniform on `[lo, hi)`, stored as f32; `lo >= hi` is an [`Error::InvalidArgument`],
/// as in numpy.
///
/// ```
/// use stategrad_core::random;
/// let r = random::try_randint(&[100], -2, 2).unwrap();
/// assert!(r.to_vec::<f32>().iter().all(|v| (-2.0..2.0).contains(v)));
/// assert!(random::try_randint(&[1], 3, 3).is_err());
/// ```
pub fn try_randint(shape: &[usize], lo: i64, hi: i64) -> Result<Tensor> {
    try_sample("randint", shape, DType::F32, Dist::RandInt(lo, hi))
}

/// 1.0 with probability `p`, else 0.0 (f32).
#[track_caller]
pub fn bernoulli(shape: &[usize], p: f64) -> Tensor {
    ok(try_bernoulli(shape, p))
}

/// 1.0 with probability `p`, else 0.0 (f32); `p` outside `[0, 1]` (or NaN) is an
/// [`Error::InvalidArgument`].
///
/// ```
/// use stategrad_core::random;
/// assert_eq!(random::try_bernoulli(&[4], 1.0).unwrap().to_vec::<f32>(), vec![1.0; 4]);
/// assert!(random::try_bernoulli(&[4], 1.5).is_err());
/// ```
pub fn try_bernoulli(shape: &[usize], p: f64) -> Result<Tensor> {
    try_sample("bernoulli", shape, DType::F32, Dist::Bernoulli(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threefry_known_answer() {
        // Random123's known-answer vectors for threefry2x32_20.
        assert_eq!(threefry2x32([0, 0], [0, 0]), [0x6b20_0159, 0x99ba_4efe]);
        assert_eq!(
            threefry2x32([0xffff_ffff, 0xffff_ffff], [0xffff_ffff, 0xffff_ffff]),
            [0x1cb9_96fc, 0xbb00_2be7]
        );
    }

    #[test]
    fn samples_have_the_right_moments() {
        let k = key(7);
        let x = sample_with(&k, &[20000], DType::F64, Dist::Normal).f64_data();
        let mean = x.iter().sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / x.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        let u = sample_with(&k, &[20000], DType::F64, Dist::Uniform(2.0, 3.0)).f64_data();
        assert!(u.iter().all(|&v| (2.0..3.0).contains(&v)));
        let r = sample_with(&k, &[1000], DType::F64, Dist::RandInt(0, 3)).f64_data();
        assert!(r.iter().all(|&v| v == 0.0 || v == 1.0 || v == 2.0));
    }
}
