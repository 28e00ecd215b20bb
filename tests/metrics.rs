//! Metrics against hand-computed values.

use wick::metrics::{Consistency, Metrics, TableRow, expected_calibration_error, latency_stats, percentile, render_detail, render_table};

fn labels() -> Vec<String> {
    vec!["negative".into(), "positive".into()]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn two_by_two_confusion_gives_known_scores() {
    // gold 0: 3 right, 1 wrong; gold 1: 4 right, 2 wrong.
    let gold = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1];
    let pred = [0, 0, 0, 1, 1, 1, 1, 1, 0, 0];
    let m = Metrics::compute(&gold, &pred, &[], &[], &[], &labels());
    assert_eq!(m.n, 10);
    assert_eq!(m.confusion, vec![vec![3, 1], vec![2, 4]]);
    assert!(close(m.accuracy, 0.7));
    // negative: P = 3/5, R = 3/4, F1 = 2/3; positive: P = 4/5, R = 4/6, F1 = 8/11.
    let (neg, pos) = (&m.per_class[0], &m.per_class[1]);
    assert!(close(neg.precision, 0.6) && close(neg.recall, 0.75) && close(neg.f1, 2.0 / 3.0), "{neg:?}");
    assert!(close(pos.precision, 0.8) && close(pos.recall, 4.0 / 6.0) && close(pos.f1, 8.0 / 11.0), "{pos:?}");
    assert_eq!((neg.support, pos.support), (4, 6));
    assert!(close(m.macro_f1, (2.0 / 3.0 + 8.0 / 11.0) / 2.0), "{}", m.macro_f1);
}

#[test]
fn never_predicted_class_scores_zero_not_nan() {
    let gold = [0, 1, 1, 0];
    let pred = [0, 0, 0, 0];
    let m = Metrics::compute(&gold, &pred, &[], &[], &[], &labels());
    assert_eq!(m.per_class[1].precision, 0.0);
    assert_eq!(m.per_class[1].f1, 0.0);
    // negative: P = 2/4, R = 1, F1 = 2/3; macro = 1/3.
    assert!(close(m.macro_f1, 1.0 / 3.0));
    assert!(close(m.accuracy, 0.5));
}

#[test]
fn ece_is_zero_when_confidence_matches_accuracy() {
    // Bin [.7, .8): ten predictions at 70% confidence, seven right; bin [.9, 1]: ten at 90%,
    // nine right.
    let mut gold = Vec::new();
    let mut probs = Vec::new();
    for i in 0..10 {
        probs.push(vec![0.7f32, 0.3]);
        gold.push(if i < 7 { 0 } else { 1 });
    }
    for i in 0..10 {
        probs.push(vec![0.1f32, 0.9]);
        gold.push(if i < 9 { 1 } else { 0 });
    }
    let ece = expected_calibration_error(&gold, &probs);
    assert!(ece < 1e-6, "{ece}");
}

#[test]
fn ece_of_overconfident_predictions_is_the_gap() {
    // Ten at 90% confidence with six right (gap 0.3), five at 60% with all right (gap 0.4):
    // ECE = 10/15 * 0.3 + 5/15 * 0.4 = 1/3.
    let mut gold = Vec::new();
    let mut probs = Vec::new();
    for i in 0..10 {
        probs.push(vec![0.9f32, 0.1]);
        gold.push(if i < 6 { 0 } else { 1 });
    }
    for _ in 0..5 {
        probs.push(vec![0.4f32, 0.6]);
        gold.push(1);
    }
    let ece = expected_calibration_error(&gold, &probs);
    assert!((ece - 1.0 / 3.0).abs() < 1e-6, "{ece}");
    let predicted: Vec<usize> = (0..15).map(|i| usize::from(i >= 10)).collect();
    let m = Metrics::compute(&gold, &predicted, &probs, &[], &[], &labels());
    assert!((m.ece - 1.0 / 3.0).abs() < 1e-6);
}

#[test]
fn certain_predictions_land_in_the_last_bin() {
    // Confidence exactly 1.0 and wrong: gap 1.
    let ece = expected_calibration_error(&[1], &[vec![1.0f32, 0.0]]);
    assert!((ece - 1.0).abs() < 1e-9, "{ece}");
}

#[test]
fn latency_percentiles_interpolate_like_numpy() {
    let ms: Vec<f64> = (1..=20).rev().map(f64::from).collect();
    let l = latency_stats(&ms);
    assert!(close(l.mean_ms, 10.5));
    assert!(close(l.p50_ms, 10.5));
    assert!(close(l.p95_ms, 19.05));
    assert_eq!(percentile(&[3.0], 0.95), 3.0);
    assert_eq!(latency_stats(&[]).p95_ms, 0.0);
    let m = Metrics::compute(&[0], &[0], &[], &[2.0], &[10], &labels());
    assert!(close(m.prompt_tokens_mean, 10.0) && close(m.latency.p50_ms, 2.0));
}

#[test]
fn consistency_counts_examples_identical_under_every_variant() {
    let gold = [0, 1, 0, 1];
    let preds = vec![vec![0, 1, 0, 1], vec![0, 1, 1, 1], vec![0, 0, 0, 1]];
    let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let c = Consistency::compute(&gold, &preds, &names);
    // Examples 0 and 3 agree everywhere; 1 and 2 do not.
    assert!(close(c.agreement, 0.5));
    assert_eq!(c.accuracies, vec![1.0, 0.75, 0.75]);
    assert!(close(c.accuracy_min, 0.75) && close(c.accuracy_max, 1.0) && close(c.accuracy_mean, 2.5 / 3.0));
    let one = Consistency::compute(&gold, &preds[..1], &names[..1]);
    assert!(close(one.agreement, 1.0));
}

#[test]
fn table_and_json_show_the_numbers() {
    let gold = [0, 0, 1, 1];
    let pred = [0, 1, 1, 1];
    let probs = vec![vec![0.8f32, 0.2], vec![0.4, 0.6], vec![0.3, 0.7], vec![0.1, 0.9]];
    let m = Metrics::compute(&gold, &pred, &probs, &[5.0; 4], &[12; 4], &labels());
    let c = Consistency::compute(&gold, &[pred.to_vec(), vec![0, 0, 1, 1]], &["t".into(), "v".into()]);
    let table = render_table(&[TableRow { name: "zero-shot".into(), metrics: &m, consistency: Some(&c) }]);
    assert!(table.contains("zero-shot") && table.contains("0.750") && table.contains("0.750 (2)"), "{table}");
    let detail = render_detail(&m);
    assert!(detail.contains("negative") && detail.contains("positive"), "{detail}");
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["confusion"], serde_json::json!([[1, 1], [0, 2]]));
    assert!(json["per_class"][1]["precision"].as_f64().unwrap() > 0.66);
    assert!(json["latency"]["p95_ms"].as_f64().unwrap() == 5.0);
}
