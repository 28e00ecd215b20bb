//! `wick compare <config>`: choose on dev, report on test. Every prompt strategy is scored on a
//! dev sample (which picks the best one) and on the whole test split; the fine-tuning run keeps
//! its best dev checkpoint, which is then scored on the same test examples; the learning-curve
//! runs train on nested label subsets. Everything runs over one model load, stored results are
//! reused when their key matches, and the decision report is written.

mod budget;
mod cache;
mod flex;
mod notes;
mod stages;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::{Serialize, de::DeserializeOwned};

use crate::baseline::{BaselineOptions, Baselines, Memo, Strategy, VariantRun};
use crate::config::Config;
use crate::data::Example;
use crate::eval::report::{EvalSet, summarize, write_outputs};
use crate::eval::{Report, ReportOf, prepare_retrieval, run_record, score_tuned, scored_report, strategy_report, tuned_strategy_runs};
use crate::metrics::Metrics;
use crate::model::LoadedModel;
use crate::report::format::count;
use crate::report::{CompareReport, CurvePoint, ReportHeader, ReportPaths, RowKind, Selection, StrategyRow};
use crate::train::{TrainOptions, TrainSummary};

use budget::*;
use cache::*;
use flex::*;
use notes::*;
use stages::*;

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
    // The search's stages start within 3 minutes (on 100 dev examples each costs less than one).
    c.search_minutes = c.search_minutes.min(3.0);
    c.shifted_examples = if c.shifted_examples == 0 { 100 } else { c.shifted_examples.min(100) };
    // The quick look's own training budget below stands in for a share of the full one.
    c.max_minutes = 0.0;
    let t = &mut cfg.train;
    t.max_minutes = if t.max_minutes > 0.0 { t.max_minutes.min(2.5) } else { 2.5 };
    t.eval_examples = 100;
    t.eval_every = t.eval_every.min(15);
    cfg.output.run_name = format!("{}-quick", cfg.output.run_name);
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
    // With a prompt search, the hand-written zero-shot ("v1") is scored so, and every other
    // strategy is a candidate of the search on dev; only the prompt it chooses goes on to test.
    let searching = c.search_minutes > 0.0;
    let on_test = if searching { vec![Strategy::ZeroShot] } else { strategies.clone() };
    let prompts = measure_prompts(cfg, loaded, &on_test, &sets, limit, opts)?;
    for (p, now) in &prompts {
        stages.push(Stage::new(format!("{} (dev, test, consistency)", p.test.method), p.seconds.iter().sum(), *now));
    }
    let prompts: Vec<PromptResult> = prompts.into_iter().map(|(p, _)| p).collect();
    let mut rows: Vec<StrategyRow> = prompts.iter().map(|p| prompt_row(p, cfg, pool)).collect();
    let mut edited_prompt_note = None;
    let searched = if searching {
        let key = search_key(cfg, &sets, limit, &strategies);
        let (s, now): (Searched, bool) =
            cached(&out_dir, "search", &key, opts.fresh, || search_and_score(cfg, loaded, &strategies, &sets, limit))?;
        // The file is the user's to edit: a reused search never overwrites it, and the report
        // says when it no longer holds the search's choice.
        let path = crate::search::prompt_path(cfg);
        if !path.exists() {
            s.search.chosen.save(&path)?;
        } else if crate::search::SearchedPrompt::load(&path).ok().as_ref() != Some(&s.search.chosen) {
            edited_prompt_note = Some(format!(
                "{} differs from the search's choice (edited by hand?): the \"{SEARCHED_ROW}\" row, flexibility and selective prediction measure the search's choice; `wick baseline --strategy searched` scores the file",
                path.display()
            ));
        }
        stages.push(Stage::new("prompt search (dev)", s.seconds[0], now));
        stages.push(Stage::new("searched prompt (test)", s.seconds[1], now));
        let chosen = &s.search.chosen;
        let labelled = if chosen.family == "retrieval" { pool } else { chosen.demos.len() };
        rows.push(StrategyRow {
            labelled_examples_used: labelled,
            dev_accuracy: Some(chosen.dev_accuracy),
            ..report_row(SEARCHED_ROW.into(), RowKind::Prompt, &s.test)
        });
        Some(s)
    } else {
        None
    };

    // 2. Learning curve: the same training on nested prefixes of the train split, several seeds
    // below 1,000 labels. It runs before the full run, so that under compare.max_minutes the full
    // run gets what every other stage left.
    let (mut curve, curve_notes) = learning_curve(cfg, loaded, &sets, limit, opts, &mut stages)?;

    // 3. The fine-tuning run on all labels, its best dev checkpoint scored on the test examples.
    let key = finetune_key(cfg, limit, sets.consistency_n);
    let prompt_seconds: Vec<(String, [f64; 3])> = prompts.iter().map(|p| (p.test.method.clone(), p.seconds)).collect();
    let outside = started.elapsed().as_secs_f64() - stages.iter().filter(|s| s.now).map(|s| s.seconds).sum::<f64>();
    // Flexibility scores the chosen prompt and the tuned model on each shifted sample: at the
    // hand-written zero-shot's test cost per example, twice (the adapter's share on top).
    let per_example = prompts.iter().find(|p| p.test.method == "zero-shot").map_or(0.0, |p| p.seconds[1] / p.test.n.max(1) as f64);
    let shifted_n = if c.shifted_examples == 0 { 1000 } else { c.shifted_examples };
    let shifted_s = per_example * (1.0 + ADAPTER_SCORING_COST) * (shifted_n * c.shifted.len()) as f64;
    // Selective prediction scores both systems on the dev sample and the test examples again.
    let selective_s = per_example * (1.0 + ADAPTER_SCORING_COST) * (sets.dev.examples.len() + sets.test.examples.len()) as f64;
    let share = training_share(cfg, &prompt_seconds, &stages, outside, shifted_s + selective_s);
    if let Some(s) = &share {
        tracing::info!(
            "compare: {:.1} of the compare.max_minutes = {} budget spent, ~{:.1} min estimated after training: the fine-tuning run gets {:.1} min",
            s.before_minutes,
            s.budget_minutes,
            s.after_minutes,
            s.minutes
        );
    }
    let (tuned, trained_now): (Tuned, bool) =
        cached(&out_dir, "finetune", &key, opts.fresh, || train_and_eval(cfg, loaded, None, share, &sets.test, sets.consistency_n, limit))?;
    stages.push(Stage::new("fine-tuning run", tuned.train_seconds, trained_now));
    stages.push(Stage::new("tuned model on test", tuned.eval_seconds, trained_now));
    rows.push(StrategyRow {
        labelled_examples_used: tuned.labels_seen,
        time_to_first_result_s: tuned.train_seconds,
        retrain_time_s: tuned.train_seconds,
        output_tokens_per_request: 1.0,
        training_tokens: tuned.tokens_seen,
        dev_accuracy: Some(tuned.best_dev_accuracy),
        ..report_row("fine-tuned (LoRA)".into(), RowKind::FineTuned, &tuned.eval)
    });
    // The full run's curve point is on the curve's test sample, as the other points are.
    let sample = curve_test_sample(cfg, &sets.test);
    let (full_accuracy, full_f1) = if sample < sets.test.examples.len() && tuned.eval.predicted.len() >= sample {
        let m = Metrics::compute(&gold(&sets.test)[..sample], &tuned.eval.predicted[..sample], &[], &[], &[], &cfg.data.labels);
        (m.accuracy, m.macro_f1)
    } else {
        (tuned.eval.metrics.accuracy, tuned.eval.metrics.macro_f1)
    };
    curve.push(CurvePoint {
        labels: tuned.labels_seen,
        accuracy: full_accuracy,
        macro_f1: full_f1,
        train_time_s: tuned.train_seconds,
        seed_accuracies: vec![full_accuracy],
        test_examples: sample,
    });

    // 3b. The tuned model under prompt strategies: the seed's "combining both". A new checkpoint
    // may sit at the same path as the stored rows' one, so they are measured again after training.
    let (tuned_prompts, tuned_prompt_note) = measure_tuned_prompts(cfg, loaded, &sets, &tuned, limit, opts.fresh || trained_now)?;
    for TunedPromptRun { strategy, report: r, seconds, now } in &tuned_prompts {
        stages.push(Stage::new(format!("{} (test)", r.method), *seconds, *now));
        let demos = demonstrations_used(strategy.name(), cfg, pool);
        rows.push(StrategyRow {
            consistency: None,
            labelled_examples_used: tuned.labels_seen.max(demos),
            time_to_first_result_s: tuned.train_seconds,
            retrain_time_s: tuned.train_seconds,
            training_tokens: tuned.tokens_seen,
            ..report_row(r.method.clone(), RowKind::TunedPrompt, r)
        });
    }

    // 3c. Flexibility: the prompt chosen on dev and the tuned model on the shifted data sets;
    // 3d. answering only when sure: both systems' label probabilities on dev and test.
    let (shifted, confidence) = match crate::report::best_prompt(&rows).map(|r| r.name.clone()) {
        Some(row) => {
            let fresh = opts.fresh || trained_now;
            let searched_choice = searched.as_ref().filter(|_| row == SEARCHED_ROW).map(|s| &s.search.chosen);
            let chosen = ChosenPrompt { row, searched: searched_choice };
            let shifted = if c.shifted.is_empty() { Vec::new() } else { measure_shifted(cfg, loaded, &sets, &tuned, &chosen, fresh)? };
            (shifted, measure_confidence(cfg, loaded, &sets, &tuned, &chosen, limit, fresh)?)
        }
        None => (Vec::new(), Vec::new()),
    };
    for (r, now) in &shifted {
        stages.push(Stage::new(format!("flexibility on {}", r.name), r.seconds, *now));
    }
    for (r, now) in &confidence {
        stages.push(Stage::new(format!("{} on dev and test (selective prediction)", r.row), r.seconds, *now));
    }

    let plateau = match &searched {
        Some(s) => search_plateau(&s.search, cfg.decision.plateau_points),
        None => crate::runs::plateau(&crate::runs::read_all(&cfg.output.dir)?, cfg.decision.plateau_points),
    };
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
    report.search = searched.map(|s| s.search);
    let runs: Vec<ShiftedRun> = shifted.into_iter().map(|(r, _)| r).collect();
    report.add_flexibility(flexibility(&runs, "fine-tuned (LoRA)", c.resamples));
    let required = cfg.decision.required_accuracy;
    report.add_selective(
        confidence
            .iter()
            .map(|(r, _)| crate::report::selective::selective(&r.row, required, (&r.dev.0, &r.dev.1), (&r.test.0, &r.test.1)))
            .collect(),
        cfg.decision.abstain,
    );
    report.selections = selections(&report, &sets, &tuned, cfg);
    report.notes = notes(cfg, &sets, &tuned, limit, opts, &stages);
    if let Some(s) = &report.search {
        report.notes.extend(search_notes(s));
    }
    report.notes.extend(edited_prompt_note);
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

/// The config a `wick compare` argument names: a config file, or a data file (any extension but
/// .toml), for which the config `wick init` proposes is written next to the report and loaded
/// from there as any config is; its path is returned then.
pub fn load_config_or_data(path: &Path, quick: bool) -> anyhow::Result<(Config, Option<PathBuf>)> {
    if !crate::init::is_data_file(path) {
        return Ok((crate::data::load_config(path)?, None));
    }
    let opts = crate::init::InitOptions {
        data: path.to_path_buf(),
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
    let written = where_to.run_dir().join("compare").join("config.toml");
    crate::init::write_config(&written, &proposal.toml, true)?;
    Ok((crate::data::load_config(&written)?, Some(written)))
}

/// `wick compare`: load the model once, run [`compare`], and write `report.json` and
/// `report.html` under `<run_dir>/compare/`.
pub fn run_compare(cfg: &Config, opts: &CompareOptions) -> anyhow::Result<(CompareReport, ReportPaths)> {
    let mut loaded = crate::eval::load_model(&cfg.model)?;
    let report = compare(cfg, &mut loaded, opts)?;
    let paths = crate::report::write_report(&report, &cfg.run_dir().join("compare"))?;
    Ok((report, paths))
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
}
