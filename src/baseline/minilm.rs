//! Dense retrieval with a small sentence encoder: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT
//! that sentence-transformers trained for semantic similarity) through candle's BERT, pooled as
//! sentence-transformers pools it: the mean over real tokens, then L2 normalisation, so a dot
//! product is a cosine similarity. Search is exact, like the decoder's index.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{Tokenizer, TruncationParams};

use crate::baseline::retrieval::RetrievalIndex;
use crate::error::{CandleContext, Error, Result};

/// Where scripts/fetch-assets puts the model (the default of `prompt.retriever_model`).
pub const DEFAULT_DIR: &str = crate::config::DEFAULT_RETRIEVER_MODEL;
/// Tokens per text, [CLS] and [SEP] included: the model's `max_seq_length` in
/// sentence-transformers (its tokenizer.json says 128, which sentence-transformers overrides).
pub const MAX_TOKENS: usize = 256;
/// Texts per forward pass; texts are sorted by length first, so little of it is padding.
pub const BATCH_SIZE: usize = 32;
/// The files a model folder needs.
pub const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// The all-MiniLM-L6-v2 encoder: BERT weights (f32) and its WordPiece tokenizer.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    hidden: usize,
    device: Device,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MiniLm({} dims on {:?})", self.hidden, self.device)
    }
}

impl MiniLm {
    /// Load config.json, tokenizer.json and model.safetensors from `dir` onto `device`, in f32.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let file = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::Model(format!("{}: no {name} for the minilm retriever (run scripts/fetch-assets)", dir.display())))
            }
        };
        let [config, tokenizer, weights] = FILES.map(file);
        let (config, tokenizer, weights) = (config?, tokenizer?, weights?);
        let text = std::fs::read_to_string(&config).map_err(|e| Error::io(&config, e))?;
        let cfg: BertConfig = serde_json::from_str(&text).map_err(|e| Error::Model(format!("{}: {e}", config.display())))?;
        let mut tok = Tokenizer::from_file(&tokenizer).map_err(|e| Error::Model(format!("{}: {e}", tokenizer.display())))?;
        // Pad per batch ourselves (the file pads every text to 128), and cut where
        // sentence-transformers cuts, keeping [CLS] and [SEP].
        tok.with_padding(None);
        tok.with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| Error::Model(format!("{}: {e}", tokenizer.display())))?;
        let tensors = candle_core::safetensors::load(&weights, device).context(|| format!("reading {}", weights.display()))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let model = BertModel::load(vb, &cfg).map_err(|e| Error::Model(format!("{}: {e}", weights.display())))?;
        Ok(Self { model, tokenizer: tok, hidden: cfg.hidden_size, device: device.clone() })
    }

    /// Embedding width (384).
    pub fn dim(&self) -> usize {
        self.hidden
    }

    /// Token ids of `text` with [CLS] and [SEP], at most [`MAX_TOKENS`].
    pub fn ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| Error::Data(format!("tokenizing {:?}: {e}", short(text))))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Unit-norm sentence embeddings of `texts` as an (n, dim) f32 tensor, and each text's share
    /// of its batch's wall time in ms.
    pub fn embed(&self, texts: &[&str]) -> Result<(Tensor, Vec<f64>)> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.ids(t)).collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut rows = vec![0f32; ids.len() * self.hidden];
        let mut ms = vec![0f64; ids.len()];
        for chunk in order.chunks(BATCH_SIZE) {
            let start = Instant::now();
            let pooled = self.embed_batch(chunk.iter().map(|&i| ids[i].as_slice())).context(|| "embedding texts with MiniLM".into())?;
            let share = start.elapsed().as_secs_f64() * 1000.0 / chunk.len() as f64;
            for (&i, v) in chunk.iter().zip(pooled) {
                rows[i * self.hidden..(i + 1) * self.hidden].copy_from_slice(&v);
                ms[i] = share;
            }
        }
        let t = Tensor::from_vec(rows, (ids.len(), self.hidden), &self.device).context(|| "embedding texts with MiniLM".into())?;
        Ok((t, ms))
    }

    fn embed_batch<'a>(&self, batch: impl Iterator<Item = &'a [u32]>) -> candle_core::Result<Vec<Vec<f32>>> {
        let batch: Vec<&[u32]> = batch.collect();
        let width = batch.iter().map(|b| b.len()).max().unwrap_or(1).max(1);
        let mut flat = Vec::with_capacity(batch.len() * width);
        let mut mask = Vec::with_capacity(batch.len() * width);
        for ids in &batch {
            flat.extend_from_slice(ids);
            flat.resize(flat.len() + width - ids.len(), 0);
            mask.extend((0..width).map(|p| if p < ids.len() { 1f32 } else { 0.0 }));
        }
        let n = batch.len();
        let input = Tensor::from_vec(flat, (n, width), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, width), &self.device)?;
        let h = self.model.forward(&input, &input.zeros_like()?, Some(&mask))?;
        // sentence-transformers' Pooling(mean) then Normalize: padding positions count for nothing.
        let mask = mask.unsqueeze(2)?;
        let count = mask.sum(1)?.clamp(1e-9f32, f32::INFINITY)?;
        let mean = h.broadcast_mul(&mask)?.sum(1)?.broadcast_div(&count)?;
        let norm = mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12f32, f32::INFINITY)?;
        mean.broadcast_div(&norm)?.to_vec2()
    }
}

fn short(text: &str) -> String {
    text.chars().take(40).collect()
}

/// A MiniLM index of the pool texts; positions are pool positions.
#[derive(Debug)]
pub struct MiniLmIndex {
    encoder: MiniLm,
    index: RetrievalIndex,
}

impl MiniLmIndex {
    /// Embed every text of the pool with `encoder`.
    pub fn build(encoder: MiniLm, texts: &[&str]) -> Result<Self> {
        let (embeddings, _) = encoder.embed(texts)?;
        Ok(Self { encoder, index: RetrievalIndex { embeddings } })
    }

    /// Number of indexed texts.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The encoder, e.g. to embed queries once for several searches.
    pub fn encoder(&self) -> &MiniLm {
        &self.encoder
    }

    /// The (n, dim) unit-norm embeddings of the pool.
    pub fn embeddings(&self) -> &Tensor {
        &self.index.embeddings
    }

    /// The `k` most similar pool positions for `query`, most similar first, as (position,
    /// cosine); ties go to the lower position, so every run picks the same demonstrations.
    pub fn nearest(&self, query: &str, k: usize) -> Result<Vec<(usize, f32)>> {
        Ok(self.nearest_batch(&[query], k)?.0.pop().unwrap_or_default())
    }

    /// [`MiniLmIndex::nearest`] for many queries at once (batched embedding), and each query's
    /// embedding plus search time in ms.
    pub fn nearest_batch(&self, queries: &[&str], k: usize) -> Result<(Vec<Vec<(usize, f32)>>, Vec<f64>)> {
        let start = Instant::now();
        let (q, mut ms) = self.encoder.embed(queries)?;
        let embed_ms: f64 = ms.iter().sum();
        let nearest = self.index.nearest(&q, k)?;
        // Search time is spread evenly; embedding time is already per query.
        let search_ms = (start.elapsed().as_secs_f64() * 1000.0 - embed_ms).max(0.0) / queries.len().max(1) as f64;
        ms.iter_mut().for_each(|m| *m += search_ms);
        Ok((nearest, ms))
    }
}
