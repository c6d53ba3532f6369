"""What a memory plan no longer traces twice (planning.memo_peak: the text encoder across video
sizes; planning.reusing_traces: one request under every memory_budget option) and what it now
traces at all (LTX-2's audio decode up to the host copy, stages.decode_waveform)."""

from __future__ import annotations

import inspect

import torch

import ltxengine.ltx2.plan as ltx2_plan
from ltxengine.executor.plan import fake_mode, module_bytes, transient_peak
from ltxengine.ltx2.stages import decode_waveform
from tests.executor import plan_fixtures

engine, ltx2_engine = plan_fixtures.engine, plan_fixtures.ltx2_engine  # the tiny engines' fixtures


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


def test_budget_options_share_their_traces(engine, monkeypatch):
    """memory_budget plans one request under every option (budget.py); the step is traced once for
    all of them, and every option's phases are what its plan alone gives."""
    import ltxengine.budget as budget
    engine.__dict__.pop("_budget_plans", None)
    calls = []
    hook = engine.transformer.register_forward_pre_hook(lambda m, a, k: calls.append(1), with_kwargs=True)
    try:
        options = engine.plan_options("a", height=64, width=96, num_frames=9)
    finally:
        hook.remove()
    assert len(options) >= 3 and len(calls) == 1
    engine.__dict__.pop("_budget_plans", None)
    # the same options planned one by one, outside the shared scope
    bound = inspect.signature(engine.generate).bind("a", None, height=64, width=96, num_frames=9)
    bound.apply_defaults()
    args = engine._request(dict(bound.arguments))
    with torch.inference_mode():
        alone = [budget.plan_of(engine, args, choice) for choice, _ in options]
    engine.__dict__.pop("_budget_plans", None)
    assert [[(p.name, p.total_bytes) for p in plan.phases] for _, plan in options] == \
        [[(p.name, p.total_bytes) for p in plan.phases] for plan in alone]


def test_a_cached_plan_follows_streaming_and_the_executor(engine, monkeypatch):
    """generate's plan cache (Engine._check_memory) is keyed on what can change after load besides
    the request: streaming the text encoder's layers after a generate changes the text phase's
    weights (it used to reuse the plan with the whole encoder's), dropping the executor its kept
    buffers."""
    from ltxengine.executor.block_offload import layer_stack, slot_bytes
    monkeypatch.setattr(engine, "_generate", lambda a: None)
    made = []  # the plans generate made (a cached one is not made again)
    original = engine._plan
    monkeypatch.setattr(engine, "_plan", lambda a: made.append(original(a)) or made[-1])
    engine._plans.clear()

    def generate():
        engine.generate("a", height=64, width=96, num_frames=9)
    generate()
    engine.stream_text_encoder(True)
    try:
        generate()
    finally:
        engine.stream_text_encoder(False)
    generate()  # back to the first key: its plan
    assert len(made) == 2
    whole, streamed = made
    layers, _ = layer_stack(engine.text_encoder.model)
    # the tiny T5's 2 blocks: its two one-block slots (aligned) hold a little more than them
    assert whole.phases[0].weights_bytes - streamed.phases[0].weights_bytes == \
        module_bytes(*layers) - slot_bytes(layers, 1) != 0
    monkeypatch.setattr(engine, "executor", None)  # the model called directly: no static buffers
    generate()
    assert len(made) == 3 and any(p.kept_bytes > 0 for p in whole.phases)
    assert all(p.kept_bytes == 0 for p in made[2].phases)


def test_a_budget_plan_follows_the_executor(engine, monkeypatch):
    """memory_budget's per-option plans (budget.plan_of) are keyed on the executor's mode too: its
    kept buffers are a term of every phase, and fit_budget itself may replace the executor."""
    import ltxengine.budget as budget
    bound = inspect.signature(engine.generate).bind("a", None, height=64, width=96, num_frames=9)
    bound.apply_defaults()
    args = engine._request(dict(bound.arguments))
    choice = budget.candidates(engine)[0]
    engine.__dict__.pop("_budget_plans", None)
    with torch.inference_mode():
        kept = budget.plan_of(engine, args, choice)
        monkeypatch.setattr(engine, "executor", None)  # the model called directly: no static buffers
        bare = budget.plan_of(engine, args, choice)
    engine.__dict__.pop("_budget_plans", None)
    assert any(p.kept_bytes > 0 for p in kept.phases) and all(p.kept_bytes == 0 for p in bare.phases)
