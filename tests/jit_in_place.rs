//! In-place fused passes, alone in their test binary: they count freshly allocated tensor
//! buffers, a process-wide counter that tests running beside them would disturb.

mod common;

use stategrad::prelude::*;
use stategrad::{jit, random};

/// A fused pass writes its output into the buffer of an input it reads for the last time when
/// nothing else holds that input (one fresh buffer for a matmul and the pass after it, from an
/// empty pool); an argument, a value the program also returns, or a value read later is never
/// overwritten.
#[test]
fn fused_passes_update_dying_inputs_in_place() {
    random::seed(9);
    let x = random::normal(&[256, 256]);
    let eye = Tensor::eye(256);
    let f = |x: Tensor| ((x.matmul(&eye) * 2.0 + 1.0).tanh() - 0.5) * 3.0;
    let j = jit(f);
    let want = f(x.clone());
    let fresh = common::fresh_buffers_in_replay(|| j.call(x.clone()).unwrap(), &want);
    assert_eq!(fresh, 1, "the pass reuses the product's buffer");
    assert_eq!(j.program_stats()[0].fused_passes, 1);

    // The argument itself is held by the caller: the pass gets a buffer of its own.
    let x0 = x.to_vec::<f32>();
    let g = jit(|x: Tensor| ((&x * 2.0 + 1.0).tanh() - 0.5) * 3.0);
    let first = g.call(x.clone()).unwrap();
    let second = g.call(x.clone()).unwrap();
    assert_eq!(x.to_vec::<f32>(), x0);
    assert_eq!(first.to_vec::<f32>(), second.to_vec::<f32>());

    // A value also returned (or read by a later step) keeps its numbers.
    let h = |x: Tensor| {
        let y = x.matmul(&eye);
        let z = ((&y * 2.0 + 1.0).tanh() - 0.5) * 3.0;
        let w = (&y + 1.0).sum();
        (y, z, w)
    };
    let jh = jit(h);
    let (y0, z0, w0) = h(x.clone());
    for _ in 0..2 {
        let (y, z, w) = jh.call(x.clone()).unwrap();
        assert_eq!(y.to_vec::<f32>(), y0.to_vec::<f32>());
        assert!(z.allclose(&z0, 1e-6, 1e-6) && w.allclose(&w0, 1e-3, 1e-5));
    }
}
