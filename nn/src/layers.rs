//! Layers: structs of [`State`]s with a `forward`.
//!
//! Each layer derives [`Module`], holding its parameters as `ParamState`s, so
//! `model.states(ParamState)`, filters, `grad(..).grad_states(..)`, `jit` and `vmap` work on it
//! unchanged: `forward` is ordinary tensor code reading the states' values.
//!
//! Parameters are fields of type [`State`]: `ParamState` is a kind marker whose `new` returns a
//! `State` of kind `ParamState` (the marker itself holds no tensor, so it cannot be a field
//! type). Write `weight: State` and build it with `ParamState::new(..)`.
//!
//! Every layer has `forward(&self, x: &Tensor) -> Tensor` (panicking, with the error's message,
//! where `try_forward` errs; inside a transform the transform returns that as an error) and
//! `try_forward(&self, x: &Tensor) -> Result<Tensor>`, and implements [`Layer`], so layers can
//! be chained in a [`Sequential`].
//!
//! | layer | parameters (paths) | input → output |
//! |---|---|---|
//! | [`Linear`] | `weight [in, out]`, `bias [out]` | `[.., in] → [.., out]` |
//! | [`Mlp`] | `layers.i.weight`, `layers.i.bias` | `[.., sizes[0]] → [.., sizes[last]]` |
//! | [`Sequential`] | `layers.i.*` | chained |
//! | [`LayerNorm`] | `scale [d]`, `bias [d]` | `[.., d] → [.., d]` |
//! | [`RMSNorm`] | `scale [d]` | `[.., d] → [.., d]` |
//! | [`Dropout`] | `training` (a plain `State`, bool) | same shape |
//! | [`Embedding`] | `table [num, dim]` | int ids `[..] → [.., dim]` |
//! | [`Conv2d`] | `kernel [kh, kw, in, out]`, `bias [out]` | NHWC `[n, h, w, in] → [n, oh, ow, out]` |
//! | [`MaxPool2d`], [`AvgPool2d`] | none | NHWC `[n, h, w, c] → [n, oh, ow, c]` |
//! | [`Flatten`] | none | `[n, ..] → [n, prod(..)]` |
//!
//! ```
//! use stategrad_core::{grad, random, Module, ParamState, Tensor};
//! use stategrad_nn::activation::Activation;
//! use stategrad_nn::layers::Mlp;
//!
//! random::seed(0);
//! let mlp = Mlp::new(&[3, 8, 2], Activation::Relu);
//! let params = mlp.states(ParamState);
//! assert_eq!(params.len(), 4);
//! let x = Tensor::ones(&[5, 3]);
//! let g = grad(|x: Tensor| mlp.forward(&x).square().mean())
//!     .grad_states(params.clone())
//!     .call(x)
//!     .unwrap();
//! for (path, s) in &params {
//!     assert_eq!(g[path].shape(), s.value().shape());
//! }
//! ```

use stategrad_core::{Error, Module, Path, Result, State, Tensor};

mod conv;
mod dropout;
mod embedding;
mod linear;
mod norm;
mod sequential;

pub use conv::{AvgPool2d, Conv2d, Conv2dBuilder, Flatten, MaxPool2d, Padding};
pub use dropout::{mode_state, Dropout};
pub use embedding::{Embedding, EmbeddingBuilder};
pub use linear::{Linear, LinearBuilder};
pub use norm::{LayerNorm, LayerNormBuilder, RMSNorm, RMSNormBuilder};
pub use sequential::{Mlp, MlpBuilder, Sequential};

/// A layer: a [`Module`] with a forward pass, usable as `Box<dyn Layer>` in a [`Sequential`].
///
/// `Module` itself has generic methods, so it cannot be a trait object; a `dyn Layer` visits its
/// states through [`Layer::visit_layer_states`] instead, and `dyn Layer` implements `Module`
/// with it (so `Vec<Box<dyn Layer>>` is a `Module` too). Implement it for a type of your own by
/// forwarding to its `Module` impl:
///
/// ```
/// use stategrad_core::{Module, Path, Result, State, Tensor};
/// use stategrad_nn::layers::{Layer, Linear, Sequential};
///
/// #[derive(stategrad_derive::Module)]
/// #[module(crate = "stategrad_core")]
/// struct Double;
///
/// impl Layer for Double {
///     fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
///         x.try_mul_scalar(2.0)
///     }
///     fn visit_layer_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State)) {
///         self.visit_states(path, visitor)
///     }
/// }
///
/// let seq = Sequential::new().push(Double).push(Linear::new(2, 1));
/// assert_eq!(seq.forward(&Tensor::ones(&[4, 2])).shape(), &[4, 1]);
/// ```
pub trait Layer: Send + Sync {
    /// The forward pass, with a bad input as `Err`.
    fn try_forward(&self, x: &Tensor) -> Result<Tensor>;

    /// The forward pass; panics with the error's message where [`Layer::try_forward`] errs.
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        unwrap(self.try_forward(x))
    }

    /// Visit the layer's states, as [`Module::visit_states`] does.
    fn visit_layer_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State));
}

impl Module for dyn Layer {
    fn visit_states(&self, path: &mut Path, visitor: &mut dyn FnMut(&Path, &State)) {
        self.visit_layer_states(path, visitor)
    }
}

/// Implement [`Layer`] by forwarding to the type's inherent `try_forward` and its `Module`.
macro_rules! impl_layer {
    ($($t:ty),* $(,)?) => {$(
        impl $crate::layers::Layer for $t {
            fn try_forward(
                &self,
                x: &stategrad_core::Tensor,
            ) -> stategrad_core::Result<stategrad_core::Tensor> {
                <$t>::try_forward(self, x)
            }
            fn visit_layer_states(
                &self,
                path: &mut stategrad_core::Path,
                visitor: &mut dyn FnMut(&stategrad_core::Path, &stategrad_core::State),
            ) {
                stategrad_core::Module::visit_states(self, path, visitor)
            }
        }
    )*};
}
pub(crate) use impl_layer;

impl_layer!(crate::activation::Activation);

/// Unwrap a layer's result, panicking with the error's message at the caller's line.
#[track_caller]
pub(crate) fn unwrap(r: Result<Tensor>) -> Tensor {
    match r {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// An [`Error::InvalidArgument`] of `op`.
pub(crate) fn invalid(op: &'static str, msg: impl Into<String>) -> Error {
    Error::InvalidArgument {
        op,
        msg: msg.into(),
    }
}
