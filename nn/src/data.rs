//! Data for training: seeded, shuffling mini-batches over tensors of equal leading length
//! ([`Batches`]), a small CSV reader for classification data ([`Dataset`], [`read_csv`]) and
//! the handwritten-digits data set shipped in the repository ([`load_digits`]).
//!
//! ```
//! use stategrad_core::Tensor;
//! use stategrad_nn::data::Batches;
//! let x = Tensor::arange(0.0, 10.0, 1.0).unwrap().reshape(&[10, 1]);
//! let y = Tensor::new([0i32, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
//! let batches = Batches::new(&[x, y], 4).unwrap().shuffle(42).drop_last(true);
//! for epoch in 0..2 {
//!     for batch in batches.epoch(epoch) {
//!         let (xb, yb) = (&batch[0], &batch[1]);
//!         assert_eq!(xb.shape(), &[4, 1]);
//!         assert_eq!(yb.shape(), &[4]);
//!     }
//! }
//! assert_eq!(batches.num_batches(), 2);
//! ```

use stategrad_core::{DType, Error, Result, Tensor};
use std::path::{Path as FsPath, PathBuf};

// ------------------------------------------------------------------ batches

/// Mini-batches over tensors that share their leading (example) axis: each batch is one
/// `Vec<Tensor>`, the same rows of every tensor, taken with `Tensor::take(&idx, 0)` and an
/// `int64` index tensor.
///
/// Without [`Batches::shuffle`] the order is `0, 1, 2, …` in every epoch. With a seed, epoch `e`
/// visits the examples in a permutation that depends only on `(seed, e)` (a Fisher–Yates
/// shuffle driven by SplitMix64, the same on every platform and run): the same seed gives the
/// same order, and each epoch a different one. Every example appears exactly once per epoch,
/// except the last `len % batch_size` ones of the epoch's order when [`Batches::drop_last`] is
/// set.
#[derive(Clone, Debug)]
pub struct Batches {
    tensors: Vec<Tensor>,
    len: usize,
    batch_size: usize,
    seed: Option<u64>,
    drop_last: bool,
}

impl Batches {
    /// Batches of `batch_size` examples over `tensors` (at least one, each with at least one
    /// axis, all of the same leading length). Errors
    /// ([`Error::InvalidArgument`]): no tensors, a 0-d tensor, different leading lengths, a batch
    /// size of 0.
    ///
    /// ```
    /// use stategrad_core::{Error, Tensor};
    /// use stategrad_nn::data::Batches;
    /// let err = Batches::new(&[Tensor::zeros(&[3, 2]), Tensor::zeros(&[4])], 2).unwrap_err();
    /// assert!(matches!(err, Error::InvalidArgument { .. }));
    /// ```
    pub fn new(tensors: &[Tensor], batch_size: usize) -> Result<Batches> {
        let bad = |msg: String| Error::InvalidArgument {
            op: "Batches::new",
            msg,
        };
        let first = tensors
            .first()
            .ok_or_else(|| bad("no tensors to batch".into()))?;
        if batch_size == 0 {
            return Err(bad("the batch size must be at least 1".into()));
        }
        let len = *first
            .shape()
            .first()
            .ok_or_else(|| bad("tensor 0 is 0-d: it has no example axis".into()))?;
        for (i, t) in tensors.iter().enumerate() {
            match t.shape().first() {
                None => return Err(bad(format!("tensor {i} is 0-d: it has no example axis"))),
                Some(&n) if n != len => {
                    return Err(bad(format!(
                        "tensor {i} has {n} examples (leading length), tensor 0 has {len}"
                    )))
                }
                _ => {}
            }
        }
        Ok(Batches {
            tensors: tensors.to_vec(),
            len,
            batch_size,
            seed: None,
            drop_last: false,
        })
    }

    /// Shuffle each epoch with a permutation determined by `(seed, epoch)`.
    pub fn shuffle(mut self, seed: u64) -> Batches {
        self.seed = Some(seed);
        self
    }

    /// With `true`, leave out the last batch of an epoch when it is smaller than the batch size
    /// (`false`, the default, keeps it).
    pub fn drop_last(mut self, drop: bool) -> Batches {
        self.drop_last = drop;
        self
    }

