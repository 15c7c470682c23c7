//! Contiguous element-wise kernels: [`unary`], [`binary`], [`binary_scalar`], [`scalar_binary`].

use rayon::prelude::*;

use crate::isa::{with_vec, VecFn};
use crate::vector::{self as vm, SimdVec};
use crate::{reference, BinaryOp, Element, Par, UnaryOp, PAR_CHUNK, SIMD_MIN_LEN};

/// An operand read element by element or a vector at a time: a slice or a broadcast scalar.
pub trait Src<T: Element>: Copy + Send + Sync {
    /// Element `i`.
    fn get(&self, i: usize) -> T;
    /// Elements `i..i + V::LANES`.
    fn vec<V: SimdVec<Elem = T>>(&self, i: usize) -> V;
    /// The sub-operand starting at element `start` (`len` elements).
    fn sub(&self, start: usize, len: usize) -> Self;
}

impl<T: Element> Src<T> for &[T] {
    #[inline(always)]
    fn get(&self, i: usize) -> T {
        self[i]
    }
    #[inline(always)]
    fn vec<V: SimdVec<Elem = T>>(&self, i: usize) -> V {
        V::load(&self[i..i + V::LANES])
    }
    #[inline(always)]
    fn sub(&self, start: usize, len: usize) -> Self {
        &self[start..start + len]
    }
}

/// A scalar broadcast to every position.
#[derive(Clone, Copy, Debug)]
pub struct Bcast<T>(pub T);

impl<T: Element> Src<T> for Bcast<T> {
    #[inline(always)]
    fn get(&self, _: usize) -> T {
        self.0
    }
    #[inline(always)]
    fn vec<V: SimdVec<Elem = T>>(&self, _: usize) -> V {
        V::splat(self.0)
    }
    #[inline(always)]
    fn sub(&self, _: usize, _: usize) -> Self {
        *self
    }
}

/// `out[i] = f(a[i], b[i])`. With `simd`, whole vectors go through the expression `vf` (of
/// the vectors bound to `x`, `y`), which gives the result and a mask of lanes to recompute
/// with the scalar `sf`; the tail always uses `sf`.
///
/// A macro rather than a function taking a closure: the vector expression is pasted into the
/// loop, so it is compiled inside the caller's `#[target_feature]` function (a closure that
/// LLVM declines to inline would be compiled for the baseline ISA and call every instruction
/// out of line).
macro_rules! zip_map {
    ($v:ty, $a:expr, $b:expr, $out:expr, $simd:expr, |$x:ident, $y:ident| $vf:expr, $sf:expr) => {{
        let (a, b, out, sf) = ($a, $b, $out, $sf);
        let l = <$v>::LANES;
        let body = if $simd { out.len() - out.len() % l } else { 0 };
        for (ci, oc) in out[..body].chunks_exact_mut(l).enumerate() {
            let i = ci * l;
            let ($x, $y): ($v, $v) = (Src::vec::<$v>(&a, i), Src::vec::<$v>(&b, i));
            let (r, bad): ($v, $v) = $vf;
            r.store(oc);
            if bad.any() {
                let m = bad.bitmask();
                for (j, o) in oc.iter_mut().enumerate() {
                    if (m >> j) & 1 != 0 {
                        *o = sf(Src::get(&a, i + j), Src::get(&b, i + j));
                    }
                }
            }
        }
        for (i, o) in out.iter_mut().enumerate().skip(body) {
            *o = sf(Src::get(&a, i), Src::get(&b, i));
        }
    }};
}

