//! The storage of tensors and its per-thread pool of freed buffers.

use super::*;

/// The storage of a tensor.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq)]
pub enum Buffer {
    /// f32 data.
    F32(Vec<f32>),
    /// f64 data.
    F64(Vec<f64>),
    /// i32 data.
    I32(Vec<i32>),
    /// i64 data.
    I64(Vec<i64>),
    /// bool data.
    Bool(Vec<bool>),
}

impl Buffer {
    pub(crate) fn len(&self) -> usize {
        with_any_slice!(self, v => v.len())
    }
    pub(crate) fn dtype(&self) -> DType {
        match self {
            Buffer::F32(_) => DType::F32,
            Buffer::F64(_) => DType::F64,
            Buffer::I32(_) => DType::I32,
            Buffer::I64(_) => DType::I64,
            Buffer::Bool(_) => DType::Bool,
        }
    }
    /// A buffer with no elements (the storage of an abstract tensor; allocates nothing).
    pub(crate) fn empty(dtype: DType) -> Buffer {
        match dtype {
            DType::F32 => Buffer::F32(Vec::new()),
            DType::F64 => Buffer::F64(Vec::new()),
            DType::I32 => Buffer::I32(Vec::new()),
            DType::I64 => Buffer::I64(Vec::new()),
            DType::Bool => Buffer::Bool(Vec::new()),
        }
    }
    pub(crate) fn get_f64(&self, i: usize) -> f64 {
        with_any_slice!(self, v => v[i].as_f64())
    }
    pub(crate) fn filled(dtype: DType, n: usize, value: f64) -> Buffer {
        match Buffer::try_filled("allocate", dtype, n, value) {
            Ok(b) => b,
            Err(e) => crate::panics::raise(e),
        }
    }

    /// [`Buffer::filled`], or [`Error::AllocationFailed`] when `n` elements cannot be had.
    pub(crate) fn try_filled(
        op: &'static str,
        dtype: DType,
        n: usize,
        value: f64,
    ) -> Result<Buffer> {
        let failed = || Error::AllocationFailed {
            op,
            elements: n,
            dtype: dtype.name(),
        };
        Ok(match dtype {
            DType::F32 => {
                let mut v = pool::try_take_f32(n).ok_or_else(failed)?;
                v.fill(value as f32);
                Buffer::F32(v)
            }
            DType::F64 => {
                let mut v = pool::try_take_f64(n).ok_or_else(failed)?;
                v.fill(value);
                Buffer::F64(v)
            }
            DType::I32 => Buffer::I32(try_vec(n, i32::from_f64_lossy(value)).ok_or_else(failed)?),
            DType::I64 => Buffer::I64(try_vec(n, i64::from_f64_lossy(value)).ok_or_else(failed)?),
            DType::Bool => {
                Buffer::Bool(try_vec(n, bool::from_f64_lossy(value)).ok_or_else(failed)?)
            }
        })
    }

    /// A buffer of `n` elements whose contents are unspecified (valid numbers, possibly left
    /// over from a freed buffer): for kernels that write every element.
    pub(crate) fn for_overwrite(dtype: DType, n: usize) -> Buffer {
        match dtype {
            DType::F32 => Buffer::F32(pool::take_f32(n)),
            DType::F64 => Buffer::F64(pool::take_f64(n)),
            _ => Buffer::filled(dtype, n, 0.0),
        }
    }

    /// The elements converted to `dtype` as numpy's `astype` converts them: floats to integers
    /// truncate toward zero (saturating; NaN becomes 0), integers wrap when narrowed, anything
    /// to `bool` is `x != 0`.
    pub(crate) fn cast(&self, dtype: DType) -> Buffer {
        if self.dtype() == dtype {
            return self.clone();
        }
        fn conv<S: Elem, D: Elem>(v: &[S]) -> Vec<D> {
            if S::DTYPE.is_float() {
                v.iter().map(|&x| D::from_f64_lossy(x.as_f64())).collect()
            } else {
                v.iter().map(|&x| D::from_i64_lossy(x.as_i64())).collect()
            }
        }
        with_any_slice!(self, v => match dtype {
            DType::F32 => Buffer::F32(conv(v)),
            DType::F64 => Buffer::F64(conv(v)),
            DType::I32 => Buffer::I32(conv(v)),
            DType::I64 => Buffer::I64(conv(v)),
            DType::Bool => Buffer::Bool(conv(v)),
        })
    }

    /// The elements as `T`s, converted as [`Buffer::cast`] does.
    pub(crate) fn to_vec_as<T: Elem>(&self) -> Vec<T> {
        match T::slice(self) {
            Some(s) => s.to_vec(),
            None => T::take_vec(&mut self.cast(T::DTYPE)),
        }
    }
}

/// `n` copies of `value`, or `None` when the memory cannot be had (integer and bool buffers are
/// not pooled: they are data, not the hot path of a training step).
fn try_vec<T: Clone>(n: usize, value: T) -> Option<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.resize(n, value);
    Some(v)
}

impl Drop for Buffer {
    fn drop(&mut self) {
        match self {
            Buffer::F32(v) => pool::give_f32(std::mem::take(v)),
            Buffer::F64(v) => pool::give_f64(std::mem::take(v)),
            Buffer::I32(_) | Buffer::I64(_) | Buffer::Bool(_) => {}
        }
    }
}

