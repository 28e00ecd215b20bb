//! Prompts: instruction template, optional demonstrations and chat template, split into a shared
//! prefix and a per-example suffix, and the label words the model answers with.
//!
//! The same prompt serves the zero-shot baseline and the verbalizer head, so the tuned model is
//! literally "the prompt plus an adapter".

use tokenizers::Tokenizer;

use crate::config::PromptConfig;
use crate::error::{Error, Result};
use crate::tokenizer::{ChatMessage, ChatTemplate};

/// Marks where the example text goes while the chat template is rendered.
const SLOT: &str = "\u{1}WICK_TEXT\u{1}";

/// A labelled demonstration shown before the question (few-shot, retrieval).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Demo {
    /// Demonstration text.
    pub text: String,
    /// Its label index.
    pub label: usize,
}

/// A prompt tokenized as shared prefix + per-example rest; the label word is predicted after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTokens {
    /// Tokens before the example text (identical for every example with the same demonstrations).
    pub prefix: Vec<u32>,
    /// The example text and what follows it, up to the answer prefix.
    pub rest: Vec<u32>,
}

impl PromptTokens {
    /// The whole prompt.
    pub fn full(&self) -> Vec<u32> {
        [self.prefix.as_slice(), self.rest.as_slice()].concat()
    }
}

/// Each label word's tokens, in label order, and how a word's per-token log-probabilities
/// combine into its score: summed (the word's log-probability after the prompt), or averaged
/// over its tokens (`prompt.label_norm = "mean"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelTokens {
    /// Token ids of each label word.
    pub seqs: Vec<Vec<u32>>,
    /// Average instead of sum.
    pub mean: bool,
}

impl LabelTokens {
    /// The first token of each word.
    pub fn first_ids(&self) -> Vec<u32> {
        self.seqs.iter().map(|s| s[0]).collect()
    }

    /// Every word is one token (scoring needs no continuation pass).
    pub fn single_token(&self) -> bool {
        self.seqs.iter().all(|s| s.len() == 1)
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

/// Refuse a `train.max_seq_len` that cannot hold the fixed part of every template's prompt
/// (cutting the text alone would leave the model nothing to read, or no answer to give).
pub fn check_fits<'a>(prompters: impl IntoIterator<Item = (&'a str, &'a Prompter)>, max_seq_len: usize) -> Result<()> {
    let mut longest: Option<(usize, &str)> = None;
    for (name, p) in prompters {
        let n = p.fixed_len()?;
        if longest.is_none_or(|(m, _)| n > m) {
            longest = Some((n, name));
        }
    }
    match longest {
        Some((need, name)) if need >= max_seq_len => Err(Error::Config(format!(
            "train.max_seq_len = {max_seq_len} cannot hold the prompt's fixed part ({name}: system message, instruction, answer prefix and the longest label word take {need} tokens); set it above {need}, with room for the text"
        ))),
        _ => Ok(()),
    }
}

/// Renders and tokenizes prompts for one instruction template.
pub struct Prompter {
    system: String,
    template: String,
    answer_prefix: String,
    /// Label words in label order, as text (" positive").
    label_words: Vec<String>,
    /// The label words' tokens.
    label_tokens: LabelTokens,
    chat: Option<ChatTemplate>,
    tokenizer: Tokenizer,
}

impl Prompter {
    /// Build from the `[prompt]` config; `template` overrides `prompt.template` (for variants).
    pub fn new(
        cfg: &PromptConfig,
        labels: &[String],
        tokenizer: &Tokenizer,
        chat_template: Option<&str>,
        template: Option<&str>,
    ) -> Result<Self> {
        let template = template.unwrap_or(&cfg.template).to_string();
        if !template.contains("{text}") {
            return Err(Error::Config(format!("prompt template {template:?} must contain {{text}}")));
        }
        let mut label_words = Vec::new();
        let mut seqs: Vec<Vec<u32>> = Vec::new();
        for label in labels {
            let word =
                cfg.label_words.get(label).ok_or_else(|| Error::Config(format!("prompt.label_words has no word for label {label:?}")))?;
            let ids = tokenizer.encode(word.as_str(), false).map_err(|e| Error::Config(format!("prompt.label_words.{label}: {e}")))?;
            let ids = ids.get_ids().to_vec();
            if ids.is_empty() {
                return Err(Error::Config(format!("prompt.label_words.{label} = {word:?} tokenizes to nothing")));
            }
            if let Some(other) = seqs.iter().position(|s| *s == ids) {
                return Err(Error::Config(format!(
                    "prompt.label_words.{label} = {word:?} has the same tokens as the word of label {:?}",
                    labels[other]
                )));
            }
            seqs.push(ids);
            label_words.push(word.clone());
        }
        let label_tokens = LabelTokens { seqs, mean: cfg.label_norm == "mean" };
        let chat = match (cfg.use_chat_template, chat_template) {
            (true, Some(src)) => Some(ChatTemplate::new(src, None, None)?),
            _ => None,
        };
        Ok(Self {
            system: cfg.system.clone(),
            template,
            answer_prefix: cfg.answer_prefix.clone(),
            label_words,
            label_tokens,
            chat,
            tokenizer: tokenizer.clone(),
        })
    }

