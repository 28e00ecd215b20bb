//! Prompt engineering done by the machine, chosen on dev only. Starting from the hand-written
//! zero-shot prompt ("v1"), stages edit one part of the best prompt at a time, as a person
//! iterating on a prompt would: the hand-written strategies (few-shot, calibrated, retrieval,
//! chain-of-thought), the instruction (a task-neutral bank and the config's own), the label words
//! (the model's own likeliest words per label), calibration, and demonstrations (k per label,
//! seeded draws, orders). Each stage races its candidates against the leader on growing slices
//! of the dev sample ([`race`]); the leader after each stage is a point of the iteration curve.
//!
//! A forward pass scores a prompt's whole label-word candidate set at once (one log-softmax over
//! the vocabulary), so label words and calibration cost no new pass over the texts.

pub mod bank;
mod candidates;
pub mod race;
pub mod stored;
pub mod words;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::baseline::{Baselines, CONTENT_FREE, Memo, Strategy, calibrate};
use crate::config::Config;
use crate::data::Example;
use crate::error::{CandleContext, Error, Result};
use crate::model::LoadedModel;
use crate::prompt::{Demo, LabelTokens};
use crate::score::{ScoreOptions, Scored, argmax, score};
use crate::stats::{Interval, Z95, wilson};

use candidates::{calibration_twin, demonstration_candidates, hand_written, word_sets};
pub use race::{DropRule, Dropped};
pub use stored::{SearchedPrompt, StoredDemo, prompt_path, score_searched};

/// How a search runs.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Stages start only while the search has spent fewer minutes than this.
    pub minutes: f64,
    /// Examples per forward pass.
    pub batch_size: usize,
    /// How races drop candidates.
    pub rule: DropRule,
    /// Label-word candidates per label from the model's probabilities.
    pub words_per_label: usize,
    /// Train examples per label that propose them.
    pub word_examples: usize,
    /// Seeded demonstration draws per k.
    pub draws: usize,
    /// Orders of each draw.
    pub orders: usize,
    /// The hand-written strategies raced in the first stage (zero-shot is always v1).
    pub families: Vec<Strategy>,
    /// Told each stage as it starts and ends (the command line prints it; the library does not).
    pub progress: fn(&str),
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            minutes: 15.0,
            batch_size: 16,
            rule: DropRule::default(),
            words_per_label: 6,
            word_examples: 32,
            draws: 3,
            orders: 2,
            families: vec![Strategy::FewShot, Strategy::Calibrated, Strategy::Retrieval, Strategy::Cot],
            progress: |_| {},
        }
    }
}

/// One candidate's result on dev.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateResult {
    /// What it is.
    pub name: String,
    /// The stage that proposed it.
    pub stage: String,
    /// Dev accuracy on the examples it was scored on.
    pub dev_accuracy: f64,
    /// Those examples (a prefix of the dev sample).
    pub dev_n: usize,
    /// 95% Wilson interval of `dev_accuracy`.
    pub dev_ci: Interval,
    /// Accuracy on the first slice every candidate was scored on.
    pub first_slice_accuracy: f64,
    /// "chosen", "finalist" (ran to the whole dev sample) or why it was eliminated on dev.
    pub status: String,
}

/// The leader after one stage: a point of the prompt's iteration curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationPoint {
    /// The stage ("v1: hand-written zero-shot", "instructions", ...).
    pub stage: String,
    /// Candidates tried so far.
    pub candidates: usize,
    /// Candidate-examples scored so far.
    pub evaluations: usize,
    /// Minutes spent so far.
    pub minutes: f64,
    /// The leader's accuracy on the whole dev sample.
    pub best_dev_accuracy: f64,
    /// The leader.
    pub leader: String,
}

/// What a search measured and chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchReport {
    /// The prompt chosen on dev.
    pub chosen: SearchedPrompt,
    /// The leader after each stage.
    pub curve: Vec<IterationPoint>,
    /// Every candidate tried.
    pub candidates: Vec<CandidateResult>,
    /// Candidate-examples scored.
    pub evaluations: usize,
    /// Wall minutes.
    pub minutes: f64,
    /// The dev sample's size.
    pub dev_examples: usize,
    /// The race's slices.
    pub slices: Vec<usize>,
    /// The dropping rule.
    pub rule: DropRule,
    /// Stages not run, with the reason.
    pub skipped: Vec<String>,
    /// Label-word candidates per label (the config's word first).
    pub label_word_candidates: Vec<Vec<String>>,
}

