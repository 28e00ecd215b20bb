//! The decision report: cost model, decision tree, run history, report.json/report.html, and a
//! headless-Chromium render of the page.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wick::config::{CostConfig, DecisionConfig};
use wick::metrics::{Consistency, Metrics};
use wick::report::format::{money, percent};
use wick::report::{self, Choice, CompareReport, CurvePoint, ReportHeader, RowKind, StrategyRow};
use wick::runs::{self, NewRun};

/// Metrics of a 2-label test split with the given confusion matrix `[[nn, np], [pn, pp]]`.
fn metrics(confusion: [[usize; 2]; 2], latency_ms: f64, prompt_tokens: usize) -> Metrics {
    let (mut gold, mut pred) = (Vec::new(), Vec::new());
    for (g, row) in confusion.iter().enumerate() {
        for (p, &n) in row.iter().enumerate() {
            gold.extend(std::iter::repeat_n(g, n));
            pred.extend(std::iter::repeat_n(p, n));
        }
    }
    let labels = ["negative".to_string(), "positive".to_string()];
    Metrics::compute(&gold, &pred, &[], &vec![latency_ms; gold.len()], &vec![prompt_tokens; gold.len()], &labels)
}

fn consistency(agreement: f64, min: f64, max: f64) -> Consistency {
    Consistency {
        variants: vec!["main".into(), "terse".into(), "question".into()],
        agreement,
        accuracies: vec![max, min, (min + max) / 2.0],
        accuracy_min: min,
        accuracy_mean: (min + max) / 2.0,
        accuracy_max: max,
    }
}

fn prompt_row(name: &str, correct: usize, prompt_tokens: usize) -> StrategyRow {
    // 200 balanced test examples; `correct` of them right, errors split evenly.
    let wrong = 200 - correct;
    let m = metrics([[100 - wrong / 2, wrong / 2], [wrong - wrong / 2, 100 - (wrong - wrong / 2)]], 40.0, prompt_tokens);
    StrategyRow {
        name: name.into(),
        kind: RowKind::Prompt,
        metrics: m,
        consistency: Some(consistency(0.75, correct as f64 / 200.0 - 0.06, correct as f64 / 200.0 + 0.01)),
        labelled_examples_used: 8,
        time_to_first_result_s: 0.0,
        retrain_time_s: 0.0,
        output_tokens_per_request: 1.0,
        training_tokens: 0,
        dev_accuracy: None,
        predicted: Vec::new(),
        accuracy_ci: None,
        macro_f1_ci: None,
    }
}

fn tuned_row(correct: usize, agreement: f64) -> StrategyRow {
    let wrong = 200 - correct;
    StrategyRow {
        name: "fine-tuned (LoRA)".into(),
        kind: RowKind::FineTuned,
        metrics: metrics([[100 - wrong / 2, wrong / 2], [wrong - wrong / 2, 100 - (wrong - wrong / 2)]], 25.0, 60),
        consistency: Some(consistency(agreement, correct as f64 / 200.0 - 0.01, correct as f64 / 200.0 + 0.005)),
        labelled_examples_used: 8530,
        time_to_first_result_s: 1834.0,
        retrain_time_s: 1834.0,
        output_tokens_per_request: 1.0,
        training_tokens: 8530 * 60,
        dev_accuracy: None,
        predicted: Vec::new(),
        accuracy_ci: None,
        macro_f1_ci: None,
    }
}

/// A realistic compare run: 4 prompt strategies and the tuned model on 200 test examples.
fn realistic_rows() -> Vec<StrategyRow> {
    vec![
        prompt_row("zero-shot", 142, 70),
        prompt_row("few-shot", 158, 420),
        prompt_row("calibrated", 151, 420),
        prompt_row("retrieval", 163, 460),
        tuned_row(177, 0.96),
    ]
}

fn header(train_labels: usize) -> ReportHeader {
    ReportHeader {
        model: "SmolLM2-135M-Instruct.Q4_1.gguf".into(),
        data: "rotten-tomatoes <reviews & \"quotes\">".into(),
        split: "test".into(),
        test_examples: 200,
        labels: vec!["negative".into(), "positive".into()],
        train_labels_available: train_labels,
        ..ReportHeader::default()
    }
}

fn curve() -> Vec<CurvePoint> {
    vec![
        CurvePoint {
            labels: 100,
            accuracy: 0.705,
            macro_f1: 0.7,
            train_time_s: 31.0,
            seed_accuracies: vec![0.69, 0.705, 0.72],
            test_examples: 0,
        },
        CurvePoint { labels: 1000, accuracy: 0.82, macro_f1: 0.819, train_time_s: 240.0, seed_accuracies: vec![], test_examples: 0 },
        CurvePoint { labels: 8530, accuracy: 0.885, macro_f1: 0.884, train_time_s: 1834.0, seed_accuracies: vec![], test_examples: 0 },
    ]
}

fn build(rows: Vec<StrategyRow>, train_labels: usize, prices: &CostConfig, decision: &DecisionConfig) -> CompareReport {
    CompareReport::new(header(train_labels), rows, curve(), None, prices, decision)
}

// ---------- cost ----------

