//! The unary ops, each declared once.
//!
//! [`unary_table!`] holds one row per op; the [`UnaryOp`](crate::UnaryOp) enum, the scalar
//! reference ([`reference::unary_op`](crate::reference::unary_op)) and the vector lanes of the
//! block kernels are all expanded from it, so adding an op is adding a row (and, for a vector
//! approximation of its own, a function in `vector.rs`).
//!
//! A row reads `doc Variant, class, |x| scalar, |v| vector;`:
//!
//! * `class` is `exact` when the vector lanes give the reference's bits (they then run on any
//!   length), or `approx` for an approximation with a validated domain (it only runs on slices of
//!   at least [`SIMD_MIN_LEN`](crate::SIMD_MIN_LEN) elements, see the crate docs);
//! * `scalar` computes one `Self` (`f32` or `f64`) element; it is the op's semantics;
//! * `vector` maps a vector `v` (of generic type `V: SimdVec`) to `(value, bad)`, `bad` the lane
//!   mask recomputed with `scalar`. An op without vector code uses
//!   [`via_reference`](crate::vector::via_reference).

/// Hands the table to `$cb! { { $args } rows }`; each consumer defines its own callback next to
/// where the expansion goes, so the local macros and variables it names resolve there.
macro_rules! unary_table {
    ($cb:ident { $($args:tt)* }) => {
        $cb! { { $($args)* }
            /// `-x`.
            Neg, exact, |x| -x, |v| (-v, V::none());
            /// `e^x`.
            Exp, approx, |x| x.exp(), |v| crate::vector::exp(v);
            /// Natural logarithm.
            Log, approx, |x| x.ln(), |v| crate::vector::ln(v);
            /// `ln(1 + x)`, accurate for small `|x|` (where `ln` of a rounded `1 + x` is not).
            Log1p, approx, |x| x.ln_1p(), |v| crate::vector::log1p(v);
            /// Hyperbolic tangent.
            Tanh, approx, |x| x.tanh(), |v| crate::vector::tanh(v);
            /// Logistic function `1 / (1 + e^-x)`, computed stably.
            Sigmoid, approx,
                |x| if x >= 0.0 {
                    1.0 / (1.0 + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (1.0 + e)
                },
                |v| crate::vector::sigmoid(v);
            /// `max(x, 0)` (NaN propagates).
            Relu, exact,
                |x| crate::reference::binary_op(crate::BinaryOp::Max, x, 0.0),
                |v| (crate::vector::max(v, V::none()), V::none());
            /// Sine.
            Sin, approx, |x| x.sin(), |v| crate::vector::sin(v);
            /// Cosine.
            Cos, approx, |x| x.cos(), |v| crate::vector::cos(v);
            /// Square root.
            Sqrt, exact, |x| x.sqrt(), |v| (v.sqrt(), V::none());
            /// Absolute value.
            Abs, exact, |x| x.abs(), |v| (v.abs(), V::none());
            /// `-1`, `0` or `1`; zeros (keeping their sign) and NaN pass through.
            Sign, exact,
                |x| if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    x
                },
                |v| (crate::vector::sign(v), V::none());
            /// `x * x`.
            Square, exact, |x| x * x, |v| (v * v, V::none());
            /// `1 / x`.
            Recip, exact, |x| 1.0 / x, |v| (V::splat(V::Elem::ONE) / v, V::none());
            /// The error function `2/√π ∫₀ˣ e^(-t²) dt` (`libm`'s, lane by lane).
            Erf, exact, |x| crate::element::Libm::erf(x),
                |v| crate::vector::via_reference(crate::UnaryOp::Erf, v);

        }
    };
}

/// The [`UnaryOp`](crate::UnaryOp) enum, its `ALL` and `is_transcendental`.
macro_rules! declare_unary_op {
    ({} $($(#[$doc:meta])* $op:ident, $class:ident, |$x:ident| $s:expr, |$v:ident| $e:expr;)*) => {
        /// Element-wise unary operations.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum UnaryOp {
            $($(#[$doc])* $op,)*
        }

        impl UnaryOp {
            /// All unary ops, in declaration order.
            pub const ALL: [UnaryOp; [$(stringify!($op)),*].len()] = [$(UnaryOp::$op),*];

            /// Whether the op is computed by an approximation (and so may differ from `std` by a
            /// few ulp on slices of at least [`SIMD_MIN_LEN`] elements).
            pub fn is_transcendental(self) -> bool {
                match self {
                    $(UnaryOp::$op => unary_class!($class),)*
                }
            }
        }
    };
}

/// Whether a row's class is `approx`.
macro_rules! unary_class {
    (exact) => {
        false
    };
    (approx) => {
        true
    };
}
