//! LoRA with HF PEFT's exact semantics: y = W·x + b + s·B·A·dropout(x).
//!
//! A is (r × in) kaiming-uniform with a = √5 (bound 1/√in), B is (out × r) zeros, s = alpha/r
//! (alpha/√r with rsLoRA). Adapter tensors are f32 `Var`s (the trainable masters); the frozen
//! base weight stays in the compute dtype.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::ops::DropoutMask;

/// The projections LoRA may target, in PEFT's module names.
pub const TARGETABLE: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// Expand a `target_modules` list (`all-linear` means every projection) into module names.
pub fn expand_targets(targets: &[String]) -> Vec<&'static str> {
    if targets.iter().any(|t| t == "all-linear") {
        return TARGETABLE.to_vec();
    }
    TARGETABLE.iter().copied().filter(|m| targets.iter().any(|t| t == m)).collect()
}

/// Scale s of the adapter output: alpha/r, or alpha/√r with rsLoRA.
pub fn lora_scale(alpha: f64, r: usize, use_rslora: bool) -> f64 {
    if use_rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 }
}

/// Seeded source of dropout masks, shared by every adapter of a model so a run is reproducible
/// (candle's CPU RNG cannot be seeded) and its state can be checkpointed.
#[derive(Debug)]
pub struct DropoutRng {
    /// (seed, generator); the seed is kept because ChaCha's expanded seed cannot be inverted.
    rng: Mutex<(u64, ChaCha8Rng)>,
}

impl DropoutRng {
    /// A generator at the start of the stream of `seed`.
    pub fn new(seed: u64) -> Self {
        Self { rng: Mutex::new((seed, ChaCha8Rng::seed_from_u64(seed))) }
    }

    /// (seed, word position): enough to restore the stream exactly.
    pub fn state(&self) -> (u64, u128) {
        let guard = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        (guard.0, guard.1.get_word_pos())
    }

    /// Restore a state returned by [`DropoutRng::state`].
    pub fn restore(&self, seed: u64, word_pos: u128) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_word_pos(word_pos);
        *self.rng.lock().unwrap_or_else(|e| e.into_inner()) = (seed, rng);
    }

    /// Inverted-dropout mask of `x`'s shape: 0 with probability p, else 1/(1-p).
    fn mask_like(&self, x: &Tensor, p: f64) -> Result<Tensor> {
        let mask = self.keep_mask(x.elem_count(), p);
        let values: Vec<f32> = (0..mask.keep.len()).map(|i| mask.factor(i)).collect();
        Tensor::from_vec(values, x.shape(), x.device())?.to_dtype(x.dtype())
    }

    /// Which of `n` inputs dropout keeps (each dropped with probability p), from 32 random bits
    /// per input drawn in bulk: a per-element float draw was ~10% of a training step.
    pub fn keep_mask(&self, n: usize, p: f64) -> crate::ops::DropoutMask {
        // Words per parallel block: each block's generator is moved to its own place in the
        // stream, so the mask is the one a single pass draws (bit for bit), made on every core.
        const BLOCK: usize = 1 << 16;
        let threshold = (p * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
        let mut guard = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let (base, start) = (guard.1.clone(), guard.1.get_word_pos());
        let mut keep = vec![0u8; n];
        keep.par_chunks_mut(BLOCK).enumerate().for_each(|(i, block)| {
            let mut rng = base.clone();
            rng.set_word_pos(start + (i * BLOCK) as u128);
            let mut words = [0u32; 1024];
            for chunk in block.chunks_mut(words.len()) {
                let words = &mut words[..chunk.len()];
                rng.fill(words);
                chunk.iter_mut().zip(words.iter()).for_each(|(k, &w)| *k = u8::from(w >= threshold));
            }
        });
        guard.1.set_word_pos(start + n as u128);
        crate::ops::DropoutMask { keep, scale: (1.0 / (1.0 - p)) as f32 }
    }
}

/// A LoRA adapter on one projection.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// A, shape (r, in), f32.
    pub a: Var,
    /// B, shape (out, r), f32.
    pub b: Var,
    /// Output scale s.
    pub scale: f64,
    /// Dropout probability on the adapter input (training only).
    pub dropout: f64,
}

