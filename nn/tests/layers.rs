//! Layers, activations and initialisers of `stategrad_nn`: values against hand computations and
//! direct loops, gradients against central differences (f64), and the transforms (`grad` with
//! `grad_states`, `jit` training steps, `vmap` per-example gradients) on the layers.

use stategrad_core::{
    grad, jit, path, random, vmap, DType, Error, Module, ParamState, Path, State, StateMap, Tensor,
};
use stategrad_nn::activation::{self, Activation};
use stategrad_nn::init::{self, Initializer};
use stategrad_nn::layers::{
    mode_state, AvgPool2d, Conv2d, Dropout, Embedding, Flatten, LayerNorm, Linear, MaxPool2d, Mlp,
    Padding, RMSNorm, Sequential,
};
use stategrad_optim::{sgd, Optimizer};

// ------------------------------------------------------------------ helpers

fn t64(v: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape).expect("data length matches shape")
}

/// Deterministic pseudo-random f64 data (splitmix64), distinct values.
fn data(seed: u64, shape: &[usize]) -> Tensor {
    let mut s = seed;
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 3.0 - 1.5
        })
        .collect();
    t64(v, shape)
}

fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        assert!(
            (p - q).abs() <= tol * (1.0 + q.abs()),
            "{what}: element {i}: {p} vs {q}"
        );
    }
}

/// Gradient of `loss` with respect to `states` by `grad`, against central differences on every
/// element of every state (f64).
fn gradcheck(states: &StateMap, loss: impl Fn() -> Tensor + Clone) {
    let l = loss.clone();
    let g = grad(move |_: Tensor| l())
        .grad_states(states.clone())
        .call(Tensor::scalar(0.0f64))
        .unwrap();
    let eps = 1e-6;
    for (path, s) in states {
        let v0 = s.value();
        assert_eq!(v0.dtype(), DType::F64, "{path}");
        let shape = v0.shape().to_vec();
        let base = v0.to_f64_vec();
        let mut fd = Vec::with_capacity(base.len());
        for i in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                s.set_value(t64(v, &shape));
                loss().item().unwrap()
            };
            fd.push((at(eps) - at(-eps)) / (2.0 * eps));
        }
        s.set_value(v0);
        let analytic = g[path].to_f64_vec();
        for (i, (a, n)) in analytic.iter().zip(&fd).enumerate() {
            assert!(
                (a - n).abs() <= 1e-6 * (1.0 + n.abs()),
                "{path} element {i}: grad {a}, central difference {n}"
            );
        }
    }
}

/// A weighted sum of the layer's output, so that every output element gets its own cotangent.
fn weighted(y: &Tensor, seed: u64) -> Tensor {
    (y * &data(seed, y.shape())).sum()
}

// ------------------------------------------------------------------ values

#[test]
fn linear_matches_hand_computation_with_batch_dims() {
    let l = Linear::builder(2, 3).dtype(DType::F64).build();
    l.weight
        .set_value(Tensor::new([[1.0f64, 2.0, 3.0], [4.0, 5.0, 6.0]]));
    l.bias
        .as_ref()
        .unwrap()
        .set_value(Tensor::new([0.5f64, -1.0, 0.0]));
    let x = Tensor::new([[[1.0f64, 1.0], [2.0, 0.0]], [[0.0, -1.0], [1.0, 2.0]]]);
    let y = l.forward(&x);
    assert_eq!(y.shape(), &[2, 2, 3]);
    let want = [
        [5.5, 6.0, 9.0],
        [2.5, 3.0, 6.0],
        [-3.5, -6.0, -6.0],
        [9.5, 11.0, 15.0],
    ];
    assert_eq!(y.to_vec::<f64>(), want.concat());
    // A single vector, and no bias.
    assert_eq!(
        l.forward(&Tensor::new([1.0f64, 0.0])).to_vec::<f64>(),
        vec![1.5, 1.0, 3.0]
    );
    let nb = Linear::builder(2, 3).bias(false).dtype(DType::F64).build();
    nb.weight.set_value(l.weight.value());
    assert_eq!(
        nb.forward(&Tensor::new([1.0f64, 0.0])).to_vec::<f64>(),
        vec![1.0, 2.0, 3.0]
    );
    assert_eq!(nb.all_states().len(), 1);
    assert!(matches!(
        l.try_forward(&Tensor::ones(&[3])),
        Err(Error::InvalidArgument { op: "Linear", .. })
    ));
    // Default parameters: f32, zero bias, the weight drawn.
    let d = Linear::new(5, 4);
    assert_eq!(d.weight.value().dtype(), DType::F32);
    assert_eq!(
        d.bias.as_ref().unwrap().value().to_vec::<f32>(),
        vec![0.0; 4]
    );
    assert_eq!(d.weight.kind(), stategrad_core::StateKind::Param);
    assert_eq!((d.in_features(), d.out_features()), (5, 4));
}

