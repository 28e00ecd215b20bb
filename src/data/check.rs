//! `wick data check`: statistics and problems of the configured data set and its splits.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use comfy_table::{CellAlignment, Table, presets};
use serde::Serialize;

use super::{Example, ReadMode, ReadReport, Splits, load_splits};
use crate::config::DataConfig;
use crate::error::{Error, Result};

/// A split whose majority/minority class ratio exceeds this is flagged as imbalanced.
pub const IMBALANCE_LIMIT: f64 = 1.5;

/// How many offending texts a report quotes per finding.
const SAMPLES: usize = 3;

/// Everything `wick data check` reports; serialisable for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Files read.
    pub files: Vec<String>,
    /// The label set, in class-index order.
    pub labels: Vec<String>,
    /// The group column, when one is configured.
    pub group_column: Option<String>,
    /// Texts with fewer words than this count as too short.
    pub min_words: usize,
    /// Statistics of train, dev and test.
    pub splits: Vec<SplitStats>,
    /// Texts that occur in more than one split.
    pub duplicates_across_splits: CrossDuplicates,
    /// Texts (normalised) that occur with more than one label.
    pub conflicts: Conflicts,
    /// Group values found in more than one split (None without a group column).
    pub shared_groups: Option<usize>,
    /// A few of the shared group values.
    pub shared_group_samples: Vec<String>,
    /// What reading the files skipped and counted (dropped rows, unknown labels, empty texts).
    pub read: ReadReport,
}

/// Statistics of one split.
#[derive(Debug, Clone, Serialize)]
pub struct SplitStats {
    /// "train", "dev" or "test".
    pub split: String,
    /// Number of examples.
    pub examples: usize,
    /// Distinct group values (None without a group column).
    pub groups: Option<usize>,
    /// Text length in words over the whole split (None when empty).
    pub words: Option<LengthStats>,
    /// Text length in model tokens (None without a tokenizer or when empty).
    pub tokens: Option<LengthStats>,
    /// Per-label counts and lengths, in label order.
    pub per_label: Vec<LabelStats>,
    /// Texts with fewer than `min_words` words.
    pub too_short: usize,
    /// Examples whose exact text already occurred earlier in this split.
    pub exact_duplicates: usize,
    /// Examples whose normalised text already occurred earlier in this split.
    pub normalized_duplicates: usize,
    /// Majority/minority class count ratio (None when empty or some label has no examples).
    pub imbalance: Option<f64>,
    /// The ratio exceeds [`IMBALANCE_LIMIT`], or some label is missing from a non-empty split.
    pub imbalanced: bool,
}

/// Count and lengths of one label within one split.
#[derive(Debug, Clone, Serialize)]
pub struct LabelStats {
    /// Label name.
    pub label: String,
    /// Number of examples.
    pub count: usize,
    /// Text length in words (None when the count is 0).
    pub words: Option<LengthStats>,
    /// Text length in model tokens (None without a tokenizer or when the count is 0).
    pub tokens: Option<LengthStats>,
}

/// Summary of a list of lengths.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LengthStats {
    /// Shortest.
    pub min: usize,
    /// Mean.
    pub mean: f64,
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Longest.
    pub max: usize,
}

/// Texts that occur in more than one split.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CrossDuplicates {
    /// Distinct exact texts found in two or more splits.
    pub exact: usize,
    /// Distinct normalised texts found in two or more splits (includes the exact ones).
    pub normalized: usize,
    /// A few of them.
    pub samples: Vec<String>,
}

/// Normalised texts that carry different labels.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Conflicts {
    /// Distinct normalised texts with more than one label.
    pub texts: usize,
    /// Examples carrying those texts.
    pub examples: usize,
    /// A few of them.
    pub samples: Vec<String>,
}

/// Read the configured data leniently, split it and report statistics and problems.
pub fn check(cfg: &DataConfig, tokenizer: Option<&tokenizers::Tokenizer>) -> Result<CheckReport> {
    let (splits, read) = load_splits(cfg, ReadMode::Lenient)?;
    check_splits(&splits, read, cfg, tokenizer)
}

