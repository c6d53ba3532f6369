// fp8 (e4m3) scaled GEMM for Hopper: out = (A @ B^T) * scale_a * scale_b + bias, bf16 out.
//
// Structure (one persistent kernel, 288 threads per CTA, one CTA per SM):
//   warps 0-7  = two consumer warpgroups; warpgroup w owns rows [64w, 64w + 64) of a 128 x 128
//                output tile and issues wgmma.m64n128k32 with both operands in shared memory;
//   warp 8     = producer: one thread issues TMA bulk-tensor copies of A and B k-tiles into a
//                kStages-deep shared-memory ring.
// The ring is synchronised with two mbarriers per stage: full[s] (TMA bytes landed: producer ->
// consumers) and empty[s] (all 8 consumer warps are done reading: consumers -> producer).
//
// Precision: Hopper's fp8 tensor cores keep fewer than fp32's bits while adding into the
// accumulator, which over K = 8192 would cost several bf16 ulps. Each 128-wide k-tile is therefore
// accumulated by the tensor cores into a fresh register tile and then added ("promoted") to an fp32
// accumulator with ordinary FADDs, so the tensor cores only ever sum 128 products.
#include <cuda.h>  // CUtensorMap and its enums (types only: the driver is reached at run time)
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "fp8_gemm.h"

