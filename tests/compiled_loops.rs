//! Compiled loops (`for_loop`, `Jit::call_loop`, `scan`) against the same body called step by
//! step: states that carry into each other (a swap, a rotation), long loops, and loops on
//! generated native code.

use stategrad::exec::tuning;
use stategrad::jit::{self, for_loop};
use stategrad::{State, Tensor};
use std::sync::Mutex;

/// The tests that change the (process-wide) native-code threshold take turns.
static TUNING: Mutex<()> = Mutex::new(());

/// `n` iterations of `body` one `call` at a time, from the states' current values.
fn stepwise(states: &[State], n: usize, body: impl Fn(&[State]) -> Tensor) -> Vec<Vec<f32>> {
    let start: Vec<Tensor> = states.iter().map(|s| s.value()).collect();
    for _ in 0..n {
        body(states);
    }
    let out = states.iter().map(|s| s.value().to_vec::<f32>()).collect();
    for (s, v) in states.iter().zip(start) {
        s.set_value(v);
    }
    out
}

#[test]
fn states_written_from_each_other_swap_rather_than_copy() {
    let a = State::new(Tensor::new([1.0f32, 10.0]));
    let b = State::new(Tensor::new([2.0f32, 20.0]));
    let c = State::new(Tensor::new([3.0f32, 30.0]));
    let rotate = |s: &[State]| {
        let (x, y, z) = (s[0].value(), s[1].value(), s[2].value());
        let z = z + 0.5;
        s[0].set_value(y);
        s[1].set_value(z.clone());
        s[2].set_value(x);
        z
    };
    let states = [a.clone(), b.clone(), c.clone()];
    for n in [1usize, 2, 3, 4, 7, 50] {
        let want = stepwise(&states, n, rotate);
        let body = jit::jit(|_i: Tensor| rotate(&states));
        body.call_loop(n).unwrap();
        let got: Vec<Vec<f32>> = states.iter().map(|s| s.value().to_vec::<f32>()).collect();
        assert_eq!(got, want, "rotation over {n} iterations");
        for (s, v) in states
            .iter()
            .zip([[1.0f32, 10.0], [2.0, 20.0], [3.0, 30.0]])
        {
            s.set_value(Tensor::new(v));
        }
    }
    let x = State::new(Tensor::scalar(1.0f32));
    let y = State::new(Tensor::scalar(2.0f32));
    for_loop(3, |_i: Tensor| {
        let (u, v) = (x.value(), y.value());
        x.set_value(v);
        y.set_value(u.clone());
        u * 1.0
    })
    .unwrap();
    assert_eq!(
        (x.value().item().unwrap(), y.value().item().unwrap()),
        (2.0, 1.0)
    );
}

#[test]
fn loops_on_native_code_match_steps_one_call_at_a_time() {
    let _turn = TUNING.lock().unwrap_or_else(|p| p.into_inner());
    // Native code from the second run: the loop below gets one generated function.
    tuning::set_arena_native_after_runs(2);
    let w = State::new(Tensor::new([0.5f32, -0.25, 1.0]));
    let m = State::new(Tensor::new([0.0f32, 0.0, 0.0]));
    let step = |i: &Tensor| {
        // Momentum SGD on (w - i/10)^2, the iteration number as data.
        let g = (w.value() - i * 0.1) * 2.0;
        let m_new = m.value() * 0.9 + &g;
        m.set_value(m_new.clone());
        w.set_value(w.value() - &m_new * 0.05);
        (w.value() * w.value()).sum()
    };
    for n in [3usize, 100, 1001] {
        let (w0, m0) = (w.value(), m.value());
        let mut want = Tensor::scalar(0.0f32);
        for i in 0..n {
            want = step(&Tensor::scalar(i as f32));
        }
        let (w_want, m_want) = (w.value(), m.value());
        w.set_value(w0.clone());
        m.set_value(m0.clone());
        let body = jit::jit(|i: Tensor| step(&i));
        let got = body.call_loop(n).unwrap();
        // Eager runs the same kernels in the same order: the same bits.
        assert_eq!(got.to_vec::<f32>(), want.to_vec::<f32>(), "{n} iterations");
        assert_eq!(w.value().to_vec::<f32>(), w_want.to_vec::<f32>());
        assert_eq!(m.value().to_vec::<f32>(), m_want.to_vec::<f32>());
        let stats = body.program_stats();
        if stategrad::exec::arena::native_code_enabled() {
            assert!(stats[0].native_loop, "{stats:?}");
        }
        w.set_value(w0);
        m.set_value(m0);
    }
    tuning::set_arena_native_after_runs(stategrad::exec::arena::NATIVE_AFTER_RUNS);
}

