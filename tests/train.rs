//! Training: accumulation equivalence, PEFT folder contents, kill -9 resume reproducing the same
//! adapter bit for bit, Ctrl-C, and refusing an incompatible resume. A tiny random Llama with the
//! real tokenizer keeps each run to seconds.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use common::{TRAIN, tiny_config, tiny_model_dir};
use wick::prompt::Prompter;
use wick::score::Head;
use wick::train::batches::encode;
use wick::train::optim::accumulate;
use wick::train::{TrainLoss, micro_batch_loss};

fn wick() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wick"))
}

fn adapter(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu).unwrap()
}

fn assert_bit_identical(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    assert_eq!(a.len(), b.len());
    for (k, ta) in a {
        let va: Vec<f32> = ta.flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = b[k].flatten_all().unwrap().to_vec1().unwrap();
        assert!(va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()), "{k} differs");
    }
}

#[test]
fn accumulating_4x2_equals_one_batch_of_8() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let model_dir = tiny_model_dir(tmp.path(), 1);
    let cfg = wick::data::load_config(&tiny_config(tmp.path(), &model_dir, TRAIN))?;
    let mut loaded = wick::model::load(model_dir.to_str().unwrap(), DType::F32, &Device::Cpu)?;
    loaded.model.add_lora(&["all-linear".into()], 4, 2.0, 0.0, 5)?;
    // Non-zero B so that every tensor has a gradient to compare.
    for (name, var) in loaded.model.lora_vars() {
        if name.ends_with("lora_B.weight") {
            var.set(&Tensor::randn(0f32, 0.1, var.shape(), &Device::Cpu)?)?;
        }
    }
    let vars = loaded.model.lora_vars();
    let (splits, _) = wick::data::load_splits(&cfg.data, wick::data::ReadMode::Strict)?;
    let prompter = Prompter::new(&cfg.prompt, &cfg.data.labels, &loaded.tokenizer, loaded.chat_template.as_deref(), None)?;
    let (encoded, _) = encode(&prompter, &splits.train[..8], 128)?;
    let items: Vec<_> = encoded.iter().collect();
    let head = Head::Verbalizer(prompter.label_tokens());

    let mut one = vec![None; vars.len()];
    let (loss, _) = micro_batch_loss(&loaded.model, head, TrainLoss::Vocab, &items, 8)?;
    accumulate(&mut one, &loaded.model.backward(&loss)?, &vars)?;
    let mut four = vec![None; vars.len()];
    for micro in items.chunks(2) {
        let (loss, _) = micro_batch_loss(&loaded.model, head, TrainLoss::Vocab, micro, 8)?;
        accumulate(&mut four, &loaded.model.backward(&loss)?, &vars)?;
    }
    for ((name, _), (a, b)) in vars.iter().zip(one.iter().zip(&four)) {
        let (a, b) = (a.as_ref().expect(name), b.as_ref().expect(name));
        let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{name}: max |grad diff| = {diff}");
    }
    Ok(())
}

#[test]
fn the_label_words_loss_is_cross_entropy_over_the_label_words_only() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let model_dir = tiny_model_dir(tmp.path(), 4);
    let cfg = wick::data::load_config(&tiny_config(tmp.path(), &model_dir, TRAIN))?;
    let loaded = wick::model::load(model_dir.to_str().unwrap(), DType::F32, &Device::Cpu)?;
    let (splits, _) = wick::data::load_splits(&cfg.data, wick::data::ReadMode::Strict)?;
    let prompter = Prompter::new(&cfg.prompt, &cfg.data.labels, &loaded.tokenizer, loaded.chat_template.as_deref(), None)?;
    let (encoded, _) = encode(&prompter, &splits.train[..6], 128)?;
    let items: Vec<_> = encoded.iter().collect();
    let head = Head::Verbalizer(prompter.label_tokens());
    let (vocab, _) = micro_batch_loss(&loaded.model, head, TrainLoss::Vocab, &items, 6)?;
    let (words, _) = micro_batch_loss(&loaded.model, head, TrainLoss::LabelWords, &items, 6)?;
    // By hand from the full-vocabulary log-probabilities of the label words, as scoring reads them.
    let scored = wick::score::score(
        &loaded.model,
        prompter.label_tokens(),
        &encoded.iter().map(|e| e.prompt.clone()).collect::<Vec<_>>(),
        wick::score::ScoreOptions { batch_size: 6, max_len: usize::MAX, prefix_cache: false },
    )?;
    let (mut want_vocab, mut want_words) = (0f64, 0f64);
    for (s, e) in scored.iter().zip(&encoded) {
        let lp: Vec<f64> = s.label_logprobs.iter().map(|&x| x as f64).collect();
        let lse = lp.iter().map(|x| x.exp()).sum::<f64>().ln();
        want_vocab -= lp[e.label] / 6.0;
        want_words -= (lp[e.label] - lse) / 6.0;
    }
    let (vocab, words) = (vocab.to_scalar::<f32>()? as f64, words.to_scalar::<f32>()? as f64);
    assert!((vocab - want_vocab).abs() < 1e-4, "vocab loss {vocab} vs {want_vocab}");
    assert!((words - want_words).abs() < 1e-4, "label-words loss {words} vs {want_words}");
    // The label words hold only part of the vocabulary's mass, so renormalising lowers the loss.
    assert!(words < vocab);
    Ok(())
}

