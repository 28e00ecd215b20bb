//! Repeat the bench's no-grad forward (16 × 64 tokens, LoRA attached) N times, for `perf record`:
//! `cargo run --release --example forward_profile -- [N] [batch] [seq] [train]`. With `train`
//! it repeats the bench's training step (forward, `Llama::backward`) instead.
use std::time::Instant;

use candle_core::{DType, Device};
use wick::model::{Batch, Llama};

fn main() -> anyhow::Result<()> {
    wick::ops::keep_freed_memory();
    wick::ops::blas::configure_blas();
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(Ok(10), |s| s.parse())?;
    let b: usize = args.get(2).map_or(Ok(16), |s| s.parse())?;
    let t: usize = args.get(3).map_or(Ok(64), |s| s.parse())?;
    let train = args.get(4).is_some_and(|s| s == "train");
    let dev = Device::Cpu;
    let mut loaded = wick::model::load("assets/SmolLM2-135M-Instruct.Q4_1.gguf", DType::F32, &dev)?;
    loaded.model.add_lora(&["all-linear".into()], 8, 2.0, 0.0, 1)?;
    let (input, lengths) = wick::bench::fixed_batch(b, t, &dev)?;
    let label_ids = [2731u32, 3524];
    let mut times = Vec::new();
    for _ in 0..=n {
        let s = Instant::now();
        if train {
            let loss = wick::bench::label_loss(&loaded.model, &input, &lengths, &label_ids, true)?;
            drop(loaded.model.backward(&loss)?);
        } else {
            let h = loaded.model.forward_hidden(&Batch { input_ids: &input, lengths: &lengths }, None, false)?;
            loaded.model.token_logits(&Llama::last_hidden(&h, &lengths)?, &label_ids)?.to_vec2::<f32>()?;
        }
        times.push(s.elapsed().as_secs_f64());
    }
    let mut sorted = times[1..].to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    println!(
        "{} {}x{}: median {:.3} s, {:.0} tokens/s",
        if train { "train step" } else { "forward" },
        b,
        t,
        median,
        (b * t) as f64 / median
    );
    Ok(())
}
