//! Layout operations: reshape, broadcast, permute, slice, index, concatenate, stack. None of
//! them computes; each is one primitive whose derivative moves values back.

use crate::error::{Error, Result};
use crate::ops::{normalize_axis, ok};
use crate::prim::{apply, BroadcastTo, Concat, Permute, Reshape, Slice};
use crate::tensor::Tensor;
use std::sync::Arc;

impl Tensor {
    /// Reshape to `shape` (same number of elements; no copy).
    pub fn try_reshape_to(&self, shape: &[usize]) -> Result<Tensor> {
        if crate::tensor::shape_numel("reshape", shape)? != self.numel() {
            return Err(Error::InvalidArgument {
                op: "reshape",
                msg: format!(
                    "cannot reshape {} into {}",
                    self.shape_display(),
                    crate::error::ShapeDisplay(shape.to_vec())
                ),
            });
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        apply(Arc::new(Reshape(shape.into())), &[self])
    }

    /// Reshape with numpy rules: one dimension may be `-1` (inferred).
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let x = Tensor::linspace(-1.0, 1.0, 5).reshape(&[-1, 1]);
    /// assert_eq!(x.shape(), &[5, 1]);
    /// ```
    pub fn try_reshape(&self, shape: &[isize]) -> Result<Tensor> {
        let infer = shape.iter().filter(|&&d| d < 0).count();
        let bad = || Error::InvalidArgument {
            op: "reshape",
            msg: format!("cannot reshape {} into {shape:?}", self.shape_display()),
        };
        if infer > 1 || shape.iter().any(|&d| d < -1) {
            return Err(bad());
        }
        let known_dims: Vec<usize> = shape
            .iter()
            .filter(|&&d| d >= 0)
            .map(|&d| d as usize)
            .collect();
        let known = crate::tensor::shape_numel("reshape", &known_dims)?;
        let dims: Vec<usize> = shape
            .iter()
            .map(|&d| {
                if d >= 0 {
                    Ok(d as usize)
                } else if known > 0 && self.numel().is_multiple_of(known) {
                    Ok(self.numel() / known)
                } else {
                    Err(bad())
                }
            })
            .collect::<Result<_>>()?;
        self.try_reshape_to(&dims)
    }

    /// Infallible form of [`Tensor::try_reshape`].
    #[track_caller]
    pub fn reshape(&self, shape: &[isize]) -> Tensor {
        ok(self.try_reshape(shape))
    }

    /// Broadcast to `shape` (numpy rules).
    pub fn try_broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        apply(Arc::new(BroadcastTo(shape.into())), &[self])
    }

    /// Infallible form of [`Tensor::try_broadcast_to`].
    #[track_caller]
    pub fn broadcast_to(&self, shape: &[usize]) -> Tensor {
        ok(self.try_broadcast_to(shape))
    }

