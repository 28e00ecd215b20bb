//! File decoding: decompression and the CSV/TSV/JSONL/JSON record readers (the fine-tuning JSONL
//! layouts are in `chat.rs`).
//!
//! Readers only turn bytes into [`RawRow`]s; label normalisation and the strict/lenient policy
//! live in the parent module so every format gets the same rules.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::{Format, Loc, at};
use crate::error::{Error, Result};
use crate::suggest::suggest;

/// One record before label normalisation.
pub(crate) struct RawRow {
    /// Where the record is, for messages and [`super::Example::line`].
    pub loc: Loc,
    /// The text, trimmed (empty when the cell is empty or JSON null).
    pub text: String,
    /// The raw label, trimmed; `None` when the cell is empty or JSON null.
    pub label: Option<String>,
    /// The group value, trimmed; `None` when there is no group column or the cell is empty.
    pub group: Option<String>,
}

/// Which columns (or JSON keys) to pick.
pub(crate) struct Columns<'a> {
    pub text: &'a str,
    pub label: &'a str,
    pub group: Option<&'a str>,
}

/// The format named by the file's extension, after stripping `.bz2` / `.gz`.
pub(crate) fn format_from_extension(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_string_lossy().to_lowercase();
    let name = name.strip_suffix(".bz2").or_else(|| name.strip_suffix(".gz")).unwrap_or(&name);
    match name.rsplit_once('.')?.1 {
        "csv" => Some(Format::Csv),
        "tsv" | "tab" => Some(Format::Tsv),
        "jsonl" | "ndjson" => Some(Format::Jsonl),
        "json" => Some(Format::Json),
        _ => None,
    }
}

/// Read a file into memory, decompressing bzip2 or gzip (by extension or magic bytes).
pub(crate) fn load_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let (ext_bz, ext_gz) = (name.ends_with(".bz2"), name.ends_with(".gz"));
    let (magic_bz, magic_gz) = (raw.starts_with(b"BZh"), raw.starts_with(&[0x1f, 0x8b]));
    let shown = path.display();
    // An extension that promises compression but bytes that are not is almost always a
    // mislabelled or truncated download; saying so beats a confusing CSV error later.
    if ext_bz && !magic_bz {
        return Err(Error::Data(format!("{shown}: not a bzip2 file (no BZh header); re-download it or remove the .bz2 extension")));
    }
    if ext_gz && !magic_gz {
        return Err(Error::Data(format!("{shown}: not a gzip file (no gzip header); re-download it or remove the .gz extension")));
    }
    let mut out = Vec::new();
    if magic_bz {
        bzip2::read::MultiBzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::Data(format!("{shown}: corrupt or truncated bzip2 data: {e}")))?;
    } else if magic_gz {
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::Data(format!("{shown}: corrupt or truncated gzip data: {e}")))?;
    } else {
        out = raw;
    }
    // Spreadsheet exports often start with a BOM, which would otherwise glue onto the first header.
    if out.starts_with(b"\xEF\xBB\xBF") {
        out.drain(..3);
    }
    Ok(out)
}

