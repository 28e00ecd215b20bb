//! Prompt-only baselines on the frozen base model: zero-shot, few-shot, contextual calibration and
//! retrieved demonstrations, each scored under every prompt variant to measure consistency.

pub mod bm25;
pub mod cot;
pub mod demos;
pub mod minilm;
pub mod retrieval;

use std::cell::OnceCell;
use std::collections::HashMap;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::config::Config;
use crate::data::Example;
use crate::error::{CandleContext, Error, Result};
use crate::model::LoadedModel;
use crate::prompt::{Demo, PromptTokens, Prompter};
use crate::score::{Head, ScoreOptions, Scored, argmax, fit, score};

pub use crate::config::kinds::Strategy;
pub use demos::{check_k_shot, demo_orders, sample_demos};
pub use retrieval::RetrievalIndex;

/// Content-free inputs of contextual calibration (Zhao et al. 2021).
pub const CONTENT_FREE: [&str; 3] = ["N/A", "", "[MASK]"];
/// Demonstration orders few-shot is scored under.
pub const DEMO_ORDERS: usize = 3;
/// Examples the cached-vs-uncached check scores both ways.
pub const CACHE_CHECK_EXAMPLES: usize = 16;

/// Contextual calibration: `probs / p_cf`, renormalised.
pub fn calibrate(probs: &[f32], p_cf: &[f32]) -> Vec<f32> {
    let raw: Vec<f32> = probs.iter().zip(p_cf).map(|(p, c)| p / c.max(1e-12)).collect();
    let sum: f32 = raw.iter().sum();
    if sum > 0.0 && sum.is_finite() { raw.iter().map(|r| r / sum).collect() } else { probs.to_vec() }
}

/// The results of one prompt (template and demonstration order) on every example.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct VariantRun {
    /// "template", "variant 1", ... and for orders "order 2", ...
    pub name: String,
    /// Label probabilities (renormalised over the label words; calibrated for `calibrated`).
    pub probs: Vec<Vec<f32>>,
    /// Argmax of `probs`.
    pub predicted: Vec<usize>,
    /// Milliseconds per example.
    pub latency_ms: Vec<f64>,
    /// Prompt tokens per example.
    pub prompt_tokens: Vec<usize>,
    /// Examples whose text was cut to fit.
    pub truncated: usize,
    /// Chain-of-thought: the reasoning generated per example.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasoning: Vec<String>,
    /// Output tokens per example: the reasoning plus the answer (chain-of-thought; else empty,
    /// meaning one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_tokens: Vec<usize>,
}

impl VariantRun {
    /// Probabilities, predictions, latency (plus `extra_ms` per example) and lengths of scores.
    pub fn from_scored(name: String, scored: &[Scored], extra_ms: Option<&[f64]>) -> Self {
        let probs: Vec<Vec<f32>> = scored.iter().map(Scored::label_probs).collect();
        Self {
            name,
            predicted: probs.iter().map(|p| argmax(p)).collect(),
            probs,
            latency_ms: scored
                .iter()
                .enumerate()
                .map(|(i, s)| s.latency_ms + extra_ms.and_then(|e| e.get(i)).copied().unwrap_or(0.0))
                .collect(),
            prompt_tokens: scored.iter().map(|s| s.prompt_tokens).collect(),
            truncated: scored.iter().filter(|s| s.truncated).count(),
            reasoning: Vec::new(),
            output_tokens: Vec::new(),
        }
    }
}

/// Cached-prefix scoring compared with uncached scoring of the same prompts.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CacheCheck {
    /// Examples scored both ways.
    pub examples: usize,
    /// Prefix tokens run once.
    pub prefix_tokens: usize,
    /// Largest |difference| of any label log-probability.
    pub max_abs_diff: f32,
    /// Throughput with the prefix cache (prefix computation included).
    pub cached_examples_per_s: f64,
    /// Throughput without it.
    pub uncached_examples_per_s: f64,
    /// cached / uncached throughput.
    pub speedup: f64,
}

