//! With the `cuda` feature: compile `kernels/*.cu` to PTX (nvcc, via cudaforge as candle-kernels
//! does) and write `$OUT_DIR/wick_ptx.rs` with one `pub const NAME: &str` per kernel file.
//! Without the feature this does nothing and needs nothing (no nvcc, no CUDA toolkit).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "cuda")]
    cuda::build();
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::path::PathBuf;

    pub fn build() {
        println!("cargo::rerun-if-changed=kernels");
        println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
        // scripts/gpu-pack links against a generated stub libcuda. cudarc's build script adds
        // `lib/stubs` only if it existed when that script first ran (cuda-check may run first),
        // so the folder is named here, where a change of the variable reruns this script.
        println!("cargo::rerun-if-env-changed=WICK_CUDA_STUBS");
        if let Ok(stubs) = std::env::var("WICK_CUDA_STUBS") {
            println!("cargo::rustc-link-search=native={stubs}");
        }
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
        let result = cudaforge::KernelBuilder::new()
            .source_dir("kernels")
            .watch(["kernels/wick_common.cuh"])
            .arg("--expt-relaxed-constexpr")
            .arg("-std=c++17")
            .arg("-O3")
            .build_ptx()
            .and_then(|ptx| ptx.write(out.join("wick_ptx.rs")));
        if let Err(e) = result {
            // A loud failure: the kernels are part of the CUDA build, never silently skipped.
            panic!("compiling kernels/*.cu to PTX failed (see scripts/cuda-check for the toolkit setup): {e}");
        }
    }
}