/// Read delimited text (CSV or TSV) with a header row, handing each record to `sink`.
pub(crate) fn read_delimited(
    path: &Path,
    bytes: &[u8],
    delimiter: u8,
    cols: &Columns,
    sink: &mut dyn FnMut(RawRow) -> Result<()>,
) -> Result<()> {
    let shown = path.display();
    let mut rdr = csv::ReaderBuilder::new().delimiter(delimiter).has_headers(true).flexible(false).from_reader(bytes);
    let header = rdr.byte_headers().map_err(|e| csv_error(path, &e))?.clone();
    let names = header
        .iter()
        .map(|h| {
            std::str::from_utf8(h)
                .map(|s| s.trim().to_string())
                .map_err(|e| Error::Data(format!("{shown}:1: invalid UTF-8 in the header (at byte {} of a column name)", e.valid_up_to())))
        })
        .collect::<Result<Vec<_>>>()?;
    let find = |col: &str| -> Result<usize> {
        names.iter().position(|n| n == col).ok_or_else(|| {
            if names.iter().all(|n| n.is_empty()) {
                return Error::Data(format!("{shown}:1: no column {col:?}: the file has no header row"));
            }
            let valid: Vec<&str> = names.iter().map(String::as_str).collect();
            Error::Data(format!("{shown}:1: no column {col:?}{}", suggest(col, &valid)))
        })
    };
    let text_i = find(cols.text)?;
    let label_i = find(cols.label)?;
    let group_i = cols.group.map(find).transpose()?;
    let mut record = csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => return Err(csv_error(path, &e)),
        }
        let line = record.position().map_or(0, |p| p.line() as usize);
        let cell = |i: usize, col: &str| -> Result<String> {
            let bytes = record.get(i).unwrap_or_default();
            std::str::from_utf8(bytes).map(|s| s.trim().to_string()).map_err(|e| {
                Error::Data(format!("{shown}:{line}: invalid UTF-8 in column {col:?} (at byte {} of the field)", e.valid_up_to()))
            })
        };
        let text = cell(text_i, cols.text)?;
        let label = Some(cell(label_i, cols.label)?).filter(|s| !s.is_empty());
        let group = match (group_i, cols.group) {
            (Some(i), Some(col)) => Some(cell(i, col)?).filter(|s| !s.is_empty()),
            _ => None,
        };
        sink(RawRow { loc: Loc::Line(line), text, label, group })?;
    }
}

/// One line for a csv error, naming the file and the record's line.
fn csv_error(path: &Path, err: &csv::Error) -> Error {
    let shown = path.display();
    match err.kind() {
        csv::ErrorKind::UnequalLengths { pos, expected_len, len } => {
            let line = pos.as_ref().map_or(0, |p| p.line());
            Error::Data(format!(
                "{shown}:{line}: row has {len} fields but the header has {expected_len} (an unquoted delimiter inside a text?)"
            ))
        }
        csv::ErrorKind::Utf8 { pos, err } => {
            let line = pos.as_ref().map_or(0, |p| p.line());
            Error::Data(format!("{shown}:{line}: invalid UTF-8 in field {}", err.field() + 1))
        }
        _ => {
            let line = err.position().map_or(0, |p| p.line());
            Error::Data(format!("{shown}:{line}: {err}"))
        }
    }
}

/// Read one JSON object per line; blank lines are skipped.
pub(crate) fn read_jsonl(path: &Path, bytes: &[u8], cols: &Columns, sink: &mut dyn FnMut(RawRow) -> Result<()>) -> Result<()> {
    for_each_jsonl(path, bytes, &mut |loc, value| sink(object_row(path, loc, value, cols)?))
}

/// Parse each non-blank line as JSON and hand it on with its line; every JSONL layout shares this
/// so UTF-8 and JSON errors read the same whatever the rows mean.
pub(crate) fn for_each_jsonl(path: &Path, bytes: &[u8], each: &mut dyn FnMut(Loc, Value) -> Result<()>) -> Result<()> {
    let shown = path.display();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        let line = std::str::from_utf8(line)
            .map_err(|e| Error::Data(format!("{shown}:{lineno}: invalid UTF-8 (at byte {} of the line)", e.valid_up_to())))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| Error::Data(format!("{shown}:{lineno}: invalid JSON: {} (column {})", json_message(&e), e.column())))?;
        each(Loc::Line(lineno), value)?;
    }
    Ok(())
}

/// Read a JSON array of objects.
pub(crate) fn read_json_array(path: &Path, bytes: &[u8], cols: &Columns, sink: &mut dyn FnMut(RawRow) -> Result<()>) -> Result<()> {
    let shown = path.display();
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::Data(format!("{shown}:{}:{}: invalid JSON: {}", e.line(), e.column(), json_message(&e))))?;
    let Value::Array(items) = value else {
        return Err(Error::Data(format!(
            "{shown}: the top level is {}, expected an array of objects (for one object per line use format = \"jsonl\")",
            kind(&value)
        )));
    };
    for (i, item) in items.into_iter().enumerate() {
        sink(object_row(path, Loc::Element(i), item, cols)?)?;
    }
    Ok(())
}

