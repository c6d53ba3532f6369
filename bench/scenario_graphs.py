"""Benchmark the static-graph executor (per-step latency, overhead outside kernels) and the memory
of full generations (issue 7).

    python bench/scenario_graphs.py [--models 2b,ltx2-19b] [--parts step,memory] [--impls none,eager,graphs]
                                    [--reps N] [--warmup N] [--profile-steps 3] [--kernels auto]
                                    [--executor auto] [--runs 2] [--ltxv-steps 8] [--ltxv-guidance 1]
                                    [--ltx2-steps 40] [--tiling none|spatial|spatiotemporal] [--out DIR]
                                    [--smoke]

Part "step": the engine's denoising step at 768x512x121, bf16, random weights (bench/models.py):
  2b        ``Guidance.step`` of LTX-Video 2B with classifier-free guidance (batch 2, scale 3), the guided
            model call and the Euler update as one pure function (what ltx_video/stages.py's denoise calls per step);
  ltx2-19b  the LTX-2 19B ``Denoiser`` call with the default LTX-2.0 guidance: 4 passes (cond, negative,
            STG, isolated modality) as one batch of 4 (what the stage-1 sampler calls per step).
Each runs three ways on the same weights: ``none`` (executor None: the plain eager call), ``eager``
(GraphExecutor "eager": static buffers and bucket keys, no graph), ``graphs`` (GraphExecutor "graphs":
CUDA graph replay; needs a GPU, skipped with the reason on a CPU). The step's latents are fed back and
its per-step inputs cycle over 8 steps, so the executor copies exactly what a sampling loop makes it
copy; the update uses dt = 0 while timing so the values stay fixed over hundreds of repetitions (the
cost does not depend on them). Before timing, each mode's output on one input (dt != 0) is compared
with ``none``'s. Then alternating rounds (none, eager, graphs, none, ...; bench/models.time_alternating),
medians, ``ratio_vs_none``. Overhead outside kernels: torch.profiler with CUDA activities over
``--profile-steps`` steps, each from an idle GPU to an idle GPU; kernel time per step = sum of kernel
durations (copies and memsets apart); overhead = 1 - kernel time / median step time (also against the
profiled steps' own time). Target: < 2 % for graphs. Capture time and memory: the executor's BucketStats.

Part "memory": peak memory of a full generation per phase (text, denoise, upsample, refine, decode),
torch.cuda.max_memory_allocated / max_memory_reserved with the peak reset at each phase boundary:
  2b        LTX-Video 2B one stage at 768x512x121 (the 0.9.5+ VAE; T5-XXL-sized random text
            encoder, 256 tokens; 8 distilled timesteps, guidance 1: the distilled recipe), twice:
            ``offload-text`` (offload=("text_encoder",)) and ``resident``. Target: <= 8 GB (10^9 bytes)
            after the text encoding with the encoder offloaded.
  ltx2-19b  LTX-2 19B two-stage video+audio at 768x512x121 (bench/generate_ltx2.py's models and recipe:
            Gemma 3 12B, the distilled LoRA fused for stage 2) with everything ``resident``; peak (reserved
            + the CUDA context) against BUDGET_BYTES (about 79 GiB of an H100 80GB are usable).
Each configuration runs ``--runs`` generations (the first captures the graphs); the VAE decode is
untiled unless ``--tiling``. The engines use ``--executor`` (auto: graphs on a GPU). This part lives in
bench/graphs_memory.py. ``--impls`` picks step modes; ``none`` always runs (the reference and baseline).
Smoke: tiny models, float32, CPU, 96x96x9 (LTX-2: 128x128x9, 3 steps); no GPU memory figures.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench import models as M  # noqa: E402
from bench import scenario_transformer as T  # noqa: E402
from bench.graphs_memory import bench_memory  # noqa: E402
from ltxengine.executor.graphs import GraphExecutor  # noqa: E402

SCRIPT = "scenario_graphs"
FULL_MODELS, SMOKE_MODELS = ("2b", "ltx2-19b"), ("tiny-2b", "tiny-ltx2")
MODES = ("none", "eager", "graphs")
PARTS = ("step", "memory")
CFG_SCALE = 3.0  # LTX-Video's default guidance_scale: the step runs its batch of 2
CYCLE = 8  # distinct per-step inputs (timestep embeddings / sigmas) the timed calls cycle over
VERIFY_DT = -0.5  # the verification call's Euler step: the update must carry the velocity
GATE_FP32 = M.REL_FP32  # float32: the same arithmetic, only op-order rounding may differ
# bf16: a sanity bound, not a precision claim. The modes run the same kernels on the same values, so
# they differ by rounding order at most; a stale buffer, a wrong bucket or a missed copy moves the
# update by its own scale (rel diff ~1).
GATE_BF16 = 1e-2
OVERHEAD_TARGET = 0.02


# -- the timed steps ------------------------------------------------------------------------------

def ltxv_step(model, geo, dtype, executor):
    """(call, verify, flops, dims) for Guidance.step with CFG through ``executor`` (None: plain)."""
    from ltxengine.models.transformer import grid_positions
    from ltxengine.ltx_video import sampling as lv

    dev, cfg = next(model.parameters()).device, model.config
    inp = T.make_inputs(cfg, geo, 2, dev, dtype)  # row 0 negative, row 1 positive
    g = lv.Guidance(model, inp["text"][1:], inp["mask"][1:], inp["text"][:1], inp["mask"][:1], CFG_SCALE, 0.0,
                    executor=executor)
    f, h, w = T.latent_grid(cfg, geo)
    rt, r = T.ltxv_vae_ratios()
    g.set_positions(grid_positions(1, f, h, w, (rt / geo.fps, r, r), device=dev))
    tembs = [g.embed(torch.full((g.batch,), 1000.0 * (1 - i / CYCLE), device=dev)) for i in range(CYCLE)]
    dts = [torch.zeros((), device=dev) for _ in range(CYCLE)]
    x0 = torch.randn(1, f * h * w, cfg.in_channels, generator=torch.Generator(dev).manual_seed(1), device=dev)
    state = {"x": x0.clone(), "i": 0}

    def call():
        i = state["i"] % CYCLE
        state["i"] += 1
        state["x"] = g.step(state["x"], tembs[i], lv.euler_update, dts[i])  # fed back, as in the loop
        return state["x"]

    def verify():
        return {"video": (g.step(x0.clone(), tembs[0], lv.euler_update, torch.tensor(VERIFY_DT, device=dev)) - x0)}

    dims = {"guidance": f"cfg {CFG_SCALE}", "batch": 2, "passes": ["uncond", "cond"], "latent_grid": [f, h, w],
            "video_tokens": f * h * w, "text_tokens": geo.text_tokens, "audio_tokens": 0}
    return call, verify, T.transformer_flops(cfg, f * h * w, geo.text_tokens, 0, 2), dims


def ltx2_step(model, geo, dtype, executor):
    """(call, verify, flops, dims) for the LTX-2 Denoiser with the default guidance through ``executor``."""
    from ltxengine.ltx2.denoise import AUDIO_GUIDANCE, VIDEO_GUIDANCE, Denoiser, ltx2_sigmas

    dev, cfg = next(model.parameters()).device, model.config
    inp = T.make_inputs(cfg, geo, 2, dev, dtype)
    pos = model.prepare_context(inp["text"][1:], inp["audio_text"][1:], inp["mask"][1:])
    neg = model.prepare_context(inp["text"][:1], inp["audio_text"][:1], inp["mask"][:1])
    f, h, w = T.latent_grid(cfg, geo)
    n, na = f * h * w, T.audio_tokens(cfg, geo)
    rope = model.rope(model.video_positions(1, f, h, w, geo.fps, device=dev), model.audio_positions(1, na, device=dev))
    clip = [dataclasses.replace(p, stg_blocks=tuple(min(b, cfg.num_layers - 1) for b in p.stg_blocks))
            for p in (VIDEO_GUIDANCE, AUDIO_GUIDANCE)]  # STG block 29 on the tiny model: its last, as the engine
    den = Denoiser(model, pos, neg, rope, torch.ones(1, n, 1, device=dev), torch.ones(1, na, 1, device=dev),
                   clip[0], clip[1], executor=executor)
    gen = torch.Generator(dev).manual_seed(1)
    xs = [(torch.randn(1, n, cfg.in_channels, generator=gen, device=dev),
           torch.randn(1, na, cfg.audio_in_channels, generator=gen, device=dev)) for _ in range(2)]
    sigmas = [float(s) for s in ltx2_sigmas(CYCLE)[:-1]]
    state = {"i": 0}

    def call():  # new latents every step (two alternating objects): copied in, as in the sampler
        i = state["i"]
        state["i"] += 1
        return den(*xs[i % 2], sigmas[i % CYCLE], i)

    def verify():
        v, a = den(*xs[0], sigmas[0], 0)
        return {"video": v - xs[0][0], "audio": a - xs[0][1]}

    dims = {"guidance": "LTX-2.0 defaults", "batch": len(den.passes), "passes": den.passes, "latent_grid": [f, h, w],
            "video_tokens": n, "text_tokens": geo.text_tokens, "audio_tokens": na}
    return call, verify, T.transformer_flops(cfg, n, geo.text_tokens, na, len(den.passes)), dims


# -- profiler: kernel time per step --------------------------------------------------------------

def _kind(event) -> str:
    kind = getattr(event, "activity_type", None)  # "kernel", "gpu_memcpy", "gpu_memset", ... (newer torch)
    if kind:
        return kind
    name = event.name
    return "gpu_memcpy" if name.startswith("Memcpy") else "gpu_memset" if name.startswith("Memset") else "kernel"


def gpu_time(events) -> dict:
    """Microseconds of device activity in profiler events: kernels apart from copies and memsets
    (GPU-side annotations and host events are left out)."""
    from torch.autograd import DeviceType

    out = {"kernel_us": 0.0, "copy_us": 0.0, "kernels": 0}
    for e in events:
        if getattr(e, "device_type", None) != DeviceType.CUDA:
            continue
        kind, us = _kind(e), e.time_range.elapsed_us()
        if kind == "kernel":
            out["kernel_us"] += us
            out["kernels"] += 1
        elif kind in ("gpu_memcpy", "gpu_memset"):
            out["copy_us"] += us
    return out


def overhead(kernel_ms: float, step_ms: float) -> float:
    """The fraction of a step's wall time in which no kernel runs."""
    if not step_ms > 0:
        raise ValueError(f"overhead: step_ms must be > 0, got {step_ms}")
    return 1.0 - kernel_ms / step_ms


