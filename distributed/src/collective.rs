//! Collectives over tensors, gradient sets and states.
//!
//! Sums are never a plain `MPI_Allreduce`: it may round differently on different ranks, and
//! parameters updated from such sums would drift apart bit by bit. Tensor sums are reduced on
//! rank 0 and broadcast (`MPI_Reduce` + `MPI_Bcast`); gradient buckets are reduce-scattered and
//! all-gathered (each element summed once, on the rank that owns its slice). Either way each
//! rank holds the very same bits.

use crate::error::{DistError, Result};
use crate::world::{fnv, World};
use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::traits::*;
use stategrad_core::{DType, Error, Path, StateMap, Tensor};
use std::collections::BTreeMap;

/// A gradient set: path-keyed tensors, as `grad(..).grad_states(map)` returns them.
pub type Grads = BTreeMap<Path, Tensor>;

fn dtype_code(d: DType) -> u64 {
    match d {
        DType::F32 => 0,
        DType::F64 => 1,
        DType::I32 => 2,
        DType::I64 => 3,
        DType::Bool => 4,
    }
}

fn dtype_of(code: u64) -> Option<DType> {
    Some(match code {
        0 => DType::F32,
        1 => DType::F64,
        2 => DType::I32,
        3 => DType::I64,
        4 => DType::Bool,
        _ => return None,
    })
}

/// The description every rank must agree on: paths, shapes and dtypes.
pub(crate) fn describe<'a>(op: &str, items: impl IntoIterator<Item = (String, &'a Tensor)>) -> u64 {
    let mut text = String::from(op);
    let mut dims = Vec::new();
    for (name, t) in items {
        text.push_str(&name);
        text.push('\0');
        dims.push(dtype_code(t.dtype()));
        dims.push(t.ndim() as u64);
        dims.extend(t.shape().iter().map(|&d| d as u64));
    }
    fnv(dims, &text)
}

impl World {
    /// Sum `v` over the ranks: reduced on rank 0, then broadcast (identical bits everywhere).
    fn sum_slice<T: Equivalence + Default + Clone>(&self, v: &[T]) -> Vec<T> {
        let root = self.comm.process_at_rank(0);
        let mut out = vec![T::default(); v.len()];
        if self.rank == 0 {
            root.reduce_into_root(v, &mut out[..], SystemOperation::sum());
        } else {
            root.reduce_into(v, SystemOperation::sum());
        }
        root.broadcast_into(&mut out[..]);
        out
    }

    fn broadcast_slice<T: Equivalence>(&self, v: &mut [T], root: usize) {
        self.comm.process_at_rank(root as i32).broadcast_into(v);
    }

