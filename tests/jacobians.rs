//! Jacobians, Hessians and higher derivatives through the public API, in f64:
//!
//! 1. `jacrev == jacfwd ==` central differences on non-square Jacobians w.r.t. arguments and
//!    states, with the exact layouts of SEMANTICS §4 (Jacobians, Hessian blocks of states as a
//!    path-keyed map and as a list, Hessians of arguments, of vector-valued functions).
//! 2. The same results for every `chunk_size` (dividing the dimension or not) and for 1- and
//!    2-thread rayon pools, for `jacrev`, `jacfwd` and `hessian`.
//! 3. Third derivatives against closed forms, including a Hessian of a gradient w.r.t. a state.
//! 4. Property tests over random compositions of primitives: Jacobian columns against
//!    `call_jvp`, rows against `vjp`, directional derivatives against central differences, and
//!    symmetric Hessians of a scalar reduction; with arguments, states, or both.
//! 5. State-aware `vjp` / `call_jvp` against closed forms and the dot-product identity.
//! 6. Symbolic zeros (outputs that do not depend on an input) and `check_states(false)`.

use stategrad::prelude::*;
use std::collections::BTreeMap;

type V = BTreeMap<Path, Tensor>;
type HV = BTreeMap<Path, BTreeMap<Path, Tensor>>;

// ------------------------------------------------------------------ helpers

/// splitmix64: a tiny deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn coin(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// A f64 tensor of `shape`, uniform in [lo, hi).
    fn tensor(&mut self, shape: &[usize], lo: f64, hi: f64) -> Tensor {
        let n = shape.iter().product();
        t((0..n).map(|_| self.range(lo, hi)).collect(), shape)
    }
}

fn t(v: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape).expect("data length matches shape")
}

fn vals(x: &Tensor) -> Vec<f64> {
    x.to_f64_vec()
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Shape, dtype f64, and values within `atol + rtol * |want|`.
#[track_caller]
fn assert_close(label: &str, got: &Tensor, shape: &[usize], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.shape(), shape, "{label}: shape");
    assert_eq!(got.dtype(), DType::F64, "{label}: dtype");
    let g = vals(got);
    assert_eq!(g.len(), want.len(), "{label}: length");
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= atol + rtol * b.abs(),
            "{label}: element {i}: got {a}, want {b} (|diff| = {:e})",
            (a - b).abs()
        );
    }
}

/// Two computed tensors agree: same shape, values within `tol * (1 + |b|)`.
#[track_caller]
fn assert_same(label: &str, a: &Tensor, b: &Tensor, tol: f64) {
    assert_eq!(a.shape(), b.shape(), "{label}: shapes differ");
    assert_eq!(a.dtype(), b.dtype(), "{label}: dtypes differ");
    for (i, (x, y)) in vals(a).iter().zip(vals(b)).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{label}: element {i}: {x} vs {y} (|diff| = {:e})",
            (x - y).abs()
        );
    }
}

/// Step, relative and absolute tolerance of central differences in f64.
const EPS: f64 = 1e-6;
const FD_RTOL: f64 = 1e-6;
const FD_ATOL: f64 = 1e-8;

/// The Jacobian of `f` w.r.t. input `k` by central differences, flat `(out, in_k)` row-major
/// (the layout `out + in_k` of the transforms, flattened).
fn fd_jacobian(f: &dyn Fn(&[Tensor]) -> Tensor, xs: &[Tensor], k: usize) -> Vec<f64> {
    let n = xs[k].numel();
    let m = f(xs).numel();
    let base = vals(&xs[k]);
    let mut jac = vec![0.0; m * n];
    for e in 0..n {
        let eval = |h: f64| {
            let mut v = base.clone();
            v[e] += h;
            let mut ys = xs.to_vec();
            ys[k] = t(v, xs[k].shape());
            vals(&f(&ys))
        };
        let (p, q) = (eval(EPS), eval(-EPS));
        for r in 0..m {
            jac[r * n + e] = (p[r] - q[r]) / (2.0 * EPS);
        }
    }
    jac
}

