//! What `wick baseline` and `wick eval` write: metrics.json and predictions.jsonl, plus the
//! evaluation data they read (a split of the configured data, or any data file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::baseline::{CacheCheck, VariantRun};
use crate::config::Config;
use crate::data::{Example, ReadMode, ReadSpec, Splits, load_splits, read_file_with};
use crate::error::{Error, Result};
use crate::metrics::{Consistency, Metrics};
use crate::model::load::write_atomic;

/// Where the examples to score come from, and how to read a `--data` file.
#[derive(Debug, Clone, Default)]
pub struct DataArgs {
    /// Score this data file (CSV, TSV, JSONL, JSON; optionally .bz2/.gz) instead of a split.
    pub data: Option<PathBuf>,
    /// Column (or JSON key) of the text in --data (default: `text`, else the config's).
    pub text_column: Option<String>,
    /// Column (or JSON key) of the label in --data (default: `label`, else the config's).
    pub label_column: Option<String>,
    /// Raw label value -> label name for --data, e.g. "1=positive,0=negative".
    pub label_map: Option<String>,
}

/// Parse "1=positive,0=negative" into a raw-value -> label-name map.
pub fn parse_label_map(s: &str, labels: &[String]) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (raw, name) = part
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("--label-map entry {part:?}: expected RAW=LABEL, e.g. \"1=positive,0=negative\"")))?;
        let (raw, name) = (raw.trim(), name.trim());
        if !labels.iter().any(|l| l == name) {
            return Err(Error::Config(format!("--label-map {raw}={name}: {name:?} is not one of the labels {labels:?}")));
        }
        map.insert(raw.to_string(), name.to_string());
    }
    Ok(map)
}

/// The scored examples and the name of their output folder (split name or file stem).
pub struct EvalSet {
    /// Output folder name: "test", or "imdb" for `--data assets/ood/imdb.json`.
    pub name: String,
    /// What was read, for the report: "split test" or the file path.
    pub source: String,
    /// The examples, after `--limit`.
    pub examples: Vec<Example>,
}

/// File name without directories and without `.bz2`/`.gz` and the format extension.
pub fn file_stem(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
    let name = name.strip_suffix(".bz2").or_else(|| name.strip_suffix(".gz")).unwrap_or(&name);
    name.rsplit_once('.').map_or(name, |(stem, _)| stem).to_string()
}

/// Read a `--data` file: explicit flags win; with none, a file with `text`/`label` columns
/// whose labels are label names (or mapped by the config) works, else the config's columns.
pub fn read_data_file(path: &Path, args: &DataArgs, cfg: &Config) -> Result<Vec<Example>> {
    let d = &cfg.data;
    let mut spec = ReadSpec::new(d.labels.clone());
    spec.label_map = d.label_map.clone();
    spec.drop_labels = d.drop_labels.clone();
    let flags = args.text_column.is_some() || args.label_column.is_some() || args.label_map.is_some();
    if let Some(c) = &args.text_column {
        spec.text_column = c.clone();
    }
    if let Some(c) = &args.label_column {
        spec.label_column = c.clone();
    }
    if let Some(m) = &args.label_map {
        spec.label_map.extend(parse_label_map(m, &d.labels)?);
    }
    let first = read_file_with(path, &spec, ReadMode::Strict);
    let examples = match first {
        Ok((ex, _)) => ex,
        Err(e) if flags => return Err(e),
        Err(e) => {
            let hint = || Error::Data(format!("{e} (set --text-column, --label-column and --label-map)"));
            let mut from_cfg = ReadSpec::from_config(d)?;
            from_cfg.format = spec.format;
            if from_cfg == spec {
                return Err(hint());
            }
            read_file_with(path, &from_cfg, ReadMode::Strict).map_err(|_| hint())?.0
        }
    };
    if examples.is_empty() {
        return Err(Error::Data(format!("{}: no labelled examples", path.display())));
    }
    Ok(examples)
}

