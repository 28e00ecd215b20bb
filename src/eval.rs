//! The `wick baseline`, `wick eval` and `wick predict` commands: score prompt-only strategies on
//! the frozen base model, or a LoRA checkpoint, on a split or any data file, and write
//! metrics.json + predictions.jsonl under the run folder.

pub mod report;
mod retrieval;
mod searched;
mod tuned;

pub use report::Summarized;
pub use retrieval::{cached_index, prepare_retrieval};
pub use searched::{SEARCHED, run_eval_searched, run_searched_baseline, search_prompt};
pub use tuned::tuned_strategy_runs;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::Tensor;

use crate::baseline::{BaselineOptions, Baselines, CONTENT_FREE, CacheCheck, DEMO_ORDERS, Memo, Strategy, StrategyRun, VariantRun};
use crate::checkpoint::{load_adapter, read_run, resolve_checkpoint_dir};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::{TableRow, render_detail, render_table};
use crate::model::LoadedModel;
use crate::score::{Head, ScoreOptions, score_head};

use report::{CalibrationInfo, DemoOut, RetrievalInfo, load_eval_set, summarize, write_outputs};
pub use report::{DataArgs, Report};

/// `wick baseline`: score prompt-only strategies with the frozen base model.
#[derive(Debug, Clone)]
pub struct BaselineArgs {
    /// Path to the TOML run config.
    pub config: PathBuf,
    /// "all", or a comma-separated list of zero-shot, few-shot, calibrated, retrieval, cot; or
    /// "searched", the prompt a search stored (`--search`, `wick compare`).
    pub strategy: String,
    /// Split to score: train, dev or test.
    pub split: String,
    /// A data file to score instead of the split.
    pub data_args: DataArgs,
    /// Score only N examples (the first N of a split; a seeded sample of N from a --data file).
    pub limit: Option<usize>,
    /// Examples per forward pass.
    pub batch_size: usize,
    /// What `calibrated` calibrates: zero-shot or few-shot.
    pub calibrate_on: String,
    /// Retrieve from a seeded sample of N train examples (default: the config's
    /// compare.retrieval_pool, as the compare report does; 0: the whole train split).
    pub retrieval_pool: Option<usize>,
    /// Skip the prefix-cache self-check (it scores the first 16 examples again without the cache).
    pub skip_cache_check: bool,
    /// Search the prompt on dev first and keep it (then `--strategy searched` scores it).
    pub search: bool,
}

/// `wick eval`: score a LoRA checkpoint (verbalizer or linear head).
#[derive(Debug, Clone)]
pub struct EvalArgs {
    /// A checkpoint folder (wick's, or any HF PEFT LoRA folder), a run folder whose `best` file
    /// names one, or a hub id `org/name[@rev]` of a PEFT adapter.
    pub checkpoint: PathBuf,
    /// Split to score: train, dev or test.
    pub split: String,
    /// A data file to score instead of the split.
    pub data_args: DataArgs,
    /// Run config: for a wick checkpoint its [data] and [output] sections replace the checkpoint's;
    /// for an adapter written by Python PEFT it gives the model, prompt and labels too.
    pub config: Option<PathBuf>,
    /// Score only N examples (the first N of a split; a seeded sample of N from a --data file).
    pub limit: Option<usize>,
    /// Examples per forward pass.
    pub batch_size: usize,
    /// Score only the main template (no consistency across templates; one pass instead of four).
    pub main_template_only: bool,
    /// Skip the prefix-cache self-check (it scores the first 16 examples again without the cache).
    pub skip_cache_check: bool,
    /// Prompt the tuned model with a strategy (few-shot, calibrated, retrieval, cot) and the same
    /// demonstrations as the base-model run (retrieval: the base model's neighbours).
    pub strategy: Option<String>,
    /// With --strategy retrieval: retrieve from a seeded sample of N train examples (default: the
    /// config's compare.retrieval_pool; 0: the whole train split).
    pub retrieval_pool: Option<usize>,
    /// Compute dtype of the base model, replacing the checkpoint's `model.dtype`.
    pub dtype: Option<String>,
}

