#pragma once
#include <cuda_runtime.h>
#include <cstdint>

namespace ltxe {
cudaError_t launch_gated_residual(const void* x, const void* y, const void* gate, void* out, int64_t rows,
                                  int64_t dim, int64_t rows_per_gate, cudaStream_t stream);
void gated_residual(uintptr_t x, uintptr_t y, uintptr_t gate, uintptr_t out, int64_t rows, int64_t dim,
                    int64_t gate_rows, uintptr_t stream);
}  // namespace ltxe
