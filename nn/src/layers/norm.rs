//! Normalisation over the last axis.

use super::{impl_layer, invalid, unwrap};
use crate::init::Initializer;
use stategrad_core::{DType, ParamState, Result, State, Tensor};

fn check_last(op: &'static str, x: &Tensor, dim: usize) -> Result<()> {
    if x.shape().last() != Some(&dim) {
        return Err(invalid(
            op,
            format!(
                "expected an input whose last axis is {dim}, got shape {}",
                x.shape_display()
            ),
        ));
    }
    if !x.dtype().is_float() {
        return Err(invalid(
            op,
            format!("expected a float input, got {}", x.dtype().name()),
        ));
    }
    Ok(())
}

/// Layer normalisation over the last axis: `(x - mean) / sqrt(var + eps) * scale + bias`, with
/// the biased variance (as PyTorch and flax). `scale: [dim]` starts at ones, `bias: [dim]` at
/// zeros; `eps` defaults to `1e-5` (PyTorch; flax uses `1e-6`).
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::layers::LayerNorm;
/// let ln = LayerNorm::builder(2).eps(0.0).build();
/// let y = ln.forward(&Tensor::new([[1.0f32, 3.0]]));
/// assert_eq!(y.to_vec::<f32>(), vec![-1.0, 1.0]);
/// ```
#[derive(stategrad_derive::Module)]
#[module(crate = "stategrad_core")]
pub struct LayerNorm {
    /// `[dim]`, a `ParamState`; `None` without scale.
    pub scale: Option<State>,
    /// `[dim]`, a `ParamState`; `None` without bias.
    pub bias: Option<State>,
    #[module(skip)]
    dim: usize,
    #[module(skip)]
    eps: f64,
}

/// Options of a [`LayerNorm`] (from [`LayerNorm::builder`]).
///
/// ```
/// use stategrad_core::{DType, Module};
/// use stategrad_nn::layers::LayerNorm;
/// let ln = LayerNorm::builder(8).eps(1e-6).bias(false).dtype(DType::F64).build();
/// assert_eq!(ln.all_states().len(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct LayerNormBuilder {
    dim: usize,
    eps: f64,
    scale: bool,
    bias: bool,
    dtype: DType,
}

impl LayerNormBuilder {
    /// The variance's epsilon (default `1e-5`).
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// With or without the learned scale (default with).
    pub fn scale(mut self, on: bool) -> Self {
        self.scale = on;
        self
    }
    /// With or without the learned bias (default with).
    pub fn bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }
    /// The parameters' dtype (default f32).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
    /// Build the layer; panics where [`LayerNormBuilder::try_build`] errs.
    #[track_caller]
    pub fn build(&self) -> LayerNorm {
        match self.try_build() {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        }
    }
    /// Build the layer; errs for a non-float dtype or a negative `eps`.
    ///
    /// ```
    /// use stategrad_nn::layers::LayerNorm;
    /// assert!(LayerNorm::builder(2).eps(-1.0).try_build().is_err());
    /// ```
    pub fn try_build(&self) -> Result<LayerNorm> {
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return Err(invalid(
                "LayerNorm",
                format!("eps must be finite and >= 0, got {}", self.eps),
            ));
        }
        let make = |on: bool, init: Initializer| -> Result<Option<State>> {
            Ok(if on {
                Some(ParamState::new(
                    init.try_init_dtype(&[self.dim], self.dtype)?,
                ))
            } else {
                None
            })
        };
        Ok(LayerNorm {
            scale: make(self.scale, Initializer::Ones)?,
            bias: make(self.bias, Initializer::Zeros)?,
            dim: self.dim,
            eps: self.eps,
        })
    }
}

impl LayerNorm {
    /// A layer normalising over a last axis of size `dim`, with the default options.
    #[track_caller]
    pub fn new(dim: usize) -> LayerNorm {
        LayerNorm::builder(dim).build()
    }

    /// The options, to change before [`LayerNormBuilder::build`].
    pub fn builder(dim: usize) -> LayerNormBuilder {
        LayerNormBuilder {
            dim,
            eps: 1e-5,
            scale: true,
            bias: true,
            dtype: DType::F32,
        }
    }

