//! The kernel cases of `wick selftest`: every fused op on the device, in every storage dtype its
//! kernels exist for, against candle's composite ops on the CPU in f32 — values and the gradient
//! of every input, on seeded inputs of odd sizes, ragged and fully masked rows, and sizes past one
//! thread block. The reference shares no code with the kernels under test.

use candle_core::{DType, Device, Result, Tensor, Var};
use serde::Serialize;

use crate::ops::self_check::{Kernel, uniform_values};
use crate::ops::{Rotary, fused};

/// Largest max|device − reference| / (1 + max|reference|) accepted, per storage dtype. The
/// reference gets the same inputs rounded to the dtype, so what is left is the kernels' output
/// rounding and f32 summation order (f16: 11-bit significand, bf16: 8-bit).
pub fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => 1e-2,
        DType::BF16 => 4e-2,
        _ => 1e-5,
    }
}

/// The storage dtypes the fused kernels exist for on `device`: f32 on the CPU, f32/f16/bf16 on CUDA.
pub fn dtypes(device: &Device) -> Vec<DType> {
    if device.is_cuda() { vec![DType::F32, DType::F16, DType::BF16] } else { vec![DType::F32] }
}

/// One kernel case's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct KernelCase {
    /// Op and shapes, e.g. "rms_norm [7, 13]".
    pub name: String,
    /// Storage dtype.
    pub dtype: String,
    /// Relative max difference of the output.
    pub value_diff: f32,
    /// Worst relative max difference over the inputs' gradients.
    pub grad_diff: f32,
    /// The tolerance both must be under.
    pub tolerance: f32,
    /// Whether the fused kernel (not the composite fallback) ran on the device.
    pub fused: bool,
    /// Why the case could not run, if it could not.
    pub error: Option<String>,
}

impl KernelCase {
    /// Ran, took the fused kernel, and both differences are under the tolerance.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.fused && self.value_diff <= self.tolerance && self.grad_diff <= self.tolerance
    }
}

type Op<'a> = &'a dyn Fn(&[Tensor]) -> Result<Tensor>;

fn rel_diff(a: &Tensor, reference: &Tensor) -> Result<f32> {
    let scale = reference.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let diff = (a - reference)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    Ok(diff / (1.0 + scale))
}

/// Seeded values in [-scale, scale) rounded to `dtype`, as f32 on the CPU.
fn seeded(shape: &[usize], seed: u64, scale: f32, dtype: DType) -> Result<Tensor> {
    let v: Vec<f32> = uniform_values(shape.iter().product(), seed).into_iter().map(|x| x * scale).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)?.to_dtype(DType::F32)
}

/// `f` on `data` cast to `dtype` on `device`, as Vars: the output and every input's gradient
/// under the loss Σ y·probe, all back on the CPU in f32.
fn run_on(data: &[Tensor], dtype: DType, device: &Device, f: Op, probe: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
    let vars: Vec<Var> = data.iter().map(|t| Var::from_tensor(&t.to_dtype(dtype)?.to_device(device)?)).collect::<Result<_>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts)?;
    if y.dtype() != dtype {
        candle_core::bail!("output dtype {:?}, expected {dtype:?}", y.dtype());
    }
    let grads = y.to_dtype(DType::F32)?.broadcast_mul(&probe.to_device(device)?)?.sum_all()?.backward()?;
    let back = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F32);
    let g = ts
        .iter()
        .map(|t| back(grads.get(t).ok_or_else(|| candle_core::Error::Msg("an input got no gradient".into()))?))
        .collect::<Result<_>>()?;
    Ok((back(&y)?, g))
}

/// One op on `device` against the composite reference on the CPU, for every dtype. `inputs` are
/// (shape, scale, offset) of each input; `kernel` decides whether the fused path ran.
struct Case<'a> {
    name: String,
    kernel: Kernel,
    inputs: Vec<(Vec<usize>, f32, f32)>,
    out_shape: Vec<usize>,
    on_device: Op<'a>,
    reference: Op<'a>,
}

