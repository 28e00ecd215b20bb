//! `wick compare <config>`: choose on dev, report on test. Every prompt strategy is scored on a
//! dev sample (which picks the best one) and on the whole test split; the fine-tuning run keeps
//! its best dev checkpoint, which is then scored on the same test examples; the learning-curve
//! runs train on nested label subsets. Everything runs over one model load, stored results are
//! reused when their key matches, and the decision report is written.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::{Serialize, de::DeserializeOwned};

use crate::baseline::{BaselineOptions, Baselines, Memo, Strategy};
use crate::config::Config;
use crate::data::Example;
use crate::eval::report::{EvalSet, summarize, write_outputs};
use crate::eval::{Report, ReportOf, prepare_retrieval, run_record, score_tuned, scored_report, strategy_report, tuned_strategy_runs};
use crate::metrics::Metrics;
use crate::model::LoadedModel;
use crate::report::format::count;
use crate::report::{CompareReport, CurvePoint, ReportHeader, RowKind, Selection, StrategyRow};
use crate::train::{TrainOptions, TrainSummary};

/// Arguments of `wick compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Run config; its `[compare]` section says what to measure. A data file instead (any
    /// extension but .toml) runs the config `wick init` proposes for it, written next to the report.
    pub config: PathBuf,
    /// Override `compare.limit` (examples of the split; 0 = all). The report says it is partial.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Measure everything again instead of reusing stored results.
    #[arg(long)]
    pub fresh: bool,
    /// A first look in about ten minutes: 150 test and 100 dev examples, consistency on 20, 2.5
    /// minutes of training, no learning curve, no tuned + retrieval row. The report is marked as a
    /// quick look.
    #[arg(long)]
    pub quick: bool,
}

/// How `compare` runs beyond the config.
#[derive(Debug, Clone, Default)]
pub struct CompareOptions {
    /// Score only the first N examples of the split (overrides `compare.limit`; 0: all).
    pub limit: Option<usize>,
    /// Measure everything again.
    pub fresh: bool,
    /// The config was cut down by [`quick_look`].
    pub quick: bool,
    /// When the command started, model load included (`compare.max_minutes` counts from it);
    /// `None`: when [`compare`] is called.
    pub started: Option<Instant>,
}

/// Test examples of a quick look.
const QUICK_EXAMPLES: usize = 150;

/// Cut a config down to a first look of about ten minutes on a 2-core CPU (retrieval's long
/// prompts are most of it, so the tuned model is not run under retrieval's prompts too); its
/// outputs go to `<run_name>-quick`, so they never mix with the full report's.
pub fn quick_look(cfg: &mut Config) {
    let c = &mut cfg.compare;
    c.limit = if c.limit == 0 { QUICK_EXAMPLES } else { c.limit.min(QUICK_EXAMPLES) };
    c.dev_examples = 100;
    c.consistency_examples = 20;
    c.learning_curve.clear();
    c.retrieval_pool = if c.retrieval_pool == 0 { 300 } else { c.retrieval_pool.min(300) };
    // 70 of the 587 s a quick look took on a 2-core Zen 3: past ten minutes on a slower day.
    c.tuned_strategies.retain(|s| s != "retrieval");
    // The quick look's own training budget below stands in for a share of the full one.
    c.max_minutes = 0.0;
    let t = &mut cfg.train;
    t.max_minutes = if t.max_minutes > 0.0 { t.max_minutes.min(2.5) } else { 2.5 };
    t.eval_examples = 100;
    t.eval_every = t.eval_every.min(15);
    cfg.output.run_name = format!("{}-quick", cfg.output.run_name);
}

/// A stored result and the key it was measured under.
#[derive(serde::Deserialize, Serialize)]
struct Stored<T> {
    key: String,
    value: T,
}

/// Reuse `dir/name.json` when its key matches, else measure and store it (atomically); true
/// when it was measured now.
fn cached<T: Serialize + DeserializeOwned>(
    dir: &Path,
    name: &str,
    key: &str,
    fresh: bool,
    measure: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, bool)> {
    if let Some(value) = reuse(dir, name, key, fresh) {
        return Ok((value, false));
    }
    let value = measure()?;
    store(dir, name, key, &value)?;
    Ok((value, true))
}

/// The value stored in `dir/name.json` under `key`, unless `fresh` or absent or stale.
fn reuse<T: DeserializeOwned>(dir: &Path, name: &str, key: &str, fresh: bool) -> Option<T> {
    if fresh {
        return None;
    }
    let path = dir.join(format!("{name}.json"));
    let stored = serde_json::from_str::<Stored<T>>(&std::fs::read_to_string(&path).ok()?).ok()?;
    (stored.key == key).then(|| {
        eprintln!("compare: reusing {name} from {}", path.display());
        stored.value
    })
}

/// Write `value` with its key to `dir/name.json`, atomically.
fn store<T: Serialize>(dir: &Path, name: &str, key: &str, value: &T) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = serde_json::to_string_pretty(&Stored { key: key.to_string(), value })?;
    crate::model::load::write_atomic(&dir.join(format!("{name}.json")), text.as_bytes())?;
    Ok(())
}

/// One prompt strategy: chosen among the others on dev, reported on test.
#[derive(serde::Deserialize, Serialize)]
struct PromptResult {
    /// Main-template metrics on the dev sample.
    dev: Metrics,
    /// The test report (main template on every test example; consistency on the sample).
    test: Report,
    /// Wall seconds on dev, on test, and on the consistency sample.
    seconds: [f64; 3],
}

