//! AVX-512 code for runs of element-wise ops inside a fused pass.
//!
//! The block walk of [`fused`](mod@crate::fused) runs each op over a block before the next one
//! starts, so every op loads its operands from L1 and stores its result there. For cheap ops
//! that traffic is most of the cost (about 1.4 ns per op per 16-lane vector, where the op
//! itself takes a cycle). Here a run of two or more consecutive ops that the generator
//! reproduces becomes one generated loop: each operand is loaded once per vector, every
//! intermediate stays in a `zmm` register, and only the values that something outside the run
//! reads are stored. Each iteration handles two vectors with their instructions interleaved
//! (one vector's `exp` is a long chain of dependent instructions; two independent chains keep
//! both vector ports busy), or one when the registers do not allow two. A pass that is a
//! single run reading only input slices covers a whole chunk per call.
//!
//! The ops: the IEEE-exact ones (arithmetic, multiply-add, max/min, neg, abs, sqrt, square,
//! recip, relu, copies), and, for `f32`, `exp`, `tanh` and
//! `sigmoid` (the block kernels' own polynomials, instruction for instruction). Every lane is
//! computed with the same operations, in the same order and rounding, as the block kernels (a
//! multiply-add op is a multiply then an add, never a contracted FMA), so a pass gives the
//! same bits with and without generated code. Lanes where the kernels fall back to `std`
//! (`exp` outside `[-87, 88]`, say) are detected in the loop: the call reports them and the
//! block kernels redo that part of the pass.
//!
//! Code is made once per distinct pass structure, after the structure has gone through
//! [`tuning::fused_native_after_elements`] positions on the block kernels (at once or over
//! several calls: the making costs a fraction of a millisecond), and kept in a process-wide
//! cache of at most [`tuning::fused_code_cache_limit`] structures with code, the least
//! recently used freed first (a pass running its code holds it: it is unmapped when the last
//! holder lets go). Hosts without AVX-512F, and processes where
//! [`codegen_switched_off`](crate::arena::codegen_switched_off), never use it.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use iced_x86::IcedError;
use lru::LruCache;

use stategrad_simd::isa::{isa, Isa};

use crate::fused::{FusedArg, FusedInput, FusedOp};
use crate::tuning;
use crate::{BinaryOp, Element, UnaryOp};

mod emit;
use emit::{Emitter, Pool, MAX_GROUPS, ZMM};

/// Most base pointers one run may read or write (the general registers it keeps them in).
pub(crate) const MAX_BASES: usize = 10;

/// Most pass structures remembered as seen without code yet (with the positions they went
/// through); the least recently seen is forgotten first (and starts counting again if seen
/// again). Bounds the memory of a process that sees ever new structures.
const SEEN_LIMIT: usize = 4096;

/// Plans alive (in the cache or held by a running pass): each holds its runs' code mapped.
static LIVE_PLANS: AtomicUsize = AtomicUsize::new(0);

/// Bytes per vector (one `zmm` register): 16 `f32` or 8 `f64` lanes; runs cover whole vectors.
pub(crate) const VECTOR_BYTES: usize = 64;

/// What a base pointer of a run points at: the first position the call covers (a block, or a
/// whole chunk for a whole-pass run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Base {
    /// Input `i`: its slice, or the block copy of the output it aliases.
    Input(usize),
    /// The scratch block of op `k`.
    Scratch(usize),
    /// The output the pass's last op writes directly.
    Direct,
}

/// Generated code for ops `start..end` of a pass.
pub(crate) struct Run {
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Bytes per loop iteration: the code covers a whole number of them.
    pub(crate) step: usize,
    /// Base pointers, in the order the code reads them from its table.
    pub(crate) bases: Vec<Base>,
    /// Inputs that are scalars, in the order the code reads them from its table.
    pub(crate) scalars: Vec<usize>,
    /// Keeps the code mapped while `entry` may be called.
    _code: memmap2::Mmap,
    entry: Entry,
}

/// The generated function: `(bases, scalars, bytes)`; nonzero when some lane of a
/// transcendental op needs the `std` fallback (the caller then redoes the run's ops on the
/// block kernels, which handle it).
type Entry = unsafe extern "sysv64" fn(*const *mut u8, *const u8, usize) -> u32;

