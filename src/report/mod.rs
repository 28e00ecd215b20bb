//! The decision report of `wick compare`: measured strategies side by side, what each costs, the
//! seed's decision tree walked with the measured values, as a terminal table, report.json and a
//! self-contained report.html.

pub mod cost;
pub mod decide;
pub mod html;
pub mod labels;
pub mod selective;
mod svg;
pub mod table;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{CostConfig, DecisionConfig};
use crate::error::{Error, Result};
use crate::metrics::{Consistency, Metrics};
use crate::model::load::write_atomic;
use crate::stats::{self, Interval, PairedComparison};

pub use cost::{CostCurvePoint, CostReport, CostSummary, StrategyCost};
pub use decide::{Choice, DecisionStep, Recommendation};

/// Whether a row adapts the prompt or the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// A prompt-only strategy on the frozen model.
    Prompt,
    /// The fine-tuned (LoRA) model.
    FineTuned,
    /// The fine-tuned model under a prompt strategy ("tuned + few-shot"): reported beside the
    /// others, never chosen by the decision tree.
    TunedPrompt,
}

/// One measured strategy: a column of the comparison table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyRow {
    /// "zero-shot", "few-shot", "calibrated", "retrieval", "fine-tuned (LoRA)", "tuned + few-shot".
    pub name: String,
    /// Prompt strategy or fine-tuned model.
    pub kind: RowKind,
    /// Metrics on the test split (latency and prompt tokens included).
    pub metrics: Metrics,
    /// Stability across prompt templates, when measured.
    pub consistency: Option<Consistency>,
    /// Labelled examples the strategy consumed (demonstrations, calibration set, train split).
    pub labelled_examples_used: usize,
    /// Seconds until the strategy could answer: 0 for prompts, training wall time for the tuned row.
    pub time_to_first_result_s: f64,
    /// Seconds to adapt to changed requirements: 0 for prompts (edit the prompt), retraining for tuned.
    pub retrain_time_s: f64,
    /// Output tokens a deployed request generates (priced with the output price).
    pub output_tokens_per_request: f64,
    /// Tokens processed by training (0 for prompts); priced with `cost.training_per_1k`.
    pub training_tokens: u64,
    /// Accuracy on the dev sample the choices were made on (None: not scored on dev).
    #[serde(default)]
    pub dev_accuracy: Option<f64>,
    /// Predicted label index per test example, in the order of [`ReportHeader::gold`] (empty when
    /// not kept): the paired tests are computed from these.
    #[serde(default)]
    pub predicted: Vec<usize>,
    /// 95% Wilson interval of the test accuracy (filled by [`CompareReport::new`]).
    #[serde(default)]
    pub accuracy_ci: Option<Interval>,
    /// 95% percentile-bootstrap interval of the test macro-F1 (filled by [`CompareReport::new`]
    /// when predictions are kept).
    #[serde(default)]
    pub macro_f1_ci: Option<Interval>,
}

/// Accuracy of fine-tuning runs on a subset of the labels (one run per seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Distinct labelled train examples the run trained on.
    pub labels: usize,
    /// Test accuracy (mean over seeds).
    pub accuracy: f64,
    /// Test macro-F1 (mean over seeds).
    pub macro_f1: f64,
    /// Training wall time in seconds (mean over seeds).
    pub train_time_s: f64,
    /// Test accuracy of each seed's run.
    #[serde(default)]
    pub seed_accuracies: Vec<f64>,
    /// Test examples the point is measured on: the first this many (0: all of the split).
    #[serde(default)]
    pub test_examples: usize,
}

/// The number of first test examples the curve's points are measured on, when that is a sample
/// of a split of `split_n` examples (`compare.curve_test_examples` below it); None when they are
/// on all of it.
pub fn curve_test_sample(curve: &[CurvePoint], split_n: usize) -> Option<usize> {
    curve.iter().map(|p| p.test_examples).find(|&n| n > 0 && n < split_n)
}

impl CurvePoint {
    /// The lowest and highest accuracy over seeds (the mean when only one seed ran).
    pub fn accuracy_range(&self) -> (f64, f64) {
        self.seed_accuracies
            .iter()
            .fold(None, |acc: Option<(f64, f64)>, &a| Some(acc.map_or((a, a), |(lo, hi)| (lo.min(a), hi.max(a)))))
            .unwrap_or((self.accuracy, self.accuracy))
    }
}

