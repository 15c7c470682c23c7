//! Small-program replay for `jit`: when every value of a compiled program is small and every
//! primitive has a slice kernel ([`crate::prim::Primitive::lower`]), the program runs on one
//! per-thread arena: each value has a fixed slot, each step is one kernel call on slices, and
//! no tensor is made until the outputs. Per-call overhead (W1: ~30 primitives on 20-element
//! tensors) is then the kernels themselves, not tensor handles, reference counts and buffer
//! bookkeeping per primitive. This module lowers a program's steps to
//! [`ArenaStep`]s (the kernels without a direct form become calls); running them, as closures
//! or as generated native code, is [`ArenaProgram`]'s.

use super::program::{uniform_scalar, Source, Step};
use crate::prim::{binary_kernel, Kernel};
use crate::state::State;
use crate::tensor::{DType, Float, Shape, Tensor};
use smallvec::SmallVec;
use stategrad_exec::arena::{ArenaFn, ArenaOpd, ArenaProgram, ArenaStep};
use stategrad_exec::arena_loop::{ArenaLoop, Carry};
use stategrad_simd::{self as simd, Par, ReduceOp};
use std::cell::RefCell;

/// Programs whose values total more elements than this replay through tensors (their kernels,
/// not the dispatch, dominate).
pub(crate) const SMALL_MAX: usize = 1 << 15;

/// Where a lowered step reads an operand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum LIn {
    /// Arena slot `(offset, len)`.
    Slot(usize, usize),
    /// A constant whose elements are all this value (only binary steps take one).
    Imm(f64),
}

/// One lowered step: the arena step, specialised so that the common small cases (same-length
/// or scalar operands, full sums, rank-1 products) run as direct loops (or inline native code)
/// with no shape logic per call; any other kernel is an [`ArenaStep::Call`] with the kernel and
/// its input slots `(offset, len)`.
#[derive(Clone, Debug)]
pub(crate) struct LStep {
    step: ArenaStep,
    kernel: Option<(Kernel, SmallVec<[(usize, usize); 2]>)>,
}

impl LStep {
    /// The step running `kernel` on `inputs` into `out[..n]` (every input slot precedes `out`).
    /// `None` if an input is an [`LIn::Imm`] the chosen form cannot take.
    pub(crate) fn new(kernel: Kernel, inputs: &[LIn], out: usize, n: usize) -> Option<LStep> {
        let opd = |i: &LIn| match *i {
            LIn::Slot(off, len) if len == n => Some(ArenaOpd::Slice(off)),
            LIn::Slot(off, 1) => Some(ArenaOpd::Splat(off)),
            LIn::Imm(v) => Some(ArenaOpd::Imm(v)),
            LIn::Slot(..) => None,
        };
        let slot = |i: &LIn| match *i {
            LIn::Slot(off, len) => Some((off, len)),
            LIn::Imm(_) => None,
        };
        let step = match (&kernel, inputs) {
            (Kernel::Unary(op), [LIn::Slot(x, _)]) if n == 1 => ArenaStep::Unary1 {
                op: *op,
                x: *x,
                out,
            },
            (Kernel::Binary { op, .. }, [a, b]) if n == 1 => ArenaStep::Binary1 {
                op: *op,
                a: opd(a)?,
                b: opd(b)?,
                out,
            },
            (Kernel::Unary(op), [LIn::Slot(x, _)]) => ArenaStep::Unary {
                op: *op,
                x: *x,
                out,
                n,
            },
            (Kernel::Binary { op, .. }, [a, b]) if opd(a).is_some() && opd(b).is_some() => {
                ArenaStep::Binary {
                    op: *op,
                    a: opd(a)?,
                    b: opd(b)?,
                    out,
                    n,
                }
            }
            // A sum into one element over a contiguous slice: what `reduce_axes` computes then.
            (Kernel::ReduceAll(ReduceOp::Sum), [LIn::Slot(x, len)])
            | (
                Kernel::ReduceAxes {
                    op: ReduceOp::Sum, ..
                },
                [LIn::Slot(x, len)],
            ) if n == 1 => ArenaStep::Sum {
                x: *x,
                n: *len,
                out,
            },
            (Kernel::Gemm(d), [LIn::Slot(a, _), LIn::Slot(b, _)]) if d.k == 1 => ArenaStep::Outer {
                a: *a,
                rsa: d.rsa,
                b: *b,
                csb: d.csb,
                m: d.m,
                n: d.n,
                out,
            },
            (Kernel::Gemm(d), [LIn::Slot(a, _), LIn::Slot(b, _)]) if d.m == 1 && d.n == 1 => {
                ArenaStep::Dot {
                    a: *a,
                    sa: d.csa,
                    b: *b,
                    sb: d.rsb,
                    k: d.k,
                    out,
                }
            }
            _ => {
                let slots = inputs.iter().map(slot).collect::<Option<_>>()?;
                return Some(LStep {
                    step: ArenaStep::Call { out, n },
                    kernel: Some((kernel, slots)),
                });
            }
        };
        Some(LStep { step, kernel: None })
    }