/// The directional derivative of `f` along `dirs` by central differences.
fn fd_directional(f: &dyn Fn(&[Tensor]) -> Tensor, xs: &[Tensor], dirs: &[Tensor]) -> Vec<f64> {
    let shift = |h: f64| -> Vec<Tensor> {
        xs.iter()
            .zip(dirs)
            .map(|(x, d)| {
                let v = vals(x)
                    .iter()
                    .zip(vals(d))
                    .map(|(a, b)| a + h * b)
                    .collect();
                t(v, x.shape())
            })
            .collect()
    };
    let (p, q) = (vals(&f(&shift(EPS))), vals(&f(&shift(-EPS))));
    p.iter()
        .zip(&q)
        .map(|(a, b)| (a - b) / (2.0 * EPS))
        .collect()
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape(), "dot: shapes");
    vals(a).iter().zip(vals(b)).map(|(x, y)| x * y).sum()
}

fn basis(shape: &[usize], e: usize) -> Tensor {
    let mut v = vec![0.0; numel(shape)];
    v[e] = 1.0;
    t(v, shape)
}

// ------------------------------------------------------------------ the tanh layer of §4

/// f(x) = tanh(x @ W + b) with W (2,3), b (3,), x (2,) in f64, and its closed forms.
struct Layer {
    w: State,
    b: State,
    x: Tensor,
}

impl Layer {
    fn new() -> Layer {
        Layer {
            w: ParamState::new(t(vec![0.3, -0.7, 0.5, 0.9, 0.2, -0.4], &[2, 3])),
            b: ParamState::new(t(vec![0.1, -0.2, 0.05], &[3])),
            x: t(vec![0.8, -0.6], &[2]),
        }
    }
    fn pure(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        (x.matmul(w) + b).tanh()
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        Layer::pure(x, &self.w.value(), &self.b.value())
    }
    fn wv(&self) -> Vec<f64> {
        vals(&self.w.value())
    }
    fn xv(&self) -> Vec<f64> {
        vals(&self.x)
    }
    /// y = tanh(z), d = 1 - y², s = tanh''(z) = -2 y d.
    fn yds(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let y = vals(&self.forward(&self.x));
        let d: Vec<f64> = y.iter().map(|y| 1.0 - y * y).collect();
        let s: Vec<f64> = y.iter().zip(&d).map(|(y, d)| -2.0 * y * d).collect();
        (y, d, s)
    }
    /// Jx[i,k] = d_i W[k,i].
    fn jx(&self) -> Vec<f64> {
        let (_, d, _) = self.yds();
        let w = self.wv();
        let mut out = vec![0.0; 6];
        for i in 0..3 {
            for k in 0..2 {
                out[i * 2 + k] = d[i] * w[k * 3 + i];
            }
        }
        out
    }
    /// JW[i,k,j] = d_i x_k δij.
    fn jw(&self) -> Vec<f64> {
        let (_, d, _) = self.yds();
        let x = self.xv();
        let mut out = vec![0.0; 18];
        for i in 0..3 {
            for k in 0..2 {
                out[i * 6 + k * 3 + i] = d[i] * x[k];
            }
        }
        out
    }
    /// Jb[i,j] = d_i δij.
    fn jb(&self) -> Vec<f64> {
        let (_, d, _) = self.yds();
        let mut out = vec![0.0; 9];
        for i in 0..3 {
            out[i * 4] = d[i];
        }
        out
    }
}

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

