//! Packed GEMM: this crate's own blocked matrix product, for x86-64 with AVX-512 or AVX2 + FMA.
//!
//! Why not only the `gemm` crate: the backward pass of a training step multiplies by a
//! transposed B, on which the crate measured 1.04–1.1x slower than this kernel on one thread
//! and 1.3–1.5x on two (`examples/gemm_probe.rs` compares them in one run; the dispatch rule
//! and its figures are at [`Kernel::suits`]). This is the classic blocked
//! algorithm (Goto/BLIS):
//!
//! * `k` is cut into equal blocks of at most [`KC`], `n` into equal blocks of at most [`NC`],
//!   and each thread's rows into blocks of at most [`MC`];
//! * threads take disjoint row ranges of `C` when each gets at least four row panels (each then
//!   packs all of `B`), else disjoint column ranges (each packs its columns of `B`); `B` goes
//!   block by block into `kc x nr` panels in the thread's own buffer;
//! * `A`'s rows go into `mr x kc` panels, packed once for all threads when they split columns
//!   (at most [`SHARED_A_MAX`] elements), else by each thread for its rows; whatever the
//!   strides, so a transposed operand costs only its packing (AVX transposes, `transpose.rs`);
//! * the micro-kernel (`x86.rs`) keeps an `mr x nr` tile of `C` in registers over a whole `kc`
//!   block, and only then reads and writes `C`.
//!
//! Every element of `C` sums its `k` products in the same order whatever the thread count or
//! its place in a tile (full tiles and edge tiles round alike), so the result does not depend
//! on the number of threads.

mod pack;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod transpose;
#[cfg(target_arch = "x86_64")]
pub(crate) use transpose::plane as transpose_plane;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::cell::Cell;
use std::thread::LocalKey;

use rayon::prelude::*;

use crate::Element;

/// The largest `k` block: a packed A panel (`KC x mr`) stays in L1 while a row of tiles is
/// computed. 400 rather than 256 took W2's `k` = 784 product from 0.95 to 0.98 of the `gemm`
/// crate's speed on one thread (two k blocks instead of four: half the reads and writes of C),
/// the same elsewhere.
const KC: usize = 400;
/// The largest `n` block: a packed B block (`KC x NC`) stays in L2.
const NC: usize = 1024;
/// Rows of A packed at once per thread (`MC x KC` in L2).
const MC: usize = 192;
/// A shared by all threads is packed once (in a parallel pass of its own) when it has at most
/// this many elements; else each thread packs the blocks it uses.
const SHARED_A_MAX: usize = 1 << 22;
/// Packing buffers larger than this are freed after the call instead of kept for the next (a
/// thread keeps at most two: its own blocks', up to ~4 MB, and a shared A's).
const KEEP_BYTES: usize = 8 << 20;

/// One block of the product, as the micro-kernel loop sees it.
///
/// Contract of every function taking it: `ap` holds `ceil(rows / mr)` packed `mr x kc` panels
/// and `bp` `ceil(cols / nr)` packed `kc x nr` panels (zero-padded); every `C` element
/// `c + i * rsc + j * csc` for `i < rows`, `j < cols` is valid to read and write, distinct for
/// distinct `(i, j)`, and no other thread touches it during the call.
pub(crate) struct Block<E> {
    kc: usize,
    ap: *const E,
    bp: *const E,
    c: *mut E,
    rsc: isize,
    csc: isize,
    rows: usize,
    cols: usize,
    alpha: E,
    /// `None`: C is written without being read (its old values, NaN included, are dropped).
    beta: Option<E>,
}

/// A micro-kernel: its tile and the function that runs a [`Block`] with it.
///
/// Invariant (what makes calling `block` sound beyond [`Block`]'s contract): `block` computes
/// tiles of exactly `mr x nr`, and this CPU has the ISA it was compiled for. Only
/// [`Kernel::new`]'s callers (`x86::kernel_f32_on`/`kernel_f64_on`) establish it.
#[derive(Clone, Copy)]
pub(crate) struct Kernel<E> {
    mr: usize,
    nr: usize,
    block: unsafe fn(&Block<E>),
}

