"""Console entry point ``ltxengine``: generate, info, demo, bench.

Every user error exits with status 2 and one line ``ltxengine <command>: error: ...`` naming the
flag; ``generate`` finds bad arguments before it loads the model. SIGTERM is handled like Ctrl-C:
the generation stops, the output's temporary file is removed, and the exit status is 128 + the
signal (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import shlex
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from .cli_generate import Progress
from .cli_options import UsageError, add_arguments, frame_count, frame_rate, number


class Interrupted(KeyboardInterrupt):
    """A termination signal turned into the exception Ctrl-C raises, so every ``finally`` and
    ``except BaseException`` on the way out runs (VideoWriter deletes its temporary file)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def handler(signum, frame):
        signal.signal(signum, signal.SIG_IGN)  # a second SIGTERM must not interrupt the clean-up
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Parser(argparse.ArgumentParser):
    """argparse's errors as one line (generate's usage alone is thirty lines), status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (options: {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" for options whose help does not state its default already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) \
                or action.default == []:
            return text
        return super()._get_help_string(action)


def _info(args) -> int:
    import json

    from .info import describe, format_description

    d = describe(args.path)
    print(json.dumps(d, indent=2) if args.json else format_description(d))
    return 0


# One command per model family: every scenario of bench/ for it (issue 9: the 2B suite must run in
# one call on one GPU).
_BENCH_SUITES = {
    # scenario_fp8 also writes fp8_quality.jsonl (bench/fp8_quality.py: per-layer error, denoise PSNR)
    "2b": [("scenario_transformer", ["--models", "2b"]), ("scenario_fp8", ["--models", "2b"]),
           ("scenario_vae_decode", ["--models", "ltxv-095"]), ("scenario_generate", ["--models", "ltxv-098,ltxv-2b"]),
           ("scenario_graphs", ["--models", "2b"])],
    "13b": [("scenario_transformer", ["--models", "13b"]), ("scenario_fp8", ["--models", "13b"])],
    "ltx2": [("scenario_transformer", ["--models", "ltx2-19b"]), ("scenario_fp8", ["--models", "ltx2-19b"]),
             ("scenario_vae_decode", ["--models", "ltx2"]),
             # one generation is minutes at full size: the verified first calls are the warm-up
             ("scenario_generate", ["--models", "ltx2-19b", "--reps", "2", "--warmup", "0"]),
             ("scenario_graphs", ["--models", "ltx2-19b"])],
}


def _bench_scripts() -> dict[str, Path]:
    """bench/ scripts of the checkout this ltxengine was installed from (bench/ is not installed)."""
    root = Path(__file__).resolve().parents[1] / "bench"
    if not (root / "common.py").is_file():
        raise ValueError(f"bench: benchmarks run from a source checkout (pip install -e .); {root} has none")
    return {p.stem: p for p in sorted(root.glob("*.py"))
            if p.stem.startswith(("ops_", "scenario_")) or p.stem == "roofline"}


def _bench(args) -> int:
    import runpy

    scripts = _bench_scripts()
    if args.name == "list":
        for name, path in scripts.items():
            doc = (runpy.run_path(str(path), run_name="__bench_list__").get("__doc__") or "").strip()
            print(f"{name:24s} {doc.splitlines()[0] if doc else ''}")
        return 0
    suites = {"kernels": [(n, []) for n in scripts if n.startswith("ops_")], **_BENCH_SUITES}
    runs = suites.get(args.name, [(args.name, [])])
    for name, _ in runs:
        if name not in scripts:
            raise ValueError(f"bench: name must be one of {['list', *suites, *scripts]}, got {args.name!r}")
    status = 0
    for name, models in runs:
        main = runpy.run_path(str(scripts[name]), run_name="__bench__")["main"]
        # --smoke picks each script's tiny models; the suite's full-size names would not fit a CPU
        options = args.options if "--smoke" in args.options else [*models, *args.options]
        status = max(status, main(options) or 0)
    return status


def _demo(args) -> int:
    import torch

    from . import Engine
    from .cli_generate import check_output
    from .demo import write_demo_checkpoint, write_demo_ltx2_checkpoint

    check_output(args.output)
    keep = _keep_folder(args.keep) if args.keep is not None else None
    start = time.perf_counter()
    ltx2 = args.family.startswith("ltx-2")
    with tempfile.TemporaryDirectory() as tmp:
        folder = keep or Path(tmp) / (f"{args.family}-tiny" if ltx2 else "ltx-video-tiny")
        version = {"ltx-2": "2.0", "ltx-2.3": "2.3", "ltx-2.5": "2.5"}.get(args.family)
        write = functools.partial(write_demo_ltx2_checkpoint, version=version) if ltx2 else write_demo_checkpoint
        _write_demo(write, folder, args.seed, keep)
        engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
        progress = Progress()
        try:
            result = engine.generate(_DEMO_PROMPT, **_demo_call(args), callback=progress)
        finally:
            progress.close()
    out = result.save(args.output)
    t = result.timings
    params = sum(p.numel() for p in engine.transformer.parameters())
    what = ("LTX-2" if version == "2.0" else f"LTX-{version}") if ltx2 else "LTX-Video"
    sound = f", {result.audio.shape[0]}-channel {result.sample_rate} Hz AAC" if ltx2 else ""
    print(f"demo: tiny random-weight {what} ({params:,} transformer parameters), two-stage "
          f"{'video + audio ' if ltx2 else ''}{args.height // 2}x{args.width // 2} -> {args.height}x{args.width}: "
          f"text {t['text']:.2f}s, stage 1 {t['denoise']:.2f}s, stage 2 {t['refine']:.2f}s, decode "
          f"{t['decode']:.2f}s; {time.perf_counter() - start:.1f}s in all -> {out} ({result.video.shape[0]} frames "
          f"@ {result.fps} fps{sound})")
    if keep is not None:
        print(_next_steps(args, keep))
    return 0


_DEMO_PROMPT = "a red car drives through the city at night"


def _demo_call(args) -> dict:
    """The demo's generate() arguments; ``_next_steps`` prints the same generation as a command."""
    from . import TwoStage

    common = dict(height=args.height, width=args.width, num_frames=args.frames, frame_rate=args.fps,
                  num_inference_steps=args.steps, seed=args.seed)
    if args.family.startswith("ltx-2"):
        from .ltx2.engine import LTX2TwoStage
        # two-stage (the folder has a latent upsampler); no distilled LoRA exists for random weights
        # 256 tokens: the default negative prompt is ~190 of the demo tokenizer's (64 truncated it, with a warning)
        return dict(common, max_sequence_length=256, two_stage=LTX2TwoStage(lora_strength=0.0))
    return dict(common, guidance_scale=3.0, decode_timestep=0.05, decode_noise_scale=0.025,
                two_stage=TwoStage(downscale_factor=0.5, num_inference_steps=args.steps, denoise_strength=0.5,
                                   tone_map_compression_ratio=0.6))


