//! Flexibility, measured: the prompt chosen on dev and the tuned model, both scored on the same
//! seeded sample of each shifted data set (`compare.shifted`), paired.

#[allow(unused_imports)]
use super::*;

/// Both systems' predictions on one shifted set.
#[derive(serde::Deserialize, Serialize)]
pub(super) struct ShiftedRun {
    pub(super) name: String,
    pub(super) source: String,
    /// The prompt row that was scored.
    pub(super) prompt: String,
    pub(super) gold: Vec<usize>,
    pub(super) prompt_predicted: Vec<usize>,
    pub(super) tuned_predicted: Vec<usize>,
    /// Wall seconds of both passes.
    pub(super) seconds: f64,
}

/// Score the chosen prompt (`prompt`, a report row's name) and the tuned checkpoint on a seeded
/// sample of each shifted set, reusing stored results whose key matches.
pub(super) fn measure_shifted(
    cfg: &Config,
    loaded: &mut LoadedModel,
    sets: &Sets,
    tuned: &Tuned,
    chosen: &ChosenPrompt,
    fresh: bool,
) -> anyhow::Result<Vec<(ShiftedRun, bool)>> {
    let c = &cfg.compare;
    let prompt = chosen.key();
    let out_dir = cfg.run_dir().join("compare");
    let limit = Some(c.shifted_examples).filter(|&n| n > 0);
    let mut out = Vec::new();
    for set in &c.shifted {
        let key = format!(
            "{}|{}|{prompt}|{}|{limit:?}|{}",
            cfg.prompt_results_hash(),
            tuned.checkpoint,
            set.path.display(),
            serde_json::to_string(set)?
        );
        let name = format!("shifted-{}", set.name);
        let (run, now) = cached(&out_dir, &name, &key, fresh, || score_shifted(cfg, loaded, sets, tuned, chosen, set, limit))?;
        out.push((run, now));
    }
    Ok(out)
}

