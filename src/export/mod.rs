//! The tuned model, out: the base weights with the adapter merged in, as an HF folder that
//! transformers' `AutoModelForCausalLM` loads, or a GGUF file in llama.cpp's layout.
//!
//! A linear head is not part of a causal LM, so it is written beside the model as
//! `score.safetensors` (key `score.weight`, labels in `labels.json`).

pub mod check;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::hub::ModelSource;
use crate::model::LoadedModel;
use crate::model::load::{save_safetensors_atomic, write_atomic};

/// Output layout of `wick export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// transformers folder: config.json, model.safetensors, tokenizer files.
    Hf,
    /// One llama.cpp GGUF file.
    Gguf,
}

impl std::str::FromStr for ExportFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "hf" => Ok(Self::Hf),
            "gguf" => Ok(Self::Gguf),
            other => Err(Error::Config(format!("--format {other:?}: expected hf or gguf"))),
        }
    }
}

/// Parse `--dtype` for an export: f32 or f16.
pub fn parse_export_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        other => Err(Error::Config(format!("--dtype {other:?}: expected f32 or f16"))),
    }
}

/// A linear classification head and the labels of its rows.
pub struct LinearHead<'a> {
    /// (labels, hidden) weight.
    pub weight: &'a Tensor,
    /// Label names in row order.
    pub labels: &'a [String],
}

/// Write `loaded` with its adapters merged to `out` (a folder for `hf`; for `gguf` a `.gguf`
/// path or a folder that gets `model.gguf`). Nothing is left half-written: files are built under
/// a temporary name and renamed. Returns the paths written. The model itself is not changed.
pub fn export_merged(
    loaded: &LoadedModel,
    head: Option<LinearHead>,
    out: &Path,
    format: ExportFormat,
    dtype: DType,
) -> Result<Vec<PathBuf>> {
    let single_file = format == ExportFormat::Gguf && out.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if out.exists() && !(out.is_dir() && std::fs::read_dir(out).map_err(|e| Error::io(out, e))?.next().is_none()) {
        return Err(Error::Config(format!("{}: already exists; choose a new output path or remove it", out.display())));
    }
    let mut written = if single_file {
        write_gguf_file(loaded, out, dtype).map(|()| vec![out.to_path_buf()])?
    } else {
        write_folder(loaded, head.as_ref(), out, format, dtype)?
    };
    if single_file && let Some(h) = &head {
        let stem = out.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
        let path = out.with_file_name(format!("{stem}.score.safetensors"));
        written.extend(write_head(h, &path)?);
    }
    Ok(written)
}

