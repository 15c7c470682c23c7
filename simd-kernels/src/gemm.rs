//! [`gemm`]: checks its arguments, then sends a product to the direct path for vector
//! products, the packed kernel (`packed/`), the `gemm` crate or `matrixmultiply`; and the
//! selection products (`gemm_select_cols`, `gemm_select_rows`).

use rayon::prelude::*;

use crate::{Element, Par, PAR_GEMM_MIN_FLOPS};

/// Row blocks of the parallel split are multiples of this (a multiple of the micro-kernel
/// heights of `matrixmultiply`).
const ROW_ALIGN: usize = 16;

/// Products at least this large (m·n·k) go to the `gemm` crate (or to the packed kernel, see
/// [`PACKED_GEMM_MIN_FLOPS`]); smaller ones to `matrixmultiply`, whose setup is cheaper there.
/// Measured on one AVX-512 thread (`matrixmultiply` / `gemm` crate): 16³ transposed 0.15 /
/// 0.25 µs, 32³ 0.88–1.42 / 0.68–1.02 µs, the digits MLP's 64×128×10 6.1 / 3.3 µs.
pub const LARGE_GEMM_MIN_FLOPS: usize = 1 << 14;

/// Products with a transposed operand at least this large (m·n·k) go to the packed kernel;
/// below it the `gemm` crate measured faster (64×64×128 with A transposed: 12.4 µs packed
/// against 10.2 µs, 128³: 42.0 against 38.5 µs, one AVX-512 thread).
pub const PACKED_GEMM_MIN_FLOPS: usize = 1 << 22;

/// `dot(x[0], x[sx], …; y[0], y[sy], …)` over `k` terms, with eight accumulators so that the
/// loop vectorises (the summation order differs from a plain loop by rounding only): term `p`
/// goes to accumulator `p % 8`, the tail included, so no accumulator's chain is more than one
/// add longer than another's. This is what [`gemm()`] computes for a `1 x k` by `k x 1` product.
///
/// # Panics
/// If `x` or `y` is shorter than its `k` strided terms.
///
/// # Example
/// ```
/// let x = [1.0f32, 2.0, 3.0];
/// let y = [4.0f32, 0.0, 5.0, 0.0, 6.0];
/// assert_eq!(stategrad_simd::dot(3, &x, 1, &y, 2), 32.0);
/// ```
pub fn dot<T: Element>(k: usize, x: &[T], sx: usize, y: &[T], sy: usize) -> T {
    let mut acc = [T::ZERO; 8];
    if sx == 1 && sy == 1 {
        let (xc, yc) = (x[..k].chunks_exact(8), y[..k].chunks_exact(8));
        let (xr, yr) = (xc.remainder(), yc.remainder());
        for (xs, ys) in xc.zip(yc) {
            for l in 0..8 {
                acc[l] += xs[l] * ys[l];
            }
        }
        for ((a, xv), yv) in acc.iter_mut().zip(xr).zip(yr) {
            *a += *xv * *yv;
        }
    } else {
        for p in 0..k {
            acc[p % 8] += x[p * sx] * y[p * sy];
        }
    }
    let ((a, b), (c, d)) = (
        (acc[0] + acc[4], acc[1] + acc[5]),
        (acc[2] + acc[6], acc[3] + acc[7]),
    );
    (a + c) + (b + d)
}

/// [`dot`] of four contiguous rows `x[0..k]`, `x[step..step + k]`, … against one contiguous
/// `y`, each rounded exactly as `dot` rounds it (the same eight accumulators, the same final
/// pairing), or `None` when `T` is not f32 (f64 rows then go one by one). One read of `y`
/// serves four rows and the four rows' chains of additions overlap: one row at a time waits on
/// its own chain (a 512x512 f32 matrix-vector product took 40 µs so on an AVX-512 host).
fn dot4<T: Element>(k: usize, x: &[T], step: usize, y: &[T]) -> Option<[T; 4]> {
    let (x, y) = (crate::element::as_f32(x)?, crate::element::as_f32(y)?);
    Some(dot4_f32(k, x, step, y).map(|v| T::from_f64(f64::from(v))))
}

