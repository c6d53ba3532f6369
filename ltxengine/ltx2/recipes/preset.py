"""``Preset``: a recipe's own defaults (``recipes.Recipe.preset``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..denoise import GuidanceParams

__all__ = ["Preset"]


@dataclass(frozen=True)
class Preset:
    """A recipe's own defaults (ltx-pipelines' per-pipeline constants), in place of the release's
    and ``generate``'s for the arguments a call leaves unset; None keeps those. The request applies
    them before its checks, so what it checks is what runs."""

    num_inference_steps: int | None = None
    sampler: str | None = None
    # stage 1's guidance per modality (diffusers' keywords fold onto it, as onto the release's)
    video_guidance: GuidanceParams | None = None
    audio_guidance: GuidanceParams | None = None
    # stage 1's schedule shifts for the stage-1 video's own token count (shift_tokens=None):
    # generate's default shift_tokens=4096 reads as that, another value is refused
    own_shift: bool = False
    lora_strength: float = 1.0  # the distilled LoRA in stage 2 (two_stage.lora_strength=None)
    stage1_lora_strength: float | None = None  # in stage 1 (two_stage.stage1_lora_strength; None: never)