#[track_caller]
fn assert_symmetric(label: &str, h: &[f64], n: usize, tol: f64) {
    assert_eq!(h.len(), n * n, "{label}: size");
    let scale = h.iter().fold(1.0f64, |a, v| a.max(v.abs()));
    for i in 0..n {
        for j in 0..i {
            assert!(
                (h[i * n + j] - h[j * n + i]).abs() <= tol * scale,
                "{label}: not symmetric at ({i}, {j}): {} vs {}",
                h[i * n + j],
                h[j * n + i]
            );
        }
    }
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

// ------------------------------------------------------------------ chunking and threads

/// A bigger layer: x (4,), W (4,5), b (5,); f(x) = tanh(x W + b) * sin(x W), g = sum(f * c).
struct Big {
    w: State,
    b: State,
    x: Tensor,
    c: Tensor,
}

impl Big {
    fn new() -> Big {
        let mut r = Rng(2024);
        Big {
            w: ParamState::new(r.tensor(&[4, 5], -1.0, 1.0)),
            b: ParamState::new(r.tensor(&[5], -0.5, 0.5)),
            x: r.tensor(&[4], -1.0, 1.0),
            c: r.tensor(&[5], -1.0, 1.0),
        }
    }
    fn f(&self, x: &Tensor) -> Tensor {
        let z = x.matmul(&self.w.value());
        (&z + &self.b.value()).tanh() * z.sin()
    }
    fn g(&self, x: &Tensor) -> Tensor {
        (self.f(x) * &self.c).sum()
    }
}

/// Set `chunk_size` when given.
fn chunked<F, A, O, S, N, X, R, K>(
    tr: GradientTransform<F, A, O, S, N, X, R, K>,
    chunk: Option<usize>,
) -> GradientTransform<F, A, O, S, N, X, R, K> {
    match chunk {
        Some(c) => tr.param("chunk_size", c),
        None => tr,
    }
}

/// All blocks of every transform for one configuration (`chunk` = None: the default split).
fn all_blocks(m: &Big, chunk: Option<usize>) -> Vec<(String, Tensor)> {
    let f = |x: Tensor| m.f(&x);
    let g = |x: Tensor| m.g(&x);
    let sts = || BTreeMap::from([(path!("W"), m.w.clone()), (path!("b"), m.b.clone())]);
    let mut out = Vec::new();
    let mut push_map = |name: &str, v: V| {
        for (k, t) in v {
            out.push((format!("{name} {k}"), t));
        }
    };
    let (v, jx): (V, Tensor) = chunked(jacrev(f).grad_states(sts()).argnums(0), chunk)
        .call(m.x.clone())
        .unwrap();
    push_map("jacrev", v);
    let (v, fx): (V, Tensor) = chunked(jacfwd(f).grad_states(sts()).argnums(0), chunk)
        .call(m.x.clone())
        .unwrap();
    push_map("jacfwd", v);
    out.push(("jacrev x".into(), jx));
    out.push(("jacfwd x".into(), fx));
    let hs: HV = chunked(hessian(g).grad_states(sts()), chunk)
        .call(m.x.clone())
        .unwrap();
    for (k, row) in hs {
        for (l, t) in row {
            out.push((format!("hessian {k}/{l}"), t));
        }
    }
    let hx = chunked(hessian(g), chunk).call(m.x.clone()).unwrap();
    out.push(("hessian x".into(), hx));
    let hvx = chunked(hessian(f), chunk).call(m.x.clone()).unwrap();
    out.push(("vector hessian x".into(), hvx));
    out
}

#[track_caller]
fn assert_blocks_equal(label: &str, got: &[(String, Tensor)], want: &[(String, Tensor)]) {
    assert_eq!(got.len(), want.len(), "{label}: number of blocks");
    for ((ng, g), (nw, w)) in got.iter().zip(want) {
        assert_eq!(ng, nw, "{label}: block order");
        assert_same(&format!("{label}: {ng}"), g, w, 1e-12);
    }
}

#[test]
fn chunk_sizes_give_identical_results() {
    let m = Big::new();
    let base = all_blocks(&m, None);
    // Sanity: the base itself is right (jacrev == jacfwd, Hessian symmetric).
    let get = |name: &str| &base.iter().find(|(n, _)| n == name).unwrap().1;
    assert_same(
        "base jacrev W vs jacfwd",
        get("jacrev ('W',)"),
        get("jacfwd ('W',)"),
        1e-13,
    );
    assert_same(
        "base jacrev b vs jacfwd",
        get("jacrev ('b',)"),
        get("jacfwd ('b',)"),
        1e-13,
    );
    assert_same(
        "base jacrev x vs jacfwd",
        get("jacrev x"),
        get("jacfwd x"),
        1e-13,
    );
    assert_eq!(get("jacrev ('W',)").shape(), [5, 4, 5]);
    assert_eq!(get("hessian ('W',)/('b',)").shape(), [4, 5, 5]);
    assert_eq!(get("vector hessian x").shape(), [5, 4, 4]);
    assert_symmetric("hessian x", &vals(get("hessian x")), 4, 1e-14);
    // Dimensions chunked: outputs 5 (jacrev), inputs up to 20 (jacfwd), 29 Hessian rows.
    for n in [5usize, 20, 29] {
        for c in [1, 2, 3, 5, 7, n, n + 3] {
            let got = all_blocks(&m, Some(c));
            assert_blocks_equal(&format!("chunk_size {c} (n = {n})"), &got, &base);
        }
    }
}

#[test]
fn thread_counts_give_identical_results() {
    let m = Big::new();
    let base = all_blocks(&m, Some(1));
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for chunk in [None, Some(1), Some(3), Some(7), Some(40)] {
            let got = pool.install(|| all_blocks(&m, chunk));
            assert_blocks_equal(&format!("{threads} threads, chunk {chunk:?}"), &got, &base);
        }
    }
}

