"""``ltxengine generate`` for both model families: the options, their checks, the engine calls.

LTX-Video options follow diffusers' LTX pipelines. LTX-2 options follow Lightricks' ltx-pipelines
1.0.0 command lines (``ti2vid_two_stages``, ``distilled``, ``ti2vid_one_stage``,
``a2vid_two_stage``) under their names where they have one: ``--gemma-root``,
``--spatial-upsampler-path``, ``--distilled-lora PATH [STRENGTH]``, ``--image PATH FRAME STRENGTH
[CRF]``, ``--video-cfg-guidance-scale`` ... The family is read from the checkpoint's headers (the
test ``Engine.from_pretrained`` dispatches on) before anything loads, so an option of the other
family, a missing file, an impossible size or a bad guidance value is refused first; the engine's
own checks run as the last word, and their messages are given back with the CLI's flag names.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from .cli_latents import latent_arguments, write_latents
from .cli_options import (DEFAULTS, GUIDANCE_FIELDS, HINTS, IC_LORA_FLAGS, LTX2_ONLY, LTX_VIDEO_ONLY, RETAKE_FLAGS,
                          UsageError, flag_message, guidance_flags)

# the LTX-2 pipelines without stage 2 (no upsampler, sides of 32)
ONE_STAGE_LTX2 = ("one-stage", "retake", "text-to-audio")


# -- checks before loading --------------------------------------------------------------------------

def check_device(name: str | None):
    import torch
    if name is None:
        return None
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"--device: {name!r} is not a device name ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch has no CUDA build" if torch.version.cuda is None else "no GPU is visible"
            raise UsageError(f"--device {name}: CUDA is not available ({why}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices")
    elif dev.type != "cpu":
        raise UsageError(f"--device must be cpu, cuda or cuda:N, got {name!r}")
    return dev


def check_output(text: str, audio_only: bool = False) -> Path:
    path = Path(text).expanduser()
    if audio_only and path.suffix.lower() != ".wav":  # --pipeline text-to-audio
        raise UsageError(f"--output must name a .wav file for --pipeline text-to-audio (audio alone, 16-bit PCM), "
                         f"got {text!r}")
    if not audio_only and path.suffix.lower() != ".mp4":
        raise UsageError(f"--output must name an .mp4 file (the only container written: H.264, with AAC for "
                         f"LTX-2), got {text!r}")
    if path.is_dir():
        raise UsageError(f"--output {text!r} is a folder, expected a file name")
    if not path.parent.is_dir():
        raise UsageError(f"--output: the folder {str(path.parent)!r} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(f"--output: the folder {str(path.parent)!r} is not writable")
    return path


def check_paths(args) -> None:
    for dest, flag in (("components", "--components"), ("text_encoder", "--text-encoder"),
                       ("latent_upsampler", "--latent-upsampler"),
                       ("audio", "--audio-path"), ("video", "--video")):
        value = getattr(args, dest)
        if value is not None and not Path(value).expanduser().exists():
            raise UsageError(f"{flag}: {value!r} does not exist")


def resolve_model(model: str) -> Path:
    from .loading.sources import resolve_source
    try:
        return resolve_source(model, None, False)  # a local path as is; a repo id is downloaded
    except FileNotFoundError as e:
        raise UsageError(flag_message(str(e))) from None


def config_source(args, path: Path) -> Path:
    """What says the family, release and block count: a .gguf --model's --components, else the model."""
    from .loading.gguf import is_gguf
    if not is_gguf(path):
        if args.components is not None:
            raise UsageError(f"--components: only a .gguf --model takes it, got --model {args.model!r}")
        return path
    if args.components is None:
        raise UsageError(f"--components: {args.model!r} is a GGUF holding the transformer alone; pass --components "
                         "PATH (a diffusers folder or Lightricks single file with its config and the other components)")
    return Path(args.components).expanduser()


def _given(args) -> set[str]:
    return {k for k, v in vars(args).items() if v is not None and v is not False and v != []}


