//! Liveness in jit replays, alone in its test binary: it counts freshly allocated tensor
//! buffers, a process-wide counter that tests running beside it would disturb.

mod common;

use stategrad::prelude::*;
use stategrad::{jit, random};

/// A replay drops each intermediate right after its last use, so a long chain of large steps
/// reuses a couple of buffers instead of holding one per step (checked from an empty buffer
/// pool: the count of freshly allocated buffers during one replay).
#[test]
fn replays_free_intermediates_after_their_last_use() {
    random::seed(8);
    let x = random::normal(&[256, 256]);
    let chain = |x: Tensor| {
        let mut y = x;
        for _ in 0..12 {
            y = y.t().matmul(&Tensor::eye(256)) * 0.5;
        }
        y
    };
    let j = jit(chain);
    let want = chain(x.clone());
    let fresh = common::fresh_buffers_in_replay(|| j.call(x.clone()).unwrap(), &want);
    // 36 steps each make a 64K-element buffer; with liveness a handful are live at once.
    assert!(
        fresh <= 6,
        "{fresh} fresh buffers in one replay of a 36-step chain"
    );
}
