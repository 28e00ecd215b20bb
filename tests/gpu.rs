//! wick's CUDA kernels (kernels/fused.cu) against their CPU twins, the fused f32 CPU ops: values
//! and the gradients of every input (through the backward kernels) on random inputs of odd sizes,
//! for f32, f16 and bf16 storage. Every test is `#[ignore]`: they need a GPU and the `cuda`
//! feature, and run with `scripts/gpu-check` (`cargo test --release --features cuda --test gpu
//! -- --ignored`). Built without the feature they compile and return at once.

use candle_core::{DType, Device, Result, Tensor, Var};
use wick::ops::{Rotary, fused};

/// Storage dtypes and their tolerance on max |gpu − cpu| / (1 + max |cpu|). The CPU twin gets
/// the same inputs rounded to the dtype, so the error left is the kernels' output rounding and
/// f32 summation order (f16: 11-bit significand, bf16: 8-bit).
const DTYPES: [(DType, f32); 3] = [(DType::F32, 1e-5), (DType::F16, 1e-2), (DType::BF16, 4e-2)];

/// The GPU, or None (skip) when built without the `cuda` feature. With the feature, a missing GPU
/// is an error: these tests only run when asked for with `--ignored`.
fn gpu() -> Option<Device> {
    if !cfg!(feature = "cuda") {
        eprintln!("gpu tests: built without the `cuda` feature; nothing to check");
        return None;
    }
    Some(Device::new_cuda(0).expect("the gpu tests need a CUDA GPU and driver"))
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

fn rel_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    Ok(max_diff(a, b)? / (1.0 + scale))
}

fn round_to(t: &Tensor, dtype: DType) -> Result<Tensor> {
    t.to_dtype(dtype)?.to_dtype(DType::F32)
}

type Op<'a> = &'a dyn Fn(&[Tensor]) -> Result<Tensor>;

/// `f` on `data` cast to `dtype` on `dev`, as Vars: the output and every input's gradient under
/// the loss Σ y·probe, all back on the CPU in f32.
fn run_on(data: &[Tensor], dtype: DType, dev: &Device, f: Op, probe: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
    let vars: Vec<Var> = data.iter().map(|t| Var::from_tensor(&t.to_dtype(dtype)?.to_device(dev)?)).collect::<Result<_>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts)?;
    assert_eq!(y.dtype(), dtype, "output dtype");
    let grads = y.to_dtype(DType::F32)?.broadcast_mul(&probe.to_device(dev)?)?.sum_all()?.backward()?;
    let back = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F32);
    let g = ts.iter().map(|t| back(grads.get(t).expect("every input gets a gradient"))).collect::<Result<_>>()?;
    Ok((back(&y)?, g))
}

/// `on_gpu` (CUDA kernels) against `on_cpu` (the CPU twin) for every dtype.
fn check(name: &str, dev: &Device, shapes: &[&[usize]], out_shape: &[usize], on_gpu: Op, on_cpu: Op) -> Result<()> {
    for (dtype, tol) in DTYPES {
        let data: Vec<Tensor> =
            shapes.iter().map(|s| round_to(&Tensor::randn(0f32, 1.0, *s, &Device::Cpu)?, dtype)).collect::<Result<_>>()?;
        let probe = round_to(&Tensor::randn(0f32, 1.0, out_shape, &Device::Cpu)?, dtype)?;
        let (y_ref, g_ref) = run_on(&data, DType::F32, &Device::Cpu, on_cpu, &probe)?;
        let (y, g) = run_on(&data, dtype, dev, on_gpu, &probe)?;
        assert_eq!(y.dims(), y_ref.dims(), "{name} {dtype:?}: shapes");
        let dv = rel_diff(&y, &y_ref)?;
        assert!(dv < tol, "{name} {dtype:?} {shapes:?}: values differ by {dv} (tolerance {tol})");
        for (i, (a, b)) in g.iter().zip(&g_ref).enumerate() {
            let dg = rel_diff(a, b)?;
            assert!(dg < tol, "{name} {dtype:?} {shapes:?}: gradient of input {i} differs by {dg} (tolerance {tol})");
        }
        eprintln!("{name} {dtype:?} {shapes:?}: values {dv:.2e}, ok");
    }
    Ok(())
}

