//! Strided / broadcasting kernels: [`binary_strided`], [`select_strided`], [`gather_strided`].
//!
//! The output is always contiguous row-major; inputs are read through element strides (0 on
//! broadcast dimensions). Dimensions of size 1 are dropped and adjacent dimensions that are
//! contiguous for every operand are merged, then the kernels walk the remaining outer dimensions
//! and process each innermost row: stride-1 rows and broadcast (stride-0) rows go straight to
//! the vector kernels, other strides are gathered block-wise into a stack buffer first.

use crate::elementwise::{binary_v, Bcast, Src};
use crate::isa::{with_vec, VecFn};
use crate::vector::SimdVec;
use crate::{reference, BinaryOp, Element, MAX_RANK, SIMD_MIN_LEN};

/// Rows with a non-unit stride are processed in blocks of this many elements.
const BLOCK: usize = 256;

/// Number of elements of a shape (1 for rank 0).
pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Panics unless every index reachable from `offset` with `shape`/`strides` is below `len`.
fn check_bounds(what: &str, len: usize, offset: usize, shape: &[usize], strides: &[usize]) {
    assert_eq!(
        strides.len(),
        shape.len(),
        "{what}: strides rank != shape rank"
    );
    let max = shape.iter().zip(strides).try_fold(offset, |acc, (&d, &s)| {
        (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
    });
    assert!(
        matches!(max, Some(m) if m < len),
        "{what}: strided view (offset {offset}, shape {shape:?}, strides {strides:?}) exceeds buffer of length {len}"
    );
}

/// Shape and per-operand strides after dropping size-1 dims and merging contiguous dims.
struct Layout<const N: usize> {
    rank: usize,
    shape: [usize; MAX_RANK],
    strides: [[usize; MAX_RANK]; N],
}

impl<const N: usize> Layout<N> {
    fn new(shape: &[usize], strides: [&[usize]; N]) -> Self {
        assert!(
            shape.len() <= MAX_RANK,
            "rank {} exceeds MAX_RANK = {MAX_RANK}",
            shape.len()
        );
        let mut l = Layout {
            rank: 0,
            shape: [1; MAX_RANK],
            strides: [[0; MAX_RANK]; N],
        };
        for (d, &size) in shape.iter().enumerate() {
            if size == 1 {
                continue;
            }
            let r = l.rank;
            if r > 0 && (0..N).all(|k| l.strides[k][r - 1] == strides[k][d] * size) {
                l.shape[r - 1] *= size;
                for k in 0..N {
                    l.strides[k][r - 1] = strides[k][d];
                }
            } else {
                l.shape[r] = size;
                for k in 0..N {
                    l.strides[k][r] = strides[k][d];
                }
                l.rank += 1;
            }
        }
        l
    }

    /// Calls `f(offsets, out_offset, len, inner_strides)` for every innermost row, in order.
    fn for_each_row(
        &self,
        base: [usize; N],
        mut f: impl FnMut([usize; N], usize, usize, [usize; N]),
    ) {
        if self.rank == 0 {
            return f(base, 0, 1, [0; N]);
        }
        let inner = self.rank - 1;
        let len = self.shape[inner];
        let inner_strides: [usize; N] = std::array::from_fn(|k| self.strides[k][inner]);
        let rows: usize = self.shape[..inner].iter().product();
        let mut idx = [0usize; MAX_RANK];
        let mut off = base;
        for row in 0..rows {
            f(off, row * len, len, inner_strides);
            // Odometer increment over the outer dims.
            for d in (0..inner).rev() {
                idx[d] += 1;
                if idx[d] < self.shape[d] {
                    for k in 0..N {
                        off[k] += self.strides[k][d];
                    }
                    break;
                }
                idx[d] = 0;
                for k in 0..N {
                    off[k] -= self.strides[k][d] * (self.shape[d] - 1);
                }
            }
        }
    }
}

/// One operand of a row block: a contiguous slice or a broadcast scalar.
#[derive(Clone, Copy)]
enum Operand<'a, T> {
    Slice(&'a [T]),
    Bcast(T),
}

impl<T: Element> Src<T> for Operand<'_, T> {
    #[inline(always)]
    fn get(&self, i: usize) -> T {
        match self {
            Operand::Slice(s) => s[i],
            Operand::Bcast(x) => *x,
        }
    }
    #[inline(always)]
    fn vec<V: SimdVec<Elem = T>>(&self, i: usize) -> V {
        match self {
            Operand::Slice(s) => V::load(&s[i..i + V::LANES]),
            Operand::Bcast(x) => V::splat(*x),
        }
    }
    #[inline(always)]
    fn sub(&self, start: usize, len: usize) -> Self {
        match self {
            Operand::Slice(s) => Operand::Slice(&s[start..start + len]),
            Operand::Bcast(x) => Operand::Bcast(*x),
        }
    }
}

