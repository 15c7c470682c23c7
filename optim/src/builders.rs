//! The optimizer builders: optax's aliases with their hyper-parameter names and defaults.
//!
//! Every builder takes the learning rate (a number or a [`Schedule`]), has
//! `.clip_by_global_norm(max_norm)` (optax's transform of that name, applied to the gradients
//! first, as in `optax.chain(optax.clip_by_global_norm(m), opt)`), and
//! `.build(&params)`, which checks the hyper-parameters (a typed error for NaN or infinite ones)
//! and makes the optimizer's states. In the equations `g` is the gradient, `p` the parameter,
//! `t` the number of steps taken before this one and `lr = schedule(t)`.

use crate::optimizer::{Optim, Rule};
use crate::schedule::{finite, Schedule};
use stategrad_core::{Error, Filter, Path, Result, StateMap};
use std::collections::BTreeSet;

#[derive(Clone, Debug)]
struct Common {
    lr: Schedule,
    clip: Option<f64>,
}

impl Common {
    fn new(lr: impl Into<Schedule>) -> Common {
        Common {
            lr: lr.into(),
            clip: None,
        }
    }

    fn validate(&self) -> Result<()> {
        self.lr.validate()?;
        if let Some(m) = self.clip {
            finite("clip_by_global_norm", m)?;
            if m <= 0.0 {
                return Err(Error::InvalidOption {
                    option: "clip_by_global_norm",
                    msg: format!("max_norm must be positive, got {m}"),
                });
            }
        }
        Ok(())
    }
}

macro_rules! common_options {
    ($($t:ty),*) => {$(
        impl $t {
            /// optax `clip_by_global_norm(max_norm)` on the gradients before the update: when
            /// `norm = sqrt(sum of every g^2) >= max_norm`, each `g` becomes
            /// `(g / norm) * max_norm`.
            pub fn clip_by_global_norm(mut self, max_norm: f64) -> Self {
                self.common.clip = Some(max_norm);
                self
            }

            /// Replace the learning rate (a number or a [`Schedule`]).
            pub fn learning_rate(mut self, lr: impl Into<Schedule>) -> Self {
                self.common.lr = lr.into();
                self
            }
        }
    )*};
}
common_options!(Sgd, Adam, RmsProp, Adagrad);

// ------------------------------------------------------------------------------ sgd

/// optax `sgd(learning_rate, momentum=None, nesterov=False)`.
///
/// Without momentum: `p <- p - lr * g`. With momentum `m` (optax `trace(decay=m, nesterov)`):
/// `trace <- g + m * trace` (starting at 0), `u = g + m * trace` if `nesterov` else `trace`,
/// `p <- p - lr * u`. `nesterov` without momentum is ignored, as in optax.
#[derive(Clone, Debug)]
pub struct Sgd {
    common: Common,
    momentum: Option<f64>,
    nesterov: bool,
}

/// optax `sgd(learning_rate)`: see [`Sgd`].
pub fn sgd(learning_rate: impl Into<Schedule>) -> Sgd {
    Sgd {
        common: Common::new(learning_rate),
        momentum: None,
        nesterov: false,
    }
}

impl Sgd {
    /// The momentum decay `m` (a `trace` slot per parameter).
    pub fn momentum(mut self, m: f64) -> Self {
        self.momentum = Some(m);
        self
    }

    /// Nesterov momentum: `u = g + m * trace`.
    pub fn nesterov(mut self, on: bool) -> Self {
        self.nesterov = on;
        self
    }

    /// Check the hyper-parameters and make the states for `params`.
    pub fn build(&self, params: &StateMap) -> Result<Optim> {
        self.common.validate()?;
        if let Some(m) = self.momentum {
            finite("momentum", m)?;
        }
        let rule = Rule::Sgd {
            momentum: self.momentum,
            nesterov: self.nesterov,
        };
        let c = &self.common;
        Ok(Optim::new("sgd", params, rule, 0.0, c.lr.clone(), c.clip))
    }
}

// ------------------------------------------------------------------------------ adam(w)

