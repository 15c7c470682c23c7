//! Table-driven gradient checks of every primitive and tensor operation, in f64, to second order.
//!
//! For each table entry `f` (a pure function of one or more tensors) and a random point `x`:
//!
//! 1. JVP: `J t` from [`jvp_pure`] (and `Pullback::jvp`) against central differences along a
//!    random direction `t`.
//! 2. VJP: the dot-product identity `<J t, c> = <t, J^T c>` for a random cotangent `c` (and the
//!    same with the central-difference `J t`).
//! 3. Second order: the gradient function `G(x, c) = J(x)^T c`, built with [`vjp_pure`] so that it
//!    is itself recorded and differentiable, goes through checks 1 and 2 (this covers
//!    Hessian-vector products w.r.t. `x` and the transpose of every VJP rule w.r.t. `c`).
//! 4. f32: the same products in f32 agree with the f64 ones within an f32 tolerance.
//!
//! Separate tests check `grad(grad(f))`, `hessian` and a third derivative against closed forms,
//! and `jacrev == jacfwd` on non-square functions.

// `PureFn::new` takes one input range per argument: `vec![0..n]` is one argument of n tensors.
#![allow(clippy::single_range_in_vec_init)]

#[path = "common/rng.rs"]
mod rng;

use rng::Rng;
use stategrad::transform::{jvp_pure, vjp_pure, PureFn};
use stategrad::*;

type Res = stategrad::Result<Tensor>;
type PureF = fn(&[Tensor]) -> Res;

/// Step of the central differences (f64).
const EPS: f64 = 1e-6;
/// Relative tolerance of analytic products against central differences (f64).
const FD_RTOL: f64 = 1e-6;
/// Absolute floor of the same (central-difference round-off is ~1e-16 |f| / EPS).
const FD_ATOL: f64 = 1e-8;
/// Relative tolerance of the dot-product identity, both sides analytic (f64).
const DOT_RTOL: f64 = 1e-11;
/// Tolerance of f32 products against the f64 ones (relative to the largest magnitude).
const F32_RTOL: f64 = 1e-4;

// ------------------------------------------------------------------ deterministic inputs

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn t64(v: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape).expect("data length matches shape")
}

/// Uniform in [-1.5, 1.5].
fn any(r: &mut Rng, shape: &[usize]) -> Tensor {
    t64(r.vec(numel(shape), -1.5, 1.5), shape)
}

/// Uniform in [0.5, 2] (domain of log, sqrt, pow's base).
fn pos(r: &mut Rng, shape: &[usize]) -> Tensor {
    t64(r.vec(numel(shape), 0.5, 2.0), shape)
}

/// |x| in [0.25, 1.5] with a random sign (away from the kinks of relu/abs and the pole of 1/x).
fn away(r: &mut Rng, shape: &[usize]) -> Tensor {
    let v = (0..numel(shape))
        .map(|_| {
            let m = r.range(0.25, 1.5);
            if r.unit() < 0.5 {
                -m
            } else {
                m
            }
        })
        .collect();
    t64(v, shape)
}

