//! report.html: one self-contained page (inline CSS and SVG, no scripts, nothing fetched) with the
//! recommendation, the charts, the comparison table, the decision steps and confusion matrices.

use std::fmt::Write;

use super::format::{count, money, percent, volume};
use super::svg::{
    PROMPT_COLOUR, TUNED_COLOUR, accuracy_chart, cost_chart, difference_chart, escape, learning_curve_chart, search_curve_chart,
};
use super::table::comparison_lines;
use super::{Choice, CompareReport, RowKind, StrategyRow};

const STYLE: &str = r#"
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --bg: #f5f7fa; --prompt: PROMPT; --tuned: TUNED; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "DejaVu Sans", sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 32px 48px; }
h1 { font-size: 28px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 12px; }
.meta { color: var(--muted); margin: 0 0 20px; }
.verdict { border-radius: 10px; padding: 18px 24px; margin-bottom: 24px; color: #fff; }
.verdict.prompt { background: var(--prompt); }
.verdict.finetune { background: var(--tuned); }
.verdict.undecided { background: #616e7c; }
.verdict .choice { font-size: 24px; font-weight: 700; }
.verdict p { margin: 6px 0 0; font-size: 17px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 20px; margin-bottom: 20px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 18px 20px; margin-bottom: 20px; }
.grid .card { margin-bottom: 0; }
.chart { width: 100%; height: auto; display: block; }
.caption { color: var(--muted); font-size: 13px; margin: 8px 0 0; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 7px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; white-space: normal; }
thead th { font-weight: 600; border-bottom: 2px solid var(--ink); }
th.prompt { color: var(--prompt); } th.tuned { color: var(--tuned); }
tr.key td { font-weight: 600; }
ol.steps { margin: 0; padding-left: 22px; }
ol.steps li { padding: 8px 0; border-bottom: 1px solid var(--line); }
ol.steps li.decided { font-weight: 600; }
.answer { display: inline-block; border-radius: 999px; padding: 0 10px; margin-left: 6px; font-size: 13px; background: var(--line); }
li.decided .answer { background: var(--ink); color: #fff; }
.measured { display: block; color: var(--muted); font-weight: 400; font-size: 14px; }
.scroll { overflow-x: auto; }
table.wide { font-size: 14px; }
table.wide td, table.wide th { white-space: normal; padding: 7px 6px; }
.matrices { display: flex; flex-wrap: wrap; gap: 20px 32px; }
.matrix h3 { font-size: 14px; margin: 0 0 6px; }
.matrix table { width: auto; font-size: 13px; }
.matrix td, .matrix th { padding: 4px 10px; text-align: center; border: 1px solid var(--line); white-space: nowrap; }
h3.pricing { font-size: 13px; margin: 14px 0 8px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.figures { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.figure { border-left: 4px solid var(--line); padding: 4px 12px; }
.figure.prompt { border-color: var(--prompt); } .figure.tuned { border-color: var(--tuned); }
.figure b { display: block; font-size: 24px; line-height: 1.25; }
.figure span { color: var(--muted); font-size: 14px; }
footer { color: var(--muted); font-size: 13px; }
"#;

/// The whole page.
pub fn render(report: &CompareReport) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let style = STYLE.replace("PROMPT", PROMPT_COLOUR).replace("TUNED", TUNED_COLOUR);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>wick: prompt or fine-tune? {}</title><style>{style}</style></head><body><main>",
        escape(&report.header.model)
    );
    let _ = write!(
        out,
        "<h1>Prompt or fine-tune?</h1><p class=\"meta\">{} on {} &middot; {} split, {} examples &middot; {} labelled train examples available \
         &middot; labels: {} &middot; {}</p>",
        escape(&report.header.model),
        escape(&report.header.data),
        escape(&report.header.split),
        count(report.header.test_examples as u64),
        count(report.header.train_labels_available as u64),
        escape(&report.header.labels.join(", ")),
        escape(&report.generated_at)
    );
    verdict(report, &mut out);

    out.push_str("<div class=\"grid\">");
    card(
        &mut out,
        &accuracy_chart(report),
        "Bars: accuracy of the main template on the test split; error bars: 95% Wilson intervals. The best prompt was chosen on dev.",
    );
    card(
        &mut out,
        &difference_chart(report),
        "Paired on the same test examples: 95% paired-bootstrap intervals of the accuracy difference, exact McNemar p in each tooltip.",
    );
    let mut curve_caption =
        "Each point is a LoRA run that trained on that many distinct labels; the dashed line is the best prompt.".to_string();
    if let Some(n) = super::curve_test_sample(&report.learning_curve, report.header.test_examples) {
        curve_caption.push_str(&format!(
            " Points and line are test accuracy on the first {} test examples (the full run's point and the prompt too).",
            count(n as u64)
        ));
    }
    for note in &report.learning_curve_notes {
        curve_caption.push(' ');
        curve_caption.push_str(note);
    }
    if let Some(f) = &report.forecast {
        let fit = &f.forecast.fit;
        curve_caption.push_str(&format!(
            " Shaded: the forecast acc(n) = {:.3} − {:.3}·n^−{:.2} with its 80% and 95% bootstrap bands, up to 10× the largest count; {}.",
            fit.a,
            fit.b,
            fit.c,
            match f.crossover {
                Some(x) => format!("its 80% band passes {} at about {} labels", f.reference, count(x as u64)),
                None => format!("its 80% band does not pass {} within {} labels", f.reference, count(f.forecast.limit as u64)),
            }
        ));
        if let Some(h) = &f.held_out {
            curve_caption.push_str(&format!(
                " Held-out check: from the points at ≤ 1,000 labels it forecast {} [{:.1}, {:.1}] at {} labels{}; measured {}{}.",
                percent(h.forecast.accuracy),
                h.forecast.band95.lo * 100.0,
                h.forecast.band95.hi * 100.0,
                count(h.labels as u64),
                h.reach_note(),
                percent(h.measured),
                if h.inside95() { "" } else { ", outside the band" }
            ));
        }
    }
    card(&mut out, &learning_curve_chart(report), &curve_caption);
    if let Some(s) = &report.search {
        let (lo, mid, hi) = s.spread();
        let caption = format!(
            "The prompt side's iteration curve: the search's leader on {} dev examples after each stage ({} candidates, {:.1} min). \
             Dev accuracy across candidates on the first {}: min {}, median {}, max {}.",
            count(s.dev_examples as u64),
            s.candidates.len(),
            s.minutes,
            s.slices[0],
            percent(lo),
            percent(mid),
            percent(hi)
        );
        card(&mut out, &search_curve_chart(s), &caption);
    }
    card(
        &mut out,
        &cost_chart(report),
        "API prices from [cost]. Right of the break-even point fine-tuning is cheaper even in its first month, training included.",
    );
    cost_summary(report, &mut out);
    out.push_str("</div>");

    comparison(report, &mut out);
    paired_tests(report, &mut out);
    choices(report, &mut out);
    flexibility(report, &mut out);
    selective(report, &mut out);
    search(report, &mut out);
    decision(report, &mut out);
    matrices(report, &mut out);
    out.push_str("<footer>Made by wick compare. Every number was measured on this data and model; prices are configured.</footer>");
    out.push_str("</main></body></html>\n");
    out
}

fn card(out: &mut String, svg: &str, caption: &str) {
    let _ = write!(out, "<div class=\"card\">{svg}<p class=\"caption\">{}</p></div>", escape(caption));
}

/// The cost figures at the configured volume as large numbers beside the cost chart.
fn cost_summary(report: &CompareReport, out: &mut String) {
    let _ = write!(out, "<div class=\"card\"><h2>At {} requests per month</h2>", count(report.cost.monthly_requests));
    let pricings = [("API prices", Some(&report.cost.api)), ("Self-hosted GPU", report.cost.self_hosted.as_ref())];
    for (title, summary) in pricings {
        let Some(summary) = summary else { continue };
        let _ = write!(out, "<h3 class=\"pricing\">{}</h3><div class=\"figures\">", escape(title));
        if let Some(p) = summary.best_prompt_cost() {
            figure(out, "prompt", &money(p.monthly), &format!("per month, prompting with {}", p.name));
        }
        if let Some(t) = summary.tuned_cost() {
            figure(out, "tuned", &money(t.monthly), &format!("per month fine-tuned, after {} of training once", money(t.training)));
            figure(out, "tuned", &money(t.first_month), "fine-tuned, first month (training included)");
        }
        let break_even = summary.break_even_requests.map_or_else(|| "never".to_string(), |b| format!("{} requests", volume(b)));
        let why = if summary.break_even_requests.is_some() { "break-even volume" } else { "break-even: tuning is not cheaper per request" };
        figure(out, "", &break_even, why);
        out.push_str("</div>");
    }
    out.push_str("</div>");
}

fn figure(out: &mut String, class: &str, value: &str, label: &str) {
    let _ = write!(out, "<div class=\"figure {class}\"><b>{}</b><span>{}</span></div>", escape(value), escape(label));
}

fn verdict(report: &CompareReport, out: &mut String) {
    let rec = &report.recommendation;
    let (class, choice) = match &rec.choice {
        Choice::Prompt { strategy } => ("prompt", format!("Recommendation: prompt ({strategy})")),
        Choice::FineTune => ("finetune", "Recommendation: fine-tune (LoRA)".to_string()),
        Choice::Undecided => ("undecided", "Not decided yet: train on the unused labels first".to_string()),
    };
    let _ = write!(
        out,
        "<section class=\"verdict {class}\"><div class=\"choice\">{}</div><p>{}</p></section>",
        escape(&choice),
        escape(&rec.headline)
    );
}

fn comparison(report: &CompareReport, out: &mut String) {
    // One column per row of the report: cells may wrap (an interval only as a whole, after its
    // point estimate) so that eight or more rows fit the page, and the table scrolls past that.
    out.push_str("<section class=\"card\"><h2>Side by side</h2><div class=\"scroll\"><table class=\"wide\"><thead><tr><th></th>");
    for row in &report.rows {
        let class = if row.kind == RowKind::Prompt { "prompt" } else { "tuned" };
        let _ = write!(out, "<th class=\"{class}\">{}</th>", escape(&row.name));
    }
    out.push_str("</tr></thead><tbody>");
    for line in comparison_lines(report) {
        let key = line.label.starts_with("Accuracy [") || line.label.starts_with("Monthly cost");
        let _ = write!(out, "<tr{}><td>{}</td>", if key { " class=\"key\"" } else { "" }, escape(&line.label));
        for value in &line.values {
            let _ = write!(out, "<td>{}</td>", escape(value).replace(", ", ",&nbsp;"));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div></section>");
}

fn paired_tests(report: &CompareReport, out: &mut String) {
    if report.comparisons.is_empty() {
        return;
    }
    out.push_str("<section class=\"card\"><h2>Paired tests on the same test examples</h2><table><thead><tr><th>A − B</th><th>difference [95% CI]</th><th>only A right</th><th>only B right</th><th>McNemar p</th><th>examples to resolve</th><th>verdict</th></tr></thead><tbody>");
    for c in &report.comparisons {
        let _ = write!(
            out,
            "<tr><td>{} − {}</td><td>{:+.1} [{:+.1}, {:+.1}] points</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.a),
            escape(&c.b),
            c.difference * 100.0,
            c.interval.lo * 100.0,
            c.interval.hi * 100.0,
            c.only_a_correct,
            c.only_b_correct,
            escape(&super::decide::p_value_text(c.p_value)),
            c.examples_to_resolve.map_or_else(|| "-".into(), count),
            escape(&super::table::verdict(c))
        );
    }
    out.push_str("</tbody></table></section>");
}

fn choices(report: &CompareReport, out: &mut String) {
    if report.selections.is_empty() && report.notes.is_empty() {
        return;
    }
    out.push_str("<section class=\"card\"><h2>Choices on dev, numbers on test</h2><table><thead><tr><th>choice</th><th>chosen</th><th>made by</th></tr></thead><tbody>");
    for s in &report.selections {
        let _ = write!(out, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", escape(&s.what), escape(&s.chosen), escape(&s.by));
    }
    out.push_str("</tbody></table>");
    for note in &report.notes {
        let _ = write!(out, "<p class=\"caption\">{}</p>", escape(note));
    }
    out.push_str("</section>");
}

/// Flexibility: both systems on each shifted set, paired.
fn flexibility(report: &CompareReport, out: &mut String) {
    let Some(first) = report.flexibility.first() else { return };
    let _ = write!(
        out,
        "<section class=\"card\"><h2>Flexibility: shifted data</h2><p class=\"caption\">{} (chosen on dev) and the tuned model on the same seeded sample of each set in compare.shifted.</p>\
         <table><thead><tr><th>shifted set</th><th>n</th><th>prompt [95% CI]</th><th>tuned [95% CI]</th><th>tuned − prompt [95% CI]</th><th>McNemar p</th><th>verdict</th></tr></thead><tbody>",
        escape(&first.prompt)
    );
    for f in &report.flexibility {
        let c = &f.comparison;
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{} [{:.1}, {:.1}]</td><td>{} [{:.1}, {:.1}]</td><td>{:+.1} [{:+.1}, {:+.1}]</td><td>{}</td><td>{}</td></tr>",
            escape(&f.name),
            f.n,
            percent(f.prompt_accuracy),
            f.prompt_ci.lo * 100.0,
            f.prompt_ci.hi * 100.0,
            percent(f.tuned_accuracy),
            f.tuned_ci.lo * 100.0,
            f.tuned_ci.hi * 100.0,
            c.difference * 100.0,
            c.interval.lo * 100.0,
            c.interval.hi * 100.0,
            super::decide::p_value_text(c.p_value),
            escape(&super::table::verdict(c))
        );
    }
    out.push_str("</tbody></table></section>");
}

/// Selective prediction: the share each system answers at the required accuracy.
fn selective(report: &CompareReport, out: &mut String) {
    let Some(first) = report.selective.first() else { return };
    let _ = write!(
        out,
        "<section class=\"card\"><h2>Answering only when sure</h2><p class=\"caption\">Each system answers when its top label probability reaches the threshold chosen on {} dev examples for at least {} accuracy, and passes the rest to a person.</p>\
         <table><thead><tr><th>system</th><th>threshold (dev)</th><th>dev answered</th><th>test answered [95% CI]</th><th>accuracy answered [95% CI]</th></tr></thead><tbody>",
        count(first.dev_n as u64),
        percent(first.required)
    );
    for r in &report.selective {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} [{:.1}, {:.1}]</td><td>{}</td></tr>",
            escape(&r.row),
            r.threshold.map_or_else(|| "none reaches it".into(), |x| format!("{x:.3}")),
            percent(r.dev_coverage),
            percent(r.coverage),
            r.coverage_ci.lo * 100.0,
            r.coverage_ci.hi * 100.0,
            match (r.accuracy, r.accuracy_ci) {
                (Some(a), Some(ci)) => format!("{} [{:.1}, {:.1}]", percent(a), ci.lo * 100.0, ci.hi * 100.0),
                _ => "-".into(),
            }
        );
    }
    out.push_str("</tbody></table></section>");
}

/// The prompt search: the leader after each stage, then every candidate best first on dev (the
/// first 40), each with its dev interval, n and whether it was chosen or eliminated.
fn search(report: &CompareReport, out: &mut String) {
    let Some(s) = &report.search else { return };
    out.push_str("<section class=\"card\"><h2>Prompt search on dev</h2><table><thead><tr><th>stage</th><th>candidates tried</th><th>minutes</th><th>best dev accuracy</th><th>leader</th></tr></thead><tbody>");
    for p in &s.curve {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.stage),
            p.candidates,
            p.minutes,
            percent(p.best_dev_accuracy),
            escape(&p.leader)
        );
    }
    out.push_str("</tbody></table><table class=\"wide\"><thead><tr><th>candidate</th><th>stage</th><th>dev accuracy [95% CI]</th><th>n</th><th>status</th></tr></thead><tbody>");
    let mut all: Vec<&crate::search::CandidateResult> = s.candidates.iter().collect();
    all.sort_by(|a, b| b.dev_n.cmp(&a.dev_n).then(b.dev_accuracy.total_cmp(&a.dev_accuracy)));
    const SHOWN: usize = 40;
    for c in all.iter().take(SHOWN) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{} [{}, {}]</td><td>{}</td><td>{}</td></tr>",
            escape(&c.name),
            escape(&c.stage),
            percent(c.dev_accuracy),
            percent(c.dev_ci.lo),
            percent(c.dev_ci.hi),
            c.dev_n,
            escape(&c.status)
        );
    }
    out.push_str("</tbody></table>");
    if all.len() > SHOWN {
        let _ = write!(
            out,
            "<p class=\"caption\">{} more candidates, eliminated on smaller dev slices, are in report.json.</p>",
            all.len() - SHOWN
        );
    }
    out.push_str("</section>");
}