    /// The sum of `t` over all ranks (every rank passes a tensor of the same shape and dtype;
    /// floats and integers).
    ///
    /// ```no_run
    /// # let world = stategrad_distributed::World::init()?;
    /// use stategrad_core::Tensor;
    /// let total = world.all_reduce_sum(&Tensor::scalar(world.rank() as f64))?;
    /// # Ok::<(), stategrad_distributed::DistError>(())
    /// ```
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        const OP: &str = "all_reduce_sum";
        self.handshake(OP, false, 0, describe(OP, [(String::new(), t)]))?;
        let shape = t.shape();
        let out = match t.dtype() {
            DType::F32 => Tensor::from_vec(self.sum_slice(&t.to_vec::<f32>()), shape),
            DType::F64 => Tensor::from_vec(self.sum_slice(&t.to_vec::<f64>()), shape),
            DType::I32 => Tensor::from_vec(self.sum_slice(&t.to_vec::<i32>()), shape),
            DType::I64 => Tensor::from_vec(self.sum_slice(&t.to_vec::<i64>()), shape),
            DType::Bool => {
                return Err(DistError::DType {
                    op: OP,
                    dtype: "bool",
                })
            }
        };
        Ok(out?)
    }

    /// The mean of `t` over all ranks (floats).
    pub fn all_reduce_mean(&self, t: &Tensor) -> Result<Tensor> {
        if !t.dtype().is_float() {
            return Err(DistError::DType {
                op: "all_reduce_mean",
                dtype: t.dtype().name(),
            });
        }
        Ok(self
            .all_reduce_sum(t)?
            .try_mul_scalar(1.0 / self.size as f64)?)
    }

    /// Every rank's `t`, stacked along a new first axis in rank order (shape `(size, ..)`).
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        const OP: &str = "all_gather";
        self.handshake(OP, false, 0, describe(OP, [(String::new(), t)]))?;
        let mut shape = vec![self.size];
        shape.extend_from_slice(t.shape());
        fn gather<T: Equivalence + Default + Clone + stategrad_core::Elem>(
            w: &World,
            t: &Tensor,
            shape: &[usize],
        ) -> std::result::Result<Tensor, Error> {
            let v = t.to_vec::<T>();
            let mut out = vec![T::default(); v.len() * w.size];
            w.comm.all_gather_into(&v[..], &mut out[..]);
            Tensor::from_vec(out, shape)
        }
        let out = match t.dtype() {
            DType::F32 => gather::<f32>(self, t, &shape),
            DType::F64 => gather::<f64>(self, t, &shape),
            DType::I32 => gather::<i32>(self, t, &shape),
            DType::I64 => gather::<i64>(self, t, &shape),
            DType::Bool => {
                gather::<i32>(self, &t.astype(DType::I32), &shape).map(|g| g.astype(DType::Bool))
            }
        };
        Ok(out?)
    }

    /// Rank `root`'s tensor on every rank (the others' `t` is ignored: its shape and dtype need
    /// not match).
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor> {
        self.handshake("broadcast", false, 0, root as u64)?;
        let mut head = [dtype_code(t.dtype()), t.ndim() as u64];
        self.broadcast_slice(&mut head[..], root);
        let mut dims: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
        dims.resize(head[1] as usize, 0);
        self.broadcast_slice(&mut dims[..], root);
        let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let dtype = dtype_of(head[0]).ok_or(DistError::Mismatch {
            op: "broadcast",
            what: "unknown dtype code".into(),
        })?;
        let local = if self.rank == root {
            t.clone()
        } else {
            Tensor::try_full_dtype(&shape, 0.0, dtype)?
        };
        let mut map = StateMap::new();
        let s = stategrad_core::State::new(local);
        map.insert(Path::new(), s.clone());
        self.broadcast_values(&map, root)?;
        Ok(s.value())
    }

    /// Set every state of `states` to rank `root`'s value (initial parameters and optimizer
    /// states, a loaded checkpoint). The ranks must hold the same paths, shapes and dtypes.
    pub fn broadcast_states(&self, states: &StateMap, root: usize) -> Result<()> {
        const OP: &str = "broadcast_states";
        let values: Vec<(String, Tensor)> = states
            .iter()
            .map(|(p, s)| (p.to_string(), s.value()))
            .collect();
        let sig = describe(OP, values.iter().map(|(p, t)| (p.clone(), t)));
        self.handshake(OP, false, 0, sig ^ root as u64)?;
        self.broadcast_values(states, root)
    }

    /// Broadcast the values of `states` packed per dtype (one message per dtype).
    pub(crate) fn broadcast_values(&self, states: &StateMap, root: usize) -> Result<()> {
        fn run<T: Equivalence + Default + Clone + stategrad_core::Elem>(
            w: &World,
            items: &[(&stategrad_core::State, Tensor)],
            root: usize,
            convert: DType,
        ) -> std::result::Result<(), Error> {
            let mut flat: Vec<T> = Vec::new();
            for (_, t) in items {
                flat.extend(t.astype(convert).to_vec::<T>());
            }
            w.broadcast_slice(&mut flat[..], root);
            if w.rank != root {
                let mut at = 0;
                for (s, t) in items {
                    let n = t.numel();
                    let v = Tensor::from_vec(flat[at..at + n].to_vec(), t.shape())?;
                    s.set_value(v.astype(t.dtype()));
                    at += n;
                }
            }
            Ok(())
        }
        for dtype in [DType::F32, DType::F64, DType::I32, DType::I64, DType::Bool] {
            let items: Vec<(&stategrad_core::State, Tensor)> = states
                .values()
                .map(|s| (s, s.value()))
                .filter(|(_, t)| t.dtype() == dtype)
                .collect();
            if items.is_empty() {
                continue;
            }
            match dtype {
                DType::F32 => run::<f32>(self, &items, root, dtype)?,
                DType::F64 => run::<f64>(self, &items, root, dtype)?,
                DType::I32 | DType::Bool => run::<i32>(self, &items, root, DType::I32)?,
                DType::I64 => run::<i64>(self, &items, root, dtype)?,
            }
        }
        Ok(())
    }

    /// The gradient of the mean loss over the global batch, from each rank's gradient of the
    /// mean loss over its shard of `examples` examples: `Σ_r g_r · n_r / Σ_r n_r`, which is the
    /// plain mean when the shards are equal and stays exact when the last one is shorter.
    ///
    /// Pass the local result as the gradient computation returned it: if it is an error (or,
    /// with [`World::nan_guard`], holds a non-finite value), this rank returns it and every
    /// other rank returns [`DistError::RankFailed`], so no rank applies the step.
    ///
    /// Gradients are packed (weighted by `n_r` on the way, the NaN guard checking in the same
    /// pass) into buffers the `World` keeps from step to step, then averaged in buckets of
    /// [`World::with_bucket_bytes`] per dtype: one `MPI_Reduce_scatter_block` (each rank sums
    /// one slice of the bucket, so each element is added up once, on one rank) and one
    /// `MPI_Allgather` of the slices, then divided by `Σ_r n_r` straight into the gradients' own
    /// buffers. Every rank receives the same bits, and each rank sends and receives about twice
    /// the bucket (a reduce on rank 0 followed by a broadcast would put the whole traffic through
    /// rank 0). On one rank nothing is packed or sent: the gradients come back as they are.
    /// The kept buffers hold about the gradients' size plus one bucket, per `World`.
    pub fn all_reduce_grads(
        &self,
        local: std::result::Result<Grads, Error>,
        examples: usize,
    ) -> Result<Grads> {
        const OP: &str = "all_reduce_grads";
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let prepared = local.and_then(|g| self.prepare(g, examples, &mut scratch));
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = self.handshake(OP, true, 0, 0);
                return Err(DistError::Local(e));
            }
        };
        let sig = describe(
            OP,
            prepared
                .f32s
                .iter()
                .chain(&prepared.f64s)
                .map(|(p, t)| (p.to_string(), t)),
        );
        let total = self.handshake(OP, false, examples as u64, sig)?;
        let Prepared {
            f32s,
            f64s,
            f32_buckets,
            f64_buckets,
        } = prepared;
        let mut out = Grads::new();
        if total == 0 {
            for (p, t) in f32s.into_iter().chain(f64s) {
                out.insert(p, t.try_mul_scalar(0.0)?);
            }
            return Ok(out);
        }
        if self.size == 1 {
            // g · n / n: the gradients themselves.
            out.extend(f32s.into_iter().chain(f64s));
            return Ok(out);
        }
        self.reduce_buckets(f32s, &f32_buckets, total, &mut scratch.f32, &mut out)?;
        self.reduce_buckets(f64s, &f64_buckets, total, &mut scratch.f64, &mut out)?;
        Ok(out)
    }

    /// Check the local gradients (float dtypes; finite under the NaN guard) and, on more than
    /// one rank, pack them weighted by `examples` into the scratch buffers.
    fn prepare(&self, g: Grads, examples: usize, scratch: &mut Scratch) -> ResultCore<Prepared> {
        if let Some(t) = g.values().find(|t| !t.dtype().is_float()) {
            return Err(Error::UnsupportedDType {
                op: "all_reduce_grads",
                dtype: t.dtype().name(),
                expected: "float gradients",
            });
        }
        let (f32s, f64s): (Vec<(Path, Tensor)>, Vec<(Path, Tensor)>) =
            g.into_iter().partition(|(_, t)| t.dtype() == DType::F32);
        let guard = self.nan_guard;
        let (f32_buckets, f64_buckets) = if self.size == 1 {
            if guard {
                check_finite::<f32>(&f32s, self.rank)?;
                check_finite::<f64>(&f64s, self.rank)?;
            }
            (Vec::new(), Vec::new())
        } else {
            let (bytes, size) = (self.bucket_bytes, self.size);
            let rank = self.rank;
            (
                pack::<f32>(&f32s, bytes, size, examples, guard, rank, &mut scratch.f32)?,
                pack::<f64>(&f64s, bytes, size, examples, guard, rank, &mut scratch.f64)?,
            )
        };
        Ok(Prepared {
            f32s,
            f64s,
            f32_buckets,
            f64_buckets,
        })
    }

    /// Sum each packed bucket over the ranks (reduce-scatter, then all-gather: every element
    /// summed once, on one rank) and write `sum / total` into the gradients' own buffers.
    fn reduce_buckets<T: Real>(
        &self,
        items: Vec<(Path, Tensor)>,
        buckets: &[Bucket],
        total: u64,
        buf: &mut Buffers<T>,
        out: &mut Grads,
    ) -> ResultCore<()> {
        let n_total = T::from_u64(total);
        let mut items = items.into_iter();
        for b in buckets {
            let padded = b.region.len();
            if buf.mine.len() < b.chunk {
                buf.mine.resize(b.chunk, T::default());
            }
            if buf.gathered.len() < padded {
                buf.gathered.resize(padded, T::default());
            }
            self.comm.reduce_scatter_block_into(
                &buf.packed[b.region.clone()],
                &mut buf.mine[..b.chunk],
                SystemOperation::sum(),
            );
            self.comm
                .all_gather_into(&buf.mine[..b.chunk], &mut buf.gathered[..padded]);
            let mut at = 0;
            for (p, t) in items.by_ref().take(b.count) {
                let n = t.numel();
                let shape = t.shape().to_vec();
                let mut v = t.into_vec::<T>();
                for (o, &s) in v.iter_mut().zip(&buf.gathered[at..at + n]) {
                    *o = s / n_total;
                }
                out.insert(p, Tensor::from_vec(v, &shape)?);
                at += n;
            }
        }
        Ok(())
    }
}

