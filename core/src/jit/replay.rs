//! Replaying a compiled program: step by step through the primitives (fused passes where no
//! enclosing transform records), or on one arena for small programs, with [`protect`] turning a
//! panic inside into a typed error.

use super::fuse;
use super::lower::Lowered;
use super::program::{Body, Compiled, Source, Step};
use super::{Jit, JitOutput};
use crate::error::{Error, Result};
use crate::panics::from_panic;
use crate::prim::apply;
use crate::tensor::Tensor;
use crate::trace;
use crate::tree::{Args, Tree};
use smallvec::SmallVec;
use stategrad_simd::Par;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

thread_local! {
    /// The primitive a replay on this thread is running, for the message of an internal error.
    static RUNNING: std::cell::Cell<&'static str> = const { std::cell::Cell::new("replay") };
}

/// Replay a compiled program. A panic inside it is a defect of the engine (the trace already ran
/// the same primitives on the same shapes), so it comes back as [`Error::Internal`] naming the
/// primitive that was running, never as an unwind out of [`Jit::call`]; typed operator errors
/// come back as themselves. States are written only after every value is computed.
pub(super) fn replay<T: Tree + Clone>(c: &Compiled<T>, leaves: &[Tensor]) -> Result<T> {
    protect(|| replay_unprotected(c, leaves))
}

/// Run `body`, turning a panic into the typed error it carries, or [`Error::Internal`]. The
/// thread's running-primitive name is restored afterwards: a pool thread can run a replay
/// nested inside another one's kernel (rayon runs queued jobs on waiting threads).
fn protect<R>(body: impl FnOnce() -> Result<R>) -> Result<R> {
    let outer = RUNNING.with(|r| r.replace("replay"));
    let r = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(p) => Err(match from_panic(p) {
            Error::Panicked(msg) => Error::Internal {
                primitive: RUNNING.with(|r| r.get()).to_string(),
                msg,
            },
            e => e,
        }),
    };
    RUNNING.with(|r| r.set(outer));
    r
}

fn replay_unprotected<T: Tree + Clone>(c: &Compiled<T>, leaves: &[Tensor]) -> Result<T> {
    if let (Some(lw), false) = (&c.small, trace::recording()) {
        RUNNING.with(|r| r.set("arena program"));
        return replay_small(c, lw, leaves);
    }
    // A read through `value()`, so enclosing transforms see (and may differentiate) it.
    let mut states: Vec<Tensor> = c
        .body
        .state_inputs
        .iter()
        .map(|(s, ..)| s.value())
        .collect();
    if hand_to_pool(&c.body) {
        // The whole replay on a pool thread: its kernels then split from inside the pool,
        // without a hand-off and a wake-up of this thread per kernel. The states are written
        // there too, so the buffers their old values free go to a pool thread's free list
        // rather than this thread's, where no replay would reuse them. The pool thread that
        // takes the job may be waiting inside user code under a transform (rayon runs queued
        // jobs on waiting threads): it declines the job then, and the replay runs here.
        let body = &c.body;
        let done = rayon::scope(|_| {
            if thread_is_clean() {
                Ok(protect(|| run_body(body, leaves, states)))
            } else {
                Err(states)
            }
        });
        match done {
            Ok(r) => {
                let (outs, calls) = r?;
                // Kernels run on this thread's behalf count for this thread.
                crate::prim::count_kernel_calls(calls);
                return finish(c, outs);
            }
            Err(declined) => states = declined,
        }
    }
    let (outs, _) = run_body(&c.body, leaves, states)?;
    finish(c, outs)
}

/// The output tree of `c` holding `outs`.
fn finish<T: Tree + Clone>(c: &Compiled<T>, outs: Vec<Tensor>) -> Result<T> {
    let mut it = outs.into_iter();
    Ok(c.template
        .map_tensors(&mut |_| it.next().expect("internal error: output count")))
}

/// Whether this replay runs on the pool ([`Body::uses_pool`]): only from a thread outside the
/// pool with nothing open on it (so the replay needs nothing of this thread's), and only when
/// the pool has more than one thread.
fn hand_to_pool(body: &Body) -> bool {
    body.uses_pool
        && rayon::current_thread_index().is_none()
        && thread_is_clean()
        && crate::parallel::may_split()
}