#[test]
fn layer_norm_and_rms_norm_match_loops() {
    let x = data(1, &[3, 5]);
    let ln = LayerNorm::builder(5).dtype(DType::F64).eps(1e-3).build();
    ln.scale.as_ref().unwrap().set_value(data(2, &[5]));
    ln.bias.as_ref().unwrap().set_value(data(3, &[5]));
    let rms = RMSNorm::builder(5).dtype(DType::F64).eps(1e-3).build();
    rms.scale.as_ref().unwrap().set_value(data(4, &[5]));
    let (xv, g, b, r) = (
        x.to_f64_vec(),
        data(2, &[5]).to_f64_vec(),
        data(3, &[5]).to_f64_vec(),
        data(4, &[5]).to_f64_vec(),
    );
    let (mut want_ln, mut want_rms) = (vec![], vec![]);
    for row in xv.chunks(5) {
        let mean = row.iter().sum::<f64>() / 5.0;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 5.0;
        let ms = row.iter().map(|v| v * v).sum::<f64>() / 5.0;
        for k in 0..5 {
            want_ln.push((row[k] - mean) / (var + 1e-3).sqrt() * g[k] + b[k]);
            want_rms.push(row[k] / (ms + 1e-3).sqrt() * r[k]);
        }
    }
    assert_close(&ln.forward(&x), &t64(want_ln, &[3, 5]), 1e-12, "LayerNorm");
    assert_close(&rms.forward(&x), &t64(want_rms, &[3, 5]), 1e-12, "RMSNorm");
    // Paths and defaults.
    let keys: Vec<String> = ln
        .states(ParamState)
        .keys()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(keys, ["('bias',)", "('scale',)"]);
    assert_eq!(LayerNorm::new(4).eps(), 1e-5);
    assert_eq!(RMSNorm::new(4).eps(), 1e-6);
    // Without affine parameters the rows have mean 0 and variance 1.
    let plain = LayerNorm::builder(5)
        .scale(false)
        .bias(false)
        .eps(0.0)
        .build();
    let y = plain.forward(&x).to_f64_vec();
    for row in y.chunks(5) {
        let mean = row.iter().sum::<f64>() / 5.0;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 5.0;
        assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-12);
    }
}

/// Direct loop convolution (NHWC input, HWIO kernel, zero padding `pad` on each side).
fn conv_loop(
    x: &Tensor,
    k: &Tensor,
    b: Option<&Tensor>,
    stride: (usize, usize),
    pad: (usize, usize),
) -> Tensor {
    conv_loop_asym(x, k, b, stride, pad, pad)
}

/// TensorFlow's 'SAME' padding of one axis: (before, after).
fn tf_same(len: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = len.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(len);
    (total / 2, total - total / 2)
}

/// Direct loop convolution with `before` (top, left) and `after` (bottom, right) zero padding.
fn conv_loop_asym(
    x: &Tensor,
    k: &Tensor,
    b: Option<&Tensor>,
    stride: (usize, usize),
    pad: (usize, usize),
    after: (usize, usize),
) -> Tensor {
    let (xs, ks) = (x.shape().to_vec(), k.shape().to_vec());
    let (n, h, w, c) = (xs[0], xs[1], xs[2], xs[3]);
    let (kh, kw, o) = (ks[0], ks[1], ks[3]);
    let oh = (h + pad.0 + after.0 - kh) / stride.0 + 1;
    let ow = (w + pad.1 + after.1 - kw) / stride.1 + 1;
    let (xv, kv) = (x.to_f64_vec(), k.to_f64_vec());
    let bv = b.map(|b| b.to_f64_vec());
    let mut out = vec![0.0; n * oh * ow * o];
    for bi in 0..n {
        for i in 0..oh {
            for j in 0..ow {
                for oc in 0..o {
                    let mut acc = bv.as_ref().map_or(0.0, |b| b[oc]);
                    for di in 0..kh {
                        for dj in 0..kw {
                            let r = (i * stride.0 + di) as isize - pad.0 as isize;
                            let q = (j * stride.1 + dj) as isize - pad.1 as isize;
                            if r < 0 || q < 0 || r >= h as isize || q >= w as isize {
                                continue;
                            }
                            let (r, q) = (r as usize, q as usize);
                            for ci in 0..c {
                                acc += xv[((bi * h + r) * w + q) * c + ci]
                                    * kv[((di * kw + dj) * c + ci) * o + oc];
                            }
                        }
                    }
                    out[((bi * oh + i) * ow + j) * o + oc] = acc;
                }
            }
        }
    }
    t64(out, &[n, oh, ow, o])
}

/// Direct loop pooling (NHWC); `max` pads with -inf, the mean counts padding as zeros.
fn pool_loop(
    x: &Tensor,
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
    max: bool,
) -> Tensor {
    pool_loop_asym(x, k, s, p, p, max, true)
}

/// Direct loop pooling with `p` (top, left) and `after` (bottom, right) padding; the mean
/// divides by the whole window (`include_pad`) or by its in-image elements.
fn pool_loop_asym(
    x: &Tensor,
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
    after: (usize, usize),
    max: bool,
    include_pad: bool,
) -> Tensor {
    let xs = x.shape().to_vec();
    let (n, h, w, c) = (xs[0], xs[1], xs[2], xs[3]);
    let oh = (h + p.0 + after.0 - k.0) / s.0 + 1;
    let ow = (w + p.1 + after.1 - k.1) / s.1 + 1;
    let xv = x.to_f64_vec();
    let mut out = vec![0.0; n * oh * ow * c];
    for bi in 0..n {
        for i in 0..oh {
            for j in 0..ow {
                for ci in 0..c {
                    let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
                    let mut inside = 0;
                    for di in 0..k.0 {
                        for dj in 0..k.1 {
                            let r = (i * s.0 + di) as isize - p.0 as isize;
                            let q = (j * s.1 + dj) as isize - p.1 as isize;
                            let v = if r < 0 || q < 0 || r >= h as isize || q >= w as isize {
                                if max {
                                    f64::NEG_INFINITY
                                } else {
                                    0.0
                                }
                            } else {
                                inside += 1;
                                xv[((bi * h + r as usize) * w + q as usize) * c + ci]
                            };
                            acc = if max { acc.max(v) } else { acc + v };
                        }
                    }
                    if !max {
                        acc /= if include_pad { k.0 * k.1 } else { inside } as f64;
                    }
                    out[((bi * oh + i) * ow + j) * c + ci] = acc;
                }
            }
        }
    }
    t64(out, &[n, oh, ow, c])
}

