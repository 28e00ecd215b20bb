//! Racing (successive halving with a paired rule): every candidate is scored on a first slice of
//! the dev sample, those the leader beats significantly are dropped, the slice grows, and the
//! full dev sample chooses among the survivors. Only dev is ever seen here.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::stats::mcnemar_exact;

/// How a race drops candidates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DropRule {
    /// A candidate is dropped when the leader is ahead on the slice's paired examples with a
    /// one-sided exact sign test (McNemar on the discordant pairs) p below this.
    pub alpha: f64,
    /// At most this many candidates go on to the next slice (the budget's guard): the best by
    /// slice accuracy, the leader always among them.
    pub keep: usize,
}

impl Default for DropRule {
    fn default() -> Self {
        Self { alpha: 0.05, keep: 6 }
    }
}

impl DropRule {
    /// Whether a candidate with `behind` examples the leader got right and it got wrong, and
    /// `ahead` the other way round, is dropped.
    pub fn drops(&self, behind: usize, ahead: usize) -> bool {
        behind > ahead && one_sided_p(behind, ahead) < self.alpha
    }
}

/// P(X ≥ behind) for X ~ Binomial(behind + ahead, ½), from the two-sided exact McNemar p.
pub fn one_sided_p(behind: usize, ahead: usize) -> f64 {
    if behind <= ahead {
        return 1.0;
    }
    mcnemar_exact(behind, ahead) / 2.0
}

/// The slice sizes of a race on `n` dev examples: a fifth of them (at least 25), doubling, and
/// `n` itself last.
pub fn slices(n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut m = (n / 5).max(25);
    while m < n {
        out.push(m);
        m *= 2;
    }
    out.push(n);
    out
}

/// Why a candidate left a race.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dropped {
    /// Significantly behind the leader (the paired rule).
    Behind,
    /// Beyond [`DropRule::keep`] (the budget's guard).
    Budget,
}

/// What a race measured.
#[derive(Debug, Clone)]
pub struct RaceOutcome {
    /// Per candidate: right (true) or wrong on each dev example it was scored on, in dev order.
    pub correct: Vec<Vec<bool>>,
    /// Per candidate: why and at which slice size it was dropped (None: it ran to the end).
    pub dropped: Vec<Option<(Dropped, usize)>>,
    /// The candidate with the highest accuracy on the last slice (the first one on ties).
    pub winner: usize,
    /// Candidate-examples scored (what the race cost).
    pub evaluations: usize,
}

/// Accuracy of the first `m` flags.
fn accuracy(correct: &[bool], m: usize) -> f64 {
    correct[..m].iter().filter(|&&c| c).count() as f64 / m.max(1) as f64
}