/// [`dot4`] for f32: lane `l` of each row's vector accumulates the terms `p ≡ l (mod 8)`, as
/// `dot`'s accumulator `l` does, with a separate multiply and add (no fused rounding). On the
/// build's own vectors, or in a build without AVX on the AVX2 registers when the CPU has them
/// (chosen at run time, as the other kernels are).
fn dot4_f32(k: usize, x: &[f32], step: usize, y: &[f32]) -> [f32; 4] {
    use crate::isa::VecFn;
    let rows: [&[f32]; 4] = std::array::from_fn(|r| &x[r * step..][..k]);
    let y = &y[..k];
    // A build with AVX has it in `wide`'s vectors already (and they measured faster here than
    // the dispatched ones); a portable build takes the AVX2 registers when the CPU has them.
    let dispatch = !cfg!(target_feature = "avx") && crate::isa::isa() >= crate::isa::Isa::Avx2;
    let on_avx2 = dispatch
        .then(|| crate::isa::with_vec_on(crate::isa::Isa::Avx2, Dot4 { rows, y }))
        .flatten()
        .flatten();
    on_avx2.unwrap_or_else(|| {
        Dot4 { rows, y }
            .call::<wide::f32x8>()
            .expect("wide::f32x8 has eight lanes")
    })
}

/// The body of [`dot4_f32`] on an eight-lane vector type (`None` on any other width).
struct Dot4<'a> {
    rows: [&'a [f32]; 4],
    y: &'a [f32],
}

impl crate::isa::VecFn<f32> for Dot4<'_> {
    type Output = Option<[f32; 4]>;
    #[inline(always)]
    fn call<V: crate::vector::SimdVec<Elem = f32>>(self) -> Option<[f32; 4]> {
        if V::LANES != 8 {
            return None;
        }
        let (rows, y, k) = (self.rows, self.y, self.y.len());
        let mut acc = [V::splat(0.0); 4];
        for (p, ys) in y.chunks_exact(8).enumerate() {
            let ys = V::load(ys);
            for (a, row) in acc.iter_mut().zip(&rows) {
                *a = *a + V::load(&row[p * 8..][..8]) * ys;
            }
        }
        let mut out = [[0.0f32; 8]; 4];
        for (o, a) in out.iter_mut().zip(acc) {
            a.store(o);
        }
        for p in k - k % 8..k {
            for (a, row) in out.iter_mut().zip(&rows) {
                a[p % 8] += row[p] * y[p];
            }
        }
        Some(out.map(|a| ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))))
    }
}

/// `out = beta·out + s·x` over `n` elements with strides (contiguous when both strides are 1).
fn axpby<T: Element>(n: usize, s: T, x: &[T], sx: usize, beta: T, out: &mut [T], so: usize) {
    if sx == 1 && so == 1 {
        let (x, out) = (&x[..n], &mut out[..n]);
        if beta == T::ZERO {
            for (o, v) in out.iter_mut().zip(x) {
                *o = s * *v;
            }
        } else {
            for (o, v) in out.iter_mut().zip(x) {
                *o = beta * *o + s * *v;
            }
        }
    } else {
        for j in 0..n {
            let v = s * x[j * sx];
            out[j * so] = if beta == T::ZERO {
                v
            } else {
                beta * out[j * so] + v
            };
        }
    }
}

/// `C = alpha·A@B + beta·C` for a `B` whose column `j` is zero except (when `rows[j]` is
/// `Some(r)`) for entry `(r, j)`: column `j` of C is column `r` of A times `alpha·B[r, j]`, a
/// gather rather than a GEMM (the basis chunks of batched Jacobians are such products). Only the
/// listed entries of B are read; whether B has that structure is the caller's knowledge, this
/// kernel does not check it. An entry of A meeting a zero of B is not multiplied, so an infinite
/// one gives 0, not NaN (the product of A with the selection `rows` describes). As in [`gemm()`],
/// if `beta == 0`, `C` is not read.
///
/// # Panics
/// If `rows.len() != n`, an index in `rows` is not below `k`, or a matrix does not fit in its
/// slice with the given dims and strides.
///
/// # Example
/// ```
/// use stategrad_simd::gemm_select_cols;
/// // A (2x3, row-major) times B = [[0, 0], [2, 0], [0, 0]]: C = [2·A[:,1], 0].
/// let a = [1.0f32, 2.0, 3.0, 4.0, f32::INFINITY, 6.0];
/// let b = [0.0f32, 0.0, 2.0, 0.0, 0.0, 0.0];
/// let mut c = [9.0f32; 4];
/// gemm_select_cols(2, 3, 2, 1.0, &a, 3, 1, &b, 2, 1, 0.0, &mut c, 2, 1, &[Some(1), None]);
/// assert_eq!(c, [4.0, 0.0, f32::INFINITY, 0.0]);
/// ```
pub fn gemm_select_cols<T: Element>(
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
    rows: &[Option<usize>],
) {
    check_select("gemm_select_cols", rows, n, k);
    check_fits("A", a.len(), m, k, rsa, csa);
    check_fits("B", b.len(), k, n, rsb, csb);
    check_fits("C", c.len(), m, n, rsc, csc);
    let write = |c: &mut [T], i: usize, j: usize, v: T| {
        let at = i * rsc + j * csc;
        c[at] = if beta == T::ZERO { v } else { beta * c[at] + v };
    };
    for (j, &r) in rows.iter().enumerate() {
        match r {
            Some(r) => {
                let s = alpha * b[r * rsb + j * csb];
                for i in 0..m {
                    write(c, i, j, s * a[i * rsa + r * csa]);
                }
            }
            None => (0..m).for_each(|i| write(c, i, j, T::ZERO)),
        }
    }
}

