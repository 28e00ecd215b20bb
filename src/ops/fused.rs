//! Fused decoder ops with a backward: RMSNorm, masked attention softmax, rotary embedding (fused
//! with the head transpose) and SwiGLU.
//!
//! Each op is a candle CustomOp whose forward and backward are single multithreaded passes over
//! contiguous f32 rows on CPU; every backward is itself a CustomOp, so autograd never records the
//! dozen intermediate tensors the composite versions in [`super`] allocate. The composites stay
//! as the reference (and the path for other dtypes and devices); tests check both agree in values
//! and gradients. With the `cuda` feature each op also has a `cuda_fwd`: the kernels in
//! `kernels/fused.cu` (f32, f16, bf16; launched from `super::cuda`) implement the same specs,
//! documented per op here and there; tests/gpu.rs checks them against these CPU twins.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::self_check::Kernel;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
#[cfg(feature = "cuda")]
use {super::cuda, candle_core::CudaStorage};

static USE_COMPOSITES: AtomicBool = AtomicBool::new(false);

/// Route every op through the composite reference instead (for `wick bench --reference-ops`).
pub fn use_composites(on: bool) {
    USE_COMPOSITES.store(on, Ordering::Relaxed);
}

/// True when fused kernels exist for `x`'s device and dtype: f32 on CPU, f32/f16/bf16 on CUDA
/// (with the `cuda` feature).
fn kernels_exist(x: &Tensor) -> bool {
    if USE_COMPOSITES.load(Ordering::Relaxed) {
        return false;
    }
    match x.device() {
        candle_core::Device::Cpu => x.dtype() == DType::F32,
        candle_core::Device::Cuda(_) => cfg!(feature = "cuda") && matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16),
        _ => false,
    }
}

/// True when `kernel`'s fused version runs for `x`: it exists for the device and dtype and passed
/// its first-use check there ([`super::self_check`]); an error under `--strict-kernels`.
pub fn kernel_applies(kernel: Kernel, x: &Tensor) -> Result<bool> {
    Ok(kernels_exist(x) && super::self_check::trusted(kernel, x.device(), x.dtype(), || check_kernel(kernel, x.device(), x.dtype()))?)
}

/// True when every fused kernel runs for `x` (what the hand-written layer backward and the
/// whole-layer op need); anything else uses the composites.
pub fn fused_applies(x: &Tensor) -> bool {
    kernels_exist(x)
        && Kernel::ALL
            .iter()
            .all(|&k| super::self_check::trusted(k, x.device(), x.dtype(), || check_kernel(k, x.device(), x.dtype())).unwrap_or(false))
}

/// A fused output, made wrong when the test-only switch breaks its kernel.
fn maybe_broken(kernel: Kernel, y: Tensor) -> Result<Tensor> {
    if super::self_check::broken(kernel) { y + 1.0 } else { Ok(y) }
}

