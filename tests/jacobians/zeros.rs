//! Symbolic zeros, `check_states(false)`, tree-valued outputs, stacked products and recorded Jacobians (section 6).

use super::*;

#[test]
fn outputs_that_do_not_depend_on_an_input_give_zero_blocks() {
    let mut r = Rng(5);
    let x0 = r.tensor(&[3], -1.0, 1.0);
    let y0 = r.tensor(&[2, 2], -1.0, 1.0);
    // y is not used at all.
    let f = |(x, _y): (Tensor, Tensor)| x.tanh();
    for fwd in [false, true] {
        let [jx, jy] = if fwd {
            jacfwd(f)
                .argnums([0, 1])
                .call((x0.clone(), y0.clone()))
                .unwrap()
        } else {
            jacrev(f)
                .argnums([0, 1])
                .call((x0.clone(), y0.clone()))
                .unwrap()
        };
        assert_eq!(jx.shape(), [3, 3]);
        assert_close("unused arg block", &jy, &[3, 2, 2], &[0.0; 12], 0.0, 0.0);
    }
    let [[hxx, hxy], [hyx, hyy]] = hessian(|(x, y): (Tensor, Tensor)| f((x, y)).sum())
        .argnums([0, 1])
        .call((x0.clone(), y0.clone()))
        .unwrap();
    assert_eq!(hxx.shape(), [3, 3]);
    assert_close("Hxy", &hxy, &[3, 2, 2], &[0.0; 12], 0.0, 0.0);
    assert_close("Hyx", &hyx, &[2, 2, 3], &[0.0; 12], 0.0, 0.0);
    assert_close("Hyy", &hyy, &[2, 2, 2, 2], &[0.0; 16], 0.0, 0.0);

    // A constant output, a linear function (zero Hessian), and a value used only through a
    // non-differentiable comparison or `detach`.
    let c = |x: Tensor| Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap() + x.detach().sum();
    for fwd in [false, true] {
        let j = if fwd {
            jacfwd(c).call(x0.clone())
        } else {
            jacrev(c).call(x0.clone())
        }
        .unwrap();
        assert_close("constant output", &j, &[2, 3], &[0.0; 6], 0.0, 0.0);
    }
    let lin = |x: Tensor| {
        x.matmul(
            &y0.reshape(&[2, 2])
                .slice_axis(0, 0, 1)
                .reshape(&[2])
                .broadcast_to(&[3, 2]),
        )
    };
    let hl = hessian(lin).call(x0.clone()).unwrap();
    assert_close(
        "hessian of a linear function",
        &hl,
        &[2, 3, 3],
        &[0.0; 18],
        0.0,
        0.0,
    );
    let cmp = |x: Tensor| x.gt_scalar(0.0) * 2.0 + x.sin().sum();
    let j = jacrev(cmp).call(x0.clone()).unwrap();
    let jf = jacfwd(cmp).call(x0.clone()).unwrap();
    let cosx: Vec<f64> = vals(&x0).iter().map(|v| v.cos()).collect();
    let want: Vec<f64> = (0..9).map(|p| cosx[p % 3]).collect();
    assert_close(
        "comparison has zero derivative",
        &j,
        &[3, 3],
        &want,
        1e-15,
        0.0,
    );
    assert_close("comparison jacfwd", &jf, &[3, 3], &want, 1e-15, 0.0);

    // States: `a` is used, `u` is read but does not reach the output, `n` is never touched.
    let a = ParamState::new(t(vec![0.5, -0.5, 1.5], &[3]));
    let u = ParamState::new(r.tensor(&[2, 3], -1.0, 1.0));
    let n = ParamState::new(r.tensor(&[4], -1.0, 1.0));
    let g = |x: Tensor| {
        let _unused = u.value().sin();
        (&x * &a.value()).tanh()
    };
    let sts = || {
        BTreeMap::from([
            (path!("a"), a.clone()),
            (path!("n"), n.clone()),
            (path!("u"), u.clone()),
        ])
    };
    // The untouched state is an error by default.
    let err = jacrev(g).grad_states(sts()).call(x0.clone()).unwrap_err();
    assert!(matches!(err, Error::UnusedGradState { .. }), "{err}");
    assert!(jacfwd(g).grad_states(sts()).call(x0.clone()).is_err());
    assert!(hessian(g).grad_states(sts()).call(x0.clone()).is_err());
    assert!(jvp(g)
        .grad_states(sts())
        .call_jvp(x0.clone(), &[a.value(), n.value(), u.value()])
        .is_err());
    // With check_states(false): zero blocks of the right shapes.
    for fwd in [false, true] {
        let (v, jx): (V, Tensor) = if fwd {
            jacfwd(g)
                .grad_states(sts())
                .argnums(0)
                .check_states(false)
                .call(x0.clone())
        } else {
            jacrev(g)
                .grad_states(sts())
                .argnums(0)
                .check_states(false)
                .call(x0.clone())
        }
        .unwrap();
        assert_eq!(jx.shape(), [3, 3]);
        assert_eq!(v[&path!("a")].shape(), [3, 3]);
        assert_close(
            "unused state n",
            &v[&path!("n")],
            &[3, 4],
            &[0.0; 12],
            0.0,
            0.0,
        );
        assert_close(
            "read-only state u",
            &v[&path!("u")],
            &[3, 2, 3],
            &[0.0; 18],
            0.0,
            0.0,
        );
        // The used blocks are still right: d tanh(x a)/da = diag(x (1 - y²)).
        let y = vals(&g(x0.clone()));
        let xv = vals(&x0);
        let want: Vec<f64> = (0..9)
            .map(|p| {
                let (i, j) = (p / 3, p % 3);
                if i == j {
                    xv[i] * (1.0 - y[i] * y[i])
                } else {
                    0.0
                }
            })
            .collect();
        assert_close(
            "used state a",
            &v[&path!("a")],
            &[3, 3],
            &want,
            1e-14,
            1e-15,
        );
    }
    let hs: HV = hessian(|x: Tensor| g(x).sum())
        .grad_states(sts())
        .check_states(false)
        .call(x0.clone())
        .unwrap();
    let shapes = [("a", vec![3usize]), ("n", vec![4]), ("u", vec![2, 3])];
    for (p, sp) in &shapes {
        for (q, sq) in &shapes {
            let blk = &hs[&path!(*p)][&path!(*q)];
            let mut want = sp.clone();
            want.extend_from_slice(sq);
            assert_eq!(blk.shape(), want.as_slice(), "hessian {p}/{q} layout");
            if *p != "a" || *q != "a" {
                assert!(
                    vals(blk).iter().all(|v| *v == 0.0),
                    "hessian {p}/{q} not zero"
                );
            }
        }
    }
    let (_, dy) = jvp(g)
        .grad_states(sts())
        .check_states(false)
        .call_jvp(x0.clone(), &[a.value().zeros_like(), n.value(), u.value()])
        .unwrap();
    assert_close("jvp along unused states", &dy, &[3], &[0.0; 3], 0.0, 0.0);
    let gv: V = vjp(g, Tensor::from_vec(vec![1.0f64, 1.0, 1.0], &[3]).unwrap())
        .grad_states(sts())
        .check_states(false)
        .call(x0.clone())
        .unwrap();
    assert_close("vjp unused n", &gv[&path!("n")], &[4], &[0.0; 4], 0.0, 0.0);
    assert_close(
        "vjp read-only u",
        &gv[&path!("u")],
        &[2, 3],
        &[0.0; 6],
        0.0,
        0.0,
    );
}

