//! Property tests over random compositions of primitives (section 4).

use super::*;

#[derive(Clone, Debug)]
enum Expr {
    In(usize),
    Tanh(Box<Expr>),
    Sin(Box<Expr>),
    /// exp(0.5 tanh(e)): exp of small values.
    ExpSmall(Box<Expr>),
    Add(Box<Expr>, Box<Expr>),
    Mul(Box<Expr>, Box<Expr>),
    /// `e @ m`, m of shape (last, k).
    MatMul(Box<Expr>, Tensor),
    SumAxis(Box<Expr>, usize),
    Reshape(Box<Expr>, Vec<usize>),
    Slice(Box<Expr>, usize, usize, usize),
}

impl Expr {
    fn eval(&self, ins: &[Tensor]) -> Tensor {
        use Expr::*;
        match self {
            In(i) => ins[*i].clone(),
            Tanh(e) => e.eval(ins).tanh(),
            Sin(e) => e.eval(ins).sin(),
            ExpSmall(e) => (e.eval(ins).tanh() * 0.5).exp(),
            Add(a, b) => a.eval(ins) + b.eval(ins),
            Mul(a, b) => a.eval(ins) * b.eval(ins),
            MatMul(e, m) => e.eval(ins).matmul(m),
            SumAxis(e, ax) => e.eval(ins).sum_along(&[*ax as isize], false),
            Reshape(e, s) => e.eval(ins).try_reshape_to(s).unwrap(),
            Slice(e, ax, a, b) => e.eval(ins).slice_axis(*ax, *a, *b),
        }
    }
    fn uses(&self, i: usize) -> bool {
        use Expr::*;
        match self {
            In(j) => *j == i,
            Tanh(e)
            | Sin(e)
            | ExpSmall(e)
            | MatMul(e, _)
            | SumAxis(e, _)
            | Reshape(e, _)
            | Slice(e, ..) => e.uses(i),
            Add(a, b) | Mul(a, b) => a.uses(i) || b.uses(i),
        }
    }
}

/// A random shape of the same size.
fn reshape_target(r: &mut Rng, n: usize) -> Vec<usize> {
    let divs: Vec<usize> = (1..=n).filter(|&d| (n / d) * d == n).collect();
    match r.below(4) {
        0 if n == 1 => vec![],
        0 | 1 => vec![n],
        _ => {
            let d = divs[r.below(divs.len())];
            vec![d, n / d]
        }
    }
}

/// Make `e` (of shape `from`) have shape `to`: flatten, then slice or multiply by a random
/// matrix, then reshape.
fn adapt(r: &mut Rng, e: Expr, from: &[usize], to: &[usize]) -> Expr {
    if from == to && r.coin(0.5) {
        return e;
    }
    let (n, m) = (numel(from), numel(to));
    let flat = Expr::Reshape(Box::new(e), vec![n]);
    let lin = if n >= m && r.coin(0.5) {
        let s = r.below(n - m + 1);
        Expr::Slice(Box::new(flat), 0, s, s + m)
    } else {
        let scale = 1.0 / (n as f64).sqrt();
        Expr::MatMul(Box::new(flat), r.tensor(&[n, m], -scale, scale))
    };
    Expr::Reshape(Box::new(lin), to.to_vec())
}

fn gen(r: &mut Rng, depth: usize, shapes: &[Vec<usize>]) -> (Expr, Vec<usize>) {
    if depth == 0 || r.coin(0.15) {
        let i = r.below(shapes.len());
        return (Expr::In(i), shapes[i].clone());
    }
    let (a, sa) = gen(r, depth - 1, shapes);
    match r.below(9) {
        0 => (Expr::Tanh(Box::new(a)), sa),
        1 => (Expr::Sin(Box::new(a)), sa),
        2 => (Expr::ExpSmall(Box::new(a)), sa),
        3 | 4 => {
            let (b, sb) = gen(r, depth - 1, shapes);
            // Same shape, or the last dim only (broadcast).
            let to = if !sa.is_empty() && r.coin(0.4) {
                vec![*sa.last().unwrap()]
            } else {
                sa.clone()
            };
            let b = Box::new(adapt(r, b, &sb, &to));
            let a = Box::new(a);
            let e = match (r.below(2), r.coin(0.5)) {
                (0, false) => Expr::Add(a, b),
                (0, true) => Expr::Add(b, a),
                (_, false) => Expr::Mul(a, b),
                (_, true) => Expr::Mul(b, a),
            };
            (e, sa)
        }
        5 => {
            let (a, sa) = if sa.is_empty() {
                (Expr::Reshape(Box::new(a), vec![1]), vec![1])
            } else {
                (a, sa)
            };
            let last = *sa.last().unwrap();
            let k = 1 + r.below(3);
            let scale = 1.0 / (last as f64).sqrt();
            let m = r.tensor(&[last, k], -scale, scale);
            let mut s = sa.clone();
            *s.last_mut().unwrap() = k;
            (Expr::MatMul(Box::new(a), m), s)
        }
        6 if !sa.is_empty() => {
            let ax = r.below(sa.len());
            let mut s = sa.clone();
            s.remove(ax);
            (Expr::SumAxis(Box::new(a), ax), s)
        }
        7 => {
            let s = reshape_target(r, numel(&sa));
            (Expr::Reshape(Box::new(a), s.clone()), s)
        }
        _ => {
            let axes: Vec<usize> = (0..sa.len()).filter(|&i| sa[i] >= 2).collect();
            if axes.is_empty() {
                return (Expr::Sin(Box::new(a)), sa);
            }
            let ax = axes[r.below(axes.len())];
            let start = r.below(sa[ax] - 1);
            let end = start + 1 + r.below(sa[ax] - start);
            let mut s = sa.clone();
            s[ax] = end - start;
            (Expr::Slice(Box::new(a), ax, start, end), s)
        }
    }
}