impl LoraAdapter {
    /// The dropout mask of a training pass over `n` adapter inputs (None without dropout).
    fn dropout_mask(&self, n: usize, rng: &DropoutRng) -> Option<Arc<DropoutMask>> {
        (self.dropout > 0.0).then(|| Arc::new(rng.keep_mask(n, self.dropout)))
    }
}

/// An adapter's (dA, dB).
pub type AdapterGrads = (Tensor, Tensor);

/// What a projection's hand-written backward needs from its forward.
#[derive(Debug, Default)]
pub struct HandState {
    /// The adapter input's dropout mask.
    mask: Option<Arc<DropoutMask>>,
    /// u = (x∘mask)·Aᵀ, rows × r (saves recomputing it in the backward).
    u: Option<Vec<f32>>,
}

/// A frozen linear projection with an optional LoRA adapter.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    /// Frozen weight, shape (out, in), in the compute dtype.
    weight: Tensor,
    /// Frozen bias (Qwen2's q/k/v), shape (out).
    bias: Option<Tensor>,
    /// The adapter, when this module is targeted.
    adapter: Option<LoraAdapter>,
    /// True while the adapter is folded into `weight`.
    merged: bool,
    /// Overflow bounds of an f16 weight (the f16 CPU path), kept in step with `weight`.
    half_bounds: Option<crate::ops::HalfBounds>,
}

