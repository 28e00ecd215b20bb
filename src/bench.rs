//! `wick bench`: training and eval throughput of the configured model on a fixed batch, with
//! the machine's GEMM ceiling measured in the same process — the figures `scripts/bench` sets
//! beside the PyTorch + PEFT peer (`bench/peer_pytorch.py`, same JSON keys).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{D, Device, Tensor};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::lora::lora_scale;
use crate::model::{self, Batch, Llama};
use crate::ops::{frozen_linear, fused};
use crate::prompt::Prompter;
use crate::train::optim::AdamW;

/// Arguments of `wick bench`.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Run config (model source, dtype, LoRA r / alpha / targets).
    pub config: PathBuf,
    /// Rows per batch.
    pub batch: usize,
    /// Tokens per row (no padding).
    pub seq: usize,
    /// Timed steps (after the warm-up step).
    pub steps: usize,
    /// Override the config's dtype ("f32", "f16", "bf16").
    pub dtype: Option<String>,
    /// Use the composite reference ops instead of the fused ones (to measure what fusing buys).
    pub reference_ops: bool,
    /// Re-run each layer in the backward instead of keeping its activations.
    pub gradient_checkpointing: bool,
    /// Train the layers under candle's autograd instead of their hand-written backward (to
    /// measure what it buys).
    pub autograd_layers: bool,
    /// Print one JSON line instead of the table.
    pub json: bool,
}

/// The measured figures (keys shared with the PyTorch peer).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// "wick".
    pub r#impl: String,
    /// Rows per batch.
    pub batch: usize,
    /// Tokens per row.
    pub seq: usize,
    /// Timed steps.
    pub steps: usize,
    /// Worker threads (rayon / GEMM).
    pub threads: usize,
    /// Compute dtype of the frozen base.
    pub dtype: String,
    /// Which op implementations ran: "fused" or "reference", and ", autograd layers" when the
    /// layers' hand-written backward was off.
    pub ops: String,
    /// Per-layer activation checkpointing on.
    pub gradient_checkpointing: bool,
    /// Median seconds per training step (forward, backward, AdamW).
    pub train_step_s: f64,
    /// Training tokens per second.
    pub train_tokens_per_s: f64,
    /// Median seconds per no-grad forward of the batch.
    pub forward_s: f64,
    /// Eval tokens per second.
    pub eval_tokens_per_s: f64,
    /// Eval examples (rows) per second.
    pub eval_examples_per_s: f64,
    /// train_step_s / forward_s (4N/2N = 2.0 is the ideal).
    pub step_forward_ratio: f64,
    /// Peak resident set size, MB.
    pub peak_rss_mb: f64,
    /// Process start to the end of the first optimizer step, seconds.
    pub start_to_first_step_s: f64,
    /// Process start to the start of the first step (model loaded, adapters and batch ready), seconds.
    pub start_to_ready_s: f64,
    /// Peak RSS when ready to train (model loading's share of the peak), MB.
    pub peak_rss_at_ready_mb: f64,
    /// Best f32 GEMM GFLOP/s of the frozen-linear path on the model's shapes.
    pub gemm_gflops: f64,
    /// Non-embedding parameters N.
    pub nonembedding_params: usize,
    /// 4·N·tokens per second of training.
    pub train_flops_per_s: f64,
    /// train_flops_per_s as a share of the GEMM ceiling.
    pub train_share_of_gemm: f64,
    /// 2·N·tokens per second of the no-grad forward.
    pub eval_flops_per_s: f64,
    /// eval_flops_per_s as a share of the GEMM ceiling.
    pub eval_share_of_gemm: f64,
    /// The BLAS that ran the frozen projections ("candle's gemm" without one).
    pub blas: String,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() { 0.0 } else { xs[xs.len() / 2] }
}