/// The seed's worked example: 500+200 tokens prompting vs 50+50 tuned at 100K requests/month.
#[test]
fn cost_reproduces_the_seeds_worked_example() {
    let mut prompt = prompt_row("few-shot", 170, 500);
    prompt.output_tokens_per_request = 200.0;
    let mut tuned = tuned_row(180, 0.9);
    tuned.metrics.prompt_tokens_mean = 50.0;
    tuned.output_tokens_per_request = 50.0;
    tuned.training_tokens = 2_500_000;
    let cost = report::cost::estimate(&[prompt, tuned], &CostConfig::default());
    let (p, t) = (cost.api.best_prompt_cost().unwrap(), cost.api.tuned_cost().unwrap());
    assert!((p.monthly - 2700.0).abs() < 1e-6, "{}", p.monthly);
    assert!((t.monthly - 120.0).abs() < 1e-6, "{}", t.monthly);
    assert!((t.training - 20.0).abs() < 1e-9, "{}", t.training);
    assert!((t.first_month - 140.0).abs() < 1e-6, "{}", t.first_month);
    assert!((p.per_1k_requests - 27.0).abs() < 1e-9);
    let be = cost.api.break_even_requests.unwrap();
    assert!((be - 775.0).abs() <= 1.0, "break-even {be}");
    assert_eq!((money(p.monthly), money(t.monthly), money(t.training)), ("$2,700".into(), "$120".into(), "$20.00".into()));
    assert!(cost.self_hosted.is_none(), "gpu_hour = 0 means no self-hosted pricing");
    // The chart's curve crosses at break-even: prompting is dearer after it, cheaper before.
    let c = cost.api.cost_curve(&[100.0, be, 10_000.0]);
    assert!(c[0].prompt < c[0].tuned_first_month && c[2].prompt > c[2].tuned_first_month);
    assert!((c[1].prompt - c[1].tuned_first_month).abs() < 1e-9);
}

#[test]
fn break_even_is_none_when_tuning_costs_more_per_request() {
    let prompt = prompt_row("zero-shot", 150, 40);
    let mut tuned = tuned_row(180, 0.9);
    tuned.metrics.prompt_tokens_mean = 4000.0;
    let cost = report::cost::estimate(&[prompt.clone(), tuned.clone()], &CostConfig::default());
    assert_eq!(cost.api.break_even_requests, None);
    let r = build(vec![prompt, tuned], 8530, &CostConfig::default(), &DecisionConfig::default());
    assert!(r.recommendation.steps[2].measured.contains("break-even never"), "{:#?}", r.recommendation.steps[2]);
    assert!(!r.recommendation.steps[2].decided);
    assert!(report::html::render(&r).contains("no break-even: fine-tuning costs more per request"));
    assert!(report::render_terminal(&r).contains("never"));
}

#[test]
fn self_hosted_cost_uses_gpu_seconds() {
    // $3.60/h = $0.001/s; prompt 40 ms -> $0.00004/request, tuned 25 ms, training 1834 s.
    let prices = CostConfig { gpu_hour: 3.6, ..CostConfig::default() };
    let cost = report::cost::estimate(&[prompt_row("few-shot", 160, 400), tuned_row(180, 0.9)], &prices);
    let hosted = cost.self_hosted.expect("gpu_hour > 0 prices self-hosting");
    let (p, t) = (hosted.best_prompt_cost().unwrap(), hosted.tuned_cost().unwrap());
    assert!((p.per_request - 0.00004).abs() < 1e-12, "{}", p.per_request);
    assert!((p.monthly - 4.0).abs() < 1e-9, "{}", p.monthly);
    assert!((t.monthly - 2.5).abs() < 1e-9, "{}", t.monthly);
    assert!((t.training - 1.834).abs() < 1e-9, "{}", t.training);
    let be = hosted.break_even_requests.unwrap();
    assert!((be - 1.834 / 0.000015).abs() < 1e-3, "{be}");
}

// ---------- decision tree ----------

fn decided_step(r: &report::Recommendation) -> usize {
    let decided: Vec<usize> = r.steps.iter().enumerate().filter(|(_, s)| s.decided).map(|(i, _)| i).collect();
    assert_eq!(decided.len(), 1, "exactly one step decides: {:#?}", r.steps);
    assert_eq!(decided[0], r.steps.len() - 1, "the deciding step is the last");
    decided[0]
}

#[test]
fn too_few_labels_means_prompting() {
    let r = build(realistic_rows(), 120, &CostConfig::default(), &DecisionConfig::default()).recommendation;
    assert_eq!(r.choice, Choice::Prompt { strategy: "retrieval".into() });
    assert_eq!(decided_step(&r), 0);
    assert!(r.steps[0].measured.contains("120 labelled train examples"), "{}", r.steps[0].measured);
    // The curve forecasts about 71% at 120 labels, well under the prompt: the labels question is
    // answered on this data, not by a fixed threshold.
    assert_eq!(r.steps[0].question, "Enough labels for fine-tuning to beat the best prompt on this data?");
    assert!(r.headline.contains("120 labels are available"), "{}", r.headline);
    // Without a learning curve, the fixed threshold is the fallback.
    let r = CompareReport::new(header(120), realistic_rows(), Vec::new(), None, &CostConfig::default(), &DecisionConfig::default())
        .recommendation;
    assert_eq!(decided_step(&r), 0);
    assert!(r.headline.contains("500"), "{}", r.headline);
}

#[test]
fn critical_consistency_picks_the_steadier_model() {
    let decision = DecisionConfig { consistency_critical: true, ..DecisionConfig::default() };
    let quiet = CostConfig { monthly_requests: 100, ..CostConfig::default() };
    let r = build(realistic_rows(), 8530, &quiet, &decision).recommendation;
    assert_eq!(r.choice, Choice::FineTune);
    assert_eq!(decided_step(&r), 1);
    assert!(r.steps[1].measured.contains("96.0%") && r.steps[1].measured.contains("75.0%"), "{}", r.steps[1].measured);

    // A tuned model that agrees with itself less often does not win on consistency.
    let mut rows = realistic_rows();
    rows[4] = tuned_row(177, 0.5);
    let r = build(rows, 8530, &quiet, &decision).recommendation;
    assert!(!r.steps[1].decided && r.steps[1].answer == "no", "{:#?}", r.steps);
}

