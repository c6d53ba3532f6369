// Q/K RMSNorm across all heads (learned weight) fused with RoPE, q and k rows in one launch.
//
// One block per row, one thread per 16-element unit: two 8-element vectors (16-byte bf16 loads)
// that rotate together, so no rotation partner ever leaves the thread's registers. Interleaved
// layout: the unit is 16 consecutive elements (pairs (2j, 2j+1) sit inside each vector). Split
// layout: the unit is vector j of a head's first half plus vector j of its second half. The row
// is read once, reduced once (sum of squares), and written once.
#include <cuda_bf16.h>
#include <cstdint>

#include "common.h"
#include "qk_norm_rope.h"

namespace ltxe {

constexpr int kUnit = 16;  // elements per thread (2 vectors of 8)

// Vector indices (of 8 elements) of unit u: for split tables, head `head` owns 2 * half_vecs
// vectors and the unit pairs vector j of the first half with vector j of the second half;
// half_vecs = 1 turns this into two adjacent vectors (interleaved and no-rope layouts).
struct UnitPos {
  int head, j, va, vb;
};

__device__ __forceinline__ UnitPos unit_pos(int u, int half_vecs) {
  UnitPos p;
  p.head = u / half_vecs;
  p.j = u - p.head * half_vecs;
  p.va = p.head * 2 * half_vecs + p.j;
  p.vb = p.va + half_vecs;
  return p;
}

// Adjacent pairs: y0 = x0 c0 - x1 s0, y1 = x1 c1 + x0 s1 (cos/sin are per element, 16 here).
__device__ __forceinline__ void rotate_interleaved(float* v, const float* tcos, const float* tsin) {
  float c[kUnit], s[kUnit];
  load8_f32(tcos, c), load8_f32(tcos + 8, c + 8);
  load8_f32(tsin, s), load8_f32(tsin + 8, s + 8);
#pragma unroll
  for (int i = 0; i < kUnit; i += 2) {
    const float x0 = v[i], x1 = v[i + 1];
    v[i] = x0 * c[i] - x1 * s[i];
    v[i + 1] = x1 * c[i + 1] + x0 * s[i + 1];
  }
}

// Halves: a' = a c - b s, b' = b c + a s, with a = v[0:8], b = v[8:16] and 8 angles.
__device__ __forceinline__ void rotate_split(float* v, const float* tcos, const float* tsin) {
  float c[8], s[8];
  load8_f32(tcos, c);
  load8_f32(tsin, s);
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float a = v[i], b = v[i + 8];
    v[i] = a * c[i] - b * s[i];
    v[i + 8] = b * c[i] + a * s[i];
  }
}

__device__ __forceinline__ void store_unit(const QkSide& s, int64_t b, int64_t n, const UnitPos& p, float* v) {
  if (s.fp8_scale != nullptr) {
    // e4m3 bytes: row offset in elements == bytes.
    char* row = reinterpret_cast<char*>(s.out.ptr) + b * s.out.batch_stride + n * s.out.token_stride;
    const float scale = *s.fp8_scale;
#pragma unroll
    for (int i = 0; i < kUnit; ++i) v[i] = v[i] / scale;  // division, as the reference (not * 1/scale)
    store8_e4m3(row + p.va * 8, v);
    store8_e4m3(row + p.vb * 8, v + 8);
  } else {
    char* row = const_cast<char*>(row_addr(s.out, b, n));
    store8_bf16(row + p.va * 16, v);
    store8_bf16(row + p.vb * 16, v + 8);
  }
}

__device__ __forceinline__ void norm_rope_row(const QkSide& s, const QkShared& c, int64_t row) {
  const int64_t b = row / s.tokens, n = row - b * s.tokens;
  const int u = threadIdx.x;
  const bool active = u < c.dim / kUnit;
  const UnitPos p = unit_pos(active ? u : 0, s.half_vecs);
  const char* x = row_addr(s.x, b, n);
  float v[kUnit];
  float ss = 0.0f;
  if (active) {
    load8_bf16(x + p.va * 16, v);
    load8_bf16(x + p.vb * 16, v + 8);
#pragma unroll
    for (int i = 0; i < kUnit; ++i) ss += v[i] * v[i];
  }
  const float inv = rsqrtf(block_sum(ss) / c.dim + c.eps);
  if (!active) return;
  const char* w = static_cast<const char*>(s.weight);
  float wv[kUnit];
  load8(w, c.weight_fp32, p.va * 8, wv);
  load8(w, c.weight_fp32, p.vb * 8, wv + 8);
#pragma unroll
  for (int i = 0; i < kUnit; ++i) v[i] = v[i] * inv * wv[i];  // (x * rstd) * w, the reference's order
  const int64_t t = b * s.table_batch_stride + n * s.table_token_stride;
  if (c.layout == kRopeInterleaved) {
    rotate_interleaved(v, s.cos + t + p.va * 8, s.sin + t + p.va * 8);
  } else if (c.layout == kRopeSplit) {
    const int64_t th = t + p.head * s.table_head_stride + p.j * 8;
    rotate_split(v, s.cos + th, s.sin + th);
  }
  store_unit(s, b, n, p, v);
}

// Blocks alternate q row r / k row r while both sides have rows, then finish the longer side:
// for self-attention q and k of one token then run back to back and share the rope table rows
// in L2 (the fp32 tables are 2-4x the bytes of the bf16 rows).
__global__ void __launch_bounds__(1024) qk_norm_rope_kernel(const QkSide q, const QkSide k, const QkShared c) {
  const int64_t i = blockIdx.x;
  const int64_t pairs = q.rows < k.rows ? q.rows : k.rows;
  const bool interleaved = i < 2 * pairs;
  const bool is_k = interleaved ? (i & 1) != 0 : k.rows > q.rows;
  const int64_t row = interleaved ? i >> 1 : pairs + (i - 2 * pairs);
  if (is_k) {  // block-uniform branch; one inlined copy of the row code per side
    norm_rope_row(k, c, row);
  } else {
    norm_rope_row(q, c, row);
  }
}

cudaError_t launch_qk_norm_rope(const QkSide& q, const QkSide& k, const QkShared& c, cudaStream_t stream) {
  const int threads = row_block_threads(c.dim / kUnit, 1);
  const int64_t blocks = q.rows + k.rows;
  qk_norm_rope_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(q, k, c);
  return cudaGetLastError();
}

}  // namespace ltxe
