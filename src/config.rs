//! Run configuration: one TOML file with sections model, data, prompt, lora, train, cost, output.
//!
//! Every key has a default (see docs/config.md); unknown keys are rejected with the
//! closest valid key, and values are validated with messages naming the file and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::suggest::suggest;

pub mod kinds;
pub mod shifted;
mod validate;

pub use kinds::{HeadKind, Loss, Retriever, Schedule};
pub use shifted::ShiftedSet;

/// The all-MiniLM-L6-v2 folder `prompt.retriever = "minilm"` loads by default (scripts/fetch-assets puts it there).
pub const DEFAULT_RETRIEVER_MODEL: &str = "assets/all-MiniLM-L6-v2";

/// The whole run configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Which pretrained model to load.
    pub model: ModelConfig,
    /// Where the labelled data comes from and how it is split.
    pub data: DataConfig,
    /// Prompt template and label words, shared by baselines and the verbalizer head.
    pub prompt: PromptConfig,
    /// LoRA adapter shape.
    pub lora: LoraConfig,
    /// Training hyper-parameters.
    pub train: TrainConfig,
    /// Prices used by the cost report.
    pub cost: CostConfig,
    /// Thresholds of the prompt-or-fine-tune decision tree.
    pub decision: DecisionConfig,
    /// What `wick compare` runs (split, example budget, strategies, learning curve).
    pub compare: CompareConfig,
    /// Where outputs go.
    pub output: OutputConfig,
    /// The file this config was read from (set by [`Config::load`]; not a TOML key).
    #[serde(skip)]
    pub source_path: Option<PathBuf>,
}

/// `[model]`: the pretrained model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A GGUF file, an HF folder (config.json + safetensors + tokenizer.json) or a hub id `org/name[@rev]`.
    pub source: String,
    /// Compute dtype of the frozen base: "auto" (f16 on CUDA, f32 on CPU), "f32", "f16", "bf16".
    pub dtype: String,
    /// "auto", "cpu" or "cuda:N".
    pub device: String,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self { source: "assets/SmolLM2-135M-Instruct.Q4_1.gguf".into(), dtype: "auto".into(), device: "auto".into() }
    }
}

/// `[data]`: the labelled data set and its splits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Data file (CSV, TSV, JSONL or JSON array; optionally .bz2 / .gz). Ignored when split files are given.
    pub path: Option<PathBuf>,
    /// "auto" (from the extension; JSONL rows in a fine-tuning layout are recognised), "csv",
    /// "tsv", "jsonl", "json", "prompt-completion" or "openai-chat".
    pub format: String,
    /// Column (or JSON field) holding the text.
    pub text_column: String,
    /// Column (or JSON field) holding the label.
    pub label_column: String,
    /// Optional column whose values never straddle splits (e.g. the movie).
    pub group_column: Option<String>,
    /// The label set, in class-index order.
    pub labels: Vec<String>,
    /// Raw label value -> label name (values that already are label names need no entry).
    pub label_map: BTreeMap<String, String>,
    /// Raw label values whose rows are skipped and counted (e.g. "plot").
    pub drop_labels: Vec<String>,
    /// Fractions of the data for train / dev / test (must sum to 1).
    pub train_fraction: f64,
    /// Fraction for dev.
    pub dev_fraction: f64,
    /// Fraction for test.
    pub test_fraction: f64,
    /// Seed of the split.
    pub seed: u64,
    /// Explicit split files instead of fractions (all three or none).
    pub train_path: Option<PathBuf>,
    /// Explicit dev split file.
    pub dev_path: Option<PathBuf>,
    /// Explicit test split file.
    pub test_path: Option<PathBuf>,
    /// Texts with fewer words than this are reported as too short by `data check`.
    pub min_words: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            path: None,
            format: "auto".into(),
            text_column: "text".into(),
            label_column: "label".into(),
            group_column: None,
            labels: vec!["negative".into(), "positive".into()],
            label_map: BTreeMap::new(),
            drop_labels: Vec::new(),
            train_fraction: 0.8,
            dev_fraction: 0.1,
            test_fraction: 0.1,
            seed: 42,
            train_path: None,
            dev_path: None,
            test_path: None,
            min_words: 3,
        }
    }
}

