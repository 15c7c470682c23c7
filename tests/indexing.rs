//! Indexing: argmax/argmin, gathers and scatter-adds, one_hot and boolean masks; their batching
//! (`vmap` equals a loop over examples), `jit` replays, and typed errors for bad indices.

use stategrad::prelude::*;
use stategrad::DType;

fn loop_over(f: impl Fn(Tensor, Tensor) -> Tensor, xs: &Tensor, is: &Tensor) -> Tensor {
    let n = xs.shape()[0];
    let outs: Vec<Tensor> = (0..n as isize).map(|b| f(xs.at(b), is.at(b))).collect();
    Tensor::stack(&outs.iter().collect::<Vec<_>>(), 0)
}

#[test]
fn argmax_and_argmin_follow_numpy() {
    let x = Tensor::new([[3.0f64, 7.0, 7.0, -1.0], [0.0, -5.0, 2.0, -5.0]]);
    assert_eq!(x.argmax(1, false).to_vec::<i32>(), vec![1, 2]);
    assert_eq!(x.argmin(1, false).to_vec::<i32>(), vec![3, 1]);
    assert_eq!(x.argmax(0, false).to_vec::<i32>(), vec![0, 0, 0, 0]);
    assert_eq!(x.argmax(-1, true).shape(), &[2, 1]);
    assert_eq!(x.argmax(0, false).dtype(), DType::I32);
    let n = Tensor::new([1.0f32, f32::NAN, 5.0, f32::NAN]);
    assert_eq!(n.argmax(0, false).to_vec::<i32>(), vec![1]);
    assert_eq!(n.argmin(0, false).to_vec::<i32>(), vec![1]);
    assert_eq!(
        Tensor::new([2i64, 9, 9]).argmax(0, false).to_vec::<i32>(),
        vec![1]
    );
    assert!(matches!(
        Tensor::zeros(&[2, 0]).try_argmax(1, false),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        x.try_argmax(2, false),
        Err(Error::InvalidArgument { .. })
    ));
    // Accuracy of predictions against integer labels.
    let labels = Tensor::new([1i32, 0]);
    let acc = x.argmax(-1, false).eq(&labels).astype(DType::F32).mean();
    assert_eq!(acc.item().unwrap(), 0.5);
}

#[test]
fn cross_entropy_with_integer_labels_equals_the_one_hot_form() {
    let logits = Tensor::new([
        [0.3f64, -1.2, 2.0, 0.7],
        [1.5, 0.2, -0.3, 0.0],
        [-2.0, 0.4, 0.9, 3.1],
    ]);
    let labels = Tensor::new([2i64, 0, 3]);
    let gathered = |z: Tensor| {
        -z.log_softmax(-1)
            .take_along_axis(&labels.reshape(&[-1, 1]), -1)
            .mean()
    };
    let dense = |z: Tensor| {
        let oh = one_hot(&labels, 4).astype(DType::F64);
        -(z.log_softmax(-1) * oh).sum_along(&[-1], false).mean()
    };
    let (a, b) = (gathered(logits.clone()), dense(logits.clone()));
    assert!((a.item().unwrap() - b.item().unwrap()).abs() < 1e-12);
    let ga = grad(gathered).call(logits.clone()).unwrap();
    let gb = grad(dense).call(logits.clone()).unwrap();
    assert!(ga.allclose(&gb, 0.0, 1e-12), "{ga} vs {gb}");
    // And jitted.
    let jg = jit(|z: Tensor| grad(gathered).call(z).unwrap());
    assert!(jg.call(logits.clone()).unwrap().allclose(&gb, 0.0, 1e-12));
    assert!(jg.call(logits.clone()).unwrap().allclose(&gb, 0.0, 1e-12));
}

