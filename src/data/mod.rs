//! Labelled data: readers, label normalisation, splits and quality checks.
//!
//! Every format (CSV, TSV, JSONL, JSON array, the prompt/completion and OpenAI chat fine-tuning
//! JSONL; optionally bzip2/gzip-compressed) goes through the same label rules, so a file behaves
//! the same whatever it is stored as.

mod chat;
mod check;
mod read;
mod sniff;
mod split;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

pub use crate::config::kinds::Format;
pub use chat::{SystemTurn, apply_system_turn, system_message};
pub use check::{CheckReport, Conflicts, CrossDuplicates, IMBALANCE_LIMIT, LabelStats, LengthStats, SplitStats, check, check_splits};
pub use sniff::{Table, read_table};
pub use split::{Splits, load_splits, split_examples, two_classes_each, write_splits};

use crate::config::DataConfig;
use crate::error::{Error, Result};

/// One labelled example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Example {
    /// The text, with surrounding whitespace trimmed.
    pub text: String,
    /// Index into the label set.
    pub label: usize,
    /// Value of the group column, if one is configured and the cell is not empty.
    pub group: Option<String>,
    /// 1-based line of the record in its file (for JSON arrays: the 0-based element index).
    pub line: usize,
}

/// How to treat rows with bad content (structural problems are errors in both modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Any bad row is an error (train, eval).
    Strict,
    /// Bad rows are skipped and counted in the [`ReadReport`] (`data check`).
    Lenient,
}

/// What to read from a file: format, columns and label rules. Built from a [`DataConfig`] or by hand.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadSpec {
    /// File format.
    pub format: Format,
    /// Column (or JSON key) holding the text.
    pub text_column: String,
    /// Column (or JSON key) holding the label.
    pub label_column: String,
    /// Optional column whose value becomes [`Example::group`].
    pub group_column: Option<String>,
    /// The label set, in class-index order.
    pub labels: Vec<String>,
    /// Raw label value -> label name.
    pub label_map: BTreeMap<String, String>,
    /// Raw label values whose rows are skipped and counted.
    pub drop_labels: Vec<String>,
}

impl ReadSpec {
    /// The default layout: `text` and `label` columns, format from the extension, no mapping.
    pub fn new(labels: Vec<String>) -> Self {
        Self {
            format: Format::Auto,
            text_column: "text".into(),
            label_column: "label".into(),
            group_column: None,
            labels,
            label_map: BTreeMap::new(),
            drop_labels: Vec::new(),
        }
    }

    /// The columns and label rules of a `[data]` section.
    pub fn from_config(cfg: &DataConfig) -> Result<Self> {
        Ok(Self {
            format: Format::parse(&cfg.format)?,
            text_column: cfg.text_column.clone(),
            label_column: cfg.label_column.clone(),
            group_column: cfg.group_column.clone(),
            labels: cfg.labels.clone(),
            label_map: cfg.label_map.clone(),
            drop_labels: cfg.drop_labels.clone(),
        })
    }

    /// Catch hand-built specs that config validation would have rejected.
    fn validate(&self) -> Result<()> {
        if self.labels.is_empty() {
            return Err(Error::Config("data.labels is empty".into()));
        }
        if let Some((i, l)) = self.labels.iter().enumerate().find(|(i, l)| self.labels[..*i].contains(l)) {
            return Err(Error::Config(format!("data.labels[{i}] = {l:?} is listed twice")));
        }
        if let Some((raw, name)) = self.label_map.iter().find(|(_, name)| !self.labels.contains(name)) {
            return Err(Error::Config(format!("data.label_map.{raw} = {name:?} is not one of data.labels {:?}", self.labels)));
        }
        Ok(())
    }

    /// Class index of a raw label value, if it maps to one.
    fn resolve(&self, raw: &str) -> Option<usize> {
        let name = self.label_map.get(raw).map_or(raw, String::as_str);
        self.labels.iter().position(|l| l == name)
    }
}