#[test]
fn conv2d_matches_a_direct_loop() {
    for (stride, pad, kernel) in [
        ((1, 1), (0, 0), (3, 3)),
        ((2, 1), (1, 2), (3, 2)),
        ((2, 2), (1, 1), (2, 2)),
    ] {
        let conv = Conv2d::builder(3, 4, kernel)
            .stride(stride)
            .padding(pad)
            .dtype(DType::F64)
            .build();
        conv.kernel.set_value(data(10, &[kernel.0, kernel.1, 3, 4]));
        conv.bias.as_ref().unwrap().set_value(data(11, &[4]));
        let x = data(12, &[2, 5, 6, 3]);
        let want = conv_loop(
            &x,
            &conv.kernel.value(),
            Some(&conv.bias.as_ref().unwrap().value()),
            stride,
            pad,
        );
        let y = conv.forward(&x);
        assert_close(&y, &want, 1e-12, &format!("conv {stride:?} {pad:?}"));
        // An unbatched image gives the first image's result.
        let one = conv.forward(&x.at(0));
        assert_close(&one, &want.at(0), 1e-12, "unbatched conv");
    }
    let conv = Conv2d::new(3, 4, (3, 3));
    let keys: Vec<String> = conv.all_states().keys().map(|p| p.to_string()).collect();
    assert_eq!(keys, ["('bias',)", "('kernel',)"]);
    assert!(conv.try_forward(&Tensor::ones(&[1, 5, 5, 2])).is_err());
    assert!(conv.try_forward(&Tensor::ones(&[5, 5])).is_err());
    // A layer of a Sequential, its states under ('layers', i, ..).
    let seq = Sequential::new()
        .push(conv)
        .push(MaxPool2d::new((3, 3)))
        .push(Flatten::new());
    assert_eq!(seq.forward(&Tensor::ones(&[2, 5, 5, 3])).shape(), &[2, 4]);
    let keys: Vec<String> = seq.all_states().keys().map(|p| p.to_string()).collect();
    assert_eq!(keys, ["('layers', 0, 'bias')", "('layers', 0, 'kernel')"]);
}

#[test]
fn pooling_matches_loops() {
    let x = data(20, &[2, 5, 6, 3]);
    for (k, s, p) in [
        ((2, 2), (2, 2), (0, 0)),
        ((3, 3), (1, 2), (1, 1)),
        ((3, 2), (2, 1), (1, 0)),
    ] {
        let mp = MaxPool2d::new(k).stride(s).padding(p).forward(&x);
        assert_close(&mp, &pool_loop(&x, k, s, p, true), 0.0, "max pool");
        let ap = AvgPool2d::new(k).stride(s).padding(p).forward(&x);
        assert_close(&ap, &pool_loop(&x, k, s, p, false), 1e-12, "avg pool");
    }
    assert!(MaxPool2d::new((2, 2))
        .padding((2, 0))
        .try_forward(&x)
        .is_err());
    assert!(AvgPool2d::new((0, 2)).try_forward(&x).is_err());
    assert!(MaxPool2d::new((2, 2)).all_states().is_empty());
}

#[test]
fn avg_pool_count_include_pad_false_matches_a_loop_and_hand_values() {
    let x = data(21, &[2, 5, 6, 3]);
    for (k, s, p) in [
        ((3, 3), (1, 2), (1, 1)),
        ((3, 2), (2, 1), (1, 0)),
        ((2, 2), (2, 2), (0, 0)),
    ] {
        let ap = AvgPool2d::new(k)
            .stride(s)
            .padding(p)
            .count_include_pad(false)
            .forward(&x);
        let want = pool_loop_asym(&x, k, s, p, p, false, false);
        assert_close(&ap, &want, 1e-12, "avg pool without padding in the count");
    }
    // By hand (PyTorch's AvgPool2d(3, stride=1, padding=1, count_include_pad=False) on the 3x3
    // image 0..9): the corner windows hold 4 elements, the edges 6, the middle 9.
    let x = Tensor::arange(0.0, 9.0, 1.0)
        .unwrap()
        .astype(DType::F64)
        .reshape(&[1, 3, 3, 1]);
    let pool = AvgPool2d::new((3, 3)).stride((1, 1)).padding((1, 1));
    let without = pool.clone().count_include_pad(false).forward(&x);
    let want = [
        8.0 / 4.0,
        15.0 / 6.0,
        12.0 / 4.0,
        21.0 / 6.0,
        36.0 / 9.0,
        27.0 / 6.0,
        20.0 / 4.0,
        33.0 / 6.0,
        24.0 / 4.0,
    ];
    assert_close(&without, &t64(want.to_vec(), &[1, 3, 3, 1]), 1e-15, "hand");
    // The default (PyTorch's count_include_pad=True) divides every sum by 9.
    let with = pool.forward(&x);
    let sums = [8.0, 15.0, 12.0, 21.0, 36.0, 27.0, 20.0, 33.0, 24.0];
    let want: Vec<f64> = sums.iter().map(|v| v / 9.0).collect();
    assert_close(
        &with,
        &t64(want, &[1, 3, 3, 1]),
        1e-15,
        "hand, padding counted",
    );
}

