// Host wrappers: check shapes, strides and alignment of the raw addresses, then launch on the
// caller's stream.
#include "common.h"
#include "fp8_quantize.h"

namespace ltxe {

namespace {

// bf16 input read as 16-byte vectors, e4m3 output written as 8-byte vectors.
void check_matrix(const char* fn, uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride,
                  int64_t rows, int64_t cols) {
  LTXE_CHECK_IN(fn, rows > 0 && rows < (int64_t{1} << 31), "rows", "must be in [1, 2^31) (one block per row)", rows);
  LTXE_CHECK_IN(fn, cols > 0 && cols % 8 == 0 && cols < (int64_t{1} << 31), "cols",
                "must be a positive multiple of 8", cols);
  LTXE_CHECK_IN(fn, x != 0 && x % 16 == 0, "x", "must be non-null and 16-byte aligned", x);
  LTXE_CHECK_IN(fn, x_row_stride >= cols && x_row_stride % 8 == 0, "x_row_stride",
                "must be a multiple of 8 elements and >= cols (" + std::to_string(cols) + ")", x_row_stride);
  LTXE_CHECK_IN(fn, out != 0 && out % 8 == 0, "out", "must be non-null and 8-byte aligned", out);
  LTXE_CHECK_IN(fn, out_row_stride >= cols && out_row_stride % 8 == 0, "out_row_stride",
                "must be a multiple of 8 elements and >= cols (" + std::to_string(cols) + ")", out_row_stride);
}

}  // namespace

void quantize_fp8_static(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride, uintptr_t scale,
                         int64_t scale_row_stride, int64_t rows, int64_t cols, uintptr_t stream) {
  check_matrix(__func__, x, x_row_stride, out, out_row_stride, rows, cols);
  LTXE_CHECK(scale != 0 && scale % 4 == 0, "scale", "must be non-null and 4-byte aligned", scale);
  LTXE_CHECK(scale_row_stride == 0 || scale_row_stride == 1, "scale_row_stride",
             "must be 0 (per-tensor scale) or 1 (per-row scales)", scale_row_stride);
  require_device();
  cuda_check(launch_quantize_fp8_static(reinterpret_cast<const void*>(x), x_row_stride, reinterpret_cast<void*>(out),
                                        out_row_stride, reinterpret_cast<const float*>(scale), scale_row_stride, rows,
                                        cols, reinterpret_cast<cudaStream_t>(stream)),
             "quantize_fp8_static launch");
}

void quantize_fp8_dynamic(uintptr_t x, int64_t x_row_stride, uintptr_t out, int64_t out_row_stride,
                          uintptr_t scale_out, bool per_row, int64_t rows, int64_t cols, uintptr_t stream) {
  check_matrix(__func__, x, x_row_stride, out, out_row_stride, rows, cols);
  LTXE_CHECK(scale_out != 0 && scale_out % 4 == 0, "scale_out", "must be non-null and 4-byte aligned", scale_out);
  require_device();
  cuda_check(launch_quantize_fp8_dynamic(reinterpret_cast<const void*>(x), x_row_stride, reinterpret_cast<void*>(out),
                                         out_row_stride, reinterpret_cast<float*>(scale_out), per_row, rows, cols,
                                         reinterpret_cast<cudaStream_t>(stream)),
             "quantize_fp8_dynamic launch");
}

}  // namespace ltxe
