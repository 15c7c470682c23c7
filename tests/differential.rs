//! The differential tester: random programs over every primitive family, run through every
//! execution path the engine has, must agree.
//!
//! A program is a chain of tensor operations over one argument `x` and one state `s` of the same
//! shape: element-wise unary and binary ops (a user-defined `custom_vjp` function among them),
//! scalar operands, full and axis reductions that feed back into the chain (`v - v.sum()`),
//! broadcasts, matmuls, reshapes, slices (strided, negative steps) with concat, `where`, and
//! optionally a write of the state. Shapes are drawn from lengths on both sides of every
//! threshold of the engine (SIMD lanes, 64, the 256-element fused block, 1024 where fused passes
//! start and get code, the 8K fused chunk (split over the pool and not), 16K, the 32K arena
//! limit, the 64K parallel chunk), in f32 and f64. Each program runs:
//!
//! - eagerly (the reference);
//! - through `jit`: the trace, then replays on the arena or with fused passes, with native code
//!   (arena programs switch after 2 runs, fused passes at once) and with code generation off
//!   (closures and block kernels);
//! - through `grad` eagerly, `jit(grad(f))` and `grad(jit(f))` (a recorded, unfused replay);
//! - through `vmap` over a batch of three arguments.
//!
//! Replays agree bit for bit with each other and generated code with the block kernels and
//! closures (the design promises it); every path agrees with eager to a tolerance (fused sums
//! add in another order). A mismatch is shrunk (ops removed, shapes made smaller) and printed
//! with its seed. `STATEGRAD_FUZZ_CASES=n` runs `n` programs (default: as many as fit in
//! `STATEGRAD_FUZZ_SECS`, 20 s); `STATEGRAD_FUZZ_SEED` picks the first seed.

#[path = "common/rng.rs"]
mod rng;

