//! Loading weights from GGUF files and HF safetensors folders, and exporting an HF folder.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};

use super::config::ArchConfig;
use crate::error::{Error, Result};

/// Weights under HF names plus the architecture they belong to.
pub struct RawWeights {
    /// Architecture hyper-parameters.
    pub cfg: ArchConfig,
    /// Tensors keyed by HF name, in the requested dtype.
    pub tensors: HashMap<String, Tensor>,
}

/// (llama.cpp module, HF module) inside a decoder layer, for tensor names in both directions.
pub const GGUF_LAYER_MODULES: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// (llama.cpp name, HF name) of the tensors outside the layers.
pub const GGUF_GLOBAL_TENSORS: [(&str, &str); 3] =
    [("token_embd.weight", "model.embed_tokens.weight"), ("output_norm.weight", "model.norm.weight"), ("output.weight", "lm_head.weight")];

/// Map a llama.cpp tensor name to its HF name (`blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`).
pub fn gguf_to_hf_name(name: &str) -> Option<String> {
    if let Some((_, hf)) = GGUF_GLOBAL_TENSORS.iter().find(|(g, _)| *g == name) {
        return Some(hf.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let (_, hf) = GGUF_LAYER_MODULES.iter().find(|(g, _)| *g == module)?;
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// The head count whose rows llama.cpp permutes in the GGUF tensor `gguf_name`: query heads for
/// `blk.N.attn_q.weight`, key/value heads for `attn_k`, none for every other tensor or for
/// architectures whose converter does not permute (Qwen2).
pub fn qk_permuted_heads(cfg: &ArchConfig, gguf_name: &str) -> Option<usize> {
    if cfg.model_type != "llama" {
        return None;
    }
    match gguf_name.rsplit_once('.').map(|(m, _)| m.rsplit('.').next()) {
        Some(Some("attn_q")) => Some(cfg.num_attention_heads),
        Some(Some("attn_k")) => Some(cfg.num_key_value_heads),
        _ => None,
    }
}

/// Undo llama.cpp's Q/K row permutation (made for its interleaved rope) so rows are in the HF
/// rotate-half layout: per head, GGUF rows are (head_dim/2, 2), HF rows are (2, head_dim/2).
pub fn unpermute_qk(w: &Tensor, n_heads: usize) -> candle_core::Result<Tensor> {
    let dims = w.dims().to_vec();
    let out = dims[0];
    let rest: usize = dims[1..].iter().product();
    let head_dim = out / n_heads;
    w.reshape((n_heads, head_dim / 2, 2, rest))?.transpose(1, 2)?.contiguous()?.reshape(dims)
}

/// Read a GGUF file: dequantize every tensor to `dtype` (quantized matmul has no backward),
/// rename to HF names and undo the Q/K permutation. Also returns the parsed header for the tokenizer.
pub fn load_gguf(path: &Path, dtype: DType, device: &Device) -> Result<(RawWeights, gguf_file::Content)> {
    let origin = path.display().to_string();
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    let ct = gguf_file::Content::read(&mut reader).map_err(|e| Error::Model(format!("{origin}: not a readable GGUF file ({e})")))?;
    let cfg = ArchConfig::from_gguf(&ct, &origin, ct.tensor_infos.contains_key("output.weight"))?;
    let file_len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    let mut tensors = HashMap::new();
    for (name, info) in &ct.tensor_infos {
        let Some(hf) = gguf_to_hf_name(name) else {
            tracing::debug!("{origin}: skipping tensor {name}");
            continue;
        };
        // candle reads past the end of a truncated file as an I/O error; say so plainly.
        let end = ct.tensor_data_offset
            + info.offset
            + (info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size()) as u64;
        if end > file_len {
            return Err(Error::Model(format!("{origin}: file is truncated (tensor {name} ends at byte {end}, file has {file_len})")));
        }
        let q = ct.tensor(&mut reader, name, device).map_err(|e| Error::Model(format!("{origin}: tensor {name}: {e}")))?;
        let mut t =
            q.dequantize(device).and_then(|t| t.to_dtype(dtype)).map_err(|e| Error::Model(format!("{origin}: tensor {name}: {e}")))?;
        if let Some(h) = qk_permuted_heads(&cfg, name) {
            t = unpermute_qk(&t, h).map_err(|e| Error::Model(format!("{origin}: tensor {name}: {e}")))?;
        }
        tensors.insert(hf, t);
    }
    Ok((RawWeights { cfg, tensors }, ct))
}

/// Read an HF folder's config.json and safetensors files (one or several shards).
pub fn load_safetensors(config: &Path, weights: &[impl AsRef<Path>], dtype: DType, device: &Device) -> Result<RawWeights> {
    let text = std::fs::read_to_string(config).map_err(|e| Error::io(config, e))?;
    let cfg = ArchConfig::from_hf_json(&text, &config.display().to_string())?;
    let mut tensors = HashMap::new();
    for w in weights {
        let w = w.as_ref();
        let part = candle_core::safetensors::load(w, device)
            .map_err(|e| Error::Model(format!("{}: not a readable safetensors file ({e})", w.display())))?;
        for (k, t) in part {
            let t = t.to_dtype(dtype).map_err(|e| Error::Model(format!("{}: tensor {k}: {e}", w.display())))?;
            tensors.insert(k, t);
        }
    }
    Ok(RawWeights { cfg, tensors })
}

/// A hidden temp path in `path`'s folder: renaming it over `path` is atomic (same filesystem).
fn temp_beside(path: &Path) -> std::path::PathBuf {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("wick")))
}

/// Write `bytes` to `path` atomically: a temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    write_atomic_with(path, |f| f.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// Write `path` atomically by streaming into a buffered temp file beside it (for outputs too
/// large to build in memory first), then fsync and rename. The temp file is removed on error.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&mut std::io::BufWriter<File>) -> Result<()>) -> Result<()> {
    let tmp = temp_beside(path);
    let result = (|| {
        let mut w = std::io::BufWriter::new(File::create(&tmp).map_err(|e| Error::io(&tmp, e))?);
        write(&mut w)?;
        let f = w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Save tensors as safetensors, atomically.
pub fn save_safetensors_atomic(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let tmp = temp_beside(path);
    candle_core::safetensors::save(tensors, &tmp).map_err(|e| Error::Model(format!("{}: {e}", tmp.display())))?;
    File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
