//! The dense layer.

use super::{impl_layer, invalid, unwrap};
use crate::init::Initializer;
use stategrad_core::{DType, ParamState, Result, State, Tensor};

/// A dense layer: `x @ weight + bias`, with `weight: [in, out]` and `bias: [out]` (flax's
/// layout); `x` is `[.., in]` with any leading batch dims (or `[in]`), the result `[.., out]`.
///
/// Defaults: LeCun-normal weight (`N(0, 1/in)`, as flax), zero bias, f32. Use
/// [`Linear::builder`] to change them.
///
/// ```
/// use stategrad_core::{Module, ParamState, Tensor};
/// use stategrad_nn::layers::Linear;
/// let l = Linear::new(2, 3);
/// l.weight.set_value(Tensor::new([[1.0f32, 0.0, 2.0], [0.0, 1.0, 3.0]]));
/// let y = l.forward(&Tensor::new([[1.0f32, 10.0]]));
/// assert_eq!(y.to_vec::<f32>(), vec![1.0, 10.0, 32.0]);
/// let keys: Vec<String> = l.states(ParamState).keys().map(|p| p.to_string()).collect();
/// assert_eq!(keys, ["('bias',)", "('weight',)"]);
/// ```
#[derive(stategrad_derive::Module)]
#[module(crate = "stategrad_core")]
pub struct Linear {
    /// `[in, out]`, a `ParamState`.
    pub weight: State,
    /// `[out]`, a `ParamState`; `None` without bias.
    pub bias: Option<State>,
    #[module(skip)]
    in_features: usize,
    #[module(skip)]
    out_features: usize,
}

/// Options of a [`Linear`] (from [`Linear::builder`]).
///
/// ```
/// use stategrad_core::DType;
/// use stategrad_nn::{init::Initializer, layers::Linear};
/// let l = Linear::builder(4, 2)
///     .bias(false)
///     .dtype(DType::F64)
///     .weight_init(Initializer::XavierUniform)
///     .build();
/// assert!(l.bias.is_none());
/// assert_eq!(l.weight.value().dtype(), DType::F64);
/// ```
#[derive(Clone, Debug)]
pub struct LinearBuilder {
    in_features: usize,
    out_features: usize,
    bias: bool,
    dtype: DType,
    weight_init: Initializer,
    bias_init: Initializer,
}

impl LinearBuilder {
    /// With or without bias (default with).
    pub fn bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }
    /// The parameters' dtype (default f32).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
    /// The weight's initialiser (default [`Initializer::LecunNormal`]).
    pub fn weight_init(mut self, init: Initializer) -> Self {
        self.weight_init = init;
        self
    }
    /// The bias's initialiser (default [`Initializer::Zeros`]).
    pub fn bias_init(mut self, init: Initializer) -> Self {
        self.bias_init = init;
        self
    }
    /// Build the layer, drawing its parameters from the global random state; panics where
    /// [`LinearBuilder::try_build`] errs.
    #[track_caller]
    pub fn build(&self) -> Linear {
        match self.try_build() {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        }
    }
    /// Build the layer; errs for a non-float dtype or a bad initialiser.
    ///
    /// ```
    /// use stategrad_core::DType;
    /// use stategrad_nn::layers::Linear;
    /// assert!(Linear::builder(2, 2).dtype(DType::I32).try_build().is_err());
    /// ```
    pub fn try_build(&self) -> Result<Linear> {
        let weight = self
            .weight_init
            .try_init_dtype(&[self.in_features, self.out_features], self.dtype)?;
        let bias = if self.bias {
            Some(ParamState::new(
                self.bias_init
                    .try_init_dtype(&[self.out_features], self.dtype)?,
            ))
        } else {
            None
        };
        Ok(Linear {
            weight: ParamState::new(weight),
            bias,
            in_features: self.in_features,
            out_features: self.out_features,
        })
    }
}

impl Linear {
    /// A layer from `in_features` to `out_features` with the default options.
    #[track_caller]
    pub fn new(in_features: usize, out_features: usize) -> Linear {
        Linear::builder(in_features, out_features).build()
    }

    /// The options, to change before [`LinearBuilder::build`].
    pub fn builder(in_features: usize, out_features: usize) -> LinearBuilder {
        LinearBuilder {
            in_features,
            out_features,
            bias: true,
            dtype: DType::F32,
            weight_init: Initializer::LecunNormal,
            bias_init: Initializer::Zeros,
        }
    }

    /// The input size.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// The output size.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// `x @ weight + bias`; panics where [`Linear::try_forward`] errs.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        unwrap(self.try_forward(x))
    }

    /// `x @ weight + bias`, or an error when `x`'s last axis is not `in_features`.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// use stategrad_nn::layers::Linear;
    /// let l = Linear::new(3, 2);
    /// assert_eq!(l.try_forward(&Tensor::ones(&[4, 5, 3])).unwrap().shape(), &[4, 5, 2]);
    /// assert!(l.try_forward(&Tensor::ones(&[4, 2])).is_err());
    /// ```
    pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.shape().last() != Some(&self.in_features) {
            return Err(invalid(
                "Linear",
                format!(
                    "expected an input whose last axis is {}, got shape {}",
                    self.in_features,
                    x.shape_display()
                ),
            ));
        }
        let y = x.try_matmul(&self.weight.value())?;
        match &self.bias {
            Some(b) => y.try_add(&b.value()),
            None => Ok(y),
        }
    }
}

impl_layer!(Linear);
