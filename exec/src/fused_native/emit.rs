//! The assembler side of [`fused_native`](super): register allocation over the `zmm` file,
//! the constant pool of the transcendental ops, and each op's instructions, lane for lane as the
//! block kernels compute it.

use iced_x86::code_asm::*;

use super::{Entry, Konst, NoCode, Value, MAX_BASES, VECTOR_BYTES};
use crate::fused::FusedOp;
use crate::{BinaryOp, UnaryOp};

pub(super) const ZMM: [AsmRegisterZmm; 32] = [
    zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13, zmm14,
    zmm15, zmm16, zmm17, zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26, zmm27,
    zmm28, zmm29, zmm30, zmm31,
];

/// Registers holding the base pointers; those from `rbx` on are callee-saved (pushed).
const BASE_REGS: [AsmRegister64; MAX_BASES] = [rax, r8, r9, r10, r11, rbx, r12, r13, r14, r15];
const CALLER_SAVED_BASES: usize = 5;

/// Most vectors one loop iteration handles side by side.
pub(crate) const MAX_GROUPS: usize = 2;

/// The mask registers of each group (`k7` collects the fallback lanes of all of them).
const MASKS: [[usize; 3]; MAX_GROUPS] = [[1, 2, 3], [4, 5, 6]];

fn kreg(i: usize) -> AsmRegisterK {
    [k0, k1, k2, k3, k4, k5, k6, k7][i]
}

/// `z` written under mask register `k{i}` (merging).
fn masked(z: AsmRegisterZmm, i: usize) -> AsmRegisterZmm {
    match i {
        1 => z.k1(),
        2 => z.k2(),
        3 => z.k3(),
        4 => z.k4(),
        5 => z.k5(),
        _ => z.k6(),
    }
}

/// One value's registers, one per group; a value shared by the groups (a scalar, a constant)
/// repeats one register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct R([AsmRegisterZmm; MAX_GROUPS]);

impl R {
    fn shared(z: AsmRegisterZmm) -> Self {
        R([z; MAX_GROUPS])
    }
}

/// Whether each group holds its own register for `v` (else one register serves all).
fn per_group(v: Value) -> bool {
    matches!(v, Value::Loaded(_) | Value::Computed(_) | Value::Temp(_))
}

/// Emits one instruction per group: `each!(self, g => self.a.op(x.0[g], ...))`.
macro_rules! each {
    ($em:ident, $g:ident => $e:expr) => {
        for $g in 0..$em.groups {
            $e?;
        }
    };
}

/// Writes one run's function: `(bases: rdi, scalars: rsi, bytes: rdx) -> eax`, a loop over
/// the positions (`rcx` the byte offset) that handles `groups` vectors side by side per
/// iteration (their instructions interleaved, so that two independent dependency chains
/// fill the pipeline), every value in `zmm` registers; `k7` collects the lanes that need the
/// `std` fallback.
pub(super) struct Emitter {
    a: CodeAssembler,
    f64: bool,
    groups: usize,
    /// What each `zmm` register holds, and for which group.
    held: [Option<(Value, usize)>; 32],
    pushed: usize,
    top: CodeLabel,
    done: CodeLabel,
    /// Labels of the constant pool ([`Pool`]) at the start of the code, when the run has
    /// transcendental ops; the function starts `pool_bytes` in.
    pool: Vec<CodeLabel>,
    pool_bytes: usize,
    temps: usize,
    /// Uses of each pool constant (to choose which to pin), and the most registers held.
    pub(super) uses: [usize; Pool::ALL.len()],
    pub(super) peak: usize,
}

/// Constants of the transcendental ops (f32 bits), read by broadcast from the code's pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pool {
    Zero,
    One,
    Two,
    SignBit,
    AbsMask,
    AllOnes,
    TwoPow31,
    Log2E,
    Ln2Hi,
    Ln2Lo,
    Exp0,
    Exp1,
    Exp2,
    Exp3,
    Exp4,
    Exp5,
    ExpLo,
    ExpHi,
    MaxExponent,
    MinExponent,
    Mantissa,
    BiasedMantissa,
    Tanh0,
    Tanh1,
    Tanh2,
    Tanh3,
    Tanh4,
    TanhSmall,
}

