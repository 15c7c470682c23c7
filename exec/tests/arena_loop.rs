//! Loops over arena programs: a generated whole loop against the closures run once per
//! iteration, carries that feed each other, loops past the arena refused, and a panicking
//! closure that stops the loop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use stategrad_exec::arena::{ArenaError, ArenaFn, ArenaOpd, ArenaProgram, ArenaStep, Native};
use stategrad_exec::arena_loop::{ArenaLoop, Carry};
use stategrad_exec::{BinaryOp, UnaryOp};

fn carry(from: usize, to: usize, len: usize) -> Carry {
    Carry { from, to, len }
}

/// arena: `[i, a(6), b(6), c(6), h, t, b', m, c']` (six elements each after `i`) with
/// `h = a * 0.5`, `t = h + i`, `b' = c + t`, `m = |a|`, `c' = sqrt(m)`, and carries `b' -> b`, `b -> a`
/// (an input carried to another input: a rotation), `c' -> c`. `b` is written by one
/// carry before another reads it, so the carries are staged.
fn rotation(native: Native) -> (ArenaProgram<f64>, ArenaLoop) {
    let n = 6;
    let (a, b, c) = (1, 1 + n, 1 + 2 * n);
    let [h, t, b2, m, c2] = [0, 1, 2, 3, 4].map(|k| 1 + (3 + k) * n);
    let bin = |op, a, b, out| ArenaStep::Binary { op, a, b, out, n };
    let steps = [
        bin(BinaryOp::Mul, ArenaOpd::Slice(a), ArenaOpd::Imm(0.5), h),
        bin(BinaryOp::Add, ArenaOpd::Slice(h), ArenaOpd::Splat(0), t),
        bin(BinaryOp::Add, ArenaOpd::Slice(c), ArenaOpd::Slice(t), b2),
        ArenaStep::Unary {
            op: UnaryOp::Abs,
            x: a,
            out: m,
            n,
        },
        ArenaStep::Unary {
            op: UnaryOp::Sqrt,
            x: m,
            out: c2,
            n,
        },
    ];
    let p = ArenaProgram::with_native(&steps, vec![], c2 + n, native).unwrap();
    let lp = ArenaLoop::new(Some(0), &[carry(b2, b, n), carry(b, a, n), carry(c2, c, n)]).unwrap();
    assert!(lp.staged());
    (p, lp)
}

fn start_arena(size: usize) -> Vec<f64> {
    (0..size).map(|k| (k as f64 * 0.37).sin() * 3.0).collect()
}

#[test]
fn a_generated_loop_gives_the_bits_of_the_closures_run_per_iteration() {
    for runs in [1usize, 2, 3, 17, 1000] {
        let (closures, lp) = rotation(Native::Never);
        let (native, _) = rotation(Native::Now);
        let mut want = start_arena(closures.size());
        // The reference: `run` once per iteration, the iteration number and carries by hand.
        let mut scratch = Vec::new();
        for k in 0..runs {
            want[0] = (5 + k) as f64;
            closures.run(&mut want).unwrap();
            if k + 1 < runs {
                lp.carry(&mut want, &mut scratch).unwrap();
            }
        }
        for p in [&closures, &native] {
            let mut got = start_arena(p.size());
            p.run_loop(&mut got, &lp, 5, runs).unwrap();
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&got),
                bits(&want),
                "{runs} runs, native {}",
                p.is_native()
            );
        }
        assert!(!closures.loop_is_native(&lp));
        if native.is_native() {
            assert!(
                native.loop_is_native(&lp),
                "the loop got no code of its own"
            );
        }
    }
}

#[test]
fn carries_that_overlap_move_together() {
    // Carries that read where others write are staged; the same for one shifted onto itself.
    let lp = ArenaLoop::new(None, &[carry(0, 2, 2), carry(2, 0, 2), carry(4, 5, 2)]).unwrap();
    assert!(lp.staged());
    let mut arena = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
    lp.carry(&mut arena, &mut Vec::new()).unwrap();
    assert_eq!(arena, [3.0, 4.0, 1.0, 2.0, 5.0, 5.0, 6.0]);
    assert_eq!(
        lp.carry(&mut arena[..6], &mut Vec::new()),
        Err(ArenaError::LoopOutsideArena),
        "a carry past a short arena is refused"
    );
    let apart = ArenaLoop::new(Some(9), &[carry(0, 4, 2), carry(2, 6, 2), carry(1, 1, 3)]).unwrap();
    assert!(!apart.staged());
    assert_eq!(apart.carries().len(), 2, "a carry onto itself is dropped");
    assert_eq!(apart.extent(), 10);
}

