//! Jacobian and Hessian layouts of SEMANTICS §4 against closed forms and central differences (section 1).

use super::*;

#[test]
fn jacobians_of_args_and_states_match_closed_forms_and_central_differences() {
    let l = Layer::new();
    let f = |x: Tensor| l.forward(&x);
    let states: StateMap = BTreeMap::from([(path!("W"), l.w.clone()), (path!("b"), l.b.clone())]);

    let (jr_v, jr_x): (V, Tensor) = jacrev(f)
        .grad_states(states.clone())
        .argnums(0)
        .call(l.x.clone())
        .unwrap();
    let (jf_v, jf_x): (V, Tensor) = jacfwd(f)
        .grad_states(states.clone())
        .argnums(0)
        .call(l.x.clone())
        .unwrap();
    // The alias and the single-selection rows give the same blocks.
    let jx_only: Tensor = jacobian(f).call(l.x.clone()).unwrap();
    let jv_only: V = jacfwd(f)
        .grad_states(states.clone())
        .call(l.x.clone())
        .unwrap();

    let (w, b) = (path!("W"), path!("b"));
    assert_eq!(jr_v.keys().collect::<Vec<_>>(), vec![&w, &b]);
    assert_eq!(jf_v.keys().collect::<Vec<_>>(), vec![&w, &b]);

    // Exact layouts of §4: {W: (3,2,3), b: (3,3)} and (3,2) for x; closed forms.
    for (mode, jv, jx) in [("jacrev", &jr_v, &jr_x), ("jacfwd", &jf_v, &jf_x)] {
        assert_close(
            &format!("{mode} W"),
            &jv[&w],
            &[3, 2, 3],
            &l.jw(),
            1e-14,
            1e-15,
        );
        assert_close(
            &format!("{mode} b"),
            &jv[&b],
            &[3, 3],
            &l.jb(),
            1e-14,
            1e-15,
        );
        assert_close(&format!("{mode} x"), jx, &[3, 2], &l.jx(), 1e-14, 1e-15);
    }
    assert_same("jacobian alias vs jacrev", &jx_only, &jr_x, 1e-14);
    assert_same("jacfwd states only, W", &jv_only[&w], &jf_v[&w], 1e-14);
    assert_same("jacfwd states only, b", &jv_only[&b], &jf_v[&b], 1e-14);

    // Central differences of the pure function (x, W, b).
    let pure = |xs: &[Tensor]| Layer::pure(&xs[0], &xs[1], &xs[2]);
    let point = [l.x.clone(), l.w.value(), l.b.value()];
    for (k, got) in [(0, &jr_x), (1, &jr_v[&w]), (2, &jr_v[&b])] {
        let fd = fd_jacobian(&pure, &point, k);
        assert_close(
            &format!("jacrev input {k} vs central differences"),
            got,
            got.shape(),
            &fd,
            FD_RTOL,
            FD_ATOL,
        );
    }
    // States are untouched by the transforms.
    assert_eq!(vals(&l.w.value()), vec![0.3, -0.7, 0.5, 0.9, 0.2, -0.4]);
    assert_eq!(vals(&l.b.value()), vec![0.1, -0.2, 0.05]);
}

