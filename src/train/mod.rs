//! `wick train`: LoRA fine-tuning of the frozen base, with a verbalizer or linear head.
//!
//! The step reads like llm.c's train_gpt2.c: forward every micro-batch, backward, accumulate the
//! gradients of the effective batch, unscale/check, clip, schedule, AdamW, evaluate, checkpoint.

pub mod batches;
pub mod optim;
pub mod state;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{D, DType, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use self::batches::{Encoded, encode, epoch_batches};
use self::optim::{AdamW, LossScaler, accumulate, clip_grad_norm, global_norm, learning_rate};
use self::state::{EvalRecord, TrainerState};
use crate::checkpoint::{self, HEAD_KEY};
use crate::config::Config;
use crate::data::{self, Example, ReadMode};
use crate::error::{Error, Result};
use crate::lora::lora_scale;
use crate::metrics::Metrics;
use crate::model::{self, Batch, Llama};
use crate::prompt::Prompter;
use crate::score::{Head, ScoreOptions, score_head};

/// Options of one training run beyond the config.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Resume: `Some(None)` from the run's latest checkpoint, `Some(Some(dir))` from `dir`.
    pub resume: Option<Option<PathBuf>>,
    /// Train on only the first N train examples (learning curves).
    pub train_limit: Option<usize>,
    /// Hide the progress bar.
    pub quiet: bool,
    /// Skip the dev evaluation of the untrained model at step 0.
    pub skip_initial_eval: bool,
    /// Wall-clock budget in minutes in place of `train.max_minutes` (compare's share of
    /// `compare.max_minutes`); `None`: the config's.
    pub max_minutes: Option<f64>,
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// Run folder.
    pub run_dir: PathBuf,
    /// Steps done.
    pub steps: usize,
    /// Best dev evaluation.
    pub best: Option<EvalRecord>,
    /// Training wall time (seconds, all resumed parts added).
    pub train_seconds: f64,
    /// Training tokens per second.
    pub tokens_per_second: f64,
    /// Tokens run through the model by training (all resumed parts).
    pub tokens_seen: u64,
    /// Labelled train examples available to the run (after `train_limit`).
    pub train_examples: usize,
    /// Distinct labelled examples the run trained on: all of them once it passed an epoch, else
    /// the examples its steps drew (shuffled without replacement within an epoch).
    pub labels_seen: usize,
    /// Trainable parameters (adapters and head).
    pub trainable_params: usize,
    /// All parameters (base + trainable).
    pub total_params: usize,
    /// Train examples whose prompt was cut to max_seq_len.
    pub truncated: usize,
    /// True when stopped by Ctrl-C (a checkpoint was saved).
    pub interrupted: bool,
    /// True when early stopping ended the run.
    pub early_stopped: bool,
    /// True when `train.max_minutes` ended the run.
    pub budget_reached: bool,
    /// Steps the config asked for (`max_steps`, or `epochs` of the train split).
    pub planned_steps: usize,
    /// The steps the schedule was laid over, when fewer than planned fit `train.max_minutes`.
    pub budget_steps: Option<usize>,
}

/// Steps timed before the schedule is fitted to `train.max_minutes` (inside the default warmup,
/// so no learning rate already used changes).
const BUDGET_SIZING_STEPS: usize = 5;

/// End the schedule at `fits` steps (at most `planned_steps`) when that moves its end; true
/// when it did. A schedule shorter than planned is marked budget-sized, which a resume keeps.
fn fit_schedule(st: &mut TrainerState, fits: usize, planned_steps: usize, bar: &indicatif::ProgressBar) -> bool {
    let fits = fits.min(planned_steps);
    if fits == st.total_steps {
        return false;
    }
    st.total_steps = fits;
    st.budget_sized = fits < planned_steps;
    bar.set_length(fits as u64);
    true
}

/// A budget in minutes as a person writes it: 45, 27.5.
fn minutes(m: f64) -> String {
    format!("{}", (m * 10.0).round() / 10.0)
}

/// Steps between plain progress lines when stderr is not a terminal.
const PLAIN_LOG_EVERY: usize = 10;

/// What the verbalizer's training loss normalises over (`train.loss`).
pub use crate::config::Loss as TrainLoss;

