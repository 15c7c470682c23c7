//! The built-in processors: [`scale`], [`clip_by_global_norm`], [`clip_by_value`],
//! [`add_noise`], [`add_decayed_weights`], [`zero_nans`] and [`nan_guard`].
//!
//! Arithmetic processors use tensor operations, so their output can be differentiated again
//! when a transform is nested inside another.

use crate::gradset::GradSet;
use crate::processor::{GradientProcessor, Processor};
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
    type State = ();
    fn name(&self) -> &str {
        "scale"
    }
    fn update(&self, grads: GradSet, _: &mut (), _: Option<&GradSet>) -> Result<GradSet> {
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
    type State = ();
    fn name(&self) -> &str {
        "clip_by_global_norm"
    }
    fn update(&self, grads: GradSet, _: &mut (), _: Option<&GradSet>) -> Result<GradSet> {
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
    type State = ();
    fn name(&self) -> &str {
        "clip_by_value"
    }
    fn update(&self, grads: GradSet, _: &mut (), _: Option<&GradSet>) -> Result<GradSet> {
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
    /// The step counter: how many updates this state has seen.
    type State = u64;
    fn name(&self) -> &str {
        "add_noise"
    }
    fn update(&self, grads: GradSet, count: &mut u64, _: Option<&GradSet>) -> Result<GradSet> {
        self.validate()?;
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

// ------------------------------------------------------------------ add_decayed_weights

/// Add `weight_decay * param` to every gradient (needs the parameters).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AddDecayedWeights {
    /// The decay factor.
    pub weight_decay: f64,
}

impl AddDecayedWeights {
    /// Check the parameter (finite).
    pub fn validate(&self) -> Result<()> {
        finite("add_decayed_weights", "weight_decay", self.weight_decay).map(drop)
    }
}

impl GradientProcessor for AddDecayedWeights {
    type State = ();
    fn name(&self) -> &str {
        "add_decayed_weights"
    }
    fn update(&self, grads: GradSet, _: &mut (), params: Option<&GradSet>) -> Result<GradSet> {
        self.validate()?;
        let Some(params) = params else {
            return Err(param_error(
                "add_decayed_weights",
                "params",
                "needs the parameters: apply it with `apply_with_params` \
                 (or a runner that passes them)",
            ));
        };
        if self.weight_decay == 0.0 {
            return Ok(grads);
        }
        // The runners check that `params` pairs each gradient with its parameter.
        let mut ps = params.tensors();
        grads.try_map(|label, g| {
            let p = ps.next().ok_or_else(|| {
                param_error(
                    "add_decayed_weights",
                    "params",
                    format!("no parameter for gradient {label}"),
                )
            })?;
            g.try_add(&p.cast(g.dtype()).try_mul_scalar(self.weight_decay)?)
        })
    }
}

/// Add the decayed weights: `grad + weight_decay * param` for every gradient
/// (`optax.add_decayed_weights`). Needs the parameters: run it with
/// [`StatefulProcessor::apply_with_params`](crate::StatefulProcessor::apply_with_params),
/// [`apply_with_params`](crate::apply_with_params), or as a transform plugin (which pairs each
/// gradient with the value it was taken at); without them it is an [`Error::PluginParam`] for
/// the parameter `params`. Combine with [`masked`](crate::masked) to leave biases alone.
///
/// ```
/// use stategrad_core::{Error, Tensor};
/// use stategrad_plugins::{add_decayed_weights, StatefulProcessor};
/// let wd = StatefulProcessor::new(add_decayed_weights(0.1));
/// let out = wd.apply_with_params(&Tensor::new([1.0f32]), &Tensor::new([5.0f32])).unwrap();
/// assert_eq!(out.to_string(), "[1.5]");
/// assert!(matches!(wd.apply(&Tensor::new([1.0f32])), Err(Error::PluginParam { name, .. }) if name == "params"));
/// ```
pub fn add_decayed_weights(weight_decay: f64) -> Processor {
    Arc::new(AddDecayedWeights { weight_decay })
}

// ------------------------------------------------------------------ NaN handling

/// Replace NaN elements by zero.
#[derive(Clone, Copy, Debug, Default)]
pub struct ZeroNans;

impl GradientProcessor for ZeroNans {
    type State = ();
    fn name(&self) -> &str {
        "zero_nans"
    }
    fn update(&self, grads: GradSet, _: &mut (), _: Option<&GradSet>) -> Result<GradSet> {
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
    type State = ();
    fn name(&self) -> &str {
        "nan_guard"
    }
    fn update(&self, grads: GradSet, _: &mut (), _: Option<&GradSet>) -> Result<GradSet> {
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
                let what = if label.keys().is_empty() {
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
