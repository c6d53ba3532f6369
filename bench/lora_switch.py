"""LoRA adapters on a full-size transformer: load, switch, unload, and what an active LoRA costs per step.

    python bench/lora_switch.py [--models NAME,...] [--rank R] [--reps N] [--out DIR] [--smoke]

Per model (random bf16 weights of the released config; --smoke: the tiny presets on the CPU), two
random LoRAs of rank R (default 32) over every attention projection of every block, written as
Lightricks-layout .safetensors files, go through the engine's adapter registry
(ltxengine/adapters.py, the code behind engine.load_lora_weights / set_adapters / unload_lora_weights):

  load_ms     load_lora_weights of one file: read, check against the model, fuse (active at 1.0)
  switch_ms   set_adapters(A) -> set_adapters(B) with both loaded (the touched layers are rewritten)
  unload_ms   unload_lora_weights with one active (the base weights restored bit for bit)
  verified    lora_changes_step / branch_changes_step: the active LoRA changed the step's output;
              unload_exact / branch_unload_exact: after unloading it equals the output before, bit for bit
  step_ms     one transformer step (the per-step call of scenario_transformer, its geometry) with no
              LoRA, with a fused one (what an active adapter costs: the same weights, so the same
              time), and on fp8 weights (fp8-cast) without and with an unfused "branch" LoRA, the
              case where a LoRA costs per step; "fused_ratio" and "branch_ratio" are step time over
              the same run's time without LoRA.

Median times (CUDA events on a GPU); CPU runs are smoke runs and their times mean nothing. The
goal from issue 20: switching between two loaded adapters on the 19B transformer well under a
second on a GPU.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench import models as M  # noqa: E402
from bench import scenario_transformer as ST  # noqa: E402
from ltxengine.adapters import Adapters  # noqa: E402
from ltxengine.loading.lora import LoraSet  # noqa: E402
from ltxengine.ops import get_ops  # noqa: E402
from ltxengine.quant.fp8 import convert_to_fp8  # noqa: E402

SCRIPT = "lora_switch"
MODELS = ("2b", "ltx2-19b")
SMOKE_MODELS = ("tiny-2b", "tiny-ltx2")
PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


def write_lora(model, path: Path, rank: int, seed: int) -> Path:
    """A Lightricks-layout LoRA over every attention projection (B A ~ 1% of a weight's scale); the
    attention projections have the same names in the original and the diffusers layouts."""
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name.endswith("." + p) for p in PROJECTIONS):
            a = torch.randn(rank, module.in_features, generator=g) / module.in_features ** 0.5
            b = torch.randn(module.out_features, rank, generator=g) * (0.01 / rank ** 0.5)
            tensors[f"diffusion_model.{name}.lora_A.weight"] = a.to(torch.bfloat16)
            tensors[f"diffusion_model.{name}.lora_B.weight"] = b.to(torch.bfloat16)
    save_file(tensors, str(path))
    return path


def _ms(fn, settings) -> float:
    return common.summarize(common.time_fn(fn, settings.device, settings.reps, settings.warmup))["median_ms"]


def _once_ms(fn, settings) -> float:
    """One timed call (the operations that change state cannot be repeated as they are)."""
    common.synchronize(settings.device)
    t0 = time.perf_counter()
    fn()
    common.synchronize(settings.device)
    return (time.perf_counter() - t0) * 1000


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def run_model(name: str, settings, rank: int) -> dict:
    dtype = torch.bfloat16 if settings.device.type == "cuda" else torch.float32
    ops = get_ops("auto", settings.device)
    model = M.build(M.TRANSFORMERS[name], settings.device, dtype, ops)
    geo = ST.geometry(name, settings.smoke)
    inp = ST.make_inputs(model.config, geo, 1, settings.device, dtype)
    step = ST.ltxengine_call(model, inp, geo)
    lora_set = LoraSet({"transformer": model})
    adapters = Adapters(lambda: lora_set)
    result: dict = {"impl": "ltxengine", "status": "ok", "rank": rank}
    with tempfile.TemporaryDirectory() as tmp:
        files = [write_lora(model, Path(tmp) / f"lora{i}.safetensors", rank, seed=i) for i in range(2)]
        result["step_ms"] = _ms(step, settings)
        base = step()
        loads, switches, unloads = [], [], []
        for _ in range(max(1, min(settings.reps, 5))):
            loads.append(_once_ms(lambda: adapters.load(files[0], "a"), settings))
            adapters.load(files[1], "b")
            for target in (["a"], ["b"]):
                switches.append(_once_ms(lambda t=target: adapters.set(t), settings))
            unloads.append(_once_ms(adapters.unload, settings))
        result.update(load_ms=common.percentile(loads, 50), switch_ms=common.percentile(switches, 50),
                      unload_ms=common.percentile(unloads, 50))
        adapters.load(files[0], "a")
        result["fused_step_ms"] = _ms(step, settings)
        fused = step()
        adapters.unload()
        # what the timings ran: the LoRA changed the step, and unloading brought it back exactly
        result["lora_changes_step"] = not _same(fused, base)
        result["unload_exact"] = _same(step(), base)
        # fp8 weights: the LoRA stays a forward-hook branch ("branch", the default for fp8 layers)
        convert_to_fp8(model, "fp8-cast")
        fp8_set = LoraSet({"transformer": model}, fp8_lora="branch")
        result["fp8_step_ms"] = _ms(step, settings)
        fp8_base = step()
        fp8_adapters = Adapters(lambda: fp8_set)
        fp8_adapters.load(files[0], "a")
        result["branch_step_ms"] = _ms(step, settings)
        branch = step()
        fp8_adapters.unload()
        result["branch_changes_step"] = not _same(branch, fp8_base)
        result["branch_unload_exact"] = _same(step(), fp8_base)
    result["fused_ratio"] = result["fused_step_ms"] / result["step_ms"]
    result["branch_ratio"] = result["branch_step_ms"] / result["fp8_step_ms"]
    dims = {"params": sum(p.numel() for p in model.parameters()), "video_tokens": inp["video"].shape[1]}
    del model, step, inp
    M.release()
    return common.make_record(settings, result, op="lora/adapters", shape=name, dims=dims, dtype=str(dtype),
                              ops=ops.name)


def main(argv: list[str] | None = None) -> int:
    parser = common.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated models (default: {', '.join(MODELS)}; --smoke: "
                                         f"{', '.join(SMOKE_MODELS)})")
    parser.add_argument("--rank", type=int, default=32, help="LoRA rank (default 32)")
    args = parser.parse_args(argv)
    names = list(SMOKE_MODELS if args.smoke else MODELS)
    settings = common.settings_from_args(SCRIPT, parser, args, names, default_reps=10, ceilings=())
    models = common.pick_names("--models", args.models, list(M.TRANSFORMERS), parser) or names
    records = [run_model(name, settings, args.rank) for name in models]
    path = common.append_results(settings.results_path, records)
    if settings.device.type == "cpu":
        print("device cpu (smoke run): the timings below are not performance figures")
    print(f"{'model':<12} {'load ms':>9} {'switch ms':>10} {'unload ms':>10} {'step ms':>9} {'fused x':>8} "
          f"{'fp8 ms':>9} {'branch x':>9}")
    for r in records:
        print(f"{r['shape']:<12} {r['load_ms']:>9.1f} {r['switch_ms']:>10.1f} {r['unload_ms']:>10.1f} "
              f"{r['step_ms']:>9.2f} {r['fused_ratio']:>8.3f} {r['fp8_step_ms']:>9.2f} {r['branch_ratio']:>9.3f}")
    print(f"{len(records)} records appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
