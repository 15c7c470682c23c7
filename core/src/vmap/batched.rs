//! vmap's batched interpreter: a function traced once by `jit`'s tracer, then run once over the
//! whole batch through each primitive's batch rule.

use crate::error::Result;
use crate::jit::{trace_program, Compiled, JitOutput, Source};
use crate::prim::{apply, Primitive};
use crate::state::State;
use crate::tensor::Tensor;
use crate::trace;
use crate::tree::{Args, Tree};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::sync::Arc;

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

/// Programs of primitives' VJP rules traced for batching, per thread, keyed by the primitive,
/// the shapes and dtypes it saw and the cotangents wanted (`None`: the rule reads data and is
/// run row by row). Bounded: cleared when full.
type RulePrograms = HashMap<String, Option<Arc<Traced<Vec<Option<Tensor>>>>>>;

thread_local! {
    static RULES: std::cell::RefCell<RulePrograms> = std::cell::RefCell::new(HashMap::new());
}

/// At most this many traced rules are kept per thread.
const RULE_CACHE_LIMIT: usize = 512;

/// The VJP of `prim` for a chunk of cotangents: `g` has `nb` leading batch dimensions before
/// the output's shape, and each result has them before its input's shape. This is the one
/// batching rule at work: the primitive's VJP rule (written for one cotangent) is traced once
/// and run through every primitive's vmap batch rule with `g` batched — vmap of the pullback,
/// as JAX batches Jacobian rows. Inputs, output and `g` enter as arguments (not constants), so
/// an enclosing transform records the run and differentiates it again (Hessians). A rule that
/// reads data runs once per row.
pub(crate) fn batched_vjp(
    prim: &Arc<dyn Primitive>,
    inputs: &[&Tensor],
    output: &Tensor,
    g: &Tensor,
    needs: &[bool],
    nb: usize,
) -> Result<Vec<Option<Tensor>>> {
    let batch = &g.shape()[..nb];
    let c: usize = batch.iter().product();
    let mut flat = vec![c];
    flat.extend_from_slice(output.shape());
    let gf = g.try_reshape_to(&flat)?;
    let rule = rule_program(prim, inputs, output, needs)?;
    let rows: Vec<Option<Tensor>> = match rule {
        Some(rule) => {
            let mut leaves: Vec<(Tensor, bool)> =
                inputs.iter().map(|&t| (t.clone(), false)).collect();
            leaves.push((output.clone(), false));
            leaves.push((gf, true));
            let (template, outs) = rule.run_batched(&leaves)?;
            let mut outs = outs.into_iter();
            template
                .iter()
                .map(|slot| {
                    slot.as_ref()
                        .map(|_| {
                            let (t, batched) = outs.next().expect("internal error: output count");
                            if batched {
                                Ok(t)
                            } else {
                                // A cotangent the same for every row (independent of `g`).
                                let mut shape = vec![c];
                                shape.extend_from_slice(t.shape());
                                t.try_reshape_to(&[&[1], t.shape()].concat())?
                                    .try_broadcast_to(&shape)
                            }
                        })
                        .transpose()
                })
                .collect::<Result<_>>()?
        }
        None => rule_by_rows(prim, inputs, output, &gf, needs, c)?,
    };
    rows.into_iter()
        .zip(inputs)
        .map(|(r, x)| {
            r.map(|t| {
                let mut shape = batch.to_vec();
                shape.extend_from_slice(x.shape());
                t.try_reshape_to(&shape)
            })
            .transpose()
        })
        .collect()
}

/// The traced rule of `prim` at these shapes (from the cache, or traced now); `None` if the
/// rule reads data.
fn rule_program(
    prim: &Arc<dyn Primitive>,
    inputs: &[&Tensor],
    output: &Tensor,
    needs: &[bool],
) -> Result<Option<Arc<Traced<Vec<Option<Tensor>>>>>> {
    use std::fmt::Write;
    // The primitive's `Debug` text names it with all its parameters (every primitive derives
    // `Debug`; a custom rule prints its unique id). The cotangent has the output's shape and
    // dtype (the transforms cast their seed to the output's dtype), so it adds nothing.
    let mut key = format!("{prim:?}|{needs:?}");
    for t in inputs.iter().copied().chain([output]) {
        let _ = write!(key, "|{:?}{:?}", t.shape(), t.dtype());
    }
    if let Some(hit) = RULES.with(|r| r.borrow().get(&key).cloned()) {
        return Ok(hit);
    }
    let n = inputs.len();
    let rule = |(xs,): (Vec<Tensor>,)| -> Result<Vec<Option<Tensor>>> {
        let refs: Vec<&Tensor> = xs[..n].iter().collect();
        prim.vjp(&refs, &xs[n], &xs[n + 1], needs)
    };
    let mut args: Vec<Tensor> = inputs.iter().map(|&t| t.clone()).collect();
    args.push(output.clone());
    args.push(output.zeros_like());
    let traced = match trace_for_batching(&rule, (args,)) {
        Ok(t) => Some(Arc::new(t)),
        Err(crate::error::Error::TracedValueRead { .. }) => None,
        Err(e) => return Err(e),
    };
    RULES.with(|r| {
        let mut r = r.borrow_mut();
        if r.len() >= RULE_CACHE_LIMIT {
            r.clear();
        }
        r.insert(key, traced.clone());
    });
    Ok(traced)
}

/// The rule once per row of `gf` (`c` rows), stacked.
fn rule_by_rows(
    prim: &Arc<dyn Primitive>,
    inputs: &[&Tensor],
    output: &Tensor,
    gf: &Tensor,
    needs: &[bool],
    c: usize,
) -> Result<Vec<Option<Tensor>>> {
    let mut per_input: Vec<Vec<Tensor>> = vec![Vec::with_capacity(c); inputs.len()];
    for r in 0..c {
        let gr = gf.try_index_axis(0, r as isize)?;
        for (k, cot) in prim
            .vjp(inputs, output, &gr, needs)?
            .into_iter()
            .enumerate()
        {
            if let Some(cot) = cot {
                per_input[k].push(cot);
            }
        }
    }
    per_input
        .iter()
        .zip(inputs)
        .zip(needs)
        .map(|((rows, x), &need)| {
            if !need {
                return Ok(None);
            }
            // No row ran (an empty chunk, or the rule gave this input no cotangent): zeros.
            if rows.len() != c || c == 0 {
                let mut shape = vec![c];
                shape.extend_from_slice(x.shape());
                return Tensor::try_full_dtype(&shape, 0.0, x.dtype()).map(Some);
            }
            let refs: Vec<&Tensor> = rows.iter().collect();
            Tensor::try_stack(&refs, 0).map(Some)
        })
        .collect()
}
