//! Every error of SEMANTICS §9 that can happen at run time comes back from `.call` as the typed
//! [`Error`] variant, with the shapes / argnum / state name in the message, and every state
//! restored to its value on entry. (The errors §9 lists that stategrad moves to compile time,
//! such as has_aux with a non-pair, a non-State in grad_states, a State as argument or output, and
//! hessian with states and argnums, are in `tests/ui`.)

use stategrad::prelude::*;
use stategrad::ParamValue;

fn v(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec()
}

// ------------------------------------------------------------------ argnums

#[test]
fn argnums_out_of_range() {
    let f = |(x, y): (Tensor, Tensor)| (&x * &y).sum();
    let args = || (Tensor::new([1.0f32]), Tensor::new([2.0f32]));
    let err = grad(f).argnums(2).call(args()).unwrap_err();
    assert_eq!(
        err,
        Error::ArgnumOutOfRange {
            argnum: 2,
            nargs: 2
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("argnums 2") && msg.contains("2 positional"),
        "{msg}"
    );

    // In a list, and with grad states, and for the other transforms.
    let err = grad(f).argnums([0, 5]).call(args()).unwrap_err();
    assert_eq!(
        err,
        Error::ArgnumOutOfRange {
            argnum: 5,
            nargs: 2
        }
    );
    let s = State::new(Tensor::scalar(1.0f32));
    let g = |(x, y): (Tensor, Tensor)| (&x * &y).sum() * s.value();
    let err = grad(g)
        .grad_states(s.clone())
        .argnums(vec![3])
        .call(args())
        .unwrap_err();
    assert_eq!(
        err,
        Error::ArgnumOutOfRange {
            argnum: 3,
            nargs: 2
        }
    );
    let err = jacrev(f).argnums(2).call(args()).unwrap_err();
    assert!(matches!(
        err,
        Error::ArgnumOutOfRange {
            argnum: 2,
            nargs: 2
        }
    ));
    let err = hessian(f).argnums(2).call(args()).unwrap_err();
    assert!(matches!(
        err,
        Error::ArgnumOutOfRange {
            argnum: 2,
            nargs: 2
        }
    ));

    // A lone Tensor is one positional argument.
    let err = grad(|x: Tensor| x.sum())
        .argnums(1)
        .call(Tensor::ones(&[2]))
        .unwrap_err();
    assert_eq!(
        err,
        Error::ArgnumOutOfRange {
            argnum: 1,
            nargs: 1
        }
    );
}

#[test]
fn argnums_negative() {
    let f = |(x, y): (Tensor, Tensor)| (&x * &y).sum();
    let args = || (Tensor::new([1.0f32]), Tensor::new([2.0f32]));
    let err = grad(f).argnums(-1).call(args()).unwrap_err();
    assert_eq!(
        err,
        Error::NegativeArgnum {
            argnum: -1,
            nargs: 2
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("-1") && msg.contains("negative") && msg.contains("0..2"),
        "{msg}"
    );
    let err = grad(f).argnums([0, -2]).call(args()).unwrap_err();
    assert_eq!(
        err,
        Error::NegativeArgnum {
            argnum: -2,
            nargs: 2
        }
    );
}

#[test]
fn argnums_duplicate() {
    let f = |(x, y): (Tensor, Tensor)| (&x * &y).sum();
    let args = || (Tensor::new([1.0f32]), Tensor::new([2.0f32]));
    let err = grad(f).argnums([1, 1]).call(args()).unwrap_err();
    assert_eq!(err, Error::DuplicateArgnum { argnum: 1 });
    let msg = err.to_string();
    assert!(
        msg.contains("argnums 1") && msg.contains("more than once"),
        "{msg}"
    );
    let err = vector_grad(f)
        .argnums(vec![0, 1, 0])
        .call(args())
        .unwrap_err();
    assert_eq!(err, Error::DuplicateArgnum { argnum: 0 });
    let err = hessian(f).argnums([0, 0]).call(args()).unwrap_err();
    assert_eq!(err, Error::DuplicateArgnum { argnum: 0 });
}

// ------------------------------------------------------------------ outputs

#[test]
fn non_scalar_output_to_grad() {
    let s = State::new(Tensor::scalar(1.0f32)).named("s");
    let f = |x: Tensor| {
        s.set_value(s.value() + 1.0);
        2.0 * &x
    };
    let err = grad(f).call(Tensor::new([1.0f32, 2.0])).unwrap_err();
    assert!(
        matches!(&err, Error::NonScalarOutput { shape } if shape.0 == [2]),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("(2,)"), "{msg}");
    assert!(msg.contains("scalar-output"), "{msg}");
    // A failed call writes nothing.
    assert_eq!(v(&s.value()), [1.0]);

    // (2, 3) too, and with grad states.
    let err = grad(|x: Tensor| x.square())
        .return_value()
        .call(Tensor::ones(&[2, 3]))
        .unwrap_err();
    assert!(err.to_string().contains("(2, 3)"), "{err}");
    let err = grad(|x: Tensor| &x * &s.value())
        .grad_states(s.clone())
        .call(Tensor::ones(&[2]))
        .unwrap_err();
    assert!(matches!(err, Error::NonScalarOutput { .. }));

    // vector_grad and jacrev accept it.
    assert!(vector_grad(f).call(Tensor::new([1.0f32, 2.0])).is_ok());
}

// ------------------------------------------------------------------ grad states

#[test]
fn grad_state_never_touched() {
    let used = ParamState::new(Tensor::new([1.0f32, 2.0])).named("used");
    let unused = ParamState::new(Tensor::new([3.0f32, 4.0, 5.0])).named("unused_bias");
    let f = |x: Tensor| (&x * &used.value()).sum();
    let x = || Tensor::new([3.0f32, 4.0]);

    let err = grad(f)
        .grad_states(vec![used.clone(), unused.clone()])
        .call(x())
        .unwrap_err();
    let Error::UnusedGradState { state } = &err else {
        panic!("expected UnusedGradState, got {err:?}")
    };
    assert!(state.contains("unused_bias"), "{state}");
    let msg = err.to_string();
    assert!(msg.contains("unused_bias"), "{msg}");
    assert!(msg.contains("check_states(false)"), "{msg}");

    // An unnamed state in a module map is named by its path and kind.
    let anon = ParamState::new(Tensor::zeros(&[1]));
    let map: StateMap = [
        (path!("layer", 0, "bias"), anon.clone()),
        (path!("w"), used.clone()),
    ]
    .into_iter()
    .collect();
    let err = grad(f).grad_states(map.clone()).call(x()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::UnusedGradState { .. }));
    assert!(msg.contains("ParamState") && msg.contains("bias"), "{msg}");

    // check_states(false): zeros of the state's shape and dtype, the others as usual.
    let [gu, gn]: [Tensor; 2] = grad(f)
        .grad_states([used.clone(), unused.clone()])
        .check_states(false)
        .call(x())
        .unwrap();
    assert_eq!(v(&gu), [3.0, 4.0]);
    assert_eq!(gn.shape(), [3]);
    assert_eq!(v(&gn), [0.0, 0.0, 0.0]);
    let gm = grad(f)
        .grad_states(map)
        .check_states(false)
        .call(x())
        .unwrap();
    assert_eq!(v(&gm[&path!("layer", 0, "bias")]), [0.0]);

    // The other transforms check too.
    let err = jacrev(|x: Tensor| &x * &used.value())
        .grad_states(unused.clone())
        .call(x())
        .unwrap_err();
    assert!(err.to_string().contains("unused_bias"));
    let err = hessian(f)
        .grad_states(vec![unused.clone()])
        .call(x())
        .unwrap_err();
    assert!(err.to_string().contains("unused_bias"));
}

// ------------------------------------------------------------------ failures inside the function

#[test]
fn shape_mismatch_inside_restores_states() {
    let read = ParamState::new(Tensor::new([1.0f32, 2.0])).named("read");
    let written = State::new(Tensor::scalar(5.0f32)).named("written");
    let diffed_written = ParamState::new(Tensor::new([7.0f32, 8.0])).named("diffed_written");
    let f = |(a, b): (Tensor, Tensor)| {
        written.set_value(written.value() * 100.0);
        diffed_written.set_value(&diffed_written.value() + &read.value());
        let c = &a + &b; // (2,) + (3,)
        c.sum()
    };
    let args = || (Tensor::new([1.0f32, 2.0]), Tensor::new([1.0f32, 2.0, 3.0]));
    let err = grad(f)
        .grad_states(vec![read.clone(), diffed_written.clone()])
        .argnums(0)
        .call(args())
        .unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { lhs, rhs, .. } if lhs.0 == [2] && rhs.0 == [3]),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("(2,)") && msg.contains("(3,)"), "{msg}");
    assert_eq!(v(&read.value()), [1.0, 2.0]);
    assert_eq!(v(&written.value()), [5.0]);
    assert_eq!(v(&diffed_written.value()), [7.0, 8.0]);

    // Same for every transform.
    for err in [
        vector_grad(f).call(args()).unwrap_err(),
        jacrev(f).call(args()).unwrap_err(),
        jacfwd(f)
            .grad_states(diffed_written.clone())
            .call(args())
            .unwrap_err(),
        hessian(f).call(args()).unwrap_err(),
    ] {
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err:?}");
        assert_eq!(v(&written.value()), [5.0]);
        assert_eq!(v(&diffed_written.value()), [7.0, 8.0]);
    }

    // The function still works afterwards (no stale trace frame left behind).
    let ok = grad(|x: Tensor| (&x * &read.value()).sum())
        .call(Tensor::new([1.0f32, 1.0]))
        .unwrap();
    assert_eq!(v(&ok), [1.0, 2.0]);
}

