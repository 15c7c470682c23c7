//! The machine's FMA peak (the roofline of every GEMM figure) and this crate's GEMM against the
//! `gemm` crate on the shapes of W2 (forward and backward), W3 and W4, measured interleaved in
//! one run: `cargo run --release -p stategrad-simd --example gemm_probe`. Products with a
//! transposed operand run on the packed kernel; the others go to the `gemm` crate (their ratio is 1
//! up to noise); `STATEGRAD_GEMM=packed` sends them to the packed kernel too.
use std::time::Instant;

/// Seconds per call: the best of 2 batches of 10 calls (after one warm-up call).
fn time(f: &mut dyn FnMut()) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..2 {
        let t = Instant::now();
        for _ in 0..10 {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / 10.0);
    }
    best
}

/// Single-precision FMA throughput of one thread, GFLOP/s: independent vector FMA chains (more
/// chains than the FMA latency times the ports), nothing else in the loop.
fn fma_gflops() -> f64 {
    use wide::f32x16 as V;
    const CHAINS: usize = 24;
    let iters = 20_000_000usize;
    let mut acc = [V::splat(0.0); CHAINS];
    let (m, a) = (V::splat(0.999_999), V::splat(1e-7));
    let t = Instant::now();
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = x.mul_add(m, a);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(&acc);
    (iters * CHAINS * 16 * 2) as f64 / secs / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
}

fn main() {
    let one = fma_gflops();
    let all: f64 = rayon::broadcast(|_| fma_gflops()).iter().sum();
    let threads_all = rayon::current_num_threads();
    println!("FMA peak (f32x16 mul_add): {one:.0} GFLOP/s on 1 thread, {all:.0} on {threads_all}");
    println!("ISA: {:?}", stategrad_simd::isa::isa());
    // (m, k, n, A transposed, B transposed)
    let shapes = [
        (256, 784, 512, false, false),
        (256, 512, 512, false, false),
        (256, 512, 10, false, false),
        (256, 512, 784, false, true),
        (256, 512, 512, false, true),
        (784, 256, 512, true, false),
        (512, 256, 512, true, false),
        (512, 256, 10, true, false),
        (256, 256, 256, false, false),
        (512, 512, 512, false, false),
    ];
    println!("| threads | m x k x n | stategrad GFLOP/s | % of peak | gemm crate GFLOP/s | crate time / ours |");
    println!("|---|---|---|---|---|---|");
    for threads in [1, threads_all] {
        let peak = if threads == 1 { one } else { all };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| {
            for &(m, k, n, ta, tb) in &shapes {
                let a: Vec<f32> = (0..m * k).map(|i| (i % 101) as f32 / 101.0 - 0.5).collect();
                let b: Vec<f32> = (0..k * n).map(|i| (i % 97) as f32 / 97.0 - 0.5).collect();
                let mut c = vec![0.0f32; m * n];
                let mut d = vec![0.0f32; m * n];
                let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
                let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
                let mut ours = || {
                    stategrad_simd::gemm(
                        m,
                        k,
                        n,
                        1.0,
                        &a,
                        rsa,
                        csa,
                        &b,
                        rsb,
                        csb,
                        0.0,
                        &mut c,
                        n,
                        1,
                        stategrad_simd::Par::Rayon,
                    )
                };
                let par = if threads > 1 {
                    gemm::Parallelism::Rayon(threads)
                } else {
                    gemm::Parallelism::None
                };
                let mut theirs = || unsafe {
                    // SAFETY: the slices hold these row-major / transposed matrices.
                    gemm::gemm(
                        m,
                        n,
                        k,
                        d.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        csa as isize,
                        rsa as isize,
                        b.as_ptr(),
                        csb as isize,
                        rsb as isize,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        par,
                    )
                };
                let (mut o, mut t) = (vec![], vec![]);
                // Alternating which goes first: the second of a pair measured up to 5 % faster.
                for round in 0..6 {
                    if round % 2 == 0 {
                        o.push(time(&mut ours));
                        t.push(time(&mut theirs));
                    } else {
                        t.push(time(&mut theirs));
                        o.push(time(&mut ours));
                    }
                }
                let (o, t) = (median(o), median(t));
                assert!(c
                    .iter()
                    .zip(&d)
                    .all(|(x, y)| (x - y).abs() <= 1e-3 * (k as f32).sqrt()));
                let g = |s: f64| 2.0 * (m * k * n) as f64 / s / 1e9;
                let name = format!(
                    "{m}x{k}x{n}{}{}",
                    if ta { " Aᵀ" } else { "" },
                    if tb { " Bᵀ" } else { "" }
                );
                println!(
                    "| {threads} | {name} | {:.0} | {:.0} % | {:.0} | {:.2} |",
                    g(o),
                    100.0 * g(o) / peak,
                    g(t),
                    t / o
                );
            }
        });
    }
}
