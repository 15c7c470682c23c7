//! Packing one panel of A or B, with the tile size known at compile time so that the copies
//! and the small transposes compile to straight-line vector moves.
//!
//! Each function takes `(start, live, kb)`: the operand index of the panel's first element, how
//! many of its `MR` rows (`NR` columns) exist, and its depth; missing rows/columns are zeros.

use std::any::TypeId;

use super::Operands;
use crate::Element;

/// `W` contiguous rows of `kb` at `start`, `stride` apart, into a `[p][i]` panel with the AVX
/// transposes when `T` is f32 and the CPU has them; false if not done.
fn transpose_rows<T: Element, const W: usize>(
    panel: &mut [T],
    src: &[T],
    start: usize,
    stride: usize,
    kb: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32 (checked just above): same layout, same lengths.
        let (dst, src) = unsafe {
            (
                std::slice::from_raw_parts_mut(panel.as_mut_ptr().cast::<f32>(), panel.len()),
                std::slice::from_raw_parts(src.as_ptr().cast::<f32>(), src.len()),
            )
        };
        return match W {
            12 => super::transpose::rows_to_panel::<12>(dst, src, start, stride, kb),
            16 => super::transpose::rows_to_panel::<16>(dst, src, start, stride, kb),
            32 => super::transpose::rows_to_panel::<32>(dst, src, start, stride, kb),
            _ => false,
        };
    }
    let _ = (panel, src, start, stride, kb);
    false
}

/// Elements of a row (column) transposed at once.
const T8: usize = 8;

/// A's `live x kb` rows at `start` into a `[p][i]` panel of `MR` rows.
#[inline]
pub(super) fn a_panel<T: Element, const MR: usize>(
    panel: &mut [T],
    ops: &Operands<T>,
    (start, live, kb): (usize, usize, usize),
) {
    let (a, rsa, csa) = (ops.a, ops.rsa, ops.csa);
    let panel = &mut panel[..MR * kb];
    if rsa == 1 && csa != 1 {
        // A transposed: each p is `live` contiguous elements.
        for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
            let dst: &mut [T; MR] = dst.try_into().expect("MR chunk");
            let at = start + p * csa;
            if live == MR {
                dst.copy_from_slice(&a[at..at + MR]);
            } else {
                dst[..live].copy_from_slice(&a[at..at + live]);
                dst[live..].fill(T::ZERO);
            }
        }
    } else if csa == 1 && live == MR && transpose_rows::<T, MR>(panel, a, start, rsa, kb) {
    } else if csa == 1 && live == MR {
        // Rows contiguous: transpose MR x 8 blocks.
        let rows: [&[T]; MR] = std::array::from_fn(|i| &a[start + i * rsa..][..kb]);
        let blocks = kb / T8;
        for (pb, dst) in panel.chunks_exact_mut(MR * T8).take(blocks).enumerate() {
            let mut t = [[T::ZERO; MR]; T8];
            for (i, row) in rows.iter().enumerate() {
                let r: &[T; T8] = row[pb * T8..][..T8].try_into().expect("8 elements");
                for (j, &x) in r.iter().enumerate() {
                    t[j][i] = x;
                }
            }
            for (d, s) in dst.chunks_exact_mut(MR).zip(&t) {
                d.copy_from_slice(s);
            }
        }
        for p in blocks * T8..kb {
            for (i, row) in rows.iter().enumerate() {
                panel[p * MR + i] = row[p];
            }
        }
    } else {
        a_panel_any(panel, ops, (start, live, kb), MR);
    }
}

/// [`a_panel`] for any tile height and strides.
pub(super) fn a_panel_any<T: Element>(
    panel: &mut [T],
    ops: &Operands<T>,
    (start, live, kb): (usize, usize, usize),
    mr: usize,
) {
    for (p, dst) in panel.chunks_exact_mut(mr).take(kb).enumerate() {
        for (i, d) in dst.iter_mut().enumerate() {
            *d = if i < live {
                ops.a[start + i * ops.rsa + p * ops.csa]
            } else {
                T::ZERO
            };
        }
    }
}

