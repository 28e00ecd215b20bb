//! `wick compare <config>`: run what is missing — prompt baselines, the fine-tuning run, the
//! learning-curve runs, the tuned model's evaluation — on one split, reuse what a previous
//! compare already measured with the same results hash, and write the decision report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::{Serialize, de::DeserializeOwned};

use crate::config::Config;
use crate::eval::{BaselineArgs, DataArgs, EvalArgs, Report};
use crate::report::{CompareReport, CurvePoint, ReportHeader, RowKind, StrategyRow};
use crate::train::{TrainOptions, TrainSummary};

/// Arguments of `wick compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Run config; its `[compare]` section says what to measure.
    pub config: PathBuf,
    /// Override `compare.limit` (examples of the split; 0 = all).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Measure everything again instead of reusing stored results.
    #[arg(long)]
    pub fresh: bool,
}

/// A stored result and the key it was measured under.
#[derive(serde::Deserialize, Serialize)]
struct Stored<T> {
    key: String,
    value: T,
}

/// Reuse `dir/name.json` when its key matches, else measure and store it (atomically).
fn cached<T: Serialize + DeserializeOwned>(
    dir: &Path,
    name: &str,
    key: &str,
    fresh: bool,
    measure: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let path = dir.join(format!("{name}.json"));
    if !fresh
        && let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(stored) = serde_json::from_str::<Stored<T>>(&text)
        && stored.key == key
    {
        eprintln!("compare: reusing {name} from {}", path.display());
        return Ok(stored.value);
    }
    let value = measure()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = serde_json::to_string_pretty(&Stored { key: key.to_string(), value: &value })?;
    crate::model::load::write_atomic(&path, text.as_bytes())?;
    Ok(value)
}

/// One prompt strategy's row: its labelled-example use follows from the strategy.
fn prompt_row(r: &Report, cfg: &Config, pool: usize) -> StrategyRow {
    let labelled = match r.method.as_str() {
        "few-shot" => cfg.prompt.k_shot,
        "retrieval" => pool,
        _ => 0,
    };
    StrategyRow {
        name: r.method.clone(),
        kind: RowKind::Prompt,
        metrics: r.metrics.clone(),
        consistency: r.consistency.clone(),
        labelled_examples_used: labelled,
        time_to_first_result_s: 0.0,
        retrain_time_s: 0.0,
        // Classification by label-word logits reads one answer position: one output token.
        output_tokens_per_request: 1.0,
        training_tokens: 0,
    }
}

/// A fine-tuning run (its stored summary) plus its evaluation on the compare split.
#[derive(serde::Deserialize, Serialize)]
struct Tuned {
    train_seconds: f64,
    tokens_seen: u64,
    train_examples: usize,
    /// Distinct labels trained on (0 in results stored before it was recorded).
    #[serde(default)]
    labels_seen: usize,
    checkpoint: String,
    eval: Report,
}

fn train_and_eval(cfg: &Config, limit: Option<usize>, train_limit: Option<usize>, all_templates: bool) -> anyhow::Result<Tuned> {
    // A curve run (train_limit) needs only its final model, not the untrained model's dev score.
    let opts = TrainOptions { resume: None, train_limit, quiet: false, skip_initial_eval: train_limit.is_some() };
    let summary: TrainSummary = crate::train::train(cfg, &opts)?;
    if summary.interrupted {
        anyhow::bail!("training was interrupted; run `wick compare` again to continue");
    }
    let best = summary.best.as_ref().map(|b| b.step).context("training recorded no dev evaluation")?;
    let checkpoint = crate::train::state::step_dir(&summary.run_dir, best);
    let args = EvalArgs {
        checkpoint: checkpoint.clone(),
        split: cfg.compare.split.clone(),
        data_args: DataArgs::default(),
        // The checkpoint carries its own resolved config (a curve run has its own output folder).
        config: None,
        limit,
        batch_size: cfg.compare.batch_size,
        main_template_only: !all_templates,
        // The cache self-check is a diagnostic of `wick eval`; the report does not use it.
        skip_cache_check: true,
    };
    let eval = crate::eval::run_eval(&args)?;
    Ok(Tuned {
        train_seconds: summary.train_seconds,
        tokens_seen: summary.tokens_seen,
        train_examples: summary.train_examples,
        labels_seen: summary.labels_seen,
        checkpoint: checkpoint.display().to_string(),
        eval,
    })
}

impl Tuned {
    /// Distinct labelled examples the run learned from.
    fn labels_used(&self) -> usize {
        if self.labels_seen > 0 { self.labels_seen } else { self.train_examples }
    }
}

/// The keys stored results are reused under: (prompt strategies, fine-tuning runs). Each names
/// the config hash that decides the result, the split and the example limit.
pub fn result_keys(cfg: &Config, limit: Option<usize>) -> (String, String) {
    let c = &cfg.compare;
    let scope = format!("{}|{limit:?}", c.split);
    let prompts = format!("{}|{scope}|{}|{}", cfg.prompt_results_hash(), c.retrieval_pool, c.strategies.join(","));
    (prompts, format!("{}|{scope}", cfg.results_hash()))
}

