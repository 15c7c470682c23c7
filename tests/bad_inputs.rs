//! A corpus of bad inputs across the public API. Each case must end in a typed error or a
//! documented result: a panic escaping a `try_` form or a transform is a failure, and so is any
//! state whose value (bit for bit, with shape and dtype) differs after the failing call. The
//! panicking convenience operators are cases too: they must panic with the error's message as a
//! `String`. Each test reports `N inputs, 0 panics, 0 states changed` and lists any bad case.

use stategrad::plugins::Registry;
use stategrad::prelude::*;
use stategrad::{jit::cond, jit::for_loop, jit::scan, ParamValue};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a case checks; `Err` says what went wrong.
type Check<'a> = Box<dyn Fn() -> std::result::Result<(), String> + 'a>;

struct Case<'a> {
    name: String,
    states: Vec<State>,
    run: Check<'a>,
}

#[derive(Default)]
struct Corpus<'a> {
    cases: Vec<Case<'a>>,
}

impl<'a> Corpus<'a> {
    fn add(
        &mut self,
        name: impl Into<String>,
        states: &[&State],
        run: impl Fn() -> std::result::Result<(), String> + 'a,
    ) {
        self.cases.push(Case {
            name: name.into(),
            states: states.iter().map(|s| (*s).clone()).collect(),
            run: Box::new(run),
        });
    }

    /// Run every case; panics listing the bad ones.
    fn run(self, label: &str) {
        let n = self.cases.len();
        let (mut panics, mut changed, mut wrong) = (0, 0, 0);
        let mut bad = Vec::new();
        for case in &self.cases {
            let before: Vec<Snapshot> = case.states.iter().map(snapshot).collect();
            match catch_unwind(AssertUnwindSafe(|| (case.run)())) {
                Ok(Ok(())) => {}
                Ok(Err(msg)) => {
                    wrong += 1;
                    bad.push(format!("{}: {msg}", case.name));
                }
                Err(p) => {
                    panics += 1;
                    bad.push(format!("{}: panicked: {}", case.name, message(&*p)));
                }
            }
            for (s, b) in case.states.iter().zip(&before) {
                if &snapshot(s) != b {
                    changed += 1;
                    bad.push(format!("{}: state {} changed", case.name, s.label()));
                }
            }
        }
        let report = format!(
            "{label}: {n} inputs, {panics} panics, {changed} states changed, {wrong} wrong results"
        );
        println!("{report}");
        assert!(bad.is_empty(), "{report}\n{}", bad.join("\n"));
    }
}

/// A state's value as shape, dtype and the bits of every element.
type Snapshot = (Vec<usize>, DType, Vec<u64>);

fn snapshot(s: &State) -> Snapshot {
    let t = s.value();
    let bits = match t.dtype() {
        DType::F32 => t
            .to_vec::<f32>()
            .iter()
            .map(|x| x.to_bits() as u64)
            .collect(),
        _ => t.to_vec::<f64>().iter().map(|x| x.to_bits()).collect(),
    };
    (t.shape().to_vec(), t.dtype(), bits)
}

fn message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "<not a string: Box<dyn Any>>".into())
}

/// A typed error matching `pred`.
fn err<T>(r: Result<T>, pred: impl Fn(&Error) -> bool) -> std::result::Result<(), String> {
    match r {
        Err(e) if pred(&e) => Ok(()),
        Err(e) => Err(format!("unexpected error {e:?}")),
        Ok(_) => Err("succeeded".into()),
    }
}

/// A panic whose `String` message contains every one of `parts`.
fn panics_with<T>(f: impl FnOnce() -> T, parts: &[&str]) -> std::result::Result<(), String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(_) => Err("did not panic".into()),
        Err(p) => {
            let Some(msg) = p.downcast_ref::<String>() else {
                return Err(format!("payload is not a String: {}", message(&*p)));
            };
            match parts.iter().find(|part| !msg.contains(*part)) {
                Some(part) => Err(format!("message {msg:?} lacks {part:?}")),
                None => Ok(()),
            }
        }
    }
}

fn check(ok: bool, what: &str) -> std::result::Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

macro_rules! is {
    ($pat:pat) => {
        |e: &Error| matches!(e, $pat)
    };
}

fn t32(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| i as f32 * 0.5 + 1.0).collect(), shape).unwrap()
}

fn t64(shape: &[usize]) -> Tensor {
    t32(shape).cast(DType::F64)
}

// ------------------------------------------------------------------ tensor operations

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

// ------------------------------------------------------------------ transforms and plugins

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

// ------------------------------------------------------------------ loops

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
