//! Time one forward (no grad) and one forward+backward LoRA step on the real model, 16 × 64 tokens.
use candle_core::{DType, Device, Tensor};
use std::time::Instant;
use wick::model::{Batch, Llama};

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut loaded = wick::model::load("assets/SmolLM2-135M-Instruct.Q4_1.gguf", DType::F32, &dev)?;
    loaded.model.add_lora(&["all-linear".into()], 8, 2.0, 0.0, 1)?;
    let (b, t) = (16usize, 64usize);
    let ids: Vec<u32> = (0..b * t).map(|i| (i as u32 * 7919) % 40000 + 100).collect();
    let input = Tensor::from_vec(ids, (b, t), &dev)?;
    let lengths = vec![t; b];
    let label_ids = [2731u32, 3524];
    for _ in 0..2 {
        let s = Instant::now();
        let h = loaded.model.forward_hidden(&Batch { input_ids: &input, lengths: &lengths }, None, false)?;
        let _ = loaded.model.token_logits(&Llama::last_hidden(&h, &lengths)?, &label_ids)?.to_vec2::<f32>()?;
        let fwd = s.elapsed().as_secs_f64();
        let s = Instant::now();
        let h = loaded.model.forward_hidden(&Batch { input_ids: &input, lengths: &lengths }, None, true)?;
        let loss = loaded.model.token_logits(&Llama::last_hidden(&h, &lengths)?, &label_ids)?.sum_all()?;
        let f2 = s.elapsed().as_secs_f64();
        let g = loss.backward()?;
        let total = s.elapsed().as_secs_f64();
        drop(g);
        println!(
            "forward {fwd:.2}s  train-forward {f2:.2}s  forward+backward {total:.2}s  ratio {:.2}  train tok/s {:.0}",
            total / fwd,
            (b * t) as f64 / total
        );
    }
    Ok(())
}
