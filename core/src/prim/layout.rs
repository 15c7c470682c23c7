//! Layout primitives: broadcasts, reshapes, permutations, concatenation, and the gradient
//! barrier (slices are in [`super::slice`]).

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
                offset: 0,
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
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        let x = inputs[0];
        let shape = broadcast_shapes("broadcast_to", x.shape(), &self.0)?;
        if shape.as_slice() != self.0.as_slice() {
            return Err(Error::ShapeMismatch {
                op: "broadcast_to",
                lhs: x.shape().into(),
                rhs: self.0.as_slice().into(),
            });
        }
        Ok(Aval::new(shape, x.dtype()))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        let shape = self.abstract_eval(inputs)?.shape;
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
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.try_sum_to(inputs[0].shape())?)])
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
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        Ok(Aval::like(inputs[0]))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        Ok(inputs[0].untagged())
    }
    fn vjp(
        &self,
        _: &[&Tensor],
        _: &Tensor,
        _: &Tensor,
        _: &[bool],
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
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        let x = inputs[0];
        if self.0.iter().product::<usize>() != x.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: x.shape().into(),
                rhs: self.0.as_slice().into(),
            });
        }
        Ok(Aval::new(self.0.clone(), x.dtype()))
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
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.try_reshape_to(inputs[0].shape())?)])
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
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        let x = inputs[0];
        let shape: Shape = self.0.iter().map(|&p| x.shape()[p]).collect();
        Ok(Aval::new(shape, x.dtype()))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        let cs = contiguous_strides(x.shape());
        let shape = self.abstract_eval(inputs)?.shape;
        let st: Vec<usize> = self.0.iter().map(|&p| cs[p]).collect();
        Ok(gather(x, &st, 0, &shape))
    }
    fn vjp(
        &self,
        _: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        _: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        let mut inv = vec![0; self.0.len()];
        for (i, &p) in self.0.iter().enumerate() {
            inv[p] = i;
        }
        Ok(vec![Some(g.try_permute(&inv)?)])
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
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
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
        crate::tensor::shape_numel("concatenate", &shape)?;
        Ok(Aval::new(shape, first.dtype()))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let axis = self.0;
        let first = inputs[0];
        let shape = self.abstract_eval(inputs)?.shape;
        let total = shape.iter().product();
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
    ) -> Result<Vec<Option<Tensor>>> {
        let mut start = 0;
        let mut res = Vec::with_capacity(inputs.len());
        for (t, &need) in inputs.iter().zip(needs) {
            let len = t.shape()[self.0];
            res.push(
                need.then(|| g.try_slice_axis(self.0, start, start + len))
                    .transpose()?,
            );
            start += len;
        }
        Ok(res)
    }
}
