//! Losses, written in differentiable tensor operations so that `grad`, `jit` and `vmap` work on
//! them unchanged.
//!
//! Every loss computes a per-element (or per-example) loss and reduces it with a [`Reduction`]:
//! [`Reduction::Mean`] (the mean over every element, PyTorch's default), [`Reduction::Sum`] or
//! [`Reduction::None`] (the unreduced losses, what optax returns). Float inputs keep their
//! dtype (`f32` in, `f32` out; `f64` in, `f64` out).
//!
//! | here | formula (per element / example) | optax | PyTorch |
//! |---|---|---|---|
//! | [`softmax_cross_entropy`] | `-log_softmax(z)[y]` | `softmax_cross_entropy_with_integer_labels` | `cross_entropy` |
//! | [`softmax_cross_entropy_smoothed`] | `-(1-α) log_softmax(z)[y] - α/C Σ_c log_softmax(z)_c` | `softmax_cross_entropy(z, smooth_labels(onehot, α))` | `cross_entropy(.., label_smoothing=α)` |
//! | [`softmax_cross_entropy_with_probs`] | `-Σ_c p_c log_softmax(z)_c` | `softmax_cross_entropy` | `cross_entropy` with probabilities |
//! | [`binary_cross_entropy_with_logits`] | `softplus(x) - x t` | `sigmoid_binary_cross_entropy` | `binary_cross_entropy_with_logits` |
//! | [`mse`] | `(p - t)²` | `squared_error` (`l2_loss` is half of it) | `mse_loss` |
//! | [`huber`] | `½ e²` if `\|e\| ≤ δ`, else `δ (\|e\| - ½ δ)` | `huber_loss` | `huber_loss` |
//!
//! ```
//! use stategrad_core::{grad, one_hot, DType, Tensor};
//! use stategrad_nn::loss::{softmax_cross_entropy, Reduction};
//! let logits = Tensor::new([[2.0f64, 1.0, 0.1], [0.5, 2.5, 0.3]]);
//! let labels = Tensor::new([0i32, 1]);
//! let loss = softmax_cross_entropy(&logits, &labels, Reduction::Mean);
//! assert_eq!(loss.shape(), &[] as &[usize]);
//! // The gradient of the mean cross-entropy is (softmax - onehot) / batch.
//! let g = grad(|z: Tensor| softmax_cross_entropy(&z, &labels, Reduction::Mean))
//!     .call(logits.clone())
//!     .unwrap();
//! let expected = (logits.softmax(-1) - one_hot(&labels, 3).astype(DType::F64)) / 2.0;
//! assert!(g.allclose(&expected, 1e-12, 1e-12));
//! ```

use stategrad_core::Tensor;

/// How a loss reduces its per-element (or per-example) values.
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::loss::Reduction;
/// let l = Tensor::new([1.0f32, 2.0, 6.0]);
/// assert_eq!(Reduction::Mean.apply(&l).item().unwrap(), 3.0);
/// assert_eq!(Reduction::Sum.apply(&l).item().unwrap(), 9.0);
/// assert_eq!(Reduction::None.apply(&l).to_vec::<f32>(), vec![1.0, 2.0, 6.0]);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// The mean over every element (a 0-d tensor); PyTorch's default.
    #[default]
    Mean,
    /// The sum over every element (a 0-d tensor).
    Sum,
    /// No reduction: the losses keep their shape (optax's convention).
    None,
}

impl Reduction {
    /// Reduce `losses` (see the variants).
    #[track_caller]
    pub fn apply(self, losses: &Tensor) -> Tensor {
        match self {
            Reduction::Mean => losses.mean(),
            Reduction::Sum => losses.sum(),
            Reduction::None => losses.clone(),
        }
    }
}

/// `labels` with a trailing axis of length 1, the index form `take_along_axis` wants.
#[track_caller]
fn with_class_axis(labels: &Tensor) -> Tensor {
    let mut shape = labels.shape().to_vec();
    shape.push(1);
    let shape: Vec<isize> = shape.iter().map(|&d| d as isize).collect();
    labels.reshape(&shape)
}

/// The negative log-likelihood of each label: `-log_softmax(logits)[.., label]`, of shape
/// `labels.shape()`.
#[track_caller]
fn nll(log_probs: &Tensor, labels: &Tensor) -> Tensor {
    let picked = log_probs.take_along_axis(&with_class_axis(labels), -1);
    -picked.sum_along(&[-1], false)
}

