// Host wrapper: validates sizes and alignment, then launches on the caller's stream.
#include "common.h"
#include "gated_residual.h"

namespace ltxe {

void gated_residual(uintptr_t x, uintptr_t y, uintptr_t gate, uintptr_t out, int64_t rows, int64_t dim,
                    int64_t gate_rows, uintptr_t stream) {
  LTXE_CHECK(rows > 0, "rows", "must be positive", rows);
  LTXE_CHECK(dim > 0 && dim % 8 == 0, "dim", "must be a positive multiple of 8", dim);
  LTXE_CHECK(gate_rows > 0 && rows % gate_rows == 0, "gate_rows", "must divide rows (" + std::to_string(rows) + ")",
             gate_rows);
  for (uintptr_t p : {x, y, gate, out}) {
    LTXE_CHECK(p != 0 && p % 16 == 0, "pointer", "must be non-null and 16-byte aligned", p);
  }
  require_device();
  cuda_check(launch_gated_residual(reinterpret_cast<const void*>(x), reinterpret_cast<const void*>(y),
                                   reinterpret_cast<const void*>(gate), reinterpret_cast<void*>(out), rows, dim,
                                   rows / gate_rows, reinterpret_cast<cudaStream_t>(stream)),
             "gated_residual launch");
}

}  // namespace ltxe
