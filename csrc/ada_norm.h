#pragma once
#include <cuda_runtime.h>
#include <cstdint>
#include <string>

#include "common.h"

namespace ltxe {

struct AdaNormParams {
  Rows x;        // (B, tokens, D) bf16
  Rows out;      // (B, tokens, D) bf16
  Rows shift;    // (B|1, tokens|1, D) bf16 or fp32, or absent (ptr 0)
  Rows scale;    // same rules as shift
  int64_t tokens;
  int dim;
  float eps;
  bool layer;    // LayerNorm without affine (mean removed); otherwise RMSNorm without weight
};

cudaError_t launch_ada_norm(const AdaNormParams& p, int64_t rows, cudaStream_t stream);

// out = norm(x) * (1 + scale) + shift, norm = "rms" or "layer" (fp32 statistics); shift/scale
// optional, per sample (token_stride 0) or per token, views into a modulation table.
void ada_norm(const Rows& x, const Rows& shift, const Rows& scale, const Rows& out, int64_t batch, int64_t tokens,
              int64_t dim, double eps, const std::string& kind, uintptr_t stream);

}  // namespace ltxe
