//! State-aware transforms: [`grad`], [`vector_grad`], [`jacrev`], [`jacfwd`], [`jacobian`],
//! [`hessian`], all built from one wrapper, [`GradientTransform`], and a [`TransformPlugin`] that
//! computes the derivative of a pure function.
//!
//! The return structure follows the reference's 12-row table, as types:
//!
//! | grad_states | argnums | plain | `.has_aux()` | `.return_value()` | both |
//! |---|---|---|---|---|---|
//! | none | any | `G` | `(G, X)` | `(G, L)` | `(G, L, X)` |
//! | given | none | `V` | `(V, X)` | `(V, L)` | `(V, L, X)` |
//! | given | given | `(V, G)` | `((V, G), X)` | `((V, G), L)` | `((V, G), L, X)` |
//!
//! `G` mirrors the selected argument(s): one gradient for an int `argnums`, an array `[G; N]` for
//! an array of indices (in the given order), a `Vec` for a `Vec`. `V` mirrors the `grad_states`
//! container (a single state, a `Vec`, a path-keyed map, nested maps).
//!
//! ```
//! use stategrad_core::{grad, ParamState, State, Tensor};
//! let w = ParamState::new(Tensor::new([1.0f32, 2.0]));
//! let loss = |x: Tensor| (&x * &w.value()).sum();
//! // V and G together, with the value:
//! let ((gw, gx), value) = grad(loss)
//!     .grad_states(w.clone())
//!     .argnums(0)
//!     .return_value()
//!     .call(Tensor::new([3.0f32, 4.0]))
//!     .unwrap();
//! assert_eq!(gw.to_string(), "[3. 4.]");
//! assert_eq!(gx.to_string(), "[1. 2.]");
//! assert_eq!(value.item().unwrap(), 11.0);
//! ```

pub mod engine;
pub mod params;
pub mod plugins;
mod selection;
// The structure traits live in the top-level `tree` module; `transform::tree` stays a path.
pub use crate::tree;

pub use engine::{jvp_pure, vjp_pure, Pullback, PureFn};
pub use params::{check_params_against, ParamKind, ParamSpec, ParamValue, Params};
pub use plugins::{
    grad_pure, jacobian_rows, GradPlugin, HessianPlugin, JacFwdPlugin, JacRevPlugin, Order,
    TransformOutput, TransformPlugin, VectorGradPlugin, VjpPlugin,
};
pub use selection::*;
pub use tree::{Arg, Args, OutTree, StateTree, Static, Tree};

use crate::error::{Error, Result};
use crate::state::{State, StateId};
use crate::tensor::Tensor;
use crate::trace::ExitPolicy;
use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

// ------------------------------------------------------------------ the wrapper

/// The state-aware wrapper every derivative transform is made of: it turns a stateful function
/// into a pure one (state values then selected arguments), hands it to a [`TransformPlugin`], and
/// formats the plugin's result by the return table. States written by the function keep their
/// new values; if anything fails, every state is restored.
///
/// Type parameters record the options so that the result type follows the table; build one with
/// [`grad`], [`vector_grad`], [`jacrev`], [`jacfwd`], [`hessian`] or
/// [`GradientTransform::new`] with your own plugin.
pub struct GradientTransform<
    F,
    A,
    O,
    S = NoStates,
    N = DefaultArg,
    X = NoAux,
    R = NoValue,
    K = First,
> {
    f: F,
    plugin: Arc<dyn TransformPlugin>,
    params: Params,
    sel: (S, N),
    check_states: bool,
    debug_nan: bool,
    _m: PhantomData<fn(A) -> (O, X, R, K)>,
}

impl<F, A, O, S: Clone, N: Clone, X, R, K> Clone for GradientTransform<F, A, O, S, N, X, R, K>
where
    F: Clone,
{
    fn clone(&self) -> Self {
        GradientTransform {
            f: self.f.clone(),
            plugin: self.plugin.clone(),
            params: self.params.clone(),
            sel: self.sel.clone(),
            check_states: self.check_states,
            debug_nan: self.debug_nan,
            _m: PhantomData,
        }
    }
}