/// `[prompt]`: how a text becomes a prompt, and which words name the labels.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptConfig {
    /// System message (used when the model has a chat template). When the file does not set it
    /// and the data is openai-chat, [`crate::data::load_config`] takes the rows' most common system turn.
    pub system: String,
    /// Instruction template; must contain `{text}`.
    pub template: String,
    /// Paraphrases of `template` used to measure consistency (each must contain `{text}`).
    pub variants: Vec<String>,
    /// Label name -> the word the model should answer with (leading space matters).
    pub label_words: BTreeMap<String, String>,
    /// Text the answer starts with; the label word follows it (e.g. "Sentiment:" + " positive").
    pub answer_prefix: String,
    /// How a label word of several tokens is scored: "sum" (its log-probability after the
    /// prompt) or "mean" (per token). Single-token words score the same either way.
    // Left out of the serialised config at its default, so stored results keep their hash.
    #[serde(skip_serializing_if = "is_default_label_norm")]
    pub label_norm: String,
    /// Chain-of-thought: the instruction added after each template (main and variants) that asks
    /// for brief reasoning before the answer. Left out of the serialised config at its default.
    #[serde(skip_serializing_if = "is_default_cot_instruction")]
    pub cot_instruction: String,
    /// Chain-of-thought: the most reasoning tokens generated (greedy, stopping at end-of-turn).
    #[serde(skip_serializing_if = "is_default_cot_max_tokens")]
    pub cot_max_tokens: usize,
    /// Apply the model's chat template when it has one.
    pub use_chat_template: bool,
    /// Number of demonstrations for few-shot and retrieval.
    pub k_shot: usize,
    /// Seed for demonstration sampling and order.
    pub seed: u64,
    /// How retrieval finds neighbours: "decoder" (cosine of the model's mean-pooled hidden
    /// states), "bm25" (lexical Okapi BM25 over the pool) or "minilm" (cosine of
    /// all-MiniLM-L6-v2 sentence embeddings).
    pub retriever: Retriever,
    /// The all-MiniLM-L6-v2 folder (config.json, tokenizer.json, model.safetensors) that
    /// `retriever = "minilm"` loads.
    // Left out of the serialised config at its default so the prompt results hash, and the
    // results stored under it, stay those of configs written before this key existed.
    #[serde(skip_serializing_if = "is_default_retriever_model")]
    pub retriever_model: PathBuf,
    /// The TOML set `system` itself (set by [`Config::parse`]; not a key), so data never overrides it.
    #[serde(skip)]
    pub system_explicit: bool,
}

impl Default for PromptConfig {
    fn default() -> Self {
        let label_words =
            [("negative", " negative"), ("positive", " positive")].into_iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        Self {
            system: "You are a helpful assistant that classifies the sentiment of movie reviews.".into(),
            template: "Is the sentiment of this review positive or negative?\nReview: {text}\nAnswer with one word.".into(),
            variants: vec![
                "Classify the sentiment of the following review as positive or negative.\nReview: {text}".into(),
                "Review: {text}\nDid the reviewer like the movie? Answer positive or negative.".into(),
                "Here is a movie review: \"{text}\"\nIs this review positive or negative?".into(),
            ],
            label_words,
            answer_prefix: "Sentiment:".into(),
            label_norm: "sum".into(),
            cot_instruction: DEFAULT_COT_INSTRUCTION.into(),
            cot_max_tokens: DEFAULT_COT_MAX_TOKENS,
            use_chat_template: true,
            k_shot: 4,
            seed: 7,
            retriever: Retriever::Decoder,
            retriever_model: DEFAULT_RETRIEVER_MODEL.into(),
            system_explicit: false,
        }
    }
}

/// `[lora]`: the adapter, with HF PEFT's meaning for every field.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank r.
    pub r: usize,
    /// lora_alpha; the scale is alpha/r (alpha/sqrt(r) with rslora).
    pub alpha: f64,
    /// Dropout on the adapter input during training.
    pub dropout: f64,
    /// Module names to adapt, or ["all-linear"].
    pub target_modules: Vec<String>,
    /// Use rank-stabilised scaling alpha/sqrt(r).
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self { r: 8, alpha: 16.0, dropout: 0.05, target_modules: vec!["all-linear".into()], use_rslora: false }
    }
}