#[test]
fn vmap_of_a_gather_equals_the_loop_for_every_batching_pattern() {
    let xs = Tensor::arange_dtype(0.0, 24.0, 1.0, DType::F64)
        .unwrap()
        .reshape(&[2, 3, 4]);
    let is = Tensor::new([[[3i32], [0], [1]], [[2], [2], [-1]]]);
    let along = |x: Tensor, i: Tensor| x.take_along_axis(&i, 1);
    // Both batched.
    let v = vmap(|(x, i): (Tensor, Tensor)| along(x, i))
        .call((xs.clone(), is.clone()))
        .unwrap();
    assert!(v.allclose(&loop_over(along, &xs, &is), 0.0, 0.0));
    // Only the data batched.
    let i0 = is.at(0);
    let v = vmap(|(x, i): (Tensor, Tensor)| along(x, i))
        .in_axes(vec![Some(0), None])
        .call((xs.clone(), i0.clone()))
        .unwrap();
    let want = loop_over(|x, _| along(x, i0.clone()), &xs, &is);
    assert!(v.allclose(&want, 0.0, 0.0));
    // Only the indices batched.
    let x0 = xs.at(0);
    let v = vmap(|(x, i): (Tensor, Tensor)| along(x, i))
        .in_axes(vec![None, Some(0)])
        .call((x0.clone(), is.clone()))
        .unwrap();
    let want = loop_over(|_, i| along(x0.clone(), i), &xs, &is);
    assert!(v.allclose(&want, 0.0, 0.0));
    // take with per-example ids (an embedding lookup per example).
    let ids = Tensor::new([[0i64, 2, 2], [1, 0, 1]]);
    let take = |x: Tensor, i: Tensor| x.take(&i, 0);
    let v = vmap(|(x, i): (Tensor, Tensor)| take(x, i))
        .call((xs.clone(), ids.clone()))
        .unwrap();
    assert!(v.allclose(&loop_over(take, &xs, &ids), 0.0, 0.0));
    // argmax and scatter_add per example.
    let am = vmap(|x: Tensor| x.argmax(-1, false))
        .call(xs.clone())
        .unwrap();
    assert_eq!(am.shape(), &[2, 3]);
    assert_eq!(am.to_vec::<i32>(), vec![3; 6]);
    let sc = |x: Tensor, i: Tensor| x.zeros_like().scatter_add(1, &i, &x.take_along_axis(&i, 1));
    let v = vmap(|(x, i): (Tensor, Tensor)| sc(x, i))
        .call((xs.clone(), is.clone()))
        .unwrap();
    assert!(v.allclose(&loop_over(sc, &xs, &is), 0.0, 0.0));
}

#[test]
fn per_example_gradients_through_a_gather_equal_the_loop() {
    let table = Tensor::new([[0.1f64, -0.4], [0.7, 0.2], [-0.3, 0.5]]);
    let ids = Tensor::new([[0i32, 2], [1, 1], [2, 2]]);
    let loss = |(t, i): (Tensor, Tensor)| t.take(&i, 0).tanh().sum();
    let per = vmap(|(t, i): (Tensor, Tensor)| grad(loss).argnums(0).call((t, i)).unwrap())
        .in_axes(vec![None, Some(0)])
        .call((table.clone(), ids.clone()))
        .unwrap();
    for b in 0..3 {
        let g = grad(loss)
            .argnums(0)
            .call((table.clone(), ids.at(b)))
            .unwrap();
        assert!(per.at(b).allclose(&g, 1e-12, 1e-12));
    }
}

#[test]
fn bad_indices_are_typed_errors_in_eager_and_jit_calls() {
    let x = Tensor::new([[1.0f32, 2.0], [3.0, 4.0]]);
    let e = x.try_take(&Tensor::new([2i32]), 0).unwrap_err();
    assert!(e.to_string().contains("index 2 is out of bounds"), "{e}");
    let e = x.try_take(&Tensor::new([-3i64]), 1).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e = x.try_take(&Tensor::new([0.0f32]), 0).unwrap_err();
    assert!(matches!(e, Error::UnsupportedDType { .. }), "{e}");
    let e = x
        .try_take_along_axis(&Tensor::new([0i32, 1]), 0)
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let e = x
        .try_index_add(0, &Tensor::new([0i32]), &Tensor::ones(&[2, 2]))
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    // In a jitted step, an index that goes bad on a later call fails that call, and the state
    // it would have written keeps its value.
    let s = State::new(Tensor::zeros(&[2]));
    let step = jit(|i: Tensor| {
        s.set_value(s.value() + x.take(&i, 0).sum_along(&[0], false));
        s.value()
    });
    step.call(Tensor::new([1i32])).unwrap();
    assert_eq!(s.value().to_vec::<f32>(), vec![3.0, 4.0]);
    let e = step.call(Tensor::new([5i32])).unwrap_err();
    assert!(e.to_string().contains("index 5 is out of bounds"), "{e}");
    assert_eq!(s.value().to_vec::<f32>(), vec![3.0, 4.0]);
}

