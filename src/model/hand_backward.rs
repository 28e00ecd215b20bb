//! A decoder layer's backward written out by hand, like llm.c's `train_gpt2.c`.
//!
//! Under candle's autograd a layer is ~28 recorded ops, and candle accumulates every gradient
//! that reaches an op's input as `zeros_like` + `add`: a fresh buffer, a memset and one more full
//! pass per input, every step. Here the layer's forward runs graph-free ([`Projector::Hand`])
//! and keeps the activations below; this backward computes each gradient once from them, with
//! the same fused kernels the ops use. Reads bottom-up against `layer::layer_forward`:
//!
//! ```text
//! n1 = rms(x)            q, k, v = proj(n1)      probs = softmax(q·kᵀ)      attn = probs·v
//! x2 = x + o(attn)       n2 = rms(x2)           act = swiglu(gate(n2), up(n2))
//! y  = x2 + down(act)
//! ```
//!
//! [`Projector::Hand`]: super::layer::Projector::Hand

use candle_core::{D, Result, Tensor};

use super::config::ArchConfig;
use super::layer::{DecoderLayer, LayerActivations, attention_scale};
use crate::lora::{HandState, LoraLinear};
use crate::ops::fused::{masked_softmax_backward, rms_norm, rms_norm_backward, swiglu, swiglu_backward};
use crate::ops::{Rotary, batched_matmul_backward};

/// What a layer's backward reads from its forward.
pub(super) struct Saved {
    /// The intermediate values.
    pub acts: LayerActivations,
    /// Each projection's state (dropout mask, adapter u), in forward order (q, k, v, o, gate,
    /// up, down).
    pub projections: Vec<HandState>,
}

/// The gradients of one layer: its input's, a shared prefix's keys and values (when the layer
/// attended to one), and every adapter tensor's as (tensor, gradient).
pub(super) struct LayerGrads {
    pub dx: Tensor,
    pub prefix: Option<(Tensor, Tensor)>,
    pub adapters: Vec<(Tensor, Tensor)>,
}

/// Backward of one projection: dx as (rows × in) values, added onto `acc` when given (the
/// projections reading one input sum their gradients in place); the adapter's (dA, dB) are
/// appended to `adapters`.
fn projection_backward(
    lin: &LoraLinear,
    x: &Tensor,
    state: &HandState,
    dy: &Tensor,
    acc: Option<Vec<f32>>,
    adapters: &mut Vec<(Tensor, Tensor)>,
) -> Result<Vec<f32>> {
    // x is (b, t, in) or (rows, in); dy may come in any shape with rows × out elements.
    let rows = x.elem_count() / x.dim(D::Minus1)?.max(1);
    let (dx, adapter) = lin.hand_backward(&x.reshape((rows, ()))?, state, &dy.reshape((rows, ()))?, acc)?;
    if let (Some((da, db)), Some(ad)) = (adapter, lin.adapter()) {
        adapters.push((ad.a.as_tensor().clone(), da));
        adapters.push((ad.b.as_tensor().clone(), db));
    }
    Ok(dx)
}

