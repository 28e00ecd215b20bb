//! `wick compare` end to end on a tiny random Llama with the real tokenizer and data: the report
//! files agree with the metrics files they summarise, and a second run reuses stored results.

mod common;

use std::process::Command;

use common::{TRAIN, read_json, tiny_config, tiny_model_dir};

#[test]
fn compare_writes_a_report_that_agrees_with_the_metrics_files_and_reuses_results() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let model = tiny_model_dir(tmp.path(), 3);
    let cfg = tiny_config(tmp.path(), &model, &format!("{TRAIN}\nmax_steps = 4"));
    let mut text = std::fs::read_to_string(&cfg)?;
    text.push_str(
        "[compare]\nlimit = 12\nstrategies = [\"zero-shot\", \"few-shot\", \"calibrated\", \"retrieval\"]\nretrieval_pool = 40\nlearning_curve = [8, 20]\ncurve_test_examples = 8\nbatch_size = 4\nsearch_minutes = 0\n",
    );
    text = text.replace("[prompt]\n", "[prompt]\nk_shot = 2\n");
    std::fs::write(&cfg, text)?;

    let run = || Command::new(env!("CARGO_BIN_EXE_wick")).arg("compare").arg(&cfg).output().unwrap();
    let first = run();
    let stderr = String::from_utf8_lossy(&first.stderr).to_string();
    assert!(first.status.success(), "compare failed: {stderr}");

    let run_dir = tmp.path().join("ck/run");
    let report = read_json(&run_dir.join("compare/report.json"));
    let rows = report["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["zero-shot", "few-shot", "calibrated", "retrieval", "fine-tuned (LoRA)", "tuned + few-shot", "tuned + retrieval"]);
    assert_eq!(report["test_examples"], 12);

    // Each prompt row is exactly what `wick baseline` wrote for that strategy.
    for row in &rows[..4] {
        let name = row["name"].as_str().unwrap();
        let metrics = read_json(&run_dir.join(format!("baseline/{name}/test/metrics.json")));
        assert_eq!(row["metrics"]["accuracy"], metrics["metrics"]["accuracy"], "{name}");
        assert_eq!(row["metrics"]["confusion"], metrics["metrics"]["confusion"], "{name}");
        assert_eq!(row["metrics"]["n"], 12);
    }
    // The tuned row is the evaluation of the run's best checkpoint, with the training cost.
    // Every row carries its intervals; the paired tests cover the tuned model against every
    // prompt and the dev-chosen best prompt against the others, on the same 12 examples.
    for row in rows {
        let ci = &row["accuracy_ci"];
        let acc = row["metrics"]["accuracy"].as_f64().unwrap();
        assert!(ci["lo"].as_f64().unwrap() <= acc && acc <= ci["hi"].as_f64().unwrap(), "{row}");
        assert!(row["macro_f1_ci"]["lo"].is_number(), "{row}");
        assert_eq!(row["predicted"].as_array().unwrap().len(), 12);
        // The tuned + prompt rows are never a choice: they have no dev pass.
        assert_eq!(row["dev_accuracy"].is_number(), row["kind"] != "tuned_prompt", "every choice is made on dev: {row}");
    }
    assert_eq!(report["gold"].as_array().unwrap().len(), 12);
    let comparisons = report["comparisons"].as_array().unwrap();
    assert_eq!(comparisons.len(), 4 + 3 + 2);
    assert!(comparisons[..4].iter().all(|c| c["a"] == "fine-tuned (LoRA)"));
    assert_eq!((&comparisons[7]["a"], &comparisons[7]["b"]), (&"tuned + few-shot".into(), &"fine-tuned (LoRA)".into()));
    assert_eq!((&comparisons[8]["a"], &comparisons[8]["b"]), (&"tuned + retrieval".into(), &"fine-tuned (LoRA)".into()));
    let selections = report["selections"].as_array().unwrap();
    let best = selections.iter().find(|s| s["what"] == "best prompt strategy").unwrap();
    assert!(best["by"].as_str().unwrap().starts_with("dev ("), "{best}");
    let best_dev = rows[..4].iter().map(|r| r["dev_accuracy"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    let chosen = rows.iter().find(|r| r["name"] == best["chosen"]).unwrap();
    assert_eq!(chosen["dev_accuracy"].as_f64().unwrap(), best_dev, "the best prompt is the best on dev");
    let notes: Vec<&str> = report["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert!(notes.iter().any(|n| n.starts_with("Partial run")), "compare.limit = 12 is a partial run: {notes:?}");

    let tuned = &rows[4];
    assert_eq!(tuned["kind"], "fine_tuned");
    assert!(tuned["training_tokens"].as_u64().unwrap() > 0);
    assert!(tuned["time_to_first_result_s"].as_f64().unwrap() > 0.0);
    let best = std::fs::read_to_string(run_dir.join("best"))?;
    let eval = read_json(&run_dir.join(format!("eval/{}/test/metrics.json", best.trim())));
    assert_eq!(tuned["metrics"]["accuracy"], eval["metrics"]["accuracy"]);
    assert!(tuned["consistency"]["agreement"].is_number(), "the tuned model is scored under every template");

    // The tuned + prompt rows are the tuned checkpoint's evaluations under those strategies.
    for (row, strategy) in rows[5..].iter().zip(["few-shot", "retrieval"]) {
        assert_eq!(row["kind"], "tuned_prompt");
        let eval = read_json(
            &run_dir.join(format!("eval/{}/{strategy}/test/metrics.json", std::fs::read_to_string(run_dir.join("best"))?.trim())),
        );
        assert_eq!(row["metrics"]["accuracy"], eval["metrics"]["accuracy"], "{strategy}");
        assert_eq!(row["training_tokens"], tuned["training_tokens"]);
    }

    // 4 steps × 4 rows draw 16 examples: the tuned run trained on 16 distinct labels.
    assert_eq!(tuned["labelled_examples_used"], 16);
    assert!(report["train_labels_available"].as_u64().unwrap() > 16);

    // Learning curve: the 8-label runs (3 seeds below 1,000 labels), then the full run; 20 labels
    // would repeat the full run's 16 draws, so it is not run and the report says why.
    let curve = report["learning_curve"].as_array().unwrap();
    assert_eq!(curve.len(), 2);
    assert_eq!(curve[0]["labels"], 8);
    assert_eq!(curve[0]["seed_accuracies"].as_array().unwrap().len(), 3);
    assert_eq!(curve[1]["labels"], 16);
    let notes = report["learning_curve_notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1);
    assert!(notes[0].as_str().unwrap().starts_with("20 labels not run"), "{notes:?}");
    assert!(!tmp.path().join("ck/run-labels-20").exists());
    // Every curve point is measured on the first 8 test examples (compare.curve_test_examples):
    // the curve runs scored only those, and the full run's point is its accuracy on them.
    assert!(curve.iter().all(|p| p["test_examples"] == 8), "{curve:?}");
    let gold: Vec<u64> = report["gold"].as_array().unwrap().iter().map(|g| g.as_u64().unwrap()).collect();
    let predicted: Vec<u64> = tuned["predicted"].as_array().unwrap().iter().map(|g| g.as_u64().unwrap()).collect();
    let right = (0..8).filter(|&i| predicted[i] == gold[i]).count();
    assert_eq!(curve[1]["accuracy"].as_f64().unwrap(), right as f64 / 8.0);
    let curve_run = std::fs::read_dir(tmp.path().join("ck/run-labels-8-seed-42/eval"))?.next().unwrap()?.path();
    assert_eq!(read_json(&curve_run.join("test/metrics.json"))["metrics"]["n"], 8);
    for seed in [42, 43, 44] {
        assert!(tmp.path().join(format!("ck/run-labels-8-seed-{seed}")).is_dir());
    }

    // The HTML shows the same accuracies, formatted as in the table.
    let html = std::fs::read_to_string(run_dir.join("compare/report.html"))?;
    for row in rows {
        let acc = wick::report::format::percent(row["metrics"]["accuracy"].as_f64().unwrap());
        assert!(html.contains(&acc), "report.html lacks {acc}");
    }
    assert!(report["recommendation"]["headline"].as_str().is_some_and(|h| !h.is_empty()));

    // Every measurement was recorded in runs.jsonl.
    let runs = std::fs::read_to_string(tmp.path().join("ck/runs.jsonl"))?;
    assert!(runs.contains("\"prompt_v1\"") && runs.contains("\"finetune_v1\""), "{runs}");

    // A second compare reuses everything and reports the same numbers.
    let second = run();
    let stderr2 = String::from_utf8_lossy(&second.stderr).to_string();
    assert!(second.status.success(), "{stderr2}");
    for part in
        ["prompt-zero-shot", "prompt-retrieval", "finetune", "tuned-few-shot", "tuned-retrieval", "curve-8-seed-42", "curve-8-seed-44"]
    {
        assert!(stderr2.contains(&format!("reusing {part}")), "{part} was measured again: {stderr2}");
    }
    let again = read_json(&run_dir.join("compare/report.json"));
    assert_eq!(again["rows"], report["rows"]);
    Ok(())
}
