//! Optional BLAS for the frozen projections on CPU, loaded at run time: Intel oneMKL when
//! `scripts/install-mkl` put it in `~/.cache/wick/mkl`, else OpenBLAS (`scripts/install-openblas`).
//!
//! The frozen-weight GEMMs are ~90% of a LoRA step's FLOPs. On the AVX-512 machines wick is
//! measured on, OpenBLAS's sgemm runs ~1.5× faster than the `gemm` crate candle uses, MKL's
//! ~1.2× faster again, and MKL's hgemm (AVX512-FP16) ~2.5× MKL's sgemm — the f16 CPU path (see
//! the closing notes of the speed issue). Libraries are loaded with dlopen rather than linked, so
//! a machine without them still builds and runs wick, on candle's matmul.
//! `WICK_BLAS=mkl|openblas|off|/path/to/lib.so` picks one; by default MKL goes first, except on
//! AMD CPUs, where MKL takes its generic path and OpenBLAS measured faster (see `amd_cpu`).

use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::OnceLock;

/// cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc).
type Sgemm = unsafe extern "C" fn(i32, i32, i32, i32, i32, i32, f32, *const f32, i32, *const f32, i32, f32, *mut f32, i32);
/// MKL's cblas_hgemm: as sgemm with IEEE half operands; MKL_F16 scalars are passed as u16 bits.
type Hgemm = unsafe extern "C" fn(i32, i32, i32, i32, i32, i32, u16, *const u16, i32, *const u16, i32, u16, *mut u16, i32);
type CoreName = unsafe extern "C" fn() -> *const std::ffi::c_char;
type MklVersion = unsafe extern "C" fn(*mut std::ffi::c_char, i32);
type MklSetThreadingLayer = unsafe extern "C" fn(i32) -> i32;
type OpenblasSetNumThreads = unsafe extern "C" fn(i32);

/// MKL_THREADING_GNU: MKL's threads run on the system's libgomp (Intel's OpenMP runtime, its
/// default, is not installed; without this MKL exits the process on its first call).
const MKL_THREADING_GNU: i32 = 3;
/// MKL_THREADING_SEQUENTIAL: single-threaded MKL, parallelised by wick over row blocks.
const MKL_THREADING_SEQUENTIAL: i32 = 1;

/// Rows per block below which a GEMM is not split across threads.
const MIN_SPLIT_ROWS: usize = 64;
/// Columns per block below which a GEMM with too few rows for the row split is not split by
/// columns either.
const MIN_SPLIT_COLS: usize = 64;
/// Multiply-adds below which a column split costs more in hand-off than it saves.
const MIN_SPLIT_MACS: usize = 1 << 18;

const ROW_MAJOR: i32 = 101;
const NO_TRANS: i32 = 111;
const TRANS: i32 = 112;

/// A loaded BLAS library: its sgemm, and MKL's hgemm where the library has one.
pub struct Blas {
    _lib: libloading::Library,
    sgemm: Sgemm,
    hgemm: Option<Hgemm>,
    /// What the library reports (OpenBLAS core or MKL version), for logs and the bench.
    pub core: String,
    /// The library file that was loaded.
    pub path: String,
    /// Run single-threaded GEMMs on row blocks in rayon's pool instead of the library's own
    /// threads (MKL sequential, OpenBLAS at one thread): one thread pool instead of two.
    split_rows: bool,
}

static BLAS: OnceLock<Option<Blas>> = OnceLock::new();

/// Before any thread starts (first thing in `main`), set the BLAS libraries' environment unless
/// the user did: (1) OpenBLAS 0.3.21 (Debian 12) does not know recent Xeons and falls back to its
/// slowest "Prescott" kernels; on a CPU with AVX-512 the SkylakeX kernels are correct and ~5×
/// faster. (2) Its idle threads spin for ~2^28 cycles after each call, stealing the cores
/// candle's element-wise ops need right after; 2^4 makes them sleep at once (measured: step
/// 8.0 → 6.4 s).
pub fn configure_blas() {
    let set_default = |key: &str, value: &str| {
        if std::env::var_os(key).is_none() {
            // SAFETY: called from main before any other thread exists.
            unsafe { std::env::set_var(key, value) };
        }
    };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        set_default("OPENBLAS_CORETYPE", "SkylakeX");
    }
    set_default("OPENBLAS_THREAD_TIMEOUT", "4");
}