impl Pool {
    pub(super) const ALL: [Pool; 28] = [
        Pool::Zero,
        Pool::One,
        Pool::Two,
        Pool::SignBit,
        Pool::AbsMask,
        Pool::AllOnes,
        Pool::TwoPow31,
        Pool::Log2E,
        Pool::Ln2Hi,
        Pool::Ln2Lo,
        Pool::Exp0,
        Pool::Exp1,
        Pool::Exp2,
        Pool::Exp3,
        Pool::Exp4,
        Pool::Exp5,
        Pool::ExpLo,
        Pool::ExpHi,
        Pool::MaxExponent,
        Pool::MinExponent,
        Pool::Mantissa,
        Pool::BiasedMantissa,
        Pool::Tanh0,
        Pool::Tanh1,
        Pool::Tanh2,
        Pool::Tanh3,
        Pool::Tanh4,
        Pool::TanhSmall,
    ];

    /// The constants of `vector::exp_f32`, `tanh_f32`, `sigmoid` and `wide`'s `f32x16`
    /// `round_int`, bit for bit.
    fn bits(self) -> u32 {
        match self {
            Pool::Zero => 0,
            Pool::One => 1.0f32.to_bits(),
            Pool::Two => 2.0f32.to_bits(),
            Pool::SignBit => 0x8000_0000,
            Pool::AbsMask => 0x7fff_ffff,
            Pool::AllOnes => u32::MAX,
            Pool::TwoPow31 => 2_147_483_648.0f32.to_bits(),
            Pool::Log2E => std::f32::consts::LOG2_E.to_bits(),
            Pool::Ln2Hi => (-0.693_359_4f32).to_bits(),
            Pool::Ln2Lo => 2.121_944_4e-4f32.to_bits(),
            Pool::Exp0 => 1.987_569_1e-4f32.to_bits(),
            Pool::Exp1 => 1.398_199_9e-3f32.to_bits(),
            Pool::Exp2 => 8.333_452e-3f32.to_bits(),
            Pool::Exp3 => 4.166_579_6e-2f32.to_bits(),
            Pool::Exp4 => 1.666_666_5e-1f32.to_bits(),
            Pool::Exp5 => 0.5f32.to_bits(),
            Pool::ExpLo => (-87.0f32).to_bits(),
            Pool::ExpHi => 88.0f32.to_bits(),
            Pool::MaxExponent => 127.0f32.to_bits(),
            Pool::MinExponent => (-126.0f32).to_bits(),
            Pool::Mantissa => 8_388_608.0f32.to_bits(),
            Pool::BiasedMantissa => (127.0f32 * 8_388_608.0).to_bits(),
            Pool::Tanh0 => (-5.704_988_7e-3f32).to_bits(),
            Pool::Tanh1 => 2.063_909e-2f32.to_bits(),
            Pool::Tanh2 => (-5.373_971_6e-2f32).to_bits(),
            Pool::Tanh3 => 1.333_144_2e-1f32.to_bits(),
            Pool::Tanh4 => (-3.333_328e-1f32).to_bits(),
            Pool::TanhSmall => 0.625f32.to_bits(),
        }
    }
}

/// `vcmpps` predicates (the ones `wide`'s comparisons use).
const EQ_OQ: i32 = 0;
const NEQ_UQ: i32 = 4;
const LT_OQ: i32 = 0x11;
const LE_OQ: i32 = 0x12;
const GE_OQ: i32 = 0x1d;
const GT_OQ: i32 = 0x1e;

impl Emitter {
    pub(super) fn new(f64: bool, groups: usize, with_pool: bool) -> Result<Self, NoCode> {
        let mut a = CodeAssembler::new(64)?;
        let top = a.create_label();
        let done = a.create_label();
        let mut pool = Vec::new();
        let mut pool_bytes = 0;
        if with_pool {
            for c in Pool::ALL {
                let mut l = a.create_label();
                a.set_label(&mut l)?;
                a.dd(&[c.bits()])?;
                pool.push(l);
            }
            // The function starts on a cache line of its own.
            let words = Pool::ALL.len().div_ceil(16) * 16;
            a.dd(&vec![0; words - Pool::ALL.len()])?;
            pool_bytes = 4 * words;
        }
        Ok(Self {
            a,
            f64,
            groups,
            held: [None; 32],
            pushed: 0,
            top,
            done,
            pool,
            pool_bytes,
            temps: 0,
            uses: [0; Pool::ALL.len()],
            peak: 0,
        })
    }

