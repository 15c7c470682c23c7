//! Strided slicing with signed steps ([`Slice`]) and its transpose ([`SliceT`], a scatter into
//! zeros). Each is the other's VJP, so derivatives of any order need no extra code.
//!
//! Both take a slice in normalised form: per axis the first index read, a non-zero signed step
//! and an output length, all in bounds (user input is normalised and checked by
//! [`crate::slicing`]). Element `i` of axis `d` of the slice is element
//! `first[d] + i * step[d]` of the input.

use super::*;
use crate::error::Result;
use crate::tensor::{Shape, Tensor};
use std::sync::Arc;

/// The strided slice `x[first + i*step for i in 0..len]` on every axis (steps may be negative).
#[derive(Debug)]
pub(crate) struct Slice {
    /// The first index read on each axis.
    pub first: Vec<usize>,
    /// The signed step on each axis (never 0).
    pub steps: Vec<isize>,
    /// The output shape.
    pub lens: Shape,
}

/// The element offset of the first read and the signed element stride of each axis, for an
/// input of `shape` (offsets and strides stay within the input: the slice was checked).
fn offsets(shape: &[usize], first: &[usize], steps: &[isize]) -> (usize, Vec<isize>) {
    let cs = contiguous_strides(shape);
    let offset = (0..shape.len()).map(|d| first[d] * cs[d]).sum();
    let strides = (0..shape.len())
        .map(|d| steps[d] * cs[d] as isize)
        .collect();
    (offset, strides)
}

/// The strides as unsigned, when no step is negative (the shared strided kernels' form).
fn unsigned(strides: &[isize]) -> Option<Vec<usize>> {
    strides.iter().map(|&s| usize::try_from(s).ok()).collect()
}

/// Visit every index of `shape` in row-major order with its position
/// `offset + Σ idx·strides` (signed strides; every position is in bounds by construction).
fn for_each_position(shape: &[usize], strides: &[isize], offset: usize, mut f: impl FnMut(usize)) {
    let n: usize = shape.iter().product();
    let nd = shape.len();
    let mut idx = vec![0usize; nd];
    let mut pos = offset as isize;
    for _ in 0..n {
        f(pos as usize);
        for d in (0..nd).rev() {
            idx[d] += 1;
            pos += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            pos -= strides[d] * shape[d] as isize;
            idx[d] = 0;
        }
    }
}

pub(crate) fn gather_signed<T: Copy>(
    x: &[T],
    strides: &[isize],
    offset: usize,
    shape: &[usize],
    out: &mut [T],
) {
    let mut o = out.iter_mut();
    for_each_position(shape, strides, offset, |p| {
        if let Some(slot) = o.next() {
            *slot = x[p];
        }
    });
}

pub(crate) fn scatter_signed<T: Copy>(
    src: &[T],
    strides: &[isize],
    offset: usize,
    shape: &[usize],
    out: &mut [T],
) {
    let mut s = src.iter();
    for_each_position(shape, strides, offset, |p| {
        if let Some(&v) = s.next() {
            out[p] = v;
        }
    });
}

/// `(0, 1)` prepended `nb` times: the batch axes a slice leaves whole.
fn lead(nb: usize, first: &[usize], steps: &[isize]) -> (Vec<usize>, Vec<isize>) {
    (
        std::iter::repeat_n(0, nb)
            .chain(first.iter().copied())
            .collect(),
        std::iter::repeat_n(1, nb)
            .chain(steps.iter().copied())
            .collect(),
    )
}

impl Primitive for Slice {
    fn name(&self) -> &'static str {
        "slice"
    }
    fn check_dtypes(&self, inputs: &[crate::tensor::DType]) -> Result<()> {
        data::one_dtype(self.name(), inputs)
    }
    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Option<Kernel> {
        // A slice without negative steps is a strided read from an offset.
        let (offset, strides) = offsets(inputs[0], &self.first, &self.steps);
        Some(match unsigned(&strides) {
            Some(strides) => Kernel::Gather {
                strides,
                offset,
                out: out.into(),
            },
            None => Kernel::Strided {
                strides,
                offset,
                shape: out.into(),
                scatter: false,
            },
        })
    }
    fn batch(&self, _: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        // The batch axis is left whole: one slice of the stacked examples.
        let (first, steps) = lead(1, &self.first, &self.steps);
        let lens = std::iter::once(inputs[0].shape()[0])
            .chain(self.lens.iter().copied())
            .collect();
        apply(Arc::new(Slice { first, steps, lens }), inputs)
    }
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        Ok(Aval::new(self.lens.clone(), inputs[0].dtype()))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let x = inputs[0];
        let n: usize = self.lens.iter().product();
        if n == 0 {
            return Ok(Tensor::full_dtype(&self.lens, 0.0, x.dtype()));
        }
        let (offset, strides) = offsets(x.shape(), &self.first, &self.steps);
        if let Some(st) = unsigned(&strides) {
            return Ok(gather(x, &st, offset, &self.lens));
        }
        let out = fill_like!(any x, n, |a, o| gather_signed(
            a, &strides, offset, &self.lens, o
        ));
        Ok(Tensor::from_buffer(out, &self.lens))
    }
    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        _: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        let (first, steps) = (self.first.clone(), self.steps.clone());
        let shape = inputs[0].shape().into();
        let t = Arc::new(SliceT {
            first,
            steps,
            shape,
        });
        Ok(vec![Some(apply(t, &[g])?)])
    }
}

/// The transpose of [`Slice`]: zeros of `shape` with the input written at the sliced positions.
#[derive(Debug)]
pub(crate) struct SliceT {
    /// The first index written on each axis.
    pub first: Vec<usize>,
    /// The signed step on each axis (never 0).
    pub steps: Vec<isize>,
    /// The output shape (the shape of the sliced tensor).
    pub shape: Shape,
}

impl Primitive for SliceT {
    fn name(&self) -> &'static str {
        "slice_transpose"
    }
    fn check_dtypes(&self, inputs: &[crate::tensor::DType]) -> Result<()> {
        data::one_dtype(self.name(), inputs)
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Option<Kernel> {
        let (offset, strides) = offsets(&self.shape, &self.first, &self.steps);
        Some(Kernel::Strided {
            strides,
            offset,
            shape: inputs[0].into(),
            scatter: true,
        })
    }
    fn batch(&self, _: &Arc<dyn Primitive>, inputs: &[&Tensor], _: &[bool]) -> Result<Tensor> {
        let (first, steps) = lead(1, &self.first, &self.steps);
        let shape = std::iter::once(inputs[0].shape()[0])
            .chain(self.shape.iter().copied())
            .collect();
        apply(
            Arc::new(SliceT {
                first,
                steps,
                shape,
            }),
            inputs,
        )
    }
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        Ok(Aval::new(self.shape.clone(), inputs[0].dtype()))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let g = inputs[0];
        let n: usize = self.shape.iter().product();
        let (offset, strides) = offsets(&self.shape, &self.first, &self.steps);
        let out = fill_like!(any zeroed g, n, |src, o| scatter_signed(
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
    ) -> Result<Vec<Option<Tensor>>> {
        let (first, steps) = (self.first.clone(), self.steps.clone());
        let lens = inputs[0].shape().into();
        let s = Arc::new(Slice { first, steps, lens });
        Ok(vec![Some(apply(s, &[g])?)])
    }
}
