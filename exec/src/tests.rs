//! Unit tests: arena programs and fused passes, closures and generated code, against the
//! kernels of `stategrad-simd` bit for bit.

use crate::test_support::*;
use crate::*;
use stategrad_simd::{binary, reference, scalar_binary, unary, BinaryOp, Element, Par, UnaryOp};

/// The fused pass equals running its ops one kernel at a time over whole slices, for sizes
/// around the block and chunk boundaries, with scalar inputs, several outputs and sums; its sums
/// are identical sequentially and over rayon.
fn fused_vs_kernels<T: Element>() {
    // Short passes too are split over the pool (the split's path is under test).
    crate::tuning::set_fused_par_min_work(0);
    use FusedArg::{Input as I, Op as O};
    let mut rng = Rng::new(41);
    let ops = [
        FusedOp::Unary(UnaryOp::Tanh, I(0)),
        FusedOp::Binary(BinaryOp::Mul, O(0), I(1)),
        FusedOp::Binary(BinaryOp::Sub, I(2), O(1)),
        FusedOp::Unary(UnaryOp::Sigmoid, O(2)),
        FusedOp::Binary(BinaryOp::Div, I(2), O(3)),
        FusedOp::Copy(I(2)),
        FusedOp::Binary(BinaryOp::Add, I(2), I(2)),
    ];
    for n in [
        1,
        15,
        FUSED_BLOCK - 1,
        FUSED_BLOCK + 3,
        FUSED_CHUNK,
        3 * FUSED_CHUNK + 77,
    ] {
        let x: Vec<T> = rng.vec(n, -3.0, 3.0);
        let y: Vec<T> = rng.vec(n, -3.0, 3.0);
        let s = T::from_f64(0.75);
        // Reference: one whole-slice kernel per op.
        let mut v: Vec<Vec<T>> = vec![vec![T::ZERO; n]; ops.len()];
        unary(UnaryOp::Tanh, &x, &mut v[0], Par::Seq);
        let (a, b) = v.split_at_mut(1);
        binary(BinaryOp::Mul, &a[0], &y, &mut b[0], Par::Seq);
        let (a, b) = v.split_at_mut(2);
        scalar_binary(BinaryOp::Sub, s, &a[1], &mut b[0], Par::Seq);
        let (a, b) = v.split_at_mut(3);
        unary(UnaryOp::Sigmoid, &a[2], &mut b[0], Par::Seq);
        let (a, b) = v.split_at_mut(4);
        scalar_binary(BinaryOp::Div, s, &a[3], &mut b[0], Par::Seq);
        let inputs = [
            FusedInput::Slice(&x[..]),
            FusedInput::Slice(&y[..]),
            FusedInput::Scalar(s),
        ];
        let mut results = Vec::new();
        for par in [Par::Seq, Par::Rayon] {
            let (mut o1, mut o4, mut o5, mut o6) = (
                vec![T::NAN; n],
                vec![T::NAN; n],
                vec![T::NAN; n],
                vec![T::NAN; n],
            );
            let sums = fused(
                &ops,
                &inputs,
                FusedOutputs {
                    values: vec![
                        (1, &mut o1[..]),
                        (4, &mut o4[..]),
                        (5, &mut o5[..]),
                        (6, &mut o6[..]),
                    ],
                    sums: vec![O(4), I(0), I(2)],
                },
                n,
                par,
            )
            .unwrap();
            // Transcendentals on short tails may take the vector path here and `std` in the
            // whole-slice kernel: compare within the documented bound.
            assert_ulps(&o1, &v[1], 2, &format!("fused op 1, n={n}"));
            assert_ulps(&o4, &v[4], 8, &format!("fused op 4, n={n}"));
            assert!(o5.iter().all(|&e| e == s) && o6.iter().all(|&e| e == s + s));
            let want_sum: f64 = v[4].iter().map(|e| e.to_f64()).sum();
            let got = sums[0].to_f64();
            assert!(
                (got - want_sum).abs() <= 1e-4 * want_sum.abs().max(1.0),
                "sum n={n}: {got} vs {want_sum}"
            );
            let xs: f64 = x.iter().map(|e| e.to_f64()).sum();
            assert!((sums[1].to_f64() - xs).abs() <= 1e-3 * (n as f64).sqrt().max(1.0));
            assert_eq!(sums[2].to_f64(), 0.75 * n as f64);
            results.push(sums);
        }
        assert!(
            same_slices(&results[0], &results[1]),
            "sums differ Seq vs Rayon, n={n}"
        );
    }
}

fn same_slices<T: Element>(a: &[T], b: &[T]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| same(x, y))
}

#[test]
fn fused_matches_kernels() {
    fused_vs_kernels::<f32>();
    fused_vs_kernels::<f64>();
}

#[test]
fn fused_rejects_forward_reference() {
    let x = [1.0f32; 4];
    let ops = [FusedOp::Copy(FusedArg::Op(0))];
    let r = fused(
        &ops,
        &[FusedInput::Slice(&x[..])],
        FusedOutputs {
            values: vec![],
            sums: vec![],
        },
        4,
        Par::Seq,
    );
    assert_eq!(r, Err(crate::FusedError::BadOperand { op: 0 }));
}

/// An input read from an output's buffer (`FusedInput::Output`, an in-place update) gives the
/// same outputs and sums as the same input in a slice of its own, for sizes around the block
/// and chunk boundaries, sequentially and over rayon, with the multiply-add ops, two paired
/// unary ops and the direct write of the last op.
#[test]
fn fused_in_place_inputs_match_separate_inputs() {
    // Short passes too are split over the pool (the split's path is under test).
    crate::tuning::set_fused_par_min_work(0);
    use FusedArg::{Input as I, Op as O};
    let mut rng = Rng::new(43);
    let ops = [
        FusedOp::Unary(UnaryOp::Tanh, I(0)),
        FusedOp::Unary(UnaryOp::Sigmoid, I(0)),
        FusedOp::MulAdd(O(0), I(1), I(0)),
        FusedOp::NegMulAdd(O(1), O(2), I(2)),
        FusedOp::Binary(BinaryOp::Mul, O(3), I(0)),
    ];
    for n in [5, FUSED_BLOCK + 3, 2 * FUSED_CHUNK + 77] {
        let x: Vec<f32> = rng.vec(n, -3.0, 3.0);
        let y: Vec<f32> = rng.vec(n, -3.0, 3.0);
        for par in [Par::Seq, Par::Rayon] {
            let (mut a3, mut a4) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            let sums_a = fused(
                &ops,
                &[
                    FusedInput::Slice(&x[..]),
                    FusedInput::Slice(&y[..]),
                    FusedInput::Scalar(0.5),
                ],
                FusedOutputs {
                    values: vec![(3, &mut a3[..]), (4, &mut a4[..])],
                    sums: vec![I(0), O(4)],
                },
                n,
                par,
            )
            .unwrap();
            // The same pass with `x` living in output 1's buffer.
            let (mut b3, mut b4) = (vec![f32::NAN; n], x.clone());
            let sums_b = fused(
                &ops,
                &[
                    FusedInput::Output(1),
                    FusedInput::Slice(&y[..]),
                    FusedInput::Scalar(0.5),
                ],
                FusedOutputs {
                    values: vec![(3, &mut b3[..]), (4, &mut b4[..])],
                    sums: vec![I(0), O(4)],
                },
                n,
                par,
            )
            .unwrap();
            assert!(same_slices(&a3, &b3) && same_slices(&a4, &b4), "n={n}");
            assert!(same_slices(&sums_a, &sums_b), "n={n}");
            // And the multiply-adds round like the separate ops.
            let t = reference::unary_op(UnaryOp::Tanh, x[n - 1]);
            let s = reference::unary_op(UnaryOp::Sigmoid, x[n - 1]);
            let m = t * y[n - 1] + x[n - 1];
            let want = (0.5 - s * m) * x[n - 1];
            if n % 16 != 0 {
                // The last element is in the scalar tail (std math): exact.
                assert_eq!(a4[n - 1], want, "n={n}");
            }
        }
    }
}

