//! Dtype rules, and the kernels of integer and bool data.
//!
//! Floats run on the SIMD kernels of `stategrad-simd`. Integers and bools are data (labels,
//! indices, masks) rather than the hot path of a training step, so their kernels here are plain
//! generic loops: one body for every element type.

use crate::error::{Error, Result};
use crate::tensor::{DType, Elem};

/// The default dtype rule: every input is a float (integer and bool tensors must be cast first).
pub(crate) fn floats_only(op: &'static str, inputs: &[DType]) -> Result<()> {
    match inputs.iter().find(|d| !d.is_float()) {
        Some(d) => Err(unsupported(op, *d, "a float tensor")),
        None => Ok(()),
    }
}

/// The rule of data movement (reshape, slice, concatenate, ...): any dtype, all inputs alike.
pub(crate) fn one_dtype(op: &'static str, inputs: &[DType]) -> Result<()> {
    match inputs.split_first() {
        Some((first, rest)) => match rest.iter().find(|d| *d != first) {
            Some(d) => Err(Error::DTypeMismatch {
                op,
                lhs: first.name(),
                rhs: d.name(),
            }),
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// [`Error::UnsupportedDType`] for `op` given `dtype` where it needs `expected`.
pub(crate) fn unsupported(op: &'static str, dtype: DType, expected: &'static str) -> Error {
    Error::UnsupportedDType {
        op,
        dtype: dtype.name(),
        expected,
    }
}

/// Visit every index of `shape` in row-major order with the element offset into each of the `K`
/// operands read with `strides` (0 on broadcast dimensions), starting from `offsets`.
pub(crate) fn for_each_offset<const K: usize>(
    shape: &[usize],
    strides: [&[usize]; K],
    offsets: [usize; K],
    mut f: impl FnMut([usize; K]),
) {
    if shape.contains(&0) {
        return;
    }
    let nd = shape.len();
    let mut idx = vec![0usize; nd];
    let mut pos = offsets;
    loop {
        f(pos);
        let mut d = nd;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            for k in 0..K {
                pos[k] += strides[k][d];
            }
            if idx[d] < shape[d] {
                break;
            }
            for k in 0..K {
                pos[k] -= strides[k][d] * shape[d];
            }
            idx[d] = 0;
        }
    }
}

/// `out[i] = f(a[i'], b[i''])` with numpy broadcasting (`sa`, `sb`: the operands' strides in
/// the output's index space).
pub(crate) fn map2<A: Elem, B: Elem, O: Elem>(
    a: &[A],
    sa: &[usize],
    b: &[B],
    sb: &[usize],
    shape: &[usize],
    f: impl Fn(A, B) -> O,
) -> Vec<O> {
    let mut out = Vec::with_capacity(shape.iter().product());
    for_each_offset(shape, [sa, sb], [0, 0], |[i, j]| out.push(f(a[i], b[j])));
    out
}

/// A strided read of `a` into a new contiguous vector of `shape`.
pub(crate) fn gather<T: Elem>(
    a: &[T],
    strides: &[usize],
    offset: usize,
    shape: &[usize],
) -> Vec<T> {
    let mut out = Vec::with_capacity(shape.iter().product());
    for_each_offset(shape, [strides], [offset], |[i]| out.push(a[i]));
    out
}

/// Reduce `a` of `shape` over `axes` with `f`, starting each output from its first element.
/// Callers reject empty reductions without an identity before.
pub(crate) fn reduce_axes<T: Elem>(
    a: &[T],
    shape: &[usize],
    axes: &[usize],
    init: Option<T>,
    f: impl Fn(T, T) -> T,
) -> Vec<T> {
    let strides = super::contiguous_strides(shape);
    // The output's index space is the kept dims; the reduced ones are walked per output.
    let kept: Vec<usize> = (0..shape.len()).filter(|d| !axes.contains(d)).collect();
    let out_shape: Vec<usize> = kept.iter().map(|&d| shape[d]).collect();
    let out_strides: Vec<usize> = kept.iter().map(|&d| strides[d]).collect();
    let red_shape: Vec<usize> = axes.iter().map(|&d| shape[d]).collect();
    let red_strides: Vec<usize> = axes.iter().map(|&d| strides[d]).collect();
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for_each_offset(&out_shape, [&out_strides], [0], |[base]| {
        let mut acc = init;
        for_each_offset(&red_shape, [&red_strides], [base], |[i]| {
            acc = Some(match acc {
                Some(v) => f(v, a[i]),
                None => a[i],
            });
        });
        out.push(acc.or(init).unwrap_or(a[base]));
    });
    out
}

/// Integer arithmetic as numpy does it: two's-complement wrapping on overflow.
pub(crate) trait Int: Elem + Ord {
    fn wrapping_add(self, o: Self) -> Self;
    fn wrapping_sub(self, o: Self) -> Self;
    fn wrapping_mul(self, o: Self) -> Self;
    fn wrapping_neg(self) -> Self;
    fn wrapping_abs(self) -> Self;
    fn signum(self) -> Self;
    fn zero() -> Self;
}

macro_rules! impl_int {
    ($($t:ty),*) => {$(
        impl Int for $t {
            fn wrapping_add(self, o: Self) -> Self { <$t>::wrapping_add(self, o) }
            fn wrapping_sub(self, o: Self) -> Self { <$t>::wrapping_sub(self, o) }
            fn wrapping_mul(self, o: Self) -> Self { <$t>::wrapping_mul(self, o) }
            fn wrapping_neg(self) -> Self { <$t>::wrapping_neg(self) }
            fn wrapping_abs(self) -> Self { <$t>::wrapping_abs(self) }
            fn signum(self) -> Self { <$t>::signum(self) }
            fn zero() -> Self { 0 }
        }
    )*};
}
impl_int!(i32, i64);
