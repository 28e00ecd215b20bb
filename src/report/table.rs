//! The terminal rendering of a [`CompareReport`]: the seed's comparison table with measured values,
//! then the learning curve, the plateau check and the decision steps.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};

use super::format::{count, duration, money, percent, volume};
use super::{CompareReport, CostSummary, RowKind, StrategyRow};

/// One labelled row of the comparison table: a label and one value per strategy.
pub(crate) struct TableLine {
    /// What the line measures.
    pub label: String,
    /// One formatted value per strategy, in row order.
    pub values: Vec<String>,
}

/// The comparison lines shared by the terminal and HTML tables, so both show identical values.
pub(crate) fn comparison_lines(report: &CompareReport) -> Vec<TableLine> {
    let rows = &report.rows;
    let line = |label: &str, f: &dyn Fn(&StrategyRow) -> String| TableLine { label: label.into(), values: rows.iter().map(f).collect() };
    let sample = match report.header.consistency_examples {
        0 => String::new(),
        n => format!(", n = {}", count(n as u64)),
    };
    let mut lines = vec![
        line("Time to first usable result", &|r| duration(r.time_to_first_result_s)),
        line("Labelled examples used", &|r| count(r.labelled_examples_used as u64)),
        line("Accuracy [95% CI]", &|r| super::decide::accuracy_text(r)),
        line("Macro-F1 [95% CI]", &|r| match r.macro_f1_ci {
            Some(ci) => format!("{:.3} [{:.3}, {:.3}]", r.metrics.macro_f1, ci.lo, ci.hi),
            None => format!("{:.3}", r.metrics.macro_f1),
        }),
        line("Dev accuracy (the choices were made on it)", &|r| r.dev_accuracy.map_or_else(|| "-".into(), percent)),
        line(&format!("Consistency (agreement across templates{sample})"), &|r| {
            r.consistency.as_ref().map_or_else(|| "-".into(), |c| percent(c.agreement))
        }),
        line(&format!("Accuracy range across templates{sample}"), &|r| {
            r.consistency.as_ref().map_or_else(|| "-".into(), |c| format!("{}–{}", percent(c.accuracy_min), percent(c.accuracy_max)))
        }),
        line("Accuracy on shifted data (compare.shifted)", &|r| flexibility_text(report, r)),
        line("Latency (ms/example)", &|r| format!("{:.1}", r.metrics.latency.mean_ms)),
        line("Prompt tokens/request", &|r| format!("{:.0}", r.metrics.prompt_tokens_mean)),
        line("Retrain time when requirements change", &|r| match r.kind {
            RowKind::Prompt => "edit the prompt".into(),
            RowKind::FineTuned | RowKind::TunedPrompt => duration(r.retrain_time_s),
        }),
    ];
    cost_lines(&mut lines, report, &report.cost.api, "");
    if let Some(hosted) = &report.cost.self_hosted {
        cost_lines(&mut lines, report, hosted, " (self-hosted)");
    }
    lines
}

/// A row's accuracy on each shifted set ("imdb 81.0%, yelp 86.3%"): the chosen prompt's and
/// the tuned model's, "-" for the rows not scored there.
fn flexibility_text(report: &CompareReport, r: &StrategyRow) -> String {
    let parts: Vec<String> = report
        .flexibility
        .iter()
        .filter_map(|f| match r.kind {
            RowKind::FineTuned => Some(format!("{} {}", f.name, percent(f.tuned_accuracy))),
            RowKind::Prompt if r.name == f.prompt => Some(format!("{} {}", f.name, percent(f.prompt_accuracy))),
            _ => None,
        })
        .collect();
    if parts.is_empty() { "-".into() } else { parts.join(", ") }
}

