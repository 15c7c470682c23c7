//! The BENCHMARK-WORKLOADS.md workloads that more than one bench measures (W2, W3, W4, W6):
//! their inputs, their functions, and the check each runs against a reference before it is
//! measured. `benches/workloads.rs` times them and `benches/peak_memory.rs` measures their peak
//! heap, both from these definitions, so the two always measure the same thing.

// Each bench that includes this file uses only part of it.
#![allow(dead_code)]

use stategrad::prelude::*;
use stategrad::random;
use std::collections::BTreeMap;

/// The W2/W6 network: MLP 784 -> 512 -> 512 -> 10, ReLU, softmax cross-entropy.
pub struct Mlp {
    /// Weights `w0..w2` and biases `b0..b2`.
    pub params: StateMap,
}

impl Mlp {
    pub fn new() -> Self {
        random::seed(6);
        let dims = [784, 512, 512, 10];
        let mut params = StateMap::new();
        for l in 0..3 {
            let s = (2.0 / dims[l] as f64).sqrt();
            params.insert(
                path!(format!("w{l}")),
                ParamState::new(random::normal(&[dims[l], dims[l + 1]]) * s),
            );
            params.insert(
                path!(format!("b{l}")),
                ParamState::new(Tensor::zeros(&[dims[l + 1]])),
            );
        }
        Mlp { params }
    }
    fn p(&self, name: &str) -> Tensor {
        self.params[&path!(name)].value()
    }
    pub fn loss(&self, x: &Tensor, y: &Tensor) -> Tensor {
        let h = (x.matmul(&self.p("w0")) + self.p("b0")).relu();
        let h = (h.matmul(&self.p("w1")) + self.p("b1")).relu();
        let logits = h.matmul(&self.p("w2")) + self.p("b2");
        -(logits.log_softmax(-1) * y).sum_along(&[-1], false).mean()
    }
    /// Bytes of all weights and biases.
    pub fn param_bytes(&self) -> usize {
        self.params.values().map(|s| tensor_bytes(&s.value())).sum()
    }
}

/// Bytes of a tensor's elements.
pub fn tensor_bytes(t: &Tensor) -> usize {
    let width = match t.dtype() {
        DType::F64 | DType::I64 => 8,
        DType::F32 | DType::I32 => 4,
        DType::Bool => 1,
    };
    t.numel() * width
}

pub fn one_hot_labels(n: usize) -> Tensor {
    let mut v = vec![0.0f32; n * 10];
    for i in 0..n {
        v[i * 10 + (i * 7) % 10] = 1.0;
    }
    Tensor::from_vec(v, &[n, 10]).expect("labels")
}

/// W2: one SGD training step of the MLP at batch 256.
pub struct W2 {
    pub mlp: Mlp,
    pub x: Tensor,
    pub y: Tensor,
}

impl W2 {
    pub const BATCH: usize = 256;
    /// GEMM flops of one step: forward, and twice that backward less the first layer's input
    /// gradient.
    pub const FLOPS: usize = 2 * 256 * (784 * 512 + 512 * 512 + 512 * 10) * 3 - 2 * 256 * 784 * 512;

    pub fn new() -> Self {
        let mlp = Mlp::new();
        let x = random::normal(&[Self::BATCH, 784]);
        let y = one_hot_labels(Self::BATCH);
        W2 { mlp, x, y }
    }
    /// Value and gradient w.r.t. every parameter, then SGD with lr 0.01; returns the loss.
    pub fn step(&self, (x, y): (Tensor, Tensor)) -> Result<Tensor> {
        let (g, l) = grad(|(x, y): (Tensor, Tensor)| self.mlp.loss(&x, &y))
            .grad_states(self.mlp.params.clone())
            .return_value()
            .call((x, y))?;
        for (p, s) in &self.mlp.params {
            s.set_value(s.value() - 0.01 * &g[p]);
        }
        Ok(l)
    }
    /// The initial loss of a fresh network is near ln(10), and a step lowers it.
    pub fn check(&self) {
        let l0 = self.step(self.xy()).unwrap().item().unwrap();
        let l1 = self.step(self.xy()).unwrap().item().unwrap();
        assert!(
            (l0 - 10f64.ln()).abs() < 1.5 && l1 < l0,
            "W2 guard: {l0} -> {l1}"
        );
    }
    pub fn xy(&self) -> (Tensor, Tensor) {
        (self.x.clone(), self.y.clone())
    }
    /// Bytes of the parameters, `x` and `y`.
    pub fn input_bytes(&self) -> usize {
        self.mlp.param_bytes() + tensor_bytes(&self.x) + tensor_bytes(&self.y)
    }
}

/// W3: f(x) = tanh(W2 @ tanh(W1 @ x + b1) + b2), x in R^n (n = 256 in the benchmark).
pub struct W3 {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    pub x: Tensor,
}