fn random_shape(r: &mut Rng) -> Vec<usize> {
    let nd = r.below(3);
    (0..nd).map(|_| 1 + r.below(3)).collect()
}

/// How the two inputs of a random case reach the function.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Both are arguments, `argnums([0, 1])`.
    Args,
    /// Both are states, `grad_states(vec![s0, s1])` (`check_states(false)`).
    States,
    /// Input 0 an argument, input 1 a state: `grad_states(s).argnums(0)`, tangents (s, x).
    Mixed,
}

struct Case {
    e: Expr,
    out_shape: Vec<usize>,
    xs: [Tensor; 2],
    s: [State; 2],
    mode: Mode,
}

impl Case {
    /// Set the states to the case's point (the state modes read them).
    fn reset(&self) {
        self.s[0].set_value(self.xs[0].clone());
        self.s[1].set_value(self.xs[1].clone());
    }
    fn dummy() -> Tensor {
        Tensor::scalar(0.0f64)
    }

    /// Jacobians in input order by `jacrev` (fwd = false) or `jacfwd`.
    fn jacobians(&self, fwd: bool) -> [Tensor; 2] {
        self.reset();
        let e = &self.e;
        let s = &self.s;
        match self.mode {
            Mode::Args => {
                let f = |(x, y): (Tensor, Tensor)| e.eval(&[x, y]);
                let tr = if fwd { jacfwd(f) } else { jacrev(f) };
                tr.argnums([0, 1])
                    .call((self.xs[0].clone(), self.xs[1].clone()))
                    .unwrap()
            }
            Mode::States => {
                let f = |_: Tensor| e.eval(&[s[0].value(), s[1].value()]);
                let tr = if fwd { jacfwd(f) } else { jacrev(f) };
                let v: Vec<Tensor> = tr
                    .grad_states(vec![s[0].clone(), s[1].clone()])
                    .check_states(false)
                    .call(Case::dummy())
                    .unwrap();
                [v[0].clone(), v[1].clone()]
            }
            Mode::Mixed => {
                let f = |x: Tensor| e.eval(&[x, s[1].value()]);
                let tr = if fwd { jacfwd(f) } else { jacrev(f) };
                let (js, jx): (Tensor, Tensor) = tr
                    .grad_states(s[1].clone())
                    .argnums(0)
                    .check_states(false)
                    .call(self.xs[0].clone())
                    .unwrap();
                [jx, js]
            }
        }
    }

    /// (value, J · (t0, t1)) by `call_jvp`.
    fn jvp(&self, t0: &Tensor, t1: &Tensor) -> (Tensor, Tensor) {
        self.reset();
        let e = &self.e;
        let s = &self.s;
        match self.mode {
            Mode::Args => jvp(|(x, y): (Tensor, Tensor)| e.eval(&[x, y]))
                .argnums([0, 1])
                .call_jvp(
                    (self.xs[0].clone(), self.xs[1].clone()),
                    &[t0.clone(), t1.clone()],
                )
                .unwrap(),
            Mode::States => jvp(|_: Tensor| e.eval(&[s[0].value(), s[1].value()]))
                .grad_states(vec![s[0].clone(), s[1].clone()])
                .check_states(false)
                .call_jvp(Case::dummy(), &[t0.clone(), t1.clone()])
                .unwrap(),
            Mode::Mixed => jvp(|x: Tensor| e.eval(&[x, s[1].value()]))
                .grad_states(s[1].clone())
                .argnums(0)
                .check_states(false)
                .call_jvp(self.xs[0].clone(), &[t1.clone(), t0.clone()])
                .unwrap(),
        }
    }

