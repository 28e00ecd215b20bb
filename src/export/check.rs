//! The merged model must give the adapter's answers (peft#1836 saw accuracy fall from 0.965 to
//! 0.496 after a merge): `wick export` scores a dev sample with the adapter model and with the
//! merged model as written and read back, and refuses an export whose answers disagree.

use std::path::Path;

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::baseline::{BaselineOptions, Baselines, VariantRun};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::LoadedModel;

/// Dev examples the check scores by default.
pub const CHECK_EXAMPLES: usize = 200;

/// Least agreement accepted for an f32 export.
pub const F32_TOLERANCE: f64 = 0.995;

/// Least agreement accepted for an f16 export: rounding the weights to f16 moves label
/// probabilities by up to ~1e-3, which can flip an example the model scores near a tie.
pub const F16_TOLERANCE: f64 = 0.99;

/// What the check measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    /// Dev examples scored by both.
    pub examples: usize,
    /// Share with the same predicted label.
    pub agreement: f64,
    /// Largest |difference| of any label probability.
    pub max_prob_diff: f32,
    /// The least agreement accepted.
    pub tolerance: f64,
}

impl Agreement {
    /// Whether the export passes.
    pub fn passed(&self) -> bool {
        self.agreement >= self.tolerance
    }
}

fn main_template(loaded: &LoadedModel, cfg: &Config, head: Option<&Tensor>, texts: &[String]) -> Result<VariantRun> {
    let baselines = Baselines::new(loaded, cfg, &[], BaselineOptions { batch_size: 16, ..BaselineOptions::default() })?;
    let mut runs = crate::eval::score_tuned(&baselines, loaded, head, texts, 16, false)?;
    Ok(runs.swap_remove(0))
}

/// Score the first `n` dev examples of `cfg`'s data with `adapter` (the base model with its
/// adapter attached) and with the merged model at `merged` (an HF folder or a GGUF file), the
/// same head on both, and compare their answers.
pub fn check_merged(
    adapter: &LoadedModel,
    head: Option<&Tensor>,
    merged: &Path,
    cfg: &Config,
    n: usize,
    dtype: DType,
) -> Result<Agreement> {
    let (splits, _) = crate::data::load_splits(&cfg.data, crate::data::ReadMode::Strict).map_err(|e| {
        Error::Data(format!("the merged-model check needs the run's dev split: {e} (pass --check-examples 0 to skip the check)"))
    })?;
    let texts: Vec<String> = splits.dev.iter().take(n).map(|e| e.text.clone()).collect();
    if texts.is_empty() {
        return Err(Error::Data("the merged-model check found no dev examples (pass --check-examples 0 to skip it)".into()));
    }
    let source = merged.to_string_lossy();
    let reloaded = crate::model::load(&source, DType::F32, adapter.model.device())?;
    let a = main_template(adapter, cfg, head, &texts)?;
    let b = main_template(&reloaded, cfg, head, &texts)?;
    let same = a.predicted.iter().zip(&b.predicted).filter(|(x, y)| x == y).count();
    let max_prob_diff = a.probs.iter().zip(&b.probs).flat_map(|(p, q)| p.iter().zip(q).map(|(x, y)| (x - y).abs())).fold(0f32, f32::max);
    Ok(Agreement {
        examples: texts.len(),
        agreement: same as f64 / texts.len() as f64,
        max_prob_diff,
        tolerance: if dtype == DType::F32 { F32_TOLERANCE } else { F16_TOLERANCE },
    })
}