#[test]
#[ignore = "needs a GPU: scripts/gpu-check"]
fn cuda_takes_the_fused_kernels_for_f32_f16_bf16() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    for (dtype, _) in DTYPES {
        let x = Tensor::zeros((2, 3), dtype, &dev)?;
        assert!(fused::fused_applies(&x), "{dtype:?} on CUDA must take the fused kernels");
    }
    assert!(!fused::fused_applies(&Tensor::zeros((2, 3), DType::F64, &dev)?));
    Ok(())
}

#[test]
#[ignore = "needs a GPU: scripts/gpu-check"]
fn rms_norm_kernels_match_the_cpu_twin() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let f = |t: &[Tensor]| fused::rms_norm(&t[0], &t[1], 1e-5);
    for &(rows, d) in &[(7usize, 13usize), (3, 576), (33, 5), (5, 1537)] {
        check("rms_norm", &dev, &[&[rows, d], &[d]], &[rows, d], &f, &f)?;
    }
    check("rms_norm 3d", &dev, &[&[2, 5, 9], &[9]], &[2, 5, 9], &f, &f)
}

#[test]
#[ignore = "needs a GPU: scripts/gpu-check"]
fn masked_softmax_kernels_match_the_cpu_twin() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    // (batch, heads, queries, prefix, lengths): ragged, zero-length rows, rows longer than a block.
    let cases: [(usize, usize, usize, usize, Vec<usize>); 5] = [
        (3, 2, 5, 0, vec![5, 3, 1]),
        (2, 3, 7, 4, vec![7, 2]),
        (2, 1, 3, 0, vec![0, 3]),
        (2, 3, 37, 11, vec![37, 20]),
        (1, 2, 3, 700, vec![2]),
    ];
    for (b, h, t, prefix, lengths) in &cases {
        let s = prefix + t;
        let f = |x: &[Tensor]| fused::masked_softmax(&x[0], lengths, 0.37);
        check("masked_softmax", &dev, &[&[*b, *h, *t, s]], &[*b, *h, *t, s], &f, &f)?;
    }
    Ok(())
}

#[test]
#[ignore = "needs a GPU: scripts/gpu-check"]
fn fully_masked_rows_are_zero_on_the_gpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    for (dtype, _) in DTYPES {
        let x = Tensor::randn(0f32, 1.0, (1, 2, 3, 3), &dev)?.to_dtype(dtype)?;
        let p = fused::masked_softmax(&x, &[0], 1.0)?.to_dtype(DType::F32)?;
        assert_eq!(p.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0, "{dtype:?}");
    }
    Ok(())
}

#[test]
#[ignore = "needs a GPU: scripts/gpu-check"]
fn rotary_kernel_matches_the_cpu_twin() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    for &(b, t, h, d, offset) in &[(2usize, 5usize, 3usize, 8usize, 0usize), (1, 7, 2, 64, 11), (3, 1, 1, 6, 30), (2, 9, 5, 66, 3)] {
        let (rot_gpu, rot_cpu) = (Rotary::new(d, 10_000.0, 64, &dev)?, Rotary::new(d, 10_000.0, 64, &Device::Cpu)?);
        let on_gpu = |x: &[Tensor]| rot_gpu.to_heads(&x[0], offset);
        let on_cpu = |x: &[Tensor]| rot_cpu.to_heads(&x[0], offset);
        check("rotary", &dev, &[&[b, t, h, d]], &[b, h, t, d], &on_gpu, &on_cpu)?;
    }
    Ok(())
}

#[test]
#[ignore = "needs a GPU: scripts/gpu-check"]
fn swiglu_kernels_match_the_cpu_twin() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let f = |t: &[Tensor]| fused::swiglu(&t[0], &t[1]);
    for shape in [&[3usize, 5, 7][..], &[1, 16_385][..], &[4, 1536][..]] {
        check("swiglu", &dev, &[shape, shape], shape, &f, &f)?;
    }
    Ok(())
}
