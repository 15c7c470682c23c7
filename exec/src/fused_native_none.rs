//! Builds without generated code for fused passes (no `native` feature, or not x86-64): every
//! op of a pass runs its block kernel.

use std::sync::Arc;

use crate::fused::{FusedArg, FusedInput, FusedOp};
use crate::Element;

/// Most base pointers of a run (unused in this build).
pub(crate) const MAX_BASES: usize = 10;

/// Positions before a pass structure gets code (no code in this build).
#[allow(dead_code)]
pub(crate) const NATIVE_AFTER_ELEMENTS: usize = 1 << 20;

/// What a base pointer of a run points at (no run exists in this build).
#[allow(dead_code)]
#[derive(Clone, Copy, Debug)]
pub(crate) enum Base {
    Input(usize),
    Scratch(usize),
    Direct,
}

/// Generated code for a run of ops; none exists in this build.
pub(crate) struct Run {
    #[allow(dead_code)]
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) step: usize,
    pub(crate) bases: Vec<Base>,
    pub(crate) scalars: Vec<usize>,
    never: std::convert::Infallible,
}

impl Run {
    /// Never called: no run exists.
    ///
    /// # Safety
    /// None needed; no value of this type exists.
    pub(crate) unsafe fn call<T: Element>(&self, _: &[*mut u8], _: &[T], _: usize) -> bool {
        match self.never {}
    }
}

/// The runs of a pass; none exists in this build.
pub(crate) struct Plan {
    pub(crate) runs: Vec<Run>,
    pub(crate) whole: bool,
    never: std::convert::Infallible,
}

impl Plan {
    pub(crate) fn run_at(&self, _: usize) -> Option<(usize, &Run)> {
        match self.never {}
    }

    pub(crate) fn covers(&self, _: usize) -> bool {
        match self.never {}
    }
}

/// No generated code in this build.
#[allow(dead_code)]
pub(crate) fn available() -> bool {
    false
}

/// No generated code in this build.
pub(crate) fn plan<T: Element>(
    _: &[FusedOp],
    _: &[FusedInput<'_, T>],
    _: &[usize],
    _: &[FusedArg],
    _: Option<usize>,
    _: usize,
) -> Option<Arc<Plan>> {
    None
}

/// No cache in this build.
pub(crate) fn clear() -> usize {
    0
}
