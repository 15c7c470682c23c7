//! stategrad-core: tensors, primitives and their rules, the tape, state-aware transforms,
//! states, modules and filters.
//!
//! See the facade crate `stategrad` for the guide; everything here is re-exported there.

// Unsafe code lives only in `stategrad-simd`, where each block states its proof.
#![forbid(unsafe_code)]

pub mod custom;
mod data_ops;
pub mod error;
pub mod finder;
mod index_ops;
pub mod jit;
mod layout_ops;
pub mod module;
mod operators;
mod ops;
mod options;
mod panics;
mod parallel;
mod path;
mod prim;
pub mod random;
pub mod slicing;
pub mod state;
pub mod tensor;
pub mod tensor_tree;
mod trace;
pub mod transform;
pub mod tree;
pub mod vmap;

pub use custom::{custom_jvp, custom_vjp, CustomFn, JvpArgs, VjpArgs};
pub use error::{Error, Result, ShapeDisplay};
pub use finder::{FoundStates, ReadWrite, StateFinder, StateKey, Usage};
pub use index_ops::{one_hot, try_one_hot_dtype};
pub use jit::{jit, Jit};
pub use module::{
    treefy_states, Filter, Module, NestedStates, Path, PathKey, StateMap, StateSnapshot,
};
pub use operators::ScalarOperand;
pub use ops::where_;
pub use options::KeepDims;
pub use slicing::{NewAxis, SliceElem, SliceRange};
pub use state::{
    AnyState, BatchState, DelayState, HiddenState, LongTermState, ParamState, RandomState,
    ShortTermState, State, StateId, StateKind,
};
pub use tensor::{DType, Elem, Float, IntoTensor, Tensor};
pub use tensor_tree::TensorTree;
pub use trace::{Access, Tape};
pub use transform::{
    grad, hessian, jacfwd, jacobian, jacrev, jvp, vector_grad, vjp, GradientTransform, ParamValue,
    Params, Static, TransformOutput, TransformPlugin,
};
pub use vmap::{vmap, Vmap};
