//! Adapter checkpoints in HF PEFT's format, plus what wick needs to use them again.
//!
//! A checkpoint folder holds `adapter_config.json` and `adapter_model.safetensors` exactly as
//! PEFT writes them (a linear head is saved as PEFT's `modules_to_save` entry `score`), and
//! `wick_run.toml`, the resolved run config with the fingerprint of the base weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::lora::{expand_targets, lora_scale};
use crate::model::Llama;
use crate::model::load::{save_safetensors_atomic, write_atomic};

/// File names inside a checkpoint folder.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// Adapter weights (PEFT keys).
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// wick's resolved run config and base fingerprint.
pub const RUN_FILE: &str = "wick_run.toml";
/// PEFT key of the linear classification head (LlamaForSequenceClassification's `score`).
pub const HEAD_KEY: &str = "base_model.model.score.weight";

/// HF PEFT's `adapter_config.json` for LoRA.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdapterConfig {
    /// The base model this adapter belongs to.
    pub base_model_name_or_path: String,
    /// Always "LORA".
    pub peft_type: String,
    /// "CAUSAL_LM" (verbalizer head) or "SEQ_CLS" (linear head).
    pub task_type: String,
    /// Rank.
    pub r: usize,
    /// Scaling numerator.
    pub lora_alpha: f64,
    /// Adapter-input dropout.
    pub lora_dropout: f64,
    /// Adapted module names.
    pub target_modules: Vec<String>,
    /// alpha/√r scaling.
    pub use_rslora: bool,
    /// Bias training: always "none".
    pub bias: String,
    /// Weights stored (out, in), as nn.Linear.
    pub fan_in_fan_out: bool,
    /// Saved for inference.
    pub inference_mode: bool,
    /// Extra fully-trained modules (the linear head).
    pub modules_to_save: Option<Vec<String>>,
    /// PEFT's init flag for LoRA A/B.
    pub init_lora_weights: bool,
}

/// The resolved run: config plus the base weights' fingerprint (checked on load and resume).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Fingerprint of the base weights ([`base_fingerprint`]).
    pub base_fingerprint: String,
    /// The full config the adapter was trained with.
    pub config: Config,
}

/// A stable fingerprint of the frozen weights: names, shapes and a sample of values of every
/// tensor. The same weights give the same fingerprint whether read from GGUF or an exported folder.
pub fn base_fingerprint(model: &Llama) -> Result<String> {
    let mut h = Sha256::new();
    for (name, t) in model.named_weights() {
        h.update(name.as_bytes());
        h.update(format!("{:?}", t.dims()).as_bytes());
        let flat = t.flatten_all().and_then(|f| f.to_dtype(DType::F32)).map_err(|e| Error::Model(format!("{name}: {e}")))?;
        let n = flat.elem_count();
        let take = n.min(512);
        for part in [flat.narrow(0, 0, take), flat.narrow(0, n - take, take)] {
            let v: Vec<f32> = part.and_then(|p| p.to_vec1()).map_err(|e| Error::Model(format!("{name}: {e}")))?;
            v.iter().for_each(|x| h.update(x.to_le_bytes()));
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Save the adapters (and linear head, if any) of `model` into `dir` in PEFT's format.
pub fn save_adapter(dir: &Path, model: &Llama, head: Option<&Tensor>, cfg: &Config, fingerprint: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tensors: HashMap<String, Tensor> = model.lora_vars().into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect();
    if let Some(h) = head {
        tensors.insert(HEAD_KEY.into(), h.clone());
    }
    save_safetensors_atomic(&dir.join(ADAPTER_WEIGHTS), &tensors)?;
    let adapter = AdapterConfig {
        base_model_name_or_path: cfg.model.source.clone(),
        peft_type: "LORA".into(),
        task_type: if head.is_some() { "SEQ_CLS" } else { "CAUSAL_LM" }.into(),
        r: cfg.lora.r,
        lora_alpha: cfg.lora.alpha,
        lora_dropout: cfg.lora.dropout,
        target_modules: expand_targets(&cfg.lora.target_modules).into_iter().map(String::from).collect(),
        use_rslora: cfg.lora.use_rslora,
        bias: "none".into(),
        fan_in_fan_out: false,
        inference_mode: true,
        modules_to_save: head.map(|_| vec!["score".to_string()]),
        init_lora_weights: true,
    };
    let json = serde_json::to_vec_pretty(&adapter).map_err(|e| Error::Model(e.to_string()))?;
    write_atomic(&dir.join(ADAPTER_CONFIG), &json)?;
    let run = RunRecord { base_fingerprint: fingerprint.to_string(), config: cfg.clone() };
    let text = toml::to_string_pretty(&run).map_err(|e| Error::Model(format!("serialising the run config: {e}")))?;
    write_atomic(&dir.join(RUN_FILE), text.as_bytes())
}

/// Read a checkpoint's run record (config and base fingerprint).
pub fn read_run(dir: &Path) -> Result<RunRecord> {
    let path = dir.join(RUN_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    toml::from_str(&text).map_err(|e| Error::Model(format!("{}: {}", path.display(), e.message())))
}

/// Attach the adapters stored in `dir` to `model` after checking they were made for these base
/// weights; returns the linear head when the checkpoint has one.
pub fn load_adapter(dir: &Path, model: &mut Llama) -> Result<Option<Tensor>> {
    let run = read_run(dir)?;
    let fingerprint = base_fingerprint(model)?;
    if run.base_fingerprint != fingerprint {
        return Err(Error::Model(format!(
            "{}: this checkpoint was trained on another base model ({}); load it with that model",
            dir.display(),
            run.config.model.source
        )));
    }
    let cfg_path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let adapter: AdapterConfig = serde_json::from_str(&text).map_err(|e| Error::Model(format!("{}: {e}", cfg_path.display())))?;
    let weights = dir.join(ADAPTER_WEIGHTS);
    let tensors =
        candle_core::safetensors::load(&weights, model.device()).map_err(|e| Error::Model(format!("{}: {e}", weights.display())))?;
    let scale = lora_scale(adapter.lora_alpha, adapter.r, adapter.use_rslora);
    let n = model.set_lora(&tensors, scale, adapter.lora_dropout)?;
    if n == 0 {
        return Err(Error::Model(format!("{}: no LoRA tensors found", weights.display())));
    }
    Ok(tensors.get(HEAD_KEY).cloned())
}

/// The folder a `--checkpoint` argument names: a step folder, or a run folder whose `best` file
/// names the best step.
pub fn resolve_checkpoint_dir(path: &Path) -> Result<PathBuf> {
    if path.join(ADAPTER_WEIGHTS).exists() {
        return Ok(path.to_path_buf());
    }
    let best = path.join("best");
    if let Ok(step) = std::fs::read_to_string(&best) {
        let dir = path.join(step.trim());
        if dir.join(ADAPTER_WEIGHTS).exists() {
            return Ok(dir);
        }
    }
    Err(Error::Model(format!("{}: not a checkpoint (no {ADAPTER_WEIGHTS}, and no `best` file naming one)", path.display())))
}
