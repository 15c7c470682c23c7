//! Chains of layers.

use super::{impl_layer, invalid, unwrap, Layer, Linear};
use crate::activation::Activation;
use crate::init::Initializer;
use stategrad_core::{DType, Result, Tensor};

/// Layers applied in order. Its states are visited under `('layers', i, ..)`: the first
/// layer's weight is at `('layers', 0, 'weight')`.
///
/// ```
/// use stategrad_core::{Module, ParamState, Tensor};
/// use stategrad_nn::activation::Activation;
/// use stategrad_nn::layers::{Linear, Sequential};
/// let seq = Sequential::new()
///     .push(Linear::new(4, 8))
///     .push(Activation::Gelu)
///     .push(Linear::new(8, 2));
/// assert_eq!(seq.len(), 3);
/// let keys: Vec<String> = seq.states(ParamState).keys().map(|p| p.to_string()).collect();
/// assert_eq!(keys[0], "('layers', 0, 'bias')");
/// assert_eq!(keys[3], "('layers', 2, 'weight')");
/// assert_eq!(seq.forward(&Tensor::ones(&[3, 4])).shape(), &[3, 2]);
/// ```
#[derive(stategrad_derive::Module, Default)]
#[module(crate = "stategrad_core")]
pub struct Sequential {
    /// The layers, in order.
    pub layers: Vec<Box<dyn Layer>>,
}

impl Sequential {
    /// An empty chain (the identity).
    pub fn new() -> Sequential {
        Sequential { layers: Vec::new() }
    }

    /// The chain with `layer` appended.
    pub fn push(mut self, layer: impl Layer + 'static) -> Sequential {
        self.layers.push(Box::new(layer));
        self
    }

    /// The number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True without layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Apply the layers in order; panics where [`Sequential::try_forward`] errs.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        unwrap(self.try_forward(x))
    }

    /// Apply the layers in order, or the first layer's error.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// use stategrad_nn::layers::{Linear, Sequential};
    /// let seq = Sequential::new().push(Linear::new(2, 3)).push(Linear::new(2, 1));
    /// assert!(seq.try_forward(&Tensor::ones(&[2])).is_err());
    /// ```
    pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.try_forward(&h)?;
        }
        Ok(h)
    }
}

impl From<Vec<Box<dyn Layer>>> for Sequential {
    fn from(layers: Vec<Box<dyn Layer>>) -> Sequential {
        Sequential { layers }
    }
}

/// A multi-layer perceptron: [`Linear`] layers of the given sizes with the activation between
/// them (not after the last). `Mlp::new(&[3, 16, 16, 1], Activation::Relu)` has three layers;
/// their states are at `('layers', i, 'weight')` and `('layers', i, 'bias')`.
///
/// ```
/// use stategrad_core::{Module, ParamState, Tensor};
/// use stategrad_nn::{activation::Activation, layers::Mlp};
/// let mlp = Mlp::new(&[3, 16, 1], Activation::Tanh);
/// assert_eq!(mlp.layers.len(), 2);
/// assert_eq!(mlp.states(ParamState).len(), 4);
/// assert_eq!(mlp.forward(&Tensor::ones(&[5, 3])).shape(), &[5, 1]);
/// ```
#[derive(stategrad_derive::Module)]
#[module(crate = "stategrad_core")]
pub struct Mlp {
    /// The dense layers.
    pub layers: Vec<Linear>,
    /// The activation between layers.
    #[module(skip)]
    pub activation: Activation,
}

/// Options of an [`Mlp`] (from [`Mlp::builder`]).
///
/// ```
/// use stategrad_core::DType;
/// use stategrad_nn::{activation::Activation, init::Initializer, layers::Mlp};
/// let mlp = Mlp::builder(&[2, 4, 1])
///     .activation(Activation::Silu)
///     .dtype(DType::F64)
///     .weight_init(Initializer::HeNormal)
///     .bias(false)
///     .build();
/// assert!(mlp.layers.iter().all(|l| l.bias.is_none()));
/// ```
#[derive(Clone, Debug)]
pub struct MlpBuilder {
    sizes: Vec<usize>,
    activation: Activation,
    linear: Vec<super::LinearBuilder>,
}

impl MlpBuilder {
    fn each(mut self, f: impl Fn(super::LinearBuilder) -> super::LinearBuilder) -> Self {
        self.linear = self.linear.into_iter().map(f).collect();
        self
    }
    /// The activation between layers (default [`Activation::Relu`]).
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }
    /// With or without biases (default with).
    pub fn bias(self, on: bool) -> Self {
        self.each(|l| l.bias(on))
    }
    /// The parameters' dtype (default f32).
    pub fn dtype(self, dtype: DType) -> Self {
        self.each(|l| l.dtype(dtype))
    }
    /// The weights' initialiser (default [`Initializer::LecunNormal`]).
    pub fn weight_init(self, init: Initializer) -> Self {
        self.each(|l| l.weight_init(init))
    }
    /// The biases' initialiser (default [`Initializer::Zeros`]).
    pub fn bias_init(self, init: Initializer) -> Self {
        self.each(|l| l.bias_init(init))
    }
    /// Build the layers; panics where [`MlpBuilder::try_build`] errs.
    #[track_caller]
    pub fn build(&self) -> Mlp {
        match self.try_build() {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }
    /// Build the layers; errs for fewer than two sizes or a bad option.
    ///
    /// ```
    /// use stategrad_nn::layers::Mlp;
    /// assert!(Mlp::builder(&[3]).try_build().is_err());
    /// ```
    pub fn try_build(&self) -> Result<Mlp> {
        if self.sizes.len() < 2 {
            return Err(invalid(
                "Mlp",
                format!(
                    "needs at least an input and an output size, got {:?}",
                    self.sizes
                ),
            ));
        }
        Ok(Mlp {
            layers: self
                .linear
                .iter()
                .map(|l| l.try_build())
                .collect::<Result<_>>()?,
            activation: self.activation,
        })
    }
}

impl Mlp {
    /// Dense layers of `sizes` (input, hidden..., output) with `activation` between them and
    /// the default [`Linear`] options.
    #[track_caller]
    pub fn new(sizes: &[usize], activation: Activation) -> Mlp {
        Mlp::builder(sizes).activation(activation).build()
    }

    /// The options, to change before [`MlpBuilder::build`].
    pub fn builder(sizes: &[usize]) -> MlpBuilder {
        MlpBuilder {
            sizes: sizes.to_vec(),
            activation: Activation::Relu,
            linear: sizes
                .windows(2)
                .map(|w| Linear::builder(w[0], w[1]))
                .collect(),
        }
    }

    /// Apply the layers; panics where [`Mlp::try_forward`] errs.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        unwrap(self.try_forward(x))
    }

    /// Apply the layers, or the first layer's error.
    pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.try_forward(&h)?;
            if i + 1 < self.layers.len() {
                h = self.activation.try_forward(&h)?;
            }
        }
        Ok(h)
    }
}

impl_layer!(Sequential, Mlp);