def _next_steps(args, folder: Path) -> str:
    q = shlex.quote
    out = Path(args.output).with_name(Path(args.output).stem + "-again.mp4")
    cmd = (f"ltxengine generate --model {q(str(folder))} --prompt {q(_DEMO_PROMPT)} --height {args.height} "
           f"--width {args.width} --num-frames {args.frames} --frame-rate {args.fps} --steps {args.steps} "
           f"--seed {args.seed} --dtype fp32 --device cpu ")
    cmd += ("--pipeline two-stage --max-sequence-length 256" if args.family.startswith("ltx-2") else
            f"--two-stage --downscale-factor 0.5 --refine-steps {args.steps} --refine-strength 0.5 --tone-map 0.6")
    return (f"demo: the checkpoint stays in {folder}; try\n  ltxengine info {q(str(folder))}\n"
            f"  {cmd} --output {q(str(out))}\n(the same video as the demo's, from the command line)")


def _keep_folder(text: str) -> Path:
    folder = Path(text).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"--keep: {text!r} exists and is not an empty folder (the demo checkpoint needs one)")
    if not folder.parent.is_dir():
        raise UsageError(f"--keep: the folder {str(folder.parent)!r} does not exist")
    return folder


def _write_demo(write, folder: Path, seed: int, keep: Path | None) -> None:
    existed = folder.exists()
    try:
        write(folder, seed=seed)
    except BaseException:
        if keep is not None:  # no half-written checkpoint left behind
            import shutil
            shutil.rmtree(folder, ignore_errors=True)
            if existed:
                folder.mkdir()
        raise


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="ltxengine", description="Lightricks' LTX-Video and LTX-2 models: generate videos (with "
                                                   "audio for LTX-2), inspect checkpoints, run the demo or benchmarks.",
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"ltxengine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser("generate", help="generate a video (LTX-Video) or a video with audio (LTX-2)",
                         formatter_class=_HelpFormatter,
                         description="Generate a video from an LTX-Video or LTX-2 checkpoint; the family is read "
                                     "from the checkpoint, and options of the other family are refused.")
    add_arguments(gen)

    info = sub.add_parser("info", help="what a checkpoint holds (family, version, components, parameters, dtypes)",
                          formatter_class=_HelpFormatter)
    info.add_argument("path", help="a diffusers folder or a .safetensors file (headers and configs only are read)")
    info.add_argument("--json", action="store_true", help="print the description as JSON")

    demo = sub.add_parser("demo", help="two-stage generation with a tiny random-weight checkpoint (no download)",
                          formatter_class=_HelpFormatter)
    demo.add_argument("--output", default="demo.mp4", help="the .mp4 to write")
    demo.add_argument("--family", choices=("ltx-video", "ltx-2", "ltx-2.3", "ltx-2.5"), default="ltx-video",
                      help="ltx-2: the two-stage video-and-audio path (the mp4 gets an AAC track); ltx-2.3 / "
                           "ltx-2.5: the same with those releases' layouts (48 kHz audio; 2.5: Gemma 4)")
    demo.add_argument("--frames", type=frame_count, default=25, help="8k+1 frames")
    demo.add_argument("--height", type=number(int, 64, multiple=64), default=128,
                      help="pixels, a multiple of 64 (two stages of 32-pixel latents)")
    demo.add_argument("--width", type=number(int, 64, multiple=64), default=192, help="pixels, a multiple of 64")
    demo.add_argument("--steps", type=number(int, 2), default=4, help="denoising steps per stage")
    demo.add_argument("--fps", type=frame_rate, default="24", help="frame rate, e.g. 24 or 24000/1001")
    demo.add_argument("--seed", type=number(int, 0, 2 ** 64 - 1), default=0, help="random seed")
    demo.add_argument("--keep", metavar="DIR", help="write the demo checkpoint to DIR (new or empty) and keep it, "
                                                    "to try `ltxengine info` and `ltxengine generate` on (default: "
                                                    "a temporary folder, deleted)")

    bench = sub.add_parser("bench", help="run a benchmark of bench/ (a source checkout): 'list' names them",
                           formatter_class=_HelpFormatter)
    bench.add_argument("name", help="a script of bench/ without .py (e.g. ops_adaln), a suite ('kernels': every "
                                    "ops_ script; '2b', '13b', 'ltx2': every scenario of that model) or 'list'")
    bench.add_argument("options", nargs=argparse.REMAINDER, help="passed to the script (e.g. --smoke, --reps 50)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)  # argparse's own errors exit 2 with "ltxengine <command>: error:"
    from .cli_generate import run

    handler = {"generate": run, "info": _info, "demo": _demo, "bench": _bench}[args.command]
    try:
        with _sigterm_as_interrupt():
            return handler(args)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Interrupted): the clean-up has run on the way here
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"ltxengine {args.command}: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    except (ValueError, OSError) as e:
        # bad arguments or files: one clear line instead of a traceback
        print(f"ltxengine {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
