//! Differentiable building blocks of the decoder.
//!
//! candle_nn's fused rms_norm / softmax_last_dim / rotary ops record no backward, so gradients
//! would silently stop at them. The composites in this file are built only from ops that do have
//! a backward; they are the reference and the path for non-f32 dtypes on CPU. [`fused`] holds single-pass
//! CustomOps with their own backward (the fast path), [`frozen_linear`] skips frozen weights' dW,
//! and [`lora_linear`] runs a frozen projection and its adapter as one op.

mod attention;
pub mod blas;
mod bmm;
#[cfg(feature = "cuda")]
mod cuda;
mod frozen;
pub mod fused;
pub mod half_gemm;
mod lora_linear;
pub mod onednn;
pub mod self_check;

pub use attention::{inference_attention, inference_attention_applies, inference_attention_cached};
pub use bmm::{batched_matmul, batched_matmul_applies, batched_matmul_backward};
pub use frozen::{frozen_linear, frozen_linear_backward, frozen_linear_bounded, half_bounds};
pub use half_gemm::{HalfBounds, half_gemm_available};
pub use lora_linear::{DropoutMask, lora_linear, lora_linear_applies, lora_linear_backward, lora_linear_forward};
pub use onednn::bf16_gemm_available;

use candle_core::{D, DType, Result, Tensor};

/// Make glibc's malloc keep freed activation buffers for reuse. By default it serves buffers
/// above a (moving) threshold with fresh mmaps and trims freed heap tops back to the kernel, so
/// a training step — which allocates and frees ~1 GB of activations and gradients — page-faults
/// every buffer in again and has the kernel zero it. Call from `main` before other threads
/// start; a no-op off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
        // 32 MiB is glibc's largest mmap threshold (above every activation buffer here).
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

/// RMSNorm as HF computes it: normalise in f32, cast back, then scale by the weight.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let mean_sq = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = xf.broadcast_mul(&(mean_sq + eps)?.sqrt()?.recip()?)?;
    normed.to_dtype(dtype)?.broadcast_mul(weight)
}

/// Softmax over the last dimension, computed in f32 for stability, returned in the input dtype.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let max = xf.max_keepdim(D::Minus1)?;
    let exp = xf.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_keepdim(D::Minus1)?;
    exp.broadcast_div(&sum)?.to_dtype(dtype)
}

/// log-softmax over the last dimension, in f32.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let xf = x.to_dtype(DType::F32)?;
    let max = xf.max_keepdim(D::Minus1)?;
    let shifted = xf.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// SiLU(gate) * up, the SwiGLU activation of the Llama MLP.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    // silu(x) = x * sigmoid(x) = x / (1 + exp(-x)); built from ops with a backward.
    let sig = (gate.neg()?.exp()? + 1.0)?.recip()?;
    (gate * sig)? * up
}

/// Rotary position embedding tables (HF rotate-half layout), in f32.
#[derive(Debug, Clone)]
pub struct Rotary {
    /// cos(pos * inv_freq), shape (max_positions, head_dim / 2).
    cos: Tensor,
    /// sin(pos * inv_freq), shape (max_positions, head_dim / 2).
    sin: Tensor,
    /// The same tables as flat f32 rows, for the fused op.
    tables: fused::RopeTables,
}

impl Rotary {
    /// Precompute the tables for `max_positions` positions.
    pub fn new(head_dim: usize, theta: f64, max_positions: usize, device: &candle_core::Device) -> Result<Self> {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64) as f32).collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let pos = Tensor::arange(0u32, max_positions as u32, device)?.to_dtype(DType::F32)?.reshape((max_positions, 1))?;
        let freqs = pos.broadcast_mul(&inv_freq)?;
        let (cos, sin) = (freqs.cos()?, freqs.sin()?);
        let tables = fused::RopeTables {
            cos: std::sync::Arc::new(cos.flatten_all()?.to_vec1()?),
            sin: std::sync::Arc::new(sin.flatten_all()?.to_vec1()?),
            half,
            gpu: device.is_cuda().then(|| (cos.clone(), sin.clone())),
        };
        Ok(Self { cos, sin, tables })
    }

    /// Number of positions the tables cover.
    pub fn max_positions(&self) -> usize {
        self.cos.dim(0).unwrap_or(0)
    }

    /// Rotate `x` of shape (batch, heads, seq, head_dim) for positions `offset..offset+seq`.
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (_, _, seq, head_dim) = x.dims4()?;
        let half = head_dim / 2;
        let cos = self.cos.narrow(0, offset, seq)?;
        let sin = self.sin.narrow(0, offset, seq)?;
        let cos = Tensor::cat(&[&cos, &cos], 1)?.to_dtype(x.dtype())?;
        let sin = Tensor::cat(&[&sin, &sin], 1)?.to_dtype(x.dtype())?;
        let x1 = x.narrow(3, 0, half)?;
        let x2 = x.narrow(3, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], 3)?;
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    }

    /// Rotate a projection output `x` (batch, seq, heads, head_dim) for positions
    /// `offset..offset+seq` and return it head-major, (batch, heads, seq, head_dim), contiguous.
    pub fn to_heads(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        fused::rope_to_heads(x, &self.tables, offset, |heads| self.apply(heads, offset)?.contiguous())
    }

    /// The gradient of [`Rotary::to_heads`]'s input from that of its output, graph-free (the
    /// fused path's hand-written backward).
    pub fn to_heads_backward(&self, dy: &Tensor, offset: usize) -> Result<Tensor> {
        fused::rope_to_heads_backward(dy, &self.tables, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn composites_match_candle_fused_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 5, 7), &dev)?;
        let w = Tensor::randn(0f32, 1.0, 7, &dev)?;
        let ours = rms_norm(&x, &w, 1e-5)?;
        let theirs = candle_nn::ops::rms_norm(&x, &w, 1e-5)?;
        assert!((ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        let ours = softmax_last_dim(&x)?;
        let theirs = candle_nn::ops::softmax_last_dim(&x)?;
        assert!((ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-6);
        let ours = swiglu(&x, &x.sqr()?)?;
        let theirs = (candle_nn::ops::silu(&x)? * x.sqr()?)?;
        assert!((ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        Ok(())
    }

    #[test]
    fn rotary_matches_candle_rope() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, t, d) = (2, 3, 6, 8);
        let x = Tensor::randn(0f32, 1.0, (b, h, t, d), &dev)?;
        let rot = Rotary::new(d, 10_000.0, 32, &dev)?;
        let ours = rot.apply(&x, 4)?;
        let cos = rot.cos.narrow(0, 4, t)?;
        let sin = rot.sin.narrow(0, 4, t)?;
        let theirs = candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)?;
        assert!((ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        Ok(())
    }
}
