//! Functions with their own derivative (`custom_vjp`) under every transform: `grad`,
//! `vector_grad`, `jacrev`, `jacfwd`, `hessian`, `vmap` and `jit` (with its fused and native
//! replay tiers), with typed errors for bad rules.

use stategrad::exec::tuning;
use stategrad::prelude::*;
use stategrad::{custom_jvp, custom_vjp, JvpArgs, VjpArgs};
use std::sync::LazyLock;

/// `log(1 + e^x)`, computed stably as `max(x, 0) + log(1 + e^-|x|)`, with the VJP
/// `g * sigmoid(x)` (finite for every x).
static SOFTPLUS: LazyLock<CustomFn> = LazyLock::new(|| {
    custom_vjp(
        "log1pexp",
        |x: &[Tensor]| Ok(x[0].relu() + ((-x[0].abs()).exp() + 1.0).log()),
        |a: &VjpArgs| Ok(vec![a.g() * a.input(0).sigmoid()]),
    )
});

fn softplus(x: &Tensor) -> Tensor {
    SOFTPLUS.apply(&[x])
}

/// Round in the forward pass (computed on the data), identity in the backward pass.
static ST_ROUND: LazyLock<CustomFn> = LazyLock::new(|| {
    custom_vjp(
        "st_round",
        |x: &[Tensor]| {
            let v: Vec<f64> = x[0].to_f64_vec().iter().map(|v| v.round()).collect();
            Ok(Tensor::from_vec(v, x[0].shape())?.cast(x[0].dtype()))
        },
        |a: &VjpArgs| Ok(vec![a.g().clone()]),
    )
});

fn t64(v: &[f64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap()
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    for (i, (a, b)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}: element {i}: {a} vs {b}\n got {got}\nwant {want}"
        );
    }
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

// ------------------------------------------------------------------ 1. log1pexp

#[test]
fn stable_log1pexp_has_a_finite_gradient_where_the_naive_one_overflows() {
    let x = Tensor::new([100.0f32]);
    let y = softplus(&x);
    assert_eq!(y.to_vec::<f32>(), vec![100.0]);
    let g = grad(|x: Tensor| softplus(&x).sum())
        .call(x.clone())
        .unwrap();
    assert_eq!(g.to_vec::<f32>(), vec![1.0]);
    let naive = grad(|x: Tensor| (x.exp() + 1.0).log().sum())
        .call(x)
        .unwrap();
    assert!(!naive.to_vec::<f32>()[0].is_finite(), "naive grad {naive}");
    // Far negative: value and gradient underflow to 0 without NaN.
    let g = grad(|x: Tensor| softplus(&x).sum())
        .call(Tensor::new([-100.0f32]))
        .unwrap();
    assert!(g.to_vec::<f32>()[0].abs() < 1e-30);
}

#[test]
fn log1pexp_gradient_matches_finite_differences() {
    let xs = [-3.0, -0.7, 0.0, 0.4, 2.5, 6.0];
    let x = t64(&xs);
    let g = grad(|x: Tensor| softplus(&x).sum())
        .call(x.clone())
        .unwrap();
    let f = |v: f64| softplus(&Tensor::scalar(v)).item().unwrap();
    let eps = 1e-6;
    let fd: Vec<f64> = xs
        .iter()
        .map(|&v| (f(v + eps) - f(v - eps)) / (2.0 * eps))
        .collect();
    assert_close("grad vs central differences", &g, &t64(&fd), 1e-8);
    let want: Vec<f64> = xs.iter().map(|&v| sigmoid(v)).collect();
    assert_close("grad vs sigmoid", &g, &t64(&want), 1e-14);
    // vector_grad of the elementwise function: the same.
    let vg = vector_grad(|x: Tensor| softplus(&x)).call(x).unwrap();
    assert_close("vector_grad", &vg, &t64(&want), 1e-14);
}

#[test]
fn log1pexp_grad_under_jit_equals_eager() {
    let x = t64(&[-2.0, 0.5, 1.0, 30.0]);
    let eager = grad(|x: Tensor| (softplus(&x) * 2.0).sum())
        .call(x.clone())
        .unwrap();
    let jg = jit(|x: Tensor| grad(|x: Tensor| (softplus(&x) * 2.0).sum()).call(x));
    let jf = jit(|x: Tensor| (softplus(&x) * 2.0).sum());
    let gj = grad(|x: Tensor| jf.call(x));
    for c in 0..4 {
        assert_close(
            &format!("jit(grad) {c}"),
            &jg.call(x.clone()).unwrap(),
            &eager,
            0.0,
        );
        assert_close(
            &format!("grad(jit) {c}"),
            &gj.call(x.clone()).unwrap(),
            &eager,
            0.0,
        );
    }
}

