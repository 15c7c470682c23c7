//! Layout primitives: broadcasts, reshapes, permutations, slices, padding, concatenation,
//! and the gradient barrier.

use super::*;
use crate::error::{Error, Result};
use crate::tensor::{Buffer, DType, Elem, Shape, Tensor};
use stategrad_simd as simd;
use std::sync::Arc;

/// Broadcast to a larger shape (materialised).
#[derive(Debug)]
pub(crate) struct BroadcastTo(pub Shape);

impl Primitive for BroadcastTo {
    fn name(&self) -> &'static str {
        "broadcast_in_dim"
    }
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        data::one_dtype(self.name(), inputs)
    }
    fn fusion(&self) -> Option<Fusion> {
        Some(Fusion::Splat)
    }
    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Option<Kernel> {
        Some(if inputs[0] == out {
            Kernel::Copy
        } else {
            Kernel::Gather {
                strides: broadcast_strides(inputs[0], out),
                out: out.into(),
            }
        })
    }
    fn batch(&self, _: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        let x = align_batched(inputs[0], true, self.0.len())?;
        let mut shape: Shape = Shape::from_slice(&[x.shape()[0]]);
        shape.extend_from_slice(&self.0);
        apply(Arc::new(BroadcastTo(shape)), &[&x])
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        let shape = broadcast_shapes("broadcast_to", x.shape(), &self.0)?;
        if shape.as_slice() != self.0.as_slice() {
            return Err(Error::ShapeMismatch {
                op: "broadcast_to",
                lhs: x.shape().into(),
                rhs: self.0.as_slice().into(),
            });
        }
        if x.shape() == shape.as_slice() {
            return Ok(x.detach());
        }
        if x.numel() == 1 && x.dtype().is_float() {
            // A scalar broadcast is a fill, not a strided gather.
            let n = shape.iter().product();
            return Ok(Tensor::from_buffer(
                Buffer::filled(x.dtype(), n, x.buf().get_f64(0)),
                &shape,
            ));
        }
        let st = broadcast_strides(x.shape(), &shape);
        Ok(gather(x, &st, 0, &shape))
    }
    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        _: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(sum_to_batched(g, nb, inputs[0].shape())?)])
    }
}

pub(crate) fn gather(x: &Tensor, strides: &[usize], offset: usize, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let out = match x.buf() {
        Buffer::I32(a) => Buffer::I32(data::gather(a, strides, offset, shape)),
        Buffer::I64(a) => Buffer::I64(data::gather(a, strides, offset, shape)),
        Buffer::Bool(a) => Buffer::Bool(data::gather(a, strides, offset, shape)),
        _ => fill_like!(x, n, |a, o| simd::gather_strided(
            a, strides, offset, shape, o
        )),
    };
    Tensor::from_buffer(out, shape)
}

/// The identity with a zero derivative (JAX's `lax.stop_gradient`). Unlike
/// [`Tensor::detach`], which makes a constant, it stays a step of a `jit` program, so every
/// replay recomputes it from that call's inputs.
#[derive(Debug)]
pub(crate) struct StopGradient;

impl Primitive for StopGradient {
    fn name(&self) -> &'static str {
        "stop_gradient"
    }
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        data::one_dtype(self.name(), inputs)
    }
    fn fusion(&self) -> Option<Fusion> {
        Some(Fusion::Copy)
    }
    fn lower(&self, _: &[&[usize]], _: &[usize]) -> Option<Kernel> {
        Some(Kernel::Copy)
    }
    fn batch(&self, this: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        apply(this.clone(), inputs)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        Ok(inputs[0].detach())
    }
    fn vjp(
        &self,
        _: &[&Tensor],
        _: &Tensor,
        _: &Tensor,
        _: &[bool],
        _nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None])
    }
}

/// Same data, another shape (no copy).
#[derive(Debug)]
pub(crate) struct Reshape(pub Shape);

impl Primitive for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        data::one_dtype(self.name(), inputs)
    }
    fn fusion(&self) -> Option<Fusion> {
        Some(Fusion::Copy)
    }
    fn lower(&self, _: &[&[usize]], _: &[usize]) -> Option<Kernel> {
        Some(Kernel::Copy)
    }
    fn batch(&self, _: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        let mut shape: Shape = Shape::from_slice(&[inputs[0].shape()[0]]);
        shape.extend_from_slice(&self.0);
        apply(Arc::new(Reshape(shape)), inputs)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        Ok(Tensor::from_parts(
            x.0.buf.clone(),
            self.0.clone(),
            Default::default(),
        ))
    }
    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        _: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.try_reshape_to(&batched(
            g,
            nb,
            inputs[0].shape(),
        ))?)])
    }
}

