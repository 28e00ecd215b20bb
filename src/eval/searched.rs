//! The searched prompt in the commands: `wick baseline --search` (search on dev, keep the prompt),
//! `wick baseline/predict --strategy searched` (the base model under the stored prompt) and
//! `wick eval --checkpoint DIR --strategy searched` (the tuned model under it).

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Context;

use super::report::{Summarized, load_eval_set, write_outputs};
use super::{BaselineArgs, EvalArgs, ReportOf, load_checkpoint, load_model, prepare_retrieval, run_record, scored_report};
use crate::baseline::{BaselineOptions, Baselines, Strategy};
use crate::config::Config;
use crate::data::Example;
use crate::eval::Report;
use crate::metrics::{TableRow, render_table};
use crate::model::LoadedModel;
use crate::search::{SearchOptions, SearchReport, SearchedPrompt, prompt_path, score_searched};

/// The name `--strategy` gives the stored searched prompt.
pub const SEARCHED: &str = "searched";

/// `wick baseline CONFIG --search` and/or `--strategy searched`: search the prompt on the dev
/// sample (`compare.dev_examples` of dev; with --search), then score the stored prompt on the
/// split or file and write its outputs under `run_dir/baseline/searched/<split-or-file-stem>/`.
pub fn run_searched_baseline(args: &BaselineArgs) -> anyhow::Result<Summarized<(Option<SearchReport>, Report)>> {
    let cfg = crate::data::load_config(&args.config)?;
    let (set, train) = load_eval_set(&cfg, &args.split, &args.data_args, args.limit, true)?;
    let loaded = load_model(&cfg.model)?;
    let search = if args.search {
        let strategies: Vec<Strategy> = cfg.compare.strategies.iter().map(|s| s.parse()).collect::<crate::error::Result<_>>()?;
        let (splits, _) = crate::data::load_splits(&cfg.data, crate::data::ReadMode::Strict)?;
        let mut dev = splits.dev;
        if cfg.compare.dev_examples > 0 {
            dev.truncate(cfg.compare.dev_examples);
        }
        let pool = crate::baseline::retrieval_pool(args.retrieval_pool, &cfg);
        let minutes = if cfg.compare.search_minutes > 0.0 { cfg.compare.search_minutes } else { SearchOptions::default().minutes };
        let opts =
            SearchOptions { minutes, batch_size: args.batch_size, progress: |m| tracing::info!("search: {m}"), ..SearchOptions::default() };
        tracing::info!("search: {} dev examples, stages start within {minutes} minutes", dev.len());
        let report = search_prompt(&loaded, &cfg, &train, &dev, &strategies, pool, opts)?;
        tracing::info!("search: wrote {}", prompt_path(&cfg).display());
        Some(report)
    } else {
        None
    };
    let prompt = SearchedPrompt::load(&prompt_path(&cfg))?;
    let texts: Vec<String> = set.examples.iter().map(|e| e.text.clone()).collect();
    let start = Instant::now();
    let run = score_searched(&loaded, &cfg, &train, &prompt, &texts, args.batch_size)?;
    let of = ReportOf { command: "baseline", method: SEARCHED, checkpoint: None };
    let report = scored_report(of, &set, args.limit, &cfg, &loaded, std::slice::from_ref(&run), start.elapsed().as_secs_f64())?;
    let dir = cfg.run_dir().join("baseline").join(SEARCHED).join(&set.name);
    write_outputs(&dir, &report, &set.examples, &run)?;
    let mut summary = String::new();
    if let Some(s) = &search {
        for p in &s.curve {
            let _ = writeln!(
                summary,
                "{:<28} {:>4} candidates {:>6.1} min  dev {:.1}%  {}",
                p.stage,
                p.candidates,
                p.minutes,
                p.best_dev_accuracy * 100.0,
                p.leader
            );
        }
    }
    let _ = writeln!(
        summary,
        "searched prompt {:?} (dev {:.1}% on {}) on {} ({} examples)",
        prompt.name,
        prompt.dev_accuracy * 100.0,
        prompt.dev_examples,
        set.source,
        texts.len()
    );
    let _ = writeln!(summary, "{}", render_table(&[TableRow { name: SEARCHED.into(), metrics: &report.metrics, consistency: None }]));
    crate::runs::append(&cfg.output.dir, run_record("baseline", SEARCHED, &cfg, &set.name, &report, dir))?;
    Ok(Summarized { value: (search, report), summary })
}