/// One choice the report rests on, and the split that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// What was chosen ("best prompt strategy", "tuned checkpoint", ...).
    pub what: String,
    /// The choice.
    pub chosen: String,
    /// The split (and sample size) that made it, or "fixed" when nothing was selected.
    pub by: String,
}

/// The seed's rule "switch to fine-tuning when the last prompt improvement is below N points".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlateauCheck {
    /// The latest prompt version (e.g. "prompt_v3").
    pub last: String,
    /// The prompt version before it.
    pub previous: String,
    /// Best accuracy of `last` minus that of `previous`, in percentage points.
    pub improvement_points: f64,
    /// `decision.plateau_points`.
    pub threshold: f64,
    /// Whether the improvement is below the threshold.
    pub plateaued: bool,
}

/// Everything `wick compare` measured and concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    /// Model, data, split and label counts (flattened: top-level keys of report.json).
    #[serde(flatten)]
    pub header: ReportHeader,
    /// One entry per strategy, prompt rows first.
    pub rows: Vec<StrategyRow>,
    /// Fine-tuning accuracy by number of labels, ascending.
    pub learning_curve: Vec<CurvePoint>,
    /// Configured curve points that were not run, each with the reason.
    #[serde(default)]
    pub learning_curve_notes: Vec<String>,
    /// Serving and training costs.
    pub cost: CostReport,
    /// The decision tree's outcome.
    pub recommendation: Recommendation,
    /// Prompt-plateau check from the run history, when there are two prompt versions.
    pub plateau: Option<PlateauCheck>,
    /// Paired tests on the same test examples: the tuned model against every prompt strategy,
    /// then the best prompt strategy against the other prompts.
    #[serde(default)]
    pub comparisons: Vec<PairedComparison>,
    /// The choices made before the test split was scored, each with the split that made it.
    #[serde(default)]
    pub selections: Vec<Selection>,
    /// What the reader must know about how the numbers were made (partial run, quick look,
    /// consistency sample, what ended training).
    #[serde(default)]
    pub notes: Vec<String>,
    /// How many labels fine-tuning needs here: the learning curve's forecast, when it has
    /// enough points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<labels::LabelsForecast>,
    /// Answering only when sure: each system's share answered at the required accuracy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selective: Vec<selective::SelectiveResult>,
    /// Flexibility: the chosen prompt and the tuned model on each shifted data set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flexibility: Vec<ShiftedResult>,
    /// The prompt search on dev, when one ran: its candidates, iteration curve and choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<crate::search::SearchReport>,
    /// When the report was made (RFC 3339, UTC).
    pub generated_at: String,
}

/// The chosen prompt and the tuned model on the same sample of one shifted data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShiftedResult {
    /// The set's name (`compare.shifted`).
    pub name: String,
    /// Its file.
    pub source: String,
    /// Examples scored.
    pub n: usize,
    /// The prompt row scored (the one chosen on dev).
    pub prompt: String,
    /// The prompt's accuracy and its 95% Wilson interval.
    pub prompt_accuracy: f64,
    /// 95% interval of `prompt_accuracy`.
    pub prompt_ci: Interval,
    /// The tuned model's accuracy.
    pub tuned_accuracy: f64,
    /// 95% interval of `tuned_accuracy`.
    pub tuned_ci: Interval,
    /// Tuned − prompt, paired on the same examples.
    pub comparison: PairedComparison,
}

impl CompareReport {
    /// Add the flexibility results: a decision step that states them (it decides nothing), and,
    /// when the tuned model is significantly worse than the prompt on a shifted set, a sentence
    /// in the recommendation saying so.
    pub fn add_flexibility(&mut self, results: Vec<ShiftedResult>) {
        if results.is_empty() {
            return;
        }
        let measured: Vec<String> = results
            .iter()
            .map(|r| {
                format!("{} (n = {}): {} − {} {}", r.name, r.n, r.comparison.a, r.comparison.b, decide::difference_text(&r.comparison))
            })
            .collect();
        let worse: Vec<&ShiftedResult> = results.iter().filter(|r| r.comparison.a_worse()).collect();
        let step = DecisionStep {
            question: "Flexibility: does the tuned model hold up on shifted data as well as the prompt?".into(),
            measured: measured.join("; "),
            answer: if worse.is_empty() {
                "yes (no set significantly worse)".into()
            } else {
                format!("no, on {}", worse.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", "))
            },
            decided: false,
        };
        let at = self.recommendation.steps.len().saturating_sub(1);
        self.recommendation.steps.insert(at, step);
        if !worse.is_empty() {
            let losses: Vec<String> = worse
                .iter()
                .map(|r| {
                    format!(
                        "{:.1} points on {} [{:+.1}, {:+.1}]",
                        -r.comparison.difference * 100.0,
                        r.name,
                        r.comparison.interval.lo * 100.0,
                        r.comparison.interval.hi * 100.0
                    )
                })
                .collect();
            self.recommendation
                .headline
                .push_str(&format!(" Flexibility: the tuned model loses {} against the prompt on shifted data.", losses.join(", ")));
        }
        self.flexibility = results;
    }
}

