//! A trainable Llama-family decoder (Llama, SmolLM, Qwen2) with LoRA on its projections.
//!
//! Reads like candle-transformers' llama.rs, but every op has a backward (see `ops`), batches are
//! right-padded with a padding mask, and a shared prompt prefix can be run once and reused.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::{ArchConfig, PROJECTIONS};
use super::layer::{AttentionMask, DecoderLayer, Projector, attention_inputs, attention_output, attention_scale, layer_forward};
use crate::lora::{DropoutRng, LoraLinear, expand_targets};
use crate::ops::fused::rms_norm;
use crate::ops::{Rotary, frozen_linear, inference_attention_cached};

/// Keys and values of a prompt prefix, per layer, each (1, kv_heads, prefix_len, head_dim).
#[derive(Debug, Clone)]
pub struct PrefixCache {
    /// (key, value) per layer.
    layers: Vec<(Tensor, Tensor)>,
    /// Number of prefix tokens.
    pub len: usize,
}

impl PrefixCache {
    /// The cache of one row of a batch that ran after `shared`: `shared`'s keys and values (if
    /// any) followed by the row's first `len` tokens of `kvs` (per layer, (batch, kv_heads, t,
    /// head_dim), as [`Llama::forward_with_kv`] returns them). Continuations of that row then run
    /// with it as their prefix. Kept in the autograd graph when `kvs` are.
    pub fn for_row(shared: Option<&PrefixCache>, kvs: &[(Tensor, Tensor)], row: usize, len: usize) -> Result<Self> {
        let layers = kvs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                let (k, v) = (k.narrow(0, row, 1)?.narrow(2, 0, len)?, v.narrow(0, row, 1)?.narrow(2, 0, len)?);
                match shared {
                    Some(p) => Ok((Tensor::cat(&[&p.layers[i].0, &k], 2)?, Tensor::cat(&[&p.layers[i].1, &v], 2)?)),
                    None => Ok((k, v)),
                }
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers, len: shared.map_or(0, |p| p.len) + len })
    }

    /// Caches of one length as one cache of their rows, in order.
    pub fn stack(caches: &[PrefixCache]) -> Result<Self> {
        let first = caches.first().ok_or_else(|| candle_core::Error::Msg("no prefix caches to stack".into()))?;
        if caches.iter().any(|c| c.len != first.len) {
            candle_core::bail!("prefix caches of different lengths cannot be stacked");
        }
        if caches.len() == 1 {
            return Ok(first.clone());
        }
        let layers = (0..first.layers.len())
            .map(|i| {
                let ks: Vec<&Tensor> = caches.iter().map(|c| &c.layers[i].0).collect();
                let vs: Vec<&Tensor> = caches.iter().map(|c| &c.layers[i].1).collect();
                Ok((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?))
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers, len: first.len })
    }

    /// Each row repeated `times` times in place (row r becomes rows r·times .. r·times + times).
    /// A one-row cache stays one row: every batch broadcasts it.
    pub fn repeat_rows(&self, times: usize) -> Result<Self> {
        if self.layers.first().is_none_or(|(k, _)| k.dim(0).is_ok_and(|b| b == 1)) {
            return Ok(self.clone());
        }
        let rep = |t: &Tensor| -> Result<Tensor> {
            let (b, h, s, d) = t.dims4()?;
            t.unsqueeze(1)?.repeat((1, times, 1, 1, 1))?.reshape((b * times, h, s, d))
        };
        let layers = self.layers.iter().map(|(k, v)| Ok((rep(k)?, rep(v)?))).collect::<Result<_>>()?;
        Ok(Self { layers, len: self.len })
    }
}

/// The decoder: embedding, layers, final norm, (tied or untied) LM head.
#[derive(Debug)]
pub struct Llama {
    /// Architecture hyper-parameters.
    pub cfg: ArchConfig,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    /// Untied LM head (None when tied to the embedding).
    lm_head: Option<Tensor>,
    rotary: Rotary,
    dropout: DropoutRng,
    /// Re-run each layer in the backward instead of keeping its activations (training, CPU).
    gradient_checkpointing: bool,
    /// Train layers with the hand-written backward where it applies (else under candle's autograd).
    hand_backward: bool,
    /// Adapter gradients that layer ops computed in the backward (see [`Llama::backward`]).
    pub(super) layer_op_grads: super::layer_op::SideGrads,
    /// [`fingerprint_of`] the weights as read, before the compute dtype rounds any of them.
    fingerprint: String,
}

