//! A frozen projection and its LoRA adapter as one op: y = x·Wᵀ + s·(x∘m)·Aᵀ·Bᵀ.
//!
//! Built from separate candle ops, every adapter costs a scaled copy of its output, an add over
//! the projection's output, a second add when the input gradients of base and adapter are summed,
//! and candle's skinny matmuls for A and B (each with both operand gradients). Here the adapter
//! output is accumulated into the base GEMM's output (sgemm with beta = 1), the backward returns
//! dx (base and adapter parts summed in place), dA and dB, and the frozen W gets no gradient.
//! CPU f32 with OpenBLAS loaded only; everything else takes the composite path in `lora.rs`.
//!
//! Backward, with x̃ = x∘m, u = x̃·Aᵀ (recomputed: m × r is cheap) and g = dy·B:
//!   dx = dy·W + s·(g·A)∘m,   dA = s·gᵀ·x̃,   dB = s·dyᵀ·u.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};

use super::blas::{Blas, blas};
use super::fused::slice;

const NAME: &str = "wick-lora-matmul";

struct LoraMatmul {
    /// Frozen W (out, in), contiguous f32.
    weight: Tensor,
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
    match storage {
        Storage::Cpu(c) => slice(c, layout, NAME),
        _ => candle_core::bail!("{NAME}: operands must be on the CPU"),
    }
}

fn the_blas() -> Result<&'static Blas> {
    blas().ok_or_else(|| candle_core::Error::Msg("lora matmul: no BLAS loaded".into()))
}

impl LoraMatmul {
    /// x∘m, or x itself without dropout.
    fn adapter_input<'a>(&self, x: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        match &self.mask {
            Some(m) => x.iter().zip(&m.keep).map(|(v, &k)| v * f32::from(k) * m.scale).collect::<Vec<_>>().into(),
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
        let blas = the_blas()?;
        let (x, a, b) = (slice(xs, xl, NAME)?, slice(as_, al, NAME)?, slice(bs, bl, NAME)?);
        let (m, d_in) = xl.shape().dims2()?;
        let (r, d_out) = (al.shape().dims2()?.0, bl.shape().dims2()?.0);
        let (ws, wl) = self.weight.storage_and_layout();
        let w = f32_data(&ws, wl)?;
        let x_in = self.adapter_input(x);
        let mut u = vec![0f32; m * r];
        blas.gemm(&x_in, (m, d_in), false, a, (r, d_in), true, 1.0, 0.0, &mut u);
        let mut y = vec![0f32; m * d_out];
        blas.gemm(x, (m, d_in), false, w, (d_out, d_in), true, 1.0, 0.0, &mut y);
        blas.gemm(&u, (m, r), false, b, (d_out, r), true, self.scale, 1.0, &mut y);
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
        let blas = the_blas()?;
        let dy = dy.contiguous()?;
        let ((m, d_in), (r, _), (d_out, _)) = (x.dims2()?, a.dims2()?, b.dims2()?);
        let (xs, xl) = x.storage_and_layout();
        let (as_, al) = a.storage_and_layout();
        let (bs, bl) = b.storage_and_layout();
        let (dys, dyl) = dy.storage_and_layout();
        let (ws, wl) = self.weight.storage_and_layout();
        let (xv, av, bv, dyv, wv) = (f32_data(&xs, xl)?, f32_data(&as_, al)?, f32_data(&bs, bl)?, f32_data(&dys, dyl)?, f32_data(&ws, wl)?);
        let s = self.scale;
        let x_in = self.adapter_input(xv);
        let mut u = vec![0f32; m * r];
        blas.gemm(&x_in, (m, d_in), false, av, (r, d_in), true, 1.0, 0.0, &mut u);
        let mut g = vec![0f32; m * r];
        blas.gemm(dyv, (m, d_out), false, bv, (d_out, r), false, 1.0, 0.0, &mut g);
        let mut dx = vec![0f32; m * d_in];
        blas.gemm(dyv, (m, d_out), false, wv, (d_out, d_in), false, 1.0, 0.0, &mut dx);
        match &self.mask {
            None => blas.gemm(&g, (m, r), false, av, (r, d_in), false, s, 1.0, &mut dx),
            Some(mask) => {
                let mut ga = vec![0f32; m * d_in];
                blas.gemm(&g, (m, r), false, av, (r, d_in), false, s, 0.0, &mut ga);
                dx.iter_mut().zip(ga.iter().zip(&mask.keep)).for_each(|(d, (v, &k))| *d += v * f32::from(k) * mask.scale);
            }
        }
        let mut da = vec![0f32; r * d_in];
        blas.gemm(&g, (m, r), true, &x_in, (m, d_in), false, s, 0.0, &mut da);
        let mut db = vec![0f32; d_out * r];
        blas.gemm(dyv, (m, d_out), true, &u, (m, r), false, s, 0.0, &mut db);
        let device = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (m, d_in), device)?),
            Some(Tensor::from_vec(da, (r, d_in), device)?),
            Some(Tensor::from_vec(db, (d_out, r), device)?),
        ))
    }
}

