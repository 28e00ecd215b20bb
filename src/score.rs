//! Label-word scoring: batched, length-bucketed forward passes that return, per example, the
//! log-probability of each label word at the answer position. Baselines, eval and the
//! verbalizer head all classify this way.

use std::time::Instant;

use candle_core::{D, Tensor};

use crate::model::{Batch, Llama, PrefixCache};
use crate::ops::log_softmax_last_dim;
use crate::prompt::PromptTokens;

/// The scores of one example.
#[derive(Debug, Clone)]
pub struct Scored {
    /// log p(label word | prompt) under the full vocabulary, per label.
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
    /// Log-probabilities of the label words' tokens under the full vocabulary.
    Verbalizer(&'a [u32]),
    /// A trained linear head (n_labels, hidden): log-softmax of its logits.
    Linear(&'a Tensor),
}

impl Head<'_> {
    /// Per-label log-scores for last-token hidden states (batch, hidden), f32.
    pub fn log_scores(&self, model: &Llama, last: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Head::Verbalizer(label_ids) => {
                // Full-vocabulary normaliser at the answer position only: cheap next to the forward.
                let logprobs = log_softmax_last_dim(&model.logits(last)?)?;
                let ids = Tensor::new(*label_ids, model.device())?.unsqueeze(0)?.repeat((last.dim(0)?, 1))?;
                logprobs.gather(&ids.contiguous()?, D::Minus1)
            }
            Head::Linear(w) => log_softmax_last_dim(&last.to_dtype(candle_core::DType::F32)?.matmul(&w.t()?)?),
        }
    }
}

/// Score every prompt with the verbalizer; results are in input order.
pub fn score(model: &Llama, label_ids: &[u32], prompts: &[PromptTokens], opts: ScoreOptions) -> candle_core::Result<Vec<Scored>> {
    score_head(model, Head::Verbalizer(label_ids), prompts, opts)
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
        let hidden = model.forward_hidden(&Batch { input_ids: &input, lengths: &lengths }, cache.as_ref(), false)?;
        let last = Llama::last_hidden(&hidden, &lengths)?;
        let picked: Vec<Vec<f32>> = head.log_scores(model, &last)?.to_vec2()?;
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
