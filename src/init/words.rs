//! Label words for `wick init`: each label's name as the model tokenizes it, kept apart from the
//! others, and a hint for labels whose names say nothing.

use std::collections::{HashMap, HashSet};

use tokenizers::Tokenizer;

use super::LabelWord;
use crate::data::Example;
use crate::error::{Error, Result};

/// "0", "-1", "LABEL_2", "class3", "A": a label whose name tells the model nothing.
pub fn code_like(label: &str) -> bool {
    let lower = label.to_ascii_lowercase();
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let stem =
        ["label", "class", "cat", "lbl"].iter().find_map(|p| lower.strip_prefix(p)).map(|rest| rest.trim_start_matches(['_', '-', ' ']));
    digits(lower.trim_start_matches('-')) || stem.is_some_and(digits) || label.chars().count() == 1
}

/// A word per label, tokenized by `tokenizer`; words that would tokenize the same are replaced
/// by the first alternative that does not, and the note says so.
pub fn propose_label_words(labels: &[String], tokenizer: &Tokenizer, examples: &[Example]) -> Result<Vec<LabelWord>> {
    let encode = |w: &str| -> Result<Vec<u32>> {
        Ok(tokenizer.encode(w, false).map_err(|e| Error::Model(format!("tokenizing label word {w:?}: {e}")))?.get_ids().to_vec())
    };
    let mut taken: Vec<Vec<u32>> = Vec::new();
    let mut out = Vec::new();
    for (index, label) in labels.iter().enumerate() {
        let natural = format!(" {}", label.replace(['_', '-'], " ").split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase());
        let first = if code_like(label) { format!(" {label}") } else { natural };
        let alternatives =
            [first.clone(), format!(" {label}"), label.clone(), format!(" {label} {}", index + 1), format!(" class {}", index + 1)];
        let mut chosen = None;
        for w in alternatives {
            let ids = encode(&w)?;
            if !ids.is_empty() && !taken.contains(&ids) {
                chosen = Some((w, ids));
                break;
            }
        }
        let (word, ids) =
            chosen.ok_or_else(|| Error::Config(format!("label {label:?}: no word for it tokenizes apart from the other labels'")))?;
        let mut notes = Vec::new();
        if word != first {
            let first_ids = encode(&first)?;
            let clash = taken.iter().position(|t| *t == first_ids).map_or(String::new(), |j| format!(" as label {:?}'s word", labels[j]));
            notes.push(format!("{first:?} tokenizes the same{clash}, so {word:?}"));
        }
        if code_like(label) {
            let hint = distinctive_words(examples, index, 3);
            let hint = if hint.is_empty() { String::new() } else { format!("; its texts most often use {}", hint.join(", ")) };
            notes.push(format!(
                "{label:?} is a numeric or code-like label, which tells the model nothing: set prompt.label_words.{label:?} to a word that names the class (and use it in the template's list){hint}"
            ));
        }
        out.push(LabelWord { label: label.clone(), word, tokens: ids.len(), note: (!notes.is_empty()).then(|| notes.join("; ")) });
        taken.push(ids);
    }
    Ok(out)
}

/// Words that set one label's texts apart: the highest smoothed log-odds of appearing in a text
/// of that label against the others, among words in at least 5 of its texts.
pub fn distinctive_words(examples: &[Example], label: usize, n: usize) -> Vec<String> {
    let mut inside: HashMap<String, usize> = HashMap::new();
    let mut outside: HashMap<String, usize> = HashMap::new();
    let (mut n_in, mut n_out) = (0usize, 0usize);
    for e in examples {
        let words: HashSet<String> =
            e.text.split(|c: char| !c.is_alphabetic()).filter(|w| w.chars().count() >= 3).map(str::to_lowercase).collect();
        let (map, total) = if e.label == label { (&mut inside, &mut n_in) } else { (&mut outside, &mut n_out) };
        *total += 1;
        for w in words {
            *map.entry(w).or_default() += 1;
        }
    }
    let mut scored: Vec<(f64, String)> = inside
        .iter()
        .filter(|(_, c)| **c >= 5)
        .map(|(w, &c)| {
            let o = outside.get(w).copied().unwrap_or(0);
            let score = ((c as f64 + 1.0) / (n_in as f64 + 2.0)).ln() - ((o as f64 + 1.0) / (n_out as f64 + 2.0)).ln();
            (score, w.clone())
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.into_iter().take(n).map(|(_, w)| w).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_like_labels_are_named_as_such() {
        for l in ["0", "1", "-1", "LABEL_2", "label-0", "class3", "A"] {
            assert!(code_like(l), "{l}");
        }
        for l in ["positive", "movie", "labelled", "Class act", "no"] {
            assert!(!code_like(l), "{l}");
        }
    }

    #[test]
    fn distinctive_words_separate_the_labels() {
        let ex = |t: &str, label| Example { text: t.into(), label, group: None, line: 0 };
        let mut examples = Vec::new();
        for i in 0..6 {
            examples.push(ex(&format!("great film number{i} the"), 1));
            examples.push(ex(&format!("awful film number{i} the"), 0));
        }
        assert_eq!(distinctive_words(&examples, 1, 1), ["great"]);
        assert_eq!(distinctive_words(&examples, 0, 1), ["awful"]);
    }
}