fn cost_lines(lines: &mut Vec<TableLine>, report: &CompareReport, costs: &CostSummary, suffix: &str) {
    let per = |f: &dyn Fn(&super::StrategyCost) -> String| costs.strategies.iter().map(f).collect::<Vec<_>>();
    lines.push(TableLine { label: format!("Cost per 1,000 requests{suffix}"), values: per(&|c| money(c.per_1k_requests)) });
    lines.push(TableLine {
        label: format!("Monthly cost at {} requests{suffix}", count(report.cost.monthly_requests)),
        values: per(&|c| money(c.monthly)),
    });
    lines.push(TableLine {
        label: format!("One-off training cost{suffix}"),
        values: per(&|c| if c.training > 0.0 { money(c.training) } else { "-".into() }),
    });
    let tuned = costs.tuned.as_deref();
    let break_even = costs.break_even_requests.map_or_else(|| "never".to_string(), |b| format!("{} requests", volume(b)));
    lines.push(TableLine {
        label: format!("Break-even volume vs best prompt{suffix}"),
        values: costs.strategies.iter().map(|c| if Some(c.name.as_str()) == tuned { break_even.clone() } else { "-".into() }).collect(),
    });
}

/// "A better", "B better" or "indistinguishable", from the paired interval.
pub(crate) fn verdict(c: &crate::stats::PairedComparison) -> String {
    if c.a_better() {
        format!("{} better", c.a)
    } else if c.a_worse() {
        format!("{} better", c.b)
    } else {
        "indistinguishable".into()
    }
}

fn right(text: impl ToString) -> Cell {
    Cell::new(text.to_string()).set_alignment(CellAlignment::Right)
}

