//! The packed kernels of every ISA this CPU has, against the scalar reference: every operand
//! layout, shapes crossing each block size (`mr`, `nr`, `KC`, `MC`, `NC`), 1–3 threads.

use super::{gemm, kernel_on, Kernel, Operands, KC, MC, NC};
use crate::isa::Isa;
use crate::test_support::Rng;
use crate::{reference, Element};

/// `C = alpha * A @ B + beta * C` on the packed kernel in a pool of `threads`.
#[allow(clippy::too_many_arguments)]
fn run<T: Element>(
    kern: &Kernel<T>,
    (m, k, n): (usize, usize, usize),
    ops: &Operands<T>,
    alpha: T,
    beta: T,
    c: &mut [T],
    (rsc, csc): (usize, usize),
    threads: usize,
) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    // SAFETY: every caller sizes A, B and C with `any_layout` for these dims and strides, and
    // gives C a layout that does not alias (kinds 0-3, 8); `c` is borrowed mutably.
    pool.install(|| unsafe {
        gemm(
            kern,
            (m, k, n),
            alpha,
            ops,
            beta,
            c.as_mut_ptr(),
            (rsc as isize, csc as isize),
            threads,
        )
    });
}

/// Every element of `got` within `eps * (4k + 8)` of `want`: absolute, NaN matching NaN (the
/// fixed cases put NaN in a C that must not be read), or `relative` (times `1 + |want|`, no
/// NaN expected: the random cases); `what` names the case in the failure message.
fn assert_near<T: Element>(
    got: &[T],
    want: &[T],
    k: usize,
    relative: bool,
    what: impl Fn() -> String,
) {
    let tol = T::EPSILON.to_f64() * (4.0 * k as f64 + 8.0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.to_f64(), w.to_f64());
        let ok = if relative {
            (g - w).abs() <= tol * (1.0 + w.abs())
        } else {
            (g - w).abs() <= tol || (g.is_nan() && w.is_nan())
        };
        assert!(ok, "{} [{i}]: got {g} want {w}", what());
    }
}

fn check<T: Element>(which: Isa, rng: &mut Rng, (m, k, n): (usize, usize, usize)) {
    let Some(kern) = kernel_on::<T>(which) else {
        return;
    };
    for (la, lb, lc) in [
        (0, 0, 0),
        (1, 0, 0),
        (0, 1, 0),
        (1, 1, 1),
        (2, 3, 2),
        (3, 2, 3),
    ] {
        let a = rng.vec::<T>(any_layout(m, k, la).2, -1.0, 1.0);
        let b = rng.vec::<T>(any_layout(k, n, lb).2, -1.0, 1.0);
        let (rsc, csc, nc) = any_layout(m, n, lc);
        for (alpha, beta) in [(1.0, 0.0), (0.5, -2.0), (-1.5, 1.0)] {
            let (alpha, beta) = (T::from_f64(alpha), T::from_f64(beta));
            let mut c0: Vec<T> = rng.vec(nc, -1.0, 1.0);
            if beta == T::ZERO {
                // C must not be read: NaN in it must not reach the result.
                c0.iter_mut().step_by(2).for_each(|v| *v = T::NAN);
            }
            let mut want = c0.clone();
            let (rsa, csa, _) = any_layout(m, k, la);
            let (rsb, csb, _) = any_layout(k, n, lb);
            reference::gemm(
                m, k, n, alpha, &a, rsa, csa, &b, rsb, csb, beta, &mut want, rsc, csc,
            );
            let mut first: Option<Vec<T>> = None;
            for threads in [1, 2, 3] {
                let mut c = c0.clone();
                let ops = Operands {
                    a: &a,
                    rsa,
                    csa,
                    b: &b,
                    rsb,
                    csb,
                };
                run(
                    &kern,
                    (m, k, n),
                    &ops,
                    alpha,
                    beta,
                    &mut c,
                    (rsc, csc),
                    threads,
                );
                assert_near(&c, &want, k, false, || {
                    format!(
                        "{which:?} {} {m}x{k}x{n} layouts {la}{lb}{lc} alpha {alpha:?} beta \
                         {beta:?} threads {threads}",
                        T::NAME
                    )
                });
                // The sum order of every element is fixed by k alone: the same bits whatever
                // the thread count.
                match &first {
                    None => first = Some(c),
                    Some(f) => assert!(
                        f.iter()
                            .zip(&c)
                            .all(|(x, y)| x.to_f64().to_bits() == y.to_f64().to_bits()),
                        "{which:?} {m}x{k}x{n}: {threads} threads changed the bits"
                    ),
                }
            }
        }
    }
}

