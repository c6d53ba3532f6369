// Host wrappers: validate sizes and views, then launch on the caller's stream.
#include "common.h"
#include "gated_residual.h"

namespace ltxe {

void gated_residual(const Rows& x, const Rows& y, const Rows& gate, const Rows& out, int64_t batch, int64_t tokens,
                    int64_t dim, uintptr_t stream) {
  LTXE_CHECK(batch > 0, "batch", "must be positive", batch);
  LTXE_CHECK(tokens > 0, "tokens", "must be positive", tokens);
  LTXE_CHECK(batch * tokens < (int64_t{1} << 31), "batch * tokens", "must be < 2^31 (one block per row)",
             batch * tokens);
  LTXE_CHECK(dim > 0 && dim % 8 == 0, "dim", "must be a positive multiple of 8", dim);
  check_rows("gated_residual", "x", x, batch, tokens, dim, false);
  check_rows("gated_residual", "y", y, batch, tokens, dim, false);
  check_rows("gated_residual", "out", out, batch, tokens, dim, true);
  LTXE_CHECK(!x.fp32 && !y.fp32 && !out.fp32, "x/y/out", "must be bfloat16", "float32");
  if (gate.present()) check_rows("gated_residual", "gate", gate, batch, tokens, dim, false);
  require_device();
  const GatedResidualParams p{x, y, gate, out, tokens, static_cast<int>(dim)};
  cuda_check(launch_gated_residual(p, batch * tokens, reinterpret_cast<cudaStream_t>(stream)),
             "gated_residual launch");
}

}  // namespace ltxe
