"""Benchmark causal_conv3d on the video VAE decoder's 3x3x3 convs at 768x512x121 output.

    python bench/ops_conv3d.py [--shapes NAME,...] [--reps N] [--out DIR] [--smoke]
                               [--decoder ltxv|ltx2] [--max-frames T]

Layers of the LTX-Video 0.9.5+ / LTX-2 decoder (decoder_block_out_channels (256, 512, 1024),
5 resnets per block, x2 upsamplers in time and space; latent 128 x 16 x 16 x 24), as
Cin -> Cout at T x H x W (the conv's input grid; stride 1, non-causal, so also its output grid):
  conv_in          128 -> 1024 at  16 x  16 x  24    x1
  mid-resnet      1024 -> 1024 at  16 x  16 x  24    x10 (5 resnets x 2 convs)
  up0-upsampler   1024 -> 4096 at  16 x  16 x  24    x1  (then depth-to-space to 512 ch)
  up0-resnet       512 ->  512 at  31 x  32 x  48    x10
  up1-upsampler    512 -> 2048 at  31 x  32 x  48    x1
  up1-resnet       256 ->  256 at  61 x  64 x  96    x10
  up2-upsampler    256 -> 1024 at  61 x  64 x  96    x1
  up2-resnet       128 ->  128 at 121 x 128 x 192    x10
  conv_out         128 ->   48 at 121 x 128 x 192    x1
--decoder ltxv (default): zero spatial padding, resnet prologue pixel norm -> per-sample
modulation -> SiLU (0.9.5+ decoders are timestep-conditioned); ltx2: reflect padding, prologue
pixel norm -> SiLU. --max-frames caps T for memory; capped records say so (dims.frames_capped).
cuDNN times its algorithms at the first call (torch.backends.cudnn.benchmark) unless
--no-cudnn-benchmark.

Variants: "causal_conv3d" (every layer) and, for the layers whose input the model normalizes
and activates first (resnets, conv_out), "causal_conv3d+prologue" (the fused prologue).
Implementations: torch (the reference: prologue in eager torch, padded copy, cuDNN F.conv3d),
triton, cuda, and cuDNN F.conv3d on an input padded (and activated) before timing
(cudnn-prepadded, NCDHW as the model stores activations; cudnn-prepadded-ndhwc, channels-last
input and weight, cuDNN's fastest layout): the best case for cuDNN. TFLOP/s counts
2 x Cout x T x H x W x Cin x 27; peak_mem_bytes is the torch.cuda.max_memory_allocated rise
during one call (output included), the prepadded input not counted.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from ltxengine.ops import reference  # noqa: E402

SCRIPT = "ops_conv3d"
DTYPE = torch.bfloat16
NORM_EPS = 1e-6  # the decoder's resnet_norm_eps (pixel norm)
DECODERS = {"ltxv": ("zeros", True), "ltx2": ("reflect", False)}  # name -> (padding, modulated prologue)


@dataclass(frozen=True)
class Layer:
    cin: int
    cout: int
    t: int
    h: int
    w: int
    prologue: bool  # the model applies pixel norm (+ modulation) and SiLU to this conv's input
    count: int  # convs of this shape in one decode


LAYERS = {
    "conv_in": Layer(128, 1024, 16, 16, 24, False, 1),
    "mid-resnet": Layer(1024, 1024, 16, 16, 24, True, 10),
    "up0-upsampler": Layer(1024, 4096, 16, 16, 24, False, 1),
    "up0-resnet": Layer(512, 512, 31, 32, 48, True, 10),
    "up1-upsampler": Layer(512, 2048, 31, 32, 48, False, 1),
    "up1-resnet": Layer(256, 256, 61, 64, 96, True, 10),
    "up2-upsampler": Layer(256, 1024, 61, 64, 96, False, 1),
    "up2-resnet": Layer(128, 128, 121, 128, 192, True, 10),
    "conv_out": Layer(128, 48, 121, 128, 192, True, 1),
}
SMOKE_LAYERS = {  # odd grids, a channel change: what the interpreter runs in seconds
    "smoke-resnet": Layer(8, 8, 5, 6, 7, True, 1),
    "smoke-upsampler": Layer(8, 16, 3, 5, 6, False, 1),
}


def make_inputs(layer: Layer, frames: int, modulated: bool, device: torch.device) -> dict:
    torch.manual_seed(0)
    fan_in = layer.cin * 27
    inp = {"x": torch.randn(1, layer.cin, frames, layer.h, layer.w, device=device).to(DTYPE),
           "weight": (torch.randn(layer.cout, layer.cin, 3, 3, 3, device=device) / fan_in ** 0.5).to(DTYPE),
           "bias": (torch.randn(layer.cout, device=device) * 0.1).to(DTYPE), "scale": None, "shift": None}
    if modulated:
        inp["scale"] = (torch.randn(1, layer.cin, device=device) * 0.5).to(DTYPE)
        inp["shift"] = (torch.randn(1, layer.cin, device=device) * 0.5).to(DTYPE)
    return inp


def prologue_kwargs(inp: dict, fused: bool) -> dict:
    if not fused:
        return {}
    return {"norm_eps": NORM_EPS, "scale": inp["scale"], "shift": inp["shift"], "silu": True}


def call(inp: dict, padding: str, fused: bool):
    kw = prologue_kwargs(inp, fused)
    return lambda fn: fn(inp["x"], inp["weight"], inp["bias"], (1, 1, 1), False, padding, **kw)


def oracle_and_tolerance(inp: dict, padding: str, fused: bool):
    f32 = {k: (v.float() if v is not None else None) for k, v in inp.items()}
    with common.exact_fp32():
        oracle = call(f32, padding, fused)(reference.causal_conv3d)
    lowp = call(inp, padding, fused)(reference.causal_conv3d)
    return oracle, common.error_budget(common.max_abs_err(lowp, oracle), oracle)


def cudnn_prepadded(inp: dict, padding: str, fused: bool, channels_last: bool) -> common.Impl:
    """F.conv3d on an input already activated and padded (one edge frame each side; reflect
    padding done too, zero padding left to cuDNN, which pads without a copy)."""
    h = inp["x"]
    if fused:
        h = reference.conv_prologue(h, NORM_EPS, inp["scale"], inp["shift"], True)
    h = torch.cat([h[:, :, :1], h, h[:, :, -1:]], dim=2)
    pad = (0, 1, 1)
    if padding != "zeros":
        h, pad = F.pad(h, (1, 1, 1, 1, 0, 0), mode=padding), 0
    w = inp["weight"]
    if channels_last:
        h, w = h.contiguous(memory_format=torch.channels_last_3d), w.contiguous(memory_format=torch.channels_last_3d)
    name = "cudnn-prepadded-ndhwc" if channels_last else "cudnn-prepadded"
    return common.Impl(name, lambda: F.conv3d(h, w, inp["bias"], padding=pad))


def bench_variant(settings, name: str, layer: Layer, frames: int, decoder: str, fused: bool) -> list[dict]:
    padding, modulated = DECODERS[decoder]
    inp = make_inputs(layer, frames, modulated and fused, settings.device)
    oracle, tol = oracle_and_tolerance(inp, padding, fused)
    impls = common.backend_impls("causal_conv3d", call(inp, padding, fused), settings.device)
    impls += [cudnn_prepadded(inp, padding, fused, cl) for cl in (False, True)]
    results = [common.measure(i, oracle, tol, settings, memory=True) for i in settings.keep(impls)]
    # ratio_vs_cudnn: against the faster cuDNN layout, the best case for cuDNN.
    cudnn = min((r for r in results if r["impl"].startswith("cudnn") and r["status"] == "ok"),
                key=lambda r: r["median_ms"], default=None)
    common.add_ratios(results, {"reference": "torch", "cudnn": cudnn["impl"] if cudnn else "cudnn-prepadded"})
    del oracle, impls
    dims = {"cin": layer.cin, "cout": layer.cout, "frames": frames, "height": layer.h, "width": layer.w,
            "frames_full": layer.t, "frames_capped": frames < layer.t, "kernel": [3, 3, 3], "decoder": decoder,
            "padding": padding, "prologue": ("norm+mod+silu" if modulated else "norm+silu") if fused else None,
            "count_in_decoder": layer.count, "cudnn_benchmark": torch.backends.cudnn.benchmark}
    flops = 2 * layer.cout * frames * layer.h * layer.w * layer.cin * 27
    op = "causal_conv3d+prologue" if fused else "causal_conv3d"
    return [common.make_record(settings, r, op=op, shape=name, dims=dims, dtype=DTYPE,
                               cudnn_baseline=cudnn["impl"] if cudnn else None,
                               **common.throughput(r, settings.ceilings, flops=flops)) for r in results]


def main(argv: list[str] | None = None) -> int:
    parser = common.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--decoder", choices=sorted(DECODERS), default="ltxv",
                        help="ltxv: zero padding, modulated prologue; ltx2: reflect padding, norm+SiLU")
    parser.add_argument("--max-frames", type=int, help="cap T of every layer (memory); recorded")
    parser.add_argument("--no-cudnn-benchmark", action="store_true",
                        help="let cuDNN pick algorithms by heuristics instead of timing them")
    args = parser.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f"--max-frames must be >= 1, got {args.max_frames}")
    layers = SMOKE_LAYERS if args.smoke else LAYERS
    settings = common.settings_from_args(SCRIPT, parser, args, list(layers), default_reps=20,
                                         ceilings=("matmul",))
    saved = torch.backends.cudnn.benchmark
    # cuDNN's best case: the algorithm is chosen by timing at the first call (the verification).
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    try:
        records = []
        for name in settings.shapes:
            layer = layers[name]
            frames = min(layer.t, args.max_frames or layer.t)
            for fused in (False, True) if layer.prologue else (False,):
                records += bench_variant(settings, name, layer, frames, args.decoder, fused)
    finally:
        torch.backends.cudnn.benchmark = saved
    return common.finish(settings, records)


if __name__ == "__main__":
    sys.exit(main())
