//! `jit` replays handed to the rayon pool: a program whose kernels split their work over the
//! pool, called from a thread outside it with no transform open, runs its whole replay on a
//! pool thread (one hand-off instead of one per kernel). Alone in its test binary: it sizes the
//! global pool and reads every pool thread's kernel counter.

use stategrad::jit::{for_loop, kernel_calls};
use stategrad::prelude::*;
use stategrad::random;
use std::sync::{Mutex, MutexGuard};

/// The pool's counters are shared: one test at a time.
static TURN: Mutex<()> = Mutex::new(());

/// A global pool of three threads (the first test to run builds it; the others find it), and
/// this test's turn.
fn three_threads() -> MutexGuard<'static, ()> {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build_global();
    assert_eq!(rayon::current_num_threads(), 3);
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Kernels run by the pool's threads so far (each thread counts its own).
fn on_pool() -> u64 {
    rayon::broadcast(|_| kernel_calls()).iter().sum()
}

/// A layer update whose 256³ product splits over the pool, then an elementwise tail.
fn layer(w: &State) -> impl Fn(Tensor) -> Tensor + '_ {
    move |x: Tensor| {
        let y = x.matmul(&w.value()).tanh();
        w.set_value(w.value() - 0.01 * &y);
        y.sum()
    }
}