/// The `len` elements of `data` at `off + i * stride` as an operand, gathering into `buf` if
/// the stride is neither 0 nor 1.
#[inline(always)]
fn operand<'a, T: Element>(
    data: &'a [T],
    off: usize,
    stride: usize,
    len: usize,
    buf: &'a mut [T; BLOCK],
) -> Operand<'a, T> {
    match stride {
        0 => Operand::Bcast(data[off]),
        1 => Operand::Slice(&data[off..off + len]),
        _ => {
            for (i, b) in buf[..len].iter_mut().enumerate() {
                *b = data[off + i * stride];
            }
            Operand::Slice(&buf[..len])
        }
    }
}

/// Splits a row of `out` into blocks (one block if no operand needs gathering) and calls
/// `f(block_start, block_out)`.
#[inline(always)]
fn blocks<T>(out: &mut [T], strides: &[usize], mut f: impl FnMut(usize, &mut [T])) {
    if strides.iter().all(|&s| s <= 1) {
        f(0, out);
    } else {
        for (bi, o) in out.chunks_mut(BLOCK).enumerate() {
            f(bi * BLOCK, o);
        }
    }
}

/// [`binary_strided`]; each block runs [`binary_block`] (on the chosen ISA).
fn binary_strided_impl<T: Element>(
    op: BinaryOp,
    a: &[T],
    a_strides: &[usize],
    b: &[T],
    b_strides: &[usize],
    out_shape: &[usize],
    out: &mut [T],
) {
    let n = numel(out_shape);
    assert_eq!(
        out.len(),
        n,
        "binary_strided: out.len() != product of out_shape"
    );
    if n == 0 {
        return;
    }
    check_bounds("binary_strided: a", a.len(), 0, out_shape, a_strides);
    check_bounds("binary_strided: b", b.len(), 0, out_shape, b_strides);
    // One dispatch to the ISA's vectors for the whole layout, not one per row: a row
    // broadcast over 256 rows of 256 paid ~40 ns of dispatch per row, as much as its work.
    struct Rows<'a, T> {
        op: BinaryOp,
        a: &'a [T],
        a_strides: &'a [usize],
        b: &'a [T],
        b_strides: &'a [usize],
        out_shape: &'a [usize],
        out: &'a mut [T],
    }
    impl<T: Element> VecFn<T> for Rows<'_, T> {
        type Output = ();
        #[inline(always)]
        fn call<V: SimdVec<Elem = T>>(self) {
            let Rows {
                op,
                a,
                a_strides,
                b,
                b_strides,
                out_shape,
                out,
            } = self;
            let simd = out.len() >= SIMD_MIN_LEN;
            let (mut ba, mut bb) = ([T::ZERO; BLOCK], [T::ZERO; BLOCK]);
            Layout::new(out_shape, [a_strides, b_strides]).for_each_row(
                [0, 0],
                |[oa, ob], oo, len, [sa, sb]| {
                    blocks(&mut out[oo..oo + len], &[sa, sb], |s, o| {
                        let x = operand(a, oa + s * sa, sa, o.len(), &mut ba);
                        let y = operand(b, ob + s * sb, sb, o.len(), &mut bb);
                        match (x, y) {
                            (Operand::Slice(x), Operand::Slice(y)) => {
                                binary_v::<V, _, _>(op, x, y, o, simd)
                            }
                            (Operand::Slice(x), Operand::Bcast(y)) => {
                                binary_v::<V, _, _>(op, x, Bcast(y), o, simd)
                            }
                            (Operand::Bcast(x), Operand::Slice(y)) => {
                                binary_v::<V, _, _>(op, Bcast(x), y, o, simd)
                            }
                            (Operand::Bcast(x), Operand::Bcast(y)) => {
                                o.fill(reference::binary_op(op, x, y))
                            }
                        }
                    });
                },
            );
        }
    }
    with_vec(Rows {
        op,
        a,
        a_strides,
        b,
        b_strides,
        out_shape,
        out,
    })
}