#[test]
fn padding_same_matches_tensorflow() {
    // By hand, on the 3x3 image 0..9 (TensorFlow gives the same numbers): 2x2 windows with
    // stride 2 need one row and one column of padding, at the bottom and the right.
    let x = Tensor::arange(0.0, 9.0, 1.0)
        .unwrap()
        .astype(DType::F64)
        .reshape(&[1, 3, 3, 1]);
    let same = |t: &Tensor| t.to_f64_vec();
    let mp = MaxPool2d::new((2, 2)).padding(Padding::Same).forward(&x);
    assert_eq!(mp.shape(), &[1, 2, 2, 1]);
    assert_eq!(same(&mp), [4.0, 5.0, 7.0, 8.0]);
    let ap = AvgPool2d::new((2, 2)).padding(Padding::Same);
    assert_eq!(same(&ap.clone().forward(&x)), [2.0, 1.75, 3.25, 2.0]);
    // tf.nn.avg_pool2d(x, 2, 2, 'SAME') leaves the padding out of the count.
    let tf = ap.count_include_pad(false).forward(&x);
    assert_eq!(same(&tf), [2.0, 3.5, 6.5, 8.0]);
    // A 2x2 kernel of ones with stride 1: each output sums the window at its top left.
    let conv = Conv2d::builder(1, 1, (2, 2))
        .padding(Padding::Same)
        .bias(false)
        .dtype(DType::F64)
        .build();
    conv.kernel
        .set_value(Tensor::ones(&[2, 2, 1, 1]).astype(DType::F64));
    let y = conv.forward(&x);
    assert_eq!(y.shape(), &[1, 3, 3, 1]);
    assert_eq!(
        same(&y),
        [8.0, 12.0, 7.0, 20.0, 24.0, 13.0, 13.0, 15.0, 8.0]
    );

    // Against the loops with TensorFlow's split of the padding, on odd and even totals.
    let x = data(22, &[2, 7, 5, 3]);
    for (k, s) in [
        ((3, 3), (1, 1)),
        ((4, 2), (1, 2)),
        ((3, 2), (2, 3)),
        ((1, 1), (3, 2)),
    ] {
        let (top, bottom) = tf_same(7, k.0, s.0);
        let (left, right) = tf_same(5, k.1, s.1);
        let (before, after) = ((top, left), (bottom, right));
        let out = (7usize.div_ceil(s.0), 5usize.div_ceil(s.1));
        let conv = Conv2d::builder(3, 4, k)
            .stride(s)
            .padding(Padding::Same)
            .dtype(DType::F64)
            .bias_init(init::normal(1.0))
            .build();
        conv.kernel.set_value(data(23, &[k.0, k.1, 3, 4]));
        let y = conv.forward(&x);
        assert_eq!(y.shape(), &[2, out.0, out.1, 4], "{k:?} {s:?}");
        let b = conv.bias.as_ref().unwrap().value();
        let want = conv_loop_asym(&x, &conv.kernel.value(), Some(&b), s, before, after);
        assert_close(&y, &want, 1e-12, &format!("conv SAME {k:?} {s:?}"));
        let mp = MaxPool2d::new(k)
            .stride(s)
            .padding(Padding::Same)
            .forward(&x);
        let want = pool_loop_asym(&x, k, s, before, after, true, true);
        assert_close(&mp, &want, 0.0, &format!("max pool SAME {k:?} {s:?}"));
        for include in [true, false] {
            let ap = AvgPool2d::new(k)
                .stride(s)
                .padding(Padding::Same)
                .count_include_pad(include)
                .forward(&x);
            let want = pool_loop_asym(&x, k, s, before, after, false, include);
            assert_close(&ap, &want, 1e-12, &format!("avg pool SAME {k:?} {s:?}"));
        }
    }
    // Explicit padding still converts from a tuple; 'SAME' of an empty image is an error.
    assert_eq!(Padding::from((2, 1)), Padding::Explicit(2, 1));
    assert_eq!(Padding::default(), Padding::Explicit(0, 0));
    let empty = Tensor::zeros(&[1, 0, 3, 1]);
    assert!(MaxPool2d::new((2, 2))
        .padding(Padding::Same)
        .try_forward(&empty)
        .is_err());
}

#[test]
fn embedding_flatten_sequential_and_mlp() {
    let e = Embedding::builder(4, 2).dtype(DType::F64).build();
    e.table
        .set_value(t64((0..8).map(f64::from).collect(), &[4, 2]));
    for ids in [
        Tensor::new([[3i64, 0], [1, 1]]),
        Tensor::new([[3i32, 0], [1, 1]]),
    ] {
        let y = e.forward(&ids);
        assert_eq!(y.shape(), &[2, 2, 2]);
        assert_eq!(
            y.to_vec::<f64>(),
            vec![6.0, 7.0, 0.0, 1.0, 2.0, 3.0, 2.0, 3.0]
        );
    }
    assert!(e.try_forward(&Tensor::new([0.0f64])).is_err());
    assert_eq!((e.num_embeddings(), e.dim()), (4, 2));

    assert_eq!(
        Flatten::new().forward(&Tensor::ones(&[2, 3, 4, 5])).shape(),
        &[2, 60]
    );

    // Sequential: paths by index, forward is the composition.
    let l0 = Linear::builder(3, 4).dtype(DType::F64).build();
    let l2 = Linear::builder(4, 2).dtype(DType::F64).build();
    let (w0, w2) = (l0.weight.clone(), l2.weight.clone());
    let seq = Sequential::new()
        .push(l0)
        .push(Activation::Tanh)
        .push(l2)
        .push(Dropout::new(0.5));
    let keys: Vec<String> = seq.all_states().keys().map(|p| p.to_string()).collect();
    assert_eq!(
        keys,
        [
            "('layers', 0, 'bias')",
            "('layers', 0, 'weight')",
            "('layers', 2, 'bias')",
            "('layers', 2, 'weight')",
            "('layers', 3, 'training')",
        ]
    );
    assert_eq!(seq.states(ParamState).len(), 4);
    assert!(seq.all_states()[&path!("layers", 0, "weight")].same(&w0));
    let x = data(30, &[5, 3]);
    seq.layers[3].forward(&x); // a dyn Layer's forward
    let dropout_mode = &seq.all_states()[&path!("layers", 3, "training")];
    dropout_mode.set_value(Tensor::scalar(false));
    let want = x.matmul(&w0.value()).tanh().matmul(&w2.value());
    assert_close(&seq.forward(&x), &want, 1e-12, "sequential");
    // Nested, as a Layer itself.
    let outer = Sequential::new().push(seq).push(Activation::Relu);
    assert_close(&outer.forward(&x), &want.relu(), 1e-12, "nested");
    assert_eq!(
        outer.all_states().keys().next().unwrap().to_string(),
        "('layers', 0, 'layers', 0, 'bias')"
    );

    // Mlp: activation between layers, not after the last.
    let mlp = Mlp::builder(&[3, 5, 2])
        .activation(Activation::Relu)
        .dtype(DType::F64)
        .bias_init(init::normal(1.0))
        .build();
    let keys: Vec<String> = mlp
        .states(ParamState)
        .keys()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "('layers', 0, 'bias')",
            "('layers', 0, 'weight')",
            "('layers', 1, 'bias')",
            "('layers', 1, 'weight')",
        ]
    );
    let l = &mlp.layers;
    let b = |i: usize| l[i].bias.as_ref().unwrap().value();
    let want = (x.matmul(&l[0].weight.value()) + b(0))
        .relu()
        .matmul(&l[1].weight.value())
        + b(1);
    assert_close(&mlp.forward(&x), &want, 1e-12, "mlp");
    assert!(Mlp::builder(&[]).try_build().is_err());
}

