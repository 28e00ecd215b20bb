//! `wick selftest`: proof that a device computes what the CPU computes, with no model file and
//! no network — what the GPU pack (scripts/gpu-pack) runs on a GPU machine.
//!
//! Three parts, each a list of pass/fail checks:
//! 1. every fused kernel against candle's composite ops on the CPU ([`kernels`]);
//! 2. a few LoRA training steps of a model of the real architecture with seeded random weights,
//!    in f32 and f16, against the CPU's f32 figures ([`training`]): shipped in an expected file
//!    written here, or computed in the same process;
//! 3. training and forward throughput with MFU against the matmul rate measured in the same run
//!    ([`speed`]).
//!
//! Kernels run under `--strict-kernels` semantics: a kernel that fails its first-use check is a
//! failed case, not a silent fallback.

pub mod kernels;
pub mod speed;
pub mod training;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::ArchConfig;
pub use kernels::KernelCase;
pub use speed::SpeedFigure;
pub use training::{TrainingSetup, TrainingTrace};

/// The default model's GGUF, whose header gives the architecture when `--arch` is not given.
pub const DEFAULT_ARCH: &str = "assets/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Arguments of `wick selftest`.
#[derive(Debug, Clone)]
pub struct SelftestArgs {
    /// Device to check: cpu, cuda:N, or auto.
    pub device: String,
    /// Architecture of the random model: a GGUF file (only its header is read), an HF folder or a
    /// config.json [default: assets/SmolLM2-135M-Instruct.Q4_1.gguf].
    pub arch: Option<PathBuf>,
    /// CPU figures to hold the training check against (from --write-expected; it holds the
    /// architecture and the setup too).
    pub expected: Option<PathBuf>,
    /// Write this run's f32 training figures, architecture and setup here (CPU only).
    pub write_expected: Option<PathBuf>,
    /// Speed sizes as BATCHxSEQ, comma-separated [default: 16x64,64x512 on CUDA, none on the CPU].
    pub speed_sizes: Option<String>,
    /// Timed steps per speed size.
    pub speed_steps: usize,
    /// Dense f16 peak of the device, TFLOP/s: MFU is then also given against it.
    pub peak_tflops: Option<f64>,
}

/// The figures `--write-expected` writes and `--expected` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Expected {
    /// wick's version that wrote it.
    pub wick_version: String,
    /// Architecture of the random model.
    pub arch: ArchConfig,
    /// The training steps run.
    pub setup: TrainingSetup,
    /// The CPU's f32 figures.
    pub f32: TrainingTrace,
}

/// One pass/fail line.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// The figures behind the verdict.
    pub detail: String,
}

/// A training trace and how far it is from its reference.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingResult {
    /// The device's figures.
    pub trace: TrainingTrace,
    /// Where the reference came from.
    pub reference: String,
    /// Worst relative loss difference.
    pub loss_diff: f64,
    /// Worst relative gradient-norm difference.
    pub grad_norm_diff: f64,
    /// Tolerances (loss, gradient norm).
    pub tolerances: (f64, f64),
}

/// Everything `wick selftest` measured (its one JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct SelftestReport {
    /// wick's version.
    pub wick_version: String,
    /// The device checked.
    pub device: String,
    /// Architecture of the random model.
    pub arch: ArchConfig,
    /// Non-embedding parameters N.
    pub nonembedding_params: usize,
    /// Every kernel case.
    pub kernels: Vec<KernelCase>,
    /// The CPU f32 reference trace the training checks were held against.
    pub reference_f32: TrainingTrace,
    /// The device's training traces.
    pub training: Vec<TrainingResult>,
    /// Dense matmul rate, TFLOP/s, and its dtype, when speed was measured.
    pub matmul_tflops: Option<(f64, String)>,
    /// Speed at each size.
    pub speed: Vec<SpeedFigure>,
    /// Every pass/fail line.
    pub checks: Vec<Check>,
    /// All checks passed.
    pub passed: bool,
    /// Wall seconds.
    pub seconds: f64,
}

impl SelftestReport {
    /// One `PASS`/`FAIL` line per check.
    pub fn render_lines(&self) -> String {
        self.checks.iter().map(|c| format!("{} {}: {}\n", if c.passed { "PASS" } else { "FAIL" }, c.name, c.detail)).collect()
    }
}

