//! The retrieval index the retrieval strategy draws its demonstrations from: the decoder's
//! embeddings (cached on disk per weights, texts and length limit), BM25 or MiniLM.

use std::path::Path;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::report::RetrievalInfo;
use crate::baseline::{Baselines, RetrievalIndex};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::LoadedModel;

/// The train split's retrieval index, read from `dir` when it was built for the same weights,
/// texts and length limit, else built and saved there.
pub fn cached_index(
    loaded: &LoadedModel,
    cfg: &Config,
    texts: &[&str],
    batch_size: usize,
    dir: &Path,
) -> Result<(RetrievalIndex, RetrievalInfo)> {
    let mut h = Sha256::new();
    h.update(loaded.model.fingerprint().as_bytes());
    // The fingerprint is the weights' before rounding; a half-precision path embeds differently.
    if loaded.model.projection_dtype() != loaded.model.dtype() {
        h.update(format!("{:?}", loaded.model.projection_dtype()).as_bytes());
    }
    h.update(cfg.train.max_seq_len.to_le_bytes());
    for t in texts {
        h.update(t.as_bytes());
        h.update([0u8]);
    }
    let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let (file, key_file) = (dir.join("retrieval-index.safetensors"), dir.join("retrieval-index.key"));
    let hidden = loaded.model.cfg.hidden_size;
    if std::fs::read_to_string(&key_file).is_ok_and(|k| k.trim() == key) {
        let loaded_index = candle_core::safetensors::load(&file, loaded.model.device()).ok().and_then(|mut t| t.remove("embeddings"));
        if let Some(emb) = loaded_index.filter(|e| e.dims() == [texts.len(), hidden]) {
            let info = RetrievalInfo {
                retriever: "decoder".into(),
                index_size: texts.len(),
                train_size: texts.len(),
                index_seconds: 0.0,
                index_from_cache: true,
                nearest_label_accuracy: None,
            };
            return Ok((RetrievalIndex { embeddings: emb }, info));
        }
    }
    tracing::info!("building the retrieval index of {} train texts (cached in {} afterwards)", texts.len(), dir.display());
    let start = Instant::now();
    let index = RetrievalIndex::build(&loaded.model, &loaded.tokenizer, texts, batch_size, cfg.train.max_seq_len)?;
    let seconds = start.elapsed().as_secs_f64();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let cpu = index
        .embeddings
        .to_device(&candle_core::Device::Cpu)
        .map_err(|source| Error::Candle { context: "saving the retrieval index".into(), source })?;
    let tensors = std::collections::HashMap::from([("embeddings".to_string(), cpu)]);
    crate::model::load::save_safetensors_atomic(&file, &tensors)?;
    crate::model::load::write_atomic(&key_file, key.as_bytes())?;
    Ok((
        index,
        RetrievalInfo {
            retriever: "decoder".into(),
            index_size: texts.len(),
            train_size: texts.len(),
            index_seconds: seconds,
            index_from_cache: false,
            nearest_label_accuracy: None,
        },
    ))
}

/// Give `baselines` the retrieval index `prompt.retriever` names: the decoder's embeddings
/// (read from `dir` when cached, see [`cached_index`]), a BM25 index (built in well under a
/// second, so never cached) or MiniLM sentence embeddings (a few seconds per 1,000 texts on
/// CPU, so not cached either).
pub fn prepare_retrieval<'a>(
    baselines: Baselines<'a>,
    loaded: &LoadedModel,
    cfg: &Config,
    batch_size: usize,
    dir: &Path,
) -> Result<(Baselines<'a>, RetrievalInfo)> {
    let texts = baselines.pool_texts();
    // An index built here in full (the lexical and MiniLM ones are not cached on disk).
    let built = |retriever: &str, start: Instant| RetrievalInfo {
        retriever: retriever.into(),
        index_size: texts.len(),
        train_size: texts.len(),
        index_seconds: start.elapsed().as_secs_f64(),
        index_from_cache: false,
        nearest_label_accuracy: None,
    };
    if cfg.prompt.retriever == crate::config::Retriever::Bm25 {
        let start = Instant::now();
        let index = crate::baseline::bm25::Bm25Index::build(&texts);
        let info = built("bm25", start);
        return Ok((baselines.with_bm25(index), info));
    }
    if cfg.prompt.retriever == crate::config::Retriever::Minilm {
        let start = Instant::now();
        let encoder = crate::baseline::minilm::MiniLm::load(&cfg.prompt.retriever_model, loaded.model.device())?;
        let index = crate::baseline::minilm::MiniLmIndex::build(encoder, &texts)?;
        let info = built("minilm", start);
        return Ok((baselines.with_minilm(index), info));
    }
    let (index, info) = cached_index(loaded, cfg, &texts, batch_size, dir)?;
    Ok((baselines.with_index(index), info))
}