/// [`select_strided`]; each block runs [`select_block_v`] (on the chosen ISA).
#[allow(clippy::too_many_arguments)]
fn select_strided_impl<T: Element>(
    cond: &[T],
    c_strides: &[usize],
    a: &[T],
    a_strides: &[usize],
    b: &[T],
    b_strides: &[usize],
    out_shape: &[usize],
    out: &mut [T],
) {
    let n = numel(out_shape);
    assert_eq!(
        out.len(),
        n,
        "select_strided: out.len() != product of out_shape"
    );
    if n == 0 {
        return;
    }
    check_bounds("select_strided: cond", cond.len(), 0, out_shape, c_strides);
    check_bounds("select_strided: a", a.len(), 0, out_shape, a_strides);
    check_bounds("select_strided: b", b.len(), 0, out_shape, b_strides);
    let zero = T::ZERO;
    let (mut bc, mut ba, mut bb) = ([zero; BLOCK], [zero; BLOCK], [zero; BLOCK]);
    let layout = Layout::new(out_shape, [c_strides, a_strides, b_strides]);
    layout.for_each_row([0; 3], |[oc, oa, ob], oo, len, [sc, sa, sb]| {
        blocks(&mut out[oo..oo + len], &[sc, sa, sb], |s, o| {
            let c = operand(cond, oc + s * sc, sc, o.len(), &mut bc);
            let x = operand(a, oa + s * sa, sa, o.len(), &mut ba);
            let y = operand(b, ob + s * sb, sb, o.len(), &mut bb);
            struct F<'a, T>([Operand<'a, T>; 3], &'a mut [T]);
            impl<T: Element> VecFn<T> for F<'_, T> {
                type Output = ();
                #[inline(always)]
                fn call<V: SimdVec<Elem = T>>(self) {
                    let [c, x, y] = self.0;
                    select_block_v::<V>(c, x, y, self.1)
                }
            }
            with_vec(F([c, x, y], o))
        });
    });
}

/// `o[i] = if c[i] != 0 { x[i] } else { y[i] }` on vector type `V`.
#[inline(always)]
fn select_block_v<V: SimdVec>(
    c: impl Src<V::Elem>,
    x: impl Src<V::Elem>,
    y: impl Src<V::Elem>,
    o: &mut [V::Elem],
) {
    let l = V::LANES;
    let body = o.len() - o.len() % l;
    for (ci, oc) in o[..body].chunks_exact_mut(l).enumerate() {
        let i = ci * l;
        let m = c.vec::<V>(i).ne(V::none());
        m.select(x.vec(i), y.vec(i)).store(oc);
    }
    for (i, e) in o.iter_mut().enumerate().skip(body) {
        *e = if c.get(i) != V::Elem::ZERO {
            x.get(i)
        } else {
            y.get(i)
        };
    }
}

/// `out[i] = op(a[ia], b[ib])` with broadcasting: `out` is contiguous row-major of shape
/// `out_shape`, and `a`/`b` are read with element strides `a_strides`/`b_strides` (same rank as
/// `out_shape`, stride 0 on broadcast dims).
///
/// # Panics
/// If `out.len()` is not the product of `out_shape`, a stride array has the wrong rank, a strided
/// view reaches past its buffer, or the rank exceeds [`MAX_RANK`].
///
/// # Example
/// ```
/// use stategrad_simd::{binary_strided, BinaryOp};
/// // [2, 3] + [3] (row vector broadcast over rows)
/// let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let b = [10.0f32, 20.0, 30.0];
/// let mut out = [0.0; 6];
/// binary_strided(BinaryOp::Add, &a, &[3, 1], &b, &[0, 1], &[2, 3], &mut out);
/// assert_eq!(out, [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
/// ```
pub fn binary_strided<T: Element>(
    op: BinaryOp,
    a: &[T],
    a_strides: &[usize],
    b: &[T],
    b_strides: &[usize],
    out_shape: &[usize],
    out: &mut [T],
) {
    binary_strided_impl(op, a, a_strides, b, b_strides, out_shape, out);
}

/// `out[i] = if cond[ic] != 0 { a[ia] } else { b[ib] }` (NaN counts as true), all three read
/// with strides like [`binary_strided`].
///
/// # Panics
/// As [`binary_strided`].
///
/// # Example
/// ```
/// use stategrad_simd::select_strided;
/// let cond = [1.0f64, 0.0, 1.0];
/// let a = [1.0f64, 2.0, 3.0];
/// let mut out = [0.0; 3];
/// // b is a broadcast scalar
/// select_strided(&cond, &[1], &a, &[1], &[-1.0], &[0], &[3], &mut out);
/// assert_eq!(out, [1.0, -1.0, 3.0]);
/// ```
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
    select_strided_impl(cond, c_strides, a, a_strides, b, b_strides, out_shape, out);
}

