//! The pure-function view of a stateful function, and the reverse/forward products on it that
//! every transform plugin is built from.

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use crate::trace::{self, BackwardOpts, ExitPolicy, Frame};
use std::collections::HashMap;
use std::ops::Range;

/// A stateful function seen as a pure one: `(grad-state values, then the selected arguments'
/// leaves) -> output`. This is what a [`crate::TransformPlugin`] receives; it never sees a
/// [`State`](crate::State). Calling it runs the user's function once with those values
/// substituted; states the function writes keep their new values, as in a direct call.
pub struct PureFn<'a> {
    pub(crate) f: &'a dyn Fn(&[Tensor]) -> Result<Tensor>,
    /// How many leading inputs are state values.
    pub n_states: usize,
    /// The input range of each selected argument, in `argnums` order (shifted past the states).
    pub arg_ranges: Vec<Range<usize>>,
    pub(crate) debug_nan: bool,
    /// A label per input for messages: the state's path or name, or `arg i`.
    pub labels: Vec<String>,
}

/// Default labels: `state i` for the states, `arg k` (or `arg k[j]`) for argument tensors.
pub(crate) fn default_labels(n_states: usize, arg_ranges: &[Range<usize>]) -> Vec<String> {
    let mut out: Vec<String> = (0..n_states).map(|i| format!("state {i}")).collect();
    for (k, r) in arg_ranges.iter().enumerate() {
        for j in 0..r.len() {
            out.push(if r.len() == 1 {
                format!("arg {k}")
            } else {
                format!("arg {k}[{j}]")
            });
        }
    }
    out
}

impl PureFn<'_> {
    /// Evaluate the function at `inputs`.
    pub fn call(&self, inputs: &[Tensor]) -> Result<Tensor> {
        (self.f)(inputs)
    }

    /// Number of inputs.
    pub fn n_inputs(&self) -> usize {
        self.arg_ranges.last().map_or(self.n_states, |r| r.end)
    }

    /// Whether `debug_nan` checks are on.
    pub fn debug_nan(&self) -> bool {
        self.debug_nan
    }
}

/// The linear map `cotangent -> input cotangents` of one evaluation (see [`vjp_pure`]).
pub struct Pullback {
    tape: trace::Tape,
    out_node: Option<u32>,
    input_nodes: Vec<u32>,
    inputs: Vec<Tensor>,
    out_shape: Vec<usize>,
    out_dtype: DType,
    debug_nan: bool,
    labels: Vec<String>,
}

impl Pullback {
    /// Input cotangents for the output cotangent `cot` (which has the output's shape). Inputs the
    /// output does not depend on get zeros. Operations are recorded on any enclosing transform,
    /// so the result can be differentiated again.
    pub fn call(&self, cot: &Tensor) -> Result<Vec<Tensor>> {
        if cot.shape() != self.out_shape.as_slice() {
            return Err(Error::ShapeMismatch {
                op: "vjp cotangent",
                lhs: self.out_shape.as_slice().into(),
                rhs: cot.shape().into(),
            });
        }
        let opt = self.call_sparse(cot)?;
        Ok(opt
            .into_iter()
            .zip(&self.inputs)
            .map(|(g, x)| g.unwrap_or_else(|| x.zeros_like()))
            .collect())
    }

    /// Like [`Pullback::call`], but `None` for inputs that receive no cotangent (symbolic zeros).
    pub fn call_sparse(&self, cot: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.pull(cot, 0)
    }

    /// A chunk of cotangents in one backward pass: `cots` has shape `(C,) + out_shape`; each
    /// result has shape `(C,) + input.shape` (row `c` is the pullback of `cots[c]`).
    pub fn call_batch(&self, cots: &Tensor) -> Result<Vec<Tensor>> {
        if cots.ndim() != self.out_shape.len() + 1 || cots.shape()[1..] != self.out_shape[..] {
            return Err(Error::ShapeMismatch {
                op: "batched vjp cotangents",
                lhs: self.out_shape.as_slice().into(),
                rhs: cots.shape().into(),
            });
        }
        let c = cots.shape()[0];
        Ok(self
            .pull(cots, 1)?
            .into_iter()
            .zip(&self.inputs)
            .map(|(g, x)| {
                g.unwrap_or_else(|| {
                    let mut shape = vec![c];
                    shape.extend_from_slice(x.shape());
                    Tensor::full_dtype(&shape, 0.0, x.dtype())
                })
            })
            .collect())
    }

