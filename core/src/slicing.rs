//! numpy-style indexing: [`Tensor::slice`] with the [`s!`](crate::s) macro, and
//! [`Tensor::flip`].
//!
//! `x.slice(s![1..3, ..;2])` is numpy's `x[1:3, ::2]`; `s![.., -1]` is `x[:, -1]` (an integer
//! drops its axis); [`NewAxis`] inserts an axis of length 1; axes left out at the end are taken
//! whole. Every form is one differentiable strided-slice primitive (plus a reshape when axes
//! are dropped or inserted): its VJP scatters the cotangent into zeros, whose VJP is the slice
//! again, so derivatives of any order, `vmap` (the batch axis is left whole) and `jit` work.
//!
//! # Two spellings of a range
//!
//! * **Rust ranges** in [`s!`](crate::s) follow ndarray's `s!`: `a..b;step` selects the
//!   indices of `a..b`, then every `|step|`-th of them, **from the back when `step < 0`**. So
//!   `..;-1` reverses, and `0..5;-2` is `[4, 2, 0]`. Negative bounds count from the end
//!   (`-2..` is the last two), and bounds past either end are clamped (numpy), never an error.
//! * **numpy's `start:stop:step`** exactly, for code ported from Python:
//!   [`SliceElem::numpy`]`(Some(3), Some(0), -1)` is `x[3:0:-1]` (elements 3, 2, 1).
//!
//! A zero step and an integer index out of range are [`Error::InvalidArgument`]; empty
//! results are allowed.

use crate::error::{Error, Result};
use crate::ops::{normalize_axes, ok};
use crate::prim::{apply, Slice};
use crate::tensor::Tensor;
use std::ops::{Range, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive};
use std::sync::Arc;

/// Inserts an axis of length 1 in [`s!`](crate::s) (numpy's `np.newaxis`).
///
/// ```
/// use stategrad_core::{s, NewAxis, Tensor};
/// let x = Tensor::new([1.0f32, 2.0, 3.0]);
/// assert_eq!(x.slice(s![NewAxis, ..]).shape(), &[1, 3]);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewAxis;

/// One entry of an index: a range with a step, an integer, or a new axis. Usually written with
/// the [`s!`](crate::s) macro; the enum is public so that indices can be built at run time.
///
/// ```
/// use stategrad_core::{s, SliceElem, Tensor};
/// let x = Tensor::arange(0.0, 6.0, 1.0).unwrap().reshape(&[2, 3]);
/// let elems = vec![SliceElem::from(-1), SliceElem::numpy(None, None, -1)];
/// assert_eq!(x.slice(&elems).to_string(), x.slice(s![-1, ..;-1]).to_string());
/// assert_eq!(x.slice(&elems).to_string(), "[5. 4. 3.]");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceElem {
    /// A Rust range with a step (ndarray's convention, see the [module docs](self)): the indices
    /// of `start..end` (`None`: to the end), every `|step|`-th, from the back if `step < 0`.
    Range {
        /// First index of the range (negative counts from the end).
        start: isize,
        /// One past the last index (negative counts from the end; `None`: the axis length).
        end: Option<isize>,
        /// The step (not 0).
        step: isize,
    },
    /// Python's `start:stop:step`, with numpy's rules for defaults, negative bounds and clamping.
    Numpy {
        /// First index (`None`: 0, or the last index when `step < 0`).
        start: Option<isize>,
        /// Where to stop, exclusive (`None`: past the end in the direction of `step`).
        stop: Option<isize>,
        /// The step (not 0).
        step: isize,
    },
    /// One index, dropping the axis (negative counts from the end).
    Index(isize),
    /// A new axis of length 1.
    NewAxis,
}

impl SliceElem {
    /// Python's `start:stop:step` (numpy's rules).
    ///
    /// ```
    /// use stategrad_core::{SliceElem, Tensor};
    /// let x = Tensor::arange(0.0, 5.0, 1.0).unwrap();
    /// // x[3:0:-1]
    /// let y = x.slice([SliceElem::numpy(Some(3), Some(0), -1)]);
    /// assert_eq!(y.to_string(), "[3. 2. 1.]");
    /// ```
    pub fn numpy(start: Option<isize>, stop: Option<isize>, step: isize) -> SliceElem {
        SliceElem::Numpy { start, stop, step }
    }