/// One run of `kernel` on a tiny input with odd sizes on `device` in `dtype`, fused against the
/// composite: the largest absolute difference over outputs and input gradients.
pub(super) fn check_kernel(kernel: Kernel, device: &candle_core::Device, dtype: DType) -> Result<f32> {
    use candle_core::Var;
    let rand = |shape: &[usize], seed: u64| -> Result<Tensor> {
        let v = super::self_check::uniform_values(shape.iter().product(), seed);
        Tensor::from_vec(v, shape, device)?.to_dtype(dtype)
    };
    let diff = |a: &Tensor, b: &Tensor| -> Result<f32> {
        (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    };
    // Runs `f` on fresh Vars of `inputs`, sums the output weighted by fixed values of its shape
    // (the same for both paths), returns (output, input grads).
    let run = |inputs: &[Tensor], f: &dyn Fn(&[Tensor]) -> Result<Tensor>| -> Result<(Tensor, Vec<Tensor>)> {
        let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts)?;
        let weight = rand(y.dims(), 7)?.to_dtype(DType::F32)?;
        let grads = (y.to_dtype(DType::F32)? * weight)?.sum_all()?.backward()?;
        let g = vars
            .iter()
            .map(|v| grads.get(v.as_tensor()).cloned().ok_or_else(|| candle_core::Error::Msg("no gradient".into())))
            .collect::<Result<_>>()?;
        Ok((y, g))
    };
    let (inputs, fused, composite): (Vec<Tensor>, Box<dyn Fn(&[Tensor]) -> Result<Tensor>>, Box<dyn Fn(&[Tensor]) -> Result<Tensor>>) =
        match kernel {
            Kernel::RmsNorm => (
                vec![rand(&[3, 5, 37], 1)?, (rand(&[37], 2)? + 1.5)?],
                Box::new(|t: &[Tensor]| fused_rms_norm(&t[0], &t[1], 1e-5)),
                Box::new(|t: &[Tensor]| super::rms_norm(&t[0], &t[1], 1e-5)),
            ),
            Kernel::MaskedSoftmax => {
                // Two rows of a batch with a 2-token shared prefix, 3 queries, one padded row.
                let lengths = vec![3usize, 1];
                let l2 = lengths.clone();
                (
                    vec![(rand(&[2, 3, 3, 5], 3)? * 3.0)?],
                    Box::new(move |t: &[Tensor]| fused_masked_softmax(&t[0], &lengths, 0.7)),
                    Box::new(move |t: &[Tensor]| masked_softmax_composite(&t[0], &l2, 0.7)),
                )
            }
            Kernel::Rope => {
                let rotary = super::Rotary::new(10, 10_000.0, 16, device)?;
                let r2 = rotary.clone();
                (
                    vec![rand(&[2, 5, 3, 10], 4)?],
                    Box::new(move |t: &[Tensor]| fused_rope(&t[0], &rotary.tables, 3)),
                    Box::new(move |t: &[Tensor]| r2.apply(&t[0].transpose(1, 2)?, 3)),
                )
            }
            Kernel::Swiglu => (
                vec![(rand(&[3, 41], 5)? * 4.0)?, rand(&[3, 41], 6)?],
                Box::new(|t: &[Tensor]| fused_swiglu(&t[0], &t[1])),
                Box::new(|t: &[Tensor]| super::swiglu(&t[0], &t[1])),
            ),
        };
    let (yf, gf) = run(&inputs, fused.as_ref())?;
    let (yc, gc) = run(&inputs, composite.as_ref())?;
    let mut worst = diff(&yf, &yc)?;
    for (a, b) in gf.iter().zip(&gc) {
        worst = worst.max(diff(a, b)?);
    }
    // A NaN difference must fail the check, not pass every comparison.
    Ok(if worst.is_nan() { f32::INFINITY } else { worst })
}

/// The contiguous f32 slice of a (locked) storage, or an error naming the op when it is not on
/// the CPU or not contiguous.
pub fn storage_slice<'a>(s: &'a candle_core::Storage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match s {
        candle_core::Storage::Cpu(c) => slice(c, l, op),
        _ => candle_core::bail!("{op}: operands must be on the CPU"),
    }
}

/// The contiguous f32 slice of a CPU storage, or an error naming the op.
pub fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// e^x to within 2 ulp (Cephes' expf: x = n·ln2 + r, |r| ≤ ln2/2, degree-5 polynomial for e^r,
/// 2^n through the exponent bits). Branch-free, so loops over it vectorise; libm's scalar expf
/// was 8% of a few-shot scoring profile.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest by adding and subtracting 1.5·2^23 (exact for |v| < 2^22): `f32::round`
    // is a libm call that stops the loops around this function from vectorising.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let e_r = p * r * r + r + 1.0;
    e_r * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Rows per rayon task: enough work per task to amortise scheduling.
fn rows_per_task(row_len: usize) -> usize {
    (16_384 / row_len.max(1)).max(1)
}

// ---------------------------------------------------------------------------------------------
// RMSNorm.  Spec: x (rows, d), w (d); y = x · rsqrt(mean(x²) + eps) · w.
// Backward: with r = rsqrt(mean(x²)+eps), x̂ = x·r, g = dy·w:
//   dx = r · (g − x̂ · mean(g·x̂)),   dw = Σ_rows dy·x̂ (only when w is trainable).
// ---------------------------------------------------------------------------------------------

struct RmsNorm {
    eps: f32,
}

fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ss: f32 = row.iter().map(|v| v * v).sum();
    1.0 / (ss / row.len() as f32 + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "wick-rms-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let d = w.len();
        if d == 0 || x.len() % d != 0 {
            candle_core::bail!("rms norm: input of {} values is not rows of {d}", x.len());
        }
        let mut y = Vec::with_capacity(x.len());
        let out = &mut y.spare_capacity_mut()[..x.len()];
        out.par_chunks_mut(d * rows_per_task(d)).zip(x.par_chunks(d * rows_per_task(d))).for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_mut(d).zip(xc.chunks(d)) {
                let r = inv_rms(xr, self.eps);
                for ((yv, xv), wv) in yr.iter_mut().zip(xr).zip(w) {
                    yv.write(xv * r * wv);
                }
            }
        });
        // SAFETY: x holds whole rows of d, so the rows cover `out` and every element was written.
        unsafe { y.set_len(x.len()) };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        cuda::rms_norm_fwd(s1, l1, s2, l2, self.eps)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = x.apply_op3_no_bwd(w, &dy.contiguous()?, &RmsNormBwd { eps: self.eps })?;
        // A frozen norm weight (the LoRA case) gets no gradient buffer at all.
        let dw = if w.track_op() {
            // In f32 whatever the storage dtype (a no-op for f32), cast back to w's dtype.
            let d = w.dim(0)?;
            let xf = x.reshape(((), d))?.to_dtype(DType::F32)?;
            let r = xf.sqr()?.mean_keepdim(1)?.affine(1.0, self.eps as f64)?.sqrt()?.recip()?;
            Some((dy.reshape(((), d))?.to_dtype(DType::F32)? * xf.broadcast_mul(&r)?)?.sum(0)?.to_dtype(w.dtype())?)
        } else {
            None
        };
        Ok((Some(dx), dw))
    }
}

struct RmsNormBwd {
    eps: f32,
}

/// dx of RMSNorm over rows of x (rows × d), plus `residual` when given (a residual branch's
/// gradient summed in the same pass), into a new vector.
fn rms_bwd_rows(x: &[f32], w: &[f32], dy: &[f32], eps: f32, residual: Option<&[f32]>) -> Vec<f32> {
    let d = w.len();
    let chunk = d * rows_per_task(d);
    let mut dx = Vec::with_capacity(x.len());
    let out = &mut dx.spare_capacity_mut()[..x.len()];
    out.par_chunks_mut(chunk).zip(x.par_chunks(chunk).zip(dy.par_chunks(chunk))).enumerate().for_each(|(c, (dxc, (xc, dyc)))| {
        for (i, ((dxr, xr), dyr)) in dxc.chunks_mut(d).zip(xc.chunks(d)).zip(dyc.chunks(d)).enumerate() {
            let r = inv_rms(xr, eps);
            let dot: f32 = xr.iter().zip(dyr).zip(w).map(|((xv, g), wv)| xv * r * g * wv).sum::<f32>() / d as f32;
            let row = c * chunk + i * d;
            match residual {
                Some(res) => {
                    for ((((o, xv), g), wv), rv) in dxr.iter_mut().zip(xr).zip(dyr).zip(w).zip(&res[row..row + d]) {
                        o.write(rv + r * (g * wv - xv * r * dot));
                    }
                }
                None => {
                    for (((o, xv), g), wv) in dxr.iter_mut().zip(xr).zip(dyr).zip(w) {
                        o.write(r * (g * wv - xv * r * dot));
                    }
                }
            }
        }
    });
    // SAFETY: the chunks cover `out` and every element of every row was written.
    unsafe { dx.set_len(x.len()) };
    dx
}

impl CustomOp3 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "wick-rms-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, dy) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        Ok((CpuStorage::F32(rms_bwd_rows(x, w, dy, self.eps, None)), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        cuda::rms_norm_bwd(s1, l1, s2, l2, s3, l3, self.eps)
    }
}

/// dx of [`rms_norm`] for a frozen weight, plus `residual` when given (the gradient a residual
/// connection carries around the norm, summed in the same pass), without recording a graph:
/// the CPU kernel of hand-written backward passes. x, dy and residual are (rows, d).
pub fn rms_norm_backward(x: &Tensor, weight: &Tensor, dy: &Tensor, eps: f64, residual: Option<&Tensor>) -> Result<Tensor> {
    let (x, weight, dy) = (x.contiguous()?, weight.contiguous()?, dy.contiguous()?);
    let residual = residual.map(Tensor::contiguous).transpose()?;
    if dy.elem_count() != x.elem_count() || residual.as_ref().is_some_and(|r| r.elem_count() != x.elem_count()) {
        candle_core::bail!("rms norm backward: gradient shapes do not match the input {:?}", x.shape());
    }
    const OP: &str = "rms norm backward";
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = weight.storage_and_layout();
    let (ds, dl) = dy.storage_and_layout();
    let (xv, wv, dv) = (storage_slice(&xs, xl, OP)?, storage_slice(&ws, wl, OP)?, storage_slice(&ds, dl, OP)?);
    let dx = match &residual {
        Some(r) => {
            let (rs, rl) = r.storage_and_layout();
            rms_bwd_rows(xv, wv, dv, eps as f32, Some(storage_slice(&rs, rl, OP)?))
        }
        None => rms_bwd_rows(xv, wv, dv, eps as f32, None),
    };
    Tensor::from_vec(dx, x.shape(), x.device())
}

