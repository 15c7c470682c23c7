//! The run-time thresholds of `stategrad_exec::tuning`, crossed both ways. A process of its
//! own (these tests change process-wide settings), the tests one at a time, each putting the
//! defaults back.

use std::sync::{Mutex, MutexGuard};

use stategrad_exec::arena::{self, ArenaOpd, ArenaProgram, ArenaStep};
use stategrad_exec::{fused, tuning, BinaryOp, FusedArg, FusedInput, FusedOp, FusedOutputs, Par};

static LOCK: Mutex<()> = Mutex::new(());

/// Holds the settings for one test and restores the defaults when it ends (even on failure).
struct Settings(#[allow(dead_code)] MutexGuard<'static, ()>);

impl Settings {
    fn take() -> Self {
        Settings(LOCK.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Settings {
    fn drop(&mut self) {
        tuning::set_arena_native_after_runs(arena::NATIVE_AFTER_RUNS);
        tuning::set_fused_native_after_elements(1 << 20);
        tuning::set_fused_code_cache_limit(1024);
        tuning::set_codegen_enabled(std::env::var_os("STATEGRAD_NO_CODEGEN").is_none());
    }
}

fn program() -> ArenaProgram<f32> {
    let steps = [
        ArenaStep::Binary {
            op: BinaryOp::Mul,
            a: ArenaOpd::Slice(0),
            b: ArenaOpd::Imm(3.0),
            out: 4,
            n: 4,
        },
        ArenaStep::Sum { x: 4, n: 4, out: 8 },
    ];
    ArenaProgram::new(&steps, vec![], 9).unwrap()
}

fn run(p: &ArenaProgram<f32>, x0: f32) -> f32 {
    let mut a = [0.0f32; 9];
    for (i, v) in a[..4].iter_mut().enumerate() {
        *v = x0 + i as f32;
    }
    p.run(&mut a).unwrap();
    a[8]
}

#[test]
fn defaults_are_the_documented_constants() {
    let _s = Settings::take();
    assert_eq!(tuning::arena_native_after_runs(), arena::NATIVE_AFTER_RUNS);
    assert_eq!(tuning::arena_native_after_runs(), 10_000);
    assert_eq!(tuning::fused_native_after_elements(), 1 << 20);
    assert_eq!(tuning::fused_code_cache_limit(), 1024);
    assert_eq!(tuning::fused_par_min_work(), 1 << 20);
    assert_eq!(
        tuning::codegen_enabled(),
        std::env::var_os("STATEGRAD_NO_CODEGEN").is_none()
    );
}

/// A program built under the default threshold switches at the lowered one (read at each
/// run), with the same results before and after.
#[test]
fn arena_threshold_lowered_after_the_program_is_built() {
    let _s = Settings::take();
    tuning::set_codegen_enabled(true);
    let p = program();
    let want = |x0: f32| (0..4).map(|i| (x0 + i as f32) * 3.0).sum::<f32>();
    assert_eq!(run(&p, 1.0), want(1.0));
    assert!(!p.is_native());
    tuning::set_arena_native_after_runs(3);
    assert_eq!(tuning::arena_native_after_runs(), 3);
    assert_eq!(run(&p, 2.0), want(2.0));
    assert!(!p.is_native(), "two runs of three");
    assert_eq!(run(&p, 3.0), want(3.0));
    assert_eq!(p.is_native(), arena::native_code_enabled());
    assert_eq!(run(&p, 4.0), want(4.0));
    // A high threshold again: a program past it keeps its code; a new one waits.
    tuning::set_arena_native_after_runs(usize::MAX);
    assert_eq!(p.is_native(), arena::native_code_enabled());
    let q = program();
    for x in 0..5 {
        assert_eq!(run(&q, x as f32), want(x as f32));
    }
    assert!(!q.is_native());
}

/// The switch: off, no program gets code at its threshold; on again, the next run does.
#[test]
fn codegen_switch_stops_and_resumes_tiering() {
    let _s = Settings::take();
    tuning::set_arena_native_after_runs(1);
    tuning::set_codegen_enabled(false);
    assert!(!tuning::codegen_enabled());
    assert!(arena::codegen_switched_off());
    assert!(!arena::native_code_enabled());
    let p = program();
    for x in 0..3 {
        run(&p, x as f32);
    }
    assert!(!p.is_native());
    tuning::set_codegen_enabled(true);
    assert!(tuning::codegen_enabled() && !arena::codegen_switched_off());
    run(&p, 5.0);
    assert_eq!(p.is_native(), arena::native_code_enabled());
    // Switched off again: the code made stays (only later decisions change).
    let was = p.is_native();
    tuning::set_codegen_enabled(false);
    assert_eq!(run(&p, 1.0), program_result(1.0));
    assert_eq!(p.is_native(), was);
}

fn program_result(x0: f32) -> f32 {
    (0..4).map(|i| (x0 + i as f32) * 3.0).sum()
}

/// A fused pass gives the same bits on every tier: code from the first pass (threshold 0),
/// never (switch off), and with a cache that keeps nothing.
#[test]
fn fused_passes_across_every_tier_give_the_same_bits() {
    let _s = Settings::take();
    let n = 3 * 8192 + 77;
    let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
    let ops = [
        FusedOp::Binary(BinaryOp::Mul, FusedArg::Input(0), FusedArg::Input(1)),
        FusedOp::Binary(BinaryOp::Max, FusedArg::Op(0), FusedArg::Input(0)),
        FusedOp::MulAdd(FusedArg::Op(1), FusedArg::Input(0), FusedArg::Input(1)),
    ];
    let pass = || {
        let mut y = vec![f32::NAN; n];
        let out = FusedOutputs {
            values: vec![(2, &mut y[..])],
            sums: vec![FusedArg::Op(1)],
        };
        let inputs = [FusedInput::Slice(&x), FusedInput::Scalar(0.75f32)];
        let s = fused(&ops, &inputs, out, n, Par::Rayon).unwrap();
        (y, s)
    };
    tuning::set_codegen_enabled(false);
    let (want, want_sum) = pass();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for v in &want {
        assert!(v.is_finite());
    }
    tuning::set_codegen_enabled(true);
    tuning::set_fused_native_after_elements(0);
    assert_eq!(tuning::fused_native_after_elements(), 0);
    for limit in [1024, 1, 0] {
        tuning::set_fused_code_cache_limit(limit);
        assert_eq!(tuning::fused_code_cache_limit(), limit);
        for _ in 0..2 {
            let (y, s) = pass();
            assert_eq!(bits(&y), bits(&want), "limit {limit}");
            assert_eq!(bits(&s), bits(&want_sum), "limit {limit}");
        }
    }
}
