//! Unit tests: every kernel against its scalar reference, on both vector widths of each type.

use crate::elementwise::{binary_v, unary_v, Bcast};
use crate::reduce::{reduce_axes_v, reduce_v};
use crate::test_support::*;
use crate::vector::SimdVec;
use crate::*;

/// Runs `$f::<V>()` for every vector type: both widths of `wide`'s f32 and f64, and the
/// run-time dispatched x86 types this CPU has.
macro_rules! for_all_vecs {
    ($f:ident) => {{
        $f::<wide::f32x8>();
        $f::<wide::f32x16>();
        $f::<wide::f64x4>();
        $f::<wide::f64x8>();
        #[cfg(target_arch = "x86_64")]
        {
            if isa::Isa::detected() >= isa::Isa::Avx2 {
                $f::<crate::x86::F32x8>();
                $f::<crate::x86::F64x4>();
            }
            if isa::Isa::detected() >= isa::Isa::Avx512 {
                $f::<crate::x86::F32x16>();
                $f::<crate::x86::F64x8>();
            }
        }
    }};
}

/// Lengths around the vector widths, including 0.
const LENS: [usize; 14] = [0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 33, 63, 64, 259];

fn assert_same<T: Element>(got: &[T], want: &[T], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(same(g, w), "{what}: [{i}] got {g:?} want {w:?}");
    }
}

/// Largest ulp error allowed for the vector path of transcendental ops (see `accuracy`).
const MAX_ULP: u64 = 4;

/// Domain of random inputs per unary op.
fn unary_range(op: UnaryOp) -> (f64, f64) {
    match op {
        UnaryOp::Log | UnaryOp::Sqrt => (0.0, 100.0),
        UnaryOp::Exp => (-90.0, 90.0),
        UnaryOp::Log1p => (-0.999, 100.0),
        UnaryOp::Sin | UnaryOp::Cos => (-20.0, 20.0),
        _ => (-10.0, 10.0),
    }
}

fn unary_vs_reference<V: SimdVec>() {
    let mut rng = Rng::new(1);
    for op in UnaryOp::ALL {
        let (lo, hi) = unary_range(op);
        for n in LENS {
            let x = mixed::<V::Elem>(&mut rng, n, lo, hi);
            let mut want = vec![V::Elem::ZERO; n];
            reference::unary(op, &x, &mut want);
            let mut got = vec![V::Elem::ZERO; n];
            unary_v::<V>(op, &x, &mut got, true);
            let what = format!("{op:?} {} x{} n={n}", V::Elem::NAME, V::LANES);
            if op.is_transcendental() {
                assert_ulps(&got, &want, MAX_ULP, &what);
            } else {
                assert_same(&got, &want, &what);
            }
        }
    }
}

#[test]
fn unary_matches_reference() {
    for_all_vecs!(unary_vs_reference);
}

fn binary_vs_reference<V: SimdVec>() {
    let mut rng = Rng::new(2);
    for op in BinaryOp::ALL {
        let (lo, hi) = if op == BinaryOp::Pow {
            (-4.0, 6.0)
        } else {
            (-3.0, 3.0)
        };
        for n in LENS {
            let mut a = mixed::<V::Elem>(&mut rng, n, lo, hi);
            let b = mixed::<V::Elem>(&mut rng, n, lo, hi);
            // Integer exponents and equal operands exercise Pow's sign rules and Eq/Ge/Le.
            for i in (0..n).step_by(4) {
                a[i] = if op == BinaryOp::Pow {
                    V::Elem::from_f64(b[i].to_f64().round())
                } else {
                    b[i]
                };
            }
            let s = b.first().copied().unwrap_or(V::Elem::from_f64(1.5));
            let check = |got: &[V::Elem], want: &[V::Elem], kind: &str| {
                let what = format!("{op:?} {kind} {} x{} n={n}", V::Elem::NAME, V::LANES);
                if op.is_transcendental() {
                    assert_ulps(got, want, MAX_ULP, &what);
                } else {
                    assert_same(got, want, &what);
                }
            };
            let (mut got, mut want) = (vec![V::Elem::ZERO; n], vec![V::Elem::ZERO; n]);
            reference::binary(op, &a, &b, &mut want);
            binary_v::<V, _, _>(op, &a[..], &b[..], &mut got, true);
            check(&got, &want, "slice-slice");
            reference::binary_scalar(op, &b, s, &mut want);
            binary_v::<V, _, _>(op, &b[..], Bcast(s), &mut got, true);
            check(&got, &want, "slice-scalar");
            reference::scalar_binary(op, s, &a, &mut want);
            binary_v::<V, _, _>(op, Bcast(s), &a[..], &mut got, true);
            check(&got, &want, "scalar-slice");
        }
    }
}

#[test]
fn binary_matches_reference() {
    for_all_vecs!(binary_vs_reference);
}

/// Public entry points: short slices give exactly `std`'s results, long ones are close, and
/// `Par::Rayon` gives the same bits as `Par::Seq`.
fn public_elementwise<T: Element>() {
    let mut rng = Rng::new(3);
    for n in [SIMD_MIN_LEN - 1, SIMD_MIN_LEN, 2 * PAR_CHUNK + 5] {
        let x = mixed::<T>(&mut rng, n, -5.0, 5.0);
        let y = mixed::<T>(&mut rng, n, 0.0, 3.0);
        let exact = n < SIMD_MIN_LEN;
        let tol = if exact { 0 } else { MAX_ULP };
        let (mut seq, mut par, mut want) = (vec![T::ZERO; n], vec![T::ZERO; n], vec![T::ZERO; n]);
        for op in UnaryOp::ALL {
            unary(op, &x, &mut seq, Par::Seq);
            unary(op, &x, &mut par, Par::Rayon);
            reference::unary(op, &x, &mut want);
            assert_same(&par, &seq, &format!("unary {op:?} par n={n}"));
            assert_ulps(&seq, &want, tol, &format!("unary {op:?} n={n}"));
        }
        for op in BinaryOp::ALL {
            binary(op, &y, &x, &mut seq, Par::Seq);
            binary(op, &y, &x, &mut par, Par::Rayon);
            reference::binary(op, &y, &x, &mut want);
            assert_same(&par, &seq, &format!("binary {op:?} par n={n}"));
            assert_ulps(&seq, &want, tol, &format!("binary {op:?} n={n}"));
            binary_scalar(op, &y, T::from_f64(1.5), &mut par, Par::Rayon);
            reference::binary_scalar(op, &y, T::from_f64(1.5), &mut want);
            assert_ulps(&par, &want, tol, &format!("binary_scalar {op:?} n={n}"));
            scalar_binary(op, T::from_f64(0.75), &x, &mut par, Par::Rayon);
            reference::scalar_binary(op, T::from_f64(0.75), &x, &mut want);
            assert_ulps(&par, &want, tol, &format!("scalar_binary {op:?} n={n}"));
        }
    }
}

