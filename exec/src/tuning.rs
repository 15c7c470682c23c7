//! Process-wide thresholds of the tiered code paths, settable at run time.
//!
//! Arena programs switch from closures to generated code after some runs, fused passes from
//! block kernels to generated code after some positions, and the generated code of fused
//! passes is kept in a bounded cache. The defaults suit long-running training loops; a test
//! that wants to cross every tier quickly (a differential tester, say) lowers them.
//!
//! Every value is one atomic read with `Relaxed` ordering where the decision is made: a
//! change takes effect for the decisions made after it, on every thread, without ordering
//! against other memory (no result depends on which tier runs: every tier gives the same
//! bits).
//!
//! ```
//! use stategrad_exec::tuning;
//! // Generated code for an arena program after its second run, and for a fused pass
//! // structure once it has gone through 4096 positions.
//! tuning::set_arena_native_after_runs(2);
//! tuning::set_fused_native_after_elements(4096);
//! assert_eq!(tuning::arena_native_after_runs(), 2);
//! assert_eq!(tuning::fused_native_after_elements(), 4096);
//! ```

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};

use crate::arena::NATIVE_AFTER_RUNS;
use crate::fused_native::NATIVE_AFTER_ELEMENTS;

/// Default of [`fused_code_cache_limit`].
const FUSED_CODE_CACHE_LIMIT: usize = 1024;

static ARENA_NATIVE_AFTER_RUNS: AtomicUsize = AtomicUsize::new(NATIVE_AFTER_RUNS);
static FUSED_NATIVE_AFTER_ELEMENTS: AtomicUsize = AtomicUsize::new(NATIVE_AFTER_ELEMENTS);
static FUSED_CODE_CACHE: AtomicUsize = AtomicUsize::new(FUSED_CODE_CACHE_LIMIT);
static PAR_MIN_WORK: AtomicUsize = AtomicUsize::new(crate::FUSED_PAR_MIN_WORK);

/// Code generation: not decided yet (the environment is read on first use), on, or off.
static CODEGEN: AtomicU8 = AtomicU8::new(UNSET);
const UNSET: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;

/// Runs after which an [`ArenaProgram`](crate::arena::ArenaProgram) built by
/// [`ArenaProgram::new`](crate::arena::ArenaProgram::new) switches to generated code
/// (default [`NATIVE_AFTER_RUNS`], 10 000). Read at each run until the switch, so a change
/// also applies to programs built before it.
///
/// ```
/// use stategrad_exec::tuning;
/// assert_eq!(
///     tuning::arena_native_after_runs(),
///     stategrad_exec::arena::NATIVE_AFTER_RUNS
/// );
/// ```
pub fn arena_native_after_runs() -> usize {
    ARENA_NATIVE_AFTER_RUNS.load(Relaxed)
}

/// Sets [`arena_native_after_runs`]; `0` or `1` switches a program on its first run.
///
/// ```
/// use stategrad_exec::arena::{ArenaOpd, ArenaProgram, ArenaStep};
/// use stategrad_exec::{tuning, BinaryOp};
/// tuning::set_arena_native_after_runs(3);
/// let steps = [ArenaStep::Binary1 {
///     op: BinaryOp::Mul,
///     a: ArenaOpd::Slice(0),
///     b: ArenaOpd::Imm(2.0),
///     out: 1,
/// }];
/// let p = ArenaProgram::<f32>::new(&steps, vec![], 2).unwrap();
/// for run in 1..=3 {
///     let mut arena = [run as f32, 0.0];
///     p.run(&mut arena).unwrap();
///     assert_eq!(arena[1], 2.0 * run as f32);
/// }
/// // Native after its third run, where the host has a code generator.
/// assert_eq!(p.is_native(), stategrad_exec::arena::native_code_enabled());
/// ```
pub fn set_arena_native_after_runs(n: usize) {
    ARENA_NATIVE_AFTER_RUNS.store(n, Relaxed);
}

/// Positions a fused pass structure goes through on the block kernels (in one call or over
/// several) before its code is generated (default 2^20). Read at each pass that has no code
/// yet.
///
/// ```
/// assert_eq!(stategrad_exec::tuning::fused_native_after_elements(), 1 << 20);
/// ```
pub fn fused_native_after_elements() -> usize {
    FUSED_NATIVE_AFTER_ELEMENTS.load(Relaxed)
}

/// Sets [`fused_native_after_elements`]; `0` generates code for a structure at its first pass
/// of at least 1024 positions (shorter passes never use generated code).
///
/// ```
/// use stategrad_exec::{fused, tuning, BinaryOp, FusedArg, FusedInput, FusedOp, FusedOutputs, Par};
/// tuning::set_fused_native_after_elements(0);
/// let x = vec![1.5f32; 4096];
/// let ops = [
///     FusedOp::Binary(BinaryOp::Mul, FusedArg::Input(0), FusedArg::Input(0)),
///     FusedOp::Binary(BinaryOp::Add, FusedArg::Op(0), FusedArg::Input(0)),
/// ];
/// let mut y = vec![0.0f32; 4096];
/// let out = FusedOutputs { values: vec![(1, &mut y[..])], sums: vec![] };
/// // Generated code from this first call where the host has it: the same bits either way.
/// fused(&ops, &[FusedInput::Slice(&x)], out, 4096, Par::Seq).unwrap();
/// assert!(y.iter().all(|&v| v == 1.5 * 1.5 + 1.5));
/// ```
pub fn set_fused_native_after_elements(n: usize) {
    FUSED_NATIVE_AFTER_ELEMENTS.store(n, Relaxed);
}

