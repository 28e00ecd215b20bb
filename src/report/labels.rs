//! The report's labels-needed forecast: the learning curve fitted ([`crate::forecast`]), the
//! accuracy it forecasts at 2×, 5× and 10× today's labels, the label count where the tuned
//! model's band passes the best prompt, and the forecast checked on a point it did not see.

use serde::{Deserialize, Serialize};

use super::{CurvePoint, StrategyRow, best_prompt};
use crate::forecast::{CurveSample, Forecast, ForecastPoint, forecast};

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
}

impl HeldOutCheck {
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
    /// Its test accuracy.
    pub reference_accuracy: f64,
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

/// The forecast for a report: None without a best prompt or without enough curve points.
pub fn labels_forecast(
    curve: &[CurvePoint],
    rows: &[StrategyRow],
    available: usize,
    test_n: usize,
    resamples: usize,
) -> Option<LabelsForecast> {
    let best = best_prompt(rows)?;
    let all = samples(curve);
    let targets = [1, 2, 5, 10].map(|k| k * available.max(1));
    let mut f = forecast(&all, test_n, &targets, resamples, FORECAST_SEED)?;
    let at_available = f.points.iter().position(|p| p.labels == available.max(1)).map(|i| f.points.remove(i))?;
    let largest = all.iter().max_by_key(|s| s.labels)?;
    let small: Vec<CurveSample> = all.iter().filter(|s| s.labels <= HELD_OUT_FIT_MAX && s.labels < largest.labels).cloned().collect();
    let (held_out, held_out_note) = match forecast(&small, test_n, &[largest.labels], resamples, FORECAST_SEED ^ 1) {
        Some(h) if !h.points.is_empty() => {
            let measured = largest.seed_accuracies.iter().sum::<f64>() / largest.seed_accuracies.len() as f64;
            (Some(HeldOutCheck { labels: largest.labels, measured, forecast: h.points[0].clone() }), None)
        }
        Some(_) => {
            (None, Some(format!("the full run's {} labels are beyond 10× the points at ≤ {HELD_OUT_FIT_MAX} labels", largest.labels)))
        }
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
        reference_accuracy: best.metrics.accuracy,
        held_out,
        held_out_note,
    })
}