type ResultCore<T> = std::result::Result<T, Error>;

/// The local gradients split by dtype (in path order), with their packed buckets.
struct Prepared {
    f32s: Vec<(Path, Tensor)>,
    f64s: Vec<(Path, Tensor)>,
    f32_buckets: Vec<Bucket>,
    f64_buckets: Vec<Bucket>,
}

/// `count` consecutive gradients packed in `region` of the scratch buffer, zero-padded to
/// `chunk` elements per rank.
struct Bucket {
    count: usize,
    region: std::ops::Range<usize>,
    chunk: usize,
}

/// Buffers [`World::all_reduce_grads`] keeps between calls, so that a step in steady state
/// allocates nothing and touches no fresh page.
#[derive(Default)]
pub(crate) struct Scratch {
    f32: Buffers<f32>,
    f64: Buffers<f64>,
}

#[derive(Default)]
pub(crate) struct Buffers<T> {
    packed: Vec<T>,
    mine: Vec<T>,
    gathered: Vec<T>,
}

/// The float element types gradients are averaged in.
trait Real:
    Equivalence
    + stategrad_core::Elem
    + Copy
    + Default
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    fn from_u64(n: u64) -> Self;
    fn finite(self) -> bool;
}

impl Real for f32 {
    fn from_u64(n: u64) -> f32 {
        n as f32
    }
    fn finite(self) -> bool {
        self.is_finite()
    }
}