/// optax `adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0)` and
/// `adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, weight_decay=1e-4,
/// mask=None)`.
///
/// optax `scale_by_adam`: `mu <- (1 - b1) * g + b1 * mu`, `nu <- (1 - b2) * g^2 + b2 * nu`
/// (both starting at 0), `mu_hat = mu / (1 - b1^(t+1))`, `nu_hat = nu / (1 - b2^(t+1))`,
/// `u = mu_hat / (sqrt(nu_hat + eps_root) + eps)`; with `nesterov` (optax's
/// `nesterov=True`, i.e. `nadam` / `nadamw`) `mu_hat = b1 * mu / (1 - b1^(t+2)) +
/// (1 - b1) * g / (1 - b1^(t+1))`; adamw adds optax `add_decayed_weights`:
/// `u <- u + weight_decay * p` for the parameters the mask selects (all without a mask); then
/// `p <- p - lr * u`.
#[derive(Clone, Debug)]
pub struct Adam {
    name: &'static str,
    common: Common,
    b1: f64,
    b2: f64,
    eps: f64,
    eps_root: f64,
    nesterov: bool,
    weight_decay: f64,
    mask: Option<Filter>,
}

/// optax `adam(learning_rate)`: see [`Adam`].
pub fn adam(learning_rate: impl Into<Schedule>) -> Adam {
    Adam {
        name: "adam",
        common: Common::new(learning_rate),
        b1: 0.9,
        b2: 0.999,
        eps: 1e-8,
        eps_root: 0.0,
        nesterov: false,
        weight_decay: 0.0,
        mask: None,
    }
}

/// optax `adamw(learning_rate)` (decoupled weight decay, `weight_decay = 1e-4`): see [`Adam`].
pub fn adamw(learning_rate: impl Into<Schedule>) -> Adam {
    Adam {
        name: "adamw",
        weight_decay: 1e-4,
        ..adam(learning_rate)
    }
}

impl Adam {
    /// The decay of the first moment (default 0.9).
    pub fn b1(mut self, b1: f64) -> Self {
        self.b1 = b1;
        self
    }
    /// The decay of the second moment (default 0.999).
    pub fn b2(mut self, b2: f64) -> Self {
        self.b2 = b2;
        self
    }
    /// Added to the denominator outside the square root (default 1e-8).
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// Added to the second moment inside the square root (default 0).
    pub fn eps_root(mut self, eps_root: f64) -> Self {
        self.eps_root = eps_root;
        self
    }
    /// Nesterov momentum (optax's `nesterov=True`, the `nadam` / `nadamw` aliases).
    pub fn nesterov(mut self, on: bool) -> Self {
        self.nesterov = on;
        self
    }
    /// The decoupled weight decay (adamw's default 1e-4; setting it on `adam` makes it adamw).
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        if self.name == "adam" && weight_decay != 0.0 {
            self.name = "adamw";
        }
        self.weight_decay = weight_decay;
        self
    }
    /// Decay only the parameters this filter selects (optax's `mask`), e.g.
    /// `Filter::not(Filter::path_contains("bias"))`. Evaluated once, at build.
    pub fn mask(mut self, mask: impl Into<Filter>) -> Self {
        self.mask = Some(mask.into());
        self
    }
    /// Decay only the parameters whose path satisfies `f` (optax's callable `mask`).
    pub fn mask_fn(mut self, f: impl Fn(&Path) -> bool + Send + Sync + 'static) -> Self {
        self.mask = Some(Filter::pred(move |path, _| f(path)));
        self
    }

    /// Check the hyper-parameters and make the states for `params`.
    pub fn build(&self, params: &StateMap) -> Result<Optim> {
        self.common.validate()?;
        finite("b1", self.b1)?;
        finite("b2", self.b2)?;
        finite("eps", self.eps)?;
        finite("eps_root", self.eps_root)?;
        finite("weight_decay", self.weight_decay)?;
        let decayed: BTreeSet<Path> = params
            .iter()
            .filter(|(path, s)| match &self.mask {
                None => true,
                Some(m) => m.matches(path, s),
            })
            .map(|(path, _)| path.clone())
            .collect();
        let rule = Rule::Adam {
            b1: self.b1,
            b2: self.b2,
            eps: self.eps,
            eps_root: self.eps_root,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            decayed,
        };
        let c = &self.common;
        Ok(Optim::new(
            self.name,
            params,
            rule,
            0.0,
            c.lr.clone(),
            c.clip,
        ))
    }
}

// ------------------------------------------------------------------------------ rmsprop