/// The whole terminal report.
pub fn render(report: &CompareReport) -> String {
    let mut out = format!(
        "{} on {} ({} split, {} examples; {} labelled train examples available)\n",
        report.header.model,
        report.header.data,
        report.header.split,
        count(report.header.test_examples as u64),
        count(report.header.train_labels_available as u64)
    );
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    let mut header = vec![Cell::new("")];
    header.extend(report.rows.iter().map(|r| Cell::new(&r.name)));
    table.set_header(header);
    for line in comparison_lines(report) {
        let mut cells = vec![Cell::new(line.label)];
        cells.extend(line.values.into_iter().map(right));
        table.add_row(cells);
    }
    out.push_str(&table.to_string());
    out.push('\n');

    if !report.comparisons.is_empty() {
        let mut paired = Table::new();
        paired.load_preset(UTF8_FULL_CONDENSED);
        paired.set_header(["A − B (same test examples)", "difference [95% CI]", "only A right", "only B right", "McNemar p", "verdict"]);
        for c in &report.comparisons {
            paired.add_row(vec![
                Cell::new(format!("{} − {}", c.a, c.b)),
                right(format!("{:+.1} [{:+.1}, {:+.1}] points", c.difference * 100.0, c.interval.lo * 100.0, c.interval.hi * 100.0)),
                right(c.only_a_correct),
                right(c.only_b_correct),
                right(super::decide::p_value_text(c.p_value)),
                Cell::new(verdict(c)),
            ]);
        }
        out.push_str("\nPaired tests (95% paired-bootstrap interval of the accuracy difference; exact McNemar test)\n");
        out.push_str(&paired.to_string());
        out.push('\n');
    }
    if !report.selections.is_empty() {
        out.push_str("\nChoices (made before the test split was scored)\n");
        for s in &report.selections {
            out.push_str(&format!("  {}: {} — chosen by {}\n", s.what, s.chosen, s.by));
        }
    }
    for note in &report.notes {
        out.push_str(&format!("Note: {note}\n"));
    }

    if !report.learning_curve.is_empty() {
        let mut curve = Table::new();
        curve.load_preset(UTF8_FULL_CONDENSED);
        curve.set_header(["labels", "seeds", "accuracy (mean)", "min–max over seeds", "macro-F1", "train time"]);
        for p in &report.learning_curve {
            let (lo, hi) = p.accuracy_range();
            curve.add_row(vec![
                right(count(p.labels as u64)),
                right(p.seed_accuracies.len().max(1)),
                right(percent(p.accuracy)),
                right(if p.seed_accuracies.len() > 1 { format!("{}–{}", percent(lo), percent(hi)) } else { "-".into() }),
                right(format!("{:.3}", p.macro_f1)),
                right(duration(p.train_time_s)),
            ]);
        }
        let on = match super::curve_test_sample(&report.learning_curve, report.header.test_examples) {
            Some(n) => format!("; test accuracy on the first {} test examples, the full run's too", count(n as u64)),
            None => String::new(),
        };
        out.push_str(&format!("\nLearning curve (fine-tuned on subsets of the labels; labels = distinct examples trained on{on})\n"));
        out.push_str(&curve.to_string());
        out.push('\n');
    }
    for note in &report.learning_curve_notes {
        out.push_str(&format!("Learning curve: {note}\n"));
    }
    if let Some(f) = &report.forecast {
        out.push_str(&forecast_section(f));
    }

    if !report.flexibility.is_empty() {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header(["shifted set", "n", "prompt [95% CI]", "tuned [95% CI]", "tuned − prompt [95% CI]", "McNemar p", "verdict"]);
        for f in &report.flexibility {
            let ci = |a: f64, c: crate::stats::Interval| format!("{} [{:.1}, {:.1}]", percent(a), c.lo * 100.0, c.hi * 100.0);
            let c = &f.comparison;
            t.add_row(vec![
                Cell::new(&f.name),
                right(f.n),
                right(ci(f.prompt_accuracy, f.prompt_ci)),
                right(ci(f.tuned_accuracy, f.tuned_ci)),
                right(format!("{:+.1} [{:+.1}, {:+.1}]", c.difference * 100.0, c.interval.lo * 100.0, c.interval.hi * 100.0)),
                right(super::decide::p_value_text(c.p_value)),
                Cell::new(verdict(c)),
            ]);
        }
        let prompt = report.flexibility[0].prompt.as_str();
        out.push_str(&format!(
            "\nFlexibility: {prompt} (chosen on dev) and the tuned model on the same seeded sample of each shifted set\n{t}\n"
        ));
    }

    if !report.selective.is_empty() {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header(["system", "threshold (dev)", "dev answered", "test answered [95% CI]", "accuracy answered [95% CI]"]);
        for r in &report.selective {
            t.add_row(vec![
                Cell::new(&r.row),
                right(r.threshold.map_or_else(|| "none reaches it".into(), |x| format!("{x:.3}"))),
                right(percent(r.dev_coverage)),
                right(format!("{} [{:.1}, {:.1}]", percent(r.coverage), r.coverage_ci.lo * 100.0, r.coverage_ci.hi * 100.0)),
                right(match (r.accuracy, r.accuracy_ci) {
                    (Some(a), Some(ci)) => format!("{} [{:.1}, {:.1}]", percent(a), ci.lo * 100.0, ci.hi * 100.0),
                    _ => "-".into(),
                }),
            ]);
        }
        out.push_str(&format!(
            "\nAnswering only when sure (answer when the top label probability reaches the threshold chosen on {} dev examples for ≥ {} accuracy; pass the rest to a person)\n{t}\n",
            count(report.selective[0].dev_n as u64),
            percent(report.selective[0].required)
        ));
    }

    if let Some(s) = &report.search {
        out.push_str(&search_section(s));
    }

    if let Some(p) = &report.plateau {
        out.push_str(&format!(
            "\nPrompt plateau: {} vs {}: {:+.1} points ({} the {:.1}-point threshold{})\n",
            p.last,
            p.previous,
            p.improvement_points,
            if p.plateaued { "below" } else { "at or above" },
            p.threshold,
            if p.plateaued { ": prompt engineering has stalled" } else { "" }
        ));
    }

    out.push_str("\nDecision\n");
    for (i, step) in report.recommendation.steps.iter().enumerate() {
        let marker = if step.decided { "=>" } else { "  " };
        out.push_str(&format!("{marker} {}. {} {}\n      {}\n", i + 1, step.question, step.answer, step.measured));
    }
    out.push_str(&format!("\nRecommendation: {}\n", report.recommendation.headline));
    out
}

