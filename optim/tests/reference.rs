//! Each optimizer's first steps equal optax's equations, written out in plain f64 loops.
//!
//! The problem: `loss = 0.5 w0^2 + 3 w1^2 + (b - 3)^2`, so `g = [w0, 6 w1, 2 (b - 3)]`, from
//! `w = [1, -2]`, `b = 0.5`. The flat reference vector is `[w0, w1, b]`.

use stategrad_core::{grad, path, ParamState, Result, State, StateMap, Tensor};
use stategrad_optim::{
    adagrad, adam, adamw, constant, cosine_decay, exponential_decay, piecewise_constant, rmsprop,
    sgd, warmup_cosine_decay, Optim, Optimizer, Schedule,
};

const X0: [f64; 3] = [1.0, -2.0, 0.5];

struct Problem {
    w: State,
    b: State,
    params: StateMap,
}

fn problem() -> Problem {
    let w = ParamState::new(Tensor::new([X0[0], X0[1]]));
    let b = ParamState::new(Tensor::scalar(X0[2]));
    let params = [(path!("w"), w.clone()), (path!("b"), b.clone())].into();
    Problem { w, b, params }
}

fn grad_ref(x: &[f64]) -> Vec<f64> {
    vec![x[0], 6.0 * x[1], 2.0 * (x[2] - 3.0)]
}

fn flat(pb: &Problem) -> Vec<f64> {
    let mut v = pb.w.value().to_vec::<f64>();
    v.push(pb.b.value().item().unwrap());
    v
}

/// Run `steps` steps of `opt`; the flat parameters after each.
fn run(pb: &Problem, opt: &Optim, steps: usize) -> Result<Vec<Vec<f64>>> {
    let (w, b) = (pb.w.clone(), pb.b.clone());
    let loss = move |_: Tensor| {
        let c = Tensor::new([0.5f64, 3.0]);
        (c * w.value().square()).sum() + (b.value() - 3.0).square()
    };
    let mut out = Vec::new();
    for _ in 0..steps {
        let grads = grad(&loss)
            .grad_states(pb.params.clone())
            .call(Tensor::scalar(0.0f64))?;
        opt.step(&grads)?;
        out.push(flat(pb));
    }
    Ok(out)
}

/// Step `k` (0-based) of a reference: `update(k, x, g)` changes `x` in place.
fn reference(steps: usize, mut update: impl FnMut(usize, &mut Vec<f64>, &[f64])) -> Vec<Vec<f64>> {
    let mut x = X0.to_vec();
    (0..steps)
        .map(|k| {
            let g = grad_ref(&x);
            update(k, &mut x, &g);
            x.clone()
        })
        .collect()
}

fn assert_close(got: &[Vec<f64>], want: &[Vec<f64>], what: &str) {
    assert_eq!(got.len(), want.len());
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            let tol = 1e-12 * b.abs().max(1.0);
            assert!(
                (a - b).abs() <= tol,
                "{what}: step {k}, element {i}: got {a}, want {b}"
            );
        }
    }
    // The optimizer moved the parameters.
    assert_ne!(want[0], X0.to_vec(), "{what}");
}

fn check(opt: impl FnOnce(&StateMap) -> Result<Optim>, want: Vec<Vec<f64>>, what: &str) {
    let pb = problem();
    let opt = opt(&pb.params).unwrap();
    let got = run(&pb, &opt, want.len()).unwrap();
    assert_close(&got, &want, what);
    assert_eq!(opt.count().value().item().unwrap(), want.len() as f64);
}

#[test]
fn sgd_plain_momentum_nesterov() {
    let lr = 0.1;
    let want = reference(3, |_, x, g| {
        for i in 0..3 {
            x[i] -= lr * g[i];
        }
    });
    check(|p| sgd(lr).build(p), want, "sgd");

    for nesterov in [false, true] {
        let m = 0.9;
        let mut t = [0.0; 3];
        let want = reference(3, |_, x, g| {
            for i in 0..3 {
                t[i] = g[i] + m * t[i];
                let u = if nesterov { g[i] + m * t[i] } else { t[i] };
                x[i] -= lr * u;
            }
        });
        check(
            |p| sgd(lr).momentum(m).nesterov(nesterov).build(p),
            want,
            "sgd momentum",
        );
    }
}