fn shapes() -> Vec<(usize, usize, usize)> {
    vec![
        (1, 1, 1),
        (5, 7, 3),
        (12, 16, 32),
        (13, 17, 33),
        (25, 9, 70),
        (7, 2 * KC + 3, 40),
        (MC + 13, 20, 35),
        (3, 5, NC + 37),
        (40, KC + 1, 100),
    ]
}

fn check_all<T: Element>() {
    let mut rng = Rng::new(31);
    let mut ran = 0;
    for which in [Isa::Avx512, Isa::Avx2] {
        if kernel_on::<T>(which).is_none() {
            continue;
        }
        ran += 1;
        for s in shapes() {
            check::<T>(which, &mut rng, s);
        }
    }
    // Every x86-64 test machine since 2013 has AVX2; elsewhere there is no packed kernel.
    if cfg!(target_arch = "x86_64") && Isa::detected() >= Isa::Avx2 {
        assert!(ran > 0, "no packed kernel ran");
    }
}

#[test]
fn packed_f32_matches_reference_on_every_isa() {
    check_all::<f32>();
}

#[test]
fn packed_f64_matches_reference_on_every_isa() {
    check_all::<f64>();
}

/// A kernel is handed out only for an ISA this CPU has.
#[test]
fn no_kernel_above_the_cpu() {
    if Isa::detected() < Isa::Avx512 {
        assert!(kernel_on::<f32>(Isa::Avx512).is_none());
    }
    assert!(kernel_on::<f32>(Isa::Baseline).is_none());
}

/// Random strides: 0 row-major, 1 column-major, 2 padded, 3 general, 4 zero row stride, 5 zero
/// column stride, 6 both zero, 7 both one (overlapping), 8 column-major padded. A and B may
/// take any (they are only read); C only 0–3 and 8.
fn any_layout(rows: usize, cols: usize, kind: usize) -> (usize, usize, usize) {
    let (rs, cs) = match kind {
        0 => (cols, 1),
        1 => (1, rows),
        2 => (cols + 3, 1),
        3 => (2 * cols + 1, 2),
        4 => (0, 1),
        5 => (1, 0),
        6 => (0, 0),
        7 => (1, 1),
        _ => (1, rows + 5),
    };
    (rs, cs, (rows - 1) * rs + (cols - 1) * cs + 1)
}

