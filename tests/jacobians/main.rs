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
//!
//! One module per section; the shared helpers and the tanh layer of §4 are here.

#[path = "../common/rng.rs"]
mod rng;

use rng::Rng;
use stategrad::prelude::*;
use std::collections::BTreeMap;

type V = BTreeMap<Path, Tensor>;
type HV = BTreeMap<Path, BTreeMap<Path, Tensor>>;

// ------------------------------------------------------------------ helpers

/// Tensors drawn from the test stream.
trait TensorDraw {
    /// A f64 tensor of `shape`, uniform in [lo, hi).
    fn tensor(&mut self, shape: &[usize], lo: f64, hi: f64) -> Tensor;
}

impl TensorDraw for Rng {
    fn tensor(&mut self, shape: &[usize], lo: f64, hi: f64) -> Tensor {
        let n = shape.iter().product();
        t(self.vec(n, lo, hi), shape)
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

mod chunks;
mod layouts;
mod random;
mod state_vjp;
mod third;
mod zeros;
