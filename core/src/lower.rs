//! Small-program replay for `jit`: when every value of a compiled program is small and every
//! primitive has a slice kernel ([`crate::prim::Primitive::lower`]), the program runs on one
//! per-thread arena: each value has a fixed slot, each step is one kernel call on slices, and
//! no tensor is made until the outputs. Per-call overhead (W1: ~30 primitives on 20-element
//! tensors) is then the kernels themselves, not tensor handles, reference counts and buffer
//! bookkeeping per primitive.

use crate::prim::{binary_kernel, Kernel};
use crate::tensor::{DType, Float, Shape, Tensor};
use smallvec::SmallVec;
use stategrad_simd::{self as simd, Par};
use std::cell::RefCell;

/// Programs whose values total more elements than this replay through tensors (their kernels,
/// not the dispatch, dominate).
pub(crate) const SMALL_MAX: usize = 1 << 15;

/// Where a lowered step reads an operand.
#[derive(Debug)]
pub(crate) enum LSrc {
    /// Arena slot `(offset, len)`.
    Slot(usize, usize),
    /// A constant captured at trace time.
    Const(Tensor),
}

/// One step: `kernel(inputs) -> arena[out..out + len]`.
#[derive(Debug)]
pub(crate) struct LStep {
    pub(crate) kernel: Kernel,
    pub(crate) inputs: SmallVec<[LSrc; 2]>,
    pub(crate) out: usize,
    pub(crate) len: usize,
}

/// A lowered program.
#[derive(Debug)]
pub(crate) struct Lowered {
    pub(crate) dtype: DType,
    /// Arena elements.
    pub(crate) size: usize,
    /// `(offset, shape)` of each tape node that has a slot, by node index.
    pub(crate) slots: Vec<Option<(usize, Shape)>>,
    pub(crate) steps: Vec<LStep>,
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
                out: shape,
            } => simd::gather_strided(ins[0], strides, 0, shape, out),
            Kernel::Gemm {
                m,
                k,
                n,
                rsa,
                csa,
                rsb,
                csb,
            } => simd::gemm(
                *m,
                *k,
                *n,
                T::ONE,
                ins[0],
                *rsa,
                *csa,
                ins[1],
                *rsb,
                *csb,
                T::ZERO,
                out,
                *n,
                1,
                Par::Seq,
            ),
        }
    }
}

/// Element types with a per-thread arena.
pub(crate) trait ArenaFloat: Float {
    fn with_arena<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R;
}

thread_local! {
    static ARENA_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static ARENA_F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

impl ArenaFloat for f32 {
    fn with_arena<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R {
        ARENA_F32.with(|a| f(&mut a.borrow_mut()))
    }
}

impl ArenaFloat for f64 {
    fn with_arena<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R {
        ARENA_F64.with(|a| f(&mut a.borrow_mut()))
    }
}

/// The data of an operand: its arena slot (within `lo`) or the constant's buffer.
fn operand<'a, T: Float>(lo: &'a [T], s: &'a LSrc) -> &'a [T] {
    match s {
        LSrc::Slot(off, len) => &lo[*off..*off + *len],
        LSrc::Const(t) => T::slice(t.buf()).expect("internal error: lowered const dtype"),
    }
}

impl Lowered {
    /// Run the program: `inputs` are `(node, value)` for the argument and state nodes; returns
    /// a tensor for each node of `wanted`.
    pub(crate) fn run(&self, inputs: &[(u32, &Tensor)], wanted: &[u32]) -> Vec<Tensor> {
        match self.dtype {
            DType::F32 => self.run_typed::<f32>(inputs, wanted),
            DType::F64 => self.run_typed::<f64>(inputs, wanted),
        }
    }

    fn slot(&self, node: u32) -> &(usize, Shape) {
        self.slots[node as usize]
            .as_ref()
            .expect("internal error: lowered node without a slot")
    }

    fn run_typed<T: ArenaFloat>(&self, inputs: &[(u32, &Tensor)], wanted: &[u32]) -> Vec<Tensor> {
        T::with_arena(|arena| {
            self.load(arena, inputs);
            self.exec(arena);
            self.collect(arena, wanted)
        })
    }

    /// The shape of a node's slot.
    pub(crate) fn shape_of(&self, node: u32) -> &[usize] {
        &self.slot(node).1
    }

    /// Run the program for `i` in `start..end`, with `i` written (as a number) into the slot of
    /// `iter_node` each time and, after each run, every `(from, to)` of `carries` copied from
    /// slot `from` to slot `to` (written states feeding the next iteration's reads). Returns
    /// the `wanted` values of the last iteration.
    pub(crate) fn run_loop(
        &self,
        inputs: &[(u32, &Tensor)],
        iter_node: u32,
        (start, end): (usize, usize),
        carries: &[(u32, u32)],
        wanted: &[u32],
    ) -> Vec<Tensor> {
        match self.dtype {
            DType::F32 => self.loop_typed::<f32>(inputs, iter_node, (start, end), carries, wanted),
            DType::F64 => self.loop_typed::<f64>(inputs, iter_node, (start, end), carries, wanted),
        }
    }

    fn loop_typed<T: ArenaFloat>(
        &self,
        inputs: &[(u32, &Tensor)],
        iter_node: u32,
        (start, end): (usize, usize),
        carries: &[(u32, u32)],
        wanted: &[u32],
    ) -> Vec<Tensor> {
        let moves: SmallVec<[(usize, usize, usize); 4]> = carries
            .iter()
            .map(|&(from, to)| {
                let (f, shape) = self.slot(from);
                (*f, self.slot(to).0, shape.iter().product())
            })
            .collect();
        let it = self.slot(iter_node).0;
        T::with_arena(|arena| {
            self.load(arena, inputs);
            for i in start..end {
                arena[it] = T::from_f64(i as f64);
                self.exec(arena);
                if i + 1 < end {
                    for &(f, t, len) in &moves {
                        arena.copy_within(f..f + len, t);
                    }
                }
            }
            self.collect(arena, wanted)
        })
    }

    fn load<T: ArenaFloat>(&self, arena: &mut Vec<T>, inputs: &[(u32, &Tensor)]) {
        if arena.len() < self.size {
            arena.resize(self.size, T::ZERO);
        }
        for (node, t) in inputs {
            let (off, _) = self.slot(*node);
            let data = T::slice(t.buf()).expect("internal error: lowered input dtype");
            arena[*off..*off + data.len()].copy_from_slice(data);
        }
    }

    fn exec<T: ArenaFloat>(&self, arena: &mut [T]) {
        for st in &self.steps {
            // Every input slot precedes the output slot (slots are laid out in program
            // order), so the arena splits into a read part and the output.
            let (lo, hi) = arena.split_at_mut(st.out);
            let lo: &[T] = lo;
            let get = |s| operand(lo, s);
            let out = &mut hi[..st.len];
            match &st.inputs[..] {
                [a] => st.kernel.run(&[get(a)], out),
                [a, b] => st.kernel.run(&[get(a), get(b)], out),
                more => {
                    let ins: SmallVec<[&[T]; 4]> = more.iter().map(get).collect();
                    st.kernel.run(&ins, out)
                }
            }
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
