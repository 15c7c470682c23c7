//! Parameter initialisers, drawn from the seeded global random state
//! ([`stategrad_core::random`]).
//!
//! An [`Initializer`] is a value (an enum) that makes a tensor of a given shape and dtype:
//! [`Initializer::init`] gives f32, [`Initializer::init_dtype`] any float dtype. The random
//! ones draw through `random::normal_dtype` / `random::uniform`, so they advance the global key
//! like every other sample: `random::seed(s)` before building a model makes it reproducible.
//!
//! # Fan-in and fan-out
//!
//! The fans follow flax's `variance_scaling` (`in_axis = -2`, `out_axis = -1`), which matches
//! the `[in, out]` layout of [`Linear`](crate::layers::Linear)'s weight and the `[kh, kw, in,
//! out]` (HWIO) layout of [`Conv2d`](crate::layers::Conv2d)'s kernel:
//!
//! * rank 0: `fan_in = fan_out = 1`;
//! * rank 1 (`[n]`): `fan_in = fan_out = n`;
//! * rank ≥ 2: with `receptive = product of shape[..rank-2]`, `fan_in = shape[rank-2] *
//!   receptive` and `fan_out = shape[rank-1] * receptive`.
//!
//! (PyTorch reads the fans from `[out, in, kh, kw]` weights instead; the numbers are the same
//! for the same layer, only the layout differs.)
//!
//! # Distributions
//!
//! | initialiser | distribution |
//! |---|---|
//! | [`Initializer::HeNormal`] | `N(0, 2 / fan_in)` (PyTorch `kaiming_normal_`, relu gain, fan-in mode) |
//! | [`Initializer::HeUniform`] | `U(-b, b)`, `b = sqrt(6 / fan_in)` (PyTorch `kaiming_uniform_`) |
//! | [`Initializer::XavierNormal`] | `N(0, 2 / (fan_in + fan_out))` |
//! | [`Initializer::XavierUniform`] | `U(-b, b)`, `b = sqrt(6 / (fan_in + fan_out))` |
//! | [`Initializer::LecunNormal`] | `N(0, 1 / fan_in)` |
//! | [`Initializer::Normal`] | `N(0, std²)` |
//! | [`Initializer::Uniform`] | `U(lo, hi)` |
//! | [`Initializer::Zeros`], [`Initializer::Ones`], [`Initializer::Constant`] | a constant (no draw) |
//!
//! The normal initialisers are plain (not truncated) normals, as in PyTorch; flax's `he_normal`
//! and `lecun_normal` truncate at two standard deviations. Uniform samples are drawn in f32 and
//! cast for f64 (the core generator's `uniform` is f32); normal samples are drawn in the
//! requested dtype.
//!
//! ```
//! use stategrad_core::{random, DType};
//! use stategrad_nn::init::Initializer;
//! random::seed(0);
//! let w = Initializer::HeNormal.init(&[64, 32]);
//! assert_eq!((w.shape(), w.dtype()), (&[64usize, 32][..], DType::F32));
//! let b = Initializer::Zeros.init_dtype(&[32], DType::F64);
//! assert_eq!(b.to_vec::<f64>(), vec![0.0; 32]);
//! ```

use stategrad_core::{random, DType, Error, Result, Tensor};

/// How to fill a new parameter tensor. See the [module docs](self) for the fan conventions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Initializer {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Every element equal to the value.
    Constant(f64),
    /// `N(0, std²)`.
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// `U(lo, hi)`.
    Uniform {
        /// Lower bound (inclusive).
        lo: f64,
        /// Upper bound (exclusive).
        hi: f64,
    },
    /// He/Kaiming normal: `N(0, 2 / fan_in)`.
    HeNormal,
    /// He/Kaiming uniform: `U(-sqrt(6 / fan_in), sqrt(6 / fan_in))`.
    HeUniform,
    /// Xavier/Glorot normal: `N(0, 2 / (fan_in + fan_out))`.
    XavierNormal,
    /// Xavier/Glorot uniform: `U(-b, b)` with `b = sqrt(6 / (fan_in + fan_out))`.
    XavierUniform,
    /// LeCun normal: `N(0, 1 / fan_in)` (the default of [`Linear`](crate::layers::Linear) and
    /// [`Conv2d`](crate::layers::Conv2d), as in flax).
    LecunNormal,
}

/// `N(0, std²)`.
///
/// ```
/// use stategrad_nn::init::{normal, Initializer};
/// assert_eq!(normal(0.02), Initializer::Normal { std: 0.02 });
/// ```
pub fn normal(std: f64) -> Initializer {
    Initializer::Normal { std }
}

/// `U(lo, hi)`.
///
/// ```
/// use stategrad_nn::init::uniform;
/// let t = uniform(-1.0, 1.0).init(&[100]);
/// assert!(t.to_vec::<f32>().iter().all(|v| (-1.0..1.0).contains(v)));
/// ```
pub fn uniform(lo: f64, hi: f64) -> Initializer {
    Initializer::Uniform { lo, hi }
}