// ------------------------------------------------------------------ third derivatives

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

// ------------------------------------------------------------------ random compositions

#[derive(Clone, Debug)]
enum Expr {
    In(usize),
    Tanh(Box<Expr>),
    Sin(Box<Expr>),
    /// exp(0.5 tanh(e)): exp of small values.
    ExpSmall(Box<Expr>),
    Add(Box<Expr>, Box<Expr>),
    Mul(Box<Expr>, Box<Expr>),
    /// `e @ m`, m of shape (last, k).
    MatMul(Box<Expr>, Tensor),
    SumAxis(Box<Expr>, usize),
    Reshape(Box<Expr>, Vec<usize>),
    Slice(Box<Expr>, usize, usize, usize),
}

impl Expr {
    fn eval(&self, ins: &[Tensor]) -> Tensor {
        use Expr::*;
        match self {
            In(i) => ins[*i].clone(),
            Tanh(e) => e.eval(ins).tanh(),
            Sin(e) => e.eval(ins).sin(),
            ExpSmall(e) => (e.eval(ins).tanh() * 0.5).exp(),
            Add(a, b) => a.eval(ins) + b.eval(ins),
            Mul(a, b) => a.eval(ins) * b.eval(ins),
            MatMul(e, m) => e.eval(ins).matmul(m),
            SumAxis(e, ax) => e.eval(ins).sum_along(&[*ax as isize], false),
            Reshape(e, s) => e.eval(ins).try_reshape_to(s).unwrap(),
            Slice(e, ax, a, b) => e.eval(ins).slice_axis(*ax, *a, *b),
        }
    }
    fn uses(&self, i: usize) -> bool {
        use Expr::*;
        match self {
            In(j) => *j == i,
            Tanh(e)
            | Sin(e)
            | ExpSmall(e)
            | MatMul(e, _)
            | SumAxis(e, _)
            | Reshape(e, _)
            | Slice(e, ..) => e.uses(i),
            Add(a, b) | Mul(a, b) => a.uses(i) || b.uses(i),
        }
    }
}

/// A random shape of the same size.
fn reshape_target(r: &mut Rng, n: usize) -> Vec<usize> {
    let divs: Vec<usize> = (1..=n).filter(|&d| (n / d) * d == n).collect();
    match r.below(4) {
        0 if n == 1 => vec![],
        0 | 1 => vec![n],
        _ => {
            let d = divs[r.below(divs.len())];
            vec![d, n / d]
        }
    }
}