/// `C = alpha·A@B + beta·C` for an `A` whose row `i` is zero except (when `cols[i]` is
/// `Some(r)`) for entry `(i, r)`: row `i` of C is row `r` of B times `alpha·A[i, r]`. The
/// counterpart of [`gemm_select_cols`] for a selection on the left, with the same contract.
///
/// # Panics
/// If `cols.len() != m`, an index in `cols` is not below `k`, or a matrix does not fit in its
/// slice with the given dims and strides.
///
/// # Example
/// ```
/// use stategrad_simd::gemm_select_rows;
/// // A = [[0, 3], [0, 0]] times B (2x2, row-major): C = [3·B[1,:], 0].
/// let a = [0.0f64, 3.0, 0.0, 0.0];
/// let b = [1.0f64, 2.0, 3.0, 4.0];
/// let mut c = [9.0f64; 4];
/// gemm_select_rows(2, 2, 2, 1.0, &a, 2, 1, &b, 2, 1, 0.0, &mut c, 2, 1, &[Some(1), None]);
/// assert_eq!(c, [9.0, 12.0, 0.0, 0.0]);
/// ```
pub fn gemm_select_rows<T: Element>(
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
    cols: &[Option<usize>],
) {
    check_select("gemm_select_rows", cols, m, k);
    check_fits("A", a.len(), m, k, rsa, csa);
    check_fits("B", b.len(), k, n, rsb, csb);
    check_fits("C", c.len(), m, n, rsc, csc);
    if n == 0 {
        // Nothing to write, and an empty B or C must not be sliced at a row's offset.
        return;
    }
    for (i, &r) in cols.iter().enumerate() {
        match r {
            Some(r) => {
                let s = alpha * a[i * rsa + r * csa];
                axpby(n, s, &b[r * rsb..], csb, beta, &mut c[i * rsc..], csc);
            }
            None => (0..n).for_each(|j| {
                let at = i * rsc + j * csc;
                c[at] = if beta == T::ZERO {
                    T::ZERO
                } else {
                    beta * c[at]
                };
            }),
        }
    }
}

/// Panics unless `idx` has `count` entries, each below `k`.
fn check_select(what: &str, idx: &[Option<usize>], count: usize, k: usize) {
    assert_eq!(
        idx.len(),
        count,
        "{what}: {} indices for {count} vectors",
        idx.len()
    );
    if let Some(r) = idx.iter().flatten().find(|&&r| r >= k) {
        panic!("{what}: index {r} out of range for k = {k}");
    }
}