#[test]
fn panic_inside_restores_states() {
    let counter = State::new(Tensor::scalar(0.0f32)).named("counter");
    let p = ParamState::new(Tensor::new([1.0f32, 2.0])).named("p");
    let f = |x: Tensor| {
        counter.set_value(counter.value() + 1.0);
        p.set_value(p.value() * 3.0);
        if x.sum().item().unwrap_or(0.0) > 0.0 {
            panic!("boom: x was positive");
        }
        (&x * &p.value()).sum()
    };
    let err = grad(f)
        .grad_states(p.clone())
        .return_value()
        .call(Tensor::new([1.0f32, 2.0]))
        .unwrap_err();
    let Error::Panicked(msg) = &err else {
        panic!("expected Panicked, got {err:?}")
    };
    assert!(msg.contains("boom: x was positive"), "{msg}");
    assert!(err.to_string().contains("states were restored"), "{err}");
    assert_eq!(v(&counter.value()), [0.0]);
    assert_eq!(v(&p.value()), [1.0, 2.0]);

    // A formatted panic message (String payload) comes through too.
    let g = |x: Tensor| -> Tensor {
        counter.set_value(counter.value() + 1.0);
        panic!("bad shape {:?}", x.shape())
    };
    let err = jacfwd(g).call(Tensor::ones(&[4])).unwrap_err();
    assert!(
        matches!(&err, Error::Panicked(m) if m.contains("bad shape [4]")),
        "{err:?}"
    );
    assert_eq!(v(&counter.value()), [0.0]);

    // A successful call afterwards writes as usual.
    let (gp, val): (Tensor, Tensor) = grad(f)
        .grad_states(p.clone())
        .return_value()
        .call(Tensor::new([-1.0f32, -1.0]))
        .unwrap();
    assert_eq!(v(&gp), [-3.0, -3.0]);
    assert_eq!(v(&val), [-9.0]);
    assert_eq!(v(&counter.value()), [1.0]);
    assert_eq!(v(&p.value()), [3.0, 6.0]);
}

