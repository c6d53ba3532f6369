// CPU emulation of the CUDA execution model, for testing ltxengine's csrc kernels without a GPU.
//
// tests/cuda_emu/build.py force-includes this header (g++ -include) ahead of every csrc file,
// after rewriting each `kernel<<<grid, block, smem, stream>>>(args)` into
// `emu_launch("kernel", kernel, grid, block, smem, stream, args)` and `#ifdef __CUDACC__` into
// `#if 1`. The kernels then compile as plain C++ and run here:
//
// - every CUDA thread of a block is a fiber (ucontext) on the calling OS thread; blocks run one
//   after another. Fibers only switch at __syncthreads, __syncwarp and warp shuffles, so a kernel
//   needs no locks here (atomics are plain read-modify-writes), and `__shared__` (made `static`)
//   is one copy used by the running block: it starts as the previous block left it, not poisoned;
// - a barrier releases when every thread it names has arrived. When no fiber can run but some
//   have not finished, the launch fails with a deadlock report (a __syncthreads skipped by some
//   threads, a shuffle whose mask names an absent lane) instead of hanging;
// - schedules alternate per block: even blocks start in ascending thread order and let the
//   threads a barrier releases run ahead as far as they can; odd blocks start in descending order
//   and resume released threads only after all others (lockstep). A missing barrier therefore
//   tends to show up as a wrong result;
// - shuffles exchange values at the barrier (the value of lane `src` as it was when the warp met);
// - the CUDA runtime calls the host code makes are faked at the bottom (synchronous memset, a
//   sticky last error, one device); any other runtime symbol fails the import of the module;
// - launch configuration is checked like the driver does: block <= 1024 threads and
//   <= __launch_bounds__ (registered by build.py), grid limits; errors come back through
//   cudaGetLastError as on a GPU;
// - .cu files are compiled with -fsanitize=alignment,null,bounds and the sanitizer's handlers
//   (defined here, no sanitizer runtime needed) fail the launch with the source line: a typed
//   access below its type's alignment (the CUDA vector types keep their GPU alignment, uint4 16
//   bytes), which is a fault on a GPU and silently works on x86; a null pointer access; a
//   register-array index out of range. Accesses outside a tensor are not seen here (the tests
//   surround tensors with NaN bands and canaries for that).
//
// Part 2 (LTXE_EMU_RUNTIME) is compiled once, in a translation unit of its own.
#pragma once

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

namespace emu {

// Index registers of the running CUDA thread (linear = x + y*bx + z*bx*by picks lane and warp).
struct Regs {
  uint3 thread;
  uint3 block;
  dim3 block_dim;
  dim3 grid_dim;
  unsigned linear;
};
extern Regs regs;

void sync_block();                                              // __syncthreads
void sync_warp(unsigned mask);                                  // __syncwarp
uint64_t exchange(unsigned mask, uint64_t mine, int src_lane);  // one warp shuffle, 8-byte payload
void run_grid(const char* name, const void* kernel, dim3 grid, dim3 block, size_t smem, void (*body)(void*),
              void* ctx);
bool register_bounds(const void* kernel, int max_threads);  // __launch_bounds__, via build.py

template <typename T, typename... Rest>
constexpr int first_of(T first, Rest...) { return static_cast<int>(first); }

inline unsigned lane() { return regs.linear & 31u; }

// Source lane of a shuffle inside its `width` segment; out-of-segment reads return the caller's
// own value, as the CUDA programming guide specifies.
template <typename T>
T shuffle(unsigned mask, T v, int src) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "emu: shuffle payloads are <= 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = exchange(mask, bits, src);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

inline int segment_start(int width) { return static_cast<int>(lane()) & ~(width - 1); }

}  // namespace emu

// ---- CUDA built-ins as the kernels spell them ----------------------------------------------------

#define threadIdx (::emu::regs.thread)
#define blockIdx (::emu::regs.block)
#define blockDim (::emu::regs.block_dim)
#define gridDim (::emu::regs.grid_dim)
#define warpSize 32
#undef __shared__
#define __shared__ static  // one copy, used by the one block that runs at a time
#undef __launch_bounds__
#define __launch_bounds__(...)
#define __syncthreads() ::emu::sync_block()

inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::sync_warp(mask); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = static_cast<int>(emu::lane()), src = lane ^ lane_mask;
  return emu::shuffle(mask, v, src >= emu::segment_start(width) + width ? lane : src);
}

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = static_cast<int>(emu::lane()), src = lane + static_cast<int>(delta);
  return emu::shuffle(mask, v, src >= emu::segment_start(width) + width ? lane : src);
}

template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = static_cast<int>(emu::lane()), src = lane - static_cast<int>(delta);
  return emu::shuffle(mask, v, src < emu::segment_start(width) ? lane : src);
}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return emu::shuffle(mask, v, emu::segment_start(width) + (src_lane & (width - 1)));
}

// Device math without a host definition. rsqrtf on a GPU is an approximation (<= 2 ulp); here it
// is 1/sqrt in fp32 (two correctly rounded steps), so last-bit agreement is not proven.
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }

// Atomics: fibers switch only at barriers, so a plain read-modify-write is atomic here.
namespace emu {
template <typename T, typename F>
T rmw(T* p, F f) { const T old = *p; *p = f(old); return old; }
}  // namespace emu

#define EMU_ATOMIC(T)                                                                              \
  inline T atomicAdd(T* p, T v) { return emu::rmw(p, [v](T o) { return static_cast<T>(o + v); }); } \
  inline T atomicMax(T* p, T v) { return emu::rmw(p, [v](T o) { return o < v ? v : o; }); }         \
  inline T atomicMin(T* p, T v) { return emu::rmw(p, [v](T o) { return v < o ? v : o; }); }         \
  inline T atomicExch(T* p, T v) { return emu::rmw(p, [v](T) { return v; }); }                      \
  inline T atomicCAS(T* p, T cmp, T v) { return emu::rmw(p, [cmp, v](T o) { return o == cmp ? v : o; }); }
EMU_ATOMIC(int)
EMU_ATOMIC(unsigned int)
EMU_ATOMIC(unsigned long long int)
#undef EMU_ATOMIC
inline float atomicAdd(float* p, float v) { return emu::rmw(p, [v](float o) { return o + v; }); }

// What a rewritten launch calls: arguments convert to the kernel's parameter types once, as
// they would when the launch is queued; each thread then receives its own copies of them.
template <typename... P, typename... A>
void emu_launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t,
                A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "emu_launch: argument count differs from the kernel's");
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  auto body = [&] { std::apply(kernel, params); };
  using Body = decltype(body);
  emu::run_grid(name, reinterpret_cast<const void*>(kernel), grid, block, smem,
                [](void* b) { (*static_cast<Body*>(b))(); }, &body);
}

#ifdef LTXE_EMU_RUNTIME
// ==== Part 2: the runtime (one translation unit) ================================================
#include <sys/mman.h>
#include <ucontext.h>

#include <cstdio>
#include <deque>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace emu {

Regs regs;