fn run_case(case: &Case, device: &Device, seed: u64, out: &mut Vec<KernelCase>) {
    for dtype in dtypes(device) {
        let mut result = KernelCase {
            name: case.name.clone(),
            dtype: format!("{dtype:?}").to_lowercase(),
            value_diff: f32::NAN,
            grad_diff: f32::NAN,
            tolerance: tolerance(dtype),
            fused: false,
            error: None,
        };
        let outcome = (|| -> Result<()> {
            let data: Vec<Tensor> = case
                .inputs
                .iter()
                .enumerate()
                .map(|(i, (shape, scale, offset))| seeded(shape, seed + i as u64, *scale, dtype)? + *offset as f64)
                .collect::<Result<_>>()?;
            let data: Vec<Tensor> = data.iter().map(|t| t.to_dtype(dtype)?.to_dtype(DType::F32)).collect::<Result<_>>()?;
            let probe = seeded(&case.out_shape, seed + 100, 1.0, dtype)?;
            fused::use_composites(true);
            let reference = run_on(&data, DType::F32, &Device::Cpu, case.reference, &probe);
            fused::use_composites(false);
            let (y_ref, g_ref) = reference?;
            let probe_input = data[0].to_dtype(dtype)?.to_device(device)?;
            result.fused = fused::kernel_applies(case.kernel, &probe_input)?;
            let (y, g) = run_on(&data, dtype, device, case.on_device, &probe)?;
            if y.dims() != y_ref.dims() {
                candle_core::bail!("output shape {:?}, reference {:?}", y.dims(), y_ref.dims());
            }
            result.value_diff = rel_diff(&y, &y_ref)?;
            result.grad_diff = 0.0;
            for (a, b) in g.iter().zip(&g_ref) {
                result.grad_diff = result.grad_diff.max(rel_diff(a, b)?);
            }
            Ok(())
        })();
        if let Err(e) = outcome {
            result.error = Some(e.to_string().lines().next().unwrap_or("").to_string());
        }
        out.push(result);
    }
}

