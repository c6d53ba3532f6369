"""LTX-2's text phase in the memory plan (ltx2/plan.py text_peak): Gemma with every hidden state
kept, the feature extractor, the connectors and the DiT's context preparation, traced on fake
tensors. It used to count 0 activations (hundreds of MB to GBs at Gemma 3 12B, 1024 tokens, CFG).

The reference is the real call: ``trace_allocations(fake=False)`` records what stages.encode_text
(or text-to-audio's encode_audio_text) allocates when it runs. The plan is at or above it and
within 2%: the fake trace takes every token as valid (the real prompts are left padded; same
shapes), and the real call's tokenizer tensors are made outside the ops the trace records (the
difference measured: 448 B of 143 KB at 32 tokens, 1.8 KB of 574 KB at 128)."""

from __future__ import annotations

import copy
import inspect
import logging

import pytest
import torch

import ltxengine.ltx2.plan as ltx2_plan
from ltxengine.executor.memory import trace_allocations
from ltxengine.executor.plan import module_bytes
from ltxengine.models.ltx2_text import GemmaTextEncoder
from tests.executor import plan_fixtures

ltx2_engine = plan_fixtures.ltx2_engine  # the tiny LTX-2 engine's fixture

UNGUIDED = dict(guidance_scale=1.0, stg_scale=0.0, modality_scale=1.0, audio_guidance_scale=1.0, audio_stg_scale=0.0,
                audio_modality_scale=1.0)


def _seq():
    from tests.pipelines.ltx2_fixtures import SEQ
    return SEQ


def _kwargs(tokens: int, **extra) -> dict:
    return dict(height=64, width=96, num_frames=9, max_sequence_length=tokens, pipeline="one-stage", **extra)


def _request(engine, kwargs: dict):
    bound = inspect.signature(engine.generate).bind("a cat on a mat", None, **kwargs)
    bound.apply_defaults()
    return engine._request(dict(bound.arguments))


def _text(plan):
    phase = plan.phases[0]
    assert phase.name == "text"
    return phase


def _real_peak(fn) -> int:
    return trace_allocations(fn, fake=False).live_peak_bytes


@pytest.mark.parametrize("factor", [1, 4])
@pytest.mark.parametrize("guided", [True, False])
def test_text_phase_counts_what_encode_text_allocates(ltx2_engine, factor, guided):
    from ltxengine.ltx2.stages import encode_text
    engine = ltx2_engine
    kwargs = _kwargs(factor * _seq(), **({} if guided else UNGUIDED))
    a = _request(engine, kwargs)
    need = a.video_guidance.uncond or a.audio_guidance.uncond
    assert need == guided
    planned = _text(engine.plan("a cat on a mat", **kwargs)).transient_bytes
    real = _real_peak(lambda: encode_text(engine, a, need))
    assert real <= planned <= 1.02 * real, (planned, real)


def test_text_phase_grows_with_tokens_and_the_negative_prompt(ltx2_engine):
    seq, tr = _seq(), ltx2_engine.transformer
    peak = {(t, g): ltx2_plan.text_peak(ltx2_engine, _request(ltx2_engine, _kwargs(t)), g, tr)
            for t in (seq, 4 * seq) for g in (True, False)}
    # every activation is per token (no T x T attention score at these sizes dominates): ~linear
    assert 3.5 * peak[(seq, True)] < peak[(4 * seq, True)] <= 4.5 * peak[(seq, True)]
    assert 1.8 * peak[(seq, False)] < peak[(seq, True)] <= 2.2 * peak[(seq, False)]  # [negative, positive]
    assert peak[(seq, False)] > ltx2_plan.text_floor(ltx2_engine.text_encoder, 1, seq) > 0


def test_text_traced_once_for_every_video_size(ltx2_engine):
    engine = ltx2_engine
    engine.__dict__.pop("_phase_peaks", None)
    calls = []
    backbone = engine.text_encoder.model.model
    hook = backbone.register_forward_pre_hook(lambda m, a, k: calls.append(1), with_kwargs=True)
    try:
        small = engine.plan("a", **_kwargs(_seq()))
        big = engine.plan("a", **{**_kwargs(_seq()), "height": 128, "width": 128, "num_frames": 17})
    finally:
        hook.remove()
    assert len(calls) == 1 and _text(small).transient_bytes == _text(big).transient_bytes > 0


def test_the_trace_reads_no_encoder_weight(ltx2_engine, monkeypatch):
    """An offloaded encoder is parked in host memory while a CUDA engine plans: the trace uses fake
    weights on the engine's device, so weights anywhere else (here: on the meta device, holding
    no data) give the same count - a trace of the weights as they are would mix devices and fail."""
    engine = ltx2_engine
    kwargs = _kwargs(_seq())
    expected = _text(engine.plan("a", **kwargs)).transient_bytes
    te = engine.text_encoder
    meta = GemmaTextEncoder(copy.deepcopy(te.model).to("meta"), te.tokenizer, te.connectors)
    monkeypatch.setattr(engine, "text_encoder", meta)
    assert _text(engine.plan("a", **kwargs)).transient_bytes == expected


def test_streamed_layers_change_the_weights_not_the_activations(ltx2_engine):
    """With "text_encoder_layers" the phase's weights are the encoder less its layers plus two
    one-layer slots (planning.text_encoder_on_device); the activations are the same."""
    from ltxengine.executor.block_offload import layer_stack, slot_bytes
    engine = ltx2_engine
    kwargs = _kwargs(_seq())
    whole = _text(engine.plan("a", **kwargs))
    engine.__dict__.pop("_phase_peaks", None)
    engine.stream_text_encoder(True)
    try:
        streamed = _text(engine.plan("a", **kwargs))
    finally:
        engine.stream_text_encoder(False)
    layers, _ = layer_stack(engine.text_encoder.model)
    assert streamed.transient_bytes == whole.transient_bytes > 0
    assert whole.weights_bytes - streamed.weights_bytes == module_bytes(*layers) - slot_bytes(layers, 1) > 0


