"""LoRA on fp8 weights: how close "merge" and "branch" (LoraSet's fp8_lora) come to bf16, and their cost.

    python bench/fp8_lora_quality.py [--shapes NAME,...] [--cases NAME,...] [--policies NAME,...]
                                     [--reps N] [--out DIR] [--smoke]

One linear layer per (shape, LoRA case, fp8 policy). Its bf16 weight W is N(0, 0.02) with a few
outlier input columns (x10, as real transformer weights have), quantized per tensor (quantize_weight)
into an Fp8Linear; the LoRA (A, B) is Gaussian in bf16, scaled so ||B A|| = rel ||W|| (Frobenius);
activations x (tokens, in) have unit RMS, in bf16. The reference is the bf16 layer with the LoRA
merged the bf16 way (W + B A in fp32, rounded once to bf16), evaluated exactly (fp64).

Columns, each a relative Frobenius error of the layer output:
  fp8        fp8 layer, no LoRA, vs the bf16 layer without LoRA (the quantization floor)
  ignore     fp8 layer, no LoRA, vs the reference (what dropping the LoRA would cost)
  merge      LoraSet(fp8_lora="merge"): dequant + B A, requantized with a new scale, vs the reference
  branch     LoraSet(fp8_lora="branch"): fp8 layer + (x A^T) B^T in bf16, vs the reference
  eff_*      how much of the LoRA's own effect x (B A)^T survives: ||(y - y_fp8) - x (B A)^T|| /
             ||x (B A)^T||; 1.0 = effect lost. eff_bf16: the bf16 layer's own (weights and outputs
             in bf16 lose a LoRA that is small against them too)
Timing (GPU; smoke runs time the CPU and mean nothing): the bf16 layer, the fp8 layer (= "merge",
which adds no work) and the fp8 layer with its branch hook; extra_flops = rank (in + out) / (in out).

Shapes (out x in; 6144 tokens = 768x512x121 video):
  d3072          3072 x  3072    d4096-ff-up    16384 x 4096
  d4096          4096 x  4096    d4096-ff-down   4096 x 16384
Cases (rank, ||B A|| / ||W||): tiny (16, 0.1%), style-1% (16, 1%), style-3% (32, 3%), style-10% (64, 10%),
  distilled-30% and distilled-100% (384: LTX-2's distilled LoRA rank, which moves weights a lot).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from ltxengine.loading.lora import LoraSet, LoraWeights  # noqa: E402
from ltxengine.ops import TORCH_OPS, Ops, get_ops  # noqa: E402
from ltxengine.quant.fp8 import POLICIES, Fp8Linear  # noqa: E402

SCRIPT = "fp8_lora_quality"
TOKENS = 6144
SHAPES = {"d3072": (3072, 3072), "d4096": (4096, 4096), "d4096-ff-up": (16384, 4096),
          "d4096-ff-down": (4096, 16384)}
SMOKE_SHAPES = {"smoke-96x64": (96, 64)}
SMOKE_TOKENS = 33
CASES = {"tiny": (16, 0.001), "style-1%": (16, 0.01), "style-3%": (32, 0.03), "style-10%": (64, 0.1),
         "distilled-30%": (384, 0.3), "distilled-100%": (384, 1.0)}
OUTLIER_COLUMNS = 4
OUTLIER_GAIN = 10.0
COLUMNS = ("fp8", "ignore", "merge", "branch", "eff_bf16", "eff_merge", "eff_branch")


@dataclass
class LayerCase:
    w: torch.Tensor  # (out, in) bf16
    a: torch.Tensor  # (rank, in) bf16
    b: torch.Tensor  # (out, rank) bf16
    x: torch.Tensor  # (tokens, in) bf16, unit RMS


def make_case(out_f: int, in_f: int, rank: int, rel: float, tokens: int, device, seed: int = 0) -> LayerCase:
    g = torch.Generator(device="cpu").manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g) * 0.02
    w[:, torch.randperm(in_f, generator=g)[:OUTLIER_COLUMNS]] *= OUTLIER_GAIN
    a, b = torch.randn(rank, in_f, generator=g), torch.randn(out_f, rank, generator=g)
    k = (rel * w.norm() / (b @ a).norm()).sqrt()  # split evenly between A and B
    x = torch.randn(tokens, in_f, generator=g)
    return LayerCase(*(t.to(device, torch.bfloat16) for t in (w, a * k, b * k, x)))


class _OneLayer(nn.Module):
    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer


def fp8_model(case: LayerCase, policy: str, ops: Ops = TORCH_OPS) -> nn.Module:
    dense = nn.Linear(case.w.shape[1], case.w.shape[0], bias=False, device=case.w.device, dtype=torch.bfloat16)
    with torch.no_grad():
        dense.weight.copy_(case.w)
    layer = Fp8Linear.from_linear(dense, policy)
    layer.ops = ops
    return _OneLayer(layer)


def lora_weights(case: LayerCase) -> LoraWeights:
    return LoraWeights.load({"transformer.layer.lora_A.weight": case.a, "transformer.layer.lora_B.weight": case.b},
                            name="case")


def _rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y - ref).norm() / ref.norm()).item()


def quality(case: LayerCase, policy: str, ops: Ops = TORCH_OPS) -> dict[str, float]:
    """The COLUMNS of one case: relative output errors (see the module docstring)."""
    model, weights = fp8_model(case, policy, ops), lora_weights(case)
    with torch.no_grad():
        y_fp8 = model.layer(case.x).double()
        outs = {}
        for mode in ("merge", "branch"):
            lora_set = LoraSet(model, fp8_lora=mode)
            lora_set.apply([(weights, 1.0)])
            outs[mode] = model.layer(case.x).double()
            lora_set.clear()
        x, delta = case.x.double(), case.b.double() @ case.a.double()
        w_ref = (case.w.float() + case.b.float() @ case.a.float()).to(torch.bfloat16).double()
        y_ref, y_w, effect = x @ w_ref.T, x @ case.w.double().T, x @ delta.T
        # What a bf16 layer outputs: the exact product rounded once to bf16 (fp32-accumulating GEMM).
        ref16, w16 = (y.to(torch.bfloat16).double() for y in (y_ref, y_w))
        return {"fp8": _rel(y_fp8, y_w), "ignore": _rel(y_fp8, y_ref), "merge": _rel(outs["merge"], y_ref),
                "branch": _rel(outs["branch"], y_ref), "eff_bf16": _rel(ref16 - w16, effect),
                "eff_merge": _rel(outs["merge"] - y_fp8, effect), "eff_branch": _rel(outs["branch"] - y_fp8, effect)}


def timings(case: LayerCase, policy: str, ops: Ops, settings: common.Settings) -> dict[str, float]:
    """Median ms of the bf16 layer, the fp8 layer (what "merge" costs) and fp8 + branch."""
    model = fp8_model(case, policy, ops)
    x, w = case.x, case.w
    out = {}
    with torch.no_grad():
        fns = {"bf16": lambda: torch.nn.functional.linear(x, w), "fp8": lambda: model.layer(x)}
        for name, fn in fns.items():
            out[f"{name}_ms"] = common.summarize(common.time_fn(fn, settings.device, settings.reps,
                                                                settings.warmup))["median_ms"]
        lora_set = LoraSet(model, fp8_lora="branch")
        lora_set.apply([(lora_weights(case), 1.0)])
        out["branch_ms"] = common.summarize(common.time_fn(lambda: model.layer(x), settings.device, settings.reps,
                                                           settings.warmup))["median_ms"]
        lora_set.clear()
    return out


def run_one(settings, shape: str, case_name: str, policy: str, ops: Ops) -> dict:
    out_f, in_f = (SMOKE_SHAPES if settings.smoke else SHAPES)[shape]
    rank, rel = CASES[case_name]
    rank = min(rank, out_f, in_f) if settings.smoke else rank
    case = make_case(out_f, in_f, rank, rel, SMOKE_TOKENS if settings.smoke else TOKENS, settings.device)
    result = {"impl": policy, "status": "ok", **quality(case, policy, ops), **timings(case, policy, ops, settings),
              "extra_flops": rank * (in_f + out_f) / (in_f * out_f)}
    dims = {"out": out_f, "in": in_f, "tokens": case.x.shape[0], "rank": rank, "rel": rel}
    return common.make_record(settings, result, op=f"fp8_lora/{case_name}", shape=shape, dims=dims,
                              dtype="bfloat16", ops=ops.name)


def print_quality(records: list[dict]) -> None:
    print(f"{'shape':<14} {'case':<15} {'policy':<14} " + " ".join(f"{c:>10}" for c in COLUMNS)
          + f" {'bf16 ms':>9} {'fp8 ms':>9} {'branch ms':>9} {'flops+':>7}")
    for r in records:
        print(f"{r['shape']:<14} {r['op'].split('/', 1)[1]:<15} {r['impl']:<14} "
              + " ".join(f"{r[c]:>10.4f}" for c in COLUMNS)
              + f" {r['bf16_ms']:>9.3f} {r['fp8_ms']:>9.3f} {r['branch_ms']:>9.3f} {r['extra_flops']:>7.2%}")


def main(argv: list[str] | None = None) -> int:
    parser = common.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--cases", help=f"comma-separated LoRA cases (default: all): {', '.join(CASES)}")
    parser.add_argument("--policies", help=f"comma-separated fp8 policies (default: all): {', '.join(POLICIES)}")
    args = parser.parse_args(argv)
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    settings = common.settings_from_args(SCRIPT, parser, args, list(shapes), default_reps=30, ceilings=())
    cases = common.pick_names("--cases", args.cases, list(CASES), parser) or list(CASES)
    policies = common.pick_names("--policies", args.policies, list(POLICIES), parser) or list(POLICIES)
    ops = get_ops("auto", settings.device)  # cuBLASLt / our fp8 GEMMs on a GPU, the references on a CPU
    records = [run_one(settings, shape, case, policy, ops)
               for shape in settings.shapes for case in cases for policy in policies]
    path = common.append_results(settings.results_path, records)
    if settings.device.type == "cpu":
        print("device cpu (smoke run): the timings below are not performance figures")
    print_quality(records)
    print(f"{len(records)} records appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