def settle(args, family: str, path: Path) -> None:
    """Refuse the other family's options and inconsistent combinations; fill the family's defaults."""
    given = _given(args)
    other = LTX2_ONLY if family == "LTX-Video" else LTX_VIDEO_ONLY
    for dest in sorted(given & set(other)):
        hint = f" ({HINTS[dest]})" if dest in HINTS else ""
        raise UsageError(f"{other[dest]} is an {'LTX-2' if family == 'LTX-Video' else 'LTX-Video'} option; "
                         f"{args.model} is an {family} checkpoint{hint}")
    for dest, value in DEFAULTS[family].items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    upsampler = args.latent_upsampler is not None or (path.is_dir() and (path / "latent_upsampler").is_dir())
    if family == "LTX-Video":
        _settle_ltx_video(args, given, upsampler)
    else:  # the spatial upscaler's kind from its config: 64 for x2, 96 for x1.5, None without one
        from .loading.ltx2_upsamplers import two_stage_multiple
        _settle_ltx2(args, given, two_stage_multiple(path, args.latent_upsampler))
    for image in args.images or ():
        if image.frame is not None and image.frame >= args.num_frames:
            raise UsageError(f"--image {image.path}: FRAME must be < --num-frames ({args.num_frames}), got "
                             f"{image.frame}")


def _refuse(given: set[str], dests, why: str) -> None:
    flags = {"steps": "--steps", "adain_factor": "--adain-factor", "tone_map": "--tone-map",
             "distilled_lora": "--distilled-lora", **LTX_VIDEO_ONLY}
    for dest in dests:
        if dest in given:
            raise UsageError(f"{flags[dest]}: {why}")


def _settle_ltx_video(args, given: set[str], upsampler: bool) -> None:
    two = args.two_stage or args.distilled
    if not two:
        _refuse(given, ("downscale_factor", "refine_strength", "refine_steps", "adain_factor", "tone_map"),
                "configures stage 2, which only --two-stage and --distilled run")
    elif not upsampler:
        flag = "--distilled" if args.distilled else "--two-stage"
        raise UsageError(f"{flag} needs a latent upsampler: pass --latent-upsampler PATH (the checkpoint has no "
                         f"latent_upsampler/ folder)")
    if args.distilled:
        _refuse(given, ("steps", "guidance_scale", "guidance_rescale", "refine_strength", "refine_steps"),
                "--distilled runs the fixed distilled schedules without guidance; leave it out")
    if any(image.crf is not None for image in args.images or ()):
        raise UsageError("--image CRF: LTX-Video uses condition images as they are (the H.264 round trip is "
                         "LTX-2's); give PATH FRAME STRENGTH")