/// True if nothing is open on this thread: no transform frame, no per-thread state view, no
/// sequential chunk. A replay then reads and writes states and splits kernels the same on any
/// thread in this condition.
fn thread_is_clean() -> bool {
    !trace::tracing() && !crate::state::thread_has_views() && !crate::parallel::sequential()
}

/// Run a program's body on `leaves` and the states' values, write the states it writes (once
/// every value is computed) and return its outputs and the number of primitives it applied.
fn run_body(c: &Body, leaves: &[Tensor], states: Vec<Tensor>) -> Result<(Vec<Tensor>, u64)> {
    let applied = std::cell::Cell::new(0u64);
    let mut vals: Vec<Option<Tensor>> = vec![None; c.n_values];
    for (n, l) in c.arg_nodes.iter().zip(leaves) {
        vals[*n as usize] = Some(l.clone());
    }
    for ((_, n, _, _), v) in c.state_inputs.iter().zip(states) {
        vals[*n as usize] = Some(v);
    }
    let run_step = |step: &Step, vals: &mut Vec<Option<Tensor>>| -> Result<()> {
        let out = {
            let refs: SmallVec<[&Tensor; 4]> = step
                .inputs
                .iter()
                .map(|src| match src {
                    Source::Node(n) => vals[*n as usize]
                        .as_ref()
                        .expect("internal error: replay order"),
                    Source::Const(t) => t,
                })
                .collect();
            RUNNING.with(|r| r.set(step.prim.name()));
            applied.set(applied.get() + 1);
            apply(step.prim.clone(), &refs)?
        };
        vals[step.out as usize] = Some(out);
        Ok(())
    };
    if trace::recording() {
        // An enclosing transform must see every primitive: run the program unfused.
        for step in &c.steps {
            run_step(step, &mut vals)?;
        }
    } else {
        for (instr, dead) in c.plan.iter().zip(&c.frees) {
            match instr {
                fuse::Instr::Step(i) => run_step(&c.steps[*i], &mut vals)?,
                fuse::Instr::Fused(g) => {
                    RUNNING.with(|r| r.set("fused pass"));
                    // A value read here for the last time is handed over (not cloned), so the
                    // pass can write an output into its buffer when nothing else holds it.
                    let inputs: Vec<(Tensor, bool)> = g
                        .inputs
                        .iter()
                        .map(|x| match x {
                            fuse::Input::Full(Source::Node(n)) if dead.contains(n) => {
                                let t = vals[*n as usize].take();
                                (t.expect("internal error: replay order"), true)
                            }
                            fuse::Input::Full(s) | fuse::Input::Scalar(s) => match s {
                                Source::Node(n) => (
                                    vals[*n as usize]
                                        .clone()
                                        .expect("internal error: replay order"),
                                    false,
                                ),
                                Source::Const(t) => (t.clone(), false),
                            },
                        })
                        .collect();
                    let par = if crate::parallel::sequential() {
                        Par::Seq
                    } else {
                        Par::Rayon
                    };
                    for (node, t) in fuse::run(g, inputs, par)? {
                        vals[node as usize] = Some(t);
                    }
                }
            }
            for n in dead {
                vals[*n as usize] = None;
            }
        }
    }
    let get = |s: &Source| match s {
        Source::Node(n) => vals[*n as usize]
            .clone()
            .expect("internal error: output not computed"),
        Source::Const(t) => t.clone(),
    };
    let outs: Vec<Tensor> = c.outputs.iter().map(get).collect();
    let written: Vec<Tensor> = c.writes.iter().map(|(_, src)| get(src)).collect();
    for ((s, _), v) in c.writes.iter().zip(written) {
        s.set_value(v);
    }
    Ok((outs, applied.get()))
}

/// Replay a lowered program: arguments and state values in, outputs and written states out.
fn replay_small<T: Tree + Clone>(c: &Compiled<T>, lw: &Lowered, leaves: &[Tensor]) -> Result<T> {
    Ok(replay_small_with(c, lw, leaves, |inputs| lw.run(inputs)))
}

