//! `wick init`: a working config proposed from a data file alone, by stated rules.
//!
//! - Format: the readers' (extension, else first bytes; fine-tuning JSONL layouts by their keys).
//! - Label column: the columns with few distinct values relative to the rows (2 to
//!   [`max_label_values`]); of several, the first named label, labels, class, category, target or y.
//! - Text column: of the others, free text (not numbers, at least half the values distinct) with
//!   the longest mean length; a runner-up within 80% of it is ambiguous.
//! - Group column: the one other column whose values repeat (more than [`max_label_values`]
//!   distinct values, two or more rows each on average), so rows sharing it never straddle splits.
//! - Label words: each label name as the model's tokenizer splits it; two labels never tokenize the
//!   same, and numeric or code-like labels are named as such.
//!
//! The library proposes and writes; the command line prints. The label words are in `words.rs`,
//! the config text in `render.rs`.

mod render;
mod words;

pub use words::{code_like, distinctive_words, propose_label_words};

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::data::{Format, IMBALANCE_LIMIT, ReadMode, ReadSpec, Table, read_file_with, read_table, split_examples, two_classes_each};
use crate::error::{Error, Result};
use crate::suggest::suggest;

/// The model `wick init` proposes when none is named: the default config's.
pub const DEFAULT_MODEL: &str = "assets/SmolLM2-135M-Instruct.Q4_1.gguf";

/// What `wick init` is given.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The labelled data file.
    pub data: PathBuf,
    /// The model whose tokenizer checks the label words (a GGUF file, HF folder or hub id).
    pub model: String,
    /// Use this text column instead of choosing one.
    pub text_column: Option<String>,
    /// Use this label column instead of choosing one.
    pub label_column: Option<String>,
    /// Use this group column instead of looking for one.
    pub group_column: Option<String>,
}

/// A label and its number of rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelCount {
    /// The label as the file writes it.
    pub label: String,
    /// Rows carrying it.
    pub count: usize,
}

/// The word proposed for one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelWord {
    /// The label.
    pub label: String,
    /// The word the model answers with (leading space included).
    pub word: String,
    /// Its number of tokens.
    pub tokens: usize,
    /// Why it is not simply the label name, when it is not.
    pub note: Option<String>,
}

/// A proposed config and the reasons for each choice.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// The format the file was read as.
    pub format: Format,
    /// Rows in the file.
    pub rows: usize,
    /// The chosen text column (for the fine-tuning layouts, their fixed field).
    pub text_column: String,
    /// The chosen label column.
    pub label_column: String,
    /// The chosen group column, if any.
    pub group_column: Option<String>,
    /// One line per choice, saying what was chosen and why.
    pub reasons: Vec<String>,
    /// Problems that do not stop the config from working.
    pub warnings: Vec<String>,
    /// Labels with their counts, in the config's label order.
    pub labels: Vec<LabelCount>,
    /// The label words.
    pub label_words: Vec<LabelWord>,
    /// The config file's text.
    pub toml: String,
}

/// Known names of a label column, in order of preference.
const LABEL_NAMES: [&str; 6] = ["label", "labels", "class", "category", "target", "y"];

/// The most distinct values a label column may have for `rows` rows: a fifth of the rows, at
/// least 2 and at most 50.
pub fn max_label_values(rows: usize) -> usize {
    (rows / 5).clamp(2, 50)
}

/// One column's contents in numbers.
struct ColumnStats {
    name: String,
    filled: usize,
    distinct: usize,
    mean_chars: f64,
    numeric: bool,
}

fn column_stats(table: &Table) -> Vec<ColumnStats> {
    (0..table.columns.len())
        .map(|i| {
            let (mut filled, mut chars, mut numeric) = (0usize, 0usize, true);
            let mut seen = HashSet::new();
            for v in table.values(i) {
                filled += 1;
                chars += v.chars().count();
                numeric &= v.parse::<f64>().is_ok();
                seen.insert(v);
            }
            ColumnStats {
                name: table.columns[i].clone(),
                filled,
                distinct: seen.len(),
                mean_chars: if filled == 0 { 0.0 } else { chars as f64 / filled as f64 },
                numeric: numeric && filled > 0,
            }
        })
        .collect()
}

/// Index of a column the user named, or one line naming the columns there are.
fn named_column(table: &Table, data: &Path, flag: &str, name: &str) -> Result<usize> {
    table.columns.iter().position(|c| c == name).ok_or_else(|| {
        let cols: Vec<&str> = table.columns.iter().map(String::as_str).collect();
        Error::Config(format!(
            "{flag} {name:?}: {} has no such column (columns: {}){}",
            data.display(),
            cols.join(", "),
            suggest(name, &cols)
        ))
    })
}