/// `[train]`: optimisation and checkpointing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// "verbalizer" (label-word logits) or "linear" (a new head on the last token).
    pub head: HeadKind,
    /// Verbalizer loss: "label_words" (cross-entropy over the label words' logits only, the
    /// classification loss PEFT users write) or "vocab" (−log p of the label token under the full
    /// vocabulary). The linear head always uses cross-entropy over its labels.
    pub loss: Loss,
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Micro-batch size.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Optimiser steps (0: derived from `epochs`).
    pub max_steps: usize,
    /// Passes over the train split when `max_steps` is 0.
    pub epochs: f64,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// "cosine", "linear" or "constant" decay after warmup.
    pub schedule: Schedule,
    /// Floor of the decay as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Global-norm gradient clipping (0 disables).
    pub max_grad_norm: f64,
    /// Longer inputs are truncated (and counted).
    pub max_seq_len: usize,
    /// Evaluate on dev every this many steps.
    pub eval_every: usize,
    /// Evaluate on at most this many dev examples (0: all of dev).
    pub eval_examples: usize,
    /// Early-stopping patience in evaluations (0 disables).
    pub patience: usize,
    /// Wall-clock budget of training in minutes (0: none): the step that crosses it is the last,
    /// then a dev evaluation and checkpoint as at the end of a run.
    pub max_minutes: f64,
    /// "accuracy" or "macro_f1".
    pub metric: String,
    /// Keep this many most recent checkpoints (plus the best).
    pub save_total_limit: usize,
    /// Seed of shuffling, dropout and adapter init.
    pub seed: u64,
    /// Keep only each layer's input during the forward and re-run the layer in the backward:
    /// far less activation memory for ~1 more forward per step (CPU; ignored elsewhere).
    pub gradient_checkpointing: bool,
}

impl TrainConfig {
    /// Examples per optimizer step: batch_size × grad_accum (both validated ≥ 1).
    pub fn effective_batch(&self) -> usize {
        self.batch_size * self.grad_accum
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            head: HeadKind::Verbalizer,
            loss: Loss::Vocab,
            lr: 2e-4,
            weight_decay: 0.0,
            batch_size: 16,
            grad_accum: 1,
            max_steps: 0,
            epochs: 1.0,
            warmup_steps: 10,
            schedule: Schedule::Cosine,
            min_lr_ratio: 0.1,
            max_grad_norm: 1.0,
            max_seq_len: 256,
            eval_every: 50,
            eval_examples: 0,
            patience: 0,
            max_minutes: 0.0,
            metric: "accuracy".into(),
            save_total_limit: 2,
            seed: 42,
            gradient_checkpointing: false,
        }
    }
}

/// `[cost]`: prices for the decision report (the seed's 2024 API prices by default).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostConfig {
    /// $ per 1K input tokens on the base model.
    pub base_input_per_1k: f64,
    /// $ per 1K output tokens on the base model.
    pub base_output_per_1k: f64,
    /// $ per 1K input tokens on the tuned model.
    pub tuned_input_per_1k: f64,
    /// $ per 1K output tokens on the tuned model.
    pub tuned_output_per_1k: f64,
    /// $ per 1K training tokens.
    pub training_per_1k: f64,
    /// $ per GPU-hour when self-hosting (0: not reported).
    pub gpu_hour: f64,
    /// Requests per month for the monthly figures.
    pub monthly_requests: u64,
}

impl Default for CostConfig {
    fn default() -> Self {
        Self {
            base_input_per_1k: 0.03,
            base_output_per_1k: 0.06,
            tuned_input_per_1k: 0.012,
            tuned_output_per_1k: 0.012,
            training_per_1k: 0.008,
            gpu_hour: 0.0,
            monthly_requests: 100_000,
        }
    }
}

/// `[decision]`: thresholds of the seed's decision tree (labels, consistency, volume, accuracy).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionConfig {
    /// Fewer labelled train examples than this: keep prompting.
    pub min_labels: usize,
    /// Whether identical answers across prompt wordings matter (favours the more consistent strategy).
    pub consistency_critical: bool,
    /// Requests per month from which the cheaper-per-request tuned model pays off.
    pub volume_threshold: u64,
    /// Accuracy (0 to 1) the application needs.
    pub required_accuracy: f64,
    /// Prompt improvements below this many accuracy points count as a plateau.
    pub plateau_points: f64,
    /// "As accurate" margin (0 to 1): the tuned model counts as at least as accurate as the best
    /// prompt when the lower bound of the paired 95% interval of (tuned − prompt) is above −margin.
    pub equivalence_margin: f64,
    /// Whether the application may pass unsure requests to a person: the required-accuracy
    /// question then compares the share each system answers at that accuracy (threshold chosen
    /// on dev) instead of its accuracy on all requests.
    pub abstain: bool,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        Self {
            min_labels: 500,
            consistency_critical: false,
            volume_threshold: 10_000,
            required_accuracy: 0.90,
            plateau_points: 3.0,
            equivalence_margin: 0.01,
            abstain: false,
        }
    }
}

/// Label counts from which a learning-curve point runs one seed (`compare.curve_seeds` below).
pub const CURVE_SEEDS_BELOW: usize = 500;

