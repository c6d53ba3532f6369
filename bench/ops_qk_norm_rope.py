"""Benchmark qk_norm_rope: Q/K RMSNorm across heads (learned weight) fused with RoPE.

    python bench/ops_qk_norm_rope.py [--shapes NAME,...] [--reps N] [--out DIR] [--smoke]

Shapes: the self-attention q/k of each transformer stream at 768x512x121, batch 1 and 2 (CFG):
ltxv-2b-b{1,2} (6144 x 2048, 32 x 64, interleaved rope), ltxv-13b-b{1,2} (6144 x 4096, 32 x 128,
interleaved), ltx2-video-b{1,2} (6144 x 4096, split rope over 32 heads), ltx2-audio-b{1,2}
(126 x 2048, split over 32 heads). The cos/sin tables are fp32 and shared by the batch (table
batch 1, as when every sample has the same positions); their angles are random.

Implementations: torch (the fp32 reference, eager), torch.compile(reference), triton, cuda.
Bytes moved (the least any implementation must move): q and k read once and written once
(bf16), both norm weights (bf16) and the cos and sin tables (fp32) read once.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from ltxengine.ops import reference  # noqa: E402

SCRIPT = "ops_qk_norm_rope"
OP = "qk_norm_rope"
DTYPE = torch.bfloat16  # activations and norm weights as the models run them


def rope_tables(stream: common.Stream, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 cos/sin of random angles in the stream's layout, batch 1."""
    n, d, h = stream.tokens, stream.width, stream.heads
    if stream.rope == "interleaved":
        # Each angle twice: the two elements of a rotated pair share it, as in the real tables.
        angles = (torch.rand(1, n, d // 2, device=device) * 2 * math.pi).repeat_interleave(2, dim=-1)
    else:
        angles = torch.rand(1, h, n, d // h // 2, device=device) * 2 * math.pi
    return angles.cos(), angles.sin()


def make_inputs(stream: common.Stream, batch: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    shape = (batch, stream.tokens, stream.width)
    return {"q": torch.randn(shape, device=device).to(DTYPE), "k": torch.randn(shape, device=device).to(DTYPE),
            "q_weight": (1 + 0.1 * torch.randn(stream.width, device=device)).to(DTYPE),
            "k_weight": (1 + 0.1 * torch.randn(stream.width, device=device)).to(DTYPE),
            "eps": stream.qk_eps, "rope": rope_tables(stream, device)}


def bytes_moved(inp: dict) -> int:
    act = inp["q"].numel() * inp["q"].element_size()
    weights = 2 * inp["q_weight"].numel() * inp["q_weight"].element_size()
    tables = sum(t.numel() * t.element_size() for t in inp["rope"])
    return 4 * act + weights + tables  # q, k read + q, k written


def call(inp: dict):
    return lambda fn: fn(inp["q"], inp["k"], inp["q_weight"], inp["k_weight"], inp["eps"], inp["rope"])


def oracle_and_tolerance(inp: dict) -> tuple[tuple, float]:
    """fp32 reference on the same (bf16-valued) inputs; budget from torch's bf16 computation."""
    with common.exact_fp32():
        oracle = reference.qk_norm_rope(inp["q"].float(), inp["k"].float(), inp["q_weight"].float(),
                                        inp["k_weight"].float(), inp["eps"], inp["rope"])
    lowp = call(inp)(reference.qk_norm_rope)
    return oracle, common.error_budget(common.max_abs_err(lowp, oracle), oracle)


def bench_shape(settings: common.Settings, name: str, stream: common.Stream, batch: int) -> list[dict]:
    inp = make_inputs(stream, batch, settings.device)
    oracle, tol = oracle_and_tolerance(inp)
    impls = common.backend_impls(OP, call(inp), settings.device)
    impls.insert(1, common.compiled_impl(reference.qk_norm_rope, call(inp), settings))
    results = [common.measure(i, oracle, tol, settings, flush_l2=settings.flush_l2) for i in settings.keep(impls)]
    common.add_ratios(results, {"eager": "torch", "compile": common.COMPILE})
    dims = {"batch": batch, "tokens": stream.tokens, "width": stream.width, "heads": stream.heads,
            "rope": stream.rope, "rope_table_batch": 1, "eps": stream.qk_eps}
    nbytes = bytes_moved(inp)
    return [common.make_record(settings, r, op=OP, shape=name, dims=dims, dtype=DTYPE,
                               **common.throughput(r, settings.ceilings, nbytes=nbytes)) for r in results]


def main(argv: list[str] | None = None) -> int:
    parser = common.make_parser(__doc__.splitlines()[0], compile_option=True, flush_option=True)
    args = parser.parse_args(argv)
    shapes = common.stream_shapes(args.smoke)
    settings = common.settings_from_args(SCRIPT, parser, args, list(shapes), default_reps=100, ceilings=("copy",))
    records = []
    for name in settings.shapes:
        records += bench_shape(settings, name, *shapes[name])
    return common.finish(settings, records)


if __name__ == "__main__":
    sys.exit(main())