/// Inputs of one forward pass over a right-padded batch.
pub struct Batch<'a> {
    /// Token ids, (batch, seq), u32.
    pub input_ids: &'a Tensor,
    /// Number of real (non-pad) tokens per row.
    pub lengths: &'a [usize],
}

impl Llama {
    /// Build from HF-named tensors (`model.layers.N.self_attn.q_proj.weight`, ...), checking shapes.
    /// `dtype` f16 on the CPU is the f16 path: projection weights in f16 on MKL's hgemm, all else f32.
    pub fn from_tensors(
        cfg: ArchConfig,
        mut tensors: HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> crate::error::Result<Self> {
        use crate::error::Error;
        let names = cfg.weight_shapes();
        let fingerprint = fingerprint_of(names.iter().filter_map(|(n, _, _)| tensors.get(n).map(|t| (n.as_str(), t))))?;
        let (dtype, projection_dtype) = super::storage_dtypes(dtype, device);
        let mut take = |name: &str, shape: &[usize], dtype: DType| -> crate::error::Result<Tensor> {
            let t = tensors.remove(name).ok_or_else(|| Error::Model(format!("weights lack tensor {name}")))?;
            if t.dims() != shape {
                return Err(Error::Model(format!("tensor {name} has shape {:?}, config expects {shape:?}", t.dims())));
            }
            t.to_device(device).and_then(|t| t.to_dtype(dtype)).map_err(|e| Error::Model(format!("tensor {name}: {e}")))
        };
        let (d, v) = (cfg.hidden_size, cfg.vocab_size);
        let embed_tokens = take("model.embed_tokens.weight", &[v, d], dtype)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut lin = |block: &str, name: &str| -> crate::error::Result<LoraLinear> {
                let (out, inp) = cfg.projection_shape(name);
                let w = take(&format!("{p}.{block}.{name}.weight"), &[out, inp], projection_dtype)?;
                let b = if cfg.projection_has_bias(name) { Some(take(&format!("{p}.{block}.{name}.bias"), &[out], dtype)?) } else { None };
                LoraLinear::new(w, b).map_err(|e| Error::Model(format!("{p}.{block}.{name}: {e}")))
            };
            let [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj] = PROJECTIONS.map(|(block, name)| lin(block, name));
            layers.push(DecoderLayer {
                q_proj: q_proj?,
                k_proj: k_proj?,
                v_proj: v_proj?,
                o_proj: o_proj?,
                gate_proj: gate_proj?,
                up_proj: up_proj?,
                down_proj: down_proj?,
                input_layernorm: take(&format!("{p}.input_layernorm.weight"), &[d], dtype)?,
                post_attention_layernorm: take(&format!("{p}.post_attention_layernorm.weight"), &[d], dtype)?,
            });
        }
        let norm = take("model.norm.weight", &[d], dtype)?;
        let lm_head = if cfg.tie_word_embeddings { None } else { Some(take("lm_head.weight", &[v, d], dtype)?) };
        let max_pos = cfg.max_position_embeddings.clamp(1, 32_768);
        let rotary = Rotary::new(cfg.head_dim, cfg.rope_theta, max_pos, device).map_err(|e| Error::Model(format!("rotary tables: {e}")))?;
        Ok(Self {
            cfg,
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary,
            dropout: DropoutRng::new(0),
            gradient_checkpointing: false,
            hand_backward: true,
            layer_op_grads: Default::default(),
            fingerprint,
        })
    }

    /// A stable fingerprint of the frozen weights as read (GGUF or folder alike), before the
    /// CPU's f16/bf16 paths round the projections: a checkpoint trained on the f32 weights
    /// loads on the bf16 path, which computes with the same weights rounded.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Device of the weights.
    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// Compute dtype of the frozen weights and activations.
    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// Dtype of the frozen projection weights: f16 on the CPU f16 path, else [`Llama::dtype`].
    pub fn projection_dtype(&self) -> DType {
        self.layers.first().map_or(self.dtype(), |l| l.q_proj.weight().dtype())
    }