/// Softmax cross-entropy with integer labels:
/// `loss_i = -log_softmax(logits_i)[labels_i] = logsumexp(logits_i) - logits_i[labels_i]`.
///
/// `logits` has shape `[.., C]` (float), `labels` the leading shape `[..]` (`i32` or `i64`,
/// in `0..C`; a negative label counts from the end, one out of range is an error); the
/// unreduced loss has the labels' shape. Computed stably with `log_softmax` and
/// `take_along_axis`; its gradient with respect to the logits is
/// `softmax(logits) - onehot(labels)` per example (divided by the number of examples for
/// [`Reduction::Mean`]).
///
/// optax: `softmax_cross_entropy_with_integer_labels` (unreduced); PyTorch:
/// `torch.nn.functional.cross_entropy(logits, labels, reduction=..)` for 2-d logits.
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::loss::{softmax_cross_entropy, Reduction};
/// let logits = Tensor::new([[0.0f64, 0.0], [0.0, 0.0]]);
/// let l = softmax_cross_entropy(&logits, &Tensor::new([0i64, 1]), Reduction::None);
/// assert!(l.allclose(&Tensor::new([2f64.ln(), 2f64.ln()]), 1e-15, 0.0));
/// ```
#[track_caller]
pub fn softmax_cross_entropy(logits: &Tensor, labels: &Tensor, reduction: Reduction) -> Tensor {
    reduction.apply(&nll(&logits.log_softmax(-1), labels))
}

/// Softmax cross-entropy with integer labels and label smoothing `alpha` in `[0, 1]`: the
/// target is `(1 - alpha) * onehot(label) + alpha / C`, so
/// `loss_i = -(1 - alpha) log_softmax(z_i)[y_i] - alpha / C * Σ_c log_softmax(z_i)_c`.
/// `alpha = 0` is [`softmax_cross_entropy`]. Its gradient with respect to the logits is
/// `softmax(z_i) - target_i` per example.
///
/// optax: `softmax_cross_entropy(z, smooth_labels(one_hot(y, C), alpha))`; PyTorch:
/// `cross_entropy(z, y, label_smoothing=alpha)`.
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::loss::{softmax_cross_entropy, softmax_cross_entropy_smoothed, Reduction};
/// let z = Tensor::new([[1.0f64, 2.0, 3.0]]);
/// let y = Tensor::new([2i32]);
/// let plain = softmax_cross_entropy(&z, &y, Reduction::Sum);
/// let smooth0 = softmax_cross_entropy_smoothed(&z, &y, 0.0, Reduction::Sum);
/// assert!(plain.allclose(&smooth0, 1e-15, 0.0));
/// // Smoothing moves the target away from the most likely class, so the loss grows here.
/// let smooth = softmax_cross_entropy_smoothed(&z, &y, 0.1, Reduction::Sum);
/// assert!(smooth.item().unwrap() > plain.item().unwrap());
/// ```
#[track_caller]
pub fn softmax_cross_entropy_smoothed(
    logits: &Tensor,
    labels: &Tensor,
    alpha: f64,
    reduction: Reduction,
) -> Tensor {
    let log_probs = logits.log_softmax(-1);
    let hard = nll(&log_probs, labels);
    let uniform = -log_probs.mean_along(&[-1], false);
    let per_example = hard.mul_scalar(1.0 - alpha) + uniform.mul_scalar(alpha);
    reduction.apply(&per_example)
}

/// Softmax cross-entropy with dense targets (probabilities over the last axis, e.g. one-hot
/// or smoothed labels): `loss_i = -Σ_c targets_ic log_softmax(logits_i)_c`, of shape
/// `logits.shape()[..-1]` unreduced. The gradient with respect to the logits is
/// `softmax(logits_i) * Σ_c targets_ic - targets_i` (`softmax - targets` for targets summing
/// to one).
///
/// optax: `softmax_cross_entropy`; PyTorch: `cross_entropy` with class probabilities as the
/// target.
///
/// ```
/// use stategrad_core::{one_hot, DType, Tensor};
/// use stategrad_nn::loss::{softmax_cross_entropy, softmax_cross_entropy_with_probs, Reduction};
/// let z = Tensor::new([[1.0f64, -1.0, 0.5], [0.0, 2.0, 1.0]]);
/// let y = Tensor::new([2i32, 1]);
/// let dense = softmax_cross_entropy_with_probs(&z, &one_hot(&y, 3).astype(DType::F64), Reduction::Mean);
/// assert!(dense.allclose(&softmax_cross_entropy(&z, &y, Reduction::Mean), 1e-15, 0.0));
/// ```
#[track_caller]
pub fn softmax_cross_entropy_with_probs(
    logits: &Tensor,
    targets: &Tensor,
    reduction: Reduction,
) -> Tensor {
    let per_example = -(targets * &logits.log_softmax(-1)).sum_along(&[-1], false);
    reduction.apply(&per_example)
}

