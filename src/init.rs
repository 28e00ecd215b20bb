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
//! The library proposes and writes; the command line prints.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::config::{Config, suggest};
use crate::data::{
    Example, Format, IMBALANCE_LIMIT, ReadMode, ReadSpec, Table, read_file_with, read_table, split_examples, two_classes_each,
};
use crate::error::{Error, Result};

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
    let toml = render_toml(&Render {
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

/// "0", "-1", "LABEL_2", "class3", "A": a label whose name tells the model nothing.
pub fn code_like(label: &str) -> bool {
    let lower = label.to_ascii_lowercase();
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let stem =
        ["label", "class", "cat", "lbl"].iter().find_map(|p| lower.strip_prefix(p)).map(|rest| rest.trim_start_matches(['_', '-', ' ']));
    digits(lower.trim_start_matches('-')) || stem.is_some_and(digits) || label.chars().count() == 1
}

/// A word per label, tokenized by `tokenizer`; words that would tokenize the same are replaced
/// by the first alternative that does not, and the note says so.
pub fn propose_label_words(labels: &[String], tokenizer: &Tokenizer, examples: &[Example]) -> Result<Vec<LabelWord>> {
    let encode = |w: &str| -> Result<Vec<u32>> {
        Ok(tokenizer.encode(w, false).map_err(|e| Error::Model(format!("tokenizing label word {w:?}: {e}")))?.get_ids().to_vec())
    };
    let mut taken: Vec<Vec<u32>> = Vec::new();
    let mut out = Vec::new();
    for (index, label) in labels.iter().enumerate() {
        let natural = format!(" {}", label.replace(['_', '-'], " ").split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase());
        let first = if code_like(label) { format!(" {label}") } else { natural };
        let alternatives =
            [first.clone(), format!(" {label}"), label.clone(), format!(" {label} {}", index + 1), format!(" class {}", index + 1)];
        let mut chosen = None;
        for w in alternatives {
            let ids = encode(&w)?;
            if !ids.is_empty() && !taken.contains(&ids) {
                chosen = Some((w, ids));
                break;
            }
        }
        let (word, ids) =
            chosen.ok_or_else(|| Error::Config(format!("label {label:?}: no word for it tokenizes apart from the other labels'")))?;
        let mut notes = Vec::new();
        if word != first {
            let first_ids = encode(&first)?;
            let clash = taken.iter().position(|t| *t == first_ids).map_or(String::new(), |j| format!(" as label {:?}'s word", labels[j]));
            notes.push(format!("{first:?} tokenizes the same{clash}, so {word:?}"));
        }
        if code_like(label) {
            let hint = distinctive_words(examples, index, 3);
            let hint = if hint.is_empty() { String::new() } else { format!("; its texts most often use {}", hint.join(", ")) };
            notes.push(format!(
                "{label:?} is a numeric or code-like label, which tells the model nothing: set prompt.label_words.{label:?} to a word that names the class (and use it in the template's list){hint}"
            ));
        }
        out.push(LabelWord { label: label.clone(), word, tokens: ids.len(), note: (!notes.is_empty()).then(|| notes.join("; ")) });
        taken.push(ids);
    }
    Ok(out)
}

/// Words that set one label's texts apart: the highest smoothed log-odds of appearing in a text
/// of that label against the others, among words in at least 5 of its texts.
pub fn distinctive_words(examples: &[Example], label: usize, n: usize) -> Vec<String> {
    let mut inside: HashMap<String, usize> = HashMap::new();
    let mut outside: HashMap<String, usize> = HashMap::new();
    let (mut n_in, mut n_out) = (0usize, 0usize);
    for e in examples {
        let words: HashSet<String> =
            e.text.split(|c: char| !c.is_alphabetic()).filter(|w| w.chars().count() >= 3).map(str::to_lowercase).collect();
        let (map, total) = if e.label == label { (&mut inside, &mut n_in) } else { (&mut outside, &mut n_out) };
        *total += 1;
        for w in words {
            *map.entry(w).or_default() += 1;
        }
    }
    let mut scored: Vec<(f64, String)> = inside
        .iter()
        .filter(|(_, c)| **c >= 5)
        .map(|(w, &c)| {
            let o = outside.get(w).copied().unwrap_or(0);
            let score = ((c as f64 + 1.0) / (n_in as f64 + 2.0)).ln() - ((o as f64 + 1.0) / (n_out as f64 + 2.0)).ln();
            (score, w.clone())
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.into_iter().take(n).map(|(_, w)| w).collect()
}

/// What goes into the config text.
struct Render<'a> {
    data: &'a Path,
    model: &'a str,
    format: Format,
    text_column: &'a str,
    label_column: &'a str,
    group_column: Option<&'a str>,
    words: &'a [LabelWord],
    fractions: [f64; 3],
    seed: u64,
    chat_system: Option<&'a str>,
    max_seq_len: usize,
    dev_n: usize,
    train_n: usize,
}

/// A TOML basic string (JSON's escapes are TOML's).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

fn render_toml(r: &Render) -> String {
    let list = |xs: &[String]| format!("[{}]", xs.iter().map(|x| quoted(x)).collect::<Vec<_>>().join(", "));
    let names: Vec<String> = r.words.iter().map(|w| w.word.trim().to_string()).collect();
    let options = names.join(", ");
    let stem = r.data.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let run_name = run_name_for(r.data);
    let mut s = format!("# wick config for {stem}, proposed by `wick init` from the file alone: edit any choice.\n");
    s += "\n[model]\n# The pretrained model: a GGUF file, an HF folder or a hub id.\n";
    s += &format!("source = {}\n", quoted(r.model));
    s += "\n[data]\n# The labelled file, its columns and labels as wick init chose them, and a seeded split.\n";
    s += &format!("path = {}\n", quoted(&r.data.display().to_string()));
    s += &format!("format = {}\n", quoted(&r.format.to_string()));
    if !matches!(r.format, Format::OpenaiChat | Format::PromptCompletion) {
        s += &format!("text_column = {}\nlabel_column = {}\n", quoted(r.text_column), quoted(r.label_column));
    }
    if let Some(g) = r.group_column {
        s += &format!("group_column = {}\n", quoted(g));
    }
    let labels: Vec<String> = r.words.iter().map(|w| w.label.clone()).collect();
    s += &format!("labels = {}\n", list(&labels));
    let [tr, dv, te] = r.fractions;
    s += &format!("train_fraction = {tr}\ndev_fraction = {dv}\ntest_fraction = {te}\nseed = {}\n", r.seed);
    s += "\n[prompt]\n# A task-neutral instruction naming the labels; the model answers with a label word after the answer prefix.\n";
    match r.chat_system {
        // An openai-chat file's own system turn is the prompt's system message (see data.format).
        Some(_) => {}
        None => s += "system = \"You are a helpful assistant that classifies texts.\"\n",
    }
    s += &format!("template = {}\n", quoted(&format!("Classify the text as one of: {options}.\nText: {{text}}")));
    let variants = [
        format!("Text: {{text}}\nWhich of these describes the text best: {options}?"),
        format!("Read the text and answer with one of: {options}.\nText: {{text}}"),
        format!("Here is a text: \"{{text}}\"\nIs it {}?", or_list(&names)),
    ];
    s += &format!("variants = [\n{}]\n", variants.iter().map(|v| format!("    {},\n", quoted(v))).collect::<String>());
    s += "answer_prefix = \"Answer:\"\n";
    let words: Vec<String> = r.words.iter().map(|w| format!("{} = {}", quoted(&w.label), quoted(&w.word))).collect();
    s += &format!("label_words = {{ {} }}\n", words.join(", "));
    s += "\n[output]\n# Checkpoints, results and the report go to dir/run_name.\n";
    s += &format!("dir = \"checkpoints\"\nrun_name = {}\n", quoted(&run_name));
    s += "\n[lora]\n# The LoRA adapter, with PEFT's meaning for every key.\nr = 8\nalpha = 16.0\ndropout = 0.05\ntarget_modules = [\"all-linear\"]\n";
    let eval_examples = r.dev_n.min(500);
    s += "\n[train]\n# The default recipe: label-word loss on the verbalizer head, one epoch, the best dev checkpoint kept.\n";
    s += &format!(
        "head = \"verbalizer\"\nloss = \"label_words\"\nlr = 1e-3\nbatch_size = 16\nepochs = 1\npatience = 6\nmax_minutes = 45\nwarmup_steps = 10\nschedule = \"cosine\"\neval_every = 50\neval_examples = {eval_examples}\nmax_seq_len = {}\n",
        r.max_seq_len
    );
    let curve: Vec<String> = [100usize, 1000].iter().filter(|&&c| c * 2 <= r.train_n).map(|c| c.to_string()).collect();
    s += "\n[compare]\n# Choices on dev, numbers on the test split, the whole comparison in 90 minutes.\n";
    s += &format!(
        "dev_examples = {eval_examples}\nconsistency_examples = 150\nretrieval_pool = 1000\nlearning_curve = [{}]\ncurve_seeds = 3\ncurve_epochs = 3\nmax_minutes = 90\ntuned_strategies = [\"few-shot\"]\n",
        curve.join(", ")
    );
    s
}

/// "a, b or c".
fn or_list(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

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

/// Write `text` to `path` atomically; an existing file is kept unless `force`.
pub fn write_config(path: &Path, text: &str, force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(Error::Config(format!(
            "{}: already exists; pass --force to overwrite it, or --out to write elsewhere",
            path.display()
        )));
    }
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
    fn code_like_labels_are_named_as_such() {
        for l in ["0", "1", "-1", "LABEL_2", "label-0", "class3", "A"] {
            assert!(code_like(l), "{l}");
        }
        for l in ["positive", "movie", "labelled", "Class act", "no"] {
            assert!(!code_like(l), "{l}");
        }
    }

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

    #[test]
    fn distinctive_words_separate_the_labels() {
        let ex = |t: &str, label| Example { text: t.into(), label, group: None, line: 0 };
        let mut examples = Vec::new();
        for i in 0..6 {
            examples.push(ex(&format!("great film number{i} the"), 1));
            examples.push(ex(&format!("awful film number{i} the"), 0));
        }
        assert_eq!(distinctive_words(&examples, 1, 1), ["great"]);
        assert_eq!(distinctive_words(&examples, 0, 1), ["awful"]);
    }
}
