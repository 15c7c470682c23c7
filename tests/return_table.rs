//! The return-structure table of SEMANTICS §2, row by row, as types and values, plus the
//! `argnums` forms, argument-structure mirroring, the `grad_states` forms of §3 and the state
//! semantics of §1.4.
//!
//! Every destructuring below spells out the type the table promises, so a change of structure is
//! a compile error here, not a silently different value.
//!
//! The model: `w` = ParamState `[1, 2]`, `b` = ParamState `0.5` (0-d); arguments `x = [3, 4]`,
//! `y = [5, 6]`.
//! - scalar loss `L = sum(w * x) + b * sum(y)` = 11 + 5.5 = 16.5, with
//!   `dL/dw = x = [3, 4]`, `dL/db = sum(y) = 11`, `dL/dx = w = [1, 2]`, `dL/dy = [b, b] = [0.5, 0.5]`;
//! - vector output `F = w * x + b * y` = `[5.5, 11]` (so `sum(F) = L`), with Jacobians
//!   `dF/dw = diag(x)`, `dF/db = y`, `dF/dx = diag(w)`, `dF/dy = b I`.
//! - aux: `{"wx": sum(w * x) = 11, "xsum": sum(x) = 7}`.

use stategrad::prelude::*;
use std::collections::BTreeMap;

// ------------------------------------------------------------------ helpers

#[derive(Module)]
struct Tiny {
    w: State,
    b: State,
}

impl Tiny {
    fn new() -> Tiny {
        Tiny {
            w: ParamState::new(Tensor::new([1.0f32, 2.0])),
            b: ParamState::new(Tensor::scalar(0.5f32)),
        }
    }
    /// `w * x + b * y`, shape (2,).
    fn forward(&self, x: &Tensor, y: &Tensor) -> Tensor {
        &self.w.value() * x + &self.b.value() * y
    }
}

fn xy() -> (Tensor, Tensor) {
    (Tensor::new([3.0f32, 4.0]), Tensor::new([5.0f32, 6.0]))
}

type Aux = BTreeMap<&'static str, Tensor>;
type V = BTreeMap<Path, Tensor>;

fn aux_of(m: &Tiny, x: &Tensor) -> Aux {
    // Inserted out of order on purpose; the map is sorted.
    BTreeMap::from([("xsum", x.sum()), ("wx", (&m.w.value() * x).sum())])
}

/// Shape and values (within f32 round-off).
#[track_caller]
fn assert_tensor(t: &Tensor, shape: &[usize], values: &[f64]) {
    assert_eq!(t.shape(), shape, "shape of {t}");
    let got = t.to_f64_vec();
    assert_eq!(got.len(), values.len(), "length of {t}");
    for (g, e) in got.iter().zip(values) {
        assert!(
            (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
            "got {got:?}, expected {values:?}"
        );
    }
}

#[track_caller]
fn assert_same(a: &Tensor, b: &Tensor) {
    assert_tensor(a, b.shape(), &b.to_f64_vec());
}

#[track_caller]
fn assert_aux(aux: &Aux) {
    assert_eq!(aux.keys().copied().collect::<Vec<_>>(), ["wx", "xsum"]);
    assert_tensor(&aux["wx"], &[], &[11.0]);
    assert_tensor(&aux["xsum"], &[], &[7.0]);
}

#[track_caller]
fn assert_loss(l: &Tensor) {
    assert_tensor(l, &[], &[16.5]);
}

/// The state gradients of the scalar loss, keyed by path, sorted.
#[track_caller]
fn assert_v(v: &V) {
    let keys: Vec<String> = v.keys().map(|p| p.to_string()).collect();
    assert_eq!(keys, ["('b',)", "('w',)"]);
    assert_tensor(&v[&path!("b")], &[], &[11.0]);
    assert_tensor(&v[&path!("w")], &[2], &[3.0, 4.0]);
}

#[track_caller]
fn assert_gx(g: &Tensor) {
    assert_tensor(g, &[2], &[1.0, 2.0]);
}

#[track_caller]
fn assert_gy(g: &Tensor) {
    assert_tensor(g, &[2], &[0.5, 0.5]);
}

/// The states keep their values (every function here only reads them).
#[track_caller]
fn assert_untouched(m: &Tiny) {
    assert_tensor(&m.w.value(), &[2], &[1.0, 2.0]);
    assert_tensor(&m.b.value(), &[], &[0.5]);
}

// ------------------------------------------------------------------ grad: row "none / any"

#[test]
fn grad_none_plain() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| m.forward(&x, &y).sum();
    // argnums unset: argument 0.
    let g: Tensor = grad(f).call(xy())?;
    assert_gx(&g);
    // an int: that argument.
    let g: Tensor = grad(f).argnums(1).call(xy())?;
    assert_gy(&g);
    // a list: an array in the given order.
    let [gy, gx]: [Tensor; 2] = grad(f).argnums([1, 0]).call(xy())?;
    assert_gx(&gx);
    assert_gy(&gy);
    assert_untouched(&m);
    Ok(())
}

