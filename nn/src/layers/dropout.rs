//! Dropout, with its train/eval mode held in a state.

use super::{impl_layer, invalid, unwrap};
use stategrad_core::{random, Result, State, Tensor};

/// A new mode state (a plain, non-differentiable `State` holding a 0-d bool tensor: `true` for
/// training), to share between several [`Dropout`]s with [`Dropout::with_mode`] so that one
/// `set_value` switches them all.
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::layers::{mode_state, Dropout};
/// let mode = mode_state(true);
/// let (a, b) = (Dropout::new(0.5).with_mode(&mode), Dropout::new(0.1).with_mode(&mode));
/// mode.set_value(Tensor::scalar(false));
/// assert!(!a.is_training() && !b.is_training());
/// ```
pub fn mode_state(training: bool) -> State {
    State::new(Tensor::scalar(training)).named("training")
}

/// Inverted dropout: in training mode each element is zeroed with probability `rate` and the
/// others are scaled by `1 / (1 - rate)`; in eval mode the input passes through unchanged.
///
/// The mask is drawn from the global random state (`random::bernoulli`), so a jitted step draws
/// a new mask on every replay. The mode is the value of the `training` state (a plain `State`,
/// not a `ParamState`: `states(ParamState)` leaves it out, and `grad` treats it as data), read
/// inside `forward` and applied with `where_`: switching mode between calls of a jitted step
/// needs no retrace. So that the traced program is the same in both modes, the mask is drawn
/// (and the global key advanced) in eval mode too.
///
/// Starts in training mode, as in PyTorch.
///
/// ```
/// use stategrad_core::{random, Tensor};
/// use stategrad_nn::layers::Dropout;
/// random::seed(0);
/// let d = Dropout::new(0.5);
/// let x = Tensor::ones(&[1000]);
/// let y = d.forward(&x).to_vec::<f32>();
/// assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
/// d.eval();
/// assert_eq!(d.forward(&x).to_vec::<f32>(), vec![1.0; 1000]);
/// ```
#[derive(stategrad_derive::Module)]
#[module(crate = "stategrad_core")]
pub struct Dropout {
    /// The mode: a plain `State` holding a 0-d bool tensor (`true`: training).
    pub training: State,
    #[module(skip)]
    rate: f64,
}

impl Dropout {
    /// Dropout with probability `rate` of zeroing an element; panics unless `0 <= rate < 1`.
    #[track_caller]
    pub fn new(rate: f64) -> Dropout {
        match Dropout::try_new(rate) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    /// Dropout with probability `rate`, or an error unless `0 <= rate < 1`.
    ///
    /// ```
    /// use stategrad_nn::layers::Dropout;
    /// assert!(Dropout::try_new(1.0).is_err());
    /// assert!(Dropout::try_new(0.0).is_ok());
    /// ```
    pub fn try_new(rate: f64) -> Result<Dropout> {
        if !(0.0..1.0).contains(&rate) {
            return Err(invalid(
                "Dropout",
                format!("rate must be in [0, 1), got {rate}"),
            ));
        }
        Ok(Dropout {
            training: mode_state(true),
            rate,
        })
    }

    /// The same layer reading its mode from `mode` (see [`mode_state`]).
    pub fn with_mode(mut self, mode: &State) -> Dropout {
        self.training = mode.clone();
        self
    }

    /// The drop probability.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Switch to training mode.
    pub fn train(&self) {
        self.set_training(true)
    }

    /// Switch to eval mode (the identity).
    pub fn eval(&self) {
        self.set_training(false)
    }

    /// Set the mode.
    ///
    /// ```
    /// use stategrad_nn::layers::Dropout;
    /// let d = Dropout::new(0.2);
    /// assert!(d.is_training());
    /// d.set_training(false);
    /// assert!(!d.is_training());
    /// ```
    pub fn set_training(&self, on: bool) {
        self.training.set_value(Tensor::scalar(on));
    }

    /// The current mode (outside a transform).
    pub fn is_training(&self) -> bool {
        self.training.value().to_f64_vec().first().copied() == Some(1.0)
    }

    /// Apply dropout in the current mode; panics where [`Dropout::try_forward`] errs.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        unwrap(self.try_forward(x))
    }

    /// Apply dropout in the current mode, or an error for a non-float input.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// use stategrad_nn::layers::Dropout;
    /// assert!(Dropout::new(0.5).try_forward(&Tensor::new([1i32])).is_err());
    /// ```
    pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
        if !x.dtype().is_float() {
            return Err(invalid(
                "Dropout",
                format!("expected a float input, got {}", x.dtype().name()),
            ));
        }
        let keep = 1.0 - self.rate;
        let mask = random::try_bernoulli(x.shape(), keep)?.cast(x.dtype());
        let dropped = x.try_mul(&mask)?.try_mul_scalar(1.0 / keep)?;
        Tensor::try_select(&self.training.value(), &dropped, x)
    }
}

impl_layer!(Dropout);