/// A fine-tuning run (its summary) plus its best checkpoint's evaluation on the test examples.
#[derive(serde::Deserialize, Serialize)]
struct Tuned {
    train_seconds: f64,
    tokens_seen: u64,
    train_examples: usize,
    labels_seen: usize,
    steps: usize,
    best_step: usize,
    /// Dev accuracy of the kept checkpoint, and `train.eval_examples` that measured it (0: all).
    best_dev_accuracy: f64,
    dev_examples: usize,
    early_stopped: bool,
    budget_reached: bool,
    /// The steps the schedule was fitted to under `train.max_minutes`, and those planned.
    #[serde(default)]
    budget_steps: Option<usize>,
    #[serde(default)]
    planned_steps: usize,
    checkpoint: String,
    eval: Report,
    /// Wall seconds of the test evaluation (and of the consistency sample's, when there is one).
    eval_seconds: f64,
    /// The run's share of `compare.max_minutes`, when there is that budget.
    #[serde(default)]
    share: Option<TrainingShare>,
}

/// One stage of a comparison and its wall time.
struct Stage {
    name: String,
    seconds: f64,
    /// Measured by this process (else reused from a stored result).
    now: bool,
}

impl Stage {
    fn new(name: impl Into<String>, seconds: f64, now: bool) -> Self {
        Self { name: name.into(), seconds, now }
    }
}

/// The fine-tuning run's share of `compare.max_minutes`: what the other stages left.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
struct TrainingShare {
    /// `compare.max_minutes`.
    budget_minutes: f64,
    /// Minutes of the stages before training (measured now or when first stored), plus what this
    /// process spent outside them (loading the model and data, building the retrieval index).
    before_minutes: f64,
    /// Estimated minutes of the stages after training.
    after_minutes: f64,
    /// The training budget given to the run (at most `train.max_minutes`, at least
    /// [`MIN_TRAINING_SHARE`] of the budget).
    minutes: f64,
    /// True when the other stages left less than that least share.
    floored: bool,
}

/// The least share of `compare.max_minutes` the fine-tuning run gets, even when the other stages
/// already used the budget: the tuned arm is what the report is for.
const MIN_TRAINING_SHARE: f64 = 0.1;

/// Minutes kept out of training's share for writing the report after the last stage.
const WRITE_MINUTES: f64 = 0.5;

/// Part of `compare.max_minutes` kept back for what the estimates miss: a budget-cut run ends on
/// the evaluation after the step that crosses its share, and a 2-core box drifts by more than
/// the 3% slack of the step fit. A fresh default compare given its share by the whole budget
/// took 90 min 35 s on the Zen 3 (training 25.6 min of a 25.1-minute share).
const BUDGET_MARGIN: f64 = 0.03;

/// A scoring stage with the adapter attached, relative to the same prompts on the base model
/// (unmerged rank-8 factors on every projection): the tuned model on test and its consistency
/// sample took 2.2 min against zero-shot's 1.9, tuned + few-shot 113 s against few-shot's 106.
const ADAPTER_SCORING_COST: f64 = 1.15;

impl Tuned {
    /// What ended the run, for the report.
    fn ending(&self) -> String {
        if self.early_stopped {
            "early stopping (dev accuracy stopped improving)".into()
        } else if self.budget_reached {
            format!("{}, not a plateau", self.budget_name())
        } else if let Some(fit) = self.budget_steps {
            format!("its schedule, fitted to {} ({fit} of {} planned steps)", self.budget_name(), self.planned_steps)
        } else {
            "its step/epoch budget".into()
        }
    }

    /// The time budget the run had, as the report names it.
    fn budget_name(&self) -> String {
        match &self.share {
            Some(s) => format!("its {:.1}-minute share of the compare.max_minutes = {} budget", s.minutes, s.budget_minutes),
            None => "the train.max_minutes budget".into(),
        }
    }
}

/// Training's share of `compare.max_minutes` (none without that budget): the budget less the
/// stages already measured (`before`, every stage but the fine-tuning run and those scoring its
/// checkpoint), less `outside_s`, the seconds this process spent outside its stages so far, and
/// less an estimate of the stages after training. The tuned model on test and on the
/// consistency sample costs what zero-shot did (the same prompts, plus a rank-r adapter), and
/// tuned + s what s did on test. `prompt_seconds`: each prompt strategy's wall seconds on dev,
/// test and the consistency sample.
fn training_share(cfg: &Config, prompt_seconds: &[(String, [f64; 3])], before: &[Stage], outside_s: f64) -> Option<TrainingShare> {
    let c = &cfg.compare;
    if c.max_minutes <= 0.0 {
        return None;
    }
    let seconds_of = |method: &str| prompt_seconds.iter().find(|(m, _)| m == method).map(|(_, s)| *s);
    let tuned_eval = seconds_of("zero-shot").or_else(|| seconds_of("calibrated")).map_or(0.0, |s| s[1] + s[2]);
    let tuned_prompts: f64 = c.tuned_strategies.iter().filter_map(|s| seconds_of(s)).map(|s| s[1]).sum();
    let before_minutes = (before.iter().map(|s| s.seconds).sum::<f64>() + outside_s.max(0.0)) / 60.0;
    let after_minutes = ADAPTER_SCORING_COST * (tuned_eval + tuned_prompts) / 60.0;
    let left = c.max_minutes * (1.0 - BUDGET_MARGIN) - WRITE_MINUTES - before_minutes - after_minutes;
    let least = MIN_TRAINING_SHARE * c.max_minutes;
    let mut minutes = left.max(least);
    if cfg.train.max_minutes > 0.0 {
        minutes = minutes.min(cfg.train.max_minutes);
    }
    Some(TrainingShare { budget_minutes: c.max_minutes, before_minutes, after_minutes, minutes, floored: left < least })
}

/// The data `compare` scores: the dev sample that makes the choices, the test examples that
/// report them, and the size of the consistency sample (a prefix of the test examples; splits
/// are already seeded shuffles).
struct Sets {
    train: Vec<Example>,
    /// The dev sample that makes the prompt choices (`compare.dev_examples` of dev).
    dev: EvalSet,
    /// Examples in the whole dev split.
    dev_total: usize,
    test: EvalSet,
    consistency_n: usize,
}

