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
    prompt: &str,
    fresh: bool,
) -> anyhow::Result<Vec<(ShiftedRun, bool)>> {
    let c = &cfg.compare;
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
        let (run, now) = cached(&out_dir, &name, &key, fresh, || score_shifted(cfg, loaded, sets, tuned, prompt, set, limit))?;
        out.push((run, now));
    }
    Ok(out)
}

fn score_shifted(
    cfg: &Config,
    loaded: &mut LoadedModel,
    sets: &Sets,
    tuned: &Tuned,
    prompt: &str,
    set: &crate::config::ShiftedSet,
    limit: Option<usize>,
) -> anyhow::Result<ShiftedRun> {
    let c = &cfg.compare;
    let args = crate::eval::DataArgs {
        data: Some(set.path.clone()),
        text_column: set.text_column.clone(),
        label_column: set.label_column.clone(),
        label_map: set.label_map_arg(),
    };
    let (eval_set, _) = crate::eval::report::load_eval_set(cfg, "test", &args, limit, false)
        .with_context(|| format!("compare.shifted {:?}", set.name))?;
    let texts = texts(&eval_set);
    eprintln!("compare: flexibility on {} ({} examples): {prompt} and the tuned model", set.name, count(texts.len() as u64));
    let start = Instant::now();
    let prompt_run = if prompt == SEARCHED_ROW {
        let chosen = crate::search::SearchedPrompt::load(&crate::search::prompt_path(cfg))?;
        crate::search::score_searched(loaded, cfg, &sets.train, &chosen, &texts, c.batch_size)?
    } else {
        let strategy: Strategy = prompt.parse()?;
        let pool = crate::baseline::retrieval_pool(None, cfg);
        let bopts = BaselineOptions { batch_size: c.batch_size, calibrate_on: Strategy::ZeroShot, all_variants: false, retrieval_pool: pool };
        let mut baselines = Baselines::new(loaded, cfg, &sets.train, bopts)?;
        if strategy == Strategy::Retrieval {
            baselines = prepare_retrieval(baselines, loaded, cfg, c.batch_size, &cfg.run_dir().join("baseline"))?.0;
        }
        baselines.predict(strategy, &texts)?
    };
    let checkpoint = PathBuf::from(&tuned.checkpoint);
    let tuned_run = crate::checkpoint::with_adapter(&checkpoint, loaded, |loaded, attached| -> anyhow::Result<_> {
        let baselines = Baselines::new(loaded, cfg, &[], BaselineOptions { batch_size: c.batch_size, ..BaselineOptions::default() })?;
        Ok(score_tuned(&baselines, loaded, attached.head.as_ref(), &texts, c.batch_size, false)?.swap_remove(0))
    })?;
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