    /// The registers of `v`, if it is held.
    pub(super) fn reg_of(&self, v: Value) -> Option<R> {
        let find = |g: usize| {
            self.held
                .iter()
                .position(|h| *h == Some((v, g)))
                .map(|i| ZMM[i])
        };
        if !per_group(v) {
            return find(0).map(R::shared);
        }
        let mut r = R::shared(find(0)?);
        for g in 1..self.groups {
            r.0[g] = find(g)?;
        }
        Some(r)
    }

    fn alloc_one(&mut self, v: Value, g: usize) -> Result<AsmRegisterZmm, NoCode> {
        let i = self.held.iter().position(Option::is_none).ok_or(NoCode)?;
        self.held[i] = Some((v, g));
        self.peak = self.peak.max(self.held.iter().flatten().count());
        Ok(ZMM[i])
    }

    /// Registers for `v`: one per group, or one shared.
    pub(super) fn alloc(&mut self, v: Value) -> Result<R, NoCode> {
        let mut r = R::shared(self.alloc_one(v, 0)?);
        if per_group(v) {
            for g in 1..self.groups {
                r.0[g] = self.alloc_one(v, g)?;
            }
        }
        Ok(r)
    }

    pub(super) fn free(&mut self, v: Value) {
        for h in &mut self.held {
            if matches!(h, Some((w, _)) if *w == v) {
                *h = None;
            }
        }
    }

    /// Saves callee-saved base registers, broadcasts scalars and constants, loads the bases,
    /// and opens the loop.
    pub(super) fn prologue(
        &mut self,
        bases: usize,
        scalars: &[usize],
        consts: &[Konst],
        pins: &[Pool],
    ) -> Result<(), NoCode> {
        let a = &mut self.a;
        a.xor(eax, eax)?;
        a.kxorw(k7, k7, k7)?;
        a.test(rdx, rdx)?;
        a.jz(self.done)?;
        for &g in &BASE_REGS[CALLER_SAVED_BASES..bases.max(CALLER_SAVED_BASES)] {
            a.push(g)?;
            self.pushed += 1;
        }
        for &c in consts {
            let z = self.alloc(Value::Const(c))?.0[0];
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
            let z = self.alloc(Value::Scalar(i))?.0[0];
            let j = j as i32;
            if self.f64 {
                self.a.vbroadcastsd(z, qword_ptr(rsi + 8 * j))?;
            } else {
                self.a.vbroadcastss(z, dword_ptr(rsi + 4 * j))?;
            }
        }
        for &p in pins {
            let z = self.alloc(Value::Pooled(p))?.0[0];
            self.a.vbroadcastss(z, dword_ptr(self.pool[p as usize]))?;
        }
        for (j, &g) in BASE_REGS[..bases].iter().enumerate() {
            self.a.mov(g, qword_ptr(rdi + 8 * j as i32))?;
        }
        self.a.xor(ecx, ecx)?;
        Ok(self.a.set_label(&mut self.top)?)
    }

    /// Group `g`'s vector behind base `base`.
    fn at(base: usize, g: usize) -> AsmMemoryOperand {
        zmmword_ptr(BASE_REGS[base] + rcx + (VECTOR_BYTES * g) as i32)
    }

    pub(super) fn load(&mut self, v: Value, base: usize) -> Result<R, NoCode> {
        let z = self.alloc(v)?;
        if self.f64 {
            each!(self, g => self.a.vmovupd(z.0[g], Self::at(base, g)));
        } else {
            each!(self, g => self.a.vmovups(z.0[g], Self::at(base, g)));
        }
        Ok(z)
    }

    pub(super) fn store(&mut self, z: R, base: usize) -> Result<(), NoCode> {
        if self.f64 {
            each!(self, g => self.a.vmovupd(Self::at(base, g), z.0[g]));
        } else {
            each!(self, g => self.a.vmovups(Self::at(base, g), z.0[g]));
        }
        Ok(())
    }

    fn konst(&self, c: Konst) -> AsmRegisterZmm {
        self.reg_of(Value::Const(c))
            .expect("the prologue broadcasts every constant the run's ops use")
            .0[0]
    }