fn load_sets(cfg: &Config, limit: Option<usize>) -> anyhow::Result<Sets> {
    let c = &cfg.compare;
    let (splits, _) = crate::data::load_splits(&cfg.data, crate::data::ReadMode::Strict)?;
    let mut test = match c.split.as_str() {
        "train" => splits.train.clone(),
        "dev" => splits.dev.clone(),
        _ => splits.test.clone(),
    };
    test.truncate(limit.unwrap_or(usize::MAX));
    let dev_total = splits.dev.len();
    let mut dev = splits.dev.clone();
    if c.dev_examples > 0 {
        dev.truncate(c.dev_examples);
    }
    if test.is_empty() || dev.is_empty() {
        anyhow::bail!("compare needs examples in the {} split and in dev", c.split);
    }
    let consistency_n = if c.consistency_examples == 0 { test.len() } else { c.consistency_examples.min(test.len()) };
    Ok(Sets {
        train: splits.train,
        dev: EvalSet { name: "dev".into(), source: "split dev".into(), examples: dev },
        dev_total,
        test: EvalSet { name: c.split.clone(), source: format!("split {}", c.split), examples: test },
        consistency_n,
    })
}

fn texts(set: &EvalSet) -> Vec<String> {
    set.examples.iter().map(|e| e.text.clone()).collect()
}

fn gold(set: &EvalSet) -> Vec<usize> {
    set.examples.iter().map(|e| e.label).collect()
}

/// Score the prompt strategies: the main template on dev and on test, then every template (and
/// demonstration order) on the consistency sample, reusing the test scores of its examples.
fn measure_prompts(
    cfg: &Config,
    loaded: &LoadedModel,
    strategies: &[Strategy],
    sets: &Sets,
    limit: Option<usize>,
    opts: &CompareOptions,
) -> anyhow::Result<Vec<(PromptResult, bool)>> {
    let c = &cfg.compare;
    let out_dir = cfg.run_dir().join("compare");
    let base_dir = cfg.run_dir().join("baseline");
    let key = |s: Strategy| {
        format!(
            "{}|{}|{limit:?}|dev {}|consistency {}|pool {}|{s}",
            cfg.prompt_results_hash(),
            c.split,
            sets.dev.examples.len(),
            sets.consistency_n,
            c.retrieval_pool
        )
    };
    let pool = crate::baseline::retrieval_pool(None, cfg);
    let bopts = BaselineOptions { batch_size: c.batch_size, calibrate_on: Strategy::ZeroShot, all_variants: true, retrieval_pool: pool };
    let mut baselines = Baselines::new(loaded, cfg, &sets.train, bopts)?;
    baselines.check(strategies)?;
    let mut retrieval_info = None;
    let (dev_texts, test_texts) = (texts(&sets.dev), texts(&sets.test));
    let n = sets.consistency_n;
    let sample = EvalSet { name: "consistency".into(), source: sets.test.source.clone(), examples: sets.test.examples[..n].to_vec() };
    let dev_gold = gold(&sets.dev);
    let labels = &cfg.data.labels;
    let (mut memo_dev, mut memo_test, mut memo_sample) = (Memo::default(), Memo::default(), Memo::default());
    let mut results = Vec::new();
    let mut measured_any = false;
    let test_dir = |s: Strategy| base_dir.join(s.name()).join(&sets.test.name);
    for &s in strategies {
        let name = format!("prompt-{s}");
        if let Some(r) = reuse::<PromptResult>(&out_dir, &name, &key(s), opts.fresh) {
            results.push((r, false));
            continue;
        }
        if s == Strategy::Retrieval && retrieval_info.is_none() {
            let (with_index, mut info) = prepare_retrieval(baselines, loaded, cfg, c.batch_size, &base_dir)?;
            info.train_size = sets.train.len();
            baselines = with_index;
            retrieval_info = Some(info);
        }
        let result = {
            eprintln!("compare: {s} on {} dev examples (choice)", count(dev_texts.len() as u64));
            let dev_run = baselines.run_main(s, &dev_texts, &mut memo_dev)?;
            let dev = summarize(&dev_run.variants, &dev_gold, labels).context("no prompt was scored")?.0;
            eprintln!(
                "compare: {s} dev accuracy {:.4} ({:.0} s); now {} test examples",
                dev.accuracy,
                dev_run.seconds,
                count(test_texts.len() as u64)
            );
            let test_run = baselines.run_main(s, &test_texts, &mut memo_test)?;
            memo_sample.extend_from_prefix(&memo_test, n);
            eprintln!("compare: {s} test done ({:.0} s); consistency on {} test examples", test_run.seconds, count(n as u64));
            let sample_run = baselines.run_strategy(s, &test_texts[..n], &mut memo_sample)?;
            let mut test = strategy_report(&test_run, &sets.test, limit, cfg, loaded, Strategy::ZeroShot, retrieval_info.as_ref(), None)?;
            let on_sample = strategy_report(&sample_run, &sample, limit, cfg, loaded, Strategy::ZeroShot, None, None)?;
            test.templates = on_sample.templates;
            test.consistency = on_sample.consistency;
            test.orders = on_sample.orders;
            test.order_consistency = on_sample.order_consistency;
            test.seconds = test_run.seconds;
            write_outputs(&test_dir(s), &test, &sets.test.examples, &test_run.variants[0])?;
            measured_any = true;
            PromptResult { dev, test, seconds: [dev_run.seconds, test_run.seconds, sample_run.seconds] }
        };
        store(&out_dir, &name, &key(s), &result)?;
        results.push((result, true));
    }
    // The strategies of one compare are one prompt version in the run history (as one `wick
    // baseline` run's are): the plateau rule compares prompt iterations, and recording each
    // strategy as its own version made it compare one strategy with another.
    if measured_any {
        let runs = strategies
            .iter()
            .zip(&results)
            .map(|(&s, (r, _))| run_record("baseline", s.name(), cfg, &sets.test.name, &r.test, test_dir(s)))
            .collect();
        crate::runs::append_all(&cfg.output.dir, runs)?;
    }
    Ok(results)
}

