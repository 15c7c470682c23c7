//! Plugin parameters: typed values ([`ParamValue`], [`Params`]) and the specification each
//! plugin declares ([`ParamSpec`]), against which every transform checks them the same way
//! before the function runs.

use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// A typed plugin parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    /// A float.
    F64(f64),
    /// An integer.
    I64(i64),
    /// A flag.
    Bool(bool),
    /// A string.
    Str(String),
}

impl ParamValue {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            ParamValue::F64(_) => "float",
            ParamValue::I64(_) => "int",
            ParamValue::Bool(_) => "bool",
            ParamValue::Str(_) => "string",
        }
    }
}

impl From<f64> for ParamValue {
    fn from(v: f64) -> Self {
        ParamValue::F64(v)
    }
}
impl From<f32> for ParamValue {
    fn from(v: f32) -> Self {
        ParamValue::F64(v as f64)
    }
}
impl From<i64> for ParamValue {
    fn from(v: i64) -> Self {
        ParamValue::I64(v)
    }
}
impl From<i32> for ParamValue {
    fn from(v: i32) -> Self {
        ParamValue::I64(v as i64)
    }
}
impl From<usize> for ParamValue {
    /// Saturates at `i64::MAX` (a count that large means "all").
    ///
    /// ```
    /// use stategrad_core::ParamValue;
    /// assert_eq!(ParamValue::from(usize::MAX), ParamValue::I64(i64::MAX));
    /// ```
    fn from(v: usize) -> Self {
        ParamValue::I64(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<bool> for ParamValue {
    fn from(v: bool) -> Self {
        ParamValue::Bool(v)
    }
}
impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        ParamValue::Str(v.to_string())
    }
}
impl From<String> for ParamValue {
    fn from(v: String) -> Self {
        ParamValue::Str(v)
    }
}

/// A small map of named, typed parameters (`transform_params` in the reference).
///
/// ```
/// use stategrad_core::transform::Params;
/// let p = Params::new().with("scale", 0.5).with("steps", 3);
/// assert_eq!(p.f64("my_plugin", "scale").unwrap(), 0.5);
/// assert!(p.f64("my_plugin", "missing").is_err());
/// assert!(p.bool("my_plugin", "scale").is_err());
/// assert_eq!(p.f64("my_plugin", "steps").unwrap(), 3.0); // ints widen to floats
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(BTreeMap<String, ParamValue>);

impl Params {
    /// No parameters.
    pub fn new() -> Params {
        Params::default()
    }
    /// Builder form of [`Params::insert`].
    pub fn with(mut self, name: &str, v: impl Into<ParamValue>) -> Params {
        self.insert(name, v);
        self
    }
    /// Set a parameter.
    pub fn insert(&mut self, name: &str, v: impl Into<ParamValue>) {
        self.0.insert(name.to_string(), v.into());
    }
    /// The raw value.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.0.get(name)
    }
    /// Parameter names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
    fn missing(plugin: &str, name: &str) -> Error {
        Error::PluginParam {
            plugin: plugin.into(),
            name: name.into(),
            msg: "missing".into(),
        }
    }
    fn mistyped(plugin: &str, name: &str, want: &str, got: &ParamValue) -> Error {
        Error::PluginParam {
            plugin: plugin.into(),
            name: name.into(),
            msg: format!("expected {want}, got {} {got:?}", got.type_name()),
        }
    }
    /// A float parameter (ints widen); typed errors name the plugin and parameter.
    pub fn f64(&self, plugin: &str, name: &str) -> Result<f64> {
        match self.get(name) {
            Some(ParamValue::F64(v)) => Ok(*v),
            Some(ParamValue::I64(v)) => Ok(*v as f64),
            Some(v) => Err(Params::mistyped(plugin, name, "float", v)),
            None => Err(Params::missing(plugin, name)),
        }
    }
    /// A float parameter with a default when absent (still an error when mistyped).
    pub fn f64_or(&self, plugin: &str, name: &str, default: f64) -> Result<f64> {
        match self.get(name) {
            None => Ok(default),
            Some(_) => self.f64(plugin, name),
        }
    }
    /// An integer parameter.
    pub fn i64(&self, plugin: &str, name: &str) -> Result<i64> {
        match self.get(name) {
            Some(ParamValue::I64(v)) => Ok(*v),
            Some(v) => Err(Params::mistyped(plugin, name, "int", v)),
            None => Err(Params::missing(plugin, name)),
        }
    }
    /// A boolean parameter.
    pub fn bool(&self, plugin: &str, name: &str) -> Result<bool> {
        match self.get(name) {
            Some(ParamValue::Bool(v)) => Ok(*v),
            Some(v) => Err(Params::mistyped(plugin, name, "bool", v)),
            None => Err(Params::missing(plugin, name)),
        }
    }
    /// A string parameter.
    pub fn str(&self, plugin: &str, name: &str) -> Result<&str> {
        match self.get(name) {
            Some(ParamValue::Str(v)) => Ok(v),
            Some(v) => Err(Params::mistyped(plugin, name, "string", v)),
            None => Err(Params::missing(plugin, name)),
        }
    }
}

