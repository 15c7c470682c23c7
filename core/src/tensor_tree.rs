//! [`TensorTree`]: a tree of tensors (maps with string keys, lists, nested), the value of a
//! tree-valued [`State`](crate::State).

use crate::path::{Path, PathKey};
use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::fmt;

/// A tree of tensors: a tensor, a map with string keys, or a list, nested to any depth.
///
/// It is the value of a tree-valued state ([`State::tree`](crate::State::tree),
/// `ParamState::tree(..)`), as in BrainState's `ParamState({'weight': W, 'bias': b})`. Map
/// entries are kept sorted by key, so the order of [`TensorTree::leaves`] matches the order of
/// the paths (`module.states(..)`).
///
/// ```
/// use stategrad_core::{path, Tensor, TensorTree};
/// let t = TensorTree::map([
///     ("weight", TensorTree::from(Tensor::zeros(&[2, 3]))),
///     ("bias", Tensor::ones(&[3]).into()),
///     ("extra", TensorTree::list([Tensor::scalar(1.0f32), Tensor::scalar(2.0f32)])),
/// ]);
/// assert_eq!(t.get("weight").unwrap().as_tensor().unwrap().shape(), &[2, 3]);
/// assert!(t.get("missing").is_none());
/// let paths: Vec<String> = t.leaves().iter().map(|(p, _)| p.to_string()).collect();
/// assert_eq!(paths, ["('bias',)", "('extra', 0)", "('extra', 1)", "('weight',)"]);
/// assert_eq!(t.get_path(&path!("extra", 1)).unwrap().as_tensor().unwrap().item().unwrap(), 2.0);
/// ```
#[derive(Clone, Debug)]
pub enum TensorTree {
    /// One tensor.
    Leaf(Tensor),
    /// Named children, sorted by key.
    Map(BTreeMap<String, TensorTree>),
    /// Indexed children.
    List(Vec<TensorTree>),
}

impl TensorTree {
    /// A map from `(key, value)` pairs (a later duplicate key replaces an earlier one).
    pub fn map<K: Into<String>, V: Into<TensorTree>>(
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> TensorTree {
        TensorTree::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// A list of values.
    pub fn list<V: Into<TensorTree>>(items: impl IntoIterator<Item = V>) -> TensorTree {
        TensorTree::List(items.into_iter().map(Into::into).collect())
    }

    /// True for a single tensor.
    pub fn is_leaf(&self) -> bool {
        matches!(self, TensorTree::Leaf(_))
    }

    /// The tensor of a leaf, `None` for a map or a list.
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            TensorTree::Leaf(t) => Some(t),
            _ => None,
        }
    }

    /// The child under `key`: a name for a map, an index for a list (`None` if absent or if
    /// this is a leaf).
    pub fn get(&self, key: impl Into<PathKey>) -> Option<&TensorTree> {
        match (self, key.into()) {
            (TensorTree::Map(m), PathKey::Name(n)) => m.get(&*n),
            (TensorTree::List(l), PathKey::Index(i)) => l.get(i),
            _ => None,
        }
    }

    /// The subtree at `path` (the tree itself for the empty path).
    pub fn get_path(&self, path: &Path) -> Option<&TensorTree> {
        path.keys().iter().try_fold(self, |t, k| t.get(k.clone()))
    }

    /// Every tensor with its path inside the tree, in path order (a leaf gives one entry at the
    /// empty path).
    pub fn leaves(&self) -> Vec<(Path, Tensor)> {
        let mut out = Vec::new();
        self.walk(&mut Path::new(), &mut |p, t| {
            out.push((p.clone(), t.clone()))
        });
        out
    }

    /// The same structure with `f(path, tensor)` in place of each tensor.
    pub fn map_leaves(&self, f: &mut dyn FnMut(&Path, &Tensor) -> Tensor) -> TensorTree {
        fn go(
            t: &TensorTree,
            p: &mut Path,
            f: &mut dyn FnMut(&Path, &Tensor) -> Tensor,
        ) -> TensorTree {
            match t {
                TensorTree::Leaf(x) => TensorTree::Leaf(f(p, x)),
                TensorTree::Map(m) => TensorTree::Map(
                    m.iter()
                        .map(|(k, v)| {
                            p.push_name(k);
                            let out = go(v, p, f);
                            p.pop();
                            (k.clone(), out)
                        })
                        .collect(),
                ),
                TensorTree::List(l) => TensorTree::List(
                    l.iter()
                        .enumerate()
                        .map(|(i, v)| {
                            p.push_index(i);
                            let out = go(v, p, f);
                            p.pop();
                            out
                        })
                        .collect(),
                ),
            }
        }
        go(self, &mut Path::new(), f)
    }

    /// True if both trees have the same keys and list lengths at every level (the tensors'
    /// shapes are not compared).
    pub fn same_structure(&self, other: &TensorTree) -> bool {
        match (self, other) {
            (TensorTree::Leaf(_), TensorTree::Leaf(_)) => true,
            (TensorTree::Map(a), TensorTree::Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, va), (kb, vb))| ka == kb && va.same_structure(vb))
            }
            (TensorTree::List(a), TensorTree::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_structure(y))
            }
            _ => false,
        }
    }

    /// The structure alone, for messages: `{'bias': *, 'weight': *}`, `[*, *]`, `*`.
    pub fn structure(&self) -> String {
        match self {
            TensorTree::Leaf(_) => "*".into(),
            TensorTree::Map(m) => {
                let items: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("'{k}': {}", v.structure()))
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
            TensorTree::List(l) => {
                let items: Vec<String> = l.iter().map(TensorTree::structure).collect();
                format!("[{}]", items.join(", "))
            }
        }
    }

    pub(crate) fn walk(&self, p: &mut Path, f: &mut dyn FnMut(&Path, &Tensor)) {
        match self {
            TensorTree::Leaf(t) => f(p, t),
            TensorTree::Map(m) => {
                for (k, v) in m {
                    p.push_name(k);
                    v.walk(p, f);
                    p.pop();
                }
            }
            TensorTree::List(l) => {
                for (i, v) in l.iter().enumerate() {
                    p.push_index(i);
                    v.walk(p, f);
                    p.pop();
                }
            }
        }
    }
}

impl From<Tensor> for TensorTree {
    fn from(t: Tensor) -> TensorTree {
        TensorTree::Leaf(t)
    }
}

impl From<&Tensor> for TensorTree {
    fn from(t: &Tensor) -> TensorTree {
        TensorTree::Leaf(t.clone())
    }
}

impl<V: Into<TensorTree>> From<BTreeMap<String, V>> for TensorTree {
    fn from(m: BTreeMap<String, V>) -> TensorTree {
        TensorTree::map(m)
    }
}

impl<V: Into<TensorTree>> From<Vec<V>> for TensorTree {
    fn from(v: Vec<V>) -> TensorTree {
        TensorTree::list(v)
    }
}

/// Prints like the reference's nested dicts and lists: `{'bias': …, 'weight': …}`, `[…, …]`.
impl fmt::Display for TensorTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorTree::Leaf(t) => write!(f, "{t}"),
            TensorTree::Map(m) => {
                write!(f, "{{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "'{k}': {v}")?;
                }
                write!(f, "}}")
            }
            TensorTree::List(l) => {
                write!(f, "[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
        }
    }
}
