//! The closed sets of names a config chooses among: prompt strategies and data formats. A leaf, so
//! every module may name them.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

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