    fn pull(&self, cot: &Tensor, nb: usize) -> Result<Vec<Option<Tensor>>> {
        let Some(out) = self.out_node else {
            return Ok(vec![None; self.inputs.len()]);
        };
        let cot = cot.cast(self.out_dtype);
        let mut report = trace::NanReport::default();
        let res = trace::backward_reporting(
            &self.tape,
            out,
            cot,
            &self.input_nodes,
            BackwardOpts {
                debug_nan: self.debug_nan,
                nb,
                chunk_vjp: Some(crate::vmap::batched_vjp),
            },
            &mut report,
        )?;
        if let Some(primitive) = report.first {
            let bad: Vec<&str> = res
                .iter()
                .zip(&self.labels)
                .filter(|(g, _)| {
                    g.as_ref()
                        .is_some_and(|g| g.f64_data().iter().any(|v| !v.is_finite()))
                })
                .map(|(_, l)| l.as_str())
                .collect();
            return Err(Error::NonFinite {
                primitive,
                location: Some(if bad.is_empty() {
                    "an intermediate cotangent".to_string()
                } else {
                    format!("gradient of {}", bad.join(", "))
                }),
            });
        }
        Ok(res
            .into_iter()
            .zip(&self.inputs)
            .map(|(g, x)| g.map(|g| g.cast(x.dtype())))
            .collect())
    }

    /// The shape of the output.
    pub fn out_shape(&self) -> &[usize] {
        &self.out_shape
    }

    /// The inputs this pullback was linearised at.
    pub fn inputs(&self) -> &[Tensor] {
        &self.inputs
    }
}

/// Evaluate `f` at `inputs` and linearise it: the output and its [`Pullback`].
///
/// ```
/// use stategrad_core::{transform::engine::{vjp_pure, PureFn}, Tensor};
/// let f = |xs: &[Tensor]| Ok((&xs[0] * &xs[0]).sum());
/// let pf = PureFn::new(&f, 0, vec![0..1]);
/// let (y, pb) = vjp_pure(&pf, &[Tensor::new([1.0f32, 2.0])]).unwrap();
/// assert_eq!(y.item().unwrap(), 5.0);
/// assert_eq!(pb.call(&Tensor::scalar(1.0f32)).unwrap()[0].to_string(), "[2. 4.]");
/// ```
pub fn vjp_pure(f: &PureFn<'_>, inputs: &[Tensor]) -> Result<(Tensor, Pullback)> {
    let guard = trace::push_frame(true, ExitPolicy::KeepWrites, HashMap::new());
    let level = guard.level();
    let mut tagged = Vec::with_capacity(inputs.len());
    let mut nodes = Vec::with_capacity(inputs.len());
    for x in inputs {
        let (t, n) = guard.input(x);
        tagged.push(t);
        nodes.push(n);
    }
    let out = f.call(&tagged);
    let ok = out.is_ok();
    let frame: Frame = guard.close(ok);
    let out = out?;
    if f.debug_nan {
        if let Some(p) = trace::first_nonfinite(&frame.tape) {
            return Err(Error::NonFinite {
                primitive: p,
                location: None,
            });
        }
    }
    let out_node = trace::node_of(&out, level);
    let value = trace::strip(&out, level);
    Ok((
        value.clone(),
        Pullback {
            tape: frame.tape,
            out_node,
            input_nodes: nodes,
            inputs: inputs.to_vec(),
            out_shape: value.shape().to_vec(),
            out_dtype: value.dtype(),
            debug_nan: f.debug_nan,
            labels: f.labels.clone(),
        },
    ))
}

/// The Jacobian-vector product: `f(inputs)` and `J · tangents`, by transposing the pullback
/// (itself a linear function recorded on a tape), so it needs only the primitives' transpose
/// rules and works at any order.
pub fn jvp_pure(
    f: &PureFn<'_>,
    inputs: &[Tensor],
    tangents: &[Tensor],
) -> Result<(Tensor, Tensor)> {
    if tangents.len() != inputs.len() {
        return Err(Error::InvalidArgument {
            op: "jvp",
            msg: format!("{} tangents for {} inputs", tangents.len(), inputs.len()),
        });
    }
    for (t, x) in tangents.iter().zip(inputs) {
        if t.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                op: "jvp tangent",
                lhs: x.shape().into(),
                rhs: t.shape().into(),
            });
        }
    }
    let (value, pb) = vjp_pure(f, inputs)?;
    let jt = pb.jvp(tangents)?;
    Ok((value, jt))
}

impl Pullback {
    /// `J · tangents` from this linearisation (forward-mode product by transposition).
    pub fn jvp(&self, tangents: &[Tensor]) -> Result<Tensor> {
        let t: Vec<Option<Tensor>> = tangents.iter().cloned().map(Some).collect();
        self.jvp_sparse(&t)
    }

    /// `J · tangents` where `None` is a zero tangent (its input costs nothing).
    pub fn jvp_sparse(&self, tangents: &[Option<Tensor>]) -> Result<Tensor> {
        self.push_forward(tangents, 0)
    }