impl CompareReport {
    /// Add the selective-prediction results. With `abstain` (`decision.abstain`) they answer the
    /// required-accuracy question ([`decide::decide_by_coverage`]); otherwise a step states them
    /// and decides nothing: the required-accuracy question keeps its all-requests rule.
    pub fn add_selective(&mut self, results: Vec<selective::SelectiveResult>, abstain: bool) {
        if results.is_empty() {
            return;
        }
        let tuned = self.rows.iter().find(|r| r.kind == RowKind::FineTuned).map(|r| r.name.clone());
        let pair = tuned.and_then(|t| {
            let tuned = results.iter().find(|r| r.row == t)?;
            Some((results.iter().find(|r| r.row != t)?, tuned))
        });
        if let (true, Some((prompt, tuned))) = (abstain, pair) {
            decide::decide_by_coverage(&mut self.recommendation, prompt, tuned);
            self.selective = results;
            return;
        }
        let shown: Vec<String> = results
            .iter()
            .map(|r| {
                format!(
                    "{} answers {} [{:.1}, {:.1}] of test requests{}",
                    r.row,
                    format::percent(r.coverage),
                    r.coverage_ci.lo * 100.0,
                    r.coverage_ci.hi * 100.0,
                    r.accuracy.map_or_else(String::new, |a| format!(
                        " at {} accuracy{}",
                        format::percent(a),
                        if a < r.required { " (below the requirement on test: the dev threshold did not carry over)" } else { "" }
                    ))
                )
            })
            .collect();
        let step = DecisionStep {
            question: format!(
                "Answering only when sure: what share does each answer at ≥ {} accuracy (threshold chosen on dev)?",
                format::percent(results[0].required)
            ),
            measured: shown.join("; "),
            answer: "stated, not deciding (the required-accuracy question judges all requests)".into(),
            decided: false,
        };
        let at = self.recommendation.steps.len().saturating_sub(1);
        self.recommendation.steps.insert(at, step);
        self.selective = results;
    }
}

/// What the report is about: the fields of [`CompareReport`] that are not measured per row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportHeader {
    /// Model source as configured.
    pub model: String,
    /// Data source as configured.
    pub data: String,
    /// Split the rows were measured on.
    pub split: String,
    /// Examples in that split.
    pub test_examples: usize,
    /// Label names in class-index order.
    pub labels: Vec<String>,
    /// Labelled train examples available for fine-tuning.
    pub train_labels_available: usize,
    /// Gold label index per test example (empty when predictions are not kept).
    #[serde(default)]
    pub gold: Vec<usize>,
    /// Bootstrap resamples of the intervals.
    #[serde(default = "default_resamples")]
    pub resamples: usize,
    /// Test examples consistency was measured on (0: not stated).
    #[serde(default)]
    pub consistency_examples: usize,
}

fn default_resamples() -> usize {
    crate::stats::DEFAULT_RESAMPLES
}

impl Default for ReportHeader {
    fn default() -> Self {
        Self {
            model: String::new(),
            data: String::new(),
            split: String::new(),
            test_examples: 0,
            labels: Vec::new(),
            train_labels_available: 0,
            gold: Vec::new(),
            resamples: default_resamples(),
            consistency_examples: 0,
        }
    }
}

/// Seed of every bootstrap in the report: the same predictions always give the same intervals.
const BOOTSTRAP_SEED: u64 = 0x5717_5eed;