/// Sum over the micro-batch of −log p(gold), divided by the size of the whole effective batch,
/// so accumulated micro-batches give exactly the gradient of one large batch. Returns the loss and
/// the number of tokens run.
pub fn micro_batch_loss(
    model: &Llama,
    head: Head,
    loss: TrainLoss,
    items: &[&Encoded],
    effective: usize,
) -> candle_core::Result<(Tensor, usize)> {
    let device = model.device();
    let shared = items.iter().all(|e| e.prompt.prefix == items[0].prompt.prefix) && !items[0].prompt.prefix.is_empty();
    // A prefix shared by the whole micro-batch runs once (with gradients), not once per row.
    let prefix = if shared { Some(model.prefix_kv(&items[0].prompt.prefix, true)?) } else { None };
    let rows: Vec<Vec<u32>> = items.iter().map(|e| if shared { e.prompt.rest.clone() } else { e.prompt.full() }).collect();
    let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
    let width = lengths.iter().copied().max().unwrap_or(1).max(1);
    let ids: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat(0)).take(width)).collect();
    let input = Tensor::from_vec(ids, (items.len(), width), device)?;
    // The same scores as eval, recorded for the backward.
    let mut log_scores = crate::score::head_scores(model, head, &Batch { input_ids: &input, lengths: &lengths }, prefix.as_ref(), true)?;
    if loss == TrainLoss::LabelWords && matches!(head, Head::Verbalizer(_)) {
        // Renormalising the label words' log-probabilities equals a softmax over their scores:
        // the full-vocabulary normaliser cancels.
        log_scores = crate::ops::log_softmax_last_dim(&log_scores)?;
    }
    let gold: Vec<u32> = items.iter().map(|e| e.label as u32).collect();
    let gold = Tensor::new(gold.as_slice(), device)?.unsqueeze(1)?;
    let nll = log_scores.gather(&gold, D::Minus1)?.sum_all()?.neg()?;
    let tokens = lengths.iter().sum::<usize>() + prefix.map_or(0, |p| p.len);
    Ok(((nll / effective as f64)?, tokens))
}

/// Evaluate on `prompts` (dev): accuracy and macro-F1, from the shared metrics module.
fn evaluate(model: &Llama, head: Head, prompts: &[Encoded], labels: &[String], batch_size: usize) -> candle_core::Result<(f64, f64)> {
    let tokens: Vec<_> = prompts.iter().map(|e| e.prompt.clone()).collect();
    let scored = score_head(model, head, &tokens, ScoreOptions { batch_size, max_len: usize::MAX, prefix_cache: true })?;
    let pred: Vec<usize> = scored.iter().map(|s| s.predicted()).collect();
    let probs: Vec<Vec<f32>> = scored.iter().map(|s| s.label_probs()).collect();
    let latency: Vec<f64> = scored.iter().map(|s| s.latency_ms).collect();
    let lengths: Vec<usize> = scored.iter().map(|s| s.prompt_tokens).collect();
    let gold: Vec<usize> = prompts.iter().map(|e| e.label).collect();
    let m = Metrics::compute(&gold, &pred, &probs, &latency, &lengths, labels);
    Ok((m.accuracy, m.macro_f1))
}

fn candle(what: &str) -> impl FnOnce(candle_core::Error) -> Error + '_ {
    move |e| Error::Model(format!("{what}: {e}"))
}

/// Append one JSON line to metrics.jsonl.
fn log_line(path: &std::path::Path, value: &serde_json::Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    writeln!(f, "{value}").map_err(|e| Error::io(path, e))
}

/// Train LoRA adapters (and a linear head) as the config says; see the module doc.
pub fn train(cfg: &Config, opts: &TrainOptions) -> Result<TrainSummary> {
    // A resume names a checkpoint that must exist: fail before the model load.
    resume_dir(cfg, opts)?;
    let mut loaded = model::load_configured(&cfg.model)?;
    train_model(cfg, &mut loaded, opts)
}

/// Where a resumed run starts from: `None` for a fresh run.
fn resume_dir(cfg: &Config, opts: &TrainOptions) -> Result<Option<PathBuf>> {
    let run_dir = cfg.run_dir();
    Ok(match &opts.resume {
        None => None,
        Some(Some(dir)) => Some(dir.clone()),
        Some(None) => Some(
            state::list_checkpoints(&run_dir)
                .pop()
                .map(|(_, d)| d)
                .ok_or_else(|| Error::Config(format!("{}: no checkpoint to resume from", run_dir.display())))?,
        ),
    })
}