#[test]
fn high_volume_above_break_even_means_fine_tuning() {
    let r = build(realistic_rows(), 8530, &CostConfig::default(), &DecisionConfig::default()).recommendation;
    assert_eq!(r.choice, Choice::FineTune);
    assert_eq!(decided_step(&r), 2);
    assert!(r.steps[2].measured.contains("100,000 requests/month"), "{}", r.steps[2].measured);

    // Below the volume threshold the volume question does not decide.
    let quiet = CostConfig { monthly_requests: 9_999, ..CostConfig::default() };
    let r = build(realistic_rows(), 8530, &quiet, &DecisionConfig::default()).recommendation;
    assert!(!r.steps[2].decided);

    // Nor does it for a cheaper but less accurate tuned model.
    let mut rows = realistic_rows();
    rows[4] = tuned_row(150, 0.9);
    let r = build(rows, 8530, &CostConfig::default(), &DecisionConfig::default()).recommendation;
    assert!(!r.steps[2].decided, "{:#?}", r.steps);
}

#[test]
fn required_accuracy_reached_by_prompting_means_prompting() {
    let quiet = CostConfig { monthly_requests: 1_000, ..CostConfig::default() };
    // The rule: reached when the 95% interval's lower bound is at least the threshold; retrieval's
    // 81.5% of 200 has a Wilson lower bound of 75.5%.
    let decision = DecisionConfig { required_accuracy: 0.75, ..DecisionConfig::default() };
    let r = build(realistic_rows(), 8530, &quiet, &decision).recommendation;
    assert_eq!(r.choice, Choice::Prompt { strategy: "retrieval".into() });
    assert_eq!(decided_step(&r), 3);
    assert_eq!(r.steps[3].answer, "prompting reaches it");
}

#[test]
fn prompt_plateau_is_reported_before_the_accuracy_question() {
    let quiet = CostConfig { monthly_requests: 1_000, ..CostConfig::default() };
    let plateau = runs_plateau(0.80, 0.81);
    let r = CompareReport::new(header(8530), realistic_rows(), curve(), Some(plateau), &quiet, &DecisionConfig::default());
    let steps = &r.recommendation.steps;
    assert_eq!(steps.len(), 5, "{steps:#?}");
    assert!(steps[3].question.contains("stalled") && steps[3].answer == "yes" && !steps[3].decided, "{:#?}", steps[3]);
    assert!(steps[3].measured.contains("+1.0 points"), "{}", steps[3].measured);
    assert!(steps[4].decided);
}

/// The plateau check of two prompt versions with these best accuracies, via the run history.
fn runs_plateau(previous: f64, last: f64) -> report::PlateauCheck {
    let dir = tempfile::tempdir().unwrap();
    runs::append(dir.path(), run("baseline", "few-shot", "dev", previous)).unwrap();
    runs::append(dir.path(), NewRun { config_hash: "def456".into(), ..run("baseline", "few-shot", "dev", last) }).unwrap();
    runs::plateau(&runs::read_all(dir.path()).unwrap(), DecisionConfig::default().plateau_points).unwrap()
}

#[test]
fn required_accuracy_reached_only_by_tuning_means_fine_tuning() {
    let quiet = CostConfig { monthly_requests: 1_000, ..CostConfig::default() };
    // Tuned 88.5% of 200: lower bound 83.3%; retrieval 81.5%: 75.5%.
    let decision = DecisionConfig { required_accuracy: 0.82, ..DecisionConfig::default() };
    let r = build(realistic_rows(), 8530, &quiet, &decision).recommendation;
    assert_eq!(r.choice, Choice::FineTune);
    assert_eq!(r.steps[decided_step(&r)].answer, "only fine-tuning reaches it");
    assert!(r.headline.contains("88.5%") && r.headline.contains("81.5%"), "{}", r.headline);
}

#[test]
fn required_accuracy_reached_by_neither_says_so() {
    let quiet = CostConfig { monthly_requests: 1_000, ..CostConfig::default() };
    let r = build(realistic_rows(), 8530, &quiet, &DecisionConfig { required_accuracy: 0.95, ..DecisionConfig::default() });
    let rec = &r.recommendation;
    assert_eq!(rec.choice, Choice::FineTune, "the tuned model is the more accurate one");
    assert_eq!(rec.steps[decided_step(rec)].answer, "neither reaches it");
    assert!(rec.headline.contains("Neither reaches the required 95.0%"), "{}", rec.headline);
    assert!(rec.headline.contains("more") || rec.headline.contains("bigger"), "{}", rec.headline);

    // With a weaker tuned model the higher of the two is the prompt strategy.
    let mut rows = realistic_rows();
    rows[4] = tuned_row(120, 0.9);
    let rec = build(rows, 8530, &quiet, &DecisionConfig { required_accuracy: 0.95, ..DecisionConfig::default() }).recommendation;
    assert_eq!(rec.choice, Choice::Prompt { strategy: "retrieval".into() });
}

/// One system's selective figures on 200 dev and 200 test examples: on dev the `dev` most
/// confident are right and the rest wrong (so the threshold keeps exactly those); on test the
/// `test` most confident clear that threshold, right, and the rest fall below it.
fn answering(row: &str, dev: usize, test: usize) -> report::selective::SelectiveResult {
    let dev_conf: Vec<f32> = (0..200).map(|i| 0.99 - i as f32 * 0.002).collect();
    let dev_ok: Vec<bool> = (0..200).map(|i| i < dev).collect();
    let test_conf: Vec<f32> = (0..200).map(|i| if i < test { 0.995 } else { 0.1 }).collect();
    report::selective::selective(row, 0.95, (&dev_conf, &dev_ok), (&test_conf, &vec![true; 200]))
}