#[test]
fn public_elementwise_api() {
    public_elementwise::<f32>();
    public_elementwise::<f64>();
}

#[test]
#[should_panic(expected = "lengths differ")]
fn unary_length_mismatch_panics() {
    unary(UnaryOp::Neg, &[1.0f32; 3], &mut [0.0; 4], Par::Seq);
}

#[test]
#[should_panic(expected = "lengths differ")]
fn binary_length_mismatch_panics() {
    binary(
        BinaryOp::Add,
        &[1.0f64; 3],
        &[1.0; 2],
        &mut [0.0; 3],
        Par::Seq,
    );
}

#[test]
fn semantics_of_special_cases() {
    // log1p of a signed zero keeps its sign on the vector path (length >= SIMD_MIN_LEN) as
    // `std` does; tiny inputs come back unchanged.
    for t in [-0.0f64, 0.0, 1e-300, -1e-20] {
        let x = vec![t; 2 * SIMD_MIN_LEN];
        let mut o = vec![1.0f64; x.len()];
        unary(UnaryOp::Log1p, &x, &mut o, Par::Seq);
        assert!(
            o.iter().all(|v| v.to_bits() == t.ln_1p().to_bits()),
            "log1p({t:e})"
        );
        let x32 = vec![t as f32; 2 * SIMD_MIN_LEN];
        let mut o32 = vec![1.0f32; x32.len()];
        unary(UnaryOp::Log1p, &x32, &mut o32, Par::Seq);
        let want = (t as f32).ln_1p().to_bits();
        assert!(o32.iter().all(|v| v.to_bits() == want), "log1p({t:e}) f32");
    }
    let x = [f32::NAN, -0.0, 0.0, -2.5, 3.0];
    let mut o = [0.0f32; 5];
    unary(UnaryOp::Sign, &x, &mut o, Par::Seq);
    assert!(o[0].is_nan() && o[1].to_bits() == (-0.0f32).to_bits() && o[2].to_bits() == 0);
    assert_eq!(&o[3..], &[-1.0, 1.0]);
    unary(UnaryOp::Relu, &x, &mut o, Par::Seq);
    assert!(o[0].is_nan());
    assert_eq!(o[1].to_bits(), 0, "relu(-0) = +0");
    assert_eq!(&o[3..], &[0.0, 3.0]);
    let mut o = [0.0f64; 3];
    binary(
        BinaryOp::Max,
        &[f64::NAN, 1.0, 2.0],
        &[1.0, f64::NAN, 1.0],
        &mut o,
        Par::Seq,
    );
    assert!(o[0].is_nan() && o[1].is_nan() && o[2] == 2.0);
    binary(
        BinaryOp::Ne,
        &[f64::NAN, 1.0, 2.0],
        &[f64::NAN, 1.0, 1.0],
        &mut o,
        Par::Seq,
    );
    assert_eq!(o, [1.0, 0.0, 1.0]);
    binary(
        BinaryOp::Eq,
        &[f64::NAN, 1.0, 2.0],
        &[f64::NAN, 1.0, 1.0],
        &mut o,
        Par::Seq,
    );
    assert_eq!(o, [0.0, 1.0, 0.0]);
    // Sigmoid is stable at the extremes.
    let big: Vec<f32> = (0..128)
        .map(|i| if i % 2 == 0 { 200.0 } else { -200.0 })
        .collect();
    let mut s = vec![0.0f32; 128];
    unary(UnaryOp::Sigmoid, &big, &mut s, Par::Seq);
    assert!(
        s.iter().step_by(2).all(|&v| v == 1.0) && s.iter().skip(1).step_by(2).all(|&v| v == 0.0)
    );
}