#[test]
fn grad_none_has_aux() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| (m.forward(&x, &y).sum(), aux_of(&m, &x));
    let (g, aux): (Tensor, Aux) = grad(f).has_aux().call(xy())?;
    assert_gx(&g);
    assert_aux(&aux);
    let ([gx, gy], aux): ([Tensor; 2], Aux) = grad(f).argnums([0, 1]).has_aux().call(xy())?;
    assert_gx(&gx);
    assert_gy(&gy);
    assert_aux(&aux);
    assert_untouched(&m);
    Ok(())
}

#[test]
fn grad_none_return_value() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| m.forward(&x, &y).sum();
    let (g, l): (Tensor, Tensor) = grad(f).return_value().call(xy())?;
    assert_gx(&g);
    assert_loss(&l);
    let (g, l): (Tensor, Tensor) = grad(f).argnums(1).return_value().call(xy())?;
    assert_gy(&g);
    assert_loss(&l);
    Ok(())
}

#[test]
fn grad_none_has_aux_return_value() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| (m.forward(&x, &y).sum(), aux_of(&m, &x));
    let (g, l, aux): (Tensor, Tensor, Aux) = grad(f).has_aux().return_value().call(xy())?;
    assert_gx(&g);
    assert_loss(&l);
    assert_aux(&aux);
    // The option order does not matter.
    let (g, l, aux): (Vec<Tensor>, Tensor, Aux) = grad(f)
        .return_value()
        .argnums(vec![1])
        .has_aux()
        .call(xy())?;
    assert_eq!(g.len(), 1);
    assert_gy(&g[0]);
    assert_loss(&l);
    assert_aux(&aux);
    Ok(())
}

// ------------------------------------------------------------------ grad: row "given / none"

#[test]
fn grad_states_plain() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| m.forward(&x, &y).sum();
    // With grad states and argnums unset: no argument gradients at all.
    let v: V = grad(f).grad_states(m.states(ParamState)).call(xy())?;
    assert_v(&v);
    assert_untouched(&m);
    Ok(())
}

#[test]
fn grad_states_has_aux() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| (m.forward(&x, &y).sum(), aux_of(&m, &x));
    let (v, aux): (V, Aux) = grad(f)
        .grad_states(m.states(ParamState))
        .has_aux()
        .call(xy())?;
    assert_v(&v);
    assert_aux(&aux);
    Ok(())
}

#[test]
fn grad_states_return_value() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| m.forward(&x, &y).sum();
    let (v, l): (V, Tensor) = grad(f)
        .grad_states(m.states(ParamState))
        .return_value()
        .call(xy())?;
    assert_v(&v);
    assert_loss(&l);
    Ok(())
}

#[test]
fn grad_states_has_aux_return_value() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| (m.forward(&x, &y).sum(), aux_of(&m, &x));
    let (v, l, aux): (V, Tensor, Aux) = grad(f)
        .grad_states(m.states(ParamState))
        .has_aux()
        .return_value()
        .call(xy())?;
    assert_v(&v);
    assert_loss(&l);
    assert_aux(&aux);
    Ok(())
}

// ------------------------------------------------------------------ grad: row "given / given"

#[test]
fn grad_states_argnums_plain() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| m.forward(&x, &y).sum();
    let (v, g): (V, Tensor) = grad(f)
        .grad_states(m.states(ParamState))
        .argnums(0)
        .call(xy())?;
    assert_v(&v);
    assert_gx(&g);
    let (v, [gy, gx]): (V, [Tensor; 2]) = grad(f)
        .grad_states(m.states(ParamState))
        .argnums([1, 0])
        .call(xy())?;
    assert_v(&v);
    assert_gx(&gx);
    assert_gy(&gy);
    assert_untouched(&m);
    Ok(())
}

#[test]
fn grad_states_argnums_has_aux() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| (m.forward(&x, &y).sum(), aux_of(&m, &x));
    let ((v, g), aux): ((V, Tensor), Aux) = grad(f)
        .grad_states(m.states(ParamState))
        .argnums(1)
        .has_aux()
        .call(xy())?;
    assert_v(&v);
    assert_gy(&g);
    assert_aux(&aux);
    Ok(())
}

#[test]
fn grad_states_argnums_return_value() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| m.forward(&x, &y).sum();
    let ((v, g), l): ((V, Tensor), Tensor) = grad(f)
        .grad_states(m.states(ParamState))
        .argnums(0)
        .return_value()
        .call(xy())?;
    assert_v(&v);
    assert_gx(&g);
    assert_loss(&l);
    Ok(())
}

#[test]
fn grad_states_argnums_has_aux_return_value() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| (m.forward(&x, &y).sum(), aux_of(&m, &x));
    let ((v, g), l, aux): ((V, Vec<Tensor>), Tensor, Aux) = grad(f)
        .grad_states(m.states(ParamState))
        .argnums(vec![0, 1])
        .has_aux()
        .return_value()
        .call(xy())?;
    assert_v(&v);
    assert_eq!(g.len(), 2);
    assert_gx(&g[0]);
    assert_gy(&g[1]);
    assert_loss(&l);
    assert_aux(&aux);
    assert_untouched(&m);
    Ok(())
}