/// Train on the loaded model as `cfg` says, keep the best dev checkpoint and score it on the test
/// examples (every template on the consistency sample when `consistency_n` > 0). The model is
/// the frozen base again afterwards.
fn train_and_eval(
    cfg: &Config,
    loaded: &mut LoadedModel,
    train_limit: Option<usize>,
    share: Option<TrainingShare>,
    test: &EvalSet,
    consistency_n: usize,
    limit: Option<usize>,
) -> anyhow::Result<Tuned> {
    // A curve run (train_limit) needs only its best model, not the untrained model's dev score.
    let opts = TrainOptions {
        resume: None,
        train_limit,
        quiet: false,
        skip_initial_eval: train_limit.is_some(),
        max_minutes: share.as_ref().map(|s| s.minutes),
    };
    let summary: TrainSummary = crate::train::train_model(cfg, loaded, &opts)?;
    if summary.interrupted {
        anyhow::bail!("training was interrupted; run `wick compare` again to continue");
    }
    let best = summary.best.clone().context("training recorded no dev evaluation")?;
    let checkpoint = crate::train::state::step_dir(&summary.run_dir, best.step);
    let head = crate::checkpoint::load_adapter(&checkpoint, &mut loaded.model)?.head;
    let method = if head.is_some() { "linear" } else { "verbalizer" };
    let batch = cfg.compare.batch_size;
    let (eval, eval_seconds) = {
        let baselines = Baselines::new(loaded, cfg, &[], BaselineOptions { batch_size: batch, ..BaselineOptions::default() })?;
        let test_texts = texts(test);
        eprintln!("compare: {} ({method}) on {} test examples", checkpoint.display(), count(test_texts.len() as u64));
        let start = Instant::now();
        let main = score_tuned(&baselines, loaded, head.as_ref(), &test_texts, batch, false)?;
        let seconds = start.elapsed().as_secs_f64();
        let of = ReportOf { command: "eval", method, checkpoint: Some(checkpoint.display().to_string()) };
        let mut report = scored_report(of, test, limit, cfg, loaded, &main, seconds)?;
        if consistency_n > 0 {
            eprintln!("compare: tuned model, every template on {} test examples (consistency)", count(consistency_n as u64));
            let sample = score_tuned(&baselines, loaded, head.as_ref(), &test_texts[..consistency_n], batch, true)?;
            let sample_gold = &gold(test)[..consistency_n];
            if let Some((_, templates, consistency)) = summarize(&sample, sample_gold, &cfg.data.labels) {
                report.templates = templates;
                report.consistency = consistency;
            }
        }
        let step = checkpoint.file_name().map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
        let dir = cfg.run_dir().join("eval").join(step).join(&test.name);
        write_outputs(&dir, &report, &test.examples, &main[0])?;
        let name = checkpoint.display().to_string();
        crate::runs::append(&cfg.output.dir, run_record("eval", &name, cfg, &test.name, &report, dir))?;
        (report, start.elapsed().as_secs_f64())
    };
    loaded.model.clear_lora()?;
    Ok(Tuned {
        train_seconds: summary.train_seconds,
        tokens_seen: summary.tokens_seen,
        train_examples: summary.train_examples,
        labels_seen: summary.labels_seen,
        steps: summary.steps,
        best_step: best.step,
        best_dev_accuracy: best.accuracy,
        dev_examples: cfg.train.eval_examples,
        early_stopped: summary.early_stopped,
        budget_reached: summary.budget_reached,
        budget_steps: summary.budget_steps,
        planned_steps: summary.planned_steps,
        checkpoint: checkpoint.display().to_string(),
        eval,
        eval_seconds,
        share,
    })
}

/// One "tuned + S" row's test report and wall seconds.
struct TunedPromptRun {
    strategy: Strategy,
    report: Report,
    seconds: f64,
    /// Measured by this process (else reused from a stored result).
    now: bool,
}

