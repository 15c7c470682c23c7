//! Integer and bool tensors: creation, printing, casts, comparisons, logical operations,
//! integer arithmetic, `where` with a bool mask, and integers as data through `grad`, `jit` and
//! `vmap` (with typed errors for differentiating with respect to them).

use stategrad::prelude::*;
use stategrad::{DType, Error};

#[test]
fn integer_and_bool_tensors_are_made_and_print_as_numpy_prints_them() {
    let i = Tensor::new([[1i32, 10], [-3, 4]]);
    assert_eq!(i.dtype(), DType::I32);
    assert_eq!(i.to_string(), "[[ 1 10]\n [-3  4]]");
    let l = Tensor::from_vec(vec![i64::MAX, -1], &[2]).unwrap();
    assert_eq!(l.dtype(), DType::I64);
    assert_eq!(l.to_vec::<i64>(), vec![i64::MAX, -1], "i64 is exact");
    assert_eq!(l.to_string(), "[9223372036854775807                  -1]");
    let b = Tensor::new([true, false]);
    assert_eq!(b.dtype(), DType::Bool);
    assert_eq!(b.to_string(), "[ True False]");
    assert_eq!(Tensor::scalar(7i32).to_string(), "7");
    assert_eq!(Tensor::scalar(false).to_string(), "False");
    assert_eq!(
        format!("{:?}", Tensor::new([1i64])),
        "Tensor([1], shape=(1,), dtype=int64)"
    );
    assert_eq!(Tensor::zeros_dtype(&[2], DType::I32).to_string(), "[0 0]");
    assert_eq!(Tensor::ones_dtype(&[2], DType::F64).dtype(), DType::F64);
    assert_eq!(
        Tensor::eye_dtype(2, DType::I64).to_vec::<i64>(),
        vec![1, 0, 0, 1]
    );
    assert_eq!(
        Tensor::arange_dtype(0.0, 4.0, 1.0, DType::I64)
            .unwrap()
            .to_vec::<i64>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        Tensor::zeros_dtype(&[0, 2], DType::Bool).to_string(),
        "[[]]"
    );
}

#[test]
fn casts_convert_as_numpy_astype_does() {
    let x = Tensor::new([-1.7f64, -0.2, 0.0, 2.9, f64::NAN, 1e30]);
    assert_eq!(
        x.astype(DType::I32).to_vec::<i32>(),
        vec![-1, 0, 0, 2, 0, i32::MAX]
    );
    assert_eq!(
        x.astype(DType::Bool).to_vec::<bool>(),
        vec![true, true, false, true, true, true]
    );
    let b = Tensor::new([true, false]);
    assert_eq!(b.astype(DType::F32).to_vec::<f32>(), vec![1.0, 0.0]);
    assert_eq!(b.astype(DType::I64).to_vec::<i64>(), vec![1, 0]);
    // Narrowing wraps.
    let big = Tensor::new([1i64 << 32 | 5]);
    assert_eq!(big.astype(DType::I32).to_vec::<i32>(), vec![5]);
    // to_vec converts too.
    assert_eq!(Tensor::new([3i32]).to_vec::<f64>(), vec![3.0]);
}

#[test]
fn comparisons_give_bool_and_logical_operations_combine_them() {
    let x = Tensor::new([1.0f32, 2.0, 3.0]);
    let y = Tensor::new([3.0f32, 2.0, 1.0]);
    assert_eq!(x.lt(&y).to_vec::<bool>(), vec![true, false, false]);
    assert_eq!(x.le(&y).to_vec::<bool>(), vec![true, true, false]);
    assert_eq!(x.gt(&y).to_vec::<bool>(), vec![false, false, true]);
    assert_eq!(x.ge(&y).to_vec::<bool>(), vec![false, true, true]);
    assert_eq!(x.eq(&y).to_vec::<bool>(), vec![false, true, false]);
    assert_eq!(x.ne(&y).to_vec::<bool>(), vec![true, false, true]);
    assert_eq!(x.gt_scalar(1.5).dtype(), DType::Bool);
    // Broadcasting, and mixed dtypes promote before comparing.
    let col = Tensor::new([[2i32], [0]]);
    assert_eq!(
        col.gt(&x).to_vec::<bool>(),
        vec![true, false, false, false, false, false]
    );
    let a = x.gt_scalar(1.5);
    let b = x.lt_scalar(2.5);
    assert_eq!((&a & &b).to_vec::<bool>(), vec![false, true, false]);
    assert_eq!((&a | &b).to_vec::<bool>(), vec![true, true, true]);
    assert_eq!((&a ^ &b).to_vec::<bool>(), vec![true, false, true]);
    assert_eq!((!&a).to_vec::<bool>(), vec![true, false, false]);
    // Other dtypes count as `x != 0`.
    assert_eq!(
        Tensor::new([0i32, 5])
            .logical_or(&Tensor::new([0.0f32, 0.0]))
            .to_vec::<bool>(),
        vec![false, true]
    );
    // NaN compares unequal to everything.
    let n = Tensor::new([f64::NAN]);
    assert_eq!(n.eq(&n).to_vec::<bool>(), vec![false]);
    assert_eq!(n.ne(&n).to_vec::<bool>(), vec![true]);
}