use rng::Rng;
use stategrad::exec::tuning;
use stategrad::prelude::*;
use stategrad::{jit, s, vmap, where_, SliceElem};
use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Lengths on both sides of every size threshold of the engine.
const LENGTHS: [usize; 25] = [
    1, 3, 8, 15, 16, 17, 63, 64, 65, 255, 256, 257, 1023, 1024, 1025, 8191, 8192, 8193, 16383,
    16384, 16385, 32767, 32768, 32769, 65537,
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Un {
    Neg,
    Exp,
    Tanh,
    Sigmoid,
    Relu,
    Sin,
    Cos,
    Abs,
    Square,
    /// `sqrt(1 + v²)` (sqrt of a positive value).
    Sqrt,
    /// `1 / (1 + v²)`.
    Recip,
    /// `log(1 + v²)`.
    Log,
    /// `log1p(v²)`.
    Log1p,
    Erf,
    /// `log(1 + e^v)` as a user-defined function with its own VJP rule (`custom_vjp`).
    Softplus,
}

/// The user-defined `softplus` of [`Un::Softplus`].
static SOFTPLUS: std::sync::LazyLock<stategrad::CustomFn> = std::sync::LazyLock::new(|| {
    stategrad::custom_vjp(
        "softplus",
        |x: &[Tensor]| Ok(x[0].relu() + ((-x[0].abs()).exp() + 1.0).log()),
        |a: &stategrad::VjpArgs| Ok(vec![a.g() * a.input(0).sigmoid()]),
    )
});

const UNARY: [Un; 15] = [
    Un::Neg,
    Un::Exp,
    Un::Tanh,
    Un::Sigmoid,
    Un::Relu,
    Un::Sin,
    Un::Cos,
    Un::Abs,
    Un::Square,
    Un::Sqrt,
    Un::Recip,
    Un::Log,
    Un::Log1p,
    Un::Erf,
    Un::Softplus,
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Bin {
    Add,
    Sub,
    Mul,
    /// `a / (1 + b²)`.
    Div,
    Max,
    Min,
}

const BINARY: [Bin; 6] = [Bin::Add, Bin::Sub, Bin::Mul, Bin::Div, Bin::Max, Bin::Min];

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Unary(Un, usize),
    Binary(Bin, usize, usize),
    /// `v op c` with a constant scalar.
    Scalar(Bin, usize, f64),
    /// `v - v.sum() / n`: a full sum read back by the chain that made it.
    Centre(usize),
    /// `v * w.mean()`.
    ScaleByMean(usize, usize),
    /// `v / (1 + max(v)²)`.
    NormMax(usize),
    /// `v - v.sum_along(axis, keepdims)`: an axis reduction broadcast back (rank 2).
    AxisCentre(usize, isize),
    /// `v @ w` with a constant square `w` (rank 2: keeps the shape).
    MatMul(usize),
    /// `v * (v @ w)` with a constant column `w` (rank 2): a matrix-vector product (rows four at
    /// a time in `dot`'s rounding, or inline in generated code) broadcast back.
    RowDots(usize),
    /// `v.reshape([-1]) * c` reshaped back.
    Flat(usize, f64),
    /// `concat(v[k..], v[..k])` along axis 0 (a rotation: slices and a concat).
    Rotate(usize, usize),
    /// `where(a > 0, b, c)`.
    Where(usize, usize, usize),
    /// `v * s` (a state read).
    State(usize),
    /// `v + vector` broadcast along the last axis (a constant of the last axis's length).
    AddRow(usize),
    /// `v.t()` (square rank 2) or `v.reshape([1, n]).t().reshape(shape)` (a permute).
    Transpose(usize),
    /// `softmax` along the last axis.
    Softmax(usize),
    /// `v - logsumexp(v)` along the last axis (keepdims).
    LogSoftmax(usize),
    /// `v - max_along(v, axis)` and `min_along` (keepdims).
    MaxCentre(usize, bool),
    /// `(1 + v²) ^ c`.
    Pow(usize, f64),
    /// `v.cast(other).op.cast(back)`: a round trip through the other dtype.
    Cast(usize),
    /// `v / 2 + v.max_along([0], true).broadcast_to(shape)`. A maximum is exact (a sum of a
    /// centred value is rounding noise, which a later sum would amplify past any fair
    /// tolerance), and the `v / 2` keeps the result from being constant: centring a constant
    /// vector gives rounding noise that differs by summation order, and a later `min`, `max`
    /// or `where` against it picks sides by that noise (seed 734256: `min(centre(c), state)`).
    Broadcast(usize),
    /// `v.take_along_axis(idx, -1)` with constant indices of `v`'s shape (repeats included):
    /// a gather, whose derivative is a scatter-add.
    Gather(usize),
    /// `v.scatter_add(-1, idx, w)` with constant indices of `v`'s shape (repeats accumulate).
    ScatterAdd(usize, usize),
    /// A permutation by two strided slices along the first (`false`) or last axis:
    /// `concat(v[0::2], v[1::2])`, or with `true` the negative steps `concat(v[::-2], v[-2::-2])`
    /// (numpy spelling); `flip` on an axis of length 1.
    Stride(usize, bool, bool),
}

impl Op {
    fn operands_mut(&mut self) -> Vec<&mut usize> {
        match self {
            Op::Unary(_, a)
            | Op::Scalar(_, a, _)
            | Op::Centre(a)
            | Op::NormMax(a)
            | Op::AxisCentre(a, _)
            | Op::MatMul(a)
            | Op::RowDots(a)
            | Op::Flat(a, _)
            | Op::Rotate(a, _)
            | Op::State(a)
            | Op::AddRow(a)
            | Op::Transpose(a)
            | Op::Softmax(a)
            | Op::LogSoftmax(a)
            | Op::MaxCentre(a, _)
            | Op::Pow(a, _)
            | Op::Cast(a)
            | Op::Broadcast(a)
            | Op::Gather(a)
            | Op::Stride(a, _, _) => vec![a],
            Op::Binary(_, a, b) | Op::ScaleByMean(a, b) | Op::ScatterAdd(a, b) => vec![a, b],
            Op::Where(a, b, c) => vec![a, b, c],
        }
    }
}

#[derive(Clone)]
struct Program {
    seed: u64,
    shape: Vec<usize>,
    dtype: DType,
    ops: Vec<Op>,
    /// The state is written (`s = 0.5 * s + 0.5 * tanh(out)`) after the chain.
    writes: bool,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "program seed={} shape={:?} dtype={:?} writes_state={}",
            self.seed, self.shape, self.dtype, self.writes
        )?;
        for (k, op) in self.ops.iter().enumerate() {
            writeln!(f, "  v{} = {op:?}", k + 2)?;
        }
        Ok(())
    }
}

