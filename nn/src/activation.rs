//! Activation functions of `&Tensor`, written in differentiable tensor ops (so `grad`, `jit`
//! and `vmap` go through them), and [`Activation`], a stateless layer choosing one of them.
//!
//! [`gelu`] is the tanh approximation: the core has no `erf` primitive, so there is no exact
//! form.
//!
//! ```
//! use stategrad_core::Tensor;
//! use stategrad_nn::activation::{relu, softplus};
//! let x = Tensor::new([-1.0f64, 0.0, 2.0]);
//! assert_eq!(relu(&x).to_vec::<f64>(), vec![0.0, 0.0, 2.0]);
//! assert!((softplus(&x).to_vec::<f64>()[1] - 2f64.ln()).abs() < 1e-12);
//! ```

use stategrad_core::{where_, Module, Path, Result, State, Tensor};

/// `max(x, 0)`.
///
/// ```
/// use stategrad_core::Tensor;
/// let y = stategrad_nn::activation::relu(&Tensor::new([-2.0f32, 3.0]));
/// assert_eq!(y.to_vec::<f32>(), vec![0.0, 3.0]);
/// ```
#[track_caller]
pub fn relu(x: &Tensor) -> Tensor {
    x.relu()
}

/// GELU, tanh approximation: `0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))` (PyTorch's
/// `approximate="tanh"`, flax's default). The core has no `erf`, so the exact form is not
/// offered.
///
/// ```
/// use stategrad_core::Tensor;
/// let y = stategrad_nn::activation::gelu(&Tensor::new([0.0f64, 1.0]));
/// let v = y.to_vec::<f64>();
/// assert_eq!(v[0], 0.0);
/// assert!((v[1] - 0.841192).abs() < 1e-5);
/// ```
#[track_caller]
pub fn gelu(x: &Tensor) -> Tensor {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let inner = (x + &(x * x * x).mul_scalar(0.044715)).mul_scalar(c);
    (x * &(inner.tanh().add_scalar(1.0))).mul_scalar(0.5)
}

/// SiLU / swish: `x · sigmoid(x)`.
///
/// ```
/// use stategrad_core::Tensor;
/// let y = stategrad_nn::activation::silu(&Tensor::new([0.0f64, 2.0]));
/// let v = y.to_vec::<f64>();
/// assert_eq!(v[0], 0.0);
/// assert!((v[1] - 2.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-12);
/// ```
#[track_caller]
pub fn silu(x: &Tensor) -> Tensor {
    x * &x.sigmoid()
}

/// Hyperbolic tangent.
///
/// ```
/// use stategrad_core::Tensor;
/// let y = stategrad_nn::activation::tanh(&Tensor::new([0.0f32]));
/// assert_eq!(y.to_vec::<f32>(), vec![0.0]);
/// ```
#[track_caller]
pub fn tanh(x: &Tensor) -> Tensor {
    x.tanh()
}

/// Logistic sigmoid `1 / (1 + e^-x)`.
///
/// ```
/// use stategrad_core::Tensor;
/// let y = stategrad_nn::activation::sigmoid(&Tensor::new([0.0f32]));
/// assert_eq!(y.to_vec::<f32>(), vec![0.5]);
/// ```
#[track_caller]
pub fn sigmoid(x: &Tensor) -> Tensor {
    x.sigmoid()
}

/// `ln(1 + e^x)`, computed stably as `max(x, 0) + log1p(exp(-|x|))` (no overflow for large `x`,
/// no loss of precision for very negative `x`). The `max` is `maximum`, whose tie at `x = 0`
/// shares the gradient, so the derivative is the sigmoid everywhere, `0.5` at `0` included.
///
/// ```
/// use stategrad_core::Tensor;
/// let y = stategrad_nn::activation::softplus(&Tensor::new([1000.0f64, -1000.0]));
/// let v = y.to_vec::<f64>();
/// assert_eq!(v[0], 1000.0);
/// assert!(v[1] >= 0.0 && v[1] < 1e-300);
/// ```
#[track_caller]
pub fn softplus(x: &Tensor) -> Tensor {
    &x.maximum_scalar(0.0) + &x.abs().neg().exp().log1p()
}

