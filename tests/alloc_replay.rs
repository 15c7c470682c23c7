//! A jitted W1 step in steady state reuses every tensor buffer of the previous replay and
//! updates its parameters in place (a counting allocator in this test binary measures what is
//! still allocated per step).

use stategrad::prelude::*;
use stategrad::tensor::fresh_buffer_count;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static BYTES: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_jit_replays_allocate_no_tensor_buffers() {
    let w = ParamState::new(Tensor::zeros(&[1, 1]));
    let b = ParamState::new(Tensor::zeros(&[1]));
    let params: StateMap = [(path!("b"), b.clone()), (path!("w"), w.clone())]
        .into_iter()
        .collect();
    // 2000 samples so that tensor buffers (8 KB) stand out from bookkeeping allocations.
    let x = Tensor::linspace(-1.0, 1.0, 2000).reshape(&[-1, 1]);
    let y = 3.0 * &x + 1.0;
    let loss = |(x, y): (Tensor, Tensor)| {
        let mse = (x.matmul(&w.value()) + b.value() - y).square().mean();
        mse + 0.01 * (w.value().square().sum() + b.value().square().sum())
    };
    let step = jit(|(x, y): (Tensor, Tensor)| {
        let (g, l) = grad(loss)
            .grad_states(params.clone())
            .return_value()
            .call((x, y))?;
        for (p, s) in &params {
            s.set_value(s.value() - 0.1 * &g[p]);
        }
        Ok::<Tensor, Error>(l)
    });
    for _ in 0..5 {
        step.call((x.clone(), y.clone())).unwrap();
    }
    let measure = || {
        let (fresh, bytes, calls) = (
            fresh_buffer_count(),
            BYTES.load(Ordering::Relaxed),
            CALLS.load(Ordering::Relaxed),
        );
        let steps = 100;
        let mut last = 0.0;
        for _ in 0..steps {
            last = step.call((x.clone(), y.clone())).unwrap().item().unwrap();
        }
        assert_eq!(
            fresh_buffer_count(),
            fresh,
            "a steady-state replay allocated a tensor buffer"
        );
        let per_step = (BYTES.load(Ordering::Relaxed) - bytes) / steps;
        let calls_per_step = (CALLS.load(Ordering::Relaxed) - calls) / steps;
        // Bookkeeping only (tensor handles, small vectors); one 8 KB buffer alone would exceed
        // this.
        assert!(
            per_step < 8000,
            "{per_step} bytes allocated per replay ({calls_per_step} calls)"
        );
        (last, per_step, calls_per_step)
    };
    // First as closures, then (after enough runs) as native code: neither allocates per run.
    let (last, per_step, calls_per_step) = measure();
    for _ in 0..stategrad::exec::arena::NATIVE_AFTER_RUNS {
        step.call((x.clone(), y.clone())).unwrap();
    }
    let native = measure();
    assert_eq!((native.1, native.2), (per_step, calls_per_step));
    assert!(last.is_finite() && step.trace_count() == 1);
    // The step is small: it replays on the arena, one slice kernel per primitive, and writes
    // the new parameters into the old ones' buffers (no one else holds them). A step allocates
    // only the loss tensor's two handles and four small vectors of bookkeeping: 6 allocations
    // (10 when the two written states got new tensors).
    let stats = step.program_stats();
    assert!(stats.len() == 1 && stats[0].arena, "{stats:?}");
    assert!(
        calls_per_step <= 6,
        "{calls_per_step} allocations per replay"
    );
    eprintln!("jitted W1 replay: {per_step} bytes in {calls_per_step} allocations per step, no tensor buffers");
}
