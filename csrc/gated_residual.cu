// out = x + gate * y for bf16 activations, fp32 math. The gate is a modulation row that is
// either shared by all tokens of a sample (per-sample timestep) or given per token.
#include <cuda_bf16.h>
#include <cstdint>

#include "gated_residual.h"

namespace ltxe {

// 8 bf16 = 16 bytes per thread: one 128-bit load per operand.
constexpr int kVec = 8;

__global__ void gated_residual_kernel(const __nv_bfloat16* __restrict__ x,     // [rows, dim]
                                      const __nv_bfloat16* __restrict__ y,     // [rows, dim]
                                      const __nv_bfloat16* __restrict__ gate,  // [rows / rows_per_gate, dim]
                                      __nv_bfloat16* __restrict__ out,         // [rows, dim]
                                      int64_t rows, int64_t dim, int64_t rows_per_gate) {
  const int64_t vecs_per_row = dim / kVec;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * vecs_per_row) return;
  const int64_t row = idx / vecs_per_row;
  const int64_t col = (idx % vecs_per_row) * kVec;
  const int64_t off = row * dim + col;
  const int64_t goff = (row / rows_per_gate) * dim + col;
  uint4 xv = *reinterpret_cast<const uint4*>(x + off);
  uint4 yv = *reinterpret_cast<const uint4*>(y + off);
  uint4 gv = *reinterpret_cast<const uint4*>(gate + goff);
  const __nv_bfloat16* xs = reinterpret_cast<const __nv_bfloat16*>(&xv);
  const __nv_bfloat16* ys = reinterpret_cast<const __nv_bfloat16*>(&yv);
  const __nv_bfloat16* gs = reinterpret_cast<const __nv_bfloat16*>(&gv);
  uint4 ov;
  __nv_bfloat16* os = reinterpret_cast<__nv_bfloat16*>(&ov);
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    os[i] = __float2bfloat16(__bfloat162float(xs[i]) + __bfloat162float(gs[i]) * __bfloat162float(ys[i]));
  }
  *reinterpret_cast<uint4*>(out + off) = ov;
}

cudaError_t launch_gated_residual(const void* x, const void* y, const void* gate, void* out, int64_t rows,
                                  int64_t dim, int64_t rows_per_gate, cudaStream_t stream) {
  const int64_t total = rows * (dim / kVec);
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  gated_residual_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(y),
      static_cast<const __nv_bfloat16*>(gate), static_cast<__nv_bfloat16*>(out), rows, dim, rows_per_gate);
  return cudaGetLastError();
}

}  // namespace ltxe