/// How often a lenient-mode problem occurred and where first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Number of rows.
    pub count: usize,
    /// "file:line" (or "file: element [i]") of the first one.
    pub first_at: Option<String>,
}

impl Tally {
    fn add(&mut self, at: impl FnOnce() -> String) {
        self.count += 1;
        if self.first_at.is_none() {
            self.first_at = Some(at());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.count += other.count;
        if self.first_at.is_none() {
            self.first_at = other.first_at;
        }
    }
}

/// What reading one or more files did besides producing examples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReadReport {
    /// Files read, in order.
    pub files: Vec<String>,
    /// Data rows seen (header rows not counted).
    pub rows: usize,
    /// Rows kept as examples.
    pub examples: usize,
    /// Rows skipped because their raw label is in `drop_labels`, by raw label.
    pub dropped: BTreeMap<String, usize>,
    /// Rows with empty text and no label (trailing sentinels), skipped.
    pub skipped_sentinels: usize,
    /// Lenient mode: rows whose label is not in the label set, by raw value (skipped).
    pub unknown_labels: BTreeMap<String, Tally>,
    /// Lenient mode: rows with a text but an empty or null label (skipped).
    pub missing_labels: Tally,
    /// Lenient mode: rows with a label but an empty text (skipped).
    pub empty_texts: Tally,
    /// The format each file was read as (auto-detection resolved), parallel to `files`.
    pub formats: Vec<String>,
    /// openai-chat files: the distinct system turns, in order of first appearance.
    pub system_turns: Vec<SystemTurn>,
}

impl ReadReport {
    /// Add another file's report to this one.
    pub fn merge(&mut self, other: ReadReport) {
        self.files.extend(other.files);
        self.rows += other.rows;
        self.examples += other.examples;
        for (k, v) in other.dropped {
            *self.dropped.entry(k).or_default() += v;
        }
        self.skipped_sentinels += other.skipped_sentinels;
        for (k, v) in other.unknown_labels {
            self.unknown_labels.entry(k).or_default().merge(v);
        }
        self.missing_labels.merge(other.missing_labels);
        self.empty_texts.merge(other.empty_texts);
        self.formats.extend(other.formats);
        chat::merge(&mut self.system_turns, other.system_turns);
    }

    /// The system turn most openai-chat rows carry (what `prompt.system` becomes when unset).
    pub fn system_message(&self) -> Option<&str> {
        chat::most_common(&self.system_turns).and_then(|t| t.message.as_deref())
    }

    /// Rows dropped by `drop_labels`, all raw labels together.
    pub fn dropped_total(&self) -> usize {
        self.dropped.values().sum()
    }
}

/// Where a record is: a line (CSV, TSV, JSONL) or an element of a JSON array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loc {
    Line(usize),
    Element(usize),
}

impl Loc {
    fn number(self) -> usize {
        match self {
            Loc::Line(n) | Loc::Element(n) => n,
        }
    }
}

/// "file:17" or "file: element [17]", the prefix of every row-level message.
pub(crate) fn at(path: &Path, loc: Loc) -> String {
    match loc {
        Loc::Line(n) => format!("{}:{n}", path.display()),
        Loc::Element(i) => format!("{}: element [{i}]", path.display()),
    }
}

/// Read and validate a config file ([`crate::config::Config::load`]); for openai-chat data
/// without a `prompt.system`, the rows' most common system turn becomes the system message.
pub fn load_config(path: &Path) -> Result<crate::config::Config> {
    let mut cfg = crate::config::Config::load(path)?;
    apply_system_turn(&mut cfg);
    Ok(cfg)
}

/// Read one data file with the columns and label rules of a `[data]` section.
pub fn read_file(path: &Path, cfg: &DataConfig, mode: ReadMode) -> Result<(Vec<Example>, ReadReport)> {
    read_file_with(path, &ReadSpec::from_config(cfg)?, mode)
}