/// The prompt search: its iteration curve as a short table, then the candidates it eliminated.
fn search_section(s: &crate::search::SearchReport) -> String {
    let mut curve = Table::new();
    curve.load_preset(UTF8_FULL_CONDENSED);
    curve.set_header(["stage", "candidates tried", "minutes", "best dev accuracy", "leader"]);
    for p in &s.curve {
        curve.add_row(vec![
            Cell::new(&p.stage),
            right(p.candidates),
            right(format!("{:.1}", p.minutes)),
            right(percent(p.best_dev_accuracy)),
            Cell::new(&p.leader),
        ]);
    }
    let mut out = format!(
        "\nPrompt iteration curve (the search on {} dev examples: the leader after each stage)\n{curve}\n",
        count(s.dev_examples as u64)
    );
    let (lo, mid, hi) = s.spread();
    out.push_str(&format!(
        "Searched prompt: {} (dev {} on {}); {} candidates, {} candidate-examples, {:.1} min; spread of dev accuracy on the first {} examples: {} / {} / {} (min / median / max)\n",
        s.chosen.name,
        percent(s.chosen.dev_accuracy),
        count(s.chosen.dev_examples as u64),
        s.candidates.len(),
        count(s.evaluations as u64),
        s.minutes,
        s.slices[0],
        percent(lo),
        percent(mid),
        percent(hi)
    ));
    let mut gone: Vec<&crate::search::CandidateResult> = s.candidates.iter().filter(|c| c.status.starts_with("eliminated")).collect();
    gone.sort_by(|a, b| b.dev_accuracy.total_cmp(&a.dev_accuracy));
    let shown = 12;
    if !gone.is_empty() {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header(["eliminated on dev (best first)", "stage", "dev accuracy [95% CI]", "n"]);
        for c in gone.iter().take(shown) {
            t.add_row(vec![
                Cell::new(&c.name),
                Cell::new(&c.stage),
                right(format!("{} [{}, {}]", percent(c.dev_accuracy), percent(c.dev_ci.lo), percent(c.dev_ci.hi))),
                right(c.dev_n),
            ]);
        }
        out.push_str(&t.to_string());
        out.push('\n');
        if gone.len() > shown {
            out.push_str(&format!("  … and {} more eliminated candidates in report.json\n", gone.len() - shown));
        }
    }
    out
}

/// The labels-needed forecast: the fit's accuracy and bands at today's labels and 2×, 5×, 10×,
/// the crossover with the best prompt, and the held-out check.
fn forecast_section(f: &super::labels::LabelsForecast) -> String {
    let fit = &f.forecast.fit;
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["labels", "forecast accuracy", "80% band", "95% band"]);
    let band = |b: crate::stats::Interval| format!("{:.1}–{:.1}%", b.lo * 100.0, b.hi * 100.0);
    for (what, p) in std::iter::once(("today", &f.at_available)).chain(f.forecast.points.iter().map(|p| ("", p))) {
        let label = if what.is_empty() {
            format!("{}×: {}", p.labels / f.available.max(1), count(p.labels as u64))
        } else {
            format!("{what}: {}", count(p.labels as u64))
        };
        t.add_row(vec![Cell::new(label), right(percent(p.accuracy)), right(band(p.band80)), right(band(p.band95))]);
    }
    let mut out = format!(
        "\nLabels-needed forecast (acc(n) = {:.3} − {:.3}·n^−{:.2} fitted to the curve's points; bands: {} bootstrap resamples over seeds and {} test examples; no forecast beyond {} labels, 10× the largest count measured or today's, if larger by a rounding)\n{t}\n",
        fit.a,
        fit.b,
        fit.c,
        count(f.forecast.resamples as u64),
        count(f.test_examples as u64),
        count(f.forecast.limit as u64)
    );
    out.push_str(&match f.crossover {
        Some(x) => format!(
            "Crossover: the tuned model's 80% band passes {} ({}) at about {} labels.\n",
            f.reference,
            percent(f.reference_accuracy),
            count(x as u64)
        ),
        None => format!(
            "Crossover: the tuned model's 80% band does not pass {} ({}) within {} labels.\n",
            f.reference,
            percent(f.reference_accuracy),
            count(f.forecast.limit as u64)
        ),
    });
    out.push_str(&match (&f.held_out, &f.held_out_note) {
        (Some(h), _) => format!(
            "Held-out check: fitted on the points at ≤ 1,000 labels only, the forecast at {} labels{} is {} [95%: {:.1}, {:.1}]; measured {}: {}.\n",
            count(h.labels as u64),
            h.reach_note(),
            percent(h.forecast.accuracy),
            h.forecast.band95.lo * 100.0,
            h.forecast.band95.hi * 100.0,
            percent(h.measured),
            if h.inside95() { "inside its band" } else { "outside its band: the forecast missed" }
        ),
        (None, Some(note)) => format!("Held-out check: not possible: {note}.\n"),
        (None, None) => String::new(),
    });
    out
}
