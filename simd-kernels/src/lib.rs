//! SIMD slice kernels and GEMM for `stategrad`.
//!
//! This crate knows nothing about graphs or autodiff: it provides element-wise, broadcasting,
//! gather, reduction and matrix-multiplication kernels over plain `f32` / `f64` slices. Every
//! kernel writes into a caller-provided output buffer and does not allocate (the exception is
//! [`gemm`], which allocates packing buffers). Programs, fused passes and generated
//! code live in `stategrad-exec`, built on the per-block layer in [`block`].
//!
//! Vector code is written once, generic over [`block::SimdVec`], and runs on the widest
//! instruction set the CPU has, chosen at run time ([`isa`]): AVX-512 (16 `f32` lanes), AVX2 +
//! FMA (8), or the build's own [`wide`] vectors (`f32x16`/`f64x8` when the build enables
//! AVX-512F, `f32x8`/`f64x4` otherwise). A crate that depends on this one without
//! `target-cpu=native` therefore runs the same vector code as a native build. Every kernel has a
//! scalar counterpart in [`reference`](mod@reference), against which the unit tests compare the
//! SIMD code on every ISA the test machine has.
//!
//! # Accuracy
//!
//! * `Neg`, `Abs`, `Sqrt`, `Square`, `Recip`, `Relu`, `Sign`, `Add`, `Sub`, `Mul`, `Div`, `Max`,
//!   `Min` and the comparisons are exact (IEEE-754, bit-identical to [`reference`](mod@reference)).
//! * `Erf` is `libm`'s, lane by lane (bit-identical to [`reference`](mod@reference)).
//! * Transcendental ops (`Exp`, `Log`, `Tanh`, `Sigmoid`, `Sin`, `Cos`, `Pow`) use vector
//!   approximations only on a validated input domain and fall back lane by lane to `std`
//!   elsewhere: NaN/±∞ inputs, subnormal or overflowing results, `ln` of non-positive or
//!   subnormal inputs, `sin`/`cos` beyond `|x| > 8192` (f32) / `6.7e7` (f64) or so close to a
//!   multiple `k·π/2` that range reduction loses accuracy (reduced argument below `1e-6·k` for
//!   f32, `1e-15·k` for f64), `pow` with `|b| > 32` or a negative base with a non-integer
//!   exponent. `Pow` only uses vectors on targets with FMA (x86 `fma`, aarch64). Max error
//!   against `std`, measured by the `accuracy` unit test (random inputs over wide domains plus
//!   arguments next to multiples of π/2), identical for f32 and f64, with and without AVX-512:
//!
//!   | op | `exp` | `ln` | `sin` | `cos` | `tanh` | `sigmoid` | `pow` |
//!   |----|-------|------|-------|-------|--------|-----------|-------|
//!   | max ulp | 1 | 1 | 1 | 1 | 2 | 2 | 3 |
//!
//! * Slices shorter than [`SIMD_MIN_LEN`] always use the scalar (`std`) path for transcendental
//!   ops, so tiny tensors give exactly `std`'s results.
//! * `Sum` reductions use several vector accumulators, so their rounding differs from a
//!   sequential sum (`f32` sums accumulate in `f32` lanes). `Max`/`Min` propagate NaN.
//!
//! # Example
//!
//! ```
//! use stategrad_simd::{binary, reduce_all, unary, BinaryOp, Par, ReduceOp, UnaryOp};
//!
//! let x = [1.0f32, -2.0, 3.0, -4.0, 5.0];
//! let mut y = [0.0f32; 5];
//! unary(UnaryOp::Relu, &x, &mut y, Par::Seq);
//! assert_eq!(y, [1.0, 0.0, 3.0, 0.0, 5.0]);
//!
//! let mut z = [0.0f32; 5];
//! binary(BinaryOp::Mul, &x, &y, &mut z, Par::Seq);
//! assert_eq!(reduce_all(ReduceOp::Sum, &z), 35.0);
//! ```

#[macro_use]
mod unary_ops;

pub mod block;
mod element;
mod elementwise;
mod gemm;
pub mod isa;
mod packed;
mod reduce;
pub mod reference;
mod strided;
mod vector;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