/// Products with a dimension of 1 (vector-matrix, matrix-vector, outer products) are memory-
/// bound: packing panels as a blocked GEMM does would cost more than the product. Handles them
/// directly and returns true, or returns false for the blocked path. Strides are already checked.
fn thin_gemm<T: Element>(
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
) -> bool {
    if k == 0 {
        return false;
    }
    if m == 1 && csb == 1 && csc == 1 {
        // c = beta c + Σ_p alpha a_p · (row p of B): one contiguous axpy per row of B.
        axpy_lines(k, n, |p| alpha * a[p * csa], b, rsb, beta, c);
        return true;
    }
    if m == 1 {
        // c_j = alpha · dot(a, column j of B) + beta c_j.
        for j in 0..n {
            let v = alpha * dot(k, a, csa, &b[j * csb..], rsb);
            c[j * csc] = if beta == T::ZERO {
                v
            } else {
                beta * c[j * csc] + v
            };
        }
        return true;
    }
    if k == 1 && n == 1 {
        // c_i = alpha · a_i · b_0 + beta c_i (a column scaled by one number).
        let s = alpha * b[0];
        for i in 0..m {
            let v = s * a[i * rsa];
            c[i * rsc] = if beta == T::ZERO {
                v
            } else {
                beta * c[i * rsc] + v
            };
        }
        return true;
    }
    if n == 1 && rsa == 1 && rsc == 1 && csa != 1 {
        // A stored by columns (a transposed matrix times a vector): c = beta c + Σ_p alpha b_p ·
        // (column p of A), one contiguous axpy per column, rather than `m` strided dots.
        axpy_lines(k, m, |p| alpha * b[p * rsb], a, csa, beta, c);
        return true;
    }
    if n == 1 {
        // c_i = alpha · dot(row i of A, b) + beta c_i.
        let write = |c: &mut [T], i: usize, d: T| {
            let v = alpha * d;
            c[i * rsc] = if beta == T::ZERO {
                v
            } else {
                beta * c[i * rsc] + v
            };
        };
        let mut i = 0;
        if csa == 1 && rsb == 1 {
            while i + 4 <= m {
                let Some(d) = dot4(k, &a[i * rsa..], rsa, b) else {
                    break;
                };
                for (r, d) in d.into_iter().enumerate() {
                    write(c, i + r, d);
                }
                i += 4;
            }
        }
        for i in i..m {
            write(c, i, dot(k, &a[i * rsa..], csa, b, rsb));
        }
        return true;
    }
    if k == 1 {
        // Outer product: row i of C = beta row + alpha a_i · b.
        for i in 0..m {
            axpby(n, alpha * a[i * rsa], b, csb, beta, &mut c[i * rsc..], csc);
        }
        return true;
    }
    false
}

/// `c[..len] = beta·c + Σ_p s(p)·x[p·step..][..len]` for `p < k` (`k ≥ 1`): one contiguous axpy
/// per line of `x`, the first scaling `c` by `beta`.
fn axpy_lines<T: Element>(
    k: usize,
    len: usize,
    s: impl Fn(usize) -> T,
    x: &[T],
    step: usize,
    beta: T,
    c: &mut [T],
) {
    for p in 0..k {
        let keep = if p == 0 { beta } else { T::ONE };
        axpby(len, s(p), &x[p * step..], 1, keep, c, 1);
    }
}

/// Panics unless the `rows x cols` matrix with strides `rs`/`cs` fits in `len` elements.
fn check_fits(what: &str, len: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    let max = (rows - 1)
        .checked_mul(rs)
        .zip((cols - 1).checked_mul(cs))
        .and_then(|(x, y)| x.checked_add(y));
    assert!(
        matches!(max, Some(mx) if mx < len),
        "gemm: {what} ({rows}x{cols}, strides {rs},{cs}) exceeds its buffer of length {len}"
    );
}

/// Whether `(i, j) -> i * rs + j * cs` is injective on `rows x cols` (sufficient condition:
/// the larger stride spans the whole extent of the smaller one).
fn no_alias(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    if rows == 1 || cols == 1 {
        return (rows <= 1 || rs != 0) && (cols <= 1 || cs != 0);
    }
    let (small, extent, big) = if rs <= cs {
        (rs, rows, cs)
    } else {
        (cs, cols, rs)
    };
    small != 0 && small.checked_mul(extent).is_some_and(|e| big >= e)
}

/// Which large products (of `work` multiply-adds) the packed kernel takes, from
/// `STATEGRAD_GEMM` (read once): `crate` none (every one goes to the `gemm` crate), `packed`
/// every one it can, otherwise those with a transposed operand from [`PACKED_GEMM_MIN_FLOPS`].
/// For comparing the paths in benchmarks and tests.
fn packed_takes<T>(
    kern: &crate::packed::Kernel<T>,
    work: usize,
    n: usize,
    csa: usize,
    csb: usize,
) -> bool {
    static MODE: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let mode =
        *MODE.get_or_init(
            || match std::env::var("STATEGRAD_GEMM").as_deref().map(str::trim) {
                Ok("crate") => Some(false),
                Ok("packed") => Some(true),
                _ => None,
            },
        );
    match mode {
        Some(false) => false,
        // Strides of 0 stand for "any layout": every product a tile wide.
        Some(true) => kern.suits(n, 0, 0),
        None => work >= PACKED_GEMM_MIN_FLOPS && kern.suits(n, csa, csb),
    }
}

