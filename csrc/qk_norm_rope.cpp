// Host wrapper: checks every argument (the Python side hands over raw addresses), resolves the
// rope layout and launches q and k in one grid on the caller's stream.
#include <cmath>
#include <string>

#include "common.h"
#include "qk_norm_rope.h"

namespace ltxe {

namespace {

constexpr const char* kFn = "qk_norm_rope";
constexpr int64_t kMaxDim = 16 * 1024;  // one thread per 16 elements, at most 1024 threads

int rope_layout(const Rope& r, const std::string& name) {
  if (r.layout == "none") return kRopeNone;
  if (r.layout == "interleaved") return kRopeInterleaved;
  LTXE_CHECK_IN(kFn, r.layout == "split", name + ".layout", "must be 'none', 'interleaved' or 'split'",
                "'" + r.layout + "'");
  return kRopeSplit;
}

// The table's vectors of 8 fp32 are read with 16-byte loads, and a split table's half head must
// be whole vectors (a thread owns vector j of both halves).
void check_rope(const Rope& r, const std::string& name, int layout, int64_t dim) {
  if (layout == kRopeNone) return;
  for (uintptr_t p : {r.cos, r.sin}) {
    LTXE_CHECK_IN(kFn, p != 0 && p % 16 == 0, name + ".cos/sin", "must be non-null and 16-byte aligned", p);
  }
  for (int64_t s : {r.batch_stride, r.head_stride, r.token_stride}) {
    LTXE_CHECK_IN(kFn, s >= 0 && s % 8 == 0, name + " strides", "must be non-negative multiples of 8 elements", s);
  }
  if (layout == kRopeSplit) {
    LTXE_CHECK_IN(kFn, r.heads > 0 && dim % (16 * r.heads) == 0, name + ".heads",
                  "must divide dim (" + std::to_string(dim) + ") into heads whose halves are multiples of 8",
                  r.heads);
  }
}

QkSide make_side(const Rows& x, const Rows& out, uintptr_t weight, const Rope& r, int layout, uintptr_t scale,
                 int64_t batch, int64_t tokens, int64_t dim) {
  QkSide s{};
  s.x = x;
  s.out = out;
  s.weight = reinterpret_cast<const void*>(weight);
  s.cos = reinterpret_cast<const float*>(r.cos);
  s.sin = reinterpret_cast<const float*>(r.sin);
  s.table_batch_stride = r.batch_stride;
  s.table_head_stride = r.head_stride;
  s.table_token_stride = r.token_stride;
  s.fp8_scale = reinterpret_cast<const float*>(scale);
  s.tokens = tokens;
  s.rows = batch * tokens;
  s.half_vecs = layout == kRopeSplit ? static_cast<int>(dim / r.heads / 16) : 1;
  return s;
}

}  // namespace

void qk_norm_rope(const Rows& q, const Rows& k, const Rows& q_out, const Rows& k_out, uintptr_t q_weight,
                  uintptr_t k_weight, bool weight_fp32, const Rope& q_rope, const Rope& k_rope, uintptr_t q_scale,
                  uintptr_t k_scale, int64_t batch, int64_t q_tokens, int64_t k_tokens, int64_t dim, double eps,
                  uintptr_t stream) {
  LTXE_CHECK(batch > 0, "batch", "must be positive", batch);
  LTXE_CHECK(q_tokens > 0, "q_tokens", "must be positive", q_tokens);
  LTXE_CHECK(k_tokens > 0, "k_tokens", "must be positive", k_tokens);
  LTXE_CHECK(batch * (q_tokens + k_tokens) < (int64_t{1} << 31), "batch * (q_tokens + k_tokens)",
             "must be < 2^31 (one block per row)", batch * (q_tokens + k_tokens));
  LTXE_CHECK(dim > 0 && dim % 16 == 0 && dim <= kMaxDim, "dim", "must be a positive multiple of 16 up to 16384", dim);
  LTXE_CHECK(std::isfinite(eps) && eps >= 0, "eps", "must be finite and non-negative", eps);
  const bool fp8_out = q_scale != 0;
  LTXE_CHECK((k_scale != 0) == fp8_out, "k_scale", "must be given exactly when q_scale is (fp8 output)", k_scale);
  for (uintptr_t p : {q_scale, k_scale}) LTXE_CHECK(p % 4 == 0, "q_scale/k_scale", "must be 4-byte aligned", p);
  check_rows(kFn, "q", q, batch, q_tokens, dim, false);
  check_rows(kFn, "k", k, batch, k_tokens, dim, false);
  check_rows(kFn, "q_out", q_out, batch, q_tokens, dim, true);
  check_rows(kFn, "k_out", k_out, batch, k_tokens, dim, true);
  LTXE_CHECK(!q.fp32 && !k.fp32, "q/k", "must be bfloat16", "float32");
  LTXE_CHECK(!q_out.fp32 && !k_out.fp32, "q_out/k_out", "must be bfloat16 or float8_e4m3fn", "float32");
  for (uintptr_t p : {q_weight, k_weight}) {
    LTXE_CHECK(p != 0 && p % 16 == 0, "q_weight/k_weight", "must be non-null and 16-byte aligned", p);
  }
  const int layout = rope_layout(q_rope, "q_rope");
  LTXE_CHECK(rope_layout(k_rope, "k_rope") == layout, "k_rope.layout", "must equal q_rope.layout ('" +
             q_rope.layout + "')", "'" + k_rope.layout + "'");
  check_rope(q_rope, "q_rope", layout, dim);
  check_rope(k_rope, "k_rope", layout, dim);
  require_device();
  const QkSide qs = make_side(q, q_out, q_weight, q_rope, layout, q_scale, batch, q_tokens, dim);
  const QkSide ks = make_side(k, k_out, k_weight, k_rope, layout, k_scale, batch, k_tokens, dim);
  const QkShared shared{static_cast<int>(dim), static_cast<float>(eps), weight_fp32, layout};
  cuda_check(launch_qk_norm_rope(qs, ks, shared, reinterpret_cast<cudaStream_t>(stream)), "qk_norm_rope launch");
}

}  // namespace ltxe