/// RMSNorm over the last dimension: fused where [`fused_applies`], the composite elsewhere.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if !kernel_applies(Kernel::RmsNorm, x)? {
        return super::rms_norm(x, weight, eps);
    }
    fused_rms_norm(x, weight, eps)
}

fn fused_rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    maybe_broken(Kernel::RmsNorm, x.contiguous()?.apply_op2(&weight.contiguous()?, RmsNorm { eps: eps as f32 })?)
}

// ---------------------------------------------------------------------------------------------
// Masked attention softmax.  Spec: scores (b, h, t, s) with s = prefix + t; row (bi, hi, i) may
// attend key j iff j < prefix, or (j − prefix ≤ i and j − prefix < len[bi]) — a shared prefix,
// causal order and right padding. p = softmax(scale · scores) over allowed keys, 0 elsewhere; a
// row with no allowed key is all 0.  Backward: dx = scale · p · (dy − Σ_k dy_k p_k).
// ---------------------------------------------------------------------------------------------

struct MaskedSoftmax {
    lengths: Arc<Vec<usize>>,
    heads: usize,
    scale: f32,
}

impl MaskedSoftmax {
    /// Number of allowed keys for each row index of a (b, h, t, s) tensor.
    fn allowed(&self, row: usize, t: usize, s: usize) -> (usize, usize) {
        let prefix = s - t;
        let (bi, i) = (row / (self.heads * t), row % t);
        // Allowed keys are exactly 0..prefix + min(i + 1, len): a prefix of the row.
        (prefix, (i + 1).min(self.lengths[bi]))
    }
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "wick-masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let (_, _, t, keys) = l.shape().dims4()?;
        let mut p = vec![0f32; x.len()];
        let per = rows_per_task(keys);
        p.par_chunks_mut(keys * per).zip(x.par_chunks(keys * per)).enumerate().for_each(|(c, (pc, xc))| {
            for (k, (pr, xr)) in pc.chunks_mut(keys).zip(xc.chunks(keys)).enumerate() {
                let (prefix, own) = self.allowed(c * per + k, t, keys);
                let n = prefix + own;
                if n == 0 {
                    continue;
                }
                let max = xr[..n].iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * self.scale;
                // Two loops: the first vectorises; a running sum would serialise it.
                for (pv, xv) in pr[..n].iter_mut().zip(&xr[..n]) {
                    *pv = fast_exp(xv * self.scale - max);
                }
                let sum: f32 = pr[..n].iter().sum();
                let inv = 1.0 / sum;
                pr[..n].iter_mut().for_each(|v| *v *= inv);
            }
        });
        Ok((CpuStorage::F32(p), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        cuda::masked_softmax_fwd(s, l, &self.lengths, self.heads, self.scale)
    }

    fn bwd(&self, _x: &Tensor, p: &Tensor, dp: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(masked_softmax_backward(p, dp, f64::from(self.scale))?))
    }
}

