"""Benchmark one denoising step with the transformer's blocks streamed from host memory against
the same step with every block resident (issue 23's goal: <= 1.15x the resident step on an H100).

    python bench/scenario_offload.py [--models ltx2.3-22b] [--quantization fp8-cast|none]
                                     [--group-sizes 1,2,4] [--batch 2] [--kernels auto]
                                     [--reps N] [--warmup N] [--out DIR] [--smoke]

Workload: scenario_transformer's (768x512x121: 6144 video tokens, 1024 Gemma text tokens, 126 audio
tokens), batch 2, random weights of realistic scale (bench/models.py) made on the GPU, fp8-cast by
default (the small-GPU configuration: the blocks stream as fp8, half bf16's bytes).

Per model: the resident step is run and timed; then for each group size the blocks are packed into
pinned host memory (executor/block_offload.BlockOffload), the streamed step's output is checked
equal to the resident one BIT FOR BIT (same kernels, same values: anything else is a wiring fault
and the size is not timed), timed, and the blocks made resident again; the resident step is timed
once more at the end, so drift shows. Records: median/p10/p90 ms, ``ratio_vs_resident`` (streamed
median / mean of the two resident medians; the goal is <= 1.15), ``streamed_bytes`` per call and
the achieved host-to-device rate (bytes / streamed time: a floor on the copy rate, since copies
overlap compute), ``device_weight_bytes`` (resident: every weight; streamed: the non-block weights
plus the two slots), ``peak_mem_bytes`` (rise over one call) and ``h2d_pinned_gbps`` (a plain
pinned copy of one group, for scale). Timing is sequential (not alternating): offload changes
where the weights live, so two variants cannot share one model at once.
Smoke: tiny-ltx2.3 (2 blocks) on a 17x96x160 clip on the CPU, bfloat16 (the slots are host
buffers: checks the harness and the bit equality, no performance figures).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench import models as M  # noqa: E402
from bench import scenario_transformer as T  # noqa: E402
from ltxengine.executor.block_offload import BlockOffload  # noqa: E402
from ltxengine.executor.plan import module_bytes  # noqa: E402
from ltxengine.quant import convert_to_fp8  # noqa: E402

SCRIPT = "scenario_offload"
FULL_MODELS = ("ltx2.3-22b",)
SMOKE_MODELS = ("tiny-ltx2.3",)
GOAL = 1.15
DTYPE = torch.bfloat16


def parse_args(argv):
    parser = common.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated, from {', '.join(M.TRANSFORMERS)} (default: "
                                         f"{','.join(FULL_MODELS)}; with --smoke: {','.join(SMOKE_MODELS)})")
    parser.add_argument("--quantization", default="fp8-cast", choices=("fp8-cast", "none"))
    parser.add_argument("--group-sizes", default="1,2,4", help="comma-separated blocks per streamed group")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--kernels", default="auto", choices=M.KERNELS, help="ops backend of the model")
    args = parser.parse_args(argv)
    models = common.pick_names("--models", args.models, list(M.TRANSFORMERS), parser) or list(
        SMOKE_MODELS if args.smoke else FULL_MODELS)
    try:
        groups = sorted({int(g) for g in args.group_sizes.split(",") if g.strip()})
    except ValueError:
        parser.error(f"--group-sizes must be comma-separated integers, got {args.group_sizes!r}")
    if not groups or groups[0] < 1 or args.batch < 1:
        parser.error(f"--group-sizes and --batch must be positive, got {args.group_sizes!r}, {args.batch}")
    return parser, args, models, groups


def _timed(settings, fn) -> dict:
    times = common.time_fn(fn, settings.device, settings.reps, settings.warmup)
    return {**common.summarize(times), "peak_mem_bytes": common.peak_memory(fn, settings.device)}


def pinned_h2d_gbps(nbytes: int, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dev.copy_(host, non_blocking=True)
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(5):
        dev.copy_(host, non_blocking=True)
    torch.cuda.synchronize(device)
    return 5 * nbytes / (time.perf_counter() - t0) / 1e9


def run_model(settings, name: str, ops, groups: list[int], quantization: str, batch: int) -> list[dict]:
    config = M.TRANSFORMERS[name]
    geo = T.geometry(name, settings.smoke)
    model = M.build(config, settings.device, DTYPE, ops)
    if quantization != "none":
        model = convert_to_fp8(model, quantization)
    inp = T.make_inputs(config, geo, batch, settings.device, DTYPE)
    fn = T.ltxengine_call(model, inp, geo)
    reference = [t.clone() for t in fn().values()]
    weights = module_bytes(model)
    blocks = module_bytes(*model.transformer_blocks)
    base = {"model": name, "quantization": quantization, "batch": batch, "goal_ratio": GOAL}
    resident = {**base, "impl": "resident", "group_size": None, "device_weight_bytes": weights,
                **_timed(settings, fn)}
    records = [resident]
    for g in groups:
        if g > len(model.transformer_blocks):
            continue
        off = BlockOffload(model.transformer_blocks, settings.device, g, owner=model)
        rec = {**base, "impl": f"streamed-g{g}", "group_size": g, "streamed_bytes": blocks,
               "device_weight_bytes": weights - blocks + off.device_bytes,
               "h2d_pinned_gbps": pinned_h2d_gbps(off.group_bytes, settings.device)}
        out = list(fn().values())
        if all(torch.equal(a, b) for a, b in zip(out, reference)):
            rec.update(status="ok", **_timed(settings, fn))
            rec["achieved_h2d_gbps"] = blocks / (rec["median_ms"] / 1e3) / 1e9
        else:
            rec.update(status="failed", reason="streamed output differs from the resident one; not timed")
        off.close()
        records.append(rec)
    again = _timed(settings, fn)
    resident_ms = (resident["median_ms"] + again["median_ms"]) / 2
    resident["median_ms_after"] = again["median_ms"]
    for r in records:
        r.setdefault("status", "ok")
        if r["impl"] != "resident" and r["status"] == "ok":
            r["ratio_vs_resident"] = r["median_ms"] / resident_ms
            r["meets_goal"] = r["ratio_vs_resident"] <= GOAL
    del model
    M.release()
    return records


def main(argv: list[str] | None = None) -> int:
    parser, args, models, groups = parse_args(argv)
    settings = common.settings_from_args(SCRIPT, parser, args, models, default_reps=10, ceilings=("copy",))
    ops, why = common.resolve_backend(args.kernels, settings.device)
    if ops is None:
        parser.error(f"--kernels {args.kernels}: {why}")
    records = []
    for name in settings.shapes:
        records += [dict(r, script=SCRIPT, device=settings.device.type, smoke=settings.smoke,
                         ceilings=settings.ceilings, env=common.environment())
                    for r in run_model(settings, name, ops, groups, args.quantization, args.batch)]
    path = common.append_results(settings.results_path, records)
    if settings.device.type == "cpu":
        print("device cpu (smoke run): the timings below check the harness; they are not performance figures")
    for r in records:
        print(f"{r['model']:<14} {r['impl']:<14} {r['status']:<7} median {r.get('median_ms') or 0:10.2f} ms  "
              f"ratio {r.get('ratio_vs_resident') or 1:.3f}  device weights {r['device_weight_bytes'] / 2**30:.2f} GiB")
    print(f"{len(records)} records appended to {path}")
    return 1 if any(r["status"] == "failed" for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
