//! The seed's decision tree, walked with measured values: enough labels? consistency critical?
//! high volume? required accuracy reached? The first question that decides ends the walk.

use serde::{Deserialize, Serialize};

use super::format::{count, money, percent, volume};
use super::selective::SelectiveResult;
use super::{CostReport, PlateauCheck, StrategyRow, best_prompt, find_comparison, tuned};
use crate::config::DecisionConfig;
use crate::stats::PairedComparison;

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "choice", rename_all = "snake_case")]
pub enum Choice {
    /// Keep prompting, with this strategy.
    Prompt {
        /// The prompt strategy to use.
        strategy: String,
    },
    /// Fine-tune (LoRA).
    FineTune,
    /// Not decided yet: the measurements cannot separate the two, and the tuned arm used less
    /// than half of the labels available, so a longer run can still change the answer.
    Undecided,
}

/// One question of the decision tree and the measurement that answered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionStep {
    /// The question, with its threshold.
    pub question: String,
    /// The measured values that answered it.
    pub measured: String,
    /// The answer ("yes", "no", or a short phrase).
    pub answer: String,
    /// Whether this answer ended the walk.
    pub decided: bool,
}

/// The outcome of the decision tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Prompt (which strategy) or fine-tune.
    pub choice: Choice,
    /// One sentence: the choice and the measured reason.
    pub headline: String,
    /// The questions asked, in order; the last one decided.
    pub steps: Vec<DecisionStep>,
}

fn yes_no(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}

/// "+3.2 points [+1.4, +5.2], McNemar p = 0.0009": a paired difference in accuracy points.
pub fn difference_text(c: &PairedComparison) -> String {
    format!(
        "{:+.1} points [{:+.1}, {:+.1}], McNemar p {}{}",
        c.difference * 100.0,
        c.interval.lo * 100.0,
        c.interval.hi * 100.0,
        if c.p_value < 1e-4 { "" } else { "= " },
        p_value_text(c.p_value)
    )
}

/// A p-value with the precision it deserves: 4 decimals, or "< 0.0001".
pub fn p_value_text(p: f64) -> String {
    if p < 1e-4 { "< 0.0001".into() } else { format!("{p:.4}") }
}

/// "83.5% [81.3, 85.4]": accuracy with its 95% interval when known.
pub fn accuracy_text(r: &StrategyRow) -> String {
    match r.accuracy_ci {
        Some(ci) => format!("{} [{:.1}, {:.1}]", percent(r.metrics.accuracy), ci.lo * 100.0, ci.hi * 100.0),
        None => percent(r.metrics.accuracy),
    }
}

/// The stated rule of the required-accuracy question: reached when the 95% interval's lower
/// bound is at least the threshold (the point estimate when no interval is known), so a system
/// is not called good enough on the strength of a lucky sample.
fn reaches(r: &StrategyRow, required: f64) -> bool {
    r.accuracy_ci.map_or(r.metrics.accuracy, |ci| ci.lo) >= required
}

