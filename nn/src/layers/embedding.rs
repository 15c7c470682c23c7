//! Embedding lookup.

use super::{impl_layer, invalid, unwrap};
use crate::init::Initializer;
use stategrad_core::{DType, ParamState, Result, State, Tensor};

/// A lookup table: `table: [num_embeddings, dim]`, and `forward(ids)` is `table.take(ids, 0)`
/// for integer (i32 or i64) ids of any shape, giving `[..ids.shape, dim]`. Negative ids count
/// from the end, as in numpy's `take`. The table starts as `N(0, 1)` (PyTorch's default).
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::layers::Embedding;
/// let e = Embedding::new(3, 2);
/// e.table.set_value(Tensor::new([[0.0f32, 0.5], [1.0, 1.5], [2.0, 2.5]]));
/// let y = e.forward(&Tensor::new([[2i64, 0]]));
/// assert_eq!(y.shape(), &[1, 2, 2]);
/// assert_eq!(y.to_vec::<f32>(), vec![2.0, 2.5, 0.0, 0.5]);
/// ```
#[derive(stategrad_derive::Module)]
#[module(crate = "stategrad_core")]
pub struct Embedding {
    /// `[num_embeddings, dim]`, a `ParamState`.
    pub table: State,
    #[module(skip)]
    num_embeddings: usize,
    #[module(skip)]
    dim: usize,
}

/// Options of an [`Embedding`] (from [`Embedding::builder`]).
///
/// ```
/// use stategrad_core::DType;
/// use stategrad_nn::{init, layers::Embedding};
/// let e = Embedding::builder(10, 4).dtype(DType::F64).init(init::normal(0.02)).build();
/// assert_eq!(e.table.value().shape(), &[10, 4]);
/// ```
#[derive(Clone, Debug)]
pub struct EmbeddingBuilder {
    num_embeddings: usize,
    dim: usize,
    dtype: DType,
    init: Initializer,
}

impl EmbeddingBuilder {
    /// The table's dtype (default f32).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
    /// The table's initialiser (default `N(0, 1)`).
    pub fn init(mut self, init: Initializer) -> Self {
        self.init = init;
        self
    }
    /// Build the layer; panics where [`EmbeddingBuilder::try_build`] errs.
    #[track_caller]
    pub fn build(&self) -> Embedding {
        match self.try_build() {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        }
    }
    /// Build the layer; errs for a non-float dtype or a bad initialiser.
    pub fn try_build(&self) -> Result<Embedding> {
        Ok(Embedding {
            table: ParamState::new(
                self.init
                    .try_init_dtype(&[self.num_embeddings, self.dim], self.dtype)?,
            ),
            num_embeddings: self.num_embeddings,
            dim: self.dim,
        })
    }
}

impl Embedding {
    /// A table of `num_embeddings` vectors of size `dim`, with the default options.
    #[track_caller]
    pub fn new(num_embeddings: usize, dim: usize) -> Embedding {
        Embedding::builder(num_embeddings, dim).build()
    }

    /// The options, to change before [`EmbeddingBuilder::build`].
    pub fn builder(num_embeddings: usize, dim: usize) -> EmbeddingBuilder {
        EmbeddingBuilder {
            num_embeddings,
            dim,
            dtype: DType::F32,
            init: Initializer::Normal { std: 1.0 },
        }
    }

    /// The number of rows.
    pub fn num_embeddings(&self) -> usize {
        self.num_embeddings
    }

    /// The vectors' size.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Look the ids up; panics where [`Embedding::try_forward`] errs.
    #[track_caller]
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        unwrap(self.try_forward(ids))
    }

    /// Look the ids up, or an error for non-integer ids (or ids out of range, as `take` reports).
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// use stategrad_nn::layers::Embedding;
    /// assert!(Embedding::new(3, 2).try_forward(&Tensor::new([1.0f32])).is_err());
    /// ```
    pub fn try_forward(&self, ids: &Tensor) -> Result<Tensor> {
        if !ids.dtype().is_int() {
            return Err(invalid(
                "Embedding",
                format!("ids must be integers, got {}", ids.dtype().name()),
            ));
        }
        self.table.value().try_take(ids, 0)
    }
}

impl_layer!(Embedding);