/// The values a plugin parameter accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParamKind {
    /// An integer `>= 1`.
    PositiveInt,
    /// Any integer.
    Int,
    /// A float that is not NaN (an int widens).
    Float,
    /// A finite float `> 0` (an int widens).
    PositiveFloat,
    /// A finite float `>= 0` (an int widens).
    NonNegativeFloat,
    /// A flag.
    Bool,
    /// A string.
    Str,
}

impl ParamKind {
    fn describe(self) -> &'static str {
        match self {
            ParamKind::PositiveInt => "a positive int",
            ParamKind::Int => "int",
            ParamKind::Float => "float (not NaN)",
            ParamKind::PositiveFloat => "float > 0 (finite)",
            ParamKind::NonNegativeFloat => "float >= 0 (finite)",
            ParamKind::Bool => "bool",
            ParamKind::Str => "string",
        }
    }

    /// Whether `v` is a value of this kind.
    pub fn accepts(self, v: &ParamValue) -> bool {
        let float = match *v {
            ParamValue::F64(x) => Some(x),
            ParamValue::I64(i) => Some(i as f64),
            _ => None,
        };
        match self {
            ParamKind::PositiveInt => matches!(v, ParamValue::I64(1..)),
            ParamKind::Int => matches!(v, ParamValue::I64(_)),
            ParamKind::Float => float.is_some_and(|x| !x.is_nan()),
            ParamKind::PositiveFloat => float.is_some_and(|x| x.is_finite() && x > 0.0),
            ParamKind::NonNegativeFloat => float.is_some_and(|x| x.is_finite() && x >= 0.0),
            ParamKind::Bool => matches!(v, ParamValue::Bool(_)),
            ParamKind::Str => matches!(v, ParamValue::Str(_)),
        }
    }
}

/// One parameter a plugin takes: its name, the values it accepts, and whether it must be
/// given. A plugin declares its parameters as a slice of these
/// ([`TransformPlugin::param_spec`](crate::TransformPlugin::param_spec)); transforms and the
/// registry check a call's [`Params`] against it before the function runs, so an unknown name,
/// a missing required one or an ill-typed value is the same [`Error::PluginParam`] everywhere.
///
/// ```
/// use stategrad_core::transform::{check_params_against, ParamKind, ParamSpec, Params};
/// use stategrad_core::Error;
/// const SPEC: &[ParamSpec] = &[
///     ParamSpec::required("scale", ParamKind::Float),
///     ParamSpec::optional("chunk_size", ParamKind::PositiveInt),
/// ];
/// let ok = Params::new().with("scale", 0.5).with("chunk_size", 4);
/// assert!(check_params_against("mine", SPEC, &ok).is_ok());
/// for bad in [
///     Params::new(),                                       // `scale` missing
///     Params::new().with("scale", 0.5).with("chunk", 4),   // unknown name
///     Params::new().with("scale", "big"),                  // ill-typed
///     Params::new().with("scale", 1.0).with("chunk_size", 0), // out of range
/// ] {
///     let err = check_params_against("mine", SPEC, &bad).unwrap_err();
///     assert!(matches!(err, Error::PluginParam { .. }), "{err}");
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// The parameter's name.
    pub name: &'static str,
    /// The values it accepts.
    pub kind: ParamKind,
    /// Whether a call must give it.
    pub required: bool,
}

impl ParamSpec {
    /// A parameter a call must give.
    pub const fn required(name: &'static str, kind: ParamKind) -> ParamSpec {
        ParamSpec {
            name,
            kind,
            required: true,
        }
    }

    /// A parameter a call may give (the plugin has a default).
    pub const fn optional(name: &'static str, kind: ParamKind) -> ParamSpec {
        ParamSpec {
            name,
            kind,
            required: false,
        }
    }
}

/// Checks `params` against `spec`: every name is declared, every required one is given, every
/// value is of its kind. The error names `plugin`, the parameter and what was expected.
pub fn check_params_against(plugin: &str, spec: &[ParamSpec], params: &Params) -> Result<()> {
    let err = |name: &str, msg: String| Error::PluginParam {
        plugin: plugin.into(),
        name: name.into(),
        msg,
    };
    for name in params.names() {
        if !spec.iter().any(|s| s.name == name) {
            let msg = if spec.is_empty() {
                "unknown parameter; this plugin takes none".to_string()
            } else {
                let names: Vec<&str> = spec.iter().map(|s| s.name).collect();
                format!("unknown parameter; accepted: {}", names.join(", "))
            };
            return Err(err(name, msg));
        }
    }
    for s in spec {
        match params.get(s.name) {
            None if s.required => return Err(err(s.name, "missing".into())),
            None => {}
            Some(v) if s.kind.accepts(v) => {}
            Some(v) => {
                let msg = format!(
                    "expected {}, got {} {v:?}",
                    s.kind.describe(),
                    v.type_name()
                );
                return Err(err(s.name, msg));
            }
        }
    }
    Ok(())
}
