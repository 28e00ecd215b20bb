//! The measuring stages: the prompt strategies on dev, test and the consistency sample, the
//! fine-tuning run and its checkpoint on test, the tuned model under prompts, and the learning
//! curve. Each returns what it measured; the stage sequence is in `mod.rs`.

#[allow(unused_imports)]
use super::*;

/// One prompt strategy: chosen among the others on dev, reported on test.
#[derive(serde::Deserialize, Serialize)]
pub(super) struct PromptResult {
    /// Main-template metrics on the dev sample.
    pub(super) dev: Metrics,
    /// The test report (main template on every test example; consistency on the sample).
    pub(super) test: Report,
    /// Wall seconds on dev, on test, and on the consistency sample.
    pub(super) seconds: [f64; 3],
}

/// A fine-tuning run (its summary) plus its best checkpoint's evaluation on the test examples.
#[derive(serde::Deserialize, Serialize)]
pub(super) struct Tuned {
    pub(super) train_seconds: f64,
    pub(super) tokens_seen: u64,
    pub(super) train_examples: usize,
    pub(super) labels_seen: usize,
    pub(super) steps: usize,
    pub(super) best_step: usize,
    /// Dev accuracy of the kept checkpoint, and `train.eval_examples` that measured it (0: all).
    pub(super) best_dev_accuracy: f64,
    pub(super) dev_examples: usize,
    pub(super) early_stopped: bool,
    pub(super) budget_reached: bool,
    /// The steps the schedule was fitted to under `train.max_minutes`, and those planned.
    #[serde(default)]
    pub(super) budget_steps: Option<usize>,
    #[serde(default)]
    pub(super) planned_steps: usize,
    pub(super) checkpoint: String,
    pub(super) eval: Report,
    /// Wall seconds of the test evaluation (and of the consistency sample's, when there is one).
    pub(super) eval_seconds: f64,
    /// The run's share of `compare.max_minutes`, when there is that budget.
    #[serde(default)]
    pub(super) share: Option<TrainingShare>,
}

/// One stage of a comparison and its wall time.
pub(super) struct Stage {
    pub(super) name: String,
    pub(super) seconds: f64,
    /// Measured by this process (else reused from a stored result).
    pub(super) now: bool,
}

impl Stage {
    pub(super) fn new(name: impl Into<String>, seconds: f64, now: bool) -> Self {
        Self { name: name.into(), seconds, now }
    }
}

/// The data `compare` scores: the dev sample that makes the choices, the test examples that
/// report them, and the size of the consistency sample (a prefix of the test examples; splits
/// are already seeded shuffles).
pub(super) struct Sets {
    pub(super) train: Vec<Example>,
    /// The dev sample that makes the prompt choices (`compare.dev_examples` of dev).
    pub(super) dev: EvalSet,
    /// Examples in the whole dev split.
    pub(super) dev_total: usize,
    pub(super) test: EvalSet,
    pub(super) consistency_n: usize,
}

