//! The type-level options of [`GradientTransform`](super::GradientTransform): which arguments
//! and states are differentiated (`argnums`, `grad_states`), whether the function returns aux
//! data, the value, first or second order; and the result types they select (the return
//! table, checked by the compiler).

use super::*;

// ------------------------------------------------------------------ type-level options

/// No `grad_states` given.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoStates;
/// `grad_states` given as `S`.
#[derive(Clone, Debug)]
pub struct WithStates<S>(pub S);
/// `argnums` not given.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultArg;
/// `argnums` given as one index.
#[derive(Clone, Copy, Debug)]
pub struct OneArg(pub i64);
/// `argnums` given as an array of indices.
#[derive(Clone, Copy, Debug)]
pub struct ArgArray<const N: usize>(pub [i64; N]);
/// `argnums` given as a `Vec` of indices.
#[derive(Clone, Debug)]
pub struct ArgVec(pub Vec<i64>);
/// No auxiliary output.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAux;
/// The function returns `(value, aux)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct WithAux;
/// The value is not returned.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoValue;
/// The value is returned too.
#[derive(Clone, Copy, Debug, Default)]
pub struct WithValue;
/// First-order results (gradients, Jacobians).
#[derive(Clone, Copy, Debug, Default)]
pub struct First;
/// Second-order results (Hessians): a block per pair of inputs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Second;

/// What `argnums(..)` accepts: an integer, an array of integers, or a `Vec` of them.
pub trait ArgnumSpec {
    /// The type-level form.
    type Sel;
    /// Convert.
    fn into_sel(self) -> Self::Sel;
}
macro_rules! argnum_int {
    ($($t:ty),*) => {$(
        impl ArgnumSpec for $t {
            type Sel = OneArg;
            fn into_sel(self) -> OneArg { OneArg(self as i64) }
        }
        impl<const N: usize> ArgnumSpec for [$t; N] {
            type Sel = ArgArray<N>;
            fn into_sel(self) -> ArgArray<N> { ArgArray(self.map(|i| i as i64)) }
        }
        impl ArgnumSpec for Vec<$t> {
            type Sel = ArgVec;
            fn into_sel(self) -> ArgVec { ArgVec(self.into_iter().map(|i| i as i64).collect()) }
        }
    )*};
}
// One integer type only: with several, a literal `argnums(0)` would stay ambiguous until the end
// of type inference and the result type could not be known at the `?`.
argnum_int!(i64);

fn validate_argnums(nums: &[i64], nargs: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(nums.len());
    for &a in nums {
        if a < 0 {
            return Err(Error::NegativeArgnum { argnum: a, nargs });
        }
        if a as usize >= nargs {
            return Err(Error::ArgnumOutOfRange { argnum: a, nargs });
        }
        if out.contains(&(a as usize)) {
            return Err(Error::DuplicateArgnum { argnum: a as usize });
        }
        out.push(a as usize);
    }
    Ok(out)
}

/// Everything the engine computed for one call, before formatting.
pub struct RawResult<A: Args> {
    pub(super) args: A,
    pub(super) argnums: Vec<usize>,
    /// Per unique grad state (first order) or per pair (second order, row-major).
    pub(super) grads: Vec<Tensor>,
    /// Map from each listed state (with repeats) to its unique index.
    pub(super) state_slots: Vec<usize>,
    pub(super) n_unique: usize,
    /// Inputs per selected argument (leaf counts).
    pub(super) arg_leaf_counts: Vec<usize>,
    pub(super) value: Tensor,
}