/// Measures the max ulp error of the vector path (random inputs over typical domains, plus
/// arguments of sin/cos next to multiples of π/2) and checks it against the documented bounds.
/// Run with `--nocapture` to see the table.
fn accuracy_of<V: SimdVec>() {
    let mut rng = Rng::new(4);
    let n = 1 << 16;
    let worst = |what: &str, x: &[V::Elem], got: &[V::Elem], want: &[V::Elem], bound: u64| {
        let (i, e) = got
            .iter()
            .zip(want)
            .map(|(&g, &w)| ulps(g, w))
            .enumerate()
            .max_by_key(|p| p.1)
            .unwrap();
        eprintln!(
            "{:>4} x{:<2} {what:<28} max {e} ulp (at x = {:?})",
            V::Elem::NAME,
            V::LANES,
            x[i]
        );
        assert!(e <= bound, "{what}: {e} ulp > {bound}");
    };
    let (mut got, mut want) = (vec![V::Elem::ZERO; n], vec![V::Elem::ZERO; n]);
    let (exp_lo, exp_hi) = if V::Elem::NAME == "f32" {
        (-103.0, 89.0)
    } else {
        (-745.0, 710.0)
    };
    let trig_max = if V::Elem::NAME == "f32" { 1e4 } else { 1e8 };
    let cases: [(UnaryOp, f64, f64, u64); 11] = [
        (UnaryOp::Exp, -10.0, 10.0, 1),
        (UnaryOp::Exp, exp_lo, exp_hi, 1),
        (UnaryOp::Log, 0.0, 10.0, 1),
        (UnaryOp::Log, 0.0, 1e30, 1),
        (UnaryOp::Tanh, -1.0, 1.0, 2),
        (UnaryOp::Tanh, -20.0, 20.0, 2),
        (UnaryOp::Sigmoid, -20.0, 20.0, 2),
        (UnaryOp::Sin, -10.0, 10.0, 1),
        (UnaryOp::Cos, -10.0, 10.0, 1),
        (UnaryOp::Sin, -trig_max, trig_max, 1),
        (UnaryOp::Cos, -trig_max, trig_max, 1),
    ];
    for (op, lo, hi, bound) in cases {
        let x = rng.vec::<V::Elem>(n, lo, hi);
        unary_v::<V>(op, &x, &mut got, true);
        reference::unary(op, &x, &mut want);
        worst(&format!("{op:?} [{lo:e}, {hi:e}]"), &x, &got, &want, bound);
    }
    // Arguments within a few ulp of k·π/2 (where range reduction is hardest).
    let x: Vec<V::Elem> = (0..n)
        .map(|i| {
            let k = (i / 16 + 1) as f64 * if V::Elem::NAME == "f32" { 1.0 } else { 97.0 };
            let c = k * std::f64::consts::FRAC_PI_2;
            let d = (i % 16) as i64 - 8;
            if V::Elem::NAME == "f32" {
                V::Elem::from_f64(f32::from_bits(((c as f32).to_bits() as i64 + d) as u32) as f64)
            } else {
                V::Elem::from_f64(f64::from_bits((c.to_bits() as i64 + d) as u64))
            }
        })
        .collect();
    for op in [UnaryOp::Sin, UnaryOp::Cos] {
        unary_v::<V>(op, &x, &mut got, true);
        reference::unary(op, &x, &mut want);
        worst(&format!("{op:?} near k*pi/2"), &x, &got, &want, 1);
    }
    // Pow: random bases and exponents, large exponents with normal results, and integer
    // exponents of negative bases.
    let a = rng.vec::<V::Elem>(n, 1e-3, 1e3);
    let b = rng.vec::<V::Elem>(n, -12.0, 12.0);
    binary_v::<V, _, _>(BinaryOp::Pow, &a[..], &b[..], &mut got, true);
    reference::binary(BinaryOp::Pow, &a, &b, &mut want);
    worst("Pow a in [1e-3,1e3], |b|<12", &a, &got, &want, 2);
    let b = rng.vec::<V::Elem>(n, -32.0, 32.0);
    let a: Vec<V::Elem> = b
        .iter()
        .map(|&e| V::Elem::from_f64((rng.range(-80.0, 80.0) / e.to_f64()).exp().min(1e30)))
        .collect();
    binary_v::<V, _, _>(BinaryOp::Pow, &a[..], &b[..], &mut got, true);
    reference::binary(BinaryOp::Pow, &a, &b, &mut want);
    worst("Pow |b|<32, |b ln a|<80", &a, &got, &want, 3);
    let a = rng.vec::<V::Elem>(n, -10.0, 10.0);
    let b: Vec<V::Elem> = rng
        .vec::<V::Elem>(n, -8.0, 8.0)
        .into_iter()
        .map(|v| V::Elem::from_f64(v.to_f64().round()))
        .collect();
    binary_v::<V, _, _>(BinaryOp::Pow, &a[..], &b[..], &mut got, true);
    reference::binary(BinaryOp::Pow, &a, &b, &mut want);
    worst("Pow a in [-10,10], b integer", &a, &got, &want, 2);
}

#[test]
fn accuracy() {
    for_all_vecs!(accuracy_of);
}

/// Specials (NaN, ±inf, ±0, subnormals, extremes) go through the `std` fallback or are handled
/// exactly by the vector code.
fn specials_of<V: SimdVec>() {
    let sp = specials::<V::Elem>();
    let x: Vec<V::Elem> = sp
        .iter()
        .cycle()
        .take(sp.len() * V::LANES)
        .copied()
        .collect();
    let mut got = vec![V::Elem::ZERO; x.len()];
    let mut want = vec![V::Elem::ZERO; x.len()];
    for op in UnaryOp::ALL {
        unary_v::<V>(op, &x, &mut got, true);
        reference::unary(op, &x, &mut want);
        assert_ulps(
            &got,
            &want,
            MAX_ULP,
            &format!("{op:?} specials {}", V::Elem::NAME),
        );
    }
    let y: Vec<V::Elem> = (0..x.len())
        .map(|i| sp[(i / sp.len()) % sp.len()])
        .collect();
    binary_v::<V, _, _>(BinaryOp::Pow, &x[..], &y[..], &mut got, true);
    reference::binary(BinaryOp::Pow, &x, &y, &mut want);
    assert_ulps(&got, &want, MAX_ULP, "Pow specials");
}

#[test]
fn special_values() {
    for_all_vecs!(specials_of);
}

/// A random strided view over a buffer for `shape`: broadcast dims (stride 0), permuted dims,
/// or padded rows. Returns (buffer length, strides).
fn random_view(rng: &mut Rng, shape: &[usize]) -> (usize, Vec<usize>) {
    let r = shape.len();
    // Physical dims: each dim is either broadcast or stored, in a random order, with padding.
    let bcast: Vec<bool> = (0..r).map(|_| rng.below(4) == 0).collect();
    let mut order: Vec<usize> = (0..r).collect();
    for i in (1..r).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut strides = vec![0; r];
    let mut s = 1;
    for &d in order.iter().rev() {
        if !bcast[d] {
            strides[d] = s;
            s *= shape[d] + if rng.below(3) == 0 { 1 } else { 0 };
        }
    }
    let len = shape
        .iter()
        .zip(&strides)
        .map(|(&d, &st)| (d.max(1) - 1) * st)
        .sum::<usize>()
        + 1;
    (len, strides)
}