    /// A range with a step (the `a..b;step` form of [`s!`](crate::s)).
    #[doc(hidden)]
    pub fn stepped<R: SliceRange>(range: R, step: isize) -> SliceElem {
        match range.into() {
            SliceElem::Range { start, end, .. } => SliceElem::Range { start, end, step },
            other => other,
        }
    }
}

/// The range types that [`s!`](crate::s) accepts with a `;step` (not integers or [`NewAxis`]).
pub trait SliceRange: Into<SliceElem> {}

fn to_isize<T: TryInto<isize>>(v: T) -> isize {
    // Only a `usize` above `isize::MAX` fails: past the end of any axis, clamped like numpy.
    v.try_into().unwrap_or(isize::MAX)
}

macro_rules! slice_from {
    ($($t:ty),*) => {$(
        impl From<Range<$t>> for SliceElem {
            fn from(r: Range<$t>) -> SliceElem {
                SliceElem::Range { start: to_isize(r.start), end: Some(to_isize(r.end)), step: 1 }
            }
        }
        impl From<RangeFrom<$t>> for SliceElem {
            fn from(r: RangeFrom<$t>) -> SliceElem {
                SliceElem::Range { start: to_isize(r.start), end: None, step: 1 }
            }
        }
        impl From<RangeTo<$t>> for SliceElem {
            fn from(r: RangeTo<$t>) -> SliceElem {
                SliceElem::Range { start: 0, end: Some(to_isize(r.end)), step: 1 }
            }
        }
        impl From<RangeInclusive<$t>> for SliceElem {
            fn from(r: RangeInclusive<$t>) -> SliceElem {
                SliceElem::Range { start: to_isize(*r.start()), end: inclusive_end(to_isize(*r.end())), step: 1 }
            }
        }
        impl From<RangeToInclusive<$t>> for SliceElem {
            fn from(r: RangeToInclusive<$t>) -> SliceElem {
                SliceElem::Range { start: 0, end: inclusive_end(to_isize(r.end)), step: 1 }
            }
        }
        impl From<$t> for SliceElem {
            fn from(i: $t) -> SliceElem {
                SliceElem::Index(to_isize(i))
            }
        }
        impl SliceRange for Range<$t> {}
        impl SliceRange for RangeFrom<$t> {}
        impl SliceRange for RangeTo<$t> {}
        impl SliceRange for RangeInclusive<$t> {}
        impl SliceRange for RangeToInclusive<$t> {}
    )*};
}
slice_from!(isize, usize, i32, i64);

/// `..=end` as an exclusive end: `..=-1` is "through the last element" (`None`).
fn inclusive_end(end: isize) -> Option<isize> {
    match end.checked_add(1) {
        Some(0) | None => None,
        e => e,
    }
}

impl From<RangeFull> for SliceElem {
    fn from(_: RangeFull) -> SliceElem {
        SliceElem::Range {
            start: 0,
            end: None,
            step: 1,
        }
    }
}

impl SliceRange for RangeFull {}

impl From<NewAxis> for SliceElem {
    fn from(_: NewAxis) -> SliceElem {
        SliceElem::NewAxis
    }
}

