//! Frozen linear layers whose backward skips the weight gradient.

use candle_core::{CpuStorage, Result, Storage, Tensor};

use super::blas::Blas;
use super::half_gemm::{HalfBounds, dy_w_half, x_wt_half};
use super::onednn::{dy_w_bf16, x_wt_bf16};

/// x·Wᵀ for a frozen weight W (out, in): the backward returns only the input gradient grad·W.
///
/// candle's matmul backward always computes the gradient of both operands, so a frozen weight
/// would still cost a full dW (6N instead of 4N FLOP per token) and a dW buffer per layer.
struct FrozenMatmul {
    weight: Tensor,
    /// Overflow bounds of an f16 weight (the f16 CPU path, see `half_gemm`).
    bounds: Option<HalfBounds>,
    /// false: y = x·Wᵀ (the forward); true: dx = dy·W (its backward, recorded as no-grad).
    backward: bool,
}

/// A frozen weight's data on the CPU: f32 for sgemm, f16 (with its bounds) for hgemm, bf16 for
/// oneDNN's bf16 GEMM.
enum WeightData<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16], HalfBounds),
    Bf16(&'a [half::bf16]),
}

/// Run `f` on the contiguous CPU data of `weight` (f32, or f16 with `bounds`, computed when None).
fn with_weight<T>(weight: &Tensor, bounds: Option<HalfBounds>, f: impl FnOnce(WeightData) -> T) -> Result<T> {
    let (rows, cols) = weight.dims2()?;
    let (storage, layout) = weight.storage_and_layout();
    let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) else {
        candle_core::bail!("frozen weight must be contiguous on the CPU")
    };
    Ok(match cpu {
        CpuStorage::F32(v) => f(WeightData::F32(&v[a..b])),
        CpuStorage::F16(v) => {
            let w = &v[a..b];
            f(WeightData::F16(w, bounds.unwrap_or_else(|| HalfBounds::of(w, rows, cols))))
        }
        CpuStorage::BF16(v) => f(WeightData::Bf16(&v[a..b])),
        _ => candle_core::bail!("frozen weight of dtype {:?} has no BLAS path", weight.dtype()),
    })
}

/// The [`HalfBounds`] of an f16 weight on the CPU (read in place), None for any other weight.
pub fn half_bounds(weight: &Tensor) -> Result<Option<HalfBounds>> {
    if !(weight.device().is_cpu() && weight.dtype() == candle_core::DType::F16) {
        return Ok(None);
    }
    with_weight(&weight.contiguous()?, None, |w| match w {
        WeightData::F16(_, bounds) => Some(bounds),
        WeightData::F32(_) | WeightData::Bf16(_) => None,
    })
}

/// oneDNN for a bf16 weight, or the error that says it is not loaded.
fn the_onednn() -> Result<&'static super::onednn::OneDnn> {
    super::onednn::onednn().ok_or_else(|| candle_core::Error::Msg("frozen matmul: bf16 weight but oneDNN is not loaded".into()))
}

/// y (m, out) = x (m, in) · Wᵀ on the BLAS: sgemm for an f32 W, hgemm for an f16 one, oneDNN's
/// bf16 GEMM for a bf16 one.
pub(super) fn blas_x_wt(blas: &Blas, x: &[f32], m: usize, weight: &Tensor, bounds: Option<HalfBounds>) -> Result<Vec<f32>> {
    let (n, k) = weight.dims2()?;
    with_weight(weight, bounds, |w| match w {
        WeightData::F32(w) => Ok(blas.x_wt(x, w, m, k, n)),
        WeightData::F16(w, b) => Ok(x_wt_half(blas, x, m, k, w, n, b)),
        WeightData::Bf16(w) => Ok(x_wt_bf16(the_onednn()?, x, m, k, w, n)),
    })?
}

