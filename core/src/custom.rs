//! Functions with their own derivative: [`custom_vjp`] (JAX's `jax.custom_vjp`) and
//! [`custom_jvp`] (JAX's `jax.custom_jvp`, a forward-mode rule that reverse mode transposes).
//!
//! A custom function is one new primitive. Its forward function runs on *detached* copies of its
//! inputs, so the operations inside it are not recorded by any transform: the user's VJP rule
//! replaces their derivative. Every transform then treats the function as it treats a built-in
//! operation:
//!
//! - `grad`, `vector_grad`, `vjp`, `jacrev` call the rule with the output cotangent `g`;
//! - `jvp` and `jacfwd` transpose the rule (it is linear in `g`), which works because the rule is
//!   written with ordinary, recorded tensor operations;
//! - `hessian` and `grad(grad(..))` differentiate the rule itself: the inputs, the output and `g`
//!   the rule sees are tagged by the enclosing transforms, so its operations are recorded;
//! - `jit` records the function as one step and calls the forward function on every replay (it
//!   is never fused nor lowered to the arena, so its body may even read data: `to_vec`, `item`).
//!   The trace runs the forward on abstract inputs to learn its output's shape; a forward that
//!   reads data is instead called once on zeros of its inputs' shapes during the trace;
//! - `vmap` maps it example by example, or in one call on the whole batch for functions declared
//!   [`CustomFn::vectorized`].
//!
//! Batched Jacobians pull a chunk of cotangent rows back in one pass; the rule never sees that
//! batch: it is traced once with `g` of the output's shape and run over the chunk by the batch
//! rules of the operations it uses (a rule that reads data is called once per row).
//!
//! Requirements: the forward function is a pure function of its inputs (tensors it captures are
//! constants; reading a traced value or a state is an error, writing a state is not supported),
//! and the rule, pure too (it is traced once per signature and the trace is reused, so host
//! state it reads, a `Cell` or a counter, is frozen at the first trace), returns one cotangent
//! per input, of the input's shape, written with tensor operations (reading the data of `g` or of the inputs works eagerly, but not under `jit` or
//! forward mode). A rule or forward function that returns an error, raises one, or panics makes
//! the call return a typed [`Error`]; states are restored as for any failing call.

use crate::error::{Error, Result};
use crate::prim::{self, Primitive};
use crate::tensor::Tensor;
use crate::trace;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

type ForwardFn = dyn Fn(&[Tensor]) -> Result<Tensor> + Send + Sync;
type RuleFn = dyn Fn(&VjpArgs<'_>) -> Result<Vec<Tensor>> + Send + Sync;
type JvpFn = dyn Fn(&JvpArgs<'_>) -> Result<Tensor> + Send + Sync;

/// The derivative rule of a custom function.
#[derive(Clone)]
enum Rule {
    Vjp(Arc<RuleFn>),
    Jvp(Arc<JvpFn>),
}

/// What a VJP rule of [`custom_vjp`] sees: the inputs, the output and its cotangent `g` (of the
/// output's shape and dtype).
///
/// Under higher-order transforms these tensors are tagged, so operations on them are recorded:
/// write the rule with tensor operations and it can be differentiated again.
pub struct VjpArgs<'a> {
    inputs: &'a [Tensor],
    output: &'a Tensor,
    g: &'a Tensor,
    needs: &'a [bool],
}

impl<'a> VjpArgs<'a> {
    /// The inputs the function was called with.
    pub fn inputs(&self) -> &'a [Tensor] {
        self.inputs
    }
    /// Input `i`. Panics if there is no such input (the call then returns [`Error::Panicked`]).
    pub fn input(&self, i: usize) -> &'a Tensor {
        &self.inputs[i]
    }
    /// The function's output (the forward value at these inputs).
    pub fn output(&self) -> &'a Tensor {
        self.output
    }
    /// The cotangent of the output.
    pub fn g(&self) -> &'a Tensor {
        self.g
    }
    /// Whether the cotangent of input `i` is used: a rule may return any tensor of the right
    /// shape (zeros, say) for an input whose cotangent is not needed, and skip its work.
    pub fn needs(&self, i: usize) -> bool {
        self.needs.get(i).copied().unwrap_or(false)
    }
}

