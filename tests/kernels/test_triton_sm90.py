"""Every Triton kernel compiles for Hopper (sm_90a) at the launch parameters its launcher picks
for production shapes, without register spills, and the GEMM-like kernels use wgmma.

No GPU needed: tests/kernels/sm90.py captures each launcher's launch on memory-less "CUDA"
tensors in a fresh interpreter without TRITON_INTERPRET and runs triton.compile + ptxas for
sm_90a, with a fresh Triton cache, so every run really compiles. The compiles (one per case of
``CASES``) run in two worker processes (the conv and GEMM compiles take 1-2.5 s each, the row
kernels well under one). ``pytest -s`` prints the wall time and a table of registers, spills,
shared memory and vector / tensor-core instruction counts.

The case functions below run in the worker (imported by name), so they import the kernels
themselves: imported here, under the interpreter, they would not be JITFunctions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
import torch

from tests.kernels import sm90
from tests.kernels.sm90 import fake_cuda

BF16, FP32, FP8 = torch.bfloat16, torch.float32, torch.float8_e4m3fn
B, N = 2, 6144  # CFG batch x video tokens of a 768x512x121 generation
M_FP8 = 6144  # token rows of one fp8 linear (batch 1)


# --------------------------------------------------------------------------------------------
# cases: run in the sm90 worker process


def _qk_norm_rope(d: int, split: bool, fp8: bool) -> None:
    from ltxengine.kernels.qk_norm_rope import qk_norm_rope

    q, k, w = fake_cuda((B, N, d)), fake_cuda((B, N, d)), fake_cuda((d,))
    table = (B, 32, N, d // 32 // 2) if split else (B, N, d)  # LTX-2: 32 heads; LTX-Video: pairs
    cos, sin = fake_cuda(table, FP32), fake_cuda(table, FP32)
    scales = (fake_cuda((1,), FP32), fake_cuda((1,), FP32)) if fp8 else None
    qk_norm_rope(q, k, w, w, 1e-6, (cos, sin), fp8_scales=scales)


def qk_interleaved_2048():
    _qk_norm_rope(2048, split=False, fp8=False)


def qk_split_4096():
    _qk_norm_rope(4096, split=True, fp8=False)


def qk_interleaved_2048_fp8():
    _qk_norm_rope(2048, split=False, fp8=True)


def qk_split_4096_fp8():
    _qk_norm_rope(4096, split=True, fp8=True)


def _modulation(d: int, per_token: bool):
    """The model's (B, N|1, 6, D) modulation table; rows are strided slices of it."""
    return fake_cuda((B, N if per_token else 1, 6, d))


def _ada_norm(kind: str, d: int, per_token: bool) -> None:
    from ltxengine.kernels.ada_norm import ada_norm

    mod = _modulation(d, per_token)
    ada_norm(fake_cuda((B, N, d)), mod[:, :, 0], mod[:, :, 1], 1e-6, kind)


def ada_rms_2048_sample():
    _ada_norm("rms", 2048, per_token=False)


def ada_rms_4096_token():
    _ada_norm("rms", 4096, per_token=True)


def ada_layer_2048_token():
    _ada_norm("layer", 2048, per_token=True)


def ada_layer_4096_sample():
    _ada_norm("layer", 4096, per_token=False)


def _gated_residual(d: int, per_token: bool) -> None:
    from ltxengine.kernels.ada_norm import gated_residual

    x = fake_cuda((B, N, d))
    gated_residual(x, fake_cuda((B, N, d)), _modulation(d, per_token)[:, :, 2], out=x)


def gated_2048_sample():
    _gated_residual(2048, per_token=False)


def gated_4096_token():
    _gated_residual(4096, per_token=True)


def gated_fp8_2048_sample():
    """LTX-Video 2B / 13B (2048 / 4096): attn1's residual writing attn2's fp8 to_q input (gated_residual_fp8)."""
    from ltxengine.kernels.ada_norm import gated_residual_fp8

    gated_residual_fp8(fake_cuda((B, N, 2048)), fake_cuda((B, N, 2048)), _modulation(2048, False)[:, :, 2])


