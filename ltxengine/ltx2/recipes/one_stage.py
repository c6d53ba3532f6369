"""pipeline="one-stage" (ltx-pipelines' ti2vid_one_stage): text -> one stage at the requested size
with the stage-1 guidance -> decode video and audio."""

from __future__ import annotations

import time

from ..stages import StageOutput, encode_text, finish, first_stage, prepare


def run(engine, a, gen, seed: int) -> StageOutput:
    timings = {}
    t0 = time.perf_counter()
    given = prepare(engine, a)
    vp, ap = given.guidance(a.video_guidance, a.audio_guidance)
    texts = encode_text(engine, a, vp.uncond or ap.uncond)
    timings["text"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    video, audio = first_stage(engine, a, given, texts, gen, seed, a.height, a.width)
    timings["denoise"] = time.perf_counter() - t1
    return finish(engine, a, given, video, audio, gen, timings)