/// What a JVP rule of [`custom_jvp`] sees: the inputs, the output and one tangent per input (of
/// the input's shape; zeros for inputs no transform differentiates).
pub struct JvpArgs<'a> {
    inputs: &'a [Tensor],
    output: &'a Tensor,
    tangents: &'a [Tensor],
}

impl<'a> JvpArgs<'a> {
    /// The inputs the function was called with.
    pub fn inputs(&self) -> &'a [Tensor] {
        self.inputs
    }
    /// Input `i`. Panics if there is no such input (the call then returns [`Error::Panicked`]).
    pub fn input(&self, i: usize) -> &'a Tensor {
        &self.inputs[i]
    }
    /// The function's output (the forward value at these inputs).
    pub fn output(&self) -> &'a Tensor {
        self.output
    }
    /// The tangents, one per input.
    pub fn tangents(&self) -> &'a [Tensor] {
        self.tangents
    }
    /// The tangent of input `i`.
    pub fn tangent(&self, i: usize) -> &'a Tensor {
        &self.tangents[i]
    }
}

/// A function with a user-defined derivative, made by [`custom_vjp`] or [`custom_jvp`].
///
/// Cheap to clone (one shared primitive) and `Send + Sync`. Clones are the same function: `jit`
/// may merge two calls of it on the same inputs.
#[derive(Clone)]
pub struct CustomFn {
    prim: Arc<CustomPrim>,
}

