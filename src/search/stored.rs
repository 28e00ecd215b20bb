//! The prompt a search chose, as a file a user can read, copy into an application or edit
//! (`<run_dir>/search/prompt.toml`), and its scoring: `wick eval/predict --strategy searched`
//! and the report's "prompt (searched)" row score it this one way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::baseline::{BaselineOptions, Baselines, Strategy, VariantRun, calibrate};
use crate::config::Config;
use crate::data::Example;
use crate::error::{CandleContext, Error, Result};
use crate::model::LoadedModel;
use crate::prompt::{Demo, Prompter};
use crate::score::{ScoreOptions, argmax, score};

/// A demonstration as the file shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDemo {
    /// The text.
    pub text: String,
    /// Its label name.
    pub label: String,
}

/// A prompt the search chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchedPrompt {
    /// How the search named it.
    pub name: String,
    /// How it is scored: "zero-shot" (the instruction, with `demos` when there are some),
    /// "retrieval" or "cot" (those strategies under this instruction and these words).
    pub family: String,
    /// The instruction template (`{text}` marks the example).
    pub template: String,
    /// Label name → the word the model answers with.
    pub label_words: BTreeMap<String, String>,
    /// Contextual calibration on (Zhao et al. 2021: divided by the content-free probabilities).
    pub calibrate: bool,
    /// Fixed demonstrations, in the order shown.
    #[serde(default)]
    pub demos: Vec<StoredDemo>,
    /// Accuracy on the dev sample that chose it, and that sample's size.
    pub dev_accuracy: f64,
    /// Dev examples it was chosen on.
    pub dev_examples: usize,
}

/// Where a run's searched prompt is kept.
pub fn prompt_path(cfg: &Config) -> PathBuf {
    cfg.run_dir().join("search").join("prompt.toml")
}

impl SearchedPrompt {
    /// Write it atomically as TOML.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string(self).map_err(|e| Error::Data(format!("writing the searched prompt: {e}")))?;
        let head = "# The prompt `wick compare` (or `wick baseline --search`) chose on dev. Edit it freely;\n\
                    # `wick eval/predict --strategy searched` score what this file says.\n";
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        crate::model::load::write_atomic(path, format!("{head}{text}").as_bytes())
    }

    /// Read one, naming the file in every error.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Config(format!(
                    "{}: no searched prompt yet; run `wick compare` or `wick baseline --search` with this config first",
                    path.display()
                ))
            } else {
                Error::io(path, e)
            }
        })?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {}", path.display(), e.message())))
    }

    /// `cfg` with this prompt's instruction and label words (and no variants): the config its
    /// family is scored under.
    pub fn config(&self, cfg: &Config) -> Result<Config> {
        let mut out = cfg.clone();
        for label in &cfg.data.labels {
            if !self.label_words.contains_key(label) {
                return Err(Error::Config(format!("the searched prompt has no label word for label {label:?}")));
            }
        }
        out.prompt.template = self.template.clone();
        out.prompt.label_words = self.label_words.clone();
        out.prompt.variants.clear();
        Ok(out)
    }

    /// The demonstrations with their label indices.
    pub fn demos(&self, labels: &[String]) -> Result<Vec<Demo>> {
        self.demos
            .iter()
            .map(|d| {
                let label = labels
                    .iter()
                    .position(|l| *l == d.label)
                    .ok_or_else(|| Error::Config(format!("a demonstration of the searched prompt has unknown label {:?}", d.label)))?;
                Ok(Demo { text: d.text.clone(), label })
            })
            .collect()
    }
}

/// Score `prompt` on `texts`: its label probabilities, predictions, latency and lengths.
/// `train` feeds retrieval (unused otherwise).
pub fn score_searched(
    loaded: &LoadedModel,
    cfg: &Config,
    train: &[Example],
    prompt: &SearchedPrompt,
    texts: &[String],
    batch_size: usize,
) -> Result<VariantRun> {
    let cfg = prompt.config(cfg)?;
    let family: Strategy = prompt.family.parse()?;
    let opts = BaselineOptions {
        batch_size,
        calibrate_on: Strategy::ZeroShot,
        all_variants: false,
        retrieval_pool: crate::baseline::retrieval_pool(None, &cfg),
    };
    let baselines = Baselines::new(loaded, &cfg, train, opts)?;
    if matches!(family, Strategy::Retrieval | Strategy::Cot) {
        let mut run = baselines.predict(family, texts)?;
        run.name = prompt.name.clone();
        return Ok(run);
    }
    let prompter = &baselines.prompters()[0].1;
    let demos = prompt.demos(&cfg.data.labels)?;
    let (prompts, truncated) = baselines.prompts(prompter, &|_| demos.clone(), texts)?;
    let opts = ScoreOptions { batch_size: batch_size.max(1), max_len: usize::MAX, prefix_cache: true };
    let mut scored = score(&loaded.model, prompter.label_tokens(), &prompts, opts).context(|| "scoring the searched prompt".into())?;
    for (s, t) in scored.iter_mut().zip(truncated) {
        s.truncated |= t;
    }
    let mut run = VariantRun::from_scored(prompt.name.clone(), &scored, None);
    if prompt.calibrate {
        let p_cf = baselines.content_free_probs(prompter, &demos)?;
        run.probs = run.probs.iter().map(|p| calibrate(p, &p_cf)).collect();
        run.predicted = run.probs.iter().map(|p| argmax(p)).collect();
    }
    Ok(run)
}

/// A prompter for `template` under `cfg`'s prompt settings with the given label words.
pub(super) fn prompter(loaded: &LoadedModel, cfg: &Config, template: &str, words: &BTreeMap<String, String>) -> Result<Prompter> {
    let mut p = cfg.prompt.clone();
    p.label_words = words.clone();
    Prompter::new(&p, &cfg.data.labels, &loaded.tokenizer, loaded.chat_template.as_deref(), Some(template))
}
