//! `vmap`: map a function over a batch axis of its arguments.
//!
//! Each example sees its slice of the batched arguments (`in_axes`); unbatched arguments and
//! every state the function reads are shared (broadcast); outputs are stacked along `out_axes`.
//! Operations run through the normal primitives, so `grad(vmap(f))` differentiates through the
//! map, and results do not depend on the thread count.
//!
//! Writing a state inside a vmapped function is an error ([`Error::Unsupported`] naming the
//! state): one state cannot hold one value per example. Per-example gradients are
//! `vmap(|x| grad(loss).grad_states(params.clone()).call(x))`, with the path-keyed result batched.
//!
//! The function is traced once (on the first example) and the recorded program runs once over
//! the whole batch through the batch rule each primitive declares, so per-example products
//! become batched GEMMs. A function that cannot be traced because it reads data to decide what
//! to do (`item`, `to_vec` on a traced value) is mapped example by example instead: examples
//! then run in parallel over rayon (kernels inside an example sequential), or in order on this
//! thread when an enclosing transform records them.

mod batched;
pub(crate) use batched::batched_vjp;

use crate::error::{Error, Result};
use crate::jit::JitOutput;
use crate::tensor::Tensor;
use crate::trace::{self, with_states, ExitPolicy};
use crate::tree::{Args, Tree};
use rayon::prelude::*;
use std::collections::HashMap;
use std::marker::PhantomData;

/// A vmapped function; see the [module docs](self).
///
/// ```
/// use stategrad_core::{vmap, Tensor};
/// let w = Tensor::new([[1.0f32, 0.0], [0.0, 2.0]]);
/// let f = |x: Tensor| w.matmul(&x).sum();
/// let xs = Tensor::new([[1.0f32, 1.0], [2.0, 3.0], [0.0, 1.0]]);
/// assert_eq!(vmap(f).call(xs).unwrap().to_string(), "[3. 8. 2.]");
/// ```
pub struct Vmap<F, A, O> {
    f: F,
    in_axes: Option<Vec<Option<usize>>>,
    out_axes: usize,
    _m: PhantomData<fn(A) -> O>,
}

/// Map `f` over axis 0 of every tensor argument (see [`Vmap`]).
pub fn vmap<F: Fn(A) -> O, A, O>(f: F) -> Vmap<F, A, O> {
    Vmap {
        f,
        in_axes: None,
        out_axes: 0,
        _m: PhantomData,
    }
}

impl<F, A, O> Vmap<F, A, O> {
    /// The batch axis of each positional argument (`None`: not batched, shared by every example).
    /// Without it, every argument made of tensors is batched along axis 0.
    pub fn in_axes(mut self, axes: impl Into<Vec<Option<usize>>>) -> Self {
        self.in_axes = Some(axes.into());
        self
    }

    /// The axis of the outputs along which examples are stacked (default 0).
    pub fn out_axes(mut self, axis: usize) -> Self {
        self.out_axes = axis;
        self
    }
}

impl<F, A, O> Vmap<F, A, O>
where
    A: Args + Send + Sync,
    O: JitOutput,
    O::Tree: Send + Sync,
{
    /// Run the map.
    ///
    /// Errors: `in_axes` of the wrong length or naming a missing axis, batched arguments of
    /// different batch sizes, a batch axis on a non-tensor argument, a state written inside,
    /// and any error of the function (the first example's, in order).
    pub fn call(&self, args: A) -> Result<O::Tree>
    where
        F: Fn(A) -> O + Sync,
    {
        let axes: Vec<Option<usize>> = match &self.in_axes {
            Some(a) if a.len() != A::LEN => {
                return Err(Error::InvalidOption {
                    option: "in_axes",
                    msg: format!("{} entries for a function of {} arguments", a.len(), A::LEN),
                })
            }
            Some(a) => a.clone(),
            None => (0..A::LEN)
                .map(|i| args.arg_leaves(i).ok().map(|_| 0))
                .collect(),
        };
        let mut batch: Option<usize> = None;
        let mut leaves: Vec<Option<Vec<Tensor>>> = Vec::with_capacity(A::LEN);
        for (i, ax) in axes.iter().enumerate() {
            let Some(ax) = *ax else {
                leaves.push(None);
                continue;
            };
            let ls = args.arg_leaves(i).map_err(|_| Error::InvalidOption {
                option: "in_axes",
                msg: format!("argument {i} has no tensors to map over; give it `None`"),
            })?;
            for t in &ls {
                let n = *t.shape().get(ax).ok_or_else(|| Error::InvalidOption {
                    option: "in_axes",
                    msg: format!(
                        "argument {i} of shape {} has no axis {ax}",
                        t.shape_display()
                    ),
                })?;
                match batch {
                    None => batch = Some(n),
                    Some(b) if b != n => {
                        return Err(Error::InvalidOption {
                            option: "in_axes",
                            msg: format!("batch sizes differ: {b} and {n} (argument {i})"),
                        })
                    }
                    _ => {}
                }
            }
            leaves.push(Some(ls));
        }
        let n = batch.ok_or_else(|| Error::InvalidOption {
            option: "in_axes",
            msg: "no argument is mapped over".into(),
        })?;
        if n == 0 {
            return Err(Error::InvalidOption {
                option: "in_axes",
                msg: "the batch is empty".into(),
            });
        }
        // The batched interpretation: trace one example, then run the program once over the
        // whole batch through each primitive's batch rule (GEMMs stay GEMMs over the batch).
        // A function that reads traced values (data-dependent control flow) cannot be traced
        // and is mapped example by example instead.
        if let Some(out) = self.call_batched(&args, &axes, &leaves, n)? {
            return Ok(out);
        }
        let example = |b: usize| -> Result<O::Tree> {
            let mut a = args.clone();
            for (i, ls) in leaves.iter().enumerate() {
                let (Some(ls), Some(ax)) = (ls, axes[i]) else {
                    continue;
                };
                let sliced: Vec<Tensor> = ls
                    .iter()
                    .map(|t| t.try_index_axis(ax, b as isize))
                    .collect::<Result<_>>()?;
                a.replace_arg(i, &mut sliced.into_iter());
            }
            let (out, touched) = with_states(HashMap::new(), ExitPolicy::RestoreAll, || {
                (self.f)(a).into_result()
            })?;
            if let Some((s, _)) = touched.iter().find(|(_, acc)| acc.written) {
                return Err(Error::Unsupported(format!(
                    "state {} is written inside vmap; a state holds one value, not one per example",
                    s.label()
                )));
            }
            Ok(out)
        };
        let outs: Vec<O::Tree> = if trace::recording() || n < 2 || !crate::parallel::may_split() {
            (0..n).map(example).collect::<Result<_>>()?
        } else {
            (0..n)
                .into_par_iter()
                .map(|b| crate::parallel::with_sequential(|| example(b)))
                .collect::<Result<_>>()?
        };
        stack_outputs(outs, self.out_axes)
    }
}

