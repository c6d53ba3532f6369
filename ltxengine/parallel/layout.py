"""Each denoising stage's layout over the ranks: the configured (guidance x sequence) mesh, or,
for a stage with fewer guidance passes than guidance ranks, sequence parallel over every rank.

With ``ParallelConfig(sequence=2, guidance=2)``, a stage with one pass a step (stage 2 of the
two-stage and distilled recipes, or any call without guidance) split by guidance would leave one
sequence group waiting at every gather: half the machine idle. Such a stage runs instead with
the video tokens sharded over all 4 ranks (the world group built by ``config.init``) and no
guidance split: every rank runs every pass. The transformer takes full inputs and returns full
outputs on every rank under ``sequence.enable``, so switching is re-pointing its sequence group
for the stage and back afterwards (also when the stage fails); nothing else changes.

The world-wide split needs every exchanged head count divisible by the world size and a video
token per rank (``sequence.check``). When it is impossible the stage keeps the mesh, which the
engine checked for every stage before any work, and says so in a log line: the choice never
fails mid-generation, and it is the same on every rank (it depends only on the model and the call).

CUDA graphs: the sequence-parallel collectives are captured with the step, on the group in force
at capture, so a stage's step graphs are keyed on its layout (``StageLayout.graph_tag``): a graph
captured on the mesh's sequence group is never replayed under the world layout, or the reverse,
even at equal shapes. On the CPU the executor is eager and gloo runs every collective.
"""

from __future__ import annotations

import contextlib
import logging
from typing import NamedTuple

__all__ = ["StageLayout", "stage_layout", "choose"]

log = logging.getLogger(__name__)


class StageLayout(NamedTuple):
    guidance_group: object  # the group a step's passes are split over (None: every pass on this rank)
    graph_tag: tuple  # added to the step's graph key: () on the mesh, ("sequence-world", P) otherwise


def choose(engine, passes: int, tokens: int) -> bool:
    """True when a stage of ``passes`` guidance passes a step over ``tokens`` video tokens runs
    sequence parallel over every rank rather than on the mesh."""
    state = getattr(engine, "parallel", None)
    if state is None or state.world_group is None or passes >= state.config.guidance:
        return False
    from . import sequence
    try:
        sequence.check(engine.transformer, state.world_group, tokens)
    except ValueError as e:
        log.info("parallel: a stage of %d guidance pass(es) keeps the %d x %d (guidance x sequence) mesh, some "
                 "ranks waiting: sequence parallel over all %d ranks is impossible: %s", passes,
                 state.config.guidance, state.config.sequence, state.world_size, e)
        return False
    return True


@contextlib.contextmanager
def stage_layout(engine, passes: int, tokens: int):
    """Around one denoising stage: yields its StageLayout, with the transformer's sequence group
    re-pointed at every rank for the stage when ``choose`` says so, and back afterwards."""
    if not choose(engine, passes, tokens):
        yield StageLayout(getattr(engine, "guidance_group", None), ())
        return
    from . import sequence
    state, transformer = engine.parallel, engine.transformer
    sequence.enable(transformer, state.world_group)
    try:
        yield StageLayout(None, ("sequence-world", state.world_size))
    finally:
        if state.config.sequence > 1:
            sequence.enable(transformer, state.sequence_group)
        else:
            sequence.disable(transformer)
