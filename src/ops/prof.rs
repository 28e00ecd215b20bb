//! TEMPORARY profiler (not to be committed).
use std::sync::atomic::{AtomicU64, Ordering};
pub static T: [AtomicU64; 24] = [const { AtomicU64::new(0) }; 24];
pub const NAMES: [&str; 24] = [
    "fwd",
    "bwd",
    "opt",
    "f_to16",
    "f_hgemm",
    "f_from16",
    "b_to16",
    "b_hgemm",
    "b_from16",
    "rms_fwd",
    "rms_bwd",
    "sm_fwd",
    "sm_bwd",
    "rope_fwd",
    "rope_bwd",
    "swiglu_fwd",
    "swiglu_bwd",
    "lora_bwd_skinny",
    "lora_fwd_skinny",
    "",
    "",
    "",
    "",
    "",
];
pub fn add(i: usize, s: std::time::Instant) {
    T[i].fetch_add(s.elapsed().as_nanos() as u64, Ordering::Relaxed);
}
pub fn reset() {
    for t in &T {
        t.store(0, Ordering::Relaxed);
    }
}
pub fn dump(steps: usize) {
    for (i, t) in T.iter().enumerate() {
        let v = t.load(Ordering::Relaxed);
        if v > 0 {
            eprintln!("PROF {:>18} {:8.3} s/step", NAMES[i], v as f64 / 1e9 / steps as f64);
        }
    }
}
