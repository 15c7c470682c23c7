//! The transform-plugin contract and the built-in derivative plugins.

use super::engine::{vjp_pure, Pullback, PureFn};
use super::params::{check_params_against, ParamKind, ParamSpec, ParamValue, Params};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use crate::trace;
use rayon::prelude::*;
use std::fmt;

/// First- or second-order results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// One result per input (gradients, Jacobians).
    First,
    /// One block per pair of inputs, row-major (Hessians).
    Second,
}

/// What a plugin returns: one tensor per input (first order; for Jacobians of shape
/// `value.shape + input.shape`) or one block per pair of inputs, row-major (second order), and
/// the function's value.
#[derive(Clone, Debug)]
pub struct TransformOutput {
    /// The derivatives.
    pub grads: Vec<Tensor>,
    /// The function's value at the inputs.
    pub value: Tensor,
}

/// A derivative transform: given the pure function (state values first, then the selected
/// arguments' tensors), the point and the parameters, compute the derivatives.
///
/// Contract:
/// - `f` may be called any number of times; each call runs the user's function (and its state
///   writes) once, so built-in plugins call it once and replay the tape instead.
/// - The result has `inputs.len()` tensors for [`Order::First`] (each ending in its input's
///   shape, with its dtype) or `inputs.len()²` for [`Order::Second`]; anything else is reported
///   as [`Error::MalformedPluginResult`].
/// - Plugins never see `State` objects and must not keep `f` beyond the call.
///
/// ```
/// use stategrad_core::transform::{grad_pure, Order, Params, PureFn, TransformOutput, TransformPlugin};
/// use stategrad_core::{GradientTransform, Result, Tensor};
/// use std::sync::Arc;
///
/// /// Gradients multiplied by the parameter `scale`.
/// struct Scaled;
/// impl TransformPlugin for Scaled {
///     fn name(&self) -> &str { "scaled_grad" }
///     fn transform(&self, f: &PureFn<'_>, inputs: &[Tensor], p: &Params) -> Result<TransformOutput> {
///         let scale = p.f64(self.name(), "scale")?;
///         let (grads, value) = grad_pure(f, inputs)?;
///         Ok(TransformOutput { grads: grads.iter().map(|g| g * scale).collect(), value })
///     }
/// }
/// let f = |x: Tensor| x.square().sum();
/// let g = GradientTransform::new(f, Arc::new(Scaled), Params::new().with("scale", 0.5))
///     .call(Tensor::new([1.0f32, 2.0])).unwrap();
/// assert_eq!(g.to_string(), "[1. 2.]");
/// ```
pub trait TransformPlugin: Send + Sync {
    /// The plugin's name (used in errors and the registry).
    fn name(&self) -> &str;
    /// First-order (default) or second-order results.
    fn order(&self) -> Order {
        Order::First
    }
    /// The parameters this plugin takes ([`ParamSpec`]s), or `None` for a plugin that reads
    /// and checks its parameters itself in `transform`. The default [`check_params`] refuses,
    /// before the function runs, any parameter outside the spec, a missing required one and a
    /// value of the wrong kind, with the same [`Error::PluginParam`] for every plugin.
    ///
    /// [`check_params`]: TransformPlugin::check_params
    ///
    /// ```
    /// use stategrad_core::transform::{JacRevPlugin, ParamKind, TransformPlugin};
    /// let spec = JacRevPlugin.param_spec().unwrap();
    /// assert_eq!(spec[0].name, "chunk_size");
    /// assert_eq!(spec[0].kind, ParamKind::PositiveInt);
    /// ```
    fn param_spec(&self) -> Option<&[ParamSpec]> {
        None
    }
    /// Refuse parameters this plugin does not take or whose values it cannot use, before the
    /// function runs (transforms call it first, so a typo is an error rather than a default).
    /// The default checks them against [`param_spec`](TransformPlugin::param_spec) (and
    /// accepts anything when there is none).
    ///
    /// ```
    /// use stategrad_core::transform::{JacRevPlugin, Params, TransformPlugin};
    /// use stategrad_core::Error;
    /// assert!(JacRevPlugin.check_params(&Params::new().with("chunk_size", 4)).is_ok());
    /// let bad = JacRevPlugin.check_params(&Params::new().with("chunk_size", 0));
    /// assert!(matches!(bad, Err(Error::PluginParam { .. })));
    /// let typo = JacRevPlugin.check_params(&Params::new().with("chunksize", 4));
    /// assert!(matches!(typo, Err(Error::PluginParam { .. })));
    /// ```
    fn check_params(&self, params: &Params) -> Result<()> {
        match self.param_spec() {
            Some(spec) => check_params_against(self.name(), spec, params),
            None => Ok(()),
        }
    }
    /// Compute the derivatives of `f` at `inputs`.
    fn transform(
        &self,
        f: &PureFn<'_>,
        inputs: &[Tensor],
        params: &Params,
    ) -> Result<TransformOutput>;
}

