//! The fused CPU ops against the composite candle ops they replace: values and gradients agree
//! within 1e-5 on random, odd-sized shapes.

use candle_core::{DType, Device, Result, Tensor, Var};
use wick::ops::{self, Rotary, fused};

const TOL: f32 = 1e-5;

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

/// max |a−b| / (1 + max |b|), so large gradients are compared relatively.
fn rel_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    Ok(max_diff(a, b)? / (1.0 + scale))
}

/// Values and the gradients of every input under a random linear loss, for one function.
fn run(inputs: &[Var], f: &dyn Fn(&[Tensor]) -> Result<Tensor>, probe: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
    let ts: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts)?;
    let grads = (y.broadcast_mul(probe)?).sum_all()?.backward()?;
    let g = ts.iter().map(|t| grads.get(t).cloned().unwrap_or_else(|| t.zeros_like().unwrap())).collect();
    Ok((y, g))
}

fn compare(
    name: &str,
    shapes: &[&[usize]],
    out_shape: &[usize],
    fused_f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    reference: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<()> {
    let dev = Device::Cpu;
    let inputs: Vec<Var> = shapes.iter().map(|s| Var::randn(0f32, 1.0, *s, &dev)).collect::<Result<_>>()?;
    let probe = Tensor::randn(0f32, 1.0, out_shape, &dev)?;
    let (y1, g1) = run(&inputs, fused_f, &probe)?;
    let (y2, g2) = run(&inputs, reference, &probe)?;
    assert_eq!(y1.dims(), y2.dims(), "{name}: shapes");
    let dv = rel_diff(&y1, &y2)?;
    assert!(dv < TOL, "{name}: values differ by {dv}");
    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
        let dg = rel_diff(a, b)?;
        assert!(dg < TOL, "{name}: gradient of input {i} differs by {dg}");
        assert!(b.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0, "{name}: reference gradient {i} is zero");
    }
    Ok(())
}

#[test]
fn rms_norm_matches_composite_in_values_and_gradients() -> Result<()> {
    for &(rows, d) in &[(7usize, 13usize), (3, 576), (33, 5)] {
        let f = |t: &[Tensor]| fused::rms_norm(&t[0], &t[1], 1e-5);
        let r = |t: &[Tensor]| ops::rms_norm(&t[0], &t[1], 1e-5);
        compare("rms_norm", &[&[rows, d], &[d]], &[rows, d], &f, &r)?;
    }
    // Inputs with a batch axis take the same path.
    let f = |t: &[Tensor]| fused::rms_norm(&t[0], &t[1], 1e-6);
    let r = |t: &[Tensor]| ops::rms_norm(&t[0], &t[1], 1e-6);
    compare("rms_norm 3d", &[&[2, 5, 9], &[9]], &[2, 5, 9], &f, &r)
}

#[test]
fn masked_softmax_matches_composite_with_prefix_causality_and_padding() -> Result<()> {
    // (batch, heads, queries, prefix) with ragged lengths, including a zero-length row.
    for &(b, h, t, prefix, ref lengths) in
        &[(3usize, 2usize, 5usize, 0usize, vec![5usize, 3, 1]), (2, 3, 7, 4, vec![7, 2]), (2, 1, 3, 0, vec![0, 3])]
    {
        let s = prefix + t;
        let f = |x: &[Tensor]| fused::masked_softmax(&x[0], lengths, 0.37);
        let r = |x: &[Tensor]| fused::masked_softmax_composite(&x[0], lengths, 0.37);
        compare("masked_softmax", &[&[b, h, t, s]], &[b, h, t, s], &f, &r)?;
    }
    Ok(())
}

#[test]
fn fully_masked_softmax_rows_are_zero_not_nan() -> Result<()> {
    let x = Tensor::randn(0f32, 1.0, (1, 2, 3, 3), &Device::Cpu)?;
    let p = fused::masked_softmax(&x, &[0], 1.0)?;
    assert_eq!(p.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
    Ok(())
}

#[test]
fn rotary_to_heads_matches_transpose_then_rotate() -> Result<()> {
    let dev = Device::Cpu;
    for &(b, t, h, d, offset) in &[(2usize, 5usize, 3usize, 8usize, 0usize), (1, 7, 2, 64, 11), (3, 1, 1, 6, 30)] {
        let rot = Rotary::new(d, 10_000.0, 64, &dev)?;
        let f = |x: &[Tensor]| rot.to_heads(&x[0], offset);
        let r = |x: &[Tensor]| rot.apply(&x[0].transpose(1, 2)?, offset);
        compare("rotary", &[&[b, t, h, d]], &[b, h, t, d], &f, &r)?;
    }
    Ok(())
}

#[test]
fn swiglu_matches_composite_in_values_and_gradients() -> Result<()> {
    for shape in [&[3usize, 5, 7][..], &[1, 16_385][..], &[4, 1536][..]] {
        let f = |t: &[Tensor]| fused::swiglu(&t[0], &t[1]);
        let r = |t: &[Tensor]| ops::swiglu(&t[0], &t[1]);
        compare("swiglu", &[shape, shape], shape, &f, &r)?;
    }
    Ok(())
}

#[test]
fn other_dtypes_fall_back_to_the_composites() -> Result<()> {
    let x = Tensor::randn(0f32, 1.0, (4, 6), &Device::Cpu)?;
    let w = Tensor::randn(0f32, 1.0, 6, &Device::Cpu)?;
    let (xh, wh) = (x.to_dtype(DType::BF16)?, w.to_dtype(DType::BF16)?);
    let half = fused::rms_norm(&xh, &wh, 1e-5)?;
    assert_eq!(half.dtype(), DType::BF16);
    let d = max_diff(&half.to_dtype(DType::F32)?, &fused::rms_norm(&x, &w, 1e-5)?)?;
    assert!(d < 0.05, "bf16 composite vs f32 fused: {d}");
    Ok(())
}