/// serde_json's message without its " at line L column C" tail, which we print our own way.
fn json_message(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let tail = format!(" at line {} column {}", e.line(), e.column());
    msg.strip_suffix(&tail).unwrap_or(&msg).to_string()
}

/// "a number", "an array", ... for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON label or group value as a string: numbers in their shortest form (1.0 -> "1").
pub(crate) fn scalar(path: &Path, loc: Loc, key: &str, v: Value) -> Result<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Number(n) => Ok(Some(number_string(&n))),
        other => Err(Error::Data(format!("{}: key {key:?} is {}, expected a string or number", at(path, loc), kind(&other)))),
    }
}

/// `1` and `1.0` both become "1" so label_map keys need not care how the file wrote them.
pub(crate) fn number_string(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
        _ => n.to_string(),
    }
}

/// Pick text, label and group out of one JSON object.
fn object_row(path: &Path, loc: Loc, value: Value, cols: &Columns) -> Result<RawRow> {
    let Value::Object(mut map) = value else {
        return Err(Error::Data(format!(
            "{}: expected an object with keys {:?} and {:?}, found {}",
            at(path, loc),
            cols.text,
            cols.label,
            kind(&value)
        )));
    };
    let keys: Vec<String> = map.keys().cloned().collect();
    let missing = |key: &str| {
        let valid: Vec<&str> = keys.iter().map(String::as_str).collect();
        Error::Data(format!("{}: no key {key:?}{}", at(path, loc), suggest(key, &valid)))
    };
    let text = match map.remove(cols.text) {
        None => return Err(missing(cols.text)),
        Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(other) => {
            return Err(Error::Data(format!("{}: key {:?} is {}, expected a string", at(path, loc), cols.text, kind(&other))));
        }
    };
    let label = match map.remove(cols.label) {
        // A missing label next to an empty text is the sentinel some exports append; anything
        // else without the key means the label column is misnamed.
        None if text.is_empty() => None,
        None => return Err(missing(cols.label)),
        Some(v) => scalar(path, loc, cols.label, v)?,
    };
    let group = match cols.group {
        // Sentinels are skipped anyway and often carry no other keys.
        _ if text.is_empty() && label.is_none() => None,
        None => None,
        Some(key) => match map.remove(key) {
            None => return Err(missing(key)),
            Some(v) => scalar(path, loc, key, v)?,
        },
    };
    Ok(RawRow { loc, text, label, group })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_detection_strips_compression() {
        assert_eq!(format_from_extension(Path::new("a/b.csv.bz2")), Some(Format::Csv));
        assert_eq!(format_from_extension(Path::new("b.TSV.gz")), Some(Format::Tsv));
        assert_eq!(format_from_extension(Path::new("b.jsonl")), Some(Format::Jsonl));
        assert_eq!(format_from_extension(Path::new("b.json.gz")), Some(Format::Json));
        assert_eq!(format_from_extension(Path::new("b.txt")), None);
        assert_eq!(format_from_extension(Path::new("noext.bz2")), None);
    }

    #[test]
    fn numbers_normalise_to_shortest_form() {
        let n = |s: &str| number_string(&serde_json::from_str(s).unwrap());
        assert_eq!(n("1"), "1");
        assert_eq!(n("1.0"), "1");
        assert_eq!(n("-2"), "-2");
        assert_eq!(n("0.5"), "0.5");
    }

    #[test]
    fn json_message_drops_position_tail() {
        let e = serde_json::from_str::<Value>("{\"a\": }").unwrap_err();
        let m = json_message(&e);
        assert!(!m.contains("at line"), "{m}");
        assert!(!m.is_empty());
    }
}