#[test]
fn with_abstain_the_required_accuracy_question_compares_the_shares_answered() {
    let quiet = CostConfig { monthly_requests: 1_000, ..CostConfig::default() };
    let decision = DecisionConfig { required_accuracy: 0.95, ..DecisionConfig::default() };
    // On all requests neither reaches 95%; the tuned model is the more accurate.
    let all_requests = build(realistic_rows(), 8530, &quiet, &decision).recommendation;
    assert_eq!(all_requests.choice, Choice::FineTune);
    assert!(all_requests.steps.last().unwrap().question.contains("decision.abstain = false"), "the rule is named");

    // Answering only when sure, the tuned model answers 150 of 200, retrieval 60: fine-tune.
    let with = |prompt: usize, tuned: usize, abstain: bool| {
        let mut r = build(realistic_rows(), 8530, &quiet, &decision);
        r.add_selective(vec![answering("retrieval", prompt, prompt), answering("fine-tuned (LoRA)", tuned, tuned)], abstain);
        r
    };
    let r = with(60, 150, true).recommendation;
    let last = r.steps.last().unwrap();
    assert!(last.decided && last.question.contains("decision.abstain = true"), "{last:?}");
    assert_eq!((r.choice.clone(), last.answer.as_str()), (Choice::FineTune, "fine-tuning answers more"));
    assert!(last.measured.contains("75.0%") && last.measured.contains("30.0%"), "{}", last.measured);
    assert!(last.measured.contains("90 against 0"), "the paired test counts the requests one answers alone: {}", last.measured);
    assert_eq!(r.steps.len(), all_requests.steps.len(), "the all-requests step is replaced, not added to");

    // The prompt answers more: prompt. Shares the paired test cannot tell apart: prompt, no training.
    let r = with(150, 60, true).recommendation;
    assert_eq!(r.choice, Choice::Prompt { strategy: "retrieval".into() });
    let r = with(100, 103, true).recommendation;
    assert_eq!(r.steps.last().unwrap().answer, "indistinguishable shares");
    assert_eq!(r.choice, Choice::Prompt { strategy: "retrieval".into() });

    // Without abstain the shares are stated and the all-requests rule decides.
    let r = with(60, 150, false).recommendation;
    assert_eq!(r.choice, all_requests.choice);
    assert_eq!(r.steps.len(), all_requests.steps.len() + 1);
    assert!(!r.steps[r.steps.len() - 2].decided && r.steps.last().unwrap().question.contains("decision.abstain = false"));
}

/// Gold labels of `n` balanced examples, and predictions right on exactly the examples `right`
/// says (wrong ones flip the label).
fn paired_predictions(n: usize, right: impl Fn(usize) -> bool) -> (Vec<usize>, Vec<usize>) {
    let gold: Vec<usize> = (0..n).map(|i| i % 2).collect();
    let pred = gold.iter().enumerate().map(|(i, &g)| if right(i) { g } else { 1 - g }).collect();
    (gold, pred)
}

/// A row whose metrics and kept predictions agree.
fn row_with_predictions(name: &str, kind: RowKind, gold: &[usize], pred: Vec<usize>, dev_accuracy: f64) -> StrategyRow {
    let labels = ["negative".to_string(), "positive".to_string()];
    let mut row = if kind == RowKind::FineTuned { tuned_row(100, 0.9) } else { prompt_row(name, 100, 70) };
    row.name = name.into();
    row.metrics = Metrics::compute(gold, &pred, &[], &vec![30.0; gold.len()], &vec![70; gold.len()], &labels);
    row.predicted = pred;
    row.dev_accuracy = Some(dev_accuracy);
    row
}

fn paired_report(rows: Vec<StrategyRow>, gold: Vec<usize>, decision: &DecisionConfig) -> CompareReport {
    let quiet = CostConfig { monthly_requests: 1_000, ..CostConfig::default() };
    let header = ReportHeader { test_examples: gold.len(), gold, ..header(8530) };
    CompareReport::new(header, rows, curve(), None, &quiet, decision)
}

#[test]
fn the_best_prompt_is_chosen_on_dev_not_on_test() {
    // few-shot wins on test (85% vs 80%) but loses on dev (0.78 vs 0.81): zero-shot is chosen.
    let n = 400;
    let (gold, zero) = paired_predictions(n, |i| i % 20 >= 4);
    let (_, few) = paired_predictions(n, |i| i % 20 >= 3);
    let (_, tuned) = paired_predictions(n, |i| i % 20 >= 2);
    let rows = vec![
        row_with_predictions("zero-shot", RowKind::Prompt, &gold, zero, 0.81),
        row_with_predictions("few-shot", RowKind::Prompt, &gold, few, 0.78),
        row_with_predictions("fine-tuned (LoRA)", RowKind::FineTuned, &gold, tuned, 0.9),
    ];
    let r = paired_report(rows, gold, &DecisionConfig::default());
    assert!(r.rows[1].metrics.accuracy > r.rows[0].metrics.accuracy, "few-shot wins on test");
    assert_eq!(r.best_prompt().unwrap().name, "zero-shot");
    assert!(report::best_prompt_chosen_on_dev(&r.rows));
    // The paired tests: tuned against both prompts, then the chosen prompt against the other.
    let pairs: Vec<(&str, &str)> = r.comparisons.iter().map(|c| (c.a.as_str(), c.b.as_str())).collect();
    assert_eq!(pairs, [("fine-tuned (LoRA)", "zero-shot"), ("fine-tuned (LoRA)", "few-shot"), ("zero-shot", "few-shot")]);
    let ci = r.rows[0].accuracy_ci.unwrap();
    assert!(ci.lo < 0.80 && 0.80 < ci.hi);
    assert!(r.rows[0].macro_f1_ci.is_some(), "predictions kept: macro-F1 gets its bootstrap interval");
}