def _settle_ltx2(args, given: set[str], multiple: int | None) -> None:
    chosen = [m for m, on in (("two-stage", args.two_stage), ("distilled", args.distilled)) if on]
    if len(chosen) > 1 or (args.pipeline and chosen and chosen != [args.pipeline]):
        picked = ([f"--pipeline {args.pipeline}"] if args.pipeline else []) + [f"--{m}" for m in chosen]
        raise UsageError(f"{' and '.join(picked)}: choose one pipeline")
    mode = args.pipeline or (chosen[0] if chosen else "two-stage" if multiple is not None else "one-stage")
    named = f"--pipeline {mode}" if args.pipeline else f"--{mode}" if chosen else f"the {mode} pipeline"
    if mode not in ONE_STAGE_LTX2:
        if multiple is None:
            raise UsageError(f"{named} needs the spatial latent upsampler: pass --spatial-upsampler-path PATH "
                             f"(the checkpoint has no latent_upsampler/ folder)")
        for flag, value in (("--height", args.height), ("--width", args.width)):
            if value % multiple:
                raise UsageError(f"{flag} must be a multiple of {multiple} for {named} (stage 1 runs at "
                                 f"{'half' if multiple == 64 else '2/3 of'} the size), got {value}")
    else:
        _refuse(given, ("distilled_lora", "adain_factor", "tone_map"),
                "configures stage 2, which the one-stage pipeline does not have")
    if mode in ("distilled", "ic-lora"):
        _refuse(given, ("steps",), f"--pipeline {mode} runs the fixed 8-sigma distilled schedule; leave it out")
    elif args.steps is not None and args.steps < 2:
        raise UsageError(f"--steps must be >= 2 for LTX-2's stretched schedule, got {args.steps}")
    if mode == "two-stage-hq" and args.sampler not in (None, "res2s"):
        raise UsageError(f"--sampler: --pipeline two-stage-hq samples with res2s in both stages, got {args.sampler}")
    if mode != "two-stage-hq" and "stage1_lora_strength" in given:
        raise UsageError(f"--distilled-lora-strength-stage-1: only --pipeline two-stage-hq fuses the distilled LoRA in "
                         f"stage 1, got {named}")
    args.pipeline = mode
    if mode == "retake":
        _settle_retake(args, given)
    elif given & set(RETAKE_FLAGS):
        flag = RETAKE_FLAGS[min(given & set(RETAKE_FLAGS))]
        raise UsageError(f"{flag}: only --pipeline retake reads it, got {named}")
    if mode == "ic-lora" and args.video_conditioning is None:
        raise UsageError("--pipeline ic-lora needs --video-conditioning PATH STRENGTH (a reference video for the "
                         "IC-LoRA given with --lora)")
    if mode != "ic-lora" and given & set(IC_LORA_FLAGS):
        raise UsageError(f"{IC_LORA_FLAGS[min(given & set(IC_LORA_FLAGS))]}: only --pipeline ic-lora reads it, got "
                         f"{named}")
    images = args.images or ()
    crfs = {image.crf for image in images if image.crf is not None}
    if len(crfs) > 1:
        raise UsageError(f"--image CRF: LTX-2 round-trips every condition image at one CRF, got {sorted(crfs)}")
    if sum((image.frame or 0) == 0 for image in images) > 1:
        raise UsageError("--image: at most one image may condition frame 0 (a plain PATH is frame 0)")
    _settle_audio(args, given)


def _settle_retake(args, given: set[str]) -> None:
    """--video is required; the clip's size, frame count and rate are the output's (the engine
    requires they match: filled in here unless given)."""
    if args.video is None:
        raise UsageError("--pipeline retake needs --video PATH (the clip to retake)")
    frames, height, width, fps, has_audio = _clip_metadata(Path(args.video).expanduser())
    for dest, value in (("num_frames", frames), ("height", height), ("width", width), ("frame_rate", fps)):
        if dest not in given:
            setattr(args, dest, value)
    if args.regenerate_audio is False and not has_audio:
        raise UsageError(f"--no-regenerate-audio keeps the clip's audio, but {args.video!r} has no audio track")


def _clip_metadata(path: Path):
    """-> (frames, height, width, fps, has audio) of a clip (ltx-pipelines' get_videostream_metadata:
    the stream's frame count, else the frames decoded)."""
    import av
    from fractions import Fraction
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = stream.frames or sum(1 for _ in container.decode(stream))
            ctx = stream.codec_context
            return frames, ctx.height, ctx.width, Fraction(stream.average_rate), bool(container.streams.audio)
    except (OSError, IndexError, av.error.FFmpegError) as e:
        raise UsageError(f"--video: cannot read {str(path)!r} as a video ({e or type(e).__name__})") from None


def _settle_audio(args, given: set[str]) -> None:
    if args.audio is None:
        _refuse_audio(given, ("audio_start", "audio_max_duration"), "needs --audio-path")
        return
    audio_guidance = [f"audio_{k}" for k in GUIDANCE_FIELDS]
    _refuse_audio(given, audio_guidance, "the audio is given with --audio-path, not generated, so it is not guided")
    video_s = args.num_frames / args.frame_rate
    if args.audio_max_duration is not None and args.audio_max_duration < video_s:
        raise UsageError(f"--audio-max-duration {args.audio_max_duration:g} s is shorter than the video "
                         f"({args.num_frames} frames at {args.frame_rate} fps = {float(video_s):.3f} s): the whole "
                         f"video follows the given audio")


