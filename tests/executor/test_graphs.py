"""The step executor (ltxengine/executor/graphs.py): bucket keys, static buffers, the copy-once rule,
invalidation, and that generations through it equal the plain path exactly. CPU runs the "eager"
mode, which moves data exactly as graph replay does (static inputs and outputs); GPU-marked tests
capture and replay CUDA graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltxengine import Engine, TwoStage
from ltxengine.executor.graphs import GraphExecutor, bucket_key, resolve_mode
from ltxengine.executor.residency import Residency
from tests.helpers import MoveRecorder
from tests.pipelines.fixtures import build_pipeline_folder, build_upsampler_folder, make_image


def axpy(x, y, a):
    return x * a + y


# -- keys and modes -------------------------------------------------------------------------------------

def test_bucket_key_separates_what_a_graph_specialises_on():
    x = torch.zeros(2, 3)
    base = bucket_key("s", [x, 1.5], state=("w", 0))
    assert base == bucket_key("s", [torch.ones(2, 3), 1.5], state=("w", 0))  # values of tensors do not matter
    assert base != bucket_key("s", [torch.zeros(3, 2), 1.5], state=("w", 0))  # shape
    assert base != bucket_key("s", [x.double(), 1.5], state=("w", 0))  # dtype
    assert base != bucket_key("s", [torch.zeros(3, 2).t(), 1.5], state=("w", 0))  # strides
    assert base != bucket_key("s", [x, 2.5], state=("w", 0))  # a non-tensor argument
    assert base != bucket_key("s", [x, 1.5], state=("w", 1))  # the weights' state
    assert base != bucket_key("t", [x, 1.5], state=("w", 0))  # the step


def test_unhashable_argument_and_bad_modes_are_refused():
    with pytest.raises(ValueError, match=r"executor 's': argument 1 must be a tensor or a hashable value, got set"):
        bucket_key("s", [torch.zeros(1), {1}])
    with pytest.raises(ValueError, match=r"executor: mode must be one of .*got 'fast'"):
        resolve_mode("fast", "cpu")
    with pytest.raises(ValueError, match=r"executor: mode 'graphs' needs a CUDA device, got cpu"):
        resolve_mode("graphs", "cpu")
    assert resolve_mode("auto", "cpu") == "eager"
    with pytest.raises(ValueError, match=r"executor: warmup must be an int >= 1 .*got 0"):
        GraphExecutor("cpu", warmup=0)
    with pytest.raises(ValueError, match=r"executor: a step must return tensors .*got str"):
        GraphExecutor("cpu").run("s", lambda x: "no", torch.zeros(1))


# -- static buffers ---------------------------------------------------------------------------------------

def test_results_are_static_buffers_and_feeding_them_back_is_copied_every_time():
    ex = GraphExecutor("cpu")
    x, y = torch.randn(5), torch.randn(5)
    out = ex.run("axpy", axpy, x, y, 2.0)
    first = out.clone()
    torch.testing.assert_close(first, x * 2 + y, rtol=0, atol=0)
    # the step's output fed back: the same object every call, rewritten every call -> must be copied
    expect = first
    for _ in range(3):
        expect = expect * 2 + y
        out2 = ex.run("axpy", axpy, out, y, 2.0)
        assert out2 is out  # the same static buffer comes back
        assert torch.equal(out2, expect)
    (stats,) = ex.buckets
    assert stats.calls == 4 and stats.copies_skipped == 3  # y (same object, never written) copied once


def test_a_constant_argument_is_copied_once_and_a_new_object_again():
    ex = GraphExecutor("cpu")
    x, y = torch.randn(4), torch.randn(4)
    ex.run("axpy", axpy, x, y, 1.0)
    ex.run("axpy", axpy, x.clone(), y, 1.0)
    assert ex.buckets[0].copies_skipped == 1
    y2 = y + 1  # a new object: copied even though shapes match
    assert torch.equal(ex.run("axpy", axpy, x, y2, 1.0), x + y2)


def test_nested_arguments_and_outputs():
    ex = GraphExecutor("cpu")

    def step(pair, scale, cfg):
        a, b = pair
        return {"sum": (a + b) * scale, "diff": a - b if cfg["sub"] else a}

    a, b = torch.randn(3), torch.randn(3)
    out = ex.run("nested", step, (a, b), torch.tensor(2.0), {"sub": True})
    assert torch.equal(out["sum"], (a + b) * 2) and torch.equal(out["diff"], a - b)
    ex.run("nested", step, (a, b), torch.tensor(2.0), {"sub": False})
    assert len(ex.buckets) == 2  # the flag in the dict is part of the key


def test_state_change_drops_every_bucket_and_prepare_goes_largest_first():
    ex = GraphExecutor("cpu")
    ex.set_state(("w", 0))
    ex.prepare([("axpy", axpy, (torch.zeros(2), torch.zeros(2), 1.0)),
                ("axpy", axpy, (torch.zeros(8), torch.zeros(8), 1.0))])
    assert [b.key[1][0][1] for b in ex.buckets] == [(8,), (2,)]
    ex.set_state(("w", 0))
    assert len(ex.buckets) == 2
    ex.set_state(("w", 1))
    assert ex.buckets == [] and ex.invalidations == ["state changed from ('w', 0) to ('w', 1)"]


def test_a_step_that_cannot_be_captured_warns_and_runs_eagerly(monkeypatch):
    ex = GraphExecutor("cpu")
    ex.mode = "graphs"  # as on a CUDA device, with a capture that fails

    def no_capture(bucket, fn):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(ex, "_capture", no_capture)
    x, y = torch.randn(3), torch.randn(3)
    with pytest.warns(UserWarning, match=r"executor 'axpy': CUDA graph capture failed \(RuntimeError: operation not "
                                         r"permitted.*this bucket runs eagerly"):
        out = ex.run("axpy", axpy, x, y, 2.0)
    assert torch.equal(out, x * 2 + y) and ex.buckets[0].mode == "eager (capture failed: RuntimeError)"
    assert torch.equal(ex.run("axpy", axpy, out, y, 2.0), (x * 2 + y) * 2 + y)  # no second warning, same bucket


# -- generations through the executor equal the plain path --------------------------------------------------

@pytest.fixture(scope="module")
def ltxv(tmp_path_factory):
    root = tmp_path_factory.mktemp("exec")
    folder, up = build_pipeline_folder(root, "tiny-095"), build_upsampler_folder(root, "tiny-095")
    return Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, latent_upsampler=up)


def _both(engine, **kw):
    saved = engine.executor
    try:
        engine.executor = None
        plain = engine.generate("a red car", seed=3, height=64, width=96, num_frames=9, num_inference_steps=3, **kw)
        engine.executor = saved
        run = engine.generate("a red car", seed=3, height=64, width=96, num_frames=9, num_inference_steps=3, **kw)
    finally:
        engine.executor = saved
    return plain, run


@pytest.mark.parametrize("kw", [
    {},
    {"guidance_rescale": 0.7},
    {"image": make_image(64, 96, 1)},
    {"pipeline": "condition", "image": make_image(64, 96, 2)},
    {"two_stage": TwoStage(downscale_factor=0.5, num_inference_steps=2, denoise_strength=0.5)},
], ids=["t2v", "rescale", "i2v", "condition", "two-stage"])
def test_ltx_video_generation_through_the_executor_equals_the_plain_path(ltxv, kw):
    plain, run = _both(ltxv, **kw)
    assert torch.equal(plain.latents, run.latents)
    assert (plain.video == run.video).all()
    assert ltxv.executor.mode == "eager" and ltxv.executor.buckets


def test_ltx_video_executor_reuses_buckets_across_generations(ltxv):
    ltxv.generate("a", seed=1, height=64, width=96, num_frames=9, num_inference_steps=2)
    before = {b.key: b.calls for b in ltxv.executor.buckets}
    ltxv.generate("b", seed=2, height=64, width=96, num_frames=9, num_inference_steps=2, guidance_scale=5.0)
    after = {b.key: b.calls for b in ltxv.executor.buckets}
    grown = [k for k in after if after[k] > before.get(k, 0)]
    assert len(grown) == 1 and grown[0] in before  # the same bucket served the new prompt and scale


def test_ltx2_generation_through_the_executor_equals_the_plain_path(tmp_path_factory):
    pytest.importorskip("diffusers")
    from tests.pipelines.ltx2_fixtures import SEQ, build_pipeline
    engine = Engine.from_pretrained(build_pipeline(tmp_path_factory.mktemp("ltx2x"))[2], device="cpu",
                                    dtype=torch.float32)
    kw = dict(height=128, width=128, num_frames=9, num_inference_steps=2, max_sequence_length=SEQ, seed=4)
    saved = engine.executor
    engine.executor = None
    plain = engine.generate("a cat", **kw)
    engine.executor = saved
    run = engine.generate("a cat", **kw)
    assert torch.equal(plain.latents, run.latents)
    assert np.array_equal(plain.audio, run.audio)
    assert {b.key[0] for b in engine.executor.buckets} == {("ltx2:x0", ())}


# -- residency ---------------------------------------------------------------------------------------------

def test_offloaded_components_visit_the_device_only_while_used():
    r = Residency("cuda:0", offload=("text_encoder",), known=("text_encoder", "latent_upsampler"))
    te, up = MoveRecorder(), MoveRecorder()
    r.park("text_encoder", te)
    r.park("latent_upsampler", up)
    assert te.moves == ["cpu"] and up.moves == ["cuda:0"]
    with pytest.raises(RuntimeError, match="boom"):
        with r.use("text_encoder", te):
            assert te.moves[-1] == "cuda:0"
            raise RuntimeError("boom")
    assert te.moves[-1] == "cpu"  # back on the host even after a failure
    with r.use("latent_upsampler", up):
        pass
    assert up.moves == ["cuda:0"]  # resident: never moved


def test_engine_offload_option_is_checked_before_loading_and_vae_encoder_visits_only_for_conditions(ltxv):
    with pytest.raises(ValueError, match=r"offload: components that can be offloaded are \('text_encoder', "
                                         r"'latent_upsampler', 'vae_encoder', 'transformer_between_stages', "
                                         r"'transformer', 'text_encoder_layers'\), got \('vae',\)"):
        Engine.from_pretrained("/nonexistent", device="cpu", offload=("vae",))
    moves = []
    saved = ltxv.residency
    try:  # record the moves of an engine whose device is not the host (nothing really moves on CPU)
        ltxv.residency = Residency("cpu", known=ltxv.OFFLOADABLE)
        ltxv.residency.offload = frozenset({"vae_encoder"})
        ltxv.residency.device = torch.device("cpu")
        real_to = ltxv.vae.encoder.to
        ltxv.vae.encoder.to = lambda device: moves.append(str(device)) or real_to(device)
        kw = dict(seed=0, height=64, width=96, num_frames=9, num_inference_steps=1)
        ltxv.generate("a", **kw)
        assert moves == []  # text-to-video never encodes
        ltxv.generate("a", image=make_image(64, 96, 1), **kw)
        assert moves == ["cpu", "cpu"]  # to the device for the encode, back after
    finally:
        ltxv.residency = saved
        del ltxv.vae.encoder.to


def test_offload_names_are_checked_and_cpu_engines_ignore_offload():
    with pytest.raises(ValueError, match=r"offload: components that can be offloaded are .*got 'vae'"):
        Residency("cuda:0", offload=("vae",), known=("text_encoder",))
    assert Residency("cpu", offload="text_encoder", known=("text_encoder",)).offload == frozenset()


# -- GPU ----------------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_graph_replay_equals_eager_and_allocates_nothing():
    lin = torch.nn.Linear(256, 256, device="cuda")

    def step(x, y):
        return torch.nn.functional.gelu(lin(x)) + y

    g, e = GraphExecutor("cuda", "graphs"), GraphExecutor("cuda", "eager")
    x, y = torch.randn(64, 256, device="cuda"), torch.randn(64, 256, device="cuda")
    out = g.run("s", step, x, y)
    for _ in range(3):
        torch.cuda.synchronize()
        before = torch.cuda.memory_stats()["allocation.all.allocated"]
        out = g.run("s", step, out, y)
        torch.cuda.synchronize()
        assert torch.cuda.memory_stats()["allocation.all.allocated"] == before  # replay allocates nothing
    ref = e.run("s", step, x, y)
    for _ in range(3):
        ref = e.run("s", step, ref, y)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert g.buckets[0].mode == "graphs" and g.buckets[0].capture_seconds > 0
    g.run("s", step, torch.randn(32, 256, device="cuda"), torch.randn(32, 256, device="cuda"))
    assert len(g.buckets) == 2  # a new shape: captured again


@pytest.mark.gpu
def test_engine_graphs_equal_eager_on_the_gpu(tmp_path_factory):
    root = tmp_path_factory.mktemp("execgpu")
    folder = build_pipeline_folder(root, "tiny-095")
    engine = Engine.from_pretrained(folder, device="cuda", dtype=torch.float32)
    assert engine.executor.mode == "graphs"
    kw = dict(seed=3, height=64, width=96, num_frames=9, num_inference_steps=3)
    graphed = engine.generate("a red car", **kw)
    engine.executor = GraphExecutor("cuda", "eager")
    eager = engine.generate("a red car", **kw)
    torch.testing.assert_close(graphed.latents, eager.latents, rtol=0, atol=0)



@pytest.mark.parametrize("kw", [{}, {"image": make_image(64, 96, 1)}], ids=["t2v", "i2v"])
def test_paged_executor_serves_the_step_from_the_arena_and_equals_the_plain_path(ltxv, kw):
    """Eager mode with memory="paged": each step's activations are traced once, planned into arena
    pages and served from them (ltxengine/executor/serve.py) -- the data flow a captured graph has
    on the GPU. The arena is poisoned with NaN after the buckets exist: a planned buffer read
    before it is written would show in the latents."""
    gen = dict(seed=3, height=64, width=96, num_frames=9, num_inference_steps=3, **kw)
    saved = ltxv.executor
    paged = GraphExecutor("cpu", "eager", memory="paged")
    try:
        ltxv.executor = None
        plain = ltxv.generate("a red car", **gen)
        ltxv.executor = paged
        ltxv.generate("warm up the buckets", **gen)
        with torch.inference_mode():  # the arena was made inside generate()'s inference mode
            for pool in paged._page_pools:
                pool.arena.fill_(0xFF)  # 0xFFFFFFFF is a NaN in fp32 (and bf16)
        run = ltxv.generate("a red car", **gen)
    finally:
        ltxv.executor = saved
    assert torch.equal(plain.latents, run.latents)
    assert paged.buckets and all(b.memory == "paged" for b in paged.buckets)
    assert all(0 < b.arena_bytes <= b.planned_peak_bytes for b in paged.buckets)
    assert sum(p.served_bytes for p in paged._page_pools) > 0
