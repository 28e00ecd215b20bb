//! Training parity with PyTorch + PEFT: from the same tiny Llama, the same initial LoRA adapter
//! and the same fixed batch, wick's first optimiser steps give the losses and adapter weights that
//! plain PyTorch + PEFT recorded (`bench/parity_steps.py` → `tests/fixtures/parity/`).
//!
//! The model is generated here, deterministically, and never committed; the reference holds its
//! fingerprint, so a change to the generator fails loudly instead of comparing against numbers
//! recorded on other weights. The initial adapter is PEFT's own `save_pretrained` output, read
//! through wick's PEFT reader. Every batch runs under each of wick's training paths (hand-written
//! backward, autograd, activation checkpointing, gradient accumulation over micro-batches).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use wick::model::config::WeightRole;
use wick::model::{ArchConfig, Llama};
use wick::prompt::{LabelTokens, PromptTokens};
use wick::score::Head;
use wick::train::batches::Encoded;
use wick::train::optim::{AdamW, LossScaler, accumulate, global_norm, learning_rate};
use wick::train::{TrainLoss, micro_batch_loss};

const FIXTURE: &str = "tests/fixtures/parity";

/// Per-step loss: relative difference to the reference. Both sides run the same f32 arithmetic in
/// a different order (candle/MKL vs PyTorch); wick's losses sit within 1e-6 of PyTorch's, as
/// PyTorch's f32 losses sit within 1e-6 of its own f64 ones (`torch_f32_vs_f64` in
/// reference.json), while a learning rate 1% off moves the second step's loss by ~1e-3.
const LOSS_RTOL: f64 = 1e-5;

/// Gradient norm before each update: relative difference to the reference (a difference in the
/// forward or backward shows here, before the optimiser can blur it).
const GRAD_NORM_RTOL: f64 = 1e-4;

/// Adapter weights after the last step, element by element: largest |wick − reference| relative
/// to the largest |reference| element. Adam divides each gradient by its own running size, so f32
/// rounding in a gradient that stays small reaches its weight magnified: the largest element
/// differences (wick vs PyTorch on MKL, OpenBLAS or no BLAS, and PyTorch f32 vs f64) sit between
/// 1e-6 and 1e-5 of max |w| while the bulk sits near 1e-7. 1e-4 of max |w| is about 1% of one
/// step (lr = 1e-3 against max |w| ≈ 0.13); a learning rate 1% off exceeds it 5 to 18 times.
const WEIGHT_TOL: f64 = 1e-4;

/// Adapter weights after the last step, as a whole: |wick − reference| over |reference − initial|
/// (L2 over every element), the error relative to the distance the steps moved the adapter.
/// Measured near 2e-6; a learning rate 1% off gives 9e-3.
const DISPLACEMENT_TOL: f64 = 1e-4;

/// The reference must be determined by the recipe, not by rounding: PyTorch's f32 run must agree
/// with its f64 run to this share of the tolerances (`bench/parity_steps.py` refuses to record a
/// batch that does not: an element whose first gradient is within rounding of zero takes Adam's
/// first step of ±lr either way, whoever computes it).
const CONDITIONING_SHARE: f64 = 0.1;

/// The reference, as `bench/parity_steps.py` writes it.
#[derive(Debug, Deserialize)]
struct Reference {
    versions: HashMap<String, String>,
    model_fingerprint: String,
    model_seed: u64,
    initial_adapter: String,
    final_weights: String,
    steps: usize,
    optimizer: Optimizer,
    label_ids: Vec<u32>,
    variants: Vec<Variant>,
}

/// AdamW as PyTorch ran it.
#[derive(Debug, Deserialize)]
struct Optimizer {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    schedule: String,
    max_grad_norm: Option<f64>,
}

/// One fixed batch and what PyTorch recorded for it.
#[derive(Debug, Deserialize)]
struct Variant {
    name: String,
    loss: TrainLoss,
    /// Tokens every row starts with (wick runs them once, as its training does for a shared prompt).
    prefix_len: usize,
    rows: Vec<Vec<u32>>,
    gold: Vec<usize>,
    losses: Vec<f64>,
    grad_norms: Vec<f64>,
    torch_f32_vs_f64: Conditioning,
}

/// PyTorch's f32 run against its f64 run on the same batch (the part of the reference that is
/// rounding).
#[derive(Debug, Deserialize)]
struct Conditioning {
    weights_rel_to_max_w: f64,
    displacement_rel: f64,
}

/// One of wick's ways to compute a step's gradients; all must give the same numbers.
struct Mode {
    name: &'static str,
    hand_backward: bool,
    checkpointing: bool,
    micro_batch: usize,
}

