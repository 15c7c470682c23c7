//! The machine's FMA peak (the roofline of every GEMM figure) and the two GEMM paths on the W2
//! shapes: `cargo run --release -p stategrad-simd --example gemm_probe`.
use std::time::Instant;

fn time(f: &mut dyn FnMut()) -> f64 {
    f();
    let n = 20;
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() / n as f64 * 1e3
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

fn main() {
    let one = fma_gflops();
    let all: f64 = rayon::broadcast(|_| fma_gflops()).iter().sum();
    println!(
        "FMA peak (f32x16 mul_add): {one:.0} GFLOP/s on 1 thread, {all:.0} GFLOP/s on {} threads",
        rayon::current_num_threads()
    );
    // (m, k, n, a transposed, b transposed): the forward and backward products of W2.
    let shapes = [
        (256, 784, 512, false, false),
        (256, 512, 512, false, false),
        (256, 512, 10, false, false),
        (256, 512, 784, false, true),
        (784, 256, 512, true, false),
        (512, 256, 512, true, false),
        (256, 512, 512, false, true),
        (512, 256, 10, true, false),
    ];
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (mut tg, mut tm) = (0.0, 0.0);
            for &(m, k, n, ta, tb) in &shapes {
                let a = vec![0.5f32; m * k];
                let b = vec![0.25f32; k * n];
                let mut c = vec![0.0f32; m * n];
                let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
                let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
                tg += time(&mut || {
                    stategrad_simd::gemm(m, k, n, 1.0, &a, rsa, csa, &b, rsb, csb, 0.0, &mut c, n, 1, stategrad_simd::Par::Rayon)
                });
                tm += time(&mut || unsafe {
                    matrixmultiply::sgemm(
                        m, k, n, 1.0, a.as_ptr(), rsa as isize, csa as isize, b.as_ptr(), rsb as isize,
                        csb as isize, 0.0, c.as_mut_ptr(), n as isize, 1,
                    )
                });
            }
            println!("{threads} thread(s): gemm crate path {tg:.2} ms, matrixmultiply (1 thread) {tm:.2} ms for the 8 W2 products");
        });
    }
}
