//! Bad input at the command line: one line naming what and where, a non-zero exit, no panic.

mod common;

use std::path::Path;
use std::process::Command;

fn wick(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wick")).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "wick panicked: {err}");
    (out.status.success(), err)
}

fn assert_one_line_error(args: &[&str], needles: &[&str]) {
    let (ok, err) = wick(args);
    assert!(!ok, "{args:?} should fail");
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("wick: ")).collect();
    assert_eq!(lines.len(), 1, "expected one error line for {args:?}, got: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "{args:?}: {:?} lacks {n:?}", lines[0]);
    }
}

fn copy_tiny(tmp: &Path) -> std::path::PathBuf {
    common::tiny_model_dir(tmp, 9)
}

#[test]
fn model_sources_that_cannot_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Missing file / folder.
    assert_one_line_error(&["model", "info", "nowhere/model.gguf"], &["nowhere/model.gguf"]);
    // Truncated GGUF: the real header, then the file stops.
    let bytes = std::fs::read(common::GGUF).unwrap();
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..4_000_000]).unwrap();
    assert_one_line_error(&["model", "info", truncated.to_str().unwrap()], &["truncated.gguf", "truncated"]);
    // Not a GGUF at all.
    let garbage = dir.join("garbage.gguf");
    std::fs::write(&garbage, b"definitely not gguf").unwrap();
    assert_one_line_error(&["model", "info", garbage.to_str().unwrap()], &["garbage.gguf"]);

    let model = copy_tiny(dir);
    let src = model.to_str().unwrap();
    // Truncated safetensors.
    let st = model.join("model.safetensors");
    let full = std::fs::read(&st).unwrap();
    std::fs::write(&st, &full[..full.len() / 2]).unwrap();
    assert_one_line_error(&["model", "info", src], &["model.safetensors"]);
    std::fs::write(&st, &full).unwrap();
    // Config/weight shape mismatch.
    let cfg_path = model.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(&cfg_path, cfg.replace("\"intermediate_size\":64", "\"intermediate_size\":96")).unwrap();
    assert_one_line_error(&["model", "info", src], &["mlp.gate_proj.weight", "shape"]);
    // Unsupported architecture.
    std::fs::write(&cfg_path, cfg.replace("\"model_type\":\"llama\"", "\"model_type\":\"gpt2\"")).unwrap();
    assert_one_line_error(&["model", "info", src], &["config.json", "unsupported architecture", "gpt2"]);
    std::fs::write(&cfg_path, &cfg).unwrap();
    // Tokenizer missing.
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    assert_one_line_error(&["model", "info", src], &["tokenizer.json"]);
}

#[test]
fn configs_that_cannot_load() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let p = write("typo.toml", "[train]\nbatchsize = 4\n");
    assert_one_line_error(&["config", &p], &["typo.toml", "line 2", "batchsize", "batch_size"]);
    let p = write("type.toml", "[train]\nlr = \"fast\"\n");
    assert_one_line_error(&["config", &p], &["type.toml", "line 2"]);
    let p = write("nodata.toml", "[data]\npath = \"missing.csv\"\n");
    assert_one_line_error(&["config", &p], &["nodata.toml", "data.path", "missing.csv"]);
    let p = write("notext.toml", "[data]\npath = \"Cargo.toml\"\n[prompt]\ntemplate = \"no slot\"\n");
    assert_one_line_error(&["config", &p], &["notext.toml", "prompt.template", "{text}"]);
    let p = write("retriever.toml", "[data]\npath = \"Cargo.toml\"\n[prompt]\nretriever = \"dense\"\n");
    assert_one_line_error(&["config", &p], &["retriever.toml", "prompt.retriever", "bm25", "minilm"]);
    let p = write("minilm.toml", "[data]\npath = \"Cargo.toml\"\n[prompt]\nretriever = \"minilm\"\nretriever_model = \"no/minilm\"\n");
    assert_one_line_error(&["config", &p], &["minilm.toml", "prompt.retriever_model", "no/minilm", "fetch-assets"]);
    assert_one_line_error(&["config", "does/not/exist.toml"], &["does/not/exist.toml"]);
}

#[test]
fn data_check_reports_bad_rows_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("bad.csv");
    std::fs::write(&csv, "text,label\ngood movie,positive\n\"unterminated,negative\nx,y,z\n").unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, format!("[model]\nsource = \"{}\"\n[data]\npath = \"{}\"\n", common::GGUF, csv.display())).unwrap();
    assert_one_line_error(&["data", "check", cfg.to_str().unwrap()], &["bad.csv"]);
}

/// A config on the tiny model over `csv`, writing under `dir/ck`.
fn tiny_csv_config(dir: &Path, csv: &str, extra: &str) -> String {
    let model = copy_tiny(dir);
    let data = dir.join("d.csv");
    std::fs::write(&data, csv).unwrap();
    let text = format!(
        "[model]\nsource = \"{}\"\n[data]\npath = \"{}\"\ntrain_fraction = 0.5\ndev_fraction = 0.25\ntest_fraction = 0.25\n[output]\ndir = \"{}\"\n{extra}",
        model.display(),
        data.display(),
        dir.join("ck").display()
    );
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg.to_str().unwrap().to_string()
}

#[test]
fn a_split_with_a_single_class_is_refused_with_the_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: String = (0..40).map(|i| format!("a perfectly fine review number {i},positive\n")).collect();
    let cfg = tiny_csv_config(tmp.path(), &format!("text,label\n{rows}"), "[train]\nmax_steps = 2\n");
    for cmd in [vec!["train", &cfg], vec!["baseline", &cfg, "--strategy", "zero-shot"], vec!["compare", &cfg]] {
        assert_one_line_error(&cmd, &["single class", "\"negative\" 0", "\"positive\" 2"]);
    }
    assert!(!tmp.path().join("ck").exists(), "nothing is written");
    // `data check` reports it rather than refusing.
    let (ok, _) = wick(&["data", "check", &cfg, "--strict"]);
    assert!(!ok);
}

#[test]
fn a_max_seq_len_that_cannot_hold_the_prompt_is_refused_with_the_length_needed() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: String = (0..40).map(|i| format!("a perfectly fine review number {i},{}\n", ["negative", "positive"][i % 2])).collect();
    let cfg = tiny_csv_config(tmp.path(), &format!("text,label\n{rows}"), "[train]\nmax_seq_len = 4\nmax_steps = 2\n");
    assert_one_line_error(&["predict", "--strategy", "zero-shot", "--config", &cfg, "a fine film"], &["train.max_seq_len = 4", "tokens"]);
    assert_one_line_error(&["train", &cfg], &["train.max_seq_len = 4", "tokens"]);
    assert!(!tmp.path().join("ck").exists(), "nothing is written");
}

#[test]
fn eval_limit_zero_is_refused_before_anything_loads() {
    // The checkpoint does not exist: the flag is checked first, so the message is about the flag.
    assert_one_line_error(&["eval", "--checkpoint", "no/such/checkpoint", "--limit", "0"], &["--limit 0"]);
    assert_one_line_error(&["baseline", "no/such.toml", "--limit", "0"], &["--limit 0"]);
    assert_one_line_error(&["eval", "--checkpoint", "no/such/checkpoint", "--batch-size", "0"], &["--batch-size 0"]);
}
