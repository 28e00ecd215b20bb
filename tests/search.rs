//! The prompt search end to end on a tiny random Llama with the real tokenizer and data: `wick
//! compare` races the candidates on dev, reports the searched prompt beside the hand-written
//! zero-shot, stores the chosen prompt, and that file scores the same dev accuracy again; the
//! chosen prompt and the tuned model are scored side by side on a shifted set.

mod common;

use std::process::Command;

use common::{TRAIN, read_json, tiny_config, tiny_model_dir};

#[test]
fn compare_searches_on_dev_and_the_stored_prompt_reproduces_its_dev_accuracy() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let model = tiny_model_dir(tmp.path(), 5);
    let cfg = tiny_config(tmp.path(), &model, &format!("{TRAIN}\nmax_steps = 2"));
    let mut text = std::fs::read_to_string(&cfg)?;
    text.push_str(
        "[compare]\nlimit = 16\ndev_examples = 60\nstrategies = [\"zero-shot\", \"few-shot\", \"calibrated\"]\nlearning_curve = []\nbatch_size = 8\ntuned_strategies = []\nsearch_minutes = 5\nshifted_examples = 20\n\
         [[compare.shifted]]\nname = \"yelp\"\npath = \"assets/ood/yelp.json\"\nlabel_column = \"class\"\nlabel_map = { \"0\" = \"negative\", \"1\" = \"positive\" }\n",
    );
    text = text.replace("[prompt]\n", "[prompt]\nk_shot = 2\n");
    std::fs::write(&cfg, text)?;
    let wick = || Command::new(env!("CARGO_BIN_EXE_wick"));
    let out = wick().arg("compare").arg(&cfg).output()?;
    assert!(out.status.success(), "compare failed: {}", String::from_utf8_lossy(&out.stderr));

    let run_dir = tmp.path().join("ck/run");
    let report = read_json(&run_dir.join("compare/report.json"));
    let names: Vec<&str> = report["rows"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["zero-shot", "prompt (searched)", "fine-tuned (LoRA)"], "only v1 and the chosen prompt go to test");
    let search = &report["search"];
    let candidates = search["candidates"].as_array().unwrap();
    // The hand-written strategies, 3 variants + 14 bank instructions, calibration and
    // demonstration draws were all tried.
    assert!(candidates.len() > 20, "{} candidates", candidates.len());
    for stage in ["v1", "hand-written strategies", "instructions", "calibration", "demonstrations"] {
        assert!(candidates.iter().any(|c| c["stage"] == stage), "no candidate of stage {stage}");
    }
    // A random model finds no word twice as likely under one label as under the other: then the
    // config's words are the only ones, and there are no word sets to race.
    let words = search["label_word_candidates"].as_array().unwrap();
    let proposed = words.iter().any(|w| w.as_array().unwrap().len() > 1);
    assert_eq!(proposed, candidates.iter().any(|c| c["stage"] == "label words"), "{words:?}");
    // The chosen prompt is the best on the whole dev sample among those that reached it.
    let finalists: Vec<&serde_json::Value> = candidates.iter().filter(|c| c["dev_n"] == 60).collect();
    let best = finalists.iter().map(|c| c["dev_accuracy"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    let chosen = candidates.iter().find(|c| c["status"] == "chosen").unwrap();
    assert_eq!(chosen["dev_accuracy"].as_f64().unwrap(), best);
    assert_eq!(search["chosen"]["dev_accuracy"], chosen["dev_accuracy"]);
    // The curve never falls: each stage's leader is at least the one before.
    let curve: Vec<f64> = search["curve"].as_array().unwrap().iter().map(|p| p["best_dev_accuracy"].as_f64().unwrap()).collect();
    assert!(curve.windows(2).all(|w| w[1] >= w[0]), "{curve:?}");
    assert_eq!(*curve.last().unwrap(), best);
    // Eliminated candidates stop at a slice short of the whole dev sample.
    for c in candidates.iter().filter(|c| c["status"].as_str().unwrap().starts_with("eliminated")) {
        assert!(c["dev_n"].as_u64().unwrap() < 60, "{c}");
    }
    // The searched row carries the search's dev accuracy, and the plateau rule reads the curve.
    let row = &report["rows"][1];
    assert_eq!(row["dev_accuracy"], search["chosen"]["dev_accuracy"]);
    assert!(report["plateau"]["last"].as_str().unwrap().starts_with("prompt search"), "{}", report["plateau"]);
    let html = std::fs::read_to_string(run_dir.join("compare/report.html"))?;
    assert!(html.contains("chart-search-curve"));

    // Flexibility: the prompt chosen on dev and the tuned model on the same 20 yelp sentences.
    let flex = &report["flexibility"][0];
    let best = report["selections"].as_array().unwrap().iter().find(|s| s["what"] == "best prompt strategy").unwrap();
    assert_eq!((&flex["name"], &flex["n"], &flex["prompt"]), (&"yelp".into(), &20.into(), &best["chosen"]));
    assert_eq!(flex["comparison"]["a"], "fine-tuned (LoRA)");
    assert_eq!(flex["comparison"]["n"], 20);
    let steps = report["recommendation"]["steps"].as_array().unwrap();
    assert!(steps.iter().any(|s| s["question"].as_str().unwrap().starts_with("Flexibility")), "{steps:?}");
    assert!(html.contains("Flexibility: shifted data"));

    // Answering only when sure: the threshold is chosen on the 60 dev examples, the shares
    // answered are measured on the 16 test examples, for the chosen prompt and the tuned model.
    let selective = report["selective"].as_array().unwrap();
    let rows: Vec<&str> = selective.iter().map(|r| r["row"].as_str().unwrap()).collect();
    assert_eq!(rows, [best["chosen"].as_str().unwrap(), "fine-tuned (LoRA)"]);
    for r in selective {
        assert_eq!((&r["dev_n"], &r["n"]), (&60.into(), &16.into()), "{r}");
        let coverage = r["coverage"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&coverage));
        assert_eq!(r["threshold"].is_null(), r["dev_coverage"].as_f64().unwrap() == 0.0, "{r}");
    }
    assert!(steps.iter().any(|s| s["question"].as_str().unwrap().starts_with("Answering only when sure")));

    // The stored prompt, loaded again, scores the same dev accuracy on the same 60 examples.
    let stored = run_dir.join("search/prompt.toml");
    assert!(stored.is_file());
    let again = wick().args(["baseline"]).arg(&cfg).args(["--strategy", "searched", "--split", "dev", "--limit", "60"]).output()?;
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let metrics = read_json(&run_dir.join("baseline/searched/dev/metrics.json"));
    assert_eq!(metrics["metrics"]["accuracy"], search["chosen"]["dev_accuracy"]);

    // An edited file is what gets scored: a template without {text} is refused with its path.
    let edited = std::fs::read_to_string(&stored)?.replace("{text}", "");
    std::fs::write(&stored, edited)?;
    let bad = wick().args(["predict", "--strategy", "searched", "--config"]).arg(&cfg).arg("a fine film").output()?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("{text}"), "{}", String::from_utf8_lossy(&bad.stderr));

    // A compare that reuses the search leaves the edited file as it is, measures the search's
    // own choice (the same report rows), and says the file differs.
    let edited = std::fs::read_to_string(&stored)?;
    let second = wick().arg("compare").arg(&cfg).output()?;
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(std::fs::read_to_string(&stored)?, edited, "a reused search must not overwrite the user's edits");
    let again = read_json(&run_dir.join("compare/report.json"));
    assert_eq!(again["rows"], report["rows"]);
    assert_eq!(again["flexibility"], report["flexibility"]);
    let notes: Vec<&str> = again["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert!(notes.iter().any(|n| n.contains("differs from the search's choice")), "{notes:?}");
    Ok(())
}
