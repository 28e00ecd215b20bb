//! Inference attention as one op: for each (batch row, KV head), the scores, the masked softmax
//! and the product with the values run block by block on one thread, and the output lands in
//! (b, t, heads · head_dim) where o_proj reads it.
//!
//! The training path keeps scores and probabilities as whole tensors (its backward needs the
//! probabilities). Scoring has no backward, and at retrieval's ~320-token prompts those tensors
//! are 59 MB per layer for a batch of 16: every one a fresh mmap the kernel must zero, and a
//! softmax pass over memory rather than cache. Here each block of 64 queries multiplies only the
//! keys it may see (causal), so a 320-token prompt computes ~60% of the products, and its score
//! block stays in cache between the three steps.
//!
//! Spec (the same as [`super::fused::masked_softmax`] between two [`super::batched_matmul`]s):
//! q (b, h, t, d), keys and values (b, kv, s, d) with s = prefix + t; query i of row bi attends to
//! keys 0..prefix + min(i + 1, lengths[bi]); p = softmax(scale · q·kᵀ) over those; out = p·v.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::blas::blas;
use super::fused::{fast_exp, slice};

const NAME: &str = "wick-inference-attention";

/// Queries per block: the causal saving grows as blocks shrink, the GEMMs' efficiency as they grow.
const BLOCK: usize = 64;

struct InferenceAttention {
    /// Real tokens per row (right padding after them).
    lengths: Vec<usize>,
    /// First key each row's queries may see (left padding before it).
    starts: Vec<usize>,
    /// Keys in use per (row, KV head): the buffers may hold more (a generation cache).
    keys: usize,
    kv_heads: usize,
    scale: f32,
}

/// The output, written by every (row, KV head) task at its own disjoint elements.
struct SharedOut(*mut f32);

// SAFETY: tasks write disjoint elements (see `cpu_fwd`).
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The address of element `offset`.
    ///
    /// # Safety
    /// `offset` must lie inside the buffer.
    unsafe fn at(&self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

impl CustomOp3 for InferenceAttention {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        ql: &Layout,
        k: &CpuStorage,
        kl: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let blas = blas().ok_or_else(|| candle_core::Error::Msg(format!("{NAME}: no BLAS loaded")))?;
        let (q, k, v) = (slice(q, ql, NAME)?, slice(k, kl, NAME)?, slice(v, vl, NAME)?);
        let (b, h, t, d) = ql.shape().dims4()?;
        let (kb, kvh, cap, kd) = kl.shape().dims4()?;
        let s = self.keys;
        if kb != b
            || kd != d
            || vl.shape() != kl.shape()
            || kvh != self.kv_heads
            || h % kvh != 0
            || s < t
            || s > cap
            || self.lengths.len() != b
            || self.starts.len() != b
        {
            candle_core::bail!(
                "{NAME}: q {:?}, keys {:?} ({s} in use), values {:?}, {} lengths",
                ql.shape(),
                kl.shape(),
                vl.shape(),
                self.lengths.len()
            );
        }
        let (rep, prefix, width) = (h / kvh, s - t, h * d);
        let mut out: Vec<f32> = Vec::with_capacity(b * t * width);
        let at = SharedOut(out.as_mut_ptr());
        (0..b * kvh).into_par_iter().for_each(|task| {
            let (bi, g) = (task / kvh, task % kvh);
            let (len, start) = (self.lengths[bi].min(t), self.starts[bi]);
            let keys = &k[task * cap * d..][..s * d];
            let values = &v[task * cap * d..][..s * d];
            let mut scores = vec![0f32; BLOCK.min(t) * s];
            for head in g * rep..(g + 1) * rep {
                let queries = &q[(bi * h + head) * t * d..(bi * h + head + 1) * t * d];
                for i0 in (0..t).step_by(BLOCK) {
                    let rows = BLOCK.min(t - i0);
                    // Keys any query of the block may see: padding rows see those of the last real one.
                    let n = prefix + (i0 + rows).min(len.max(1));
                    let block = &mut scores[..rows * n];
                    // SAFETY: queries holds rows i0..i0 + rows of d floats, keys n ≤ s rows of d
                    // floats, and block rows × n floats; beta = 0 reads nothing of block.
                    unsafe {
                        blas.sgemm_raw(
                            (false, true),
                            (rows, n, d),
                            self.scale,
                            (queries[i0 * d..].as_ptr(), d),
                            (keys.as_ptr(), d),
                            0.0,
                            (block.as_mut_ptr(), n),
                        )
                    };
                    for (r, row) in block.chunks_mut(n).enumerate() {
                        let end = prefix + (i0 + r + 1).min(len);
                        let start = start.min(end);
                        softmax_in_place(&mut row[start..end]);
                        row[..start].fill(0.0);
                        row[end..].fill(0.0);
                    }
                    // SAFETY: out has b · t · width floats of capacity; this block writes rows
                    // i0..i0 + rows of batch row bi at head's d columns, which no other (task,
                    // head, block) writes; values holds n ≤ s rows of d floats.
                    unsafe {
                        let c = at.at((bi * t + i0) * width + head * d);
                        blas.sgemm_raw((false, false), (rows, d, n), 1.0, (block.as_ptr(), n), (values.as_ptr(), d), 0.0, (c, width))
                    };
                }
            }
        });
        // SAFETY: the tasks above wrote every (bi, i, head, j) element: each (bi, head) pair is
        // one task's, and its blocks cover every query row i and all d columns.
        unsafe { out.set_len(b * t * width) };
        Ok((CpuStorage::F32(out), Shape::from((b, t, width))))
    }
}

