//! Errors of the distributed layer.

/// An error of a distributed operation; every rank of a failed collective gets one.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// This rank's own operation failed (the error it passed to the handshake, or one from the
    /// engine while preparing a collective).
    #[error(transparent)]
    Local(#[from] stategrad_core::Error),
    /// Another rank failed the step: `ranks` counts the failing ranks.
    #[error("`{op}`: {ranks} other rank(s) failed this step; no rank applied it")]
    RankFailed {
        /// The collective.
        op: &'static str,
        /// How many ranks failed.
        ranks: u64,
    },
    /// The ranks disagree on what they send (different paths, shapes, dtypes or counts).
    #[error("`{op}`: the ranks disagree on what they send ({what})")]
    Mismatch {
        /// The collective.
        op: &'static str,
        /// What the local rank sent, for the message.
        what: String,
    },
    /// Rank 0 could not save or load a checkpoint ([`World::save_checkpoint`],
    /// [`World::load_checkpoint`]); the other ranks get [`DistError::RankFailed`].
    ///
    /// [`World::save_checkpoint`]: crate::World::save_checkpoint
    /// [`World::load_checkpoint`]: crate::World::load_checkpoint
    #[error(transparent)]
    Checkpoint(#[from] stategrad_nn::checkpoint::CheckpointError),
    /// MPI could not be initialised (already initialised in this process, or no MPI runtime).
    #[error("MPI could not be initialised: {0}")]
    Init(String),
    /// The tensor's dtype cannot take part in this collective (e.g. a sum of bools).
    #[error("`{op}` does not accept {dtype} tensors")]
    DType {
        /// The collective.
        op: &'static str,
        /// The dtype.
        dtype: &'static str,
    },
}

/// `Result` with [`DistError`].
pub type Result<T> = std::result::Result<T, DistError>;
