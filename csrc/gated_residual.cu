// out = x + gate * y for bf16 activations, fp32 math. The gate is a modulation row that is
// either shared by all tokens of a sample (per-sample timestep), given per token, or absent.
#include <cuda_bf16.h>
#include <cstdint>

#include "common.h"
#include "gated_residual.h"

namespace ltxe {

// One block per row, 8 bf16 = 16 bytes per thread and step: one 128-bit load per operand.
constexpr int kMaxThreads = 256;

__global__ void __launch_bounds__(kMaxThreads) gated_residual_kernel(const GatedResidualParams p) {
  const int64_t row = blockIdx.x;
  const int64_t b = row / p.tokens, n = row - b * p.tokens;
  const char* x = row_addr(p.x, b, n);
  const char* y = row_addr(p.y, b, n);
  const char* g = p.gate.present() ? row_addr(p.gate, b, n) : nullptr;
  char* out = const_cast<char*>(row_addr(p.out, b, n));
  for (int vi = threadIdx.x; vi < p.dim / 8; vi += blockDim.x) {
    float xv[8], yv[8], gv[8];
    load8_bf16(x + vi * 16, xv);
    load8_bf16(y + vi * 16, yv);
    if (g != nullptr) {
      load8(g, p.gate.fp32, vi * 8, gv);
#pragma unroll
      for (int i = 0; i < 8; ++i) xv[i] += gv[i] * yv[i];
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) xv[i] += yv[i];
    }
    store8_bf16(out + vi * 16, xv);
  }
}

cudaError_t launch_gated_residual(const GatedResidualParams& p, int64_t rows, cudaStream_t stream) {
  const int64_t vecs = p.dim / 8;
  const int threads = vecs >= kMaxThreads ? kMaxThreads : row_block_threads(vecs, 1);
  gated_residual_kernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace ltxe
