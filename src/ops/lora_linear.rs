//! A frozen projection and its LoRA adapter as one op: y = x·Wᵀ + s·(x∘m)·Aᵀ·Bᵀ.
//!
//! Built from separate candle ops, every adapter costs a scaled copy of its output, an add over
//! the projection's output, a second add when the input gradients of base and adapter are summed,
//! and candle's skinny matmuls for A and B (each with both operand gradients). Here the adapter
//! output is accumulated into the base GEMM's output (sgemm with beta = 1), the backward returns
//! dx (base and adapter parts summed in place), dA and dB, and the frozen W gets no gradient.
//! CPU f32 activations with a BLAS loaded (W f32, or f16 on MKL's hgemm); everything else takes
//! the composite path in `lora.rs`.
//!
//! Backward, with x̃ = x∘m, u = x̃·Aᵀ (kept by the hand-written forward, else recomputed: m × r
//! is cheap) and g = dy·B:
//!   dx = dy·W + s·(g·A)∘m,   dA = s·gᵀ·x̃,   dB = s·dyᵀ·u.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::blas::{Blas, blas};
use super::frozen::{blas_dy_w, blas_x_wt};
use super::fused::{slice, storage_slice};
use super::half_gemm::HalfBounds;

const NAME: &str = "wick-lora-matmul";

struct LoraMatmul {
    /// Frozen W (out, in), contiguous f32 (sgemm) or f16 (hgemm, see `half_gemm`).
    weight: Tensor,
    /// Overflow bounds of an f16 W.
    bounds: Option<HalfBounds>,
    /// Adapter scale s.
    scale: f32,
    /// Dropout mask of the adapter input (rows × in), when training with dropout.
    mask: Option<Arc<DropoutMask>>,
}

/// An inverted-dropout mask: input i is kept (and multiplied by `scale` = 1/(1-p)) where
/// `keep[i]` is 1, zeroed where it is 0.
#[derive(Debug, Clone)]
pub struct DropoutMask {
    /// 1 = kept, 0 = dropped, one byte per input.
    pub keep: Vec<u8>,
    /// 1/(1-p).
    pub scale: f32,
}

impl DropoutMask {
    /// The multiplier of input i: 0 or 1/(1-p).
    pub fn factor(&self, i: usize) -> f32 {
        f32::from(self.keep[i]) * self.scale
    }
}

/// The contiguous f32 data of a (locked) CPU storage.
fn f32_data<'a>(storage: &'a Storage, layout: &Layout) -> Result<&'a [f32]> {
    storage_slice(storage, layout, NAME)
}

fn the_blas() -> Result<&'static Blas> {
    blas().ok_or_else(|| candle_core::Error::Msg("lora matmul: no BLAS loaded".into()))
}

impl LoraMatmul {
    /// The op for input x, checking the dropout mask covers x.
    fn new(x: &Tensor, weight: &Tensor, bounds: Option<HalfBounds>, scale: f64, mask: Option<Arc<DropoutMask>>) -> Result<Self> {
        if let Some(m) = &mask
            && m.keep.len() != x.elem_count()
        {
            candle_core::bail!("lora matmul: dropout mask of {} values for {} inputs", m.keep.len(), x.elem_count());
        }
        Ok(Self { weight: weight.contiguous()?, bounds, scale: scale as f32, mask })
    }

    /// x∘m, or x itself without dropout.
    fn adapter_input<'a>(&self, x: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        match &self.mask {
            Some(m) => x.par_iter().with_min_len(1 << 14).zip(&m.keep).map(|(v, &k)| v * f32::from(k) * m.scale).collect::<Vec<_>>().into(),
            None => x.into(),
        }
    }
}

impl CustomOp3 for LoraMatmul {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        as_: &CpuStorage,
        al: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, a, b) = (slice(xs, xl, NAME)?, slice(as_, al, NAME)?, slice(bs, bl, NAME)?);
        let ((m, d_in), (r, _), (d_out, _)) = (xl.shape().dims2()?, al.shape().dims2()?, bl.shape().dims2()?);
        let (y, _) = self.forward_parts(x, a, b, (m, d_in, r, d_out))?;
        Ok((CpuStorage::F32(y), (m, d_out).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, da, db) = self.backward(x, a, b, None, dy, None)?;
        Ok((Some(Tensor::from_vec(dx, x.shape(), x.device())?), Some(da), Some(db)))
    }
}

impl LoraMatmul {
    /// (y, u): y = x·Wᵀ + s·u·Bᵀ with u = (x∘m)·Aᵀ, for x (m, d_in), A (r, d_in), B (d_out, r).
    fn forward_parts(
        &self,
        x: &[f32],
        a: &[f32],
        b: &[f32],
        (m, d_in, r, d_out): (usize, usize, usize, usize),
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let blas = the_blas()?;
        let u = blas.gemm_new(&self.adapter_input(x), (m, d_in), false, a, (r, d_in), true, 1.0);
        let mut y = blas_x_wt(blas, x, m, &self.weight, self.bounds)?;
        blas.gemm(&u, (m, r), false, b, (d_out, r), true, self.scale, 1.0, &mut y);
        Ok((y, u))
    }