/// numpy-style index: `s![1..3, ..;2]` is `x[1:3, ::2]`, `s![.., -1]` is `x[:, -1]`.
///
/// Each entry is a range (`a..b`, `a..`, `..b`, `a..=b`, `..`), optionally with `;step`, an
/// integer (drops the axis), or [`NewAxis`](crate::NewAxis). Negative numbers count from the
/// end (`1..-1` is numpy's `1:-1`; clippy's `reversed_empty_ranges` is allowed inside the
/// macro); a negative step walks from the back of the range (ndarray's convention: `..;-1`
/// reverses). The result is an array of [`SliceElem`](crate::SliceElem) for
/// [`Tensor::slice`](crate::Tensor::slice).
///
/// ```
/// use stategrad_core::{s, Tensor};
/// let x = Tensor::arange(0.0, 12.0, 1.0).unwrap().reshape(&[3, 4]);
/// assert_eq!(x.slice(s![1..3, ..;2]).to_string(), "[[ 4.  6.]\n [ 8. 10.]]");
/// assert_eq!(x.slice(s![.., -1]).to_string(), "[ 3.  7. 11.]");
/// assert_eq!(x.slice(s![..;-1, 0]).to_string(), "[8. 4. 0.]");
/// assert_eq!(x.slice(s![1, 1..-1]).to_string(), "[5. 6.]");
/// ```
#[macro_export]
macro_rules! s {
    (@parse []) => {{
        let none: [$crate::SliceElem; 0] = [];
        none
    }};
    (@parse [$($acc:expr),*]) => { [$($acc),*] };
    (@parse [$($acc:expr),*] $r:expr ; $step:expr , $($rest:tt)*) => {
        $crate::s!(@parse [$($acc,)* $crate::s!(@elem $r; $step)] $($rest)*)
    };
    (@parse [$($acc:expr),*] $r:expr ; $step:expr) => {
        $crate::s!(@parse [$($acc,)* $crate::s!(@elem $r; $step)])
    };
    (@parse [$($acc:expr),*] $r:expr , $($rest:tt)*) => {
        $crate::s!(@parse [$($acc,)* $crate::s!(@elem $r)] $($rest)*)
    };
    (@parse [$($acc:expr),*] $r:expr) => {
        $crate::s!(@parse [$($acc,)* $crate::s!(@elem $r)])
    };
    // `1..-1` is numpy's `1:-1`, not an empty range: clippy's lint does not apply here.
    (@elem $r:expr; $step:expr) => {{
        #[allow(clippy::reversed_empty_ranges)]
        let elem = $crate::SliceElem::stepped($r, $step);
        elem
    }};
    (@elem $r:expr) => {{
        #[allow(clippy::reversed_empty_ranges)]
        let elem = $crate::SliceElem::from($r);
        elem
    }};
    ($($t:tt)*) => { $crate::s!(@parse [] $($t)*) };
}

/// One input axis of a slice in normalised form.
struct AxisSlice {
    first: usize,
    step: isize,
    len: usize,
    /// False for an integer index (the axis is dropped).
    keep: bool,
}

fn bad(msg: String) -> Error {
    Error::InvalidArgument { op: "slice", msg }
}

/// A bound with negative values counted from the end, clamped to `lo..=hi`.
fn clamp_bound(v: isize, n: isize, lo: isize, hi: isize) -> isize {
    let v = if v < 0 { v.saturating_add(n) } else { v };
    v.clamp(lo, hi)
}

/// The number of elements from `from` to `to` (exclusive) by `step` (`to > from`).
fn count(from: isize, to: isize, step: usize) -> usize {
    to.abs_diff(from).div_ceil(step)
}

fn normalize(elem: &SliceElem, n: usize, axis: usize) -> Result<AxisSlice> {
    let ni = isize::try_from(n).map_err(|_| bad(format!("axis {axis} is too long")))?;
    let zero_step = || bad(format!("slice step cannot be zero (axis {axis})"));
    let (first, step, len) = match *elem {
        SliceElem::Index(i) => {
            let j = if i < 0 { i.checked_add(ni) } else { Some(i) };
            match j {
                Some(j) if (0..ni).contains(&j) => {
                    return Ok(AxisSlice {
                        first: j as usize,
                        step: 1,
                        len: 1,
                        keep: false,
                    })
                }
                _ => {
                    return Err(bad(format!(
                        "index {i} is out of bounds for axis {axis} with size {n}"
                    )))
                }
            }
        }
        SliceElem::NewAxis => {
            return Err(bad("internal error: a new axis is not an input axis".into()))
        }
        SliceElem::Range { step: 0, .. } | SliceElem::Numpy { step: 0, .. } => {
            return Err(zero_step())
        }
        SliceElem::Range { start, end, step } => {
            let a = clamp_bound(start, ni, 0, ni);
            let b = end.map_or(ni, |e| clamp_bound(e, ni, 0, ni));
            let len = if b > a {
                count(a, b, step.unsigned_abs())
            } else {
                0
            };
            // From the front, or from the back (the last index of `a..b`) for a negative step.
            (if step > 0 { a } else { b - 1 }, step, len)
        }
        SliceElem::Numpy { start, stop, step } if step > 0 => {
            let a = start.map_or(0, |s| clamp_bound(s, ni, 0, ni));
            let b = stop.map_or(ni, |s| clamp_bound(s, ni, 0, ni));
            let len = if b > a { count(a, b, step as usize) } else { 0 };
            (a, step, len)
        }
        SliceElem::Numpy { start, stop, step } => {
            let a = start.map_or(ni - 1, |s| clamp_bound(s, ni, -1, ni - 1));
            let b = stop.map_or(-1, |s| clamp_bound(s, ni, -1, ni - 1));
            let len = if a > b {
                count(a, b, step.unsigned_abs())
            } else {
                0
            };
            (a, step, len)
        }
    };
    Ok(AxisSlice {
        // An empty slice reads nothing: any in-bounds first index will do. A step matters only
        // between two elements; below that it is 1, so `step * stride` stays within the tensor.
        first: if len == 0 { 0 } else { first as usize },
        step: if len <= 1 { 1 } else { step },
        len,
        keep: true,
    })
}

