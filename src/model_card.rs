//! The `README.md` model card of a checkpoint folder, as PEFT writes one beside an adapter: what
//! it was trained on, how well it does, and how to load it.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::Config;
use crate::error::Result;

/// The card's file name.
pub const CARD_FILE: &str = "README.md";

/// One split's headline metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitMetrics {
    /// Accuracy in [0, 1].
    pub accuracy: f64,
    /// Macro-F1 in [0, 1].
    pub macro_f1: f64,
    /// Examples scored (`None` when not recorded).
    pub examples: Option<usize>,
}

/// What the card says about one checkpoint.
pub struct CardFacts<'a> {
    /// The run config the adapter was trained with.
    pub config: &'a Config,
    /// The base weights' fingerprint.
    pub fingerprint: &'a str,
    /// Optimiser step of this checkpoint.
    pub step: usize,
    /// Dev metrics at this step, when evaluated.
    pub dev: Option<SplitMetrics>,
    /// Test metrics, once `wick eval` scored the test split.
    pub test: Option<SplitMetrics>,
}

fn metric_line(split: &str, m: Option<SplitMetrics>) -> String {
    match m {
        Some(m) => format!(
            "| {split} | {:.1}% | {:.1}% | {} |",
            100.0 * m.accuracy,
            100.0 * m.macro_f1,
            m.examples.map_or("?".into(), |n| n.to_string())
        ),
        None => format!("| {split} | not measured | | |"),
    }
}

/// The card's Markdown, with PEFT's YAML header (`base_model`, `library_name: peft`).
pub fn render(f: &CardFacts, dir: &Path) -> String {
    let c = f.config;
    let d = &c.data;
    let data = match (&d.train_path, &d.dev_path, &d.test_path, &d.path) {
        (Some(tr), Some(dv), Some(te), _) => {
            format!("split files: train `{}`, dev `{}`, test `{}`", tr.display(), dv.display(), te.display())
        }
        (_, _, _, Some(p)) => format!(
            "`{}`, split {:.0}/{:.0}/{:.0} (train/dev/test) with seed {}{}",
            p.display(),
            100.0 * d.train_fraction,
            100.0 * d.dev_fraction,
            100.0 * d.test_fraction,
            d.seed,
            d.group_column.as_ref().map(|g| format!(", grouped by `{g}`")).unwrap_or_default()
        ),
        _ => "(not recorded)".into(),
    };
    let words: Vec<String> =
        d.labels.iter().map(|l| format!("`{l}` → `{}`", c.prompt.label_words.get(l).map_or("?", String::as_str))).collect();
    let head = if c.train.head == crate::config::HeadKind::Linear {
        "linear head on the last token's hidden state (PEFT `modules_to_save = [\"score\"]`, task SEQ_CLS)"
    } else {
        "verbalizer: the label words' log-probabilities after the prompt (task CAUSAL_LM)"
    };
    let dir_s = dir.display();
    let mut s = String::new();
    let _ = writeln!(s, "---\nbase_model: {}\nlibrary_name: peft\ntags:\n- lora\n- wick\n- text-classification\n---\n", c.model.source);
    let _ = writeln!(s, "# LoRA adapter: {} (step {})\n", c.output.run_name, f.step);
    let _ = writeln!(s, "Trained by wick. HF PEFT LoRA format: `adapter_config.json` + `adapter_model.safetensors`.\n");
    let _ = writeln!(s, "## Base model\n\n- source: `{}`\n- fingerprint of the base weights: `{}`\n", c.model.source, f.fingerprint);
    let _ = writeln!(
        s,
        "## Adapter\n\n- r = {}, lora_alpha = {}, dropout = {}, rsLoRA: {}, targets: {}\n- head: {head}\n",
        c.lora.r,
        c.lora.alpha,
        c.lora.dropout,
        c.lora.use_rslora,
        c.lora.target_modules.join(", ")
    );
    let _ = writeln!(s, "## Data\n\n- {data}\n- labels: {}\n", d.labels.join(", "));
    let _ = writeln!(
        s,
        "## Prompt\n\n- system: {:?}\n- template: {:?}\n- answer prefix: {:?}\n- label words: {}\n- chat template applied: {}\n",
        c.prompt.system,
        c.prompt.template,
        c.prompt.answer_prefix,
        words.join(", "),
        c.prompt.use_chat_template
    );
    let _ = writeln!(s, "## Metrics\n\n| split | accuracy | macro-F1 | examples |\n|---|---|---|---|");
    let _ = writeln!(s, "{}\n{}\n", metric_line("dev", f.dev), metric_line("test", f.test));
    let _ = writeln!(s, "Dev picks the checkpoint; test is scored once with `wick eval --checkpoint {dir_s} --split test`.\n");
    let _ = writeln!(
        s,
        "## Use it\n\nWith wick:\n\n```sh\nwick eval --checkpoint {dir_s} --split test\nwick predict --checkpoint {dir_s} \"An instant classic.\"\n\
         wick export --checkpoint {dir_s} merged --format hf     # or --format gguf\n```\n"
    );
    let _ = writeln!(
        s,
        "With PEFT (the base must be the exact weights wick used: export them with `wick model export {} base-model`):\n\n\
         ```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\nfrom peft import PeftModel\n\n\
         base = AutoModelForCausalLM.from_pretrained(\"base-model\")\ntokenizer = AutoTokenizer.from_pretrained(\"base-model\")\n\
         model = PeftModel.from_pretrained(base, \"{dir_s}\")\n```",
        c.model.source
    );
    s
}

/// Write the card into `dir` (atomically); `shown` is the folder's final path, which the card's
/// commands name (a checkpoint is written into a temporary folder and renamed).
pub fn write(dir: &Path, shown: &Path, facts: &CardFacts) -> Result<()> {
    crate::model::load::write_atomic(&dir.join(CARD_FILE), render(facts, shown).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_names_base_data_prompt_metrics_and_loading() {
        let cfg = Config::default();
        let m = SplitMetrics { accuracy: 0.8675, macro_f1: 0.8612, examples: Some(300) };
        let card =
            render(&CardFacts { config: &cfg, fingerprint: "abc123", step: 100, dev: Some(m), test: None }, Path::new("ck/run/step-100"));
        assert!(card.starts_with("---\nbase_model: "), "{card}");
        assert!(card.contains("library_name: peft"));
        assert!(card.contains("`abc123`"));
        assert!(card.contains("| dev | 86.8% | 86.1% | 300 |"), "{card}");
        assert!(card.contains("| test | not measured"));
        assert!(card.contains(&format!("{:?}", cfg.prompt.template)));
        assert!(card.contains("PeftModel.from_pretrained(base, \"ck/run/step-100\")"));
    }
}
