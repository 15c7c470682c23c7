//! Builds without the `native` feature: no code generator, every arena program runs as
//! closures.

use crate::arena::{ArenaFn, ArenaStep};
use crate::Element;

/// Generated code; none exists in this build.
pub(crate) enum Code<T> {
    #[allow(dead_code)]
    Never(std::convert::Infallible, std::marker::PhantomData<T>),
}

impl<T: Element> Code<T> {
    pub(crate) fn run(&self, _: &mut [T], _: &[ArenaFn<T>]) {
        match *self {
            Code::Never(never, _) => match never {},
        }
    }

    pub(crate) fn run_loop(&self, _: &mut [T], _: &[ArenaFn<T>], _: usize, _: usize) {
        match *self {
            Code::Never(never, _) => match never {},
        }
    }
}

/// No code generator in this build.
pub(crate) fn available() -> bool {
    false
}

/// Never generates code in this build.
pub(crate) fn compile<T: Element>(_: &[ArenaStep], _: usize) -> Option<Code<T>> {
    None
}

/// Never generates code in this build.
pub(crate) fn compile_loop<T: Element>(
    _: &[ArenaStep],
    _: usize,
    _: &crate::arena_loop::ArenaLoop,
) -> Option<Code<T>> {
    None
}