impl Program {
    fn random(seed: u64) -> Program {
        let mut r = Rng(seed);
        let shape = match r.below(3) {
            0 => vec![r.pick(&LENGTHS)],
            1 => {
                let rows = r.pick(&[1, 2, 3, 8, 16, 64, 128, 256]);
                let total = r.pick(&LENGTHS).max(rows);
                vec![rows, total.div_ceil(rows)]
            }
            _ => {
                let n = r.pick(&[1, 4, 7, 16, 33, 64, 100, 181, 256]);
                vec![n, n]
            }
        };
        let dtype = if r.below(2) == 0 {
            DType::F32
        } else {
            DType::F64
        };
        let n_ops = 1 + r.below(12);
        let mut ops = Vec::with_capacity(n_ops);
        for k in 0..n_ops {
            let live = k + 2; // v0 = x, v1 = s.value(), then one value per op
                              // Recent values are likelier operands: long chains, as real programs have.
            let v = |r: &mut Rng| {
                if r.below(3) == 0 {
                    r.below(live)
                } else {
                    live - 1 - r.below(live.min(3))
                }
            };
            let rank2 = shape.len() == 2;
            let op = match r.below(26) {
                0..=3 => Op::Unary(r.pick(&UNARY), v(&mut r)),
                4..=6 => Op::Binary(r.pick(&BINARY), v(&mut r), v(&mut r)),
                7 => Op::Scalar(r.pick(&BINARY), v(&mut r), r.unit() * 4.0 - 2.0),
                8 => Op::Centre(v(&mut r)),
                9 => Op::ScaleByMean(v(&mut r), v(&mut r)),
                10 => Op::NormMax(v(&mut r)),
                11 if rank2 => Op::AxisCentre(v(&mut r), r.pick(&[0, 1, -1])),
                11 => Op::Flat(v(&mut r), r.unit() + 0.5),
                12 if rank2 && shape[0] == shape[1] && shape[0] <= 256 => Op::MatMul(v(&mut r)),
                12 if rank2 => Op::RowDots(v(&mut r)),
                12 => Op::AddRow(v(&mut r)),
                13 => {
                    let k = r.below(shape[0] + 1);
                    Op::Rotate(v(&mut r), k)
                }
                // The condition is an input: a computed one can sit within rounding of 0,
                // where paths that round differently rightly pick different branches.
                14 => Op::Where(r.below(2), v(&mut r), v(&mut r)),
                15 => Op::Transpose(v(&mut r)),
                16 => Op::Softmax(v(&mut r)),
                17 => Op::LogSoftmax(v(&mut r)),
                18 => Op::MaxCentre(v(&mut r), r.below(2) == 0),
                19 => Op::Pow(v(&mut r), r.unit() * 3.0 - 1.0),
                20 => Op::Cast(v(&mut r)),
                21 => Op::Broadcast(v(&mut r)),
                22 => Op::Gather(v(&mut r)),
                23 => Op::ScatterAdd(v(&mut r), v(&mut r)),
                24 => Op::Stride(v(&mut r), r.below(2) == 0, r.below(2) == 0),
                _ => Op::State(v(&mut r)),
            };
            ops.push(op);
        }
        Program {
            seed,
            shape,
            dtype,
            ops,
            writes: r.below(3) == 0,
        }
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Deterministic inputs of the program's shape and dtype (`k` picks one of several).
    fn input(&self, k: u64) -> Tensor {
        let mut r = Rng(self.seed ^ (0xA5A5 + k));
        let data: Vec<f64> = (0..self.numel()).map(|_| r.unit() * 4.0 - 2.0).collect();
        Tensor::from_vec(data, &self.shape)
            .unwrap()
            .cast(self.dtype)
    }

    fn constant(&self, salt: u64, shape: &[usize], scale: f64) -> Tensor {
        let mut r = Rng(self.seed ^ salt.wrapping_mul(0x9E37));
        let n: usize = shape.iter().product();
        let data: Vec<f64> = (0..n).map(|_| (r.unit() * 2.0 - 1.0) * scale).collect();
        Tensor::from_vec(data, shape).unwrap().cast(self.dtype)
    }

    /// Constant indices of the program's shape into its last axis (every value equally likely, so
    /// repeats occur).
    fn indices(&self, salt: u64) -> Tensor {
        let mut r = Rng(self.seed ^ salt.wrapping_mul(0x51ED));
        let last = *self.shape.last().unwrap() as u64;
        let data: Vec<i64> = (0..self.numel())
            .map(|_| (r.next_u64() % last) as i64)
            .collect();
        Tensor::from_vec(data, &self.shape).unwrap()
    }

    /// The program itself: what every path runs.
    fn eval(&self, x: &Tensor, s: &State) -> Tensor {
        self.eval_tracked(x, s, None)
    }

    /// `eval`, recording in `magnitude` the largest magnitude of any value it makes (eager only:
    /// the scale to which a result that cancels large values is exact).
    fn eval_tracked(&self, x: &Tensor, s: &State, magnitude: Option<&Cell<f64>>) -> Tensor {
        let mut vals: Vec<Tensor> = vec![x.clone(), s.value()];
        let one_plus_sq = |t: &Tensor| t.square() + 1.0;
        for (k, op) in self.ops.iter().enumerate() {
            let out = match op {
                Op::Unary(u, a) => {
                    let a = &vals[*a];
                    match u {
                        Un::Neg => -a,
                        Un::Exp => a.tanh().exp(),
                        Un::Tanh => a.tanh(),
                        Un::Sigmoid => a.sigmoid(),
                        Un::Relu => a.relu(),
                        Un::Sin => a.sin(),
                        Un::Cos => a.cos(),
                        Un::Abs => a.abs(),
                        Un::Square => a.tanh().square(),
                        Un::Sqrt => one_plus_sq(a).sqrt(),
                        Un::Recip => one_plus_sq(a).recip(),
                        Un::Log => one_plus_sq(a).log(),
                        Un::Log1p => a.square().log1p(),
                        Un::Erf => a.erf(),
                        Un::Softplus => SOFTPLUS.apply(&[a]),
                    }
                }
                Op::Binary(b, a, c) => bin(*b, &vals[*a], &vals[*c]),
                Op::Scalar(b, a, c) => bin(*b, &vals[*a], &Tensor::scalar_of(*c, self.dtype)),
                Op::Centre(a) => {
                    let v = &vals[*a];
                    v - &(v.sum() / self.numel() as f64)
                }
                Op::ScaleByMean(a, c) => &vals[*a] * &vals[*c].mean(),
                Op::NormMax(a) => {
                    let v = &vals[*a];
                    v / &one_plus_sq(&v.max())
                }
                Op::AxisCentre(a, axis) => {
                    let v = &vals[*a];
                    let n = self.shape[axis.rem_euclid(2) as usize] as f64;
                    v - &(v.sum_along(&[*axis], true) / n)
                }
                Op::MatMul(a) => {
                    let n = self.shape[0];
                    let w = self.constant(k as u64, &[n, n], 1.0 / (n as f64).sqrt());
                    vals[*a].matmul(&w)
                }
                Op::RowDots(a) => {
                    let c = self.shape[1];
                    let w = self.constant(400 + k as u64, &[c, 1], 1.0 / (c as f64).sqrt());
                    &vals[*a] * &vals[*a].matmul(&w)
                }
                Op::Flat(a, c) => {
                    let flat = vals[*a].reshape(&[-1]) * *c;
                    let back: Vec<isize> = self.shape.iter().map(|&d| d as isize).collect();
                    flat.reshape(&back)
                }
                Op::Rotate(a, at) => {
                    let v = &vals[*a];
                    let n = self.shape[0];
                    let at = (*at).min(n);
                    if at == 0 || at == n {
                        v.clone()
                    } else {
                        Tensor::concat(&[&v.slice_axis(0, at, n), &v.slice_axis(0, 0, at)], 0)
                    }
                }
                Op::Where(a, b, c) => where_(&vals[*a].gt_scalar(0.0), &vals[*b], &vals[*c]),
                Op::Gather(a) => vals[*a].take_along_axis(&self.indices(200 + k as u64), -1),
                Op::ScatterAdd(a, b) => {
                    vals[*a].scatter_add(-1, &self.indices(300 + k as u64), &(&vals[*b] * 0.5))
                }
                Op::State(a) => &vals[*a] * &s.value(),
                Op::AddRow(a) => {
                    let last = *self.shape.last().unwrap();
                    &vals[*a] + &self.constant(100 + k as u64, &[last], 1.0)
                }
                Op::Transpose(a) => {
                    let v = &vals[*a];
                    if self.shape.len() == 2 && self.shape[0] == self.shape[1] {
                        v.t()
                    } else {
                        let n = self.numel() as isize;
                        let back: Vec<isize> = self.shape.iter().map(|&d| d as isize).collect();
                        v.reshape(&[1, n]).t().reshape(&back)
                    }
                }
                Op::Softmax(a) => vals[*a].softmax(-1),
                Op::LogSoftmax(a) => {
                    let v = &vals[*a];
                    v - &v.logsumexp(&[-1], true)
                }
                Op::MaxCentre(a, max) => {
                    let v = &vals[*a];
                    if *max {
                        v - &v.max_along(&[-1], true)
                    } else {
                        v - &v.min_along(&[0], true)
                    }
                }
                Op::Pow(a, c) => one_plus_sq(&vals[*a]).powf(*c),
                Op::Cast(a) => {
                    let other = if self.dtype == DType::F32 {
                        DType::F64
                    } else {
                        DType::F32
                    };
                    (vals[*a].cast(other) * 0.5).cast(self.dtype)
                }
                Op::Broadcast(a) => {
                    let v = &vals[*a];
                    0.5 * v + v.max_along(&[0], true).broadcast_to(&self.shape)
                }
                Op::Stride(a, last, reversed) => {
                    let v = &vals[*a];
                    let axis = if *last { self.shape.len() - 1 } else { 0 };
                    if self.shape[axis] < 2 {
                        v.flip(&[axis as isize])
                    } else {
                        let on_axis = |e: SliceElem| {
                            let mut index = vec![SliceElem::from(..); self.shape.len()];
                            index[axis] = e;
                            v.slice(index)
                        };
                        let (p, q) = if *reversed {
                            (
                                on_axis(SliceElem::numpy(None, None, -2)),
                                on_axis(SliceElem::numpy(Some(-2), None, -2)),
                            )
                        } else {
                            (on_axis(s![..;2][0]), on_axis(s![1..;2][0]))
                        };
                        Tensor::concat(&[&p, &q], axis as isize)
                    }
                }
            };
            if let Some(m) = magnitude {
                let big = out.to_f64_vec().iter().fold(0.0f64, |a, v| a.max(v.abs()));
                m.set(m.get().max(big));
            }
            vals.push(out);
        }
        let out = vals.pop().unwrap();
        if self.writes {
            s.set_value(s.value() * 0.5 + out.tanh() * 0.5);
        }
        out
    }

    /// A scalar loss of the program's output (a weighted sum, so every element matters).
    fn loss(&self, x: &Tensor, s: &State) -> Tensor {
        let w = self.constant(999, &self.shape, 1.0);
        (self.eval(x, s) * w).sum()
    }

    /// Smaller variants, for shrinking: each op removed (its readers read `x` instead), and the
    /// shape made smaller.
    fn shrinks(&self) -> Vec<Program> {
        let mut out = Vec::new();
        for k in 0..self.ops.len() {
            if self.ops.len() == 1 {
                break;
            }
            let mut p = self.clone();
            p.ops.remove(k);
            let removed = k + 2;
            for op in &mut p.ops[k..] {
                for o in op.operands_mut() {
                    if *o == removed {
                        *o = 0;
                    } else if *o > removed {
                        *o -= 1;
                    }
                }
            }
            out.push(p);
        }
        if self.writes {
            let mut p = self.clone();
            p.writes = false;
            out.push(p);
        }
        for &n in LENGTHS.iter().rev() {
            if self.shape.len() == 1 && n < self.shape[0] {
                let mut p = self.clone();
                p.shape = vec![n];
                out.push(p);
            }
        }
        out
    }
}

fn bin(b: Bin, x: &Tensor, y: &Tensor) -> Tensor {
    match b {
        Bin::Add => x + y,
        Bin::Sub => x - y,
        Bin::Mul => x * y,
        Bin::Div => x / &(y.square() + 1.0),
        Bin::Max => x.maximum(y),
        Bin::Min => x.minimum(y),
    }
}

/// What one path produced: its outputs, in order, named.
type Results = Vec<(String, Tensor)>;

/// Equal within `rtol` relative to each element and to the largest magnitude of the reference or
/// of the program's values (`magnitude`: a sum that cancels large values is exact only to their
/// scale); NaNs must match.
fn close(a: &Tensor, b: &Tensor, rtol: f64, magnitude: f64) -> Result<(), String> {
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        return Err(format!(
            "shape/dtype {:?} {:?} vs {:?} {:?}",
            a.shape(),
            a.dtype(),
            b.shape(),
            b.dtype()
        ));
    }
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    let scale = y.iter().fold(magnitude, |m, v| m.max(v.abs()));
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        let ok = (p.is_nan() && q.is_nan())
            || p == q
            || (p - q).abs() <= rtol * (1.0 + p.abs().max(q.abs()) + scale);
        if !ok {
            return Err(format!("element {i}: {p} vs {q} (scale {scale})"));
        }
    }
    Ok(())
}

