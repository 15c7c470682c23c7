//! Regression tests for the defects a hostile review found (issue "Trust"): each failed on the
//! commit before its fix.

use stategrad::jit::{for_loop, scan};
use stategrad::plugins::{add_noise, StatefulProcessor};
use stategrad::prelude::*;
use stategrad::{jit, random};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert!(got.allclose(want, 1e-5, 1e-6), "{what}: {got} vs {want}");
}

/// A one-element sum made inside a fused pass and read by a later step of the same chain
/// (`e / e.sum()`) must not be taken for an input of that pass: the second call (a replay)
/// panicked with "internal error: replay order".
#[test]
fn jit_replays_programs_that_read_a_sum_of_their_own_pass() {
    random::seed(3);
    let x = random::normal(&[40_000]);
    let softmax = |x: Tensor| {
        let e = x.exp();
        &e / &e.sum()
    };
    let doubled = |x: Tensor| {
        let y = &x * 2.0;
        &y * &y.sum()
    };
    let centred = |x: Tensor| {
        let g = &x * &x;
        &g - &g.sum()
    };
    for (name, f) in [
        ("softmax", &softmax as &dyn Fn(Tensor) -> Tensor),
        ("(2x)*(2x).sum()", &doubled),
        ("x*x - (x*x).sum()", &centred),
    ] {
        let want = f(x.clone());
        let j = jit(f);
        for call in 0..3 {
            let got = j.call(x.clone()).unwrap();
            assert_close(&got, &want, &format!("{name}, call {call}"));
        }
        assert_eq!(j.trace_count(), 1);
    }
    // The same under f64.
    let x64 = x.cast(DType::F64);
    let j = jit(softmax);
    let want = softmax(x64.clone());
    for _ in 0..2 {
        assert_close(&j.call(x64.clone()).unwrap(), &want, "softmax f64");
    }
}

/// A thread whose transform only reads a state must not publish its stale view of it when the
/// transform ends: a writer's increments were lost (20,000 ended at 3,769–16,832).
#[test]
fn transforms_that_only_read_a_state_lose_no_concurrent_writes() {
    let s = State::new(Tensor::scalar(0.0f64)).named("counter");
    let done = Arc::new(AtomicBool::new(false));
    const N: usize = 20_000;
    std::thread::scope(|scope| {
        let reader = {
            let (s, done) = (s.clone(), done.clone());
            scope.spawn(move || {
                let f = |x: Tensor| (&x * &s.value()).sum();
                let mut calls = 0usize;
                while !done.load(Ordering::Relaxed) || calls < 100 {
                    grad(f).call(Tensor::new([1.0f64, 2.0])).unwrap();
                    // A transform that writes the state and then fails publishes nothing.
                    let failing = |x: Tensor| {
                        s.set_value(Tensor::scalar(-1.0f64));
                        &x + &Tensor::new([1.0f64, 2.0, 3.0])
                    };
                    assert!(vector_grad(failing)
                        .call(Tensor::new([1.0f64, 2.0]))
                        .is_err());
                    calls += 1;
                }
                calls
            })
        };
        for _ in 0..N {
            s.set_value(s.value() + 1.0);
        }
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() >= 100);
    });
    assert_eq!(s.value().item().unwrap(), N as f64);
}

/// A state that grows by one element per iteration makes every iteration retrace; the body
/// fails once it holds `fail_at` elements.
fn growing_body(s: &State, fail_at: usize) -> impl Fn(Tensor) -> Result<Tensor> + '_ {
    move |_i: Tensor| {
        let v = s.value();
        if v.numel() >= fail_at {
            return Err(Error::InvalidArgument {
                op: "test",
                msg: "fails late".into(),
            });
        }
        s.set_value(Tensor::concat(&[&v, &Tensor::ones(&[1])], 0));
        Ok(v.sum())
    }
}

/// A loop that fails at iteration k leaves every state at its entry value (it kept the first
/// k iterations' writes).
#[test]
fn loops_failing_late_restore_every_state() {
    let s = State::new(Tensor::ones(&[1])).named("grows");
    let t = State::new(Tensor::scalar(5.0f32)).named("scaled");
    let body = growing_body(&s, 4);
    let both = |i: Tensor| {
        t.set_value(t.value() * 2.0);
        body(i)
    };
    assert!(for_loop(10, both).is_err());
    assert_eq!(s.shape(), vec![1]);
    assert_eq!(t.value().item().unwrap(), 5.0);

    let j = jit(growing_body(&s, 6));
    assert!(j.call_loop(10).is_err());
    assert_eq!(s.shape(), vec![1]);
    // A loop that succeeds keeps its writes.
    assert!(j.call_loop(3).is_ok());
    assert_eq!(s.shape(), vec![4]);

    let s2 = State::new(Tensor::ones(&[1])).named("grows in scan");
    let body = |(c, x): (Tensor, Tensor)| {
        let v = s2.value();
        if v.numel() >= 3 {
            // A shape error inside the body, raised by an operator.
            return (&c + &(&Tensor::ones(&[2]) + &Tensor::ones(&[3])).sum(), x);
        }
        s2.set_value(Tensor::concat(&[&v, &Tensor::ones(&[1])], 0));
        (&c + &x, x)
    };
    let xs = Tensor::new([1.0f32, 2.0, 3.0, 4.0, 5.0]);
    assert!(scan(body, Tensor::scalar(0.0f32), &xs).is_err());
    assert_eq!(s2.shape(), vec![1]);
}

