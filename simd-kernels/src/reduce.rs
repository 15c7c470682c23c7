//! Reductions: [`reduce_all`] and [`reduce_axes`].

use crate::isa::{with_vec, VecFn};
use crate::strided::numel;
use crate::vector::{self as vm, SimdVec};
use crate::{reference, Element, ReduceOp, MAX_RANK};

/// Number of independent vector accumulators in [`fold`].
const ACC: usize = 4;

/// Folds `x` with `ACC` vector accumulators, the scalar tail (padded with `init`) into the
/// first's leading lanes, then the accumulators and the lanes pairwise; a slice shorter than one
/// vector folds in order.
///
/// The tail goes into lanes rather than after the lane fold so that its terms add in parallel:
/// folded in order after the lanes, a 20-element f32 sum on 16 lanes ended in a chain of four
/// dependent adds, on the critical path of a training loop's step (W1).
#[inline(always)]
fn fold<V: SimdVec>(
    x: &[V::Elem],
    init: V::Elem,
    vf: impl Fn(V, V) -> V,
    sf: impl Fn(V::Elem, V::Elem) -> V::Elem,
) -> V::Elem {
    let l = V::LANES;
    if x.len() < l {
        return x.iter().fold(init, |r, &e| sf(r, e));
    }
    let mut acc = [V::splat(init); ACC];
    let mut big = x.chunks_exact(ACC * l);
    for c in &mut big {
        for (j, a) in acc.iter_mut().enumerate() {
            *a = vf(*a, V::load(&c[j * l..(j + 1) * l]));
        }
    }
    let mut small = big.remainder().chunks_exact(l);
    for c in &mut small {
        acc[0] = vf(acc[0], V::load(c));
    }
    let tail = small.remainder();
    if !tail.is_empty() {
        // `init` is the identity of `vf` on every lane value (a sum's lanes are never `-0`: each
        // started as `+0 + x`), so the padded lanes keep their values bit for bit.
        let mut buf = [init; 16];
        buf[..tail.len()].copy_from_slice(tail);
        acc[0] = vf(acc[0], V::load(&buf[..l]));
    }
    vf(vf(acc[0], acc[1]), vf(acc[2], acc[3])).fold_lanes(init, &sf)
}

/// `a + b`, as a function item (always inlined, unlike a closure LLVM may keep out of line and
/// compile for the baseline ISA).
#[inline(always)]
fn add<V: SimdVec>(a: V, b: V) -> V {
    a + b
}

/// Reduces a contiguous slice on vector type `V`.
#[inline(always)]
pub(crate) fn reduce_v<V: SimdVec>(op: ReduceOp, x: &[V::Elem]) -> V::Elem {
    let sf = |a, b| reference::binary_op(op.binary_op(), a, b);
    let init = op.identity();
    match op {
        ReduceOp::Sum => fold::<V>(x, init, add::<V>, sf),
        ReduceOp::Max => fold::<V>(x, init, vm::max, sf),
        ReduceOp::Min => fold::<V>(x, init, vm::min, sf),
    }
}

/// `acc[i] = op(acc[i], x[i])` element-wise.
#[inline(always)]
fn accumulate<V: SimdVec>(op: ReduceOp, acc: &mut [V::Elem], x: &[V::Elem]) {
    #[inline(always)]
    fn go<V: SimdVec>(
        acc: &mut [V::Elem],
        x: &[V::Elem],
        vf: impl Fn(V, V) -> V,
        sf: impl Fn(V::Elem, V::Elem) -> V::Elem,
    ) {
        let l = V::LANES;
        let mut ac = acc.chunks_exact_mut(l);
        let mut xc = x.chunks_exact(l);
        for (a, b) in (&mut ac).zip(&mut xc) {
            vf(V::load(a), V::load(b)).store(a);
        }
        for (a, &b) in ac.into_remainder().iter_mut().zip(xc.remainder()) {
            *a = sf(*a, b);
        }
    }
    let sf = |a, b| reference::binary_op(op.binary_op(), a, b);
    match op {
        ReduceOp::Sum => go::<V>(acc, x, add::<V>, sf),
        ReduceOp::Max => go::<V>(acc, x, vm::max, sf),
        ReduceOp::Min => go::<V>(acc, x, vm::min, sf),
    }
}

