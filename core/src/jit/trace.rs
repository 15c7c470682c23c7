//! Tracing a function into a program: run it once on a `jit` frame, turn the tape into steps
//! (dead code and duplicates dropped), plan the fused replay and lower small programs to an
//! arena.

use super::fuse;
use super::lower::lower_program;
use super::program::{compile_steps, last_uses, uniform_scalar, Body, Compiled, Source, Step};
use super::{jit, Jit, JitOutput, Key};
use crate::error::Result;
use crate::panics::from_panic;
use crate::state::State;
use crate::tensor::{Buffer, DType, Tensor};
use crate::trace;
use crate::tree::{Args, Tree};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

impl<F, A: Args, O: JitOutput> Jit<F, A, O>
where
    O::Tree: Send + Sync,
{
    /// Run the function once on abstract values of `leaves` (the tensors of `args`) in a `jit`
    /// frame: every primitive runs only its abstract rule (operations on constants are staged
    /// too), and every state it touched is left as it was. Returns the closed frame, the
    /// output tree as traced, the written states' traced values and the arguments' nodes.
    #[allow(clippy::type_complexity)]
    fn trace_abstract(
        &self,
        args: A,
        leaves: &[Tensor],
    ) -> Result<(trace::Frame, O::Tree, Vec<(State, Tensor)>, Vec<u32>)>
    where
        F: Fn(A) -> O,
    {
        self.traces.fetch_add(1, Ordering::Relaxed);
        let guard = trace::push_jit_frame();
        let level = guard.level();
        let mut tagged = Vec::with_capacity(leaves.len());
        let mut arg_nodes = Vec::with_capacity(leaves.len());
        for l in leaves {
            let (t, n) = guard.abstract_input(l);
            tagged.push(t);
            arg_nodes.push(n);
        }
        let mut a = args;
        a.jit_replace(&mut tagged.into_iter());
        let res = match catch_unwind(AssertUnwindSafe(|| (self.f)(a).into_result())) {
            Ok(r) => r,
            Err(p) => Err(from_panic(p)),
        };
        // Record the written states' traced values before the frame restores them.
        let frame_writes: Vec<(State, Tensor)> = match &res {
            Ok(_) => trace::frame_written_states(level),
            Err(_) => Vec::new(),
        };
        let frame = guard.close(res.is_ok());
        Ok((frame, res?, frame_writes, arg_nodes))
    }

    /// The output tree of an abstract trace at `args` (shapes and dtypes only; nothing is
    /// computed, compiled or cached).
    pub(super) fn trace_shapes(&self, args: A, leaves: &[Tensor]) -> Result<O::Tree>
    where
        F: Fn(A) -> O,
    {
        self.trace_abstract(args, leaves).map(|(_, out, _, _)| out)
    }

    /// Trace the function at `args` (whose tensors are `leaves`, see
    /// [`Jit::trace_abstract`]) and compile the tape; the replay of the program computes the
    /// values and writes the states.
    pub(super) fn trace(&self, args: A, leaves: &[Tensor]) -> Result<Compiled<O::Tree>>
    where
        F: Fn(A) -> O,
    {
        let (frame, out, frame_writes, arg_nodes) = self.trace_abstract(args, leaves)?;
        let level = frame.level;
        let source = |t: &Tensor| match trace::node_of(t, level) {
            Some(n) => Source::Node(n),
            None => Source::Const(trace::strip(t, level)),
        };
        let mut outputs = Vec::new();
        out.for_each_tensor(&mut |t| outputs.push(source(t)));
        let writes: Vec<(State, Source)> = frame_writes
            .iter()
            .map(|(s, v)| (s.clone(), source(v)))
            .collect();
        let state_inputs: Vec<(State, u32, Vec<usize>, DType)> = frame
            .state_inputs
            .iter()
            .map(|(s, n)| {
                let entry = frame
                    .touched
                    .iter()
                    .find(|(t, _, _)| t.same(s))
                    .map(|(_, e, _)| e.clone())
                    .expect("internal error: state input not touched");
                (s.clone(), *n, entry.shape().to_vec(), entry.dtype())
            })
            .collect();
        let roots: Vec<&Source> = outputs
            .iter()
            .chain(writes.iter().map(|(_, s)| s))
            .collect();
        let program = compile_steps(&frame.tape, &roots)?;
        // Outputs eliminated as duplicates read the value they duplicate; folded ones are
        // constants.
        let outputs: Vec<Source> = outputs.iter().map(|s| program.resolve(s)).collect();
        let writes: Vec<(State, Source)> = writes
            .iter()
            .map(|(s, src)| (s.clone(), program.resolve(src)))
            .collect();
        let steps = program.steps;
        let plan = plan_fusion(&steps, &arg_nodes, leaves, &state_inputs, &outputs, &writes);
        let frees = last_uses(&plan, &steps, &outputs, &writes);
        let small = lower_program(
            &steps,
            &arg_nodes,
            leaves,
            &state_inputs,
            frame.tape.nodes.len(),
        );
        let small_wanted: Vec<u32> = outputs
            .iter()
            .chain(writes.iter().map(|(_, s)| s))
            .filter_map(|s| match s {
                Source::Node(n) => Some(*n),
                Source::Const(_) => None,
            })
            .collect();
        let small = small.filter(|_| small_wanted.len() == outputs.len() + writes.len());
        let uses_pool = plan_uses_pool(&plan, &steps, &arg_nodes, leaves, &state_inputs);
        Ok(Compiled {
            body: Body {
                n_values: frame.tape.nodes.len(),
                steps,
                plan,
                frees,
                arg_nodes,
                state_inputs,
                outputs,
                writes,
                uses_pool,
            },
            small,
            small_wanted,
            template: out,
            key: Key::default(),
            used: AtomicU64::new(0),
        })
    }
}

