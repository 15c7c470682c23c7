//! Named options of tensor operations.

/// Whether a reduction keeps its reduced axes as axes of length 1 (numpy's `keepdims`).
///
/// Every reduction that takes `keepdims` accepts either this or a `bool`, so existing
/// `sum_along(&[-1], true)` calls read the same as `sum_along(&[-1], KeepDims::Yes)`.
///
/// ```
/// use stategrad_core::{KeepDims, Tensor};
/// let x = Tensor::new([[1.0f32, 2.0], [3.0, 4.0]]);
/// assert_eq!(x.sum_along(&[-1], KeepDims::Yes).shape(), &[2, 1]);
/// assert_eq!(x.sum_along(&[-1], KeepDims::No).shape(), &[2]);
/// assert_eq!(x.max_along(&[0], true).shape(), &[1, 2]);
/// assert_eq!(x.logsumexp(&[0, 1], KeepDims::Yes).shape(), &[1, 1]);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeepDims {
    /// Remove the reduced axes.
    #[default]
    No,
    /// Keep each reduced axis with length 1 (the result broadcasts against the input).
    Yes,
}

impl From<bool> for KeepDims {
    fn from(keep: bool) -> KeepDims {
        if keep {
            KeepDims::Yes
        } else {
            KeepDims::No
        }
    }
}

impl From<KeepDims> for bool {
    fn from(k: KeepDims) -> bool {
        k == KeepDims::Yes
    }
}
