"""csrc/'s CUDA kernels run on the CPU through an emulation of the CUDA execution model.

tests/cuda_emu/build.py compiles csrc/ with g++ against tests/cuda_emu/emu.h (every CUDA thread
a fiber; barriers, warp shuffles and the few runtime calls emulated; the CUDA headers' own host
implementations of the bf16/fp8 conversions), and these tests call ``ltxengine.ops.cuda``'s
wrappers on CPU tensors with that module swapped in (device check and stream monkeypatched),
against the fp32 references of ``ltxengine.ops.reference`` with the error budgets of
tests/kernels/budget.py; quantization is compared bit for bit. Tensors sit between NaN guard
bands (inputs) and canaries (outputs), so reads and writes outside them fail the tests too.

What a pass proves: the kernels' index math (rows, 16-element units, split-table heads, vectors,
strides, broadcast modulation rows, grid-stride loops, partial last warps); the block and warp
reductions, barrier placement included (a __syncthreads some threads skip, or a shuffle whose
mask names an absent lane, fails as a deadlock; a missing barrier tends to give a wrong result
because block schedules alternate between run-ahead and lockstep orders); the 16-byte vector
load/store layout (a misaligned typed access, a null access or an out-of-range register-array
index fails the launch with its source line); the conversions' rounding as the CUDA headers'
host code implements it (bf16 and e4m3 round-to-nearest-even, e4m3 saturation, NaN kept);
launch configurations within 1024 threads and each kernel's __launch_bounds__; the Python
wrappers' stride and pointer plumbing through the C++ argument checks.

What it cannot prove: the GPU memory model (races beyond barrier semantics: blocks run one at a
time, threads switch only at barriers and shuffles, atomics never contend), uninitialised shared
memory reads, device intrinsics' exact GPU rounding (rsqrtf is a <= 2 ulp approximation on the
GPU, 1/sqrt here; nvcc may contract a * b + c into FMAs), anything about performance, and
fp8_gemm.cu (wgmma/TMA: excluded in build.py, tested on a GPU). Build + tests: about 11 s wall
on 2 cores (build about 8 s of it).
"""

import contextlib
import ctypes
import re
import shutil

import pytest
import torch

from ltxengine.ops import cuda, reference
from tests.cuda_emu import build as emu_build
from tests.kernels.budget import check_budget

BF16, FP8 = torch.bfloat16, torch.float8_e4m3fn


def _same_device(fn, device, tensors):
    """cuda._same_cuda_device for CPU tensors: the one-device rule without the CUDA rule."""
    for name, t in tensors.items():
        if t is not None and t.device != device:
            raise ValueError(f"{fn}: {name} must be on {device} like the other inputs, got {t.device}")