    /// (dx, dA, dB) under the output gradient dy (see the module doc). `u` is the forward's
    /// (recomputed when None); dx is added onto `acc` when given.
    fn backward(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        u: Option<&[f32]>,
        dy: &Tensor,
        acc: Option<Vec<f32>>,
    ) -> Result<(Vec<f32>, Tensor, Tensor)> {
        let blas = the_blas()?;
        let dy = dy.contiguous()?;
        let ((m, d_in), (r, _), (d_out, _)) = (x.dims2()?, a.dims2()?, b.dims2()?);
        let (xs, xl) = x.storage_and_layout();
        let (as_, al) = a.storage_and_layout();
        let (bs, bl) = b.storage_and_layout();
        let (dys, dyl) = dy.storage_and_layout();
        let (xv, av, bv, dyv) = (f32_data(&xs, xl)?, f32_data(&as_, al)?, f32_data(&bs, bl)?, f32_data(&dys, dyl)?);
        let s = self.scale;
        let x_in = self.adapter_input(xv);
        let recomputed;
        let u = match u {
            Some(u) if u.len() == m * r => u,
            _ => {
                recomputed = blas.gemm_new(&x_in, (m, d_in), false, av, (r, d_in), true, 1.0);
                &recomputed
            }
        };
        let g = blas.gemm_new(dyv, (m, d_out), false, bv, (d_out, r), false, 1.0);
        let mut dx = blas_dy_w(blas, dyv, m, &self.weight, self.bounds, acc)?;
        match &self.mask {
            None => blas.gemm(&g, (m, r), false, av, (r, d_in), false, s, 1.0, &mut dx),
            Some(mask) => {
                let ga = blas.gemm_new(&g, (m, r), false, av, (r, d_in), false, s);
                dx.iter_mut().zip(ga.iter().zip(&mask.keep)).for_each(|(d, (v, &k))| *d += v * f32::from(k) * mask.scale);
            }
        }
        let da = blas.gemm_new(&g, (m, r), true, &x_in, (m, d_in), false, s);
        let db = blas.gemm_new(dyv, (m, d_out), true, u, (m, r), false, s);
        let device = x.device();
        Ok((dx, Tensor::from_vec(da, (r, d_in), device)?, Tensor::from_vec(db, (d_out, r), device)?))
    }
}

/// True when [`lora_linear`] can run on the CPU: x, A and B f32 with a BLAS loaded, and W f32,
/// f16 with MKL's hgemm, or bf16 with oneDNN.
pub fn lora_linear_applies(x: &Tensor, weight: &Tensor) -> bool {
    use candle_core::DType;
    x.device().is_cpu()
        && x.dtype() == DType::F32
        && match weight.dtype() {
            DType::F32 => blas().is_some(),
            DType::F16 => super::half_gemm_available(),
            DType::BF16 => blas().is_some() && super::onednn::bf16_gemm_available(),
            _ => false,
        }
}

/// y = x·Wᵀ + scale·(x∘mask)·Aᵀ·Bᵀ for x (rows, in), W (out, in) frozen, A (r, in), B (out, r);
/// `mask` (rows × in) is the adapter input's dropout mask; `bounds` those of an f16 W (computed
/// when None). Check [`lora_linear_applies`] first.
pub fn lora_linear(
    x: &Tensor,
    weight: &Tensor,
    bounds: Option<HalfBounds>,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
    mask: Option<Arc<DropoutMask>>,
) -> Result<Tensor> {
    let op = LoraMatmul::new(x, weight, bounds, scale, mask)?;
    x.contiguous()?.apply_op3(&a.contiguous()?, &b.contiguous()?, op)
}

/// [`lora_linear`] without recording a graph (hand-written passes), also returning the adapter's
/// u = (x∘mask)·Aᵀ (rows × r) for [`lora_linear_backward`].
pub fn lora_linear_forward(
    x: &Tensor,
    weight: &Tensor,
    bounds: Option<HalfBounds>,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
    mask: Option<Arc<DropoutMask>>,
) -> Result<(Tensor, Vec<f32>)> {
    let op = LoraMatmul::new(x, weight, bounds, scale, mask)?;
    let (x, a, b) = (x.contiguous()?, a.contiguous()?, b.contiguous()?);
    let ((m, d_in), (r, _), (d_out, _)) = (x.dims2()?, a.dims2()?, b.dims2()?);
    let (xs, xl) = x.storage_and_layout();
    let (as_, al) = a.storage_and_layout();
    let (bs, bl) = b.storage_and_layout();
    let (y, u) = op.forward_parts(f32_data(&xs, xl)?, f32_data(&as_, al)?, f32_data(&bs, bl)?, (m, d_in, r, d_out))?;
    Ok((Tensor::from_vec(y, (m, d_out), x.device())?, u))
}

