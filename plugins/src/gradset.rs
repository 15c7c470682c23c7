//! [`GradSet`]: the whole gradient set as one ordered list of `(label, tensor)`, and the
//! conversions from and back to the containers the transforms return.

use stategrad_core::transform::Tree;
use stategrad_core::{Error, Path, PathKey, Result, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;

/// Every gradient of one step, in a fixed order, each labelled by its [`Path`].
///
/// Processors see the whole set at once, so that they can compute global quantities (the global
/// norm) and select entries by path ([`crate::masked`]). A label prints like a state path
/// (`('bias',)`, `('layers', 0, 'weight')`); the gradient of a bare tensor has the empty path.
///
/// ```
/// use stategrad_core::{path, Path, Tensor};
/// use stategrad_plugins::GradSet;
/// use std::collections::BTreeMap;
///
/// let mut grads: BTreeMap<Path, Tensor> = BTreeMap::new();
/// grads.insert(path!("bias"), Tensor::new([-2.0f32]));
/// grads.insert(path!("weight"), Tensor::new([[-3.0f32]]));
/// let set = GradSet::from_tree(&grads);
/// assert_eq!(set.labels().collect::<Vec<_>>(), [&path!("bias"), &path!("weight")]);
/// assert_eq!(set.labels().next().unwrap().to_string(), "('bias',)");
/// // Rebuild the original container from (possibly processed) tensors.
/// let back: BTreeMap<Path, Tensor> = set.to_tree(&grads).unwrap();
/// assert_eq!(back[&path!("weight")].to_string(), "[[-3.]]");
/// ```
#[derive(Clone, Default)]
pub struct GradSet {
    entries: Vec<(Path, Tensor)>,
}

impl GradSet {
    /// An empty set.
    pub fn new() -> GradSet {
        GradSet::default()
    }

    /// A set from `(label, tensor)` pairs, in order.
    pub fn from_entries(entries: Vec<(Path, Tensor)>) -> GradSet {
        GradSet { entries }
    }

    /// The tensors of any [`LabelledTree`] (a tensor, `Vec`, array, tuple, path-keyed map,
    /// nested maps), labelled by their paths: a [`Path`] map key contributes its keys, other map
    /// keys one key each ([`LabelKey`]), positions their index; levels concatenate, so
    /// `vec![map]` labels `('bias',)` as `(0, 'bias')`.
    pub fn from_tree<T: LabelledTree>(tree: &T) -> GradSet {
        let mut entries = Vec::new();
        tree.visit_labelled(&mut Path::new(), &mut |l, t| {
            entries.push((l.clone(), t.clone()))
        });
        GradSet { entries }
    }

    /// The tensors of any [`Tree`], labelled by their flat position (`(0,)`, `(1,)`, …).
    pub fn from_tree_indexed<T: Tree>(tree: &T) -> GradSet {
        let mut entries = Vec::new();
        tree.for_each_tensor(&mut |t| {
            entries.push((Path(vec![PathKey::Index(entries.len())]), t.clone()))
        });
        GradSet { entries }
    }

    /// Rebuild a container shaped like `like` from this set's tensors, in order.
    ///
    /// Errors ([`Error::InvalidArgument`]) if the number of tensors or a shape differs.
    pub fn to_tree<T: Tree>(&self, like: &T) -> Result<T> {
        let mut n = 0usize;
        let mut bad: Option<String> = None;
        like.for_each_tensor(&mut |t| {
            if bad.is_none() {
                match self.entries.get(n) {
                    Some((l, g)) if g.shape() != t.shape() => {
                        bad = Some(format!(
                            "entry {n} ({l}) has shape {} where the container holds {}",
                            g.shape_display(),
                            t.shape_display()
                        ))
                    }
                    _ => {}
                }
            }
            n += 1;
        });
        if n != self.entries.len() {
            bad = Some(format!(
                "{} gradients for a container of {n} tensors",
                self.entries.len()
            ));
        }
        if let Some(msg) = bad {
            return Err(Error::InvalidArgument {
                op: "GradSet::to_tree",
                msg,
            });
        }
        let mut it = self.entries.iter();
        Ok(like.map_tensors(&mut |t| it.next().map_or_else(|| t.clone(), |(_, g)| g.clone())))
    }

    /// Append an entry.
    pub fn push(&mut self, label: Path, grad: Tensor) {
        self.entries.push((label, grad));
    }

    /// Number of gradients.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are no gradients.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(label, tensor)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Path, &Tensor)> {
        self.entries.iter().map(|(l, t)| (l, t))
    }

    /// The labels in order.
    pub fn labels(&self) -> impl Iterator<Item = &Path> {
        self.entries.iter().map(|(l, _)| l)
    }

    /// The tensors in order.
    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.entries.iter().map(|(_, t)| t)
    }

    /// The first gradient with this label.
    pub fn get(&self, label: &Path) -> Option<&Tensor> {
        self.entries
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, t)| t)
    }

    /// The entries.
    pub fn entries(&self) -> &[(Path, Tensor)] {
        &self.entries
    }

    /// The entries, mutably (keep their number, labels and shapes: processors are checked).
    pub fn entries_mut(&mut self) -> &mut [(Path, Tensor)] {
        &mut self.entries
    }

    /// Take the entries out.
    pub fn into_entries(self) -> Vec<(Path, Tensor)> {
        self.entries
    }

    /// Take the tensors out, in order.
    pub fn into_tensors(self) -> Vec<Tensor> {
        self.entries.into_iter().map(|(_, t)| t).collect()
    }

    /// Replace every tensor by `f(label, tensor)`, stopping at the first error.
    pub fn try_map(self, mut f: impl FnMut(&Path, Tensor) -> Result<Tensor>) -> Result<GradSet> {
        let entries = self
            .entries
            .into_iter()
            .map(|(l, t)| {
                let t = f(&l, t)?;
                Ok((l, t))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GradSet { entries })
    }

    /// `sqrt(Σ ‖g‖²)` over every gradient, as a 0-d tensor (computed with tensor operations,
    /// so it can be differentiated again). Zero for an empty set.
    pub fn global_norm(&self) -> Result<Tensor> {
        let mut acc: Option<Tensor> = None;
        for (_, g) in &self.entries {
            let s = g.try_square()?.sum();
            acc = Some(match acc {
                None => s,
                Some(a) => a.try_add(&s)?,
            });
        }
        match acc {
            Some(a) => a.try_sqrt(),
            None => Ok(Tensor::scalar(0.0f32)),
        }
    }
}