/// dx (m, in) = dy (m, out) · W on the BLAS: sgemm for an f32 W, hgemm for an f16 one, oneDNN
/// for a bf16 one; added
/// onto `acc` (m × in) when given.
pub(super) fn blas_dy_w(
    blas: &Blas,
    dy: &[f32],
    m: usize,
    weight: &Tensor,
    bounds: Option<HalfBounds>,
    acc: Option<Vec<f32>>,
) -> Result<Vec<f32>> {
    let (n, k) = weight.dims2()?;
    with_weight(weight, bounds, |w| match (w, acc) {
        (WeightData::F32(w), None) => Ok(blas.dy_w(dy, w, m, n, k)),
        (WeightData::F32(w), Some(mut acc)) => {
            blas.gemm(dy, (m, n), false, w, (n, k), false, 1.0, 1.0, &mut acc);
            Ok(acc)
        }
        (WeightData::F16(w, b), None) => Ok(dy_w_half(blas, dy, m, n, w, k, b)),
        (WeightData::F16(w, b), Some(mut acc)) => {
            acc.iter_mut().zip(dy_w_half(blas, dy, m, n, w, k, b)).for_each(|(a, v)| *a += v);
            Ok(acc)
        }
        (WeightData::Bf16(w), acc) => Ok(dy_w_bf16(the_onednn()?, dy, m, n, w, k, acc)),
    })?
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

    /// The BLAS path: contiguous f32 input, f32 or f16 weight, and a BLAS loaded.
    fn run_blas(&self, x: &CpuStorage, layout: &candle_core::Layout) -> Option<Result<(CpuStorage, candle_core::Shape)>> {
        let blas = super::blas::blas()?;
        let (m, _) = layout.shape().dims2().ok()?;
        let (offset, end) = layout.contiguous_offsets()?;
        let x = &x.as_slice::<f32>().ok()?[offset..end];
        let (rows, cols) = self.weight.dims2().ok()?;
        let out = if self.backward {
            blas_dy_w(blas, x, m, &self.weight, self.bounds, None).map(|v| (CpuStorage::F32(v), (m, cols).into()))
        } else {
            blas_x_wt(blas, x, m, &self.weight, self.bounds).map(|v| (CpuStorage::F32(v), (m, rows).into()))
        };
        Some(out)
    }
}

impl candle_core::CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &candle_core::Layout) -> Result<(CpuStorage, candle_core::Shape)> {
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
        let back = FrozenMatmul { weight: self.weight.clone(), bounds: self.bounds, backward: true };
        Ok(Some(grad_y.contiguous()?.apply_op1_no_bwd(&back)?))
    }
}

/// dx = dy · W of [`frozen_linear_bounded`] (rows × in, row-major), without recording a graph
/// (hand-written passes); added onto `acc` when given. Needs a BLAS.
pub fn frozen_linear_backward(dy: &Tensor, weight: &Tensor, bounds: Option<HalfBounds>, acc: Option<Vec<f32>>) -> Result<Vec<f32>> {
    let blas = super::blas::blas().ok_or_else(|| candle_core::Error::Msg("frozen matmul: no BLAS loaded".into()))?;
    let (dy, weight) = (dy.contiguous()?, weight.contiguous()?);
    let (m, k) = (dy.elem_count() / weight.dim(0)?.max(1), weight.dim(1)?);
    if acc.as_ref().is_some_and(|a| a.len() != m * k) {
        candle_core::bail!("frozen matmul: gradient accumulator does not hold {m} × {k} values");
    }
    let (storage, layout) = dy.storage_and_layout();
    blas_dy_w(blas, super::fused::storage_slice(&storage, layout, "frozen matmul")?, m, &weight, bounds, acc)
}

/// x (rows, in) · Wᵀ with W frozen: no weight gradient is ever computed or held.
pub fn frozen_linear(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    frozen_linear_bounded(x, weight, None)
}

