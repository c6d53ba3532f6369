"""The checked call of ``LTXVideoEngine.generate``: ``build_request`` checks and normalizes every
argument (nested TwoStage, TilingConfig and Condition objects included) and tries what could fail
later (every stage's schedule, the pixels of the first stage), so a bad call fails before any model
work; it returns a frozen ``LTXVideoRequest`` that the stages and the memory plan read and never
write. Which diffusers pipeline a call follows is resolved here (``pipeline``)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from fractions import Fraction
from typing import Any, Callable, Sequence

import torch

from ..checks import (MAX_NUM_FRAMES, MAX_SEQUENCE_LENGTH, MAX_SIDE, call_args, check_conditions, check_decreasing,
                      check_float, check_int, check_kept_steps, check_random, check_steps)
from ..components.inputs import Condition
from ..media import frame_rate_fraction
from ..models.video_vae import TilingConfig
from .stages import condition_pixels, stage_schedule

__all__ = ["PIPELINES", "LTXVideoRequest", "TwoStage", "build_request"]

PIPELINES = ("text-to-video", "image-to-video", "condition")


@dataclass(frozen=True)
class TwoStage:
    """The multi-scale recipe in one call: generate at ``downscale_factor`` x the requested size
    (rounded down to multiples of 32), upsample the latents x2 with the latent upsampler (AdaIN
    towards the low-resolution statistics, optional tone map), refine at the doubled size with
    ``denoise_strength`` (or the distilled ``timesteps``), decode and, if the doubled size is not
    the requested one, resize the frames bilinearly (as Lightricks' LTXMultiScalePipeline does).

    Stage-2 fields left as None take the stage-1 value of ``generate``. Both stages follow the
    LTXConditionPipeline; stage 2 draws from a generator re-seeded with the same seed, as in
    diffusers' documented three-call recipe.
    """

    downscale_factor: float = 2 / 3
    adain_factor: float = 1.0
    tone_map_compression_ratio: float = 0.0
    denoise_strength: float = 0.4
    num_inference_steps: int = 10
    timesteps: Sequence[float] | None = None
    guidance_scale: float | None = None
    guidance_rescale: float | None = None
    image_cond_noise_scale: float | None = None

    def check(self, name: str = "two_stage") -> "TwoStage":
        """Every field's type, finiteness and range, and that the refinement keeps at least one
        step; -> the recipe with ``timesteps`` as a list. Needs no engine, so it runs before any work."""
        check_float(f"{name}.downscale_factor", self.downscale_factor, 0.0, 1.0, low_open=True)
        check_float(f"{name}.adain_factor", self.adain_factor, -10.0, 10.0)
        check_float(f"{name}.tone_map_compression_ratio", self.tone_map_compression_ratio, 0.0, 1.0)
        strength = check_float(f"{name}.denoise_strength", self.denoise_strength, 0.0, 1.0, low_open=True)
        for field_name, high in (("guidance_scale", None), ("guidance_rescale", 1.0), ("image_cond_noise_scale", None)):
            if getattr(self, field_name) is not None:  # None: the stage-1 value
                check_float(f"{name}.{field_name}", getattr(self, field_name), 0.0, high)
        timesteps = self.timesteps
        if timesteps is not None:
            timesteps = check_decreasing(f"{name}.timesteps", timesteps, 1000.0)
        if timesteps is None or self.num_inference_steps is not None:  # ignored, but never nonsense
            check_steps(f"{name}.num_inference_steps", self.num_inference_steps)
        if strength < 1:
            steps_name = f"{name}.timesteps" if timesteps is not None else f"{name}.num_inference_steps"
            check_kept_steps(f"{name}.denoise_strength", strength, steps_name,
                        len(timesteps) if timesteps is not None else self.num_inference_steps)
        return replace(self, timesteps=timesteps)


@dataclass(frozen=True, eq=False)
class LTXVideoRequest:
    """One checked ``generate`` call. Fields keep ``generate``'s names; resolved ones hold what the
    call means: ``pipeline`` (never None), ``conditions`` (a tuple, the image folded in for the
    condition pipeline), ``max_sequence_length`` (the pipeline's default when None was given),
    ``two_stage`` (a checked TwoStage or None), ``timesteps`` / ``sigmas`` (tuples). Derived:
    ``fps`` (the exact frame rate), ``stage1_size`` (the first stage's (height, width)) and
    ``stage1_pixels`` (the image and conditions preprocessed at that size, on the device)."""

    prompt: str
    negative_prompt: str | None
    image: Any
    conditions: tuple[Condition, ...]
    height: int
    width: int
    num_frames: int
    frame_rate: Any
    fps: Fraction
    num_inference_steps: int | None
    guidance_scale: float
    guidance_rescale: float
    timesteps: tuple[float, ...] | None
    sigmas: tuple[float, ...] | None
    decode_timestep: float
    decode_noise_scale: float | None
    seed: int | None
    generator: torch.Generator | None
    latents: torch.Tensor | None
    callback: Callable | None
    denoise_strength: float
    image_cond_noise_scale: float
    max_sequence_length: int
    two_stage: TwoStage | None
    pipeline: str
    vae_tiling: TilingConfig | None
    output: Any
    loras: tuple[tuple[str, float], ...] | None
    stage1_size: tuple[int, int]
    stage1_pixels: tuple

    @property
    def cfg(self) -> bool:
        """Whether any stage guides (the negative prompt is encoded)."""
        two = self.two_stage
        return self.guidance_scale > 1.0 or (two is not None and (two.guidance_scale or 0) > 1.0)

    def plan_key(self) -> tuple:
        """What the memory plan depends on (plans are cached per key)."""
        # guidance_rescale and the decode's timestep / noise are in the phases' trace keys (plan.py): here too,
        # or a cached plan would stand for a request whose step or decode traces other ops
        return (self.height, self.width, self.num_frames, self.pipeline, repr(self.two_stage), self.stage1_size,
                self.guidance_scale, self.guidance_rescale, self.max_sequence_length, repr(self.vae_tiling),
                len(self.conditions), self.image is not None, self.decode_timestep, self.decode_noise_scale,
                self.fps)


def build_request(engine, args: dict[str, Any]) -> LTXVideoRequest:
    """``generate``'s arguments (its locals) -> the checked request, or ValueError naming the argument."""
    a = _checked(engine, args)
    a["loras"] = engine.adapters.check_call(a["loras"])
    a.update({k: tuple(a[k]) for k in ("timesteps", "sigmas") if a[k] is not None})
    return LTXVideoRequest(**{f.name: a[f.name] for f in fields(LTXVideoRequest)})


def _checked(engine, a: dict[str, Any]) -> dict[str, Any]:
    """Every argument of ``generate`` (nested TwoStage, TilingConfig and Condition objects
    included) checked and normalized, and what could fail later tried here (schedules,
    pixels), so a bad call fails before any model work."""
    a = call_args(a)
    _check_sizes(engine, a)
    a["fps"] = frame_rate_fraction(a["frame_rate"], "frame_rate")
    _check_numbers(a)
    _check_objects(engine, a)
    a["two_stage"] = _check_two_stage(engine, a["two_stage"])
    _check_pipeline(engine, a)
    _check_schedules(engine, a)
    return a


def _check_sizes(engine, a: dict[str, Any]) -> None:
    r, rt = engine.vae.spatial_compression_ratio, engine.vae.temporal_compression_ratio
    for k in ("height", "width"):
        v = check_int(k, a[k], r, MAX_SIDE, "MAX_SIDE")
        if v % r:
            raise ValueError(f"{k} must be a multiple of {r}, got {v}")
    n = check_int("num_frames", a["num_frames"], 1, MAX_NUM_FRAMES, "MAX_NUM_FRAMES")
    if (n - 1) % rt:
        raise ValueError(f"num_frames must be of the form {rt}k+1 (e.g. {rt * ((n - 1) // rt) + 1} or "
                         f"{rt * ((n - 1) // rt + 1) + 1}), got {n}")


def _check_numbers(a: dict[str, Any]) -> None:
    if a["timesteps"] is not None and a["sigmas"] is not None:
        raise ValueError("pass at most one of timesteps and sigmas, got both")
    if a["timesteps"] is not None:
        a["timesteps"] = check_decreasing("timesteps", a["timesteps"], 1000.0)
    elif a["sigmas"] is not None:
        a["sigmas"] = check_decreasing("sigmas", a["sigmas"], 1.0)
    if (a["timesteps"] is None and a["sigmas"] is None) or a["num_inference_steps"] is not None:
        check_steps("num_inference_steps", a["num_inference_steps"])  # may be None only when unused
    check_float("guidance_scale", a["guidance_scale"], 0.0)
    check_float("guidance_rescale", a["guidance_rescale"], 0.0, 1.0)
    check_float("decode_timestep", a["decode_timestep"], 0.0, 1.0)
    if a["decode_noise_scale"] is not None:
        check_float("decode_noise_scale", a["decode_noise_scale"], 0.0, 1.0)
    check_float("denoise_strength", a["denoise_strength"], 0.0, 1.0, low_open=True)
    check_float("image_cond_noise_scale", a["image_cond_noise_scale"], 0.0)
    if a["max_sequence_length"] is not None:
        check_int("max_sequence_length", a["max_sequence_length"], 1, MAX_SEQUENCE_LENGTH, "MAX_SEQUENCE_LENGTH")


def _check_objects(engine, a: dict[str, Any]) -> None:
    check_random(a["seed"], a["generator"], "a torch.Generator")
    if a["callback"] is not None and not callable(a["callback"]):
        raise ValueError(f"callback must be callable, got {a['callback']!r}")
    tiling = a["vae_tiling"]
    if tiling is not None:
        if not isinstance(tiling, TilingConfig):
            raise ValueError(f"vae_tiling must be a TilingConfig or None, got {type(tiling).__name__}")
        try:  # tile sizes and strides must be whole latent cells of this VAE
            tiling.check(engine.vae.spatial_compression_ratio, engine.vae.temporal_compression_ratio)
        except ValueError as e:
            raise ValueError(f"vae_tiling: {e}") from None
    if a["image"] is not None and a["conditions"] is not None:
        raise ValueError("pass image or conditions, not both (an image is Condition(image=..., frame_index=0))")


def _check_two_stage(engine, two) -> TwoStage | None:
    if two is None or two is False:
        return None
    if two is True:
        two = TwoStage()
    if not isinstance(two, TwoStage):
        raise ValueError(f"two_stage must be a TwoStage, True or None, got {type(two).__name__}")
    if engine.latent_upsampler is None:
        raise ValueError("two_stage needs a latent upsampler: load the engine with "
                         "Engine.from_pretrained(..., latent_upsampler=PATH)")
    return two.check("two_stage")


def _check_pipeline(engine, a: dict[str, Any]) -> None:
    """The pipeline, its inputs (image, conditions, latents) and the first stage's size."""
    two, n = a["two_stage"], a["num_frames"]
    mode = a["pipeline"]
    if mode is None:
        mode = ("condition" if a["conditions"] is not None or a["denoise_strength"] < 1 or two is not None
                else "image-to-video" if a["image"] is not None else "text-to-video")
    if mode not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES} or None, got {mode!r}")
    if mode == "image-to-video" and a["image"] is None:
        raise ValueError("pipeline='image-to-video' needs image=")
    if mode != "image-to-video" and a["image"] is not None:
        if mode == "condition":
            a["conditions"], a["image"] = (Condition(image=a["image"], frame_index=0, strength=1.0),), None
        else:
            raise ValueError(f"image= is not used by pipeline={mode!r}")
    if mode != "condition" and a["denoise_strength"] < 1:
        raise ValueError(f"denoise_strength < 1 needs pipeline='condition', got pipeline={mode!r}")
    if two is not None and mode != "condition":
        raise ValueError(f"two_stage runs the 'condition' pipeline, got pipeline={mode!r}")
    a["pipeline"] = mode
    a["conditions"] = tuple(_check_conditions(engine, a["conditions"], n)) if mode == "condition" else ()
    a["stage1_size"] = (a["height"], a["width"]) if two is None else _stage1_size(engine, a, two)
    # preprocess the pixels at the first stage's size now, so a bad image fails before any work
    a["stage1_pixels"] = condition_pixels(engine, a["image"], a["conditions"], n, *a["stage1_size"])
    if a["max_sequence_length"] is None:
        a["max_sequence_length"] = 256 if mode == "condition" else 128
    if a["latents"] is not None:  # they start the first stage: its size
        a["latents"] = _check_latents(engine, a["latents"], *a["stage1_size"], n)


def _stage1_size(engine, a: dict[str, Any], two: TwoStage) -> tuple[int, int]:
    r = engine.vae.spatial_compression_ratio
    h1 = int(a["height"] * two.downscale_factor) // r * r
    w1 = int(a["width"] * two.downscale_factor) // r * r
    if h1 < r or w1 < r:
        raise ValueError(f"two_stage.downscale_factor {two.downscale_factor} makes the first stage "
                         f"{h1}x{w1}, below one latent pixel ({r}x{r}); use a larger size or factor")
    return h1, w1


def _check_schedules(engine, a: dict[str, Any]) -> None:
    """Every stage's schedule built now (cheap: at most MAX_STEPS numbers), so one that cannot
    run, or a denoise strength that keeps none of its steps, fails before any model work."""
    r, rt = engine.vae.spatial_compression_ratio, engine.vae.temporal_compression_ratio
    f = (a["num_frames"] - 1) // rt + 1
    h1, w1 = a["stage1_size"]
    steps_name = ("timesteps" if a["timesteps"] is not None else "sigmas" if a["sigmas"] is not None
                  else "num_inference_steps")
    n = _try_schedule(engine, steps_name, a["pipeline"], f * (h1 // r) * (w1 // r), a["num_inference_steps"],
                           a["timesteps"], a["sigmas"])
    if a["pipeline"] == "condition" and a["denoise_strength"] < 1:
        check_kept_steps("denoise_strength", a["denoise_strength"], steps_name, n)
    two = a["two_stage"]
    if two is not None:  # TwoStage.check has checked its own strength against its steps
        name = "two_stage.timesteps" if two.timesteps is not None else "two_stage.num_inference_steps"
        _try_schedule(engine, name, "condition", f * (2 * h1 // r) * (2 * w1 // r), two.num_inference_steps,
                           two.timesteps, None)


def _try_schedule(engine, name: str, mode: str, seq_len: int, steps, timesteps, sigmas) -> int:
    try:
        return len(stage_schedule(engine, mode, seq_len, steps, timesteps, sigmas))
    except ValueError as e:  # e.g. one step cannot be stretched to the config's shift_terminal
        raise ValueError(f"{name}: {e}") from None


def _check_conditions(engine, conditions, num_frames: int) -> list[Condition]:
    return check_conditions(conditions, num_frames, check_item=_check_condition_media)


def _check_latents(engine, latents, height: int, width: int, num_frames: int) -> torch.Tensor:
    r, rt = engine.vae.spatial_compression_ratio, engine.vae.temporal_compression_ratio
    shape = (1, engine.transformer.config.in_channels, (num_frames - 1) // rt + 1, height // r, width // r)
    if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape:
        got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"latents must be a tensor of shape {shape} (normalized, unpacked), got {got}")
    if not torch.isfinite(latents).all():
        raise ValueError("latents must be finite")
    return latents



def _check_condition_media(i: int, c: Condition) -> None:
    """An LTX-Video condition is an image or a video clip (of at most MAX_NUM_FRAMES frames: every
    frame is preprocessed before any work)."""
    if (c.image is None) == (c.video is None):
        raise ValueError(f"conditions[{i}]: set exactly one of image and video, got image="
                         f"{type(c.image).__name__} and video={type(c.video).__name__}")
    frames = len(c.video) if isinstance(c.video, (list, tuple)) or getattr(c.video, "ndim", 0) else 0
    if frames > MAX_NUM_FRAMES:
        raise ValueError(f"conditions[{i}].video must have at most {MAX_NUM_FRAMES} frames (MAX_NUM_FRAMES), "
                         f"got {frames}")
