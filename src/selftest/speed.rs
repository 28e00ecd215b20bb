//! The speed figures of `wick selftest`: LoRA training and no-grad forward throughput of the
//! seeded random model at given batch × sequence sizes, and the dense matmul rate measured with
//! the same frozen-weight matmul the model runs (cuBLAS on CUDA), in the same process. MFU is on
//! the 4N basis: a LoRA step over a frozen base costs 2N FLOP per token forward and 2N backward
//! (dX only).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use super::training::{TrainingSetup, fixed_batch, random_model};
use crate::model::{ArchConfig, Batch, Llama};
use crate::train::optim::AdamW;

/// Throughput at one batch × sequence size.
#[derive(Debug, Clone, Serialize)]
pub struct SpeedFigure {
    /// Rows per batch.
    pub batch: usize,
    /// Tokens per row (no padding).
    pub seq: usize,
    /// Compute dtype.
    pub dtype: String,
    /// Timed steps (after one warm-up step).
    pub steps: usize,
    /// Median seconds per training step.
    pub train_step_s: f64,
    /// Training tokens per second.
    pub train_tokens_per_s: f64,
    /// No-grad forward tokens per second (median over the same number of passes).
    pub forward_tokens_per_s: f64,
    /// 4·N·tokens/s of training, TFLOP/s.
    pub train_tflops: f64,
    /// train_tflops as a share of the measured dense matmul rate.
    pub mfu_vs_measured: f64,
    /// train_tflops as a share of the stated peak, when one was given.
    pub mfu_vs_peak: Option<f64>,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() { f64::NAN } else { xs[xs.len() / 2] }
}

/// Best dense matmul rate in TFLOP/s of `frozen_linear` in `dtype` on `device`: an n × n × n
/// product, best of `reps` after a warm-up.
pub fn matmul_tflops(device: &Device, dtype: DType, n: usize, reps: usize) -> candle_core::Result<f64> {
    let x = Tensor::randn(0f32, 1.0, (n, n), device)?.to_dtype(dtype)?;
    let w = Tensor::randn(0f32, 1.0, (n, n), device)?.to_dtype(dtype)?;
    Ok(crate::bench::frozen_linear_flops(&x, &w, reps)? / 1e12)
}

/// Training and forward throughput of the random model at `batch` × `seq`, `steps` timed steps.
pub fn measure(
    cfg: &ArchConfig,
    setup: &TrainingSetup,
    dtype: DType,
    device: &Device,
    (batch, seq): (usize, usize),
    steps: usize,
    (matmul_rate, peak): (f64, Option<f64>),
) -> crate::error::Result<SpeedFigure> {
    let c = |what: &'static str| move |e: candle_core::Error| crate::error::Error::Model(format!("selftest speed {what}: {e}"));
    let mut model: Llama = random_model(cfg, setup.seed, dtype, device)?;
    let scale = crate::lora::lora_scale(2.0 * setup.r as f64, setup.r, false);
    model.add_lora(&["all-linear".to_string()], setup.r, scale, 0.0, setup.seed).map_err(c("LoRA"))?;
    let mut optimizer = AdamW::new(model.lora_vars(), 0.0).map_err(c("optimizer"))?;
    let lengths = vec![seq; batch];
    let input = fixed_batch(&lengths, cfg.vocab_size, device).map_err(c("batch"))?;
    let mut step_times = Vec::new();
    for step in 0..=steps {
        let start = Instant::now();
        let loss = crate::bench::label_loss(&model, &input, &lengths, &setup.label_ids, true).map_err(c("forward"))?;
        // A fixed scale: the figure is the step's cost, not the scaler's adaptation.
        let scaled = if dtype == DType::F16 && device.is_cuda() { (loss * 1024.0).map_err(c("scaling"))? } else { loss };
        let store = model.backward(&scaled).map_err(c("backward"))?;
        let grads: Vec<Option<Tensor>> = optimizer.vars().iter().map(|(_, v)| store.get(v.as_tensor()).cloned()).collect();
        optimizer.step(&grads, 1e-5).map_err(c("optimizer step"))?;
        device.synchronize().map_err(c("sync"))?;
        if step > 0 {
            step_times.push(start.elapsed().as_secs_f64());
        }
    }
    let mut forward_times = Vec::new();
    for pass in 0..=steps {
        let start = Instant::now();
        let hidden = model.forward_hidden(&Batch { input_ids: &input, lengths: &lengths }, None, false).map_err(c("forward"))?;
        let logits = model.token_logits(&Llama::last_hidden(&hidden, &lengths).map_err(c("forward"))?, &setup.label_ids);
        logits.and_then(|l| l.to_dtype(DType::F32)?.to_vec2::<f32>()).map_err(c("forward"))?;
        if pass > 0 {
            forward_times.push(start.elapsed().as_secs_f64());
        }
    }
    let tokens = (batch * seq) as f64;
    let train_step_s = median(step_times);
    let train_tflops = 4.0 * cfg.non_embedding_params() as f64 * tokens / train_step_s / 1e12;
    Ok(SpeedFigure {
        batch,
        seq,
        dtype: format!("{dtype:?}").to_lowercase(),
        steps,
        train_step_s,
        train_tokens_per_s: tokens / train_step_s,
        forward_tokens_per_s: tokens / median(forward_times),
        train_tflops,
        mfu_vs_measured: train_tflops / matmul_rate,
        mfu_vs_peak: peak.map(|p| train_tflops / p),
    })
}