/// Where `scripts/install-mkl` puts MKL: `$WICK_MKL_DIR`, else `~/.cache/wick/mkl`.
pub fn mkl_dir() -> Option<PathBuf> {
    match std::env::var_os("WICK_MKL_DIR") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wick/mkl")),
    }
}

fn mkl_candidates() -> Vec<String> {
    let mut out: Vec<String> = mkl_dir().map(|d| d.join("libmkl_rt.so.3").to_string_lossy().into_owned()).into_iter().collect();
    out.extend(["libmkl_rt.so.3".into(), "libmkl_rt.so.2".into()]);
    out
}

fn openblas_candidates() -> Vec<String> {
    vec!["libopenblas.so.0".into(), "libopenblas.so".into(), "libopenblas.dylib".into()]
}

fn open(path: &str) -> Option<Blas> {
    // SAFETY: loading a BLAS runs only its initialisers; the symbol types match the CBLAS ABI.
    let lib = unsafe { libloading::Library::new(path) }.ok()?;
    let sgemm = unsafe { lib.get::<Sgemm>(b"cblas_sgemm\0") }.map(|s| *s).ok()?;
    let hgemm = unsafe { lib.get::<Hgemm>(b"cblas_hgemm\0") }.map(|s| *s).ok();
    let mut split_rows = false;
    let core = if let Ok(f) = unsafe { lib.get::<CoreName>(b"openblas_get_corename\0") } {
        let core = unsafe { std::ffi::CStr::from_ptr(f()) }.to_string_lossy().into_owned();
        // The generic fallback kernels are slower than candle's own GEMM: not worth using.
        if core.eq_ignore_ascii_case("prescott") {
            tracing::info!("{path}: OpenBLAS chose its generic Prescott kernels; using candle's matmul");
            return None;
        }
        // One thread pool: OpenBLAS single-threaded, wick splitting each GEMM over rayon's
        // threads as with MKL (its own pthreads otherwise yield-spin beside rayon and candle's
        // pool on the same cores). WICK_OPENBLAS_THREADS=own keeps OpenBLAS's threads.
        if std::env::var("WICK_OPENBLAS_THREADS").as_deref() != Ok("own")
            && let Ok(set_threads) = unsafe { lib.get::<OpenblasSetNumThreads>(b"openblas_set_num_threads\0") }
        {
            // SAFETY: no GEMM has run yet; the call only sets the library's thread count.
            unsafe { set_threads(1) };
            split_rows = true;
        }
        format!("OpenBLAS {core}")
    } else if let Ok(f) = unsafe { lib.get::<MklVersion>(b"mkl_get_version_string\0") } {
        if std::env::var_os("MKL_THREADING_LAYER").is_none()
            && let Ok(set_layer) = unsafe { lib.get::<MklSetThreadingLayer>(b"MKL_Set_Threading_Layer\0") }
        {
            split_rows = std::env::var("WICK_MKL_THREADS").as_deref() != Ok("openmp");
            // SAFETY: documented to be called before MKL's first computation, which is now.
            unsafe { set_layer(if split_rows { MKL_THREADING_SEQUENTIAL } else { MKL_THREADING_GNU }) };
        }
        let mut buf = vec![0 as std::ffi::c_char; 256];
        unsafe { f(buf.as_mut_ptr(), buf.len() as i32) };
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().trim().to_string()
    } else {
        "unknown".into()
    };
    tracing::info!("wick: frozen projections use {path} ({core}{})", if hgemm.is_some() { ", with hgemm" } else { "" });
    Some(Blas { _lib: lib, sgemm, hgemm, core, path: path.to_string(), split_rows })
}

