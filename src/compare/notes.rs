//! What the report says about its rows: each prompt row's figures, the choices and the split that
//! made each, and the notes on how the numbers were made.

#[allow(unused_imports)]
use super::*;

/// Labelled examples a prompt strategy shows the model: its demonstrations (few-shot), or the
/// pool it retrieves them from.
pub(super) fn demonstrations_used(strategy: &str, cfg: &Config, pool: usize) -> usize {
    match strategy {
        "few-shot" => cfg.prompt.k_shot,
        "retrieval" => pool,
        _ => 0,
    }
}

/// One prompt strategy's row: its labelled-example use follows from the strategy.
pub(super) fn prompt_row(r: &PromptResult, cfg: &Config, pool: usize) -> StrategyRow {
    let labelled = demonstrations_used(&r.test.method, cfg, pool);
    StrategyRow {
        labelled_examples_used: labelled,
        dev_accuracy: Some(r.dev.accuracy),
        ..report_row(r.test.method.clone(), RowKind::Prompt, &r.test)
    }
}

/// The one constructor of a report row, from a test report: its metrics, consistency and
/// predictions, and its output tokens (one: classification by label-word logits reads one answer
/// position; chain-of-thought generates its reasoning first). No labels, training, time or dev
/// score until the caller sets them; the intervals are filled in when the report is assembled.
pub(super) fn report_row(name: String, kind: RowKind, report: &Report) -> StrategyRow {
    StrategyRow {
        name,
        kind,
        metrics: report.metrics.clone(),
        consistency: report.consistency.clone(),
        labelled_examples_used: 0,
        time_to_first_result_s: 0.0,
        retrain_time_s: 0.0,
        output_tokens_per_request: report.output_tokens_mean.unwrap_or(1.0),
        training_tokens: 0,
        dev_accuracy: None,
        predicted: report.predicted.clone(),
        accuracy_ci: None,
        macro_f1_ci: None,
    }
}

/// The choices the report rests on and the split that made each.
pub(super) fn selections(report: &CompareReport, sets: &Sets, tuned: &Tuned, cfg: &Config) -> Vec<Selection> {
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
    if let Some(s) = &report.search {
        let c = &s.chosen;
        let raced = format!("dev ({dev_n} examples): raced among {} candidates", s.candidates.len());
        let words: Vec<String> = c.label_words.iter().map(|(l, w)| format!("{l} → {w:?}")).collect();
        out.push(Selection { what: "searched prompt".into(), chosen: c.name.clone(), by: raced.clone() });
        out.push(Selection { what: "instruction".into(), chosen: format!("{:?}", c.template), by: raced.clone() });
        out.push(Selection { what: "label words".into(), chosen: words.join(", "), by: raced.clone() });
        out.push(Selection {
            what: "calibration applied".into(),
            chosen: if c.calibrate { "yes" } else { "no" }.into(),
            by: raced.clone(),
        });
        out.push(Selection {
            what: "demonstrations".into(),
            chosen: match c.family.as_str() {
                "retrieval" => "retrieved per example".into(),
                _ if c.demos.is_empty() => "none".into(),
                _ => format!("{} fixed, in the order stored in {}", c.demos.len(), crate::search::prompt_path(cfg).display()),
            },
            by: raced,
        });
    } else {
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
    }
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
pub(super) fn notes(
    cfg: &Config,
    sets: &Sets,
    tuned: &Tuned,
    limit: Option<usize>,
    opts: &CompareOptions,
    stages: &[Stage],
) -> Vec<String> {
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

/// The plateau rule on the search's iteration curve: what its last stage gained on dev.
pub(super) fn search_plateau(search: &crate::search::SearchReport, points: f64) -> Option<crate::report::PlateauCheck> {
    let (stage, gained, minutes) = search.last_gain()?;
    let before = &search.curve[search.curve.len() - 2];
    Some(crate::report::PlateauCheck {
        last: format!("prompt search, its last stage ({stage}, {minutes:.1} min)"),
        previous: format!("the leader before it ({}, dev)", before.leader),
        improvement_points: gained,
        threshold: points,
        plateaued: gained < points,
    })
}

/// The report's notes on the prompt search.
pub(super) fn search_notes(search: &crate::search::SearchReport) -> Vec<String> {
    let (lo, mid, hi) = search.spread();
    let eliminated = search.candidates.iter().filter(|c| c.status.starts_with("eliminated")).count();
    let mut out = vec![format!(
        "Prompt search (dev only): {} candidates, {} candidate-examples scored, {:.1} min; raced on dev slices of {} examples, \
         dropping a candidate when the leader is ahead with a one-sided paired sign test p < {} (at most {} go on per round \
         where each costs a new pass: not among word sets and calibration, which reuse passes made); \
         {eliminated} eliminated on dev, never scored on test. Dev accuracy across candidates on the first {} examples: \
         min {:.1}%, median {:.1}%, max {:.1}%.",
        search.candidates.len(),
        count(search.evaluations as u64),
        search.minutes,
        search.slices.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" → "),
        search.rule.alpha,
        search.rule.keep,
        search.slices[0],
        lo * 100.0,
        mid * 100.0,
        hi * 100.0
    )];
    if let Some((stage, gained, minutes)) = search.last_gain() {
        out.push(format!("The search's last {minutes:.1} minutes ({stage}) gained {gained:+.1} points on dev."));
    }
    out.extend(search.skipped.iter().map(|s| format!("Prompt search stage {s}.")));
    out
}
