//! Greedy generation on the KV cache, batched over prompts of any lengths.
//!
//! A decoding step reads every weight of the model once for however many rows it carries, so a
//! step's cost hardly grows with its rows: batching prompts is what makes generation fast on a
//! CPU. Prompts are sorted by length and cut into groups of up to `max_rows`; each group is
//! left-padded to its longest prompt, so every row's next token sits in the same column and the
//! group shares one position per step. Each row's queries see keys only from its first real
//! token on. Shifting a row's positions by its padding leaves its attention unchanged (rotary
//! embeddings depend on position differences only), so a row decodes as it would alone, up to
//! rounding.
//!
//! On the CPU in f32 the keys and values go into a cache preallocated for the whole group, the
//! attention runs as one op ([`crate::ops::inference_attention_cached`]), and finished rows leave
//! the batch. Elsewhere each step joins the cache anew and an additive bias hides the padding.

use candle_core::{D, Device, Result, Tensor};

use super::Llama;

/// A decoding group's output per row: the tokens made, and the final-normed hidden state after
/// its tail (none without a tail).
type Decoded = (Vec<Vec<u32>>, Vec<Option<Tensor>>);

/// Bias value of a masked key: finite, so a query with no visible key (a pad row) stays finite.
const MASKED: f32 = -1e30;

/// The additive attention bias (rows, 1, t, cached + t) of a pass over `t` new positions after
/// `cached` ones, for rows left-padded by `pads[row]`: a query sees the keys from its row's first
/// real token up to itself.
fn left_pad_bias(pads: &[usize], cached: usize, t: usize, device: &Device) -> Result<Tensor> {
    let s = cached + t;
    let mut bias = vec![MASKED; pads.len() * t * s];
    for (row, &pad) in pads.iter().enumerate() {
        for i in 0..t {
            let visible = pad.min(cached + i + 1)..cached + i + 1;
            bias[(row * t + i) * s..][visible].fill(0.0);
        }
    }
    Tensor::from_vec(bias, (pads.len(), 1, t, s), device)
}

impl Llama {
    /// Greedy decoding of up to `max_new` tokens after `prompt`, one token per step on the KV
    /// cache; stops before any token in `stop` (which is not returned).
    pub fn generate_greedy(&self, prompt: &[u32], max_new: usize, stop: &[u32]) -> Result<Vec<u32>> {
        Ok(self.generate_greedy_batch(&[prompt.to_vec()], max_new, stop, 1)?.swap_remove(0))
    }

    /// Greedy decoding of up to `max_new` tokens after each prompt, stopping before any token in
    /// `stop`: prompts sorted by length decode in groups of at most `max_rows`, left-padded to
    /// the group's longest, one batched step per token on the group's KV cache. Outputs in
    /// input order.
    pub fn generate_greedy_batch(&self, prompts: &[Vec<u32>], max_new: usize, stop: &[u32], max_rows: usize) -> Result<Vec<Vec<u32>>> {
        Ok(self.decode_groups(prompts, max_new, stop, None, max_rows)?.0)
    }