namespace {

constexpr size_t kStack = 128 * 1024;  // kernels keep a few dozen floats per thread
constexpr size_t kGuard = 4096;        // PROT_NONE page below each stack: overflow faults

enum class State { kReady, kWaiting, kDone };

struct Fiber {
  ucontext_t ctx;
  State state;
  uint3 tid;
  const char* where;  // what it waits at
  uint64_t value;     // shuffle payload posted, then the payload received
  int src;            // shuffle source lane, -1 for __syncwarp
};

struct WarpBarrier {
  unsigned mask = 0, arrived = 0;
  std::vector<int> waiting;
};

struct Block {
  const char* kernel;
  uint3 index;
  unsigned threads;
  std::vector<Fiber> fibers;
  std::deque<int> ready;
  bool run_ahead;
  int current = -1;
  ucontext_t scheduler;
  std::vector<int> at_block_barrier;
  std::vector<WarpBarrier> warps;
  std::string error;
  void (*body)(void*);
  void* ctx;
};

Block* g_block = nullptr;
std::string g_host_fault;  // a sanitizer report from host code (outside any fiber)
cudaError_t g_last_error = cudaSuccess;  // sticky until cudaGetLastError reads it
cudaError_t g_detail_code = cudaSuccess;  // the error g_detail explains
std::string g_detail;

std::map<const void*, int>& bounds() {
  static std::map<const void*, int> table;
  return table;
}

char* stacks(unsigned n) {
  static char* base = nullptr;
  static unsigned have = 0;
  if (n <= have) return base;
  if (base != nullptr) munmap(base, have * (kStack + kGuard));
  void* p = mmap(nullptr, n * (kStack + kGuard), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("emu: cannot map fiber stacks");
  base = static_cast<char*>(p);
  have = n;
  for (unsigned i = 0; i < n; ++i) mprotect(base + i * (kStack + kGuard), kGuard, PROT_NONE);
  return base;
}

// Parks the running fiber (its state set by the caller) and returns to the scheduler.
void park() {
  Block& b = *g_block;
  swapcontext(&b.fibers[b.current].ctx, &b.scheduler);
}

// First failure wins; the fiber never resumes and the scheduler abandons the block.
void fail(const std::string& msg) {
  Block& b = *g_block;
  if (b.error.empty()) b.error = msg;
  b.fibers[b.current].state = State::kWaiting;
  b.fibers[b.current].where = "a failure";
  park();
}

void release(std::vector<int>& ids) {
  Block& b = *g_block;
  for (int i : ids) b.fibers[i].state = State::kReady;
  if (b.run_ahead) {  // the group that just met goes first, in arrival order
    for (auto it = ids.rbegin(); it != ids.rend(); ++it) b.ready.push_front(*it);
  } else {  // everyone else runs before any of the group does
    for (int i : ids) b.ready.push_back(i);
  }
  ids.clear();
}

// The caller has marked itself waiting (and maybe released itself as the last to arrive).
void wait_here(const char* where) {
  g_block->fibers[g_block->current].where = where;
  park();
}

void fiber_main() {
  Block& b = *g_block;
  try {
    b.body(b.ctx);
  } catch (const std::exception& e) {
    fail(std::string("kernel threw: ") + e.what());
  }
  b.fibers[b.current].state = State::kDone;
  setcontext(&b.scheduler);
}

void in_kernel(const char* what) {
  if (g_block == nullptr) throw std::logic_error(std::string("emu: ") + what + " called outside a kernel");
}

std::string ranges(const std::vector<unsigned>& ids) {
  std::ostringstream s;
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    s << (i ? "," : "") << ids[i];
    if (j > i) s << "-" << ids[j];
    i = j + 1;
  }
  return s.str();
}

// "threads 0-31 at __syncthreads; threads 32-63 finished"
std::string deadlock_report(const Block& b) {
  std::map<std::string, std::vector<unsigned>> by_state;
  for (unsigned i = 0; i < b.threads; ++i) {
    const Fiber& f = b.fibers[i];
    by_state[f.state == State::kDone ? "finished" : std::string("at ") + f.where].push_back(i);
  }
  std::ostringstream s;
  for (const auto& [state, ids] : by_state) s << (s.tellp() ? "; " : "") << "threads " << ranges(ids) << " " << state;
  return s.str();
}

void run_block(Block& b) {
  const unsigned n = b.threads;
  char* base = stacks(n);
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = b.fibers[i];
    const unsigned bx = regs.block_dim.x, by = regs.block_dim.y;
    f.tid = make_uint3(i % bx, (i / bx) % by, i / (bx * by));
    f.state = State::kReady;
    f.where = "start";
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = base + i * (kStack + kGuard) + kGuard;
    f.ctx.uc_stack.ss_size = kStack;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
    b.ready.push_back(b.run_ahead ? i : n - 1 - i);
  }
  while (!b.ready.empty() && b.error.empty()) {
    const int i = b.ready.front();
    b.ready.pop_front();
    b.current = i;
    regs.thread = b.fibers[i].tid;
    regs.linear = static_cast<unsigned>(i);
    swapcontext(&b.scheduler, &b.fibers[i].ctx);
  }
  if (b.error.empty()) {
    for (unsigned i = 0; i < n; ++i) {
      if (b.fibers[i].state != State::kDone) {
        b.error = "deadlock: " + deadlock_report(b);
        break;
      }
    }
  }
}