fn score_shifted(
    cfg: &Config,
    loaded: &mut LoadedModel,
    sets: &Sets,
    tuned: &Tuned,
    chosen: &ChosenPrompt,
    set: &crate::config::ShiftedSet,
    limit: Option<usize>,
) -> anyhow::Result<ShiftedRun> {
    let prompt = chosen.row.as_str();
    let args = crate::eval::DataArgs {
        data: Some(set.path.clone()),
        text_column: set.text_column.clone(),
        label_column: set.label_column.clone(),
        label_map: set.label_map_arg(),
    };
    let (eval_set, _) =
        crate::eval::report::load_eval_set(cfg, "test", &args, limit, false).with_context(|| format!("compare.shifted {:?}", set.name))?;
    let texts = texts(&eval_set);
    tracing::info!("compare: flexibility on {} ({} examples): {prompt} and the tuned model", set.name, count(texts.len() as u64));
    let start = Instant::now();
    let prompt_run = prompt_run(cfg, loaded, sets, chosen, &texts)?;
    let tuned_run = tuned_run(cfg, loaded, tuned, &texts)?;
    Ok(ShiftedRun {
        name: set.name.clone(),
        source: eval_set.source.clone(),
        prompt: prompt.to_string(),
        gold: gold(&eval_set),
        prompt_predicted: prompt_run.predicted,
        tuned_predicted: tuned_run.predicted,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The report's flexibility results: both accuracies with Wilson intervals and the paired
/// difference tuned − prompt.
pub(super) fn flexibility(runs: &[ShiftedRun], tuned_name: &str, resamples: usize) -> Vec<crate::report::ShiftedResult> {
    runs.iter()
        .enumerate()
        .map(|(i, r)| {
            let n = r.gold.len();
            let right = |p: &[usize]| p.iter().zip(&r.gold).filter(|(a, b)| a == b).count();
            let (pr, tr) = (right(&r.prompt_predicted), right(&r.tuned_predicted));
            crate::report::ShiftedResult {
                name: r.name.clone(),
                source: r.source.clone(),
                n,
                prompt: r.prompt.clone(),
                prompt_accuracy: pr as f64 / n.max(1) as f64,
                prompt_ci: crate::stats::wilson(pr, n, crate::stats::Z95),
                tuned_accuracy: tr as f64 / n.max(1) as f64,
                tuned_ci: crate::stats::wilson(tr, n, crate::stats::Z95),
                comparison: crate::stats::PairedComparison::new(
                    tuned_name,
                    &r.prompt,
                    &r.gold,
                    &r.tuned_predicted,
                    &r.prompt_predicted,
                    resamples,
                    0xf1e5 ^ i as u64,
                ),
            }
        })
        .collect()
}

/// The prompt chosen on dev, as the flexibility and selective stages score it: its report row,
/// and for the searched row the search's stored choice (the one its test row measured, not the
/// editable `search/prompt.toml`).
pub(super) struct ChosenPrompt<'a> {
    /// The report row's name.
    pub(super) row: String,
    /// The search's choice, when the row is the searched prompt.
    pub(super) searched: Option<&'a crate::search::SearchedPrompt>,
}

impl ChosenPrompt<'_> {
    /// What the stored results of these stages are keyed on: the row, and the searched prompt
    /// itself (a new search's choice is measured again).
    fn key(&self) -> String {
        match self.searched {
            Some(p) => format!("{} {}", self.row, serde_json::to_string(p).unwrap_or_default()),
            None => self.row.clone(),
        }
    }
}

/// The chosen prompt on `texts`, main template: the searched prompt as the search stored it, or
/// a strategy under the config.
pub(super) fn prompt_run(
    cfg: &Config,
    loaded: &LoadedModel,
    sets: &Sets,
    chosen: &ChosenPrompt,
    texts: &[String],
) -> anyhow::Result<VariantRun> {
    let c = &cfg.compare;
    if let Some(searched) = chosen.searched {
        return Ok(crate::search::score_searched(loaded, cfg, &sets.train, searched, texts, c.batch_size)?);
    }
    let strategy: Strategy = chosen.row.parse()?;
    let pool = crate::baseline::retrieval_pool(None, cfg);
    let bopts = BaselineOptions { batch_size: c.batch_size, calibrate_on: Strategy::ZeroShot, all_variants: false, retrieval_pool: pool };
    let mut baselines = Baselines::new(loaded, cfg, &sets.train, bopts)?;
    if strategy == Strategy::Retrieval {
        baselines = prepare_retrieval(baselines, loaded, cfg, c.batch_size, &cfg.run_dir().join("baseline"))?.0;
    }
    Ok(baselines.predict(strategy, texts)?)
}

/// The tuned checkpoint on `texts`, main template; the model is the base model again afterwards.
pub(super) fn tuned_run(cfg: &Config, loaded: &mut LoadedModel, tuned: &Tuned, texts: &[String]) -> anyhow::Result<VariantRun> {
    let batch = cfg.compare.batch_size;
    let checkpoint = PathBuf::from(&tuned.checkpoint);
    crate::checkpoint::with_adapter(&checkpoint, loaded, |loaded, attached| -> anyhow::Result<_> {
        let baselines = Baselines::new(loaded, cfg, &[], BaselineOptions { batch_size: batch, ..BaselineOptions::default() })?;
        Ok(score_tuned(&baselines, loaded, attached.head.as_ref(), texts, batch, false)?.swap_remove(0))
    })
}

/// Top-label probabilities and correctness of one system on the dev sample and the test examples.
#[derive(serde::Deserialize, Serialize)]
pub(super) struct Confidence {
    pub(super) row: String,
    pub(super) dev: (Vec<f32>, Vec<bool>),
    pub(super) test: (Vec<f32>, Vec<bool>),
    pub(super) seconds: f64,
}

fn confidence(run: &VariantRun, gold: &[usize]) -> (Vec<f32>, Vec<bool>) {
    let conf = run.probs.iter().map(|p| p.iter().copied().fold(0f32, f32::max)).collect();
    (conf, run.predicted.iter().zip(gold).map(|(p, g)| p == g).collect())
}

/// Selective prediction's inputs: the prompt chosen on dev and the tuned model, each scored on
/// the dev sample (where the threshold is chosen) and the test examples (where it is reported).
pub(super) fn measure_confidence(
    cfg: &Config,
    loaded: &mut LoadedModel,
    sets: &Sets,
    tuned: &Tuned,
    chosen: &ChosenPrompt,
    limit: Option<usize>,
    fresh: bool,
) -> anyhow::Result<Vec<(Confidence, bool)>> {
    let out_dir = cfg.run_dir().join("compare");
    let (prompt, prompt_key) = (chosen.row.as_str(), chosen.key());
    let key = format!(
        "{}|{}|{prompt_key}|{limit:?}|dev {}|{}",
        cfg.prompt_results_hash(),
        tuned.checkpoint,
        sets.dev.examples.len(),
        sets.test.examples.len()
    );
    let (dev_texts, test_texts) = (texts(&sets.dev), texts(&sets.test));
    let (dev_gold, test_gold) = (gold(&sets.dev), gold(&sets.test));
    let mut out = Vec::new();
    for (name, row) in [("confidence-prompt", prompt.to_string()), ("confidence-tuned", "fine-tuned (LoRA)".to_string())] {
        let measured = cached(&out_dir, name, &key, fresh, || -> anyhow::Result<Confidence> {
            tracing::info!("compare: {row} on the dev and test examples (label probabilities for selective prediction)");
            let start = Instant::now();
            let (dev, test) = if row == prompt {
                (prompt_run(cfg, loaded, sets, chosen, &dev_texts)?, prompt_run(cfg, loaded, sets, chosen, &test_texts)?)
            } else {
                (tuned_run(cfg, loaded, tuned, &dev_texts)?, tuned_run(cfg, loaded, tuned, &test_texts)?)
            };
            Ok(Confidence {
                dev: confidence(&dev, &dev_gold),
                test: confidence(&test, &test_gold),
                row: row.clone(),
                seconds: start.elapsed().as_secs_f64(),
            })
        })?;
        out.push(measured);
    }
    Ok(out)
}
