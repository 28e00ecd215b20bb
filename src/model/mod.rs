//! The model every job runs: a Llama-family decoder plus its tokenizer, from any supported source.

pub mod config;
mod generate;
mod hand_backward;
mod layer;
mod layer_op;
pub mod llama;
pub mod load;

use candle_core::{DType, Device};
use tokenizers::Tokenizer;

pub use config::ArchConfig;
pub use llama::{Batch, Llama, PrefixCache};

use crate::error::{Error, Result};
use crate::hub::{ModelSource, resolve};

/// A decoder with its tokenizer and chat template, as loaded from one source.
pub struct LoadedModel {
    /// The network.
    pub model: Llama,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Jinja chat template, when the model has one (instruct models).
    pub chat_template: Option<String>,
    /// The source string it was loaded from.
    pub source: String,
}

/// Parse a dtype name ("f32", "f16", "bf16").
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(Error::Config(format!("dtype {other:?}: expected f32, f16 or bf16"))),
    }
}

/// The device named by `model.device`: "cpu", "cuda:N", or "auto" (CUDA when wick is built with
/// the `cuda` feature and a GPU answers, else CPU with a one-line notice).
pub fn select_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if cfg!(feature = "cuda") {
                match Device::new_cuda(0) {
                    Ok(d) => return Ok(d),
                    Err(e) => tracing::info!("wick: no usable CUDA GPU ({}); running on CPU", e.to_string().lines().next().unwrap_or("")),
                }
            } else {
                tracing::info!("wick: built without the `cuda` feature; running on CPU");
            }
            Ok(Device::Cpu)
        }
        other => {
            let n: usize = other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Error::Config(format!("model.device = {other:?}: expected auto, cpu or cuda:N")))?;
            Device::new_cuda(n).map_err(|e| Error::Config(format!("model.device = {other:?}: {e}")))
        }
    }
}

/// (activations and non-projection weights, projection weights) for a compute dtype on a device:
/// f16 and bf16 on the CPU are its half-precision paths (f16 projections on MKL's hgemm, bf16 on
/// oneDNN, all else f32), otherwise both are `dtype`.
pub fn storage_dtypes(dtype: DType, device: &Device) -> (DType, DType) {
    if device.is_cpu() && matches!(dtype, DType::F16 | DType::BF16) { (DType::F32, dtype) } else { (dtype, dtype) }
}

/// The compute dtype for `model.dtype` on `device`: "auto" is f16 on CUDA, f32 on CPU. f16 on the
/// CPU means f16 projection weights on MKL's hgemm with f32 activations (see `ops::half_gemm`),
/// so it needs MKL; bf16 on the CPU means bf16 projection weights on oneDNN's bf16 GEMM with f32
/// activations (see `ops::onednn`), so it needs a bf16 CPU and oneDNN.
pub fn resolve_dtype(name: &str, device: &Device) -> Result<DType> {
    let dtype = match name {
        "auto" if device.is_cuda() => DType::F16,
        "auto" => DType::F32,
        other => parse_dtype(other)?,
    };
    let (activations, projections) = storage_dtypes(dtype, device);
    if projections == DType::F16 && activations != projections && !crate::ops::half_gemm_available() {
        return Err(Error::Config(
            "model.dtype = \"f16\" on the CPU runs the frozen projections on MKL's hgemm, which is not loaded \
             (run scripts/install-mkl, or use f32)"
                .into(),
        ));
    }
    if projections == DType::BF16 && activations != projections {
        let why = if !crate::ops::onednn::cpu_has_bf16() {
            Some("this CPU has neither AVX512-BF16 nor AMX-BF16")
        } else if !crate::ops::bf16_gemm_available() {
            Some("oneDNN is not loaded (run scripts/install-onednn)")
        } else if crate::ops::blas::blas().is_none() {
            Some("no BLAS is loaded for the LoRA factors (run scripts/install-mkl or install-openblas)")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Error::Config(format!(
                "model.dtype = \"bf16\" on the CPU runs the frozen projections on oneDNN's bf16 GEMM, but {why}; use f32 or auto"
            )));
        }
    }
    Ok(dtype)
}

