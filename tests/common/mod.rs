//! Helpers shared by the test binaries that count freshly allocated tensor buffers (each such
//! test is alone in its binary: the counter is process-wide).

use stategrad::prelude::*;

/// Runs `call` once (a trace, or a warm-up) and checks it against `want`, empties this thread's
/// buffer pool, then runs it again and returns how many tensor buffers that second run had to
/// allocate fresh (checking its result too).
pub fn fresh_buffers_in_replay(call: impl Fn() -> Tensor, want: &Tensor) -> u64 {
    assert!(call().allclose(want, 1e-6, 1e-6), "first call");
    stategrad::tensor::release_pooled_buffers();
    let before = stategrad::tensor::fresh_buffer_count();
    let got = call();
    let fresh = stategrad::tensor::fresh_buffer_count() - before;
    assert!(got.allclose(want, 1e-6, 1e-6), "replay");
    fresh
}
