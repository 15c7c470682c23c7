//! Arena programs shared by structure: every jitted function whose trace lowers to the same
//! steps on the same arena layout runs the same [`Program`], so its run count, its native code
//! and its generated loop are built once per process, not once per function. A [`for_loop`]
//! over a closure makes a new jitted function on every call: with this, the second call
//! replays the code the first one (or ten) paid for.
//!
//! [`for_loop`]: super::for_loop

use super::lower::{build, LStep, Program};
use crate::tensor::DType;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Programs the process keeps at most (least recently used dropped first); each holds its
/// steps' closures and, once hot, its native code (tens of KB).
pub const SHARED_PROGRAM_LIMIT: usize = 64;

struct Entry {
    hash: u64,
    key: String,
    program: Arc<Program>,
    used: u64,
}

struct Cache {
    entries: Vec<Entry>,
    clock: u64,
}

static CACHE: parking_lot::Mutex<Cache> = parking_lot::Mutex::new(Cache {
    entries: Vec::new(),
    clock: 0,
});

/// The program of `steps` on `size` elements of `dtype`: the shared one when the process has
/// built it before, else a new one, kept. The key holds whether code generation was switched on
/// when it was built, so a comparison run with it off gets programs of its own (which go native
/// only if it is switched back on, as any program does).
pub(crate) fn program(dtype: DType, steps: &[LStep], size: usize) -> Arc<Program> {
    // The description of the program: every step with its kernel, its slots and immediates
    // (constants' values are loaded per run, not part of the program). Immediates again by
    // their bits: the text shows every NaN alike.
    use std::fmt::Write;
    let native = stategrad_exec::arena::native_code_enabled();
    let mut key = format!("{dtype:?}/{size}/{native}/{steps:?}/");
    for bits in steps.iter().flat_map(LStep::immediate_bits) {
        let _ = write!(key, "{bits:x},");
    }
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    let hash = h.finish();
    if let Some(p) = lookup(hash, &key) {
        return p;
    }
    // Built outside the lock (lowering on other threads goes on); a program another thread
    // kept for the same key meanwhile wins, so every function shares one.
    let program = Arc::new(build(dtype, steps, size));
    let mut cache = CACHE.lock();
    cache.clock += 1;
    let now = cache.clock;
    if let Some(e) = cache
        .entries
        .iter_mut()
        .find(|e| e.hash == hash && e.key == key)
    {
        e.used = now;
        return e.program.clone();
    }
    if cache.entries.len() >= SHARED_PROGRAM_LIMIT {
        if let Some(oldest) = (0..cache.entries.len()).min_by_key(|&i| cache.entries[i].used) {
            cache.entries.swap_remove(oldest);
        }
    }
    cache.entries.push(Entry {
        hash,
        key,
        program: program.clone(),
        used: now,
    });
    program
}

fn lookup(hash: u64, key: &str) -> Option<Arc<Program>> {
    let mut cache = CACHE.lock();
    cache.clock += 1;
    let now = cache.clock;
    let e = cache
        .entries
        .iter_mut()
        .find(|e| e.hash == hash && e.key == key)?;
    e.used = now;
    Some(e.program.clone())
}

/// Frees the process's shared arena programs and returns how many it held: functions whose
/// traces lower to the same steps share one program (its run count, its native code and its
/// generated loops), so that a [`for_loop`](super::for_loop), which makes a new function on
/// every call, finds the code its earlier calls paid for. At most [`SHARED_PROGRAM_LIMIT`] are
/// kept (least recently used dropped first). Functions that still hold a program keep it until
/// they drop it (or [`Jit::clear_cache`](super::Jit::clear_cache)); later traces build and
/// share new ones.
///
/// ```
/// use stategrad_core::{jit, Tensor};
/// let f = jit(|x: Tensor| &x * 2.0 + 1.0);
/// f.call(Tensor::ones(&[3])).unwrap();
/// assert!(jit::clear_shared_programs() >= 1);
/// assert_eq!(jit::clear_shared_programs(), 0);
/// ```
pub fn clear_shared_programs() -> usize {
    let mut cache = CACHE.lock();
    let n = cache.entries.len();
    cache.entries.clear();
    n
}
