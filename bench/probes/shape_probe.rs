//! GFLOP/s of wick's BLAS (`WICK_BLAS`, split over rayon's threads) on each GEMM shape of a
//! SmolLM2-135M layer, fused q/k/v and gate/up, and the LoRA factors' products, at 1,024 rows or
//! the rows given: `cargo run --release --example shape_probe -- [rows...]` (RAYON_NUM_THREADS=1
//! for one core). A training step's rows are its tokens: ~35 for a shared prefix, ~640 for 16
//! critic snippets.
use std::time::Instant;
fn main() {
    wick::ops::blas::configure_blas();
    let blas = wick::ops::blas::blas().expect("blas");
    println!("{}", blas.core);
    let rows: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    for m in if rows.is_empty() { vec![1024] } else { rows } {
        for &(k, n, what) in &[
            (576usize, 576usize, "q/o"),
            (576, 192, "k/v"),
            (576, 960, "qkv fused"),
            (576, 1536, "gate/up"),
            (576, 3072, "gate+up fused"),
            (1536, 576, "down"),
            (576, 8, "lora A"),
            (8, 576, "lora B"),
            (8, 1536, "lora B up"),
        ] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 104729) % 1000) as f32 / 1000.0).collect();
            let _ = blas.gemm_new(&x, (m, k), false, &w, (n, k), true, 1.0);
            let reps = 20;
            let s = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(blas.gemm_new(&x, (m, k), false, &w, (n, k), true, 1.0));
            }
            let t = s.elapsed().as_secs_f64() / reps as f64;
            println!("{what:>14} {m}x{k}·{k}x{n}: {:.3} ms  {:.1} GF/s", t * 1e3, 2.0 * (m * k * n) as f64 / t / 1e9);
        }
    }
}