/// Propose a config for `opts.data`: columns, labels, label words, prompt, splits and the
/// default recipe. Fails with one line when a choice is ambiguous or the data cannot work.
pub fn propose(opts: &InitOptions) -> Result<Proposal> {
    let data = &opts.data;
    let shown = data.display();
    let table = read_table(data)?;
    let rows = table.rows.len();
    let stats = column_stats(&table);
    let mut reasons = vec![format!("format: {} ({rows} rows, columns: {})", table.format, table.columns.join(", "))];
    let mut warnings = Vec::new();
    let fixed_layout = matches!(table.format, Format::OpenaiChat | Format::PromptCompletion);
    let max_values = max_label_values(rows);

    // The label column.
    let label_i = if let Some(name) = &opts.label_column {
        let i = named_column(&table, data, "--label-column", name)?;
        reasons.push(format!("label column: {name:?} (--label-column), {} distinct values", stats[i].distinct));
        i
    } else if fixed_layout {
        reasons.push(format!("label column: the {} (the {} layout)", table.columns[1], table.format));
        1
    } else {
        let candidates: Vec<usize> =
            (0..stats.len()).filter(|&i| (2..=max_values).contains(&stats[i].distinct) && stats[i].filled * 2 >= rows).collect();
        let describe =
            |is: &[usize]| is.iter().map(|&i| format!("{:?} ({} values)", stats[i].name, stats[i].distinct)).collect::<Vec<_>>().join(", ");
        let by_name = LABEL_NAMES.iter().find_map(|n| candidates.iter().copied().find(|&i| stats[i].name.eq_ignore_ascii_case(n)));
        match (candidates.as_slice(), by_name) {
            ([], _) => {
                return Err(Error::Config(format!(
                    "{shown}: no column has few distinct values for its {rows} rows (2 to {max_values}), so none looks like a label; pass --label-column"
                )));
            }
            ([only], _) => {
                reasons.push(format!(
                    "label column: {:?}, the only column with 2 to {max_values} distinct values ({})",
                    stats[*only].name, stats[*only].distinct
                ));
                *only
            }
            (_, Some(i)) => {
                reasons.push(format!(
                    "label column: {:?} by its name, of the columns with 2 to {max_values} distinct values: {} (pass --label-column to choose another)",
                    stats[i].name,
                    describe(&candidates)
                ));
                i
            }
            (many, None) => {
                return Err(Error::Config(format!(
                    "{shown}: several columns could hold the label: {}; pass --label-column",
                    describe(many)
                )));
            }
        }
    };

    // The text column.
    let text_i = if let Some(name) = &opts.text_column {
        let i = named_column(&table, data, "--text-column", name)?;
        reasons.push(format!("text column: {name:?} (--text-column), mean {:.0} characters", stats[i].mean_chars));
        i
    } else if fixed_layout {
        reasons.push(format!("text column: the {} (the {} layout)", table.columns[0], table.format));
        0
    } else {
        let mut free: Vec<usize> = (0..stats.len())
            .filter(|&i| i != label_i && !stats[i].numeric && stats[i].filled > 0 && stats[i].distinct * 2 >= stats[i].filled)
            .collect();
        free.sort_by(|&a, &b| stats[b].mean_chars.total_cmp(&stats[a].mean_chars));
        match free.as_slice() {
            [] => {
                return Err(Error::Config(format!(
                    "{shown}: no column besides the label {:?} holds free text (mostly distinct, not numbers); pass --text-column",
                    stats[label_i].name
                )));
            }
            [a, b, ..] if stats[*b].mean_chars >= 0.8 * stats[*a].mean_chars => {
                return Err(Error::Config(format!(
                    "{shown}: two columns could hold the text: {:?} (mean {:.0} characters) and {:?} ({:.0}); pass --text-column",
                    stats[*a].name, stats[*a].mean_chars, stats[*b].name, stats[*b].mean_chars
                )));
            }
            [a, rest @ ..] => {
                let runner = rest.first().map_or(String::new(), |&b| format!("; next {:?} at {:.0}", stats[b].name, stats[b].mean_chars));
                reasons.push(format!(
                    "text column: {:?}, the longest free text (mean {:.0} characters{runner})",
                    stats[*a].name, stats[*a].mean_chars
                ));
                *a
            }
        }
    };
    if text_i == label_i {
        return Err(Error::Config(format!("{shown}: the text and the label column are both {:?}", table.columns[text_i])));
    }

    // The group column.
    let group_i = if let Some(name) = &opts.group_column {
        let i = named_column(&table, data, "--group-column", name)?;
        reasons.push(format!("group column: {name:?} (--group-column), {} groups", stats[i].distinct));
        Some(i)
    } else if fixed_layout {
        None
    } else {
        let repeating: Vec<usize> = (0..stats.len())
            .filter(|&i| {
                i != label_i
                    && i != text_i
                    && stats[i].distinct > max_values
                    && stats[i].filled * 10 >= rows * 9
                    && stats[i].filled >= 2 * stats[i].distinct
            })
            .collect();
        match repeating.as_slice() {
            [] => None,
            [i] => {
                reasons.push(format!(
                    "group column: {:?}, whose values repeat ({} groups, {:.1} rows each): rows sharing one stay in one split",
                    stats[*i].name,
                    stats[*i].distinct,
                    stats[*i].filled as f64 / stats[*i].distinct as f64
                ));
                Some(*i)
            }
            many => {
                let names: Vec<String> = many.iter().map(|&i| format!("{:?}", stats[i].name)).collect();
                reasons.push(format!(
                    "group column: none chosen; several columns repeat ({}): pass --group-column if one groups related rows",
                    names.join(", ")
                ));
                None
            }
        }
    };

    // Labels and their counts.
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unlabelled = 0usize;
    for row in &table.rows {
        match (&row[label_i], &row[text_i]) {
            (Some(l), _) => *counts.entry(l.as_str()).or_default() += 1,
            (None, Some(_)) => unlabelled += 1,
            (None, None) => {}
        }
    }
    let mut labels: Vec<LabelCount> = counts.iter().map(|(l, c)| LabelCount { label: l.to_string(), count: *c }).collect();
    if labels.iter().all(|l| l.label.parse::<i64>().is_ok()) {
        labels.sort_by_key(|l| l.label.parse::<i64>().unwrap_or_default());
    }
    let counted = || labels.iter().map(|l| format!("{:?} {}", l.label, l.count)).collect::<Vec<_>>().join(", ");
    if labels.len() < 2 {
        return Err(Error::Config(format!(
            "{shown}: column {:?} has a single class ({}); wick needs at least two labels",
            table.columns[label_i],
            counted()
        )));
    }
    if labels.len() > max_values {
        return Err(Error::Config(format!(
            "{shown}: column {:?} has {} distinct values for {rows} rows (at most {max_values} for a label); pass another --label-column",
            table.columns[label_i],
            labels.len()
        )));
    }
    if unlabelled > 0 {
        warnings.push(format!("{unlabelled} row(s) have a text but no label: wick refuses them, so remove them from {shown}"));
    }
    for l in labels.iter().filter(|l| l.count < 10) {
        warnings.push(format!("label {:?} has only {} example(s): fewer than 10 cannot train or measure it well", l.label, l.count));
    }
    let (most, least) = (labels.iter().map(|l| l.count).max().unwrap_or(0), labels.iter().map(|l| l.count).min().unwrap_or(0));
    if least > 0 && most as f64 / least as f64 > IMBALANCE_LIMIT {
        warnings.push(format!(
            "class imbalance: majority/minority = {:.2} > {IMBALANCE_LIMIT} ({})",
            most as f64 / least as f64,
            counted()
        ));
    }

    // The examples, read back by wick's own reader with these settings.
    let label_names: Vec<String> = labels.iter().map(|l| l.label.clone()).collect();
    let spec = ReadSpec {
        format: table.format,
        text_column: table.columns[text_i].clone(),
        label_column: table.columns[label_i].clone(),
        group_column: group_i.map(|i| table.columns[i].clone()),
        labels: label_names.clone(),
        label_map: BTreeMap::new(),
        drop_labels: Vec::new(),
    };
    let (examples, _) = read_file_with(data, &spec, ReadMode::Strict)?;

    // Label words.
    let tokenizer = crate::model::tokenizer_for(&opts.model)?;
    let label_words = propose_label_words(&label_names, &tokenizer, &examples)?;

    // Splits: fractions by size; the first seed from 42 that leaves every split two classes.
    let n = examples.len();
    let fractions = if n >= 1000 {
        [0.8, 0.1, 0.1]
    } else if n >= 200 {
        [0.6, 0.2, 0.2]
    } else {
        [0.5, 0.25, 0.25]
    };
    let seed = (42..92)
        .find(|&seed| two_classes_each(&split_examples(examples.clone(), fractions, seed), &label_names).is_ok())
        .ok_or_else(|| {
            Error::Config(format!(
                "{shown}: {n} examples are too few: no split seed from 42 to 91 leaves two classes in train, dev and test"
            ))
        })?;
    reasons.push(format!(
        "splits: train/dev/test {}/{}/{} of {n} examples ({} at this size), seed {seed}{}",
        fractions[0],
        fractions[1],
        fractions[2],
        if n >= 1000 {
            "1,000 or more"
        } else if n >= 200 {
            "200 to 999"
        } else {
            "under 200"
        },
        if seed == 42 { String::new() } else { format!(" (seeds 42 to {} left a split with one class)", seed - 1) }
    ));
    let dev_n = (n as f64 * fractions[1]).round() as usize;
    let train_n = (n as f64 * fractions[0]).round() as usize;

    // Prompt length: the 95th percentile text, plus room for the instruction and chat template.
    let mut lengths: Vec<usize> =
        examples.iter().map(|e| tokenizer.encode(e.text.as_str(), false).map(|t| t.get_ids().len()).unwrap_or(0)).collect();
    lengths.sort_unstable();
    let p95 = lengths.get(lengths.len() * 95 / 100).or(lengths.last()).copied().unwrap_or(0);
    let max_seq_len = (p95 + PROMPT_ROOM).div_ceil(32).clamp(4, 16) * 32;
    reasons
        .push(format!("train.max_seq_len = {max_seq_len}: 95% of texts have at most {p95} tokens, plus {PROMPT_ROOM} for the instruction"));

    let system = if table.format == Format::OpenaiChat { table.system.clone() } else { None };
    let toml = render::render_toml(&render::Render {
        data,
        model: &opts.model,
        format: table.format,
        text_column: &table.columns[text_i],
        label_column: &table.columns[label_i],
        group_column: group_i.map(|i| table.columns[i].as_str()),
        words: &label_words,
        fractions,
        seed,
        chat_system: system.as_deref(),
        max_seq_len,
        dev_n,
        train_n,
    });
    // The proposal must load as a config: a failure here is wick's bug, said plainly.
    Config::parse(&toml).map_err(|e| Error::Config(format!("wick init wrote a config that does not parse ({e}); please report it")))?;
    Ok(Proposal {
        format: table.format,
        rows,
        text_column: table.columns[text_i].clone(),
        label_column: table.columns[label_i].clone(),
        group_column: group_i.map(|i| table.columns[i].clone()),
        reasons,
        warnings,
        labels,
        label_words,
        toml,
    })
}

