//! The report's labels-needed forecast: the learning curve fitted ([`crate::forecast`]), the
//! accuracy it forecasts at 2×, 5× and 10× today's labels, the label count where the tuned
//! model's band passes the best prompt, and the forecast checked on a point it did not see.

use serde::{Deserialize, Serialize};

use super::{CurvePoint, StrategyRow, best_prompt};
use crate::forecast::{CurveSample, Forecast, ForecastPoint, MAX_EXTRAPOLATION, forecast, forecast_within};

/// Label counts up to which the held-out check fits (the full run's point is what it forecasts).
pub const HELD_OUT_FIT_MAX: usize = 1000;

/// Seed of the forecast's bootstrap.
const FORECAST_SEED: u64 = 0xf0_5eca57;

/// The forecast of the full run's point from the curve's points at ≤ [`HELD_OUT_FIT_MAX`] labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOutCheck {
    /// The full run's labels.
    pub labels: usize,
    /// Its measured test accuracy.
    pub measured: f64,
    /// What the smaller points forecast there.
    pub forecast: ForecastPoint,
    /// The full run's labels over the largest fitted count (past [`MAX_EXTRAPOLATION`]: further
    /// than a user's forecast may reach; the check goes up to twice that).
    #[serde(default)]
    pub reach: f64,
}

impl HeldOutCheck {
    /// " (10.2× the largest fitted count, past the 10× a forecast may reach)" when it is past.
    pub fn reach_note(&self) -> String {
        if self.reach > MAX_EXTRAPOLATION {
            format!(" ({:.1}× the largest fitted count, past the {MAX_EXTRAPOLATION:.0}× a forecast may reach)", self.reach)
        } else {
            String::new()
        }
    }

    /// Whether the measured point lies in the forecast's 95% band.
    pub fn inside95(&self) -> bool {
        self.forecast.band95.lo <= self.measured && self.measured <= self.forecast.band95.hi
    }
}

/// How many labels fine-tuning needs on this data, as far as the curve can say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelsForecast {
    /// The fit and its bands at 2×, 5× and 10× the labels available (within the limit).
    pub forecast: Forecast,
    /// Labelled train examples available.
    pub available: usize,
    /// The best prompt (chosen on dev) and its test accuracy: the line to pass.
    pub reference: String,
    /// Its test accuracy (on the curve's test examples).
    pub reference_accuracy: f64,
    /// Test examples the curve's points and the reference are measured on.
    #[serde(default)]
    pub test_examples: usize,
    /// The forecast at the labels available.
    pub at_available: ForecastPoint,
    /// Fewest labels at which the tuned model's 80% band lies above it (None: not within the limit).
    pub crossover: Option<usize>,
    /// The forecast checked on the full run's point, when the smaller points allow a fit.
    pub held_out: Option<HeldOutCheck>,
    /// Why there is no held-out check, when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_note: Option<String>,
}

fn samples(curve: &[CurvePoint]) -> Vec<CurveSample> {
    curve
        .iter()
        .map(|p| CurveSample {
            labels: p.labels,
            seed_accuracies: if p.seed_accuracies.is_empty() { vec![p.accuracy] } else { p.seed_accuracies.clone() },
        })
        .collect()
}

/// The forecast for a report: None without a best prompt or without enough curve points. The
/// curve's points may be measured on the first `n` test examples only (their `test_examples`);
/// the best prompt's accuracy, the line to pass, is then taken on the same examples (`gold`
/// and its kept predictions), and the bands' test noise is that of `n` examples.
pub fn labels_forecast(
    curve: &[CurvePoint],
    rows: &[StrategyRow],
    available: usize,
    gold: &[usize],
    resamples: usize,
) -> Option<LabelsForecast> {
    let best = best_prompt(rows)?;
    let sample = super::curve_test_sample(curve, gold.len());
    let (test_n, reference_accuracy) = match sample {
        Some(n) if best.predicted.len() >= n => {
            (n, best.predicted[..n].iter().zip(&gold[..n]).filter(|(p, g)| p == g).count() as f64 / n as f64)
        }
        _ => (best.metrics.n.max(gold.len()), best.metrics.accuracy),
    };
    let all = samples(curve);
    let targets = [1, 2, 5, 10].map(|k| k * available.max(1));
    // Today's labels may exceed what the full run drew by a batch's rounding (10,255 available,
    // 10,240 trained on): the 10× limit then reaches 10× today's labels. A run that used far fewer
    // labels than there are (a quick look) keeps the limit at 10× what was measured.
    let largest_measured = all.iter().map(|s| s.labels).max()?;
    let reach = if (available as f64) <= 1.05 * largest_measured as f64 {
        MAX_EXTRAPOLATION * (available as f64 / largest_measured as f64).max(1.0)
    } else {
        MAX_EXTRAPOLATION
    };
    let mut f = forecast_within(&all, test_n, &targets, resamples, FORECAST_SEED, reach)?;
    let at_available = f.points.iter().position(|p| p.labels == available.max(1)).map(|i| f.points.remove(i))?;
    let largest = all.iter().max_by_key(|s| s.labels)?;
    let small: Vec<CurveSample> = all.iter().filter(|s| s.labels <= HELD_OUT_FIT_MAX && s.labels < largest.labels).cloned().collect();
    let fitted_max = small.iter().map(|s| s.labels).max().unwrap_or(0);
    let reach = if fitted_max > 0 { largest.labels as f64 / fitted_max as f64 } else { f64::INFINITY };
    let within = reach.max(MAX_EXTRAPOLATION);
    let check = if reach <= 2.0 * MAX_EXTRAPOLATION {
        forecast_within(&small, test_n, &[largest.labels], resamples, FORECAST_SEED ^ 1, within)
    } else {
        forecast(&small, test_n, &[], resamples, FORECAST_SEED ^ 1)
    };
    let (held_out, held_out_note) = match check {
        Some(h) if !h.points.is_empty() => {
            let measured = largest.seed_accuracies.iter().sum::<f64>() / largest.seed_accuracies.len() as f64;
            (Some(HeldOutCheck { labels: largest.labels, measured, forecast: h.points[0].clone(), reach }), None)
        }
        Some(_) => (
            None,
            Some(format!(
                "the full run's {} labels are {reach:.0}× the largest point at ≤ {HELD_OUT_FIT_MAX} labels, beyond the {:.0}× a check may reach",
                largest.labels,
                2.0 * MAX_EXTRAPOLATION
            )),
        ),
        None => (
            None,
            Some(format!(
                "the curve has {} label count(s) at ≤ {HELD_OUT_FIT_MAX} labels besides the full run; a held-out check needs {}",
                small.iter().map(|s| s.labels).collect::<std::collections::BTreeSet<_>>().len(),
                crate::forecast::MIN_POINTS
            )),
        ),
    };
    Some(LabelsForecast {
        at_available,
        crossover: f.crossover(best.metrics.accuracy),
        forecast: f,
        available,
        reference: best.name.clone(),
        reference_accuracy,
        test_examples: test_n,
        held_out,
        held_out_note,
    })
}
