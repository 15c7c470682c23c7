//! Third derivatives against closed forms (section 3).

use super::*;

#[test]
fn third_derivatives_against_closed_forms() {
    // Scalar: f(x) = x² sin x; f''' = -x² cos x - 6x sin x + 6 cos x.
    let f = |x: Tensor| x.square() * x.sin();
    let g1 = |x: Tensor| grad(f).call(x);
    let g2 = |x: Tensor| grad(g1).call(x);
    for x0 in [-1.3f64, 0.4, 2.0] {
        let d3 = grad(g2).call(Tensor::scalar(x0)).unwrap();
        let want = -x0 * x0 * x0.cos() - 6.0 * x0 * x0.sin() + 6.0 * x0.cos();
        assert_close("grad(grad(grad))", &d3, &[], &[want], 1e-13, 1e-14);
        let d2 = g2(Tensor::scalar(x0)).unwrap();
        let want2 = -x0 * x0 * x0.sin() + 4.0 * x0 * x0.cos() + 2.0 * x0.sin();
        assert_close("grad(grad)", &d2, &[], &[want2], 1e-13, 1e-14);
    }

    // Non-separable: f(x) = exp(a·x); T[i,j,k] = a_i a_j a_k exp(a·x).
    let a = t(vec![0.5, -0.3, 0.8], &[3]);
    let x0 = t(vec![0.2, 0.7, -0.4], &[3]);
    let f = |x: Tensor| x.matmul(&a).exp();
    let e = vals(&x0.matmul(&a).exp())[0];
    let av = vals(&a);
    let mut want = vec![0.0; 27];
    for i in 0..3 {
        for j in 0..3 {
            for k in 0..3 {
                want[i * 9 + j * 3 + k] = av[i] * av[j] * av[k] * e;
            }
        }
    }
    let gf = |x: Tensor| grad(f).call(x);
    let jj = jacrev(|x: Tensor| jacrev(gf).call(x))
        .call(x0.clone())
        .unwrap();
    assert_close("jacrev(jacrev(grad))", &jj, &[3, 3, 3], &want, 1e-13, 1e-15);
    let ff = jacfwd(|x: Tensor| jacrev(gf).call(x))
        .call(x0.clone())
        .unwrap();
    assert_close("jacfwd(jacrev(grad))", &ff, &[3, 3, 3], &want, 1e-13, 1e-15);
    let rf = jacrev(|x: Tensor| jacfwd(gf).call(x))
        .call(x0.clone())
        .unwrap();
    assert_close("jacrev(jacfwd(grad))", &rf, &[3, 3, 3], &want, 1e-13, 1e-15);
    let hg = hessian(gf).call(x0.clone()).unwrap();
    assert_close("hessian(grad)", &hg, &[3, 3, 3], &want, 1e-13, 1e-15);
    let jh = jacrev(|x: Tensor| hessian(f).call(x))
        .call(x0.clone())
        .unwrap();
    assert_close("jacrev(hessian)", &jh, &[3, 3, 3], &want, 1e-13, 1e-15);
}

#[test]
fn third_derivatives_with_states() {
    // W a state (3,), f(x) = exp(W·x). The gradient w.r.t. x is W e (e = exp(W·x)); its Hessian
    // w.r.t. W: H[i,j,k] = e (δij x_k + δik x_j + W_i x_j x_k).
    let w = ParamState::new(t(vec![0.4, -0.6, 0.3], &[3]));
    let x0 = t(vec![0.5, 0.25, -0.8], &[3]);
    let f = |x: Tensor| x.matmul(&w.value()).exp();
    let gx = |x: Tensor| grad(f).call(x);
    let (wv, xv) = (vals(&w.value()), vals(&x0));
    let e = vals(&f(x0.clone()))[0];
    let d = |i: usize, j: usize| if i == j { 1.0 } else { 0.0 };
    let mut want = vec![0.0; 27];
    for i in 0..3 {
        for j in 0..3 {
            for k in 0..3 {
                want[i * 9 + j * 3 + k] =
                    e * (d(i, j) * xv[k] + d(i, k) * xv[j] + wv[i] * xv[j] * xv[k]);
            }
        }
    }
    let h: Tensor = hessian(gx).grad_states(w.clone()).call(x0.clone()).unwrap();
    assert_close(
        "hessian of grad_x w.r.t. state",
        &h,
        &[3, 3, 3],
        &want,
        1e-13,
        1e-15,
    );
    let hm: HV = hessian(gx)
        .grad_states(BTreeMap::from([(path!("w"), w.clone())]))
        .call(x0.clone())
        .unwrap();
    assert_same("map form", &hm[&path!("w")][&path!("w")], &h, 1e-14);

    // The inner gradient w.r.t. the state itself, the Hessian w.r.t. the same state:
    // d³ e / dW_i dW_j dW_k = x_i x_j x_k e.
    let gw = |x: Tensor| grad(f).grad_states(w.clone()).call(x);
    let h3: Tensor = hessian(gw).grad_states(w.clone()).call(x0.clone()).unwrap();
    let mut want3 = vec![0.0; 27];
    for i in 0..3 {
        for j in 0..3 {
            for k in 0..3 {
                want3[i * 9 + j * 3 + k] = xv[i] * xv[j] * xv[k] * e;
            }
        }
    }
    assert_close(
        "hessian of grad_W w.r.t. W",
        &h3,
        &[3, 3, 3],
        &want3,
        1e-13,
        1e-15,
    );
    // Mixed: the Jacobian w.r.t. x of the state Hessian.
    let hw = |x: Tensor| hessian(f).grad_states(w.clone()).call(x);
    let j3 = jacrev(hw).call(x0.clone()).unwrap();
    // d/dx_k (x_i x_j e) = (δik x_j + δjk x_i + x_i x_j W_k) e.
    let mut want4 = vec![0.0; 27];
    for i in 0..3 {
        for j in 0..3 {
            for k in 0..3 {
                want4[i * 9 + j * 3 + k] =
                    e * (d(i, k) * xv[j] + d(j, k) * xv[i] + xv[i] * xv[j] * wv[k]);
            }
        }
    }
    assert_close(
        "jacrev of state hessian w.r.t. x",
        &j3,
        &[3, 3, 3],
        &want4,
        1e-13,
        1e-15,
    );
    let j3f = jacfwd(hw).call(x0.clone()).unwrap();
    assert_close(
        "jacfwd of state hessian w.r.t. x",
        &j3f,
        &[3, 3, 3],
        &want4,
        1e-13,
        1e-15,
    );
    // grad(grad(grad)) through a state: scalar state p, f = p³ x; d³/dp³ = 6x.
    let p = ParamState::new(Tensor::scalar(0.7f64));
    let fp = |x: Tensor| p.value().powf(3.0) * x;
    let g1 = |x: Tensor| grad(fp).grad_states(p.clone()).call(x);
    let g2 = |x: Tensor| grad(g1).grad_states(p.clone()).call(x);
    let g3: Tensor = grad(g2)
        .grad_states(p.clone())
        .call(Tensor::scalar(1.5f64))
        .unwrap();
    assert_close("grad³ w.r.t. a state", &g3, &[], &[9.0], 1e-13, 1e-15);
    assert_eq!(vals(&w.value()), vec![0.4, -0.6, 0.3]);
    assert_eq!(vals(&p.value()), vec![0.7]);
}
