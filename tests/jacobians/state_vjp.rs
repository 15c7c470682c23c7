//! State-aware `vjp` / `call_jvp` against closed forms and the dot-product identity (section 5).

use super::*;

#[test]
fn vjp_and_jvp_with_states_closed_forms() {
    let l = Layer::new();
    let f = |x: Tensor| l.forward(&x);
    let (y, d, _) = l.yds();
    let (x, w) = (l.xv(), l.wv());
    let c = t(vec![0.5, -1.0, 2.0], &[3]);
    let cv = vals(&c);
    let dc: Vec<f64> = (0..3).map(|i| d[i] * cv[i]).collect();
    // J^T c: gW[k,i] = x_k d_i c_i, gb = d c, gx[k] = Σ_i W[k,i] d_i c_i.
    let want_w: Vec<f64> = (0..6).map(|p| x[p / 3] * dc[p % 3]).collect();
    let want_x: Vec<f64> = (0..2)
        .map(|k| (0..3).map(|i| w[k * 3 + i] * dc[i]).sum())
        .collect();
    let (([gw, gb], gx), value): (([Tensor; 2], Tensor), Tensor) = vjp(f, c.clone())
        .grad_states([l.w.clone(), l.b.clone()])
        .argnums(0)
        .return_value()
        .call(l.x.clone())
        .unwrap();
    assert_close("vjp W", &gw, &[2, 3], &want_w, 1e-14, 1e-15);
    assert_close("vjp b", &gb, &[3], &dc, 1e-14, 1e-15);
    assert_close("vjp x", &gx, &[2], &want_x, 1e-14, 1e-15);
    assert_close("vjp value", &value, &[3], &y, 1e-15, 0.0);
    // A path-keyed map.
    let vm: V = vjp(f, c.clone())
        .grad_states(BTreeMap::from([
            (path!("W"), l.w.clone()),
            (path!("b"), l.b.clone()),
        ]))
        .call(l.x.clone())
        .unwrap();
    assert_same("vjp map W", &vm[&path!("W")], &gw, 0.0);
    assert_same("vjp map b", &vm[&path!("b")], &gb, 0.0);

    // J t: dy = d * (x tW + tb + tx W).
    let mut r = Rng(77);
    let (tw, tb, tx) = (
        r.tensor(&[2, 3], -1.0, 1.0),
        r.tensor(&[3], -1.0, 1.0),
        r.tensor(&[2], -1.0, 1.0),
    );
    let (twv, tbv, txv) = (vals(&tw), vals(&tb), vals(&tx));
    let want_dy: Vec<f64> = (0..3)
        .map(|i| {
            let lin: f64 = (0..2)
                .map(|k| x[k] * twv[k * 3 + i] + txv[k] * w[k * 3 + i])
                .sum::<f64>()
                + tbv[i];
            d[i] * lin
        })
        .collect();
    // Tangents: distinct grad states in container order, then the argument.
    let (yv, dy) = jvp(f)
        .grad_states([l.w.clone(), l.b.clone()])
        .argnums(0)
        .call_jvp(l.x.clone(), &[tw.clone(), tb.clone(), tx.clone()])
        .unwrap();
    assert_close("jvp value", &yv, &[3], &y, 1e-15, 0.0);
    assert_close("jvp", &dy, &[3], &want_dy, 1e-14, 1e-15);
    // A map orders its tangents by key ("W" < "b"); a state listed twice takes one tangent.
    let (_, dy_map) = jvp(f)
        .grad_states(BTreeMap::from([
            (path!("b"), l.b.clone()),
            (path!("W"), l.w.clone()),
        ]))
        .argnums(0)
        .call_jvp(l.x.clone(), &[tw.clone(), tb.clone(), tx.clone()])
        .unwrap();
    assert_same("jvp map", &dy_map, &dy, 1e-15);
    let (_, dy_dup) = jvp(f)
        .grad_states(vec![l.b.clone(), l.w.clone(), l.b.clone()])
        .argnums(0)
        .call_jvp(l.x.clone(), &[tb.clone(), tw.clone(), tx.clone()])
        .unwrap();
    assert_same("jvp duplicate state", &dy_dup, &dy, 1e-15);
    let ((gd, _), _): ((Vec<Tensor>, Tensor), Tensor) = vjp(f, c.clone())
        .grad_states(vec![l.b.clone(), l.w.clone(), l.b.clone()])
        .argnums(0)
        .return_value()
        .call(l.x.clone())
        .unwrap();
    assert_same("vjp duplicate state [0]", &gd[0], &gb, 0.0);
    assert_same("vjp duplicate state [2]", &gd[2], &gb, 0.0);
    assert_same("vjp duplicate state [1]", &gd[1], &gw, 0.0);
    // States only (no argnums): tangents for the states only; the argument is a constant.
    let (_, dy_s) = jvp(f)
        .grad_states([l.w.clone(), l.b.clone()])
        .call_jvp(l.x.clone(), &[tw.clone(), tb.clone()])
        .unwrap();
    let (_, dy_s2) = jvp(f)
        .grad_states([l.w.clone(), l.b.clone()])
        .argnums(0)
        .call_jvp(l.x.clone(), &[tw.clone(), tb.clone(), tx.zeros_like()])
        .unwrap();
    assert_same("jvp states only", &dy_s, &dy_s2, 1e-15);
    // Wrong tangent count: a typed error.
    assert!(jvp(f)
        .grad_states([l.w.clone(), l.b.clone()])
        .argnums(0)
        .call_jvp(l.x.clone(), &[tw.clone(), tb.clone()])
        .is_err());

    // Dot-product identity <J t, c> = <t, J^T c> with both state-aware functions.
    let lhs = dot(&dy, &c);
    let rhs = dot(&tw, &gw) + dot(&tb, &gb) + dot(&tx, &gx);
    assert!((lhs - rhs).abs() <= 1e-14, "{lhs} vs {rhs}");
    for seed in 0..5 {
        let mut r = Rng(1000 + seed);
        let (tw, tb, tx, c) = (
            r.tensor(&[2, 3], -1.0, 1.0),
            r.tensor(&[3], -1.0, 1.0),
            r.tensor(&[2], -1.0, 1.0),
            r.tensor(&[3], -1.0, 1.0),
        );
        let (_, dy) = jvp(f)
            .grad_states(vec![l.w.clone(), l.b.clone()])
            .argnums(0)
            .call_jvp(l.x.clone(), &[tw.clone(), tb.clone(), tx.clone()])
            .unwrap();
        let (g, gx): (Vec<Tensor>, Tensor) = vjp(f, c.clone())
            .grad_states(vec![l.w.clone(), l.b.clone()])
            .argnums(0)
            .call(l.x.clone())
            .unwrap();
        let lhs = dot(&dy, &c);
        let rhs = dot(&tw, &g[0]) + dot(&tb, &g[1]) + dot(&tx, &gx);
        assert!(
            (lhs - rhs).abs() <= 1e-14 * (1.0 + lhs.abs()),
            "seed {seed}: {lhs} vs {rhs}"
        );
    }
    assert_eq!(vals(&l.w.value()), vec![0.3, -0.7, 0.5, 0.9, 0.2, -0.4]);
}