@contextlib.contextmanager
def _null_stream(device):
    yield 0  # the emulated launches run synchronously on the calling thread


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    try:
        module = emu_build.build(tmp_path_factory.mktemp("cuda_emu"))
    except emu_build.ToolchainMissing as err:
        pytest.skip(f"cannot build the CUDA emulation: {err}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cuda, "_load", lambda: module)
        mp.setattr(cuda, "_same_cuda_device", _same_device)
        mp.setattr(cuda, "_launch", _null_stream)
        yield module


def _rand(*shape, dtype=BF16, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


# Guard bands: tensors live inside byte buffers with 128 bytes each side (16-byte alignment
# kept). Inputs are surrounded by 0xFF bytes, a NaN in bf16 and fp32, so an out-of-range read that
# reaches a result shows up as NaN; outputs by 0xA5 canaries, checked after the call, so an
# out-of-range write fails the test instead of corrupting the heap.
_PAD, _NAN_BYTE, _CANARY = 128, 0xFF, 0xA5


def _in_band(shape, dtype, fill):
    nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    buf = torch.full((nbytes + 2 * _PAD,), fill, dtype=torch.uint8)
    return buf[_PAD:_PAD + nbytes].view(dtype).view(shape), buf


def _guarded(t):
    """A copy of ``t`` with NaN on both sides (NaN also fills what a strided view skips)."""
    out, _ = _in_band(t.shape, t.dtype, _NAN_BYTE)
    return out.copy_(t)


class _GuardedOut:
    """An output tensor between canaries; ``check()`` asserts nothing was written outside it."""

    def __init__(self, shape, dtype):
        self.tensor, self._buf = _in_band(shape, dtype, _CANARY)

    def check(self, what):
        bands = torch.cat([self._buf[:_PAD], self._buf[-_PAD:]])
        assert (bands == _CANARY).all(), f"{what}: the kernel wrote outside its output"


def _nan_except(shape, keep, dtype):
    """A NaN tensor of ``shape`` with random values at index ``keep`` of dim -2 (the slices a
    caller passes as strided views, e.g. rows of an adaLN table); unused slots stay NaN."""
    table = _guarded(torch.full(shape, float("nan"), dtype=dtype))
    for i, k in enumerate(keep):
        table[..., k, :] = _rand(*shape[:-2], shape[-1], dtype=dtype, scale=0.3, seed=20 + i)
    return table


def _report(kernel, lowp, ref, what):
    err, budget = check_budget(kernel, lowp, ref, what)
    print(f"{what}: max err {err:.3e} <= budget {budget:.3e}")


# ---- the rewrite and the emulator themselves -------------------------------------------------

def _launch_count(text: str) -> int:
    """`<<<` launches in ``text``, counted independently of build.py: outside // and /* */
    comments (csrc has no `<<<` inside strings)."""
    return re.sub(r"/\*.*?\*/", "", re.sub(r"//[^\n]*", "", text), flags=re.S).count("<<<")


def test_rewrite_covers_every_launch_in_csrc(tmp_path):
    """A new .cu file or launch cannot escape the emulation: every csrc/*.cu is emulated or
    excluded with a reason, and every `<<<` in an emulated file is rewritten."""
    cu_files = {p.name for p in emu_build.CSRC.glob("*.cu")}
    assert set(emu_build.EXCLUDED) == {"fp8_gemm.cu"}, "a new exclusion must be deliberate: update this test"
    assert set(emu_build.EXCLUDED) <= cu_files, "EXCLUDED names a file that csrc/ no longer has"
    assert all(len(e.reason) > 20 for e in emu_build.EXCLUDED.values())
    prepared = emu_build.prepare_sources(emu_build.CSRC, tmp_path)
    assert set(prepared.excluded) == set(emu_build.EXCLUDED)
    assert cu_files - set(emu_build.EXCLUDED) == {n for n in prepared.launches if n.endswith(".cu")}
    for src in sorted(emu_build.CSRC.iterdir()):
        if src.suffix not in emu_build.SOURCES or src.name in emu_build.EXCLUDED:
            continue
        text, rewritten = src.read_text(), (tmp_path / src.name).read_text()
        assert len(prepared.launches.get(src.name, [])) == _launch_count(text), src.name
        assert all(re.search(rf"\b{re.escape(k)}\s*<<<", text) for k in prepared.launches.get(src.name, []))
        assert "<<<" not in rewritten and rewritten.count("\n") == text.count("\n"), src.name
    assert sum(len(v) for v in prepared.launches.values()) >= 6  # ada, gated, qk, 3 quantize kernels


def test_rewrite_handles_launch_forms():
    src = """// k<<<1, 2>>>(x) in a comment stays
const char* s = "a<<<b>>>(c)";
void f() {
  ns::kern<float, 4><<<dim3(g, 1), block,
                      0, stream>>>(a,
                                   b);
  plain<<<1, 32>>>();
}
"""
    out, names = emu_build.rewrite_source(src, "t.cu")
    assert names == ["ns::kern<float, 4>", "plain"]
    assert 'emu_launch("ns::kern<float, 4>", ns::kern<float, 4>, dim3(g, 1), block, 0, stream, ' in out
    assert 'emu_launch("plain", plain, 1, 32, 0, cudaStream_t{});' in out
    assert out.count("\n") == src.count("\n") and "k<<<1, 2>>>(x) in a comment" in out and '"a<<<b>>>(c)"' in out


def test_rewrite_takes_the_cuda_branch():
    src = "#ifdef __CUDACC__\nA\n#endif  // __CUDACC__\n#ifndef __CUDACC__\nB\n#endif\n#if defined(__CUDACC__) && X\n"
    out, _ = emu_build.rewrite_source(src, "t.h")
    assert out.splitlines()[0] == "#if 1" and out.splitlines()[3] == "#if 0" and out.splitlines()[6] == "#if 1 && X"


REWRITE_ERRORS = {
    "one_config_item": ("void f() {\n  k<<<grid>>>(x);\n}\n", "t.cu:2: cannot rewrite this kernel launch: expected "
                        "<<<grid, block[, smem[, stream]]>>>\n    k<<<grid>>>(x);"),
    "unclosed": ("void f() {\n  k<<<1, 2(x);\n}\n", "t.cu:2: cannot rewrite this kernel launch: no matching >>>"),
    "no_args": ("void f() {\n  k<<<1, 2>>>;\n}\n", "t.cu:2: cannot rewrite this kernel launch: no argument list"),
    "no_callee": ("void f() {\n  (<<<1, 2>>>(x));\n}\n", "t.cu:2: cannot rewrite this kernel launch: no kernel name"),
    "cuda_arch": ("#if __CUDA_ARCH__ >= 900\n#endif\n", "t.cu:1: __CUDA_ARCH__ is not handled by the emulation"),
    "cudacc_version": ("#if defined(__CUDACC__) && __CUDACC_VER_MAJOR__ > 12\n#endif\n",
                       "t.cu:1: __CUDACC_VER_MAJOR__ is not handled"),
    "template_bounds": ("template <int N>\n__global__ void __launch_bounds__(N) k(int* p) {}\n",
                        "t.cu:2: cannot register __launch_bounds__ of a kernel template"),
    "bounds_on_declaration": ("__global__ void __launch_bounds__(256) k(int* p);\n",
                              "t.cu:1: cannot register __launch_bounds__: expected the kernel's body"),
    "bounds_form": ("__global__ void __launch_bounds__(256) (k)(int* p) {}\n",
                    "t.cu:1: cannot register __launch_bounds__: expected `__launch_bounds__(n) kernel_name(params)`"),
}


@pytest.mark.parametrize("case", sorted(REWRITE_ERRORS))
def test_rewrite_refuses_what_it_cannot_handle(case):
    src, message = REWRITE_ERRORS[case]
    with pytest.raises(emu_build.RewriteError, match=re.escape(message)):
        emu_build.rewrite_source(src, "t.cu")


def test_missing_toolchain_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(emu_build, "_cuda_include_candidates", lambda: [tmp_path])
    with pytest.raises(emu_build.ToolchainMissing, match="CUDA headers cuda_runtime.h, cuda_bf16.h, cuda_fp8.h"):
        emu_build.find_toolchain()
    monkeypatch.setattr(emu_build.shutil, "which", lambda name: None)
    with pytest.raises(emu_build.ToolchainMissing, match="g\\+\\+ not found on PATH"):
        emu_build.find_toolchain()


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_compile_failure_shows_command_and_output(tmp_path):
    bad = tmp_path / "bad.cpp"
    bad.write_text("int f() { return undeclared; }\n")
    with pytest.raises(emu_build.BuildError, match=r"(?s)command failed \(1\): .*bad\.cpp.*undeclared"):
        emu_build._run(["g++", "-c", str(bad), "-o", str(tmp_path / "bad.o")])


def _selftest(ext, case):
    lib = ctypes.CDLL(ext.__file__)
    lib.ltxe_emu_selftest.restype = ctypes.c_char_p
    out = (ctypes.c_int * 256)()
    return lib.ltxe_emu_selftest(case.encode(), out).decode(), list(out)


SELFTEST_ERRORS = {
    "early_exit": "emu: emu_early_exit block (0, 0, 0): deadlock: threads 0-31 at __syncthreads; "
                  "threads 32-63 finished",
    "partial_warp": "a warp shuffle in warp 1 lane 0 with mask 0xffffffff: the mask names lanes the block does "
                    "not have",
    "mask_without_caller": "a warp shuffle in warp 0 lane 0 with mask 0xfffffffe: the mask must include the "
                           "calling lane",
    "source_outside_mask": "a warp shuffle in warp 0 lane 0 with mask 0xffff: source lane 20 is not in the mask",
    "mixed_masks": "__syncwarp in warp 0 lane 1 with mask 0xffffffff: other lanes of the warp are waiting with "
                   "mask 0x3",
    "misaligned": "emu: emu_misaligned block (0, 0, 0): misaligned access to 'const struct uint4' at 0x",
    "null": "emu: emu_load block (0, 0, 0): null pointer access to 'const int' at emu_selftest.cu:",
    "index_out_of_bounds": "emu: emu_load block (0, 0, 0): index 4 out of bounds for 'int [4]' at emu_selftest.cu:",
    "throws": "emu: emu_throws block (0, 0, 0): kernel threw: boom",
    "nested_launch": "kernel threw: emu: a kernel launched a kernel",
    "dynamic_smem": "emu: emu_bounded: dynamic shared memory is not emulated",
    "sync_outside_kernel": "emu: __syncthreads called outside a kernel",
    "over_bounds": "launch error: emu: launch of emu_bounded with grid (1, 1, 1) block (96, 1, 1): more threads than "
                   "__launch_bounds__(64)",
    "too_many_threads": "block (2048, 1, 1): invalid configuration",
    "unknown": "unknown self-test unknown",
}


@pytest.mark.parametrize("case", sorted(SELFTEST_ERRORS))
def test_emulator_reports_gpu_faults(ext, case):
    error, _ = _selftest(ext, case)
    assert SELFTEST_ERRORS[case] in error
    if case == "misaligned":  # reported at the source line of the load
        line = emu_build.SELFTEST_CU[:emu_build.SELFTEST_CU.index("*reinterpret_cast<const uint4*>")].count("\n") + 1
        assert error.endswith(f"(needs 16-byte alignment) at emu_selftest.cu:{line}")


def test_emulator_shuffles_and_barriers(ext):
    error, out = _selftest(ext, "shuffles")
    assert error == ""
    lanes = range(64)
    assert out[:64] == [t ^ 5 for t in lanes]
    assert out[64:128] == [t + 3 if t % 16 < 13 else t for t in lanes]  # down, width 16
    assert out[128:192] == [t - 2 if t % 32 >= 2 else t for t in lanes]  # up
    assert out[192:256] == [10 * (t // 32 * 32 + 7) for t in lanes]  # broadcast from lane 7
    assert _selftest(ext, "bounded") == ("", [1] * 64 + [0] * 192)  # at its __launch_bounds__
    assert _selftest(ext, "no_race") == ("", [2] * 64 + [4] * 64 + [0] * 128)
    error, out = _selftest(ext, "race")  # the same kernel without its __syncthreads
    assert error == "" and out[0] != 2, "a missing barrier went unnoticed by the schedule"


def test_excluded_kernel_raises_after_host_checks(ext):
    with pytest.raises(ValueError, match="fp8_gemm: k must be a positive multiple of 16 below 2\\^31, got 24"):
        ext.fp8_gemm(16, 16, 4, 4, 0, 16, 16, 16, 24, 32, False, False, 0)
    with pytest.raises(RuntimeError, match="emu: fp8_gemm is not emulated"):
        ext.fp8_gemm(16, 16, 4, 4, 0, 16, 16, 16, 32, 32, False, False, 0)


# ---- qk_norm_rope ---------------------------------------------------------------------------

def _table(layout, b, n, d, heads, seed):
    if layout == "interleaved":
        angle = _rand(b, n, d // 2, dtype=torch.float32, scale=3, seed=seed).repeat_interleave(2, dim=-1)
    else:
        angle = _rand(b, heads, n, d // heads // 2, dtype=torch.float32, scale=3, seed=seed)
    return _guarded(angle.cos()), _guarded(angle.sin())


QK_CASES = {  # b, nq, nk, d, layout, heads, own k table, table batch, fused q/k views, weight dtype, fp8
    "interleaved": (2, 7, 7, 48, "interleaved", 1, False, 1, False, BF16, False),
    "interleaved_fused_qkv": (2, 7, 7, 48, "interleaved", 1, False, 1, True, BF16, False),
    "interleaved_k_table": (2, 7, 5, 48, "interleaved", 1, True, 2, False, BF16, False),
    "split_k_table": (2, 5, 9, 64, "split", 2, True, 1, False, BF16, False),
    "split_fp32_weight": (2, 6, 6, 128, "split", 4, False, 2, True, torch.float32, False),
    "none": (1, 3, 11, 80, "none", 1, False, 1, False, BF16, False),
    "split_fp8": (2, 4, 4, 64, "split", 2, False, 1, True, BF16, True),
    "interleaved_fp8_k_table": (2, 4, 3, 48, "interleaved", 1, True, 1, False, BF16, True),
    "split_three_warps": (2, 3, 3, 1040, "split", 5, False, 1, False, BF16, False),  # 65 units: 96 threads
    "interleaved_wide": (1, 2, 2, 2048, "interleaved", 1, False, 1, False, BF16, False),
}


def _qk_inputs(b, nq, nk, d, fused):
    if fused:  # q and k sliced from one projection (token stride 3 * d, no copy); v unused: NaN
        qkv = _guarded(torch.cat([_rand(b, nq, 2 * d, scale=2), torch.full((b, nq, d), float("nan"))], -1).to(BF16))
        return qkv[..., :d], qkv[..., d:2 * d]
    return _guarded(_rand(b, nq, d, scale=3, seed=1)), _guarded(_rand(b, nk, d, scale=0.5, seed=2))


@pytest.mark.parametrize("case", sorted(QK_CASES))
def test_qk_norm_rope(ext, case):
    b, nq, nk, d, layout, heads, own_k, tb, fused, wdtype, fp8 = QK_CASES[case]
    q, k = _qk_inputs(b, nq, nk, d, fused)
    qw = _guarded((1 + 0.3 * _rand(d, dtype=torch.float32, seed=3)).to(wdtype))
    kw = _guarded((1 + 0.3 * _rand(d, dtype=torch.float32, seed=4)).to(wdtype))
    rope = None if layout == "none" else _table(layout, tb, nq, d, heads, seed=5)
    k_rope = _table(layout, tb, nk, d, heads, seed=6) if own_k else None
    scales = (_guarded(torch.tensor([0.01])), _guarded(torch.tensor([0.004]))) if fp8 else None
    dtype = FP8 if fp8 else BF16
    outs = (_GuardedOut(q.shape, dtype), _GuardedOut(k.shape, dtype))
    q0, k0 = q.clone(), k.clone()
    got = cuda.qk_norm_rope(q, k, qw, kw, 1e-6, rope, k_rope, fp8_scales=scales, q_out=outs[0].tensor,
                            k_out=outs[1].tensor)
    assert got[0] is outs[0].tensor and got[1] is outs[1].tensor
    for o in outs:
        o.check(case)
    assert torch.equal(q, q0) and torch.equal(k, k0)
    if fused:
        assert cuda._view(q).data_ptr() == q.data_ptr()  # the strided view itself reached the kernel
    lowp = reference.qk_norm_rope(q, k, qw, kw, 1e-6, rope, k_rope, fp8_scales=scales)
    ref = reference.qk_norm_rope(q.float(), k.float(), qw.float(), kw.float(), 1e-6, rope, k_rope)
    for i, (out, lp, r) in enumerate(zip(got, lowp, ref)):
        if fp8:  # the fp32 oracle of an e4m3 output: value / scale, saturated
            r = (r / scales[i]).clamp(-448, 448)
        _report(out, lp, r, f"qk_norm_rope {case} {'qk'[i]}")
    allocated = cuda.qk_norm_rope(q, k, qw, kw, 1e-6, rope, k_rope, fp8_scales=scales)
    assert all(torch.equal(a.view(torch.uint8), g.view(torch.uint8)) for a, g in zip(allocated, got))


# ---- ada_norm -------------------------------------------------------------------------------

def _modulation(mod, b, n, d, dtype, rows=(0, 4)):
    """Modulation rows as the model passes them: strided slices of an adaLN table (B, T, 6, D)
    whose other rows are NaN; "scale_only": one (1, 1, D) row for every sample and token."""
    if mod is None:
        return (None,) * len(rows)
    if mod == "scale_only":
        return None, _guarded(_rand(1, 1, d, dtype=dtype, seed=7))
    table = _nan_except((b, 1 if mod == "sample" else n, 6, d), rows, dtype)
    return tuple(table[:, :, r] for r in rows)


ADA_CASES = {  # b, n, d, modulation, table dtype, strided x
    "sample": (2, 5, 40, "sample", BF16, False),
    "token_fp32_strided_x": (2, 5, 40, "token", torch.float32, True),
    "plain": (1, 3, 24, None, None, False),
    "scale_only": (2, 3, 24, "scale_only", BF16, False),
    "wide_token": (2, 3, 4104, "token", BF16, False),  # 513 vectors: two per thread, 288 threads
}


@pytest.mark.parametrize("kind", ["rms", "layer"])
@pytest.mark.parametrize("case", sorted(ADA_CASES))
def test_ada_norm(ext, case, kind):
    b, n, d, mod, mdtype, strided = ADA_CASES[case]
    x = _rand(b, n, d, scale=2) + 0.5  # non-zero mean: LayerNorm's centring matters
    if strided:  # every other half-row of a (B, N, 2D) buffer; the skipped halves are NaN
        x = _guarded(torch.cat([torch.full_like(x, float("nan")), x], dim=-1))[..., d:]
    else:
        x = _guarded(x)
    shift, scale = _modulation(mod, b, n, d, mdtype)
    x0 = x.clone()
    out = _GuardedOut(x.shape, BF16)
    assert cuda.ada_norm(x, shift, scale, 1e-6, kind, out=out.tensor) is out.tensor
    out.check(case)
    assert torch.equal(x, x0)
    lowp = reference.ada_norm(x, shift, scale, 1e-6, kind)
    ref = reference.ada_norm(x.float(), None if shift is None else shift.float(),
                             None if scale is None else scale.float(), 1e-6, kind)
    _report(out.tensor, lowp, ref, f"ada_norm {kind} {case}")
    assert torch.equal(cuda.ada_norm(x, shift, scale, 1e-6, kind), out.tensor)


# ---- gated_residual ---------------------------------------------------------------------------

GATED_CASES = {  # b, n, d, gate, gate dtype, in place
    "sample": (2, 5, 40, "sample", BF16, False),
    "token_fp32": (2, 5, 40, "token", torch.float32, False),
    "no_gate": (2, 5, 40, None, None, False),
    "token_in_place_wide": (2, 3, 2056, "token", BF16, True),  # 257 vectors: 256 threads loop twice
}


@pytest.mark.parametrize("case", sorted(GATED_CASES))
def test_gated_residual(ext, case):
    b, n, d, mod, gdtype, in_place = GATED_CASES[case]
    out = _GuardedOut((b, n, d), BF16)
    x = out.tensor.copy_(_rand(b, n, d)) if in_place else _guarded(_rand(b, n, d))
    y = _guarded(_rand(b, n, d, scale=3, seed=1))
    (gate,) = _modulation(mod, b, n, d, gdtype, rows=(2,))
    lowp = reference.gated_residual(x, y, gate)
    ref = reference.gated_residual(x.float(), y.float(), None if gate is None else gate.float())
    x0, y0 = x.clone(), y.clone()
    got = cuda.gated_residual(x, y, gate, out=out.tensor)
    assert got is out.tensor and torch.equal(y, y0)
    out.check(case)
    if not in_place:
        assert torch.equal(x, x0)
        assert torch.equal(cuda.gated_residual(x, y, gate), got)
    _report(got, lowp, ref, f"gated_residual {case}")


# ---- quantize_fp8 (bit-exact) -----------------------------------------------------------------

def _bits(t):
    return t.view(torch.uint8)


def _static_scale(mode, rows):
    if mode == "static":
        return _guarded(torch.tensor(0.05))
    if mode == "static_per_row":
        return _guarded(torch.rand(rows, 1, generator=torch.Generator().manual_seed(0)) + 0.01)
    return None


def _quantize_checked(x, mode):
    """Kernel (into guarded out/scale_out, then allocating) vs reference: every byte and scale."""
    rows, cols = x.numel() // x.shape[-1], x.shape[-1]
    scale, per_row = _static_scale(mode, rows), mode == "per_row"
    rq, rs = reference.quantize_fp8(x, scale, per_row)
    out, scale_out = _GuardedOut((rows, cols), FP8), _GuardedOut(rs.shape, torch.float32)
    x0 = x.clone()
    got = cuda.quantize_fp8(x, scale, per_row, out=out.tensor, scale_out=scale_out.tensor)
    assert got[0] is out.tensor and got[1] is scale_out.tensor
    out.check(mode)
    scale_out.check(mode)
    assert torch.equal(x.view(torch.int16), x0.view(torch.int16))  # bit for bit: x may hold NaN
    assert torch.equal(_bits(got[0]), _bits(rq)) and torch.equal(got[1], rs)
    q, s = cuda.quantize_fp8(x, scale, per_row)
    assert s.shape == rs.shape and torch.equal(s, rs) and torch.equal(_bits(q), _bits(rq))
    return q, s


@pytest.mark.parametrize("mode", ["static", "static_per_row", "per_row", "per_tensor"])
@pytest.mark.parametrize("shape", [(2, 3, 40), (5, 2056)])
def test_quantize_fp8_bit_exact(ext, shape, mode):
    x = _rand(*shape, scale=100)
    x.view(-1)[3] = 3e4  # saturates (+448) under the static scale, sets the dynamic amax otherwise
    x.view(-1)[-5] = -3e4
    q, _ = _quantize_checked(_guarded(x), mode)
    if mode == "static":
        assert (q.float().abs() == 448).sum() >= 2


def test_quantize_fp8_per_tensor_amax_beyond_one_grid(ext):
    # More rows than the amax kernel's 1024 blocks: rows 1024.. come from its grid-stride loop.
    x = _rand(1030, 8, scale=0.1)
    x[1027, 5] = -7.0
    _, s = _quantize_checked(_guarded(x), "per_tensor")
    assert s.item() == 7.0 / 448


@pytest.mark.parametrize("mode", ["static", "per_row", "per_tensor"])
def test_quantize_fp8_zeros_and_zero_row(ext, mode):
    with_zero_row = _rand(4, 24, scale=5)
    with_zero_row[2] = 0
    for x in (torch.zeros(3, 16, dtype=BF16), with_zero_row):
        _quantize_checked(_guarded(x), mode)


@pytest.mark.parametrize("mode", ["static", "static_per_row", "per_row", "per_tensor"])
def test_quantize_fp8_strided_rows(ext, mode):
    x = _guarded(torch.cat([torch.full((5, 16), float("nan")), _rand(5, 32), torch.full((5, 16), float("nan"))],
                           dim=1).to(BF16))[:, 16:48]  # a column slice: row stride 64, no copy
    assert cuda._view(x).data_ptr() == x.data_ptr()
    _quantize_checked(x, mode)


def test_quantize_fp8_propagates_nan(ext):
    x = _guarded(_rand(3, 16))
    x[1, 3] = float("nan")
    q, _ = _quantize_checked(x, "static")  # e4m3 NaN (0x7f), as torch's clamp + cast
    assert _bits(q)[1, 3] == 0x7F
    assert torch.isnan(cuda.quantize_fp8(x)[1])
    s = cuda.quantize_fp8(x, per_row=True)[1]
    assert torch.isnan(s[1]).item() and not torch.isnan(s[[0, 2]]).any()
