//! Optional OpenBLAS sgemm for the frozen projections on CPU, loaded at run time.
//!
//! The frozen-weight GEMMs are ~90% of a LoRA step's FLOPs. On the AVX-512 machines wick is
//! measured on, OpenBLAS's sgemm runs ~1.5× faster than the `gemm` crate candle uses (see the
//! closing notes of the speed issue). It is loaded with dlopen rather than linked, so a machine
//! without it still builds and runs wick, on candle's matmul. `WICK_BLAS=/path/libopenblas.so`
//! picks a library; `WICK_BLAS=off` disables it.

use std::sync::OnceLock;

/// cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc).
type Sgemm = unsafe extern "C" fn(i32, i32, i32, i32, i32, i32, f32, *const f32, i32, *const f32, i32, f32, *mut f32, i32);
type CoreName = unsafe extern "C" fn() -> *const std::ffi::c_char;

const ROW_MAJOR: i32 = 101;
const NO_TRANS: i32 = 111;
const TRANS: i32 = 112;

/// A loaded BLAS library and its sgemm.
pub struct Blas {
    _lib: libloading::Library,
    sgemm: Sgemm,
    /// What the library reports (`openblas_get_corename`), for logs and the bench.
    pub core: String,
    /// The library file that was loaded.
    pub path: String,
}

static BLAS: OnceLock<Option<Blas>> = OnceLock::new();

/// Before any thread starts (first thing in `main`), set OpenBLAS's environment unless the user
/// did: (1) OpenBLAS 0.3.21 (Debian 12) does not know recent Xeons and falls back to its slowest
/// "Prescott" kernels; on a CPU with AVX-512 the SkylakeX kernels are correct and ~5× faster.
/// (2) Its idle threads spin for ~2^28 cycles after each call, stealing the cores candle's
/// element-wise ops need right after; 2^4 makes them sleep at once (measured: step 8.0 → 6.4 s).
pub fn configure_openblas() {
    // SAFETY (both set_var calls): called from main before any other thread exists.
    #[cfg(target_arch = "x86_64")]
    if std::env::var_os("OPENBLAS_CORETYPE").is_none() && std::arch::is_x86_feature_detected!("avx512f") {
        unsafe { std::env::set_var("OPENBLAS_CORETYPE", "SkylakeX") };
    }
    if std::env::var_os("OPENBLAS_THREAD_TIMEOUT").is_none() {
        unsafe { std::env::set_var("OPENBLAS_THREAD_TIMEOUT", "4") };
    }
}

fn load() -> Option<Blas> {
    let choice = std::env::var("WICK_BLAS").ok();
    if choice.as_deref() == Some("off") {
        return None;
    }
    let candidates: Vec<String> = match choice {
        Some(path) => vec![path],
        None => vec!["libopenblas.so.0".into(), "libopenblas.so".into(), "libopenblas.dylib".into()],
    };
    for path in candidates {
        // SAFETY: loading a BLAS runs only its initialisers; the symbol types match the CBLAS ABI.
        let Ok(lib) = (unsafe { libloading::Library::new(&path) }) else { continue };
        let Ok(sgemm) = (unsafe { lib.get::<Sgemm>(b"cblas_sgemm\0") }).map(|s| *s) else { continue };
        let core = unsafe { lib.get::<CoreName>(b"openblas_get_corename\0") }
            .ok()
            .map(|f| unsafe { std::ffi::CStr::from_ptr(f()) }.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unknown".into());
        // The generic fallback kernels are slower than candle's own GEMM: not worth using.
        if core.eq_ignore_ascii_case("prescott") {
            tracing::info!("{path}: OpenBLAS chose its generic Prescott kernels; using candle's matmul");
            return None;
        }
        tracing::info!("frozen projections use {path} (OpenBLAS core {core})");
        return Some(Blas { _lib: lib, sgemm, core, path });
    }
    None
}

/// The BLAS library, when one could be loaded and is worth using.
pub fn blas() -> Option<&'static Blas> {
    BLAS.get_or_init(load).as_ref()
}

impl Blas {
    /// c (m, n) = alpha · op(a) · op(b) + beta · c, every matrix row-major and contiguous; `a` is
    /// stored (a_rows, a_cols) and op transposes it when `ta` (likewise `b`, `tb`).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        a: &[f32],
        a_dims: (usize, usize),
        ta: bool,
        b: &[f32],
        b_dims: (usize, usize),
        tb: bool,
        alpha: f32,
        beta: f32,
        c: &mut [f32],
    ) {
        let (m, k) = if ta { (a_dims.1, a_dims.0) } else { a_dims };
        let (kb, n) = if tb { (b_dims.1, b_dims.0) } else { b_dims };
        assert!(
            k == kb && a.len() == a_dims.0 * a_dims.1 && b.len() == b_dims.0 * b_dims.1 && c.len() == m * n,
            "gemm: operand sizes {a_dims:?}{} · {b_dims:?}{} → {} elements",
            if ta { "ᵀ" } else { "" },
            if tb { "ᵀ" } else { "" },
            c.len()
        );
        if m == 0 || n == 0 {
            return;
        }
        let flag = |t: bool| if t { TRANS } else { NO_TRANS };
        let (lda, ldb) = (a_dims.1.max(1) as i32, b_dims.1.max(1) as i32);
        // SAFETY: the assert above checks every slice holds what its leading dimension describes.
        unsafe {
            (self.sgemm)(
                ROW_MAJOR,
                flag(ta),
                flag(tb),
                m as i32,
                n as i32,
                k as i32,
                alpha,
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                beta,
                c.as_mut_ptr(),
                n.max(1) as i32,
            )
        };
    }

    /// y (m, n) = x (m, k) · wᵀ, with w (n, k); all row-major and contiguous.
    pub fn x_wt(&self, x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        self.gemm(x, (m, k), false, w, (n, k), true, 1.0, 0.0, &mut y);
        y
    }

    /// dx (m, k) = dy (m, n) · w, with w (n, k); all row-major and contiguous.
    pub fn dy_w(&self, dy: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut dx = vec![0f32; m * k];
        self.gemm(dy, (m, n), false, w, (n, k), false, 1.0, 0.0, &mut dx);
        dx
    }
}