    /// The number of examples (the leading length).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The number of batches per epoch: `ceil(len / batch_size)`, or `floor` with
    /// [`Batches::drop_last`].
    pub fn num_batches(&self) -> usize {
        if self.drop_last {
            self.len / self.batch_size
        } else {
            self.len.div_ceil(self.batch_size)
        }
    }

    /// The order in which epoch `epoch` visits the examples (a permutation of `0..len`; the
    /// identity without [`Batches::shuffle`]).
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// use stategrad_nn::data::Batches;
    /// let b = Batches::new(&[Tensor::zeros(&[5])], 2).unwrap();
    /// assert_eq!(b.order(3), vec![0, 1, 2, 3, 4]);
    /// let s = b.shuffle(7);
    /// assert_eq!(s.order(0), s.order(0));
    /// assert_ne!(s.order(0), s.order(1));
    /// ```
    pub fn order(&self, epoch: u64) -> Vec<i64> {
        let mut idx: Vec<i64> = (0..self.len as i64).collect();
        if let Some(seed) = self.seed {
            let mut rng = SplitMix64::new(seed, epoch);
            for i in (1..idx.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                idx.swap(i, j);
            }
        }
        idx
    }

    /// The batches of epoch `epoch`, in order: an iterator of `Vec<Tensor>`, one tensor per
    /// input tensor.
    pub fn epoch(&self, epoch: u64) -> Epoch<'_> {
        Epoch {
            batches: self,
            order: self.order(epoch),
            next: 0,
            remaining: self.num_batches(),
        }
    }
}

/// The batches of one epoch (see [`Batches::epoch`]).
#[derive(Debug)]
pub struct Epoch<'a> {
    batches: &'a Batches,
    order: Vec<i64>,
    next: usize,
    remaining: usize,
}

impl Iterator for Epoch<'_> {
    type Item = Vec<Tensor>;

    fn next(&mut self) -> Option<Vec<Tensor>> {
        if self.remaining == 0 {
            return None;
        }
        let end = (self.next + self.batches.batch_size).min(self.order.len());
        let rows = self.order[self.next..end].to_vec();
        self.next = end;
        self.remaining -= 1;
        let n = rows.len();
        let idx = Tensor::from_vec(rows, &[n]).expect("an index vector of its own length");
        Some(
            self.batches
                .tensors
                .iter()
                .map(|t| t.take(&idx, 0))
                .collect(),
        )
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Epoch<'_> {}

/// SplitMix64 (Steele, Lea, Flood 2014), seeded from `(seed, epoch)`.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64, epoch: u64) -> SplitMix64 {
        let mut s = SplitMix64(seed);
        let a = s.next_u64();
        SplitMix64(a ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by rejection (no modulo bias).
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }
}

// ------------------------------------------------------------------ CSV data sets

/// A classification data set: `features` (`[n, d]`, `float32`) and `labels` (`[n]`, `int32`).
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The inputs, one row per example (`float32`).
    pub features: Tensor,
    /// The class of each example (`int32`).
    pub labels: Tensor,
}