fn write_folder(loaded: &LoadedModel, head: Option<&LinearHead>, out: &Path, format: ExportFormat, dtype: DType) -> Result<Vec<PathBuf>> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = out.file_name().map_or_else(|| "export".into(), |n| n.to_string_lossy().into_owned());
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    let result = (|| -> Result<Vec<String>> {
        let mut files = match format {
            ExportFormat::Hf => write_hf(loaded, &tmp, dtype)?,
            ExportFormat::Gguf => {
                std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
                write_gguf_file(loaded, &tmp.join("model.gguf"), dtype)?;
                vec!["model.gguf".into()]
            }
        };
        if let Some(h) = head {
            write_head(h, &tmp.join("score.safetensors"))?;
            files.extend(["score.safetensors".into(), "labels.json".into()]);
        }
        Ok(files)
    })();
    let files = match result {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if out.exists() {
        std::fs::remove_dir(out).map_err(|e| Error::io(out, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    Ok(files.into_iter().map(|f| out.join(f)).collect())
}

/// `score.safetensors` (key `score.weight`, f32) and `labels.json` beside it.
fn write_head(head: &LinearHead, path: &Path) -> Result<Vec<PathBuf>> {
    let w = head.weight.to_dtype(DType::F32).map_err(|e| Error::Model(format!("head: {e}")))?;
    save_safetensors_atomic(path, &HashMap::from([("score.weight".to_string(), w)]))?;
    let labels_path = path.with_file_name("labels.json");
    let id2label: serde_json::Map<String, serde_json::Value> =
        head.labels.iter().enumerate().map(|(i, l)| (i.to_string(), l.clone().into())).collect();
    let json = serde_json::json!({ "id2label": id2label, "weight": path.file_name().map(|n| n.to_string_lossy().into_owned()) });
    write_atomic(&labels_path, &serde_json::to_vec_pretty(&json).map_err(|e| Error::Model(e.to_string()))?)?;
    Ok(vec![path.to_path_buf(), labels_path])
}

/// Write an HF folder (config.json, model.safetensors, tokenizer.json, tokenizer_config.json)
/// that Python tools load as exactly the weights wick uses (adapters merged); returns the file names.
pub fn write_hf(loaded: &LoadedModel, dir: &Path, dtype: DType) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tensors: HashMap<String, Tensor> = merged_weights(loaded)?
        .into_iter()
        .map(|(k, t)| t.to_dtype(dtype).map(|t| (k, t)))
        .collect::<candle_core::Result<_>>()
        .map_err(|e| Error::Model(format!("export: {e}")))?;
    save_safetensors_atomic(&dir.join("model.safetensors"), &tensors)?;
    let mut cfg = loaded.model.cfg.to_hf_json();
    cfg["torch_dtype"] = if dtype == DType::F16 { "float16" } else { "float32" }.into();
    write_atomic(&dir.join("config.json"), &serde_json::to_vec_pretty(&cfg).map_err(|e| Error::Model(e.to_string()))?)?;
    let tok_json = loaded.tokenizer.to_string(true).map_err(|e| Error::Model(format!("tokenizer: {e}")))?;
    write_atomic(&dir.join("tokenizer.json"), tok_json.as_bytes())?;
    let token = |id: Option<u32>| id.and_then(|i| loaded.tokenizer.id_to_token(i));
    let tok_cfg = serde_json::json!({
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": token(loaded.model.cfg.bos_token_id),
        "eos_token": token(loaded.model.cfg.eos_token_id),
        "chat_template": loaded.chat_template,
        "add_bos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": loaded.model.cfg.max_position_embeddings,
    });
    write_atomic(&dir.join("tokenizer_config.json"), &serde_json::to_vec_pretty(&tok_cfg).map_err(|e| Error::Model(e.to_string()))?)?;
    Ok(["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"].map(String::from).to_vec())
}

fn merged_weights(loaded: &LoadedModel) -> Result<Vec<(String, Tensor)>> {
    loaded.model.merged_weights().map_err(|e| Error::Model(format!("merging the adapter: {e}")))
}

/// HF tensor name → llama.cpp name (`model.layers.3.self_attn.q_proj.weight` → `blk.3.attn_q.weight`).
pub fn hf_to_gguf_name(name: &str) -> Option<String> {
    use crate::model::load::{GGUF_GLOBAL_TENSORS, GGUF_LAYER_MODULES};
    if let Some((gguf, _)) = GGUF_GLOBAL_TENSORS.iter().find(|(_, h)| *h == name) {
        return Some(gguf.to_string());
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let (gguf, _) = GGUF_LAYER_MODULES.iter().find(|(_, h)| *h == module)?;
    Some(format!("blk.{layer}.{gguf}.{kind}"))
}

/// Redo llama.cpp's Q/K row permutation (the inverse of [`crate::model::load::unpermute_qk`]):
/// per head, HF rows (2, head_dim/2) become GGUF rows (head_dim/2, 2).
pub fn permute_qk(w: &Tensor, n_heads: usize) -> candle_core::Result<Tensor> {
    let dims = w.dims().to_vec();
    let rest: usize = dims[1..].iter().product();
    let head_dim = dims[0] / n_heads;
    w.reshape((n_heads, 2, head_dim / 2, rest))?.transpose(1, 2)?.contiguous()?.reshape(dims)
}

/// Write one GGUF file atomically.
fn write_gguf_file(loaded: &LoadedModel, path: &Path, dtype: DType) -> Result<()> {
    let metadata = gguf_metadata(loaded, dtype)?;
    let c = &loaded.model.cfg;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (name, t) in merged_weights(loaded)? {
        let gguf = hf_to_gguf_name(&name).ok_or_else(|| Error::Model(format!("export: no GGUF name for tensor {name}")))?;
        let mut t = t.to_dtype(DType::F32).map_err(|e| Error::Model(format!("{name}: {e}")))?;
        if let Some(h) = crate::model::load::qk_permuted_heads(c, &gguf) {
            t = permute_qk(&t, h).map_err(|e| Error::Model(format!("{name}: {e}")))?;
        }
        // llama.cpp keeps 1-D tensors (norms, biases) in f32 whatever the file type.
        let ggml = if dtype == DType::F16 && t.rank() == 2 { GgmlDType::F16 } else { GgmlDType::F32 };
        let q = QTensor::quantize(&t, ggml).map_err(|e| Error::Model(format!("{name}: {e}")))?;
        tensors.push((gguf, q));
    }
    let meta_refs: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    // Streamed to disk: the file is as large as the model, so no second copy is built in memory.
    crate::model::load::write_atomic_with(path, |w| {
        gguf_file::write(w, &meta_refs, &tensor_refs).map_err(|e| Error::Model(format!("{}: {e}", path.display())))
    })
}

/// The header: architecture keys from the config, tokenizer keys copied from a GGUF source or
/// rebuilt from an HF tokenizer, and the chat template.
fn gguf_metadata(loaded: &LoadedModel, dtype: DType) -> Result<Vec<(String, gguf_file::Value)>> {
    use gguf_file::Value as V;
    let c = &loaded.model.cfg;
    let arch = c.model_type.clone();
    let u32v = |n: usize| V::U32(n as u32);
    let mut md: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(arch.clone())),
        ("general.name".into(), V::String(format!("{} + LoRA (merged by wick)", loaded.source))),
        ("general.file_type".into(), V::U32(if dtype == DType::F16 { 1 } else { 0 })),
        (format!("{arch}.context_length"), u32v(c.max_position_embeddings)),
        (format!("{arch}.embedding_length"), u32v(c.hidden_size)),
        (format!("{arch}.block_count"), u32v(c.num_hidden_layers)),
        (format!("{arch}.feed_forward_length"), u32v(c.intermediate_size)),
        (format!("{arch}.attention.head_count"), u32v(c.num_attention_heads)),
        (format!("{arch}.attention.head_count_kv"), u32v(c.num_key_value_heads)),
        (format!("{arch}.rope.freq_base"), V::F32(c.rope_theta as f32)),
        (format!("{arch}.attention.layer_norm_rms_epsilon"), V::F32(c.rms_norm_eps as f32)),
        (format!("{arch}.rope.dimension_count"), u32v(c.head_dim)),
        (format!("{arch}.vocab_size"), u32v(c.vocab_size)),
    ];
    let source_gguf = match crate::hub::resolve(&loaded.source) {
        Ok(ModelSource::Gguf(path)) => Some(path),
        _ => None,
    };
    match source_gguf {
        Some(path) => {
            let mut f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            let ct = gguf_file::Content::read(&mut f).map_err(|e| Error::Model(format!("{}: {e}", path.display())))?;
            let mut keys: Vec<&String> = ct.metadata.keys().filter(|k| k.starts_with("tokenizer.")).collect();
            keys.sort();
            md.extend(keys.into_iter().map(|k| (k.clone(), ct.metadata[k].clone())));
        }
        None => md.extend(tokenizer_metadata(loaded)?),
    }
    if let Some(t) = &loaded.chat_template {
        md.retain(|(k, _)| k != "tokenizer.chat_template");
        md.push(("tokenizer.chat_template".into(), V::String(t.clone())));
    }
    Ok(md)
}

/// `tokenizer.ggml.*` from an HF byte-level BPE tokenizer: tokens padded to the embedding's rows,
/// token types, merges, the pre-tokenizer's llama.cpp name, and the special ids.
fn tokenizer_metadata(loaded: &LoadedModel) -> Result<Vec<(String, gguf_file::Value)>> {
    use gguf_file::Value as V;
    let tok = &loaded.tokenizer;
    let json: serde_json::Value = serde_json::from_str(&tok.to_string(false).map_err(|e| Error::Model(format!("tokenizer: {e}")))?)
        .map_err(|e| Error::Model(format!("tokenizer: {e}")))?;
    if json["model"]["type"] != "BPE" {
        return Err(Error::Model("GGUF export: only byte-level BPE tokenizers can be written to GGUF".into()));
    }
    let merges: Vec<V> = json["model"]["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(p) => Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?)),
            _ => None,
        })
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| Error::Model("GGUF export: the tokenizer's merges are not pairs of strings".into()))?
        .into_iter()
        .map(V::String)
        .collect();
    let pre = crate::tokenizer::gguf_pre_name(&json["pre_tokenizer"]).ok_or_else(|| {
        Error::Model("GGUF export: the tokenizer's pre-tokenizer matches none llama.cpp names (smollm, gpt2, qwen2, ...)".into())
    })?;
    let added = tok.get_added_tokens_decoder();
    let n = loaded.model.cfg.vocab_size.max(tok.get_vocab_size(true));
    let mut tokens = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for id in 0..n as u32 {
        match (tok.id_to_token(id), added.get(&id)) {
            (Some(t), Some(a)) => {
                tokens.push(V::String(t));
                types.push(V::I32(if a.special { 3 } else { 4 }));
            }
            (Some(t), None) => {
                tokens.push(V::String(t));
                types.push(V::I32(1));
            }
            // Embedding rows past the vocabulary: llama.cpp needs one (unused) token per row.
            (None, _) => {
                tokens.push(V::String(format!("[PAD{id}]")));
                types.push(V::I32(5));
            }
        }
    }
    let mut md = vec![
        ("tokenizer.ggml.model".to_string(), V::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), V::String(pre.into())),
        ("tokenizer.ggml.tokens".to_string(), V::Array(tokens)),
        ("tokenizer.ggml.token_type".to_string(), V::Array(types)),
        ("tokenizer.ggml.add_bos_token".to_string(), V::Bool(false)),
    ];
    if !merges.is_empty() {
        md.push(("tokenizer.ggml.merges".into(), V::Array(merges)));
    }
    let c = &loaded.model.cfg;
    for (key, id) in [("bos_token_id", c.bos_token_id), ("eos_token_id", c.eos_token_id)] {
        if let Some(id) = id {
            md.push((format!("tokenizer.ggml.{key}"), V::U32(id)));
        }
    }
    Ok(md)
}