def profile_steps(fn, device: torch.device, steps: int) -> dict:
    """Per-step kernel time, copy time and kernel count over ``steps`` steps, each from an idle
    GPU to an idle GPU, and the profiled steps' own mean time (CUDA events)."""
    from torch.profiler import ProfilerActivity, profile

    times = []
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            times.append(M._once(fn, device))
    t = gpu_time(prof.events())
    return {"steps": steps, "profiled_step_ms": sum(times) / steps, "kernel_ms_per_step": t["kernel_us"] / 1e3 / steps,
            "copy_ms_per_step": t["copy_us"] / 1e3 / steps, "kernels_per_step": t["kernels"] / steps}


# -- the step part --------------------------------------------------------------------------------

def _rel_diff(out: dict, ref: dict) -> float:
    """Largest ||out - ref|| / ||ref|| over the outputs (the references are step updates, not states)."""
    return max(((out[k].float() - ref[k].float()).norm() / ref[k].float().norm().clamp_min(1e-30)).item()
               for k in ref)


def _step_result(mode: str, status: str = "ok", reason: str = "") -> dict:
    return {"impl": mode, "source": None if mode == "none" else f"GraphExecutor({mode!r})", "status": status,
            "reason": reason, "median_ms": None, "p10_ms": None, "p90_ms": None, "min_ms": None, "mean_ms": None,
            "reps": None, "rel_diff_vs_none": None, "tolerance": None, "peak_mem_bytes": None, "capture_seconds": None,
            "capture_bytes": None, "buckets": None, "copies_skipped": None, "profile": None,
            "overhead_outside_kernels": None, "overhead_profiled": None, "overhead_target": None,
            "meets_overhead_target": None}