/// Make `e` (of shape `from`) have shape `to`: flatten, then slice or multiply by a random
/// matrix, then reshape.
fn adapt(r: &mut Rng, e: Expr, from: &[usize], to: &[usize]) -> Expr {
    if from == to && r.coin(0.5) {
        return e;
    }
    let (n, m) = (numel(from), numel(to));
    let flat = Expr::Reshape(Box::new(e), vec![n]);
    let lin = if n >= m && r.coin(0.5) {
        let s = r.below(n - m + 1);
        Expr::Slice(Box::new(flat), 0, s, s + m)
    } else {
        let scale = 1.0 / (n as f64).sqrt();
        Expr::MatMul(Box::new(flat), r.tensor(&[n, m], -scale, scale))
    };
    Expr::Reshape(Box::new(lin), to.to_vec())
}

fn gen(r: &mut Rng, depth: usize, shapes: &[Vec<usize>]) -> (Expr, Vec<usize>) {
    if depth == 0 || r.coin(0.15) {
        let i = r.below(shapes.len());
        return (Expr::In(i), shapes[i].clone());
    }
    let (a, sa) = gen(r, depth - 1, shapes);
    match r.below(9) {
        0 => (Expr::Tanh(Box::new(a)), sa),
        1 => (Expr::Sin(Box::new(a)), sa),
        2 => (Expr::ExpSmall(Box::new(a)), sa),
        3 | 4 => {
            let (b, sb) = gen(r, depth - 1, shapes);
            // Same shape, or the last dim only (broadcast).
            let to = if !sa.is_empty() && r.coin(0.4) {
                vec![*sa.last().unwrap()]
            } else {
                sa.clone()
            };
            let b = Box::new(adapt(r, b, &sb, &to));
            let a = Box::new(a);
            let e = match (r.below(2), r.coin(0.5)) {
                (0, false) => Expr::Add(a, b),
                (0, true) => Expr::Add(b, a),
                (_, false) => Expr::Mul(a, b),
                (_, true) => Expr::Mul(b, a),
            };
            (e, sa)
        }
        5 => {
            let (a, sa) = if sa.is_empty() {
                (Expr::Reshape(Box::new(a), vec![1]), vec![1])
            } else {
                (a, sa)
            };
            let last = *sa.last().unwrap();
            let k = 1 + r.below(3);
            let scale = 1.0 / (last as f64).sqrt();
            let m = r.tensor(&[last, k], -scale, scale);
            let mut s = sa.clone();
            *s.last_mut().unwrap() = k;
            (Expr::MatMul(Box::new(a), m), s)
        }
        6 if !sa.is_empty() => {
            let ax = r.below(sa.len());
            let mut s = sa.clone();
            s.remove(ax);
            (Expr::SumAxis(Box::new(a), ax), s)
        }
        7 => {
            let s = reshape_target(r, numel(&sa));
            (Expr::Reshape(Box::new(a), s.clone()), s)
        }
        _ => {
            let axes: Vec<usize> = (0..sa.len()).filter(|&i| sa[i] >= 2).collect();
            if axes.is_empty() {
                return (Expr::Sin(Box::new(a)), sa);
            }
            let ax = axes[r.below(axes.len())];
            let start = r.below(sa[ax] - 1);
            let end = start + 1 + r.below(sa[ax] - start);
            let mut s = sa.clone();
            s[ax] = end - start;
            (Expr::Slice(Box::new(a), ax, start, end), s)
        }
    }
}

fn random_shape(r: &mut Rng) -> Vec<usize> {
    let nd = r.below(3);
    (0..nd).map(|_| 1 + r.below(3)).collect()
}

/// How the two inputs of a random case reach the function.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Both are arguments, `argnums([0, 1])`.
    Args,
    /// Both are states, `grad_states(vec![s0, s1])` (`check_states(false)`).
    States,
    /// Input 0 an argument, input 1 a state: `grad_states(s).argnums(0)`, tangents (s, x).
    Mixed,
}

struct Case {
    e: Expr,
    out_shape: Vec<usize>,
    xs: [Tensor; 2],
    s: [State; 2],
    mode: Mode,
}

impl Case {
    /// Set the states to the case's point (the state modes read them).
    fn reset(&self) {
        self.s[0].set_value(self.xs[0].clone());
        self.s[1].set_value(self.xs[1].clone());
    }
    fn dummy() -> Tensor {
        Tensor::scalar(0.0f64)
    }