impl<E> Kernel<E> {
    /// # Safety
    /// `block`'s tiles are `mr x nr`, and the CPU has the ISA `block` is compiled for.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    unsafe fn new(mr: usize, nr: usize, block: unsafe fn(&Block<E>)) -> Self {
        Kernel { mr, nr, block }
    }

    /// Whether a product with `n` columns and A's and B's column strides `csa`, `csb` should
    /// run on this kernel rather than on the `gemm` crate, by what they measured in the same
    /// runs. Isolated (`examples/gemm_probe.rs`, W2's shapes, order alternated): with B
    /// transposed the kernel is 1.04–1.1x faster on one thread and 1.3–1.5x on two (its AVX
    /// transposes pack B); with A transposed 0.99–1.02x on one and 0.89–0.97x on two; with
    /// both row-major 0.91–0.95x (the crate reads such an A in place). In W2's training step
    /// (two rounds each, 2 threads), taking both transposed cases made the step 0.86–0.89x the
    /// crate-only time, B only 0.98–1.0x, so both stay. Narrower than one tile, most of the
    /// FMAs would be on padding.
    pub(crate) fn suits(&self, n: usize, csa: usize, csb: usize) -> bool {
        n >= self.nr && (csa != 1 || csb != 1)
    }
}

/// The packed kernel for `T` on this CPU (`None`: no AVX2 or AVX-512, or not x86-64).
pub(crate) fn kernel<T: Element>() -> Option<Kernel<T>> {
    kernel_on(crate::isa::isa())
}

/// The packed kernel for `T` on `which`, if this CPU has that ISA and it has a kernel.
pub(crate) fn kernel_on<T: Element>(which: crate::isa::Isa) -> Option<Kernel<T>> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::any::Any;
        let (f32k, f64k) = (x86::kernel_f32_on(which), x86::kernel_f64_on(which));
        let found = (&f32k as &dyn Any)
            .downcast_ref::<Option<Kernel<T>>>()
            .or_else(|| (&f64k as &dyn Any).downcast_ref::<Option<Kernel<T>>>());
        found.copied().flatten()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = which;
        None
    }
}

/// A 64-byte aligned chunk of packing buffer.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Chunk([u64; 8]);

thread_local! {
    /// This thread's packing buffers (for its own blocks, and for an A shared by all
    /// threads), kept between calls; taken while in use, so a nested call on the same thread
    /// simply allocates its own.
    static BUFFER: Cell<Vec<Chunk>> = const { Cell::new(Vec::new()) };
    static SHARED_BUFFER: Cell<Vec<Chunk>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on a buffer of at least `len` elements of `T` (contents unspecified).
fn with_buffer<T: Element, R>(
    which: &'static LocalKey<Cell<Vec<Chunk>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let mut chunks = which.take();
    let per = size_of::<Chunk>() / size_of::<T>();
    let need = len.div_ceil(per);
    if chunks.len() < need {
        chunks.resize(need, Chunk([0; 8]));
    }
    // SAFETY: `T` is f32 or f64 (`Element` is sealed): every bit pattern is a valid value and
    // its alignment divides the chunks' 64; the slice covers `need * per >= len` elements of
    // the vector's initialized storage, borrowed mutably for the closure only.
    let out = f(unsafe { std::slice::from_raw_parts_mut(chunks.as_mut_ptr().cast::<T>(), len) });
    if chunks.len() * size_of::<Chunk>() <= KEEP_BYTES {
        which.set(chunks);
    }
    out
}

/// The operands of one product, strides already checked by the caller.
pub(crate) struct Operands<'a, T> {
    pub a: &'a [T],
    pub rsa: usize,
    pub csa: usize,
    pub b: &'a [T],
    pub rsb: usize,
    pub csb: usize,
}