    /// J^T c in input order by `vjp`, with the value.
    fn vjp(&self, c: &Tensor) -> ([Tensor; 2], Tensor) {
        self.reset();
        let e = &self.e;
        let s = &self.s;
        match self.mode {
            Mode::Args => vjp(|(x, y): (Tensor, Tensor)| e.eval(&[x, y]), c.clone())
                .argnums([0, 1])
                .return_value()
                .call((self.xs[0].clone(), self.xs[1].clone()))
                .unwrap(),
            Mode::States => {
                let (v, l): (Vec<Tensor>, Tensor) =
                    vjp(|_: Tensor| e.eval(&[s[0].value(), s[1].value()]), c.clone())
                        .grad_states(vec![s[0].clone(), s[1].clone()])
                        .check_states(false)
                        .return_value()
                        .call(Case::dummy())
                        .unwrap();
                ([v[0].clone(), v[1].clone()], l)
            }
            Mode::Mixed => {
                let ((gs, gx), l): ((Tensor, Tensor), Tensor) =
                    vjp(|x: Tensor| e.eval(&[x, s[1].value()]), c.clone())
                        .grad_states(s[1].clone())
                        .argnums(0)
                        .check_states(false)
                        .return_value()
                        .call(self.xs[0].clone())
                        .unwrap();
                ([gx, gs], l)
            }
        }
    }

    /// Hessian blocks of `sum(sin(f) * c)` (Mixed: the two diagonal blocks only, off-diagonal
    /// ones `None`).
    fn hessian(&self, c: &Tensor) -> [[Option<Tensor>; 2]; 2] {
        self.reset();
        let e = &self.e;
        let s = &self.s;
        let red = |y: Tensor| (y.sin() * c).sum();
        match self.mode {
            Mode::Args => {
                let h = hessian(|(x, y): (Tensor, Tensor)| red(e.eval(&[x, y])))
                    .argnums([0, 1])
                    .call((self.xs[0].clone(), self.xs[1].clone()))
                    .unwrap();
                h.map(|row| row.map(Some))
            }
            Mode::States => {
                let h: Vec<Vec<Tensor>> =
                    hessian(|_: Tensor| red(e.eval(&[s[0].value(), s[1].value()])))
                        .grad_states(vec![s[0].clone(), s[1].clone()])
                        .check_states(false)
                        .call(Case::dummy())
                        .unwrap();
                [
                    [Some(h[0][0].clone()), Some(h[0][1].clone())],
                    [Some(h[1][0].clone()), Some(h[1][1].clone())],
                ]
            }
            Mode::Mixed => {
                let hxx = hessian(|x: Tensor| red(e.eval(&[x, s[1].value()])))
                    .call(self.xs[0].clone())
                    .unwrap();
                let hss: Tensor = hessian(|x: Tensor| red(e.eval(&[x, s[1].value()])))
                    .grad_states(s[1].clone())
                    .check_states(false)
                    .call(self.xs[0].clone())
                    .unwrap();
                [[Some(hxx), None], [None, Some(hss)]]
            }
        }
    }
}

