"""The checked call of ``LTX2Engine.generate``: ``build_request`` checks and normalizes every
argument (GuidanceParams in either spelling, LTX2TwoStage, conditions, audio, tiling), builds stage
1's schedule as its sampler will, and converts what could fail later (the condition images, the
audio's rate and length) before any model work; it returns a frozen ``LTX2Request`` that the
recipes and the memory plan read and never write."""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..checks import (MAX_NUM_FRAMES, MAX_SEQUENCE_LENGTH, MAX_SIDE, MAX_STEPS, call_args, check_conditions,
                      check_decreasing, check_float, check_int, check_random)
from ..components.inputs import Condition
from ..media import AAC_RATES, frame_rate_fraction
from ..models.ltx2_transformer import CROSS_TIMESTEPS
from ..models.video_vae import TilingConfig
from .conditions import condition_video
from .diffusion_decode import check_decoder
from .denoise import NO_GUIDANCE, STAGE2_SIGMAS, GuidanceParams, audio_frames
from .latent_io import check_latent_io
from .recipes import RECIPES, recipe_arguments
from .recipes.two_stage import size_multiple, spatial_scale, stage1_size
from .samplers import check_schedule
from .stages import stage1_sigmas, uint8_image

__all__ = ["DIFFUSERS_GUIDANCE", "LTX2Request", "LTX2TwoStage", "PIPELINES_LTX2", "SAMPLERS", "build_request",
           "clip_blocks"]

PIPELINES_LTX2 = tuple(RECIPES)  # ("two-stage", "distilled", "one-stage")
SAMPLERS = ("euler", "gradient-estimation", "res2s", "euler-ancestral")


@dataclass(frozen=True)
class LTX2TwoStage:
    """Stage 2 of the two-stage pipelines. Defaults are ltx-pipelines': the 3 distilled sigmas,
    re-noising at the first of them, no guidance, the engine's distilled LoRA at strength 1 (the
    pipeline's ``Recipe.preset`` may say otherwise: two-stage-hq fuses it at 0.25 / 0.5)."""

    sigmas: Sequence[float] = STAGE2_SIGMAS
    noise_scale: float | None = None  # None: sigmas[0]
    video_guidance: GuidanceParams = NO_GUIDANCE
    audio_guidance: GuidanceParams = NO_GUIDANCE
    lora_strength: float | None = None  # the distilled LoRA's; None: the pipeline's (1; two-stage-hq 0.5)
    # the distilled LoRA in stage 1 too: None = the pipeline's (none; two-stage-hq 0.25); two-stage-hq only
    stage1_lora_strength: float | None = None
    adain_factor: float = 0.0
    tone_map_compression_ratio: float = 0.0


