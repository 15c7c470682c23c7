//! Collectives over tensors, gradient sets and states.
//!
//! Sums are reduced on rank 0 and broadcast (`MPI_Reduce` + `MPI_Bcast`) rather than
//! all-reduced: an all-reduce may round differently on different ranks, and parameters updated
//! from such sums would drift apart bit by bit. Each rank then holds the very same bits.

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
fn describe<'a>(op: &str, items: impl IntoIterator<Item = (String, &'a Tensor)>) -> u64 {
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
    fn broadcast_values(&self, states: &StateMap, root: usize) -> Result<()> {
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
    /// other rank returns [`DistError::RankFailed`], so no rank applies the step. Gradients are
    /// averaged in buckets of [`World::with_bucket_bytes`] per dtype; every rank receives the
    /// same bits.
    pub fn all_reduce_grads(
        &self,
        local: std::result::Result<Grads, Error>,
        examples: usize,
    ) -> Result<Grads> {
        const OP: &str = "all_reduce_grads";
        let checked = local.and_then(|g| {
            if self.nan_guard {
                let finite = |t: &Tensor| match (t.as_slice::<f32>(), t.as_slice::<f64>()) {
                    (Some(v), _) => v.iter().all(|x| x.is_finite()),
                    (_, Some(v)) => v.iter().all(|x| x.is_finite()),
                    _ => true,
                };
                if let Some((p, _)) = g.iter().find(|(_, t)| !finite(t)) {
                    return Err(Error::InvalidArgument {
                        op: OP,
                        msg: format!("non-finite gradient at {p} on rank {}", self.rank),
                    });
                }
            }
            if let Some(t) = g.values().find(|t| !t.dtype().is_float()) {
                return Err(Error::UnsupportedDType {
                    op: OP,
                    dtype: t.dtype().name(),
                    expected: "float gradients",
                });
            }
            Ok(g)
        });
        let grads = match checked {
            Ok(g) => g,
            Err(e) => {
                let _ = self.handshake(OP, true, 0, 0);
                return Err(DistError::Local(e));
            }
        };
        let sig = describe(OP, grads.iter().map(|(p, t)| (p.to_string(), t)));
        let total = self.handshake(OP, false, examples as u64, sig)?;
        let share = if total == 0 {
            0.0
        } else {
            examples as f64 / total as f64
        };
        let mut out = Grads::new();
        for dtype in [DType::F32, DType::F64] {
            let items: Vec<(&Path, &Tensor)> =
                grads.iter().filter(|(_, t)| t.dtype() == dtype).collect();
            for bucket in buckets(&items, self.bucket_bytes) {
                match dtype {
                    DType::F32 => self.reduce_bucket::<f32>(bucket, share, &mut out)?,
                    _ => self.reduce_bucket::<f64>(bucket, share, &mut out)?,
                }
            }
        }
        Ok(out)
    }

    fn reduce_bucket<T: Equivalence + Default + Clone + stategrad_core::Float>(
        &self,
        bucket: &[(&Path, &Tensor)],
        share: f64,
        out: &mut Grads,
    ) -> Result<()> {
        // Packed straight from the gradients' buffers, scaled on the way (no tensor per step).
        let scale = T::from_f64(share);
        let mut flat: Vec<T> = Vec::with_capacity(bucket.iter().map(|(_, t)| t.numel()).sum());
        for (_, t) in bucket {
            match t.as_slice::<T>() {
                Some(v) if share == 1.0 => flat.extend_from_slice(v),
                Some(v) => flat.extend(v.iter().map(|&x| x * scale)),
                None => flat.extend(t.try_mul_scalar(share)?.to_vec::<T>()),
            }
        }
        let summed = self.sum_slice(&flat);
        let mut at = 0;
        for (p, t) in bucket {
            let n = t.numel();
            out.insert(
                (*p).clone(),
                Tensor::from_vec(summed[at..at + n].to_vec(), t.shape())?,
            );
            at += n;
        }
        Ok(())
    }
}

/// Consecutive runs of `items` of at most `bytes` each (a larger tensor is a bucket alone).
fn buckets<'a, 'b>(
    items: &'b [(&'a Path, &'a Tensor)],
    bytes: usize,
) -> Vec<&'b [(&'a Path, &'a Tensor)]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0usize);
    for (i, (_, t)) in items.iter().enumerate() {
        let b = t.numel() * if t.dtype() == DType::F64 { 8 } else { 4 };
        if i > start && size + b > bytes {
            out.push(&items[start..i]);
            start = i;
            size = 0;
        }
        size += b;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}