/// Statistics and problems of splits that are already loaded.
pub fn check_splits(splits: &Splits, read: ReadReport, cfg: &DataConfig, tokenizer: Option<&tokenizers::Tokenizer>) -> Result<CheckReport> {
    let mut stats = Vec::new();
    for (name, part) in splits.named() {
        stats.push(split_stats(name, part, cfg, tokenizer)?);
    }
    let named = splits.named();

    // Which splits each text (exact / normalised) and each group occurs in, as bit masks.
    let mut exact: HashMap<&str, u8> = HashMap::new();
    let mut normal: HashMap<String, Seen> = HashMap::new();
    let mut groups: BTreeMap<&str, u8> = BTreeMap::new();
    for (bit, (_, part)) in named.iter().enumerate() {
        for e in part.iter() {
            *exact.entry(&e.text).or_default() |= 1 << bit;
            let seen = normal.entry(normalize(&e.text)).or_insert_with(|| Seen { first: &e.text, ..Seen::default() });
            seen.splits |= 1 << bit;
            seen.labels.insert(e.label);
            seen.count += 1;
            if let Some(g) = &e.group {
                *groups.entry(g).or_default() |= 1 << bit;
            }
        }
    }
    let multi = |mask: u8| mask.count_ones() > 1;
    let mut cross_samples: Vec<&str> = normal.values().filter(|v| multi(v.splits)).map(|v| v.first).collect();
    cross_samples.sort_unstable();
    let cross = CrossDuplicates {
        exact: exact.values().filter(|&&m| multi(m)).count(),
        normalized: normal.values().filter(|v| multi(v.splits)).count(),
        samples: cross_samples.into_iter().take(SAMPLES).map(quote).collect(),
    };
    let mut conflict_samples: Vec<&str> = normal.values().filter(|v| v.labels.len() > 1).map(|v| v.first).collect();
    conflict_samples.sort_unstable();
    let conflicts = Conflicts {
        texts: conflict_samples.len(),
        examples: normal.values().filter(|v| v.labels.len() > 1).map(|v| v.count).sum(),
        samples: conflict_samples.into_iter().take(SAMPLES).map(quote).collect(),
    };
    let (shared_groups, shared_group_samples) = match cfg.group_column {
        None => (None, Vec::new()),
        Some(_) => {
            let shared: Vec<&str> = groups.iter().filter(|(_, m)| multi(**m)).map(|(g, _)| *g).collect();
            (Some(shared.len()), shared.into_iter().take(SAMPLES).map(String::from).collect())
        }
    };
    Ok(CheckReport {
        files: read.files.clone(),
        labels: cfg.labels.clone(),
        group_column: cfg.group_column.clone(),
        min_words: cfg.min_words,
        splits: stats,
        duplicates_across_splits: cross,
        conflicts,
        shared_groups,
        shared_group_samples,
        read,
    })
}

/// Where one normalised text occurs.
#[derive(Default)]
struct Seen<'a> {
    /// Bit i set when split i contains it.
    splits: u8,
    /// Labels it carries.
    labels: BTreeSet<usize>,
    /// Examples carrying it.
    count: usize,
    /// Its first original spelling, quoted in messages.
    first: &'a str,
}