/// Reuse of freed buffers, per thread. Large buffers would otherwise go back to the OS and come
/// back as fresh pages (a page fault per 4 KiB and zeroing by the kernel on every pass); small
/// ones would cost a malloc/free pair per operation. Bounded in count and in total size.
pub(crate) mod pool {
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Buffers allocated because no freed one fitted (all threads).
    pub(crate) static FRESH: AtomicU64 = AtomicU64::new(0);

    /// Per thread and dtype: at most this many buffers stay pooled (a jitted AdamW step of a
    /// two-layer MLP frees more than 64 at a time; distinct sizes that never come back, as
    /// jitting thousands of shapes makes, occupy at most this many).
    const MAX_BUFFERS: usize = 128;
    /// Per thread and dtype: 64M elements (256 MB of f32) at most stay pooled.
    const MAX_ELEMENTS: usize = 1 << 26;

    /// Above this many elements a fresh buffer is first reserved fallibly, so that a size the
    /// allocator refuses is an error instead of an abort; smaller ones are not worth the extra
    /// reservation.
    const PROBE_ABOVE: usize = 1 << 16;

    macro_rules! typed_pool {
        ($slot:ident, $try_take:ident, $take:ident, $give:ident, $t:ty) => {
            thread_local! {
                static $slot: RefCell<(Vec<Vec<$t>>, usize)> = const { RefCell::new((Vec::new(), 0)) };
            }

            /// A vector of length `n` (contents unspecified), from the pool when one fits (the
            /// smallest pooled buffer of at least `n`, if it is not over twice as large).
            /// `None` when a fresh buffer of `n` elements cannot be allocated.
            pub(crate) fn $try_take(n: usize) -> Option<Vec<$t>> {
                let reused = $slot
                    .try_with(|p| {
                        let mut p = p.borrow_mut();
                        // The pool is sorted by capacity: the first that fits fits best.
                        let i = p.0.partition_point(|v| v.capacity() < n);
                        if p.0.get(i)?.capacity() > 2 * n + 64 {
                            return None;
                        }
                        let v = p.0.remove(i);
                        p.1 -= v.capacity();
                        Some(v)
                    })
                    .ok()
                    .flatten();
                match reused {
                    Some(mut v) => {
                        v.resize(n, 0.0);
                        Some(v)
                    }
                    None => {
                        if n > PROBE_ABOVE {
                            // `vec!` of zeros gets pages zeroed lazily by the OS, which a
                            // fallible reserve plus fill would lose; probe with a reservation
                            // that is never touched, then allocate for real.
                            let mut probe: Vec<$t> = Vec::new();
                            probe.try_reserve_exact(n).ok()?;
                        }
                        FRESH.fetch_add(1, Ordering::Relaxed);
                        Some(vec![0.0; n])
                    }
                }
            }

            /// [`$try_take`], raising [`crate::Error::AllocationFailed`] on failure.
            pub(crate) fn $take(n: usize) -> Vec<$t> {
                match $try_take(n) {
                    Some(v) => v,
                    None => crate::panics::raise(crate::Error::AllocationFailed {
                        op: "allocate",
                        elements: n,
                        dtype: <$t as super::Elem>::DTYPE.name(),
                    }),
                }
            }

            /// Return a vector to the pool (dropped if the pool is full of larger ones).
            pub(crate) fn $give(v: Vec<$t>) {
                let cap = v.capacity();
                if cap == 0 || cap > MAX_ELEMENTS {
                    return;
                }
                let _ = $slot.try_with(|p| {
                    let mut p = p.borrow_mut();
                    // When full, smaller buffers make room for a larger one: a large buffer
                    // saves page faults on every element, a small one only a malloc.
                    while p.0.len() >= MAX_BUFFERS || p.1 + cap > MAX_ELEMENTS {
                        let Some(c) = p.0.first().map(Vec::capacity) else {
                            break;
                        };
                        if c >= cap {
                            return;
                        }
                        p.0.remove(0);
                        p.1 -= c;
                    }
                    let i = p.0.partition_point(|b| b.capacity() < cap);
                    p.1 += cap;
                    p.0.insert(i, v);
                });
            }
        };
    }

    typed_pool!(F32, try_take_f32, take_f32, give_f32, f32);
    typed_pool!(F64, try_take_f64, take_f64, give_f64, f64);

    /// Free every buffer pooled by this thread.
    pub(crate) fn clear() {
        let _ = F32.try_with(|p| *p.borrow_mut() = (Vec::new(), 0));
        let _ = F64.try_with(|p| *p.borrow_mut() = (Vec::new(), 0));
    }
}

/// How many tensor buffers were freshly allocated (not reused from freed ones) so far, over all
/// threads. A steady-state `jit` replay reuses every buffer of the previous call, so this does
/// not grow across replays.
///
/// ```
/// use stategrad_core::{tensor::fresh_buffer_count, Tensor};
/// let x = Tensor::ones(&[1000]);
/// drop(&x * 2.0); // warm the pool for this size
/// let before = fresh_buffer_count();
/// let y = &x * 3.0;
/// assert_eq!(fresh_buffer_count(), before);
/// # drop(y);
/// ```
pub fn fresh_buffer_count() -> u64 {
    pool::FRESH.load(std::sync::atomic::Ordering::Relaxed)
}

/// Give the memory of the freed tensor buffers this thread keeps for reuse back to the
/// allocator (at most 64M elements per dtype are kept).
pub fn release_pooled_buffers() {
    pool::clear();
}