/// A random arena program over every step form (inlined and not), operands drawn from the
/// values so far; returns the steps, the arena's initial contents and its size.
fn random_arena_program<T: Element>(rng: &mut Rng) -> (Vec<arena::ArenaStep>, Vec<T>) {
    use arena::{ArenaOpd as O, ArenaStep as S};
    let mut init: Vec<T> = rng.vec(80, -3.0, 3.0);
    let sp = specials::<T>();
    for (i, v) in sp.iter().enumerate() {
        init[(i * 7) % 64] = *v;
    }
    let mut end = init.len();
    let mut steps = Vec::new();
    let bin = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
    ];
    let un = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Sqrt,
        UnaryOp::Square,
        UnaryOp::Exp,
    ];
    for _ in 0..40 {
        let n = [1, 3, 4, 8, 17, 20, 33, 64, 70][rng.below(9)];
        let src = |rng: &mut Rng, len: usize| rng.below(end - len + 1);
        let opd = |rng: &mut Rng, n: usize| match rng.below(3) {
            0 => O::Slice(src(rng, n)),
            1 => O::Splat(src(rng, 1)),
            _ => O::Imm(rng.range(-2.0, 2.0)),
        };
        let out = end;
        let (step, len) = match rng.below(8) {
            0 => (
                S::Binary {
                    op: bin[rng.below(5)],
                    a: opd(rng, n),
                    b: opd(rng, n),
                    out,
                    n,
                },
                n,
            ),
            1 => (
                S::Binary1 {
                    op: bin[rng.below(5)],
                    a: opd(rng, 1),
                    b: opd(rng, 1),
                    out,
                },
                1,
            ),
            2 => (
                S::Unary {
                    op: un[rng.below(5)],
                    x: src(rng, n),
                    out,
                    n,
                },
                n,
            ),
            3 => (
                S::Unary1 {
                    op: un[rng.below(5)],
                    x: src(rng, 1),
                    out,
                },
                1,
            ),
            4 => {
                let n = rng.below(end.min(150)) + 1;
                (
                    S::Sum {
                        x: src(rng, n),
                        n,
                        out,
                    },
                    1,
                )
            }
            5 => {
                let (sa, sb) = (rng.below(2) + 1, rng.below(2) + 1);
                let k = rng.below(30) + 1;
                (
                    S::Dot {
                        a: src(rng, (k - 1) * sa + 1),
                        sa,
                        b: src(rng, (k - 1) * sb + 1),
                        sb,
                        k,
                        out,
                    },
                    1,
                )
            }
            6 => {
                let (m, n) = [(20, 1), (1, 9), (3, 4), (5, 5)][rng.below(4)];
                let (rsa, csb) = (rng.below(2) + 1, rng.below(2) + 1);
                (
                    S::Outer {
                        a: src(rng, (m - 1) * rsa + 1),
                        rsa,
                        b: src(rng, (n - 1) * csb + 1),
                        csb,
                        m,
                        n,
                        out,
                    },
                    m * n,
                )
            }
            _ => (S::Call { out, n: 1 }, 1),
        };
        steps.push(step);
        end += len;
    }
    init.resize(end, T::ZERO);
    (steps, init)
}

/// A `Call` step's closure: `out = 2 * (value at a fixed earlier offset) + 1`.
fn call_closures<T: Element>(steps: &[arena::ArenaStep]) -> Vec<arena::ArenaFn<T>> {
    steps
        .iter()
        .filter_map(|s| match *s {
            arena::ArenaStep::Call { out, .. } => {
                let src = out / 2;
                let f: arena::ArenaFn<T> =
                    Box::new(move |r: &mut [T]| r[out] = T::from_f64(2.0) * r[src] + T::ONE);
                Some(f)
            }
            _ => None,
        })
        .collect()
}

fn check_arena_native_equals_closures<T: Element>() {
    let mut rng = Rng::new(41);
    for _ in 0..60 {
        let (steps, init) = random_arena_program::<T>(&mut rng);
        let size = init.len();
        let program = |native| {
            arena::ArenaProgram::with_native(&steps, call_closures(&steps), size, native).unwrap()
        };
        let closures = program(arena::Native::Never);
        let native = program(arena::Native::Now);
        assert!(!closures.is_native());
        assert_eq!(native.is_native(), crate::codegen::available());
        let (mut a, mut b) = (init.clone(), init.clone());
        closures.run(&mut a).unwrap();
        native.run(&mut b).unwrap();
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let same = x.to_f64().to_bits() == y.to_f64().to_bits() || (x.is_nan() && y.is_nan());
            assert!(
                same,
                "element {i}: closures {x:?}, native {y:?}\n{steps:#?}"
            );
        }
    }
}

#[test]
fn arena_native_code_equals_closures_bit_for_bit() {
    check_arena_native_equals_closures::<f32>();
    check_arena_native_equals_closures::<f64>();
}

/// Steps that write over what earlier steps wrote (lowered programs write each slot once per
/// run, loops write carries back): the generated code must not reuse a register that held the
/// old value, element or vector.
#[test]
fn arena_native_code_rereads_rewritten_elements_and_vectors() {
    use arena::{ArenaOpd as O, ArenaProgram, ArenaStep as S, Native};
    let mul = |a: usize, out: usize, n: usize, by: f64| S::Binary {
        op: BinaryOp::Mul,
        a: O::Slice(a),
        b: O::Imm(by),
        out,
        n,
    };
    let programs: Vec<Vec<S>> = vec![
        // A vector written, one element of it rewritten, the vector read again.
        vec![
            mul(0, 8, 8, 2.0),
            S::Unary1 {
                op: UnaryOp::Neg,
                x: 1,
                out: 9,
            },
            mul(8, 16, 8, 3.0),
        ],
        // A vector written, a vector two elements on rewritten, the first read again.
        vec![mul(0, 8, 8, 2.0), mul(1, 10, 4, 5.0), mul(8, 16, 8, 3.0)],
        // Elements read (and kept), then rewritten as a vector, then read again.
        vec![
            S::Binary1 {
                op: BinaryOp::Add,
                a: O::Slice(8),
                b: O::Slice(9),
                out: 24,
            },
            mul(0, 8, 8, 7.0),
            S::Binary1 {
                op: BinaryOp::Add,
                a: O::Slice(8),
                b: O::Slice(9),
                out: 25,
            },
            S::Sum {
                x: 8,
                n: 8,
                out: 26,
            },
        ],
        // A closure rewrites a vector the code had in a register.
        vec![
            mul(0, 8, 8, 2.0),
            S::Call { out: 10, n: 4 },
            mul(8, 16, 8, 3.0),
        ],
    ];
    for (k, steps) in programs.iter().enumerate() {
        let calls = || -> Vec<arena::ArenaFn<f32>> {
            if steps.iter().any(|s| matches!(s, S::Call { .. })) {
                vec![Box::new(|r: &mut [f32]| {
                    for i in 10..14 {
                        r[i] = r[i - 10] * 11.0;
                    }
                })]
            } else {
                vec![]
            }
        };
        let init: Vec<f32> = (0..32).map(|i| 1.0 + i as f32 * 0.25).collect();
        let closures = ArenaProgram::with_native(steps, calls(), 32, Native::Never).unwrap();
        let native = ArenaProgram::with_native(steps, calls(), 32, Native::Now).unwrap();
        let (mut a, mut b) = (init.clone(), init);
        closures.run(&mut a).unwrap();
        native.run(&mut b).unwrap();
        assert_eq!(a, b, "program {k}");
    }
}

