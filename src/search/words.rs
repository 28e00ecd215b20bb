//! Label-word candidates from the model's own probabilities (in the spirit of LM-BFF's automatic
//! label words): after the prompt, on train examples of each label, the whole-word tokens the
//! model finds likely for that label and less likely for every other.

use crate::data::Example;
use crate::error::{CandleContext, Result};
use crate::model::LoadedModel;
use crate::prompt::{LabelTokens, Prompter};
use crate::score::{ScoreOptions, score};

/// Tokens considered per label: the most likely under the label.
const LIKELY: usize = 50;

/// Nats by which a candidate's mean log-probability must beat every other label's (twice as
/// likely): a word the model says as readily for every label tells none apart.
const MARGIN: f32 = std::f32::consts::LN_2;

/// A whole word as one token: a leading space and at least three letters (shorter pieces are
/// mostly the starts of longer words, " Un", " Dis").
pub fn is_word(decoded: &str) -> bool {
    let Some(rest) = decoded.strip_prefix(' ') else { return false };
    rest.chars().count() >= 3 && rest.chars().all(char::is_alphabetic)
}

/// Up to `n` candidate tokens per label from `class_means[label][token]`, the mean log-probability
/// of each token after the prompt on that label's examples: among the [`LIKELY`] most likely
/// tokens that `word` accepts, those at least [`MARGIN`] more likely than under every other
/// label, most likely first (LM-BFF ranks by likelihood too; ranking by the margin alone picks
/// rare word pieces). A token is a candidate of one label at most.
pub fn rank_candidates(class_means: &[Vec<f32>], word: &dyn Fn(u32) -> bool, n: usize) -> Vec<Vec<u32>> {
    let vocab = class_means.first().map_or(0, Vec::len);
    (0..class_means.len())
        .map(|c| {
            let mut likely: Vec<u32> = (0..vocab as u32).filter(|&t| word(t)).collect();
            likely.sort_by(|&a, &b| class_means[c][b as usize].total_cmp(&class_means[c][a as usize]));
            likely.truncate(LIKELY);
            let margin = |t: u32| {
                let others = (0..class_means.len()).filter(|&o| o != c).map(|o| class_means[o][t as usize]);
                class_means[c][t as usize] - others.fold(f32::NEG_INFINITY, f32::max)
            };
            likely.into_iter().filter(|&t| margin(t) > MARGIN).take(n).collect()
        })
        .collect()
}

/// Mean full-vocabulary log-probabilities after `prompter`'s zero-shot prompt, per label, over
/// up to `per_label` train examples of each label (the first ones of the seeded split).
pub fn class_means(
    loaded: &LoadedModel,
    prompter: &Prompter,
    train: &[Example],
    n_labels: usize,
    per_label: usize,
    max_len: usize,
) -> Result<Vec<Vec<f32>>> {
    let vocab = loaded.model.cfg.vocab_size;
    let every = LabelTokens { seqs: (0..vocab as u32).map(|t| vec![t]).collect(), mean: false };
    let mut means = vec![vec![0f32; vocab]; n_labels];
    for (label, mean) in means.iter_mut().enumerate() {
        let texts: Vec<&Example> = train.iter().filter(|e| e.label == label).take(per_label).collect();
        let prompts = texts.iter().map(|e| prompter.tokens(&e.text, &[])).collect::<Result<Vec<_>>>()?;
        let scored = score(&loaded.model, &every, &prompts, ScoreOptions { batch_size: 8, max_len, prefix_cache: true })
            .context(|| "scoring every token after the prompt".into())?;
        for s in &scored {
            for (m, l) in mean.iter_mut().zip(&s.label_logprobs) {
                *m += l / scored.len() as f32;
            }
        }
    }
    Ok(means)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planted_label_tokens_are_found() {
        // 300 tokens at about −10; token 7 likely for label 0 only, 11 for label 1 only, 9 likely
        // for both (a generic word), 13 likely for label 0 but not a word.
        let mut means: Vec<Vec<f32>> = (0..2).map(|c| (0..300).map(|t| -10.0 - ((t * 7 + c * 3) % 11) as f32 * 0.01).collect()).collect();
        means[0][7] = -2.0;
        means[1][7] = -8.0;
        means[0][11] = -7.5;
        means[1][11] = -2.5;
        means[0][9] = -1.0;
        means[1][9] = -1.05;
        means[0][13] = -0.5;
        let found = rank_candidates(&means, &|t| t != 13, 3);
        assert_eq!(found[0][0], 7);
        assert_eq!(found[1][0], 11);
        assert!(!found[0].contains(&13) && !found[1].contains(&7) && !found[0].contains(&11));
        assert!(!found[0].contains(&9) && !found[1].contains(&9), "a word as likely under both labels tells neither apart");
        assert_eq!((found[0].len(), found[1].len()), (1, 1), "{found:?}");
        // Among discriminating words, the likelier comes first.
        means[0][21] = -1.5;
        means[1][21] = -5.0;
        assert_eq!(rank_candidates(&means, &|t| t != 13, 3)[0], [21, 7]);
        assert!(is_word(" great") && !is_word("great") && !is_word(" Un") && !is_word(" 42"));
    }
}