impl SearchReport {
    /// (min, median, max) dev accuracy over the candidates on the first slice: how much the
    /// prompt choice alone moves the result on this data.
    pub fn spread(&self) -> (f64, f64, f64) {
        let mut a: Vec<f64> = self.candidates.iter().map(|c| c.first_slice_accuracy).collect();
        a.sort_by(f64::total_cmp);
        match a.len() {
            0 => (0.0, 0.0, 0.0),
            n => (a[0], if n % 2 == 1 { a[n / 2] } else { (a[n / 2 - 1] + a[n / 2]) / 2.0 }, a[n - 1]),
        }
    }

    /// Points the last stage that ran gained over the leader before it, and its minutes.
    pub fn last_gain(&self) -> Option<(String, f64, f64)> {
        let n = self.curve.len();
        (n >= 2).then(|| {
            let (a, b) = (&self.curve[n - 2], &self.curve[n - 1]);
            (b.stage.clone(), (b.best_dev_accuracy - a.best_dev_accuracy) * 100.0, b.minutes - a.minutes)
        })
    }
}

/// A prompt the search can score.
#[derive(Debug, Clone)]
struct Candidate {
    name: String,
    /// ZeroShot (the instruction, with fixed demonstrations when there are some), Retrieval or Cot.
    family: Strategy,
    template: String,
    /// Per label: its word's index in the searcher's word list.
    words: Vec<usize>,
    demos: Vec<Demo>,
    /// Names the demonstrations (draw and order) for the forward cache.
    demos_key: String,
    calibrate: bool,
}

/// Log-probabilities of every candidate label word: per dev example scored so far, and for the
/// content-free inputs when calibration asked for them.
#[derive(Default)]
struct Forward {
    logprobs: Vec<Vec<f32>>,
    content_free: Option<Vec<Vec<f32>>>,
}

/// A raced candidate and what it measured.
struct Tried {
    candidate: Candidate,
    stage: String,
    correct: Vec<bool>,
    dropped: Option<(Dropped, usize)>,
}

struct Searcher<'a> {
    loaded: &'a LoadedModel,
    cfg: &'a Config,
    baselines: &'a Baselines<'a>,
    opts: &'a SearchOptions,
    dev_texts: Vec<String>,
    gold: Vec<usize>,
    /// Every label-word candidate, as text and tokens: the config's words first, in label order.
    words: Vec<String>,
    word_tokens: LabelTokens,
    forwards: HashMap<String, Forward>,
    family_predictions: HashMap<Strategy, Vec<usize>>,
    tried: Vec<Tried>,
    leader: usize,
    evaluations: usize,
    curve: Vec<IterationPoint>,
    slices: Vec<usize>,
    started: Instant,
}

/// Label probabilities from the picked log-probabilities (as [`Scored::label_probs`]).
fn label_probs(logprobs: &[f32], words: &[usize]) -> Vec<f32> {
    Scored { label_logprobs: words.iter().map(|&w| logprobs[w]).collect(), prompt_tokens: 0, truncated: false, latency_ms: 0.0 }
        .label_probs()
}

