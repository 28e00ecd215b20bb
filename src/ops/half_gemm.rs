//! The f16 CPU path of the frozen projections: f16 weights, f32 activations, MKL's hgemm.
//!
//! On CPUs with AVX512-FP16, MKL's hgemm runs ~2.5× its sgemm (measured on the model's shapes:
//! ~550 vs ~250 GFLOP/s on 2 cores), and f16 weights halve the frozen base's memory. Everything
//! else (norms, attention, LoRA factors, optimizer) stays f32.
//!
//! hgemm reads f16 operands and writes an f16 result, so activations are converted on the way in
//! and out, each row scaled by its own power of two: a row of y = x·Wᵀ (or of dx = dy·W) depends
//! only on the same row of x (dy), so scaling a row and unscaling its result is exact apart from
//! rounding. The scale puts the row's largest magnitude at `target` = 2^⌊log2(2^14 / L1)⌋, where
//! L1 is the largest row (forward) or column (backward) L1 norm of W: every partial sum of the
//! product is then bounded by 2^14 < 65,504 in any summation order, so nothing overflows, and
//! gradients of 1e-8 keep f16's full 11-bit precision instead of flushing to zero — per-row
//! loss scaling, with no skipped steps. The measured error is ~3e-3 relative RMS per product
//! (f16 accumulation); the accuracy cost on a real training run is in the speed issue's notes.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::blas::{Blas, blas};

/// The largest row and column L1 norms of a frozen weight (out, in): the overflow bounds of its
/// forward (x·Wᵀ) and backward (dy·W) products.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HalfBounds {
    /// max over output rows n of Σ_k |W[n, k]|.
    pub row_l1: f32,
    /// max over input columns k of Σ_n |W[n, k]|.
    pub col_l1: f32,
}

impl HalfBounds {
    /// Bounds of W (rows × cols), row-major.
    pub fn of(w: &[f16], rows: usize, cols: usize) -> Self {
        let mut col = vec![0f32; cols];
        let mut row_l1 = 0f32;
        for r in w.chunks_exact(cols.max(1)).take(rows) {
            let mut s = 0f32;
            for (c, v) in col.iter_mut().zip(r) {
                let a = v.to_f32().abs();
                s += a;
                *c += a;
            }
            row_l1 = row_l1.max(s);
        }
        Self { row_l1, col_l1: col.into_iter().fold(0f32, f32::max) }
    }
}

/// True when MKL's hgemm is loaded: the f16 CPU path can run.
pub fn half_gemm_available() -> bool {
    blas().is_some_and(Blas::has_hgemm)
}

/// The largest power of two ≤ v (v positive and normal).
fn pow2_floor(v: f32) -> f32 {
    f32::from_bits(v.to_bits() & 0xff80_0000)
}

/// Largest row magnitude the f16 operand may reach for a weight whose relevant L1 norm is `l1`.
fn target_for(l1: f32) -> f32 {
    if !(l1.is_finite() && l1 > 0.0) {
        return 1.0;
    }
    pow2_floor((16_384.0 / l1).clamp(2f32.powi(-60), 2f32.powi(60)))
}

/// Rows per rayon task for conversions of rows of `cols` values.
fn rows_per_task(cols: usize) -> usize {
    (32_768 / cols.max(1)).max(1)
}

thread_local! {
    /// f16 operand and result buffers, reused across calls: fresh multi-MB buffers per GEMM cost
    /// page faults and zeroing comparable to the hgemm itself.
    static SCRATCH: std::cell::RefCell<(Vec<f16>, Vec<f16>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Run `f` on scratch buffers of `a_len` and `c_len` halves (contents unspecified).
fn with_scratch<R>(a_len: usize, c_len: usize, f: impl FnOnce(&mut [f16], &mut [f16]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (a, c) = &mut *bufs;
            for (buf, len) in [(&mut *a, a_len), (&mut *c, c_len)] {
                if buf.len() < len {
                    buf.resize(len, f16::ZERO);
                }
            }
            f(&mut a[..a_len], &mut c[..c_len])
        }
        // Re-entered from inside `f` (cannot happen today): fall back to fresh buffers.
        Err(_) => f(&mut vec![f16::ZERO; a_len], &mut vec![f16::ZERO; c_len]),
    })
}

/// x (rows × cols) into f16 `h`, each row scaled by a power of two that brings its largest
/// magnitude to at most `target`; returns each row's scale.
fn to_scaled_half(x: &[f32], cols: usize, target: f32, h: &mut [f16]) -> Vec<f32> {
    let rows = x.len() / cols.max(1);
    let mut scales = vec![1f32; rows];
    let per = rows_per_task(cols);
    h.par_chunks_mut(per * cols).zip(scales.par_chunks_mut(per)).zip(x.par_chunks(per * cols)).for_each(|((h, s), x)| {
        let mut buf = [0f32; 256];
        for ((hr, xr), scale) in h.chunks_mut(cols).zip(x.chunks(cols)).zip(s.iter_mut()) {
            let max = xr.iter().fold(0f32, |m, v| m.max(v.abs()));
            // A zero row needs no scale; inf/NaN rows keep scale 1 so they propagate.
            *scale = if max > 0.0 && max.is_finite() { pow2_floor((target / max).clamp(2f32.powi(-100), 2f32.powi(100))) } else { 1.0 };
            for (hc, xc) in hr.chunks_mut(buf.len()).zip(xr.chunks(buf.len())) {
                let b = &mut buf[..xc.len()];
                b.iter_mut().zip(xc).for_each(|(b, v)| *b = v * *scale);
                hc.convert_from_f32_slice(b);
            }
        }
    });
    scales
}

