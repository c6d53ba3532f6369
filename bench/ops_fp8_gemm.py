"""Benchmark the fp8 (e4m3) GEMMs: scaled_mm and quantize + GEMM (fp8_linear) end to end.

    python bench/ops_fp8_gemm.py [--shapes NAME,...] [--reps N] [--out DIR] [--smoke]

Shapes, M x N x K with M = 6144 video tokens (768x512x121, batch 1):
  ltxv-2b-qkvo     6144 x  2048 x  2048   LTX-Video 2B attention projections
  ltxv-2b-ff-up    6144 x  8192 x  2048   2B feed-forward up
  ltxv-2b-ff-down  6144 x  2048 x  8192   2B feed-forward down
  d4096-qkvo       6144 x  4096 x  4096   LTX-Video 13B / LTX-2 video attention projections
  d4096-ff-up      6144 x 16384 x  4096   13B / LTX-2 video feed-forward up
  d4096-ff-down    6144 x  4096 x 16384   13B / LTX-2 video feed-forward down
Variants (the "op" of a record):
  scaled_mm/per-tensor         a, b e4m3 with one scale each
  scaled_mm/rowwise            a per row (M, 1), b per output channel (N, 1)
  fp8_linear/per-token         bf16 x -> dynamic per-token quantization -> GEMM + bias (bf16 out)
  fp8_linear/static-scale      static per-tensor input_scale (Lightricks' fp8 checkpoints)
Implementations: the torch (fp32 reference), triton and cuda backends; torch._scaled_mm called
directly (cuBLASLt; also with use_fast_accum); cublas-bf16, the bf16 GEMM of the same shape
(x @ w.T, + bias for fp8_linear), the figure an fp8 GEMM has to beat. For fp8_linear the torch
baseline is the reference quantization followed by torch._scaled_mm.
TFLOP/s counts 2 M N K (the quantization of fp8_linear is not counted as work).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, gemm  # noqa: E402
from ltxengine.ops import reference  # noqa: E402

SCRIPT = "ops_fp8_gemm"
OUT_DTYPE = torch.bfloat16
E4M3_TOP_STEP = 32.0  # spacing of e4m3 numbers in [256, 448], the largest quantization step

SHAPES = gemm.SHAPES
SMOKE_SHAPES = {"smoke-33x48x64": (33, 48, 64)}  # odd M; K a multiple of 16 as fp8 GEMMs require
VARIANTS = ("scaled_mm/per-tensor", "scaled_mm/rowwise", "fp8_linear/per-token", "fp8_linear/static-scale")
BASELINES = {"cublas_bf16": "cublas-bf16", "torch_scaled_mm": "torch._scaled_mm"}


def _torch_scaled_mm(a, b, sa, sb, bias=None, fast=False):
    """torch._scaled_mm with our operand layout: b (N, K) row-major is the column-major (K, N)
    cuBLASLt wants. Scales: two one-element tensors, or sa (M, 1) and sb (N, 1), passed to
    cuBLASLt as (1, N) through a free view (no copy inside the timed call)."""
    sb = sb.reshape(1, -1) if sb.numel() > 1 else sb
    return torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, bias=bias, out_dtype=OUT_DTYPE, use_fast_accum=fast)


def _bf16_gemm_impl(a, b, bias=None) -> common.Impl:
    """The bf16 GEMM of the same shape on the dequantized operands (fp32 a, b), checked against
    its own fp32 product."""
    a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)
    bias16 = None if bias is None else bias.to(torch.bfloat16)
    with common.exact_fp32():
        oracle = a16.float() @ b16.float().T + (0 if bias is None else bias16.float())
    tol = common.error_budget(common.max_abs_err(oracle.to(torch.bfloat16), oracle), oracle)
    return common.Impl("cublas-bf16", lambda: F.linear(a16, b16, bias16), oracle=oracle, tolerance=tol)


def scaled_mm_group(variant: str, m: int, n: int, k: int, device) -> tuple[list, object, float]:
    """(impls, oracle, tolerance) for scaled_mm on quantized random operands."""
    rowwise = variant.endswith("rowwise")
    a, sa = reference.quantize_fp8(torch.randn(m, k, device=device), per_row=rowwise)
    b, sb = reference.quantize_fp8(torch.randn(n, k, device=device) * 0.05, per_row=rowwise)
    with common.exact_fp32():
        oracle = reference.scaled_mm(a, b, sa, sb, out_dtype=torch.float32)
    # The reference in bf16 is this fp32 result rounded once.
    tol = common.error_budget(common.max_abs_err(oracle.to(OUT_DTYPE), oracle), oracle)
    impls = common.backend_impls("scaled_mm", lambda fn: fn(a, b, sa, sb, None, OUT_DTYPE), device)
    impls += [common.Impl("torch._scaled_mm", lambda: _torch_scaled_mm(a, b, sa, sb)),
              common.Impl("torch._scaled_mm+fast_accum", lambda: _torch_scaled_mm(a, b, sa, sb, fast=True)),
              _bf16_gemm_impl(a.float() * sa, b.float() * sb)]  # (M, 1) / (N, 1) or 0-d scales broadcast
    return impls, oracle, tol


def fp8_linear_group(variant: str, m: int, n: int, k: int, device) -> tuple[list, object, float]:
    """(impls, oracle, tolerance) for fp8_linear: bf16 activations, e4m3 weight with a
    per-tensor weight_scale and a bias, dynamic per-token or static input scale."""
    x = torch.randn(m, k, device=device).to(OUT_DTYPE)
    w, sw = reference.quantize_fp8(torch.randn(n, k, device=device) * 0.05)
    bias = (torch.randn(n, device=device) * 0.1).to(OUT_DTYPE)
    static = variant.endswith("static-scale")
    input_scale = reference.fp8_scale(x, per_row=False) if static else None
    with common.exact_fp32():
        qx, sx = reference.quantize_fp8(x, input_scale, per_row=not static)
        oracle = reference.scaled_mm(qx, w, sx, sw, bias, out_dtype=torch.float32)
    # A kernel may round a few elements of x to the neighbouring e4m3 value (x * (1/scale) vs
    # x / scale); each such flip moves an output by at most one top-of-range step times |w|.
    flip = E4M3_TOP_STEP * sx.max().item() * sw.item() * w.float().abs().max().item()
    tol = common.error_budget(common.max_abs_err(oracle.to(OUT_DTYPE), oracle), oracle, floor=flip)

    sw_rows = sw if static else sw.reshape(1, 1).expand(n, 1).contiguous()  # row-wise GEMMs need N scales

    def torch_composite():
        q, s = reference.quantize_fp8(x, input_scale, per_row=not static)
        return _torch_scaled_mm(q, w, s, sw_rows, bias)

    impls = common.backend_impls("fp8_linear", lambda fn: fn(x, w, sw, bias, input_scale, not static), device)
    impls += [common.Impl("torch.quantize+_scaled_mm", torch_composite), _bf16_gemm_impl(x, w.float() * sw, bias)]
    return impls, oracle, tol


def bench_variant(settings: common.Settings, variant: str, name: str, mnk: tuple[int, int, int]) -> list[dict]:
    group = fp8_linear_group if variant.startswith("fp8_linear") else scaled_mm_group
    impls, oracle, tol = group(variant, *mnk, settings.device)
    baselines = dict(BASELINES, torch_scaled_mm="torch.quantize+_scaled_mm") if group is fp8_linear_group \
        else BASELINES
    return gemm.records(settings, impls, oracle, tol, baselines, op=variant, shape=name, mnk=mnk,
                        dtype="float8_e4m3fn", out_dtype="bfloat16")


def main(argv: list[str] | None = None) -> int:
    settings, shapes, variants = gemm.parse(SCRIPT, __doc__, argv, SHAPES, SMOKE_SHAPES, VARIANTS, "variants")
    records = []
    for name in settings.shapes:
        for variant in variants:
            records += bench_variant(settings, variant, name, shapes[name])
    return common.finish(settings, records)


if __name__ == "__main__":
    sys.exit(main())
