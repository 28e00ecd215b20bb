//! A data file read without a config: its format from the extension or the first bytes, and every
//! column of every row, so `wick init` can choose the text and label columns by their contents.

use std::path::Path;

use serde_json::Value;

use super::{Format, Loc, read};
use crate::error::{Error, Result};

/// Every column of a data file, cell by cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The format the file was read as (never [`Format::Auto`]).
    pub format: Format,
    /// Column names, in file order (JSON keys as rows first bring them, each row's in key order). The fine-tuning
    /// layouts have fixed columns: `prompt`/`completion`, and `user turn`/`assistant turn`.
    pub columns: Vec<String>,
    /// One cell per column per row, trimmed; `None` when empty, missing or not a scalar.
    pub rows: Vec<Vec<Option<String>>>,
    /// The most common system turn of openai-chat rows.
    pub system: Option<String>,
}

impl Table {
    /// The non-empty values of column `i`.
    pub fn values(&self, i: usize) -> impl Iterator<Item = &str> {
        self.rows.iter().filter_map(move |r| r.get(i).and_then(|c| c.as_deref()))
    }
}

/// Read every column of `path`: the format from its extension (after `.bz2`/`.gz`), else from
/// its first bytes (`[`: a JSON array, `{`: JSONL, a tab in the first line: TSV, else CSV). JSONL
/// whose first object has `messages`, or `prompt` and `completion`, is a fine-tuning layout.
pub fn read_table(path: &Path) -> Result<Table> {
    let bytes = read::load_bytes(path)?;
    let format = read::format_from_extension(path).unwrap_or_else(|| format_from_content(&bytes));
    let format = match format {
        Format::Jsonl => fine_tuning_layout(&bytes).unwrap_or(Format::Jsonl),
        f => f,
    };
    let mut table = Table { format, columns: Vec::new(), rows: Vec::new(), system: None };
    match format {
        Format::Csv | Format::Tsv => read_delimited(path, &bytes, if format == Format::Csv { b',' } else { b'\t' }, &mut table)?,
        Format::OpenaiChat => {
            table.columns = vec!["user turn".into(), "assistant turn".into()];
            let mut turns = Vec::new();
            super::chat::read_chat(path, &bytes, None, &mut |row, system| {
                super::chat::record(&mut turns, system, String::new);
                table.rows.push(vec![Some(row.text).filter(|t| !t.is_empty()), row.label]);
                Ok(())
            })?;
            table.system = super::chat::most_common(&turns).and_then(|t| t.message.clone());
        }
        Format::Jsonl | Format::PromptCompletion => {
            if format == Format::PromptCompletion {
                // The layout's columns come first, text then label, whatever order the keys have.
                table.columns = vec![super::chat::PROMPT_KEY.into(), super::chat::COMPLETION_KEY.into()];
            }
            read::for_each_jsonl(path, &bytes, &mut |loc, value| object_cells(path, loc, value, &mut table))?
        }
        Format::Json | Format::Auto => {
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Data(format!("{}:{}:{}: invalid JSON: {e}", path.display(), e.line(), e.column())))?;
            let Value::Array(items) = value else {
                return Err(Error::Data(format!(
                    "{}: the top level is {}, expected an array of objects",
                    path.display(),
                    read::kind(&value)
                )));
            };
            for (i, item) in items.into_iter().enumerate() {
                object_cells(path, Loc::Element(i), item, &mut table)?;
            }
        }
    }
    // Rows read before a key first appeared are shorter than the header.
    let width = table.columns.len();
    for row in &mut table.rows {
        row.resize(width, None);
    }
    if table.rows.is_empty() {
        return Err(Error::Data(format!("{}: no rows", path.display())));
    }
    Ok(table)
}

/// The format of a file whose extension says nothing, from its first non-blank byte and line.
fn format_from_content(bytes: &[u8]) -> Format {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let first_line = bytes[start..].split(|&b| b == b'\n').next().unwrap_or_default();
    match bytes.get(start) {
        Some(b'[') => Format::Json,
        Some(b'{') => Format::Jsonl,
        _ if first_line.contains(&b'\t') => Format::Tsv,
        _ => Format::Csv,
    }
}

