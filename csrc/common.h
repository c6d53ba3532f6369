// Shared helpers for ltxengine's CUDA extension. Host wrappers receive raw device pointers (as
// integers) from Python, so every argument is checked here before a launch; the device half
// holds the vector loads and block reductions the row kernels share.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace ltxe {

// LTXE_CHECK_IN(fn, cond, "name", "rule", value): throws ValueError-style text that names the
// function, the argument, the rule it broke and the value it had (pybind11 maps
// std::invalid_argument to ValueError). LTXE_CHECK uses the enclosing function's name; shared
// checkers take the caller's name instead so the message still names the op.
#define LTXE_CHECK_IN(fn, cond, arg, rule, value)                                         \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::ostringstream _ltxe_msg;                                                       \
      _ltxe_msg << fn << ": " << arg << " " << rule << ", got " << (value);               \
      throw std::invalid_argument(_ltxe_msg.str());                                       \
    }                                                                                     \
  } while (0)

#define LTXE_CHECK(cond, arg, rule, value) LTXE_CHECK_IN(__func__, cond, arg, rule, value)

inline void cuda_check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
  }
}

// Fails with a clear message when no CUDA device is usable (the CPU CI machine).
inline void require_device() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    throw std::runtime_error(std::string("ltxengine._C: no usable CUDA device (") +
                             cudaGetErrorString(err) + ")");
  }
}

// A (batch, tokens, dim) view as Python hands it over: device address, strides in elements, last
// dim contiguous. A stride of 0 broadcasts (token_stride 0: one modulation row per sample;
// batch_stride 0: one row set for every sample). Elements are bf16, or fp32 when `fp32`
// (modulation tables and norm weights may be either; activations are bf16).
struct Rows {
  uintptr_t ptr = 0;
  int64_t batch_stride = 0;
  int64_t token_stride = 0;
  bool fp32 = false;

  Rows() = default;
  Rows(uintptr_t p, int64_t bs, int64_t ts, bool f32 = false)
      : ptr(p), batch_stride(bs), token_stride(ts), fp32(f32) {}
  __host__ __device__ bool present() const { return ptr != 0; }
};

// Every kernel moves 8 elements per 16-byte (bf16) vector, so a row view is usable when its
// address is 16-byte aligned and its strides keep each row start aligned (multiples of 8
// elements). Outputs must not overlap across rows: blocks write rows concurrently. The check is
// the simple sufficient one (rows laid out token-major inside each sample).
inline void check_rows(const char* fn, const std::string& name, const Rows& r, int64_t batch, int64_t tokens,
                       int64_t dim, bool output) {
  LTXE_CHECK_IN(fn, r.ptr != 0 && r.ptr % 16 == 0, name + ".ptr", "must be non-null and 16-byte aligned", r.ptr);
  LTXE_CHECK_IN(fn, r.batch_stride >= 0 && r.batch_stride % 8 == 0, name + ".batch_stride",
                "must be a non-negative multiple of 8 elements", r.batch_stride);
  LTXE_CHECK_IN(fn, r.token_stride >= 0 && r.token_stride % 8 == 0, name + ".token_stride",
                "must be a non-negative multiple of 8 elements", r.token_stride);
  if (!output) return;
  LTXE_CHECK_IN(fn, tokens == 1 || r.token_stride >= dim, name + ".token_stride",
                "must be >= dim (" + std::to_string(dim) + ") for an output (rows may not overlap)", r.token_stride);
  const int64_t span = (tokens - 1) * r.token_stride + dim;
  LTXE_CHECK_IN(fn, batch == 1 || r.batch_stride >= span, name + ".batch_stride",
                "must be >= (tokens - 1) * token_stride + dim (" + std::to_string(span) +
                    ") for an output (samples may not overlap)",
                r.batch_stride);
}

// Threads per block for `work` items per row handled `per_thread` at a time, in whole warps (the
// block reductions shuffle full warps). Callers bound dim so that this stays <= 1024.
inline int row_block_threads(int64_t work, int64_t per_thread) {
  const int64_t threads = (work + per_thread - 1) / per_thread;
  return static_cast<int>(((threads + 31) / 32) * 32);
}

}  // namespace ltxe

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp8.h>

namespace ltxe {

// Element address of row (b, n) of a Rows view (byte arithmetic: the element size is a runtime
// property of the view).
__device__ __forceinline__ const char* row_addr(const Rows& r, int64_t b, int64_t n) {
  const int64_t elem = r.fp32 ? 4 : 2;
  return reinterpret_cast<const char*>(r.ptr) + (b * r.batch_stride + n * r.token_stride) * elem;
}

// 8 bf16 = one 16-byte load, widened to fp32 (all arithmetic is fp32).
__device__ __forceinline__ void load8_bf16(const void* p, float* f) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __bfloat1622float2(h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}

// 8 fp32 = two 16-byte loads.
__device__ __forceinline__ void load8_f32(const void* p, float* f) {
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w;
  f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}

// Elements [col, col + 8) of a row that is bf16 or fp32 (a runtime flag: uniform per launch, so
// the branch costs nothing and one instantiation serves both modulation dtypes).
__device__ __forceinline__ void load8(const char* row, bool fp32, int64_t col, float* f) {
  if (fp32) {
    load8_f32(row + col * 4, f);
  } else {
    load8_bf16(row + col * 2, f);
  }
}

// fp32 -> bf16 round-to-nearest-even, one 16-byte store.
__device__ __forceinline__ void store8_bf16(void* p, const float* f) {
  uint4 raw;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// fp32 -> e4m3 round-to-nearest-even, one 8-byte store. satfinite maps |v| > 448 (and +-inf) to
// +-448 and keeps NaN, i.e. torch's clamp(-448, 448) followed by the cast, without a NaN-eating
// fminf/fmaxf. (.x of each pair lands in the low byte, so element order is kept.)
__device__ __forceinline__ void store8_e4m3(void* p, const float* f) {
  uint2 raw;
  __nv_fp8x2_storage_t* h = reinterpret_cast<__nv_fp8x2_storage_t*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    h[i] = __nv_cvt_float2_to_fp8x2(make_float2(f[2 * i], f[2 * i + 1]), __NV_SATFINITE, __NV_E4M3);
  }
  *reinterpret_cast<uint2*>(p) = raw;
}

// max that propagates NaN like torch.amax (fmaxf would drop it).
__device__ __forceinline__ float nan_max(float a, float b) { return (a != a || a > b) ? a : b; }

struct Sum {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct NanMax {
  __device__ __forceinline__ float operator()(float a, float b) const { return nan_max(a, b); }
};

template <typename Op>
__device__ __forceinline__ float warp_reduce(float v, Op op) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, m));
  return v;
}

// Reduction over the block; every thread gets the result. Must be reached by all threads of a
// block made of whole warps. The leading barrier lets a kernel call it twice (LayerNorm's mean,
// then variance) without a race on `partial`. Lanes past the warp count contribute 0: the
// identity of Sum, and of NanMax over the non-negative values (amax of |x|) it is used for.
template <typename Op>
__device__ __forceinline__ float block_reduce(float v, Op op) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_reduce(v, op);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? partial[lane] : 0.0f;
  return warp_reduce(v, op);
}

__device__ __forceinline__ float block_sum(float v) { return block_reduce(v, Sum{}); }
__device__ __forceinline__ float block_max(float v) { return block_reduce(v, NanMax{}); }

}  // namespace ltxe
#endif  // __CUDACC__
