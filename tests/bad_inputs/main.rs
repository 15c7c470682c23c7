//! A corpus of bad inputs across the public API. Each case must end in a typed error or a
//! documented result: a panic escaping a `try_` form or a transform is a failure, and so is any
//! state whose value (bit for bit, with shape and dtype) differs after the failing call. The
//! panicking convenience operators are cases too: they must panic with the error's message as a
//! `String`. Each test reports `N inputs, 0 panics, 0 states changed` and lists any bad case.

use stategrad::plugins::Registry;
use stategrad::prelude::*;
use stategrad::{jit::cond, jit::for_loop, jit::scan, ParamValue};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a case checks; `Err` says what went wrong.
type Check<'a> = Box<dyn Fn() -> std::result::Result<(), String> + 'a>;

struct Case<'a> {
    name: String,
    states: Vec<State>,
    run: Check<'a>,
}

#[derive(Default)]
struct Corpus<'a> {
    cases: Vec<Case<'a>>,
}

impl<'a> Corpus<'a> {
    fn add(
        &mut self,
        name: impl Into<String>,
        states: &[&State],
        run: impl Fn() -> std::result::Result<(), String> + 'a,
    ) {
        self.cases.push(Case {
            name: name.into(),
            states: states.iter().map(|s| (*s).clone()).collect(),
            run: Box::new(run),
        });
    }

    /// Run every case; panics listing the bad ones.
    fn run(self, label: &str) {
        let n = self.cases.len();
        let (mut panics, mut changed, mut wrong) = (0, 0, 0);
        let mut bad = Vec::new();
        for case in &self.cases {
            let before: Vec<Snapshot> = case.states.iter().map(snapshot).collect();
            match catch_unwind(AssertUnwindSafe(|| (case.run)())) {
                Ok(Ok(())) => {}
                Ok(Err(msg)) => {
                    wrong += 1;
                    bad.push(format!("{}: {msg}", case.name));
                }
                Err(p) => {
                    panics += 1;
                    bad.push(format!("{}: panicked: {}", case.name, message(&*p)));
                }
            }
            for (s, b) in case.states.iter().zip(&before) {
                if &snapshot(s) != b {
                    changed += 1;
                    bad.push(format!("{}: state {} changed", case.name, s.label()));
                }
            }
        }
        let report = format!(
            "{label}: {n} inputs, {panics} panics, {changed} states changed, {wrong} wrong results"
        );
        println!("{report}");
        assert!(bad.is_empty(), "{report}\n{}", bad.join("\n"));
    }
}

/// A state's value as shape, dtype and the bits of every element.
type Snapshot = (Vec<usize>, DType, Vec<u64>);

fn snapshot(s: &State) -> Snapshot {
    let t = s.value();
    let bits = match t.dtype() {
        DType::F32 => t
            .to_vec::<f32>()
            .iter()
            .map(|x| x.to_bits() as u64)
            .collect(),
        _ => t.to_vec::<f64>().iter().map(|x| x.to_bits()).collect(),
    };
    (t.shape().to_vec(), t.dtype(), bits)
}

fn message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "<not a string: Box<dyn Any>>".into())
}

/// A typed error matching `pred`.
fn err<T>(r: Result<T>, pred: impl Fn(&Error) -> bool) -> std::result::Result<(), String> {
    match r {
        Err(e) if pred(&e) => Ok(()),
        Err(e) => Err(format!("unexpected error {e:?}")),
        Ok(_) => Err("succeeded".into()),
    }
}

/// A panic whose `String` message contains every one of `parts`.
fn panics_with<T>(f: impl FnOnce() -> T, parts: &[&str]) -> std::result::Result<(), String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(_) => Err("did not panic".into()),
        Err(p) => {
            let Some(msg) = p.downcast_ref::<String>() else {
                return Err(format!("payload is not a String: {}", message(&*p)));
            };
            match parts.iter().find(|part| !msg.contains(*part)) {
                Some(part) => Err(format!("message {msg:?} lacks {part:?}")),
                None => Ok(()),
            }
        }
    }
}

fn check(ok: bool, what: &str) -> std::result::Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

macro_rules! is {
    ($pat:pat) => {
        |e: &Error| matches!(e, $pat)
    };
}

fn t32(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| i as f32 * 0.5 + 1.0).collect(), shape).unwrap()
}

fn t64(shape: &[usize]) -> Tensor {
    t32(shape).cast(DType::F64)
}

mod loops;
mod ops;
mod transforms;