def test_a_trace_that_fails_counts_the_hidden_states(ltx2_engine, monkeypatch, caplog):
    engine = ltx2_engine
    engine.__dict__.pop("_phase_peaks", None)

    def broken(*args):
        raise RuntimeError("no fake kernel for some op")
    monkeypatch.setattr(ltx2_plan, "_trace_text", broken)
    with caplog.at_level(logging.WARNING, logger="ltxengine.ltx2.plan"):
        plan = engine.plan("a", **_kwargs(_seq()))
    engine.__dict__.pop("_phase_peaks", None)
    te = engine.text_encoder
    # 2 prompts x 32 tokens x 4 hidden states of 32 wide, fp32, and the fp32 features made of them
    assert _text(plan).transient_bytes == ltx2_plan.text_floor(te, 2, _seq()) == 2 * 32 * 4 * 32 * (4 + 4)
    assert "text encoder's fake trace failed (RuntimeError: no fake kernel" in caplog.text


def test_text_to_audio_counts_what_encode_audio_text_allocates(ltx2_engine):
    from ltxengine.ltx2.recipes.text_to_audio import encode_audio_text
    engine = ltx2_engine
    kwargs = dict(num_frames=9, max_sequence_length=_seq(), pipeline="text-to-audio")
    a = _request(engine, kwargs)
    assert a.audio_guidance.uncond
    planned = _text(engine.plan("a cat on a mat", **kwargs)).transient_bytes
    real = _real_peak(lambda: encode_audio_text(engine, a, True))
    assert real <= planned <= 1.02 * real, (planned, real)


def test_a_text_phase_that_does_not_fit_refuses_before_any_work(ltx2_engine, monkeypatch):
    """At 1024 tokens the tiny engine's text activations outweigh its tiny video's: the text phase
    is the peak, and a budget one byte short of it is refused, as any phase's, before any work."""
    import ltxengine.planning as planning
    from ltxengine.executor.plan import InsufficientMemoryError
    engine = ltx2_engine
    kwargs = _kwargs(32 * _seq())
    plan = engine.plan("a", **kwargs)
    assert plan.peak_phase == "text" and _text(plan).transient_bytes > 0
    calls = []
    monkeypatch.setattr(engine, "_generate", lambda a: calls.append(a))
    monkeypatch.setattr(planning, "available_bytes", lambda device: plan.peak_bytes - plan.held_bytes - 1)
    with pytest.raises(InsufficientMemoryError, match=r"generate: this generation needs .* at its peak \(text\)"):
        engine.generate("a", **kwargs)
    assert calls == []
    monkeypatch.setattr(planning, "available_bytes", lambda device: plan.peak_bytes - plan.held_bytes)
    engine.generate("a", **kwargs)
    assert len(calls) == 1


@pytest.fixture(scope="module")
def ltx25_engine(tmp_path_factory):
    pytest.importorskip("diffusers")
    from ltxengine import Engine
    from tests.pipelines.ltx2_fixtures import build_pipeline_version
    folder = build_pipeline_version(tmp_path_factory.mktemp("ltx25text"), "2.5")[2]
    return Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)


def test_gemma4_text_phase_is_traced(ltx25_engine, caplog):
    """LTX-2.5: Gemma 4 unified and the V2 feature extractor. Its config raises on a per-layer
    attribute read whole, which replay's signature of a Gemma layer would do: the trace failed and
    fell back to the hidden states alone (98 KB of 178 KB here) until the layers were left unlisted."""
    from ltxengine.ltx2.stages import encode_text
    engine = ltx25_engine
    a = _request(engine, _kwargs(_seq()))
    with caplog.at_level(logging.WARNING, logger="ltxengine.ltx2.plan"):
        planned = ltx2_plan.text_peak(engine, a, True, engine.transformer)
    assert "fake trace failed" not in caplog.text
    real = _real_peak(lambda: encode_text(engine, a, True))
    assert real <= planned <= 1.02 * real, (planned, real)
    assert planned > ltx2_plan.text_floor(engine.text_encoder, 2, _seq())


@pytest.mark.gpu
def test_offloaded_text_encoder_traced_on_cuda(tmp_path_factory, caplog):
    """The 24 GB set-up: Gemma parked in host memory, planned on CUDA. The trace follows (no
    fallback to the hidden states alone), and the measured peak of the text phase (weights already
    on the device, the encoder moved in, its activations) stays within the plan plus cuBLAS's
    workspace (allocated through the caching allocator, not traced)."""
    pytest.importorskip("diffusers")
    from ltxengine import Engine
    from ltxengine.ltx2.stages import encode_text
    from tests.pipelines.ltx2_fixtures import build_pipeline
    folder = build_pipeline(tmp_path_factory.mktemp("ltx2text"))[2]
    engine = Engine.from_pretrained(folder, device="cuda", dtype=torch.bfloat16, offload=("text_encoder",))
    kwargs = _kwargs(1024)
    with caplog.at_level(logging.WARNING, logger="ltxengine.ltx2.plan"):
        text = _text(engine.plan("a", **kwargs))
    assert "fake trace failed" not in caplog.text
    assert text.transient_bytes > ltx2_plan.text_floor(engine.text_encoder, 2, 1024)
    a = _request(engine, kwargs)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    encode_text(engine, a, True)
    measured = torch.cuda.max_memory_allocated()
    assert measured <= text.total_bytes + 64 * 2**20, (measured, text)