fn identical(a: &Tensor, b: &Tensor) -> Result<(), String> {
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    if a.shape() != b.shape() || x.len() != y.len() {
        return Err("shapes differ".into());
    }
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        if p.to_bits() != q.to_bits() && !(p.is_nan() && q.is_nan()) {
            return Err(format!("element {i}: {p:e} vs {q:e} (not bit for bit)"));
        }
    }
    Ok(())
}

/// The state's initial value for a program (fixed, so every path starts from the same one).
fn fresh_state(p: &Program) -> State {
    State::new(p.input(7)).named("s")
}

/// How many programs took each form (so a run shows that every path was exercised).
static ARENA_NATIVE: AtomicUsize = AtomicUsize::new(0);
static ARENA_CLOSURES: AtomicUsize = AtomicUsize::new(0);
static FUSED: AtomicUsize = AtomicUsize::new(0);
static PLAIN: AtomicUsize = AtomicUsize::new(0);
/// Compiled loops whose iterations ran on one arena.
static LOOPS: AtomicUsize = AtomicUsize::new(0);
/// Those that ran as one generated function.
static NATIVE_LOOPS: AtomicUsize = AtomicUsize::new(0);

/// Run `calls` of a jitted program from a fresh state, returning outputs and state after each.
fn jit_path(p: &Program, x: &Tensor, calls: usize) -> Result<Results, String> {
    let s = fresh_state(p);
    let f = jit(|x: Tensor| p.eval(&x, &s));
    let mut out = Vec::new();
    for c in 0..calls {
        let y = f
            .call(x.clone())
            .map_err(|e| format!("jit call {c}: {e}"))?;
        out.push((format!("jit call {c}"), y));
        out.push((format!("jit call {c} state"), s.value()));
    }
    for st in f.program_stats() {
        let counter = match st {
            _ if st.native => &ARENA_NATIVE,
            _ if st.arena => &ARENA_CLOSURES,
            _ if st.fused_passes > 0 => &FUSED,
            _ => &PLAIN,
        };
        counter.fetch_add(1, Relaxed);
    }
    Ok(out)
}