/// The gradients of `layer` at input x (b, t, d) under dy (b, t, d), from its saved forward.
/// `offset` is the prefix length the forward's rotary positions started at.
pub(super) fn layer_backward(
    cfg: &ArchConfig,
    rotary: &Rotary,
    layer: &DecoderLayer,
    offset: usize,
    x: &Tensor,
    saved: &Saved,
    dy: &Tensor,
) -> Result<LayerGrads> {
    let (b, t, d) = x.dims3()?;
    let (h, kvh, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
    let (rep, m, eps) = (h / kvh, b * t, cfg.rms_norm_eps);
    let (a, states) = (&saved.acts, &saved.projections);
    let mut adapters = Vec::with_capacity(14);
    let flat = |v: &Tensor| v.reshape((m, ()));
    let tensor = |v: Vec<f32>| {
        let cols = v.len() / m.max(1);
        Tensor::from_vec(v, (m, cols), x.device())
    };
    let dy = flat(dy)?;

    // MLP: y = x2 + down(act), act = swiglu(gate, up), gate = gate(n2), up = up(n2).
    // act, n2 and n1 are not kept (see `LayerActivations`): recomputed, bit for bit, from what is.
    let act = swiglu(&a.gate, &a.up)?;
    let d_act = tensor(projection_backward(&layer.down_proj, &act, &states[6], &dy, None, &mut adapters)?)?;
    drop(act);
    let (d_gate, d_up) = swiglu_backward(&flat(&a.gate)?, &flat(&a.up)?, &d_act)?;
    let n2 = rms_norm(&a.x2, &layer.post_attention_layernorm, eps)?;
    let d_n2 = projection_backward(&layer.gate_proj, &n2, &states[4], &d_gate, None, &mut adapters)?;
    let d_n2 = tensor(projection_backward(&layer.up_proj, &n2, &states[5], &d_up, Some(d_n2), &mut adapters)?)?;
    drop(n2);
    // n2 = rms(x2); the residual carries dy straight through to x2.
    let d_x2 = rms_norm_backward(&flat(&a.x2)?, &layer.post_attention_layernorm, &d_n2, eps, Some(&dy))?;

    // Attention output: x2 = x + o(attn); attn (b, t, h·hd) came from heads-major (b, kvh, rep·t, hd).
    let d_attn = tensor(projection_backward(&layer.o_proj, &a.attn, &states[3], &d_x2, None, &mut adapters)?)?;
    let d_attn = d_attn.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous()?.reshape((b, kvh, rep * t, hd))?;
    let s = a.keys.dim(2)?;
    // attn = probs · values, probs = softmax(scale · q · keysᵀ).
    let probs =
        a.probs.as_ref().ok_or_else(|| candle_core::Error::Msg("hand backward: a layer ran without its attention probabilities".into()))?;
    let (d_probs, d_values) = batched_matmul_backward(&probs.reshape((b, kvh, rep * t, s))?, &a.values, false, false, &d_attn)?;
    let d_scores = masked_softmax_backward(probs, &d_probs.reshape((b, h, t, s))?, attention_scale(cfg))?;
    let q = a.q.reshape((b, kvh, rep * t, hd))?;
    let (d_q, d_keys) = batched_matmul_backward(&q, &a.keys, false, true, &d_scores.reshape((b, kvh, rep * t, s))?)?;

    // The first s − t keys/values are the shared prefix's, broadcast over the batch: its
    // gradient is the batch sum.
    let p = s - t;
    let prefix = (p > 0)
        .then(|| -> Result<(Tensor, Tensor)> { Ok((d_keys.narrow(2, 0, p)?.sum_keepdim(0)?, d_values.narrow(2, 0, p)?.sum_keepdim(0)?)) });
    let prefix = prefix.transpose()?;
    let (d_k, d_v) = (d_keys.narrow(2, p, t)?, d_values.narrow(2, p, t)?);

    // q, k = rope(proj(n1)) (heads-major), v = proj(n1) moved heads-major.
    let d_q = rotary.to_heads_backward(&d_q.reshape((b, h, t, hd))?, offset)?;
    let d_k = rotary.to_heads_backward(&d_k, offset)?;
    let d_v = d_v.transpose(1, 2)?.contiguous()?;
    let n1 = rms_norm(x, &layer.input_layernorm, eps)?;
    let d_n1 = projection_backward(&layer.q_proj, &n1, &states[0], &d_q, None, &mut adapters)?;
    let d_n1 = projection_backward(&layer.k_proj, &n1, &states[1], &d_k, Some(d_n1), &mut adapters)?;
    let d_n1 = tensor(projection_backward(&layer.v_proj, &n1, &states[2], &d_v, Some(d_n1), &mut adapters)?)?;
    // n1 = rms(x); the residual carries d_x2 through to x.
    let dx = rms_norm_backward(&flat(x)?, &layer.input_layernorm, &d_n1, eps, Some(&d_x2))?;
    Ok(LayerGrads { dx: dx.reshape((b, t, d))?, prefix, adapters })
}
