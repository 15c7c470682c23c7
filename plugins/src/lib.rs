//! # stategrad-plugins: gradient processors, processed-gradient plugins and the registry
//!
//! stategrad has two extension points:
//!
//! - a **transform plugin** ([`TransformPlugin`], defined in core) computes derivatives: it gets
//!   the user's function as a *pure* function of tensors (grad-state values first, then the
//!   selected arguments' tensors), the point, and typed [`Params`], and returns one gradient per
//!   input and the value. [`GradientTransform::new`] wraps any plugin with the full state-aware
//!   builder (`.grad_states(..)`, `.argnums(..)`, `.has_aux()`, `.return_value()`).
//! - a **gradient processor** ([`GradientProcessor`], this crate) transforms a whole gradient
//!   set at once, in the optax model (`init` → its own typed state, `update(grads, &mut state,
//!   params)`): [`scale`], [`clip_by_global_norm`], [`clip_by_value`], [`add_noise`],
//!   [`add_decayed_weights`], [`zero_nans`], [`nan_guard`], combined with [`chain`], [`masked`]
//!   and [`identity`].
//!
//! [`ProcessedGrad`] joins the two ("differentiate, then process"), and the [`Registry`] names
//! both kinds so that a transform can be chosen by configuration: [`from_registry`].
//!
//! ## Using the built-ins
//!
//! The seed tutorial's `scaled_grad` and `clipped_grad`, on `y = x @ W + b`:
//!
//! ```
//! use stategrad_core::{path, ParamState, Params, Path, State, Tensor};
//! use stategrad_plugins::{clipped_grad, from_registry, scaled_grad};
//! use std::collections::BTreeMap;
//!
//! let weight = ParamState::new(Tensor::zeros(&[1, 1]));
//! let bias = ParamState::new(Tensor::zeros(&[1]));
//! let params: BTreeMap<Path, State> =
//!     [(path!("weight"), weight.clone()), (path!("bias"), bias.clone())].into_iter().collect();
//! let xs = Tensor::linspace(-1.0, 1.0, 5).reshape(&[-1, 1]);
//! let ys = 3.0 * &xs + 1.0;
//! let loss = |(x, y): (Tensor, Tensor)| (x.matmul(&weight.value()) + bias.value() - y).square().mean();
//!
//! let g = scaled_grad(loss, 0.5).grad_states(params.clone()).call((xs.clone(), ys.clone())).unwrap();
//! assert_eq!(g[&path!("bias")].to_string(), "[-1.]");
//! assert_eq!(g[&path!("weight")].to_string(), "[[-1.5]]");
//!
//! // The global norm covers every gradient of the call.
//! let g = clipped_grad(loss, 0.1).grad_states(params.clone()).call((xs.clone(), ys.clone())).unwrap();
//! assert_eq!(g[&path!("bias")].to_string(), "[-0.05547]");
//! assert_eq!(g[&path!("weight")].to_string(), "[[-0.08320501]]");
//!
//! // The same by name: a registered transform plugin, or a processor run after `grad`.
//! let g = from_registry(loss, "clip_by_global_norm", Params::new().with("max_norm", 0.1))
//!     .unwrap()
//!     .grad_states(params)
//!     .call((xs, ys))
//!     .unwrap();
//! assert_eq!(format!("{:.4}", g[&path!("weight")].norm()), "0.0832");
//! ```
//!
//! Processors also apply to any gradient container a transform returns, labelled by path
//! (`('bias',)`), with [`apply`] (explicit state) or a [`StatefulProcessor`] (state kept
//! inside, shareable between threads); see [`GradSet`] for the labels.
//!
//! ## Writing a transform plugin from scratch
//!
//! The contract (see [`TransformPlugin`]):
//!
//! 1. `transform(f, inputs, params)` returns `inputs.len()` gradients, each with its input's
//!    shape (a Jacobian may prepend the output's dims) and dtype, and the value `f(inputs)`.
//!    Anything else becomes [`Error::MalformedPluginResult`] naming your plugin.
//! 2. `f` may be called any number of times, but each call runs the user's function (and its
//!    state writes) again: the built-ins call it once ([`grad_pure`], [`vjp_pure`]) and replay
//!    the tape. `f.n_states` and `f.arg_ranges` say which inputs are states and which arguments.
//! 3. Read parameters with the typed getters of [`Params`] ([`Params::f64`], [`Params::f64_or`],
//!    …): a missing or mistyped one is an [`Error::PluginParam`] naming plugin and parameter.
//! 4. Return errors, never panic on user input; the plugin is shared between threads (`Send +
//!    Sync`), so keep per-call data on the stack.
//!
//! A complete plugin that needs no tape at all: central finite differences, with a typed
//! parameter `eps`, registered under a name and used with states and arguments.
//!
//! ```
//! use stategrad_core::transform::{PureFn, TransformOutput};
//! use stategrad_core::{path, Error, GradientTransform, ParamState, Params, Path, Result, State, Tensor, TransformPlugin};
//! use stategrad_plugins::Registry;
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//!
//! /// Gradients by central differences: (f(x + eps·e_i) - f(x - eps·e_i)) / (2·eps).
//! struct CentralDiff;
//!
//! impl TransformPlugin for CentralDiff {
//!     fn name(&self) -> &str {
//!         "central_diff"
//!     }
//!     fn transform(&self, f: &PureFn<'_>, inputs: &[Tensor], params: &Params) -> Result<TransformOutput> {
//!         let eps = params.f64_or(self.name(), "eps", 1e-3)?;
//!         if !(eps > 0.0 && eps.is_finite()) {
//!             return Err(Error::PluginParam {
//!                 plugin: self.name().into(),
//!                 name: "eps".into(),
//!                 msg: format!("must be positive and finite, got {eps}"),
//!             });
//!         }
//!         let value = f.call(inputs)?;
//!         if !value.is_scalar() {
//!             return Err(Error::NonScalarOutput { shape: value.shape_display() });
//!         }
//!         // f at `inputs` with element `e` of input `j` moved by `delta`.
//!         let shifted = |j: usize, e: usize, delta: f64| -> Result<f64> {
//!             let mut xs = inputs.to_vec();
//!             let mut v = xs[j].to_f64_vec();
//!             v[e] += delta;
//!             xs[j] = Tensor::from_vec(v, inputs[j].shape())?.cast(inputs[j].dtype());
//!             f.call(&xs)?.item()
//!         };
//!         let mut grads = Vec::with_capacity(inputs.len());
//!         for (j, x) in inputs.iter().enumerate() {
//!             let g = (0..x.numel())
//!                 .map(|e| Ok((shifted(j, e, eps)? - shifted(j, e, -eps)?) / (2.0 * eps)))
//!                 .collect::<Result<Vec<f64>>>()?;
//!             // Same shape and dtype as the input: the wrapper checks both.
//!             grads.push(Tensor::from_vec(g, x.shape())?.cast(x.dtype()));
//!         }
//!         Ok(TransformOutput { grads, value })
//!     }
//! }
//!
//! // Register it (a factory builds it from parameters; here it takes none at build time).
//! let registry = Registry::new();
//! registry.register_transform_plugin("central_diff", Arc::new(CentralDiff)).unwrap();
//! // A second registration under the same name is refused.
//! assert!(matches!(
//!     registry.register_transform_plugin("central_diff", Arc::new(CentralDiff)),
//!     Err(Error::DuplicatePlugin { .. })
//! ));
//!
//! // Use it like `grad`: states and arguments, with the value.
//! let w = ParamState::new(Tensor::new([1.0f64, -2.0]));
//! let states: BTreeMap<Path, State> = [(path!("w"), w.clone())].into_iter().collect();
//! let f = |x: Tensor| (&x * &w.value()).square().sum();
//! let ((gw, gx), value) = registry
//!     .gradient_transform(f, "central_diff", Params::new().with("eps", 1e-4))
//!     .unwrap()
//!     .grad_states(states)
//!     .argnums(0)
//!     .return_value()
//!     .call(Tensor::new([3.0f64, 0.5]))
//!     .unwrap();
//! assert_eq!(value.item().unwrap(), 10.0);
//! assert!(gw[&path!("w")].allclose(&Tensor::new([18.0f64, -1.0]), 1e-6, 1e-6));
//! assert!(gx.allclose(&Tensor::new([6.0f64, 4.0]), 1e-6, 1e-6));
//!
//! // Parameters are typed; errors never panic.
//! let bad = GradientTransform::new(f, Arc::new(CentralDiff), Params::new().with("eps", "small"))
//!     .call(Tensor::new([3.0f64, 0.5]));
//! assert!(matches!(bad, Err(Error::PluginParam { .. })));
//! ```
//!
//! ## Writing a gradient processor from scratch
//!
//! A processor names its own state type ([`GradientProcessor::State`]: `()` for none, a
//! counter, tensors, a struct), makes it in `init` and advances it in `update`; both get the
//! whole [`GradSet`] (path labels and tensors, in order) and, when the caller has them, the
//! parameters (`Option<&GradSet>`, one per gradient, same labels). `update` returns the same
//! entries (number, labels, shapes, dtypes — checked by [`update_checked`], which every runner
//! here uses). Keep arithmetic in tensor operations (`try_*`) so that nested transforms can
//! differentiate through it.
//!
//! Any processor is a [`DynProcessor`], so `Arc::new(p) as Processor` chains, masks, registers
//! and runs like the built-ins; the runners keep its state in a [`ProcState`] and hand it back
//! typed (a state of another processor is a typed error, not a panic). Here, an exponential
//! moving average of the gradients (momentum), with its factory and a typed parameter:
//!
//! ```
//! use stategrad_core::{Error, Params, Result, Tensor};
//! use stategrad_plugins::{
//!     from_registry, GradSet, GradientProcessor, Processor, Registry, StatefulProcessor,
//! };
//! use std::sync::Arc;
//!
//! /// m ← β·m + (1 − β)·g; returns m.
//! struct Ema { beta: f64 }
//!
//! /// The EMA's state: one running average per gradient.
//! #[derive(Clone, Default)]
//! struct EmaState { m: Vec<Tensor> }
//!
//! impl GradientProcessor for Ema {
//!     type State = EmaState;
//!     fn name(&self) -> &str {
//!         "ema"
//!     }
//!     fn init(&self, grads: &GradSet, _params: Option<&GradSet>) -> Result<EmaState> {
//!         Ok(EmaState { m: grads.tensors().map(Tensor::zeros_like).collect() })
//!     }
//!     fn update(&self, grads: GradSet, state: &mut EmaState, _: Option<&GradSet>) -> Result<GradSet> {
//!         if state.m.len() != grads.len() {
//!             return Err(Error::PluginParam { plugin: "ema".into(), name: "state".into(), msg: "gradient count changed".into() });
//!         }
//!         let mut i = 0;
//!         grads.try_map(|_, g| {
//!             let new = state.m[i].try_mul_scalar(self.beta)?.try_add(&g.try_mul_scalar(1.0 - self.beta)?)?;
//!             state.m[i] = new.clone();
//!             i += 1;
//!             Ok(new)
//!         })
//!     }
//! }
//!
//! // Register a factory with a typed parameter, on the global registry.
//! Registry::global()
//!     .register_processor("ema_doc", |p: &Params| {
//!         let beta = p.f64("ema_doc", "beta")?;
//!         Ok(Arc::new(Ema { beta }) as Processor)
//!     })
//!     .unwrap();
//!
//! // Apply it to gradients directly …
//! let ema = StatefulProcessor::new(Registry::global().processor("ema_doc", &Params::new().with("beta", 0.5)).unwrap());
//! let g = Tensor::new([4.0f32]);
//! assert_eq!(ema.apply(&g).unwrap().to_string(), "[2.]");
//! assert_eq!(ema.apply(&g).unwrap().to_string(), "[3.]");
//! // … the state comes back typed …
//! let state = ema.state().unwrap();
//! assert_eq!(state.downcast_ref::<EmaState>().unwrap().m[0].to_string(), "[3.]");
//! assert!(ema.processor().is_stateful());
//!
//! // … or as a transform: `grad`, then the EMA, state kept across calls.
//! let t = from_registry(|x: Tensor| x.square().sum(), "ema_doc", Params::new().with("beta", 0.5)).unwrap();
//! assert_eq!(t.call(Tensor::new([2.0f32])).unwrap().to_string(), "[2.]");
//! assert_eq!(t.call(Tensor::new([2.0f32])).unwrap().to_string(), "[3.]");
//!
//! // A missing parameter is a typed error.
//! assert!(matches!(
//!     from_registry(|x: Tensor| x.sum(), "ema_doc", Params::new()),
//!     Err(Error::PluginParam { .. })
//! ));
//! ```
//!
//! ## Parameters: weight decay, masked by path
//!
//! [`add_decayed_weights`] adds `weight_decay · param` (optax's `add_decayed_weights`), so it
//! needs the parameters: [`StatefulProcessor::apply_with_params`] pairs each gradient with the
//! parameter under the same path. [`masked`] restricts a processor to the paths a predicate
//! selects (or, from a state [`Filter`](stategrad_core::Filter), [`filter_mask`]); a chain of
//! decay and scale is optax's `chain(add_decayed_weights(wd), scale(-lr))`:
//!
//! ```
//! use stategrad_core::{path, Path, Tensor};
//! use stategrad_plugins::{add_decayed_weights, chain, masked, scale, StatefulProcessor};
//! use std::collections::BTreeMap;
//!
//! let params: BTreeMap<Path, Tensor> =
//!     [(path!("bias"), Tensor::new([1.0f32])), (path!("weight"), Tensor::new([2.0f32]))].into_iter().collect();
//! let grads: BTreeMap<Path, Tensor> =
//!     [(path!("bias"), Tensor::new([0.5f32])), (path!("weight"), Tensor::new([0.5f32]))].into_iter().collect();
//! let sgd = StatefulProcessor::new(chain(vec![
//!     masked(add_decayed_weights(0.25), |p: &Path| p.contains(&"weight".into())),
//!     scale(-0.1),
//! ]));
//! let step = sgd.apply_with_params(&grads, &params).unwrap();
//! assert_eq!(step[&path!("bias")].to_string(), "[-0.05]"); // -0.1 · 0.5
//! assert_eq!(step[&path!("weight")].to_string(), "[-0.1]"); // -0.1 · (0.5 + 0.25 · 2)
//! ```
//!
//! ## Threads
//!
//! The [`Registry`] is a pair of `DashMap`s: registering, replacing and looking up are safe from
//! any thread. A factory is cloned out of the map before it runs, so factories and plugins may
//! use the registry themselves without deadlocking. A [`ProcessedGrad`] keeps its processor
//! state behind a mutex: one transform may be called from many threads, each call advancing
//! the one state.
//!
//! [`Error::MalformedPluginResult`]: stategrad_core::Error::MalformedPluginResult
//! [`Error::PluginParam`]: stategrad_core::Error::PluginParam
//! [`grad_pure`]: stategrad_core::transform::grad_pure
//! [`vjp_pure`]: stategrad_core::transform::vjp_pure
//! [`Params::f64`]: stategrad_core::Params::f64
//! [`Params::f64_or`]: stategrad_core::Params::f64_or
//! [`TransformPlugin`]: stategrad_core::TransformPlugin
//! [`GradientTransform::new`]: stategrad_core::GradientTransform::new
//! [`Params`]: stategrad_core::Params

// Unsafe code lives only in `stategrad-simd` and `stategrad-exec`, where each block states its proof.
#![forbid(unsafe_code)]

mod builtin;
mod gradset;
mod plugin;
mod processor;
mod registry;

pub use builtin::{
    add_decayed_weights, add_noise, clip_by_global_norm, clip_by_value, nan_guard, scale,
    zero_nans, AddDecayedWeights, AddNoise, ClipByGlobalNorm, ClipByValue, GaussianStream,
    NanGuard, Scale, ZeroNans, CLIP_EPS,
};
pub use gradset::{GradSet, LabelKey, LabelledTree};
pub use plugin::{clipped_grad, processed_grad, scaled_grad, ProcessedGrad};
pub use processor::{
    apply, apply_with_params, chain, filter_mask, identity, masked, update_checked, Chain,
    DynProcessor, GradientProcessor, Identity, Masked, PathPredicate, ProcState, Processor,
    StatefulProcessor,
};
pub use registry::{from_registry, ProcessorFactory, Registry, TransformFactory};
