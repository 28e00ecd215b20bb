//! Time the real training step (forward + `Llama::backward`) on the config's own batches, where
//! `wick bench` times a fixed 16 × 64 batch:
//! `cargo run --release --example train_step_probe -- CONFIG [steps] [split|noprefix|full]`.
//! - `split` (default): what `wick train` runs, the prompt's shared prefix once per micro-batch;
//! - `noprefix`: the same rows without the prefix (what the prefix costs);
//! - `full`: every row carries its whole prompt (what sharing the prefix saves).
//!
//! Prints the mean step time and the step's rate on the bench's 4N basis, so the two compare.
use std::time::Instant;

use anyhow::Context;
use wick::score::Head;
use wick::train::batches::{Encoded, encode, epoch_batches};
use wick::train::{TrainLoss, micro_batch_loss};

fn main() -> anyhow::Result<()> {
    wick::ops::keep_freed_memory();
    wick::ops::blas::configure_blas();
    let args: Vec<String> = std::env::args().collect();
    let config = args.get(1).context("usage: train_step_probe CONFIG [steps] [split|noprefix|full]")?;
    let cfg = wick::data::load_config(std::path::Path::new(config))?;
    let steps: usize = args.get(2).map_or(Ok(8), |s| s.parse()).context("steps must be a number")?;
    let mode = args.get(3).map_or("split", String::as_str);
    anyhow::ensure!(["split", "noprefix", "full"].contains(&mode), "mode must be split, noprefix or full, not {mode}");
    let dev = candle_core::Device::Cpu;
    let mut loaded = wick::model::load(&cfg.model.source, candle_core::DType::F32, &dev)?;
    let (splits, _) = wick::data::load_splits(&cfg.data, wick::data::ReadMode::Strict)?;
    let prompter = wick::prompt::Prompter::new(&cfg.prompt, &cfg.data.labels, &loaded.tokenizer, loaded.chat_template.as_deref(), None)?;
    let (mut set, _) = encode(&prompter, &splits.train, cfg.train.max_seq_len)?;
    for e in &mut set {
        match mode {
            "noprefix" => e.prompt.prefix.clear(),
            "full" => e.prompt = wick::prompt::PromptTokens { prefix: Vec::new(), rest: e.prompt.full() },
            _ => {}
        }
    }
    let scale = wick::lora::lora_scale(cfg.lora.alpha, cfg.lora.r, cfg.lora.use_rslora);
    loaded.model.add_lora(&cfg.lora.target_modules, cfg.lora.r, scale, cfg.lora.dropout, cfg.train.seed)?;
    let lengths: Vec<usize> = set.iter().map(Encoded::len).collect();
    let order = epoch_batches(&lengths, cfg.train.batch_size, cfg.train.seed, 0);
    anyhow::ensure!(order.len() > steps, "{} batches, fewer than the {} steps asked", order.len(), steps + 1);
    let labels = prompter.label_tokens().clone();
    let loss_kind: TrainLoss = cfg.train.loss;
    let (mut seconds, mut tokens, mut real, mut padded) = (0.0, 0usize, 0usize, 0usize);
    // The first step warms the allocator and the BLAS; it is not timed.
    for (i, batch) in order.iter().take(steps + 1).enumerate() {
        let items: Vec<&Encoded> = batch.iter().map(|&i| &set[i]).collect();
        let start = Instant::now();
        let (loss, n) = micro_batch_loss(&loaded.model, Head::Verbalizer(&labels), loss_kind, &items, items.len())?;
        drop(loaded.model.backward(&loss)?);
        if i > 0 {
            seconds += start.elapsed().as_secs_f64();
            tokens += n;
            real += items.iter().map(|e| e.prompt.rest.len()).sum::<usize>();
            padded += items.len() * items.iter().map(|e| e.prompt.rest.len()).max().unwrap_or(0);
        }
    }
    let n = loaded.model.cfg.non_embedding_params() as f64;
    println!(
        "{mode}: prefix {} tokens; rows {:.1} tokens on average, {:.1}% padding",
        set[0].prompt.prefix.len(),
        real as f64 / (steps * cfg.train.batch_size) as f64,
        100.0 * (padded - real) as f64 / padded.max(1) as f64
    );
    println!(
        "{mode}: {steps} steps, {:.3} s a step, {:.0} tokens/s, {:.1} GFLOP/s on the 4N basis (prefix counted once)",
        seconds / steps as f64,
        tokens as f64 / seconds,
        4.0 * n * tokens as f64 / seconds / 1e9
    );
    Ok(())
}