/// B's `kb x live` columns at `start` into a `[p][j]` panel of `NR` columns.
#[inline]
pub(super) fn b_panel<T: Element, const NR: usize>(
    panel: &mut [T],
    ops: &Operands<T>,
    (start, live, kb): (usize, usize, usize),
) {
    let (b, rsb, csb) = (ops.b, ops.rsb, ops.csb);
    let panel = &mut panel[..NR * kb];
    if csb == 1 {
        for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
            let dst: &mut [T; NR] = dst.try_into().expect("NR chunk");
            let at = start + p * rsb;
            if live == NR {
                dst.copy_from_slice(&b[at..at + NR]);
            } else {
                dst[..live].copy_from_slice(&b[at..at + live]);
                dst[live..].fill(T::ZERO);
            }
        }
    } else if rsb == 1 && live == NR && transpose_rows::<T, NR>(panel, b, start, csb, kb) {
    } else if rsb == 1 && live == NR {
        // B transposed: its columns are contiguous; transpose 8 x NR blocks.
        let cols: [&[T]; NR] = std::array::from_fn(|j| &b[start + j * csb..][..kb]);
        let blocks = kb / T8;
        for (pb, dst) in panel.chunks_exact_mut(NR * T8).take(blocks).enumerate() {
            let mut t = [[T::ZERO; NR]; T8];
            for (j, col) in cols.iter().enumerate() {
                let c: &[T; T8] = col[pb * T8..][..T8].try_into().expect("8 elements");
                for (p, &x) in c.iter().enumerate() {
                    t[p][j] = x;
                }
            }
            for (d, s) in dst.chunks_exact_mut(NR).zip(&t) {
                d.copy_from_slice(s);
            }
        }
        for p in blocks * T8..kb {
            for (j, col) in cols.iter().enumerate() {
                panel[p * NR + j] = col[p];
            }
        }
    } else {
        b_panel_any(panel, ops, (start, live, kb), NR);
    }
}

/// [`b_panel`] for any tile width and strides.
pub(super) fn b_panel_any<T: Element>(
    panel: &mut [T],
    ops: &Operands<T>,
    (start, live, kb): (usize, usize, usize),
    nr: usize,
) {
    for (p, dst) in panel.chunks_exact_mut(nr).take(kb).enumerate() {
        for (j, d) in dst.iter_mut().enumerate() {
            *d = if j < live {
                ops.b[start + p * ops.rsb + j * ops.csb]
            } else {
                T::ZERO
            };
        }
    }
}

/// Rows `p0..p0+kb` of a B with contiguous rows, columns `j0..j0+cols`, into `kb x NR`
/// panels: each row is read once, front to back (the panels are written `NR` at a time).
pub(super) fn b_rows<T: Element, const NR: usize>(
    bp: &mut [T],
    ops: &Operands<T>,
    p0: usize,
    kb: usize,
    j0: usize,
    cols: usize,
) {
    let panels = cols.div_ceil(NR);
    let full = cols / NR;
    let bp = &mut bp[..panels * kb * NR];
    for p in 0..kb {
        let row = &ops.b[(p0 + p) * ops.rsb + j0..][..cols];
        for (q, src) in row.chunks_exact(NR).enumerate() {
            let src: &[T; NR] = src.try_into().expect("NR chunk");
            let dst: &mut [T; NR] = (&mut bp[(q * kb + p) * NR..][..NR])
                .try_into()
                .expect("NR chunk");
            *dst = *src;
        }
        if full < panels {
            let dst = &mut bp[(full * kb + p) * NR..][..NR];
            let live = cols - full * NR;
            dst[..live].copy_from_slice(&row[full * NR..]);
            dst[live..].fill(T::ZERO);
        }
    }
}
