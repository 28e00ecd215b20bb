//! Batched matmul for attention (QKᵀ and PV) through the BLAS, one single-threaded GEMM per batch
//! matrix on rayon's threads, with its own backward.
//!
//! candle's CPU matmul runs attention's 48 small (192 × 64 × 64) products per call through the
//! `gemm` crate at ~25 GFLOP/s here and copies the transposed operand; with MKL in single-threaded
//! mode (see `blas`) each product is one cblas call reading the transpose in place.
//!
//! C = op(A)·op(B) per batch, op = transpose when asked. Backward (each again a batched matmul):
//!   dA = dC·op(B)ᵀ (A untransposed) or op(B)·dCᵀ (A transposed),
//!   dB = op(A)ᵀ·dC (B untransposed) or dCᵀ·op(A) (B transposed).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::blas::blas;
use super::fused::slice;

const NAME: &str = "wick-batched-matmul";

struct BatchedMatmul {
    ta: bool,
    tb: bool,
}

/// (batch, rows, cols) of a (..., rows, cols) shape.
fn batch_dims(shape: &Shape) -> Result<(usize, usize, usize)> {
    let d = shape.dims();
    if d.len() < 2 {
        candle_core::bail!("{NAME}: operands need at least two dimensions, got {d:?}");
    }
    let (r, c) = (d[d.len() - 2], d[d.len() - 1]);
    Ok((d[..d.len() - 2].iter().product(), r, c))
}

impl CustomOp2 for BatchedMatmul {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let blas = blas().ok_or_else(|| candle_core::Error::Msg(format!("{NAME}: no BLAS loaded")))?;
        let (a, b) = (slice(a, al, NAME)?, slice(b, bl, NAME)?);
        let ((batch, ar, ac), (bb, br, bc)) = (batch_dims(al.shape())?, batch_dims(bl.shape())?);
        let (m, k) = if self.ta { (ac, ar) } else { (ar, ac) };
        let (kb, n) = if self.tb { (bc, br) } else { (br, bc) };
        if batch != bb || k != kb {
            candle_core::bail!("{NAME}: shapes {:?} and {:?} do not multiply", al.shape(), bl.shape());
        }
        let mut c = Vec::with_capacity(batch * m * n);
        if m * n > 0 {
            let out = &mut c.spare_capacity_mut()[..batch * m * n];
            out.par_chunks_mut(m * n).zip(a.par_chunks(ar * ac)).zip(b.par_chunks(br * bc)).for_each(|((c, a), b)| {
                // SAFETY: beta = 0 reads nothing of c, and every element is written.
                unsafe { blas.gemm_uninit(a, (ar, ac), self.ta, b, (br, bc), self.tb, 1.0, 0.0, c) };
            });
        }
        // SAFETY: every batch matrix was written above (none when m · n = 0).
        unsafe { c.set_len(batch * m * n) };
        let mut dims = al.shape().dims().to_vec();
        let len = dims.len();
        dims[len - 2] = m;
        dims[len - 1] = n;
        Ok((CpuStorage::F32(c), Shape::from(dims)))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, _c: &Tensor, dc: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (da, db) = self.backward(a, b, dc)?;
        Ok((Some(da), Some(db)))
    }
}

impl BatchedMatmul {
    /// (da, db) under the output gradient dc, recorded as no-grad.
    fn backward(&self, a: &Tensor, b: &Tensor, dc: &Tensor) -> Result<(Tensor, Tensor)> {
        let dc = dc.contiguous()?;
        let mm = |x: &Tensor, y: &Tensor, ta: bool, tb: bool| x.apply_op2_no_bwd(y, &BatchedMatmul { ta, tb });
        let da = if self.ta { mm(b, &dc, self.tb, true)? } else { mm(&dc, b, false, !self.tb)? };
        let db = if self.tb { mm(&dc, a, true, self.ta)? } else { mm(a, &dc, !self.ta, false)? };
        Ok((da, db))
    }
}

/// True when [`batched_matmul`] runs on the BLAS: f32 on the CPU, with a library in
/// single-threaded mode (its GEMMs then parallelise over the batch without oversubscribing).
pub fn batched_matmul_applies(a: &Tensor) -> bool {
    a.device().is_cpu() && a.dtype() == DType::F32 && blas().is_some_and(|b| b.single_threaded()) && super::fused::fused_applies(a)
}

/// op(a)·op(b) over leading batch dimensions (the same for both): a (..., m, k) or, with `ta`,
/// (..., k, m); b (..., k, n) or, with `tb`, (..., n, k). The BLAS path where
/// [`batched_matmul_applies`], candle's matmul otherwise.
pub fn batched_matmul(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Result<Tensor> {
    if batched_matmul_applies(a) {
        return a.contiguous()?.apply_op2(&b.contiguous()?, BatchedMatmul { ta, tb });
    }
    let t = |x: &Tensor, on: bool| if on { x.t() } else { Ok(x.clone()) };
    t(a, ta)?.matmul(&t(b, tb)?)
}

/// (da, db) of [`batched_matmul`] under the output gradient `dc`, without recording a graph
/// (hand-written backward passes; BLAS path only, check [`batched_matmul_applies`]).
pub fn batched_matmul_backward(a: &Tensor, b: &Tensor, ta: bool, tb: bool, dc: &Tensor) -> Result<(Tensor, Tensor)> {
    BatchedMatmul { ta, tb }.backward(&a.contiguous()?, &b.contiguous()?, dc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Values and both gradients equal candle's matmul for all four transpose combinations.
    #[test]
    fn matches_candle_matmul_with_gradients() -> Result<()> {
        if !crate::ops::blas::single_threaded_for_tests() {
            return Ok(());
        }
        let dev = Device::Cpu;
        let (batch, m, k, n) = ((2, 3), 7, 5, 6);
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let a_shape = if ta { (batch.0, batch.1, k, m) } else { (batch.0, batch.1, m, k) };
            let b_shape = if tb { (batch.0, batch.1, n, k) } else { (batch.0, batch.1, k, n) };
            let a = Var::randn(0f32, 1.0, a_shape, &dev)?;
            let b = Var::randn(0f32, 1.0, b_shape, &dev)?;
            let probe = Tensor::randn(0f32, 1.0, (batch.0, batch.1, m, n), &dev)?;
            let t = |x: &Tensor, on: bool| if on { x.t() } else { Ok(x.clone()) };
            let ours = batched_matmul(a.as_tensor(), b.as_tensor(), ta, tb)?;
            let theirs = t(a.as_tensor(), ta)?.matmul(&t(b.as_tensor(), tb)?)?;
            assert!((&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4, "values (ta {ta}, tb {tb})");
            let g_ours = (&ours * &probe)?.sum_all()?.backward()?;
            let g_theirs = (&theirs * &probe)?.sum_all()?.backward()?;
            for (name, v) in [("a", &a), ("b", &b)] {
                let d =
                    (g_ours.get(v.as_tensor()).unwrap() - g_theirs.get(v.as_tensor()).unwrap())?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(d < 1e-4, "gradient of {name} differs by {d} (ta {ta}, tb {tb})");
            }
        }
        Ok(())
    }
}
