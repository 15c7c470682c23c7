//! Run-time choice of the instruction set the kernels run on.
//!
//! A crate compiled for baseline x86-64 (what a dependency gets without `target-cpu=native`)
//! would otherwise run `wide`'s SSE2 code on every machine. Instead, each kernel's inner loop
//! is instantiated three times: for AVX-512 (F + DQ), for AVX2 + FMA (inside
//! `#[target_feature]` functions, on this crate's own register types) and for the build's own
//! [`Element::Vec`] (`wide`). The widest ISA the CPU has is detected once per process and every
//! kernel call goes to that instantiation, so a portable build runs the same vector code as a
//! native one.
//!
//! `STATEGRAD_ISA=baseline|avx2|avx512`, read once, lowers the choice (never above what the
//! CPU has): tests and benchmarks use it to run the narrower paths on a wide machine.
//!
//! Off x86-64 (aarch64 has NEON in its baseline, which `wide` uses) there is one path.
//!
//! ```
//! use stategrad_simd::isa::{isa, lanes, Isa};
//! // Whatever was chosen, f32 vectors are 8 or 16 lanes wide on x86-64, 4 or more elsewhere.
//! assert!(lanes::<f32>() >= 4);
//! if isa() == Isa::Avx512 {
//!     assert_eq!(lanes::<f32>(), 16);
//! }
//! ```

use std::sync::OnceLock;

use crate::vector::SimdVec;
use crate::Element;

/// The instruction sets the kernels are instantiated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// The build's own vector types ([`Element::Vec`], `wide`): SSE2 in a baseline x86-64
    /// build, AVX2/AVX-512 in a `target-cpu=native` one, NEON on aarch64.
    Baseline,
    /// x86-64-v3 (AVX2, FMA, BMI), 256-bit vectors.
    Avx2,
    /// x86-64-v4 (AVX-512 F, BW, CD, DQ, VL), 512-bit vectors.
    Avx512,
}

impl Isa {
    /// The widest ISA this CPU supports.
    pub fn detected() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            // x86-64-v3: AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE.
            let v3 = || {
                has!("avx2")
                    && has!("fma")
                    && has!("bmi1")
                    && has!("bmi2")
                    && has!("f16c")
                    && has!("lzcnt")
                    && has!("movbe")
            };
            // x86-64-v4 (AVX-512 F, BW, CD, DQ, VL) and the v3 set below it: what a
            // `target-cpu` of that level gives the compiler, so the code is the same.
            if has!("avx512f")
                && has!("avx512bw")
                && has!("avx512cd")
                && has!("avx512dq")
                && has!("avx512vl")
                && v3()
            {
                return Isa::Avx512;
            }
            if v3() {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    }

    /// Parses `baseline`, `avx2` or `avx512`.
    pub fn from_name(name: &str) -> Option<Isa> {
        match name.trim().to_ascii_lowercase().as_str() {
            "baseline" => Some(Isa::Baseline),
            "avx2" => Some(Isa::Avx2),
            "avx512" => Some(Isa::Avx512),
            _ => None,
        }
    }
}

/// The ISA the kernels run on in this process: [`Isa::detected`], lowered by
/// `STATEGRAD_ISA` if that names a narrower one (an unknown name or a wider one is ignored).
/// Chosen on first use and fixed for the life of the process.
pub fn isa() -> Isa {
    static CHOSEN: OnceLock<Isa> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let detected = Isa::detected();
        std::env::var("STATEGRAD_ISA")
            .ok()
            .and_then(|v| Isa::from_name(&v))
            .map_or(detected, |wanted| wanted.min(detected))
    })
}

/// Vector lanes of `T` on the chosen [`isa`]: the width every kernel's vector loop (and the
/// order of its sums) uses.
pub fn lanes<T: Element>() -> usize {
    struct Lanes;
    impl<T: Element> VecFn<T> for Lanes {
        type Output = usize;
        #[inline(always)]
        fn call<V: SimdVec<Elem = T>>(self) -> usize {
            V::LANES
        }
    }
    with_vec::<T, _>(Lanes)
}

/// Code generic over the vector type, run by [`with_vec`] on the chosen ISA's type.
///
/// Mark `call` `#[inline(always)]`, and everything it calls on the vector type too: code that
/// is not inlined into the dispatcher's `#[target_feature]` function is compiled for the
/// baseline ISA and calls the wide instructions out of line.
pub trait VecFn<T: Element> {
    /// What `call` returns.
    type Output;
    /// The work, on vector type `V`.
    fn call<V: SimdVec<Elem = T>>(self) -> Self::Output;
}

/// Runs `f` on the vector type of the chosen [`isa`].
///
/// ```
/// use stategrad_simd::block::SimdVec;
/// use stategrad_simd::isa::{with_vec, VecFn};
///
/// /// Sum of the first vector of `x` (assumes `x` has at least one vector).
/// struct FirstVecSum<'a>(&'a [f32]);
/// impl VecFn<f32> for FirstVecSum<'_> {
///     type Output = f32;
///     #[inline(always)]
///     fn call<V: SimdVec<Elem = f32>>(self) -> f32 {
///         V::load(&self.0[..V::LANES]).fold_lanes(0.0, |a, b| a + b)
///     }
/// }
/// assert_eq!(with_vec(FirstVecSum(&[1.0; 16])), stategrad_simd::isa::lanes::<f32>() as f32);
/// ```
#[inline]
pub fn with_vec<T: Element, F: VecFn<T>>(f: F) -> F::Output {
    #[cfg(target_arch = "x86_64")]
    match isa() {
        // SAFETY: `isa()` returns these only when `Isa::detected` found the features each
        // function enables on this CPU.
        Isa::Avx512 => return unsafe { x86::avx512::<T, F>(f) },
        Isa::Avx2 => return unsafe { x86::avx2::<T, F>(f) },
        Isa::Baseline => {}
    }
    f.call::<T::Vec>()
}

/// Runs `f` on `which`'s vector type if this CPU has it (for tests comparing the paths, and for
/// kernels that need one vector width, such as the matrix-vector product's eight lanes).
pub(crate) fn with_vec_on<T: Element, F: VecFn<T>>(which: Isa, f: F) -> Option<F::Output> {
    if which > Isa::detected() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    match which {
        // SAFETY: the CPU has `which` (checked above).
        Isa::Avx512 => return Some(unsafe { x86::avx512::<T, F>(f) }),
        Isa::Avx2 => return Some(unsafe { x86::avx2::<T, F>(f) }),
        Isa::Baseline => {}
    }
    Some(f.call::<T::Vec>())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::VecFn;
    use crate::element::sealed::Sealed;
    use crate::Element;

    /// # Safety
    /// The CPU must have x86-64-v3 (see [`Isa::detected`](super::Isa::detected)).
    #[target_feature(enable = "avx2,fma,bmi1,bmi2,f16c,lzcnt,movbe")]
    pub(super) unsafe fn avx2<T: Element, F: VecFn<T>>(f: F) -> F::Output {
        f.call::<<T as Sealed>::Avx2>()
    }

    /// # Safety
    /// The CPU must have x86-64-v4 (see [`Isa::detected`](super::Isa::detected)).
    #[target_feature(
        enable = "avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx2,fma,bmi1,bmi2,f16c,lzcnt,movbe"
    )]
    pub(super) unsafe fn avx512<T: Element, F: VecFn<T>>(f: F) -> F::Output {
        f.call::<<T as Sealed>::Avx512>()
    }
}