impl Tensor {
    /// numpy-style indexing (`x[1:3, ::2]`), usually with [`s!`](crate::s); see the
    /// [`slicing` module](crate::slicing) for the rules. Differentiable to any order.
    ///
    /// ```
    /// use stategrad_core::{s, Error, Tensor};
    /// let x = Tensor::arange(0.0, 6.0, 1.0).unwrap().reshape(&[2, 3]);
    /// assert_eq!(x.try_slice(s![.., 1..]).unwrap().to_string(), "[[1. 2.]\n [4. 5.]]");
    /// assert!(matches!(x.try_slice(s![.., ..;0]), Err(Error::InvalidArgument { .. })));
    /// assert!(matches!(x.try_slice(s![2]), Err(Error::InvalidArgument { .. })));
    /// assert_eq!(x.slice(s![.., 5..]).shape(), &[2, 0]); // empty results are allowed
    /// ```
    pub fn try_slice(&self, index: impl AsRef<[SliceElem]>) -> Result<Tensor> {
        let index = index.as_ref();
        let used = index.iter().filter(|e| **e != SliceElem::NewAxis).count();
        if used > self.ndim() {
            return Err(bad(format!(
                "too many indices ({used}) for a tensor of shape {}",
                self.shape_display()
            )));
        }
        let full = SliceElem::from(..);
        let mut axes = Vec::with_capacity(self.ndim());
        let mut out_shape = Vec::with_capacity(index.len().saturating_add(self.ndim()));
        let mut entries = index
            .iter()
            .chain(std::iter::repeat_n(&full, self.ndim() - used));
        for (axis, &n) in self.shape().iter().enumerate() {
            let mut e = entries.next().unwrap_or(&full);
            while *e == SliceElem::NewAxis {
                out_shape.push(1);
                e = entries.next().unwrap_or(&full);
            }
            let a = normalize(e, n, axis)?;
            if a.keep {
                out_shape.push(a.len);
            }
            axes.push(a);
        }
        // Trailing new axes.
        out_shape.extend(entries.map(|_| 1));
        self.try_slice_normalized(&axes)?.try_reshape_to(&out_shape)
    }

    /// Infallible form of [`Tensor::try_slice`].
    #[track_caller]
    pub fn slice(&self, index: impl AsRef<[SliceElem]>) -> Tensor {
        ok(self.try_slice(index))
    }

    /// Reverse the order of elements along `axes` (`jnp.flip`; negative axes count from the
    /// end).
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let x = Tensor::arange(0.0, 6.0, 1.0).unwrap().reshape(&[2, 3]);
    /// assert_eq!(x.flip(&[-1]).to_string(), "[[2. 1. 0.]\n [5. 4. 3.]]");
    /// assert_eq!(x.flip(&[0, 1]).to_string(), "[[5. 4. 3.]\n [2. 1. 0.]]");
    /// ```
    pub fn try_flip(&self, axes: &[isize]) -> Result<Tensor> {
        let axes = normalize_axes("flip", axes, self.ndim())?;
        let mut index = vec![SliceElem::from(..); self.ndim()];
        for a in axes {
            index[a] = SliceElem::stepped(.., -1);
        }
        self.try_slice(index)
    }

    /// Infallible form of [`Tensor::try_flip`].
    #[track_caller]
    pub fn flip(&self, axes: &[isize]) -> Tensor {
        ok(self.try_flip(axes))
    }