    /// [`Llama::generate_greedy_batch`], then each prompt's `tail` fed after what it made (in
    /// place of its stop token): returns the tokens made and the final-normed hidden state
    /// (n, hidden) after each prompt's last tail token, so the answer that follows the tail is
    /// read off the generation's own cache instead of a second pass over prompt and reasoning.
    /// None where that path does not apply (no fused attention for the device and dtype, an
    /// empty tail, or a prompt that could run past the rotary tables).
    pub fn generate_then_read(
        &self,
        prompts: &[Vec<u32>],
        max_new: usize,
        stop: &[u32],
        tail: &[u32],
        max_rows: usize,
    ) -> Result<Option<(Vec<Vec<u32>>, Tensor)>> {
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if !self.cached_decoding_applies()?
            || tail.is_empty()
            || max_new == 0
            || prompts.iter().any(Vec::is_empty)
            || longest + max_new + tail.len() >= self.max_positions()
        {
            return Ok(None);
        }
        let (made, hidden) = self.decode_groups(prompts, max_new, stop, Some(tail), max_rows)?;
        let hidden: Vec<Tensor> = hidden
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| candle_core::Error::Msg("generation left a prompt without its answer state".into()))?;
        Ok(Some((made, Tensor::stack(&hidden, 0)?)))
    }

    /// True when generation runs on a preallocated cache with the fused attention
    /// ([`Llama::decode_cached`]) for this model's device and dtype.
    fn cached_decoding_applies(&self) -> Result<bool> {
        Ok(crate::ops::inference_attention_applies(&Tensor::zeros(1, self.projection_dtype(), self.device())?))
    }

    /// Every prompt decoded in groups of at most `max_rows` (sorted by length, left-padded),
    /// outputs in input order: [`Llama::decode_cached`] where it applies (with the `tail`, if
    /// any), else [`Llama::decode_biased`]. An empty prompt makes nothing.
    fn decode_groups(&self, prompts: &[Vec<u32>], max_new: usize, stop: &[u32], tail: Option<&[u32]>, max_rows: usize) -> Result<Decoded> {
        let mut made: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
        let mut states: Vec<Option<Tensor>> = vec![None; prompts.len()];
        let mut by_len: Vec<usize> = (0..prompts.len()).filter(|&i| !prompts[i].is_empty()).collect();
        by_len.sort_by_key(|&i| prompts[i].len());
        let cached = self.cached_decoding_applies()?;
        for group in by_len.chunks(max_rows.max(1)) {
            let (input, pads) = self.left_padded(prompts, group)?;
            let (tokens, hidden) = if cached {
                self.decode_cached(input, pads, max_new, stop, tail)?
            } else {
                (self.decode_biased(input, &pads, max_new, stop)?, vec![None; group.len()])
            };
            for ((&i, tok), state) in group.iter().zip(tokens).zip(hidden) {
                made[i] = tok;
                states[i] = state;
            }
        }
        Ok((made, states))
    }

    /// The prompts `group` (indices into `prompts`) as one batch (rows, longest) left-padded to
    /// the longest, and each row's padding.
    fn left_padded(&self, prompts: &[Vec<u32>], group: &[usize]) -> Result<(Tensor, Vec<usize>)> {
        let longest = group.iter().map(|&i| prompts[i].len()).max().unwrap_or(0);
        let pads: Vec<usize> = group.iter().map(|&i| longest - prompts[i].len()).collect();
        // Pad tokens are never seen by a real query; any id will do.
        let ids: Vec<u32> =
            group.iter().zip(&pads).flat_map(|(&i, &pad)| std::iter::repeat_n(0, pad).chain(prompts[i].iter().copied())).collect();
        Ok((Tensor::from_vec(ids, (group.len(), longest), self.device())?, pads))
    }

    /// One group's greedy decoding on a preallocated cache ([`Llama::forward_cached`]); a row
    /// leaves the batch once it is finished (in bulk, when a quarter of the rows are, since each
    /// removal copies the cache), so finished rows stop costing steps. With a `tail`, a row that
    /// stops (or reaches `max_new`) is fed the tail instead of its stop token, and finishes with
    /// its final-normed hidden state after the tail's last token (returned per row; none without).
    fn decode_cached(
        &self,
        mut input: Tensor,
        mut starts: Vec<usize>,
        max_new: usize,
        stop: &[u32],
        tail: Option<&[u32]>,
    ) -> Result<Decoded> {
        let rows = starts.len();
        if max_new == 0 {
            return Ok((vec![Vec::new(); rows], vec![None; rows]));
        }
        let extra = tail.map_or(0, <[u32]>::len);
        let capacity = (input.dim(1)? + max_new + extra).min(self.max_positions());
        let mut cache = self.kv_cache(rows, capacity)?;
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); rows];
        let mut states: Vec<Option<Tensor>> = vec![None; rows];
        // Group row of each batch row; how many tail tokens it has been fed (None: generating);
        // whether it is finished.
        let mut active: Vec<usize> = (0..rows).collect();
        let mut fed: Vec<Option<usize>> = vec![None; rows];
        let mut done = vec![false; rows];
        let mut cached = 0;
        loop {
            let t = input.dim(1)?;
            if cached + t >= self.max_positions() {
                break;
            }
            let hidden = self.forward_cached(&input, &starts, &cache, cached)?.narrow(1, t - 1, 1)?.squeeze(1)?;
            let argmax: Vec<u32> = self.logits(&hidden)?.argmax(D::Minus1)?.to_vec1()?;
            let mut next = argmax.clone();
            for row in 0..argmax.len() {
                let g = active[row];
                if done[row] {
                    continue;
                }
                match (fed[row], tail) {
                    (Some(n), Some(tail)) if n < tail.len() => {
                        next[row] = tail[n];
                        fed[row] = Some(n + 1);
                    }
                    // The step's input was the tail's last token: this is the answer's state.
                    (Some(_), _) => {
                        states[g] = Some(hidden.get(row)?);
                        done[row] = true;
                    }
                    (None, tail) => {
                        let stops = stop.contains(&argmax[row]);
                        if !stops {
                            out[g].push(argmax[row]);
                        }
                        match (tail, stops, out[g].len() >= max_new) {
                            // The stop token is not fed: the tail takes its place.
                            (Some(tail), true, _) => {
                                next[row] = tail[0];
                                fed[row] = Some(1);
                            }
                            // The last token made is fed first, then the tail.
                            (Some(_), false, true) => fed[row] = Some(0),
                            (None, true, _) | (None, false, true) => done[row] = true,
                            (_, false, false) => {}
                        }
                    }
                }
            }
            let finished = done.iter().filter(|&&d| d).count();
            if finished == done.len() {
                break;
            }
            cached += t;
            if finished * 4 >= done.len() {
                let keep: Vec<usize> = (0..done.len()).filter(|&r| !done[r]).collect();
                let index = Tensor::from_vec(keep.iter().map(|&r| r as u32).collect::<Vec<_>>(), keep.len(), self.device())?;
                cache = cache.iter().map(|(k, v)| Ok((k.index_select(&index, 0)?, v.index_select(&index, 0)?))).collect::<Result<_>>()?;
                active = keep.iter().map(|&r| active[r]).collect();
                starts = keep.iter().map(|&r| starts[r]).collect();
                fed = keep.iter().map(|&r| fed[r]).collect();
                next = keep.iter().map(|&r| next[r]).collect();
                done = vec![false; keep.len()];
            }
            input = Tensor::from_vec(next, (active.len(), 1), self.device())?;
        }
        Ok((out, states))
    }

    /// One group's greedy decoding through [`Llama::forward_biased`] (a row that has stopped
    /// keeps stepping until its group is done; what it makes after its stop is dropped): the
    /// path where the fused attention does not apply.
    fn decode_biased(&self, mut input: Tensor, pads: &[usize], max_new: usize, stop: &[u32]) -> Result<Vec<Vec<u32>>> {
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); pads.len()];
        let mut cache: Vec<(Tensor, Tensor)> = Vec::new();
        let mut cached = 0;
        let mut done = vec![false; pads.len()];
        for _ in 0..max_new {
            let t = input.dim(1)?;
            if cached + t >= self.max_positions() {
                break;
            }
            let bias = left_pad_bias(pads, cached, t, self.device())?;
            let hidden = self.forward_biased(&input, &bias, &mut cache, cached)?;
            let next: Vec<u32> = self.logits(&hidden.narrow(1, t - 1, 1)?.squeeze(1)?)?.argmax(D::Minus1)?.to_vec1()?;
            for (row, &tok) in next.iter().enumerate() {
                if done[row] || stop.contains(&tok) {
                    done[row] = true;
                } else {
                    out[row].push(tok);
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            cached += t;
            input = Tensor::from_vec(next, (pads.len(), 1), self.device())?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_sees_its_own_rows_real_tokens_up_to_itself() -> Result<()> {
        // Prefill of 3 positions, rows padded by 0 and 2: row 1's pads (keys 0, 1) are hidden,
        // its pad queries see nothing, and causality holds.
        let bias = left_pad_bias(&[0, 2], 0, 3, &Device::Cpu)?;
        let visible = |row: usize| -> Result<Vec<Vec<u8>>> {
            Ok(bias.get(row)?.squeeze(0)?.to_vec2::<f32>()?.iter().map(|q| q.iter().map(|&b| u8::from(b == 0.0)).collect()).collect())
        };
        assert_eq!(visible(0)?, vec![vec![1, 0, 0], vec![1, 1, 0], vec![1, 1, 1]]);
        assert_eq!(visible(1)?, vec![vec![0, 0, 0], vec![0, 0, 0], vec![0, 0, 1]]);
        // A decoding step after 3 cached positions: every key but the row's pads.
        let step = left_pad_bias(&[0, 2], 3, 1, &Device::Cpu)?;
        let rows: Vec<Vec<f32>> = step.flatten_from(1)?.to_vec2()?;
        assert_eq!(rows[0].iter().map(|&b| u8::from(b == 0.0)).collect::<Vec<_>>(), vec![1, 1, 1, 1]);
        assert_eq!(rows[1].iter().map(|&b| u8::from(b == 0.0)).collect::<Vec<_>>(), vec![0, 0, 1, 1]);
        Ok(())
    }
}
