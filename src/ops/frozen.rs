//! Frozen linear layers whose backward skips the weight gradient.

use candle_core::{Result, Tensor};

/// x·Wᵀ for a frozen weight W (out, in): the backward returns only the input gradient grad·W.
///
/// candle's matmul backward always computes the gradient of both operands, so a frozen weight
/// would still cost a full dW (6N instead of 4N FLOP per token) and a dW buffer per layer.
struct FrozenMatmul {
    weight: Tensor,
}

impl FrozenMatmul {
    fn run<S: candle_core::backend::BackendStorage>(
        &self,
        x: &S,
        layout: &candle_core::Layout,
        pick: impl Fn(&candle_core::Storage) -> Option<&S>,
    ) -> Result<(S, candle_core::Shape)> {
        let (m, k) = layout.shape().dims2()?;
        let wt = self.weight.t()?;
        let n = wt.dim(1)?;
        let (storage, wl) = wt.storage_and_layout();
        let w = pick(&storage).ok_or_else(|| candle_core::Error::Msg("frozen matmul: weight and input on different devices".into()))?;
        Ok((x.matmul(w, (1, m, n, k), layout, wl)?, (m, n).into()))
    }
}

impl candle_core::CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, x: &candle_core::CpuStorage, layout: &candle_core::Layout) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
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
        Ok(Some(grad_y.matmul(&self.weight)?))
    }
}

/// x (rows, in) · Wᵀ with W frozen: no weight gradient is ever computed or held.
pub fn frozen_linear(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(FrozenMatmul { weight: weight.clone() })
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