/// A stateful gradient processor inside `jit` ran once at trace time and every replay reused its
/// step (the same noise, a count stuck at 1): now a typed error that leaves its state alone.
#[test]
fn stateful_processors_refuse_to_be_frozen_into_jit() {
    let noisy = StatefulProcessor::new(add_noise(0.5, 11));
    let f = jit(|g: Tensor| noisy.apply(&g));
    for _ in 0..2 {
        let err = f.call(Tensor::zeros(&[4])).unwrap_err();
        assert!(
            matches!(&err, Error::Unsupported(m) if m.contains("add_noise")),
            "{err}"
        );
    }
    assert!(noisy.state().is_none());
    // Outside jit it advances every call.
    let a = noisy.apply(&Tensor::zeros(&[4])).unwrap();
    let b = noisy.apply(&Tensor::zeros(&[4])).unwrap();
    assert!(!a.allclose(&b, 0.0, 0.0));
}

/// The compiled-program cache is bounded: it keeps at most its limit, and the least recently used
/// program goes first (it grew by one program per shape, forever; `tests/jit_cache_memory.rs`
/// measures the memory).
#[test]
fn jit_cache_is_bounded_and_evicts_least_recently_used() {
    let f = jit(|x: Tensor| (&x * 2.0 + 1.0).sum()).with_cache_limit(64);
    for n in 1..=64 {
        f.call(Tensor::ones(&[n])).unwrap();
    }
    // Shape [1] is used again, so [2] is the oldest when [65] arrives.
    f.call(Tensor::ones(&[1])).unwrap();
    f.call(Tensor::ones(&[65])).unwrap();
    assert_eq!(f.cache_len(), 64);
    let traces = f.trace_count();
    f.call(Tensor::ones(&[1])).unwrap();
    assert_eq!(f.trace_count(), traces, "[1] was recently used and stays");
    f.call(Tensor::ones(&[2])).unwrap();
    assert_eq!(f.trace_count(), traces + 1, "[2] was evicted");
}

/// Writers outside transforms and readers inside every kind of transform, on the same states,
/// for a bounded time: every write lands (the last value is the last one written, the counter
/// reaches its count) and no reader ever sees a torn value (a mix of two writes).
#[test]
fn writers_and_readers_in_every_transform_kind_agree() {
    use stategrad::jit::{cond, for_loop};
    use stategrad::{hessian, jacfwd, jacrev, vmap, StateFinder};
    const LEN: usize = 64;
    const WRITES: usize = 3_000;
    let s = State::new(Tensor::zeros(&[LEN])).named("shared");
    let counter = State::new(Tensor::scalar(0.0f64)).named("counter");
    let done = AtomicBool::new(false);
    // Every written value is constant across its elements: a torn read is not.
    let untorn = |t: &Tensor, what: &str| {
        let v = t.to_f64_vec();
        assert!(v.iter().all(|e| *e == v[0]), "{what}: torn value {v:?}");
    };
    let x = Tensor::ones(&[LEN]);
    let readers: Vec<(&str, Box<dyn Fn() + Sync>)> = vec![
        (
            "grad",
            Box::new(|| {
                let g = grad(|x: Tensor| {
                    untorn(&s.value(), "grad");
                    (&x * &s.value()).sum()
                })
                .call(x.clone())
                .unwrap();
                untorn(&g, "grad result");
            }),
        ),
        (
            "vector_grad",
            Box::new(|| {
                let g = vector_grad(|x: Tensor| &x * &s.value())
                    .call(x.clone())
                    .unwrap();
                untorn(&g, "vector_grad result");
            }),
        ),
        (
            "jacrev",
            Box::new(|| {
                let f = |x: Tensor| (&x * &s.value()).slice_axis(0, 0, 2);
                jacrev(f).call(x.clone()).unwrap();
            }),
        ),
        (
            "jacfwd",
            Box::new(|| {
                let f = |x: Tensor| (&x * &s.value()).slice_axis(0, 0, 2);
                jacfwd(f).call(x.clone()).unwrap();
            }),
        ),
        (
            "hessian",
            Box::new(|| {
                let f = |x: Tensor| {
                    (&x.slice_axis(0, 0, 3).square() * &s.value().slice_axis(0, 0, 3)).sum()
                };
                hessian(f).call(x.clone()).unwrap();
            }),
        ),
        (
            "vmap",
            Box::new(|| {
                let xs = Tensor::ones(&[2, LEN]);
                let y = vmap(|x: Tensor| &x * &s.value()).call(xs).unwrap();
                untorn(&y, "vmap result");
            }),
        ),
        (
            "jit",
            Box::new(|| {
                let f = jit(|x: Tensor| &x * &s.value());
                for _ in 0..3 {
                    untorn(&f.call(x.clone()).unwrap(), "jit result");
                }
            }),
        ),
        (
            "for_loop",
            Box::new(|| {
                let y = for_loop(3, |_i: Tensor| s.value() * 1.0).unwrap();
                untorn(&y, "for_loop result");
            }),
        ),
        (
            "cond",
            Box::new(|| {
                let f = jit(|x: Tensor| {
                    cond(&x.sum().gt_scalar(0.0), || s.value() * 2.0, || s.value())
                });
                untorn(&f.call(x.clone()).unwrap(), "cond result");
            }),
        ),
        (
            "StateFinder",
            Box::new(|| {
                let found = StateFinder::new(|x: Tensor| (&x * &s.value()).sum())
                    .find_list(x.clone())
                    .unwrap();
                assert_eq!(found.len(), 1);
            }),
        ),
    ];
    std::thread::scope(|scope| {
        let handles: Vec<_> = readers
            .iter()
            .map(|(name, read)| {
                let done = &done;
                scope.spawn(move || {
                    let mut n = 0usize;
                    while !done.load(Ordering::Relaxed) || n < 5 {
                        read();
                        n += 1;
                    }
                    (*name, n)
                })
            })
            .collect();
        for i in 1..=WRITES {
            s.set_value(Tensor::full(&[LEN], i as f32));
            counter.set_value(counter.value() + 1.0);
        }
        done.store(true, Ordering::Relaxed);
        for h in handles {
            let (name, n) = h.join().unwrap();
            assert!(n >= 5, "{name} ran {n} times");
        }
    });
    assert_eq!(counter.value().item().unwrap(), WRITES as f64);
    assert_eq!(s.value().to_f64_vec(), vec![WRITES as f64; LEN]);
}