/// The `(fan_in, fan_out)` of a parameter shape, by the [module's](self) convention.
///
/// ```
/// use stategrad_nn::init::fans;
/// assert_eq!(fans(&[]), (1, 1));
/// assert_eq!(fans(&[7]), (7, 7));
/// assert_eq!(fans(&[4, 3]), (4, 3));
/// assert_eq!(fans(&[3, 3, 8, 16]), (72, 144)); // HWIO kernel
/// ```
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape.len() {
        0 => (1, 1),
        1 => (shape[0], shape[0]),
        n => {
            let receptive: usize = shape[..n - 2].iter().product();
            (shape[n - 2] * receptive, shape[n - 1] * receptive)
        }
    }
}

impl Initializer {
    /// A new f32 tensor of `shape`. Panics where [`Initializer::try_init_dtype`] errs.
    ///
    /// ```
    /// use stategrad_nn::init::Initializer;
    /// assert_eq!(Initializer::Ones.init(&[2]).to_vec::<f32>(), vec![1.0, 1.0]);
    /// ```
    #[track_caller]
    pub fn init(&self, shape: &[usize]) -> Tensor {
        self.init_dtype(shape, DType::F32)
    }

    /// A new tensor of `shape` and `dtype`. Panics where [`Initializer::try_init_dtype`] errs.
    ///
    /// ```
    /// use stategrad_core::DType;
    /// use stategrad_nn::init::Initializer;
    /// let w = Initializer::XavierUniform.init_dtype(&[3, 5], DType::F64);
    /// assert_eq!(w.dtype(), DType::F64);
    /// let b = (6.0f64 / 8.0).sqrt();
    /// assert!(w.to_vec::<f64>().iter().all(|v| v.abs() <= b));
    /// ```
    #[track_caller]
    pub fn init_dtype(&self, shape: &[usize], dtype: DType) -> Tensor {
        match self.try_init_dtype(shape, dtype) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// A new tensor of `shape` and `dtype`; [`Error::InvalidArgument`] for a non-float dtype, a
    /// negative or non-finite standard deviation, or bad uniform bounds (the global key is then
    /// left as it was).
    ///
    /// ```
    /// use stategrad_core::DType;
    /// use stategrad_nn::init::{normal, Initializer};
    /// assert!(Initializer::HeNormal.try_init_dtype(&[2, 2], DType::I32).is_err());
    /// assert!(normal(-1.0).try_init_dtype(&[2], DType::F32).is_err());
    /// ```
    pub fn try_init_dtype(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bad = |msg: String| Error::InvalidArgument { op: "init", msg };
        if !dtype.is_float() {
            return Err(bad(format!(
                "initialisers make float tensors, not {}",
                dtype.name()
            )));
        }
        let (fan_in, fan_out) = fans(shape);
        // A fan of zero (an empty shape) gives an empty tensor; avoid dividing by zero.
        let (fi, fo) = (fan_in.max(1) as f64, fan_out.max(1) as f64);
        match *self {
            Initializer::Zeros => Ok(Tensor::zeros_dtype(shape, dtype)),
            Initializer::Ones => Ok(Tensor::ones_dtype(shape, dtype)),
            Initializer::Constant(v) => Tensor::try_full_dtype(shape, v, dtype),
            Initializer::Normal { std } => {
                if !(std.is_finite() && std >= 0.0) {
                    return Err(bad(format!(
                        "the standard deviation must be finite and >= 0, got {std}"
                    )));
                }
                scaled_normal(shape, dtype, std)
            }
            Initializer::Uniform { lo, hi } => {
                if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                    return Err(bad(format!(
                        "uniform bounds must be finite with lo <= hi, got [{lo}, {hi})"
                    )));
                }
                Ok(random::try_uniform(shape, lo, hi)?.cast(dtype))
            }
            Initializer::HeNormal => scaled_normal(shape, dtype, (2.0 / fi).sqrt()),
            Initializer::HeUniform => symmetric_uniform(shape, dtype, (6.0 / fi).sqrt()),
            Initializer::XavierNormal => scaled_normal(shape, dtype, (2.0 / (fi + fo)).sqrt()),
            Initializer::XavierUniform => symmetric_uniform(shape, dtype, (6.0 / (fi + fo)).sqrt()),
            Initializer::LecunNormal => scaled_normal(shape, dtype, (1.0 / fi).sqrt()),
        }
    }
}

fn scaled_normal(shape: &[usize], dtype: DType, std: f64) -> Result<Tensor> {
    random::try_normal_dtype(shape, dtype)?.try_mul_scalar(std)
}

fn symmetric_uniform(shape: &[usize], dtype: DType, bound: f64) -> Result<Tensor> {
    Ok(random::try_uniform(shape, -bound, bound)?.cast(dtype))
}