impl<F, A, O> Vmap<F, A, O>
where
    A: Args + Send + Sync,
    O: JitOutput,
    O::Tree: Send,
{
    fn call_batched(
        &self,
        args: &A,
        axes: &[Option<usize>],
        leaves: &[Option<Vec<Tensor>>],
        n: usize,
    ) -> Result<Option<O::Tree>>
    where
        F: Fn(A) -> O,
        O::Tree: Sync,
    {
        let mut first = args.clone();
        let mut batched_leaves: Vec<(Tensor, bool)> = Vec::new();
        for i in 0..A::LEN {
            match (&leaves[i], axes[i]) {
                (Some(ls), Some(ax)) => {
                    let sliced: Vec<Tensor> = ls
                        .iter()
                        .map(|t| t.try_index_axis(ax, 0))
                        .collect::<Result<_>>()?;
                    first.replace_arg(i, &mut sliced.into_iter());
                    for t in ls {
                        let mut perm: Vec<usize> = (0..t.ndim()).filter(|&d| d != ax).collect();
                        perm.insert(0, ax);
                        batched_leaves.push((t.try_permute(&perm)?, true));
                    }
                }
                _ => {
                    if let Ok(ls) = args.arg_leaves(i) {
                        batched_leaves.extend(ls.into_iter().map(|t| (t, false)));
                    }
                }
            }
        }
        let traced = match batched::trace_for_batching(&self.f, first) {
            Ok(t) => t,
            Err(Error::TracedValueRead { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(s) = traced.written_states().first() {
            return Err(Error::Unsupported(format!(
                "state {} is written inside vmap; a state holds one value, not one per example",
                s.label()
            )));
        }
        let (template, outs) = traced.run_batched(&batched_leaves)?;
        let mut it = outs.into_iter();
        let mut err = None;
        let axis = self.out_axes;
        let out = template.map_tensors(&mut |_| {
            let (t, batched) = it.next().expect("internal error: output count");
            let r = (|| {
                let t = if batched {
                    t
                } else {
                    let mut shape = vec![n];
                    shape.extend_from_slice(t.shape());
                    t.try_reshape_to(&[&[1], t.shape()].concat())?
                        .try_broadcast_to(&shape)?
                };
                if axis == 0 {
                    return Ok(t);
                }
                let mut perm: Vec<usize> = (1..t.ndim()).collect();
                if axis > perm.len() {
                    return Err(Error::InvalidOption {
                        option: "out_axes",
                        msg: format!(
                            "axis {axis} out of range for an output of rank {}",
                            t.ndim() - 1
                        ),
                    });
                }
                perm.insert(axis, 0);
                t.try_permute(&perm)
            })();
            r.unwrap_or_else(|e| {
                err.get_or_insert(e);
                Tensor::zeros(&[0])
            })
        });
        match err {
            Some(e) => Err(e),
            None => Ok(Some(out)),
        }
    }
}

/// Stack per-example trees tensor by tensor along `axis`.
fn stack_outputs<T: Tree + Clone>(outs: Vec<T>, axis: usize) -> Result<T> {
    let mut columns: Vec<Vec<Tensor>> = Vec::new();
    for (k, o) in outs.iter().enumerate() {
        let mut i = 0;
        o.for_each_tensor(&mut |t| {
            if k == 0 {
                columns.push(Vec::with_capacity(outs.len()));
            }
            if let Some(c) = columns.get_mut(i) {
                c.push(t.clone());
            }
            i += 1;
        });
    }
    let stacked: Vec<Tensor> = columns
        .iter()
        .map(|c| {
            let refs: Vec<&Tensor> = c.iter().collect();
            Tensor::try_stack(&refs, axis as isize)
        })
        .collect::<Result<_>>()?;
    let mut it = stacked.into_iter();
    Ok(outs[0].map_tensors(&mut |_| it.next().expect("internal error: output count")))
}