/// A random shape of rank 0..=4 with at most 20k elements (sometimes with a zero dim).
fn random_shape(rng: &mut Rng) -> Vec<usize> {
    let r = rng.below(5);
    let dims = [1, 1, 2, 3, 5, 8, 17, 33];
    let mut s: Vec<usize> = loop {
        let s: Vec<usize> = (0..r).map(|_| dims[rng.below(dims.len())]).collect();
        if s.iter().product::<usize>() <= 20_000 {
            break s;
        }
    };
    if rng.below(20) == 0 && r > 0 {
        s[rng.below(r)] = 0;
    }
    s
}

fn strided_vs_reference<T: Element>() {
    let mut rng = Rng::new(5);
    let mut shapes: Vec<Vec<usize>> = (0..150).map(|_| random_shape(&mut rng)).collect();
    // Long rows with non-unit strides (blocked gathering) and a broadcast scalar case.
    shapes.extend([vec![3, 700], vec![700, 3], vec![1000], vec![2, 1, 300]]);
    for shape in &shapes {
        let n: usize = shape.iter().product();
        let (la, sa) = random_view(&mut rng, shape);
        let (lb, sb) = random_view(&mut rng, shape);
        let (lc, sc) = random_view(&mut rng, shape);
        let a = mixed::<T>(&mut rng, la, 0.1, 3.0);
        let b = mixed::<T>(&mut rng, lb, -3.0, 3.0);
        let c: Vec<T> = (0..lc)
            .map(|i| T::from_f64((i % 3) as f64 - if i % 7 == 0 { f64::NAN } else { 0.0 }))
            .collect();
        let (mut got, mut want) = (vec![T::ZERO; n], vec![T::ZERO; n]);
        for op in BinaryOp::ALL {
            binary_strided(op, &a, &sa, &b, &sb, shape, &mut got);
            reference::binary_strided(op, &a, &sa, &b, &sb, shape, &mut want);
            let what = format!("{op:?} shape {shape:?} strides {sa:?} {sb:?}");
            if op.is_transcendental() {
                assert_ulps(&got, &want, MAX_ULP, &what);
            } else {
                assert_same(&got, &want, &what);
            }
        }
        select_strided(&c, &sc, &a, &sa, &b, &sb, shape, &mut got);
        reference::select_strided(&c, &sc, &a, &sa, &b, &sb, shape, &mut want);
        assert_same(&got, &want, &format!("select shape {shape:?}"));
        let off = rng.below(3);
        let x = mixed::<T>(&mut rng, la + off, -3.0, 3.0);
        gather_strided(&x, &sa, off, shape, &mut got);
        reference::gather_strided(&x, &sa, off, shape, &mut want);
        assert_same(
            &got,
            &want,
            &format!("gather shape {shape:?} strides {sa:?}"),
        );
    }
}

#[test]
fn strided_matches_reference() {
    strided_vs_reference::<f32>();
    strided_vs_reference::<f64>();
}

/// Views that are stacks of matrix transposes take the tiled copy: 2-D transposes of sizes
/// around the tile (16), padded rows, a batch of transposes, a rotation of a 3-axis array
/// (axis 0 to the end, as `jacfwd` lays out its columns) and views with an offset; each equals
/// the reference element by element.
fn transposes_vs_reference<T: Element>() {
    let mut rng = Rng::new(33);
    // (out_shape, strides, elements of x needed past the offset)
    let mut cases: Vec<(Vec<usize>, Vec<usize>, usize)> = Vec::new();
    for (r, c) in [(16, 16), (17, 40), (64, 16), (100, 37), (256, 33)] {
        cases.push((vec![r, c], vec![1, r], r * c));
        cases.push((vec![r, c], vec![1, r + 5], (r + 5) * c));
    }
    cases.push((vec![3, 20, 18], vec![360, 1, 20], 3 * 360));
    // x of shape [n=24, 5, 7] read as [5, 7, 24]: strides [7, 1, 35].
    cases.push((vec![5, 7, 24], vec![7, 1, 35], 24 * 35));
    // Too small or not a transpose: the general path.
    cases.push((vec![8, 30], vec![1, 8], 240));
    cases.push((vec![20, 20], vec![20, 1], 400));
    for (shape, strides, len) in cases {
        let n: usize = shape.iter().product();
        let off = rng.below(4);
        let x = mixed::<T>(&mut rng, len + off, -3.0, 3.0);
        let (mut got, mut want) = (vec![T::ZERO; n], vec![T::ZERO; n]);
        gather_strided(&x, &strides, off, &shape, &mut got);
        reference::gather_strided(&x, &strides, off, &shape, &mut want);
        assert_same(
            &got,
            &want,
            &format!("transpose {shape:?} strides {strides:?}"),
        );
    }
}

#[test]
fn transposed_views_match_reference() {
    transposes_vs_reference::<f32>();
    transposes_vs_reference::<f64>();
}

#[test]
fn strided_rank0_and_empty() {
    let mut o = [0.0f32];
    binary_strided(BinaryOp::Sub, &[5.0], &[], &[2.0], &[], &[], &mut o);
    assert_eq!(o, [3.0]);
    gather_strided(&[1.0, 7.0], &[], 1, &[], &mut o);
    assert_eq!(o, [7.0]);
    let mut e: [f64; 0] = [];
    binary_strided(BinaryOp::Add, &[], &[1, 1], &[], &[0, 1], &[0, 4], &mut e);
    select_strided(&[], &[1], &[], &[1], &[], &[1], &[0], &mut e);
    gather_strided(&[], &[3], 0, &[0], &mut e);
}