impl Searcher<'_> {
    fn n(&self) -> usize {
        self.dev_texts.len()
    }

    fn word_map(&self, words: &[usize]) -> BTreeMap<String, String> {
        self.cfg.data.labels.iter().zip(words).map(|(l, &w)| (l.clone(), self.words[w].clone())).collect()
    }

    fn forward_key(c: &Candidate) -> String {
        // Demonstrations show the label words, so with demonstrations the words are part of the prompt.
        let words = if c.demos.is_empty() { String::new() } else { format!("{:?}", c.words) };
        format!("{}\u{1}{words}\u{1}{}", c.template, c.demos_key)
    }

    /// Which of dev examples `range` the candidate gets right.
    fn correct_on(&mut self, c: &Candidate, range: Range<usize>) -> Result<Vec<bool>> {
        let predicted: Vec<usize> = match c.family {
            Strategy::Retrieval | Strategy::Cot => {
                let have = self.family_predictions.get(&c.family).map_or(0, Vec::len);
                if have < range.end {
                    let run = self.baselines.run_main(c.family, &self.dev_texts[have..range.end], &mut Memo::default())?;
                    self.family_predictions.entry(c.family).or_default().extend(&run.variants[0].predicted);
                }
                self.family_predictions[&c.family][range.clone()].to_vec()
            }
            _ => self.prompt_predictions(c, range.clone())?,
        };
        Ok(predicted.iter().zip(&self.gold[range]).map(|(p, g)| p == g).collect())
    }

    fn prompt_predictions(&mut self, c: &Candidate, range: Range<usize>) -> Result<Vec<usize>> {
        let key = Self::forward_key(c);
        let have = self.forwards.get(&key).map_or(0, |f| f.logprobs.len());
        let needs_cf = c.calibrate && self.forwards.get(&key).is_none_or(|f| f.content_free.is_none());
        if have < range.end || needs_cf {
            let prompter = stored::prompter(self.loaded, self.cfg, &c.template, &self.word_map(&c.words))?;
            let opts = ScoreOptions { batch_size: self.opts.batch_size.max(1), max_len: usize::MAX, prefix_cache: true };
            let mut new = Vec::new();
            if have < range.end {
                let (prompts, _) = self.baselines.prompts(&prompter, &|_| c.demos.clone(), &self.dev_texts[have..range.end])?;
                new = score(&self.loaded.model, &self.word_tokens, &prompts, opts).context(|| "scoring a search candidate".into())?;
            }
            let cf = if needs_cf {
                let prompts = CONTENT_FREE.iter().map(|t| prompter.tokens(t, &c.demos)).collect::<Result<Vec<_>>>()?;
                let s = score(&self.loaded.model, &self.word_tokens, &prompts, opts).context(|| "scoring content-free inputs".into())?;
                Some(s.into_iter().map(|s| s.label_logprobs).collect())
            } else {
                None
            };
            let f = self.forwards.entry(key.clone()).or_default();
            f.logprobs.extend(new.into_iter().map(|s| s.label_logprobs));
            if cf.is_some() {
                f.content_free = cf;
            }
        }
        let f = &self.forwards[&key];
        let p_cf = c.calibrate.then(|| {
            let rows = f.content_free.as_deref().unwrap_or_default();
            let mut mean = vec![0f32; c.words.len()];
            for row in rows {
                for (m, p) in mean.iter_mut().zip(label_probs(row, &c.words)) {
                    *m += p / rows.len() as f32;
                }
            }
            mean
        });
        Ok(f.logprobs[range]
            .iter()
            .map(|lp| {
                let p = label_probs(lp, &c.words);
                argmax(&p_cf.as_ref().map_or(p.clone(), |cf| calibrate(&p, cf)))
            })
            .collect())
    }

    /// Race `candidates` against the leader; the winner leads from now on.
    fn stage(&mut self, stage: &str, candidates: Vec<Candidate>) -> Result<()> {
        let leader_correct = self.tried[self.leader].correct.clone();
        let slices = self.slices.clone();
        // Word sets and calibration reuse passes already made: nothing to save by cutting them.
        let free = matches!(stage, "label words" | "calibration");
        let rule = if free { DropRule { keep: usize::MAX, ..self.opts.rule } } else { self.opts.rule };
        (self.opts.progress)(&format!(
            "{stage}: {} candidates (leader {:.1}% on dev)",
            candidates.len(),
            accuracy(&leader_correct) * 100.0
        ));
        let out = race::race(candidates.len() + 1, &slices, rule, |i, r| {
            if i == 0 { Ok(leader_correct[r].to_vec()) } else { self.correct_on(&candidates[i - 1], r) }
        })?;
        let free = out.correct[0].len().min(self.n());
        self.evaluations += out.evaluations - free.min(out.evaluations);
        let first = self.tried.len();
        for ((candidate, correct), dropped) in
            candidates.into_iter().zip(out.correct.into_iter().skip(1)).zip(out.dropped.into_iter().skip(1))
        {
            self.tried.push(Tried { candidate, stage: stage.into(), correct, dropped });
        }
        if out.winner > 0 {
            self.leader = first + out.winner - 1;
        }
        self.point(stage);
        let p = &self.curve[self.curve.len() - 1];
        (self.opts.progress)(&format!(
            "{stage} done at {:.1} min: leader {} ({:.1}% on dev)",
            p.minutes,
            p.leader,
            p.best_dev_accuracy * 100.0
        ));
        Ok(())
    }

    fn point(&mut self, stage: &str) {
        let l = &self.tried[self.leader];
        self.curve.push(IterationPoint {
            stage: stage.into(),
            candidates: self.tried.len(),
            evaluations: self.evaluations,
            minutes: self.started.elapsed().as_secs_f64() / 60.0,
            best_dev_accuracy: accuracy(&l.correct),
            leader: l.candidate.name.clone(),
        });
    }

    /// The best zero-shot-family prompt without demonstrations scored on the whole dev sample:
    /// what the instruction, word and calibration stages edit.
    fn editable(&self) -> Candidate {
        let n = self.n();
        let mut best: Option<&Tried> = None;
        for t in &self.tried {
            if t.candidate.family == Strategy::ZeroShot && t.candidate.demos.is_empty() && t.correct.len() == n {
                if best.is_none_or(|b| accuracy(&t.correct) > accuracy(&b.correct)) {
                    best = Some(t);
                }
            }
        }
        best.map_or_else(|| self.tried[0].candidate.clone(), |t| t.candidate.clone())
    }

    fn over_budget(&self) -> bool {
        self.started.elapsed().as_secs_f64() / 60.0 >= self.opts.minutes
    }
}