pub use element::Element;
pub use elementwise::{binary, binary_scalar, scalar_binary, unary};
pub use gemm::{
    dot, gemm, gemm_select_cols, gemm_select_rows, LARGE_GEMM_MIN_FLOPS, PACKED_GEMM_MIN_FLOPS,
};
pub use reduce::{reduce_all, reduce_axes};
pub use strided::{binary_strided, gather_strided, select_strided};

/// Slices shorter than this use the scalar `std` path for transcendental ops (`Exp`, `Log`,
/// `Tanh`, `Sigmoid`, `Sin`, `Cos`, `Pow`), so that tiny tensors reproduce `std` exactly.
pub const SIMD_MIN_LEN: usize = 64;

/// With [`Par::Rayon`], element-wise kernels split their work into tasks of this many elements
/// (and run sequentially below it).
pub const PAR_CHUNK: usize = 1 << 16;

/// With [`Par::Rayon`], [`gemm`] splits problems with `m * n * k` above this over rayon.
pub const PAR_GEMM_MIN_FLOPS: usize = 1 << 21;

/// Maximum tensor rank supported by the strided kernels and [`reduce_axes`].
pub const MAX_RANK: usize = 16;

unary_table!(declare_unary_op {});

/// Element-wise binary operations. Comparisons produce `1.0` (true) or `0.0` (false).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
    /// `a.powf(b)`.
    Pow,
    /// Maximum; NaN if either operand is NaN (for `±0` ties returns `b`).
    Max,
    /// Minimum; NaN if either operand is NaN (for `±0` ties returns `b`).
    Min,
    /// `a > b`.
    Gt,
    /// `a >= b`.
    Ge,
    /// `a < b`.
    Lt,
    /// `a <= b`.
    Le,
    /// `a == b`.
    Eq,
    /// `a != b` (true if either is NaN).
    Ne,
}

impl BinaryOp {
    /// All binary ops, in declaration order.
    pub const ALL: [BinaryOp; 13] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Eq,
        BinaryOp::Ne,
    ];

    /// Whether the op is computed by an approximation (only `Pow`).
    pub fn is_transcendental(self) -> bool {
        self == BinaryOp::Pow
    }

    /// Whether the op is a comparison producing `1.0` / `0.0`.
    pub fn is_comparison(self) -> bool {
        use BinaryOp::*;
        matches!(self, Gt | Ge | Lt | Le | Eq | Ne)
    }
}

/// Reduction operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum (`0` for no elements).
    Sum,
    /// Maximum (`-inf` for no elements, NaN propagates).
    Max,
    /// Minimum (`+inf` for no elements, NaN propagates).
    Min,
}

impl ReduceOp {
    /// The identity of the reduction: `0`, `-inf` or `+inf`.
    pub fn identity<T: Element>(self) -> T {
        match self {
            ReduceOp::Sum => T::ZERO,
            ReduceOp::Max => T::NEG_INFINITY,
            ReduceOp::Min => T::INFINITY,
        }
    }

    /// The binary op combining two partial results.
    pub fn binary_op(self) -> BinaryOp {
        match self {
            ReduceOp::Sum => BinaryOp::Add,
            ReduceOp::Max => BinaryOp::Max,
            ReduceOp::Min => BinaryOp::Min,
        }
    }
}

/// Parallelism policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Par {
    /// Run on the caller's thread.
    #[default]
    Seq,
    /// Large work may be split over rayon's global pool.
    Rayon,
}

impl Par {
    /// Whether work may be split now: [`Par::Rayon`] and the current pool has more than one
    /// thread. With one thread a split only adds the hand-off to the pool and back (tens of
    /// microseconds when the caller is outside the pool).
    ///
    /// ```
    /// use stategrad_simd::Par;
    /// assert!(!Par::Seq.splits());
    /// assert_eq!(Par::Rayon.splits(), rayon::current_num_threads() > 1);
    /// ```
    pub fn splits(self) -> bool {
        self == Par::Rayon && rayon::current_num_threads() > 1
    }
}
