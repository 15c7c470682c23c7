//! [`Tensor`]: an immutable, cheaply clonable n-d array of f32 (default) or f64.
//!
//! A tensor is a shared buffer plus a shape. Cloning is an `Arc` clone. Operations never mutate
//! their inputs; a uniquely owned buffer may be reused in place by optimizers
//! ([`Tensor::into_vec`] takes it without a copy when nothing else holds it).
//!
//! Operators (`&a + &b`, `2.0 * &x`, `x.matmul(&w)`) are infallible to keep traced code close to
//! the math. A shape error inside an operator is raised as a typed panic that every transform
//! catches and returns as [`crate::Error`] with all states restored; outside a transform it panics
//! with the same message. Code that wants a `Result` per operation uses the `try_` forms.

use crate::error::{Error, Result, ShapeDisplay};
use smallvec::SmallVec;
use std::fmt;
use std::sync::Arc;

/// Run `$body` with `$v` bound to the typed slice of a buffer of any dtype (one generic body).
macro_rules! with_any_slice {
    ($buf:expr, $v:ident => $body:expr) => {
        match $buf {
            $crate::tensor::Buffer::F32($v) => $body,
            $crate::tensor::Buffer::F64($v) => $body,
            $crate::tensor::Buffer::I32($v) => $body,
            $crate::tensor::Buffer::I64($v) => $body,
            $crate::tensor::Buffer::Bool($v) => $body,
        }
    };
}

mod buffer;
mod convert;
mod display;

pub use buffer::{fresh_buffer_count, release_pooled_buffers, Buffer};
pub use convert::{IntoTensor, NestedData};

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum DType {
    /// 32-bit float, the default.
    #[default]
    F32,
    /// 64-bit float.
    F64,
    /// 32-bit signed integer (not differentiable).
    I32,
    /// 64-bit signed integer (not differentiable).
    I64,
    /// Boolean (not differentiable): comparisons and logical operations return it.
    Bool,
}

impl DType {
    /// The dtype's name as numpy spells it.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::Bool => "bool",
        }
    }

    /// True for `F32` and `F64`, the dtypes that can be differentiated.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// True for `I32` and `I64`.
    pub fn is_int(self) -> bool {
        matches!(self, DType::I32 | DType::I64)
    }

    /// The dtype two operands are promoted to, as JAX promotes: `bool < int32 < int64 <
    /// float32 < float64`, so a float meets an integer as the float (`int64 + float32` is
    /// `float32`, as in JAX, not `float64` as in numpy).
    ///
    /// ```
    /// use stategrad_core::DType;
    /// assert_eq!(DType::I32.promote(DType::F32), DType::F32);
    /// assert_eq!(DType::Bool.promote(DType::I64), DType::I64);
    /// assert_eq!(DType::F32.promote(DType::F64), DType::F64);
    /// ```
    pub fn promote(self, other: DType) -> DType {
        fn rank(d: DType) -> u8 {
            match d {
                DType::Bool => 0,
                DType::I32 => 1,
                DType::I64 => 2,
                DType::F32 => 3,
                DType::F64 => 4,
            }
        }
        if rank(self) >= rank(other) {
            self
        } else {
            other
        }
    }
}

/// An element type a tensor can hold: `f32`, `f64`, `i32`, `i64` or `bool`.
pub trait Elem: Copy + Send + Sync + PartialEq + fmt::Debug + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    #[doc(hidden)]
    fn into_buffer(v: Vec<Self>) -> Buffer;
    #[doc(hidden)]
    fn slice(b: &Buffer) -> Option<&[Self]>;
    #[doc(hidden)]
    fn take_vec(b: &mut Buffer) -> Vec<Self>;
    #[doc(hidden)]
    fn slice_mut(b: &mut Buffer) -> Option<&mut [Self]>;
    /// The value as `f64` (`true` is 1).
    #[doc(hidden)]
    fn as_f64(self) -> f64;
    /// The value as `i64` (floats truncate toward zero and saturate, NaN is 0, as Rust's `as`).
    #[doc(hidden)]
    fn as_i64(self) -> i64;
    /// A value from `f64` (integers truncate and saturate; `bool` is `x != 0`, NaN is true).
    #[doc(hidden)]
    fn from_f64_lossy(v: f64) -> Self;
    /// A value from `i64` (narrower integers wrap, as numpy's `astype`).
    #[doc(hidden)]
    fn from_i64_lossy(v: i64) -> Self;
}

