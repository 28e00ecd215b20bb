//! `wick eval --checkpoint DIR --strategy S`: the tuned model under a prompt strategy, with the
//! base run's demonstrations. An adapter that is exactly zero (trained at lr 1e-30) must then give
//! the base model's probabilities under the same strategy, example by example.

mod common;

use std::process::Command;

use common::{TRAIN, tiny_config, tiny_model_dir};

fn wick(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wick")).args(args).output().unwrap()
}

fn probabilities(path: &std::path::Path) -> Vec<(String, Vec<f64>)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let p = v["probabilities"].as_object().unwrap().values().map(|x| x.as_f64().unwrap()).collect();
            (v["text"].as_str().unwrap().to_string(), p)
        })
        .collect()
}

#[test]
fn a_zero_adapter_under_a_strategy_gives_the_base_models_probabilities() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir(tmp.path(), 6);
    // lr must be positive; at 1e-30 the update leaves B at ±1e-30, an adapter of nothing.
    let train = TRAIN.replace("lr = 0.01", "lr = 1e-30");
    let cfg = tiny_config(tmp.path(), &model, &format!("{train}\nmax_steps = 1"));
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = text.replace("[prompt]\n", "[prompt]\nk_shot = 2\nretriever = \"bm25\"\n");
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.to_str().unwrap();
    let out = wick(&["train", cfg, "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run_dir = tmp.path().join("ck/run");
    let best = run_dir.join(std::fs::read_to_string(run_dir.join("best")).unwrap().trim());

    let base =
        wick(&["baseline", cfg, "--strategy", "few-shot,retrieval", "--limit", "10", "--retrieval-pool", "40", "--skip-cache-check"]);
    assert!(base.status.success(), "{}", String::from_utf8_lossy(&base.stderr));
    for strategy in ["few-shot", "retrieval"] {
        let args = ["eval", "--checkpoint", best.to_str().unwrap(), "--strategy", strategy, "--limit", "10", "--retrieval-pool", "40"];
        let out = wick(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("+ {strategy}")), "{stdout}");
        let tuned = probabilities(
            &best.parent().unwrap().join("eval").join(best.file_name().unwrap()).join(strategy).join("test/predictions.jsonl"),
        );
        let base = probabilities(&run_dir.join(format!("baseline/{strategy}/test/predictions.jsonl")));
        assert_eq!(tuned.len(), 10);
        for ((t_text, t), (b_text, b)) in tuned.iter().zip(&base) {
            assert_eq!(t_text, b_text);
            let worst = t.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-6, "{strategy}: {t:?} vs {b:?}");
        }
    }
    // A trained adapter is really attached: the same prompts now score differently.
    let trained_cfg = tmp.path().join("trained.toml");
    let text = std::fs::read_to_string(cfg).unwrap().replace("lr = 1e-30", "lr = 0.05").replace("max_steps = 1", "max_steps = 3");
    std::fs::write(&trained_cfg, text.replace("run_name = \"run\"", "run_name = \"trained\"")).unwrap();
    let out = wick(&["train", trained_cfg.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let trained_dir = tmp.path().join("ck/trained");
    let trained = trained_dir.join(std::fs::read_to_string(trained_dir.join("best")).unwrap().trim());
    let out = wick(&["eval", "--checkpoint", trained.to_str().unwrap(), "--strategy", "few-shot", "--limit", "10", "--config", cfg]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tuned = probabilities(&run_dir.join("eval").join(trained.file_name().unwrap()).join("few-shot/test/predictions.jsonl"));
    let base = probabilities(&run_dir.join("baseline/few-shot/test/predictions.jsonl"));
    let moved = tuned.iter().zip(&base).flat_map(|((_, t), (_, b))| t.iter().zip(b).map(|(x, y)| (x - y).abs())).fold(0.0, f64::max);
    assert!(moved > 1e-4, "a trained adapter left the few-shot probabilities unchanged ({moved})");

    // zero-shot is eval's own job, and a strategy name is checked.
    let out = wick(&["eval", "--checkpoint", best.to_str().unwrap(), "--strategy", "zero-shot"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("without --strategy"));
    let out = wick(&["eval", "--checkpoint", best.to_str().unwrap(), "--strategy", "cot-ish"]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1);
}
