//! The training check of `wick selftest`: a model of the real architecture with seeded random
//! weights, built the same on every machine from the architecture and a seed (no weight file),
//! trained for a few LoRA steps on a fixed ragged batch. The per-step losses and adapter gradient
//! norms are the figures a GPU run is held against the CPU's.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::config::WeightRole;
use crate::model::{ArchConfig, Llama};
use crate::ops::self_check::uniform_values;
use crate::train::optim::{AdamW, LossScaler, clip_grad_norm, global_norm};

/// What the check trains: fixed here so that both sides of a comparison run the same steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSetup {
    /// Seed of the weights and of the LoRA A matrices.
    pub seed: u64,
    /// Optimizer steps.
    pub steps: usize,
    /// Peak learning rate (constant).
    pub lr: f64,
    /// Real tokens per row; the batch is right-padded to the longest.
    pub lengths: Vec<usize>,
    /// Label-word token ids scored at each row's last token (row i's gold is label i mod n).
    pub label_ids: Vec<u32>,
    /// LoRA rank on all seven projections (alpha = 2r).
    pub r: usize,
}

impl TrainingSetup {
    /// The check's setup for a vocabulary of `vocab` tokens: 5 steps at lr 1e-4, rows of 40, 33,
    /// 21 and 9 tokens, four label words spread over the vocabulary, rank 8.
    pub fn for_vocab(vocab: usize) -> Self {
        let label_ids = (1..=4).map(|i| (i * vocab / 5) as u32).collect();
        Self { seed: 20261202, steps: 5, lr: 1e-4, lengths: vec![40, 33, 21, 9], label_ids, r: 8 }
    }
}

/// Skipped (inf/nan) steps tolerated before the trace gives up: 16 halvings take the loss scale
/// from 2^16 to 1.
const MAX_SKIPS: usize = 16;

/// The per-step figures of one training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingTrace {
    /// Compute dtype of the frozen base ("f32", "f16").
    pub dtype: String,
    /// Loss before each update.
    pub losses: Vec<f64>,
    /// Global norm of the (unscaled) adapter gradients at each update.
    pub grad_norms: Vec<f64>,
    /// Loss scale after each update (1 when scaling is off).
    pub loss_scales: Vec<f64>,
    /// Steps skipped for inf/nan gradients (not in the lists above).
    pub skipped: usize,
}

/// Largest relative differences accepted against the CPU f32 trace: (loss, gradient norm).
/// f32 elsewhere differs only by summation order: MKL, OpenBLAS and the gemm crate agree with
/// each other within 5e-7 on both figures, so 1e-4 / 1e-3 leave ~200× for a GPU's reduction
/// orders. f16 carries an 11-bit significand through every layer: the CPU f16 path (f16 weights,
/// f32 activations) is within 3e-3 of f32; a GPU's f16 activations get 10× that.
pub fn tolerances(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (1e-4, 1e-3),
        _ => (3e-2, 1e-1),
    }
}