#[inline(always)]
pub(crate) fn reduce_axes_v<V: SimdVec>(
    op: ReduceOp,
    x: &[V::Elem],
    shape: &[usize],
    axes: &[usize],
    out: &mut [V::Elem],
) {
    let rank = shape.len();
    assert!(
        rank <= MAX_RANK,
        "reduce_axes: rank {rank} exceeds MAX_RANK = {MAX_RANK}"
    );
    assert_eq!(
        x.len(),
        numel(shape),
        "reduce_axes: x.len() != product of shape"
    );
    assert!(
        axes.windows(2).all(|w| w[0] < w[1]) && axes.iter().all(|&a| a < rank),
        "reduce_axes: axes {axes:?} must be sorted, unique and < rank {rank}"
    );
    let kept: usize = (0..rank)
        .filter(|d| !axes.contains(d))
        .map(|d| shape[d])
        .product();
    assert_eq!(
        out.len(),
        kept,
        "reduce_axes: out.len() != product of kept dims"
    );
    out.fill(op.identity());
    if x.is_empty() {
        return;
    }
    // Drop size-1 dims and merge runs of reduced / kept dims (x is contiguous).
    let mut dims = [(1usize, false); MAX_RANK];
    let mut r = 0;
    for (d, &size) in shape.iter().enumerate() {
        let red = axes.contains(&d);
        if size == 1 {
            continue;
        }
        if r > 0 && dims[r - 1].1 == red {
            dims[r - 1].0 *= size;
        } else {
            dims[r] = (size, red);
            r += 1;
        }
    }
    if r == 0 {
        out[0] = reference::binary_op(op.binary_op(), out[0], x[0]);
        return;
    }
    // Strides of the kept dims in `out` (0 for reduced dims).
    let mut ostride = [0usize; MAX_RANK];
    let mut s = 1;
    for i in (0..r).rev() {
        if !dims[i].1 {
            ostride[i] = s;
            s *= dims[i].0;
        }
    }
    let (len, last_reduced) = dims[r - 1];
    let mut idx = [0usize; MAX_RANK];
    let mut oo = 0;
    for row in x.chunks_exact(len) {
        if last_reduced {
            out[oo] = reference::binary_op(op.binary_op(), out[oo], reduce_v::<V>(op, row));
        } else {
            accumulate::<V>(op, &mut out[oo..oo + len], row);
        }
        for d in (0..r - 1).rev() {
            idx[d] += 1;
            if idx[d] < dims[d].0 {
                oo += ostride[d];
                break;
            }
            idx[d] = 0;
            oo -= ostride[d] * (dims[d].0 - 1);
        }
    }
}

/// Reduces all of `x`: `Sum` of nothing is `0`, `Max` `-inf`, `Min` `+inf`; `Max`/`Min`
/// propagate NaN. `Sum` uses several vector accumulators (in `f32` lanes for `f32`), so its
/// rounding differs slightly from a sequential sum.
///
/// # Example
/// ```
/// use stategrad_simd::{reduce_all, ReduceOp};
/// let x: Vec<f64> = (1..=100).map(f64::from).collect();
/// assert_eq!(reduce_all(ReduceOp::Sum, &x), 5050.0);
/// assert_eq!(reduce_all(ReduceOp::Max, &x), 100.0);
/// assert_eq!(reduce_all::<f32>(ReduceOp::Min, &[]), f32::INFINITY);
/// ```
pub fn reduce_all<T: Element>(op: ReduceOp, x: &[T]) -> T {
    struct F<'a, T>(ReduceOp, &'a [T]);
    impl<T: Element> VecFn<T> for F<'_, T> {
        type Output = T;
        #[inline(always)]
        fn call<V: SimdVec<Elem = T>>(self) -> T {
            reduce_v::<V>(self.0, self.1)
        }
    }
    with_vec(F(op, x))
}

/// Reduces a contiguous row-major tensor of `shape` over `axes` (sorted, unique) into `out`,
/// whose shape is `shape` without those axes (length 1 if all are reduced). Reductions over
/// leading axes accumulate rows in index order; reductions over trailing axes use
/// [`reduce_all`]'s vector fold per output element.
///
/// # Panics
/// If the lengths do not match the shapes, `axes` is not sorted/unique/in range, or the rank
/// exceeds [`MAX_RANK`].
///
/// # Example
/// ```
/// use stategrad_simd::{reduce_axes, ReduceOp};
/// let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // shape [2, 3]
/// let mut cols = [0.0; 3];
/// reduce_axes(ReduceOp::Sum, &x, &[2, 3], &[0], &mut cols);
/// assert_eq!(cols, [5.0, 7.0, 9.0]);
/// let mut rows = [0.0; 2];
/// reduce_axes(ReduceOp::Max, &x, &[2, 3], &[1], &mut rows);
/// assert_eq!(rows, [3.0, 6.0]);
/// ```
pub fn reduce_axes<T: Element>(
    op: ReduceOp,
    x: &[T],
    shape: &[usize],
    axes: &[usize],
    out: &mut [T],
) {
    struct F<'a, T>(ReduceOp, &'a [T], &'a [usize], &'a [usize], &'a mut [T]);
    impl<T: Element> VecFn<T> for F<'_, T> {
        type Output = ();
        #[inline(always)]
        fn call<V: SimdVec<Elem = T>>(self) {
            reduce_axes_v::<V>(self.0, self.1, self.2, self.3, self.4)
        }
    }
    with_vec(F(op, x, shape, axes, out))
}
