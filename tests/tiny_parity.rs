//! Random tiny Llama and Qwen2 configs: wick's decoder equals candle-transformers' models.

use std::collections::HashMap;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use wick::model::config::WeightRole;
use wick::model::{ArchConfig, Batch, Llama};

fn random_weights(cfg: &ArchConfig, seed: u64) -> candle_core::Result<HashMap<String, Tensor>> {
    let dev = Device::Cpu;
    dev.set_seed(seed).ok();
    let mut m = HashMap::new();
    for (name, shape, role) in cfg.weight_shapes() {
        let std = match role {
            WeightRole::Embedding | WeightRole::Norm => 1.0,
            WeightRole::Projection | WeightRole::Bias | WeightRole::LmHead => 0.2,
        };
        m.insert(name, Tensor::randn(0f32, std, shape, &dev)?);
    }
    Ok(m)
}

fn tiny(model_type: &str, tie: bool) -> ArchConfig {
    let json = serde_json::json!({
        "model_type": model_type, "vocab_size": 61, "hidden_size": 24, "intermediate_size": 40,
        "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": tie,
        "max_position_embeddings": 64,
    });
    ArchConfig::from_hf_json(&json.to_string(), "tiny").unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn tiny_llama_matches_candle_transformers() -> anyhow::Result<()> {
    for tie in [false, true] {
        let cfg = tiny("llama", tie);
        let weights = random_weights(&cfg, 1)?;
        let dev = Device::Cpu;
        let json = cfg.to_hf_json().to_string();
        let theirs_cfg: candle_transformers::models::llama::LlamaConfig = serde_json::from_str(&json)?;
        let theirs_cfg = theirs_cfg.into_config(false);
        let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &dev);
        let theirs = candle_transformers::models::llama::Llama::load(vb, &theirs_cfg)?;
        let ours = Llama::from_tensors(cfg, weights, DType::F32, &dev)?;
        let ids: Vec<u32> = (0..11).map(|i| (i * 7 + 3) % 61).collect();
        let input = Tensor::new(ids.as_slice(), &dev)?.unsqueeze(0)?;
        let mut cache = candle_transformers::models::llama::Cache::new(false, DType::F32, &theirs_cfg, &dev)?;
        let want = theirs.forward(&input, 0, &mut cache)?.squeeze(0)?;
        let hidden = ours.forward_hidden(&Batch { input_ids: &input, lengths: &[ids.len()] }, None, false)?;
        let got = ours.logits(&hidden.i((0, ids.len() - 1))?)?;
        let diff = max_diff(&got, &want);
        assert!(diff < 1e-4, "tie={tie}: max |diff| = {diff}");
    }
    Ok(())
}

#[test]
fn tiny_qwen2_matches_candle_transformers() -> anyhow::Result<()> {
    let cfg = tiny("qwen2", true);
    let weights = random_weights(&cfg, 2)?;
    let dev = Device::Cpu;
    let theirs_cfg = candle_transformers::models::qwen2::Config {
        vocab_size: cfg.vocab_size,
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        num_hidden_layers: cfg.num_hidden_layers,
        num_attention_heads: cfg.num_attention_heads,
        num_key_value_heads: cfg.num_key_value_heads,
        max_position_embeddings: cfg.max_position_embeddings,
        sliding_window: 64,
        max_window_layers: 2,
        tie_word_embeddings: true,
        rope_theta: cfg.rope_theta,
        rms_norm_eps: cfg.rms_norm_eps,
        use_sliding_window: false,
        hidden_act: candle_nn::Activation::Silu,
    };
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &dev);
    let mut theirs = candle_transformers::models::qwen2::Model::new(&theirs_cfg, vb)?;
    let ours = Llama::from_tensors(cfg, weights, DType::F32, &dev)?;
    let ids: Vec<u32> = (0..9).map(|i| (i * 5 + 1) % 61).collect();
    let input = Tensor::new(ids.as_slice(), &dev)?.unsqueeze(0)?;
    let want = theirs.forward(&input, 0, None)?;
    let got = ours.forward_hidden(&Batch { input_ids: &input, lengths: &[ids.len()] }, None, false)?;
    let diff = max_diff(&got, &want);
    assert!(diff < 1e-4, "max |diff| of hidden states = {diff}");
    Ok(())
}

