//! The micro-kernels: one `MR x NR` tile of `C` held in registers for a whole `kc` block, per
//! ISA and element type.
//!
//! A tile's row `i` is `NV` vectors of `B`'s packed row times the broadcast `A[i, p]`, so the
//! loop body per `p` is `NV` loads, `MR` broadcasts and `MR * NV` FMAs, and nothing is stored
//! until the block ends. Tile sizes leave one register for the broadcast and `NV` for `B`:
//! AVX-512 (32 registers) holds 12 x 2 accumulators, AVX2 (16) holds 6 x 2.
//!
//! # Soundness
//! Every function here is `unsafe` and reads and writes through raw pointers; [`Block`] states
//! what its caller guarantees. The `#[target_feature]` functions are only reached through
//! [`kernel_f32_on`] and [`kernel_f64_on`], which hand out each one, with its own tile size,
//! only when [`Isa::detected`] found its ISA on this CPU.

use std::arch::x86_64::*;

use super::{Block, Kernel};
use crate::isa::Isa;

/// One ISA's registers for one element type.
trait Lanes {
    type E: Copy + Default;
    type R: Copy;
    /// Lanes per register.
    const W: usize;
    unsafe fn zero() -> Self::R;
    unsafe fn load(p: *const Self::E) -> Self::R;
    unsafe fn store(p: *mut Self::E, r: Self::R);
    unsafe fn splat(x: Self::E) -> Self::R;
    /// `a * b + c`, one rounding.
    unsafe fn fma(a: Self::R, b: Self::R, c: Self::R) -> Self::R;
    unsafe fn mul(a: Self::R, b: Self::R) -> Self::R;
    /// Scalar `a * b + c`, one rounding (the edge tiles' counterpart of [`Lanes::fma`]).
    fn fma_s(a: Self::E, b: Self::E, c: Self::E) -> Self::E;
    fn mul_s(a: Self::E, b: Self::E) -> Self::E;
}

