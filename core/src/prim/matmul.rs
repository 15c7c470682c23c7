//! Matrix products (batched, broadcasting leading dims) and their GEMM strategy.

use super::*;
use crate::error::{Error, Result};
use crate::tensor::{Buffer, Tensor};
use stategrad_simd::{self as simd, Par};
use std::sync::Arc;

/// Products at least this large (m·n·k) are checked for a selection operand: below it a GEMM
/// costs about what the scan does.
const SELECT_MIN_WORK: usize = 1 << 18;

/// The row of the single nonzero of each of the `count` columns (`s_outer` apart, entries
/// `s_inner` apart, `k` long) of `x` (`None` for an all-zero column), or `None` as soon as a
/// column has two nonzeros, so that a dense operand costs about one line of reads.
fn selection<T: simd::Element>(
    x: &[T],
    s_inner: usize,
    s_outer: usize,
    k: usize,
    count: usize,
) -> Option<Vec<Option<usize>>> {
    let mut found: Vec<Option<usize>> = vec![None; count];
    let mut see = |p: usize, j: usize| -> Option<()> {
        if found[j].is_some() {
            return None;
        }
        found[j] = Some(p);
        Some(())
    };
    // In memory order (a basis operand is read whole; a dense one fails within two lines),
    // lines of contiguous elements skipped 16 zeros at a time (the compare vectorizes).
    if s_outer <= s_inner {
        for p in 0..k {
            if s_outer == 1 {
                for_nonzeros(&x[p * s_inner..][..count], |j| see(p, j))?;
            } else {
                for j in 0..count {
                    if x[p * s_inner + j * s_outer] != T::ZERO {
                        see(p, j)?;
                    }
                }
            }
        }
    } else {
        for j in 0..count {
            if s_inner == 1 {
                for_nonzeros(&x[j * s_outer..][..k], |p| see(p, j))?;
            } else {
                for p in 0..k {
                    if x[p * s_inner + j * s_outer] != T::ZERO {
                        see(p, j)?;
                    }
                }
            }
        }
    }
    Some(found)
}

/// `f(i)` for each `i` with `line[i] != 0` (NaN included), in order, until `f` returns `None`.
fn for_nonzeros<T: simd::Element>(
    line: &[T],
    mut f: impl FnMut(usize) -> Option<()>,
) -> Option<()> {
    const CHUNK: usize = 16;
    for (c, chunk) in line.chunks(CHUNK).enumerate() {
        // A fold without early exit, so that the compare vectorizes.
        if !chunk.iter().fold(false, |any, v| any | (*v != T::ZERO)) {
            continue;
        }
        for (i, v) in chunk.iter().enumerate() {
            if *v != T::ZERO {
                f(c * CHUNK + i)?;
            }
        }
    }
    Some(())
}

/// `C = A @ B` into the row-major `m x n` slice `c`, A and B read with the given strides. A
/// product by a selection (at most one nonzero per column of B or per row of A: the basis
/// chunks of `jacfwd`/`jacrev`) is a gather, not a GEMM: faster, and exact in the sense the
/// Jacobian needs (the entries a basis vector does not select are not multiplied, so an
/// infinite one gives no NaN). Products with a dimension of 1 stay on [`simd::gemm`], whose
/// thin paths are already memory-bound.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into<T: simd::Element>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    rsa: usize,
    csa: usize,
    b: &[T],
    rsb: usize,
    csb: usize,
    c: &mut [T],
    par: Par,
) {
    let (one, zero) = (T::ONE, T::ZERO);
    if m > 1 && n > 1 && k > 1 && m.saturating_mul(n).saturating_mul(k) >= SELECT_MIN_WORK {
        if let Some(rows) = selection(b, rsb, csb, k, n) {
            return simd::gemm_select_cols(
                m, k, n, one, a, rsa, csa, b, rsb, csb, zero, c, n, 1, &rows,
            );
        }
        if let Some(cols) = selection(a, csa, rsa, k, m) {
            return simd::gemm_select_rows(
                m, k, n, one, a, rsa, csa, b, rsb, csb, zero, c, n, 1, &cols,
            );
        }
    }
    simd::gemm(m, k, n, one, a, rsa, csa, b, rsb, csb, zero, c, n, 1, par)
}