namespace ltxe {
namespace {

// ---- Tile and grid configuration: every shape choice of this kernel lives here. ----
constexpr int kBlockM = 128;  // two consumer warpgroups x wgmma M (64)
constexpr int kBlockN = 128;  // wgmma N: 64 fp32 per thread for the k-tile + 64 for the promoted sum
constexpr int kBlockK = 128;  // 128 e4m3 = one 128-byte swizzle row = 4 wgmma k32 steps
constexpr int kWgmmaK = 32;   // K of one e4m3 wgmma
constexpr int kStages = 6;    // 6 x 32 KB ring: deep enough to cover the TMA latency, fits 227 KB
constexpr int kGroupM = 8;    // tile raster: 8 M-tiles share each N-tile's B panel while it is in L2
constexpr int kConsumerWarpgroups = 2;
constexpr int kConsumerThreads = kConsumerWarpgroups * 128;
constexpr int kThreads = kConsumerThreads + 32;  // + one producer warp
constexpr int kTileBytesA = kBlockM * kBlockK;   // e4m3: 1 byte per element
constexpr int kTileBytesB = kBlockN * kBlockK;
constexpr int kStageBytes = kTileBytesA + kTileBytesB;
constexpr int kSwizzleAtom = 1024;  // 8 rows x 128 B: the 128-byte swizzle pattern repeats here
// Ring + full/empty barriers + slack to round the dynamic-smem base up to kSwizzleAtom.
constexpr int kSmemBytes = kStages * kStageBytes + 2 * kStages * 8 + kSwizzleAtom;
constexpr int kAccRegs = kBlockN / 2;  // wgmma m64nN f32: N/2 accumulators per thread

static_assert(kBlockK == 128, "the 128-byte swizzle row must hold exactly one k-tile of e4m3");
static_assert(kStageBytes % kSwizzleAtom == 0 && kTileBytesA % kSwizzleAtom == 0,
              "every operand tile must start on a swizzle atom (descriptor base offset 0)");
static_assert((kBlockM / kConsumerWarpgroups) * kBlockK % kSwizzleAtom == 0,
              "each warpgroup's 64-row half of A must start on a swizzle atom");
static_assert(kSmemBytes <= 227 * 1024, "shared memory ring exceeds the sm_90 per-block limit");

// ---- PTX wrappers (shared-memory addresses are 32-bit shared-window addresses) ----

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}

// Producer arrival that also tells the barrier how many TMA bytes complete this phase.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}

// Spins until the phase with the given parity has completed (C++ loop: PTX labels would be
// duplicated by inlining).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

// 2-D TMA tile load; c0 is the inner (K, in elements = bytes) coordinate, c1 the row.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
      ::"r"(dst), "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }

// Pins the accumulator registers at this point of the program: the compiler may not move reads
// or writes of them across it (wgmma writes them asynchronously, behind the compiler's back).
__device__ __forceinline__ void fence_regs(float (&r)[kAccRegs]) {
#pragma unroll
  for (int i = 0; i < kAccRegs; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

// wgmma shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format") for a K-major tile
// stored as 128-byte rows in the 128-byte swizzle pattern that TMA's SWIZZLE_128B writes:
//   bits  0-13  start address >> 4
//   bits 16-29  leading-dimension byte offset >> 4: unused for swizzled K-major tiles (one
//               wgmma's 32-byte K slice never leaves its 128-byte row); set to 1 as is customary
//   bits 32-45  stride-dimension byte offset >> 4: 1024 B from one 8-row group to the next
//   bits 49-51  base offset: 0, every tile starts on a 1024-byte swizzle atom
//   bits 62-63  swizzle mode: 1 = 128-byte swizzle
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr) {
  uint64_t d = static_cast<uint64_t>((addr & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>(1) << 16;
  d |= static_cast<uint64_t>(kSwizzleAtom >> 4) << 32;
  d |= static_cast<uint64_t>(1) << 62;
  return d;
}

// d[64x128] (+)= A[64x32] * B[128x32]^T; scale_d = 0 overwrites d instead of adding to it.
__device__ __forceinline__ void wgmma_m64n128k32(float (&d)[kAccRegs], uint64_t desc_a, uint64_t desc_b,
                                                 int scale_d) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

// ---- Kernel pieces ----

struct Problem {
  const float* scale_a;        // [m] if sa_per_row else [1]
  const float* scale_b;        // [n] if sb_per_col else [1]
  const __nv_bfloat16* bias;   // [n] or nullptr
  __nv_bfloat16* out;          // [m, n], contiguous
  int m, n, k_tiles;
  int64_t tiles_m, tiles_n;
  bool sa_per_row, sb_per_col, pair_store;  // pair_store: out rows allow 4-byte bf16x2 stores
};

// Persistent tile order: groups of kGroupM M-tiles walk all N-tiles with M fastest, so the CTAs
// running at the same time share a few A row-panels and B column-panels in L2.
__device__ __forceinline__ void tile_origin(int64_t tile, const Problem& p, int& m0, int& n0) {
  const int64_t per_group = kGroupM * p.tiles_n;
  const int64_t first_m = (tile / per_group) * kGroupM;
  const int64_t rows = min(p.tiles_m - first_m, static_cast<int64_t>(kGroupM));
  const int64_t in_group = tile % per_group;
  m0 = static_cast<int>((first_m + in_group % rows) * kBlockM);
  n0 = static_cast<int>((in_group / rows) * kBlockN);
}

// One thread feeds the ring for every tile this CTA owns, running up to kStages k-tiles ahead
// (also into the next tile while the consumers are still in their epilogue).
__device__ void produce(const Problem& p, const CUtensorMap* map_a, const CUtensorMap* map_b, uint32_t ring,
                        uint32_t full, uint32_t empty) {
  int stage = 0;
  uint32_t phase = 0;
  bool first_pass = true;  // the ring's first lap needs no empty-slot wait
  for (int64_t tile = blockIdx.x; tile < p.tiles_m * p.tiles_n; tile += gridDim.x) {
    int m0, n0;
    tile_origin(tile, p, m0, n0);
    for (int kt = 0; kt < p.k_tiles; ++kt) {
      // Lap L >= 1 reuses the slot that the consumers released in lap L-1, i.e. waits for
      // completion number L-1 of empty[stage], whose parity is phase ^ 1.
      if (!first_pass) mbar_wait(empty + 8 * stage, phase ^ 1);
      const uint32_t bar = full + 8 * stage;
      const uint32_t dst = ring + stage * kStageBytes;
      // TMA counts whole boxes, zero-filled out-of-bounds parts included, so the byte count is
      // constant even for partial M/N/K tiles.
      mbar_arrive_expect_tx(bar, kStageBytes);
      tma_load_2d(dst, map_a, kt * kBlockK, m0, bar);
      tma_load_2d(dst + kTileBytesA, map_b, kt * kBlockK, n0, bar);
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
        first_pass = false;
      }
    }
  }
}

// Scales, adds the bias and stores one warpgroup's 64 x 128 accumulator. wgmma's D layout: warp w
// of the warpgroup holds rows 16w + lane/4 (+8); register 4j + 2h + c is column 8j + 2(lane%4) + c
// of row half h.
__device__ void store_tile(const Problem& p, const float (&acc)[kAccRegs], int row_base, int n0) {
  const int lane = threadIdx.x % 32;
  const int warp = (threadIdx.x / 32) % 4;
  const float sb_all = p.scale_b[0];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row_base + warp * 16 + lane / 4 + 8 * h;
    if (row >= p.m) continue;
    const float sa = p.sa_per_row ? p.scale_a[row] : p.scale_a[0];
    __nv_bfloat16* out_row = p.out + static_cast<int64_t>(row) * p.n;
#pragma unroll
    for (int j = 0; j < kBlockN / 8; ++j) {
      const int col = n0 + 8 * j + 2 * (lane % 4);
      if (col >= p.n) break;
      const bool has1 = col + 1 < p.n;
      // Same operation order as the fp32 reference: (acc * scale_a) * scale_b + bias.
      float v0 = acc[4 * j + 2 * h] * sa * (p.sb_per_col ? p.scale_b[col] : sb_all);
      float v1 = has1 ? acc[4 * j + 2 * h + 1] * sa * (p.sb_per_col ? p.scale_b[col + 1] : sb_all) : 0.f;
      if (p.bias != nullptr) {
        v0 += __bfloat162float(p.bias[col]);
        if (has1) v1 += __bfloat162float(p.bias[col + 1]);
      }
      if (has1 && p.pair_store) {
        *reinterpret_cast<__nv_bfloat162*>(out_row + col) = __floats2bfloat162_rn(v0, v1);
      } else {
        out_row[col] = __float2bfloat16_rn(v0);
        if (has1) out_row[col + 1] = __float2bfloat16_rn(v1);
      }
    }
  }
}

// Consumer warpgroup `wg`: per k-tile, 4 wgmma k32 steps into `part` (the first overwrites it),
// wait, hand the slot back, add `part` into the fp32 accumulator; per tile, the epilogue.
__device__ void consume(const Problem& p, int wg, uint32_t ring, uint32_t full, uint32_t empty) {
  float acc[kAccRegs];
  float part[kAccRegs];
#pragma unroll
  for (int i = 0; i < kAccRegs; ++i) part[i] = 0.f;
  const bool warp_leader = threadIdx.x % 32 == 0;
  int stage = 0;
  uint32_t phase = 0;
  for (int64_t tile = blockIdx.x; tile < p.tiles_m * p.tiles_n; tile += gridDim.x) {
    int m0, n0;
    tile_origin(tile, p, m0, n0);
#pragma unroll
    for (int i = 0; i < kAccRegs; ++i) acc[i] = 0.f;
    for (int kt = 0; kt < p.k_tiles; ++kt) {
      mbar_wait(full + 8 * stage, phase);
      // The spin loop (and the previous epilogue's masks) may leave lanes diverged; the .aligned
      // wgmma instructions below need the whole warp converged.
      __syncwarp();
      const uint32_t a_tile = ring + stage * kStageBytes + wg * (kBlockM / kConsumerWarpgroups) * kBlockK;
      const uint32_t b_tile = ring + stage * kStageBytes + kTileBytesA;
      // wgmma.fence orders this thread's earlier register accesses to `part` (the FADDs below,
      // the zero fill) before the asynchronous MMAs that overwrite it.
      fence_regs(part);
      wgmma_fence();
#pragma unroll
      for (int s = 0; s < kBlockK / kWgmmaK; ++s) {
        // Stepping 32 bytes along K inside the swizzled 128-byte rows: the hardware applies the
        // swizzle XOR to the final address, the same way TMA applied it when writing.
        wgmma_m64n128k32(part, smem_desc(a_tile + s * kWgmmaK), smem_desc(b_tile + s * kWgmmaK), s > 0);
      }
      wgmma_commit();
      wgmma_wait_all();
      fence_regs(part);
      // Every lane of this warp has passed the (warp-synchronous) wait, so the warp is done with
      // the slot: one arrival per warp, 8 per phase.
      if (warp_leader) mbar_arrive(empty + 8 * stage);
#pragma unroll
      for (int i = 0; i < kAccRegs; ++i) acc[i] += part[i];
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
    store_tile(p, acc, m0 + wg * (kBlockM / kConsumerWarpgroups), n0);
  }
}

__global__ void __launch_bounds__(kThreads, 1)
    fp8_gemm_kernel(const __grid_constant__ CUtensorMap map_a,  // A [m, k] e4m3, row stride lda, box 128 x 128
                    const __grid_constant__ CUtensorMap map_b,  // B [n, k] e4m3, box 128 x 128
                    const Problem p) {
  extern __shared__ uint8_t smem_raw[];
  // TMA's 128-byte swizzle and the descriptors' base offset 0 both assume 1024-byte aligned tiles.
  const uint32_t raw = smem_addr(smem_raw);
  const uint32_t ring = (raw + kSwizzleAtom - 1) & ~static_cast<uint32_t>(kSwizzleAtom - 1);
  const uint32_t full = ring + kStages * kStageBytes;  // kStages x 8-byte mbarriers
  const uint32_t empty = full + 8 * kStages;          // kStages x 8-byte mbarriers

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full + 8 * s, 1);  // the producer's arrive.expect_tx; the bytes complete the phase
      mbar_init(empty + 8 * s, kConsumerThreads / 32);
    }
    // Make the initialised barriers visible to the other threads and to the TMA unit.
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (threadIdx.x >= kConsumerThreads) {
    if (threadIdx.x == kConsumerThreads) produce(p, &map_a, &map_b, ring, full, empty);
  } else {
    consume(p, threadIdx.x / 128, ring, full, empty);
  }
}

// ---- Host side ----

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  // Resolved through the runtime, so the module needs no -lcuda at link time.
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status;
    cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault,
                                                       &status);
    return (err == cudaSuccess && status == cudaDriverEntryPointSuccess)
               ? reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr)
               : nullptr;
  }();
  if (fn == nullptr) throw std::runtime_error("fp8_gemm: the CUDA driver has no cuTensorMapEncodeTiled (needs 12.0+)");
  return fn;
}