#[test]
#[should_panic(expected = "exceeds buffer")]
fn strided_out_of_bounds_panics() {
    let mut o = [0.0f32; 6];
    binary_strided(
        BinaryOp::Add,
        &[1.0; 5],
        &[3, 1],
        &[1.0; 6],
        &[3, 1],
        &[2, 3],
        &mut o,
    );
}

#[test]
#[should_panic(expected = "exceeds buffer")]
fn gather_out_of_bounds_panics() {
    let mut o = [0.0f64; 4];
    gather_strided(&[1.0; 4], &[1], 1, &[4], &mut o);
}

/// Sums are compared with a tolerance scaled by the sum of magnitudes; Max/Min exactly.
fn assert_reduced<T: Element>(op: ReduceOp, got: T, want: T, scale: f64, what: &str) {
    if op == ReduceOp::Sum && want.to_f64().is_finite() && scale.is_finite() && got != want {
        let tol = scale * T::EPSILON.to_f64() * 8.0;
        assert!(
            (got.to_f64() - want.to_f64()).abs() <= tol,
            "{what}: got {got:?} want {want:?}"
        );
    } else {
        assert!(
            (got.is_nan() && want.is_nan()) || got == want,
            "{what}: got {got:?} want {want:?}"
        );
    }
}

/// `reduce_v`'s sum in its documented order, one scalar at a time (the generated code of `exec`
/// follows the same model): `4L` blocks to four accumulators of `L` lanes in turn, single vectors
/// to the first, the tail to the first's leading lanes, `(a0 + a1) + (a2 + a3)`, the lanes
/// halved pairwise, and `0 + ` the last lane; below one vector, in order from zero.
fn sum_model<T: Element>(x: &[T], l: usize) -> T {
    if x.len() < l {
        return x.iter().fold(T::ZERO, |s, &e| s + e);
    }
    let mut acc = vec![vec![T::ZERO; l]; 4];
    let big = x.len() - x.len() % (4 * l);
    for (c, block) in x[..big].chunks(l).enumerate() {
        for (a, &e) in acc[c % 4].iter_mut().zip(block) {
            *a += e;
        }
    }
    for block in x[big..].chunks(l) {
        for (a, &e) in acc[0].iter_mut().zip(block) {
            *a += e;
        }
    }
    let mut buf: Vec<T> = (0..l)
        .map(|i| (acc[0][i] + acc[1][i]) + (acc[2][i] + acc[3][i]))
        .collect();
    let mut w = l / 2;
    while w > 0 {
        for i in 0..w {
            buf[i] = buf[i] + buf[i + w];
        }
        w /= 2;
    }
    T::ZERO + buf[0]
}

fn sum_order_is_the_model<V: SimdVec>() {
    let mut rng = Rng::new(61);
    for n in (0..6 * V::LANES + 3).chain([1000, 4099]) {
        let x = rng.vec::<V::Elem>(n, -10.0, 10.0);
        let (got, want) = (reduce_v::<V>(ReduceOp::Sum, &x), sum_model(&x, V::LANES));
        let what = format!("{} x{} n={n}", V::Elem::NAME, V::LANES);
        assert!(same(got, want), "{what}: got {got:?} want {want:?}");
    }
}

/// The summation orders other paths reproduce bit for bit are the documented ones: a change to
/// a kernel's order (the tail's lanes, say) fails here, not only where a path disagrees.
#[test]
fn sums_and_dots_follow_their_documented_order() {
    for_all_vecs!(sum_order_is_the_model);
    fn dot_model<T: Element>(x: &[T], y: &[T]) -> T {
        let mut acc = [T::ZERO; 8];
        for (p, (&a, &b)) in x.iter().zip(y).enumerate() {
            acc[p % 8] += a * b;
        }
        ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
    }
    fn dots<T: Element>() {
        let mut rng = Rng::new(62);
        for k in 0..40 {
            let (x, y) = (rng.vec::<T>(k, -1.0, 1.0), rng.vec::<T>(k, -1.0, 1.0));
            let (got, want) = (dot(k, &x, 1, &y, 1), dot_model(&x, &y));
            assert!(same(got, want), "{} k={k}: {got:?} vs {want:?}", T::NAME);
        }
    }
    dots::<f32>();
    dots::<f64>();
}

fn reduce_vs_reference<V: SimdVec>() {
    let mut rng = Rng::new(6);
    for n in LENS.into_iter().chain([1000, 4099]) {
        let clean = rng.vec::<V::Elem>(n, -10.0, 10.0);
        let dirty = mixed::<V::Elem>(&mut rng, n, -10.0, 10.0);
        for x in [&clean, &dirty] {
            let scale: f64 = x.iter().map(|v| v.to_f64().abs()).sum();
            for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
                let what = format!("{op:?} {} x{} n={n}", V::Elem::NAME, V::LANES);
                assert_reduced(
                    op,
                    reduce_v::<V>(op, x),
                    reference::reduce_all(op, x),
                    scale,
                    &what,
                );
            }
        }
    }
    for _ in 0..300 {
        let shape = random_shape(&mut rng);
        let r = shape.len();
        let axes: Vec<usize> = (0..r).filter(|_| rng.below(2) == 0).collect();
        let n: usize = shape.iter().product();
        let m: usize = (0..r)
            .filter(|d| !axes.contains(d))
            .map(|d| shape[d])
            .product();
        let x = if rng.below(3) == 0 {
            mixed::<V::Elem>(&mut rng, n, -5.0, 5.0)
        } else {
            rng.vec(n, -5.0, 5.0)
        };
        let abs: Vec<f64> = x.iter().map(|v| v.to_f64().abs()).collect();
        let mut scale = vec![0.0; m];
        reference::reduce_axes(ReduceOp::Sum, &abs, &shape, &axes, &mut scale);
        for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
            let (mut got, mut want) = (vec![V::Elem::ZERO; m], vec![V::Elem::ZERO; m]);
            reduce_axes_v::<V>(op, &x, &shape, &axes, &mut got);
            reference::reduce_axes(op, &x, &shape, &axes, &mut want);
            for ((g, w), s) in got.iter().zip(&want).zip(&scale) {
                assert_reduced(
                    op,
                    *g,
                    *w,
                    *s,
                    &format!("{op:?} shape {shape:?} axes {axes:?}"),
                );
            }
        }
    }
}