/// Search the prompt on `dev` among the hand-written families of `strategies` (all but
/// zero-shot, which is always the first candidate) and store the choice as the run's
/// `search/prompt.toml`. `opts.families` is set from `strategies`.
pub fn search_prompt(
    loaded: &LoadedModel,
    cfg: &Config,
    train: &[Example],
    dev: &[Example],
    strategies: &[Strategy],
    retrieval_pool: Option<usize>,
    opts: SearchOptions,
) -> anyhow::Result<SearchReport> {
    let families: Vec<Strategy> = strategies.iter().copied().filter(|&s| s != Strategy::ZeroShot).collect();
    let bopts = BaselineOptions { batch_size: opts.batch_size, calibrate_on: Strategy::ZeroShot, all_variants: false, retrieval_pool };
    let mut baselines = Baselines::new(loaded, cfg, train, bopts)?;
    baselines.check(&families)?;
    if families.contains(&Strategy::Retrieval) {
        baselines = prepare_retrieval(baselines, loaded, cfg, opts.batch_size, &cfg.run_dir().join("baseline"))?.0;
    }
    let report = crate::search::search(loaded, cfg, &baselines, train, dev, &SearchOptions { families, ..opts })?;
    report.chosen.save(&prompt_path(cfg))?;
    Ok(report)
}

/// `wick eval --checkpoint DIR --strategy searched`: the tuned model (verbalizer head) under the
/// stored searched prompt of its config's run.
pub fn run_eval_searched(args: &EvalArgs) -> anyhow::Result<Summarized<Report>> {
    let (dir, cfg, loaded, head) = load_checkpoint(&args.checkpoint, args.config.as_deref(), args.dtype.as_deref())?;
    if head.is_some() {
        anyhow::bail!(
            "{}: a linear-head checkpoint has no label words to prompt for; --strategy searched needs a verbalizer checkpoint",
            dir.display()
        );
    }
    let prompt = SearchedPrompt::load(&prompt_path(&cfg))?;
    let (set, train) = load_eval_set(&cfg, &args.split, &args.data_args, args.limit, prompt.family == "retrieval")?;
    let texts: Vec<String> = set.examples.iter().map(|e| e.text.clone()).collect();
    let start = Instant::now();
    let run = score_searched(&loaded, &cfg, &train, &prompt, &texts, args.batch_size)?;
    let method = "verbalizer + searched prompt";
    let of = ReportOf { command: "eval", method, checkpoint: Some(dir.display().to_string()) };
    let report = scored_report(of, &set, args.limit, &cfg, &loaded, std::slice::from_ref(&run), start.elapsed().as_secs_f64())?;
    let step = dir.file_name().map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
    let out = cfg.run_dir().join("eval").join(&step).join(SEARCHED).join(&set.name);
    write_outputs(&out, &report, &set.examples, &run)?;
    let table = render_table(&[TableRow { name: method.into(), metrics: &report.metrics, consistency: None }]);
    let summary = format!("{} under the searched prompt on {} ({} examples)\n{table}\n", dir.display(), set.source, texts.len());
    let name = format!("{} + searched", dir.display());
    crate::runs::append(&cfg.output.dir, run_record("eval", &name, &cfg, &set.name, &report, out))?;
    Ok(Summarized { value: report, summary })
}

/// `wick predict --strategy searched --config CONFIG`: the stored prompt's label probabilities.
pub fn predict_searched(
    cfg_path: &std::path::Path,
    texts: &[String],
    batch_size: usize,
) -> anyhow::Result<(Vec<String>, crate::baseline::VariantRun)> {
    let cfg = crate::data::load_config(cfg_path)?;
    let prompt = SearchedPrompt::load(&prompt_path(&cfg))?;
    let train =
        if prompt.family == "retrieval" { crate::data::load_splits(&cfg.data, crate::data::ReadMode::Strict)?.0.train } else { Vec::new() };
    let loaded = load_model(&cfg.model)?;
    let run = score_searched(&loaded, &cfg, &train, &prompt, texts, batch_size).context("scoring the searched prompt")?;
    Ok((cfg.data.labels.clone(), run))
}
