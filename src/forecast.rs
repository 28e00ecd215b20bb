//! How many labels fine-tuning needs on this data: an inverse power law acc(n) = a − b·n^(−c)
//! (Figueroa et al. 2012) fitted to the learning curve's per-seed points, with bootstrap bands
//! over seeds and test examples (fits from few points are fragile, Johnson et al. 2018, so every
//! forecast carries its band), never extrapolated beyond 10× the largest measured label count.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::stats::Interval;

/// Exponents tried: bounded, so that three points cannot fit a cliff or a flat line.
const C_MIN: f64 = 0.05;
const C_MAX: f64 = 1.5;
const C_STEP: f64 = 0.01;

/// The farthest a forecast reaches: this many times the largest measured label count.
pub const MAX_EXTRAPOLATION: f64 = 10.0;

/// Label counts (distinct, the full run's included) a fit needs.
pub const MIN_POINTS: usize = 3;

/// acc(n) = a − b·n^(−c).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerLaw {
    /// The accuracy approached with unlimited labels (at most 1).
    pub a: f64,
    /// How far below it the curve starts (at least 0).
    pub b: f64,
    /// How fast it closes the gap (in [0.05, 1.5]).
    pub c: f64,
}

impl PowerLaw {
    /// The fitted accuracy at `n` labels.
    pub fn at(&self, n: f64) -> f64 {
        self.a - self.b * n.max(1.0).powf(-self.c)
    }
}

/// One measured point of the learning curve: its label count and the accuracy of each seed.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveSample {
    /// Distinct labels trained on.
    pub labels: usize,
    /// Test accuracy of each seed's run.
    pub seed_accuracies: Vec<f64>,
}

/// Least-squares fit to `(labels, accuracy)` points: for each exponent on a grid, (a, b) by
/// linear least squares under a ≤ 1 and b ≥ 0; the exponent with the least squared error wins.
/// None with fewer than [`MIN_POINTS`] distinct label counts.
pub fn fit(points: &[(f64, f64)]) -> Option<PowerLaw> {
    let mut distinct: Vec<f64> = points.iter().map(|p| p.0).collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() < MIN_POINTS {
        return None;
    }
    let m = points.len() as f64;
    let mut best: Option<(f64, PowerLaw)> = None;
    let steps = ((C_MAX - C_MIN) / C_STEP).round() as usize;
    for i in 0..=steps {
        let c = C_MIN + i as f64 * C_STEP;
        let xs: Vec<f64> = points.iter().map(|p| p.0.max(1.0).powf(-c)).collect();
        let (mx, my) = (xs.iter().sum::<f64>() / m, points.iter().map(|p| p.1).sum::<f64>() / m);
        let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
        let sxy: f64 = xs.iter().zip(points).map(|(x, p)| (x - mx) * (p.1 - my)).sum();
        let mut b = if sxx > 0.0 { -sxy / sxx } else { 0.0 };
        let mut a = my + b * mx;
        if b < 0.0 {
            b = 0.0;
            a = my;
        }
        if a > 1.0 {
            a = 1.0;
            let sx2: f64 = xs.iter().map(|x| x * x).sum();
            b = (xs.iter().zip(points).map(|(x, p)| x * (1.0 - p.1)).sum::<f64>() / sx2.max(1e-300)).max(0.0);
        }
        let law = PowerLaw { a, b, c };
        let sse: f64 = points.iter().map(|p| (law.at(p.0) - p.1).powi(2)).sum();
        if best.is_none_or(|(e, _)| sse < e - 1e-15) {
            best = Some((sse, law));
        }
    }
    best.map(|(_, law)| law)
}

/// The forecast at one label count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastPoint {
    /// Labels.
    pub labels: usize,
    /// The fit's accuracy there.
    pub accuracy: f64,
    /// 80% bootstrap band.
    pub band80: Interval,
    /// 95% bootstrap band.
    pub band95: Interval,
}

