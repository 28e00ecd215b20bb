//! Label-word scoring: batched, length-bucketed forward passes that return, per example, the
//! log-probability of each label word at the answer position. Baselines, eval and the
//! verbalizer head all classify this way.
//!
//! A word of several tokens scores the sum of its tokens' log-probabilities (optionally their
//! mean): its first token is read at the answer position like a one-token word, and the rest
//! come from one continuation pass per example that runs every label's remaining tokens as a
//! small batch on the example's own keys and values.

use std::time::Instant;

use candle_core::{D, Tensor};

use crate::model::{Batch, Llama, PrefixCache};
use crate::ops::log_softmax_last_dim;
use crate::prompt::{LabelTokens, PromptTokens};

/// The scores of one example.
#[derive(Debug, Clone)]
pub struct Scored {
    /// log p(label word | prompt) under the full vocabulary, per label (per token with
    /// `prompt.label_norm = "mean"`).
    pub label_logprobs: Vec<f32>,
    /// Prompt length in tokens (after truncation).
    pub prompt_tokens: usize,
    /// True when the text was cut to fit `max_len`.
    pub truncated: bool,
    /// Wall time of this example's share of its batch, in milliseconds.
    pub latency_ms: f64,
}

impl Scored {
    /// Probabilities renormalised over the label words.
    pub fn label_probs(&self) -> Vec<f32> {
        let max = self.label_logprobs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = self.label_logprobs.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        exps.iter().map(|e| e / sum).collect()
    }

    /// Index of the most probable label.
    pub fn predicted(&self) -> usize {
        argmax(&self.label_logprobs)
    }
}

/// Index of the largest value (first on ties).
pub fn argmax(xs: &[f32]) -> usize {
    xs.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best }).0
}

/// How to batch.
#[derive(Debug, Clone, Copy)]
pub struct ScoreOptions {
    /// Examples per forward pass.
    pub batch_size: usize,
    /// Longest prompt in tokens; longer texts are cut from the left of the per-example part.
    pub max_len: usize,
    /// Run a prefix shared by every prompt once and reuse its keys/values.
    pub prefix_cache: bool,
}

/// Fit prefix + rest into `max_len` by dropping the start of `rest` (the text), keeping the end of
/// the prompt where the answer follows.
pub fn fit(prompt: &PromptTokens, max_len: usize) -> (Vec<u32>, bool) {
    let full = prompt.full();
    if full.len() <= max_len {
        return (full, false);
    }
    let keep_rest = max_len.saturating_sub(prompt.prefix.len()).max(1);
    let rest = &prompt.rest[prompt.rest.len().saturating_sub(keep_rest)..];
    ([prompt.prefix.as_slice(), rest].concat(), true)
}

/// How label scores are read off the final hidden state at the answer position.
#[derive(Debug, Clone, Copy)]
pub enum Head<'a> {
    /// Log-probabilities of the label words under the full vocabulary.
    Verbalizer(&'a LabelTokens),
    /// A trained linear head (n_labels, hidden): log-softmax of its logits.
    Linear(&'a Tensor),
}

impl Head<'_> {
    /// Per-label log-scores for last-token hidden states (batch, hidden), f32: for the
    /// verbalizer, the log-probability of each word's first token ([`add_continuations`] adds
    /// the rest of a longer word).
    pub fn log_scores(&self, model: &Llama, last: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Head::Verbalizer(labels) => {
                // Full-vocabulary normaliser at the answer position only: cheap next to the forward.
                let logprobs = log_softmax_last_dim(&model.logits(last)?)?;
                let first = labels.first_ids();
                let ids = Tensor::new(first.as_slice(), model.device())?.unsqueeze(0)?.repeat((last.dim(0)?, 1))?;
                logprobs.gather(&ids.contiguous()?, D::Minus1)
            }
            Head::Linear(w) => log_softmax_last_dim(&last.to_dtype(candle_core::DType::F32)?.matmul(&w.t()?)?),
        }
    }

    /// The verbalizer's words when some has more than one token (a continuation pass is needed).
    pub fn multi_token(&self) -> Option<&LabelTokens> {
        match self {
            Head::Verbalizer(labels) if !labels.single_token() => Some(labels),
            _ => None,
        }
    }
}

