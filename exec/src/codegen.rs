//! Native code for [`ArenaProgram`](crate::arena::ArenaProgram)s, generated with Cranelift.
//!
//! One function per program: the simple steps (the four arithmetic ops and the exact unary ops
//! on short slots, one-element ops, short sums in `reduce_all`'s fold order, short dot
//! products in `dot`'s order, short outer products) are emitted inline, one-element values stay in registers from the step that makes
//! them to the steps that read them, and every other step calls its closure through
//! [`call_step`]. Inlined steps do exactly what their closures do, operation by operation
//! (Cranelift neither reassociates nor contracts floating-point operations), so a program gives
//! the same bits either way.

use std::any::Any;
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use cranelift_codegen::ir::{
    condcodes::IntCC, types, AbiParam, Block, InstBuilder, MemFlagsData, SigRef, Signature, Type,
    Value,
};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};

use crate::arena::{ArenaFn, ArenaOpd, ArenaStep};
use crate::arena_loop::ArenaLoop;
use crate::{BinaryOp, Element, UnaryOp};

/// Steps over more elements than this run as calls (the slice kernels' wider vectors win).
const INLINE_MAX: usize = 64;

/// Programs that generate more instructions than this stay on closures: Cranelift takes
/// ~3.5 µs per instruction (measured on W1's program), so this bounds the one-time pause of a
/// switch to native code to about 100 ms.
const MAX_INSTRUCTIONS: usize = 30_000;

/// What a generated function sees of one run: the step closures, the arena, and the first
/// panic of a closure (passed on when the function returns).
struct Ctx<'a, T> {
    fns: &'a [ArenaFn<T>],
    arena: *mut T,
    len: usize,
    panic: Option<Box<dyn Any + Send>>,
}

/// Runs closure `k` of the program on the arena; called from generated code. Returns 1 when a
/// closure has panicked (this one or an earlier one: a generated loop then stops), else 0.
///
/// # Safety
/// `ctx` points to a live `Ctx` that nothing else refers to during the call, whose
/// `arena`/`len` describe a slice that nothing else refers to either.
unsafe extern "C" fn call_step<T: Element>(ctx: *mut Ctx<'_, T>, k: usize) -> u32 {
    // SAFETY: `ctx` is the `Ctx` that `Code::run` built on its stack and keeps alive for the
    // whole call of the generated function, which passes it here unchanged; nothing else
    // refers to it while this runs.
    let ctx = unsafe { &mut *ctx };
    if ctx.panic.is_some() {
        return 1;
    }
    // SAFETY: `arena`/`len` come from the `&mut [T]` that `Code::run` holds for the call; the
    // generated code does not touch the arena while a closure runs, so this is the only live
    // reference to it.
    let arena = unsafe { std::slice::from_raw_parts_mut(ctx.arena, ctx.len) };
    // A closure index the code was not generated with is a bug; unwinding out of `extern "C"`
    // would abort, so it is passed on like a closure's panic.
    let result = catch_unwind(AssertUnwindSafe(|| (ctx.fns[k])(arena)));
    match result {
        Ok(()) => 0,
        Err(p) => {
            ctx.panic = Some(p);
            1
        }
    }
}

/// The JIT module that owns a function's machine code, freed with it.
struct Owned(ManuallyDrop<JITModule>);

// SAFETY: the module is used through `&mut` only while its function is generated (by the one
// thread generating it, before the `Code` exists), and afterwards only freed in `drop` (which
// needs `&mut self`); the code it owns is immutable and may run on any thread.
unsafe impl Send for Owned {}
// SAFETY: as above: no `&self` method of the module is ever called.
unsafe impl Sync for Owned {}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: the module is taken once, here; the only pointer into its memory is the
        // `entry` of the `Code` being dropped with it, which can no longer be called.
        unsafe { ManuallyDrop::take(&mut self.0).free_memory() };
    }
}