/// Whether replaying `plan` splits work over the rayon pool ([`Body::uses_pool`]): a fused pass
/// long enough to be split, or a step whose primitive splits at its shapes
/// ([`crate::prim::Primitive::splits_work`]).
fn plan_uses_pool(
    plan: &[fuse::Instr<Source>],
    steps: &[Step],
    arg_nodes: &[u32],
    leaves: &[Tensor],
    state_inputs: &[(State, u32, Vec<usize>, DType)],
) -> bool {
    let mut shapes: HashMap<u32, &[usize]> = arg_nodes
        .iter()
        .zip(leaves)
        .map(|(n, t)| (*n, t.shape()))
        .chain(state_inputs.iter().map(|(_, n, s, _)| (*n, &s[..])))
        .collect();
    shapes.extend(steps.iter().map(|st| (st.out, &st.shape[..])));
    plan.iter().any(|ins| match ins {
        fuse::Instr::Fused(g) => {
            let work = stategrad_exec::fused_pass_work(g.n, g.ops.len() + g.sums.len());
            g.n > stategrad_exec::FUSED_CHUNK
                && work >= stategrad_exec::tuning::fused_par_min_work()
        }
        fuse::Instr::Step(i) => {
            let st = &steps[*i];
            let ins: Option<Vec<&[usize]>> = st
                .inputs
                .iter()
                .map(|src| match src {
                    Source::Node(n) => shapes.get(n).copied(),
                    Source::Const(t) => Some(t.shape()),
                })
                .collect();
            ins.is_some_and(|ins| st.prim.splits_work(&ins, &st.shape))
        }
    })
}

/// Plan the fused replay of `steps`: runs of elementwise steps over one size become fused passes
/// (see [`fuse::plan`]); the program's outputs and written states stay materialised.
fn plan_fusion(
    steps: &[Step],
    arg_nodes: &[u32],
    leaves: &[Tensor],
    state_inputs: &[(State, u32, Vec<usize>, DType)],
    outputs: &[Source],
    writes: &[(State, Source)],
) -> Vec<fuse::Instr<Source>> {
    let mut numel: HashMap<u32, usize> = HashMap::new();
    for (n, l) in arg_nodes.iter().zip(leaves) {
        numel.insert(*n, l.numel());
    }
    for (_, n, shape, _) in state_inputs {
        numel.insert(*n, shape.iter().product::<usize>());
    }
    for st in steps {
        numel.insert(st.out, st.shape.iter().product());
    }
    let views: Vec<fuse::StepView<'_, Source>> = steps
        .iter()
        .map(|st| fuse::StepView {
            // Fused passes compute on floats; integer and bool steps run on their own.
            fusion: st.prim.fusion().filter(|_| st.dtype.is_float()),
            inputs: &st.inputs,
            out: st.out,
            shape: &st.shape,
            dtype: st.dtype,
        })
        .collect();
    let root_nodes: Vec<u32> = outputs
        .iter()
        .chain(writes.iter().map(|(_, s)| s))
        .filter_map(|s| match s {
            Source::Node(n) => Some(*n),
            Source::Const(_) => None,
        })
        .collect();
    // A large constant whose elements are all equal (a broadcast cotangent seed, a
    // `full`) is read by a fused pass as one scalar, not streamed from memory.
    let mut uniform: HashMap<*const Buffer, Option<Source>> = HashMap::new();
    for st in steps {
        for src in &st.inputs {
            if let Source::Const(t) = src {
                if t.numel() >= fuse::FUSE_MIN {
                    uniform
                        .entry(Arc::as_ptr(&t.0.buf))
                        .or_insert_with(|| uniform_scalar(t).map(Source::Const));
                }
            }
        }
    }
    fuse::plan(
        &views,
        |s| match s {
            Source::Node(n) => (numel.get(n).copied().unwrap_or(0), None),
            Source::Const(t) => (
                t.numel(),
                uniform.get(&Arc::as_ptr(&t.0.buf)).and_then(|u| u.clone()),
            ),
        },
        |s| match s {
            Source::Node(n) => Some(*n),
            Source::Const(_) => None,
        },
        |s| match s {
            Source::Const(t) => t.numel() == 1 && t.to_vec::<f64>()[0] == 1.0,
            Source::Node(_) => false,
        },
        &root_nodes,
    )
}

/// Trace `f` once at `args` into a program, for an interpreter outside `jit` (vmap's batched
/// run). States are traced as inputs like in `jit`; the caller decides what happens to the
/// values the trace writes (vmap restores them).
pub(crate) fn trace_program<F, A, O>(f: &F, args: A) -> Result<Compiled<O::Tree>>
where
    F: Fn(A) -> O,
    A: Args,
    O: JitOutput,
    O::Tree: Send + Sync,
{
    let j = jit(|a: A| f(a));
    let (leaves, _) = args.jit_leaves();
    j.trace(args, &leaves)
}