/// The tuning settings `check` switches are process-wide: one check at a time, so that each
/// comparison runs under the settings it names (the two tests of this binary run in parallel).
static TUNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Every path of one program; `Err` names the first disagreement.
fn check(p: &Program) -> Result<(), String> {
    let _turn = TUNING.lock().unwrap_or_else(|e| e.into_inner());
    let x = p.input(0);
    // A round trip through f32 (and CSE of it) leaves f32's precision in an f64 program.
    let f32_precision = p.dtype == DType::F32 || p.ops.iter().any(|o| matches!(o, Op::Cast(_)));
    let rtol = if f32_precision { 2e-4 } else { 1e-10 };
    let magnitude = Cell::new(0.0f64);

    // Eager: the reference, three calls (the state evolves when written).
    let s = fresh_state(p);
    let mut eager = Vec::new();
    for c in 0..3 {
        eager.push((
            format!("eager {c}"),
            p.eval_tracked(&x, &s, Some(&magnitude)),
        ));
        eager.push((format!("eager {c} state"), s.value()));
    }
    let finite = eager
        .iter()
        .all(|(_, t)| t.to_f64_vec().iter().all(|v| v.is_finite()));
    if !finite {
        return Ok(()); // overflowed programs say nothing about the paths
    }
    let mag = magnitude.get();

    // jit with native code early (arena code after 2 runs, fused code at once) ...
    tuning::set_codegen_enabled(true);
    tuning::set_arena_native_after_runs(2);
    tuning::set_fused_native_after_elements(0);
    // Every fused pass of more than one chunk split over the pool here, none below: the split
    // must not change a bit.
    tuning::set_fused_par_min_work(0);
    let native = jit_path(p, &x, 4)?;
    // ... and with code generation off (closures, block kernels).
    tuning::set_codegen_enabled(false);
    tuning::set_fused_par_min_work(usize::MAX);
    let plain = jit_path(p, &x, 4)?;
    tuning::set_codegen_enabled(true);
    tuning::set_fused_par_min_work(stategrad::exec::FUSED_PAR_MIN_WORK);
    for (k, ((name, a), (_, b))) in native.iter().zip(&plain).enumerate() {
        if let Some((_, want)) = eager.get(k) {
            close(a, want, rtol, mag).map_err(|e| format!("{name} (native) vs eager: {e}"))?;
            close(b, want, rtol, mag).map_err(|e| format!("{name} (no codegen) vs eager: {e}"))?;
        }
        identical(a, b).map_err(|e| format!("{name}: native vs no codegen: {e}"))?;
    }
    // Replays of a program that writes no state give the same bits every time.
    if !p.writes {
        for c in 2..4 {
            identical(&native[2 * c].1, &native[2].1)
                .map_err(|e| format!("replay {c} vs replay 1: {e}"))?;
        }
    }

    // A compiled loop of three iterations (the first a call, the rest on one arena: as one
    // native function for the whole loop, or closures) ends where three eager calls end. Run
    // twice, so the second finds the loop's code already generated.
    let mut looped = Vec::new();
    for native in [true, false] {
        tuning::set_codegen_enabled(native);
        let s = fresh_state(p);
        let s0 = s.value();
        let body = jit(|_i: Tensor| p.eval(&x, &s));
        for c in 0..2 {
            s.set_value(s0.clone());
            let y = body.call_loop(3).map_err(|e| format!("loop {c}: {e}"))?;
            looped.push((format!("loop {c} (native {native})"), y, s.value()));
        }
        let stats = body.program_stats();
        LOOPS.fetch_add(stats.iter().filter(|st| st.arena).count(), Relaxed);
        NATIVE_LOOPS.fetch_add(stats.iter().filter(|st| st.native_loop).count(), Relaxed);
    }
    tuning::set_codegen_enabled(true);
    for (name, y, st) in &looped {
        close(y, &eager[4].1, rtol, mag).map_err(|e| format!("{name} vs eager: {e}"))?;
        close(st, &eager[5].1, rtol, mag).map_err(|e| format!("{name} state vs eager: {e}"))?;
        identical(y, &looped[0].1).map_err(|e| format!("{name} vs native loop 0: {e}"))?;
        identical(st, &looped[0].2).map_err(|e| format!("{name} state vs native loop 0: {e}"))?;
    }

    // grad: eager, jit(grad), grad(jit).
    let s = fresh_state(p);
    let g_eager = grad(|x: Tensor| p.loss(&x, &s))
        .grad_states(s.clone())
        .argnums(0)
        .call(x.clone())
        .map_err(|e| format!("eager grad: {e}"))?;
    // Forward mode (the pullback transposed from an abstract cotangent), a column per input
    // element: the same gradient.
    if p.numel() <= 256 {
        let s = fresh_state(p);
        let jf = stategrad::jacfwd(|x: Tensor| p.loss(&x, &s))
            .call(x.clone())
            .map_err(|e| format!("jacfwd: {e}"))?;
        close(&jf, &g_eager.1, rtol * 10.0, mag).map_err(|e| format!("jacfwd vs grad: {e}"))?;
    }
    let s = fresh_state(p);
    let jg = jit(|x: Tensor| {
        grad(|x: Tensor| p.loss(&x, &s))
            .grad_states(s.clone())
            .argnums(0)
            .call(x)
    });
    let jl = jit(|x: Tensor| p.loss(&x, &s));
    let gj = grad(|x: Tensor| jl.call(x))
        .grad_states(s.clone())
        .argnums(0);
    type GradPath<'a> = &'a dyn Fn(Tensor) -> stategrad::Result<(Tensor, Tensor)>;
    let paths: [(&str, GradPath); 2] = [
        ("jit(grad)", &|x| jg.call(x)),
        ("grad(jit)", &|x| gj.call(x)),
    ];
    for (name, path) in paths {
        for c in 0..2 {
            s.set_value(p.input(7));
            let g = path(x.clone()).map_err(|e| format!("{name} {c}: {e}"))?;
            close(&g.0, &g_eager.0, rtol * 10.0, mag)
                .map_err(|e| format!("{name} {c} state: {e}"))?;
            close(&g.1, &g_eager.1, rtol * 10.0, mag).map_err(|e| format!("{name} {c} x: {e}"))?;
        }
    }

    // vmap over three examples (state read, not written: a batched write has no meaning here).
    if !p.writes && p.numel() <= 1 << 14 {
        let s = fresh_state(p);
        let xs: Vec<Tensor> = (0..3).map(|k| p.input(k)).collect();
        let refs: Vec<&Tensor> = xs.iter().collect();
        let batch = Tensor::stack(&refs, 0);
        let got = vmap(|x: Tensor| p.eval(&x, &s))
            .call(batch)
            .map_err(|e| format!("vmap: {e}"))?;
        for (k, xk) in xs.iter().enumerate() {
            let want = p.eval(xk, &s);
            close(&got.at(k as isize), &want, rtol, mag)
                .map_err(|e| format!("vmap row {k}: {e}"))?;
        }
    }
    Ok(())
}