/// True when [`lora_linear`] can run: x, W, A and B f32 on CPU, and a BLAS loaded.
pub fn lora_linear_applies(x: &Tensor, weight: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && weight.dtype() == candle_core::DType::F32 && blas().is_some()
}

/// y = x·Wᵀ + scale·(x∘mask)·Aᵀ·Bᵀ for x (rows, in), W (out, in) frozen, A (r, in), B (out, r);
/// `mask` (rows × in) is the adapter input's dropout mask. Check [`lora_linear_applies`] first.
pub fn lora_linear(x: &Tensor, weight: &Tensor, a: &Tensor, b: &Tensor, scale: f64, mask: Option<DropoutMask>) -> Result<Tensor> {
    if let Some(m) = &mask
        && m.keep.len() != x.elem_count()
    {
        candle_core::bail!("lora matmul: dropout mask of {} values for {} inputs", m.keep.len(), x.elem_count());
    }
    let op = LoraMatmul { weight: weight.contiguous()?, scale: scale as f32, mask: mask.map(Arc::new) };
    x.contiguous()?.apply_op3(&a.contiguous()?, &b.contiguous()?, op)
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
    /// on odd sizes (needs OpenBLAS; CI installs it and sets WICK_REQUIRE_BLAS=1).
    #[test]
    fn matches_composite_values_and_gradients() -> Result<()> {
        if blas().is_none() {
            assert_ne!(std::env::var("WICK_REQUIRE_BLAS").as_deref(), Ok("1"), "WICK_REQUIRE_BLAS=1 but no OpenBLAS was loaded");
            return Ok(());
        }
        let dev = Device::Cpu;
        let (m, d_in, d_out, r) = (37, 53, 29, 5);
        for with_mask in [false, true] {
            let x = Var::randn(0f32, 1.0, (m, d_in), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (d_out, d_in), &dev)?;
            let a = Var::randn(0f32, 1.0, (r, d_in), &dev)?;
            let b = Var::randn(0f32, 1.0, (d_out, r), &dev)?;
            let mask = DropoutMask { keep: (0..m * d_in).map(|i| u8::from(i % 7 != 3)).collect(), scale: 1.0 / 0.9 };
            let mask_t = Tensor::from_vec((0..m * d_in).map(|i| mask.factor(i)).collect::<Vec<_>>(), (m, d_in), &dev)?;
            let probe = Tensor::randn(0f32, 1.0, (m, d_out), &dev)?;
            let ours = lora_linear(x.as_tensor(), &w, a.as_tensor(), b.as_tensor(), 1.7, with_mask.then(|| mask.clone()))?;
            let theirs = reference(x.as_tensor(), &w, a.as_tensor(), b.as_tensor(), 1.7, with_mask.then_some(&mask_t))?;
            assert!(max_diff(&ours, &theirs)? < 1e-4, "values differ (mask: {with_mask})");
            let g_ours = (&ours * &probe)?.sum_all()?.backward()?;
            let g_theirs = (&theirs * &probe)?.sum_all()?.backward()?;
            for (name, v) in [("x", &x), ("A", &a), ("B", &b)] {
                let (go, gt) = (g_ours.get(v.as_tensor()).unwrap(), g_theirs.get(v.as_tensor()).unwrap());
                let tol = 1e-4 * gt.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                assert!(max_diff(go, gt)? < tol, "gradient of {name} differs (mask: {with_mask})");
            }
            assert!(g_ours.get(&w).is_none(), "the frozen weight must get no gradient");
        }
        Ok(())
    }
}