def _refuse_audio(given: set[str], dests, why: str) -> None:
    for dest in dests:
        if dest in given:
            raise UsageError(f"{LTX2_ONLY[dest]}: {why}")


# -- inputs, read before loading ---------------------------------------------------------------------

def read_image(path: Path):
    """First frame of an image or video file, as uint8 (H, W, 3), decoded with PyAV."""
    import av

    try:
        with av.open(str(path)) as container:
            return next(container.decode(video=0)).to_ndarray(format="rgb24")
    except (OSError, StopIteration, av.error.FFmpegError) as e:
        raise UsageError(f"--image: cannot decode {str(path)!r} as an image ({e})") from None


def read_audio_input(args) -> dict[str, Any]:
    """generate()'s audio arguments: the file, its start and maximum duration (the engine reads
    that window, as ltx-pipelines' a2vid_two_stage); the file is checked for an audio stream here."""
    import av

    path = Path(args.audio).expanduser()
    try:
        with av.open(str(path)) as container:
            streams = len(container.streams.audio)
    except (OSError, av.error.FFmpegError) as e:
        raise UsageError(f"--audio-path: cannot read {args.audio!r} ({e})") from None
    if not streams:
        raise UsageError(f"--audio-path: {args.audio!r} has no audio stream")
    return {"audio": str(path), "audio_start": args.audio_start or 0.0, "audio_max_duration": args.audio_max_duration}


def guidance(args, modality: str, layers: int | None, release: str = "2.0"):
    """GuidanceParams from the --{modality}-* flags over the pipeline's defaults (None: none given)."""
    values = {k: getattr(args, f"{modality}_{k}") for k in GUIDANCE_FIELDS}
    values = {k: tuple(v) if k == "stg_blocks" else v for k, v in values.items() if v is not None}
    if not values:
        return None
    from .ltx2.denoise import NO_GUIDANCE
    from .ltx2.releases import RELEASES
    from .ltx2.request import clip_blocks
    # retake is distilled unless --steps asks for the full model
    distilled = args.pipeline == "distilled" or (args.pipeline == "retake" and args.steps is None)
    from .ltx2.recipes import RECIPES
    preset = getattr(RECIPES[args.pipeline].preset, f"{modality}_guidance") if args.pipeline in RECIPES else None
    base = NO_GUIDANCE if distilled else preset or RELEASES[release].guidance(modality)
    params = replace(clip_blocks(base, layers) if layers else base, **values)
    if layers:
        try:
            params.check(f"{modality}_guidance", layers)
        except ValueError as e:
            raise UsageError(flag_message(str(e), {"stg_blocks": guidance_flags(modality)["stg_blocks"]})) from None
    return params


def ltx_video_call(args, images: list) -> dict[str, Any]:
    from . import DISTILLED_STAGE1_TIMESTEPS, DISTILLED_STAGE2_TIMESTEPS, Condition, TwoStage
    two = None
    if args.two_stage or args.distilled:
        two = TwoStage(downscale_factor=args.downscale_factor, adain_factor=args.adain_factor,
                       tone_map_compression_ratio=args.tone_map,
                       denoise_strength=0.999 if args.distilled else args.refine_strength,
                       num_inference_steps=args.refine_steps,
                       timesteps=list(DISTILLED_STAGE2_TIMESTEPS) if args.distilled else None)
    kw = dict(guidance_scale=1.0 if args.distilled else args.guidance_scale, guidance_rescale=args.guidance_rescale,
              timesteps=list(DISTILLED_STAGE1_TIMESTEPS) if args.distilled else None,
              decode_timestep=args.decode_timestep, decode_noise_scale=args.decode_noise_scale, two_stage=two)
    if len(images) == 1 and args.images[0].frame is None:
        kw["image"] = images[0]
    elif images:
        kw["conditions"] = [Condition(image=image, frame_index=given.frame or 0,
                                      strength=1.0 if given.strength is None else given.strength)
                            for image, given in zip(images, args.images)]
    return kw


