//! Checks run on every rank of `mpirun -n N target/.../mpi_ranks-*` (N = 1, 2, 3): collectives,
//! data-parallel training against single-process training on the global batch, and failures.
//! One `main`, checks in a fixed order: every rank must call the collectives in the same order.

#[cfg(not(feature = "mpi"))]
fn main() {}

#[cfg(feature = "mpi")]
fn main() {
    ranks::main()
}

#[cfg(feature = "mpi")]
mod ranks {
    use stategrad_core::{grad, jit, DType, Path, PathKey, State, StateMap, Tensor};
    use stategrad_distributed::{shard, DistError, Grads, World};
    use stategrad_optim::{self as optim, Optimizer};

    fn path(name: &str) -> Path {
        Path(vec![PathKey::Name(name.into())])
    }

    /// Deterministic values in [-1, 1) from a seed.
    fn values(seed: u64, n: usize) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    fn tensor(seed: u64, shape: &[usize]) -> Tensor {
        Tensor::from_vec(values(seed, shape.iter().product()), shape).unwrap()
    }

    fn collectives(w: &World) {
        let (r, n) = (w.rank() as f64, w.size() as f64);
        let s = w.all_reduce_sum(&Tensor::new([r, 1.0])).unwrap();
        assert_eq!(s.to_vec::<f64>(), vec![n * (n - 1.0) / 2.0, n]);
        let m = w.all_reduce_mean(&Tensor::new([r as f32])).unwrap();
        assert_eq!(m.to_vec::<f32>(), vec![((n - 1.0) / 2.0) as f32]);
        let i = w
            .all_reduce_sum(&Tensor::new([w.rank() as i64, 2]))
            .unwrap();
        assert_eq!(
            i.to_vec::<i64>(),
            vec![(n * (n - 1.0) / 2.0) as i64, 2 * w.size() as i64]
        );
        let g = w.all_gather(&Tensor::new([r as i32, 7])).unwrap();
        assert_eq!(g.shape(), &[w.size(), 2]);
        assert_eq!(
            g.at(w.size() as isize - 1).to_vec::<i32>(),
            vec![w.size() as i32 - 1, 7]
        );
        let b = w
            .all_gather(&Tensor::new([w.rank().is_multiple_of(2)]))
            .unwrap();
        assert!(b.to_vec::<bool>()[0]);
        // Broadcast: the root's shape and dtype win.
        let mine = if w.is_root() {
            Tensor::new([[1.5f64, 2.5]])
        } else {
            Tensor::zeros(&[3])
        };
        let got = w.broadcast(&mine, 0).unwrap();
        assert_eq!(
            (got.shape(), got.to_vec::<f64>()),
            (&[1usize, 2][..], vec![1.5, 2.5])
        );
        // Sums of bools are refused (on every rank alike).
        assert!(matches!(
            w.all_reduce_sum(&Tensor::new([true])),
            Err(DistError::DType { .. })
        ));
        // Gradient sets of mixed dtypes and shapes, several buckets, an empty set.
        let mut gs = Grads::new();
        gs.insert(path("a"), Tensor::full(&[3], r as f32));
        gs.insert(path("b"), Tensor::full_dtype(&[2, 2], r, DType::F64));
        gs.insert(path("c"), Tensor::scalar(1.0f32));
        let small = |w: &World| w.all_reduce_grads(Ok(gs.clone()), 1);
        let avg = small(w).unwrap();
        assert_eq!(
            avg[&path("a")].to_vec::<f32>(),
            vec![((n - 1.0) / 2.0) as f32; 3]
        );
        assert_eq!(avg[&path("b")].dtype(), DType::F64);
        assert_eq!(avg[&path("c")].to_vec::<f32>(), vec![1.0]);
        let empty = w.all_reduce_grads(Ok(Grads::new()), 1).unwrap();
        assert!(empty.is_empty());
        // Different descriptions on different ranks: a typed mismatch everywhere.
        let mut odd = Grads::new();
        odd.insert(path("a"), Tensor::zeros(&[1 + w.rank() % 2]));
        let e = w.all_reduce_grads(Ok(odd), 1);
        if w.size() > 1 {
            assert!(matches!(e, Err(DistError::Mismatch { .. })), "{e:?}");
        }
        w.barrier().unwrap();
    }

    struct Model {
        w1: State,
        b1: State,
        w2: State,
    }