fn adam_reference(lr: f64, wd: f64, decay_mask: [bool; 3]) -> Vec<Vec<f64>> {
    adam_reference_n(lr, wd, decay_mask, false)
}

fn adam_reference_n(lr: f64, wd: f64, decay_mask: [bool; 3], nesterov: bool) -> Vec<Vec<f64>> {
    let (b1, b2, eps): (f64, f64, f64) = (0.9, 0.999, 1e-8);
    let (mut mu, mut nu) = ([0.0; 3], [0.0; 3]);
    reference(3, |k, x, g| {
        let t = (k + 1) as i32;
        for i in 0..3 {
            mu[i] = (1.0 - b1) * g[i] + b1 * mu[i];
            nu[i] = (1.0 - b2) * g[i] * g[i] + b2 * nu[i];
            let mu_hat = if nesterov {
                b1 * (mu[i] / (1.0 - b1.powi(t + 1))) + (1.0 - b1) * (g[i] / (1.0 - b1.powi(t)))
            } else {
                mu[i] / (1.0 - b1.powi(t))
            };
            let nu_hat = nu[i] / (1.0 - b2.powi(t));
            let mut u = mu_hat / (nu_hat.sqrt() + eps);
            if decay_mask[i] {
                u += wd * x[i];
            }
            x[i] -= lr * u;
        }
    })
}

#[test]
fn adam_and_adamw() {
    check(
        |p| adam(0.1).build(p),
        adam_reference(0.1, 0.0, [false; 3]),
        "adam",
    );
    // adamw's default decay 1e-4 on every parameter.
    check(
        |p| adamw(0.1).build(p),
        adam_reference(0.1, 1e-4, [true; 3]),
        "adamw",
    );
    // Nesterov (optax's nadam).
    check(
        |p| adam(0.1).nesterov(true).build(p),
        adam_reference_n(0.1, 0.0, [false; 3], true),
        "nadam",
    );
    // A large decay, the bias excluded by a path mask.
    check(
        |p| {
            adamw(0.1)
                .weight_decay(0.5)
                .mask_fn(|path| *path != path!("b"))
                .build(p)
        },
        adam_reference(0.1, 0.5, [true, true, false]),
        "adamw masked",
    );
}

#[test]
fn rmsprop_variants() {
    let (lr, d, eps) = (0.01, 0.9, 1e-8);
    for (centered, momentum, nesterov) in [
        (false, None, false),
        (true, None, false),
        (false, Some(0.9), false),
        (true, Some(0.5), true),
    ] {
        let (mut nu, mut mu, mut tr) = ([0.0; 3], [0.0; 3], [0.0; 3]);
        let want = reference(3, |_, x, g| {
            for i in 0..3 {
                nu[i] = (1.0 - d) * g[i] * g[i] + d * nu[i];
                let denom = if centered {
                    mu[i] = (1.0 - d) * g[i] + d * mu[i];
                    nu[i] - mu[i] * mu[i]
                } else {
                    nu[i]
                };
                let v = -lr * (g[i] / (denom + eps).sqrt());
                let v = match momentum {
                    None => v,
                    Some(m) => {
                        tr[i] = v + m * tr[i];
                        if nesterov {
                            v + m * tr[i]
                        } else {
                            tr[i]
                        }
                    }
                };
                x[i] += v;
            }
        });
        let what = format!("rmsprop centered={centered} momentum={momentum:?} nesterov={nesterov}");
        check(
            |p| {
                let mut o = rmsprop(lr).centered(centered).nesterov(nesterov);
                if let Some(m) = momentum {
                    o = o.momentum(m);
                }
                o.build(p)
            },
            want,
            &what,
        );
    }
}

#[test]
fn adagrad_defaults() {
    let (lr, eps) = (0.1, 1e-7);
    let mut sos = [0.1; 3];
    let want = reference(3, |_, x, g| {
        for i in 0..3 {
            sos[i] += g[i] * g[i];
            x[i] -= lr * g[i] / (sos[i] + eps).sqrt();
        }
    });
    check(|p| adagrad(lr).build(p), want, "adagrad");
}