#[test]
fn jacobians_w_r_t_matrix_arguments_and_scalar_outputs() {
    // Non-square, several arguments: f(x, W) = sin(x @ W) * sum(x) with W (3,4), x (3,).
    let mut r = Rng(11);
    let x0 = r.tensor(&[3], -1.0, 1.0);
    let w0 = r.tensor(&[3, 4], -1.0, 1.0);
    let f = |(x, w): (Tensor, Tensor)| x.matmul(&w).sin() * x.sum();
    let [jrx, jrw] = jacrev(f)
        .argnums([0, 1])
        .call((x0.clone(), w0.clone()))
        .unwrap();
    let [jfx, jfw] = jacfwd(f)
        .argnums([0, 1])
        .call((x0.clone(), w0.clone()))
        .unwrap();
    assert_eq!(jrx.shape(), [4, 3]);
    assert_eq!(jrw.shape(), [4, 3, 4]);
    assert_same("jacrev vs jacfwd x", &jrx, &jfx, 1e-13);
    assert_same("jacrev vs jacfwd W", &jrw, &jfw, 1e-13);
    // argnums order is kept: (1, 0) gives (gW, gx).
    let [jw2, jx2] = jacrev(f)
        .argnums([1, 0])
        .call((x0.clone(), w0.clone()))
        .unwrap();
    assert_same("argnums [1, 0] W", &jw2, &jrw, 0.0);
    assert_same("argnums [1, 0] x", &jx2, &jrx, 0.0);
    let pure = |xs: &[Tensor]| f((xs[0].clone(), xs[1].clone()));
    let point = [x0.clone(), w0.clone()];
    for (k, got) in [(0, &jrx), (1, &jrw)] {
        let fd = fd_jacobian(&pure, &point, k);
        assert_close(
            &format!("input {k} vs fd"),
            got,
            got.shape(),
            &fd,
            FD_RTOL,
            FD_ATOL,
        );
    }
    // A scalar output: the Jacobian is the gradient, of the input's shape; a scalar input gives
    // output-shaped Jacobians.
    let g = |w: Tensor| x0.matmul(&w).tanh().sum();
    let jg = jacrev(g).call(w0.clone()).unwrap();
    let fg = jacfwd(g).call(w0.clone()).unwrap();
    let gg = grad(g).call(w0.clone()).unwrap();
    assert_eq!(jg.shape(), [3, 4]);
    assert_same("jacrev of scalar = grad", &jg, &gg, 1e-14);
    assert_same("jacfwd of scalar = grad", &fg, &gg, 1e-13);
    let h = |s: Tensor| (&w0 * &s).sin();
    let s0 = Tensor::scalar(0.7f64);
    let js = jacrev(h).call(s0.clone()).unwrap();
    let fs = jacfwd(h).call(s0.clone()).unwrap();
    assert_eq!(js.shape(), [3, 4]);
    let want: Vec<f64> = vals(&w0).iter().map(|w| w * (w * 0.7).cos()).collect();
    assert_close("d sin(W s)/ds jacrev", &js, &[3, 4], &want, 1e-14, 1e-15);
    assert_close("d sin(W s)/ds jacfwd", &fs, &[3, 4], &want, 1e-14, 1e-15);
}

#[test]
fn hessian_blocks_of_states_map_and_list() {
    let l = Layer::new();
    let g = |x: Tensor| l.forward(&x).sum();
    let states: StateMap = BTreeMap::from([(path!("W"), l.w.clone()), (path!("b"), l.b.clone())]);
    let (w, b) = (path!("W"), path!("b"));
    let hs: HV = hessian(g).grad_states(states).call(l.x.clone()).unwrap();

    // Closed forms: HWW[k,i,l,j] = s_i x_k x_l δij, HWb[k,i,j] = s_i x_k δij,
    // HbW[i,l,j] = s_i x_l δij, Hbb[i,j] = s_i δij.
    let (_, _, s) = l.yds();
    let x = l.xv();
    let mut hww = vec![0.0; 36];
    let mut hwb = vec![0.0; 18];
    let mut hbw = vec![0.0; 18];
    let mut hbb = vec![0.0; 9];
    for i in 0..3 {
        hbb[i * 4] = s[i];
        for k in 0..2 {
            hwb[k * 9 + i * 3 + i] = s[i] * x[k];
            hbw[i * 6 + k * 3 + i] = s[i] * x[k];
            for m in 0..2 {
                hww[(k * 3 + i) * 6 + m * 3 + i] = s[i] * x[k] * x[m];
            }
        }
    }
    assert_eq!(hs.keys().collect::<Vec<_>>(), vec![&w, &b]);
    for row in hs.values() {
        assert_eq!(row.keys().collect::<Vec<_>>(), vec![&w, &b]);
    }
    assert_close("H W/W", &hs[&w][&w], &[2, 3, 2, 3], &hww, 1e-13, 1e-15);
    assert_close("H W/b", &hs[&w][&b], &[2, 3, 3], &hwb, 1e-13, 1e-15);
    assert_close("H b/W", &hs[&b][&w], &[3, 2, 3], &hbw, 1e-13, 1e-15);
    assert_close("H b/b", &hs[&b][&b], &[3, 3], &hbb, 1e-13, 1e-15);

    // A list [W, b] gives [[HWW, HWb], [HbW, Hbb]]; [b, W] the transposed arrangement.
    let hl: Vec<Vec<Tensor>> = hessian(g)
        .grad_states(vec![l.w.clone(), l.b.clone()])
        .call(l.x.clone())
        .unwrap();
    assert_eq!((hl.len(), hl[0].len(), hl[1].len()), (2, 2, 2));
    assert_same("list WW", &hl[0][0], &hs[&w][&w], 0.0);
    assert_same("list Wb", &hl[0][1], &hs[&w][&b], 0.0);
    assert_same("list bW", &hl[1][0], &hs[&b][&w], 0.0);
    assert_same("list bb", &hl[1][1], &hs[&b][&b], 0.0);
    let [[bb, bw], [wb, ww]] = hessian(g)
        .grad_states([l.b.clone(), l.w.clone()])
        .call(l.x.clone())
        .unwrap();
    assert_same("array bb", &bb, &hs[&b][&b], 1e-14);
    assert_same("array bW", &bw, &hs[&b][&w], 1e-14);
    assert_same("array Wb", &wb, &hs[&w][&b], 1e-14);
    assert_same("array WW", &ww, &hs[&w][&w], 1e-14);
    // A single state gives a bare block.
    let hb: Tensor = hessian(g)
        .grad_states(l.b.clone())
        .call(l.x.clone())
        .unwrap();
    assert_same("single state", &hb, &hs[&b][&b], 1e-14);

    // Symmetry of the full Hessian of the scalar function: HWb[k,i,j] = HbW[j,k,i], HWW and Hbb
    // symmetric as matrices.
    let (vwb, vbw) = (vals(&hs[&w][&b]), vals(&hs[&b][&w]));
    for p in 0..6 {
        for j in 0..3 {
            assert!(
                (vwb[p * 3 + j] - vbw[j * 6 + p]).abs() <= 1e-15,
                "HWb vs HbW^T"
            );
        }
    }
    assert_symmetric("HWW", &vals(&hs[&w][&w]), 6, 1e-15);
    assert_symmetric("Hbb", &vals(&hs[&b][&b]), 3, 1e-15);

    // With the value: the scalar value, not a Hessian.
    let (_, value): (HV, Tensor) = hessian(g)
        .grad_states(BTreeMap::from([
            (path!("W"), l.w.clone()),
            (path!("b"), l.b.clone()),
        ]))
        .return_value()
        .call(l.x.clone())
        .unwrap();
    assert_close("value", &value, &[], &[l.yds().0.iter().sum()], 1e-15, 0.0);
}

