//! A jitted W1 step, and a jitted AdamW training step of an MLP, in steady state reuse every
//! tensor buffer of the previous replay and update their parameters in place (a counting
//! allocator in this test binary measures what is still allocated per step; the tests take
//! turns, as the counters are global).

use stategrad::nn::activation::Activation;
use stategrad::nn::layers::Mlp;
use stategrad::nn::loss::{softmax_cross_entropy, Reduction};
use stategrad::optim::{self, Optimizer};
use stategrad::prelude::*;
use stategrad::tensor::fresh_buffer_count;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// One measuring test at a time.
static TURN: Mutex<()> = Mutex::new(());

struct Counting;
static BYTES: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);
/// Bytes allocated with an alignment of 32 or more: the GEMM kernels' packing scratch (tensor
/// buffers are `Vec<f32>` / `Vec<f64>`, aligned to 4 or 8).
static ALIGNED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        if layout.align() >= 32 {
            ALIGNED.fetch_add(layout.size(), Ordering::Relaxed);
        }
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

/// What 100 steady-state calls of `step` allocated, per call.
struct PerStep {
    /// The loss of the last call.
    last: f64,
    /// Bytes allocated.
    bytes: usize,
    /// Allocations.
    calls: usize,
    /// Bytes allocated with alignment >= 32 (GEMM packing scratch).
    aligned: usize,
}

/// Calls `step` 100 times, three times over, and asserts that no tensor buffer was allocated
/// afresh (`what` names the step in the failure message). The counters are global, so another
/// thread's allocation (the test harness reporting the other test, while this one measures)
/// lands in them too: the window with the fewest bytes is the step's own, since an allocation
/// the step makes shows in every window.
fn measure(step: &impl Fn() -> Tensor, what: &str) -> PerStep {
    let fresh = fresh_buffer_count();
    let counters = || {
        (
            BYTES.load(Ordering::Relaxed),
            CALLS.load(Ordering::Relaxed),
            ALIGNED.load(Ordering::Relaxed),
        )
    };
    let steps = 100;
    let mut windows = Vec::new();
    for _ in 0..3 {
        let before = counters();
        let mut last = 0.0;
        for _ in 0..steps {
            last = step().item().unwrap();
        }
        let after = counters();
        windows.push(PerStep {
            last,
            bytes: (after.0 - before.0) / steps,
            calls: (after.1 - before.1) / steps,
            aligned: (after.2 - before.2) / steps,
        });
    }
    assert_eq!(
        fresh_buffer_count(),
        fresh,
        "a steady-state {what} replay allocated a tensor buffer"
    );
    windows
        .into_iter()
        .min_by_key(|w| (w.bytes, w.calls))
        .expect("three windows")
}

#[test]
fn steady_state_jit_replays_allocate_no_tensor_buffers() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
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
    let call = || step.call((x.clone(), y.clone())).unwrap();
    let measure = || {
        let m = measure(&call, "W1");
        // Bookkeeping only (tensor handles, small vectors); one 8 KB buffer alone would exceed
        // this.
        assert!(
            m.bytes < 8000,
            "{} bytes allocated per replay ({} calls)",
            m.bytes,
            m.calls
        );
        (m.last, m.bytes, m.calls)
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

#[test]
fn a_jitted_adamw_training_step_allocates_no_tensor_buffers_in_steady_state() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    stategrad::random::seed(0);
    // The digits example's MLP step: forward, softmax cross-entropy, grad, AdamW with a
    // warm-up + cosine schedule and weight decay masked off the biases.
    let model = Mlp::new(&[64, 128, 10], Activation::Relu);
    let params = model.states(ParamState);
    let opt = optim::adamw(optim::warmup_cosine_decay(0.0, 1e-2, 10, 1000))
        .weight_decay(1e-4)
        .mask(Filter::not(Filter::path_contains("bias")))
        .build(&params)
        .unwrap();
    let step = jit(|(x, y): (Tensor, Tensor)| -> stategrad::Result<Tensor> {
        let loss = |(x, y): (Tensor, Tensor)| {
            softmax_cross_entropy(&model.forward(&x), &y, Reduction::Mean)
        };
        let (grads, l) = grad(loss)
            .grad_states(params.clone())
            .return_value()
            .call((x, y))?;
        opt.step(&grads)?;
        Ok(l)
    });
    let x = Tensor::linspace(-1.0, 1.0, 64 * 64).reshape(&[64, 64]);
    let y = Tensor::from_vec((0..64).map(|i| i % 10).collect::<Vec<i64>>(), &[64]).unwrap();
    // Its fused passes (the optimizer's updates) get their code at the first call rather than
    // while a window is measured (generating code allocates).
    stategrad::exec::tuning::set_fused_native_after_elements(0);
    for _ in 0..5 {
        step.call((x.clone(), y.clone())).unwrap();
    }
    stategrad::exec::tuning::set_fused_native_after_elements(1 << 20);
    // The step frees more than 64 buffers at a time: a thread's pool of freed buffers must
    // keep them all (it kept 64, and the smallest, the [10] bias and its gradient and moments,
    // were allocated afresh on every step; it keeps 128 now).
    let call = || step.call((x.clone(), y.clone())).unwrap();
    let measure = || {
        let m = measure(&call, "AdamW");
        (m.last, m.bytes, m.calls, m.aligned)
    };
    let (last, per_step, calls_per_step, packing) = measure();
    let again = measure();
    let stats = step.program_stats();
    assert!(last.is_finite() && step.trace_count() == 1 && stats.len() == 1);
    // What is still allocated is the same from one window of steps to the next: bookkeeping
    // (tensor handles, the replay's vectors) and the GEMM kernels' packing scratch.
    assert!(
        again.2.abs_diff(calls_per_step) <= calls_per_step / 100,
        "{calls_per_step} then {} allocations per step",
        again.2
    );
    eprintln!(
        "jitted AdamW MLP replay ({stats:?}): {per_step} bytes in {calls_per_step} allocations \
         per step ({packing} of them GEMM packing scratch), no tensor buffers"
    );
    // Every call was one optimizer step: 5 to warm up, then two measurements of 3 × 100.
    assert_eq!(opt.count().value().item().unwrap(), 605.0);
}