/// `[compare]`: what `wick compare` measures, sized to fit a CPU budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompareConfig {
    /// Split every strategy and the tuned model are measured on.
    pub split: String,
    /// Score only the first N examples of that split (0: all).
    pub limit: usize,
    /// Prompt strategies to measure.
    pub strategies: Vec<String>,
    /// Prompt strategies to measure on the tuned model too ("tuned + few-shot", with the base
    /// run's demonstrations): the seed's "combining both". Verbalizer head only.
    pub tuned_strategies: Vec<String>,
    /// Retrieval index over a seeded sample of this many train examples (0: the whole split).
    pub retrieval_pool: usize,
    /// Label counts of the extra fine-tuning runs of the learning curve (the full run is the last point).
    pub learning_curve: Vec<usize>,
    /// Seeds of each learning-curve run below [`CURVE_SEEDS_BELOW`] labels, where seed variance
    /// is largest (a point is their mean with min–max); one seed from there on.
    pub curve_seeds: usize,
    /// Epoch budget of each learning-curve run (early stopping and `train.max_minutes` apply as
    /// in the full run); a small subset needs several passes, not the full run's one.
    pub curve_epochs: f64,
    /// Each learning-curve run chooses its checkpoint on the first this many of the dev sample
    /// (at most `train.eval_examples`; 0: as the full run).
    pub curve_dev_examples: usize,
    /// Each learning-curve point is measured on the first this many test examples (a seeded
    /// sample: the split is shuffled), the full run's and the best prompt's too (0: all).
    pub curve_test_examples: usize,
    /// Scoring batch size.
    pub batch_size: usize,
    /// Choices (best prompt strategy, tuned checkpoint) are made on a seeded sample of this many
    /// dev examples (0: all of dev).
    pub dev_examples: usize,
    /// Consistency across templates and demonstration orders is measured on a seeded sample of
    /// this many test examples (0: all).
    pub consistency_examples: usize,
    /// Bootstrap resamples of every interval (≥ 1,000).
    pub resamples: usize,
    /// Wall-clock budget of the whole comparison in minutes (0: none). The fine-tuning run runs
    /// last among the long stages and gets what the others leave (at most `train.max_minutes`).
    pub max_minutes: f64,
    /// Minutes of the prompt search on dev (`wick compare` and `wick baseline --search`): its
    /// stages start while it has spent less (0: no search; every strategy is scored on test).
    pub search_minutes: f64,
    /// Shifted data sets on which the chosen prompt and the tuned model are both scored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shifted: Vec<ShiftedSet>,
    /// Examples scored from each shifted set (a seeded sample; 0: all).
    pub shifted_examples: usize,
}

impl Default for CompareConfig {
    fn default() -> Self {
        Self {
            split: "test".into(),
            limit: 0,
            strategies: ["zero-shot", "few-shot", "calibrated", "retrieval", "cot"].map(String::from).to_vec(),
            tuned_strategies: ["few-shot", "retrieval"].map(String::from).to_vec(),
            retrieval_pool: 2000,
            learning_curve: vec![50, 100, 200, 500, 1000],
            curve_seeds: 3,
            curve_epochs: 3.0,
            curve_dev_examples: 250,
            curve_test_examples: 600,
            batch_size: 16,
            dev_examples: 500,
            consistency_examples: 300,
            resamples: crate::stats::DEFAULT_RESAMPLES,
            max_minutes: 0.0,
            search_minutes: 15.0,
            shifted: Vec::new(),
            shifted_examples: 300,
        }
    }
}

/// `[output]`: where runs are written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Directory of run outputs.
    pub dir: PathBuf,
    /// Run name (a sub-directory of `dir`).
    pub run_name: String,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self { dir: "checkpoints".into(), run_name: "default".into() }
    }
}