/// Counts, lengths, duplicates and balance of one split.
fn split_stats(name: &str, part: &[Example], cfg: &DataConfig, tokenizer: Option<&tokenizers::Tokenizer>) -> Result<SplitStats> {
    let words: Vec<usize> = part.iter().map(|e| word_count(&e.text)).collect();
    let tokens = match tokenizer {
        None => None,
        Some(tok) => Some(
            part.iter()
                .map(|e| {
                    tok.encode(e.text.as_str(), false)
                        .map(|enc| enc.len())
                        .map_err(|err| Error::Model(format!("tokenizer failed on the {name} example from line {}: {err}", e.line)))
                })
                .collect::<Result<Vec<usize>>>()?,
        ),
    };
    let per_label: Vec<LabelStats> = cfg
        .labels
        .iter()
        .enumerate()
        .map(|(k, label)| {
            let pick = |xs: &[usize]| -> Vec<usize> { part.iter().zip(xs).filter(|(e, _)| e.label == k).map(|(_, &x)| x).collect() };
            let w = pick(&words);
            LabelStats {
                label: label.clone(),
                count: w.len(),
                words: LengthStats::of(&w),
                tokens: tokens.as_ref().and_then(|t| LengthStats::of(&pick(t))),
            }
        })
        .collect();
    let counts: Vec<usize> = per_label.iter().map(|l| l.count).collect();
    let (majority, minority) = (counts.iter().copied().max().unwrap_or(0), counts.iter().copied().min().unwrap_or(0));
    let imbalance = (minority > 0).then(|| majority as f64 / minority as f64);
    let distinct = |keys: Vec<String>| part.len() - keys.into_iter().collect::<BTreeSet<_>>().len();
    Ok(SplitStats {
        split: name.to_string(),
        examples: part.len(),
        groups: cfg.group_column.as_ref().map(|_| part.iter().filter_map(|e| e.group.as_deref()).collect::<BTreeSet<_>>().len()),
        words: LengthStats::of(&words),
        tokens: tokens.as_deref().and_then(LengthStats::of),
        per_label,
        too_short: words.iter().filter(|&&w| w < cfg.min_words).count(),
        exact_duplicates: distinct(part.iter().map(|e| e.text.clone()).collect()),
        normalized_duplicates: distinct(part.iter().map(|e| normalize(&e.text)).collect()),
        imbalance,
        imbalanced: !part.is_empty() && imbalance.is_none_or(|r| r > IMBALANCE_LIMIT),
    })
}

impl LengthStats {
    /// Summary of `xs`, None when empty.
    pub fn of(xs: &[usize]) -> Option<Self> {
        let mut v = xs.to_vec();
        v.sort_unstable();
        let (&min, &max) = (v.first()?, v.last()?);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] as f64 } else { (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0 };
        let mean = v.iter().sum::<usize>() as f64 / n as f64;
        Some(Self { min, mean, median, max })
    }

    fn cell(s: Option<&Self>) -> String {
        s.map_or_else(|| "-".into(), |s| format!("{} / {:.1} / {} / {}", s.min, s.mean, s.median, s.max))
    }
}

/// Words as whitespace-separated pieces.
fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Lowercase, punctuation removed, whitespace collapsed: catches near-copies that differ only in
/// case or punctuation, which leak between splits just as well as exact copies.
pub(crate) fn normalize(text: &str) -> String {
    let kept: String = text.chars().filter(|c| c.is_alphanumeric() || c.is_whitespace()).flat_map(char::to_lowercase).collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A text shortened for a one-line message.
fn quote(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}", format!("{}...", &text[..cut])),
        None => format!("{text:?}"),
    }
}

