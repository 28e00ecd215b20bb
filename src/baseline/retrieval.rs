//! Retrieval of demonstrations: an exact in-memory index of mean-pooled final hidden states of
//! the same model, searched by cosine similarity.

use std::time::Instant;

use candle_core::{D, DType, Tensor};
use tokenizers::Tokenizer;

use crate::error::{CandleContext, Error, Result};
use crate::model::{Batch, Llama};

/// Unit-norm text embeddings, one row per indexed text.
#[derive(Debug, Clone)]
pub struct RetrievalIndex {
    /// (n, hidden) f32, rows L2-normalised so a dot product is a cosine similarity.
    pub embeddings: Tensor,
}

impl RetrievalIndex {
    /// Embed every text (see [`embed`]).
    pub fn build(model: &Llama, tokenizer: &Tokenizer, texts: &[&str], batch_size: usize, max_tokens: usize) -> Result<Self> {
        Ok(Self { embeddings: embed(model, tokenizer, texts, batch_size, max_tokens)?.0 })
    }

    /// Number of indexed texts.
    pub fn len(&self) -> usize {
        self.embeddings.dims().first().copied().unwrap_or(0)
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k` most similar indexed rows of each query (unit-norm rows of `queries`), as
    /// (row, cosine) sorted from most to least similar. Exact search: one matmul per query block.
    pub fn nearest(&self, queries: &Tensor, k: usize) -> Result<Vec<Vec<(usize, f32)>>> {
        let k = k.min(self.len());
        let mut out = Vec::new();
        let rows = queries.dims().first().copied().unwrap_or(0);
        // Blocks bound the (queries x index) similarity matrix held at once.
        for start in (0..rows).step_by(256) {
            let block = queries.narrow(0, start, (rows - start).min(256)).context(|| "retrieval: query block".into())?;
            let sims: Vec<Vec<f32>> = block
                .matmul(&self.embeddings.t().context(|| "retrieval: index".into())?)
                .and_then(|s| s.to_vec2())
                .context(|| "retrieval: similarities".into())?;
            for row in sims {
                let mut idx: Vec<usize> = (0..row.len()).collect();
                // Ties broken by index so the neighbours are deterministic.
                let by_sim = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
                if k < idx.len() {
                    idx.select_nth_unstable_by(k, by_sim);
                    idx.truncate(k);
                }
                idx.sort_by(by_sim);
                out.push(idx.into_iter().map(|i| (i, row[i])).collect());
            }
        }
        Ok(out)
    }
}

/// Token ids of `text` alone (no special tokens), keeping at most the first `max_tokens`.
pub fn text_ids(tokenizer: &Tokenizer, text: &str, max_tokens: usize) -> Result<Vec<u32>> {
    let enc = tokenizer.encode(text, false).map_err(|e| Error::Data(format!("tokenizing {:?}: {e}", short(text))))?;
    let mut ids = enc.get_ids().to_vec();
    ids.truncate(max_tokens.max(1));
    Ok(ids)
}

/// `text` cut to its first `max_tokens` tokens (at a character boundary), so one long
/// demonstration cannot crowd the question out of the prompt.
pub fn clip_text(tokenizer: &Tokenizer, text: &str, max_tokens: usize) -> Result<String> {
    let enc = tokenizer.encode(text, false).map_err(|e| Error::Data(format!("tokenizing {:?}: {e}", short(text))))?;
    if enc.len() <= max_tokens {
        return Ok(text.to_string());
    }
    let mut end = enc.get_offsets().get(max_tokens.saturating_sub(1)).map_or(text.len(), |o| o.1).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Ok(text[..end].to_string())
}

fn short(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Mean-pooled (over real, non-pad tokens) final hidden states of each text alone, L2-normalised,
/// as an (n, hidden) f32 tensor; also each text's share of its batch's wall time in ms.
/// Texts are batched by length so padding stays small.
pub fn embed(model: &Llama, tokenizer: &Tokenizer, texts: &[&str], batch_size: usize, max_tokens: usize) -> Result<(Tensor, Vec<f64>)> {
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| text_ids(tokenizer, t, max_tokens)).collect::<Result<_>>()?;
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i].len());
    let hidden = model.cfg.hidden_size;
    let mut rows = vec![0f32; ids.len() * hidden];
    let mut ms = vec![0f64; ids.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let start = Instant::now();
        // An empty text still gets one (pad) position so the pooled vector is defined.
        let lengths: Vec<usize> = chunk.iter().map(|&i| ids[i].len().max(1)).collect();
        let width = lengths.iter().copied().max().unwrap_or(1);
        let mut flat = Vec::with_capacity(chunk.len() * width);
        let mut mask = Vec::with_capacity(chunk.len() * width);
        for (&i, &len) in chunk.iter().zip(&lengths) {
            flat.extend_from_slice(&ids[i]);
            flat.resize(flat.len() + width - ids[i].len(), 0);
            mask.extend((0..width).map(|p| if p < len { 1f32 } else { 0.0 }));
        }
        let pooled = (|| -> candle_core::Result<Vec<Vec<f32>>> {
            let input = Tensor::from_vec(flat, (chunk.len(), width), model.device())?;
            let h = model.forward_hidden(&Batch { input_ids: &input, lengths: &lengths }, None, false)?.to_dtype(DType::F32)?;
            let mask = Tensor::from_vec(mask, (chunk.len(), width, 1), model.device())?;
            let count = Tensor::from_vec(lengths.iter().map(|&l| l as f32).collect::<Vec<_>>(), (chunk.len(), 1), model.device())?;
            let mean = h.broadcast_mul(&mask)?.sum(1)?.broadcast_div(&count)?;
            let norm = mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12f32, f32::INFINITY)?;
            mean.broadcast_div(&norm)?.to_vec2()
        })()
        .context(|| "embedding texts for retrieval".into())?;
        let share = start.elapsed().as_secs_f64() * 1000.0 / chunk.len() as f64;
        for (&i, v) in chunk.iter().zip(pooled) {
            rows[i * hidden..(i + 1) * hidden].copy_from_slice(&v);
            ms[i] = share;
        }
    }
    let t = Tensor::from_vec(rows, (ids.len(), hidden), model.device()).context(|| "embedding texts for retrieval".into())?;
    Ok((t, ms))
}