/// The architecture of `path`: a GGUF header, an HF folder's config.json, or a config.json.
pub fn read_arch(path: &Path) -> Result<ArchConfig> {
    let origin = path.display().to_string();
    if path.is_dir() {
        return read_arch(&path.join("config.json"));
    }
    if path.extension().is_some_and(|e| e == "gguf") {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let ct = candle_core::quantized::gguf_file::Content::read(&mut std::io::BufReader::new(file))
            .map_err(|e| Error::Model(format!("{origin}: not a readable GGUF file ({e})")))?;
        return ArchConfig::from_gguf(&ct, &origin, ct.tensor_infos.contains_key("output.weight"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    ArchConfig::from_hf_json(&text, &origin)
}

/// Parse "16x64,64x512".
pub fn parse_sizes(text: &str) -> Result<Vec<(usize, usize)>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let (b, t) = s.trim().split_once('x').unwrap_or(("", ""));
            match (b.parse::<usize>(), t.parse::<usize>()) {
                (Ok(b), Ok(t)) if b > 0 && t > 0 => Ok((b, t)),
                _ => Err(Error::Config(format!("--speed-sizes: {s:?} is not BATCHxSEQ (e.g. 16x64)"))),
            }
        })
        .collect()
}

fn dtype_name(dtype: DType) -> String {
    format!("{dtype:?}").to_lowercase()
}

fn fmt_trace(t: &TrainingTrace) -> String {
    let losses: Vec<String> = t.losses.iter().map(|l| format!("{l:.6}")).collect();
    let norms: Vec<String> = t.grad_norms.iter().map(|g| format!("{g:.4e}")).collect();
    format!("losses [{}], grad norms [{}]", losses.join(", "), norms.join(", "))
}

