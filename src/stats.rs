//! Uncertainty of every number the decision uses: Wilson intervals for accuracy, seeded percentile
//! bootstraps for macro-F1 and for paired accuracy differences, the exact McNemar test, and the
//! number of examples that would resolve a paired difference of a given size.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

/// The two-sided confidence level of every interval wick reports.
pub const CONFIDENCE: f64 = 0.95;
/// The standard normal quantile of [`CONFIDENCE`] (two-sided): Φ⁻¹(0.975).
pub const Z95: f64 = 1.959_963_984_540_054;
/// Φ⁻¹(0.8): the power the sample-size estimate is computed for.
const Z_POWER80: f64 = 0.841_621_233_572_914_3;
/// Bootstrap resamples of the default report (≥ 1,000, as a percentile interval needs).
pub const DEFAULT_RESAMPLES: usize = 2000;

/// A two-sided confidence interval [lo, hi].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
}

impl Interval {
    /// Whether `x` lies inside (bounds included).
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
}

/// Wilson score interval of a binomial proportion `successes / n` at normal quantile `z`.
/// Unlike the normal approximation it stays inside [0, 1] and behaves at 0 and n successes.
pub fn wilson(successes: usize, n: usize, z: f64) -> Interval {
    if n == 0 {
        return Interval { lo: 0.0, hi: 1.0 };
    }
    let (n, p) = (n as f64, successes as f64 / n as f64);
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Interval { lo: (centre - half).max(0.0), hi: (centre + half).min(1.0) }
}

/// The `q` quantile (0..=1) of sorted values, linearly interpolated (numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    crate::metrics::percentile(sorted, q)
}