/// Σ log p(word token j | prompt, word tokens < j) over each word's tokens after the first,
/// (rows, n_labels) f32, for `rows` examples of one prompt length whose keys and values are
/// `cache` (batch `rows`): every (example, label) continuation runs as one right-padded row of a
/// single batch (a one-token word's row is a dummy and scores 0). `train` keeps it in the graph.
pub fn continuation_logprobs(
    model: &Llama,
    cache: &PrefixCache,
    rows: usize,
    labels: &LabelTokens,
    train: bool,
) -> candle_core::Result<Tensor> {
    let device = model.device();
    let n = labels.len();
    let width = labels.seqs.iter().map(|s| s.len().saturating_sub(1)).max().unwrap_or(0).max(1);
    let (mut ids, mut targets, mut mask) = (Vec::with_capacity(n * width), Vec::with_capacity(n * width), Vec::with_capacity(n * width));
    let mut lengths = Vec::with_capacity(n);
    for seq in &labels.seqs {
        let run = &seq[..seq.len() - 1];
        for j in 0..width {
            ids.push(run.get(j).copied().unwrap_or(seq[0]));
            targets.push(seq.get(j + 1).copied().unwrap_or(0));
            mask.push(if j + 1 < seq.len() { 1f32 } else { 0.0 });
        }
        lengths.push(run.len().max(1));
    }
    // Row r·n + j is example r's continuation of label j.
    let input = Tensor::from_vec(ids, (1, n, width), device)?.repeat((rows, 1, 1))?.reshape((rows * n, width))?;
    let lengths: Vec<usize> = (0..rows).flat_map(|_| lengths.iter().copied()).collect();
    let cache = cache.repeat_rows(n)?;
    // Layer by layer under autograd (not as whole-layer ops), which takes a prefix per row.
    let (hidden, _) = model.forward_with_kv(&Batch { input_ids: &input, lengths: &lengths }, Some(&cache), train)?;
    let logprobs = log_softmax_last_dim(&model.logits(&hidden)?)?;
    let targets = Tensor::from_vec(targets, (1, n, width), device)?.repeat((rows, 1, 1))?.reshape((rows * n, width, 1))?;
    let picked = logprobs.gather(&targets, D::Minus1)?.squeeze(D::Minus1)?;
    let mask = Tensor::from_vec(mask, (1, n, width), device)?.repeat((rows, 1, 1))?.reshape((rows * n, width))?;
    (picked * mask)?.sum(D::Minus1)?.reshape((rows, n))
}

/// The verbalizer's whole-word scores for a batch whose first-token scores are `first`
/// (batch, n_labels): each row's continuation ([`continuation_logprobs`]) on the keys and values
/// `kvs` of its `lengths[row]` tokens after `shared`, added on, then divided by the word lengths
/// under `label_norm = "mean"`. Rows of one length share a continuation pass.
pub fn add_continuations(
    model: &Llama,
    labels: &LabelTokens,
    first: &Tensor,
    shared: Option<&PrefixCache>,
    kvs: &[(Tensor, Tensor)],
    lengths: &[usize],
    train: bool,
) -> candle_core::Result<Tensor> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (row, &len) in lengths.iter().enumerate() {
        match groups.iter_mut().find(|g| lengths[g[0]] == len) {
            Some(g) => g.push(row),
            None => groups.push(vec![row]),
        }
    }
    let mut per_row: Vec<Option<Tensor>> = vec![None; lengths.len()];
    for group in &groups {
        let caches =
            group.iter().map(|&row| PrefixCache::for_row(shared, kvs, row, lengths[row])).collect::<candle_core::Result<Vec<_>>>()?;
        let cont = continuation_logprobs(model, &PrefixCache::stack(&caches)?, group.len(), labels, train)?;
        for (i, &row) in group.iter().enumerate() {
            per_row[row] = Some(cont.get(i)?);
        }
    }
    let rows: Vec<Tensor> = per_row.into_iter().flatten().collect();
    let total = (first + Tensor::stack(&rows, 0)?)?;
    if !labels.mean {
        return Ok(total);
    }
    let counts: Vec<f32> = labels.seqs.iter().map(|s| s.len() as f32).collect();
    total.broadcast_div(&Tensor::new(counts.as_slice(), model.device())?.unsqueeze(0)?)
}

