//! Block-level building blocks for execution backends.
//!
//! The public kernels ([`unary`](crate::unary), [`binary`](crate::binary), …) split their work,
//! pick the scalar or vector path by length and run over rayon. An execution backend that
//! interleaves many ops over one cache-sized block (`stategrad-exec`'s fused passes) needs the
//! layer below: one op over one block with the same vector math, so its results are the same
//! bits as the kernels'. That layer is this module: the operand sources ([`Src`], [`Bcast`]),
//! the per-block loops ([`unary_v`], [`unary2_v`], [`binary_v`]) generic over the vector type
//! ([`SimdVec`]), the same loops on the ISA chosen at run time ([`unary_block`],
//! [`unary2_block`], [`binary_block`]; see [`isa`](crate::isa)) and the vector math
//! ([`vector`](mod@vector)). A backend with a loop of its own runs it on the chosen ISA with
//! [`isa::with_vec`](crate::isa::with_vec).
//!
//! ```
//! use stategrad_simd::block::{unary_v, SimdVec};
//! use stategrad_simd::{Element, UnaryOp};
//!
//! let x = [1.0f32; 20];
//! let mut y = [0.0f32; 20];
//! unary_v::<<f32 as Element>::Vec>(UnaryOp::Exp, &x, &mut y, true);
//! assert!((y[19] - 1f32.exp()).abs() < 1e-6);
//! assert!(<f32 as Element>::Vec::LANES >= 8);
//! ```

pub use crate::elementwise::{
    binary_block, binary_v, unary2_block, unary2_v, unary_block, unary_v, Bcast, Src,
};
pub use crate::vector::SimdVec;

/// Vector math on [`SimdVec`]s. Transcendental functions return `(value, bad)`, `bad` a lane
/// mask of results outside the validated domain of the approximation, which callers recompute
/// with `std` (as the kernels do).
pub mod vector {
    pub use crate::vector::{
        cos, exp, exp_f32, ln, log1p, max, min, pow, sigmoid, sign, sin, tanh, tanh_f32, tanh_f64,
        FMA,
    };
}