#[test]
fn integer_arithmetic_wraps_and_division_is_true_division() {
    let a = Tensor::new([7i32, -3, i32::MAX]);
    let b = Tensor::new([2i32, 2, 1]);
    assert_eq!((&a + &b).to_vec::<i32>(), vec![9, -1, i32::MIN]);
    assert_eq!((&a - &b).to_vec::<i32>(), vec![5, -5, i32::MAX - 1]);
    assert_eq!((&a * &b).to_vec::<i32>(), vec![14, -6, i32::MAX]);
    assert_eq!((&a * &b).dtype(), DType::I32);
    assert_eq!(a.maximum(&b).to_vec::<i32>(), vec![7, 2, i32::MAX]);
    assert_eq!(a.minimum(&b).to_vec::<i32>(), vec![2, -3, 1]);
    assert_eq!((-&a).to_vec::<i32>(), vec![-7, 3, -i32::MAX]);
    assert_eq!(a.abs().to_vec::<i32>(), vec![7, 3, i32::MAX]);
    assert_eq!(a.sign().to_vec::<i32>(), vec![1, -1, 1]);
    let q = &a / &b;
    assert_eq!(q.dtype(), DType::F32);
    assert_eq!(q.to_vec::<f32>()[..2], [3.5, -1.5]);
    // Transcendental functions and float scalars make float32, as in JAX.
    assert_eq!(Tensor::new([0i32]).exp().to_vec::<f32>(), vec![1.0]);
    let half = Tensor::new([1i64, 2]) * 0.5;
    assert_eq!(
        (half.dtype(), half.to_vec::<f32>()),
        (DType::F32, vec![0.5, 1.0])
    );
    // int32 with int64 is int64; with a float, the float.
    assert_eq!((&a + &Tensor::new([1i64, 1, 1])).dtype(), DType::I64);
    assert_eq!((&a + &Tensor::new([0.5f64])).dtype(), DType::F64);
    // Reductions.
    let m = Tensor::new([[1i64, 5], [3, -2]]);
    assert_eq!(m.sum().to_vec::<i64>(), vec![7]);
    assert_eq!(m.sum().dtype(), DType::I64);
    assert_eq!(m.sum_along(&[0], false).to_vec::<i64>(), vec![4, 3]);
    assert_eq!(m.max_along(&[1], true).to_vec::<i64>(), vec![5, 3]);
    assert_eq!(m.min().to_vec::<i64>(), vec![-2]);
    assert_eq!(m.mean().to_vec::<f64>(), vec![1.75]);
    let bools = Tensor::new([[true, false], [true, true]]);
    assert_eq!(bools.sum().to_vec::<i32>(), vec![3]);
    assert_eq!(bools.sum().dtype(), DType::I32);
    assert_eq!(
        bools.min_along(&[1], false).to_vec::<bool>(),
        vec![false, true]
    );
    assert_eq!(
        bools.max_along(&[0], false).to_vec::<bool>(),
        vec![true, true]
    );
}

#[test]
fn operations_that_need_floats_say_so() {
    let i = Tensor::new([[1i32, 2], [3, 4]]);
    let e = i.try_matmul(&i).unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnsupportedDType {
                op: "dot_general",
                dtype: "int32",
                ..
            }
        ),
        "{e}"
    );
    let b = Tensor::new([true]);
    let e = b.try_add(&b).unwrap_err();
    assert!(
        matches!(e, Error::UnsupportedDType { dtype: "bool", .. }),
        "{e}"
    );
    let e = b.try_neg().unwrap_err();
    assert!(
        matches!(e, Error::UnsupportedDType { dtype: "bool", .. }),
        "{e}"
    );
}

#[test]
fn layout_operations_move_integer_and_bool_data() {
    let i = Tensor::new([[1i32, 2, 3], [4, 5, 6]]);
    assert_eq!(i.t().to_vec::<i32>(), vec![1, 4, 2, 5, 3, 6]);
    assert_eq!(i.reshape(&[3, 2]).shape(), &[3, 2]);
    assert_eq!(i.slice_axis(1, 1, 3).to_vec::<i32>(), vec![2, 3, 5, 6]);
    assert_eq!(i.at(1).to_vec::<i32>(), vec![4, 5, 6]);
    assert_eq!(
        Tensor::new([7i64]).broadcast_to(&[2, 2]).to_vec::<i64>(),
        vec![7; 4]
    );
    let s = Tensor::stack(&[&Tensor::new([true]), &Tensor::new([false])], 0);
    assert_eq!(s.to_vec::<bool>(), vec![true, false]);
    let c = Tensor::concat(&[&i, &i], 0);
    assert_eq!(c.shape(), &[4, 3]);
    assert_eq!(c.to_vec::<i32>()[6..], [1, 2, 3, 4, 5, 6]);
    // Mixed dtypes promote, as numpy's concatenate does.
    let mixed = Tensor::concat(&[&i, &i.astype(DType::I64)], 0);
    assert_eq!(mixed.dtype(), DType::I64);
}