#[test]
fn function_returning_err_restores_states() {
    let s = State::new(Tensor::scalar(1.0f32)).named("s");
    let f = |(a, b): (Tensor, Tensor)| -> Result<Tensor> {
        s.set_value(s.value() + 1.0);
        Ok(a.try_mul(&b)?.sum())
    };
    let err = grad(f)
        .call((Tensor::ones(&[2, 2]), Tensor::ones(&[3])))
        .unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { lhs, rhs, .. } if lhs.0 == [2, 2] && rhs.0 == [3]),
        "{err:?}"
    );
    assert_eq!(v(&s.value()), [1.0]);
}

// ------------------------------------------------------------------ non-differentiable arguments

#[test]
fn integer_argument_selected() {
    let f = |(x, n): (Tensor, i32)| &x.sum() * (n as f64);
    // Not selected: fine.
    let g = grad(f).call((Tensor::ones(&[2]), 3)).unwrap();
    assert_eq!(v(&g), [3.0, 3.0]);
    // Selected: refused, naming the argument and the type.
    let err = grad(f)
        .argnums(1)
        .call((Tensor::ones(&[2]), 3))
        .unwrap_err();
    let Error::NonDifferentiableArg { argnum, reason } = &err else {
        panic!("expected NonDifferentiableArg, got {err:?}")
    };
    assert_eq!(*argnum, 1);
    assert!(
        reason.contains("integer") && reason.contains("i32"),
        "{reason}"
    );
    assert!(err.to_string().contains("argument 1"), "{err}");
    // Also inside a list, and with usize / bool.
    let err = grad(f)
        .argnums([0, 1])
        .call((Tensor::ones(&[2]), 3))
        .unwrap_err();
    assert!(matches!(err, Error::NonDifferentiableArg { argnum: 1, .. }));
    let h = |(x, k, _flag): (Tensor, usize, bool)| x.sum() * (k as f64);
    let err = jacrev(h)
        .argnums(2)
        .call((Tensor::ones(&[2]), 2, true))
        .unwrap_err();
    assert!(
        matches!(&err, Error::NonDifferentiableArg { argnum: 2, reason } if reason.contains("bool"))
    );
}