@dataclass(frozen=True, eq=False)
class LTX2Request:
    """One checked ``generate`` call. Fields keep ``generate``'s names (diffusers' guidance keywords
    are folded into ``video_guidance`` / ``audio_guidance``); resolved ones hold what the call means:
    ``pipeline`` (never None), ``two_stage`` (an LTX2TwoStage: checked, sigmas a tuple and
    noise_scale set, for the two-stage pipelines; the unused default for "one-stage"),
    ``conditions`` (a tuple, ``image`` folded in as frame 0), ``audio`` (a Path, or the waveform
    from ``audio_start`` on), ``sigmas`` (a tuple or None). Derived: ``fps``
    (the exact frame rate), ``images`` (each condition as (uint8 (H, W, 3) or video (F, H, W, 3),
    frame_index, strength)) and ``audio_frames`` (the audio latent frames of the clip)."""

    prompt: str
    negative_prompt: str | None
    image: Any
    conditions: tuple[Condition, ...]
    audio: Any
    height: int
    width: int
    num_frames: int
    frame_rate: Any
    fps: Fraction
    num_inference_steps: int
    sigmas: tuple[float, ...] | None
    video_guidance: GuidanceParams
    audio_guidance: GuidanceParams
    shift_tokens: int | None
    pipeline: str
    two_stage: "LTX2TwoStage | None"
    sampler: str
    image_crf: int
    audio_start: float
    audio_sample_rate: int | None
    decode_timestep: float | None
    decode_noise_scale: float | None
    seed: int | None
    generator: torch.Generator | None
    callback: Callable | None
    max_sequence_length: int
    guidance_batch: int | None
    vae_tiling: TilingConfig | None
    output: Any
    loras: tuple[tuple[str, float], ...] | None
    # recipe-only arguments (``recipes.Recipe.arguments``): None unless the chosen pipeline reads
    # them; its ``Recipe.check`` normalizes them
    video: Any
    start_time: float | None
    end_time: float | None
    regenerate_video: bool | None
    regenerate_audio: bool | None
    reference_conditions: Any
    reference_downscale_factor: int | None
    conditioning_attention_strength: float | None
    conditioning_attention_mask: Any
    # every pipeline: latent in / latent out, the audio-to-video clip length
    latents: Any  # diffusers' form, checked (latent_io.py): (1, C, F', H', W') denormalized, or None
    audio_latents: Any  # (1, C, T, M) denormalized, or None
    noise_scale: float | None  # mixed into the given latents (None: 0, diffusers' default)
    output_type: str | None
    audio_max_duration: float | None
    images: tuple
    audio_frames: int
    decoder: str | None = None  # None / "conv": the VAE's decoder; "diffusion": LTX-2.5's (diffusion_decode.py)
    reference_temporal_scale_factor: int | None = None  # IC-LoRA (recipe-only): references' 1/S time subsampling
    cross_timestep: str | None = None  # the audio<->video tables' convention; None: the release's (releases.py)

    @property
    def recipe(self):
        """The pipeline's ``recipes.Recipe``."""
        return RECIPES[self.pipeline]

    def plan_key(self) -> tuple:
        """What the memory plan depends on (plans are cached per key, in memory and on disk): every
        request field the phases' own trace keys name (plan.py) is here, or one cached plan would
        stand for a request whose step or decode traces other ops."""
        return (self.height, self.width, self.num_frames, self.audio_frames, self.pipeline, self.sampler,
                self.guidance_batch, self.video_guidance, self.audio_guidance, repr(self.two_stage),
                self.max_sequence_length, repr(self.vae_tiling), len(self.conditions), self.image is not None,
                tuple((img.shape[0] if img.ndim == 4 else 1, fi == 0) for img, fi, _ in self.images),
                self.output_type, self.decoder, self._reference_key(), self.cross_timestep, self.fps,
                self.decode_timestep, self.decode_noise_scale)

    def _reference_key(self) -> tuple:
        """IC-LoRA: what its tokens in the plan depend on (frames per reference, factor, masked)."""
        if self.pipeline != "ic-lora":
            return ()
        return (tuple(len(r.video) for r in self.reference_conditions), self.reference_downscale_factor,
                self.conditioning_attention_strength < 1 or self.conditioning_attention_mask is not None)


def build_request(engine, args: dict[str, Any]) -> LTX2Request:
    """``generate``'s arguments (its locals) -> the checked request, or ValueError naming the argument."""
    a = _checked(engine, args)
    a["loras"] = engine.adapters.check_call(a["loras"])
    if a["sigmas"] is not None:
        a["sigmas"] = tuple(a["sigmas"])
    return LTX2Request(**{f.name: a[f.name] for f in fields(LTX2Request)})