/// Axis permutation (materialised).
#[derive(Debug)]
pub(crate) struct Permute(pub Vec<usize>);

impl Primitive for Permute {
    fn name(&self) -> &'static str {
        "transpose"
    }
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        data::one_dtype(self.name(), inputs)
    }
    fn batch(&self, _: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        let perm: Vec<usize> = std::iter::once(0)
            .chain(self.0.iter().map(|p| p + 1))
            .collect();
        apply(Arc::new(Permute(perm)), inputs)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        let cs = contiguous_strides(x.shape());
        let shape: Shape = self.0.iter().map(|&p| x.shape()[p]).collect();
        let st: Vec<usize> = self.0.iter().map(|&p| cs[p]).collect();
        Ok(gather(x, &st, 0, &shape))
    }
    fn vjp(
        &self,
        _: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        _: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        let mut inv = vec![0; self.0.len()];
        for (i, &p) in self.0.iter().enumerate() {
            inv[p] = i;
        }
        let perm: Vec<usize> = (0..nb).chain(inv.iter().map(|&p| p + nb)).collect();
        Ok(vec![Some(g.try_permute(&perm)?)])
    }
}

/// Strided slice `start..end` step `step` (step >= 1) on every axis.
#[derive(Debug)]
pub(crate) struct Slice {
    pub starts: Vec<usize>,
    pub ends: Vec<usize>,
    pub steps: Vec<usize>,
}

impl Primitive for Slice {
    fn name(&self) -> &'static str {
        "slice"
    }
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        data::one_dtype(self.name(), inputs)
    }
    fn batch(&self, _: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        let shifted = Slice {
            starts: std::iter::once(0)
                .chain(self.starts.iter().copied())
                .collect(),
            ends: std::iter::once(inputs[0].shape()[0])
                .chain(self.ends.iter().copied())
                .collect(),
            steps: std::iter::once(1)
                .chain(self.steps.iter().copied())
                .collect(),
        };
        apply(Arc::new(shifted), inputs)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        let cs = contiguous_strides(x.shape());
        let shape: Shape = (0..x.ndim())
            .map(|i| (self.ends[i].saturating_sub(self.starts[i])).div_ceil(self.steps[i]))
            .collect();
        let st: Vec<usize> = (0..x.ndim()).map(|i| cs[i] * self.steps[i]).collect();
        let off: usize = (0..x.ndim()).map(|i| cs[i] * self.starts[i]).sum();
        if shape.iter().product::<usize>() == 0 {
            return Ok(Tensor::full_dtype(&shape, 0.0, x.dtype()));
        }
        Ok(gather(x, &st, off, &shape))
    }
    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        _: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = inputs[0];
        let pad = Arc::new(Pad {
            starts: std::iter::repeat_n(0, nb)
                .chain(self.starts.iter().copied())
                .collect(),
            steps: std::iter::repeat_n(1, nb)
                .chain(self.steps.iter().copied())
                .collect(),
            shape: batched(g, nb, x.shape()).into(),
        });
        Ok(vec![Some(apply(pad, &[g])?)])
    }
}

/// `out[offset + Σ idx·strides] = src[idx]` for every index of a contiguous `src` of `shape`.
fn scatter_strided<T: Copy>(
    src: &[T],
    strides: &[usize],
    offset: usize,
    shape: &[usize],
    out: &mut [T],
) {
    let nd = shape.len();
    let mut idx = vec![0usize; nd];
    let mut pos = offset;
    for &v in src {
        out[pos] = v;
        for d in (0..nd).rev() {
            idx[d] += 1;
            pos += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            pos -= strides[d] * shape[d];
            idx[d] = 0;
        }
    }
}

/// Scatter into zeros of `shape` at `start + i*step`: the transpose of [`Slice`].
#[derive(Debug)]
pub(crate) struct Pad {
    pub starts: Vec<usize>,
    pub steps: Vec<usize>,
    pub shape: Shape,
}