/// The work ([`fused_pass_work`](crate::fused_pass_work): positions times ops and sums, at
/// least [`FUSED_PASS_MIN_OPS`](crate::FUSED_PASS_MIN_OPS) of them) from which a fused pass
/// with more than one chunk is split over the rayon pool (default
/// [`FUSED_PAR_MIN_WORK`](crate::FUSED_PAR_MIN_WORK), 2^20). Smaller passes run on the
/// caller's thread: handing chunks to the pool costs more than they take. With one rayon
/// thread no pass is split.
///
/// ```
/// assert_eq!(stategrad_exec::tuning::fused_par_min_work(), 1 << 20);
/// ```
pub fn fused_par_min_work() -> usize {
    PAR_MIN_WORK.load(Relaxed)
}

/// Sets [`fused_par_min_work`]; `0` splits every pass of more than one chunk (tests that
/// cross the parallel path with short passes). The split never changes a result's bits.
///
/// ```
/// use stategrad_exec::{fused, tuning, BinaryOp, FusedArg, FusedInput, FusedOp, FusedOutputs, Par};
/// tuning::set_fused_par_min_work(0);
/// let n = 3 * stategrad_exec::FUSED_CHUNK;
/// let x = vec![2.0f32; n];
/// let ops = [FusedOp::Binary(BinaryOp::Mul, FusedArg::Input(0), FusedArg::Input(0))];
/// let out = FusedOutputs { values: vec![], sums: vec![FusedArg::Op(0)] };
/// let sums = fused(&ops, &[FusedInput::Slice(&x)], out, n, Par::Rayon).unwrap();
/// assert_eq!(sums, vec![4.0 * n as f32]);
/// # tuning::set_fused_par_min_work(stategrad_exec::FUSED_PAR_MIN_WORK);
/// ```
pub fn set_fused_par_min_work(n: usize) {
    PAR_MIN_WORK.store(n, Relaxed);
}

/// Most fused pass structures whose generated code is kept (default 1024); the least
/// recently used is freed to make room for a new one. Structures only seen (not yet past
/// [`fused_native_after_elements`]) do not count.
///
/// ```
/// assert_eq!(stategrad_exec::tuning::fused_code_cache_limit(), 1024);
/// ```
pub fn fused_code_cache_limit() -> usize {
    FUSED_CODE_CACHE.load(Relaxed)
}

/// Sets [`fused_code_cache_limit`]. A lower limit takes effect when the next code is made
/// (the least recently used codes are freed then); `0` keeps no code, so no pass runs
/// generated code.
///
/// ```
/// use stategrad_exec::tuning;
/// tuning::set_fused_code_cache_limit(16);
/// assert_eq!(tuning::fused_code_cache_limit(), 16);
/// ```
pub fn set_fused_code_cache_limit(n: usize) {
    FUSED_CODE_CACHE.store(n, Relaxed);
}

/// Whether code may be generated: `false` when the environment variable
/// `STATEGRAD_NO_CODEGEN` was set when it was first read, or after
/// [`set_codegen_enabled(false)`](set_codegen_enabled). Where the host has no code generator
/// (or no AVX-512F, for fused passes) there is none either way.
///
/// ```
/// use stategrad_exec::tuning;
/// // Nothing has switched it in this process: the environment decides.
/// assert_eq!(
///     tuning::codegen_enabled(),
///     std::env::var_os("STATEGRAD_NO_CODEGEN").is_none()
/// );
/// ```
pub fn codegen_enabled() -> bool {
    match CODEGEN.load(Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let env = if std::env::var_os("STATEGRAD_NO_CODEGEN").is_some() {
                OFF
            } else {
                ON
            };
            // A switch made meanwhile wins over the environment.
            match CODEGEN.compare_exchange(UNSET, env, Relaxed, Relaxed) {
                Ok(_) => env == ON,
                Err(now) => now == ON,
            }
        }
    }
}

/// Switches code generation on or off for what is decided after the call: arena programs
/// built or reaching their run threshold, fused passes looking for their code. Code already
/// generated for an arena program keeps running; fused passes stop using cached code while it
/// is off. The same effect as `STATEGRAD_NO_CODEGEN`, at run time. Results are the same bits
/// either way.
///
/// ```
/// use stategrad_exec::arena::{ArenaOpd, ArenaProgram, ArenaStep};
/// use stategrad_exec::{tuning, BinaryOp};
/// tuning::set_codegen_enabled(false);
/// tuning::set_arena_native_after_runs(1);
/// let steps = [ArenaStep::Binary1 {
///     op: BinaryOp::Add,
///     a: ArenaOpd::Slice(0),
///     b: ArenaOpd::Imm(1.0),
///     out: 1,
/// }];
/// let p = ArenaProgram::<f64>::new(&steps, vec![], 2).unwrap();
/// p.run(&mut [1.0, 0.0]).unwrap();
/// assert!(!p.is_native());
/// assert!(!tuning::codegen_enabled());
/// assert!(stategrad_exec::arena::codegen_switched_off());
/// ```
pub fn set_codegen_enabled(on: bool) {
    CODEGEN.store(if on { ON } else { OFF }, Relaxed);
}