fn decision(report: &CompareReport, out: &mut String) {
    out.push_str("<section class=\"card\"><h2>How the decision was made</h2><ol class=\"steps\">");
    for step in &report.recommendation.steps {
        let _ = write!(
            out,
            "<li{}>{} <span class=\"answer\">{}</span><span class=\"measured\">{}</span></li>",
            if step.decided { " class=\"decided\"" } else { "" },
            escape(&step.question),
            escape(&step.answer),
            escape(&step.measured)
        );
    }
    out.push_str("</ol>");
    if let Some(p) = &report.plateau {
        let _ = write!(
            out,
            "<p class=\"caption\">Prompt history: {} improved on {} by {:+.1} points ({} the {:.1}-point plateau threshold).</p>",
            escape(&p.last),
            escape(&p.previous),
            p.improvement_points,
            if p.plateaued { "below" } else { "at or above" },
            p.threshold
        );
    }
    out.push_str("</section>");
}

fn matrices(report: &CompareReport, out: &mut String) {
    out.push_str("<section class=\"card\"><h2>Confusion matrices</h2><p class=\"caption\">Rows: gold label; columns: predicted. Darker cells hold a larger share of their row.</p><div class=\"matrices\">");
    for row in &report.rows {
        matrix(row, &report.header.labels, out);
    }
    out.push_str("</div></section>");
}

