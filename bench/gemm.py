"""What the GEMM benchmarks share (ops_fp8_gemm, ops_gguf_linear, ops_linear_epilogue): the M x N x K
production shapes, the command line (the common options plus --variants) and the records (dims M, N,
K; TFLOP/s counting 2 M N K, whatever the op does around the product).
"""

from __future__ import annotations

from bench import common

# M = 6144 video tokens (768x512x121, batch 1); N x K of the models' projections.
SHAPES = {
    "ltxv-2b-qkvo": (6144, 2048, 2048),      # LTX-Video 2B attention projections
    "ltxv-2b-ff-up": (6144, 8192, 2048),     # 2B feed-forward up
    "ltxv-2b-ff-down": (6144, 2048, 8192),   # 2B feed-forward down
    "d4096-qkvo": (6144, 4096, 4096),        # LTX-Video 13B / LTX-2 video attention projections
    "d4096-ff-up": (6144, 16384, 4096),      # 13B / LTX-2 video feed-forward up
    "d4096-ff-down": (6144, 4096, 16384),    # 13B / LTX-2 video feed-forward down
}


def parse(script: str, doc: str, argv: list[str] | None, shapes: dict, smoke_shapes: dict, variants: tuple,
          what: str) -> tuple[common.Settings, dict, list[str]]:
    """(settings, the shapes dict in use, the variants picked) from a GEMM benchmark's command line;
    ``what`` names the variants in --help (e.g. "quant types")."""
    parser = common.make_parser(doc.splitlines()[0])
    parser.add_argument("--variants", help=f"comma-separated {what} (default: all): {', '.join(variants)}")
    args = parser.parse_args(argv)
    shapes = smoke_shapes if args.smoke else shapes
    settings = common.settings_from_args(script, parser, args, list(shapes), default_reps=30,
                                         ceilings=("matmul",))
    picked = common.pick_names("--variants", args.variants, list(variants), parser) or list(variants)
    return settings, shapes, picked


def records(settings: common.Settings, impls: list, oracle, tolerance: float, baselines: dict[str, str], *,
            op: str, shape: str, mnk: tuple[int, int, int], dtype, **extra) -> list[dict]:
    """Verify and time ``impls`` against one oracle; one record each, with ratios to ``baselines``."""
    results = [common.measure(i, oracle, tolerance, settings) for i in settings.keep(impls)]
    common.add_ratios(results, baselines)
    m, n, k = mnk
    return [common.make_record(settings, r, op=op, shape=shape, dims={"M": m, "N": n, "K": k}, dtype=dtype,
                               **extra, **common.throughput(r, settings.ceilings, flops=2 * m * n * k))
            for r in results]
