//! Checkpoints in the [safetensors](https://huggingface.co/docs/safetensors) format: save the
//! values of any [`StateMap`] (a module's `model.all_states()`, an optimizer's `opt.states()`,
//! or both merged with [`merge_prefixed`]) to a file or to bytes, and load them back into the
//! same states.
//!
//! # Names
//!
//! Each tensor is stored under the dotted form of its path, [`Path::to_dotted`]:
//! `('layers', 0, 'weight')` is `layers.0.weight`. A name holding a `.` or `\` is escaped
//! (`a.b` is `a\.b`), and a name that is all digits or empty is marked with a leading `\#`
//! (`\#0`), so every path has its own key and [`Path::from_dotted`] reads it back. A
//! tree-valued state ([`State::tree`]) is stored leaf by leaf under its path extended by the
//! leaf's keys, as `module.states(..)` lists it.
//!
//! # Dtypes
//!
//! `float32`, `float64`, `int32`, `int64` and `bool` are stored as safetensors' `F32`, `F64`,
//! `I32`, `I64` and `BOOL` (one byte, 0 or 1), little-endian, and read back bit for bit.
//!
//! # Loading
//!
//! Loading checks the whole file against the states first: every state must have a tensor
//! (else *missing*), every tensor a state (else *unexpected*), with the state's shape and
//! dtype. All the differences are reported in one [`CheckpointError::Mismatch`], and then
//! nothing is written: a model is never half loaded. A [`Loader`] with a [`Filter`] loads
//! only the matching states (the others are neither required nor written, and their tensors in
//! the file are skipped), for fine-tuning from a checkpoint of another model.
//!
//! # Model and optimizer in one file
//!
//! The convention is the prefixes [`MODEL_PREFIX`] (`model.`) and [`OPTIM_PREFIX`]
//! (`optim.`): [`merge_prefixed`] puts each map under its prefix, and the same merged map loads
//! the file back.
//!
//! ```
//! use stategrad_core::{path, Module, ParamState, State, StateMap, Tensor};
//! use stategrad_nn::checkpoint::{load_bytes, merge_prefixed, to_bytes, MODEL_PREFIX, OPTIM_PREFIX};
//! use stategrad_optim::{sgd, Optimizer};
//!
//! let w = ParamState::new(Tensor::new([[1.0f32, 2.0]]));
//! let model: StateMap = [(path!("layers", 0, "weight"), w.clone())].into();
//! let opt = sgd(0.1).momentum(0.9).build(&model).unwrap();
//! let both = || merge_prefixed([(MODEL_PREFIX, model.clone()), (OPTIM_PREFIX, opt.states())]);
//! let bytes = to_bytes(&both()).unwrap();
//!
//! w.set_value(Tensor::new([[0.0f32, 0.0]]));
//! load_bytes(&both(), &bytes).unwrap();
//! assert_eq!(w.value().to_vec::<f32>(), vec![1.0, 2.0]);
//!
//! let names: Vec<String> = stategrad_nn::checkpoint::read_bytes(&bytes).unwrap().into_keys().collect();
//! assert_eq!(names, ["model.layers.0.weight", "optim.count", "optim.trace.layers.0.weight"]);
//! ```

use safetensors::tensor::TensorView;
use safetensors::{Dtype as StDtype, SafeTensors, View};
use stategrad_core::{DType, Filter, Path, PathKey, ShapeDisplay, State, StateMap, Tensor};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

/// The prefix of a module's states in a file that also holds an optimizer's (`model.`).
pub const MODEL_PREFIX: &str = "model";
/// The prefix of an optimizer's states in a file that also holds a module's (`optim.`).
pub const OPTIM_PREFIX: &str = "optim";

/// A state whose shape in the file differs from its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The state's path.
    pub path: Path,
    /// The state's shape.
    pub expected: Vec<usize>,
    /// The shape in the file.
    pub found: Vec<usize>,
}

/// A state whose dtype in the file differs from its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DTypeMismatch {
    /// The state's path.
    pub path: Path,
    /// The state's dtype.
    pub expected: DType,
    /// The dtype in the file: its numpy name (`float64`) for the dtypes stategrad has, else
    /// the safetensors name (`F16`).
    pub found: String,
}