/// Everything one strategy produced on one set of examples.
#[derive(Debug, Clone)]
pub struct StrategyRun {
    /// Which strategy.
    pub strategy: Strategy,
    /// One run per template: `[0]` is `prompt.template` (first demonstration order) and gives the
    /// strategy's main metrics; the rest are `prompt.variants`.
    pub variants: Vec<VariantRun>,
    /// Demonstration orders under the main template (`[0]` equals `variants[0]`); empty when the
    /// prompt has no fixed demonstrations.
    pub orders: Vec<VariantRun>,
    /// The fixed demonstrations in their first order (few-shot, or calibration on few-shot).
    pub demos: Vec<Demo>,
    /// Calibration: mean content-free label probabilities per template.
    pub content_free: Vec<Vec<f32>>,
    /// Retrieval: the labels of each example's demonstrations, most similar last.
    pub neighbour_labels: Vec<Vec<usize>>,
    /// Wall seconds spent on this strategy (scores reused from an earlier strategy are free).
    pub seconds: f64,
}

/// Options of [`Baselines`].
#[derive(Debug, Clone, Copy)]
pub struct BaselineOptions {
    /// Examples per forward pass.
    pub batch_size: usize,
    /// What `calibrated` calibrates: zero-shot or few-shot.
    pub calibrate_on: Strategy,
    /// Score every template variant and demonstration order (false: the main prompt only).
    pub all_variants: bool,
    /// Retrieve from a seeded sample of this many train examples instead of all of them
    /// (embedding a large train split is slow on CPU).
    pub retrieval_pool: Option<usize>,
}

/// The retrieval pool a command uses: its `--retrieval-pool`, else the config's
/// `compare.retrieval_pool`, so `baseline` and `eval` figures match the compare report's rows;
/// 0 means the whole train split.
pub fn retrieval_pool(flag: Option<usize>, cfg: &Config) -> Option<usize> {
    Some(flag.unwrap_or(cfg.compare.retrieval_pool)).filter(|&n| n > 0)
}

impl Default for BaselineOptions {
    fn default() -> Self {
        Self { batch_size: 16, calibrate_on: Strategy::ZeroShot, all_variants: true, retrieval_pool: None }
    }
}

/// How the prompts of a run are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Zero,
    Few(usize),
    Retrieval,
    Cot,
}

/// Raw scores shared between strategies scored on the same texts (calibration reuses
/// zero-shot's); use one per set of texts.
#[derive(Default)]
pub struct Memo {
    scored: HashMap<(Kind, usize), Vec<Scored>>,
    neighbours: Option<(Vec<Vec<Demo>>, Vec<f64>)>,
    /// Chain-of-thought per template: (reasoning, output tokens) per text.
    reasoning: HashMap<usize, (Vec<String>, Vec<usize>)>,
}

impl Memo {
    /// A memo that already holds each text's retrieval demonstrations and their search time (a
    /// model's own neighbours, so that another model is prompted with the same ones).
    pub fn with_neighbours(neighbours: (Vec<Vec<Demo>>, Vec<f64>)) -> Self {
        Self { scored: HashMap::new(), neighbours: Some(neighbours), reasoning: HashMap::new() }
    }

    /// Take the raw scores of the first `n` texts of `other` that this memo lacks: a run on a
    /// prefix of `other`'s texts (the consistency sample of a test run) then does not score its
    /// main template again.
    pub fn extend_from_prefix(&mut self, other: &Memo, n: usize) {
        for (k, v) in &other.scored {
            self.scored.entry(*k).or_insert_with(|| v[..n.min(v.len())].to_vec());
        }
        for (k, (r, t)) in &other.reasoning {
            self.reasoning.entry(*k).or_insert_with(|| (r[..n.min(r.len())].to_vec(), t[..n.min(t.len())].to_vec()));
        }
        if self.neighbours.is_none() {
            self.neighbours = other.neighbours.as_ref().map(|(d, ms)| (d[..n.min(d.len())].to_vec(), ms[..n.min(ms.len())].to_vec()));
        }
    }
}