/// Train fresh adapters on an already loaded base model (the config's `[model]`): the library
/// entry `wick compare` uses to train several runs over one model load. The trained adapters
/// stay attached; [`Llama::clear_lora`] detaches them.
pub fn train_model(cfg: &Config, loaded: &mut model::LoadedModel, opts: &TrainOptions) -> Result<TrainSummary> {
    let started = Instant::now();
    let device = loaded.model.device().clone();
    let dtype = model::resolve_dtype(&cfg.model.dtype, &device)?;
    let run_dir = cfg.run_dir();
    let t = &cfg.train;
    let max_minutes = opts.max_minutes.unwrap_or(t.max_minutes);
    let resume_dir = resume_dir(cfg, opts)?;

    loaded.model.clear_lora().map_err(candle("detaching adapters"))?;
    loaded.model.set_gradient_checkpointing(cfg.train.gradient_checkpointing);
    let fingerprint = loaded.model.fingerprint().to_string();
    if let Some(dir) = &resume_dir {
        let saved = checkpoint::read_run(dir)?;
        state::check_resumable(&saved.config, cfg, &saved.base_fingerprint, &fingerprint, dir)?;
    }

    let (splits, _report) = data::load_splits(&cfg.data, ReadMode::Strict)?;
    let train_examples: &[Example] = match opts.train_limit {
        Some(n) => &splits.train[..n.min(splits.train.len())],
        None => &splits.train,
    };
    if train_examples.is_empty() || splits.dev.is_empty() {
        return Err(Error::Data("the train and dev splits must not be empty".into()));
    }
    let labels = &cfg.data.labels;
    let prompter = Prompter::new(&cfg.prompt, labels, &loaded.tokenizer, loaded.chat_template.as_deref(), None)?;
    crate::prompt::check_fits([("template", &prompter)], t.max_seq_len)?;
    let (train_set, truncated) = encode(&prompter, train_examples, t.max_seq_len)?;
    let dev_examples = if t.eval_examples > 0 { &splits.dev[..t.eval_examples.min(splits.dev.len())] } else { &splits.dev[..] };
    let (dev_set, _) = encode(&prompter, dev_examples, t.max_seq_len)?;
    if truncated > 0 {
        tracing::info!(
            "wick: {truncated} of {} train prompts were longer than train.max_seq_len = {} and were cut",
            train_set.len(),
            t.max_seq_len
        );
    }

    // Trainable tensors: LoRA A/B on the targets, plus the linear head (PEFT's modules_to_save).
    let scale = lora_scale(cfg.lora.alpha, cfg.lora.r, cfg.lora.use_rslora);
    loaded.model.add_lora(&cfg.lora.target_modules, cfg.lora.r, scale, cfg.lora.dropout, t.seed).map_err(candle("adding LoRA"))?;
    let head_var: Option<Var> = if t.head == crate::config::HeadKind::Linear {
        let d = loaded.model.cfg.hidden_size;
        let mut rng = ChaCha8Rng::seed_from_u64(t.seed ^ 0x5eed);
        let bound = 1.0 / (d as f64).sqrt();
        let w: Vec<f32> = (0..labels.len() * d).map(|_| rand::Rng::random_range(&mut rng, -bound..bound) as f32).collect();
        Some(Var::from_tensor(&Tensor::from_vec(w, (labels.len(), d), &device).map_err(candle("head"))?).map_err(candle("head"))?)
    } else {
        None
    };
    let mut vars = loaded.model.lora_vars();
    if let Some(h) = &head_var {
        vars.push((HEAD_KEY.to_string(), h.clone()));
    }
    let trainable_params: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let total_params = loaded.model.cfg.non_embedding_params() + loaded.model.cfg.embedding_params() + trainable_params;
    let mut optimizer = AdamW::new(vars, t.weight_decay).map_err(candle("optimizer"))?;

    let effective = t.effective_batch();
    let steps_per_epoch = (train_set.len() / effective).max(1);
    let planned_steps = if t.max_steps > 0 { t.max_steps } else { ((t.epochs * steps_per_epoch as f64).ceil() as usize).max(1) };
    let (dropout_seed, pos) = loaded.model.dropout_rng().state();
    let mut st = TrainerState {
        step: 0,
        total_steps: planned_steps,
        epoch: 0,
        cursor: 0,
        dropout_seed,
        dropout_word_pos: pos.to_string(),
        // Only f16 activations need it: the CPU f16 path keeps them f32 and scales each GEMM row.
        loss_scaler: LossScaler::new(model::storage_dtypes(dtype, &device).0 == DType::F16),
        history: Vec::new(),
        best_step: None,
        best_metric: None,
        evals_since_best: 0,
        tokens_seen: 0,
        train_seconds: 0.0,
        budget_sized: false,
    };
    if let Some(dir) = &resume_dir {
        let (saved, moments, adapter) = state::load(dir)?;
        for (name, var) in optimizer.vars() {
            let t = adapter.get(name).ok_or_else(|| Error::Model(format!("{}: checkpoint lacks {name}", dir.display())))?;
            var.set(&t.to_device(&device).map_err(candle(name))?).map_err(candle(name))?;
        }
        optimizer.restore(&moments, saved.step).map_err(candle("optimizer state"))?;
        let word_pos: u128 =
            saved.dropout_word_pos.parse().map_err(|_| Error::Model(format!("{}: bad dropout_word_pos", dir.display())))?;
        loaded.model.dropout_rng().restore(saved.dropout_seed, word_pos);
        // A schedule fitted to the time budget stays as fitted; otherwise the config decides.
        let total_steps = if saved.budget_sized { saved.total_steps.min(planned_steps) } else { planned_steps };
        st = TrainerState { total_steps, ..saved };
        tracing::info!("wick: resuming from {} (step {} of {total_steps})", dir.display(), st.step);
    }
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
    let metrics_path = run_dir.join("metrics.jsonl");

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // A second handler registration (e.g. tests calling train twice) is harmless to skip.
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    }

    let lengths: Vec<usize> = train_set.iter().map(Encoded::len).collect();
    let mut order = epoch_batches(&lengths, effective, t.seed, st.epoch);
    let label_tokens = prompter.label_tokens().clone();
    let train_loss = t.loss;
    let bar = if opts.quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(st.total_steps as u64) };
    // Off a terminal indicatif draws nothing, so a log gets plain lines instead of the bar.
    let plain = !opts.quiet && !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let say = |line: String| if plain { eprintln!("{line}") } else { bar.println(line) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(st.step as u64);
    // Var::set updates the head in place, so this borrow sees every update.
    let head = match &head_var {
        Some(h) => Head::Linear(h.as_tensor()),
        None => Head::Verbalizer(&label_tokens),
    };
    let mut eval_seconds = None;
    if st.step == 0 && st.history.is_empty() && !opts.skip_initial_eval {
        // Step 0 is the untrained model under the same prompt and scoring: the zero-shot baseline
        // (verbalizer head) the adapter has to beat.
        let eval_start = Instant::now();
        let (accuracy, macro_f1) = evaluate(&loaded.model, head, &dev_set, labels, t.batch_size).map_err(candle("dev evaluation"))?;
        eval_seconds = Some(eval_start.elapsed().as_secs_f64());
        let record = EvalRecord { step: 0, accuracy, macro_f1, train_loss: None };
        say(format!("step 0 (before training): dev accuracy {accuracy:.4}  macro-F1 {macro_f1:.4}"));
        log_line(&metrics_path, &serde_json::json!({"eval": record}))?;
        st.history.push(record);
    }
    let session_start = Instant::now();
    let seconds_before = st.train_seconds;
    let steps_before = st.step;
    let mut loss_since_eval = (0.0f64, 0usize);
    let mut early_stopped = false;
    let mut was_interrupted = false;
    let mut budget_reached = false;
    let mut session_eval_seconds = 0.0;
    let mut refitted = false;

    while st.step < st.total_steps {
        if st.cursor >= order.len() {
            st.epoch += 1;
            st.cursor = 0;
            order = epoch_batches(&lengths, effective, t.seed, st.epoch);
        }
        let batch: Vec<&Encoded> = order[st.cursor].iter().map(|&i| &train_set[i]).collect();

        // Forward and backward of each micro-batch; gradients summed over the effective batch.
        let mut grads: Vec<Option<Tensor>> = vec![None; optimizer.vars().len()];
        let mut step_loss = 0.0;
        let mut step_tokens = 0;
        for micro in batch.chunks(t.batch_size) {
            let (loss, tokens) = micro_batch_loss(&loaded.model, head, train_loss, micro, batch.len()).map_err(candle("forward"))?;
            let scaled = (&loss * st.loss_scaler.scale).map_err(candle("loss scaling"))?;
            let store = loaded.model.backward(&scaled).map_err(candle("backward"))?;
            accumulate(&mut grads, &store, optimizer.vars()).map_err(candle("gradients"))?;
            step_loss += loss.to_scalar::<f32>().map_err(candle("loss"))? as f64;
            step_tokens += tokens;
        }

        // Unscale and check, clip, schedule, update.
        let finite = st.loss_scaler.unscale(&mut grads).map_err(candle("gradients"))? && step_loss.is_finite();
        if !finite && !st.loss_scaler.enabled {
            return Err(Error::Model(format!(
                "loss became {step_loss} at step {}; stopping (the last good checkpoint is kept in {})",
                st.step + 1,
                run_dir.display()
            )));
        }
        let lr = learning_rate(st.step, st.total_steps, t.warmup_steps, t.lr, t.min_lr_ratio, t.schedule);
        let mut grad_norm = f64::NAN;
        if finite {
            grad_norm = global_norm(&grads).map_err(candle("gradient norm"))?;
            clip_grad_norm(&mut grads, grad_norm, t.max_grad_norm).map_err(candle("clipping"))?;
            optimizer.step(&grads, lr).map_err(candle("optimizer"))?;
        } else {
            tracing::warn!("step {}: inf/nan gradients, step skipped, loss scale now {}", st.step + 1, st.loss_scaler.scale / 2.0);
        }
        st.loss_scaler.update(finite);
        st.step += 1;
        st.cursor += 1;
        st.tokens_seen += step_tokens as u64;
        loss_since_eval.0 += step_loss;
        loss_since_eval.1 += 1;
        let elapsed = seconds_before + session_start.elapsed().as_secs_f64();
        if max_minutes > 0.0 && !st.budget_sized && st.step - steps_before == BUDGET_SIZING_STEPS && st.step < st.total_steps {
            // Lay the schedule over the steps that fit the budget, so a cut run still anneals
            // (a run cut at full learning rate ends below its dev peak; docs/recipe.md).
            let step_s = session_start.elapsed().as_secs_f64() / BUDGET_SIZING_STEPS as f64;
            // Without a timed step-0 evaluation: a forward of a row costs about half a step's
            // share of it (train step / forward ≈ 2 in `wick bench`).
            let eval_s = eval_seconds.unwrap_or(dev_set.len() as f64 * step_s / (2.0 * effective as f64));
            let fits = optim::steps_within_budget(max_minutes * 60.0, elapsed, st.step, step_s, eval_s, t.eval_every);
            // Not yet sized, so the schedule still ends at planned_steps: only a cut moves it.
            if fit_schedule(&mut st, fits, planned_steps, &bar) {
                say(format!(
                    "time budget: {} minutes fit about {fits} of {planned_steps} steps at {step_s:.2} s a step; the {} schedule now ends at step {fits}",
                    minutes(max_minutes),
                    t.schedule
                ));
            }
        }
        let tps = st.tokens_seen as f64 / elapsed.max(1e-9);
        bar.set_position(st.step as u64);
        bar.set_message(format!("loss {step_loss:.4}  lr {lr:.2e}  {tps:.0} tok/s"));
        if plain && (st.step % PLAIN_LOG_EVERY == 0 || st.step == st.total_steps) {
            let left = (st.total_steps - st.step) as f64 * session_start.elapsed().as_secs_f64() / (st.step - steps_before).max(1) as f64;
            say(format!(
                "step {}/{}: loss {step_loss:.4}  lr {lr:.2e}  {tps:.0} tok/s  ETA {}",
                st.step,
                st.total_steps,
                crate::report::format::duration(left)
            ));
        }
        log_line(
            &metrics_path,
            &serde_json::json!({"step": st.step, "epoch": st.epoch, "loss": step_loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_second": tps, "loss_scale": st.loss_scaler.scale, "skipped": !finite}),
        )?;

        let stop_now = interrupted.load(Ordering::SeqCst);
        let out_of_time = max_minutes > 0.0 && elapsed >= max_minutes * 60.0;
        if st.step % t.eval_every == 0 || st.step == st.total_steps || stop_now || out_of_time {
            let eval_start = Instant::now();
            let (accuracy, macro_f1) = evaluate(&loaded.model, head, &dev_set, labels, t.batch_size).map_err(candle("dev evaluation"))?;
            let eval_s = eval_start.elapsed().as_secs_f64();
            session_eval_seconds += eval_s;
            let record =
                EvalRecord { step: st.step, accuracy, macro_f1, train_loss: Some(loss_since_eval.0 / loss_since_eval.1.max(1) as f64) };
            loss_since_eval = (0.0, 0);
            let metric = if t.metric == "macro_f1" { macro_f1 } else { accuracy };
            if st.best_metric.is_none_or(|b| metric > b) {
                st.best_metric = Some(metric);
                st.best_step = Some(st.step);
                st.evals_since_best = 0;
            } else {
                st.evals_since_best += 1;
            }
            say(format!(
                "step {}: dev accuracy {:.4}  macro-F1 {:.4}  train loss {:.4}",
                st.step,
                accuracy,
                macro_f1,
                record.train_loss.unwrap_or(f64::NAN)
            ));
            log_line(&metrics_path, &serde_json::json!({"eval": record}))?;
            st.history.push(record);
            if max_minutes > 0.0 && !refitted && !stop_now && !out_of_time && st.step < st.total_steps {
                // Fit the schedule again on this session's own step and evaluation times: the
                // first steps and the step-0 evaluation run slower than the rest (a 45-minute
                // budget sized at step 5 left 7 of its minutes unused), and the learning rate
                // has barely left its peak, so moving the schedule's end now changes little.
                refitted = true;
                let steps_now = (st.step - steps_before).max(1);
                let step_s = (session_start.elapsed().as_secs_f64() - session_eval_seconds).max(0.0) / steps_now as f64;
                let now = seconds_before + session_start.elapsed().as_secs_f64();
                let fits = optim::steps_within_budget(max_minutes * 60.0, now, st.step, step_s, eval_s, t.eval_every).min(planned_steps);
                if fit_schedule(&mut st, fits, planned_steps, &bar) {
                    say(format!(
                        "time budget: at {step_s:.2} s a step and {eval_s:.0} s an evaluation, {} minutes fit about {fits} of {planned_steps} steps; the {} schedule now ends at step {fits}",
                        minutes(max_minutes),
                        t.schedule
                    ));
                }
            }
            let (seed, pos) = loaded.model.dropout_rng().state();
            st.dropout_seed = seed;
            st.dropout_word_pos = pos.to_string();
            st.train_seconds = seconds_before + session_start.elapsed().as_secs_f64();
            state::save(
                &run_dir,
                &loaded.model,
                head_var.as_ref().map(|h| h.as_tensor()),
                optimizer.state_tensors(),
                &st,
                cfg,
                &fingerprint,
            )?;
            state::prune(&run_dir, t.save_total_limit, st.best_step)?;
            if stop_now {
                say(format!("interrupted: checkpoint saved at step {} — continue with `wick train --resume`", st.step));
                was_interrupted = true;
                break;
            }
            if out_of_time && st.step < st.total_steps {
                say(format!("time budget of {} minutes reached at step {}", minutes(max_minutes), st.step));
                budget_reached = true;
                break;
            }
            if t.patience > 0 && st.evals_since_best >= t.patience {
                say(format!("early stopping: no dev improvement in {} evaluations", t.patience));
                early_stopped = true;
                break;
            }
        }
    }
    bar.finish_and_clear();
    let train_seconds = seconds_before + session_start.elapsed().as_secs_f64();
    let best = st.best_step.and_then(|s| st.history.iter().find(|r| r.step == s).cloned());
    let summary = TrainSummary {
        run_dir,
        steps: st.step,
        best,
        train_seconds,
        tokens_per_second: st.tokens_seen as f64 / train_seconds.max(1e-9),
        tokens_seen: st.tokens_seen as u64,
        train_examples: train_set.len(),
        labels_seen: train_set.len().min(st.step * t.effective_batch()),
        trainable_params,
        total_params,
        truncated,
        interrupted: was_interrupted,
        early_stopped,
        budget_reached,
        planned_steps,
        budget_steps: st.budget_sized.then_some(st.total_steps),
    };
    tracing::info!("train finished in {:.1}s wall", started.elapsed().as_secs_f64());
    if let Some(b) = &summary.best {
        let run = crate::runs::NewRun {
            kind: "train".into(),
            name: cfg.output.run_name.clone(),
            config_hash: cfg.results_hash(),
            split: "dev".into(),
            accuracy: b.accuracy,
            macro_f1: b.macro_f1,
            consistency: None,
            examples: dev_set.len(),
            path: Some(state::step_dir(&summary.run_dir, b.step).display().to_string()),
        };
        crate::runs::append(&cfg.output.dir, run)?;
    }
    Ok(summary)
}
