//! `wick selftest` on the CPU, and the GPU pack's run script on a machine with no GPU: the
//! acceptance of the GPU pack when no GPU is lent (scripts/gpu-pack, scripts/gpu-run).

use std::path::Path;
use std::process::{Command, Output};

use candle_core::Device;
use wick::ops::self_check::{Kernel, break_for_tests};

const GGUF: &str = "assets/SmolLM2-135M-Instruct.Q4_1.gguf";

fn wick(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wick")).args(args).output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The last stdout line, the report.
fn report(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("the last line is JSON")
}

/// A small llama architecture as an HF config.json.
fn tiny_arch(dir: &Path) -> String {
    let cfg = serde_json::json!({
        "model_type": "llama", "vocab_size": 512, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": true, "max_position_embeddings": 128
    });
    let path = dir.join("config.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn selftest_passes_on_the_cpu_with_the_real_architecture_and_writes_the_expected_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = tmp.path().join("expected.json");
    let args = [
        "selftest",
        "--device",
        "cpu",
        "--arch",
        GGUF,
        "--write-expected",
        expected.to_str().unwrap(),
        "--speed-sizes",
        "2x16",
        "--speed-steps",
        "1",
    ];
    let out = wick(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let r = report(&stdout);
    assert_eq!(r["passed"], true);
    // Every kernel case of every op ran, and took the fused kernel.
    let kernels = r["kernels"].as_array().unwrap();
    for op in ["rms_norm", "masked_softmax", "rotary", "swiglu"] {
        assert!(kernels.iter().filter(|k| k["name"].as_str().unwrap().starts_with(op)).count() >= 3, "{op}");
    }
    assert!(kernels.iter().all(|k| k["fused"] == true));
    // The architecture is the GGUF's, and the random model learns over the five steps.
    assert_eq!((r["arch"]["hidden_size"].as_u64(), r["arch"]["num_hidden_layers"].as_u64()), (Some(576), Some(30)));
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&expected).unwrap()).unwrap();
    let losses: Vec<f64> = e["f32"]["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(losses.len(), 5);
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "{losses:?}");
    assert!(r["speed"][0]["train_tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_training_trace_off_by_more_than_its_tolerance_fails_and_the_exit_code_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let arch = tiny_arch(tmp.path());
    let expected = tmp.path().join("expected.json");
    let out = wick(&["selftest", "--device", "cpu", "--arch", &arch, "--write-expected", expected.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));

    // The same figures pass again from the file.
    let exp = expected.to_str().unwrap();
    let out = wick(&["selftest", "--device", "cpu", "--expected", exp]);
    let (stdout, _) = text(&out);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("PASS training f32 on cpu vs CPU f32: loss "), "{stdout}");

    // One loss 0.1% off is ten times the f32 tolerance.
    let mut e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&expected).unwrap()).unwrap();
    let l = e["f32"]["losses"][3].as_f64().unwrap();
    e["f32"]["losses"][3] = serde_json::json!(l * 1.001);
    std::fs::write(&expected, e.to_string()).unwrap();
    let out = wick(&["selftest", "--device", "cpu", "--expected", exp]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.lines().any(|l| l.starts_with("FAIL training f32 on cpu vs CPU f32: loss 9.99e-4 (tolerance 1e-4)")), "{stdout}");
    assert!(stderr.contains("selftest checks failed"), "{stderr}");
    assert_eq!(report(&stdout)["passed"], false);
}

#[test]
fn selftest_input_errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("expected.json");
    std::fs::write(&bad, "{\"nope\": 1}").unwrap();
    for (args, want) in [
        (vec!["selftest", "--device", "cpu", "--expected", bad.to_str().unwrap()], "not a selftest expected file"),
        (vec!["selftest", "--device", "cpu", "--arch", "/nonexistent/model.gguf"], "no architecture at /nonexistent/model.gguf"),
        (vec!["selftest", "--device", "cpu", "--speed-sizes", "16by64", "--arch", GGUF], "is not BATCHxSEQ"),
    ] {
        let out = wick(&args);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
    }
}

#[test]
fn the_pack_run_script_stops_with_its_no_driver_line_on_a_machine_without_a_gpu() {
    // An empty pack folder: the driver check comes before anything in it is touched.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy("scripts/gpu-run", tmp.path().join("run")).unwrap();
    let out = Command::new("bash").arg(tmp.path().join("run")).env("PATH", "/usr/bin:/bin").output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("gpu-run: no NVIDIA driver here (no nvidia-smi)"), "{stderr}");
}

#[test]
fn a_broken_kernel_fails_its_selftest_cases_and_only_those() {
    // In process: the switch and the kernels' verdicts are per process (this is the only test
    // of this binary that runs kernels here).
    wick::ops::self_check::set_strict(true);
    break_for_tests(Kernel::Swiglu, true);
    let cases = wick::selftest::kernels::run_kernel_cases(&Device::Cpu);
    for case in &cases {
        let is_swiglu = case.name.starts_with("swiglu");
        assert_eq!(case.passed(), !is_swiglu, "{case:?}");
        if is_swiglu {
            assert!(case.error.as_deref().unwrap_or("").contains("SwiGLU"), "{case:?}");
        }
    }
}