/// Every difference between a checkpoint and the states it was to be loaded into.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MismatchReport {
    /// States with no tensor in the file.
    pub missing: Vec<Path>,
    /// Tensor names in the file with no state (as written in the file).
    pub unexpected: Vec<String>,
    /// States whose tensor has another shape.
    pub shape_mismatches: Vec<ShapeMismatch>,
    /// States whose tensor has another dtype.
    pub dtype_mismatches: Vec<DTypeMismatch>,
}

impl MismatchReport {
    /// True when there is no difference.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.shape_mismatches.is_empty()
            && self.dtype_mismatches.is_empty()
    }
}

impl fmt::Display for MismatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            let v: Vec<String> = self.missing.iter().map(|p| p.to_dotted()).collect();
            parts.push(format!("missing: {}", v.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected: {}", self.unexpected.join(", ")));
        }
        if !self.shape_mismatches.is_empty() {
            let v: Vec<String> = self
                .shape_mismatches
                .iter()
                .map(|m| {
                    format!(
                        "{} (expected {}, found {})",
                        m.path.to_dotted(),
                        ShapeDisplay(m.expected.clone()),
                        ShapeDisplay(m.found.clone())
                    )
                })
                .collect();
            parts.push(format!("shape mismatches: {}", v.join(", ")));
        }
        if !self.dtype_mismatches.is_empty() {
            let v: Vec<String> = self
                .dtype_mismatches
                .iter()
                .map(|m| {
                    format!(
                        "{} (expected {}, found {})",
                        m.path.to_dotted(),
                        m.expected.name(),
                        m.found
                    )
                })
                .collect();
            parts.push(format!("dtype mismatches: {}", v.join(", ")));
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// Why a checkpoint could not be saved or loaded.
///
/// It converts into the core [`stategrad_core::Error`] (as an `InvalidArgument` of op
/// `checkpoint` carrying this message), so `?` works in functions returning
/// `stategrad::Result`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The file does not match the states (every difference is listed); nothing was written.
    #[error("the checkpoint does not match the states (nothing was loaded): {0}")]
    Mismatch(MismatchReport),
    /// Reading or writing the file failed.
    #[error("cannot {op} checkpoint `{}`: {message}", path.display())]
    Io {
        /// `read` or `write`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's message.
        message: String,
    },
    /// The bytes are not a valid safetensors file.
    #[error("not a valid safetensors checkpoint: {0}")]
    Format(String),
    /// Two states would be stored under the same name (a tree state's leaf path equal to
    /// another state's path).
    #[error("two states have the same checkpoint name `{0}`")]
    DuplicateName(String),
    /// A state could not be read or written.
    #[error(transparent)]
    State(#[from] stategrad_core::Error),
}

impl CheckpointError {
    /// The mismatch report, for [`CheckpointError::Mismatch`].
    pub fn report(&self) -> Option<&MismatchReport> {
        match self {
            CheckpointError::Mismatch(r) => Some(r),
            _ => None,
        }
    }
}

impl From<CheckpointError> for stategrad_core::Error {
    fn from(e: CheckpointError) -> Self {
        match e {
            CheckpointError::State(e) => e,
            e => stategrad_core::Error::InvalidArgument {
                op: "checkpoint",
                msg: e.to_string(),
            },
        }
    }
}

/// `states` with every path under the key `prefix` (`weight` becomes `model.weight`).
///
/// ```
/// use stategrad_core::{path, State, StateMap, Tensor};
/// use stategrad_nn::checkpoint::prefixed;
/// let m: StateMap = [(path!("weight"), State::new(Tensor::zeros(&[1])))].into();
/// assert_eq!(prefixed("model", &m).keys().next().unwrap(), &path!("model", "weight"));
/// ```
pub fn prefixed(prefix: &str, states: &StateMap) -> StateMap {
    states
        .iter()
        .map(|(p, s)| {
            let mut keys = vec![PathKey::from(prefix)];
            keys.extend(p.keys().iter().cloned());
            (Path(keys), s.clone())
        })
        .collect()
}

/// One map of several, each under its prefix: `merge_prefixed([(MODEL_PREFIX,
/// model.all_states()), (OPTIM_PREFIX, opt.states())])` (see the [module docs](self)).
///
/// ```
/// use stategrad_core::{path, State, StateMap, Tensor};
/// use stategrad_nn::checkpoint::merge_prefixed;
/// let a: StateMap = [(path!("w"), State::new(Tensor::zeros(&[1])))].into();
/// let b: StateMap = [(path!("count"), State::new(Tensor::zeros(&[])))].into();
/// let m = merge_prefixed([("model", a), ("optim", b)]);
/// let names: Vec<String> = m.keys().map(|p| p.to_dotted()).collect();
/// assert_eq!(names, ["model.w", "optim.count"]);
/// ```
pub fn merge_prefixed<'a>(parts: impl IntoIterator<Item = (&'a str, StateMap)>) -> StateMap {
    let mut out = StateMap::new();
    for (prefix, states) in parts {
        out.extend(prefixed(prefix, &states));
    }
    out
}

