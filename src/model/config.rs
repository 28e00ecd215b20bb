//! Architecture hyper-parameters, read from an HF `config.json` or GGUF metadata.

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Shape and constants of a Llama-family decoder (Llama, SmolLM, Qwen2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchConfig {
    /// "llama" or "qwen2".
    pub model_type: String,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width d.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// LM head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// q/k/v projections have a bias (Qwen2).
    pub attention_bias: bool,
    /// Longest supported sequence.
    pub max_position_embeddings: usize,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id.
    pub eos_token_id: Option<u32>,
}

/// The subset of HF `config.json` fields wick reads.
#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f64>,
    rms_norm_eps: Option<f64>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    max_position_embeddings: Option<usize>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
    rope_scaling: Option<serde_json::Value>,
}

fn first_id(v: &Option<serde_json::Value>) -> Option<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| x as u32),
        Some(serde_json::Value::Array(a)) => a.first().and_then(|x| x.as_u64()).map(|x| x as u32),
        _ => None,
    }
}

/// (block, name) of a decoder layer's seven projections, in PEFT's module order.
pub const PROJECTIONS: [(&str, &str); 7] = [
    ("self_attn", "q_proj"),
    ("self_attn", "k_proj"),
    ("self_attn", "v_proj"),
    ("self_attn", "o_proj"),
    ("mlp", "gate_proj"),
    ("mlp", "up_proj"),
    ("mlp", "down_proj"),
];

/// What a weight tensor of the decoder is, for code that makes or checks weights by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightRole {
    /// The token embedding (and the tied LM head).
    Embedding,
    /// An RMSNorm weight.
    Norm,
    /// A projection matrix (out, in).
    Projection,
    /// A q/k/v projection's bias (Qwen2).
    Bias,
    /// The untied LM head.
    LmHead,
}

impl ArchConfig {
    /// (out, in) features of the projection `name` ("q_proj", ..., "down_proj").
    pub fn projection_shape(&self, name: &str) -> (usize, usize) {
        let (d, ff) = (self.hidden_size, self.intermediate_size);
        let (q, kv) = (self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim);
        match name {
            "q_proj" => (q, d),
            "k_proj" | "v_proj" => (kv, d),
            "o_proj" => (d, q),
            "gate_proj" | "up_proj" => (ff, d),
            "down_proj" => (d, ff),
            other => panic!("{other:?} is not one of the seven projections"),
        }
    }

    /// True when the projection `name` has a bias: q/k/v on models with `attention_bias` (Qwen2).
    pub fn projection_has_bias(&self, name: &str) -> bool {
        self.attention_bias && matches!(name, "q_proj" | "k_proj" | "v_proj")
    }

