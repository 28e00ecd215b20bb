//! Launch code for wick's CUDA kernels (`kernels/fused.cu`, compiled to PTX by build.rs): the
//! `cuda_fwd` of each fused CustomOp in [`super::fused`] calls one function here. Every kernel
//! exists for f32, f16 and bf16 storage and computes in f32; inputs must be contiguous and of one
//! dtype. The kernels index raw device memory, so every size they rely on is checked here first.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaStorage, DType, Layout, Result, Shape, Storage, Tensor};
use half::{bf16, f16};

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/wick_ptx.rs"));
}

/// The name the PTX module is cached under in the device (one load per device).
const MODULE: &str = "wick-fused";

/// A storage dtype the kernels exist for, and the suffix of its entry points.
trait Elem: CudaDType + DeviceRepr {
    const SUFFIX: &'static str;
}

impl Elem for f32 {
    const SUFFIX: &'static str = "f32";
}

impl Elem for f16 {
    const SUFFIX: &'static str = "f16";
}

impl Elem for bf16 {
    const SUFFIX: &'static str = "bf16";
}

/// Call `$f::<T>(args)` for the storage dtype `$dtype`.
macro_rules! by_dtype {
    ($dtype:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match $dtype {
            DType::F32 => $f::<f32>($($arg),*),
            DType::F16 => $f::<f16>($($arg),*),
            DType::BF16 => $f::<bf16>($($arg),*),
            other => candle_core::bail!("wick CUDA kernels: unsupported dtype {other:?} (f32, f16 or bf16)"),
        }
    };
}

/// The contiguous elements of `s` under layout `l`.
fn view<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout, op: &str) -> Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.as_cuda_slice::<T>()?.slice(a..b)),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Threads per block for a kernel that reduces rows of `len` elements: a multiple of 32.
fn row_threads(len: usize) -> u32 {
    (len.div_ceil(32) * 32).clamp(32, 512) as u32
}

fn rows_config(rows: usize, len: usize) -> Result<LaunchConfig> {
    let rows = u32::try_from(rows).map_err(|_| candle_core::Error::Msg(format!("{rows} rows exceed a CUDA grid")))?;
    Ok(LaunchConfig { grid_dim: (rows, 1, 1), block_dim: (row_threads(len), 1, 1), shared_mem_bytes: 0 })
}

fn elems_config(n: usize) -> Result<LaunchConfig> {
    let blocks = u32::try_from(n.div_ceil(256)).map_err(|_| candle_core::Error::Msg(format!("{n} elements exceed a CUDA grid")))?;
    Ok(LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 })
}

fn to_u32(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("{what} = {v} exceeds u32")))
}

fn same_len(op: &str, a: usize, b: usize) -> Result<()> {
    if a != b {
        candle_core::bail!("{op}: operands of {a} and {b} elements");
    }
    Ok(())
}

/// Launch `$kernel`_`T::SUFFIX` on the device's stream with the argument references `$arg`.
macro_rules! launch {
    ($T:ty, $dev:expr, $kernel:expr, $cfg:expr, [$($arg:expr),* $(,)?]) => {{
        let func = $dev.get_or_load_custom_func(&format!("{}_{}", $kernel, <$T as Elem>::SUFFIX), MODULE, ptx::FUSED)?;
        let mut builder = func.builder();
        $(builder.arg($arg);)*
        // SAFETY: the callers check every size the kernel indexes with against the buffers' lengths.
        unsafe { builder.launch($cfg) }.w()?;
    }};
}

// --- RMSNorm -------------------------------------------------------------------------------------

pub fn rms_norm_fwd(x: &CudaStorage, lx: &Layout, w: &CudaStorage, lw: &Layout, eps: f32) -> Result<(CudaStorage, Shape)> {
    fn run<T: Elem>(x: &CudaStorage, lx: &Layout, w: &CudaStorage, lw: &Layout, eps: f32) -> Result<CudaStorage> {
        let (op, dev) = ("wick-rms-norm", x.device());
        let (xv, wv) = (view::<T>(x, lx, op)?, view::<T>(w, lw, op)?);
        let (n, d) = (xv.len(), wv.len());
        if d == 0 || n % d != 0 {
            candle_core::bail!("{op}: {n} elements are not rows of the weight's {d}");
        }
        // SAFETY: the kernel writes every element.
        let y = unsafe { dev.alloc::<T>(n)? };
        let d32 = to_u32(d, "d")?;
        launch!(T, dev, "wick_rms_norm_fwd", rows_config(n / d, d)?, [&xv, &wv, &y, &d32, &eps]);
        Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
    }
    Ok((by_dtype!(x.dtype(), run(x, lx, w, lw, eps))?, lx.shape().clone()))
}

