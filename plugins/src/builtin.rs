//! The built-in processors: [`scale`], [`clip_by_global_norm`], [`clip_by_value`],
//! [`add_noise`], [`zero_nans`] and [`nan_guard`].
//!
//! Arithmetic processors use tensor operations, so their output can be differentiated again
//! when a transform is nested inside another.

use crate::gradset::GradSet;
use crate::processor::{GradientProcessor, ProcState, Processor};
use stategrad_core::{Error, Result, Tensor};
use std::sync::Arc;

/// The typed parameter error of a processor.
pub(crate) fn param_error(processor: &str, name: &str, msg: impl Into<String>) -> Error {
    Error::PluginParam {
        plugin: processor.to_string(),
        name: name.to_string(),
        msg: msg.into(),
    }
}

fn finite(processor: &str, name: &str, v: f64) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(param_error(
            processor,
            name,
            format!("must be finite, got {v}"),
        ))
    }
}

// ------------------------------------------------------------------ scale

/// Multiply every gradient by a constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    /// The factor.
    pub factor: f64,
}

impl Scale {
    /// Check the parameter (finite).
    pub fn validate(&self) -> Result<()> {
        finite("scale", "scale", self.factor).map(drop)
    }
}

impl GradientProcessor for Scale {
    fn name(&self) -> &str {
        "scale"
    }
    fn update(&self, grads: GradSet, _: &mut ProcState) -> Result<GradSet> {
        self.validate()?;
        if self.factor == 1.0 {
            return Ok(grads);
        }
        grads.try_map(|_, g| g.try_mul_scalar(self.factor))
    }
}

/// Multiply every gradient by `factor` (`optax.scale`). `scale(1.0)` returns its input as is.
pub fn scale(factor: f64) -> Processor {
    Arc::new(Scale { factor })
}

// ------------------------------------------------------------------ clip_by_global_norm

/// Rescale all gradients together so that their global norm is at most `max_norm`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipByGlobalNorm {
    /// The bound on the global norm.
    pub max_norm: f64,
}

/// Added to the global norm before dividing (the seed's formula).
pub const CLIP_EPS: f64 = 1e-6;

impl ClipByGlobalNorm {
    /// Check the parameter (finite, not negative).
    pub fn validate(&self) -> Result<()> {
        let m = finite("clip_by_global_norm", "max_norm", self.max_norm)?;
        if m < 0.0 {
            return Err(param_error(
                "clip_by_global_norm",
                "max_norm",
                format!("must be >= 0, got {m}"),
            ));
        }
        Ok(())
    }
}

impl GradientProcessor for ClipByGlobalNorm {
    fn name(&self) -> &str {
        "clip_by_global_norm"
    }
    fn update(&self, grads: GradSet, _: &mut ProcState) -> Result<GradSet> {
        self.validate()?;
        if grads.is_empty() {
            return Ok(grads);
        }
        // scale = min(1, max_norm / (global_norm + 1e-6)), applied to every gradient.
        let norm = grads.global_norm()?;
        let factor = Tensor::scalar_of(self.max_norm, norm.dtype())
            .try_div(&norm.try_add_scalar(CLIP_EPS)?)?
            .try_minimum_scalar(1.0)?;
        grads.try_map(|_, g| g.try_mul(&factor.cast(g.dtype())))
    }
}

/// Clip by global norm (`optax.clip_by_global_norm`): every gradient is multiplied by
/// `min(1, max_norm / (global_norm + 1e-6))`, where the global norm covers the whole set.
///
/// After clipping, the global norm is at most `max_norm` (equal to it, up to the `1e-6`, when
/// the clip was active); clipping again changes the gradients by at most that `1e-6` relative.
pub fn clip_by_global_norm(max_norm: f64) -> Processor {
    Arc::new(ClipByGlobalNorm { max_norm })
}

// ------------------------------------------------------------------ clip_by_value

/// Clamp every element into `[min, max]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipByValue {
    /// Lower bound.
    pub min: f64,
    /// Upper bound.
    pub max: f64,
}

impl ClipByValue {
    /// Check the parameters (not NaN, `min <= max`; infinite bounds are allowed).
    pub fn validate(&self) -> Result<()> {
        if self.min.is_nan() {
            return Err(param_error("clip_by_value", "min", "must not be NaN"));
        }
        if self.max.is_nan() {
            return Err(param_error("clip_by_value", "max", "must not be NaN"));
        }
        if self.min > self.max {
            return Err(param_error(
                "clip_by_value",
                "min",
                format!("must be <= max, got min {} and max {}", self.min, self.max),
            ));
        }
        Ok(())
    }
}

impl GradientProcessor for ClipByValue {
    fn name(&self) -> &str {
        "clip_by_value"
    }
    fn update(&self, grads: GradSet, _: &mut ProcState) -> Result<GradSet> {
        self.validate()?;
        grads.try_map(|_, g| g.try_maximum_scalar(self.min)?.try_minimum_scalar(self.max))
    }
}

/// Clamp every element into `[min, max]` (`optax.clip`).
pub fn clip_by_value(min: f64, max: f64) -> Processor {
    Arc::new(ClipByValue { min, max })
}

// ------------------------------------------------------------------ add_noise

