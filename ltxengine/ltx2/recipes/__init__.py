"""LTX-2's recipes, one file per pipeline (as ltx-pipelines has one per pipeline), each built from
the shared stages in ``ltx2/stages.py``: ``run(engine, request, generator, seed) -> StageOutput``.
``RECIPES`` maps ``generate(pipeline=...)`` to its recipe; the coming ones (IC-LoRA, keyframe
interpolation, retake) are new files and new entries here."""

from . import one_stage, two_stage

__all__ = ["RECIPES", "run_generation"]

RECIPES = {
    "two-stage": two_stage.run,
    # ltx-pipelines' distilled pipeline is the two-stage recipe with the distilled stage-1 schedule
    # and no stage-1 guidance: the request resolves those defaults, the recipe is the same
    "distilled": two_stage.run,
    "one-stage": one_stage.run,
}


def run_generation(engine, request, gen, seed: int):
    """The request's pipeline, run."""
    return RECIPES[request.pipeline](engine, request, gen, seed)
