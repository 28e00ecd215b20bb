//! Forward time of wick's decoder vs candle-transformers' quantized_llama (dequantized), same input.
use candle_core::{DType, Device, Tensor};
use std::time::Instant;
use wick::model::Batch;

fn main() -> anyhow::Result<()> {
    unsafe { std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1") };
    let dev = Device::Cpu;
    let path = "assets/SmolLM2-135M-Instruct.Q4_1.gguf";
    let loaded = wick::model::load(path, DType::F32, &dev)?;
    let mut f = std::fs::File::open(path)?;
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f)?;
    let mut theirs = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(ct, &mut f, &dev)?;
    let t = 64usize;
    let ids: Vec<u32> = (0..t).map(|i| (i as u32 * 7919) % 40000 + 100).collect();
    let input = Tensor::new(ids.as_slice(), &dev)?.unsqueeze(0)?;
    for _ in 0..3 {
        let s = Instant::now();
        theirs.clear_kv_cache();
        let _ = theirs.forward(&input, 0)?.to_vec2::<f32>()?;
        let a = s.elapsed().as_secs_f64();
        let s = Instant::now();
        let h = loaded.model.forward_hidden(&Batch { input_ids: &input, lengths: &[t] }, None, false)?;
        let _ = h.sum_all()?.to_scalar::<f32>()?;
        let b = s.elapsed().as_secs_f64();
        println!("1x{t}: candle quantized_llama {a:.3}s   wick {b:.3}s");
    }
    Ok(())
}
