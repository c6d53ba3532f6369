"""What a memory plan no longer traces twice (planning.memo_peak) and what it now traces at all
(LTX-2's audio decode up to the host copy, stages.decode_waveform)."""

from __future__ import annotations

import inspect

import torch

import ltxengine.ltx2.plan as ltx2_plan
from ltxengine.executor.plan import fake_mode, transient_peak
from ltxengine.ltx2.stages import decode_waveform
from tests.executor.test_plan import engine, ltx2_engine  # noqa: F401 - the tiny engines


def test_text_encoder_traced_once_for_every_video_size(engine):
    engine.__dict__.pop("_phase_peaks", None)
    calls = []
    hook = engine.text_encoder.model.register_forward_pre_hook(lambda m, a, k: calls.append(1), with_kwargs=True)
    try:
        small = engine.plan("a", height=64, width=96, num_frames=9)
        big = engine.plan("a", height=128, width=192, num_frames=17)
        engine.plan("a", height=64, width=96, num_frames=9, guidance_scale=1.0)  # batch 1: its own trace
    finally:
        hook.remove()
    assert len(calls) == 2
    assert small.phases[0].transient_bytes == big.phases[0].transient_bytes > 0


def test_ltx2_decode_counts_the_audio_decode(ltx2_engine, monkeypatch):
    """The audio decode ends in numpy, which fake tensors refuse: its trace used to fail and count
    0. With the video decode made negligible, the decode phase is the audio decode's trace."""
    from tests.pipelines import ltx2_fixtures as l2
    kwargs = dict(height=64, width=96, num_frames=9, max_sequence_length=l2.SEQ, pipeline="one-stage")
    monkeypatch.setattr(ltx2_plan, "decode_video", lambda engine, a, z, gen: z[:, :1, :1, :1, :1] * 1)
    plan = ltx2_engine.plan("a", **kwargs)
    bound = inspect.signature(ltx2_engine.generate).bind("a", None, **kwargs)
    bound.apply_defaults()
    request = ltx2_engine._request(dict(bound.arguments))
    with fake_mode():
        tokens = torch.zeros((1, request.audio_frames, ltx2_engine.transformer.config.audio_in_channels))
    audio = transient_peak(lambda t: decode_waveform(ltx2_engine, t), tokens)
    decode = {p.name: p for p in plan.phases}["decode"]
    assert decode.transient_bytes == audio > 1000