def _first_call(res: dict, verify, settings) -> dict | None:
    """The verification call's output (graphs: captures the bucket), or None with the failure recorded."""
    try:
        with torch.inference_mode():
            out = verify()
        common.synchronize(settings.device)
        return out
    except Exception as e:  # noqa: BLE001 - e.g. a capture error or out of memory: reported, the others go on
        res.update(status="failed", reason=f"failed: first call raised {common._short(e)}")
        return None


def _gate(res: dict, out: dict, reference: dict | None, tol: float) -> None:
    if reference is None:
        res.update(status="failed", reason="failed: no reference (mode none did not run)")
        return
    res.update(rel_diff_vs_none=_rel_diff(out, reference), tolerance=tol)
    if not res["rel_diff_vs_none"] <= tol:
        res.update(status="failed", reason=f"failed: rel diff vs none {res['rel_diff_vs_none']:.3e} > {tol:g}; "
                                           f"not timed")


def _profile(res: dict, fn, settings, steps: int) -> None:
    if settings.device.type != "cuda" or steps < 1:
        res["profile"] = {"skipped": "no CUDA device" if settings.device.type != "cuda" else "--profile-steps 0"}
        return
    with torch.inference_mode():
        p = profile_steps(fn, settings.device, steps)
    res["profile"] = p
    if res["impl"] == "graphs" and p["kernels_per_step"] == 0:
        p["skipped"] = "the profiler saw no kernel of the graph replay"
        return
    res["overhead_outside_kernels"] = overhead(p["kernel_ms_per_step"], res["median_ms"])
    res["overhead_profiled"] = overhead(p["kernel_ms_per_step"], p["profiled_step_ms"])
    if res["impl"] == "graphs":
        res.update(overhead_target=OVERHEAD_TARGET, meets_overhead_target=res["overhead_outside_kernels"] < OVERHEAD_TARGET)