const MODES: [Mode; 5] = [
    Mode { name: "hand-written backward", hand_backward: true, checkpointing: false, micro_batch: 4 },
    Mode { name: "autograd", hand_backward: false, checkpointing: false, micro_batch: 4 },
    Mode { name: "hand-written backward + checkpointing", hand_backward: true, checkpointing: true, micro_batch: 4 },
    Mode { name: "autograd + checkpointing", hand_backward: false, checkpointing: true, micro_batch: 4 },
    Mode { name: "micro-batches of 2, accumulated", hand_backward: true, checkpointing: false, micro_batch: 2 },
];

/// The tiny Llama's config.json: GQA (4 query, 2 key/value heads), tied embeddings, a small
/// vocabulary (the test feeds token ids, so no tokenizer is needed).
fn model_config() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 512,
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu",
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
        "max_position_embeddings": 128, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    })
}

/// The tiny Llama's weights: uniform values from a fixed hash of (seed, tensor index), so every
/// machine builds the same bits without an RNG crate's stream.
fn model_weights(cfg: &ArchConfig, seed: u64) -> HashMap<String, Tensor> {
    // Embeddings (tied to the output) small enough that the first logits are O(1): the loss then
    // falls over the steps instead of saturating at the first one. Norm weights around 1 but not
    // 1, so a norm that ignored its weight would show. Projections uniform with about twice
    // PyTorch's default std for a Linear, so activations stay O(1).
    cfg.weight_shapes()
        .into_iter()
        .enumerate()
        .map(|(k, (name, shape, role))| {
            let (centre, half_width) = match role {
                WeightRole::Embedding => (0.0, 0.25),
                WeightRole::Norm => (1.0, 0.2),
                WeightRole::Projection => (0.0, 2.0 / (shape[1] as f32).sqrt()),
                WeightRole::Bias | WeightRole::LmHead => unreachable!("the parity model is tied and has no biases"),
            };
            let n = shape.iter().product();
            let vals = wick::ops::self_check::uniform_values(n, seed.wrapping_mul(1_000).wrapping_add(k as u64));
            let vals: Vec<f32> = vals.into_iter().map(|x| centre + half_width * x).collect();
            (name, Tensor::from_vec(vals, shape, &Device::Cpu).unwrap())
        })
        .collect()
}

/// The tiny Llama, built in memory from [`model_weights`] (no files, no tokenizer).
fn tiny_model(seed: u64) -> Llama {
    let cfg = ArchConfig::from_hf_json(&model_config().to_string(), "parity model").unwrap();
    let weights = model_weights(&cfg, seed);
    Llama::from_tensors(cfg, weights, DType::F32, &Device::Cpu).unwrap()
}

/// Write the tiny model as an HF folder (config.json + model.safetensors) into
/// `$WICK_PARITY_DUMP` for `bench/parity_steps.py`, with its fingerprint (fingerprint.txt).
#[test]
#[ignore = "writes the model that bench/parity_steps.py records the reference on"]
fn dump_parity_model() {
    let dir = PathBuf::from(std::env::var("WICK_PARITY_DUMP").expect("set WICK_PARITY_DUMP=DIR"));
    let seed: u64 = std::env::var("WICK_PARITY_SEED").map_or(7, |s| s.parse().expect("WICK_PARITY_SEED: an integer"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = ArchConfig::from_hf_json(&model_config().to_string(), "parity model").unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&model_config()).unwrap()).unwrap();
    candle_core::safetensors::save(&model_weights(&cfg, seed), dir.join("model.safetensors")).unwrap();
    let fingerprint = tiny_model(seed).fingerprint().to_string();
    std::fs::write(dir.join("fingerprint.txt"), format!("{fingerprint}\n{seed}\n")).unwrap();
    eprintln!("wrote {} (fingerprint {fingerprint}, seed {seed})", dir.display());
}

/// `x ≤ tol`, false for NaN (a NaN loss or weight fails).
fn within(x: f64, tol: f64) -> bool {
    x <= tol
}

