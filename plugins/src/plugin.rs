//! [`ProcessedGrad`]: a [`TransformPlugin`] that differentiates with a base plugin (`grad` by
//! default) and then runs a [`GradientProcessor`] over all the gradients, and the transforms
//! built on it: [`scaled_grad`], [`clipped_grad`], [`processed_grad`].

use crate::builtin::{clip_by_global_norm, scale};
use crate::gradset::GradSet;
use crate::processor::{ProcState, Processor, StatefulProcessor};
use stategrad_core::transform::{GradPlugin, Order, PureFn, TransformOutput};
use stategrad_core::{path, GradientTransform, Params, Path, Result, Tensor, TransformPlugin};
use std::fmt;
use std::sync::Arc;

/// "Differentiate, then process": the base plugin's gradients, labelled by input and run
/// through a processor whose state persists across calls (shared by clones of the transform).
///
/// Inside a plugin the states' paths are not known, so gradients are labelled by input
/// position: `('state', i)` for the `i`-th distinct grad state, `('arg', k)` for the `k`-th
/// selected argument (`('arg', k, j)` for its `j`-th tensor when it holds several); a
/// second-order block's label is its row's keys followed by its column's. Apply a processor to
/// the returned container with [`crate::apply`] to get the states' paths instead.
///
/// For a first-order base whose gradients have their inputs' shapes (`grad`, `vector_grad`),
/// the processor gets the inputs (the states' values and the arguments) as its parameters, so
/// [`add_decayed_weights`](crate::add_decayed_weights) works as a plugin; otherwise it gets
/// none.
///
/// ```
/// use stategrad_core::{GradientTransform, Params, Tensor};
/// use stategrad_plugins::{chain, clip_by_value, scale, ProcessedGrad};
/// use std::sync::Arc;
/// let plugin = ProcessedGrad::named("my_grad", chain(vec![scale(2.0), clip_by_value(-3.0, 3.0)]));
/// let f = |x: Tensor| x.square().sum();
/// let g = GradientTransform::new(f, Arc::new(plugin), Params::new())
///     .call(Tensor::new([0.5f32, 1.0]))
///     .unwrap();
/// assert_eq!(g.to_string(), "[2. 3.]");
/// ```
pub struct ProcessedGrad {
    name: String,
    base: Arc<dyn TransformPlugin>,
    processor: StatefulProcessor,
}

impl ProcessedGrad {
    /// `grad` followed by `processor`, named `processed_grad(<processor>)`.
    pub fn new(processor: Processor) -> ProcessedGrad {
        let name = format!("processed_grad({})", processor.name());
        ProcessedGrad::named(name, processor)
    }

    /// `grad` followed by `processor`, under a name of your choice.
    pub fn named(name: impl Into<String>, processor: Processor) -> ProcessedGrad {
        ProcessedGrad {
            name: name.into(),
            base: Arc::new(GradPlugin),
            processor: StatefulProcessor::new(processor),
        }
    }

    /// Differentiate with `base` (e.g. `vector_grad`, `jacrev`) instead of `grad`.
    pub fn with_base(mut self, base: Arc<dyn TransformPlugin>) -> ProcessedGrad {
        self.base = base;
        self
    }

    /// The base plugin.
    pub fn base(&self) -> &Arc<dyn TransformPlugin> {
        &self.base
    }

    /// The processor.
    pub fn processor(&self) -> &Processor {
        self.processor.processor()
    }

    /// A copy of the processor's state (`None` before the first call).
    pub fn state(&self) -> Option<ProcState> {
        self.processor.state()
    }

    /// Forget the processor's state.
    pub fn reset(&self) {
        self.processor.reset()
    }
}

impl fmt::Debug for ProcessedGrad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessedGrad")
            .field("name", &self.name)
            .field("base", &self.base.name())
            .field("processor", &self.processor)
            .finish()
    }
}

/// The label of input `k` of a pure function.
fn input_label(f: &PureFn<'_>, k: usize) -> Path {
    if k < f.n_states {
        return path!("state", k);
    }
    for (a, r) in f.arg_ranges.iter().enumerate() {
        if r.contains(&k) {
            return if r.len() == 1 {
                path!("arg", a)
            } else {
                path!("arg", a, k - r.start)
            };
        }
    }
    path!("input", k)
}

impl TransformPlugin for ProcessedGrad {
    fn name(&self) -> &str {
        &self.name
    }
    fn order(&self) -> Order {
        self.base.order()
    }
    fn transform(
        &self,
        f: &PureFn<'_>,
        inputs: &[Tensor],
        params: &Params,
    ) -> Result<TransformOutput> {
        let out = self.base.transform(f, inputs, params)?;
        let n = inputs.len().max(1);
        let labels: Vec<Path> = (0..out.grads.len())
            .map(|k| match self.base.order() {
                Order::First => input_label(f, k),
                Order::Second => {
                    let mut l = input_label(f, k / n);
                    l.0.extend(input_label(f, k % n).0);
                    l
                }
            })
            .collect();
        // The inputs are the parameters of a first-order gradient of the same shapes.
        let params: Option<GradSet> = (self.base.order() == Order::First
            && out.grads.len() == inputs.len()
            && out
                .grads
                .iter()
                .zip(inputs)
                .all(|(g, x)| g.shape() == x.shape()))
        .then(|| labels.iter().cloned().zip(inputs.iter().cloned()).collect());
        let set: GradSet = labels.into_iter().zip(out.grads).collect();
        let grads = self
            .processor
            .apply_set_with_params(set, params.as_ref())?
            .into_tensors();
        Ok(TransformOutput {
            grads,
            value: out.value,
        })
    }
}

/// `grad` followed by `processor`, as a transform with the full builder (`.grad_states(..)`,
/// `.argnums(..)`, `.has_aux()`, `.return_value()`).
pub fn processed_grad<F: Fn(A) -> O, A, O>(
    f: F,
    processor: Processor,
) -> GradientTransform<F, A, O> {
    GradientTransform::new(f, Arc::new(ProcessedGrad::new(processor)), Params::new())
}

/// `grad` with every gradient multiplied by `factor` (the plugin `scaled_grad`).
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_plugins::scaled_grad;
/// let g = scaled_grad(|x: Tensor| x.square().sum(), 0.5).call(Tensor::new([1.0f32, 2.0])).unwrap();
/// assert_eq!(g.to_string(), "[1. 2.]");
/// ```
pub fn scaled_grad<F: Fn(A) -> O, A, O>(f: F, factor: f64) -> GradientTransform<F, A, O> {
    GradientTransform::new(
        f,
        Arc::new(ProcessedGrad::named("scaled_grad", scale(factor))),
        Params::new(),
    )
}

/// `grad` with the gradients clipped to a global norm of `max_norm` (the plugin
/// `clipped_grad`); the norm covers every gradient of the call (states and arguments).
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_plugins::clipped_grad;
/// let g = clipped_grad(|x: Tensor| x.square().sum(), 1.0).call(Tensor::new([3.0f32, 4.0])).unwrap();
/// assert_eq!(format!("{:.4}", g.norm()), "1.0000");
/// ```
pub fn clipped_grad<F: Fn(A) -> O, A, O>(f: F, max_norm: f64) -> GradientTransform<F, A, O> {
    GradientTransform::new(
        f,
        Arc::new(ProcessedGrad::named(
            "clipped_grad",
            clip_by_global_norm(max_norm),
        )),
        Params::new(),
    )
}
