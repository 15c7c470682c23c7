//! The same results for every `chunk_size` and for 1- and 2-thread pools (section 2).

use super::*;

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