impl CompareReport {
    /// Assemble a report from measured rows: intervals and paired tests from their predictions,
    /// prices, the decision tree, the time stamp.
    pub fn new(
        header: ReportHeader,
        mut rows: Vec<StrategyRow>,
        learning_curve: Vec<CurvePoint>,
        plateau: Option<PlateauCheck>,
        prices: &CostConfig,
        decision: &DecisionConfig,
    ) -> Self {
        let gold = &header.gold;
        for (i, row) in rows.iter_mut().enumerate() {
            let m = &row.metrics;
            row.accuracy_ci = Some(stats::wilson((m.accuracy * m.n as f64).round() as usize, m.n, stats::Z95));
            if !row.predicted.is_empty() && row.predicted.len() == gold.len() {
                let seed = BOOTSTRAP_SEED ^ i as u64;
                row.macro_f1_ci = Some(stats::bootstrap_macro_f1(gold, &row.predicted, &header.labels, header.resamples, seed));
            }
        }
        let comparisons = paired_comparisons(&rows, gold, header.resamples);
        let cost = cost::estimate(&rows, prices);
        let forecast = labels::labels_forecast(&learning_curve, &rows, header.train_labels_available, &header.gold, header.resamples);
        let recommendation =
            decide::recommend(&rows, &comparisons, header.train_labels_available, &cost, plateau.as_ref(), forecast.as_ref(), decision);
        Self {
            header,
            rows,
            learning_curve,
            learning_curve_notes: Vec::new(),
            cost,
            recommendation,
            plateau,
            comparisons,
            selections: Vec::new(),
            notes: Vec::new(),
            search: None,
            flexibility: Vec::new(),
            selective: Vec::new(),
            forecast,
            generated_at: crate::clock::now_rfc3339(),
        }
    }

    /// The paired comparison of `a` against `b`, when both kept their predictions.
    pub fn comparison(&self, a: &str, b: &str) -> Option<&PairedComparison> {
        find_comparison(&self.comparisons, a, b)
    }

    /// The prompt strategy with the highest accuracy (the first one on ties).
    pub fn best_prompt(&self) -> Option<&StrategyRow> {
        best_prompt(&self.rows)
    }

    /// The fine-tuned row, if one was measured.
    pub fn tuned(&self) -> Option<&StrategyRow> {
        tuned(&self.rows)
    }
}

/// The prompt row chosen as the best: the highest dev accuracy when the prompts were scored on
/// dev, else (rows made without a dev split) the highest test accuracy. The first one on ties.
pub fn best_prompt(rows: &[StrategyRow]) -> Option<&StrategyRow> {
    let prompts = || rows.iter().filter(|r| r.kind == RowKind::Prompt);
    let on_dev = prompts().all(|r| r.dev_accuracy.is_some());
    let key = |r: &StrategyRow| if on_dev { r.dev_accuracy.unwrap_or(0.0) } else { r.metrics.accuracy };
    prompts().reduce(|best, r| if key(r) > key(best) { r } else { best })
}

/// Whether [`best_prompt`] was chosen on dev (false: on the test split itself).
pub fn best_prompt_chosen_on_dev(rows: &[StrategyRow]) -> bool {
    let mut prompts = rows.iter().filter(|r| r.kind == RowKind::Prompt).peekable();
    prompts.peek().is_some() && prompts.all(|r| r.dev_accuracy.is_some())
}

/// The tuned model against every prompt, then the best prompt against the other prompts, then
/// each tuned + prompt row against the tuned model alone, for rows that kept their test
/// predictions.
fn paired_comparisons(rows: &[StrategyRow], gold: &[usize], resamples: usize) -> Vec<PairedComparison> {
    let kept = |r: &&StrategyRow| !r.predicted.is_empty() && r.predicted.len() == gold.len();
    let mut pairs: Vec<(&StrategyRow, &StrategyRow)> = Vec::new();
    if let Some(t) = tuned(rows).filter(kept) {
        pairs.extend(rows.iter().filter(|r| r.kind == RowKind::Prompt).filter(kept).map(|p| (t, p)));
    }
    if let Some(best) = best_prompt(rows).filter(kept) {
        pairs.extend(rows.iter().filter(|r| r.kind == RowKind::Prompt && r.name != best.name).filter(kept).map(|p| (best, p)));
    }
    if let Some(t) = tuned(rows).filter(kept) {
        pairs.extend(rows.iter().filter(|r| r.kind == RowKind::TunedPrompt).filter(kept).map(|c| (c, t)));
    }
    pairs
        .into_iter()
        .enumerate()
        .map(|(i, (a, b))| {
            PairedComparison::new(&a.name, &b.name, gold, &a.predicted, &b.predicted, resamples, BOOTSTRAP_SEED ^ (0x100 + i as u64))
        })
        .collect()
}

