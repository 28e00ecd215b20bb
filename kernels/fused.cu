// wick's fused decoder kernels (forward and backward), the CUDA twins of the CPU CustomOps in
// src/ops/fused.rs. Each section repeats the spec that file documents for the op; both sides
// implement exactly that spec (same shapes, masking and scaling) and tests/gpu.rs checks each
// kernel against its CPU twin. All tensors are contiguous and row-major. Every kernel exists for
// f32, f16 and bf16 storage (suffix _f32/_f16/_bf16) and computes in f32; tables (rotary cos/sin)
// and lengths are f32 and u32. The launch code is src/ops/cuda.rs.
#include "wick_common.cuh"

// ---------------------------------------------------------------------------------------------
// RMSNorm.  Spec: x (rows, d), w (d); y = x · rsqrt(mean(x²) + eps) · w.
// Backward: with r = rsqrt(mean(x²)+eps), x̂ = x·r, g = dy·w:
//   dx = r · (g − x̂ · mean(g·x̂))   (dw is a composite in Rust, only for a trainable w).
// Launch: one block per row, blockDim.x a multiple of 32.
// ---------------------------------------------------------------------------------------------

template <typename T>
__device__ void rms_norm_fwd(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y, uint32_t d, float eps) {
    const T* xr = x + (size_t)blockIdx.x * d;
    T* yr = y + (size_t)blockIdx.x * d;
    float ss = 0.0f;
    for (uint32_t i = threadIdx.x; i < d; i += blockDim.x) {
        const float v = to_f32(xr[i]);
        ss += v * v;
    }
    ss = block_sum(ss);
    const float r = 1.0f / sqrtf(ss / (float)d + eps);
    for (uint32_t i = threadIdx.x; i < d; i += blockDim.x) yr[i] = from_f32<T>(to_f32(xr[i]) * r * to_f32(w[i]));
}

template <typename T>
__device__ void rms_norm_bwd(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ dy, T* __restrict__ dx,
                             uint32_t d, float eps) {
    const size_t base = (size_t)blockIdx.x * d;
    float ss = 0.0f, xgw = 0.0f;
    for (uint32_t i = threadIdx.x; i < d; i += blockDim.x) {
        const float v = to_f32(x[base + i]);
        ss += v * v;
        xgw += v * to_f32(dy[base + i]) * to_f32(w[i]);
    }
    ss = block_sum(ss);
    xgw = block_sum(xgw);
    const float r = 1.0f / sqrtf(ss / (float)d + eps);
    const float dot = r * xgw / (float)d;  // mean(g·x̂)
    for (uint32_t i = threadIdx.x; i < d; i += blockDim.x) {
        const float g = to_f32(dy[base + i]) * to_f32(w[i]);
        dx[base + i] = from_f32<T>(r * (g - to_f32(x[base + i]) * r * dot));
    }
}

// ---------------------------------------------------------------------------------------------
// Masked attention softmax.  Spec: scores (b, h, t, s) with s = prefix + t; row (bi, hi, i) may
// attend key j iff j < prefix, or (j − prefix ≤ i and j − prefix < len[bi]) — a shared prefix,
// causal order and right padding. p = softmax(scale · scores) over allowed keys, 0 elsewhere; a
// row with no allowed key is all 0.  Backward: dx = scale · p · (dy − Σ_k dy_k p_k).
// The allowed keys of a row are exactly 0 .. prefix + min(i + 1, len[bi]): a prefix of the row.
// Launch: one block per row (b·h·t rows), blockDim.x a multiple of 32; lengths is u32 (b).
// ---------------------------------------------------------------------------------------------

template <typename T>
__device__ void masked_softmax_fwd(const T* __restrict__ x, T* __restrict__ p, const uint32_t* __restrict__ lengths,
                                   uint32_t heads, uint32_t t, uint32_t s, float scale) {
    const size_t row = blockIdx.x;
    const T* xr = x + row * s;
    T* pr = p + row * s;
    const uint32_t bi = (uint32_t)(row / ((size_t)heads * t)), i = (uint32_t)(row % t);
    const uint32_t own = min(i + 1, lengths[bi]);
    const uint32_t n = (s - t) + own;
    float m = -INFINITY;
    for (uint32_t j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, to_f32(xr[j]));
    m = block_max(m) * scale;
    float sum = 0.0f;
    for (uint32_t j = threadIdx.x; j < n; j += blockDim.x) sum += expf(to_f32(xr[j]) * scale - m);
    sum = block_sum(sum);
    const float inv = n == 0 ? 0.0f : 1.0f / sum;
    for (uint32_t j = threadIdx.x; j < s; j += blockDim.x)
        pr[j] = from_f32<T>(j < n ? expf(to_f32(xr[j]) * scale - m) * inv : 0.0f);
}

