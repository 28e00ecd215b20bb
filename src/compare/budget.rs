//! The compare budget: what `compare.max_minutes` leaves the fine-tuning run after the other
//! stages, and how the report names what ended the run.

#[allow(unused_imports)]
use super::*;

/// The fine-tuning run's share of `compare.max_minutes`: what the other stages left.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub(super) struct TrainingShare {
    /// `compare.max_minutes`.
    pub(super) budget_minutes: f64,
    /// Minutes of the stages before training (measured now or when first stored), plus what this
    /// process spent outside them (loading the model and data, building the retrieval index).
    pub(super) before_minutes: f64,
    /// Estimated minutes of the stages after training.
    pub(super) after_minutes: f64,
    /// The training budget given to the run (at most `train.max_minutes`, at least
    /// [`MIN_TRAINING_SHARE`] of the budget).
    pub(super) minutes: f64,
    /// True when the other stages left less than that least share.
    pub(super) floored: bool,
}

/// The least share of `compare.max_minutes` the fine-tuning run gets, even when the other stages
/// already used the budget: the tuned arm is what the report is for.
pub(super) const MIN_TRAINING_SHARE: f64 = 0.1;

/// Minutes kept out of training's share for writing the report after the last stage.
pub(super) const WRITE_MINUTES: f64 = 0.5;

/// Part of `compare.max_minutes` kept back for what the estimates miss: a budget-cut run ends on
/// the evaluation after the step that crosses its share, and a 2-core box drifts by more than
/// the 3% slack of the step fit (without it a default compare overran 90 minutes by 35 s;
/// docs/benchmarks.md).
pub(super) const BUDGET_MARGIN: f64 = 0.03;

/// A scoring stage with the adapter attached, relative to the same prompts on the base model
/// (unmerged rank-8 factors on every projection): the tuned model on test and its consistency
/// sample took 2.2 min against zero-shot's 1.9, tuned + few-shot 113 s against few-shot's 106.
pub(super) const ADAPTER_SCORING_COST: f64 = 1.15;

/// Few-shot's test pass relative to zero-shot's (106 s against 82 s, docs/benchmarks.md).
pub(super) const FEW_SHOT_COST: f64 = 1.3;

/// Retrieval's test pass relative to zero-shot's (603 s against 82 s).
pub(super) const RETRIEVAL_COST: f64 = 7.4;

impl Tuned {
    /// What ended the run, for the report.
    pub(super) fn ending(&self) -> String {
        if self.early_stopped {
            "early stopping (dev accuracy stopped improving)".into()
        } else if self.budget_reached {
            format!("{}, not a plateau", self.budget_name())
        } else if let Some(fit) = self.budget_steps {
            format!("its schedule, fitted to {} ({fit} of {} planned steps)", self.budget_name(), self.planned_steps)
        } else {
            "its step/epoch budget".into()
        }
    }

    /// The time budget the run had, as the report names it.
    pub(super) fn budget_name(&self) -> String {
        match &self.share {
            Some(s) => format!("its {:.1}-minute share of the compare.max_minutes = {} budget", s.minutes, s.budget_minutes),
            None => "the train.max_minutes budget".into(),
        }
    }
}