    /// Every weight's HF name, shape and role, in the order [`crate::model::Llama::named_weights`]
    /// lists them: the embedding; per layer its two norms, then the projections (each followed
    /// by its bias, if any); the final norm; the untied LM head.
    pub fn weight_shapes(&self) -> Vec<(String, Vec<usize>, WeightRole)> {
        let (d, v) = (self.hidden_size, self.vocab_size);
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, d], WeightRole::Embedding)];
        for i in 0..self.num_hidden_layers {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.input_layernorm.weight"), vec![d], WeightRole::Norm));
            out.push((format!("{p}.post_attention_layernorm.weight"), vec![d], WeightRole::Norm));
            for (block, name) in PROJECTIONS {
                let (o, i) = self.projection_shape(name);
                out.push((format!("{p}.{block}.{name}.weight"), vec![o, i], WeightRole::Projection));
                if self.projection_has_bias(name) {
                    out.push((format!("{p}.{block}.{name}.bias"), vec![o], WeightRole::Bias));
                }
            }
        }
        out.push(("model.norm.weight".into(), vec![d], WeightRole::Norm));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".into(), vec![v, d], WeightRole::LmHead));
        }
        out
    }

    /// Parse HF `config.json` text; `origin` names the file in errors.
    pub fn from_hf_json(text: &str, origin: &str) -> Result<Self> {
        let hf: HfConfig = serde_json::from_str(text).map_err(|e| Error::Model(format!("{origin}: {e}")))?;
        let model_type = match (hf.model_type.as_deref(), hf.architectures.as_ref().and_then(|a| a.first()).map(String::as_str)) {
            (Some("llama"), _) | (None, Some("LlamaForCausalLM")) => "llama",
            (Some("qwen2"), _) | (None, Some("Qwen2ForCausalLM")) => "qwen2",
            (Some(other), _) => {
                return Err(Error::Model(format!("{origin}: unsupported architecture {other:?} (wick supports llama and qwen2)")));
            }
            (None, other) => {
                return Err(Error::Model(format!("{origin}: unsupported architecture {other:?} (wick supports llama and qwen2)")));
            }
        };
        if hf.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(Error::Model(format!("{origin}: rope_scaling is not supported")));
        }
        let cfg = Self {
            model_type: model_type.into(),
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            num_key_value_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim: hf.head_dim.unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
            rope_theta: hf.rope_theta.unwrap_or(10_000.0),
            rms_norm_eps: hf.rms_norm_eps.unwrap_or(1e-6),
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(model_type == "qwen2"),
            attention_bias: hf.attention_bias.unwrap_or(model_type == "qwen2"),
            max_position_embeddings: hf.max_position_embeddings.unwrap_or(4096),
            bos_token_id: first_id(&hf.bos_token_id),
            eos_token_id: first_id(&hf.eos_token_id),
        };
        cfg.check(origin)?;
        Ok(cfg)
    }

    /// Read the hyper-parameters from GGUF metadata (`llama.*` or `qwen2.*` keys).
    pub fn from_gguf(ct: &gguf_file::Content, origin: &str, has_output_weight: bool) -> Result<Self> {
        let md = &ct.metadata;
        let arch = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| Error::Model(format!("{origin}: GGUF metadata has no general.architecture")))?;
        if arch != "llama" && arch != "qwen2" {
            return Err(Error::Model(format!("{origin}: unsupported architecture {arch:?} (wick supports llama and qwen2)")));
        }
        let get = |key: &str| -> Result<&gguf_file::Value> {
            md.get(&format!("{arch}.{key}")).ok_or_else(|| Error::Model(format!("{origin}: GGUF metadata lacks {arch}.{key}")))
        };
        let uint = |key: &str| -> Result<usize> {
            let v = get(key)?;
            v.to_u32()
                .map(|x| x as usize)
                .or_else(|_| v.to_u64().map(|x| x as usize))
                .map_err(|e| Error::Model(format!("{origin}: {arch}.{key}: {e}")))
        };
        let float = |key: &str| -> Option<f64> { get(key).ok().and_then(|v| v.to_f32().ok()).map(f64::from) };
        let vocab_size = match md.get("tokenizer.ggml.tokens").and_then(|v| v.to_vec().ok()) {
            Some(tokens) => tokens.len(),
            None => uint("vocab_size")?,
        };
        let hidden_size = uint("embedding_length")?;
        let num_attention_heads = uint("attention.head_count")?;
        let id = |key: &str| md.get(key).and_then(|v| v.to_u32().ok());
        let cfg = Self {
            model_type: arch.clone(),
            vocab_size,
            hidden_size,
            intermediate_size: uint("feed_forward_length")?,
            num_hidden_layers: uint("block_count")?,
            num_attention_heads,
            num_key_value_heads: uint("attention.head_count_kv").unwrap_or(num_attention_heads),
            head_dim: uint("rope.dimension_count").unwrap_or(hidden_size / num_attention_heads.max(1)),
            rope_theta: float("rope.freq_base").unwrap_or(10_000.0),
            rms_norm_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
            tie_word_embeddings: !has_output_weight,
            attention_bias: arch == "qwen2",
            max_position_embeddings: uint("context_length").unwrap_or(4096),
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_id: id("tokenizer.ggml.eos_token_id"),
        };
        cfg.check(origin)?;
        Ok(cfg)
    }

    fn check(&self, origin: &str) -> Result<()> {
        if self.num_attention_heads == 0 || self.num_key_value_heads == 0 || self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(Error::Model(format!(
                "{origin}: {} attention heads cannot be grouped over {} key/value heads",
                self.num_attention_heads, self.num_key_value_heads
            )));
        }
        if self.head_dim % 2 != 0 || self.head_dim == 0 {
            return Err(Error::Model(format!("{origin}: head_dim {} must be even", self.head_dim)));
        }
        Ok(())
    }

    /// HF `config.json` content for this architecture (what `wick model export` writes).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let (arch, extra): (&str, HashMap<&str, serde_json::Value>) = match self.model_type.as_str() {
            "qwen2" => (
                "Qwen2ForCausalLM",
                [
                    ("use_sliding_window", false.into()),
                    ("sliding_window", 4096.into()),
                    ("max_window_layers", self.num_hidden_layers.into()),
                ]
                .into(),
            ),
            _ => (
                "LlamaForCausalLM",
                [("attention_bias", self.attention_bias.into()), ("mlp_bias", false.into()), ("pretraining_tp", 1.into())].into(),
            ),
        };
        let mut v = serde_json::json!({
            "architectures": [arch],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "rope_scaling": null,
        });
        if let Some(obj) = v.as_object_mut() {
            for (k, val) in extra {
                obj.insert(k.into(), val);
            }
        }
        v
    }

    /// Non-embedding parameter count N (the "4N FLOP per token" basis).
    pub fn non_embedding_params(&self) -> usize {
        let d = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let bias = if self.attention_bias { q + 2 * kv } else { 0 };
        let per_layer = d * q + 2 * d * kv + q * d + bias + 3 * d * self.intermediate_size + 2 * d;
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size * d };
        self.num_hidden_layers * per_layer + d + head
    }

    /// Embedding parameter count.
    pub fn embedding_params(&self) -> usize {
        self.vocab_size * self.hidden_size
    }
}