/// `C = alpha * A @ B + beta * C` with the packed kernel over up to `threads` rayon tasks.
///
/// # Safety
/// `m, k, n >= 1`; every `A`/`B` element `(i, p)` reachable with the strides is in bounds of
/// its slice; every `C` element `c + i * rsc + j * csc` (`i < m`, `j < n`) is valid to read and
/// write and distinct for distinct `(i, j)`, and nothing else accesses C during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<T: Element>(
    kern: &Kernel<T>,
    (m, k, n): (usize, usize, usize),
    alpha: T,
    ops: &Operands<T>,
    beta: T,
    c: *mut T,
    (rsc, csc): (isize, isize),
    threads: usize,
) {
    let (mr, nr) = (kern.mr, kern.nr);
    let (row_panels, col_panels) = (m.div_ceil(mr), n.div_ceil(nr));
    // Threads split C's rows when each gets at least four row panels (each packs its own rows
    // of A and all of B, both into its own buffer), else C's columns (each packs its columns of
    // B; A is packed once and shared) unless there are fewer column panels than threads. On the
    // training step's transposed products on 2 threads (AVX-512 EPYC host, 8 alternated runs of
    // each rule) the row split ran 193-195 against 182-183 GFLOP/s (256x512x784 Bᵀ), 198-200
    // against 196-198 (256x512x512 Bᵀ) and 217-220 against 202-205 (784x256x512 Aᵀ): reading
    // A's panels that the other thread packed costs more than packing B twice.
    let split_rows = row_panels >= 4 * threads || (col_panels < threads && row_panels > col_panels);
    let tasks = threads
        .min(if split_rows { row_panels } else { col_panels })
        .max(1);
    let kc = k.div_ceil(k.div_ceil(KC));
    let c = crate::gemm::SharedPtr(c);
    let task = |t: usize, shared_a: Option<&[T]>| {
        let (r0, r1, c0, c1) = if split_rows {
            let (p0, p1) = (t * row_panels / tasks, (t + 1) * row_panels / tasks);
            (p0 * mr, (p1 * mr).min(m), 0, n)
        } else {
            let (q0, q1) = (t * col_panels / tasks, (t + 1) * col_panels / tasks);
            (0, m, q0 * nr, (q1 * nr).min(n))
        };
        if r0 < r1 && c0 < c1 {
            // SAFETY: rows r0..r1 x columns c0..c1 are in bounds (r1 <= m, c1 <= n) and
            // disjoint from every other task's; the caller's contract covers the rest.
            unsafe {
                part_of_c(
                    kern,
                    (r0, r1),
                    (c0, c1),
                    (k, kc),
                    alpha,
                    ops,
                    shared_a,
                    beta,
                    c.get(),
                    (rsc, csc),
                )
            }
        }
    };
    // k is bounded by no slice when A's and B's k strides are zero: check the size.
    let a_len = (row_panels * mr)
        .checked_mul(k)
        .filter(|&l| l <= SHARED_A_MAX);
    if let Some(a_len) = a_len.filter(|_| tasks > 1 && !split_rows) {
        // Every task would pack all of A: pack it once, in parallel, for all of them.
        with_buffer::<T, _>(&SHARED_BUFFER, a_len, |ap| {
            pack_all_a(ap, ops, m, k, kc, mr);
            let ap: &[T] = ap;
            (0..tasks).into_par_iter().for_each(|t| task(t, Some(ap)));
        });
    } else if tasks > 1 {
        (0..tasks).into_par_iter().for_each(|t| task(t, None));
    } else {
        task(0, None);
    }
}

/// All of A in `[k block][row panel][p][i]` order (each k block `kb x row_panels * mr`), in
/// parallel over panels.
fn pack_all_a<T: Element>(
    ap: &mut [T],
    ops: &Operands<T>,
    m: usize,
    k: usize,
    kc: usize,
    mr: usize,
) {
    let panels = m.div_ceil(mr);
    let mut jobs: Vec<(usize, usize, usize, &mut [T])> = Vec::new();
    let mut rest = &mut ap[..panels * mr * k];
    let mut p0 = 0;
    while p0 < k {
        let kb = kc.min(k - p0);
        for q in 0..panels {
            let (panel, tail) = rest.split_at_mut(kb * mr);
            jobs.push((p0, kb, q, panel));
            rest = tail;
        }
        p0 += kb;
    }
    jobs.into_par_iter().for_each(|(p0, kb, q, panel)| {
        let i0 = q * mr;
        pack_a(panel, ops, i0, mr.min(m - i0), p0, kb, mr);
    });
}

