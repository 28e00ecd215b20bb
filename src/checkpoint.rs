//! Adapter checkpoints in HF PEFT's format, plus what wick needs to use them again.
//!
//! A checkpoint folder holds `adapter_config.json` and `adapter_model.safetensors` exactly as
//! PEFT writes them (a linear head is saved as PEFT's `modules_to_save` entry `score`),
//! `wick_run.toml`, the resolved run config with the fingerprint of the base weights, and a
//! `README.md` model card. Folders written by Python PEFT load too (see [`crate::peft`]): they
//! have no `wick_run.toml`, so the config comes from the user and the fit is checked by shape.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::lora::expand_targets;
use crate::model::Llama;
use crate::model::load::{save_safetensors_atomic, write_atomic};

pub use crate::peft::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
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
    /// Fingerprint of the base weights ([`Llama::fingerprint`]).
    pub base_fingerprint: String,
    /// The full config the adapter was trained with.
    pub config: Config,
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
        // The rank the tensors have (what a reader checks shapes against), not only what the config asked.
        r: model.lora_vars().first().and_then(|(_, a)| a.as_tensor().dims().first().copied()).unwrap_or(cfg.lora.r),
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

/// An adapter attached to a model, and how its fit to the base model was checked.
#[derive(Debug)]
pub struct AttachedAdapter {
    /// The linear head, when the checkpoint has one.
    pub head: Option<Tensor>,
    /// wick's run record, when wick wrote the checkpoint.
    pub run: Option<RunRecord>,
    /// One line saying what was checked (fingerprint, or shapes only).
    pub check: String,
}

/// Whether `dir` holds wick's run record (a checkpoint wick wrote).
pub fn has_run_record(dir: &Path) -> bool {
    dir.join(RUN_FILE).is_file()
}

/// Attach the adapters stored in `dir` to `model`, replacing any it had. A wick checkpoint must
/// carry this model's fingerprint; a foreign PEFT adapter is checked by its tensors' shapes.
pub fn load_adapter(dir: &Path, model: &mut Llama) -> Result<AttachedAdapter> {
    let run = if has_run_record(dir) { Some(read_run(dir)?) } else { None };
    if let Some(run) = &run {
        let fingerprint = model.fingerprint();
        if run.base_fingerprint != fingerprint {
            return Err(Error::Model(format!(
                "{}: this checkpoint was trained on another base model ({}); load it with that model",
                dir.display(),
                run.config.model.source
            )));
        }
    }
    let adapter = crate::peft::read_adapter(dir, &model.projection_shapes(), model.device())?;
    model.clear_lora().map_err(|e| Error::Model(format!("detaching adapters: {e}")))?;
    model.set_adapters(&adapter.modules, adapter.config.lora_dropout)?;
    let ranks: Vec<String> = adapter.ranks().iter().map(usize::to_string).collect();
    let what = format!("{} adapted projections, r = {}", adapter.modules.len(), ranks.join("/"));
    let check = match &run {
        Some(_) => format!("{what}; base-model fingerprint matches"),
        None => format!(
            "{what}; not written by wick (no {RUN_FILE}), so there is no fingerprint: its fit to the base model was checked by tensor shapes only{}",
            adapter.config.base_model_name_or_path.as_deref().map(|b| format!(" (trained on {b})")).unwrap_or_default()
        ),
    };
    Ok(AttachedAdapter { head: adapter.head, run, check })
}

/// Run `f` on `loaded` with the adapter stored in `dir` attached ([`load_adapter`]); the model
/// is the base model again afterwards, whether `f` succeeded or not. No code path can leave an
/// adapter attached by mistake (PEFT scopes adapters with context managers the same way).
pub fn with_adapter<T, E: From<Error>>(
    dir: &Path,
    loaded: &mut crate::model::LoadedModel,
    f: impl FnOnce(&crate::model::LoadedModel, &AttachedAdapter) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let attached = load_adapter(dir, &mut loaded.model)?;
    let result = f(loaded, &attached);
    loaded.model.clear_lora().map_err(|e| Error::Model(format!("detaching adapters: {e}")))?;
    result
}

/// The config to use a checkpoint with. A wick checkpoint brings its own (`override_cfg` then
/// replaces only the data and output sections); an adapter written by Python PEFT takes
/// everything (model, prompt, labels) from `override_cfg`.
pub fn run_config(dir: &Path, override_cfg: Option<&Path>) -> Result<Config> {
    match (has_run_record(dir), override_cfg) {
        (true, override_cfg) => {
            let mut cfg = read_run(dir)?.config;
            if let Some(path) = override_cfg {
                let o = crate::data::load_config(path)?;
                cfg.data = o.data;
                cfg.output = o.output;
            }
            Ok(cfg)
        }
        (false, Some(path)) => crate::data::load_config(path),
        (false, None) => Err(Error::Config(format!(
            "{}: not written by wick (no {RUN_FILE}), so give --config CONFIG for its base model, prompt and labels",
            dir.display()
        ))),
    }
}

/// The folder a `--checkpoint` argument names: an adapter folder (wick's or PEFT's), a run folder
/// whose `best` file names the best step, or a hub id `org/name[@revision]` of a PEFT adapter.
pub fn resolve_checkpoint_dir(path: &Path) -> Result<PathBuf> {
    if !path.exists() {
        return crate::hub::resolve_adapter(&path.to_string_lossy());
    }
    if path.join(ADAPTER_WEIGHTS).exists() || path.join(crate::peft::PICKLED_WEIGHTS).exists() {
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