    /// Apply the slice primitive (one normalised entry per axis; the shape is unchanged in rank).
    fn try_slice_normalized(&self, axes: &[AxisSlice]) -> Result<Tensor> {
        let whole = axes
            .iter()
            .zip(self.shape())
            .all(|(a, &n)| a.first == 0 && a.step == 1 && a.len == n);
        if whole {
            return Ok(self.clone());
        }
        let prim = Slice {
            first: axes.iter().map(|a| a.first).collect(),
            steps: axes.iter().map(|a| a.step).collect(),
            lens: axes.iter().map(|a| a.len).collect(),
        };
        apply(Arc::new(prim), &[self])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(n: usize) -> Tensor {
        Tensor::from_vec((0..n).map(|i| i as f64).collect(), &[n]).unwrap()
    }

    fn vals(t: &Tensor) -> Vec<usize> {
        t.to_f64_vec().iter().map(|&v| v as usize).collect()
    }

    /// `(len, start, stop, step, list(range(len))[start:stop:step])`, computed by Python.
    #[rustfmt::skip]
    const NUMPY: &[(usize, Option<isize>, Option<isize>, isize, &[usize])] = &[
        (0, None, None, -1, &[]),
        (0, None, None, 2, &[]),
        (0, None, None, -2, &[]),
        (0, Some(3), Some(0), -1, &[]),
        (0, Some(1), Some(3), -1, &[]),
        (0, Some(-1), None, -1, &[]),
        (0, Some(-2), None, 1, &[]),
        (0, Some(-10), Some(10), 1, &[]),
        (0, Some(10), Some(-10), -1, &[]),
        (0, Some(4), Some(-6), -2, &[]),
        (0, None, Some(-1), 1, &[]),
        (0, Some(-3), Some(-1), 1, &[]),
        (0, Some(2), Some(2), 1, &[]),
        (0, Some(0), None, 3, &[]),
        (0, None, Some(0), -2, &[]),
        (0, Some(7), None, -3, &[]),
        (1, None, None, -1, &[0]),
        (1, None, None, 2, &[0]),
        (1, None, None, -2, &[0]),
        (1, Some(3), Some(0), -1, &[]),
        (1, Some(1), Some(3), -1, &[]),
        (1, Some(-1), None, -1, &[0]),
        (1, Some(-2), None, 1, &[0]),
        (1, Some(-10), Some(10), 1, &[0]),
        (1, Some(10), Some(-10), -1, &[0]),
        (1, Some(4), Some(-6), -2, &[0]),
        (1, None, Some(-1), 1, &[]),
        (1, Some(-3), Some(-1), 1, &[]),
        (1, Some(2), Some(2), 1, &[]),
        (1, Some(0), None, 3, &[0]),
        (1, None, Some(0), -2, &[]),
        (1, Some(7), None, -3, &[0]),
        (5, None, None, -1, &[4, 3, 2, 1, 0]),
        (5, None, None, 2, &[0, 2, 4]),
        (5, None, None, -2, &[4, 2, 0]),
        (5, Some(3), Some(0), -1, &[3, 2, 1]),
        (5, Some(1), Some(3), -1, &[]),
        (5, Some(-1), None, -1, &[4, 3, 2, 1, 0]),
        (5, Some(-2), None, 1, &[3, 4]),
        (5, Some(-10), Some(10), 1, &[0, 1, 2, 3, 4]),
        (5, Some(10), Some(-10), -1, &[4, 3, 2, 1, 0]),
        (5, Some(4), Some(-6), -2, &[4, 2, 0]),
        (5, None, Some(-1), 1, &[0, 1, 2, 3]),
        (5, Some(-3), Some(-1), 1, &[2, 3]),
        (5, Some(2), Some(2), 1, &[]),
        (5, Some(0), None, 3, &[0, 3]),
        (5, None, Some(0), -2, &[4, 2]),
        (5, Some(7), None, -3, &[4, 1]),
    ];

    #[test]
    fn numpy_ranges_match_python() {
        for &(n, start, stop, step, want) in NUMPY {
            let got = iota(n).slice([SliceElem::numpy(start, stop, step)]);
            assert_eq!(vals(&got), want, "{n}: {start:?}:{stop:?}:{step}");
        }
    }

    #[test]
    fn rust_ranges_follow_ndarray() {
        let x = iota(5);
        let cases: Vec<([SliceElem; 1], Vec<usize>)> = vec![
            (s![0..5;-2], vec![4, 2, 0]),
            (s![1..4;-1], vec![3, 2, 1]),
            (s![..;-1], vec![4, 3, 2, 1, 0]),
            (s![..;-3], vec![4, 1]),
            (s![-2..], vec![3, 4]),
            (s![..=-1], vec![0, 1, 2, 3, 4]),
            (s![..=-2], vec![0, 1, 2, 3]),
            (s![1..=2], vec![1, 2]),
            (s![3..3], vec![]),
            (s![4..-2], vec![]),
            (s![1..-1], vec![1, 2, 3]),
            (s![-100..100;2], vec![0, 2, 4]),
            (s![2usize..], vec![2, 3, 4]),
            (s![1isize..;2], vec![1, 3]),
        ];
        for (index, want) in cases {
            assert_eq!(vals(&x.slice(index)), want, "{index:?}");
        }
    }

    #[test]
    fn indices_drop_and_new_axes_insert() {
        let x = iota(24).reshape(&[2, 3, 4]);
        assert_eq!(x.slice(s![1]).shape(), &[3, 4]);
        assert_eq!(x.slice(s![.., -1]).shape(), &[2, 4]);
        assert_eq!(vals(&x.slice(s![1, 2, 3])), vec![23]);
        assert_eq!(x.slice(s![1, 2, 3]).shape(), &[] as &[usize]);
        assert_eq!(x.slice(s![NewAxis, .., NewAxis]).shape(), &[1, 2, 1, 3, 4]);
        assert_eq!(x.slice(s![.., .., .., NewAxis]).shape(), &[2, 3, 4, 1]);
        assert_eq!(Tensor::scalar(1.0f32).slice(s![NewAxis]).shape(), &[1]);
        assert_eq!(vals(&x.slice(s![.., 1, ..;-2])), vec![7, 5, 19, 17]);
        assert_eq!(x.slice(s![]).shape(), x.shape());
        assert_eq!(x.slice(s![1, ..,]).shape(), &[3, 4]);
        // The whole tensor is the tensor itself.
        assert_eq!(vals(&x.slice(s![..])), vals(&x));
    }

    #[test]
    fn bad_indices_are_typed_errors() {
        let x = iota(6).reshape(&[2, 3]);
        let invalid = |r: Result<Tensor>| matches!(r, Err(Error::InvalidArgument { .. }));
        assert!(invalid(x.try_slice(s![.., ..;0])));
        assert!(invalid(x.try_slice([SliceElem::numpy(None, None, 0)])));
        assert!(invalid(x.try_slice(s![2])));
        assert!(invalid(x.try_slice(s![-3])));
        assert!(invalid(x.try_slice(s![isize::MIN])));
        assert!(invalid(x.try_slice(s![0, 0, 0])));
        assert!(invalid(x.try_flip(&[2])));
        assert!(invalid(x.try_flip(&[0, -2])));
        // Extreme bounds clamp, as in numpy.
        assert_eq!(
            x.slice(s![isize::MIN..isize::MAX;isize::MAX]).shape(),
            &[1, 3]
        );
        assert_eq!(x.slice(s![..;isize::MIN]).shape(), &[1, 3]);
        assert_eq!(x.slice(s![usize::MAX..]).shape(), &[0, 3]);
    }

    #[test]
    fn empty_and_flip() {
        let x = iota(6).reshape(&[2, 3]);
        let e = x.slice(s![.., 2..-1]);
        assert_eq!(e.shape(), &[2, 0]);
        assert_eq!(e.slice(s![..;-1, ..;-1]).shape(), &[2, 0]);
        assert_eq!(vals(&x.flip(&[0])), vec![3, 4, 5, 0, 1, 2]);
        assert_eq!(vals(&x.flip(&[])), vals(&x));
        let f = Tensor::new([1.0f32, 2.0]).flip(&[0]);
        assert_eq!(f.dtype(), crate::DType::F32);
        assert_eq!(f.to_vec::<f32>(), vec![2.0, 1.0]);
    }
}
