"""Console entry point ``ltxengine``: generate, info, demo."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def _dtype(name: str):
    import torch

    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if name not in table:
        raise SystemExit(f"--dtype must be one of {sorted(table)}, got {name!r}")
    return table[name]


def _read_image(path: str):
    """First frame of an image or video file, as uint8 (H, W, 3), decoded with PyAV."""
    import av

    try:
        with av.open(path) as container:
            frame = next(container.decode(video=0))
            return frame.to_ndarray(format="rgb24")
    except (OSError, StopIteration, av.error.FFmpegError) as e:
        raise SystemExit(f"--image: cannot decode {path!r} as an image ({e})") from None


class _Progress:
    """tqdm bars driven by Engine.generate's callback, one per stage."""

    def __init__(self):
        self.bar, self.stage = None, None

    def __call__(self, stage, step, total, **_):
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage, self.bar = stage, tqdm(total=total, desc=stage, unit="step", leave=True)
        self.bar.update(step - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        self.bar = self.stage = None


def _generate(args) -> int:
    from . import DISTILLED_STAGE1_TIMESTEPS, DISTILLED_STAGE2_TIMESTEPS, Engine, TwoStage

    engine = Engine.from_pretrained(args.model, device=args.device, dtype=_dtype(args.dtype),
                                    text_encoder=args.text_encoder, latent_upsampler=args.latent_upsampler,
                                    kernels=args.kernels, quantization=args.quantization,
                                    fp8_attention=args.fp8_attention, executor=args.executor,
                                    offload=tuple(args.offload))
    two = None
    if args.two_stage or args.distilled:
        two = TwoStage(downscale_factor=args.downscale_factor, adain_factor=args.adain_factor,
                       tone_map_compression_ratio=args.tone_map,
                       denoise_strength=0.999 if args.distilled else args.refine_strength,
                       num_inference_steps=args.refine_steps,
                       timesteps=list(DISTILLED_STAGE2_TIMESTEPS) if args.distilled else None)
    progress = None if args.quiet else _Progress()
    start = time.perf_counter()
    try:
        result = engine.generate(
            args.prompt, negative_prompt=args.negative_prompt,
            image=_read_image(args.image) if args.image else None,
            height=args.height, width=args.width, num_frames=args.num_frames, frame_rate=args.frame_rate,
            num_inference_steps=args.steps, guidance_scale=1.0 if args.distilled else args.guidance_scale,
            guidance_rescale=args.guidance_rescale,
            timesteps=list(DISTILLED_STAGE1_TIMESTEPS) if args.distilled else None,
            decode_timestep=args.decode_timestep, decode_noise_scale=args.decode_noise_scale, seed=args.seed,
            two_stage=two, callback=progress, output=args.output)  # streamed to the file while decoding
    finally:
        if progress is not None:
            progress.close()
    out = Path(args.output)
    torch_note = f"{engine.device}, {str(engine.dtype).replace('torch.', '')}"
    print(f"{out}: {result.video.shape[0]} frames {result.video.shape[2]}x{result.video.shape[1]} @ "
          f"{result.fps} fps, seed {result.seed}, {time.perf_counter() - start:.1f}s ({torch_note})")
    return 0


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
    return {p.stem: p for p in sorted(root.glob("*.py")) if p.stem.startswith(("ops_", "scenario_"))}


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

    from . import Engine, TwoStage
    from .demo import write_demo_checkpoint

    if (args.frames - 1) % 8:
        raise SystemExit(f"demo: --frames must be 8k+1 (e.g. 9, 17, 25), got {args.frames}")
    if args.height % 64 or args.width % 64:
        raise SystemExit(f"demo: --height and --width must be multiples of 64 (two stages of 32-pixel latents), "
                         f"got {args.height}x{args.width}")
    start = time.perf_counter()
    if args.family == "ltx-2":
        return _demo_ltx2(args, start)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_demo_checkpoint(Path(tmp) / "ltx-video-tiny", seed=args.seed)
        engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
        progress = _Progress()
        try:
            result = engine.generate(
                "a red car drives through the city at night", height=args.height, width=args.width,
                num_frames=args.frames, frame_rate=args.fps, num_inference_steps=args.steps, guidance_scale=3.0,
                decode_timestep=0.05, decode_noise_scale=0.025, seed=args.seed, callback=progress,
                two_stage=TwoStage(downscale_factor=0.5, num_inference_steps=args.steps, denoise_strength=0.5,
                                   tone_map_compression_ratio=0.6))
        finally:
            progress.close()
    out = result.save(args.output)
    t = result.timings
    params = sum(p.numel() for p in engine.transformer.parameters())
    print(f"demo: tiny random-weight LTX-Video ({params:,} transformer parameters), two-stage "
          f"{args.height // 2}x{args.width // 2} -> {args.height}x{args.width}: text {t['text']:.2f}s, "
          f"stage 1 {t['denoise']:.2f}s, stage 2 {t['refine']:.2f}s, decode {t['decode']:.2f}s; "
          f"{time.perf_counter() - start:.1f}s in all -> {out} ({result.video.shape[0]} frames @ {result.fps} fps)")
    return 0


def _demo_ltx2(args, start: float) -> int:
    import torch

    from . import Engine
    from .demo import write_demo_ltx2_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_demo_ltx2_checkpoint(Path(tmp) / "ltx-2-tiny", seed=args.seed)
        engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
        progress = _Progress()
        try:
            result = engine.generate("a red car drives through the city at night", height=args.height,
                                     width=args.width, num_frames=args.frames, frame_rate=args.fps,
                                     num_inference_steps=args.steps, seed=args.seed, callback=progress,
                                     max_sequence_length=64)
        finally:
            progress.close()
    out = result.save(args.output)
    t = result.timings
    params = sum(p.numel() for p in engine.transformer.parameters())
    print(f"demo: tiny random-weight LTX-2 ({params:,} transformer parameters), two-stage video + audio "
          f"{args.height // 2}x{args.width // 2} -> {args.height}x{args.width}: text {t['text']:.2f}s, "
          f"stage 1 {t['denoise']:.2f}s, stage 2 {t['refine']:.2f}s, decode {t['decode']:.2f}s; "
          f"{time.perf_counter() - start:.1f}s in all -> {out} ({result.video.shape[0]} frames @ {result.fps} fps, "
          f"{result.audio.shape[0]}-channel {result.sample_rate} Hz AAC)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ltxengine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate a video from a checkpoint")
    gen.add_argument("--model", required=True, help="diffusers folder, single-file .safetensors or HF repo id")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--negative-prompt", default=None)
    gen.add_argument("--output", default="out.mp4")
    gen.add_argument("--image", default=None, help="image-to-video: first frame (any image/video file PyAV reads)")
    gen.add_argument("--height", type=int, default=512)
    gen.add_argument("--width", type=int, default=704)
    gen.add_argument("--num-frames", type=int, default=121)
    gen.add_argument("--frame-rate", default="25", help="e.g. 25, 24, 24000/1001")
    gen.add_argument("--steps", type=int, default=50)
    gen.add_argument("--guidance-scale", type=float, default=3.0)
    gen.add_argument("--guidance-rescale", type=float, default=0.0)
    gen.add_argument("--decode-timestep", type=float, default=0.05)
    gen.add_argument("--decode-noise-scale", type=float, default=0.025)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--two-stage", action="store_true", help="reduced size -> latent upsampler x2 -> refine")
    gen.add_argument("--distilled", action="store_true",
                     help="distilled 0.9.7/0.9.8 recipe: two stages with the distilled timesteps, no guidance")
    gen.add_argument("--downscale-factor", type=float, default=2 / 3)
    gen.add_argument("--adain-factor", type=float, default=1.0)
    gen.add_argument("--tone-map", type=float, default=0.0, help="tone_map_compression_ratio (0.6 for 0.9.8)")
    gen.add_argument("--refine-strength", type=float, default=0.4)
    gen.add_argument("--refine-steps", type=int, default=10)
    gen.add_argument("--text-encoder", default=None, help="T5 location for single-file checkpoints")
    gen.add_argument("--latent-upsampler", default=None, help="x2 latent upsampler (folder or .safetensors)")
    gen.add_argument("--device", default=None)
    gen.add_argument("--dtype", default="bf16")
    gen.add_argument("--kernels", default="auto", help="auto | torch | triton | cuda")
    gen.add_argument("--quantization", default=None, choices=("fp8-cast", "fp8-scaled-mm"),
                     help="fp8 transformer weights: fp8-cast (fp8 storage, compute in --dtype) or fp8-scaled-mm "
                          "(fp8 GEMM, Ada/Hopper); fp8 checkpoints keep fp8 storage without it")
    gen.add_argument("--fp8-attention", action="store_true",
                     help="q/k/v of every attention in e4m3 (opt-in: ~5%% relative error per attention)")
    gen.add_argument("--executor", default="auto", choices=("auto", "graphs", "eager", "none"),
                     help="the denoising step: CUDA graphs (auto on CUDA), static buffers only, or plain calls")
    gen.add_argument("--offload", action="append", default=[],
                     choices=("text_encoder", "latent_upsampler", "vae_encoder"),
                     help="keep this component in host memory, on the device only while used (repeatable)")
    gen.add_argument("--quiet", action="store_true", help="no progress bars")

    info = sub.add_parser("info", help="what a checkpoint holds (family, version, components, dtypes)")
    info.add_argument("path")
    info.add_argument("--json", action="store_true")

    demo = sub.add_parser("demo", help="two-stage generation with a tiny random-weight checkpoint (no download)")
    demo.add_argument("--output", default="demo.mp4")
    demo.add_argument("--family", choices=("ltx-video", "ltx-2"), default="ltx-video",
                      help="ltx-2: the two-stage video-and-audio path (the mp4 gets an AAC track)")
    demo.add_argument("--frames", type=int, default=25)
    demo.add_argument("--height", type=int, default=128)
    demo.add_argument("--width", type=int, default=192)
    demo.add_argument("--steps", type=int, default=4)
    demo.add_argument("--fps", default="24")
    demo.add_argument("--seed", type=int, default=0)

    bench = sub.add_parser("bench", help="run a benchmark of bench/ (a source checkout): 'list' names them")
    bench.add_argument("name", help="a script of bench/ without .py (e.g. ops_adaln), a suite ('kernels': every "
                                    "ops_ script; '2b', '13b', 'ltx2': every scenario of that model) or 'list'")
    bench.add_argument("options", nargs=argparse.REMAINDER, help="passed to the script (e.g. --smoke, --reps 50)")

    args = parser.parse_args(argv)
    handler = {"generate": _generate, "info": _info, "demo": _demo, "bench": _bench}[args.command]
    try:
        return handler(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        # bad arguments or files: one clear line instead of a traceback
        print(f"ltxengine {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
