//! The closed sets of names a config chooses among: prompt strategies, data formats, retrievers,
//! heads, losses and schedules. A leaf, so every module may name them. The serde names are the
//! config's strings, so a config's hash (and every result stored under it) is unchanged.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A prompt-only strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The template alone.
    ZeroShot,
    /// k class-balanced demonstrations sampled from the train split.
    FewShot,
    /// Zero-shot (or few-shot) probabilities divided by those of content-free inputs.
    Calibrated,
    /// The k most similar train examples as demonstrations.
    Retrieval,
    /// Brief reasoning generated before the answer (chain-of-thought).
    Cot,
}

impl Strategy {
    /// Every strategy, in report order.
    pub const ALL: [Strategy; 5] = [Strategy::ZeroShot, Strategy::FewShot, Strategy::Calibrated, Strategy::Retrieval, Strategy::Cot];

    /// CLI / folder name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::ZeroShot => "zero-shot",
            Strategy::FewShot => "few-shot",
            Strategy::Calibrated => "calibrated",
            Strategy::Retrieval => "retrieval",
            Strategy::Cot => "cot",
        }
    }

    /// "all" or a comma-separated list of names.
    pub fn parse_list(s: &str) -> Result<Vec<Strategy>> {
        if s.trim() == "all" {
            return Ok(Self::ALL.to_vec());
        }
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let st: Strategy = part.parse()?;
            if !out.contains(&st) {
                out.push(st);
            }
        }
        if out.is_empty() {
            return Err(Error::Config("--strategy is empty (expected all, zero-shot, few-shot, calibrated, retrieval or cot)".into()));
        }
        Ok(out)
    }

    /// Shows the model labelled demonstrations.
    pub fn uses_demos(self) -> bool {
        matches!(self, Strategy::FewShot | Strategy::Retrieval)
    }
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Strategy::ALL.into_iter().find(|st| st.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Strategy::ALL.iter().map(|s| s.name()).collect();
            Error::Config(format!("unknown strategy {s:?}{}", crate::suggest::suggest(s, &names)))
        })
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// File format of a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// From the extension, after stripping `.bz2` / `.gz`.
    Auto,
    /// Comma-separated with a header row.
    Csv,
    /// Tab-separated with a header row.
    Tsv,
    /// One JSON object per line.
    Jsonl,
    /// One JSON array of objects.
    Json,
    /// JSONL of `{"prompt": text, "completion": label}` (text/label columns are not used).
    PromptCompletion,
    /// JSONL of OpenAI chat fine-tuning rows: the user turn is the text, the assistant turn the label.
    OpenaiChat,
}

impl Format {
    /// Every `data.format` value, in the order messages list them.
    pub const NAMES: [&'static str; 7] = ["auto", "csv", "tsv", "jsonl", "json", "prompt-completion", "openai-chat"];

    /// Parse a `data.format` value (one of [`Format::NAMES`]).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "csv" => Ok(Self::Csv),
            "tsv" => Ok(Self::Tsv),
            "jsonl" => Ok(Self::Jsonl),
            "json" => Ok(Self::Json),
            "prompt-completion" => Ok(Self::PromptCompletion),
            "openai-chat" => Ok(Self::OpenaiChat),
            other => Err(Error::Config(format!(
                "data.format = {other:?}: expected one of {}{}",
                Self::NAMES.join(", "),
                crate::suggest::suggest(other, &Self::NAMES)
            ))),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Auto => "auto",
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Jsonl => "jsonl",
            Format::Json => "json",
            Format::PromptCompletion => "prompt-completion",
            Format::OpenaiChat => "openai-chat",
        })
    }
}

/// Display through the config's own name of a value.
macro_rules! named {
    ($t:ty { $($v:ident => $n:literal),+ $(,)? }) => {
        impl $t {
            /// The value as the config writes it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$v => $n),+
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

/// How retrieval finds a text's nearest train examples (`prompt.retriever`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Retriever {
    /// Cosine of the model's mean-pooled hidden states.
    Decoder,
    /// Lexical Okapi BM25 over the pool.
    Bm25,
    /// Cosine of all-MiniLM-L6-v2 sentence embeddings.
    Minilm,
}
named!(Retriever { Decoder => "decoder", Bm25 => "bm25", Minilm => "minilm" });

/// What reads the labels off the model (`train.head`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// The label words' logits under the LM head: the tuned model is the prompt plus an adapter.
    Verbalizer,
    /// A new linear layer on the last token's hidden state.
    Linear,
}
named!(HeadKind { Verbalizer => "verbalizer", Linear => "linear" });

/// What the verbalizer's training loss normalises over (`train.loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Softmax over the label words' logits only: cross-entropy of a classifier over the labels.
    LabelWords,
    /// −log p(label token) under the full vocabulary: language-model NLL of the answer.
    Vocab,
}
named!(Loss { LabelWords => "label_words", Vocab => "vocab" });

/// The learning rate's decay after warmup (`train.schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Half a cosine from the peak down to the floor.
    Cosine,
    /// A straight line from the peak down to the floor.
    Linear,
    /// The peak throughout.
    Constant,
}
named!(Schedule { Cosine => "cosine", Linear => "linear", Constant => "constant" });
