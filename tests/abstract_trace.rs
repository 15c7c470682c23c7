//! `jit` traces abstractly: during a trace every primitive runs only its abstract rule (shapes
//! and dtypes), so tracing and `eval_shape` run no kernel, allocate nothing the size of the data
//! and change no state; the first call's values come from a replay of the new program.

use stategrad::jit::{cond, kernel_calls};
use stategrad::random::normal_with_key;
use stategrad::{
    custom_vjp, grad, jit, one_hot, path, vmap, DType, Error, ParamState, State, StateMap, Tensor,
    VjpArgs,
};

/// A training step with everything a trace meets: states read and written, `grad` over
/// states, `vmap`, `cond` on a traced predicate, a random draw, a custom derivative, integer
/// data and a reduction.
fn step_parts() -> (State, State, StateMap) {
    let w = ParamState::new(Tensor::new([[0.5f32, -0.25], [0.125, 1.0], [-1.0, 0.75]]));
    let b = ParamState::new(Tensor::new([0.1f32, -0.2]));
    let params: StateMap = [(path!("b"), b.clone()), (path!("w"), w.clone())]
        .into_iter()
        .collect();
    (w, b, params)
}

#[test]
fn tracing_and_eval_shape_run_no_kernel_and_change_no_state() {
    let (w, b, params) = step_parts();
    let softplus = custom_vjp(
        "softplus",
        |x: &[Tensor]| Ok(x[0].relu() + ((-x[0].abs()).exp() + 1.0).log()),
        |a: &VjpArgs| Ok(vec![a.g() * a.input(0).sigmoid()]),
    );
    let key = Tensor::new([0.0f64, 7.0]);
    let loss = |(x, y): (Tensor, Tensor)| {
        let h = softplus.apply(&[&(x.matmul(&w.value()) + b.value())]);
        let per_row = vmap(|r: Tensor| r.square().sum()).call(h.clone())?;
        let noise = normal_with_key(&key, &[2]) * 1e-3;
        let picked = cond(&per_row.sum().gt_scalar(0.0), || &h + &noise, || -&h)?;
        let labels = y.argmax(1, false);
        Ok::<_, Error>(-(picked.log_softmax(1) * one_hot(&labels, 2)).sum())
    };
    let step = jit(|(x, y): (Tensor, Tensor)| {
        let (g, l) = grad(loss)
            .grad_states(params.clone())
            .return_value()
            .call((x, y))?;
        for (p, s) in &params {
            s.set_value(s.value() - 0.1 * &g[p]);
        }
        Ok::<_, Error>(l)
    });
    let x = Tensor::linspace(-1.0, 1.0, 12).reshape(&[4, 3]);
    let y = Tensor::new([[1.0f32, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]);
    let (w0, b0) = (w.value().to_vec::<f32>(), b.value().to_vec::<f32>());

    let before = kernel_calls();
    let shapes = step.eval_shape((x.clone(), y.clone())).unwrap();
    assert_eq!(kernel_calls(), before, "eval_shape ran a kernel");
    assert_eq!(shapes, vec![(vec![], DType::F32)]);
    assert_eq!(step.trace_count(), 1);
    assert_eq!(step.cache_len(), 0, "eval_shape compiles nothing");
    assert_eq!(w.value().to_vec::<f32>(), w0, "eval_shape changed a state");
    assert_eq!(b.value().to_vec::<f32>(), b0);

    // The first call traces, compiles and replays; it equals the eager step, and eval_shape
    // then answers from the compiled program.
    let jitted = step.call((x.clone(), y.clone())).unwrap();
    assert_eq!(step.trace_count(), 2);
    let before = kernel_calls();
    assert_eq!(step.eval_shape((x.clone(), y.clone())).unwrap(), shapes);
    assert_eq!((step.trace_count(), kernel_calls()), (2, before));
    let (wj, bj) = (w.value(), b.value());
    w.set_value(Tensor::from_vec(w0, &[3, 2]).unwrap());
    b.set_value(Tensor::from_vec(b0, &[2]).unwrap());
    let (g, eager) = grad(loss)
        .grad_states(params.clone())
        .return_value()
        .call((x, y))
        .unwrap();
    let close = |a: &Tensor, b: &Tensor| {
        a.to_f64_vec()
            .iter()
            .zip(b.to_f64_vec())
            .all(|(p, q)| (p - q).abs() <= 1e-5 * (1.0 + q.abs()))
    };
    assert!(close(&jitted, &eager), "{jitted} vs {eager}");
    assert!(close(&wj, &(w.value() - 0.1 * &g[&path!("w")])));
    assert!(close(&bj, &(b.value() - 0.1 * &g[&path!("b")])));
}

#[test]
fn eval_shape_of_a_program_too_large_to_compute_succeeds() {
    // 2^40 elements: computing the broadcast would fail to allocate; its shape costs nothing.
    let f = jit(|x: Tensor| x.broadcast_to(&[1 << 20, 1 << 20]).sum_along(&[0], false));
    let shapes = f.eval_shape(Tensor::ones(&[1])).unwrap();
    assert_eq!(shapes, vec![(vec![1 << 20], DType::F32)]);
    assert!(matches!(
        f.call(Tensor::ones(&[1])),
        Err(Error::AllocationFailed { .. })
    ));
}

#[test]
fn traced_values_are_abstract_inside_jit() {
    let s = State::new(Tensor::new([1.0f32, 2.0]));
    let g = jit(|x: Tensor| {
        assert_eq!(x.to_string(), "Traced<float32(3,)>");
        assert!(matches!(
            s.value().item(),
            Err(Error::TracedValueRead { .. })
        ));
        x * 2.0
    });
    assert_eq!(
        g.call(Tensor::ones(&[3])).unwrap().to_vec::<f32>(),
        [2.0; 3]
    );
    // `detach` would freeze a value the trace does not have: a typed error, states kept.
    let f = jit(|x: Tensor| {
        s.set_value(s.value() + 1.0);
        x.detach()
    });
    assert!(matches!(
        f.call(Tensor::ones(&[2])),
        Err(Error::TracedValueRead { what: "detach", .. })
    ));
    assert_eq!(s.value().to_vec::<f32>(), [1.0, 2.0]);
}

/// `J · t` is the transpose of the pullback, recorded from an abstract cotangent: recording the
/// pullback runs no kernel, so a JVP costs a forward pass and one transposed pass (what a VJP
/// costs), not a VJP on zeros more. The values are checked against the Jacobian.
#[test]
fn forward_products_pull_back_an_abstract_cotangent() {
    use stategrad::{jacrev, jvp, vjp};
    let w1 = Tensor::linspace(-1.0, 1.0, 48 * 48)
        .reshape(&[48, 48])
        .sin();
    let w2 = Tensor::linspace(-2.0, 1.0, 48 * 48)
        .reshape(&[48, 48])
        .cos();
    let f = |x: Tensor| w2.matmul(&w1.matmul(&x).tanh()).tanh();
    let x = Tensor::linspace(-0.5, 0.5, 48);
    let t = Tensor::linspace(1.0, -1.0, 48);
    let kernels = |g: &dyn Fn()| {
        let before = kernel_calls();
        g();
        kernel_calls() - before
    };
    let by_vjp = kernels(&|| {
        vjp(f, Tensor::ones(&[48])).call(x.clone()).unwrap();
    });
    let by_jvp = kernels(&|| {
        jvp(f)
            .call_jvp(x.clone(), std::slice::from_ref(&t))
            .unwrap();
    });
    eprintln!("kernels: vjp {by_vjp}, jvp {by_jvp}");
    assert!(
        by_jvp <= by_vjp + 4,
        "jvp ran {by_jvp} kernels, vjp {by_vjp}"
    );
    let (_, jt) = jvp(f)
        .call_jvp(x.clone(), std::slice::from_ref(&t))
        .unwrap();
    let want = jacrev(f).call(x).unwrap().matmul(&t);
    assert!(jt.allclose(&want, 1e-5, 1e-5), "{jt} vs {want}");
}