#[test]
fn arena_step_closure_panic_is_passed_on_and_program_stays_usable() {
    use arena::{ArenaProgram, ArenaStep as S, Native};
    let steps = [
        S::Call { out: 1, n: 1 },
        S::Unary1 {
            op: UnaryOp::Neg,
            x: 1,
            out: 2,
        },
    ];
    for native in [Native::Never, Native::Now] {
        let f: arena::ArenaFn<f32> = Box::new(|r: &mut [f32]| {
            assert!(r[0] >= 0.0, "negative input");
            r[1] = r[0] * 3.0;
        });
        let p = ArenaProgram::with_native(&steps, vec![f], 3, native).unwrap();
        let mut bad = [-1.0f32, 0.0, 0.0];
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.run(&mut bad)));
        let msg = err.expect_err("the closure's panic reaches the caller");
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"negative input"));
        let mut good = [2.0f32, 0.0, 0.0];
        p.run(&mut good).unwrap();
        assert_eq!(good, [2.0, 6.0, -6.0]);
    }
}

#[test]
fn arena_program_turns_native_after_its_runs() {
    use arena::{ArenaOpd as O, ArenaProgram, ArenaStep as S, Native};
    let steps = [S::Binary1 {
        op: BinaryOp::Mul,
        a: O::Slice(0),
        b: O::Imm(3.0),
        out: 1,
    }];
    let p = ArenaProgram::<f64>::with_native(&steps, vec![], 2, Native::AfterRuns(3)).unwrap();
    for run in 1..=4 {
        let mut a = [run as f64, 0.0];
        p.run(&mut a).unwrap();
        assert_eq!(a[1], 3.0 * run as f64);
        assert_eq!(
            p.is_native(),
            run >= 3 && crate::codegen::available(),
            "run {run}"
        );
    }
    // A loop announced to run past the threshold gets its code before its first run.
    let q = ArenaProgram::<f64>::with_native(&steps, vec![], 2, Native::AfterRuns(100)).unwrap();
    q.expect_runs(99);
    assert!(!q.is_native());
    q.expect_runs(100);
    assert_eq!(q.is_native(), crate::codegen::available());
}

#[test]
fn arena_program_refuses_a_read_past_the_arena() {
    use arena::{ArenaOpd as O, ArenaProgram, ArenaStep as S, Native};
    // Output in range, left operand's 4 elements from offset 6 are not (size 8).
    let steps = [S::Binary {
        op: BinaryOp::Add,
        a: O::Slice(6),
        b: O::Imm(1.0),
        out: 2,
        n: 4,
    }];
    let p = ArenaProgram::<f32>::with_native(&steps, vec![], 8, Native::Now);
    assert_eq!(p.unwrap_err(), arena::ArenaError::OutsideArena { step: 0 });
}

#[test]
fn arena_program_runs_on_many_threads_across_the_switch_to_native_code() {
    use arena::{ArenaOpd as O, ArenaProgram, ArenaStep as S, Native};
    // y = x * x + x0 over 20 elements, then s = sum(y) (a call past 16 lanes on AVX-512).
    let steps = [
        S::Binary {
            op: BinaryOp::Mul,
            a: O::Slice(0),
            b: O::Slice(0),
            out: 32,
            n: 20,
        },
        S::Binary {
            op: BinaryOp::Add,
            a: O::Slice(32),
            b: O::Splat(0),
            out: 64,
            n: 20,
        },
        S::Sum {
            x: 64,
            n: 20,
            out: 84,
        },
    ];
    let p = ArenaProgram::<f32>::with_native(&steps, vec![], 85, Native::AfterRuns(50)).unwrap();
    let want = |x0: f32| {
        (0..20)
            .map(|i| x0 + i as f32)
            .fold(0.0f32, |s, v| s + v * v + x0)
    };
    std::thread::scope(|s| {
        for t in 0..4 {
            let p = &p;
            s.spawn(move || {
                for r in 0..200 {
                    let x0 = (t * 1000 + r) as f32 * 1e-3;
                    let mut arena = vec![0.0f32; 85];
                    for i in 0..20 {
                        arena[i] = x0 + i as f32;
                    }
                    p.run(&mut arena).unwrap();
                    let got = arena[84];
                    let w = want(x0);
                    assert!((got - w).abs() <= 1e-4 * w.abs().max(1.0), "{got} vs {w}");
                }
            });
        }
    });
    assert_eq!(p.is_native(), crate::codegen::available());
}

#[test]
fn arena_program_too_large_for_native_code_stays_on_closures() {
    use arena::{ArenaOpd as O, ArenaProgram, ArenaStep as S, Native};
    // 1200 steps of 64-element products: more instructions than the generator takes.
    let steps: Vec<S> = (0..1200)
        .map(|k| S::Binary {
            op: BinaryOp::Mul,
            a: O::Slice(k * 64),
            b: O::Imm(1.0 + 1.0 / 1024.0),
            out: (k + 1) * 64,
            n: 64,
        })
        .collect();
    let size = 1201 * 64;
    let p = ArenaProgram::<f32>::with_native(&steps, vec![], size, Native::Now).unwrap();
    assert!(!p.is_native());
    let mut arena = vec![1.0f32; size];
    p.run(&mut arena).unwrap();
    let want = (0..1200).fold(1.0f32, |v, _| v * (1.0 + 1.0 / 1024.0));
    assert_eq!(arena[size - 1], want);
}

/// Generated code from the first call (`true`), or the block kernels only.
fn code(native: bool) -> crate::fused::NativeCode {
    if native {
        crate::fused::NativeCode::Now
    } else {
        crate::fused::NativeCode::Never
    }
}