/// Run a race of `n` candidates over `slices` (increasing dev prefix sizes). `score(c, range)`
/// scores candidate `c` on the dev examples in `range` and says which it got right. Candidate 0
/// is the incumbent: it is never dropped (a challenger must beat it on the whole sample) and it
/// wins ties.
pub fn race<F>(n: usize, slices: &[usize], rule: DropRule, mut score: F) -> Result<RaceOutcome>
where
    F: FnMut(usize, Range<usize>) -> Result<Vec<bool>>,
{
    let mut correct: Vec<Vec<bool>> = vec![Vec::new(); n];
    let mut dropped: Vec<Option<(Dropped, usize)>> = vec![None; n];
    let mut evaluations = 0;
    let mut winner = 0;
    for (round, &m) in slices.iter().enumerate() {
        let alive: Vec<usize> = (0..n).filter(|&c| dropped[c].is_none()).collect();
        for &c in &alive {
            let have = correct[c].len();
            if have < m {
                let got = score(c, have..m)?;
                evaluations += got.len();
                correct[c].extend(got);
            }
        }
        let m = alive.iter().map(|&c| correct[c].len()).min().unwrap_or(0).min(m);
        let acc = |c: usize| accuracy(&correct[c], m);
        winner = alive.iter().copied().reduce(|best, c| if acc(c) > acc(best) { c } else { best }).unwrap_or(0);
        if round + 1 == slices.len() {
            break;
        }
        let mut survivors = Vec::new();
        for &c in &alive {
            if c == winner || c == 0 {
                survivors.push(c);
                continue;
            }
            let behind = (0..m).filter(|&i| correct[winner][i] && !correct[c][i]).count();
            let ahead = (0..m).filter(|&i| !correct[winner][i] && correct[c][i]).count();
            if rule.drops(behind, ahead) {
                dropped[c] = Some((Dropped::Behind, m));
            } else {
                survivors.push(c);
            }
        }
        // Stable: equal accuracies keep their candidate order.
        let kept = |c: usize| c == winner || c == 0;
        survivors.sort_by(|&a, &b| kept(b).cmp(&kept(a)).then(acc(b).total_cmp(&acc(a))));
        for &c in survivors.iter().skip(rule.keep.max(1)).filter(|&&c| !kept(c)) {
            dropped[c] = Some((Dropped::Budget, m));
        }
    }
    Ok(RaceOutcome { correct, dropped, winner, evaluations })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn slices_grow_to_the_whole_sample() {
        assert_eq!(slices(500), [100, 200, 400, 500]);
        assert_eq!(slices(100), [25, 50, 100]);
        assert_eq!(slices(20), [20]);
    }

    #[test]
    fn the_rule_drops_at_its_boundary() {
        // 14 of 18 discordant pairs to the leader: one-sided p = 0.0154; 12 of 18: 0.119.
        let rule = DropRule { alpha: 0.05, keep: 10 };
        assert!((one_sided_p(14, 4) - 0.015_442).abs() < 1e-5);
        assert!(rule.drops(14, 4));
        assert!(!rule.drops(12, 6));
        // The boundary itself: 13 of 18 gives p = 0.0481 (dropped), at alpha 0.048 kept.
        assert!(rule.drops(13, 5));
        assert!(!DropRule { alpha: 0.048, keep: 10 }.drops(13, 5));
        assert!(!rule.drops(5, 5) && !rule.drops(0, 0) && !rule.drops(3, 9));
    }

    /// Candidates right with known probabilities on 500 examples: the best one (0.80) must win
    /// against near rivals (0.77, 0.75) and far ones, over many seeded races.
    #[test]
    fn racing_keeps_the_true_best() {
        let truth = [0.70, 0.75, 0.60, 0.80, 0.77, 0.50, 0.65, 0.72];
        let mut won = 0;
        let mut saved = 0;
        for seed in 0..40 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            // A shared difficulty per example makes candidates correlated, as prompts are.
            let easy: Vec<f64> = (0..500).map(|_| rng.random::<f64>()).collect();
            let flags: Vec<Vec<bool>> = truth
                .iter()
                .map(|&p| easy.iter().map(|&e| if rng.random::<f64>() < 0.7 { e < p } else { rng.random::<f64>() < p }).collect())
                .collect();
            let out = race(truth.len(), &slices(500), DropRule::default(), |c, r| Ok(flags[c][r].to_vec())).unwrap();
            won += usize::from(out.winner == 3);
            saved += truth.len() * 500 - out.evaluations;
            assert!(out.dropped[3].is_none() || out.winner != 3);
            // Far-behind candidates leave at the first slice.
            assert_eq!(out.dropped[5], Some((Dropped::Behind, 100)), "seed {seed}");
        }
        assert!(won >= 30, "the best candidate won {won} of 40 races");
        assert!(saved > 40 * 1000, "racing saved only {saved} evaluations");
    }

    #[test]
    fn the_incumbent_wins_ties_and_the_budget_guard_keeps_the_leader() {
        let flags = [vec![true; 10], vec![true; 10], vec![true; 10]];
        let out = race(3, &[5, 10], DropRule { alpha: 0.05, keep: 1 }, |c, r| Ok(flags[c][r].to_vec())).unwrap();
        assert_eq!(out.winner, 0);
        assert_eq!(out.dropped, [None, Some((Dropped::Budget, 5)), Some((Dropped::Budget, 5))]);
        assert_eq!(out.evaluations, 15 + 5);
    }

    /// An incumbent behind on the first slice is neither dropped nor cut: a challenger ahead
    /// early but only tied on the whole sample does not replace it.
    #[test]
    fn the_incumbent_stays_to_the_end() {
        let mut incumbent = vec![false; 20];
        incumbent.extend(vec![true; 80]);
        let mut challenger = vec![true; 20];
        challenger.extend((0..80).map(|i| i >= 20));
        let other = vec![true; 20].into_iter().chain(vec![false; 80]).collect::<Vec<_>>();
        let flags = [incumbent, challenger, other];
        let out = race(3, &[20, 100], DropRule { alpha: 0.05, keep: 1 }, |c, r| Ok(flags[c][r].to_vec())).unwrap();
        assert_eq!(out.dropped[0], None);
        assert_eq!(out.winner, 0, "80 right each on the whole sample: the incumbent keeps its place");
    }
}
