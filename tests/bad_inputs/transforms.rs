use super::*;

#[test]
fn transforms_on_bad_inputs() {
    let w = ParamState::new(Tensor::new([1.0f32, 2.0])).named("w");
    let counter = State::new(Tensor::scalar(0.0f32)).named("counter");
    let w64 = ParamState::new(Tensor::new([0.5f64, -1.5])).named("w64");
    let unused = ParamState::new(Tensor::new([9.0f32])).named("unused");
    let x = || Tensor::new([3.0f32, 4.0]);
    let xy = || (Tensor::new([3.0f32, 4.0]), Tensor::new([1.0f32, 1.0]));
    // Writes both states, then fails on a shape mismatch.
    let bad = |x: Tensor| {
        counter.set_value(counter.value() + 1.0);
        w.set_value(&w.value() * 2.0);
        (&x + &Tensor::ones(&[3])).sum()
    };
    let good = |x: Tensor| {
        counter.set_value(counter.value() + 1.0);
        (&x * &w.value()).sum()
    };
    let pair = |(x, y): (Tensor, Tensor)| {
        counter.set_value(counter.value() + 1.0);
        (&x * &y * &w.value()).sum()
    };
    let st: [&State; 4] = [&w, &counter, &w64, &unused];
    let with_int = |(x, n): (Tensor, i32)| {
        counter.set_value(counter.value() + 1.0);
        x.sum() * n as f64
    };
    let chunk_values: [(&str, ParamValue); 7] = [
        ("chunk_size", ParamValue::I64(0)),
        ("chunk_size", ParamValue::I64(-5)),
        ("chunk_size", ParamValue::I64(i64::MIN)),
        ("chunk_size", ParamValue::from("abc")),
        ("chunk_size", ParamValue::F64(2.5)),
        ("chunk_size", ParamValue::Bool(true)),
        ("chunksize", ParamValue::I64(2)),
    ];
    let vec_out = |x: Tensor| {
        counter.set_value(counter.value() + 1.0);
        &x * &w.value()
    };
    let reg = Registry::new();
    let p = |k: &str, v: ParamValue| Params::new().with(k, v);
    let mut c = Corpus::default();

    // argnums.
    c.add("grad argnums 2 of 2", &st, || {
        err(
            grad(pair).argnums(2).call(xy()),
            is!(Error::ArgnumOutOfRange {
                argnum: 2,
                nargs: 2
            }),
        )
    });
    c.add("grad argnums [0, 5]", &st, || {
        err(
            grad(pair).argnums([0, 5]).call(xy()),
            is!(Error::ArgnumOutOfRange { .. }),
        )
    });
    c.add("grad argnums i64::MAX", &st, || {
        err(
            grad(pair).argnums(i64::MAX).call(xy()),
            is!(Error::ArgnumOutOfRange { .. }),
        )
    });
    c.add("grad argnums -1", &st, || {
        err(
            grad(pair).argnums(-1).call(xy()),
            is!(Error::NegativeArgnum { .. }),
        )
    });
    c.add("grad argnums i64::MIN", &st, || {
        err(
            grad(pair).argnums(i64::MIN).call(xy()),
            is!(Error::NegativeArgnum { .. }),
        )
    });
    c.add("grad argnums [1, 1]", &st, || {
        err(
            grad(pair).argnums([1, 1]).call(xy()),
            is!(Error::DuplicateArgnum { argnum: 1 }),
        )
    });
    c.add("vector_grad argnums dup", &st, || {
        err(
            vector_grad(pair).argnums(vec![0, 1, 0]).call(xy()),
            is!(Error::DuplicateArgnum { .. }),
        )
    });
    c.add("jacrev argnums 3", &st, || {
        err(
            jacrev(pair).argnums(3).call(xy()),
            is!(Error::ArgnumOutOfRange { .. }),
        )
    });
    c.add("jacfwd argnums -2", &st, || {
        err(
            jacfwd(pair).argnums(-2).call(xy()),
            is!(Error::NegativeArgnum { .. }),
        )
    });
    c.add("hessian argnums [0, 0]", &st, || {
        err(
            hessian(pair).argnums([0, 0]).call(xy()),
            is!(Error::DuplicateArgnum { .. }),
        )
    });
    c.add("lone tensor argnums 1", &st, || {
        err(
            grad(good).argnums(1).call(x()),
            is!(Error::ArgnumOutOfRange {
                argnum: 1,
                nargs: 1
            }),
        )
    });
    c.add("grad_states with bad argnums", &st, || {
        err(
            grad(pair)
                .grad_states(w.clone())
                .argnums(vec![7])
                .call(xy()),
            is!(Error::ArgnumOutOfRange { .. }),
        )
    });
    // Non-differentiable arguments.
    c.add("integer argument selected", &st, || {
        err(
            grad(with_int).argnums(1).call((x(), 2)),
            is!(Error::NonDifferentiableArg { argnum: 1, .. }),
        )
    });
    c.add("float argument selected", &st, || {
        err(
            grad(|(x, s): (Tensor, f64)| x.sum() * s)
                .argnums(1)
                .call((x(), 2.0)),
            is!(Error::NonDifferentiableArg { .. }),
        )
    });
    c.add("static argument selected", &st, || {
        err(
            grad(|(x, _s): (Tensor, Static<&str>)| x.sum())
                .argnums(1)
                .call((x(), Static("a"))),
            is!(Error::NonDifferentiableArg { .. }),
        )
    });
    c.add("bool argument selected by jacrev", &st, || {
        err(
            jacrev(|(x, _b): (Tensor, bool)| x.clone())
                .argnums(1)
                .call((x(), true)),
            is!(Error::NonDifferentiableArg { .. }),
        )
    });
    // Outputs and grad states.
    c.add("grad of a vector output", &st, || {
        err(
            grad(|x: Tensor| {
                counter.set_value(counter.value() + 1.0);
                x * 2.0
            })
            .call(x()),
            is!(Error::NonScalarOutput { .. }),
        )
    });
    c.add("grad of an empty output", &st, || {
        err(
            grad(|x: Tensor| x.slice_axis(0, 0, 0)).call(x()),
            is!(Error::NonScalarOutput { .. }),
        )
    });
    c.add("unused grad state", &st, || {
        err(
            grad(good)
                .grad_states(vec![w.clone(), unused.clone()])
                .call(x()),
            is!(Error::UnusedGradState { .. }),
        )
    });
    c.add("unused grad state, jacrev", &st, || {
        err(
            jacrev(|x: Tensor| &x * &w.value())
                .grad_states(unused.clone())
                .call(x()),
            is!(Error::UnusedGradState { .. }),
        )
    });
    c.add("unused grad state, hessian", &st, || {
        err(
            hessian(good).grad_states(vec![unused.clone()]).call(x()),
            is!(Error::UnusedGradState { .. }),
        )
    });
    // Failures inside the function, with states written first.
    c.add("shape error in grad", &st, || {
        err(
            grad(bad).grad_states(w.clone()).call(x()),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("shape error in vector_grad", &st, || {
        err(vector_grad(bad).call(x()), is!(Error::ShapeMismatch { .. }))
    });
    c.add("shape error in jacrev", &st, || {
        err(jacrev(bad).call(x()), is!(Error::ShapeMismatch { .. }))
    });
    c.add("shape error in jacfwd", &st, || {
        err(
            jacfwd(bad).grad_states(w.clone()).call(x()),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("shape error in hessian", &st, || {
        err(hessian(bad).call(x()), is!(Error::ShapeMismatch { .. }))
    });
    c.add("shape error with has_aux", &st, || {
        err(
            grad(|x: Tensor| (bad(x.clone()), x.clone()))
                .has_aux()
                .call(x()),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("huge shape inside grad", &st, || {
        err(
            grad(|x: Tensor| {
                counter.set_value(counter.value() + 1.0);
                (&x + &Tensor::ones(&[(1 << 63) + 1, 2])).sum()
            })
            .call(x()),
            is!(Error::ShapeOverflow { .. }),
        )
    });
    c.add("unallocatable inside jacrev", &st, || {
        err(
            jacrev(|x: Tensor| {
                w.set_value(w.value() + 1.0);
                x.broadcast_to(&[1 << 61, 2])
            })
            .call(x()),
            is!(Error::AllocationFailed { .. }),
        )
    });
    c.add("f32/f64 state mix shape error", &st, || {
        err(
            grad(|x: Tensor| {
                w64.set_value(&w64.value() * 3.0);
                (&x.cast(DType::F64) + &Tensor::ones(&[3])).sum() * w64.value().sum()
            })
            .grad_states(w64.clone())
            .call(x()),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("panic inside grad", &st, || {
        err(
            grad(|x: Tensor| -> Tensor {
                counter.set_value(counter.value() + 1.0);
                panic!("user bug {}", x.ndim())
            })
            .call(x()),
            |e| matches!(e, Error::Panicked(m) if m.contains("user bug 1")),
        )
    });
    c.add("panic inside jacfwd", &st, || {
        err(
            jacfwd(|_x: Tensor| -> Tensor {
                w.set_value(w.value() * 0.0);
                panic!("bad")
            })
            .call(x()),
            is!(Error::Panicked(_)),
        )
    });
    c.add("Err returned inside grad", &st, || {
        err(
            grad(|x: Tensor| -> Result<Tensor> {
                counter.set_value(counter.value() + 1.0);
                x.try_matmul(&Tensor::ones(&[3]))
            })
            .call(x()),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("item read inside grad then error", &st, || {
        err(
            grad(|x: Tensor| {
                w.set_value(w.value() + x.sum().item().unwrap());
                x.reshape(&[3]).sum()
            })
            .call(x()),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("debug_nan log of negative", &st, || {
        err(
            grad(|x: Tensor| {
                counter.set_value(counter.value() + 1.0);
                x.log().sum()
            })
            .debug_nan(true)
            .call(Tensor::new([-1.0f32, 2.0])),
            is!(Error::NonFinite { .. }),
        )
    });
    c.add("debug_nan NaN input", &st, || {
        err(
            grad(|x: Tensor| (&x * &w.value()).sum())
                .grad_states(w.clone())
                .debug_nan(true)
                .call(Tensor::new([f32::NAN, 1.0])),
            is!(Error::NonFinite { .. }),
        )
    });
    c.add("grad of NaN without debug_nan is NaN", &st, || {
        let g = grad(|x: Tensor| x.square().sum())
            .call(Tensor::new([f32::NAN]))
            .map_err(|e| e.to_string())?;
        check(g.item().unwrap().is_nan(), "not NaN")
    });
    // vjp / jvp.
    c.add("vjp cotangent of the wrong shape", &st, || {
        err(
            vjp(
                |x: Tensor| {
                    counter.set_value(counter.value() + 1.0);
                    &x * &w.value()
                },
                Tensor::ones(&[3]),
            )
            .call(x()),
            |_| true,
        )
    });
    c.add("jvp with too few tangents", &st, || {
        err(
            jvp(good)
                .grad_states(w.clone())
                .argnums(0)
                .call_jvp(x(), &[Tensor::ones(&[2])]),
            |_| true,
        )
    });
    c.add("jvp tangent of the wrong shape", &st, || {
        err(jvp(good).call_jvp(x(), &[Tensor::ones(&[5])]), |_| true)
    });
    c.add("jvp tangent of the wrong dtype and shape", &st, || {
        err(
            jvp(good).call_jvp(x(), &[Tensor::ones(&[3]).cast(DType::F64)]),
            |_| true,
        )
    });
    c.add("hessian of a tuple argument", &st, || {
        err(
            hessian(|((a, b),): ((Tensor, Tensor),)| (&a * &b).sum()).call(((x(), x()),)),
            is!(Error::Unsupported(_)),
        )
    });

    // Parameters.
    for (name, value) in chunk_values {
        let v1 = value.clone();
        c.add(format!("jacrev {name}={value:?}"), &st, move || {
            err(
                jacrev(vec_out).param(name, v1.clone()).call(x()),
                is!(Error::PluginParam { .. }),
            )
        });
        let v2 = value.clone();
        c.add(format!("jacfwd {name}={value:?}"), &st, move || {
            err(
                jacfwd(vec_out).param(name, v2.clone()).call(x()),
                is!(Error::PluginParam { .. }),
            )
        });
        let v3 = value.clone();
        c.add(format!("hessian {name}={value:?}"), &st, move || {
            err(
                hessian(good).param(name, v3.clone()).call(x()),
                is!(Error::PluginParam { .. }),
            )
        });
    }
    c.add("grad with a parameter", &st, || {
        err(
            grad(good).param("chunk_size", 2).call(x()),
            is!(Error::PluginParam { .. }),
        )
    });
    c.add("vector_grad with a parameter", &st, || {
        err(
            vector_grad(vec_out).param("scale", 2.0).call(x()),
            is!(Error::PluginParam { .. }),
        )
    });
    c.add("vjp with a parameter", &st, || {
        err(
            vjp(vec_out, Tensor::ones(&[2])).param("x", 1).call(x()),
            is!(Error::PluginParam { .. }),
        )
    });
    c.add("jvp with a parameter", &st, || {
        err(
            jvp(good)
                .param("chunk_size", 1)
                .call_jvp(x(), &[Tensor::ones(&[2])]),
            is!(Error::PluginParam { .. }),
        )
    });

    // The plugin registry.
    c.add("unknown transform plugin", &st, || {
        err(
            reg.transform("nope", &Params::new()),
            is!(Error::UnknownPlugin { .. }),
        )
    });
    c.add("unknown processor", &st, || {
        err(
            reg.processor("nope", &Params::new()),
            is!(Error::UnknownPlugin { .. }),
        )
    });
    c.add("processor missing param", &st, || {
        err(
            reg.processor("clip_by_global_norm", &Params::new()),
            is!(Error::PluginParam { .. }),
        )
    });
    c.add("processor mistyped param", &st, || {
        err(
            reg.processor("scale", &p("scale", "big".into())),
            is!(Error::PluginParam { .. }),
        )
    });
    c.add("processor negative max_norm", &st, || {
        err(
            reg.processor("clip_by_global_norm", &p("max_norm", (-1.0).into())),
            is!(Error::PluginParam { .. }),
        )
    });
    c.add("processor NaN max_norm", &st, || {
        err(
            reg.processor("clip_by_global_norm", &p("max_norm", f64::NAN.into())),
            is!(Error::PluginParam { .. }),
        )
    });
    c.add("clip_by_value min > max", &st, || {
        err(
            reg.processor(
                "clip_by_value",
                &Params::new().with("min", 1.0).with("max", -1.0),
            ),
            is!(Error::PluginParam { .. }),
        )
    });
    c.add("add_noise negative std", &st, || {
        err(
            reg.processor("add_noise", &p("std", (-0.1).into())),
            is!(Error::PluginParam { .. }),
        )
    });
    c.add("processor typo param", &st, || {
        err(
            reg.processor(
                "scale",
                &Params::new().with("scale", 1.0).with("sclae", 2.0),
            ),
            is!(Error::PluginParam { .. }),
        )
    });
    c.add("identity given a param", &st, || {
        err(
            reg.processor("identity", &p("x", 1.into())),
            is!(Error::PluginParam { .. }),
        )
    });
    c.add("registry jacrev chunk_size 0", &st, || {
        err(
            reg.transform("jacrev", &p("chunk_size", 0.into())),
            is!(Error::PluginParam { .. }),
        )
    });
    c.add("registry grad with a param", &st, || {
        err(
            reg.transform("grad", &p("eps", 0.1.into())),
            is!(Error::PluginParam { .. }),
        )
    });
    c.add("registry scaled_grad missing scale", &st, || {
        err(
            reg.gradient_transform(good, "scaled_grad", Params::new()),
            is!(Error::PluginParam { .. }),
        )
    });
    c.add("registry hessian as first order", &st, || {
        err(
            reg.gradient_transform(good, "hessian", Params::new()),
            is!(Error::Unsupported(_)),
        )
    });
    c.add("registry unknown gradient_transform", &st, || {
        err(
            reg.gradient_transform(good, "grda", Params::new()),
            is!(Error::UnknownPlugin { .. }),
        )
    });
    c.add("duplicate registration", &st, || {
        err(
            reg.register_transform_plugin(
                "grad",
                std::sync::Arc::new(stategrad::transform::plugins::GradPlugin),
            ),
            is!(Error::DuplicatePlugin { .. }),
        )
    });
    c.add("scaled_grad failing inside", &st, || {
        let g = reg
            .gradient_transform(bad, "scaled_grad", p("scale", 0.5.into()))
            .map_err(|e| e.to_string())?;
        err(
            g.grad_states(w.clone()).call(x()),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("clipped_grad failing inside", &st, || {
        err(
            stategrad::plugins::clipped_grad(bad, 1.0).call(x()),
            is!(Error::ShapeMismatch { .. }),
        )
    });

    // Nested transforms failing inside.
    c.add("grad of grad failing inside", &st, || {
        err(
            grad(|x: Tensor| grad(bad).call(x).unwrap_or_else(|e| panic!("{e}")).sum()).call(x()),
            |_| true,
        )
    });
    c.add("grad of grad returning the inner Err", &st, || {
        err(
            grad(|x: Tensor| -> Result<Tensor> {
                counter.set_value(counter.value() + 1.0);
                Ok(grad(bad).call(x)?.sum())
            })
            .call(x()),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("jacrev of vector_grad with bad argnums inside", &st, || {
        err(
            jacrev(|x: Tensor| -> Result<Tensor> {
                w.set_value(w.value() + 1.0);
                vector_grad(pair).argnums(4).call((x.clone(), x))
            })
            .call(x()),
            is!(Error::ArgnumOutOfRange { .. }),
        )
    });
    c.add("grad of jacrev with a bad param inside", &st, || {
        err(
            grad(|x: Tensor| -> Result<Tensor> {
                counter.set_value(counter.value() + 1.0);
                Ok(jacrev(vec_out).param("chunk_size", 0).call(x)?.sum())
            })
            .call(x()),
            is!(Error::PluginParam { .. }),
        )
    });
    c.add("grad of vmap failing", &st, || {
        err(
            grad(|x: Tensor| -> Result<Tensor> {
                counter.set_value(counter.value() + 1.0);
                Ok(vmap(|r: Tensor| r.matmul(&Tensor::ones(&[3])))
                    .call(x.reshape(&[2, 1]))?
                    .sum())
            })
            .call(x()),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("grad of jit failing", &st, || {
        let j = jit(|x: Tensor| (&x + &Tensor::ones(&[5])).sum());
        err(
            grad(|x: Tensor| -> Result<Tensor> {
                counter.set_value(counter.value() + 1.0);
                j.call(x)
            })
            .call(x()),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("jit of grad failing", &st, || {
        err(
            jit(|x: Tensor| grad(bad).call(x)).call(x()),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("hessian of a function with a late shape error", &st, || {
        err(
            hessian(|x: Tensor| {
                w.set_value(w.value() + 1.0);
                (x.square().sum() * &Tensor::ones(&[2])).reshape(&[3]).sum()
            })
            .call(x()),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("StateFinder of a failing function", &st, || {
        err(
            StateFinder::new(bad).find(x()),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("StateFinder returning Err", &st, || {
        err(
            StateFinder::new(|x: Tensor| -> Result<Tensor> {
                w.set_value(w.value() * 5.0);
                x.try_reshape(&[-1, -1])
            })
            .find_list(x()),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("StateFinder usage both with find", &st, || {
        err(
            StateFinder::new(good).usage(Usage::Both).find(x()),
            is!(Error::InvalidOption { .. }),
        )
    });
    c.add("Usage from a bad string", &st, || {
        err(
            "sometimes".parse::<Usage>(),
            is!(Error::InvalidOption { .. }),
        )
    });

    // vmap.
    c.add("vmap in_axes wrong length", &st, || {
        err(
            vmap(|x: Tensor| x.sum())
                .in_axes(vec![Some(0), None])
                .call(t32(&[2, 2])),
            is!(Error::InvalidOption { .. }),
        )
    });
    c.add("vmap in_axes missing axis", &st, || {
        err(
            vmap(|x: Tensor| x.sum())
                .in_axes(vec![Some(3)])
                .call(t32(&[2, 2])),
            |_| true,
        )
    });
    c.add("vmap batch sizes differ", &st, || {
        err(
            vmap(|(a, b): (Tensor, Tensor)| &a + &b).call((t32(&[2, 3]), t32(&[3, 3]))),
            |_| true,
        )
    });
    c.add("vmap over a scalar", &st, || {
        err(
            vmap(|x: Tensor| x * 2.0).call(Tensor::scalar(1.0f32)),
            |_| true,
        )
    });
    c.add("vmap writing a state", &st, || {
        err(
            vmap(|x: Tensor| {
                counter.set_value(x.sum());
                x
            })
            .call(t32(&[3, 2])),
            is!(Error::Unsupported(_)),
        )
    });
    c.add("vmap function shape error", &st, || {
        err(
            vmap(|x: Tensor| {
                w.value();
                x.matmul(&Tensor::ones(&[4]))
            })
            .call(t32(&[3, 2])),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("vmap data-dependent function failing", &st, || {
        err(
            vmap(|x: Tensor| {
                if x.sum().item().unwrap_or(0.0) > 100.0 {
                    x.clone()
                } else {
                    x.reshape(&[7])
                }
            })
            .call(t32(&[3, 2])),
            is!(Error::InvalidArgument { .. }),
        )
    });

    // jit and cond.
    c.add("jit reading item", &st, || {
        err(
            jit(|x: Tensor| {
                counter.set_value(counter.value() + 1.0);
                Tensor::scalar(x.sum().item().unwrap() as f32)
            })
            .call(x()),
            |_| true,
        )
    });
    c.add("jit reading to_vec", &st, || {
        err(
            jit(|x: Tensor| {
                w.set_value(w.value() + 1.0);
                Tensor::new(x.to_vec::<f32>())
            })
            .call(x()),
            is!(Error::TracedValueRead { .. }),
        )
    });
    c.add("jit shape error", &st, || {
        err(jit(bad).call(x()), is!(Error::ShapeMismatch { .. }))
    });
    c.add("jit returning Err", &st, || {
        err(
            jit(|x: Tensor| -> Result<Tensor> {
                counter.set_value(counter.value() + 1.0);
                x.try_sum_along(&[3], false)
            })
            .call(x()),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("jit panicking", &st, || {
        err(
            jit(|_x: Tensor| -> Tensor {
                w.set_value(w.value() * 2.0);
                panic!("oops")
            })
            .call(x()),
            is!(Error::Panicked(_)),
        )
    });
    c.add("jit f32 then f64 shape error", &st, || {
        let j = jit(|x: Tensor| (&x * &w.value()).sum());
        j.call(x()).map_err(|e| e.to_string())?;
        err(
            j.call(Tensor::new([1.0f64, 2.0, 3.0])),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("cond with a multi-element predicate", &st, || {
        err(cond(&x(), x, x), is!(Error::InvalidArgument { .. }))
    });
    c.add("cond with an empty predicate", &st, || {
        err(
            cond(&Tensor::zeros(&[0]), x, x),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("cond under jit with branch shapes differing", &st, || {
        err(
            jit(|x: Tensor| {
                cond(
                    &x.sum().gt_scalar(0.0),
                    || {
                        counter.set_value(counter.value() + 1.0);
                        x.clone()
                    },
                    || x.sum(),
                )
            })
            .call(x()),
            is!(Error::ShapeMismatch { op: "cond", .. }),
        )
    });
    c.add("cond under jit with branch dtypes differing", &st, || {
        err(
            jit(|x: Tensor| cond(&x.sum().gt_scalar(0.0), || x.clone(), || x.cast(DType::F64)))
                .call(x()),
            is!(Error::DTypeMismatch { op: "cond", .. }),
        )
    });
    c.add(
        "cond under jit writing a state with two shapes",
        &st,
        || {
            err(
                jit(|x: Tensor| {
                    cond(
                        &x.sum().gt_scalar(0.0),
                        || {
                            w.set_value(x.sum());
                            x.clone()
                        },
                        || x.clone(),
                    )
                })
                .call(x()),
                is!(Error::ShapeMismatch { op: "cond", .. }),
            )
        },
    );

    c.run("transforms");
}