/// Rows `r0..r1` times columns `c0..c1` of C: the blocked loops over `n`, `k` and `m`, packing
/// into this thread's buffer.
///
/// # Safety
/// Those elements of C are valid, distinct and this task's alone.
#[allow(clippy::too_many_arguments)]
unsafe fn part_of_c<T: Element>(
    kern: &Kernel<T>,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
    (k, kc): (usize, usize),
    alpha: T,
    ops: &Operands<T>,
    shared_a: Option<&[T]>,
    beta: T,
    c: *mut T,
    (rsc, csc): (isize, isize),
) {
    let (mr, nr) = (kern.mr, kern.nr);
    let width = c1 - c0;
    let nc = width.div_ceil(width.div_ceil(NC)).next_multiple_of(nr);
    let height = r1 - r0;
    let mc = MC.next_multiple_of(mr).min(height.next_multiple_of(mr));
    let b_len = kc * nc.min(width.next_multiple_of(nr));
    let a_len = if shared_a.is_some() { 0 } else { mc * kc };
    // Rows of the shared A's k blocks (all of A's rows, padded to whole panels).
    let m_pad = r1.next_multiple_of(mr);
    with_buffer::<T, _>(&BUFFER, b_len + a_len, |buf| {
        let (bp, own_a) = buf.split_at_mut(b_len);
        let mut j0 = c0;
        while j0 < c1 {
            let cols = nc.min(c1 - j0);
            let mut p0 = 0;
            while p0 < k {
                let kb = kc.min(k - p0);
                pack_b(bp, ops, p0, kb, j0, cols, nr);
                let mut i0 = r0;
                while i0 < r1 {
                    let rows = mc.min(r1 - i0);
                    let ap: &[T] = match shared_a {
                        Some(all) => &all[p0 * m_pad + i0 * kb..][..rows.next_multiple_of(mr) * kb],
                        None => {
                            pack_a(own_a, ops, i0, rows, p0, kb, mr);
                            own_a
                        }
                    };
                    let blk = Block {
                        kc: kb,
                        ap: ap.as_ptr(),
                        bp: bp.as_ptr(),
                        // SAFETY: (i0, j0) is inside this task's part of C.
                        c: unsafe { c.offset(i0 as isize * rsc + j0 as isize * csc) },
                        rsc,
                        csc,
                        rows,
                        cols,
                        alpha,
                        beta: if p0 == 0 {
                            (beta != T::ZERO).then_some(beta)
                        } else {
                            Some(T::ONE)
                        },
                    };
                    // SAFETY: `ap` holds ceil(rows/mr) packed kb x mr panels, `bp`
                    // ceil(cols/nr) packed kb x nr panels, with `kern`'s mr and nr, which are
                    // its block function's tile (Kernel's invariant, as is the ISA); the
                    // block's C is this task's.
                    unsafe { (kern.block)(&blk) };
                    i0 += rows;
                }
                p0 += kb;
            }
            j0 += cols;
        }
    });
}

/// Packs rows `p0..p0+kb` of A's rows `i0..i0+rows` into `mr x kb` panels (`[panel][p][i]`),
/// zero-padding the last panel's missing rows.
fn pack_a<T: Element>(
    ap: &mut [T],
    ops: &Operands<T>,
    i0: usize,
    rows: usize,
    p0: usize,
    kb: usize,
    mr: usize,
) {
    for (q, panel) in ap
        .chunks_exact_mut(mr * kb)
        .take(rows.div_ceil(mr))
        .enumerate()
    {
        let live = mr.min(rows - q * mr);
        let at = ((i0 + q * mr) * ops.rsa + p0 * ops.csa, live, kb);
        match mr {
            12 => pack::panel::<T, 12>(panel, pack::Lines::of_a(ops), at),
            6 => pack::panel::<T, 6>(panel, pack::Lines::of_a(ops), at),
            _ => pack::panel_any(panel, pack::Lines::of_a(ops), at, mr),
        }
    }
}

/// Packs rows `p0..p0+kb` of B's columns `j0..j0+cols` into `kb x nr` panels
/// (`[panel][p][j]`), zero-padding the last panel's missing columns.
fn pack_b<T: Element>(
    bp: &mut [T],
    ops: &Operands<T>,
    p0: usize,
    kb: usize,
    j0: usize,
    cols: usize,
    nr: usize,
) {
    if ops.csb == 1 {
        // Rows of B are contiguous: read each once, front to back, into every panel.
        match nr {
            32 => pack::b_rows::<T, 32>(bp, ops, p0, kb, j0, cols),
            16 => pack::b_rows::<T, 16>(bp, ops, p0, kb, j0, cols),
            8 => pack::b_rows::<T, 8>(bp, ops, p0, kb, j0, cols),
            _ => {}
        }
        if matches!(nr, 32 | 16 | 8) {
            return;
        }
    }
    for (q, panel) in bp
        .chunks_exact_mut(nr * kb)
        .take(cols.div_ceil(nr))
        .enumerate()
    {
        let c0 = j0 + q * nr;
        let at = (p0 * ops.rsb + c0 * ops.csb, nr.min(j0 + cols - c0), kb);
        match nr {
            32 => pack::panel::<T, 32>(panel, pack::Lines::of_b(ops), at),
            16 => pack::panel::<T, 16>(panel, pack::Lines::of_b(ops), at),
            8 => pack::panel::<T, 8>(panel, pack::Lines::of_b(ops), at),
            _ => pack::panel_any(panel, pack::Lines::of_b(ops), at, nr),
        }
    }
}