#[test]
fn activations_match_closed_forms() {
    let xs = [-3.0f64, -0.5, 0.0, 0.7, 2.5];
    let x = Tensor::new(xs);
    let check = |y: Tensor, f: &dyn Fn(f64) -> f64, what: &str| {
        let want: Vec<f64> = xs.iter().map(|&v| f(v)).collect();
        assert_close(&y, &t64(want, &[5]), 1e-12, what);
    };
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    check(activation::relu(&x), &|v| v.max(0.0), "relu");
    check(activation::sigmoid(&x), &sig, "sigmoid");
    check(activation::tanh(&x), &f64::tanh, "tanh");
    check(activation::silu(&x), &|v| v * sig(v), "silu");
    check(activation::softplus(&x), &|v| v.exp().ln_1p(), "softplus");
    check(
        activation::leaky_relu(&x, 0.1),
        &|v| if v > 0.0 { v } else { 0.1 * v },
        "leaky_relu",
    );
    let c = (2.0 / std::f64::consts::PI).sqrt();
    check(
        activation::gelu(&x),
        &|v| 0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh()),
        "gelu",
    );
    let sm = activation::softmax(&x, -1).to_f64_vec();
    let z: f64 = xs.iter().map(|v| v.exp()).sum();
    for (s, v) in sm.iter().zip(&xs) {
        assert!((s - v.exp() / z).abs() < 1e-12);
    }
    assert_close(
        &activation::log_softmax(&x, -1),
        &activation::softmax(&x, -1).log(),
        1e-12,
        "log_softmax",
    );
    // Softplus is stable at the extremes and its gradient is the sigmoid.
    let big = activation::softplus(&Tensor::new([800.0f64, -800.0])).to_f64_vec();
    assert_eq!(big[0], 800.0);
    assert!(big[1] >= 0.0 && big[1].is_finite());
    let g = grad(|x: Tensor| activation::softplus(&x).sum())
        .call(x.clone())
        .unwrap();
    check(g, &sig, "softplus'");
    // The enum applies the same functions.
    assert_close(
        &Activation::Gelu.forward(&x),
        &activation::gelu(&x),
        0.0,
        "Activation::Gelu",
    );
    assert!(Activation::Relu.try_forward(&Tensor::new([1i32])).is_err());
}

// ------------------------------------------------------------------ gradients (f64)

#[test]
fn gradcheck_linear_layernorm_rmsnorm() {
    random::seed(1);
    let l = Linear::builder(3, 4)
        .dtype(DType::F64)
        .bias_init(init::normal(1.0))
        .build();
    let x = ParamState::new(data(40, &[2, 3]));
    let mut states = l.states(ParamState);
    states.insert(path!("x"), x.clone());
    gradcheck(&states, || weighted(&l.forward(&x.value()), 41));

    let ln = LayerNorm::builder(4).dtype(DType::F64).build();
    ln.scale.as_ref().unwrap().set_value(data(42, &[4]));
    let x = ParamState::new(data(43, &[3, 4]));
    let mut states = ln.states(ParamState);
    states.insert(path!("x"), x.clone());
    gradcheck(&states, || weighted(&ln.forward(&x.value()), 44));

    let rms = RMSNorm::builder(4).dtype(DType::F64).build();
    rms.scale.as_ref().unwrap().set_value(data(45, &[4]));
    let mut states = rms.states(ParamState);
    states.insert(path!("x"), x.clone());
    gradcheck(&states, || weighted(&rms.forward(&x.value()), 46));
}

#[test]
fn gradcheck_conv2d_and_pooling() {
    random::seed(2);
    let conv = Conv2d::builder(2, 3, (3, 2))
        .stride((2, 1))
        .padding((1, 1))
        .dtype(DType::F64)
        .bias_init(init::normal(1.0))
        .build();
    let x = ParamState::new(data(50, &[2, 4, 3, 2]));
    let mut states = conv.states(ParamState);
    states.insert(path!("x"), x.clone());
    gradcheck(&states, || weighted(&conv.forward(&x.value()), 51));

    // Distinct values: no ties in the max.
    let x = ParamState::new(data(52, &[1, 5, 4, 2]));
    let states: StateMap = [(path!("x"), x.clone())].into();
    let mp = MaxPool2d::new((2, 2)).stride((1, 2)).padding((1, 1));
    gradcheck(&states, || weighted(&mp.forward(&x.value()), 53));
    let ap = AvgPool2d::new((3, 2)).stride((2, 1)).padding((1, 0));
    gradcheck(&states, || weighted(&ap.forward(&x.value()), 54));
}