pub(super) fn load_sets(cfg: &Config, limit: Option<usize>) -> anyhow::Result<Sets> {
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

pub(super) fn texts(set: &EvalSet) -> Vec<String> {
    set.examples.iter().map(|e| e.text.clone()).collect()
}

pub(super) fn gold(set: &EvalSet) -> Vec<usize> {
    set.examples.iter().map(|e| e.label).collect()
}

/// Score the prompt strategies: the main template on dev and on test, then every template (and
/// demonstration order) on the consistency sample, reusing the test scores of its examples.
pub(super) fn measure_prompts(
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
            tracing::info!("compare: {s} on {} dev examples (choice)", count(dev_texts.len() as u64));
            let dev_run = baselines.run_main(s, &dev_texts, &mut memo_dev)?;
            let dev = summarize(&dev_run.variants, &dev_gold, labels).context("no prompt was scored")?.0;
            tracing::info!(
                "compare: {s} dev accuracy {:.4} ({:.0} s); now {} test examples",
                dev.accuracy,
                dev_run.seconds,
                count(test_texts.len() as u64)
            );
            let test_run = baselines.run_main(s, &test_texts, &mut memo_test)?;
            memo_sample.extend_from_prefix(&memo_test, n);
            tracing::info!("compare: {s} test done ({:.0} s); consistency on {} test examples", test_run.seconds, count(n as u64));
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
pub(super) fn train_and_eval(
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
    let batch = cfg.compare.batch_size;
    let (eval, eval_seconds) = crate::checkpoint::with_adapter(&checkpoint, loaded, |loaded, attached| -> anyhow::Result<(Report, f64)> {
        let head = attached.head.as_ref();
        let method = if head.is_some() { "linear" } else { "verbalizer" };
        let baselines = Baselines::new(loaded, cfg, &[], BaselineOptions { batch_size: batch, ..BaselineOptions::default() })?;
        let test_texts = texts(test);
        tracing::info!("compare: {} ({method}) on {} test examples", checkpoint.display(), count(test_texts.len() as u64));
        let start = Instant::now();
        let main = score_tuned(&baselines, loaded, head, &test_texts, batch, false)?;
        let seconds = start.elapsed().as_secs_f64();
        let of = ReportOf { command: "eval", method, checkpoint: Some(checkpoint.display().to_string()) };
        let mut report = scored_report(of, test, limit, cfg, loaded, &main, seconds)?;
        if consistency_n > 0 {
            tracing::info!("compare: tuned model, every template on {} test examples (consistency)", count(consistency_n as u64));
            let sample = score_tuned(&baselines, loaded, head, &test_texts[..consistency_n], batch, true)?;
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
        Ok((report, start.elapsed().as_secs_f64()))
    })?;
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
pub(super) struct TunedPromptRun {
    pub(super) strategy: Strategy,
    pub(super) report: Report,
    pub(super) seconds: f64,
    /// Measured by this process (else reused from a stored result).
    pub(super) now: bool,
}

/// The tuned model under prompt strategies, on the test examples, with the base model's
/// demonstrations ([`tuned_strategy_runs`]). Main template only; never a choice, so no dev pass.
/// A linear-head checkpoint has no label words to prompt for: none, with a note.
pub(super) fn measure_tuned_prompts(
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
        tracing::info!("compare: tuned + {} on {} test examples", c.tuned_strategies.join(" / "), count(sets.test.examples.len() as u64));
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

/// The learning-curve points below the full run: runs on nested label subsets (several seeds
/// below 1,000 labels); configured points that would repeat the full run are noted, not run.
pub(super) fn learning_curve(
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
    let sample = curve_test_sample(cfg, &sets.test);
    let test_sample =
        EvalSet { name: sets.test.name.clone(), source: sets.test.source.clone(), examples: sets.test.examples[..sample].to_vec() };
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
        let seeds = if n < crate::config::CURVE_SEEDS_BELOW { cfg.compare.curve_seeds } else { 1 };
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
            if cfg.compare.curve_dev_examples > 0 {
                sub.train.eval_examples = sub.train.eval_examples.min(cfg.compare.curve_dev_examples);
            }
            let key = format!("{}|test sample {sample}", tuned_key(&sub, limit, 0));
            let name = format!("curve-{n}-seed-{}", sub.train.seed);
            let (run, now) =
                cached(&out_dir, &name, &key, opts.fresh, || train_and_eval(&sub, loaded, Some(n), None, &test_sample, 0, limit))?;
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
            test_examples: sample,
        });
    }
    Ok((curve, notes))
}

/// How many of the first test examples the learning curve is measured on:
/// `compare.curve_test_examples`, at most the whole split (0: all of it).
pub(super) fn curve_test_sample(cfg: &Config, test: &EvalSet) -> usize {
    match cfg.compare.curve_test_examples {
        0 => test.examples.len(),
        k => k.min(test.examples.len()),
    }
}

/// The prompt search on dev and its chosen prompt on the test examples.
#[derive(serde::Deserialize, Serialize)]
pub(super) struct Searched {
    pub(super) search: crate::search::SearchReport,
    /// The chosen prompt's test report (no consistency: it is one prompt).
    pub(super) test: Report,
    /// Wall seconds of the search and of the test pass.
    pub(super) seconds: [f64; 2],
}

/// The key of a stored search: the prompt-side config, the dev sample and test examples, the
/// strategies raced and the search's budget.
pub(super) fn search_key(cfg: &Config, sets: &Sets, limit: Option<usize>, strategies: &[Strategy]) -> String {
    let c = &cfg.compare;
    let names: Vec<&str> = strategies.iter().map(|s| s.name()).collect();
    format!(
        "{}|{}|{limit:?}|dev {}|pool {}|{}|search {} min|train {}",
        cfg.prompt_results_hash(),
        c.split,
        sets.dev.examples.len(),
        c.retrieval_pool,
        names.join(","),
        c.search_minutes,
        sets.train.len()
    )
}

/// Search the prompt on the dev sample (the configured strategies are its first candidates),
/// keep the chosen prompt at [`crate::search::prompt_path`], and score it on the test examples.
pub(super) fn search_and_score(
    cfg: &Config,
    loaded: &LoadedModel,
    strategies: &[Strategy],
    sets: &Sets,
    limit: Option<usize>,
) -> anyhow::Result<Searched> {
    let c = &cfg.compare;
    let base_dir = cfg.run_dir().join("baseline");
    let opts = crate::search::SearchOptions {
        minutes: c.search_minutes,
        batch_size: c.batch_size,
        progress: |m| tracing::info!("compare: search: {m}"),
        ..crate::search::SearchOptions::default()
    };
    tracing::info!(
        "compare: prompt search on {} dev examples (stages start within compare.search_minutes = {})",
        count(sets.dev.examples.len() as u64),
        c.search_minutes
    );
    let start = Instant::now();
    let pool = crate::baseline::retrieval_pool(None, cfg);
    let search = crate::eval::search_prompt(loaded, cfg, &sets.train, &sets.dev.examples, strategies, pool, opts)?;
    let search_s = start.elapsed().as_secs_f64();
    tracing::info!(
        "compare: search chose {:?} (dev {:.1}%) from {} candidates in {:.1} min; now {} test examples",
        search.chosen.name,
        search.chosen.dev_accuracy * 100.0,
        search.candidates.len(),
        search.minutes,
        count(sets.test.examples.len() as u64)
    );
    let start = Instant::now();
    let run = crate::search::score_searched(loaded, cfg, &sets.train, &search.chosen, &texts(&sets.test), c.batch_size)?;
    let test_s = start.elapsed().as_secs_f64();
    let of = ReportOf { command: "baseline", method: SEARCHED_ROW, checkpoint: None };
    let test = scored_report(of, &sets.test, limit, cfg, loaded, std::slice::from_ref(&run), test_s)?;
    let dir = base_dir.join("searched").join(&sets.test.name);
    write_outputs(&dir, &test, &sets.test.examples, &run)?;
    crate::runs::append(&cfg.output.dir, run_record("baseline", SEARCHED_ROW, cfg, &sets.test.name, &test, dir))?;
    Ok(Searched { search, test, seconds: [search_s, test_s] })
}

/// The report row of the searched prompt.
pub(super) const SEARCHED_ROW: &str = "prompt (searched)";
