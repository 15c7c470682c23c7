//! # stategrad-optim
//!
//! Optimizers whose moments and step count are [`State`]s: optax's `sgd`, `adam`, `adamw`,
//! `rmsprop` and `adagrad` (same update equations, hyper-parameter names and defaults), with
//! learning-rate [schedules](schedule) and gradient clipping.
//!
//! `opt = adam(1e-3).build(&params)?` makes one state per parameter and slot (zeros of the
//! parameter's shape and dtype: `mu`, `nu`, …) and a step-count state; `opt.step(&grads)` reads
//! the parameters and those states and writes them back with [`State::set_value`], in tensor
//! operations only. Eagerly it updates them at once; inside [`jit`](stategrad_core::jit()) the reads
//! and writes are the program's state inputs and outputs, so each replay updates them in place.
//! The learning rate is computed from the count *tensor*, so a jitted step with a decaying
//! schedule keeps decaying: it is not the rate of the traced step baked in as a constant.
//!
//! A jitted training step (gradient and update in one program):
//!
//! ```
//! use stategrad_core::{grad, jit, path, ParamState, Path, Result, State, StateMap, Tensor};
//! use stategrad_optim::{adam, warmup_cosine_decay, Optimizer};
//!
//! # fn main() -> Result<()> {
//! let w = ParamState::new(Tensor::new([0.0f64, 0.0]));
//! let b = ParamState::new(Tensor::scalar(0.0f64));
//! let params: StateMap = [(path!("w"), w.clone()), (path!("b"), b.clone())].into();
//! let opt = adam(warmup_cosine_decay(0.0, 0.3, 10, 300)).build(&params)?;
//!
//! // Fit y = 2 x0 - x1 + 0.5.
//! let x = Tensor::new([[1.0f64, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]]);
//! let y = Tensor::new([2.5f64, -0.5, 1.5, 5.5]);
//! let loss = |(x, y): (Tensor, Tensor)| {
//!     let pred = x.matmul(&w.value().reshape(&[-1, 1])).reshape(&[-1]) + b.value();
//!     (pred - y).square().mean()
//! };
//! let train_step = jit(|(x, y): (Tensor, Tensor)| -> Result<Tensor> {
//!     let (grads, l) = grad(loss).grad_states(params.clone()).return_value().call((x, y))?;
//!     opt.step(&grads)?;
//!     Ok(l)
//! });
//! for _ in 0..300 {
//!     train_step.call((x.clone(), y.clone()))?;
//! }
//! assert_eq!(train_step.trace_count(), 1); // traced once, replayed 299 times
//! assert_eq!(opt.count().value().item()?, 300.0);
//! let l = loss((x, y)).item()?;
//! assert!(l < 1e-3, "loss {l}");
//! assert_eq!(opt.states()[&path!("mu", "w")].shape(), vec![2]);
//! # Ok(())
//! # }
//! ```
//!
//! Build the optimizer outside any transform: states made inside a traced function are local
//! to that call.
//!
//! [`State`]: stategrad_core::State
//! [`State::set_value`]: stategrad_core::State::set_value

#![forbid(unsafe_code)]

mod builders;
mod optimizer;
pub mod schedule;

pub use builders::{adagrad, adam, adamw, rmsprop, sgd, Adagrad, Adam, RmsProp, Sgd};
pub use optimizer::{Optim, Optimizer};
pub use schedule::{
    constant, cosine_decay, exponential_decay, piecewise_constant, warmup_cosine_decay, Constant,
    CosineDecay, ExponentialDecay, PiecewiseConstant, Schedule, ScheduleFn, WarmupCosineDecay,
};