#[test]
fn for_loop_calls_share_one_compiled_body() {
    let _turn = TUNING.lock().unwrap_or_else(|p| p.into_inner());
    // A threshold that one loop does not reach, and three loops of the same body do.
    tuning::set_arena_native_after_runs(250);
    let s = State::new(Tensor::new([1.0f32, 2.0, 3.0, 4.0]));
    let step = |i: Tensor| {
        // A structure no other test traces (the sharing is process-wide).
        let v = s.value() * 0.999 + (&i * 0.001).tanh() * 0.25 - 0.125;
        s.set_value(v.clone());
        v.sum() * 0.75
    };
    let mut last = Vec::new();
    for _ in 0..3 {
        // A new closure each time, as a loop inside a training function writes it.
        last.push(for_loop(100, |i: Tensor| step(i)).unwrap().item().unwrap());
    }
    // Eager reference for the same 300 iterations.
    s.set_value(Tensor::new([1.0f32, 2.0, 3.0, 4.0]));
    let mut want = Vec::new();
    for _ in 0..3 {
        let mut y = Tensor::scalar(0.0f32);
        for i in 0..100 {
            y = step(Tensor::scalar(i as f32));
        }
        want.push(y.item().unwrap());
    }
    assert_eq!(last, want);
    // The body's 300 runs over three `for_loop`s were counted on one shared program: a fresh
    // function tracing the same body finds it native.
    let probe = jit::jit(|i: Tensor| step(i));
    probe.call(Tensor::scalar(0.0f32)).unwrap();
    if stategrad::exec::arena::native_code_enabled() {
        assert!(
            probe.program_stats()[0].native,
            "{:?}",
            probe.program_stats()
        );
    }
    tuning::set_arena_native_after_runs(stategrad::exec::arena::NATIVE_AFTER_RUNS);
}

#[test]
fn shared_programs_tell_nan_constants_apart() {
    // Programs that differ only in the sign of a NaN constant compute different bits: they
    // must not share one program.
    let plus = jit::jit(|x: Tensor| &x * 1.0 + Tensor::scalar(f32::NAN));
    let minus = jit::jit(|x: Tensor| &x * 1.0 + Tensor::scalar(-f32::NAN));
    let x = Tensor::new([1.0f32, 2.0]);
    let bits = |t: Tensor| {
        t.to_vec::<f32>()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    for _ in 0..3 {
        let want_plus = bits(&x * 1.0 + Tensor::scalar(f32::NAN));
        let want_minus = bits(&x * 1.0 + Tensor::scalar(-f32::NAN));
        assert_ne!(want_plus, want_minus);
        assert_eq!(bits(plus.call(x.clone()).unwrap()), want_plus);
        assert_eq!(bits(minus.call(x.clone()).unwrap()), want_minus);
    }
}

#[test]
fn loops_that_share_a_program_each_get_their_own_native_loop() {
    let _turn = TUNING.lock().unwrap_or_else(|p| p.into_inner());
    tuning::set_arena_native_after_runs(2);
    let (s1, s2) = (
        State::new(Tensor::new([1.0f32, 2.0])),
        State::new(Tensor::new([3.0f32, 5.0])),
    );
    // The same steps; the two written values go to the states one way or the other.
    let body = |swap: bool| {
        let (s1, s2) = (s1.clone(), s2.clone());
        move |_i: Tensor| {
            let u = (s1.value() + s2.value()) * 0.25;
            let v = (s1.value() - s2.value()) * 0.5;
            let (a, b) = if swap { (v, u.clone()) } else { (u.clone(), v) };
            s1.set_value(a);
            s2.set_value(b);
            u.sum() * 1.0
        }
    };
    for swap in [false, true] {
        let (a0, b0) = (s1.value(), s2.value());
        let step = body(swap);
        let mut want = Tensor::scalar(0.0f32);
        for i in 0..40 {
            want = step(Tensor::scalar(i as f32));
        }
        let (a1, b1) = (s1.value(), s2.value());
        s1.set_value(a0);
        s2.set_value(b0);
        let j = jit::jit(body(swap));
        assert_eq!(
            j.call_loop(40).unwrap().to_vec::<f32>(),
            want.to_vec::<f32>()
        );
        assert_eq!(
            s1.value().to_vec::<f32>(),
            a1.to_vec::<f32>(),
            "swap {swap}"
        );
        assert_eq!(
            s2.value().to_vec::<f32>(),
            b1.to_vec::<f32>(),
            "swap {swap}"
        );
        if stategrad::exec::arena::native_code_enabled() {
            assert!(j.program_stats()[0].native_loop, "swap {swap}");
        }
    }
    tuning::set_arena_native_after_runs(stategrad::exec::arena::NATIVE_AFTER_RUNS);
}

#[test]
fn loops_that_share_code_update_their_own_states() {
    // Two states, one body shape: the second loop runs the first one's shared program (and,
    // once hot, its native loop) on its own state, and leaves the other alone.
    let a = State::new(Tensor::new([1.0f32, -1.0, 0.5]));
    let b = State::new(Tensor::new([4.0f32, 2.0, -3.0]));
    let decay = |s: &State| {
        let s = s.clone();
        move |i: Tensor| {
            s.set_value(s.value() * 0.5 + &i * 0.125);
            s.value().sum() * 1.0
        }
    };
    let expect = |start: [f32; 3], n: usize| {
        let mut v = start;
        for i in 0..n {
            for x in &mut v {
                *x = *x * 0.5 + i as f32 * 0.125;
            }
        }
        v.to_vec()
    };
    for round in 1..=3 {
        let (a0, b0) = (a.value().to_vec::<f32>(), b.value().to_vec::<f32>());
        for_loop(50, decay(&a)).unwrap();
        assert_eq!(
            a.value().to_vec::<f32>(),
            expect([a0[0], a0[1], a0[2]], 50),
            "round {round}"
        );
        assert_eq!(b.value().to_vec::<f32>(), b0, "b untouched");
        for_loop(50, decay(&b)).unwrap();
        assert_eq!(
            b.value().to_vec::<f32>(),
            expect([b0[0], b0[1], b0[2]], 50),
            "round {round}"
        );
    }
}
