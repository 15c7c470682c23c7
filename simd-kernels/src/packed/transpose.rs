//! Packing a row-major A or a transposed B is a transpose, and so is copying a transposed view
//! (`strided::transpose_tiled`); these do it eight by eight in AVX registers (f32), about three
//! times faster than element by element.
//!
//! # Soundness
//! The `#[target_feature]` functions are reached only through [`rows_to_panel`] and [`plane`],
//! which check that the chosen ISA includes AVX2 and every bound before their `unsafe` blocks.

use std::arch::x86_64::*;

/// `dst[p * W + i] = src[start + i * stride + p]` for `i < W`, `p < kb`: `W` rows of length
/// `kb` (contiguous, `stride` apart) into a `[p][i]` panel. `W` is a multiple of 4 (A's 12
/// rows, B's 32 or 16 columns).
///
/// Returns false (and writes nothing) when the CPU lacks AVX2.
///
/// # Panics
/// If a row runs past `src` or the panel past `dst` (a defect in the caller).
pub(super) fn rows_to_panel<const W: usize>(
    dst: &mut [f32],
    src: &[f32],
    start: usize,
    stride: usize,
    kb: usize,
) -> bool {
    const { assert!(W.is_multiple_of(4) && W > 0) };
    if crate::isa::isa() < crate::isa::Isa::Avx2 {
        return false;
    }
    let last = (W - 1)
        .checked_mul(stride)
        .and_then(|o| o.checked_add(start))
        .and_then(|o| o.checked_add(kb));
    assert!(last.is_some_and(|end| end <= src.len()), "transpose source");
    assert!(dst.len() >= W * kb, "transpose panel");
    // SAFETY: every element read is `start + i * stride + p` with i < W, p < kb, at most
    // `last - 1 < src.len()`; every element written is `p * W + i < W * kb <= dst.len()`; the
    // chosen ISA (checked above) includes AVX2.
    unsafe { rows_to_panel_avx2::<W>(dst.as_mut_ptr(), src.as_ptr().add(start), stride, kb) };
    true
}

/// # Safety
/// As [`rows_to_panel`]'s checks; AVX2 present.
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_to_panel_avx2<const W: usize>(
    dst: *mut f32,
    src: *const f32,
    stride: usize,
    kb: usize,
) {
    // SAFETY (whole body): the reads are rows `i < W` at columns `p < kb`, the writes panel
    // entries `p * W + i`, all in bounds by the caller's contract.
    unsafe {
        let blocks = kb / 8;
        for pb in 0..blocks {
            let p = pb * 8;
            let mut i = 0;
            while i + 8 <= W {
                let r: [__m256; 8] =
                    std::array::from_fn(|j| _mm256_loadu_ps(src.add((i + j) * stride + p)));
                let o = transpose8(r);
                for (j, v) in o.into_iter().enumerate() {
                    _mm256_storeu_ps(dst.add((p + j) * W + i), v);
                }
                i += 8;
            }
            if i + 4 <= W {
                let r: [__m256; 4] =
                    std::array::from_fn(|j| _mm256_loadu_ps(src.add((i + j) * stride + p)));
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                // Each holds columns (j, j + 4) of the four rows.
                let u = [
                    _mm256_shuffle_ps::<0x44>(t0, t2),
                    _mm256_shuffle_ps::<0xEE>(t0, t2),
                    _mm256_shuffle_ps::<0x44>(t1, t3),
                    _mm256_shuffle_ps::<0xEE>(t1, t3),
                ];
                for (j, v) in u.into_iter().enumerate() {
                    _mm_storeu_ps(dst.add((p + j) * W + i), _mm256_castps256_ps128(v));
                    _mm_storeu_ps(dst.add((p + j + 4) * W + i), _mm256_extractf128_ps::<1>(v));
                }
            }
        }
        for p in blocks * 8..kb {
            for i in 0..W {
                *dst.add(p * W + i) = *src.add(i * stride + p);
            }
        }
    }
}

/// An 8 x 8 transpose: `out[j]` lane `i` is `r[i]` lane `j`.
#[inline(always)]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // SAFETY: register-only AVX intrinsics; callers run with AVX2 enabled.
    unsafe {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }
}

/// `out[i * cols + j] = x[base + i + j * s]` for `i < rows`, `j < cols`: one plane of a
/// transposed view (`strided::transpose_tiled`), eight by eight in AVX registers, the edges
/// element by element. Returns false (and writes nothing) when the CPU lacks AVX2.
///
/// # Panics
/// If `out` is shorter than `rows * cols` or a read would pass the end of `x`.
pub(crate) fn plane(
    out: &mut [f32],
    x: &[f32],
    base: usize,
    s: usize,
    (rows, cols): (usize, usize),
) -> bool {
    if crate::isa::isa() < crate::isa::Isa::Avx2 {
        return false;
    }
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (cols - 1)
        .checked_mul(s)
        .and_then(|o| o.checked_add(base + rows - 1));
    assert!(last.is_some_and(|l| l < x.len()), "transpose plane source");
    assert!(out.len() >= rows * cols, "transpose plane output");
    // SAFETY: every read is `base + i + j * s` with i < rows, j < cols, at most `last <
    // x.len()`; every write is `i * cols + j < rows * cols <= out.len()`; the chosen ISA
    // (checked above) includes AVX2.
    unsafe { plane_avx2(out.as_mut_ptr(), x.as_ptr().add(base), s, rows, cols) };
    true
}

/// # Safety
/// As [`plane`]'s checks; AVX2 present.
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2(out: *mut f32, src: *const f32, s: usize, rows: usize, cols: usize) {
    // SAFETY (whole body): reads `src + i + j * s`, writes `out + i * cols + j`, i < rows,
    // j < cols, in bounds by the caller's contract.
    unsafe {
        let (r8, c8) = (rows - rows % 8, cols - cols % 8);
        for i0 in (0..r8).step_by(8) {
            for j0 in (0..c8).step_by(8) {
                let r: [__m256; 8] =
                    std::array::from_fn(|jj| _mm256_loadu_ps(src.add(i0 + (j0 + jj) * s)));
                for (ii, v) in transpose8(r).into_iter().enumerate() {
                    _mm256_storeu_ps(out.add((i0 + ii) * cols + j0), v);
                }
            }
            for i in i0..i0 + 8 {
                for j in c8..cols {
                    *out.add(i * cols + j) = *src.add(i + j * s);
                }
            }
        }
        for i in r8..rows {
            for j in 0..cols {
                *out.add(i * cols + j) = *src.add(i + j * s);
            }
        }
    }
}