impl<A: Args> RawResult<A> {
    fn n_inputs(&self) -> usize {
        self.n_unique + self.arg_leaf_counts.iter().sum::<usize>()
    }
    fn first_state_grads(&self) -> Vec<Tensor> {
        self.state_slots
            .iter()
            .map(|&u| self.grads[u].clone())
            .collect()
    }
    fn first_arg_grad(&self, k: usize) -> A::Grad {
        let start = self.n_unique + self.arg_leaf_counts[..k].iter().sum::<usize>();
        let mut it = self.grads[start..start + self.arg_leaf_counts[k]]
            .iter()
            .cloned();
        self.args.arg_grad(self.argnums[k], &mut it)
    }
    fn block(&self, i: usize, j: usize) -> Tensor {
        self.grads[i * self.n_inputs() + j].clone()
    }
    /// The input index of selected argument `k` (which must be a single tensor).
    fn arg_input(&self, k: usize) -> Result<usize> {
        if self.arg_leaf_counts[k] != 1 {
            return Err(Error::Unsupported(
                "hessian w.r.t. an argument with several tensors; pass each tensor as its own argument".into(),
            ));
        }
        Ok(self.n_unique + self.arg_leaf_counts[..k].iter().sum::<usize>())
    }
    fn second_arg_block(&self, k: usize, l: usize) -> Result<Tensor> {
        Ok(self.block(self.arg_input(k)?, self.arg_input(l)?))
    }
    /// The state-by-argument and argument-by-state blocks for argument `k`.
    fn mixed_blocks<S: StateTree>(
        &self,
        tree: &S,
        k: usize,
    ) -> Result<(S::Out<Tensor>, S::Out<Tensor>)> {
        let a = self.arg_input(k)?;
        let vg = tree.build(&mut self.state_slots.iter().map(|&u| self.block(u, a)));
        let gv = tree.build(&mut self.state_slots.iter().map(|&u| self.block(a, u)));
        Ok((vg, gv))
    }
    fn second_state_blocks<S: StateTree>(&self, tree: &S) -> S::Out<S::Out<Tensor>> {
        let mut rows = self.state_slots.iter().map(|&u| {
            let mut cols = self.state_slots.iter().map(|&v| self.block(u, v));
            tree.build(&mut cols)
        });
        tree.build(&mut rows)
    }
}

/// The blocks of a Hessian taken w.r.t. states and arguments together: `vv[s][t]` has shape
/// `s.shape + t.shape`, `vg[s]` `s.shape + arg.shape`, `gv[s]` `arg.shape + s.shape`, `gg` the
/// argument block(s), each structure mirroring `grad_states` (and the `argnums` array).
#[derive(Clone, Debug)]
pub struct HessianBlocks<VV, VG, GV, GG> {
    /// States by states.
    pub vv: VV,
    /// States by arguments.
    pub vg: VG,
    /// Arguments by states.
    pub gv: GV,
    /// Arguments by arguments.
    pub gg: GG,
}

/// How `(grad_states, argnums)` shape the gradient part of the result, per order `K`.
#[diagnostic::on_unimplemented(
    message = "this combination of grad_states / argnums is not supported for this transform and these arguments",
    note = "all selected arguments must share one gradient type"
)]
pub trait Selection<A: Args, K> {
    /// The gradient part (`G`, `V`, or `(V, G)`).
    type Grads;
    /// The state container, if any.
    fn state_list(&self) -> Vec<(String, State)>;
    /// The selected argument indices, validated.
    fn argnums(&self) -> Result<Vec<usize>>;
    /// Format the engine's result.
    fn assemble(&self, raw: RawResult<A>) -> Result<Self::Grads>;
}

impl<A: Args> Selection<A, First> for (NoStates, DefaultArg) {
    type Grads = A::Grad;
    fn state_list(&self) -> Vec<(String, State)> {
        vec![]
    }
    fn argnums(&self) -> Result<Vec<usize>> {
        validate_argnums(&[0], A::LEN)
    }
    fn assemble(&self, raw: RawResult<A>) -> Result<A::Grad> {
        Ok(raw.first_arg_grad(0))
    }
}

impl<A: Args> Selection<A, First> for (NoStates, OneArg) {
    type Grads = A::Grad;
    fn state_list(&self) -> Vec<(String, State)> {
        vec![]
    }
    fn argnums(&self) -> Result<Vec<usize>> {
        validate_argnums(&[self.1 .0], A::LEN)
    }
    fn assemble(&self, raw: RawResult<A>) -> Result<A::Grad> {
        Ok(raw.first_arg_grad(0))
    }
}

impl<A: Args, const N: usize> Selection<A, First> for (NoStates, ArgArray<N>) {
    type Grads = [A::Grad; N];
    fn state_list(&self) -> Vec<(String, State)> {
        vec![]
    }
    fn argnums(&self) -> Result<Vec<usize>> {
        validate_argnums(&self.1 .0, A::LEN)
    }
    fn assemble(&self, raw: RawResult<A>) -> Result<[A::Grad; N]> {
        Ok(std::array::from_fn(|k| raw.first_arg_grad(k)))
    }
}

impl<A: Args> Selection<A, First> for (NoStates, ArgVec) {
    type Grads = Vec<A::Grad>;
    fn state_list(&self) -> Vec<(String, State)> {
        vec![]
    }
    fn argnums(&self) -> Result<Vec<usize>> {
        validate_argnums(&self.1 .0, A::LEN)
    }
    fn assemble(&self, raw: RawResult<A>) -> Result<Vec<A::Grad>> {
        Ok((0..raw.argnums.len())
            .map(|k| raw.first_arg_grad(k))
            .collect())
    }
}