// ------------------------------------------------------------------ argnums forms

#[test]
fn argnums_int_vs_list() -> Result<()> {
    // f(a, b, c) = 1*sum(a) + 2*sum(b) + 3*sum(c): distinct gradients per argument.
    let f = |(a, b, c): (Tensor, Tensor, Tensor)| a.sum() + 2.0 * b.sum() + 3.0 * c.sum();
    let args = || {
        (
            Tensor::new([1.0f32, 1.0]),
            Tensor::new([1.0f32, 1.0, 1.0]),
            Tensor::scalar(1.0f32),
        )
    };

    // An int: one bare gradient.
    let g1: Tensor = grad(f).argnums(1).call(args())?;
    assert_tensor(&g1, &[3], &[2.0, 2.0, 2.0]);

    // A one-element list: a one-element array, not a bare gradient.
    let one: [Tensor; 1] = grad(f).argnums([1]).call(args())?;
    assert_eq!(one.len(), 1);
    assert_tensor(&one[0], &[3], &[2.0, 2.0, 2.0]);

    // `[2, 0]`: in that order.
    let [g2, g0]: [Tensor; 2] = grad(f).argnums([2, 0]).call(args())?;
    assert_tensor(&g2, &[], &[3.0]);
    assert_tensor(&g0, &[2], &[1.0, 1.0]);

    // A Vec: a Vec in the given order.
    let gs: Vec<Tensor> = grad(f).argnums(vec![2, 1, 0]).call(args())?;
    assert_eq!(gs.len(), 3);
    assert_tensor(&gs[0], &[], &[3.0]);
    assert_tensor(&gs[1], &[3], &[2.0, 2.0, 2.0]);
    assert_tensor(&gs[2], &[2], &[1.0, 1.0]);
    Ok(())
}

#[test]
fn scalar_argument_gives_scalar_gradient() -> Result<()> {
    // f(s, x) = s^2 * sum(x): df/ds = 2 s sum(x) = 2 * 3 * 7 = 42, 0-d.
    let f = |(s, x): (Tensor, Tensor)| &s * &s * x.sum();
    let g: Tensor = grad(f).call((Tensor::scalar(3.0f32), Tensor::new([3.0f32, 4.0])))?;
    assert_eq!(g.ndim(), 0);
    assert!(g.is_scalar());
    assert_tensor(&g, &[], &[42.0]);
    // dtype follows the argument.
    let g: Tensor = grad(f).call((Tensor::scalar(3.0f64), Tensor::new([3.0f64, 4.0])))?;
    assert_eq!(g.dtype(), DType::F64);
    assert_tensor(&g, &[], &[42.0]);
    Ok(())
}

#[test]
fn tuple_argument_gradient_mirrors_the_tuple() -> Result<()> {
    // One argument that is a pair: the gradient is a pair.
    let f = |((a, b),): ((Tensor, Tensor),)| (&a * &b).sum() + b.sum();
    let a = Tensor::new([1.0f32, 2.0]);
    let b = Tensor::new([3.0f32, 4.0]);
    let (ga, gb): (Tensor, Tensor) = grad(f).call(((a.clone(), b.clone()),))?;
    assert_tensor(&ga, &[2], &[3.0, 4.0]);
    assert_tensor(&gb, &[2], &[2.0, 3.0]);

    // Two pair arguments, both selected: an array of pairs.
    let f2 =
        |((a, b), (c, d)): ((Tensor, Tensor), (Tensor, Tensor))| (&a * &c).sum() + (&b * &d).sum();
    let c = Tensor::new([5.0f32, 6.0]);
    let d = Tensor::scalar(2.0f32);
    let [(ga, gb), (gc, gd)]: [(Tensor, Tensor); 2] = grad(f2)
        .argnums([0, 1])
        .call(((a.clone(), b.clone()), (c.clone(), d.clone())))?;
    assert_same(&ga, &c);
    assert_tensor(&gb, &[2], &[2.0, 2.0]);
    assert_same(&gc, &a);
    assert_tensor(&gd, &[], &[7.0]);

    // A Vec argument: a Vec gradient.
    let f3 = |xs: (Vec<Tensor>,)| {
        xs.0.iter()
            .enumerate()
            .map(|(i, t)| (i as f64 + 1.0) * t.sum())
            .fold(Tensor::scalar(0.0f32), |acc, t| acc + t)
    };
    let gs: Vec<Tensor> = grad(f3).call((vec![a.clone(), Tensor::scalar(1.0f32)],))?;
    assert_eq!(gs.len(), 2);
    assert_tensor(&gs[0], &[2], &[1.0, 1.0]);
    assert_tensor(&gs[1], &[], &[2.0]);
    Ok(())
}

