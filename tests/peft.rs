//! Adapters written by Python PEFT (folders built here the way PEFT 0.21 writes them, not by
//! wick's writer), and the merged export in both formats.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use wick::model::{Batch, LoadedModel};

const LAYERS: usize = 2;

/// Deterministic values in [-scale, scale).
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    wick::ops::self_check::uniform_values(n, seed).into_iter().map(|v| v * scale).collect()
}

/// Every field of PEFT 0.21's `LoraConfig.to_dict()` for a LoRA on `targets`, as `save_pretrained` writes it.
fn peft_config(target_modules: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({
        "alora_invocation_tokens": null, "alpha_pattern": {}, "arrow_config": null, "auto_mapping": null,
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "bias": "none", "corda_config": null,
        "ensure_weight_tying": false, "eva_config": null, "exclude_modules": null, "fan_in_fan_out": false,
        "inference_mode": true, "init_lora_weights": true, "kasa_config": null, "layer_replication": null,
        "layers_pattern": null, "layers_to_transform": null, "loftq_config": {}, "lora_alpha": 8,
        "lora_bias": false, "lora_dropout": 0.05, "lora_ga_config": null, "megatron_config": null,
        "megatron_core": "megatron.core", "modules_to_save": null, "monteclora_config": null, "peft_type": "LORA",
        "peft_version": "0.21.2", "qalora_group_size": 16, "r": 4, "rank_pattern": {}, "revision": null,
        "target_modules": target_modules, "target_parameters": null, "task_type": "CAUSAL_LM",
        "trainable_token_indices": null, "use_bdlora": null, "use_dora": false, "use_qalora": false,
        "use_rslora": false, "velora_config": null
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// (module, r, scale) of each adapted projection: what the test expects PEFT to have built.
type Plan = Vec<(String, usize, f64)>;

/// Write a PEFT folder: f16 tensors, keys in PEFT's state-dict order; returns the f32 values
/// (after the f16 rounding) of every A and B.
fn write_peft(dir: &Path, config: &serde_json::Value, plan: &Plan, model: &LoadedModel) -> HashMap<String, (Tensor, Tensor)> {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("adapter_config.json"), serde_json::to_string_pretty(config).unwrap()).unwrap();
    let shapes: HashMap<String, (usize, usize)> =
        model.model.projection_shapes().into_iter().map(|m| (m.name, (m.out_features, m.in_features))).collect();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut out = HashMap::new();
    for (i, (module, r, _)) in plan.iter().enumerate() {
        let (o, inp) = shapes[module];
        let a = Tensor::from_vec(values(2 * i as u64 + 1, r * inp, 0.5), (*r, inp), &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
        let b = Tensor::from_vec(values(2 * i as u64 + 2, o * r, 0.2), (o, *r), &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
        tensors.push((format!("base_model.model.{module}.lora_A.weight"), a.clone()));
        tensors.push((format!("base_model.model.{module}.lora_B.weight"), b.clone()));
        out.insert(module.clone(), (a.to_dtype(DType::F32).unwrap(), b.to_dtype(DType::F32).unwrap()));
    }
    let views: Vec<(String, &Tensor)> = tensors.iter().map(|(k, t)| (k.clone(), t)).collect();
    safetensors::serialize_to_file(views, None, &dir.join("adapter_model.safetensors")).unwrap();
    out
}

fn load(dir: &Path) -> LoadedModel {
    wick::model::load(&dir.display().to_string(), DType::F32, &Device::Cpu).unwrap()
}

fn logits(m: &LoadedModel, text: &str) -> Tensor {
    let ids = m.tokenizer.encode(text, false).unwrap().get_ids().to_vec();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let hidden = m.model.forward_hidden(&Batch { input_ids: &input, lengths: &[ids.len()] }, None, false).unwrap();
    m.model.logits(&hidden).unwrap().squeeze(0).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// A copy of the tiny model folder whose projections are W + s·B·A, computed here by hand.
fn hand_merged(base: &Path, out: &Path, plan: &Plan, ab: &HashMap<String, (Tensor, Tensor)>) -> PathBuf {
    std::fs::create_dir_all(out).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(base.join(f), out.join(f)).unwrap();
    }
    let mut w = candle_core::safetensors::load(base.join("model.safetensors"), &Device::Cpu).unwrap();
    for (module, _, scale) in plan {
        let (a, b) = &ab[module];
        let key = format!("{module}.weight");
        let merged = (&w[&key] + (b.matmul(a).unwrap() * *scale).unwrap()).unwrap();
        w.insert(key, merged);
    }
    candle_core::safetensors::save(&w, out.join("model.safetensors")).unwrap();
    out.to_path_buf()
}

const TEXTS: [&str; 2] = ["An instant classic, warm and funny.", "Dull, overlong and badly acted: 2 hours lost."];

fn check_adapter(config: serde_json::Value, plan: Plan) {
    let tmp = tempfile::tempdir().unwrap();
    let base = common::tiny_model_dir(tmp.path(), 3);
    let mut model = load(&base);
    let peft_dir = tmp.path().join("peft-adapter");
    let ab = write_peft(&peft_dir, &config, &plan, &model);
    let attached = wick::checkpoint::load_adapter(&peft_dir, &mut model.model).unwrap();
    assert!(attached.run.is_none());
    assert!(attached.check.contains("shapes only"), "{}", attached.check);
    let reference = load(&hand_merged(&base, &tmp.path().join("hand"), &plan, &ab));
    let plain = load(&base);
    for text in TEXTS {
        let (got, want) = (logits(&model, text), logits(&reference, text));
        let d = max_diff(&got, &want);
        let top = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        // f32 rounding relative to the logits' size: GEMM kernels differ by CPU (AVX2 or AVX-512),
        // a wrong scale or a missed module differs by far more (the check below needs > 1e-2).
        assert!(d < 4e-6 * (1.0 + top), "{text}: adapted logits differ from W + s·B·A by {d} (largest |logit| {top})");
        assert!(max_diff(&got, &logits(&plain, text)) > 1e-2, "the adapter changed nothing");
    }
}

#[test]
fn peft_adapter_with_rank_and_alpha_patterns_equals_hand_merge() {
    let config = peft_config(
        serde_json::json!(["v_proj", "q_proj", "down_proj"]),
        serde_json::json!({"rank_pattern": {"down_proj": 2}, "alpha_pattern": {"model.layers.0.self_attn.v_proj": 32}}),
    );
    let mut plan = Plan::new();
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        plan.push((format!("{p}.self_attn.q_proj"), 4, 8.0 / 4.0));
        plan.push((format!("{p}.self_attn.v_proj"), 4, if i == 0 { 32.0 / 4.0 } else { 8.0 / 4.0 }));
        plan.push((format!("{p}.mlp.down_proj"), 2, 8.0 / 2.0));
    }
    check_adapter(config, plan);
}

#[test]
fn peft_adapter_with_regex_targets_rslora_and_layer_choice_equals_hand_merge() {
    // A regex string is full-matched; layers_to_transform applies to list targets only.
    let config = peft_config(
        serde_json::json!(r".*\.layers\.1\.(self_attn\.(k|o)_proj|mlp\.gate_proj)"),
        serde_json::json!({"use_rslora": true, "lora_alpha": 6}),
    );
    let plan: Plan =
        ["self_attn.k_proj", "self_attn.o_proj", "mlp.gate_proj"].iter().map(|m| (format!("model.layers.1.{m}"), 4, 6.0 / 2.0)).collect();
    check_adapter(config, plan);
    let listed = peft_config(serde_json::json!(["up_proj"]), serde_json::json!({"layers_to_transform": [0], "layers_pattern": "layers"}));
    check_adapter(listed, vec![("model.layers.0.mlp.up_proj".into(), 4, 2.0)]);
}

fn load_error(config: serde_json::Value, plan: Plan, edit: impl FnOnce(&Path)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let base = common::tiny_model_dir(tmp.path(), 3);
    let mut model = load(&base);
    let dir = tmp.path().join("bad");
    write_peft(&dir, &config, &plan, &model);
    edit(&dir);
    let err = wick::checkpoint::load_adapter(&dir, &mut model.model).unwrap_err().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn foreign_adapters_that_do_not_fit_are_refused_with_one_line() {
    let q0 = || vec![("model.layers.0.self_attn.q_proj".to_string(), 4, 2.0)];
    let only_q = || peft_config(serde_json::json!(["q_proj"]), serde_json::json!({"layers_to_transform": 0}));
    // A key for a layer the model does not have.
    let err = load_error(only_q(), q0(), |dir| {
        let p = dir.join("adapter_model.safetensors");
        let mut t = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
        let a = t.remove("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").unwrap();
        t.insert("base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight".into(), a);
        candle_core::safetensors::save(&t, &p).unwrap();
    });
    assert!(err.contains("layers.7.self_attn.q_proj.lora_A.weight matches no projection of the base model"), "{err}");
    // A rank that does not match the config.
    let err = load_error(peft_config(serde_json::json!(["q_proj"]), serde_json::json!({"r": 3, "layers_to_transform": 0})), q0(), |_| {});
    assert!(err.contains("do not fit") && err.contains("r = 3"), "{err}");
    // A tensor for a module the config does not target.
    let err = load_error(peft_config(serde_json::json!(["k_proj"]), serde_json::json!({})), q0(), |_| {});
    assert!(err.contains("is not a target"), "{err}");
    // DoRA, named by its field.
    let err = load_error(peft_config(serde_json::json!(["q_proj"]), serde_json::json!({"use_dora": true})), q0(), |_| {});
    assert!(err.contains("use_dora"), "{err}");
    // Pickle is never loaded.
    let err = load_error(only_q(), q0(), |dir| {
        std::fs::rename(dir.join("adapter_model.safetensors"), dir.join("adapter_model.bin")).unwrap();
    });
    assert!(err.contains("adapter_model.bin") && err.contains("safe_serialization=True"), "{err}");
}

#[test]
fn peft_linear_head_is_read_from_modules_to_save() {
    let tmp = tempfile::tempdir().unwrap();
    let base = common::tiny_model_dir(tmp.path(), 3);
    let mut model = load(&base);
    let dir = tmp.path().join("seq-cls");
    let cfg =
        peft_config(serde_json::json!(["q_proj"]), serde_json::json!({"task_type": "SEQ_CLS", "modules_to_save": ["classifier", "score"]}));
    let plan: Plan = (0..LAYERS).map(|i| (format!("model.layers.{i}.self_attn.q_proj"), 4, 2.0)).collect();
    write_peft(&dir, &cfg, &plan, &model);
    let p = dir.join("adapter_model.safetensors");
    let mut t = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
    let head = Tensor::from_vec(values(99, 2 * 32, 0.1), (2, 32), &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
    t.insert("base_model.model.score.weight".into(), head.clone());
    candle_core::safetensors::save(&t, &p).unwrap();
    let attached = wick::checkpoint::load_adapter(&dir, &mut model.model).unwrap();
    let got = attached.head.expect("the score head").to_dtype(DType::F32).unwrap();
    assert_eq!(max_diff(&got, &head.to_dtype(DType::F32).unwrap()), 0.0);
}

#[test]
fn merged_export_matches_the_adapter_model_in_hf_and_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let base = common::tiny_model_dir(tmp.path(), 5);
    let mut model = load(&base);
    let dir = tmp.path().join("adapter");
    let plan: Plan = (0..LAYERS)
        .flat_map(|i| ["self_attn.q_proj", "self_attn.k_proj", "mlp.up_proj"].map(|m| (format!("model.layers.{i}.{m}"), 4, 2.0)))
        .collect();
    write_peft(&dir, &peft_config(serde_json::json!(["q_proj", "k_proj", "up_proj"]), serde_json::json!({})), &plan, &model);
    wick::checkpoint::load_adapter(&dir, &mut model.model).unwrap();
    let want: Vec<Tensor> = TEXTS.iter().map(|t| logits(&model, t)).collect();

    let hf = tmp.path().join("merged-hf");
    let files = wick::export::export_merged(&model, None, &hf, wick::export::ExportFormat::Hf, DType::F32).unwrap();
    assert!(files.iter().any(|f| f.ends_with("model.safetensors")));
    let gguf = tmp.path().join("merged.gguf");
    wick::export::export_merged(&model, None, &gguf, wick::export::ExportFormat::Gguf, DType::F32).unwrap();
    // Exporting leaves the adapter model exactly as it was.
    assert_eq!(max_diff(&logits(&model, TEXTS[0]), &want[0]), 0.0);

    for (what, path) in [("hf", hf.clone()), ("gguf", gguf.clone())] {
        let exported = load(&path);
        assert_eq!(
            exported.tokenizer.encode(TEXTS[1], false).unwrap().get_ids(),
            model.tokenizer.encode(TEXTS[1], false).unwrap().get_ids()
        );
        assert_eq!(exported.chat_template, model.chat_template, "{what}: chat template");
        for (text, w) in TEXTS.iter().zip(&want) {
            let d = max_diff(&logits(&exported, text), w);
            assert!(d < 1e-4, "{what}: exported logits differ by {d}");
        }
    }
    // wick → GGUF → wick → GGUF again: the second file loads to the same logits (the round trip).
    let reloaded = load(&gguf);
    let again = tmp.path().join("again.gguf");
    wick::export::export_merged(&reloaded, None, &again, wick::export::ExportFormat::Gguf, DType::F32).unwrap();
    assert!(max_diff(&logits(&load(&again), TEXTS[0]), &want[0]) < 1e-4);
    // f16 export: within f16 rounding of the f32 logits.
    let half = tmp.path().join("half");
    wick::export::export_merged(&model, None, &half, wick::export::ExportFormat::Hf, DType::F16).unwrap();
    let d = max_diff(&logits(&load(&half), TEXTS[0]), &want[0]);
    assert!(d < 5e-2, "f16 export differs by {d}");
    // An existing, non-empty output is refused, and nothing is written.
    let err = wick::export::export_merged(&model, None, &hf, wick::export::ExportFormat::Hf, DType::F32).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
}

fn wick(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wick")).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "wick panicked: {err}");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), err)
}

#[test]
fn cli_evaluates_and_exports_a_peft_folder_given_a_config() {
    let tmp = tempfile::tempdir().unwrap();
    let base = common::tiny_model_dir(tmp.path(), 3);
    let model = load(&base);
    let cfg = common::tiny_config(tmp.path(), &base, common::TRAIN);
    let dir = tmp.path().join("peft-adapter");
    let plan: Plan = (0..LAYERS).map(|i| (format!("model.layers.{i}.self_attn.v_proj"), 4, 2.0)).collect();
    write_peft(&dir, &peft_config(serde_json::json!(["v_proj"]), serde_json::json!({})), &plan, &model);
    let (d, c) = (dir.to_str().unwrap(), cfg.to_str().unwrap());

    // Without a config there is no model, prompt or label set: one line that says what to add.
    let (ok, _, err) = wick(&["eval", "--checkpoint", d]);
    assert!(!ok);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("no wick_run.toml") && lines[0].contains("--config"), "{err}");

    let (ok, out, err) = wick(&["eval", "--checkpoint", d, "--config", c, "--split", "test", "--limit", "8", "--main-template-only"]);
    assert!(ok, "{err}");
    assert!(err.contains("checked by tensor shapes only"), "{err}");
    assert!(out.contains("accuracy") || out.contains("Accuracy"), "{out}");

    let out_dir = tmp.path().join("merged");
    let (ok, out, err) =
        wick(&["export", "--checkpoint", d, out_dir.to_str().unwrap(), "--format", "gguf", "--config", c, "--dtype", "f16"]);
    assert!(ok, "{err}");
    assert!(out.contains("model.gguf"), "{out}");
    assert!(out.contains("merged model check: 200 dev examples"), "the f16 GGUF is checked against the adapter: {out}");
    assert!(out_dir.join("model.gguf").is_file());

    // A missing checkpoint folder: the OS error once, with the path.
    let (ok, _, err) = wick(&["eval", "--checkpoint", tmp.path().join("nowhere").to_str().unwrap(), "--config", c]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("(os error"), "{err}");
}