/// The generated function: `entry(arena, ctx, start, runs)` (a program ignores `start` and
/// `runs`; a loop runs the program `runs` times). Calling it is `unsafe`: it reads and writes
/// the arena without bounds checks.
type Entry<T> = unsafe extern "C" fn(*mut T, *mut Ctx<'_, T>, usize, usize);

/// A generated program, or a generated loop over one: `entry(arena, ctx, start, runs)`.
pub(crate) struct Code<T> {
    entry: Entry<T>,
    /// Steps of the program (its closures are indexed by step).
    steps: usize,
    /// Elements of the arena the steps were checked against: the code touches no element at
    /// or past it.
    size: usize,
    _module: Owned,
}

impl<T: Element> Code<T> {
    /// Runs the program on `arena`; `fns[k]` is step `k`'s closure.
    ///
    /// # Panics
    /// If `arena` is shorter than the program's size or `fns` has not one closure per step
    /// (callers pass the program's own; checked because the code relies on both).
    pub(crate) fn run(&self, arena: &mut [T], fns: &[ArenaFn<T>]) {
        self.run_loop(arena, fns, 0, 1);
    }

    /// Runs a generated loop for `runs` iterations numbered from `start` (a program's code runs
    /// once, whatever these are).
    ///
    /// # Panics
    /// As [`Code::run`].
    pub(crate) fn run_loop(&self, arena: &mut [T], fns: &[ArenaFn<T>], start: usize, runs: usize) {
        assert!(
            arena.len() >= self.size,
            "codegen: arena shorter than the program"
        );
        assert_eq!(fns.len(), self.steps, "codegen: one closure per step");
        // One pointer for the generated code and the closures it calls (never both at once).
        let ptr = arena.as_mut_ptr();
        let mut ctx = Ctx {
            fns,
            arena: ptr,
            len: arena.len(),
            panic: None,
        };
        // SAFETY: `compile` generated `entry` only for steps that `check_steps` found inside
        // `0..self.size` (every read and write, extents computed without overflow), and
        // `compile_loop` only for loops whose iteration slot and carries lie inside it too,
        // with every displacement below `i32::MAX` bytes; `arena` has at least `self.size`
        // elements (asserted), so every access of the code is inside it, whatever `start` and
        // `runs` are (they only count and number iterations). The code calls `call_step` with
        // `&mut ctx` unchanged and closure indices below `self.steps`, which is `fns.len()`
        // (asserted); `ctx` lives on this frame for the whole call, and the code touches the
        // arena only between closure calls, never while one runs.
        unsafe { (self.entry)(ptr, &mut ctx, start, runs) };
        if let Some(p) = ctx.panic {
            std::panic::resume_unwind(p);
        }
    }
}

fn isa() -> Option<&'static OwnedTargetIsa> {
    static ISA: OnceLock<Option<OwnedTargetIsa>> = OnceLock::new();
    ISA.get_or_init(|| {
        if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            return None;
        }
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").ok()?;
        flags.set("is_pic", "false").ok()?;
        // The IR verifier costs ~10 % of a compile: on in debug builds (tests), off in release.
        let verify = if cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        };
        flags.set("enable_verifier", verify).ok()?;
        flags.set("use_colocated_libcalls", "false").ok()?;
        cranelift_native::builder()
            .ok()?
            .finish(settings::Flags::new(flags))
            .ok()
    })
    .as_ref()
}

/// Whether this host has a code generator.
pub(crate) fn available() -> bool {
    isa().is_some()
}

/// Generates the program's function, or `None` if the host has no code generator or
/// generation fails (the program then runs as closures).
pub(crate) fn compile<T: Element>(steps: &[ArenaStep], size: usize) -> Option<Code<T>> {
    build(steps, size, None)
}

