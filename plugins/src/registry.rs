//! The [`Registry`]: transform plugins and gradient processors by name, built from typed
//! [`Params`] by factories, shared by every thread.

use crate::builtin::{
    AddDecayedWeights, AddNoise, ClipByGlobalNorm, ClipByValue, NanGuard, Scale, ZeroNans,
};
use crate::plugin::ProcessedGrad;
use crate::processor::{GradientProcessor, Identity, Processor};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use stategrad_core::transform::{
    check_params_against, GradPlugin, HessianPlugin, JacFwdPlugin, JacRevPlugin, Order, ParamKind,
    ParamSpec, VectorGradPlugin,
};
use stategrad_core::{Error, GradientTransform, Params, Result, TransformPlugin};
use std::fmt;
use std::sync::{Arc, OnceLock};

/// Builds a transform plugin from its parameters.
pub type TransformFactory = Arc<dyn Fn(&Params) -> Result<Arc<dyn TransformPlugin>> + Send + Sync>;

/// Builds a gradient processor from its parameters.
pub type ProcessorFactory = Arc<dyn Fn(&Params) -> Result<Processor> + Send + Sync>;

const TRANSFORM: &str = "transform plugin";
const PROCESSOR: &str = "gradient processor";

/// Named transform plugins and gradient processors, each made by a factory from typed
/// [`Params`]. Lock-free to read and safe to change from any thread: factories are cloned out of
/// the map before they run, so a factory (or the plugin it makes) may itself use the registry.
///
/// [`Registry::new`] holds the built-ins:
///
/// | kind | name | parameters |
/// |---|---|---|
/// | transform | `grad`, `vector_grad`, `jacrev`, `jacfwd`, `hessian` | (`chunk_size` for the Jacobians, read at call time) |
/// | transform | `scaled_grad` | `scale`: float |
/// | transform | `clipped_grad` | `max_norm`: float ≥ 0 |
/// | processor | `identity`, `zero_nans`, `nan_guard` | none |
/// | processor | `scale` | `scale`: float |
/// | processor | `clip_by_global_norm` | `max_norm`: float ≥ 0 |
/// | processor | `clip_by_value` | `min`, `max`: float, `min <= max` |
/// | processor | `add_noise` | `std`: float ≥ 0; `seed`: int (default 0) |
/// | processor | `add_decayed_weights` | `weight_decay`: float (needs the parameters) |
///
/// Built-in processors refuse parameters they do not know (a typo is an error, not a default).
///
/// ```
/// use stategrad_core::{Error, Params, Tensor};
/// use stategrad_plugins::Registry;
///
/// let reg = Registry::new();
/// let clip = reg.processor("clip_by_global_norm", &Params::new().with("max_norm", 1.0)).unwrap();
/// assert_eq!(clip.name(), "clip_by_global_norm");
/// assert!(matches!(reg.processor("clip_by_global_norm", &Params::new()), Err(Error::PluginParam { .. })));
/// assert!(matches!(reg.transform("nope", &Params::new()), Err(Error::UnknownPlugin { .. })));
/// ```
pub struct Registry {
    transforms: DashMap<String, TransformFactory>,
    processors: DashMap<String, ProcessorFactory>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("transforms", &self.transform_names())
            .field("processors", &self.processor_names())
            .finish()
    }
}

/// Refuse parameters outside a built-in's spec (unknown, missing, or of the wrong kind).
fn only(plugin: &str, params: &Params, spec: &[ParamSpec]) -> Result<()> {
    check_params_against(plugin, spec, params)
}

const NONE: &[ParamSpec] = &[];

/// A built-in processor after checking its parameters.
fn checked<P: GradientProcessor + 'static>(
    p: P,
    validate: impl FnOnce(&P) -> Result<()>,
) -> Result<Processor> {
    validate(&p)?;
    Ok(Arc::new(p))
}

fn scale_from(plugin: &str, params: &Params) -> Result<Scale> {
    only(
        plugin,
        params,
        &[ParamSpec::required("scale", ParamKind::Float)],
    )?;
    let s = Scale {
        factor: params.f64(plugin, "scale")?,
    };
    s.validate().map_err(|e| rename(e, plugin))?;
    Ok(s)
}

fn clip_from(plugin: &str, params: &Params) -> Result<ClipByGlobalNorm> {
    only(
        plugin,
        params,
        &[ParamSpec::required("max_norm", ParamKind::NonNegativeFloat)],
    )?;
    let c = ClipByGlobalNorm {
        max_norm: params.f64(plugin, "max_norm")?,
    };
    c.validate().map_err(|e| rename(e, plugin))?;
    Ok(c)
}

