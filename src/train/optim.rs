//! AdamW on f32 masters, the learning-rate schedule, global-norm clipping and dynamic loss scaling.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};

use crate::config::Schedule;

/// AdamW (decoupled weight decay, bias-corrected moments), moments always in f32.
///
/// candle_nn's AdamW keeps moments in the variable's dtype; wick's trainable tensors are f32
/// masters anyway, and the moments must be saved and restored bit-exactly for resume.
#[derive(Debug)]
pub struct AdamW {
    /// (name, variable) in a fixed order.
    vars: Vec<(String, Var)>,
    /// First moments, by variable index.
    m: Vec<Tensor>,
    /// Second moments, by variable index.
    v: Vec<Tensor>,
    /// Steps taken (for bias correction).
    pub step: usize,
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay λ.
    pub weight_decay: f64,
}

impl AdamW {
    /// Optimiser over `vars` (all must be f32) with zero moments.
    pub fn new(vars: Vec<(String, Var)>, weight_decay: f64) -> Result<Self> {
        let mut m = Vec::with_capacity(vars.len());
        for (name, var) in &vars {
            if var.dtype() != DType::F32 {
                candle_core::bail!("{name}: trainable tensors must be f32 masters, got {:?}", var.dtype());
            }
            m.push(var.zeros_like()?);
        }
        let v = m.clone();
        Ok(Self { vars, m, v, step: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay })
    }

    /// The optimised variables.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// One update with learning rate `lr` from gradients keyed by variable index.
    /// θ ← θ − lr·λ·θ − lr · m̂ / (√v̂ + ε), m̂ = m/(1−β1ᵗ), v̂ = v/(1−β2ᵗ).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = &grads[i] else { continue };
            let g = g.to_dtype(DType::F32)?;
            self.m[i] = ((&self.m[i] * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
            self.v[i] = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let m_hat = (&self.m[i] / bc1)?;
            let v_hat = (&self.v[i] / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * self.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// Moments keyed `<name>.exp_avg` / `<name>.exp_avg_sq`, for checkpoints.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("{name}.exp_avg"), self.m[i].clone());
            out.insert(format!("{name}.exp_avg_sq"), self.v[i].clone());
        }
        out
    }

    /// Restore moments saved by [`AdamW::state_tensors`] and the step count.
    pub fn restore(&mut self, tensors: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let get = |k: String| tensors.get(&k).cloned().ok_or_else(|| candle_core::Error::Msg(format!("optimizer state lacks {k}")));
            let m = get(format!("{name}.exp_avg"))?;
            let v = get(format!("{name}.exp_avg_sq"))?;
            if m.dims() != var.dims() || v.dims() != var.dims() {
                candle_core::bail!("optimizer state of {name} has shape {:?}, variable {:?}", m.dims(), var.dims());
            }
            self.m[i] = m.to_device(var.device())?;
            self.v[i] = v.to_device(var.device())?;
        }
        self.step = step;
        Ok(())
    }
}

/// Learning rate at optimiser step `step` (0-based): linear warmup to `peak`, then cosine or
/// linear decay to `peak·min_ratio` at `total`, or constant.
pub fn learning_rate(step: usize, total: usize, warmup: usize, peak: f64, min_ratio: f64, schedule: Schedule) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let floor = peak * min_ratio;
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    match schedule {
        Schedule::Cosine => floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        Schedule::Linear => floor + (peak - floor) * (1.0 - progress),
        Schedule::Constant => peak,
    }
}

/// The last step of a schedule that fits a wall-clock budget: `steps_done` steps took
/// `elapsed_s` of `budget_s` seconds, each further step costs `step_s`, and a dev evaluation
/// (`eval_s`) follows every `eval_every` steps and the last one. Never below `steps_done + 1`.
pub fn steps_within_budget(budget_s: f64, elapsed_s: f64, steps_done: usize, step_s: f64, eval_s: f64, eval_every: usize) -> usize {
    // 3% slack: the step time is measured on the first steps of a run, and machines drift.
    let left = budget_s * 0.97 - elapsed_s - eval_s;
    let per_step = step_s + eval_s / eval_every.max(1) as f64;
    let more = if left > 0.0 && per_step > 0.0 { (left / per_step).floor() as usize } else { 0 };
    steps_done + more.max(1)
}