/// Training's share of `compare.max_minutes` (none without that budget): the budget less the
/// stages already measured (`before`, every stage but the fine-tuning run and those scoring its
/// checkpoint), less `outside_s`, the seconds this process spent outside its stages so far, and
/// less an estimate of the stages after training. The tuned model on test and on the
/// consistency sample costs what zero-shot did (the same prompts, plus a rank-r adapter), and
/// tuned + s what s did on test. `prompt_seconds`: each prompt strategy's wall seconds on dev,
/// test and the consistency sample; `other_after_s`: the estimate of any other stage after
/// training (flexibility on the shifted sets).
pub(super) fn training_share(
    cfg: &Config,
    prompt_seconds: &[(String, [f64; 3])],
    before: &[Stage],
    outside_s: f64,
    other_after_s: f64,
) -> Option<TrainingShare> {
    let c = &cfg.compare;
    if c.max_minutes <= 0.0 {
        return None;
    }
    let seconds_of = |method: &str| prompt_seconds.iter().find(|(m, _)| m == method).map(|(_, s)| *s);
    let tuned_eval = seconds_of("zero-shot").or_else(|| seconds_of("calibrated")).map_or(0.0, |s| s[1] + s[2]);
    // A strategy not scored on test (the search raced it on dev only) is estimated from
    // zero-shot's test pass and its measured cost relative to it.
    let zero_test = seconds_of("zero-shot").map_or(0.0, |s| s[1]);
    let relative = |s: &str| match s {
        "few-shot" => FEW_SHOT_COST,
        "retrieval" => RETRIEVAL_COST,
        _ => 1.0,
    };
    let tuned_prompts: f64 = c.tuned_strategies.iter().map(|s| seconds_of(s).map_or(zero_test * relative(s), |x| x[1])).sum();
    let before_minutes = (before.iter().map(|s| s.seconds).sum::<f64>() + outside_s.max(0.0)) / 60.0;
    let after_minutes = (ADAPTER_SCORING_COST * (tuned_eval + tuned_prompts) + other_after_s) / 60.0;
    let left = c.max_minutes * (1.0 - BUDGET_MARGIN) - WRITE_MINUTES - before_minutes - after_minutes;
    let least = MIN_TRAINING_SHARE * c.max_minutes;
    let mut minutes = left.max(least);
    if cfg.train.max_minutes > 0.0 {
        minutes = minutes.min(cfg.train.max_minutes);
    }
    Some(TrainingShare { budget_minutes: c.max_minutes, before_minutes, after_minutes, minutes, floored: left < least })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_gets_what_the_other_stages_leave_of_the_compare_budget() {
        let text = "[train]\nmax_minutes = 45.0\n[compare]\nmax_minutes = 90.0\ntuned_strategies = [\"few-shot\"]\n";
        let mut cfg = Config::parse(text).unwrap();
        // Dev, test and consistency seconds of each prompt strategy.
        let prompts = [("zero-shot", [32.0, 82.0, 30.0]), ("few-shot", [40.0, 106.0, 64.0]), ("retrieval", [293.0, 603.0, 194.0])]
            .map(|(m, s)| (m.to_string(), s));
        let before = |minutes: f64| vec![Stage::new("stored", minutes * 60.0 - 600.0, false), Stage::new("now", 600.0, true)];
        // 60 min of stages and 1 min outside them; after training, with the adapter's 15%: tuned
        // on test and consistency as zero-shot (82 + 30 s), tuned + few-shot as few-shot on test
        // (106 s): 1.15 × 3.633 min; 0.5 min to write the report; 3% of 90 min kept back.
        let share = training_share(&cfg, &prompts, &before(60.0), 60.0, 0.0).unwrap();
        assert!((share.before_minutes - 61.0).abs() < 1e-9);
        assert!((share.after_minutes - 1.15 * 218.0 / 60.0).abs() < 1e-9);
        assert!((share.minutes - (87.3 - 0.5 - 61.0 - 1.15 * 218.0 / 60.0)).abs() < 1e-9, "{share:?}");
        assert!(!share.floored);
        // Flexibility's estimate counts after training too.
        let with_flex = training_share(&cfg, &prompts, &before(60.0), 60.0, 120.0).unwrap();
        assert!(
            (with_flex.after_minutes - share.after_minutes - 2.0).abs() < 1e-9 && (share.minutes - with_flex.minutes - 2.0).abs() < 1e-9
        );
        // Little spent: train.max_minutes caps the share.
        assert_eq!(training_share(&cfg, &prompts, &before(10.0), 0.0, 0.0).unwrap().minutes, 45.0);
        // The budget already spent: the least share, flagged.
        let over = training_share(&cfg, &prompts, &before(100.0), 0.0, 0.0).unwrap();
        assert!((over.minutes - 9.0).abs() < 1e-9 && over.floored);
        // Retrieval's test time counts once it is a tuned strategy.
        cfg.compare.tuned_strategies.push("retrieval".into());
        assert!((training_share(&cfg, &prompts, &before(60.0), 0.0, 0.0).unwrap().after_minutes - 1.15 * 821.0 / 60.0).abs() < 1e-9);
        // No compare budget, no share: train.max_minutes alone decides.
        cfg.compare.max_minutes = 0.0;
        assert!(training_share(&cfg, &prompts, &before(60.0), 0.0, 0.0).is_none());
        let mut bad = Config::parse(include_str!("../../configs/rotten-tomatoes.toml")).unwrap();
        bad.compare.max_minutes = -1.0;
        let bad = bad.validate().unwrap_err();
        assert!(bad.contains("compare.max_minutes"), "{bad}");
    }
}