    /// A chunk of tangents in one pass: every `Some` tangent has shape `(C,) + input.shape`;
    /// the result has shape `(C,) + out_shape` (row `c` is `J · tangents[c]`).
    pub fn jvp_batch(&self, tangents: &[Option<Tensor>]) -> Result<Tensor> {
        for (t, x) in tangents.iter().zip(&self.inputs) {
            if let Some(t) = t {
                if t.ndim() != x.ndim() + 1 || t.shape()[1..] != *x.shape() {
                    return Err(Error::ShapeMismatch {
                        op: "batched jvp tangent",
                        lhs: x.shape().into(),
                        rhs: t.shape().into(),
                    });
                }
            }
        }
        self.push_forward(tangents, 1)
    }

    /// `J · t` by transposing the (linear, recorded) pullback: pull back a traced cotangent `u`,
    /// contract with the tangents, and differentiate w.r.t. `u`. `u` is abstract (a shape, no
    /// data) where nothing outside records: the pullback is linear in it, so recording it runs
    /// no kernel on it (only the shape rules), and the transpose needs only the concrete
    /// residuals the pullback multiplies `u` by. Programs with user rules (custom VJP/JVP, which
    /// may read data) or NaN checks use a concrete zero `u`, as does a retry when the abstract
    /// pass fails.
    fn push_forward(&self, tangents: &[Option<Tensor>], nb: usize) -> Result<Tensor> {
        let batch: Vec<usize> = tangents
            .iter()
            .flatten()
            .next()
            .map_or_else(Vec::new, |t| t.shape()[..nb].to_vec());
        let mut u_shape = batch.clone();
        u_shape.extend_from_slice(&self.out_shape);
        // The tangent of the output has the output's dtype (an f32 -> f64 function has f64 tangents).
        let u0 = Tensor::full_dtype(&u_shape, 0.0, self.out_dtype);
        if tangents.iter().all(Option::is_none) {
            return Ok(u0);
        }
        // Only where no enclosing transform records: an outer tape would see the abstract
        // values (a higher-order derivative through this product, or a `jit` program).
        let user_rules = self.tape.nodes.iter().any(|n| match n {
            trace::Node::Op(op) => op.prim.user_rules(),
            trace::Node::Input => false,
        });
        if !self.debug_nan && !user_rules && !trace::recording() {
            let shape = u_shape.as_slice().into();
            let ua = Tensor::abstract_value(shape, self.out_dtype, Default::default());
            // A zero (no path from `u`) may be a rule that lost track of it: redone below.
            if let Ok(Some(r)) = self.transpose_pull(&ua, tangents, nb) {
                if !r.is_abstract() {
                    return Ok(r);
                }
            }
        }
        Ok(self.transpose_pull(&u0, tangents, nb)?.unwrap_or(u0))
    }

    /// The gradient w.r.t. `u` of `sum_i <pull(u)_i, t_i>`, i.e. `J · t`; `None` when it is zero.
    fn transpose_pull(
        &self,
        u0: &Tensor,
        tangents: &[Option<Tensor>],
        nb: usize,
    ) -> Result<Option<Tensor>> {
        let guard = if u0.is_abstract() {
            trace::push_abstract_frame()
        } else {
            trace::push_frame(true, ExitPolicy::KeepWrites, HashMap::new())
        };
        let level = guard.level();
        let (u, u_node) = guard.input(u0);
        let res = (|| -> Result<Tensor> {
            let grads = self.pull(&u, nb)?;
            let mut acc: Option<Tensor> = None;
            for (g, t) in grads.iter().zip(tangents) {
                let (Some(g), Some(t)) = (g, t) else { continue };
                let term = g.try_mul(&t.cast(g.dtype()))?.sum();
                acc = Some(match acc {
                    None => term,
                    Some(a) => a.try_add(&term)?,
                });
            }
            Ok(acc.unwrap_or_else(|| Tensor::scalar_of(0.0, u0.dtype())))
        })();
        let frame = guard.close(res.is_ok());
        let s = res?;
        let Some(s_node) = trace::node_of(&s, level) else {
            return Ok(None);
        };
        let one = Tensor::scalar_of(1.0, s.dtype());
        let r = trace::backward(&frame.tape, s_node, one, &[u_node], BackwardOpts::default())?;
        Ok(r.into_iter().next().flatten())
    }
}

impl<'a> PureFn<'a> {
    /// A pure function over `n_states` state values then the given argument ranges (for tests
    /// and for plugins that build their own).
    pub fn new(
        f: &'a dyn Fn(&[Tensor]) -> Result<Tensor>,
        n_states: usize,
        arg_ranges: Vec<Range<usize>>,
    ) -> Self {
        let labels = default_labels(n_states, &arg_ranges);
        PureFn {
            f,
            n_states,
            arg_ranges,
            debug_nan: false,
            labels,
        }
    }
}