#[test]
fn padding_and_prefix_cache_do_not_change_results() -> anyhow::Result<()> {
    let cfg = tiny("llama", true);
    let dev = Device::Cpu;
    let ours = Llama::from_tensors(cfg, random_weights(&tiny("llama", true), 3)?, DType::F32, &dev)?;
    let a: Vec<u32> = vec![5, 9, 13, 2, 40, 7, 8];
    let b: Vec<u32> = vec![11, 3, 30];
    // Alone.
    let alone = |ids: &[u32]| -> anyhow::Result<Tensor> {
        let input = Tensor::new(ids, &dev)?.unsqueeze(0)?;
        let h = ours.forward_hidden(&Batch { input_ids: &input, lengths: &[ids.len()] }, None, false)?;
        Ok(h.i((0, ids.len() - 1))?)
    };
    // Right-padded batch.
    let mut padded = b.clone();
    padded.resize(a.len(), 0);
    let input = Tensor::new(vec![a.clone(), padded], &dev)?;
    let h = ours.forward_hidden(&Batch { input_ids: &input, lengths: &[a.len(), b.len()] }, None, false)?;
    let last = Llama::last_hidden(&h, &[a.len(), b.len()])?;
    assert!(max_diff(&last.i(0)?, &alone(&a)?) < 1e-5);
    assert!(max_diff(&last.i(1)?, &alone(&b)?) < 1e-5);
    // Shared prefix [5, 9, 13] run once, suffixes batched.
    let cache = ours.prefix_cache(&a[..3])?;
    let suffix_a = &a[3..];
    let suffix_b: Vec<u32> = vec![2, 0, 0, 0];
    let input = Tensor::new(vec![suffix_a.to_vec(), suffix_b], &dev)?;
    let h = ours.forward_hidden(&Batch { input_ids: &input, lengths: &[4, 1] }, Some(&cache), false)?;
    let last = Llama::last_hidden(&h, &[4, 1])?;
    assert!(max_diff(&last.i(0)?, &alone(&a)?) < 1e-5);
    assert!(max_diff(&last.i(1)?, &alone(&a[..4])?) < 1e-5);
    Ok(())
}

/// The CPU f16 path (f16 projection weights on MKL's hgemm, everything else f32): hidden states
/// within f16 rounding of the f32 model on the same rounded weights, activations stay f32, and a
/// training backward reaches every adapter tensor. CI sets WICK_REQUIRE_BLAS=mkl so it runs there.
#[test]
fn cpu_f16_path_matches_f32_and_trains() -> anyhow::Result<()> {
    if !wick::ops::half_gemm_available() {
        assert!(!wick::ops::blas::required_by_env().1, "WICK_REQUIRE_BLAS=mkl but MKL's hgemm was not loaded");
        return Ok(());
    }
    let dev = Device::Cpu;
    let cfg = tiny("llama", true);
    // Round the projections to f16 first, so both models hold identical weights.
    let weights: HashMap<String, Tensor> = random_weights(&cfg, 4)?
        .into_iter()
        .map(|(k, t)| {
            let t = if k.contains("_proj") { t.to_dtype(DType::F16)?.to_dtype(DType::F32)? } else { t };
            Ok((k, t))
        })
        .collect::<candle_core::Result<_>>()?;
    let f32_model = Llama::from_tensors(cfg.clone(), weights.clone(), DType::F32, &dev)?;
    let mut f16_model = Llama::from_tensors(cfg, weights, DType::F16, &dev)?;
    assert_eq!((f16_model.dtype(), f16_model.projection_dtype()), (DType::F32, DType::F16));
    let input = Tensor::new(&[[5u32, 9, 13, 2, 40, 7, 8, 1]], &dev)?;
    let batch = Batch { input_ids: &input, lengths: &[8] };
    let want = f32_model.forward_hidden(&batch, None, false)?;
    let got = f16_model.forward_hidden(&batch, None, false)?;
    let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let diff = max_diff(&got, &want);
    assert!(diff < 2e-2 * scale, "max |diff| {diff} against max |h| {scale}");
    f16_model.add_lora(&["all-linear".into()], 4, 2.0, 0.0, 7)?;
    // B starts at zero, so A's gradient is zero on step one: give B a value first.
    for (name, var) in f16_model.lora_vars() {
        if name.ends_with("lora_B.weight") {
            var.set(&Tensor::randn(0f32, 0.1, var.shape(), &dev)?)?;
        }
    }
    let h = f16_model.forward_hidden(&batch, None, true)?;
    let grads = f16_model.backward(&f16_model.token_logits(&h, &[3, 4])?.sqr()?.sum_all()?)?;
    for (name, var) in f16_model.lora_vars() {
        let g = grads.get(var.as_tensor()).ok_or_else(|| anyhow::anyhow!("{name}: no gradient"))?;
        assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0, "{name}: zero gradient");
    }
    Ok(())
}

