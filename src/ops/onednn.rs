//! The bf16 CPU path of the frozen projections: bf16 weights, f32 activations, oneDNN's
//! `dnnl_gemm_bf16bf16f32` (f32 accumulation, f32 output), loaded at run time.
//!
//! On CPUs with AVX512-BF16 (Zen 4, Zen 5, Cooper Lake and later Xeons) or AMX-BF16, that GEMM
//! runs about twice oneDNN's or MKL's sgemm on the model's layer shapes, and bf16 weights halve
//! the frozen base's memory. bf16 keeps f32's exponent range, so unlike the f16 path
//! (`half_gemm`) activations need no scaling: each product's inputs are rounded to bf16 (8 bits of
//! mantissa, ~2e-3 relative RMS per product) and everything else (norms, attention, LoRA
//! factors, optimizer) stays f32. The library is Debian's `libdnnl2` (`scripts/install-onednn`),
//! opened with dlopen like the BLAS, so a machine without it builds and runs wick on f32.
//! `WICK_ONEDNN=off` never loads it; `WICK_CPU_BF16=off` makes wick act as on a CPU without
//! bf16 instructions (the dispatch's fallback, tested).

use std::ffi::c_char;
use std::sync::OnceLock;

use half::bf16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// dnnl_gemm_bf16bf16f32(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc): row-major
/// C (M × N) = alpha · op(A) · op(B) + beta · C, A and B bf16 (as u16 bits), C f32; returns a
/// dnnl_status_t (0: success).
type GemmBf16 = unsafe extern "C" fn(c_char, c_char, i64, i64, i64, f32, *const u16, i64, *const u16, i64, f32, *mut f32, i64) -> i32;
/// libgomp's omp_set_num_threads: the calling thread's OpenMP team size.
type OmpSetNumThreads = unsafe extern "C" fn(i32);

/// Rows per block below which a GEMM is not split across threads.
const MIN_SPLIT_ROWS: usize = 32;

/// The loaded library.
pub struct OneDnn {
    _lib: libloading::Library,
    gemm: GemmBf16,
    omp_set_num_threads: Option<OmpSetNumThreads>,
    /// The library file that was loaded.
    pub path: String,
}

static ONEDNN: OnceLock<Option<OneDnn>> = OnceLock::new();

thread_local! {
    /// Whether this thread's OpenMP team is set to one thread (wick splits rows over rayon).
    static SINGLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True when the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16), unless
/// `WICK_CPU_BF16=off` says to act as if it had not.
pub fn cpu_has_bf16() -> bool {
    if std::env::var("WICK_CPU_BF16").is_ok_and(|v| v.trim() == "off") {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // AMX-BF16 is CPUID leaf 7, EDX bit 22 (its std detection is unstable); oneDNN asks the
        // kernel for the tile state itself.
        // SAFETY: cpuid leaf 7 exists on every CPU with AVX-512 or AMX (and reads zero otherwise).
        #[allow(unused_unsafe)]
        let amx_bf16 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx & (1 << 22) != 0;
        std::arch::is_x86_feature_detected!("avx512bf16") || amx_bf16
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// oneDNN, when the CPU has bf16 instructions and the library loads.
pub fn onednn() -> Option<&'static OneDnn> {
    ONEDNN.get_or_init(load).as_ref()
}

/// True when the bf16 CPU path can run: a bf16 CPU and oneDNN loaded.
pub fn bf16_gemm_available() -> bool {
    onednn().is_some()
}

fn load() -> Option<OneDnn> {
    let choice = std::env::var("WICK_ONEDNN").ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    if choice.as_deref() == Some("off") || !cpu_has_bf16() {
        return None;
    }
    let candidates = match &choice {
        Some(path) => vec![path.clone()],
        None => vec!["libdnnl.so.2".to_string(), "libdnnl.so.3".to_string(), "libdnnl.so".to_string()],
    };
    let found = candidates.iter().find_map(|p| open(p));
    if found.is_none()
        && let Some(path) = choice
    {
        tracing::warn!("WICK_ONEDNN={path}: oneDNN did not load; the bf16 path is off");
    }
    found
}

fn open(path: &str) -> Option<OneDnn> {
    // SAFETY: loading oneDNN runs only its initialisers; the symbol types match its C API.
    let lib = unsafe { libloading::Library::new(path) }.ok()?;
    let gemm = unsafe { lib.get::<GemmBf16>(b"dnnl_gemm_bf16bf16f32\0") }.map(|s| *s).ok()?;
    // libgomp is a dependency of Debian's build: the handle's lookup finds it there.
    let omp_set_num_threads = unsafe { lib.get::<OmpSetNumThreads>(b"omp_set_num_threads\0") }.map(|s| *s).ok();
    tracing::info!("wick: bf16 frozen projections use {path} (oneDNN)");
    Some(OneDnn { _lib: lib, gemm, omp_set_num_threads, path: path.to_string() })
}

/// bf16 values as the u16 bits oneDNN reads.
fn bits(w: &[bf16]) -> &[u16] {
    // SAFETY: bf16 is a transparent u16.
    unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<u16>(), w.len()) }
}