impl fmt::Debug for dyn TransformPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransformPlugin({})", self.name())
    }
}

/// The parameters of the Jacobian plugins.
const CHUNK_PARAMS: &[ParamSpec] = &[ParamSpec::optional("chunk_size", ParamKind::PositiveInt)];

/// The gradient of a scalar pure function and its value: the building block of gradient plugins.
pub fn grad_pure(f: &PureFn<'_>, inputs: &[Tensor]) -> Result<(Vec<Tensor>, Tensor)> {
    let (value, pb) = vjp_pure(f, inputs)?;
    if !value.is_scalar() {
        return Err(Error::NonScalarOutput {
            shape: value.shape_display(),
        });
    }
    if !value.dtype().is_float() {
        return Err(Error::UnsupportedDType {
            op: "grad",
            dtype: value.dtype().name(),
            expected: "a float output (an integer or bool value has no gradient)",
        });
    }
    let grads = pb.call(&Tensor::scalar_of(1.0, value.dtype()))?;
    Ok((grads, value))
}

/// `grad`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GradPlugin;

impl TransformPlugin for GradPlugin {
    fn name(&self) -> &str {
        "grad"
    }
    fn param_spec(&self) -> Option<&[ParamSpec]> {
        Some(&[])
    }
    fn transform(&self, f: &PureFn<'_>, inputs: &[Tensor], _: &Params) -> Result<TransformOutput> {
        let (grads, value) = grad_pure(f, inputs)?;
        Ok(TransformOutput { grads, value })
    }
}

/// `vector_grad`: VJP with an all-ones cotangent.
#[derive(Clone, Copy, Debug, Default)]
pub struct VectorGradPlugin;

impl TransformPlugin for VectorGradPlugin {
    fn name(&self) -> &str {
        "vector_grad"
    }
    fn param_spec(&self) -> Option<&[ParamSpec]> {
        Some(&[])
    }
    fn transform(&self, f: &PureFn<'_>, inputs: &[Tensor], _: &Params) -> Result<TransformOutput> {
        let (value, pb) = vjp_pure(f, inputs)?;
        let grads = pb.call(&value.ones_like())?;
        Ok(TransformOutput { grads, value })
    }
}

/// Rows `start..start + count` of the identity of size `n`, shaped `(count,) + shape`;
/// `count` comes from the user's `chunk_size`, so its size is checked.
fn basis_chunk(shape: &[usize], start: usize, count: usize, like: &Tensor) -> Result<Tensor> {
    fn rows<T: crate::tensor::Float>(n: usize, start: usize, count: usize) -> Result<Vec<T>> {
        let len = count.checked_mul(n).ok_or_else(|| Error::ShapeOverflow {
            op: "jacobian",
            shape: crate::ShapeDisplay(vec![count, n]),
        })?;
        let mut v = Vec::new();
        v.try_reserve_exact(len)
            .map_err(|_| Error::AllocationFailed {
                op: "jacobian",
                elements: len,
                dtype: T::DTYPE.name(),
            })?;
        v.resize(len, T::ZERO);
        for r in 0..count {
            v[r * n + start + r] = T::ONE;
        }
        Ok(v)
    }
    let n: usize = shape.iter().product();
    let mut full = vec![count];
    full.extend_from_slice(shape);
    // Made in the value's dtype directly (no f64 buffer and cast per chunk).
    match like.dtype() {
        DType::F32 => Tensor::from_vec(rows::<f32>(n, start, count)?, &full),
        DType::F64 => Tensor::from_vec(rows::<f64>(n, start, count)?, &full),
        dt => Err(Error::InvalidArgument {
            op: "jacobian",
            msg: format!("cannot build a tangent basis of dtype {}", dt.name()),
        }),
    }
}

