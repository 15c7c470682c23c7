//! Losses against closed forms in f64, their gradients, and jit/vmap agreement; metrics.

use stategrad_core::{grad, jit, one_hot, vmap, DType, Tensor};
use stategrad_nn::loss::{
    binary_cross_entropy_with_logits, huber, mse, softmax_cross_entropy,
    softmax_cross_entropy_smoothed, softmax_cross_entropy_with_probs, Reduction,
};
use stategrad_nn::metrics::{accuracy, top_k_accuracy};

const TOL: f64 = 1e-12;

fn logits() -> (Vec<Vec<f64>>, Tensor) {
    let rows = vec![
        vec![2.0, -1.0, 0.5, 3.0],
        vec![-0.25, 0.0, 0.25, 10.0],
        vec![100.0, -100.0, 50.0, 0.0],
    ];
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    (rows, Tensor::from_vec(flat, &[3, 4]).unwrap())
}

fn labels() -> (Vec<usize>, Tensor) {
    (vec![3, 0, 2], Tensor::new([3i64, 0, 2]))
}

fn log_softmax_row(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    z.iter().map(|v| v - lse).collect()
}

fn softmax_row(z: &[f64]) -> Vec<f64> {
    log_softmax_row(z).iter().map(|v| v.exp()).collect()
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{a:?} != {b:?} (at {x} vs {y})"
        );
    }
}

#[test]
fn cross_entropy_matches_closed_form() {
    let (rows, z) = logits();
    let (ys, y) = labels();
    let expected: Vec<f64> = rows
        .iter()
        .zip(&ys)
        .map(|(r, &c)| -log_softmax_row(r)[c])
        .collect();
    let none = softmax_cross_entropy(&z, &y, Reduction::None);
    assert_eq!(none.shape(), &[3]);
    assert_eq!(none.dtype(), DType::F64);
    close(&none.to_vec::<f64>(), &expected, TOL);
    let sum: f64 = expected.iter().sum();
    close(
        &[softmax_cross_entropy(&z, &y, Reduction::Sum)
            .item()
            .unwrap()],
        &[sum],
        TOL,
    );
    close(
        &[softmax_cross_entropy(&z, &y, Reduction::Mean)
            .item()
            .unwrap()],
        &[sum / 3.0],
        TOL,
    );
    // i32 labels give the same.
    let y32 = Tensor::new([3i32, 0, 2]);
    close(
        &softmax_cross_entropy(&z, &y32, Reduction::None).to_vec::<f64>(),
        &expected,
        TOL,
    );
    // Large logits stay finite (100 vs -100).
    assert!(none.to_vec::<f64>().iter().all(|v| v.is_finite()));
}

#[test]
fn integer_labels_equal_one_hot_form() {
    let (_, z) = logits();
    let (_, y) = labels();
    let dense = one_hot(&y, 4).astype(DType::F64);
    for r in [Reduction::None, Reduction::Sum, Reduction::Mean] {
        let a = softmax_cross_entropy(&z, &y, r);
        let b = softmax_cross_entropy_with_probs(&z, &dense, r);
        close(&a.to_vec::<f64>(), &b.to_vec::<f64>(), TOL);
    }
}

#[test]
fn smoothed_cross_entropy_matches_closed_form_and_dense_targets() {
    let (rows, z) = logits();
    let (ys, y) = labels();
    let alpha = 0.1;
    let c = 4.0;
    let expected: Vec<f64> = rows
        .iter()
        .zip(&ys)
        .map(|(r, &k)| {
            let lp = log_softmax_row(r);
            lp.iter()
                .enumerate()
                .map(|(j, v)| {
                    let t = if j == k { 1.0 - alpha } else { 0.0 } + alpha / c;
                    -t * v
                })
                .sum()
        })
        .collect();
    let got = softmax_cross_entropy_smoothed(&z, &y, alpha, Reduction::None);
    close(&got.to_vec::<f64>(), &expected, TOL);
    // Equal to the dense form with smoothed targets (optax's smooth_labels).
    let targets = one_hot(&y, 4).astype(DType::F64) * (1.0 - alpha) + alpha / c;
    let dense = softmax_cross_entropy_with_probs(&z, &targets, Reduction::None);
    close(&dense.to_vec::<f64>(), &expected, TOL);
}