/// A random fused pass: exact ops (the ones generated code covers) mixed with transcendental
/// ones, operands drawn from slice, scalar and in-place inputs and earlier ops; returns the ops,
/// the number of inputs and which input (if any) reads output 0's buffer.
fn random_fused_pass(rng: &mut Rng, n_inputs: usize) -> Vec<FusedOp> {
    use FusedArg::{Input as I, Op as O};
    let unary = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Sqrt,
        UnaryOp::Square,
        UnaryOp::Recip,
        UnaryOp::Relu,
        UnaryOp::Tanh,
        UnaryOp::Exp,
        UnaryOp::Sigmoid,
        UnaryOp::Log,
    ];
    let binary = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
    ];
    let n_ops = 3 + rng.below(14);
    let mut ops = Vec::with_capacity(n_ops);
    for k in 0..n_ops {
        // Recent ops are likelier operands (long chains, like a gradient's).
        let arg = |rng: &mut Rng| {
            if k > 0 && rng.below(3) > 0 {
                O(k - 1 - rng.below(k.min(4)))
            } else {
                I(rng.below(n_inputs))
            }
        };
        let op = match rng.below(12) {
            0..=2 => FusedOp::Unary(unary[rng.below(unary.len())], arg(rng)),
            3..=7 => FusedOp::Binary(binary[rng.below(binary.len())], arg(rng), arg(rng)),
            8 => FusedOp::Copy(arg(rng)),
            9 | 10 => FusedOp::MulAdd(arg(rng), arg(rng), arg(rng)),
            _ => FusedOp::NegMulAdd(arg(rng), arg(rng), arg(rng)),
        };
        ops.push(op);
    }
    ops
}

/// Returns how many passes got code, and how many of those with a transcendental op in it.
fn check_fused_native_equals_kernels<T: Element>() -> (usize, usize) {
    // Short passes too are split over the pool (the split's path is under test).
    crate::tuning::set_fused_par_min_work(0);
    let mut rng = Rng::new(2026);
    let (mut with_runs, mut with_transcendental) = (0, 0);
    for case in 0..60 {
        let n = [
            1024,
            1024 + 5,
            3 * FUSED_BLOCK + 16,
            FUSED_CHUNK + 37,
            2 * FUSED_CHUNK,
        ][case % 5];
        // `x` has special values in every block (transcendental lanes fall back to `std`), `y`
        // only ordinary ones (the generated code's results stand).
        let x: Vec<T> = mixed(&mut rng, n, -4.0, 4.0);
        let y: Vec<T> = rng.vec(n, -4.0, 4.0);
        let sp = specials::<T>();
        let scalars = [T::from_f64(rng.range(-2.0, 2.0)), sp[rng.below(sp.len())]];
        let in_place = case % 3 == 0;
        let ops = random_fused_pass(&mut rng, 5);
        let last = ops.len() - 1;
        let mut outputs = vec![last];
        for _ in 0..rng.below(3) {
            let k = rng.below(ops.len());
            if !outputs.contains(&k) {
                outputs.push(k);
            }
        }
        // Output 0 is written last in some passes (not the direct write of the last op).
        if case % 4 == 1 {
            outputs.rotate_left(1);
        }
        let sums: Vec<FusedArg> = (0..rng.below(3))
            .map(|_| FusedArg::Op(rng.below(ops.len())))
            .collect();
        let par = if case % 2 == 0 { Par::Seq } else { Par::Rayon };
        let run = |native: bool| {
            let mut bufs: Vec<Vec<T>> = outputs.iter().map(|_| vec![T::NAN; n]).collect();
            if in_place {
                bufs[0] = y.clone();
            }
            let mut inputs = vec![
                FusedInput::Slice(&x[..]),
                FusedInput::Slice(&y[..]),
                FusedInput::Scalar(scalars[0]),
                FusedInput::Scalar(scalars[1]),
                FusedInput::Slice(&x[..]),
            ];
            if in_place {
                inputs[4] = FusedInput::Output(0);
            }
            let values = outputs
                .iter()
                .copied()
                .zip(bufs.iter_mut().map(|b| &mut b[..]));
            let s = crate::fused::fused_with(
                &ops,
                &inputs,
                FusedOutputs {
                    values: values.collect(),
                    sums: sums.clone(),
                },
                n,
                par,
                code(native),
            )
            .unwrap();
            (bufs, s)
        };
        let (got, got_sums) = run(true);
        let (want, want_sums) = run(false);
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            let first = g.iter().zip(w).position(|(&a, &b)| !same(a, b));
            assert!(
                first.is_none(),
                "case {case}: output {k} (op {}) differs at {first:?}: {:?} vs {:?}; ops {ops:?}",
                outputs[k],
                first.map(|i| g[i]),
                first.map(|i| w[i]),
            );
        }
        assert!(same_slices(&got_sums, &want_sums), "case {case}: sums");
        let inputs_kinds: Vec<FusedInput<'_, T>> = vec![
            FusedInput::Slice(&x[..]),
            FusedInput::Slice(&x[..]),
            FusedInput::Scalar(scalars[0]),
            FusedInput::Scalar(scalars[1]),
            FusedInput::Slice(&x[..]),
        ];
        let direct = (!sums.contains(&FusedArg::Op(last))).then_some(last);
        if let Some(plan) =
            crate::fused_native::plan(&ops, &inputs_kinds, &outputs, &sums, direct, usize::MAX)
        {
            with_runs += 1;
            let transcendental = plan.runs.iter().any(|r| {
                ops[r.start..r.end].iter().any(|op| {
                    matches!(
                        op,
                        FusedOp::Unary(UnaryOp::Exp | UnaryOp::Tanh | UnaryOp::Sigmoid, _)
                    )
                })
            });
            with_transcendental += usize::from(transcendental);
        }
    }
    (with_runs, with_transcendental)
}

/// Generated code for runs of exact ops gives the block kernels' bits exactly (outputs and sums;
/// NaN for NaN, as Rust leaves a NaN's sign and payload unspecified), with in-place inputs, partial last blocks, sequential and over rayon), in f32 and
/// f64; on a host with AVX-512F most random passes do get code.
#[test]
fn fused_native_code_equals_block_kernels_bit_for_bit() {
    let (f32_runs, f64_runs) = (
        check_fused_native_equals_kernels::<f32>(),
        check_fused_native_equals_kernels::<f64>(),
    );
    if crate::fused_native::available() {
        assert!(
            f32_runs.0 >= 30 && f64_runs.0 >= 30,
            "{f32_runs:?} {f64_runs:?}"
        );
        // `exp`, `tanh` and `sigmoid` get code in f32 (the kernels run on AVX-512, whose
        // polynomials the generator reproduces, in any build); never in f64.
        assert!(
            f32_runs.1 >= 15,
            "f32 passes with transcendental code: {f32_runs:?}"
        );
        assert_eq!(f64_runs.1, 0);
    } else {
        assert_eq!((f32_runs.0, f64_runs.0), (0, 0));
    }
}

