// bf16 -> float8_e4m3fn quantization with a static scale, a dynamic per-row scale, or a dynamic
// per-tensor scale, bit-equal to reference.quantize_fp8: the same fp32 division x / scale (IEEE,
// not a reciprocal multiply), then one round-to-nearest-even conversion with saturation.
//
// Rows are processed one block per row with 8-element vectors (16-byte bf16 loads, 8-byte e4m3
// stores); a row's second read (per-row mode) hits L1/L2, so no K limit and no register tile.
#include <cuda_bf16.h>
#include <cstdint>

#include "common.h"
#include "fp8_quantize.h"

namespace ltxe {

constexpr int kThreads = 256;
constexpr int kAmaxBlocks = 1024;  // enough to fill 132 SMs several times over; one atomic each

// torch: amax.clamp(min=1e-12) / 448, NaN kept (clamp propagates it). Monotonic in amax, so the
// max over blocks of scale(block amax) equals scale(global amax) bit for bit.
__device__ __forceinline__ float scale_of_amax(float amax) {
  return amax != amax ? amax : fmaxf(amax, 1e-12f) / 448.0f;
}

__device__ __forceinline__ void quantize_row(const char* x, char* q, float scale, int cols) {
  for (int vi = threadIdx.x; vi < cols / 8; vi += blockDim.x) {
    float v[8];
    load8_bf16(x + vi * 16, v);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = v[i] / scale;
    store8_e4m3(q + vi * 8, v);
  }
}

// |x| max of one row over this thread's vectors (NaN-propagating).
__device__ __forceinline__ float row_amax(const char* x, int cols) {
  float amax = 0.0f;
  for (int vi = threadIdx.x; vi < cols / 8; vi += blockDim.x) {
    float v[8];
    load8_bf16(x + vi * 16, v);
#pragma unroll
    for (int i = 0; i < 8; ++i) amax = nan_max(amax, fabsf(v[i]));
  }
  return amax;
}

__global__ void __launch_bounds__(kThreads) quantize_static_kernel(
    const __nv_bfloat16* __restrict__ x,  // (rows, cols), row stride x_stride
    uint8_t* __restrict__ q,              // (rows, cols) e4m3, row stride q_stride
    const float* __restrict__ scale,      // (1,) or (rows,) via scale_stride 0 / 1
    int64_t x_stride, int64_t q_stride, int64_t scale_stride, int cols) {
  const int64_t row = blockIdx.x;
  quantize_row(reinterpret_cast<const char*>(x + row * x_stride), reinterpret_cast<char*>(q + row * q_stride),
               scale[row * scale_stride], cols);
}

__global__ void __launch_bounds__(kThreads) quantize_per_row_kernel(
    const __nv_bfloat16* __restrict__ x,  // (rows, cols), row stride x_stride
    uint8_t* __restrict__ q,              // (rows, cols) e4m3, row stride q_stride
    float* __restrict__ scale_out,        // (rows, 1)
    int64_t x_stride, int64_t q_stride, int cols) {
  const int64_t row = blockIdx.x;
  const char* xr = reinterpret_cast<const char*>(x + row * x_stride);
  const float scale = scale_of_amax(block_max(row_amax(xr, cols)));
  if (threadIdx.x == 0) scale_out[row] = scale;
  quantize_row(xr, reinterpret_cast<char*>(q + row * q_stride), scale, cols);
}

// Per-tensor pass 1: each block reduces its rows and folds scale(block amax) into *scale_bits
// with an integer atomicMax (non-negative floats order like their bit patterns; NaN's bits top
// every finite value, so NaN wins as in torch). *scale_bits must start at 0.
__global__ void __launch_bounds__(kThreads) amax_scale_kernel(
    const __nv_bfloat16* __restrict__ x,  // (rows, cols), row stride x_stride
    unsigned int* __restrict__ scale_bits,  // (1,) fp32 bits of the scale
    int64_t x_stride, int64_t rows, int cols) {
  float amax = 0.0f;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    amax = nan_max(amax, row_amax(reinterpret_cast<const char*>(x + row * x_stride), cols));
  }
  amax = block_max(amax);
  if (threadIdx.x == 0) atomicMax(scale_bits, __float_as_uint(scale_of_amax(amax)));
}

static int row_threads(int64_t cols) {
  return cols / 8 >= kThreads ? kThreads : row_block_threads(cols / 8, 1);
}

cudaError_t launch_quantize_fp8_static(const void* x, int64_t x_stride, void* q, int64_t q_stride, const float* scale,
                                       int64_t scale_stride, int64_t rows, int64_t cols, cudaStream_t stream) {
  quantize_static_kernel<<<static_cast<unsigned>(rows), row_threads(cols), 0, stream>>>(
      static_cast<const __nv_bfloat16*>(x), static_cast<uint8_t*>(q), scale, x_stride, q_stride, scale_stride,
      static_cast<int>(cols));
  return cudaGetLastError();
}

cudaError_t launch_quantize_fp8_dynamic(const void* x, int64_t x_stride, void* q, int64_t q_stride, float* scale_out,
                                        bool per_row, int64_t rows, int64_t cols, cudaStream_t stream) {
  const auto* xb = static_cast<const __nv_bfloat16*>(x);
  auto* qb = static_cast<uint8_t*>(q);
  const int threads = row_threads(cols);
  if (per_row) {
    quantize_per_row_kernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(xb, qb, scale_out, x_stride,
                                                                                  q_stride, static_cast<int>(cols));
    return cudaGetLastError();
  }
  cudaError_t err = cudaMemsetAsync(scale_out, 0, sizeof(float), stream);
  if (err != cudaSuccess) return err;
  const unsigned blocks = static_cast<unsigned>(rows < kAmaxBlocks ? rows : kAmaxBlocks);
  amax_scale_kernel<<<blocks, threads, 0, stream>>>(xb, reinterpret_cast<unsigned int*>(scale_out), x_stride, rows,
                                                    static_cast<int>(cols));
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  return launch_quantize_fp8_static(x, x_stride, q, q_stride, scale_out, 0, rows, cols, stream);
}

}  // namespace ltxe
