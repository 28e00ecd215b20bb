//! What each strategy costs to serve and to train, priced from `[cost]`: API prices per token, and
//! (when `gpu_hour` is set) self-hosting priced by measured seconds per request.

use serde::{Deserialize, Serialize};

use super::{RowKind, StrategyRow, best_prompt, tuned};
use crate::config::CostConfig;

/// The cost of one strategy under one pricing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyCost {
    /// Strategy name (as in the row).
    pub name: String,
    /// Dollars per request.
    pub per_request: f64,
    /// Dollars per 1,000 requests.
    pub per_1k_requests: f64,
    /// Dollars per month at `monthly_requests`.
    pub monthly: f64,
    /// One-off training dollars (0 for prompts).
    pub training: f64,
    /// Monthly cost plus training: what the first month costs.
    pub first_month: f64,
}

/// All strategies under one pricing, with the best prompt and the tuned model compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostSummary {
    /// One entry per row, in row order.
    pub strategies: Vec<StrategyCost>,
    /// Name of the most accurate prompt strategy.
    pub best_prompt: Option<String>,
    /// Name of the tuned row.
    pub tuned: Option<String>,
    /// Requests after which training has paid for itself; None when tuning is not cheaper per request.
    pub break_even_requests: Option<f64>,
}

/// Serving and training cost of every strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostReport {
    /// `cost.monthly_requests`.
    pub monthly_requests: u64,
    /// Priced per token with the API prices of `[cost]`.
    pub api: CostSummary,
    /// `cost.gpu_hour` (0 when self-hosting is not priced).
    pub gpu_hour: f64,
    /// Priced by GPU time per request; present when `gpu_hour` > 0.
    pub self_hosted: Option<CostSummary>,
}

/// Monthly cost at one volume, for the cost chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostCurvePoint {
    /// Requests per month.
    pub requests: f64,
    /// Monthly cost of the best prompt strategy.
    pub prompt: f64,
    /// First-month cost of the tuned model (training included).
    pub tuned_first_month: f64,
}

/// Price every row with the API prices, and with GPU time when `gpu_hour` > 0.
pub fn estimate(rows: &[StrategyRow], prices: &CostConfig) -> CostReport {
    let api = summarise(rows, prices.monthly_requests, |row| {
        let (input, output) = match row.kind {
            RowKind::Prompt => (prices.base_input_per_1k, prices.base_output_per_1k),
            RowKind::FineTuned | RowKind::TunedPrompt => (prices.tuned_input_per_1k, prices.tuned_output_per_1k),
        };
        let per_request = per_1k_tokens(row.metrics.prompt_tokens_mean) * input + per_1k_tokens(row.output_tokens_per_request) * output;
        (per_request, per_1k_tokens(row.training_tokens as f64) * prices.training_per_1k)
    });
    let self_hosted = (prices.gpu_hour > 0.0).then(|| {
        let per_second = prices.gpu_hour / 3600.0;
        summarise(rows, prices.monthly_requests, |row| {
            let seconds_per_request = row.metrics.latency.mean_ms / 1000.0;
            let training_seconds = if row.kind != RowKind::Prompt { row.time_to_first_result_s } else { 0.0 };
            (per_second * seconds_per_request, per_second * training_seconds)
        })
    });
    CostReport { monthly_requests: prices.monthly_requests, api, gpu_hour: prices.gpu_hour, self_hosted }
}

fn per_1k_tokens(tokens: f64) -> f64 {
    if tokens.is_finite() { tokens.max(0.0) / 1000.0 } else { 0.0 }
}

/// Aggregate per-request and training prices (from `price`) of every row.
fn summarise(rows: &[StrategyRow], monthly_requests: u64, price: impl Fn(&StrategyRow) -> (f64, f64)) -> CostSummary {
    let strategies: Vec<StrategyCost> = rows
        .iter()
        .map(|row| {
            let (per_request, training) = price(row);
            let monthly = per_request * monthly_requests as f64;
            StrategyCost {
                name: row.name.clone(),
                per_request,
                per_1k_requests: per_request * 1000.0,
                monthly,
                training,
                first_month: monthly + training,
            }
        })
        .collect();
    let find = |row: Option<&StrategyRow>| row.and_then(|r| rows.iter().position(|x| std::ptr::eq(x, r)));
    let (best_index, tuned_index) = (find(best_prompt(rows)), find(tuned(rows)));
    let break_even_requests = match (best_index, tuned_index) {
        (Some(b), Some(t)) => break_even(&strategies[b], &strategies[t]),
        _ => None,
    };
    CostSummary {
        best_prompt: best_index.map(|i| strategies[i].name.clone()),
        tuned: tuned_index.map(|i| strategies[i].name.clone()),
        break_even_requests,
        strategies,
    }
}

/// Requests at which the tuned model's training is paid back by its cheaper requests.
fn break_even(prompt: &StrategyCost, tuned: &StrategyCost) -> Option<f64> {
    let saving = prompt.per_request - tuned.per_request;
    (saving > 0.0).then(|| tuned.training / saving)
}

impl CostSummary {
    /// The cost entry of the most accurate prompt strategy.
    pub fn best_prompt_cost(&self) -> Option<&StrategyCost> {
        self.by_name(self.best_prompt.as_deref()?)
    }

    /// The cost entry of the tuned model.
    pub fn tuned_cost(&self) -> Option<&StrategyCost> {
        self.by_name(self.tuned.as_deref()?)
    }

    fn by_name(&self, name: &str) -> Option<&StrategyCost> {
        self.strategies.iter().find(|s| s.name == name)
    }

    /// Monthly cost of the best prompt and first-month cost of the tuned model at each volume;
    /// empty unless both were measured.
    pub fn cost_curve(&self, volumes: &[f64]) -> Vec<CostCurvePoint> {
        let (Some(prompt), Some(tuned)) = (self.best_prompt_cost(), self.tuned_cost()) else { return Vec::new() };
        volumes
            .iter()
            .map(|&requests| CostCurvePoint {
                requests,
                prompt: prompt.per_request * requests,
                tuned_first_month: tuned.per_request * requests + tuned.training,
            })
            .collect()
    }
}
