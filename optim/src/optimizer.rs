//! The built optimizer: its states, the checks on the gradients, and the update rules.

use crate::schedule::Schedule;
use stategrad_core::{
    DType, Error, Path, PathKey, Result, ShapeDisplay, State, StateKind, StateMap, Tensor,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// An optimizer built over a set of parameter [`State`]s.
///
/// [`step`](Optimizer::step) reads the parameters and the optimizer's own states (moments, step
/// count) and writes them back with [`State::set_value`], all in tensor operations: called
/// eagerly it updates the states at once; called inside `jit` the reads and writes become the
/// program's state inputs and outputs, so every replay updates them in place and the learning
/// rate is recomputed from the count.
pub trait Optimizer: Send + Sync {
    /// One update from `grads`, keyed like the parameters (what
    /// `grad(..).grad_states(params)` returns).
    ///
    /// Errors (typed, and nothing is written): a gradient whose path is not a parameter, a
    /// parameter without a gradient, a gradient or optimizer state whose shape differs from its
    /// parameter's. With no parameters (and no gradients) the step does nothing.
    fn step(&self, grads: &BTreeMap<Path, Tensor>) -> Result<()>;

    /// The parameters it updates.
    fn params(&self) -> &StateMap;

    /// Its own states, for checkpoints: `("count",)` and one entry per slot and parameter,
    /// `(slot, <parameter path…>)`, e.g. `('mu', 'weight')`.
    fn states(&self) -> StateMap;

    /// The step-count state (a 0-d `f64` tensor, the number of steps taken).
    fn count(&self) -> &State;

    /// The learning rate the next step will use (a 0-d `f64` tensor).
    fn learning_rate(&self) -> Tensor;

    /// Put the count and every slot back to their initial values (parameters are untouched).
    fn reset(&self);
}

/// One kind of per-parameter state (`mu`, `nu`, `trace`, …) and its initial value.
pub(crate) struct Slot {
    pub(crate) name: &'static str,
    pub(crate) init: f64,
    pub(crate) states: StateMap,
}

/// An update rule and its hyper-parameters (optax's chains; see the builders for the
/// equations).
#[derive(Clone, Debug)]
pub(crate) enum Rule {
    /// `optax.sgd`; slot `trace` when `momentum` is set.
    Sgd {
        momentum: Option<f64>,
        nesterov: bool,
    },
    /// `optax.adam` / `optax.adamw`; slots `mu`, `nu`.
    Adam {
        b1: f64,
        b2: f64,
        eps: f64,
        eps_root: f64,
        nesterov: bool,
        weight_decay: f64,
        decayed: BTreeSet<Path>,
    },
    /// `optax.rmsprop`; slots `nu`, `mu` (centered), `trace` (momentum).
    RmsProp {
        decay: f64,
        eps: f64,
        centered: bool,
        momentum: Option<f64>,
        nesterov: bool,
    },
    /// `optax.adagrad`; slot `sum_of_squares`.
    Adagrad { eps: f64 },
}

impl Rule {
    /// The slots the rule keeps, with their initial values.
    pub(crate) fn slots(&self, initial: f64) -> Vec<(&'static str, f64)> {
        match self {
            Rule::Sgd { momentum, .. } => momentum.map(|_| ("trace", 0.0)).into_iter().collect(),
            Rule::Adam { .. } => vec![("mu", 0.0), ("nu", 0.0)],
            Rule::RmsProp {
                centered, momentum, ..
            } => {
                let mut s = vec![("nu", initial)];
                if *centered {
                    s.push(("mu", 0.0));
                }
                if momentum.is_some() {
                    s.push(("trace", 0.0));
                }
                s
            }
            Rule::Adagrad { .. } => vec![("sum_of_squares", initial)],
        }
    }
}

/// An optimizer built by [`Sgd::build`](crate::Sgd::build), [`Adam::build`](crate::Adam::build),
/// … : the parameters, the count and the slot states, the rule, the schedule and the clipping.
pub struct Optim {
    pub(crate) name: &'static str,
    pub(crate) params: StateMap,
    pub(crate) count: State,
    pub(crate) slots: Vec<Slot>,
    pub(crate) rule: Rule,
    pub(crate) lr: Schedule,
    pub(crate) clip: Option<f64>,
}

impl Optim {
    /// Make the states for `params` (outside any transform: states made inside a traced
    /// function are local to that call).
    pub(crate) fn new(
        name: &'static str,
        params: &StateMap,
        rule: Rule,
        initial: f64,
        lr: Schedule,
        clip: Option<f64>,
    ) -> Optim {
        let count = State::with_kind(StateKind::LongTerm, Tensor::scalar(0.0f64))
            .named(format!("{name}.count"));
        let slots = rule
            .slots(initial)
            .into_iter()
            .map(|(slot, init)| Slot {
                name: slot,
                init,
                states: params
                    .iter()
                    .map(|(path, p)| {
                        let v = Tensor::full_dtype(&p.shape(), init, p.value().dtype());
                        let s = State::with_kind(StateKind::LongTerm, v)
                            .named(format!("{name}.{slot}{path}"));
                        (path.clone(), s)
                    })
                    .collect(),
            })
            .collect();
        Optim {
            name,
            params: params.clone(),
            count,
            slots,
            rule,
            lr,
            clip,
        }
    }

    /// The slot states named `slot` (`"mu"`, `"nu"`, `"trace"`, `"sum_of_squares"`), keyed
    /// by parameter path.
    pub fn slot(&self, slot: &str) -> Option<&StateMap> {
        self.slots
            .iter()
            .find(|s| s.name == slot)
            .map(|s| &s.states)
    }

    /// The optimizer's name (`"adam"`, …).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Every gradient matches a parameter and every parameter has a gradient of its shape.
    fn check(&self, grads: &BTreeMap<Path, Tensor>) -> Result<()> {
        let bad = |msg: String| Error::InvalidArgument {
            op: "optim.step",
            msg,
        };
        // A count restored from a checkpoint with another shape would broadcast into every
        // parameter's update.
        let count_shape = self.count.shape();
        if !count_shape.is_empty() {
            return Err(bad(format!(
                "the step count must be a scalar, found shape {}",
                ShapeDisplay(count_shape)
            )));
        }
        if let Some(path) = grads.keys().find(|p| !self.params.contains_key(p)) {
            return Err(bad(format!(
                "the gradient at {path} has no parameter (the {} optimizer was built over {})",
                self.name,
                list(self.params.keys())
            )));
        }
        for (path, p) in &self.params {
            let g = grads.get(path).ok_or_else(|| {
                bad(format!(
                    "no gradient for the parameter at {path} (got gradients for {})",
                    list(grads.keys())
                ))
            })?;
            let shape = p.shape();
            if g.shape() != shape.as_slice() {
                return Err(Error::ShapeMismatch {
                    op: "optim.step",
                    lhs: ShapeDisplay(shape),
                    rhs: ShapeDisplay(g.shape().to_vec()),
                });
            }
            for slot in &self.slots {
                let s = slot.states[path].shape();
                if s != shape {
                    return Err(Error::ShapeMismatch {
                        op: "optim.step",
                        lhs: ShapeDisplay(shape),
                        rhs: ShapeDisplay(s),
                    });
                }
            }
        }
        Ok(())
    }
}

fn list<'a>(paths: impl Iterator<Item = &'a Path>) -> String {
    let v: Vec<String> = paths.map(|p| p.to_string()).collect();
    if v.is_empty() {
        "no paths".into()
    } else {
        v.join(", ")
    }
}