void set_error(cudaError_t err, const std::string& detail) {
  g_last_error = g_detail_code = err;
  g_detail = detail;
}

// The checks the driver makes before a launch; false (and a sticky error) when it would refuse.
bool config_ok(const char* name, const void* kernel, dim3 grid, dim3 block) {
  std::ostringstream s;
  s << "emu: launch of " << name << " with grid (" << grid.x << ", " << grid.y << ", " << grid.z << ") block ("
    << block.x << ", " << block.y << ", " << block.z << "): ";
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
    set_error(cudaErrorInvalidConfiguration,
              s.str() + "invalid configuration (1..1024 threads per block, grid limits)");
    return false;
  }
  const auto it = bounds().find(kernel);
  if (it != bounds().end() && threads > static_cast<uint64_t>(it->second)) {
    set_error(cudaErrorLaunchOutOfResources,
              s.str() + "more threads than __launch_bounds__(" + std::to_string(it->second) + ")");
    return false;
  }
  return true;
}

std::string where_text(const uint3& i) {
  return "(" + std::to_string(i.x) + ", " + std::to_string(i.y) + ", " + std::to_string(i.z) + ")";
}

}  // namespace

bool register_bounds(const void* kernel, int max_threads) {
  bounds()[kernel] = max_threads;
  return true;
}

void run_grid(const char* name, const void* kernel, dim3 grid, dim3 block, size_t smem, void (*body)(void*),
              void* ctx) {
  if (g_block != nullptr) throw std::logic_error("emu: a kernel launched a kernel");
  if (!g_host_fault.empty()) {
    const std::string msg = "emu: before launching " + std::string(name) + ": " + g_host_fault;
    g_host_fault.clear();
    throw std::runtime_error(msg);
  }
  if (smem != 0) throw std::runtime_error(std::string("emu: ") + name + ": dynamic shared memory is not emulated");
  if (!config_ok(name, kernel, grid, block)) return;
  const unsigned threads = block.x * block.y * block.z;
  Block b;
  b.kernel = name;
  b.threads = threads;
  b.fibers.resize(threads);
  b.warps.resize((threads + 31) / 32);
  b.body = body;
  b.ctx = ctx;
  regs.block_dim = block;
  regs.grid_dim = grid;
  unsigned long long linear = 0;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x, ++linear) {
        b.index = make_uint3(x, y, z);
        b.run_ahead = linear % 2 == 0;
        b.ready.clear();
        b.at_block_barrier.clear();
        for (auto& w : b.warps) w = WarpBarrier{};
        regs.block = b.index;
        g_block = &b;
        struct Leave {
          ~Leave() { g_block = nullptr; }
        } leave;
        run_block(b);
        if (!b.error.empty()) {
          throw std::runtime_error(std::string("emu: ") + name + " block " + where_text(b.index) + ": " + b.error);
        }
      }
    }
  }
}

void sync_block() {
  in_kernel("__syncthreads");
  Block& b = *g_block;
  b.fibers[b.current].state = State::kWaiting;
  b.at_block_barrier.push_back(b.current);
  if (b.at_block_barrier.size() == b.threads) release(b.at_block_barrier);
  wait_here("__syncthreads");
}