// ------------------------------------------------------------------ grad_states forms (§3)

#[test]
fn grad_states_forms() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| m.forward(&x, &y).sum();

    // A single State: a bare gradient.
    let gw: Tensor = grad(f).grad_states(m.w.clone()).call(xy())?;
    assert_tensor(&gw, &[2], &[3.0, 4.0]);

    // A Vec: a Vec in the same order.
    let gs: Vec<Tensor> = grad(f)
        .grad_states(vec![m.b.clone(), m.w.clone()])
        .call(xy())?;
    assert_eq!(gs.len(), 2);
    assert_tensor(&gs[0], &[], &[11.0]);
    assert_tensor(&gs[1], &[2], &[3.0, 4.0]);

    // An array: an array.
    let [gw, gb]: [Tensor; 2] = grad(f).grad_states([m.w.clone(), m.b.clone()]).call(xy())?;
    assert_tensor(&gw, &[2], &[3.0, 4.0]);
    assert_tensor(&gb, &[], &[11.0]);

    // `module.states(ParamState)`: the same keys, sorted.
    let states = m.states(ParamState);
    let v: V = grad(f).grad_states(states.clone()).call(xy())?;
    assert!(v.keys().eq(states.keys()));
    assert_v(&v);

    // Nested maps nest.
    let nested: BTreeMap<String, BTreeMap<String, State>> = BTreeMap::from([
        (
            "layer".to_string(),
            BTreeMap::from([("w".to_string(), m.w.clone())]),
        ),
        (
            "head".to_string(),
            BTreeMap::from([("b".to_string(), m.b.clone())]),
        ),
    ]);
    let nv: BTreeMap<String, BTreeMap<String, Tensor>> = grad(f).grad_states(nested).call(xy())?;
    assert_eq!(nv.keys().collect::<Vec<_>>(), ["head", "layer"]);
    assert_tensor(&nv["layer"]["w"], &[2], &[3.0, 4.0]);
    assert_tensor(&nv["head"]["b"], &[], &[11.0]);

    // A tuple of containers: a tuple.
    let (gw, gbs): (Tensor, Vec<Tensor>) = grad(f)
        .grad_states((m.w.clone(), vec![m.b.clone()]))
        .call(xy())?;
    assert_tensor(&gw, &[2], &[3.0, 4.0]);
    assert_tensor(&gbs[0], &[], &[11.0]);

    // A state listed twice gets the same (not doubled, not zero) gradient in both places.
    let gs: Vec<Tensor> = grad(f)
        .grad_states(vec![m.w.clone(), m.b.clone(), m.w.clone()])
        .call(xy())?;
    assert_tensor(&gs[0], &[2], &[3.0, 4.0]);
    assert_tensor(&gs[1], &[], &[11.0]);
    assert_tensor(&gs[2], &[2], &[3.0, 4.0]);
    let twice: BTreeMap<String, State> = BTreeMap::from([
        ("a".to_string(), m.b.clone()),
        ("z".to_string(), m.b.clone()),
    ]);
    let tv: BTreeMap<String, Tensor> = grad(f).grad_states(twice).call(xy())?;
    assert_tensor(&tv["a"], &[], &[11.0]);
    assert_tensor(&tv["z"], &[], &[11.0]);

    // StateFinder dicts keyed 0, 1, …: gradients keyed the same.
    let found = StateFinder::new(f).filter(ParamState).find(xy())?;
    let fv = grad(f).grad_states(found.clone()).call(xy())?;
    assert!(fv.keys().eq(found.keys()));
    assert_eq!(fv.len(), 2);
    // First-access order: w is read before b.
    assert_tensor(&fv[&stategrad::StateKey::Index(0)], &[2], &[3.0, 4.0]);
    assert_tensor(&fv[&stategrad::StateKey::Index(1)], &[], &[11.0]);

    // Each gradient has its state's dtype.
    let s64 = State::new(Tensor::new([1.0f64, 2.0]));
    let g64: Tensor = grad(|x: Tensor| (&x * &s64.value().cast(DType::F32)).sum())
        .grad_states(s64.clone())
        .call(Tensor::new([3.0f32, 4.0]))?;
    assert_eq!(g64.dtype(), DType::F64);
    assert_tensor(&g64, &[2], &[3.0, 4.0]);

    assert_untouched(&m);
    Ok(())
}