/// Feed a small program's arguments (`leaves`) and current state values to `run`, which leaves
/// the results in this thread's arena; then write the written states (in place where their old
/// value has no other reference: our reads are dropped first) and give back the outputs.
fn replay_small_with<T: Tree + Clone>(
    c: &Compiled<T>,
    lw: &Lowered,
    leaves: &[Tensor],
    run: impl FnOnce(&[(u32, &Tensor)]),
) -> T {
    {
        // Read through `value()`, so enclosing frames register the reads.
        let values: SmallVec<[Tensor; 4]> = c
            .body
            .state_inputs
            .iter()
            .map(|(s, ..)| s.value())
            .collect();
        let inputs: SmallVec<[(u32, &Tensor); 8]> = c
            .body
            .arg_nodes
            .iter()
            .copied()
            .zip(leaves)
            .chain(c.body.state_inputs.iter().map(|(_, n, ..)| *n).zip(&values))
            .collect();
        run(&inputs);
    }
    let (outs, writes) = c.small_wanted.split_at(c.body.outputs.len());
    let mut it = lw.take(outs).into_iter();
    for ((s, _), &node) in c.body.writes.iter().zip(writes) {
        lw.store(node, s);
    }
    c.template
        .map_tensors(&mut |_| it.next().expect("internal error: output count"))
}

impl<F, A: Args, O: JitOutput> Jit<F, A, O>
where
    O::Tree: Send + Sync,
{
    /// The last program, when it runs on the arena and no enclosing transform records (a
    /// compiled loop or scan can then run all its iterations there).
    fn last_small(&self) -> Option<Arc<Compiled<O::Tree>>> {
        if trace::recording() {
            return None;
        }
        self.last.lock().clone().filter(|c| c.small.is_some())
    }

    /// Iterations `start..end` of a [`for_loop`](super::for_loop) over this (single tensor argument) function, on
    /// one arena when its last program is a small one: states written by an iteration are copied
    /// to the slots the next one reads, and only the last iteration's outputs and states come
    /// out as tensors. `None` when that does not apply (the caller then loops over `call`).
    pub(super) fn replay_loop(&self, start: usize, end: usize) -> Option<Result<O::Tree>> {
        let c = self.last_small()?;
        let lw = c.small.as_ref()?;
        if !c.fits(&[Tensor::scalar(start as f32)], &[]) {
            return None;
        }
        let carries = c.state_carries()?;
        let iter_node = *c.body.arg_nodes.first()?;
        let first = Tensor::scalar(start as f32);
        Some(Ok(replay_small_with(&c, lw, &[first], |inputs| {
            lw.run_loop(inputs, iter_node, (start, end), &carries)
        })))
    }

    /// Rows `start..end` of a [`scan`](super::scan) over this (`(carry, x)` argument, `(carry, y)` output)
    /// function, on one arena when its last program is a small one: the carry and the written
    /// states are copied to the slots the next iteration reads, each row of `xs` into the `x`
    /// slot. Returns the last iteration's outputs and the stacked `y` rows; `None` when that
    /// does not apply (the caller then loops over `call`).
    pub(super) fn replay_scan(
        &self,
        carry: &Tensor,
        xs: &Tensor,
        (start, end): (usize, usize),
    ) -> Option<Result<(O::Tree, Tensor)>> {
        let c = self.last_small()?;
        let lw = c.small.as_ref()?;
        let row = xs.try_index_axis(0, start as isize).ok()?;
        let leaves = [carry.clone(), row];
        if !c.fits(&leaves, &[]) || c.body.outputs.len() != 2 || xs.dtype() != lw.dtype {
            return None;
        }
        let (&c_in, &x_in) = (c.body.arg_nodes.first()?, c.body.arg_nodes.get(1)?);
        let (c_out, y_out) = (c.small_wanted[0], c.small_wanted[1]);
        if lw.shape_of(c_out) != lw.shape_of(c_in) {
            return None;
        }
        let mut carries = c.state_carries()?;
        carries.push((c_out, c_in));
        let mut ys = None;
        let out = replay_small_with(&c, lw, &leaves, |inputs| {
            ys = Some(lw.run_scan(inputs, x_in, xs, (start, end), &carries, y_out));
        });
        Some(Ok((out, ys?)))
    }
}
