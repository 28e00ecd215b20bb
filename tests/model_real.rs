//! LoRA, scoring and export on the real SmolLM2-135M-Instruct GGUF.

use candle_core::{D, DType, Device, IndexOp, Tensor};
use wick::config::Config;
use wick::model::{Batch, Llama, LoadedModel};
use wick::prompt::Prompter;
use wick::score::{ScoreOptions, score};

const GGUF: &str = "assets/SmolLM2-135M-Instruct.Q4_1.gguf";

fn load() -> LoadedModel {
    wick::model::load(GGUF, DType::F32, &Device::Cpu).expect("run scripts/fetch-assets first")
}

fn last_hidden(model: &Llama, ids: &[u32]) -> Tensor {
    let input = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let h = model.forward_hidden(&Batch { input_ids: &input, lengths: &[ids.len()] }, None, false).unwrap();
    h.i((0, ids.len() - 1)).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn lora_with_zero_b_is_exact_and_merge_matches_unmerged() -> anyhow::Result<()> {
    let mut loaded = load();
    let ids = loaded.tokenizer.encode("A warm, funny and moving film.", false).map_err(anyhow::Error::msg)?.get_ids().to_vec();
    let base = last_hidden(&loaded.model, &ids);
    loaded.model.add_lora(&["all-linear".into()], 8, 2.0, 0.0, 1)?;
    assert_eq!(loaded.model.lora_vars().len(), 30 * 7 * 2);
    let with_zero_b = last_hidden(&loaded.model, &ids);
    assert_eq!(max_diff(&base, &with_zero_b), 0.0, "B = 0 must leave the model unchanged");
    // Give every B a value, as after training.
    for (name, var) in loaded.model.lora_vars() {
        if name.ends_with("lora_B.weight") {
            var.set(&Tensor::randn(0f32, 0.02, var.shape(), &Device::Cpu)?)?;
        }
    }
    let unmerged = last_hidden(&loaded.model, &ids);
    assert!(max_diff(&unmerged, &base) > 1e-3, "a non-zero B must change the output");
    loaded.model.merge_lora()?;
    let merged = last_hidden(&loaded.model, &ids);
    let rel = max_diff(&merged, &unmerged) / unmerged.abs()?.max(0)?.to_scalar::<f32>()?;
    println!("merge: max |diff| = {:.2e}, relative {rel:.2e}", max_diff(&merged, &unmerged));
    assert!(rel < 1e-5, "merged forward differs from unmerged: relative {rel}");
    loaded.model.unmerge_lora()?;
    let unmerged_again = last_hidden(&loaded.model, &ids);
    assert!(max_diff(&unmerged_again, &unmerged) / unmerged.abs()?.max(0)?.to_scalar::<f32>()? < 1e-5);
    Ok(())
}

#[test]
fn backward_reaches_every_lora_tensor() -> anyhow::Result<()> {
    let mut loaded = load();
    loaded.model.add_lora(&["all-linear".into()], 4, 2.0, 0.0, 3)?;
    let vars = loaded.model.lora_vars();
    let texts = ["An utterly joyless experience.", "Brilliant, I loved every minute."];
    let labels = [0u32, 1];
    let label_ids = [loaded.tokenizer.token_to_id("Ġnegative").unwrap(), loaded.tokenizer.token_to_id("Ġpositive").unwrap()];
    let encoded: Vec<Vec<u32>> = texts.iter().map(|t| loaded.tokenizer.encode(*t, false).unwrap().get_ids().to_vec()).collect();
    let lengths: Vec<usize> = encoded.iter().map(Vec::len).collect();
    let width = *lengths.iter().max().unwrap();
    let ids: Vec<u32> = encoded.iter().flat_map(|e| e.iter().copied().chain(std::iter::repeat(0)).take(width)).collect();
    let input = Tensor::from_vec(ids, (2, width), &Device::Cpu)?;
    let target = Tensor::new(&labels, &Device::Cpu)?;
    let mut opt = candle_nn::SGD::new(vars.iter().map(|(_, v)| v.clone()).collect(), 0.5)?;
    use candle_nn::Optimizer;
    for step in 1..=2 {
        let hidden = loaded.model.forward_hidden(&Batch { input_ids: &input, lengths: &lengths }, None, true)?;
        let logits = loaded.model.token_logits(&Llama::last_hidden(&hidden, &lengths)?, &label_ids)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &target)?;
        let grads = loaded.model.backward(&loss)?;
        let zero: Vec<&String> = vars
            .iter()
            .filter(|(name, _)| step == 2 || name.ends_with("lora_B.weight"))
            .filter(|(_, v)| {
                grads.get(v.as_tensor()).map_or(true, |g| g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() == 0.0)
            })
            .map(|(n, _)| n)
            .collect();
        assert!(zero.is_empty(), "step {step}: {} tensors got no gradient, e.g. {:?}", zero.len(), zero.first());
        opt.step(&grads)?;
    }
    Ok(())
}