/// Copies the strided view of `x` (element `offset`, strides `strides`, shape `out_shape`) into
/// contiguous row-major `out`; used for `broadcast_to` (stride 0) and permute/transpose.
///
/// # Panics
/// If `out.len()` is not the product of `out_shape`, `strides` has the wrong rank, the view
/// reaches past `x`, or the rank exceeds [`MAX_RANK`].
///
/// # Example
/// ```
/// use stategrad_simd::gather_strided;
/// // transpose a 2x3 row-major matrix
/// let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let mut out = [0.0; 6];
/// gather_strided(&x, &[1, 3], 0, &[3, 2], &mut out);
/// assert_eq!(out, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
/// ```
pub fn gather_strided<T: Element>(
    x: &[T],
    strides: &[usize],
    offset: usize,
    out_shape: &[usize],
    out: &mut [T],
) {
    let n = numel(out_shape);
    assert_eq!(
        out.len(),
        n,
        "gather_strided: out.len() != product of out_shape"
    );
    if n == 0 {
        return;
    }
    check_bounds("gather_strided: x", x.len(), offset, out_shape, strides);
    if transpose_tiled(x, strides, offset, out_shape, out) {
        return;
    }
    Layout::new(out_shape, [strides]).for_each_row([offset], |[off], oo, len, [s]| {
        let o = &mut out[oo..oo + len];
        match s {
            0 => o.fill(x[off]),
            1 => o.copy_from_slice(&x[off..off + len]),
            _ => {
                for (i, e) in o.iter_mut().enumerate() {
                    *e = x[off + i * s];
                }
            }
        }
    });
}

/// Rows and columns of a [`transpose_tiled`] tile: a tile's input lines (`TILE` elements of
/// each of `TILE` columns) stay in L1 while it is copied.
const TILE: usize = 16;

/// [`gather_strided`] when the view is a stack of matrix transposes: after merging the output
/// axes that are contiguous in `x`, its last two axes have input strides 1 and `s > 1` (out row
/// `i`, column `j` reads `x[i + j·s]`), and any leading one is walked as a batch. Copied tile by
/// tile, so each cache line of `x` is read once rather than once per output row (a 256x256
/// transpose took 49 µs row by row). Returns false, writing nothing, for other views.
fn transpose_tiled<T: Element>(
    x: &[T],
    strides: &[usize],
    offset: usize,
    out_shape: &[usize],
    out: &mut [T],
) -> bool {
    // Merge output axes that `x` holds contiguously (axis a then a + 1 with stride[a] =
    // stride[a + 1] * len[a + 1]); drop axes of length 1.
    let mut dims: Vec<(usize, usize)> = Vec::with_capacity(out_shape.len());
    for (&len, &st) in out_shape.iter().zip(strides).filter(|(&l, _)| l != 1) {
        match dims.last_mut() {
            Some((l, s)) if *s == st.saturating_mul(len) => {
                *l *= len;
                *s = st;
            }
            _ => dims.push((len, st)),
        }
    }
    let (batch, (rows, one), (cols, s)) = match dims[..] {
        [r, c] => ((1, 0), r, c),
        [b, r, c] => (b, r, c),
        _ => return false,
    };
    if one != 1 || s <= 1 || rows < TILE || cols < TILE {
        return false;
    }
    let plane = rows * cols;
    for (bi, o) in out.chunks_exact_mut(plane).take(batch.0).enumerate() {
        let base = offset + bi * batch.1;
        #[cfg(target_arch = "x86_64")]
        if let (Some(o), Some(x)) = (crate::element::as_f32_mut(o), crate::element::as_f32(x)) {
            if crate::packed::transpose_plane(o, x, base, s, (rows, cols)) {
                continue;
            }
        }
        for j0 in (0..cols).step_by(TILE) {
            let j1 = (j0 + TILE).min(cols);
            for i0 in (0..rows).step_by(TILE) {
                let i1 = (i0 + TILE).min(rows);
                for i in i0..i1 {
                    let row = &mut o[i * cols + j0..i * cols + j1];
                    for (e, j) in row.iter_mut().zip(j0..j1) {
                        *e = x[base + i + j * s];
                    }
                }
            }
        }
    }
    true
}