/// A raw pointer that may be shared across rayon tasks.
#[derive(Clone, Copy)]
pub(crate) struct SharedPtr<T>(pub(crate) *mut T);

// SAFETY: only used by `gemm` and the packed kernel's driver to hand disjoint row or column
// blocks of C (and read-only A, B) to rayon tasks; `T: Send + Sync` (f32/f64) and no two tasks
// touch the same element of C.
unsafe impl<T: Send + Sync> Send for SharedPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for SharedPtr<T> {}

impl<T> SharedPtr<T> {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not the field).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// `C = alpha * A @ B + beta * C`, with `A` `m x k`, `B` `k x n`, `C` `m x n`, each with general
/// row/column strides in elements (`matrixmultiply` semantics; transposes are expressed by
/// swapping strides). If `beta == 0`, `C` is not read (NaNs in it do not propagate); if
/// `k == 0`, `C = beta * C`.
///
/// Paths, by size:
/// * vector-matrix and matrix-vector products (`m`, `n` or `k` of 1) run as dots or axpys;
/// * products of at least [`PACKED_GEMM_MIN_FLOPS`] multiply-adds (`2^22`) with a transposed
///   operand (A or B not row-major) run on this crate's packed kernel (blocked, AVX-512 or
///   AVX2 + FMA tiles chosen at run time) when the CPU has one and `n` is at least one tile
///   wide; the others on the `gemm` crate, which measured faster on two row-major operands.
///   The packed kernel sums each element's `k` products in an order fixed by `k` alone, so its
///   results do not depend on the thread count. `STATEGRAD_GEMM=crate` (read once) sends every
///   large product to the `gemm` crate, `STATEGRAD_GEMM=packed` every one it can to the packed
///   kernel, to compare the two (every product of at least [`LARGE_GEMM_MIN_FLOPS`], `2^14`,
///   goes to one of the two);
/// * smaller products run on `matrixmultiply`.
///
/// With [`Par::Rayon`] and `m * n * k >` [`PAR_GEMM_MIN_FLOPS`](crate::PAR_GEMM_MIN_FLOPS), the
/// work is split over the rayon threads; [`Par::Seq`] stays on the caller's thread. Packing
/// buffers are allocated (and, up to 8 MiB each, kept by the thread for the next call).
///
/// # Panics
/// If a matrix does not fit in its slice with the given dims and strides, or if `C`'s strides
/// could make two elements alias (e.g. a zero stride on a dimension longer than 1).
///
/// # Example
/// ```
/// use stategrad_simd::{gemm, Par};
/// // [2x3] @ [3x2], row-major
/// let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let b = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0];
/// let mut c = [0.0f32; 4];
/// gemm(2, 3, 2, 1.0, &a, 3, 1, &b, 2, 1, 0.0, &mut c, 2, 1, Par::Seq);
/// assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
/// // A^T @ A (A^T is A read with swapped strides): [3x2] @ [2x3]
/// let mut d = [0.0f32; 9];
/// gemm(3, 2, 3, 1.0, &a, 1, 3, &a, 3, 1, 0.0, &mut d, 3, 1, Par::Seq);
/// assert_eq!(d[0], 17.0);
/// ```
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
    par: Par,
) {
    // A stride of a dimension of length <= 1 is never multiplied by a nonzero index; zero it so
    // that every stride passed on is bounded by a checked in-bounds index (and fits `isize`).
    // With k == 0, A and B are not read at all.
    let z = |dim: usize, s: usize| if dim <= 1 { 0 } else { s };
    let zk = |dim: usize, s: usize| if k == 0 { 0 } else { z(dim, s) };
    let (rsa, csa, rsb, csb) = (zk(m, rsa), z(k, csa), z(k, rsb), zk(n, csb));
    let (rsc, csc) = (z(m, rsc), z(n, csc));
    check_fits("A", a.len(), m, k, rsa, csa);
    check_fits("B", b.len(), k, n, rsb, csb);
    check_fits("C", c.len(), m, n, rsc, csc);
    assert!(
        no_alias(m, n, rsc, csc),
        "gemm: C strides ({rsc},{csc}) alias elements of a {m}x{n} matrix"
    );
    if m == 0 || n == 0 {
        return;
    }
    if thin_gemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) {
        return;
    }
    let work = m.saturating_mul(n).saturating_mul(k);
    let threads = rayon::current_num_threads();
    let parallel = par == Par::Rayon && threads > 1 && work > PAR_GEMM_MIN_FLOPS;
    if k > 0 && work >= LARGE_GEMM_MIN_FLOPS {
        if let Some(kern) =
            crate::packed::kernel::<T>().filter(|kern| packed_takes(kern, work, n, csa, csb))
        {
            let ops = crate::packed::Operands {
                a,
                rsa,
                csa,
                b,
                rsb,
                csb,
            };
            // SAFETY: m, k, n >= 1 here; A's and B's elements are in bounds (`check_fits`),
            // C's are in bounds and distinct (`check_fits`, `no_alias`; strides fit `isize`
            // since each is bounded by an in-bounds index) and `c` is borrowed mutably.
            unsafe {
                crate::packed::gemm(
                    &kern,
                    (m, k, n),
                    alpha,
                    &ops,
                    beta,
                    c.as_mut_ptr(),
                    (rsc as isize, csc as isize),
                    if parallel { threads } else { 1 },
                )
            };
            return;
        }
        // Large products go to the `gemm` crate: packed AVX-512/AVX2/SSE micro-kernels chosen at
        // run time (its `x86-v4` feature), parallelised at one level over rayon when allowed.
        let parallelism = if parallel {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        let [rsa_i, csa_i, rsb_i, csb_i, rsc_i, csc_i] =
            [rsa, csa, rsb, csb, rsc, csc].map(|s| s as isize);
        // SAFETY: every element reachable from A, B and C with these dims and strides is in
        // bounds (`check_fits` above; all strides fit `isize`), A and B are only read, C's
        // elements do not alias (`no_alias`), and `read_dst` is false exactly when beta == 0, so
        // C is then only written. The crate computes dst := s·dst + t·lhs·rhs with (s, t) =
        // (beta, alpha) in our naming.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                csc_i,
                rsc_i,
                beta != T::ZERO,
                a.as_ptr(),
                csa_i,
                rsa_i,
                b.as_ptr(),
                csb_i,
                rsb_i,
                beta,
                alpha,
                false,
                false,
                false,
                parallelism,
            )
        };
        return;
    }
    // Every stride is now 0 or at most a checked index `< len <= isize::MAX`.
    let [rsa_i, csa_i, rsb_i, csb_i, rsc_i, csc_i] =
        [rsa, csa, rsb, csb, rsc, csc].map(|s| s as isize);
    let (ap, bp) = (
        SharedPtr(a.as_ptr().cast_mut()),
        SharedPtr(b.as_ptr().cast_mut()),
    );
    let cp = SharedPtr(c.as_mut_ptr());
    // Computes rows `r0..r0 + rows` of C.
    let run = |r0: usize, rows: usize| {
        // SAFETY: `r0 + rows <= m`, so every element reached is one of A's rows `0..m`, B, or
        // one of C's rows `0..m`, all bounds-checked above (`check_fits`); A and B are only read.
        // C's elements do not alias (`no_alias`) and distinct calls get disjoint row ranges, so
        // no element of C is written by two concurrent calls. When k == 0, A and B are not read.
        unsafe {
            T::gemm_raw(
                rows,
                k,
                n,
                alpha,
                ap.get().add(r0 * rsa).cast_const(),
                rsa_i,
                csa_i,
                bp.get().cast_const(),
                rsb_i,
                csb_i,
                beta,
                cp.get().add(r0 * rsc),
                rsc_i,
                csc_i,
            )
        }
    };
    if parallel && m >= 2 * ROW_ALIGN {
        let rows_per = m.div_ceil(threads).next_multiple_of(ROW_ALIGN);
        let blocks = m.div_ceil(rows_per);
        (0..blocks).into_par_iter().for_each(|i| {
            let r0 = i * rows_per;
            run(r0, rows_per.min(m - r0));
        });
    } else {
        run(0, m);
    }
}