impl CheckReport {
    /// One line per problem; empty when the data looks fine (`--strict` fails otherwise).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let eg = |samples: &[String]| if samples.is_empty() { String::new() } else { format!(", e.g. {}", samples.join(", ")) };
        let cross = &self.duplicates_across_splits;
        if cross.normalized > 0 {
            out.push(format!(
                "{} text(s) occur in more than one split ({} exact, {} after normalising case/punctuation){}",
                cross.normalized,
                cross.exact,
                cross.normalized,
                eg(&cross.samples)
            ));
        }
        if self.conflicts.texts > 0 {
            out.push(format!(
                "{} text(s) carry conflicting labels ({} examples){}",
                self.conflicts.texts,
                self.conflicts.examples,
                eg(&self.conflicts.samples)
            ));
        }
        for (raw, t) in &self.read.unknown_labels {
            out.push(format!(
                "unknown label {raw:?} on {} row(s){} (labels: {}; map it with data.label_map or drop it with data.drop_labels)",
                t.count,
                first(t.first_at.as_deref()),
                self.labels.join(", ")
            ));
        }
        if self.read.missing_labels.count > 0 {
            out.push(format!(
                "{} row(s) have a text but no label{}",
                self.read.missing_labels.count,
                first(self.read.missing_labels.first_at.as_deref())
            ));
        }
        if self.read.empty_texts.count > 0 {
            out.push(format!(
                "{} row(s) have a label but an empty text{}",
                self.read.empty_texts.count,
                first(self.read.empty_texts.first_at.as_deref())
            ));
        }
        if let Some(line) = super::chat::disagreement(&self.read.system_turns) {
            out.push(line);
        }
        for s in &self.splits {
            if s.too_short > 0 {
                out.push(format!("{}: {} text(s) shorter than {} words (data.min_words)", s.split, s.too_short, self.min_words));
            }
        }
        for s in &self.splits {
            if s.examples > 0 && s.per_label.iter().filter(|l| l.count > 0).count() < 2 {
                let counts: Vec<String> = s.per_label.iter().map(|l| format!("{} {}", l.label, l.count)).collect();
                out.push(format!("{}: a single class ({}): wick refuses to train or score on it", s.split, counts.join(", ")));
            } else if s.imbalanced {
                let counts: Vec<String> = s.per_label.iter().map(|l| format!("{} {}", l.label, l.count)).collect();
                let ratio = s
                    .imbalance
                    .map_or_else(|| "a label has no examples".into(), |r| format!("majority/minority = {r:.2} > {IMBALANCE_LIMIT}"));
                out.push(format!("{}: class imbalance, {ratio} ({})", s.split, counts.join(", ")));
            }
        }
        if let (Some(n), Some(col)) = (self.shared_groups, &self.group_column)
            && n > 0
        {
            let samples: Vec<String> = self.shared_group_samples.iter().map(|g| format!("{g:?}")).collect();
            out.push(format!("{n} value(s) of {col:?} occur in more than one split{}", eg(&samples)));
        }
        out
    }

    /// Human-readable tables: per split and label, cross-split findings, then the problems.
    pub fn render_table(&self) -> String {
        let mut per = new_table(&["split", "label", "examples", "words min/mean/median/max", "tokens min/mean/median/max"]);
        for s in &self.splits {
            per.add_row(vec![
                s.split.clone(),
                "(all)".into(),
                s.examples.to_string(),
                LengthStats::cell(s.words.as_ref()),
                LengthStats::cell(s.tokens.as_ref()),
            ]);
            for l in &s.per_label {
                per.add_row(vec![
                    String::new(),
                    l.label.clone(),
                    l.count.to_string(),
                    LengthStats::cell(l.words.as_ref()),
                    LengthStats::cell(l.tokens.as_ref()),
                ]);
            }
        }
        right_align(&mut per, &[2]);

        let group_header = format!("{} values", self.group_column.as_deref().unwrap_or("group"));
        let too_short = format!("< {} words", self.min_words);
        let mut quality = new_table(&["split", &group_header, "imbalance", "dup texts (exact)", "dup texts (normalised)", &too_short]);
        for s in &self.splits {
            let ratio = match (s.imbalance, s.examples) {
                (_, 0) => "-".into(),
                (Some(r), _) => format!("{r:.2}{}", if s.imbalanced { " !" } else { "" }),
                (None, _) => "inf !".into(),
            };
            let groups = s.groups.map_or_else(|| "-".into(), |g| g.to_string());
            quality.add_row(vec![
                s.split.clone(),
                groups,
                ratio,
                s.exact_duplicates.to_string(),
                s.normalized_duplicates.to_string(),
                s.too_short.to_string(),
            ]);
        }
        right_align(&mut quality, &[1, 2, 3, 4, 5]);

        let mut overall = new_table(&["check", "count"]);
        let r = &self.read;
        let mut row = |name: String, n: usize| {
            overall.add_row(vec![name, n.to_string()]);
        };
        row("rows read".into(), r.rows);
        row("labelled examples".into(), r.examples);
        for (raw, n) in &r.dropped {
            row(format!("dropped (label {raw:?})"), *n);
        }
        row("skipped sentinels (empty text, no label)".into(), r.skipped_sentinels);
        for (raw, t) in &r.unknown_labels {
            row(format!("unknown label {raw:?}"), t.count);
        }
        row("text without label".into(), r.missing_labels.count);
        row("label with empty text".into(), r.empty_texts.count);
        if !r.system_turns.is_empty() {
            row("distinct system turns (none counts as one)".into(), r.system_turns.len());
        }
        row("texts in more than one split (exact)".into(), self.duplicates_across_splits.exact);
        row("texts in more than one split (normalised)".into(), self.duplicates_across_splits.normalized);
        row("texts with conflicting labels".into(), self.conflicts.texts);
        if let Some(n) = self.shared_groups {
            row(format!("{group_header} in more than one split"), n);
        }
        right_align(&mut overall, &[1]);

        let problems = self.problems();
        let verdict = if problems.is_empty() {
            "No problems found.".to_string()
        } else {
            let lines: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
            format!("Problems ({}):\n{}", problems.len(), lines.join("\n"))
        };
        // Only the fine-tuning layouts are named: for the others the extension already says it.
        let files: Vec<String> = self
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| match self.read.formats.get(i).map(String::as_str) {
                Some(fmt @ ("prompt-completion" | "openai-chat")) => format!("{f} ({fmt})"),
                _ => f.clone(),
            })
            .collect();
        format!("Data: {}\n{per}\n{quality}\n{overall}\n{verdict}\n", files.join(", "))
    }
}

