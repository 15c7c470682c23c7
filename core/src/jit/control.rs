//! Control flow over compiled bodies: [`for_loop`] ([`Jit::call_loop`]), [`scan`] and [`cond`],
//! each one transaction over the states it touches.

use super::{jit, Jit, JitOutput};
use crate::error::Result;
use crate::state::State;
use crate::tensor::Tensor;
use crate::trace;
use crate::tree::Tree;
use std::collections::HashMap;

impl<F: Fn(Tensor) -> O, O: JitOutput> Jit<F, Tensor, O>
where
    O::Tree: Send + Sync,
{
    /// Run this jitted loop body for `i in 0..n` (`i` a 0-d f32 tensor) and return the last
    /// output: [`for_loop`] over a body compiled once. The first call traces; later calls replay
    /// the cached program, and when it is a small one all `n` iterations run on one arena (states
    /// written by an iteration are copied to the slots the next one reads; only the last
    /// iteration's outputs and states become tensors). Errors as [`Jit::call`]; `n == 0` is
    /// [`crate::Error::InvalidArgument`].
    ///
    /// ```
    /// use stategrad_core::{jit, State, Tensor};
    /// let x = State::new(Tensor::scalar(1.0f32));
    /// let body = jit(|_i: Tensor| {
    ///     x.set_value(x.value() * 2.0);
    ///     x.value()
    /// });
    /// assert_eq!(body.call_loop(10).unwrap().item().unwrap(), 1024.0);
    /// assert_eq!(body.call_loop(2).unwrap().item().unwrap(), 4096.0);
    /// assert_eq!(body.trace_count(), 1);
    /// ```
    pub fn call_loop(&self, n: usize) -> Result<O::Tree> {
        if n == 0 {
            return Err(crate::error::Error::InvalidArgument {
                op: "for_loop",
                msg: "needs at least one iteration".into(),
            });
        }
        // One transaction: an iteration that fails restores every state to its entry value.
        all_or_nothing(|| {
            let mut out = self.call(Tensor::scalar(0.0f32))?;
            if n > 1 {
                if let Some(last) = self.replay_loop(1, n) {
                    return last;
                }
            }
            for i in 1..n {
                out = self.call(Tensor::scalar(i as f32))?;
            }
            Ok(out)
        })
    }
}

/// Run `step(i)` for `i in 0..n`, tracing it once and replaying its compiled tape for every
/// iteration (JAX's `fori_loop` over a stateful body). `i` is a traced 0-d f32 tensor: use it in
/// arithmetic; reading it as a number is an error, as in `jit`. States the step writes carry
/// from one iteration to the next; under a transform, gradients flow through every iteration.
/// Returns the last step's output.
///
/// ```
/// use stategrad_core::{jit::for_loop, State, Tensor};
/// let x = State::new(Tensor::scalar(1.0f32));
/// let last = for_loop(10, |_i: Tensor| {
///     x.set_value(x.value() * 2.0);
///     x.value()
/// })
/// .unwrap();
/// assert_eq!(last.item().unwrap(), 1024.0);
/// ```
pub fn for_loop<F, O>(n: usize, step: F) -> Result<O::Tree>
where
    F: Fn(Tensor) -> O,
    O: JitOutput,
    O::Tree: Send + Sync,
{
    jit(step).call_loop(n)
}

/// `scan(f, carry, xs)`: `carry, y = f(carry, x)` for every row `x` of `xs` (along axis 0),
/// traced once and replayed per row; returns the final carry and the stacked `y`s. States the
/// body writes carry over too, and gradients flow through the whole loop. A small body runs
/// every row on one arena (carry and states copied between iterations, like
/// [`Jit::call_loop`]); under a recording transform each row is a recorded replay.
///
/// ```
/// use stategrad_core::{jit::scan, Tensor};
/// let xs = Tensor::new([1.0f32, 2.0, 3.0]);
/// let (total, partial) = scan(|(c, x): (Tensor, Tensor)| (&c + &x, &c + &x), Tensor::scalar(0.0f32), &xs).unwrap();
/// assert_eq!(total.item().unwrap(), 6.0);
/// assert_eq!(partial.to_string(), "[1. 3. 6.]");
/// ```
pub fn scan<F>(f: F, init: Tensor, xs: &Tensor) -> Result<(Tensor, Tensor)>
where
    F: Fn((Tensor, Tensor)) -> (Tensor, Tensor),
{
    let n = *xs
        .shape()
        .first()
        .ok_or_else(|| crate::error::Error::InvalidArgument {
            op: "scan",
            msg: "xs must have a leading axis to scan over".into(),
        })?;
    if n == 0 {
        return Ok((init, Tensor::zeros(&[0])));
    }
    all_or_nothing(|| scan_rows(f, init, xs, n))
}

/// Run `body` as one transaction over the states it touches: if it fails (or panics), every
/// state is back at its entry value, however many iterations had already written it.
fn all_or_nothing<R>(body: impl FnOnce() -> Result<R>) -> Result<R> {
    let (r, _) = trace::with_states(HashMap::new(), trace::ExitPolicy::KeepWrites, body)?;
    Ok(r)
}