fn accuracy(correct: &[bool]) -> f64 {
    correct.iter().filter(|&&c| c).count() as f64 / correct.len().max(1) as f64
}

fn short(s: &str) -> String {
    let one_line = s.replace('\n', " ⏎ ");
    if one_line.chars().count() > 60 { format!("{}…", one_line.chars().take(59).collect::<String>()) } else { one_line }
}

/// Search the prompt on `dev` (see the module doc). `baselines` scores the hand-written
/// strategies under `cfg` (its retrieval index ready when retrieval is among the families);
/// `train` proposes label words and demonstrations. Nothing here sees a test example.
pub fn search(
    loaded: &LoadedModel,
    cfg: &Config,
    baselines: &Baselines,
    train: &[Example],
    dev: &[Example],
    opts: &SearchOptions,
) -> Result<SearchReport> {
    if dev.is_empty() {
        return Err(Error::Config("the prompt search needs dev examples".into()));
    }
    let started = Instant::now();
    let labels = &cfg.data.labels;
    let hand = &baselines.prompters()[0].1;
    // Label words: the config's, then the model's own candidates that are one token each way.
    let mut words: Vec<String> = hand.label_words().to_vec();
    let mut seqs = hand.label_tokens().seqs.clone();
    let means = words::class_means(loaded, hand, train, labels.len(), opts.word_examples, cfg.train.max_seq_len)?;
    let tok = &loaded.tokenizer;
    let decode = |t: u32| tok.decode(&[t], false).unwrap_or_default();
    let round_trips = |t: u32| tok.encode(decode(t).as_str(), false).is_ok_and(|e| e.get_ids() == [t]);
    let ranked = words::rank_candidates(&means, &|t| words::is_word(&decode(t)) && round_trips(t), opts.words_per_label);
    let mut per_label: Vec<Vec<usize>> = (0..labels.len()).map(|l| vec![l]).collect();
    for (l, tokens) in ranked.iter().enumerate() {
        for &t in tokens {
            if seqs.iter().any(|s| s.as_slice() == [t]) {
                continue;
            }
            per_label[l].push(words.len());
            words.push(decode(t));
            seqs.push(vec![t]);
        }
    }
    let word_tokens = LabelTokens { seqs, mean: hand.label_tokens().mean };
    let mut s = Searcher {
        loaded,
        cfg,
        baselines,
        opts,
        dev_texts: dev.iter().map(|e| e.text.clone()).collect(),
        gold: dev.iter().map(|e| e.label).collect(),
        words,
        word_tokens,
        forwards: HashMap::new(),
        family_predictions: HashMap::new(),
        tried: Vec::new(),
        leader: 0,
        evaluations: 0,
        curve: Vec::new(),
        slices: race::slices(dev.len()),
        started,
    };
    let config_words: Vec<usize> = (0..labels.len()).collect();
    let v1 = Candidate {
        name: "hand-written zero-shot".into(),
        family: Strategy::ZeroShot,
        template: cfg.prompt.template.clone(),
        words: config_words.clone(),
        demos: Vec::new(),
        demos_key: String::new(),
        calibrate: false,
    };
    let n = dev.len();
    let correct = s.correct_on(&v1, 0..n)?;
    s.evaluations += n;
    s.tried.push(Tried { candidate: v1.clone(), stage: "v1".into(), correct, dropped: None });
    s.point("v1: hand-written zero-shot");
    let mut skipped = Vec::new();
    let stages: [&str; 5] = ["hand-written strategies", "instructions", "label words", "calibration", "demonstrations"];
    for stage in stages {
        if s.over_budget() {
            skipped.push(format!("{stage}: not run, the search's {} minutes were spent", opts.minutes));
            continue;
        }
        let base = s.editable();
        let candidates = match stage {
            "hand-written strategies" => hand_written(&s, &v1)?,
            "instructions" => {
                let mut templates: Vec<(String, String)> =
                    cfg.prompt.variants.iter().enumerate().map(|(i, t)| (format!("variant {}", i + 1), t.clone())).collect();
                templates.extend(bank::instructions(labels).into_iter().enumerate().map(|(i, t)| (format!("bank {}", i + 1), t)));
                templates.retain(|(_, t)| *t != base.template);
                templates
                    .into_iter()
                    .map(|(name, template)| Candidate { name: format!("{name}: {}", short(&template)), template, ..base.clone() })
                    .collect()
            }
            "label words" => word_sets(&per_label, &base, &s.words, 127),
            "calibration" => vec![calibration_twin(&base)],
            _ => demonstration_candidates(&s, &base, train)?,
        };
        // Calibration reads the same forward pass (plus three content-free prompts), so every
        // candidate of the stages that change the prompt is raced both ways.
        let candidates = if matches!(stage, "instructions" | "label words" | "demonstrations") {
            candidates.into_iter().flat_map(|c| [c.clone(), calibration_twin(&c)]).collect()
        } else {
            candidates
        };
        if !candidates.is_empty() {
            s.stage(stage, candidates)?;
        }
    }
    let chosen = s.chosen();
    Ok(SearchReport {
        candidates: s.results(),
        chosen,
        curve: s.curve,
        evaluations: s.evaluations,
        minutes: started.elapsed().as_secs_f64() / 60.0,
        dev_examples: n,
        slices: s.slices,
        rule: opts.rule,
        skipped,
        label_word_candidates: per_label.iter().map(|ws| ws.iter().map(|&w| s.words[w].clone()).collect()).collect(),
    })
}

