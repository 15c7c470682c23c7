use super::*;

#[test]
fn operations_on_bad_inputs() {
    let (a, b) = (t32(&[2, 3]), t32(&[4]));
    let (a64, b64) = (t64(&[2, 3]), t64(&[4]));
    let mut c = Corpus::default();

    // Elementwise binary ops: shapes that do not broadcast, in one dtype and mixed.
    type BinOp = fn(&Tensor, &Tensor) -> Result<Tensor>;
    let binary: [(&str, BinOp); 13] = [
        ("add", Tensor::try_add),
        ("sub", Tensor::try_sub),
        ("mul", Tensor::try_mul),
        ("div", Tensor::try_div),
        ("pow", Tensor::try_pow),
        ("maximum", Tensor::try_maximum),
        ("minimum", Tensor::try_minimum),
        ("gt", Tensor::try_gt),
        ("ge", Tensor::try_ge),
        ("lt", Tensor::try_lt),
        ("le", Tensor::try_le),
        ("eq", Tensor::try_eq),
        ("ne", Tensor::try_ne),
    ];
    for (name, op) in binary {
        let (a, b, a64, b64) = (&a, &b, &a64, &b64);
        c.add(format!("{name} (2,3) vs (4,)"), &[], move || {
            err(op(a, b), |e| match e {
                Error::ShapeMismatch { lhs, rhs, .. } => lhs.0 == [2, 3] && rhs.0 == [4],
                _ => false,
            })
        });
        c.add(format!("{name} f32 (2,3) vs f64 (4,)"), &[], move || {
            err(op(a, b64), is!(Error::ShapeMismatch { .. }))
        });
        c.add(format!("{name} f64 (4,) vs f32 (2,3)"), &[], move || {
            err(op(b64, a), is!(Error::ShapeMismatch { .. }))
        });
        c.add(format!("{name} (2,3) vs empty (0,)"), &[], move || {
            err(
                op(a64, &Tensor::zeros(&[0])),
                is!(Error::ShapeMismatch { .. }),
            )
        });
    }

    // The panicking operators: the message, as a String.
    c.add("a + b panics", &[], || {
        panics_with(|| &a + &b, &["(2, 3)", "(4,)"])
    });
    c.add("a - b panics", &[], || {
        panics_with(|| &a - &b, &["(2, 3)", "(4,)"])
    });
    c.add("a * b panics", &[], || {
        panics_with(|| &a * &b, &["(2, 3)", "(4,)"])
    });
    c.add("a / b panics", &[], || {
        panics_with(|| a.clone() / b.clone(), &["(2, 3)"])
    });
    c.add("matmul panics", &[], || {
        panics_with(|| a.matmul(&b), &["matmul"])
    });
    c.add("reshape panics", &[], || {
        panics_with(|| a.reshape(&[7]), &["reshape"])
    });
    c.add("sum_along panics", &[], || {
        panics_with(|| a.sum_along(&[5], false), &["axis 5"])
    });
    c.add("at panics", &[], || panics_with(|| b.at(4), &["index 4"]));
    c.add("concat panics", &[], || {
        panics_with(|| Tensor::concat(&[&a, &b], 0), &["concatenate"])
    });
    c.add("stack panics", &[], || {
        panics_with(|| Tensor::stack(&[&a, &b], 0), &["stack"])
    });
    c.add("permute panics", &[], || {
        panics_with(|| a.permute(&[0, 0]), &["permutation"])
    });
    c.add("broadcast_to panics", &[], || {
        panics_with(|| a.broadcast_to(&[3, 3]), &["(2, 3)"])
    });
    c.add("select panics", &[], || {
        panics_with(|| Tensor::select(&b, &a, &a), &["(4,)"])
    });
    c.add("ones of a huge shape panics", &[], || {
        panics_with(
            || Tensor::ones(&[(1 << 63) + 1, 2]),
            &["more elements than fit"],
        )
    });
    c.add("eye(2^32) panics", &[], || {
        panics_with(|| Tensor::eye(1 << 32), &["eye"])
    });
    c.add("linspace(2^62) panics", &[], || {
        panics_with(|| Tensor::linspace(0.0, 1.0, 1 << 62), &["cannot allocate"])
    });

    // Reductions and axes.
    c.add("sum axis 2 of rank 2", &[], || {
        err(
            a.try_sum_along(&[2], false),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("sum axis -3 of rank 2", &[], || {
        err(
            a.try_sum_along(&[-3], true),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("sum repeated axis", &[], || {
        err(
            a.try_sum_along(&[0, -2], false),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("sum_axes axis 9", &[], || {
        err(
            a.try_sum_axes(&[9], false),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("sum axis 0 of a scalar", &[], || {
        err(
            Tensor::scalar(1.0f32).try_sum_along(&[0], false),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("mean axis 2", &[], || {
        err(
            a.try_mean_along(&[2], false),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("max axis 2", &[], || {
        err(
            a.try_max_along(&[2], false),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("min axis -5", &[], || {
        err(
            a.try_min_along(&[-5], false),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("logsumexp axis 3", &[], || {
        err(
            a.try_logsumexp(&[3], false),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("log_softmax axis 2", &[], || {
        err(a.try_log_softmax(2), is!(Error::InvalidArgument { .. }))
    });
    c.add("softmax axis -3", &[], || {
        err(a.try_softmax(-3), is!(Error::InvalidArgument { .. }))
    });
    c.add("sum_to more dims", &[], || {
        err(b.try_sum_to(&[1, 1, 4]), is!(Error::ShapeMismatch { .. }))
    });
    c.add("sum_to incompatible", &[], || {
        err(a.try_sum_to(&[2]), is!(Error::ShapeMismatch { .. }))
    });
    c.add("max of an empty tensor", &[], || {
        err(Tensor::zeros(&[0]).try_max(), |_| true)
    });

    // Layout.
    c.add("reshape_to wrong count", &[], || {
        err(a.try_reshape_to(&[4]), is!(Error::InvalidArgument { .. }))
    });
    c.add("reshape two -1", &[], || {
        err(a.try_reshape(&[-1, -1]), is!(Error::InvalidArgument { .. }))
    });
    c.add("reshape -2", &[], || {
        err(a.try_reshape(&[-2, 3]), is!(Error::InvalidArgument { .. }))
    });
    c.add("reshape -1 with a 0", &[], || {
        err(a.try_reshape(&[0, -1]), is!(Error::InvalidArgument { .. }))
    });
    c.add("reshape -1 not dividing", &[], || {
        err(a.try_reshape(&[4, -1]), is!(Error::InvalidArgument { .. }))
    });
    c.add("reshape_to overflowing", &[], || {
        err(
            a.try_reshape_to(&[(1 << 63) + 1, 2, 3]),
            is!(Error::ShapeOverflow { .. }),
        )
    });
    c.add("reshape overflowing known dims", &[], || {
        err(
            a.try_reshape(&[1 << 40, 1 << 40, -1]),
            is!(Error::ShapeOverflow { .. }),
        )
    });
    c.add("broadcast_to incompatible", &[], || {
        err(
            a.try_broadcast_to(&[2, 4]),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("broadcast_to fewer dims", &[], || {
        err(a.try_broadcast_to(&[3]), is!(Error::ShapeMismatch { .. }))
    });
    c.add("broadcast_to overflowing", &[], || {
        err(
            a.try_broadcast_to(&[1 << 62, 2, 3]),
            is!(Error::ShapeOverflow { .. }),
        )
    });
    c.add("broadcast_to unallocatable", &[], || {
        err(
            Tensor::ones(&[1]).try_broadcast_to(&[1 << 61]),
            is!(Error::AllocationFailed { .. }),
        )
    });
    c.add("permute wrong length", &[], || {
        err(a.try_permute(&[0]), is!(Error::InvalidArgument { .. }))
    });
    c.add("permute duplicate", &[], || {
        err(a.try_permute(&[1, 1]), is!(Error::InvalidArgument { .. }))
    });
    c.add("permute out of range", &[], || {
        err(a.try_permute(&[0, 2]), is!(Error::InvalidArgument { .. }))
    });
    c.add("swap_axes out of range", &[], || {
        err(a.try_swap_axes(0, 2), is!(Error::InvalidArgument { .. }))
    });
    c.add("slice start > end", &[], || {
        err(
            a.try_slice_axis(1, 2, 1),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("slice end > len", &[], || {
        err(
            a.try_slice_axis(1, 0, 4),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("slice axis out of range", &[], || {
        err(
            a.try_slice_axis(2, 0, 1),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("slice step 0", &[], || {
        err(
            a.try_slice_axis_step(1, 0, 3, 0),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("slice usize::MAX end", &[], || {
        err(
            a.try_slice_axis(0, 0, usize::MAX),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("index out of bounds", &[], || {
        err(a.try_index_axis(0, 2), is!(Error::InvalidArgument { .. }))
    });
    c.add("index negative out of bounds", &[], || {
        err(a.try_index_axis(1, -4), is!(Error::InvalidArgument { .. }))
    });
    c.add("index isize::MIN", &[], || {
        err(
            a.try_index_axis(1, isize::MIN),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("index axis out of range", &[], || {
        err(a.try_index_axis(5, 0), is!(Error::InvalidArgument { .. }))
    });
    c.add("index into an empty axis", &[], || {
        err(
            Tensor::zeros(&[0, 2]).try_index_axis(0, 0),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("concat nothing", &[], || {
        err(
            Tensor::try_concat(&[], 0),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("concat scalars", &[], || {
        let s = Tensor::scalar(1.0f32);
        err(
            Tensor::try_concat(&[&s, &s], 0),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("concat mismatched", &[], || {
        err(
            Tensor::try_concat(&[&a, &t32(&[3, 2])], 0),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("concat different ranks f32/f64", &[], || {
        err(
            Tensor::try_concat(&[&a, &b64], 0),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("concat bad axis", &[], || {
        err(
            Tensor::try_concat(&[&a, &a], 2),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("stack nothing", &[], || {
        err(
            Tensor::try_stack(&[], 0),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("stack mismatched", &[], || {
        err(
            Tensor::try_stack(&[&a, &a.t()], 0),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("stack bad axis", &[], || {
        err(
            Tensor::try_stack(&[&a, &a], 4),
            is!(Error::InvalidArgument { .. }),
        )
    });

    // Matmul and select.
    c.add("matmul 0-d", &[], || {
        err(
            Tensor::scalar(1.0f32).try_matmul(&b),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("matmul inner dims", &[], || {
        err(a.try_matmul(&a), is!(Error::ShapeMismatch { .. }))
    });
    c.add("matmul 1-d lengths", &[], || {
        err(b.try_matmul(&t32(&[3])), is!(Error::ShapeMismatch { .. }))
    });
    c.add("matmul batch dims", &[], || {
        err(
            t32(&[2, 2, 3]).try_matmul(&t32(&[3, 3, 1])),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("matmul f32 by f64 mismatch", &[], || {
        err(a.try_matmul(&a64), is!(Error::ShapeMismatch { .. }))
    });
    c.add("matmul_t mismatch", &[], || {
        err(
            a.try_matmul_t(&a, false, false),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("matmul output overflows", &[], || {
        err(
            Tensor::zeros(&[1 << 32, 0]).try_matmul(&Tensor::zeros(&[0, 1 << 32])),
            is!(Error::ShapeOverflow { .. }),
        )
    });
    c.add("select cond shape", &[], || {
        err(
            Tensor::try_select(&b, &a, &a),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("select branch shapes", &[], || {
        err(
            Tensor::try_select(&a, &a, &b64),
            is!(Error::ShapeMismatch { .. }),
        )
    });
    c.add("broadcast add overflows", &[], || {
        err(
            Tensor::zeros(&[1 << 40, 1, 0]).try_add(&Tensor::zeros(&[1, 1 << 40, 0])),
            is!(Error::ShapeOverflow { .. }),
        )
    });

    // Constructors.
    c.add("from_vec wrong length", &[], || {
        err(
            Tensor::from_vec(vec![1.0f32; 3], &[2, 2]),
            is!(Error::DataLength { .. }),
        )
    });
    c.add("from_vec f64 wrong length", &[], || {
        err(
            Tensor::from_vec(vec![1.0f64; 5], &[2, 2]),
            is!(Error::DataLength { .. }),
        )
    });
    c.add("from_vec overflowing", &[], || {
        err(
            Tensor::from_vec(vec![1.0f32; 2], &[(1 << 63) + 1, 2]),
            is!(Error::ShapeOverflow { .. }),
        )
    });
    c.add("try_ones overflowing", &[], || {
        err(
            Tensor::try_ones(&[usize::MAX, 2]),
            is!(Error::ShapeOverflow { .. }),
        )
    });
    c.add("try_zeros overflowing past a 0", &[], || {
        err(
            Tensor::try_zeros(&[1 << 40, 1 << 40, 0]),
            is!(Error::ShapeOverflow { .. }),
        )
    });
    c.add("try_full_dtype f64 overflowing", &[], || {
        err(
            Tensor::try_full_dtype(&[1 << 32, 1 << 32], 1.0, DType::F64),
            is!(Error::ShapeOverflow { .. }),
        )
    });
    c.add("try_ones past isize::MAX", &[], || {
        err(
            Tensor::try_ones(&[isize::MAX as usize + 1]),
            is!(Error::ShapeOverflow { .. }),
        )
    });
    c.add("try_zeros with a dim past isize::MAX and a 0", &[], || {
        err(
            Tensor::try_zeros(&[usize::MAX, 0]),
            is!(Error::ShapeOverflow { .. }),
        )
    });
    c.add("jacrev with a huge chunk_size", &[], || {
        let j = jacrev(|x: Tensor| x.square())
            .param("chunk_size", i64::MAX)
            .call(Tensor::new([1.0f32, 2.0]))
            .map_err(|e| e.to_string())?;
        check(j.shape() == [2, 2], "bad shape")
    });
    c.add("try_ones unallocatable", &[], || {
        err(
            Tensor::try_ones(&[1 << 62]),
            is!(Error::AllocationFailed { .. }),
        )
    });
    c.add("try_full unallocatable 2-d", &[], || {
        err(
            Tensor::try_full(&[1 << 31, 1 << 31], 2.0),
            is!(Error::AllocationFailed { .. }),
        )
    });
    c.add("eye overflowing", &[], || {
        err(
            Tensor::try_eye_dtype(1 << 32, DType::F32),
            is!(Error::ShapeOverflow { .. }),
        )
    });
    c.add("eye f64 unallocatable", &[], || {
        err(
            Tensor::try_eye_dtype(1 << 31, DType::F64),
            is!(Error::AllocationFailed { .. }),
        )
    });
    c.add("arange step 0", &[], || {
        err(
            Tensor::arange(0.0, 1.0, 0.0),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("arange step NaN", &[], || {
        err(
            Tensor::arange(0.0, 1.0, f32::NAN),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("arange step inf", &[], || {
        err(
            Tensor::arange(0.0, 1.0, f32::INFINITY),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("arange stop NaN", &[], || {
        err(
            Tensor::arange(0.0, f32::NAN, 1.0),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("arange start -inf", &[], || {
        err(
            Tensor::arange(f32::NEG_INFINITY, 0.0, 1.0),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("arange 1e30 elements", &[], || {
        err(
            Tensor::arange(0.0, 1e30, 1.0),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("arange 2^62 elements", &[], || {
        err(
            Tensor::arange(0.0, 4.6e18, 1.0),
            is!(Error::AllocationFailed { .. }),
        )
    });
    c.add("arange backwards is empty", &[], || {
        check(
            Tensor::arange(1.0, 0.0, 1.0).unwrap().numel() == 0,
            "not empty",
        )
    });
    c.add("linspace unallocatable", &[], || {
        err(
            Tensor::try_linspace(0.0, 1.0, 1 << 62),
            is!(Error::AllocationFailed { .. }),
        )
    });
    c.add("item of many", &[], || {
        err(a.item(), is!(Error::InvalidArgument { .. }))
    });
    c.add("item of none", &[], || {
        err(
            Tensor::zeros(&[0]).item(),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("get_flat out of range", &[], || {
        check(
            a.get_flat(6).is_none() && a.get_flat(usize::MAX).is_none(),
            "Some",
        )
    });

    // Empty tensors, NaN and Inf: the documented (numpy) results.
    c.add("mean of empty is NaN", &[], || {
        check(
            Tensor::zeros(&[0]).mean().item().unwrap().is_nan(),
            "not NaN",
        )
    });
    c.add("mean over an empty axis is NaN", &[], || {
        let m = Tensor::zeros(&[0, 2])
            .cast(DType::F64)
            .mean_along(&[0], false);
        check(
            m.shape() == [2] && m.to_f64_vec().iter().all(|x| x.is_nan()),
            "not [nan nan]",
        )
    });
    c.add("sum of empty is 0", &[], || {
        check(Tensor::zeros(&[2, 0]).sum().item().unwrap() == 0.0, "not 0")
    });
    c.add("empty prints", &[], || {
        check(Tensor::zeros(&[2, 0]).to_string() == "[[]]", "bad print")
    });
    c.add("log of a negative is NaN", &[], || {
        check(
            Tensor::new([-1.0f32]).log().item().unwrap().is_nan(),
            "not NaN",
        )
    });
    c.add("sqrt of -1 is NaN", &[], || {
        check(
            Tensor::new([-1.0f64]).sqrt().item().unwrap().is_nan(),
            "not NaN",
        )
    });
    c.add("1/0 is inf", &[], || {
        check(
            Tensor::new([0.0f32]).recip().item().unwrap() == f64::INFINITY,
            "not inf",
        )
    });
    c.add("NaN propagates through matmul", &[], || {
        let x = Tensor::new([[f32::NAN, 1.0]]);
        check(
            x.matmul(&Tensor::ones(&[2, 1])).item().unwrap().is_nan(),
            "not NaN",
        )
    });
    c.add("softmax of infinities", &[], || {
        let s = Tensor::new([f32::INFINITY, 0.0]).softmax(0);
        check(s.shape() == [2], "bad shape")
    });
    c.add("zero-size matmul is zeros", &[], || {
        let z = Tensor::zeros(&[2, 0]).matmul(&Tensor::zeros(&[0, 3]));
        check(
            z.shape() == [2, 3] && z.to_f64_vec().iter().all(|&x| x == 0.0),
            "not zeros",
        )
    });
    c.add("mean of empty has an empty gradient", &[], || {
        let g = grad(|x: Tensor| x.mean())
            .call(Tensor::zeros(&[0]))
            .map_err(|e| e.to_string())?;
        check(g.shape() == [0], "bad gradient shape")
    });

    // Random draws: bad parameters and sizes leave the global key where it was.
    let key = stategrad::random::default_state();
    let rk: [&State; 1] = [key];
    use stategrad::random;
    c.add("normal of a huge shape", &rk, || {
        err(
            random::try_normal(&[usize::MAX, 2]),
            is!(Error::ShapeOverflow { .. }),
        )
    });
    c.add("normal_dtype unallocatable", &rk, || {
        err(
            random::try_normal_dtype(&[1 << 61], DType::F64),
            is!(Error::AllocationFailed { .. }),
        )
    });
    c.add("uniform NaN bound", &rk, || {
        err(
            random::try_uniform(&[2], f64::NAN, 1.0),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("uniform infinite bound", &rk, || {
        err(
            random::try_uniform(&[2], 0.0, f64::INFINITY),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("randint lo == hi", &rk, || {
        err(
            random::try_randint(&[2], 3, 3),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("randint lo > hi", &rk, || {
        err(
            random::try_randint(&[2], 5, -5),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("randint the widest range", &[], || {
        let r = random::try_randint(&[64], i64::MIN, i64::MAX).map_err(|e| e.to_string())?;
        check(r.to_f64_vec().iter().all(|v| v.is_finite()), "not finite")
    });
    c.add("bernoulli p > 1", &rk, || {
        err(
            random::try_bernoulli(&[2], 1.5),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("bernoulli p NaN", &rk, || {
        err(
            random::try_bernoulli(&[2], f64::NAN),
            is!(Error::InvalidArgument { .. }),
        )
    });
    c.add("normal panics with the message", &rk, || {
        panics_with(
            || random::normal(&[usize::MAX, 2]),
            &["more elements than fit"],
        )
    });
    c.add("bernoulli panics with the message", &rk, || {
        panics_with(|| random::bernoulli(&[1], -0.5), &["bernoulli", "-0.5"])
    });
    c.add("normal_with_key huge", &rk, || {
        panics_with(
            || random::normal_with_key(&random::key(1), &[1 << 62, 4]),
            &["normal"],
        )
    });

    c.add("seed_context with a panicking body", &rk, || {
        panics_with(
            || random::seed_context(5, || panic!("body failed {}", std::hint::black_box(5))),
            &["body failed 5"],
        )
    });
    c.run("operations");
}
