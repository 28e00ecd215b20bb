//! Classification metrics shared by baselines, eval and training: accuracy, macro-F1, per-class
//! scores, confusion matrix, calibration error, latency and prompt length, and consistency of
//! predictions across prompt variants.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};
use serde::{Deserialize, Serialize};

/// Number of equal-width confidence bins of the expected calibration error.
pub const ECE_BINS: usize = 10;

/// Precision, recall and F1 of one class (one-vs-rest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Label name.
    pub label: String,
    /// Correct predictions of this class / predictions of this class (0 when never predicted).
    pub precision: f64,
    /// Correct predictions of this class / gold examples of this class (0 when absent).
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// Gold examples of this class.
    pub support: usize,
}

/// Mean and percentiles of per-example latency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Mean milliseconds per example.
    pub mean_ms: f64,
    /// Median milliseconds per example.
    pub p50_ms: f64,
    /// 95th percentile milliseconds per example.
    pub p95_ms: f64,
}

/// The metrics of one set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Number of examples.
    pub n: usize,
    /// Share of correct predictions.
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1 scores.
    pub macro_f1: f64,
    /// One entry per label, in label order.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[gold][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Expected calibration error over [`ECE_BINS`] bins of the predicted-class probability.
    pub ece: f64,
    /// Wall time per example.
    pub latency: Latency,
    /// Mean prompt length in tokens.
    pub prompt_tokens_mean: f64,
}

impl Metrics {
    /// Compute every metric. `probs` holds one probability vector per example (used for ECE; may
    /// be empty to skip it), `latency_ms` and `prompt_tokens` may be empty when not measured.
    pub fn compute(
        gold: &[usize],
        predicted: &[usize],
        probs: &[Vec<f32>],
        latency_ms: &[f64],
        prompt_tokens: &[usize],
        labels: &[String],
    ) -> Self {
        let n = gold.len().min(predicted.len());
        let k = labels.len();
        let mut confusion = vec![vec![0usize; k]; k];
        for (&g, &p) in gold.iter().zip(predicted) {
            // Out-of-range indices are a caller bug, but counting them would corrupt every metric.
            if g < k && p < k {
                confusion[g][p] += 1;
            }
        }
        let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
        let per_class: Vec<ClassMetrics> = (0..k)
            .map(|c| {
                let tp = confusion[c][c] as f64;
                let predicted_c: usize = (0..k).map(|g| confusion[g][c]).sum();
                let support: usize = confusion[c].iter().sum();
                let precision = ratio(tp, predicted_c as f64);
                let recall = ratio(tp, support as f64);
                let f1 = ratio(2.0 * precision * recall, precision + recall);
                ClassMetrics { label: labels[c].clone(), precision, recall, f1, support }
            })
            .collect();
        let macro_f1 = if k == 0 { 0.0 } else { per_class.iter().map(|c| c.f1).sum::<f64>() / k as f64 };
        let ece = if probs.len() == n { expected_calibration_error(&gold[..n], probs) } else { 0.0 };
        Self {
            n,
            accuracy: ratio(correct as f64, n as f64),
            macro_f1,
            per_class,
            confusion,
            ece,
            latency: latency_stats(latency_ms),
            prompt_tokens_mean: mean(&prompt_tokens.iter().map(|&t| t as f64).collect::<Vec<_>>()),
        }
    }
}

/// a / b, or 0 when b is 0 (scikit-learn's `zero_division=0`).
fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() { 0.0 } else { xs.iter().sum::<f64>() / xs.len() as f64 }
}

/// Expected calibration error: the example-weighted mean, over [`ECE_BINS`] equal-width bins of
/// the predicted-class probability, of |accuracy - mean confidence| in the bin. The predicted
/// class is the argmax of each probability vector.
pub fn expected_calibration_error(gold: &[usize], probs: &[Vec<f32>]) -> f64 {
    let n = gold.len().min(probs.len());
    if n == 0 {
        return 0.0;
    }
    let mut count = [0usize; ECE_BINS];
    let mut conf_sum = [0f64; ECE_BINS];
    let mut correct = [0usize; ECE_BINS];
    for (&g, p) in gold.iter().zip(probs).take(n) {
        let Some((pred, &conf)) = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0))) else { continue };
        let conf = f64::from(conf).clamp(0.0, 1.0);
        // Bins are [0, .1), [.1, .2), ..., [.9, 1]: a confidence of exactly 1 joins the last bin.
        let bin = ((conf * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        count[bin] += 1;
        conf_sum[bin] += conf;
        correct[bin] += usize::from(pred == g);
    }
    (0..ECE_BINS)
        .filter(|&b| count[b] > 0)
        .map(|b| {
            let c = count[b] as f64;
            c / n as f64 * (correct[b] as f64 / c - conf_sum[b] / c).abs()
        })
        .sum()
}