/// The tensor leaves of `states` (a tree state's leaves under the extended paths), each with
/// its dotted name, sorted by name; an error if two share a name.
fn leaves(states: &StateMap) -> Result<BTreeMap<String, (Path, State)>, CheckpointError> {
    let mut out = BTreeMap::new();
    for (p, s) in states {
        for (lp, leaf) in s.leaves() {
            let mut keys = p.keys().to_vec();
            keys.extend(lp.keys().iter().cloned());
            let path = Path(keys);
            let name = path.to_dotted();
            if out.insert(name.clone(), (path, leaf)).is_some() {
                return Err(CheckpointError::DuplicateName(name));
            }
        }
    }
    Ok(out)
}

/// A tensor encoded for safetensors.
struct Encoded {
    dtype: StDtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Encoded {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn encode(t: &Tensor) -> Encoded {
    let (dtype, data): (StDtype, Vec<u8>) = match t.dtype() {
        DType::F32 => (
            StDtype::F32,
            t.to_vec::<f32>()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F64 => (
            StDtype::F64,
            t.to_vec::<f64>()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::I32 => (
            StDtype::I32,
            t.to_vec::<i32>()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::I64 => (
            StDtype::I64,
            t.to_vec::<i64>()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::Bool => (
            StDtype::BOOL,
            t.to_vec::<bool>().into_iter().map(u8::from).collect(),
        ),
    };
    Encoded {
        dtype,
        shape: t.shape().to_vec(),
        data,
    }
}

fn dtype_of(d: StDtype) -> Option<DType> {
    match d {
        StDtype::F32 => Some(DType::F32),
        StDtype::F64 => Some(DType::F64),
        StDtype::I32 => Some(DType::I32),
        StDtype::I64 => Some(DType::I64),
        StDtype::BOOL => Some(DType::Bool),
        _ => None,
    }
}

fn dtype_name(d: StDtype) -> String {
    dtype_of(d)
        .map(|d| d.name().to_string())
        .unwrap_or_else(|| format!("{d:?}"))
}

fn decode(view: &TensorView<'_>) -> Result<Tensor, CheckpointError> {
    let bytes = view.data();
    let shape = view.shape();
    let t = match view.dtype() {
        StDtype::F32 => Tensor::from_vec(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            shape,
        ),
        StDtype::F64 => Tensor::from_vec(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8")))
                .collect(),
            shape,
        ),
        StDtype::I32 => Tensor::from_vec(
            bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            shape,
        ),
        StDtype::I64 => Tensor::from_vec(
            bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("chunks of 8")))
                .collect(),
            shape,
        ),
        StDtype::BOOL => Tensor::from_vec(bytes.iter().map(|&b| b != 0).collect(), shape),
        other => {
            return Err(CheckpointError::Format(format!(
                "dtype {other:?} is not supported (float32, float64, int32, int64, bool are)"
            )))
        }
    };
    Ok(t?)
}

fn parse(bytes: &[u8]) -> Result<SafeTensors<'_>, CheckpointError> {
    SafeTensors::deserialize(bytes).map_err(|e| CheckpointError::Format(e.to_string()))
}

/// The checkpoint of `states` as safetensors bytes (see the [module docs](self) for the names
/// and dtypes).
///
/// ```
/// use stategrad_core::{path, State, StateMap, Tensor};
/// use stategrad_nn::checkpoint::{read_bytes, to_bytes};
/// let m: StateMap = [(path!("steps"), State::new(Tensor::scalar(7i64)))].into();
/// let t = &read_bytes(&to_bytes(&m).unwrap()).unwrap()["steps"];
/// assert_eq!(t.to_vec::<i64>(), vec![7]);
/// ```
pub fn to_bytes(states: &StateMap) -> Result<Vec<u8>, CheckpointError> {
    let encoded = encode_all(states)?;
    safetensors::serialize(encoded.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| CheckpointError::Format(e.to_string()))
}

fn encode_all(states: &StateMap) -> Result<Vec<(String, Encoded)>, CheckpointError> {
    leaves(states)?
        .into_iter()
        .map(|(name, (_, s))| Ok((name, encode(&s.try_value()?))))
        .collect()
}

/// Write the checkpoint of `states` to the file `path` (through a temporary file in the same
/// folder, renamed over `path`, so a failed write leaves the old file as it was).
///
/// ```
/// use stategrad_core::{path, State, StateMap, Tensor};
/// use stategrad_nn::checkpoint::{load_file, save_file};
/// let s = State::new(Tensor::new([1.5f64, -2.0]));
/// let m: StateMap = [(path!("x"), s.clone())].into();
/// let file = std::env::temp_dir().join(format!("stategrad-doc-{}.safetensors", std::process::id()));
/// save_file(&m, &file).unwrap();
/// s.set_value(Tensor::new([0.0f64, 0.0]));
/// load_file(&m, &file).unwrap();
/// assert_eq!(s.value().to_vec::<f64>(), vec![1.5, -2.0]);
/// std::fs::remove_file(&file).unwrap();
/// ```
pub fn save_file(
    states: &StateMap,
    path: impl AsRef<std::path::Path>,
) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    let encoded = encode_all(states)?;
    safetensors::serialize_to_file(encoded.iter().map(|(k, v)| (k.as_str(), v)), None, path)
        .map_err(|e| match e {
            safetensors::SafeTensorError::IoError(io) => CheckpointError::Io {
                op: "write",
                path: path.to_path_buf(),
                message: io.to_string(),
            },
            e => CheckpointError::Format(e.to_string()),
        })
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, CheckpointError> {
    std::fs::read(path).map_err(|e| CheckpointError::Io {
        op: "read",
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Every tensor of a checkpoint, by its name in the file (no states involved: for inspecting a
/// file, or reading one written by another program; [`Path::from_dotted`] turns a name into a
/// path).
pub fn read_bytes(bytes: &[u8]) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
    let st = parse(bytes)?;
    st.iter()
        .map(|(name, view)| Ok((name.to_string(), decode(&view)?)))
        .collect()
}

/// [`read_bytes`] of the file at `path`.
pub fn read_file(
    path: impl AsRef<std::path::Path>,
) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
    read_bytes(&read(path.as_ref())?)
}

/// Load a checkpoint into `states`: every state must be in the file with its shape and dtype,
/// and every tensor of the file must be a state; else [`CheckpointError::Mismatch`] lists every
/// difference and nothing is written. Returns the paths loaded. See [`Loader`] for partial
/// loading.
pub fn load_bytes(states: &StateMap, bytes: &[u8]) -> Result<Vec<Path>, CheckpointError> {
    Loader::new().load_bytes(states, bytes)
}

/// [`load_bytes`] from the file at `path`.
pub fn load_file(
    states: &StateMap,
    path: impl AsRef<std::path::Path>,
) -> Result<Vec<Path>, CheckpointError> {
    Loader::new().load_file(states, path)
}

/// Options of a load: which states to load (a [`Filter`], every state by default) and whether
/// tensors of the file that match no state are an error (they are by default).
///
/// With a filter, only the states it matches (tested on each tensor leaf with its full path,
/// prefix included) are required and written; the file's tensors of the other states are
/// skipped, not reported as unexpected.
///
/// ```
/// use stategrad_core::{path, Filter, ParamState, State, StateMap, Tensor};
/// use stategrad_nn::checkpoint::{to_bytes, Loader};
/// // A pretrained backbone and head…
/// let pre: StateMap = [
///     (path!("backbone", "weight"), ParamState::new(Tensor::ones(&[2, 2]))),
///     (path!("head", "weight"), ParamState::new(Tensor::ones(&[2, 10]))),
/// ].into();
/// let bytes = to_bytes(&pre).unwrap();
/// // …loaded into a model with a new head of another shape: load the backbone only.
/// let backbone = ParamState::new(Tensor::zeros(&[2, 2]));
/// let head = ParamState::new(Tensor::zeros(&[2, 3]));
/// let model: StateMap = [
///     (path!("backbone", "weight"), backbone.clone()),
///     (path!("head", "weight"), head.clone()),
/// ].into();
/// let loaded = Loader::new()
///     .filter(Filter::path_contains("backbone"))
///     .load_bytes(&model, &bytes)
///     .unwrap();
/// assert_eq!(loaded, [path!("backbone", "weight")]);
/// assert_eq!(backbone.value().sum().item().unwrap(), 4.0);
/// assert_eq!(head.value().sum().item().unwrap(), 0.0);
/// ```
#[derive(Clone, Debug)]
pub struct Loader {
    filter: Filter,
    allow_unexpected: bool,
}

impl Default for Loader {
    fn default() -> Self {
        Loader::new()
    }
}

impl Loader {
    /// Load every state; a tensor of the file with no state is an error.
    pub fn new() -> Loader {
        Loader {
            filter: Filter::Everything,
            allow_unexpected: false,
        }
    }

    /// Load only the states matching `filter`.
    pub fn filter(mut self, filter: impl Into<Filter>) -> Loader {
        self.filter = filter.into();
        self
    }

    /// With `true`, tensors of the file that match no state are ignored instead of reported.
    pub fn allow_unexpected(mut self, allow: bool) -> Loader {
        self.allow_unexpected = allow;
        self
    }

    /// Load from the file at `path` (see [`Loader::load_bytes`]).
    pub fn load_file(
        &self,
        states: &StateMap,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Vec<Path>, CheckpointError> {
        self.load_bytes(states, &read(path.as_ref())?)
    }

    /// Check the checkpoint against the selected states, then write them all (or, on any
    /// difference, nothing: [`CheckpointError::Mismatch`] lists them all). Returns the paths
    /// loaded, sorted by name.
    pub fn load_bytes(
        &self,
        states: &StateMap,
        bytes: &[u8],
    ) -> Result<Vec<Path>, CheckpointError> {
        let st = parse(bytes)?;
        let all = leaves(states)?;
        let mut skipped = BTreeSet::new();
        let mut targets = BTreeMap::new();
        for (name, (path, s)) in all {
            if self.filter.matches(&path, &s) {
                targets.insert(name, (path, s));
            } else {
                skipped.insert(name);
            }
        }
        let mut report = MismatchReport::default();
        let mut file_names: Vec<String> = st.names().into_iter().map(String::from).collect();
        file_names.sort();
        if !self.allow_unexpected {
            report.unexpected = file_names
                .iter()
                .filter(|n| !targets.contains_key(*n) && !skipped.contains(*n))
                .cloned()
                .collect();
        }
        let mut writes = Vec::new();
        for (name, (path, s)) in &targets {
            let Ok(view) = st.tensor(name) else {
                report.missing.push(path.clone());
                continue;
            };
            let current = s.try_value()?;
            let mut ok = true;
            if dtype_of(view.dtype()) != Some(current.dtype()) {
                report.dtype_mismatches.push(DTypeMismatch {
                    path: path.clone(),
                    expected: current.dtype(),
                    found: dtype_name(view.dtype()),
                });
                ok = false;
            }
            if view.shape() != current.shape() {
                report.shape_mismatches.push(ShapeMismatch {
                    path: path.clone(),
                    expected: current.shape().to_vec(),
                    found: view.shape().to_vec(),
                });
                ok = false;
            }
            if ok && report.is_empty() {
                writes.push((path.clone(), s.clone(), view));
            }
        }
        if !report.is_empty() {
            return Err(CheckpointError::Mismatch(report));
        }
        // Decode everything before the first write, so a bad tensor writes nothing either.
        let decoded: Vec<(Path, State, Tensor)> = writes
            .into_iter()
            .map(|(p, s, v)| Ok((p, s, decode(&v)?)))
            .collect::<Result<_, CheckpointError>>()?;
        Ok(decoded
            .into_iter()
            .map(|(p, s, t)| {
                s.set_value(t);
                p
            })
            .collect())
    }
}
