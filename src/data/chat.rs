//! The two fine-tuning JSONL layouts: prompt/completion rows and OpenAI chat rows.
//!
//! Both become ordinary (text, label) rows, so `label_map`, `drop_labels` and the strict/lenient
//! policy apply to them exactly as to a CSV. Only surrounding whitespace is trimmed: a prompt's
//! "Review: " prefix is the user's text and stays.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::read::{self, RawRow, kind, scalar};
use super::{Format, Loc, ReadMode, ReadSpec, at};
use crate::config::{Config, DataConfig};
use crate::error::{Error, Result};
use crate::suggest::suggest;

/// The key of a prompt/completion row that holds the text.
pub(crate) const PROMPT_KEY: &str = "prompt";
/// The key of a prompt/completion row that holds the label.
pub(crate) const COMPLETION_KEY: &str = "completion";
/// The key of an OpenAI chat row that holds the turns.
const MESSAGES_KEY: &str = "messages";

/// The layout of a JSONL file, judged from its first record. Only a file whose first object
/// lacks the configured text/label keys is re-read as a fine-tuning layout, so an explicit column
/// setting always wins over a guess.
pub(crate) fn detect(bytes: &[u8], spec: &ReadSpec) -> Format {
    let first = bytes.split(|&b| b == b'\n').find(|line| !line.iter().all(u8::is_ascii_whitespace));
    let Some(Ok(Value::Object(map))) = first.map(serde_json::from_slice::<Value>) else {
        // Not an object: the plain reader gives the precise error.
        return Format::Jsonl;
    };
    if map.contains_key(&spec.text_column) && map.contains_key(&spec.label_column) {
        Format::Jsonl
    } else if map.contains_key(MESSAGES_KEY) {
        Format::OpenaiChat
    } else if map.contains_key(PROMPT_KEY) && map.contains_key(COMPLETION_KEY) {
        Format::PromptCompletion
    } else {
        Format::Jsonl
    }
}

/// Read OpenAI chat rows: the user turn is the text, the assistant turn the raw label; `sink`
/// also gets the row's system turn (None when it has none).
pub(crate) fn read_chat(
    path: &Path,
    bytes: &[u8],
    group: Option<&str>,
    sink: &mut dyn FnMut(RawRow, Option<String>) -> Result<()>,
) -> Result<()> {
    read::for_each_jsonl(path, bytes, &mut |loc, value| {
        let (row, system) = chat_row(path, loc, value, group)?;
        sink(row, system)
    })
}

/// One turn's content as text: null counts as empty (OpenAI allows it on assistant turns).
fn content(here: &str, i: usize, v: Option<Value>) -> Result<String> {
    match v {
        None => Err(Error::Data(format!("{here}: messages[{i}] has no \"content\" (expected {{\"role\": ..., \"content\": ...}})"))),
        Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.trim().to_string()),
        Some(other) => Err(Error::Data(format!("{here}: messages[{i}].content is {}, expected a string", kind(&other)))),
    }
}