// The `Fn(A) -> O` bound in the constructors lets the compiler learn the argument and output
// types from the closure at once, so `let g = grad(f).call(args)?;` infers with no annotations.
// It must be `Fn`, not `FnOnce`: a closure written inline takes its kind from the expected bound,
// so `FnOnce` would make `grad(|x: Tensor| ..).call(x)` fail (`call` needs `Fn`).
impl<F: Fn(A) -> O, A, O> GradientTransform<F, A, O> {
    /// Wrap `f` with a first-order transform plugin and its parameters.
    pub fn new(f: F, plugin: Arc<dyn TransformPlugin>, params: Params) -> Self {
        GradientTransform {
            f,
            plugin,
            params,
            sel: (NoStates, DefaultArg),
            check_states: true,
            debug_nan: false,
            _m: PhantomData,
        }
    }
}

impl<F, A, O, S, N, X, R, K> GradientTransform<F, A, O, S, N, X, R, K> {
    fn retype<S2, N2, X2, R2, K2>(
        self,
        states: impl FnOnce(S) -> S2,
        argnums: impl FnOnce(N) -> N2,
    ) -> GradientTransform<F, A, O, S2, N2, X2, R2, K2> {
        GradientTransform {
            f: self.f,
            plugin: self.plugin,
            params: self.params,
            sel: (states(self.sel.0), argnums(self.sel.1)),
            check_states: self.check_states,
            debug_nan: self.debug_nan,
            _m: PhantomData,
        }
    }

    /// Differentiate w.r.t. these states too (a state, a `Vec`, a path-keyed map, …).
    /// The result type follows the container, so an empty container gives an empty `V` (and, with
    /// `argnums` unset, no argument gradients) rather than switching to the no-states row. An
    /// empty container is not an error, as JAX returns an empty pytree:
    ///
    /// ```
    /// use stategrad_core::{grad, State, StateMap, Tensor};
    /// let f = |x: Tensor| x.square().sum();
    /// let x = Tensor::scalar(1.0f32);
    /// let v: Vec<Tensor> = grad(f).grad_states(Vec::<State>::new()).call(x.clone()).unwrap();
    /// assert!(v.is_empty());
    /// let (v, gx) = grad(f).grad_states(StateMap::new()).argnums(0).call(x).unwrap();
    /// assert!(v.is_empty());
    /// assert_eq!(gx.item().unwrap(), 2.0);
    /// ```
    pub fn grad_states<T: StateTree>(
        self,
        states: T,
    ) -> GradientTransform<F, A, O, WithStates<T>, N, X, R, K> {
        self.retype(|_| WithStates(states), |n| n)
    }

    /// Differentiate w.r.t. these positional arguments: an int gives one gradient, an array or
    /// `Vec` a collection in the given order.
    pub fn argnums<Spec: ArgnumSpec>(
        self,
        argnums: Spec,
    ) -> GradientTransform<F, A, O, S, Spec::Sel, X, R, K> {
        self.retype(|s| s, |_| argnums.into_sel())
    }

    /// The function returns `(value, aux)`; aux is passed through, not differentiated. The aux
    /// is any [`Tree`]: a tensor, a number, a string, a `Vec`, a map, an `Option`, or a tuple of
    /// up to four of these (nested tuples for more). Several aux items are one tuple after the
    /// value, `(value, (a, b, c))`, and come back as that tuple. A flat `(value, a, b)` is
    /// refused at compile time: the reference silently drops `b` there.
    ///
    /// ```
    /// use stategrad_core::{grad, State, Tensor};
    /// let w = State::new(Tensor::new([1.0f32, 2.0]));
    /// let loss = |x: Tensor| {
    ///     let pred = &x * &w.value();
    ///     // The value, then three aux items of different types in one tuple.
    ///     (pred.sum(), (pred.clone(), pred.max(), "weighted sum"))
    /// };
    /// let x = Tensor::new([3.0f32, 4.0]);
    /// let (g, (pred, top, label)) = grad(loss).has_aux().call(x.clone()).unwrap();
    /// assert_eq!(g.to_string(), "[1. 2.]");
    /// assert_eq!(pred.to_string(), "[3. 8.]");
    /// assert_eq!(top.item().unwrap(), 8.0);
    /// assert_eq!(label, "weighted sum");
    /// // With the states' gradients and the value: `((V, G), L, X)`, the aux still one tuple.
    /// let ((gw, gx), value, (_, _, label)) = grad(loss)
    ///     .grad_states(w.clone())
    ///     .argnums(0)
    ///     .has_aux()
    ///     .return_value()
    ///     .call(x)
    ///     .unwrap();
    /// assert_eq!(gw.to_string(), "[3. 4.]");
    /// assert_eq!(gx.to_string(), "[1. 2.]");
    /// assert_eq!(value.item().unwrap(), 11.0);
    /// assert_eq!(label, "weighted sum");
    /// ```
    pub fn has_aux(self) -> GradientTransform<F, A, O, S, N, WithAux, R, K> {
        self.retype(|s| s, |n| n)
    }