/// Per-label log-scores (batch, n_labels) of `batch` run after `prefix`: `head` at each row's last
/// token, plus the rest of every longer label word ([`add_continuations`]). `train` records it
/// for the backward. Scoring and the training loss both read scores this one way.
pub fn head_scores(model: &Llama, head: Head, batch: &Batch, prefix: Option<&PrefixCache>, train: bool) -> candle_core::Result<Tensor> {
    match head.multi_token() {
        None => head.log_scores(model, &Llama::last_hidden(&model.forward_hidden(batch, prefix, train)?, batch.lengths)?),
        // The continuations need each row's keys and values (in the graph when training).
        Some(labels) => {
            let (hidden, kvs) = model.forward_with_kv(batch, prefix, train)?;
            let first = head.log_scores(model, &Llama::last_hidden(&hidden, batch.lengths)?)?;
            add_continuations(model, labels, &first, prefix, &kvs, batch.lengths, train)
        }
    }
}

/// Score every prompt with the verbalizer; results are in input order.
pub fn score(model: &Llama, labels: &LabelTokens, prompts: &[PromptTokens], opts: ScoreOptions) -> candle_core::Result<Vec<Scored>> {
    score_head(model, Head::Verbalizer(labels), prompts, opts)
}

/// Tokens all `prompts` start with, leaving each at least one token of its own.
fn common_prefix_len(prompts: &[(Vec<u32>, bool)]) -> usize {
    let Some((first, _)) = prompts.first() else { return 0 };
    prompts.iter().fold(first.len().saturating_sub(1), |len, (ids, _)| {
        let same = first.iter().zip(ids).take(len).take_while(|(a, b)| a == b).count();
        same.min(ids.len().saturating_sub(1))
    })
}

/// Score every prompt with `head`; results are in input order.
pub fn score_head(model: &Llama, head: Head, prompts: &[PromptTokens], opts: ScoreOptions) -> candle_core::Result<Vec<Scored>> {
    let fitted: Vec<(Vec<u32>, bool)> = prompts.iter().map(|p| fit(p, opts.max_len)).collect();
    // The longest token prefix every prompt shares (the system prompt and instruction, plus any
    // fixed demonstrations) runs once; each prompt keeps at least its last token to run.
    let shared_len = if opts.prefix_cache { common_prefix_len(&fitted) } else { 0 };
    let cache: Option<PrefixCache> = if shared_len > 0 { Some(model.prefix_cache(&fitted[0].0[..shared_len])?) } else { None };
    let prefix_len = cache.as_ref().map_or(0, |c| c.len);
    // Inputs to run: what follows the cached prefix.
    let inputs: Vec<(Vec<u32>, bool)> = fitted.into_iter().map(|(ids, truncated)| (ids[prefix_len..].to_vec(), truncated)).collect();
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by_key(|&i| inputs[i].0.len());
    let mut out: Vec<Option<Scored>> = vec![None; inputs.len()];
    for chunk in order.chunks(opts.batch_size.max(1)) {
        let start = Instant::now();
        let lengths: Vec<usize> = chunk.iter().map(|&i| inputs[i].0.len()).collect();
        let width = lengths.iter().copied().max().unwrap_or(1).max(1);
        let mut ids = Vec::with_capacity(chunk.len() * width);
        for &i in chunk {
            ids.extend_from_slice(&inputs[i].0);
            ids.resize(ids.len() + width - inputs[i].0.len(), 0);
        }
        let input = Tensor::from_vec(ids, (chunk.len(), width), model.device())?;
        let picked: Vec<Vec<f32>> =
            head_scores(model, head, &Batch { input_ids: &input, lengths: &lengths }, cache.as_ref(), false)?.to_vec2()?;
        let ms = start.elapsed().as_secs_f64() * 1000.0 / chunk.len() as f64;
        for (row, &i) in chunk.iter().enumerate() {
            out[i] = Some(Scored {
                label_logprobs: picked[row].clone(),
                prompt_tokens: lengths[row] + prefix_len,
                truncated: inputs[i].1,
                latency_ms: ms,
            });
        }
    }
    Ok(out.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::common_prefix_len;

    #[test]
    fn common_prefix_leaves_every_prompt_a_token() {
        let p = |ids: &[u32]| (ids.to_vec(), false);
        assert_eq!(common_prefix_len(&[p(&[1, 2, 3, 4]), p(&[1, 2, 5]), p(&[1, 2, 3])]), 2);
        assert_eq!(common_prefix_len(&[p(&[1, 2, 3]), p(&[1, 2, 3])]), 2);
        assert_eq!(common_prefix_len(&[p(&[1, 2, 3]), p(&[1])]), 0);
        assert_eq!(common_prefix_len(&[p(&[7, 2]), p(&[1, 2])]), 0);
        assert_eq!(common_prefix_len(&[]), 0);
    }
}
