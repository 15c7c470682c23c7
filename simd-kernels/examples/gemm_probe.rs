//! Compares the two GEMM paths on the W2 shapes: `cargo run --release -p stategrad-simd --example gemm_probe`.
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

fn main() {
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