/// Every training mode gives the gradients of the reference, candle's autograd over every op:
/// the hand-written layer backward (the CPU default), gradient checkpointing (re-running each
/// layer in the backward, by hand or under autograd), and both. Checked on Llama (tied, GQA, all
/// seven projections adapted) and Qwen2 (q/k/v biases; adapters on q, v and gate only, so frozen
/// projections' gradients are summed with adapted ones), with adapter dropout, without a prefix and through a shared prefix kept
/// in the graph; the dropout generator must end in the same state. Where no BLAS is loaded the
/// hand-written backward does not apply and its cases compare the reference with itself.
#[test]
fn training_modes_give_the_same_gradients() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    for (model_type, tie, targets) in [("llama", true, vec!["all-linear"]), ("qwen2", false, vec!["q_proj", "v_proj", "gate_proj"])] {
        let cfg = tiny(model_type, tie);
        let targets: Vec<String> = targets.into_iter().map(String::from).collect();
        let weights = random_weights(&cfg, 5)?;
        let build = |hand: bool, checkpointing: bool| -> anyhow::Result<Llama> {
            let mut m = Llama::from_tensors(cfg.clone(), weights.clone(), DType::F32, &dev)?;
            m.add_lora(&targets, 4, 2.0, 0.1, 11)?;
            for (i, (_, var)) in m.lora_vars().into_iter().enumerate() {
                var.set(&(var.as_tensor() + Tensor::ones(var.shape(), DType::F32, &dev)? * (0.01 * (i % 7 + 1) as f64))?)?;
            }
            m.set_hand_backward(hand);
            m.set_gradient_checkpointing(checkpointing);
            Ok(m)
        };
        let grads_of = |m: &Llama, with_prefix: bool| -> anyhow::Result<(Vec<Tensor>, (u64, u128), f32)> {
            let prefix = if with_prefix { Some(m.prefix_kv(&[5, 9, 13], true)?) } else { None };
            let input = Tensor::new(&[[2u32, 40, 7, 8], [11, 3, 30, 0]], &dev)?;
            let h = m.forward_hidden(&Batch { input_ids: &input, lengths: &[4, 3] }, prefix.as_ref(), true)?;
            let loss = m.token_logits(&Llama::last_hidden(&h, &[4, 3])?, &[3, 4])?.sqr()?.sum_all()?;
            let store = m.backward(&loss)?;
            let vars = m.lora_vars();
            let grads =
                vars.iter().map(|(name, v)| store.get(v.as_tensor()).cloned().ok_or_else(|| anyhow::anyhow!("{name}: no gradient")));
            Ok((grads.collect::<anyhow::Result<_>>()?, m.dropout_rng().state(), loss.to_scalar::<f32>()?))
        };
        for (hand, checkpointing) in [(true, false), (true, true), (false, true)] {
            // Fresh pairs: the dropout generators must start equal.
            let (reference, model) = (build(false, false)?, build(hand, checkpointing)?);
            if wick::ops::blas::required_by_env().0 {
                let probe = Tensor::zeros((1, 1, cfg.hidden_size), DType::F32, &dev)?;
                assert!(model.hand_backward_applies(&probe), "a BLAS is required and loaded, so the hand-written backward must run");
            }
            for with_prefix in [false, true] {
                let case = format!("{model_type}, hand: {hand}, checkpointing: {checkpointing}, prefix: {with_prefix}");
                let (want, want_rng, want_loss) = grads_of(&reference, with_prefix)?;
                let (got, got_rng, got_loss) = grads_of(&model, with_prefix)?;
                assert_eq!(want_rng, got_rng, "{case}: the dropout generator must advance the same way");
                assert!((want_loss - got_loss).abs() <= 1e-5 * want_loss.abs().max(1.0), "{case}: loss {got_loss} vs {want_loss}");
                for ((name, _), (w, g)) in reference.lora_vars().iter().zip(want.iter().zip(&got)) {
                    let scale = w.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                    assert!(scale > 1e-6, "{name}: zero reference gradient ({case})");
                    let diff = max_diff(w, g);
                    assert!(diff < 1e-4 * scale, "{name}: gradient differs by {diff} (max {scale}; {case})");
                }
            }
        }
    }
    Ok(())
}