/// The tuned model under prompt strategies, on the test examples, with the base model's
/// demonstrations ([`tuned_strategy_runs`]). Main template only; never a choice, so no dev pass.
/// A linear-head checkpoint has no label words to prompt for: none, with a note.
fn measure_tuned_prompts(
    cfg: &Config,
    loaded: &mut LoadedModel,
    sets: &Sets,
    tuned: &Tuned,
    limit: Option<usize>,
    fresh: bool,
) -> anyhow::Result<(Vec<TunedPromptRun>, Option<String>)> {
    let c = &cfg.compare;
    let strategies: Vec<Strategy> = c.tuned_strategies.iter().map(|s| s.parse()).collect::<crate::error::Result<_>>()?;
    if strategies.is_empty() {
        return Ok((Vec::new(), None));
    }
    if tuned.eval.method == "linear" {
        let note = format!(
            "tuned + {} not measured: the checkpoint has a linear head, which has no label words to prompt for",
            c.tuned_strategies.join(" / ")
        );
        return Ok((Vec::new(), Some(note)));
    }
    let checkpoint = PathBuf::from(&tuned.checkpoint);
    let out_dir = cfg.run_dir().join("compare");
    let key = |s: Strategy| format!("{}|tuned + {s}|{}|pool {}", tuned_key(cfg, limit, 0), tuned.checkpoint, c.retrieval_pool);
    let mut done: Vec<Option<(Report, f64)>> =
        strategies.iter().map(|&s| reuse::<(Report, f64)>(&out_dir, &format!("tuned-{s}"), &key(s), fresh)).collect();
    let missing: Vec<Strategy> = strategies.iter().zip(&done).filter(|(_, d)| d.is_none()).map(|(&s, _)| s).collect();
    if !missing.is_empty() {
        let pool = crate::baseline::retrieval_pool(None, cfg);
        let bopts =
            BaselineOptions { batch_size: c.batch_size, calibrate_on: Strategy::ZeroShot, all_variants: false, retrieval_pool: pool };
        eprintln!("compare: tuned + {} on {} test examples", c.tuned_strategies.join(" / "), count(sets.test.examples.len() as u64));
        let (runs, retrieval) = tuned_strategy_runs(loaded, cfg, &checkpoint, &sets.train, &texts(&sets.test), &missing, bopts)?;
        let step = checkpoint.file_name().map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
        for run in runs {
            let s = run.strategy;
            let info = if s == Strategy::Retrieval { retrieval.as_ref() } else { None };
            let mut report = strategy_report(&run, &sets.test, limit, cfg, loaded, Strategy::ZeroShot, info, None)?;
            report.method = format!("tuned + {s}");
            let dir = cfg.run_dir().join("eval").join(&step).join(s.name()).join(&sets.test.name);
            write_outputs(&dir, &report, &sets.test.examples, &run.variants[0])?;
            let name = format!("{} + {s}", tuned.checkpoint);
            crate::runs::append(&cfg.output.dir, run_record("eval", &name, cfg, &sets.test.name, &report, dir))?;
            store(&out_dir, &format!("tuned-{s}"), &key(s), &(&report, run.seconds))?;
            let slot = strategies.iter().position(|&t| t == s).context("a strategy that was not asked for")?;
            done[slot] = Some((report, run.seconds));
        }
    }
    let rows = strategies
        .into_iter()
        .zip(done)
        .filter_map(|(strategy, d)| {
            d.map(|(report, seconds)| TunedPromptRun { strategy, report, seconds, now: missing.contains(&strategy) })
        })
        .collect();
    Ok((rows, None))
}

/// Labelled examples a prompt strategy shows the model: its demonstrations (few-shot), or the
/// pool it retrieves them from.
fn demonstrations_used(strategy: &str, cfg: &Config, pool: usize) -> usize {
    match strategy {
        "few-shot" => cfg.prompt.k_shot,
        "retrieval" => pool,
        _ => 0,
    }
}

/// One prompt strategy's row: its labelled-example use follows from the strategy.
fn prompt_row(r: &PromptResult, cfg: &Config, pool: usize) -> StrategyRow {
    let labelled = demonstrations_used(&r.test.method, cfg, pool);
    StrategyRow {
        name: r.test.method.clone(),
        kind: RowKind::Prompt,
        metrics: r.test.metrics.clone(),
        consistency: r.test.consistency.clone(),
        labelled_examples_used: labelled,
        time_to_first_result_s: 0.0,
        retrain_time_s: 0.0,
        // Classification by label-word logits reads one answer position: one output token;
        // chain-of-thought generates its reasoning first.
        output_tokens_per_request: r.test.output_tokens_mean.unwrap_or(1.0),
        training_tokens: 0,
        dev_accuracy: Some(r.dev.accuracy),
        predicted: r.test.predicted.clone(),
        accuracy_ci: None,
        macro_f1_ci: None,
    }
}

/// The key of a fine-tuning result: the config hash that decides it, the test examples and the
/// consistency sample.
fn tuned_key(cfg: &Config, limit: Option<usize>, consistency_n: usize) -> String {
    format!("{}|{}|{limit:?}|consistency {consistency_n}", cfg.results_hash(), cfg.compare.split)
}

/// The key of the full fine-tuning run: [`tuned_key`], and the compare budget it shares.
fn finetune_key(cfg: &Config, limit: Option<usize>, consistency_n: usize) -> String {
    let key = tuned_key(cfg, limit, consistency_n);
    if cfg.compare.max_minutes > 0.0 { format!("{key}|compare budget {}", cfg.compare.max_minutes) } else { key }
}