/// One heat-map table; a cell's shade is its share of the gold row, so classes of any size compare.
fn matrix(row: &StrategyRow, labels: &[String], out: &mut String) {
    let (r, g, b) = if row.kind == RowKind::Prompt { (59, 110, 168) } else { (224, 123, 36) };
    let _ = write!(
        out,
        "<div class=\"matrix\"><h3>{} &middot; {}</h3><table><tr><th>gold \\ pred</th>",
        escape(&row.name),
        percent(row.metrics.accuracy)
    );
    let name = |i: usize| labels.get(i).map_or_else(|| format!("#{i}"), |l| l.clone());
    for j in 0..row.metrics.confusion.len() {
        let _ = write!(out, "<th>{}</th>", escape(&name(j)));
    }
    out.push_str("</tr>");
    for (i, cells) in row.metrics.confusion.iter().enumerate() {
        let total: usize = cells.iter().sum();
        let _ = write!(out, "<tr><th>{}</th>", escape(&name(i)));
        for &c in cells {
            let share = if total == 0 { 0.0 } else { c as f64 / total as f64 };
            let ink = if share > 0.55 { "#fff" } else { "inherit" };
            let _ = write!(out, "<td style=\"background: rgba({r}, {g}, {b}, {:.2}); color: {ink}\">{c}</td>", 0.08 + 0.85 * share);
        }
        out.push_str("</tr>");
    }
    out.push_str("</table></div>");
}
