//! AVX-512 code for runs of exact element-wise ops inside a fused pass.
//!
//! The block walk of [`fused`](crate::fused) runs each op over a block before the next one
//! starts, so every op loads its operands from L1 and stores its result there. For cheap ops
//! that traffic is most of the cost (about 1.4 ns per op per 16-lane vector, where the op
//! itself takes a cycle). Here a run of two or more consecutive *exact* ops (arithmetic,
//! multiply-add, max/min, neg, abs, sqrt, square, recip, relu, copies: the ops that are
//! IEEE-754 exact lane by lane) becomes one generated loop over the block: each operand is
//! loaded once per vector, every intermediate stays in a `zmm` register, and only the values
//! that something outside the run reads are stored. Transcendental ops keep their block
//! kernels.
//!
//! The generated code computes every lane with the same IEEE operation, in the same operand
//! order, as the block kernels (a multiply-add is a multiply then an add, never a contracted
//! FMA), so a pass gives the same bits with and without it. Code is made once per distinct
//! pass structure and kept in a process-wide cache; hosts without AVX-512F, and builds where
//! [`native_code_enabled`](crate::arena::native_code_enabled) is off, never use it.

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use iced_x86::code_asm::*;

use crate::fused::{FusedArg, FusedInput, FusedOp};
use crate::{BinaryOp, Element, UnaryOp};

/// Most base pointers one run may read or write (the general registers it keeps them in).
pub(crate) const MAX_BASES: usize = 10;

/// Most distinct pass structures whose code is kept; passes beyond it use the block kernels.
const CACHE_LIMIT: usize = 1024;

/// Bytes per vector (one `zmm` register): 16 `f32` or 8 `f64` lanes; runs cover whole vectors.
pub(crate) const VECTOR_BYTES: usize = 64;

/// What a base pointer of a run points at, at the start of each block.
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
    /// Base pointers, in the order the code reads them from its table.
    pub(crate) bases: Vec<Base>,
    /// Inputs that are scalars, in the order the code reads them from its table.
    pub(crate) scalars: Vec<usize>,
    /// Keeps the code mapped while `entry` may be called.
    _code: memmap2::Mmap,
    entry: unsafe extern "sysv64" fn(*const *mut u8, *const u8, usize),
}

impl Run {
    /// Runs the code over `len` positions.
    ///
    /// # Safety
    /// `bases[i]` points at `len` elements of the pass's element type for each entry of
    /// [`Run::bases`] (writable where the run stores: scratch and direct bases), `scalars`
    /// at [`Run::scalars`]`.len()` elements, `len` is a multiple of the vector's lane count,
    /// and the host has AVX-512F (true for any run: [`plan`] makes none otherwise).
    pub(crate) unsafe fn call<T: Element>(&self, bases: &[*mut u8], scalars: &[T], len: usize) {
        debug_assert!(bases.len() >= self.bases.len() && scalars.len() >= self.scalars.len());
        debug_assert_eq!(len * size_of::<T>() % VECTOR_BYTES, 0);
        // SAFETY: the code reads `bases.len()` table entries and `scalars.len()` scalars (the
        // lengths it was generated for), and touches `len` elements behind each base, which
        // the caller guarantees are valid; it preserves every callee-saved register.
        unsafe {
            (self.entry)(
                bases.as_ptr(),
                scalars.as_ptr().cast(),
                len * size_of::<T>(),
            )
        }
    }
}

/// The runs of one pass structure, in op order.
pub(crate) struct Plan {
    pub(crate) runs: Vec<Run>,
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
    outputs: Vec<usize>,
    sums: Vec<FusedArg>,
    direct: Option<usize>,
}

/// Whether this host runs the generated code (AVX-512F, and native code not switched off).
pub(crate) fn available() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f") && crate::arena::native_code_enabled()
    })
}