/// [`frozen_linear`] for an f16 weight whose [`HalfBounds`] the caller keeps (else they are
/// computed on every call).
pub fn frozen_linear_bounded(x: &Tensor, weight: &Tensor, bounds: Option<HalfBounds>) -> Result<Tensor> {
    x.contiguous()?.apply_op1(FrozenMatmul { weight: weight.contiguous()?, bounds, backward: false })
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

    /// With a BLAS present (CI installs it; `WICK_REQUIRE_BLAS` makes its absence an error),
    /// the BLAS path gives the same values and input gradient as candle's matmul.
    #[test]
    fn blas_path_matches_candle_matmul() -> Result<()> {
        let loaded = crate::ops::blas::blas().is_some();
        if crate::ops::blas::required_by_env().0 {
            assert!(loaded, "WICK_REQUIRE_BLAS is set but no usable BLAS was loaded (run scripts/install-mkl or install-openblas)");
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

    /// A bf16 weight (the CPU bf16 path on oneDNN): values and input gradient within bf16
    /// rounding of the f32 product with the same (rounded) weight, and no weight gradient. On a
    /// CPU without bf16 (or `WICK_CPU_BF16=off`) the path is not taken and a bf16 weight is refused
    /// with a clear error instead of a wrong result.
    #[test]
    fn bf16_weight_matches_f32_within_bfloat16_precision() -> Result<()> {
        let x = Var::randn(0f32, 1.0, (37, 53), &Device::Cpu)?;
        let w16 = Tensor::randn(0f32, 0.2, (29, 53), &Device::Cpu)?.to_dtype(candle_core::DType::BF16)?;
        let w32 = w16.to_dtype(candle_core::DType::F32)?;
        if !(crate::ops::bf16_gemm_available() && crate::ops::blas::blas().is_some()) {
            assert!(!crate::ops::lora_linear_applies(x.as_tensor(), &w16), "no oneDNN: the fused path must not claim a bf16 weight");
            return Ok(());
        }
        let y = frozen_linear(x.as_tensor(), &w16)?;
        let reference = x.as_tensor().matmul(&w32.t()?)?;
        let scale = reference.abs()?.max_all()?.to_scalar::<f32>()?;
        // x is rounded to bf16 (relative 2^-9 per element): the error grows like √k of that.
        assert!((&y - &reference)?.abs()?.max_all()?.to_scalar::<f32>()? < 2e-2 * scale);
        let probe = Tensor::randn(0f32, 1.0, (37, 29), &Device::Cpu)?;
        let g = (&y * &probe)?.sum_all()?.backward()?;
        let expected = probe.matmul(&w32)?;
        let scale = expected.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!((g.get(x.as_tensor()).unwrap() - expected)?.abs()?.max_all()?.to_scalar::<f32>()? < 2e-2 * scale);
        assert!(g.get(&w16).is_none());
        assert!(crate::ops::lora_linear_applies(x.as_tensor(), &w16));
        Ok(())
    }

    /// An f16 weight (the CPU f16 path on MKL's hgemm): values and input gradient within f16
    /// rounding of the f32 product with the same (rounded) weight, and still no weight gradient.
    #[test]
    fn f16_weight_matches_f32_within_half_precision() -> Result<()> {
        if !crate::ops::half_gemm_available() {
            assert!(!crate::ops::blas::required_by_env().1, "WICK_REQUIRE_BLAS=mkl but MKL's hgemm was not loaded");
            return Ok(());
        }
        let x = Var::randn(0f32, 1.0, (37, 53), &Device::Cpu)?;
        let w16 = Tensor::randn(0f32, 0.2, (29, 53), &Device::Cpu)?.to_dtype(candle_core::DType::F16)?;
        let w32 = w16.to_dtype(candle_core::DType::F32)?;
        let y = frozen_linear(x.as_tensor(), &w16)?;
        let reference = x.as_tensor().matmul(&w32.t()?)?;
        let scale = reference.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!((&y - &reference)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-2 * scale);
        let probe = Tensor::randn(0f32, 1.0, (37, 29), &Device::Cpu)?;
        let g = (&y * &probe)?.sum_all()?.backward()?;
        let expected = probe.matmul(&w32)?;
        let scale = expected.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!((g.get(x.as_tensor()).unwrap() - expected)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-2 * scale);
        assert!(g.get(&w16).is_none());
        Ok(())
    }
}