/// Pick the user turn, the assistant turn, the system turn and the group out of one chat row.
fn chat_row(path: &Path, loc: Loc, value: Value, group: Option<&str>) -> Result<(RawRow, Option<String>)> {
    let here = at(path, loc);
    let shape = "an array of {\"role\": ..., \"content\": ...} objects";
    let Value::Object(mut map) = value else {
        return Err(Error::Data(format!("{here}: expected an object with key \"messages\", found {}", kind(&value))));
    };
    let messages = match map.remove(MESSAGES_KEY) {
        Some(Value::Array(m)) => m,
        Some(other) => return Err(Error::Data(format!("{here}: key \"messages\" is {}, expected {shape}", kind(&other)))),
        None => {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            return Err(Error::Data(format!("{here}: no key \"messages\"{}", suggest(MESSAGES_KEY, &keys))));
        }
    };
    // (index in messages, content) per role, so messages can point at the offending turns.
    let (mut system, mut user, mut assistant) = (Vec::new(), Vec::new(), Vec::new());
    for (i, m) in messages.into_iter().enumerate() {
        let Value::Object(mut m) = m else {
            return Err(Error::Data(format!("{here}: messages[{i}] is {}, expected an object with \"role\" and \"content\"", kind(&m))));
        };
        let role = match m.remove("role") {
            Some(Value::String(r)) => r,
            Some(other) => return Err(Error::Data(format!("{here}: messages[{i}].role is {}, expected a string", kind(&other)))),
            None => return Err(Error::Data(format!("{here}: messages[{i}] has no \"role\" (expected {shape})"))),
        };
        let text = content(&here, i, m.remove("content"))?;
        match role.trim() {
            "system" => system.push((i, text)),
            "user" => user.push((i, text)),
            "assistant" => assistant.push((i, text)),
            other => {
                return Err(Error::Data(format!(
                    "{here}: messages[{i}].role = {other:?}: expected \"system\", \"user\" or \"assistant\"{}",
                    suggest(other, &["system", "user", "assistant"])
                )));
            }
        }
    }
    let one = |turns: &[(usize, String)], role: &str, meaning: &str| -> Result<(usize, String)> {
        match turns {
            [] => Err(Error::Data(format!("{here}: no {role} turn (wick reads the {role} turn as the {meaning})"))),
            [only] => Ok(only.clone()),
            [a, b, ..] => Err(Error::Data(format!(
                "{here}: {} {role} turns (messages[{}] and messages[{}]); wick reads one user turn and one assistant turn per row",
                turns.len(),
                a.0,
                b.0
            ))),
        }
    };
    let (ui, text) = one(&user, "user", "text")?;
    let (ai, label) = one(&assistant, "assistant", "label")?;
    if ai < ui {
        return Err(Error::Data(format!("{here}: the assistant turn (messages[{ai}]) comes before the user turn (messages[{ui}])")));
    }
    let system = match system.as_slice() {
        [] => None,
        [(_, s)] => Some(s.clone()).filter(|s| !s.is_empty()),
        [a, b, ..] => {
            return Err(Error::Data(format!(
                "{here}: {} system turns (messages[{}] and messages[{}]); give at most one",
                system.len(),
                a.0,
                b.0
            )));
        }
    };
    let label = Some(label).filter(|l| !l.is_empty());
    let group = match group {
        _ if text.is_empty() && label.is_none() => None,
        None => None,
        Some(key) => match map.remove(key) {
            None => {
                let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                return Err(Error::Data(format!("{here}: no key {key:?} (data.group_column){}", suggest(key, &keys))));
            }
            Some(v) => scalar(path, loc, key, v)?,
        },
    };
    Ok((RawRow { loc, text, label, group }, system))
}

/// One distinct system turn of openai-chat rows, and where it first occurred.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemTurn {
    /// The message; None for the rows that have no system turn.
    pub message: Option<String>,
    /// Rows carrying it.
    pub count: usize,
    /// "file:line" of the first of them.
    pub first_at: String,
}

/// Count one row's system turn; `turns` stays in order of first appearance.
pub(crate) fn record(turns: &mut Vec<SystemTurn>, message: Option<String>, at: impl FnOnce() -> String) {
    match turns.iter_mut().find(|t| t.message == message) {
        Some(t) => t.count += 1,
        None => turns.push(SystemTurn { message, count: 1, first_at: at() }),
    }
}

/// Add a later file's system turns, keeping the order of first appearance across files.
pub(crate) fn merge(turns: &mut Vec<SystemTurn>, other: Vec<SystemTurn>) {
    for t in other {
        match turns.iter_mut().find(|s| s.message == t.message) {
            Some(s) => s.count += t.count,
            None => turns.push(t),
        }
    }
}

/// The system message carried by most rows; a tie goes to the one seen first.
pub(crate) fn most_common(turns: &[SystemTurn]) -> Option<&SystemTurn> {
    // max_by_key keeps the last maximum, so reversing makes it the first.
    turns.iter().filter(|t| t.message.is_some()).rev().max_by_key(|t| t.count)
}

/// One problem line when rows carry different system turns (or some carry none), else None.
pub(crate) fn disagreement(turns: &[SystemTurn]) -> Option<String> {
    let top = most_common(turns)?;
    let others: Vec<&SystemTurn> = turns.iter().filter(|t| t.message != top.message).collect();
    let first = others.first()?;
    let other_msgs: Vec<&&SystemTurn> = others.iter().filter(|t| t.message.is_some()).collect();
    let without = others.iter().find(|t| t.message.is_none()).map_or(0, |t| t.count);
    let mut parts = vec![format!("{} on {} row(s)", quote(top.message.as_deref().unwrap_or_default()), top.count)];
    if !other_msgs.is_empty() {
        let rows: usize = other_msgs.iter().map(|t| t.count).sum();
        parts.push(format!("{} other message(s) on {rows} row(s)", other_msgs.len()));
    }
    if without > 0 {
        parts.push(format!("no system turn on {without} row(s)"));
    }
    Some(format!(
        "system turns disagree: {} (first different at {}); the most common becomes prompt.system unless the config sets one",
        parts.join(", "),
        first.first_at
    ))
}