/// Every kernel case on `device` (the cases tests/gpu.rs ran), in order.
pub fn run_kernel_cases(device: &Device) -> Vec<KernelCase> {
    let mut out = Vec::new();
    let rms = |t: &[Tensor]| fused::rms_norm(&t[0], &t[1], 1e-5);
    for (rows, d) in [(7usize, 13usize), (3, 576), (33, 5), (5, 1537)] {
        let case = Case {
            name: format!("rms_norm [{rows}, {d}]"),
            kernel: Kernel::RmsNorm,
            inputs: vec![(vec![rows, d], 1.0, 0.0), (vec![d], 0.5, 1.0)],
            out_shape: vec![rows, d],
            on_device: &rms,
            reference: &rms,
        };
        run_case(&case, device, 1, &mut out);
    }
    let case = Case {
        name: "rms_norm [2, 5, 9]".into(),
        kernel: Kernel::RmsNorm,
        inputs: vec![(vec![2, 5, 9], 1.0, 0.0), (vec![9], 0.5, 1.0)],
        out_shape: vec![2, 5, 9],
        on_device: &rms,
        reference: &rms,
    };
    run_case(&case, device, 2, &mut out);

    // (batch, heads, queries, prefix, lengths): ragged, zero-length rows, rows longer than a block.
    let softmax_cases: [(usize, usize, usize, usize, Vec<usize>); 5] = [
        (3, 2, 5, 0, vec![5, 3, 1]),
        (2, 3, 7, 4, vec![7, 2]),
        (2, 1, 3, 0, vec![0, 3]),
        (2, 3, 37, 11, vec![37, 20]),
        (1, 2, 3, 700, vec![2]),
    ];
    for (b, h, t, prefix, lengths) in &softmax_cases {
        let s = prefix + t;
        let f = |x: &[Tensor]| fused::masked_softmax(&x[0], lengths, 0.37);
        let case = Case {
            name: format!("masked_softmax [{b}, {h}, {t}, {s}] lengths {lengths:?}"),
            kernel: Kernel::MaskedSoftmax,
            inputs: vec![(vec![*b, *h, *t, s], 3.0, 0.0)],
            out_shape: vec![*b, *h, *t, s],
            on_device: &f,
            reference: &f,
        };
        run_case(&case, device, 3, &mut out);
    }

    for (b, t, h, d, offset) in [(2usize, 5usize, 3usize, 8usize, 0usize), (1, 7, 2, 64, 11), (3, 1, 1, 6, 30), (2, 9, 5, 66, 3)] {
        let tables = Rotary::new(d, 10_000.0, 64, device).and_then(|g| Ok((g, Rotary::new(d, 10_000.0, 64, &Device::Cpu)?)));
        let (rot_dev, rot_cpu) = match tables {
            Ok(t) => t,
            Err(e) => {
                out.push(KernelCase {
                    name: format!("rotary [{b}, {t}, {h}, {d}]"),
                    dtype: "all".into(),
                    value_diff: f32::NAN,
                    grad_diff: f32::NAN,
                    tolerance: 0.0,
                    fused: false,
                    error: Some(format!("rotary tables: {e}")),
                });
                continue;
            }
        };
        let on_device = |x: &[Tensor]| rot_dev.to_heads(&x[0], offset);
        let reference = |x: &[Tensor]| rot_cpu.to_heads(&x[0], offset);
        let case = Case {
            name: format!("rotary [{b}, {t}, {h}, {d}] offset {offset}"),
            kernel: Kernel::Rope,
            inputs: vec![(vec![b, t, h, d], 1.0, 0.0)],
            out_shape: vec![b, h, t, d],
            on_device: &on_device,
            reference: &reference,
        };
        run_case(&case, device, 4, &mut out);
    }

    let swiglu = |t: &[Tensor]| fused::swiglu(&t[0], &t[1]);
    for shape in [vec![3usize, 5, 7], vec![1, 16_385], vec![4, 1536]] {
        let case = Case {
            name: format!("swiglu {shape:?}"),
            kernel: Kernel::Swiglu,
            inputs: vec![(shape.clone(), 4.0, 0.0), (shape.clone(), 1.0, 0.0)],
            out_shape: shape,
            on_device: &swiglu,
            reference: &swiglu,
        };
        run_case(&case, device, 5, &mut out);
    }
    out.extend(fully_masked_rows(device));
    out
}

/// A row whose length is 0 must come out exactly 0 (no NaN from an empty softmax), per dtype.
fn fully_masked_rows(device: &Device) -> Vec<KernelCase> {
    dtypes(device)
        .into_iter()
        .map(|dtype| {
            let mut case = KernelCase {
                name: "masked_softmax fully masked row is 0".into(),
                dtype: format!("{dtype:?}").to_lowercase(),
                value_diff: f32::NAN,
                grad_diff: 0.0,
                tolerance: 0.0,
                fused: false,
                error: None,
            };
            let run = || -> Result<(bool, f32)> {
                let x = seeded(&[1, 2, 3, 3], 9, 1.0, dtype)?.to_dtype(dtype)?.to_device(device)?;
                let fused = fused::kernel_applies(Kernel::MaskedSoftmax, &x)?;
                let p = fused::masked_softmax(&x, &[0], 1.0)?.to_dtype(DType::F32)?;
                Ok((fused, p.abs()?.sum_all()?.to_scalar::<f32>()?))
            };
            match run() {
                Ok((fused, sum)) => {
                    case.fused = fused;
                    case.value_diff = sum;
                }
                Err(e) => case.error = Some(e.to_string().lines().next().unwrap_or("").to_string()),
            }
            case
        })
        .collect()
}