    /// The epsilon.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Normalise; panics where [`LayerNorm::try_forward`] errs.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        unwrap(self.try_forward(x))
    }

    /// Normalise, or an error when `x`'s last axis is not `dim` or `x` is not float.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// use stategrad_nn::layers::LayerNorm;
    /// assert!(LayerNorm::new(3).try_forward(&Tensor::ones(&[2, 4])).is_err());
    /// ```
    pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
        check_last("LayerNorm", x, self.dim)?;
        let mean = x.try_mean_along(&[-1], true)?;
        let centered = x.try_sub(&mean)?;
        let var = centered.try_square()?.try_mean_along(&[-1], true)?;
        let inv = var.try_add_scalar(self.eps)?.try_sqrt()?.try_recip()?;
        let mut y = centered.try_mul(&inv)?;
        if let Some(s) = &self.scale {
            y = y.try_mul(&s.value())?;
        }
        if let Some(b) = &self.bias {
            y = y.try_add(&b.value())?;
        }
        Ok(y)
    }
}

/// Root-mean-square normalisation over the last axis: `x / sqrt(mean(x²) + eps) * scale`.
/// `scale: [dim]` starts at ones; `eps` defaults to `1e-6`.
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::layers::RMSNorm;
/// let n = RMSNorm::builder(2).eps(0.0).build();
/// let y = n.forward(&Tensor::new([[3.0f64, 4.0]]));
/// let r = (12.5f64).sqrt();
/// assert!(y.allclose(&Tensor::new([[3.0 / r, 4.0 / r]]), 1e-12, 0.0));
/// ```
#[derive(stategrad_derive::Module)]
#[module(crate = "stategrad_core")]
pub struct RMSNorm {
    /// `[dim]`, a `ParamState`; `None` without scale.
    pub scale: Option<State>,
    #[module(skip)]
    dim: usize,
    #[module(skip)]
    eps: f64,
}

/// Options of an [`RMSNorm`] (from [`RMSNorm::builder`]).
///
/// ```
/// use stategrad_core::{DType, Module};
/// use stategrad_nn::layers::RMSNorm;
/// let n = RMSNorm::builder(4).scale(false).build();
/// assert!(n.all_states().is_empty());
/// ```
#[derive(Clone, Debug)]
pub struct RMSNormBuilder {
    dim: usize,
    eps: f64,
    scale: bool,
    dtype: DType,
}

impl RMSNormBuilder {
    /// The epsilon (default `1e-6`).
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// With or without the learned scale (default with).
    pub fn scale(mut self, on: bool) -> Self {
        self.scale = on;
        self
    }
    /// The parameters' dtype (default f32).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
    /// Build the layer; panics where [`RMSNormBuilder::try_build`] errs.
    #[track_caller]
    pub fn build(&self) -> RMSNorm {
        match self.try_build() {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        }
    }
    /// Build the layer; errs for a non-float dtype or a negative `eps`.
    ///
    /// ```
    /// use stategrad_nn::layers::RMSNorm;
    /// assert!(RMSNorm::builder(2).eps(f64::NAN).try_build().is_err());
    /// ```
    pub fn try_build(&self) -> Result<RMSNorm> {
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return Err(invalid(
                "RMSNorm",
                format!("eps must be finite and >= 0, got {}", self.eps),
            ));
        }
        let scale = if self.scale {
            Some(ParamState::new(
                Initializer::Ones.try_init_dtype(&[self.dim], self.dtype)?,
            ))
        } else {
            None
        };
        Ok(RMSNorm {
            scale,
            dim: self.dim,
            eps: self.eps,
        })
    }
}

impl RMSNorm {
    /// A layer normalising over a last axis of size `dim`, with the default options.
    #[track_caller]
    pub fn new(dim: usize) -> RMSNorm {
        RMSNorm::builder(dim).build()
    }

    /// The options, to change before [`RMSNormBuilder::build`].
    pub fn builder(dim: usize) -> RMSNormBuilder {
        RMSNormBuilder {
            dim,
            eps: 1e-6,
            scale: true,
            dtype: DType::F32,
        }
    }

    /// The epsilon.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Normalise; panics where [`RMSNorm::try_forward`] errs.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        unwrap(self.try_forward(x))
    }

    /// Normalise, or an error when `x`'s last axis is not `dim` or `x` is not float.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// use stategrad_nn::layers::RMSNorm;
    /// assert!(RMSNorm::new(3).try_forward(&Tensor::ones(&[3, 2])).is_err());
    /// ```
    pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
        check_last("RMSNorm", x, self.dim)?;
        let ms = x.try_square()?.try_mean_along(&[-1], true)?;
        let inv = ms.try_add_scalar(self.eps)?.try_sqrt()?.try_recip()?;
        let y = x.try_mul(&inv)?;
        match &self.scale {
            Some(s) => y.try_mul(&s.value()),
            None => Ok(y),
        }
    }
}

impl_layer!(LayerNorm, RMSNorm);
