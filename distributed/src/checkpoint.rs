//! Checkpoints in a data-parallel job: rank 0 writes, rank 0 reads and broadcasts.

use crate::collective::describe;
use crate::error::{DistError, Result};
use crate::world::World;
use stategrad_core::{StateMap, Tensor};
use stategrad_nn::checkpoint::{load_file, save_file, CheckpointError};

impl World {
    /// Save the checkpoint of `states` (safetensors, as `stategrad_nn::checkpoint::save_file`
    /// writes it) to `path` from rank 0 only; the other ranks wait for it. The states hold the
    /// same values on every rank in data-parallel training, so one file is the whole job's.
    ///
    /// If the write fails, rank 0 returns [`DistError::Checkpoint`] and every other rank
    /// [`DistError::RankFailed`]. The other ranks wait under the handshake's timeout
    /// ([`World::with_timeout`]), so a write must take less than that.
    ///
    /// ```no_run
    /// # let world = stategrad_distributed::World::init()?;
    /// # let params = stategrad_core::StateMap::new();
    /// world.save_checkpoint(&params, "model.safetensors")?;
    /// world.load_checkpoint(&params, "model.safetensors")?;
    /// # Ok::<(), stategrad_distributed::DistError>(())
    /// ```
    pub fn save_checkpoint(
        &self,
        states: &StateMap,
        path: impl AsRef<std::path::Path>,
    ) -> Result<()> {
        const OP: &str = "save_checkpoint";
        let local = if self.is_root() {
            save_file(states, path)
        } else {
            Ok(())
        };
        self.conclude(OP, local)
    }

    /// Load the checkpoint at `path` into `states` on every rank: rank 0 reads the file and loads
    /// it (all or nothing, as `stategrad_nn::checkpoint::load_file`), then its values are
    /// broadcast to every rank. Only rank 0 needs to see the file.
    ///
    /// The ranks first agree on the states (paths, shapes, dtypes; else
    /// [`DistError::Mismatch`]). If rank 0 cannot load the file (missing, unreadable, not
    /// matching the states), it returns [`DistError::Checkpoint`], every other rank
    /// [`DistError::RankFailed`], and no rank's states change.
    pub fn load_checkpoint(
        &self,
        states: &StateMap,
        path: impl AsRef<std::path::Path>,
    ) -> Result<()> {
        const OP: &str = "load_checkpoint";
        let values: Vec<(String, Tensor)> = states
            .iter()
            .map(|(p, s)| (p.to_string(), s.value()))
            .collect();
        let sig = describe(OP, values.iter().map(|(p, t)| (p.clone(), t)));
        self.handshake(OP, false, 0, sig)?;
        let local = if self.is_root() {
            load_file(states, path).map(|_| ())
        } else {
            Ok(())
        };
        self.conclude(OP, local)?;
        self.broadcast_values(states, 0)
    }

    /// Every rank learns whether rank 0's checkpoint operation succeeded.
    fn conclude(
        &self,
        op: &'static str,
        local: std::result::Result<(), CheckpointError>,
    ) -> Result<()> {
        match local {
            Ok(()) => self.handshake(op, false, 0, 0).map(|_| ()),
            Err(e) => {
                let _ = self.handshake(op, true, 0, 0);
                Err(DistError::Checkpoint(e))
            }
        }
    }
}