impl fmt::Debug for GradSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(l, t)| (l, t)))
            .finish()
    }
}

impl fmt::Display for GradSet {
    /// One `label: tensor` per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (l, t)) in self.entries.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{l}: {t}")?;
        }
        Ok(())
    }
}

impl FromIterator<(Path, Tensor)> for GradSet {
    fn from_iter<I: IntoIterator<Item = (Path, Tensor)>>(iter: I) -> Self {
        GradSet {
            entries: iter.into_iter().collect(),
        }
    }
}

impl IntoIterator for GradSet {
    type Item = (Path, Tensor);
    type IntoIter = std::vec::IntoIter<(Path, Tensor)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

// ------------------------------------------------------------------ labelled trees

/// A [`Tree`] whose tensors have path labels. The visiting order is the [`Tree`] order, so a
/// [`GradSet`] made by [`GradSet::from_tree`] rebuilds with [`GradSet::to_tree`].
///
/// Implemented for tensors, `Vec`, arrays, `Option`, tuples (up to 4), `BTreeMap` and `HashMap`
/// keyed by a [`LabelKey`] (a `BTreeMap<Path, Tensor>` labels its entries by their paths), and
/// the tensor-free leaves (`()`, numbers, strings).
pub trait LabelledTree: Tree {
    /// Visit every tensor with its label; `label` is the path so far (empty at the root).
    fn visit_labelled(&self, label: &mut Path, f: &mut dyn FnMut(&Path, &Tensor));
}

/// A map key that extends a gradient's label: a [`Path`] adds its keys, a [`PathKey`] itself,
/// a string a name, an unsigned integer an index (a signed one an index when `>= 0`, else its
/// decimal name).
pub trait LabelKey {
    /// Append this key's path keys to `path`.
    fn push_keys(&self, path: &mut Path);
}

impl LabelKey for Path {
    fn push_keys(&self, path: &mut Path) {
        path.0.extend(self.0.iter().cloned());
    }
}
impl LabelKey for PathKey {
    fn push_keys(&self, path: &mut Path) {
        path.0.push(self.clone());
    }
}
impl LabelKey for String {
    fn push_keys(&self, path: &mut Path) {
        path.push_name(self);
    }
}
impl LabelKey for &str {
    fn push_keys(&self, path: &mut Path) {
        path.push_name(self);
    }
}
impl LabelKey for std::sync::Arc<str> {
    fn push_keys(&self, path: &mut Path) {
        path.push_name(self);
    }
}
macro_rules! unsigned_key {
    ($($t:ty),*) => {$(
        impl LabelKey for $t {
            fn push_keys(&self, path: &mut Path) {
                path.push_index(*self as usize);
            }
        }
    )*};
}
unsigned_key!(usize, u8, u16, u32, u64);
macro_rules! signed_key {
    ($($t:ty),*) => {$(
        impl LabelKey for $t {
            fn push_keys(&self, path: &mut Path) {
                match usize::try_from(*self) {
                    Ok(i) => path.push_index(i),
                    Err(_) => path.push_name(&self.to_string()),
                }
            }
        }
    )*};
}
signed_key!(i8, i16, i32, i64, isize);

/// Run `f` with `key` appended to `label`, then restore it.
fn with_key(label: &mut Path, key: &dyn LabelKey, f: impl FnOnce(&mut Path)) {
    let len = label.0.len();
    key.push_keys(label);
    f(label);
    label.0.truncate(len);
}

impl LabelledTree for Tensor {
    fn visit_labelled(&self, label: &mut Path, f: &mut dyn FnMut(&Path, &Tensor)) {
        f(label, self)
    }
}

macro_rules! leaf_labelled {
    ($($t:ty),*) => {$(
        impl LabelledTree for $t {
            fn visit_labelled(&self, _: &mut Path, _: &mut dyn FnMut(&Path, &Tensor)) {}
        }
    )*};
}
leaf_labelled!((), f32, f64, i32, i64, usize, bool, String, &'static str);

impl<T: LabelledTree> LabelledTree for Vec<T> {
    fn visit_labelled(&self, label: &mut Path, f: &mut dyn FnMut(&Path, &Tensor)) {
        for (i, t) in self.iter().enumerate() {
            with_key(label, &i, |l| t.visit_labelled(l, f));
        }
    }
}

impl<T: LabelledTree, const N: usize> LabelledTree for [T; N] {
    fn visit_labelled(&self, label: &mut Path, f: &mut dyn FnMut(&Path, &Tensor)) {
        for (i, t) in self.iter().enumerate() {
            with_key(label, &i, |l| t.visit_labelled(l, f));
        }
    }
}

impl<T: LabelledTree> LabelledTree for Option<T> {
    fn visit_labelled(&self, label: &mut Path, f: &mut dyn FnMut(&Path, &Tensor)) {
        if let Some(t) = self {
            t.visit_labelled(label, f)
        }
    }
}

impl<K: Ord + Clone + LabelKey, T: LabelledTree> LabelledTree for BTreeMap<K, T> {
    fn visit_labelled(&self, label: &mut Path, f: &mut dyn FnMut(&Path, &Tensor)) {
        for (k, t) in self {
            with_key(label, k, |l| t.visit_labelled(l, f));
        }
    }
}

impl<K: Eq + Hash + Clone + Ord + LabelKey, T: LabelledTree> LabelledTree for HashMap<K, T> {
    fn visit_labelled(&self, label: &mut Path, f: &mut dyn FnMut(&Path, &Tensor)) {
        let mut entries: Vec<(&K, &T)> = self.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        for (k, t) in entries {
            with_key(label, k, |l| t.visit_labelled(l, f));
        }
    }
}

macro_rules! tuple_labelled {
    ($($n:tt $t:ident),+) => {
        impl<$($t: LabelledTree),+> LabelledTree for ($($t,)+) {
            fn visit_labelled(&self, label: &mut Path, f: &mut dyn FnMut(&Path, &Tensor)) {
                $(with_key(label, &($n as usize), |l| self.$n.visit_labelled(l, f));)+
            }
        }
    };
}
tuple_labelled!(0 A);
tuple_labelled!(0 A, 1 B);
tuple_labelled!(0 A, 1 B, 2 C);
tuple_labelled!(0 A, 1 B, 2 C, 3 D);
