//! vmap's batched interpreter: a function traced once by `jit`'s tracer, then run once over the
//! whole batch through each primitive's batch rule.

use crate::error::Result;
use crate::jit::{trace_program, Compiled, JitOutput, Source};
use crate::prim::apply;
use crate::state::State;
use crate::tensor::Tensor;
use crate::trace;
use crate::tree::{Args, Tree};
use smallvec::SmallVec;
use std::collections::HashMap;

/// A traced program of `f` at `args`, for `vmap`'s batched interpretation (states are left as
/// they were).
pub(crate) struct Traced<T> {
    compiled: Compiled<T>,
}

impl<T: Tree + Clone> Traced<T> {
    /// States the traced function writes (refused by `vmap`).
    pub(crate) fn written_states(&self) -> Vec<State> {
        self.compiled.written_states().cloned().collect()
    }

    /// Run the program on inputs of which those flagged carry a leading batch axis, through
    /// each primitive's batch rule; outputs come with their flag (unbatched outputs are the same
    /// for every example). Written states are not applied.
    pub(crate) fn run_batched(
        &self,
        leaves: &[(Tensor, bool)],
    ) -> Result<(T, Vec<(Tensor, bool)>)> {
        let c = &self.compiled;
        let mut vals: Vec<Option<(Tensor, bool)>> = vec![None; c.n_values()];
        for (n, l) in c.arg_nodes().iter().zip(leaves) {
            vals[*n as usize] = Some(l.clone());
        }
        for (s, n) in c.state_inputs() {
            vals[n as usize] = Some((s.value(), false));
        }
        for step in c.steps() {
            let out = {
                let mut refs: SmallVec<[&Tensor; 4]> = SmallVec::new();
                let mut flags: SmallVec<[bool; 4]> = SmallVec::new();
                for src in step.inputs() {
                    match src {
                        Source::Node(n) => {
                            let (t, b) = vals[*n as usize]
                                .as_ref()
                                .expect("internal error: replay order");
                            refs.push(t);
                            flags.push(*b);
                        }
                        Source::Const(t) => {
                            refs.push(t);
                            flags.push(false);
                        }
                    }
                }
                if flags.iter().any(|&b| b) {
                    (step.prim().batch(step.prim(), &refs, &flags)?, true)
                } else {
                    (apply(step.prim().clone(), &refs)?, false)
                }
            };
            vals[step.out() as usize] = Some(out);
        }
        let outs = c
            .outputs()
            .iter()
            .map(|s| match s {
                Source::Node(n) => vals[*n as usize]
                    .clone()
                    .expect("internal error: output not computed"),
                Source::Const(t) => (t.clone(), false),
            })
            .collect();
        Ok((c.template().clone(), outs))
    }
}

/// Trace `f` once at `args` (restoring every state afterwards).
pub(crate) fn trace_for_batching<F, A, O>(f: &F, args: A) -> Result<Traced<O::Tree>>
where
    F: Fn(A) -> O,
    A: Args,
    O: JitOutput,
    O::Tree: Send + Sync,
{
    let (compiled, _) = trace::with_states(HashMap::new(), trace::ExitPolicy::RestoreAll, || {
        trace_program(f, args)
    })?;
    Ok(Traced { compiled })
}