/// W5's gradient pass (the one `jit` makes) gets code (all of it, `tanh` and `sigmoid`
/// included) and gives the block kernels' bits.
#[test]
fn fused_w5_gradient_pass_native_equals_kernels() {
    // Short passes too are split over the pool (the split's path is under test).
    crate::tuning::set_fused_par_min_work(0);
    use FusedArg::{Input as I, Op as O};
    let ops = [
        FusedOp::Unary(UnaryOp::Tanh, I(0)),
        FusedOp::Unary(UnaryOp::Sigmoid, I(0)),
        FusedOp::Binary(BinaryOp::Mul, I(1), I(0)),
        FusedOp::MulAdd(I(0), I(1), O(2)),
        FusedOp::Binary(BinaryOp::Mul, O(0), O(1)),
        FusedOp::Binary(BinaryOp::Sub, I(2), O(1)),
        FusedOp::MulAdd(O(4), O(5), O(3)),
        FusedOp::NegMulAdd(O(0), O(0), I(2)),
        FusedOp::MulAdd(O(1), O(7), O(6)),
    ];
    let mut rng = Rng::new(5);
    let n = 3 * FUSED_CHUNK + 100;
    let x: Vec<f32> = mixed(&mut rng, n, -6.0, 6.0);
    let inputs = [
        FusedInput::Slice(&x[..]),
        FusedInput::Scalar(0.5),
        FusedInput::Scalar(1.0),
    ];
    let run = |native: bool| {
        let mut g = vec![0.0f32; n];
        let values = vec![(8, &mut g[..])];
        let out = FusedOutputs {
            values,
            sums: vec![],
        };
        crate::fused::fused_with(&ops, &inputs, out, n, Par::Rayon, code(native)).unwrap();
        g
    };
    let (got, want) = (run(true), run(false));
    assert!(same_slices(&got, &want));
    let plan = crate::fused_native::plan(&ops, &inputs, &[8], &[], Some(8), usize::MAX);
    if crate::fused_native::available() {
        let plan = plan.expect("W5's pass gets code");
        // All of it: with generated code available, tanh and sigmoid are reproduced too.
        let first = 0;
        assert_eq!(
            (plan.runs.len(), plan.runs[0].start, plan.runs[0].end),
            (1, first, 9)
        );
        // The whole pass in one run: each chunk is one call.
        assert_eq!(plan.whole, first == 0);
    }
}

/// Inputs where `exp`'s range reduction meets a tie (`x·log2(e)` exactly `k + 1/2`, rounded to
/// even by the kernels) and the edges of its domain give the kernels' bits in generated code,
/// for `exp`, `tanh` (whose argument is `2|x|`) and `sigmoid` (`-|x|`).
#[test]
fn fused_native_transcendentals_match_kernels_at_ties_and_edges() {
    use FusedArg::{Input as I, Op as O};
    let mut x = Vec::new();
    for k in -40..40 {
        let t = k as f32 + 0.5;
        let x0 = t / std::f32::consts::LOG2_E;
        let mut v = f32::from_bits(x0.to_bits().saturating_sub(64));
        for _ in 0..128 {
            if v * std::f32::consts::LOG2_E == t {
                // Also as tanh's `2|x|` and sigmoid's `-|x|`.
                x.extend([v, v / 2.0, -v.abs()]);
            }
            v = f32::from_bits(v.to_bits() + 1);
        }
    }
    assert!(x.len() > 30, "found {} ties", x.len());
    x.extend([
        -87.0, 88.0, -87.5, 88.5, 44.0, -44.0, 0.625, -0.625, 9.0, -9.0,
    ]);
    let n = x.len().div_ceil(32) * 32 * 4;
    let x: Vec<f32> = x.iter().copied().cycle().take(n).collect();
    for u in [UnaryOp::Exp, UnaryOp::Tanh, UnaryOp::Sigmoid] {
        let ops = [
            FusedOp::Unary(u, I(0)),
            FusedOp::Binary(BinaryOp::Mul, O(0), I(0)),
        ];
        let run = |native: bool| {
            let mut g = vec![0.0f32; n];
            let out = FusedOutputs {
                values: vec![(1, &mut g[..])],
                sums: vec![],
            };
            let x = [FusedInput::Slice(&x[..])];
            crate::fused::fused_with(&ops, &x, out, n, Par::Seq, code(native)).unwrap();
            g
        };
        let (got, want) = (run(true), run(false));
        for i in 0..n {
            assert!(
                same(got[i], want[i]),
                "{u:?}({}) = {} vs {}",
                x[i],
                got[i],
                want[i]
            );
        }
    }
}

/// An in-place pass with `exp`/`sigmoid` lanes that need the `std` fallback (inputs beyond
/// exp's vector range): the block kernels redo those positions from the inputs, so the code
/// must not have overwritten them first. Found by the differential tester (seed 419730): the
/// whole-chunk run read its input in place and the redo saw its own output.
#[test]
fn fused_native_in_place_pass_with_fallback_lanes_matches_kernels() {
    // Short passes too are split over the pool (the split's path is under test).
    crate::tuning::set_fused_par_min_work(0);
    use FusedArg::{Input as I, Op as O};
    for u in [UnaryOp::Exp, UnaryOp::Sigmoid] {
        let ops = [
            FusedOp::Binary(BinaryOp::Mul, I(0), I(1)),
            FusedOp::Unary(u, O(0)),
            FusedOp::Binary(BinaryOp::Add, O(1), I(0)),
        ];
        let mut rng = Rng::new(419_730);
        for n in [1024, 2 * FUSED_CHUNK + 77] {
            // Values up to ±200 send some lanes past exp's range into the fallback.
            let x: Vec<f32> = mixed(&mut rng, n, -100.0, 100.0);
            for par in [Par::Seq, Par::Rayon] {
                let mut separate = vec![f32::NAN; n];
                let out = FusedOutputs {
                    values: vec![(2, &mut separate[..])],
                    sums: vec![],
                };
                let inputs = [FusedInput::Slice(&x[..]), FusedInput::Scalar(2.0)];
                crate::fused::fused_with(&ops, &inputs, out, n, par, code(false)).unwrap();
                let mut in_place = x.clone();
                let out = FusedOutputs {
                    values: vec![(2, &mut in_place[..])],
                    sums: vec![],
                };
                let inputs = [FusedInput::Output(0), FusedInput::Scalar(2.0)];
                crate::fused::fused_with(&ops, &inputs, out, n, par, code(true)).unwrap();
                assert!(same_slices(&in_place, &separate), "{u:?} n={n} {par:?}");
            }
        }
    }
}

/// A whole-pass run whose input lives in the buffer of the output it writes (an in-place
/// update) reads it there, without the block copy, and gives the same bits as the same pass
/// with the input in a slice of its own, over chunks and a partial last block.
#[test]
fn fused_native_whole_pass_in_place_matches_separate_input() {
    // Short passes too are split over the pool (the split's path is under test).
    crate::tuning::set_fused_par_min_work(0);
    use FusedArg::{Input as I, Op as O};
    let ops = [
        FusedOp::Binary(BinaryOp::Mul, I(0), I(1)),
        FusedOp::MulAdd(O(0), I(0), I(1)),
        FusedOp::Unary(UnaryOp::Neg, O(1)),
        FusedOp::Binary(BinaryOp::Max, O(2), I(0)),
    ];
    let mut rng = Rng::new(77);
    for n in [1024, 2 * FUSED_CHUNK + 77] {
        let x: Vec<f32> = mixed(&mut rng, n, -3.0, 3.0);
        for par in [Par::Seq, Par::Rayon] {
            let mut separate = vec![f32::NAN; n];
            let out = FusedOutputs {
                values: vec![(3, &mut separate[..])],
                sums: vec![],
            };
            let inputs = [FusedInput::Slice(&x[..]), FusedInput::Scalar(0.75)];
            crate::fused::fused_with(&ops, &inputs, out, n, par, code(false)).unwrap();
            let mut in_place = x.clone();
            let out = FusedOutputs {
                values: vec![(3, &mut in_place[..])],
                sums: vec![],
            };
            let inputs = [FusedInput::Output(0), FusedInput::Scalar(0.75)];
            crate::fused::fused_with(&ops, &inputs, out, n, par, code(true)).unwrap();
            assert!(same_slices(&in_place, &separate), "n={n}");
            let plan = crate::fused_native::plan(&ops, &inputs, &[3], &[], Some(3), usize::MAX);
            if crate::fused_native::available() {
                assert!(plan.expect("an exact pass gets code").whole);
            }
        }
    }
}