#[test]
fn float_argument_selected_has_a_hint() {
    let f = |(x, y, scale): (Tensor, Tensor, f64)| scale * (&x - &y).square().sum();
    let args = || (Tensor::new([1.0f32, 2.0]), Tensor::new([0.5f32, 1.5]), 2.0);
    let err = grad(f).argnums(2).call(args()).unwrap_err();
    let Error::NonDifferentiableArg { argnum, reason } = &err else {
        panic!("expected NonDifferentiableArg, got {err:?}")
    };
    assert_eq!(*argnum, 2);
    assert!(
        reason.contains("f64") && reason.contains("Tensor::scalar"),
        "{reason}"
    );
    // The fix the hint suggests works.
    let f2 = |(x, y, scale): (Tensor, Tensor, Tensor)| scale * (&x - &y).square().sum();
    let gs = grad(f2)
        .argnums(2)
        .call((
            Tensor::new([1.0f32, 2.0]),
            Tensor::new([0.5f32, 1.5]),
            Tensor::scalar(2.0f32),
        ))
        .unwrap();
    assert_eq!(gs.ndim(), 0);
    assert_eq!(v(&gs), [0.5]);

    // A Static argument too.
    let k = |(x, cfg): (Tensor, Static<&str>)| x.sum() * (cfg.0.len() as f64);
    let err = grad(k)
        .argnums(1)
        .call((Tensor::ones(&[1]), Static("abc")))
        .unwrap_err();
    assert!(matches!(err, Error::NonDifferentiableArg { argnum: 1, .. }));
}

// ------------------------------------------------------------------ hessian

#[test]
fn hessian_errors() {
    // A selected argument made of several tensors: refused with a clear message.
    let f = |((a, b),): ((Tensor, Tensor),)| (&a * &b).sum();
    let err = hessian(f)
        .call(((Tensor::ones(&[2]), Tensor::ones(&[2])),))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("hessian")),
        "{err:?}"
    );
    // Bad argnums and non-differentiable arguments as for grad.
    let g = |(x, n): (Tensor, i64)| x.square().sum() * (n as f64);
    let err = hessian(g)
        .argnums(1)
        .call((Tensor::ones(&[2]), 2))
        .unwrap_err();
    assert!(matches!(err, Error::NonDifferentiableArg { argnum: 1, .. }));
    let err = hessian(g)
        .argnums(-1)
        .call((Tensor::ones(&[2]), 2))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::NegativeArgnum {
            argnum: -1,
            nargs: 2
        }
    ));
    // A shape error inside.
    let err = hessian(|x: Tensor| (&x + &Tensor::ones(&[3])).sum())
        .call(Tensor::ones(&[2]))
        .unwrap_err();
    assert!(
        err.to_string().contains("(2,)") && err.to_string().contains("(3,)"),
        "{err}"
    );
}

// ------------------------------------------------------------------ debug_nan (§10)

#[test]
fn debug_nan_names_the_primitive() {
    let f = |x: Tensor| x.log().sum();
    // Without debug_nan: a NaN/inf result, no error.
    let (_, value): (Tensor, Tensor) = grad(f)
        .return_value()
        .call(Tensor::new([-1.0f32, 2.0]))
        .unwrap();
    assert!(value.item().unwrap().is_nan());
    let err = grad(f)
        .debug_nan(true)
        .call(Tensor::new([-1.0f32, 2.0]))
        .unwrap_err();
    assert!(
        matches!(&err, Error::NonFinite { primitive, .. } if primitive.contains("log")),
        "{err:?}"
    );
}

