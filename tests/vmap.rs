//! vmap: in_axes/out_axes, states, per-example gradients, composition with grad.

use stategrad::prelude::*;

fn close(a: &Tensor, b: &Tensor) -> bool {
    a.allclose(b, 1e-6, 1e-6)
}

#[test]
fn maps_over_axes_and_broadcasts_unbatched_arguments() {
    let w = Tensor::new([[1.0f64, 2.0], [3.0, 4.0]]);
    let f = |(x, m): (Tensor, Tensor)| m.matmul(&x).tanh();
    let xs = Tensor::new([[0.1f64, 0.2], [0.3, -0.4], [1.0, 0.0]]);
    let ys = vmap(f)
        .in_axes(vec![Some(0), None])
        .call((xs.clone(), w.clone()))
        .unwrap();
    assert_eq!(ys.shape(), &[3, 2]);
    for b in 0..3 {
        assert!(close(
            &ys.at(b as isize),
            &f((xs.at(b as isize), w.clone()))
        ));
    }
    // in_axes = 1 and out_axes = 1: the same numbers, transposed.
    let yt = vmap(f)
        .in_axes(vec![Some(1), None])
        .out_axes(1)
        .call((xs.t(), w.clone()))
        .unwrap();
    assert!(close(&yt, &ys.t()));
    // Tree outputs are stacked leaf by leaf.
    let g = |x: Tensor| (x.sum(), (x.square(), x.max()));
    let (s, (sq, mx)) = vmap(g).call(xs.clone()).unwrap();
    assert_eq!(s.shape(), &[3]);
    assert_eq!(sq.shape(), &[3, 2]);
    assert_eq!(mx.to_vec::<f64>(), vec![0.2, 0.3, 1.0]);
}

#[test]
fn bad_axes_and_batch_sizes_are_typed_errors() {
    let f = |(x, y): (Tensor, Tensor)| &x + &y;
    let a = Tensor::ones(&[3, 2]);
    let b = Tensor::ones(&[4, 2]);
    let e = vmap(f).call((a.clone(), b)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidOption {
                option: "in_axes",
                ..
            }
        ),
        "{e}"
    );
    let e = vmap(f)
        .in_axes(vec![Some(5), None])
        .call((a.clone(), a.clone()))
        .unwrap_err();
    assert!(e.to_string().contains("no axis 5"), "{e}");
    let e = vmap(f)
        .in_axes(vec![Some(0)])
        .call((a.clone(), a.clone()))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidOption { .. }), "{e}");
    let e = vmap(f)
        .in_axes(vec![None, None])
        .call((a.clone(), a))
        .unwrap_err();
    assert!(e.to_string().contains("no argument"), "{e}");
}

#[test]
fn states_read_are_shared_and_writes_are_refused() {
    let scale = State::new(Tensor::scalar(3.0f32)).named("scale");
    let f = |x: Tensor| &x * &scale.value();
    let y = vmap(f).call(Tensor::new([1.0f32, 2.0])).unwrap();
    assert_eq!(y.to_string(), "[3. 6.]");
    let counter = State::new(Tensor::scalar(0.0f32)).named("counter");
    let g = |x: Tensor| {
        counter.set_value(counter.value() + 1.0);
        x
    };
    let e = vmap(g).call(Tensor::new([1.0f32, 2.0])).unwrap_err();
    assert!(e.to_string().contains("counter"), "{e}");
    assert_eq!(counter.value().item().unwrap(), 0.0, "no write survives");
}

#[test]
fn per_example_gradients_equal_a_loop_of_single_example_gradients() {
    stategrad::random::seed(4);
    let w1 = ParamState::new(stategrad::random::normal_dtype(&[5, 4], DType::F64) * 0.5);
    let b1 = ParamState::new(Tensor::zeros(&[4]).cast(DType::F64));
    let w2 = ParamState::new(stategrad::random::normal_dtype(&[4, 3], DType::F64) * 0.5);
    let params: StateMap = [(path!("b1"), b1), (path!("w1"), w1), (path!("w2"), w2)]
        .into_iter()
        .collect();
    let p = params.clone();
    let loss = move |(x, y): (Tensor, Tensor)| {
        let h = (x.matmul(&p[&path!("w1")].value()) + p[&path!("b1")].value()).relu();
        let logits = h.matmul(&p[&path!("w2")].value());
        -(logits.log_softmax(-1) * y).sum()
    };
    let xs = stategrad::random::normal_dtype(&[6, 5], DType::F64);
    let ys = Tensor::eye_dtype(3, DType::F64);
    let ys = Tensor::concat(&[&ys, &ys], 0);
    let per_example = vmap(|(x, y): (Tensor, Tensor)| {
        grad(loss.clone()).grad_states(params.clone()).call((x, y))
    })
    .call((xs.clone(), ys.clone()))
    .unwrap();
    for b in 0..6isize {
        let single = grad(loss.clone())
            .grad_states(params.clone())
            .call((xs.at(b), ys.at(b)))
            .unwrap();
        for (path, g) in &single {
            assert_eq!(per_example[path].shape()[0], 6);
            assert!(close(&per_example[path].at(b), g), "{path} example {b}");
        }
    }
    // Identical with 1 and 2 threads.
    let run = |k: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(k)
            .build()
            .unwrap()
            .install(|| {
                vmap(|(x, y): (Tensor, Tensor)| {
                    grad(loss.clone()).grad_states(params.clone()).call((x, y))
                })
                .call((xs.clone(), ys.clone()))
                .unwrap()
            })
    };
    let (one, two) = (run(1), run(2));
    for (k, v) in &one {
        assert_eq!(v.to_vec::<f64>(), two[k].to_vec::<f64>());
    }
}

