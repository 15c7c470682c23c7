//! Building tensors from Rust values: nested arrays, vectors, slices, scalars.

use super::*;

/// Anything that can become a [`Tensor`]: scalars, arrays (nested up to 4 levels), slices, `Vec`s.
pub trait IntoTensor {
    /// Build the tensor.
    fn into_tensor(self) -> Tensor;
}

/// Flat data and shape of a nested array literal.
#[doc(hidden)]
pub trait NestedData {
    type Elem: Elem;
    fn shape_into(&self, shape: &mut Vec<usize>);
    fn push_into(&self, out: &mut Vec<Self::Elem>);
}

impl<T: Elem> NestedData for T {
    type Elem = T;
    fn shape_into(&self, _: &mut Vec<usize>) {}
    fn push_into(&self, out: &mut Vec<T>) {
        out.push(*self);
    }
}

impl<A: NestedData, const N: usize> NestedData for [A; N] {
    type Elem = A::Elem;
    fn shape_into(&self, shape: &mut Vec<usize>) {
        shape.push(N);
        if let Some(first) = self.first() {
            first.shape_into(shape);
        }
    }
    fn push_into(&self, out: &mut Vec<A::Elem>) {
        for a in self {
            a.push_into(out);
        }
    }
}

impl<A: NestedData> IntoTensor for A {
    fn into_tensor(self) -> Tensor {
        let mut shape = Vec::new();
        self.shape_into(&mut shape);
        let mut data = Vec::with_capacity(ok(shape_numel("new", &shape)));
        self.push_into(&mut data);
        Tensor::from_buffer(A::Elem::into_buffer(data), &shape)
    }
}

impl<T: Elem> IntoTensor for Vec<T> {
    fn into_tensor(self) -> Tensor {
        let n = self.len();
        Tensor::from_buffer(T::into_buffer(self), &[n])
    }
}

impl<T: Elem> IntoTensor for &[T] {
    fn into_tensor(self) -> Tensor {
        self.to_vec().into_tensor()
    }
}

impl IntoTensor for Tensor {
    fn into_tensor(self) -> Tensor {
        self
    }
}

impl IntoTensor for &Tensor {
    fn into_tensor(self) -> Tensor {
        self.clone()
    }
}

// The conversions `State::new` and `State::set_value` take.
impl From<f32> for Tensor {
    fn from(v: f32) -> Tensor {
        Tensor::scalar(v)
    }
}
impl From<f64> for Tensor {
    fn from(v: f64) -> Tensor {
        Tensor::scalar(v)
    }
}
impl<T: Elem> From<Vec<T>> for Tensor {
    fn from(v: Vec<T>) -> Tensor {
        IntoTensor::into_tensor(v)
    }
}
impl From<i32> for Tensor {
    fn from(v: i32) -> Tensor {
        Tensor::scalar(v)
    }
}
impl From<i64> for Tensor {
    fn from(v: i64) -> Tensor {
        Tensor::scalar(v)
    }
}
impl From<bool> for Tensor {
    fn from(v: bool) -> Tensor {
        Tensor::scalar(v)
    }
}
impl From<&Tensor> for Tensor {
    fn from(v: &Tensor) -> Tensor {
        v.clone()
    }
}