#[test]
fn indistinguishable_systems_are_called_indistinguishable() {
    // Tuned 81% vs zero-shot 80% on 400 examples, 11% of pairs discordant: the paired interval
    // includes 0, so neither side is called better.
    let n = 400;
    let (gold, zero) = paired_predictions(n, |i| i % 100 >= 20);
    let (_, tuned) = paired_predictions(n, |i| (14..95).contains(&(i % 100)));
    let rows = vec![
        row_with_predictions("zero-shot", RowKind::Prompt, &gold, zero, 0.8),
        row_with_predictions("fine-tuned (LoRA)", RowKind::FineTuned, &gold, tuned, 0.81),
    ];
    let r = paired_report(rows, gold, &DecisionConfig { required_accuracy: 0.9, ..DecisionConfig::default() });
    let c = r.comparison("fine-tuned (LoRA)", "zero-shot").unwrap();
    assert!(c.interval.lo < 0.0 && c.interval.hi > 0.0, "{c:?}");
    assert!((c.difference - 0.01).abs() < 1e-12, "{c:?}");
    let rec = &r.recommendation;
    assert_eq!(rec.steps[decided_step(rec)].answer, "neither reaches it; indistinguishable");
    assert_eq!(rec.choice, Choice::Prompt { strategy: "zero-shot".into() });
    assert!(rec.headline.starts_with("Indistinguishable at n = 400"), "{}", rec.headline);
    assert!(rec.headline.contains("test examples would resolve a difference of this size"), "{}", rec.headline);
    // The required-accuracy rule is stated where the question is asked.
    assert!(rec.steps[decided_step(rec)].question.contains("lower bound"), "{:?}", rec.steps);
    // High volume does not count the tuned model as "as accurate" when its interval reaches below
    // −margin.
    assert!(!c.a_as_accurate(0.001));
}

#[test]
fn a_tuned_model_better_beyond_its_interval_is_recommended() {
    let n = 1000;
    let (gold, zero) = paired_predictions(n, |i| i % 100 >= 20);
    let (_, tuned) = paired_predictions(n, |i| i % 100 >= 14);
    let rows = vec![
        row_with_predictions("zero-shot", RowKind::Prompt, &gold, zero, 0.8),
        row_with_predictions("fine-tuned (LoRA)", RowKind::FineTuned, &gold, tuned, 0.86),
    ];
    let r = paired_report(rows, gold, &DecisionConfig { required_accuracy: 0.9, ..DecisionConfig::default() });
    let c = r.comparison("fine-tuned (LoRA)", "zero-shot").unwrap();
    assert_eq!((c.only_a_correct, c.only_b_correct), (60, 0));
    assert!(c.a_better() && c.p_value < 1e-10, "{c:?}");
    let rec = &r.recommendation;
    assert_eq!(rec.choice, Choice::FineTune);
    assert_eq!(rec.steps[decided_step(rec)].answer, "neither reaches it; fine-tuning is better");
    assert!(rec.headline.contains("+6.0 points"), "{}", rec.headline);
}

#[test]
fn only_prompting_measured_recommends_the_best_prompt() {
    let rows: Vec<StrategyRow> = realistic_rows().into_iter().take(4).collect();
    let r = build(rows, 8530, &CostConfig::default(), &DecisionConfig::default());
    assert_eq!(r.recommendation.choice, Choice::Prompt { strategy: "retrieval".into() });
    assert_eq!(r.best_prompt().unwrap().name, "retrieval");
    assert!(r.tuned().is_none());
}

// ---------- run history ----------

fn run(kind: &str, name: &str, split: &str, accuracy: f64) -> NewRun {
    NewRun {
        kind: kind.into(),
        name: name.into(),
        config_hash: "abc123".into(),
        split: split.into(),
        accuracy,
        examples: 200,
        ..NewRun::default()
    }
}

#[test]
fn run_versions_increment_per_family() {
    let dir = tempfile::tempdir().unwrap();
    assert!(runs::read_all(dir.path()).unwrap().is_empty(), "a missing file is an empty history");
    assert_eq!(runs::append(dir.path(), run("baseline", "zero-shot", "dev", 0.70)).unwrap().version, "prompt_v1");
    let batch =
        runs::append_all(dir.path(), vec![run("baseline", "zero-shot", "dev", 0.71), run("baseline", "few-shot", "dev", 0.78)]).unwrap();
    assert!(batch.iter().all(|r| r.version == "prompt_v2"), "one baseline run is one version: {batch:?}");
    assert_eq!(runs::append(dir.path(), run("train", "step-400", "dev", 0.85)).unwrap().version, "finetune_v1");
    assert_eq!(runs::append(dir.path(), run("eval", "step-400", "test", 0.84)).unwrap().version, "finetune_v2");
    assert_eq!(runs::append(dir.path(), run("baseline", "retrieval", "dev", 0.80)).unwrap().version, "prompt_v3");
    let all = runs::read_all(dir.path()).unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.iter().all(|r| r.timestamp.ends_with('Z') && r.timestamp.len() == 20), "{:?}", all[0].timestamp);
    let table = runs::render_runs(&all);
    for v in ["prompt_v1", "prompt_v2", "prompt_v3", "finetune_v1", "finetune_v2", "78.0%"] {
        assert!(table.contains(v), "{v} missing from\n{table}");
    }
}

#[test]
fn plateau_compares_the_last_two_prompt_versions_on_one_split() {
    let dir = tempfile::tempdir().unwrap();
    runs::append_all(dir.path(), vec![run("baseline", "zero-shot", "dev", 0.70), run("baseline", "few-shot", "dev", 0.80)]).unwrap();
    assert!(runs::plateau(&runs::read_all(dir.path()).unwrap(), 3.0).is_none(), "one version: nothing to compare");
    // A test-split measurement in between must not count as the previous dev version.
    runs::append(dir.path(), run("baseline", "few-shot", "test", 0.99)).unwrap();
    runs::append(dir.path(), run("train", "step-100", "dev", 0.95)).unwrap();
    // Each prompt iteration is a changed config (another hash).
    let v = |hash: &str, name: &str, acc: f64| NewRun { config_hash: hash.into(), ..run("baseline", name, "dev", acc) };
    runs::append_all(dir.path(), vec![v("h2", "few-shot", 0.82), v("h2", "zero-shot", 0.71)]).unwrap();
    let p = runs::plateau(&runs::read_all(dir.path()).unwrap(), 3.0).unwrap();
    assert_eq!((p.last.as_str(), p.previous.as_str()), ("prompt_v3", "prompt_v1"));
    assert!((p.improvement_points - 2.0).abs() < 1e-9, "{}", p.improvement_points);
    assert!(p.plateaued);
    runs::append(dir.path(), v("h3", "retrieval", 0.87)).unwrap();
    let p = runs::plateau(&runs::read_all(dir.path()).unwrap(), 3.0).unwrap();
    assert!(!p.plateaued && (p.improvement_points - 5.0).abs() < 1e-9, "{p:?}");
    // The same prompts run again (same hash) are not an iteration: the last version is still
    // compared with the newest one whose config differs.
    runs::append_all(dir.path(), vec![v("h3", "retrieval", 0.87), v("h3", "zero-shot", 0.71)]).unwrap();
    let p = runs::plateau(&runs::read_all(dir.path()).unwrap(), 3.0).unwrap();
    assert_eq!((p.last.as_str(), p.previous.as_str()), ("prompt_v5", "prompt_v3"), "{p:?}");
    assert!(!p.plateaued && (p.improvement_points - 5.0).abs() < 1e-9, "{p:?}");
}