    /// Turn per-layer activation checkpointing on or off: training then keeps only each layer's
    /// input and re-runs the layer in the backward (~1 more forward per step, far less memory).
    /// CPU only; on other devices it is ignored. Use [`Llama::backward`] for the gradients.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.gradient_checkpointing = on;
    }

    /// Train the layers with their hand-written backward (on by default; it applies on the CPU
    /// with f32 activations, a BLAS and the fused ops). Off: candle's autograd records every
    /// op of the layer, the reference the hand-written backward is tested against.
    pub fn set_hand_backward(&mut self, on: bool) {
        self.hand_backward = on;
    }

    /// True when the layers' hand-written backward can run on activations like `x`.
    pub fn hand_backward_applies(&self, x: &Tensor) -> bool {
        crate::ops::fused::fused_applies(x)
            && crate::ops::batched_matmul_applies(x)
            && self.layers.iter().all(|l| l.projections().iter().all(|(_, _, p)| p.hand_pass_applies(x)))
    }

    /// `loss.backward()`, plus the adapter gradients the layer ops computed on the way.
    pub fn backward(&self, loss: &Tensor) -> Result<candle_core::backprop::GradStore> {
        let mut store = loss.backward()?;
        super::layer_op::merge_side_grads(&self.layer_op_grads, &mut store)?;
        Ok(store)
    }

    /// The dropout generator (its state is checkpointed for exact resume).
    pub fn dropout_rng(&self) -> &DropoutRng {
        &self.dropout
    }

    /// Add fresh LoRA adapters to the named modules (`all-linear` for all seven projections).
    /// A is drawn from a generator seeded with `seed`, layer by layer in module order.
    pub fn add_lora(&mut self, targets: &[String], r: usize, scale: f64, dropout: f64, seed: u64) -> Result<()> {
        let targets = expand_targets(targets);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        self.dropout = DropoutRng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
        for layer in &mut self.layers {
            for (_, name, lin) in layer.projections_mut() {
                if targets.contains(&name) {
                    lin.add_adapter(r, scale, dropout, &mut rng)?;
                }
            }
        }
        Ok(())
    }

    /// Detach every adapter (unmerging a merged one first): the frozen base model again.
    pub fn clear_lora(&mut self) -> Result<()> {
        for layer in &mut self.layers {
            for (_, _, lin) in layer.projections_mut() {
                lin.clear_adapter()?;
            }
        }
        Ok(())
    }

    /// Every adapter tensor with its PEFT key, in a stable order
    /// (`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`, ...).
    pub fn lora_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (block, name, lin) in layer.projections() {
                if let Some(ad) = lin.adapter() {
                    let p = format!("base_model.model.model.layers.{i}.{block}.{name}");
                    out.push((format!("{p}.lora_A.weight"), ad.a.clone()));
                    out.push((format!("{p}.lora_B.weight"), ad.b.clone()));
                }
            }
        }
        out
    }

    /// Every projection under its PEFT module name (`model.layers.N.self_attn.q_proj`) with its shape.
    pub fn projection_shapes(&self) -> Vec<crate::peft::ModuleShape> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (block, name, lin) in layer.projections() {
                let (out_features, in_features) = lin.weight().dims2().unwrap_or((0, 0));
                out.push(crate::peft::ModuleShape { name: format!("model.layers.{i}.{block}.{name}"), out_features, in_features });
            }
        }
        out
    }

    /// Attach adapters read by [`crate::peft::read_adapter`], each with its own scale.
    pub fn set_adapters(&mut self, adapters: &[crate::peft::ModuleAdapter], dropout: f64) -> crate::error::Result<()> {
        let by_name: HashMap<&str, &crate::peft::ModuleAdapter> = adapters.iter().map(|a| (a.module.as_str(), a)).collect();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (block, name, lin) in layer.projections_mut() {
                let module = format!("model.layers.{i}.{block}.{name}");
                if let Some(ad) = by_name.get(module.as_str()) {
                    lin.set_adapter(ad.a.clone(), ad.b.clone(), ad.scale, dropout)
                        .map_err(|e| crate::error::Error::Model(format!("{module}: {e}")))?;
                }
            }
        }
        Ok(())
    }

    /// Fold every adapter into its base weight.
    pub fn merge_lora(&mut self) -> Result<()> {
        self.layers.iter_mut().try_for_each(|l| l.projections_mut().into_iter().try_for_each(|(_, _, p)| p.merge()))
    }

    /// Undo [`Llama::merge_lora`].
    pub fn unmerge_lora(&mut self) -> Result<()> {
        self.layers.iter_mut().try_for_each(|l| l.projections_mut().into_iter().try_for_each(|(_, _, p)| p.unmerge()))
    }

    /// The frozen weights under their HF names (the fingerprint's input).
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        self.weights(false).expect("cloning weights cannot fail")
    }

    /// The weights under their HF names with every adapter folded in (what an export writes);
    /// the model itself is left as it is.
    pub fn merged_weights(&self) -> Result<Vec<(String, Tensor)>> {
        self.weights(true)
    }

    fn weights(&self, merged: bool) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed_tokens.clone())];
        for (i, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.input_layernorm.weight"), layer.input_layernorm.clone()));
            out.push((format!("{p}.post_attention_layernorm.weight"), layer.post_attention_layernorm.clone()));
            for (block, name, lin) in layer.projections() {
                let w = if merged { lin.merged_weight()? } else { lin.weight().clone() };
                out.push((format!("{p}.{block}.{name}.weight"), w));
                if let Some(b) = lin.bias() {
                    out.push((format!("{p}.{block}.{name}.bias"), b.clone()));
                }
            }
        }
        out.push(("model.norm.weight".into(), self.norm.clone()));
        if let Some(h) = &self.lm_head {
            out.push(("lm_head.weight".into(), h.clone()));
        }
        Ok(out)
    }

    fn run(&self, batch: &Batch, prefix: Option<&PrefixCache>, train: bool, want_kv: bool) -> Result<(Tensor, Vec<(Tensor, Tensor)>)> {
        let b = batch.input_ids.dim(0)?;
        if batch.lengths.len() != b {
            candle_core::bail!("{} lengths for a batch of {b}", batch.lengths.len());
        }
        let offset = prefix.map_or(0, |p| p.len);
        let drop = if train { Some(&self.dropout) } else { None };
        let mut x = self.embed(batch.input_ids, offset)?;
        let mut kvs = Vec::with_capacity(self.layers.len());
        // Training layers run as one op each (hand-written backward and/or checkpointing), except
        // where the layers' keys and values are wanted (a prefix pass).
        let as_op = train && !want_kv;
        if as_op {
            // Gradients left by a `loss.backward()` that bypassed `Llama::backward` are stale.
            self.layer_op_grads.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        let hand = as_op && self.hand_backward && self.hand_backward_applies(&x);
        let checkpoint = as_op && self.gradient_checkpointing && x.device().is_cpu();
        let mask = if train { AttentionMask::Lengths(batch.lengths) } else { AttentionMask::LengthsNoGrad(batch.lengths) };
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_prefix = prefix.map(|p| &p.layers[i]);
            if hand || checkpoint {
                if i == 0 {
                    // The op hides the adapters from autograd, so it is recorded only when an
                    // input is tracked; the embeddings are not: make the first input a leaf.
                    x = Var::from_tensor(&x)?.as_tensor().clone();
                }
                x = super::layer_op::layer_op(
                    &self.cfg,
                    &self.rotary,
                    self.dropout_rng(),
                    &self.layer_op_grads,
                    layer,
                    &x,
                    batch.lengths,
                    layer_prefix,
                    offset,
                    hand,
                    checkpoint,
                )?;
            } else {
                let (out, kv, _) =
                    layer_forward(&self.cfg, &self.rotary, layer, &x, &mask, layer_prefix, offset, &mut Projector::Autograd(drop))?;
                x = out;
                kvs.push(kv);
            }
        }
        Ok((rms_norm(&x, &self.norm, self.cfg.rms_norm_eps)?, kvs))
    }

    /// Final-normed hidden states (batch, seq, hidden) of an inference pass whose attention is
    /// masked by an additive `bias` (batch, 1, seq, cached + seq) over the keys, for positions
    /// `offset..offset + seq`; `cache` holds each layer's keys and values so far (empty on the first
    /// pass) and gets this pass's appended. What batched generation of ragged prompts runs.
    pub(super) fn forward_biased(
        &self,
        input_ids: &Tensor,
        bias: &Tensor,
        cache: &mut Vec<(Tensor, Tensor)>,
        offset: usize,
    ) -> Result<Tensor> {
        let mut x = self.embed(input_ids, offset)?;
        let first = cache.is_empty();
        let mask = AttentionMask::Bias(bias);
        for (i, layer) in self.layers.iter().enumerate() {
            let (y, kv, acts) =
                layer_forward(&self.cfg, &self.rotary, layer, &x, &mask, cache.get(i), offset, &mut Projector::Autograd(None))?;
            x = y;
            if first {
                cache.push(kv);
            } else {
                // With a cache, the layer has already joined it to the new keys and values.
                cache[i] = (acts.keys, acts.values);
            }
        }
        rms_norm(&x, &self.norm, self.cfg.rms_norm_eps)
    }

    /// Preallocated keys and values for a generation group of `rows` rows and up to `capacity`
    /// positions: one (keys, values) pair per layer, each (rows, kv_heads, capacity, head_dim).
    pub(super) fn kv_cache(&self, rows: usize, capacity: usize) -> Result<Vec<(Tensor, Tensor)>> {
        let shape = (rows, self.cfg.num_key_value_heads, capacity, self.cfg.head_dim);
        let dtype = self.projection_dtype();
        self.layers.iter().map(|_| Ok((Tensor::zeros(shape, dtype, self.device())?, Tensor::zeros(shape, dtype, self.device())?))).collect()
    }

    /// Final-normed hidden states (batch, seq, hidden) of an inference pass over positions
    /// `cached..cached + seq` whose keys and values are written into `cache` ([`Llama::kv_cache`])
    /// in place, after the `cached` already there; row b's queries see keys from `starts[b]` (its
    /// left padding). Generation's fast path: no key copies per step, attention as one op
    /// (where [`crate::ops::inference_attention_applies`]; [`Llama::forward_biased`] elsewhere).
    pub(super) fn forward_cached(&self, input_ids: &Tensor, starts: &[usize], cache: &[(Tensor, Tensor)], cached: usize) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        // A long pass (a prefill) runs in row blocks, so its activations stay under the size
        // glibc serves with fresh (kernel-zeroed) pages: 64 rows of 120 tokens ran at 523
        // tokens/s whole and 604 in blocks of 16 on a 2-core Zen 3.
        const PREFILL_ROWS: usize = 16;
        if t > 1 && b > PREFILL_ROWS {
            let mut hidden = Vec::new();
            for r0 in (0..b).step_by(PREFILL_ROWS) {
                let rows = PREFILL_ROWS.min(b - r0);
                let views = cache.iter().map(|(k, v)| Ok((k.narrow(0, r0, rows)?, v.narrow(0, r0, rows)?))).collect::<Result<Vec<_>>>()?;
                hidden.push(self.forward_cached(&input_ids.narrow(0, r0, rows)?, &starts[r0..r0 + rows], &views, cached)?);
            }
            return Tensor::cat(&hidden, 0);
        }
        let mut x = self.embed(input_ids, cached)?;
        let proj = &mut Projector::Autograd(None);
        for (layer, (keys, values)) in self.layers.iter().zip(cache) {
            let (q, k, v) = attention_inputs(&self.cfg, &self.rotary, layer, &x, cached, proj)?;
            keys.slice_set(&k, 2, cached)?;
            values.slice_set(&v, 2, cached)?;
            let attn = inference_attention_cached(&q, keys, values, cached + t, starts, attention_scale(&self.cfg))?;
            x = attention_output(&self.cfg, layer, &x, &attn, proj)?.0;
        }
        rms_norm(&x, &self.norm, self.cfg.rms_norm_eps)
    }

    /// Token embeddings (batch, seq, hidden) of ids (batch, seq) placed after `offset` positions,
    /// refused when they would run past the rotary tables.
    fn embed(&self, input_ids: &Tensor, offset: usize) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        if offset + t > self.rotary.max_positions() {
            candle_core::bail!("sequence of {} tokens exceeds the model's {} positions", offset + t, self.rotary.max_positions());
        }
        self.embed_tokens.index_select(&input_ids.flatten_all()?, 0)?.reshape((b, t, self.cfg.hidden_size))
    }

    /// Positions the rotary tables cover: the longest sequence the model runs.
    pub fn max_positions(&self) -> usize {
        self.rotary.max_positions()
    }

    /// Final-normed hidden states (batch, seq, hidden). `train` enables adapter dropout and
    /// records the pass for training: take its gradients with [`Llama::backward`], which adds
    /// the adapters' (a plain `loss.backward()` misses them on the CPU path).
    pub fn forward_hidden(&self, batch: &Batch, prefix: Option<&PrefixCache>, train: bool) -> Result<Tensor> {
        Ok(self.run(batch, prefix, train, false)?.0)
    }

    /// Final-normed hidden states and each layer's new (key, value) heads, (batch, kv_heads, seq,
    /// head_dim): what a continuation of each row needs ([`PrefixCache::for_row`]). With `train`
    /// the layers run under autograd (not as whole-layer ops), so the keys and values stay in the
    /// graph.
    pub fn forward_with_kv(&self, batch: &Batch, prefix: Option<&PrefixCache>, train: bool) -> Result<(Tensor, Vec<(Tensor, Tensor)>)> {
        self.run(batch, prefix, train, true)
    }

    /// Run a shared prompt prefix (1, len) once; its keys and values serve every later batch.
    pub fn prefix_cache(&self, prefix_ids: &[u32]) -> Result<PrefixCache> {
        let cache = self.prefix_kv(prefix_ids, false)?;
        let layers = cache.layers.into_iter().map(|(k, v)| (k.detach(), v.detach())).collect();
        Ok(PrefixCache { layers, len: cache.len })
    }

    /// Keys and values of a prefix shared by a training batch, kept in the autograd graph so the
    /// adapters get the gradient of all rows through the one prefix pass (exact, and the prefix
    /// is computed once instead of once per row).
    pub fn prefix_kv(&self, prefix_ids: &[u32], train: bool) -> Result<PrefixCache> {
        let ids = Tensor::new(prefix_ids, self.device())?.unsqueeze(0)?;
        let (_, layers) = self.run(&Batch { input_ids: &ids, lengths: &[prefix_ids.len()] }, None, train, true)?;
        Ok(PrefixCache { layers, len: prefix_ids.len() })
    }

    /// Hidden state at each row's last real token, (batch, hidden).
    pub fn last_hidden(hidden: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (b, t, d) = hidden.dims3()?;
        let idx: Vec<u32> = lengths.iter().enumerate().map(|(i, &l)| (i * t + l.max(1) - 1) as u32).collect();
        let idx = Tensor::new(idx.as_slice(), hidden.device())?;
        hidden.reshape((b * t, d))?.index_select(&idx, 0)
    }

    /// The output-projection rows of `token_ids` (label words), (n, hidden).
    pub fn output_rows(&self, token_ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::new(token_ids, self.device())?;
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens).index_select(&ids, 0)
    }

    /// Logits of only the given tokens for hidden states (..., hidden) — no vocabulary-wide matmul.
    pub fn token_logits(&self, hidden: &Tensor, token_ids: &[u32]) -> Result<Tensor> {
        project(hidden, &self.output_rows(token_ids)?)
    }

    /// Full-vocabulary logits for hidden states (..., hidden), f32.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        project(hidden, self.lm_head.as_ref().unwrap_or(&self.embed_tokens))
    }
}