    /// Permute axes: output axis `i` is input axis `perm[i]`.
    pub fn try_permute(&self, perm: &[usize]) -> Result<Tensor> {
        let mut seen = vec![false; self.ndim()];
        if perm.len() != self.ndim()
            || perm
                .iter()
                .any(|&p| p >= self.ndim() || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::InvalidArgument {
                op: "transpose",
                msg: format!(
                    "{perm:?} is not a permutation of the axes of {}",
                    self.shape_display()
                ),
            });
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(self.clone());
        }
        apply(Arc::new(Permute(perm.to_vec())), &[self])
    }

    /// Infallible form of [`Tensor::try_permute`].
    #[track_caller]
    pub fn permute(&self, perm: &[usize]) -> Tensor {
        ok(self.try_permute(perm))
    }

    /// Reverse the axes (`x.T`).
    #[track_caller]
    pub fn t(&self) -> Tensor {
        let perm: Vec<usize> = (0..self.ndim()).rev().collect();
        self.permute(&perm)
    }

    /// Swap two axes.
    pub fn try_swap_axes(&self, a: isize, b: isize) -> Result<Tensor> {
        let a = normalize_axis("swapaxes", a, self.ndim())?;
        let b = normalize_axis("swapaxes", b, self.ndim())?;
        let mut perm: Vec<usize> = (0..self.ndim()).collect();
        perm.swap(a, b);
        self.try_permute(&perm)
    }

    /// `self[..., start..end:step, ...]` on one axis.
    pub fn try_slice_axis_step(
        &self,
        axis: usize,
        start: usize,
        end: usize,
        step: usize,
    ) -> Result<Tensor> {
        if axis >= self.ndim() || start > end || end > self.shape()[axis] || step == 0 {
            return Err(Error::InvalidArgument {
                op: "slice",
                msg: format!(
                    "range {start}..{end} step {step} on axis {axis} of a tensor of shape {}",
                    self.shape_display()
                ),
            });
        }
        if start == 0 && end == self.shape()[axis] && step == 1 {
            return Ok(self.clone());
        }
        let mut first = vec![0; self.ndim()];
        let mut steps = vec![1; self.ndim()];
        let mut lens = self.shape().to_vec();
        lens[axis] = (end - start).div_ceil(step);
        first[axis] = if lens[axis] == 0 { 0 } else { start };
        // With two or more elements the step is below the axis length (so it fits an isize and
        // `step * stride` stays within the tensor); otherwise it reads nothing and is 1.
        steps[axis] = if lens[axis] <= 1 { 1 } else { step as isize };
        apply(
            Arc::new(Slice {
                first,
                steps,
                lens: lens.into(),
            }),
            &[self],
        )
    }

    /// `self[..., start..end, ...]` on one axis.
    pub fn try_slice_axis(&self, axis: usize, start: usize, end: usize) -> Result<Tensor> {
        self.try_slice_axis_step(axis, start, end, 1)
    }

    /// Infallible form of [`Tensor::try_slice_axis`].
    #[track_caller]
    pub fn slice_axis(&self, axis: usize, start: usize, end: usize) -> Tensor {
        ok(self.try_slice_axis(axis, start, end))
    }

    /// Element `i` along `axis`, removing that axis (`x[:, i]`). Negative `i` counts from the end.
    pub fn try_index_axis(&self, axis: usize, i: isize) -> Result<Tensor> {
        let len = *self
            .shape()
            .get(axis)
            .ok_or_else(|| Error::InvalidArgument {
                op: "index",
                msg: format!(
                    "axis {axis} out of range for shape {}",
                    self.shape_display()
                ),
            })? as isize;
        let j = if i < 0 { i + len } else { i };
        if j < 0 || j >= len {
            return Err(Error::InvalidArgument {
                op: "index",
                msg: format!("index {i} is out of bounds for axis {axis} with size {len}"),
            });
        }
        let s = self.try_slice_axis(axis, j as usize, j as usize + 1)?;
        let mut shape: Vec<usize> = self.shape().to_vec();
        shape.remove(axis);
        s.try_reshape_to(&shape)
    }

    /// `x[i]`: element `i` along the first axis. Negative `i` counts from the end.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let x = Tensor::new([1.0f32, 2.0]);
    /// assert_eq!(x.at(1).item().unwrap(), 2.0);
    /// ```
    #[track_caller]
    pub fn at(&self, i: isize) -> Tensor {
        ok(self.try_index_axis(0, i))
    }

    /// Join tensors along an existing axis (promoting to the widest dtype). Joining one tensor
    /// returns it, without a copy.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let (a, b) = (Tensor::new([1.0f32, 2.0]), Tensor::new([3.0f32]));
    /// assert_eq!(Tensor::try_concat(&[&a, &b], 0).unwrap().to_string(), "[1. 2. 3.]");
    /// assert_eq!(Tensor::try_concat(&[&a], 0).unwrap().to_string(), "[1. 2.]");
    /// assert!(Tensor::try_concat(&[], 0).is_err());
    /// ```
    pub fn try_concat(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::InvalidArgument {
            op: "concatenate",
            msg: "needs at least one tensor".into(),
        })?;
        if first.ndim() == 0 {
            return Err(Error::InvalidArgument {
                op: "concatenate",
                msg: "zero-dimensional tensors cannot be concatenated; use stack".into(),
            });
        }
        let axis = normalize_axis("concatenate", axis, first.ndim())?;
        if tensors.len() == 1 {
            // Tensors are values: joining one is that one, with no copy (a Jacobian of one
            // chunk is its chunk; the copy of a 512x512 one cost 40-106 µs of W4's Hessian).
            return Ok((*first).clone());
        }
        let dt = tensors.iter().map(|t| t.dtype()).max().unwrap_or_default();
        let cast: Vec<Tensor> = tensors.iter().map(|t| t.cast(dt)).collect();
        let refs: Vec<&Tensor> = cast.iter().collect();
        apply(Arc::new(Concat(axis)), &refs)
    }

    /// Infallible form of [`Tensor::try_concat`].
    #[track_caller]
    pub fn concat(tensors: &[&Tensor], axis: isize) -> Tensor {
        ok(Tensor::try_concat(tensors, axis))
    }

    /// Join tensors of one shape along a new axis.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let (a, b) = (Tensor::scalar(1.0f32), Tensor::scalar(2.0f32));
    /// assert_eq!(Tensor::stack(&[&a, &b], 0).to_string(), "[1. 2.]");
    /// ```
    pub fn try_stack(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::InvalidArgument {
            op: "stack",
            msg: "needs at least one tensor".into(),
        })?;
        let axis = normalize_axis("stack", axis, first.ndim() + 1)?;
        let expanded: Vec<Tensor> = tensors
            .iter()
            .map(|t| {
                if t.shape() != first.shape() {
                    return Err(Error::ShapeMismatch {
                        op: "stack",
                        lhs: first.shape().into(),
                        rhs: t.shape().into(),
                    });
                }
                let mut s: Vec<usize> = t.shape().to_vec();
                s.insert(axis, 1);
                t.try_reshape_to(&s)
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = expanded.iter().collect();
        Tensor::try_concat(&refs, axis as isize)
    }

    /// Infallible form of [`Tensor::try_stack`].
    #[track_caller]
    pub fn stack(tensors: &[&Tensor], axis: isize) -> Tensor {
        ok(Tensor::try_stack(tensors, axis))
    }
}
