"""Benchmark the modulation ops: ada_norm (RMS / LayerNorm, then x (1 + scale) + shift), gated_residual, head_gate,
residual_ada_norm (the gated residual and the next adaLN in one pass), dual_ada_norm (LTX-2's audio<->video norms).

    python bench/ops_adaln.py [--shapes NAME,...] [--reps N] [--out DIR] [--smoke]

Shapes: every transformer stream at 768x512x121, batch 1 and 2 (CFG): ltxv-2b (6144 x 2048),
ltxv-13b and ltx2-video (6144 x 4096), ltx2-audio (126 x 2048); see common.STREAMS.
Variants (the "op" of a record):
  ada_norm/rms/per-sample     block pre-norm, shift/scale (B, 1, D) (one timestep per sample)
  ada_norm/rms/per-token      block pre-norm, shift/scale (B, N, D) (image conditioning)
  ada_norm/layer/per-sample   final LayerNorm with (B, 1, D) shift/scale
  gated_residual/per-sample   x + gate * y, gate (B, 1, D)
  gated_residual/per-token    x + gate * y, gate (B, N, D)
  head_gate/32-heads          LTX-2.3+ gated attention: head h of x (B, N, D) times 2 sigmoid(logits (B, N, 32))
  residual_ada_norm/rms/per-sample   x + gate * y, then its RMS adaLN; gate/shift/scale (B, 1, D)
  residual_ada_norm/rms/per-token    the same with (B, N, D) modulation
  dual_ada_norm/rms/per-sample       x + gate * y, then its RMS norm once with two (B, 1, D) modulations (a2v, v2a)

Implementations: torch (the fp32 reference, eager), torch.compile(reference), triton, cuda; for
residual_ada_norm also triton-pair (the unfused gated_residual + ada_norm kernels it replaces), dual_ada_norm
triton-pair too (residual_ada_norm + ada_norm, what LTX-2's blocks ran before it).
Bytes moved: every input read once (bf16) and each output written once (bf16).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from ltxengine.ops import reference  # noqa: E402

SCRIPT = "ops_adaln"
DTYPE = torch.bfloat16
EPS = 1e-6  # block pre-norms and the final LayerNorm of every LTX transformer

# variant -> (op, norm kind or None, modulation granularity)
VARIANTS = {
    "ada_norm/rms/per-sample": ("ada_norm", "rms", "sample"),
    "ada_norm/rms/per-token": ("ada_norm", "rms", "token"),
    "ada_norm/layer/per-sample": ("ada_norm", "layer", "sample"),
    "gated_residual/per-sample": ("gated_residual", None, "sample"),
    "gated_residual/per-token": ("gated_residual", None, "token"),
    "head_gate/32-heads": ("head_gate", None, "token"),
    "residual_ada_norm/rms/per-sample": ("residual_ada_norm", "rms", "sample"),
    "residual_ada_norm/rms/per-token": ("residual_ada_norm", "rms", "token"),
    "dual_ada_norm/rms/per-sample": ("dual_ada_norm", "rms", "sample"),
}
OUTPUTS = {"residual_ada_norm": 2, "dual_ada_norm": 3}  # (x_new, normed), (x_new, n1, n2); others 1
HEADS = 32  # every LTX-2 stream (video 32 x 128, audio 32 x 64)


def make_inputs(variant: str, stream: common.Stream, batch: int, device: torch.device) -> dict:
    """Tensors in call order; modulation values around 0.5 like trained tables."""
    op, kind, per = VARIANTS[variant]
    torch.manual_seed(0)
    shape = (batch, stream.tokens, stream.width)
    mod_shape = shape if per == "token" else (batch, 1, stream.width)

    def rand(s, std=1.0):
        return (torch.randn(s, device=device) * std).to(DTYPE)

    if op == "ada_norm":
        return {"x": rand(shape), "shift": rand(mod_shape, 0.5), "scale": rand(mod_shape, 0.5)}
    if op == "head_gate":
        return {"x": rand(shape), "logits": rand((batch, stream.tokens, HEADS))}
    if op == "residual_ada_norm":
        return {"x": rand(shape), "y": rand(shape), "gate": rand(mod_shape, 0.5), "shift": rand(mod_shape, 0.5),
                "scale": rand(mod_shape, 0.5)}
    if op == "dual_ada_norm":
        return {"x": rand(shape), "y": rand(shape), "gate": rand(mod_shape, 0.5),
                **{k: rand(mod_shape, 0.5) for k in ("shift1", "scale1", "shift2", "scale2")}}
    return {"x": rand(shape), "y": rand(shape), "gate": rand(mod_shape, 0.5)}


def call(variant: str, inp: dict):
    op, kind, _ = VARIANTS[variant]
    if op == "ada_norm":
        return lambda fn: fn(inp["x"], inp["shift"], inp["scale"], EPS, kind)
    if op == "head_gate":
        return lambda fn: fn(inp["x"], inp["logits"])
    if op == "residual_ada_norm":
        return lambda fn: fn(inp["x"], inp["y"], inp["gate"], inp["shift"], inp["scale"], EPS, kind)
    if op == "dual_ada_norm":
        return lambda fn: fn(inp["x"], inp["y"], inp["gate"], inp["shift1"], inp["scale1"], inp["shift2"],
                             inp["scale2"], EPS, kind)
    return lambda fn: fn(inp["x"], inp["y"], inp["gate"])


def bytes_moved(variant: str, inp: dict) -> int:
    read = sum(t.numel() * t.element_size() for t in inp.values())
    outputs = OUTPUTS.get(VARIANTS[variant][0], 1)
    return read + outputs * inp["x"].numel() * inp["x"].element_size()  # outputs: x's shape and dtype


def pair_impl(variant: str, inp: dict, device: torch.device) -> common.Impl:
    """A fused norm op as the models ran it before, in Triton kernels: residual_ada_norm as gated_residual
    then ada_norm, dual_ada_norm as residual_ada_norm then ada_norm."""
    ops, why = common.resolve_backend("triton", device)
    if ops is None:
        return common.Impl("triton-pair", None, "unavailable", why)
    op, kind, _ = VARIANTS[variant]

    def run():
        if op == "dual_ada_norm":
            x, n1 = ops.residual_ada_norm(inp["x"], inp["y"], inp["gate"], inp["shift1"], inp["scale1"], EPS, kind)
            return x, n1, ops.ada_norm(x, inp["shift2"], inp["scale2"], EPS, kind)
        x = ops.gated_residual(inp["x"], inp["y"], inp["gate"])
        return x, ops.ada_norm(x, inp["shift"], inp["scale"], EPS, kind)

    return common.Impl("triton-pair", run, source="triton")


def oracle_and_tolerance(variant: str, inp: dict):
    op = getattr(reference, VARIANTS[variant][0])
    with common.exact_fp32():
        oracle = call(variant, {k: v.float() for k, v in inp.items()})(op)
    lowp = call(variant, inp)(op)
    return oracle, common.error_budget(common.max_abs_err(lowp, oracle), oracle)


def bench_variant(settings: common.Settings, variant: str, name: str, stream: common.Stream,
                  batch: int) -> list[dict]:
    op = VARIANTS[variant][0]
    inp = make_inputs(variant, stream, batch, settings.device)
    oracle, tol = oracle_and_tolerance(variant, inp)
    impls = common.backend_impls(op, call(variant, inp), settings.device)
    impls.insert(1, common.compiled_impl(getattr(reference, op), call(variant, inp), settings))
    if op in OUTPUTS:
        impls.append(pair_impl(variant, inp, settings.device))
    results = [common.measure(i, oracle, tol, settings, flush_l2=settings.flush_l2) for i in settings.keep(impls)]
    common.add_ratios(results, {"eager": "torch", "compile": common.COMPILE})
    dims = {"batch": batch, "tokens": stream.tokens, "width": stream.width, "modulation": VARIANTS[variant][2]}
    nbytes = bytes_moved(variant, inp)
    return [common.make_record(settings, r, op=variant, shape=name, dims=dims, dtype=DTYPE,
                               **common.throughput(r, settings.ceilings, nbytes=nbytes)) for r in results]


def main(argv: list[str] | None = None) -> int:
    parser = common.make_parser(__doc__.splitlines()[0], compile_option=True, flush_option=True)
    parser.add_argument("--variants", help=f"comma-separated variants (default: all): {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    shapes = common.stream_shapes(args.smoke)
    settings = common.settings_from_args(SCRIPT, parser, args, list(shapes), default_reps=100, ceilings=("copy",))
    variants = common.pick_names("--variants", args.variants, list(VARIANTS), parser) or list(VARIANTS)
    records = []
    for variant in variants:
        for name in settings.shapes:
            records += bench_variant(settings, variant, name, *shapes[name])
    return common.finish(settings, records)


if __name__ == "__main__":
    sys.exit(main())