/// SEMANTICS §2: "An empty `grad_states` is the same as none". The result type cannot change
/// with the container's length, so stategrad returns an empty `V` (and, with argnums, `(V, G)`).
/// What is checked here is what the implementation does; see the report for the difference.
#[test]
fn empty_grad_states() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| m.forward(&x, &y).sum();
    let v: V = grad(f).grad_states(StateMap::new()).call(xy())?;
    assert!(v.is_empty());
    let (v, l): (Vec<Tensor>, Tensor) = grad(f)
        .grad_states(Vec::<State>::new())
        .return_value()
        .call(xy())?;
    assert!(v.is_empty());
    assert_loss(&l);
    let (v, g): (V, Tensor) = grad(f).grad_states(StateMap::new()).argnums(0).call(xy())?;
    assert!(v.is_empty());
    assert_gx(&g);
    // The same for the other transforms (hessian used to fail concatenating zero blocks).
    let vf = |(x, y): (Tensor, Tensor)| m.forward(&x, &y);
    let (v, l): (V, Tensor) = jacrev(vf)
        .grad_states(StateMap::new())
        .return_value()
        .call(xy())?;
    assert!(v.is_empty());
    assert_tensor(&l, &[2], &[5.5, 11.0]);
    let (v, l): (V, Tensor) = jacfwd(vf)
        .grad_states(StateMap::new())
        .return_value()
        .call(xy())?;
    assert!(v.is_empty());
    assert_tensor(&l, &[2], &[5.5, 11.0]);
    let h: Vec<Vec<Tensor>> = hessian(f).grad_states(Vec::<State>::new()).call(xy())?;
    assert!(h.is_empty());
    assert_untouched(&m);
    Ok(())
}

/// A function of no arguments (`|()|`), differentiated only through its states: every row
/// without `argnums`, under `jit` too; asking for an argument's gradient is a typed error.
#[test]
fn functions_of_no_arguments() -> Result<()> {
    let a = State::new(Tensor::new([1.0f64, 2.0])).named("a");
    let b = State::new(Tensor::scalar(3.0f64)).named("b");
    let loss = |()| (&a.value() * &b.value()).sum();
    let g: Vec<Tensor> = grad(loss)
        .grad_states(vec![a.clone(), b.clone()])
        .call(())?;
    assert_tensor(&g[0], &[2], &[3.0, 3.0]);
    assert_tensor(&g[1], &[], &[3.0]);
    let (g, l, aux): (Tensor, Tensor, Tensor) = grad(|()| (loss(()), a.value()))
        .grad_states(b.clone())
        .has_aux()
        .return_value()
        .call(())?;
    assert_tensor(&g, &[], &[3.0]);
    assert_tensor(&l, &[], &[9.0]);
    assert_tensor(&aux, &[2], &[1.0, 2.0]);
    // An empty container: an empty gradient, not an error.
    let none: Vec<Tensor> = grad(loss).grad_states(Vec::<State>::new()).call(())?;
    assert!(none.is_empty());
    // Under jit, outside and inside the gradient.
    let step = jit(|()| {
        grad(loss)
            .grad_states(a.clone())
            .call(())
            .unwrap_or_else(|e| panic!("{e}"))
    });
    for _ in 0..2 {
        assert_tensor(&step.call(())?, &[2], &[3.0, 3.0]);
    }
    assert_eq!(step.trace_count(), 1);
    assert_tensor(&jit(loss).call(())?, &[], &[9.0]);
    // There is no argument 0 to differentiate.
    let err = grad(loss).call(()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ArgnumOutOfRange {
                argnum: 0,
                nargs: 0
            }
        ),
        "{err}"
    );
    Ok(())
}

/// `has_aux` with several aux items: one tuple after the value (nested for more than four),
/// returned as that tuple in every row, from a `Result` too.
#[test]
fn aux_tuples_of_several_items() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| {
        let out = m.forward(&x, &y);
        (
            out.sum(),
            (out.clone(), aux_of(&m, &x), 7usize, (out.max(), "tag")),
        )
    };
    let (gx, (out, aux, n, (mx, tag))) = grad(f).argnums(0).has_aux().call(xy())?;
    assert_gx(&gx);
    assert_tensor(&out, &[2], &[5.5, 11.0]);
    assert_aux(&aux);
    assert_eq!((n, tag), (7, "tag"));
    assert_tensor(&mx, &[], &[11.0]);
    let ((v, gx), l, (_, _, n, _)) = grad(f)
        .grad_states(m.states(ParamState))
        .argnums(0)
        .has_aux()
        .return_value()
        .call(xy())?;
    assert_eq!(v.len(), m.states(ParamState).len());
    assert_gx(&gx);
    assert_loss(&l);
    assert_eq!(n, 7);
    let r = |(x, y): (Tensor, Tensor)| -> Result<(Tensor, (Tensor, Tensor))> {
        let out = m.forward(&x, &y);
        Ok((out.sum(), (out.max(), out.min())))
    };
    let (_, (mx, mn)) = grad(r).argnums(0).has_aux().call(xy())?;
    assert_tensor(&mx, &[], &[11.0]);
    assert_tensor(&mn, &[], &[5.5]);
    assert_untouched(&m);
    Ok(())
}

// ------------------------------------------------------------------ state semantics (§1.4)

