//! Indexing: `argmax`/`argmin`, gathers (`take`, `index_select`, `take_along_axis`), their
//! transposes (`scatter_add`, `index_add`), `one_hot` and boolean masks.
//!
//! Indices are `int32` or `int64` tensors; a negative index counts from the end, and one out of
//! range is an [`Error::InvalidArgument`] (checked on every call, `jit` replays included). The
//! gathers are differentiable with respect to the data (their derivative is a scatter-add, whose
//! own derivative is the gather again, so second derivatives work) and batch under `vmap` as
//! one gather over the batch.
//!
//! ```
//! use stategrad_core::{grad, DType, Tensor};
//! let logits = Tensor::new([[1.0f64, 3.0, 2.0], [0.5, 0.1, 0.2]]);
//! let labels = Tensor::new([1i32, 0]);
//! assert_eq!(logits.argmax(-1, false).to_vec::<i32>(), vec![1, 0]);
//! // Softmax cross-entropy with integer labels.
//! let loss = |z: Tensor| {
//!     let picked = z.log_softmax(-1).take_along_axis(&labels.reshape(&[-1, 1]), -1);
//!     -picked.mean()
//! };
//! let g = grad(loss).call(logits.clone()).unwrap();
//! let onehot = stategrad_core::one_hot(&labels, 3).astype(DType::F64);
//! assert!(g.allclose(&((logits.softmax(-1) - onehot) * 0.5), 1e-12, 1e-12));
//! ```

use crate::error::{Error, Result};
use crate::ops::normalize_axis;
use crate::panics::raise;
use crate::prim::{apply, ArgReduce, ScatterAlong, TakeAlong};
use crate::tensor::{DType, Tensor};
use std::sync::Arc;

#[track_caller]
fn ok<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => raise(e),
    }
}

/// `(product of dims before axis, dim, product of dims after axis)`.
fn around(shape: &[usize], axis: usize) -> [usize; 3] {
    [
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    ]
}

impl Tensor {
    fn arg_reduce(&self, max: bool, axis: isize, keepdims: bool) -> Result<Tensor> {
        let op = if max { "argmax" } else { "argmin" };
        let axis = normalize_axis(op, axis, self.ndim())?;
        apply(
            Arc::new(ArgReduce {
                max,
                axis,
                keepdims,
            }),
            &[self],
        )
    }

    /// The index of the largest element along `axis` (negative counts from the end), as int32;
    /// the first on ties, the first NaN if any (numpy). Errors on an empty axis.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let x = Tensor::new([[1.0f32, 5.0, 5.0], [f32::NAN, 0.0, 9.0]]);
    /// assert_eq!(x.argmax(1, false).to_vec::<i32>(), vec![1, 0]);
    /// assert_eq!(x.argmax(0, true).shape(), &[1, 3]);
    /// ```
    pub fn try_argmax(&self, axis: isize, keepdims: bool) -> Result<Tensor> {
        self.arg_reduce(true, axis, keepdims)
    }
    /// Infallible form of [`Tensor::try_argmax`].
    #[track_caller]
    pub fn argmax(&self, axis: isize, keepdims: bool) -> Tensor {
        ok(self.try_argmax(axis, keepdims))
    }
    /// The index of the smallest element along `axis`, as [`Tensor::try_argmax`] does for the
    /// largest.
    pub fn try_argmin(&self, axis: isize, keepdims: bool) -> Result<Tensor> {
        self.arg_reduce(false, axis, keepdims)
    }
    /// Infallible form of [`Tensor::try_argmin`].
    #[track_caller]
    pub fn argmin(&self, axis: isize, keepdims: bool) -> Tensor {
        ok(self.try_argmin(axis, keepdims))
    }

    /// `out[i][j][k] = self[i][indices[i][j][k]][k]` for `axis = 1` (numpy's
    /// `take_along_axis`): `indices` has `self`'s rank, and the two broadcast on the other axes.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let x = Tensor::new([[10.0f32, 20.0, 30.0], [40.0, 50.0, 60.0]]);
    /// let idx = Tensor::new([[2i64, 0], [1, 1]]);
    /// assert_eq!(x.take_along_axis(&idx, 1).to_vec::<f32>(), vec![30.0, 10.0, 50.0, 50.0]);
    /// ```
    pub fn try_take_along_axis(&self, indices: &Tensor, axis: isize) -> Result<Tensor> {
        let axis = normalize_axis("take_along_axis", axis, self.ndim())?;
        apply(Arc::new(TakeAlong { axis }), &[self, indices])
    }
    /// Infallible form of [`Tensor::try_take_along_axis`].
    #[track_caller]
    pub fn take_along_axis(&self, indices: &Tensor, axis: isize) -> Tensor {
        ok(self.try_take_along_axis(indices, axis))
    }