/// Run `f(i)` for `i in 0..n`, in parallel over rayon when no transform is recording on this
/// thread (an enclosing transform needs the work on its own thread, recorded). Chunks only
/// replay a closed tape, so this thread's state frames are not needed on the workers; kernels
/// inside a chunk stay sequential (parallelism at one level).
fn map_chunks<T: Send>(n: usize, f: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    if trace::recording() || n < 2 || !crate::parallel::may_split() {
        (0..n).map(f).collect()
    } else {
        (0..n)
            .into_par_iter()
            .map(|i| crate::parallel::with_sequential(|| f(i)))
            .collect()
    }
}

/// Basis vectors per chunk: the `chunk_size` parameter (it bounds memory: a chunk's pass holds
/// `chunk` copies of every intermediate), else an even split over the rayon threads, or one
/// chunk while a transform or `jit` records: recorded chunks run one after another on this
/// thread, and one batch lets every kernel split over the threads. It holds as many basis
/// vectors at once as the eager default does on all threads together (a replay of several
/// chunks could have freed one chunk's values before the next) (W3's jitted jacrev and jacfwd on 2 threads: 17–22 % faster, now
/// level with eager).
fn chunk_size(n: usize, params: &Params) -> usize {
    match params.get("chunk_size") {
        Some(ParamValue::I64(c)) if *c > 0 => *c as usize,
        _ if trace::recording() => n.max(1),
        _ => n.div_ceil(rayon::current_num_threads().max(1)).max(1),
    }
}

/// `(start, count)` of each chunk of `0..n`.
fn chunks(n: usize, params: &Params) -> Vec<(usize, usize)> {
    let c = chunk_size(n, params);
    (0..n).step_by(c).map(|s| (s, c.min(n - s))).collect()
}

/// Reverse-mode Jacobian from a pullback: one tensor per input of shape `out + input`. Rows are
/// pulled back a chunk at a time (one backward pass per chunk, the basis as a batch dimension),
/// chunks spread over rayon.
pub fn jacobian_rows(pb: &Pullback, value: &Tensor, params: &Params) -> Result<Vec<Tensor>> {
    let m = value.numel();
    let parts = chunks(m, params);
    let rows = map_chunks(parts.len(), |ci| {
        let (start, count) = parts[ci];
        pb.call_batch(&basis_chunk(value.shape(), start, count, value)?)
    })?;
    (0..pb.inputs().len())
        .map(|j| {
            let x = &pb.inputs()[j];
            let mut shape = value.shape().to_vec();
            shape.extend_from_slice(x.shape());
            if m == 0 {
                return Tensor::try_full_dtype(&shape, 0.0, x.dtype());
            }
            let blocks: Vec<&Tensor> = rows.iter().map(|r| &r[j]).collect();
            Tensor::try_concat(&blocks, 0)?.try_reshape_to(&shape)
        })
        .collect()
}

/// `jacrev`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JacRevPlugin;

impl TransformPlugin for JacRevPlugin {
    fn name(&self) -> &str {
        "jacrev"
    }
    fn param_spec(&self) -> Option<&[ParamSpec]> {
        Some(CHUNK_PARAMS)
    }
    fn transform(
        &self,
        f: &PureFn<'_>,
        inputs: &[Tensor],
        params: &Params,
    ) -> Result<TransformOutput> {
        let (value, pb) = vjp_pure(f, inputs)?;
        let grads = jacobian_rows(&pb, &value, params)?;
        Ok(TransformOutput { grads, value })
    }
}

/// `jacfwd`: columns by forward products.
#[derive(Clone, Copy, Debug, Default)]
pub struct JacFwdPlugin;