/// `wick predict`: label texts with a checkpoint or a prompt-only strategy.
#[derive(Debug, Clone)]
pub struct PredictArgs {
    /// A checkpoint folder (wick's or PEFT's), a run folder with a `best` file, or a PEFT adapter's hub id.
    pub checkpoint: Option<PathBuf>,
    /// A prompt-only strategy on the base model (zero-shot, few-shot, calibrated, retrieval, cot); needs --config.
    pub strategy: Option<String>,
    /// Run config: for --strategy, and for a --checkpoint that Python PEFT wrote.
    pub config: Option<PathBuf>,
    /// A file with one text per line.
    pub input: Option<PathBuf>,
    /// Examples per forward pass.
    pub batch_size: usize,
    /// What `calibrated` calibrates: zero-shot or few-shot.
    pub calibrate_on: String,
    /// Retrieve from a seeded sample of N train examples (default: the config's
    /// compare.retrieval_pool, as the compare report does; 0: the whole train split).
    pub retrieval_pool: Option<usize>,
    /// Texts to label.
    pub texts: Vec<String>,
}

pub use crate::model::load_configured as load_model;

fn device_name(loaded: &LoadedModel) -> String {
    let (act, proj) = (loaded.model.dtype(), loaded.model.projection_dtype());
    let dtype = if act == proj { format!("{act:?}") } else { format!("{act:?} ({proj:?} projections)") };
    format!("{:?} {dtype}", loaded.model.device()).to_lowercase()
}

fn cache_line(name: &str, c: &CacheCheck) -> String {
    format!(
        "prefix cache ({name}): {} examples, {} shared prefix tokens, max |cached - uncached| = {:.1e}, {:.1} vs {:.1} examples/s ({:.2}x)",
        c.examples, c.prefix_tokens, c.max_abs_diff, c.cached_examples_per_s, c.uncached_examples_per_s, c.speedup
    )
}

/// What a report is of: the command, the strategy or head, and the checkpoint (eval).
pub(crate) struct ReportOf<'a> {
    /// "baseline" or "eval".
    pub command: &'a str,
    /// Strategy or head.
    pub method: &'a str,
    /// Checkpoint folder (eval).
    pub checkpoint: Option<String>,
}

/// A report of `variants` scored on `set`, with the fields every command fills; the baseline
/// adds its demonstration orders, calibration, demonstrations and retrieval on top.
pub(crate) fn scored_report(
    of: ReportOf,
    set: &report::EvalSet,
    limit: Option<usize>,
    cfg: &Config,
    loaded: &LoadedModel,
    variants: &[VariantRun],
    seconds: f64,
) -> anyhow::Result<Report> {
    let gold: Vec<usize> = set.examples.iter().map(|e| e.label).collect();
    let (metrics, templates, consistency) = summarize(variants, &gold, &cfg.data.labels).context("no prompt was scored")?;
    Ok(Report {
        command: of.command.into(),
        method: of.method.into(),
        checkpoint: of.checkpoint,
        data: set.source.clone(),
        n: set.examples.len(),
        limit,
        model: cfg.model.source.clone(),
        device: device_name(loaded),
        labels: cfg.data.labels.clone(),
        predicted: variants[0].predicted.clone(),
        metrics,
        templates,
        consistency,
        orders: Vec::new(),
        order_consistency: None,
        truncated: variants[0].truncated,
        prefix_cache: None,
        calibration: None,
        demos: Vec::new(),
        retrieval: None,
        seconds,
        output_tokens_mean: (!variants[0].output_tokens.is_empty())
            .then(|| variants[0].output_tokens.iter().sum::<usize>() as f64 / variants[0].output_tokens.len() as f64),
    })
}