/// Generates one function for the whole loop `lp` over the program (see
/// [`ArenaProgram::run_loop`](crate::arena::ArenaProgram::run_loop)), or `None` as [`compile`]
/// (or when the loop reaches past the arena).
pub(crate) fn compile_loop<T: Element>(
    steps: &[ArenaStep],
    size: usize,
    lp: &ArenaLoop,
) -> Option<Code<T>> {
    if lp.extent() > size {
        return None;
    }
    // Staged carries are held in registers between the loads and the stores (each carry lies
    // inside the arena, so the sum does not overflow).
    let staged: usize = lp.carries().iter().map(|c| c.len).sum();
    if lp.staged() && staged > STAGED_MAX {
        return None;
    }
    build(steps, size, Some(lp))
}

/// Elements of overlapping carries a generated loop stages in registers; beyond it the loop
/// runs the program's code once per iteration.
const STAGED_MAX: usize = 256;

fn build<T: Element>(steps: &[ArenaStep], size: usize, lp: Option<&ArenaLoop>) -> Option<Code<T>> {
    let isa = isa()?.clone();
    // The code indexes without bounds checks: only steps inside the arena get code.
    crate::arena::check_steps(steps, size).ok()?;
    // Offsets are emitted as 32-bit displacements; every one is below `size` elements.
    if size.checked_mul(std::mem::size_of::<T>())? > i32::MAX as usize {
        return None;
    }
    // Owned from the start: a failed generation frees what the module allocated.
    let mut owned = Owned(ManuallyDrop::new(JITModule::new(JITBuilder::with_isa(
        isa,
        default_libcall_names(),
    ))));
    let module = &mut *owned.0;
    let ptr = module.target_config().pointer_type();
    let call_conv = module.isa().default_call_conv();
    let mut ctx = module.make_context();
    for _ in 0..4 {
        ctx.func.signature.params.push(AbiParam::new(ptr));
    }
    let id = module
        .declare_function("arena_program", Linkage::Local, &ctx.func.signature)
        .ok()?;
    let frontend = module.isa().frontend_config();
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
    let block = b.create_block();
    b.append_block_params_for_function_params(block);
    b.switch_to_block(block);
    b.seal_block(block);
    let params = b.block_params(block).to_vec();
    let (base, cx, start, runs) = (params[0], params[1], params[2], params[3]);
    let mut sig = Signature::new(call_conv);
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(ptr));
    sig.returns.push(AbiParam::new(types::I32));
    let call_sig = b.import_signature(sig);
    let (ty, vty) = if std::mem::size_of::<T>() == 4 {
        (types::F32, types::F32X4)
    } else {
        (types::F64, types::F64X2)
    };
    let mut g = Gen {
        b,
        base,
        cx,
        ptr,
        ty,
        vty,
        lanes: (16 / std::mem::size_of::<T>()),
        esize: std::mem::size_of::<T>(),
        call_sig,
        tramp: call_step::<T> as unsafe extern "C" fn(*mut Ctx<'_, T>, usize) -> u32 as usize,
        known: HashMap::new(),
        known_vec: HashMap::new(),
        exit: None,
    };
    match lp {
        None => g.steps::<T>(steps),
        Some(lp) => g.looped::<T>(steps, lp, start, runs),
    }
    g.b.ins().return_(&[]);
    g.b.finalize(frontend);
    if ctx.func.dfg.num_insts() > MAX_INSTRUCTIONS {
        return None;
    }
    module.define_function(id, &mut ctx).ok()?;
    module.clear_context(&mut ctx);
    module.finalize_definitions().ok()?;
    let code = module.get_finalized_function(id);
    // SAFETY: `code` is the finalized function declared above with four pointer-sized
    // parameters and no results in the platform's default (C) calling convention; it stays
    // valid while the module (kept in `Code::_module`) lives. The type is an `unsafe fn`: what
    // makes a call sound is stated at the one call, in `Code::run_loop`.
    let entry = unsafe { std::mem::transmute::<*const u8, Entry<T>>(code) };
    Some(Code {
        entry,
        steps: steps.len(),
        size,
        _module: owned,
    })
}

