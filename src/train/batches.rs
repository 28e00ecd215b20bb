//! Training inputs: prompts tokenized once, truncated to `max_seq_len`, and length-bucketed,
//! seeded batch orders that a resumed run can regenerate exactly.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::data::Example;
use crate::error::Result;
use crate::prompt::{PromptTokens, Prompter};
use crate::score::fit;

/// One tokenized training example.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Prompt tokens (shared prefix + rest, truncated).
    pub prompt: PromptTokens,
    /// Gold label index.
    pub label: usize,
}

impl Encoded {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.prompt.prefix.len() + self.prompt.rest.len()
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Tokenize every example with the zero-shot prompt; returns the examples and how many were cut.
pub fn encode(prompter: &Prompter, examples: &[Example], max_len: usize) -> Result<(Vec<Encoded>, usize)> {
    let mut truncated = 0;
    let mut out = Vec::with_capacity(examples.len());
    for ex in examples {
        let prompt = prompter.tokens(&ex.text, &[])?;
        let (ids, cut) = fit(&prompt, max_len);
        truncated += cut as usize;
        let prefix_len = prompt.prefix.len().min(ids.len());
        let prompt = PromptTokens { prefix: ids[..prefix_len].to_vec(), rest: ids[prefix_len..].to_vec() };
        out.push(Encoded { prompt, label: ex.label });
    }
    Ok((out, truncated))
}

/// The batches (of indices) of one epoch: a seeded shuffle, then within windows of 32 batches
/// examples are sorted by length (little padding), and the batch order is shuffled again.
pub fn epoch_batches(lengths: &[usize], batch_size: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let window = batch_size * 32;
    let mut batches = Vec::new();
    for chunk in order.chunks(window) {
        let mut chunk = chunk.to_vec();
        chunk.sort_by_key(|&i| (lengths[i], i));
        batches.extend(chunk.chunks(batch_size).map(<[usize]>::to_vec));
    }
    // A short last batch would weigh its examples more; drop it (it returns next epoch).
    if batches.last().is_some_and(|b| b.len() < batch_size) && batches.len() > 1 {
        batches.pop();
    }
    batches.shuffle(&mut rng);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_deterministic_bucketed_and_cover_the_data() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 37) % 101 + 5).collect();
        let a = epoch_batches(&lengths, 8, 1, 0);
        assert_eq!(a, epoch_batches(&lengths, 8, 1, 0));
        assert_ne!(a, epoch_batches(&lengths, 8, 1, 1));
        assert_ne!(a, epoch_batches(&lengths, 8, 2, 0));
        assert_eq!(a.len(), 125);
        let mut seen: Vec<usize> = a.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        // Bucketing: the mean spread of lengths inside a batch is far below the data's spread.
        let spread: f64 = a
            .iter()
            .map(|b| (b.iter().map(|&i| lengths[i]).max().unwrap() - b.iter().map(|&i| lengths[i]).min().unwrap()) as f64)
            .sum::<f64>()
            / a.len() as f64;
        assert!(spread < 10.0, "mean in-batch length spread {spread}");
    }
}
