//! The real SmolLM2 GGUF: wick's logits equal candle-transformers' quantized_llama with every
//! weight dequantized (its own, permuted-rope path), and greedy decoding answers a question.

use std::fs::File;

use candle_core::{DType, Device, IndexOp, Tensor};
use wick::model::Batch;

const GGUF: &str = "assets/SmolLM2-135M-Instruct.Q4_1.gguf";

#[test]
fn real_model_matches_quantized_llama_and_answers_paris() -> anyhow::Result<()> {
    // QMatMul reads this when built: compare against f32 matmuls of the same dequantized weights.
    unsafe { std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1") };
    let dev = Device::Cpu;
    let loaded = wick::model::load(GGUF, DType::F32, &dev)?;
    let mut file = File::open(GGUF)?;
    let ct = candle_core::quantized::gguf_file::Content::read(&mut file)?;
    let mut theirs = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(ct, &mut file, &dev)?;

    let prompts = ["The capital of France is", "I loved this movie, it was", "1 2 3 4 5 6"];
    for prompt in prompts {
        let ids = loaded.tokenizer.encode(prompt, false).map_err(anyhow::Error::msg)?.get_ids().to_vec();
        let input = Tensor::new(ids.as_slice(), &dev)?.unsqueeze(0)?;
        theirs.clear_kv_cache();
        let want = theirs.forward(&input, 0)?.squeeze(0)?;
        let hidden = loaded.model.forward_hidden(&Batch { input_ids: &input, lengths: &[ids.len()] }, None, false)?;
        let got = loaded.model.logits(&hidden.i((0, ids.len() - 1))?)?;
        let diff = (got - &want)?.abs()?.max(0)?.to_scalar::<f32>()?;
        println!("{prompt:?}: {} tokens, max |logit diff| = {diff:.2e}", ids.len());
        assert!(diff < 1e-3, "{prompt:?}: max |logit diff| = {diff}");
    }

    let template = loaded.chat_template.as_deref().expect("SmolLM2-Instruct ships a chat template");
    let tmpl = wick::tokenizer::ChatTemplate::new(template, None, None)?;
    let text = tmpl.render(&[wick::tokenizer::ChatMessage::new("user", "What is the capital of France?")], true)?;
    let ids = loaded.tokenizer.encode(text.as_str(), false).map_err(anyhow::Error::msg)?.get_ids().to_vec();
    let im_end = loaded.tokenizer.token_to_id("<|im_end|>").expect("<|im_end|> token");
    let answer = loaded.model.generate_greedy(&ids, 12, &[im_end])?;
    let answer = loaded.tokenizer.decode(&answer, true).map_err(anyhow::Error::msg)?;
    println!("greedy answer: {answer:?}");
    assert!(answer.contains("Paris"), "greedy answer {answer:?} does not name Paris");
    Ok(())
}