def _checked(engine, a: dict[str, Any]) -> dict[str, Any]:
    a = call_args(a)
    # the arguments left at None before the defaults fill them in (a recipe's check may read it)
    a["unset"] = frozenset(k for k, v in a.items() if v is None)
    _apply_preset(engine, a)
    release = engine.release  # the defaults that change between LTX-2 releases (releases.py)
    if a["num_inference_steps"] is None:
        a["num_inference_steps"] = release.num_inference_steps
    if a["image_crf"] is None:
        a["image_crf"] = release.image_crf
    if a["cross_timestep"] is None:
        a["cross_timestep"] = release.cross_timestep
    if a["cross_timestep"] not in CROSS_TIMESTEPS:
        raise ValueError(f"cross_timestep must be one of {CROSS_TIMESTEPS}, got {a['cross_timestep']!r}")
    mode = _check_pipeline(engine, a)
    recipe = RECIPES[mode]
    n = _check_video_size(engine, a, mode)
    _check_guidance(engine, a, recipe.distilled)
    if a["sampler"] is None:  # the release's: 2.5's distilled stage 1 is ancestral (ltx-pipelines distilled.py)
        a["sampler"] = "euler-ancestral" if release.ancestral_distilled and recipe.distilled else "euler"
    if a["sampler"] not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {a['sampler']!r}")
    _check_stage1_schedule(engine, a, mode)
    if recipe.stages == 2:
        a["two_stage"] = _check_two_stage(engine, a["two_stage"], a)
    crf = check_int("image_crf", a["image_crf"], 0)
    if crf > 51:
        raise ValueError(f"image_crf must be in [0, 51] (H.264 CRF; 0 = no re-compression), got {crf}")
    check_int("max_sequence_length", a["max_sequence_length"], 1, MAX_SEQUENCE_LENGTH, "MAX_SEQUENCE_LENGTH")
    if a["guidance_batch"] is not None:
        check_int("guidance_batch", a["guidance_batch"], 1)
    for k in ("decode_timestep", "decode_noise_scale"):
        if a[k] is not None:
            check_float(k, a[k], 0.0, 1.0)
    check_random(a["seed"], a["generator"])
    if a["callback"] is not None and not callable(a["callback"]):
        raise ValueError(f"callback must be callable (stage, step, total, timestep=, latents=), "
                         f"got {a['callback']!r}")
    _check_audio_input(engine, a, n)
    a["conditions"] = tuple(_check_conditions_ltx2(engine, a["image"], a["conditions"], n))
    a["images"] = _condition_images(a)
    a["audio_frames"] = audio_frames(n, float(a["fps"]), engine.audio_vae)
    check_latent_io(engine, a, recipe)
    check_decoder(engine, a)
    if recipe.check is not None:
        recipe.check(engine, a)
    return a


def _check_pipeline(engine, a: dict[str, Any]) -> str:
    audio_only = getattr(engine, "modalities", None) == ("audio",)  # from_pretrained(modalities=("audio",))
    mode = a["pipeline"] or ("text-to-audio" if audio_only else "two-stage" if engine.latent_upsampler is not None
                             else "one-stage")
    if mode not in PIPELINES_LTX2:
        raise ValueError(f"pipeline must be one of {PIPELINES_LTX2} or None, got {mode!r}")
    recipe = RECIPES[mode]
    if audio_only and not recipe.audio_only:
        raise ValueError(f"pipeline={mode!r} generates video, which this engine cannot: it holds the audio stream "
                         f"only (modalities=('audio',)); use pipeline='text-to-audio'")
    for arg, owners in recipe_arguments().items():  # another recipe's argument: refused, not ignored
        if mode not in owners and a[arg] is not None:
            pipelines = " or ".join(f"pipeline={o!r}" for o in owners)
            raise ValueError(f"{arg} is read by {pipelines} only, got {arg}={a[arg]!r} with pipeline={mode!r}")
    if recipe.stages == 2 and engine.latent_upsampler is None:
        raise ValueError(f"pipeline={mode!r} needs the spatial latent upsampler: pass latent_upsampler=PATH to "
                         f"Engine.from_pretrained")
    two = a["two_stage"] if a["two_stage"] is not None else LTX2TwoStage()
    if not isinstance(two, LTX2TwoStage):
        raise ValueError(f"two_stage must be an LTX2TwoStage or None, got {type(two).__name__}")
    if recipe.stages == 1 and a["two_stage"] is not None:
        raise ValueError(f"two_stage= configures stage 2, which pipeline={mode!r} does not have")
    a["pipeline"], a["two_stage"] = mode, two
    return mode


def _apply_preset(engine, a: dict[str, Any]) -> None:
    """The named pipeline's own defaults (``Recipe.preset``) for the arguments the call left unset,
    before the release's defaults and the checks."""
    recipe = RECIPES.get(a["pipeline"]) if isinstance(a["pipeline"], str) else None
    if recipe is None:
        return
    preset = recipe.preset
    for k in ("num_inference_steps", "sampler"):
        if a[k] is None:
            a[k] = getattr(preset, k)
    if preset.own_shift:
        default = inspect.signature(type(engine).generate).parameters["shift_tokens"].default
        if a["shift_tokens"] is not None and a["shift_tokens"] != default:
            raise ValueError(f"shift_tokens: pipeline={a['pipeline']!r} shifts its schedule for the stage-1 video's "
                             f"own token count, as the reference does (leave shift_tokens at {default} or None; "
                             f"pass sigmas= for another schedule), got {a['shift_tokens']!r}")
        a["shift_tokens"] = None


