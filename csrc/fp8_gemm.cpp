// Host wrapper: validates sizes, strides and alignment, then launches on the caller's stream.
#include <cstdint>
#include <limits>
#include <string>

#include "common.h"
#include "fp8_gemm.h"

namespace ltxe {

namespace {
// TMA tile coordinates are signed 32-bit, and the kernel indexes rows and columns with int.
constexpr int64_t kMaxDim = std::numeric_limits<int32_t>::max();
// TMA global strides must stay below 2^40 bytes.
constexpr int64_t kMaxStride = (int64_t{1} << 40) - 16;
}  // namespace

void fp8_gemm(uintptr_t a, uintptr_t b, uintptr_t scale_a, uintptr_t scale_b, uintptr_t bias, uintptr_t out,
              int64_t m, int64_t n, int64_t k, int64_t lda, bool scale_a_per_row, bool scale_b_per_col,
              uintptr_t stream) {
  // The checks stay in this function: LTXE_CHECK names the enclosing function in its message.
  LTXE_CHECK(m > 0 && m <= kMaxDim, "m", "must be in [1, 2^31 - 1]", m);
  LTXE_CHECK(n > 0 && n <= kMaxDim, "n", "must be in [1, 2^31 - 1]", n);
  // TMA needs every row of a and b to start on 16 bytes: b's rows are k bytes long.
  LTXE_CHECK(k > 0 && k <= kMaxDim && k % 16 == 0, "k", "must be a positive multiple of 16 below 2^31", k);
  LTXE_CHECK(lda >= k && lda <= kMaxStride && lda % 16 == 0, "lda",
             "must be a multiple of 16, >= k (" + std::to_string(k) + ") and < 2^40", lda);
  // Bulk tensor copies read from 16-byte aligned global addresses.
  LTXE_CHECK(a != 0 && a % 16 == 0, "a", "must be non-null and 16-byte aligned", a);
  LTXE_CHECK(b != 0 && b % 16 == 0, "b", "must be non-null and 16-byte aligned", b);
  LTXE_CHECK(scale_a != 0 && scale_a % 4 == 0, "scale_a", "must be non-null and 4-byte aligned (fp32)", scale_a);
  LTXE_CHECK(scale_b != 0 && scale_b % 4 == 0, "scale_b", "must be non-null and 4-byte aligned (fp32)", scale_b);
  LTXE_CHECK(bias % 2 == 0, "bias", "must be 0 (no bias) or 2-byte aligned (bf16)", bias);
  LTXE_CHECK(out != 0 && out % 2 == 0, "out", "must be non-null and 2-byte aligned (bf16)", out);
  require_device();
  cuda_check(launch_fp8_gemm(reinterpret_cast<const void*>(a), reinterpret_cast<const void*>(b),
                             reinterpret_cast<const float*>(scale_a), reinterpret_cast<const float*>(scale_b),
                             reinterpret_cast<const void*>(bias), reinterpret_cast<void*>(out), m, n, k, lda,
                             scale_a_per_row, scale_b_per_col, reinterpret_cast<cudaStream_t>(stream)),
             "fp8_gemm launch");
}

}  // namespace ltxe