/// Define `forward` with its own reverse-mode derivative `rule` (JAX's `custom_vjp`).
///
/// - `name` names the function in errors and `debug_nan` reports.
/// - `forward(inputs)` computes the output from the inputs with ordinary tensor operations (or
///   any Rust code): it runs on detached inputs, so none of its operations is differentiated.
/// - `rule(&args)` returns the cotangent of every input, in order, each of its input's shape, from
///   [`VjpArgs::g`] (the output's cotangent), [`VjpArgs::inputs`] and [`VjpArgs::output`].
///
/// A numerically stable `softplus(x) = log(1 + e^x)` whose gradient `sigmoid(x)` stays finite
/// where the naive one overflows:
///
/// ```
/// use stategrad_core::{custom_vjp, grad, Tensor};
/// let softplus = custom_vjp(
///     "softplus",
///     // max(x, 0) + log(1 + e^-|x|)
///     |x: &[Tensor]| Ok(x[0].relu() + ((-x[0].abs()).exp() + 1.0).log()),
///     |a| Ok(vec![a.g() * a.input(0).sigmoid()]),
/// );
/// let x = Tensor::new([100.0f32, 0.0]);
/// assert_eq!(softplus.call(&[&x]).unwrap().to_string(), "[100.          0.6931472]");
/// let g = grad(|x: Tensor| softplus.apply(&[&x]).sum()).call(x).unwrap();
/// assert_eq!(g.to_string(), "[1.  0.5]");
/// // The naive composition's gradient at 100 is NaN (inf / inf).
/// let naive = grad(|x: Tensor| (x.exp() + 1.0).log().sum()).call(Tensor::new([100.0f32])).unwrap();
/// assert!(naive.to_vec::<f32>()[0].is_nan());
/// ```
///
/// A straight-through estimator: round in the forward pass, identity in the backward pass:
///
/// ```
/// use stategrad_core::{custom_vjp, grad, Tensor};
/// let st_round = custom_vjp(
///     "st_round",
///     |x: &[Tensor]| {
///         let v: Vec<f64> = x[0].to_vec::<f64>().iter().map(|v| v.round()).collect();
///         Ok(Tensor::from_vec(v, x[0].shape())?.cast(x[0].dtype()))
///     },
///     |a| Ok(vec![a.g().clone()]),
/// );
/// let w = Tensor::new([1.0f32, -2.0, 3.0]);
/// let f = |x: Tensor| (st_round.apply(&[&x]) * &w).sum();
/// assert_eq!(f(Tensor::new([0.4f32, 1.6, -0.7])).item().unwrap(), -7.0);
/// assert_eq!(grad(f).call(Tensor::new([0.4f32, 1.6, -0.7])).unwrap().to_string(), "[ 1. -2.  3.]");
/// ```
pub fn custom_vjp<F, R>(name: &'static str, forward: F, rule: R) -> CustomFn
where
    F: Fn(&[Tensor]) -> Result<Tensor> + Send + Sync + 'static,
    R: Fn(&VjpArgs<'_>) -> Result<Vec<Tensor>> + Send + Sync + 'static,
{
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    CustomFn {
        prim: Arc::new(CustomPrim {
            name,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            forward: Arc::new(forward),
            rule: Rule::Vjp(Arc::new(rule)),
            vectorized: false,
        }),
    }
}

/// Define `forward` with its own forward-mode derivative `rule` (JAX's `custom_jvp`).
///
/// `rule(&args)` returns the output's tangent from the inputs' tangents ([`JvpArgs::tangent`]);
/// it must be linear in the tangents and written with tensor operations. Reverse mode (`grad`,
/// `jacrev`, ...) transposes it: the rule is recorded at traced tangents and pulled back, so one
/// rule serves every transform, and second derivatives differentiate it.
///
/// ```
/// use stategrad_core::{custom_jvp, grad, jacfwd, Tensor};
/// // sqrt with a derivative that stays finite at 0 (a clamped 1 / (2 sqrt(x))).
/// let safe_sqrt = custom_jvp(
///     "safe_sqrt",
///     |x: &[Tensor]| Ok(x[0].sqrt()),
///     |a| Ok(a.tangent(0) / (a.output().maximum_scalar(0.0625) * 2.0)),
/// );
/// let g = grad(|x: Tensor| safe_sqrt.apply(&[&x]).sum()).call(Tensor::new([0.0f32, 4.0])).unwrap();
/// assert_eq!(g.to_vec::<f32>(), vec![8.0, 0.25]);
/// let j = jacfwd(|x: Tensor| safe_sqrt.apply(&[&x])).call(Tensor::new([4.0f32])).unwrap();
/// assert_eq!(j.to_string(), "[[0.25]]");
/// ```
pub fn custom_jvp<F, R>(name: &'static str, forward: F, rule: R) -> CustomFn
where
    F: Fn(&[Tensor]) -> Result<Tensor> + Send + Sync + 'static,
    R: Fn(&JvpArgs<'_>) -> Result<Tensor> + Send + Sync + 'static,
{
    let mut f = custom_vjp(name, forward, |_: &VjpArgs<'_>| Ok(Vec::new()));
    Arc::get_mut(&mut f.prim)
        .expect("a new custom function is not shared")
        .rule = Rule::Jvp(Arc::new(rule));
    f
}

impl CustomFn {
    /// Apply the function to `inputs`, recording it (as one operation) on every transform that
    /// sees them.
    ///
    /// Errors: those of the forward function (its panics become [`Error::Panicked`]), and
    /// [`Error::Unsupported`] if it used a traced value it did not receive as an input (a
    /// captured tensor of an enclosing transform, a state: pass such values as inputs).
    pub fn call(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        prim::apply(self.prim.clone(), inputs)
    }

    /// Infallible form of [`CustomFn::call`], like the tensor operators: an error is raised
    /// and comes back as `Err` from the enclosing transform (or panics outside transforms).
    #[track_caller]
    pub fn apply(&self, inputs: &[&Tensor]) -> Tensor {
        match self.call(inputs) {
            Ok(t) => t,
            Err(e) => crate::panics::raise(e),
        }
    }

    /// The name given to [`custom_vjp`].
    pub fn name(&self) -> &'static str {
        self.prim.name
    }

    /// Declare that the forward function and the rule accept inputs with extra leading
    /// dimensions and broadcast over them (numpy style, as elementwise functions do): `vmap`
    /// then calls them once on the whole batch instead of once per example.
    ///
    /// ```
    /// use stategrad_core::{custom_vjp, vmap, Tensor};
    /// let cube = custom_vjp("cube", |x: &[Tensor]| Ok(x[0].powf(3.0)),
    ///     |a| Ok(vec![a.g() * a.input(0).square() * 3.0]))
    ///     .vectorized();
    /// let ys = vmap(|x: Tensor| cube.apply(&[&x])).call(Tensor::new([[1.0f32, 2.0], [3.0, 4.0]]));
    /// assert_eq!(ys.unwrap().to_string(), "[[ 1.  8.]\n [27. 64.]]");
    /// ```
    pub fn vectorized(self) -> CustomFn {
        CustomFn {
            prim: Arc::new(CustomPrim {
                vectorized: true,
                ..(*self.prim).clone()
            }),
        }
    }
}

impl fmt::Debug for CustomFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.prim, f)
    }
}

/// The primitive behind a [`CustomFn`].
#[derive(Clone)]
struct CustomPrim {
    name: &'static str,
    /// Unique per definition: `jit`'s common-subexpression elimination keys steps by their
    /// `Debug` text, and two custom functions may share a name.
    id: u64,
    forward: Arc<ForwardFn>,
    rule: Rule,
    vectorized: bool,
}

impl fmt::Debug for CustomPrim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CustomFn({:?}, #{}{})",
            self.name,
            self.id,
            if self.vectorized { ", vectorized" } else { "" }
        )
    }
}