struct SoftmaxBwd {
    scale: f32,
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "wick-masked-softmax-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (p, dp) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let keys = l1.shape().dims().last().copied().unwrap_or(1);
        let chunk = keys * rows_per_task(keys);
        let mut dx = vec![0f32; p.len()];
        dx.par_chunks_mut(chunk).zip(p.par_chunks(chunk).zip(dp.par_chunks(chunk))).for_each(|(dxc, (pc, dpc))| {
            for ((dxr, pr), dpr) in dxc.chunks_mut(keys).zip(pc.chunks(keys)).zip(dpc.chunks(keys)) {
                let dot: f32 = pr.iter().zip(dpr).map(|(a, b)| a * b).sum();
                for ((o, pv), g) in dxr.iter_mut().zip(pr).zip(dpr) {
                    *o = self.scale * pv * (g - dot);
                }
            }
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        cuda::masked_softmax_bwd(s1, l1, s2, l2, self.scale)
    }
}

/// d(scores) of [`masked_softmax`] from its probabilities `p` and their gradient `dp`, without
/// recording a graph: the op's own backward, and the hand-written layer backward's.
pub fn masked_softmax_backward(p: &Tensor, dp: &Tensor, scale: f64) -> Result<Tensor> {
    p.contiguous()?.apply_op2_no_bwd(&dp.contiguous()?, &SoftmaxBwd { scale: scale as f32 })
}

/// Attention probabilities from raw scores (b, h, t, prefix + t): scaled, masked for the shared
/// prefix, causality and right padding (`lengths[b]` real tokens), softmaxed in f32.
pub fn masked_softmax(scores: &Tensor, lengths: &[usize], scale: f64) -> Result<Tensor> {
    let (b, _, t, s) = scores.dims4()?;
    if lengths.len() != b || s < t {
        candle_core::bail!("masked softmax: {} lengths for batch {b}, {s} keys for {t} queries", lengths.len());
    }
    if !kernel_applies(Kernel::MaskedSoftmax, scores)? {
        return masked_softmax_composite(scores, lengths, scale);
    }
    fused_masked_softmax(scores, lengths, scale)
}

fn fused_masked_softmax(scores: &Tensor, lengths: &[usize], scale: f64) -> Result<Tensor> {
    let heads = scores.dims4()?.1;
    let op = MaskedSoftmax { lengths: Arc::new(lengths.to_vec()), heads, scale: scale as f32 };
    maybe_broken(Kernel::MaskedSoftmax, scores.contiguous()?.apply_op1(op)?)
}

/// Attention probabilities from raw scores (b, h, t, s) and an additive bias (b, 1, t, s) of 0
/// (allowed) and −1e30 (masked): scaled, biased and softmaxed in f32, as composite ops. For masks
/// that [`masked_softmax`]'s lengths cannot express (generation's left padding); inference only.
pub fn biased_softmax(scores: &Tensor, bias: &Tensor, scale: f64) -> Result<Tensor> {
    let logits = (scores.to_dtype(DType::F32)? * scale)?.broadcast_add(bias)?;
    super::softmax_last_dim(&logits)?.to_dtype(scores.dtype())
}

/// The reference: an additive bias and the composite softmax, in f32. The bias is finite
/// (−1e30, not −inf) so a fully masked row yields a uniform row, zeroed by the row mask, instead
/// of NaN values and NaN gradients.
pub fn masked_softmax_composite(scores: &Tensor, lengths: &[usize], scale: f64) -> Result<Tensor> {
    let (b, _, t, s) = scores.dims4()?;
    let prefix = s - t;
    let mut bias = vec![0f32; b * t * s];
    let mut row_mask = vec![1f32; b * t];
    for (bi, &len) in lengths.iter().enumerate() {
        for i in 0..t {
            let allowed = prefix + (i + 1).min(len);
            bias[(bi * t + i) * s + allowed..(bi * t + i + 1) * s].fill(-1e30);
            row_mask[bi * t + i] = if allowed == 0 { 0.0 } else { 1.0 };
        }
    }
    let dev = scores.device();
    let bias = Tensor::from_vec(bias, (b, 1, t, s), dev)?;
    let row_mask = Tensor::from_vec(row_mask, (b, 1, t, 1), dev)?;
    let logits = (scores.to_dtype(DType::F32)? * scale)?.broadcast_add(&bias)?;
    super::softmax_last_dim(&logits)?.broadcast_mul(&row_mask)?.to_dtype(scores.dtype())
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding fused with the head transpose.  Spec: x (b, t, h, d) as the projection
// writes it → y (b, h, t, d), for positions offset..offset+t, HF rotate-half layout with
// c = cos[pos][i], s = sin[pos][i], i < d/2:  y[i] = x[i]·c − x[i+d/2]·s,  y[i+d/2] = x[i+d/2]·c + x[i]·s.
// Backward: the inverse rotation (s → −s) and the transpose back to (b, t, h, d).
// ---------------------------------------------------------------------------------------------

/// cos/sin tables, (positions, d/2) row-major, shared by every rotary op.
#[derive(Debug, Clone)]
pub struct RopeTables {
    /// cos(pos · inv_freq).
    pub cos: Arc<Vec<f32>>,
    /// sin(pos · inv_freq).
    pub sin: Arc<Vec<f32>>,
    /// d/2.
    pub half: usize,
    /// The same (cos, sin) as f32 (positions, d/2) tensors on the GPU, for the CUDA kernel; None
    /// on CPU (the rotary op then takes the composite on a GPU).
    pub gpu: Option<(Tensor, Tensor)>,
}

struct Rope {
    tables: RopeTables,
    offset: usize,
    /// true: (b, t, h, d) → (b, h, t, d) forward rotation; false: the backward.
    forward: bool,
}

impl Rope {
    fn rotate(&self, src: &[f32], dst: &mut [f32], pos: usize) {
        let half = self.tables.half;
        let (c, s) = (&self.tables.cos[pos * half..(pos + 1) * half], &self.tables.sin[pos * half..(pos + 1) * half]);
        let sign = if self.forward { 1.0 } else { -1.0 };
        for i in 0..half {
            let (x1, x2, si) = (src[i], src[i + half], s[i] * sign);
            dst[i] = x1 * c[i] - x2 * si;
            dst[i + half] = x2 * c[i] + x1 * si;
        }
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "wick-rope"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(st, l, self.name())?;
        let d = self.tables.half * 2;
        let mut y = vec![0f32; x.len()];
        if self.forward {
            let (b, t, h, _) = l.shape().dims4()?;
            // One task per (batch, head): it writes that head's (t, d) block of y.
            y.par_chunks_mut(t * d).enumerate().for_each(|(bh, yc)| {
                let (bi, hi) = (bh / h, bh % h);
                for ti in 0..t {
                    let src = &x[((bi * t + ti) * h + hi) * d..][..d];
                    self.rotate(src, &mut yc[ti * d..(ti + 1) * d], self.offset + ti);
                }
            });
            Ok((CpuStorage::F32(y), Shape::from((b, h, t, d))))
        } else {
            let (b, h, t, _) = l.shape().dims4()?;
            // One task per (batch, position): it writes that position's (h, d) block of dx.
            y.par_chunks_mut(h * d).enumerate().for_each(|(bt, yc)| {
                let (bi, ti) = (bt / t, bt % t);
                for hi in 0..h {
                    let src = &x[((bi * h + hi) * t + ti) * d..][..d];
                    self.rotate(src, &mut yc[hi * d..(hi + 1) * d], self.offset + ti);
                }
            });
            Ok((CpuStorage::F32(y), Shape::from((b, t, h, d))))
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let Some((cos, sin)) = &self.tables.gpu else { candle_core::bail!("wick-rope: no rotary tables on the GPU") };
        cuda::rope(s, l, cos, sin, self.offset, self.forward)
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(rope_to_heads_backward(dy, &self.tables, self.offset)?))
    }
}

/// The gradient of [`rope_to_heads`]'s input, (b, t, heads, d), from that of its output
/// (b, heads, t, d), without recording a graph: the op's own backward, and the hand-written
/// layer backward's.
pub fn rope_to_heads_backward(dy: &Tensor, tables: &RopeTables, offset: usize) -> Result<Tensor> {
    dy.contiguous()?.apply_op1_no_bwd(&Rope { tables: tables.clone(), offset, forward: false })
}

/// Rotate `x` (b, t, heads, d) for positions `offset..` and return it as (b, heads, t, d).
/// `composite` computes the same with candle ops (for other dtypes and devices).
pub fn rope_to_heads(x: &Tensor, tables: &RopeTables, offset: usize, composite: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let (_, t, _, d) = x.dims4()?;
    if d != tables.half * 2 || (offset + t) * tables.half > tables.cos.len() {
        candle_core::bail!("rotary: head dim {d} or positions {} exceed the tables", offset + t);
    }
    if (x.device().is_cuda() && tables.gpu.is_none()) || !kernel_applies(Kernel::Rope, x)? {
        return composite(&x.transpose(1, 2)?);
    }
    fused_rope(x, tables, offset)
}

fn fused_rope(x: &Tensor, tables: &RopeTables, offset: usize) -> Result<Tensor> {
    maybe_broken(Kernel::Rope, x.contiguous()?.apply_op1(Rope { tables: tables.clone(), offset, forward: true })?)
}

// ---------------------------------------------------------------------------------------------
// SwiGLU.  Spec: y = silu(g) · u with silu(g) = g·σ(g).
// Backward: dg = dy · u · σ(g) · (1 + g·(1 − σ(g))),  du = dy · g · σ(g).
// ---------------------------------------------------------------------------------------------

struct Swiglu;

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-v))
}