namespace {

// All lanes of `mask` in the caller's warp meet; each gets the payload of its source lane.
uint64_t warp_meet(unsigned mask, uint64_t mine, int src, const char* what) {
  in_kernel(what);
  Block& b = *g_block;
  const unsigned warp = regs.linear >> 5, lane = regs.linear & 31u;
  const unsigned lanes_here = b.threads - warp * 32 >= 32 ? 32 : b.threads - warp * 32;
  const unsigned present = lanes_here == 32 ? 0xffffffffu : (1u << lanes_here) - 1u;
  std::ostringstream s;
  s << what << " in warp " << warp << " lane " << lane << " with mask 0x" << std::hex << mask;
  if (!(mask >> lane & 1u)) fail(s.str() + ": the mask must include the calling lane");
  if (mask & ~present) fail(s.str() + ": the mask names lanes the block does not have");
  if (src >= 0 && (src > 31 || !(mask >> src & 1u))) {
    fail(s.str() + ": source lane " + std::to_string(src) + " is not in the mask");
  }
  WarpBarrier& w = b.warps[warp];
  if (w.arrived != 0 && w.mask != mask) {
    std::ostringstream t;
    t << std::hex << "0x" << w.mask;
    fail(s.str() + ": other lanes of the warp are waiting with mask " + t.str());
  }
  w.mask = mask;
  w.arrived |= 1u << lane;
  Fiber& me = b.fibers[b.current];
  me.value = mine;
  me.src = src;
  me.state = State::kWaiting;
  w.waiting.push_back(b.current);
  if (w.arrived == mask) {
    // Everyone has posted: hand out the payloads before anyone can post the next round.
    std::vector<uint64_t> posted(32, 0);
    for (int i : w.waiting) posted[static_cast<unsigned>(i) & 31u] = b.fibers[i].value;
    for (int i : w.waiting) {
      if (b.fibers[i].src >= 0) b.fibers[i].value = posted[b.fibers[i].src];
    }
    w.arrived = 0;
    release(w.waiting);
  }
  wait_here(what);
  return b.fibers[b.current].value;
}

}  // namespace

void sync_warp(unsigned mask) { warp_meet(mask, 0, -1, "__syncwarp"); }

uint64_t exchange(unsigned mask, uint64_t mine, int src_lane) {
  return warp_meet(mask, mine, src_lane, "a warp shuffle");
}

// ---- sanitizer handlers (-fsanitize=alignment,null,bounds on the .cu files) ----------------------

namespace {
struct SourceLocation { const char* file; uint32_t line, column; };
struct TypeDescriptor { uint16_t kind, info; char name[1]; };
struct TypeMismatchData { SourceLocation loc; const TypeDescriptor* type; unsigned char log_alignment, check_kind; };
struct OutOfBoundsData { SourceLocation loc; const TypeDescriptor* array_type; const TypeDescriptor* index_type; };

std::string at(const SourceLocation& loc) {
  const char* slash = std::strrchr(loc.file, '/');
  return std::string(slash ? slash + 1 : loc.file) + ":" + std::to_string(loc.line);
}

void fault(const std::string& msg) {
  if (g_block != nullptr) fail(msg);
  if (g_host_fault.empty()) g_host_fault = msg;
}
}  // namespace

}  // namespace emu

extern "C" {

void __ubsan_handle_type_mismatch_v1(emu::TypeMismatchData* d, uintptr_t ptr) {
  std::ostringstream s;
  if (ptr == 0) {
    s << "null pointer access to " << d->type->name << " at " << emu::at(d->loc);
  } else {
    s << "misaligned access to " << d->type->name << " at 0x" << std::hex << ptr << std::dec << " (needs "
      << (1u << d->log_alignment) << "-byte alignment) at " << emu::at(d->loc);
  }
  emu::fault(s.str());
}

void __ubsan_handle_out_of_bounds(emu::OutOfBoundsData* d, uintptr_t index) {
  emu::fault("index " + std::to_string(static_cast<intptr_t>(index)) + " out of bounds for " + d->array_type->name +
             " at " + emu::at(d->loc));
}

// ---- the CUDA runtime calls of the host code -------------------------------------------------------

cudaError_t cudaGetLastError(void) {
  const cudaError_t err = emu::g_last_error;
  emu::g_last_error = cudaSuccess;
  return err;
}

cudaError_t cudaPeekAtLastError(void) { return emu::g_last_error; }

const char* cudaGetErrorString(cudaError_t err) {
  if (err == cudaSuccess) return "no error";
  return err == emu::g_detail_code ? emu::g_detail.c_str() : "emu: CUDA error";
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

// Streams are in order and launches complete before they return, so async == sync here.
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) {
  std::memset(ptr, value, count);
  return cudaSuccess;
}

cudaError_t cudaMemset(void* ptr, int value, size_t count) { return cudaMemsetAsync(ptr, value, count, nullptr); }

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind, cudaStream_t) {
  std::memmove(dst, src, count);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }

}  // extern "C"
#endif  // LTXE_EMU_RUNTIME