    /// Return the function's value too.
    pub fn return_value(self) -> GradientTransform<F, A, O, S, N, X, WithValue, K> {
        self.retype(|s| s, |n| n)
    }

    /// If false, grad states the function never touches get zero gradients instead of an error.
    pub fn check_states(mut self, check: bool) -> Self {
        self.check_states = check;
        self
    }

    /// Check every value of the computation for NaN/Inf and name the primitive that made it.
    pub fn debug_nan(mut self, on: bool) -> Self {
        self.debug_nan = on;
        self
    }

    /// Set a plugin parameter. The plugin checks them when the transform is called: a name it
    /// does not take or a value it cannot use is an [`Error::PluginParam`] from `call`.
    ///
    /// ```
    /// use stategrad_core::{jacrev, Error, Tensor};
    /// let f = |x: Tensor| x.square();
    /// let j = jacrev(f).param("chunk_size", 1).call(Tensor::new([1.0f32, 2.0])).unwrap();
    /// assert_eq!(j.shape(), &[2, 2]);
    /// let err = jacrev(f).param("chunk_size", "one").call(Tensor::new([1.0f32])).unwrap_err();
    /// assert!(matches!(err, Error::PluginParam { .. }));
    /// ```
    pub fn param(mut self, name: &str, value: impl Into<ParamValue>) -> Self {
        self.params.insert(name, value);
        self
    }

    /// Basis vectors per pass of a Jacobian (`jacrev`, `jacfwd`, `jacobian`, `hessian`):
    /// a chunk's pass holds `n` rows or columns at once, so `n` bounds memory; the default
    /// splits them into one chunk per rayon thread, run in parallel (one chunk when recorded
    /// under `jit` or another transform, where chunks would run one after another). The
    /// `chunk_size` parameter, typed: `0` is
    /// an [`Error::PluginParam`] from `call`, as is setting it on a transform that takes no
    /// chunks (`grad`).
    ///
    /// ```
    /// use stategrad_core::{grad, jacrev, Error, Tensor};
    /// let f = |x: Tensor| x.square();
    /// let j = jacrev(f).chunk_size(1).call(Tensor::new([1.0f32, 2.0])).unwrap();
    /// assert_eq!(j.to_vec::<f32>(), [2.0, 0.0, 0.0, 4.0]);
    /// assert!(matches!(
    ///     jacrev(f).chunk_size(0).call(Tensor::new([1.0f32])),
    ///     Err(Error::PluginParam { .. })
    /// ));
    /// let g = grad(|x: Tensor| x.sum()).chunk_size(2).call(Tensor::new([1.0f32]));
    /// assert!(matches!(g, Err(Error::PluginParam { .. })));
    /// ```
    pub fn chunk_size(self, n: usize) -> Self {
        self.param("chunk_size", i64::try_from(n).unwrap_or(i64::MAX))
    }

    /// The plugin's name.
    pub fn plugin_name(&self) -> &str {
        self.plugin.name()
    }
}

/// The order a marker stands for.
pub trait OrderMarker {
    /// The order.
    const ORDER: Order;
}
impl OrderMarker for First {
    const ORDER: Order = Order::First;
}
impl OrderMarker for Second {
    const ORDER: Order = Order::Second;
}