#[test]
fn identity_outputs_with_a_later_input() {
    // The output is itself the first input: the second input's block is a zero block (the
    // backward sweep used to index past the output node).
    let x = t(vec![1.0, 2.0], &[2]);
    let y = t(vec![3.0, 4.0, 5.0], &[3]);
    let id = |(x, _y): (Tensor, Tensor)| x;
    let eye = [1.0, 0.0, 0.0, 1.0];
    for fwd in [false, true] {
        let tr = if fwd { jacfwd(id) } else { jacrev(id) };
        let [jx, jy] = tr.argnums([0, 1]).call((x.clone(), y.clone())).unwrap();
        assert_close("d x / d x", &jx, &[2, 2], &eye, 0.0, 0.0);
        assert_close("d x / d y", &jy, &[2, 3], &[0.0; 6], 0.0, 0.0);
    }
    let c = t(vec![0.5, -1.0], &[2]);
    let [gx, gy] = vjp(id, c.clone())
        .argnums([0, 1])
        .call((x.clone(), y.clone()))
        .unwrap();
    assert_close("vjp x", &gx, &[2], &[0.5, -1.0], 0.0, 0.0);
    assert_close("vjp y", &gy, &[3], &[0.0; 3], 0.0, 0.0);
    let (_, dy) = jvp(id)
        .argnums([0, 1])
        .call_jvp((x.clone(), y.clone()), &[c.clone(), y.clone()])
        .unwrap();
    assert_close("jvp", &dy, &[2], &[0.5, -1.0], 0.0, 0.0);
    let [[hxx, hxy], [hyx, hyy]] = hessian(id)
        .argnums([0, 1])
        .call((x.clone(), y.clone()))
        .unwrap();
    assert_close("Hxx", &hxx, &[2, 2, 2], &[0.0; 8], 0.0, 0.0);
    assert_close("Hxy", &hxy, &[2, 2, 3], &[0.0; 12], 0.0, 0.0);
    assert_close("Hyx", &hyx, &[2, 3, 2], &[0.0; 12], 0.0, 0.0);
    assert_close("Hyy", &hyy, &[2, 3, 3], &[0.0; 18], 0.0, 0.0);
    // The same with states: the output is the first state's value.
    let (s0, s1) = (State::new(x.clone()), State::new(y.clone()));
    let f = |_: Tensor| {
        let v = s0.value();
        let _ = s1.value();
        v
    };
    let v: Vec<Tensor> = jacrev(f)
        .grad_states(vec![s0.clone(), s1.clone()])
        .call(Tensor::scalar(0.0f64))
        .unwrap();
    assert_close("state d s0", &v[0], &[2, 2], &eye, 0.0, 0.0);
    assert_close("state d s1", &v[1], &[2, 3], &[0.0; 6], 0.0, 0.0);
}

