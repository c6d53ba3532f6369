#pragma once
#include <cuda_runtime.h>
#include <cstdint>

namespace ltxe {

// out[m, n] (bf16) = (a[m, k] @ b[n, k]^T) * scale_a * scale_b + bias, e4m3 operands, fp32
// accumulation, one Hopper (sm_90a) wgmma kernel. Requirements (checked by fp8_gemm): k % 16 == 0,
// lda % 16 == 0, 16-byte aligned a and b; any m, n.
cudaError_t launch_fp8_gemm(const void* a, const void* b, const float* scale_a, const float* scale_b,
                            const void* bias, void* out, int64_t m, int64_t n, int64_t k, int64_t lda,
                            bool scale_a_per_row, bool scale_b_per_col, cudaStream_t stream);

void fp8_gemm(uintptr_t a, uintptr_t b, uintptr_t scale_a, uintptr_t scale_b, uintptr_t bias, uintptr_t out,
              int64_t m, int64_t n, int64_t k, int64_t lda, bool scale_a_per_row, bool scale_b_per_col,
              uintptr_t stream);

}  // namespace ltxe
