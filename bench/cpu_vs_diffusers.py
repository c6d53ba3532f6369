"""End to end on the CPU: ltxengine's generate against diffusers' pipeline, same folder, same seed, fp32.

    python bench/cpu_vs_diffusers.py [--families ltxv,ltx2] [--sizes 64x96x9,256x384x25] [--steps 3]
                                     [--reps 5] [--warmup 1] [--out bench/results/cpu_vs_diffusers.md]
    python bench/cpu_vs_diffusers.py --smoke      # one tiny size, one repetition, written to a temp dir
    python bench/cpu_vs_diffusers.py --plan-cache DIR   # twice: the second run's first calls read stored plans

Issue 24's CPU goal: "the engine's end-to-end generation never slower than diffusers' (ratio in one run,
alternating)". The folders are the tiny random-weight ones the parity tests build with diffusers' own
save_pretrained (tests/pipelines/fixtures.py ``tiny-095``: LTXPipeline; tests/pipelines/ltx2_fixtures.py:
LTX2Pipeline, one stage, video + audio, full guidance: CFG, STG, modality isolation, rescale); the engine
loads the same folder, so both sides run the same weights. Per family and size: each side's first call
(the engine's includes its memory plan, traced once per request shape and then cached) is verified --
frames (and LTX-2's waveform) within the parity budget 1e-4 max |d| -- and only then are both timed
alternately (ours, theirs, ours, ...) after ``--warmup`` untimed rounds; medians and the ratio
ours / theirs (< 1: the engine is faster). Host clock, the threads torch uses by default. These are
real measurements of this machine (named in the output); the ratios are the point, not the seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402

BUDGET = 1e-4  # max |d| on [0, 1] frames and on waveforms: tests/pipelines' parity contract
PROMPT, NEGATIVE = "a red car drives fast across the street at night", "blurry video"
FAMILIES = ("ltxv", "ltx2")
SIZES = "64x96x9,256x384x25"
SMOKE_SIZE = "64x64x9"


def parse_size(text: str) -> tuple[int, int, int]:
    """ "HxWxF" -> (height, width, frames); sides multiples of 32, frames 8k+1 (both families' VAEs)."""
    try:
        h, w, f = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--sizes: each size is HEIGHTxWIDTHxFRAMES (e.g. 64x96x9), got {text!r}") from None
    if h % 32 or w % 32 or h <= 0 or w <= 0 or f % 8 != 1:
        raise ValueError(f"--sizes: height and width must be positive multiples of 32 and frames 8k+1, got {text!r}")
    return h, w, f


def build_ltxv(root: Path, steps: int):
    """(ours, theirs) callables of one LTX-Video size: each returns {"frames": (F, H, W, 3) float32}."""
    import diffusers

    import ltxengine
    from tests.pipelines import fixtures as fx

    folder = fx.build_pipeline_folder(root, "tiny-095")
    pipe = diffusers.LTXPipeline.from_pretrained(folder, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    engine = ltxengine.Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)

    def calls(h, w, f):
        kw = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=h, width=w, num_frames=f,
                  num_inference_steps=steps, guidance_scale=3.0)
        ours = lambda: {"frames": torch.from_numpy(engine.generate(seed=0, **kw).frames)}  # noqa: E731
        theirs = lambda: {"frames": fx._frames(pipe(output_type="pt", generator=torch.Generator().manual_seed(0),  # noqa: E731
                                                    **kw).frames)}
        return ours, theirs
    return calls


def build_ltx2(root: Path, steps: int):
    """(ours, theirs) callables of one LTX-2 size: {"frames": (F, H, W, 3), "audio": (samples, channels)}."""
    import ltxengine
    from tests.pipelines import ltx2_fixtures as l2

    pipe, _, folder = l2.build_pipeline(root)
    pipe.set_progress_bar_config(disable=True)
    engine = ltxengine.Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    video_g, audio_g = l2.params(l2.GUIDED), l2.params(l2.GUIDED, "audio_")

    def calls(h, w, f):
        kw = dict(height=h, width=w, num_frames=f, frame_rate=24.0, num_inference_steps=steps)

        def ours():
            r = engine.generate(PROMPT, NEGATIVE, **kw, pipeline="one-stage", video_guidance=video_g,
                                audio_guidance=audio_g, shift_tokens=None, seed=0, max_sequence_length=l2.SEQ)
            return {"frames": torch.from_numpy(r.frames), "audio": torch.from_numpy(np.asarray(r.audio))}

        def theirs():
            with torch.no_grad():
                video, audio = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, generator=torch.Generator().manual_seed(0),
                                    max_sequence_length=l2.SEQ, output_type="np", return_dict=False, **kw, **l2.GUIDED)
            return {"frames": torch.from_numpy(np.asarray(video[0])), "audio": torch.as_tensor(audio[0]).float()}
        return ours, theirs
    return calls


