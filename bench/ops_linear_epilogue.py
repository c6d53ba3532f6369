"""Benchmark the linears with fused epilogues: linear_gelu (FFN up + GELU tanh) and
linear_gated_residual (output projection + x + gate * y), against the unfused pairs.

    python bench/ops_linear_epilogue.py [--shapes NAME,...] [--variants V,...] [--reps N] [--out DIR] [--smoke]

Shapes, M x N x K with M = 6144 video tokens (768x512x121, batch 1), bf16:
  ltxv-2b-ff-up      6144 x  8192 x  2048   linear_gelu: 2B feed-forward up
  d4096-ff-up        6144 x 16384 x  4096   linear_gelu: 13B / LTX-2 video feed-forward up
  ltxv-2b-attn-out   6144 x  2048 x  2048   linear_gated_residual: 2B attention output
  ltxv-2b-ff-down    6144 x  2048 x  8192   linear_gated_residual: 2B feed-forward down
  d4096-attn-out     6144 x  4096 x  4096   linear_gated_residual: 13B / LTX-2 video attention output
  d4096-ff-down      6144 x  4096 x 16384   linear_gated_residual: 13B / LTX-2 video feed-forward down
Implementations: the torch (reference: cuBLAS, then GELU / the fp32 gated residual), triton (one
GEMM with the epilogue) and cuda (cuBLASLt's GELU_BIAS epilogue) backends; for the gated residual
also "cublas+auto-residual", cuBLAS then the gated residual kernels="auto" picks: what the models
run under "auto" today, the figure the Triton GEMM must beat before ops/linear_gated_residual.py
may prefer it. The gate is per sample (1, 1, N), as an unconditioned step has it.
TFLOP/s counts 2 M N K (the epilogue is not counted as work).
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

SCRIPT = "ops_linear_epilogue"
DTYPE = torch.bfloat16
GELU, RESIDUAL = "linear_gelu", "linear_gated_residual"
SHAPES = {
    "ltxv-2b-ff-up": (GELU, 6144, 8192, 2048),
    "d4096-ff-up": (GELU, 6144, 16384, 4096),
    "ltxv-2b-attn-out": (RESIDUAL, 6144, 2048, 2048),
    "ltxv-2b-ff-down": (RESIDUAL, 6144, 2048, 8192),
    "d4096-attn-out": (RESIDUAL, 6144, 4096, 4096),
    "d4096-ff-down": (RESIDUAL, 6144, 4096, 16384),
}
SMOKE_SHAPES = {"smoke-gelu-33x48x40": (GELU, 33, 48, 40), "smoke-residual-33x40x48": (RESIDUAL, 33, 40, 48)}
VARIANTS = (GELU, RESIDUAL)
BASELINES = {"unfused": "torch", "auto_unfused": "cublas+auto-residual"}


def _inputs(op: str, m: int, n: int, k: int, device) -> dict:
    g = torch.Generator(device="cpu").manual_seed(0)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device, DTYPE)

    # weights ~ 1/sqrt(K) as trained layers have them: pre-activations of order 1
    inp = {"h": r(1, m, k), "w": r(n, k, scale=k ** -0.5), "b": r(n, scale=0.1)}
    if op == RESIDUAL:
        inp.update(x=r(1, m, n, scale=3.0), gate=r(1, 1, n, scale=0.5))
    return inp


def _call(op: str, inp: dict):
    if op == GELU:
        return lambda fn: fn(inp["h"], inp["w"], inp["b"])
    return lambda fn: fn(inp["x"], inp["h"], inp["w"], inp["b"], inp["gate"])


def group(op: str, m: int, n: int, k: int, device) -> tuple[list, object, float]:
    """(impls, oracle, tolerance): the oracle is the reference in fp32 on the same bf16 inputs; the
    budget twice the reference's own error in bf16 plus one ulp (bench/common.error_budget)."""
    inp = _inputs(op, m, n, k, device)
    call = _call(op, inp)
    ref = getattr(reference, op)
    with common.exact_fp32():
        oracle = call(lambda *a: ref(*(t.float() for t in a)))
    tol = common.error_budget(common.max_abs_err(call(ref), oracle), oracle)
    impls = common.backend_impls(op, call, device)
    if op == RESIDUAL:
        auto, why = common.resolve_backend("auto", device)
        fn = None if auto is None else (lambda: auto.gated_residual(inp["x"], F.linear(inp["h"], inp["w"], inp["b"]),
                                                                    inp["gate"]))
        source = None if auto is None else dict(auto.sources).get("gated_residual", "torch")
        impls.append(common.Impl("cublas+auto-residual", fn, "ok" if fn else "unavailable", why, source=source))
    return impls, oracle, tol


def bench_shape(settings: common.Settings, name: str, shape: tuple) -> list[dict]:
    op, m, n, k = shape
    impls, oracle, tol = group(op, m, n, k, settings.device)
    return gemm.records(settings, impls, oracle, tol, BASELINES, op=op, shape=name, mnk=(m, n, k), dtype=DTYPE)


def main(argv: list[str] | None = None) -> int:
    settings, shapes, variants = gemm.parse(SCRIPT, __doc__, argv, SHAPES, SMOKE_SHAPES, VARIANTS, "ops")
    records = []
    for name in settings.shapes:
        if shapes[name][0] in variants:
            records += bench_shape(settings, name, shapes[name])
    return common.finish(settings, records)


if __name__ == "__main__":
    sys.exit(main())
