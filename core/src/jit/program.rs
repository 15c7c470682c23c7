//! The program IR of `jit`: a traced tape turned into steps over value slots ([`Compiled`]),
//! dead-code and common-subexpression elimination ([`compile_steps`]) and liveness
//! ([`last_uses`]).

use super::fuse;
use super::lower::Lowered;
use super::Key;
use crate::prim::Primitive;
use crate::state::State;
use crate::tensor::{Buffer, DType, Tensor};
use crate::trace::{Node, Tape};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Where a compiled output comes from.
#[derive(Clone)]
pub(crate) enum Source {
    /// The value of a tape node.
    Node(u32),
    /// A constant (detached from every tape).
    Const(Tensor),
}

/// One step of a compiled program: a primitive applied to earlier values or constants.
pub(crate) struct Step {
    pub(super) prim: Arc<dyn Primitive>,
    pub(super) inputs: Vec<Source>,
    pub(super) out: u32,
    pub(super) shape: crate::tensor::Shape,
    pub(super) dtype: DType,
}

impl Step {
    /// The primitive.
    pub(crate) fn prim(&self) -> &Arc<dyn Primitive> {
        &self.prim
    }

    /// Where its inputs come from.
    pub(crate) fn inputs(&self) -> &[Source] {
        &self.inputs
    }

    /// The node its result is.
    pub(crate) fn out(&self) -> u32 {
        self.out
    }
}

/// What a replay runs through tensors: the steps, their fused plan and where inputs and
/// outputs are (everything of a compiled program but its output tree, so that a pool thread
/// can run it for the caller: see [`Body::uses_pool`]).
pub(crate) struct Body {
    /// Number of value slots (tape nodes).
    pub(super) n_values: usize,
    /// The live operations in order, after dead-code and common-subexpression elimination.
    pub(super) steps: Vec<Step>,
    /// The same program with runs of elementwise steps fused (used when no enclosing transform
    /// records the replay).
    pub(super) plan: Vec<fuse::Instr<Source>>,
    /// Per instruction of `plan`: the values read for the last time there (not outputs or
    /// written states), dropped right after it so their buffers serve the next steps.
    pub(super) frees: Vec<SmallVec<[u32; 4]>>,
    pub(super) arg_nodes: Vec<u32>,
    pub(super) state_inputs: Vec<(State, u32, Vec<usize>, DType)>,
    pub(super) outputs: Vec<Source>,
    pub(super) writes: Vec<(State, Source)>,
    /// Whether an instruction of `plan` splits its work over the rayon pool: a caller outside
    /// the pool then hands the whole replay to it (one hand-off instead of one per kernel).
    pub(super) uses_pool: bool,
}

/// A compiled program: its [`Body`], its arena lowering and its output tree.
pub(crate) struct Compiled<T> {
    pub(super) body: Body,
    /// The program on one arena when it is small and every step has a slice kernel.
    pub(super) small: Option<Lowered>,
    /// Nodes of `outputs` then `writes` (what a small replay hands back), when all are nodes.
    pub(super) small_wanted: Vec<u32>,
    pub(super) template: T,
    /// The arguments' key it was compiled for.
    pub(super) key: Key,
    /// When it last served a call (the cache's clock), for least-recently-used eviction.
    pub(super) used: AtomicU64,
}

impl<T> Compiled<T> {
    /// Whether the states this program reads still have the traced shapes and dtypes.
    pub(super) fn states_fit(&self) -> bool {
        self.body.state_inputs.iter().all(|(s, _, shape, dt)| {
            let v = s.raw_value();
            v.shape() == shape.as_slice() && v.dtype() == *dt
        })
    }

    /// For a small program looped on its arena: `(written, read)` slot pairs of every state it
    /// both writes and reads (the write feeds the next iteration's read). `None` if a written
    /// value's shape differs from the read one's (the loop must then retrace).
    pub(super) fn state_carries(&self) -> Option<Vec<(u32, u32)>> {
        let lw = self.small.as_ref()?;
        let mut carries = Vec::new();
        for (k, (s, _)) in self.body.writes.iter().enumerate() {
            let w = self.small_wanted[self.body.outputs.len() + k];
            if let Some((_, r, ..)) = self.body.state_inputs.iter().find(|(t, ..)| t.same(s)) {
                if lw.shape_of(w) != lw.shape_of(*r) {
                    return None;
                }
                carries.push((w, *r));
            }
        }
        Some(carries)
    }

