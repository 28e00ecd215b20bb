//! Chain-of-thought prompting: the prompt asks for brief reasoning before the answer; the model
//! writes it (greedy, on the KV cache, stopping at end-of-turn or after `prompt.cot_max_tokens`),
//! then the answer prefix follows and the label words are scored as in every other strategy.

use std::time::Instant;

use crate::config::PromptConfig;
use crate::error::{Error, Result};
use crate::model::LoadedModel;
use crate::prompt::{PromptTokens, Prompter};

/// Generation prompts (sorted by length, left-padded) at most this many rows to a decoding batch.
/// A step reads every weight once for all its rows: on a 2-core Zen 3, 64 rows of 120-token
/// prompts cost 3.0 ms per row and step against 5.1 ms for 16.
const DECODE_ROWS: usize = 64;

/// What the model reasoned for each prompt, and the prompts to score after it.
#[derive(Debug, Clone)]
pub struct Reasoned {
    /// Generation prompt + reasoning + "\n" + answer prefix, ready for label-word scoring.
    pub prompts: Vec<PromptTokens>,
    /// The reasoning, decoded.
    pub reasoning: Vec<String>,
    /// Tokens generated per prompt (the request's output tokens, with the answer token).
    pub generated_tokens: Vec<usize>,
    /// Generation wall time per prompt, ms: the whole generation's time shared equally.
    pub generation_ms_per_prompt: f64,
    /// The final-normed hidden state (n, hidden) after each full prompt, read off the
    /// generation's own cache (the label words' first tokens follow it); None where
    /// [`crate::model::Llama::generate_then_read`] does not apply, so the prompts are scored anew.
    pub answer_hidden: Option<candle_core::Tensor>,
}

/// The model's end-of-turn tokens: the chat markers its vocabulary has, and its EOS.
pub fn stop_tokens(loaded: &LoadedModel) -> Vec<u32> {
    let mut out: Vec<u32> = ["<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>", "<end_of_turn>"]
        .iter()
        .filter_map(|t| loaded.tokenizer.token_to_id(t))
        .collect();
    if let Some(eos) = loaded.model.cfg.eos_token_id
        && !out.contains(&eos)
    {
        out.push(eos);
    }
    out
}

/// The generation prompter of one template: the template, then `prompt.cot_instruction`, and no
/// answer prefix (the reasoning starts where the answer would).
pub fn prompter(cfg: &PromptConfig, labels: &[String], loaded: &LoadedModel, template: &str) -> Result<Prompter> {
    let mut cot = cfg.clone();
    cot.answer_prefix = String::new();
    let template = format!("{template}\n{}", cfg.cot_instruction);
    Prompter::new(&cot, labels, &loaded.tokenizer, loaded.chat_template.as_deref(), Some(&template))
}

/// Generate each prompt's reasoning and append "\n" + `answer_prefix` to it.
pub fn reason(loaded: &LoadedModel, prompts: &[PromptTokens], answer_prefix: &str, max_tokens: usize) -> Result<Reasoned> {
    let tail = loaded
        .tokenizer
        .encode(format!("\n{answer_prefix}"), false)
        .map_err(|e| Error::Data(format!("tokenizing the answer prefix: {e}")))?
        .get_ids()
        .to_vec();
    let full: Vec<Vec<u32>> = prompts.iter().map(PromptTokens::full).collect();
    let stop = stop_tokens(loaded);
    let start = Instant::now();
    let context = || "generating chain-of-thought reasoning".to_string();
    let read = loaded
        .model
        .generate_then_read(&full, max_tokens, &stop, &tail, DECODE_ROWS)
        .map_err(|source| Error::Candle { context: context(), source })?;
    let (generated, answer_hidden) = match read {
        Some((generated, hidden)) => (generated, Some(hidden)),
        None => (
            loaded
                .model
                .generate_greedy_batch(&full, max_tokens, &stop, DECODE_ROWS)
                .map_err(|source| Error::Candle { context: context(), source })?,
            None,
        ),
    };
    let generation_ms_per_prompt = start.elapsed().as_secs_f64() * 1000.0 / prompts.len().max(1) as f64;
    let mut out =
        Reasoned { prompts: Vec::new(), reasoning: Vec::new(), generated_tokens: Vec::new(), generation_ms_per_prompt, answer_hidden };
    for (p, g) in prompts.iter().zip(&generated) {
        let text = loaded.tokenizer.decode(g, true).map_err(|e| Error::Data(format!("decoding reasoning: {e}")))?;
        out.prompts.push(PromptTokens { prefix: p.prefix.clone(), rest: [p.rest.as_slice(), g, &tail].concat() });
        out.reasoning.push(text.trim().to_string());
        out.generated_tokens.push(g.len() + 1);
    }
    Ok(out)
}
