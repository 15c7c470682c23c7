//! Execution of `stategrad` programs on the CPU: the layer between a compiled program and the
//! kernels of [`stategrad_simd`].
//!
//! * [`arena`]: a program as a list of steps over one flat buffer, run as closures over the
//!   kernels or, after some runs, as one native function (Cranelift) with the simple steps
//!   inlined.
//! * [`fused`]: a pass of elementwise ops and sums walked block by block over the inputs, each
//!   op over a cache-sized block with the kernels' own vector code ([`stategrad_simd::block`]);
//!   runs of exact ops get x86-64 AVX-512 code once their structure has done enough work.
//! * [`tuning`]: when the tiers switch, how much generated code is kept, and the switch that
//!   turns code generation off.
//!
//! Every tier gives the same bits as the kernels; the unit tests check it op by op, on random
//! programs and passes, at every tier.
//!
//! # The `native` feature
//! On by default (and forwarded by `stategrad-core` and `stategrad`). Without it the crate
//! pulls neither Cranelift nor iced-x86 nor memmap2: arena programs stay on closures and fused
//! passes on the block kernels, with the same results.
//!
//! ```
//! use stategrad_exec::arena::{ArenaOpd, ArenaProgram, ArenaStep};
//! use stategrad_exec::BinaryOp;
//! // arena = [x0, x1, x0 * x1]
//! let steps = [ArenaStep::Binary {
//!     op: BinaryOp::Mul,
//!     a: ArenaOpd::Slice(0),
//!     b: ArenaOpd::Slice(1),
//!     out: 2,
//!     n: 1,
//! }];
//! let p = ArenaProgram::<f64>::new(&steps, vec![], 3).unwrap();
//! let mut arena = [3.0, 4.0, 0.0];
//! p.run(&mut arena).unwrap();
//! assert_eq!(arena[2], 12.0);
//! ```

pub mod arena;
pub mod arena_loop;
#[cfg(feature = "native")]
mod codegen;
#[cfg(not(feature = "native"))]
#[path = "codegen_none.rs"]
mod codegen;
mod fused;
#[cfg(all(feature = "native", target_arch = "x86_64"))]
mod fused_native;
#[cfg(not(all(feature = "native", target_arch = "x86_64")))]
#[path = "fused_native_none.rs"]
mod fused_native;
pub mod tuning;

#[cfg(test)]
#[path = "../../simd-kernels/src/test_support.rs"]
mod test_support;
#[cfg(test)]
mod tests;

pub use fused::{
    fused, fused_pass_work, FusedArg, FusedError, FusedInput, FusedOp, FusedOutputs, FUSED_BLOCK,
    FUSED_CHUNK, FUSED_PAR_MIN_WORK, FUSED_PASS_MIN_OPS,
};
pub use stategrad_simd::{BinaryOp, Element, Par, ReduceOp, UnaryOp};

/// Frees the process-wide cache of fused-pass code (every structure starts counting its
/// positions again; code a running pass holds is unmapped when it finishes) and returns how
/// many structures it held. Arena programs own their code, which goes with them (see
/// `Jit::clear_cache`).
///
/// ```
/// stategrad_exec::clear_code_cache();
/// assert_eq!(stategrad_exec::clear_code_cache(), 0);
/// ```
pub fn clear_code_cache() -> usize {
    fused_native::clear()
}