#[test]
fn reductions_match_reference() {
    for_all_vecs!(reduce_vs_reference);
}

#[test]
fn reduce_identities_and_exact_leading_sum() {
    assert_eq!(reduce_all::<f64>(ReduceOp::Sum, &[]), 0.0);
    assert_eq!(reduce_all::<f64>(ReduceOp::Max, &[]), f64::NEG_INFINITY);
    assert_eq!(reduce_all::<f32>(ReduceOp::Min, &[]), f32::INFINITY);
    assert!(reduce_all(ReduceOp::Max, &[1.0f32, f32::NAN, 3.0]).is_nan());
    // Reducing an empty axis gives the identity; a kept empty axis gives an empty output.
    let mut o = [9.0f32; 3];
    reduce_axes(ReduceOp::Max, &[], &[0, 3], &[0], &mut o);
    assert_eq!(o, [f32::NEG_INFINITY; 3]);
    reduce_axes::<f32>(ReduceOp::Sum, &[], &[3, 0], &[1], &mut o);
    assert_eq!(o, [0.0; 3]);
    reduce_axes::<f32>(ReduceOp::Sum, &[], &[0, 3], &[1], &mut []);
    // Leading-axis sums accumulate rows in order: bit-identical to the reference.
    let mut rng = Rng::new(7);
    let x = rng.vec::<f32>(37 * 53, -1.0, 1.0);
    let (mut got, mut want) = (vec![0.0; 53], vec![0.0; 53]);
    reduce_axes(ReduceOp::Sum, &x, &[37, 53], &[0], &mut got);
    reference::reduce_axes(ReduceOp::Sum, &x, &[37, 53], &[0], &mut want);
    assert_same(&got, &want, "leading sum");
}

#[test]
#[should_panic(expected = "sorted")]
fn reduce_unsorted_axes_panics() {
    reduce_axes(ReduceOp::Sum, &[0.0f32; 6], &[2, 3], &[1, 0], &mut [0.0; 1]);
}

fn gemm_case<T: Element>(rng: &mut Rng, m: usize, k: usize, n: usize, par: Par, layouts: usize) {
    // Layouts: 0 = row-major, 1 = column-major (transposed), 2 = padded row-major.
    let layout = |rows: usize, cols: usize, kind: usize| match kind {
        0 => (cols, 1, rows * cols),
        1 => (1, rows, rows * cols),
        _ => (cols + 3, 1, rows * (cols + 3)),
    };
    for &(la, lb, lc) in [(0, 0, 0), (1, 0, 0), (0, 1, 1), (1, 1, 2), (2, 2, 1)]
        .iter()
        .take(layouts)
    {
        let (rsa, csa, na) = layout(m, k, la);
        let (rsb, csb, nb) = layout(k, n, lb);
        let (rsc, csc, nc) = layout(m, n, lc);
        let a = rng.vec::<T>(na.max(1), -1.0, 1.0);
        let b = rng.vec::<T>(nb.max(1), -1.0, 1.0);
        for (alpha, beta) in [(1.0, 0.0), (0.5, -2.0), (-1.5, 1.0)] {
            let (alpha, beta) = (T::from_f64(alpha), T::from_f64(beta));
            let mut c: Vec<T> = rng.vec(nc, -1.0, 1.0);
            if beta == T::ZERO {
                c.iter_mut().step_by(2).for_each(|v| *v = T::NAN); // must not propagate
            }
            let mut want = c.clone();
            gemm(
                m, k, n, alpha, &a, rsa, csa, &b, rsb, csb, beta, &mut c, rsc, csc, par,
            );
            reference::gemm(
                m, k, n, alpha, &a, rsa, csa, &b, rsb, csb, beta, &mut want, rsc, csc,
            );
            let tol = T::EPSILON.to_f64() * (4.0 * k as f64 + 8.0);
            for (i, (g, w)) in c.iter().zip(&want).enumerate() {
                let (g, w) = (g.to_f64(), w.to_f64());
                assert!(
                    (g - w).abs() <= tol || (g.is_nan() && w.is_nan()),
                    "gemm {} {m}x{k}x{n} layouts {la}{lb}{lc} alpha {alpha:?} beta {beta:?} [{i}]: got {g} want {w}",
                    T::NAME
                );
            }
        }
    }
}

fn gemm_all<T: Element>() {
    let mut rng = Rng::new(8);
    for (m, k, n) in [
        (0, 3, 4),
        (3, 0, 4),
        (3, 4, 0),
        (1, 1, 1),
        (2, 3, 5),
        (7, 1, 9),
        // Thin products (vector-matrix, matrix-vector, outer) take the direct path.
        (1, 37, 19),
        (1, 1, 9),
        (23, 41, 1),
        (13, 1, 11),
        (1, 9, 1),
        (17, 33, 5),
        (64, 64, 64),
        (5, 100, 3),
    ] {
        gemm_case::<T>(&mut rng, m, k, n, Par::Seq, 5);
    }
    // Large enough for the rayon split (m * n * k > 2^21), with m not a multiple of the blocks.
    gemm_case::<T>(&mut rng, 255, 90, 97, Par::Rayon, 2);
    // Through the dispatch to the packed kernel (transposed layouts, from 2^22 multiply-adds)
    // and the `gemm` crate: k past one k block (400), an edge tile each way, and above the
    // rayon split's threshold; and a product between the `matrixmultiply` and packed sizes.
    gemm_case::<T>(&mut rng, 100, 450, 95, Par::Rayon, 5);
    gemm_case::<T>(&mut rng, 30, 40, 50, Par::Seq, 5);
}