impl Dataset {
    /// The number of examples.
    pub fn len(&self) -> usize {
        self.labels.shape()[0]
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of classes: the largest label plus one (0 for no examples).
    pub fn num_classes(&self) -> usize {
        self.labels
            .to_vec::<i32>()
            .into_iter()
            .max()
            .map_or(0, |m| m.max(0) as usize + 1)
    }

    /// The examples at `indices`, in that order.
    pub fn select(&self, indices: &[i64]) -> Dataset {
        let idx = Tensor::from_vec(indices.to_vec(), &[indices.len()])
            .expect("an index vector of its own length");
        Dataset {
            features: self.features.take(&idx, 0),
            labels: self.labels.take(&idx, 0),
        }
    }

    /// A seeded split into `(train, test)`: the examples are shuffled with `seed` and the
    /// first `len - n_test` go to `train`, the rest to `test`. Errors if `n_test > len`.
    ///
    /// ```
    /// use stategrad_nn::data::load_digits;
    /// let digits = load_digits().unwrap();
    /// let (train, test) = digits.split(297, 0).unwrap();
    /// assert_eq!((train.len(), test.len()), (1500, 297));
    /// ```
    pub fn split(&self, n_test: usize, seed: u64) -> Result<(Dataset, Dataset)> {
        let n = self.len();
        if n_test > n {
            return Err(Error::InvalidArgument {
                op: "Dataset::split",
                msg: format!("cannot hold out {n_test} examples of {n}"),
            });
        }
        let order = Batches::new(std::slice::from_ref(&self.labels), 1)?
            .shuffle(seed)
            .order(0);
        let (train, test) = order.split_at(n - n_test);
        Ok((self.select(train), self.select(test)))
    }
}

/// Read a CSV of numbers into a [`Dataset`]: one example per line, comma-separated, the
/// features first (read as `float32`) and the integer class label last (`int32`). Blank lines
/// are skipped; no header. Errors ([`Error::InvalidArgument`], naming the line and column): a
/// field that is not a number, a label that is not an integer, lines of different lengths, a
/// line with fewer than two fields, no lines at all.
///
/// ```
/// use stategrad_nn::data::read_csv;
/// let d = read_csv("0.5,1,2\n3,4.25,0\n").unwrap();
/// assert_eq!(d.features.shape(), &[2, 2]);
/// assert_eq!(d.features.to_vec::<f32>(), vec![0.5, 1.0, 3.0, 4.25]);
/// assert_eq!(d.labels.to_vec::<i32>(), vec![2, 0]);
/// assert!(read_csv("1,2,x\n").is_err());
/// ```
pub fn read_csv(text: &str) -> Result<Dataset> {
    let bad = |msg: String| Error::InvalidArgument {
        op: "read_csv",
        msg,
    };
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut width = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() < 2 {
            return Err(bad(format!(
                "line {}: {} field(s); need features and a label",
                i + 1,
                fields.len()
            )));
        }
        match width {
            None => width = Some(fields.len()),
            Some(w) if w != fields.len() => {
                return Err(bad(format!(
                    "line {}: {} fields, earlier lines have {w}",
                    i + 1,
                    fields.len()
                )))
            }
            _ => {}
        }
        let (label, feats) = fields.split_last().expect("at least two fields");
        for (j, f) in feats.iter().enumerate() {
            features.push(f.parse::<f32>().map_err(|_| {
                bad(format!(
                    "line {}, column {}: `{f}` is not a number",
                    i + 1,
                    j + 1
                ))
            })?);
        }
        labels.push(label.parse::<i32>().map_err(|_| {
            bad(format!(
                "line {}, column {}: the label `{label}` is not an integer",
                i + 1,
                fields.len()
            ))
        })?);
    }
    let Some(width) = width else {
        return Err(bad("no data lines".into()));
    };
    let n = labels.len();
    Ok(Dataset {
        features: Tensor::from_vec(features, &[n, width - 1])?,
        labels: Tensor::from_vec(labels, &[n])?,
    })
}

/// [`read_csv`] of the file at `path` (an unreadable file is an [`Error::InvalidArgument`]
/// naming it).
pub fn read_csv_file(path: impl AsRef<FsPath>) -> Result<Dataset> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::InvalidArgument {
        op: "read_csv_file",
        msg: format!("cannot read `{}`: {e}", path.display()),
    })?;
    read_csv(&text)
}

/// Where the digits CSV is in the repository: `data/digits.csv` at the workspace root.
pub fn digits_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("data")
        .join("digits.csv")
}

/// The handwritten digits (UCI "Optical Recognition of Handwritten Digits", E. Alpaydin and
/// C. Kaynak, 1998; CC BY 4.0; the 1,797-example set scikit-learn ships): `features` are
/// `[1797, 64]` pixel intensities `0..=16` of 8×8 images, row-major, as `float32` (divide by 16
/// to scale them to `[0, 1]`); `labels` are the digits `0..=9` as `int32`. Read from
/// [`digits_path`] (see `data/README.md` for the attribution).
///
/// ```
/// use stategrad_nn::data::load_digits;
/// let d = load_digits().unwrap();
/// assert_eq!(d.features.shape(), &[1797, 64]);
/// assert_eq!(d.features.dtype(), stategrad_core::DType::F32);
/// assert_eq!(d.num_classes(), 10);
/// ```
pub fn load_digits() -> Result<Dataset> {
    let d = read_csv_file(digits_path())?;
    debug_assert_eq!(d.labels.dtype(), DType::I32);
    Ok(d)
}