#[test]
fn jvp_and_vjp_of_a_function_that_writes_its_state() {
    // §1.4: p = 3, x = 2, y = p x; p := 10 p; return y + p. Derivative w.r.t. p on entry:
    // x + 10 = 12, value 36, and p = 30 afterwards.
    let p = State::new(Tensor::scalar(3.0f64));
    let f = |x: Tensor| {
        let y = &p.value() * &x;
        p.set_value(p.value() * 10.0);
        y + p.value()
    };
    let (y, dy) = jvp(f)
        .grad_states(p.clone())
        .call_jvp(Tensor::scalar(2.0f64), &[Tensor::scalar(1.0f64)])
        .unwrap();
    assert_close("jvp value", &y, &[], &[36.0], 0.0, 1e-14);
    assert_close("jvp dp", &dy, &[], &[12.0], 0.0, 1e-14);
    assert_close("p after jvp", &p.value(), &[], &[30.0], 0.0, 0.0);
    p.set_value(Tensor::scalar(3.0f64));
    let ((gp, gx), y): ((Tensor, Tensor), Tensor) = vjp(f, Tensor::scalar(2.0f64))
        .grad_states(p.clone())
        .argnums(0)
        .return_value()
        .call(Tensor::scalar(2.0f64))
        .unwrap();
    assert_close("vjp dp", &gp, &[], &[24.0], 0.0, 1e-14);
    assert_close("vjp dx", &gx, &[], &[6.0], 0.0, 1e-14);
    assert_close("vjp value", &y, &[], &[36.0], 0.0, 1e-14);
    assert_close("p after vjp", &p.value(), &[], &[30.0], 0.0, 0.0);
    p.set_value(Tensor::scalar(3.0f64));
    let (jp, jx): (Tensor, Tensor) = jacfwd(f)
        .grad_states(p.clone())
        .argnums(0)
        .call(Tensor::scalar(2.0f64))
        .unwrap();
    assert_close("jacfwd dp", &jp, &[], &[12.0], 0.0, 1e-14);
    assert_close("jacfwd dx", &jx, &[], &[3.0], 0.0, 1e-14);
}