#[allow(clippy::too_many_arguments)]
pub fn rms_norm_bwd(
    x: &CudaStorage,
    lx: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    dy: &CudaStorage,
    ldy: &Layout,
    eps: f32,
) -> Result<(CudaStorage, Shape)> {
    #[allow(clippy::too_many_arguments)]
    fn run<T: Elem>(
        x: &CudaStorage,
        lx: &Layout,
        w: &CudaStorage,
        lw: &Layout,
        dy: &CudaStorage,
        ldy: &Layout,
        eps: f32,
    ) -> Result<CudaStorage> {
        let (op, dev) = ("wick-rms-norm-bwd", x.device());
        let (xv, wv, dyv) = (view::<T>(x, lx, op)?, view::<T>(w, lw, op)?, view::<T>(dy, ldy, op)?);
        let (n, d) = (xv.len(), wv.len());
        same_len(op, n, dyv.len())?;
        if d == 0 || n % d != 0 {
            candle_core::bail!("{op}: {n} elements are not rows of the weight's {d}");
        }
        // SAFETY: the kernel writes every element.
        let dx = unsafe { dev.alloc::<T>(n)? };
        let d32 = to_u32(d, "d")?;
        launch!(T, dev, "wick_rms_norm_bwd", rows_config(n / d, d)?, [&xv, &wv, &dyv, &dx, &d32, &eps]);
        Ok(CudaStorage::wrap_cuda_slice(dx, dev.clone()))
    }
    Ok((by_dtype!(x.dtype(), run(x, lx, w, lw, dy, ldy, eps))?, lx.shape().clone()))
}

// --- Masked attention softmax ------------------------------------------------------------------

pub fn masked_softmax_fwd(x: &CudaStorage, l: &Layout, lengths: &[usize], heads: usize, scale: f32) -> Result<(CudaStorage, Shape)> {
    fn run<T: Elem>(x: &CudaStorage, l: &Layout, lengths: &[usize], heads: usize, scale: f32) -> Result<CudaStorage> {
        let (op, dev) = ("wick-masked-softmax", x.device());
        let (b, h, t, s) = l.shape().dims4()?;
        if h != heads || lengths.len() != b || s < t {
            candle_core::bail!("{op}: scores {:?} for {heads} heads, {} lengths", l.shape(), lengths.len());
        }
        let xv = view::<T>(x, l, op)?;
        let lens: Vec<u32> = lengths.iter().map(|&n| n.min(t) as u32).collect();
        let lens = dev.clone_htod(&lens)?;
        // SAFETY: the kernel writes every element (0 for masked keys).
        let p = unsafe { dev.alloc::<T>(xv.len())? };
        let (h32, t32, s32) = (to_u32(h, "heads")?, to_u32(t, "t")?, to_u32(s, "keys")?);
        launch!(T, dev, "wick_masked_softmax_fwd", rows_config(b * h * t, s)?, [&xv, &p, &lens, &h32, &t32, &s32, &scale]);
        Ok(CudaStorage::wrap_cuda_slice(p, dev.clone()))
    }
    Ok((by_dtype!(x.dtype(), run(x, l, lengths, heads, scale))?, l.shape().clone()))
}

pub fn masked_softmax_bwd(p: &CudaStorage, lp: &Layout, dp: &CudaStorage, ldp: &Layout, scale: f32) -> Result<(CudaStorage, Shape)> {
    fn run<T: Elem>(p: &CudaStorage, lp: &Layout, dp: &CudaStorage, ldp: &Layout, scale: f32) -> Result<CudaStorage> {
        let (op, dev) = ("wick-masked-softmax-bwd", p.device());
        let (pv, dpv) = (view::<T>(p, lp, op)?, view::<T>(dp, ldp, op)?);
        same_len(op, pv.len(), dpv.len())?;
        let s = lp.shape().dims().last().copied().unwrap_or(1).max(1);
        // SAFETY: the kernel writes every element.
        let dx = unsafe { dev.alloc::<T>(pv.len())? };
        let s32 = to_u32(s, "keys")?;
        launch!(T, dev, "wick_masked_softmax_bwd", rows_config(pv.len() / s, s)?, [&pv, &dpv, &dx, &s32, &scale]);
        Ok(CudaStorage::wrap_cuda_slice(dx, dev.clone()))
    }
    Ok((by_dtype!(p.dtype(), run(p, lp, dp, ldp, scale))?, lp.shape().clone()))
}

// --- Rotary embedding + head transpose -----------------------------------------------------------