impl CustomPrim {
    /// Run user code, turning a raised error back into itself and any other panic into
    /// [`Error::Panicked`] naming the function.
    fn guarded<T>(&self, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        crate::panics::catching(|| match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(payload) => Err(match crate::panics::from_panic(payload) {
                Error::Panicked(msg) => {
                    Error::Panicked(format!("{what} of custom function `{}`: {msg}", self.name))
                }
                e => e,
            }),
        })
    }

    /// The user's rule at one cotangent of the output's shape, checked.
    fn rule_once(
        &self,
        inputs: &[Tensor],
        output: &Tensor,
        g: &Tensor,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        let args = VjpArgs {
            inputs,
            output,
            g,
            needs,
        };
        let Rule::Vjp(rule) = &self.rule else {
            return self.transpose_jvp(inputs, output, g, needs);
        };
        let cots = self.guarded("the VJP rule", || rule(&args))?;
        if cots.len() != inputs.len() {
            return Err(Error::InvalidArgument {
                op: self.name,
                msg: format!(
                    "the VJP rule returned {} cotangent(s) for {} input(s)",
                    cots.len(),
                    inputs.len()
                ),
            });
        }
        cots.into_iter()
            .zip(inputs)
            .zip(needs)
            .map(|((c, x), &need)| {
                if c.shape() != x.shape() {
                    return Err(Error::ShapeMismatch {
                        op: self.name,
                        lhs: x.shape().into(),
                        rhs: c.shape().into(),
                    });
                }
                Ok(need.then(|| c.cast(x.dtype())))
            })
            .collect()
    }
}