/// The layer's initial weights and its input (256×256 each), drawn from `seed`.
fn weights_and_input(seed: u64) -> (Tensor, Tensor) {
    random::seed(seed);
    (
        random::normal(&[256, 256]) * 0.05,
        random::normal(&[256, 256]),
    )
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn large_programs_called_outside_the_pool_replay_on_it_with_the_same_bits() {
    let _turn = three_threads();
    let (w0, x) = weights_and_input(3);
    let w = State::new(w0.clone());
    let f = jit(layer(&w));
    f.call(x.clone()).unwrap(); // trace (and a first replay)
    let stats = f.program_stats();
    assert!(stats.len() == 1 && stats[0].uses_pool, "{stats:?}");

    // From this (non-pool) thread: the pool's threads run the kernels, and they count here.
    w.set_value(w0.clone());
    let (pool_before, here_before) = (on_pool(), kernel_calls());
    let outside = f.call(x.clone()).unwrap();
    let (ran_on_pool, counted_here) = (on_pool() - pool_before, kernel_calls() - here_before);
    assert!(ran_on_pool > 0, "the replay ran no kernel on the pool");
    assert_eq!(ran_on_pool, counted_here);
    let w_outside = w.value();

    // From inside the pool (no hand-off): the same kernels, splits and bits.
    w.set_value(w0);
    let inside = rayon::scope(|_| f.call(x.clone()).unwrap());
    assert_eq!(bits(&outside), bits(&inside));
    assert_eq!(bits(&w_outside), bits(&w.value()));

    // A program whose only large work is layout (a transpose copy, a reshape) stays on the
    // calling thread: those kernels do not split. (A sum over its 256K positions would be a
    // fused pass long enough to split.)
    let layout = jit(|x: Tensor| x.permute(&[1, 0]).reshape(&[-1]));
    layout.call(random::normal(&[512, 512])).unwrap();
    assert!(
        !layout.program_stats()[0].uses_pool,
        "{:?}",
        layout.program_stats()
    );

    // A small program stays on the calling thread.
    let s = State::new(Tensor::ones(&[64]));
    let small = jit(|x: Tensor| {
        s.set_value(s.value() * &x);
        s.value().sum()
    });
    small.call(Tensor::ones(&[64])).unwrap();
    assert!(!small.program_stats()[0].uses_pool);
    let before = on_pool();
    small.call(Tensor::ones(&[64]) * 2.0).unwrap();
    assert_eq!(on_pool(), before);
}

#[test]
fn replays_inside_transforms_and_loops_stay_on_the_callers_thread() {
    let _turn = three_threads();
    let (w0, x) = weights_and_input(4);
    let w = State::new(w0);
    let f = jit(layer(&w));
    f.call(x.clone()).unwrap();
    // A recording transform over the replay, and a loop (one transaction over its states):
    // both keep the replay where their frames are.
    let before = on_pool();
    let g = grad(|x: Tensor| f.call(x).unwrap())
        .call(x.clone())
        .unwrap();
    assert_eq!(g.shape(), &[256, 256]);
    for_loop(2, |_i: Tensor| f.call(x.clone()).unwrap()).unwrap();
    assert_eq!(
        on_pool(),
        before,
        "a replay inside a transform ran on the pool"
    );
}

#[test]
fn a_replay_failing_on_the_pool_returns_its_typed_error_and_writes_no_state() {
    let _turn = three_threads();
    let (w0, x) = weights_and_input(5);
    let w = State::new(w0.clone());
    let table = random::normal(&[8, 256]);
    // The rows to gather are data: a bad index is found by the replay, on the pool.
    let step = layer(&w);
    let f = jit(|(x, rows): (Tensor, Tensor)| step(x) + table.take(&rows, 0).sum());
    f.call((x.clone(), Tensor::new([1i64, 2]))).unwrap();
    assert!(f.program_stats()[0].uses_pool);
    w.set_value(w0.clone());
    let e = f.call((x, Tensor::new([1i64, 9]))).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidArgument {
                op: "take_along_axis",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(bits(&w.value()), bits(&w0), "a failed replay wrote a state");
}

#[test]
fn a_pool_thread_waiting_under_a_transform_declines_the_replay() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::time::{Duration, Instant};
    let _turn = three_threads();
    let (w0, x) = weights_and_input(6);
    let w = State::new(w0.clone());
    let f = jit(layer(&w));
    f.call(x.clone()).unwrap();
    w.set_value(w0.clone());
    let want = rayon::scope(|_| f.call(x.clone()).unwrap());
    let w_want = w.value();
    w.set_value(w0);

    // A pool thread inside `grad` (a frame and state views open on it) waits in a `join`
    // whose other half another pool thread runs: while it waits, rayon lets it run queued jobs,
    // the replay's among them. It must not run the replay under its own frame.
    let other_half_started = AtomicBool::new(false);
    let waiting = rayon::scope(|s| {
        s.spawn(|_| {
            let inside = State::new(Tensor::scalar(1.0f32));
            let loss = |v: Tensor| {
                inside.set_value(inside.value() * &v);
                rayon::join(
                    || {
                        let t = Instant::now();
                        while !other_half_started.load(SeqCst)
                            && t.elapsed() < Duration::from_secs(2)
                        {
                            std::hint::spin_loop();
                        }
                    },
                    || {
                        other_half_started.store(true, SeqCst);
                        std::thread::sleep(Duration::from_millis(300));
                    },
                );
                inside.value().sum()
            };
            grad(loss).call(Tensor::scalar(2.0f32)).unwrap();
        });
        // From outside the pool, while that thread waits.
        std::thread::scope(|t| {
            t.spawn(|| {
                let t0 = Instant::now();
                while !other_half_started.load(SeqCst) && t0.elapsed() < Duration::from_secs(2) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(Duration::from_millis(20));
                f.call(x.clone()).unwrap()
            })
            .join()
            .unwrap()
        })
    });
    assert_eq!(bits(&waiting), bits(&want));
    assert_eq!(bits(&w.value()), bits(&w_want), "the state write was lost");
}

/// A pass of few ops over many positions (an SGD update of a 256x512 weight) is split over the
/// pool like a long one: its loads and stores cost what several ops' arithmetic would
/// (`FUSED_PASS_MIN_OPS`); the same pass over 32K positions stays on the calling thread.
#[test]
fn short_passes_over_many_positions_split_and_few_positions_do_not() {
    let _turn = three_threads();
    let update = |n: usize| {
        let w = State::new(Tensor::ones(&[n]));
        let f = jit(move |g: Tensor| w.set_value(w.value() - 0.01 * g));
        f.call(Tensor::ones(&[n])).unwrap();
        let stats = f.program_stats();
        assert_eq!(stats[0].fused_passes, 1, "{stats:?}");
        stats[0].uses_pool
    };
    assert!(
        update(256 * 512),
        "a 2-op pass over 128K positions stays on one thread"
    );
    assert!(!update(1 << 15), "a 2-op pass over 32K positions is split");
}
