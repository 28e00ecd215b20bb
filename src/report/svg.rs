//! Hand-built inline SVG charts of report.html: accuracy per strategy, the learning curve and
//! monthly cost vs volume. Plain strings keep the page self-contained and the crate light.

use std::fmt::Write;

use super::format::{count, money, percent, volume};
use super::{CompareReport, RowKind};

/// Escape text for HTML (and SVG) element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Colour of prompt strategies.
pub(crate) const PROMPT_COLOUR: &str = "#3b6ea8";
/// Colour of the fine-tuned model.
pub(crate) const TUNED_COLOUR: &str = "#e07b24";
const INK: &str = "#1f2933";
const MUTED: &str = "#616e7c";
const GRID: &str = "#e4e7eb";

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 64.0;
const BOTTOM: f64 = 64.0;

/// Opening tag, accessible title and heading of one chart.
fn open(id: &str, title: &str, out: &mut String) {
    let _ = write!(
        out,
        r#"<svg id="{id}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{id}-title" xmlns="http://www.w3.org/2000/svg"><title id="{id}-title">{}</title>"#,
        escape(title)
    );
    let _ = write!(out, r#"<text x="8" y="24" font-size="18" font-weight="600" fill="{INK}">{}</text>"#, escape(title));
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, size: u32, colour: &str, body: &str) {
    let _ = write!(out, r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-size="{size}" fill="{colour}">{}</text>"#, escape(body));
}

fn line(out: &mut String, (x1, y1): (f64, f64), (x2, y2): (f64, f64), colour: &str, width: f64, dash: Option<&str>) {
    let dash = dash.map(|d| format!(r#" stroke-dasharray="{d}""#)).unwrap_or_default();
    let _ = write!(out, r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{colour}" stroke-width="{width}"{dash}/>"#);
}

/// A vertical error bar at `x` from `lo` to `hi` (pixels) with caps `cap` pixels each side.
fn whisker(out: &mut String, x: f64, (lo, hi): (f64, f64), colour: &str, cap: f64) {
    line(out, (x, lo), (x, hi), colour, 1.5, None);
    for y in [lo, hi] {
        line(out, (x - cap, y), (x + cap, y), colour, 1.5, None);
    }
}

/// Axis titles below and beside the plot area.
fn axis_titles(out: &mut String, x_title: &str, y_title: &str) {
    text(out, LEFT + (WIDTH - LEFT - RIGHT) / 2.0, HEIGHT - 12.0, "middle", 14, MUTED, x_title);
    let y = TOP + (HEIGHT - TOP - BOTTOM) / 2.0;
    let _ = write!(
        out,
        r#"<text transform="translate(18 {y:.1}) rotate(-90)" text-anchor="middle" font-size="14" fill="{MUTED}">{}</text>"#,
        escape(y_title)
    );
}

/// A linear y axis in accuracy percent with gridlines every `step` points.
fn percent_axis(out: &mut String, lo: f64, hi: f64, step: f64) -> impl Fn(f64) -> f64 + use<> {
    let (top, bottom) = (TOP, HEIGHT - BOTTOM);
    let y = move |pct: f64| bottom - (pct - lo) / (hi - lo) * (bottom - top);
    let mut tick = lo;
    while tick <= hi + 1e-9 {
        line(out, (LEFT, y(tick)), (WIDTH - RIGHT, y(tick)), GRID, 1.0, None);
        text(out, LEFT - 8.0, y(tick) + 5.0, "end", 13, MUTED, &format!("{tick:.0}%"));
        tick += step;
    }
    y
}

/// Maps values onto pixels on a log10 scale spanning whole decades.
struct LogScale {
    lo: f64,
    hi: f64,
    px0: f64,
    px1: f64,
}

impl LogScale {
    /// Decades around `[min, max]` (both positive), widened by `pad` decades each side.
    fn new(min: f64, max: f64, pad: f64, px0: f64, px1: f64) -> Self {
        let lo = (min.log10() - pad).floor();
        let hi = (max.log10() + pad).ceil().max(lo + 1.0);
        Self { lo, hi, px0, px1 }
    }

    fn at(&self, v: f64) -> f64 {
        self.px0 + (v.max(1e-12).log10() - self.lo) / (self.hi - self.lo) * (self.px1 - self.px0)
    }

    fn decades(&self) -> impl Iterator<Item = f64> {
        (self.lo as i32..=self.hi as i32).map(|e| 10f64.powi(e))
    }
}

/// 1000 -> "1K", 2500000 -> "2.5M": short tick labels.
fn compact(v: f64) -> String {
    let (scaled, unit) = match v {
        v if v >= 1e9 => (v / 1e9, "B"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "K"),
        v => (v, ""),
    };
    let digits = if scaled >= 10.0 || scaled.fract().abs() < 1e-9 { 0 } else { 1 };
    format!("{scaled:.digits$}{unit}")
}

/// Tick label of a cost decade: "$0.01", "$1", "$10K".
fn compact_money(v: f64) -> String {
    if v >= 1.0 {
        format!("${}", compact(v))
    } else {
        // Decades below $1 need exactly as many decimals as the decade has zeros.
        let decimals = (-v.log10().round()).clamp(0.0, 12.0) as usize;
        format!("${v:.decimals$}")
    }
}

/// A one-line legend under the title, right-aligned to the plot (widths estimated from characters).
fn legend(out: &mut String, entries: &[(&str, &str, bool)]) {
    let width = |label: &str| 40.0 + 7.4 * label.chars().count() as f64;
    let mut x = WIDTH - RIGHT - entries.iter().map(|e| width(e.1)).sum::<f64>() + 12.0;
    for (colour, label, dashed) in entries {
        if *dashed {
            line(out, (x, 42.0), (x + 22.0, 42.0), colour, 2.5, Some("6 4"));
        } else {
            let _ = write!(out, r#"<rect x="{x:.1}" y="35" width="22" height="13" rx="2" fill="{colour}"/>"#);
        }
        text(out, x + 28.0, 47.0, "start", 13, INK, label);
        x += width(label);
    }
}

/// Bars of test accuracy per strategy with 95% confidence error bars; the axis starts below the
/// lowest interval so the bars' differences and the intervals' widths are visible.
pub(crate) fn accuracy_chart(report: &CompareReport) -> String {
    let mut out = String::new();
    open("chart-accuracy", "Test accuracy per strategy, with 95% intervals", &mut out);
    legend(&mut out, &[(PROMPT_COLOUR, "prompt", false), (TUNED_COLOUR, "fine-tuned", false)]);
    let lowest = report.rows.iter().map(|r| r.accuracy_ci.map_or(r.metrics.accuracy, |c| c.lo)).fold(1.0f64, f64::min) * 100.0;
    let floor = ((lowest - 5.0) / 10.0).floor().clamp(0.0, 9.0) * 10.0;
    let y = percent_axis(&mut out, floor, 100.0, if 100.0 - floor > 50.0 { 20.0 } else { 10.0 });
    let n = report.rows.len().max(1) as f64;
    let band = (WIDTH - LEFT - RIGHT) / n;
    let bar = (band * 0.58).min(90.0);
    for (i, row) in report.rows.iter().enumerate() {
        let centre = LEFT + band * (i as f64 + 0.5);
        let acc = row.metrics.accuracy * 100.0;
        let colour = if row.kind == RowKind::Prompt { PROMPT_COLOUR } else { TUNED_COLOUR };
        let _ = write!(
            out,
            r#"<rect x="{:.1}" y="{:.1}" width="{bar:.1}" height="{:.1}" rx="3" fill="{colour}"><title>{}: {}</title></rect>"#,
            centre - bar / 2.0,
            y(acc),
            y(floor) - y(acc),
            escape(&row.name),
            escape(&super::decide::accuracy_text(row))
        );
        let mut label_top = y(acc);
        if let Some(c) = &row.accuracy_ci {
            let (lo, hi) = (y(c.lo * 100.0), y(c.hi * 100.0));
            let _ = write!(out, r#"<g class="error-bar"><title>95% interval: {:.1}–{:.1}%</title>"#, c.lo * 100.0, c.hi * 100.0);
            whisker(&mut out, centre, (lo, hi), INK, 8.0);
            out.push_str("</g>");
            label_top = label_top.min(hi);
        }
        text(&mut out, centre, label_top - 8.0, "middle", 14, INK, &percent(row.metrics.accuracy));
        // Eight rows leave a slot ~70 px wide: a longer name goes on two lines.
        for (i, line) in name_lines(&row.name).iter().enumerate() {
            text(&mut out, centre, HEIGHT - BOTTOM + 22.0 + 16.0 * i as f64, "middle", 14, INK, line);
        }
    }
    axis_titles(&mut out, "error bars: 95% Wilson interval on the test split", "accuracy");
    out.push_str("</svg>");
    out
}

/// A bar's name as one line, or two split at the space nearest its middle when it is longer than
/// ten characters ("fine-tuned (LoRA)" → "fine-tuned", "(LoRA)").
fn name_lines(name: &str) -> Vec<&str> {
    let middle = name.len() / 2;
    match name.match_indices(' ').map(|(i, _)| i).min_by_key(|&i| i.abs_diff(middle)) {
        Some(i) if name.chars().count() > 10 => vec![&name[..i], &name[i + 1..]],
        _ => vec![name],
    }
}

/// Each paired difference (tuned − prompt, best prompt − other prompt) as a point with its 95%
/// paired-bootstrap interval against a zero line: an interval crossing zero is indistinguishable.
pub(crate) fn difference_chart(report: &CompareReport) -> String {
    let mut out = String::new();
    open("chart-difference", "Paired accuracy differences, with 95% intervals", &mut out);
    let rows = &report.comparisons;
    let reach = rows.iter().flat_map(|c| [c.interval.lo.abs(), c.interval.hi.abs()]).fold(0.02f64, f64::max) * 100.0;
    let span = (reach / 5.0).ceil() * 5.0;
    let label = |c: &crate::stats::PairedComparison| format!("{} − {}", c.a.trim_end_matches(" (LoRA)"), c.b.trim_end_matches(" (LoRA)"));
    let (x0, x1) = (plot_left(rows.iter().map(label)), WIDTH - RIGHT - 10.0);
    let x = |pts: f64| x0 + (pts + span) / (2.0 * span) * (x1 - x0);
    let top = TOP + 10.0;
    let pitch = ((HEIGHT - BOTTOM - top) / rows.len().max(1) as f64).min(44.0);
    let mut tick = -span;
    while tick <= span + 1e-9 {
        line(&mut out, (x(tick), top - 8.0), (x(tick), HEIGHT - BOTTOM), GRID, 1.0, None);
        text(&mut out, x(tick), HEIGHT - BOTTOM + 18.0, "middle", 13, MUTED, &format!("{tick:+.0}"));
        tick += span / 2.0;
    }
    line(&mut out, (x(0.0), top - 8.0), (x(0.0), HEIGHT - BOTTOM), INK, 1.5, Some("4 3"));
    for (i, c) in rows.iter().enumerate() {
        let yy = top + pitch * (i as f64 + 0.5);
        let colour = if c.a.starts_with("fine-tuned") { TUNED_COLOUR } else { PROMPT_COLOUR };
        text(&mut out, x0 - 10.0, yy + 5.0, "end", 13, INK, &label(c));
        let _ = write!(
            out,
            r#"<g class="difference"><title>{} − {}: {}</title>"#,
            escape(&c.a),
            escape(&c.b),
            escape(&super::decide::difference_text(c))
        );
        line(&mut out, (x(c.interval.lo * 100.0), yy), (x(c.interval.hi * 100.0), yy), colour, 3.0, None);
        let _ = write!(out, r#"<circle cx="{:.1}" cy="{yy:.1}" r="5" fill="{colour}"/></g>"#, x(c.difference * 100.0));
    }
    if rows.is_empty() {
        text(&mut out, WIDTH / 2.0, HEIGHT / 2.0, "middle", 14, MUTED, "no paired predictions kept");
    }
    axis_titles(&mut out, "accuracy difference A − B in points (an interval crossing 0: indistinguishable)", "");
    out.push_str("</svg>");
    out
}

/// Where the difference chart's plot starts: right of its widest label (right-aligned 10 px before
/// the plot), within a third to a half of the chart's width.
fn plot_left(labels: impl Iterator<Item = String>) -> f64 {
    (24.0 + labels.map(|l| label_width(&l)).fold(0.0, f64::max)).clamp(LEFT + 120.0, WIDTH / 2.0)
}

/// About how wide a 13 px label is drawn (~7.2 px a character in the report's sans-serif).
fn label_width(label: &str) -> f64 {
    label.chars().count() as f64 * 7.2
}

/// Fine-tuned accuracy against labels used (log x), with the best prompt strategy as a dashed line.
pub(crate) fn learning_curve_chart(report: &CompareReport) -> String {
    let mut out = String::new();
    open("chart-learning-curve", "Learning curve: fine-tuned accuracy vs labels", &mut out);
    let points: Vec<(f64, f64)> = report.learning_curve.iter().map(|p| ((p.labels.max(1)) as f64, p.accuracy * 100.0)).collect();
    if points.is_empty() {
        text(&mut out, WIDTH / 2.0, HEIGHT / 2.0, "middle", 14, MUTED, "no learning curve was measured");
        out.push_str("</svg>");
        return out;
    }
    let best = report.best_prompt();
    // The line to pass: the best prompt on the curve's test examples (the forecast's reference),
    // which are a sample of the split when compare.curve_test_examples is below it.
    let prompt_line = best.map(|b| report.forecast.as_ref().map_or(b.metrics.accuracy, |f| f.reference_accuracy));
    let ranges: Vec<(f64, f64)> = report.learning_curve.iter().map(|p| p.accuracy_range()).collect();
    let accs = points
        .iter()
        .map(|p| p.1)
        .chain(ranges.iter().flat_map(|&(lo, hi)| [lo * 100.0, hi * 100.0]))
        .chain(prompt_line.map(|a| a * 100.0));
    let (min, max) = accs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), a| (lo.min(a), hi.max(a)));
    let lo = ((min - 5.0) / 10.0).floor().max(0.0) * 10.0;
    let hi = ((max + 5.0) / 10.0).ceil().min(10.0) * 10.0;
    let step = if hi - lo > 50.0 { 20.0 } else { 10.0 };
    let y = percent_axis(&mut out, lo, hi, step);
    let (xmin, mut xmax) = points.iter().fold((f64::INFINITY, 0f64), |(a, b), p| (a.min(p.0), b.max(p.0)));
    if let Some(f) = &report.forecast {
        xmax = xmax.max(f.forecast.limit as f64);
    }
    let x = LogScale::new(xmin, xmax, 0.15, LEFT + 12.0, WIDTH - RIGHT - 12.0);
    if let Some(f) = &report.forecast {
        // The forecast under the measured points: 95% and 80% bands, then the fitted line.
        let clamp = |v: f64| y((v * 100.0).clamp(lo, hi));
        for (band, opacity) in [(0usize, 0.12), (1usize, 0.22)] {
            let pick = |p: &crate::forecast::ForecastPoint| if band == 0 { p.band95 } else { p.band80 };
            let upper: Vec<String> =
                f.forecast.curve.iter().map(|p| format!("{:.1},{:.1}", x.at(p.labels as f64), clamp(pick(p).hi))).collect();
            let lower: Vec<String> =
                f.forecast.curve.iter().rev().map(|p| format!("{:.1},{:.1}", x.at(p.labels as f64), clamp(pick(p).lo))).collect();
            let _ = write!(
                out,
                r#"<polygon points="{} {}" fill="{TUNED_COLOUR}" fill-opacity="{opacity}" stroke="none"><title>forecast {}% band</title></polygon>"#,
                upper.join(" "),
                lower.join(" "),
                if band == 0 { 95 } else { 80 }
            );
        }
        let fit: Vec<String> = f.forecast.curve.iter().map(|p| format!("{:.1},{:.1}", x.at(p.labels as f64), clamp(p.accuracy))).collect();
        let _ = write!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{TUNED_COLOUR}" stroke-width="1.5" stroke-dasharray="4 3"/>"#,
            fit.join(" ")
        );
    }
    for d in x.decades() {
        line(&mut out, (x.at(d), TOP), (x.at(d), HEIGHT - BOTTOM), GRID, 1.0, Some("2 3"));
    }
    for &(labels, _) in &points {
        text(&mut out, x.at(labels), HEIGHT - BOTTOM + 20.0, "middle", 13, MUTED, &count(labels as u64));
    }
    let best_y = prompt_line.map(|a| y(a * 100.0));
    if let (Some(b), Some(by)) = (best, best_y) {
        line(&mut out, (LEFT, by), (WIDTH - RIGHT, by), PROMPT_COLOUR, 2.0, Some("7 5"));
        let label = format!("best prompt ({}): {}", b.name, percent(prompt_line.unwrap_or(b.metrics.accuracy)));
        // Left end: the curve usually starts low on the left and climbs past the line on the right.
        // Above the line, unless a point sits just above it under the label (a first point a
        // point or two over the prompt): then below it.
        let right_end = LEFT + 6.0 + label_width(&label);
        let crowded = points.iter().any(|&(l, a)| x.at(l) - 30.0 < right_end && (0.0..40.0).contains(&(by - y(a))));
        text(&mut out, LEFT + 6.0, if crowded { by + 20.0 } else { by - 8.0 }, "start", 13, PROMPT_COLOUR, &label);
    }
    let path: Vec<String> = points.iter().map(|&(l, a)| format!("{:.1},{:.1}", x.at(l), y(a))).collect();
    let _ = write!(out, r#"<polyline points="{}" fill="none" stroke="{TUNED_COLOUR}" stroke-width="2.5"/>"#, path.join(" "));
    for (p, &(labels, acc)) in report.learning_curve.iter().zip(&points) {
        let (px, py) = (x.at(labels), y(acc));
        if p.seed_accuracies.len() > 1 {
            // Seed-to-seed spread: min–max over the runs of this point.
            let (lo, hi) = p.accuracy_range();
            let _ =
                write!(out, r#"<g class="seed-range"><title>{} seeds: {}–{}</title>"#, p.seed_accuracies.len(), percent(lo), percent(hi));
            whisker(&mut out, px, (y(lo * 100.0), y(hi * 100.0)), TUNED_COLOUR, 6.0);
            out.push_str("</g>");
        }
        let _ = write!(
            out,
            r##"<circle cx="{px:.1}" cy="{py:.1}" r="5" fill="#fff" stroke="{TUNED_COLOUR}" stroke-width="2.5"><title>{} labels: {}</title></circle>"##,
            count(p.labels as u64),
            percent(p.accuracy)
        );
        // Above the point unless the best-prompt line runs just there.
        let above = py - 12.0;
        let clashes = best_y.is_some_and(|by| (above - 5.0 - by).abs() < 14.0);
        text(&mut out, px, if clashes { py + 24.0 } else { above }, "middle", 14, INK, &percent(p.accuracy));
    }
    if report.forecast.is_some() {
        legend(&mut out, &[(TUNED_COLOUR, "fine-tuned (band: forecast 80/95%)", false), (PROMPT_COLOUR, "best prompt", true)]);
    } else {
        legend(&mut out, &[(TUNED_COLOUR, "fine-tuned", false), (PROMPT_COLOUR, "best prompt", true)]);
    }
    axis_titles(&mut out, "labelled train examples (log scale); bars: min–max over seeds", "accuracy");
    out.push_str("</svg>");
    out
}

/// Monthly cost vs monthly volume (log-log): best prompt vs tuned in its first month (training
/// included), with the break-even point and the configured volume marked.
pub(crate) fn cost_chart(report: &CompareReport) -> String {
    let mut out = String::new();
    open("chart-cost", "Monthly cost vs monthly volume", &mut out);
    let api = &report.cost.api;
    let monthly = report.cost.monthly_requests.max(1) as f64;
    let break_even = api.break_even_requests.filter(|b| b.is_finite() && *b > 0.0);
    let (vmin, vmax) = break_even.map_or((monthly, monthly), |b| (b.min(monthly), b.max(monthly)));
    let x = LogScale::new(vmin, vmax, 1.0, LEFT + 8.0, WIDTH - RIGHT);
    let steps = 80;
    let volumes: Vec<f64> = (0..=steps).map(|i| 10f64.powf(x.lo + (x.hi - x.lo) * i as f64 / steps as f64)).collect();
    let curve = api.cost_curve(&volumes);
    let positive = curve.iter().flat_map(|p| [p.prompt, p.tuned_first_month]).filter(|c| *c > 0.0);
    let (cmin, cmax) = positive.fold((f64::INFINITY, 0f64), |(a, b), c| (a.min(c), b.max(c)));
    if curve.is_empty() || !cmin.is_finite() {
        let why = "no cost curve: needs a prompt strategy and a fine-tuned model with non-zero prices";
        text(&mut out, WIDTH / 2.0, HEIGHT / 2.0, "middle", 14, MUTED, why);
        out.push_str("</svg>");
        return out;
    }
    let yscale = LogScale::new(cmin, cmax, 0.0, HEIGHT - BOTTOM, TOP);
    for d in yscale.decades() {
        line(&mut out, (LEFT, yscale.at(d)), (WIDTH - RIGHT, yscale.at(d)), GRID, 1.0, None);
        text(&mut out, LEFT - 8.0, yscale.at(d) + 5.0, "end", 13, MUTED, &compact_money(d));
    }
    for d in x.decades() {
        line(&mut out, (x.at(d), TOP), (x.at(d), HEIGHT - BOTTOM), GRID, 1.0, Some("2 3"));
        text(&mut out, x.at(d), HEIGHT - BOTTOM + 20.0, "middle", 13, MUTED, &compact(d));
    }
    let plot = |out: &mut String, f: &dyn Fn(&super::CostCurvePoint) -> f64, colour: &str| {
        let pts: Vec<String> =
            curve.iter().filter(|p| f(p) > 0.0).map(|p| format!("{:.1},{:.1}", x.at(p.requests), yscale.at(f(p)))).collect();
        let _ = write!(out, r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2.5"/>"#, pts.join(" "));
    };
    plot(&mut out, &|p| p.prompt, PROMPT_COLOUR);
    plot(&mut out, &|p| p.tuned_first_month, TUNED_COLOUR);

    let mx = x.at(monthly);
    line(&mut out, (mx, TOP), (mx, HEIGHT - BOTTOM), MUTED, 1.5, Some("4 4"));
    let anchor = if mx > WIDTH * 0.7 { "end" } else { "start" };
    let dx = if anchor == "end" { -6.0 } else { 6.0 };
    text(&mut out, mx + dx, TOP + 16.0, anchor, 13, MUTED, &format!("your volume: {}/month", count(report.cost.monthly_requests)));

    if let Some(b) = break_even
        && let Some(p) = api.cost_curve(&[b]).first()
    {
        let (bx, by) = (x.at(b), yscale.at(p.prompt.max(cmin)));
        let _ = write!(
            out,
            r##"<circle cx="{bx:.1}" cy="{by:.1}" r="6" fill="{INK}" stroke="#fff" stroke-width="2"><title>break-even</title></circle>"##
        );
        // Both lines rise to the right of the crossing and the tuned one is flat to its left, so
        // below-right (or, near the right edge, above-left) stays clear of them.
        let label = format!("break-even: {} requests/month ({})", volume(b), money(p.prompt));
        if bx > WIDTH * 0.6 {
            text(&mut out, bx - 10.0, by - 14.0, "end", 14, INK, &label);
        } else {
            text(&mut out, bx + 10.0, by + 24.0, "start", 14, INK, &label);
        }
    }
    if break_even.is_none() {
        text(&mut out, LEFT + 10.0, TOP + 16.0, "start", 14, INK, "no break-even: fine-tuning costs more per request");
    }
    let prompt_label = format!("{} (best prompt)", api.best_prompt.as_deref().unwrap_or("prompt"));
    legend(&mut out, &[(PROMPT_COLOUR, &prompt_label, false), (TUNED_COLOUR, "fine-tuned, month 1", false)]);
    axis_titles(&mut out, "requests per month (log scale)", "cost per month (log scale)");
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::{label_width, name_lines, plot_left};

    #[test]
    fn difference_labels_fit_left_of_the_plot() {
        let short = plot_left(["fine-tuned − zero-shot".to_string()].into_iter());
        assert_eq!(short, super::LEFT + 120.0, "short labels keep the default plot width");
        // The label of a tuned + prompt row (cut off at its left edge before).
        let long = "fine-tuned + retrieval − fine-tuned".to_string();
        let left = plot_left([long.clone()].into_iter());
        assert!(left - 10.0 - label_width(&long) >= 8.0, "label starts at {left}");
        assert!(left <= super::WIDTH / 2.0);
    }

    #[test]
    fn long_bar_names_split_at_the_space_nearest_their_middle() {
        assert_eq!(name_lines("zero-shot"), vec!["zero-shot"]);
        assert_eq!(name_lines("fine-tuned (LoRA)"), vec!["fine-tuned", "(LoRA)"]);
        assert_eq!(name_lines("tuned + retrieval"), vec!["tuned +", "retrieval"]);
        assert_eq!(name_lines("calibrated-but-long"), vec!["calibrated-but-long"]);
    }
}

/// The prompt search's iteration curve: the leader's dev accuracy after each stage against the
/// minutes spent (a step line: best so far), each point named by its stage and candidates tried.
pub(crate) fn search_curve_chart(search: &crate::search::SearchReport) -> String {
    let mut out = String::new();
    open("chart-search-curve", "Prompt iteration curve: best dev accuracy vs search time", &mut out);
    let points: Vec<(f64, f64)> = search.curve.iter().map(|p| (p.minutes, p.best_dev_accuracy * 100.0)).collect();
    let (min, max) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let lo = ((min - 5.0) / 10.0).floor().max(0.0) * 10.0;
    let hi = ((max + 5.0) / 10.0).ceil().min(10.0) * 10.0;
    let y = percent_axis(&mut out, lo, hi, if hi - lo > 50.0 { 20.0 } else { 10.0 });
    let span = points.last().map_or(1.0, |p| p.0).max(0.1);
    let x = |m: f64| LEFT + 12.0 + m / span * (WIDTH - RIGHT - LEFT - 24.0);
    let mut path = Vec::new();
    for (i, &(m, a)) in points.iter().enumerate() {
        if i > 0 {
            path.push(format!("{:.1},{:.1}", x(m), y(points[i - 1].1)));
        }
        path.push(format!("{:.1},{:.1}", x(m), y(a)));
    }
    let _ = write!(out, r#"<polyline points="{}" fill="none" stroke="{PROMPT_COLOUR}" stroke-width="2.5"/>"#, path.join(" "));
    for (i, (p, &(m, a))) in search.curve.iter().zip(&points).enumerate() {
        let (px, py) = (x(m), y(a));
        let _ = write!(
            out,
            r##"<circle cx="{px:.1}" cy="{py:.1}" r="5" fill="#fff" stroke="{PROMPT_COLOUR}" stroke-width="2.5"><title>{}: {} ({} candidates, {:.1} min; leader: {})</title></circle>"##,
            escape(&p.stage),
            percent(p.best_dev_accuracy),
            p.candidates,
            p.minutes,
            escape(&p.leader)
        );
        // Labels alternate above and below so that stages a few seconds apart stay readable.
        let dy = if i % 2 == 0 { -12.0 } else { 22.0 };
        text(&mut out, px, py + dy, "middle", 12, INK, &format!("{} {}", percent(p.best_dev_accuracy), short_stage(&p.stage)));
        text(&mut out, px, HEIGHT - BOTTOM + 20.0, "middle", 12, MUTED, &format!("{:.1}", m));
    }
    axis_titles(&mut out, "minutes of search (point labels: the stage that ended there)", "best dev accuracy");
    out.push_str("</svg>");
    out
}

/// A stage's name short enough for a point label.
fn short_stage(stage: &str) -> &str {
    match stage {
        s if s.starts_with("v1") => "v1",
        "hand-written strategies" => "strategies",
        s => s,
    }
}
