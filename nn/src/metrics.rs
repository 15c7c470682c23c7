//! Classification metrics in tensor operations: each returns a 0-d `f32` tensor, so it can be
//! computed inside `jit` (and returned from the jitted step) without reading values on the
//! trace.
//!
//! ```
//! use stategrad_core::{jit, Tensor};
//! use stategrad_nn::metrics::accuracy;
//! let logits = Tensor::new([[0.1f32, 0.9], [0.8, 0.2], [0.3, 0.7]]);
//! let labels = Tensor::new([1i32, 1, 1]);
//! let acc = jit(|(z, y): (Tensor, Tensor)| accuracy(&z, &y));
//! let a = acc.call((logits, labels)).unwrap();
//! assert!((a.item().unwrap() - 2.0 / 3.0).abs() < 1e-7);
//! ```

use stategrad_core::{DType, Tensor};

/// `labels` with a trailing axis of length 1.
#[track_caller]
fn with_class_axis(labels: &Tensor) -> Tensor {
    let shape: Vec<isize> = labels
        .shape()
        .iter()
        .map(|&d| d as isize)
        .chain([1])
        .collect();
    labels.reshape(&shape)
}

/// The fraction of examples whose predicted class, `argmax(logits, -1)`, equals the label: a
/// 0-d `f32` tensor. `logits` has shape `[.., C]`, `labels` (`i32` or `i64`) the leading shape
/// `[..]`. On ties the prediction is the first maximal index (numpy's `argmax`).
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::metrics::accuracy;
/// // Row 0 ties classes 0 and 2: the prediction is 0.
/// let logits = Tensor::new([[1.0f32, 0.0, 1.0], [0.0, 2.0, 1.0]]);
/// assert_eq!(accuracy(&logits, &Tensor::new([0i64, 1])).item().unwrap(), 1.0);
/// assert_eq!(accuracy(&logits, &Tensor::new([2i64, 1])).item().unwrap(), 0.5);
/// ```
#[track_caller]
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> Tensor {
    let predicted = logits.argmax(-1, false);
    predicted
        .eq(&labels.astype(predicted.dtype()))
        .astype(DType::F32)
        .mean()
}

/// The fraction of examples whose label is among the `k` highest logits: a 0-d `f32` tensor.
///
/// Classes are ranked by logit, descending, ties broken by the lower class index first (a
/// stable sort), so `k = 1` agrees with [`accuracy`] on ties. The label's rank is the number
/// of classes with a larger logit plus the number of lower-indexed classes with an equal one;
/// the example counts when the rank is below `k` (`k ≥ C` counts every example).
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::metrics::top_k_accuracy;
/// let logits = Tensor::new([[0.1f32, 0.5, 0.4], [0.3, 0.3, 0.4]]);
/// let labels = Tensor::new([2i32, 1]);
/// // Row 0: label 2 is second. Row 1: label 1 ties label 0 and ranks after it (third).
/// assert_eq!(top_k_accuracy(&logits, &labels, 1).item().unwrap(), 0.0);
/// assert_eq!(top_k_accuracy(&logits, &labels, 2).item().unwrap(), 0.5);
/// assert_eq!(top_k_accuracy(&logits, &labels, 3).item().unwrap(), 1.0);
/// ```
#[track_caller]
pub fn top_k_accuracy(logits: &Tensor, labels: &Tensor, k: usize) -> Tensor {
    let classes = *logits.shape().last().unwrap_or(&0);
    let column = with_class_axis(labels);
    let label_logit = logits.take_along_axis(&column, -1);
    let above = logits.gt(&label_logit);
    let index = Tensor::arange_dtype(0.0, classes as f64, 1.0, DType::I64)
        .unwrap_or_else(|_| Tensor::zeros_dtype(&[0], DType::I64));
    // A negative label counts from the end, as `take_along_axis` reads it.
    let column = column.astype(DType::I64);
    let column = Tensor::select(
        &column.lt_scalar(0.0),
        &(&column + &Tensor::scalar(classes as i64)),
        &column,
    );
    let tied_before = logits.eq(&label_logit).logical_and(&index.lt(&column));
    let rank = above.logical_or(&tied_before).sum_along(&[-1], false);
    rank.lt_scalar(k as f64).astype(DType::F32).mean()
}