#[test]
fn gradient_wrt_entry_value_through_overwrite() -> Result<()> {
    // p = 3, x = 2: y = p*x; p := 10*p; return y + p  =>  d/dp = x + 10 = 12, value 36, p = 30.
    let p = State::new(Tensor::scalar(3.0f32)).named("p");
    let f = |x: Tensor| {
        let y = &p.value() * &x;
        p.set_value(10.0 * p.value());
        y + p.value()
    };
    let (gp, value): (Tensor, Tensor) = grad(f)
        .grad_states(p.clone())
        .return_value()
        .call(Tensor::scalar(2.0f32))?;
    assert_tensor(&gp, &[], &[12.0]);
    assert_tensor(&value, &[], &[36.0]);
    assert_tensor(&p.value(), &[], &[30.0]);

    // Again, from 30, with the argument too: d/dp = 12, d/dx = p = 30, value 30*2 + 300.
    let ((gp, gx), value): ((Tensor, Tensor), Tensor) = grad(f)
        .grad_states(p.clone())
        .argnums(0)
        .return_value()
        .call(Tensor::scalar(2.0f32))?;
    assert_tensor(&gp, &[], &[12.0]);
    assert_tensor(&gx, &[], &[30.0]);
    assert_tensor(&value, &[], &[360.0]);
    assert_tensor(&p.value(), &[], &[300.0]);
    // The result is a plain tensor, detached from any trace.
    assert_tensor(&(&p.value() + 1.0), &[], &[301.0]);
    Ok(())
}

#[test]
fn state_written_before_read_has_zero_gradient() -> Result<()> {
    let q = State::new(Tensor::new([7.0f32, 8.0])).named("q");
    let f = |x: Tensor| {
        q.set_value(2.0 * &x);
        (q.value() * &x).sum()
    };
    // Writing counts as a use: no "unused state" error, and the entry value never matters.
    let ((gq, gx), value): ((Tensor, Tensor), Tensor) = grad(f)
        .grad_states(q.clone())
        .argnums(0)
        .return_value()
        .call(Tensor::new([1.0f32, 3.0]))?;
    assert_tensor(&gq, &[2], &[0.0, 0.0]);
    // d/dx sum(2 x^2) = 4x.
    assert_tensor(&gx, &[2], &[4.0, 12.0]);
    assert_tensor(&value, &[], &[20.0]);
    assert_tensor(&q.value(), &[2], &[2.0, 6.0]);
    Ok(())
}

#[test]
fn read_only_states_keep_values_written_states_keep_new_values() -> Result<()> {
    let read_only = ParamState::new(Tensor::new([1.0f32, 2.0])).named("read_only");
    let counter = State::new(Tensor::scalar(0.0f32)).named("counter");
    let cache = State::new(Tensor::zeros(&[2])).named("cache");
    let f = |x: Tensor| {
        let h = &x * &read_only.value();
        counter.set_value(counter.value() + 1.0);
        cache.set_value(&h);
        h.sum()
    };
    for step in 1..=2 {
        let (g, l): (Tensor, Tensor) = grad(f)
            .grad_states(read_only.clone())
            .return_value()
            .call(Tensor::new([3.0f32, 4.0]))?;
        assert_tensor(&g, &[2], &[3.0, 4.0]);
        assert_tensor(&l, &[], &[11.0]);
        assert_tensor(&read_only.value(), &[2], &[1.0, 2.0]);
        assert_tensor(&counter.value(), &[], &[step as f64]);
        assert_tensor(&cache.value(), &[2], &[3.0, 8.0]);
    }
    // Also when the written state is itself differentiated.
    let (g, l): (Tensor, Tensor) = grad(f)
        .grad_states(counter.clone())
        .return_value()
        .call(Tensor::new([3.0f32, 4.0]))?;
    assert_tensor(&g, &[], &[0.0]);
    assert_tensor(&l, &[], &[11.0]);
    assert_tensor(&counter.value(), &[], &[3.0]);
    Ok(())
}

// ------------------------------------------------------------------ the table for the other transforms