def _check_video_size(engine, a: dict[str, Any], mode: str) -> int:
    """height, width, num_frames, frame_rate and vae_tiling; -> num_frames."""
    if RECIPES[mode].audio_only:  # no video: the duration alone
        from .recipes.text_to_audio import check_duration
        return check_duration(engine, a)
    multiple = 32 if RECIPES[mode].stages == 1 else size_multiple(engine)
    for k in ("height", "width"):
        v = check_int(k, a[k], multiple, MAX_SIDE, "MAX_SIDE")
        if v % multiple:
            rule = ("the VAE's 32x32" if multiple == 32 else "two-stage pipelines generate stage 1 at half size"
                    if multiple == 64 else f"stage 1 runs at 1/{spatial_scale(engine):g} of the size for the "
                    f"x{spatial_scale(engine):g} upscaler, on whole latents that it scales exactly")
            raise ValueError(f"{k} must be a multiple of {multiple} for pipeline={mode!r} ({rule}), got {v}")
    n = check_int("num_frames", a["num_frames"], 1, MAX_NUM_FRAMES, "MAX_NUM_FRAMES")
    if (n - 1) % 8:
        raise ValueError(f"num_frames must be of the form 8k+1 (e.g. {8 * ((n - 1) // 8) + 1} or "
                         f"{8 * ((n - 1) // 8 + 1) + 1}), got {n}")
    a["fps"] = frame_rate_fraction(a["frame_rate"], "frame_rate")
    if audio_frames(n, float(a["fps"]), engine.audio_vae) < 1:
        cfg = engine.audio_vae.config
        latent_s = 4 * cfg.mel_hop_length / cfg.sample_rate
        raise ValueError(f"frame_rate: {n} frames at {a['frame_rate']} fps last {n / float(a['fps']):.3g} s, "
                         f"less than one audio latent frame ({latent_s:g} s), so the audio would be empty; "
                         f"lower frame_rate or generate more frames")
    tiling = a["vae_tiling"]
    if tiling is not None:
        if not isinstance(tiling, TilingConfig):
            raise ValueError(f"vae_tiling must be a ltxengine TilingConfig or None, got {type(tiling).__name__}")
        try:
            tiling.check(engine.vae.spatial_compression_ratio, engine.vae.temporal_compression_ratio)
        except ValueError as e:
            raise ValueError(f"vae_tiling: {e}") from None
    r = engine.vae.spatial_compression_ratio
    h, w = a["height"], a["width"]
    try:  # the decoder's padding needs 2x2 latents (per tile): refuse now, not after denoising
        engine.vae.check_reflect_grid("decoder", f"height x width = {h}x{w}", h // r, w // r, tiling)
    except ValueError as e:
        raise ValueError(f"{e}; one latent is {r}x{r} pixels{' (tiles from vae_tiling)' if tiling else ''}") \
            from None
    return n


def _check_guidance(engine, a: dict[str, Any], distilled: bool) -> None:
    """Stage 1's GuidanceParams per modality, from the GuidanceParams or diffusers' keywords."""
    layers = engine.transformer.config.num_layers
    blocks = a.pop("spatio_temporal_guidance_blocks")
    spelled = {k: a.pop(k) for k in DIFFUSERS_GUIDANCE}
    for modality in ("video", "audio"):
        k = f"{modality}_guidance"
        default = getattr(RECIPES[a["pipeline"]].preset, k) or engine.release.guidance(modality)
        names = {f: name for name, (m, f) in DIFFUSERS_GUIDANCE.items() if m == modality}
        given = {name: spelled[name] for name in names.values() if spelled[name] is not None}
        if blocks is not None:
            given["spatio_temporal_guidance_blocks"] = blocks
        names["stg_blocks"] = "spatio_temporal_guidance_blocks"
        p = a[k]
        if p is not None and given:
            raise ValueError(f"{k} and {', '.join(given)} are two spellings of the same guidance: pass the "
                             f"GuidanceParams or diffusers' keywords, not both")
        if p is not None and not isinstance(p, GuidanceParams):
            raise ValueError(f"{k} must be a GuidanceParams or None, got {type(p).__name__}")
        if p is None:
            p = NO_GUIDANCE if distilled else clip_blocks(default, layers)
        if given:
            fields = {f: given[name] for f, name in names.items() if name in given}
            a[k] = replace(p, **fields).check(k, layers, names=names)
        else:
            a[k] = p.check(k, layers)


def _check_stage1_schedule(engine, a: dict[str, Any], mode: str) -> None:
    """sigmas / num_inference_steps / shift_tokens: stage 1's schedule is built now (at most
    MAX_STEPS numbers) and checked as its sampler will check it."""
    if a["shift_tokens"] is not None:
        check_int("shift_tokens", a["shift_tokens"], 1)
    if a["sigmas"] is not None:
        a["sigmas"] = check_decreasing("sigmas", a["sigmas"], 1.0)
    elif RECIPES[mode].distilled:
        return  # the fixed distilled sigmas
    else:
        steps = check_int("num_inference_steps", a["num_inference_steps"], 1, MAX_STEPS,
                     "MAX_STEPS: the scheduler's 1000 training timesteps")
        if steps < 2:  # ltx2_sigmas' stretch divides by 1 - sigma_last = 0
            raise ValueError(f"num_inference_steps must be >= 2 for the stretched LTX-2 schedule, got {steps} "
                             f"(pass sigmas= for a custom schedule)")
    half = RECIPES[mode].stages
    shape = (1, 0, (a["num_frames"] - 1) // 8 + 1, a["height"] // half // 32, a["width"] // half // 32)
    try:
        sigmas = stage1_sigmas(RECIPES[mode].distilled, a["sigmas"], a["num_inference_steps"], a["shift_tokens"],
                               shape)
        check_schedule(sigmas, a["sampler"], "sigmas")
    except (ValueError, OverflowError) as e:
        if a["sigmas"] is not None:
            raise
        tokens = a["shift_tokens"] or f"None (the video's {shape[2] * shape[3] * shape[4]} tokens)"
        raise ValueError(f"shift_tokens={tokens}: the {a['num_inference_steps']}-step LTX-2 schedule shifted for "
                         f"that many tokens degenerates ({e}); use a smaller shift_tokens (ltx-pipelines: "
                         f"4096)") from None


def _check_two_stage(engine, two: LTX2TwoStage, a: dict[str, Any]) -> LTX2TwoStage:
    """Every field of stage 2's configuration; -> the checked copy (sigmas a tuple, noise_scale set)."""
    layers = engine.transformer.config.num_layers
    guidance = {}
    for k in ("video_guidance", "audio_guidance"):
        p = getattr(two, k)
        if not isinstance(p, GuidanceParams):
            raise ValueError(f"two_stage.{k} must be a GuidanceParams, got {type(p).__name__}")
        guidance[k] = p.check(f"two_stage.{k}", layers)
    vals = check_decreasing("two_stage.sigmas", two.sigmas, 1.0)
    if len(vals) < 2:
        raise ValueError(f"two_stage.sigmas needs at least 2 values (start and end), got {vals}")
    check_schedule(torch.tensor(vals, dtype=torch.float32), a["sampler"], "two_stage.sigmas")
    ns = vals[0] if two.noise_scale is None else check_float("two_stage.noise_scale", two.noise_scale, 0.0, 1.0)
    preset = RECIPES[a["pipeline"]].preset
    strength = check_float("two_stage.lora_strength", preset.lora_strength if two.lora_strength is None
                           else two.lora_strength)
    stage1 = two.stage1_lora_strength
    if stage1 is not None and preset.stage1_lora_strength is None:
        raise ValueError(f"two_stage.stage1_lora_strength: pipeline={a['pipeline']!r} fuses the distilled LoRA in "
                         f"stage 2 only (pipeline='two-stage-hq' in both), got {stage1!r}")
    stage1 = 0.0 if preset.stage1_lora_strength is None else check_float(
        "two_stage.stage1_lora_strength", preset.stage1_lora_strength if stage1 is None else stage1)
    adain = check_float("two_stage.adain_factor", two.adain_factor, -10.0, 10.0)
    tone = check_float("two_stage.tone_map_compression_ratio", two.tone_map_compression_ratio, 0.0, 1.0)
    h1, w1 = stage1_size(engine, a["height"], a["width"])
    per_channel = ((a["num_frames"] - 1) // 8 + 1) * (h1 // 32) * (w1 // 32)
    if adain > 0 and per_channel < 2:
        raise ValueError(f"two_stage.adain_factor = {adain} needs at least 2 stage-1 latent values per channel "
                         f"(AdaIN matches their std), got 1 for {a['num_frames']} frames at "
                         f"{a['height']}x{a['width']}; use adain_factor=0 or a larger video")
    return replace(two, sigmas=tuple(vals), noise_scale=ns, lora_strength=strength, stage1_lora_strength=stage1,
                   adain_factor=adain,
                   tone_map_compression_ratio=tone, **guidance)


def _check_audio_input(engine, a: dict[str, Any], num_frames: int) -> None:
    """audio, audio_sample_rate, audio_start, audio_max_duration; a waveform is replaced by its part
    from audio_start, at most audio_max_duration long (a file is read so in stages._audio_condition)."""
    audio, rate = a["audio"], a["audio_sample_rate"]
    start = check_float("audio_start", a["audio_start"], 0.0)
    if a["audio_max_duration"] is not None:
        a["audio_max_duration"] = check_float("audio_max_duration", a["audio_max_duration"], 0.0, low_open=True)
    if audio is None:
        if a["audio_max_duration"] is not None:
            raise ValueError(f"audio_max_duration caps the audio= read from audio_start, got "
                             f"audio_max_duration={a['audio_max_duration']!r} without audio")
        if rate is not None:
            raise ValueError(f"audio_sample_rate is the rate of a waveform audio=, got "
                             f"audio_sample_rate={rate!r} without audio")
        if start != 0:
            raise ValueError(f"audio_start skips the start of audio=, got audio_start={a['audio_start']!r} "
                             f"without audio")
        _check_aac_rate("the vocoder's output_sampling_rate (config.json of the checkpoint's vocoder)",
                        engine.vocoder.config.output_sampling_rate)
        return
    if isinstance(audio, (str, os.PathLike)):
        if rate is not None:
            raise ValueError(f"audio_sample_rate is for a waveform audio= (a file carries its own rate), got "
                             f"audio_sample_rate={rate!r} with a path")
        path = Path(audio).expanduser()
        file_rate = _audio_file_rate(path)
        _check_aac_rate(f"audio: the sample rate of {str(path)!r}", file_rate)
        _check_max_duration(a, file_rate, num_frames)
        a["audio"] = path
        return
    from .audio_input import as_waveform
    if rate is None:
        raise ValueError("audio_sample_rate (Hz) is required with a waveform audio=, got None")
    rate = check_int("audio_sample_rate", rate, 1)
    _check_aac_rate("audio_sample_rate", rate)
    wave = as_waveform(audio, "audio")
    if wave.shape[0] not in (1, 2):
        raise ValueError(f"audio waveform must have 1 or 2 channels, got shape {tuple(wave.shape)}")
    first = round(start * rate)
    video_s = num_frames / float(a["fps"])
    keep = _check_max_duration(a, rate, num_frames)
    if keep is not None:
        wave = wave[:, :first + keep]
    if wave.shape[1] - first < video_s * rate:
        raise ValueError(f"audio is {max(wave.shape[1] - first, 0) / rate:.3f} s long from audio_start={start} s, "
                         f"shorter than the video's {video_s:.3f} s ({num_frames} frames at {a['frame_rate']} "
                         f"fps); trim the video or give longer audio")
    a["audio"], a["audio_sample_rate"] = wave[:, first:].cpu(), rate


def _check_max_duration(a: dict[str, Any], rate: int, num_frames: int) -> int | None:
    """audio_max_duration against the video -> the samples kept from audio_start (None: all), as
    ltx-pipelines' decode_audio_from_file cuts: round(max_duration * rate). Shorter than the video
    is refused (the reference's audio latents would not fill the clip)."""
    d = a["audio_max_duration"]
    if d is None:
        return None
    video_s = num_frames / float(a["fps"])
    if round(d * rate) < video_s * rate:
        need = math.ceil(video_s * rate)
        raise ValueError(f"audio_max_duration must cover the video ({num_frames} frames at {a['frame_rate']} fps = "
                         f"{video_s:.6g} s: at least {need} samples at {rate} Hz), got {d!r}")
    return round(d * rate)


def _check_conditions_ltx2(engine, image, conditions, num_frames: int) -> list[Condition]:
    first = None if image is None else Condition(image=image, frame_index=0, strength=1.0)
    conds = check_conditions(conditions, num_frames, first=first, what="images, image= included",
                             check_item=_check_condition_image)
    if sum(c.frame_index == 0 for c in conds) > 1:
        raise ValueError("conditions: at most one image may condition frame 0 (image= counts as one)")
    return conds


# diffusers' LTX2Pipeline keyword -> (modality, GuidanceParams field): the other spelling of the
# stage-1 guidance (spatio_temporal_guidance_blocks is stg_blocks of both modalities). Same
# formula and "off" values (cfg 1, stg 0, modality 1, rescale 0) on both sides.
DIFFUSERS_GUIDANCE = {
    "guidance_scale": ("video", "cfg"), "stg_scale": ("video", "stg"), "modality_scale": ("video", "modality"),
    "guidance_rescale": ("video", "rescale"), "audio_guidance_scale": ("audio", "cfg"),
    "audio_stg_scale": ("audio", "stg"), "audio_modality_scale": ("audio", "modality"),
    "audio_guidance_rescale": ("audio", "rescale"),
}


def _check_condition_image(i: int, c: Condition) -> None:
    if (c.image is None) == (c.video is None):
        raise ValueError(f"conditions[{i}]: set exactly one of image and video, got image="
                         f"{type(c.image).__name__} and video={type(c.video).__name__}")


def _check_aac_rate(what: str, rate: int) -> None:
    """The result's mp4 carries its audio as AAC, which takes only some rates (``media.AAC_RATES``:
    7350 to 96000 Hz, 13 of them): refuse another before the generation, not when saving it."""
    if rate not in AAC_RATES:
        raise ValueError(f"{what} must be one AAC (the mp4's audio codec) can carry, one of {list(AAC_RATES)}; "
                         f"got {rate!r}")


def _audio_file_rate(path: Path) -> int:
    """The sample rate of the first audio stream of ``path`` (the container is opened, nothing decoded)."""
    import av
    if not path.is_file():
        raise ValueError(f"audio: no file at {str(path)!r}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"audio: {str(path)!r} has no audio stream")
            return container.streams.audio[0].codec_context.sample_rate
    except av.error.FFmpegError as e:
        raise ValueError(f"audio: cannot read {str(path)!r} as media ({e})") from None


def _condition_images(a: dict[str, Any]) -> tuple:
    """Each condition's image as uint8 (H, W, 3) or video as uint8 (F, H, W, 3), converted now so a
    bad one fails before any work."""
    out = []
    for i, c in enumerate(a["conditions"]):
        if c.video is not None:  # uint8 (F, H, W, 3), cut to fit (conditions.py)
            frames = condition_video(c.video, f"conditions[{i}].video", c.frame_index, a["num_frames"])
            out.append((frames, c.frame_index, float(c.strength)))
            continue
        arg = "image" if i == 0 and a["image"] is not None else f"conditions[{i}].image"
        out.append((uint8_image(c.image, arg), c.frame_index, float(c.strength)))
    return tuple(out)


def clip_blocks(p: GuidanceParams, layers: int) -> GuidanceParams:
    """The released defaults name block 29 of 48; on smaller models (tests, demo) use the last block."""
    if all(b < layers for b in p.stg_blocks):
        return p
    return replace(p, stg_blocks=tuple(min(b, layers - 1) for b in p.stg_blocks))