fn scan_rows<F>(f: F, init: Tensor, xs: &Tensor, n: usize) -> Result<(Tensor, Tensor)>
where
    F: Fn((Tensor, Tensor)) -> (Tensor, Tensor),
{
    let body = jit(f);
    let (mut carry, y0) = body.call((init, xs.try_index_axis(0, 0)?))?;
    if n > 1 {
        if let Some(r) = body.replay_scan(&carry, xs, (1, n)) {
            let ((last, _), rest) = r?;
            // A leading axis on the first row is a reshape (no copy); the concat is the one copy.
            let first = y0.try_reshape_to(&[&[1], y0.shape()].concat())?;
            return Ok((last, Tensor::try_concat(&[&first, &rest], 0)?));
        }
    }
    let mut ys = Vec::with_capacity(n);
    ys.push(y0);
    for i in 1..n {
        let x = xs.try_index_axis(0, i as isize)?;
        let (c, y) = body.call((carry, x))?;
        carry = c;
        ys.push(y);
    }
    let refs: Vec<&Tensor> = ys.iter().collect();
    Ok((carry, Tensor::try_stack(&refs, 0)?))
}

/// `cond(pred, on_true, on_false)`: a data-dependent choice that works inside `jit`.
///
/// Outside `jit` (or when `pred` is not traced) only the chosen branch runs. Under `jit` both
/// branches are traced (each sees the states as they were before the `cond`), and the outputs
/// and every state either branch writes become an elementwise select on `pred`, so one compiled
/// program serves both outcomes. `pred` must have one element (nonzero is true); the branches
/// must return trees of the same structure and shapes. Gradients flow through the chosen branch.
///
/// ```
/// use stategrad_core::{jit, jit::cond, Tensor};
/// let f = jit(|x: Tensor| cond(&x.sum().gt_scalar(0.0), || &x * 2.0, || -&x));
/// assert_eq!(f.call(Tensor::new([1.0f32, 2.0])).unwrap().to_string(), "[2. 4.]");
/// assert_eq!(f.call(Tensor::new([-1.0f32, -2.0])).unwrap().to_string(), "[1. 2.]");
/// assert_eq!(f.trace_count(), 1);
/// ```
pub fn cond<T: Tree + Clone>(
    pred: &Tensor,
    on_true: impl FnOnce() -> T,
    on_false: impl FnOnce() -> T,
) -> Result<T> {
    if pred.numel() != 1 {
        return Err(crate::error::Error::InvalidArgument {
            op: "cond",
            msg: format!(
                "the predicate must have one element, it has shape {}",
                pred.shape_display()
            ),
        });
    }
    if !trace::jit_traced(pred) {
        return Ok(if pred.buf().get_f64(0) != 0.0 {
            on_true()
        } else {
            on_false()
        });
    }
    let branch = |f: Box<dyn FnOnce() -> T + '_>| {
        trace::with_states(HashMap::new(), trace::ExitPolicy::RestoreAll, || {
            let out = f();
            Ok((out, trace::innermost_written()))
        })
        .map(|(r, _)| r)
    };
    let (t_out, t_writes) = branch(Box::new(on_true))?;
    let (f_out, f_writes) = branch(Box::new(on_false))?;
    let mut f_leaves = Vec::new();
    f_out.for_each_tensor(&mut |t| f_leaves.push(t.clone()));
    let mut t_count = 0;
    t_out.for_each_tensor(&mut |_| t_count += 1);
    if t_count != f_leaves.len() {
        return Err(crate::error::Error::InvalidArgument {
            op: "cond",
            msg: format!(
                "the branches return {t_count} and {} tensors",
                f_leaves.len()
            ),
        });
    }
    // As in JAX, the branches must agree in shape and dtype: a select would broadcast, giving
    // the traced program a shape that neither branch has on its own.
    let same_type = |a: &Tensor, b: &Tensor| -> Result<()> {
        if a.shape() != b.shape() {
            return Err(crate::error::Error::ShapeMismatch {
                op: "cond",
                lhs: a.shape_display(),
                rhs: b.shape_display(),
            });
        }
        if a.dtype() != b.dtype() {
            return Err(crate::error::Error::DTypeMismatch {
                op: "cond",
                lhs: a.dtype().name(),
                rhs: b.dtype().name(),
            });
        }
        Ok(())
    };
    let mut err = None;
    let mut it = f_leaves.iter();
    let out = t_out.map_tensors(&mut |a| {
        let b = it.next().expect("counted above");
        same_type(a, b)
            .and_then(|()| Tensor::try_select(pred, a, b))
            .unwrap_or_else(|e| {
                err.get_or_insert(e);
                a.clone()
            })
    });
    if let Some(e) = err {
        return Err(e);
    }
    // States written by either branch take the selected value (the other branch's value, or the
    // value before the cond, where a branch left the state alone).
    let mut states: Vec<State> = Vec::new();
    for (s, _) in t_writes.iter().chain(&f_writes) {
        if !states.iter().any(|x| x.same(s)) {
            states.push(s.clone());
        }
    }
    // Every selected value is computed before any state is written: a failure leaves them all.
    let mut selected = Vec::with_capacity(states.len());
    for s in &states {
        let before = s.value();
        let pick = |w: &[(State, Tensor)]| {
            w.iter()
                .find(|(x, _)| x.same(s))
                .map_or(before.clone(), |(_, v)| v.clone())
        };
        let (t, f) = (pick(&t_writes), pick(&f_writes));
        same_type(&t, &f)?;
        selected.push(Tensor::try_select(pred, &t, &f)?);
    }
    for (s, v) in states.iter().zip(selected) {
        s.set_value(v);
    }
    Ok(out)
}
