#pragma once
#include <cuda_runtime.h>
#include <cstdint>

namespace ltxe {

// q = e4m3(clamp(x / scale, +-448)), round to nearest even; x (rows, cols) bf16 with a row stride
// (elements), q (rows, cols) e4m3 bytes with its own row stride. scale_stride 0: one per-tensor
// scale; 1: one per row (M, 1).
cudaError_t launch_quantize_fp8_static(const void* x, int64_t x_stride, void* q, int64_t q_stride, const float* scale,
                                       int64_t scale_stride, int64_t rows, int64_t cols, cudaStream_t stream);

// Dynamic scales amax / 448 (amax clamped to >= 1e-12), written to scale_out: (rows, 1) when
// per_row, else one fp32 scalar (reduced on the device: no host sync, graph-capturable).
cudaError_t launch_quantize_fp8_dynamic(const void* x, int64_t x_stride, void* q, int64_t q_stride, float* scale_out,
                                        bool per_row, int64_t rows, int64_t cols, cudaStream_t stream);

void quantize_fp8_static(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride, uintptr_t scale,
                         int64_t scale_row_stride, int64_t rows, int64_t cols, uintptr_t stream);

void quantize_fp8_dynamic(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride,
                          uintptr_t scale_out, bool per_row, int64_t rows, int64_t cols, uintptr_t stream);

}  // namespace ltxe
