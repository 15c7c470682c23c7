//! Indexing primitives: the gather `take_along_axis`, its transpose the scatter-add, and
//! `argmax`/`argmin`. `take`, `index_select`, `one_hot`, `index_add` and boolean masks are
//! written with these (see `crate::index_ops`), so one gather and one scatter carry every rule.

use super::*;
use crate::error::{Error, Result};
use crate::tensor::{Buffer, DType, Elem, Shape, Tensor};
use std::sync::Arc;

/// The shape `take_along_axis` gives: `x` and `idx` broadcast against each other on every axis
/// but `axis`, which has `idx`'s length.
fn along_shape(op: &'static str, x: &[usize], idx: &[usize], axis: usize) -> Result<Shape> {
    if x.len() != idx.len() || axis >= x.len() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.into(),
            rhs: idx.into(),
        });
    }
    let mut xa: Vec<usize> = x.to_vec();
    xa[axis] = idx[axis];
    broadcast_shapes(op, &xa, idx)
}

/// The indices as `i64`, each checked against `n` and wrapped from the end when negative (numpy).
fn checked_indices(op: &'static str, idx: &Tensor, n: usize) -> Result<Vec<i64>> {
    let raw: Vec<i64> = match idx.buf() {
        Buffer::I32(v) => v.iter().map(|&i| i64::from(i)).collect(),
        Buffer::I64(v) => v.clone(),
        _ => return Err(data::unsupported(op, idx.dtype(), "int32 or int64 indices")),
    };
    let len = i64::try_from(n).unwrap_or(i64::MAX);
    raw.into_iter()
        .map(|i| {
            let j = if i < 0 { i.checked_add(len) } else { Some(i) };
            match j {
                Some(j) if (0..len).contains(&j) => Ok(j),
                _ => Err(Error::InvalidArgument {
                    op,
                    msg: format!("index {i} is out of bounds for an axis of size {n}"),
                }),
            }
        })
        .collect()
}

/// Strides of `shape` read in the index space of `out` (0 where `shape` has size 1 and `out` not).
fn strides_in(shape: &[usize], out: &[usize]) -> Vec<usize> {
    broadcast_strides(shape, out)
}

fn index_dtype(op: &'static str, d: DType) -> Result<()> {
    if d.is_int() {
        Ok(())
    } else {
        Err(data::unsupported(op, d, "int32 or int64 indices"))
    }
}

/// `out[..., j, ...] = x[..., idx[..., j, ...], ...]` along `axis` (numpy's `take_along_axis`,
/// with `x` and `idx` broadcast on the other axes). Inputs: `x`, `idx`.
#[derive(Debug)]
pub(crate) struct TakeAlong {
    pub axis: usize,
}

impl Primitive for TakeAlong {
    fn name(&self) -> &'static str {
        "take_along_axis"
    }
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        index_dtype(self.name(), inputs[1])
    }
    fn batch(
        &self,
        _: &Arc<dyn Primitive>,
        inputs: &[&Tensor],
        batched: &[bool],
    ) -> Result<Tensor> {
        let x = lead_axis(inputs[0], batched[0])?;
        let idx = lead_axis(inputs[1], batched[1])?;
        apply(
            Arc::new(TakeAlong {
                axis: self.axis + 1,
            }),
            &[&x, &idx],
        )
    }
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        let (x, idx) = (inputs[0], inputs[1]);
        let shape = along_shape(self.name(), x.shape(), idx.shape(), self.axis)?;
        Ok(Aval::new(shape, x.dtype()))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let (x, idx) = (inputs[0], inputs[1]);
        let shape = self.abstract_eval(inputs)?.shape;
        let n = x.shape()[self.axis];
        let ids = checked_indices(self.name(), idx, n)?;
        let mut sx = strides_in(x.shape(), &shape);
        // The axis is read through the index, not walked.
        let axis_stride = contiguous_strides(x.shape())[self.axis];
        sx[self.axis] = 0;
        let si = strides_in(idx.shape(), &shape);
        fn run<T: Elem>(
            a: &[T],
            ids: &[i64],
            sx: &[usize],
            si: &[usize],
            st: usize,
            shape: &[usize],
        ) -> Vec<T> {
            let mut out = Vec::with_capacity(shape.iter().product());
            // When the last axis is walked in `x` and the index is constant along it (`take`
            // of rows: a batch, an embedding lookup), each index names a contiguous run.
            if let (Some((&run @ 1.., outer)), Some(&1), Some(&0)) =
                (shape.split_last(), sx.last(), si.last())
            {
                let k = outer.len();
                data::for_each_offset(outer, [&sx[..k], &si[..k]], [0, 0], |[o, i]| {
                    let start = o + ids[i] as usize * st;
                    out.extend_from_slice(&a[start..start + run]);
                });
                return out;
            }
            data::for_each_offset(shape, [sx, si], [0, 0], |[o, i]| {
                out.push(a[o + ids[i] as usize * st]);
            });
            out
        }
        let out = match x.buf() {
            Buffer::F32(a) => Buffer::F32(run(a, &ids, &sx, &si, axis_stride, &shape)),
            Buffer::F64(a) => Buffer::F64(run(a, &ids, &sx, &si, axis_stride, &shape)),
            Buffer::I32(a) => Buffer::I32(run(a, &ids, &sx, &si, axis_stride, &shape)),
            Buffer::I64(a) => Buffer::I64(run(a, &ids, &sx, &si, axis_stride, &shape)),
            Buffer::Bool(a) => Buffer::Bool(run(a, &ids, &sx, &si, axis_stride, &shape)),
        };
        Ok(Tensor::from_buffer(out, &shape))
    }
    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        if !needs[0] {
            return Ok(vec![None, None]);
        }
        let (x, idx) = (inputs[0], inputs[1]);
        let scatter = ScatterAlong {
            axis: self.axis,
            shape: x.shape().into(),
        };
        Ok(vec![Some(apply(Arc::new(scatter), &[g, idx])?), None])
    }
}

