//! wick as a library, top to bottom: read a config, load the model once, score a prompt on dev,
//! fine-tune LoRA on the same model and prompt, then run the whole comparison and print its
//! report. `cargo run --release --example library -- configs/rotten-tomatoes.toml`
//! (tests/library_example.rs runs it on a tiny model).

use std::path::Path;

use wick::baseline::{BaselineOptions, Baselines, Memo, Strategy};
use wick::compare::CompareOptions;
use wick::data::ReadMode;
use wick::metrics::Metrics;
use wick::report::CompareReport;
use wick::train::TrainOptions;

#[allow(dead_code)]
fn main() -> anyhow::Result<()> {
    let config = std::env::args().nth(1).unwrap_or_else(|| "configs/rotten-tomatoes.toml".into());
    let report = walk(Path::new(&config), 64)?;
    println!("{}", wick::report::render_terminal(&report));
    Ok(())
}

/// The walk-through on `config`, with `dev_n` dev examples for the prompt's own score.
pub fn walk(config: &Path, dev_n: usize) -> anyhow::Result<CompareReport> {
    // 1. The config (every key defaulted and validated) and its seeded splits.
    let cfg = wick::data::load_config(config)?;
    let (splits, _) = wick::data::load_splits(&cfg.data, ReadMode::Strict)?;

    // 2. The model, once: every step below shares it.
    let mut loaded = wick::eval::load_model(&cfg.model)?;

    // 3. A prompt: zero-shot with the config's template, scored by the label words.
    let dev = &splits.dev[..dev_n.min(splits.dev.len())];
    let texts: Vec<String> = dev.iter().map(|e| e.text.clone()).collect();
    let gold: Vec<usize> = dev.iter().map(|e| e.label).collect();
    let baselines = Baselines::new(&loaded, &cfg, &splits.train, BaselineOptions::default())?;
    let run = baselines.run_main(Strategy::ZeroShot, &texts, &mut Memo::default())?;
    let main = &run.variants[0];
    let zero_shot = Metrics::compute(&gold, &main.predicted, &main.probs, &main.latency_ms, &main.prompt_tokens, &cfg.data.labels);
    eprintln!("zero-shot on {} dev examples: accuracy {:.3}", gold.len(), zero_shot.accuracy);
    drop(baselines);

    // 4. Fine-tuning: LoRA on the same model and prompt; the best dev checkpoint is kept.
    let summary = wick::train::train_model(&cfg, &mut loaded, &TrainOptions { quiet: true, ..TrainOptions::default() })?;
    let best = summary.best.as_ref().map_or(f64::NAN, |b| b.accuracy);
    eprintln!("fine-tuned: {} steps, best dev accuracy {best:.3}", summary.steps);
    loaded.model.clear_lora()?;

    // 5. The comparison: every strategy and the tuned model, chosen on dev, reported on test.
    Ok(wick::compare::compare(&cfg, &mut loaded, &CompareOptions::default())?)
}