impl OneDnn {
    /// One GEMM on this thread: c (m × n) = a (m × k, bf16 bits) · op(w) + beta·c, where w is
    /// stored (n × k) when `wt` (op transposes it) and (k × n) otherwise.
    #[allow(clippy::too_many_arguments)]
    fn gemm_block(&self, a: &[u16], m: usize, k: usize, w: &[u16], wt: bool, n: usize, beta: f32, c: &mut [f32]) {
        assert!(a.len() == m * k && w.len() == n * k && c.len() == m * n, "bf16 gemm: operand sizes");
        if m == 0 || n == 0 {
            return;
        }
        if let Some(set) = self.omp_set_num_threads
            && !SINGLE.with(|s| s.replace(true))
        {
            // SAFETY: sets only this thread's OpenMP team size.
            unsafe { set(1) };
        }
        let ldb = if wt { k } else { n };
        // SAFETY: the sizes were checked above; oneDNN reads a and w and writes c within them.
        let status = unsafe {
            (self.gemm)(
                b'N' as c_char,
                if wt { b'T' } else { b'N' } as c_char,
                m as i64,
                n as i64,
                k as i64,
                1.0,
                a.as_ptr(),
                k as i64,
                w.as_ptr(),
                ldb as i64,
                beta,
                c.as_mut_ptr(),
                n as i64,
            )
        };
        assert_eq!(status, 0, "dnnl_gemm_bf16bf16f32 failed (status {status}) on {m} × {k} · {n}");
    }

    /// c (m × n) = x (m × k, f32, rounded to bf16) · op(w) + beta·c over row blocks on rayon's
    /// threads; each block converts only its own rows.
    #[allow(clippy::too_many_arguments)]
    fn gemm(&self, x: &[f32], m: usize, k: usize, w: &[bf16], wt: bool, n: usize, beta: f32, c: &mut [f32]) {
        let w = bits(w);
        let threads = rayon::current_num_threads().max(1);
        let rows = m.div_ceil(threads).max(MIN_SPLIT_ROWS).min(m.max(1));
        let run = |(x, c): (&[f32], &mut [f32])| {
            let r = x.len() / k.max(1);
            // half rounds to nearest even, as a bf16 cast does.
            let mut a = vec![bf16::ZERO; x.len()];
            a.convert_from_f32_slice(x);
            self.gemm_block(bits(&a), r, k, w, wt, n, beta, c);
        };
        if rows >= m || k == 0 {
            run((x, c));
        } else {
            x.par_chunks(rows * k).zip(c.par_chunks_mut(rows * n)).for_each(run);
        }
    }
}

/// y (m, n) = x (m, k) · Wᵀ for a bf16 W (n, k); f32 in and out.
pub fn x_wt_bf16(dnn: &OneDnn, x: &[f32], m: usize, k: usize, w: &[bf16], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    dnn.gemm(x, m, k, w, true, n, 0.0, &mut y);
    y
}

/// dx (m, k) = dy (m, n) · W for a bf16 W (n, k), added onto `acc` (m × k) when given.
pub fn dy_w_bf16(dnn: &OneDnn, dy: &[f32], m: usize, n: usize, w: &[bf16], k: usize, acc: Option<Vec<f32>>) -> Vec<f32> {
    let (mut dx, beta) = match acc {
        Some(acc) => (acc, 1.0),
        None => (vec![0f32; m * k], 0.0),
    };
    dnn.gemm(dy, m, n, w, false, k, beta, &mut dx);
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        crate::ops::self_check::uniform_values(n, seed).into_iter().map(|v| v * scale).collect()
    }

    /// The f32 product of the bf16-rounded operands, accumulated in f64: what the bf16 GEMM
    /// computes up to f32 summation order.
    fn reference(x: &[f32], m: usize, k: usize, w: &[f32], wt: bool, n: usize) -> Vec<f32> {
        let r = |v: f32| bf16::from_f32(v).to_f32();
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    let wv = if wt { w[j * k + p] } else { w[p * n + j] };
                    s += r(x[i * k + p]) as f64 * r(wv) as f64;
                }
                y[i * n + j] = s as f32;
            }
        }
        y
    }

    /// Odd shapes, both transposes, a row split and an accumulator: within f32 summation noise
    /// of the product of the rounded operands (the rounding itself is the path's only error).
    #[test]
    fn bf16_gemm_matches_the_rounded_f32_product() {
        let Some(dnn) = onednn() else {
            assert!(
                !(cpu_has_bf16() && std::env::var("WICK_REQUIRE_ONEDNN").is_ok()),
                "WICK_REQUIRE_ONEDNN is set and the CPU has bf16, but oneDNN did not load (run scripts/install-onednn)"
            );
            return;
        };
        for &(m, k, n) in &[(1, 7, 5), (37, 53, 29), (130, 64, 96), (257, 33, 3)] {
            let x = values(m as u64, m * k, 2.0);
            let w32 = values(7 + n as u64, n * k, 0.5);
            let w: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
            let y = x_wt_bf16(dnn, &x, m, k, &w, n);
            let want = reference(&x, m, k, &w32, true, n);
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            let err = y.iter().zip(&want).fold(0f32, |a, (p, q)| a.max((p - q).abs()));
            assert!(err <= 1e-5 * scale.max(1.0) * k as f32, "x·Wᵀ {m}×{k}×{n}: max error {err} (scale {scale})");

            let dy = values(99 + m as u64, m * n, 1.0);
            let acc = values(5, m * k, 1.0);
            let dx = dy_w_bf16(dnn, &dy, m, n, &w, k, Some(acc.clone()));
            let want = reference(&dy, m, n, &w32, false, k);
            let err = dx.iter().zip(want.iter().zip(&acc)).fold(0f32, |a, (p, (q, c))| a.max((p - (q + c)).abs()));
            assert!(err <= 1e-5 * n as f32 * 2.0, "dy·W {m}×{n}×{k} (+acc): max error {err}");
        }
    }
}