    /// The bits of the step's immediate operands (the step's `Debug` text shows every NaN
    /// alike), for a key that tells programs apart by what they compute.
    pub(crate) fn immediate_bits(&self) -> impl Iterator<Item = u64> + '_ {
        let opds = match &self.step {
            ArenaStep::Binary { a, b, .. } | ArenaStep::Binary1 { a, b, .. } => [Some(a), Some(b)],
            _ => [None, None],
        };
        opds.into_iter().flatten().filter_map(|o| match o {
            ArenaOpd::Imm(v) => Some(v.to_bits()),
            _ => None,
        })
    }

    /// A `Call` step's closure: its kernel on its input slots.
    fn call<T: Float>(&self) -> Option<ArenaFn<T>> {
        let (kernel, inputs) = self.kernel.clone()?;
        let (out, n) = self.step.output();
        Some(Box::new(move |r: &mut [T]| {
            let (lo, hi) = r.split_at_mut(out);
            let lo: &[T] = lo;
            let ins: SmallVec<[&[T]; 4]> = inputs.iter().map(|&(o, l)| &lo[o..o + l]).collect();
            kernel.run(&ins, &mut hi[..n]);
        }))
    }
}

/// A program's steps, built for its element type.
#[derive(Debug)]
pub(crate) enum Program {
    F32(ArenaProgram<f32>),
    F64(ArenaProgram<f64>),
}

/// Build the program of `steps` on an arena of `size` elements for `dtype`.
pub(crate) fn build(dtype: DType, steps: &[LStep], size: usize) -> Program {
    fn typed<T: Float>(steps: &[LStep], size: usize) -> ArenaProgram<T> {
        let arena_steps: Vec<ArenaStep> = steps.iter().map(|s| s.step.clone()).collect();
        let calls = steps.iter().filter_map(LStep::call::<T>).collect();
        // The lowering lays every slot inside `size` and gives one closure per call step.
        ArenaProgram::new(&arena_steps, calls, size)
            .unwrap_or_else(|e| unreachable!("internal error: lowered program: {e}"))
    }
    match dtype {
        DType::F32 => Program::F32(typed(steps, size)),
        DType::F64 => Program::F64(typed(steps, size)),
        _ => unreachable!("internal error: only float programs are lowered"),
    }
}

/// A lowered program.
#[derive(Debug)]
pub(crate) struct Lowered {
    pub(crate) dtype: DType,
    /// Arena elements.
    pub(crate) size: usize,
    /// `(offset, shape)` of each tape node that has a slot, by node index.
    pub(crate) slots: Vec<Option<(usize, Shape)>>,
    /// Constants copied into their slots at the start of every call.
    pub(crate) consts: Vec<(usize, Tensor)>,
    /// The steps (see [`LStep`] for what each does).
    pub(crate) program: std::sync::Arc<Program>,
}

impl Program {
    /// Whether the program runs as generated native code now.
    pub(crate) fn is_native(&self) -> bool {
        match self {
            Program::F32(p) => p.is_native(),
            Program::F64(p) => p.is_native(),
        }
    }

    /// Whether the loop `lp` over the program runs as one generated function now.
    pub(crate) fn loop_is_native(&self, lp: &ArenaLoop) -> bool {
        match self {
            Program::F32(p) => p.loop_is_native(lp),
            Program::F64(p) => p.loop_is_native(lp),
        }
    }
}