#[test]
fn vmap_of_grad_equals_a_loop() {
    let rows = [[-1.0, 0.0, 2.0], [3.0, -4.0, 0.5], [0.1, 0.2, 0.3]];
    let xs = Tensor::new(rows);
    let per_example = |x: Tensor| grad(|x: Tensor| (softplus(&x) * &x).sum()).call(x);
    let got = vmap(per_example).call(xs.clone()).unwrap();
    for (k, r) in rows.iter().enumerate() {
        let want = per_example(t64(r)).unwrap();
        assert_close(&format!("row {k}"), &got.at(k as isize), &want, 1e-14);
    }
    // The vectorized form (one batched call) agrees too.
    let vec_sp = SOFTPLUS.clone().vectorized();
    let got_v = vmap(|x: Tensor| grad(|x: Tensor| (vec_sp.apply(&[&x]) * &x).sum()).call(x))
        .call(xs)
        .unwrap();
    assert_close("vectorized", &got_v, &got, 1e-14);
}

#[test]
fn jacrev_equals_jacfwd_and_the_closed_form() {
    // y = softplus(A x), A (3 x 4): J = diag(sigmoid(A x)) A.
    let a = Tensor::new([
        [1.0, -2.0, 0.5, 0.0],
        [0.3, 0.3, -1.0, 2.0],
        [-0.5, 1.5, 1.0, -1.0],
    ]);
    let x = t64(&[0.2, -0.4, 1.0, 0.7]);
    let f = |x: Tensor| softplus(&a.matmul(&x));
    let jr = jacrev(f).call(x.clone()).unwrap();
    let jf = jacfwd(f).call(x.clone()).unwrap();
    assert_eq!(jr.shape(), &[3, 4]);
    assert_close("jacrev vs jacfwd", &jr, &jf, 1e-14);
    let s = a.matmul(&x).sigmoid().reshape(&[3, 1]);
    assert_close("jacrev vs closed form", &jr, &(&s * &a), 1e-14);
    // Chunked pullbacks (several rows per pass) give the same.
    let jr2 = jacrev(f).param("chunk_size", 2).call(x.clone()).unwrap();
    assert_close("jacrev chunked", &jr2, &jr, 1e-14);
}

#[test]
fn hessian_differentiates_the_rule() {
    let xs = [-1.5, 0.0, 0.8, 2.0];
    let h = hessian(|x: Tensor| softplus(&x).sum())
        .call(t64(&xs))
        .unwrap();
    let mut want = vec![0.0; 16];
    for (i, &v) in xs.iter().enumerate() {
        want[i * 5] = sigmoid(v) * (1.0 - sigmoid(v));
    }
    assert_close(
        "hessian",
        &h,
        &Tensor::from_vec(want, &[4, 4]).unwrap(),
        1e-14,
    );
    // grad(grad) of a scalar: sigmoid'(x).
    let gg = grad(|x: Tensor| grad(|x: Tensor| softplus(&x).sum()).call(x).unwrap().sum())
        .call(Tensor::scalar(0.3f64))
        .unwrap();
    assert!((gg.item().unwrap() - sigmoid(0.3) * (1.0 - sigmoid(0.3))).abs() < 1e-14);
}

#[test]
fn a_function_of_two_inputs_with_broadcasting() {
    // f(x, w) = x * w with w a scalar; the rule sums w's cotangent to its shape.
    let scale = custom_vjp(
        "scale",
        |a: &[Tensor]| Ok(&a[0] * &a[1]),
        |r: &VjpArgs| {
            Ok(vec![
                r.g() * r.input(1),
                (r.g() * r.input(0)).try_sum_to(r.input(1).shape())?,
            ])
        },
    );
    let x = t64(&[1.0, 2.0, 3.0]);
    let w = Tensor::scalar(0.5f64);
    let f = |(x, w): (Tensor, Tensor)| (scale.apply(&[&x, &w]).square()).sum();
    let [gx, gw] = grad(f)
        .argnums([0, 1])
        .call((x.clone(), w.clone()))
        .unwrap();
    // d/dx sum((xw)^2) = 2 x w^2, d/dw = 2 w sum(x^2).
    assert_close("gx", &gx, &t64(&[0.5, 1.0, 1.5]), 1e-14);
    assert_close("gw", &gw, &Tensor::scalar(14.0f64), 1e-14);
    let jr = jacrev(|(x, w): (Tensor, Tensor)| scale.apply(&[&x, &w]))
        .argnums([0, 1])
        .call((x.clone(), w.clone()))
        .unwrap();
    let jf = jacfwd(|(x, w): (Tensor, Tensor)| scale.apply(&[&x, &w]))
        .argnums([0, 1])
        .call((x, w))
        .unwrap();
    for k in 0..2 {
        assert_close(&format!("jacobian {k}"), &jr[k], &jf[k], 1e-14);
    }
    assert_close("d/dw", &jr[1], &t64(&[1.0, 2.0, 3.0]), 1e-14);
}

