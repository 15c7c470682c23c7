//! A global allocator that forwards to the system allocator and keeps the live and the peak
//! number of heap bytes, for the binaries that measure peak memory (`benches/peak_memory.rs`,
//! `tests/jacobian_memory_bound.rs`). Each includes this file
//! with `#[path]`: the counters are process-wide, so a binary measures one thing at a time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct PeakAlloc;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// The same for allocations aligned to 16 bytes or more. Tensor buffers are `Vec<f32>` and
/// `Vec<f64>` (aligned to 4 or 8); the GEMM kernels' packing space asks for 32 or 64. Its size
/// follows the GEMM's cache blocking and operands, not the transform, so a bound on what a
/// transform holds can name it apart.
static ALIGNED_NOW: AtomicUsize = AtomicUsize::new(0);
static ALIGNED_PEAK: AtomicUsize = AtomicUsize::new(0);

fn aligned(layout: Layout) -> bool {
    layout.align() >= 16
}

fn grew(layout: Layout, size: usize) {
    let now = NOW.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(now, Ordering::Relaxed);
    if aligned(layout) {
        let now = ALIGNED_NOW.fetch_add(size, Ordering::Relaxed) + size;
        ALIGNED_PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

fn shrank(layout: Layout) {
    NOW.fetch_sub(layout.size(), Ordering::Relaxed);
    if aligned(layout) {
        ALIGNED_NOW.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and only
// updates counters, so `System`'s guarantees carry over. `alloc_zeroed` and `realloc` are
// forwarded too (not left to the defaults): zeroed pages stay lazily zeroed and in-place growth
// stays in place, so the measured program behaves as it does without the counter.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout, layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout, layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as a free then an allocation: a moving realloc briefly holds both, which
            // the peak misses (by the smaller of the two sizes at most).
            shrank(layout);
            grew(layout, new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: PeakAlloc = PeakAlloc;

/// Heap bytes live now (all threads).
#[allow(dead_code)]
pub fn live_bytes() -> usize {
    NOW.load(Ordering::Relaxed)
}

/// The most heap bytes live at once during a call, above those live when it started.
#[derive(Clone, Copy, Debug)]
pub struct Peak {
    /// All allocations.
    pub total: usize,
    /// Those aligned to 16 bytes or more (GEMM packing space), on their own: their peak, which
    /// need not fall at the moment of `total`'s.
    #[allow(dead_code)]
    pub aligned: usize,
}

/// Runs `f` and returns its result with its [`Peak`] (all threads: buffers that `f`'s rayon
/// workers allocate count too). The output counts as long as `f` holds it, and it holds it
/// when it returns it.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, Peak) {
    let base = NOW.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let aligned_base = ALIGNED_NOW.load(Ordering::Relaxed);
    ALIGNED_PEAK.store(aligned_base, Ordering::Relaxed);
    let r = f();
    let peak = Peak {
        total: PEAK.load(Ordering::Relaxed).saturating_sub(base),
        aligned: ALIGNED_PEAK
            .load(Ordering::Relaxed)
            .saturating_sub(aligned_base),
    };
    (r, peak)
}