/// Percentile interval of a statistic recomputed on `resamples` seeded resamples (with
/// replacement) of `n` example indices.
fn bootstrap(n: usize, resamples: usize, seed: u64, mut statistic: impl FnMut(&[usize]) -> f64) -> Interval {
    if n == 0 || resamples == 0 {
        return Interval { lo: f64::NAN, hi: f64::NAN };
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx = vec![0usize; n];
    let mut values: Vec<f64> = (0..resamples)
        .map(|_| {
            idx.iter_mut().for_each(|i| *i = rng.random_range(0..n));
            statistic(&idx)
        })
        .collect();
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    Interval { lo: quantile(&values, tail), hi: quantile(&values, 1.0 - tail) }
}

/// Seeded percentile-bootstrap interval of macro-F1 over the examples.
pub fn bootstrap_macro_f1(gold: &[usize], predicted: &[usize], labels: &[String], resamples: usize, seed: u64) -> Interval {
    let n = gold.len().min(predicted.len());
    let (mut g, mut p) = (Vec::with_capacity(n), Vec::with_capacity(n));
    bootstrap(n, resamples, seed, |idx| {
        g.clear();
        p.clear();
        g.extend(idx.iter().map(|&i| gold[i]));
        p.extend(idx.iter().map(|&i| predicted[i]));
        Metrics::compute(&g, &p, &[], &[], &[], labels).macro_f1
    })
}

/// Two-sided exact McNemar test: the binomial(b + c, ½) probability of a split of the discordant
/// pairs at least as uneven as (b, c). 1 when there are no discordant pairs.
pub fn mcnemar_exact(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // Sum C(n, i) / 2ⁿ for i ≤ k in log space: 2ⁿ underflows f64 beyond n ≈ 1,074.
    let mut log_c = 0.0f64;
    let mut terms = Vec::with_capacity(k + 1);
    for i in 0..=k {
        if i > 0 {
            log_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        terms.push(log_c - n as f64 * std::f64::consts::LN_2);
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tail = max.exp() * terms.iter().map(|t| (t - max).exp()).sum::<f64>();
    (2.0 * tail).min(1.0)
}

/// Test examples a paired comparison needs to detect an accuracy difference `difference` at
/// two-sided 5% with 80% power, when a share `discordant` of examples is judged differently by the
/// two systems (Connor 1987's McNemar sample size). None when the difference is 0.
pub fn examples_to_resolve(difference: f64, discordant: f64) -> Option<u64> {
    let d = difference.abs();
    if d <= 0.0 || !d.is_finite() {
        return None;
    }
    // The discordant share can never be below the difference it produces.
    let pd = discordant.max(d);
    let root = Z95 * pd.sqrt() + Z_POWER80 * (pd - d * d).max(0.0).sqrt();
    Some((root * root / (d * d)).ceil() as u64)
}

/// System A against system B on the same examples: accuracy difference A − B with its paired
/// bootstrap interval, and the exact McNemar test on the discordant pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedComparison {
    /// System A's name.
    pub a: String,
    /// System B's name.
    pub b: String,
    /// Examples both were scored on.
    pub n: usize,
    /// Examples only A got right.
    pub only_a_correct: usize,
    /// Examples only B got right.
    pub only_b_correct: usize,
    /// Accuracy of A minus accuracy of B.
    pub difference: f64,
    /// 95% paired-bootstrap interval of the difference.
    pub interval: Interval,
    /// Two-sided exact McNemar p-value.
    pub p_value: f64,
    /// About how many test examples would resolve a difference of this size (80% power, 5%
    /// two-sided), from the observed discordance; None when the difference is 0.
    pub examples_to_resolve: Option<u64>,
}

impl PairedComparison {
    /// Compare two prediction lists on the same gold labels.
    pub fn new(a: &str, b: &str, gold: &[usize], pred_a: &[usize], pred_b: &[usize], resamples: usize, seed: u64) -> Self {
        let n = gold.len().min(pred_a.len()).min(pred_b.len());
        // +1: only A right, -1: only B right, 0: both or neither.
        let delta: Vec<i8> = (0..n).map(|i| (pred_a[i] == gold[i]) as i8 - (pred_b[i] == gold[i]) as i8).collect();
        let only_a = delta.iter().filter(|&&d| d > 0).count();
        let only_b = delta.iter().filter(|&&d| d < 0).count();
        let share = |x: i64| if n == 0 { 0.0 } else { x as f64 / n as f64 };
        let difference = share(only_a as i64 - only_b as i64);
        let interval = bootstrap(n, resamples, seed, |idx| share(idx.iter().map(|&i| delta[i] as i64).sum()));
        Self {
            a: a.into(),
            b: b.into(),
            n,
            only_a_correct: only_a,
            only_b_correct: only_b,
            difference,
            interval,
            p_value: mcnemar_exact(only_a, only_b),
            examples_to_resolve: examples_to_resolve(difference, share((only_a + only_b) as i64)),
        }
    }

    /// A is better: the interval of A − B lies above 0.
    pub fn a_better(&self) -> bool {
        self.interval.lo > 0.0
    }

    /// A is worse: the interval of A − B lies below 0.
    pub fn a_worse(&self) -> bool {
        self.interval.hi < 0.0
    }

    /// A is at least as accurate as B within `margin`: the interval's lower bound is above −margin.
    pub fn a_as_accurate(&self, margin: f64) -> bool {
        self.interval.lo > -margin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_the_hand_computed_interval() {
        let i = wilson(83, 100, Z95);
        assert!((i.lo - 0.7445).abs() < 5e-5 && (i.hi - 0.8911).abs() < 5e-5, "{i:?}");
        // At the edges the interval stays inside [0, 1] and is not degenerate.
        let zero = wilson(0, 20, Z95);
        assert_eq!(zero.lo, 0.0);
        assert!((zero.hi - 0.1611).abs() < 5e-5, "{zero:?}");
        assert_eq!(wilson(20, 20, Z95).hi, 1.0);
    }

    #[test]
    fn mcnemar_matches_the_binomial_tail() {
        // 2 · (C(12,0) + C(12,1) + C(12,2)) / 2¹² = 158 / 4096.
        assert!((mcnemar_exact(10, 2) - 0.0386).abs() < 5e-5, "{}", mcnemar_exact(10, 2));
        assert_eq!(mcnemar_exact(10, 2), mcnemar_exact(2, 10));
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        // Large counts stay finite (2ⁿ would underflow): 600 vs 500 discordant pairs.
        let p = mcnemar_exact(600, 500);
        assert!(p > 0.0027 && p < 0.0029, "{p}");
    }

    #[test]
    fn a_seeded_bootstrap_is_reproducible_and_brackets_the_estimate() {
        let gold: Vec<usize> = (0..400).map(|i| i % 2).collect();
        let pred: Vec<usize> = (0..400).map(|i| if i % 7 == 0 { 1 - i % 2 } else { i % 2 }).collect();
        let labels = vec!["a".to_string(), "b".to_string()];
        let one = bootstrap_macro_f1(&gold, &pred, &labels, 1000, 3);
        assert_eq!(one, bootstrap_macro_f1(&gold, &pred, &labels, 1000, 3));
        assert_ne!(one, bootstrap_macro_f1(&gold, &pred, &labels, 1000, 4));
        let f1 = Metrics::compute(&gold, &pred, &[], &[], &[], &labels).macro_f1;
        assert!(one.lo < f1 && f1 < one.hi, "{one:?} vs {f1}");
    }

    #[test]
    fn paired_comparison_counts_discordant_pairs() {
        let gold = vec![0usize; 100];
        // A right on 90, B right on 80; B's correct ones are a subset of A's.
        let a: Vec<usize> = (0..100).map(|i| usize::from(i >= 90)).collect();
        let b: Vec<usize> = (0..100).map(|i| usize::from(i >= 80)).collect();
        let c = PairedComparison::new("a", "b", &gold, &a, &b, 1000, 1);
        assert_eq!((c.only_a_correct, c.only_b_correct), (10, 0));
        assert!((c.difference - 0.10).abs() < 1e-12);
        assert!(c.a_better() && c.interval.contains(0.10), "{c:?}");
        assert!((c.p_value - 2.0 / 1024.0).abs() < 1e-12);
        // Identical systems: difference 0, p 1, nothing to resolve.
        let same = PairedComparison::new("a", "a", &gold, &a, &a, 1000, 1);
        assert_eq!((same.difference, same.p_value, same.examples_to_resolve), (0.0, 1.0, None));
        assert!(!same.a_better() && !same.a_worse() && same.a_as_accurate(0.01));
    }

    #[test]
    fn sample_size_grows_as_the_difference_shrinks() {
        // d = 3.2 points with 10% discordant pairs: Connor's formula gives 764.13, rounded up.
        assert_eq!(examples_to_resolve(0.032, 0.10), Some(765));
        assert!(examples_to_resolve(0.01, 0.10).unwrap() > examples_to_resolve(0.032, 0.10).unwrap());
        assert_eq!(examples_to_resolve(0.0, 0.1), None);
    }
}