/// Walk the decision tree over the measured rows.
pub fn recommend(
    rows: &[StrategyRow],
    comparisons: &[PairedComparison],
    train_labels: usize,
    cost: &CostReport,
    plateau: Option<&PlateauCheck>,
    forecast: Option<&super::labels::LabelsForecast>,
    cfg: &DecisionConfig,
) -> Recommendation {
    let mut steps = Vec::new();
    let (best, tuned) = match (best_prompt(rows), tuned(rows)) {
        (Some(b), Some(t)) => (b, t),
        (best, tuned) => return one_sided(best, tuned),
    };
    let prompt = || Choice::Prompt { strategy: best.name.clone() };
    let acc = |r: &StrategyRow| percent(r.metrics.accuracy);
    let paired = find_comparison(comparisons, &tuned.name, &best.name);
    let diff = paired.map_or_else(String::new, |c| format!(" ({} − {}: {})", tuned.name, best.name, difference_text(c)));

    if let Some(f) = forecast {
        // The labels question answered on this data: the learning curve's forecast, or the
        // measured run itself when it is already significantly ahead.
        // It decides only when the curve is confidently below the prompt with the labels there
        // are (its 80% band's top under the prompt's accuracy); otherwise the walk goes on.
        let ahead = paired.is_some_and(|c| c.a_better());
        let enough = ahead || f.crossover.is_some_and(|x| x <= train_labels);
        let short = f.at_available.band80.hi < f.reference_accuracy && !ahead;
        // The line to pass is the prompt on the curve's own test examples (a sample of them when
        // compare.curve_test_examples is below the split).
        let line = if f.test_examples > 0 && f.test_examples < best.metrics.n {
            format!("{} on the curve's {} test examples", percent(f.reference_accuracy), count(f.test_examples as u64))
        } else {
            percent(f.reference_accuracy)
        };
        let passes = match f.crossover {
            Some(x) => format!("the tuned model's 80% band passes {} ({line}) at about {} labels", best.name, count(x as u64)),
            None => {
                format!("the tuned model's 80% band does not pass {} ({line}) within {} labels", best.name, count(f.forecast.limit as u64))
            }
        };
        let at = &f.at_available;
        steps.push(DecisionStep {
            question: "Enough labels for fine-tuning to beat the best prompt on this data?".into(),
            measured: format!(
                "{} labelled train examples, where the forecast is {} [80%: {:.1}, {:.1}]; {passes} (inverse power law fitted to the learning curve){}",
                count(train_labels as u64),
                percent(at.accuracy),
                at.band80.lo * 100.0,
                at.band80.hi * 100.0,
                if ahead { format!("; measured with all labels{diff}") } else { String::new() }
            ),
            answer: if enough { "yes".into() } else if short { "no".into() } else { "not clear from the curve".into() },
            decided: short,
        });
        if short {
            let headline =
                format!("Prompt with {}: on this data, {passes}, and {} labels are available.", best.name, count(train_labels as u64));
            return Recommendation { choice: prompt(), headline, steps };
        }
    } else {
        let enough = train_labels >= cfg.min_labels;
        steps.push(DecisionStep {
            question: format!(
                "At least {} labelled examples to fine-tune on? (no learning curve to forecast from)",
                count(cfg.min_labels as u64)
            ),
            measured: format!("{} labelled train examples", count(train_labels as u64)),
            answer: yes_no(enough),
            decided: !enough,
        });
        if !enough {
            let headline = format!(
                "Prompt with {}: {} labelled examples are fewer than the {} needed to fine-tune well ({} accuracy).",
                best.name,
                count(train_labels as u64),
                count(cfg.min_labels as u64),
                acc(best)
            );
            return Recommendation { choice: prompt(), headline, steps };
        }
    }

    let agreement = |r: &StrategyRow| r.consistency.as_ref().map(|c| c.agreement);
    let (tuned_agree, best_agree) = (agreement(tuned), agreement(best));
    let shown = |a: Option<f64>| a.map_or_else(|| "not measured".to_string(), percent);
    let measured = format!("agreement across templates: {} {} vs {} {}", tuned.name, shown(tuned_agree), best.name, shown(best_agree));
    let steadier = matches!((tuned_agree, best_agree), (Some(t), Some(b)) if t > b);
    let by_consistency = cfg.consistency_critical && steadier;
    steps.push(DecisionStep {
        question: "Is consistency critical, and is the tuned model more consistent?".into(),
        measured: if cfg.consistency_critical { measured } else { format!("decision.consistency_critical = false; {measured}") },
        answer: if cfg.consistency_critical { yes_no(steadier) } else { "not critical".into() },
        decided: by_consistency,
    });
    if by_consistency {
        let headline = format!(
            "Fine-tune: consistency is critical and {} agrees with itself on {} of examples across templates vs {} for {}.",
            tuned.name,
            shown(tuned_agree),
            shown(best_agree),
            best.name
        );
        return Recommendation { choice: Choice::FineTune, headline, steps };
    }

    let monthly = cost.monthly_requests;
    let break_even = cost.api.break_even_requests;
    let high_volume = monthly >= cfg.volume_threshold;
    let pays_off = break_even.is_some_and(|b| monthly as f64 >= b);
    // A cheaper model that answers worse is no saving, so volume only decides for one that is as
    // accurate: the paired interval of the difference stays above −margin.
    let as_accurate = paired.map_or(tuned.metrics.accuracy >= best.metrics.accuracy, |c| c.a_as_accurate(cfg.equivalence_margin));
    let by_volume = high_volume && pays_off && as_accurate;
    let costs = match (cost.api.best_prompt_cost(), cost.api.tuned_cost()) {
        (Some(p), Some(t)) => format!("; {}/month prompting vs {}/month tuned", money(p.monthly), money(t.monthly)),
        _ => String::new(),
    };
    steps.push(DecisionStep {
        question: format!(
            "At least {} requests/month, above break-even, with the tuned model as accurate (paired 95% interval above −{:.1} points)?",
            count(cfg.volume_threshold),
            cfg.equivalence_margin * 100.0
        ),
        measured: format!(
            "{} requests/month; break-even {}{costs}; accuracy {} {} vs {} {}{diff}",
            count(monthly),
            break_even.map_or_else(|| "never (tuning is not cheaper per request)".into(), |b| format!("{} requests", volume(b))),
            tuned.name,
            acc(tuned),
            best.name,
            acc(best)
        ),
        answer: yes_no(by_volume),
        decided: by_volume,
    });
    if by_volume {
        let headline = format!(
            "Fine-tune: at {} requests/month it pays back its training after {} requests, at {} accuracy vs {} for {}{diff}.",
            count(monthly),
            break_even.map_or_else(String::new, volume),
            acc(tuned),
            acc(best),
            best.name
        );
        return Recommendation { choice: Choice::FineTune, headline, steps };
    }

    if let Some(p) = plateau {
        steps.push(DecisionStep {
            question: format!("Have prompt improvements stalled (below {:.1} points)?", p.threshold),
            measured: format!("{} vs {}: {:+.1} points", p.last, p.previous, p.improvement_points),
            answer: yes_no(p.plateaued),
            decided: false,
        });
    }

    let required = cfg.required_accuracy;
    let (prompt_reaches, tuned_reaches) = (reaches(best, required), reaches(tuned, required));
    let (choice, answer, headline) = match (prompt_reaches, tuned_reaches) {
        (true, _) => (
            prompt(),
            "prompting reaches it".to_string(),
            format!("Prompt with {}: {} accuracy meets the required {}{diff}.", best.name, accuracy_text(best), percent(required)),
        ),
        (false, true) => (
            Choice::FineTune,
            "only fine-tuning reaches it".into(),
            format!(
                "Fine-tune: {} reaches {} accuracy, the best prompt ({}) only {}; {} required{diff}.",
                tuned.name,
                accuracy_text(tuned),
                best.name,
                accuracy_text(best),
                percent(required)
            ),
        ),
        (false, false) => neither_reaches(best, tuned, paired, required, train_labels),
    };
    steps.push(DecisionStep {
        question: format!(
            "{REQUIRED_QUESTION} {} required: who reaches it on all requests (rule: the 95% interval's lower bound is at least {}; decision.abstain = false)?",
            percent(required),
            percent(required)
        ),
        measured: format!("{} {}, {} {}{diff}", best.name, accuracy_text(best), tuned.name, accuracy_text(tuned)),
        answer,
        decided: true,
    });
    Recommendation { choice, headline, steps }
}