impl Searcher<'_> {
    fn chosen(&self) -> SearchedPrompt {
        let t = &self.tried[self.leader];
        let c = &t.candidate;
        let labels = &self.cfg.data.labels;
        SearchedPrompt {
            name: c.name.clone(),
            family: c.family.name().into(),
            template: c.template.clone(),
            label_words: self.word_map(&c.words),
            calibrate: c.calibrate,
            demos: c.demos.iter().map(|d| StoredDemo { text: d.text.clone(), label: labels[d.label].clone() }).collect(),
            dev_accuracy: accuracy(&t.correct),
            dev_examples: t.correct.len(),
        }
    }

    fn results(&self) -> Vec<CandidateResult> {
        let first = self.slices[0];
        self.tried
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let right = t.correct.iter().filter(|&&c| c).count();
                let status = match t.dropped {
                    _ if i == self.leader => "chosen".to_string(),
                    None => "finalist".into(),
                    Some((Dropped::Behind, m)) => {
                        format!("eliminated on dev at n = {m}: behind the leader (one-sided paired p < {})", self.opts.rule.alpha)
                    }
                    Some((Dropped::Budget, m)) => {
                        format!("eliminated on dev at n = {m}: beyond the {} kept per round", self.opts.rule.keep)
                    }
                };
                CandidateResult {
                    name: t.candidate.name.clone(),
                    stage: t.stage.clone(),
                    dev_accuracy: accuracy(&t.correct),
                    dev_n: t.correct.len(),
                    dev_ci: wilson(right, t.correct.len(), Z95),
                    first_slice_accuracy: accuracy(&t.correct[..first.min(t.correct.len())]),
                    status,
                }
            })
            .collect()
    }
}