// Row-major e4m3 [rows, k] with a row stride of `ld` bytes, read in 128-row x 128-byte boxes,
// swizzled for wgmma; out-of-bounds rows and columns read as zeros.
CUtensorMap make_tensor_map(const void* ptr, int64_t rows, int64_t k, int64_t ld, int box_rows, const char* name) {
  CUtensorMap map;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(k), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(ld)};
  const cuuint32_t box[2] = {kBlockK, static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t elem_strides[2] = {1, 1};
  CUresult res = tensor_map_encoder()(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(ptr), dims, strides,
                                      box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (res != CUDA_SUCCESS) {
    throw std::runtime_error(std::string("fp8_gemm: cuTensorMapEncodeTiled failed for ") + name + " (CUresult " +
                             std::to_string(static_cast<int>(res)) + ")");
  }
  return map;
}

}  // namespace

cudaError_t launch_fp8_gemm(const void* a, const void* b, const float* scale_a, const float* scale_b,
                            const void* bias, void* out, int64_t m, int64_t n, int64_t k, int64_t lda,
                            bool scale_a_per_row, bool scale_b_per_col, cudaStream_t stream) {
  int device = 0, sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) {
    err = cudaFuncSetAttribute(fp8_gemm_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  }
  if (err != cudaSuccess) return err;

  const CUtensorMap map_a = make_tensor_map(a, m, k, lda, kBlockM, "a");
  const CUtensorMap map_b = make_tensor_map(b, n, k, k, kBlockN, "b");
  Problem p;
  p.scale_a = scale_a;
  p.scale_b = scale_b;
  p.bias = static_cast<const __nv_bfloat16*>(bias);
  p.out = static_cast<__nv_bfloat16*>(out);
  p.m = static_cast<int>(m);
  p.n = static_cast<int>(n);
  p.k_tiles = static_cast<int>((k + kBlockK - 1) / kBlockK);
  p.tiles_m = (m + kBlockM - 1) / kBlockM;
  p.tiles_n = (n + kBlockN - 1) / kBlockN;
  p.sa_per_row = scale_a_per_row;
  p.sb_per_col = scale_b_per_col;
  p.pair_store = n % 2 == 0 && reinterpret_cast<uintptr_t>(out) % 4 == 0;

  // Persistent grid: one CTA per SM (the ring takes most of the shared memory), striding over tiles.
  const int64_t tiles = p.tiles_m * p.tiles_n;
  const unsigned grid = static_cast<unsigned>(tiles < sms ? tiles : sms);
  fp8_gemm_kernel<<<grid, kThreads, kSmemBytes, stream>>>(map_a, map_b, p);
  return cudaGetLastError();
}

}  // namespace ltxe
