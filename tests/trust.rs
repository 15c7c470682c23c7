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
                    assert!(vector_grad(failing).call(Tensor::new([1.0f64, 2.0])).is_err());
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
        assert!(matches!(&err, Error::Unsupported(m) if m.contains("add_noise")), "{err}");
    }
    assert!(noisy.state().is_none());
    // Outside jit it advances every call.
    let a = noisy.apply(&Tensor::zeros(&[4])).unwrap();
    let b = noisy.apply(&Tensor::zeros(&[4])).unwrap();
    assert!(!a.allclose(&b, 0.0, 0.0));
}