/// Run the comparison over one loaded base model (see the module doc) and assemble the report.
pub fn compare(cfg: &Config, loaded: &mut LoadedModel, opts: &CompareOptions) -> anyhow::Result<CompareReport> {
    let c = &cfg.compare;
    let limit = match opts.limit.unwrap_or(c.limit) {
        0 => None,
        n => Some(n),
    };
    let out_dir = cfg.run_dir().join("compare");
    let sets = load_sets(cfg, limit)?;
    let strategies: Vec<Strategy> = c.strategies.iter().map(|s| s.parse()).collect::<crate::error::Result<_>>()?;
    let pool = if c.retrieval_pool == 0 { sets.train.len() } else { c.retrieval_pool.min(sets.train.len()) };
    let started = opts.started.unwrap_or_else(Instant::now);
    let mut stages: Vec<Stage> = Vec::new();

    // 1. Prompt strategies on the frozen model: dev (choice), test (report), consistency sample.
    let prompts = measure_prompts(cfg, loaded, &strategies, &sets, limit, opts)?;
    for (p, now) in &prompts {
        stages.push(Stage::new(format!("{} (dev, test, consistency)", p.test.method), p.seconds.iter().sum(), *now));
    }
    let prompts: Vec<PromptResult> = prompts.into_iter().map(|(p, _)| p).collect();
    let mut rows: Vec<StrategyRow> = prompts.iter().map(|p| prompt_row(p, cfg, pool)).collect();

    // 2. Learning curve: the same training on nested prefixes of the train split, several seeds
    // below 1,000 labels. It runs before the full run, so that under compare.max_minutes the full
    // run gets what every other stage left.
    let (mut curve, curve_notes) = learning_curve(cfg, loaded, &sets, limit, opts, &mut stages)?;

    // 3. The fine-tuning run on all labels, its best dev checkpoint scored on the test examples.
    let key = finetune_key(cfg, limit, sets.consistency_n);
    let prompt_seconds: Vec<(String, [f64; 3])> = prompts.iter().map(|p| (p.test.method.clone(), p.seconds)).collect();
    let outside = started.elapsed().as_secs_f64() - stages.iter().filter(|s| s.now).map(|s| s.seconds).sum::<f64>();
    let share = training_share(cfg, &prompt_seconds, &stages, outside);
    if let Some(s) = &share {
        eprintln!(
            "compare: {:.1} of the compare.max_minutes = {} budget spent, ~{:.1} min estimated after training: the fine-tuning run gets {:.1} min",
            s.before_minutes, s.budget_minutes, s.after_minutes, s.minutes
        );
    }
    let (tuned, trained_now): (Tuned, bool) =
        cached(&out_dir, "finetune", &key, opts.fresh, || train_and_eval(cfg, loaded, None, share, &sets.test, sets.consistency_n, limit))?;
    stages.push(Stage::new("fine-tuning run", tuned.train_seconds, trained_now));
    stages.push(Stage::new("tuned model on test", tuned.eval_seconds, trained_now));
    rows.push(StrategyRow {
        name: "fine-tuned (LoRA)".into(),
        kind: RowKind::FineTuned,
        metrics: tuned.eval.metrics.clone(),
        consistency: tuned.eval.consistency.clone(),
        labelled_examples_used: tuned.labels_seen,
        time_to_first_result_s: tuned.train_seconds,
        retrain_time_s: tuned.train_seconds,
        output_tokens_per_request: 1.0,
        training_tokens: tuned.tokens_seen,
        dev_accuracy: Some(tuned.best_dev_accuracy),
        predicted: tuned.eval.predicted.clone(),
        accuracy_ci: None,
        macro_f1_ci: None,
    });
    curve.push(CurvePoint {
        labels: tuned.labels_seen,
        accuracy: tuned.eval.metrics.accuracy,
        macro_f1: tuned.eval.metrics.macro_f1,
        train_time_s: tuned.train_seconds,
        seed_accuracies: vec![tuned.eval.metrics.accuracy],
    });

    // 3b. The tuned model under prompt strategies: the seed's "combining both". A new checkpoint
    // may sit at the same path as the stored rows' one, so they are measured again after training.
    let (tuned_prompts, tuned_prompt_note) = measure_tuned_prompts(cfg, loaded, &sets, &tuned, limit, opts.fresh || trained_now)?;
    for TunedPromptRun { strategy, report: r, seconds, now } in &tuned_prompts {
        stages.push(Stage::new(format!("{} (test)", r.method), *seconds, *now));
        let demos = demonstrations_used(strategy.name(), cfg, pool);
        rows.push(StrategyRow {
            name: r.method.clone(),
            kind: RowKind::TunedPrompt,
            metrics: r.metrics.clone(),
            consistency: None,
            labelled_examples_used: tuned.labels_seen.max(demos),
            time_to_first_result_s: tuned.train_seconds,
            retrain_time_s: tuned.train_seconds,
            output_tokens_per_request: r.output_tokens_mean.unwrap_or(1.0),
            training_tokens: tuned.tokens_seen,
            dev_accuracy: None,
            predicted: r.predicted.clone(),
            accuracy_ci: None,
            macro_f1_ci: None,
        });
    }

    let plateau = crate::runs::plateau(&crate::runs::read_all(&cfg.output.dir)?, cfg.decision.plateau_points);
    let header = ReportHeader {
        model: cfg.model.source.clone(),
        data: cfg.data.path.as_ref().map_or_else(String::new, |p| p.display().to_string()),
        split: c.split.clone(),
        test_examples: sets.test.examples.len(),
        labels: cfg.data.labels.clone(),
        train_labels_available: sets.train.len(),
        gold: gold(&sets.test),
        resamples: c.resamples,
        consistency_examples: sets.consistency_n,
    };
    let mut report = CompareReport::new(header, rows, curve, plateau, &cfg.cost, &cfg.decision);
    report.learning_curve_notes = curve_notes;
    report.selections = selections(&report, &sets, &tuned, cfg);
    report.notes = notes(cfg, &sets, &tuned, limit, opts, &stages);
    if !tuned_prompts.is_empty() {
        report.notes.push(
            "tuned + prompt rows: the tuned checkpoint under those prompts with the base model's demonstrations \
             (few-shot: the same seeded draw; retrieval: the neighbours the base model found), main template on \
             the test examples; reported beside the others, never chosen (no dev pass), each paired against the \
             tuned model alone"
                .into(),
        );
    }
    report.notes.extend(tuned_prompt_note);
    Ok(report)
}

/// The choices the report rests on and the split that made each.
fn selections(report: &CompareReport, sets: &Sets, tuned: &Tuned, cfg: &Config) -> Vec<Selection> {
    let dev_n = count(sets.dev.examples.len() as u64);
    let mut out = Vec::new();
    if let Some(best) = report.best_prompt() {
        let by = if crate::report::best_prompt_chosen_on_dev(&report.rows) {
            format!("dev ({dev_n} examples): highest dev accuracy, {:.1}%", best.dev_accuracy.unwrap_or(0.0) * 100.0)
        } else {
            "test (no dev scores)".into()
        };
        out.push(Selection { what: "best prompt strategy".into(), chosen: best.name.clone(), by });
    }
    out.push(Selection {
        what: "calibration applied".into(),
        chosen: if report.best_prompt().is_some_and(|b| b.name == "calibrated") { "yes" } else { "no" }.into(),
        by: format!("dev ({dev_n} examples): calibrated competes as its own strategy"),
    });
    out.push(Selection {
        what: "few-shot demonstrations".into(),
        chosen: format!("one class-balanced draw of {} (prompt.seed = {})", cfg.prompt.k_shot, cfg.prompt.seed),
        by: "fixed: not selected, so no split's score chose it".into(),
    });
    // Training scores the first `train.eval_examples` of dev (0: all of it), however few dev has.
    let dev_used = match tuned.dev_examples {
        0 => format!("all {} dev examples", count(sets.dev_total as u64)),
        n => format!("{} dev examples", count(n.min(sets.dev_total) as u64)),
    };
    out.push(Selection {
        what: "tuned checkpoint".into(),
        chosen: format!("step {} of {}", tuned.best_step, tuned.steps),
        by: format!("dev ({dev_used}): highest dev {}, {:.1}%", cfg.train.metric, tuned.best_dev_accuracy * 100.0),
    });
    out
}