/// Second order: the gradient of `<grad(loss), c>` (a recorded, differentiable gradient) with
/// respect to `states`, against central differences of that inner product.
fn gradcheck2(states: &StateMap, loss: impl Fn() -> Tensor + Clone) {
    let cs: Vec<Tensor> = states
        .values()
        .enumerate()
        .map(|(i, s)| data(300 + i as u64, s.value().shape()))
        .collect();
    let inner = {
        let states = states.clone();
        move || {
            let l = loss.clone();
            let g = grad(move |_: Tensor| l())
                .grad_states(states.clone())
                .call(Tensor::scalar(0.0f64))
                .unwrap();
            states
                .keys()
                .zip(&cs)
                .map(|(p, c)| (&g[p] * c).sum())
                .reduce(|a, b| a + b)
                .unwrap()
        }
    };
    gradcheck(states, inner);
}

#[test]
fn gradcheck_padding_same_and_count_include_pad_to_second_order() {
    random::seed(4);
    let conv = Conv2d::builder(2, 3, (3, 2))
        .stride((2, 1))
        .padding(Padding::Same)
        .dtype(DType::F64)
        .bias_init(init::normal(1.0))
        .build();
    let x = ParamState::new(data(55, &[2, 4, 3, 2]));
    let mut states = conv.states(ParamState);
    states.insert(path!("x"), x.clone());
    // Squared outputs: a loss whose second derivatives in x and the kernel are not zero.
    let loss = || weighted(&conv.forward(&x.value()).square(), 56);
    gradcheck(&states, loss);
    gradcheck2(&states, loss);

    // Distinct values: no ties in the max.
    let x = ParamState::new(data(57, &[1, 5, 4, 2]));
    let states: StateMap = [(path!("x"), x.clone())].into();
    let mp = MaxPool2d::new((3, 2)).stride((2, 2)).padding(Padding::Same);
    let loss = || weighted(&mp.forward(&x.value()).square(), 58);
    gradcheck(&states, loss);
    gradcheck2(&states, loss);
    for (pad, include) in [
        (Padding::Same, true),
        (Padding::Same, false),
        (Padding::Explicit(1, 1), false),
    ] {
        let ap = AvgPool2d::new((3, 2))
            .stride((2, 1))
            .padding(pad)
            .count_include_pad(include);
        let loss = || weighted(&ap.forward(&x.value()).square(), 59);
        gradcheck(&states, loss);
        gradcheck2(&states, loss);
    }
}

#[test]
fn grad_states_on_an_mlp() {
    random::seed(3);
    let mlp = Mlp::builder(&[3, 4, 2])
        .activation(Activation::Tanh)
        .dtype(DType::F64)
        .bias_init(init::normal(0.5))
        .build();
    let params = mlp.states(ParamState);
    let x = data(60, &[5, 3]);
    gradcheck(&params, || weighted(&mlp.forward(&x), 61));
    // Only the requested states get gradients, each of its state's shape.
    let g = grad(|x: Tensor| mlp.forward(&x).square().sum())
        .grad_states(params.clone())
        .call(x.clone())
        .unwrap();
    assert_eq!(g.len(), 4);
    for (p, s) in &params {
        assert_eq!(g[p].shape(), s.value().shape());
    }
}

// ------------------------------------------------------------------ transforms

/// A small classifier with every kind of state: parameters, and a dropout mode.
fn classifier() -> (Sequential, State) {
    let mode = mode_state(false);
    let net = Sequential::new()
        .push(Linear::builder(4, 8).dtype(DType::F64).build())
        .push(LayerNorm::builder(8).dtype(DType::F64).build())
        .push(Activation::Gelu)
        .push(Dropout::new(0.25).with_mode(&mode))
        .push(Linear::builder(8, 3).dtype(DType::F64).build());
    (net, mode)
}

fn xent(logits: &Tensor, y: &Tensor) -> Tensor {
    -(logits.log_softmax(-1) * y).sum_along(&[-1], false).mean()
}

#[test]
fn jitted_training_step_equals_eager() {
    let x = data(70, &[6, 4]);
    let y = stategrad_core::one_hot(&Tensor::new([0i64, 1, 2, 0, 1, 2]), 3).astype(DType::F64);
    random::seed(5);
    let (eager, _) = classifier();
    random::seed(5);
    let (jitted, _) = classifier();
    let (pe, pj) = (eager.states(ParamState), jitted.states(ParamState));
    for (a, b) in pe.values().zip(pj.values()) {
        assert_eq!(a.value().to_vec::<f64>(), b.value().to_vec::<f64>());
    }
    let lr = 0.1;
    let eager_step = |x: &Tensor, y: &Tensor| {
        let (g, l) = grad(|(x, y): (Tensor, Tensor)| xent(&eager.forward(&x), &y))
            .grad_states(pe.clone())
            .return_value()
            .call((x.clone(), y.clone()))
            .unwrap();
        for (p, s) in &pe {
            s.set_value(s.value() - lr * &g[p]);
        }
        l
    };
    let opt = sgd(lr).build(&pj).unwrap();
    let step = jit(
        |(x, y): (Tensor, Tensor)| -> stategrad_core::Result<Tensor> {
            let (g, l) = grad(|(x, y): (Tensor, Tensor)| xent(&jitted.forward(&x), &y))
                .grad_states(pj.clone())
                .return_value()
                .call((x, y))?;
            opt.step(&g)?;
            Ok(l)
        },
    );
    let mut losses = vec![];
    for _ in 0..5 {
        let le = eager_step(&x, &y);
        let lj = step.call((x.clone(), y.clone())).unwrap();
        assert_close(&lj, &le, 1e-12, "loss");
        for ((p, a), b) in pe.iter().zip(pj.values()) {
            assert_close(&b.value(), &a.value(), 1e-12, &p.to_string());
        }
        losses.push(le.item().unwrap());
    }
    assert_eq!(step.trace_count(), 1);
    assert!(losses[4] < losses[0], "{losses:?}");
}

