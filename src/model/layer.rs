//! One decoder layer, shared by the model's forward, the whole-layer training op and the
//! hand-written backward: its weights, the attention mask, how its projections run, its
//! activations, and its forward as a free function so that gradient checkpointing and the
//! hand-written backward can re-run it.

use candle_core::{Result, Tensor};

use super::config::{ArchConfig, PROJECTIONS};
use crate::lora::{DropoutRng, HandState, LoraLinear};
use crate::ops::fused::{biased_softmax, masked_softmax, rms_norm, swiglu};
use crate::ops::{Rotary, batched_matmul, inference_attention, inference_attention_applies};

/// One decoder layer: attention and SwiGLU MLP, each behind an RMSNorm and a residual.
#[derive(Debug, Clone)]
pub(super) struct DecoderLayer {
    pub(super) input_layernorm: Tensor,
    pub(super) q_proj: LoraLinear,
    pub(super) k_proj: LoraLinear,
    pub(super) v_proj: LoraLinear,
    pub(super) o_proj: LoraLinear,
    pub(super) post_attention_layernorm: Tensor,
    pub(super) gate_proj: LoraLinear,
    pub(super) up_proj: LoraLinear,
    pub(super) down_proj: LoraLinear,
}

impl DecoderLayer {
    /// (block, name, projection) of the seven projections, in [`PROJECTIONS`]' order.
    pub(super) fn projections(&self) -> [(&'static str, &'static str, &LoraLinear); 7] {
        let p = [&self.q_proj, &self.k_proj, &self.v_proj, &self.o_proj, &self.gate_proj, &self.up_proj, &self.down_proj];
        std::array::from_fn(|i| (PROJECTIONS[i].0, PROJECTIONS[i].1, p[i]))
    }

    /// The seven projections, mutable, in the same order.
    pub(super) fn projections_mut(&mut self) -> [(&'static str, &'static str, &mut LoraLinear); 7] {
        [
            ("self_attn", "q_proj", &mut self.q_proj),
            ("self_attn", "k_proj", &mut self.k_proj),
            ("self_attn", "v_proj", &mut self.v_proj),
            ("self_attn", "o_proj", &mut self.o_proj),
            ("mlp", "gate_proj", &mut self.gate_proj),
            ("mlp", "up_proj", &mut self.up_proj),
            ("mlp", "down_proj", &mut self.down_proj),
        ]
    }
}

