//! The CPU bf16 path (`model.dtype = "bf16"`: bf16 frozen projections on oneDNN): the same loss
//! and LoRA gradients as f32 within bfloat16 rounding, on a tiny random Llama with the real
//! tokenizer and data; and a clean refusal where the CPU has no bf16 instructions.

mod common;

use std::process::Command;

use candle_core::{DType, Device, Tensor};
use common::{TRAIN, tiny_config, tiny_model_dir};
use wick::prompt::Prompter;
use wick::score::Head;
use wick::train::batches::encode;
use wick::train::optim::accumulate;
use wick::train::{TrainLoss, micro_batch_loss};

/// The bf16 path is there, or the test may skip (a CPU without bf16, oneDNN not installed);
/// `WICK_REQUIRE_ONEDNN` makes a missing library on a bf16 CPU a failure.
fn bf16_ready() -> bool {
    let ready = wick::ops::bf16_gemm_available() && wick::ops::blas::blas().is_some();
    if !ready && wick::ops::onednn::cpu_has_bf16() && std::env::var_os("WICK_REQUIRE_ONEDNN").is_some() {
        panic!("WICK_REQUIRE_ONEDNN is set and the CPU has bf16, but oneDNN or a BLAS did not load");
    }
    ready
}

fn cosine(a: &Tensor, b: &Tensor) -> f32 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(&a) * norm(&b)).max(1e-30)
}

#[test]
fn bf16_projections_give_the_f32_loss_and_gradients_within_rounding() -> anyhow::Result<()> {
    if !bf16_ready() {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let model_dir = tiny_model_dir(tmp.path(), 4);
    let cfg = wick::data::load_config(&tiny_config(tmp.path(), &model_dir, TRAIN))?;
    let (splits, _) = wick::data::load_splits(&cfg.data, wick::data::ReadMode::Strict)?;
    let mut results = Vec::new();
    for dtype in [DType::F32, DType::BF16] {
        let mut loaded = wick::model::load(model_dir.to_str().unwrap(), dtype, &Device::Cpu)?;
        assert_eq!(loaded.model.projection_dtype(), dtype, "bf16 on the CPU stores the projections in bf16");
        assert_eq!(loaded.model.dtype(), DType::F32, "and everything else in f32");
        loaded.model.add_lora(&["all-linear".into()], 4, 2.0, 0.0, 5)?;
        // The same non-zero B on both, so that every factor has a gradient.
        for (i, (name, var)) in loaded.model.lora_vars().into_iter().enumerate() {
            if name.ends_with("lora_B.weight") {
                let n = var.elem_count();
                let values: Vec<f32> = wick::ops::self_check::uniform_values(n, i as u64).into_iter().map(|v| v * 0.1).collect();
                var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu)?)?;
            }
        }
        let vars = loaded.model.lora_vars();
        let prompter = Prompter::new(&cfg.prompt, &cfg.data.labels, &loaded.tokenizer, loaded.chat_template.as_deref(), None)?;
        let (encoded, _) = encode(&prompter, &splits.train[..8], 128)?;
        let items: Vec<_> = encoded.iter().collect();
        let head = Head::Verbalizer(prompter.label_tokens());
        let (loss, _) = micro_batch_loss(&loaded.model, head, TrainLoss::Vocab, &items, 8)?;
        let mut grads = vec![None; vars.len()];
        accumulate(&mut grads, &loaded.model.backward(&loss)?, &vars)?;
        let names: Vec<String> = vars.iter().map(|(n, _)| n.clone()).collect();
        results.push((loss.to_scalar::<f32>()?, names, grads));
    }
    let (loss32, names, g32) = &results[0];
    let (loss16, _, g16) = &results[1];
    // bf16 keeps 8 mantissa bits: each projection's inputs are rounded by at most 2^-9 relative.
    assert!((loss32 - loss16).abs() < 1e-2 * loss32.abs().max(1.0), "loss f32 {loss32} against bf16 {loss16}");
    for ((name, a), b) in names.iter().zip(g32).zip(g16) {
        let (a, b) = (a.as_ref().expect("f32 gradient"), b.as_ref().expect("bf16 gradient"));
        let c = cosine(a, b);
        assert!(c > 0.99, "{name}: gradient cosine {c} between f32 and bf16");
    }
    Ok(())
}

#[test]
fn without_bf16_instructions_bf16_is_refused_in_one_line_and_auto_stays_f32() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let model_dir = tiny_model_dir(tmp.path(), 4);
    let cfg = tiny_config(tmp.path(), &model_dir, TRAIN);
    let text = std::fs::read_to_string(&cfg)?;
    let run = |dtype: &str| {
        std::fs::write(&cfg, text.replace("[model]\n", &format!("[model]\ndtype = \"{dtype}\"\n"))).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wick"))
            .args(["baseline", cfg.to_str().unwrap(), "--strategy", "zero-shot", "--split", "dev", "--limit", "4", "--skip-cache-check"])
            .env("WICK_CPU_BF16", "off")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (ok, err) = run("bf16");
    assert!(!ok && !err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("wick: ")).collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    assert!(lines[0].contains("model.dtype") && lines[0].contains("AVX512-BF16"), "{}", lines[0]);
    let (ok, err) = run("auto");
    assert!(ok, "auto falls back to f32 on a CPU without bf16: {err}");
    Ok(())
}

#[test]
fn a_checkpoint_trained_in_f32_loads_on_the_bf16_path() -> anyhow::Result<()> {
    if !bf16_ready() {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let model_dir = tiny_model_dir(tmp.path(), 4);
    let source = model_dir.to_str().unwrap();
    let f32_model = wick::model::load(source, DType::F32, &Device::Cpu)?.model;
    let named = f32_model.named_weights();
    let recomputed = wick::model::llama::fingerprint_of(named.iter().map(|(n, t)| (n.as_str(), t)))?;
    assert_eq!(f32_model.fingerprint(), recomputed, "the fingerprint is the hash of the weights as named_weights lists them");
    let mut bf16 = wick::model::load(source, DType::BF16, &Device::Cpu)?.model;
    assert_eq!(bf16.fingerprint(), f32_model.fingerprint(), "the fingerprint is taken before the projections are rounded");
    let rounded = bf16.named_weights();
    let of_rounded = wick::model::llama::fingerprint_of(rounded.iter().map(|(n, t)| (n.as_str(), t)))?;
    assert_ne!(of_rounded, recomputed, "the rounded weights hash differently, so the test can tell");

    let mut cfg = wick::data::load_config(&tiny_config(tmp.path(), &model_dir, TRAIN))?;
    (cfg.lora.r, cfg.lora.alpha) = (4, 8.0);
    let mut trained = f32_model;
    trained.add_lora(&["all-linear".into()], 4, 8.0, 0.0, 3)?;
    let ckpt = tmp.path().join("ckpt");
    wick::checkpoint::save_adapter(&ckpt, &trained, None, &cfg, trained.fingerprint())?;
    let attached = wick::checkpoint::load_adapter(&ckpt, &mut bf16)?;
    assert!(attached.check.contains("fingerprint matches"), "{}", attached.check);
    Ok(())
}