impl Config {
    /// Read, parse and validate a config file. Relative paths are resolved against the current
    /// directory (configs are run from the repository root, as in the README).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut cfg = Self::parse(&text).map_err(|msg| Error::Config(format!("{}: {msg}", path.display())))?;
        cfg.source_path = Some(path.to_path_buf());
        cfg.validate().map_err(|msg| Error::Config(format!("{}: {msg}", path.display())))?;
        Ok(cfg)
    }

    /// Parse TOML text; the error names the key (and the closest valid key when it is unknown).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut cfg = toml::from_str::<Self>(text).map_err(|e| describe_toml_error(text, &e))?;
        // serde fills defaults silently, so presence is only visible in the raw table.
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| describe_toml_error(text, &e))?;
        cfg.prompt.system_explicit = table.get("prompt").and_then(|p| p.as_table()).is_some_and(|p| p.contains_key("system"));
        Ok(cfg)
    }

    /// sha256 (hex, 16 chars) of the sections that decide a fine-tuning result (model, data,
    /// prompt, lora, train): equal hashes mean a stored result can be reused.
    pub fn results_hash(&self) -> String {
        short_hash(&(&self.model, &self.data, &self.prompt, &self.lora, &self.train))
    }

    /// The same for prompt-only results, which do not depend on `[lora]` or `[train]` (except
    /// the prompt length limit).
    pub fn prompt_results_hash(&self) -> String {
        short_hash(&(&self.model, &self.data, &self.prompt, self.train.max_seq_len))
    }

    /// Directory of this run's outputs: `output.dir/output.run_name`.
    pub fn run_dir(&self) -> PathBuf {
        self.output.dir.join(&self.output.run_name)
    }
}

fn is_default_retriever_model(p: &Path) -> bool {
    p == Path::new(DEFAULT_RETRIEVER_MODEL)
}

/// The default `prompt.cot_instruction`.
pub const DEFAULT_COT_INSTRUCTION: &str = "Before you answer, explain your reasoning in one or two short sentences.";
/// The default `prompt.cot_max_tokens`.
pub const DEFAULT_COT_MAX_TOKENS: usize = 64;

fn is_default_cot_instruction(s: &str) -> bool {
    s == DEFAULT_COT_INSTRUCTION
}

fn is_default_cot_max_tokens(n: &usize) -> bool {
    *n == DEFAULT_COT_MAX_TOKENS
}

fn is_default_label_norm(norm: &str) -> bool {
    norm == "sum"
}

/// First 8 bytes, in hex, of the sha256 of a value's JSON.
fn short_hash(value: &impl Serialize) -> String {
    use sha2::{Digest, Sha256};
    let text = serde_json::to_string(value).unwrap_or_default();
    Sha256::digest(text.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Turn a toml/serde error into one line naming the key (and line), suggesting the closest key.
fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let msg = err.message().trim().to_string();
    let location = err.span().map(|span| {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        format!("line {line}: ")
    });
    let location = location.unwrap_or_default();
    // serde's message: "unknown field `lr_rate`, expected one of `lr`, `weight_decay`, ..."
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            return format!("{location}unknown key `{field}`{}", suggest(field, &valid));
        }
    }
    // serde's message: "unknown variant `dense`, expected one of `decoder`, `bm25`, `minilm`"
    if let (Some(rest), Some(span)) = (msg.strip_prefix("unknown variant `"), err.span()) {
        if let Some((value, expected)) = rest.split_once('`') {
            let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            let key = key_at(text, span.start);
            return format!("{location}{key} = {value:?}: expected {}{}", valid.join(", "), suggest(value, &valid));
        }
    }
    format!("{location}{msg}")
}

/// "section.key" of the TOML line holding byte `at` (the key before `=`, under the last `[section]`).
fn key_at(text: &str, at: usize) -> String {
    let before = &text[..at.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let section = before[..line_start].lines().rev().find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')));
    match section {
        Some(section) => format!("{}.{key}", section.trim()),
        None => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_suggests_closest() {
        let err = Config::parse("[train]\nlearning_rat = 0.1\n").unwrap_err();
        assert!(err.contains("unknown key `learning_rat`"), "{err}");
        let err = Config::parse("[train]\nbatchsize = 4\n").unwrap_err();
        assert!(err.contains("did you mean `batch_size`"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = Config::parse("[trian]\n").unwrap_err();
        assert!(err.contains("did you mean `train`"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let err = Config::parse("[train]\nlr = \"fast\"\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn fractions_must_sum_to_one() {
        let mut cfg = Config::parse("[data]\npath = \"Cargo.toml\"\ntrain_fraction = 0.9\n").unwrap();
        assert!(cfg.validate().unwrap_err().contains("sum to 1"));
        cfg.data.train_fraction = 0.8;
        cfg.validate().unwrap();
    }

    #[test]
    fn decision_accuracy_is_a_fraction() {
        let cfg = Config::parse("[data]\npath = \"Cargo.toml\"\n[decision]\nrequired_accuracy = 90\n").unwrap();
        assert!(cfg.validate().unwrap_err().contains("decision.required_accuracy"));
        let err = Config::parse("[decision]\nmin_label = 3\n").unwrap_err();
        assert!(err.contains("did you mean `min_labels`"), "{err}");
    }
}