/// Sum of squared entries of every gradient, as the global L2 norm.
pub fn global_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    let mut total = 0f64;
    for g in grads.iter().flatten() {
        total += g.to_dtype(DType::F32)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(total.sqrt())
}

/// Scale gradients so their global norm is at most `max_norm` (PyTorch's clip_grad_norm_).
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], norm: f64, max_norm: f64) -> Result<()> {
    if max_norm > 0.0 && norm > max_norm {
        let coef = max_norm / (norm + 1e-6);
        for g in grads.iter_mut().flatten() {
            *g = (&*g * coef)?;
        }
    }
    Ok(())
}

/// Add a micro-batch's gradients of `vars` into the running sums.
pub fn accumulate(sums: &mut [Option<Tensor>], store: &GradStore, vars: &[(String, Var)]) -> Result<()> {
    for (slot, (_, var)) in sums.iter_mut().zip(vars) {
        if let Some(g) = store.get(var.as_tensor()) {
            *slot = Some(match slot.take() {
                Some(s) => (s + g)?,
                None => g.clone(),
            });
        }
    }
    Ok(())
}

/// Dynamic loss scaling with PyTorch GradScaler semantics: start at 2^16; a step whose gradients
/// hold inf/nan is skipped and the scale halves; after 2000 clean steps in a row it doubles.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScaler {
    /// Current scale (1 when disabled).
    pub scale: f64,
    /// Clean steps since the last change.
    pub growth_tracker: usize,
    /// Whether scaling is on (f16 only).
    pub enabled: bool,
    /// Steps skipped so far.
    pub skipped: usize,
}

impl LossScaler {
    /// Clean steps before the scale doubles.
    pub const GROWTH_INTERVAL: usize = 2000;

    /// A scaler at 2^16 when `enabled`, else a no-op with scale 1.
    pub fn new(enabled: bool) -> Self {
        Self { scale: if enabled { 65536.0 } else { 1.0 }, growth_tracker: 0, enabled, skipped: 0 }
    }

    /// Unscale gradients in place; returns false (skip the step) when any is inf/nan.
    pub fn unscale(&self, grads: &mut [Option<Tensor>]) -> Result<bool> {
        let mut finite = true;
        for g in grads.iter_mut().flatten() {
            let g32 = g.to_dtype(DType::F32)?;
            let s = g32.sum_all()?.to_scalar::<f32>()?;
            if !s.is_finite() {
                finite = false;
            }
            *g = if self.enabled { (g32 / self.scale)? } else { g32 };
        }
        Ok(finite)
    }