/// A pass structure gets its code once it has gone through `NATIVE_AFTER_ELEMENTS` positions on
/// the block kernels, over however many calls (a small pass run once never pays for it).
#[test]
fn fused_code_is_made_after_enough_work() {
    use crate::fused_native::{available, plan, NATIVE_AFTER_ELEMENTS};
    use FusedArg::{Input as I, Op as O};
    // A structure no other test uses.
    let ops = [
        FusedOp::Binary(BinaryOp::Min, I(0), I(1)),
        FusedOp::Binary(BinaryOp::Div, O(0), I(1)),
        FusedOp::Unary(UnaryOp::Abs, O(1)),
        FusedOp::Binary(BinaryOp::Sub, O(2), I(0)),
    ];
    let n = 4 * FUSED_BLOCK;
    let x: Vec<f32> = Rng::new(9).vec(n, -2.0, 2.0);
    let inputs = [FusedInput::Slice(&x[..]), FusedInput::Scalar(0.3f32)];
    let run = || {
        let mut out = vec![0.0f32; n];
        let values = vec![(3, &mut out[..])];
        let sums = vec![];
        fused(&ops, &inputs, FusedOutputs { values, sums }, n, Par::Seq).unwrap();
        out
    };
    let calls_needed = NATIVE_AFTER_ELEMENTS.div_ceil(n);
    let mut first = None;
    for call in 0..calls_needed {
        let has_code = plan(&ops, &inputs, &[3], &[], Some(3), 0).is_some();
        assert!(!has_code, "code before enough work (call {call})");
        let out = run();
        first.get_or_insert(out);
    }
    assert_eq!(
        plan(&ops, &inputs, &[3], &[], Some(3), 0).is_some(),
        available()
    );
    // And the code gives what the first call gave.
    assert!(same_slices(&run(), first.as_deref().unwrap()));
}

/// Two outputs of the pass's last op: both get its values, with generated code and on the
/// block kernels (both used to write only the first, straight into its buffer, and copy the
/// second from a scratch block nothing had filled).
#[test]
fn fused_two_outputs_of_the_last_op_are_both_written() {
    // Short passes too are split over the pool (the split's path is under test).
    crate::tuning::set_fused_par_min_work(0);
    use FusedArg::{Input as I, Op as O};
    let n = 4 * FUSED_CHUNK + 3 * FUSED_BLOCK + 5;
    let x: Vec<f32> = Rng::new(21).vec(n, -3.0, 3.0);
    let y: Vec<f32> = Rng::new(22).vec(n, -3.0, 3.0);
    let ops = [
        FusedOp::Binary(BinaryOp::Mul, I(0), I(1)),
        FusedOp::Binary(BinaryOp::Add, O(0), I(0)),
        FusedOp::Unary(UnaryOp::Abs, O(1)),
    ];
    let inputs = [FusedInput::Slice(&x[..]), FusedInput::Slice(&y[..])];
    let run = |native: bool| {
        let (mut a, mut b) = (vec![f32::NAN; n], vec![f32::NAN; n]);
        let values = vec![(2, &mut a[..]), (2, &mut b[..])];
        let out = FusedOutputs {
            values,
            sums: vec![],
        };
        crate::fused::fused_with(&ops, &inputs, out, n, Par::Rayon, code(native)).unwrap();
        (a, b)
    };
    let want: Vec<f32> = x.iter().zip(&y).map(|(&x, &y)| (x * y + x).abs()).collect();
    // The generated-code run does run code where the host has it.
    let planned = crate::fused_native::plan(&ops, &inputs, &[2, 2], &[], None, usize::MAX);
    assert_eq!(planned.is_some(), crate::fused_native::available());
    for native in [false, true] {
        let (a, b) = run(native);
        assert!(same_slices(&a, &want), "first output, native {native}");
        assert!(same_slices(&b, &want), "second output, native {native}");
    }
}

/// Steps whose offsets or extents wrap `usize` (or lie far outside the arena) are refused when
/// the program is built, whatever its native-code policy: none of them ever runs. Before, the
/// checks added and multiplied without overflow checks, so a release build let `out:
/// usize::MAX` through to generated code, which wrote before the arena.
#[test]
fn arena_program_rejects_wrapping_offsets() {
    use arena::{ArenaError, ArenaOpd as O, ArenaProgram, ArenaStep as S, Native};
    let big = usize::MAX;
    let near_i32 = i32::MAX as usize / 4 + 1;
    let bad: Vec<S> = vec![
        S::Unary1 {
            op: UnaryOp::Neg,
            x: 0,
            out: big,
        },
        S::Unary1 {
            op: UnaryOp::Neg,
            x: big,
            out: 1,
        },
        S::Unary1 {
            op: UnaryOp::Neg,
            x: 0,
            out: near_i32,
        },
        S::Binary1 {
            op: BinaryOp::Add,
            a: O::Splat(big),
            b: O::Imm(1.0),
            out: 1,
        },
        S::Binary {
            op: BinaryOp::Add,
            a: O::Slice(0),
            b: O::Imm(1.0),
            out: 4,
            n: big,
        },
        S::Binary {
            op: BinaryOp::Add,
            a: O::Slice(big - 2),
            b: O::Imm(1.0),
            out: 4,
            n: 4,
        },
        S::Binary {
            op: BinaryOp::Mul,
            a: O::Slice(0),
            b: O::Splat(big),
            out: 4,
            n: 2,
        },
        S::Unary {
            op: UnaryOp::Neg,
            x: big - 1,
            out: 4,
            n: 2,
        },
        S::Sum {
            x: 1,
            n: big,
            out: 0,
        },
        S::Outer {
            a: 0,
            rsa: 1,
            b: 0,
            csb: 1,
            m: 1 << 33,
            n: 1 << 33,
            out: 4,
        },
        S::Outer {
            a: 0,
            rsa: big,
            b: 0,
            csb: 1,
            m: 3,
            n: 1,
            out: 4,
        },
        S::Outer {
            a: 0,
            rsa: 1,
            b: 0,
            csb: near_i32,
            m: 1,
            n: 2,
            out: 4,
        },
        S::Dot {
            a: 0,
            sa: big / 2 + 1,
            b: 0,
            sb: 1,
            k: 3,
            out: 4,
        },
        S::Dot {
            a: 0,
            sa: 1,
            b: big,
            sb: 1,
            k: 1,
            out: 4,
        },
        S::Call { out: big, n: 2 },
        S::Call { out: 4, n: big - 3 },
    ];
    for step in bad {
        // A valid step first: the error names the bad one.
        let steps = [
            S::Unary1 {
                op: UnaryOp::Neg,
                x: 0,
                out: 1,
            },
            step.clone(),
        ];
        let calls = || -> Vec<arena::ArenaFn<f32>> {
            match step {
                S::Call { .. } => vec![Box::new(|_: &mut [f32]| unreachable!("never runs"))],
                _ => vec![],
            }
        };
        let want = Err(ArenaError::OutsideArena { step: 1 });
        for native in [Native::Never, Native::Now, Native::AfterRuns(1)] {
            let p = ArenaProgram::<f32>::with_native(&steps, calls(), 8, native);
            assert_eq!(p.map(|_| ()), want, "{step:?} {native:?}");
            let p = ArenaProgram::<f64>::with_native(&steps, vec![], 8, native);
            assert!(p.is_err(), "{step:?} {native:?}");
        }
        let p = ArenaProgram::<f32>::new(&steps, calls(), 8);
        assert_eq!(p.map(|_| ()), want, "{step:?}");
        // What the public accessors report overflows no further.
        let (out, n) = step.output();
        let reads = step.reads();
        assert!(
            out.checked_add(n).is_none_or(|e| e > 8)
                || reads
                    .iter()
                    .any(|&(a, l)| { a.checked_add(l).is_none_or(|e| e > 8) })
        );
    }
}