impl<A: Args, S: StateTree> Selection<A, First> for (WithStates<S>, DefaultArg) {
    type Grads = S::Out<Tensor>;
    fn state_list(&self) -> Vec<(String, State)> {
        tree::flatten_states(&self.0 .0)
    }
    fn argnums(&self) -> Result<Vec<usize>> {
        Ok(vec![])
    }
    fn assemble(&self, raw: RawResult<A>) -> Result<S::Out<Tensor>> {
        Ok(self.0 .0.build(&mut raw.first_state_grads().into_iter()))
    }
}

macro_rules! states_and_args {
    ($sel:ty, [$($gen:tt)*], $g:ty, $nums:expr, $mk:expr) => {
        impl<A: Args, S: StateTree, $($gen)*> Selection<A, First> for (WithStates<S>, $sel) {
            type Grads = (S::Out<Tensor>, $g);
            fn state_list(&self) -> Vec<(String, State)> {
                tree::flatten_states(&self.0 .0)
            }
            fn argnums(&self) -> Result<Vec<usize>> {
                #[allow(clippy::redundant_closure_call)]
                validate_argnums(&($nums)(&self.1), A::LEN)
            }
            fn assemble(&self, raw: RawResult<A>) -> Result<Self::Grads> {
                let v = self.0 .0.build(&mut raw.first_state_grads().into_iter());
                #[allow(clippy::redundant_closure_call)]
                let g = ($mk)(&raw);
                Ok((v, g))
            }
        }
    };
}
states_and_args!(
    OneArg,
    [],
    A::Grad,
    |s: &OneArg| vec![s.0],
    |r: &RawResult<A>| r.first_arg_grad(0)
);
states_and_args!(ArgArray<N>, [const N: usize], [A::Grad; N], |s: &ArgArray<N>| s.0.to_vec(), |r: &RawResult<A>| std::array::from_fn(|k| r.first_arg_grad(k)));
states_and_args!(
    ArgVec,
    [],
    Vec<A::Grad>,
    |s: &ArgVec| s.0.clone(),
    |r: &RawResult<A>| (0..r.argnums.len()).map(|k| r.first_arg_grad(k)).collect()
);

// Second order (hessian): blocks per pair of inputs.
impl<A: Args> Selection<A, Second> for (NoStates, DefaultArg) {
    type Grads = Tensor;
    fn state_list(&self) -> Vec<(String, State)> {
        vec![]
    }
    fn argnums(&self) -> Result<Vec<usize>> {
        validate_argnums(&[0], A::LEN)
    }
    fn assemble(&self, raw: RawResult<A>) -> Result<Tensor> {
        raw.second_arg_block(0, 0)
    }
}

impl<A: Args> Selection<A, Second> for (NoStates, OneArg) {
    type Grads = Tensor;
    fn state_list(&self) -> Vec<(String, State)> {
        vec![]
    }
    fn argnums(&self) -> Result<Vec<usize>> {
        validate_argnums(&[self.1 .0], A::LEN)
    }
    fn assemble(&self, raw: RawResult<A>) -> Result<Tensor> {
        raw.second_arg_block(0, 0)
    }
}

impl<A: Args, const N: usize> Selection<A, Second> for (NoStates, ArgArray<N>) {
    type Grads = [[Tensor; N]; N];
    fn state_list(&self) -> Vec<(String, State)> {
        vec![]
    }
    fn argnums(&self) -> Result<Vec<usize>> {
        validate_argnums(&self.1 .0, A::LEN)
    }
    fn assemble(&self, raw: RawResult<A>) -> Result<[[Tensor; N]; N]> {
        let mut rows = Vec::with_capacity(N);
        for k in 0..N {
            let mut row = Vec::with_capacity(N);
            for l in 0..N {
                row.push(raw.second_arg_block(k, l)?);
            }
            rows.push(row);
        }
        Ok(std::array::from_fn(|k| {
            std::array::from_fn(|l| rows[k][l].clone())
        }))
    }
}

impl<A: Args> Selection<A, Second> for (NoStates, ArgVec) {
    type Grads = Vec<Vec<Tensor>>;
    fn state_list(&self) -> Vec<(String, State)> {
        vec![]
    }
    fn argnums(&self) -> Result<Vec<usize>> {
        validate_argnums(&self.1 .0, A::LEN)
    }
    fn assemble(&self, raw: RawResult<A>) -> Result<Vec<Vec<Tensor>>> {
        let n = raw.argnums.len();
        (0..n)
            .map(|k| (0..n).map(|l| raw.second_arg_block(k, l)).collect())
            .collect()
    }
}