def ltx2_call(args, images: list, layers: int | None, release: str = "2.0") -> dict[str, Any]:
    from .ltx2.engine import LTX2TwoStage
    from .components import Condition
    kw: dict[str, Any] = dict(pipeline=args.pipeline, sampler=args.sampler,  # None: the release's
                              video_guidance=guidance(args, "video", layers, release),
                              audio_guidance=guidance(args, "audio", layers, release))
    if args.pipeline not in ONE_STAGE_LTX2:
        kw["two_stage"] = LTX2TwoStage(lora_strength=args.distilled_lora[1] if args.distilled_lora else None,
                                       stage1_lora_strength=args.stage1_lora_strength,
                                       adain_factor=args.adain_factor, tone_map_compression_ratio=args.tone_map)
    for dest in ("decode_timestep", "decode_noise_scale", "decoder", "cross_timestep"):
        if getattr(args, dest) is not None:
            kw[dest] = getattr(args, dest)
    if images:
        kw["conditions"] = [Condition(image=image, frame_index=given.frame or 0,
                                      strength=1.0 if given.strength is None else given.strength)
                            for image, given in zip(images, args.images)]
        crf = next((given.crf for given in args.images if given.crf is not None), None)
        if crf is not None:  # else the release's (33; 18 for 2.5)
            kw["image_crf"] = crf
    if args.audio is not None:
        kw.update(read_audio_input(args))
    if args.pipeline == "retake":
        kw.update({dest: getattr(args, dest) for dest in RETAKE_FLAGS if getattr(args, dest) is not None})
    if args.pipeline == "ic-lora":
        from .components import ReferenceCondition
        kw["reference_conditions"] = [ReferenceCondition(path, s) for path, s in args.video_conditioning]
        if args.conditioning_attention_mask is not None:
            kw["conditioning_attention_mask"], kw["conditioning_attention_strength"] = args.conditioning_attention_mask
    kw.update(latent_arguments(args))  # --latents, --noise-scale, --output-latents (cli_latents.py)
    return kw


# -- the command ------------------------------------------------------------------------------------

class Progress:
    """tqdm bars driven by generate's callback, one per stage."""

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


class Quiet:
    """transformers' and huggingface_hub's logging and progress bars off, restored on exit."""

    def __enter__(self):
        from huggingface_hub import utils as hub
        from transformers.utils import logging
        self._state = (logging.get_verbosity(), logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled())
        logging.set_verbosity_error()
        logging.disable_progress_bar()
        hub.disable_progress_bars()
        return self

    def __exit__(self, *exc):
        from huggingface_hub import utils as hub
        from transformers.utils import logging
        verbosity, bars, hub_off = self._state
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
        if not hub_off:
            hub.enable_progress_bars()
        return False


def parallel_config(args):
    """--sequence-parallel / --guidance-parallel -> a ParallelConfig over torchrun's ranks (None:
    neither given; the engine then reads torchrun's environment, or runs one process)."""
    seq, guid = args.sequence_parallel, args.guidance_parallel
    if seq is None and guid is None:
        return None
    from .parallel.config import ParallelConfig
    try:
        if seq is not None and guid is not None:
            return ParallelConfig(sequence=seq, guidance=guid)
        return ParallelConfig.from_env(sequence=seq, guidance=guid)
    except ValueError as e:
        raise UsageError(f"--sequence-parallel / --guidance-parallel: {e}") from None


def _main_rank() -> bool:
    """Under torchrun only rank 0 prints and writes (every rank computes the same result)."""
    return os.environ.get("RANK", "0") == "0"