/// Random shapes (across every block size), layouts and thread counts (1–5) against the
/// reference, and against the same call on one thread bit for bit.
fn fuzz<T: Element>(which: Isa, rng: &mut Rng, iters: usize) {
    let Some(kern) = kernel_on::<T>(which) else {
        return;
    };
    for it in 0..iters {
        let pick = |rng: &mut Rng, small: usize, big: usize| {
            let hi = if rng.below(3) == 0 { big } else { small };
            1 + rng.below(hi)
        };
        let (m, k, n) = (
            pick(rng, 60, 2 * MC + 30),
            pick(rng, 40, 2 * KC + 10),
            pick(rng, 150, NC + 70),
        );
        let (la, lb, lc) = (rng.below(9), rng.below(9), [0, 1, 2, 3, 8][rng.below(5)]);
        let (rsa, csa, na) = any_layout(m, k, la);
        let (rsb, csb, nb) = any_layout(k, n, lb);
        let (rsc, csc, nc) = any_layout(m, n, lc);
        let a = rng.vec::<T>(na, -1.0, 1.0);
        let b = rng.vec::<T>(nb, -1.0, 1.0);
        let (alpha, beta) = [(1.0, 0.0), (0.5, -2.0), (-1.5, 1.0)][rng.below(3)];
        let (alpha, beta) = (T::from_f64(alpha), T::from_f64(beta));
        let c0: Vec<T> = rng.vec(nc, -1.0, 1.0);
        let mut want = c0.clone();
        reference::gemm(
            m, k, n, alpha, &a, rsa, csa, &b, rsb, csb, beta, &mut want, rsc, csc,
        );
        let ops = Operands {
            a: &a,
            rsa,
            csa,
            b: &b,
            rsb,
            csb,
        };
        let mut outs = Vec::new();
        for threads in [1, 2 + rng.below(4)] {
            let mut c = c0.clone();
            run(
                &kern,
                (m, k, n),
                &ops,
                alpha,
                beta,
                &mut c,
                (rsc, csc),
                threads,
            );
            // Zero strides make sums of up to k equal terms: a relative tolerance.
            assert_near(&c, &want, k, true, || {
                format!(
                    "#{it} {which:?} {} {m}x{k}x{n} layouts {la}{lb}{lc} threads {threads}",
                    T::NAME
                )
            });
            outs.push(c);
        }
        assert!(
            outs[0]
                .iter()
                .zip(&outs[1])
                .all(|(x, y)| x.to_f64().to_bits() == y.to_f64().to_bits()),
            "#{it} {which:?} {m}x{k}x{n}: the thread count changed the bits"
        );
    }
}

#[test]
fn packed_random_shapes_layouts_and_threads() {
    let mut rng = Rng::new(7);
    for which in [Isa::Avx512, Isa::Avx2] {
        fuzz::<f32>(which, &mut rng, 40);
        fuzz::<f64>(which, &mut rng, 25);
    }
}

/// The public `gemm` called from inside rayon tasks (each call then splits over the same
/// pool, and a thread may run another call's task while its own is in flight).
#[test]
fn gemm_inside_rayon_tasks() {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .expect("pool");
    pool.install(|| {
        (0..8u64).into_par_iter().for_each(|s| {
            let mut rng = Rng::new(1000 + s);
            let (m, k, n) = (
                20 + rng.below(200),
                20 + rng.below(600),
                32 + rng.below(300),
            );
            let (la, lb, lc) = (rng.below(9), rng.below(9), [0, 1, 2, 3, 8][rng.below(5)]);
            let (rsa, csa, na) = any_layout(m, k, la);
            let (rsb, csb, nb) = any_layout(k, n, lb);
            let (rsc, csc, nc) = any_layout(m, n, lc);
            let a = rng.vec::<f32>(na, -1.0, 1.0);
            let b = rng.vec::<f32>(nb, -1.0, 1.0);
            let c0: Vec<f32> = rng.vec(nc, -1.0, 1.0);
            let mut want = c0.clone();
            reference::gemm(
                m, k, n, 0.5, &a, rsa, csa, &b, rsb, csb, 1.5, &mut want, rsc, csc,
            );
            let mut c = c0;
            crate::gemm(
                m,
                k,
                n,
                0.5,
                &a,
                rsa,
                csa,
                &b,
                rsb,
                csb,
                1.5,
                &mut c,
                rsc,
                csc,
                crate::Par::Rayon,
            );
            let tol = f64::from(f32::EPSILON) * (4.0 * k as f64 + 8.0);
            for (g, w) in c.iter().zip(&want) {
                let (g, w) = (f64::from(*g), f64::from(*w));
                assert!(
                    (g - w).abs() <= tol * (1.0 + w.abs()),
                    "{m}x{k}x{n} {la}{lb}{lc}"
                );
            }
        });
    });
}