/// `softplus(x) = log(1 + e^x)`, computed as `logsumexp([0, x])`: stable for large `|x|`, with
/// the exact derivative `sigmoid(x)` everywhere (also at 0).
#[track_caller]
fn softplus(x: &Tensor) -> Tensor {
    let stacked = Tensor::stack(&[&x.zeros_like(), x], -1);
    stacked.logsumexp(&[-1], false)
}

/// Binary cross-entropy on logits, elementwise:
/// `loss = -t log σ(x) - (1 - t) log(1 - σ(x)) = softplus(x) - x t`, computed stably (no
/// overflow for large `|x|`, no `log(0)`), with `softplus(x) = log(1 + e^x)` taken as
/// `logsumexp([0, x])`. `targets` (in `[0, 1]`, soft targets allowed) broadcasts with
/// `logits`. The gradient with respect to the logits is `σ(x) - t`.
///
/// optax: `sigmoid_binary_cross_entropy` (unreduced); PyTorch:
/// `binary_cross_entropy_with_logits`.
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::loss::{binary_cross_entropy_with_logits, Reduction};
/// let x = Tensor::new([0.0f64, 1000.0, -1000.0]);
/// let t = Tensor::new([1.0f64, 1.0, 1.0]);
/// let l = binary_cross_entropy_with_logits(&x, &t, Reduction::None).to_vec::<f64>();
/// assert!((l[0] - 2f64.ln()).abs() < 1e-15);
/// assert_eq!(l[1], 0.0);
/// assert_eq!(l[2], 1000.0); // finite where the naive formula gives infinity
/// ```
#[track_caller]
pub fn binary_cross_entropy_with_logits(
    logits: &Tensor,
    targets: &Tensor,
    reduction: Reduction,
) -> Tensor {
    let per_element = softplus(logits) - logits * targets;
    reduction.apply(&per_element)
}

/// Squared error, elementwise: `loss = (predictions - targets)²` (with broadcasting); with
/// [`Reduction::Mean`] the mean squared error.
///
/// optax: `squared_error` (`l2_loss` is half of it); PyTorch: `mse_loss`.
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::loss::{mse, Reduction};
/// let p = Tensor::new([1.0f32, 2.0, 3.0]);
/// let t = Tensor::new([1.0f32, 0.0, 0.0]);
/// assert_eq!(mse(&p, &t, Reduction::Mean).item().unwrap(), (13.0f32 / 3.0) as f64);
/// assert_eq!(mse(&p, &t, Reduction::None).to_vec::<f32>(), vec![0.0, 4.0, 9.0]);
/// ```
#[track_caller]
pub fn mse(predictions: &Tensor, targets: &Tensor, reduction: Reduction) -> Tensor {
    reduction.apply(&(predictions - targets).square())
}

/// Huber loss with threshold `delta > 0`, elementwise on `e = predictions - targets`:
/// `½ e²` where `|e| ≤ delta`, `delta (|e| - ½ delta)` beyond (quadratic near zero, linear
/// in the tails, continuous with a continuous derivative `clip(e, -delta, delta)`). Computed as
/// `½ q² + delta (|e| - q)` with `q = min(|e|, delta)`.
///
/// optax: `huber_loss(predictions, targets, delta)`; PyTorch: `huber_loss(.., delta=delta)`
/// (`smooth_l1_loss` is this divided by `delta`).
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::loss::{huber, Reduction};
/// let p = Tensor::new([0.5f64, 3.0, -2.0]);
/// let t = Tensor::new([0.0f64, 0.0, 0.0]);
/// let l = huber(&p, &t, 1.0, Reduction::None).to_vec::<f64>();
/// assert_eq!(l, vec![0.125, 2.5, 1.5]);
/// ```
#[track_caller]
pub fn huber(predictions: &Tensor, targets: &Tensor, delta: f64, reduction: Reduction) -> Tensor {
    let abs_err = (predictions - targets).abs();
    let quadratic = abs_err.minimum_scalar(delta);
    let linear = &abs_err - &quadratic;
    let per_element = quadratic.square().mul_scalar(0.5) + linear.mul_scalar(delta);
    reduction.apply(&per_element)
}