impl TransformPlugin for JacFwdPlugin {
    fn name(&self) -> &str {
        "jacfwd"
    }
    fn param_spec(&self) -> Option<&[ParamSpec]> {
        Some(CHUNK_PARAMS)
    }
    fn transform(
        &self,
        f: &PureFn<'_>,
        inputs: &[Tensor],
        params: &Params,
    ) -> Result<TransformOutput> {
        let (value, pb) = vjp_pure(f, inputs)?;
        let grads = inputs
            .iter()
            .enumerate()
            .map(|(j, x)| {
                let n = x.numel();
                let mut shape = value.shape().to_vec();
                shape.extend_from_slice(x.shape());
                if n == 0 {
                    return Tensor::try_full_dtype(&shape, 0.0, x.dtype());
                }
                // Columns a chunk at a time: the basis tangents of input j (zero for the
                // others, which then cost nothing) as a batch dimension.
                let parts = chunks(n, params);
                let cols = map_chunks(parts.len(), |ci| {
                    let (start, count) = parts[ci];
                    let tangents: Vec<Option<Tensor>> = (0..inputs.len())
                        .map(|k| {
                            (k == j)
                                .then(|| basis_chunk(x.shape(), start, count, x))
                                .transpose()
                        })
                        .collect::<Result<_>>()?;
                    pb.jvp_batch(&tangents)
                })?;
                let blocks: Vec<&Tensor> = cols.iter().collect();
                // (n, out...) -> (out..., n) -> out + input.
                let cols = Tensor::try_concat(&blocks, 0)?;
                let perm: Vec<usize> = (1..=value.ndim()).chain([0]).collect();
                cols.try_permute(&perm)?
                    .cast(x.dtype())
                    .try_reshape_to(&shape)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TransformOutput { grads, value })
    }
}

/// `hessian`: the Jacobian of the reverse-mode Jacobian, blocks row-major over input pairs.
#[derive(Clone, Copy, Debug, Default)]
pub struct HessianPlugin;

impl TransformPlugin for HessianPlugin {
    fn name(&self) -> &str {
        "hessian"
    }
    fn param_spec(&self) -> Option<&[ParamSpec]> {
        Some(CHUNK_PARAMS)
    }
    fn order(&self) -> Order {
        Order::Second
    }
    fn transform(
        &self,
        f: &PureFn<'_>,
        inputs: &[Tensor],
        params: &Params,
    ) -> Result<TransformOutput> {
        let value_cell = std::cell::RefCell::new(None);
        let shapes = std::cell::RefCell::new(Vec::new());
        // g(x) = all first-order Jacobians, flattened and joined: its Jacobian holds every block.
        let g = |xs: &[Tensor]| -> Result<Tensor> {
            let (value, pb) = vjp_pure(f, xs)?;
            let jac = jacobian_rows(&pb, &value, params)?;
            let flat: Vec<Tensor> = jac
                .iter()
                .map(|j| j.try_reshape_to(&[j.numel()]))
                .collect::<Result<_>>()?;
            *shapes.borrow_mut() = jac.iter().map(|j| j.shape().to_vec()).collect();
            let dtype = value.dtype();
            *value_cell.borrow_mut() = Some(value);
            if flat.is_empty() {
                // No inputs (an empty grad_states): no blocks, but the value is still computed.
                return Ok(Tensor::full_dtype(&[0], 0.0, dtype));
            }
            let refs: Vec<&Tensor> = flat.iter().collect();
            Tensor::try_concat(&refs, 0)
        };
        let pg = PureFn {
            f: &g,
            n_states: f.n_states,
            arg_ranges: f.arg_ranges.clone(),
            debug_nan: f.debug_nan,
            labels: f.labels.clone(),
        };
        let (flat, pb) = vjp_pure(&pg, inputs)?;
        let outer = jacobian_rows(&pb, &flat, params)?; // per input j: (total, in_j...)
        let shapes = shapes.into_inner();
        let n = inputs.len();
        let mut grads = Vec::with_capacity(n * n);
        let mut starts = Vec::with_capacity(n);
        let mut acc = 0;
        for s in &shapes {
            starts.push(acc);
            acc += s.iter().product::<usize>();
        }
        for i in 0..n {
            let len: usize = shapes[i].iter().product();
            for (j, oj) in outer.iter().enumerate() {
                let mut shape = shapes[i].clone();
                shape.extend_from_slice(inputs[j].shape());
                grads.push(
                    oj.try_slice_axis(0, starts[i], starts[i] + len)?
                        .try_reshape_to(&shape)?,
                );
            }
        }
        let value = value_cell
            .into_inner()
            .ok_or_else(|| Error::Unsupported("hessian: no value".into()))?;
        Ok(TransformOutput { grads, value })
    }
}

/// `vjp` with a given output cotangent: the pullback of `cotangent` to every input (states and
/// arguments), with the function's value. `grad` is this plugin with a cotangent of 1.
#[derive(Clone, Debug)]
pub struct VjpPlugin {
    /// The output cotangent (the output's shape).
    pub cotangent: Tensor,
}

impl TransformPlugin for VjpPlugin {
    fn name(&self) -> &str {
        "vjp"
    }
    fn param_spec(&self) -> Option<&[ParamSpec]> {
        Some(&[])
    }
    fn transform(&self, f: &PureFn<'_>, inputs: &[Tensor], _: &Params) -> Result<TransformOutput> {
        let (value, pb) = vjp_pure(f, inputs)?;
        let grads = pb.call(&self.cotangent)?;
        Ok(TransformOutput { grads, value })
    }
}
