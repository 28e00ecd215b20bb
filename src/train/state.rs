//! Checkpoint folders of a training run: atomic saves, retention, and what resume reads back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::optim::LossScaler;
use crate::checkpoint;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::Llama;
use crate::model::load::{save_safetensors_atomic, write_atomic};

/// trainer_state.json: everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimiser steps done.
    pub step: usize,
    /// Planned optimiser steps.
    pub total_steps: usize,
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Next batch of the epoch's batch order (the data cursor).
    pub cursor: usize,
    /// Dropout generator seed.
    pub dropout_seed: u64,
    /// Dropout generator position (u128 as a decimal string: JSON numbers cannot hold it).
    pub dropout_word_pos: String,
    /// Dynamic loss-scaling state.
    pub loss_scaler: LossScaler,
    /// Every dev evaluation so far.
    pub history: Vec<EvalRecord>,
    /// Step of the best evaluation.
    pub best_step: Option<usize>,
    /// Best dev metric value.
    pub best_metric: Option<f64>,
    /// Evaluations since the best one (early stopping).
    pub evals_since_best: usize,
    /// Training tokens processed.
    pub tokens_seen: u64,
    /// Wall seconds spent training before this process (resumed runs add up).
    pub train_seconds: f64,
    /// True when `total_steps` was cut to fit `train.max_minutes` (a resume keeps it).
    #[serde(default)]
    pub budget_sized: bool,
}

/// One dev evaluation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalRecord {
    /// Step it was taken at.
    pub step: usize,
    /// Dev accuracy.
    pub accuracy: f64,
    /// Dev macro-F1.
    pub macro_f1: f64,
    /// Mean training loss since the previous evaluation (none before training).
    pub train_loss: Option<f64>,
}

/// Name of the checkpoint folder of `step`.
pub fn step_dir(run_dir: &Path, step: usize) -> PathBuf {
    run_dir.join(format!("step-{step}"))
}

/// Complete checkpoint folders of a run (they have trainer_state.json), by ascending step.
pub fn list_checkpoints(run_dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut out: Vec<(usize, PathBuf)> = std::fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step: usize = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join("trainer_state.json").exists().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Write a checkpoint for `state.step`: built in a hidden temp folder, then renamed into place, so
/// a crash mid-write leaves the previous checkpoints intact and no half-written one.
pub fn save(
    run_dir: &Path,
    model: &Llama,
    head: Option<&Tensor>,
    optimizer: HashMap<String, Tensor>,
    state: &TrainerState,
    cfg: &Config,
    fingerprint: &str,
) -> Result<PathBuf> {
    let final_dir = step_dir(run_dir, state.step);
    let tmp = run_dir.join(format!(".step-{}.tmp", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    checkpoint::save_adapter(&tmp, model, head, cfg, fingerprint)?;
    save_safetensors_atomic(&tmp.join("optimizer.safetensors"), &optimizer)?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| Error::Model(e.to_string()))?;
    write_atomic(&tmp.join("trainer_state.json"), &json)?;
    let dev = dev_metrics(state, cfg);
    crate::model_card::write(
        &tmp,
        &final_dir,
        &crate::model_card::CardFacts { config: cfg, fingerprint, step: state.step, dev, test: None },
    )?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| Error::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
    if let Some(best) = state.best_step {
        write_atomic(&run_dir.join("best"), format!("step-{best}\n").as_bytes())?;
    }
    Ok(final_dir)
}

/// Delete checkpoints beyond the last `keep` (never the best one).
pub fn prune(run_dir: &Path, keep: usize, best: Option<usize>) -> Result<()> {
    let all = list_checkpoints(run_dir);
    let cut = all.len().saturating_sub(keep.max(1));
    for (step, dir) in &all[..cut] {
        if Some(*step) != best {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    Ok(())
}

/// Read a checkpoint's trainer state (`trainer_state.json`).
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Model(format!("{}: {e}", path.display())))
}

/// The dev metrics recorded at this state's own step, for the model card.
pub fn dev_metrics(state: &TrainerState, cfg: &Config) -> Option<crate::model_card::SplitMetrics> {
    let at = state.history.iter().find(|h| h.step == state.step)?;
    let examples = (cfg.train.eval_examples > 0).then_some(cfg.train.eval_examples);
    Some(crate::model_card::SplitMetrics { accuracy: at.accuracy, macro_f1: at.macro_f1, examples })
}

/// Read a checkpoint's trainer state and optimiser moments.
pub fn load(dir: &Path) -> Result<(TrainerState, HashMap<String, Tensor>, HashMap<String, Tensor>)> {
    let state = read_state(dir)?;
    let read = |name: &str| {
        let p = dir.join(name);
        candle_core::safetensors::load(&p, &candle_core::Device::Cpu).map_err(|e| Error::Model(format!("{}: {e}", p.display())))
    };
    Ok((state, read("optimizer.safetensors")?, read(checkpoint::ADAPTER_WEIGHTS)?))
}

/// Refuse to resume when the saved run differs from `cfg` in anything that shapes the result.
pub fn check_resumable(saved: &Config, cfg: &Config, saved_fp: &str, fp: &str, dir: &Path) -> Result<()> {
    if saved_fp != fp {
        return Err(Error::Config(format!(
            "{}: cannot resume: the checkpoint was trained on another base model ({})",
            dir.display(),
            saved.model.source
        )));
    }
    let checks: [(&str, bool); 5] = [
        ("[lora]", same_json(&saved.lora, &cfg.lora)),
        ("[prompt]", same_json(&saved.prompt, &cfg.prompt)),
        ("[data]", same_json(&saved.data, &cfg.data)),
        ("train.head", saved.train.head == cfg.train.head),
        (
            "train.seed / batch_size / grad_accum",
            (saved.train.seed, saved.train.batch_size, saved.train.grad_accum)
                == (cfg.train.seed, cfg.train.batch_size, cfg.train.grad_accum),
        ),
    ];
    if let Some((what, _)) = checks.iter().find(|(_, ok)| !ok) {
        return Err(Error::Config(format!(
            "{}: cannot resume: {what} differs from the checkpoint's config (start a new run_name instead)",
            dir.display()
        )));
    }
    Ok(())
}

/// Two config sections are equal when they serialise to the same JSON.
fn same_json<T: Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_string(a).ok() == serde_json::to_string(b).ok()
}
