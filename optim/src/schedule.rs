//! Learning-rate schedules: functions of the step count, written in tensor operations.
//!
//! A schedule maps the optimizer's count (a 0-d `f64` tensor read from its count [`State`]) to
//! the learning rate (a 0-d `f64` tensor). Because it is computed with tensor operations
//! (`minimum`, `cos`, `select`, …) and not from a Rust integer, a jitted step recomputes the rate
//! from the count on every replay instead of baking the rate of the traced step into the
//! program.
//!
//! Each schedule follows optax's `optax.schedules` function of the same name: same equations,
//! same parameter names, same defaults.
//!
//! [`State`]: stategrad_core::State

use stategrad_core::{DType, Error, Result, Tensor};
use std::fmt;
use std::sync::Arc;

/// A learning-rate schedule (see the [module docs](self)). `f64` converts into a constant one.
///
/// ```
/// use stategrad_optim::{cosine_decay, Schedule};
/// let s: Schedule = cosine_decay(1.0, 10).into();
/// assert_eq!(s.value_at(0), 1.0);
/// assert!((s.value_at(5) - 0.5).abs() < 1e-15);
/// assert_eq!(s.value_at(10), 0.0);
/// assert_eq!(s.value_at(20), 0.0);
/// ```
#[derive(Clone)]
pub struct Schedule(Arc<dyn ScheduleFn>);

/// What a schedule computes. Implement it for your own schedule; use only tensor operations on
/// `count` so that the rate stays a function of the count under `jit`.
pub trait ScheduleFn: Send + Sync + fmt::Debug {
    /// The rate at `count` (a 0-d `f64` tensor holding a whole number of steps), as a 0-d tensor.
    fn value(&self, count: &Tensor) -> Tensor;
    /// A typed error if a hyper-parameter is unusable (NaN, a non-positive length, …).
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

impl Schedule {
    /// A schedule from your own [`ScheduleFn`].
    pub fn new(f: impl ScheduleFn + 'static) -> Schedule {
        Schedule(Arc::new(f))
    }

    /// The rate at `count` (0-d `f64` tensor), as a 0-d `f64` tensor.
    pub fn at(&self, count: &Tensor) -> Tensor {
        self.0.value(&count.cast(DType::F64)).cast(DType::F64)
    }

    /// The rate at step `step`, eagerly (for printing and tests).
    pub fn value_at(&self, step: u64) -> f64 {
        self.at(&Tensor::scalar(step as f64))
            .item()
            .unwrap_or(f64::NAN)
    }

    /// Check the hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        self.0.validate()
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<f64> for Schedule {
    fn from(v: f64) -> Schedule {
        Schedule::new(Constant(v))
    }
}

macro_rules! into_schedule {
    ($($t:ty),*) => {$(
        impl From<$t> for Schedule {
            fn from(s: $t) -> Schedule {
                Schedule::new(s)
            }
        }
    )*};
}
into_schedule!(
    Constant,
    PiecewiseConstant,
    ExponentialDecay,
    CosineDecay,
    WarmupCosineDecay
);

/// A typed error unless `v` is a number (not NaN, not infinite).
pub(crate) fn finite(option: &'static str, v: f64) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::InvalidOption {
            option,
            msg: format!("must be a finite number, got {v}"),
        })
    }
}

fn c(v: f64) -> Tensor {
    Tensor::scalar(v)
}

/// `floor(x)` for a 0-d `f64` tensor with `|x| < 2^51`, in tensor operations: round to the
/// nearest integer by adding and removing `2^52`, then subtract one where that rounded up.
fn floor(x: &Tensor) -> Tensor {
    const MAGIC: f64 = 4_503_599_627_370_496.0; // 2^52
    let r = x.add_scalar(MAGIC).sub_scalar(MAGIC);
    &r - &r.gt(x)
}

// ------------------------------------------------------------------------------ constant

/// optax `constant_schedule(value)`: `value` at every step.
#[derive(Clone, Copy, Debug)]
pub struct Constant(pub f64);

/// optax `constant_schedule(value)`.
pub fn constant(value: f64) -> Constant {
    Constant(value)
}