#[test]
fn hessian_of_arguments_nested_arrays() {
    // g(x, W) = sum(tanh(x @ W + b)) with b a constant: Hxx (2,2), HxW (2,2,3), HWx (2,3,2),
    // HWW (2,3,2,3).
    let l = Layer::new();
    let b0 = l.b.value();
    let g = |(x, w): (Tensor, Tensor)| Layer::pure(&x, &w, &b0).sum();
    let [[hxx, hxw], [hwx, hww]] = hessian(g)
        .argnums([0, 1])
        .call((l.x.clone(), l.w.value()))
        .unwrap();
    let (_, d, s) = l.yds();
    let (x, w) = (l.xv(), l.wv());
    let mut want_xx = vec![0.0; 4];
    let mut want_xw = vec![0.0; 12];
    let mut want_wx = vec![0.0; 12];
    let mut want_ww = vec![0.0; 36];
    for k in 0..2 {
        for m in 0..2 {
            want_xx[k * 2 + m] = (0..3).map(|i| s[i] * w[k * 3 + i] * w[m * 3 + i]).sum();
            for j in 0..3 {
                // d²g / dx_k dW[m,j] = s_j x_m W[k,j] + δkm d_j.
                let v = s[j] * x[m] * w[k * 3 + j] + if k == m { d[j] } else { 0.0 };
                want_xw[k * 6 + m * 3 + j] = v;
                want_wx[(m * 3 + j) * 2 + k] = v;
                for n in 0..2 {
                    want_ww[(k * 3 + j) * 6 + n * 3 + j] = s[j] * x[k] * x[n];
                }
            }
        }
    }
    assert_close("Hxx", &hxx, &[2, 2], &want_xx, 1e-13, 1e-15);
    assert_close("HxW", &hxw, &[2, 2, 3], &want_xw, 1e-13, 1e-15);
    assert_close("HWx", &hwx, &[2, 3, 2], &want_wx, 1e-13, 1e-15);
    assert_close("HWW", &hww, &[2, 3, 2, 3], &want_ww, 1e-13, 1e-15);
    // A Vec of argnums gives nested Vecs with the same blocks; [1, 0] reorders them.
    let hv: Vec<Vec<Tensor>> = hessian(g)
        .argnums(vec![1, 0])
        .call((l.x.clone(), l.w.value()))
        .unwrap();
    assert_same("vec [1,0] WW", &hv[0][0], &hww, 1e-14);
    assert_same("vec [1,0] Wx", &hv[0][1], &hwx, 1e-14);
    assert_same("vec [1,0] xW", &hv[1][0], &hxw, 1e-14);
    assert_same("vec [1,0] xx", &hv[1][1], &hxx, 1e-14);
    // One int: the bare block.
    let h1: Tensor = hessian(g)
        .argnums(1)
        .call((l.x.clone(), l.w.value()))
        .unwrap();
    assert_same("argnums 1", &h1, &hww, 1e-14);
    let h0: Tensor = hessian(g).call((l.x.clone(), l.w.value())).unwrap();
    assert_same("argnums default", &h0, &hxx, 1e-14);
}