/// A fitted curve, its bands at the requested label counts, and where it passes a reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// The fit to the measured points.
    pub fit: PowerLaw,
    /// Bands at the requested label counts (those beyond the extrapolation limit left out).
    pub points: Vec<ForecastPoint>,
    /// Bands on a log grid over the measured range and up to the limit (for the chart).
    pub curve: Vec<ForecastPoint>,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// The largest label count forecast: [`MAX_EXTRAPOLATION`] × the largest measured.
    pub limit: usize,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    crate::metrics::percentile(sorted, q)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Fit `curve` and forecast `targets` with bootstrap bands: each resample draws every point's
/// seeds with replacement, then its test-set sampling noise (binomial on `test_n` examples, by
/// its normal approximation), and refits. None when the curve cannot be fitted.
pub fn forecast(curve: &[CurveSample], test_n: usize, targets: &[usize], resamples: usize, seed: u64) -> Option<Forecast> {
    forecast_within(curve, test_n, targets, resamples, seed, MAX_EXTRAPOLATION)
}

/// [`forecast`] reaching at most `reach` × the largest measured label count: the held-out check
/// forecasts a point it must reach even when that lies a little past the 10× a user's forecast
/// is allowed (the report says so).
pub fn forecast_within(
    curve: &[CurveSample],
    test_n: usize,
    targets: &[usize],
    resamples: usize,
    seed: u64,
    reach: f64,
) -> Option<Forecast> {
    let mean = |s: &CurveSample| s.seed_accuracies.iter().sum::<f64>() / s.seed_accuracies.len().max(1) as f64;
    let used: Vec<&CurveSample> = curve.iter().filter(|s| !s.seed_accuracies.is_empty() && s.labels > 0).collect();
    let points: Vec<(f64, f64)> = used.iter().map(|s| (s.labels as f64, mean(s))).collect();
    let law = fit(&points)?;
    let largest = used.iter().map(|s| s.labels).max()? as f64;
    let smallest = used.iter().map(|s| s.labels).min()? as f64;
    let limit = (largest * reach).round() as usize;
    let grid: Vec<usize> = (0..=60).map(|i| (smallest * (limit as f64 / smallest).powf(i as f64 / 60.0)).round() as usize).collect();
    let wanted: Vec<usize> = targets.iter().copied().filter(|&t| t > 0 && t <= limit).collect();
    let all: Vec<usize> = wanted.iter().chain(&grid).copied().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); all.len()];
    for _ in 0..resamples {
        let sample: Vec<(f64, f64)> = used
            .iter()
            .map(|s| {
                let k = s.seed_accuracies.len();
                let m = (0..k).map(|_| s.seed_accuracies[rng.random_range(0..k)]).sum::<f64>() / k as f64;
                let sd = (m * (1.0 - m) / test_n.max(1) as f64).sqrt();
                (s.labels as f64, (m + sd * normal(&mut rng)).clamp(0.0, 1.0))
            })
            .collect();
        if let Some(f) = fit(&sample) {
            for (d, &n) in draws.iter_mut().zip(&all) {
                d.push(f.at(n as f64));
            }
        }
    }
    let point = |n: usize, d: &mut Vec<f64>| {
        d.sort_by(f64::total_cmp);
        let band = |lo: f64, hi: f64| Interval { lo: percentile(d, lo), hi: percentile(d, hi) };
        ForecastPoint { labels: n, accuracy: law.at(n as f64), band80: band(0.10, 0.90), band95: band(0.025, 0.975) }
    };
    let mut out: Vec<ForecastPoint> = all.iter().zip(draws.iter_mut()).map(|(&n, d)| point(n, d)).collect();
    let curve_points = out.split_off(wanted.len());
    Some(Forecast { fit: law, points: out, curve: curve_points, resamples, limit })
}