/// `check`, with a panic counted as a mismatch.
fn run_case(p: &Program) -> Result<(), String> {
    std::panic::catch_unwind(|| check(p)).unwrap_or_else(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
        Err(format!("panic: {msg:?}"))
    })
}

/// Shrink a failing program to a smallest one that still fails.
fn shrink(mut p: Program, mut err: String) -> (Program, String) {
    'outer: loop {
        for q in p.shrinks() {
            if let Err(e) = run_case(&q) {
                (p, err) = (q, e);
                continue 'outer;
            }
        }
        return (p, err);
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn every_execution_path_agrees_on_random_programs() {
    let cases = env_u64("STATEGRAD_FUZZ_CASES");
    let budget = Duration::from_secs(env_u64("STATEGRAD_FUZZ_SECS").unwrap_or(20));
    let first = env_u64("STATEGRAD_FUZZ_SEED").unwrap_or(1);
    let start = Instant::now();
    let (mut ran, mut failures) = (0u64, Vec::new());
    for seed in first.. {
        match cases {
            Some(n) if ran >= n => break,
            None if start.elapsed() >= budget => break,
            _ => {}
        }
        let p = Program::random(seed);
        let outcome = run_case(&p);
        ran += 1;
        if let Err(e) = outcome {
            let (small, e) = shrink(p, e);
            eprintln!("MISMATCH (seed {seed}): {e}\n{small:?}");
            failures.push(seed);
            if failures.len() >= 5 {
                break;
            }
        }
    }
    tuning::set_codegen_enabled(true);
    eprintln!(
        "differential: {ran} programs in {:.1} s, {} mismatches {failures:?}; jitted programs: \
         {} arena with native code, {} arena on closures, {} with fused passes, {} plain; \
         {} compiled loops on one arena ({} as one native function)",
        start.elapsed().as_secs_f64(),
        failures.len(),
        ARENA_NATIVE.load(Relaxed),
        ARENA_CLOSURES.load(Relaxed),
        FUSED.load(Relaxed),
        PLAIN.load(Relaxed),
        LOOPS.load(Relaxed),
        NATIVE_LOOPS.load(Relaxed),
    );
    assert!(failures.is_empty(), "mismatching seeds: {failures:?}");
    // Loops on native code were exercised (not merely compiled on closures).
    if stategrad::exec::arena::native_code_enabled() && LOOPS.load(Relaxed) >= 8 {
        assert!(
            NATIVE_LOOPS.load(Relaxed) > 0,
            "no compiled loop ran as native code"
        );
    }
    assert!(
        cases.is_some() || ran >= 10,
        "only {ran} programs ran in the budget"
    );
}

/// Seeds whose programs once exposed a defect (each named by what it found), run on every
/// test run whatever the fuzz budget reaches.
#[test]
fn seeds_that_found_defects_still_agree() {
    let found = [
        // An in-place whole-chunk pass of generated code with exp/sigmoid fallback lanes.
        419_730,
        // `min(centre(c), state)`: a side picked by rounding noise (see `Op::Broadcast`).
        734_256,
    ];
    let failed: Vec<String> = found
        .iter()
        .filter_map(|&seed| {
            let p = Program::random(seed);
            run_case(&p)
                .err()
                .map(|e| format!("seed {seed}: {e}\n{p:?}"))
        })
        .collect();
    // Restored before asserting: other tests in this binary read the switch.
    tuning::set_codegen_enabled(true);
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