/// f16 rows (rows × cols) back to f32, each row divided by its scale: one pass over the output,
/// converted through a small stack buffer into an uninitialised vector.
fn from_scaled_half(h: &[f16], cols: usize, scales: &[f32]) -> Vec<f32> {
    let mut y: Vec<f32> = Vec::with_capacity(h.len());
    let per = rows_per_task(cols);
    let out = &mut y.spare_capacity_mut()[..h.len()];
    out.par_chunks_mut(per * cols).zip(h.par_chunks(per * cols)).zip(scales.par_chunks(per)).for_each(|((y, h), s)| {
        let mut buf = [0f32; 256];
        for ((yr, hr), scale) in y.chunks_mut(cols).zip(h.chunks(cols)).zip(s) {
            let inv = 1.0 / scale;
            for (yc, hc) in yr.chunks_mut(buf.len()).zip(hr.chunks(buf.len())) {
                let b = &mut buf[..hc.len()];
                hc.convert_to_f32_slice(b);
                yc.iter_mut().zip(b.iter()).for_each(|(o, v)| {
                    o.write(v * inv);
                });
            }
        }
    });
    // SAFETY: the loop above wrote every element (the chunks cover all of `out`).
    unsafe { y.set_len(h.len()) };
    y
}

/// y (m, n) = x (m, k) · Wᵀ for f16 W (n, k); f32 in and out.
pub fn x_wt_half(blas: &Blas, x: &[f32], m: usize, k: usize, w: &[f16], n: usize, bounds: HalfBounds) -> Vec<f32> {
    with_scratch(m * k, m * n, |xh, yh| {
        let scales = to_scaled_half(x, k, target_for(bounds.row_l1), xh);
        blas.hgemm(xh, (m, k), false, w, (n, k), true, yh);
        from_scaled_half(yh, n, &scales)
    })
}

/// dx (m, k) = dy (m, n) · W for f16 W (n, k); f32 in and out.
pub fn dy_w_half(blas: &Blas, dy: &[f32], m: usize, n: usize, w: &[f16], k: usize, bounds: HalfBounds) -> Vec<f32> {
    with_scratch(m * n, m * k, |dyh, dxh| {
        let scales = to_scaled_half(dy, n, target_for(bounds.col_l1), dyh);
        blas.hgemm(dyh, (m, n), false, w, (n, k), false, dxh);
        from_scaled_half(dxh, k, &scales)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    }

    fn rel_rms(a: &[f32], b: &[f32]) -> f32 {
        let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        let den: f32 = b.iter().map(|y| y * y).sum();
        (num / den).sqrt()
    }

    #[test]
    fn bounds_and_scales() {
        let w: Vec<f16> = [1.0, -2.0, 3.0, 0.5, 0.5, -0.5].iter().map(|&v| f16::from_f32(v)).collect();
        assert_eq!(HalfBounds::of(&w, 2, 3), HalfBounds { row_l1: 6.0, col_l1: 3.5 });
        assert_eq!(target_for(6.0), 2048.0);
        let mut h = vec![f16::ZERO; 6];
        let s = to_scaled_half(&[3.0, -1.0, 0.0, 0.0, 1e-7, 2e-7], 3, 16.0, &mut h);
        assert_eq!(s[0], 4.0);
        assert_eq!(h[0].to_f32(), 12.0);
        assert_eq!(s[1], 2f32.powi(26));
        let back = from_scaled_half(&h, 3, &s);
        assert_eq!(back[0], 3.0);
        assert!((back[5] - 2e-7).abs() < 2e-10, "tiny rows keep their precision: {}", back[5]);
    }

    /// Against f32 sgemm on odd sizes, with rows of wildly different magnitudes (gradients of
    /// 1e-9 and activations of 1e3 in one matrix) and no overflow. Needs MKL's hgemm
    /// (`WICK_REQUIRE_BLAS=mkl` makes its absence a failure).
    #[test]
    fn matches_sgemm_in_both_directions() {
        if !half_gemm_available() {
            assert!(!super::super::blas::required_by_env().1, "WICK_REQUIRE_BLAS=mkl but hgemm is not loaded");
            return;
        }
        let blas = blas().unwrap();
        let (m, k, n) = (37, 301, 83);
        let mut x = lcg(1, m * k, 2.0);
        for (i, row) in x.chunks_mut(k).enumerate() {
            let mag = [1e-9f32, 1e3, 1.0][i % 3];
            row.iter_mut().for_each(|v| *v *= mag);
        }
        let w32: Vec<f32> = lcg(2, n * k, 0.2);
        let w: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
        let w_rounded: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let bounds = HalfBounds::of(&w, n, k);
        let ours = x_wt_half(blas, &x, m, k, &w, n, bounds);
        let mut reference = vec![0f32; m * n];
        blas.gemm(&x, (m, k), false, &w_rounded, (n, k), true, 1.0, 0.0, &mut reference);
        for (r, (o, e)) in ours.chunks(n).zip(reference.chunks(n)).enumerate() {
            assert!(rel_rms(o, e) < 1e-2, "forward row {r}: relative error {}", rel_rms(o, e));
        }
        let dy: Vec<f32> = x.iter().take(m * n).copied().collect();
        let ours = dy_w_half(blas, &dy, m, n, &w, k, bounds);
        let mut reference = vec![0f32; m * k];
        blas.gemm(&dy, (m, n), false, &w_rounded, (n, k), false, 1.0, 0.0, &mut reference);
        for (r, (o, e)) in ours.chunks(k).zip(reference.chunks(k)).enumerate() {
            assert!(rel_rms(o, e) < 1e-2, "backward row {r}: relative error {}", rel_rms(o, e));
        }
    }
}