impl Run {
    /// Runs the code over `len` positions; `false` when a lane needs the block kernels' `std`
    /// fallback (the run's results for these positions must then be recomputed by them).
    ///
    /// # Safety
    /// `bases[i]` points at `len` elements of the pass's element type for each entry of
    /// [`Run::bases`] (writable where the run stores: scratch and direct bases), `scalars`
    /// at [`Run::scalars`]`.len()` elements, `len` elements are a multiple of [`Run::step`] bytes,
    /// and the host has AVX-512F (true for any run: [`plan`] makes none otherwise).
    pub(crate) unsafe fn call<T: Element>(
        &self,
        bases: &[*mut u8],
        scalars: &[T],
        len: usize,
    ) -> bool {
        debug_assert!(bases.len() >= self.bases.len() && scalars.len() >= self.scalars.len());
        debug_assert_eq!(len * size_of::<T>() % self.step, 0);
        // SAFETY: the code reads `self.bases.len()` table entries and `self.scalars.len()`
        // scalars (what it was generated for; asserted above), touches `len` elements behind
        // each base, which the caller guarantees are valid, uses no stack beyond the
        // callee-saved registers it pushes and pops, and leaves every callee-saved register as
        // it found it.
        unsafe {
            (self.entry)(
                bases.as_ptr(),
                scalars.as_ptr().cast(),
                len * size_of::<T>(),
            ) == 0
        }
    }
}

/// The runs of one pass structure, in op order.
pub(crate) struct Plan {
    pub(crate) runs: Vec<Run>,
    /// The one run is the whole pass, reading only input slices, scalars and the direct
    /// output's initial contents, and writing only the direct output (no scratch block, no
    /// sum): it can cover a whole chunk in one call.
    pub(crate) whole: bool,
}

impl Drop for Plan {
    fn drop(&mut self) {
        LIVE_PLANS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Plans alive now (each one's code is mapped until it drops).
#[cfg(test)]
pub(crate) fn live_plans() -> usize {
    LIVE_PLANS.load(Ordering::Relaxed)
}

impl Plan {
    /// The run that starts at op `k`, if any, and its index.
    pub(crate) fn run_at(&self, k: usize) -> Option<(usize, &Run)> {
        self.runs.iter().enumerate().find(|(_, r)| r.start == k)
    }

    /// Whether op `k` belongs to a run.
    pub(crate) fn covers(&self, k: usize) -> bool {
        self.runs.iter().any(|r| (r.start..r.end).contains(&k))
    }
}

/// What makes two passes share their code.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    elem_bytes: usize,
    ops: Vec<FusedOp>,
    scalar_inputs: Vec<bool>,
    /// For each input read from an output's buffer, the op of that output.
    aliased_inputs: Vec<Option<usize>>,
    outputs: Vec<usize>,
    sums: Vec<FusedArg>,
    direct: Option<usize>,
}

/// Whether this process runs the generated code: the kernels run on AVX-512 (the ISA chosen
/// at run time, so the generated loops and the block kernels agree on lanes and rounding), and
/// code generation is not switched off now.
pub(crate) fn available() -> bool {
    isa() == Isa::Avx512 && tuning::codegen_enabled()
}

/// Positions a pass structure goes through on the block kernels (in one call or over several)
/// before its code is made, by default (see [`tuning::fused_native_after_elements`]): making
/// it takes 0.15–0.2 ms (about 1 ms for the first in a process), which pays off over about
/// this much work; a pass of 16M positions gets its code on its first call, one of 1024 after
/// 1024 calls.
pub(crate) const NATIVE_AFTER_ELEMENTS: usize = 1 << 20;

/// Pass structures: those whose code was made (`None` where none could be), at most the
/// tuned limit of them, and those only seen so far with the positions they went through.
/// Both are hashed maps kept in order of use.
pub(crate) struct Cache {
    made: LruCache<Key, Option<Arc<Plan>>>,
    seen: LruCache<Key, usize>,
}

/// What [`Cache::lookup`] found.
enum Found {
    /// The structure's code (or that it has none).
    Made(Option<Arc<Plan>>),
    /// Not enough positions yet.
    Wait,
    /// Enough positions: make the code now.
    Make,
}

impl Cache {
    pub(crate) fn new() -> Self {
        Self {
            made: LruCache::unbounded(),
            seen: LruCache::new(NonZeroUsize::new(SEEN_LIMIT).expect("SEEN_LIMIT > 0")),
        }
    }

    /// Adds `elements` positions to structure `key` and says what to do.
    fn lookup(&mut self, key: &Key, elements: usize, threshold: usize) -> Found {
        if let Some(p) = self.made.get(key) {
            return Found::Made(p.clone());
        }
        let seen = match self.seen.get_mut(key) {
            Some(seen) => {
                *seen = seen.saturating_add(elements);
                *seen
            }
            None => elements,
        };
        if seen >= threshold {
            self.seen.pop(key);
            return Found::Make;
        }
        if !self.seen.contains(key) {
            self.seen.push(key.clone(), seen);
        }
        Found::Wait
    }

    /// Stores the code made for `key` (the first stored wins when two threads made it) and
    /// frees the least recently used codes past `limit`; returns the code to run and what
    /// was evicted (to drop outside the lock: unmapping is a system call).
    fn store(
        &mut self,
        key: Key,
        made: Option<Arc<Plan>>,
        limit: usize,
    ) -> (Option<Arc<Plan>>, Vec<Option<Arc<Plan>>>) {
        let plan = match self.made.get(&key) {
            Some(p) => p.clone(),
            None => {
                if limit > 0 {
                    self.made.put(key, made.clone());
                }
                made
            }
        };
        let mut evicted = Vec::new();
        while self.made.len() > limit {
            match self.made.pop_lru() {
                Some((_, p)) => evicted.push(p),
                None => break,
            }
        }
        (plan, evicted)
    }

    /// Structures with code (or known to have none) in the cache.
    #[cfg(test)]
    pub(crate) fn made_len(&self) -> usize {
        self.made.len()
    }
}

/// The code for a pass of `elements` positions, once its structure has gone through
/// [`tuning::fused_native_after_elements`] positions (`usize::MAX` makes it now): `None`
/// before, or when the host has no AVX-512F, code generation is switched off, the pass has no
/// run of two or more ops with code, or the code could not be made. `outputs` are the ops
/// whose values leave the pass, `direct` the one written straight into its output buffer.
/// The caller holds the returned code while it runs (the cache may free its own hold).
pub(crate) fn plan<T: Element>(
    ops: &[FusedOp],
    inputs: &[FusedInput<'_, T>],
    outputs: &[usize],
    sums: &[FusedArg],
    direct: Option<usize>,
    elements: usize,
) -> Option<Arc<Plan>> {
    if !available() {
        return None;
    }
    plan_in(
        process_cache(),
        ops,
        inputs,
        outputs,
        sums,
        direct,
        elements,
        tuning::fused_native_after_elements(),
        tuning::fused_code_cache_limit(),
    )
}

/// The process-wide cache of [`plan`].
fn process_cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Cache::new()))
}