/// Report a processor's parameter error under the plugin name the user asked for.
fn rename(e: Error, plugin: &str) -> Error {
    match e {
        Error::PluginParam { name, msg, .. } => Error::PluginParam {
            plugin: plugin.to_string(),
            name,
            msg,
        },
        e => e,
    }
}

impl Registry {
    /// A registry holding the built-ins (see the table above).
    pub fn new() -> Registry {
        let r = Registry::empty();
        r.install_builtins();
        r
    }

    /// A registry with nothing registered.
    pub fn empty() -> Registry {
        Registry {
            transforms: DashMap::new(),
            processors: DashMap::new(),
        }
    }

    /// The process-wide registry, created with the built-ins on first use.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    fn install_builtins(&self) {
        fn fixed(p: Arc<dyn TransformPlugin>) -> TransformFactory {
            Arc::new(move |params: &Params| {
                p.check_params(params)?;
                Ok(p.clone())
            })
        }
        let t: [(&str, TransformFactory); 7] = [
            ("grad", fixed(Arc::new(GradPlugin))),
            ("vector_grad", fixed(Arc::new(VectorGradPlugin))),
            ("jacrev", fixed(Arc::new(JacRevPlugin))),
            ("jacfwd", fixed(Arc::new(JacFwdPlugin))),
            ("hessian", fixed(Arc::new(HessianPlugin))),
            (
                "scaled_grad",
                Arc::new(|p: &Params| {
                    let s = scale_from("scaled_grad", p)?;
                    Ok(Arc::new(ProcessedGrad::named("scaled_grad", Arc::new(s)))
                        as Arc<dyn TransformPlugin>)
                }),
            ),
            (
                "clipped_grad",
                Arc::new(|p: &Params| {
                    let c = clip_from("clipped_grad", p)?;
                    Ok(Arc::new(ProcessedGrad::named("clipped_grad", Arc::new(c)))
                        as Arc<dyn TransformPlugin>)
                }),
            ),
        ];
        for (name, f) in t {
            self.transforms.insert(name.to_string(), f);
        }
        let p: [(&str, ProcessorFactory); 8] = [
            (
                "identity",
                Arc::new(|p: &Params| {
                    only("identity", p, NONE)?;
                    Ok(Arc::new(Identity) as Processor)
                }),
            ),
            (
                "scale",
                Arc::new(|p: &Params| Ok(Arc::new(scale_from("scale", p)?) as Processor)),
            ),
            (
                "clip_by_global_norm",
                Arc::new(|p: &Params| {
                    Ok(Arc::new(clip_from("clip_by_global_norm", p)?) as Processor)
                }),
            ),
            (
                "clip_by_value",
                Arc::new(|p: &Params| {
                    only(
                        "clip_by_value",
                        p,
                        &[
                            ParamSpec::required("min", ParamKind::Float),
                            ParamSpec::required("max", ParamKind::Float),
                        ],
                    )?;
                    let c = ClipByValue {
                        min: p.f64("clip_by_value", "min")?,
                        max: p.f64("clip_by_value", "max")?,
                    };
                    checked(c, ClipByValue::validate)
                }),
            ),
            (
                "add_noise",
                Arc::new(|p: &Params| {
                    only(
                        "add_noise",
                        p,
                        &[
                            ParamSpec::required("std", ParamKind::NonNegativeFloat),
                            ParamSpec::optional("seed", ParamKind::Int),
                        ],
                    )?;
                    // Negative seeds are taken by their bit pattern.
                    let seed = match p.get("seed") {
                        None => 0,
                        Some(_) => p.i64("add_noise", "seed")? as u64,
                    };
                    let a = AddNoise {
                        std: p.f64("add_noise", "std")?,
                        seed,
                    };
                    checked(a, AddNoise::validate)
                }),
            ),
            (
                "add_decayed_weights",
                Arc::new(|p: &Params| {
                    only(
                        "add_decayed_weights",
                        p,
                        &[ParamSpec::required("weight_decay", ParamKind::Float)],
                    )?;
                    let a = AddDecayedWeights {
                        weight_decay: p.f64("add_decayed_weights", "weight_decay")?,
                    };
                    checked(a, AddDecayedWeights::validate)
                }),
            ),
            (
                "zero_nans",
                Arc::new(|p: &Params| {
                    only("zero_nans", p, NONE)?;
                    Ok(Arc::new(ZeroNans) as Processor)
                }),
            ),
            (
                "nan_guard",
                Arc::new(|p: &Params| {
                    only("nan_guard", p, NONE)?;
                    Ok(Arc::new(NanGuard) as Processor)
                }),
            ),
        ];
        for (name, f) in p {
            self.processors.insert(name.to_string(), f);
        }
    }

    // -------------------------------------------------------------- transforms

    /// Register a transform plugin factory; [`Error::DuplicatePlugin`] if the name is taken.
    ///
    /// ```
    /// use stategrad_core::{transform::GradPlugin, Params, TransformPlugin};
    /// use stategrad_plugins::Registry;
    /// use std::sync::Arc;
    /// let reg = Registry::empty();
    /// reg.register_transform("my_grad", |_: &Params| Ok(Arc::new(GradPlugin) as Arc<dyn TransformPlugin>)).unwrap();
    /// assert!(reg.register_transform("my_grad", |_: &Params| Ok(Arc::new(GradPlugin) as Arc<dyn TransformPlugin>)).is_err());
    /// ```
    pub fn register_transform<F>(&self, name: &str, factory: F) -> Result<()>
    where
        F: Fn(&Params) -> Result<Arc<dyn TransformPlugin>> + Send + Sync + 'static,
    {
        self.register_transform_factory(name, Arc::new(factory))
    }

    /// [`Registry::register_transform`] with a factory already in an `Arc`.
    pub fn register_transform_factory(&self, name: &str, factory: TransformFactory) -> Result<()> {
        insert_new(&self.transforms, TRANSFORM, name, factory)
    }

    /// Register a parameterless plugin instance under `name` (every lookup shares it).
    pub fn register_transform_plugin(
        &self,
        name: &str,
        plugin: Arc<dyn TransformPlugin>,
    ) -> Result<()> {
        self.register_transform(name, move |_: &Params| Ok(plugin.clone()))
    }

    /// Register or overwrite a transform plugin factory; returns the one it replaced.
    pub fn replace_transform<F>(&self, name: &str, factory: F) -> Option<TransformFactory>
    where
        F: Fn(&Params) -> Result<Arc<dyn TransformPlugin>> + Send + Sync + 'static,
    {
        self.transforms.insert(name.to_string(), Arc::new(factory))
    }

    /// Remove a transform plugin; returns its factory if it was registered.
    pub fn unregister_transform(&self, name: &str) -> Option<TransformFactory> {
        self.transforms.remove(name).map(|(_, f)| f)
    }

    /// True if a transform plugin of this name is registered.
    pub fn has_transform(&self, name: &str) -> bool {
        self.transforms.contains_key(name)
    }

    /// The registered transform plugin names, sorted.
    pub fn transform_names(&self) -> Vec<String> {
        sorted_keys(&self.transforms)
    }

    /// The factory registered under `name` ([`Error::UnknownPlugin`] listing the known names).
    pub fn transform_factory(&self, name: &str) -> Result<TransformFactory> {
        lookup(&self.transforms, TRANSFORM, name)
    }

    /// Build the transform plugin `name` with `params`.
    pub fn transform(&self, name: &str, params: &Params) -> Result<Arc<dyn TransformPlugin>> {
        // The factory is cloned out first: no map lock is held while user code runs.
        let factory = self.transform_factory(name)?;
        factory(params)
    }

    // -------------------------------------------------------------- processors

    /// Register a gradient processor factory; [`Error::DuplicatePlugin`] if the name is taken.
    pub fn register_processor<F>(&self, name: &str, factory: F) -> Result<()>
    where
        F: Fn(&Params) -> Result<Processor> + Send + Sync + 'static,
    {
        self.register_processor_factory(name, Arc::new(factory))
    }

    /// [`Registry::register_processor`] with a factory already in an `Arc`.
    pub fn register_processor_factory(&self, name: &str, factory: ProcessorFactory) -> Result<()> {
        insert_new(&self.processors, PROCESSOR, name, factory)
    }

    /// Register or overwrite a gradient processor factory; returns the one it replaced.
    pub fn replace_processor<F>(&self, name: &str, factory: F) -> Option<ProcessorFactory>
    where
        F: Fn(&Params) -> Result<Processor> + Send + Sync + 'static,
    {
        self.processors.insert(name.to_string(), Arc::new(factory))
    }

    /// Remove a gradient processor; returns its factory if it was registered.
    pub fn unregister_processor(&self, name: &str) -> Option<ProcessorFactory> {
        self.processors.remove(name).map(|(_, f)| f)
    }

    /// True if a gradient processor of this name is registered.
    pub fn has_processor(&self, name: &str) -> bool {
        self.processors.contains_key(name)
    }

    /// The registered gradient processor names, sorted.
    pub fn processor_names(&self) -> Vec<String> {
        sorted_keys(&self.processors)
    }

    /// The factory registered under `name` ([`Error::UnknownPlugin`] listing the known names).
    pub fn processor_factory(&self, name: &str) -> Result<ProcessorFactory> {
        lookup(&self.processors, PROCESSOR, name)
    }

    /// Build the gradient processor `name` with `params`.
    pub fn processor(&self, name: &str, params: &Params) -> Result<Processor> {
        let factory = self.processor_factory(name)?;
        factory(params)
    }

    // -------------------------------------------------------------- transforms from names

    /// The first-order plugin `name` as a transform: a registered transform plugin, or else a
    /// registered processor run after `grad` ([`ProcessedGrad`]). `params` go to the factory
    /// and, for transform plugins, to the plugin at call time.
    ///
    /// Errors: [`Error::UnknownPlugin`] (listing both kinds), the factory's
    /// [`Error::PluginParam`], and [`Error::Unsupported`] for a second-order plugin (`hessian`:
    /// use `stategrad_core::hessian`).
    pub fn gradient_transform<F: Fn(A) -> O, A, O>(
        &self,
        f: F,
        name: &str,
        params: Params,
    ) -> Result<GradientTransform<F, A, O>> {
        let plugin = self.plugin_for(name, &params)?;
        if plugin.order() != Order::First {
            return Err(Error::Unsupported(format!(
                "`{name}` is a second-order plugin; a registry transform is first-order (use hessian(f) for Hessians)"
            )));
        }
        Ok(GradientTransform::new(f, plugin, params))
    }

    fn plugin_for(&self, name: &str, params: &Params) -> Result<Arc<dyn TransformPlugin>> {
        // Clone each factory out of its map (no lock held) before running it.
        let tf = self.transforms.get(name).map(|r| r.value().clone());
        if let Some(factory) = tf {
            return factory(params);
        }
        let pf = self.processors.get(name).map(|r| r.value().clone());
        if let Some(factory) = pf {
            let processor = factory(params)?;
            return Ok(Arc::new(ProcessedGrad::named(name, processor)));
        }
        let mut known = self.transform_names();
        known.extend(self.processor_names());
        known.sort();
        known.dedup();
        Err(Error::UnknownPlugin {
            kind: "transform plugin or gradient processor",
            name: name.to_string(),
            known: known.join(", "),
        })
    }
}