const SWIGLU_CHUNK: usize = 16_384;

impl CustomOp2 for Swiglu {
    fn name(&self) -> &'static str {
        "wick-swiglu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (g, u) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        if u.len() != g.len() {
            candle_core::bail!("swiglu: gate and up differ in size");
        }
        let mut y = Vec::with_capacity(g.len());
        let out = &mut y.spare_capacity_mut()[..g.len()];
        out.par_chunks_mut(SWIGLU_CHUNK).zip(g.par_chunks(SWIGLU_CHUNK).zip(u.par_chunks(SWIGLU_CHUNK))).for_each(|(yc, (gc, uc))| {
            for ((o, gv), uv) in yc.iter_mut().zip(gc).zip(uc) {
                o.write(gv * sigmoid(*gv) * uv);
            }
        });
        // SAFETY: the chunks cover all of `out` and each element was written.
        unsafe { y.set_len(g.len()) };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        cuda::swiglu_fwd(s1, l1, s2, l2)
    }

    fn bwd(&self, g: &Tensor, u: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dg, du) = swiglu_backward(g, u, dy)?;
        Ok((Some(dg), Some(du)))
    }
}

struct SwigluBwd;

impl CustomOp3 for SwigluBwd {
    fn name(&self) -> &'static str {
        "wick-swiglu-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, u, dy) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        let n = g.len();
        if u.len() != n || dy.len() != n {
            candle_core::bail!("swiglu backward: gate, up and gradient differ in size");
        }
        let mut out = Vec::with_capacity(2 * n);
        let (dg, du) = out.spare_capacity_mut()[..2 * n].split_at_mut(n);
        dg.par_chunks_mut(SWIGLU_CHUNK).zip(du.par_chunks_mut(SWIGLU_CHUNK)).enumerate().for_each(|(c, (dgc, duc))| {
            let base = c * SWIGLU_CHUNK;
            for k in 0..dgc.len() {
                let (gv, uv, dv) = (g[base + k], u[base + k], dy[base + k]);
                let s = sigmoid(gv);
                dgc[k].write(dv * uv * s * (1.0 + gv * (1.0 - s)));
                duc[k].write(dv * gv * s);
            }
        });
        // SAFETY: both halves are covered by the chunks and every element was written.
        unsafe { out.set_len(2 * n) };
        let mut dims = vec![2];
        dims.extend_from_slice(l1.shape().dims());
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        cuda::swiglu_bwd(s1, l1, s2, l2, s3, l3)
    }
}

