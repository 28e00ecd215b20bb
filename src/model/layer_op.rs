//! A training layer as one autograd op: the hand-written backward, and per-layer activation
//! checkpointing (`train.gradient_checkpointing = true`).
//!
//! The op's inputs are the layer's input x (and, with a shared prompt prefix, the prefix's keys
//! and values); its forward runs the layer graph-free. Its backward returns their gradients:
//! - hand-written (`hand_backward`, the CPU f32-activation path with a BLAS): from the
//!   activations the forward saved, or, with checkpointing, from a re-run of the forward;
//! - otherwise (checkpointing only): by re-running the layer under candle's autograd.
//!
//! Checkpointing keeps only x per layer instead of every activation, for one more layer forward
//! per step. Re-runs draw the same dropout masks (the generator's state is recorded). The
//! adapters inside the layer are not inputs of the op, so their gradients go to a side store
//! that [`super::Llama::backward`] adds to the result. CPU only (the op has no CUDA forward).

use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Device, Layout, Result, Shape, Tensor, Var};

use super::config::ArchConfig;
use super::hand_backward::{Saved, layer_backward};
use super::layer::{AttentionMask, DecoderLayer, Projector, layer_forward};
use crate::lora::DropoutRng;
use crate::ops::Rotary;

/// Gradients of tensors that are not inputs of the op that computed them: (tensor, gradient).
pub type SideGrads = Arc<Mutex<Vec<(Tensor, Tensor)>>>;

/// Add the side gradients into `store` (summing with what it already holds) and clear them.
pub fn merge_side_grads(side: &SideGrads, store: &mut GradStore) -> Result<()> {
    let pending = std::mem::take(&mut *side.lock().unwrap_or_else(|e| e.into_inner()));
    for (tensor, grad) in pending {
        let sum = match store.remove(&tensor) {
            Some(existing) => (existing + grad)?,
            None => grad,
        };
        store.insert(&tensor, sum);
    }
    Ok(())
}

/// Everything a layer's re-run needs, owned (ops must be 'static).
struct LayerRun {
    cfg: ArchConfig,
    rotary: Rotary,
    layer: DecoderLayer,
    lengths: Vec<usize>,
    offset: usize,
    /// (seed, word position) of the dropout generator when the forward ran.
    dropout_state: (u64, u128),
    /// Its state after the layer's masks were drawn (set by the forward).
    end_state: Mutex<Option<(u64, u128)>>,
    side: SideGrads,
    /// Hand-written backward (else autograd re-runs the layer: checkpointing only).
    hand: bool,
    /// Keep nothing in the forward; re-run it in the backward.
    checkpoint: bool,
    /// What the forward kept for a hand-written backward without checkpointing.
    saved: Mutex<Option<Saved>>,
}

impl LayerRun {
    /// The layer on x (and prefix keys/values), drawing dropout masks from the recorded state:
    /// graph-free with its activations (hand mode), or under autograd.
    fn forward(&self, x: &Tensor, prefix: Option<&(Tensor, Tensor)>) -> Result<(Tensor, Option<Saved>)> {
        let rng = DropoutRng::new(0);
        rng.restore(self.dropout_state.0, self.dropout_state.1);
        let mask = AttentionMask::Lengths(&self.lengths);
        let (y, saved) = if self.hand {
            let mut proj = Projector::Hand { rng: &rng, states: Vec::with_capacity(7) };
            let (y, _, acts) = layer_forward(&self.cfg, &self.rotary, &self.layer, x, &mask, prefix, self.offset, &mut proj)?;
            let Projector::Hand { states, .. } = proj else { unreachable!("built as Hand above") };
            (y, Some(Saved { acts, projections: states }))
        } else {
            let mut proj = Projector::Autograd(Some(&rng));
            (layer_forward(&self.cfg, &self.rotary, &self.layer, x, &mask, prefix, self.offset, &mut proj)?.0, None)
        };
        *self.end_state.lock().unwrap_or_else(|e| e.into_inner()) = Some(rng.state());
        Ok((y, saved))
    }

    /// The op's forward: the output, keeping the activations unless checkpointing.
    fn op_forward(&self, x: &Tensor, prefix: Option<&(Tensor, Tensor)>) -> Result<Tensor> {
        let (y, saved) = self.forward(x, prefix)?;
        if !self.checkpoint {
            *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = saved;
        }
        Ok(y)
    }

