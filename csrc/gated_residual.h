#pragma once
#include <cuda_runtime.h>
#include <cstdint>

#include "common.h"

namespace ltxe {

struct GatedResidualParams {
  Rows x;      // (B, tokens, D) bf16 residual stream
  Rows y;      // (B, tokens, D) bf16 branch output
  Rows gate;   // (B|1, tokens|1, D) bf16 or fp32, or absent (ptr 0: gate = 1)
  Rows out;    // (B, tokens, D) bf16; may alias x (each element is read before it is written)
  int64_t tokens;
  int dim;
};

cudaError_t launch_gated_residual(const GatedResidualParams& p, int64_t rows, cudaStream_t stream);

// out = x + gate * y over strided (B, tokens, D) views; gate optional, per sample or per token.
void gated_residual(const Rows& x, const Rows& y, const Rows& gate, const Rows& out, int64_t batch, int64_t tokens,
                    int64_t dim, uintptr_t stream);

}  // namespace ltxe