impl ScheduleFn for Constant {
    fn value(&self, _count: &Tensor) -> Tensor {
        c(self.0)
    }
    fn validate(&self) -> Result<()> {
        finite("learning_rate", self.0)
    }
}

// ------------------------------------------------------------------------------ piecewise

/// optax `piecewise_constant_schedule(init_value, boundaries_and_scales)`: `init_value`
/// multiplied by `scale` for every `(boundary, scale)` with `count >= boundary` (a step
/// schedule).
///
/// optax, per boundary: `indicator = max(0, sign(boundary - count))`,
/// `v = v * indicator + (1 - indicator) * scale * v`.
///
/// ```
/// use stategrad_optim::{piecewise_constant, Schedule};
/// let s: Schedule = piecewise_constant(1.0, [(2, 0.5), (4, 0.1)]).into();
/// let v: Vec<f64> = (0..6).map(|t| s.value_at(t)).collect();
/// assert_eq!(v, [1.0, 1.0, 0.5, 0.5, 0.05, 0.05]);
/// ```
#[derive(Clone, Debug)]
pub struct PiecewiseConstant {
    /// The rate before the first boundary.
    pub init_value: f64,
    /// `(boundary step, scale)` pairs.
    pub boundaries_and_scales: Vec<(u64, f64)>,
}

/// optax `piecewise_constant_schedule` (a step schedule).
pub fn piecewise_constant(
    init_value: f64,
    boundaries_and_scales: impl IntoIterator<Item = (u64, f64)>,
) -> PiecewiseConstant {
    PiecewiseConstant {
        init_value,
        boundaries_and_scales: boundaries_and_scales.into_iter().collect(),
    }
}

