//! Reductions over axes (sum, max, min).

use super::*;
use crate::error::{Error, Result};
use crate::tensor::{Buffer, DType, Shape, Tensor};
use stategrad_simd::{self as simd, ReduceOp};
use std::sync::Arc;

/// Reduction over `axes` (sorted, unique), keeping them as size-1 dims if `keepdims`.
#[derive(Debug)]
pub(crate) struct Reduce {
    pub op: ReduceOp,
    pub axes: Vec<usize>,
    pub keepdims: bool,
}

pub(crate) fn reduced_shape(shape: &[usize], axes: &[usize], keepdims: bool) -> Shape {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| {
            if axes.contains(&i) {
                keepdims.then_some(1)
            } else {
                Some(d)
            }
        })
        .collect()
}

impl Primitive for Reduce {
    fn name(&self) -> &'static str {
        match self.op {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Max => "reduce_max",
            ReduceOp::Min => "reduce_min",
        }
    }

    fn fusion(&self) -> Option<Fusion> {
        // Only a reduction to one element ends a fused pass (checked by the planner).
        (self.op == ReduceOp::Sum).then_some(Fusion::SumAll)
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Option<Kernel> {
        let shape = inputs[0];
        if shape.contains(&0) {
            return None;
        }
        Some(if self.axes.len() == shape.len() {
            Kernel::ReduceAll(self.op)
        } else {
            Kernel::ReduceAxes {
                op: self.op,
                shape: shape.into(),
                axes: self.axes.clone(),
            }
        })
    }
    fn batch(&self, _: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        let shifted = Reduce {
            op: self.op,
            axes: self.axes.iter().map(|a| a + 1).collect(),
            keepdims: self.keepdims,
        };
        apply(Arc::new(shifted), inputs)
    }
    fn check_dtypes(&self, inputs: &[DType]) -> Result<()> {
        match (inputs[0], self.op) {
            (d, _) if d.is_float() || d.is_int() => Ok(()),
            (DType::Bool, ReduceOp::Max | ReduceOp::Min) => Ok(()),
            (d, _) => Err(data::unsupported(
                self.name(),
                d,
                "a float or integer tensor",
            )),
        }
    }
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        let x = inputs[0];
        if self.op != ReduceOp::Sum && x.numel() == 0 {
            return Err(Error::InvalidArgument {
                op: self.name(),
                msg: "reduction of an empty tensor has no identity".into(),
            });
        }
        let shape = reduced_shape(x.shape(), &self.axes, self.keepdims);
        Ok(Aval::new(shape, x.dtype()))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        let shape = self.abstract_eval(inputs)?.shape;
        fn exact<T: data::Int>(op: ReduceOp, a: &[T], shape: &[usize], axes: &[usize]) -> Vec<T> {
            match op {
                ReduceOp::Sum => {
                    data::reduce_axes(a, shape, axes, Some(T::zero()), T::wrapping_add)
                }
                ReduceOp::Max => data::reduce_axes(a, shape, axes, None, std::cmp::max),
                ReduceOp::Min => data::reduce_axes(a, shape, axes, None, std::cmp::min),
            }
        }
        let data_out = match x.buf() {
            Buffer::I32(a) => Some(Buffer::I32(exact(self.op, a, x.shape(), &self.axes))),
            Buffer::I64(a) => Some(Buffer::I64(exact(self.op, a, x.shape(), &self.axes))),
            Buffer::Bool(a) => Some(Buffer::Bool(match self.op {
                ReduceOp::Max => data::reduce_axes(a, x.shape(), &self.axes, None, |p, q| p | q),
                _ => data::reduce_axes(a, x.shape(), &self.axes, None, |p, q| p & q),
            })),
            _ => None,
        };
        if let Some(out) = data_out {
            return Ok(Tensor::from_buffer(out, &shape));
        }
        let n: usize = shape.iter().product();
        let all = self.axes.len() == x.ndim();
        let out = fill_like!(x, n, |a, o| if all {
            o[0] = simd::reduce_all(self.op, a)
        } else {
            simd::reduce_axes(self.op, a, x.shape(), &self.axes, o)
        });
        Ok(Tensor::from_buffer(out, &shape))
    }

    fn vjp(
        &self,
        inputs: &[&Tensor],
        y: &Tensor,
        g: &Tensor,
        _: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        let x = inputs[0];
        let keep = reduced_shape(x.shape(), &self.axes, true);
        let gk = g.try_reshape_to(&keep)?;
        let d = match self.op {
            ReduceOp::Sum => gk.try_broadcast_to(x.shape())?,
            ReduceOp::Max | ReduceOp::Min => {
                // The cotangent is shared evenly among the positions that attain the extreme.
                let yk = y.try_reshape_to(&keep)?;
                let mask = x.try_eq_mask(&yk)?;
                let count = mask.try_sum_axes(&self.axes, true)?;
                mask.try_div(&count)?.try_mul(&gk)?
            }
        };
        Ok(vec![Some(d)])
    }
}
