"""engine.plan(): the memory of a generation phase by phase, before it runs (ltxengine/planning.py,
ltx_video/plan.py, ltx2/plan.py, ltxengine/executor/plan.py). On CPU the accounting, the search for
what fits, the check against host memory and that planning allocates nothing are checked; the
GPU-marked test compares the prediction with the measured peak."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import ltxengine.ltx_video.plan as ltx_video_plan
import ltxengine.planning as planning
from ltxengine import Engine, TwoStage
from ltxengine.executor.plan import (InsufficientMemoryError, MemoryPlan, MemoryPlanError, Phase,
                                     host_available_bytes, largest_fitting, module_bytes)
from ltxengine.executor.residency import Residency
from tests.executor import plan_fixtures
from tests.pipelines.fixtures import build_pipeline_folder, make_image

TINY = dict(height=64, width=96, num_frames=9, num_inference_steps=2)


engine, ltx2_engine = plan_fixtures.engine, plan_fixtures.ltx2_engine  # the tiny engines' fixtures


def test_phases_follow_the_generation(engine):
    one = engine.plan("a", **TINY)
    assert [p.name for p in one.phases] == ["text", "denoise", "decode"]
    two = engine.plan("a", **{**TINY, "height": 128, "width": 192},
                      two_stage=TwoStage(downscale_factor=0.5, num_inference_steps=2, denoise_strength=0.5))
    assert [p.name for p in two.phases] == ["text", "denoise", "upsample", "refine", "decode"]
    assert two.peak_bytes == max(p.total_bytes for p in two.phases)
    assert "memory plan on cpu" in str(one)
    weights = module_bytes(engine.transformer, engine.vae, engine.latent_upsampler, engine.text_encoder.model)
    assert all(p.weights_bytes == weights for p in one.phases)  # everything resident


def test_activations_grow_with_the_clip_and_executor_buffers_are_kept(engine):
    small, big = engine.plan("a", **TINY), engine.plan("a", **{**TINY, "num_frames": 33})
    step = {p.name: p for p in small.phases}, {p.name: p for p in big.phases}
    # 5 vs 2 latent frames; at this tiny size the text (128 tokens) outweighs the 12-30 video tokens
    assert step[1]["denoise"].transient_bytes > step[0]["denoise"].transient_bytes
    assert step[1]["decode"].transient_bytes > 2 * step[0]["decode"].transient_bytes
    assert step[0]["denoise"].kept_bytes > 0 and step[0]["decode"].kept_bytes >= step[0]["denoise"].kept_bytes
    saved = engine.executor
    try:
        engine.executor = None  # no executor: no static buffers kept
        assert all(p.kept_bytes == 0 for p in engine.plan("a", **TINY).phases)
    finally:
        engine.executor = saved


def test_offloaded_text_encoder_counts_only_while_encoding(engine):
    saved = engine.residency
    try:  # the accounting only (nothing moves while planning), as on a GPU engine
        engine.residency = Residency("cuda", offload=("text_encoder",), known=engine.OFFLOADABLE)
        phases = {p.name: p for p in engine.plan("a", **TINY).phases}
    finally:
        engine.residency = saved
    te = module_bytes(engine.text_encoder.model)
    assert phases["text"].weights_bytes - phases["denoise"].weights_bytes == te > 0


def _text_request(engine, **kwargs):
    import inspect
    bound = inspect.signature(engine.generate).bind("a cat on a mat", None, **{**TINY, **kwargs})
    bound.apply_defaults()
    return engine._request(dict(bound.arguments))


def test_text_phase_counts_what_encode_prompt_allocates(engine):
    """T5 traced on fake weights (planning.on_fake_weights). The reference: what encode_prompt
    allocates, run for real under inference mode as generate runs it. Unguided, the plan is at or
    above it by the mask it passes: the (1, T) int64 ones made outside the real call, and what T5
    makes of them (measured: T^2 + 8T bytes with the pipeline's mask, 2T^2 + 8T at 128 and
    1.5T^2 + 8T at 256 tokens without it; negligible next to T5-XXL's activations). Guided, both
    prompts in one batch is above encode_prompt's two calls one after the other (by 15% here)."""
    from ltxengine.executor.memory import trace_allocations
    from ltxengine.ltx_video.stages import encode_prompt
    for cfg, tokens in ((False, 128), (False, 256), (True, 128)):
        kwargs = dict(max_sequence_length=tokens, guidance_scale=3.0 if cfg else 1.0)
        planned = engine.plan("a", **{**TINY, **kwargs}).phases[0].transient_bytes
        a = _text_request(engine, **kwargs)
        for use_mask in (False, True):  # LTXPipeline's call / LTXConditionPipeline's
            with torch.inference_mode():
                real = trace_allocations(lambda: encode_prompt(engine, a.prompt, None, tokens, cfg, use_mask),
                                         fake=False).live_peak_bytes
            assert real <= planned <= (1.2 * real if cfg else real + 2 * tokens ** 2 + 8 * tokens), \
                (cfg, tokens, use_mask, planned, real)


def test_text_trace_reads_no_encoder_weight(engine, caplog):
    """An offloaded T5 is parked in host memory while a CUDA engine plans: a trace of its weights
    where they are mixes devices and fails (FakeTensorDeviceMismatchError, cpu and cuda:0, with
    fake CUDA inputs: what a CPU-only torch can show; it cannot trace on past T5's mask there).
    So every layer computes with fake weights on the engine's device, and weights anywhere else
    (here: on the meta device, holding no data) give the same count."""
    import copy
    import logging
    from torch._subclasses.fake_tensor import FakeTensor
    from ltxengine.models.text_encoder import T5TextEncoder
    te = engine.text_encoder
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append((type(m.weight), m.weight.device)))
             for m in te.model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))]
    try:
        with torch.inference_mode():  # as plans run
            ltx_video_plan._trace_text(engine, te.model, (1, 8))
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) > 10 and set(seen) == {(FakeTensor, engine.device)}
    expected = engine.plan("a", **TINY).phases[0].transient_bytes
    meta = T5TextEncoder(copy.deepcopy(te.model).to("meta"), te.tokenizer)
    engine.text_encoder = meta
    try:
        with caplog.at_level(logging.WARNING, logger="ltxengine.ltx_video.plan"):
            assert engine.plan("a", **TINY).phases[0].transient_bytes == expected > 0
    finally:
        engine.text_encoder = te
        engine.__dict__.pop("_phase_peaks", None)  # keyed on id(meta.model): the id may be reused
    assert "fake trace failed" not in caplog.text


