//! The parallelism scope of this thread: inside a parallel chunk (a Jacobian's rows, vmap's
//! examples) kernels stay sequential, so work is not split twice over the same pool.

use std::cell::Cell;

thread_local! {
    static SEQUENTIAL: Cell<bool> = const { Cell::new(false) };
}

/// True if kernels on this thread must stay sequential (inside a parallel Jacobian chunk).
pub(crate) fn sequential() -> bool {
    SEQUENTIAL.with(Cell::get)
}

/// True if work on this thread may be split over the rayon pool: not inside a parallel chunk,
/// and the pool has more than one thread (on one, a split only adds the hand-off to the pool).
pub(crate) fn may_split() -> bool {
    !sequential() && rayon::current_num_threads() > 1
}

/// While alive, kernels on this thread stay sequential; dropping it (on unwind too) restores the
/// flag it found.
pub(crate) struct SequentialScope {
    previous: bool,
}

impl SequentialScope {
    /// Keep kernels on this thread sequential until the scope is dropped.
    pub(crate) fn enter() -> SequentialScope {
        SequentialScope {
            previous: SEQUENTIAL.with(|s| s.replace(true)),
        }
    }
}

impl Drop for SequentialScope {
    fn drop(&mut self) {
        // Restored on unwind too: the thread is a pooled rayon worker, and a flag left set by a
        // panicking chunk would keep every later kernel on it sequential.
        let _ = SEQUENTIAL.try_with(|s| s.set(self.previous));
    }
}

/// Run `f` with kernels kept sequential on this thread.
pub(crate) fn with_sequential<R>(f: impl FnOnce() -> R) -> R {
    let _scope = SequentialScope::enter();
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_sequential_restores_the_flag_on_unwind() {
        assert!(!sequential());
        let r = std::panic::catch_unwind(|| with_sequential(|| panic!("chunk failed")));
        assert!(r.is_err());
        assert!(
            !sequential(),
            "a panicking chunk left the thread sequential"
        );
        // Nested: the inner call restores the outer value, not `false`.
        with_sequential(|| {
            let r = std::panic::catch_unwind(|| with_sequential(|| panic!("inner")));
            assert!(r.is_err());
            assert!(sequential());
        });
        assert!(!sequential());
    }
}
