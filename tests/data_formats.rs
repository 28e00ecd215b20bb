//! The fine-tuning JSONL layouts (prompt/completion, OpenAI chat): reading, detection, bad rows,
//! the system turn reaching the prompt, and `data check` on the examples.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use wick::config::{Config, DataConfig};
use wick::data::{Example, Format, ReadMode, ReadSpec, check, load_splits, read_file, read_file_with};

fn labels() -> Vec<String> {
    vec!["negative".into(), "positive".into()]
}

/// Read `path` strictly and return the error, checking it is one line that names the file.
fn read_error(path: &Path, spec: &ReadSpec) -> String {
    let err = read_file_with(path, spec, ReadMode::Strict).expect_err("bad input must be an error").to_string();
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(err.contains(&*name), "error does not name the file: {err}");
    assert!(!err.contains('\n'), "error is not one line: {err}");
    err
}

/// Write `lines` as a JSONL file named `name` in `dir`.
fn jsonl(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// One OpenAI chat row; `system` None leaves the system turn out.
fn chat(system: Option<&str>, user: &str, assistant: &str) -> String {
    let mut turns = Vec::new();
    if let Some(s) = system {
        turns.push(serde_json::json!({"role": "system", "content": s}));
    }
    turns.push(serde_json::json!({"role": "user", "content": user}));
    turns.push(serde_json::json!({"role": "assistant", "content": assistant}));
    serde_json::json!({ "messages": turns }).to_string()
}

fn pairs(examples: &[Example]) -> Vec<(&str, usize, usize)> {
    examples.iter().map(|e| (e.text.as_str(), e.label, e.line)).collect()
}

/// fresh/rotten mapped and "plot" dropped, as for the CSV fixtures.
fn mapped_spec(format: Format) -> ReadSpec {
    let mut spec = ReadSpec { format, ..ReadSpec::new(labels()) };
    spec.label_map = BTreeMap::from([("fresh".into(), "positive".into()), ("rotten".into(), "negative".into())]);
    spec.drop_labels = vec!["plot".into()];
    spec
}

#[test]
fn prompt_completion_reads_prompt_and_completion_through_label_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = jsonl(
        dir.path(),
        "seed.jsonl",
        &[
            r#"{"prompt": "  Review: Great fun from start to end.\n", "completion": " fresh"}"#,
            "",
            r#"{"prompt": "Review: A plot summary.", "completion": "plot"}"#,
            r#"{"prompt": "Review: Dull and overlong.", "completion": "negative", "extra": 1}"#,
        ],
    );
    let want = vec![("Review: Great fun from start to end.", 1, 1), ("Review: Dull and overlong.", 0, 4)];
    // Explicit, auto (by extension, then by the first row's keys) and plain jsonl all agree.
    for format in [Format::PromptCompletion, Format::Auto, Format::Jsonl] {
        let (examples, report) = read_file_with(&path, &mapped_spec(format), ReadMode::Strict).unwrap();
        assert_eq!(pairs(&examples), want, "{format}");
        assert_eq!(report.formats, vec!["prompt-completion"], "{format}");
        assert_eq!((report.rows, report.dropped["plot"]), (3, 1), "{format}");
        assert!(report.system_turns.is_empty());
    }
}