/// One step of splitmix64.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A counter-based stream of standard normal numbers: fully determined by
/// `(seed, step, stream)`, so noise is reproducible and independent of thread scheduling.
#[derive(Clone, Debug)]
pub struct GaussianStream {
    state: u64,
    spare: Option<f64>,
}

impl GaussianStream {
    /// The stream for `seed`, `step` and `stream` (e.g. the gradient's index).
    pub fn new(seed: u64, step: u64, stream: u64) -> GaussianStream {
        let mut s = seed;
        let a = splitmix64(&mut s);
        let mut s = a ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let b = splitmix64(&mut s);
        let mut s = b ^ stream.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7);
        let state = splitmix64(&mut s);
        GaussianStream { state, spare: None }
    }

    /// The next standard normal number (Box–Muller).
    pub fn next_normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // u1 in (0, 1], u2 in [0, 1): 53 random bits each.
        let u1 = ((splitmix64(&mut self.state) >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
        let u2 = (splitmix64(&mut self.state) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }
}

/// Add Gaussian noise of standard deviation `std`, reproducible from `seed`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AddNoise {
    /// Standard deviation.
    pub std: f64,
    /// The seed.
    pub seed: u64,
}

impl AddNoise {
    /// Check the parameters (`std` finite, not negative).
    pub fn validate(&self) -> Result<()> {
        let s = finite("add_noise", "std", self.std)?;
        if s < 0.0 {
            return Err(param_error(
                "add_noise",
                "std",
                format!("must be >= 0, got {s}"),
            ));
        }
        Ok(())
    }
}

impl GradientProcessor for AddNoise {
    fn name(&self) -> &str {
        "add_noise"
    }
    fn init(&self, _: &GradSet) -> ProcState {
        ProcState::Count(0)
    }
    fn update(&self, grads: GradSet, state: &mut ProcState) -> Result<GradSet> {
        self.validate()?;
        let count = state.counter_mut("add_noise")?;
        let step = *count;
        let mut index = 0u64;
        let out = grads.try_map(|_, g| {
            let mut rng = GaussianStream::new(self.seed, step, index);
            index += 1;
            let noise: Vec<f64> = (0..g.numel())
                .map(|_| self.std * rng.next_normal())
                .collect();
            let noise = Tensor::from_vec(noise, g.shape())?.cast(g.dtype());
            g.try_add(&noise)
        })?;
        *count = step.wrapping_add(1);
        Ok(out)
    }
}

/// Add `N(0, std²)` noise to every element (`optax.add_noise` without decay). The noise of step
/// `t` (the `t`-th update of one state) for gradient `i` depends only on `(seed, t, i)`.
pub fn add_noise(std: f64, seed: u64) -> Processor {
    Arc::new(AddNoise { std, seed })
}

// ------------------------------------------------------------------ NaN handling

/// Replace NaN elements by zero.
#[derive(Clone, Copy, Debug, Default)]
pub struct ZeroNans;

impl GradientProcessor for ZeroNans {
    fn name(&self) -> &str {
        "zero_nans"
    }
    fn update(&self, grads: GradSet, _: &mut ProcState) -> Result<GradSet> {
        // `g == g` is false exactly at NaN.
        grads.try_map(|_, g| Tensor::try_select(&g.try_eq(&g)?, &g, &g.zeros_like()))
    }
}

/// Replace NaN elements by zero (`optax.zero_nans`); infinities are kept.
pub fn zero_nans() -> Processor {
    Arc::new(ZeroNans)
}

/// Fail with [`Error::NonFinite`] naming the first gradient that holds a NaN or an infinity.
#[derive(Clone, Copy, Debug, Default)]
pub struct NanGuard;

impl GradientProcessor for NanGuard {
    fn name(&self) -> &str {
        "nan_guard"
    }
    fn update(&self, grads: GradSet, _: &mut ProcState) -> Result<GradSet> {
        for (label, g) in grads.iter() {
            let bad = match g.as_slice::<f32>() {
                Some(v) => v
                    .iter()
                    .position(|x| !x.is_finite())
                    .map(|i| (i, v[i] as f64)),
                None => {
                    let v = g.to_f64_vec();
                    v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i]))
                }
            };
            if let Some((i, x)) = bad {
                let what = if label.is_empty() {
                    "gradient".to_string()
                } else {
                    format!("gradient {label}")
                };
                return Err(Error::NonFinite {
                    primitive: "nan_guard".into(),
                    location: Some(format!("{what}, element {i} is {x}")),
                });
            }
        }
        Ok(grads)
    }
}

/// Check every gradient for NaN/Inf and fail with [`Error::NonFinite`] whose location names
/// the gradient's path (and the first bad element).
///
/// ```
/// use stategrad_core::{path, Error, Path, Tensor};
/// use stategrad_plugins::{nan_guard, StatefulProcessor};
/// use std::collections::BTreeMap;
/// let grads: BTreeMap<Path, Tensor> = [
///     (path!("bias"), Tensor::new([1.0f32])),
///     (path!("weight"), Tensor::new([0.0f32, f32::NAN])),
/// ].into_iter().collect();
/// let err = StatefulProcessor::new(nan_guard()).apply(&grads).unwrap_err();
/// assert!(matches!(&err, Error::NonFinite { location: Some(l), .. } if l.contains("('weight',)")));
/// ```
pub fn nan_guard() -> Processor {
    Arc::new(NanGuard)
}
