//! Hand-fused kernels: what a user would write by hand for one benchmark workload, with the
//! same vector math as the kernels (so a benchmark can compare a compiled program against the
//! best single pass on the same machine, in the same run). The workload guards it against
//! the jitted gradient before timing it.

use rayon::prelude::*;

use stategrad::exec::FUSED_CHUNK;
use stategrad::simd::block::{vector as vm, SimdVec};
use stategrad::simd::isa::{with_vec, VecFn};
use stategrad::simd::{reference, Par, UnaryOp};

/// The gradient of W5 (`sum(tanh(x)·σ(x) + x²/2)`), `(1 - t²)·s + t·s·(1 - s) + x` with
/// `t = tanh(x)`, `s = σ(x)`, in one pass: each vector of `x` is loaded once, every
/// intermediate stays in registers, and `out` is written once. Chunks of [`FUSED_CHUNK`]
/// elements run over rayon when `par` is [`Par::Rayon`].
///
/// # Panics
/// If `x.len() != out.len()`.
pub fn w5_grad_hand_fused(x: &[f32], out: &mut [f32], par: Par) {
    assert_eq!(x.len(), out.len(), "w5_grad_hand_fused: lengths differ");
    if par == Par::Rayon {
        out.par_chunks_mut(FUSED_CHUNK)
            .zip(x.par_chunks(FUSED_CHUNK))
            .for_each(|(o, x)| chunk(x, o));
    } else {
        chunk(x, out);
    }
}

fn scalar(x: f32) -> f32 {
    let t = reference::unary_op(UnaryOp::Tanh, x);
    let s = reference::unary_op(UnaryOp::Sigmoid, x);
    (1.0 - t * t) * s + t * s * (1.0 - s) + x
}

/// One chunk on the vector type of the ISA the kernels run on (as a user's own kernel would be
/// written: see `stategrad::simd::isa::with_vec`).
fn chunk(x: &[f32], out: &mut [f32]) {
    struct Chunk<'a>(&'a [f32], &'a mut [f32]);
    impl VecFn<f32> for Chunk<'_> {
        type Output = ();
        #[inline(always)]
        fn call<V: SimdVec<Elem = f32>>(self) {
            chunk_v::<V>(self.0, self.1)
        }
    }
    with_vec(Chunk(x, out))
}

#[inline(always)]
fn chunk_v<V: SimdVec<Elem = f32>>(x: &[f32], out: &mut [f32]) {
    let l = V::LANES;
    let one = V::splat(1.0);
    let mut oc = out.chunks_exact_mut(l);
    let mut xc = x.chunks_exact(l);
    for (o, xs) in (&mut oc).zip(&mut xc) {
        let v = V::load(xs);
        let (t, _) = vm::tanh(v);
        let (s, bad) = vm::sigmoid(v);
        let g = (one - t * t) * s + t * s * (one - s) + v;
        g.store(o);
        if bad.any() {
            let m = bad.bitmask();
            for (j, (o, &xv)) in o.iter_mut().zip(xs).enumerate() {
                if (m >> j) & 1 != 0 {
                    *o = scalar(xv);
                }
            }
        }
    }
    for (o, &xv) in oc.into_remainder().iter_mut().zip(xc.remainder()) {
        *o = scalar(xv);
    }
}