#[test]
fn configured_columns_win_over_layout_detection() {
    let dir = tempfile::tempdir().unwrap();
    let path = jsonl(dir.path(), "both.jsonl", &[r#"{"text": "the text", "label": "positive", "prompt": "p", "completion": "negative"}"#]);
    let (examples, report) = read_file_with(&path, &ReadSpec::new(labels()), ReadMode::Strict).unwrap();
    assert_eq!(pairs(&examples), vec![("the text", 1, 1)]);
    assert_eq!(report.formats, vec!["jsonl"]);
    // Without the configured keys and without a known layout, the plain reader's error stands.
    let path = jsonl(dir.path(), "other.jsonl", &[r#"{"review": "x", "completion": "positive"}"#]);
    let err = read_error(&path, &ReadSpec::new(labels()));
    assert!(err.contains("other.jsonl:1: no key \"text\""), "{err}");
}

#[test]
fn openai_chat_reads_user_turn_and_assistant_label() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Some("Classify the review.");
    let rows = [
        chat(sys, " A joyous, sharp comedy. ", "fresh"),
        chat(sys, "Dull and overlong.", " negative\n"),
        chat(sys, "Just the plot.", "plot"),
        chat(None, "Tedious from start to finish.", "rotten"),
    ];
    let path = jsonl(dir.path(), "chat.jsonl", &rows.iter().map(String::as_str).collect::<Vec<_>>());
    let want = vec![("A joyous, sharp comedy.", 1, 1), ("Dull and overlong.", 0, 2), ("Tedious from start to finish.", 0, 4)];
    for format in [Format::OpenaiChat, Format::Auto] {
        let (examples, report) = read_file_with(&path, &mapped_spec(format), ReadMode::Strict).unwrap();
        assert_eq!(pairs(&examples), want, "{format}");
        assert_eq!(report.formats, vec!["openai-chat"]);
        assert_eq!(report.dropped["plot"], 1);
        assert_eq!(report.system_message(), Some("Classify the review."));
        let counts: Vec<(Option<&str>, usize)> = report.system_turns.iter().map(|t| (t.message.as_deref(), t.count)).collect();
        assert_eq!(counts, vec![(Some("Classify the review."), 3), (None, 1)]);
    }
    // A group column is a top-level key of the row.
    let mut row: serde_json::Value = serde_json::from_str(&chat(None, "a b c", "positive")).unwrap();
    row["movie"] = "m1".into();
    let path = jsonl(dir.path(), "grouped.jsonl", &[&row.to_string()]);
    let spec = ReadSpec { group_column: Some("movie".into()), ..ReadSpec::new(labels()) };
    let (examples, _) = read_file_with(&path, &spec, ReadMode::Strict).unwrap();
    assert_eq!(examples[0].group.as_deref(), Some("m1"));
}

#[test]
fn example_files_read_as_their_layouts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (config, format) in
        [("configs/example-prompt-completion.toml", "prompt-completion"), ("configs/example-openai-chat.toml", "openai-chat")]
    {
        let cfg = wick::data::load_config(&root.join(config)).unwrap();
        let (splits, report) = load_splits(&cfg.data, ReadMode::Strict).unwrap();
        assert_eq!(report.formats, vec![format]);
        assert_eq!(splits.len(), 32, "{config}");
        assert_eq!(splits.train.iter().chain(&splits.dev).chain(&splits.test).filter(|e| e.label == 1).count(), 16);
        let checked = check(&cfg.data, None).unwrap();
        assert_eq!(checked.problems(), Vec::<String>::new(), "{config} must pass `wick data check`");
        assert!(checked.render_table().contains(&format!("({format})")));
    }
    let cfg = wick::data::load_config(&root.join("configs/example-prompt-completion.toml")).unwrap();
    let (examples, _) = read_file(cfg.data.path.as_deref().unwrap(), &cfg.data, ReadMode::Strict).unwrap();
    assert!(examples.iter().all(|e| e.text.starts_with("Review: ")), "the prompt's prefix is the user's text and is kept");
}

#[test]
fn bad_chat_rows_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = chat(None, "fine words here", "positive");
    let user = r#"{"role": "user", "content": "u"}"#;
    let asst = r#"{"role": "assistant", "content": "positive"}"#;
    let cases = [
        (format!(r#"{{"messages": [{user}]}}"#), "no assistant turn"),
        (format!(r#"{{"messages": [{user}, {user}, {asst}]}}"#), "2 user turns (messages[0] and messages[1])"),
        (format!(r#"{{"messages": [{user}, {asst}, {asst}]}}"#), "2 assistant turns (messages[1] and messages[2])"),
        (chat(None, "fine words", "neutral"), "unknown label \"neutral\""),
        (r#"{"messages": [{"role": "user", "content": "u"}"#.to_string(), "invalid JSON"),
        (
            r#"{"messages": "hello"}"#.to_string(),
            "key \"messages\" is a string, expected an array of {\"role\": ..., \"content\": ...} objects",
        ),
        (r#"{"messages": ["hello"]}"#.to_string(), "messages[0] is a string, expected an object with \"role\" and \"content\""),
        (format!(r#"{{"messages": [{{"content": "u"}}, {asst}]}}"#), "messages[0] has no \"role\""),
        (chat(None, "", "positive"), "empty text in the user turn"),
        (chat(None, "fine words", ""), "no label (the assistant turn is empty)"),
    ];
    for (i, (bad, want)) in cases.iter().enumerate() {
        let name = format!("bad{i}.jsonl");
        let path = jsonl(dir.path(), &name, &[&good, "", bad]);
        for format in [Format::OpenaiChat, Format::Auto] {
            let err = read_error(&path, &ReadSpec { format, ..ReadSpec::new(labels()) });
            assert!(err.starts_with(&format!("{}:3: ", path.display())) && err.contains(want), "want {want:?}: {err}");
        }
    }
    // Structural problems stay errors when `data check` reads leniently; label problems are counted.
    let path = jsonl(dir.path(), "bad0.jsonl", &[&good, &cases[0].0]);
    assert!(read_file_with(&path, &ReadSpec::new(labels()), ReadMode::Lenient).is_err());
    let path = jsonl(dir.path(), "bad3.jsonl", &[&good, &cases[3].0]);
    let (_, report) = read_file_with(&path, &ReadSpec::new(labels()), ReadMode::Lenient).unwrap();
    assert!(report.unknown_labels["neutral"].first_at.as_deref().unwrap().ends_with("bad3.jsonl:2"));
}

#[test]
fn bad_prompt_completion_rows_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"prompt": "Review: fine", "completion": "positive"}"#;
    let path = jsonl(dir.path(), "pc.jsonl", &[good, r#"{"prompt": "Review: odd", "completion": "meh"}"#]);
    let err = read_error(&path, &ReadSpec::new(labels()));
    assert!(err.contains("pc.jsonl:2: unknown label \"meh\""), "{err}");
    let path = jsonl(dir.path(), "pc2.jsonl", &[good, r#"{"prompt": "Review: odd", "completon": "positive"}"#]);
    let err = read_error(&path, &ReadSpec::new(labels()));
    assert!(err.contains("pc2.jsonl:2: no key \"completion\", did you mean `completon`?"), "{err}");
    let err = read_error(&path, &ReadSpec { format: Format::PromptCompletion, ..ReadSpec::new(labels()) });
    assert!(err.contains("pc2.jsonl:2: no key \"completion\""), "{err}");
    let path = jsonl(dir.path(), "pc3.jsonl", &[good, r#"{"prompt": "", "completion": "positive"}"#]);
    let err = read_error(&path, &ReadSpec::new(labels()));
    assert!(err.contains("pc3.jsonl:2: empty text in column \"prompt\""), "{err}");
}

/// A config file in `dir` whose data is `data`, plus `extra` TOML.
fn config_for(dir: &Path, data: &Path, extra: &str) -> Config {
    let path = dir.join("run.toml");
    let toml = format!(
        "[data]\npath = {:?}\ntrain_fraction = 0.5\ndev_fraction = 0.25\ntest_fraction = 0.25\n{extra}",
        data.display().to_string()
    );
    std::fs::write(&path, toml).unwrap();
    wick::data::load_config(&path).unwrap()
}

/// A word-level tokenizer in which " negative" and " positive" are one token each.
fn word_tokenizer() -> tokenizers::Tokenizer {
    let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
        "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
        "model":{"type":"WordLevel","vocab":{"[UNK]":0,"negative":1,"positive":2},"unk_token":"[UNK]"}}"#;
    json.parse().unwrap()
}

const CHAT_TEMPLATE: &str =
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";

#[test]
fn chat_system_turn_reaches_the_prompt_unless_the_config_sets_one() {
    use wick::prompt::Prompter;
    let dir = tempfile::tempdir().unwrap();
    let sys = "You grade film reviews for a newspaper.";
    let rows: Vec<String> = (0..8).map(|i| chat(Some(sys), &format!("review number {i} here"), ["negative", "positive"][i % 2])).collect();
    let data = jsonl(dir.path(), "chat.jsonl", &rows.iter().map(String::as_str).collect::<Vec<_>>());
    let labels = labels();
    let tok = word_tokenizer();

    let cfg = config_for(dir.path(), &data, "");
    assert_eq!(cfg.prompt.system, sys);
    for chat_template in [None, Some(CHAT_TEMPLATE)] {
        let prompt = Prompter::new(&cfg.prompt, &labels, &tok, chat_template, None).unwrap().render("Loved it.", &[]).unwrap();
        assert!(prompt.contains(sys) && prompt.contains("Loved it."), "{prompt}");
        if chat_template.is_some() {
            assert!(prompt.starts_with(&format!("<system>{sys}</system>")), "{prompt}");
        }
    }
    // `wick config` prints the effective system message.
    assert!(toml::to_string_pretty(&cfg).unwrap().contains(sys));

    let cfg = config_for(dir.path(), &data, "[prompt]\nsystem = \"Mine.\"\n");
    assert_eq!(cfg.prompt.system, "Mine.");
    let prompt = Prompter::new(&cfg.prompt, &labels, &tok, Some(CHAT_TEMPLATE), None).unwrap().render("Loved it.", &[]).unwrap();
    assert!(prompt.starts_with("<system>Mine.</system>") && !prompt.contains(sys), "{prompt}");
    // Explicitly empty means no system message, not "take the file's".
    assert_eq!(config_for(dir.path(), &data, "[prompt]\nsystem = \"\"\n").prompt.system, "");

    // Other formats keep the default.
    let csv = dir.path().join("plain.csv");
    std::fs::write(&csv, "text,label\na fine film,positive\n").unwrap();
    assert_eq!(config_for(dir.path(), &csv, "").prompt.system, wick::config::PromptConfig::default().system);
}

#[test]
fn check_reports_disagreeing_system_turns() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = ("Classify the review.", "You are a pirate.");
    let rows = [
        chat(Some(a), "one fine review", "positive"),
        chat(Some(a), "two dull reviews", "negative"),
        chat(Some(b), "three good reviews", "positive"),
        chat(None, "four bad reviews", "negative"),
        chat(Some(a), "five nice reviews", "positive"),
        chat(Some(b), "six awful reviews", "negative"),
        chat(Some(a), "seven great reviews", "positive"),
        chat(Some(a), "eight poor reviews", "negative"),
    ];
    let data = jsonl(dir.path(), "mixed.jsonl", &rows.iter().map(String::as_str).collect::<Vec<_>>());
    let cfg = config_for(dir.path(), &data, "");
    assert_eq!(cfg.prompt.system, a, "the most common system turn wins");
    // Disagreement is a data-quality problem, not a read error.
    read_file(&data, &cfg.data, ReadMode::Strict).unwrap();
    let report = check(&cfg.data, None).unwrap();
    let problems = report.problems();
    let line = problems.iter().find(|p| p.starts_with("system turns disagree")).expect("disagreement is a problem");
    let want = "\"Classify the review.\" on 5 row(s), 1 other message(s) on 2 row(s), no system turn on 1 row(s)";
    assert!(line.contains(want), "{line}");
    assert!(line.contains(&format!("first different at {}:3", data.display())), "{line}");
    assert!(report.render_table().contains("system turns disagree"));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["read"]["system_turns"][1]["count"], 2);

    let same = jsonl(dir.path(), "same.jsonl", &rows[..2].iter().map(String::as_str).collect::<Vec<_>>());
    let report = check(&DataConfig { path: Some(same), ..cfg.data.clone() }, None).unwrap();
    assert!(!report.problems().iter().any(|p| p.contains("system turns")), "{:?}", report.problems());
}

#[test]
fn explicit_system_is_detected_and_not_printed() {
    assert!(!Config::parse("[prompt]\nk_shot = 2\n").unwrap().prompt.system_explicit);
    assert!(!Config::parse("").unwrap().prompt.system_explicit);
    // An explicitly empty system message is a choice (no system turn), not an absence.
    assert!(Config::parse("[prompt]\nsystem = \"\"\n").unwrap().prompt.system_explicit);
    assert!(Config::parse("prompt = { system = \"Be brief.\" }\n").unwrap().prompt.system_explicit);
    let printed = toml::to_string_pretty(&Config::parse("[prompt]\nsystem = \"x\"\n").unwrap()).unwrap();
    assert!(!printed.contains("system_explicit"), "`wick config` output must stay loadable: {printed}");
    Config::parse(&printed).unwrap();
}