    /// The label words' tokens, in label order.
    pub fn label_tokens(&self) -> &LabelTokens {
        &self.label_tokens
    }

    /// The label words, in label order.
    pub fn label_words(&self) -> &[String] {
        &self.label_words
    }

    /// The prompt text for `text` after `demos`, ending with the answer prefix.
    pub fn render(&self, text: &str, demos: &[Demo]) -> Result<String> {
        let (prefix, rest) = self.render_parts(demos)?;
        Ok(format!("{prefix}{}", rest.replace(SLOT, text)))
    }

    /// (shared prefix, rest with the text slot): the template rendered around a placeholder.
    fn render_parts(&self, demos: &[Demo]) -> Result<(String, String)> {
        let question = |t: &str| self.template.replace("{text}", t);
        let answer = |label: usize| format!("{}{}", self.answer_prefix, self.label_words[label]);
        let whole = match &self.chat {
            Some(chat) => {
                let mut messages = Vec::new();
                if !self.system.is_empty() {
                    messages.push(ChatMessage::new("system", &self.system));
                }
                for d in demos {
                    messages.push(ChatMessage::new("user", question(&d.text)));
                    messages.push(ChatMessage::new("assistant", answer(d.label)));
                }
                messages.push(ChatMessage::new("user", question(SLOT)));
                format!("{}{}", chat.render(&messages, true)?, self.answer_prefix)
            }
            None => {
                let mut s = String::new();
                if !self.system.is_empty() {
                    s.push_str(&self.system);
                    s.push_str("\n\n");
                }
                for d in demos {
                    s.push_str(&format!("{}\n{}\n\n", question(&d.text), answer(d.label)));
                }
                format!("{s}{}\n{}", question(SLOT), self.answer_prefix)
            }
        };
        let at = whole.find(SLOT).ok_or_else(|| Error::Config("the chat template dropped the user message".into()))?;
        let (prefix, rest) = whole.split_at(at);
        // Spaces before the text belong to the text's first token in byte-level BPE.
        let trimmed = prefix.trim_end_matches(' ');
        Ok((trimmed.to_string(), format!("{}{rest}", &prefix[trimmed.len()..])))
    }

    /// Tokenize the prompt for `text` as prefix + rest. Every job uses this one tokenization,
    /// so cached-prefix and uncached scoring see the same tokens.
    pub fn tokens(&self, text: &str, demos: &[Demo]) -> Result<PromptTokens> {
        let (prefix, rest) = self.render_parts(demos)?;
        Ok(PromptTokens { prefix: self.encode(&prefix)?, rest: self.encode(&rest.replace(SLOT, text))? })
    }

    /// What every prompt holds whatever its text: the system message, the instruction, the chat
    /// template and the answer prefix, plus the longest label word, in tokens.
    pub fn fixed_len(&self) -> Result<usize> {
        let bare = self.tokens("", &[])?;
        Ok(bare.prefix.len() + bare.rest.len() + self.label_tokens.seqs.iter().map(Vec::len).max().unwrap_or(0))
    }

    /// Tokenize the shared prefix only.
    pub fn prefix_tokens(&self, demos: &[Demo]) -> Result<Vec<u32>> {
        self.encode(&self.render_parts(demos)?.0)
    }

    fn encode(&self, s: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(s, false).map_err(|e| Error::Data(format!("tokenizing a prompt: {e}")))?.get_ids().to_vec())
    }
}