/// HF-named tensors of a decoder with `cfg`'s shapes and seeded values: matrices uniform with
/// standard deviation 0.02 (HF's initializer_range), norm weights 1 ± 0.1, biases ±0.01. Made on
/// the CPU in f32, so every device starts from the same bits.
pub fn random_weights(cfg: &ArchConfig, seed: u64) -> candle_core::Result<HashMap<String, Tensor>> {
    // Uniform on [-a, a) has standard deviation a/√3.
    let matrix = 0.02 * 3f32.sqrt();
    let shapes = cfg.weight_shapes().into_iter().map(|(name, shape, role)| {
        let (scale, offset) = match role {
            WeightRole::Embedding | WeightRole::Projection | WeightRole::LmHead => (matrix, 0.0),
            WeightRole::Norm => (0.1, 1.0),
            WeightRole::Bias => (0.01, 0.0),
        };
        (name, shape, scale, offset)
    });
    let mut out = HashMap::new();
    for (i, (name, shape, scale, offset)) in shapes.enumerate() {
        let values: Vec<f32> =
            uniform_values(shape.iter().product(), seed ^ (i as u64 + 1)).into_iter().map(|x| offset + scale * x).collect();
        out.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    Ok(out)
}

/// The seeded random model of `cfg` on `device` in `dtype`.
pub fn random_model(cfg: &ArchConfig, seed: u64, dtype: DType, device: &Device) -> crate::error::Result<Llama> {
    let tensors = random_weights(cfg, seed).map_err(|e| crate::error::Error::Model(format!("random weights: {e}")))?;
    Llama::from_tensors(cfg.clone(), tensors, dtype, device)
}

/// The fixed batch: token ids spread over the vocabulary, right-padded with 0.
pub fn fixed_batch(lengths: &[usize], vocab: usize, device: &Device) -> candle_core::Result<Tensor> {
    let width = lengths.iter().copied().max().unwrap_or(1);
    let ids: Vec<u32> = lengths
        .iter()
        .enumerate()
        .flat_map(|(row, &len)| {
            (0..width).map(move |t| if t < len { ((row * width + t) as u64 * 7919 % (vocab as u64 - 2) + 1) as u32 } else { 0 })
        })
        .collect();
    Tensor::from_vec(ids, (lengths.len(), width), device)
}

/// Train `setup.steps` LoRA steps of the random model on `device` in `dtype` and record them.
/// The step is wick's: scaled loss, backward, unscale and skip on inf/nan, clip at 1, AdamW.
pub fn run_trace(cfg: &ArchConfig, setup: &TrainingSetup, dtype: DType, device: &Device) -> crate::error::Result<TrainingTrace> {
    let c = |what: &'static str| move |e: candle_core::Error| crate::error::Error::Model(format!("selftest training {what}: {e}"));
    let mut model = random_model(cfg, setup.seed, dtype, device)?;
    let scale = crate::lora::lora_scale(2.0 * setup.r as f64, setup.r, false);
    model.add_lora(&["all-linear".to_string()], setup.r, scale, 0.0, setup.seed).map_err(c("LoRA"))?;
    let mut optimizer = AdamW::new(model.lora_vars(), 0.0).map_err(c("optimizer"))?;
    let input = fixed_batch(&setup.lengths, cfg.vocab_size, device).map_err(c("batch"))?;
    // Only f16 activations need scaling: the CPU f16 path keeps them in f32.
    let mut scaler = LossScaler::new(crate::model::storage_dtypes(dtype, device).0 == DType::F16);
    let mut trace = TrainingTrace {
        dtype: format!("{dtype:?}").to_lowercase(),
        losses: Vec::new(),
        grad_norms: Vec::new(),
        loss_scales: Vec::new(),
        skipped: 0,
    };
    // A step skipped for inf/nan gradients (f16 at a loss scale too high) updates nothing, so the
    // trace records only the steps that updated: they must follow the f32 trajectory.
    let mut attempts = 0;
    while trace.losses.len() < setup.steps && attempts < setup.steps + MAX_SKIPS {
        attempts += 1;
        let loss = crate::bench::label_loss(&model, &input, &setup.lengths, &setup.label_ids, true).map_err(c("forward"))?;
        let scaled = (&loss * scaler.scale).map_err(c("loss scaling"))?;
        let store = model.backward(&scaled).map_err(c("backward"))?;
        let mut grads: Vec<Option<Tensor>> = optimizer.vars().iter().map(|(_, v)| store.get(v.as_tensor()).cloned()).collect();
        if let Some(((name, _), _)) = optimizer.vars().iter().zip(&grads).find(|(_, g)| g.is_none()) {
            return Err(crate::error::Error::Model(format!("selftest training: {name} got no gradient")));
        }
        let finite = scaler.unscale(&mut grads).map_err(c("unscale"))?;
        if finite {
            let norm = global_norm(&grads).map_err(c("gradient norm"))?;
            clip_grad_norm(&mut grads, norm, 1.0).map_err(c("clipping"))?;
            optimizer.step(&grads, setup.lr).map_err(c("optimizer step"))?;
            trace.losses.push(loss.to_dtype(DType::F32).and_then(|l| l.to_scalar::<f32>()).map_err(c("loss"))? as f64);
            trace.grad_norms.push(norm);
        }
        scaler.update(finite);
        if finite {
            trace.loss_scales.push(scaler.scale);
        }
    }
    trace.skipped = scaler.skipped;
    Ok(trace)
}

/// Worst relative differences of `trace` from `reference`: (loss, gradient norm). A missing step
/// (more skips than [`MAX_SKIPS`]) or a non-finite figure counts as infinitely far.
pub fn trace_diff(trace: &TrainingTrace, reference: &TrainingTrace) -> (f64, f64) {
    let worst = |a: &[f64], b: &[f64]| -> f64 {
        if a.len() != b.len() {
            return f64::INFINITY;
        }
        a.iter()
            .zip(b)
            .map(|(x, y)| if x.is_finite() && y.is_finite() { (x - y).abs() / y.abs().max(1e-12) } else { f64::INFINITY })
            .fold(0.0, f64::max)
    };
    (worst(&trace.losses, &reference.losses), worst(&trace.grad_norms, &reference.grad_norms))
}