def head_gate_4096():
    """LTX-2.3 22B video attention output (32 heads of 128): the plain gate (a LoRA-hooked or bf16 to_out)."""
    from ltxengine.kernels.head_gate import head_gate

    head_gate(fake_cuda((B, N, 4096)), fake_cuda((B, N, 32)))


def head_gate_fp8_4096():
    """The same gate writing only its fp8 to_out's per-token input (head_gate_fp8)."""
    from ltxengine.kernels.head_gate import head_gate_fp8

    head_gate_fp8(fake_cuda((B, N, 4096)), fake_cuda((B, N, 32)))


def _residual_ada_norm(kind: str, d: int, per_token: bool) -> None:
    from ltxengine.kernels.ada_norm import residual_ada_norm

    x, mod = fake_cuda((B, N, d)), _modulation(d, per_token)
    residual_ada_norm(x, fake_cuda((B, N, d)), None, mod[:, :, 3], mod[:, :, 4], 1e-6, kind, x_out=x)


def resnorm_rms_2048_sample():
    """The 2B cross-attention residual (ungated) with norm2."""
    _residual_ada_norm("rms", 2048, per_token=False)


def resnorm_layer_4096_token():
    _residual_ada_norm("layer", 4096, per_token=True)


def ada_fp8_rms_2048_sample():
    """The 2B attn1 norm writing its packed fp8 q/k/v's per-token e4m3 input (ada_norm_fp8)."""
    from ltxengine.kernels.ada_norm import ada_norm_fp8

    mod = _modulation(2048, per_token=False)
    ada_norm_fp8(fake_cuda((B, N, 2048)), mod[:, :, 0], mod[:, :, 1], 1e-6, "rms")


def ada_fp8_none_4096_sample():
    """LTX-2.3's text context modulated (kind "none") with its packed fp8 K/V's e4m3 input; kv (B, 1, 2, D)."""
    from ltxengine.kernels.ada_norm import ada_norm_fp8

    kv = fake_cuda((B, 1, 2, 4096))
    ada_norm_fp8(fake_cuda((B, 1024, 4096)), kv[:, :, 0], kv[:, :, 1], 1e-6, "none")


def resnorm_fp8_rms_4096_token():
    """LTX-2 19B: the pending FFN residual, then attn1's norm and its e4m3 rows."""
    from ltxengine.kernels.ada_norm import residual_ada_norm_fp8

    x, mod = fake_cuda((B, N, 4096)), _modulation(4096, per_token=True)
    residual_ada_norm_fp8(x, fake_cuda((B, N, 4096)), mod[:, :, 2], mod[:, :, 0], mod[:, :, 1], 1e-6, "rms", x_out=x)


def dual_fp8_4096_pending_token():
    """LTX-2 19B's video stream before a2v / v2a: both norms with their e4m3 rows (dual_ada_norm_fp8)."""
    from ltxengine.kernels.ada_norm import dual_ada_norm_fp8

    x, mod = fake_cuda((B, N, 4096)), _modulation(4096, per_token=True)
    dual_ada_norm_fp8(x, fake_cuda((B, N, 4096)), mod[:, :, 2], mod[:, :, 1], mod[:, :, 0], mod[:, :, 3], mod[:, :, 4],
                      1e-6, "rms", x_out=x)


def _dual_ada_norm(d: int, pending: bool, per_token: bool) -> None:
    from ltxengine.kernels.ada_norm import dual_ada_norm

    x, mod = fake_cuda((B, N, d)), _modulation(d, per_token)
    y, gate = (fake_cuda((B, N, d)), mod[:, :, 2]) if pending else (None, None)
    dual_ada_norm(x, y, gate, mod[:, :, 1], mod[:, :, 0], mod[:, :, 3], mod[:, :, 4], 1e-6, "rms",
                  x_out=x if pending else None)


def dual_4096_pending_token():
    """LTX-2's video stream: the gated text residual, then the a2v and v2a norms."""
    _dual_ada_norm(4096, pending=True, per_token=True)


def dual_2048_sample():
    _dual_ada_norm(2048, pending=False, per_token=False)


def _channels_last(shape):
    b, c, t, h, w = shape
    return (c * t * h * w, 1, h * w * c, w * c, c)