    /// `d = op(x, y)` with the block kernels' operand order.
    fn binary(&mut self, op: BinaryOp, d: R, x: R, y: R) -> Result<(), NoCode> {
        let f64 = self.f64;
        match (op, f64) {
            (BinaryOp::Add, false) => each!(self, g => self.a.vaddps(d.0[g], x.0[g], y.0[g])),
            (BinaryOp::Add, true) => each!(self, g => self.a.vaddpd(d.0[g], x.0[g], y.0[g])),
            (BinaryOp::Sub, false) => each!(self, g => self.a.vsubps(d.0[g], x.0[g], y.0[g])),
            (BinaryOp::Sub, true) => each!(self, g => self.a.vsubpd(d.0[g], x.0[g], y.0[g])),
            (BinaryOp::Mul, false) => each!(self, g => self.a.vmulps(d.0[g], x.0[g], y.0[g])),
            (BinaryOp::Mul, true) => each!(self, g => self.a.vmulpd(d.0[g], x.0[g], y.0[g])),
            (BinaryOp::Div, false) => each!(self, g => self.a.vdivps(d.0[g], x.0[g], y.0[g])),
            (BinaryOp::Div, true) => each!(self, g => self.a.vdivpd(d.0[g], x.0[g], y.0[g])),
            (BinaryOp::Max | BinaryOp::Min, _) => {
                // `vector::max`: `x` where `x` is NaN or `x > y` (`<` for min), else `y`.
                let pick = if op == BinaryOp::Max { GT_OQ } else { LT_OQ };
                for g in 0..self.groups {
                    let [m0, m1, _] = MASKS[g];
                    let (a, x, y, d) = (&mut self.a, x.0[g], y.0[g], d.0[g]);
                    if f64 {
                        a.vcmppd(kreg(m0), x, x, NEQ_UQ)?;
                        a.vcmppd(kreg(m1), x, y, pick)?;
                    } else {
                        a.vcmpps(kreg(m0), x, x, NEQ_UQ)?;
                        a.vcmpps(kreg(m1), x, y, pick)?;
                    }
                    a.korw(kreg(m0), kreg(m0), kreg(m1))?;
                    if f64 {
                        a.vblendmpd(masked(d, m0), y, x)?;
                    } else {
                        a.vblendmps(masked(d, m0), y, x)?;
                    }
                }
            }
            _ => unreachable!("only exact ops are in runs"),
        }
        Ok(())
    }