/// Values at least ~0.15 apart, in random order (unique extremes for max/min reductions).
fn distinct(r: &mut Rng, shape: &[usize]) -> Tensor {
    let n = numel(shape);
    let mut v: Vec<f64> = (0..n)
        .map(|k| (k as f64 - n as f64 / 2.0) * 0.25 + r.range(-0.05, 0.05))
        .collect();
    for i in (1..n).rev() {
        let j = (r.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    t64(v, shape)
}

/// A random tensor of `x`'s shape and dtype (directions and cotangents).
fn rand_like(r: &mut Rng, x: &Tensor) -> Tensor {
    t64(r.vec(x.numel(), -1.0, 1.0), x.shape()).cast(x.dtype())
}

// Joint generators of binary-op operands.
fn pair_any(r: &mut Rng, sa: &[usize], sb: &[usize]) -> Vec<Tensor> {
    vec![any(r, sa), any(r, sb)]
}
fn pair_div(r: &mut Rng, sa: &[usize], sb: &[usize]) -> Vec<Tensor> {
    vec![any(r, sa), away(r, sb)]
}
fn pair_pow(r: &mut Rng, sa: &[usize], sb: &[usize]) -> Vec<Tensor> {
    vec![pos(r, sa), any(r, sb)]
}
/// Operands whose broadcast pairs differ by at least 0.1 (no ties in maximum/minimum/compare).
fn pair_sep(r: &mut Rng, sa: &[usize], sb: &[usize]) -> Vec<Tensor> {
    loop {
        let (a, b) = (any(r, sa), any(r, sb));
        if (&a - &b).abs().min().item().unwrap() > 0.1 {
            return vec![a, b];
        }
    }
}

// ------------------------------------------------------------------ the table

struct Case {
    name: &'static str,
    gen: fn(&mut Rng) -> Vec<Tensor>,
    f: PureF,
}

macro_rules! case {
    ($name:expr, |$r:ident| $gen:expr, |$x:ident| $f:expr) => {
        Case {
            name: $name,
            gen: |$r: &mut Rng| $gen,
            f: |$x: &[Tensor]| -> Res { $f },
        }
    };
}

/// One entry per broadcasting pattern of a binary operation.
macro_rules! binary_cases {
    ($v:ident, $name:literal, $method:ident, $pair:ident) => {
        $v.push(case!(
            concat!($name, " (2,3)x(2,3)"),
            |r| $pair(r, &[2, 3], &[2, 3]),
            |x| x[0].$method(&x[1])
        ));
        $v.push(case!(
            concat!($name, " (3,4)x(4,)"),
            |r| $pair(r, &[3, 4], &[4]),
            |x| x[0].$method(&x[1])
        ));
        $v.push(case!(
            concat!($name, " (2,1)x(1,3)"),
            |r| $pair(r, &[2, 1], &[1, 3]),
            |x| x[0].$method(&x[1])
        ));
        $v.push(case!(
            concat!($name, " ()x(2,3)"),
            |r| $pair(r, &[], &[2, 3]),
            |x| x[0].$method(&x[1])
        ));
    };
}

/// A fixed 0/1 pattern of `shape` in `like`'s dtype (a constant condition).
fn pattern(shape: &[usize], like: &Tensor) -> Tensor {
    let v = (0..numel(shape))
        .map(|i| ((i * 7 + 3) % 5 < 2) as u8 as f64)
        .collect();
    t64(v, shape).cast(like.dtype())
}

/// `softplus(x) = log(1 + e^x)` as a user-defined function with its own VJP rule (a stable
/// forward, the rule `g * sigmoid(x)`), checked like the built-in primitives.
static SOFTPLUS: std::sync::LazyLock<CustomFn> = std::sync::LazyLock::new(|| {
    custom_vjp(
        "softplus",
        |x: &[Tensor]| Ok(x[0].relu() + ((-x[0].abs()).exp() + 1.0).log()),
        |a: &VjpArgs| Ok(vec![a.g() * a.input(0).sigmoid()]),
    )
});

/// The same, declared vectorized (`vmap` calls it once on the whole batch).
static SOFTPLUS_VEC: std::sync::LazyLock<CustomFn> =
    std::sync::LazyLock::new(|| SOFTPLUS.clone().vectorized());

/// `a * sin(b)` with numpy broadcasting, its rule summing each cotangent to its input's shape.
static MUL_SIN: std::sync::LazyLock<CustomFn> = std::sync::LazyLock::new(|| {
    custom_vjp(
        "mul_sin",
        |x: &[Tensor]| x[0].try_mul(&x[1].try_sin()?),
        |r: &VjpArgs| {
            let (a, b, g) = (r.input(0), r.input(1), r.g());
            Ok(vec![
                g.try_mul(&b.try_sin()?)?.try_sum_to(a.shape())?,
                g.try_mul(a)?
                    .try_mul(&b.try_cos()?)?
                    .try_sum_to(b.shape())?,
            ])
        },
    )
});

/// `softplus` with a forward-mode rule (`custom_jvp`): reverse mode transposes it.
static SOFTPLUS_JVP: std::sync::LazyLock<CustomFn> = std::sync::LazyLock::new(|| {
    custom_jvp(
        "softplus_jvp",
        |x: &[Tensor]| Ok(x[0].relu() + ((-x[0].abs()).exp() + 1.0).log()),
        |a: &JvpArgs| a.tangent(0).try_mul(&a.input(0).try_sigmoid()?),
    )
});

/// `a * sin(b)` with broadcasting and a forward-mode rule (the transpose sums for it).
static MUL_SIN_JVP: std::sync::LazyLock<CustomFn> = std::sync::LazyLock::new(|| {
    custom_jvp(
        "mul_sin_jvp",
        |x: &[Tensor]| x[0].try_mul(&x[1].try_sin()?),
        |r: &JvpArgs| {
            let (a, b) = (r.input(0), r.input(1));
            r.tangent(0)
                .try_mul(&b.try_sin()?)?
                .try_add(&a.try_mul(&b.try_cos()?)?.try_mul(r.tangent(1))?)
        },
    )
});

fn cases() -> Vec<Case> {
    let mut v = vec![
        // ---------------------------------------------------------- unary
        case!("neg", |r| vec![any(r, &[3, 4])], |x| x[0].try_neg()),
        case!("exp", |r| vec![any(r, &[3, 4])], |x| x[0].try_exp()),
        case!("log", |r| vec![pos(r, &[3, 4])], |x| x[0].try_log()),
        case!("log1p", |r| vec![pos(r, &[3, 4])], |x| x[0].try_log1p()),
        case!("tanh", |r| vec![any(r, &[3, 4])], |x| x[0].try_tanh()),
        case!("sigmoid", |r| vec![any(r, &[3, 4])], |x| x[0].try_sigmoid()),
        case!("relu", |r| vec![away(r, &[3, 4])], |x| x[0].try_relu()),
        case!("sin", |r| vec![any(r, &[3, 4])], |x| x[0].try_sin()),
        case!("cos", |r| vec![any(r, &[3, 4])], |x| x[0].try_cos()),
        case!("sqrt", |r| vec![pos(r, &[3, 4])], |x| x[0].try_sqrt()),
        case!("abs", |r| vec![away(r, &[3, 4])], |x| x[0].try_abs()),
        case!("sign", |r| vec![away(r, &[3, 4])], |x| x[0].try_sign()),
        case!("square", |r| vec![any(r, &[3, 4])], |x| x[0].try_square()),
        case!("recip", |r| vec![away(r, &[3, 4])], |x| x[0].try_recip()),
        case!("erf", |r| vec![any(r, &[3, 4])], |x| x[0].try_erf()),
        case!("unary on 0-d", |r| vec![any(r, &[])], |x| x[0]
            .try_sin()?
            .try_mul(&x[0].try_exp()?)),
        case!("scalar ops", |r| vec![any(r, &[2, 3])], |x| {
            x[0].try_mul_scalar(3.0)?
                .try_add_scalar(0.5)?
                .try_sub_scalar(2.0)?
                .try_div_scalar(4.0)?
                .try_rsub_scalar(1.0)
        }),
        case!("powf", |r| vec![pos(r, &[2, 3])], |x| x[0].try_powf(2.5)),
        case!("norm", |r| vec![any(r, &[2, 3])], |x| Ok(x[0].norm())),
        // ---------------------------------------------------------- select / where
        case!(
            "select (cond const)",
            |r| vec![any(r, &[3, 4]), any(r, &[3, 4])],
            |x| Tensor::try_select(&pattern(&[3, 4], &x[0]), &x[0], &x[1])
        ),
        case!(
            "select broadcast (3,1),(3,4),(4,)",
            |r| vec![any(r, &[3, 4]), any(r, &[4])],
            |x| Tensor::try_select(&pattern(&[3, 1], &x[0]), &x[0], &x[1])
        ),
        case!(
            "where_ (cond from input)",
            |r| vec![away(r, &[2, 3]), any(r, &[2, 3])],
            |x| Ok(where_(&x[0].gt_scalar(0.0), &x[0].exp(), &x[1].square()))
        ),
        case!("comparison", |r| pair_sep(r, &[2, 3], &[3]), |x| x[0]
            .try_gt(&x[1])?
            .try_mul(&x[0])),
        // ---------------------------------------------------------- gathers and scatters
        case!(
            "take_along_axis (repeated indices)",
            |r| vec![any(r, &[3, 4])],
            |x| x[0].try_take_along_axis(&Tensor::new([[2i32, 0], [1, 1], [3, -1]]), 1)
        ),
        case!(
            "take_along_axis broadcast (2,1) into (3,4)",
            |r| vec![any(r, &[3, 4])],
            |x| x[0].try_take_along_axis(&Tensor::new([[0i64], [2]]), 0)
        ),
        case!(
            "take axis 0 (2-d ids, repeated)",
            |r| vec![any(r, &[4, 3])],
            |x| x[0].try_take(&Tensor::new([[3i32, 0], [3, 1]]), 0)
        ),
        case!(
            "index_select axis 1 (negative index)",
            |r| vec![any(r, &[2, 3, 2])],
            |x| x[0].try_index_select(1, &Tensor::new([-1i64, 0, 0]))
        ),
        case!(
            "scatter_add (x and updates)",
            |r| vec![any(r, &[3, 4]), any(r, &[3, 2])],
            |x| x[0].try_scatter_add(1, &Tensor::new([[1i32, 1], [0, 3], [2, 2]]), &x[1])
        ),
        case!(
            "index_add (x and updates)",
            |r| vec![any(r, &[4, 2]), any(r, &[3, 2])],
            |x| x[0].try_index_add(0, &Tensor::new([3i32, 0, 3]), &x[1])
        ),
        case!("boolean_mask", |r| vec![any(r, &[3, 2])], |x| x[0]
            .try_boolean_mask(&Tensor::new([true, false, true]))),
        case!(
            "gather then nonlinear (second order through the scatter)",
            |r| vec![any(r, &[3, 4])],
            |x| x[0]
                .try_take_along_axis(&Tensor::new([[1i32], [3], [0]]), 1)?
                .try_exp()?
                .try_mul(&x[0].try_sum_along(&[1], true)?)
        ),
        // ---------------------------------------------------------- reductions
        case!("sum", |r| vec![any(r, &[2, 3, 4])], |x| Ok(x[0].sum())),
        case!("sum_along [1]", |r| vec![any(r, &[2, 3, 4])], |x| x[0]
            .try_sum_along(&[1], false)),
        case!(
            "sum_along [1] keepdims",
            |r| vec![any(r, &[2, 3, 4])],
            |x| x[0].try_sum_along(&[1], true)
        ),
        case!("sum_along [0,2]", |r| vec![any(r, &[2, 3, 4])], |x| x[0]
            .try_sum_along(&[0, 2], false)),
        case!(
            "sum_along [-1] keepdims",
            |r| vec![any(r, &[2, 3, 4])],
            |x| x[0].try_sum_along(&[-1], true)
        ),
        case!("sum_to", |r| vec![any(r, &[2, 3, 4])], |x| x[0]
            .try_sum_to(&[3, 1])),
        case!("mean", |r| vec![any(r, &[3, 4])], |x| Ok(x[0].mean())),
        case!("mean_along [0]", |r| vec![any(r, &[3, 4])], |x| x[0]
            .try_mean_along(&[0], false)),
        case!("mean_along [1] keepdims", |r| vec![any(r, &[3, 4])], |x| x
            [0]
        .try_mean_along(&[1], true)),
        case!("max", |r| vec![distinct(r, &[3, 4])], |x| x[0].try_max()),
        case!("max_along [1]", |r| vec![distinct(r, &[3, 4])], |x| x[0]
            .try_max_along(&[1], false)),
        case!(
            "max_along [0] keepdims",
            |r| vec![distinct(r, &[3, 4])],
            |x| x[0].try_max_along(&[0], true)
        ),
        case!("max_along [0,2]", |r| vec![distinct(r, &[2, 3, 2])], |x| x
            [0]
        .try_max_along(&[0, 2], false)),
        case!("min", |r| vec![distinct(r, &[3, 4])], |x| Ok(x[0].min())),
        case!(
            "min_along [-1] keepdims",
            |r| vec![distinct(r, &[3, 4])],
            |x| x[0].try_min_along(&[-1], true)
        ),
        case!("logsumexp [1]", |r| vec![any(r, &[3, 4])], |x| x[0]
            .try_logsumexp(&[1], false)),
        case!("logsumexp [0] keepdims", |r| vec![any(r, &[3, 4])], |x| x
            [0]
        .try_logsumexp(&[0], true)),
        case!("logsumexp all", |r| vec![any(r, &[2, 3, 2])], |x| x[0]
            .try_logsumexp(&[0, 1, 2], false)),
        // `stop_gradient` is checked here by the logsumexp and softmax cases (their shift's
        // derivative cancels, so central differences agree); its zero derivative by
        // `tests/trust.rs`.
        case!("softmax -1", |r| vec![any(r, &[3, 4])], |x| x[0]
            .try_softmax(-1)),
        case!("softmax 0", |r| vec![any(r, &[3, 4])], |x| x[0]
            .try_softmax(0)),
        case!("log_softmax 1", |r| vec![any(r, &[2, 3, 4])], |x| x[0]
            .try_log_softmax(1)),
        // ---------------------------------------------------------- matmul
        case!(
            "matmul vec.vec",
            |r| vec![any(r, &[4]), any(r, &[4])],
            |x| x[0].try_matmul(&x[1])
        ),
        case!(
            "matmul vec.mat",
            |r| vec![any(r, &[4]), any(r, &[4, 3])],
            |x| x[0].try_matmul(&x[1])
        ),
        case!(
            "matmul mat.vec",
            |r| vec![any(r, &[3, 4]), any(r, &[4])],
            |x| x[0].try_matmul(&x[1])
        ),
        case!(
            "matmul mat.mat",
            |r| vec![any(r, &[2, 3]), any(r, &[3, 4])],
            |x| x[0].try_matmul(&x[1])
        ),
        case!(
            "matmul batched.mat",
            |r| vec![any(r, &[2, 3, 4]), any(r, &[4, 2])],
            |x| x[0].try_matmul(&x[1])
        ),
        case!(
            "matmul broadcast batch (2,1,2,3)x(3,3,2)",
            |r| vec![any(r, &[2, 1, 2, 3]), any(r, &[3, 3, 2])],
            |x| x[0].try_matmul(&x[1])
        ),
        case!(
            "matmul vec.batched",
            |r| vec![any(r, &[3]), any(r, &[2, 3, 2])],
            |x| x[0].try_matmul(&x[1])
        ),
        case!(
            "matmul_t A^T B",
            |r| vec![any(r, &[3, 2]), any(r, &[3, 4])],
            |x| x[0].try_matmul_t(&x[1], true, false)
        ),
        case!(
            "matmul_t A B^T",
            |r| vec![any(r, &[2, 3]), any(r, &[4, 3])],
            |x| x[0].try_matmul_t(&x[1], false, true)
        ),
        case!(
            "matmul_t A^T B^T",
            |r| vec![any(r, &[3, 2]), any(r, &[4, 3])],
            |x| x[0].try_matmul_t(&x[1], true, true)
        ),
        case!(
            "matmul_t batched A^T B^T",
            |r| vec![any(r, &[2, 1, 3, 2]), any(r, &[3, 4, 3])],
            |x| x[0].try_matmul_t(&x[1], true, true)
        ),
        case!(
            "matmul_t same operand x^T x",
            |r| vec![any(r, &[3, 2])],
            |x| x[0].try_matmul_t(&x[0], true, false)
        ),
        // ---------------------------------------------------------- layout
        case!("reshape", |r| vec![any(r, &[3, 4])], |x| x[0]
            .try_reshape_to(&[2, 6])),
        case!("reshape -1", |r| vec![any(r, &[2, 3, 2])], |x| x[0]
            .try_reshape(&[-1, 4])),
        case!("permute", |r| vec![any(r, &[2, 3, 4])], |x| x[0]
            .try_permute(&[2, 0, 1])),
        case!(
            "transpose .t()",
            |r| vec![any(r, &[3, 4])],
            |x| Ok(x[0].t())
        ),
        case!("swap_axes", |r| vec![any(r, &[2, 3, 4])], |x| x[0]
            .try_swap_axes(0, -1)),
        case!("slice_axis", |r| vec![any(r, &[4, 5])], |x| x[0]
            .try_slice_axis(1, 1, 4)),
        case!("slice_axis_step 2", |r| vec![any(r, &[5, 3])], |x| x[0]
            .try_slice_axis_step(0, 0, 5, 2)),
        case!(
            "slice_axis_step 3 (3-d)",
            |r| vec![any(r, &[2, 7, 2])],
            |x| x[0].try_slice_axis_step(1, 1, 7, 3)
        ),
        case!("index_axis", |r| vec![any(r, &[3, 4])], |x| x[0]
            .try_index_axis(1, 2)),
        case!("index_axis negative", |r| vec![any(r, &[2, 3, 4])], |x| x
            [0]
        .try_index_axis(2, -1)),
        case!("at", |r| vec![any(r, &[3, 4])], |x| Ok(x[0].at(1))),
        case!("slice reversed ..;-1", |r| vec![any(r, &[5])], |x| x[0]
            .try_slice(s![..;-1])),
        case!(
            "slice strided [1..3, ..;2]",
            |r| vec![any(r, &[4, 5])],
            |x| x[0].try_slice(s![1..3, ..;2])
        ),
        case!(
            "slice negative steps and an index (3-d)",
            |r| vec![any(r, &[5, 3, 4])],
            |x| x[0].try_slice(s![..;-2, 1, 0..4;-3])
        ),
        case!(
            "slice numpy 3:0:-1 with a new axis",
            |r| vec![any(r, &[4, 3])],
            |x| x[0].try_slice([
                SliceElem::NewAxis,
                SliceElem::numpy(Some(3), Some(0), -1),
                SliceElem::numpy(None, None, 2),
            ])
        ),
        case!("slice of a slice", |r| vec![any(r, &[6, 4])], |x| x[0]
            .try_slice(s![1..;2, ..;-1])?
            .try_slice(s![..;-1, 1..3])),
        case!("flip [0, -1]", |r| vec![any(r, &[3, 4])], |x| x[0]
            .try_flip(&[0, -1])),
        case!(
            "concat axis 0",
            |r| vec![any(r, &[2, 3]), any(r, &[1, 3]), any(r, &[3, 3])],
            |x| Tensor::try_concat(&[&x[0], &x[1], &x[2]], 0)
        ),
        case!(
            "concat axis -1",
            |r| vec![any(r, &[2, 3]), any(r, &[2, 1])],
            |x| Tensor::try_concat(&[&x[0], &x[1]], -1)
        ),
        case!("concat reuse", |r| vec![any(r, &[2, 2])], |x| {
            Tensor::try_concat(&[&x[0], &x[0].square()], 1)
        }),
        case!(
            "stack axis 0",
            |r| vec![any(r, &[2, 3]), any(r, &[2, 3])],
            |x| Tensor::try_stack(&[&x[0], &x[1]], 0)
        ),
        case!(
            "stack axis 2",
            |r| vec![any(r, &[2, 3]), any(r, &[2, 3]), any(r, &[2, 3])],
            |x| Tensor::try_stack(&[&x[0], &x[1], &x[2]], 2)
        ),
        case!("stack 0-d", |r| vec![any(r, &[]), any(r, &[])], |x| {
            Tensor::try_stack(&[&x[0], &x[1]], 0)
        }),
        case!("broadcast_to (4,)->(3,4)", |r| vec![any(r, &[4])], |x| x[0]
            .try_broadcast_to(&[3, 4])),
        case!(
            "broadcast_to (3,1)->(2,3,4)",
            |r| vec![any(r, &[3, 1])],
            |x| x[0].try_broadcast_to(&[2, 3, 4])
        ),
        case!("broadcast_to ()->(2,2)", |r| vec![any(r, &[])], |x| x[0]
            .try_broadcast_to(&[2, 2])),
        // ---------------------------------------------------------- composites
        case!(
            "mlp layer",
            |r| vec![any(r, &[4, 3]), any(r, &[3, 2]), any(r, &[2])],
            |x| {
                x[0].try_matmul(&x[1])?
                    .try_add(&x[2])?
                    .try_tanh()?
                    .try_square()?
                    .try_mean_along(&[0], false)
            }
        ),
        case!("cross entropy", |r| vec![any(r, &[3, 4])], |x| {
            let labels = pattern(&[3, 4], &x[0]);
            x[0].try_log_softmax(-1)?
                .try_mul(&labels)?
                .try_sum_along(&[-1], false)?
                .try_neg()
        }),
        case!("shared subexpression", |r| vec![pos(r, &[2, 3])], |x| {
            let s = x[0].try_sqrt()?;
            s.try_mul(&s)?
                .try_add(&s.try_log()?)?
                .try_div(&x[0].try_add_scalar(1.0)?)
        }),
    ];
    // ---------------------------------------------------------- user-defined (custom_vjp)
    v.push(case!(
        "custom_vjp softplus",
        |r| vec![any(r, &[3, 4])],
        |x| SOFTPLUS.call(&[&x[0]])
    ));
    v.push(case!(
        "custom_vjp softplus vectorized, composed",
        |r| vec![any(r, &[2, 3])],
        |x| SOFTPLUS_VEC.call(&[&x[0]])?.try_mul(&x[0])?.try_tanh()
    ));
    v.push(case!(
        "custom_vjp two inputs (3,4)x(4,)",
        |r| pair_any(r, &[3, 4], &[4]),
        |x| MUL_SIN.call(&[&x[0], &x[1]])
    ));
    v.push(case!(
        "custom_vjp two inputs ()x(2,3)",
        |r| pair_any(r, &[], &[2, 3]),
        |x| MUL_SIN.call(&[&x[0], &x[1]])
    ));
    v.push(case!(
        "custom_jvp softplus",
        |r| vec![any(r, &[3, 4])],
        |x| SOFTPLUS_JVP.call(&[&x[0]])
    ));
    v.push(case!(
        "custom_jvp two inputs (3,4)x(4,)",
        |r| pair_any(r, &[3, 4], &[4]),
        |x| MUL_SIN_JVP.call(&[&x[0], &x[1]])
    ));
    v.push(case!(
        "custom_jvp two inputs ()x(2,3)",
        |r| pair_any(r, &[], &[2, 3]),
        |x| MUL_SIN_JVP.call(&[&x[0], &x[1]])
    ));
    binary_cases!(v, "add", try_add, pair_any);
    binary_cases!(v, "sub", try_sub, pair_any);
    binary_cases!(v, "mul", try_mul, pair_any);
    binary_cases!(v, "div", try_div, pair_div);
    binary_cases!(v, "pow", try_pow, pair_pow);
    binary_cases!(v, "maximum", try_maximum, pair_sep);
    binary_cases!(v, "minimum", try_minimum, pair_sep);
    v.push(case!("mul same operand", |r| vec![any(r, &[3])], |x| x[0]
        .try_mul(&x[0])));
    v.push(case!("div same operand", |r| vec![away(r, &[3])], |x| x[0]
        .try_exp()?
        .try_div(&x[0])));
    v
}

// ------------------------------------------------------------------ check machinery

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

/// `|got - want|_inf <= rtol * |want|_inf + atol`, elementwise finite.
fn assert_close(label: &str, what: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{label}: {what}: lengths differ");
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{label}: {what}: non-finite result {got:?}"
    );
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    let bound = rtol * max_abs(want) + atol;
    assert!(
        err <= bound,
        "{label}: {what}: max error {err:e} > {bound:e}\n  got:  {got:?}\n  want: {want:?}"
    );
}

/// `x + s t`, in the dtype of `x`.
fn shifted(xs: &[Tensor], ts: &[Tensor], s: f64) -> Vec<Tensor> {
    xs.iter()
        .zip(ts)
        .map(|(x, t)| {
            let v = vals(x)
                .iter()
                .zip(vals(t))
                .map(|(a, b)| a + s * b)
                .collect();
            t64(v, x.shape()).cast(x.dtype())
        })
        .collect()
}

/// Central difference of `f` at `xs` along `ts`.
fn central_diff(f: &dyn Fn(&[Tensor]) -> Res, xs: &[Tensor], ts: &[Tensor], eps: f64) -> Vec<f64> {
    let hi = vals(&f(&shifted(xs, ts, eps)).unwrap());
    let lo = vals(&f(&shifted(xs, ts, -eps)).unwrap());
    hi.iter()
        .zip(lo)
        .map(|(a, b)| (a - b) / (2.0 * eps))
        .collect()
}

/// The analytic products of one check.
struct Products {
    value: Tensor,
    jvp: Tensor,
    vjp: Vec<Tensor>,
}

fn products(
    label: &str,
    f: &dyn Fn(&[Tensor]) -> Res,
    xs: &[Tensor],
    ts: &[Tensor],
    c: Option<&Tensor>,
) -> Products {
    let pf = PureFn::new(f, 0, vec![0..xs.len()]);
    let (value, jvp) =
        jvp_pure(&pf, xs, ts).unwrap_or_else(|e| panic!("{label}: jvp_pure failed: {e}"));
    let (value2, pb) =
        vjp_pure(&pf, xs).unwrap_or_else(|e| panic!("{label}: vjp_pure failed: {e}"));
    assert_eq!(
        vals(&value),
        vals(&value2),
        "{label}: values of jvp_pure and vjp_pure differ"
    );
    assert_eq!(
        pb.out_shape(),
        value.shape(),
        "{label}: pullback output shape"
    );
    assert_eq!(jvp.shape(), value.shape(), "{label}: jvp shape");
    assert_eq!(jvp.dtype(), value.dtype(), "{label}: jvp dtype");
    let jvp2 = pb
        .jvp(ts)
        .unwrap_or_else(|e| panic!("{label}: Pullback::jvp failed: {e}"));
    assert_eq!(
        vals(&jvp),
        vals(&jvp2),
        "{label}: jvp_pure and Pullback::jvp differ"
    );
    let c = c.cloned().unwrap_or_else(|| value.ones_like());
    let vjp = pb
        .call(&c)
        .unwrap_or_else(|e| panic!("{label}: pullback failed: {e}"));
    assert_eq!(vjp.len(), xs.len(), "{label}: one cotangent per input");
    for (k, (g, x)) in vjp.iter().zip(xs).enumerate() {
        assert_eq!(g.shape(), x.shape(), "{label}: vjp[{k}] shape");
        assert_eq!(g.dtype(), x.dtype(), "{label}: vjp[{k}] dtype");
    }
    Products { value, jvp, vjp }
}

/// Checks 1, 2 and 4 for `f` at `xs`.
fn check(label: &str, f: &dyn Fn(&[Tensor]) -> Res, xs: &[Tensor], r: &mut Rng) {
    let ts: Vec<Tensor> = xs.iter().map(|x| rand_like(r, x)).collect();
    let value = f(xs).unwrap_or_else(|e| panic!("{label}: evaluation failed: {e}"));
    let c = rand_like(r, &value);
    let p = products(label, f, xs, &ts, Some(&c));
    assert_eq!(
        vals(&p.value),
        vals(&value),
        "{label}: traced and direct values differ"
    );

    // 1. JVP against central differences.
    let fd = central_diff(f, xs, &ts, EPS);
    let jt = vals(&p.jvp);
    assert_close(
        label,
        "jvp vs central differences",
        &jt,
        &fd,
        FD_RTOL,
        FD_ATOL,
    );

    // 2. VJP: <J t, c> = <t, J^T c>.
    let cv = vals(&c);
    let lhs = dot(&jt, &cv);
    let terms: Vec<(Vec<f64>, Vec<f64>)> = ts
        .iter()
        .zip(&p.vjp)
        .map(|(t, g)| (vals(t), vals(g)))
        .collect();
    let rhs: f64 = terms.iter().map(|(t, g)| dot(t, g)).sum();
    let scale: f64 = jt.iter().zip(&cv).map(|(a, b)| (a * b).abs()).sum::<f64>()
        + terms
            .iter()
            .map(|(t, g)| t.iter().zip(g).map(|(a, b)| (a * b).abs()).sum::<f64>())
            .sum::<f64>();
    assert!(
        (lhs - rhs).abs() <= DOT_RTOL * scale + 1e-300,
        "{label}: <J t, c> = {lhs:e} but <t, J^T c> = {rhs:e}"
    );
    let lhs_fd = dot(&fd, &cv);
    assert!(
        (lhs_fd - rhs).abs()
            <= FD_RTOL * (scale + max_abs(&fd) * cv.len() as f64) + FD_ATOL * cv.len() as f64,
        "{label}: <fd(J t), c> = {lhs_fd:e} but <t, J^T c> = {rhs:e}"
    );

    // 4. The same products in f32.
    let to32 = |ts: &[Tensor]| -> Vec<Tensor> { ts.iter().map(|t| t.cast(DType::F32)).collect() };
    let (xs32, ts32, c32) = (to32(xs), to32(&ts), c.cast(DType::F32));
    let label32 = format!("{label} [f32]");
    let p32 = products(&label32, f, &xs32, &ts32, Some(&c32));
    assert_eq!(p32.value.dtype(), DType::F32, "{label32}: value dtype");
    let cmp = |what: &str, a: &Tensor, b: &Tensor| {
        assert_close(&label32, what, &vals(a), &vals(b), F32_RTOL, F32_RTOL);
    };
    cmp("value vs f64", &p32.value, &p.value);
    cmp("jvp vs f64", &p32.jvp, &p.jvp);
    for (g32, g) in p32.vjp.iter().zip(&p.vjp) {
        cmp("vjp vs f64", g32, g);
    }
}

/// The gradient function of `f`: `G(xs..., c) = J(xs)^T c`, flattened and joined. It is built
/// from `vjp_pure`, so when it runs under an outer transform its derivative rules are recorded
/// there and `G` can be differentiated again.
fn grad_fn(f: PureF) -> impl Fn(&[Tensor]) -> Res {
    move |xc: &[Tensor]| {
        let (xs, c) = xc.split_at(xc.len() - 1);
        let pf = PureFn::new(&f, 0, vec![0..xs.len()]);
        let (_, pb) = vjp_pure(&pf, xs)?;
        let gs = pb.call(&c[0])?;
        let flat: Vec<Tensor> = gs
            .iter()
            .map(|g| g.try_reshape_to(&[g.numel()]))
            .collect::<stategrad::Result<_>>()?;
        let refs: Vec<&Tensor> = flat.iter().collect();
        Tensor::try_concat(&refs, 0)
    }
}

#[test]
fn gradcheck_table_first_and_second_order() {
    let cases = cases();
    let mut names = std::collections::HashSet::new();
    for (i, case) in cases.iter().enumerate() {
        assert!(
            names.insert(case.name),
            "duplicate table entry {}",
            case.name
        );
        let mut r = Rng(0x5EED_0000 + i as u64);
        let xs = (case.gen)(&mut r);
        assert!(xs.iter().all(|x| x.dtype() == DType::F64));
        // First order.
        check(case.name, &case.f, &xs, &mut r);
        // Second order: the gradient function, a function of the point and the cotangent.
        let y = (case.f)(&xs).unwrap();
        let mut xc = xs.clone();
        xc.push(rand_like(&mut r, &y));
        let g = grad_fn(case.f);
        check(&format!("{} [grad]", case.name), &g, &xc, &mut r);
        if xs.len() == 1 {
            check_hessian(case, &xs[0], &xc[1], &mut r);
        }
    }
}

/// Through the high-level API: `hessian` of `<f(x), c>` and `jacrev` of its nested `grad` are
/// the same matrix, and its product with a direction matches central differences of the gradient.
fn check_hessian(case: &Case, x0: &Tensor, c: &Tensor, r: &mut Rng) {
    let label = format!("{} [hessian]", case.name);
    let f = case.f;
    let loss = |x: Tensor| -> Res { Ok(f(&[x])?.try_mul(c)?.sum()) };
    let h = hessian(loss)
        .call(x0.clone())
        .unwrap_or_else(|e| panic!("{label}: hessian failed: {e}"));
    let n = x0.numel();
    let mut want_shape = x0.shape().to_vec();
    want_shape.extend_from_slice(x0.shape());
    assert_eq!(h.shape(), want_shape.as_slice(), "{label}: shape");
    let jg = jacrev(|x: Tensor| grad(loss).call(x))
        .call(x0.clone())
        .unwrap_or_else(|e| panic!("{label}: jacrev(grad) failed: {e}"));
    let (hv, jv) = (vals(&h), vals(&jg));
    assert_close(&label, "hessian vs jacrev(grad)", &hv, &jv, 1e-12, 1e-13);
    let t = rand_like(r, x0);
    let tv = vals(&t);
    let ht: Vec<f64> = (0..n).map(|i| dot(&hv[i * n..(i + 1) * n], &tv)).collect();
    let g = |xs: &[Tensor]| grad(loss).call(xs[0].clone());
    let fd = central_diff(&g, std::slice::from_ref(x0), &[t], EPS);
    assert_close(
        &label,
        "H t vs central differences of grad",
        &ht,
        &fd,
        FD_RTOL,
        FD_ATOL,
    );
    for i in 0..n {
        for j in 0..i {
            let (a, b) = (hv[i * n + j], hv[j * n + i]);
            assert!(
                (a - b).abs() <= 1e-12 * (1.0 + a.abs()),
                "{label}: not symmetric at ({i}, {j}): {a} vs {b}"
            );
        }
    }
}

// ------------------------------------------------------------------ closed forms

fn s64(x: f64) -> Tensor {
    Tensor::scalar(x)
}

fn item(t: &Tensor) -> f64 {
    t.item().unwrap()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

struct Scalar {
    name: &'static str,
    f: fn(Tensor) -> Tensor,
    d1: fn(f64) -> f64,
    d2: fn(f64) -> f64,
    points: &'static [f64],
}

fn sigm(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn scalar_table() -> Vec<Scalar> {
    vec![
        Scalar {
            name: "x^3 (mul)",
            f: |x| &x * &x * &x,
            d1: |x| 3.0 * x * x,
            d2: |x| 6.0 * x,
            points: &[-1.3, 0.0, 0.7, 2.0],
        },
        Scalar {
            name: "x^3 (powf)",
            f: |x| x.powf(3.0),
            d1: |x| 3.0 * x * x,
            d2: |x| 6.0 * x,
            points: &[-1.2, 0.4, 1.1, 2.5],
        },
        Scalar {
            name: "sin",
            f: |x| x.sin(),
            d1: f64::cos,
            d2: |x| -x.sin(),
            points: &[-2.0, 0.0, 0.3, 1.5],
        },
        Scalar {
            name: "cos",
            f: |x| x.cos(),
            d1: |x| -x.sin(),
            d2: |x| -x.cos(),
            points: &[-0.8, 0.0, 2.2],
        },
        Scalar {
            name: "exp(x)*x",
            f: |x| x.exp() * &x,
            d1: |x| x.exp() * (x + 1.0),
            d2: |x| x.exp() * (x + 2.0),
            points: &[-1.0, 0.0, 0.5, 1.2],
        },
        Scalar {
            name: "tanh",
            f: |x| x.tanh(),
            d1: |x| 1.0 - x.tanh().powi(2),
            d2: |x| -2.0 * x.tanh() * (1.0 - x.tanh().powi(2)),
            points: &[-1.1, 0.0, 0.4, 2.0],
        },
        Scalar {
            name: "log1p",
            f: |x| x.log1p(),
            d1: |x| 1.0 / (1.0 + x),
            d2: |x| -1.0 / ((1.0 + x) * (1.0 + x)),
            points: &[-0.5, 0.0, 1e-3, 3.0],
        },
        Scalar {
            name: "log",
            f: |x| x.log(),
            d1: |x| 1.0 / x,
            d2: |x| -1.0 / (x * x),
            points: &[0.3, 1.0, 4.0],
        },
        Scalar {
            name: "sigmoid",
            f: |x| x.sigmoid(),
            d1: |x| sigm(x) * (1.0 - sigm(x)),
            d2: |x| sigm(x) * (1.0 - sigm(x)) * (1.0 - 2.0 * sigm(x)),
            points: &[-2.0, 0.0, 0.9],
        },
        Scalar {
            name: "sqrt",
            f: |x| x.sqrt(),
            d1: |x| 0.5 / x.sqrt(),
            d2: |x| -0.25 * x.powf(-1.5),
            points: &[0.2, 1.0, 3.0],
        },
        Scalar {
            name: "1/x",
            f: |x| x.recip(),
            d1: |x| -1.0 / (x * x),
            d2: |x| 2.0 / (x * x * x),
            points: &[-2.0, 0.5, 1.5],
        },
        Scalar {
            name: "erf",
            f: |x| x.erf(),
            d1: |x| std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp(),
            d2: |x| -2.0 * x * std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp(),
            points: &[-1.5, 0.0, 0.3, 2.0],
        },
        Scalar {
            name: "x^2.5 (pow)",
            f: |x| x.pow(&Tensor::scalar(2.5f64)),
            d1: |x| 2.5 * x.powf(1.5),
            d2: |x| 3.75 * x.powf(0.5),
            points: &[0.3, 1.0, 2.0],
        },
    ]
}

#[test]
fn grad_of_grad_matches_closed_forms() {
    for s in scalar_table() {
        let f = s.f;
        for &x0 in s.points {
            let g1 = grad(f).call(s64(x0)).unwrap();
            assert!(
                close(item(&g1), (s.d1)(x0), 1e-12),
                "{} at {x0}: grad {} vs {}",
                s.name,
                item(&g1),
                (s.d1)(x0)
            );
            let g2 = grad(|x: Tensor| grad(f).call(x)).call(s64(x0)).unwrap();
            assert_eq!(g2.dtype(), DType::F64);
            assert!(
                close(item(&g2), (s.d2)(x0), 1e-12),
                "{} at {x0}: grad(grad) {} vs {}",
                s.name,
                item(&g2),
                (s.d2)(x0)
            );
            let h = hessian(f).call(s64(x0)).unwrap();
            assert_eq!(h.shape(), &[] as &[usize]);
            assert!(
                close(item(&h), (s.d2)(x0), 1e-12),
                "{} at {x0}: hessian {} vs {}",
                s.name,
                item(&h),
                (s.d2)(x0)
            );
        }
        // Vector form: the Hessian of sum(f(x)) is diag(f''(x)).
        let xs: Vec<f64> = s.points.to_vec();
        let n = xs.len();
        let h = hessian(|x: Tensor| f(x).sum())
            .call(t64(xs.clone(), &[n]))
            .unwrap();
        assert_eq!(h.shape(), &[n, n], "{}", s.name);
        let mut want = vec![0.0; n * n];
        for i in 0..n {
            want[i * n + i] = (s.d2)(xs[i]);
        }
        assert_close(s.name, "hessian of sum", &vals(&h), &want, 1e-12, 1e-12);
        // The gradient nested inside jacrev gives the same matrix.
        let j = jacrev(|x: Tensor| grad(|y: Tensor| f(y).sum()).call(x))
            .call(t64(xs.clone(), &[n]))
            .unwrap();
        assert_close(s.name, "jacrev(grad)", &vals(&j), &want, 1e-12, 1e-12);
        // and vector_grad(grad) its diagonal.
        let d = vector_grad(|x: Tensor| grad(|y: Tensor| f(y).sum()).call(x))
            .call(t64(xs.clone(), &[n]))
            .unwrap();
        let diag: Vec<f64> = xs.iter().map(|&x| (s.d2)(x)).collect();
        assert_close(s.name, "vector_grad(grad)", &vals(&d), &diag, 1e-12, 1e-12);
    }
}

#[test]
fn third_derivative_of_polynomial() {
    // p(x) = 2x^4 - 3x^3 + x^2 - 5x + 1: p''' = 48x - 18, p'''' = 48.
    let p = |x: Tensor| {
        let x2 = x.square();
        let x3 = &x2 * &x;
        let x4 = x2.square();
        &x4 * 2.0 - &x3 * 3.0 + &x2 - &x * 5.0 + 1.0
    };
    for x0 in [-1.5, -0.2, 0.0, 0.8, 2.0] {
        let d1 = grad(p).call(s64(x0)).unwrap();
        let d2 = grad(|x: Tensor| grad(p).call(x)).call(s64(x0)).unwrap();
        let d3 = grad(|x: Tensor| grad(|y: Tensor| grad(p).call(y)).call(x))
            .call(s64(x0))
            .unwrap();
        let d4 =
            grad(|x: Tensor| grad(|y: Tensor| grad(|z: Tensor| grad(p).call(z)).call(y)).call(x))
                .call(s64(x0))
                .unwrap();
        let want1 = 8.0 * x0.powi(3) - 9.0 * x0 * x0 + 2.0 * x0 - 5.0;
        let want2 = 24.0 * x0 * x0 - 18.0 * x0 + 2.0;
        assert!(
            close(item(&d1), want1, 1e-12),
            "p' at {x0}: {} vs {want1}",
            item(&d1)
        );
        assert!(
            close(item(&d2), want2, 1e-12),
            "p'' at {x0}: {} vs {want2}",
            item(&d2)
        );
        assert!(
            close(item(&d3), 48.0 * x0 - 18.0, 1e-12),
            "p''' at {x0}: {}",
            item(&d3)
        );
        assert!(
            close(item(&d4), 48.0, 1e-12),
            "p'''' at {x0}: {}",
            item(&d4)
        );
    }
    // Third derivative of a transcendental function too: (sin)''' = -cos.
    for x0 in [-1.0, 0.3, 2.0] {
        let d3 = grad(|x: Tensor| grad(|y: Tensor| grad(|z: Tensor| z.sin()).call(y)).call(x))
            .call(s64(x0))
            .unwrap();
        assert!(
            close(item(&d3), -x0.cos(), 1e-12),
            "sin''' at {x0}: {}",
            item(&d3)
        );
    }
}

#[test]
fn hessians_of_non_separable_functions() {
    let mut r = Rng(77);
    // Quadratic form x^T A x: H = A + A^T.
    let a = any(&mut r, &[3, 3]);
    let x0 = any(&mut r, &[3]);
    let h = hessian(|x: Tensor| x.matmul(&a).matmul(&x))
        .call(x0.clone())
        .unwrap();
    let av = vals(&a);
    let want: Vec<f64> = (0..9).map(|k| av[k] + av[(k % 3) * 3 + k / 3]).collect();
    assert_close("x^T A x", "hessian", &vals(&h), &want, 1e-12, 1e-12);

    // logsumexp: H = diag(p) - p p^T with p = softmax(x).
    let x0 = any(&mut r, &[4]);
    let h = hessian(|x: Tensor| x.logsumexp(&[0], false))
        .call(x0.clone())
        .unwrap();
    let xv = vals(&x0);
    let z: f64 = xv.iter().map(|v| v.exp()).sum();
    let p: Vec<f64> = xv.iter().map(|v| v.exp() / z).collect();
    let want: Vec<f64> = (0..16)
        .map(|k| {
            let (i, j) = (k / 4, k % 4);
            (if i == j { p[i] } else { 0.0 }) - p[i] * p[j]
        })
        .collect();
    assert_close("logsumexp", "hessian", &vals(&h), &want, 1e-12, 1e-12);

    // Two arguments: f(x, y) = sum(x * y^2); H_xx = 0, H_xy = diag(2y), H_yx = diag(2y), H_yy = diag(2x).
    let (x0, y0) = (any(&mut r, &[3]), any(&mut r, &[3]));
    let [[hxx, hxy], [hyx, hyy]] = hessian(|(x, y): (Tensor, Tensor)| (&x * &y.square()).sum())
        .argnums([0, 1])
        .call((x0.clone(), y0.clone()))
        .unwrap();
    let diag = |v: Vec<f64>| -> Vec<f64> {
        (0..9)
            .map(|k| if k / 3 == k % 3 { v[k / 3] } else { 0.0 })
            .collect()
    };
    let two_y: Vec<f64> = vals(&y0).iter().map(|v| 2.0 * v).collect();
    let two_x: Vec<f64> = vals(&x0).iter().map(|v| 2.0 * v).collect();
    assert_close("x*y^2", "H_xx", &vals(&hxx), &[0.0; 9], 0.0, 1e-14);
    assert_close(
        "x*y^2",
        "H_xy",
        &vals(&hxy),
        &diag(two_y.clone()),
        1e-12,
        1e-12,
    );
    assert_close("x*y^2", "H_yx", &vals(&hyx), &diag(two_y), 1e-12, 1e-12);
    assert_close("x*y^2", "H_yy", &vals(&hyy), &diag(two_x), 1e-12, 1e-12);

    // Hessian of a matrix argument: f(W) = sum(tanh(v W)) for W (2,3): shape (2,3,2,3), and
    // equal to the Jacobian of the gradient by central differences.
    let v = any(&mut r, &[2]);
    let w0 = any(&mut r, &[2, 3]);
    let f = |w: Tensor| v.matmul(&w).tanh().sum();
    let h = hessian(f).call(w0.clone()).unwrap();
    assert_eq!(h.shape(), &[2, 3, 2, 3]);
    let hv = vals(&h);
    for i in 0..6 {
        for j in 0..6 {
            assert!(
                (hv[i * 6 + j] - hv[j * 6 + i]).abs() <= 1e-14,
                "hessian not symmetric"
            );
        }
    }
    let g = |ws: &[Tensor]| grad(f).call(ws[0].clone());
    for j in 0..6 {
        let mut e = vec![0.0; 6];
        e[j] = 1.0;
        let col = central_diff(&g, std::slice::from_ref(&w0), &[t64(e, &[2, 3])], EPS);
        let got: Vec<f64> = (0..6).map(|i| hv[i * 6 + j]).collect();
        assert_close(
            "tanh(vW)",
            "hessian column vs central differences",
            &got,
            &col,
            FD_RTOL,
            FD_ATOL,
        );
    }
}

/// `jacrev == jacfwd` on non-square functions, both against central differences, and in f32.
#[test]
fn jacrev_equals_jacfwd_on_non_square_functions() {
    let mut r = Rng(4242);
    let a = any(&mut r, &[2, 3]);
    type Fx = Box<dyn Fn(Tensor) -> Tensor>;
    let a2 = a.clone();
    let fns: Vec<(&str, Vec<usize>, Fx)> = vec![
        (
            "A tanh(x): (3,)->(2,)",
            vec![3],
            Box::new(move |x: Tensor| a2.cast(x.dtype()).matmul(&x.tanh())),
        ),
        (
            "row sums and maxes: (2,3)->(4,)",
            vec![2, 3],
            Box::new(|x: Tensor| {
                let s = x.sin().sum_along(&[1], false);
                let m = x.exp().max_along(&[1], false);
                Tensor::concat(&[&s, &m], 0)
            }),
        ),
        (
            "outer softmax: (4,)->(2,3,4)",
            vec![4],
            Box::new(|x: Tensor| {
                let sm = x.softmax(0);
                let w = Tensor::stack(&[&sm, &x.square(), &x.cos()], 0);
                Tensor::stack(&[&w, &(&w * &sm)], 0)
            }),
        ),
        (
            "sum: (2,2)->()",
            vec![2, 2],
            Box::new(|x: Tensor| x.exp().sum()),
        ),
    ];
    for (name, shape, f) in &fns {
        let x0 = distinct(&mut r, shape);
        let jr = jacrev(|x: Tensor| f(x)).call(x0.clone()).unwrap();
        let jf = jacfwd(|x: Tensor| f(x)).call(x0.clone()).unwrap();
        let y = f(x0.clone());
        let mut want_shape = y.shape().to_vec();
        want_shape.extend_from_slice(shape);
        assert_eq!(jr.shape(), want_shape.as_slice(), "{name}: jacrev shape");
        assert_eq!(jf.shape(), want_shape.as_slice(), "{name}: jacfwd shape");
        assert_eq!(
            (jr.dtype(), jf.dtype()),
            (DType::F64, DType::F64),
            "{name}: dtypes"
        );
        assert_close(
            name,
            "jacrev vs jacfwd",
            &vals(&jr),
            &vals(&jf),
            1e-12,
            1e-14,
        );
        // Columns against central differences.
        let n = x0.numel();
        let m = y.numel();
        let jv = vals(&jr);
        let g = |xs: &[Tensor]| Ok(f(xs[0].clone()));
        for j in 0..n {
            let mut e = vec![0.0; n];
            e[j] = 1.0;
            let col = central_diff(&g, std::slice::from_ref(&x0), &[t64(e, shape)], EPS);
            let got: Vec<f64> = (0..m).map(|i| jv[i * n + j]).collect();
            assert_close(
                name,
                "jacobian column vs central differences",
                &got,
                &col,
                FD_RTOL,
                FD_ATOL,
            );
        }
        // f32.
        let x32 = x0.cast(DType::F32);
        let jr32 = jacrev(|x: Tensor| f(x)).call(x32.clone()).unwrap();
        let jf32 = jacfwd(|x: Tensor| f(x)).call(x32).unwrap();
        assert_eq!(
            (jr32.dtype(), jf32.dtype()),
            (DType::F32, DType::F32),
            "{name}: f32 dtypes"
        );
        assert_close(
            name,
            "f32 jacrev vs f64",
            &vals(&jr32),
            &jv,
            F32_RTOL,
            F32_RTOL,
        );
        assert_close(
            name,
            "f32 jacfwd vs f64",
            &vals(&jf32),
            &jv,
            F32_RTOL,
            F32_RTOL,
        );
    }
    // Closed form of the first: J = A diag(1 - tanh(x)^2).
    let x0 = any(&mut r, &[3]);
    let j = jacfwd(|x: Tensor| a.matmul(&x.tanh()))
        .call(x0.clone())
        .unwrap();
    let (av, xv) = (vals(&a), vals(&x0));
    let want: Vec<f64> = (0..6)
        .map(|k| av[k] * (1.0 - xv[k % 3].tanh().powi(2)))
        .collect();
    assert_close(
        "A tanh(x)",
        "jacfwd closed form",
        &vals(&j),
        &want,
        1e-12,
        1e-14,
    );
}

/// `Cast` between f32 and f64, at points where the f32 arithmetic is exact.
#[test]
fn cast_f32_to_f64_derivatives() {
    // Multiples of 1/64 and tangent steps of 2^-12 are exact in f32, so the central difference
    // of the f64 computation after the cast is limited by truncation error only.
    let x = Tensor::from_vec(vec![0.5f32, -1.25, 1.703125], &[3]).unwrap();
    let t = Tensor::from_vec(vec![1.0f32, -0.5, 0.25], &[3]).unwrap();
    let f = |xs: &[Tensor]| -> Res { xs[0].cast(DType::F64).try_sin()?.try_mul_scalar(3.0) };
    let pf = PureFn::new(&f, 0, vec![0..1]);
    let (y, jt) = jvp_pure(&pf, std::slice::from_ref(&x), std::slice::from_ref(&t)).unwrap();
    assert_eq!(y.dtype(), DType::F64);
    let xv = vals(&x);
    let tv = vals(&t);
    let want: Vec<f64> = xv.iter().zip(&tv).map(|(a, b)| 3.0 * a.cos() * b).collect();
    assert_eq!(
        jt.dtype(),
        DType::F64,
        "the tangent of an f64 output is f64"
    );
    assert_close(
        "cast f32->f64",
        "jvp closed form",
        &vals(&jt),
        &want,
        1e-12,
        1e-14,
    );
    let h = 2f64.powi(-12);
    let fd = central_diff(&f, std::slice::from_ref(&x), std::slice::from_ref(&t), h);
    assert_close(
        "cast f32->f64",
        "jvp vs central differences",
        &vals(&jt),
        &fd,
        1e-6,
        1e-9,
    );
    // VJP: the cotangent comes back in the input's dtype.
    let (_, pb) = vjp_pure(&pf, std::slice::from_ref(&x)).unwrap();
    let c = Tensor::from_vec(vec![0.25f64, -1.0, 2.0], &[3]).unwrap();
    let g = pb.call(&c).unwrap();
    assert_eq!(g[0].dtype(), DType::F32);
    let want: Vec<f64> = xv
        .iter()
        .zip(vals(&c))
        .map(|(a, b)| 3.0 * a.cos() * b)
        .collect();
    assert_close(
        "cast f32->f64",
        "vjp closed form",
        &vals(&g[0]),
        &want,
        1e-6,
        1e-7,
    );
    // Through the high-level API, to second order.
    let gx = grad(|x: Tensor| x.cast(DType::F64).sin().sum())
        .call(x.clone())
        .unwrap();
    assert_eq!(gx.dtype(), DType::F32);
    let want: Vec<f64> = xv.iter().map(|a| a.cos()).collect();
    assert_close("cast f32->f64", "grad", &vals(&gx), &want, 1e-6, 1e-7);
    let hx = hessian(|x: Tensor| x.cast(DType::F64).sin().sum())
        .call(x.clone())
        .unwrap();
    let want: Vec<f64> = (0..9)
        .map(|k| {
            if k / 3 == k % 3 {
                -xv[k / 3].sin()
            } else {
                0.0
            }
        })
        .collect();
    assert_close("cast f32->f64", "hessian", &vals(&hx), &want, 1e-6, 1e-7);
    // f64 -> f32: the VJP casts the cotangent back to f64.
    let f = |xs: &[Tensor]| -> Res { xs[0].cast(DType::F32).try_square() };
    let pf = PureFn::new(&f, 0, vec![0..1]);
    let x64 = x.cast(DType::F64);
    let (y, pb) = vjp_pure(&pf, std::slice::from_ref(&x64)).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    let g = pb.call(&c.cast(DType::F32)).unwrap();
    assert_eq!(g[0].dtype(), DType::F64);
    let want: Vec<f64> = xv.iter().zip(vals(&c)).map(|(a, b)| 2.0 * a * b).collect();
    assert_close(
        "cast f64->f32",
        "vjp closed form",
        &vals(&g[0]),
        &want,
        1e-6,
        1e-7,
    );
}

/// Ties of maximum/minimum and of max/min reductions share the cotangent evenly.
#[test]
fn ties_share_the_gradient() {
    let a = t64(vec![1.0, 2.0, 3.0], &[3]);
    let b = t64(vec![1.0, 0.0, 3.0], &[3]);
    let [ga, gb] = grad(|(a, b): (Tensor, Tensor)| a.maximum(&b).sum())
        .argnums([0, 1])
        .call((a.clone(), b.clone()))
        .unwrap();
    assert_eq!(vals(&ga), vec![0.5, 1.0, 0.5]);
    assert_eq!(vals(&gb), vec![0.5, 0.0, 0.5]);
    let [ga, gb] = grad(|(a, b): (Tensor, Tensor)| a.minimum(&b).sum())
        .argnums([0, 1])
        .call((a, b))
        .unwrap();
    assert_eq!(vals(&ga), vec![0.5, 0.0, 0.5]);
    assert_eq!(vals(&gb), vec![0.5, 1.0, 0.5]);
    let x = t64(vec![1.0, 3.0, 3.0, -2.0, -2.0, 0.0], &[2, 3]);
    let g = grad(|x: Tensor| x.max()).call(x.clone()).unwrap();
    assert_eq!(vals(&g), vec![0.0, 0.5, 0.5, 0.0, 0.0, 0.0]);
    let g = grad(|x: Tensor| x.min_along(&[1], false).sum())
        .call(x)
        .unwrap();
    assert_eq!(vals(&g), vec![1.0, 0.0, 0.0, 0.5, 0.5, 0.0]);
}

/// Nested derivatives keep their levels apart (no perturbation confusion): with
/// `g(x) = x * d/dy (x * y)`, `g(x) = x^2` and `g'(x) = 2x`, not `x` or `3x`.
#[test]
fn nested_levels_are_not_confused() {
    for x0 in [-1.5, 0.5, 2.0] {
        let y0 = s64(0.3);
        let d = grad(|x: Tensor| -> Res { Ok(&x * &grad(|y: Tensor| &x * &y).call(y0.clone())?) })
            .call(s64(x0))
            .unwrap();
        assert!(
            close(item(&d), 2.0 * x0, 1e-14),
            "at {x0}: {} vs {}",
            item(&d),
            2.0 * x0
        );
        // d/dx [ d/dy exp(x*y) at y=1 ] = d/dx [x e^x] = (1 + x) e^x.
        let d = grad(|x: Tensor| grad(|y: Tensor| (&x * &y).exp()).call(s64(1.0)))
            .call(s64(x0))
            .unwrap();
        let want = (1.0 + x0) * x0.exp();
        assert!(
            close(item(&d), want, 1e-13),
            "at {x0}: {} vs {want}",
            item(&d)
        );
    }
}

/// The Hessian of a vector-valued function has shape `out + in + in`, one block per output.
#[test]
fn hessian_of_vector_output() {
    let mut r = Rng(99);
    for dtype in [DType::F64, DType::F32] {
        let x0 = any(&mut r, &[3]).cast(dtype);
        let h = hessian(|x: Tensor| Tensor::stack(&[&x.powf(3.0).sum(), &x.sin().sum()], 0))
            .call(x0.clone())
            .unwrap();
        assert_eq!(h.shape(), &[2, 3, 3]);
        assert_eq!(h.dtype(), dtype);
        let xv = vals(&x0);
        let want: Vec<f64> = (0..18)
            .map(|k| {
                let (o, i, j) = (k / 9, (k / 3) % 3, k % 3);
                match (o, i == j) {
                    (0, true) => 6.0 * xv[i],
                    (1, true) => -xv[i].sin(),
                    _ => 0.0,
                }
            })
            .collect();
        let tol = if dtype == DType::F64 { 1e-12 } else { F32_RTOL };
        assert_close(
            "stack(sum x^3, sum sin x)",
            "hessian",
            &vals(&h),
            &want,
            tol,
            tol,
        );
    }
}

/// `jit` gives the eager numbers on every table entry, on the trace and on replays (with new
/// inputs of the same shapes), for the function and for its gradient function.
#[test]
fn jit_matches_eager_on_every_primitive() {
    for (i, case) in cases().iter().enumerate() {
        let mut r = Rng(0xA11C_E000 + i as u64);
        let f = case.f;
        let jf = stategrad::jit(move |(xs,): (Vec<Tensor>,)| f(&xs));
        let g = grad_fn(case.f);
        let jg = stategrad::jit(move |(xs,): (Vec<Tensor>,)| g(&xs));
        for round in 0..3 {
            let xs = (case.gen)(&mut r);
            let want = (case.f)(&xs).unwrap();
            let got = jf.call((xs.clone(),)).unwrap();
            assert_close(
                case.name,
                &format!("jit round {round}"),
                &vals(&got),
                &vals(&want),
                1e-12,
                1e-12,
            );
            let mut xc = xs.clone();
            xc.push(rand_like(&mut r, &want));
            let gw = grad_fn(case.f)(&xc).unwrap();
            let gg = jg.call((xc,)).unwrap();
            assert_close(
                case.name,
                &format!("jit(grad) round {round}"),
                &vals(&gg),
                &vals(&gw),
                1e-12,
                1e-12,
            );
        }
        assert_eq!(jf.trace_count(), 1, "{}: retraced", case.name);
        assert_eq!(jg.trace_count(), 1, "{}: retraced", case.name);
    }
}

/// `vmap` over a batch of three inputs equals a loop over them, for every table entry and for
/// its gradient function: every primitive's batch rule, forward and backward.
#[test]
fn vmap_matches_a_loop_on_every_primitive() {
    for (i, case) in cases().iter().enumerate() {
        let mut r = Rng(0xBA7C_0000 + i as u64);
        let examples: Vec<Vec<Tensor>> = (0..3).map(|_| (case.gen)(&mut r)).collect();
        let n_in = examples[0].len();
        let stacked: Vec<Tensor> = (0..n_in)
            .map(|k| {
                let parts: Vec<&Tensor> = examples.iter().map(|e| &e[k]).collect();
                Tensor::stack(&parts, 0)
            })
            .collect();
        let f = case.f;
        let got = vmap(move |(xs,): (Vec<Tensor>,)| f(&xs))
            .call((stacked.clone(),))
            .unwrap();
        for (b, e) in examples.iter().enumerate() {
            let want = (case.f)(e).unwrap();
            assert_close(
                case.name,
                &format!("vmap example {b}"),
                &vals(&got.at(b as isize)),
                &vals(&want),
                1e-12,
                1e-12,
            );
        }
        // The gradient function, batched over the point and the cotangent.
        let cots: Vec<Tensor> = examples
            .iter()
            .map(|e| rand_like(&mut r, &(case.f)(e).unwrap()))
            .collect();
        let cot_refs: Vec<&Tensor> = cots.iter().collect();
        let mut with_cot = stacked.clone();
        with_cot.push(Tensor::stack(&cot_refs, 0));
        let g = grad_fn(case.f);
        let got = vmap(move |(xs,): (Vec<Tensor>,)| g(&xs))
            .call((with_cot,))
            .unwrap();
        for (b, e) in examples.iter().enumerate() {
            let mut xc = e.clone();
            xc.push(cots[b].clone());
            let want = grad_fn(case.f)(&xc).unwrap();
            assert_close(
                case.name,
                &format!("vmap(grad) example {b}"),
                &vals(&got.at(b as isize)),
                &vals(&want),
                1e-12,
                1e-12,
            );
        }
    }
}

/// Slices with positive and negative steps and their transposes lower to the arena's slice
/// kernels, and its replays give the eager numbers (value and gradient, on new inputs).
#[test]
fn slices_lower_to_the_arena() {
    let loss = |x: Tensor| {
        let a = x.slice(s![1..;2, ..;-1]);
        let b = x.slice(s![..;-2, 1..3]);
        (a.square().sum() + b.sin().sum()) * 0.5
    };
    let jg = stategrad::jit(move |x: Tensor| grad(loss).call(x).unwrap());
    let mut r = Rng(0x511CE);
    for _ in 0..3 {
        let x = any(&mut r, &[5, 4]);
        let want = grad(loss).call(x.clone()).unwrap();
        let got = jg.call(x).unwrap();
        assert_close("slices", "arena", &vals(&got), &vals(&want), 1e-12, 1e-12);
    }
    let stats = jg.program_stats();
    assert!(stats.iter().all(|s| s.arena), "{stats:?}");
}
