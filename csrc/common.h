// Shared host-side helpers for ltxengine's CUDA extension. Host wrappers receive raw device
// pointers (as integers) from Python, so every argument is checked here before a launch.
#pragma once
#include <cuda_runtime.h>
#include <sstream>
#include <stdexcept>
#include <string>

namespace ltxe {

// LTXE_CHECK(cond, "name", "rule", value): throws ValueError-style text that names the
// argument, the rule it broke and the value it had (pybind11 maps std::invalid_argument to
// ValueError).
#define LTXE_CHECK(cond, arg, rule, value)                                                \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::ostringstream _ltxe_msg;                                                       \
      _ltxe_msg << __func__ << ": " << arg << " " << rule << ", got " << (value);         \
      throw std::invalid_argument(_ltxe_msg.str());                                       \
    }                                                                                     \
  } while (0)

inline void cuda_check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
  }
}

// Fails with a clear message when no CUDA device is usable (the CPU CI machine).
inline void require_device() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    throw std::runtime_error(std::string("ltxengine._C: no usable CUDA device (") +
                             cudaGetErrorString(err) + ")");
  }
}

}  // namespace ltxe