/// A system message shortened for a one-line message.
fn quote(text: &str) -> String {
    const MAX: usize = 50;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}", format!("{}...", &text[..cut])),
        None => format!("{text:?}"),
    }
}

/// The most common system turn of the configured openai-chat file(s), read leniently; None when
/// no file is in that layout or it cannot be read (the strict read reports why, with file:line).
pub fn system_message(cfg: &DataConfig) -> Option<String> {
    let spec = ReadSpec::from_config(cfg).ok()?;
    let files: Vec<&Path> = match (&cfg.train_path, &cfg.dev_path, &cfg.test_path, &cfg.path) {
        (Some(a), Some(b), Some(c), _) => vec![a, b, c],
        (_, _, _, Some(p)) => vec![p],
        _ => return None,
    };
    let mut turns = Vec::new();
    for path in files {
        let by_name = match spec.format {
            Format::Auto => read::format_from_extension(path)?,
            f => f,
        };
        // Only JSONL can be chat rows; skipping the rest keeps config loading cheap for CSVs.
        if !matches!(by_name, Format::Jsonl | Format::OpenaiChat) {
            continue;
        }
        let bytes = read::load_bytes(path).ok()?;
        let (_, report) = super::read_bytes(path, &bytes, by_name, &spec, ReadMode::Lenient).ok()?;
        merge(&mut turns, report.system_turns);
    }
    most_common(&turns).and_then(|t| t.message.clone())
}

/// Without an explicit `prompt.system`, an openai-chat file's system turn is the prompt's: it is
/// the instruction the rows were written for. [`super::load_config`] calls this, since
/// every command loads its config there, so baselines, training and eval see the same prompt.
pub fn apply_system_turn(cfg: &mut Config) {
    if cfg.prompt.system_explicit {
        return;
    }
    if let Some(system) = system_message(&cfg.data) {
        tracing::info!("prompt.system is not set: using the data's most common system turn {system:?}");
        cfg.prompt.system = system;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: &str) -> Result<(RawRow, Option<String>)> {
        chat_row(Path::new("c.jsonl"), Loc::Line(3), serde_json::from_str(line).unwrap(), None)
    }

    #[test]
    fn chat_row_takes_user_assistant_and_system() {
        let (r, sys) = row(r#"{"messages": [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Review: Great "},
            {"role": "assistant", "content": " positive\n", "weight": 1}]}"#)
        .unwrap();
        assert_eq!((r.text.as_str(), r.label.as_deref(), sys.as_deref()), ("Review: Great", Some("positive"), Some("Be brief.")));
        let (r, sys) = row(r#"{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": null}]}"#).unwrap();
        assert_eq!((r.label, sys), (None, None));
    }

    #[test]
    fn chat_row_errors_name_the_turn() {
        let cases = [
            (
                r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "system", "content": "s"}, {"role": "system", "content": "t"}]}"#,
                "2 system turns (messages[2] and messages[3])",
            ),
            (r#"{"messages": [{"role": "assistant", "content": "b"}, {"role": "user", "content": "a"}]}"#, "comes before the user turn"),
            (r#"{"messages": [{"role": "usr", "content": "a"}]}"#, "did you mean `user`?"),
            (r#"{"messages": [{"role": "user", "content": ["a"]}]}"#, "messages[0].content is an array"),
            (r#"{"messages": [{"role": "user"}]}"#, "messages[0] has no \"content\""),
            (r#"{"messages": [{"role": "user", "content": "a"}]}"#, "no assistant turn"),
            (r#"{"messages": [{"role": "assistant", "content": "a"}]}"#, "no user turn"),
            (r#"{"msgs": []}"#, "no key \"messages\", did you mean `msgs`?"),
        ];
        for (line, want) in cases {
            let err = row(line).err().expect(line).to_string();
            assert!(err.starts_with("c.jsonl:3: ") && err.contains(want), "{err}");
        }
    }

    #[test]
    fn most_common_breaks_ties_by_first_seen_and_ignores_missing() {
        let mut turns = Vec::new();
        for (i, m) in [None, None, None, Some("b"), Some("a"), Some("a"), Some("b")].into_iter().enumerate() {
            record(&mut turns, m.map(String::from), || format!("f:{}", i + 1));
        }
        assert_eq!(most_common(&turns).unwrap().message.as_deref(), Some("b"));
        let msg = disagreement(&turns).unwrap();
        assert!(
            msg.contains("\"b\" on 2 row(s), 1 other message(s) on 2 row(s), no system turn on 3 row(s) (first different at f:1)"),
            "{msg}"
        );
        let same = vec![SystemTurn { message: Some("a".into()), count: 4, first_at: "f:1".into() }];
        assert_eq!(disagreement(&same), None);
    }
}
