#pragma once
#include <cuda_runtime.h>
#include <cstdint>
#include <string>
#include <utility>

#include "common.h"

namespace ltxe {

// A RoPE table as Python hands it over (fp32, last dim contiguous, strides in elements, 0
// broadcasts): "interleaved" cos/sin (B|1, N, D), adjacent pairs rotate (LTX-Video); "split"
// (B|1, H, N, D/H/2), per table head the first half rotates against the second (LTX-2); "none".
struct Rope {
  std::string layout = "none";
  uintptr_t cos = 0;
  uintptr_t sin = 0;
  int64_t batch_stride = 0;
  int64_t head_stride = 0;
  int64_t token_stride = 0;
  int64_t heads = 1;

  Rope() = default;
  Rope(std::string l, uintptr_t c, uintptr_t s, int64_t bs, int64_t hs, int64_t ts, int64_t h)
      : layout(std::move(l)), cos(c), sin(s), batch_stride(bs), head_stride(hs), token_stride(ts), heads(h) {}
};

enum RopeLayout : int { kRopeNone = 0, kRopeInterleaved = 1, kRopeSplit = 2 };

// One side (q or k) of a launch, as the kernel reads it.
struct QkSide {
  Rows x;                    // (B, tokens, D) bf16
  Rows out;                  // (B, tokens, D) bf16, or e4m3 when fp8_scale is set
  const void* weight;        // (D,) bf16 or fp32 (QkShared::weight_fp32)
  const float* cos;          // rope table (layout above) or null
  const float* sin;          // same shape and strides as cos
  int64_t table_batch_stride, table_head_stride, table_token_stride;
  const float* fp8_scale;    // (1,) per-tensor scale: out = e4m3(y / scale); null: bf16 out
  int64_t tokens;
  int64_t rows;              // B * tokens
  int half_vecs;             // split: 8-element vectors per half head; 1 otherwise
};

struct QkShared {
  int dim;
  float eps;
  bool weight_fp32;
  int layout;  // RopeLayout, the same for q and k
};

cudaError_t launch_qk_norm_rope(const QkSide& q, const QkSide& k, const QkShared& shared, cudaStream_t stream);

// RMSNorm over the full width D with a learned weight (fp32 math), then RoPE, optionally e4m3
// output; q and k in one launch (see qk_norm_rope.cpp for the argument rules).
void qk_norm_rope(const Rows& q, const Rows& k, const Rows& q_out, const Rows& k_out, uintptr_t q_weight,
                  uintptr_t k_weight, bool weight_fp32, const Rope& q_rope, const Rope& k_rope, uintptr_t q_scale,
                  uintptr_t k_scale, int64_t batch, int64_t q_tokens, int64_t k_tokens, int64_t dim, double eps,
                  uintptr_t stream);

}  // namespace ltxe