impl Kernel {
    /// Run the kernel sequentially on slices (`ins` in the primitive's input order).
    pub(crate) fn run<T: simd::Element>(&self, ins: &[&[T]], out: &mut [T]) {
        match self {
            Kernel::Unary(op) => simd::unary(*op, ins[0], out, Par::Seq),
            Kernel::Binary {
                op,
                a,
                b,
                out: shape,
            } => binary_kernel(*op, ins[0], a, ins[1], b, shape, out, Par::Seq),
            Kernel::ReduceAll(op) => out[0] = simd::reduce_all(*op, ins[0]),
            Kernel::ReduceAxes { op, shape, axes } => {
                simd::reduce_axes(*op, ins[0], shape, axes, out)
            }
            Kernel::Copy => out.copy_from_slice(ins[0]),
            Kernel::Gather {
                strides,
                offset,
                out: shape,
            } => simd::gather_strided(ins[0], strides, *offset, shape, out),
            Kernel::Strided {
                strides,
                offset,
                shape,
                scatter: false,
            } => crate::prim::gather_signed(ins[0], strides, *offset, shape, out),
            Kernel::Strided {
                strides,
                offset,
                shape,
                scatter: true,
            } => {
                out.fill(T::ZERO);
                crate::prim::scatter_signed(ins[0], strides, *offset, shape, out)
            }
            // Through core's product, so that jitted basis chunks keep the selection path.
            Kernel::Gemm(d) => crate::prim::gemm_into(
                d.m,
                d.k,
                d.n,
                ins[0],
                d.rsa,
                d.csa,
                ins[1],
                d.rsb,
                d.csb,
                out,
                Par::Seq,
            ),
        }
    }
}