#[test]
fn one_hot_and_boolean_masks() {
    let y = one_hot(&Tensor::new([[1i64, -1], [0, 3]]), 3);
    assert_eq!(y.shape(), &[2, 2, 3]);
    assert_eq!(
        y.to_vec::<f32>(),
        vec![0., 1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 0.]
    );
    assert!(stategrad::try_one_hot_dtype(&Tensor::new([1.0f32]), 2, DType::F32).is_err());
    let x = Tensor::new([[1.0f64, 2.0], [3.0, 4.0], [5.0, 6.0]]);
    let rows = x.boolean_mask(&Tensor::new([false, true, true]));
    assert_eq!(rows.to_vec::<f64>(), vec![3.0, 4.0, 5.0, 6.0]);
    let pos = x.boolean_mask(&x.gt_scalar(3.5));
    assert_eq!(pos.to_vec::<f64>(), vec![4.0, 5.0, 6.0]);
    let g = grad(|x: Tensor| x.boolean_mask(&x.gt_scalar(3.5)).square().sum())
        .call(x.clone())
        .unwrap();
    assert_eq!(g.to_vec::<f64>(), vec![0.0, 0.0, 0.0, 8.0, 10.0, 12.0]);
    // A mask computed inside jit has no static shape.
    let e = jit(|x: Tensor| x.boolean_mask(&x.gt_scalar(0.0)))
        .call(x.clone())
        .unwrap_err();
    assert!(matches!(e, Error::TracedValueRead { .. }), "{e}");
    let e = x.try_boolean_mask(&Tensor::new([true])).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
}

#[test]
fn scatter_add_accumulates_repeated_indices_and_jit_replays_it() {
    let f = |(x, i, u): (Tensor, Tensor, Tensor)| x.scatter_add(0, &i, &u);
    let x = Tensor::zeros_dtype(&[4], DType::F64);
    let i = Tensor::new([3i32, 3, 0, 3]);
    let u = Tensor::new([1.0f64, 2.0, 3.0, 4.0]);
    let want = vec![3.0, 0.0, 0.0, 7.0];
    assert_eq!(f((x.clone(), i.clone(), u.clone())).to_vec::<f64>(), want);
    let j = jit(f);
    for _ in 0..2 {
        assert_eq!(
            j.call((x.clone(), i.clone(), u.clone()))
                .unwrap()
                .to_vec::<f64>(),
            want
        );
    }
    let other = Tensor::new([1i32, 1, 1, 1]);
    assert_eq!(
        j.call((x.clone(), other, u.clone()))
            .unwrap()
            .to_vec::<f64>(),
        vec![0.0, 10.0, 0.0, 0.0]
    );
    assert_eq!(j.trace_count(), 1);
}

#[test]
fn take_equals_elementwise_indexing_on_every_axis_and_dtype() {
    // `take` copies whole rows when the index is constant along the last axis and walks
    // elements otherwise; both must equal numpy's definition element by element.
    let shapes: [&[usize]; 5] = [&[7], &[5, 3], &[4, 1, 6], &[2, 5, 1], &[3, 4, 2]];
    for shape in shapes {
        let numel: usize = shape.iter().product();
        let data: Vec<i32> = (0..numel as i32).map(|v| v * 7 - 3).collect();
        let x = Tensor::from_vec(data.clone(), shape).unwrap();
        for axis in 0..shape.len() {
            let n = shape[axis] as i64;
            let ids: Vec<i64> = (0..5).map(|j| (j * 3 + 1) % n - (j % 2) * n).collect();
            let got = x.take(&Tensor::from_vec(ids.clone(), &[5]).unwrap(), axis as isize);
            let outer: usize = shape[..axis].iter().product();
            let inner: usize = shape[axis + 1..].iter().product();
            let mut want = Vec::new();
            for o in 0..outer {
                for &i in &ids {
                    let i = i.rem_euclid(n) as usize;
                    let start = (o * shape[axis] + i) * inner;
                    want.extend_from_slice(&data[start..start + inner]);
                }
            }
            assert_eq!(got.to_vec::<i32>(), want, "shape {shape:?} axis {axis}");
            let xf = x.astype(DType::F64);
            let gotf = xf.take(&Tensor::from_vec(ids.clone(), &[5]).unwrap(), axis as isize);
            let wantf: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
            assert_eq!(gotf.to_vec::<f64>(), wantf, "shape {shape:?} axis {axis}");
        }
    }
}
