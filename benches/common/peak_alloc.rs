//! A global allocator that forwards to the system allocator and keeps the live and the peak
//! number of heap bytes, for the binaries that measure peak memory (`benches/peak_memory.rs`,
//! `tests/jacobian_memory_bound.rs`, `examples/jacobian_memory.rs`). Each includes this file
//! with `#[path]`: the counters are process-wide, so a binary measures one thing at a time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct PeakAlloc;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = NOW.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and only
// updates two counters, so `System`'s guarantees carry over. `alloc_zeroed` and `realloc` are
// forwarded too (not left to the defaults): zeroed pages stay lazily zeroed and in-place growth
// stays in place, so the measured program behaves as it does without the counter.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as a free then an allocation: the peak sees the larger size only.
            NOW.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
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

/// Runs `f` and returns its result with the most heap bytes that were live at once during it,
/// above those live when it started (all threads: buffers that `f`'s rayon workers allocate
/// count too). The output counts as long as `f` holds it, and it holds it when it returns it.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = NOW.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    (r, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}
