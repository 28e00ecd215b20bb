//! Greedy generation on the KV cache, batched over prompts of any lengths.
//!
//! A decoding step reads every weight of the model once for however many rows it carries, so a
//! step's cost hardly grows with its rows: batching prompts is what makes generation fast on a
//! CPU. Prompts are sorted by length and cut into groups of up to `max_rows`; each group is
//! left-padded to its longest prompt, so every row's next token sits in the same column and the
//! group shares one position per step. An additive bias hides the padding from every query.
//! Shifting a row's positions by its padding leaves its attention unchanged (rotary embeddings
//! depend on position differences only), so a row decodes as it would alone, up to rounding.

use candle_core::{D, Device, Result, Tensor};

use super::Llama;

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
    /// the group's longest, one batched step per token on the group's KV cache (a row that has
    /// stopped keeps stepping until its group is done; what it makes after its stop is dropped).
    /// Outputs in input order.
    pub fn generate_greedy_batch(&self, prompts: &[Vec<u32>], max_new: usize, stop: &[u32], max_rows: usize) -> Result<Vec<Vec<u32>>> {
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
        let mut by_len: Vec<usize> = (0..prompts.len()).filter(|&i| !prompts[i].is_empty()).collect();
        by_len.sort_by_key(|&i| prompts[i].len());
        for group in by_len.chunks(max_rows.max(1)) {
            let longest = group.iter().map(|&i| prompts[i].len()).max().unwrap_or(0);
            let pads: Vec<usize> = group.iter().map(|&i| longest - prompts[i].len()).collect();
            // Pad tokens are never seen by a real query; any id will do.
            let ids: Vec<u32> =
                group.iter().zip(&pads).flat_map(|(&i, &pad)| std::iter::repeat_n(0, pad).chain(prompts[i].iter().copied())).collect();
            let mut input = Tensor::from_vec(ids, (group.len(), longest), self.device())?;
            let mut cache: Vec<(Tensor, Tensor)> = Vec::new();
            let mut cached = 0;
            let mut done = vec![false; group.len()];
            for _ in 0..max_new {
                let t = input.dim(1)?;
                if cached + t >= self.max_positions() {
                    break;
                }
                let bias = left_pad_bias(&pads, cached, t, self.device())?;
                let hidden = self.forward_biased(&input, &bias, &mut cache, cached)?;
                let next: Vec<u32> = self.logits(&hidden.narrow(1, t - 1, 1)?.squeeze(1)?)?.argmax(D::Minus1)?.to_vec1()?;
                for (row, (&i, &tok)) in group.iter().zip(&next).enumerate() {
                    if done[row] || stop.contains(&tok) {
                        done[row] = true;
                    } else {
                        out[i].push(tok);
                    }
                }
                if done.iter().all(|&d| d) {
                    break;
                }
                cached += t;
                input = Tensor::from_vec(next, (group.len(), 1), self.device())?;
            }
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