#[test]
fn vmap_per_example_gradients_through_linear_and_embedding() {
    random::seed(6);
    let emb = Embedding::builder(5, 3).dtype(DType::F64).build();
    let lin = Linear::builder(3, 2).dtype(DType::F64).build();
    let mut params = emb.states(ParamState);
    for (p, s) in lin.states(ParamState) {
        let mut q = Path::new();
        q.push_name("lin");
        for k in p.keys() {
            q.0.push(k.clone());
        }
        params.insert(q, s);
    }
    let loss = |(ids, t): (Tensor, Tensor)| (lin.forward(&emb.forward(&ids)) - t).square().sum();
    let ids = Tensor::new([[0i64, 4], [2, 2], [1, 3]]);
    let targets = data(80, &[3, 2, 2]);
    let per_example =
        vmap(|(ids, t): (Tensor, Tensor)| grad(loss).grad_states(params.clone()).call((ids, t)))
            .call((ids.clone(), targets.clone()))
            .unwrap();
    assert_eq!(per_example.len(), 3);
    for b in 0..3isize {
        let single = grad(loss)
            .grad_states(params.clone())
            .call((ids.at(b), targets.at(b)))
            .unwrap();
        for (p, g) in &single {
            assert_eq!(per_example[p].shape()[0], 3);
            assert_close(&per_example[p].at(b), g, 1e-12, &format!("{p} example {b}"));
        }
    }
    // Rows of the table that example 1 does not look up get no gradient.
    let g1 = per_example[&path!("table")].at(1).to_f64_vec();
    assert!(g1[..6].iter().chain(&g1[9..]).all(|&v| v == 0.0));
}

// ------------------------------------------------------------------ initialisers

#[test]
fn initialisers_are_seeded_and_have_the_documented_moments() {
    let all = [
        Initializer::HeNormal,
        Initializer::HeUniform,
        Initializer::XavierNormal,
        Initializer::XavierUniform,
        Initializer::LecunNormal,
        init::normal(0.3),
        init::uniform(-0.5, 2.0),
    ];
    for i in all {
        random::seed(11);
        let a = i.init(&[8, 6]);
        random::seed(11);
        let b = i.init(&[8, 6]);
        assert_eq!(a.to_vec::<f32>(), b.to_vec::<f32>(), "{i:?}");
        let c = i.init(&[8, 6]);
        assert_ne!(a.to_vec::<f32>(), c.to_vec::<f32>(), "{i:?} draws anew");
        assert_eq!(i.init_dtype(&[3], DType::F64).dtype(), DType::F64);
    }

    // [fan_in, fan_out] = [200, 100] with a receptive field of 2x3 for the 4-D case.
    let moments = |t: &Tensor| {
        let v = t.to_f64_vec();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        (
            mean,
            var.sqrt(),
            v.iter().fold(0.0f64, |m, x| m.max(x.abs())),
        )
    };
    random::seed(12);
    for (shape, fi, fo) in [
        (vec![200usize, 100], 200.0f64, 100.0f64),
        (vec![2, 3, 40, 50], 240.0, 300.0),
    ] {
        let cases: [(Initializer, f64, Option<f64>); 5] = [
            (Initializer::HeNormal, (2.0 / fi).sqrt(), None),
            (
                Initializer::HeUniform,
                (2.0 / fi).sqrt(),
                Some((6.0 / fi).sqrt()),
            ),
            (Initializer::XavierNormal, (2.0 / (fi + fo)).sqrt(), None),
            (
                Initializer::XavierUniform,
                (2.0 / (fi + fo)).sqrt(),
                Some((6.0 / (fi + fo)).sqrt()),
            ),
            (Initializer::LecunNormal, (1.0 / fi).sqrt(), None),
        ];
        for (i, std, bound) in cases {
            let t = i.init_dtype(&shape, DType::F64);
            let (mean, s, max) = moments(&t);
            assert!(
                (s / std - 1.0).abs() < 0.05,
                "{i:?} {shape:?}: std {s} vs {std}"
            );
            assert!(mean.abs() < 0.05 * std, "{i:?}: mean {mean}");
            if let Some(b) = bound {
                assert!(max <= b * (1.0 + 1e-6), "{i:?}: {max} > {b}");
            }
        }
    }
    let (mean, s, _) = moments(&init::normal(0.3).init(&[20000]));
    assert!((s / 0.3 - 1.0).abs() < 0.05 && mean.abs() < 0.015);
    let u = init::uniform(1.0, 3.0).init(&[20000]);
    let (mean, _, _) = moments(&u);
    assert!((mean - 2.0).abs() < 0.03);
    assert!(u.to_vec::<f32>().iter().all(|v| (1.0..3.0).contains(v)));
    assert_eq!(Initializer::Zeros.init(&[3]).to_vec::<f32>(), vec![0.0; 3]);
    assert_eq!(
        Initializer::Ones
            .init_dtype(&[2], DType::F64)
            .to_vec::<f64>(),
        vec![1.0; 2]
    );
    assert_eq!(
        Initializer::Constant(0.5).init(&[2]).to_vec::<f32>(),
        vec![0.5; 2]
    );
    assert_eq!(init::fans(&[3, 3, 8, 16]), (72, 144));
    assert!(Initializer::HeNormal
        .try_init_dtype(&[2], DType::I64)
        .is_err());
    assert!(init::uniform(2.0, 1.0)
        .try_init_dtype(&[2], DType::F32)
        .is_err());

    // A model built after the same seed is the same model.
    let build = || {
        random::seed(13);
        Mlp::new(&[4, 6, 2], Activation::Relu).states(ParamState)
    };
    let (a, b) = (build(), build());
    for (x, y) in a.values().zip(b.values()) {
        assert_eq!(x.value().to_vec::<f32>(), y.value().to_vec::<f32>());
    }
}

// ------------------------------------------------------------------ dropout

fn dropout_stats(y: &Tensor, x_value: f64, rate: f64) -> f64 {
    let v = y.to_f64_vec();
    let scaled = x_value / (1.0 - rate);
    assert!(
        v.iter()
            .all(|&e| e == 0.0 || (e - scaled).abs() < 1e-12 * scaled.abs()),
        "kept entries are scaled by 1/(1-rate)"
    );
    v.iter().filter(|&&e| e == 0.0).count() as f64 / v.len() as f64
}