#[test]
fn where_takes_a_bool_mask_and_differentiates_the_chosen_branch() {
    let x = Tensor::new([-1.0f64, 2.0, -3.0]);
    let f = |x: Tensor| where_(&x.gt_scalar(0.0), &x.square(), &(&x * 3.0)).sum();
    assert_eq!(f(x.clone()).item().unwrap(), 4.0 - 3.0 - 9.0);
    let g = grad(f).call(x.clone()).unwrap();
    assert_eq!(g.to_vec::<f64>(), vec![3.0, 4.0, 3.0]);
    // Integer branches.
    let m = Tensor::new([true, false, true]);
    let w = where_(&m, &Tensor::new([1i32, 2, 3]), &Tensor::scalar(0i32));
    assert_eq!(w.to_vec::<i32>(), vec![1, 0, 3]);
    // The same under jit.
    let jf = jit(f);
    assert_eq!(jf.call(x.clone()).unwrap().item().unwrap(), -8.0);
    assert_eq!(
        jf.call(x.neg()).unwrap().item().unwrap(),
        f(x.neg()).item().unwrap()
    );
}

/// A loss that reads integer labels as data: the labels select the logit of each row.
fn loss((logits, labels): (Tensor, Tensor)) -> Tensor {
    let classes = logits.shape()[1];
    let cols = Tensor::arange_dtype(0.0, classes as f64, 1.0, DType::I32).unwrap();
    let one_hot = labels.reshape(&[-1, 1]).eq(&cols);
    let picked = where_(&one_hot, &logits, &Tensor::scalar(0.0f64)).sum_along(&[1], false);
    (logits.logsumexp(&[1], false) - picked).mean()
}

#[test]
fn integer_labels_flow_through_grad_jit_and_vmap_as_data() {
    let logits = Tensor::new([[1.0f64, 2.0, 0.5], [0.0, -1.0, 3.0]]);
    let labels = Tensor::new([1i32, 2]);
    let g = grad(loss)
        .argnums(0)
        .call((logits.clone(), labels.clone()))
        .unwrap();
    // d/dlogits of mean cross-entropy: (softmax - one_hot) / batch.
    let sm = logits.softmax(-1);
    let oh = Tensor::new([[0.0f64, 1.0, 0.0], [0.0, 0.0, 1.0]]);
    assert!(g.allclose(&((&sm - &oh) * 0.5), 1e-12, 1e-12));

    // jit: new labels of the same shape replay without a retrace.
    let j = jit(loss);
    let a = j.call((logits.clone(), labels.clone())).unwrap();
    assert!(a.allclose(&loss((logits.clone(), labels.clone())), 1e-12, 0.0));
    let other = Tensor::new([0i32, 0]);
    let b = j.call((logits.clone(), other.clone())).unwrap();
    assert!(b.allclose(&loss((logits.clone(), other)), 1e-12, 0.0));
    assert_eq!(j.trace_count(), 1);
    // jit of grad, with the labels as data.
    let jg = jit(|(x, y): (Tensor, Tensor)| grad(loss).argnums(0).call((x, y)).unwrap());
    assert!(jg
        .call((logits.clone(), labels.clone()))
        .unwrap()
        .allclose(&g, 1e-12, 1e-12));

    // vmap over examples: per-example losses with per-example integer labels.
    let per = vmap(|(x, y): (Tensor, Tensor)| loss((x.reshape(&[1, 3]), y.reshape(&[1]))))
        .call((logits.clone(), labels.clone()))
        .unwrap();
    assert_eq!(per.shape(), &[2]);
    assert!(per.mean().allclose(&a, 1e-12, 0.0));
}

