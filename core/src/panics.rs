//! Errors through panics: the infallible operators raise a typed error as a panic payload
//! ([`raise`]), and the transforms, `jit`'s replays and [`catching`] turn it back into `Err`
//! ([`from_panic`]); the quiet hook keeps those caught panics from printing.

use crate::error::{Error, Result};
use std::sync::Once;

/// A typed error carried through a panic by the infallible operators (`&a + &b`), so that the
/// transform running the function returns it as `Err` (see [`crate::tensor`]).
#[derive(Debug)]
pub(crate) struct OpPanic(pub Error);

/// Raise `err` from an infallible operator. Where something will catch it (a transform's frame
/// is open, a parallel chunk of one runs, or [`catching`] is active) it travels as a typed
/// payload that becomes `Err` again; otherwise nothing will, so it panics with the message as a
/// `String` at the user's line (`#[track_caller]` down every infallible operator).
#[track_caller]
pub(crate) fn raise(err: Error) -> ! {
    if typed_panics() {
        install_quiet_hook();
        std::panic::panic_any(OpPanic(err))
    }
    panic!("{err}")
}

/// The value, or the error raised at the caller's line (see [`raise`]).
#[track_caller]
pub(crate) fn ok<T>(r: crate::error::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => raise(e),
    }
}

thread_local! {
    static CATCHING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// True where a raised error is caught and turned back into `Err` on this thread.
pub(crate) fn typed_panics() -> bool {
    crate::parallel::sequential() || CATCHING.try_with(std::cell::Cell::get).unwrap_or(0) > 0
}

/// A transform's frame opened on this thread: it catches raised errors until
/// [`frame_closed`]. (The frames tell this module, not the other way round, so `panics`
/// depends on nothing that depends on it.)
pub(crate) fn frame_opened() {
    CATCHING.with(|c| c.set(c.get() + 1));
}

/// The frame of the last [`frame_opened`] closed.
pub(crate) fn frame_closed() {
    CATCHING.with(|c| c.set(c.get() - 1));
}

/// Run `f`, turning an error raised inside it back into `Err` (panics of other kinds go on).
pub(crate) fn catching<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    struct Depth;
    impl Drop for Depth {
        fn drop(&mut self) {
            CATCHING.with(|c| c.set(c.get() - 1));
        }
    }
    CATCHING.with(|c| c.set(c.get() + 1));
    let _depth = Depth;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => match payload.downcast::<OpPanic>() {
            Ok(op) => Err(op.0),
            Err(other) => std::panic::resume_unwind(other),
        },
    }
}

/// Turn a caught panic payload back into an [`Error`].
pub(crate) fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Error {
    match payload.downcast::<OpPanic>() {
        Ok(op) => op.0,
        Err(payload) => {
            let msg = if let Some(s) = payload.downcast_ref::<&'static str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "non-string panic payload".to_string()
            };
            Error::Panicked(msg)
        }
    }
}

/// Silence the default panic message for typed operator errors, which transforms turn into `Err`.
pub(crate) fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<OpPanic>().is_some() && typed_panics() {
                return;
            }
            prev(info);
        }));
    });
}