/// All twelve rows of the table for a first-order transform `$t`, with the expected results:
/// `$gx`, `$gy` (argument derivatives), `$gw`, `$gb` (state derivatives) and the value `$l`.
macro_rules! twelve_rows {
    ($t:ident, $m:ident, $f:ident, $fa:ident, gx: $gx:expr, gy: $gy:expr, gw: $gw:expr, gb: $gb:expr, l: $l:expr) => {{
        let (gx, gy, gw, gb, l): (Tensor, Tensor, Tensor, Tensor, Tensor) =
            ($gx, $gy, $gw, $gb, $l);
        let check_v = |v: &V| {
            let keys: Vec<String> = v.keys().map(|p| p.to_string()).collect();
            assert_eq!(keys, ["('b',)", "('w',)"]);
            assert_same(&v[&path!("w")], &gw);
            assert_same(&v[&path!("b")], &gb);
        };
        let check_aux = |aux: &Aux| {
            assert_eq!(aux.keys().copied().collect::<Vec<_>>(), ["wx", "xsum"]);
            assert_tensor(&aux["wx"], &[], &[11.0]);
        };
        let states = || $m.states(ParamState);

        // none / any
        let g: Tensor = $t($f).call(xy())?;
        assert_same(&g, &gx);
        let [g1, g0]: [Tensor; 2] = $t($f).argnums([1, 0]).call(xy())?;
        assert_same(&g1, &gy);
        assert_same(&g0, &gx);
        let (g, aux): (Tensor, Aux) = $t($fa).argnums(1).has_aux().call(xy())?;
        assert_same(&g, &gy);
        check_aux(&aux);
        let (g, v): (Tensor, Tensor) = $t($f).return_value().call(xy())?;
        assert_same(&g, &gx);
        assert_same(&v, &l);
        let (g, v, aux): (Tensor, Tensor, Aux) = $t($fa).has_aux().return_value().call(xy())?;
        assert_same(&g, &gx);
        assert_same(&v, &l);
        check_aux(&aux);

        // given / none
        let vs: V = $t($f).grad_states(states()).call(xy())?;
        check_v(&vs);
        let (vs, aux): (V, Aux) = $t($fa).grad_states(states()).has_aux().call(xy())?;
        check_v(&vs);
        check_aux(&aux);
        let (vs, v): (V, Tensor) = $t($f).grad_states(states()).return_value().call(xy())?;
        check_v(&vs);
        assert_same(&v, &l);
        let (vs, v, aux): (V, Tensor, Aux) = $t($fa)
            .grad_states(states())
            .has_aux()
            .return_value()
            .call(xy())?;
        check_v(&vs);
        assert_same(&v, &l);
        check_aux(&aux);

        // given / given
        let (vs, g): (V, Tensor) = $t($f).grad_states(states()).argnums(0).call(xy())?;
        check_v(&vs);
        assert_same(&g, &gx);
        let ((vs, [g1]), aux): ((V, [Tensor; 1]), Aux) = $t($fa)
            .grad_states(states())
            .argnums([1])
            .has_aux()
            .call(xy())?;
        check_v(&vs);
        assert_same(&g1, &gy);
        check_aux(&aux);
        let ((vs, g), v): ((V, Tensor), Tensor) = $t($f)
            .grad_states(states())
            .argnums(1)
            .return_value()
            .call(xy())?;
        check_v(&vs);
        assert_same(&g, &gy);
        assert_same(&v, &l);
        let ((vs, g), v, aux): ((V, Vec<Tensor>), Tensor, Aux) = $t($fa)
            .grad_states(states())
            .argnums(vec![0, 1])
            .has_aux()
            .return_value()
            .call(xy())?;
        check_v(&vs);
        assert_same(&g[0], &gx);
        assert_same(&g[1], &gy);
        assert_same(&v, &l);
        check_aux(&aux);

        // A single grad state: a bare Jacobian.
        let gw1: Tensor = $t($f).grad_states($m.w.clone()).call(xy())?;
        assert_same(&gw1, &gw);
        assert_untouched(&$m);
    }};
}

fn diag(v: &[f32]) -> Tensor {
    let n = v.len();
    let mut d = vec![0.0f32; n * n];
    for i in 0..n {
        d[i * n + i] = v[i];
    }
    Tensor::from_vec(d, &[n, n]).unwrap()
}

#[test]
fn vector_grad_rows() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| m.forward(&x, &y);
    let fa = |(x, y): (Tensor, Tensor)| (m.forward(&x, &y), aux_of(&m, &x));
    // ones @ J: the gradient of sum(F), with F's own value (a vector) as L.
    twelve_rows!(vector_grad, m, f, fa,
        gx: Tensor::new([1.0f32, 2.0]),
        gy: Tensor::new([0.5f32, 0.5]),
        gw: Tensor::new([3.0f32, 4.0]),
        gb: Tensor::scalar(11.0f32),
        l: Tensor::new([5.5f32, 11.0]));
    Ok(())
}

#[test]
fn jacrev_rows() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| m.forward(&x, &y);
    let fa = |(x, y): (Tensor, Tensor)| (m.forward(&x, &y), aux_of(&m, &x));
    // Output dims first, then the input's: dF/db of a 0-d state is (2,).
    twelve_rows!(jacrev, m, f, fa,
        gx: diag(&[1.0, 2.0]),
        gy: diag(&[0.5, 0.5]),
        gw: diag(&[3.0, 4.0]),
        gb: Tensor::new([5.0f32, 6.0]),
        l: Tensor::new([5.5f32, 11.0]));
    Ok(())
}

#[test]
fn jacfwd_rows() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| m.forward(&x, &y);
    let fa = |(x, y): (Tensor, Tensor)| (m.forward(&x, &y), aux_of(&m, &x));
    twelve_rows!(jacfwd, m, f, fa,
        gx: diag(&[1.0, 2.0]),
        gy: diag(&[0.5, 0.5]),
        gw: diag(&[3.0, 4.0]),
        gb: Tensor::new([5.0f32, 6.0]),
        l: Tensor::new([5.5f32, 11.0]));
    Ok(())
}