def test_a_text_trace_that_fails_is_logged(engine, monkeypatch, caplog):
    import logging

    def broken(*args):
        raise RuntimeError("no fake kernel for some op")
    monkeypatch.setattr(ltx_video_plan, "_trace_text", broken)
    engine.__dict__.pop("_phase_peaks", None)
    try:
        with caplog.at_level(logging.WARNING, logger="ltxengine.ltx_video.plan"):
            plan = engine.plan("a", **TINY)
    finally:
        engine.__dict__.pop("_phase_peaks", None)
    assert plan.phases[0].transient_bytes == 0
    assert ("the text encoder's fake trace failed (RuntimeError: no fake kernel for some op); its activations "
            "(hidden states, attention scores, MLP intermediates, the embeddings) are not counted") in caplog.text


def test_offloaded_vae_encoder_counts_only_where_conditions_are_encoded(engine):
    saved = engine.residency
    try:
        engine.residency = Residency("cuda", offload=("vae_encoder",), known=engine.OFFLOADABLE)
        t2v = {p.name: p for p in engine.plan("a", **TINY).phases}
        i2v = {p.name: p for p in engine.plan("a", **TINY, image=make_image(64, 96, 0)).phases}
    finally:
        engine.residency = saved
    enc = module_bytes(engine.vae.encoder)
    assert enc > 0 and t2v["denoise"].weights_bytes == t2v["decode"].weights_bytes
    assert i2v["denoise"].weights_bytes - i2v["decode"].weights_bytes == enc


def test_a_plan_that_does_not_fit_names_the_largest_that_does(engine, monkeypatch):
    full = engine.plan("a", **{**TINY, "num_frames": 41})
    smaller = engine.plan("a", **{**TINY, "num_frames": 17})
    budget = (smaller.peak_bytes + engine.plan("a", **{**TINY, "num_frames": 25}).peak_bytes) // 2
    # the weights already on the device count as available on top of the free memory
    monkeypatch.setattr(planning, "available_bytes", lambda device: budget - full.held_bytes)
    plan = engine.plan("a", **{**TINY, "num_frames": 41})
    assert plan.fits is False and plan.peak_bytes == full.peak_bytes
    assert "num_frames=17 at 64x96" in plan.suggestion
    assert "does NOT fit" in str(plan)