    /// The gradients of the op's inputs under upstream `dy`; the adapters' go to the side store.
    fn backward(&self, inputs: &[&Tensor], dy: &Tensor) -> Result<Vec<Tensor>> {
        if !self.hand {
            return self.autograd_backward(inputs, dy);
        }
        let prefix = (inputs.len() == 3).then(|| (inputs[1].detach(), inputs[2].detach()));
        let x = inputs[0].detach();
        let saved = match self.saved.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(saved) => saved,
            None => self.forward(&x, prefix.as_ref())?.1.ok_or_else(|| candle_core::Error::Msg("layer re-run saved nothing".into()))?,
        };
        let grads = layer_backward(&self.cfg, &self.rotary, &self.layer, self.offset, &x, &saved, &dy.detach())?;
        self.side.lock().unwrap_or_else(|e| e.into_inner()).extend(grads.adapters);
        let mut out = vec![grads.dx];
        if let Some((dk, dv)) = grads.prefix.filter(|_| prefix.is_some()) {
            out.extend([dk, dv]);
        }
        Ok(out)
    }

    /// Re-run with fresh leaves for the inputs under autograd; return their gradients under
    /// upstream `dy`, and put the adapters' gradients in the side store.
    fn autograd_backward(&self, inputs: &[&Tensor], dy: &Tensor) -> Result<Vec<Tensor>> {
        let leaves: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(&t.detach())).collect::<Result<_>>()?;
        let prefix = (leaves.len() == 3).then(|| (leaves[1].as_tensor().clone(), leaves[2].as_tensor().clone()));
        let y = self.forward(leaves[0].as_tensor(), prefix.as_ref())?.0;
        let grads = (y * dy.detach())?.sum_all()?.backward()?;
        let mut side = self.side.lock().unwrap_or_else(|e| e.into_inner());
        for lin in self.layer.projections().into_iter().map(|(_, _, lin)| lin) {
            if let Some(ad) = lin.adapter() {
                for v in [&ad.a, &ad.b] {
                    if let Some(g) = grads.get(v.as_tensor()) {
                        side.push((v.as_tensor().clone(), g.clone()));
                    }
                }
            }
        }
        leaves.iter().map(|l| grads.get(l.as_tensor()).cloned().map_or_else(|| l.as_tensor().zeros_like(), Ok)).collect()
    }
}

/// A CPU tensor holding a copy of a contiguous (storage, layout).
fn tensor_of(storage: &CpuStorage, layout: &Layout) -> Result<Tensor> {
    let data = crate::ops::fused::slice(storage, layout, "layer op")?;
    Tensor::from_slice(data, layout.shape(), &Device::Cpu)
}

/// The storage of a CPU tensor (a copy when it is a view).
fn storage_of(t: &Tensor) -> Result<(CpuStorage, Shape)> {
    let t = t.contiguous()?;
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    Ok((CpuStorage::F32(v), t.shape().clone()))
}

struct LayerOp(Arc<LayerRun>);

impl CustomOp1 for LayerOp {
    fn name(&self) -> &'static str {
        "wick-layer"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        storage_of(&self.0.op_forward(&tensor_of(x, l)?, None)?)
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(self.0.backward(&[x], dy)?.into_iter().next())
    }
}

struct LayerOpWithPrefix(Arc<LayerRun>);

impl CustomOp3 for LayerOpWithPrefix {
    fn name(&self) -> &'static str {
        "wick-layer-prefix"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        k: &CpuStorage,
        kl: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let prefix = (tensor_of(k, kl)?, tensor_of(v, vl)?);
        storage_of(&self.0.op_forward(&tensor_of(x, xl)?, Some(&prefix))?)
    }

    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut g = self.0.backward(&[x, k, v], dy)?.into_iter();
        Ok((g.next(), g.next(), g.next()))
    }
}

/// `layer` on x as one op (training forward of [`super::Llama`]): with the hand-written backward
/// (`hand`), activation checkpointing (`checkpoint`), or both.
#[allow(clippy::too_many_arguments)]
pub(super) fn layer_op(
    cfg: &ArchConfig,
    rotary: &Rotary,
    dropout: &DropoutRng,
    side: &SideGrads,
    layer: &DecoderLayer,
    x: &Tensor,
    lengths: &[usize],
    prefix: Option<&(Tensor, Tensor)>,
    offset: usize,
    hand: bool,
    checkpoint: bool,
) -> Result<Tensor> {
    let dropout_state = dropout.state();
    let run = Arc::new(LayerRun {
        cfg: cfg.clone(),
        rotary: rotary.clone(),
        layer: layer.clone(),
        lengths: lengths.to_vec(),
        offset,
        dropout_state,
        end_state: Mutex::new(None),
        side: side.clone(),
        hand,
        checkpoint,
        saved: Mutex::new(None),
    });
    let out = match prefix {
        None => x.contiguous()?.apply_op1(LayerOp(run.clone()))?,
        Some((k, v)) => x.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, LayerOpWithPrefix(run.clone()))?,
    };
    // Advance the shared generator past this layer's masks, as the plain forward does.
    if let Some((seed, pos)) = *run.end_state.lock().unwrap_or_else(|e| e.into_inner()) {
        dropout.restore(seed, pos);
    }
    Ok(out)
}
