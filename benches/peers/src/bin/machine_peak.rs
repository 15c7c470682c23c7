//! The machine's f32 FMA peak and memory bandwidth, measured (not taken from a data sheet), so
//! that the peers table can say which fraction of the peak a GEMM-bound row reaches.
//!
//! `cargo run --release --bin machine_peak [-- --json FILE]`
//!
//! - FMA peak: each thread runs `ACC` independent chains of vector FMAs (`acc = acc * a + b`) on
//!   registers, AVX-512F (16 f32 lanes) when the CPU has it, else AVX2+FMA (8 lanes), detected at
//!   run time; one FMA is 2 flops per lane. Best of 5 runs of ~0.25 s, at 1 and 2 threads
//!   (std threads started together; the time is the slowest thread's).
//! - Bandwidth: STREAM-style triad `a[i] = b[i] + s * c[i]` and copy `a[i] = b[i]` over f32
//!   arrays of 512 MiB each, the range split evenly over 1 and 2 threads; bytes counted as STREAM
//!   does (triad 3 x 512 MiB, copy 2 x 512 MiB, no write-allocate traffic). Best of 5.
use std::time::Instant;

const ACC: usize = 12;
const FMA_ITERS: u64 = 20_000_000;
const REPS: usize = 5;
const ARRAY_BYTES: usize = 512 << 20;

#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;

    /// `iters` rounds of ACC independent 512-bit FMAs; returns a sum so nothing is dead code.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(iters: u64, a: f32, b: f32) -> f32 {
        let (va, vb) = (_mm512_set1_ps(a), _mm512_set1_ps(b));
        let mut acc = [_mm512_set1_ps(1.0); super::ACC];
        for (k, v) in acc.iter_mut().enumerate() {
            *v = _mm512_set1_ps(1.0 + k as f32 * 1e-3);
        }
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, va, vb);
            }
        }
        let mut s = _mm512_setzero_ps();
        for v in acc {
            s = _mm512_add_ps(s, v);
        }
        _mm512_reduce_add_ps(s)
    }

    /// The same with 256-bit AVX2 FMAs.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(iters: u64, a: f32, b: f32) -> f32 {
        let (va, vb) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
        let mut acc = [_mm256_set1_ps(1.0); super::ACC];
        for (k, v) in acc.iter_mut().enumerate() {
            *v = _mm256_set1_ps(1.0 + k as f32 * 1e-3);
        }
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, va, vb);
            }
        }
        let mut s = _mm256_setzero_ps();
        for v in acc {
            s = _mm256_add_ps(s, v);
        }
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), s);
        out.iter().sum()
    }
}

/// (ISA name, lanes, kernel) of the widest FMA this CPU has.
#[allow(clippy::type_complexity)]
fn kernel() -> (&'static str, usize, fn(u64) -> f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return ("avx512f", 16, |n| unsafe {
                fma::avx512(n, std::hint::black_box(0.999_999), std::hint::black_box(1e-7))
            });
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return ("avx2+fma", 8, |n| unsafe {
                fma::avx2(n, std::hint::black_box(0.999_999), std::hint::black_box(1e-7))
            });
        }
    }
    panic!("machine_peak needs an x86-64 CPU with AVX2+FMA or AVX-512F");
}

/// Best-of-REPS wall time of `threads` threads each running `f` at once.
fn best_parallel<F: Fn(usize) + Sync>(threads: usize, f: F) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..REPS {
        let barrier = std::sync::Barrier::new(threads + 1);
        let t = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|i| {
                    let (f, barrier) = (&f, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        f(i)
                    })
                })
                .collect();
            barrier.wait();
            let t0 = Instant::now();
            for h in hs {
                h.join().unwrap();
            }
            t0.elapsed().as_secs_f64()
        });
        best = best.min(t);
    }
    best
}

