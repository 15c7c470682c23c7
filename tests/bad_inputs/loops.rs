use super::*;

#[test]
fn loops_on_bad_inputs() {
    let s = State::new(Tensor::new([1.0f32, 2.0])).named("s");
    let st: [&State; 1] = [&s];
    let mut c = Corpus::default();
    c.add("for_loop of 0 iterations", &st, || {
        err(
            for_loop(0, |_i: Tensor| s.value()),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("call_loop of 0 iterations", &st, || {
        err(
            jit(|_i: Tensor| s.value()).call_loop(0),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("for_loop failing on its first step", &st, || {
        err(
            for_loop(5, |i: Tensor| {
                s.set_value(&s.value() + &i);
                s.value().reshape(&[3])
            }),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("for_loop reading the index", &st, || {
        err(
            for_loop(3, |i: Tensor| {
                s.set_value(s.value() * 2.0);
                Tensor::new(i.to_vec::<f32>())
            }),
            |_| true,
        )
    });
    c.add("call_loop failing on its first step", &st, || {
        err(
            jit(|i: Tensor| {
                s.set_value(&s.value() * &i);
                (&s.value() + &Tensor::ones(&[3])).sum()
            })
            .call_loop(4),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("scan over a scalar", &st, || {
        err(
            scan(
                |(c, x): (Tensor, Tensor)| (&c + &x, x),
                Tensor::scalar(0.0f32),
                &Tensor::scalar(1.0f32),
            ),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("scan with a carry of the wrong shape", &st, || {
        err(
            scan(
                |(c, x): (Tensor, Tensor)| {
                    s.set_value(s.value() + 1.0);
                    (&c + &x, x)
                },
                Tensor::zeros(&[3]),
                &t32(&[4, 2]),
            ),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("scan body with a shape error", &st, || {
        err(
            scan(
                |(c, x): (Tensor, Tensor)| {
                    s.set_value(&s.value() + &x);
                    (c.clone(), x.reshape(&[5]))
                },
                Tensor::zeros(&[2]),
                &t32(&[3, 2]),
            ),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("scan over nothing keeps init", &st, || {
        let (carry, ys) = scan(
            |(c, x): (Tensor, Tensor)| (&c + &x, x),
            Tensor::scalar(7.0f32),
            &Tensor::zeros(&[0, 2]),
        )
        .map_err(|e| e.to_string())?;
        check(
            carry.item().unwrap() == 7.0 && ys.numel() == 0,
            "bad result",
        )
    });
    c.add("grad through a failing for_loop", &st, || {
        err(
            grad(|x: Tensor| -> Result<Tensor> {
                for_loop(3, |_i: Tensor| {
                    s.set_value(&s.value() + &x);
                    s.value().reshape(&[4]).sum()
                })
            })
            .call(Tensor::ones(&[2])),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.run("loops");
}

/// Loops that fail after some iterations have run: every state must hold its value from before
/// the call. (A loop failing late is being made to restore its states on another branch; the
/// cases that fail here are listed by the run.)
#[test]
fn loops_failing_late_restore_states() {
    let s = State::new(Tensor::new([1.0f32, 2.0])).named("s");
    let t = State::new(Tensor::scalar(0.0f64)).named("t");
    let st: [&State; 2] = [&s, &t];
    let calls = Cell::new(0);
    // `s` grows by one element per iteration, so no iteration can replay the previous one's
    // program: each runs the step again, and a host-side count makes the k-th one fail.
    let late = |k: usize| {
        let (calls, s, t) = (&calls, &s, &t);
        move |i: Tensor| -> Result<Tensor> {
            calls.set(calls.get() + 1);
            s.set_value(Tensor::try_concat(&[&s.value(), &i.try_reshape(&[1])?], 0)?);
            t.set_value(t.value() + 1.0);
            if calls.get() > k {
                return s.value().try_reshape(&[1, 0]);
            }
            Ok(s.value().sum())
        }
    };
    let mut c = Corpus::default();
    c.add("for_loop failing at iteration 3", &st, || {
        calls.set(0);
        err(for_loop(6, late(3)), is!(Error::InvalidArgument { .. }))?;
        check(
            calls.get() == 4,
            &format!("failed after {} calls", calls.get()),
        )
    });
    c.add("call_loop failing at iteration 2", &st, || {
        calls.set(0);
        err(
            jit(late(2)).call_loop(5),
            is!(Error::InvalidArgument { .. }),
        )?;
        check(
            calls.get() == 3,
            &format!("failed after {} calls", calls.get()),
        )
    });
    c.add("for_loop panicking at iteration 4", &st, || {
        calls.set(0);
        let step = |i: Tensor| {
            calls.set(calls.get() + 1);
            s.set_value(Tensor::concat(&[&s.value(), &i.reshape(&[1])], 0));
            if calls.get() > 4 {
                panic!("late failure");
            }
            s.value().sum()
        };
        err(for_loop(8, step), is!(Error::Panicked(_)))?;
        check(
            calls.get() == 5,
            &format!("failed after {} calls", calls.get()),
        )
    });
    c.add("scan failing at row 2", &st, || {
        calls.set(0);
        // The carry grows by a row each step: no row replays the previous one's program.
        let body = |(carry, x): (Tensor, Tensor)| {
            calls.set(calls.get() + 1);
            s.set_value(&s.value() + &x.sum());
            t.set_value(t.value() * 2.0);
            if calls.get() > 2 {
                return (carry.reshape(&[7]), x);
            }
            (Tensor::concat(&[&carry, &x], 0), x)
        };
        err(
            scan(body, Tensor::zeros(&[1]), &t32(&[5, 1])),
            is!(Error::InvalidArgument { .. }),
        )?;
        check(
            calls.get() == 3,
            &format!("failed after {} calls", calls.get()),
        )
    });
    c.add("grad of a for_loop failing at iteration 2", &st, || {
        calls.set(0);
        err(
            grad(|x: Tensor| -> Result<Tensor> { Ok(for_loop(4, late(2))? * x.sum()) })
                .call(Tensor::ones(&[2])),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.run("loops failing late");
}