/// Read one data file (CSV, TSV, JSONL, JSON array, prompt-completion or openai-chat JSONL,
/// optionally .bz2/.gz) as described by `spec`.
pub fn read_file_with(path: &Path, spec: &ReadSpec, mode: ReadMode) -> Result<(Vec<Example>, ReadReport)> {
    spec.validate()?;
    let format = match spec.format {
        Format::Auto => read::format_from_extension(path).ok_or_else(|| {
            Error::Data(format!(
                "{}: cannot tell the format from the extension (expected .csv, .tsv, .jsonl or .json, optionally .bz2/.gz); set data.format",
                path.display()
            ))
        })?,
        f => f,
    };
    let bytes = read::load_bytes(path)?;
    read_bytes(path, &bytes, format, spec, mode)
}

/// Read decoded file contents in `format` (Jsonl is refined to a fine-tuning layout by its first row).
fn read_bytes(path: &Path, bytes: &[u8], format: Format, spec: &ReadSpec, mode: ReadMode) -> Result<(Vec<Example>, ReadReport)> {
    let format = match format {
        Format::Jsonl => chat::detect(bytes, spec),
        f => f,
    };
    if format != spec.format && matches!(format, Format::PromptCompletion | Format::OpenaiChat) {
        // Said once per file so a user whose columns are misnamed sees why no "no key" error came.
        tracing::info!(
            "{}: reading as {format}: its first row lacks the configured {:?}/{:?} keys",
            path.display(),
            spec.text_column,
            spec.label_column
        );
    }
    let group = spec.group_column.as_deref();
    let cols = match format {
        Format::PromptCompletion => read::Columns { text: chat::PROMPT_KEY, label: chat::COMPLETION_KEY, group },
        _ => read::Columns { text: &spec.text_column, label: &spec.label_column, group },
    };
    let sources = match format {
        Format::OpenaiChat => Sources { text: "the user turn".into(), label: "the assistant turn".into() },
        _ => Sources { text: format!("column {:?}", cols.text), label: format!("column {:?}", cols.label) },
    };
    let mut report = ReadReport { files: vec![path.display().to_string()], formats: vec![format.to_string()], ..ReadReport::default() };
    let mut examples = Vec::new();
    let mut sink = |row: read::RawRow, report: &mut ReadReport| accept(path, spec, &sources, mode, row, &mut examples, report);
    match format {
        Format::Csv => read::read_delimited(path, bytes, b',', &cols, &mut |row| sink(row, &mut report))?,
        Format::Tsv => read::read_delimited(path, bytes, b'\t', &cols, &mut |row| sink(row, &mut report))?,
        Format::Jsonl | Format::PromptCompletion => read::read_jsonl(path, bytes, &cols, &mut |row| sink(row, &mut report))?,
        Format::OpenaiChat => chat::read_chat(path, bytes, group, &mut |row, system| {
            chat::record(&mut report.system_turns, system, || at(path, row.loc));
            sink(row, &mut report)
        })?,
        Format::Json | Format::Auto => read::read_json_array(path, bytes, &cols, &mut |row| sink(row, &mut report))?,
    }
    report.examples = examples.len();
    if report.skipped_sentinels > 0 {
        tracing::warn!("{}: skipped {} row(s) with empty text and no label", path.display(), report.skipped_sentinels);
    }
    Ok((examples, report))
}

/// Where a row's text and label come from, as messages name them ("column \"label\"", "the assistant turn").
struct Sources {
    text: String,
    label: String,
}