/// What the reader must know about how the numbers were made.
fn notes(cfg: &Config, sets: &Sets, tuned: &Tuned, limit: Option<usize>, opts: &CompareOptions, stages: &[Stage]) -> Vec<String> {
    let mut out = Vec::new();
    if opts.quick {
        out.push(format!(
            "Quick look (--quick): {} test and {} dev examples, {} minutes of training, no learning curve, no tuned + retrieval row; run without --quick for the decision.",
            sets.test.examples.len(),
            sets.dev.examples.len(),
            cfg.train.max_minutes
        ));
    }
    if limit.is_some() {
        out.push(format!(
            "Partial run: only the first {} examples of the {} split were scored (--limit / compare.limit).",
            count(sets.test.examples.len() as u64),
            cfg.compare.split
        ));
    }
    out.push(format!(
        "Consistency (agreement across templates and demonstration orders) is measured on the first {} test examples, a seeded sample; every other figure on all {}.",
        count(sets.consistency_n as u64),
        count(sets.test.examples.len() as u64)
    ));
    out.push(format!(
        "Training ran {} steps on {} labels and was ended by {}; the kept checkpoint is step {}.",
        tuned.steps,
        count(tuned.labels_seen as u64),
        tuned.ending(),
        tuned.best_step
    ));
    if let Some(s) = &tuned.share {
        let cap =
            if cfg.train.max_minutes > 0.0 { format!(" (at most train.max_minutes = {})", cfg.train.max_minutes) } else { String::new() };
        let floor = if s.floored {
            format!(
                " (the other stages left less than {:.0}% of it, so training got that floor and the comparison ran past its budget)",
                MIN_TRAINING_SHARE * 100.0
            )
        } else {
            String::new()
        };
        out.push(format!(
            "compare.max_minutes = {}: the stages before training and the loading between them took {:.1} min, those after it were estimated at {:.1} min and {WRITE_MINUTES} min for writing the report, and {:.0}% of the budget was kept back, so the fine-tuning run got {:.1} min{cap}{floor}.",
            s.budget_minutes,
            s.before_minutes,
            s.after_minutes,
            BUDGET_MARGIN * 100.0,
            s.minutes
        ));
    }
    let duration = crate::report::format::duration;
    let listed: Vec<String> =
        stages.iter().map(|s| format!("{} {}{}", s.name, duration(s.seconds), if s.now { "" } else { " (stored)" })).collect();
    let total: f64 = stages.iter().map(|s| s.seconds).sum();
    out.push(format!(
        "Stage times, measured by this run or, marked stored, by the run that stored them: {}; {} in all.",
        listed.join("; "),
        duration(total)
    ));
    out
}

/// The learning-curve points below the full run: runs on nested label subsets (several seeds
/// below 1,000 labels); configured points that would repeat the full run are noted, not run.
fn learning_curve(
    cfg: &Config,
    loaded: &mut LoadedModel,
    sets: &Sets,
    limit: Option<usize>,
    opts: &CompareOptions,
    stages: &mut Vec<Stage>,
) -> anyhow::Result<(Vec<CurvePoint>, Vec<String>)> {
    let out_dir = cfg.run_dir().join("compare");
    let t = &cfg.train;
    let draws = t.max_steps * t.effective_batch();
    let mut curve = Vec::new();
    let mut notes = Vec::new();
    for &n in cfg.compare.learning_curve.iter().filter(|&&n| n > 0 && n < sets.train.len()) {
        if t.max_steps > 0 && n >= draws {
            notes.push(format!(
                "{} labels not run: {} steps × {} examples draw {}, so that run would train on as many distinct labels as the full run.",
                count(n as u64),
                t.max_steps,
                t.effective_batch(),
                count(draws as u64)
            ));
            continue;
        }
        let seeds = if n < 1000 { cfg.compare.curve_seeds } else { 1 };
        let mut runs: Vec<Tuned> = Vec::new();
        for k in 0..seeds {
            let mut sub = cfg.clone();
            sub.train.seed = t.seed + k as u64;
            if t.max_steps == 0 {
                sub.train.epochs = cfg.compare.curve_epochs;
            }
            sub.output.run_name = format!("{}-labels-{n}-seed-{}", cfg.output.run_name, sub.train.seed);
            // Early stopping must be able to act within a small subset's few steps.
            let steps_per_epoch = n.div_ceil(t.effective_batch()).max(1);
            sub.train.eval_every = if t.max_steps > 0 { t.max_steps } else { t.eval_every.min(steps_per_epoch) };
            let key = tuned_key(&sub, limit, 0);
            let name = format!("curve-{n}-seed-{}", sub.train.seed);
            let (run, now) =
                cached(&out_dir, &name, &key, opts.fresh, || train_and_eval(&sub, loaded, Some(n), None, &sets.test, 0, limit))?;
            stages.push(Stage::new(
                format!("learning curve {n} labels, seed {}", sub.train.seed),
                run.train_seconds + run.eval_seconds,
                now,
            ));
            runs.push(run);
        }
        let mean = |f: &dyn Fn(&Tuned) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
        curve.push(CurvePoint {
            labels: runs[0].labels_seen,
            accuracy: mean(&|r| r.eval.metrics.accuracy),
            macro_f1: mean(&|r| r.eval.metrics.macro_f1),
            train_time_s: mean(&|r| r.train_seconds),
            seed_accuracies: runs.iter().map(|r| r.eval.metrics.accuracy).collect(),
        });
    }
    Ok((curve, notes))
}

