//! The tuned model under prompt strategies (`wick eval --checkpoint DIR --strategy S`, and
//! compare's "tuned + S" rows), prompted with the demonstrations the base model's run of that
//! strategy uses — few-shot's seeded draw, and for retrieval the neighbours the base model finds
//! (searched with the adapter detached, so a decoder retriever's embeddings are the base model's).

use std::path::Path;

use anyhow::Context;

use super::report::{RetrievalInfo, Summarized, load_eval_set, write_outputs};
use super::{EvalArgs, Report, load_model, prepare_retrieval, run_record, strategy_report};
use crate::baseline::{BaselineOptions, Baselines, Memo, Strategy, StrategyRun, check_k_shot};
use crate::checkpoint::{resolve_checkpoint_dir, run_config, with_adapter};
use crate::config::Config;
use crate::data::Example;
use crate::metrics::{TableRow, render_table};
use crate::model::LoadedModel;

/// The checkpoint `dir` under each of `strategies` on `texts` (every template, or the main one,
/// as `opts.all_variants` says), and the retrieval index's details when retrieval ran. A
/// linear-head checkpoint is refused before any scoring. The model is the base model again
/// afterwards, whatever happened.
pub fn tuned_strategy_runs(
    loaded: &mut LoadedModel,
    cfg: &Config,
    dir: &Path,
    train: &[Example],
    texts: &[String],
    strategies: &[Strategy],
    opts: BaselineOptions,
) -> anyhow::Result<(Vec<StrategyRun>, Option<RetrievalInfo>)> {
    // A linear head has no label words to prompt for: refused before any scoring.
    with_adapter(dir, loaded, |_, attached| {
        tracing::info!("{}: {}", dir.display(), attached.check);
        match attached.head {
            Some(_) => anyhow::bail!("{}: prompt strategies score label words, and this checkpoint has a linear head", dir.display()),
            None => Ok(()),
        }
    })?;
    // Retrieval shows the tuned model the neighbours the base model finds.
    let (mut memo, mut retrieval) = (Memo::default(), None);
    if strategies.contains(&Strategy::Retrieval) {
        let base = Baselines::new(loaded, cfg, train, opts)?;
        let (base, mut info) = prepare_retrieval(base, loaded, cfg, opts.batch_size, &cfg.run_dir().join("baseline"))?;
        info.train_size = train.len();
        tracing::info!("{}: the base model's neighbours of {} examples ({} retriever)", dir.display(), texts.len(), info.retriever);
        memo = Memo::with_neighbours(base.neighbours(texts)?);
        retrieval = Some(info);
    }
    let runs = with_adapter(dir, loaded, |loaded, _| -> anyhow::Result<Vec<StrategyRun>> {
        let baselines = Baselines::new(loaded, cfg, train, opts)?;
        let templates = if opts.all_variants { baselines.prompters().len() } else { 1 };
        let mut runs = Vec::with_capacity(strategies.len());
        for &s in strategies {
            tracing::info!("{} + {s}: {} examples x {templates} templates", dir.display(), texts.len());
            runs.push(baselines.run_strategy(s, texts, &mut memo)?);
        }
        Ok(runs)
    })?;
    Ok((runs, retrieval))
}

/// Score the checkpoint of `args` under `strategy` and write its outputs under
/// `run_dir/eval/<step>/<strategy>/<split>/`.
pub fn run_eval_strategy(args: &EvalArgs, strategy: Strategy) -> anyhow::Result<Summarized<Report>> {
    if strategy == Strategy::ZeroShot {
        anyhow::bail!("--strategy zero-shot is what `wick eval` does without --strategy");
    }
    let dir = resolve_checkpoint_dir(&args.checkpoint)?;
    let cfg = run_config(&dir, args.config.as_deref())?;
    let (set, train) = load_eval_set(&cfg, &args.split, &args.data_args, args.limit, true)?;
    check_k_shot(cfg.prompt.k_shot, train.len())?;
    let mut loaded = load_model(&cfg.model)?;
    let opts = BaselineOptions {
        batch_size: args.batch_size,
        calibrate_on: Strategy::ZeroShot,
        all_variants: !args.main_template_only,
        retrieval_pool: crate::baseline::retrieval_pool(args.retrieval_pool, &cfg),
    };
    let texts: Vec<String> = set.examples.iter().map(|e| e.text.clone()).collect();
    let (mut runs, retrieval) = tuned_strategy_runs(&mut loaded, &cfg, &dir, &train, &texts, &[strategy], opts)?;
    let run = runs.pop().context("no strategy was scored")?;
    let mut report = strategy_report(&run, &set, args.limit, &cfg, &loaded, Strategy::ZeroShot, retrieval.as_ref(), None)?;
    report.method = format!("tuned + {strategy}");
    report.checkpoint = Some(dir.display().to_string());
    let step = dir.file_name().map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
    let out = cfg.run_dir().join("eval").join(&step).join(strategy.name()).join(&set.name);
    write_outputs(&out, &report, &set.examples, &run.variants[0]).context("writing outputs")?;
    let name = format!("{step} + {strategy}");
    let table = render_table(&[TableRow { name, metrics: &report.metrics, consistency: report.consistency.as_ref() }]);
    let summary = format!("{} + {strategy} on {} ({} examples)\n{table}\n", dir.display(), set.source, texts.len());
    tracing::info!("wrote {}", out.display());
    let record = run_record("eval", &format!("{} + {strategy}", dir.display()), &cfg, &set.name, &report, out);
    crate::runs::append(&cfg.output.dir, record)?;
    Ok(Summarized { value: report, summary })
}
