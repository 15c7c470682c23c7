//! The world communicator: ranks, the failure handshake, and the options of the collectives.

use crate::collective::Scratch;
use crate::error::{DistError, Result};
use crate::watchdog::Watchdog;
use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

/// All the processes of an MPI job (`MPI_COMM_WORLD`), with the options of the collectives.
/// Create one per process, at the start; dropping it finalises MPI.
///
/// ```no_run
/// // Run with `mpirun -n 2 target/debug/examples/...`.
/// use stategrad_distributed::World;
/// let world = World::init()?;
/// println!("rank {} of {}", world.rank(), world.size());
/// world.barrier()?;
/// # Ok::<(), stategrad_distributed::DistError>(())
/// ```
pub struct World {
    pub(crate) comm: SimpleCommunicator,
    pub(crate) rank: usize,
    pub(crate) size: usize,
    pub(crate) timeout: Duration,
    pub(crate) bucket_bytes: usize,
    pub(crate) nan_guard: bool,
    pub(crate) scratch: Mutex<Scratch>,
    watchdog: Watchdog,
    // Last: finalises MPI when dropped, after everything that uses it.
    _universe: mpi::environment::Universe,
}

/// The examples of a global batch of `n` that rank `rank` of `size` takes: contiguous, the
/// first `n % size` ranks one more, so the union over ranks is `0..n` in order.
///
/// ```
/// use stategrad_distributed::shard;
/// assert_eq!(shard(7, 0, 3), 0..3);
/// assert_eq!(shard(7, 1, 3), 3..5);
/// assert_eq!(shard(7, 2, 3), 5..7);
/// ```
pub fn shard(n: usize, rank: usize, size: usize) -> Range<usize> {
    let size = size.max(1);
    let (base, extra) = (n / size, n % size);
    let start = rank * base + rank.min(extra);
    let len = base + usize::from(rank < extra);
    start.min(n)..(start + len).min(n)
}

impl World {
    /// Initialise MPI and take the world communicator. Errors if MPI is already initialised in
    /// this process.
    pub fn init() -> Result<World> {
        let universe = mpi::initialize()
            .ok_or_else(|| DistError::Init("MPI is already initialised in this process".into()))?;
        let comm = universe.world();
        let rank = usize::try_from(comm.rank()).map_err(|e| DistError::Init(e.to_string()))?;
        let size = usize::try_from(comm.size()).map_err(|e| DistError::Init(e.to_string()))?;
        Ok(World {
            comm,
            rank,
            size,
            timeout: Duration::from_secs(300),
            bucket_bytes: 25 << 20,
            nan_guard: true,
            scratch: Mutex::default(),
            watchdog: Watchdog::start(rank),
            _universe: universe,
        })
    }

    /// This process's rank, in `0..size`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// True on rank 0, the rank that writes checkpoints and logs.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// How long a handshake may wait for the other ranks before this rank ends the job
    /// (default 300 s; see the crate docs).
    pub fn with_timeout(mut self, timeout: Duration) -> World {
        self.timeout = timeout;
        self
    }

    /// The size of the buckets gradients are averaged in (default 25 MiB): one all-reduce per
    /// bucket per dtype, so a model of many small parameters costs a few messages, not one per
    /// parameter.
    pub fn with_bucket_bytes(mut self, bytes: usize) -> World {
        self.bucket_bytes = bytes.max(1);
        self
    }

    /// Whether [`World::all_reduce_grads`] treats a non-finite local gradient as this rank's
    /// failure (default on): every rank then returns an error instead of applying NaNs.
    pub fn nan_guard(mut self, on: bool) -> World {
        self.nan_guard = on;
        self
    }

    /// Block until every rank arrives (under the timeout).
    pub fn barrier(&self) -> Result<()> {
        self.handshake("barrier", false, 0, 0).map(|_| ())
    }

    /// Agree on the outcome of a step: every rank passes its own result; if any rank failed,
    /// each failed rank gets its own error back and every other rank
    /// [`DistError::RankFailed`].
    pub fn agree<T>(&self, local: std::result::Result<T, stategrad_core::Error>) -> Result<T> {
        match local {
            Ok(v) => self.handshake("agree", false, 0, 0).map(|_| v),
            Err(e) => {
                let _ = self.handshake("agree", true, 0, 0);
                Err(DistError::Local(e))
            }
        }
    }

    /// One all-reduce (sum) of `[failed, count, signature, rotated signature]` under the
    /// watchdog. Returns the total `count`. A failed rank gets `RankFailed` too (the caller
    /// returns its own error instead); ranks whose signatures differ get `Mismatch`.
    pub(crate) fn handshake(
        &self,
        op: &'static str,
        failed: bool,
        count: u64,
        signature: u64,
    ) -> Result<u64> {
        let rot = signature.rotate_left(29);
        let send = [u64::from(failed), count, signature, rot];
        let mut recv = [0u64; 4];
        self.watchdog.guard(op, self.timeout, || {
            self.comm
                .all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum())
        });
        let others = recv[0] - u64::from(failed);
        if recv[0] > 0 {
            return Err(DistError::RankFailed { op, ranks: others });
        }
        let n = self.size as u64;
        if recv[2] != signature.wrapping_mul(n) || recv[3] != rot.wrapping_mul(n) {
            return Err(DistError::Mismatch {
                op,
                what: format!("rank {} sent a different description", self.rank),
            });
        }
        Ok(recv[1])
    }
}

/// FNV-1a over bytes: the same value in every process (no per-process hash keys).
pub(crate) fn fnv(parts: impl IntoIterator<Item = u64>, text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    text.bytes().for_each(&mut eat);
    for p in parts {
        p.to_le_bytes().into_iter().for_each(&mut eat);
    }
    h
}