#[test]
fn hessian_of_vector_valued_functions() {
    // f(x) = tanh(x @ W + b): H[i,k,m] = s_i W[k,i] W[m,i], layout out + in + in = (3,2,2).
    let l = Layer::new();
    let f = |x: Tensor| l.forward(&x);
    let h = hessian(f).call(l.x.clone()).unwrap();
    let (_, _, s) = l.yds();
    let w = l.wv();
    let mut want = vec![0.0; 12];
    for i in 0..3 {
        for k in 0..2 {
            for m in 0..2 {
                want[i * 4 + k * 2 + m] = s[i] * w[k * 3 + i] * w[m * 3 + i];
            }
        }
    }
    assert_close("vector hessian x", &h, &[3, 2, 2], &want, 1e-13, 1e-15);
    // Each output's slice equals the Hessian of that output alone.
    for i in 0..3 {
        let hi = hessian(|x: Tensor| l.forward(&x).at(i as isize))
            .call(l.x.clone())
            .unwrap();
        assert_same(&format!("slice {i}"), &h.at(i as isize), &hi, 1e-14);
    }
    // Of states: out + outer + inner, e.g. W/W (3,2,3,2,3) = s_i x_k x_m δij δin.
    let hs: HV = hessian(f)
        .grad_states(BTreeMap::from([
            (path!("W"), l.w.clone()),
            (path!("b"), l.b.clone()),
        ]))
        .call(l.x.clone())
        .unwrap();
    let x = l.xv();
    let mut hww = vec![0.0; 108];
    let mut hbb = vec![0.0; 27];
    let mut hwb = vec![0.0; 54];
    for i in 0..3 {
        hbb[i * 9 + i * 3 + i] = s[i];
        for k in 0..2 {
            hwb[i * 18 + (k * 3 + i) * 3 + i] = s[i] * x[k];
            for m in 0..2 {
                hww[i * 36 + (k * 3 + i) * 6 + m * 3 + i] = s[i] * x[k] * x[m];
            }
        }
    }
    let (pw, pb) = (path!("W"), path!("b"));
    assert_close(
        "vector H W/W",
        &hs[&pw][&pw],
        &[3, 2, 3, 2, 3],
        &hww,
        1e-13,
        1e-15,
    );
    assert_close(
        "vector H W/b",
        &hs[&pw][&pb],
        &[3, 2, 3, 3],
        &hwb,
        1e-13,
        1e-15,
    );
    assert_eq!(hs[&pb][&pw].shape(), [3, 3, 2, 3]);
    assert_close(
        "vector H b/b",
        &hs[&pb][&pb],
        &[3, 3, 3],
        &hbb,
        1e-13,
        1e-15,
    );
    // A matrix-valued output keeps both output dims first.
    let fm = |x: Tensor| x.reshape(&[2, 1]).matmul(&x.reshape(&[1, 2])).sin();
    let hm = hessian(fm).call(l.x.clone()).unwrap();
    assert_eq!(hm.shape(), [2, 2, 2, 2]);
    // d²/dx_k dx_m sin(x_a x_c).
    let mut want = vec![0.0; 16];
    for a in 0..2 {
        for c in 0..2 {
            let p = x[a] * x[c];
            for k in 0..2 {
                for m in 0..2 {
                    let dk = |q: usize| if q == k { 1.0 } else { 0.0 };
                    let dm = |q: usize| if q == m { 1.0 } else { 0.0 };
                    let dpk = dk(a) * x[c] + x[a] * dk(c);
                    let dpm = dm(a) * x[c] + x[a] * dm(c);
                    let d2p = dk(a) * dm(c) + dm(a) * dk(c);
                    want[(a * 2 + c) * 4 + k * 2 + m] = -p.sin() * dpk * dpm + p.cos() * d2p;
                }
            }
        }
    }
    assert_close(
        "matrix-valued hessian",
        &hm,
        &[2, 2, 2, 2],
        &want,
        1e-13,
        1e-15,
    );
}
