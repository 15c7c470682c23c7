//! The structure traits of the transforms and `jit`: arguments ([`Arg`], [`Args`]), containers of states
//! ([`StateTree`]) and auxiliary outputs ([`Tree`]).

use crate::error::{Error, Result};
use crate::state::State;
use crate::tensor::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

// ------------------------------------------------------------------ aux trees

/// A value whose tensors can be visited and rebuilt: auxiliary outputs, gradient containers.
pub trait Tree: Sized {
    /// A copy with every tensor replaced by `f(tensor)`.
    fn map_tensors(&self, f: &mut dyn FnMut(&Tensor) -> Tensor) -> Self;
    /// Visit every tensor in a fixed order.
    fn for_each_tensor(&self, f: &mut dyn FnMut(&Tensor));
}

impl Tree for Tensor {
    fn map_tensors(&self, f: &mut dyn FnMut(&Tensor) -> Tensor) -> Self {
        f(self)
    }
    fn for_each_tensor(&self, f: &mut dyn FnMut(&Tensor)) {
        f(self)
    }
}

macro_rules! leaf_tree {
    ($($t:ty),*) => {$(
        impl Tree for $t {
            fn map_tensors(&self, _: &mut dyn FnMut(&Tensor) -> Tensor) -> Self { self.clone() }
            fn for_each_tensor(&self, _: &mut dyn FnMut(&Tensor)) {}
        }
    )*};
}
leaf_tree!((), f32, f64, i32, i64, usize, bool, String, &'static str);

impl<T: Tree> Tree for Vec<T> {
    fn map_tensors(&self, f: &mut dyn FnMut(&Tensor) -> Tensor) -> Self {
        self.iter().map(|t| t.map_tensors(f)).collect()
    }
    fn for_each_tensor(&self, f: &mut dyn FnMut(&Tensor)) {
        self.iter().for_each(|t| t.for_each_tensor(f))
    }
}

impl<T: Tree> Tree for Option<T> {
    fn map_tensors(&self, f: &mut dyn FnMut(&Tensor) -> Tensor) -> Self {
        self.as_ref().map(|t| t.map_tensors(f))
    }
    fn for_each_tensor(&self, f: &mut dyn FnMut(&Tensor)) {
        if let Some(t) = self {
            t.for_each_tensor(f)
        }
    }
}

impl<T: Tree, const N: usize> Tree for [T; N] {
    fn map_tensors(&self, f: &mut dyn FnMut(&Tensor) -> Tensor) -> Self {
        std::array::from_fn(|i| self[i].map_tensors(f))
    }
    fn for_each_tensor(&self, f: &mut dyn FnMut(&Tensor)) {
        self.iter().for_each(|t| t.for_each_tensor(f))
    }
}

impl<K: Ord + Clone, T: Tree> Tree for BTreeMap<K, T> {
    fn map_tensors(&self, f: &mut dyn FnMut(&Tensor) -> Tensor) -> Self {
        self.iter()
            .map(|(k, v)| (k.clone(), v.map_tensors(f)))
            .collect()
    }
    fn for_each_tensor(&self, f: &mut dyn FnMut(&Tensor)) {
        self.values().for_each(|t| t.for_each_tensor(f))
    }
}

impl<K: Eq + Hash + Clone + Ord, T: Tree> Tree for HashMap<K, T> {
    fn map_tensors(&self, f: &mut dyn FnMut(&Tensor) -> Tensor) -> Self {
        let mut keys: Vec<&K> = self.keys().collect();
        keys.sort();
        keys.into_iter()
            .map(|k| (k.clone(), self[k].map_tensors(f)))
            .collect()
    }
    fn for_each_tensor(&self, f: &mut dyn FnMut(&Tensor)) {
        let mut keys: Vec<&K> = self.keys().collect();
        keys.sort();
        keys.into_iter().for_each(|k| self[k].for_each_tensor(f))
    }
}

macro_rules! tuple_tree {
    ($($n:tt $t:ident),+) => {
        impl<$($t: Tree),+> Tree for ($($t,)+) {
            fn map_tensors(&self, f: &mut dyn FnMut(&Tensor) -> Tensor) -> Self {
                ($(self.$n.map_tensors(f),)+)
            }
            fn for_each_tensor(&self, f: &mut dyn FnMut(&Tensor)) {
                $(self.$n.for_each_tensor(f);)+
            }
        }
    };
}
tuple_tree!(0 A);
tuple_tree!(0 A, 1 B);
tuple_tree!(0 A, 1 B, 2 C);
tuple_tree!(0 A, 1 B, 2 C, 3 D);

// ------------------------------------------------------------------ arguments

/// One positional argument of a transformed function.
///
/// A [`Tensor`] is differentiable (its gradient is a tensor of its shape; a 0-d tensor's is 0-d);
/// tuples and `Vec`s of tensors get gradients of the same structure. Plain numbers are constants:
/// selecting one with `argnums` is a typed error that says to pass a `Tensor` instead, and
/// integers are refused as in the reference.
pub trait Arg: Clone {
    /// The gradient's type.
    type Grad;
    /// The tensors to differentiate, in a fixed order; `Err(reason)` if not differentiable.
    fn leaves(&self) -> std::result::Result<Vec<Tensor>, String>;
    /// A copy with the leaves replaced, in the same order.
    fn with_leaves(&self, leaves: &mut dyn Iterator<Item = Tensor>) -> Self;
    /// The gradient built from one tensor per leaf.
    fn grad_from(&self, grads: &mut dyn Iterator<Item = Tensor>) -> Self::Grad;
    /// For a non-differentiable argument, the part of a `jit` cache key it contributes (a
    /// different value retraces).
    fn static_key(&self) -> String {
        String::new()
    }
}

impl Arg for Tensor {
    type Grad = Tensor;
    fn leaves(&self) -> std::result::Result<Vec<Tensor>, String> {
        Ok(vec![self.clone()])
    }
    fn with_leaves(&self, leaves: &mut dyn Iterator<Item = Tensor>) -> Self {
        leaves.next().expect("internal error: missing leaf")
    }
    fn grad_from(&self, grads: &mut dyn Iterator<Item = Tensor>) -> Tensor {
        grads.next().expect("internal error: missing gradient")
    }
}

macro_rules! const_arg {
    ($reason:expr; $($t:ty),*) => {$(
        impl Arg for $t {
            type Grad = Tensor;
            fn leaves(&self) -> std::result::Result<Vec<Tensor>, String> {
                Err(format!($reason, stringify!($t)))
            }
            fn with_leaves(&self, _: &mut dyn Iterator<Item = Tensor>) -> Self { *self }
            fn grad_from(&self, _: &mut dyn Iterator<Item = Tensor>) -> Tensor {
                unreachable!("constant arguments are refused before differentiation")
            }
            fn static_key(&self) -> String {
                format!("{:?}", self)
            }
        }
    )*};
}
const_arg!("a plain `{}` is a constant; pass `Tensor::scalar(..)` to differentiate it"; f32, f64);
const_arg!("integer input `{}` cannot be differentiated"; i32, i64, u32, u64, usize, isize, bool);

impl<T: Arg> Arg for Vec<T> {
    type Grad = Vec<T::Grad>;
    fn leaves(&self) -> std::result::Result<Vec<Tensor>, String> {
        let mut out = Vec::new();
        for a in self {
            out.extend(a.leaves()?);
        }
        Ok(out)
    }
    fn with_leaves(&self, leaves: &mut dyn Iterator<Item = Tensor>) -> Self {
        self.iter().map(|a| a.with_leaves(leaves)).collect()
    }
    fn grad_from(&self, grads: &mut dyn Iterator<Item = Tensor>) -> Self::Grad {
        self.iter().map(|a| a.grad_from(grads)).collect()
    }
}

macro_rules! tuple_arg {
    ($($n:tt $t:ident),+) => {
        impl<$($t: Arg),+> Arg for ($($t,)+) {
            type Grad = ($($t::Grad,)+);
            fn leaves(&self) -> std::result::Result<Vec<Tensor>, String> {
                let mut out = Vec::new();
                $(out.extend(self.$n.leaves()?);)+
                Ok(out)
            }
            fn with_leaves(&self, leaves: &mut dyn Iterator<Item = Tensor>) -> Self {
                ($(self.$n.with_leaves(leaves),)+)
            }
            fn grad_from(&self, grads: &mut dyn Iterator<Item = Tensor>) -> Self::Grad {
                ($(self.$n.grad_from(grads),)+)
            }
        }
    };
}
tuple_arg!(0 A, 1 B);
tuple_arg!(0 A, 1 B, 2 C);

/// A non-differentiable argument (a config, a flag, a size): never traced. Under `jit` its
/// `Debug` form is part of the cache key, so a different value retraces.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Static<T>(pub T);

impl<T: Clone + std::fmt::Debug> Arg for Static<T> {
    type Grad = Tensor;
    fn leaves(&self) -> std::result::Result<Vec<Tensor>, String> {
        Err("a `Static` argument is not differentiable".into())
    }
    fn with_leaves(&self, _: &mut dyn Iterator<Item = Tensor>) -> Self {
        self.clone()
    }
    fn grad_from(&self, _: &mut dyn Iterator<Item = Tensor>) -> Tensor {
        unreachable!("static arguments are refused before differentiation")
    }
    fn static_key(&self) -> String {
        format!("{:?}", self.0)
    }
}

/// The positional arguments of a transformed function, passed as a tuple `(x, y, scale)` (or a
/// lone [`Tensor`]). All differentiable positions share one gradient type `Grad`.
pub trait Args: Clone {
    /// The gradient type of any selected argument.
    type Grad;
    /// Number of positional arguments.
    const LEN: usize;
    /// The leaves of argument `i`, or a typed error.
    fn arg_leaves(&self, i: usize) -> Result<Vec<Tensor>>;
    /// Replace the leaves of argument `i`.
    fn replace_arg(&mut self, i: usize, leaves: &mut dyn Iterator<Item = Tensor>);
    /// The gradient of argument `i` from one tensor per leaf.
    fn arg_grad(&self, i: usize, grads: &mut dyn Iterator<Item = Tensor>) -> Self::Grad;
    /// Every tensor of every argument (for `jit`), and the static arguments' keys.
    fn jit_leaves(&self) -> (Vec<Tensor>, Vec<String>) {
        let mut tensors = Vec::new();
        let mut keys = Vec::new();
        for i in 0..Self::LEN {
            match self.arg_leaves(i) {
                Ok(l) => tensors.extend(l),
                Err(_) => keys.push(self.arg_static_key(i)),
            }
        }
        (tensors, keys)
    }
    /// Replace every tensor of every argument, in [`Args::jit_leaves`] order.
    fn jit_replace(&mut self, leaves: &mut dyn Iterator<Item = Tensor>) {
        for i in 0..Self::LEN {
            if self.arg_leaves(i).is_ok() {
                self.replace_arg(i, leaves);
            }
        }
    }
    /// The static key of argument `i`.
    fn arg_static_key(&self, i: usize) -> String;
}

impl Args for Tensor {
    type Grad = Tensor;
    const LEN: usize = 1;
    fn arg_leaves(&self, _: usize) -> Result<Vec<Tensor>> {
        Ok(vec![self.clone()])
    }
    fn replace_arg(&mut self, _: usize, leaves: &mut dyn Iterator<Item = Tensor>) {
        *self = self.with_leaves(leaves);
    }
    fn arg_grad(&self, _: usize, grads: &mut dyn Iterator<Item = Tensor>) -> Tensor {
        self.grad_from(grads)
    }
    fn arg_static_key(&self, _: usize) -> String {
        String::new()
    }
}

/// No arguments: `grad(|()| loss()).grad_states(params)` and `jit(|()| ..)` of a function that
/// reads only states. Selecting an argument with `argnums` is an [`Error::ArgnumOutOfRange`].
///
/// ```
/// use stategrad_core::{grad, jit, State, Tensor};
/// let w = State::new(Tensor::new([1.0f32, 2.0]));
/// let loss = |()| w.value().square().sum();
/// let gw = grad(loss).grad_states(w.clone()).call(()).unwrap();
/// assert_eq!(gw.to_string(), "[2. 4.]");
/// assert_eq!(jit(loss).call(()).unwrap().item().unwrap(), 5.0);
/// ```
impl Args for () {
    type Grad = Tensor;
    const LEN: usize = 0;
    fn arg_leaves(&self, i: usize) -> Result<Vec<Tensor>> {
        Err(Error::ArgnumOutOfRange {
            argnum: i64::try_from(i).unwrap_or(i64::MAX),
            nargs: 0,
        })
    }
    fn replace_arg(&mut self, _: usize, _: &mut dyn Iterator<Item = Tensor>) {}
    fn arg_grad(&self, _: usize, _: &mut dyn Iterator<Item = Tensor>) -> Tensor {
        unreachable!("argnums validated before differentiation")
    }
    fn arg_static_key(&self, _: usize) -> String {
        String::new()
    }
}

fn leaves_or_err<A: Arg>(a: &A, i: usize) -> Result<Vec<Tensor>> {
    a.leaves()
        .map_err(|reason| Error::NonDifferentiableArg { argnum: i, reason })
}

macro_rules! tuple_args {
    ($len:expr; $first:ident $(, $n:tt $t:ident)*) => {
        impl<$first: Arg $(, $t: Arg<Grad = $first::Grad>)*> Args for ($first, $($t,)*) {
            type Grad = $first::Grad;
            const LEN: usize = $len;
            fn arg_leaves(&self, i: usize) -> Result<Vec<Tensor>> {
                match i {
                    0 => leaves_or_err(&self.0, i),
                    $($n => leaves_or_err(&self.$n, i),)*
                    _ => Err(Error::ArgnumOutOfRange { argnum: i as i64, nargs: $len }),
                }
            }
            fn replace_arg(&mut self, i: usize, leaves: &mut dyn Iterator<Item = Tensor>) {
                match i {
                    0 => self.0 = self.0.with_leaves(leaves),
                    $($n => self.$n = self.$n.with_leaves(leaves),)*
                    _ => {}
                }
            }
            fn arg_grad(&self, i: usize, grads: &mut dyn Iterator<Item = Tensor>) -> Self::Grad {
                match i {
                    0 => self.0.grad_from(grads),
                    $($n => self.$n.grad_from(grads),)*
                    _ => unreachable!("argnums validated before differentiation"),
                }
            }
            fn arg_static_key(&self, i: usize) -> String {
                match i {
                    0 => self.0.static_key(),
                    $($n => self.$n.static_key(),)*
                    _ => String::new(),
                }
            }
        }
    };
}
tuple_args!(1; A);
tuple_args!(2; A, 1 B);
tuple_args!(3; A, 1 B, 2 C);
tuple_args!(4; A, 1 B, 2 C, 3 D);
tuple_args!(5; A, 1 B, 2 C, 3 D, 4 E);
tuple_args!(6; A, 1 B, 2 C, 3 D, 4 E, 5 G);

// ------------------------------------------------------------------ grad_states containers

/// A container of states given as `grad_states`: a single [`State`], a `Vec` or array, a map
/// (e.g. `module.states(ParamState)` keyed by path), nested maps, or a `StateFinder` result.
/// The gradients mirror it: `Out<Tensor>` has the same structure with a tensor per state.
pub trait StateTree: Clone {
    /// The same structure holding `T` in place of each state.
    type Out<T>;
    /// Visit the states in order, with a label for messages (the path or key).
    fn visit(&self, label: &mut String, f: &mut dyn FnMut(&str, &State));
    /// Rebuild the structure from one item per state, in visiting order.
    fn build<T>(&self, items: &mut dyn Iterator<Item = T>) -> Self::Out<T>;
}

impl StateTree for State {
    type Out<T> = T;
    fn visit(&self, label: &mut String, f: &mut dyn FnMut(&str, &State)) {
        f(label, self)
    }
    fn build<T>(&self, items: &mut dyn Iterator<Item = T>) -> T {
        items
            .next()
            .expect("internal error: missing item for state")
    }
}

fn with_label(label: &mut String, key: &dyn std::fmt::Display, f: impl FnOnce(&mut String)) {
    let len = label.len();
    if label.is_empty() {
        label.push_str(&key.to_string());
    } else {
        label.push_str(&format!("/{key}"));
    }
    f(label);
    label.truncate(len);
}

impl<S: StateTree> StateTree for Vec<S> {
    type Out<T> = Vec<S::Out<T>>;
    fn visit(&self, label: &mut String, f: &mut dyn FnMut(&str, &State)) {
        for (i, s) in self.iter().enumerate() {
            with_label(label, &i, |l| s.visit(l, f));
        }
    }
    fn build<T>(&self, items: &mut dyn Iterator<Item = T>) -> Self::Out<T> {
        self.iter().map(|s| s.build(items)).collect()
    }
}

impl<S: StateTree, const N: usize> StateTree for [S; N] {
    type Out<T> = [S::Out<T>; N];
    fn visit(&self, label: &mut String, f: &mut dyn FnMut(&str, &State)) {
        for (i, s) in self.iter().enumerate() {
            with_label(label, &i, |l| s.visit(l, f));
        }
    }
    fn build<T>(&self, items: &mut dyn Iterator<Item = T>) -> Self::Out<T> {
        std::array::from_fn(|i| self[i].build(items))
    }
}

impl<K: Ord + Clone + std::fmt::Display, S: StateTree> StateTree for BTreeMap<K, S> {
    type Out<T> = BTreeMap<K, S::Out<T>>;
    fn visit(&self, label: &mut String, f: &mut dyn FnMut(&str, &State)) {
        for (k, s) in self {
            with_label(label, k, |l| s.visit(l, f));
        }
    }
    fn build<T>(&self, items: &mut dyn Iterator<Item = T>) -> Self::Out<T> {
        self.iter()
            .map(|(k, s)| (k.clone(), s.build(items)))
            .collect()
    }
}

macro_rules! tuple_state_tree {
    ($($n:tt $t:ident),+) => {
        impl<$($t: StateTree),+> StateTree for ($($t,)+) {
            type Out<T> = ($($t::Out<T>,)+);
            fn visit(&self, label: &mut String, f: &mut dyn FnMut(&str, &State)) {
                $(with_label(label, &$n, |l| self.$n.visit(l, f));)+
            }
            fn build<T>(&self, items: &mut dyn Iterator<Item = T>) -> Self::Out<T> {
                ($(self.$n.build(items),)+)
            }
        }
    };
}
tuple_state_tree!(0 A, 1 B);
tuple_state_tree!(0 A, 1 B, 2 C);

/// The states of a tree, in order, with their labels.
pub(crate) fn flatten_states<S: StateTree>(tree: &S) -> Vec<(String, State)> {
    let mut out = Vec::new();
    tree.visit(&mut String::new(), &mut |l, s| {
        out.push((l.to_string(), s.clone()))
    });
    out
}

// ------------------------------------------------------------------ output trees

/// A function output made of several tensors, for [`crate::GradientTransform::call_tree`]: the
/// result mirrors it with `Out<T>` holding a Jacobian structure per leaf.
pub trait OutTree: Sized {
    /// The same structure holding `T` in place of each tensor.
    type Out<T>;
    /// The tensors, in a fixed order.
    fn leaves(&self) -> Vec<Tensor>;
    /// Rebuild the structure from one item per tensor, in [`OutTree::leaves`] order.
    fn build<T>(&self, items: &mut dyn Iterator<Item = T>) -> Self::Out<T>;
}

impl OutTree for Tensor {
    type Out<T> = T;
    fn leaves(&self) -> Vec<Tensor> {
        vec![self.clone()]
    }
    fn build<T>(&self, items: &mut dyn Iterator<Item = T>) -> T {
        items
            .next()
            .expect("internal error: missing item for output")
    }
}

impl<O: OutTree> OutTree for Vec<O> {
    type Out<T> = Vec<O::Out<T>>;
    fn leaves(&self) -> Vec<Tensor> {
        self.iter().flat_map(OutTree::leaves).collect()
    }
    fn build<T>(&self, items: &mut dyn Iterator<Item = T>) -> Self::Out<T> {
        self.iter().map(|o| o.build(items)).collect()
    }
}

impl<O: OutTree, const N: usize> OutTree for [O; N] {
    type Out<T> = [O::Out<T>; N];
    fn leaves(&self) -> Vec<Tensor> {
        self.iter().flat_map(OutTree::leaves).collect()
    }
    fn build<T>(&self, items: &mut dyn Iterator<Item = T>) -> Self::Out<T> {
        std::array::from_fn(|i| self[i].build(items))
    }
}

impl<K: Ord + Clone, O: OutTree> OutTree for BTreeMap<K, O> {
    type Out<T> = BTreeMap<K, O::Out<T>>;
    fn leaves(&self) -> Vec<Tensor> {
        self.values().flat_map(OutTree::leaves).collect()
    }
    fn build<T>(&self, items: &mut dyn Iterator<Item = T>) -> Self::Out<T> {
        self.iter()
            .map(|(k, o)| (k.clone(), o.build(items)))
            .collect()
    }
}

macro_rules! tuple_out_tree {
    ($($n:tt $t:ident),+) => {
        impl<$($t: OutTree),+> OutTree for ($($t,)+) {
            type Out<T> = ($($t::Out<T>,)+);
            fn leaves(&self) -> Vec<Tensor> {
                let mut v = Vec::new();
                $(v.extend(self.$n.leaves());)+
                v
            }
            fn build<T>(&self, items: &mut dyn Iterator<Item = T>) -> Self::Out<T> {
                ($(self.$n.build(items),)+)
            }
        }
    };
}
tuple_out_tree!(0 A, 1 B);
tuple_out_tree!(0 A, 1 B, 2 C);
tuple_out_tree!(0 A, 1 B, 2 C, 3 D);

// ------------------------------------------------------------------ tensor trees

use crate::path::Path;
use crate::tensor_tree::TensorTree;

/// A tree is an auxiliary output, a `jit` result, …: its tensors are visited in path order.
impl Tree for TensorTree {
    fn map_tensors(&self, f: &mut dyn FnMut(&Tensor) -> Tensor) -> Self {
        self.map_leaves(&mut |_, t| f(t))
    }
    fn for_each_tensor(&self, f: &mut dyn FnMut(&Tensor)) {
        self.walk(&mut Path::new(), &mut |_, t| f(t))
    }
}

/// A tree is a differentiable argument: its gradient is a tree of the same structure, and under
/// `jit` each tensor is an input (a changed shape retraces).
///
/// ```
/// use stategrad_core::{grad, Tensor, TensorTree};
/// let f = |t: TensorTree| {
///     let (a, b) = (t.get("a").unwrap().as_tensor().unwrap(), t.get("b").unwrap().as_tensor().unwrap());
///     (a * b).sum()
/// };
/// let t = TensorTree::map([("a", Tensor::scalar(3.0f64)), ("b", Tensor::scalar(4.0f64))]);
/// let g = grad(f).call(t).unwrap();
/// assert_eq!(g.get("a").unwrap().as_tensor().unwrap().item().unwrap(), 4.0);
/// assert_eq!(g.get("b").unwrap().as_tensor().unwrap().item().unwrap(), 3.0);
/// ```
impl Arg for TensorTree {
    type Grad = TensorTree;
    fn leaves(&self) -> std::result::Result<Vec<Tensor>, String> {
        let mut out = Vec::new();
        self.for_each_tensor(&mut |t| out.push(t.clone()));
        Ok(out)
    }
    fn with_leaves(&self, leaves: &mut dyn Iterator<Item = Tensor>) -> Self {
        self.map_tensors(&mut |_| leaves.next().expect("internal error: missing leaf"))
    }
    fn grad_from(&self, grads: &mut dyn Iterator<Item = Tensor>) -> TensorTree {
        self.map_tensors(&mut |_| grads.next().expect("internal error: missing gradient"))
    }
}

/// A lone tree is the whole argument list, as a lone [`Tensor`] is.
impl Args for TensorTree {
    type Grad = TensorTree;
    const LEN: usize = 1;
    fn arg_leaves(&self, _: usize) -> crate::Result<Vec<Tensor>> {
        let mut out = Vec::new();
        self.for_each_tensor(&mut |t| out.push(t.clone()));
        Ok(out)
    }
    fn replace_arg(&mut self, _: usize, leaves: &mut dyn Iterator<Item = Tensor>) {
        *self = self.with_leaves(leaves);
    }
    fn arg_grad(&self, _: usize, grads: &mut dyn Iterator<Item = Tensor>) -> TensorTree {
        self.grad_from(grads)
    }
    fn arg_static_key(&self, _: usize) -> String {
        String::new()
    }
}
