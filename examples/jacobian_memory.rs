//! Peak heap memory of the W3 and W4 Jacobians for several chunk sizes (a counting allocator):
//! `cargo run --release --example jacobian_memory`. Measured on one thread (each worker thread
//! keeps its own pool of freed buffers, so two threads hold up to twice the chunk memory).

use stategrad::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Peak;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting live bytes.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Peak = Peak;

fn peak_of(f: impl FnOnce()) -> usize {
    stategrad::tensor::release_pooled_buffers();
    let base = NOW.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - base
}

fn main() {
    // One thread, so that every buffer is made and pooled on the thread that releases the pool.
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(run);
}

fn run() {
    let n = 256;
    stategrad::random::seed(1);
    let s = 1.0 / (n as f64).sqrt();
    let w1 = stategrad::random::normal(&[n, n]) * s;
    let w2 = stategrad::random::normal(&[n, n]) * s;
    let x = stategrad::random::normal(&[n]);
    let f = |x: Tensor| w2.matmul(&w1.matmul(&x).tanh()).tanh();
    println!("W3 (256x256 Jacobian; the result alone is 256 KiB):");
    for chunk in [8usize, 32, 128, 256] {
        let r = peak_of(|| {
            jacrev(f).chunk_size(chunk).call(x.clone()).unwrap();
        });
        let fw = peak_of(|| {
            jacfwd(f).chunk_size(chunk).call(x.clone()).unwrap();
        });
        println!(
            "  chunk_size {chunk:>3}: jacrev peak {:>6} KiB, jacfwd peak {:>6} KiB",
            r / 1024,
            fw / 1024
        );
    }
    let m = 512;
    let a = stategrad::random::normal(&[m, m]) * (1.0 / (m as f64).sqrt());
    let x = stategrad::random::normal(&[m]);
    let g = |x: Tensor| a.matmul(&x).logsumexp(&[0], false) + 0.5 * x.square().sum();
    println!("W4 (512x512 Hessian; the result alone is 1 MiB):");
    for chunk in [16usize, 64, 256, 512] {
        let h = peak_of(|| {
            hessian(g).chunk_size(chunk).call(x.clone()).unwrap();
        });
        println!("  chunk_size {chunk:>3}: peak {:>6} KiB", h / 1024);
    }
}