    /// Jacobians in input order by `jacrev` (fwd = false) or `jacfwd`.
    fn jacobians(&self, fwd: bool) -> [Tensor; 2] {
        self.reset();
        let e = &self.e;
        let s = &self.s;
        match self.mode {
            Mode::Args => {
                let f = |(x, y): (Tensor, Tensor)| e.eval(&[x, y]);
                let tr = if fwd { jacfwd(f) } else { jacrev(f) };
                tr.argnums([0, 1])
                    .call((self.xs[0].clone(), self.xs[1].clone()))
                    .unwrap()
            }
            Mode::States => {
                let f = |_: Tensor| e.eval(&[s[0].value(), s[1].value()]);
                let tr = if fwd { jacfwd(f) } else { jacrev(f) };
                let v: Vec<Tensor> = tr
                    .grad_states(vec![s[0].clone(), s[1].clone()])
                    .check_states(false)
                    .call(Case::dummy())
                    .unwrap();
                [v[0].clone(), v[1].clone()]
            }
            Mode::Mixed => {
                let f = |x: Tensor| e.eval(&[x, s[1].value()]);
                let tr = if fwd { jacfwd(f) } else { jacrev(f) };
                let (js, jx): (Tensor, Tensor) = tr
                    .grad_states(s[1].clone())
                    .argnums(0)
                    .check_states(false)
                    .call(self.xs[0].clone())
                    .unwrap();
                [jx, js]
            }
        }
    }

    /// (value, J · (t0, t1)) by `call_jvp`.
    fn jvp(&self, t0: &Tensor, t1: &Tensor) -> (Tensor, Tensor) {
        self.reset();
        let e = &self.e;
        let s = &self.s;
        match self.mode {
            Mode::Args => jvp(|(x, y): (Tensor, Tensor)| e.eval(&[x, y]))
                .argnums([0, 1])
                .call_jvp(
                    (self.xs[0].clone(), self.xs[1].clone()),
                    &[t0.clone(), t1.clone()],
                )
                .unwrap(),
            Mode::States => jvp(|_: Tensor| e.eval(&[s[0].value(), s[1].value()]))
                .grad_states(vec![s[0].clone(), s[1].clone()])
                .check_states(false)
                .call_jvp(Case::dummy(), &[t0.clone(), t1.clone()])
                .unwrap(),
            Mode::Mixed => jvp(|x: Tensor| e.eval(&[x, s[1].value()]))
                .grad_states(s[1].clone())
                .argnums(0)
                .check_states(false)
                .call_jvp(self.xs[0].clone(), &[t1.clone(), t0.clone()])
                .unwrap(),
        }
    }

    /// J^T c in input order by `vjp`, with the value.
    fn vjp(&self, c: &Tensor) -> ([Tensor; 2], Tensor) {
        self.reset();
        let e = &self.e;
        let s = &self.s;
        match self.mode {
            Mode::Args => vjp(|(x, y): (Tensor, Tensor)| e.eval(&[x, y]), c.clone())
                .argnums([0, 1])
                .return_value()
                .call((self.xs[0].clone(), self.xs[1].clone()))
                .unwrap(),
            Mode::States => {
                let (v, l): (Vec<Tensor>, Tensor) =
                    vjp(|_: Tensor| e.eval(&[s[0].value(), s[1].value()]), c.clone())
                        .grad_states(vec![s[0].clone(), s[1].clone()])
                        .check_states(false)
                        .return_value()
                        .call(Case::dummy())
                        .unwrap();
                ([v[0].clone(), v[1].clone()], l)
            }
            Mode::Mixed => {
                let ((gs, gx), l): ((Tensor, Tensor), Tensor) =
                    vjp(|x: Tensor| e.eval(&[x, s[1].value()]), c.clone())
                        .grad_states(s[1].clone())
                        .argnums(0)
                        .check_states(false)
                        .return_value()
                        .call(self.xs[0].clone())
                        .unwrap();
                ([gx, gs], l)
            }
        }
    }