#[test]
fn differentiating_with_respect_to_integers_is_a_typed_error() {
    let logits = Tensor::new([[1.0f64, 2.0]]);
    let labels = Tensor::new([1i32]);
    let e = grad(loss)
        .argnums(1)
        .call((logits.clone(), labels.clone()))
        .unwrap_err();
    assert!(
        matches!(&e, Error::NonDifferentiableArg { argnum: 1, reason } if reason.contains("int32")),
        "{e}"
    );
    let counter = State::new(Tensor::scalar(0i64));
    let e = grad(|x: Tensor| {
        counter.set_value(counter.value() + Tensor::scalar(1i64));
        x.sum()
    })
    .grad_states(counter.clone())
    .call(Tensor::ones(&[2]))
    .unwrap_err();
    assert!(
        matches!(e, Error::UnsupportedDType { dtype: "int64", .. }),
        "{e}"
    );
    assert_eq!(counter.value().to_vec::<i64>(), vec![0], "nothing written");
    let e = grad(|x: Tensor| x.gt_scalar(0.0).sum())
        .call(Tensor::ones(&[2]))
        .unwrap_err();
    assert!(
        matches!(e, Error::UnsupportedDType { op: "grad", .. }),
        "{e}"
    );
}

#[test]
fn integer_states_are_updated_by_jit_and_grad_as_data() {
    let steps = State::new(Tensor::scalar(0i64));
    let w = ParamState::new(Tensor::new([1.0f64, -2.0]));
    let step = jit(|x: Tensor| {
        let g = grad(|x: Tensor| (&x * &w.value()).square().sum())
            .grad_states(w.clone())
            .call(x)
            .unwrap();
        w.set_value(w.value() - g * 0.1);
        steps.set_value(steps.value() + Tensor::scalar(1i64));
        steps.value()
    });
    for k in 1..=3i64 {
        assert_eq!(
            step.call(Tensor::ones(&[2])).unwrap().to_vec::<i64>(),
            vec![k]
        );
    }
    assert_eq!(steps.value().to_vec::<i64>(), vec![3]);
    assert_eq!(step.trace_count(), 1);
    // w <- w - 0.2 w per step.
    assert!(w
        .value()
        .allclose(&(Tensor::new([1.0f64, -2.0]) * 0.8f64.powi(3)), 1e-12, 0.0));
}

#[test]
fn static_integers_and_integer_tensors_through_vmap() {
    let xs = Tensor::new([[1i32, 2], [3, 4]]);
    let doubled = vmap(|x: Tensor| &x + &x).call(xs.clone()).unwrap();
    assert_eq!(doubled.to_vec::<i32>(), vec![2, 4, 6, 8]);
    let sums = vmap(|x: Tensor| x.sum()).call(xs.clone()).unwrap();
    assert_eq!(sums.to_vec::<i32>(), vec![3, 7]);
    let masks = vmap(|x: Tensor| x.gt_scalar(2.0)).call(xs).unwrap();
    assert_eq!(masks.to_vec::<bool>(), vec![false, false, true, true]);
}

/// A reduction over axes of extent one gives each element itself, as numpy's do (a -0.0 stays
/// -0.0; a sum starting from 0 would give +0.0), in every dtype, and
/// differentiates as the identity (also batched under `vmap`): a reshape, no pass over the data.
#[test]
fn reducing_axes_of_extent_one_is_a_reshape() {
    let x = Tensor::new([-0.0f32, 2.5, -1.0]).reshape(&[1, 3]);
    let calls = |f: &dyn Fn() -> Tensor| {
        let before = stategrad::jit::kernel_calls();
        f();
        stategrad::jit::kernel_calls() - before
    };
    // Keeping the axis, the sum is `x` itself: no primitive runs.
    assert_eq!(calls(&|| x.sum_along(&[0], true)), 0);
    assert_eq!(calls(&|| x.max_along(&[0], true)), 0);
    let s = x.sum_along(&[0], false);
    assert_eq!(s.shape(), &[3]);
    assert_eq!(s.to_vec::<f32>()[0].to_bits(), (-0.0f32).to_bits());
    assert_eq!(x.max_along(&[0], true).shape(), &[1, 3]);
    assert_eq!(
        x.min_along(&[0], false).to_vec::<f32>(),
        vec![-0.0, 2.5, -1.0]
    );
    let i = Tensor::new([3i32, -4]).reshape(&[2, 1]);
    assert_eq!(i.sum_along(&[1], false).to_vec::<i32>(), vec![3, -4]);
    let b = Tensor::new([true, false]).reshape(&[2, 1]);
    let counted = b.sum_along(&[1], false);
    assert_eq!(
        (counted.dtype(), counted.to_vec::<i32>()),
        (DType::I32, vec![1, 0])
    );
    let g = grad(|x: Tensor| (x.sum_along(&[0], false) * Tensor::new([1.0f32, 2.0, 3.0])).sum())
        .call(x.clone())
        .unwrap();
    assert_eq!(g.to_vec::<f32>(), vec![1.0, 2.0, 3.0]);
    let rows = Tensor::new([[1.0f32, 2.0], [3.0, 4.0]]).reshape(&[2, 1, 2]);
    let v = vmap(|r: Tensor| r.sum_along(&[0], false))
        .call(rows)
        .unwrap();
    assert_eq!(v.to_vec::<f32>(), vec![1.0, 2.0, 3.0, 4.0]);
}