def _conv3d(channels: int, thw: tuple, prologue: bool, channels_last: bool) -> None:
    """A VAE decoder resnet conv: 3x3x3, stride 1, zero padding, non-causal, with bias; the
    prologue is the decoder's pixel norm -> timestep scale/shift -> SiLU."""
    from ltxengine.kernels.causal_conv3d import causal_conv3d

    shape = (1, channels, *thw)
    stride = _channels_last(shape) if channels_last else None
    x, out = fake_cuda(shape, stride=stride), fake_cuda(shape, stride=stride)
    weight, bias = fake_cuda((channels, channels, 3, 3, 3)), fake_cuda((channels,))
    extra = {}
    if prologue:
        extra = dict(norm_eps=1e-6, scale=fake_cuda((1, channels)), shift=fake_cuda((1, channels)), silu=True)
    causal_conv3d(x, weight, bias, (1, 1, 1), False, "zeros", out=out, **extra)


_STAGE_512 = (31, 32, 48)  # latent frames x height x width of the 512-channel decoder stage
_MID_1024 = (16, 16, 24)  # the 1024-channel mid block


def conv512():
    _conv3d(512, _STAGE_512, prologue=False, channels_last=False)


def conv512_prologue():
    _conv3d(512, _STAGE_512, prologue=True, channels_last=False)


def conv512_cl():
    _conv3d(512, _STAGE_512, prologue=False, channels_last=True)


def conv512_prologue_cl():
    _conv3d(512, _STAGE_512, prologue=True, channels_last=True)


def conv1024_prologue():
    _conv3d(1024, _MID_1024, prologue=True, channels_last=False)


def _quantize(k: int, mode: str) -> None:
    from ltxengine.kernels.fp8_gemm import quantize_fp8

    x = fake_cuda((M_FP8, k))
    if mode == "static":
        quantize_fp8(x, scale=fake_cuda((1,), FP32))
    else:
        quantize_fp8(x, per_row=mode == "row")


def quant_static_2048():
    _quantize(2048, "static")


def quant_static_8192():
    _quantize(8192, "static")


def quant_row_2048():
    _quantize(2048, "row")


def quant_row_8192():
    _quantize(8192, "row")


def quant_tensor_2048():
    _quantize(2048, "tensor")


def quant_tensor_8192():
    _quantize(8192, "tensor")


def gelu_quant_row_16384():
    # the fp8 FFN's GELU + down-projection quantization, LTX-2 19B's 4D = 16384 (same kernel as quant_row_*)
    from ltxengine.kernels.fp8_gemm import gelu_quantize_fp8

    gelu_quantize_fp8(fake_cuda((M_FP8, 16384)))


def scaled_mm_6144x8192x2048():
    """fp8_linear's GEMM: per-token scale_a, per-channel scale_b, bias, bf16 output."""
    from ltxengine.kernels.fp8_gemm import scaled_mm

    a, b = fake_cuda((M_FP8, 2048), FP8), fake_cuda((8192, 2048), FP8)
    scaled_mm(a, b, fake_cuda((M_FP8, 1), FP32), fake_cuda((8192, 1), FP32), fake_cuda((8192,)), BF16)


def linear_gelu_2048x8192():
    """The 2B FFN up-projection, GELU in the epilogue: bf16, bias."""
    from ltxengine.kernels.linear_gelu import linear_gelu

    linear_gelu(fake_cuda((B, N, 2048)), fake_cuda((8192, 2048)), fake_cuda((8192,)))


def linear_gelu_4096x16384_nobias():
    """The LTX-2.5 video FFN up-projection (no bias)."""
    from ltxengine.kernels.linear_gelu import linear_gelu

    linear_gelu(fake_cuda((B, N, 4096)), fake_cuda((16384, 4096)), None)


def linear_gated_8192x2048():
    """The 2B FFN down-projection with the gated residual: a per-sample gate sliced from the
    modulation table, the residual stream updated in place."""
    from ltxengine.kernels.linear_gelu import linear_gated_residual

    x = fake_cuda((B, N, 2048))
    linear_gated_residual(x, fake_cuda((B, N, 8192)), fake_cuda((2048, 8192)), fake_cuda((2048,)),
                          _modulation(2048, per_token=False)[:, :, 5], out=x)


