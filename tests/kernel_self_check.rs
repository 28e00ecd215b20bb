//! Kernels that check themselves (`ops::self_check`), tested on the CPU with deliberately broken
//! twins. One test function: the checks' verdicts are per process, so the steps must run in order.

mod common;

use candle_core::{DType, Device, Tensor};
use wick::model::Batch;
use wick::ops::self_check::{Kernel, break_for_tests, set_strict, uniform_values, warnings};

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(uniform_values(shape.iter().product(), seed), shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn logits(m: &wick::model::LoadedModel, ids: &[u32]) -> Tensor {
    let input = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let h = m.model.forward_hidden(&Batch { input_ids: &input, lengths: &[ids.len()] }, None, false).unwrap();
    m.model.logits(&h).unwrap()
}

#[test]
fn a_broken_kernel_is_reported_once_and_replaced_by_the_composite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model_dir(tmp.path(), 4);
    let model = wick::model::load(&dir.display().to_string(), DType::F32, &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..23).map(|i| (i * 977 + 31) % 49_000).collect();
    // The reference: every op composite.
    wick::ops::fused::use_composites(true);
    let reference = logits(&model, &ids);
    wick::ops::fused::use_composites(false);

    // --strict-kernels: a kernel that fails its check is an error naming it, not a fallback.
    break_for_tests(Kernel::MaskedSoftmax, true);
    set_strict(true);
    let scores = rand(&[1, 2, 3, 3], 5);
    let err = wick::ops::fused::masked_softmax(&scores, &[3], 0.5).unwrap_err().to_string();
    assert!(err.contains("masked softmax") && err.contains("--strict-kernels"), "{err}");
    set_strict(false);
    let p = wick::ops::fused::masked_softmax(&scores, &[3], 0.5).unwrap();
    assert_eq!(max_diff(&p, &wick::ops::fused::masked_softmax_composite(&scores, &[3], 0.5).unwrap()), 0.0);
    assert_eq!(warnings().len(), 1);

    // RMSNorm's twin is broken before its first use: the check catches it, warns once, and the
    // model's numbers (masked softmax also falling back) are the composite path's.
    break_for_tests(Kernel::RmsNorm, true);
    let x = rand(&[4, 7, 33], 1);
    let w = (rand(&[33], 2) + 1.0).unwrap();
    let y = wick::ops::fused::rms_norm(&x, &w, 1e-5).unwrap();
    assert_eq!(max_diff(&y, &wick::ops::rms_norm(&x, &w, 1e-5).unwrap()), 0.0, "the composite must have run");
    let got = logits(&model, &ids);
    let d = max_diff(&got, &reference);
    assert!(d < 1e-4, "logits with the fallback differ from the composite path by {d}");
    let w = warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[1].contains("RMSNorm") && w[1].contains("cpu") && w[1].contains("composite"), "{}", w[1]);
    // The kernels that pass keep running fused, and nothing else is reported.
    let (g, u) = (rand(&[5, 19], 3), rand(&[5, 19], 4));
    let fused = wick::ops::fused::swiglu(&g, &u).unwrap();
    assert!(max_diff(&fused, &wick::ops::swiglu(&g, &u).unwrap()) < 1e-5);
    assert!(!wick::ops::fused::fused_applies(&x), "the whole-layer paths need every kernel");
    assert_eq!(warnings().len(), 2);
}
