//! [`GradSet`]: the whole gradient set as one ordered list of `(label, tensor)`, and the
//! conversions from and back to the containers the transforms return.

use stategrad_core::transform::Tree;
use stategrad_core::{Error, Result, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;

/// Every gradient of one step, in a fixed order, each with a label (its path).
///
/// Processors see the whole set at once, so that they can compute global quantities (the global
/// norm) and select entries by label ([`crate::masked`]).
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
/// assert_eq!(set.labels().collect::<Vec<_>>(), ["('bias',)", "('weight',)"]);
/// // Rebuild the original container from (possibly processed) tensors.
/// let back: BTreeMap<Path, Tensor> = set.to_tree(&grads).unwrap();
/// assert_eq!(back[&path!("weight")].to_string(), "[[-3.]]");
/// ```
#[derive(Clone, Default)]
pub struct GradSet {
    entries: Vec<(String, Tensor)>,
}

impl GradSet {
    /// An empty set.
    pub fn new() -> GradSet {
        GradSet::default()
    }

    /// A set from `(label, tensor)` pairs, in order.
    pub fn from_entries(entries: Vec<(String, Tensor)>) -> GradSet {
        GradSet { entries }
    }

    /// The tensors of any [`LabelledTree`] (a tensor, `Vec`, array, tuple, path-keyed map,
    /// nested maps), labelled by their paths: map keys as they print (`('bias',)`), positions
    /// as indices, levels joined with `/`.
    pub fn from_tree<T: LabelledTree>(tree: &T) -> GradSet {
        let mut entries = Vec::new();
        tree.visit_labelled(&mut String::new(), &mut |l, t| {
            entries.push((l.to_string(), t.clone()))
        });
        GradSet { entries }
    }

    /// The tensors of any [`Tree`], labelled by their flat position (`0`, `1`, …).
    pub fn from_tree_indexed<T: Tree>(tree: &T) -> GradSet {
        let mut entries = Vec::new();
        tree.for_each_tensor(&mut |t| entries.push((entries.len().to_string(), t.clone())));
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
    pub fn push(&mut self, label: impl Into<String>, grad: Tensor) {
        self.entries.push((label.into(), grad));
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
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(l, t)| (l.as_str(), t))
    }

    /// The labels in order.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(l, _)| l.as_str())
    }

    /// The tensors in order.
    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.entries.iter().map(|(_, t)| t)
    }

    /// The first gradient with this label.
    pub fn get(&self, label: &str) -> Option<&Tensor> {
        self.entries
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, t)| t)
    }

    /// The entries.
    pub fn entries(&self) -> &[(String, Tensor)] {
        &self.entries
    }

    /// The entries, mutably (keep their number, labels and shapes: processors are checked).
    pub fn entries_mut(&mut self) -> &mut [(String, Tensor)] {
        &mut self.entries
    }

    /// Take the entries out.
    pub fn into_entries(self) -> Vec<(String, Tensor)> {
        self.entries
    }

    /// Take the tensors out, in order.
    pub fn into_tensors(self) -> Vec<Tensor> {
        self.entries.into_iter().map(|(_, t)| t).collect()
    }

    /// Replace every tensor by `f(label, tensor)`, stopping at the first error.
    pub fn try_map(self, mut f: impl FnMut(&str, Tensor) -> Result<Tensor>) -> Result<GradSet> {
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

impl FromIterator<(String, Tensor)> for GradSet {
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(iter: I) -> Self {
        GradSet {
            entries: iter.into_iter().collect(),
        }
    }
}

impl IntoIterator for GradSet {
    type Item = (String, Tensor);
    type IntoIter = std::vec::IntoIter<(String, Tensor)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

// ------------------------------------------------------------------ labelled trees

/// A [`Tree`] whose tensors have path labels. The visiting order is the [`Tree`] order, so a
/// [`GradSet`] made by [`GradSet::from_tree`] rebuilds with [`GradSet::to_tree`].
///
/// Implemented for tensors, `Vec`, arrays, `Option`, tuples (up to 4), `BTreeMap` and `HashMap`
/// with printable keys (a `BTreeMap<Path, Tensor>` labels its entries `('bias',)`), and the
/// tensor-free leaves (`()`, numbers, strings).
pub trait LabelledTree: Tree {
    /// Visit every tensor with its label; `label` is the path so far (empty at the root).
    fn visit_labelled(&self, label: &mut String, f: &mut dyn FnMut(&str, &Tensor));
}

/// Run `f` with `key` appended to `label` (joined by `/`), then restore it.
fn with_key(label: &mut String, key: &dyn fmt::Display, f: impl FnOnce(&mut String)) {
    let len = label.len();
    if !label.is_empty() {
        label.push('/');
    }
    label.push_str(&key.to_string());
    f(label);
    label.truncate(len);
}

impl LabelledTree for Tensor {
    fn visit_labelled(&self, label: &mut String, f: &mut dyn FnMut(&str, &Tensor)) {
        f(label, self)
    }
}

macro_rules! leaf_labelled {
    ($($t:ty),*) => {$(
        impl LabelledTree for $t {
            fn visit_labelled(&self, _: &mut String, _: &mut dyn FnMut(&str, &Tensor)) {}
        }
    )*};
}
leaf_labelled!((), f32, f64, i32, i64, usize, bool, String, &'static str);

impl<T: LabelledTree> LabelledTree for Vec<T> {
    fn visit_labelled(&self, label: &mut String, f: &mut dyn FnMut(&str, &Tensor)) {
        for (i, t) in self.iter().enumerate() {
            with_key(label, &i, |l| t.visit_labelled(l, f));
        }
    }
}

impl<T: LabelledTree, const N: usize> LabelledTree for [T; N] {
    fn visit_labelled(&self, label: &mut String, f: &mut dyn FnMut(&str, &Tensor)) {
        for (i, t) in self.iter().enumerate() {
            with_key(label, &i, |l| t.visit_labelled(l, f));
        }
    }
}

impl<T: LabelledTree> LabelledTree for Option<T> {
    fn visit_labelled(&self, label: &mut String, f: &mut dyn FnMut(&str, &Tensor)) {
        if let Some(t) = self {
            t.visit_labelled(label, f)
        }
    }
}

impl<K: Ord + Clone + fmt::Display, T: LabelledTree> LabelledTree for BTreeMap<K, T> {
    fn visit_labelled(&self, label: &mut String, f: &mut dyn FnMut(&str, &Tensor)) {
        for (k, t) in self {
            with_key(label, k, |l| t.visit_labelled(l, f));
        }
    }
}

impl<K: Eq + Hash + Clone + Ord + fmt::Display, T: LabelledTree> LabelledTree for HashMap<K, T> {
    fn visit_labelled(&self, label: &mut String, f: &mut dyn FnMut(&str, &Tensor)) {
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
            fn visit_labelled(&self, label: &mut String, f: &mut dyn FnMut(&str, &Tensor)) {
                $(with_key(label, &$n, |l| self.$n.visit_labelled(l, f));)+
            }
        }
    };
}
tuple_labelled!(0 A);
tuple_labelled!(0 A, 1 B);
tuple_labelled!(0 A, 1 B, 2 C);
tuple_labelled!(0 A, 1 B, 2 C, 3 D);