/// Which keys each query of a layer may attend to.
pub(super) enum AttentionMask<'a> {
    /// Causal after any prefix, with right padding: `lengths[b]` real tokens in row b.
    Lengths(&'a [usize]),
    /// As `Lengths`, in a pass with no backward: attention may run as one fused op
    /// ([`crate::ops::inference_attention`]) that keeps no probabilities.
    LengthsNoGrad(&'a [usize]),
    /// An additive bias over the keys, (b, 1, t, prefix + t), 0 where allowed and −1e30 where
    /// not: batched generation's left padding ([`super::generate`]).
    Bias(&'a Tensor),
}

/// How a layer's forward runs its seven projections: recorded by candle's autograd, or
/// graph-free for the hand-written backward (`hand_backward`), keeping what it reads back.
pub(super) enum Projector<'a> {
    /// [`LoraLinear::forward`], with adapter dropout drawn from the generator when given.
    Autograd(Option<&'a DropoutRng>),
    /// [`LoraLinear::hand_forward`]; `states` collects each projection's state in call order.
    Hand { rng: &'a DropoutRng, states: Vec<HandState> },
}

impl Projector<'_> {
    pub(super) fn project(&mut self, lin: &LoraLinear, x: &Tensor) -> Result<Tensor> {
        match self {
            Projector::Autograd(drop) => lin.forward(x, *drop),
            Projector::Hand { rng, states } => {
                let (b, t, d) = x.dims3()?;
                let (y, state) = lin.hand_forward(&x.reshape((b * t, d))?, rng)?;
                states.push(state);
                y.reshape((b, t, ()))
            }
        }
    }
}

/// A layer's intermediate values, (b, t, ·) unless noted: what the hand-written backward reads.
///
/// Not kept: the two norms' outputs and the SwiGLU product. Each is one element-wise pass over
/// what is kept (x, x2, gate, up), and together they are 32% of a layer's activations (2,688 of
/// 8,448 floats per token in SmolLM2-135M), so the backward recomputes them rather than hold them
/// across the whole step.
pub(super) struct LayerActivations {
    /// Rotated queries, (b, heads, t, head_dim).
    pub q: Tensor,
    /// Keys and values with any prefix in front, (b, kv_heads, prefix + t, head_dim).
    pub keys: Tensor,
    pub values: Tensor,
    /// Attention probabilities, (b, heads, t, prefix + t); none from the fused inference op.
    pub probs: Option<Tensor>,
    /// Attention output before o_proj.
    pub attn: Tensor,
    /// x + o_proj(attn).
    pub x2: Tensor,
    /// gate_proj(n2) and up_proj(n2).
    pub gate: Tensor,
    pub up: Tensor,
}

/// One decoder layer: x + attn(norm(x)), then + mlp(norm(·)); also returns the layer's new
/// (key, value) heads and its activations. A free function so gradient checkpointing and the
/// hand-written backward can re-run it.
#[allow(clippy::too_many_arguments)]
pub(super) fn layer_forward(
    cfg: &ArchConfig,
    rotary: &Rotary,
    layer: &DecoderLayer,
    x: &Tensor,
    mask: &AttentionMask,
    prefix: Option<&(Tensor, Tensor)>,
    offset: usize,
    proj: &mut Projector,
) -> Result<(Tensor, (Tensor, Tensor), LayerActivations)> {
    let (b, t, _) = x.dims3()?;
    let (h, kvh, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
    let (q, k, v) = attention_inputs(cfg, rotary, layer, x, offset, proj)?;
    let new_kv = (k.clone(), v.clone());
    let (keys, values) = match prefix {
        Some((pk, pv)) => {
            let pk = pk.broadcast_as((b, kvh, pk.dim(2)?, hd))?;
            let pv = pv.broadcast_as((b, kvh, pv.dim(2)?, hd))?;
            (Tensor::cat(&[&pk, &k], 2)?.contiguous()?, Tensor::cat(&[&pv, &v], 2)?.contiguous()?)
        }
        None => (k, v),
    };
    let s = keys.dim(2)?;
    // Grouped-query attention without repeating K/V: the `rep` query heads that share a KV
    // head are stacked along the sequence axis, so one matmul per KV head serves them all.
    let rep = h / kvh;
    let (attn, probs) = match mask {
        AttentionMask::LengthsNoGrad(lengths) if inference_attention_applies(&q) => {
            (inference_attention(&q, &keys, &values, lengths, attention_scale(cfg))?, None)
        }
        _ => {
            let scores = batched_matmul(&q.reshape((b, kvh, rep * t, hd))?, &keys, false, true)?.reshape((b, h, t, s))?;
            let probs = match mask {
                AttentionMask::Lengths(lengths) | AttentionMask::LengthsNoGrad(lengths) => {
                    masked_softmax(&scores, lengths, attention_scale(cfg))?
                }
                AttentionMask::Bias(bias) => biased_softmax(&scores, bias, attention_scale(cfg))?,
            };
            let attn = batched_matmul(&probs.reshape((b, kvh, rep * t, s))?, &values, false, false)?;
            (attn.reshape((b, h, t, hd))?.transpose(1, 2)?.reshape((b, t, h * hd))?, Some(probs))
        }
    };
    let (y, x2, gate, up) = attention_output(cfg, layer, x, &attn, proj)?;
    Ok((y, new_kv, LayerActivations { q, keys, values, probs, attn, x2, gate, up }))
}

/// A layer's rotated queries (b, heads, t, head_dim) and its keys and values
/// (b, kv_heads, t, head_dim) for positions `offset..`, all contiguous.
pub(super) fn attention_inputs(
    cfg: &ArchConfig,
    rotary: &Rotary,
    layer: &DecoderLayer,
    x: &Tensor,
    offset: usize,
    proj: &mut Projector,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, t, _) = x.dims3()?;
    let (h, kvh, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
    let n1 = rms_norm(x, &layer.input_layernorm, cfg.rms_norm_eps)?;
    // The rotary op also moves heads ahead of positions, so q and k come out contiguous.
    let q = rotary.to_heads(&proj.project(&layer.q_proj, &n1)?.reshape((b, t, h, hd))?, offset)?;
    let k = rotary.to_heads(&proj.project(&layer.k_proj, &n1)?.reshape((b, t, kvh, hd))?, offset)?;
    let v = proj.project(&layer.v_proj, &n1)?.reshape((b, t, kvh, hd))?.transpose(1, 2)?.contiguous()?;
    Ok((q, k, v))
}

/// The rest of a layer after attention (b, t, heads · head_dim): x2 = x + o_proj(attn), then
/// y = x2 + mlp(norm(x2)); returns (y, x2, gate, up).
pub(super) fn attention_output(
    cfg: &ArchConfig,
    layer: &DecoderLayer,
    x: &Tensor,
    attn: &Tensor,
    proj: &mut Projector,
) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
    let x2 = (x + proj.project(&layer.o_proj, attn)?)?;
    let n2 = rms_norm(&x2, &layer.post_attention_layernorm, cfg.rms_norm_eps)?;
    let gate = proj.project(&layer.gate_proj, &n2)?;
    let up = proj.project(&layer.up_proj, &n2)?;
    let act = swiglu(&gate, &up)?;
    let y = (&x2 + proj.project(&layer.down_proj, &act)?)?;
    Ok((y, x2, gate, up))
}

/// The attention logits' scale, 1/√head_dim.
pub(super) fn attention_scale(cfg: &ArchConfig) -> f64 {
    1.0 / (cfg.head_dim as f64).sqrt()
}