/// Load a model from a GGUF file, an HF folder or a hub id (see [`crate::hub::resolve`]).
pub fn load(source: &str, dtype: DType, device: &Device) -> Result<LoadedModel> {
    // The CPU f16 path keeps all but the projections in f32: read f32, round the projections once.
    let read_dtype = storage_dtypes(dtype, device).0;
    let (raw, tokenizer, chat_template) = match resolve(source)? {
        ModelSource::Gguf(path) => {
            let (raw, ct) = load::load_gguf(&path, read_dtype, device)?;
            let tok = crate::tokenizer::GgufTokenizer::from_content(&ct, &path)?;
            (raw, tok.tokenizer, tok.chat_template)
        }
        ModelSource::HfFolder(files) => {
            let raw = load::load_safetensors(&files.config, &files.weights, read_dtype, device)?;
            let tokenizer = Tokenizer::from_file(&files.tokenizer)
                .map_err(|e| Error::Model(format!("{}: not a readable tokenizer.json ({e})", files.tokenizer.display())))?;
            let chat_template = files.chat_template()?;
            (raw, tokenizer, chat_template)
        }
    };
    if tokenizer.get_vocab_size(true) > raw.cfg.vocab_size {
        return Err(Error::Model(format!(
            "{source}: tokenizer has {} tokens but the embedding only {} rows",
            tokenizer.get_vocab_size(true),
            raw.cfg.vocab_size
        )));
    }
    let model = Llama::from_tensors(raw.cfg, raw.tensors, dtype, device).map_err(|e| Error::Model(format!("{source}: {e}")))?;
    Ok(LoadedModel { model, tokenizer, chat_template, source: source.to_string() })
}

/// Load the model a `[model]` section names, on its device and dtype.
pub fn load_configured(cfg: &crate::config::ModelConfig) -> Result<LoadedModel> {
    let device = select_device(&cfg.device)?;
    let dtype = resolve_dtype(&cfg.dtype, &device)?;
    load(&cfg.source, dtype, &device)
}

/// Only the tokenizer of a source (for token counts), without loading the weights.
pub fn tokenizer_for(source: &str) -> Result<Tokenizer> {
    match resolve(source)? {
        ModelSource::Gguf(path) => Ok(crate::tokenizer::GgufTokenizer::load(&path)?.tokenizer),
        ModelSource::HfFolder(files) => {
            Tokenizer::from_file(&files.tokenizer).map_err(|e| Error::Model(format!("{}: {e}", files.tokenizer.display())))
        }
    }
}

/// Human summary of a loaded model: architecture, parameter counts, dtype, vocabulary, special tokens.
pub fn describe(loaded: &LoadedModel) -> String {
    let c = &loaded.model.cfg;
    let special: Vec<String> = loaded
        .tokenizer
        .get_added_tokens_decoder()
        .iter()
        .filter(|(_, t)| t.special)
        .map(|(id, t)| (*id, t.content.clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .map(|(id, s)| format!("{s}={id}"))
        .collect();
    let millions = |n: usize| format!("{:.2}M", n as f64 / 1e6);
    format!(
        "source:            {}\narchitecture:      {} ({} layers, hidden {}, MLP {}, {} query / {} key-value heads, head_dim {})\n\
         parameters:        {} total = {} embedding + {} non-embedding{}\n\
         dtype:             {:?} (weights dequantized for training)\nvocabulary:        {} tokens\n\
         rope theta:        {}\nrms eps:           {}\nmax positions:     {}\n\
         bos / eos:         {:?} / {:?}\nspecial tokens:    {}\nchat template:     {}\n",
        loaded.source,
        c.model_type,
        c.num_hidden_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        millions(c.embedding_params() + c.non_embedding_params()),
        millions(c.embedding_params()),
        millions(c.non_embedding_params()),
        if c.tie_word_embeddings { " (LM head tied to the embedding)" } else { "" },
        loaded.model.dtype(),
        c.vocab_size,
        c.rope_theta,
        c.rms_norm_eps,
        c.max_position_embeddings,
        c.bos_token_id,
        c.eos_token_id,
        special.join(" "),
        if loaded.chat_template.is_some() { "yes" } else { "no" },
    )
}