/// Run the comparison and write `report.json` and `report.html` under `<run_dir>/compare/`.
pub fn run_compare(args: &CompareArgs) -> anyhow::Result<CompareReport> {
    let started = Instant::now();
    let cfg = Config::load(&args.config)?;
    let c = &cfg.compare;
    let limit = match args.limit.unwrap_or(c.limit) {
        0 => None,
        n => Some(n),
    };
    let out_dir = cfg.run_dir().join("compare");
    let (prompt_key, key) = result_keys(&cfg, limit);
    let (splits, _) = crate::data::load_splits(&cfg.data, crate::data::ReadMode::Strict)?;
    let split_len = match c.split.as_str() {
        "train" => splits.train.len(),
        "dev" => splits.dev.len(),
        _ => splits.test.len(),
    };
    let pool = if c.retrieval_pool == 0 { splits.train.len() } else { c.retrieval_pool.min(splits.train.len()) };

    // 1. Prompt strategies on the frozen model.
    let strategies = c.strategies.join(",");
    let reports: Vec<Report> = cached(&out_dir, "baselines", &prompt_key, args.fresh, || {
        crate::eval::run_baseline(&BaselineArgs {
            config: args.config.clone(),
            strategy: strategies.clone(),
            split: c.split.clone(),
            data_args: DataArgs::default(),
            limit,
            batch_size: c.batch_size,
            calibrate_on: "zero-shot".into(),
            retrieval_pool: (c.retrieval_pool > 0).then_some(c.retrieval_pool),
            skip_cache_check: true,
        })
    })?;
    let mut rows: Vec<StrategyRow> = reports.iter().map(|r| prompt_row(r, &cfg, pool)).collect();

    // 2. The fine-tuning run on all labels, evaluated under every template (consistency).
    let tuned: Tuned = cached(&out_dir, "finetune", &key, args.fresh, || train_and_eval(&cfg, limit, None, true))?;
    rows.push(StrategyRow {
        name: "fine-tuned (LoRA)".into(),
        kind: RowKind::FineTuned,
        metrics: tuned.eval.metrics.clone(),
        consistency: tuned.eval.consistency.clone(),
        labelled_examples_used: tuned.labels_used(),
        time_to_first_result_s: tuned.train_seconds,
        retrain_time_s: tuned.train_seconds,
        output_tokens_per_request: 1.0,
        training_tokens: tuned.tokens_seen,
    });

    // 3. Learning curve: the same training on nested prefixes of the train split. With a step
    // budget the full run draws only max_steps × batch examples; a subset at least that large
    // would train on just as many distinct labels, so it would repeat the full run's point.
    let draws = cfg.train.max_steps * cfg.train.effective_batch();
    let mut curve = Vec::new();
    let mut notes = Vec::new();
    for &n in c.learning_curve.iter().filter(|&&n| n > 0 && n < tuned.train_examples) {
        if cfg.train.max_steps > 0 && n >= draws {
            notes.push(format!(
                "{} labels not run: {} steps × {} examples draw {}, so that run would train on as many distinct labels as the full run.",
                crate::report::format::count(n as u64),
                cfg.train.max_steps,
                cfg.train.effective_batch(),
                crate::report::format::count(draws as u64)
            ));
            continue;
        }
        let mut sub = cfg.clone();
        sub.output.run_name = format!("{}-labels-{n}", cfg.output.run_name);
        // A curve point needs only its final model: no intermediate dev evaluations.
        if sub.train.max_steps > 0 {
            sub.train.eval_every = sub.train.max_steps;
        }
        let point: Tuned = cached(&out_dir, &format!("curve-{n}"), &key, args.fresh, || train_and_eval(&sub, limit, Some(n), false))?;
        curve.push(CurvePoint {
            labels: point.labels_used(),
            accuracy: point.eval.metrics.accuracy,
            macro_f1: point.eval.metrics.macro_f1,
            train_time_s: point.train_seconds,
        });
    }
    curve.push(CurvePoint {
        labels: tuned.labels_used(),
        accuracy: tuned.eval.metrics.accuracy,
        macro_f1: tuned.eval.metrics.macro_f1,
        train_time_s: tuned.train_seconds,
    });

    let plateau = crate::runs::plateau(&crate::runs::read_all(&cfg.output.dir)?, cfg.decision.plateau_points);
    let header = ReportHeader {
        model: cfg.model.source.clone(),
        data: cfg.data.path.as_ref().map_or_else(String::new, |p| p.display().to_string()),
        split: c.split.clone(),
        test_examples: limit.map_or(split_len, |l| l.min(split_len)),
        labels: cfg.data.labels.clone(),
        train_labels_available: splits.train.len(),
    };
    let mut report = CompareReport::new(header, rows, curve, plateau, &cfg.cost, &cfg.decision);
    report.learning_curve_notes = notes;
    let paths = crate::report::write_report(&report, &out_dir)?;
    println!("{}", crate::report::render_terminal(&report));
    println!("wrote {} and {} ({:.0}s)", paths.json.display(), paths.html.display(), started.elapsed().as_secs_f64());
    Ok(report)
}