    /// The slices of `self` at `indices` along `axis` (numpy's `take(x, indices, axis)`): the
    /// result's shape is `self.shape[..axis] ++ indices.shape ++ self.shape[axis+1..]`. An
    /// embedding lookup is `table.take(&ids, 0)`.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let table = Tensor::new([[0.0f32, 0.5], [1.0, 1.5], [2.0, 2.5]]);
    /// let ids = Tensor::new([[2i32, 0], [1, -1]]);
    /// let e = table.take(&ids, 0);
    /// assert_eq!(e.shape(), &[2, 2, 2]);
    /// assert_eq!(e.to_vec::<f32>(), vec![2.0, 2.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
    /// ```
    pub fn try_take(&self, indices: &Tensor, axis: isize) -> Result<Tensor> {
        let axis = normalize_axis("take", axis, self.ndim())?;
        let [p, n, q] = around(self.shape(), axis);
        let k = indices.numel();
        let x3 = self.try_reshape_to(&[p, n, q])?;
        let i3 = indices.try_reshape_to(&[1, k, 1])?;
        let out = apply(Arc::new(TakeAlong { axis: 1 }), &[&x3, &i3])?;
        let shape: Vec<usize> = self.shape()[..axis]
            .iter()
            .chain(indices.shape())
            .chain(&self.shape()[axis + 1..])
            .copied()
            .collect();
        out.try_reshape_to(&shape)
    }
    /// Infallible form of [`Tensor::try_take`].
    #[track_caller]
    pub fn take(&self, indices: &Tensor, axis: isize) -> Tensor {
        ok(self.try_take(indices, axis))
    }