/// Scores the prompt-only strategies with one frozen model and config.
pub struct Baselines<'a> {
    loaded: &'a LoadedModel,
    cfg: &'a Config,
    train: &'a [Example],
    opts: BaselineOptions,
    /// (name, prompter) per template; `[0]` is `prompt.template`.
    prompters: Vec<(String, Prompter)>,
    /// Chain-of-thought's generation prompter per template.
    cot_prompters: Vec<Prompter>,
    /// Indices into `train` that retrieval searches.
    pool: Vec<usize>,
    index: OnceCell<RetrievalIndex>,
    bm25: OnceCell<bm25::Bm25Index>,
    minilm: OnceCell<minilm::MiniLmIndex>,
}

impl<'a> Baselines<'a> {
    /// Check every template and label word now, so a bad config fails before any scoring.
    pub fn new(loaded: &'a LoadedModel, cfg: &'a Config, train: &'a [Example], opts: BaselineOptions) -> Result<Self> {
        if !matches!(opts.calibrate_on, Strategy::ZeroShot | Strategy::FewShot) {
            return Err(Error::Config(format!("calibration works on zero-shot or few-shot, not {}", opts.calibrate_on)));
        }
        let mut templates = vec![("template".to_string(), cfg.prompt.template.clone())];
        templates.extend(cfg.prompt.variants.iter().enumerate().map(|(i, t)| (format!("variant {}", i + 1), t.clone())));
        let (mut prompters, mut cot_prompters) = (Vec::new(), Vec::new());
        for (name, t) in templates {
            let p = Prompter::new(&cfg.prompt, &cfg.data.labels, &loaded.tokenizer, loaded.chat_template.as_deref(), Some(&t))
                .map_err(|e| Error::Config(format!("prompt {name}: {e}")))?;
            prompters.push((name.clone(), p));
            cot_prompters
                .push(cot::prompter(&cfg.prompt, &cfg.data.labels, loaded, &t).map_err(|e| Error::Config(format!("prompt {name}: {e}")))?);
        }
        crate::prompt::check_fits(prompters.iter().map(|(n, p)| (n.as_str(), p)), cfg.train.max_seq_len)?;
        let mut pool: Vec<usize> = (0..train.len()).collect();
        if let Some(n) = opts.retrieval_pool.filter(|&n| n < train.len()) {
            pool.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.prompt.seed ^ 0x9001));
            pool.truncate(n);
        }
        Ok(Self {
            loaded,
            cfg,
            train,
            opts,
            prompters,
            cot_prompters,
            pool,
            index: OnceCell::new(),
            bm25: OnceCell::new(),
            minilm: OnceCell::new(),
        })
    }

    /// Use a prebuilt (e.g. cached on disk) index of the train split for retrieval.
    pub fn with_index(self, index: RetrievalIndex) -> Self {
        let _ = self.index.set(index);
        self
    }

    /// Use a prebuilt BM25 index of the pool for retrieval (`prompt.retriever = "bm25"`).
    pub fn with_bm25(self, index: bm25::Bm25Index) -> Self {
        let _ = self.bm25.set(index);
        self
    }

    /// Use a prebuilt MiniLM index of the pool for retrieval (`prompt.retriever = "minilm"`).
    pub fn with_minilm(self, index: minilm::MiniLmIndex) -> Self {
        let _ = self.minilm.set(index);
        self
    }

    /// The prompters, `[0]` being the main template.
    pub fn prompters(&self) -> &[(String, Prompter)] {
        &self.prompters
    }

    /// Fail with one clear line when `strategies` cannot run on this train split.
    pub fn check(&self, strategies: &[Strategy]) -> Result<()> {
        let needs_demos = strategies.iter().any(|s| s.uses_demos())
            || (strategies.contains(&Strategy::Calibrated) && self.opts.calibrate_on == Strategy::FewShot);
        if needs_demos {
            let k = self.cfg.prompt.k_shot;
            check_k_shot(k, self.train.len())?;
            if strategies.contains(&Strategy::Retrieval) && k > self.pool.len() {
                return Err(Error::Config(format!("prompt.k_shot = {k} but the retrieval pool has only {} examples", self.pool.len())));
            }
        }
        Ok(())
    }

    /// The few-shot demonstrations in each of [`DEMO_ORDERS`] orders.
    pub fn few_shot_orders(&self) -> Result<Vec<Vec<Demo>>> {
        let demos = sample_demos(self.train, self.cfg.data.labels.len(), self.cfg.prompt.k_shot, self.cfg.prompt.seed)?;
        let demos: Vec<Demo> = demos.into_iter().map(|d| Ok(Demo { text: self.clip(&d.text)?, label: d.label })).collect::<Result<_>>()?;
        Ok(demo_orders(&demos, DEMO_ORDERS, self.cfg.prompt.seed))
    }

    fn clip(&self, text: &str) -> Result<String> {
        retrieval::clip_text(&self.loaded.tokenizer, text, self.cfg.train.max_seq_len)
    }

    /// The texts retrieval searches (the train split, or the sample `retrieval_pool` asks for).
    pub fn pool_texts(&self) -> Vec<&str> {
        self.pool.iter().map(|&i| self.train[i].text.as_str()).collect()
    }

    /// The index of the retrieval pool, built on first use.
    pub fn index(&self) -> Result<&RetrievalIndex> {
        if self.index.get().is_none() {
            let texts = self.pool_texts();
            let start = Instant::now();
            let idx = RetrievalIndex::build(
                &self.loaded.model,
                &self.loaded.tokenizer,
                &texts,
                self.opts.batch_size,
                self.cfg.train.max_seq_len,
            )?;
            tracing::info!("retrieval index of {} texts built in {:.1}s", texts.len(), start.elapsed().as_secs_f64());
            let _ = self.index.set(idx);
        }
        self.index.get().ok_or_else(|| Error::Model("retrieval index missing".into()))
    }

    /// The MiniLM index of the retrieval pool, built on first use (`prompt.retriever_model`, on
    /// the model's device).
    pub fn minilm_index(&self) -> Result<&minilm::MiniLmIndex> {
        if self.minilm.get().is_none() {
            let start = Instant::now();
            let encoder = minilm::MiniLm::load(&self.cfg.prompt.retriever_model, self.loaded.model.device())?;
            let idx = minilm::MiniLmIndex::build(encoder, &self.pool_texts())?;
            tracing::info!("MiniLM index of {} texts built in {:.1}s", idx.len(), start.elapsed().as_secs_f64());
            let _ = self.minilm.set(idx);
        }
        self.minilm.get().ok_or_else(|| Error::Model("MiniLM index missing".into()))
    }

    /// Score `strategies` on `texts`; strategies share raw scores (calibration reuses zero-shot).
    pub fn run(&self, strategies: &[Strategy], texts: &[String]) -> Result<Vec<StrategyRun>> {
        self.check(strategies)?;
        let mut memo = Memo::default();
        strategies.iter().map(|&s| self.run_strategy(s, texts, &mut memo)).collect()
    }

    /// Score one strategy on `texts`, reusing raw scores in `memo` from earlier strategies on
    /// the same texts.
    pub fn run_strategy(&self, strategy: Strategy, texts: &[String], memo: &mut Memo) -> Result<StrategyRun> {
        self.check(&[strategy])?;
        let start = Instant::now();
        let mut run = self.run_cells(strategy, texts, memo, self.opts.all_variants)?;
        run.seconds = start.elapsed().as_secs_f64();
        Ok(run)
    }

    /// Score only the main template (first demonstration order) of one strategy on `texts`,
    /// sharing raw scores through `memo` like [`Baselines::run_strategy`].
    pub fn run_main(&self, strategy: Strategy, texts: &[String], memo: &mut Memo) -> Result<StrategyRun> {
        self.check(&[strategy])?;
        let start = Instant::now();
        let mut run = self.run_cells(strategy, texts, memo, false)?;
        run.seconds = start.elapsed().as_secs_f64();
        Ok(run)
    }

    /// Label probabilities of the main prompt only, e.g. for `wick predict`.
    pub fn predict(&self, strategy: Strategy, texts: &[String]) -> Result<VariantRun> {
        self.check(&[strategy])?;
        let mut memo = Memo::default();
        let run = self.run_cells(strategy, texts, &mut memo, false)?;
        run.variants.into_iter().next().ok_or_else(|| Error::Model("no prompt was scored".into()))
    }

    /// (template, order) cells: every template under the first order, then the other orders
    /// under the main template.
    fn run_cells(&self, strategy: Strategy, texts: &[String], memo: &mut Memo, all: bool) -> Result<StrategyRun> {
        let base = match strategy {
            Strategy::Calibrated => self.opts.calibrate_on,
            s => s,
        };
        let orders = if base == Strategy::FewShot { self.few_shot_orders()? } else { Vec::new() };
        let n_templates = if all { self.prompters.len() } else { 1 };
        let n_orders = if all { orders.len() } else { orders.len().min(1) };
        let mut run = StrategyRun {
            strategy,
            variants: Vec::new(),
            orders: Vec::new(),
            demos: orders.first().cloned().unwrap_or_default(),
            content_free: Vec::new(),
            neighbour_labels: Vec::new(),
            seconds: 0.0,
        };
        let kind_of = |order: usize| match base {
            Strategy::FewShot => Kind::Few(order),
            Strategy::Retrieval => Kind::Retrieval,
            Strategy::Cot => Kind::Cot,
            _ => Kind::Zero,
        };
        for v in 0..n_templates {
            let r = self.cell(strategy, kind_of(0), v, &orders, texts, memo, &mut run.content_free)?;
            run.variants.push(r);
        }
        if let (Kind::Retrieval, Some((demos, _))) = (kind_of(0), &memo.neighbours) {
            run.neighbour_labels = demos.iter().map(|d| d.iter().map(|x| x.label).collect()).collect();
        }
        for o in 0..n_orders {
            let mut r =
                if o == 0 { run.variants[0].clone() } else { self.cell(strategy, kind_of(o), 0, &orders, texts, memo, &mut Vec::new())? };
            r.name = format!("order {}", o + 1);
            run.orders.push(r);
        }
        Ok(run)
    }

    #[allow(clippy::too_many_arguments)]
    fn cell(
        &self,
        strategy: Strategy,
        kind: Kind,
        v: usize,
        orders: &[Vec<Demo>],
        texts: &[String],
        memo: &mut Memo,
        content_free: &mut Vec<Vec<f32>>,
    ) -> Result<VariantRun> {
        let (name, prompter) = &self.prompters[v];
        let demos: &[Demo] = match kind {
            Kind::Few(o) => &orders[o],
            _ => &[],
        };
        tracing::info!(
            "{strategy} / {name}{}: {} examples",
            if let Kind::Few(o) = kind { format!(" / order {}", o + 1) } else { String::new() },
            texts.len()
        );
        if !memo.scored.contains_key(&(kind, v)) {
            let scored = self.score_kind(kind, v, prompter, demos, texts, memo)?;
            memo.scored.insert((kind, v), scored);
        }
        let scored = &memo.scored[&(kind, v)];
        let extra = match (kind, &memo.neighbours) {
            (Kind::Retrieval, Some((_, ms))) => Some(ms.as_slice()),
            _ => None,
        };
        let mut run = VariantRun::from_scored(name.clone(), scored, extra);
        if let (Kind::Cot, Some((reasoning, tokens))) = (kind, memo.reasoning.get(&v)) {
            run.reasoning = reasoning.clone();
            run.output_tokens = tokens.clone();
        }
        if strategy == Strategy::Calibrated {
            let p_cf = self.content_free_probs(prompter, demos)?;
            run.probs = run.probs.iter().map(|p| calibrate(p, &p_cf)).collect();
            run.predicted = run.probs.iter().map(|p| argmax(p)).collect();
            content_free.push(p_cf);
        }
        Ok(run)
    }

    /// Mean label probabilities of the content-free inputs under this prompt.
    pub fn content_free_probs(&self, prompter: &Prompter, demos: &[Demo]) -> Result<Vec<f32>> {
        let prompts: Vec<PromptTokens> = CONTENT_FREE.iter().map(|t| prompter.tokens(t, demos)).collect::<Result<_>>()?;
        let scored = score(&self.loaded.model, prompter.label_tokens(), &prompts, self.score_options(true, usize::MAX))
            .context(|| "scoring content-free inputs".into())?;
        let n = self.cfg.data.labels.len();
        let mut mean = vec![0f32; n];
        for s in &scored {
            for (m, p) in mean.iter_mut().zip(s.label_probs()) {
                *m += p / scored.len() as f32;
            }
        }
        Ok(mean)
    }

    fn score_options(&self, prefix_cache: bool, max_len: usize) -> ScoreOptions {
        ScoreOptions { batch_size: self.opts.batch_size.max(1), max_len, prefix_cache }
    }

    /// The prompts of `texts` with each text cut (from the left, as training does) so that the
    /// question part stays within `train.max_seq_len` however long the demonstrations are.
    pub fn prompts(
        &self,
        prompter: &Prompter,
        demos_per_text: &dyn Fn(usize) -> Vec<Demo>,
        texts: &[String],
    ) -> Result<(Vec<PromptTokens>, Vec<bool>)> {
        let bare_prefix = prompter.prefix_tokens(&[])?.len();
        let positions = self.loaded.model.cfg.max_position_embeddings.clamp(1, 32_768);
        let mut prompts = Vec::with_capacity(texts.len());
        let mut truncated = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let p = prompter.tokens(text, &demos_per_text(i))?;
            let budget = (self.cfg.train.max_seq_len + p.prefix.len().saturating_sub(bare_prefix)).min(positions);
            let (ids, cut) = fit(&p, budget);
            let rest = ids[p.prefix.len().min(ids.len())..].to_vec();
            prompts.push(PromptTokens { prefix: p.prefix, rest });
            truncated.push(cut);
        }
        Ok((prompts, truncated))
    }

    fn score_kind(
        &self,
        kind: Kind,
        v: usize,
        prompter: &Prompter,
        demos: &[Demo],
        texts: &[String],
        memo: &mut Memo,
    ) -> Result<Vec<Scored>> {
        if kind == Kind::Cot {
            let (prompts, truncated) = self.prompts(&self.cot_prompters[v], &|_| Vec::new(), texts)?;
            let p = &self.cfg.prompt;
            let reasoned = cot::reason(self.loaded, &prompts, &p.answer_prefix, p.cot_max_tokens)?;
            let labels = prompter.label_tokens();
            let mut scored = match &reasoned.answer_hidden {
                // One-token label words are read where the generation left off.
                Some(hidden) if labels.single_token() => {
                    let logprobs: Vec<Vec<f32>> = Head::Verbalizer(labels)
                        .log_scores(&self.loaded.model, hidden)
                        .and_then(|t| t.to_vec2())
                        .context(|| "reading the answer after the reasoning".into())?;
                    logprobs
                        .into_iter()
                        .zip(&reasoned.prompts)
                        .map(|(label_logprobs, p)| Scored {
                            label_logprobs,
                            prompt_tokens: p.full().len(),
                            truncated: false,
                            latency_ms: 0.0,
                        })
                        .collect()
                }
                _ => score(&self.loaded.model, labels, &reasoned.prompts, self.score_options(true, usize::MAX))
                    .context(|| "scoring after the reasoning".into())?,
            };
            for (s, t) in scored.iter_mut().zip(truncated) {
                s.truncated |= t;
                s.latency_ms += reasoned.generation_ms_per_prompt;
            }
            memo.reasoning.insert(v, (reasoned.reasoning, reasoned.generated_tokens));
            return Ok(scored);
        }
        let (prompts, truncated) = match kind {
            Kind::Retrieval => {
                if memo.neighbours.is_none() {
                    memo.neighbours = Some(self.neighbours(texts)?);
                }
                let per_text = memo.neighbours.as_ref().map(|n| &n.0).ok_or_else(|| Error::Model("retrieval neighbours missing".into()))?;
                self.prompts(prompter, &|i| per_text[i].clone(), texts)?
            }
            _ => self.prompts(prompter, &|_| demos.to_vec(), texts)?,
        };
        // Retrieval prompts share only the part before their demonstrations; `score` caches
        // whatever all prompts share.
        let mut scored = score(&self.loaded.model, prompter.label_tokens(), &prompts, self.score_options(true, usize::MAX))
            .context(|| "scoring prompts".into())?;
        for (s, t) in scored.iter_mut().zip(truncated) {
            s.truncated |= t;
        }
        Ok(scored)
    }

    /// The k nearest train examples of each text as demonstrations (most similar last), and the
    /// per-text embedding and search time in ms.
    pub fn neighbours(&self, texts: &[String]) -> Result<(Vec<Vec<Demo>>, Vec<f64>)> {
        let (nearest, ms) = self.nearest(texts)?;
        let demos = nearest
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .rev()
                    .map(|(i, _)| {
                        let ex = self
                            .pool
                            .get(i)
                            .and_then(|&j| self.train.get(j))
                            .ok_or_else(|| Error::Model("retrieval index does not match the pool".into()))?;
                        Ok(Demo { text: self.clip(&ex.text)?, label: ex.label })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        Ok((demos, ms))
    }

    /// The k nearest pool positions of each text (most similar first) by `prompt.retriever`,
    /// and the per-text retrieval time in ms.
    pub fn nearest(&self, texts: &[String]) -> Result<(Vec<Vec<(usize, f32)>>, Vec<f64>)> {
        let k = self.cfg.prompt.k_shot;
        if self.cfg.prompt.retriever == crate::config::Retriever::Bm25 {
            let start = Instant::now();
            let index = self.bm25.get_or_init(|| bm25::Bm25Index::build(&self.pool_texts()));
            let nearest: Vec<Vec<(usize, f32)>> = texts.iter().map(|t| index.nearest(t, k)).collect();
            let ms = start.elapsed().as_secs_f64() * 1000.0 / texts.len().max(1) as f64;
            return Ok((nearest, vec![ms; texts.len()]));
        }
        if self.cfg.prompt.retriever == crate::config::Retriever::Minilm {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            return self.minilm_index()?.nearest_batch(&refs, k);
        }
        let index = self.index()?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let start = Instant::now();
        let (queries, mut ms) =
            retrieval::embed(&self.loaded.model, &self.loaded.tokenizer, &refs, self.opts.batch_size, self.cfg.train.max_seq_len)?;
        let embed_ms: f64 = ms.iter().sum();
        let nearest = index.nearest(&queries, k)?;
        // Search time is spread evenly; embedding time is already per example.
        let search_ms = (start.elapsed().as_secs_f64() * 1000.0 - embed_ms).max(0.0) / texts.len().max(1) as f64;
        ms.iter_mut().for_each(|m| *m += search_ms);
        Ok((nearest, ms))
    }

    /// Score the main prompt of `strategy` (zero-shot or few-shot base) on the first
    /// [`CACHE_CHECK_EXAMPLES`] texts with and without the prefix cache; None for retrieval.
    pub fn cache_check(&self, strategy: Strategy, texts: &[String]) -> Result<Option<CacheCheck>> {
        let base = if strategy == Strategy::Calibrated { self.opts.calibrate_on } else { strategy };
        let demos = match base {
            Strategy::Retrieval | Strategy::Cot => return Ok(None),
            Strategy::FewShot => self.few_shot_orders()?.swap_remove(0),
            _ => Vec::new(),
        };
        let texts = &texts[..texts.len().min(CACHE_CHECK_EXAMPLES)];
        let prompter = &self.prompters[0].1;
        let (prompts, _) = self.prompts(prompter, &|_| demos.clone(), texts)?;
        if prompts.is_empty() {
            return Ok(None);
        }
        let ids = prompter.label_tokens();
        let start = Instant::now();
        let cached = score(&self.loaded.model, ids, &prompts, self.score_options(true, usize::MAX)).context(|| "cached scoring".into())?;
        let cached_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let plain =
            score(&self.loaded.model, ids, &prompts, self.score_options(false, usize::MAX)).context(|| "uncached scoring".into())?;
        let plain_s = start.elapsed().as_secs_f64();
        let max_abs_diff = cached
            .iter()
            .zip(&plain)
            .flat_map(|(a, b)| a.label_logprobs.iter().zip(&b.label_logprobs).map(|(x, y)| (x - y).abs()))
            .fold(0f32, f32::max);
        let n = prompts.len() as f64;
        Ok(Some(CacheCheck {
            examples: prompts.len(),
            prefix_tokens: prompts[0].prefix.len(),
            max_abs_diff,
            cached_examples_per_s: n / cached_s.max(1e-9),
            uncached_examples_per_s: n / plain_s.max(1e-9),
            speedup: plain_s / cached_s.max(1e-9),
        }))
    }
}