#[test]
fn clip_by_global_norm_before_the_update() {
    let (lr, max) = (0.1, 2.0);
    let want = reference(3, |_, x, g| {
        let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        for i in 0..3 {
            let gi = if norm < max { g[i] } else { g[i] / norm * max };
            x[i] -= lr * gi;
        }
    });
    check(
        |p| sgd(lr).clip_by_global_norm(max).build(p),
        want,
        "sgd clipped",
    );
}

#[test]
fn schedules_drive_the_rate() {
    // sgd with each schedule: x -= lr(k) * g, lr from optax's formulas.
    let cases: Vec<(Schedule, Box<dyn Fn(f64) -> f64>)> = vec![
        (constant(0.1).into(), Box::new(|_| 0.1)),
        (
            piecewise_constant(0.1, [(1, 0.5), (2, 0.1)]).into(),
            Box::new(|t| 0.1 * if t >= 1.0 { 0.5 } else { 1.0 } * if t >= 2.0 { 0.1 } else { 1.0 }),
        ),
        (
            exponential_decay(0.1, 2, 0.5).into(),
            Box::new(|t| 0.1 * 0.5f64.powf(t / 2.0)),
        ),
        (
            exponential_decay(0.1, 2, 0.5)
                .staircase(true)
                .transition_begin(1)
                .end_value(0.07)
                .into(),
            Box::new(|t: f64| {
                let d = t - 1.0;
                let v = if d <= 0.0 {
                    0.1
                } else {
                    0.1 * 0.5f64.powf((d / 2.0).floor())
                };
                v.max(0.07)
            }),
        ),
        (
            cosine_decay(0.1, 2).alpha(0.1).into(),
            Box::new(|t: f64| {
                let c = 0.5 * (1.0 + (std::f64::consts::PI * t.min(2.0) / 2.0).cos());
                0.1 * (0.9 * c + 0.1)
            }),
        ),
        (
            warmup_cosine_decay(0.01, 0.1, 1, 3).end_value(0.001).into(),
            Box::new(|t: f64| {
                if t < 1.0 {
                    (0.01 - 0.1) * (1.0 - t) + 0.1
                } else {
                    let c = 0.5 * (1.0 + (std::f64::consts::PI * (t - 1.0).min(2.0) / 2.0).cos());
                    0.1 * ((1.0 - 0.01) * c + 0.01)
                }
            }),
        ),
    ];
    for (i, (schedule, lr)) in cases.into_iter().enumerate() {
        for t in 0..8 {
            let (got, want) = (schedule.value_at(t), lr(t as f64));
            assert!(
                (got - want).abs() <= 1e-15,
                "schedule {i} at {t}: {got} vs {want}"
            );
        }
        let want = reference(3, |k, x, g| {
            for j in 0..3 {
                x[j] -= lr(k as f64) * g[j];
            }
        });
        let s = schedule.clone();
        check(|p| sgd(s).build(p), want, &format!("schedule {i}"));
    }
}

#[test]
fn f32_params_keep_their_dtype() {
    let w = ParamState::new(Tensor::new([1.0f32, -2.0]));
    let params: StateMap = [(path!("w"), w.clone())].into();
    let opt = adam(warmup_cosine_decay(0.0, 0.1, 1, 10))
        .clip_by_global_norm(1.0)
        .build(&params)
        .unwrap();
    let grads = [(path!("w"), Tensor::new([0.5f32, 4.0]))].into();
    opt.step(&grads).unwrap();
    opt.step(&grads).unwrap();
    assert_eq!(w.value().dtype(), stategrad_core::DType::F32);
    assert_eq!(
        opt.slot("mu").unwrap()[&path!("w")].value().dtype(),
        stategrad_core::DType::F32
    );
    assert_eq!(opt.count().value().dtype(), stategrad_core::DType::F64);
    assert_ne!(w.value().to_vec::<f32>(), vec![1.0, -2.0]);
}