    /// Hessian blocks of `sum(sin(f) * c)` (Mixed: the two diagonal blocks only, off-diagonal
    /// ones `None`).
    fn hessian(&self, c: &Tensor) -> [[Option<Tensor>; 2]; 2] {
        self.reset();
        let e = &self.e;
        let s = &self.s;
        let red = |y: Tensor| (y.sin() * c).sum();
        match self.mode {
            Mode::Args => {
                let h = hessian(|(x, y): (Tensor, Tensor)| red(e.eval(&[x, y])))
                    .argnums([0, 1])
                    .call((self.xs[0].clone(), self.xs[1].clone()))
                    .unwrap();
                h.map(|row| row.map(Some))
            }
            Mode::States => {
                let h: Vec<Vec<Tensor>> =
                    hessian(|_: Tensor| red(e.eval(&[s[0].value(), s[1].value()])))
                        .grad_states(vec![s[0].clone(), s[1].clone()])
                        .check_states(false)
                        .call(Case::dummy())
                        .unwrap();
                [
                    [Some(h[0][0].clone()), Some(h[0][1].clone())],
                    [Some(h[1][0].clone()), Some(h[1][1].clone())],
                ]
            }
            Mode::Mixed => {
                let hxx = hessian(|x: Tensor| red(e.eval(&[x, s[1].value()])))
                    .call(self.xs[0].clone())
                    .unwrap();
                let hss: Tensor = hessian(|x: Tensor| red(e.eval(&[x, s[1].value()])))
                    .grad_states(s[1].clone())
                    .check_states(false)
                    .call(self.xs[0].clone())
                    .unwrap();
                [[Some(hxx), None], [None, Some(hss)]]
            }
        }
    }
}

