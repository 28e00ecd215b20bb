//! The BLAS GEMM rate (GFLOP/s) at the model's projection shapes: `cargo run --release --example gemm_probe`.
use candle_core::{Device, Tensor};
use std::time::Instant;
fn time<F: FnMut() -> candle_core::Result<()>>(n: usize, mut f: F) -> f64 {
    f().unwrap();
    let s = Instant::now();
    for _ in 0..n {
        f().unwrap();
    }
    s.elapsed().as_secs_f64() / n as f64
}
fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    for &(m, k, n) in &[(1024usize, 576usize, 1536usize), (1024, 1536, 576), (1024, 576, 576), (1024, 576, 192), (1024, 1024, 1024)] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        let wt = w.t()?.contiguous()?;
        let fl = 2.0 * (m * k * n) as f64;
        let a = time(10, || {
            x.matmul(&w.t()?)?;
            Ok(())
        });
        let b = time(10, || {
            x.matmul(&wt)?;
            Ok(())
        });
        let gy = Tensor::randn(0f32, 1.0, (m, n), &dev)?;
        let c = time(10, || {
            gy.matmul(&w)?;
            Ok(())
        });
        println!(
            "{m}x{k}x{n}: x·wᵀ(strided) {:.1} GF/s, x·wt(contig) {:.1} GF/s, gy·w {:.1} GF/s",
            fl / a / 1e9,
            fl / b / 1e9,
            fl / c / 1e9
        );
    }
    // Reduced precision: candle's CPU matmul for f16 / bf16 on the largest model shape.
    for dt in [candle_core::DType::F16, candle_core::DType::BF16] {
        let (m, k, n) = (1024usize, 576usize, 1536usize);
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?.to_dtype(dt)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?.to_dtype(dt)?;
        let t = time(5, || {
            x.matmul(&w.t()?)?;
            Ok(())
        });
        println!("{dt:?} {m}x{k}x{n}: {:.1} GF/s", 2.0 * (m * k * n) as f64 / t / 1e9);
    }
    // elementwise cost
    let x = Tensor::randn(0f32, 1.0, (16, 64, 576), &dev)?;
    let w = Tensor::randn(0f32, 1.0, 576, &dev)?;
    let t = time(20, || {
        wick::ops::rms_norm(&x, &w, 1e-5)?;
        Ok(())
    });
    println!("rms_norm 16x64x576: {:.2} ms", t * 1e3);
    let g = Tensor::randn(0f32, 1.0, (16, 64, 1536), &dev)?;
    let t = time(20, || {
        wick::ops::swiglu(&g, &g)?;
        Ok(())
    });
    println!("swiglu 16x64x1536: {:.2} ms", t * 1e3);
    let s = Tensor::randn(0f32, 1.0, (16, 9, 64, 64), &dev)?;
    let t = time(20, || {
        wick::ops::softmax_last_dim(&s)?;
        Ok(())
    });
    println!("softmax 16x9x64x64: {:.2} ms", t * 1e3);
    Ok(())
}