/// The fine-tuning layout a JSONL file's first object has, if any.
fn fine_tuning_layout(bytes: &[u8]) -> Option<Format> {
    let first = bytes.split(|&b| b == b'\n').find(|line| !line.iter().all(u8::is_ascii_whitespace))?;
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(first) else { return None };
    if map.contains_key("messages") {
        Some(Format::OpenaiChat)
    } else if map.contains_key(super::chat::PROMPT_KEY) && map.contains_key(super::chat::COMPLETION_KEY) && map.len() == 2 {
        Some(Format::PromptCompletion)
    } else {
        None
    }
}

fn read_delimited(path: &Path, bytes: &[u8], delimiter: u8, table: &mut Table) -> Result<()> {
    let shown = path.display();
    let mut rdr = csv::ReaderBuilder::new().delimiter(delimiter).has_headers(true).flexible(false).from_reader(bytes);
    let header = rdr.headers().map_err(|e| Error::Data(format!("{shown}:1: {e}")))?;
    table.columns = header.iter().map(|h| h.trim().to_string()).collect();
    if table.columns.iter().all(String::is_empty) {
        return Err(Error::Data(format!("{shown}:1: the file has no header row (wick init needs column names)")));
    }
    for record in rdr.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            Error::Data(format!("{shown}:{line}: {e}"))
        })?;
        table.rows.push(record.iter().map(|c| Some(c.trim().to_string()).filter(|c| !c.is_empty())).collect());
    }
    Ok(())
}

/// One JSON object's scalar values, placed under their keys (new keys become new columns).
fn object_cells(path: &Path, loc: Loc, value: Value, table: &mut Table) -> Result<()> {
    let Value::Object(map) = value else {
        return Err(Error::Data(format!("{}: expected an object, found {}", super::at(path, loc), read::kind(&value))));
    };
    let mut row = vec![None; table.columns.len()];
    for (key, v) in map {
        let i = match table.columns.iter().position(|c| *c == key) {
            Some(i) => i,
            None => {
                table.columns.push(key.clone());
                row.push(None);
                table.columns.len() - 1
            }
        };
        row[i] = match v {
            Value::String(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
            Value::Number(n) => Some(read::number_string(&n)),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
    }
    table.rows.push(row);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_content_looks_at_the_first_bytes() {
        assert_eq!(format_from_content(b"  [{\"a\": 1}]"), Format::Json);
        assert_eq!(format_from_content(b"{\"a\": 1}\n"), Format::Jsonl);
        assert_eq!(format_from_content(b"text\tlabel\nx\ty\n"), Format::Tsv);
        assert_eq!(format_from_content(b"text,label\n"), Format::Csv);
    }

    #[test]
    fn fine_tuning_layouts_are_recognised_by_their_keys() {
        assert_eq!(fine_tuning_layout(b"{\"messages\": []}\n"), Some(Format::OpenaiChat));
        assert_eq!(fine_tuning_layout(b"\n{\"prompt\": \"a\", \"completion\": \"b\"}"), Some(Format::PromptCompletion));
        assert_eq!(fine_tuning_layout(b"{\"prompt\": \"a\", \"completion\": \"b\", \"id\": 3}"), None);
        assert_eq!(fine_tuning_layout(b"{\"text\": \"a\", \"label\": 1}"), None);
    }

    #[test]
    fn jsonl_keys_become_columns_as_rows_bring_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rows.data");
        std::fs::write(&p, "{\"text\": \"a b\", \"label\": 1}\n{\"label\": 0, \"text\": \"c\", \"src\": \"x\"}\n").unwrap();
        let t = read_table(&p).unwrap();
        assert_eq!(t.format, Format::Jsonl);
        assert_eq!(t.columns, ["label", "text", "src"]);
        assert_eq!(t.rows[0], [Some("1".to_string()), Some("a b".to_string()), None]);
        assert_eq!(t.values(2).collect::<Vec<_>>(), ["x"]);
    }
}