/// optax `rmsprop(learning_rate, decay=0.9, eps=1e-8, initial_scale=0.0, centered=False,
/// momentum=None, nesterov=False)`.
///
/// optax `scale_by_rms`: `nu <- (1 - decay) * g^2 + decay * nu` (starting at `initial_scale`),
/// `u = g / sqrt(nu + eps)`; centered (`scale_by_stddev`): also `mu <- (1 - decay) * g +
/// decay * mu` (from 0) and `u = g / sqrt(nu - mu^2 + eps)`. Then `v = -lr * u`, and with
/// momentum `m` optax's `trace` comes *after* the learning rate: `trace <- v + m * trace`,
/// `v = v + m * trace` if `nesterov` else `trace`; `p <- p + v`.
#[derive(Clone, Debug)]
pub struct RmsProp {
    common: Common,
    decay: f64,
    eps: f64,
    initial_scale: f64,
    centered: bool,
    momentum: Option<f64>,
    nesterov: bool,
}

/// optax `rmsprop(learning_rate)`: see [`RmsProp`].
pub fn rmsprop(learning_rate: impl Into<Schedule>) -> RmsProp {
    RmsProp {
        common: Common::new(learning_rate),
        decay: 0.9,
        eps: 1e-8,
        initial_scale: 0.0,
        centered: false,
        momentum: None,
        nesterov: false,
    }
}

impl RmsProp {
    /// The decay of the moving averages (default 0.9).
    pub fn decay(mut self, decay: f64) -> Self {
        self.decay = decay;
        self
    }
    /// Added to the second moment inside the square root (default 1e-8).
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// The second moment's initial value (default 0).
    pub fn initial_scale(mut self, v: f64) -> Self {
        self.initial_scale = v;
        self
    }
    /// Divide by the standard deviation instead of the root mean square (a `mu` slot).
    pub fn centered(mut self, on: bool) -> Self {
        self.centered = on;
        self
    }
    /// Momentum on the scaled updates (a `trace` slot).
    pub fn momentum(mut self, m: f64) -> Self {
        self.momentum = Some(m);
        self
    }
    /// Nesterov momentum (ignored without momentum).
    pub fn nesterov(mut self, on: bool) -> Self {
        self.nesterov = on;
        self
    }

    /// Check the hyper-parameters and make the states for `params`.
    pub fn build(&self, params: &StateMap) -> Result<Optim> {
        self.common.validate()?;
        finite("decay", self.decay)?;
        finite("eps", self.eps)?;
        finite("initial_scale", self.initial_scale)?;
        if let Some(m) = self.momentum {
            finite("momentum", m)?;
        }
        let rule = Rule::RmsProp {
            decay: self.decay,
            eps: self.eps,
            centered: self.centered,
            momentum: self.momentum,
            nesterov: self.nesterov,
        };
        let c = &self.common;
        let init = self.initial_scale;
        Ok(Optim::new(
            "rmsprop",
            params,
            rule,
            init,
            c.lr.clone(),
            c.clip,
        ))
    }
}

// ------------------------------------------------------------------------------ adagrad

/// optax `adagrad(learning_rate, initial_accumulator_value=0.1, eps=1e-7)`.
///
/// optax `scale_by_rss`: `sum_of_squares <- g^2 + sum_of_squares` (starting at
/// `initial_accumulator_value`), `u = g / sqrt(sum_of_squares + eps)` where
/// `sum_of_squares > 0`, else 0; `p <- p - lr * u`.
#[derive(Clone, Debug)]
pub struct Adagrad {
    common: Common,
    initial_accumulator_value: f64,
    eps: f64,
}

/// optax `adagrad(learning_rate)`: see [`Adagrad`].
pub fn adagrad(learning_rate: impl Into<Schedule>) -> Adagrad {
    Adagrad {
        common: Common::new(learning_rate),
        initial_accumulator_value: 0.1,
        eps: 1e-7,
    }
}

impl Adagrad {
    /// The accumulator's initial value (default 0.1; must be `>= 0`).
    pub fn initial_accumulator_value(mut self, v: f64) -> Self {
        self.initial_accumulator_value = v;
        self
    }
    /// Added inside the square root (default 1e-7).
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Check the hyper-parameters and make the states for `params`.
    pub fn build(&self, params: &StateMap) -> Result<Optim> {
        self.common.validate()?;
        finite("initial_accumulator_value", self.initial_accumulator_value)?;
        finite("eps", self.eps)?;
        if self.initial_accumulator_value < 0.0 {
            return Err(Error::InvalidOption {
                option: "initial_accumulator_value",
                msg: format!("must be >= 0, got {}", self.initial_accumulator_value),
            });
        }
        let rule = Rule::Adagrad { eps: self.eps };
        let c = &self.common;
        let init = self.initial_accumulator_value;
        Ok(Optim::new(
            "adagrad",
            params,
            rule,
            init,
            c.lr.clone(),
            c.clip,
        ))
    }
}