/// Forgets every structure of the process-wide cache; code is unmapped once the passes running
/// it (if any) let go. Returns how many structures had code (or were known to have none).
pub(crate) fn clear() -> usize {
    let old = {
        let mut cache = process_cache().lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *cache, Cache::new())
    };
    old.made.len()
}

/// [`plan`] with its cache, threshold and limit given.
pub(crate) fn plan_in<T: Element>(
    cache: &Mutex<Cache>,
    ops: &[FusedOp],
    inputs: &[FusedInput<'_, T>],
    outputs: &[usize],
    sums: &[FusedArg],
    direct: Option<usize>,
    elements: usize,
    threshold: usize,
    limit: usize,
) -> Option<Arc<Plan>> {
    if limit == 0 {
        return None;
    }
    // A thread that panicked while holding the lock left the maps consistent (every update
    // is one call into them), so the cache goes on.
    let lock = || cache.lock().unwrap_or_else(|e| e.into_inner());
    let key = Key {
        elem_bytes: size_of::<T>(),
        ops: ops.to_vec(),
        scalar_inputs: inputs
            .iter()
            .map(|x| matches!(x, FusedInput::Scalar(_)))
            .collect(),
        aliased_inputs: inputs
            .iter()
            .map(|x| match x {
                FusedInput::Output(j) => outputs.get(*j).copied(),
                _ => None,
            })
            .collect(),
        outputs: outputs.to_vec(),
        sums: sums.to_vec(),
        direct,
    };
    let found = lock().lookup(&key, elements, threshold);
    match found {
        Found::Made(p) => p,
        Found::Wait => None,
        Found::Make => {
            // Made outside the lock (two threads may both make it; the first stored wins).
            let made = make_plan(&key);
            let (plan, evicted) = lock().store(key, made, limit);
            drop(evicted);
            plan
        }
    }
}

/// Whether the block kernels' vector `exp`, `tanh` and `sigmoid` are the ones [`Emitter`]
/// reproduces: 16 `f32` lanes with fused multiply-adds and the refined-reciprocal division,
/// which is what they run whenever the kernels run on AVX-512 (in any build: see
/// `stategrad_simd::isa`). Elsewhere those ops stay on the block kernels.
fn inline_transcendentals() -> bool {
    isa() == Isa::Avx512
}

/// Whether [`Emitter`] computes op `op` of `key` bit for bit as the block kernels do.
fn native_op(key: &Key, op: &FusedOp) -> bool {
    match *op {
        // On a scalar operand the kernels use `std` (one value for the block), not vectors.
        FusedOp::Unary(UnaryOp::Exp | UnaryOp::Tanh | UnaryOp::Sigmoid, a) => {
            inline_transcendentals()
                && key.elem_bytes == 4
                && !matches!(a, FusedArg::Input(i) if key.scalar_inputs[i])
        }
        _ => exact(op),
    }
}

/// Whether the code for `op` may mark lanes for the `std` fallback (see [`Run::call`]).
fn falls_back(op: &FusedOp) -> bool {
    matches!(op, FusedOp::Unary(UnaryOp::Exp | UnaryOp::Sigmoid, _))
}

/// Whether `op` is IEEE-exact lane by lane (the same bits from any correct vector code).
fn exact(op: &FusedOp) -> bool {
    match op {
        FusedOp::Unary(u, _) => matches!(
            u,
            UnaryOp::Neg
                | UnaryOp::Abs
                | UnaryOp::Sqrt
                | UnaryOp::Square
                | UnaryOp::Recip
                | UnaryOp::Relu
        ),
        FusedOp::Binary(b, _, _) => matches!(
            b,
            BinaryOp::Add
                | BinaryOp::Sub
                | BinaryOp::Mul
                | BinaryOp::Div
                | BinaryOp::Max
                | BinaryOp::Min
        ),
        FusedOp::Copy(_) | FusedOp::MulAdd(..) | FusedOp::NegMulAdd(..) => true,
    }
}

fn make_plan(key: &Key) -> Option<Arc<Plan>> {
    let mut runs = Vec::new();
    let mut k = 0;
    while k < key.ops.len() {
        let end = (k..key.ops.len())
            .find(|&j| !native_op(key, &key.ops[j]))
            .unwrap_or(key.ops.len());
        if end - k >= 2 {
            // A run that cannot be made (too many live values or bases) stays on the kernels.
            runs.extend(make_run(key, k, end));
        }
        k = end.max(k + 1);
    }
    let whole = match runs.as_slice() {
        [run] => {
            // A run that may report fallback lanes is redone from its inputs by the block
            // kernels, so it must not have overwritten them: no input read in place then.
            let may_fall_back = key.ops[run.start..run.end].iter().any(falls_back);
            run.start == 0
                && run.end == key.ops.len()
                && key.sums.is_empty()
                && run.bases.iter().all(|b| match *b {
                    // An input living in the direct output's buffer is read there: every load
                    // of an iteration comes before its one store, at the same positions.
                    Base::Input(i) => key.aliased_inputs[i]
                        .is_none_or(|k| key.direct == Some(k) && !may_fall_back),
                    Base::Direct => true,
                    Base::Scratch(_) => false,
                })
        }
        _ => false,
    };
    if runs.is_empty() {
        return None;
    }
    LIVE_PLANS.fetch_add(1, Ordering::Relaxed);
    Some(Arc::new(Plan { runs, whole }))
}

/// A value the run's code holds in a register.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Value {
    /// Read from memory each vector: an input slice or an op computed before the run.
    Loaded(FusedArg),
    /// A scalar input, broadcast once before the loop.
    Scalar(usize),
    /// Op `k` of the run.
    Computed(usize),
    /// A constant the ops need.
    Const(Konst),
    /// A temporary of a transcendental op (its number).
    Temp(usize),
    /// A pool constant pinned in a register for the whole loop.
    Pooled(Pool),
    /// The register unpinned pool constants are loaded into, one use at a time.
    PoolScratch,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Konst {
    SignBit,
    AbsMask,
    One,
    Zero,
}

fn make_run(key: &Key, start: usize, end: usize) -> Option<Run> {
    let f64 = key.elem_bytes == 8;
    let ops = &key.ops;
    let value_of = |a: FusedArg| match a {
        FusedArg::Input(i) if key.scalar_inputs[i] => Value::Scalar(i),
        FusedArg::Op(j) if j >= start => Value::Computed(j),
        a => Value::Loaded(a),
    };
    // Last op of the run that reads each value (values read by nothing die at once).
    let mut last_use: Vec<(Value, usize)> = Vec::new();
    for k in start..end {
        for a in ops[k].operands() {
            let v = value_of(a);
            match last_use.iter_mut().find(|(w, _)| *w == v) {
                Some(e) => e.1 = k,
                None => last_use.push((v, k)),
            }
        }
    }
    let last_read = |v: Value| last_use.iter().find(|(w, _)| *w == v).map(|e| e.1);
    let read_after = |k: usize| {
        key.outputs.contains(&k)
            || key.sums.contains(&FusedArg::Op(k))
            || ops[end..]
                .iter()
                .any(|op| op.operands().any(|a| a == FusedArg::Op(k)))
    };
    let mut bases: Vec<Base> = Vec::new();
    let mut base_of = |b: Base| match bases.iter().position(|&c| c == b) {
        Some(i) => i,
        None => {
            bases.push(b);
            bases.len() - 1
        }
    };
    // Base pointers: operands loaded from memory, then results stored.
    let mut loads = Vec::new();
    let mut stores = Vec::new();
    for k in start..end {
        for a in ops[k].operands() {
            if let Value::Loaded(a) = value_of(a) {
                let b = match a {
                    FusedArg::Input(i) => Base::Input(i),
                    FusedArg::Op(j) => Base::Scratch(j),
                };
                loads.push((a, base_of(b)));
            }
        }
        if read_after(k) {
            let b = if key.direct == Some(k) {
                Base::Direct
            } else {
                Base::Scratch(k)
            };
            stores.push((k, base_of(b)));
        }
    }
    if bases.len() > MAX_BASES {
        return None;
    }
    let mut scalars: Vec<usize> = Vec::new();
    let mut consts: Vec<Konst> = Vec::new();
    for op in &ops[start..end] {
        for a in op.operands() {
            if let Value::Scalar(i) = value_of(a) {
                if !scalars.contains(&i) {
                    scalars.push(i);
                }
            }
        }
        let need = match op {
            FusedOp::Unary(UnaryOp::Neg, _) => Some(Konst::SignBit),
            FusedOp::Unary(UnaryOp::Abs, _) => Some(Konst::AbsMask),
            FusedOp::Unary(UnaryOp::Recip, _) => Some(Konst::One),
            FusedOp::Unary(UnaryOp::Relu, _) => Some(Konst::Zero),
            _ => None,
        };
        if let Some(c) = need.filter(|c| !consts.contains(c)) {
            consts.push(c);
        }
    }
    let transcendental = ops[start..end]
        .iter()
        .any(|op| native_op(key, op) && !exact(op));
    let emit = |groups: usize, pins: &[Pool]| -> Option<Emitter> {
        let mut em = Emitter::new(f64, groups, transcendental).ok()?;
        em.prologue(bases.len(), &scalars, &consts, pins).ok()?;
        for k in start..end {
            let args: Vec<Value> = ops[k].operands().map(value_of).collect();
            let mut regs = Vec::with_capacity(args.len());
            for (&v, a) in args.iter().zip(ops[k].operands()) {
                let r = match em.reg_of(v) {
                    Some(r) => r,
                    None => {
                        let base = loads.iter().find(|(b, _)| *b == a)?.1;
                        em.load(v, base).ok()?
                    }
                };
                regs.push(r);
            }
            let dst = em.alloc(Value::Computed(k)).ok()?;
            em.op(&ops[k], dst, &regs).ok()?;
            if let Some(&(_, base)) = stores.iter().find(|(j, _)| *j == k) {
                em.store(dst, base).ok()?;
            }
            for &v in &args {
                if last_read(v) == Some(k) && !matches!(v, Value::Scalar(_) | Value::Const(_)) {
                    em.free(v);
                }
            }
            if last_read(Value::Computed(k)).is_none() {
                em.free(Value::Computed(k));
            }
        }
        Some(em)
    };
    // Two vectors side by side where the registers allow, else one.
    let (mut em, groups) = match emit(MAX_GROUPS, &[]) {
        Some(em) => (em, MAX_GROUPS),
        None => (emit(1, &[])?, 1),
    };
    if transcendental {
        // Pin the most used pool constants in the registers the code leaves free (the loop
        // then reads no constant from memory when they all fit).
        let mut by_use: Vec<Pool> = Pool::ALL
            .into_iter()
            .filter(|&p| em.uses[p as usize] > 0)
            .collect();
        by_use.sort_by_key(|&p| std::cmp::Reverse(em.uses[p as usize]));
        by_use.truncate(ZMM.len().saturating_sub(em.peak));
        if let Some(pinned) = emit(groups, &by_use) {
            em = pinned;
        }
    }
    let (code, entry) = em.finish().ok()?;
    Some(Run {
        start,
        end,
        step: VECTOR_BYTES * groups,
        bases,
        scalars,
        _code: code,
        entry,
    })
}

/// Why a run gets no code (it then stays on the block kernels): out of registers, or the
/// assembler or the memory mapping failed.
#[derive(Debug)]
struct NoCode;

impl From<IcedError> for NoCode {
    fn from(_: IcedError) -> Self {
        NoCode
    }
}

impl From<std::io::Error> for NoCode {
    fn from(_: std::io::Error) -> Self {
        NoCode
    }
}