/// How the required-accuracy question starts (the step [`decide_by_coverage`] replaces).
const REQUIRED_QUESTION: &str = "Accuracy of at least";

/// The required-accuracy question for an application that passes unsure requests to a person
/// (`decision.abstain = true`): each system answers the test requests whose confidence reaches
/// the threshold chosen on dev, and the one that answers more of them wins when the paired
/// exact McNemar test on "answered or not" says so (p < 0.05); equal shares keep prompting,
/// which needs no training. Replaces the all-requests step when that one decided the walk;
/// a walk decided earlier is left as it is.
pub fn decide_by_coverage(rec: &mut Recommendation, prompt: &SelectiveResult, tuned: &SelectiveResult) {
    let Some(last) = rec.steps.last() else { return };
    if !last.decided || !last.question.starts_with(REQUIRED_QUESTION) {
        return;
    }
    let required = tuned.required;
    let shown = |r: &SelectiveResult| {
        format!(
            "{} answers {} [{:.1}, {:.1}]{}",
            r.row,
            percent(r.coverage),
            r.coverage_ci.lo * 100.0,
            r.coverage_ci.hi * 100.0,
            r.accuracy.map_or_else(|| " (no dev threshold reaches it)".to_string(), |a| format!(" at {} accuracy", percent(a)))
        )
    };
    let (only_tuned, only_prompt) =
        tuned.answered.iter().zip(&prompt.answered).fold((0, 0), |(b, c), (&t, &p)| (b + usize::from(t && !p), c + usize::from(p && !t)));
    let p_value = crate::stats::mcnemar_exact(only_tuned, only_prompt);
    let paired = !tuned.answered.is_empty() && tuned.answered.len() == prompt.answered.len();
    let measured = format!(
        "{}; {}{}",
        shown(tuned),
        shown(prompt),
        if paired {
            format!("; answered by one only: {only_tuned} against {only_prompt}, McNemar p = {}", p_value_text(p_value))
        } else {
            String::new()
        }
    );
    let share = |r: &SelectiveResult| percent(r.coverage);
    let (choice, answer, headline) = if paired && p_value < 0.05 && tuned.coverage > prompt.coverage {
        (
            Choice::FineTune,
            "fine-tuning answers more".to_string(),
            format!(
                "Fine-tune: answering only when sure, {} answers {} of requests at ≥ {} accuracy, {} only {}.",
                tuned.row,
                share(tuned),
                percent(required),
                prompt.row,
                share(prompt)
            ),
        )
    } else if paired && p_value < 0.05 {
        (
            Choice::Prompt { strategy: prompt.row.clone() },
            "prompting answers more".to_string(),
            format!(
                "Prompt with {}: answering only when sure, it answers {} of requests at ≥ {} accuracy, {} only {}.",
                prompt.row,
                share(prompt),
                percent(required),
                tuned.row,
                share(tuned)
            ),
        )
    } else {
        (
            Choice::Prompt { strategy: prompt.row.clone() },
            "indistinguishable shares".to_string(),
            format!(
                "Prompt with {}: answering only when sure, it answers {} of requests at ≥ {} accuracy and {} {}, indistinguishable; prompting needs no training.",
                prompt.row,
                share(prompt),
                percent(required),
                tuned.row,
                share(tuned)
            ),
        )
    };
    rec.steps.pop();
    rec.steps.push(DecisionStep {
        question: format!(
            "{REQUIRED_QUESTION} {} required, answering only when sure (decision.abstain = true): who answers more requests at it (threshold chosen on dev, shares on test)?",
            percent(required)
        ),
        measured,
        answer,
        decided: true,
    });
    rec.choice = choice;
    rec.headline = headline;
}