macro_rules! lanes {
    ($name:ident, $e:ty, $r:ty, $w:literal, $zero:ident, $load:ident, $store:ident, $set1:ident,
     $fmadd:ident, $mul:ident) => {
        struct $name;
        impl Lanes for $name {
            type E = $e;
            type R = $r;
            const W: usize = $w;
            #[inline(always)]
            unsafe fn zero() -> $r {
                // SAFETY: register-only intrinsic; callers run on a CPU with the ISA (module docs).
                unsafe { $zero() }
            }
            #[inline(always)]
            unsafe fn load(p: *const $e) -> $r {
                // SAFETY: the caller guarantees `W` readable elements at `p`.
                unsafe { $load(p) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut $e, r: $r) {
                // SAFETY: the caller guarantees `W` writable elements at `p`.
                unsafe { $store(p, r) }
            }
            #[inline(always)]
            unsafe fn splat(x: $e) -> $r {
                // SAFETY: register-only intrinsic.
                unsafe { $set1(x) }
            }
            #[inline(always)]
            unsafe fn fma(a: $r, b: $r, c: $r) -> $r {
                // SAFETY: register-only intrinsic.
                unsafe { $fmadd(a, b, c) }
            }
            #[inline(always)]
            unsafe fn mul(a: $r, b: $r) -> $r {
                // SAFETY: register-only intrinsic.
                unsafe { $mul(a, b) }
            }
            #[inline(always)]
            fn fma_s(a: $e, b: $e, c: $e) -> $e {
                a.mul_add(b, c)
            }
            #[inline(always)]
            fn mul_s(a: $e, b: $e) -> $e {
                a * b
            }
        }
    };
}

lanes!(
    Avx512F32,
    f32,
    __m512,
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_mul_ps
);
lanes!(
    Avx512F64,
    f64,
    __m512d,
    8,
    _mm512_setzero_pd,
    _mm512_loadu_pd,
    _mm512_storeu_pd,
    _mm512_set1_pd,
    _mm512_fmadd_pd,
    _mm512_mul_pd
);
lanes!(
    Avx2F32,
    f32,
    __m256,
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_mul_ps
);
lanes!(
    Avx2F64,
    f64,
    __m256d,
    4,
    _mm256_setzero_pd,
    _mm256_loadu_pd,
    _mm256_storeu_pd,
    _mm256_set1_pd,
    _mm256_fmadd_pd,
    _mm256_mul_pd
);

/// All tiles of one block, a row of tiles at a time (A's panel stays in L1 while B's panels
/// stream from L2; the other order measured the same).
///
/// # Safety
/// [`Block`]'s contract; `MR` and `NV * L::W` are the block's `mr` and `nr`.
#[inline(always)]
unsafe fn block<L: Lanes, const MR: usize, const NV: usize>(blk: &Block<L::E>) {
    let nr = NV * L::W;
    for q in 0..blk.rows.div_ceil(MR) {
        for r in 0..blk.cols.div_ceil(nr) {
            let (row, col) = (q * MR, r * nr);
            let (rows, cols) = (MR.min(blk.rows - row), nr.min(blk.cols - col));
            // SAFETY: panel q of A and panel r of B are whole packed panels (`kc * MR`,
            // `kc * nr` elements) and the tile at (row, col) is inside the block's
            // `rows x cols` of C (Block).
            unsafe {
                let c = blk
                    .c
                    .offset(row as isize * blk.rsc + col as isize * blk.csc);
                let ap = blk.ap.add(q * blk.kc * MR);
                let acc = tile::<L, MR, NV>(blk.kc, ap, blk.bp.add(r * blk.kc * nr));
                store::<L, MR, NV>(&acc, c, blk, rows, cols);
            }
        }
    }
}

/// `sum_p A[:, p] B[p, :]` over one packed `MR x kc` panel of A and `kc x NV·W` panel of B.
#[inline(always)]
unsafe fn tile<L: Lanes, const MR: usize, const NV: usize>(
    kc: usize,
    ap: *const L::E,
    bp: *const L::E,
) -> [[L::R; NV]; MR] {
    // SAFETY (whole body): `ap` has `kc * MR` and `bp` `kc * NV * W` readable elements; the
    // loop reads exactly those.
    unsafe {
        let mut acc = [[L::zero(); NV]; MR];
        let (mut a, mut b) = (ap, bp);
        let mut step = |a: &mut *const L::E, b: &mut *const L::E| {
            let mut bv = [L::zero(); NV];
            for (v, r) in bv.iter_mut().enumerate() {
                *r = L::load(b.add(v * L::W));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let x = L::splat(*a.add(i));
                for (r, bvv) in row.iter_mut().zip(bv) {
                    *r = L::fma(x, bvv, *r);
                }
            }
            *a = a.add(MR);
            *b = b.add(NV * L::W);
        };
        // Unrolled by 4: the loop's counter and branch otherwise take issue slots from the
        // FMAs (+4-8 % on the training step's shapes).
        const UNROLL: usize = 4;
        for _ in 0..kc / UNROLL {
            for _ in 0..UNROLL {
                step(&mut a, &mut b);
            }
        }
        for _ in 0..kc % UNROLL {
            step(&mut a, &mut b);
        }
        acc
    }
}

/// `C = alpha * acc + beta * C` (C not read when the block's `beta` is `None`) over the
/// tile's `rows x cols` corner.
#[inline(always)]
unsafe fn store<L: Lanes, const MR: usize, const NV: usize>(
    acc: &[[L::R; NV]; MR],
    c: *mut L::E,
    blk: &Block<L::E>,
    rows: usize,
    cols: usize,
) {
    // SAFETY (whole body): every element written is (i, j) with i < rows, j < cols, inside the
    // block's C (Block's contract); register-only intrinsics otherwise.
    unsafe {
        let alpha = L::splat(blk.alpha);
        if blk.csc == 1 && rows == MR && cols == NV * L::W {
            // All of the tile's reads of C before any of its writes: C's rows are often a
            // multiple of 4 KiB apart, and a read behind a pending write to an address 4 KiB
            // away waits for it (4K aliasing), which cost ~8 % of the product.
            let mut out = *acc;
            for (i, row) in out.iter_mut().enumerate() {
                let ci = c.offset(i as isize * blk.rsc);
                for (v, r) in row.iter_mut().enumerate() {
                    *r = L::mul(alpha, *r);
                    if let Some(beta) = blk.beta {
                        *r = L::fma(L::splat(beta), L::load(ci.add(v * L::W)), *r);
                    }
                }
            }
            for (i, row) in out.iter().enumerate() {
                let ci = c.offset(i as isize * blk.rsc);
                for (v, &r) in row.iter().enumerate() {
                    L::store(ci.add(v * L::W), r);
                }
            }
            return;
        }
        let mut buf = [[L::E::default(); 64]; MR];
        for (row, b) in acc.iter().zip(buf.iter_mut()) {
            for (v, &r) in row.iter().enumerate() {
                L::store(b.as_mut_ptr().add(v * L::W), r);
            }
        }
        for (i, b) in buf.iter().enumerate().take(rows) {
            for (j, &x) in b.iter().enumerate().take(cols) {
                let p = c.offset(i as isize * blk.rsc + j as isize * blk.csc);
                let out = L::mul_s(blk.alpha, x);
                *p = match blk.beta {
                    Some(beta) => L::fma_s(beta, *p, out),
                    None => out,
                };
            }
        }
    }
}

macro_rules! entry {
    ($name:ident, $l:ty, $feat:literal, $mr:literal, $nv:literal) => {
        /// # Safety
        /// [`Block`]'s contract, on a CPU with the enabled features.
        #[target_feature(enable = $feat)]
        unsafe fn $name(blk: &Block<<$l as Lanes>::E>) {
            // SAFETY: forwarded (the tile sizes are this kernel's).
            unsafe { block::<$l, $mr, $nv>(blk) }
        }
    };
}

entry!(avx512_f32, Avx512F32, "avx512f,avx512dq,avx2,fma", 12, 2);
entry!(avx512_f64, Avx512F64, "avx512f,avx512dq,avx2,fma", 12, 2);
entry!(avx2_f32, Avx2F32, "avx2,fma", 6, 2);
entry!(avx2_f64, Avx2F64, "avx2,fma", 6, 2);

/// The f32 kernel of `which`, if this CPU has it.
pub(super) fn kernel_f32_on(which: Isa) -> Option<Kernel<f32>> {
    // SAFETY (each `Kernel::new`): the tile is the entry's (`entry!` above) and the arm is
    // taken only when the CPU has `which` (`min(Isa::detected())` equals it).
    match which.min(Isa::detected()) {
        Isa::Avx512 if which == Isa::Avx512 => Some(unsafe { Kernel::new(12, 32, avx512_f32) }),
        Isa::Avx2 if which == Isa::Avx2 => Some(unsafe { Kernel::new(6, 16, avx2_f32) }),
        _ => None,
    }
}

/// The f64 kernel of `which`, if this CPU has it.
pub(super) fn kernel_f64_on(which: Isa) -> Option<Kernel<f64>> {
    // SAFETY: as in `kernel_f32_on`.
    match which.min(Isa::detected()) {
        Isa::Avx512 if which == Isa::Avx512 => Some(unsafe { Kernel::new(12, 16, avx512_f64) }),
        Isa::Avx2 if which == Isa::Avx2 => Some(unsafe { Kernel::new(6, 8, avx2_f64) }),
        _ => None,
    }
}
