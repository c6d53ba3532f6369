// Adaptive norm (adaLN-single modulation): out = norm(x) * (1 + scale) + shift, one pass over x.
//
// One block per row; each thread keeps kVecs 8-element vectors of the row in registers (16-byte
// bf16 loads), so the statistics and the output come from a single read of x. LayerNorm takes the
// mean first and then the variance of the centred registers (two block reductions, no
// E[x^2] - E[x]^2 cancellation).
#include <cuda_bf16.h>
#include <cstdint>

#include "ada_norm.h"
#include "common.h"

namespace ltxe {

// 2 vectors (16 fp32 registers) per thread: D = 4096 -> 256 threads, 2048 -> 128; enough loads
// in flight per thread without capping occupancy on registers.
constexpr int kVecs = 2;

__device__ __forceinline__ void modulate(const AdaNormParams& p, int64_t b, int64_t n, int64_t col, float* v) {
  float m[8];
  if (p.scale.present()) {
    load8(row_addr(p.scale, b, n), p.scale.fp32, col, m);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = v[i] * (1.0f + m[i]);
  }
  if (p.shift.present()) {
    load8(row_addr(p.shift, b, n), p.shift.fp32, col, m);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] += m[i];
  }
}

__global__ void __launch_bounds__(1024) ada_norm_kernel(const AdaNormParams p) {
  const int64_t row = blockIdx.x;
  const int64_t b = row / p.tokens, n = row - b * p.tokens;
  const int vecs = p.dim / 8;
  const char* x = row_addr(p.x, b, n);
  float v[kVecs][8];
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    const int vi = threadIdx.x + k * blockDim.x;
    if (vi < vecs) {
      load8_bf16(x + vi * 16, v[k]);
#pragma unroll
      for (int i = 0; i < 8; ++i) sum += p.layer ? v[k][i] : v[k][i] * v[k][i];
    }
  }
  float mean = 0.0f;
  if (p.layer) {
    mean = block_sum(sum) / p.dim;
    sum = 0.0f;
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
      if (threadIdx.x + k * blockDim.x < vecs) {
#pragma unroll
        for (int i = 0; i < 8; ++i) sum += (v[k][i] - mean) * (v[k][i] - mean);
      }
    }
  }
  const float rstd = rsqrtf(block_sum(sum) / p.dim + p.eps);  // biased variance, as F.layer_norm
  char* out = const_cast<char*>(row_addr(p.out, b, n));
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    const int vi = threadIdx.x + k * blockDim.x;
    if (vi < vecs) {
#pragma unroll
      for (int i = 0; i < 8; ++i) v[k][i] = (v[k][i] - mean) * rstd;
      modulate(p, b, n, vi * 8, v[k]);
      store8_bf16(out + vi * 16, v[k]);
    }
  }
}

cudaError_t launch_ada_norm(const AdaNormParams& p, int64_t rows, cudaStream_t stream) {
  const int threads = row_block_threads(p.dim / 8, kVecs);
  ada_norm_kernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace ltxe