/// Sequential unary kernel on vector type `V`; `simd_tr` enables the vector path of
/// transcendental ops (exact ops always use it).
#[inline(always)]
pub fn unary_v<V: SimdVec>(op: UnaryOp, x: &[V::Elem], out: &mut [V::Elem], simd_tr: bool) {
    let sf = |a: V::Elem, _| reference::unary_op(op, a);
    let z = Bcast(V::Elem::ZERO);
    // One loop per op (the match outside it), each with its vector expression pasted in.
    macro_rules! loops {
        ({}
            $($(#[$doc:meta])* $o:ident, $class:ident, |$px:ident| $s:expr, |$pv:ident| $e:expr;)*) => {
            match op {
                $(UnaryOp::$o => zip_map!(
                    V, x, z, &mut *out, vector_path!($class, simd_tr), |$pv, _unused| $e, sf
                ),)*
            }
        };
    }
    unary_table!(loops {})
}

/// `op(v)` on one vector and the mask of lanes to recompute with `std` (as [`unary_v`]).
#[inline(always)]
pub fn unary_vec<V: SimdVec>(op: UnaryOp, v: V) -> (V, V) {
    macro_rules! lanes {
        ({ $v_:expr }
            $($(#[$doc:meta])* $o:ident, $class:ident, |$px:ident| $s:expr, |$pv:ident| $e:expr;)*) => {
            match op {
                $(UnaryOp::$o => {
                    let $pv: V = $v_;
                    $e
                })*
            }
        };
    }
    unary_table!(lanes { v })
}

/// Whether a row of class `$class` takes the vector path: always if exact, else if `$simd_tr`.
macro_rules! vector_path {
    (exact, $simd_tr:expr) => {
        true
    };
    (approx, $simd_tr:expr) => {
        $simd_tr
    };
}
use vector_path;

/// Two unary ops of one operand in one loop: each vector of `x` is loaded once and the two
/// (independent) computations overlap in the core. Same results as two [`unary_v`] calls with
/// the vector path on.
#[inline(always)]
pub fn unary2_v<V: SimdVec>(
    ops: (UnaryOp, UnaryOp),
    x: &[V::Elem],
    out0: &mut [V::Elem],
    out1: &mut [V::Elem],
) {
    let l = V::LANES;
    let n = out0.len();
    let (x, out1) = (&x[..n], &mut out1[..n]);
    let body = n - n % l;
    let chunks = out0[..body]
        .chunks_exact_mut(l)
        .zip(out1[..body].chunks_exact_mut(l))
        .zip(x[..body].chunks_exact(l));
    for ((o0, o1), xs) in chunks {
        let v = V::load(xs);
        let (r0, b0) = unary_vec(ops.0, v);
        let (r1, b1) = unary_vec(ops.1, v);
        r0.store(o0);
        r1.store(o1);
        fix_lanes(o0, xs, ops.0, b0);
        fix_lanes(o1, xs, ops.1, b1);
    }
    for i in body..n {
        out0[i] = reference::unary_op(ops.0, x[i]);
        out1[i] = reference::unary_op(ops.1, x[i]);
    }
}

/// Recomputes with `std` the lanes of `o` that `bad` marks.
#[inline(always)]
fn fix_lanes<V: SimdVec>(o: &mut [V::Elem], xs: &[V::Elem], op: UnaryOp, bad: V) {
    if bad.any() {
        let m = bad.bitmask();
        for (j, (o, &xv)) in o.iter_mut().zip(xs).enumerate() {
            if (m >> j) & 1 != 0 {
                *o = reference::unary_op(op, xv);
            }
        }
    }
}

/// Sequential binary kernel on vector type `V` over any pair of operands.
#[inline(always)]
pub fn binary_v<V, A, B>(op: BinaryOp, a: A, b: B, out: &mut [V::Elem], simd_tr: bool)
where
    V: SimdVec,
    A: Src<V::Elem>,
    B: Src<V::Elem>,
{
    use BinaryOp::*;
    let sf = |x, y| reference::binary_op(op, x, y);
    macro_rules! go {
        ($simd:expr, |$x:ident, $y:ident| $e:expr) => {
            zip_map!(V, a, b, &mut *out, $simd, |$x, $y| $e, sf)
        };
    }
    let one = V::splat(V::Elem::ONE);
    match op {
        Add => go!(true, |x, y| (x + y, V::none())),
        Sub => go!(true, |x, y| (x - y, V::none())),
        Mul => go!(true, |x, y| (x * y, V::none())),
        Div => go!(true, |x, y| (x / y, V::none())),
        Max => go!(true, |x, y| (vm::max(x, y), V::none())),
        Min => go!(true, |x, y| (vm::min(x, y), V::none())),
        Gt => go!(true, |x, y| (x.gt(y) & one, V::none())),
        Ge => go!(true, |x, y| (x.ge(y) & one, V::none())),
        Lt => go!(true, |x, y| (x.lt(y) & one, V::none())),
        Le => go!(true, |x, y| (x.le(y) & one, V::none())),
        Eq => go!(true, |x, y| (x.eq(y) & one, V::none())),
        Ne => go!(true, |x, y| (x.ne(y) & one, V::none())),
        Pow => go!(simd_tr && vm::FMA, |x, y| vm::pow(x, y)),
    }
}

/// [`unary_v`] on the vector type of the chosen [`isa`](crate::isa::isa).
pub fn unary_block<T: Element>(op: UnaryOp, x: &[T], out: &mut [T], simd_tr: bool) {
    // Exact ops give the same bits on every ISA: short ones stay inline on the build's vectors
    // rather than paying a call into the dispatched instantiation.
    if out.len() < SIMD_MIN_LEN && !op.is_transcendental() {
        return unary_v::<T::Vec>(op, x, out, simd_tr);
    }
    struct F<'a, T>(UnaryOp, &'a [T], &'a mut [T], bool);
    impl<T: Element> VecFn<T> for F<'_, T> {
        type Output = ();
        #[inline(always)]
        fn call<V: SimdVec<Elem = T>>(self) {
            unary_v::<V>(self.0, self.1, self.2, self.3)
        }
    }
    with_vec(F(op, x, out, simd_tr))
}

/// [`unary2_v`] on the vector type of the chosen [`isa`](crate::isa::isa).
pub fn unary2_block<T: Element>(ops: (UnaryOp, UnaryOp), x: &[T], out0: &mut [T], out1: &mut [T]) {
    struct F<'a, T>((UnaryOp, UnaryOp), &'a [T], &'a mut [T], &'a mut [T]);
    impl<T: Element> VecFn<T> for F<'_, T> {
        type Output = ();
        #[inline(always)]
        fn call<V: SimdVec<Elem = T>>(self) {
            unary2_v::<V>(self.0, self.1, self.2, self.3)
        }
    }
    with_vec(F(ops, x, out0, out1))
}

/// [`binary_v`] on the vector type of the chosen [`isa`](crate::isa::isa).
pub fn binary_block<T: Element, A: Src<T>, B: Src<T>>(
    op: BinaryOp,
    a: A,
    b: B,
    out: &mut [T],
    simd_tr: bool,
) {
    // As in `unary_block`: short exact ops stay inline (same bits on every ISA).
    if out.len() < SIMD_MIN_LEN && !op.is_transcendental() {
        return binary_v::<T::Vec, A, B>(op, a, b, out, simd_tr);
    }
    struct F<'a, T, A, B>(BinaryOp, A, B, &'a mut [T], bool);
    impl<T: Element, A: Src<T>, B: Src<T>> VecFn<T> for F<'_, T, A, B> {
        type Output = ();
        #[inline(always)]
        fn call<V: SimdVec<Elem = T>>(self) {
            binary_v::<V, A, B>(self.0, self.1, self.2, self.3, self.4)
        }
    }
    with_vec(F(op, a, b, out, simd_tr))
}