/// The metrics.json report of one strategy's run on `set`: metrics, consistency across templates
/// and demonstration orders, calibration, demonstrations and retrieval details.
#[allow(clippy::too_many_arguments)]
pub fn strategy_report(
    run: &StrategyRun,
    set: &report::EvalSet,
    limit: Option<usize>,
    cfg: &Config,
    loaded: &LoadedModel,
    calibrate_on: Strategy,
    retrieval: Option<&RetrievalInfo>,
    prefix_cache: Option<CacheCheck>,
) -> anyhow::Result<Report> {
    let strategy = run.strategy;
    let labels = &cfg.data.labels;
    let gold: Vec<usize> = set.examples.iter().map(|e| e.label).collect();
    let (orders, order_consistency) = match summarize(&run.orders, &gold, labels) {
        Some((_, o, c)) if run.orders.len() > 1 => (o, c),
        _ => (Vec::new(), None),
    };
    let of = ReportOf { command: "baseline", method: strategy.name(), checkpoint: None };
    Ok(Report {
        orders,
        order_consistency,
        prefix_cache,
        calibration: (strategy == Strategy::Calibrated).then(|| CalibrationInfo {
            base: calibrate_on.name().into(),
            content_free_inputs: CONTENT_FREE.iter().map(|s| s.to_string()).collect(),
            p_cf: run.content_free.clone(),
        }),
        demos: run
            .demos
            .iter()
            .map(|d| DemoOut { text: d.text.clone(), label: labels.get(d.label).cloned().unwrap_or_default() })
            .collect(),
        retrieval: if strategy == Strategy::Retrieval {
            retrieval.cloned().map(|info| {
                let hits = run.neighbour_labels.iter().zip(&gold).filter(|(n, g)| n.last() == Some(*g)).count();
                RetrievalInfo { nearest_label_accuracy: Some(hits as f64 / gold.len().max(1) as f64), ..info }
            })
        } else {
            None
        },
        ..scored_report(of, set, limit, cfg, loaded, &run.variants, run.seconds)?
    })
}

/// Refuse flags that leave nothing to score, before anything is loaded.
fn check_flags(limit: Option<usize>, batch_size: usize) -> anyhow::Result<()> {
    if limit == Some(0) {
        anyhow::bail!("--limit 0 leaves nothing to score: give N of at least 1, or leave --limit out to score them all");
    }
    if batch_size == 0 {
        anyhow::bail!("--batch-size 0: give at least 1 example per forward pass");
    }
    Ok(())
}

/// `wick baseline CONFIG`: score each strategy on a split or file and write its outputs under
/// `run_dir/baseline/<strategy>/<split-or-file-stem>/`.
pub fn run_baseline(args: &BaselineArgs) -> anyhow::Result<Summarized<Vec<Report>>> {
    check_flags(args.limit, args.batch_size)?;
    if args.search || args.strategy == SEARCHED {
        if args.strategy != SEARCHED && args.strategy != "all" {
            anyhow::bail!("--search scores the searched prompt; leave --strategy out or give --strategy searched");
        }
        let searched = run_searched_baseline(args)?;
        return Ok(Summarized { value: vec![searched.value.1], summary: searched.summary });
    }
    let cfg = crate::data::load_config(&args.config)?;
    let strategies = Strategy::parse_list(&args.strategy)?;
    let calibrate_on: Strategy = args.calibrate_on.parse()?;
    let needs_train = strategies.iter().any(|s| matches!(s, Strategy::FewShot | Strategy::Retrieval))
        || (strategies.contains(&Strategy::Calibrated) && calibrate_on == Strategy::FewShot);
    let (set, train) = load_eval_set(&cfg, &args.split, &args.data_args, args.limit, needs_train)?;
    if needs_train {
        // Fail before the model load when the demonstrations cannot be drawn.
        crate::baseline::check_k_shot(cfg.prompt.k_shot, train.len())?;
    }
    let loaded = load_model(&cfg.model)?;
    let opts = BaselineOptions {
        batch_size: args.batch_size,
        calibrate_on,
        all_variants: true,
        retrieval_pool: crate::baseline::retrieval_pool(args.retrieval_pool, &cfg),
    };
    let mut baselines = Baselines::new(&loaded, &cfg, &train, opts)?;
    baselines.check(&strategies)?;
    let base_dir = cfg.run_dir().join("baseline");
    let mut retrieval = None;
    if strategies.contains(&Strategy::Retrieval) {
        let (with_index, mut info) = prepare_retrieval(baselines, &loaded, &cfg, args.batch_size, &base_dir)?;
        info.train_size = train.len();
        baselines = with_index;
        retrieval = Some(info);
    }
    let texts: Vec<String> = set.examples.iter().map(|e| e.text.clone()).collect();
    let mut memo = Memo::default();
    let mut checks: BTreeMap<&'static str, CacheCheck> = BTreeMap::new();
    let mut reports = Vec::new();
    for &strategy in &strategies {
        let orders = strategy == Strategy::FewShot || (strategy == Strategy::Calibrated && calibrate_on == Strategy::FewShot);
        let extra = if orders { format!(" (+{} demonstration orders)", DEMO_ORDERS - 1) } else { String::new() };
        tracing::info!("{strategy}: {} examples of {} x {} templates{extra}", texts.len(), set.source, baselines.prompters().len());
        let run = baselines.run_strategy(strategy, &texts, &mut memo)?;
        let base = if strategy == Strategy::Calibrated { calibrate_on } else { strategy };
        if !args.skip_cache_check
            && base != Strategy::Retrieval
            && !checks.contains_key(base.name())
            && let Some(c) = baselines.cache_check(base, &texts)?
        {
            checks.insert(base.name(), c);
        }
        let report =
            strategy_report(&run, &set, args.limit, &cfg, &loaded, calibrate_on, retrieval.as_ref(), checks.get(base.name()).cloned())?;
        let dir = base_dir.join(strategy.name()).join(&set.name);
        write_outputs(&dir, &report, &set.examples, &run.variants[0])?;
        tracing::info!("  {:.1}s, wrote {}", run.seconds, dir.display());
        reports.push(report);
    }
    let rows: Vec<TableRow> =
        reports.iter().map(|r| TableRow { name: r.method.clone(), metrics: &r.metrics, consistency: r.consistency.as_ref() }).collect();
    let mut summary = format!("{} on {} ({} examples)\n{}\n", cfg.model.source, set.source, texts.len(), render_table(&rows));
    for (name, c) in &checks {
        let _ = writeln!(summary, "{}", cache_line(name, c));
    }
    let runs =
        reports.iter().map(|r| run_record("baseline", &r.method, &cfg, &set.name, r, base_dir.join(&r.method).join(&set.name))).collect();
    crate::runs::append_all(&cfg.output.dir, runs)?;
    Ok(Summarized { value: reports, summary })
}