/// (d gate, d up) of [`swiglu`], without recording a graph: the op's own backward, and the
/// hand-written layer backward's.
pub fn swiglu_backward(gate: &Tensor, up: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    // One pass writes both gradients, stacked on a new leading axis.
    let both = gate.contiguous()?.apply_op3_no_bwd(&up.contiguous()?, &dy.contiguous()?, &SwigluBwd)?;
    Ok((both.get(0)?, both.get(1)?))
}

/// SiLU(gate) · up: fused where [`fused_applies`], the composite elsewhere.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !kernel_applies(Kernel::Swiglu, gate)? {
        return super::swiglu(gate, up);
    }
    fused_swiglu(gate, up)
}

fn fused_swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    maybe_broken(Kernel::Swiglu, gate.contiguous()?.apply_op2(&up.contiguous()?, Swiglu)?)
}

#[cfg(test)]
mod tests {
    use super::{DType, Kernel, check_kernel};

    #[test]
    fn every_cpu_kernel_passes_its_own_check() {
        for k in Kernel::ALL {
            let diff = check_kernel(k, &candle_core::Device::Cpu, DType::F32).unwrap();
            assert!(diff <= k.tolerance(DType::F32), "{}: {diff}", k.name());
            assert!(diff.is_finite());
        }
    }

    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0f64;
        for i in -87_000..88_000 {
            let x = i as f32 / 1000.0 + 0.000_37;
            let (ours, exact) = (super::fast_exp(x) as f64, (x as f64).exp());
            worst = worst.max(((ours - exact) / exact).abs());
        }
        assert!(worst < 4e-7, "max relative error {worst}");
        assert_eq!(super::fast_exp(-1e9), super::fast_exp(-87.0));
        assert!(super::fast_exp(1e9).is_finite());
    }
}
