"""Benchmark GGUF linears: dequantize the weight's blocks to bf16, then the bf16 GEMM (GGUFLinear).

    python bench/ops_gguf_linear.py [--shapes NAME,...] [--variants TYPE,...] [--reps N] [--out DIR] [--smoke]

Shapes, M x N x K with M = 6144 video tokens (768x512x121, batch 1), as bench/ops_fp8_gemm.py:
  ltxv-2b-qkvo / -ff-up / -ff-down   LTX-Video 2B projections (K 2048 / 2048 / 8192)
  d4096-qkvo / -ff-up / -ff-down     LTX-Video 13B / LTX-2 video projections (K 4096 / 4096 / 16384)
Variants (the "op" of a record): gguf_linear/<TYPE> for Q8_0, Q6_K, Q5_K, Q4_K, Q4_0, Q3_K, the
weight random but valid blocks of that type (fp16 scales small and finite).
Implementations: the torch and triton backends of ``ops.gguf_dequant`` followed by F.linear in bf16
(what GGUFLinear runs); triton-fused, kernels/gguf_linear.py (Q8_0 / Q4_0: the dequant in the GEMM's
operand load, experimental, not what the engine runs); and cublas-bf16, the bf16 GEMM on the
dequantized weight kept resident: the figure to match (issue 23's goal: a Q8_0 step <= 1.1x the
bf16 step). Verified against the fp32
product of the same dequantized weight. TFLOP/s counts 2 M N K (the dequantization is not counted).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, gemm  # noqa: E402
from ltxengine.quant.gguf import BY_NAME, dequantize  # noqa: E402

SCRIPT = "ops_gguf_linear"
SHAPES = gemm.SHAPES
SMOKE_SHAPES = {"smoke-33x16x256": (33, 16, 256)}  # odd M; K one K-quant super-block
VARIANTS = ("Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q4_0", "Q3_K")
FUSED = ("Q8_0", "Q4_0")  # the types kernels/gguf_linear.py fuses into the GEMM
# byte offsets of each type's fp16 scales inside a block (d, and dmin where there is one)
SCALES = {"Q8_0": (0,), "Q4_0": (0,), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def random_blocks(name: str, n: int, k: int, device) -> torch.Tensor:
    """(n, k / block * type_size) uint8: random quants, fp16 scales ~ 1e-3 (outputs of unit scale)."""
    t = BY_NAME[name]
    g = torch.Generator(device="cpu").manual_seed(0)
    data = torch.randint(0, 256, (n * k // t.block_size, t.type_size), generator=g, dtype=torch.uint8)
    for off in SCALES[name]:
        scale = (torch.randn(data.shape[0], generator=g) * 1e-3).half()
        data[:, off:off + 2] = scale.view(torch.uint8).view(-1, 2)
    return data.view(n, -1).to(device)


def variant_group(name: str, m: int, n: int, k: int, device) -> tuple[list, object, float]:
    qid = BY_NAME[name].id
    blocks = random_blocks(name, n, k, device)
    w16 = dequantize(blocks, qid, (n, k)).to(torch.bfloat16)
    x = torch.randn(m, k, device=device).to(torch.bfloat16)
    bias = (torch.randn(n, device=device) * 0.1).to(torch.bfloat16)
    with common.exact_fp32():
        oracle = x.float() @ w16.float().T + bias.float()
    tol = common.error_budget(common.max_abs_err(oracle.to(torch.bfloat16), oracle), oracle)
    impls = common.backend_impls("gguf_dequant", lambda fn: F.linear(x, fn(blocks, qid, k, torch.bfloat16), bias),
                                 device, backends=("torch", "triton"))
    impls.append(_fused_impl(name, qid, x, blocks, bias, device))
    impls.append(common.Impl("cublas-bf16", lambda: F.linear(x, w16, bias)))
    return impls, oracle, tol


def _fused_impl(name: str, qid: int, x, blocks, bias, device) -> common.Impl:
    """kernels/gguf_linear.py, the dequant fused into the GEMM's operand load (Q8_0 / Q4_0 only)."""
    if name not in FUSED:
        return common.Impl("triton-fused", None, "skipped", f"skipped: the fused kernel takes {FUSED}, not {name}")
    if device.type == "cpu":  # Triton's interpreter computes bf16 tl.dot wrongly (tests use fp32 / fp16)
        return common.Impl("triton-fused", None, "skipped", "skipped: bf16 tl.dot is wrong under the interpreter")
    try:
        from ltxengine.kernels.gguf_linear import gguf_linear
    except ImportError as e:
        return common.Impl("triton-fused", None, "unavailable", f"unavailable: {e}")
    return common.Impl("triton-fused", lambda: gguf_linear(x, blocks, qid, bias))


def bench_variant(settings: common.Settings, variant: str, shape: str, mnk: tuple[int, int, int]) -> list[dict]:
    impls, oracle, tol = variant_group(variant, *mnk, settings.device)
    return gemm.records(settings, impls, oracle, tol, {"cublas_bf16": "cublas-bf16"}, op=f"gguf_linear/{variant}",
                        shape=shape, mnk=mnk, dtype=variant, out_dtype="bfloat16")


def main(argv: list[str] | None = None) -> int:
    settings, shapes, variants = gemm.parse(SCRIPT, __doc__, argv, SHAPES, SMOKE_SHAPES, VARIANTS, "quant types")
    records = []
    for shape in settings.shapes:
        for variant in variants:
            records += bench_variant(settings, variant, shape, shapes[shape])
    return common.finish(settings, records)


if __name__ == "__main__":
    sys.exit(main())