/// An input with its batch axis in front: batched ones as they are, shared ones with a leading
/// axis of size 1 (broadcast by the along primitives).
fn lead_axis(t: &Tensor, batched: bool) -> Result<Tensor> {
    if batched {
        Ok(t.clone())
    } else {
        t.try_reshape_to(&[&[1], t.shape()].concat())
    }
}

/// The transpose of [`TakeAlong`]: zeros of `shape` with each element of `g` added at the
/// position its index names along `axis` (repeated indices accumulate). Inputs: `g`, `idx`.
#[derive(Debug)]
pub(crate) struct ScatterAlong {
    pub axis: usize,
    pub shape: Shape,
}

impl Primitive for ScatterAlong {
    fn name(&self) -> &'static str {
        "scatter_add"
    }
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        data::floats_only(self.name(), &inputs[..1])?;
        index_dtype(self.name(), inputs[1])
    }
    fn batch(
        &self,
        _: &Arc<dyn Primitive>,
        inputs: &[&Tensor],
        batched: &[bool],
    ) -> Result<Tensor> {
        let g = lead_axis(inputs[0], batched[0])?;
        let idx = lead_axis(inputs[1], batched[1])?;
        let b = if batched[0] {
            g.shape()[0]
        } else {
            idx.shape()[0]
        };
        let shape: Shape = std::iter::once(b)
            .chain(self.shape.iter().copied())
            .collect();
        apply(
            Arc::new(ScatterAlong {
                axis: self.axis + 1,
                shape,
            }),
            &[&g, &idx],
        )
    }
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        let (g, idx) = (inputs[0], inputs[1]);
        if g.ndim() != self.shape.len()
            || idx.ndim() != self.shape.len()
            || self.axis >= self.shape.len()
        {
            return Err(Error::ShapeMismatch {
                op: self.name(),
                lhs: g.shape().into(),
                rhs: self.shape.as_slice().into(),
            });
        }
        // The iteration space: `g` and `idx` broadcast; it must be what a gather from `shape`
        // with `idx` would give.
        let space = broadcast_shapes(self.name(), g.shape(), idx.shape())?;
        let expect = along_shape(self.name(), &self.shape, idx.shape(), self.axis)?;
        if space != expect {
            return Err(Error::ShapeMismatch {
                op: self.name(),
                lhs: g.shape().into(),
                rhs: expect.as_slice().into(),
            });
        }
        Ok(Aval::new(self.shape.clone(), g.dtype()))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let (g, idx) = (inputs[0], inputs[1]);
        self.abstract_eval(inputs)?;
        let space = broadcast_shapes(self.name(), g.shape(), idx.shape())?;
        let n = self.shape[self.axis];
        let ids = checked_indices(self.name(), idx, n)?;
        let mut so = strides_in(&self.shape, &space);
        let axis_stride = contiguous_strides(&self.shape)[self.axis];
        so[self.axis] = 0;
        let sg = strides_in(g.shape(), &space);
        let si = strides_in(idx.shape(), &space);
        let total = crate::tensor::shape_numel(self.name(), &self.shape)?;
        fn run<T: stategrad_simd::Element>(
            gv: &[T],
            ids: &[i64],
            so: &[usize],
            sg: &[usize],
            si: &[usize],
            st: usize,
            space: &[usize],
            out: &mut [T],
        ) {
            data::for_each_offset(space, [so, sg, si], [0, 0, 0], |[o, j, i]| {
                let p = o + ids[i] as usize * st;
                out[p] += gv[j];
            });
        }
        let mut out = Buffer::filled(g.dtype(), total, 0.0);
        match (g.buf(), &mut out) {
            (Buffer::F32(gv), Buffer::F32(o)) => {
                run(gv, &ids, &so, &sg, &si, axis_stride, &space, o)
            }
            (Buffer::F64(gv), Buffer::F64(o)) => {
                run(gv, &ids, &so, &sg, &si, axis_stride, &space, o)
            }
            _ => unreachable!("float dtype checked by the dtype rule"),
        }
        Ok(Tensor::from_buffer(out, &self.shape))
    }
    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        ct: &Tensor,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        if !needs[0] {
            return Ok(vec![None, None]);
        }
        let (g, idx) = (inputs[0], inputs[1]);
        let taken = apply(Arc::new(TakeAlong { axis: self.axis }), &[ct, idx])?;
        // `g` may have been broadcast against the indices: sum back to its shape.
        Ok(vec![Some(taken.try_sum_to(g.shape())?), None])
    }
}