#[test]
fn cross_entropy_gradient_is_softmax_minus_onehot_over_batch() {
    let (rows, z) = logits();
    let (ys, y) = labels();
    for alpha in [0.0, 0.2] {
        let g = grad(|z: Tensor| softmax_cross_entropy_smoothed(&z, &y, alpha, Reduction::Mean))
            .call(z.clone())
            .unwrap();
        let mut expected = Vec::new();
        for (r, &k) in rows.iter().zip(&ys) {
            for (j, p) in softmax_row(r).iter().enumerate() {
                let t = if j == k { 1.0 - alpha } else { 0.0 } + alpha / 4.0;
                expected.push((p - t) / 3.0);
            }
        }
        close(&g.to_vec::<f64>(), &expected, TOL);
    }
    // The plain loss has the same gradient as alpha = 0.
    let g = grad(|z: Tensor| softmax_cross_entropy(&z, &y, Reduction::Mean))
        .call(z.clone())
        .unwrap();
    let onehot = one_hot(&y, 4).astype(DType::F64);
    let expected = (z.softmax(-1) - onehot) / 3.0;
    close(&g.to_vec::<f64>(), &expected.to_vec::<f64>(), TOL);
    // Dense targets: softmax - targets (targets summing to one), summed here.
    let t = Tensor::new([
        [0.1f64, 0.2, 0.3, 0.4],
        [0.25, 0.25, 0.25, 0.25],
        [1.0, 0.0, 0.0, 0.0],
    ]);
    let g = grad(|z: Tensor| softmax_cross_entropy_with_probs(&z, &t, Reduction::Sum))
        .call(z.clone())
        .unwrap();
    close(
        &g.to_vec::<f64>(),
        &(z.softmax(-1) - &t).to_vec::<f64>(),
        TOL,
    );
}

fn bce_ref(x: f64, t: f64) -> f64 {
    x.max(0.0) - x * t + (-x.abs()).exp().ln_1p()
}

#[test]
fn binary_cross_entropy_matches_closed_form_and_gradient() {
    let xs = [-800.0, -3.0, -0.5, 0.0, 0.25, 2.0, 40.0, 800.0];
    let ts = [0.0, 1.0, 0.3, 1.0, 0.0, 0.5, 1.0, 0.0];
    let x = Tensor::new(xs);
    let t = Tensor::new(ts);
    let expected: Vec<f64> = xs.iter().zip(&ts).map(|(&a, &b)| bce_ref(a, b)).collect();
    let got = binary_cross_entropy_with_logits(&x, &t, Reduction::None);
    close(&got.to_vec::<f64>(), &expected, TOL);
    // Also the textbook form where it is finite.
    for (i, (&a, &b)) in xs.iter().zip(&ts).enumerate().skip(1).take(5) {
        let s = 1.0 / (1.0 + (-a).exp());
        let naive = -b * s.ln() - (1.0 - b) * (1.0 - s).ln();
        close(&[got.to_vec::<f64>()[i]], &[naive], 1e-10);
    }
    // Gradient: (sigmoid(x) - t) / n, exact at x = 0 too.
    let g = grad(|x: Tensor| binary_cross_entropy_with_logits(&x, &t, Reduction::Mean))
        .call(x.clone())
        .unwrap();
    let expected: Vec<f64> = xs
        .iter()
        .zip(&ts)
        .map(|(&a, &b)| (1.0 / (1.0 + (-a).exp()) - b) / xs.len() as f64)
        .collect();
    close(&g.to_vec::<f64>(), &expected, TOL);
    assert_eq!(g.to_vec::<f64>()[3], (0.5 - 1.0) / 8.0);
}

#[test]
fn mse_and_huber_match_closed_forms_and_gradients() {
    let ps = [0.5, -3.0, 1.0, 2.5, -0.2];
    let ts = [0.0, 0.0, 1.0, -1.0, 0.3];
    let p = Tensor::new(ps);
    let t = Tensor::new(ts);
    let errs: Vec<f64> = ps.iter().zip(&ts).map(|(a, b)| a - b).collect();
    let sq: Vec<f64> = errs.iter().map(|e| e * e).collect();
    close(&mse(&p, &t, Reduction::None).to_vec::<f64>(), &sq, TOL);
    close(
        &[mse(&p, &t, Reduction::Mean).item().unwrap()],
        &[sq.iter().sum::<f64>() / 5.0],
        TOL,
    );
    let g = grad(|p: Tensor| mse(&p, &t, Reduction::Sum))
        .call(p.clone())
        .unwrap();
    close(
        &g.to_vec::<f64>(),
        &errs.iter().map(|e| 2.0 * e).collect::<Vec<_>>(),
        TOL,
    );

    let delta = 1.5;
    let hub: Vec<f64> = errs
        .iter()
        .map(|e| {
            if e.abs() <= delta {
                0.5 * e * e
            } else {
                delta * (e.abs() - 0.5 * delta)
            }
        })
        .collect();
    close(
        &huber(&p, &t, delta, Reduction::None).to_vec::<f64>(),
        &hub,
        TOL,
    );
    close(
        &[huber(&p, &t, delta, Reduction::Sum).item().unwrap()],
        &[hub.iter().sum()],
        TOL,
    );
    let g = grad(|p: Tensor| huber(&p, &t, delta, Reduction::Mean))
        .call(p.clone())
        .unwrap();
    close(
        &g.to_vec::<f64>(),
        &errs
            .iter()
            .map(|e| e.clamp(-delta, delta) / 5.0)
            .collect::<Vec<_>>(),
        TOL,
    );
}