/// One `(m x k) @ (k x n)` product of two tensors' data read with the given strides.
fn plain_gemm(
    a: &Tensor,
    rsa: usize,
    csa: usize,
    b: &Tensor,
    rsb: usize,
    csb: usize,
    m: usize,
    k: usize,
    n: usize,
) -> Tensor {
    let mut out = new_buffer(a.dtype(), m * n);
    let p = par();
    match (a.buf(), b.buf(), &mut out) {
        (Buffer::F32(x), Buffer::F32(y), Buffer::F32(o)) => {
            gemm_into(m, k, n, x, rsa, csa, y, rsb, csb, o, p)
        }
        (Buffer::F64(x), Buffer::F64(y), Buffer::F64(o)) => {
            gemm_into(m, k, n, x, rsa, csa, y, rsb, csb, o, p)
        }
        _ => unreachable!("matmul operands share a dtype"),
    }
    Tensor::from_buffer(out, &[m, n])
}

/// The dims of one `op(A) @ op(B)` product and the row/column strides of `op(A)` and `op(B)`
/// inside one matrix, from the operands' last two dims.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatDims {
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) rsa: usize,
    pub(crate) csa: usize,
    pub(crate) rsb: usize,
    pub(crate) csb: usize,
}

impl MatMul {
    /// `None` when the inner dims differ (or an operand has fewer than two dims).
    fn dims(&self, a: &[usize], b: &[usize]) -> Option<MatDims> {
        let (&[.., ar, ac], &[.., br, bc]) = (a, b) else {
            return None;
        };
        let (m, k) = if self.ta { (ac, ar) } else { (ar, ac) };
        let (k2, n) = if self.tb { (bc, br) } else { (br, bc) };
        let (rsa, csa) = if self.ta { (1, ac) } else { (ac, 1) };
        let (rsb, csb) = if self.tb { (1, bc) } else { (bc, 1) };
        (k == k2).then_some(MatDims {
            m,
            k,
            n,
            rsa,
            csa,
            rsb,
            csb,
        })
    }
}

/// `op(A) @ op(B)` over the last two dims, batch dims broadcast; `op` transposes when the flag
/// is set (no copy: the kernel reads with swapped strides).
#[derive(Debug)]
pub(crate) struct MatMul {
    pub ta: bool,
    pub tb: bool,
}