def bench_step(settings, name: str, dtype, ops, profile: int) -> list[dict]:
    model = M.build(M.TRANSFORMERS[name], settings.device, dtype, ops)
    geo = T.geometry(name, settings.smoke)
    build = ltx2_step if M.is_ltx2(model.config) else ltxv_step
    tol = GATE_FP32 if dtype == torch.float32 else GATE_BF16
    results, fns, executors, reference = {}, {}, {}, None
    for mode in (m for m in MODES if settings.impls is None or m in settings.impls or m == "none"):
        res = results[mode] = _step_result(mode)
        if mode == "graphs" and settings.device.type != "cuda":
            res.update(status="skipped", reason=f"skipped: CUDA graphs need a CUDA device (this run is on "
                                                f"{settings.device.type})")
            print(f"{name} graphs: {res['reason']}")
            continue
        executors[mode] = GraphExecutor(settings.device, mode) if mode != "none" else None
        call, verify, flops, dims = build(model, geo, dtype, executors[mode])
        out = _first_call(res, verify, settings)
        if out is not None and mode == "none":
            reference = out
        elif out is not None:
            _gate(res, out, reference, tol)
        if res["status"] == "ok":
            fns[mode] = call
    _time_modes(results, fns, executors, settings, profile)
    out = list(results.values())
    common.add_ratios(out, {"none": "none"})
    dims.update(model=name, frames=geo.frames, height=geo.height, width=geo.width, fps=geo.fps,
                layers=model.config.num_layers)
    return [common.make_record(settings, r, op="denoise_step", shape=f"{name}-b{dims['batch']}", dims=dims,
                               dtype=dtype, **common.throughput(r, settings.ceilings, flops=flops)) for r in out]


def _time_modes(results: dict, fns: dict, executors: dict, settings, profile: int) -> None:
    """Alternating rounds over the modes that passed, then per mode: one step's peak memory, the
    profile and the executor's bucket statistics."""
    with torch.inference_mode():
        times, errors = M.time_alternating(fns, settings.device, settings.reps, settings.warmup)
    for mode, fn in fns.items():
        res = results[mode]
        if mode in errors:
            res.update(status="failed", reason=f"failed while timing: {errors[mode]}")
            continue
        res.update(common.summarize(times[mode]))
        with torch.inference_mode():
            res["peak_mem_bytes"] = common.peak_memory(fn, settings.device)
        _profile(res, fn, settings, profile)
        if executors[mode] is not None:
            stats = executors[mode].buckets
            res.update(buckets=len(stats), copies_skipped=sum(s.copies_skipped for s in stats))
            if mode == "graphs":
                res.update(capture_seconds=sum(s.capture_seconds for s in stats),
                           capture_bytes=sum(s.capture_bytes for s in stats))


# -- command line ----------------------------------------------------------------------------------

def _gib(v) -> str:
    return "-" if v is None else f"{v / 2 ** 30:.2f}"