/// Element types with a per-thread arena.
pub(crate) trait ArenaFloat: Float {
    /// This thread's arena as `size` elements starting on a 64-byte boundary (slot offsets are
    /// laid out against that boundary; see [`slot_start`]).
    fn with_arena<R>(size: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
    /// The program built for this type (its dtype is checked before).
    fn program(p: &Program) -> &ArenaProgram<Self>;
}

/// Where a slot of `len` elements goes when the arena has `size` elements so far: vectors of 8
/// or more start on a 64-byte line (a vector load or store across two lines costs twice, and a
/// load of a value just stored across lines cannot be forwarded from the store: a 20-element
/// map step measured alone runs about twice as fast aligned, the whole W1 loop ~5 %), single
/// values pack.
pub(crate) fn slot_start(size: usize, len: usize) -> usize {
    if len >= 8 {
        size.next_multiple_of(16)
    } else {
        size
    }
}

fn aligned<T: Float, R>(v: &mut Vec<T>, size: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let pad = 64 / std::mem::size_of::<T>();
    if v.len() < size + pad {
        v.resize(size + pad, T::ZERO);
    }
    let at = v.as_ptr().align_offset(64).min(pad);
    f(&mut v[at..at + size])
}

thread_local! {
    static ARENA_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static ARENA_F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

impl ArenaFloat for f32 {
    fn with_arena<R>(size: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        ARENA_F32.with(|a| aligned(&mut a.borrow_mut(), size, f))
    }
    fn program(p: &Program) -> &ArenaProgram<Self> {
        match p {
            Program::F32(p) => p,
            Program::F64(_) => unreachable!("internal error: lowered program dtype"),
        }
    }
}

impl ArenaFloat for f64 {
    fn with_arena<R>(size: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        ARENA_F64.with(|a| aligned(&mut a.borrow_mut(), size, f))
    }
    fn program(p: &Program) -> &ArenaProgram<Self> {
        match p {
            Program::F64(p) => p,
            Program::F32(_) => unreachable!("internal error: lowered program dtype"),
        }
    }
}

impl Lowered {
    /// Run the program on this thread's arena: `inputs` are `(node, value)` for the argument
    /// and state nodes. The results stay in the arena for [`Lowered::take`] and
    /// [`Lowered::store`] (until the next program runs on this thread).
    pub(crate) fn run(&self, inputs: &[(u32, &Tensor)]) {
        match self.dtype {
            DType::F32 => f32::with_arena(self.size, |a| {
                self.load(a, inputs);
                self.exec(a)
            }),
            DType::F64 => f64::with_arena(self.size, |a| {
                self.load(a, inputs);
                self.exec(a)
            }),
            _ => unreachable!("internal error: only float programs are lowered"),
        }
    }

    fn slot(&self, node: u32) -> &(usize, Shape) {
        self.slots[node as usize]
            .as_ref()
            .expect("internal error: lowered node without a slot")
    }

    /// The shape of a node's slot.
    pub(crate) fn shape_of(&self, node: u32) -> &[usize] {
        &self.slot(node).1
    }

    /// Run the program for `i` in `start..end`, with `i` written (as a number) into the slot of
    /// `iter_node` each time and, after each run, every `(from, to)` of `carries` copied from
    /// slot `from` to slot `to` (written states feeding the next iteration's reads). The last
    /// iteration's values stay in the arena, as after [`Lowered::run`].
    pub(crate) fn run_loop(
        &self,
        inputs: &[(u32, &Tensor)],
        iter_node: u32,
        (start, end): (usize, usize),
        carries: &[(u32, u32)],
    ) {
        match self.dtype {
            DType::F32 => self.loop_typed::<f32>(inputs, iter_node, (start, end), carries),
            DType::F64 => self.loop_typed::<f64>(inputs, iter_node, (start, end), carries),
            _ => unreachable!("internal error: only float programs are lowered"),
        }
    }

    fn loop_typed<T: ArenaFloat>(
        &self,
        inputs: &[(u32, &Tensor)],
        iter_node: u32,
        (start, end): (usize, usize),
        carries: &[(u32, u32)],
    ) {
        let lp = self.arena_loop(Some(iter_node), carries);
        T::with_arena(self.size, |arena| {
            self.load(arena, inputs);
            if let Err(e) = T::program(&self.program).run_loop(arena, &lp, start, end - start) {
                unreachable!("internal error: lowered loop: {e}");
            }
        })
    }

    /// Whether [`Lowered::run_loop`] with these nodes runs as one generated function now.
    pub(crate) fn loop_is_native(&self, iter_node: u32, carries: &[(u32, u32)]) -> bool {
        self.program
            .loop_is_native(&self.arena_loop(Some(iter_node), carries))
    }

    /// The loop over this program that numbers iterations in `iter_node`'s slot and copies
    /// every `(from, to)` of `carries` (slot to slot, all at once) between iterations.
    fn arena_loop(&self, iter_node: Option<u32>, carries: &[(u32, u32)]) -> ArenaLoop {
        let carries: SmallVec<[Carry; 4]> = carries
            .iter()
            .map(|&(from, to)| {
                let (f, shape) = self.slot(from);
                Carry {
                    from: *f,
                    to: self.slot(to).0,
                    len: shape.iter().product(),
                }
            })
            .collect();
        // Slots lie inside the arena, whose size was computed without overflow.
        ArenaLoop::new(iter_node.map(|n| self.slot(n).0), &carries)
            .expect("internal error: a lowered loop's slots overflow")
    }

    /// Loads the inputs, then runs `body(arena, k)` for `k in 0..runs`, copying every
    /// `(from, to)` of `carries` (slot to slot, all at once) between one iteration and the
    /// next. A loop that takes the program past its native-code threshold gets the code before
    /// it starts.
    fn iterate<T: ArenaFloat>(
        &self,
        inputs: &[(u32, &Tensor)],
        runs: usize,
        carries: &[(u32, u32)],
        mut body: impl FnMut(&mut [T], usize),
    ) {
        let lp = self.arena_loop(None, carries);
        T::program(&self.program).expect_runs(runs);
        T::with_arena(self.size, |arena| {
            self.load(arena, inputs);
            let mut scratch = Vec::new();
            for k in 0..runs {
                body(arena, k);
                if k + 1 < runs {
                    if let Err(e) = lp.carry(arena, &mut scratch) {
                        unreachable!("internal error: lowered loop: {e}");
                    }
                }
            }
        })
    }

    /// A scan over the rows `start..end` of `xs`: each iteration copies row `i` into the slot
    /// of `x_node`, runs the program, appends the value of `y_node` to the result, and (before
    /// the next one) copies every `(from, to)` of `carries`. Returns the stacked `y` rows
    /// (`[end - start, ..y's shape]`); the last iteration's values stay in the arena.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_scan(
        &self,
        inputs: &[(u32, &Tensor)],
        x_node: u32,
        xs: &Tensor,
        (start, end): (usize, usize),
        carries: &[(u32, u32)],
        y_node: u32,
    ) -> Tensor {
        match self.dtype {
            DType::F32 => self.scan_typed::<f32>(inputs, x_node, xs, (start, end), carries, y_node),
            DType::F64 => self.scan_typed::<f64>(inputs, x_node, xs, (start, end), carries, y_node),
            _ => unreachable!("internal error: only float programs are lowered"),
        }
    }

    fn scan_typed<T: ArenaFloat>(
        &self,
        inputs: &[(u32, &Tensor)],
        x_node: u32,
        xs: &Tensor,
        (start, end): (usize, usize),
        carries: &[(u32, u32)],
        y_node: u32,
    ) -> Tensor {
        let (x_off, x_shape) = self.slot(x_node);
        let x_len: usize = x_shape.iter().product();
        let (y_off, y_shape) = self.slot(y_node);
        let y_len: usize = y_shape.iter().product();
        let data = T::slice(xs.buf()).expect("internal error: scan xs dtype");
        let mut buf = crate::tensor::Buffer::for_overwrite(T::DTYPE, (end - start) * y_len);
        let mut ys = T::take_vec(&mut buf);
        self.iterate::<T>(inputs, end - start, carries, |arena, k| {
            let r = start + k;
            arena[*x_off..*x_off + x_len].copy_from_slice(&data[r * x_len..(r + 1) * x_len]);
            self.exec(arena);
            ys[k * y_len..(k + 1) * y_len].copy_from_slice(&arena[*y_off..*y_off + y_len]);
        });
        let mut shape: Vec<usize> = vec![end - start];
        shape.extend_from_slice(y_shape);
        Tensor::from_buffer(T::into_buffer(ys), &shape)
    }

    /// Tensors of the `wanted` nodes' values from the last run on this thread.
    pub(crate) fn take(&self, wanted: &[u32]) -> Vec<Tensor> {
        match self.dtype {
            DType::F32 => f32::with_arena(self.size, |a| self.collect(a, wanted)),
            DType::F64 => f64::with_arena(self.size, |a| self.collect(a, wanted)),
            _ => unreachable!("internal error: only float programs are lowered"),
        }
    }

    /// Write `node`'s value from the last run on this thread into `state` (in place when the
    /// state holds the only reference to its value, see [`crate::State::set_from_slice`]).
    pub(crate) fn store(&self, node: u32, state: &crate::State) {
        let (off, shape) = self.slot(node);
        let len: usize = shape.iter().product();
        match self.dtype {
            DType::F32 => f32::with_arena(self.size, |a| {
                state.set_from_slice(shape, &a[*off..*off + len])
            }),
            DType::F64 => f64::with_arena(self.size, |a| {
                state.set_from_slice(shape, &a[*off..*off + len])
            }),
            _ => unreachable!("internal error: only float programs are lowered"),
        }
    }

    fn load<T: ArenaFloat>(&self, arena: &mut [T], inputs: &[(u32, &Tensor)]) {
        for (node, t) in inputs {
            let (off, _) = self.slot(*node);
            let data = T::slice(t.buf()).expect("internal error: lowered input dtype");
            arena[*off..*off + data.len()].copy_from_slice(data);
        }
        for (off, t) in &self.consts {
            let data = T::slice(t.buf()).expect("internal error: lowered const dtype");
            arena[*off..*off + data.len()].copy_from_slice(data);
        }
    }

    fn exec<T: ArenaFloat>(&self, arena: &mut [T]) {
        // `with_arena` hands out exactly the program's size.
        if let Err(e) = T::program(&self.program).run(arena) {
            unreachable!("internal error: lowered program: {e}");
        }
    }

    fn collect<T: ArenaFloat>(&self, arena: &[T], wanted: &[u32]) -> Vec<Tensor> {
        wanted
            .iter()
            .map(|n| {
                let (off, shape) = self.slot(*n);
                let len: usize = shape.iter().product();
                let mut buf = crate::tensor::Buffer::for_overwrite(T::DTYPE, len);
                let mut v = T::take_vec(&mut buf);
                v.copy_from_slice(&arena[*off..*off + len]);
                Tensor::from_buffer(T::into_buffer(v), shape)
            })
            .collect()
    }
}
/// Lower a compiled program to one arena (see the [module docs](self)), if every value is small, every
/// value and constant has one dtype and every step has a slice kernel.
pub(super) fn lower_program(
    steps: &[Step],
    arg_nodes: &[u32],
    leaves: &[Tensor],
    state_inputs: &[(State, u32, Vec<usize>, DType)],
    n_nodes: usize,
) -> Option<Lowered> {
    let dtype = steps.first()?.dtype;
    // The arena and its kernels compute on floats; a program with integer or bool values
    // replays step by step.
    if !dtype.is_float() {
        return None;
    }
    let mut slots: Vec<Option<(usize, crate::tensor::Shape)>> = vec![None; n_nodes];
    let mut size = 0usize;
    type Slots = Vec<Option<(usize, crate::tensor::Shape)>>;
    let place = |slots: &mut Slots, size: &mut usize, node: u32, shape: &[usize], dt: DType| {
        if dt != dtype {
            return None;
        }
        let len = shape.iter().product::<usize>();
        *size = slot_start(*size, len);
        slots[node as usize] = Some((*size, shape.into()));
        *size += len;
        (*size <= SMALL_MAX).then_some(())
    };
    for (n, l) in arg_nodes.iter().zip(leaves) {
        place(&mut slots, &mut size, *n, l.shape(), l.dtype())?;
    }
    for (_, n, shape, dt) in state_inputs {
        place(&mut slots, &mut size, *n, shape, *dt)?;
    }
    // Slots below this hold arguments and state inputs (a loop's carries overwrite them).
    let inputs_end = size;
    let mut lsteps = Vec::with_capacity(steps.len());
    let mut consts = Vec::new();
    for st in steps {
        let mut in_shapes: SmallVec<[crate::tensor::Shape; 2]> = SmallVec::new();
        for src in &st.inputs {
            match src {
                Source::Node(n) => in_shapes.push(slots[*n as usize].as_ref()?.1.clone()),
                Source::Const(t) if t.dtype() == dtype => in_shapes.push(t.shape().into()),
                Source::Const(_) => return None,
            }
        }
        let shapes: SmallVec<[&[usize]; 2]> = in_shapes.iter().map(|s| &s[..]).collect();
        let kernel = st.prim.lower(&shapes, &st.shape)?;
        let binary = matches!(kernel, Kernel::Binary { .. });
        let mut inputs: SmallVec<[LIn; 2]> = SmallVec::new();
        for src in &st.inputs {
            match src {
                Source::Node(n) => {
                    let (off, shape) = slots[*n as usize].as_ref()?;
                    inputs.push(LIn::Slot(*off, shape.iter().product()));
                }
                Source::Const(t) => match uniform_scalar(t).filter(|_| binary) {
                    Some(v) => inputs.push(LIn::Imm(v.item().ok()?)),
                    None => inputs.push(const_slot(&mut size, &mut consts, t)),
                },
            }
        }
        // A copy of a step's result (a reshape) is the same slot under another shape.
        if let (Kernel::Copy, [LIn::Slot(off, _)]) = (&kernel, &inputs[..]) {
            if *off >= inputs_end {
                slots[st.out as usize] = Some((*off, st.shape.clone()));
                continue;
            }
        }
        place(&mut slots, &mut size, st.out, &st.shape, st.dtype)?;
        let out = slots[st.out as usize].as_ref()?.0;
        let n = st.shape.iter().product();
        let step = LStep::new(kernel.clone(), &inputs, out, n).or_else(|| {
            // A broadcast the direct forms cannot take: the constant gets a slot after all.
            let ins: SmallVec<[LIn; 2]> = st
                .inputs
                .iter()
                .zip(&inputs)
                .map(|(src, i)| match (src, i) {
                    (Source::Const(t), LIn::Imm(_)) => const_slot(&mut size, &mut consts, t),
                    _ => *i,
                })
                .collect();
            LStep::new(kernel, &ins, out, n)
        })?;
        lsteps.push(step);
    }
    Some(Lowered {
        dtype,
        size,
        slots,
        consts,
        program: super::shared::program(dtype, &lsteps, size),
    })
}

/// A slot for constant `t` at the end of the arena (`size` elements so far), its value copied
/// in at the start of every run.
fn const_slot(size: &mut usize, consts: &mut Vec<(usize, Tensor)>, t: &Tensor) -> LIn {
    let off = slot_start(*size, t.numel());
    *size = off + t.numel();
    consts.push((off, t.clone()));
    LIn::Slot(off, t.numel())
}