#[test]
fn corrupt_history_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    runs::append(dir.path(), run("baseline", "zero-shot", "dev", 0.7)).unwrap();
    let path = runs::runs_path(dir.path());
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"version\": \"prompt_v2\", truncated\n");
    std::fs::write(&path, text).unwrap();
    let err = runs::read_all(dir.path()).unwrap_err().to_string();
    assert!(err.contains(&format!("{}:2:", path.display())), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(runs::append(dir.path(), run("baseline", "x", "dev", 0.7)).is_err(), "never append after a corrupt history");
}

// ---------- report files ----------

#[test]
fn report_json_round_trips_and_every_accuracy_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let plateau = Some(report::PlateauCheck {
        last: "prompt_v2".into(),
        previous: "prompt_v1".into(),
        improvement_points: 1.5,
        threshold: 3.0,
        plateaued: true,
    });
    let mut r = CompareReport::new(header(8530), realistic_rows(), curve(), plateau, &CostConfig::default(), &DecisionConfig::default());
    r.header.labels = vec!["<neg>".into(), "pos & more".into()];
    let paths = report::write_report(&r, &dir.path().join("compare")).unwrap();
    let json = std::fs::read_to_string(&paths.json).unwrap();
    let back: CompareReport = serde_json::from_str(&json).unwrap();
    // serde_json (without its float_roundtrip feature) may read a 17-digit float back 1 ULP off,
    // so numbers compare to 1e-15 relative and everything else exactly.
    assert_close(&serde_json::to_value(&back).unwrap(), &serde_json::to_value(&r).unwrap(), "report");
    assert_eq!(
        (&back.recommendation, &back.plateau, &back.header.labels, &back.generated_at),
        (&r.recommendation, &r.plateau, &r.header.labels, &r.generated_at)
    );

    let html = std::fs::read_to_string(&paths.html).unwrap();
    let terminal = report::render_terminal(&r);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    for row in value["rows"].as_array().unwrap() {
        let shown = percent(row["metrics"]["accuracy"].as_f64().unwrap());
        assert!(html.contains(&shown), "{shown} missing from the HTML");
        assert!(terminal.contains(&shown), "{shown} missing from the terminal table:\n{terminal}");
    }
    for point in value["learning_curve"].as_array().unwrap() {
        assert!(html.contains(&percent(point["accuracy"].as_f64().unwrap())));
    }
    let be = r.cost.api.break_even_requests.unwrap();
    let be_shown = report::format::volume(be);
    assert!(html.contains(&be_shown) && terminal.contains(&be_shown), "break-even {be_shown}");
    assert!(
        html.contains(&r.recommendation.headline.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;"))
    );
    assert!(terminal.contains("Recommendation: Fine-tune"), "{terminal}");
    assert!(terminal.contains("+1.5 points"), "{terminal}");

    // Data strings are escaped; nothing is fetched from the network.
    assert!(html.contains("&lt;neg&gt;") && !html.contains("<neg>"));
    assert!(html.contains("pos &amp; more"));
    assert!(html.contains("&lt;reviews &amp; &quot;quotes&quot;&gt;"));
    for remote in ["http://", "https://", "<script", "@import"] {
        let hits: Vec<_> = html.match_indices(remote).filter(|(i, _)| !html[..*i].ends_with("xmlns=\"")).collect();
        assert!(hits.is_empty(), "{remote} in the page");
    }
}