/// Peak resident set size of this process in MB (Linux VmHWM; 0 where unavailable).
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Best FLOP/s of `frozen_linear(x, w)` over `reps` timed calls after a warm-up, synchronised
/// with the device: the GEMM rate wick's own frozen projections get.
pub fn frozen_linear_flops(x: &Tensor, w: &Tensor, reps: usize) -> candle_core::Result<f64> {
    let flops = 2.0 * (x.dim(0)? * x.dim(1)? * w.dim(0)?) as f64;
    frozen_linear(x, w)?;
    x.device().synchronize()?;
    let mut best = 0f64;
    for _ in 0..reps.max(1) {
        let s = Instant::now();
        let y = frozen_linear(x, w)?;
        x.device().synchronize()?;
        drop(y);
        best = best.max(flops / s.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Best GFLOP/s of `frozen_linear` on the MLP's two GEMM shapes for `rows` tokens, over 24 calls each
/// (fewer let one slow stretch of a shared box set the ceiling: 82 against 121-126 GFLOP/s seen).
pub fn gemm_ceiling(rows: usize, hidden: usize, inner: usize, device: &Device) -> candle_core::Result<f64> {
    let mut best = 0f64;
    for (k, n) in [(hidden, inner), (inner, hidden)] {
        let x = Tensor::randn(0f32, 1.0, (rows, k), device)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), device)?;
        best = best.max(frozen_linear_flops(&x, &w, 24)? / 1e9);
    }
    Ok(best)
}

/// The bench's fixed batch: `rows` × `seq` spread token ids, no padding, with its lengths.
pub fn fixed_batch(rows: usize, seq: usize, device: &Device) -> candle_core::Result<(Tensor, Vec<usize>)> {
    let ids: Vec<u32> = (0..rows * seq).map(|i| (i as u32).wrapping_mul(7919) % 40_000 + 100).collect();
    Ok((Tensor::from_vec(ids, (rows, seq), device)?, vec![seq; rows]))
}

/// Mean NLL of alternating gold labels (row i: label i mod n) over the label words at each row's
/// last token: the fixed loss of `wick bench` and `wick selftest`.
pub fn label_loss(model: &Llama, input: &Tensor, lengths: &[usize], label_ids: &[u32], train: bool) -> candle_core::Result<Tensor> {
    let hidden = model.forward_hidden(&Batch { input_ids: input, lengths }, None, train)?;
    let logits = model.token_logits(&Llama::last_hidden(&hidden, lengths)?, label_ids)?;
    let log_probs = crate::ops::log_softmax_last_dim(&logits)?;
    let gold: Vec<u32> = (0..lengths.len()).map(|i| (i % label_ids.len()) as u32).collect();
    let gold = Tensor::new(gold.as_slice(), input.device())?.unsqueeze(1)?;
    log_probs.gather(&gold, D::Minus1)?.mean_all()?.neg()
}

/// Run the benchmark; `process_start` is taken first thing in `main`.
pub fn run_bench(args: &BenchArgs, process_start: Instant) -> Result<BenchReport> {
    let c = |what: &'static str| move |e: candle_core::Error| Error::Model(format!("bench {what}: {e}"));
    let cfg = crate::data::load_config(&args.config)?;
    fused::use_composites(args.reference_ops);
    let device = model::select_device(&cfg.model.device)?;
    let dtype = model::resolve_dtype(args.dtype.as_deref().unwrap_or(&cfg.model.dtype), &device)?;
    let mut loaded = model::load(&cfg.model.source, dtype, &device)?;
    loaded.model.set_gradient_checkpointing(args.gradient_checkpointing);
    loaded.model.set_hand_backward(!args.autograd_layers);
    let prompter = Prompter::new(&cfg.prompt, &cfg.data.labels, &loaded.tokenizer, loaded.chat_template.as_deref(), None)?;
    // The bench times the one-token scoring path: a longer word counts by its first token.
    let label_ids = prompter.label_tokens().first_ids();
    let scale = lora_scale(cfg.lora.alpha, cfg.lora.r, cfg.lora.use_rslora);
    // Dropout 0 like the peer's default: both sides then run exactly the same arithmetic.
    loaded.model.add_lora(&cfg.lora.target_modules, cfg.lora.r, scale, 0.0, 1).map_err(c("LoRA"))?;
    let model = &loaded.model;
    let mut optimizer = AdamW::new(model.lora_vars(), 0.0).map_err(c("optimizer"))?;

    let (b, t) = (args.batch, args.seq);
    let (input, lengths) = fixed_batch(b, t, &device).map_err(c("batch"))?;

    let mut step_times = Vec::new();
    let mut first_step = 0.0;
    let ready = process_start.elapsed().as_secs_f64();
    let rss_at_ready = peak_rss_mb();
    for step in 0..=args.steps {
        let s = Instant::now();
        let loss = label_loss(model, &input, &lengths, &label_ids, true).map_err(c("forward"))?;
        let grads = model.backward(&loss).map_err(c("backward"))?;
        let g: Vec<Option<Tensor>> = optimizer.vars().iter().map(|(_, v)| grads.get(v.as_tensor()).cloned()).collect();
        if let Some(((name, _), _)) = optimizer.vars().iter().zip(&g).find(|(_, g)| g.is_none()) {
            return Err(Error::Model(format!("bench: {name} got no gradient: the step would measure nothing")));
        }
        optimizer.step(&g, 1e-4).map_err(c("optimizer step"))?;
        device.synchronize().map_err(c("sync"))?;
        if step == 0 {
            first_step = process_start.elapsed().as_secs_f64();
        } else {
            step_times.push(s.elapsed().as_secs_f64());
        }
    }
    let mut fwd_times = Vec::new();
    for step in 0..=args.steps {
        let s = Instant::now();
        let hidden = model.forward_hidden(&Batch { input_ids: &input, lengths: &lengths }, None, false).map_err(c("forward"))?;
        let logits = model.token_logits(&Llama::last_hidden(&hidden, &lengths).map_err(c("forward"))?, &label_ids).map_err(c("forward"))?;
        logits.to_vec2::<f32>().map_err(c("forward"))?;
        if step > 0 {
            fwd_times.push(s.elapsed().as_secs_f64());
        }
    }
    let gemm = gemm_ceiling(b * t, model.cfg.hidden_size, model.cfg.intermediate_size, &device).map_err(c("GEMM"))?;
    let (train_step_s, forward_s) = (median(step_times), median(fwd_times));
    let n = model.cfg.non_embedding_params();
    let tokens = (b * t) as f64;
    let train_flops = 4.0 * n as f64 * tokens / train_step_s;
    let eval_flops = 2.0 * n as f64 * tokens / forward_s;
    Ok(BenchReport {
        r#impl: "wick".into(),
        batch: b,
        seq: t,
        steps: args.steps,
        threads: rayon::current_num_threads(),
        dtype: format!("{dtype:?}").to_lowercase(),
        ops: format!(
            "{}{}",
            if args.reference_ops { "reference" } else { "fused" },
            if args.autograd_layers { ", autograd layers" } else { "" }
        ),
        gradient_checkpointing: args.gradient_checkpointing,
        train_step_s,
        train_tokens_per_s: tokens / train_step_s,
        forward_s,
        eval_tokens_per_s: tokens / forward_s,
        eval_examples_per_s: b as f64 / forward_s,
        step_forward_ratio: train_step_s / forward_s,
        peak_rss_mb: peak_rss_mb(),
        start_to_first_step_s: first_step,
        start_to_ready_s: ready,
        peak_rss_at_ready_mb: rss_at_ready,
        gemm_gflops: gemm,
        nonembedding_params: n,
        train_flops_per_s: train_flops,
        train_share_of_gemm: train_flops / (gemm * 1e9),
        eval_flops_per_s: eval_flops,
        eval_share_of_gemm: eval_flops / (gemm * 1e9),
        blas: crate::ops::blas::blas().map_or_else(|| "candle's gemm".to_string(), |b| b.core.clone()),
    })
}

impl BenchReport {
    /// A two-column table for the terminal.
    pub fn render(&self) -> String {
        let mut t = comfy_table::Table::new();
        t.set_header(["figure", "value"]);
        let rows = [
            ("train tokens/s", format!("{:.1}", self.train_tokens_per_s)),
            ("train step (s)", format!("{:.3}", self.train_step_s)),
            ("eval tokens/s", format!("{:.1}", self.eval_tokens_per_s)),
            ("eval examples/s", format!("{:.2}", self.eval_examples_per_s)),
            ("train step / forward", format!("{:.2}", self.step_forward_ratio)),
            ("peak RSS (MB)", format!("{:.0}", self.peak_rss_mb)),
            ("peak RSS when ready to train (MB)", format!("{:.0}", self.peak_rss_at_ready_mb)),
            ("start to first step (s)", format!("{:.2}", self.start_to_first_step_s)),
            ("start to ready to train (s)", format!("{:.2}", self.start_to_ready_s)),
            ("GEMM ceiling (GFLOP/s)", format!("{:.1}", self.gemm_gflops)),
            ("train GFLOP/s (4N basis)", format!("{:.1}", self.train_flops_per_s / 1e9)),
            ("train share of GEMM ceiling", format!("{:.0}%", 100.0 * self.train_share_of_gemm)),
            ("forward GFLOP/s (2N basis)", format!("{:.1}", self.eval_flops_per_s / 1e9)),
            ("forward share of GEMM ceiling", format!("{:.0}%", 100.0 * self.eval_share_of_gemm)),
        ];
        for (k, v) in rows {
            t.add_row([k.to_string(), v]);
        }
        let ckpt = if self.gradient_checkpointing { ", gradient checkpointing" } else { "" };
        format!(
            "{} × {} tokens, {} threads, {}, {} ops, {}{ckpt}\n{t}",
            self.batch, self.seq, self.threads, self.dtype, self.ops, self.blas
        )
    }
}