/// Mean, median and 95th percentile (linear interpolation between order statistics, as numpy).
pub fn latency_stats(latency_ms: &[f64]) -> Latency {
    if latency_ms.is_empty() {
        return Latency::default();
    }
    let mut sorted = latency_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    Latency { mean_ms: mean(&sorted), p50_ms: percentile(&sorted, 0.50), p95_ms: percentile(&sorted, 0.95) }
}

/// The q-quantile of sorted values with linear interpolation.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

/// How stable predictions are across prompt variants (templates, or demonstration orders).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consistency {
    /// Name of each variant, in the order of `accuracies`.
    pub variants: Vec<String>,
    /// Share of examples whose prediction is identical under every variant.
    pub agreement: f64,
    /// Accuracy under each variant.
    pub accuracies: Vec<f64>,
    /// Lowest accuracy over variants.
    pub accuracy_min: f64,
    /// Mean accuracy over variants.
    pub accuracy_mean: f64,
    /// Highest accuracy over variants.
    pub accuracy_max: f64,
}

impl Consistency {
    /// From the predictions of the same examples under each variant (`predictions[v][i]`).
    /// Examples beyond the shortest prediction list are ignored.
    pub fn compute(gold: &[usize], predictions: &[Vec<usize>], names: &[String]) -> Self {
        let n = predictions.iter().map(Vec::len).chain([gold.len()]).min().unwrap_or(0);
        let agree = (0..n).filter(|&i| predictions.iter().all(|p| p[i] == predictions[0][i])).count();
        let accuracies: Vec<f64> =
            predictions.iter().map(|p| ratio(p.iter().zip(gold).take(n).filter(|(a, b)| a == b).count() as f64, n as f64)).collect();
        let (min, max) = accuracies.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &a| (lo.min(a), hi.max(a)));
        Self {
            variants: names.to_vec(),
            agreement: ratio(agree as f64, n as f64),
            accuracy_min: if accuracies.is_empty() { 0.0 } else { min },
            accuracy_mean: mean(&accuracies),
            accuracy_max: if accuracies.is_empty() { 0.0 } else { max },
            accuracies,
        }
    }
}

/// One row of the summary table: a name, its metrics and optional template consistency.
pub struct TableRow<'a> {
    /// Row name (strategy, checkpoint, data set...).
    pub name: String,
    /// Metrics of the primary prompt.
    pub metrics: &'a Metrics,
    /// Consistency across prompt variants, when measured.
    pub consistency: Option<&'a Consistency>,
}

/// The summary table: accuracy, macro-F1, ECE, consistency, accuracy range, latency, tokens.
pub fn render_table(rows: &[TableRow]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["", "n", "accuracy", "macro-F1", "ECE", "consistent", "acc min/mean/max", "ms/ex (p50, p95)", "tokens/ex"]);
    for row in rows {
        let m = row.metrics;
        let (agree, range) = match row.consistency {
            Some(c) => (
                format!("{:.3} ({})", c.agreement, c.variants.len()),
                format!("{:.3}/{:.3}/{:.3}", c.accuracy_min, c.accuracy_mean, c.accuracy_max),
            ),
            None => ("-".into(), "-".into()),
        };
        table.add_row(vec![
            Cell::new(&row.name),
            Cell::new(m.n).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.3}", m.accuracy)).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.3}", m.macro_f1)).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.3}", m.ece)).set_alignment(CellAlignment::Right),
            Cell::new(agree).set_alignment(CellAlignment::Right),
            Cell::new(range).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.1} ({:.1}, {:.1})", m.latency.mean_ms, m.latency.p50_ms, m.latency.p95_ms))
                .set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.1}", m.prompt_tokens_mean)).set_alignment(CellAlignment::Right),
        ]);
    }
    table.to_string()
}

/// Per-class precision/recall/F1 and the confusion matrix (rows gold, columns predicted).
pub fn render_detail(m: &Metrics) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    let mut header = vec!["gold \\ predicted".to_string()];
    header.extend(m.per_class.iter().map(|c| c.label.clone()));
    header.extend(["precision", "recall", "F1", "support"].map(String::from));
    table.set_header(header);
    for (c, row) in m.per_class.iter().zip(&m.confusion) {
        let mut cells = vec![Cell::new(&c.label)];
        cells.extend(row.iter().map(|v| Cell::new(v).set_alignment(CellAlignment::Right)));
        for v in [c.precision, c.recall, c.f1] {
            cells.push(Cell::new(format!("{v:.3}")).set_alignment(CellAlignment::Right));
        }
        cells.push(Cell::new(c.support).set_alignment(CellAlignment::Right));
        table.add_row(cells);
    }
    table.to_string()
}