/// Runs `f(start, out_chunk)` over `out`, split into [`PAR_CHUNK`]-sized rayon tasks when
/// `par` is [`Par::Rayon`] and `out` is large enough.
fn split<T: Element>(out: &mut [T], par: Par, f: impl Fn(usize, &mut [T]) + Sync) {
    if par.splits() && out.len() > PAR_CHUNK {
        out.par_chunks_mut(PAR_CHUNK)
            .enumerate()
            .for_each(|(i, o)| f(i * PAR_CHUNK, o));
    } else {
        f(0, out);
    }
}

fn binary_any<T: Element, A: Src<T>, B: Src<T>>(op: BinaryOp, a: A, b: B, out: &mut [T], par: Par) {
    let simd = out.len() >= SIMD_MIN_LEN;
    split(out, par, |s, o| {
        binary_block(op, a.sub(s, o.len()), b.sub(s, o.len()), o, simd)
    });
}

/// `out[i] = op(x[i])`.
///
/// # Panics
/// If `x.len() != out.len()`.
///
/// # Example
/// ```
/// use stategrad_simd::{unary, Par, UnaryOp};
/// let x = [0.0f64, 1.0, 4.0];
/// let mut out = [0.0; 3];
/// unary(UnaryOp::Sqrt, &x, &mut out, Par::Seq);
/// assert_eq!(out, [0.0, 1.0, 2.0]);
/// ```
pub fn unary<T: Element>(op: UnaryOp, x: &[T], out: &mut [T], par: Par) {
    assert_eq!(x.len(), out.len(), "unary: input and output lengths differ");
    let simd = x.len() >= SIMD_MIN_LEN;
    split(out, par, |s, o| {
        unary_block(op, &x[s..s + o.len()], o, simd)
    });
}