/// Run the self-test as `args` say.
pub fn run_selftest(args: &SelftestArgs) -> Result<SelftestReport> {
    let started = Instant::now();
    let device = crate::model::select_device(&args.device)?;
    let device_name = match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        _ => "cpu".to_string(),
    };
    if args.write_expected.is_some() && !device.is_cpu() {
        return Err(Error::Config("--write-expected records the CPU's figures: use it with --device cpu".into()));
    }
    // Every flag is read before the first check runs: a bad one costs nothing.
    let sizes = match &args.speed_sizes {
        Some(s) => parse_sizes(s)?,
        None if device.is_cuda() => vec![(16, 64), (64, 512)],
        None => Vec::new(),
    };
    let expected: Option<Expected> = match &args.expected {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            Some(
                serde_json::from_str(&text)
                    .map_err(|e| Error::Config(format!("{}: not a selftest expected file ({e})", path.display())))?,
            )
        }
        None => None,
    };
    let (arch, setup) = match &expected {
        Some(e) => (e.arch.clone(), e.setup.clone()),
        None => {
            let path = args.arch.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_ARCH));
            if !path.exists() {
                return Err(Error::Config(format!(
                    "selftest: no architecture at {} (give --arch MODEL or --expected FILE, or run scripts/fetch-assets)",
                    path.display()
                )));
            }
            {
                let arch = read_arch(&path)?;
                let setup = TrainingSetup::for_vocab(arch.vocab_size);
                (arch, setup)
            }
        }
    };
    if let Some(bad) = setup.label_ids.iter().find(|&&id| id as usize >= arch.vocab_size) {
        return Err(Error::Config(format!("selftest: label id {bad} is outside the vocabulary of {} tokens", arch.vocab_size)));
    }
    crate::ops::self_check::set_strict(true);
    let mut checks = Vec::new();

    // 1. Kernels.
    let kernels = kernels::run_kernel_cases(&device);
    for k in &kernels {
        let detail = match &k.error {
            Some(e) => format!("error: {e}"),
            None if !k.fused => "the fused kernel did not run (composite fallback)".into(),
            None => format!("values {:.2e}, gradients {:.2e} (tolerance {:.0e})", k.value_diff, k.grad_diff, k.tolerance),
        };
        checks.push(Check { name: format!("kernel {} {}", k.name, k.dtype), passed: k.passed(), detail });
    }

    // 2. Training, f32 then f16, against the CPU's f32 figures.
    let f32_trace = training::run_trace(&arch, &setup, DType::F32, &device)?;
    let (reference, reference_from) = match &expected {
        Some(e) => (e.f32.clone(), format!("CPU f32 figures in {}", args.expected.as_deref().unwrap_or(Path::new("?")).display())),
        None if device.is_cpu() => (f32_trace.clone(), "this run (CPU f32)".to_string()),
        None => (training::run_trace(&arch, &setup, DType::F32, &Device::Cpu)?, "CPU f32, computed in this run".to_string()),
    };
    if let Some(path) = &args.write_expected {
        let e =
            Expected { wick_version: env!("CARGO_PKG_VERSION").into(), arch: arch.clone(), setup: setup.clone(), f32: f32_trace.clone() };
        let text = serde_json::to_string_pretty(&e).map_err(|e| Error::Model(format!("expected file: {e}")))?;
        crate::model::load::write_atomic(path, text.as_bytes())?;
    }
    let learns = reference.losses.last().zip(reference.losses.first()).is_some_and(|(last, first)| last < first);
    checks.push(Check {
        name: "training reference learns".into(),
        passed: learns && reference.grad_norms.iter().all(|g| g.is_finite() && *g > 0.0),
        detail: format!("{} ({reference_from})", fmt_trace(&reference)),
    });
    let mut training_results = Vec::new();
    let half_runs = device.is_cuda() || crate::ops::half_gemm_available();
    let dtypes: Vec<DType> = if half_runs { vec![DType::F32, DType::F16] } else { vec![DType::F32] };
    for dtype in dtypes {
        let trace = if dtype == DType::F32 { f32_trace.clone() } else { training::run_trace(&arch, &setup, dtype, &device)? };
        let (loss_diff, grad_norm_diff) = training::trace_diff(&trace, &reference);
        let tolerances = training::tolerances(dtype);
        let scaler = format!(
            "loss scale {} after {} steps, {} skipped",
            trace.loss_scales.last().copied().unwrap_or(1.0),
            trace.losses.len(),
            trace.skipped
        );
        checks.push(Check {
            name: format!("training {} on {device_name} vs CPU f32", dtype_name(dtype)),
            passed: loss_diff <= tolerances.0 && grad_norm_diff <= tolerances.1,
            detail: format!(
                "loss {loss_diff:.2e} (tolerance {:.0e}), grad norm {grad_norm_diff:.2e} (tolerance {:.0e}); {}; {scaler}",
                tolerances.0,
                tolerances.1,
                fmt_trace(&trace)
            ),
        });
        training_results.push(TrainingResult { trace, reference: reference_from.clone(), loss_diff, grad_norm_diff, tolerances });
    }
    if !half_runs {
        checks.push(Check {
            name: "training f16".into(),
            passed: true,
            detail: "skipped: the CPU f16 path needs MKL's hgemm (scripts/install-mkl)".into(),
        });
    }

    // 3. Speed.
    let mut speed = Vec::new();
    let mut matmul = None;
    if !sizes.is_empty() {
        let (dtype, n) = if device.is_cuda() { (DType::F16, 8192) } else { (DType::F32, 1024) };
        let rate = speed::matmul_tflops(&device, dtype, n, 10).map_err(|e| Error::Model(format!("selftest matmul rate: {e}")))?;
        matmul = Some((rate, dtype_name(dtype)));
        checks.push(Check {
            name: format!("matmul rate {} {n}³", dtype_name(dtype)),
            passed: rate > 0.0,
            detail: format!("{rate:.1} TFLOP/s"),
        });
        for size in sizes {
            let figure = speed::measure(&arch, &setup, dtype, &device, size, args.speed_steps, (rate, args.peak_tflops))?;
            let peak = figure
                .mfu_vs_peak
                .map_or(String::new(), |m| format!(", MFU {:.1}% of the {:.0} TFLOP/s peak", 100.0 * m, args.peak_tflops.unwrap_or(0.0)));
            checks.push(Check {
                name: format!("speed {}x{} {}", figure.batch, figure.seq, figure.dtype),
                passed: figure.train_tokens_per_s.is_finite() && figure.train_tokens_per_s > 0.0,
                detail: format!(
                    "train {:.0} tokens/s ({:.1} TFLOP/s on the 4N basis, {:.1}% of the measured matmul rate{peak}), forward {:.0} tokens/s",
                    figure.train_tokens_per_s,
                    figure.train_tflops,
                    100.0 * figure.mfu_vs_measured,
                    figure.forward_tokens_per_s
                ),
            });
            speed.push(figure);
        }
    }
    let passed = checks.iter().all(|c| c.passed);
    Ok(SelftestReport {
        wick_version: env!("CARGO_PKG_VERSION").into(),
        device: device_name,
        nonembedding_params: arch.non_embedding_params(),
        arch,
        kernels,
        reference_f32: reference,
        training: training_results,
        matmul_tflops: matmul,
        speed,
        checks,
        passed,
        seconds: started.elapsed().as_secs_f64(),
    })
}