/// (dx, dA, dB) of [`lora_linear`] under the output gradient `dy`, without recording a graph
/// (hand-written passes). The arguments are those of the forward, plus its `u` (recomputed when
/// None); dx (rows × in, row-major) is added onto `acc` when given, so the gradients of several
/// projections of one input sum without an extra pass.
#[allow(clippy::too_many_arguments)]
pub fn lora_linear_backward(
    x: &Tensor,
    weight: &Tensor,
    bounds: Option<HalfBounds>,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
    mask: Option<Arc<DropoutMask>>,
    u: Option<&[f32]>,
    dy: &Tensor,
    acc: Option<Vec<f32>>,
) -> Result<(Vec<f32>, Tensor, Tensor)> {
    if let Some(acc) = &acc
        && acc.len() != x.elem_count()
    {
        candle_core::bail!("lora matmul: gradient accumulator of {} values for {} inputs", acc.len(), x.elem_count());
    }
    let op = LoraMatmul::new(x, weight, bounds, scale, mask)?;
    op.backward(&x.contiguous()?, &a.contiguous()?, &b.contiguous()?, u, dy, acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The composite reference: y = x·Wᵀ + s·((x∘m)·Aᵀ)·Bᵀ in plain candle ops.
    fn reference(x: &Tensor, w: &Tensor, a: &Tensor, b: &Tensor, s: f64, mask: Option<&Tensor>) -> Result<Tensor> {
        let x_in = match mask {
            Some(m) => (x * m)?,
            None => x.clone(),
        };
        x.matmul(&w.t()?)? + (x_in.matmul(&a.t()?)?.matmul(&b.t()?)? * s)?
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
    }

    /// Values and all three gradients match the composite ops, with and without a dropout mask,
    /// on odd sizes; with MKL also for an f16 W against the composite on the same rounded W (needs
    /// a BLAS; CI installs MKL and sets WICK_REQUIRE_BLAS=mkl).
    #[test]
    fn matches_composite_values_and_gradients() -> Result<()> {
        if blas().is_none() {
            assert!(!crate::ops::blas::required_by_env().0, "WICK_REQUIRE_BLAS is set but no BLAS was loaded");
            return Ok(());
        }
        let dev = Device::Cpu;
        let (m, d_in, d_out, r) = (37, 53, 29, 5);
        let half = super::super::half_gemm_available();
        assert!(half || !crate::ops::blas::required_by_env().1, "WICK_REQUIRE_BLAS=mkl but MKL's hgemm was not loaded");
        let cases = [(false, false), (true, false), (false, true), (true, true)];
        for (with_mask, f16_weight) in cases.into_iter().filter(|&(_, h)| !h || half) {
            // f16 products carry ~3e-3 relative error; f32 ones only summation-order error.
            let rel = if f16_weight { 1e-2 } else { 1e-4 };
            let x = Var::randn(0f32, 1.0, (m, d_in), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (d_out, d_in), &dev)?;
            let w = if f16_weight { w.to_dtype(candle_core::DType::F16)?.to_dtype(candle_core::DType::F32)? } else { w };
            let w_op = if f16_weight { w.to_dtype(candle_core::DType::F16)? } else { w.clone() };
            let a = Var::randn(0f32, 1.0, (r, d_in), &dev)?;
            let b = Var::randn(0f32, 1.0, (d_out, r), &dev)?;
            let mask = DropoutMask { keep: (0..m * d_in).map(|i| u8::from(i % 7 != 3)).collect(), scale: 1.0 / 0.9 };
            let mask_t = Tensor::from_vec((0..m * d_in).map(|i| mask.factor(i)).collect::<Vec<_>>(), (m, d_in), &dev)?;
            let probe = Tensor::randn(0f32, 1.0, (m, d_out), &dev)?;
            let ours =
                lora_linear(x.as_tensor(), &w_op, None, a.as_tensor(), b.as_tensor(), 1.7, with_mask.then(|| Arc::new(mask.clone())))?;
            let theirs = reference(x.as_tensor(), &w, a.as_tensor(), b.as_tensor(), 1.7, with_mask.then_some(&mask_t))?;
            let tol = rel * theirs.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
            assert!(max_diff(&ours, &theirs)? < tol, "values differ (mask: {with_mask}, f16: {f16_weight})");
            let g_ours = (&ours * &probe)?.sum_all()?.backward()?;
            let g_theirs = (&theirs * &probe)?.sum_all()?.backward()?;
            for (name, v) in [("x", &x), ("A", &a), ("B", &b)] {
                let (go, gt) = (g_ours.get(v.as_tensor()).unwrap(), g_theirs.get(v.as_tensor()).unwrap());
                let tol = rel * gt.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                assert!(max_diff(go, gt)? < tol, "gradient of {name} differs (mask: {with_mask}, f16: {f16_weight})");
            }
            assert!(g_ours.get(&w_op).is_none(), "the frozen weight must get no gradient");
        }
        Ok(())
    }
}