/// `out[i] = op(a[i], b[i])`.
///
/// # Panics
/// If the three lengths differ.
///
/// # Example
/// ```
/// use stategrad_simd::{binary, BinaryOp, Par};
/// let (a, b) = ([1.0f32, 5.0, 3.0], [2.0f32, 4.0, 3.0]);
/// let mut out = [0.0; 3];
/// binary(BinaryOp::Ge, &a, &b, &mut out, Par::Seq);
/// assert_eq!(out, [0.0, 1.0, 1.0]);
/// ```
pub fn binary<T: Element>(op: BinaryOp, a: &[T], b: &[T], out: &mut [T], par: Par) {
    assert_eq!(a.len(), out.len(), "binary: lhs and output lengths differ");
    assert_eq!(b.len(), out.len(), "binary: rhs and output lengths differ");
    binary_any(op, a, b, out, par);
}

/// `out[i] = op(a[i], b)`.
///
/// # Panics
/// If `a.len() != out.len()`.
///
/// # Example
/// ```
/// use stategrad_simd::{binary_scalar, BinaryOp, Par};
/// let mut out = [0.0f64; 2];
/// binary_scalar(BinaryOp::Pow, &[3.0, 2.0], 2.0, &mut out, Par::Seq);
/// assert_eq!(out, [9.0, 4.0]);
/// ```
pub fn binary_scalar<T: Element>(op: BinaryOp, a: &[T], b: T, out: &mut [T], par: Par) {
    assert_eq!(
        a.len(),
        out.len(),
        "binary_scalar: input and output lengths differ"
    );
    binary_any(op, a, Bcast(b), out, par);
}

/// `out[i] = op(a, b[i])`.
///
/// # Panics
/// If `b.len() != out.len()`.
///
/// # Example
/// ```
/// use stategrad_simd::{scalar_binary, BinaryOp, Par};
/// let mut out = [0.0f32; 2];
/// scalar_binary(BinaryOp::Sub, 1.0, &[0.25, 2.0], &mut out, Par::Seq);
/// assert_eq!(out, [0.75, -1.0]);
/// ```
pub fn scalar_binary<T: Element>(op: BinaryOp, a: T, b: &[T], out: &mut [T], par: Par) {
    assert_eq!(
        b.len(),
        out.len(),
        "scalar_binary: input and output lengths differ"
    );
    binary_any(op, Bcast(a), b, out, par);
}