/// The runs.jsonl line of one baseline strategy or checkpoint evaluation.
pub(crate) fn run_record(kind: &str, name: &str, cfg: &Config, split: &str, r: &Report, path: PathBuf) -> crate::runs::NewRun {
    crate::runs::NewRun {
        kind: kind.into(),
        name: name.into(),
        // A prompt result depends on the prompt-side config only: a changed [train] is no new
        // prompt iteration for the plateau rule.
        config_hash: if crate::runs::family(kind) == "prompt" { cfg.prompt_results_hash() } else { cfg.results_hash() },
        split: split.into(),
        accuracy: r.metrics.accuracy,
        macro_f1: r.metrics.macro_f1,
        consistency: r.consistency.as_ref().map(|c| c.agreement),
        examples: r.n,
        path: Some(path.display().to_string()),
    }
}

/// A checkpoint's model with its adapter attached, the config to score it with, and its linear
/// head, if any. A wick checkpoint brings its own config (`override_cfg` then replaces only the
/// data and output sections); an adapter written by Python PEFT takes everything (model,
/// prompt, labels) from `override_cfg`.
fn load_checkpoint(
    checkpoint: &Path,
    override_cfg: Option<&Path>,
    dtype: Option<&str>,
) -> anyhow::Result<(PathBuf, Config, LoadedModel, Option<Tensor>)> {
    let dir = resolve_checkpoint_dir(checkpoint)?;
    let mut cfg = crate::checkpoint::run_config(&dir, override_cfg)?;
    if let Some(dtype) = dtype {
        cfg.model.dtype = dtype.to_string();
    }
    let mut loaded = load_model(&cfg.model)?;
    let attached = load_adapter(&dir, &mut loaded.model)?;
    tracing::info!("{}: {}", dir.display(), attached.check);
    let head = attached.head;
    if let Some(h) = &head
        && h.dims() != [cfg.data.labels.len(), loaded.model.cfg.hidden_size]
    {
        anyhow::bail!(
            "{}: linear head has shape {:?}, expected [{}, {}] (labels × hidden size)",
            dir.display(),
            h.dims(),
            cfg.data.labels.len(),
            loaded.model.cfg.hidden_size,
        );
    }
    Ok((dir, cfg, loaded, head))
}