# --------------------------------------------------------------------------------------------
# expectations


@dataclass(frozen=True)
class Spills:
    """Bytes in ptxas' -v report: stack frame, spill stores, spill loads."""
    stack: int = 0
    stores: int = 0
    loads: int = 0


@dataclass(frozen=True)
class Case:
    fn: object
    # kernel name -> Spills allowed (default none at all)
    spill_bound: dict = field(default_factory=dict)
    # kernel name -> PTX_PATTERNS key of its wgmma flavour: a tensor-core kernel must use wgmma
    # of that type, no mma.sync, and cp.async copies (its K loop is software-pipelined)
    wgmma: dict = field(default_factory=dict)
    # the other kernels are memory-bound and must issue 16-byte vector loads, except these
    scalar_loads: frozenset = frozenset()


_CONV_MMA = {"_conv3d_kernel": "wgmma_bf16"}

CASES = [
    Case(qk_interleaved_2048), Case(qk_split_4096), Case(qk_interleaved_2048_fp8), Case(qk_split_4096_fp8),
    Case(ada_rms_2048_sample), Case(ada_rms_4096_token), Case(ada_layer_2048_token), Case(ada_layer_4096_sample),
    Case(gated_2048_sample), Case(gated_4096_token), Case(gated_fp8_2048_sample),
    Case(head_gate_4096), Case(head_gate_fp8_4096),
    Case(resnorm_rms_2048_sample), Case(resnorm_layer_4096_token),
    Case(ada_fp8_rms_2048_sample), Case(ada_fp8_none_4096_sample), Case(resnorm_fp8_rms_4096_token),
    Case(dual_fp8_4096_pending_token),
    Case(dual_4096_pending_token), Case(dual_2048_sample),
    Case(conv512, wgmma=_CONV_MMA), Case(conv512_prologue, wgmma=_CONV_MMA),
    Case(conv512_cl, wgmma=_CONV_MMA), Case(conv512_prologue_cl, wgmma=_CONV_MMA),
    # Known spill, pinned so that any growth fails (triton 3.9, its ptxas 13): the mid-block conv
    # with the prologue, NCDHW, sits at 255 registers with a 32-byte stack frame (what
    # `cuobjdump -res-usage` calls STACK:32), i.e. 48 bytes of spill stores and 28 of loads.
    # W = 24 is not a multiple of 16, so its strides lose the JIT's divisibility hint; the same
    # conv at 512 channels and W = 48 needs 231 registers and does not spill.
    # Its pixel-norm pass loads no 16-byte vectors either: voxels are its contiguous axis and with
    # W = 24 the JIT cannot prove 8-voxel runs aligned (measured, a small pass: reported, not fixed).
    Case(conv1024_prologue, spill_bound={"_conv3d_kernel": Spills(stack=32, stores=48, loads=28)}, wgmma=_CONV_MMA,
         scalar_loads=frozenset({"_pixel_rstd_kernel"})),
    Case(quant_static_2048), Case(quant_static_8192), Case(quant_row_2048), Case(quant_row_8192),
    Case(quant_tensor_2048), Case(quant_tensor_8192), Case(gelu_quant_row_16384),
    Case(scaled_mm_6144x8192x2048, wgmma={"_scaled_mm_kernel": "wgmma_e4m3"}),
    # measured: 128 registers (172 with the gated residual's loads), no spills, 128 KiB shared memory
    Case(linear_gelu_2048x8192, wgmma={"_linear_epilogue_kernel": "wgmma_bf16"}),
    Case(linear_gelu_4096x16384_nobias, wgmma={"_linear_epilogue_kernel": "wgmma_bf16"}),
    Case(linear_gated_8192x2048, wgmma={"_linear_epilogue_kernel": "wgmma_bf16"}),
]


def _spec(case: Case) -> str:
    return f"{__name__}:{case.fn.__name__}"