/// The function being generated.
struct Gen<'f> {
    b: FunctionBuilder<'f>,
    base: Value,
    cx: Value,
    ptr: Type,
    ty: Type,
    vty: Type,
    lanes: usize,
    esize: usize,
    call_sig: SigRef,
    tramp: usize,
    /// Arena elements whose current value is in a register.
    known: HashMap<usize, Value>,
    /// Vectors (of `lanes` elements at these offsets) whose current value is in a register.
    known_vec: HashMap<usize, Value>,
    /// In a loop: the block that returns, taken when a closure has panicked.
    exit: Option<Block>,
}

/// An operand of an inlined elementwise step.
#[derive(Clone, Copy)]
enum Opnd {
    Slice(usize),
    Value(Value),
}

impl Gen<'_> {
    fn steps<T: Element>(&mut self, steps: &[ArenaStep]) {
        for (k, step) in steps.iter().enumerate() {
            if !self.inline::<T>(step) {
                self.call(k, step.output());
            }
        }
    }

    /// The loop `for k in 0..runs { arena[iter] = start + k; steps; if k + 1 < runs { carry } }`
    /// (the caller passes `runs >= 1`), leaving the current block at its exit.
    fn looped<T: Element>(
        &mut self,
        steps: &[ArenaStep],
        lp: &ArenaLoop,
        start: Value,
        runs: Value,
    ) {
        let (header, carry, exit) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        self.b.append_block_param(header, self.ptr);
        let zero = self.b.ins().iconst(self.ptr, 0);
        self.b.ins().jump(header, &[zero.into()]);
        self.b.switch_to_block(header);
        // Nothing computed before the loop is known inside it.
        self.forget_all();
        self.exit = Some(exit);
        let k = self.b.block_params(header)[0];
        if let Some(it) = lp.iter() {
            // As `(start + k) as f64`, then rounded to `T` (what the closures' loop writes).
            let i = self.b.ins().iadd(start, k);
            let f = self.b.ins().fcvt_from_uint(types::F64, i);
            let v = if self.ty == types::F32 {
                self.b.ins().fdemote(types::F32, f)
            } else {
                f
            };
            self.store(it, v);
        }
        self.steps::<T>(steps);
        let next = self.b.ins().iadd_imm_u(k, 1);
        let more = self.b.ins().icmp(IntCC::UnsignedLessThan, next, runs);
        self.b.ins().brif(more, carry, &[], exit, &[]);
        // The carry block's one predecessor is the end of the body: what the body left in
        // registers is still known there.
        self.b.switch_to_block(carry);
        self.b.seal_block(carry);
        self.carry(lp);
        self.b.ins().jump(header, &[next.into()]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        self.forget_all();
    }

    /// Every carry of `lp` at once: when carries overlap, every value is loaded before any is
    /// stored.
    fn carry(&mut self, lp: &ArenaLoop) {
        let mut pending: Vec<(usize, Value, bool)> = Vec::new();
        for c in lp.carries() {
            let body = c.len - c.len % self.lanes;
            for i in (0..body).step_by(self.lanes) {
                let v = self.load_vec(c.from + i);
                pending.push((c.to + i, v, true));
            }
            for i in body..c.len {
                let v = self.load(c.from + i);
                pending.push((c.to + i, v, false));
            }
            if !lp.staged() {
                self.flush(&mut pending);
            }
        }
        self.flush(&mut pending);
    }

    fn flush(&mut self, pending: &mut Vec<(usize, Value, bool)>) {
        for (to, v, vector) in pending.drain(..) {
            if vector {
                self.store_vec(to, v);
            } else {
                self.store(to, v);
            }
        }
    }

    fn disp(&self, off: usize) -> i32 {
        // `compile` checked every offset lies below `size` elements, and `size` bytes fit `i32`;
        // a failure here is a bug, and the program stays on its closures (caught there).
        off.checked_mul(self.esize)
            .and_then(|b| i32::try_from(b).ok())
            .expect("codegen: an arena offset past the checked size")
    }

    fn load(&mut self, off: usize) -> Value {
        if let Some(&v) = self.known.get(&off) {
            return v;
        }
        // An element of a vector in a register is a lane of it, not a load of what was just
        // stored (a store-to-load forward on the way).
        let within = (off.saturating_sub(self.lanes - 1)..=off)
            .find_map(|k| self.known_vec.get(&k).map(|&v| (k, v)));
        if let Some((k, vec)) = within {
            let lane = u8::try_from(off - k).expect("a lane index is below the lane count");
            let v = self.b.ins().extractlane(vec, lane);
            self.known.insert(off, v);
            return v;
        }
        let d = self.disp(off);
        let v = self
            .b
            .ins()
            .load(self.ty, MemFlagsData::trusted(), self.base, d);
        self.known.insert(off, v);
        v
    }

    fn store(&mut self, off: usize, v: Value) {
        self.forget_vectors(off, 1);
        let d = self.disp(off);
        self.b.ins().store(MemFlagsData::trusted(), v, self.base, d);
        self.known.insert(off, v);
    }

    /// Vector accesses may be unaligned (short slots pack without alignment). A vector this
    /// code stored at the same offset, unchanged since, is reused from its register.
    fn load_vec(&mut self, off: usize) -> Value {
        if let Some(&v) = self.known_vec.get(&off) {
            return v;
        }
        let d = self.disp(off);
        let flags = MemFlagsData::new().with_notrap();
        let v = self.b.ins().load(self.vty, flags, self.base, d);
        self.known_vec.insert(off, v);
        v
    }

    fn store_vec(&mut self, off: usize, v: Value) {
        self.forget(off, self.lanes);
        let d = self.disp(off);
        let flags = MemFlagsData::new().with_notrap();
        self.b.ins().store(flags, v, self.base, d);
        self.known_vec.insert(off, v);
    }

    /// Elements `off..off + n` change: no register holds them (or a vector over any of them).
    fn forget(&mut self, off: usize, n: usize) {
        if n == 1 {
            self.known.remove(&off);
        } else {
            self.known.retain(|&k, _| k < off || k >= off + n);
        }
        self.forget_vectors(off, n);
    }

    fn forget_vectors(&mut self, off: usize, n: usize) {
        let lanes = self.lanes;
        self.known_vec
            .retain(|&k, _| k + lanes <= off || k >= off + n);
    }

    /// Nothing is known in registers (a block that earlier values do not dominate).
    fn forget_all(&mut self) {
        self.known.clear();
        self.known_vec.clear();
    }

    fn constant<T: Element>(&mut self, v: f64) -> Value {
        if self.esize == 4 {
            self.b.ins().f32const(T::from_f64(v).to_f64() as f32)
        } else {
            self.b.ins().f64const(v)
        }
    }

    fn arith(&mut self, op: BinaryOp, x: Value, y: Value) -> Value {
        let i = self.b.ins();
        match op {
            BinaryOp::Add => i.fadd(x, y),
            BinaryOp::Sub => i.fsub(x, y),
            BinaryOp::Mul => i.fmul(x, y),
            BinaryOp::Div => i.fdiv(x, y),
            _ => unreachable!("codegen: only the four arithmetic ops are inlined"),
        }
    }

    fn unary(&mut self, op: UnaryOp, x: Value) -> Value {
        let i = self.b.ins();
        match op {
            UnaryOp::Neg => i.fneg(x),
            UnaryOp::Abs => i.fabs(x),
            UnaryOp::Sqrt => i.sqrt(x),
            UnaryOp::Square => i.fmul(x, x),
            _ => unreachable!("codegen: only exact unary ops are inlined"),
        }
    }

    fn scalar_opd<T: Element>(&mut self, o: ArenaOpd) -> Value {
        match o {
            ArenaOpd::Slice(p) | ArenaOpd::Splat(p) => self.load(p),
            ArenaOpd::Imm(v) => self.constant::<T>(v),
        }
    }

    fn elem_opd<T: Element>(&mut self, o: ArenaOpd) -> Opnd {
        match o {
            ArenaOpd::Slice(p) => Opnd::Slice(p),
            o => Opnd::Value(self.scalar_opd::<T>(o)),
        }
    }

    /// `out[i] = f(a[i], b[i])` for `i < n`, a vector at a time then one element at a time.
    fn map2(
        &mut self,
        a: Opnd,
        b: Opnd,
        out: usize,
        n: usize,
        f: impl Fn(&mut Self, Value, Value) -> Value,
    ) {
        let l = self.lanes;
        let body = n - n % l;
        let mut splats: [Option<Value>; 2] = [None, None];
        for i in (0..body).step_by(l) {
            let mut get = |g: &mut Self, o: Opnd, s: usize| match o {
                Opnd::Slice(p) => g.load_vec(p + i),
                Opnd::Value(v) => *splats[s].get_or_insert_with(|| g.b.ins().splat(g.vty, v)),
            };
            let x = get(self, a, 0);
            let y = get(self, b, 1);
            let r = f(self, x, y);
            self.store_vec(out + i, r);
        }
        for i in body..n {
            let get = |g: &mut Self, o: Opnd| match o {
                Opnd::Slice(p) => g.load(p + i),
                Opnd::Value(v) => v,
            };
            let x = get(self, a);
            let y = get(self, b);
            let r = f(self, x, y);
            self.store(out + i, r);
        }
    }

    /// Emits `step` inline if it is one of the inlined forms; `false` leaves it to a call.
    fn inline<T: Element>(&mut self, step: &ArenaStep) -> bool {
        let arith = |op: BinaryOp| {
            matches!(
                op,
                BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div
            )
        };
        let exact = |op: UnaryOp| {
            matches!(
                op,
                UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sqrt | UnaryOp::Square
            )
        };
        match *step {
            ArenaStep::Binary1 { op, a, b, out } if arith(op) => {
                let (x, y) = (self.scalar_opd::<T>(a), self.scalar_opd::<T>(b));
                let r = self.arith(op, x, y);
                self.store(out, r);
            }
            ArenaStep::Unary1 { op, x, out } if exact(op) => {
                let v = self.load(x);
                let r = self.unary(op, v);
                self.store(out, r);
            }
            ArenaStep::Binary { op, a, b, out, n } if arith(op) && n <= INLINE_MAX => {
                let (a, b) = (self.elem_opd::<T>(a), self.elem_opd::<T>(b));
                self.map2(a, b, out, n, |g, x, y| g.arith(op, x, y));
            }
            ArenaStep::Unary { op, x, out, n } if exact(op) && n <= INLINE_MAX => {
                self.map2(Opnd::Slice(x), Opnd::Slice(x), out, n, |g, v, _| {
                    g.unary(op, v)
                });
            }
            ArenaStep::Sum { x, n, out } if n <= INLINE_MAX => self.sum::<T>(x, n, out),
            ArenaStep::Dot {
                a,
                sa,
                b,
                sb,
                k,
                out,
            } if k <= INLINE_MAX => self.dot::<T>((a, sa), (b, sb), k, out),
            ArenaStep::Outer {
                a,
                rsa,
                b,
                csb,
                m,
                n,
                out,
            } if m * n <= INLINE_MAX => {
                if n == 1 && (rsa == 1 || m == 1) {
                    let s = self.load(b);
                    self.map2(Opnd::Slice(a), Opnd::Value(s), out, m, |g, x, y| {
                        g.arith(BinaryOp::Mul, x, y)
                    });
                } else if m == 1 && csb == 1 {
                    let s = self.load(a);
                    self.map2(Opnd::Value(s), Opnd::Slice(b), out, n, |g, x, y| {
                        g.arith(BinaryOp::Mul, x, y)
                    });
                } else {
                    for i in 0..m {
                        let ai = self.load(a + i * rsa);
                        for j in 0..n {
                            let bj = self.load(b + j * csb);
                            let r = self.b.ins().fmul(ai, bj);
                            self.store(out + i * n + j, r);
                        }
                    }
                }
            }
            _ => return false,
        }
        true
    }

    /// [`reduce_all`](stategrad_simd::reduce_all)'s sum element by element: below one vector (`L` lanes of the
    /// build's widest vector) in order from zero; else four vector accumulators of `L` lanes
    /// (blocks of `4L` to each in turn, then single vectors to the first, then the tail to the
    /// first's leading lanes), summed `(a0 + a1) + (a2 + a3)`, the lanes folded pairwise.
    ///
    /// A lane that nothing was added to is `+0` and is tracked as `None`: every value that is
    /// tracked started as `0 + x`, and a sum of values none of which is `-0` is never `-0`, so
    /// adding `+0` to it is the identity and is not emitted.
    fn sum<T: Element>(&mut self, x: usize, n: usize, out: usize) {
        let l = stategrad_simd::isa::lanes::<T>();
        let zero = self.constant::<T>(0.0);
        if n < l {
            let mut s = zero;
            for i in 0..n {
                let v = self.load(x + i);
                s = self.b.ins().fadd(s, v);
            }
            return self.store(out, s);
        }
        // The `L` lanes of an accumulator are `L / vl` of this code's vectors, each lane still
        // its own chain of adds in the kernel's order.
        let vl = self.lanes;
        debug_assert!(
            l.is_multiple_of(vl),
            "the kernels' vectors hold whole code vectors"
        );
        let groups = l / vl;
        let zv = self.b.ins().splat(self.vty, zero);
        let add_in = |g: &mut Self, a: Option<Vec<Value>>, off: usize| -> Option<Vec<Value>> {
            Some(
                (0..groups)
                    .map(|q| {
                        let v = g.load_vec(off + q * vl);
                        let a = a.as_ref().map_or(zv, |a| a[q]);
                        g.b.ins().fadd(a, v)
                    })
                    .collect(),
            )
        };
        let mut acc: [Option<Vec<Value>>; 4] = [None, None, None, None];
        let big = n - n % (4 * l);
        for c in (0..big).step_by(4 * l) {
            for (j, a) in acc.iter_mut().enumerate() {
                *a = add_in(self, a.take(), x + c + j * l);
            }
        }
        let small = big + (n - big) / l * l;
        for c in (big..small).step_by(l) {
            acc[0] = add_in(self, acc[0].take(), x + c);
        }
        // The tail into the first accumulator's leading lanes: whole code vectors, then the
        // last few lanes as a vector of `+0` with those lanes set (the kernel pads with `+0`).
        let first = acc[0]
            .as_mut()
            .expect("n >= L: the first accumulator has every lane");
        let mut i = small;
        while i < n {
            let q = (i - small) / vl;
            let v = if i + vl <= n {
                self.load_vec(x + i)
            } else {
                let mut v = zv;
                for j in 0..n - i {
                    let e = self.load(x + i + j);
                    v = self.b.ins().insertlane(v, e, j as u8);
                }
                v
            };
            first[q] = self.b.ins().fadd(first[q], v);
            i += vl;
        }
        let add = |g: &mut Self, a: Option<Vec<Value>>, b: Option<Vec<Value>>| match (a, b) {
            (Some(a), Some(b)) => Some(
                a.iter()
                    .zip(&b)
                    .map(|(&x, &y)| g.b.ins().fadd(x, y))
                    .collect(),
            ),
            (a, None) => a,
            (None, b) => b,
        };
        let [a0, a1, a2, a3] = acc;
        let p = add(self, a0, a1);
        let q = add(self, a2, a3);
        let mut buf = add(self, p, q).expect("n >= L: the first accumulator has every lane");
        // Lanes folded pairwise, `buf[i] += buf[i + w]`: whole vectors while `w` spans them ...
        let mut w = l / 2;
        while w >= vl {
            for i in 0..w / vl {
                buf[i] = self.b.ins().fadd(buf[i], buf[i + w / vl]);
            }
            w /= 2;
        }
        // ... then the lanes of the first.
        let mut lanes: Vec<Value> = (0..vl)
            .map(|i| self.b.ins().extractlane(buf[0], i as u8))
            .collect();
        while w > 0 {
            for i in 0..w {
                lanes[i] = self.b.ins().fadd(lanes[i], lanes[i + w]);
            }
            w /= 2;
        }
        self.store(out, lanes[0]);
    }

    /// [`dot`](stategrad_simd::dot) term by term: eight accumulators (term `p` to accumulator
    /// `p % 8`), combined as `((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))`.
    fn dot<T: Element>(
        &mut self,
        (a, sa): (usize, usize),
        (b, sb): (usize, usize),
        k: usize,
        out: usize,
    ) {
        let zero = self.constant::<T>(0.0);
        let mut acc = [zero; 8];
        let body = if sa == 1 && sb == 1 { k - k % 8 } else { k };
        let vl = self.lanes;
        let mut first = 0;
        if sa == 1 && sb == 1 && body > 0 {
            // Contiguous blocks of 8 terms: lane `p % 8` of `8 / vl` vectors, each lane its own
            // chain `acc + a * b` as below.
            let zv = self.b.ins().splat(self.vty, zero);
            let mut vacc = vec![zv; 8 / vl];
            for p in (0..body).step_by(8) {
                for (q, v) in vacc.iter_mut().enumerate() {
                    let x = self.load_vec(a + p + q * vl);
                    let y = self.load_vec(b + p + q * vl);
                    let prod = self.b.ins().fmul(x, y);
                    *v = self.b.ins().fadd(*v, prod);
                }
            }
            for (i, lane) in acc.iter_mut().enumerate() {
                *lane = self.b.ins().extractlane(vacc[i / vl], (i % vl) as u8);
            }
            first = body;
        }
        for p in first..k {
            let (x, y) = (self.load(a + p * sa), self.load(b + p * sb));
            let prod = self.b.ins().fmul(x, y);
            acc[p % 8] = self.b.ins().fadd(acc[p % 8], prod);
        }
        let mut add = |x: Value, y: Value| self.b.ins().fadd(x, y);
        let (p, q) = (add(acc[0], acc[4]), add(acc[1], acc[5]));
        let (r, s) = (add(acc[2], acc[6]), add(acc[3], acc[7]));
        let (l, h) = (add(p, r), add(q, s));
        let v = add(l, h);
        self.store(out, v);
    }

    /// A call of closure `k`, which writes `out[..n]`. In a loop, a panic leaves the loop.
    fn call(&mut self, k: usize, (out, n): (usize, usize)) {
        let f = self.b.ins().iconst(self.ptr, self.tramp as i64);
        let kv = self.b.ins().iconst(self.ptr, k as i64);
        let cx = self.cx;
        let call = self.b.ins().call_indirect(self.call_sig, f, &[cx, kv]);
        self.forget(out, n);
        if let Some(exit) = self.exit {
            let panicked = self.b.inst_results(call)[0];
            let go_on = self.b.create_block();
            self.b.ins().brif(panicked, exit, &[], go_on, &[]);
            // Its one predecessor is the block of the call: what it knows stays known.
            self.b.switch_to_block(go_on);
            self.b.seal_block(go_on);
        }
    }
}
