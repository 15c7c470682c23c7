//! Elementwise fusion for `jit`: runs of elementwise primitives over tensors of one size (with
//! scalar operands broadcast) and the full sums that end them become one pass over the data.
//! The pass is [`stategrad_exec::fused`]: fixed chunks spread over rayon, each walked in
//! L1-sized blocks on which every primitive runs its SIMD kernel in turn, so intermediates never
//! travel to memory and only the values needed outside the group are written out.
//!
//! Each primitive says whether and how it fuses ([`crate::prim::Primitive::fusion`]).

use crate::error::Result;
use crate::prim::Fusion;
use crate::tensor::{Buffer, DType, Float, Shape, Tensor};
use stategrad_exec::{self as exec, FusedArg, FusedOp};
use stategrad_simd::{BinaryOp, Par, UnaryOp};
use std::collections::{HashMap, HashSet};

/// Smaller tensors are not worth fusing: a pass that short never gets generated code, and
/// programs of such tensors mostly replay on the arena (W1). From here a pass beats one kernel
/// call per primitive: a 14-op Adam update took 2.2 µs fused against 4.5 µs unfused on 1024
/// positions, 7.5 against 15.5 µs on 8192 (one thread).
pub(crate) const FUSE_MIN: usize = 1 << 10;

/// Where a fused group reads a value from.
#[derive(Clone, Debug)]
pub(crate) enum Input<S> {
    /// A tensor with one element per position.
    Full(S),
    /// A one-element tensor broadcast to every position.
    Scalar(S),
}

/// One fused pass.
#[derive(Debug)]
pub(crate) struct Group<S> {
    pub(crate) n: usize,
    pub(crate) dtype: DType,
    pub(crate) inputs: Vec<Input<S>>,
    pub(crate) ops: Vec<FusedOp>,
    /// The tape node each op computes, and its shape.
    pub(crate) op_nodes: Vec<(u32, Shape)>,
    /// Full sums of an operand: (operand, node, output shape).
    pub(crate) sums: Vec<(FusedArg, u32, Shape)>,
    /// Ops whose values are needed outside the group.
    pub(crate) outputs: Vec<usize>,
    /// Steps that compute nothing new (`x * 1`): their node reads the operand directly.
    pub(crate) aliases: Vec<(u32, FusedArg, Shape)>,
    /// Steps of the group that run no op (aliases not needed outside).
    pub(crate) elided: usize,
    /// Products contracted into the sum that reads them (each runs inside a multiply-add).
    pub(crate) contracted: usize,
}

/// What a compiled program step looks like to the fusion planner.
pub(crate) struct StepView<'a, S> {
    pub(crate) fusion: Option<Fusion>,
    pub(crate) inputs: &'a [S],
    pub(crate) out: u32,
    pub(crate) shape: &'a [usize],
    pub(crate) dtype: DType,
}

/// A program of single steps (by index) and fused groups.
pub(crate) enum Instr<S> {
    Step(usize),
    Fused(Group<S>),
}