/// An empty product (n = 0) with row strides on empty B and C: nothing is written and nothing
/// panics (the rows' offsets are past the empty slices).
#[test]
fn gemm_select_rows_with_no_columns_writes_nothing() {
    let a = [0.0f32, 3.0, 1.0, 0.0];
    let (b, mut c): ([f32; 0], [f32; 0]) = ([], []);
    gemm_select_rows(
        2,
        2,
        0,
        1.0,
        &a,
        2,
        1,
        &b,
        5,
        1,
        0.0,
        &mut c,
        7,
        1,
        &[Some(1), Some(0)],
    );
    gemm_select_cols(2, 2, 0, 1.0, &a, 2, 1, &b, 5, 1, 0.0, &mut c, 7, 1, &[]);
}

#[test]
fn gemm_select_kernels_match_reference() {
    // Basis chunks (one nonzero per column of B or per row of A, scaled, some empty) as the
    // select kernels take them; compare with the reference on several layouts.
    for (m, k, n) in [(70, 64, 80), (64, 90, 64)] {
        for &(tb, scale_rows) in &[(false, false), (true, true)] {
            let mut rng = Rng::new(3);
            let a = rng.vec::<f64>(m * k, -1.0, 1.0);
            let mut b = vec![0.0f64; k * n];
            let rows: Vec<Option<usize>> =
                (0..n).map(|j| (j % 7 != 3).then_some(j * 5 % k)).collect();
            for j in 0..n {
                if j % 7 != 3 {
                    b[(j * 5 % k) * n + j] = if scale_rows { 0.5 + j as f64 } else { 1.0 };
                }
            }
            let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
            let bb: Vec<f64> = if tb {
                // Store transposed so that reading with (1, k) strides gives the same matrix.
                let mut t = vec![0.0; k * n];
                for p in 0..k {
                    for j in 0..n {
                        t[j * k + p] = b[p * n + j];
                    }
                }
                t
            } else {
                b.clone()
            };
            let mut c = rng.vec::<f64>(m * n, -1.0, 1.0);
            let mut want = c.clone();
            gemm_select_cols(
                m, k, n, 2.0, &a, k, 1, &bb, rsb, csb, 0.5, &mut c, n, 1, &rows,
            );
            reference::gemm(m, k, n, 2.0, &a, k, 1, &bb, rsb, csb, 0.5, &mut want, n, 1);
            for (g, w) in c.iter().zip(&want) {
                assert!((g - w).abs() < 1e-12, "{g} vs {w}");
            }
            // Selection on the left: A^T with one nonzero per row.
            let mut c2 = vec![0.0f64; n * m];
            let mut want2 = c2.clone();
            gemm_select_rows(
                n, k, m, 1.0, &bb, csb, rsb, &a, 1, k, 0.0, &mut c2, m, 1, &rows,
            );
            reference::gemm(n, k, m, 1.0, &bb, csb, rsb, &a, 1, k, 0.0, &mut want2, m, 1);
            for (g, w) in c2.iter().zip(&want2) {
                assert!((g - w).abs() < 1e-12, "{g} vs {w}");
            }
        }
    }
}

#[test]
fn gemm_matches_reference() {
    gemm_all::<f32>();
    gemm_all::<f64>();
}

/// A matrix-vector product gives each row's [`dot`] bit for bit (rows four at a time and the
/// rest one by one, padded rows, every remainder of the eight accumulators): the arena's
/// generated code computes short products in `dot`'s order and must agree with it.
fn matvec_rows_equal_dot<T: Element>() {
    let mut rng = Rng::new(21);
    for (m, k) in [
        (4, 8),
        (5, 9),
        (7, 1),
        (8, 7),
        (13, 64),
        (16, 257),
        (9, 100),
    ] {
        for pad in [0, 3] {
            let rsa = k + pad;
            let a = rng.vec::<T>(m * rsa, -1.0, 1.0);
            let b = rng.vec::<T>(k, -1.0, 1.0);
            for (alpha, beta) in [(1.0, 0.0), (-0.5, 2.0)] {
                let (alpha, beta) = (T::from_f64(alpha), T::from_f64(beta));
                let c0 = rng.vec::<T>(m, -1.0, 1.0);
                let mut c = c0.clone();
                gemm(
                    m,
                    k,
                    1,
                    alpha,
                    &a,
                    rsa,
                    1,
                    &b,
                    1,
                    1,
                    beta,
                    &mut c,
                    1,
                    1,
                    Par::Seq,
                );
                for i in 0..m {
                    let v = alpha * dot(k, &a[i * rsa..], 1, &b, 1);
                    let want = if beta == T::ZERO { v } else { beta * c0[i] + v };
                    assert_eq!(
                        c[i].to_f64().to_bits(),
                        want.to_f64().to_bits(),
                        "{} {m}x{k} pad {pad} row {i}",
                        T::NAME
                    );
                }
            }
        }
    }
}

#[test]
fn matvec_matches_dot_bit_for_bit() {
    matvec_rows_equal_dot::<f32>();
    matvec_rows_equal_dot::<f64>();
}

#[test]
#[should_panic(expected = "exceeds its buffer")]
fn gemm_out_of_bounds_panics() {
    let mut c = [0.0f32; 4];
    gemm(
        2,
        2,
        2,
        1.0,
        &[1.0; 3],
        2,
        1,
        &[1.0; 4],
        2,
        1,
        0.0,
        &mut c,
        2,
        1,
        Par::Seq,
    );
}

#[test]
#[should_panic(expected = "alias")]
fn gemm_aliasing_c_panics() {
    let mut c = [0.0f64; 4];
    gemm(
        2,
        2,
        2,
        1.0,
        &[1.0; 4],
        2,
        1,
        &[1.0; 4],
        2,
        1,
        0.0,
        &mut c,
        1,
        1,
        Par::Seq,
    );
}