/// `x` where `x > 0`, else `negative_slope · x`.
///
/// ```
/// use stategrad_core::Tensor;
/// let y = stategrad_nn::activation::leaky_relu(&Tensor::new([-2.0f32, 3.0]), 0.1);
/// assert_eq!(y.to_vec::<f32>(), vec![-0.2, 3.0]);
/// ```
#[track_caller]
pub fn leaky_relu(x: &Tensor, negative_slope: f64) -> Tensor {
    where_(&x.gt_scalar(0.0), x, &x.mul_scalar(negative_slope))
}

/// `log(softmax(x))` along `axis` (the core's [`Tensor::log_softmax`]).
///
/// ```
/// use stategrad_core::Tensor;
/// let y = stategrad_nn::activation::log_softmax(&Tensor::new([0.0f64, 0.0]), -1);
/// assert!((y.to_vec::<f64>()[0] + 2f64.ln()).abs() < 1e-12);
/// ```
#[track_caller]
pub fn log_softmax(x: &Tensor, axis: isize) -> Tensor {
    x.log_softmax(axis)
}

/// Softmax along `axis` (the core's [`Tensor::softmax`]).
///
/// ```
/// use stategrad_core::Tensor;
/// let y = stategrad_nn::activation::softmax(&Tensor::new([1.0f64, 1.0]), -1);
/// assert!(y.allclose(&Tensor::new([0.5f64, 0.5]), 1e-12, 0.0));
/// ```
#[track_caller]
pub fn softmax(x: &Tensor, axis: isize) -> Tensor {
    x.softmax(axis)
}

/// An elementwise activation as a stateless layer (it visits no states), for
/// [`Sequential`](crate::layers::Sequential) and [`Mlp`](crate::layers::Mlp).
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::activation::Activation;
/// let x = Tensor::new([-1.0f32, 2.0]);
/// assert_eq!(Activation::Relu.forward(&x).to_vec::<f32>(), vec![0.0, 2.0]);
/// assert_eq!(Activation::Identity.forward(&x).to_vec::<f32>(), vec![-1.0, 2.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Activation {
    /// No activation.
    Identity,
    /// [`relu`].
    #[default]
    Relu,
    /// [`gelu`] (tanh approximation).
    Gelu,
    /// [`silu`].
    Silu,
    /// [`tanh`].
    Tanh,
    /// [`sigmoid`].
    Sigmoid,
    /// [`softplus`].
    Softplus,
    /// [`leaky_relu`] with the given negative slope.
    LeakyRelu(f64),
}

impl Activation {
    /// Apply the activation.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// use stategrad_nn::activation::Activation;
    /// let y = Activation::LeakyRelu(0.5).forward(&Tensor::new([-2.0f64]));
    /// assert_eq!(y.to_vec::<f64>(), vec![-1.0]);
    /// ```
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        match *self {
            Activation::Identity => x.clone(),
            Activation::Relu => relu(x),
            Activation::Gelu => gelu(x),
            Activation::Silu => silu(x),
            Activation::Tanh => tanh(x),
            Activation::Sigmoid => sigmoid(x),
            Activation::Softplus => softplus(x),
            Activation::LeakyRelu(s) => leaky_relu(x, s),
        }
    }

    /// [`Activation::forward`], with an operator's error as `Err` (the activations only fail
    /// on non-float inputs).
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// use stategrad_nn::activation::Activation;
    /// assert!(Activation::Tanh.try_forward(&Tensor::new([0.0f32])).is_ok());
    /// ```
    pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
        if !x.dtype().is_float() {
            return Err(stategrad_core::Error::InvalidArgument {
                op: "activation",
                msg: format!("activations take float tensors, not {}", x.dtype().name()),
            });
        }
        Ok(self.forward(x))
    }
}

impl Module for Activation {
    fn visit_states(&self, _path: &mut Path, _visitor: &mut dyn FnMut(&Path, &State)) {}
}