/// The examples to score: `--data FILE` or the named split of the configured data. `--limit N`
/// keeps the first N of a split (splits are already shuffled) or a seeded random N of a file
/// (files are often sorted by label). Returns the train split too when `need_train`.
pub fn load_eval_set(
    cfg: &Config,
    split: &str,
    args: &DataArgs,
    limit: Option<usize>,
    need_train: bool,
) -> Result<(EvalSet, Vec<Example>)> {
    if !["train", "dev", "test"].contains(&split) {
        return Err(Error::Config(format!("--split {split:?}: expected train, dev or test")));
    }
    let splits = if need_train || args.data.is_none() { Some(load_splits(&cfg.data, ReadMode::Strict)?.0) } else { None };
    let pick = |s: &Splits| -> Vec<Example> {
        match split {
            "train" => s.train.clone(),
            "dev" => s.dev.clone(),
            _ => s.test.clone(),
        }
    };
    let set = match &args.data {
        Some(path) => {
            let mut examples = read_data_file(path, args, cfg)?;
            if let Some(n) = limit.filter(|&n| n < examples.len()) {
                examples.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.data.seed));
                examples.truncate(n);
            }
            EvalSet { name: file_stem(path), source: path.display().to_string(), examples }
        }
        None => {
            let s = splits.as_ref().ok_or_else(|| Error::Data("the configured data was not loaded".into()))?;
            let mut examples = pick(s);
            examples.truncate(limit.unwrap_or(usize::MAX));
            EvalSet { name: split.to_string(), source: format!("split {split}"), examples }
        }
    };
    if set.examples.is_empty() {
        return Err(Error::Data(format!("{}: nothing to score (0 examples)", set.source)));
    }
    Ok((set, splits.map(|s| s.train).unwrap_or_default()))
}

/// Accuracy and friends of one template or demonstration order.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct VariantSummary {
    /// "template", "variant 1", "order 2", ...
    pub name: String,
    /// Share of correct predictions.
    pub accuracy: f64,
    /// Macro-F1.
    pub macro_f1: f64,
    /// Expected calibration error.
    pub ece: f64,
}

/// Content-free calibration details.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CalibrationInfo {
    /// The strategy calibrated (zero-shot or few-shot).
    pub base: String,
    /// The content-free inputs.
    pub content_free_inputs: Vec<String>,
    /// Mean content-free label probabilities, per template.
    pub p_cf: Vec<Vec<f32>>,
}

/// Retrieval index details.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RetrievalInfo {
    /// `prompt.retriever`: "decoder", "bm25" or "minilm" (empty in results stored before it existed).
    #[serde(default)]
    pub retriever: String,
    /// Indexed train examples (a sample when `--retrieval-pool` is smaller than the split).
    pub index_size: usize,
    /// Examples in the train split.
    pub train_size: usize,
    /// Seconds to build the index (0 when read from the on-disk cache).
    pub index_seconds: f64,
    /// True when the index came from the on-disk cache.
    pub index_from_cache: bool,
    /// Share of examples whose most similar train example has the gold label (how far plain
    /// nearest-neighbour voting would get).
    pub nearest_label_accuracy: Option<f64>,
}

/// A demonstration as written to metrics.json.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DemoOut {
    /// Its text.
    pub text: String,
    /// Its label name.
    pub label: String,
}

