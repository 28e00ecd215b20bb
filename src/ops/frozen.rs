//! Frozen linear layers whose backward skips the weight gradient.

use candle_core::{Result, Tensor};

/// x·Wᵀ for a frozen weight W (out, in): the backward returns only the input gradient grad·W.
///
/// candle's matmul backward always computes the gradient of both operands, so a frozen weight
/// would still cost a full dW (6N instead of 4N FLOP per token) and a dW buffer per layer.
struct FrozenMatmul {
    weight: Tensor,
    /// false: y = x·Wᵀ (the forward); true: dx = dy·W (its backward, recorded as no-grad).
    backward: bool,
}

impl FrozenMatmul {
    fn run<S: candle_core::backend::BackendStorage>(
        &self,
        x: &S,
        layout: &candle_core::Layout,
        pick: impl Fn(&candle_core::Storage) -> Option<&S>,
    ) -> Result<(S, candle_core::Shape)> {
        let (m, k) = layout.shape().dims2()?;
        let w = if self.backward { self.weight.clone() } else { self.weight.t()? };
        let n = w.dim(1)?;
        let (storage, wl) = w.storage_and_layout();
        let w = pick(&storage).ok_or_else(|| candle_core::Error::Msg("frozen matmul: weight and input on different devices".into()))?;
        Ok((x.matmul(w, (1, m, n, k), layout, wl)?, (m, n).into()))
    }

    /// The OpenBLAS path: only for contiguous f32 operands, and only when a BLAS was loaded.
    fn run_blas(
        &self,
        x: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Option<Result<(candle_core::CpuStorage, candle_core::Shape)>> {
        let blas = super::blas::blas()?;
        let (m, _) = layout.shape().dims2().ok()?;
        let (offset, end) = layout.contiguous_offsets()?;
        let x = &x.as_slice::<f32>().ok()?[offset..end];
        let (storage, wl) = self.weight.storage_and_layout();
        let (candle_core::Storage::Cpu(ws), Some((wa, wb))) = (&*storage, wl.contiguous_offsets()) else { return None };
        let w = &ws.as_slice::<f32>().ok()?[wa..wb];
        let (rows, cols) = self.weight.dims2().ok()?;
        Some(Ok(if self.backward {
            (candle_core::CpuStorage::F32(blas.dy_w(x, w, m, rows, cols)), (m, cols).into())
        } else {
            (candle_core::CpuStorage::F32(blas.x_wt(x, w, m, cols, rows)), (m, rows).into())
        }))
    }
}

impl candle_core::CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, x: &candle_core::CpuStorage, layout: &candle_core::Layout) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        if let Some(out) = self.run_blas(x, layout) {
            return out;
        }
        self.run(x, layout, |s| match s {
            candle_core::Storage::Cpu(c) => Some(c),
            _ => None,
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        self.run(x, layout, |s| match s {
            candle_core::Storage::Cuda(c) => Some(c),
            _ => None,
        })
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> Result<Option<Tensor>> {
        let back = FrozenMatmul { weight: self.weight.clone(), backward: true };
        Ok(Some(grad_y.contiguous()?.apply_op1_no_bwd(&back)?))
    }
}

/// x (rows, in) · Wᵀ with W frozen: no weight gradient is ever computed or held.
pub fn frozen_linear(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(FrozenMatmul { weight: weight.contiguous()?, backward: false })
}

#[cfg(test)]
mod frozen_tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn frozen_linear_matches_matmul_and_gives_only_the_input_gradient() -> Result<()> {
        let x = Var::randn(0f32, 1.0, (5, 7), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 1.0, (3, 7), &Device::Cpu)?;
        let ours = frozen_linear(x.as_tensor(), &w)?;
        let theirs = x.as_tensor().matmul(&w.t()?)?;
        assert!((&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        let g_ours = ours.sqr()?.sum_all()?.backward()?;
        let g_theirs = theirs.sqr()?.sum_all()?.backward()?;
        let (a, b) = (g_ours.get(x.as_tensor()).unwrap(), g_theirs.get(x.as_tensor()).unwrap());
        assert!((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
        assert!(g_ours.get(&w).is_none(), "no gradient may be computed for the frozen weight");
        Ok(())
    }
}

#[cfg(test)]
mod blas_tests {
    use super::*;
    use candle_core::{Device, Var};

    /// With OpenBLAS present (CI installs it; `WICK_REQUIRE_BLAS=1` makes its absence an error),
    /// the BLAS path gives the same values and input gradient as candle's matmul.
    #[test]
    fn blas_path_matches_candle_matmul() -> Result<()> {
        let loaded = crate::ops::blas::blas().is_some();
        if std::env::var("WICK_REQUIRE_BLAS").as_deref() == Ok("1") {
            assert!(loaded, "WICK_REQUIRE_BLAS=1 but no usable OpenBLAS was loaded (run scripts/install-openblas)");
        }
        let x = Var::randn(0f32, 1.0, (37, 53), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 1.0, (29, 53), &Device::Cpu)?;
        let y = frozen_linear(x.as_tensor(), &w)?;
        let reference = x.as_tensor().matmul(&w.t()?)?;
        assert!((&y - &reference)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
        let probe = Tensor::randn(0f32, 1.0, (37, 29), &Device::Cpu)?;
        let g = (&y * &probe)?.sum_all()?.backward()?;
        let expected = probe.matmul(&w)?;
        assert!((g.get(x.as_tensor()).unwrap() - expected)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
        Ok(())
    }
}