#[test]
fn losses_under_jit_equal_eager() {
    let (_, z) = logits();
    let (_, y) = labels();
    let t = Tensor::new([
        [0.0f64, 1.0, 0.0, 1.0],
        [0.5, 0.5, 0.0, 1.0],
        [1.0, 0.0, 0.2, 0.0],
    ]);
    type Loss = fn(&Tensor, &Tensor, &Tensor) -> Tensor;
    let losses: Vec<(&str, Loss)> = vec![
        ("ce", |z, y, _| softmax_cross_entropy(z, y, Reduction::Mean)),
        ("ce_smooth", |z, y, _| {
            softmax_cross_entropy_smoothed(z, y, 0.1, Reduction::Sum)
        }),
        ("ce_probs", |z, _, t| {
            softmax_cross_entropy_with_probs(z, t, Reduction::None)
        }),
        ("bce", |z, _, t| {
            binary_cross_entropy_with_logits(z, t, Reduction::Mean)
        }),
        ("mse", |z, _, t| mse(z, t, Reduction::None)),
        ("huber", |z, _, t| huber(z, t, 1.0, Reduction::Mean)),
    ];
    for (name, f) in losses {
        let eager = f(&z, &y, &t);
        let jitted = jit(move |(z, y, t): (Tensor, Tensor, Tensor)| f(&z, &y, &t));
        for _ in 0..2 {
            let got = jitted.call((z.clone(), y.clone(), t.clone())).unwrap();
            assert_eq!(got.shape(), eager.shape(), "{name}");
            close(&got.to_vec::<f64>(), &eager.to_vec::<f64>(), TOL);
        }
        // The gradient under jit as well.
        let g_eager = grad(|z: Tensor| f(&z, &y, &t).sum())
            .call(z.clone())
            .unwrap();
        let g_jit = jit(|z: Tensor| grad(|z: Tensor| f(&z, &y, &t).sum()).call(z))
            .call(z.clone())
            .unwrap();
        close(&g_jit.to_vec::<f64>(), &g_eager.to_vec::<f64>(), TOL);
    }
}

#[test]
fn vmap_of_a_loss_equals_a_loop() {
    // 2 groups of 3 examples: the per-group mean cross-entropy.
    let z = Tensor::new([
        [[1.0f64, 2.0, 0.5], [0.0, 0.1, -0.1], [3.0, -3.0, 1.0]],
        [[0.2, 0.2, 0.2], [5.0, 1.0, 2.0], [-1.0, 0.0, 1.0]],
    ]);
    let y = Tensor::new([[1i32, 0, 2], [2, 0, 1]]);
    let t = z.astype(DType::F64) * 0.5;
    let mapped = vmap(|(z, y): (Tensor, Tensor)| softmax_cross_entropy(&z, &y, Reduction::Mean))
        .call((z.clone(), y.clone()))
        .unwrap();
    let mapped_smooth = vmap(|(z, y): (Tensor, Tensor)| {
        softmax_cross_entropy_smoothed(&z, &y, 0.3, Reduction::Sum)
    })
    .call((z.clone(), y.clone()))
    .unwrap();
    let mapped_huber = vmap(|(z, t): (Tensor, Tensor)| huber(&z, &t, 0.7, Reduction::Mean))
        .call((z.clone(), t.clone()))
        .unwrap();
    let mapped_bce =
        vmap(|(z, t): (Tensor, Tensor)| binary_cross_entropy_with_logits(&z, &t, Reduction::None))
            .call((z.clone(), t.clone()))
            .unwrap();
    assert_eq!(mapped.shape(), &[2]);
    assert_eq!(mapped_bce.shape(), &[2, 3, 3]);
    let mut bce_loop = Vec::new();
    for i in 0..2 {
        let (zi, yi, ti) = (z.at(i), y.at(i), t.at(i));
        close(
            &[mapped.to_vec::<f64>()[i as usize]],
            &[softmax_cross_entropy(&zi, &yi, Reduction::Mean)
                .item()
                .unwrap()],
            TOL,
        );
        close(
            &[mapped_smooth.to_vec::<f64>()[i as usize]],
            &[
                softmax_cross_entropy_smoothed(&zi, &yi, 0.3, Reduction::Sum)
                    .item()
                    .unwrap(),
            ],
            TOL,
        );
        close(
            &[mapped_huber.to_vec::<f64>()[i as usize]],
            &[huber(&zi, &ti, 0.7, Reduction::Mean).item().unwrap()],
            TOL,
        );
        bce_loop
            .extend(binary_cross_entropy_with_logits(&zi, &ti, Reduction::None).to_vec::<f64>());
    }
    close(&mapped_bce.to_vec::<f64>(), &bce_loop, TOL);
}