    /// Whether [`Jit::call_loop`](super::Jit::call_loop) over this program runs all its
    /// iterations as one generated function now.
    pub(super) fn loop_is_native(&self) -> bool {
        let (Some(lw), Some(carries), Some(&iter)) = (
            &self.small,
            self.state_carries(),
            self.body.arg_nodes.first(),
        ) else {
            return false;
        };
        lw.loop_is_native(iter, &carries)
    }

    /// Whether this program was compiled for these arguments (and the states still fit).
    pub(super) fn fits(&self, leaves: &[Tensor], statics: &[String]) -> bool {
        self.key.statics == statics
            && self.key.leaves.len() == leaves.len()
            && self
                .key
                .leaves
                .iter()
                .zip(leaves)
                .all(|((shape, dt), t)| t.shape() == shape.as_slice() && t.dtype() == *dt)
            && self.states_fit()
    }
}

/// Read access for interpreters outside `jit` (vmap's batched run).
impl<T> Compiled<T> {
    /// Number of value slots (tape nodes).
    pub(crate) fn n_values(&self) -> usize {
        self.body.n_values
    }

    /// The nodes of the arguments' tensors, in order.
    pub(crate) fn arg_nodes(&self) -> &[u32] {
        &self.body.arg_nodes
    }

    /// The states the program reads, with their nodes.
    pub(crate) fn state_inputs(&self) -> impl Iterator<Item = (&State, u32)> {
        self.body.state_inputs.iter().map(|(s, n, ..)| (s, *n))
    }

    /// The live operations in order.
    pub(crate) fn steps(&self) -> &[Step] {
        &self.body.steps
    }

    /// Where each output tensor comes from, in tree order.
    pub(crate) fn outputs(&self) -> &[Source] {
        &self.body.outputs
    }

    /// The states the program writes.
    pub(crate) fn written_states(&self) -> impl Iterator<Item = &State> {
        self.body.writes.iter().map(|(s, _)| s)
    }

    /// The output tree as traced (its tensors are replaced by the outputs).
    pub(crate) fn template(&self) -> &T {
        &self.template
    }
}

/// A traced tape as a program (see [`compile_steps`]).
pub(super) struct Program {
    pub(super) steps: Vec<Step>,
    /// `(node, node it duplicates)` for every step CSE dropped.
    pub(super) aliased: Vec<(u32, u32)>,
    /// The values of the steps on constants only, computed once here.
    pub(super) folded: HashMap<u32, Tensor>,
}

impl Program {
    /// Where the value `src` now comes from: its duplicate's node, or its folded constant.
    pub(super) fn resolve(&self, src: &Source) -> Source {
        let Source::Node(n) = src else {
            return src.clone();
        };
        let n = self
            .aliased
            .iter()
            .find(|(from, _)| from == n)
            .map_or(*n, |&(_, to)| to);
        match self.folded.get(&n) {
            Some(v) => Source::Const(v.clone()),
            None => Source::Node(n),
        }
    }
}

