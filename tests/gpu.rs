//! wick's CUDA path on a GPU, through the same library calls as `wick selftest` (which the GPU
//! pack runs where there is no Rust toolchain): every kernel case against the composite ops on
//! the CPU, and the LoRA training check against the CPU's f32 figures. Every test is `#[ignore]`:
//! they need a GPU and the `cuda` feature (`cargo test --release --features cuda --test gpu --
//! --ignored`). Built without the feature they compile and return at once.

use candle_core::Device;

/// The GPU, or None (skip) when built without the `cuda` feature. With the feature, a missing GPU
/// is an error: these tests only run when asked for with `--ignored`.
fn gpu() -> Option<Device> {
    if !cfg!(feature = "cuda") {
        eprintln!("gpu tests: built without the `cuda` feature; nothing to check");
        return None;
    }
    Some(Device::new_cuda(0).expect("the gpu tests need a CUDA GPU and driver"))
}

#[test]
#[ignore = "needs a GPU"]
fn every_kernel_case_passes_on_the_gpu_in_f32_f16_and_bf16() {
    let Some(dev) = gpu() else { return };
    wick::ops::self_check::set_strict(true);
    let cases = wick::selftest::kernels::run_kernel_cases(&dev);
    let failed: Vec<_> = cases.iter().filter(|c| !c.passed()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    for dtype in ["f32", "f16", "bf16"] {
        assert!(cases.iter().any(|c| c.dtype == dtype), "no {dtype} case ran");
    }
}

#[test]
#[ignore = "needs a GPU"]
fn lora_training_on_the_gpu_matches_the_cpu() {
    if gpu().is_none() {
        return;
    }
    let args = wick::selftest::SelftestArgs {
        device: "cuda:0".into(),
        arch: Some("assets/SmolLM2-135M-Instruct.Q4_1.gguf".into()),
        expected: None,
        write_expected: None,
        speed_sizes: Some(String::new()),
        speed_steps: 0,
        peak_tflops: None,
    };
    let report = wick::selftest::run_selftest(&args).unwrap();
    assert!(report.passed, "{}", report.render_lines());
    assert_eq!(report.training.len(), 2, "f32 and f16");
}