/// Tokens kept for the system message, instruction, chat template and answer prefix.
const PROMPT_ROOM: usize = 96;

/// The run name for a data file: its name without extensions, in lowercase letters, digits and dashes.
pub fn run_name_for(data: &Path) -> String {
    let name = data.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let stem = name.split('.').next().unwrap_or("data");
    let cleaned: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let cleaned = cleaned.trim_matches('-').to_string();
    if cleaned.is_empty() { "data".into() } else { cleaned }
}

/// Where `wick init` writes by default: `configs/<run name>.toml`.
pub fn default_config_path(data: &Path) -> PathBuf {
    PathBuf::from("configs").join(format!("{}.toml", run_name_for(data)))
}

/// Refuse to replace an existing config unless `force` (callers check before any reading too).
pub fn check_writable(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(Error::Config(format!(
            "{}: already exists; pass --force to overwrite it, or --out to write elsewhere",
            path.display()
        )));
    }
    Ok(())
}

/// Write `text` to `path` atomically; an existing file is kept unless `force`.
pub fn write_config(path: &Path, text: &str, force: bool) -> Result<()> {
    check_writable(path, force)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    crate::model::load::write_atomic(path, text.as_bytes())
}

/// True when `path` names a data file rather than a TOML config (by its extension).
pub fn is_data_file(path: &Path) -> bool {
    !path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_column_threshold_grows_with_the_rows() {
        assert_eq!(max_label_values(4), 2);
        assert_eq!(max_label_values(32), 6);
        assert_eq!(max_label_values(3000), 50);
    }

    #[test]
    fn run_names_are_tidy() {
        assert_eq!(run_name_for(Path::new("data/My Reviews.csv.bz2")), "my-reviews");
        assert_eq!(run_name_for(Path::new("x/review-sites.jsonl")), "review-sites");
    }
}
