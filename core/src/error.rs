//! The one typed error of stategrad.

use std::fmt;

/// A shape, printed the way the reference prints it: `(2, 3)`, `(3,)`, `()`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct ShapeDisplay(pub Vec<usize>);

impl fmt::Display for ShapeDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() == 1 {
            write!(f, ",")?;
        }
        write!(f, ")")
    }
}

impl fmt::Debug for ShapeDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<&[usize]> for ShapeDisplay {
    fn from(s: &[usize]) -> Self {
        ShapeDisplay(s.to_vec())
    }
}

/// Every failure stategrad reports, grouped by category, with the data needed to act on it.
///
/// ```
/// use stategrad_core::{Error, Tensor};
/// let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
/// let b = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
/// let err = a.try_add(&b).unwrap_err();
/// assert!(matches!(err, Error::ShapeMismatch { .. }));
/// assert!(err.to_string().contains("(2,)") && err.to_string().contains("(3,)"));
/// ```
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- shapes and values ----
    /// Two operands of `op` cannot be combined.
    #[error("shape mismatch in `{op}`: {lhs} and {rhs}")]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// Left operand's shape.
        lhs: ShapeDisplay,
        /// Right operand's shape.
        rhs: ShapeDisplay,
    },
    /// An operation was given an argument it cannot accept (an axis, a slice range, a length).
    #[error("invalid argument to `{op}`: {msg}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        msg: String,
    },
    /// The data length does not match the product of the shape.
    #[error("data of length {len} cannot have shape {shape}")]
    DataLength {
        /// Length of the data.
        len: usize,
        /// Requested shape.
        shape: ShapeDisplay,
    },
    /// A shape whose element count does not fit in `usize` (more than `isize::MAX` elements,
    /// numpy's bound).
    #[error("shape {shape} in `{op}` has more elements than fit in a tensor (at most isize::MAX)")]
    ShapeOverflow {
        /// The operation.
        op: &'static str,
        /// The shape asked for.
        shape: ShapeDisplay,
    },
    /// A buffer of `elements` elements could not be allocated.
    #[error("cannot allocate {elements} elements of {dtype} for `{op}`")]
    AllocationFailed {
        /// The operation.
        op: &'static str,
        /// How many elements were asked for.
        elements: usize,
        /// Their dtype.
        dtype: &'static str,
    },
    /// Operands have different dtypes where one is required.
    #[error("dtype mismatch in `{op}`: {lhs} and {rhs}")]
    DTypeMismatch {
        /// The operation.
        op: &'static str,
        /// Left dtype.
        lhs: &'static str,
        /// Right dtype.
        rhs: &'static str,
    },

    // ---- transform options ----
    /// An `argnums` entry is outside `0..nargs`.
    #[error("argnums {argnum} is out of range for a function of {nargs} positional argument(s)")]
    ArgnumOutOfRange {
        /// The offending index.
        argnum: i64,
        /// Number of arguments the function takes.
        nargs: usize,
    },
    /// An `argnums` entry is negative (the reference silently picks the wrong argument).
    #[error("argnums {argnum} is negative; give indices in 0..{nargs}")]
    NegativeArgnum {
        /// The offending index.
        argnum: i64,
        /// Number of arguments the function takes.
        nargs: usize,
    },
    /// An `argnums` entry appears twice.
    #[error("argnums {argnum} appears more than once")]
    DuplicateArgnum {
        /// The repeated index.
        argnum: usize,
    },
    /// An operation does not accept tensors of this dtype (an integer where it computes on
    /// floats, a float where it needs indices, ...).
    #[error("`{op}` does not accept {dtype} tensors: it needs {expected}")]
    UnsupportedDType {
        /// The operation.
        op: &'static str,
        /// The dtype it was given.
        dtype: &'static str,
        /// What it accepts, and how to get there.
        expected: &'static str,
    },
    /// A selected argument is not differentiable (an integer, a plain float, a static value).
    #[error("argument {argnum} is not differentiable: {reason}")]
    NonDifferentiableArg {
        /// The argument's position.
        argnum: usize,
        /// Why, and what to pass instead.
        reason: String,
    },
    /// `grad` needs a scalar output.
    #[error("gradient only defined for scalar-output functions, output had shape {shape}")]
    NonScalarOutput {
        /// The output's shape.
        shape: ShapeDisplay,
    },
    /// A state in `grad_states` was never read or written by the function.
    #[error("grad state {state} was not used by the function; remove it from grad_states or set check_states(false) to get zeros")]
    UnusedGradState {
        /// Name and path of the state.
        state: String,
    },
    /// An option value is not one of the accepted ones.
    #[error("invalid option `{option}`: {msg}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What was wrong.
        msg: String,
    },
    /// A transform combination that is not supported.
    #[error("unsupported transform: {0}")]
    Unsupported(String),

    // ---- tree-valued states ----
    /// A tensor-only operation (`value`, `set_value`, `shape`, a `grad_states` entry) was given a
    /// tree-valued state.
    #[error("state {state} holds a tree of tensors, so `{op}` cannot use it: {hint}")]
    TreeState {
        /// The state's label.
        state: String,
        /// The operation.
        op: &'static str,
        /// What to use instead.
        hint: String,
    },
    /// A tree value does not have the structure of the tree-valued state it is written to.
    #[error("cannot write a tree of structure {found} to state {state} of structure {expected}; the structure of a tree state is fixed")]
    TreeStructureMismatch {
        /// The state's label.
        state: String,
        /// The state's structure (`{'bias': *, 'weight': *}`).
        expected: String,
        /// The written value's structure.
        found: String,
    },
    /// No child of a state at this key or path.
    #[error("state {state} has no child at {path} (its structure is {structure})")]
    NoSuchLeaf {
        /// The state's label.
        state: String,
        /// The key or path asked for.
        path: String,
        /// The state's structure.
        structure: String,
    },

    // ---- the traced function ----
    /// The traced function panicked; states were restored to their entry values.
    #[error("the traced function panicked: {0} (states were restored)")]
    Panicked(String),
    /// A NaN or infinity appeared in a gradient computation (`debug_nan`).
    #[error("non-finite value produced by primitive `{primitive}`{}", location.as_ref().map(|l| format!(" ({l})")).unwrap_or_default())]
    NonFinite {
        /// Primitive that produced it.
        primitive: String,
        /// Where: a state path or gradient path, when known.
        location: Option<String>,
    },

    // ---- plugins ----
    /// A plugin or processor name was not found in the registry.
    #[error("no {kind} named `{name}` is registered (known: {known})")]
    UnknownPlugin {
        /// "transform plugin" or "gradient processor".
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// Registered names.
        known: String,
    },
    /// A name was registered twice without asking to replace it.
    #[error("a {kind} named `{name}` is already registered; use replace to overwrite it")]
    DuplicatePlugin {
        /// "transform plugin" or "gradient processor".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A plugin parameter is missing or has the wrong type.
    #[error("parameter `{name}` of `{plugin}`: {msg}")]
    PluginParam {
        /// The plugin.
        plugin: String,
        /// The parameter.
        name: String,
        /// What was wrong.
        msg: String,
    },
    /// A plugin returned a result that does not fit its inputs.
    #[error("plugin `{plugin}` returned a malformed result: {msg}")]
    MalformedPluginResult {
        /// The plugin.
        plugin: String,
        /// What was wrong.
        msg: String,
    },

    // ---- jit ----
    /// A traced (abstract) value was read as data inside `jit`.
    #[error("cannot read the value of a traced tensor of shape {shape} inside jit ({what}); use where/select or cond")]
    TracedValueRead {
        /// The tensor's shape.
        shape: ShapeDisplay,
        /// What tried to read it.
        what: &'static str,
    },

    // ---- the engine itself ----
    /// A defect in stategrad: an internal invariant failed while running `primitive`. The call
    /// changed no state; please report it with the program that triggers it.
    #[error("internal error in `{primitive}`: {msg} (states unchanged; please report this)")]
    Internal {
        /// The primitive (or engine stage) that was running.
        primitive: String,
        /// What went wrong.
        msg: String,
    },
}

/// The result type of stategrad.
pub type Result<T, E = Error> = std::result::Result<T, E>;