/// The code for a pass, made on first use of its structure: `None` when the host has no
/// AVX-512F, the pass has no run of two or more exact ops, or the code could not be made.
/// `outputs` are the ops whose values leave the pass, `direct` the one written straight into
/// its output buffer.
pub(crate) fn plan<T: Element>(
    ops: &[FusedOp],
    inputs: &[FusedInput<'_, T>],
    outputs: &[usize],
    sums: &[FusedArg],
    direct: Option<usize>,
) -> Option<Arc<Plan>> {
    if !available() {
        return None;
    }
    static CACHE: OnceLock<DashMap<Key, Option<Arc<Plan>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(DashMap::new);
    let key = Key {
        elem_bytes: size_of::<T>(),
        ops: ops.to_vec(),
        scalar_inputs: inputs
            .iter()
            .map(|x| matches!(x, FusedInput::Scalar(_)))
            .collect(),
        outputs: outputs.to_vec(),
        sums: sums.to_vec(),
        direct,
    };
    if let Some(p) = cache.get(&key) {
        return p.clone();
    }
    if cache.len() >= CACHE_LIMIT {
        return None;
    }
    let made = make_plan(&key);
    cache.entry(key).or_insert(made).clone()
}

/// Whether `op` is computed exactly (bit for bit the block kernel's result) by [`Emitter`].
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

fn operands(op: &FusedOp) -> Vec<FusedArg> {
    match *op {
        FusedOp::Unary(_, a) | FusedOp::Copy(a) => vec![a],
        FusedOp::Binary(_, a, b) => vec![a, b],
        FusedOp::MulAdd(a, b, c) | FusedOp::NegMulAdd(a, b, c) => vec![a, b, c],
    }
}

fn make_plan(key: &Key) -> Option<Arc<Plan>> {
    let mut runs = Vec::new();
    let mut k = 0;
    while k < key.ops.len() {
        let end = (k..key.ops.len())
            .find(|&j| !exact(&key.ops[j]))
            .unwrap_or(key.ops.len());
        if end - k >= 2 {
            // A run that cannot be made (too many live values or bases) stays on the kernels.
            runs.extend(make_run(key, k, end));
        }
        k = end.max(k + 1);
    }
    (!runs.is_empty()).then(|| Arc::new(Plan { runs }))
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
        for a in operands(&ops[k]) {
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
                .any(|op| operands(op).contains(&FusedArg::Op(k)))
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
        for a in operands(&ops[k]) {
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
        for a in operands(op) {
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
    let mut em = Emitter::new(f64).ok()?;
    em.prologue(bases.len(), &scalars, &consts).ok()?;
    for k in start..end {
        let args: Vec<Value> = operands(&ops[k]).into_iter().map(value_of).collect();
        let mut regs = Vec::with_capacity(args.len());
        for (&v, a) in args.iter().zip(operands(&ops[k])) {
            let r = match em.reg_of(v) {
                Some(r) => r,
                None => {
                    let base = loads.iter().find(|(b, _)| *b == a)?.1;
                    em.load(v, base).ok()?
                }
            };
            regs.push(r);
        }
        let dst = em.alloc(Value::Computed(k))?;
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
    let (code, entry) = em.finish().ok()?;
    Some(Run {
        start,
        end,
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

const ZMM: [AsmRegisterZmm; 32] = [
    zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13, zmm14,
    zmm15, zmm16, zmm17, zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26, zmm27,
    zmm28, zmm29, zmm30, zmm31,
];

/// Registers holding the base pointers; those from `rbx` on are callee-saved (pushed).
const BASE_REGS: [AsmRegister64; MAX_BASES] = [rax, r8, r9, r10, r11, rbx, r12, r13, r14, r15];
const CALLER_SAVED_BASES: usize = 5;

/// Writes one run's function: `(bases: rdi, scalars: rsi, bytes: rdx)`, a loop over the
/// positions in steps of one vector (`rcx` the byte offset), every value in a `zmm` register.
struct Emitter {
    a: CodeAssembler,
    f64: bool,
    /// What each `zmm` register holds.
    held: [Option<Value>; 32],
    pushed: usize,
    top: CodeLabel,
    done: CodeLabel,
}

impl Emitter {
    fn new(f64: bool) -> Result<Self, NoCode> {
        let mut a = CodeAssembler::new(64)?;
        let top = a.create_label();
        let done = a.create_label();
        Ok(Self {
            a,
            f64,
            held: [None; 32],
            pushed: 0,
            top,
            done,
        })
    }

    fn reg_of(&self, v: Value) -> Option<AsmRegisterZmm> {
        self.held.iter().position(|h| *h == Some(v)).map(|i| ZMM[i])
    }

    fn alloc(&mut self, v: Value) -> Option<AsmRegisterZmm> {
        let i = self.held.iter().position(Option::is_none)?;
        self.held[i] = Some(v);
        Some(ZMM[i])
    }

    fn free(&mut self, v: Value) {
        for h in &mut self.held {
            if *h == Some(v) {
                *h = None;
            }
        }
    }

    /// Saves callee-saved base registers, broadcasts scalars and constants, loads the bases,
    /// and opens the loop.
    fn prologue(
        &mut self,
        bases: usize,
        scalars: &[usize],
        consts: &[Konst],
    ) -> Result<(), NoCode> {
        let a = &mut self.a;
        a.test(rdx, rdx)?;
        a.jz(self.done)?;
        for &g in &BASE_REGS[CALLER_SAVED_BASES..bases.max(CALLER_SAVED_BASES)] {
            a.push(g)?;
            self.pushed += 1;
        }
        for &c in consts {
            let Some(z) = self.held.iter().position(Option::is_none) else {
                return Err(NoCode);
            };
            self.held[z] = Some(Value::Const(c));
            let z = ZMM[z];
            let a = &mut self.a;
            if c == Konst::Zero {
                a.vpxord(z, z, z)?;
                continue;
            }
            let bits: u64 = match (c, self.f64) {
                (Konst::SignBit, false) => 0x8000_0000,
                (Konst::AbsMask, false) => 0x7fff_ffff,
                (Konst::One, false) => 1.0f32.to_bits() as u64,
                (Konst::SignBit, true) => 0x8000_0000_0000_0000,
                (Konst::AbsMask, true) => 0x7fff_ffff_ffff_ffff,
                (Konst::One, true) => 1.0f64.to_bits(),
                (Konst::Zero, _) => unreachable!("zero is made above"),
            };
            a.mov(rcx, bits)?;
            if self.f64 {
                a.vpbroadcastq(z, rcx)?;
            } else {
                a.vpbroadcastd(z, ecx)?;
            }
        }
        for (j, &i) in scalars.iter().enumerate() {
            let Some(z) = self.alloc(Value::Scalar(i)) else {
                return Err(NoCode);
            };
            let j = j as i32;
            if self.f64 {
                self.a.vbroadcastsd(z, qword_ptr(rsi + 8 * j))?;
            } else {
                self.a.vbroadcastss(z, dword_ptr(rsi + 4 * j))?;
            }
        }
        for (j, &g) in BASE_REGS[..bases].iter().enumerate() {
            self.a.mov(g, qword_ptr(rdi + 8 * j as i32))?;
        }
        self.a.xor(ecx, ecx)?;
        Ok(self.a.set_label(&mut self.top)?)
    }

    fn load(&mut self, v: Value, base: usize) -> Result<AsmRegisterZmm, NoCode> {
        let z = self.alloc(v).ok_or(NoCode)?;
        let m = zmmword_ptr(BASE_REGS[base] + rcx);
        if self.f64 {
            self.a.vmovupd(z, m)?;
        } else {
            self.a.vmovups(z, m)?;
        }
        Ok(z)
    }

    fn store(&mut self, z: AsmRegisterZmm, base: usize) -> Result<(), IcedError> {
        let m = zmmword_ptr(BASE_REGS[base] + rcx);
        if self.f64 {
            self.a.vmovupd(m, z)
        } else {
            self.a.vmovups(m, z)
        }
    }

    fn konst(&self, c: Konst) -> AsmRegisterZmm {
        self.reg_of(Value::Const(c))
            .expect("the prologue broadcasts every constant the run's ops use")
    }

    /// `d = op(x, y)` with the block kernels' operand order.
    fn binary(
        &mut self,
        op: BinaryOp,
        d: AsmRegisterZmm,
        x: AsmRegisterZmm,
        y: AsmRegisterZmm,
    ) -> Result<(), IcedError> {
        let (a, f64) = (&mut self.a, self.f64);
        match (op, f64) {
            (BinaryOp::Add, false) => a.vaddps(d, x, y),
            (BinaryOp::Add, true) => a.vaddpd(d, x, y),
            (BinaryOp::Sub, false) => a.vsubps(d, x, y),
            (BinaryOp::Sub, true) => a.vsubpd(d, x, y),
            (BinaryOp::Mul, false) => a.vmulps(d, x, y),
            (BinaryOp::Mul, true) => a.vmulpd(d, x, y),
            (BinaryOp::Div, false) => a.vdivps(d, x, y),
            (BinaryOp::Div, true) => a.vdivpd(d, x, y),
            (BinaryOp::Max | BinaryOp::Min, _) => {
                // `vector::max`: `x` where `x` is NaN or `x > y` (`<` for min), else `y`.
                const NEQ_UQ: i32 = 4;
                const LT_OQ: i32 = 0x11;
                const GT_OQ: i32 = 0x1e;
                let pick = if op == BinaryOp::Max { GT_OQ } else { LT_OQ };
                if f64 {
                    a.vcmppd(k1, x, x, NEQ_UQ)?;
                    a.vcmppd(k2, x, y, pick)?;
                } else {
                    a.vcmpps(k1, x, x, NEQ_UQ)?;
                    a.vcmpps(k2, x, y, pick)?;
                }
                a.korw(k1, k1, k2)?;
                if f64 {
                    a.vblendmpd(d.k1(), y, x)
                } else {
                    a.vblendmps(d.k1(), y, x)
                }
            }
            _ => unreachable!("only exact ops are in runs"),
        }
    }

    fn op(
        &mut self,
        op: &FusedOp,
        d: AsmRegisterZmm,
        r: &[AsmRegisterZmm],
    ) -> Result<(), IcedError> {
        match *op {
            FusedOp::Binary(b, _, _) => self.binary(b, d, r[0], r[1]),
            FusedOp::MulAdd(..) => {
                self.binary(BinaryOp::Mul, d, r[0], r[1])?;
                self.binary(BinaryOp::Add, d, d, r[2])
            }
            FusedOp::NegMulAdd(..) => {
                self.binary(BinaryOp::Mul, d, r[0], r[1])?;
                self.binary(BinaryOp::Sub, d, r[2], d)
            }
            FusedOp::Copy(_) => self.a.vmovaps(d, r[0]),
            FusedOp::Unary(u, _) => match u {
                UnaryOp::Neg => {
                    let c = self.konst(Konst::SignBit);
                    self.a.vpxord(d, r[0], c)
                }
                UnaryOp::Abs => {
                    let c = self.konst(Konst::AbsMask);
                    self.a.vpandd(d, r[0], c)
                }
                UnaryOp::Sqrt if self.f64 => self.a.vsqrtpd(d, r[0]),
                UnaryOp::Sqrt => self.a.vsqrtps(d, r[0]),
                UnaryOp::Square => self.binary(BinaryOp::Mul, d, r[0], r[0]),
                UnaryOp::Recip => {
                    let c = self.konst(Konst::One);
                    self.binary(BinaryOp::Div, d, c, r[0])
                }
                UnaryOp::Relu => {
                    let c = self.konst(Konst::Zero);
                    self.binary(BinaryOp::Max, d, r[0], c)
                }
                _ => unreachable!("only exact ops are in runs"),
            },
        }
    }

    /// Closes the loop, restores saved registers, and maps the code executable.
    #[allow(clippy::type_complexity)]
    fn finish(
        mut self,
    ) -> Result<
        (
            memmap2::Mmap,
            unsafe extern "sysv64" fn(*const *mut u8, *const u8, usize),
        ),
        NoCode,
    > {
        let a = &mut self.a;
        a.add(rcx, VECTOR_BYTES as i32)?;
        a.cmp(rcx, rdx)?;
        a.jb(self.top)?;
        for &g in BASE_REGS[CALLER_SAVED_BASES..CALLER_SAVED_BASES + self.pushed]
            .iter()
            .rev()
        {
            a.pop(g)?;
        }
        a.set_label(&mut self.done)?;
        a.vzeroupper()?;
        a.ret()?;
        // Only relative jumps inside the function: the bytes run at any address.
        let bytes = a.assemble(0)?;
        let mut map = memmap2::MmapMut::map_anon(bytes.len())?;
        map.copy_from_slice(&bytes);
        let map = map.make_exec()?;
        // SAFETY: `map` holds the function just assembled, whose signature is this one (the
        // System V convention: table in `rdi`, scalars in `rsi`, byte count in `rdx`); the
        // caller keeps `map` alive as long as it keeps the pointer.
        let entry = unsafe {
            std::mem::transmute::<
                *const u8,
                unsafe extern "sysv64" fn(*const *mut u8, *const u8, usize),
            >(map.as_ptr())
        };
        Ok((map, entry))
    }
}