impl<F, A, O, S, N, X, R, K: OrderMarker> GradientTransform<F, A, O, S, N, X, R, K> {
    /// The selected argument indices and leaves, and the distinct grad states.
    fn prepare(&self, args: &A) -> Result<Prepared>
    where
        A: Args,
        (S, N): Selection<A, K>,
    {
        self.plugin.check_params(&self.params)?;
        let listed = self.sel.state_list();
        if let Some((_, s)) = listed.iter().find(|(_, s)| s.is_tree()) {
            return Err(s.tree_error("grad_states"));
        }
        let argnums = self.sel.argnums()?;
        // Leaves of the selected arguments (typed error for a non-differentiable one).
        let mut leaves = Vec::with_capacity(argnums.len());
        for &i in &argnums {
            let ls = args.arg_leaves(i)?;
            if let Some(t) = ls.iter().find(|t| !t.dtype().is_float()) {
                return Err(Error::NonDifferentiableArg {
                    argnum: i,
                    reason: format!(
                        "it holds a {} tensor, which is data; cast it with `astype` to differentiate, or leave it out of argnums",
                        t.dtype().name()
                    ),
                });
            }
            leaves.push(ls);
        }
        // One input per distinct state; a state listed twice shares its gradient.
        let mut unique: Vec<(String, State)> = Vec::new();
        let mut index: HashMap<StateId, usize> = HashMap::new();
        let slots: Vec<usize> = listed
            .iter()
            .map(|(label, s)| {
                *index.entry(s.id()).or_insert_with(|| {
                    unique.push((label.clone(), s.clone()));
                    unique.len() - 1
                })
            })
            .collect();
        if let Some((_, s)) = unique.iter().find(|(_, s)| !s.value().dtype().is_float()) {
            return Err(Error::UnsupportedDType {
                op: "grad_states",
                dtype: s.value().dtype().name(),
                expected: "float states (an integer or bool state is data, not differentiable)",
            });
        }
        Ok(Prepared {
            argnums,
            leaves,
            unique,
            slots,
        })
    }

