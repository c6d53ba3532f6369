"""LTX-2's recipes, one file per pipeline (as ltx-pipelines has one per pipeline), each built from
the shared stages in ``ltx2/stages.py``. ``RECIPES`` maps ``generate(pipeline=...)`` to its
``Recipe``: how to run it, how many stages it has (two: stage 1 at half the size, the latent
upsampler, stage 2), whether stage 1 defaults to the distilled schedule without guidance, and the
``generate`` arguments only it reads, with the check that validates them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import ic_lora, one_stage, retake, text_to_audio, two_stage, two_stage_hq
from .preset import Preset

__all__ = ["RECIPES", "Preset", "Recipe", "recipe_arguments", "run_generation"]


@dataclass(frozen=True)
class Recipe:
    """One ``pipeline=``. ``run(engine, request, gen, seed) -> StageOutput``. ``stages``: 1 (at the
    requested size) or 2 (stage 1 at half the size, needs the latent upsampler, configured by
    ``two_stage=``). ``distilled``: stage 1 defaults to the distilled sigmas without guidance.
    ``arguments``: the ``generate`` arguments only this recipe reads (None means "not given"; the
    request refuses them for other pipelines). ``check(engine, a)``: validates and normalizes those
    arguments in the argument dict ``a`` after the shared checks, before any model work.
    ``guiding``: every condition, frame 0 included, is appended as guiding latents
    (``stages.encode_conditions(guiding=True)``) instead of frame 0 replacing the first latents.
    ``preset``: the recipe's own defaults (``preset.Preset``)."""

    run: Callable
    stages: int = 2
    distilled: bool = False
    arguments: tuple[str, ...] = ()
    check: Callable[[Any, dict], None] | None = None
    # audio alone (text-to-audio): no video size, images or video VAE; the one pipeline of an engine
    # loaded with modalities=("audio",)
    audio_only: bool = False
    guiding: bool = False
    preset: Preset = Preset()


RECIPES = {
    "two-stage": Recipe(two_stage.run),
    # ltx-pipelines' distilled pipeline is the two-stage recipe with the distilled stage-1 schedule
    # and no stage-1 guidance: the request resolves those defaults, the recipe is the same
    "distilled": Recipe(two_stage.run, distilled=True),
    "one-stage": Recipe(one_stage.run, stages=1),
    # ltx-pipelines' ic_lora: distilled stage 1 with the IC-LoRA and the reference videos, stage 2 without either
    "ic-lora": Recipe(ic_lora.run, distilled=True, arguments=ic_lora.ARGUMENTS, check=ic_lora.check),
    # ltx-pipelines' retake: one stage at the clip's size, distilled unless num_inference_steps / sigmas are given
    "retake": Recipe(retake.run, stages=1, distilled=True, arguments=retake.ARGUMENTS, check=retake.check),
    # ltx-pipelines' keyframe_interpolation is the two-stage recipe (same guidance, LoRA, sigmas)
    # with every image appended as guiding latents, re-encoded at each stage's size
    "keyframe-interpolation": Recipe(two_stage.run, guiding=True),
    # Lightricks' t2a_one_stage (after 1.0.0): the audio stream alone, one stage, audio guidance only
    "text-to-audio": Recipe(text_to_audio.run, stages=1, arguments=text_to_audio.ARGUMENTS,
                            check=text_to_audio.check, audio_only=True),
    # ltx-pipelines' ti2vid_two_stages_hq: the two-stage recipe with res_2s in both stages, the
    # distilled LoRA at 0.25 in stage 1 and 0.5 in stage 2, and its own steps and guidance (no STG)
    "two-stage-hq": Recipe(two_stage_hq.run, check=two_stage_hq.check, preset=two_stage_hq.PRESET),
}


def recipe_arguments() -> dict[str, tuple[str, ...]]:
    """Each recipe-only ``generate`` argument -> the pipelines that read it."""
    owners: dict[str, tuple[str, ...]] = {}
    for name, recipe in RECIPES.items():
        for arg in recipe.arguments:
            owners[arg] = owners.get(arg, ()) + (name,)
    return owners


def run_generation(engine, request, gen, seed: int):
    """The request's pipeline, run."""
    return RECIPES[request.pipeline].run(engine, request, gen, seed)