/// Softmax of `row` in place (already scaled); an empty row stays empty (a query with no key
/// to see, a left pad, outputs zeros).
fn softmax_in_place(row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    // Two loops: the first vectorises; a running sum would serialise it.
    row.iter_mut().for_each(|x| *x = fast_exp(*x - max));
    let inv = 1.0 / row.iter().sum::<f32>();
    row.iter_mut().for_each(|x| *x *= inv);
}

/// True when [`inference_attention`] can run `q`: where [`super::batched_matmul`] runs on the BLAS.
pub fn inference_attention_applies(q: &Tensor) -> bool {
    super::batched_matmul_applies(q)
}

/// Causal attention with a prefix and right padding, (b, t, heads · d), recorded without a
/// backward (scoring and generation only): q (b, heads, t, d), keys and values
/// (b, kv_heads, prefix + t, d), `lengths[b]` real tokens per row. See the module doc.
pub fn inference_attention(q: &Tensor, keys: &Tensor, values: &Tensor, lengths: &[usize], scale: f64) -> Result<Tensor> {
    let b = lengths.len();
    let op = InferenceAttention {
        lengths: lengths.to_vec(),
        starts: vec![0; b],
        keys: keys.dim(2)?,
        kv_heads: keys.dim(1)?,
        scale: scale as f32,
    };
    q.contiguous()?.apply_op3_no_bwd(&keys.contiguous()?, &values.contiguous()?, &op)
}