impl Real for f64 {
    fn from_u64(n: u64) -> f64 {
        n as f64
    }
    fn finite(self) -> bool {
        self.is_finite()
    }
}

fn non_finite(p: &Path, rank: usize) -> Error {
    Error::InvalidArgument {
        op: "all_reduce_grads",
        msg: format!("non-finite gradient at {p} on rank {rank}"),
    }
}

fn values<T: Real>(t: &Tensor) -> std::borrow::Cow<'_, [T]> {
    match t.as_slice::<T>() {
        Some(v) => v.into(),
        None => t.to_vec::<T>().into(),
    }
}

fn check_finite<T: Real>(items: &[(Path, Tensor)], rank: usize) -> ResultCore<()> {
    match items
        .iter()
        .find(|(_, t)| !values::<T>(t).iter().all(|x| x.finite()))
    {
        Some((p, _)) => Err(non_finite(p, rank)),
        None => Ok(()),
    }
}

/// Pack `items` weighted by `weight` into `buf.packed`, bucket by bucket, each bucket
/// zero-padded to a multiple of `size`; with `guard`, a non-finite value is this rank's error.
fn pack<T: Real>(
    items: &[(Path, Tensor)],
    bucket_bytes: usize,
    size: usize,
    weight: usize,
    guard: bool,
    rank: usize,
    buf: &mut Buffers<T>,
) -> ResultCore<Vec<Bucket>> {
    let w = T::from_u64(weight as u64);
    buf.packed.clear();
    let mut out = Vec::new();
    for r in bucket_ranges(items, bucket_bytes) {
        let start = buf.packed.len();
        for (p, t) in &items[r.clone()] {
            let mut finite = true;
            buf.packed.extend(values::<T>(t).iter().map(|&x| {
                finite &= x.finite();
                x * w
            }));
            if guard && !finite {
                return Err(non_finite(p, rank));
            }
        }
        let chunk = (buf.packed.len() - start).div_ceil(size);
        buf.packed.resize(start + chunk * size, T::default());
        out.push(Bucket {
            count: r.len(),
            region: start..buf.packed.len(),
            chunk,
        });
    }
    Ok(out)
}

/// Consecutive runs of `items` of at most `bytes` each (a larger tensor is a bucket alone).
fn bucket_ranges(items: &[(Path, Tensor)], bytes: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0usize);
    for (i, (_, t)) in items.iter().enumerate() {
        let b = t.numel() * if t.dtype() == DType::F64 { 8 } else { 4 };
        if i > start && size + b > bytes {
            out.push(start..i);
            start = i;
            size = 0;
        }
        size += b;
    }
    if start < items.len() {
        out.push(start..items.len());
    }
    out
}