/// `wick export`: the base model with a checkpoint's adapter merged in.
#[derive(Debug, Clone)]
pub struct ExportArgs {
    /// A checkpoint folder (wick's or any HF PEFT LoRA folder), a run folder with a `best` file, or a PEFT adapter's hub id.
    pub checkpoint: PathBuf,
    /// Output: a folder (hf, gguf) or a `.gguf` file path (gguf).
    pub out: PathBuf,
    /// hf (transformers folder) or gguf (llama.cpp).
    pub format: String,
    /// Weight dtype of the written model: f32 or f16 (the merge itself is done in f32).
    pub dtype: String,
    /// Run config: needed for an adapter written by Python PEFT (base model and labels).
    pub config: Option<PathBuf>,
    /// Dev examples the merged model is checked on against the adapter (0: no check).
    pub check_examples: usize,
}

/// Run `wick export`: merge in f32 on the CPU, write, and print what was written.
pub fn run_export(args: &ExportArgs) -> Result<crate::eval::Summarized<Vec<PathBuf>>> {
    let format: ExportFormat = args.format.parse()?;
    let dtype = parse_export_dtype(&args.dtype)?;
    let dir = crate::checkpoint::resolve_checkpoint_dir(&args.checkpoint)?;
    let cfg = crate::checkpoint::run_config(&dir, args.config.as_deref())?;
    let mut loaded = crate::model::load(&cfg.model.source, DType::F32, &candle_core::Device::Cpu)?;
    let attached = crate::checkpoint::load_adapter(&dir, &mut loaded.model)?;
    tracing::info!("{}: {}", dir.display(), attached.check);
    let (files, agreement) =
        export_checked(&loaded, attached.head.as_ref(), &cfg, &args.out, format, dtype, args.check_examples, &|_| Ok(()))?;
    let mut summary = String::new();
    if let Some(a) = agreement {
        let _ = writeln!(
            summary,
            "merged model check: {} dev examples, {:.1}% the same answers as the adapter (at least {:.1}% required), largest label-probability difference {:.1e}",
            a.examples,
            a.agreement * 100.0,
            a.tolerance * 100.0,
            a.max_prob_diff
        );
    }
    for f in &files {
        let _ = writeln!(summary, "wrote {}", f.display());
    }
    Ok(crate::eval::Summarized { value: files, summary })
}