impl ScheduleFn for PiecewiseConstant {
    fn value(&self, count: &Tensor) -> Tensor {
        let mut v = c(self.init_value);
        for &(boundary, scale) in &self.boundaries_and_scales {
            // indicator = max(0, sign(boundary - count))
            let indicator = (boundary as f64 - count).sign().maximum_scalar(0.0);
            // v = v * indicator + (1 - indicator) * scale * v
            v = &v * &indicator + (1.0 - &indicator) * scale * &v;
        }
        v
    }
    fn validate(&self) -> Result<()> {
        finite("init_value", self.init_value)?;
        for &(_, s) in &self.boundaries_and_scales {
            finite("boundaries_and_scales", s)?;
            if s < 0.0 {
                return Err(Error::InvalidOption {
                    option: "boundaries_and_scales",
                    msg: format!("scales must be non-negative, got {s}"),
                });
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------ exponential

/// optax `exponential_decay(init_value, transition_steps, decay_rate, transition_begin=0,
/// staircase=False, end_value=None)`.
///
/// optax: `p = (count - transition_begin) / transition_steps` (floored if `staircase`);
/// `v = init_value` where `count - transition_begin <= 0`, else `init_value * decay_rate^p`;
/// then `v = max(v, end_value)` (`min` if `decay_rate > 1`) when `end_value` is given.
/// `transition_steps == 0` or `decay_rate == 0` give the constant `init_value`, as in optax.
///
/// ```
/// use stategrad_optim::{exponential_decay, Schedule};
/// let s: Schedule = exponential_decay(1.0, 2, 0.5).staircase(true).into();
/// let v: Vec<f64> = (0..5).map(|t| s.value_at(t)).collect();
/// assert_eq!(v, [1.0, 1.0, 0.5, 0.5, 0.25]);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ExponentialDecay {
    /// The rate at the start.
    pub init_value: f64,
    /// Steps per factor of `decay_rate`.
    pub transition_steps: u64,
    /// The factor per `transition_steps` steps.
    pub decay_rate: f64,
    /// Steps of constant rate before the decay starts.
    pub transition_begin: u64,
    /// Decay in whole periods (`floor(p)`).
    pub staircase: bool,
    /// A bound the rate does not pass.
    pub end_value: Option<f64>,
}

/// optax `exponential_decay` with its defaults (`transition_begin = 0`, no staircase, no end value).
pub fn exponential_decay(
    init_value: f64,
    transition_steps: u64,
    decay_rate: f64,
) -> ExponentialDecay {
    ExponentialDecay {
        init_value,
        transition_steps,
        decay_rate,
        transition_begin: 0,
        staircase: false,
        end_value: None,
    }
}

impl ExponentialDecay {
    /// Steps of constant rate before the decay starts.
    pub fn transition_begin(mut self, steps: u64) -> Self {
        self.transition_begin = steps;
        self
    }
    /// Decay in whole periods.
    pub fn staircase(mut self, on: bool) -> Self {
        self.staircase = on;
        self
    }
    /// A bound the rate does not pass.
    pub fn end_value(mut self, v: f64) -> Self {
        self.end_value = Some(v);
        self
    }
}

impl ScheduleFn for ExponentialDecay {
    fn value(&self, count: &Tensor) -> Tensor {
        if self.transition_steps == 0 || self.decay_rate == 0.0 {
            return c(self.init_value);
        }
        let decreased = count.sub_scalar(self.transition_begin as f64);
        let mut p = decreased.div_scalar(self.transition_steps as f64);
        if self.staircase {
            p = floor(&p);
        }
        let decayed = c(self.decay_rate).pow(&p).mul_scalar(self.init_value);
        let mut v = Tensor::select(&decreased.le_scalar(0.0), &c(self.init_value), &decayed);
        if let Some(end) = self.end_value {
            v = if self.decay_rate < 1.0 {
                v.maximum_scalar(end)
            } else {
                v.minimum_scalar(end)
            };
        }
        v
    }
    fn validate(&self) -> Result<()> {
        finite("init_value", self.init_value)?;
        finite("decay_rate", self.decay_rate)?;
        if let Some(e) = self.end_value {
            finite("end_value", e)?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------ cosine

/// optax `cosine_decay_schedule(init_value, decay_steps, alpha=0.0, exponent=1.0)`.
///
/// optax: `t = min(count, decay_steps)`, `cosine = 0.5 * (1 + cos(pi * t / decay_steps))`,
/// `v = init_value * ((1 - alpha) * cosine^exponent + alpha)`. `decay_steps` must be positive.
#[derive(Clone, Copy, Debug)]
pub struct CosineDecay {
    /// The rate at step 0.
    pub init_value: f64,
    /// Steps to the final rate.
    pub decay_steps: u64,
    /// The final rate as a fraction of `init_value`.
    pub alpha: f64,
    /// The power of the cosine factor.
    pub exponent: f64,
}

/// optax `cosine_decay_schedule` with `alpha = 0`, `exponent = 1`.
pub fn cosine_decay(init_value: f64, decay_steps: u64) -> CosineDecay {
    CosineDecay {
        init_value,
        decay_steps,
        alpha: 0.0,
        exponent: 1.0,
    }
}

impl CosineDecay {
    /// The final rate as a fraction of `init_value`.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }
    /// The power of the cosine factor.
    pub fn exponent(mut self, exponent: f64) -> Self {
        self.exponent = exponent;
        self
    }
}

impl ScheduleFn for CosineDecay {
    fn value(&self, count: &Tensor) -> Tensor {
        let steps = self.decay_steps as f64;
        let t = count.minimum_scalar(steps);
        let cosine = t
            .mul_scalar(std::f64::consts::PI)
            .div_scalar(steps)
            .cos()
            .add_scalar(1.0)
            .mul_scalar(0.5);
        let cosine = if self.exponent == 1.0 {
            cosine
        } else {
            cosine.powf(self.exponent)
        };
        cosine
            .mul_scalar(1.0 - self.alpha)
            .add_scalar(self.alpha)
            .mul_scalar(self.init_value)
    }
    fn validate(&self) -> Result<()> {
        finite("init_value", self.init_value)?;
        finite("alpha", self.alpha)?;
        finite("exponent", self.exponent)?;
        if self.decay_steps == 0 {
            return Err(Error::InvalidOption {
                option: "decay_steps",
                msg: "the cosine decay schedule requires positive decay_steps, got 0".into(),
            });
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------ warmup + cosine

/// optax `warmup_cosine_decay_schedule(init_value, peak_value, warmup_steps, decay_steps,
/// end_value=0.0, exponent=1.0)`: a linear warm-up from `init_value` to `peak_value` over
/// `warmup_steps`, then a cosine decay to `end_value` at step `decay_steps` (counted from 0,
/// warm-up included).
///
/// optax joins the two: `v = warmup(count)` where `count < warmup_steps`, else
/// `cosine(count - warmup_steps)`, with `warmup(t) = (init - peak) * (1 - min(t, w) / w) + peak`
/// (the constant `init_value` when `w = 0`) and the cosine decay of [`CosineDecay`] from
/// `peak_value` over `decay_steps - warmup_steps` steps with `alpha = end_value / peak_value`
/// (0 when `peak_value` is 0). `decay_steps` must exceed `warmup_steps`.
///
/// ```
/// use stategrad_optim::{warmup_cosine_decay, Schedule};
/// let s: Schedule = warmup_cosine_decay(0.0, 1.0, 2, 6).into();
/// let v: Vec<f64> = (0..7).map(|t| (s.value_at(t) * 1e12).round() / 1e12).collect();
/// assert_eq!(v, [0.0, 0.5, 1.0, 0.853553390593, 0.5, 0.146446609407, 0.0]);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct WarmupCosineDecay {
    /// The rate at step 0.
    pub init_value: f64,
    /// The rate at the end of the warm-up.
    pub peak_value: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: u64,
    /// The step at which the rate reaches `end_value` (warm-up included).
    pub decay_steps: u64,
    /// The final rate.
    pub end_value: f64,
    /// The power of the cosine factor.
    pub exponent: f64,
}

/// optax `warmup_cosine_decay_schedule` with `end_value = 0`, `exponent = 1`.
pub fn warmup_cosine_decay(
    init_value: f64,
    peak_value: f64,
    warmup_steps: u64,
    decay_steps: u64,
) -> WarmupCosineDecay {
    WarmupCosineDecay {
        init_value,
        peak_value,
        warmup_steps,
        decay_steps,
        end_value: 0.0,
        exponent: 1.0,
    }
}

impl WarmupCosineDecay {
    /// The final rate.
    pub fn end_value(mut self, v: f64) -> Self {
        self.end_value = v;
        self
    }
    /// The power of the cosine factor.
    pub fn exponent(mut self, exponent: f64) -> Self {
        self.exponent = exponent;
        self
    }
    fn cosine(&self) -> CosineDecay {
        let alpha = if self.peak_value == 0.0 {
            0.0
        } else {
            self.end_value / self.peak_value
        };
        CosineDecay {
            init_value: self.peak_value,
            decay_steps: self.decay_steps.saturating_sub(self.warmup_steps),
            alpha,
            exponent: self.exponent,
        }
    }
}

impl ScheduleFn for WarmupCosineDecay {
    fn value(&self, count: &Tensor) -> Tensor {
        let w = self.warmup_steps as f64;
        let warmup = if self.warmup_steps == 0 {
            c(self.init_value)
        } else {
            // polynomial_schedule(power=1): clip(count, 0, w), frac = 1 - t / w
            let t = count.maximum_scalar(0.0).minimum_scalar(w);
            let frac = 1.0 - t.div_scalar(w);
            frac.mul_scalar(self.init_value - self.peak_value)
                .add_scalar(self.peak_value)
        };
        let decay = self.cosine().value(&count.sub_scalar(w));
        Tensor::select(&count.lt_scalar(w), &warmup, &decay)
    }
    fn validate(&self) -> Result<()> {
        finite("init_value", self.init_value)?;
        finite("peak_value", self.peak_value)?;
        finite("end_value", self.end_value)?;
        finite("exponent", self.exponent)?;
        if self.decay_steps <= self.warmup_steps {
            return Err(Error::InvalidOption {
                option: "decay_steps",
                msg: format!(
                    "must exceed warmup_steps ({}) so the cosine part has positive length, got {}",
                    self.warmup_steps, self.decay_steps
                ),
            });
        }
        Ok(())
    }
}