#[test]
fn debug_nan_names_the_backward_primitive_and_the_state_path() {
    // sqrt(0) is finite forward, but its derivative 1/(2 sqrt 0) is not.
    let w = ParamState::new(Tensor::new([0.0f32, 4.0]));
    let b = ParamState::new(Tensor::new([1.0f32]));
    let params: StateMap = [(path!("bias"), b.clone()), (path!("weight"), w.clone())]
        .into_iter()
        .collect();
    let f = |x: Tensor| (w.value().sqrt() * &x).sum() + b.value().sum();
    let ok = grad(f)
        .grad_states(params.clone())
        .call(Tensor::new([1.0f32, 1.0]));
    assert!(ok.unwrap()[&path!("weight")].to_vec::<f32>()[0].is_infinite());
    let err = grad(f)
        .grad_states(params)
        .debug_nan(true)
        .call(Tensor::new([1.0f32, 1.0]))
        .unwrap_err();
    match &err {
        Error::NonFinite {
            primitive,
            location,
        } => {
            assert!(primitive.contains("sqrt"), "{err}");
            let loc = location.as_deref().unwrap_or_default();
            assert!(
                loc.contains("('weight',)") && !loc.contains("bias"),
                "{err}"
            );
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
    assert_eq!(
        w.value().to_vec::<f32>(),
        vec![0.0, 4.0],
        "states untouched"
    );
}

// ------------------------------------------------------------------ sizes that do not fit

/// The message of a panic payload (a `String` or `&str`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
}

#[test]
fn shapes_whose_size_overflows_are_typed_errors() {
    let huge = [(1usize << 63) + 1, 2]; // wraps to 2 elements if unchecked
    for err in [
        Tensor::try_ones(&huge).unwrap_err(),
        Tensor::try_zeros(&huge).unwrap_err(),
        Tensor::try_full_dtype(&huge, 1.0, DType::F64).unwrap_err(),
        Tensor::from_vec(vec![1.0f32, 2.0], &huge).unwrap_err(),
        Tensor::new([1.0f32, 2.0])
            .try_reshape_to(&huge)
            .unwrap_err(),
        Tensor::try_eye_dtype(1 << 32, DType::F32).unwrap_err(),
    ] {
        assert!(matches!(err, Error::ShapeOverflow { .. }), "{err:?}");
        assert!(err.to_string().contains("more elements than fit"), "{err}");
    }
    // A size that overflows only through its zero dimension's neighbours is refused too.
    assert!(matches!(
        Tensor::try_zeros(&[1 << 40, 1 << 40, 0]),
        Err(Error::ShapeOverflow { .. })
    ));
    assert_eq!(Tensor::try_zeros(&[1 << 20, 0]).unwrap().numel(), 0);
    // Operations whose output would not fit: broadcasting and matmul of zero-size operands.
    let a = Tensor::zeros(&[1 << 40, 1, 0]);
    let b = Tensor::zeros(&[1, 1 << 40, 0]);
    assert!(matches!(a.try_add(&b), Err(Error::ShapeOverflow { .. })));
    let m = Tensor::zeros(&[1 << 32, 0]);
    let n = Tensor::zeros(&[0, 1 << 32]);
    assert!(matches!(m.try_matmul(&n), Err(Error::ShapeOverflow { .. })));
    assert!(matches!(
        Tensor::zeros(&[1 << 40, 0]).try_reshape(&[-1, 1 << 40, 1 << 40]),
        Err(Error::ShapeOverflow { .. })
    ));
}

#[test]
fn allocations_that_cannot_succeed_are_typed_errors() {
    assert!(matches!(
        Tensor::try_ones(&[1 << 62]),
        Err(Error::AllocationFailed { .. })
    ));
    assert!(matches!(
        Tensor::try_linspace(0.0, 1.0, 1 << 62),
        Err(Error::AllocationFailed { .. })
    ));
    assert!(Tensor::arange(0.0, 1e30, 1.0).is_err());
    let err = Tensor::arange(0.0, f32::NAN, 1.0).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { op: "arange", .. }),
        "{err:?}"
    );
    assert!(Tensor::arange(f32::NEG_INFINITY, 0.0, 1.0).is_err());
    // An operation's output buffer too (broadcast_to allocates inside its kernel).
    let err = Tensor::ones(&[1]).try_broadcast_to(&[1 << 62]).unwrap_err();
    assert!(matches!(err, Error::AllocationFailed { .. }), "{err:?}");
    // Inside a transform: the transform's error, the state untouched.
    let s = State::new(Tensor::scalar(1.0f32));
    let err = grad(|x: Tensor| {
        s.set_value(s.value() + 1.0);
        (&x + &Tensor::ones(&[(1 << 63) + 1, 2])).sum()
    })
    .call(Tensor::ones(&[2]))
    .unwrap_err();
    assert!(matches!(err, Error::ShapeOverflow { .. }), "{err:?}");
    assert_eq!(v(&s.value()), [1.0]);
}