/// Structural equality of two JSON values, numbers to 1e-15 relative.
fn assert_close(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-15 * x.abs().max(y.abs()), "{at}: {x} != {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: lengths differ");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_close(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{at}: keys differ");
            for (k, v) in x {
                assert_close(v, &y[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

/// Odd measurements (nothing measured, free prices, NaN from a failed run) still render.
#[test]
fn degenerate_reports_render_without_panicking() {
    let free = CostConfig {
        base_input_per_1k: 0.0,
        base_output_per_1k: 0.0,
        tuned_input_per_1k: 0.0,
        tuned_output_per_1k: 0.0,
        training_per_1k: 0.0,
        gpu_hour: 0.0,
        monthly_requests: 0,
    };
    let empty = CompareReport::new(ReportHeader::default(), Vec::new(), Vec::new(), None, &free, &DecisionConfig::default());
    let html = report::html::render(&empty);
    assert!(html.contains("no learning curve was measured") && html.contains("no cost curve"));
    assert!(report::render_terminal(&empty).contains("Nothing was measured"));

    let mut rows = realistic_rows();
    rows[0].metrics.accuracy = f64::NAN;
    rows[4].metrics.latency.mean_ms = f64::NAN;
    rows[4].consistency = None;
    let mut r = CompareReport::new(
        header(0),
        rows,
        vec![CurvePoint { labels: 0, accuracy: 1.0, macro_f1: 1.0, train_time_s: 0.0, seed_accuracies: vec![], test_examples: 0 }],
        None,
        &CostConfig { gpu_hour: 2.0, ..CostConfig::default() },
        &DecisionConfig::default(),
    );
    r.header.labels.clear();
    let html = report::html::render(&r);
    assert!(html.contains("chart-cost") && html.contains("#0"), "confusion matrices fall back to class numbers");
    assert!(report::render_terminal(&r).contains("(self-hosted)"));
}

// ---------- headless Chromium ----------

const CHROMIUM: &str = "/usr/bin/chromium";

/// Run Chromium headless on `page` with `extra` flags; returns (stdout, stderr).
fn chromium(page: &Path, work: &Path, tag: &str, extra: &[String]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (work.join(format!("{tag}.stdout")), work.join(format!("{tag}.stderr")));
    let mut child = Command::new(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=2000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("start chromium");
    // A hung browser must fail the test, not hang CI.
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium {tag} did not finish in 180 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (stdout, stderr) = (std::fs::read_to_string(&out_path).unwrap(), std::fs::read_to_string(&err_path).unwrap());
    assert!(status.success(), "chromium {tag} failed ({status}):\n{stderr}");
    (stdout, stderr)
}

#[test]
fn chromium_renders_report_html() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/install-chromium (CI's .ci/run does) to render report.html in this test"
    );
    let work = tempfile::tempdir().unwrap();
    let plateau = Some(report::PlateauCheck {
        last: "prompt_v4".into(),
        previous: "prompt_v3".into(),
        improvement_points: 1.2,
        threshold: 3.0,
        plateaued: true,
    });
    // Rows with kept predictions: error bars and the paired-difference chart have data.
    let n = 1263;
    let (gold, zero) = paired_predictions(n, |i| i % 100 >= 20);
    let (_, few) = paired_predictions(n, |i| i % 100 >= 17);
    let (_, tuned) = paired_predictions(n, |i| i % 100 >= 14);
    let mut rows = vec![
        row_with_predictions("zero-shot", RowKind::Prompt, &gold, zero, 0.80),
        row_with_predictions("few-shot", RowKind::Prompt, &gold, few, 0.82),
        row_with_predictions("fine-tuned (LoRA)", RowKind::FineTuned, &gold, tuned, 0.86),
    ];
    rows[2].consistency = Some(consistency(0.95, 0.85, 0.87));
    let header = ReportHeader { test_examples: n, gold, ..header(8530) };
    let mut r = CompareReport::new(header, rows, curve(), plateau, &CostConfig::default(), &DecisionConfig::default());
    r.selections =
        vec![report::Selection { what: "best prompt strategy".into(), chosen: "few-shot".into(), by: "dev (500 examples)".into() }];
    r.notes = vec!["Consistency is measured on the first 300 test examples.".into()];
    let paths = report::write_report(&r, work.path()).unwrap();

    // Kept outside the temp dir so a person can look at it afterwards.
    let keep: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/report-test");
    std::fs::create_dir_all(&keep).unwrap();
    let png = keep.join("report.png");
    let _ = std::fs::remove_file(&png);
    std::fs::copy(&paths.html, keep.join("report.html")).unwrap();

    let shot = [format!("--screenshot={}", png.display()), "--window-size=1280,2400".to_string()];
    let (_, shot_err) = chromium(&paths.html, work.path(), "screenshot", &shot);
    let (dom, dom_err) = chromium(&paths.html, work.path(), "dump-dom", &["--dump-dom".to_string()]);

    for id in ["chart-accuracy", "chart-difference", "chart-learning-curve", "chart-cost"] {
        let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("#{id} not in the rendered DOM"));
        let open = dom[..at].rfind('<').unwrap();
        assert!(dom[open..].starts_with("<svg"), "#{id} is not an <svg>");
    }
    for (tag, stderr) in [("screenshot", &shot_err), ("dump-dom", &dom_err)] {
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("CONSOLE(") || l.contains("Uncaught")).collect();
        assert!(errors.is_empty(), "console errors while rendering ({tag}):\n{}", errors.join("\n"));
    }
    // Every accuracy bar has its error bar; every paired test its interval.
    assert_eq!(dom.matches("class=\"error-bar\"").count(), 3);
    assert_eq!(dom.matches("class=\"difference\"").count(), r.comparisons.len());
    assert!(dom.contains("indistinguishable") || dom.contains("better"), "the paired-tests table has verdicts");
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10 * 1024, "screenshot {} is {size} bytes", png.display());
}

/// A searched prompt that wins on test but loses on dev is not the best prompt: the choice
/// reads dev only, and the decision tree compares the tuned model with the dev choice.
#[test]
fn a_prompt_that_wins_on_test_but_loses_on_dev_is_never_chosen() {
    let mut zero = prompt_row("zero-shot", 160, 60);
    zero.dev_accuracy = Some(0.82);
    let mut searched = prompt_row("prompt (searched)", 176, 60);
    searched.dev_accuracy = Some(0.81);
    let rows = vec![zero, searched, tuned_row(170, 0.9)];
    assert_eq!(report::best_prompt(&rows).unwrap().name, "zero-shot");
    let r = build(rows, 5000, &CostConfig::default(), &DecisionConfig::default());
    assert_eq!(r.best_prompt().unwrap().name, "zero-shot");
    assert!(r.recommendation.steps.iter().all(|s| !s.measured.contains("prompt (searched) ")), "{:?}", r.recommendation.steps);
    // With the dev scores the other way round, the searched prompt is the choice.
    let mut rows = r.rows.clone();
    rows[1].dev_accuracy = Some(0.83);
    assert_eq!(report::best_prompt(&rows).unwrap().name, "prompt (searched)");
}

/// A quick look's tuned arm, cut off after 720 of 8,530 labels, that the paired test cannot
/// separate from the prompt: no decision yet, and no advice to add labels while most are unused.
#[test]
fn an_under_trained_tuned_arm_is_no_decision_yet() {
    let n = 400;
    let (gold, zero) = paired_predictions(n, |i| i % 100 >= 20);
    let (_, tuned) = paired_predictions(n, |i| (14..95).contains(&(i % 100)));
    let rows = |used: usize| {
        let mut t = row_with_predictions("fine-tuned (LoRA)", RowKind::FineTuned, &gold, tuned.clone(), 0.81);
        t.labelled_examples_used = used;
        vec![row_with_predictions("zero-shot", RowKind::Prompt, &gold, zero.clone(), 0.8), t]
    };
    let decision = DecisionConfig { required_accuracy: 0.9, ..DecisionConfig::default() };
    let r = paired_report(rows(720), gold.clone(), &decision);
    let rec = &r.recommendation;
    assert_eq!(rec.choice, Choice::Undecided);
    assert!(rec.headline.starts_with("Cannot decide yet: indistinguishable at n = 400"), "{}", rec.headline);
    assert!(rec.headline.contains("720 of the 8,530 labels"), "{}", rec.headline);
    assert!(!rec.headline.contains("add labelled data"), "{}", rec.headline);
    assert!(report::html::render(&r).contains("verdict undecided"));
    // With most labels used, the same figures are the usual indistinguishable verdict.
    let r = paired_report(rows(8000), gold, &decision);
    assert_eq!(r.recommendation.choice, Choice::Prompt { strategy: "zero-shot".into() });
    assert!(r.recommendation.headline.starts_with("Indistinguishable at n = 400"));
}

/// The report forecasts labels from its learning curve: bands at today's labels and 2×, 5×,
/// 10×, and the held-out check says why it cannot run on two small label counts.
#[test]
fn the_report_forecasts_from_its_learning_curve() {
    let r = build(realistic_rows(), 8530, &CostConfig::default(), &DecisionConfig::default());
    let f = r.forecast.as_ref().expect("three label counts give a forecast");
    assert_eq!(f.at_available.labels, 8530);
    assert_eq!(f.forecast.points.iter().map(|p| p.labels).collect::<Vec<_>>(), [17_060, 42_650, 85_300]);
    assert!(f.forecast.points.windows(2).all(|w| w[1].accuracy >= w[0].accuracy), "more labels never forecast less");
    for p in std::iter::once(&f.at_available).chain(&f.forecast.points) {
        assert!(
            p.band95.lo <= p.band80.lo && p.band80.lo <= p.accuracy && p.accuracy <= p.band80.hi && p.band80.hi <= p.band95.hi,
            "{p:?}"
        );
    }
    assert!((f.at_available.accuracy - 0.885).abs() < 0.01, "the fit passes near the measured full run: {:?}", f.at_available);
    assert!(f.held_out.is_none() && f.held_out_note.as_deref().is_some_and(|n| n.contains("needs 3")));
    let text = report::render_terminal(&r);
    assert!(text.contains("Labels-needed forecast") && text.contains("Held-out check: not possible"), "{text}");
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<CompareReport>(&json).unwrap(), r);
}

