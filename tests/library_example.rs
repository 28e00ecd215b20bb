//! The library walk-through (examples/library.rs) runs end to end on the tiny model with the real
//! tokenizer and data: a prompt scored, a LoRA run, and a comparison (with its prompt search) whose
//! report has every row.

mod common;

#[path = "../examples/library.rs"]
mod library;

use common::{TRAIN, tiny_config, tiny_model_dir};

#[test]
fn the_library_walk_through_runs_on_the_tiny_model() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let model = tiny_model_dir(tmp.path(), 4);
    let cfg = tiny_config(tmp.path(), &model, &format!("{TRAIN}\nmax_steps = 3"));
    let mut text = std::fs::read_to_string(&cfg)?;
    text.push_str("[compare]\nlimit = 12\ndev_examples = 16\nstrategies = [\"zero-shot\", \"few-shot\"]\ntuned_strategies = []\nlearning_curve = []\nbatch_size = 4\n");
    std::fs::write(&cfg, text)?;
    let report = library::walk(&cfg, 16)?;
    let names: Vec<&str> = report.rows.iter().map(|r| r.name.as_str()).collect();
    // Few-shot is a candidate of the prompt search on dev; the prompt it chose is scored on test.
    assert_eq!(names, ["zero-shot", "prompt (searched)", "fine-tuned (LoRA)"]);
    let search = report.search.as_ref().expect("a prompt search ran");
    assert!(search.candidates.iter().any(|c| c.name == "few-shot (hand-written)"));
    assert_eq!(report.header.test_examples, 12);
    assert!(tmp.path().join("ck/run/compare/finetune.json").is_file(), "the stages are stored for reuse");
    Ok(())
}