/// [`export_merged`] into a staging folder beside `out`; then, when `check_examples` > 0, the
/// staged model is read back and checked against the adapter model ([`check::check_merged`]),
/// and moved to `out` only when it passes. A failed check leaves nothing behind.
/// `before_check` runs on the staged model's path first (the tests corrupt it there).
#[allow(clippy::too_many_arguments)]
pub fn export_checked(
    loaded: &LoadedModel,
    head: Option<&Tensor>,
    cfg: &crate::config::Config,
    out: &Path,
    format: ExportFormat,
    dtype: DType,
    check_examples: usize,
    before_check: &dyn Fn(&Path) -> Result<()>,
) -> Result<(Vec<PathBuf>, Option<check::Agreement>)> {
    if out.exists() && !(out.is_dir() && std::fs::read_dir(out).map_err(|e| Error::io(out, e))?.next().is_none()) {
        return Err(Error::Config(format!("{}: already exists; choose a new output path or remove it", out.display())));
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = out.file_name().map_or_else(|| "export".into(), |n| n.to_string_lossy().into_owned());
    let staging = parent.join(format!(".{name}.check-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    let result = (|| -> Result<(Vec<PathBuf>, Option<check::Agreement>)> {
        let staged_out = staging.join(&name);
        let linear = head.map(|weight| LinearHead { weight, labels: &cfg.data.labels });
        let written = export_merged(loaded, linear, &staged_out, format, dtype)?;
        let model_path = match (format, staged_out.is_dir()) {
            (ExportFormat::Gguf, true) => staged_out.join("model.gguf"),
            _ => staged_out.clone(),
        };
        before_check(&model_path)?;
        let agreement =
            if check_examples > 0 { Some(check::check_merged(loaded, head, &model_path, cfg, check_examples, dtype)?) } else { None };
        if let Some(a) = agreement.as_ref().filter(|a| !a.passed()) {
            return Err(Error::Model(format!(
                "{}: the merged model gives the adapter's answer on only {:.1}% of {} dev examples (at least {:.1}% required; largest label-probability difference {:.3}); nothing was written",
                out.display(),
                a.agreement * 100.0,
                a.examples,
                a.tolerance * 100.0,
                a.max_prob_diff
            )));
        }
        // Move everything written into place: the folder, or the file(s) beside a .gguf path.
        let mut moved = Vec::new();
        if staged_out.is_dir() {
            if out.exists() {
                std::fs::remove_dir(out).map_err(|e| Error::io(out, e))?;
            }
            std::fs::rename(&staged_out, out).map_err(|e| Error::io(out, e))?;
            moved.extend(written.iter().filter_map(|f| f.strip_prefix(&staged_out).ok()).map(|rel| out.join(rel)));
        } else {
            for f in &written {
                let to = parent.join(f.file_name().unwrap_or_default());
                std::fs::rename(f, &to).map_err(|e| Error::io(&to, e))?;
                moved.push(to);
            }
        }
        Ok((moved, agreement))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}