#[test]
fn hessian_with_states_and_argnums_gives_all_four_block_families() {
    let w = ParamState::new(Tensor::new([[0.3f64, -0.2, 0.5], [0.1, 0.4, -0.6]]));
    let x = Tensor::new([0.7f64, -1.1]);
    let f = |x: Tensor| x.matmul(&w.value()).tanh().sum() + x.square().sum() * w.value().sum();
    let h = hessian(f)
        .grad_states(w.clone())
        .argnums(0)
        .call(x.clone())
        .unwrap();
    let vv = hessian(f).grad_states(w.clone()).call(x.clone()).unwrap();
    let gg = hessian(f).argnums(0).call(x.clone()).unwrap();
    assert_eq!(h.vv.shape(), &[2, 3, 2, 3]);
    assert_eq!(h.vg.shape(), &[2, 3, 2]);
    assert_eq!(h.gv.shape(), &[2, 2, 3]);
    assert_eq!(h.gg.shape(), &[2, 2]);
    assert!(h.vv.allclose(&vv, 1e-12, 1e-12) && h.gg.allclose(&gg, 1e-12, 1e-12));
    // Mixed blocks: the Jacobian of one gradient w.r.t. the other input.
    let vg = jacrev(|x: Tensor| grad(f).grad_states(w.clone()).call(x))
        .call(x.clone())
        .unwrap();
    let gv = jacrev(|x: Tensor| grad(f).argnums(0).call(x))
        .grad_states(w.clone())
        .call(x.clone())
        .unwrap();
    assert!(h.vg.allclose(&vg, 1e-12, 1e-12) && h.gv.allclose(&gv, 1e-12, 1e-12));
    // Symmetry across the families: vg[i, j, k] == gv[k, i, j].
    let vgp = h.vg.permute(&[2, 0, 1]);
    assert!(vgp.allclose(&h.gv, 1e-12, 1e-12));
    // With an array of argnums, per-argument blocks.
    let g2 = |(x, y): (Tensor, Tensor)| (x.matmul(&w.value()) * &y).sum();
    let y = Tensor::new([1.0f64, 2.0, -1.0]);
    let h2 = hessian(g2)
        .grad_states(w.clone())
        .argnums([0, 1])
        .call((x.clone(), y.clone()))
        .unwrap();
    assert_eq!(h2.vg[1].shape(), &[2, 3, 3]);
    assert_eq!(h2.gv[0].shape(), &[2, 2, 3]);
    assert_eq!(h2.gg[0][1].shape(), &[2, 3]);
}