/// " (first at file:line)" or nothing.
fn first(at: Option<&str>) -> String {
    at.map_or_else(String::new, |a| format!(" (first at {a})"))
}

fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    t
}

fn right_align(t: &mut Table, columns: &[usize]) {
    for &i in columns {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(text: &str, label: usize, group: &str) -> Example {
        Example { text: text.into(), label, group: Some(group.into()), line: 1 }
    }

    #[test]
    fn normalize_folds_case_punctuation_and_space() {
        assert_eq!(normalize("  Great,   FILM!\n"), "great film");
        assert_eq!(normalize("Don't"), "dont");
        assert_eq!(normalize("Élan — vital"), "élan vital");
    }

    #[test]
    fn length_stats_median_even_and_odd() {
        assert_eq!(LengthStats::of(&[3, 1, 2]), Some(LengthStats { min: 1, mean: 2.0, median: 2.0, max: 3 }));
        assert_eq!(LengthStats::of(&[4, 1, 2, 3]).map(|s| s.median), Some(2.5));
        assert_eq!(LengthStats::of(&[]), None);
    }

    #[test]
    fn finds_leaks_conflicts_shared_groups_and_imbalance() {
        let cfg = DataConfig { group_column: Some("movie".into()), ..DataConfig::default() };
        let splits = Splits {
            train: vec![
                ex("Good movie, truly.", 1, "m1"),
                ex("bad", 0, "m1"),
                ex("fine film overall", 1, "m2"),
                ex("fine film overall", 1, "m2"),
            ],
            dev: vec![ex("good movie truly", 0, "m1"), ex("awful dull slog", 0, "m3")],
            test: vec![],
        };
        let report = check_splits(&splits, ReadReport::default(), &cfg, None).unwrap();
        assert_eq!(report.duplicates_across_splits.exact, 0);
        assert_eq!(report.duplicates_across_splits.normalized, 1);
        assert_eq!(report.conflicts.texts, 1);
        assert_eq!(report.conflicts.examples, 2);
        assert_eq!(report.shared_groups, Some(1));
        let train = &report.splits[0];
        assert_eq!((train.exact_duplicates, train.too_short, train.groups), (1, 1, Some(2)));
        assert_eq!(train.imbalance, Some(3.0));
        assert!(train.imbalanced);
        assert!(train.tokens.is_none());
        assert!(!report.splits[2].imbalanced, "an empty split is not flagged");
        let problems = report.problems();
        assert!(problems.iter().any(|p| p.contains("more than one split") && p.contains("Good movie, truly.")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("conflicting labels")), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("train: class imbalance")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("\"movie\" occur in more than one split")), "{problems:?}");
        let table = report.render_table();
        assert!(table.contains("Problems (") && table.contains("movie values"), "{table}");
        serde_json::to_string(&report).unwrap();
    }

    #[test]
    fn clean_data_has_no_problems() {
        let cfg = DataConfig::default();
        let splits = Splits {
            train: vec![ex("a fine long text", 0, "x"), ex("another fine long text", 1, "y")],
            dev: vec![ex("dev text is here", 0, "z"), ex("and one more here", 1, "w")],
            test: vec![ex("test text is here", 1, "v"), ex("the last one here", 0, "u")],
        };
        let report = check_splits(&splits, ReadReport::default(), &cfg, None).unwrap();
        assert_eq!(report.problems(), Vec::<String>::new());
        assert_eq!(report.shared_groups, None);
        assert!(report.render_table().contains("No problems found."));
    }
}
