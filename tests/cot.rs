//! The chain-of-thought strategy end to end on a tiny model: reasoning is generated (at most
//! `prompt.cot_max_tokens` tokens) and kept per example, its output tokens feed the report, and
//! the label words are scored after it.

mod common;

use std::process::Command;

use common::{TRAIN, tiny_config, tiny_model_dir};

#[test]
fn cot_generates_bounded_reasoning_then_scores_the_label_words() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir(tmp.path(), 8);
    let cfg = tiny_config(tmp.path(), &model, TRAIN);
    let text = std::fs::read_to_string(&cfg).unwrap().replace("[prompt]\n", "[prompt]\ncot_max_tokens = 5\n");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(["baseline", cfg.to_str().unwrap(), "--strategy", "zero-shot,cot", "--limit", "6", "--skip-cache-check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("│ cot"), "{stdout}");
    let dir = tmp.path().join("ck/run/baseline/cot/test");
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    let mean = metrics["output_tokens_mean"].as_f64().unwrap();
    // A random tiny model rarely says end-of-turn: up to 5 reasoning tokens plus the answer.
    assert!((1.0..=6.0).contains(&mean), "{mean}");
    assert_eq!(metrics["metrics"]["n"], 6);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.join("predictions.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    for l in &lines {
        assert!(l["reasoning"].is_string(), "{l}");
        let p: f64 = l["probabilities"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
        assert!((p - 1.0).abs() < 1e-4);
    }
    // The reasoning goes before the answer, so the prompt the label words follow is longer than
    // zero-shot's.
    let zero: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("ck/run/baseline/zero-shot/test/metrics.json")).unwrap()).unwrap();
    let tokens = |m: &serde_json::Value| m["metrics"]["prompt_tokens_mean"].as_f64().unwrap();
    assert!(tokens(&metrics) > tokens(&zero), "{} vs {}", tokens(&metrics), tokens(&zero));
    assert!(zero.get("output_tokens_mean").is_none());
}
