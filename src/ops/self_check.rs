//! Fused kernels that check themselves. On its first use in a process, for each device and
//! dtype, every fused op (RMSNorm, masked softmax, rotary, SwiGLU) runs once on a tiny input with
//! odd sizes against candle's composite ops on the same device, values and gradients. A kernel
//! that differs beyond its tolerance, or fails to launch, is reported once, naming it and the
//! error, and the composite ops are used for it for the rest of the run: a user on an untested
//! GPU gets correct numbers, only slower. [`set_strict`] (`--strict-kernels`) turns that into an
//! error, for CI on a GPU.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, DeviceLocation, Result};

/// The fused kernels that check themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// RMSNorm over the last dimension.
    RmsNorm,
    /// Masked (prefix, causal, padded) attention softmax.
    MaskedSoftmax,
    /// Rotary embedding fused with the head transpose.
    Rope,
    /// SiLU(gate) · up.
    Swiglu,
}

impl Kernel {
    /// Every kernel.
    pub const ALL: [Kernel; 4] = [Kernel::RmsNorm, Kernel::MaskedSoftmax, Kernel::Rope, Kernel::Swiglu];

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::RmsNorm => "RMSNorm",
            Kernel::MaskedSoftmax => "masked softmax",
            Kernel::Rope => "rotary",
            Kernel::Swiglu => "SwiGLU",
        }
    }

    /// Largest |fused − composite| accepted, on inputs of unit scale.
    pub fn tolerance(self, dtype: DType) -> f32 {
        match dtype {
            DType::F16 => 2e-2,
            DType::BF16 => 6e-2,
            _ => 1e-4,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

static STRICT: AtomicBool = AtomicBool::new(false);
static BROKEN: [AtomicBool; 4] = [const { AtomicBool::new(false) }; 4];
/// (kernel, device, dtype) → None when trusted, Some(why) when not.
type Verdicts = HashMap<(Kernel, DeviceLocation, DType), Option<String>>;
static VERDICTS: Mutex<Option<Verdicts>> = Mutex::new(None);
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Make a kernel that fails its check an error instead of a fallback (`--strict-kernels`).
pub fn set_strict(on: bool) {
    STRICT.store(on, Ordering::Relaxed);
}

/// Test-only: make `kernel`'s fused output wrong by +1 everywhere (a deliberately broken twin),
/// so the check's detection and fallback can be tested on the CPU.
#[doc(hidden)]
pub fn break_for_tests(kernel: Kernel, on: bool) {
    BROKEN[kernel.index()].store(on, Ordering::Relaxed);
}

/// Whether the test-only switch has broken `kernel`.
pub(crate) fn broken(kernel: Kernel) -> bool {
    BROKEN[kernel.index()].load(Ordering::Relaxed)
}

/// The warnings printed so far in this process (one per failed kernel, device and dtype).
pub fn warnings() -> Vec<String> {
    WARNINGS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `n` deterministic values in [-1, 1) from `seed` (xorshift64): the check's inputs, the same on
/// every device and run, with no seeded device RNG needed.
pub fn uniform_values(n: usize, seed: u64) -> Vec<f32> {
    let mut h = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            ((h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        other => format!("{:?}", other.location()).to_lowercase(),
    }
}

/// Whether `kernel`'s fused implementation may be used on `device` for `dtype`: `check` (the
/// fused kernel's largest difference from the composite ops) runs once per process and key, and
/// its verdict is remembered. Under [`set_strict`] a failed check is an error.
pub fn trusted(kernel: Kernel, device: &Device, dtype: DType, check: impl FnOnce() -> Result<f32>) -> Result<bool> {
    // A copyable key: this runs on every fused op call, so it must not allocate.
    let key = (kernel, device.location(), dtype);
    let known = VERDICTS.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new).get(&key).cloned();
    let verdict = match known {
        Some(v) => v,
        None => {
            // Checked outside the lock: the check runs the kernels, which must not wait on it.
            let v = match check() {
                Ok(diff) if diff <= kernel.tolerance(dtype) => None,
                Ok(diff) => Some(format!("differs from the composite ops by {diff:.2e} (tolerance {:.0e})", kernel.tolerance(dtype))),
                Err(e) => Some(format!("failed: {}", e.to_string().lines().next().unwrap_or(""))),
            };
            let mut guard = VERDICTS.lock().unwrap_or_else(|e| e.into_inner());
            let map = guard.get_or_insert_with(HashMap::new);
            if let Some(existing) = map.get(&key) {
                existing.clone()
            } else {
                map.insert(key, v.clone());
                if let Some(why) = &v {
                    let message = format!(
                        "the fused {} kernel on {} ({dtype:?}) {why}; using candle's composite ops for it for the rest of this run",
                        kernel.name(),
                        device_name(device)
                    );
                    tracing::warn!("{message}");
                    WARNINGS.lock().unwrap_or_else(|e| e.into_inner()).push(format!("wick: warning: {message}"));
                }
                v
            }
        }
    };
    match verdict {
        None => Ok(true),
        Some(why) if STRICT.load(Ordering::Relaxed) => {
            candle_core::bail!("the fused {} kernel on {} ({dtype:?}) {why} (--strict-kernels)", kernel.name(), device_name(device))
        }
        Some(_) => Ok(false),
    }
}