impl W3 {
    pub fn new(n: usize) -> Self {
        Self::with_hidden(n, n)
    }
    /// The same network with a hidden layer of `h` units (`W1` h x n, `W2` n x h): a chunk's
    /// pass then holds vectors of `h` per basis vector, against `n x n` for the Jacobian, which
    /// is where `chunk_size` matters (`tests/jacobian_memory_bound.rs`).
    pub fn with_hidden(n: usize, h: usize) -> Self {
        random::seed(1);
        W3 {
            w1: random::normal(&[h, n]) * (1.0 / (n as f64).sqrt()),
            b1: random::normal(&[h]) * 0.1,
            w2: random::normal(&[n, h]) * (1.0 / (h as f64).sqrt()),
            b2: random::normal(&[n]) * 0.1,
            x: random::normal(&[n]),
        }
    }
    pub fn f(&self, x: Tensor) -> Tensor {
        (self.w2.matmul(&(self.w1.matmul(&x) + &self.b1).tanh()) + &self.b2).tanh()
    }
    /// Bytes of the weights, biases and `x`.
    pub fn input_bytes(&self) -> usize {
        [&self.w1, &self.b1, &self.w2, &self.b2, &self.x]
            .into_iter()
            .map(tensor_bytes)
            .sum()
    }
    /// Both modes give the same Jacobian.
    pub fn check(&self) {
        let f = |x: Tensor| self.f(x);
        let jr = jacrev(f).call(self.x.clone()).unwrap();
        let jf = jacfwd(f).call(self.x.clone()).unwrap();
        assert!(jr.allclose(&jf, 1e-4, 1e-5), "W3 guard: jacrev != jacfwd");
    }
}

/// W4: f(x) = logsumexp(A @ x) + 0.5 |x|^2, A n x n (n = 512 in the benchmark).
pub struct W4 {
    a: Tensor,
    pub x: Tensor,
}

impl W4 {
    pub fn new(n: usize) -> Self {
        Self::with_rows(n, n)
    }
    /// The same function with `A` of `m` rows (m x n): the Hessian is still n x n, a chunk's
    /// pass holds vectors of `m` per basis vector.
    pub fn with_rows(m: usize, n: usize) -> Self {
        random::seed(2);
        let a = random::normal(&[m, n]) * (1.0 / (n as f64).sqrt());
        let x = random::normal(&[n]);
        W4 { a, x }
    }
    pub fn f(&self, x: Tensor) -> Tensor {
        self.a.matmul(&x).logsumexp(&[0], false) + 0.5 * x.square().sum()
    }
    /// Bytes of `A` and `x`.
    pub fn input_bytes(&self) -> usize {
        tensor_bytes(&self.a) + tensor_bytes(&self.x)
    }
    /// The Hessian is symmetric.
    pub fn check(&self) {
        let h = hessian(|x: Tensor| self.f(x)).call(self.x.clone()).unwrap();
        assert!(
            h.allclose(&h.t(), 1e-4, 1e-5),
            "W4 guard: Hessian not symmetric"
        );
    }
}

/// W6: per-example gradients of the MLP at batch 64 (vmap of grad).
pub struct W6 {
    pub mlp: Mlp,
    pub x: Tensor,
    pub y: Tensor,
}

impl W6 {
    pub const BATCH: usize = 64;

    pub fn new() -> Self {
        let mlp = Mlp::new();
        let x = random::normal(&[Self::BATCH, 784]);
        let y = one_hot_labels(Self::BATCH);
        W6 { mlp, x, y }
    }
    /// The gradient of one example's loss w.r.t. every parameter (vmap maps it over the batch).
    pub fn example_grad(&self, (x, y): (Tensor, Tensor)) -> Result<BTreeMap<Path, Tensor>> {
        grad(|(x, y): (Tensor, Tensor)| self.mlp.loss(&x.reshape(&[1, -1]), &y.reshape(&[1, -1])))
            .grad_states(self.mlp.params.clone())
            .call((x, y))
    }
    pub fn xy(&self) -> (Tensor, Tensor) {
        (self.x.clone(), self.y.clone())
    }
    /// Bytes of the parameters, `x` and `y`.
    pub fn input_bytes(&self) -> usize {
        self.mlp.param_bytes() + tensor_bytes(&self.x) + tensor_bytes(&self.y)
    }
    /// The mean of the per-example gradients is the batch gradient.
    pub fn check(&self) {
        let pe = vmap(|xy| self.example_grad(xy)).call(self.xy()).unwrap();
        let batch = grad(|(x, y): (Tensor, Tensor)| self.mlp.loss(&x, &y))
            .grad_states(self.mlp.params.clone())
            .call(self.xy())
            .unwrap();
        for (k, g) in &batch {
            assert!(
                pe[k].mean_along(&[0], false).allclose(g, 1e-3, 1e-5),
                "W6 guard {k}"
            );
        }
    }
}