    /// Build the pure function of (grad-state values, selected argument tensors) and run `body`
    /// on it and the current point, inside a frame that restores every state if anything fails.
    /// Returns `body`'s result and the function's aux from its (last) evaluation.
    fn run_pure<T>(
        &self,
        args: &A,
        prep: &Prepared,
        body: impl FnOnce(&PureFn<'_>, &[Tensor]) -> Result<T>,
    ) -> Result<(T, O::Aux)>
    where
        A: Args,
        F: Fn(A) -> O,
        O: FnOutput<X>,
    {
        self.run_pure_with(args, prep, |a| (self.f)(a).split(), body)
    }

    /// [`Self::run_pure`] with the function's evaluation (value and aux) given as `eval`.
    fn run_pure_with<T, Aux: Tree>(
        &self,
        args: &A,
        prep: &Prepared,
        eval: impl Fn(A) -> Result<(Tensor, Aux)>,
        body: impl FnOnce(&PureFn<'_>, &[Tensor]) -> Result<T>,
    ) -> Result<(T, Aux)>
    where
        A: Args,
    {
        let Prepared {
            argnums,
            leaves,
            unique,
            ..
        } = prep;
        let n_unique = unique.len();
        let (res, _) = crate::trace::with_states(HashMap::new(), ExitPolicy::KeepWrites, || {
            // Reading through `value()` lets enclosing transforms see these states.
            let mut inputs: Vec<Tensor> = unique.iter().map(|(_, s)| s.value()).collect();
            let counts: Vec<usize> = leaves.iter().map(Vec::len).collect();
            let mut ranges = Vec::with_capacity(argnums.len());
            for l in leaves {
                let start = inputs.len();
                inputs.extend(l.iter().cloned());
                ranges.push(start..inputs.len());
            }
            let aux_cell: RefCell<Option<Aux>> = RefCell::new(None);
            let pure = |inp: &[Tensor]| -> Result<Tensor> {
                if inp.len() != inputs.len() {
                    return Err(Error::MalformedPluginResult {
                        plugin: self.plugin.name().to_string(),
                        msg: format!(
                            "called the function with {} inputs, expected {}",
                            inp.len(),
                            inputs.len()
                        ),
                    });
                }
                let overrides: HashMap<StateId, Tensor> = unique
                    .iter()
                    .zip(inp)
                    .map(|((_, s), t)| (s.id(), t.clone()))
                    .collect();
                let mut a = args.clone();
                let mut off = n_unique;
                for (k, &i) in argnums.iter().enumerate() {
                    let mut it = inp[off..off + counts[k]].iter().cloned();
                    a.replace_arg(i, &mut it);
                    off += counts[k];
                }
                let ((value, aux), touched) =
                    crate::trace::with_states(overrides, ExitPolicy::KeepWrites, || eval(a))?;
                if self.check_states {
                    for (label, s) in unique {
                        if !touched.iter().any(|(t, _)| t.same(s)) {
                            let name = match s.name() {
                                Some(n) if !label.is_empty() => format!("`{n}` at {label}"),
                                Some(n) => format!("`{n}`"),
                                None if !label.is_empty() => {
                                    format!("{} at {label}", s.kind().class_name())
                                }
                                None => s.label(),
                            };
                            return Err(Error::UnusedGradState { state: name });
                        }
                    }
                }
                *aux_cell.borrow_mut() = Some(aux);
                Ok(value)
            };
            let mut labels = engine::default_labels(n_unique, &ranges);
            for (l, (label, s)) in labels.iter_mut().zip(unique) {
                *l = match (label.is_empty(), s.name()) {
                    (false, _) => label.clone(),
                    (true, Some(n)) => format!("`{n}`"),
                    (true, None) => s.label(),
                };
            }
            for (k, &i) in argnums.iter().enumerate() {
                for l in labels[ranges[k].clone()].iter_mut() {
                    *l = l.replacen(&format!("arg {k}"), &format!("argument {i}"), 1);
                }
            }
            let pure_fn = PureFn {
                f: &pure,
                n_states: n_unique,
                arg_ranges: ranges,
                debug_nan: self.debug_nan,
                labels,
            };
            let r = body(&pure_fn, &inputs)?;
            let aux = aux_cell
                .take()
                .ok_or_else(|| Error::MalformedPluginResult {
                    plugin: self.plugin.name().to_string(),
                    msg: "the plugin never evaluated the function".into(),
                })?;
            Ok((r, aux))
        })?;
        Ok((
            res.0,
            res.1.map_tensors(&mut |t| crate::trace::strip_dead(t)),
        ))
    }

    fn call_raw(&self, args: A) -> Result<(<(S, N) as Selection<A, K>>::Grads, Tensor, O::Aux)>
    where
        A: Args,
        F: Fn(A) -> O,
        O: FnOutput<X>,
        (S, N): Selection<A, K>,
    {
        if self.plugin.order() != K::ORDER {
            return Err(Error::Unsupported(format!(
                "plugin `{}` computes {:?}-order results but this transform expects {:?}-order",
                self.plugin.name(),
                self.plugin.order(),
                K::ORDER
            )));
        }
        let prep = self.prepare(&args)?;
        let (out, aux) = self.run_pure(&args, &prep, |pure_fn, inputs| {
            let out = self.plugin.transform(pure_fn, inputs, &self.params)?;
            self.check_plugin_output(&out, inputs)?;
            Ok(out)
        })?;
        let raw = RawResult {
            args,
            argnums: prep.argnums,
            grads: out.grads.iter().map(crate::trace::strip_dead).collect(),
            state_slots: prep.slots,
            n_unique: prep.unique.len(),
            arg_leaf_counts: prep.leaves.iter().map(Vec::len).collect(),
            value: crate::trace::strip_dead(&out.value),
        };
        let value = raw.value.clone();
        let g = self.sel.assemble(raw)?;
        Ok((g, value, aux))
    }

    /// A malformed plugin result (count, shapes, dtypes) is a typed error, not a panic later.
    fn check_plugin_output(&self, out: &TransformOutput, inputs: &[Tensor]) -> Result<()> {
        let malformed = |msg: String| Error::MalformedPluginResult {
            plugin: self.plugin.name().to_string(),
            msg,
        };
        let expected = match K::ORDER {
            Order::First => inputs.len(),
            Order::Second => inputs.len() * inputs.len(),
        };
        if out.grads.len() != expected {
            return Err(malformed(format!(
                "{} gradients for {} inputs",
                out.grads.len(),
                inputs.len()
            )));
        }
        for (k, g) in out.grads.iter().enumerate() {
            let x = &inputs[k % inputs.len().max(1)];
            if !g.shape().ends_with(x.shape()) || g.dtype() != x.dtype() {
                return Err(malformed(format!(
                    "gradient {k} has shape {} and dtype {} for an input of shape {} and dtype {}",
                    g.shape_display(),
                    g.dtype().name(),
                    x.shape_display(),
                    x.dtype().name()
                )));
            }
        }
        Ok(())
    }

    /// Forward mode, state-aware: the value and `J · tangents`, where `tangents` has one tensor
    /// per input in the order the transform differentiates: the distinct `grad_states` (in the
    /// container's order) then the tensors of the `argnums` arguments. With no options, the
    /// input is argument 0. Each tangent has its input's shape.
    ///
    /// ```
    /// use stategrad_core::{transform::jvp, State, Tensor};
    /// let w = State::new(Tensor::new([1.0f32, 2.0]));
    /// let f = |x: Tensor| (&x * &w.value()).sum();
    /// let (y, dy) = jvp(f)
    ///     .grad_states(w.clone())
    ///     .argnums(0)
    ///     .call_jvp(Tensor::new([3.0f32, 4.0]), &[Tensor::new([1.0f32, 0.0]), Tensor::new([0.0f32, 1.0])])
    ///     .unwrap();
    /// assert_eq!(y.item().unwrap(), 11.0);
    /// assert_eq!(dy.item().unwrap(), 3.0 + 2.0); // x·dw + w·dx
    /// ```
    pub fn call_jvp(&self, args: A, tangents: &[Tensor]) -> Result<(Tensor, Tensor)>
    where
        A: Args,
        F: Fn(A) -> O,
        O: FnOutput<X>,
        (S, N): Selection<A, K>,
    {
        let prep = self.prepare(&args)?;
        let ((value, out_tangent), _) = self.run_pure(&args, &prep, |pure_fn, inputs| {
            jvp_pure(pure_fn, inputs, tangents)
        })?;
        Ok((
            crate::trace::strip_dead(&value),
            crate::trace::strip_dead(&out_tangent),
        ))
    }
}

impl<F, A, O, S, N, K: OrderMarker> GradientTransform<F, A, O, S, N, NoAux, NoValue, K> {
    /// Jacobians of a function whose output is a tree of tensors (a tuple, `Vec`, array or map of
    /// them): the result has the output's structure outermost, and at each leaf the structure
    /// the return table gives for that output (`V`, `G` or `(V, G)`), each block with the leaf's
    /// shape first (JAX's layout; the reference cannot do this with states).
    ///
    /// ```
    /// use stategrad_core::{jacrev, State, Tensor};
    /// let w = State::new(Tensor::new([1.0f32, 2.0]));
    /// let f = |x: Tensor| (&x * &w.value(), x.sum());
    /// let (j_prod, j_sum) = jacrev(f).grad_states(w.clone()).call_tree(Tensor::new([3.0f32, 4.0])).unwrap();
    /// assert_eq!(j_prod.to_string(), "[[3. 0.]\n [0. 4.]]"); // d(x*w)/dw
    /// assert_eq!(j_sum.shape(), &[2]); // d(sum x)/dw: zeros of w's shape
    /// ```
    pub fn call_tree(&self, args: A) -> Result<O::Out<<(S, N) as Selection<A, K>>::Grads>>
    where
        A: Args,
        F: Fn(A) -> O,
        O: OutTree,
        (S, N): Selection<A, K>,
    {
        let prep = self.prepare(&args)?;
        let template: RefCell<Option<O>> = RefCell::new(None);
        // The pure function returns every leaf flattened and joined; its Jacobian is split back.
        let eval = |a: A| -> Result<(Tensor, ())> {
            let out = (self.f)(a);
            let flat: Vec<Tensor> = out
                .leaves()
                .iter()
                .map(|t| t.try_reshape_to(&[t.numel()]))
                .collect::<Result<_>>()?;
            *template.borrow_mut() = Some(out);
            let refs: Vec<&Tensor> = flat.iter().collect();
            if refs.is_empty() {
                return Ok((Tensor::zeros(&[0]), ()));
            }
            Ok((Tensor::try_concat(&refs, 0)?, ()))
        };
        let (out, ()) = self.run_pure_with(&args, &prep, eval, |pure_fn, inputs| {
            let out = self.plugin.transform(pure_fn, inputs, &self.params)?;
            self.check_plugin_output(&out, inputs)?;
            Ok(out)
        })?;
        let template = template
            .into_inner()
            .ok_or_else(|| Error::MalformedPluginResult {
                plugin: self.plugin.name().to_string(),
                msg: "the plugin never evaluated the function".into(),
            })?;
        let leaves = template.leaves();
        let mut per_leaf = Vec::with_capacity(leaves.len());
        let mut offset = 0;
        for leaf in &leaves {
            let n = leaf.numel();
            let grads = out
                .grads
                .iter()
                .map(|g| {
                    // Each result starts with the flat output axis (or the two of a Hessian block
                    // are split the same way on the first axis).
                    let rest = g.shape()[1..].to_vec();
                    let mut shape = leaf.shape().to_vec();
                    shape.extend_from_slice(&rest);
                    g.try_slice_axis(0, offset, offset + n)?
                        .try_reshape_to(&shape)
                })
                .collect::<Result<Vec<_>>>()?;
            offset += n;
            let raw = RawResult {
                args: args.clone(),
                argnums: prep.argnums.clone(),
                grads: grads.iter().map(crate::trace::strip_dead).collect(),
                state_slots: prep.slots.clone(),
                n_unique: prep.unique.len(),
                arg_leaf_counts: prep.leaves.iter().map(Vec::len).collect(),
                value: crate::trace::strip_dead(leaf),
            };
            per_leaf.push(self.sel.assemble(raw)?);
        }
        Ok(template.build(&mut per_leaf.into_iter()))
    }
}

/// The selection of one call, resolved.
struct Prepared {
    argnums: Vec<usize>,
    leaves: Vec<Vec<Tensor>>,
    unique: Vec<(String, State)>,
    slots: Vec<usize>,
}

macro_rules! call_row {
    ($x:ty, $r:ty, |$g:ident, $l:ident, $a:ident| $out:ty => $make:expr) => {
        impl<F, A, O, S, N, K: OrderMarker> GradientTransform<F, A, O, S, N, $x, $r, K>
        where
            A: Args,
            (S, N): Selection<A, K>,
        {
            /// Run the transform on `args` (a tuple of positional arguments, or a lone
            /// [`Tensor`]); the result follows the return table (see the [module docs](self)).
            ///
            /// Errors (typed, with every state restored): bad `argnums`, a non-differentiable
            /// selected argument, a grad state the function never touched (unless
            /// `check_states(false)`), a non-scalar output for `grad`, a shape error or panic
            /// inside the function, a malformed plugin result.
            #[allow(unused_variables)]
            pub fn call(&self, args: A) -> Result<$out>
            where
                F: Fn(A) -> O,
                O: FnOutput<$x>,
            {
                let ($g, $l, $a) = self.call_raw(args)?;
                Ok($make)
            }
        }
    };
}
type GradsOf<S, N, A, K> = <(S, N) as Selection<A, K>>::Grads;
call_row!(NoAux, NoValue, |g, l, a| GradsOf<S, N, A, K> => g);
call_row!(WithAux, NoValue, |g, l, a| (GradsOf<S, N, A, K>, <O as FnOutput<WithAux>>::Aux) => (g, a));
call_row!(NoAux, WithValue, |g, l, a| (GradsOf<S, N, A, K>, Tensor) => (g, l));
call_row!(WithAux, WithValue, |g, l, a| (GradsOf<S, N, A, K>, Tensor, <O as FnOutput<WithAux>>::Aux) => (g, l, a));

// ------------------------------------------------------------------ built-in transforms

/// `grad`: the gradient of a scalar function w.r.t. arguments and/or states.
///
/// ```
/// use stategrad_core::{grad, Tensor};
/// let loss_fn = |(x, y, scale): (Tensor, Tensor, f64)| scale * ((&x - &y).square()).sum();
/// let x = Tensor::new([1.0f32, 2.0, 3.0]);
/// let y = Tensor::new([0.5f32, 1.5, 2.5]);
/// let gx = grad(loss_fn).argnums(0).call((x.clone(), y.clone(), 2.0)).unwrap();
/// assert_eq!(gx.to_string(), "[2. 2. 2.]");
/// let [gx, gy] = grad(loss_fn).argnums([0, 1]).call((x, y, 2.0)).unwrap();
/// assert_eq!(gy.to_string(), "[-2. -2. -2.]");
/// ```
pub fn grad<F: Fn(A) -> O, A, O>(f: F) -> GradientTransform<F, A, O> {
    GradientTransform::new(f, Arc::new(GradPlugin), Params::new())
}

/// `vector_grad`: the VJP with an all-ones cotangent (the gradient of `sum(f)`), for
/// vector-valued functions. Not the Jacobian diagonal.
pub fn vector_grad<F: Fn(A) -> O, A, O>(f: F) -> GradientTransform<F, A, O> {
    GradientTransform::new(f, Arc::new(VectorGradPlugin), Params::new())
}

/// `vjp`: the vector-Jacobian product with a given output cotangent, w.r.t. arguments and/or
/// `grad_states`, with the same return table as [`grad`] (`.return_value()` gives the primal
/// output). The cotangent must have the output's shape.
///
/// ```
/// use stategrad_core::{transform::vjp, State, Tensor};
/// let s = State::new(Tensor::new([1.0f32, 2.0]));
/// let f = |x: Tensor| &x * &s.value();
/// let ((gs, gx), y) = vjp(f, Tensor::new([1.0f32, 10.0]))
///     .grad_states(s.clone())
///     .argnums(0)
///     .return_value()
///     .call(Tensor::new([3.0f32, 4.0]))
///     .unwrap();
/// assert_eq!(gs.to_string(), "[ 3. 40.]");
/// assert_eq!(gx.to_string(), "[ 1. 20.]");
/// assert_eq!(y.to_string(), "[3. 8.]");
/// ```
pub fn vjp<F: Fn(A) -> O, A, O>(f: F, cotangent: Tensor) -> GradientTransform<F, A, O> {
    GradientTransform::new(f, Arc::new(VjpPlugin { cotangent }), Params::new())
}

/// `jvp`: forward mode w.r.t. arguments and/or `grad_states`; configure it like [`grad`] and
/// call [`GradientTransform::call_jvp`] with one tangent per input.
pub fn jvp<F: Fn(A) -> O, A, O>(f: F) -> GradientTransform<F, A, O> {
    GradientTransform::new(f, Arc::new(GradPlugin), Params::new())
}

/// `jacrev`: the Jacobian by reverse mode, output dims first then each input's dims.
pub fn jacrev<F: Fn(A) -> O, A, O>(f: F) -> GradientTransform<F, A, O> {
    GradientTransform::new(f, Arc::new(JacRevPlugin), Params::new())
}

/// `jacobian`: an alias of [`jacrev`].
pub fn jacobian<F: Fn(A) -> O, A, O>(f: F) -> GradientTransform<F, A, O> {
    jacrev(f)
}

/// `jacfwd`: the Jacobian by forward mode (same layout and values as [`jacrev`]).
pub fn jacfwd<F: Fn(A) -> O, A, O>(f: F) -> GradientTransform<F, A, O> {
    GradientTransform::new(f, Arc::new(JacFwdPlugin), Params::new())
}

/// `hessian`: second derivatives (`jacfwd(jacrev)` in the reference; here the Jacobian of the
/// reverse-mode Jacobian). Blocks per pair of inputs: of one argument a tensor of shape
/// `out + in + in`; of states `{outer: {inner: block}}` with `block` of shape
/// `outer.shape + inner.shape`. With both `grad_states` and `argnums` (which the reference
/// refuses) the result is a [`HessianBlocks`] holding all four families of blocks.
pub fn hessian<F: Fn(A) -> O, A, O>(
    f: F,
) -> GradientTransform<F, A, O, NoStates, DefaultArg, NoAux, NoValue, Second> {
    GradientTransform {
        f,
        plugin: Arc::new(HessianPlugin),
        params: Params::new(),
        sel: (NoStates, DefaultArg),
        check_states: true,
        debug_nan: false,
        _m: PhantomData,
    }
}