/// A program whose size puts offsets past what 32-bit displacements reach stays on its
/// closures, and a run on an arena shorter than the program is refused before any step runs.
#[test]
fn arena_program_past_i32_offsets_stays_on_closures_and_short_arenas_are_refused() {
    use arena::{ArenaError, ArenaProgram, ArenaStep as S, Native};
    let size = i32::MAX as usize / 4 + 8;
    let steps = [S::Unary1 {
        op: UnaryOp::Neg,
        x: 0,
        out: size - 1,
    }];
    let p = ArenaProgram::<f32>::with_native(&steps, vec![], size, Native::Now).unwrap();
    assert!(!p.is_native());
    let mut short = vec![1.0f32; 16];
    assert_eq!(
        p.run(&mut short),
        Err(ArenaError::ArenaTooShort { len: 16, size })
    );
    // A small program, native or not, on an arena one element short: nothing is written.
    let steps = [S::Unary1 {
        op: UnaryOp::Neg,
        x: 0,
        out: 3,
    }];
    for native in [Native::Never, Native::Now] {
        let p = ArenaProgram::<f64>::with_native(&steps, vec![], 4, native).unwrap();
        let mut a = [2.0f64; 3];
        assert_eq!(
            p.run(&mut a),
            Err(ArenaError::ArenaTooShort { len: 3, size: 4 })
        );
        assert_eq!(a, [2.0; 3]);
        let mut b = [2.0f64; 5];
        p.run(&mut b).unwrap();
        assert_eq!(b, [2.0, 2.0, 2.0, -2.0, 2.0]);
    }
}

/// Building errors that used to be panics: a step reading at or above its own output (its
/// closure would have panicked when run), closure counts that do not match the `Call` steps.
/// And an outer product without columns runs (its closure used to panic in
/// `chunks_exact_mut(0)`).
#[test]
fn arena_program_reports_build_errors_and_runs_empty_outer_products() {
    use arena::{ArenaError, ArenaOpd as O, ArenaProgram, ArenaStep as S, Native};
    let above = [S::Binary {
        op: BinaryOp::Add,
        a: O::Slice(4),
        b: O::Imm(1.0),
        out: 2,
        n: 2,
    }];
    let p = ArenaProgram::<f32>::with_native(&above, vec![], 8, Native::Now);
    assert_eq!(p.unwrap_err(), ArenaError::ReadsAtOutput { step: 0 });
    let call = [S::Call { out: 1, n: 1 }];
    let p = ArenaProgram::<f32>::new(&call, vec![], 2);
    assert_eq!(
        p.unwrap_err(),
        ArenaError::CallCount {
            calls: 0,
            call_steps: 1
        }
    );
    let two: Vec<arena::ArenaFn<f32>> = vec![Box::new(|_| ()), Box::new(|_| ())];
    let p = ArenaProgram::<f32>::new(&call, two, 2);
    assert_eq!(
        p.unwrap_err(),
        ArenaError::CallCount {
            calls: 2,
            call_steps: 1
        }
    );
    let empty = [
        S::Outer {
            a: 0,
            rsa: 1,
            b: 0,
            csb: 1,
            m: 3,
            n: 0,
            out: 3,
        },
        S::Unary1 {
            op: UnaryOp::Neg,
            x: 0,
            out: 3,
        },
    ];
    for native in [Native::Never, Native::Now] {
        let p = ArenaProgram::<f32>::with_native(&empty, vec![], 4, native).unwrap();
        let mut a = [1.0f32, 2.0, 3.0, 0.0];
        p.run(&mut a).unwrap();
        assert_eq!(a, [1.0, 2.0, 3.0, -1.0]);
    }
}

/// Passes with indices or lengths out of range are refused with a typed error before anything
/// is read or written, on the block kernels and with generated code, past the length that
/// makes code (they used to panic, mid-check).
#[test]
fn fused_rejects_bad_indices_and_lengths_without_writing() {
    // Short passes too are split over the pool (the split's path is under test).
    crate::tuning::set_fused_par_min_work(0);
    use crate::FusedError as E;
    use FusedArg::{Input as I, Op as O};
    let n = 4 * FUSED_BLOCK;
    let x = vec![1.5f32; n];
    let short = vec![1.5f32; n - 1];
    let good = [
        FusedOp::Binary(BinaryOp::Mul, I(0), I(1)),
        FusedOp::Binary(BinaryOp::Add, O(0), I(0)),
    ];
    let later = [
        FusedOp::Binary(BinaryOp::Mul, I(0), O(1)),
        FusedOp::Binary(BinaryOp::Add, O(0), I(0)),
    ];
    let missing_input = [
        FusedOp::Binary(BinaryOp::Mul, I(0), I(7)),
        FusedOp::Binary(BinaryOp::Add, O(0), I(0)),
    ];
    let itself = [
        FusedOp::Unary(UnaryOp::Neg, I(0)),
        FusedOp::Unary(UnaryOp::Neg, O(1)),
    ];
    let slices = |a: &'static str| -> Vec<FusedInput<'_, f32>> {
        match a {
            "short" => vec![FusedInput::Slice(&x), FusedInput::Slice(&short)],
            "alias" => vec![FusedInput::Slice(&x), FusedInput::Output(5)],
            _ => vec![FusedInput::Slice(&x), FusedInput::Scalar(2.0)],
        }
    };
    type Case<'a> = (&'a [FusedOp], &'static str, usize, usize, Vec<FusedArg>, E);
    let cases: Vec<Case<'_>> = vec![
        (&later, "", 1, n, vec![], E::BadOperand { op: 0 }),
        (&missing_input, "", 1, n, vec![], E::BadOperand { op: 0 }),
        (&itself, "", 1, n, vec![], E::BadOperand { op: 1 }),
        (
            &good,
            "short",
            1,
            n,
            vec![],
            E::InputLength {
                input: 1,
                len: n - 1,
            },
        ),
        (
            &good,
            "alias",
            1,
            n,
            vec![],
            E::BadAliasedOutput {
                input: 1,
                output: 5,
            },
        ),
        (&good, "", 2, n, vec![], E::BadOutputOp { output: 0, op: 2 }),
        (
            &good,
            "",
            usize::MAX,
            n,
            vec![],
            E::BadOutputOp {
                output: 0,
                op: usize::MAX,
            },
        ),
        (
            &good,
            "",
            1,
            n + 1,
            vec![],
            E::OutputLength {
                output: 0,
                len: n + 1,
            },
        ),
        (&good, "", 1, n, vec![O(0), O(2)], E::BadSum { sum: 1 }),
        (&good, "", 1, n, vec![I(usize::MAX)], E::BadSum { sum: 0 }),
    ];
    for (ops, inputs, op, len, sums, want) in cases {
        for native in [false, true] {
            let mut buf = vec![-7.0f32; len];
            let out = FusedOutputs {
                values: vec![(op, &mut buf[..])],
                sums: sums.clone(),
            };
            let r =
                crate::fused::fused_with(ops, &slices(inputs), out, n, Par::Rayon, code(native));
            assert_eq!(r, Err(want.clone()), "{ops:?} {inputs}");
            assert!(buf.iter().all(|&v| v == -7.0), "nothing written: {want:?}");
        }
    }
    // A pass over more positions than any slice could hold, of scalars only: its chunk
    // partials would overflow `usize`.
    let ops = [FusedOp::Copy(I(0)), FusedOp::Copy(O(0))];
    let sums = vec![O(0), O(1), I(0), O(1)];
    let r = fused(
        &ops,
        &[FusedInput::Scalar(1.0f32)],
        FusedOutputs {
            values: vec![],
            sums,
        },
        usize::MAX,
        Par::Seq,
    );
    assert_eq!(r, Err(E::TooLong));
}