/// Every template's results for the tuned model: verbalizer (label words) or linear head.
pub fn score_tuned(
    baselines: &Baselines,
    loaded: &LoadedModel,
    head: Option<&Tensor>,
    texts: &[String],
    batch_size: usize,
    all: bool,
) -> Result<Vec<VariantRun>> {
    let Some(head) = head else {
        let mut memo = Memo::default();
        let run = if all {
            baselines.run_strategy(Strategy::ZeroShot, texts, &mut memo)?.variants
        } else {
            vec![baselines.predict(Strategy::ZeroShot, texts)?]
        };
        return Ok(run);
    };
    let prompters = if all { baselines.prompters() } else { &baselines.prompters()[..1] };
    let mut out = Vec::new();
    for (name, prompter) in prompters {
        let (prompts, _) = baselines.prompts(prompter, &|_| Vec::new(), texts)?;
        let opts = ScoreOptions { batch_size: batch_size.max(1), max_len: usize::MAX, prefix_cache: true };
        let scored = score_head(&loaded.model, Head::Linear(head), &prompts, opts)
            .map_err(|source| Error::Candle { context: "scoring with the linear head".into(), source })?;
        out.push(VariantRun::from_scored(name.clone(), &scored, None));
    }
    Ok(out)
}

/// `wick eval --checkpoint DIR`: score a checkpoint on a split or file and write its outputs
/// under `run_dir/eval/<checkpoint-step>/<split-or-file-stem>/`.
pub fn run_eval(args: &EvalArgs) -> anyhow::Result<Summarized<Report>> {
    check_flags(args.limit, args.batch_size)?;
    if let Some(name) = &args.strategy {
        if name == SEARCHED {
            return run_eval_searched(args);
        }
        return tuned::run_eval_strategy(args, name.parse()?);
    }
    let (dir, cfg, loaded, head) = load_checkpoint(&args.checkpoint, args.config.as_deref(), args.dtype.as_deref())?;
    let (set, _) = load_eval_set(&cfg, &args.split, &args.data_args, args.limit, false)?;
    let opts = BaselineOptions { batch_size: args.batch_size, ..BaselineOptions::default() };
    let baselines = Baselines::new(&loaded, &cfg, &[], opts)?;
    let texts: Vec<String> = set.examples.iter().map(|e| e.text.clone()).collect();
    let method = if head.is_some() { "linear" } else { "verbalizer" };
    let templates = if args.main_template_only { 1 } else { baselines.prompters().len() };
    tracing::info!("{} ({method}): {} examples of {} x {templates} templates", dir.display(), texts.len(), set.source);
    let start = Instant::now();
    let variants = score_tuned(&baselines, &loaded, head.as_ref(), &texts, args.batch_size, !args.main_template_only)?;
    let seconds = start.elapsed().as_secs_f64();
    let prefix_cache = if head.is_none() && !args.skip_cache_check { baselines.cache_check(Strategy::ZeroShot, &texts)? } else { None };
    let step = dir.file_name().map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
    let of = ReportOf { command: "eval", method, checkpoint: Some(dir.display().to_string()) };
    let report = Report { prefix_cache, ..scored_report(of, &set, args.limit, &cfg, &loaded, &variants, seconds)? };
    let out = cfg.run_dir().join("eval").join(&step).join(&set.name);
    write_outputs(&out, &report, &set.examples, &variants[0])?;
    let table = render_table(&[TableRow {
        name: format!("{step} ({method})"),
        metrics: &report.metrics,
        consistency: report.consistency.as_ref(),
    }]);
    let mut summary =
        format!("{} ({method}) on {} ({} examples)\n{table}\n{}\n", dir.display(), set.source, texts.len(), render_detail(&report.metrics));
    if let Some(c) = &report.prefix_cache {
        let _ = writeln!(summary, "{}", cache_line("verbalizer", c));
    }
    tracing::info!("wrote {}", out.display());
    let whole_test = args.split == "test" && args.data_args.data.is_none() && args.limit.is_none();
    if whole_test && crate::checkpoint::has_run_record(&dir) {
        update_card_test(&dir, &report.metrics)?;
    }
    crate::runs::append(&cfg.output.dir, run_record("eval", &dir.display().to_string(), &cfg, &set.name, &report, out))?;
    Ok(Summarized { value: report, summary })
}