    /// The slices at the 1-d `indices` along `axis` (PyTorch's `index_select`; numpy's `take`
    /// with a vector).
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let x = Tensor::new([[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    /// assert_eq!(x.index_select(1, &Tensor::new([2i32, 0])).to_vec::<f32>(), vec![3.0, 1.0, 6.0, 4.0]);
    /// ```
    pub fn try_index_select(&self, axis: isize, indices: &Tensor) -> Result<Tensor> {
        if indices.ndim() != 1 {
            return Err(Error::InvalidArgument {
                op: "index_select",
                msg: format!("indices must be 1-d, got shape {}", indices.shape_display()),
            });
        }
        self.try_take(indices, axis)
    }
    /// Infallible form of [`Tensor::try_index_select`].
    #[track_caller]
    pub fn index_select(&self, axis: isize, indices: &Tensor) -> Tensor {
        ok(self.try_index_select(axis, indices))
    }

    /// `self` with each element of `updates` added at the position `indices` names along `axis`
    /// (PyTorch's `scatter_add`; the transpose of [`Tensor::take_along_axis`]): for `axis = 1`,
    /// `out[i][indices[i][j][k]][k] += updates[i][j][k]`. Repeated indices accumulate.
    /// Differentiable with respect to `self` and `updates`.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let counts = Tensor::zeros(&[3]).scatter_add(0, &Tensor::new([0i32, 2, 0]), &Tensor::ones(&[3]));
    /// assert_eq!(counts.to_vec::<f32>(), vec![2.0, 0.0, 1.0]);
    /// ```
    pub fn try_scatter_add(
        &self,
        axis: isize,
        indices: &Tensor,
        updates: &Tensor,
    ) -> Result<Tensor> {
        let axis = normalize_axis("scatter_add", axis, self.ndim())?;
        let updates = updates.cast(self.dtype());
        let added = apply(
            Arc::new(ScatterAlong {
                axis,
                shape: self.shape().into(),
            }),
            &[&updates, indices],
        )?;
        self.try_add(&added)
    }
    /// Infallible form of [`Tensor::try_scatter_add`].
    #[track_caller]
    pub fn scatter_add(&self, axis: isize, indices: &Tensor, updates: &Tensor) -> Tensor {
        ok(self.try_scatter_add(axis, indices, updates))
    }

    /// `self` with the slices of `updates` added at `indices` along `axis` (the transpose of
    /// [`Tensor::take`]; JAX's `x.at[indices].add(updates)` for `axis = 0`, PyTorch's
    /// `index_add`): `updates` has the shape `take` would give.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let table = Tensor::zeros(&[3, 2]);
    /// let ids = Tensor::new([2i64, 2]);
    /// let upd = Tensor::new([[1.0f32, 1.0], [0.5, 0.5]]);
    /// assert_eq!(table.index_add(0, &ids, &upd).to_vec::<f32>(), vec![0.0, 0.0, 0.0, 0.0, 1.5, 1.5]);
    /// ```
    pub fn try_index_add(&self, axis: isize, indices: &Tensor, updates: &Tensor) -> Result<Tensor> {
        let axis = normalize_axis("index_add", axis, self.ndim())?;
        let [p, n, q] = around(self.shape(), axis);
        let k = indices.numel();
        let want: Vec<usize> = self.shape()[..axis]
            .iter()
            .chain(indices.shape())
            .chain(&self.shape()[axis + 1..])
            .copied()
            .collect();
        if updates.shape() != want.as_slice() {
            return Err(Error::ShapeMismatch {
                op: "index_add",
                lhs: updates.shape().into(),
                rhs: want.as_slice().into(),
            });
        }
        let u3 = updates.cast(self.dtype()).try_reshape_to(&[p, k, q])?;
        let i3 = indices.try_reshape_to(&[1, k, 1])?;
        let added = apply(
            Arc::new(ScatterAlong {
                axis: 1,
                shape: [p, n, q].as_slice().into(),
            }),
            &[&u3, &i3],
        )?;
        self.try_add(&added.try_reshape_to(self.shape())?)
    }
    /// Infallible form of [`Tensor::try_index_add`].
    #[track_caller]
    pub fn index_add(&self, axis: isize, indices: &Tensor, updates: &Tensor) -> Tensor {
        ok(self.try_index_add(axis, indices, updates))
    }

    /// The elements (or sub-arrays) where the bool `mask` is true, as numpy's `x[mask]`: `mask`
    /// has the shape of `self`'s leading axes, and the result is `(count, rest of the shape)`.
    /// The result's shape depends on the mask's values, so inside `jit` a traced mask is an
    /// [`Error::TracedValueRead`] (use [`crate::where_`], whose shape is static). Differentiable
    /// with respect to `self`.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let x = Tensor::new([3.0f32, -1.0, 4.0, -1.5]);
    /// assert_eq!(x.boolean_mask(&x.gt_scalar(0.0)).to_vec::<f32>(), vec![3.0, 4.0]);
    /// ```
    pub fn try_boolean_mask(&self, mask: &Tensor) -> Result<Tensor> {
        let k = mask.ndim();
        if mask.dtype() != DType::Bool || k > self.ndim() || mask.shape() != &self.shape()[..k] {
            return Err(Error::InvalidArgument {
                op: "boolean_mask",
                msg: format!(
                    "the mask must be a bool tensor of the leading shape of {}, got a {} tensor of shape {}",
                    self.shape_display(),
                    mask.dtype().name(),
                    mask.shape_display()
                ),
            });
        }
        if crate::trace::jit_traced(mask) {
            return Err(Error::TracedValueRead {
                shape: mask.shape_display(),
                what: "boolean_mask",
            });
        }
        let picks: Vec<i64> = mask
            .to_vec_unchecked::<bool>()
            .iter()
            .enumerate()
            .filter(|(_, &m)| m)
            .map(|(i, _)| i as i64)
            .collect();
        let lead: usize = self.shape()[..k].iter().product();
        let mut flat = vec![lead];
        flat.extend_from_slice(&self.shape()[k..]);
        let n = picks.len();
        self.try_reshape_to(&flat)?
            .try_take(&Tensor::from_vec(picks, &[n])?, 0)
    }
    /// Infallible form of [`Tensor::try_boolean_mask`].
    #[track_caller]
    pub fn boolean_mask(&self, mask: &Tensor) -> Tensor {
        ok(self.try_boolean_mask(mask))
    }
}

/// One-hot rows of `num_classes` float32 values for integer `labels` (shape `labels.shape ++
/// [num_classes]`); a label outside `0..num_classes` gives a row of zeros (as `jax.nn.one_hot`).
///
/// ```
/// use stategrad_core::{one_hot, Tensor};
/// let y = one_hot(&Tensor::new([2i32, 0, 7]), 3);
/// assert_eq!(y.to_vec::<f32>(), vec![0., 0., 1., 1., 0., 0., 0., 0., 0.]);
/// ```
#[track_caller]
pub fn one_hot(labels: &Tensor, num_classes: usize) -> Tensor {
    ok(try_one_hot_dtype(labels, num_classes, DType::F32))
}

/// [`one_hot`] of `dtype`, or an error for a label tensor that is not integer.
pub fn try_one_hot_dtype(labels: &Tensor, num_classes: usize, dtype: DType) -> Result<Tensor> {
    if !labels.dtype().is_int() {
        return Err(Error::UnsupportedDType {
            op: "one_hot",
            dtype: labels.dtype().name(),
            expected: "int32 or int64 labels",
        });
    }
    let classes = Tensor::arange_dtype(0.0, num_classes as f64, 1.0, labels.dtype())?;
    let mut col = labels.shape().to_vec();
    col.push(1);
    Ok(labels.try_reshape_to(&col)?.try_eq(&classes)?.cast(dtype))
}
