// Host wrapper: checks the views and the norm kind, then launches on the caller's stream.
#include <cmath>

#include "ada_norm.h"
#include "common.h"

namespace ltxe {

namespace {
constexpr int64_t kMaxDim = 8 * 2 * 1024;  // 2 vectors of 8 per thread, at most 1024 threads
}

void ada_norm(const Rows& x, const Rows& shift, const Rows& scale, const Rows& out, int64_t batch, int64_t tokens,
              int64_t dim, double eps, const std::string& kind, uintptr_t stream) {
  LTXE_CHECK(kind == "rms" || kind == "layer", "kind", "must be 'rms' or 'layer'", "'" + kind + "'");
  LTXE_CHECK(batch > 0, "batch", "must be positive", batch);
  LTXE_CHECK(tokens > 0, "tokens", "must be positive", tokens);
  LTXE_CHECK(batch * tokens < (int64_t{1} << 31), "batch * tokens", "must be < 2^31 (one block per row)",
             batch * tokens);
  LTXE_CHECK(dim > 0 && dim % 8 == 0 && dim <= kMaxDim, "dim", "must be a positive multiple of 8 up to 16384", dim);
  LTXE_CHECK(std::isfinite(eps) && eps >= 0, "eps", "must be finite and non-negative", eps);
  check_rows("ada_norm", "x", x, batch, tokens, dim, false);
  check_rows("ada_norm", "out", out, batch, tokens, dim, true);
  LTXE_CHECK(!x.fp32 && !out.fp32, "x/out", "must be bfloat16", "float32");
  if (shift.present()) check_rows("ada_norm", "shift", shift, batch, tokens, dim, false);
  if (scale.present()) check_rows("ada_norm", "scale", scale, batch, tokens, dim, false);
  require_device();
  const AdaNormParams p{x, out, shift, scale, tokens, static_cast<int>(dim), static_cast<float>(eps), kind == "layer"};
  cuda_check(launch_ada_norm(p, batch * tokens, reinterpret_cast<cudaStream_t>(stream)), "ada_norm launch");
}

}  // namespace ltxe