def run(args) -> int:
    import contextlib

    import torch

    from .engine import Engine
    from .info import family as family_of, ltx2_release, transformer_layers

    device = check_device(args.device)
    dtype = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}[args.dtype]
    audio_only = args.pipeline == "text-to-audio"
    if audio_only and args.output == "out.mp4":  # the default name, for a WAV
        args.output = "out.wav"
    output = check_output(args.output, audio_only)
    check_paths(args)
    path = resolve_model(args.model)
    source = config_source(args, path)  # a .gguf holds the transformer alone
    family = family_of(source)
    settle(args, family, source)
    images = [read_image(image.path) for image in args.images or ()]
    layers = transformer_layers(source) if family == "LTX-2" else None
    call = (ltx2_call(args, images, layers, ltx2_release(source)) if family == "LTX-2"
            else ltx_video_call(args, images))
    call.update(negative_prompt=args.negative_prompt, height=args.height, width=args.width,
                num_frames=args.num_frames, frame_rate=args.frame_rate, num_inference_steps=args.steps,
                seed=args.seed, output=output)
    if args.max_sequence_length is not None:
        call["max_sequence_length"] = args.max_sequence_length
    with Quiet() if args.quiet else contextlib.nullcontext(), warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            engine = Engine.from_pretrained(
                path, device=device, dtype=dtype, text_encoder=args.text_encoder, components=args.components,
                latent_upsampler=args.latent_upsampler, distilled_lora=args.distilled_lora[0] if args.distilled_lora
                else None, kernels=args.kernels, quantization=args.quantization, fp8_attention=args.fp8_attention,
                executor=args.executor, offload=tuple(args.offload), offload_group_size=args.offload_group_size,
                memory_budget=args.memory_budget,
                parallel=parallel_config(args),
                modalities=("audio",) if audio_only else None)  # text-to-audio: no video weights
        except ValueError as e:
            raise UsageError(flag_message(str(e))) from e
        _load_loras(engine, args.loras or ())
        return _generate(engine, args, call)


def _load_loras(engine, loras) -> None:
    """``--lora PATH [STRENGTH]`` ...: each loaded as an adapter, all active with their strengths."""
    names = []
    for i, (path, strength) in enumerate(loras):
        try:
            names.append(engine.load_lora_weights(path, adapter_name=f"lora_{i}"))
        except ValueError as e:
            raise UsageError(f"--lora {str(path)!r}: {e}") from e
    if names:
        engine.set_adapters(names, [strength for _, strength in loras])


def _show_warning(message, category, *_) -> None:
    """The engine's warnings in the CLI's terms, one line each, as they happen (rank 0's)."""
    if not _main_rank():
        return
    print(f"ltxengine generate: warning: {flag_message(str(message))}", file=sys.stderr)


def _generate(engine, args, call: dict[str, Any]) -> int:
    progress = None if args.quiet or not _main_rank() else Progress()
    start = time.perf_counter()
    if call.get("output_type") == "latent" or args.pipeline == "text-to-audio":  # no mp4 streamed
        call = dict(call, output=None)
    try:
        result = engine.generate(args.prompt, callback=progress, **call)  # streamed to the file while decoding
    except ValueError as e:
        raise UsageError(flag_message(str(e))) from e
    finally:
        if progress is not None:
            progress.close()
    if not _main_rank():  # rank 0 wrote the mp4 (the engine writes it there alone) and saves the rest
        return 0
    where = f"{engine.device}, {str(engine.dtype).replace('torch.', '')}"
    if call.get("output_type") == "latent":
        path = write_latents(result, args.output_latents)
        print(f"{path}: latents {tuple(result.latents.shape)}, audio latents {tuple(result.audio_latents.shape)}, "
              f"seed {result.seed}, {time.perf_counter() - start:.1f}s ({where})")
        return 0
    if result.video is None:  # text-to-audio: the waveform alone, as WAV
        path = result.save(Path(args.output).expanduser())
        print(f"{path}: {result.audio.shape[1] / result.sample_rate:.2f} s of {result.audio.shape[0]}-channel "
              f"{result.sample_rate} Hz audio, seed {result.seed}, {time.perf_counter() - start:.1f}s ({where})")
        return 0
    sound = "" if result.audio is None else f" + {result.audio.shape[0]}-channel {result.sample_rate} Hz audio"
    print(f"{call['output']}: {result.video.shape[0]} frames {result.video.shape[2]}x{result.video.shape[1]} @ "
          f"{result.fps} fps{sound}, seed {result.seed}, {time.perf_counter() - start:.1f}s ({where})")
    return 0