/// Apply the label rules to one raw row: keep it, skip and count it, or fail (strict mode).
fn accept(
    path: &Path,
    spec: &ReadSpec,
    src: &Sources,
    mode: ReadMode,
    row: read::RawRow,
    examples: &mut Vec<Example>,
    report: &mut ReadReport,
) -> Result<()> {
    report.rows += 1;
    let strict = mode == ReadMode::Strict;
    let here = || at(path, row.loc);
    let Some(raw) = row.label else {
        if row.text.is_empty() {
            report.skipped_sentinels += 1;
        } else if strict {
            return Err(Error::Data(format!("{}: no label ({} is empty)", here(), src.label)));
        } else {
            report.missing_labels.add(here);
        }
        return Ok(());
    };
    if spec.drop_labels.contains(&raw) {
        *report.dropped.entry(raw).or_default() += 1;
        return Ok(());
    }
    let Some(label) = spec.resolve(&raw) else {
        if strict {
            return Err(Error::Data(format!(
                "{}: unknown label {raw:?} (labels: {}; map it with data.label_map or drop it with data.drop_labels)",
                here(),
                spec.labels.join(", ")
            )));
        }
        report.unknown_labels.entry(raw).or_default().add(here);
        return Ok(());
    };
    if row.text.is_empty() {
        if strict {
            return Err(Error::Data(format!("{}: empty text in {} (label {raw:?}); remove the row or drop its label", here(), src.text)));
        }
        report.empty_texts.add(here);
        return Ok(());
    }
    examples.push(Example { text: row.text, label, group: row.group, line: row.loc.number() });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ReadSpec {
        let mut s = ReadSpec::new(vec!["negative".into(), "positive".into()]);
        s.label_map.insert("fresh".into(), "positive".into());
        s.drop_labels.push("plot".into());
        s
    }

    fn src() -> Sources {
        Sources { text: "column \"text\"".into(), label: "column \"label\"".into() }
    }

    fn row(text: &str, label: Option<&str>) -> read::RawRow {
        read::RawRow { loc: Loc::Line(7), text: text.into(), label: label.map(String::from), group: None }
    }

    #[test]
    fn label_rules_map_keep_drop_and_skip() {
        let (s, p) = (spec(), Path::new("x.csv"));
        let (mut ex, mut rep) = (Vec::new(), ReadReport::default());
        for (t, l) in [("a", Some("fresh")), ("b", Some("negative")), ("c", Some("plot")), ("", None)] {
            accept(p, &s, &src(), ReadMode::Strict, row(t, l), &mut ex, &mut rep).unwrap();
        }
        assert_eq!(ex.iter().map(|e| e.label).collect::<Vec<_>>(), vec![1, 0]);
        assert_eq!(ex[0].line, 7);
        assert_eq!(rep.dropped.get("plot"), Some(&1));
        assert_eq!(rep.skipped_sentinels, 1);
        assert_eq!(rep.rows, 4);
    }

    #[test]
    fn lenient_counts_what_strict_rejects() {
        let (s, p) = (spec(), Path::new("x.csv"));
        let bad = [("a", Some("neg")), ("", Some("fresh")), ("b", None)];
        for (t, l) in bad {
            let err = accept(p, &s, &src(), ReadMode::Strict, row(t, l), &mut Vec::new(), &mut ReadReport::default()).unwrap_err();
            assert!(err.to_string().starts_with("x.csv:7: "), "{err}");
        }
        let (mut ex, mut rep) = (Vec::new(), ReadReport::default());
        for (t, l) in bad {
            accept(p, &s, &src(), ReadMode::Lenient, row(t, l), &mut ex, &mut rep).unwrap();
        }
        assert!(ex.is_empty());
        assert_eq!(rep.unknown_labels["neg"], Tally { count: 1, first_at: Some("x.csv:7".into()) });
        assert_eq!(rep.empty_texts.count, 1);
        assert_eq!(rep.missing_labels.count, 1);
    }

    #[test]
    fn hand_built_spec_is_validated() {
        let mut s = spec();
        s.label_map.insert("0".into(), "neutral".into());
        assert!(s.validate().unwrap_err().to_string().contains("neutral"));
        let s = ReadSpec::new(vec!["a".into(), "a".into()]);
        assert!(s.validate().is_err());
    }

    #[test]
    fn format_parse_rejects_unknown() {
        assert_eq!(Format::parse("jsonl").unwrap(), Format::Jsonl);
        assert!(Format::parse("xml").is_err());
        for name in Format::NAMES {
            assert_eq!(Format::parse(name).unwrap().to_string(), name, "parse and Display must agree");
        }
        let err = Format::parse("openai_chat").unwrap_err().to_string();
        assert!(err.contains("did you mean `openai-chat`?"), "{err}");
    }
}