#[test]
fn panicking_constructors_panic_with_the_message() {
    let r = std::panic::catch_unwind(|| Tensor::ones(&[(1 << 63) + 1, 2]));
    let msg = panic_message(&*r.unwrap_err()).expect("a string payload");
    assert!(msg.contains("more elements than fit"), "{msg}");
    let r = std::panic::catch_unwind(|| Tensor::eye(1 << 32));
    assert!(panic_message(&*r.unwrap_err()).is_some());
    let r = std::panic::catch_unwind(|| Tensor::linspace(0.0, 1.0, 1 << 62));
    let msg = panic_message(&*r.unwrap_err()).expect("a string payload");
    assert!(msg.contains("cannot allocate"), "{msg}");
}

// ------------------------------------------------------------------ empty means

#[test]
fn mean_of_nothing_is_nan() {
    let e = Tensor::zeros(&[0]);
    assert!(e.mean().item().unwrap().is_nan());
    let m = Tensor::zeros(&[0, 3]).mean_along(&[0], false);
    assert_eq!(m.shape(), [3]);
    assert!(v(&m).iter().all(|x| x.is_nan()));
    // Over a non-empty axis of an empty tensor: an empty result.
    assert_eq!(Tensor::zeros(&[0, 3]).mean_along(&[1], false).shape(), [0]);
    // The gradient is an empty tensor, not a panic.
    let g = grad(|x: Tensor| x.mean())
        .call(Tensor::zeros(&[0]))
        .unwrap();
    assert_eq!(g.shape(), [0]);
    let g = grad(|x: Tensor| x.mean_along(&[0], false).sum())
        .call(Tensor::zeros(&[0, 2]))
        .unwrap();
    assert_eq!(g.shape(), [0, 2]);
    // Non-empty means are unchanged.
    assert_eq!(v(&Tensor::new([1.0f32, 2.0, 6.0]).mean()), [3.0]);
}

/// A bad index inside a transformed function comes back as the typed error of the slice (the
/// plain `slice` raises it, the transform returns it); an empty slice differentiates to zeros.
#[test]
fn bad_slices_are_typed_errors_through_transforms() {
    let x = Tensor::new([[1.0f64, 2.0], [3.0, 4.0]]);
    for f in [
        |x: Tensor| x.slice(s![5]).sum(),
        |x: Tensor| x.slice(s![.., ..;0]).sum(),
        |x: Tensor| x.slice(s![0, 0, 0]).sum(),
        |x: Tensor| x.flip(&[2]).sum(),
    ] {
        let err = grad(f).call(x.clone()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        let err = jit(f).call(x.clone()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    }
    let g = grad(|x: Tensor| x.slice(s![.., 1..1;-1]).sum())
        .call(x.clone())
        .unwrap();
    assert_eq!(v(&g), [0.0; 4]);
}

// ------------------------------------------------------------------ messages

#[test]
fn operator_error_outside_a_transform_names_the_shapes_and_the_line() {
    use std::cell::RefCell;
    thread_local! {
        static LOCATION: RefCell<Option<(String, u32)>> = const { RefCell::new(None) };
    }
    // Make the library install its hook first, so that ours (chained) is not replaced.
    let _ = grad(|x: Tensor| x.sum()).call(Tensor::ones(&[1]));
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(l) = info.location() {
            let _ = LOCATION.try_with(|c| *c.borrow_mut() = Some((l.file().into(), l.line())));
        }
        prev(info);
    }));
    let a = Tensor::ones(&[2, 3]);
    let b = Tensor::ones(&[4]);
    let line = line!() + 1;
    let r = std::panic::catch_unwind(|| &a + &b);
    let msg = panic_message(&*r.unwrap_err()).expect("a String payload, not Box<dyn Any>");
    assert!(msg.contains("(2, 3)") && msg.contains("(4,)"), "{msg}");
    let (file, at) = LOCATION.with(|c| c.borrow().clone()).expect("hook ran");
    assert!(file.ends_with("errors.rs"), "{file}");
    assert_eq!(at, line);
    // The method forms and scalar-operand forms too.
    let line = line!() + 1;
    let r = std::panic::catch_unwind(|| a.matmul(&b));
    assert!(panic_message(&*r.unwrap_err()).unwrap().contains("matmul"));
    assert_eq!(LOCATION.with(|c| c.borrow().clone()).unwrap().1, line);
    let line = line!() + 1;
    let r = std::panic::catch_unwind(|| a.reshape(&[7]));
    assert!(panic_message(&*r.unwrap_err()).unwrap().contains("reshape"));
    assert_eq!(LOCATION.with(|c| c.borrow().clone()).unwrap().1, line);
    // Inside a transform the same error comes back typed.
    let err = grad(|x: Tensor| (&x + &b).sum())
        .call(a.clone())
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err:?}");
}