template <typename T>
__device__ void masked_softmax_bwd(const T* __restrict__ p, const T* __restrict__ dp, T* __restrict__ dx, uint32_t s, float scale) {
    const size_t base = (size_t)blockIdx.x * s;
    float dot = 0.0f;
    for (uint32_t j = threadIdx.x; j < s; j += blockDim.x) dot += to_f32(p[base + j]) * to_f32(dp[base + j]);
    dot = block_sum(dot);
    for (uint32_t j = threadIdx.x; j < s; j += blockDim.x) {
        const float pv = to_f32(p[base + j]);
        dx[base + j] = from_f32<T>(scale * pv * (to_f32(dp[base + j]) - dot));
    }
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding fused with the head transpose.  Spec: x (b, t, h, d) as the projection
// writes it → y (b, h, t, d), for positions offset..offset+t, HF rotate-half layout with
// c = cos[pos][i], s = sin[pos][i], i < d/2:  y[i] = x[i]·c − x[i+d/2]·s,  y[i+d/2] = x[i+d/2]·c + x[i]·s.
// Backward: the inverse rotation (s → −s) and the transpose back to (b, t, h, d).
// cos/sin: f32 (positions, d/2) row-major. forward = 1: x (b,t,h,d) → y (b,h,t,d);
// forward = 0: dy (b,h,t,d) → dx (b,t,h,d). Launch: one thread per (output row, i < d/2) pair.
// ---------------------------------------------------------------------------------------------

template <typename T>
__device__ void rope(const T* __restrict__ src, T* __restrict__ dst, const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                     uint32_t b, uint32_t t, uint32_t h, uint32_t half, uint32_t offset, uint32_t forward) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t pairs = (size_t)b * t * h * half;
    if (idx >= pairs) return;
    const uint32_t i = (uint32_t)(idx % half);
    const size_t row = idx / half;  // output row
    const size_t d = 2 * (size_t)half;
    uint32_t bi, hi, ti;
    size_t src_row;
    if (forward) {  // output row in (b, h, t) order, source row in (b, t, h) order
        ti = (uint32_t)(row % t);
        hi = (uint32_t)((row / t) % h);
        bi = (uint32_t)(row / ((size_t)t * h));
        src_row = ((size_t)bi * t + ti) * h + hi;
    } else {  // output row in (b, t, h) order, source row in (b, h, t) order
        hi = (uint32_t)(row % h);
        ti = (uint32_t)((row / h) % t);
        bi = (uint32_t)(row / ((size_t)t * h));
        src_row = ((size_t)bi * h + hi) * t + ti;
    }
    const size_t pos = (size_t)offset + ti;
    const float c = cos_t[pos * half + i];
    const float s = forward ? sin_t[pos * half + i] : -sin_t[pos * half + i];
    const float x1 = to_f32(src[src_row * d + i]), x2 = to_f32(src[src_row * d + i + half]);
    dst[row * d + i] = from_f32<T>(x1 * c - x2 * s);
    dst[row * d + i + half] = from_f32<T>(x2 * c + x1 * s);
}

// ---------------------------------------------------------------------------------------------
// SwiGLU.  Spec: y = silu(g) · u with silu(g) = g·σ(g).
// Backward: dg = dy · u · σ(g) · (1 + g·(1 − σ(g))),  du = dy · g · σ(g); both written by one
// pass into out (2, n): out[0..n] = dg, out[n..2n] = du. Launch: one thread per element.
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

template <typename T>
__device__ void swiglu_fwd(const T* __restrict__ g, const T* __restrict__ u, T* __restrict__ y, size_t n) {
    const size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    const float gv = to_f32(g[k]);
    y[k] = from_f32<T>(gv * sigmoid(gv) * to_f32(u[k]));
}

template <typename T>
__device__ void swiglu_bwd(const T* __restrict__ g, const T* __restrict__ u, const T* __restrict__ dy, T* __restrict__ out, size_t n) {
    const size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    const float gv = to_f32(g[k]), uv = to_f32(u[k]), dv = to_f32(dy[k]);
    const float s = sigmoid(gv);
    out[k] = from_f32<T>(dv * uv * s * (1.0f + gv * (1.0f - s)));
    out[n + k] = from_f32<T>(dv * gv * s);
}

// ---------------------------------------------------------------------------------------------
// extern "C" entry points, one per op and dtype (the names src/ops/cuda.rs loads).
// ---------------------------------------------------------------------------------------------

#define WICK_FUSED(SUFFIX, T)                                                                                                       \
    extern "C" __global__ void wick_rms_norm_fwd_##SUFFIX(const T* x, const T* w, T* y, uint32_t d, float eps) {                    \
        rms_norm_fwd<T>(x, w, y, d, eps);                                                                                           \
    }                                                                                                                               \
    extern "C" __global__ void wick_rms_norm_bwd_##SUFFIX(const T* x, const T* w, const T* dy, T* dx, uint32_t d, float eps) {      \
        rms_norm_bwd<T>(x, w, dy, dx, d, eps);                                                                                      \
    }                                                                                                                               \
    extern "C" __global__ void wick_masked_softmax_fwd_##SUFFIX(const T* x, T* p, const uint32_t* lengths, uint32_t heads,          \
                                                                uint32_t t, uint32_t s, float scale) {                              \
        masked_softmax_fwd<T>(x, p, lengths, heads, t, s, scale);                                                                   \
    }                                                                                                                               \
    extern "C" __global__ void wick_masked_softmax_bwd_##SUFFIX(const T* p, const T* dp, T* dx, uint32_t s, float scale) {          \
        masked_softmax_bwd<T>(p, dp, dx, s, scale);                                                                                 \
    }                                                                                                                               \
    extern "C" __global__ void wick_rope_##SUFFIX(const T* src, T* dst, const float* cos_t, const float* sin_t, uint32_t b,         \
                                                  uint32_t t, uint32_t h, uint32_t half, uint32_t offset, uint32_t forward) {       \
        rope<T>(src, dst, cos_t, sin_t, b, t, h, half, offset, forward);                                                            \
    }                                                                                                                               \
    extern "C" __global__ void wick_swiglu_fwd_##SUFFIX(const T* g, const T* u, T* y, size_t n) { swiglu_fwd<T>(g, u, y, n); }      \
    extern "C" __global__ void wick_swiglu_bwd_##SUFFIX(const T* g, const T* u, const T* dy, T* out, size_t n) {                    \
        swiglu_bwd<T>(g, u, dy, out, n);                                                                                            \
    }

WICK_FOR_DTYPES(WICK_FUSED)