fn fma_peak(threads: usize) -> f64 {
    let (_, lanes, k) = kernel();
    let secs = best_parallel(threads, |_| {
        std::hint::black_box(k(FMA_ITERS));
    });
    let flops = threads as f64 * FMA_ITERS as f64 * ACC as f64 * lanes as f64 * 2.0;
    flops / secs / 1e9
}

/// Raw pointers shared by the bandwidth threads (each writes a disjoint range).
#[derive(Clone, Copy)]
struct Ptrs(*mut f32, *const f32, *const f32);
unsafe impl Send for Ptrs {}
unsafe impl Sync for Ptrs {}

fn bandwidth(threads: usize, a: &mut [f32], b: &[f32], c: &[f32]) -> (f64, f64) {
    let n = a.len();
    let chunk = n.div_ceil(threads);
    let p = Ptrs(a.as_mut_ptr(), b.as_ptr(), c.as_ptr());
    let range = |i: usize| (i * chunk, ((i + 1) * chunk).min(n));
    let triad = best_parallel(threads, |i| {
        let (lo, hi) = range(i);
        let p = p;
        // SAFETY: the ranges of the threads are disjoint and inside the three arrays.
        let (a, b, c) = unsafe {
            (
                std::slice::from_raw_parts_mut(p.0.add(lo), hi - lo),
                std::slice::from_raw_parts(p.1.add(lo), hi - lo),
                std::slice::from_raw_parts(p.2.add(lo), hi - lo),
            )
        };
        let s = std::hint::black_box(3.0f32);
        for ((x, &y), &z) in a.iter_mut().zip(b).zip(c) {
            *x = y + s * z;
        }
    });
    let copy = best_parallel(threads, |i| {
        let (lo, hi) = range(i);
        let p = p;
        // SAFETY: as above.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts_mut(p.0.add(lo), hi - lo),
                std::slice::from_raw_parts(p.1.add(lo), hi - lo),
            )
        };
        a.copy_from_slice(b);
    });
    let bytes = ARRAY_BYTES as f64;
    (3.0 * bytes / triad / 1e9, 2.0 * bytes / copy / 1e9)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json_path = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1).cloned());
    let (isa, lanes, _) = kernel();
    let threads = [1usize, 2];
    let mut peak = Vec::new();
    for &t in &threads {
        let g = fma_peak(t);
        eprintln!("FMA peak, {t} thread(s), {isa} ({lanes} f32 lanes, {ACC} chains): {g:.1} GFLOP/s");
        peak.push(g);
    }
    let n = ARRAY_BYTES / 4;
    let mut a = vec![0.0f32; n];
    let b: Vec<f32> = (0..n).map(|i| (i % 1024) as f32).collect();
    let c: Vec<f32> = (0..n).map(|i| (i % 512) as f32).collect();
    a.copy_from_slice(&c); // touch every page before timing
    let mut triad = Vec::new();
    let mut copy = Vec::new();
    for &t in &threads {
        let (tr, cp) = bandwidth(t, &mut a, &b, &c);
        eprintln!("bandwidth, {t} thread(s), 512 MiB arrays: triad {tr:.1} GB/s, copy {cp:.1} GB/s");
        triad.push(tr);
        copy.push(cp);
    }
    std::hint::black_box(&a);
    let obj = |v: &[f64]| {
        threads
            .iter()
            .zip(v)
            .map(|(t, g)| format!("\"{t}\": {g:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let json = format!(
        "{{\"cpu\": \"{}\", \"isa\": \"{isa}\", \"lanes\": {lanes}, \"fma_gflops\": {{{}}}, \"triad_gbs\": {{{}}}, \"copy_gbs\": {{{}}}, \"array_mib\": {}}}",
        cpu_model().replace('"', "'"),
        obj(&peak),
        obj(&triad),
        obj(&copy),
        ARRAY_BYTES >> 20
    );
    println!("{json}");
    if let Some(p) = json_path {
        std::fs::write(&p, format!("{json}\n")).expect("write --json file");
    }
}