/// True on an AMD CPU. MKL runs its generic code path there (`libmkl_def`), and on the 2-core
/// EPYC (AVX2) wick is measured on, one core ran the 16 × 64 forward at 227 tokens/s on
/// OpenBLAS's Zen kernels against 155 on MKL, so OpenBLAS goes first there.
fn amd_cpu() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: cpuid leaf 0 exists on every x86_64 CPU.
        #[allow(unused_unsafe)]
        let r = unsafe { std::arch::x86_64::__cpuid(0) };
        let vendor: Vec<u8> = [r.ebx, r.edx, r.ecx].iter().flat_map(|w| w.to_le_bytes()).collect();
        vendor == b"AuthenticAMD"
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `WICK_BLAS` as set, with an empty or blank value read as unset (a shell's `WICK_BLAS=` must
/// not become a library path that fails to load and silently leaves wick without BLAS).
fn blas_choice() -> Option<String> {
    choice_from(std::env::var("WICK_BLAS").ok())
}

fn choice_from(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// The libraries to try, in order: `WICK_BLAS`'s choice, else MKL first (OpenBLAS first on AMD).
fn candidates() -> Option<Vec<String>> {
    Some(match blas_choice().as_deref() {
        Some("off") => return None,
        Some("mkl") => mkl_candidates(),
        Some("openblas") => openblas_candidates(),
        Some(path) => vec![path.to_string()],
        None if amd_cpu() => openblas_candidates().into_iter().chain(mkl_candidates()).collect(),
        None => mkl_candidates().into_iter().chain(openblas_candidates()).collect(),
    })
}

fn load() -> Option<Blas> {
    let found = candidates()?.iter().find_map(|path| open(path));
    if found.is_none()
        && let Some(choice) = blas_choice()
    {
        // An explicit choice that cannot load is worth a line: the fallback is several times slower.
        tracing::warn!("WICK_BLAS={choice}: no usable BLAS library loaded; using candle's matmul");
    }
    found
}

/// What the tests must find, from `WICK_REQUIRE_BLAS`: "1" any BLAS, "mkl" MKL with hgemm. CI
/// sets it so a missing library fails the BLAS tests instead of skipping them.
pub fn required_by_env() -> (bool, bool) {
    let v = std::env::var("WICK_REQUIRE_BLAS").unwrap_or_default();
    (v == "1" || v == "mkl", v == "mkl")
}

/// For the tests of the single-threaded BLAS paths: true when they can run; false (skip) when no
/// library runs single-threaded, a failure instead under `WICK_REQUIRE_BLAS=mkl`.
#[cfg(test)]
pub(crate) fn single_threaded_for_tests() -> bool {
    let ready = blas().is_some_and(|b| b.single_threaded());
    assert!(ready || !required_by_env().1, "WICK_REQUIRE_BLAS=mkl but MKL is not in single-threaded mode");
    ready
}

/// The BLAS library, when one could be loaded and is worth using.
pub fn blas() -> Option<&'static Blas> {
    BLAS.get_or_init(load).as_ref()
}

/// (m, n, k) of op(a)·op(b) for a stored (a_dims), b stored (b_dims), transposed where asked;
/// panics unless every slice holds what its dimensions describe (what the unsafe calls rely on).
#[allow(clippy::too_many_arguments)]
fn checked_dims(
    what: &str,
    a_len: usize,
    a_dims: (usize, usize),
    ta: bool,
    b_len: usize,
    b_dims: (usize, usize),
    tb: bool,
    c_len: usize,
) -> (usize, usize, usize) {
    let (m, k) = if ta { (a_dims.1, a_dims.0) } else { a_dims };
    let (kb, n) = if tb { (b_dims.1, b_dims.0) } else { b_dims };
    assert!(
        k == kb && a_len == a_dims.0 * a_dims.1 && b_len == b_dims.0 * b_dims.1 && c_len == m * n,
        "{what}: operand sizes {a_dims:?}{} · {b_dims:?}{} → {c_len} elements",
        if ta { "ᵀ" } else { "" },
        if tb { "ᵀ" } else { "" },
    );
    (m, n, k)
}

/// The output of a column-split GEMM, written by every block at its own columns.
struct SharedOut(*mut f32);

// SAFETY: the blocks that share it write disjoint columns (see `run_col_split`).
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
        // SAFETY: f32 → MaybeUninit<f32> keeps layout; only initialised floats are written back.
        let c = unsafe { &mut *(c as *mut [f32] as *mut [MaybeUninit<f32>]) };
        // SAFETY: c is initialised (it came from a &mut [f32]).
        unsafe { self.gemm_uninit(a, a_dims, ta, b, b_dims, tb, alpha, beta, c) }
    }

    /// c (m, n) = alpha · op(a) · op(b) in a new vector, as [`Blas::gemm`] with beta 0 but
    /// without zero-filling the output first (the BLAS writes every element).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_new(
        &self,
        a: &[f32],
        a_dims: (usize, usize),
        ta: bool,
        b: &[f32],
        b_dims: (usize, usize),
        tb: bool,
        alpha: f32,
    ) -> Vec<f32> {
        let m = if ta { a_dims.1 } else { a_dims.0 };
        let n = if tb { b_dims.0 } else { b_dims.1 };
        let mut c = Vec::with_capacity(m * n);
        // SAFETY: beta = 0 reads nothing of c; gemm_uninit writes all m × n elements.
        unsafe {
            self.gemm_uninit(a, a_dims, ta, b, b_dims, tb, alpha, 0.0, &mut c.spare_capacity_mut()[..m * n]);
            c.set_len(m * n);
        }
        c
    }

    /// [`Blas::gemm`] on a possibly uninitialised c; it writes every element of c.
    ///
    /// # Safety
    /// With beta ≠ 0, c must be initialised (it is read).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm_uninit(
        &self,
        a: &[f32],
        a_dims: (usize, usize),
        ta: bool,
        b: &[f32],
        b_dims: (usize, usize),
        tb: bool,
        alpha: f32,
        beta: f32,
        c: &mut [MaybeUninit<f32>],
    ) {
        let (m, n, k) = checked_dims("gemm", a.len(), a_dims, ta, b.len(), b_dims, tb, c.len());
        if m == 0
            || n == 0
            || self
                .run_split(a, c, m, n, k, ta, |a, rows, c| unsafe { self.gemm_uninit(a, (rows, k), false, b, b_dims, tb, alpha, beta, c) })
            || self.run_k_split(a, b, (m, n, k), ta, tb, alpha, beta, c)
            || self.run_col_split(a, a_dims, ta, b, b_dims, tb, (m, n, k), alpha, beta, c)
        {
            return;
        }
        // SAFETY: the assert above checks every slice holds what its leading dimension describes;
        // with beta = 0 the BLAS does not read c.
        unsafe {
            self.sgemm_raw((ta, tb), (m, n, k), alpha, (a.as_ptr(), a_dims.1), (b.as_ptr(), b_dims.1), beta, (c.as_mut_ptr().cast(), n))
        };
    }

    /// One sgemm call, row-major, on operands given as (first element, leading dimension).
    ///
    /// # Safety
    /// a, b and c must hold op(a) (m, k), op(b) (k, n) and c (m, n) at their leading dimensions,
    /// and c must be initialised when beta ≠ 0.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn sgemm_raw(
        &self,
        (ta, tb): (bool, bool),
        (m, n, k): (usize, usize, usize),
        alpha: f32,
        (a, lda): (*const f32, usize),
        (b, ldb): (*const f32, usize),
        beta: f32,
        (c, ldc): (*mut f32, usize),
    ) {
        let flag = |t: bool| if t { TRANS } else { NO_TRANS };
        let ld = |l: usize| l.max(1) as i32;
        // SAFETY: as the caller guarantees.
        unsafe {
            (self.sgemm)(ROW_MAJOR, flag(ta), flag(tb), m as i32, n as i32, k as i32, alpha, a, ld(lda), b, ld(ldb), beta, c, ld(ldc))
        }
    }

    /// rayon's thread count when wick splits GEMMs itself: a single-threaded library, at least
    /// two threads, and not already on a rayon thread (a split call's blocks run whole).
    fn split_threads(&self) -> Option<usize> {
        let threads = rayon::current_num_threads();
        (self.split_rows && threads >= 2 && rayon::current_thread_index().is_none()).then_some(threads)
    }

    /// Run `gemm(a_block, rows, c_block)` on row blocks of a (m, k) and c (m, n) in rayon's pool
    /// and return true, when the call should be split: a single-threaded library, an
    /// untransposed a (its row blocks are contiguous), at least two blocks of MIN_SPLIT_ROWS, and
    /// not already on a rayon thread. False: the caller runs the call whole.
    #[allow(clippy::too_many_arguments)]
    fn run_split<A: Sync, C: Send>(
        &self,
        a: &[A],
        c: &mut [C],
        m: usize,
        n: usize,
        k: usize,
        ta: bool,
        gemm: impl Fn(&[A], usize, &mut [C]) + Sync,
    ) -> bool {
        use rayon::prelude::*;
        let Some(threads) = self.split_threads() else { return false };
        if ta || m < 2 * MIN_SPLIT_ROWS {
            return false;
        }
        let rows = m.div_ceil(threads.min(m / MIN_SPLIT_ROWS));
        c.par_chunks_mut(rows * n).zip(a.par_chunks(rows * k)).for_each(|(c, a)| gemm(a, a.len() / k, c));
        true
    }

    /// Run c = alpha·aᵀ·b + beta·c as partial products over blocks of the shared dimension k in
    /// rayon's pool and return true, when the row split cannot apply (a transposed, b not) and
    /// the partial outputs cost no more than the inputs: the shape of an adapter gradient, e.g.
    /// dA = gᵀ·x with g (rows, r), whose k is the batch's rows. Row blocks of a and b are
    /// contiguous. False: the caller runs the call whole.
    #[allow(clippy::too_many_arguments)]
    fn run_k_split(
        &self,
        a: &[f32],
        b: &[f32],
        (m, n, k): (usize, usize, usize),
        ta: bool,
        tb: bool,
        alpha: f32,
        beta: f32,
        c: &mut [MaybeUninit<f32>],
    ) -> bool {
        use rayon::prelude::*;
        let Some(threads) = self.split_threads() else { return false };
        if !ta || tb || k < 2 * MIN_SPLIT_ROWS {
            return false;
        }
        let blocks = threads.min(k / MIN_SPLIT_ROWS);
        if blocks * m * n > k * (m + n) {
            return false;
        }
        let rows = k.div_ceil(blocks);
        let partials: Vec<Vec<f32>> = a
            .par_chunks(rows * m)
            .zip(b.par_chunks(rows * n))
            .map(|(a, b)| {
                let kk = a.len() / m;
                self.gemm_new(a, (kk, m), true, b, (kk, n), false, alpha)
            })
            .collect();
        c.par_chunks_mut(4096).enumerate().for_each(|(i, chunk)| {
            for (j, v) in chunk.iter_mut().enumerate() {
                let sum: f32 = partials.iter().map(|p| p[i * 4096 + j]).sum();
                // beta = 0 must not read c (BLAS semantics: it may hold anything).
                // SAFETY: with beta ≠ 0 the caller guarantees c is initialised.
                v.write(if beta == 0.0 { sum } else { beta * unsafe { v.assume_init_read() } + sum });
            }
        });
        true
    }

    /// Run c = alpha·op(a)·op(b) + beta·c on column blocks of b and c in rayon's pool and return
    /// true, when neither the row nor the k split applied and the product is large enough: the
    /// shape of a decoding step (a few rows through every projection and the LM head), which
    /// would otherwise run on one core. Each block reads all of a and its own share of b, the
    /// weight, so the threads also share the reading of the weights. False: the caller runs the
    /// call whole.
    #[allow(clippy::too_many_arguments)]
    fn run_col_split(
        &self,
        a: &[f32],
        a_dims: (usize, usize),
        ta: bool,
        b: &[f32],
        b_dims: (usize, usize),
        tb: bool,
        (m, n, k): (usize, usize, usize),
        alpha: f32,
        beta: f32,
        c: &mut [MaybeUninit<f32>],
    ) -> bool {
        use rayon::prelude::*;
        let Some(threads) = self.split_threads() else { return false };
        if n < 2 * MIN_SPLIT_COLS || m * n * k < MIN_SPLIT_MACS {
            return false;
        }
        let blocks = threads.min(n / MIN_SPLIT_COLS);
        let cols = n.div_ceil(blocks);
        // The blocks of c are strided (every row holds a piece of each), so each block gets its
        // first element and c's full row length as its leading dimension.
        let c_at = SharedOut(c.as_mut_ptr().cast::<f32>());
        (0..blocks).into_par_iter().for_each(|i| {
            let j0 = i * cols;
            let nb = cols.min(n - j0);
            // b's block: rows j0.. of a stored (n, k) when transposed, else its columns j0...
            let b_start = if tb { j0 * k } else { j0 };
            // SAFETY: checked_dims verified a, b and c against (m, n, k); the block's columns
            // j0..j0 + nb lie inside b and c, blocks are disjoint, and with beta = 0 the BLAS
            // does not read c.
            unsafe {
                let b_block = b.as_ptr().add(b_start);
                self.sgemm_raw((ta, tb), (m, nb, k), alpha, (a.as_ptr(), a_dims.1), (b_block, b_dims.1), beta, (c_at.at(j0), n))
            };
        });
        true
    }

    /// True when the library runs each call on one thread (wick parallelises around it).
    pub fn single_threaded(&self) -> bool {
        self.split_rows
    }

    /// True when the library has MKL's hgemm (the f16 CPU path).
    pub fn has_hgemm(&self) -> bool {
        self.hgemm.is_some()
    }

    /// c (m, n) = op(a) · op(b) in IEEE half, as [`Blas::gemm`] with alpha 1 and beta 0.
    /// Panics without hgemm (check [`Blas::has_hgemm`]).
    #[allow(clippy::too_many_arguments)]
    pub fn hgemm(
        &self,
        a: &[half::f16],
        a_dims: (usize, usize),
        ta: bool,
        b: &[half::f16],
        b_dims: (usize, usize),
        tb: bool,
        c: &mut [half::f16],
    ) {
        let hgemm = self.hgemm.expect("hgemm called on a BLAS without it");
        let (m, n, k) = checked_dims("hgemm", a.len(), a_dims, ta, b.len(), b_dims, tb, c.len());
        if m == 0 || n == 0 || self.run_split(a, c, m, n, k, ta, |a, rows, c| self.hgemm(a, (rows, k), false, b, b_dims, tb, c)) {
            return;
        }
        let flag = |t: bool| if t { TRANS } else { NO_TRANS };
        let (lda, ldb) = (a_dims.1.max(1) as i32, b_dims.1.max(1) as i32);
        let (one, zero) = (half::f16::ONE.to_bits(), half::f16::ZERO.to_bits());
        // SAFETY: the assert above checks every slice holds what its leading dimension describes;
        // f16 is a transparent u16.
        unsafe {
            hgemm(
                ROW_MAJOR,
                flag(ta),
                flag(tb),
                m as i32,
                n as i32,
                k as i32,
                one,
                a.as_ptr().cast(),
                lda,
                b.as_ptr().cast(),
                ldb,
                zero,
                c.as_mut_ptr().cast(),
                n.max(1) as i32,
            )
        };
    }

    /// y (m, n) = x (m, k) · wᵀ, with w (n, k); all row-major and contiguous.
    pub fn x_wt(&self, x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        self.gemm_new(x, (m, k), false, w, (n, k), true, 1.0)
    }

    /// dx (m, k) = dy (m, n) · w, with w (n, k); all row-major and contiguous.
    pub fn dy_w(&self, dy: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        self.gemm_new(dy, (m, n), false, w, (n, k), false, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// c = alpha·op(a)·op(b) + beta·c by the definition, for the comparison.
    #[allow(clippy::too_many_arguments)]
    fn naive(
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
        let at = |i: usize, p: usize| if ta { a[p * a_dims.1 + i] } else { a[i * a_dims.1 + p] };
        let bt = |p: usize, j: usize| if tb { b[j * b_dims.1 + p] } else { b[p * b_dims.1 + j] };
        let (m, k) = if ta { (a_dims.1, a_dims.0) } else { a_dims };
        let n = if tb { b_dims.0 } else { b_dims.1 };
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|p| f64::from(at(i, p)) * f64::from(bt(p, j))).sum();
                c[i * n + j] = alpha * dot as f32 + beta * c[i * n + j];
            }
        }
    }

    #[test]
    fn an_empty_wick_blas_means_unset() {
        assert_eq!(choice_from(None), None);
        assert_eq!(choice_from(Some(String::new())), None);
        assert_eq!(choice_from(Some("  ".into())), None);
        assert_eq!(choice_from(Some(" openblas ".into())).as_deref(), Some("openblas"));
    }

    /// Every transpose case, with alpha and beta, on shapes that take the row split (m ≥ 128),
    /// the k split (aᵀ·b with k ≥ 128 and a small output), the column split (few rows, n ≥ 128,
    /// n not a multiple of the block) and none; beta = 0 ignores NaNs in c.
    #[test]
    fn gemm_matches_the_definition_on_every_split() {
        let Some(blas) = blas() else {
            assert!(!required_by_env().0, "WICK_REQUIRE_BLAS is set but no BLAS was loaded");
            return;
        };
        let fill =
            |n: usize, seed: usize| -> Vec<f32> { (0..n).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5) - 1.0).collect() };
        for (m, n, k) in [(150, 9, 33), (8, 21, 300), (300, 8, 257), (5, 7, 11), (16, 389, 96), (1, 1031, 300)] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                for (alpha, beta) in [(1.0, 0.0), (1.3, 0.5)] {
                    let a_dims = if ta { (k, m) } else { (m, k) };
                    let b_dims = if tb { (n, k) } else { (k, n) };
                    let (a, b) = (fill(m * k, 1), fill(k * n, 2));
                    let start = if beta == 0.0 { vec![f32::NAN; m * n] } else { fill(m * n, 3) };
                    let (mut ours, mut want) = (start.clone(), fill(m * n, 3));
                    blas.gemm(&a, a_dims, ta, &b, b_dims, tb, alpha, beta, &mut ours);
                    naive(&a, a_dims, ta, &b, b_dims, tb, alpha, beta, &mut want);
                    let diff = ours.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                    assert!(diff < 1e-3, "({m}, {n}, {k}) ta {ta} tb {tb} alpha {alpha} beta {beta}: max diff {diff}");
                }
            }
        }
    }
}