/// optax `clip_by_global_norm(max_norm)`: `norm = sqrt(sum of every g^2)` (summed in `f64`);
/// each `g` is kept where `norm < max_norm`, else replaced by `(g / norm) * max_norm`.
pub(crate) fn clip_by_global_norm(grads: Vec<Tensor>, max_norm: f64) -> Vec<Tensor> {
    let Some(first) = grads.first() else {
        return grads;
    };
    let mut sq = first.cast(DType::F64).square().sum();
    for g in &grads[1..] {
        sq = sq + g.cast(DType::F64).square().sum();
    }
    let norm = sq.sqrt();
    let keep = norm.lt_scalar(max_norm);
    grads
        .into_iter()
        .map(|g| {
            let clipped = (&g / &norm.cast(g.dtype())).mul_scalar(max_norm);
            Tensor::select(&keep, &g, &clipped)
        })
        .collect()
}

/// optax `update_moment`: `(1 - decay) * g + decay * t`.
fn ema(g: &Tensor, t: &Tensor, decay: f64) -> Tensor {
    g.mul_scalar(1.0 - decay) + t.mul_scalar(decay)
}

impl Optimizer for Optim {
    fn step(&self, grads: &BTreeMap<Path, Tensor>) -> Result<()> {
        self.check(grads)?;
        if self.params.is_empty() {
            return Ok(());
        }
        let paths: Vec<&Path> = self.params.keys().collect();
        let values: Vec<Tensor> = self.params.values().map(State::value).collect();
        let mut gs: Vec<Tensor> = paths
            .iter()
            .zip(&values)
            .map(|(path, p)| grads[*path].cast(p.dtype()))
            .collect();
        if let Some(max) = self.clip {
            gs = clip_by_global_norm(gs, max);
        }
        let count = self.count.value().cast(DType::F64);
        let lr = self.lr.at(&count);
        if !lr.shape().is_empty() {
            return Err(Error::InvalidArgument {
                op: "optim.step",
                msg: format!(
                    "the learning-rate schedule must give a scalar, gave shape {}",
                    lr.shape_display()
                ),
            });
        }
        let count_inc = count.add_scalar(1.0);
        // Adam's bias corrections 1 - b1^(t+1), 1 - b2^(t+1) and (Nesterov) 1 - b1^(t+2), in f64.
        let corrections = match &self.rule {
            Rule::Adam { b1, b2, .. } => Some((
                1.0 - Tensor::scalar(*b1).pow(&count_inc),
                1.0 - Tensor::scalar(*b2).pow(&count_inc),
                1.0 - Tensor::scalar(*b1).pow(&count_inc.add_scalar(1.0)),
            )),
            _ => None,
        };

        let mut writes: Vec<(&State, Tensor)> = Vec::new();
        for (i, (path, p)) in paths.iter().zip(&values).enumerate() {
            let g = &gs[i];
            let dt = p.dtype();
            let lr = lr.cast(dt);
            let slot = |name: &str| -> &State {
                &self
                    .slots
                    .iter()
                    .find(|s| s.name == name)
                    .expect("slot")
                    .states[*path]
            };
            let mut set = |s: &'static str, v: Tensor| writes.push((slot(s), v));
            let new_p = match &self.rule {
                Rule::Sgd { momentum, nesterov } => {
                    let u = match momentum {
                        None => g.clone(),
                        Some(m) => {
                            // trace: t = g + m * t; update = g + m * t (nesterov) or t.
                            let t = g + slot("trace").value().mul_scalar(*m);
                            let u = if *nesterov {
                                g + t.mul_scalar(*m)
                            } else {
                                t.clone()
                            };
                            set("trace", t);
                            u
                        }
                    };
                    p - &lr * &u
                }
                Rule::Adam {
                    eps,
                    eps_root,
                    b1,
                    b2,
                    nesterov,
                    weight_decay,
                    decayed,
                } => {
                    let (c1, c2, c1_next) = corrections.as_ref().expect("adam corrections");
                    let mu = ema(g, &slot("mu").value(), *b1);
                    let nu = ema(&g.square(), &slot("nu").value(), *b2);
                    let mu_hat = if *nesterov {
                        // b1 * mu / (1 - b1^(t+2)) + (1 - b1) * g / (1 - b1^(t+1))
                        (&mu / &c1_next.cast(dt)).mul_scalar(*b1)
                            + (g / &c1.cast(dt)).mul_scalar(1.0 - *b1)
                    } else {
                        &mu / &c1.cast(dt)
                    };
                    let nu_hat = &nu / &c2.cast(dt);
                    let mut u = mu_hat / nu_hat.add_scalar(*eps_root).sqrt().add_scalar(*eps);
                    if *weight_decay != 0.0 && decayed.contains(*path) {
                        u = u + p.mul_scalar(*weight_decay);
                    }
                    set("mu", mu);
                    set("nu", nu);
                    p - &lr * &u
                }
                Rule::RmsProp {
                    decay,
                    eps,
                    centered,
                    momentum,
                    nesterov,
                } => {
                    let nu = ema(&g.square(), &slot("nu").value(), *decay);
                    let denom = if *centered {
                        let mu = ema(g, &slot("mu").value(), *decay);
                        let d = &nu - mu.square();
                        set("mu", mu);
                        d
                    } else {
                        nu.clone()
                    };
                    set("nu", nu);
                    let u = denom.add_scalar(*eps).sqrt().recip() * g;
                    // scale_by_learning_rate comes before the momentum trace in optax's chain.
                    let v = -(&lr * &u);
                    let v = match momentum {
                        None => v,
                        Some(m) => {
                            let t = &v + slot("trace").value().mul_scalar(*m);
                            let out = if *nesterov {
                                &v + t.mul_scalar(*m)
                            } else {
                                t.clone()
                            };
                            set("trace", t);
                            out
                        }
                    };
                    p + v
                }
                Rule::Adagrad { eps } => {
                    let sos = g.square() + slot("sum_of_squares").value();
                    let inv = Tensor::select(
                        &sos.gt_scalar(0.0),
                        &sos.add_scalar(*eps).sqrt().recip(),
                        &sos.zeros_like(),
                    );
                    let u = inv * g;
                    set("sum_of_squares", sos);
                    p - &lr * &u
                }
            };
            writes.push((&self.params[*path], new_p));
        }
        for (s, v) in writes {
            s.set_value(v);
        }
        self.count.set_value(count_inc);
        Ok(())
    }

    fn params(&self) -> &StateMap {
        &self.params
    }

    fn states(&self) -> StateMap {
        let mut out = StateMap::new();
        out.insert(Path(vec![PathKey::from("count")]), self.count.clone());
        for slot in &self.slots {
            for (path, s) in &slot.states {
                let mut keys = vec![PathKey::from(slot.name)];
                keys.extend(path.keys().iter().cloned());
                out.insert(Path(keys), s.clone());
            }
        }
        out
    }

    fn count(&self) -> &State {
        &self.count
    }

    fn learning_rate(&self) -> Tensor {
        self.lr.at(&self.count.value())
    }

    fn reset(&self) {
        self.count.set_value(Tensor::scalar(0.0f64));
        for slot in &self.slots {
            for s in slot.states.values() {
                let dt = s.value().dtype();
                s.set_value(Tensor::full_dtype(&s.shape(), slot.init, dt));
            }
        }
    }
}

impl fmt::Debug for Optim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Optim")
            .field("name", &self.name)
            .field("rule", &self.rule)
            .field("learning_rate", &self.lr)
            .field("clip_by_global_norm", &self.clip)
            .field("params", &self.params.keys().collect::<Vec<_>>())
            .finish()
    }
}
