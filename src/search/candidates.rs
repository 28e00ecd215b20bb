//! The candidates each stage of the search proposes: the hand-written strategies, calibration
//! twins, label-word sets and demonstration draws.

use super::{Candidate, Searcher, stored};
use crate::baseline::{Strategy, demo_orders, sample_demos};
use crate::data::Example;
use crate::error::Result;
use crate::prompt::Demo;

/// The candidate with calibration the other way round.
pub(super) fn calibration_twin(c: &Candidate) -> Candidate {
    let name = match c.name.strip_suffix(", calibrated") {
        Some(plain) => plain.to_string(),
        None => format!("{}, calibrated", c.name),
    };
    Candidate { name, calibrate: !c.calibrate, ..c.clone() }
}

/// The hand-written strategies of `opts.families` as candidates (zero-shot is v1 itself).
pub(super) fn hand_written(s: &Searcher, v1: &Candidate) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for &f in &s.opts.families {
        match f {
            Strategy::FewShot => {
                let demos = s.baselines.few_shot_orders()?.swap_remove(0);
                out.push(Candidate { name: "few-shot (hand-written)".into(), demos, demos_key: "hand".into(), ..v1.clone() });
            }
            Strategy::Calibrated => out.push(Candidate { name: "calibrated (hand-written)".into(), calibrate: true, ..v1.clone() }),
            Strategy::Retrieval | Strategy::Cot => out.push(Candidate { name: format!("{f} (hand-written)"), family: f, ..v1.clone() }),
            Strategy::ZeroShot => {}
        }
    }
    Ok(out)
}

/// Every assignment of candidate words to labels (at most `cap`, distinct words per label by
/// construction), but the base's own.
pub(super) fn word_sets(per_label: &[Vec<usize>], base: &Candidate, words: &[String], cap: usize) -> Vec<Candidate> {
    let mut sets: Vec<Vec<usize>> = vec![Vec::new()];
    for options in per_label {
        sets = sets.into_iter().flat_map(|s| options.iter().map(move |&w| [s.clone(), vec![w]].concat())).take(cap + 1).collect();
    }
    sets.into_iter()
        .filter(|ws| *ws != base.words)
        .take(cap)
        .map(|ws| {
            let shown: Vec<String> = ws.iter().map(|&w| format!("{:?}", words[w])).collect();
            Candidate { name: format!("words {}", shown.join(" / ")), words: ws, ..base.clone() }
        })
        .collect()
}

/// `k` per label ∈ {1, 2, 4} class-balanced demonstrations, several seeded draws in several
/// orders, on the base prompt. As in few-shot, the example keeps its own `train.max_seq_len`
/// and the demonstrations come before it: they are drawn from train texts of at most a quarter
/// of `train.max_seq_len` tokens, short enough that all k of them, with their questions and
/// answers, take at most twice `train.max_seq_len` (a shared prefix, computed once per prompt).
pub(super) fn demonstration_candidates(s: &Searcher, base: &Candidate, train: &[Example]) -> Result<Vec<Candidate>> {
    let cfg = s.cfg;
    let n_labels = cfg.data.labels.len();
    let prompter = stored::prompter(s.loaded, cfg, &base.template, &s.word_map(&base.words))?;
    let bare = prompter.prefix_tokens(&[])?.len();
    let overhead = prompter.prefix_tokens(&[Demo { text: String::new(), label: 0 }])?.len().saturating_sub(bare);
    let sample = &train[..train.len().min(4000)];
    let lengths: Vec<usize> =
        sample.iter().map(|e| s.loaded.tokenizer.encode(e.text.as_str(), false).map_or(usize::MAX, |t| t.len())).collect();
    let mut out = Vec::new();
    for per in [1usize, 2, 4] {
        let k = per * n_labels;
        let room = (2 * cfg.train.max_seq_len).saturating_sub(k * overhead);
        let cap = (room / k).min(cfg.train.max_seq_len / 4);
        if cap < 8 {
            continue;
        }
        let pool: Vec<Example> = sample.iter().zip(&lengths).filter(|(_, l)| **l <= cap).map(|(e, _)| e.clone()).collect();
        let enough = (0..n_labels).all(|l| pool.iter().filter(|e| e.label == l).count() >= per);
        if !enough {
            continue;
        }
        for draw in 0..s.opts.draws {
            let seed = cfg.prompt.seed + 1000 * per as u64 + draw as u64;
            let demos = sample_demos(&pool, n_labels, k, seed)?;
            for (o, order) in demo_orders(&demos, s.opts.orders, seed).into_iter().enumerate() {
                out.push(Candidate {
                    name: format!(
                        "{}, {per} demonstration{} per label (draw {}, order {})",
                        base.name,
                        if per == 1 { "" } else { "s" },
                        draw + 1,
                        o + 1
                    ),
                    demos: order,
                    demos_key: format!("{per}/{draw}/{o}"),
                    ..base.clone()
                });
            }
        }
    }
    Ok(out)
}
