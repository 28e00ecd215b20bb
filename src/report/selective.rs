//! Answering only when sure (selective prediction): a system answers the requests whose top label
//! probability reaches a threshold and passes the rest to a person. The threshold that keeps the
//! answered share at `decision.required_accuracy` is chosen on dev; the report gives the share
//! answered and its accuracy on test.

use serde::{Deserialize, Serialize};

use crate::stats::{Interval, Z95, wilson};

/// One system's selective figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectiveResult {
    /// The report row.
    pub row: String,
    /// The accuracy required of the answered requests.
    pub required: f64,
    /// The least top-label probability answered (None: no threshold reaches the requirement on
    /// dev, so the system answers nothing).
    pub threshold: Option<f32>,
    /// Share of dev answered at that threshold.
    pub dev_coverage: f64,
    /// Dev examples.
    pub dev_n: usize,
    /// Share of test answered, with its 95% Wilson interval.
    pub coverage: f64,
    /// 95% interval of `coverage`.
    pub coverage_ci: Interval,
    /// Accuracy on the answered test requests, with its interval (None when none are answered).
    pub accuracy: Option<f64>,
    /// 95% interval of `accuracy`.
    pub accuracy_ci: Option<Interval>,
    /// Test examples.
    pub n: usize,
    /// Whether each test example is answered (what the paired test of two systems' shares needs).
    #[serde(skip)]
    pub answered: Vec<bool>,
}

/// The lowest threshold on `confidence` whose answered dev examples are at least `required`
/// accurate: the largest coverage that meets the requirement. Ties in confidence are answered
/// together. None when no threshold meets it.
pub fn choose_threshold(confidence: &[f32], correct: &[bool], required: f64) -> Option<f32> {
    let mut order: Vec<usize> = (0..confidence.len()).collect();
    order.sort_by(|&a, &b| confidence[b].total_cmp(&confidence[a]));
    let (mut right, mut best) = (0usize, None);
    let mut k = 0;
    while k < order.len() {
        // Take every example tied at this confidence.
        let c = confidence[order[k]];
        while k < order.len() && confidence[order[k]] == c {
            right += usize::from(correct[order[k]]);
            k += 1;
        }
        if right as f64 / k as f64 >= required {
            best = Some(c);
        }
    }
    best
}

/// The share answered at `threshold` and the answered examples' accuracy.
fn answered(confidence: &[f32], correct: &[bool], threshold: Option<f32>) -> (usize, usize) {
    let Some(t) = threshold else { return (0, 0) };
    confidence.iter().zip(correct).filter(|(c, _)| **c >= t).fold((0, 0), |(n, r), (_, &ok)| (n + 1, r + usize::from(ok)))
}

/// Choose the threshold on dev and measure it on test.
pub fn selective(row: &str, required: f64, dev: (&[f32], &[bool]), test: (&[f32], &[bool])) -> SelectiveResult {
    let threshold = choose_threshold(dev.0, dev.1, required);
    let (dev_answered, _) = answered(dev.0, dev.1, threshold);
    let (n_answered, right) = answered(test.0, test.1, threshold);
    let n = test.0.len();
    SelectiveResult {
        row: row.into(),
        required,
        threshold,
        dev_coverage: dev_answered as f64 / dev.0.len().max(1) as f64,
        dev_n: dev.0.len(),
        coverage: n_answered as f64 / n.max(1) as f64,
        coverage_ci: wilson(n_answered, n, Z95),
        accuracy: (n_answered > 0).then(|| right as f64 / n_answered as f64),
        accuracy_ci: (n_answered > 0).then(|| wilson(right, n_answered, Z95)),
        n,
        answered: test.0.iter().map(|&c| threshold.is_some_and(|t| c >= t)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_the_widest_that_meets_the_requirement_on_dev() {
        // Confidences 0.99 … 0.50; the first 6 right, then alternating.
        let conf: Vec<f32> = (0..10).map(|i| 0.99 - i as f32 * 0.05).collect();
        let correct = [true, true, true, true, true, true, false, true, false, false];
        // 90%: the top 7 are 6/7 = 85.7% — too low; top 8 = 7/8 = 87.5%; top 6 = 100%.
        assert_eq!(choose_threshold(&conf, &correct, 0.9), Some(conf[5]));
        // 85%: the top 8 (7/8) meet it; the top 9 (7/9) do not.
        assert_eq!(choose_threshold(&conf, &correct, 0.85), Some(conf[7]));
        assert_eq!(choose_threshold(&conf, &[false; 10], 0.9), None);
        // Ties answer together: two examples at the same confidence, one wrong.
        assert_eq!(choose_threshold(&[0.9, 0.8, 0.8], &[true, true, false], 0.9), Some(0.9));
    }

    /// A test split on which a lower threshold would do: the figure still uses dev's.
    #[test]
    fn the_threshold_is_chosen_on_dev_not_on_test() {
        let dev_conf = [0.95f32, 0.9, 0.8, 0.7];
        let dev_ok = [true, true, false, false];
        let test_conf = [0.95f32, 0.9, 0.8, 0.7];
        let test_ok = [true, true, true, true];
        let r = selective("tuned", 0.9, (&dev_conf, &dev_ok), (&test_conf, &test_ok));
        assert_eq!(r.threshold, Some(0.9));
        assert_eq!((r.coverage, r.accuracy), (0.5, Some(1.0)), "test answers what dev's threshold lets through, not all four");
        assert_eq!(choose_threshold(&test_conf, &test_ok, 0.9), Some(0.7), "test alone would have chosen 0.7");
        let none = selective("prompt", 0.99, (&dev_conf, &[false; 4]), (&test_conf, &test_ok));
        assert_eq!((none.threshold, none.coverage, none.accuracy), (None, 0.0, None));
    }
}