    pub(super) fn op(&mut self, op: &FusedOp, d: R, r: &[R]) -> Result<(), NoCode> {
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
            FusedOp::Copy(_) => {
                each!(self, g => self.a.vmovaps(d.0[g], r[0].0[g]));
                Ok(())
            }
            FusedOp::Unary(u, _) => match u {
                UnaryOp::Neg => {
                    let c = self.konst(Konst::SignBit);
                    each!(self, g => self.a.vpxord(d.0[g], r[0].0[g], c));
                    Ok(())
                }
                UnaryOp::Abs => {
                    let c = self.konst(Konst::AbsMask);
                    each!(self, g => self.a.vpandd(d.0[g], r[0].0[g], c));
                    Ok(())
                }
                UnaryOp::Sqrt if self.f64 => {
                    each!(self, g => self.a.vsqrtpd(d.0[g], r[0].0[g]));
                    Ok(())
                }
                UnaryOp::Sqrt => {
                    each!(self, g => self.a.vsqrtps(d.0[g], r[0].0[g]));
                    Ok(())
                }
                UnaryOp::Square => self.binary(BinaryOp::Mul, d, r[0], r[0]),
                UnaryOp::Recip => {
                    let c = R::shared(self.konst(Konst::One));
                    self.binary(BinaryOp::Div, d, c, r[0])
                }
                UnaryOp::Relu => {
                    let c = R::shared(self.konst(Konst::Zero));
                    self.binary(BinaryOp::Max, d, r[0], c)
                }
                UnaryOp::Exp => self.exp_checked(d, r[0]),
                UnaryOp::Tanh => self.tanh(d, r[0]),
                UnaryOp::Sigmoid => self.sigmoid(d, r[0]),
                _ => unreachable!("only native ops are in runs"),
            },
        }
    }

    /// A register holding pool constant `p` in every lane: its own register when the prologue
    /// pinned it, else the constant scratch register, loaded here (use it at once).
    fn c(&mut self, p: Pool) -> Result<AsmRegisterZmm, NoCode> {
        self.uses[p as usize] += 1;
        if let Some(z) = self.reg_of(Value::Pooled(p)) {
            return Ok(z.0[0]);
        }
        let z = match self.reg_of(Value::PoolScratch) {
            Some(z) => z.0[0],
            None => self.alloc(Value::PoolScratch)?.0[0],
        };
        self.a.vbroadcastss(z, dword_ptr(self.pool[p as usize]))?;
        Ok(z)
    }

    /// `d = p` in every lane.
    fn splat(&mut self, d: R, p: Pool) -> Result<(), NoCode> {
        match self.reg_of(Value::Pooled(p)) {
            Some(z) => each!(self, g => self.a.vmovaps(d.0[g], z.0[0])),
            None => {
                each!(self, g => self.a.vbroadcastss(d.0[g], dword_ptr(self.pool[p as usize])))
            }
        }
        Ok(())
    }

    fn tmp(&mut self) -> Result<R, NoCode> {
        self.temps += 1;
        self.alloc(Value::Temp(self.temps))
    }

    fn untmp(&mut self, r: R) {
        for z in r.0 {
            if let Some(i) = ZMM.iter().position(|&q| q == z) {
                self.held[i] = None;
            }
        }
    }

    /// `vector::min(x, c)` / `max(x, c)` against a pool constant, in place.
    fn clamp(&mut self, x: R, c: Pool, max: bool) -> Result<(), NoCode> {
        let m = self.c(c)?;
        let pick = if max { GT_OQ } else { LT_OQ };
        each!(self, g => self.a.vcmpps(kreg(MASKS[g][0]), x.0[g], x.0[g], NEQ_UQ));
        each!(self, g => self.a.vcmpps(kreg(MASKS[g][1]), x.0[g], m, pick));
        for g in 0..self.groups {
            let [m0, m1, _] = MASKS[g];
            self.a.korw(kreg(m0), kreg(m0), kreg(m1))?;
            // Keep `x` where the mask is set: blend the constant into the other lanes.
            self.a.knotw(kreg(m0), kreg(m0))?;
        }
        each!(self, g => self.a.vblendmps(masked(x.0[g], MASKS[g][0]), x.0[g], m));
        Ok(())
    }

    /// `d = d * x + p` (one rounding), `p` a pool constant.
    fn fma_c(&mut self, d: R, x: R, p: Pool) -> Result<(), NoCode> {
        let m = self.c(p)?;
        each!(self, g => self.a.vfmadd213ps(d.0[g], x.0[g], m));
        Ok(())
    }

    /// `vector::exp_f32`: `d = e^x` for `x` in `[-87, 88]` (`d` may be `x`).
    fn exp_raw(&mut self, d: R, x: R) -> Result<(), NoCode> {
        let (r, t, p, tt) = (self.tmp()?, self.tmp()?, self.tmp()?, self.tmp()?);
        let m = self.c(Pool::Log2E)?;
        each!(self, g => self.a.vmulps(r.0[g], x.0[g], m));
        // `round_ties_even`: to nearest, no exceptions.
        each!(self, g => self.a.vrndscaleps(r.0[g], r.0[g], 0x08));
        each!(self, g => self.a.vmovaps(t.0[g], x.0[g]));
        // t = r * hi + x, then + r * lo.
        let m = self.c(Pool::Ln2Hi)?;
        each!(self, g => self.a.vfmadd231ps(t.0[g], r.0[g], m));
        let m = self.c(Pool::Ln2Lo)?;
        each!(self, g => self.a.vfmadd231ps(t.0[g], r.0[g], m));
        self.splat(p, Pool::Exp0)?;
        for e in [Pool::Exp1, Pool::Exp2, Pool::Exp3, Pool::Exp4, Pool::Exp5] {
            self.fma_c(p, t, e)?; // p = p * t + e
        }
        each!(self, g => self.a.vmulps(tt.0[g], t.0[g], t.0[g]));
        each!(self, g => self.a.vfmadd213ps(p.0[g], tt.0[g], t.0[g])); // p * t² + t
        let m = self.c(Pool::One)?;
        each!(self, g => self.a.vaddps(p.0[g], p.0[g], m));
        self.untmp(t);
        self.clamp(r, Pool::MaxExponent, false)?;
        self.clamp(r, Pool::MinExponent, true)?;
        // 2^r from its exponent bits: `round_int(r * 2^23 + 127 * 2^23)` as in `wide`.
        self.splat(tt, Pool::BiasedMantissa)?;
        let m = self.c(Pool::Mantissa)?;
        each!(self, g => self.a.vfmadd231ps(tt.0[g], r.0[g], m));
        each!(self, g => self.a.vcmpps(kreg(MASKS[g][0]), tt.0[g], tt.0[g], EQ_OQ));
        let m = self.c(Pool::TwoPow31)?;
        each!(self, g => self.a.vcmpps(kreg(MASKS[g][1]), tt.0[g], m, GE_OQ));
        each!(self, g => self.a.vmovaps(masked(r.0[g], MASKS[g][0]).z(), tt.0[g]));
        each!(self, g => self.a.vcvtps2dq(r.0[g], r.0[g]));
        let m = self.c(Pool::AllOnes)?;
        each!(self, g => self.a.vpxord(masked(r.0[g], MASKS[g][1]), r.0[g], m));
        each!(self, g => self.a.vmulps(d.0[g], p.0[g], r.0[g]));
        self.untmp(r);
        self.untmp(p);
        self.untmp(tt);
        Ok(())
    }

    /// `div_fast` of `f32x16`: `d = n / den` through the refined reciprocal estimate.
    fn div_fast(&mut self, d: R, n: R, den: R) -> Result<(), NoCode> {
        let (r, e) = (self.tmp()?, self.tmp()?);
        each!(self, g => self.a.vrcp14ps(r.0[g], den.0[g]));
        let m = self.c(Pool::SignBit)?;
        each!(self, g => self.a.vpxord(e.0[g], den.0[g], m));
        self.fma_c(e, r, Pool::One)?; // -den * r + 1
        each!(self, g => self.a.vfmadd213ps(e.0[g], r.0[g], r.0[g])); // r * e + r
        each!(self, g => self.a.vmulps(d.0[g], n.0[g], e.0[g]));
        self.untmp(r);
        self.untmp(e);
        Ok(())
    }

    /// Adds the lanes of mask register `k{i}` (per group) to the fallback lanes in `k7`.
    fn mark_fallback(&mut self, i: usize) -> Result<(), NoCode> {
        for g in 0..self.groups {
            let k = kreg(MASKS[g][i]);
            self.a.knotw(k, k)?;
            self.a.korw(k7, k7, k)?;
        }
        Ok(())
    }

    /// `vector::exp` as the kernels use it: lanes outside `[-87, 88]` (and NaN) are marked
    /// in `k7` for the `std` fallback.
    fn exp_checked(&mut self, d: R, x: R) -> Result<(), NoCode> {
        let m = self.c(Pool::ExpLo)?;
        each!(self, g => self.a.vcmpps(kreg(MASKS[g][2]), x.0[g], m, GE_OQ));
        let m = self.c(Pool::ExpHi)?;
        each!(self, g => self.a.vcmpps(kreg(MASKS[g][1]), x.0[g], m, LE_OQ));
        for g in 0..self.groups {
            let [_, m1, m2] = MASKS[g];
            self.a.kandw(kreg(m2), kreg(m2), kreg(m1))?;
        }
        self.mark_fallback(2)?;
        self.exp_raw(d, x)
    }

    /// `vector::tanh_f32` (full domain, no fallback).
    fn tanh(&mut self, d: R, x: R) -> Result<(), NoCode> {
        let (ab, z, p, small) = (self.tmp()?, self.tmp()?, self.tmp()?, self.tmp()?);
        let m = self.c(Pool::AbsMask)?;
        each!(self, g => self.a.vpandd(ab.0[g], x.0[g], m));
        each!(self, g => self.a.vmulps(z.0[g], ab.0[g], ab.0[g]));
        self.splat(p, Pool::Tanh0)?;
        for t in [Pool::Tanh1, Pool::Tanh2, Pool::Tanh3, Pool::Tanh4] {
            self.fma_c(p, z, t)?;
        }
        each!(self, g => self.a.vmulps(p.0[g], z.0[g], p.0[g]));
        each!(self, g => self.a.vmovaps(small.0[g], ab.0[g]));
        each!(self, g => self.a.vfmadd231ps(small.0[g], ab.0[g], p.0[g])); // a * (z p) + a
                                                                           // Above 0.625: 1 - 2 / (e^min(2a, 88) + 1).
        each!(self, g => self.a.vaddps(z.0[g], ab.0[g], ab.0[g]));
        self.clamp(z, Pool::ExpHi, false)?;
        self.exp_raw(z, z)?;
        let m = self.c(Pool::One)?;
        each!(self, g => self.a.vaddps(z.0[g], z.0[g], m));
        self.splat(p, Pool::Two)?;
        self.div_fast(z, p, z)?;
        self.splat(p, Pool::One)?;
        each!(self, g => self.a.vsubps(p.0[g], p.0[g], z.0[g]));
        let m = self.c(Pool::TanhSmall)?;
        each!(self, g => self.a.vcmpps(kreg(MASKS[g][0]), ab.0[g], m, LT_OQ));
        each!(self, g => self.a.vblendmps(masked(d.0[g], MASKS[g][0]), p.0[g], small.0[g]));
        let m = self.c(Pool::SignBit)?;
        each!(self, g => self.a.vpandd(ab.0[g], x.0[g], m));
        each!(self, g => self.a.vpxord(d.0[g], d.0[g], ab.0[g]));
        for r in [ab, z, p, small] {
            self.untmp(r);
        }
        Ok(())
    }

    /// `vector::sigmoid`: lanes with `-|x| < -87` are marked in `k7` for the `std` fallback.
    fn sigmoid(&mut self, d: R, x: R) -> Result<(), NoCode> {
        let (na, e, num) = (self.tmp()?, self.tmp()?, self.tmp()?);
        let m = self.c(Pool::AbsMask)?;
        each!(self, g => self.a.vpandd(na.0[g], x.0[g], m));
        let m = self.c(Pool::SignBit)?;
        each!(self, g => self.a.vpxord(na.0[g], na.0[g], m));
        let m = self.c(Pool::ExpLo)?;
        each!(self, g => self.a.vcmpps(kreg(MASKS[g][2]), na.0[g], m, GE_OQ));
        self.mark_fallback(2)?;
        self.exp_raw(e, na)?;
        let m = self.c(Pool::Zero)?;
        each!(self, g => self.a.vcmpps(kreg(MASKS[g][2]), x.0[g], m, GE_OQ));
        // 1 where x >= 0, else e^-|x|; over 1 + e^-|x|.
        let m = self.c(Pool::One)?;
        each!(self, g => self.a.vblendmps(masked(num.0[g], MASKS[g][2]), e.0[g], m));
        each!(self, g => self.a.vaddps(na.0[g], e.0[g], m));
        self.div_fast(d, num, na)?;
        for r in [na, e, num] {
            self.untmp(r);
        }
        Ok(())
    }

    /// Closes the loop, restores saved registers, and maps the code executable.
    pub(super) fn finish(mut self) -> Result<(memmap2::Mmap, Entry), NoCode> {
        let a = &mut self.a;
        a.add(rcx, (VECTOR_BYTES * self.groups) as i32)?;
        a.cmp(rcx, rdx)?;
        a.jb(self.top)?;
        a.xor(eax, eax)?;
        a.kortestw(k7, k7)?;
        a.setnz(al)?;
        for &g in BASE_REGS[CALLER_SAVED_BASES..CALLER_SAVED_BASES + self.pushed]
            .iter()
            .rev()
        {
            a.pop(g)?;
        }
        a.set_label(&mut self.done)?;
        a.vzeroupper()?;
        a.ret()?;
        // Only relative jumps and pool reads inside the code: the bytes run at any address.
        let bytes = a.assemble(0)?;
        let mut map = memmap2::MmapMut::map_anon(bytes.len())?;
        map.copy_from_slice(&bytes);
        let map = map.make_exec()?;
        // SAFETY: the function just assembled starts `pool_bytes` into `map` (after the
        // constant pool) and has this signature (System V: table in `rdi`, scalars in `rsi`,
        // byte count in `rdx`, result in `eax`); the caller keeps `map` alive as long as it
        // keeps the pointer.
        let entry =
            unsafe { std::mem::transmute::<*const u8, Entry>(map.as_ptr().add(self.pool_bytes)) };
        Ok((map, entry))
    }
}
