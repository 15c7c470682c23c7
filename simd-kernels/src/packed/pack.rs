//! Packing one panel of A or B (the same operation: A's rows and B's columns are both "lines"
//! along the depth `k`), with the tile size known at compile time so that the copies and the
//! small transposes compile to straight-line vector moves.
//!
//! Each function takes `(start, live, kb)`: the operand index of the panel's first element, how
//! many of its lines exist, and its depth; missing lines are zeros.

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
    if let (Some(dst), Some(src)) = (
        crate::element::as_f32_mut(panel),
        crate::element::as_f32(src),
    ) {
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

/// Elements of a line transposed at once.
const T8: usize = 8;

/// One operand as the packers see it: a panel's `W` lines (A's rows, B's columns) of `kb`
/// elements, element `(line i, depth p)` at `src[start + i * line + p * depth]`.
#[derive(Clone, Copy)]
pub(super) struct Lines<'a, T> {
    pub src: &'a [T],
    /// Stride between lines (A: `rsa`; B: `csb`).
    pub line: usize,
    /// Stride along the depth `k` (A: `csa`; B: `rsb`).
    pub depth: usize,
}

impl<'a, T> Lines<'a, T> {
    /// A's rows.
    pub(super) fn of_a(ops: &Operands<'a, T>) -> Self {
        Lines {
            src: ops.a,
            line: ops.rsa,
            depth: ops.csa,
        }
    }
    /// B's columns.
    pub(super) fn of_b(ops: &Operands<'a, T>) -> Self {
        Lines {
            src: ops.b,
            line: ops.csb,
            depth: ops.rsb,
        }
    }
}

/// The `live` lines of `kb` at `start` into a `[p][i]` panel of `W` lines (missing lines are
/// zeros): a copy per depth step when lines are adjacent (a transposed A, a row-major B), a
/// transpose when each line is contiguous (a row-major A, a transposed B).
#[inline]
pub(super) fn panel<T: Element, const W: usize>(
    panel: &mut [T],
    x: Lines<T>,
    (start, live, kb): (usize, usize, usize),
) {
    let panel = &mut panel[..W * kb];
    if x.line == 1 {
        for (p, dst) in panel.chunks_exact_mut(W).enumerate() {
            let dst: &mut [T; W] = dst.try_into().expect("W chunk");
            let at = start + p * x.depth;
            if live == W {
                dst.copy_from_slice(&x.src[at..at + W]);
            } else {
                dst[..live].copy_from_slice(&x.src[at..at + live]);
                dst[live..].fill(T::ZERO);
            }
        }
    } else if x.depth == 1 && live == W && transpose_rows::<T, W>(panel, x.src, start, x.line, kb) {
    } else if x.depth == 1 && live == W {
        // Transpose W x 8 blocks.
        let lines: [&[T]; W] = std::array::from_fn(|i| &x.src[start + i * x.line..][..kb]);
        let blocks = kb / T8;
        for (pb, dst) in panel.chunks_exact_mut(W * T8).take(blocks).enumerate() {
            let mut t = [[T::ZERO; W]; T8];
            for (i, line) in lines.iter().enumerate() {
                let r: &[T; T8] = line[pb * T8..][..T8].try_into().expect("8 elements");
                for (j, &v) in r.iter().enumerate() {
                    t[j][i] = v;
                }
            }
            for (d, s) in dst.chunks_exact_mut(W).zip(&t) {
                d.copy_from_slice(s);
            }
        }
        for p in blocks * T8..kb {
            for (i, line) in lines.iter().enumerate() {
                panel[p * W + i] = line[p];
            }
        }
    } else {
        panel_any(panel, x, (start, live, kb), W);
    }
}

/// [`panel()`] for any panel width and strides, element by element.
pub(super) fn panel_any<T: Element>(
    panel: &mut [T],
    x: Lines<T>,
    (start, live, kb): (usize, usize, usize),
    w: usize,
) {
    for (p, dst) in panel.chunks_exact_mut(w).take(kb).enumerate() {
        for (i, d) in dst.iter_mut().enumerate() {
            *d = if i < live {
                x.src[start + i * x.line + p * x.depth]
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