#[test]
fn dropout_modes_eager_and_under_jit() {
    random::seed(21);
    let rate = 0.3;
    let d = Dropout::new(rate);
    let x = Tensor::full_dtype(&[20000], 1.5, DType::F64);
    // Eager.
    assert!(d.is_training());
    let frac = dropout_stats(&d.forward(&x), 1.5, rate);
    assert!((frac - rate).abs() < 0.02, "dropped {frac}");
    d.eval();
    assert_eq!(d.forward(&x).to_vec::<f64>(), x.to_vec::<f64>());
    Dropout::new(0.0).forward(&x); // rate 0 keeps everything
    assert_eq!(
        Dropout::new(0.0).forward(&x).to_vec::<f64>(),
        x.to_vec::<f64>()
    );

    // Under jit: the mode is read from its state at every call, without retracing.
    let step = jit(|x: Tensor| d.forward(&x));
    assert_eq!(
        step.call(x.clone()).unwrap().to_vec::<f64>(),
        x.to_vec::<f64>()
    );
    d.train();
    let a = step.call(x.clone()).unwrap();
    let frac = dropout_stats(&a, 1.5, rate);
    assert!((frac - rate).abs() < 0.02, "jit dropped {frac}");
    let b = step.call(x.clone()).unwrap();
    assert_ne!(a.to_vec::<f64>(), b.to_vec::<f64>(), "a new mask per call");
    d.eval();
    assert_eq!(
        step.call(x.clone()).unwrap().to_vec::<f64>(),
        x.to_vec::<f64>()
    );
    assert_eq!(step.trace_count(), 1);

    // Gradients flow through the kept entries only (scaled), and not into the mode.
    d.train();
    let xs = Tensor::ones(&[1000]).astype(DType::F64);
    let g = grad(|x: Tensor| d.forward(&x).sum()).call(xs).unwrap();
    dropout_stats(&g, 1.0, rate);
    assert_eq!(d.states(ParamState).len(), 0);
    assert_eq!(d.all_states().len(), 1);
}

#[test]
fn vmap_through_conv2d_and_pooling_equals_a_loop() {
    random::seed(7);
    let conv = Conv2d::builder(2, 3, (2, 2))
        .padding((1, 1))
        .dtype(DType::F64)
        .bias_init(init::normal(1.0))
        .build();
    let pool = MaxPool2d::new((2, 2));
    let head = Linear::builder(12, 1).dtype(DType::F64).build();
    let flat = Flatten::from_axis(0);
    let params: StateMap = conv
        .states(ParamState)
        .into_iter()
        .chain(head.states(ParamState).into_iter().map(|(p, s)| {
            let mut q = path!("head");
            q.0.extend(p.0);
            (q, s)
        }))
        .collect();
    // One unbatched image [h, w, c] per example.
    let loss = |x: Tensor| {
        let h = pool.forward(&conv.forward(&x)).tanh();
        head.forward(&flat.forward(&h)).square().sum()
    };
    let xs = data(90, &[3, 4, 4, 2]);
    let per_example = vmap(|x: Tensor| grad(loss).grad_states(params.clone()).call(x))
        .call(xs.clone())
        .unwrap();
    for b in 0..3isize {
        let single = grad(loss)
            .grad_states(params.clone())
            .call(xs.at(b))
            .unwrap();
        for (p, g) in &single {
            assert_close(&per_example[p].at(b), g, 1e-12, &format!("{p} example {b}"));
        }
    }
    // Batched forward under vmap equals the batched layer.
    let ys = vmap(|x: Tensor| conv.forward(&x)).call(xs.clone()).unwrap();
    assert_close(&ys, &conv.forward(&xs), 1e-12, "vmap conv");
}

#[test]
fn a_bad_input_inside_a_transform_is_an_error() {
    let l = Linear::new(3, 2);
    let e = grad(|x: Tensor| l.forward(&x).sum())
        .grad_states(l.states(ParamState))
        .call(Tensor::ones(&[4, 5]))
        .unwrap_err();
    assert!(e.to_string().contains("last axis is 3"), "{e}");
    let e = jit(|x: Tensor| l.try_forward(&x))
        .call(Tensor::ones(&[2]))
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { op: "Linear", .. }),
        "{e}"
    );
}

#[test]
fn switching_dropout_mode_between_jitted_training_steps_needs_no_retrace() {
    random::seed(8);
    let (net, mode) = classifier();
    let params = net.states(ParamState);
    let x = data(95, &[6, 4]);
    let y = stategrad_core::one_hot(&Tensor::new([2i64, 1, 0, 0, 1, 2]), 3).astype(DType::F64);
    let loss = |(x, y): (Tensor, Tensor)| xent(&net.forward(&x), &y);
    let step = jit(
        |(x, y): (Tensor, Tensor)| -> stategrad_core::Result<Tensor> {
            let (g, l) = grad(loss)
                .grad_states(params.clone())
                .return_value()
                .call((x, y))?;
            for (p, s) in &params {
                s.set_value(s.value() - 0.05 * &g[p]);
            }
            Ok(l)
        },
    );
    for k in 0..6 {
        let training = k % 2 == 0;
        mode.set_value(Tensor::scalar(training));
        let before = loss((x.clone(), y.clone()));
        let l = step.call((x.clone(), y.clone())).unwrap();
        if training {
            // Random masks: the training loss differs from the eval one.
            assert!((l.item().unwrap() - before.item().unwrap()).abs() > 1e-9);
        } else {
            // Eval mode is deterministic: the step's loss is the eager eval loss.
            assert_close(&l, &before, 1e-12, "eval loss");
        }
    }
    assert_eq!(step.trace_count(), 1);
}