def _fmt(v, spec) -> str:
    return "-" if v is None else format(v, spec)


def print_records(records: list[dict]) -> None:
    for r in records:
        head = f"{r['op']:<16} {r['shape']:<26} {r['impl']:<18}"
        if r["status"] != "ok":
            print(f"{head} {r['reason']}")
        elif r["op"] == "denoise_step":
            print(f"{head} median {r['median_ms']:.3f} ms  vs none {_fmt(r['ratio_vs_none'], '.3f')}x  overhead "
                  f"{_fmt(r['overhead_outside_kernels'], '.2%')}  capture {_fmt(r['capture_seconds'], '.2f')} s "
                  f"{_gib(r['capture_bytes'])} GiB  rel diff {_fmt(r['rel_diff_vs_none'], '.1e')}")
        else:
            last = r["runs"][-1]["phases"]
            phases = "  ".join(f"{p} {_gib(v['max_allocated_bytes'])}/{_gib(v['max_reserved_bytes'])}"
                               for p, v in last.items())
            print(f"{head} peak GiB alloc/reserved: {phases}  criterion {r.get('criterion')}")


def make_parser():
    p = common.make_parser(__doc__.splitlines()[0])
    choices = list(FULL_MODELS + SMOKE_MODELS)
    p.add_argument("--models", help=f"comma-separated, from {', '.join(choices)} (default {','.join(FULL_MODELS)}; "
                                    f"with --smoke {','.join(SMOKE_MODELS)})")
    p.add_argument("--parts", default="step,memory", help="step, memory or both (default both)")
    p.add_argument("--profile-steps", type=int, default=3, help="profiled steps per mode (0: no profile)")
    p.add_argument("--kernels", default="auto", choices=M.KERNELS, help="ltxengine's ops backend (default auto)")
    p.add_argument("--executor", default="auto", choices=("auto", "graphs", "eager", "none"),
                   help="the engines' executor in the memory part (default auto: graphs on a GPU)")
    p.add_argument("--runs", type=int, default=2, help="generations per memory configuration (default 2)")
    p.add_argument("--ltxv-steps", type=int, default=8, help="2b steps (8: the distilled timesteps)")
    p.add_argument("--ltxv-guidance", type=float, default=1.0, help="2b guidance_scale (default 1: distilled)")
    p.add_argument("--ltx2-steps", type=int, help="ltx2-19b stage-1 steps (default 40; 3 with --smoke)")
    p.add_argument("--tiling", choices=("none", "spatial", "spatiotemporal"), default="none",
                   help="VAE decode tiling in the memory part (default none; bench/scenario_vae_decode.py's tiles)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    default = SMOKE_MODELS if args.smoke else FULL_MODELS
    models = common.pick_names("--models", args.models, list(FULL_MODELS + SMOKE_MODELS), parser) or list(default)
    parts = common.pick_names("--parts", args.parts, list(PARTS), parser) or list(PARTS)
    common.pick_names("--impls", args.impls, list(MODES), parser)
    for flag, value, low in (("--profile-steps", args.profile_steps, 0), ("--runs", args.runs, 1),
                             ("--ltxv-steps", args.ltxv_steps, 1), ("--ltx2-steps", args.ltx2_steps, 2)):
        if value is not None and value < low:
            parser.error(f"{flag} must be >= {low}, got {value}")
    args.ltx2_steps = args.ltx2_steps or (3 if args.smoke else 40)
    settings = common.settings_from_args(SCRIPT, parser, args, models, default_reps=10, ceilings=("matmul",))
    dtype = torch.float32 if args.smoke else torch.bfloat16
    ops, why = common.resolve_backend(args.kernels, settings.device)
    if ops is None:
        parser.error(f"--kernels {args.kernels}: {why}")
    records = []
    for name in models:
        if "step" in parts:
            records += bench_step(settings, name, dtype, ops, args.profile_steps)
            M.release()
        if "memory" in parts:
            records += bench_memory(settings, name, dtype, ops, args)
    path = common.append_results(settings.results_path, records)
    if settings.device.type == "cpu":
        print("device cpu (smoke run): timings check the harness only; no GPU memory or overhead figures")
    print_records(records)
    print(f"{len(records)} records appended to {path}")
    return 1 if any(r["status"] == "failed" for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