#[test]
fn jacobians_of_tree_valued_outputs_with_states_put_the_output_structure_outermost() {
    let w = ParamState::new(Tensor::new([[0.3f64, -0.2, 0.5], [0.1, 0.4, -0.6]]));
    let b = ParamState::new(Tensor::new([0.05f64, -0.1, 0.2]));
    let params: StateMap = [(path!("W"), w.clone()), (path!("b"), b.clone())]
        .into_iter()
        .collect();
    let x = Tensor::new([0.7f64, -1.1]);
    let f = |x: Tensor| {
        let h = (x.matmul(&w.value()) + b.value()).tanh();
        let mut m = std::collections::BTreeMap::new();
        m.insert("norm", h.square().sum());
        (h, m)
    };
    let leaf_h = |x: Tensor| f(x).0;
    let leaf_n = |x: Tensor| f(x).1["norm"].clone();
    for fwd in [false, true] {
        let (jh, jm) = if fwd {
            jacfwd(f)
                .grad_states(params.clone())
                .argnums(0)
                .call_tree(x.clone())
                .unwrap()
        } else {
            jacrev(f)
                .grad_states(params.clone())
                .argnums(0)
                .call_tree(x.clone())
                .unwrap()
        };
        let (vh, gh) = jacrev(leaf_h)
            .grad_states(params.clone())
            .argnums(0)
            .call(x.clone())
            .unwrap();
        let (vn, gn) = jacrev(leaf_n)
            .grad_states(params.clone())
            .argnums(0)
            .call(x.clone())
            .unwrap();
        assert_eq!(jh.0[&path!("W")].shape(), &[3, 2, 3]);
        assert_eq!(jh.1.shape(), &[3, 2]);
        assert_eq!(jm["norm"].0[&path!("b")].shape(), &[3]);
        for k in [path!("W"), path!("b")] {
            assert!(jh.0[&k].allclose(&vh[&k], 1e-12, 1e-12));
            assert!(jm["norm"].0[&k].allclose(&vn[&k], 1e-12, 1e-12));
        }
        assert!(jh.1.allclose(&gh, 1e-12, 1e-12) && jm["norm"].1.allclose(&gn, 1e-12, 1e-12));
    }
}

/// A shared matrix times a stack of column vectors (the product batched Jacobian columns make)
/// equals the per-vector products, also with the matrix transposed.
#[test]
fn stacked_matrix_vector_products_match_a_loop() {
    stategrad::random::seed(21);
    let a = stategrad::random::normal(&[6, 4]);
    let v = stategrad::random::normal(&[5, 4, 1]);
    let w = stategrad::random::normal(&[5, 6, 1]);
    let av = a.matmul(&v);
    let atw = a.t().matmul(&w);
    assert_eq!(av.shape(), &[5, 6, 1]);
    assert_eq!(atw.shape(), &[5, 4, 1]);
    for b in 0..5 {
        let vb = v.try_index_axis(0, b as isize).unwrap();
        let wb = w.try_index_axis(0, b as isize).unwrap();
        assert!(av
            .try_index_axis(0, b as isize)
            .unwrap()
            .allclose(&a.matmul(&vb), 1e-5, 1e-6));
        assert!(atw.try_index_axis(0, b as isize).unwrap().allclose(
            &a.t().matmul(&wb),
            1e-5,
            1e-6
        ));
    }
}

/// Under `jit`, a Jacobian without a `chunk_size` is recorded as one chunk whatever the rayon
/// pool: recorded chunks would replay one after another (each kernel then had a fraction of
/// the rows to split over the threads: W3's jitted jacrev on 2 threads ran 1.3x slower than
/// eager). The program must be the same on 1 and 4 threads, and agree with eager.
#[test]
fn jitted_jacobians_record_one_chunk_on_any_pool() {
    let w = Tensor::new([[0.5f64, -1.0, 2.0], [1.5, 0.25, -0.5], [0.0, 1.0, 1.0]]);
    let f = move |x: Tensor| (w.matmul(&x)).tanh();
    let x = Tensor::new([0.3f64, -0.7, 1.1]);
    let eager = jacrev(f.clone()).call(x.clone()).unwrap();
    let mut programs = Vec::new();
    for threads in [1, 4] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (f1, f2) = (f.clone(), f.clone());
            let rev = jit(move |x: Tensor| jacrev(f1.clone()).call(x));
            let fwd = jit(move |x: Tensor| jacfwd(f2.clone()).call(x));
            for got in [rev.call(x.clone()).unwrap(), fwd.call(x.clone()).unwrap()] {
                assert!(got.allclose(&eager, 1e-12, 1e-12), "{threads} threads");
            }
            programs.push(rev.program_stats()[0].primitives);
            programs.push(fwd.program_stats()[0].primitives);
        });
    }
    assert_eq!(
        programs[..2],
        programs[2..],
        "the recorded programs (jacrev, jacfwd) changed with the pool: {programs:?}"
    );
}