/// Turn a traced tape into a program: keep the operations some output needs (dead-code
/// elimination), detach constants once, make repeated identical operations on the same
/// values (same primitive and parameters, same inputs) reuse the first result (CSE), and
/// compute once the operations whose inputs are all constants (the trace staged them: a
/// cotangent seed, a draw from a constant key), so replays do not repeat them.
pub(super) fn compile_steps(tape: &Tape, roots: &[&Source]) -> crate::error::Result<Program> {
    let mut live = vec![false; tape.nodes.len()];
    for src in roots {
        if let Source::Node(n) = src {
            live[*n as usize] = true;
        }
    }
    for i in (0..live.len()).rev() {
        if let (true, Node::Op(op)) = (live[i], &tape.nodes[i]) {
            for p in op.parents.iter().flatten() {
                live[*p as usize] = true;
            }
        }
    }
    // `alias[i]` is the node whose value node `i` reuses.
    let mut alias: Vec<u32> = (0..tape.nodes.len() as u32).collect();
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut steps = Vec::new();
    let mut aliased = Vec::new();
    let mut folded: HashMap<u32, Tensor> = HashMap::new();
    for (i, node) in tape.nodes.iter().enumerate() {
        let Node::Op(op) = node else { continue };
        if !live[i] {
            continue;
        }
        let inputs: Vec<Source> = op
            .parents
            .iter()
            .zip(&op.inputs)
            .map(|(p, c)| match p {
                Some(p) => match folded.get(&alias[*p as usize]) {
                    Some(v) => Source::Const(v.clone()),
                    None => Source::Node(alias[*p as usize]),
                },
                None => Source::Const(c.untagged()),
            })
            .collect();
        let key = format!(
            "{:?}|{}",
            op.prim,
            inputs
                .iter()
                .map(|s| match s {
                    Source::Node(n) => format!("n{n}"),
                    Source::Const(t) => format!("c{:p}", Arc::as_ptr(&t.0.buf)),
                })
                .collect::<Vec<_>>()
                .join(",")
        );
        if let Some(&first) = seen.get(&key) {
            alias[i] = first;
            aliased.push((i as u32, first));
            continue;
        }
        seen.insert(key, i as u32);
        let consts: Option<Vec<&Tensor>> = inputs
            .iter()
            .map(|s| match s {
                Source::Const(t) if !t.is_abstract() => Some(t),
                _ => None,
            })
            .collect();
        if let Some(consts) = consts {
            let v = crate::trace::concrete(|| crate::prim::apply(op.prim.clone(), &consts))?;
            folded.insert(i as u32, v.untagged());
            continue;
        }
        steps.push(Step {
            prim: op.prim.clone(),
            inputs,
            out: i as u32,
            shape: op.output.shape().into(),
            dtype: op.output.dtype(),
        });
    }
    Ok(Program {
        steps,
        aliased,
        folded,
    })
}

/// For each instruction of `plan`, the nodes it reads for the last time, except the program's
/// outputs and written states (liveness: the replay drops them there).
pub(super) fn last_uses(
    plan: &[fuse::Instr<Source>],
    steps: &[Step],
    outputs: &[Source],
    writes: &[(State, Source)],
) -> Vec<SmallVec<[u32; 4]>> {
    let mut last: HashMap<u32, usize> = HashMap::new();
    for (k, instr) in plan.iter().enumerate() {
        let reads: Vec<&Source> = match instr {
            fuse::Instr::Step(i) => steps[*i].inputs.iter().collect(),
            fuse::Instr::Fused(g) => g
                .inputs
                .iter()
                .map(|x| match x {
                    fuse::Input::Full(s) | fuse::Input::Scalar(s) => s,
                })
                .collect(),
        };
        for src in reads {
            if let Source::Node(n) = src {
                last.insert(*n, k);
            }
        }
    }
    for src in outputs.iter().chain(writes.iter().map(|(_, s)| s)) {
        if let Source::Node(n) = src {
            last.remove(n);
        }
    }
    let mut frees = vec![SmallVec::new(); plan.len()];
    for (n, k) in last {
        frees[k].push(n);
    }
    frees
}

/// The value of every element of `t` as a one-element tensor, if they are all equal (bitwise,
/// so `-0.0` and NaN payloads are kept).
pub(super) fn uniform_scalar(t: &Tensor) -> Option<Tensor> {
    fn first_if_uniform<T: Copy + PartialEq>(v: &[T], bits: impl Fn(T) -> u64) -> Option<T> {
        let f = *v.first()?;
        v.iter().all(|&x| bits(x) == bits(f)).then_some(f)
    }
    match t.buf() {
        Buffer::F32(v) => first_if_uniform(v, |x: f32| x.to_bits().into()).map(Tensor::scalar),
        Buffer::F64(v) => first_if_uniform(v, f64::to_bits).map(Tensor::scalar),
        Buffer::I32(v) => first_if_uniform(v, |x| x as u64).map(Tensor::scalar),
        Buffer::I64(v) => first_if_uniform(v, |x| x as u64).map(Tensor::scalar),
        Buffer::Bool(v) => first_if_uniform(v, u64::from).map(Tensor::scalar),
    }
}