/// metrics.json of one strategy or checkpoint on one data set.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    /// "baseline" or "eval".
    pub command: String,
    /// Strategy (baseline) or head ("verbalizer" / "linear", eval).
    pub method: String,
    /// Checkpoint folder (eval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Split or file scored.
    pub data: String,
    /// Examples scored.
    pub n: usize,
    /// `--limit`, when given.
    pub limit: Option<usize>,
    /// Model source.
    pub model: String,
    /// Device and dtype.
    pub device: String,
    /// Label set.
    pub labels: Vec<String>,
    /// Predicted label index per example under the main template, in data order (what paired
    /// tests between systems scored on the same examples need).
    #[serde(default)]
    pub predicted: Vec<usize>,
    /// Metrics of the main template (and first demonstration order).
    pub metrics: Metrics,
    /// Per template.
    pub templates: Vec<VariantSummary>,
    /// Agreement and accuracy range across templates.
    pub consistency: Option<Consistency>,
    /// Per demonstration order (few-shot).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orders: Vec<VariantSummary>,
    /// Agreement and accuracy range across demonstration orders (few-shot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_consistency: Option<Consistency>,
    /// Examples whose text was cut to fit `train.max_seq_len`.
    pub truncated: usize,
    /// Cached-prefix vs uncached scoring: equality and speedup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache: Option<CacheCheck>,
    /// Contextual calibration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationInfo>,
    /// Fixed demonstrations (few-shot), first order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub demos: Vec<DemoOut>,
    /// Retrieval index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<RetrievalInfo>,
    /// Wall seconds of the whole strategy (every template and order).
    pub seconds: f64,
    /// Mean output tokens per request under the main template: the generated reasoning plus the
    /// answer (chain-of-thought); absent means one (the answer position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens_mean: Option<f64>,
}

/// Main metrics, per-template summaries and consistency of a set of runs.
pub fn summarize(
    variants: &[VariantRun],
    gold: &[usize],
    labels: &[String],
) -> Option<(Metrics, Vec<VariantSummary>, Option<Consistency>)> {
    let main = variants.first()?;
    let metrics = |v: &VariantRun| Metrics::compute(gold, &v.predicted, &v.probs, &v.latency_ms, &v.prompt_tokens, labels);
    let summaries: Vec<VariantSummary> = variants
        .iter()
        .map(|v| {
            let m = metrics(v);
            VariantSummary { name: v.name.clone(), accuracy: m.accuracy, macro_f1: m.macro_f1, ece: m.ece }
        })
        .collect();
    let consistency = (variants.len() > 1).then(|| {
        let preds: Vec<Vec<usize>> = variants.iter().map(|v| v.predicted.clone()).collect();
        let names: Vec<String> = variants.iter().map(|v| v.name.clone()).collect();
        Consistency::compute(gold, &preds, &names)
    });
    Some((metrics(main), summaries, consistency))
}

#[derive(Serialize)]
struct PredictionLine<'a> {
    text: &'a str,
    gold: &'a str,
    predicted: &'a str,
    probabilities: BTreeMap<&'a str, f32>,
    /// Chain-of-thought: what the model reasoned before the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<&'a str>,
}

/// A command's result and the lines the command line shows for it: the library composes the
/// summary and never prints it.
#[derive(Debug)]
pub struct Summarized<T> {
    /// What the command measured or wrote.
    pub value: T,
    /// The lines to show (stdout), each ending in a newline.
    pub summary: String,
}

/// Write `metrics.json` and `predictions.jsonl` (one line per example) into `dir`, atomically.
pub fn write_outputs(dir: &Path, report: &Report, examples: &[Example], main: &VariantRun) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json = serde_json::to_vec_pretty(report).map_err(|e| Error::Data(format!("serialising metrics: {e}")))?;
    write_atomic(&dir.join("metrics.json"), &json)?;
    let labels = &report.labels;
    let name = |i: usize| labels.get(i).map_or("?", String::as_str);
    let mut lines = Vec::new();
    for (i, ((ex, &pred), probs)) in examples.iter().zip(&main.predicted).zip(&main.probs).enumerate() {
        let line = PredictionLine {
            reasoning: main.reasoning.get(i).map(String::as_str),
            text: &ex.text,
            gold: name(ex.label),
            predicted: name(pred),
            probabilities: labels.iter().map(String::as_str).zip(probs.iter().copied()).collect(),
        };
        serde_json::to_writer(&mut lines, &line).map_err(|e| Error::Data(format!("serialising predictions: {e}")))?;
        lines.push(b'\n');
    }
    write_atomic(&dir.join("predictions.jsonl"), &lines)
}
