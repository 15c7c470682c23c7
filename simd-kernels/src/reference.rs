//! Scalar reference implementations of every kernel (plain loops over `std` math).
//!
//! They define the semantics the vector kernels are tested against, and are usable directly
//! (e.g. to compute exactly `std`'s results).
//!
//! ```
//! use stategrad_simd::{reference, UnaryOp};
//! assert_eq!(reference::unary_op(UnaryOp::Sigmoid, 0.0f32), 0.5);
//! assert_eq!(reference::unary_op(UnaryOp::Relu, -3.0f64), 0.0);
//! ```

use crate::strided::numel;
use crate::{BinaryOp, Element, ReduceOp, UnaryOp};

/// `op(x)` for one element, computed with `std`.
pub fn unary_op<T: Element>(op: UnaryOp, x: T) -> T {
    T::unary_ref(op, x)
}

/// `op(a, b)` for one element pair, computed with `std`.
pub fn binary_op<T: Element>(op: BinaryOp, a: T, b: T) -> T {
    T::binary_ref(op, a, b)
}

/// Scalar [`unary`](crate::unary).
pub fn unary<T: Element>(op: UnaryOp, x: &[T], out: &mut [T]) {
    assert_eq!(x.len(), out.len());
    for (o, &x) in out.iter_mut().zip(x) {
        *o = unary_op(op, x);
    }
}

/// Scalar [`binary`](crate::binary).
pub fn binary<T: Element>(op: BinaryOp, a: &[T], b: &[T], out: &mut [T]) {
    assert!(a.len() == out.len() && b.len() == out.len());
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = binary_op(op, a, b);
    }
}

/// Scalar [`binary_scalar`](crate::binary_scalar).
pub fn binary_scalar<T: Element>(op: BinaryOp, a: &[T], b: T, out: &mut [T]) {
    assert_eq!(a.len(), out.len());
    for (o, &a) in out.iter_mut().zip(a) {
        *o = binary_op(op, a, b);
    }
}

/// Scalar [`scalar_binary`](crate::scalar_binary).
pub fn scalar_binary<T: Element>(op: BinaryOp, a: T, b: &[T], out: &mut [T]) {
    assert_eq!(b.len(), out.len());
    for (o, &b) in out.iter_mut().zip(b) {
        *o = binary_op(op, a, b);
    }
}

/// Offset of the row-major linear index `i` of `shape` in a view with `strides`.
fn strided_offset(mut i: usize, shape: &[usize], strides: &[usize]) -> usize {
    let mut off = 0;
    for (&d, &s) in shape.iter().zip(strides).rev() {
        off += (i % d) * s;
        i /= d;
    }
    off
}

/// Scalar [`binary_strided`](crate::binary_strided).
pub fn binary_strided<T: Element>(
    op: BinaryOp,
    a: &[T],
    a_strides: &[usize],
    b: &[T],
    b_strides: &[usize],
    out_shape: &[usize],
    out: &mut [T],
) {
    assert_eq!(out.len(), numel(out_shape));
    for (i, o) in out.iter_mut().enumerate() {
        let x = a[strided_offset(i, out_shape, a_strides)];
        let y = b[strided_offset(i, out_shape, b_strides)];
        *o = binary_op(op, x, y);
    }
}

/// Scalar [`select_strided`](crate::select_strided).
pub fn select_strided<T: Element>(
    cond: &[T],
    c_strides: &[usize],
    a: &[T],
    a_strides: &[usize],
    b: &[T],
    b_strides: &[usize],
    out_shape: &[usize],
    out: &mut [T],
) {
    assert_eq!(out.len(), numel(out_shape));
    for (i, o) in out.iter_mut().enumerate() {
        *o = if cond[strided_offset(i, out_shape, c_strides)] != T::ZERO {
            a[strided_offset(i, out_shape, a_strides)]
        } else {
            b[strided_offset(i, out_shape, b_strides)]
        };
    }
}

/// Scalar [`gather_strided`](crate::gather_strided).
pub fn gather_strided<T: Element>(
    x: &[T],
    strides: &[usize],
    offset: usize,
    out_shape: &[usize],
    out: &mut [T],
) {
    assert_eq!(out.len(), numel(out_shape));
    for (i, o) in out.iter_mut().enumerate() {
        *o = x[offset + strided_offset(i, out_shape, strides)];
    }
}

/// Scalar [`reduce_all`](crate::reduce_all): a sequential fold from the identity.
pub fn reduce_all<T: Element>(op: ReduceOp, x: &[T]) -> T {
    x.iter()
        .fold(op.identity(), |acc, &x| binary_op(op.binary_op(), acc, x))
}

/// Scalar [`reduce_axes`](crate::reduce_axes): folds every element, in index order, into its
/// output position.
pub fn reduce_axes<T: Element>(
    op: ReduceOp,
    x: &[T],
    shape: &[usize],
    axes: &[usize],
    out: &mut [T],
) {
    assert_eq!(x.len(), numel(shape));
    // Row-major strides of the output for kept dims, 0 for reduced ones.
    let mut ostrides = vec![0; shape.len()];
    let mut s = 1;
    for d in (0..shape.len()).rev() {
        if !axes.contains(&d) {
            ostrides[d] = s;
            s *= shape[d];
        }
    }
    assert_eq!(out.len(), s);
    out.fill(op.identity());
    for (i, &x) in x.iter().enumerate() {
        let o = &mut out[strided_offset(i, shape, &ostrides)];
        *o = binary_op(op.binary_op(), *o, x);
    }
}

/// Scalar [`gemm`](crate::gemm): a naive triple loop, accumulating in `T`. With `beta == 0`,
/// `C` is not read.
pub fn gemm<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    rsa: usize,
    csa: usize,
    b: &[T],
    rsb: usize,
    csb: usize,
    beta: T,
    c: &mut [T],
    rsc: usize,
    csc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = T::ZERO;
            for p in 0..k {
                acc += a[i * rsa + p * csa] * b[p * rsb + j * csb];
            }
            let ci = &mut c[i * rsc + j * csc];
            *ci = if beta == T::ZERO {
                alpha * acc
            } else {
                alpha * acc + beta * *ci
            };
        }
    }
}