/// `wick compare CONFIG`: parse the config once, load the model once, run [`compare`], print the
/// table and write `report.json` and `report.html` under `<run_dir>/compare/`.
pub fn run_compare(args: &CompareArgs) -> anyhow::Result<CompareReport> {
    let started = Instant::now();
    let mut cfg = if crate::init::is_data_file(&args.config) {
        config_for_data(&args.config, args.quick)?
    } else {
        crate::data::load_config(&args.config)?
    };
    if args.quick {
        quick_look(&mut cfg);
    }
    let opts = CompareOptions { limit: args.limit, fresh: args.fresh, quick: args.quick, started: Some(started) };
    let mut loaded = crate::eval::load_model(&cfg.model)?;
    let report = compare(&cfg, &mut loaded, &opts)?;
    let paths = crate::report::write_report(&report, &cfg.run_dir().join("compare"))?;
    println!("{}", crate::report::render_terminal(&report));
    println!("wrote {} and {} ({:.0}s)", paths.json.display(), paths.html.display(), started.elapsed().as_secs_f64());
    Ok(report)
}

/// `wick compare DATA`: the config `wick init` proposes, written next to the report and loaded
/// from there as any config file is.
fn config_for_data(data: &Path, quick: bool) -> anyhow::Result<Config> {
    let opts = crate::init::InitOptions {
        data: data.to_path_buf(),
        model: crate::init::DEFAULT_MODEL.into(),
        text_column: None,
        label_column: None,
        group_column: None,
    };
    let proposal = crate::init::propose(&opts)?;
    let mut where_to = Config::parse(&proposal.toml).map_err(crate::error::Error::Config)?;
    if quick {
        quick_look(&mut where_to);
    }
    let path = where_to.run_dir().join("compare").join("config.toml");
    crate::init::write_config(&path, &proposal.toml, true)?;
    println!(
        "wick compare: {} is a data file, so this runs the config `wick init` proposes for it, written to {} (edit it and pass it instead)",
        data.display(),
        path.display()
    );
    Ok(crate::data::load_config(&path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quick_look_is_small_and_kept_apart() {
        let mut cfg = Config::parse("[output]\nrun_name = \"rt\"\n[train]\nmax_minutes = 20.0\n").unwrap();
        quick_look(&mut cfg);
        assert_eq!((cfg.compare.limit, cfg.compare.dev_examples, cfg.compare.consistency_examples), (150, 100, 20));
        assert!(cfg.compare.learning_curve.is_empty());
        assert_eq!(cfg.compare.tuned_strategies, ["few-shot"]);
        assert_eq!(cfg.train.max_minutes, 2.5);
        assert_eq!(cfg.output.run_name, "rt-quick");
        assert_eq!(cfg.compare.max_minutes, 0.0);
    }

    #[test]
    fn training_gets_what_the_other_stages_leave_of_the_compare_budget() {
        let text = "[train]\nmax_minutes = 45.0\n[compare]\nmax_minutes = 90.0\ntuned_strategies = [\"few-shot\"]\n";
        let mut cfg = Config::parse(text).unwrap();
        // Dev, test and consistency seconds of each prompt strategy.
        let prompts = [("zero-shot", [32.0, 82.0, 30.0]), ("few-shot", [40.0, 106.0, 64.0]), ("retrieval", [293.0, 603.0, 194.0])]
            .map(|(m, s)| (m.to_string(), s));
        let before = |minutes: f64| vec![Stage::new("stored", minutes * 60.0 - 600.0, false), Stage::new("now", 600.0, true)];
        // 60 min of stages and 1 min outside them; after training, with the adapter's 15%: tuned
        // on test and consistency as zero-shot (82 + 30 s), tuned + few-shot as few-shot on test
        // (106 s): 1.15 × 3.633 min; 0.5 min to write the report; 3% of 90 min kept back.
        let share = training_share(&cfg, &prompts, &before(60.0), 60.0).unwrap();
        assert!((share.before_minutes - 61.0).abs() < 1e-9);
        assert!((share.after_minutes - 1.15 * 218.0 / 60.0).abs() < 1e-9);
        assert!((share.minutes - (87.3 - 0.5 - 61.0 - 1.15 * 218.0 / 60.0)).abs() < 1e-9, "{share:?}");
        assert!(!share.floored);
        // Little spent: train.max_minutes caps the share.
        assert_eq!(training_share(&cfg, &prompts, &before(10.0), 0.0).unwrap().minutes, 45.0);
        // The budget already spent: the least share, flagged.
        let over = training_share(&cfg, &prompts, &before(100.0), 0.0).unwrap();
        assert!((over.minutes - 9.0).abs() < 1e-9 && over.floored);
        // Retrieval's test time counts once it is a tuned strategy.
        cfg.compare.tuned_strategies.push("retrieval".into());
        assert!((training_share(&cfg, &prompts, &before(60.0), 0.0).unwrap().after_minutes - 1.15 * 821.0 / 60.0).abs() < 1e-9);
        // No compare budget, no share: train.max_minutes alone decides.
        cfg.compare.max_minutes = 0.0;
        assert!(training_share(&cfg, &prompts, &before(60.0), 0.0).is_none());
        let mut bad = Config::parse(include_str!("../configs/rotten-tomatoes.toml")).unwrap();
        bad.compare.max_minutes = -1.0;
        let bad = bad.validate().unwrap_err();
        assert!(bad.contains("compare.max_minutes"), "{bad}");
    }
}