def _table(results: dict, seconds: float) -> str:
    rows = [f"{'case':<28} {'kernel':<24} {'warps':>5} {'stages':>6} {'regs':>4} {'spill':>5} {'smem':>7} "
            f"{'wgmma':>5} {'ld.v4':>5} {'compile s':>9}"]
    for case in CASES:
        result = results[_spec(case)]
        if result["error"]:
            rows.append(f"{case.fn.__name__:<28} ERROR")
        for k in result["kernels"]:
            rows.append(f"{case.fn.__name__:<28} {k['kernel']:<24} {k['num_warps']:>5} {k['num_stages']:>6} "
                        f"{k['regs']:>4} {max(k['spill_stores'], k['spill_loads']):>5} {k['smem']:>7} "
                        f"{k['ptx']['wgmma']:>5} {k['ptx']['ld_v4']:>5} {k['compile_s']:>9.1f}")
    rows.append(f"sm_90a compiles: {seconds:.1f} s wall")
    return "\n".join(rows)


@pytest.fixture(scope="module")
def compiled():
    if sm90.ptxas_path() is None:
        pytest.skip("Triton's NVIDIA backend has no usable ptxas (triton/backends/nvidia/bin/ptxas)")
    start = time.perf_counter()
    results = sm90.compile_cases([_spec(c) for c in CASES], jobs=2)
    print("\n" + _table(results, time.perf_counter() - start))
    return results


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.fn.__name__)
def test_compiles_for_sm90a(compiled, case):
    result = compiled[_spec(case)]
    assert result["error"] is None, f"{case.fn.__name__}: sm_90a compile failed:\n{result['error']}"
    names = [k["kernel"] for k in result["kernels"]]
    assert all(k["matches_jit"] for k in result["kernels"]), \
        f"the ASTSource built from the launch differs from the JIT's own compile: {result['kernels']}"
    assert set(case.spill_bound) <= set(names) and set(case.wgmma) <= set(names), names
    for k in result["kernels"]:
        got = Spills(k["stack"], k["spill_stores"], k["spill_loads"])
        bound = case.spill_bound.get(k["kernel"], Spills())
        assert got.stack <= bound.stack and got.stores <= bound.stores and got.loads <= bound.loads, \
            f"{k['kernel']}: register spills {got} exceed {bound} ({k})"
        flavour, ptx = case.wgmma.get(k["kernel"]), k["ptx"]
        if flavour:
            assert ptx[flavour] > 0, f"{k['kernel']}: no {flavour} in its PTX ({ptx})"
            assert ptx["mma_sync"] == 0, f"{k['kernel']}: mma.sync fallback in its PTX ({ptx})"
            assert ptx["cp_async"] > 0, f"{k['kernel']}: K loop not pipelined, no cp.async ({ptx})"
        elif k["kernel"] not in case.scalar_loads:
            assert ptx["ld_v4"] > 0, f"{k['kernel']}: no 16-byte vector loads ({ptx})"


# --------------------------------------------------------------------------------------------
# the helper itself (no compiles)


def test_fake_cuda_looks_like_a_cuda_allocation():
    x = fake_cuda((4, 6), BF16, stride=(8, 1), offset=8)
    assert x.is_cuda and x[1:].is_cuda and x.device.type == "meta"
    assert x.shape == (4, 6) and x.stride() == (8, 1)
    assert x.data_ptr() % 16 == 0 and x[:, 1:].data_ptr() % 16 == 2  # what the JIT's alignment test reads


def test_parse_ptxas_log():
    log = ("ptxas info    : Function properties for k\n"
           "    8 bytes stack frame, 32 bytes spill stores, 24 bytes spill loads\n"
           "ptxas info    : Used 255 registers, used 1 barriers, 1024 bytes smem\n")
    assert sm90.parse_ptxas_log(log) == (255, 32, 24, 8)
    with pytest.raises(RuntimeError, match="unexpected ptxas -v report"):
        sm90.parse_ptxas_log("ptxas info    : nothing here")


def test_worker_refuses_interpreter_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(SystemExit, match="without TRITON_INTERPRET=1"):
        sm90.main([str(tmp_path / "out.json"), f"{__name__}:conv512"])


def test_a_case_that_launches_nothing_is_an_error():
    result = sm90._run_spec(f"{__name__}:_no_launch")
    assert result == {"kernels": [], "error": "RuntimeError: sm90: case _no_launch launched no Triton kernel"}


def _no_launch():
    pass
