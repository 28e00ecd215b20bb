//! `wick init` on real files of every layout writes a config that `wick compare --quick` runs end
//! to end (on the tiny model with the real tokenizer), and `wick compare DATA` needs no config.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn wick(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_wick")).current_dir(dir).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "wick {args:?} panicked: {err}");
    out
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = wick(dir, args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "wick {args:?} failed:\n{stdout}\n{stderr}");
    stdout.to_string()
}

fn repo(path: &str) -> String {
    std::env::current_dir().unwrap().join(path).display().to_string()
}

/// A CSV with numeric labels 0/1/2 from the three shifted review sets (IMDb, Yelp, Amazon).
fn numeric_csv(dir: &Path) -> PathBuf {
    let mut w = csv::Writer::from_path(dir.join("numeric.csv")).unwrap();
    w.write_record(["id", "review", "site"]).unwrap();
    let mut id = 0;
    for (label, name) in ["imdb", "yelp", "amazon"].iter().enumerate() {
        let text = std::fs::read_to_string(repo(&format!("assets/ood/{name}.json"))).unwrap();
        let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        for r in rows.iter().take(60) {
            w.write_record([id.to_string(), r["text"].as_str().unwrap().trim().to_string(), label.to_string()]).unwrap();
            id += 1;
        }
    }
    w.flush().unwrap();
    dir.join("numeric.csv")
}

/// init, then the config it wrote runs `compare --quick --limit 40`; returns init's output and
/// the config text.
fn init_then_compare(dir: &Path, model: &Path, data: &str, expect_labels: &[&str], test_examples: usize) -> (String, String) {
    let out = dir.join("c.toml");
    let _ = std::fs::remove_file(&out);
    let printed = ok(dir, &["init", data, "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let text = std::fs::read_to_string(&out).unwrap();
    let cfg = wick::data::load_config(&out).unwrap();
    assert_eq!(cfg.data.labels, expect_labels, "{printed}");
    assert!(printed.contains("next: wick compare"), "{printed}");
    ok(dir, &["compare", out.to_str().unwrap(), "--quick", "--limit", "40"]);
    let path = dir.join(format!("checkpoints/{}-quick/compare/report.json", cfg.output.run_name));
    let report = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["test_examples"], test_examples);
    (printed, text)
}

#[test]
fn init_writes_configs_that_compare_runs_on_every_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = common::tiny_model_dir(dir, 5);

    // OpenAI chat: the assistant turn is the label, the rows' system turn the system message.
    let (printed, text) = init_then_compare(dir, &model, &repo("examples/openai-chat.jsonl"), &["negative", "positive"], 8);
    assert!(printed.contains("format: openai-chat"), "{printed}");
    assert!(!text.contains("system ="), "the rows' own system turn is used: {text}");
    assert!(text.contains("train_fraction = 0.5"), "32 rows take the small-file fractions: {text}");

    // Prompt/completion.
    let (printed, _) = init_then_compare(dir, &model, &repo("examples/seed-prompt-completion.jsonl"), &["negative", "positive"], 8);
    assert!(printed.contains("format: prompt-completion"), "{printed}");

    // Three classes, two label-like columns ("label" and "sentiment"): chosen by name, said so.
    let (printed, text) = init_then_compare(dir, &model, &repo("assets/review-sites.jsonl"), &["movie", "restaurant", "shop"], 40);
    assert!(printed.contains("label column: \"label\" by its name") && printed.contains("\"sentiment\" (2 values)"), "{printed}");
    assert!(text.contains("Classify the text as one of: movie, restaurant, shop."), "{text}");

    // Numeric labels in a CSV with an id column: named as code-like, with a word suggested.
    let csv = numeric_csv(dir);
    let (printed, text) = init_then_compare(dir, &model, csv.to_str().unwrap(), &["0", "1", "2"], 40);
    assert!(printed.contains("text column: \"review\""), "{printed}");
    assert!(printed.contains("\"0\" is a numeric or code-like label"), "{printed}");
    assert!(printed.contains("its texts most often use"), "a word is suggested from the texts: {printed}");
    assert!(text.contains("label_words = { \"0\" = \" 0\", \"1\" = \" 1\", \"2\" = \" 2\" }"), "{text}");
}

#[test]
fn init_refuses_to_overwrite_and_to_guess() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("c.toml");
    std::fs::write(&out, "# mine\n").unwrap();
    let run = wick(dir, &["init", &repo("examples/openai-chat.jsonl"), "--out", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("already exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "# mine\n", "an existing config is never touched");

    // Two text-like columns of the same length: ambiguous, so the flag is named.
    let csv = dir.join("two.csv");
    let mut body = String::from("title,body,label\n");
    for i in 0..40 {
        body.push_str(&format!("a title of some length {i},a body of some length {i},{}\n", i % 2));
    }
    std::fs::write(&csv, body).unwrap();
    let run = wick(dir, &["init", csv.to_str().unwrap(), "--out", dir.join("two.toml").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("\"title\"") && err.contains("\"body\"") && err.contains("--text-column"), "{err}");
    assert!(!dir.join("two.toml").exists());
    // With the flag it goes through.
    let gguf = repo(common::GGUF);
    ok(dir, &["init", csv.to_str().unwrap(), "--text-column", "body", "--model", &gguf, "--out", dir.join("two.toml").to_str().unwrap()]);

    // One class: refused with its count.
    let one = dir.join("one.csv");
    std::fs::write(&one, "text,label\n".to_string() + &(0..20).map(|i| format!("a fine text here {i},yes\n")).collect::<String>()).unwrap();
    let run = wick(dir, &["init", one.to_str().unwrap(), "--label-column", "label", "--out", dir.join("one.toml").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("single class") && err.contains("\"yes\" 20"), "{err}");
}

#[test]
fn compare_on_a_data_file_writes_the_config_it_used_next_to_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // `wick compare DATA` uses the default model's path, relative to where it runs.
    let assets = dir.join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    let data = dir.join("chat.jsonl");
    std::fs::copy(repo("examples/openai-chat.jsonl"), &data).unwrap();
    let gguf = dir.join(wick::init::DEFAULT_MODEL);
    std::os::unix::fs::symlink(repo(common::GGUF), &gguf).unwrap();
    let printed = ok(dir, &["compare", "chat.jsonl", "--quick", "--limit", "8"]);
    let first = printed.lines().next().unwrap();
    assert!(first.contains("chat.jsonl is a data file") && first.contains("checkpoints/chat-quick/compare/config.toml"), "{first}");
    let used = std::fs::read_to_string(dir.join("checkpoints/chat-quick/compare/config.toml")).unwrap();
    let used = wick::config::Config::parse(&used).unwrap();
    assert_eq!(used.data.labels, ["negative", "positive"]);
    assert!(dir.join("checkpoints/chat-quick/compare/report.json").exists());
}