/// Rewrite a wick checkpoint's model card with its test metrics (the whole test split, once).
fn update_card_test(dir: &Path, test: &crate::metrics::Metrics) -> anyhow::Result<()> {
    let run = read_run(dir)?;
    let state = crate::train::state::read_state(dir).ok();
    let dev = state.as_ref().and_then(|s| crate::train::state::dev_metrics(s, &run.config));
    let test = crate::model_card::SplitMetrics { accuracy: test.accuracy, macro_f1: test.macro_f1, examples: Some(test.n) };
    let facts = crate::model_card::CardFacts {
        config: &run.config,
        fingerprint: &run.base_fingerprint,
        step: state.as_ref().map_or(0, |s| s.step),
        dev,
        test: Some(test),
    };
    crate::model_card::write(dir, dir, &facts)?;
    Ok(())
}

/// The texts to predict: positional ones, then one per non-empty line of `--input`.
fn predict_texts(args: &PredictArgs) -> anyhow::Result<Vec<String>> {
    let mut texts: Vec<String> = args.texts.iter().filter(|t| !t.trim().is_empty()).cloned().collect();
    if let Some(path) = &args.input {
        let content = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        texts.extend(content.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
    }
    if texts.is_empty() {
        anyhow::bail!("nothing to predict: give texts as arguments or --input FILE (one text per line)");
    }
    Ok(texts)
}

/// `wick predict`: one line per text, its predicted label, that label's probability and the text.
pub fn run_predict(args: &PredictArgs) -> anyhow::Result<String> {
    let texts = predict_texts(args)?;
    let (labels, run) = match (&args.checkpoint, &args.strategy) {
        (Some(ckpt), None) => {
            let (_, cfg, loaded, head) = load_checkpoint(ckpt, args.config.as_deref(), None)?;
            let baselines =
                Baselines::new(&loaded, &cfg, &[], BaselineOptions { batch_size: args.batch_size, ..BaselineOptions::default() })?;
            let run = score_tuned(&baselines, &loaded, head.as_ref(), &texts, args.batch_size, false)?;
            (cfg.data.labels.clone(), run)
        }
        (None, Some(name)) if name == SEARCHED => {
            let path = args.config.as_ref().context("--strategy needs --config CONFIG")?;
            let (labels, run) = searched::predict_searched(path, &texts, args.batch_size)?;
            (labels, vec![run])
        }
        (None, Some(name)) => {
            let path = args.config.as_ref().context("--strategy needs --config CONFIG")?;
            let cfg = crate::data::load_config(path)?;
            let strategy: Strategy = name.parse()?;
            let calibrate_on: Strategy = args.calibrate_on.parse()?;
            let needs_train = matches!(strategy, Strategy::FewShot | Strategy::Retrieval)
                || (strategy == Strategy::Calibrated && calibrate_on == Strategy::FewShot);
            let train = if needs_train { crate::data::load_splits(&cfg.data, crate::data::ReadMode::Strict)?.0.train } else { Vec::new() };
            let loaded = load_model(&cfg.model)?;
            let opts = BaselineOptions {
                batch_size: args.batch_size,
                calibrate_on,
                all_variants: false,
                retrieval_pool: crate::baseline::retrieval_pool(args.retrieval_pool, &cfg),
            };
            let mut baselines = Baselines::new(&loaded, &cfg, &train, opts)?;
            baselines.check(&[strategy])?;
            if strategy == Strategy::Retrieval {
                baselines = prepare_retrieval(baselines, &loaded, &cfg, args.batch_size, &cfg.run_dir().join("baseline"))?.0;
            }
            let run = baselines.predict(strategy, &texts)?;
            (cfg.data.labels.clone(), vec![run])
        }
        _ => anyhow::bail!("give either --checkpoint DIR or --strategy NAME --config CONFIG"),
    };
    let main = run.first().context("no prompt was scored")?;
    let width = labels.iter().map(String::len).max().unwrap_or(0);
    let mut lines = String::new();
    for ((text, &pred), probs) in texts.iter().zip(&main.predicted).zip(&main.probs) {
        let label = labels.get(pred).map_or("?", String::as_str);
        let _ = writeln!(lines, "{label:<width$}  {:.3}  {text}", probs.get(pred).copied().unwrap_or(0.0));
    }
    Ok(lines)
}