/// Attention of a generation step, (b, t, heads · d): q (b, heads, t, d) for the last `t` of the
/// first `used` positions of the caches `keys` and `values` (b, kv_heads, capacity, d); row b's
/// queries see keys from `starts[b]` (its left padding ends there) up to themselves.
pub fn inference_attention_cached(q: &Tensor, keys: &Tensor, values: &Tensor, used: usize, starts: &[usize], scale: f64) -> Result<Tensor> {
    let (b, t) = (q.dim(0)?, q.dim(2)?);
    let op = InferenceAttention { lengths: vec![t; b], starts: starts.to_vec(), keys: used, kv_heads: keys.dim(1)?, scale: scale as f32 };
    q.contiguous()?.apply_op3_no_bwd(keys, values, &op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Equal to the training path's batched matmuls and masked softmax, with a prefix, ragged
    /// lengths, several query blocks and grouped KV heads.
    #[test]
    fn matches_the_training_path() -> Result<()> {
        if !crate::ops::blas::single_threaded_for_tests() {
            return Ok(());
        }
        let dev = Device::Cpu;
        let (b, h, kvh, d) = (3, 6, 2, 16);
        for (prefix, t, lengths) in [(0, 150, vec![150, 70, 1]), (5, 130, vec![130, 64, 65]), (7, 3, vec![1, 2, 3])] {
            let s = prefix + t;
            let q = Tensor::randn(0f32, 1.0, (b, h, t, d), &dev)?;
            let keys = Tensor::randn(0f32, 1.0, (b, kvh, s, d), &dev)?;
            let values = Tensor::randn(0f32, 1.0, (b, kvh, s, d), &dev)?;
            let scale = 0.25;
            let ours = inference_attention(&q, &keys, &values, &lengths, scale)?;
            let rep = h / kvh;
            let scores = crate::ops::batched_matmul(&q.reshape((b, kvh, rep * t, d))?, &keys, false, true)?.reshape((b, h, t, s))?;
            let probs = crate::ops::fused::masked_softmax(&scores, &lengths, scale)?;
            let attn = crate::ops::batched_matmul(&probs.reshape((b, kvh, rep * t, s))?, &values, false, false)?;
            let theirs = attn.reshape((b, h, t, d))?.transpose(1, 2)?.reshape((b, t, h * d))?;
            // Rows at or past a row's length are padding: the layer ignores them, but they must
            // be finite and are computed the same way.
            let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "prefix {prefix}, t {t}: differs by {diff}");
        }
        Ok(())
    }

    /// A generation step on a cache with spare capacity and left-padded rows equals the biased
    /// softmax path on the used keys, for every query that sees a key (a pad query outputs 0).
    #[test]
    fn cached_matches_the_biased_path() -> Result<()> {
        if !crate::ops::blas::single_threaded_for_tests() {
            return Ok(());
        }
        let dev = Device::Cpu;
        let (b, h, kvh, d, cap) = (2, 4, 2, 8, 40);
        let starts = [0usize, 5];
        // A prefill of 9 positions, then one decoding step after 20.
        for (cached, t) in [(0, 9), (20, 1)] {
            let used = cached + t;
            let q = Tensor::randn(0f32, 1.0, (b, h, t, d), &dev)?;
            let keys = Tensor::randn(0f32, 1.0, (b, kvh, cap, d), &dev)?;
            let values = Tensor::randn(0f32, 1.0, (b, kvh, cap, d), &dev)?;
            let ours = inference_attention_cached(&q, &keys, &values, used, &starts, 0.3)?;
            let (ku, vu) = (keys.narrow(2, 0, used)?.contiguous()?, values.narrow(2, 0, used)?.contiguous()?);
            let mut bias = vec![-1e30f32; b * t * used];
            for (row, &start) in starts.iter().enumerate() {
                for i in 0..t {
                    for key in start..(cached + i + 1) {
                        bias[(row * t + i) * used + key] = 0.0;
                    }
                }
            }
            let bias = Tensor::from_vec(bias, (b, 1, t, used), &dev)?;
            let rep = h / kvh;
            let scores = crate::ops::batched_matmul(&q.reshape((b, kvh, rep * t, d))?, &ku, false, true)?.reshape((b, h, t, used))?;
            let probs = crate::ops::fused::biased_softmax(&scores, &bias, 0.3)?;
            let attn = crate::ops::batched_matmul(&probs.reshape((b, kvh, rep * t, used))?, &vu, false, false)?;
            let theirs = attn.reshape((b, h, t, d))?.transpose(1, 2)?.reshape((b, t, h * d))?;
            for (row, &start) in starts.iter().enumerate() {
                for i in 0..t {
                    let (o, r) = (ours.get(row)?.get(i)?, theirs.get(row)?.get(i)?);
                    let expected = if cached + i + 1 > start { r } else { r.zeros_like()? };
                    let diff = (o - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(diff < 1e-4, "cached {cached}, row {row}, query {i}: differs by {diff}");
                }
            }
        }
        Ok(())
    }
}