/// hidden (..., d) · rowsᵀ (n, d) → (..., n) in f32; a single vector gives a vector. The rows are
/// frozen: candle's matmul backward would also compute their gradient (for the full LM head, a
/// vocabulary × hidden GEMM and ~100 MB of buffers per training step), so this goes through
/// `frozen_linear`, whose backward returns only the hidden states' gradient.
fn project(hidden: &Tensor, rows: &Tensor) -> Result<Tensor> {
    let d = rows.dim(1)?;
    let mut out_dims = hidden.dims().to_vec();
    if let Some(last) = out_dims.last_mut() {
        *last = rows.dim(0)?;
    }
    frozen_linear(&hidden.reshape(((), d))?, rows)?.reshape(out_dims)?.to_dtype(DType::F32)
}

/// Hash of named weights: every name, shape, and the first and last 512 values (as f32).
pub fn fingerprint_of<'a>(named: impl IntoIterator<Item = (&'a str, &'a Tensor)>) -> crate::error::Result<String> {
    use sha2::{Digest, Sha256};
    let err = |name: &str, e: candle_core::Error| crate::error::Error::Model(format!("{name}: {e}"));
    let mut h = Sha256::new();
    for (name, t) in named {
        h.update(name.as_bytes());
        h.update(format!("{:?}", t.dims()).as_bytes());
        let flat = t.flatten_all().and_then(|f| f.to_dtype(DType::F32)).map_err(|e| err(name, e))?;
        let n = flat.elem_count();
        let take = n.min(512);
        for part in [flat.narrow(0, 0, take), flat.narrow(0, n - take, take)] {
            let v: Vec<f32> = part.and_then(|p| p.to_vec1()).map_err(|e| err(name, e))?;
            v.iter().for_each(|x| h.update(x.to_le_bytes()));
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