def test_memory_check_refuses_before_any_work(engine, monkeypatch):
    for where in ("ltxengine.engine", "ltxengine.planning"):  # as if 1 byte were free
        monkeypatch.setattr(f"{where}.available_bytes", lambda device: 1)
    calls = []
    monkeypatch.setattr(engine, "_generate", lambda a: calls.append(a))
    with pytest.raises(InsufficientMemoryError, match=r"generate: this generation needs .* at its peak \(decode\), "
                                                      r"1 B are available on cpu"):
        engine.generate("a", **TINY)
    assert calls == []
    engine.check_memory = False
    try:
        engine.generate("a", **TINY)
    finally:
        engine.check_memory = True
    assert len(calls) == 1


def test_largest_fitting_bisects():
    assert largest_fitting(range(10), lambda n: n * 10, 45) == 4
    assert largest_fitting(range(10), lambda n: n * 10, -1) is None
    plan = MemoryPlan(torch.device("cpu"), [Phase("a", 1, 2, 3), Phase("b", 10, 0, 0)], available_bytes=9)
    assert plan.peak_phase == "b" and plan.fits is False


@pytest.mark.gpu
def test_predicted_peak_within_5_percent_of_measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("plangpu")
    folder = build_pipeline_folder(root, "tiny-095")
    engine = Engine.from_pretrained(folder, device="cuda", dtype=torch.bfloat16)
    kw = dict(height=512, width=768, num_frames=121, num_inference_steps=2)
    plan = engine.plan("a", **kw)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    engine.generate("a", **kw)
    measured = torch.cuda.max_memory_allocated()
    assert abs(plan.peak_bytes - measured) <= 0.05 * measured, (plan.peak_bytes, measured, str(plan))


def test_ltx2_plan_has_the_two_stage_phases(ltx2_engine):
    from tests.pipelines.ltx2_fixtures import SEQ
    engine = ltx2_engine
    small = engine.plan("a", height=128, width=128, num_frames=9, num_inference_steps=2, max_sequence_length=SEQ)
    assert [p.name for p in small.phases] == ["text", "denoise", "upsample", "refine", "decode"]
    big = engine.plan("a", height=128, width=128, num_frames=25, num_inference_steps=2, max_sequence_length=SEQ)
    assert {p.name: p.transient_bytes for p in big.phases}["refine"] > \
        {p.name: p.transient_bytes for p in small.phases}["refine"]
    one = engine.plan("a", height=128, width=128, num_frames=9, pipeline="one-stage", max_sequence_length=SEQ)
    assert [p.name for p in one.phases] == ["text", "denoise", "decode"]


def test_a_failing_plan_stops_the_generation(engine, monkeypatch):
    """A plan that fails leaves the fit unknown: the generation does not go on unchecked (it could
    take the machine down); the error says how to skip the check."""
    def broken(a):
        raise RuntimeError("no fake kernel for some op")
    monkeypatch.setattr(engine, "_plan", broken)
    engine._plans.clear()  # not planned yet (an earlier engine.plan() of this request would serve the check)
    calls = []
    monkeypatch.setattr(engine, "_generate", lambda a: calls.append(a))
    with pytest.raises(MemoryPlanError, match=r"generate: the memory plan of this generation failed \(RuntimeError: "
                                              r"no fake kernel for some op\).*nothing was generated.*"
                                              r"engine.check_memory = False") as info:
        engine.generate("a", **{**TINY, "num_frames": 17})
    assert calls == [] and isinstance(info.value.__cause__, RuntimeError)
    engine.check_memory = False
    try:
        engine.generate("a", **{**TINY, "num_frames": 17})
    finally:
        engine.check_memory = True
    assert len(calls) == 1


# -- the CPU: host memory, and planning that allocates nothing -----------------------------------------

LINUX = pytest.mark.skipif(not Path("/proc/meminfo").is_file(), reason="host memory is read from /proc/meminfo")


def test_host_available_bytes_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   12345 kB\n")
    assert host_available_bytes(str(meminfo)) == 12345 * 1024
    assert host_available_bytes(str(tmp_path / "missing")) is None


@LINUX
def test_cpu_plans_against_host_memory(engine):
    plan = engine.plan("a", **TINY)
    weights = module_bytes(engine.transformer, engine.vae, engine.latent_upsampler, engine.text_encoder.model)
    assert plan.available_bytes is not None and plan.available_bytes > 0
    assert plan.held_bytes == weights  # on the CPU every weight is already in host memory
    assert plan.fits is True and re.search(r"available .* free \+ .* of weights already there: fits", str(plan))