fn insert_new<V>(map: &DashMap<String, V>, kind: &'static str, name: &str, value: V) -> Result<()> {
    match map.entry(name.to_string()) {
        Entry::Occupied(_) => Err(Error::DuplicatePlugin {
            kind,
            name: name.to_string(),
        }),
        Entry::Vacant(v) => {
            v.insert(value);
            Ok(())
        }
    }
}

fn lookup<V: Clone>(map: &DashMap<String, V>, kind: &'static str, name: &str) -> Result<V> {
    let found = map.get(name).map(|r| r.value().clone());
    found.ok_or_else(|| Error::UnknownPlugin {
        kind,
        name: name.to_string(),
        known: sorted_keys(map).join(", "),
    })
}

fn sorted_keys<V>(map: &DashMap<String, V>) -> Vec<String> {
    let mut names: Vec<String> = map.iter().map(|r| r.key().clone()).collect();
    names.sort();
    names
}

/// [`Registry::gradient_transform`] on the [`Registry::global`] registry.
///
/// ```
/// use stategrad_core::{Params, Tensor};
/// use stategrad_plugins::from_registry;
/// let f = |x: Tensor| x.square().sum();
/// let g = from_registry(f, "clip_by_global_norm", Params::new().with("max_norm", 1.0))
///     .unwrap()
///     .call(Tensor::new([3.0f32, 4.0]))
///     .unwrap();
/// assert_eq!(format!("{:.4}", g.norm()), "1.0000");
/// ```
pub fn from_registry<F: Fn(A) -> O, A, O>(
    f: F,
    name: &str,
    params: Params,
) -> Result<GradientTransform<F, A, O>> {
    Registry::global().gradient_transform(f, name, params)
}