/// `forward`: x (b, t, h, d) → (b, h, t, d) rotated; else dy (b, h, t, d) → (b, t, h, d) rotated back.
/// `cos`/`sin`: the f32 (positions, d/2) tables on `x`'s device.
pub fn rope(x: &CudaStorage, l: &Layout, cos: &Tensor, sin: &Tensor, offset: usize, forward: bool) -> Result<(CudaStorage, Shape)> {
    fn run<T: Elem>(x: &CudaStorage, l: &Layout, cos: &Tensor, sin: &Tensor, offset: usize, forward: bool) -> Result<(CudaStorage, Shape)> {
        let (op, dev) = ("wick-rope", x.device());
        let (b, t, h, d, out) = if forward {
            let (b, t, h, d) = l.shape().dims4()?;
            (b, t, h, d, Shape::from((b, h, t, d)))
        } else {
            let (b, h, t, d) = l.shape().dims4()?;
            (b, t, h, d, Shape::from((b, t, h, d)))
        };
        let half = d / 2;
        let (cs, cl) = cos.storage_and_layout();
        let (ss, sl) = sin.storage_and_layout();
        let (Storage::Cuda(cs), Storage::Cuda(ss)) = (&*cs, &*ss) else { candle_core::bail!("{op}: rotary tables are not on the GPU") };
        if cs.device().id() != dev.id() || ss.device().id() != dev.id() {
            candle_core::bail!("{op}: rotary tables are on another GPU");
        }
        let (cv, sv) = (view::<f32>(cs, &cl, op)?, view::<f32>(ss, &sl, op)?);
        if d % 2 != 0 || cos.dim(1)? != half || sin.dim(1)? != half || (offset + t) * half > cv.len().min(sv.len()) {
            candle_core::bail!("{op}: head dim {d} or positions {} exceed the tables", offset + t);
        }
        let xv = view::<T>(x, l, op)?;
        // SAFETY: the kernel writes both halves of every output row.
        let y = unsafe { dev.alloc::<T>(xv.len())? };
        let dims = [to_u32(b, "b")?, to_u32(t, "t")?, to_u32(h, "heads")?, to_u32(half, "d/2")?, to_u32(offset, "offset")?, forward as u32];
        launch!(
            T,
            dev,
            "wick_rope",
            elems_config(b * t * h * half)?,
            [&xv, &y, &cv, &sv, &dims[0], &dims[1], &dims[2], &dims[3], &dims[4], &dims[5]]
        );
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), out))
    }
    by_dtype!(x.dtype(), run(x, l, cos, sin, offset, forward))
}

// --- SwiGLU -------------------------------------------------------------------------------------

pub fn swiglu_fwd(g: &CudaStorage, lg: &Layout, u: &CudaStorage, lu: &Layout) -> Result<(CudaStorage, Shape)> {
    fn run<T: Elem>(g: &CudaStorage, lg: &Layout, u: &CudaStorage, lu: &Layout) -> Result<CudaStorage> {
        let (op, dev) = ("wick-swiglu", g.device());
        let (gv, uv) = (view::<T>(g, lg, op)?, view::<T>(u, lu, op)?);
        let n = gv.len();
        same_len(op, n, uv.len())?;
        // SAFETY: the kernel writes every element.
        let y = unsafe { dev.alloc::<T>(n)? };
        launch!(T, dev, "wick_swiglu_fwd", elems_config(n)?, [&gv, &uv, &y, &n]);
        Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
    }
    Ok((by_dtype!(g.dtype(), run(g, lg, u, lu))?, lg.shape().clone()))
}

/// Both gradients in one pass, stacked: (2, ..g's shape) with [0] = dg and [1] = du.
pub fn swiglu_bwd(
    g: &CudaStorage,
    lg: &Layout,
    u: &CudaStorage,
    lu: &Layout,
    dy: &CudaStorage,
    ldy: &Layout,
) -> Result<(CudaStorage, Shape)> {
    fn run<T: Elem>(g: &CudaStorage, lg: &Layout, u: &CudaStorage, lu: &Layout, dy: &CudaStorage, ldy: &Layout) -> Result<CudaStorage> {
        let (op, dev) = ("wick-swiglu-bwd", g.device());
        let (gv, uv, dyv) = (view::<T>(g, lg, op)?, view::<T>(u, lu, op)?, view::<T>(dy, ldy, op)?);
        let n = gv.len();
        same_len(op, n, uv.len())?;
        same_len(op, n, dyv.len())?;
        // SAFETY: the kernel writes both halves.
        let out = unsafe { dev.alloc::<T>(2 * n)? };
        launch!(T, dev, "wick_swiglu_bwd", elems_config(n)?, [&gv, &uv, &dyv, &out, &n]);
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }
    let mut dims = vec![2];
    dims.extend_from_slice(lg.shape().dims());
    Ok((by_dtype!(g.dtype(), run(g, lg, u, lu, dy, ldy))?, Shape::from(dims)))
}