/// Pass structure `j` of a family of distinct ones: the same two exact ops, with `j` unused
/// scalar inputs after the slice (part of the structure's key).
#[cfg(all(feature = "native", target_arch = "x86_64"))]
fn nth_structure(x: &[f32], j: usize) -> (Vec<FusedOp>, Vec<FusedInput<'_, f32>>) {
    use FusedArg::{Input as I, Op as O};
    let ops = vec![
        FusedOp::Binary(BinaryOp::Mul, I(0), I(0)),
        FusedOp::Binary(BinaryOp::Sub, O(0), I(0)),
    ];
    let mut inputs = vec![FusedInput::Slice(x)];
    inputs.extend((0..j).map(|_| FusedInput::Scalar(0.5f32)));
    (ops, inputs)
}

/// A process that has seen more small pass structures than the code cache holds still gets
/// code for a new large pass: only structures with code count toward the limit (before, every
/// structure seen counted, and the 1025th and later never got code: a 4M pass ran 2.5x
/// slower).
#[cfg(all(feature = "native", target_arch = "x86_64"))]
#[test]
fn fused_code_for_a_large_pass_after_many_small_structures() {
    use crate::fused_native::{available, plan};
    let x = vec![1.0f32; 8];
    let limit = crate::tuning::fused_code_cache_limit();
    // Offsets past the other tests' structures (they use at most a few inputs).
    for j in 1000..1000 + limit + 100 {
        let (ops, inputs) = nth_structure(&x, j);
        assert!(plan(&ops, &inputs, &[1], &[], Some(1), 1024).is_none());
    }
    let (ops, inputs) = nth_structure(&x, 1000 + limit + 100);
    let code = plan(&ops, &inputs, &[1], &[], Some(1), 4 << 20);
    assert_eq!(code.is_some(), available());
    // The same with a cache of its own (code is made, not run: this checks the cache on
    // hosts without AVX-512F too): 40 structures seen, a limit of 16, then a large pass.
    let cache = std::sync::Mutex::new(crate::fused_native::Cache::new());
    let look = |j: usize, n: usize| {
        let (ops, inputs) = nth_structure(&x, j);
        crate::fused_native::plan_in(&cache, &ops, &inputs, &[1], &[], Some(1), n, 1 << 20, 16)
    };
    for j in 0..40 {
        assert!(look(j, 1024).is_none());
    }
    assert!(look(40, 4 << 20).is_some());
}

/// The cache keeps at most its limit of structures with code, frees the least recently used
/// (its code is unmapped once no pass holds it), and keeps a code that a running pass holds
/// mapped until that pass lets go.
#[cfg(all(feature = "native", target_arch = "x86_64"))]
#[test]
fn fused_code_cache_is_bounded_and_frees_evicted_code() {
    use crate::fused_native::{live_plans, plan_in, Cache};
    use std::sync::{Arc, Mutex};
    let x = vec![1.0f32; 8];
    let cache = Mutex::new(Cache::new());
    let limit = 8;
    let make = |j: usize| {
        let (ops, inputs) = nth_structure(&x, j);
        plan_in(&cache, &ops, &inputs, &[1], &[], Some(1), 0, 0, limit)
    };
    let first = Arc::downgrade(&make(0).expect("code for structure 0"));
    let held = make(1).expect("code for structure 1");
    for j in 2..3 * limit {
        // Structure 2 is used again and again: the most recently used, it stays.
        assert!(make(2).is_some() && make(j).is_some());
        assert!(cache.lock().unwrap().made_len() <= limit);
    }
    assert_eq!(cache.lock().unwrap().made_len(), limit);
    // Structure 0 was evicted and nothing holds it: its code is freed.
    assert!(first.upgrade().is_none());
    // Structure 1 was evicted too, but this "running pass" holds it: still mapped and usable.
    assert!(!held.runs.is_empty());
    let held_weak = Arc::downgrade(&held);
    drop(held);
    assert!(held_weak.upgrade().is_none());
    // Structure 2 is still cached: the same code comes back.
    let again = make(2).unwrap();
    assert!(Arc::ptr_eq(&again, &make(2).unwrap()));
    // Every plan this cache made and evicted is gone: what is alive is at most what this
    // cache holds plus what other tests hold right now (well under the bound the global
    // cache allows them).
    drop(cache);
    assert!(live_plans() <= crate::tuning::fused_code_cache_limit() + 64);
}

/// Structures seen but below the threshold are remembered with their positions, and reach it
/// over several calls; the limit does not stop a structure from being counted.
#[cfg(all(feature = "native", target_arch = "x86_64"))]
#[test]
fn fused_code_cache_counts_positions_over_calls() {
    use crate::fused_native::{plan_in, Cache};
    use std::sync::Mutex;
    let x = vec![1.0f32; 8];
    let cache = Mutex::new(Cache::new());
    let (ops, inputs) = nth_structure(&x, 3);
    let call = |n| plan_in(&cache, &ops, &inputs, &[1], &[], Some(1), n, 5000, 2);
    assert!(call(2000).is_none());
    assert!(call(2000).is_none());
    assert!(call(1000).is_some());
    assert!(call(0).is_some());
    // A limit of zero keeps no code and makes none.
    let none = Mutex::new(Cache::new());
    assert!(plan_in(&none, &ops, &inputs, &[1], &[], Some(1), usize::MAX, 0, 0).is_none());
    assert_eq!(none.lock().unwrap().made_len(), 0);
}