#[test]
fn bad_transform_params_are_errors() {
    let s = State::new(Tensor::scalar(2.0f32)).named("s");
    let f = |x: Tensor| {
        s.set_value(s.value() + 1.0);
        &x * &s.value()
    };
    let x = || Tensor::new([1.0f32, 2.0]);
    for (name, value) in [
        ("chunk_size", ParamValue::I64(0)),
        ("chunk_size", ParamValue::I64(-5)),
        ("chunk_size", ParamValue::from("abc")),
        ("chunk_size", ParamValue::F64(2.0)),
        ("chunksize", ParamValue::I64(2)),
    ] {
        for err in [
            jacrev(f).param(name, value.clone()).call(x()).unwrap_err(),
            jacfwd(f).param(name, value.clone()).call(x()).unwrap_err(),
            hessian(|x: Tensor| x.square().sum())
                .param(name, value.clone())
                .call(x())
                .unwrap_err(),
        ] {
            assert!(
                matches!(&err, Error::PluginParam { name: n, .. } if n == name),
                "{name}={value:?}: {err:?}"
            );
        }
        assert_eq!(v(&s.value()), [2.0]);
    }
    // grad takes no parameters at all.
    let err = grad(|x: Tensor| x.sum())
        .param("chunk_size", 2)
        .call(x())
        .unwrap_err();
    assert!(err.to_string().contains("takes none"), "{err}");
    // A good value still works.
    let j = jacrev(f).param("chunk_size", 1).call(x()).unwrap();
    assert_eq!(j.shape(), [2, 2]);
}

#[test]
fn state_finder_returns_the_functions_error() {
    let s = State::new(Tensor::scalar(1.0f32)).named("s");
    let f = |x: Tensor| -> Result<Tensor> {
        s.set_value(s.value() + 1.0);
        x.try_matmul(&Tensor::ones(&[3]))
    };
    let err = StateFinder::new(f).find(Tensor::ones(&[2])).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err:?}");
    assert_eq!(v(&s.value()), [1.0]);
    // A panicking operator inside: the typed error too.
    let g = |x: Tensor| {
        s.set_value(s.value() + 1.0);
        &x + &Tensor::ones(&[3])
    };
    let err = StateFinder::new(g)
        .find_list(Tensor::ones(&[2]))
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err:?}");
    assert_eq!(v(&s.value()), [1.0]);
}

#[test]
fn bad_random_draws_leave_the_key() {
    let key = stategrad::random::default_state();
    let before = key.value().to_f64_vec();
    use stategrad::random;
    assert!(matches!(
        random::try_normal(&[usize::MAX, 2]),
        Err(Error::ShapeOverflow { .. })
    ));
    assert!(matches!(
        random::try_randint(&[2], 4, 4),
        Err(Error::InvalidArgument { op: "randint", .. })
    ));
    assert!(random::try_bernoulli(&[2], 2.0).is_err());
    assert!(random::try_uniform(&[2], 0.0, f64::NAN).is_err());
    assert_eq!(
        key.value().to_f64_vec(),
        before,
        "a failed draw advanced the key"
    );
    // The widest integer range does not overflow.
    let r = random::try_randint(&[16], i64::MIN, i64::MAX).unwrap();
    assert!(r.to_f64_vec().iter().all(|v| v.is_finite()));
}