def test_weights_already_on_the_device_count_as_available(engine, monkeypatch):
    """The phases count the weights; the free memory no longer has them: they must not be needed twice."""
    plan = engine.plan("a", **TINY)
    assert plan.held_bytes > 0
    monkeypatch.setattr(planning, "available_bytes", lambda device: plan.peak_bytes - plan.held_bytes)
    assert engine.plan("a", **TINY).fits is True
    monkeypatch.setattr(planning, "available_bytes", lambda device: plan.peak_bytes - plan.held_bytes - 1)
    assert engine.plan("a", **TINY).fits is False


@LINUX
def test_cpu_generate_refuses_what_host_memory_cannot_hold(ltx2_engine, monkeypatch):
    """~10 TB at its peak: refused with the plan before any work (the CPU had no check at all)."""
    from tests.pipelines.ltx2_fixtures import SEQ
    calls = []
    monkeypatch.setattr(ltx2_engine, "_generate", lambda a: calls.append(a))
    with pytest.raises(InsufficientMemoryError, match=r"(?s)generate: this generation needs [\d.]+ GiB at its peak "
                                                      r"\(decode\), .* are available on cpu.*memory plan on cpu"):
        ltx2_engine.generate("a", height=8192, width=8192, num_frames=4097, max_sequence_length=SEQ)
    assert calls == []


def _reset_peak_rss() -> bool:
    """Reset the process's peak resident memory (VmHWM; Linux >= 4.0); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss() -> int:
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


@pytest.mark.parametrize("family", ["ltx-video", "ltx-2"])
def test_planning_allocates_nothing(family, request, monkeypatch):
    """The largest request the argument bounds allow: ~10 TB at its peak, ~1 GiB of latents.
    Planning it takes no memory beyond the tracer's bookkeeping (it used to build latent-size
    zero tensors: +1.0 GiB of resident memory for LTX-Video, +1.1 GiB for LTX-2)."""
    engine = request.getfixturevalue("engine" if family == "ltx-video" else "ltx2_engine")
    extra = {}
    if family == "ltx-2":
        from tests.pipelines.ltx2_fixtures import SEQ
        extra["max_sequence_length"] = SEQ
    # the frame/size search would trace some 15 more plans of this size: the same code, tested above
    monkeypatch.setattr(ltx_video_plan, "_suggest", lambda engine, a, budget: "(search skipped)")
    engine.plan("a", height=128, width=128, num_frames=9, **extra)  # the tracer's one-time set-up
    if not _reset_peak_rss():
        pytest.skip("the peak resident memory cannot be reset (/proc/self/clear_refs)")
    before = _peak_rss()
    plan = engine.plan("a", height=8192, width=8192, num_frames=4097, **extra)
    grown = _peak_rss() - before
    assert grown < 64 * 2**20, f"planning grew the peak resident memory by {grown / 2**20:.0f} MiB"
    phases = {p.name: p for p in plan.phases}
    frames = 4097 * 8192 * 8192 * 3 * 4  # the decoded video alone, float32
    latents = 513 * 256 * 256 * engine.transformer.config.in_channels * 4
    assert plan.peak_phase == "decode" and phases["decode"].transient_bytes > frames
    assert max(p.kept_bytes for p in plan.phases) > 2 * latents  # the executor's latents in and out, at least
    if plan.available_bytes is not None:
        assert plan.fits is False


@pytest.mark.gpu
def test_offloaded_t5_traced_on_cuda(tmp_path_factory, caplog):
    """T5 parked in host memory, planned on CUDA: the trace follows (it used to fail on the device
    mismatch and count 0 without a word), and the measured peak of the text phase (the weights on
    the device, T5 moved in, its activations) stays within the plan plus cuBLAS's workspace
    (allocated through the caching allocator, not traced)."""
    import logging
    from ltxengine.ltx_video.stages import encode_prompt
    folder = build_pipeline_folder(tmp_path_factory.mktemp("plant5"), "tiny-095")
    engine = Engine.from_pretrained(folder, device="cuda", dtype=torch.bfloat16, offload=("text_encoder",))
    assert next(engine.text_encoder.model.parameters()).device.type == "cpu"
    with caplog.at_level(logging.WARNING, logger="ltxengine.ltx_video.plan"):
        text = engine.plan("a", **TINY, max_sequence_length=256).phases[0]
    assert "fake trace failed" not in caplog.text and text.transient_bytes > 0
    a = _text_request(engine, max_sequence_length=256)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        encode_prompt(engine, a.prompt, None, 256, True, False)
    measured = torch.cuda.max_memory_allocated()
    assert measured <= text.total_bytes + 64 * 2**20, (measured, text)