#[test]
fn jacobian_is_jacrev() -> Result<()> {
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| m.forward(&x, &y);
    let fa = |(x, y): (Tensor, Tensor)| (m.forward(&x, &y), aux_of(&m, &x));
    twelve_rows!(jacobian, m, f, fa,
        gx: diag(&[1.0, 2.0]),
        gy: diag(&[0.5, 0.5]),
        gw: diag(&[3.0, 4.0]),
        gb: Tensor::new([5.0f32, 6.0]),
        l: Tensor::new([5.5f32, 11.0]));
    Ok(())
}

#[test]
fn grad_rows_through_the_macro() -> Result<()> {
    // The same twelve rows for `grad`, on the scalar loss (a cross-check of the per-row tests).
    let m = Tiny::new();
    let f = |(x, y): (Tensor, Tensor)| m.forward(&x, &y).sum();
    let fa = |(x, y): (Tensor, Tensor)| (m.forward(&x, &y).sum(), aux_of(&m, &x));
    twelve_rows!(grad, m, f, fa,
        gx: Tensor::new([1.0f32, 2.0]),
        gy: Tensor::new([0.5f32, 0.5]),
        gw: Tensor::new([3.0f32, 4.0]),
        gb: Tensor::scalar(11.0f32),
        l: Tensor::scalar(16.5f32));
    Ok(())
}

// ------------------------------------------------------------------ jacobians: layout of §4

#[test]
fn jacobian_layout_tanh_layer() -> Result<()> {
    // f(x) = tanh(x @ W + b), W (2,3), b (3,), x (2,): {W: (3,2,3), b: (3,3)} and (3,2) for x.
    let w = ParamState::new(
        Tensor::from_vec(vec![0.1f32, -0.2, 0.3, 0.4, 0.5, -0.6], &[2, 3]).unwrap(),
    );
    let b = ParamState::new(Tensor::new([0.01f32, 0.02, 0.03]));
    let f = |x: Tensor| (x.matmul(&w.value()) + b.value()).tanh();
    let x = Tensor::new([1.0f32, -1.0]);
    let ([jw, jb], jx): ([Tensor; 2], Tensor) = jacrev(f)
        .grad_states([w.clone(), b.clone()])
        .argnums(0)
        .call(x.clone())?;
    assert_eq!(jw.shape(), [3, 2, 3]);
    assert_eq!(jb.shape(), [3, 3]);
    assert_eq!(jx.shape(), [3, 2]);
    let ([fw, fb], fx): ([Tensor; 2], Tensor) = jacfwd(f)
        .grad_states([w.clone(), b.clone()])
        .argnums(0)
        .call(x)?;
    assert!(jw.allclose(&fw, 1e-5, 1e-7));
    assert!(jb.allclose(&fb, 1e-5, 1e-7));
    assert!(jx.allclose(&fx, 1e-5, 1e-7));
    Ok(())
}

// ------------------------------------------------------------------ hessian structure (§4)

#[test]
fn hessian_structure() -> Result<()> {
    // f(x, y) = sum(x^2 * y): Hxx = diag(2y), Hxy = Hyx = diag(2x), Hyy = 0.
    let f = |(x, y): (Tensor, Tensor)| (x.square() * y).sum();
    let [[hxx, hxy], [hyx, hyy]]: [[Tensor; 2]; 2] = hessian(f).argnums([0, 1]).call(xy())?;
    assert_same(&hxx, &diag(&[10.0, 12.0]));
    assert_same(&hxy, &diag(&[6.0, 8.0]));
    assert_same(&hyx, &diag(&[6.0, 8.0]));
    assert_same(&hyy, &Tensor::zeros(&[2, 2]));
    let h: Tensor = hessian(f).call(xy())?;
    assert_same(&h, &diag(&[10.0, 12.0]));

    // Of states: {outer: {inner: block}}, block shape outer + inner.
    let m = Tiny::new();
    let g = |(x, y): (Tensor, Tensor)| {
        (m.w.value().square() * x).sum() + m.b.value().square() * y.sum()
    };
    let hs: BTreeMap<Path, BTreeMap<Path, Tensor>> =
        hessian(g).grad_states(m.states(ParamState)).call(xy())?;
    let (w, b) = (path!("w"), path!("b"));
    assert_same(&hs[&w][&w], &diag(&[6.0, 8.0]));
    assert_tensor(&hs[&w][&b], &[2], &[0.0, 0.0]);
    assert_tensor(&hs[&b][&w], &[2], &[0.0, 0.0]);
    assert_tensor(&hs[&b][&b], &[], &[22.0]);
    // A list gives a list of lists.
    let hl: Vec<Vec<Tensor>> = hessian(g)
        .grad_states(vec![m.b.clone(), m.w.clone()])
        .call(xy())?;
    assert_tensor(&hl[0][0], &[], &[22.0]);
    assert_same(&hl[1][1], &diag(&[6.0, 8.0]));
    assert_untouched(&m);
    Ok(())
}
