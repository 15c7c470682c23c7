//! The training toolkit of stategrad: layers built from `ParamState`s, initialisers driven by
//! the seeded random state, losses and metrics, checkpoints in the safetensors format, and
//! seeded mini-batching. Everything is ordinary tensor code over `State`s, so `grad`, `jit` and
//! `vmap` work on it unchanged, and a jitted training step updates parameters in place.

pub mod activation;
pub mod checkpoint;
pub mod data;
pub mod init;
pub mod layers;
pub mod loss;
pub mod metrics;