impl CustomPrim {
    /// The VJP of a JVP rule: record the rule at traced zero tangents, then pull `g` back to
    /// them through the recorded, linear operations.
    fn transpose_jvp(
        &self,
        inputs: &[Tensor],
        output: &Tensor,
        g: &Tensor,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        let Rule::Jvp(rule) = &self.rule else {
            unreachable!("transpose_jvp of a VJP rule")
        };
        let guard = trace::push_frame(true, trace::ExitPolicy::KeepWrites, Default::default());
        let level = guard.level();
        let mut tangents = Vec::with_capacity(inputs.len());
        let mut nodes = Vec::new();
        for (x, &need) in inputs.iter().zip(needs) {
            let zero = Tensor::try_full_dtype(x.shape(), 0.0, x.dtype())?;
            if need {
                let (t, n) = guard.input(&zero);
                nodes.push(n);
                tangents.push(t);
            } else {
                tangents.push(zero);
            }
        }
        let args = JvpArgs {
            inputs,
            output,
            tangents: &tangents,
        };
        let res = self.guarded("the JVP rule", || rule(&args));
        let frame = guard.close(res.is_ok());
        let t_out = res?;
        if t_out.shape() != output.shape() {
            return Err(Error::ShapeMismatch {
                op: self.name,
                lhs: output.shape().into(),
                rhs: t_out.shape().into(),
            });
        }
        let mut cots = match trace::node_of(&t_out, level) {
            Some(out) => {
                let opts = trace::BackwardOpts::default();
                let g = g.cast(t_out.dtype());
                trace::backward(&frame.tape, out, g, &nodes, opts)?.into_iter()
            }
            // The output's tangent does not depend on the tangents: zero cotangents.
            None => vec![None; nodes.len()].into_iter(),
        };
        Ok(inputs
            .iter()
            .zip(needs)
            .map(|(x, &need)| {
                need.then(|| cots.next().flatten())
                    .flatten()
                    .map(|c| c.cast(x.dtype()))
            })
            .collect())
    }
}

impl Primitive for CustomPrim {
    fn name(&self) -> &'static str {
        self.name
    }
    fn splits_work(&self, _: &[&[usize]], out: &[usize]) -> bool {
        // Its forward is user code of elementwise size, as a guess.
        crate::prim::splits_elementwise(out)
    }
    fn user_rules(&self) -> bool {
        true
    }
    /// The user's forward decides what it accepts (integer data included).
    fn check_dtypes(&self, _: &[crate::tensor::DType]) -> Result<()> {
        Ok(())
    }

    /// The user's forward, run opaquely: on abstract inputs it runs abstractly too (only
    /// abstract rules), so the output's aval comes without a kernel. A forward that reads its
    /// inputs' data cannot run so; it is then called once on zeros of the inputs' shapes and
    /// dtypes (JAX would refuse it; here such a forward, like straight-through rounding, keeps
    /// working under `jit`).
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<prim::Aval> {
        match self.forward(inputs) {
            Err(Error::TracedValueRead { .. }) => {
                let zeros: Vec<Tensor> = inputs
                    .iter()
                    .map(|t| Tensor::try_full_dtype(t.shape(), 0.0, t.dtype()))
                    .collect::<Result<_>>()?;
                let refs: Vec<&Tensor> = zeros.iter().collect();
                self.forward(&refs)
            }
            r => r,
        }
        .map(|out| prim::Aval::like(&out))
    }

    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let detached: Vec<Tensor> = inputs.iter().map(|t| t.untagged()).collect();
        // Opaque to every transform, `jit` included: constants inside compute, never staged.
        let out =
            trace::concrete(|| self.guarded("the forward function", || (self.forward)(&detached)))?;
        let out = trace::strip_dead(&out);
        if !out.tags().is_empty() {
            return Err(Error::Unsupported(format!(
                "the forward function of custom function `{}` used a traced value it did not \
                 receive as an input (a tensor captured from an enclosing transform, or a state); \
                 pass that value as an input",
                self.name
            )));
        }
        Ok(out)
    }

    fn batch(
        &self,
        this: &Arc<dyn Primitive>,
        inputs: &[&Tensor],
        batched: &[bool],
    ) -> Result<Tensor> {
        if self.vectorized {
            prim::batch_broadcasting(this, inputs, batched)
        } else {
            prim::batch_by_loop(this, inputs, batched)
        }
    }

    fn vjp(
        &self,
        inputs: &[&Tensor],
        output: &Tensor,
        g: &Tensor,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        let owned: Vec<Tensor> = inputs.iter().map(|&t| t.clone()).collect();
        if matches!(self.rule, Rule::Jvp(_)) {
            return self.transpose_jvp(&owned, output, g, needs);
        }
        self.rule_once(&owned, output, g, needs)
    }
}