/// The index of the largest (`max`) or smallest element along `axis`, as int32 (int64 for an
/// axis longer than `i32::MAX`); the first one
/// on ties, and the first NaN if there is one (numpy). Not differentiable.
#[derive(Debug)]
pub(crate) struct ArgReduce {
    pub max: bool,
    pub axis: usize,
    pub keepdims: bool,
}

impl Primitive for ArgReduce {
    fn name(&self) -> &'static str {
        if self.max {
            "argmax"
        } else {
            "argmin"
        }
    }
    fn check_dtypes(&self, _: &[DType]) -> Result<()> {
        Ok(())
    }
    fn batch(&self, _: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        let shifted = ArgReduce {
            max: self.max,
            axis: self.axis + 1,
            keepdims: self.keepdims,
        };
        apply(Arc::new(shifted), inputs)
    }
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        let x = inputs[0];
        let n = x.shape()[self.axis];
        if n == 0 {
            return Err(Error::InvalidArgument {
                op: self.name(),
                msg: "attempt to get the index of an extreme of an empty sequence".into(),
            });
        }
        let shape = super::reduced_shape(x.shape(), &[self.axis], self.keepdims);
        // int32 as in JAX, unless the axis is too long for it.
        let dtype = if i32::try_from(n).is_ok() {
            DType::I32
        } else {
            DType::I64
        };
        Ok(Aval::new(shape, dtype))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        let n = x.shape()[self.axis];
        if n == 0 {
            return Err(Error::InvalidArgument {
                op: self.name(),
                msg: "attempt to get the index of an extreme of an empty sequence".into(),
            });
        }
        let shape = super::reduced_shape(x.shape(), &[self.axis], self.keepdims);
        let cs = contiguous_strides(x.shape());
        let kept: Vec<usize> = (0..x.ndim()).filter(|&d| d != self.axis).collect();
        let out_shape: Vec<usize> = kept.iter().map(|&d| x.shape()[d]).collect();
        let out_strides: Vec<usize> = kept.iter().map(|&d| cs[d]).collect();
        let st = cs[self.axis];
        fn run<T: Elem + PartialOrd>(
            a: &[T],
            max: bool,
            n: usize,
            st: usize,
            shape: &[usize],
            strides: &[usize],
        ) -> Vec<i64> {
            #[allow(clippy::eq_op)]
            let is_nan = |v: T| v != v;
            let mut out = Vec::with_capacity(shape.iter().product());
            data::for_each_offset(shape, [strides], [0], |[base]| {
                let mut best = 0usize;
                for k in 0..n {
                    let v = a[base + k * st];
                    let b = a[base + best * st];
                    if is_nan(b) {
                        break;
                    }
                    if is_nan(v) || (max && v > b) || (!max && v < b) {
                        best = k;
                    }
                }
                out.push(best as i64);
            });
            out
        }
        let m = self.max;
        let out = match x.buf() {
            Buffer::F32(a) => run(a, m, n, st, &out_shape, &out_strides),
            Buffer::F64(a) => run(a, m, n, st, &out_shape, &out_strides),
            Buffer::I32(a) => run(a, m, n, st, &out_shape, &out_strides),
            Buffer::I64(a) => run(a, m, n, st, &out_shape, &out_strides),
            Buffer::Bool(a) => run(a, m, n, st, &out_shape, &out_strides),
        };
        // int32 as in JAX, unless the axis is too long for it.
        let out = if i32::try_from(n).is_ok() {
            Buffer::I32(out.into_iter().map(|i| i as i32).collect())
        } else {
            Buffer::I64(out)
        };
        Ok(Tensor::from_buffer(out, &shape))
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