impl<A: Args, S: StateTree> Selection<A, Second> for (WithStates<S>, DefaultArg) {
    type Grads = S::Out<S::Out<Tensor>>;
    fn state_list(&self) -> Vec<(String, State)> {
        tree::flatten_states(&self.0 .0)
    }
    fn argnums(&self) -> Result<Vec<usize>> {
        Ok(vec![])
    }
    fn assemble(&self, raw: RawResult<A>) -> Result<Self::Grads> {
        Ok(raw.second_state_blocks(&self.0 .0))
    }
}

impl<A: Args, S: StateTree> Selection<A, Second> for (WithStates<S>, OneArg) {
    type Grads = HessianBlocks<S::Out<S::Out<Tensor>>, S::Out<Tensor>, S::Out<Tensor>, Tensor>;
    fn state_list(&self) -> Vec<(String, State)> {
        tree::flatten_states(&self.0 .0)
    }
    fn argnums(&self) -> Result<Vec<usize>> {
        validate_argnums(&[self.1 .0], A::LEN)
    }
    fn assemble(&self, raw: RawResult<A>) -> Result<Self::Grads> {
        let (vg, gv) = raw.mixed_blocks(&self.0 .0, 0)?;
        Ok(HessianBlocks {
            vv: raw.second_state_blocks(&self.0 .0),
            vg,
            gv,
            gg: raw.second_arg_block(0, 0)?,
        })
    }
}

impl<A: Args, S: StateTree, const N: usize> Selection<A, Second> for (WithStates<S>, ArgArray<N>) {
    type Grads = HessianBlocks<
        S::Out<S::Out<Tensor>>,
        [S::Out<Tensor>; N],
        [S::Out<Tensor>; N],
        [[Tensor; N]; N],
    >;
    fn state_list(&self) -> Vec<(String, State)> {
        tree::flatten_states(&self.0 .0)
    }
    fn argnums(&self) -> Result<Vec<usize>> {
        validate_argnums(&self.1 .0, A::LEN)
    }
    fn assemble(&self, raw: RawResult<A>) -> Result<Self::Grads> {
        let mut vgs = Vec::with_capacity(N);
        let mut gvs = Vec::with_capacity(N);
        for k in 0..N {
            let (vg, gv) = raw.mixed_blocks(&self.0 .0, k)?;
            vgs.push(vg);
            gvs.push(gv);
        }
        let mut gg = Vec::with_capacity(N);
        for k in 0..N {
            let mut row = Vec::with_capacity(N);
            for l in 0..N {
                row.push(raw.second_arg_block(k, l)?);
            }
            gg.push(row);
        }
        let (mut vgs, mut gvs) = (vgs.into_iter(), gvs.into_iter());
        Ok(HessianBlocks {
            vv: raw.second_state_blocks(&self.0 .0),
            vg: std::array::from_fn(|_| vgs.next().expect("N blocks")),
            gv: std::array::from_fn(|_| gvs.next().expect("N blocks")),
            gg: std::array::from_fn(|k| std::array::from_fn(|l| gg[k][l].clone())),
        })
    }
}

/// What the transformed function returns: a [`Tensor`] (or `Result<Tensor>`) without
/// `has_aux`; the pair `(Tensor, X)` (or `Result` of it) with `has_aux`, where several aux
/// items are one tuple `X = (A, B, …)`.
pub trait FnOutput<AuxSel> {
    /// The auxiliary data type (`()` without aux).
    type Aux: Tree;
    /// Split into value and aux.
    fn split(self) -> Result<(Tensor, Self::Aux)>;
}
impl FnOutput<NoAux> for Tensor {
    type Aux = ();
    fn split(self) -> Result<(Tensor, ())> {
        Ok((self, ()))
    }
}
impl FnOutput<NoAux> for Result<Tensor> {
    type Aux = ();
    fn split(self) -> Result<(Tensor, ())> {
        self.map(|t| (t, ()))
    }
}
impl<X: Tree> FnOutput<WithAux> for (Tensor, X) {
    type Aux = X;
    fn split(self) -> Result<(Tensor, X)> {
        Ok(self)
    }
}
impl<X: Tree> FnOutput<WithAux> for Result<(Tensor, X)> {
    type Aux = X;
    fn split(self) -> Result<(Tensor, X)> {
        self
    }
}