#[test]
fn grad_of_vmap_differentiates_through_the_map() {
    let f = |x: Tensor| x.sin().sum();
    let xs = Tensor::new([[0.1f64, 0.2], [0.3, 0.4]]);
    let g = grad(|x: Tensor| vmap(f).call(x).map(|y| y.square().sum()))
        .call(xs.clone())
        .unwrap();
    // d/dx sum_b (sum_j sin x_bj)^2 = 2 (sum_j sin x_bj) cos x_bi
    let s: Vec<f64> = (0..2)
        .map(|b| xs.at(b).sin().sum().item().unwrap())
        .collect();
    let want: Vec<f64> = xs
        .to_vec::<f64>()
        .iter()
        .enumerate()
        .map(|(i, v)| 2.0 * s[i / 2] * v.cos())
        .collect();
    for (a, b) in g.to_vec::<f64>().iter().zip(want) {
        assert!((a - b).abs() < 1e-12);
    }
}

#[test]
fn data_dependent_functions_are_mapped_example_by_example() {
    // Reads a value to branch: not traceable, so vmap falls back to one call per example.
    let f = |x: Tensor| -> Result<Tensor> {
        Ok(if x.sum().item()? > 0.0 {
            x.square()
        } else {
            x.neg()
        })
    };
    let xs = Tensor::new([[1.0f32, 2.0], [-1.0, -3.0]]);
    let y = vmap(f).call(xs).unwrap();
    assert_eq!(y.to_string(), "[[1. 4.]\n [1. 3.]]");
}

#[test]
fn unbatched_outputs_are_broadcast_over_the_batch() {
    let c = Tensor::new([5.0f32, 6.0]);
    let f = |x: Tensor| (x.sum(), c.clone());
    let (s, k) = vmap(f)
        .call(Tensor::new([[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]]))
        .unwrap();
    assert_eq!(s.to_string(), "[ 3.  7. 11.]");
    assert_eq!(k.shape(), &[3, 2]);
    assert_eq!(k.to_vec::<f32>(), vec![5.0, 6.0, 5.0, 6.0, 5.0, 6.0]);
}

/// Strided slices with negative steps under `vmap` equal a loop over the examples, for the
/// function and its per-example gradient, and batch as one slice (the batch axis left whole),
/// not one slice per example.
#[test]
fn strided_slices_batch_as_one_slice() {
    use stategrad::{s, SliceElem};
    let f = |x: Tensor| x.slice(s![..;-2, 1, 0..4;-3]) * 2.0;
    let g = |x: Tensor| {
        x.slice([SliceElem::numpy(Some(3), Some(0), -1)])
            .square()
            .sum()
    };
    let xs = Tensor::from_vec(
        (0..5 * 4 * 3 * 5).map(|i| i as f64 * 0.1).collect(),
        &[5, 4, 3, 5],
    )
    .unwrap();
    let ys = vmap(f).call(xs.clone()).unwrap();
    assert_eq!(ys.shape(), &[5, 2, 2]);
    let gs = vmap(|x: Tensor| grad(g).call(x).unwrap())
        .call(xs.clone())
        .unwrap();
    assert_eq!(gs.shape(), xs.shape());
    for b in 0..5 {
        let x = xs.at(b);
        assert!(close(&ys.at(b), &f(x.clone())));
        assert!(close(&gs.at(b), &grad(g).call(x).unwrap()));
    }
    let batched = jit(move |x: Tensor| vmap(f).call(x).unwrap());
    batched.call(xs.clone()).unwrap();
    let stats = batched.program_stats();
    // The slice, the reshape that drops the indexed axis, the scale: no per-example slices
    // and stack.
    assert_eq!(stats[0].primitives, 3, "{stats:?}");
}