#[test]
fn loops_past_the_arena_or_overflowing_are_refused() {
    assert_eq!(
        ArenaLoop::new(None, &[carry(usize::MAX - 1, 0, 4)]),
        Err(ArenaError::LoopOutsideArena)
    );
    assert_eq!(
        ArenaLoop::new(Some(usize::MAX), &[]),
        Err(ArenaError::LoopOutsideArena)
    );
    let (p, _) = rotation(Native::Now);
    let mut arena = start_arena(p.size());
    let before = arena.clone();
    let past = ArenaLoop::new(None, &[carry(0, p.size() - 1, 2)]).unwrap();
    assert_eq!(
        p.run_loop(&mut arena, &past, 0, 3),
        Err(ArenaError::LoopOutsideArena)
    );
    let ok = ArenaLoop::new(Some(0), &[]).unwrap();
    assert_eq!(
        p.run_loop(&mut arena, &ok, usize::MAX, 2),
        Err(ArenaError::LoopOutsideArena)
    );
    assert_eq!(
        p.run_loop(&mut arena[..3], &ok, 0, 2),
        Err(ArenaError::ArenaTooShort {
            len: 3,
            size: p.size()
        })
    );
    assert_eq!(arena, before, "a refused loop runs nothing");
    p.run_loop(&mut arena, &ok, 0, 0).unwrap();
    assert_eq!(arena, before, "zero runs run nothing");
    // The last iteration number is `usize::MAX`: it fits.
    p.run_loop(&mut arena, &ok, usize::MAX - 1, 2).unwrap();
    assert_eq!(arena[0], usize::MAX as f64);
}

#[test]
fn a_panicking_closure_stops_the_loop() {
    for native in [Native::Never, Native::Now] {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let boom: ArenaFn<f32> = Box::new(move |arena: &mut [f32]| {
            if seen.fetch_add(1, Ordering::Relaxed) == 3 {
                panic!("closure failed at iteration 3");
            }
            arena[2] = arena[1] + 1.0;
        });
        let steps = [
            ArenaStep::Binary1 {
                op: BinaryOp::Add,
                a: ArenaOpd::Slice(0),
                b: ArenaOpd::Imm(1.0),
                out: 1,
            },
            ArenaStep::Call { out: 2, n: 1 },
        ];
        let p = ArenaProgram::with_native(&steps, vec![boom], 3, native).unwrap();
        let lp = ArenaLoop::new(None, &[carry(2, 0, 1)]).unwrap();
        let mut arena = [0.0f32; 3];
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.run_loop(&mut arena, &lp, 0, 1_000_000)
        }));
        assert!(r.is_err(), "the panic is passed on");
        assert_eq!(calls.load(Ordering::Relaxed), 4, "no call after the panic");
    }
}

#[test]
fn one_program_serves_loops_with_different_carries() {
    // Functions that trace to the same steps share one program; their loops may carry
    // differently (here: the rotation's carries, and the same carries reversed).
    let (p, lp) = rotation(Native::Now);
    let (closures, _) = rotation(Native::Never);
    let mut other: Vec<Carry> = lp.carries().to_vec();
    other.reverse();
    let other = ArenaLoop::new(Some(0), &other).unwrap();
    for l in [&lp, &other, &lp] {
        let (mut got, mut want) = (start_arena(p.size()), start_arena(p.size()));
        p.run_loop(&mut got, l, 0, 9).unwrap();
        closures.run_loop(&mut want, l, 0, 9).unwrap();
        assert_eq!(got, want);
        if p.is_native() {
            assert!(p.loop_is_native(l), "each loop gets its own code");
        }
    }
}