macro_rules! impl_num_casts {
    (bool) => {
        fn as_f64(self) -> f64 {
            f64::from(u8::from(self))
        }
        fn as_i64(self) -> i64 {
            i64::from(self)
        }
        fn from_f64_lossy(v: f64) -> Self {
            v != 0.0
        }
        fn from_i64_lossy(v: i64) -> Self {
            v != 0
        }
    };
    ($t:ty) => {
        fn as_f64(self) -> f64 {
            self as f64
        }
        fn as_i64(self) -> i64 {
            self as i64
        }
        fn from_f64_lossy(v: f64) -> Self {
            v as $t
        }
        fn from_i64_lossy(v: i64) -> Self {
            v as $t
        }
    };
}

macro_rules! impl_elem {
    ($($t:tt => $variant:ident),*) => {$(
        impl Elem for $t {
            impl_num_casts!($t);
            const DTYPE: DType = DType::$variant;
            fn into_buffer(v: Vec<Self>) -> Buffer {
                Buffer::$variant(v)
            }
            fn slice(b: &Buffer) -> Option<&[Self]> {
                match b {
                    Buffer::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn take_vec(b: &mut Buffer) -> Vec<Self> {
                match b {
                    Buffer::$variant(v) => std::mem::take(v),
                    _ => Vec::new(),
                }
            }
            fn slice_mut(b: &mut Buffer) -> Option<&mut [Self]> {
                match b {
                    Buffer::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    )*};
}
impl_elem!(f32 => F32, f64 => F64, i32 => I32, i64 => I64, bool => Bool);

/// A float element type a tensor can hold: `f32` or `f64` (the SIMD kernels' element types).
pub trait Float: Elem + stategrad_simd::Element + fmt::Display {}

impl Float for f32 {}
impl Float for f64 {}

/// The shape of a tensor (dimensions, row-major).
pub type Shape = SmallVec<[usize; 4]>;

/// The number of elements of `shape`, or [`Error::ShapeOverflow`] naming `op` when the product
/// of its non-zero dimensions exceeds `isize::MAX` (numpy's bound, and Rust's for a `Vec`).
/// Every shape a tensor is built with passes here. Zero-size shapes are held to the same bound
/// (stricter than numpy), so that any partial product of a valid shape's dimensions, in any
/// order, fits, and every dimension converts to `isize` for index arithmetic.
pub(crate) fn shape_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    let overflow = || Error::ShapeOverflow {
        op,
        shape: shape.into(),
    };
    let nonzero = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(overflow)?;
    Ok(if shape.contains(&0) { 0 } else { nonzero })
}

/// The value of `r`, or its error raised at the caller's line (as the infallible operators do).
#[track_caller]
fn ok<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => crate::panics::raise(e),
    }
}

/// Trace tags: the (level, node) pairs under which this value is recorded on active tapes.
pub(crate) type Tags = SmallVec<[(u64, u32); 1]>;

pub(crate) struct Inner {
    pub(crate) buf: Arc<Buffer>,
    pub(crate) shape: Shape,
    pub(crate) tags: Tags,
}

/// An immutable n-d array of `f32` (default) or `f64`, row-major and contiguous.
///
/// ```
/// use stategrad_core::Tensor;
/// let x = Tensor::new([1.0f32, 2.0, 3.0]);
/// let y = &x * 2.0 + 1.0;
/// assert_eq!(y.to_vec::<f32>(), vec![3.0, 5.0, 7.0]);
/// assert_eq!(y.to_string(), "[3. 5. 7.]");
/// ```
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

impl Tensor {
    pub(crate) fn from_parts(buf: Arc<Buffer>, shape: Shape, tags: Tags) -> Tensor {
        Tensor(Arc::new(Inner { buf, shape, tags }))
    }

    /// The elements to overwrite, if this handle is the only reference to the tensor and to its
    /// buffer (no one else can observe the change), it carries no transform tags and its shape
    /// and element type are `shape` and `T`.
    pub(crate) fn unique_data_mut<T: Elem>(&mut self, shape: &[usize]) -> Option<&mut [T]> {
        let inner = Arc::get_mut(&mut self.0)?;
        if inner.shape[..] != *shape || !inner.tags.is_empty() {
            return None;
        }
        T::slice_mut(Arc::get_mut(&mut inner.buf)?)
    }

    /// The elements as an owned vector when this handle is the only reference to the tensor
    /// and its buffer, it carries no transform tags and holds `T`s (no one can observe the
    /// buffer being reused); the tensor back otherwise.
    pub(crate) fn try_into_vec<T: Elem>(self) -> std::result::Result<Vec<T>, Tensor> {
        let inner = match Arc::try_unwrap(self.0) {
            Ok(inner) => inner,
            Err(shared) => return Err(Tensor(shared)),
        };
        if !inner.tags.is_empty() || inner.buf.dtype() != T::DTYPE {
            return Err(Tensor(Arc::new(inner)));
        }
        let Inner { buf, shape, tags } = inner;
        match Arc::try_unwrap(buf) {
            Ok(mut b) => Ok(T::take_vec(&mut b)),
            Err(buf) => Err(Tensor(Arc::new(Inner { buf, shape, tags }))),
        }
    }

    pub(crate) fn from_buffer(buf: Buffer, shape: &[usize]) -> Tensor {
        debug_assert_eq!(buf.len(), shape.iter().product::<usize>());
        Tensor::from_parts(Arc::new(buf), shape.into(), Tags::new())
    }

    /// A tensor from any nested array, slice, `Vec` or scalar of `f32`/`f64`.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// let m = Tensor::new([[1.0f32, 2.0], [3.0, 4.0]]);
    /// assert_eq!(m.shape(), &[2, 2]);
    /// let s = Tensor::new(1.5f64);
    /// assert_eq!(s.shape(), &[] as &[usize]);
    /// ```
    pub fn new<A: IntoTensor>(data: A) -> Tensor {
        data.into_tensor()
    }

    /// A tensor from a flat `Vec` and a shape; errors if the lengths disagree or the shape's
    /// element count does not fit in `usize`.
    ///
    /// ```
    /// use stategrad_core::{Error, Tensor};
    /// assert_eq!(Tensor::from_vec(vec![1.0f32, 2.0], &[2, 1]).unwrap().shape(), &[2, 1]);
    /// let huge = Tensor::from_vec(vec![1.0f32, 2.0], &[(1 << 63) + 1, 2]);
    /// assert!(matches!(huge, Err(Error::ShapeOverflow { .. })));
    /// ```
    pub fn from_vec<T: Elem>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        let n = shape_numel("from_vec", shape)?;
        if n != data.len() {
            return Err(Error::DataLength {
                len: data.len(),
                shape: shape.into(),
            });
        }
        Ok(Tensor::from_buffer(T::into_buffer(data), shape))
    }

    /// A 0-d tensor of `T`'s dtype.
    pub fn scalar<T: Elem>(v: T) -> Tensor {
        Tensor::from_buffer(T::into_buffer(vec![v]), &[])
    }

    /// A tensor of `shape` filled with `value`, of dtype `dtype`: [`Error::ShapeOverflow`] when
    /// the element count does not fit in `usize`, [`Error::AllocationFailed`] when the memory
    /// cannot be had.
    ///
    /// ```
    /// use stategrad_core::{DType, Error, Tensor};
    /// let t = Tensor::try_full_dtype(&[2], 0.5, DType::F64).unwrap();
    /// assert_eq!(t.to_vec::<f64>(), vec![0.5, 0.5]);
    /// let err = Tensor::try_full_dtype(&[1 << 40, 1 << 40], 0.0, DType::F32).unwrap_err();
    /// assert!(matches!(err, Error::ShapeOverflow { .. }));
    /// let err = Tensor::try_full_dtype(&[1 << 62], 0.0, DType::F32).unwrap_err();
    /// assert!(matches!(err, Error::AllocationFailed { .. }));
    /// ```
    pub fn try_full_dtype(shape: &[usize], value: f64, dtype: DType) -> Result<Tensor> {
        let n = shape_numel("full", shape)?;
        Ok(Tensor::from_buffer(
            Buffer::try_filled("full", dtype, n, value)?,
            shape,
        ))
    }

    /// Infallible form of [`Tensor::try_full_dtype`]: a bad shape panics at the caller's line
    /// (inside a transform, the transform returns the error).
    #[track_caller]
    pub fn full_dtype(shape: &[usize], value: f64, dtype: DType) -> Tensor {
        ok(Tensor::try_full_dtype(shape, value, dtype))
    }

    /// A f32 tensor of `shape` filled with `value` (see [`Tensor::try_full_dtype`]).
    pub fn try_full(shape: &[usize], value: f32) -> Result<Tensor> {
        Tensor::try_full_dtype(shape, value as f64, DType::F32)
    }

    /// A f32 tensor of `shape` filled with `value`.
    #[track_caller]
    pub fn full(shape: &[usize], value: f32) -> Tensor {
        ok(Tensor::try_full(shape, value))
    }

    /// Zeros (f32), or the error of [`Tensor::try_full_dtype`].
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// assert!(Tensor::try_zeros(&[usize::MAX, 2]).is_err());
    /// ```
    pub fn try_zeros(shape: &[usize]) -> Result<Tensor> {
        Tensor::try_full(shape, 0.0)
    }

    /// Zeros (f32).
    #[track_caller]
    pub fn zeros(shape: &[usize]) -> Tensor {
        ok(Tensor::try_zeros(shape))
    }

    /// Ones (f32), or the error of [`Tensor::try_full_dtype`].
    ///
    /// ```
    /// use stategrad_core::{Error, Tensor};
    /// let err = Tensor::try_ones(&[(1 << 63) + 1, 2]).unwrap_err();
    /// assert!(matches!(err, Error::ShapeOverflow { op: "full", .. }));
    /// ```
    pub fn try_ones(shape: &[usize]) -> Result<Tensor> {
        Tensor::try_full(shape, 1.0)
    }

    /// Ones (f32).
    #[track_caller]
    pub fn ones(shape: &[usize]) -> Tensor {
        ok(Tensor::try_ones(shape))
    }

    /// Zeros with the shape and dtype of `self`, carrying no trace.
    #[track_caller]
    pub fn zeros_like(&self) -> Tensor {
        Tensor::full_dtype(self.shape(), 0.0, self.dtype())
    }

    /// Ones with the shape and dtype of `self`, carrying no trace.
    #[track_caller]
    pub fn ones_like(&self) -> Tensor {
        Tensor::full_dtype(self.shape(), 1.0, self.dtype())
    }

    /// The `n x n` identity (f32).
    #[track_caller]
    pub fn eye(n: usize) -> Tensor {
        Tensor::eye_dtype(n, DType::F32)
    }

    /// The `n x n` identity of `dtype`.
    #[track_caller]
    pub fn eye_dtype(n: usize, dtype: DType) -> Tensor {
        ok(Tensor::try_eye_dtype(n, dtype))
    }

    /// The `n x n` identity of `dtype`: [`Error::ShapeOverflow`] when `n * n` does not fit in
    /// `usize`, [`Error::AllocationFailed`] when the memory cannot be had.
    ///
    /// ```
    /// use stategrad_core::{DType, Error, Tensor};
    /// assert_eq!(Tensor::try_eye_dtype(2, DType::F64).unwrap().to_vec::<f64>(), vec![1.0, 0.0, 0.0, 1.0]);
    /// assert!(matches!(Tensor::try_eye_dtype(1 << 32, DType::F32), Err(Error::ShapeOverflow { .. })));
    /// ```
    pub fn try_eye_dtype(n: usize, dtype: DType) -> Result<Tensor> {
        let shape = [n, n];
        let total = shape_numel("eye", &shape)?;
        let mut buf = Buffer::try_filled("eye", dtype, total, 0.0)?;
        fn diagonal<T: Elem>(v: &mut [T], n: usize) {
            for i in 0..n {
                v[i * n + i] = T::from_i64_lossy(1);
            }
        }
        with_any_slice!(&mut buf, v => diagonal(v, n));
        Ok(Tensor::from_buffer(buf, &shape))
    }

    /// `start, start+step, …` below `stop` (f32), like `numpy.arange`. Errors: a zero or
    /// non-finite step, a length that cannot be computed (a NaN or infinite bound) or does not
    /// fit in memory.
    ///
    /// ```
    /// use stategrad_core::{Error, Tensor};
    /// assert_eq!(Tensor::arange(0.0, 1.0, 0.25).unwrap().to_string(), "[0.   0.25 0.5  0.75]");
    /// assert!(matches!(Tensor::arange(0.0, f32::NAN, 1.0), Err(Error::InvalidArgument { .. })));
    /// assert!(Tensor::arange(0.0, 1e30, 1.0).is_err());
    /// ```
    pub fn arange(start: f32, stop: f32, step: f32) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() {
            return Err(Error::InvalidArgument {
                op: "arange",
                msg: format!("step must be finite and non-zero, got {step}"),
            });
        }
        let len = ((stop as f64 - start as f64) / step as f64).ceil();
        if !len.is_finite() {
            return Err(Error::InvalidArgument {
                op: "arange",
                msg: format!("cannot compute the length of arange({start}, {stop}, {step})"),
            });
        }
        // `usize::MAX as f64` rounds up to 2^64, so `<` keeps the conversion exact.
        if len >= usize::MAX as f64 {
            return Err(Error::InvalidArgument {
                op: "arange",
                msg: format!("arange({start}, {stop}, {step}) would have {len:e} elements"),
            });
        }
        let n = len.max(0.0) as usize;
        let mut v: Vec<f32> = Vec::new();
        v.try_reserve_exact(n)
            .map_err(|_| Error::AllocationFailed {
                op: "arange",
                elements: n,
                dtype: DType::F32.name(),
            })?;
        v.extend((0..n).map(|i| start + i as f32 * step));
        Tensor::from_vec(v, &[n])
    }

    /// `num` evenly spaced values from `start` to `stop` inclusive (f32), like `numpy.linspace`.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// assert_eq!(Tensor::linspace(-1.0, 1.0, 5).to_string(), "[-1.  -0.5  0.   0.5  1. ]");
    /// ```
    #[track_caller]
    pub fn linspace(start: f32, stop: f32, num: usize) -> Tensor {
        ok(Tensor::try_linspace(start, stop, num))
    }

    /// [`Tensor::linspace`], or [`Error::AllocationFailed`] when `num` values do not fit in
    /// memory.
    ///
    /// ```
    /// use stategrad_core::{Error, Tensor};
    /// assert_eq!(Tensor::try_linspace(0.0, 1.0, 3).unwrap().to_string(), "[0.  0.5 1. ]");
    /// assert!(matches!(Tensor::try_linspace(0.0, 1.0, 1 << 62), Err(Error::AllocationFailed { .. })));
    /// ```
    pub fn try_linspace(start: f32, stop: f32, num: usize) -> Result<Tensor> {
        // numpy computes in f64 and rounds once, so do the same for identical values.
        let (s, e) = (start as f64, stop as f64);
        let mut v: Vec<f32> = Vec::new();
        v.try_reserve_exact(num)
            .map_err(|_| Error::AllocationFailed {
                op: "linspace",
                elements: num,
                dtype: DType::F32.name(),
            })?;
        match num {
            0 => {}
            1 => v.push(start),
            _ => {
                let step = (e - s) / (num - 1) as f64;
                v.extend((0..num).map(|i| {
                    if i == num - 1 {
                        stop
                    } else {
                        (s + i as f64 * step) as f32
                    }
                }));
            }
        }
        Ok(Tensor::from_buffer(Buffer::F32(v), &[num]))
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// The shape, printable as `(2, 3)`.
    pub fn shape_display(&self) -> ShapeDisplay {
        ShapeDisplay(self.shape().to_vec())
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.0.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        // From the shape, not the buffer: an abstract tensor has a shape but no data.
        self.0.shape.iter().product()
    }

    /// True for an abstract tensor: a shape and a dtype with no data, the values `jit` traces
    /// with (see [`crate::prim::Primitive::abstract_eval`]). A zero-size tensor has no data to
    /// read either way, so it counts as concrete.
    pub(crate) fn is_abstract(&self) -> bool {
        self.0.buf.len() != self.numel()
    }

    /// An abstract tensor of `shape` and `dtype` carrying `tags` (no buffer is allocated).
    pub(crate) fn abstract_value(shape: Shape, dtype: DType, tags: Tags) -> Tensor {
        Tensor::from_parts(Arc::new(Buffer::empty(dtype)), shape, tags)
    }

    /// The same tensor with no trace tags, whether or not it has data (for engine code that
    /// runs a function opaquely, never for values a jitted program reads).
    pub(crate) fn untagged(&self) -> Tensor {
        if self.0.tags.is_empty() {
            return self.clone();
        }
        Tensor::from_parts(self.0.buf.clone(), self.0.shape.clone(), Tags::new())
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.0.buf.dtype()
    }

    /// True if the tensor has no dimensions.
    pub fn is_scalar(&self) -> bool {
        self.0.shape.is_empty()
    }

    /// The data. An abstract tensor has none: reading it raises [`Error::TracedValueRead`]
    /// (every data access goes through here, so no kernel ever sees an empty buffer for a
    /// shape with elements).
    #[track_caller]
    pub(crate) fn buf(&self) -> &Buffer {
        if self.is_abstract() {
            crate::panics::raise(Error::TracedValueRead {
                shape: self.shape_display(),
                what: "data",
            });
        }
        &self.0.buf
    }

    pub(crate) fn tags(&self) -> &Tags {
        &self.0.tags
    }

    /// The values as a `Vec<T>`, converting the dtype if needed as [`Tensor::astype`] does.
    ///
    /// Inside `jit`, reading a traced tensor raises [`Error::TracedValueRead`] (returned by the
    /// `jit` call): a value read on the trace would be baked into the compiled tape.
    #[track_caller]
    pub fn to_vec<T: Elem>(&self) -> Vec<T> {
        if self.is_abstract() || crate::trace::jit_traced(self) {
            crate::panics::raise(Error::TracedValueRead {
                shape: self.shape_display(),
                what: "to_vec",
            });
        }
        self.to_vec_unchecked()
    }

    pub(crate) fn to_vec_unchecked<T: Elem>(&self) -> Vec<T> {
        self.buf().to_vec_as()
    }

    /// The values as a slice of `T`; `None` when the tensor holds another dtype.
    ///
    /// Inside `jit`, a traced tensor has no values: [`Error::TracedValueRead`] is raised.
    #[track_caller]
    pub fn as_slice<T: Elem>(&self) -> Option<&[T]> {
        T::slice(self.buf())
    }

    /// The value of a one-element tensor as `f64`.
    ///
    /// Errors if the tensor has more than one element.
    pub fn item(&self) -> Result<f64> {
        if self.is_abstract() || crate::trace::jit_traced(self) {
            return Err(Error::TracedValueRead {
                shape: self.shape_display(),
                what: "item",
            });
        }
        if self.numel() != 1 {
            return Err(Error::InvalidArgument {
                op: "item",
                msg: format!(
                    "only one-element tensors convert to a scalar, shape is {}",
                    self.shape_display()
                ),
            });
        }
        Ok(self.buf().get_f64(0))
    }

    /// Element `i` of the flat (row-major) data as `f64`; `None` if out of range.
    ///
    /// Inside `jit`, a traced tensor has no values: [`Error::TracedValueRead`] is raised.
    #[track_caller]
    pub fn get_flat(&self, i: usize) -> Option<f64> {
        (i < self.numel()).then(|| self.buf().get_f64(i))
    }

    /// The values as `f64`, whatever the dtype.
    #[track_caller]
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.to_vec::<f64>()
    }

    pub(crate) fn f64_data(&self) -> Vec<f64> {
        self.to_vec_unchecked::<f64>()
    }

    /// Take the values out, without copying when this is the only handle to the buffer.
    #[track_caller]
    pub fn into_vec<T: Elem>(self) -> Vec<T> {
        if self.is_abstract() {
            self.buf();
        }
        match Arc::try_unwrap(self.0) {
            Ok(inner) if T::slice(&inner.buf).is_some() => match Arc::try_unwrap(inner.buf) {
                Ok(mut buf) => T::take_vec(&mut buf),
                Err(buf) => T::slice(&buf).map(|s| s.to_vec()).unwrap_or_default(),
            },
            Ok(inner) => Tensor(Arc::new(inner)).to_vec_unchecked(),
            Err(arc) => Tensor(arc).to_vec_unchecked(),
        }
    }

    /// The same values with no trace tags: a constant to every transform. Inside `jit` a
    /// traced value has no values to keep, so detaching one raises
    /// [`Error::TracedValueRead`]; to cut gradients of a value that is recomputed on every
    /// call, use [`Tensor::stop_gradient`].
    #[track_caller]
    pub fn detach(&self) -> Tensor {
        if self.is_abstract() {
            crate::panics::raise(Error::TracedValueRead {
                shape: self.shape_display(),
                what: "detach",
            });
        }
        self.untagged()
    }

    /// The same buffer under another shape of the same size, untagged (kernels only).
    pub(crate) fn with_shape(&self, shape: Shape) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), self.numel());
        Tensor::from_parts(self.0.buf.clone(), shape, Tags::new())
    }

    pub(crate) fn with_tags(&self, tags: Tags) -> Tensor {
        Tensor::from_parts(self.0.buf.clone(), self.0.shape.clone(), tags)
    }

    /// True if the two tensors share one buffer (no copy was made).
    pub fn shares_buffer(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.buf, &other.0.buf)
    }

    /// Element-wise closeness, like `numpy.allclose`: same shape and
    /// `|a - b| <= atol + rtol * |b|` everywhere.
    pub fn allclose(&self, other: &Tensor, rtol: f64, atol: f64) -> bool {
        self.shape() == other.shape()
            && self
                .f64_data()
                .iter()
                .zip(other.f64_data())
                .all(|(a, b)| (a - b).abs() <= atol + rtol * b.abs() || (a.is_nan() && b.is_nan()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_numpy() {
        assert_eq!(Tensor::new([2.0f32, 2.0, 2.0]).to_string(), "[2. 2. 2.]");
        assert_eq!(Tensor::new([[-3.0f32]]).to_string(), "[[-3.]]");
        assert_eq!(
            Tensor::new([4.5403023f32, 5.0]).to_string(),
            "[4.5403023 5.       ]"
        );
        assert_eq!(
            Tensor::new([[2.0f32, 1.0], [0.5403023, 0.0], [0.0, 7.389056]]).to_string(),
            "[[2.        1.       ]\n [0.5403023 0.       ]\n [0.        7.389056 ]]"
        );
        assert_eq!(Tensor::new([-0.05547f32]).to_string(), "[-0.05547]");
        assert_eq!(
            Tensor::new([[-0.08320501f32]]).to_string(),
            "[[-0.08320501]]"
        );
        assert_eq!(
            Tensor::scalar(28.4f32 + 0.000001).to_string(),
            "28.400001525878906"
        );
        assert_eq!(Tensor::scalar(56.0f32).to_string(), "56.0");
        assert_eq!(format!("{:.4}", Tensor::scalar(5.5f32)), "5.5000");
    }

    #[test]
    fn constructors_check_lengths() {
        assert!(matches!(
            Tensor::from_vec(vec![1.0f32; 3], &[2, 2]),
            Err(Error::DataLength { len: 3, .. })
        ));
        assert_eq!(Tensor::eye(2).to_vec::<f32>(), vec![1.0, 0.0, 0.0, 1.0]);
        assert_eq!(Tensor::arange(0.0, 1.0, 0.25).unwrap().numel(), 4);
        assert_eq!(
            Tensor::linspace(-1.0, 1.0, 5).to_vec::<f32>(),
            vec![-1.0, -0.5, 0.0, 0.5, 1.0]
        );
    }
}