#[test]
fn kill_9_then_resume_reproduces_the_uninterrupted_adapter() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let model_dir = tiny_model_dir(tmp.path(), 2);
    let train = format!("{TRAIN}\nmax_steps = 8\nsave_total_limit = 10");
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    std::fs::create_dir_all(&a_dir)?;
    std::fs::create_dir_all(&b_dir)?;
    let cfg_a = tiny_config(&a_dir, &model_dir, &train);
    let cfg_b = tiny_config(&b_dir, &model_dir, &train);

    let status = wick().args(["train", cfg_a.to_str().unwrap(), "--quiet"]).status()?;
    assert!(status.success());
    let uninterrupted = adapter(&a_dir.join("ck/run/step-8"));

    // Kill -9 as soon as the first checkpoint exists, mid-run.
    let mut child = wick().args(["train", cfg_b.to_str().unwrap(), "--quiet"]).stdout(Stdio::null()).spawn()?;
    let run = b_dir.join("ck/run");
    let start = Instant::now();
    while !run.join("step-2/trainer_state.json").exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    child.wait()?;
    assert!(!run.join("step-8").exists(), "the run finished before it was killed");
    let status = wick().args(["train", cfg_b.to_str().unwrap(), "--quiet", "--resume"]).status()?;
    assert!(status.success());
    assert_bit_identical(&uninterrupted, &adapter(&run.join("step-8")));

    // The folder is what PEFT expects.
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("step-8/adapter_config.json"))?)?;
    for key in ["base_model_name_or_path", "r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "task_type", "peft_type"] {
        assert!(cfg.get(key).is_some(), "adapter_config.json lacks {key}");
    }
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["target_modules"].as_array().unwrap().len(), 7);
    assert!(uninterrupted.contains_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
    assert!(uninterrupted.contains_key("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
    assert_eq!(uninterrupted.len(), 2 * 7 * 2);
    Ok(())
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_resume_refuses_another_config() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let model_dir = tiny_model_dir(tmp.path(), 3);
    let train = format!("{}\nmax_steps = 100000", TRAIN.replace("eval_every = 2", "eval_every = 1000"));
    let cfg = tiny_config(tmp.path(), &model_dir, &train);
    let mut child = wick().args(["train", cfg.to_str().unwrap(), "--quiet"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let metrics = tmp.path().join("ck/run/metrics.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |s| s.lines().count()) < 3 {
        assert!(start.elapsed() < Duration::from_secs(120), "training did not start");
        assert!(child.try_wait()?.is_none(), "wick train exited before Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status()?;
    let status = child.wait()?;
    assert_eq!(status.code(), Some(130), "Ctrl-C exits with 130 after saving");
    let saved = wick::train::state::list_checkpoints(&tmp.path().join("ck/run"));
    assert_eq!(saved.len(), 1, "one checkpoint saved on Ctrl-C");

    // Same run name, different LoRA rank: refused with a clear line.
    let text = std::fs::read_to_string(&cfg)?.replace("r = 4", "r = 8");
    std::fs::write(&cfg, text)?;
    let out = wick().args(["train", cfg.to_str().unwrap(), "--quiet", "--resume"]).output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot resume") && err.contains("[lora]"), "{err}");
    Ok(())
}

#[test]
fn a_nan_loss_in_f32_stops_the_run_with_a_message() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let model_dir = tiny_model_dir(tmp.path(), 4);
    // An absurd learning rate blows the adapters up after the first update.
    let train = format!("{}\nmax_steps = 20\nmax_grad_norm = 0.0", TRAIN.replace("lr = 0.01", "lr = 1e30"));
    let cfg = tiny_config(tmp.path(), &model_dir, &train);
    let out = wick().args(["train", cfg.to_str().unwrap(), "--quiet"]).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a diverged run must fail");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("loss became") && err.contains("stopping"), "{err}");
    Ok(())
}

#[test]
fn linear_head_trains_is_saved_as_modules_to_save_and_evaluates() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let model_dir = tiny_model_dir(tmp.path(), 6);
    let train = format!("{TRAIN}\nhead = \"linear\"\nmax_steps = 6");
    let cfg = tiny_config(tmp.path(), &model_dir, &train);
    let out = wick().args(["train", cfg.to_str().unwrap(), "--quiet"]).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = tmp.path().join("ck/run");
    // eval_every = 2 and save_total_limit = 2: steps 4 and 6 are kept.
    let (first, last) = (adapter(&run.join("step-4")), adapter(&run.join("step-6")));
    // The head is saved beside the adapter under PEFT's modules_to_save key, and it trained.
    let key = "base_model.model.score.weight";
    let (h4, h6) = (first.get(key).expect("head saved at step 4"), last.get(key).expect("head saved at step 6"));
    assert_eq!(h6.dims(), [2, 32]);
    assert!((h4 - h6)?.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0, "the head did not change between steps 4 and 6");
    let peft: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("step-6/adapter_config.json"))?)?;
    assert_eq!(peft["modules_to_save"], serde_json::json!(["score"]));
    // eval loads the head back and scores with it.
    let out = wick().args(["eval", "--checkpoint", run.to_str().unwrap(), "--limit", "8", "--main-template-only"]).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let best = std::fs::read_to_string(run.join("best"))?;
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join(format!("eval/{}/test/metrics.json", best.trim())))?)?;
    assert_eq!(metrics["method"], "linear");
    assert_eq!(metrics["n"], 8);
    // The model card: PEFT's header, the dev metrics at its step; test metrics once the whole
    // test split is scored (a --limit run does not count).
    let best_dir = run.join(best.trim());
    let card = std::fs::read_to_string(best_dir.join("README.md"))?;
    assert!(card.contains("library_name: peft") && card.contains("| dev | ") && card.contains("| test | not measured"), "{card}");
    let out = wick().args(["eval", "--checkpoint", run.to_str().unwrap(), "--main-template-only"]).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let card = std::fs::read_to_string(best_dir.join("README.md"))?;
    let test_line = card.lines().find(|l| l.starts_with("| test |")).unwrap_or_default();
    assert!(test_line.ends_with("| 1263 |"), "{card}");
    // Export writes the head beside the merged model, with its labels.
    let merged = tmp.path().join("merged");
    let out = wick().args(["export", "--checkpoint", run.to_str().unwrap(), merged.to_str().unwrap()]).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let head = candle_core::safetensors::load(merged.join("score.safetensors"), &candle_core::Device::Cpu)?;
    assert_eq!(head["score.weight"].dims(), [2, 32]);
    let labels: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(merged.join("labels.json"))?)?;
    assert_eq!(labels["id2label"], serde_json::json!({"0": "negative", "1": "positive"}));
    Ok(())
}

#[test]
fn a_time_budget_ends_training_with_an_evaluated_checkpoint() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let model_dir = tiny_model_dir(tmp.path(), 7);
    // A budget of 6 ms: the first step crosses it.
    let train = format!("{TRAIN}\nmax_steps = 50\nmax_minutes = 0.0001");
    let cfg = tiny_config(tmp.path(), &model_dir, &train);
    let out = wick().args(["train", cfg.to_str().unwrap(), "--quiet"]).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(summary["budget_reached"], true);
    assert_eq!(summary["steps"], 1);
    assert!(tmp.path().join("ck/run/step-1/adapter_model.safetensors").is_file());
    assert_eq!(summary["best"]["step"], 1, "the last step is evaluated");
    Ok(())
}