/// A curve measured on the first 100 of 200 test examples: the prompt's line to pass is its
/// accuracy on those 100, the bands' test noise is 100 examples', and the held-out check reaches
/// the full run at 10.24× the largest point at ≤ 1,000 labels, saying it is past the 10×.
#[test]
fn a_curve_on_a_test_sample_is_compared_with_the_prompt_on_the_same_sample() {
    // The prompt is right on 60 of the first 100 and on all of the last 100 (80% overall).
    let (gold, pred) = paired_predictions(200, |i| i >= 100 || i % 5 < 3);
    let (_, tuned) = paired_predictions(200, |i| i % 10 < 9);
    let rows = vec![
        row_with_predictions("zero-shot", RowKind::Prompt, &gold, pred, 0.8),
        row_with_predictions("fine-tuned (LoRA)", RowKind::FineTuned, &gold, tuned, 0.9),
    ];
    let point = |labels: usize, accuracy: f64, seeds: usize| CurvePoint {
        labels,
        accuracy,
        macro_f1: accuracy,
        train_time_s: 1.0,
        seed_accuracies: vec![accuracy; seeds],
        test_examples: 100,
    };
    let curve = vec![
        point(50, 0.70, 3),
        point(100, 0.75, 3),
        point(200, 0.79, 3),
        point(500, 0.83, 1),
        point(1000, 0.85, 1),
        point(10_240, 0.88, 1),
    ];
    let quiet = CostConfig { monthly_requests: 1_000, ..CostConfig::default() };
    let header = ReportHeader { test_examples: 200, gold, ..header(10_255) };
    let r = CompareReport::new(header, rows, curve, None, &quiet, &DecisionConfig::default());
    let f = r.forecast.as_ref().unwrap();
    assert_eq!((f.reference_accuracy, f.test_examples), (0.6, 100), "the prompt on the curve's 100 examples, not its 80% on 200");
    // 10,255 labels available and 10,240 trained on: 10× today's labels is still forecast.
    assert_eq!(f.forecast.points.iter().map(|p| p.labels).collect::<Vec<_>>(), [20_510, 51_275, 102_550]);
    let step = &r.recommendation.steps[0];
    assert!(step.measured.contains("60.0% on the curve's 100 test examples"), "{}", step.measured);
    let h = f.held_out.as_ref().expect("four counts at ≤ 1,000 labels fit the held-out check");
    assert_eq!(h.labels, 10_240);
    assert!((h.reach - 10.24).abs() < 1e-9 && h.reach_note().contains("10.2×"), "{}", h.reach_note());
    assert!(h.forecast.band95.lo < h.forecast.accuracy && h.forecast.accuracy < h.forecast.band95.hi);
    let text = report::render_terminal(&r);
    assert!(text.contains("on the first 100 test examples") && text.contains("past the 10×"), "{text}");
}