#[test]
fn f32_losses_stay_f32() {
    let z = Tensor::new([[1.0f32, 2.0], [0.5, -0.5]]);
    let y = Tensor::new([1i32, 0]);
    assert_eq!(
        softmax_cross_entropy(&z, &y, Reduction::Mean).dtype(),
        DType::F32
    );
    assert_eq!(
        softmax_cross_entropy_smoothed(&z, &y, 0.1, Reduction::Mean).dtype(),
        DType::F32
    );
    assert_eq!(
        binary_cross_entropy_with_logits(&z, &z, Reduction::Mean).dtype(),
        DType::F32
    );
    assert_eq!(huber(&z, &z, 1.0, Reduction::Mean).dtype(), DType::F32);
}

#[test]
fn float_labels_are_an_error_under_a_transform() {
    let z = Tensor::new([[1.0f64, 2.0]]);
    let y = Tensor::new([1.0f64]);
    let r =
        jit(|(z, y): (Tensor, Tensor)| softmax_cross_entropy(&z, &y, Reduction::Mean)).call((z, y));
    assert!(r.is_err());
}

// ------------------------------------------------------------------ metrics

#[test]
fn accuracy_on_small_examples_with_ties() {
    let z = Tensor::new([
        [0.5f32, 0.5, 0.1], // tie 0/1 -> 0
        [0.1, 0.9, 0.9],    // tie 1/2 -> 1
        [0.3, 0.2, 0.7],    // 2
        [1.0, 1.0, 1.0],    // all tie -> 0
    ]);
    let a = accuracy(&z, &Tensor::new([0i32, 1, 2, 0]));
    assert_eq!(a.dtype(), DType::F32);
    assert_eq!(a.shape(), &[] as &[usize]);
    assert_eq!(a.item().unwrap(), 1.0);
    assert_eq!(
        accuracy(&z, &Tensor::new([1i64, 2, 2, 2])).item().unwrap(),
        0.25
    );
    assert_eq!(
        accuracy(&z, &Tensor::new([2i32, 0, 0, 1])).item().unwrap(),
        0.0
    );
}

#[test]
fn top_k_accuracy_on_small_examples() {
    let z = Tensor::new([
        [0.1f64, 0.4, 0.3, 0.2], // order 1, 2, 3, 0
        [0.5, 0.5, 0.5, 0.0],    // order 0, 1, 2, 3 (ties by index)
    ]);
    let y = Tensor::new([3i32, 2]);
    // label 3 has rank 2 in row 0; label 2 has rank 2 in row 1.
    let at = |k| top_k_accuracy(&z, &y, k).item().unwrap();
    assert_eq!(at(1), 0.0);
    assert_eq!(at(2), 0.0);
    assert_eq!(at(3), 1.0);
    assert_eq!(at(4), 1.0);
    assert_eq!(at(10), 1.0);
    assert_eq!(at(0), 0.0);
    let y2 = Tensor::new([1i64, 1]);
    let at2 = |k| top_k_accuracy(&z, &y2, k).item().unwrap();
    assert_eq!(at2(1), 0.5);
    assert_eq!(at2(2), 1.0);
    // k = 1 agrees with accuracy, ties included.
    for labels in [[0i32, 0], [1, 0], [2, 1], [3, 3]] {
        let l = Tensor::new(labels);
        assert_eq!(
            top_k_accuracy(&z, &l, 1).item().unwrap(),
            accuracy(&z, &l).item().unwrap()
        );
    }
    assert_eq!(top_k_accuracy(&z, &y, 3).dtype(), DType::F32);
}

#[test]
fn metrics_inside_jit_equal_eager() {
    let z = Tensor::new([[0.1f32, 0.4, 0.3], [0.5, 0.5, 0.0], [0.0, 0.1, 0.2]]);
    let y = Tensor::new([2i32, 1, 2]);
    let f = jit(|(z, y): (Tensor, Tensor)| {
        Tensor::stack(&[&accuracy(&z, &y), &top_k_accuracy(&z, &y, 2)], 0)
    });
    for _ in 0..2 {
        let got = f.call((z.clone(), y.clone())).unwrap().to_vec::<f32>();
        assert_eq!(got[0], accuracy(&z, &y).item().unwrap() as f32);
        assert_eq!(got[1], top_k_accuracy(&z, &y, 2).item().unwrap() as f32);
        assert_eq!(got, vec![1.0 / 3.0, 1.0]);
    }
}