/// Every op through the dispatcher's `#[target_feature]` functions, on each ISA this CPU has,
/// against the scalar reference: the instantiations users' builds run.
fn dispatched_vs_reference<T: Element>() {
    use crate::isa::{with_vec_on, Isa, VecFn};
    struct Un<'a, T>(UnaryOp, &'a [T], &'a mut [T]);
    impl<T: Element> VecFn<T> for Un<'_, T> {
        type Output = ();
        #[inline(always)]
        fn call<V: SimdVec<Elem = T>>(self) {
            unary_v::<V>(self.0, self.1, self.2, true)
        }
    }
    struct Bin<'a, T>(BinaryOp, &'a [T], &'a [T], &'a mut [T]);
    impl<T: Element> VecFn<T> for Bin<'_, T> {
        type Output = ();
        #[inline(always)]
        fn call<V: SimdVec<Elem = T>>(self) {
            binary_v::<V, _, _>(self.0, self.1, self.2, self.3, true)
        }
    }
    struct Red<'a, T>(ReduceOp, &'a [T]);
    impl<T: Element> VecFn<T> for Red<'_, T> {
        type Output = T;
        #[inline(always)]
        fn call<V: SimdVec<Elem = T>>(self) -> T {
            reduce_v::<V>(self.0, self.1)
        }
    }
    let mut rng = Rng::new(11);
    for which in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
        if which > Isa::detected() {
            continue;
        }
        for op in UnaryOp::ALL {
            let (lo, hi) = unary_range(op);
            let x = mixed::<T>(&mut rng, 259, lo, hi);
            let (mut got, mut want) = (vec![T::ZERO; 259], vec![T::ZERO; 259]);
            reference::unary(op, &x, &mut want);
            with_vec_on(which, Un(op, &x, &mut got)).expect("the CPU has it");
            let what = format!("{op:?} {} on {which:?}", T::NAME);
            if op.is_transcendental() {
                assert_ulps(&got, &want, MAX_ULP, &what);
            } else {
                assert_same(&got, &want, &what);
            }
        }
        for op in BinaryOp::ALL {
            let a = mixed::<T>(&mut rng, 259, 0.1, 3.0);
            let b = mixed::<T>(&mut rng, 259, -3.0, 3.0);
            let (mut got, mut want) = (vec![T::ZERO; 259], vec![T::ZERO; 259]);
            reference::binary(op, &a, &b, &mut want);
            with_vec_on(which, Bin(op, &a, &b, &mut got)).expect("the CPU has it");
            let what = format!("{op:?} {} on {which:?}", T::NAME);
            if op.is_transcendental() {
                assert_ulps(&got, &want, MAX_ULP, &what);
            } else {
                assert_same(&got, &want, &what);
            }
        }
        let x = rng.vec::<T>(1000, -1.0, 1.0);
        let want = reference::reduce_all(ReduceOp::Max, &x);
        assert_eq!(with_vec_on(which, Red(ReduceOp::Max, &x)), Some(want));
    }
}

#[test]
fn dispatched_paths_match_reference() {
    dispatched_vs_reference::<f32>();
    dispatched_vs_reference::<f64>();
}

/// In a build for AVX-512 and FMA, the run-time AVX-512 types give the same bits as `wide`'s
/// (so a portable build computes what a native one does), transcendental ops included.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx512f",
    target_feature = "fma"
))]
#[test]
fn avx512_types_match_native_wide_bit_for_bit() {
    fn check<W: SimdVec, X: SimdVec<Elem = W::Elem>>() {
        let mut rng = Rng::new(3);
        for op in UnaryOp::ALL {
            let (lo, hi) = unary_range(op);
            let x = mixed::<W::Elem>(&mut rng, 515, lo, hi);
            let (mut a, mut b) = (vec![W::Elem::ZERO; 515], vec![W::Elem::ZERO; 515]);
            unary_v::<W>(op, &x, &mut a, true);
            unary_v::<X>(op, &x, &mut b, true);
            assert_same(&b, &a, &format!("{op:?} {}", W::Elem::NAME));
        }
        let x = mixed::<W::Elem>(&mut rng, 515, -3.0, 3.0);
        let y = mixed::<W::Elem>(&mut rng, 515, 0.1, 3.0);
        for op in BinaryOp::ALL {
            let (mut a, mut b) = (vec![W::Elem::ZERO; 515], vec![W::Elem::ZERO; 515]);
            binary_v::<W, _, _>(op, &y[..], &x[..], &mut a, true);
            binary_v::<X, _, _>(op, &y[..], &x[..], &mut b, true);
            assert_same(&b, &a, &format!("{op:?} {}", W::Elem::NAME));
        }
        assert!(same(
            reduce_v::<W>(ReduceOp::Sum, &x),
            reduce_v::<X>(ReduceOp::Sum, &x)
        ));
    }
    if isa::Isa::detected() == isa::Isa::Avx512 {
        check::<wide::f32x16, crate::x86::F32x16>();
        check::<wide::f64x8, crate::x86::F64x8>();
    }
}

/// Without `STATEGRAD_ISA`, the kernels run on the widest ISA the CPU has, whatever the build
/// enables (a crate built for baseline x86-64 on an AVX-512 host still gets 16 f32 lanes).
#[test]
fn kernels_run_on_the_widest_detected_isa() {
    use crate::isa::{isa, lanes, Isa};
    let wanted = std::env::var("STATEGRAD_ISA").ok();
    let wanted = wanted.as_deref().and_then(Isa::from_name);
    assert_eq!(
        isa(),
        wanted.map_or(Isa::detected(), |w| w.min(Isa::detected()))
    );
    let (f32_lanes, f64_lanes) = match isa() {
        Isa::Avx512 => (16, 8),
        Isa::Avx2 => (8, 4),
        Isa::Baseline => (<f32 as Element>::Vec::LANES, <f64 as Element>::Vec::LANES),
    };
    assert_eq!((lanes::<f32>(), lanes::<f64>()), (f32_lanes, f64_lanes));
    assert_eq!(Isa::from_name(" AVX2 "), Some(Isa::Avx2));
    assert_eq!(Isa::from_name("sse9"), None);
}