/// Neither side reaches the required accuracy: the better one, when the paired test can tell them
/// apart; otherwise they are indistinguishable at this n, and prompting costs nothing to train.
///
/// "Add labelled data" is advice only once the tuned arm has used most of the labels there are:
/// while more than half are unused, the advice is to train on them, and a result the paired test
/// cannot separate (or one where the under-trained tuned arm loses) is no decision yet.
fn neither_reaches(
    best: &StrategyRow,
    tuned: &StrategyRow,
    paired: Option<&PairedComparison>,
    required: f64,
    train_labels: usize,
) -> (Choice, String, String) {
    let prompt = Choice::Prompt { strategy: best.name.clone() };
    let short = format!("Neither reaches the required {} with 95% confidence", percent(required));
    let used = tuned.labelled_examples_used;
    let mostly_unused = used > 0 && used * 2 < train_labels;
    let more_data = if mostly_unused {
        format!("train on all {} labels (the tuned model saw {}) or try a bigger model", count(train_labels as u64), count(used as u64))
    } else {
        "add labelled data or try a bigger model".to_string()
    };
    let undecided = |vs: &str| {
        let headline = format!(
            "Cannot decide yet: {vs}, and the tuned model trained on {} of the {} labels available. \
             Train on all of them (a full `wick compare`, not --quick, or a larger train.max_minutes) before choosing. {short}.",
            count(used as u64),
            count(train_labels as u64)
        );
        (Choice::Undecided, "not yet: most labels are unused".to_string(), headline)
    };
    let Some(c) = paired else {
        // No kept predictions: only the point estimates can speak.
        let (choice, winner) = if tuned.metrics.accuracy > best.metrics.accuracy { (Choice::FineTune, tuned) } else { (prompt, best) };
        let headline = format!("{short}; the best is {} at {}: {more_data}.", winner.name, accuracy_text(winner));
        return (choice, "neither reaches it".into(), headline);
    };
    let vs = format!("{} − {} = {}", tuned.name, best.name, difference_text(c));
    if c.a_better() {
        let headline = format!(
            "Fine-tune: {} ({}) is more accurate than {} ({}): {vs}. {short}: {more_data}.",
            tuned.name,
            accuracy_text(tuned),
            best.name,
            accuracy_text(best)
        );
        return (Choice::FineTune, "neither reaches it; fine-tuning is better".into(), headline);
    }
    if c.a_worse() {
        if mostly_unused {
            return undecided(&format!("{} is ahead of the under-trained {} ({vs})", best.name, tuned.name));
        }
        let headline = format!("Prompt with {}: it is more accurate than {}: {vs}. {short}: {more_data}.", best.name, tuned.name);
        return (prompt, "neither reaches it; prompting is better".into(), headline);
    }
    let resolve = c.examples_to_resolve.map_or_else(
        || "no test set size would separate identical predictions".to_string(),
        |n| format!("about {} test examples would resolve a difference of this size", count(n)),
    );
    if mostly_unused {
        return undecided(&format!("indistinguishable at n = {} ({vs}; {resolve})", count(c.n as u64)));
    }
    let headline = format!(
        "Indistinguishable at n = {}: {vs}; {resolve}. {short}; keep prompting with {} (no training to pay for) or add labelled data.",
        count(c.n as u64),
        best.name
    );
    (prompt, "neither reaches it; indistinguishable".into(), headline)
}

/// When only one side was measured there is nothing to compare: recommend what there is.
fn one_sided(best: Option<&StrategyRow>, tuned: Option<&StrategyRow>) -> Recommendation {
    let question = "Were both prompting and fine-tuning measured?".to_string();
    let (choice, headline, measured) = match (best, tuned) {
        (Some(b), _) => (
            Choice::Prompt { strategy: b.name.clone() },
            format!("Prompt with {} ({} accuracy): no fine-tuned model was measured.", b.name, percent(b.metrics.accuracy)),
            "prompt strategies only".to_string(),
        ),
        (None, Some(t)) => (
            Choice::FineTune,
            format!("Fine-tune ({} accuracy): no prompt strategy was measured.", percent(t.metrics.accuracy)),
            "fine-tuned model only".into(),
        ),
        (None, None) => (
            Choice::Prompt { strategy: "none".into() },
            "Nothing was measured: run the baselines and training first.".into(),
            "no strategies".into(),
        ),
    };
    Recommendation { choice, headline, steps: vec![DecisionStep { question, measured, answer: "no".into(), decided: true }] }
}