// ------------------------------------------------------------------ 2. straight-through

#[test]
fn straight_through_rounding_passes_the_gradient_through() {
    let x = Tensor::new([0.4f32, 1.6, -0.7, 2.5]);
    let w = Tensor::new([1.0f32, -2.0, 3.0, 0.25]);
    let y = ST_ROUND.apply(&[&x]);
    assert_eq!(y.to_vec::<f32>(), vec![0.0, 2.0, -1.0, 3.0]);
    let f = |x: Tensor| (ST_ROUND.apply(&[&x]) * &w).sum();
    let g = grad(f).call(x.clone()).unwrap();
    assert_eq!(g.to_vec::<f32>(), w.to_vec::<f32>());
    // Under jit the forward function (which reads data) runs on every replay.
    let j = jit(f);
    for k in 0..3 {
        let xk = &x + (k as f64);
        assert_eq!(
            j.call(xk.clone()).unwrap().item().unwrap(),
            f(xk).item().unwrap()
        );
    }
}

// ------------------------------------------------------------------ 3. errors

#[test]
fn bad_rules_give_typed_errors_and_leave_states_unchanged() {
    let wrong_shape = custom_vjp(
        "wrong_shape",
        |x: &[Tensor]| Ok(x[0].square()),
        |a: &VjpArgs| Ok(vec![a.g().sum()]),
    );
    let wrong_count = custom_vjp(
        "wrong_count",
        |x: &[Tensor]| Ok(x[0].square()),
        |a: &VjpArgs| Ok(vec![a.g().clone(), a.g().clone()]),
    );
    let panics = custom_vjp(
        "panics",
        |x: &[Tensor]| Ok(x[0].square()),
        |_: &VjpArgs| -> stategrad::Result<Vec<Tensor>> { panic!("rule exploded") },
    );
    let raises = custom_vjp(
        "raises",
        |x: &[Tensor]| Ok(x[0].square()),
        // An infallible operator's error (a shape mismatch) inside the rule.
        |a: &VjpArgs| Ok(vec![a.g() + Tensor::zeros(&[7])]),
    );
    let s = State::new(Tensor::new([1.0f32, 2.0, 3.0])).named("s");
    let x = Tensor::new([1.0f32, -1.0, 2.0]);
    let run = |op: &CustomFn| {
        grad(|x: Tensor| {
            s.set_value(s.value() * 2.0);
            (op.apply(&[&x]) * s.value()).sum()
        })
        .call(x.clone())
        .unwrap_err()
    };
    let e = run(&wrong_shape);
    assert!(
        matches!(
            &e,
            Error::ShapeMismatch {
                op: "wrong_shape",
                ..
            }
        ),
        "{e}"
    );
    let e = run(&wrong_count);
    assert!(
        matches!(
            &e,
            Error::InvalidArgument {
                op: "wrong_count",
                ..
            }
        ),
        "{e}"
    );
    let e = run(&panics);
    assert!(
        matches!(&e, Error::Panicked(m) if m.contains("rule exploded") && m.contains("panics")),
        "{e}"
    );
    let e = run(&raises);
    assert!(matches!(&e, Error::ShapeMismatch { op: "add", .. }), "{e}");
    assert_eq!(s.value().to_vec::<f32>(), vec![1.0, 2.0, 3.0]);
    // The same under jit (a trace, then replays) and jacfwd.
    let j = jit(|x: Tensor| grad(|x: Tensor| panics.apply(&[&x]).sum()).call(x));
    for _ in 0..2 {
        assert!(matches!(j.call(x.clone()), Err(Error::Panicked(_))));
    }
    assert!(matches!(
        jacfwd(|x: Tensor| wrong_shape.apply(&[&x])).call(x.clone()),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn a_panicking_or_failing_forward_gives_a_typed_error() {
    let boom = custom_vjp(
        "boom",
        |x: &[Tensor]| {
            if x[0].to_f64_vec()[0] > 10.0 {
                panic!("too big");
            }
            Ok(x[0].clone())
        },
        |a: &VjpArgs| Ok(vec![a.g().clone()]),
    );
    let small = Tensor::new([1.0f32]);
    let big = Tensor::new([11.0f32]);
    assert!(boom.call(&[&small]).is_ok());
    assert!(matches!(boom.call(&[&big]), Err(Error::Panicked(m)) if m.contains("too big")));
    // In a jit replay (the trace succeeded at a small value): typed, not an internal error.
    let s = State::new(Tensor::new([5.0f32])).named("s");
    let j = jit(|x: Tensor| {
        s.set_value(s.value() + 1.0);
        boom.apply(&[&x])
    });
    j.call(small.clone()).unwrap();
    assert_eq!(s.value().to_vec::<f32>(), vec![6.0]);
    assert!(matches!(j.call(big.clone()), Err(Error::Panicked(_))));
    assert_eq!(s.value().to_vec::<f32>(), vec![6.0]);
    let fails = custom_vjp(
        "fails",
        |_: &[Tensor]| Err(Error::Unsupported("no".into())),
        |a: &VjpArgs| Ok(vec![a.g().clone()]),
    );
    assert!(matches!(
        grad(|x: Tensor| fails.apply(&[&x]).sum()).call(small),
        Err(Error::Unsupported(m)) if m == "no"
    ));
}

#[test]
fn a_forward_that_captures_a_traced_value_is_refused() {
    let x = Tensor::new([1.0f32, 2.0]);
    let err = grad(|x: Tensor| {
        let captured = x.clone();
        let op = custom_vjp(
            "captures",
            move |a: &[Tensor]| Ok(&a[0] * &captured),
            |a: &VjpArgs| Ok(vec![a.g().clone()]),
        );
        op.apply(&[&x.square()]).sum()
    })
    .call(x)
    .unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("captures")),
        "{err}"
    );
}

// ------------------------------------------------------------------ 4. jit tiers

#[test]
fn many_jit_replays_on_every_tier_equal_eager() {
    tuning::set_codegen_enabled(true);
    tuning::set_arena_native_after_runs(1);
    tuning::set_fused_native_after_elements(0);
    for n in [5usize, 300, 20_000] {
        for dtype in [DType::F32, DType::F64] {
            let data: Vec<f64> = (0..n)
                .map(|i| ((i * 37) % 101) as f64 / 10.0 - 5.0)
                .collect();
            let x = Tensor::from_vec(data, &[n]).unwrap().cast(dtype);
            let f = |x: Tensor| {
                let h = (&x * 1.5 + 0.25).tanh() * 4.0;
                let y = softplus(&h) * &x - h.square();
                (y.exp().sin() + 1.0).sum()
            };
            let g = |x: Tensor| grad(f).call(x);
            let (want, want_g) = (f(x.clone()), g(x.clone()).unwrap());
            let (jf, jg) = (jit(f), jit(g));
            let tol = if dtype == DType::F32 { 1e-4 } else { 1e-12 };
            for c in 0..6 {
                let what = format!("n={n} {dtype:?} call {c}");
                assert_close(&what, &jf.call(x.clone()).unwrap(), &want, tol);
                assert_close(&what, &jg.call(x.clone()).unwrap(), &want_g, tol);
            }
            for st in jf.program_stats().into_iter().chain(jg.program_stats()) {
                // The custom function has no slice kernel: never an arena program.
                assert!(!st.arena, "{st:?}");
            }
            if n == 20_000 {
                // The elementwise ops around it still fuse.
                let fused = jf
                    .program_stats()
                    .iter()
                    .map(|s| s.fused_passes)
                    .sum::<usize>();
                assert!(fused > 0, "{:?}", jf.program_stats());
            }
        }
    }
}

// ------------------------------------------------------------------ custom_jvp

/// `softplus` with a forward-mode rule `t * sigmoid(x)`; reverse mode transposes it.
static SOFTPLUS_JVP: LazyLock<CustomFn> = LazyLock::new(|| {
    custom_jvp(
        "log1pexp_jvp",
        |x: &[Tensor]| Ok(x[0].relu() + ((-x[0].abs()).exp() + 1.0).log()),
        |a: &JvpArgs| Ok(a.tangent(0) * a.input(0).sigmoid()),
    )
});

#[test]
fn custom_jvp_works_under_every_transform() {
    let sp = |x: &Tensor| SOFTPLUS_JVP.apply(&[x]);
    // Finite where the naive gradient is not.
    let g = grad(|x: Tensor| sp(&x).sum())
        .call(Tensor::new([100.0f32]))
        .unwrap();
    assert_eq!(g.to_vec::<f32>(), vec![1.0]);
    let xs = [-1.5, 0.0, 0.8, 2.0];
    let x = t64(&xs);
    let sig: Vec<f64> = xs.iter().map(|&v| sigmoid(v)).collect();
    let loss = |x: Tensor| (sp(&x) * 3.0).sum();
    let g = grad(loss).call(x.clone()).unwrap();
    assert_close("grad", &g, &(t64(&sig) * 3.0), 1e-14);
    let jg = jit(|x: Tensor| grad(loss).call(x));
    for _ in 0..3 {
        assert_close("jit(grad)", &jg.call(x.clone()).unwrap(), &g, 0.0);
    }
    let a = Tensor::new([[1.0, -2.0, 0.5, 0.0], [0.3, 0.3, -1.0, 2.0]]);
    let f = |x: Tensor| sp(&a.matmul(&x));
    let jr = jacrev(f).call(x.clone()).unwrap();
    let jf = jacfwd(f).call(x.clone()).unwrap();
    assert_close("jacrev vs jacfwd", &jr, &jf, 1e-14);
    let h = hessian(|x: Tensor| sp(&x).sum()).call(x.clone()).unwrap();
    for i in 0..4 {
        let want = sig[i] * (1.0 - sig[i]);
        assert!((h.to_f64_vec()[i * 5] - want).abs() < 1e-14, "{h}");
    }
    let rows = Tensor::new([[-1.0, 0.0, 2.0], [3.0, -4.0, 0.5]]);
    let per = |x: Tensor| grad(|x: Tensor| (sp(&x) * &x).sum()).call(x);
    let got = vmap(per).call(rows.clone()).unwrap();
    for k in 0..2 {
        let want = per(rows.at(k)).unwrap();
        assert_close("vmap(grad)", &got.at(k), &want, 1e-14);
    }
}

#[test]
fn custom_jvp_bad_rules_give_typed_errors() {
    let wrong_shape = custom_jvp(
        "jvp_wrong_shape",
        |x: &[Tensor]| Ok(x[0].square()),
        |a: &JvpArgs| Ok(a.tangent(0).sum()),
    );
    let panics = custom_jvp(
        "jvp_panics",
        |x: &[Tensor]| Ok(x[0].square()),
        |_: &JvpArgs| -> stategrad::Result<Tensor> { panic!("jvp exploded") },
    );
    let s = State::new(Tensor::new([1.0f32, 2.0])).named("s");
    let x = Tensor::new([1.0f32, -1.0]);
    let run = |op: &CustomFn| {
        grad(|x: Tensor| {
            s.set_value(s.value() + 1.0);
            (op.apply(&[&x]) * s.value()).sum()
        })
        .call(x.clone())
        .unwrap_err()
    };
    let e = run(&wrong_shape);
    assert!(
        matches!(
            &e,
            Error::ShapeMismatch {
                op: "jvp_wrong_shape",
                ..
            }
        ),
        "{e}"
    );
    let e = run(&panics);
    assert!(
        matches!(&e, Error::Panicked(m) if m.contains("jvp exploded")),
        "{e}"
    );
    assert_eq!(s.value().to_vec::<f32>(), vec![1.0, 2.0]);
}

/// An empty chunk of cotangents through a rule that reads data (so it runs row by row): zero
/// rows give a `(0,) + input shape` result of zeros, as every other rule gives, not an error.
#[test]
fn an_empty_cotangent_chunk_through_a_data_reading_rule_gives_empty_rows() {
    let scaled = custom_vjp(
        "scaled_by_data",
        |x: &[Tensor]| Ok(&x[0] * 2.0),
        |a: &VjpArgs| {
            // Reads the cotangent's data: the chunk cannot be batched by tracing.
            let s: f64 = a.g().to_f64_vec().iter().sum();
            Ok(vec![a.g() * 2.0 + (s * 0.0)])
        },
    );
    let f = |x: &[Tensor]| -> stategrad::Result<Tensor> { Ok(scaled.apply(&[&x[0]])) };
    let xs = [t64(&[1.0, 2.0, 3.0])];
    let one_argument = std::iter::once(0..xs.len()).collect();
    let pf = stategrad::transform::PureFn::new(&f, 0, one_argument);
    let (_, pb) = stategrad::transform::vjp_pure(&pf, &xs).unwrap();
    let empty = Tensor::from_vec(Vec::<f64>::new(), &[0, 3]).unwrap();
    let rows = pb.call_batch(&empty).unwrap();
    assert_eq!(rows[0].shape(), &[0, 3]);
    let two = t64(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).reshape(&[2, 3]);
    let rows = pb.call_batch(&two).unwrap();
    assert_eq!(rows[0].to_f64_vec(), vec![2.0, 0.0, 0.0, 0.0, 2.0, 0.0]);
}
