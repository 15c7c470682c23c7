//! `chunk_size(k)` bounds the memory of `jacrev`, `jacfwd` and `hessian` (README: "chunks
//! spread over rayon (`.chunk_size(n)` bounds memory)"): a chunk's pass holds `k` copies of
//! every intermediate, so the peak heap of a call grows with `k`, not with the number of basis
//! vectors. Alone in its binary: a counting global allocator (`benches/common/peak_alloc.rs`)
//! measures the peak, and the counters are process-wide.

#[path = "../benches/common/workloads.rs"]
mod defs;
#[path = "../benches/common/peak_alloc.rs"]
mod peak_alloc;

use defs::{W3, W4};
use peak_alloc::{peak_during, Peak};
use stategrad::prelude::*;
use stategrad::tensor::release_pooled_buffers;

/// The number of basis vectors (inputs and outputs of W3, inputs of W4), and the width of the
/// intermediates a pass carries per basis vector. The intermediates are the wide ones (W3 with
/// a hidden layer of `H`, W4 with `A` of `H` rows), so that what a chunk holds, not the n x n
/// result, is what chunking has to bound.
const N: usize = 64;
const H: usize = 1024;
/// The bound's constants, in vectors of `H` f32: what the forward pass keeps for the backward
/// one (a handful of `H`-vectors, with room to spare), and what a pass holds per basis vector
/// of its chunk (measured: jacrev 1.9, hessian 2.9, jacfwd 4.1).
const FIXED_VECTORS: usize = 16;
const VECTORS_PER_BASIS: usize = 6;

/// What a call with chunks of `k` may hold at its peak: the result three times (the chunks'
/// blocks, their concatenation, and jacfwd's permuted copy of it), the GEMM kernels' packing
/// space (`packing`: the library's, sized by its cache blocking and operands, measured rather
/// than bounded here), and `FIXED + k * PER_BASIS` vectors of `H`.
fn bound(k: usize, packing: usize) -> usize {
    let out = N * N * 4;
    3 * out + packing + (FIXED_VECTORS + k * VECTORS_PER_BASIS) * H * 4
}

/// The peak of one call after a warm-up call, with this thread's pool of freed buffers emptied
/// first (so that the peak is what the call needs, not what the warm-up left pooled).
fn peak(call: impl Fn(Option<usize>) -> Tensor, chunk: Option<usize>) -> Peak {
    let want = call(chunk);
    release_pooled_buffers();
    let (got, p) = peak_during(|| call(chunk));
    assert!(got.allclose(&want, 1e-6, 1e-6), "repeated call differs");
    p
}

/// One test, the cases in turn: the allocation counters are global.
#[test]
fn chunk_size_bounds_jacobian_and_hessian_memory() {
    // One thread: the default chunk is then every basis vector at once, and no second worker
    // holds a chunk of its own.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let w3 = W3::with_hidden(N, H);
        let f = |x: Tensor| w3.f(x);
        let w4 = W4::with_rows(H, N);
        let g = |x: Tensor| w4.f(x);
        let chunked = |t: GradientTransform<_, _, _>, k: Option<usize>| match k {
            Some(k) => t.chunk_size(k),
            None => t,
        };
        let cases: [(&str, &dyn Fn(Option<usize>) -> Tensor); 3] = [
            ("jacrev", &|k| {
                chunked(jacrev(f), k).call(w3.x.clone()).unwrap()
            }),
            ("jacfwd", &|k| {
                chunked(jacfwd(f), k).call(w3.x.clone()).unwrap()
            }),
            ("hessian", &|k| match k {
                Some(k) => hessian(g).chunk_size(k).call(w4.x.clone()).unwrap(),
                None => hessian(g).call(w4.x.clone()).unwrap(),
            }),
        ];
        for (name, call) in cases {
            let full = peak(call, None);
            eprintln!("{name}: unchunked peak {full:?}");
            for k in [1, 4, 16] {
                let p = peak(call, Some(k));
                eprintln!(
                    "{name}: chunk_size {k} peak {p:?}, bound {}",
                    bound(k, p.aligned)
                );
                assert!(
                    p.total <= bound(k, p.aligned),
                    "{name} with chunk_size {k}: peak {} bytes over the bound {}",
                    p.total,
                    bound(k, p.aligned)
                );
            }
            // The bound means something: one unchunked pass does not fit the bound of small
            // chunks (were `chunk_size` ignored, the assertions above would fail).
            assert!(
                full.total > bound(4, full.aligned),
                "{name}: the unchunked peak {} fits the bound of chunk_size 4",
                full.total
            );
            // And chunking pays: chunks of 4 need less than half (packing space aside).
            let small = peak(call, Some(4));
            assert!(
                (small.total - small.aligned) * 2 < full.total,
                "{name}: chunk_size 4 peaks at {small:?}, unchunked at {full:?}"
            );
        }
    });
}