    impl Model {
        /// Parameters that differ per `seed` (each rank starts from its own, then takes rank 0's).
        fn new(seed: u64) -> Model {
            Model {
                w1: State::new(tensor(seed, &[3, 4])),
                b1: State::new(tensor(seed + 1, &[4])),
                w2: State::new(tensor(seed + 2, &[4, 1])),
            }
        }
        fn params(&self) -> StateMap {
            [
                (path("w1"), self.w1.clone()),
                (path("b1"), self.b1.clone()),
                (path("w2"), self.w2.clone()),
            ]
            .into()
        }
        fn loss(&self, x: &Tensor, y: &Tensor) -> Tensor {
            let h = (x.matmul(&self.w1.value()) + self.b1.value()).tanh();
            (h.matmul(&self.w2.value()) - y).square().mean()
        }
    }

    /// Global batch `k` of 7 examples (uneven over 2 and 3 ranks).
    fn batch(k: u64) -> (Tensor, Tensor) {
        (tensor(100 + k, &[7, 3]), tensor(200 + k, &[7, 1]))
    }

    fn rows(t: &Tensor, r: std::ops::Range<usize>) -> Tensor {
        t.slice_axis(0, r.start, r.end)
    }

    /// `steps` data-parallel Adam steps (the gradient jitted when `jitted`) against the same
    /// steps on one process over the global batch; parameters bit-identical across ranks.
    fn data_parallel_equals_single_process(w: &World, jitted: bool) {
        let model = Model::new(10 + w.rank() as u64);
        let params = model.params();
        let opt = optim::adam(0.05).build(&params).unwrap();
        w.broadcast_states(&params, 0).unwrap();
        w.broadcast_states(&opt.states(), 0).unwrap();
        let reference = Model::new(10);
        let ref_params = reference.params();
        let ref_opt = optim::adam(0.05).build(&ref_params).unwrap();
        let local_grad = jit(|(x, y): (Tensor, Tensor)| {
            grad(|(x, y): (Tensor, Tensor)| model.loss(&x, &y))
                .grad_states(params.clone())
                .call((x, y))
        });
        for k in 0..5 {
            let (x, y) = batch(k);
            let mine = shard(7, w.rank(), w.size());
            let n = mine.len();
            let (xs, ys) = (rows(&x, mine.clone()), rows(&y, mine));
            let g = if jitted {
                local_grad.call((xs, ys))
            } else {
                grad(|(x, y): (Tensor, Tensor)| model.loss(&x, &y))
                    .grad_states(params.clone())
                    .call((xs, ys))
            };
            let avg = w.all_reduce_grads(g, n).unwrap();
            opt.step(&avg).unwrap();
            let full = grad(|(x, y): (Tensor, Tensor)| reference.loss(&x, &y))
                .grad_states(ref_params.clone())
                .call((x, y))
                .unwrap();
            ref_opt.step(&full).unwrap();
            for (p, s) in &params {
                let (a, b) = (s.value(), ref_params[p].value());
                assert!(a.allclose(&b, 1e-12, 1e-12), "step {k} {p}: {a} vs {b}");
                let all = w.all_gather(&a).unwrap();
                let bits: Vec<u64> = a.to_vec::<f64>().iter().map(|v| v.to_bits()).collect();
                for r in 0..w.size() {
                    let other: Vec<u64> = all
                        .at(r as isize)
                        .to_vec::<f64>()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect();
                    assert_eq!(other, bits, "step {k} {p}: rank {r} differs");
                }
            }
        }
        if jitted {
            assert_eq!(
                local_grad.trace_count(),
                1,
                "one shard size per rank: one trace"
            );
        }
    }

    /// A rank that fails mid-step (a shape error, a NaN) makes every rank return an error, and
    /// no rank applies the step.
    fn failures_reach_every_rank(w: &World) {
        let model = Model::new(10);
        let params = model.params();
        w.broadcast_states(&params, 0).unwrap();
        let before: Vec<Tensor> = params.values().map(|s| s.value()).collect();
        let last = w.size() - 1;
        let (x, y) = batch(0);
        // The last rank feeds a batch of the wrong width.
        let x = if w.rank() == last {
            Tensor::zeros_dtype(&[2, 5], DType::F64)
        } else {
            rows(&x, 0..2)
        };
        let g = grad(|(x, y): (Tensor, Tensor)| model.loss(&x, &y))
            .grad_states(params.clone())
            .call((x, y.slice_axis(0, 0, 2)));
        let r = w.all_reduce_grads(g, 2);
        if w.rank() == last {
            assert!(matches!(r, Err(DistError::Local(_))), "{r:?}");
        } else {
            assert!(
                matches!(r, Err(DistError::RankFailed { ranks: 1, .. })),
                "{r:?}"
            );
        }
        // A non-finite gradient on rank 0 (the guard is on by default).
        let mut gs = Grads::new();
        let v = if w.is_root() { f64::NAN } else { 1.0 };
        gs.insert(path("w"), Tensor::new([v]));
        let r = w.all_reduce_grads(Ok(gs), 1);
        if w.is_root() {
            assert!(matches!(r, Err(DistError::Local(_))), "{r:?}");
        } else {
            assert!(matches!(r, Err(DistError::RankFailed { .. })), "{r:?}");
        }
        // `agree` for any other step.
        let local: stategrad_core::Result<u32> = if w.rank() == last {
            Err(stategrad_core::Error::InvalidArgument {
                op: "load",
                msg: "bad file".into(),
            })
        } else {
            Ok(3)
        };
        let r = w.agree(local);
        assert!(r.is_err() || w.size() == 1 && w.rank() != last);
        for (s, b) in params.values().zip(&before) {
            assert!(
                s.value().allclose(b, 0.0, 0.0),
                "a failed step changed nothing"
            );
        }
        // Everyone still talks afterwards.
        w.barrier().unwrap();
    }