impl Forecast {
    /// The fewest labels on the forecast grid at which the tuned model's 80% band lies above
    /// `reference` (the best prompt's test accuracy); None when it does not within the limit.
    pub fn crossover(&self, reference: f64) -> Option<usize> {
        self.curve.iter().find(|p| p.band80.lo > reference).map(|p| p.labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points of a known curve with noise: the fit recovers its parameters and its predictions.
    #[test]
    fn the_fit_recovers_a_known_curve_from_noisy_points() {
        let truth = PowerLaw { a: 0.90, b: 0.60, c: 0.45 };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let ns = [50.0, 100.0, 200.0, 500.0, 1000.0, 4000.0];
        let points: Vec<(f64, f64)> = ns.iter().map(|&n| (n, truth.at(n) + 0.004 * normal(&mut rng))).collect();
        let f = fit(&points).unwrap();
        assert!((f.a - truth.a).abs() < 0.03 && (f.c - truth.c).abs() < 0.15, "{f:?}");
        for n in [300.0, 8000.0, 40_000.0] {
            assert!((f.at(n) - truth.at(n)).abs() < 0.015, "at {n}: {} vs {}", f.at(n), truth.at(n));
        }
        // Noise-free points are fitted exactly, and two label counts are too few.
        let exact: Vec<(f64, f64)> = ns.iter().map(|&n| (n, truth.at(n))).collect();
        let g = fit(&exact).unwrap();
        assert!((g.a - 0.90).abs() < 1e-3 && (g.c - 0.45).abs() < 0.011, "{g:?}");
        assert!(fit(&[(100.0, 0.7), (100.0, 0.72), (1000.0, 0.8)]).is_none());
    }

    /// On synthetic curves (3 seeds at small n, one at large n, binomial test noise), the 80%
    /// and 95% bands around the forecast at 5× the largest n cover the truth at about their rates.
    #[test]
    fn the_bands_cover_the_truth_at_about_their_nominal_rate() {
        let truth = PowerLaw { a: 0.88, b: 0.9, c: 0.5 };
        let test_n = 1000;
        let (mut in80, mut in95) = (0, 0);
        let trials = 150;
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for t in 0..trials {
            let mut acc = |n: f64| {
                let p = truth.at(n);
                ((p + (p * (1.0 - p) / test_n as f64).sqrt() * normal(&mut rng)) * 1000.0).round() / 1000.0
            };
            let curve: Vec<CurveSample> = [(50, 3), (100, 3), (200, 3), (500, 1), (1000, 1), (4000, 1)]
                .iter()
                .map(|&(n, seeds)| CurveSample { labels: n, seed_accuracies: (0..seeds).map(|_| acc(n as f64)).collect() })
                .collect();
            let f = forecast(&curve, test_n, &[20_000], 300, t).unwrap();
            let p = &f.points[0];
            let real = truth.at(20_000.0);
            in80 += usize::from(p.band80.lo <= real && real <= p.band80.hi);
            in95 += usize::from(p.band95.lo <= real && real <= p.band95.hi);
        }
        let (r80, r95) = (in80 as f64 / trials as f64, in95 as f64 / trials as f64);
        assert!((0.65..=0.97).contains(&r80), "80% band covered {r80}");
        assert!((0.85..=1.0).contains(&r95) && r95 >= r80, "95% band covered {r95}");
    }

    #[test]
    fn forecasts_stop_at_ten_times_the_largest_count_and_find_the_crossover() {
        let truth = PowerLaw { a: 0.9, b: 1.0, c: 0.5 };
        let curve: Vec<CurveSample> =
            [100, 300, 1000].iter().map(|&n| CurveSample { labels: n, seed_accuracies: vec![truth.at(n as f64); 3] }).collect();
        let f = forecast(&curve, 100_000, &[2000, 10_000, 20_000], 200, 1).unwrap();
        assert_eq!(f.points.iter().map(|p| p.labels).collect::<Vec<_>>(), [2000, 10_000], "20,000 is beyond 10× 1,000");
        assert_eq!(f.limit, 10_000);
        // truth.at(n) > 0.85 from n = 400: the narrow band passes 0.85 near there, never below 300.
        let cross = f.crossover(0.85).unwrap();
        assert!((300..=700).contains(&cross), "{cross}");
        assert!(f.crossover(0.95).is_none(), "the curve never reaches 95%");
    }
}