fn check_case(idx: usize, case: &Case, r: &mut Rng) {
    let label = format!("case {idx} ({:?}, {:?})", case.mode, case.e);
    let xs = &case.xs;
    let m = numel(&case.out_shape);
    let jr = case.jacobians(false);
    let jf = case.jacobians(true);
    let value = case.e.eval(xs);
    assert_eq!(
        value.shape(),
        case.out_shape.as_slice(),
        "{label}: shape inference"
    );
    for k in 0..2 {
        let mut want = case.out_shape.clone();
        want.extend_from_slice(xs[k].shape());
        assert_eq!(jr[k].shape(), want.as_slice(), "{label}: jacrev {k} layout");
        assert_same(
            &format!("{label}: jacrev vs jacfwd {k}"),
            &jr[k],
            &jf[k],
            1e-12,
        );
        if !case.e.uses(k) {
            assert!(
                vals(&jr[k]).iter().all(|v| *v == 0.0),
                "{label}: unused input {k}"
            );
        }
    }
    // Columns of jacfwd against call_jvp with basis tangents.
    for k in 0..2 {
        let n = xs[k].numel();
        let jv = vals(&jf[k]);
        for c in 0..n {
            let tk = basis(xs[k].shape(), c);
            let z = xs[1 - k].zeros_like();
            let (t0, t1) = if k == 0 { (&tk, &z) } else { (&z, &tk) };
            let (y, dy) = case.jvp(t0, t1);
            assert_same(&format!("{label}: jvp value"), &y, &value, 1e-15);
            assert_eq!(dy.shape(), case.out_shape.as_slice(), "{label}: jvp shape");
            let col: Vec<f64> = (0..m).map(|i| jv[i * n + c]).collect();
            assert_same(
                &format!("{label}: jacfwd column {c} of input {k} vs call_jvp"),
                &dy,
                &t(col, &case.out_shape),
                1e-12,
            );
        }
    }
    // Rows of jacrev against vjp with basis cotangents.
    for i in 0..m {
        let (g, y) = case.vjp(&basis(&case.out_shape, i));
        assert_same(&format!("{label}: vjp value"), &y, &value, 1e-15);
        for k in 0..2 {
            let n = xs[k].numel();
            let row: Vec<f64> = vals(&jr[k])[i * n..(i + 1) * n].to_vec();
            assert_same(
                &format!("{label}: jacrev row {i} of input {k} vs vjp"),
                &g[k],
                &t(row, xs[k].shape()),
                1e-12,
            );
        }
    }
    // A random direction against central differences, and the dot-product identity.
    let dirs = [
        r.tensor(xs[0].shape(), -1.0, 1.0),
        r.tensor(xs[1].shape(), -1.0, 1.0),
    ];
    let (_, dy) = case.jvp(&dirs[0], &dirs[1]);
    let fd = fd_directional(&|ins: &[Tensor]| case.e.eval(ins), xs, &dirs);
    assert_close(
        &format!("{label}: jvp vs fd"),
        &dy,
        &case.out_shape,
        &fd,
        1e-6,
        1e-7,
    );
    let cot = r.tensor(&case.out_shape, -1.0, 1.0);
    let (g, _) = case.vjp(&cot);
    let lhs = dot(&dy, &cot);
    let rhs = dot(&dirs[0], &g[0]) + dot(&dirs[1], &g[1]);
    assert!(
        (lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()),
        "{label}: <J t, c> = {lhs} vs <t, J^T c> = {rhs}"
    );
    // Hessian of a scalar reduction: shapes, and symmetry of the full matrix.
    let h = case.hessian(&cot);
    let ns = [xs[0].numel(), xs[1].numel()];
    let scale = h
        .iter()
        .flatten()
        .flatten()
        .flat_map(vals)
        .fold(1.0f64, |a, v| a.max(v.abs()));
    for a in 0..2 {
        for b in 0..2 {
            let Some(hab) = &h[a][b] else { continue };
            let mut want = xs[a].shape().to_vec();
            want.extend_from_slice(xs[b].shape());
            assert_eq!(
                hab.shape(),
                want.as_slice(),
                "{label}: hessian block {a}/{b} layout"
            );
            let Some(hba) = &h[b][a] else { continue };
            let (vab, vba) = (vals(hab), vals(hba));
            for i in 0..ns[a] {
                for j in 0..ns[b] {
                    let (p, q) = (vab[i * ns[b] + j], vba[j * ns[a] + i]);
                    assert!(
                        (p - q).abs() <= 1e-12 * scale,
                        "{label}: hessian {a}/{b} ({i}, {j}) = {p} vs {b}/{a} ({j}, {i}) = {q}"
                    );
                }
            }
            if !case.e.uses(a) || !case.e.uses(b) {
                assert!(
                    vab.iter().all(|v| *v == 0.0),
                    "{label}: block {a}/{b} not zero"
                );
            }
        }
    }
}

#[test]
fn random_compositions() {
    let mut r = Rng(0x5EED);
    let states = [
        ParamState::new(Tensor::scalar(0.0f64)),
        ParamState::new(Tensor::scalar(0.0f64)),
    ];
    for idx in 0..300 {
        let shapes = [random_shape(&mut r), random_shape(&mut r)];
        let depth = 1 + r.below(5);
        let (mut e, out_shape) = gen(&mut r, depth, &shapes);
        // Mostly both inputs reach the output; the rest test symbolic zeros.
        for k in 0..2 {
            if !e.uses(k) && r.coin(0.75) {
                let leaf = Expr::Sin(Box::new(Expr::In(k)));
                let b = Box::new(adapt(&mut r, leaf, &shapes[k], &out_shape));
                e = if r.coin(0.5) {
                    Expr::Add(Box::new(e), b)
                } else {
                    Expr::Mul(b, Box::new(e))
                };
            }
        }
        let xs = [
            r.tensor(&shapes[0], -1.0, 1.0),
            r.tensor(&shapes[1], -1.0, 1.0),
        ];
        let mode = [Mode::Args, Mode::States, Mode::Mixed][idx % 3];
        let case = Case {
            e,
            out_shape,
            xs,
            s: states.clone(),
            mode,
        };
        check_case(idx, &case, &mut r);
    }
}

// ------------------------------------------------------------------ state-aware vjp / jvp

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

// ------------------------------------------------------------------ symbolic zeros

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