impl Primitive for MatMul {
    fn name(&self) -> &'static str {
        "dot_general"
    }
    fn splits_work(&self, inputs: &[&[usize]], out: &[usize]) -> bool {
        let Some(d) = self.dims(inputs[0], inputs[1]) else {
            return false;
        };
        // One product splits above PAR_GEMM_MIN_FLOPS; a batch of them over the batch from
        // 2^18 multiply-adds in all (as `forward` decides).
        let mnk = d.m.saturating_mul(d.n).saturating_mul(d.k);
        let batches = out.iter().product::<usize>() / d.m.saturating_mul(d.n).max(1);
        mnk > stategrad_simd::PAR_GEMM_MIN_FLOPS
            || (batches > 1 && mnk.saturating_mul(batches) > 1 << 18)
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Option<Kernel> {
        let (a, b) = (inputs[0], inputs[1]);
        if a.len() != 2 || b.len() != 2 {
            return None;
        }
        let d = self.dims(a, b)?;
        (d.k > 0).then_some(Kernel::Gemm(d))
    }

    fn batch(
        &self,
        this: &Arc<dyn Primitive>,
        inputs: &[&Tensor],
        batched: &[bool],
    ) -> Result<Tensor> {
        batch_broadcasting(this, inputs, batched)
    }
    fn abstract_eval(&self, inputs: &[&Tensor]) -> Result<Aval> {
        let (a, b) = (inputs[0], inputs[1]);
        let err = || Error::ShapeMismatch {
            op: "matmul",
            lhs: a.shape().into(),
            rhs: b.shape().into(),
        };
        if a.ndim() < 2 || b.ndim() < 2 {
            return Err(err());
        }
        if a.dtype() != b.dtype() {
            return Err(Error::DTypeMismatch {
                op: "matmul",
                lhs: a.dtype().name(),
                rhs: b.dtype().name(),
            });
        }
        let MatDims { m, n, .. } = self.dims(a.shape(), b.shape()).ok_or_else(err)?;
        let mut shape = broadcast_shapes(
            "matmul",
            &a.shape()[..a.ndim() - 2],
            &b.shape()[..b.ndim() - 2],
        )
        .map_err(|_| err())?;
        shape.push(m);
        shape.push(n);
        crate::tensor::shape_numel("matmul", &shape)?;
        Ok(Aval::new(shape, a.dtype()))
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let (a, b) = (inputs[0], inputs[1]);
        let err = || Error::ShapeMismatch {
            op: "matmul",
            lhs: a.shape().into(),
            rhs: b.shape().into(),
        };
        if a.ndim() < 2 || b.ndim() < 2 {
            return Err(err());
        }
        if a.dtype() != b.dtype() {
            return Err(Error::DTypeMismatch {
                op: "matmul",
                lhs: a.dtype().name(),
                rhs: b.dtype().name(),
            });
        }
        let (ar, ac) = (a.shape()[a.ndim() - 2], a.shape()[a.ndim() - 1]);
        let (br, bc) = (b.shape()[b.ndim() - 2], b.shape()[b.ndim() - 1]);
        let MatDims {
            m,
            k,
            n,
            rsa,
            csa,
            rsb,
            csb,
        } = self.dims(a.shape(), b.shape()).ok_or_else(err)?;
        let batch = broadcast_shapes(
            "matmul",
            &a.shape()[..a.ndim() - 2],
            &b.shape()[..b.ndim() - 2],
        )
        .map_err(|_| err())?;
        let nb: usize = batch.iter().product();
        let bsa = broadcast_strides(&a.shape()[..a.ndim() - 2], &batch);
        let bsb = broadcast_strides(&b.shape()[..b.ndim() - 2], &batch);
        let mut shape = batch.clone();
        shape.push(m);
        shape.push(n);
        // Zero-size operands can ask for an output whose size does not fit.
        crate::tensor::shape_numel("matmul", &shape)?;
        let mut out = new_buffer(a.dtype(), nb * m * n);
        if k == 0 {
            return Ok(Tensor::full_dtype(&shape, 0.0, a.dtype()));
        }
        // A stack of products with one shared operand is one large GEMM (the common case of
        // batched Jacobian chunks): fold the batch into the rows of A, or into the columns of B.
        if nb > 1 && b.ndim() == 2 && !self.ta && a.shape()[..a.ndim() - 2] == batch[..] {
            let c = plain_gemm(a, ac, 1, b, rsb, csb, nb * m, k, n);
            return Ok(c.with_shape(shape));
        }
        if nb > 1 && a.ndim() == 2 && n == 1 && b.shape()[..b.ndim() - 2] == batch[..] {
            // A stack of matrix-vector products (batched Jacobian columns): row b of the
            // output is A @ v_b, so the whole stack is V (nb x k) @ op(A)^T, already in the
            // output's layout.
            let c = plain_gemm(b, br * bc, rsb, a, csa, rsa, nb, k, m);
            return Ok(c.with_shape(shape));
        }
        if nb > 1 && a.ndim() == 2 && b.shape()[..b.ndim() - 2] == batch[..] {
            let bp = gather(b, &[rsb, br * bc, csb], 0, &[k, nb, n]);
            let cp = plain_gemm(a, rsa, csa, &bp, nb * n, 1, m, k, nb * n);
            return Ok(gather(&cp, &[n, nb * n, 1], 0, &[nb, m, n]).with_shape(shape));
        }
        let p = if nb > 1 { Par::Seq } else { par() };
        let offsets = |bi: usize, strides: &[usize], mat: usize| -> usize {
            let mut rem = bi;
            let mut off = 0;
            for d in (0..batch.len()).rev() {
                off += (rem % batch[d]) * strides[d];
                rem /= batch[d];
            }
            off * mat
        };
        macro_rules! run {
            ($x:expr, $y:expr, $o:expr) => {{
                let body = |bi: usize, c: &mut [_]| {
                    let oa = offsets(bi, &bsa, ar * ac);
                    let ob = offsets(bi, &bsb, br * bc);
                    gemm_into(
                        m,
                        k,
                        n,
                        &$x[oa..oa + ar * ac],
                        rsa,
                        csa,
                        &$y[ob..ob + br * bc],
                        rsb,
                        csb,
                        c,
                        p,
                    );
                };
                if nb > 1 && crate::parallel::may_split() && m * n * k * nb > (1 << 18) {
                    use rayon::prelude::*;
                    $o.par_chunks_mut((m * n).max(1))
                        .enumerate()
                        .for_each(|(bi, c)| body(bi, c));
                } else {
                    for bi in 0..nb {
                        body(bi, &mut $o[bi * m * n..(bi + 1) * m * n]);
                    }
                }
            }};
        }
        match (a.buf(), b.buf(), &mut out) {
            (Buffer::F32(x), Buffer::F32(y), Buffer::F32(o)) => run!(x, y, o),
            (Buffer::F64(x), Buffer::F64(y), Buffer::F64(o)) => run!(x, y, o),
            _ => unreachable!("dtypes checked above"),
        }
        Ok(Tensor::from_buffer(out, &shape))
    }

    fn vjp(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (inputs[0], inputs[1]);
        let ga = needs[0]
            .then(|| {
                let d = if self.ta {
                    b.try_matmul_t(g, self.tb, true)?
                } else {
                    g.try_matmul_t(b, false, !self.tb)?
                };
                d.try_sum_to(a.shape())
            })
            .transpose()?;
        let gb = needs[1]
            .then(|| {
                let d = if self.tb {
                    g.try_matmul_t(a, true, self.ta)?
                } else {
                    a.try_matmul_t(g, !self.ta, false)?
                };
                d.try_sum_to(b.shape())
            })
            .transpose()?;
        Ok(vec![ga, gb])
    }
}

