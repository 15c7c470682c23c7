//! Many threads register, replace and remove plugins while others compute gradients through
//! them: nothing deadlocks and every result is right.

use stategrad_core::{path, Error, ParamState, Params, Path, State, Tensor, TransformPlugin};
use stategrad_plugins::{clipped_grad, from_registry, scale, ProcessedGrad, Processor, Registry};
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

fn model() -> (State, State) {
    (
        ParamState::new(Tensor::zeros(&[1, 1])),
        ParamState::new(Tensor::zeros(&[1])),
    )
}

fn data() -> (Tensor, Tensor) {
    let xs = Tensor::linspace(-1.0, 1.0, 5).reshape(&[-1, 1]);
    let ys = 3.0 * &xs + 1.0;
    (xs, ys)
}

/// Gradients of the seed's linear model through the registry plugin `name`.
fn seed_grads(name: &str, params: Params) -> stategrad_core::Result<BTreeMap<Path, Tensor>> {
    let (w, b) = model();
    let states: BTreeMap<Path, State> = [(path!("weight"), w.clone()), (path!("bias"), b.clone())]
        .into_iter()
        .collect();
    let loss = |(x, y): (Tensor, Tensor)| (x.matmul(&w.value()) + b.value() - y).square().mean();
    from_registry(loss, name, params)?
        .grad_states(states)
        .call(data())
}

/// Run `body` on a thread and fail (instead of hanging) if it does not finish in time.
fn with_deadline(secs: u64, body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => h.join().expect("worker panicked"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p)
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("deadlock: not done after {secs}s"),
    }
}

#[test]
fn register_and_use_from_many_threads() {
    with_deadline(120, || {
        for round in 0..100 {
            let mut handles = Vec::new();
            // Registrars: each registers its own scale factor, uses it, replaces it, removes it.
            for t in 0..4u32 {
                handles.push(thread::spawn(move || {
                    let reg = Registry::global();
                    let name = format!("user_scale_{round}_{t}");
                    let k = f64::from(t + 1);
                    reg.register_processor(&name, move |_: &Params| Ok(scale(k)))
                        .unwrap();
                    assert!(matches!(
                        reg.register_processor(&name, |_: &Params| Ok(scale(0.0))),
                        Err(Error::DuplicatePlugin { .. })
                    ));
                    let g = seed_grads(&name, Params::new()).unwrap();
                    assert_eq!(g[&path!("bias")].to_f64_vec(), vec![-2.0 * k], "{name}");
                    reg.replace_processor(&name, move |_: &Params| Ok(scale(-k)));
                    let g = seed_grads(&name, Params::new()).unwrap();
                    assert_eq!(g[&path!("weight")].to_f64_vec(), vec![3.0 * k], "{name}");
                    // A transform plugin too, whose factory itself uses the registry.
                    let tname = format!("user_clip_{round}_{t}");
                    reg.register_transform(&tname, |p: &Params| {
                        let c = Registry::global().processor("clip_by_global_norm", p)?;
                        Ok(Arc::new(ProcessedGrad::named("user_clip", c))
                            as Arc<dyn TransformPlugin>)
                    })
                    .unwrap();
                    let g = seed_grads(&tname, Params::new().with("max_norm", 0.1)).unwrap();
                    assert_eq!(g[&path!("bias")].to_string(), "[-0.05547]");
                    assert!(reg.unregister_processor(&name).is_some());
                    assert!(reg.unregister_transform(&tname).is_some());
                    assert!(matches!(
                        seed_grads(&name, Params::new()),
                        Err(Error::UnknownPlugin { .. })
                    ));
                }));
            }
            // Users of the built-ins, all the while.
            for t in 0..4 {
                handles.push(thread::spawn(move || {
                    for _ in 0..3 {
                        let g = if t % 2 == 0 {
                            seed_grads("clip_by_global_norm", Params::new().with("max_norm", 0.1))
                                .unwrap()
                        } else {
                            seed_grads("scaled_grad", Params::new().with("scale", 0.5)).unwrap()
                        };
                        let (b, w) = if t % 2 == 0 {
                            ("[-0.05547]", "[[-0.08320501]]")
                        } else {
                            ("[-1.]", "[[-1.5]]")
                        };
                        assert_eq!(g[&path!("bias")].to_string(), b);
                        assert_eq!(g[&path!("weight")].to_string(), w);
                        let names = Registry::global().processor_names();
                        assert!(names.iter().any(|n| n == "clip_by_global_norm"));
                    }
                }));
            }
            for h in handles {
                h.join().unwrap();
            }
        }
    });
}

#[test]
fn one_plugin_shared_by_many_threads() {
    with_deadline(120, || {
        // One stateful transform (one noise counter) used by every thread at once.
        let noisy: Processor = stategrad_plugins::add_noise(0.0, 1);
        let plugin = Arc::new(ProcessedGrad::named("shared", noisy));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let plugin = plugin.clone();
                thread::spawn(move || {
                    for _ in 0..25 {
                        let (w, b) = model();
                        let states: BTreeMap<Path, State> =
                            [(path!("weight"), w.clone()), (path!("bias"), b.clone())]
                                .into_iter()
                                .collect();
                        let loss = |(x, y): (Tensor, Tensor)| {
                            (x.matmul(&w.value()) + b.value() - y).square().mean()
                        };
                        let g = stategrad_core::GradientTransform::new(
                            loss,
                            plugin.clone(),
                            Params::new(),
                        )
                        .grad_states(states.clone())
                        .call(data())
                        .unwrap();
                        assert_eq!(g[&path!("bias")].to_string(), "[-2.]");
                        let c = clipped_grad(loss, 0.1)
                            .grad_states(states)
                            .call(data())
                            .unwrap();
                        assert_eq!(c[&path!("weight")].to_string(), "[[-0.08320501]]");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // Every call advanced the one counter.
        assert_eq!(plugin.state().unwrap().downcast_ref::<u64>(), Some(&200));
    });
}

#[test]
fn factories_may_change_the_registry_they_are_called_from() {
    with_deadline(60, || {
        let reg = Registry::global();
        // A factory that replaces its own entry while it runs: no map lock is held by then.
        reg.register_processor("self_replacing", |_: &Params| {
            Registry::global().replace_processor("self_replacing", |_: &Params| Ok(scale(2.0)));
            Ok(scale(1.0))
        })
        .unwrap();
        let g = seed_grads("self_replacing", Params::new()).unwrap();
        assert_eq!(g[&path!("bias")].to_string(), "[-2.]");
        let g = seed_grads("self_replacing", Params::new()).unwrap();
        assert_eq!(g[&path!("bias")].to_string(), "[-4.]");
        // A factory that registers other names, and lists the registry.
        reg.register_transform("registers_more", |_: &Params| {
            let r = Registry::global();
            let _ = r.register_processor("registered_inside", |_: &Params| Ok(scale(1.0)));
            assert!(r.transform_names().iter().any(|n| n == "registers_more"));
            r.transform("grad", &Params::new())
        })
        .unwrap();
        seed_grads("registers_more", Params::new()).unwrap();
        assert!(reg.has_processor("registered_inside"));
    });
}