impl LoraLinear {
    /// A plain frozen projection.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let half_bounds = crate::ops::half_bounds(&weight)?;
        Ok(Self { weight, bias, adapter: None, merged: false, half_bounds })
    }

    fn set_weight(&mut self, weight: Tensor) -> Result<()> {
        self.half_bounds = crate::ops::half_bounds(&weight)?;
        self.weight = weight;
        Ok(())
    }

    /// The frozen weight (merged with the adapter while merged).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The frozen bias.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The adapter, if any.
    pub fn adapter(&self) -> Option<&LoraAdapter> {
        self.adapter.as_ref()
    }

    /// Attach a fresh adapter: A kaiming-uniform(a=√5) from `rng`, B = 0.
    pub fn add_adapter(&mut self, r: usize, scale: f64, dropout: f64, rng: &mut ChaCha8Rng) -> Result<()> {
        let (out_dim, in_dim) = self.weight.dims2()?;
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a: Vec<f32> = (0..r * in_dim).map(|_| rng.random_range(-bound..bound) as f32).collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (r, in_dim), self.weight.device())?)?;
        let b = Var::zeros((out_dim, r), DType::F32, self.weight.device())?;
        self.adapter = Some(LoraAdapter { a, b, scale, dropout });
        Ok(())
    }

    /// Detach the adapter, unmerging it first when it was merged.
    pub fn clear_adapter(&mut self) -> Result<()> {
        self.unmerge()?;
        self.adapter = None;
        Ok(())
    }

    /// Attach an adapter with given A and B (loading a checkpoint).
    pub fn set_adapter(&mut self, a: Tensor, b: Tensor, scale: f64, dropout: f64) -> Result<()> {
        let (out_dim, in_dim) = self.weight.dims2()?;
        let r = a.dim(0)?;
        if a.dims() != [r, in_dim] || b.dims() != [out_dim, r] {
            candle_core::bail!("adapter shapes A {:?} / B {:?} do not fit a ({out_dim} × {in_dim}) projection", a.dims(), b.dims());
        }
        let a = Var::from_tensor(&a.to_dtype(DType::F32)?)?;
        let b = Var::from_tensor(&b.to_dtype(DType::F32)?)?;
        self.adapter = Some(LoraAdapter { a, b, scale, dropout });
        Ok(())
    }

    /// s·B·A in the weight's dtype: the update merging adds to W.
    fn delta_weight(adapter: &LoraAdapter, dtype: DType) -> Result<Tensor> {
        (adapter.b.as_tensor().matmul(adapter.a.as_tensor())? * adapter.scale)?.to_dtype(dtype)
    }

    /// W + s·B·A without changing this projection (what an export writes).
    pub fn merged_weight(&self) -> Result<Tensor> {
        match (&self.adapter, self.merged) {
            (Some(adapter), false) => {
                let w = self.weight.to_dtype(DType::F32)?;
                (&w + Self::delta_weight(adapter, DType::F32)?)?.to_dtype(self.weight.dtype())
            }
            _ => Ok(self.weight.clone()),
        }
    }

    /// Fold the adapter into W (PEFT's merge); forward then skips the adapter.
    pub fn merge(&mut self) -> Result<()> {
        if let (Some(adapter), false) = (&self.adapter, self.merged) {
            let merged = (&self.weight + Self::delta_weight(adapter, self.weight.dtype())?)?;
            self.set_weight(merged)?;
            self.merged = true;
        }
        Ok(())
    }

    /// Undo [`LoraLinear::merge`].
    pub fn unmerge(&mut self) -> Result<()> {
        if let (Some(adapter), true) = (&self.adapter, self.merged) {
            let unmerged = (&self.weight - Self::delta_weight(adapter, self.weight.dtype())?)?;
            self.set_weight(unmerged)?;
            self.merged = false;
        }
        Ok(())
    }

    /// True when [`LoraLinear::hand_forward`] / [`LoraLinear::hand_backward`] can run on `x`:
    /// f32 on the CPU with a BLAS (and MKL's hgemm for an f16 weight).
    pub fn hand_pass_applies(&self, x: &Tensor) -> bool {
        crate::ops::lora_linear_applies(x, &self.weight)
    }

    /// The adapter that takes part in a forward (none while merged).
    fn active_adapter(&self) -> Option<&LoraAdapter> {
        self.adapter.as_ref().filter(|_| !self.merged)
    }

    /// The forward of a hand-written training pass on x (rows, in), graph-free: y and what
    /// [`LoraLinear::hand_backward`] needs back (the dropout mask drawn from `dropout`, and u).
    pub fn hand_forward(&self, x: &Tensor, dropout: &DropoutRng) -> Result<(Tensor, HandState)> {
        let (y, state) = match self.active_adapter() {
            Some(ad) => {
                let mask = ad.dropout_mask(x.elem_count(), dropout);
                let (a, b) = (ad.a.as_tensor().detach(), ad.b.as_tensor().detach());
                let (y, u) = crate::ops::lora_linear_forward(x, &self.weight, self.half_bounds, &a, &b, ad.scale, mask.clone())?;
                (y, HandState { mask, u: Some(u) })
            }
            None => (crate::ops::frozen_linear_bounded(x, &self.weight, self.half_bounds)?, HandState::default()),
        };
        Ok((if let Some(bias) = &self.bias { y.broadcast_add(bias)? } else { y }, state))
    }

    /// The backward of [`LoraLinear::hand_forward`] under dy (rows, out): dx (rows × in,
    /// row-major; added onto `acc` when given), and the adapter's (dA, dB) when it has one.
    pub fn hand_backward(
        &self,
        x: &Tensor,
        state: &HandState,
        dy: &Tensor,
        acc: Option<Vec<f32>>,
    ) -> Result<(Vec<f32>, Option<AdapterGrads>)> {
        match self.active_adapter() {
            Some(ad) => {
                let (a, b) = (ad.a.as_tensor().detach(), ad.b.as_tensor().detach());
                let (mask, u) = (state.mask.clone(), state.u.as_deref());
                let (dx, da, db) = crate::ops::lora_linear_backward(x, &self.weight, self.half_bounds, &a, &b, ad.scale, mask, u, dy, acc)?;
                Ok((dx, Some((da, db))))
            }
            None => Ok((crate::ops::frozen_linear_backward(dy, &self.weight, self.half_bounds, acc)?, None)),
        }
    }

    /// y = x·Wᵀ + b + s·dropout(x)·Aᵀ·Bᵀ for x of shape (..., in).
    pub fn forward(&self, x: &Tensor, dropout: Option<&DropoutRng>) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().unwrap_or(&0);
        let rows = x.elem_count() / in_dim.max(1);
        let x2 = x.reshape((rows, in_dim))?;
        let adapter = self.active_adapter();
        let fused = adapter.is_some() && crate::ops::lora_linear_applies(&x2, &self.weight);
        // Without a dropout generator this is an inference forward: detached factors (same
        // storage) keep autograd from recording the pass and holding every activation.
        let factors = |ad: &LoraAdapter| match dropout {
            Some(_) => (ad.a.as_tensor().clone(), ad.b.as_tensor().clone()),
            None => (ad.a.as_tensor().detach(), ad.b.as_tensor().detach()),
        };
        let mut y = match adapter {
            Some(ad) if fused => {
                let mask = dropout.and_then(|rng| ad.dropout_mask(x2.elem_count(), rng));
                let (a, b) = factors(ad);
                crate::ops::lora_linear(&x2, &self.weight, self.half_bounds, &a, &b, ad.scale, mask)?
            }
            _ => crate::ops::frozen_linear_bounded(&x2, &self.weight, self.half_bounds)?,
        };
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        if let Some(adapter) = adapter.filter(|_| !fused) {
            let dtype = x.dtype();
            let xin = match dropout {
                Some(rng) if adapter.dropout > 0.0 => (&x2 * rng.mask_like(&x2, adapter.dropout)?)?,
                _ => x2.clone(),
            };
            let (a, b) = factors(adapter);
            let (a, b) = (a.to_dtype(dtype)?, b.to_dtype(dtype)?);
            let delta = xin.matmul(&a.t()?)?.matmul(&b.t()?)?;
            y = (y + (delta * adapter.scale)?)?;
        }
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = y.dim(1)?;
        }
        y.reshape(out_dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn kaiming_bound_and_zero_b() -> Result<()> {
        let w = Tensor::randn(0f32, 1.0, (6, 100), &Device::Cpu)?;
        let mut lin = LoraLinear::new(w, None)?;
        lin.add_adapter(4, 2.0, 0.0, &mut ChaCha8Rng::seed_from_u64(1))?;
        let ad = lin.adapter().unwrap();
        let max = ad.a.as_tensor().abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(max <= 0.1 && max > 0.08, "max |A| = {max}, bound 1/sqrt(100)");
        assert_eq!(ad.b.as_tensor().abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
        Ok(())
    }

    #[test]
    fn dropout_rng_restores_stream() -> Result<()> {
        let x = Tensor::ones((4, 8), DType::F32, &Device::Cpu)?;
        let rng = DropoutRng::new(9);
        rng.mask_like(&x, 0.5)?;
        let (seed, pos) = rng.state();
        let next = rng.mask_like(&x, 0.5)?.to_vec2::<f32>()?;
        let again = DropoutRng::new(0);
        again.restore(seed, pos);
        assert_eq!(again.mask_like(&x, 0.5)?.to_vec2::<f32>()?, next);
        Ok(())
    }

    /// Masks drawn in parallel blocks are the masks of one sequential pass over the stream (a
    /// mask spanning several blocks, then one after it), and the generator ends where that pass
    /// would leave it.
    #[test]
    fn parallel_masks_are_the_sequential_draw() {
        let (n, p) = (3 * (1 << 16) + 1_234, 0.3);
        let threshold = (p * 4_294_967_296.0f64).round() as u32;
        let mut stream = ChaCha8Rng::seed_from_u64(5);
        let mut sequential = |len: usize| -> Vec<u8> {
            let mut words = vec![0u32; len];
            stream.fill(words.as_mut_slice());
            words.iter().map(|&w| u8::from(w >= threshold)).collect()
        };
        let (first, second) = (sequential(n), sequential(777));
        let rng = DropoutRng::new(5);
        assert_eq!(rng.keep_mask(n, p).keep, first);
        assert_eq!(rng.keep_mask(777, p).keep, second);
        assert_eq!(rng.state().1, (n + 777) as u128);
        let kept = first.iter().filter(|&&k| k == 1).count() as f64 / n as f64;
        assert!((kept - 0.7).abs() < 0.01, "kept {kept}");
    }

    #[test]
    fn scale_follows_peft() {
        assert_eq!(lora_scale(16.0, 8, false), 2.0);
        assert_eq!(lora_scale(16.0, 4, true), 8.0);
        assert_eq!(expand_targets(&["all-linear".into()]).len(), 7);
        assert_eq!(expand_targets(&["v_proj".into(), "q_proj".into()]), vec!["q_proj", "v_proj"]);
    }
}