/// Plan fusion over `steps` in order. `numel(src)` gives an input's element count and, for a
/// constant whose elements are all equal, a one-element source to read instead; `node(src)` the
/// tape node a source refers to (None for constants). `roots` are nodes read after the
/// program (outputs, written states).
pub(crate) fn plan<S: Clone>(
    steps: &[StepView<'_, S>],
    numel: impl Fn(&S) -> (usize, Option<S>),
    node: impl Fn(&S) -> Option<u32>,
    is_one: impl Fn(&S) -> bool,
    roots: &[u32],
) -> Vec<Instr<S>> {
    let mut instrs: Vec<Instr<S>> = Vec::new();
    let mut group: Option<(Group<S>, HashMap<u32, FusedArg>, Vec<usize>)> = None;
    let close = |g: Option<(Group<S>, HashMap<u32, FusedArg>, Vec<usize>)>,
                 instrs: &mut Vec<Instr<S>>| {
        if let Some((g, _, members)) = g {
            // A lone primitive gains nothing from the chunked pass.
            if g.ops.len() + g.sums.len() >= 2 {
                instrs.push(Instr::Fused(g));
            } else {
                instrs.extend(members.into_iter().map(Instr::Step));
            }
        }
    };
    for (i, s) in steps.iter().enumerate() {
        let n_out: usize = s.shape.iter().product();
        let joined = match (&mut group, s.fusion) {
            (Some((g, local, members)), Some(f)) if s.dtype == g.dtype => {
                try_join(g, local, s, f, n_out, &numel, &node, &is_one)
                    .map(|_| members.push(i))
                    .is_some()
            }
            _ => false,
        };
        if joined {
            continue;
        }
        close(group.take(), &mut instrs);
        let starts = matches!(
            s.fusion,
            Some(Fusion::Unary(_) | Fusion::Binary(_) | Fusion::Splat | Fusion::Copy)
        ) && n_out >= FUSE_MIN;
        if starts {
            let mut g = Group {
                n: n_out,
                dtype: s.dtype,
                inputs: Vec::new(),
                ops: Vec::new(),
                op_nodes: Vec::new(),
                sums: Vec::new(),
                outputs: Vec::new(),
                aliases: Vec::new(),
                elided: 0,
                contracted: 0,
            };
            let mut local = HashMap::new();
            let f = s.fusion.expect("checked above");
            if try_join(&mut g, &mut local, s, f, n_out, &numel, &node, &is_one).is_some() {
                group = Some((g, local, vec![i]));
                continue;
            }
        }
        instrs.push(Instr::Step(i));
    }
    close(group.take(), &mut instrs);
    // Values needed outside their group: read by a later step or group, or by the caller.
    let mut used: HashSet<u32> = roots.iter().copied().collect();
    for ins in &instrs {
        match ins {
            Instr::Step(i) => used.extend(steps[*i].inputs.iter().filter_map(&node)),
            Instr::Fused(g) => used.extend(g.inputs.iter().filter_map(|x| match x {
                Input::Full(s) | Input::Scalar(s) => node(s),
            })),
        }
    }
    for ins in &mut instrs {
        if let Instr::Fused(g) = ins {
            // An alias needed outside the group is materialised by a copy of what it reads.
            for (n, o, shape) in std::mem::take(&mut g.aliases) {
                if used.contains(&n) {
                    g.ops.push(FusedOp::Copy(o));
                    g.op_nodes.push((n, shape));
                } else {
                    g.elided += 1;
                }
            }
            g.outputs = (0..g.ops.len())
                .filter(|&k| used.contains(&g.op_nodes[k].0))
                .collect();
            contract(g);
        }
    }
    instrs
}

/// Contract each product (or square) read only by one sum or difference (`a*b + c`, `c + a*b`,
/// `c - a*b`) into a multiply-add op: one op and one pass over the block fewer. It rounds the
/// product and the sum separately (no FMA), so results stay those of eager and of the trace.
fn contract<S>(g: &mut Group<S>) {
    let n = g.ops.len();
    let mut uses = vec![0usize; n];
    let operands = g
        .ops
        .iter()
        .flat_map(FusedOp::operands)
        .chain(g.sums.iter().map(|(o, ..)| *o));
    for o in operands {
        if let FusedArg::Op(j) = o {
            uses[j] += 1;
        }
    }
    let mut dead = vec![false; n];
    for &k in &g.outputs {
        uses[k] = usize::MAX;
    }
    for k in 0..n {
        let FusedOp::Binary(b @ (BinaryOp::Add | BinaryOp::Sub), x, y) = g.ops[k] else {
            continue;
        };
        let product = |o: FusedArg| match o {
            FusedArg::Op(j) if uses[j] == 1 => match g.ops[j] {
                FusedOp::Binary(BinaryOp::Mul, p, q) => Some((j, p, q)),
                FusedOp::Unary(UnaryOp::Square, p) => Some((j, p, p)),
                _ => None,
            },
            _ => None,
        };
        let (j, op) = match (b, product(y), product(x)) {
            (BinaryOp::Add, Some((j, p, q)), _) => (j, FusedOp::MulAdd(p, q, x)),
            (BinaryOp::Add, None, Some((j, p, q))) => (j, FusedOp::MulAdd(p, q, y)),
            (BinaryOp::Sub, Some((j, p, q)), _) => (j, FusedOp::NegMulAdd(p, q, x)),
            _ => continue,
        };
        dead[j] = true;
        g.ops[k] = op;
    }
    // Drop the contracted products and renumber the ops after them.
    let mut new_index = vec![0usize; n];
    let mut next = 0;
    for (k, d) in dead.iter().enumerate() {
        new_index[k] = next;
        next += usize::from(!d);
    }
    let remap = |o: FusedArg| match o {
        FusedArg::Op(j) => FusedArg::Op(new_index[j]),
        i => i,
    };
    let mut keep = dead.iter().map(|d| !d);
    let mut keep2 = keep.clone();
    g.ops.retain(|_| keep.next().unwrap_or(true));
    g.op_nodes.retain(|_| keep2.next().unwrap_or(true));
    for op in &mut g.ops {
        op.map_operands(remap);
    }
    for (o, ..) in &mut g.sums {
        *o = remap(*o);
    }
    for k in &mut g.outputs {
        *k = new_index[*k];
    }
    g.contracted += dead.iter().filter(|d| **d).count();
}

/// Add step `s` to group `g` if it fits (same size, operands inside the group, of full size, or
/// scalars); `None` leaves the group unchanged.
fn try_join<S: Clone>(
    g: &mut Group<S>,
    local: &mut HashMap<u32, FusedArg>,
    s: &StepView<'_, S>,
    f: Fusion,
    n_out: usize,
    numel: &impl Fn(&S) -> (usize, Option<S>),
    node: &impl Fn(&S) -> Option<u32>,
    is_one: &impl Fn(&S) -> bool,
) -> Option<()> {
    // Resolve operands without touching the group until the whole step is known to fit.
    let mut new_inputs: Vec<Input<S>> = Vec::new();
    let mut operand = |src: &S, scalar_ok: bool| -> Option<FusedArg> {
        if let Some(&o) = node(src).and_then(|n| local.get(&n)) {
            return Some(o);
        }
        // A sum of this group exists only once the whole pass is over: a step that reads it
        // (`e / e.sum()`) starts a new group instead.
        if let Some(n) = node(src) {
            if g.sums.iter().any(|&(_, sum, _)| sum == n) {
                return None;
            }
        }
        let inp = match numel(src) {
            (m, Some(one)) if m == g.n && scalar_ok => Input::Scalar(one),
            (m, _) if m == g.n => Input::Full(src.clone()),
            (1, _) if scalar_ok => Input::Scalar(src.clone()),
            _ => return None,
        };
        // A tape value read again is the same input (one stream, and unary ops of it can pair).
        if let (Input::Full(_), Some(n)) = (&inp, node(src)) {
            let same = |x: &Input<S>| matches!(x, Input::Full(t) if node(t) == Some(n));
            if let Some(i) = g.inputs.iter().chain(&new_inputs).position(same) {
                return Some(FusedArg::Input(i));
            }
        }
        new_inputs.push(inp);
        Some(FusedArg::Input(g.inputs.len() + new_inputs.len() - 1))
    };
    let op = match f {
        Fusion::SumAll if n_out == 1 => {
            let a = operand(&s.inputs[0], false)?;
            g.inputs.extend(new_inputs);
            g.sums.push((a, s.out, s.shape.into()));
            return Some(());
        }
        _ if n_out != g.n => return None,
        Fusion::Unary(u) => FusedOp::Unary(u, operand(&s.inputs[0], false)?),
        Fusion::Binary(b) => {
            let a = operand(&s.inputs[0], true)?;
            let c = operand(&s.inputs[1], true)?;
            // `x * 1` (a cotangent seed of ones, broadcast) is `x`: no op, the node reads `x`.
            let input_of = |o: FusedArg| match o {
                FusedArg::Input(i) => match i.checked_sub(g.inputs.len()) {
                    Some(k) => new_inputs.get(k),
                    None => g.inputs.get(i),
                },
                FusedArg::Op(_) => None,
            };
            let full = |o: FusedArg| {
                matches!(o, FusedArg::Op(_)) || matches!(input_of(o), Some(Input::Full(_)))
            };
            let one_of = |o: FusedArg| matches!(input_of(o), Some(Input::Scalar(x)) if is_one(x));
            if b == BinaryOp::Mul {
                let keep = if one_of(c) && full(a) {
                    Some(a)
                } else if one_of(a) && full(c) {
                    Some(c)
                } else {
                    None
                };
                if let Some(x) = keep {
                    g.inputs.extend(new_inputs);
                    local.insert(s.out, x);
                    g.aliases.push((s.out, x, s.shape.into()));
                    return Some(());
                }
            }
            FusedOp::Binary(b, a, c)
        }
        Fusion::Splat => FusedOp::Copy(operand(&s.inputs[0], true)?),
        Fusion::Copy => FusedOp::Copy(operand(&s.inputs[0], false)?),
        Fusion::SumAll => return None,
    };
    g.inputs.extend(new_inputs);
    local.insert(s.out, FusedArg::Op(g.ops.len()));
    g.ops.push(op);
    g.op_nodes.push((s.out, s.shape.into()));
    Some(())
}

/// Run a group on its input values (in `g.inputs` order, each with whether the caller gave up
/// its last reference: such an input, when nothing else holds it, lends its buffer to an output
/// of the same size, which is then written in place); returns (node, value) for every output
/// and sum.
pub(crate) fn run<S: Sync>(
    g: &Group<S>,
    inputs: Vec<(Tensor, bool)>,
    par: Par,
) -> Result<Vec<(u32, Tensor)>> {
    match g.dtype {
        DType::F32 => run_typed::<f32, S>(g, inputs, par),
        DType::F64 => run_typed::<f64, S>(g, inputs, par),
        _ => unreachable!("internal error: only float steps are fused"),
    }
}

fn run_typed<T: Float, S: Sync>(
    g: &Group<S>,
    inputs: Vec<(Tensor, bool)>,
    par: Par,
) -> Result<Vec<(u32, Tensor)>> {
    // Inputs whose buffers can be taken over: full-size, given up by the caller, unshared.
    let mut donors: Vec<(usize, Vec<T>)> = Vec::new();
    let mut tensors: Vec<Option<Tensor>> = Vec::with_capacity(inputs.len());
    for (i, ((t, given), x)) in inputs.into_iter().zip(&g.inputs).enumerate() {
        let full = matches!(x, Input::Full(_)) && t.numel() == g.n;
        if !(given && full && donors.len() < g.outputs.len()) {
            tensors.push(Some(t));
            continue;
        }
        match t.try_into_vec::<T>() {
            Ok(v) => {
                donors.push((i, v));
                tensors.push(None);
            }
            Err(t) => tensors.push(Some(t)),
        }
    }
    // Output `j` (in `g.outputs` order) reuses the `j`-th donor's buffer.
    let mut outs: Vec<Vec<T>> = Vec::with_capacity(g.outputs.len());
    let mut from_output = vec![None; tensors.len()];
    let mut donated = donors.into_iter();
    for j in 0..g.outputs.len() {
        match donated.next() {
            Some((i, v)) => {
                from_output[i] = Some(j);
                outs.push(v);
            }
            None => outs.push(take_buffer::<T>(g.n)),
        }
    }
    let inputs: Vec<exec::FusedInput<'_, T>> = g
        .inputs
        .iter()
        .zip(&tensors)
        .zip(&from_output)
        .map(|((x, t), o)| match (o, t) {
            (Some(j), _) => exec::FusedInput::Output(*j),
            (None, Some(t)) => {
                let data = T::slice(t.buf()).expect("internal error: fused dtype");
                match x {
                    Input::Full(_) => exec::FusedInput::Slice(data),
                    Input::Scalar(_) => exec::FusedInput::Scalar(data[0]),
                }
            }
            (None, None) => unreachable!("an input is either kept or lent to an output"),
        })
        .collect();
    // The group was built with its operands, outputs and sums in range and every buffer of
    // `g.n` elements.
    let sums = exec::fused(
        &g.ops,
        &inputs,
        exec::FusedOutputs {
            values: g
                .outputs
                .iter()
                .copied()
                .zip(outs.iter_mut().map(|o| &mut o[..]))
                .collect(),
            sums: g.sums.iter().map(|(a, _, _)| *a).collect(),
        },
        g.n,
        par,
    )
    .unwrap_or_else(|e| unreachable!("internal error: fused pass: {e}"));
    let mut results: Vec<(u32, Tensor)> = Vec::with_capacity(g.outputs.len() + g.sums.len());
    for (k, v) in g.outputs.iter().zip(outs) {
        let (node, shape) = &g.op_nodes[*k];
        results.push((*node, Tensor::from_buffer(T::into_buffer(v), shape)));
    }
    for ((_, node, shape), v) in g.sums.iter().zip(sums) {
        results.push((*node, Tensor::from_buffer(T::into_buffer(vec![v]), shape)));
    }
    Ok(results)
}

/// A pooled vector of `n` elements (contents unspecified; every element is written).
fn take_buffer<T: Float>(n: usize) -> Vec<T> {
    T::take_vec(&mut Buffer::for_overwrite(T::DTYPE, n))
}