#[test]
fn batched_and_cached_scoring_equal_direct_log_softmax() -> anyhow::Result<()> {
    let loaded = load();
    let cfg = Config::parse("").map_err(anyhow::Error::msg)?;
    let prompter = Prompter::new(&cfg.prompt, &cfg.data.labels, &loaded.tokenizer, loaded.chat_template.as_deref(), None)?;
    let texts = [
        "Dull.",
        "A masterpiece of quiet suspense that rewards patience.",
        "I want my two hours back!",
        "Funny, sharp and surprisingly tender.",
        "It exists.",
    ];
    let prompts: Vec<_> = texts.iter().map(|t| prompter.tokens(t, &[])).collect::<Result<_, _>>()?;
    let label_ids = prompter.label_tokens().first_ids();
    let opts = ScoreOptions { batch_size: 4, max_len: 512, prefix_cache: false };
    let plain = score(&loaded.model, prompter.label_tokens(), &prompts, opts)?;
    let cached = score(&loaded.model, prompter.label_tokens(), &prompts, ScoreOptions { prefix_cache: true, ..opts })?;
    for (i, p) in prompts.iter().enumerate() {
        let full = p.full();
        let direct = candle_nn::ops::log_softmax(&loaded.model.logits(&last_hidden(&loaded.model, &full))?, D::Minus1)?;
        for (l, &id) in label_ids.iter().enumerate() {
            let want = direct.i(id as usize)?.to_scalar::<f32>()?;
            assert!((plain[i].label_logprobs[l] - want).abs() < 1e-4, "batched {i}/{l}: {} vs {want}", plain[i].label_logprobs[l]);
            assert!((cached[i].label_logprobs[l] - want).abs() < 1e-4, "cached {i}/{l}: {} vs {want}", cached[i].label_logprobs[l]);
        }
        assert_eq!(plain[i].prompt_tokens, full.len());
        assert_eq!(cached[i].prompt_tokens, full.len());
    }
    Ok(())
}

#[test]
fn export_round_trip_gives_identical_logits() -> anyhow::Result<()> {
    let loaded = load();
    let dir = tempfile::tempdir()?;
    wick::export::write_hf(&loaded, dir.path(), candle_core::DType::F32)?;
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    let back = wick::model::load(dir.path().to_str().unwrap(), DType::F32, &Device::Cpu)?;
    assert_eq!(back.model.cfg, loaded.model.cfg);
    assert_eq!(back.chat_template, loaded.chat_template);
    let text = "<|im_start|>user\nC'est très bien, 12 étoiles 🌟<|im_end|>";
    let a = loaded.tokenizer.encode(text, false).map_err(anyhow::Error::msg)?.get_ids().to_vec();
    let b = back.tokenizer.encode(text, false).map_err(anyhow::Error::msg)?.get_ids().to_vec();
    assert_eq!(a, b);
    let la = loaded.model.logits(&last_hidden(&loaded.model, &a))?;
    let lb = back.model.logits(&last_hidden(&back.model, &b))?;
    assert_eq!(max_diff(&la, &lb), 0.0);
    Ok(())
}
