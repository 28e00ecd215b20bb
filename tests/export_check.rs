//! `wick export` checks the merged model against the adapter on dev before it keeps it: a
//! correct merge passes with every answer the same, and a deliberately corrupted one (the two
//! label words' embedding rows swapped in the written weights) fails and leaves nothing behind.

mod common;

use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use common::{TRAIN, tiny_config, tiny_model_dir};
use wick::export::{ExportFormat, export_checked};

/// Swap two rows of the (tied) embedding matrix in an HF folder's model.safetensors.
fn swap_label_rows(folder: &Path) -> wick::error::Result<()> {
    let file = folder.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let tok = tokenizers::Tokenizer::from_file(folder.join("tokenizer.json")).unwrap();
    let id = |w: &str| tok.encode(w, false).unwrap().get_ids()[0] as usize;
    let (a, b) = (id(" positive"), id(" negative"));
    let emb = tensors["model.embed_tokens.weight"].to_dtype(DType::F32).unwrap();
    let mut rows: Vec<Vec<f32>> = emb.to_vec2().unwrap();
    rows.swap(a, b);
    let (v, d) = emb.dims2().unwrap();
    tensors.insert("model.embed_tokens.weight".into(), Tensor::from_vec(rows.concat(), (v, d), &Device::Cpu).unwrap());
    candle_core::safetensors::save(&tensors, &file).unwrap();
    Ok(())
}

#[test]
fn export_keeps_a_merge_that_agrees_and_refuses_a_corrupted_one() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let model = tiny_model_dir(tmp.path(), 6);
    let cfg_path = tiny_config(tmp.path(), &model, &format!("{TRAIN}\nmax_steps = 2"));
    let out = Command::new(env!("CARGO_BIN_EXE_wick")).arg("train").arg(&cfg_path).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let checkpoint = tmp.path().join("ck/run/step-2");
    let cfg = wick::checkpoint::run_config(&checkpoint, None)?;
    let mut loaded = wick::model::load(&cfg.model.source, DType::F32, &Device::Cpu)?;
    let attached = wick::checkpoint::load_adapter(&checkpoint, &mut loaded.model)?;

    let good = tmp.path().join("merged");
    let (files, agreement) = export_checked(&loaded, attached.head.as_ref(), &cfg, &good, ExportFormat::Hf, DType::F32, 40, &|_| Ok(()))?;
    let a = agreement.unwrap();
    assert_eq!((a.examples, a.agreement), (40, 1.0), "{a:?}");
    assert!(a.max_prob_diff < 1e-4, "{a:?}");
    assert!(files.iter().all(|f| f.starts_with(&good) && f.is_file()), "{files:?}");

    let bad = tmp.path().join("corrupted");
    let err = export_checked(&loaded, attached.head.as_ref(), &cfg, &bad, ExportFormat::Hf, DType::F32, 40, &|p| swap_label_rows(p))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing was written") && err.contains("corrupted"), "{err}");
    assert!(!bad.exists(), "a refused export leaves no folder");
    let leftovers: Vec<_> =
        std::fs::read_dir(tmp.path())?.flatten().filter(|e| e.file_name().to_string_lossy().contains(".check-")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The same check runs on a GGUF export (read back with its Q/K rows un-permuted).
    let gguf = tmp.path().join("merged.gguf");
    let (files, agreement) = export_checked(&loaded, None, &cfg, &gguf, ExportFormat::Gguf, DType::F32, 40, &|_| Ok(()))?;
    assert!(agreement.unwrap().passed());
    assert_eq!(files, [gguf.clone()]);
    Ok(())
}