/// `tests/fixtures/parity/reference.json`.
fn read_reference() -> Reference {
    let path = Path::new(FIXTURE).join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What one run of wick's steps gave.
struct Run {
    losses: Vec<f64>,
    grad_norms: Vec<f64>,
    weights: Vec<(String, Tensor)>,
}

/// wick's training step (`train_model`'s loop): forward and backward of each micro-batch,
/// gradients summed over the batch, unscale/check, the schedule's learning rate, AdamW. No
/// clipping: the recipe has none (train.max_grad_norm = 0).
fn run_steps(model: &mut Llama, r: &Reference, variant: &Variant, mode: &Mode) -> Run {
    let initial = Path::new(FIXTURE).join(&r.initial_adapter);
    let attached = wick::checkpoint::load_adapter(&initial, model).unwrap();
    assert!(attached.head.is_none());
    model.set_hand_backward(mode.hand_backward);
    model.set_gradient_checkpointing(mode.checkpointing);
    let mut opt = AdamW::new(model.lora_vars(), r.optimizer.weight_decay).unwrap();
    // wick's AdamW constants are fixed, not configured: they must be the ones PyTorch ran with.
    assert_eq!((opt.beta1, opt.beta2, opt.eps), (r.optimizer.betas.0, r.optimizer.betas.1, r.optimizer.eps), "AdamW constants");

    let labels = LabelTokens { seqs: r.label_ids.iter().map(|&id| vec![id]).collect(), mean: false };
    let head = Head::Verbalizer(&labels);
    let items: Vec<Encoded> = variant
        .rows
        .iter()
        .zip(&variant.gold)
        .map(|(row, &label)| {
            let (prefix, rest) = row.split_at(variant.prefix_len);
            Encoded { prompt: PromptTokens { prefix: prefix.to_vec(), rest: rest.to_vec() }, label }
        })
        .collect();
    let batch: Vec<&Encoded> = items.iter().collect();
    let scaler = LossScaler::new(false);
    let (mut losses, mut grad_norms) = (Vec::new(), Vec::new());
    for step in 0..r.steps {
        let mut grads: Vec<Option<Tensor>> = vec![None; opt.vars().len()];
        let mut loss_sum = 0.0;
        for micro in batch.chunks(mode.micro_batch) {
            let (loss, _) = micro_batch_loss(model, head, variant.loss, micro, batch.len()).unwrap();
            let store = model.backward(&loss).unwrap();
            accumulate(&mut grads, &store, opt.vars()).unwrap();
            loss_sum += loss.to_scalar::<f32>().unwrap() as f64;
        }
        assert!(scaler.unscale(&mut grads).unwrap(), "non-finite gradients at step {}", step + 1);
        assert!(grads.iter().all(Option::is_some), "an adapter got no gradient at step {}", step + 1);
        grad_norms.push(global_norm(&grads).unwrap());
        let lr = learning_rate(step, r.steps, 0, r.optimizer.lr, 0.0, wick::config::Schedule::Constant);
        opt.step(&grads, lr).unwrap();
        losses.push(loss_sum);
    }
    let weights = model.lora_vars().into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect();
    Run { losses, grad_norms, weights }
}

/// How far wick's adapter is from the reference's: the largest |wick − reference| element (and
/// where), the largest |reference| element and |reference − initial| element, and the L2 norms of
/// wick − reference and of reference − initial (the distance the steps moved the adapter).
struct WeightDiff {
    max_diff: f64,
    at: String,
    max_ref: f64,
    max_moved: f64,
    diff_norm: f64,
    moved_norm: f64,
}

/// Compare wick's adapter `got` with the reference's tensors of `variant` in `want`.
fn weight_diff(got: &[(String, Tensor)], want: &HashMap<String, Tensor>, initial: &HashMap<String, Tensor>, variant: &str) -> WeightDiff {
    let mut out = WeightDiff { max_diff: 0.0, at: String::new(), max_ref: 0.0, max_moved: 0.0, diff_norm: 0.0, moved_norm: 0.0 };
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(got.len(), want.keys().filter(|k| k.starts_with(&format!("{variant}/"))).count(), "{variant}: adapter tensor count");
    for (key, t) in got {
        let w = want.get(&format!("{variant}/{key}")).unwrap_or_else(|| panic!("{variant}: the reference lacks {key}"));
        let w0 = initial.get(key).unwrap_or_else(|| panic!("the initial adapter lacks {key}"));
        assert_eq!(t.dims(), w.dims(), "{key}");
        for (i, ((x, y), y0)) in flat(t).iter().zip(flat(w)).zip(flat(w0)).enumerate() {
            let d = (*x as f64 - y as f64).abs();
            out.max_ref = out.max_ref.max((y as f64).abs());
            out.diff_norm += d * d;
            out.moved_norm += (y as f64 - y0 as f64).powi(2);
            out.max_moved = out.max_moved.max((y as f64 - y0 as f64).abs());
            if d > out.max_diff {
                out.max_diff = d;
                out.at = format!("{key}[{i}]: wick {x:e}, PyTorch {y:e}, initial {y0:e}");
            }
        }
    }
    out.diff_norm = out.diff_norm.sqrt();
    out.moved_norm = out.moved_norm.sqrt();
    out
}

#[test]
fn first_steps_match_pytorch_peft() {
    let r = read_reference();
    let mut model = tiny_model(r.model_seed);
    let fingerprint = model.fingerprint().to_string();
    assert_eq!(
        fingerprint, r.model_fingerprint,
        "the tiny model is not the one the reference was recorded on: record it again (bench/README.md, parity_steps.py)"
    );
    assert_eq!(r.optimizer.schedule, "constant");
    assert!(r.optimizer.max_grad_norm.is_none(), "the reference clipped gradients; these steps do not");
    let initial =
        candle_core::safetensors::load(Path::new(FIXTURE).join(&r.initial_adapter).join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    let want = candle_core::safetensors::load(Path::new(FIXTURE).join(&r.final_weights), &Device::Cpu).unwrap();
    // Hand-written backward where it applies: with a BLAS required, its absence is a failure.
    let probe = Tensor::zeros((1, 1, model.cfg.hidden_size), DType::F32, &Device::Cpu).unwrap();
    assert!(
        model.hand_backward_applies(&probe) || !wick::ops::blas::required_by_env().0,
        "WICK_REQUIRE_BLAS is set but the hand-written backward does not apply"
    );

    let mut report = format!("reference: {:?}\n", r.versions);
    let mut failures = Vec::new();
    for variant in &r.variants {
        assert_eq!((variant.losses.len(), variant.grad_norms.len()), (r.steps, r.steps), "{}", variant.name);
        let c = &variant.torch_f32_vs_f64;
        assert!(
            c.weights_rel_to_max_w <= CONDITIONING_SHARE * WEIGHT_TOL && c.displacement_rel <= CONDITIONING_SHARE * DISPLACEMENT_TOL,
            "{}: the reference is ill-conditioned (PyTorch f32 vs f64: {c:?}); record it on another batch",
            variant.name
        );
        for mode in &MODES {
            let run = run_steps(&mut model, &r, variant, mode);
            let what = format!("{} / {}", variant.name, mode.name);
            for step in 0..r.steps {
                let (got, ref_) = (run.losses[step], variant.losses[step]);
                let rel = (got - ref_).abs() / ref_.abs();
                let (gn, gref) = (run.grad_norms[step], variant.grad_norms[step]);
                let grel = (gn - gref).abs() / gref;
                writeln!(report, "{what} step {}: loss {got:.9} vs {ref_:.9} (rel {rel:.1e}), grad norm rel {grel:.1e}", step + 1).unwrap();
                if !within(rel, LOSS_RTOL) {
                    failures.push(format!(
                        "{what} step {}: loss {got} vs PyTorch {ref_}: relative difference {rel:.2e} > {LOSS_RTOL:e}",
                        step + 1
                    ));
                }
                if !within(grel, GRAD_NORM_RTOL) {
                    failures.push(format!(
                        "{what} step {}: gradient norm {gn} vs PyTorch {gref}: relative difference {grel:.2e} > {GRAD_NORM_RTOL:e}",
                        step + 1
                    ));
                }
            }
            let d = weight_diff(&run.weights, &want, &initial, &variant.name);
            let (rel, moved) = (d.max_diff / d.max_ref, d.diff_norm / d.moved_norm);
            writeln!(
                report,
                "{what}: weights after {} steps: max |diff| {:.2e} = {rel:.2e} of max |w| {:.3}; |diff| {:.2e} of |moved| {:.3e}; largest at {}",
                r.steps, d.max_diff, d.max_ref, moved, d.moved_norm, d.at
            )
            .unwrap();
            if !within(rel, WEIGHT_TOL) {
                failures.push(format!(
                    "{what}: adapter weights after {} steps differ by {rel:.2e} of max |w| > {WEIGHT_TOL:e}; largest at {}",
                    r.steps, d.at
                ));
            }
            if !within(moved, DISPLACEMENT_TOL) {
                failures.push(format!(
                    "{what}: adapter weights after {} steps differ by {moved:.2e} of the distance they moved > {DISPLACEMENT_TOL:e}",
                    r.steps
                ));
            }
            // Matching a reference that barely moved the adapter would prove nothing.
            assert!(d.max_moved > 10.0 * WEIGHT_TOL * d.max_ref, "{what}: the reference moved no element past 10x the tolerance");
        }
    }
    eprintln!("{report}");
    assert!(failures.is_empty(), "wick's steps differ from PyTorch + PEFT:\n{}", failures.join("\n"));
}
