//! # stategrad
//!
//! State-aware automatic differentiation on a multi-threaded SIMD CPU backend: BrainState's
//! `brainstate.transform` in Rust. Differentiate w.r.t. function arguments (`argnums`) and w.r.t.
//! [`State`] objects (`grad_states`) at once, with `has_aux` and `return_value`, and get results
//! whose *types* follow the reference's return table.
//!
//! ```
//! use stategrad::prelude::*;
//!
//! #[derive(Module)]
//! struct LinearRegressor { weight: State, bias: State }
//!
//! impl LinearRegressor {
//!     fn new(n_in: usize) -> Self {
//!         LinearRegressor {
//!             weight: ParamState::new(Tensor::zeros(&[n_in, 1])),
//!             bias: ParamState::new(Tensor::zeros(&[1])),
//!         }
//!     }
//!     fn forward(&self, x: &Tensor) -> Tensor {
//!         x.matmul(&self.weight.value()) + self.bias.value()
//!     }
//! }
//!
//! let model = LinearRegressor::new(1);
//! let xs = Tensor::linspace(-1.0, 1.0, 5).reshape(&[-1, 1]);
//! let y_true = 3.0 * &xs + 1.0;
//! let mse = |(x, target): (Tensor, Tensor)| (model.forward(&x) - target).square().mean();
//!
//! let (grads, loss) = grad(mse)
//!     .grad_states(model.states(ParamState))
//!     .return_value()
//!     .call((xs, y_true))
//!     .unwrap();
//! assert_eq!(format!("{loss:.4}"), "5.5000");
//! assert_eq!(grads[&path!("bias")].to_string(), "[-2.]");
//! assert_eq!(grads[&path!("weight")].to_string(), "[[-3.]]");
//! ```

// Unsafe code lives only in `stategrad-simd` and `stategrad-exec`, where each block states
// its proof.
#![forbid(unsafe_code)]

pub use stategrad_core::*;
pub use stategrad_derive::Module;

/// The SIMD kernels (`wide`) and GEMM (`matrixmultiply`) the tensors run on.
pub use stategrad_simd as simd;

/// Execution of compiled programs: arena programs, fused passes, generated code and its
/// tuning.
pub use stategrad_exec as exec;

/// Gradient processors, processed-gradient plugins and the plugin registry.
pub use stategrad_plugins as plugins;

/// Optimizers whose moments and step count are `State`s (optax's `sgd`, `adam`, `adamw`,
/// `rmsprop`, `adagrad`), learning-rate schedules and gradient clipping; a jitted step updates
/// them in place.
pub use stategrad_optim as optim;

/// The training toolkit: layers, initialisers, losses, metrics, safetensors checkpoints and
/// seeded mini-batching.
pub use stategrad_nn as nn;

/// Data-parallel training over MPI (the `distributed` feature).
#[cfg(feature = "distributed")]
pub use stategrad_distributed as distributed;

/// Everything a training script needs, in one import.
pub mod prelude {
    pub use stategrad_core::{
        custom_jvp, custom_vjp, grad, hessian, jacfwd, jacobian, jacrev, jit, jvp, one_hot, path,
        s, treefy_states, vector_grad, vjp, vmap, where_, AnyState, BatchState, CustomFn, DType,
        DelayState, Error, Filter, GradientTransform, HiddenState, KeepDims, LongTermState, Module,
        NewAxis, ParamState, Params, Path, PathKey, RandomState, Result, ShortTermState, SliceElem,
        State, StateFinder, StateKey, StateKind, StateMap, Static, Tensor, TensorTree,
        TransformPlugin, Usage,
    };
    pub use stategrad_derive::Module;
    pub use stategrad_optim::Optimizer;
}

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