    fn same(a: &[Tensor], b: &[Tensor]) -> bool {
        a.iter().zip(b).all(|(x, y)| x.allclose(y, 0.0, 0.0))
    }

    fn values_of(m: &StateMap) -> Vec<Tensor> {
        m.values().map(|s| s.value()).collect()
    }

    /// Rank 0 writes checkpoints, rank 0 reads them and every rank gets its values; a failure
    /// on rank 0 is a typed error on every rank and changes no state.
    fn checkpoints(w: &World) {
        let file = std::env::temp_dir().join(format!(
            "stategrad-mpi-ranks-{}.safetensors",
            std::process::id()
        ));
        // Round trip: rank 0 saves its parameters, every rank then moves its own elsewhere,
        // and loading brings back rank 0's saved values on every rank (only rank 0's path is
        // read: the other ranks' differ, being named after their own process).
        let saved = values_of(&Model::new(10).params());
        let model = Model::new(10 + w.rank() as u64);
        let params = model.params();
        w.save_checkpoint(&params, &file).unwrap();
        if w.is_root() {
            assert!(file.exists());
        } else {
            assert!(!file.exists(), "only rank 0 writes");
        }
        for (s, t) in params
            .values()
            .zip(values_of(&Model::new(50 + w.rank() as u64).params()))
        {
            s.set_value(t);
        }
        w.load_checkpoint(&params, &file).unwrap();
        assert!(
            same(&values_of(&params), &saved),
            "rank {} loaded rank 0's values",
            w.rank()
        );

        let before = values_of(&params);
        let expect_failure = |r: stategrad_distributed::Result<()>, what: &str| {
            if w.is_root() {
                assert!(matches!(r, Err(DistError::Checkpoint(_))), "{what}: {r:?}");
            } else {
                assert!(
                    matches!(r, Err(DistError::RankFailed { ranks: 1, .. })),
                    "{what}: {r:?}"
                );
            }
        };
        // An unwritable path.
        let r = w.save_checkpoint(&params, "/nonexistent-stategrad-dir/ckpt.safetensors");
        expect_failure(r, "save to a missing folder");
        // A missing file.
        let r = w.load_checkpoint(&params, "/nonexistent-stategrad-dir/ckpt.safetensors");
        expect_failure(r, "load of a missing file");
        assert!(
            same(&values_of(&params), &before),
            "a failed load changed nothing"
        );
        // A file of other shapes: a mismatch on rank 0, nothing loaded anywhere.
        let other: StateMap = [(path("w1"), State::new(Tensor::zeros(&[2, 2])))].into();
        w.save_checkpoint(&other, &file).unwrap();
        let r = w.load_checkpoint(&params, &file);
        expect_failure(r, "load of a mismatched file");
        assert!(
            same(&values_of(&params), &before),
            "a failed load changed nothing"
        );
        // Ranks holding different states: a typed mismatch before anything is read.
        if w.size() > 1 {
            let mine: StateMap = [(path("w1"), State::new(Tensor::zeros(&[1 + w.rank()])))].into();
            let r = w.load_checkpoint(&mine, &file);
            assert!(matches!(r, Err(DistError::Mismatch { .. })), "{r:?}");
        }
        if w.is_root() {
            std::fs::remove_file(&file).unwrap();
        }
        w.barrier().unwrap();
    }

    pub fn main() {
        // A failed check ends this process at once, so that mpirun ends the job (unwinding would
        // drop the World and wait in MPI_Finalize for ranks that wait for this one).
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            std::process::exit(101);
        }));
        let w = World::init()
            .unwrap()
            .with_bucket_bytes(40)
            .with_timeout(std::time::Duration::from_secs(120));
        collectives(&w);
        data_parallel_equals_single_process(&w, false);
        data_parallel_equals_single_process(&w, true);
        failures_reach_every_rank(&w);
        checkpoints(&w);
        w.barrier().unwrap();
        if w.is_root() {
            println!("mpi_ranks: all checks passed on {} rank(s)", w.size());
        }
    }
}
