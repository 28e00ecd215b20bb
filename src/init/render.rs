//! The config text `wick init` writes: one short comment per section, every choice a key.

use std::path::Path;

use super::{LabelWord, run_name_for};
use crate::data::Format;

/// What goes into the config text.
pub(super) struct Render<'a> {
    pub(super) data: &'a Path,
    pub(super) model: &'a str,
    pub(super) format: Format,
    pub(super) text_column: &'a str,
    pub(super) label_column: &'a str,
    pub(super) group_column: Option<&'a str>,
    pub(super) words: &'a [LabelWord],
    pub(super) fractions: [f64; 3],
    pub(super) seed: u64,
    pub(super) chat_system: Option<&'a str>,
    pub(super) max_seq_len: usize,
    pub(super) dev_n: usize,
    pub(super) train_n: usize,
}

/// A TOML basic string (JSON's escapes are TOML's).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

pub(super) fn render_toml(r: &Render) -> String {
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