    /// Record the outcome of a step and adjust the scale.
    pub fn update(&mut self, finite: bool) {
        if !self.enabled {
            return;
        }
        if finite {
            self.growth_tracker += 1;
            if self.growth_tracker == Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.growth_tracker = 0;
            }
        } else {
            self.scale /= 2.0;
            self.growth_tracker = 0;
            self.skipped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adamw_step_matches_hand_computation() -> Result<()> {
        let var = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu)?)?;
        let mut opt = AdamW::new(vec![("w".into(), var.clone())], 0.1)?;
        let g = Tensor::new(&[0.5f32, -1.0], &Device::Cpu)?;
        opt.step(&[Some(g.clone())], 0.01)?;
        // Step 1: m̂ = g, v̂ = g², update = g/(|g|+ε) = sign(g); θ = θ(1 − lr·λ) − lr·sign(g).
        let want = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01];
        let got = var.as_tensor().to_vec1::<f32>()?;
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        // Step 2 with gradient 0: m = 0.9·0.1·g... computed by the formula in f64.
        opt.step(&[Some(g.zeros_like()?)], 0.01)?;
        let (b1, b2): (f64, f64) = (0.9, 0.999);
        for (i, gi) in [0.5f64, -1.0].iter().enumerate() {
            let m = b1 * (1.0 - b1) * gi;
            let v = b2 * (1.0 - b2) * gi * gi;
            let upd = (m / (1.0 - b1 * b1)) / ((v / (1.0 - b2 * b2)).sqrt() + 1e-8);
            let want2 = want[i] * (1.0 - 0.001) - 0.01 * upd;
            let got2 = var.as_tensor().to_vec1::<f32>()?[i] as f64;
            assert!((got2 - want2).abs() < 1e-6, "step 2 [{i}]: {got2} vs {want2}");
        }
        Ok(())
    }

    #[test]
    fn budget_sizing() {
        // 1,200 s budget, 5 steps took 20 s, 4 s a step, 40 s an eval every 50 steps:
        // (1164 − 20 − 40) / (4 + 0.8) = 230 more steps.
        assert_eq!(steps_within_budget(1200.0, 20.0, 5, 4.0, 40.0, 50), 235);
        // Already over budget: one more step, so the run still ends on an evaluated step.
        assert_eq!(steps_within_budget(60.0, 100.0, 5, 4.0, 40.0, 50), 6);
        // No evaluation cost: the whole budget is steps.
        assert_eq!(steps_within_budget(100.0, 0.0, 0, 1.0, 0.0, 50), 97);
    }

    #[test]
    fn schedule_values() {
        let lr = |s, sched| learning_rate(s, 110, 10, 1e-3, 0.1, sched);
        assert!((lr(0, Schedule::Cosine) - 1e-4).abs() < 1e-12);
        assert!((lr(9, Schedule::Cosine) - 1e-3).abs() < 1e-12);
        assert!((lr(10, Schedule::Cosine) - 1e-3).abs() < 1e-12);
        assert!((lr(60, Schedule::Cosine) - 0.55e-3).abs() < 1e-12);
        assert!((lr(110, Schedule::Cosine) - 1e-4).abs() < 1e-12);
        assert!((lr(60, Schedule::Linear) - 0.55e-3).abs() < 1e-12);
        assert!((lr(35, Schedule::Linear) - (1e-4 + 0.9e-3 * 0.75)).abs() < 1e-12);
        assert!((lr(500, Schedule::Constant) - 1e-3).abs() < 1e-12);
    }

    #[test]
    fn clipping_bounds_the_global_norm() -> Result<()> {
        let mut grads = vec![Some(Tensor::new(&[3.0f32], &Device::Cpu)?), None, Some(Tensor::new(&[4.0f32], &Device::Cpu)?)];
        let norm = global_norm(&grads)?;
        assert!((norm - 5.0).abs() < 1e-6);
        clip_grad_norm(&mut grads, norm, 1.0)?;
        assert!((global_norm(&grads)? - 1.0).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn loss_scaler_skips_inf_and_halves_then_grows() -> Result<()> {
        let mut s = LossScaler::new(true);
        let mut grads = vec![Some(Tensor::new(&[1.0f32, f32::INFINITY], &Device::Cpu)?)];
        assert!(!s.unscale(&mut grads)?, "an inf gradient must skip the step");
        s.update(false);
        assert_eq!((s.scale, s.skipped), (32768.0, 1));
        let mut grads = vec![Some(Tensor::new(&[65536.0f32], &Device::Cpu)?)];
        assert!(s.unscale(&mut grads)?);
        assert_eq!(grads[0].as_ref().unwrap().to_vec1::<f32>()?, vec![2.0]);
        for _ in 0..LossScaler::GROWTH_INTERVAL {
            s.update(true);
        }
        assert_eq!(s.scale, 65536.0);
        Ok(())
    }
}