fn check_case(idx: usize, case: &Case, r: &mut Rng) {
    let label = format!("case {idx} ({:?}, {:?})", case.mode, case.e);
    let xs = &case.xs;
    let m = numel(&case.out_shape);
    let jr = case.jacobians(false);
    let jf = case.jacobians(true);
    let value = case.e.eval(xs);
    assert_eq!(
        value.shape(),
        case.out_shape.as_slice(),
        "{label}: shape inference"
    );
    for k in 0..2 {
        let mut want = case.out_shape.clone();
        want.extend_from_slice(xs[k].shape());
        assert_eq!(jr[k].shape(), want.as_slice(), "{label}: jacrev {k} layout");
        assert_same(
            &format!("{label}: jacrev vs jacfwd {k}"),
            &jr[k],
            &jf[k],
            1e-12,
        );
        if !case.e.uses(k) {
            assert!(
                vals(&jr[k]).iter().all(|v| *v == 0.0),
                "{label}: unused input {k}"
            );
        }
    }
    // Columns of jacfwd against call_jvp with basis tangents.
    for k in 0..2 {
        let n = xs[k].numel();
        let jv = vals(&jf[k]);
        for c in 0..n {
            let tk = basis(xs[k].shape(), c);
            let z = xs[1 - k].zeros_like();
            let (t0, t1) = if k == 0 { (&tk, &z) } else { (&z, &tk) };
            let (y, dy) = case.jvp(t0, t1);
            assert_same(&format!("{label}: jvp value"), &y, &value, 1e-15);
            assert_eq!(dy.shape(), case.out_shape.as_slice(), "{label}: jvp shape");
            let col: Vec<f64> = (0..m).map(|i| jv[i * n + c]).collect();
            assert_same(
                &format!("{label}: jacfwd column {c} of input {k} vs call_jvp"),
                &dy,
                &t(col, &case.out_shape),
                1e-12,
            );
        }
    }
    // Rows of jacrev against vjp with basis cotangents.
    for i in 0..m {
        let (g, y) = case.vjp(&basis(&case.out_shape, i));
        assert_same(&format!("{label}: vjp value"), &y, &value, 1e-15);
        for k in 0..2 {
            let n = xs[k].numel();
            let row: Vec<f64> = vals(&jr[k])[i * n..(i + 1) * n].to_vec();
            assert_same(
                &format!("{label}: jacrev row {i} of input {k} vs vjp"),
                &g[k],
                &t(row, xs[k].shape()),
                1e-12,
            );
        }
    }
    // A random direction against central differences, and the dot-product identity.
    let dirs = [
        r.tensor(xs[0].shape(), -1.0, 1.0),
        r.tensor(xs[1].shape(), -1.0, 1.0),
    ];
    let (_, dy) = case.jvp(&dirs[0], &dirs[1]);
    let fd = fd_directional(&|ins: &[Tensor]| case.e.eval(ins), xs, &dirs);
    assert_close(
        &format!("{label}: jvp vs fd"),
        &dy,
        &case.out_shape,
        &fd,
        1e-6,
        1e-7,
    );
    let cot = r.tensor(&case.out_shape, -1.0, 1.0);
    let (g, _) = case.vjp(&cot);
    let lhs = dot(&dy, &cot);
    let rhs = dot(&dirs[0], &g[0]) + dot(&dirs[1], &g[1]);
    assert!(
        (lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()),
        "{label}: <J t, c> = {lhs} vs <t, J^T c> = {rhs}"
    );
    // Hessian of a scalar reduction: shapes, and symmetry of the full matrix.
    let h = case.hessian(&cot);
    let ns = [xs[0].numel(), xs[1].numel()];
    let scale = h
        .iter()
        .flatten()
        .flatten()
        .flat_map(vals)
        .fold(1.0f64, |a, v| a.max(v.abs()));
    for a in 0..2 {
        for b in 0..2 {
            let Some(hab) = &h[a][b] else { continue };
            let mut want = xs[a].shape().to_vec();
            want.extend_from_slice(xs[b].shape());
            assert_eq!(
                hab.shape(),
                want.as_slice(),
                "{label}: hessian block {a}/{b} layout"
            );
            let Some(hba) = &h[b][a] else { continue };
            let (vab, vba) = (vals(hab), vals(hba));
            for i in 0..ns[a] {
                for j in 0..ns[b] {
                    let (p, q) = (vab[i * ns[b] + j], vba[j * ns[a] + i]);
                    assert!(
                        (p - q).abs() <= 1e-12 * scale,
                        "{label}: hessian {a}/{b} ({i}, {j}) = {p} vs {b}/{a} ({j}, {i}) = {q}"
                    );
                }
            }
            if !case.e.uses(a) || !case.e.uses(b) {
                assert!(
                    vab.iter().all(|v| *v == 0.0),
                    "{label}: block {a}/{b} not zero"
                );
            }
        }
    }
}

#[test]
fn random_compositions() {
    let mut r = Rng(0x5EED);
    let states = [
        ParamState::new(Tensor::scalar(0.0f64)),
        ParamState::new(Tensor::scalar(0.0f64)),
    ];
    for idx in 0..300 {
        let shapes = [random_shape(&mut r), random_shape(&mut r)];
        let depth = 1 + r.below(5);
        let (mut e, out_shape) = gen(&mut r, depth, &shapes);
        // Mostly both inputs reach the output; the rest test symbolic zeros.
        for k in 0..2 {
            if !e.uses(k) && r.coin(0.75) {
                let leaf = Expr::Sin(Box::new(Expr::In(k)));
                let b = Box::new(adapt(&mut r, leaf, &shapes[k], &out_shape));
                e = if r.coin(0.5) {
                    Expr::Add(Box::new(e), b)
                } else {
                    Expr::Mul(b, Box::new(e))
                };
            }
        }
        let xs = [
            r.tensor(&shapes[0], -1.0, 1.0),
            r.tensor(&shapes[1], -1.0, 1.0),
        ];
        let mode = [Mode::Args, Mode::States, Mode::Mixed][idx % 3];
        let case = Case {
            e,
            out_shape,
            xs,
            s: states.clone(),
            mode,
        };
        check_case(idx, &case, &mut r);
    }
}