impl Primitive for Pad {
    fn name(&self) -> &'static str {
        "pad"
    }
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        data::one_dtype(self.name(), inputs)
    }
    fn batch(&self, _: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        let shifted = Pad {
            starts: std::iter::once(0)
                .chain(self.starts.iter().copied())
                .collect(),
            steps: std::iter::once(1)
                .chain(self.steps.iter().copied())
                .collect(),
            shape: std::iter::once(inputs[0].shape()[0])
                .chain(self.shape.iter().copied())
                .collect(),
        };
        apply(Arc::new(shifted), inputs)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let g = inputs[0];
        let n: usize = self.shape.iter().product();
        let cs = contiguous_strides(&self.shape);
        // Each source element lands at `start + i*step` per axis: element strides of the output.
        let offset: usize = (0..g.ndim()).map(|d| self.starts[d] * cs[d]).sum();
        let strides: Vec<usize> = (0..g.ndim()).map(|d| self.steps[d] * cs[d]).collect();
        let out = fill_like!(any zeroed g, n, |src, o| scatter_strided(
            src,
            &strides,
            offset,
            g.shape(),
            o
        ));
        Ok(Tensor::from_buffer(out, &self.shape))
    }
    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        _: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = inputs[0];
        let ends: Vec<usize> = (0..x.ndim())
            .map(|d| self.starts[d] + (x.shape()[d].saturating_sub(1)) * self.steps[d] + 1)
            .collect();
        let sl = Arc::new(Slice {
            starts: std::iter::repeat_n(0, nb)
                .chain(self.starts.iter().copied())
                .collect(),
            ends: g.shape()[..nb].iter().copied().chain(ends).collect(),
            steps: std::iter::repeat_n(1, nb)
                .chain(self.steps.iter().copied())
                .collect(),
        });
        Ok(vec![Some(apply(sl, &[g])?)])
    }
}

/// Copy the blocks of `inputs` (all of `T`'s dtype) into `out`, interleaved along `axis`.
fn concat_into<T: Elem>(
    inputs: &[&Tensor],
    axis: usize,
    outer: usize,
    inner: usize,
    out: &mut [T],
) {
    let mut pos = 0;
    for o in 0..outer {
        for t in inputs {
            let w = t.shape()[axis] * inner;
            let src = T::slice(t.buf()).expect("internal error: concat operands share a dtype");
            out[pos..pos + w].copy_from_slice(&src[o * w..(o + 1) * w]);
            pos += w;
        }
    }
}

/// Concatenation along `axis`.
#[derive(Debug)]
pub(crate) struct Concat(pub usize);

impl Primitive for Concat {
    fn name(&self) -> &'static str {
        "concatenate"
    }
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        data::one_dtype(self.name(), inputs)
    }
    fn batch(
        &self,
        _: &Arc<dyn Primitive>,
        inputs: &[&Tensor],
        batched: &[bool],
    ) -> Result<Tensor> {
        // Every operand gets the batch axis (shared ones are broadcast along it).
        let n = batch_size(inputs, batched);
        let all: Vec<Tensor> = inputs
            .iter()
            .zip(batched)
            .map(|(t, &b)| {
                if b {
                    Ok((*t).clone())
                } else {
                    let mut shape = vec![n];
                    shape.extend_from_slice(t.shape());
                    t.try_broadcast_to(&shape)
                }
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = all.iter().collect();
        apply(Arc::new(Concat(self.0 + 1)), &refs)
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let axis = self.0;
        let first = inputs[0];
        for t in inputs {
            let ok = t.ndim() == first.ndim()
                && (0..t.ndim()).all(|d| d == axis || t.shape()[d] == first.shape()[d]);
            if !ok {
                return Err(Error::ShapeMismatch {
                    op: "concatenate",
                    lhs: first.shape().into(),
                    rhs: t.shape().into(),
                });
            }
        }
        let mut shape: Shape = first.shape().into();
        shape[axis] = inputs
            .iter()
            .try_fold(0usize, |acc, t| acc.checked_add(t.shape()[axis]))
            .ok_or_else(|| Error::ShapeOverflow {
                op: "concatenate",
                shape: first.shape().into(),
            })?;
        let total = crate::tensor::shape_numel("concatenate", &shape)?;
        let outer: usize = first.shape()[..axis].iter().product();
        let inner: usize = first.shape()[axis + 1..].iter().product();
        let out = fill_like!(any first, total, |_x, o| concat_into(
            inputs, axis, outer, inner, o
        ));
        Ok(Tensor::from_buffer(out, &shape))
    }
    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        needs: &[bool],
        nb: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        let mut start = 0;
        let mut res = Vec::with_capacity(inputs.len());
        for (t, &need) in inputs.iter().zip(needs) {
            let len = t.shape()[self.0];
            res.push(
                need.then(|| g.try_slice_axis(self.0 + nb, start, start + len))
                    .transpose()?,
            );
            start += len;
        }
        Ok(res)
    }
}
