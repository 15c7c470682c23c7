//! Data-parallel training for stategrad over MPI, through the [`mpi`](https://docs.rs/mpi) crate
//! (rsmpi, MPI-3.1).
//!
//! Enable the `mpi` feature (or the facade's `distributed` feature) to get it; without the
//! feature this crate is empty, so building the workspace needs no MPI installation.
//!
//! # The model
//!
//! Every rank runs the same program: it builds the same model, receives the parameters (and
//! optimizer states) of rank 0 (`World::broadcast_states`), takes its `shard` of every
//! global batch, computes its gradients (eagerly or with a jitted gradient function), averages
//! them across ranks (`World::all_reduce_grads`: one reduce-scatter and one all-gather per
//! bucket of tens of MB, not one message per parameter), and applies the same optimizer update,
//! so the parameters stay bit-identical on every rank. Checkpoints are written by rank 0 alone
//! (`World::save_checkpoint`); `World::load_checkpoint` reads the file on rank 0 and broadcasts
//! its values.
//!
//! Inside a process, kernels run on rayon threads; across processes, MPI. One process per
//! socket (or per host) with `RAYON_NUM_THREADS` set to its cores is the usual choice: MPI
//! traffic is then one averaging per bucket per step, and each process keeps its memory local.
//!
//! # Failures
//!
//! Every collective starts with a small handshake (one all-reduce) in which each rank says
//! whether it failed and describes what it is about to send (paths, shapes, dtypes). A rank
//! whose step failed (bad input, a non-finite gradient caught by `World::nan_guard`) passes
//! its error to `World::all_reduce_grads` or `World::agree`: it returns that error, and
//! every other rank returns `DistError::RankFailed` instead of waiting forever; a checkpoint
//! that rank 0 cannot write or read fails the same way on every rank. Ranks whose
//! descriptions differ get `DistError::Mismatch`. A rank that never arrives (a hang, a crash)
//! is caught by a watchdog: when a handshake has not completed within `World::with_timeout`
//! (default 300 s), the rank prints which collective timed out and exits with status 124, and
//! `mpirun` then terminates the job (MPI cannot abandon a started collective, so a typed error
//! is not possible there).

#[cfg(feature = "mpi")]
mod checkpoint;
#[cfg(feature = "mpi")]
mod collective;
#[cfg(feature = "mpi")]
mod error;
#[cfg(feature = "mpi")]
mod watchdog;
#[cfg(feature = "mpi")]
mod world;

#[cfg(feature = "mpi")]
pub use collective::Grads;
#[cfg(feature = "mpi")]
pub use error::{DistError, Result};
#[cfg(feature = "mpi")]
pub use world::{shard, World};