/// `logsumexp` (and with it `log_softmax` and `softmax`) shifted by a maximum that `detach` had
/// made a constant of the trace: a replay on other inputs shifted by the trace's maximum and
/// overflowed to inf (found by the differential tester, seed 100853). The shift is now a
/// `stop_gradient` step that every replay recomputes.
#[test]
fn jitted_softmax_shifts_by_each_calls_own_maximum() {
    let f = |x: Tensor| (x.log_softmax(-1), x.softmax(0), x.logsumexp(&[-1], false));
    let j = jit(f);
    let small = Tensor::new([[1.0f32, 2.0, 3.0], [0.5, -1.0, 0.0]]);
    let large = &small + 200.0; // exp(x - traced max) overflows
    for x in [small.clone(), large, small - 1e4] {
        let (a, b, c) = j.call(x.clone()).unwrap();
        let (wa, wb, wc) = f(x);
        assert_close(&a, &wa, "log_softmax");
        assert_close(&b, &wb, "softmax");
        assert_close(&c, &wc, "logsumexp");
    }
    assert_eq!(j.trace_count(), 1);
    // A row of -inf shifts by 0 and gives -inf, on replays too.
    let minf = Tensor::new([
        [f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY],
        [0.0, 0.0, 0.0],
    ]);
    let got = j.call(minf).unwrap().2.to_f64_vec();
    assert_eq!(got[0], f64::NEG_INFINITY);
    assert!((got[1] - 3f64.ln()).abs() < 1e-6);
}

/// `stop_gradient` has a zero derivative in every transform, and inside `jit` it is recomputed.
#[test]
fn stop_gradient_cuts_derivatives_and_stays_on_the_jit_tape() {
    let f = |x: Tensor| (&x.square() * &x.stop_gradient()).sum();
    let x = Tensor::new([1.0f64, -2.0, 3.0]);
    // d/dx [x² · c] = 2x · c with c = x.
    let want = Tensor::new([2.0f64, 8.0, 18.0]);
    assert_close(&grad(f).call(x.clone()).unwrap(), &want, "grad");
    let jg = jit(|x: Tensor| grad(f).call(x));
    assert_close(&jg.call(x.clone()).unwrap(), &want, "jit(grad)");
    let other = Tensor::new([2.0f64, 1.0, -1.0]);
    assert_close(
        &jg.call(other).unwrap(),
        &Tensor::new([8.0f64, 2.0, 2.0]),
        "jit(grad) replay",
    );
    let hess = stategrad::hessian(f).call(x.clone()).unwrap();
    assert_close(
        &hess,
        &Tensor::new([[2.0f64, 0.0, 0.0], [0.0, -4.0, 0.0], [0.0, 0.0, 6.0]]),
        "hessian",
    );
}