#[cfg(test)]
mod tests {
    use super::selection;

    /// The scan element by element, as it was before lines were skipped a chunk at a time.
    fn naive(
        x: &[f64],
        s_inner: usize,
        s_outer: usize,
        k: usize,
        count: usize,
    ) -> Option<Vec<Option<usize>>> {
        let mut found = vec![None; count];
        for p in 0..k {
            for (j, f) in found.iter_mut().enumerate() {
                if x[p * s_inner + j * s_outer] != 0.0 {
                    if f.is_some() {
                        return None;
                    }
                    *f = Some(p);
                }
            }
        }
        Some(found)
    }

    /// Random sparse operands (zeros, -0.0, NaN at random places), read in both memory orders
    /// with unit and padded strides, lengths across the 16-element chunks: the same answer as
    /// the plain scan.
    #[test]
    fn selection_scan_matches_the_plain_scan() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut outcomes = [0usize; 2];
        for _ in 0..400 {
            let (k, count) = (1 + next(40), 1 + next(40));
            let mut x = vec![0.0f64; (2 * k + 1) * (2 * count + 1)];
            for _ in 0..next(2 * count + 1) {
                let at = next(x.len());
                x[at] = [1.0, -0.0, f64::NAN, 2.5][next(4)];
            }
            // Row-major (count contiguous) and column-major (k contiguous) reads of the buffer.
            for (s_inner, s_outer) in [(count, 1), (1, k), (2 * count + 1, 2), (2, 2 * k + 1)] {
                let got = selection(&x, s_inner, s_outer, k, count);
                outcomes[usize::from(got.is_some())] += 1;
                assert_eq!(
                    got,
                    naive(&x, s_inner, s_outer, k, count),
                    "{k}x{count} ({s_inner}, {s_outer})"
                );
            }
        }
        assert!(
            outcomes.iter().all(|&o| o > 50),
            "both answers drawn: {outcomes:?}"
        );
    }
}