def timed(fn) -> tuple[dict, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def verify(a: dict, b: dict) -> tuple[float, str]:
    """(max |d| over every output, "" or why the outputs disagree)."""
    worst = 0.0
    for k in b:
        if a[k].shape != b[k].shape:
            return float("nan"), f"{k} shape {tuple(a[k].shape)} != diffusers {tuple(b[k].shape)}"
        worst = max(worst, (a[k].float() - b[k].float()).abs().max().item())
    return worst, "" if worst <= BUDGET else f"max |d| {worst:.2e} > {BUDGET:g}"


def bench_size(family: str, size, ours, theirs, reps: int, warmup: int) -> dict:
    """Verify the first calls, then time both alternately; seconds per side and the ratio ours / theirs."""
    row = {"family": family, "size": "x".join(map(str, size))}
    a, row["first_ours_s"] = timed(ours)
    b, row["first_theirs_s"] = timed(theirs)
    row["max_abs_diff"], row["reason"] = verify(a, b)
    if row["reason"]:
        return dict(row, status="failed: not timed")
    times = {"ours": [], "theirs": []}
    for i in range(warmup + reps):
        for name, fn in (("ours", ours), ("theirs", theirs)):
            t = timed(fn)[1]
            if i >= warmup:
                times[name].append(t)
    row.update(status="ok", ours_s=statistics.median(times["ours"]), theirs_s=statistics.median(times["theirs"]))
    row["ratio"] = row["ours_s"] / row["theirs_s"]
    return row


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import diffusers
    env = common.environment()
    return (f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"diffusers {diffusers.__version__}, commit {env.get('commit')}, "
            f"load average {os.getloadavg()[0]:.1f} at the start (a shared machine: alternation keeps the ratio fair)")


def report(rows: list[dict], args, header: str) -> str:
    lines = [f"# ltxengine vs diffusers, end to end on the CPU ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             header, "",
             f"fp32, `--steps {args.steps}`, {args.reps} alternating repetitions after {args.warmup} warm-up round(s), "
             "medians; ratio = ours / theirs (< 1: ltxengine faster). First calls: the engine's includes its memory "
             "plan (traced once per request shape, then cached). Outputs verified first (max |d| <= 1e-4).", "",
             "| family | size (HxWxF) | max abs diff | ltxengine s | diffusers s | ratio | first call ours / theirs s |"
             " status |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        num = (lambda k: f"{r[k]:.3f}" if r.get(k) is not None else "-")  # noqa: E731
        lines.append(f"| {r['family']} | {r['size']} | {r['max_abs_diff']:.1e} | {num('ours_s')} | {num('theirs_s')} | "
                     f"{num('ratio')} | {num('first_ours_s')} / {num('first_theirs_s')} | "
                     f"{r['status']}{': ' + r['reason'] if r['reason'] else ''} |")
    return "\n".join(lines) + "\n"


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default=",".join(FAMILIES), help="comma-separated, from ltxv, ltx2")
    p.add_argument("--sizes", default=SIZES, help=f"comma-separated HxWxF (default {SIZES})")
    p.add_argument("--steps", type=int, default=3, help="denoising steps (default 3)")
    p.add_argument("--reps", type=int, default=5, help="timed alternating rounds (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds after the verified first calls (default 1)")
    p.add_argument("--out", help="the markdown file (default bench/results/cpu_vs_diffusers.md; --smoke: a temp dir)")
    p.add_argument("--smoke", action="store_true", help=f"CI: {SMOKE_SIZE}, 2 steps, 1 repetition, no warm-up")
    p.add_argument("--plan-cache", metavar="DIR",
                   help="LTXENGINE_CACHE_DIR for the engine's on-disk memory plans (default: a fresh temp folder, so "
                        "every first call traces its plan: cold). Run twice with the same DIR: the second run's "
                        "first calls read the plans the first stored (warm disk, a new process)")
    return p


@contextlib.contextmanager
def _plan_cache_dir(path: str):
    """The engine's plan cache folder (ltxengine/executor/plan_cache.py) while the bench runs; never
    the user's ~/.cache, whose plans from earlier runs would make some first calls warm."""
    saved = os.environ.get("LTXENGINE_CACHE_DIR")
    os.environ["LTXENGINE_CACHE_DIR"] = path
    try:
        yield
    finally:
        if saved is None:
            del os.environ["LTXENGINE_CACHE_DIR"]
        else:
            os.environ["LTXENGINE_CACHE_DIR"] = saved


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if not families or any(f not in FAMILIES for f in families):
        parser.error(f"--families: choose from {', '.join(FAMILIES)}, got {args.families!r}")
    if args.smoke:
        args.sizes, args.steps, args.reps, args.warmup = SMOKE_SIZE, 2, 1, 0
    for name in ("steps", "reps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",")]
    except ValueError as e:
        parser.error(str(e))
    out = Path(args.out) if args.out else (Path(tempfile.gettempdir()) / "cpu_vs_diffusers.md" if args.smoke
                                           else REPO / "bench" / "results" / "cpu_vs_diffusers.md")
    header = f"Machine: {machine()}. Memory plans on disk: " + (
        f"{args.plan_cache} (first calls read the plans a previous run stored there)" if args.plan_cache
        else "a fresh folder (cold: first calls trace their plans)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, _plan_cache_dir(args.plan_cache or str(Path(tmp) / "cache")):
        for family in families:
            calls = (build_ltxv if family == "ltxv" else build_ltx2)(Path(tmp), args.steps)
            for size in sizes:
                rows.append(bench_size(family, size, *calls(*size), args.reps, args.warmup))
                print(rows[-1], flush=True)
    text = report(rows, args, header)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_text(text)
    tmp_out.replace(out)  # never a half-written file
    print(text)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
