"""End-to-end generation benchmarks: what both families' halves of scenario_generate.py share (see
its docstring) -- the scenario's prompt, sizes and tolerances, the upsampler builder, the verification
of ltxengine against diffusers on the first call, the alternating timing and the records. Also used by
graphs_memory.py (scenario_graphs.py's generation memory)."""

from __future__ import annotations

from typing import Callable

import torch

from bench import common
from bench import models as M

PROMPT = "a red car drives through the rain at night, the camera pans across the wet street"
SEED = 0
FULL_SIZE = (512, 768, 121)  # height, width, frames
SMOKE_SIZE = (96, 96, 9)  # stage 1 at 64x64, refined at 128x128, resized to 96x96: every path runs
SMOKE_SIZE_LTX2 = (128, 128, 9)  # LTX-2 two-stage: multiples of 64 (stage 1 at half size, 2x2 latents)
FRAME_RATE = 24
FP32_TOL = 1e-4  # max |d| on [0, 1] frames: tests/pipelines' parity contract
BF16_MEAN_TOL = 0.1  # mean |d| on [0, 1] frames: sanity only (see scenario_generate.py's docstring)
WORDS = ("a the red car drives through rain at night camera pans across wet street city lights "
         "dog runs on beach sunset waves").split()


def build_upsampler(config, device, dtype, ops):
    from ltxengine.models.latent_upsampler import LatentUpsampler

    with torch.device("meta"):
        model = LatentUpsampler(config, ops=ops).to(dtype)
    return M.randomize_(model.to_empty(device=device), seed=2).eval()


# -- verification, timing, records ----------------------------------------------------------------------

def compare(ours: dict, theirs: dict, dtype) -> dict:
    """Frame (and audio) differences and the verdict: fp32 max |d| <= FP32_TOL, else mean |d| <= BF16_MEAN_TOL."""
    out = {"status": "ok", "reason": ""}
    diffs = {}
    for k in ours:
        a, b = ours[k].float(), theirs[k].float()
        if a.shape != b.shape:
            return {"status": "failed", "reason": f"failed: {k} shape {tuple(a.shape)} != diffusers "
                                                  f"{tuple(b.shape)}; not timed"}
        d = (a - b).abs()
        diffs[k] = {"max_abs_diff": d.max().item(), "mean_abs_diff": d.mean().item(), "std": b.std().item(),
                    "unclamped_fraction": ((b > 0) & (b < 1)).float().mean().item() if k == "frames" else None}
    metric, tol = ("max_abs_diff", FP32_TOL) if dtype == torch.float32 else ("mean_abs_diff", BF16_MEAN_TOL)
    bad = [k for k, v in diffs.items() if not v[metric] <= tol]
    if bad:
        out.update(status="failed", reason="failed: " + "; ".join(
            f"{k} {metric} {diffs[k][metric]:.3e} > {tol:g}" for k in bad) + "; not timed")
    out.update(verify={"metric": metric, "tolerance": tol, "outputs": diffs},
               max_abs_err=max(v["max_abs_diff"] for v in diffs.values()), tolerance=tol)
    return out


def first_call(fn: Callable[[], dict], device) -> tuple[dict | None, int | None, str]:
    """(output, peak bytes above the resident weights, error) of the verified first call."""
    try:
        base = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        common.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base if base is not None else None
        return out, peak, ""
    except Exception as e:  # noqa: BLE001 - e.g. out of memory: reported, not raised
        return None, None, common._short(e)


def _result(name: str, source: str, settings) -> dict:
    return {"impl": name, "source": source, "status": "ok", "reason": "", "max_abs_err": None, "tolerance": None,
            "median_ms": None, "p10_ms": None, "p90_ms": None, "min_ms": None, "mean_ms": None, "reps": None,
            "warmup": settings.warmup, "flush_l2": False, "peak_mem_bytes": None}


def measure(fns: dict[str, Callable], sources: dict[str, str], settings, dtype) -> list[dict]:
    """Verify (ltxengine vs diffusers on the first call), then time alternately the ones that ran."""
    results, outs = {}, {}
    for name, fn in fns.items():
        res = results[name] = _result(name, sources[name], settings)
        outs[name], res["peak_mem_bytes"], err = first_call(fn, settings.device)
        if err:
            res.update(status="unavailable" if name == M.DIFFUSERS else "failed", reason=f"first call raised {err}")
    ours = "ltxengine"
    if outs.get(ours) is not None and outs.get(M.DIFFUSERS) is not None:
        verdict = compare(outs[ours], outs[M.DIFFUSERS], dtype)
        for name in fns:
            results[name].update({k: v for k, v in verdict.items() if name == ours or k not in ("status", "reason")})
    elif results[ours]["status"] == "ok":
        results[ours]["reason"] = "not verified: diffusers did not run"
    outs.clear()
    timed = {n: fns[n] for n in fns if results[n]["status"] == "ok"}
    times, errors = M.time_alternating(timed, settings.device, settings.reps, settings.warmup)
    for name in timed:
        if name in errors:
            results[name].update(status="failed", reason=f"failed while timing: {errors[name]}")
        else:
            results[name].update(common.summarize(times[name]))
    out = list(results.values())
    common.add_ratios(out, {"diffusers": M.DIFFUSERS})
    return out


def stage_medians(stages: list[dict], warmup: int) -> dict | None:
    """Median seconds per stage over the timed calls (host clock: a stage's GPU work may spill into
    the next stage's time; the total is synchronized by the copy of the frames to the host)."""
    timed = stages[1 + warmup:] or stages
    if not timed:
        return None
    return {k: common.percentile([s[k] for s in timed if k in s], 50) for k in timed[0]}


def records_for(settings, results: list[dict], model: str, size, dtype, dims: dict, stages: list) -> list[dict]:
    recs = []
    for res in results:
        t = res["median_ms"]
        extra = dict(seconds=t / 1e3 if t else None, output_frames=size[2],
                     fps=size[2] / (t / 1e3) if t else None)
        if res["impl"] == "ltxengine":
            extra["stage_seconds"] = stage_medians(stages, settings.warmup)
        recs.append(common.make_record(settings, res, op="generate", shape=model, dims=dims, dtype=dtype, **extra))
    return recs