/// The comparison of `a` against `b` in `comparisons`.
pub fn find_comparison<'c>(comparisons: &'c [PairedComparison], a: &str, b: &str) -> Option<&'c PairedComparison> {
    comparisons.iter().find(|c| c.a == a && c.b == b)
}

/// The first fine-tuned row.
pub fn tuned(rows: &[StrategyRow]) -> Option<&StrategyRow> {
    rows.iter().find(|r| r.kind == RowKind::FineTuned)
}

/// Where [`write_report`] put its files.
#[derive(Debug, Clone)]
pub struct ReportPaths {
    /// The machine-readable report.
    pub json: PathBuf,
    /// The self-contained page.
    pub html: PathBuf,
}

/// Write `report.json` (pretty) and `report.html` into `dir` (created if missing), each atomically.
pub fn write_report(report: &CompareReport, dir: &Path) -> Result<ReportPaths> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let paths = ReportPaths { json: dir.join("report.json"), html: dir.join("report.html") };
    let json = serde_json::to_vec_pretty(report).map_err(|e| Error::Data(format!("{}: {e}", paths.json.display())))?;
    write_atomic(&paths.json, &json)?;
    write_atomic(&paths.html, html::render(report).as_bytes())?;
    Ok(paths)
}

/// The comparison table, learning curve, plateau check and decision steps for the terminal.
pub fn render_terminal(report: &CompareReport) -> String {
    table::render(report)
}

/// Formatting shared by the terminal, HTML and tests, so every surface shows the same value.
pub mod format {
    /// A share as a percentage with one decimal: 0.8123 -> "81.2%".
    pub fn percent(share: f64) -> String {
        format!("{:.1}%", share * 100.0)
    }

    /// Thousands separators: 100000 -> "100,000".
    pub fn count(n: u64) -> String {
        let digits = n.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    }

    /// Dollars: whole dollars from $100, cents from $1, three significant digits below.
    pub fn money(dollars: f64) -> String {
        if !dollars.is_finite() {
            return "-".into();
        }
        let sign = if dollars < 0.0 { "-" } else { "" };
        let d = dollars.abs();
        if d >= 100.0 {
            format!("{sign}${}", count(d.round() as u64))
        } else if d >= 1.0 || d == 0.0 {
            format!("{sign}${d:.2}")
        } else {
            // Per-request prices are fractions of a cent; keep three significant digits.
            let decimals = (2 - d.log10().floor() as i32).clamp(2, 10) as usize;
            format!("{sign}${d:.decimals$}")
        }
    }

    /// A request volume, rounded: 775.2 -> "775".
    pub fn volume(requests: f64) -> String {
        if requests.is_finite() && requests >= 0.0 { count(requests.round() as u64) } else { "-".into() }
    }

    /// Seconds as "0 s", "42 s", "3.5 min" or "1.2 h".
    pub fn duration(seconds: f64) -> String {
        match seconds {
            s if !s.is_finite() || s <= 0.0 => "0 s".into(),
            s if s < 120.0 => format!("{s:.0} s"),
            s if s < 7200.0 => format!("{:.1} min", s / 60.0),
            s => format!("{:.1} h", s / 3600.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::format::*;

    #[test]
    fn report_number_formats() {
        assert_eq!((count(0), count(999), count(1000), count(1_234_567)), ("0".into(), "999".into(), "1,000".into(), "1,234,567".into()));
        assert_eq!(
            (money(2700.0), money(20.0), money(0.0012), money(0.027)),
            ("$2,700".into(), "$20.00".into(), "$0.00120".into(), "$0.0270".into())
        );
        assert_eq!((money(-3.5), money(f64::NAN)), ("-$3.50".into(), "-".into()));
        assert_eq!((percent(0.8123), percent(1.0)), ("81.2%".into(), "100.0%".into()));
        assert_eq!((volume(775.19), volume(f64::INFINITY)), ("775".into(), "-".into()));
        assert_eq!(
            (duration(0.0), duration(42.0), duration(210.0), duration(9000.0)),
            ("0 s".into(), "42 s".into(), "3.5 min".into(), "2.5 h".into())
        );
    }
}
