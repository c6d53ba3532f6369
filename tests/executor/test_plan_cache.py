"""Memory plans kept on disk (ltxengine/executor/plan_cache.py, planning.disk_cached_plan): a new
engine, or a new process, reads the phases a fresh plan would give instead of tracing; every
ingredient of the key that changes makes a miss; a broken file or folder never fails a generation.

Most tests count and stub the engine's planner (``_plan``): whether it is called says hit or miss,
and a stub costs nothing. The hits that stand for real plans compare with ``engine.plan()``, which
always traces. conftest.py points LTXENGINE_CACHE_DIR at a folder per test and turns the cache off;
these tests turn it on."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from ltxengine import Engine
from ltxengine.executor import plan_cache
from ltxengine.executor.plan import InsufficientMemoryError, MemoryPlan, Phase
from ltxengine.planning import measure
from tests.executor import plan_fixtures
from tests.loading.lora_fixtures import random_lora
from tests.pipelines.fixtures import build_pipeline_folder, build_upsampler_folder

SIZE = dict(height=64, width=96, num_frames=9)
ltx2_engine = plan_fixtures.ltx2_engine


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("plancache")
    return build_pipeline_folder(root, "tiny-095"), build_upsampler_folder(root, "tiny-095")


def _engine(folders, **kwargs):
    engine = Engine.from_pretrained(folders[0], latent_upsampler=folders[1],
                                    **{"device": "cpu", "dtype": torch.float32, **kwargs})
    engine._generate = lambda a: None  # the memory check runs, the generation does not
    return engine


@pytest.fixture(scope="module")
def engine(folders):
    return _engine(folders)


@pytest.fixture()
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LTXENGINE_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("LTXENGINE_PLAN_CACHE", "1")
    monkeypatch.setattr(plan_cache, "_warned", set())
    return tmp_path / "c" / "plans"


def _files(cache) -> list:
    return sorted(p.name for p in cache.glob("*.json")) if cache.exists() else []


def _phases(plan) -> list:
    return [(p.name, p.weights_bytes, p.kept_bytes, p.transient_bytes) for p in plan.phases]


def _stub(engine, monkeypatch) -> list:
    """Replace the planner by one that counts its calls and returns a small plan (it fits the host)."""
    calls = []

    def plan(a):
        calls.append(a)
        plan = measure(MemoryPlan(device=engine.device, phases=[Phase("denoise", 1, 2, 3 + len(calls))]), engine)
        plan.suggestion = "(stub)"
        return plan
    monkeypatch.setattr(engine, "_plan", plan)
    return calls


def _fresh(engine, **kwargs):
    """generate as a new engine of the same weights would: nothing planned in memory yet."""
    engine._plans.clear()
    engine.__dict__.pop("_budget_plans", None)
    engine.generate("a", **{**SIZE, **kwargs})


def test_a_second_engine_reads_the_plan_and_does_not_trace(folders, engine, cache, monkeypatch):
    engine._plans.clear()
    engine.generate("a", **SIZE)
    assert len(_files(cache)) == 1
    other = _engine(folders)
    traced = []
    monkeypatch.setattr(other, "_plan", lambda a: traced.append(a))
    other.generate("a", **SIZE)
    assert traced == []
    (plan,) = other._plans.values()
    assert _phases(plan) == _phases(engine.plan("a", **SIZE))  # plan() always traces
    assert plan.available_bytes is not None and plan.held_bytes > 0  # measured now, not stored


def test_plan_warms_generates_check_in_memory_and_on_disk(folders, cache, monkeypatch):
    # an app plans its shapes at startup: generate's check then traces nothing, here or in the next process
    engine = _engine(folders)
    planned = engine.plan("a", **SIZE)  # traced
    assert len(_files(cache)) == 1
    traced = []
    monkeypatch.setattr(engine, "_plan", lambda a: traced.append(a))
    engine.generate("a", **SIZE)
    (kept,) = engine._plans.values()
    assert traced == [] and kept is not planned and _phases(kept) == _phases(planned)  # its own copy
    other = _engine(folders)
    monkeypatch.setattr(other, "_plan", lambda a: traced.append(a))
    other.generate("a", **SIZE)
    assert traced == [] and _phases(next(iter(other._plans.values()))) == _phases(planned)
    unchecked = _engine(folders)
    unchecked.check_memory = False
    unchecked.plan("a", **SIZE)
    assert unchecked._plans == {}


@pytest.mark.parametrize("change", ["height", "guidance", "offload", "stream", "dtype", "hook", "executor",
                                    "source", "versions"])
def test_each_key_ingredient_changed_misses(engine, cache, monkeypatch, change):
    calls = _stub(engine, monkeypatch)
    _fresh(engine)
    _fresh(engine)
    assert len(calls) == 1 and len(_files(cache)) == 1  # a hit: nothing else changed
    kwargs, undo = {}, None
    if change == "height":
        kwargs = dict(height=96)
    elif change == "guidance":
        kwargs = dict(guidance_scale=1.0)
    elif change == "offload":
        residency = engine.residency.with_offload((), engine.OFFLOADABLE)
        residency.offload = frozenset({"text_encoder"})  # as budget.assumed: on the CPU nothing moves
        monkeypatch.setattr(engine, "residency", residency)
    elif change == "stream":  # the text encoder's layers streamed: its weights term changes
        engine.stream_text_encoder(True)
        undo = lambda: engine.stream_text_encoder(False)  # noqa: E731
    elif change == "dtype":
        engine.vae.to(torch.float64)
        undo = lambda: engine.vae.to(torch.float32)  # noqa: E731
    elif change == "hook":  # what an fp8 LoRA branch is (loading/lora.py _Branch)
        undo = engine.transformer.transformer_blocks[0].ff.register_forward_hook(lambda m, a, out: out).remove
    elif change == "executor":
        monkeypatch.setattr(engine, "executor", None)
    elif change == "source":
        monkeypatch.setattr(plan_cache, "source_stamp", lambda: "an edited checkout")
    elif change == "versions":
        monkeypatch.setattr(plan_cache, "versions", lambda: ("0.1.0", "3.11", "2.14.0", "5.25.0", "3.9.0"))
    try:
        _fresh(engine, **kwargs)
        assert len(calls) == 2 and len(_files(cache)) == 2
    finally:
        if undo is not None:
            undo()
    monkeypatch.undo()  # everything back: the first key hits again
    calls = _stub(engine, monkeypatch)
    monkeypatch.setenv("LTXENGINE_CACHE_DIR", str(cache.parent))
    monkeypatch.setenv("LTXENGINE_PLAN_CACHE", "1")
    _fresh(engine)
    assert calls == []


def test_quantization_and_an_fp8_lora_branch_miss(folders, engine, cache, monkeypatch):
    fp8 = _engine(folders, dtype=torch.bfloat16, quantization="fp8-cast", fp8_lora="branch")
    calls = _stub(fp8, monkeypatch)
    _stub(engine, monkeypatch)
    _fresh(engine)
    _fresh(fp8)
    assert len(calls) == 1 and len(_files(cache)) == 2  # not the fp32 engine's plan
    modules = [f"transformer_blocks.{i}.{m}" for i in range(2) for m in ("attn1.to_q", "ff.net.0.proj")]
    fp8.load_lora_weights(random_lora(fp8.transformer, rename=str, modules=modules, prefix="transformer."), "a")
    _fresh(fp8)
    assert len(calls) == 2 and len(_files(cache)) == 3  # the branch's GEMMs: other activations
    fp8.unload_lora_weights()
    _fresh(fp8)
    assert len(calls) == 2


def test_corrupt_or_foreign_file_is_a_miss_and_rewritten(engine, cache, monkeypatch):
    calls = _stub(engine, monkeypatch)
    _fresh(engine)
    (name,) = _files(cache)
    stored = (cache / name).read_text()
    for bad in ["{not json", json.dumps({**json.loads(stored), "key": "another key"}),
                json.dumps({**json.loads(stored), "phases": [["denoise", -1, 0, 0]]}), "[]"]:
        (cache / name).write_text(bad)
        _fresh(engine)
        assert json.loads((cache / name).read_text())["key"] == json.loads(stored)["key"]
    assert len(calls) == 5
    _fresh(engine)
    assert len(calls) == 5 and not list(cache.glob(".tmp-*"))


def test_an_unwritable_folder_never_fails_a_generation(engine, cache, monkeypatch, tmp_path, caplog):
    calls = _stub(engine, monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("LTXENGINE_CACHE_DIR", str(blocker))  # plans/ under a file: mkdir fails, even as root
    with caplog.at_level(logging.WARNING, logger=plan_cache.__name__):
        _fresh(engine)
        _fresh(engine)
    assert len(calls) == 2
    assert [r.message for r in caplog.records if "cannot write" in r.message].__len__() == 1  # logged once


def test_the_folder_keeps_the_most_recently_used_plans(cache, monkeypatch):
    # Every upgrade or checkout edit starts new keys: without eviction the folder only grows.
    monkeypatch.setattr(plan_cache, "MAX_FILES", 3)
    plan = MemoryPlan(device=torch.device("cpu"), phases=[Phase("denoise", 1, 2, 3)])
    stamp = 1_000_000_000

    def age(*names):  # distinct, increasing mtimes: the filesystem's clock may be coarse
        nonlocal stamp
        for n in names:
            stamp += 10
            os.utime(plan_cache._path(n), (stamp, stamp))
    for n in "abc":
        plan_cache.store(n, plan)
        age(n)
    assert plan_cache.load("a") is not None  # a hit: "a" is now the most recently used
    (cache / ".tmp-old.json").write_text("{")  # left by a killed writer
    os.utime(cache / ".tmp-old.json", (stamp - 10**6, stamp - 10**6))
    (cache / ".tmp-live.json").write_text("{")  # a writer at work now
    plan_cache.store("d", plan)
    assert [n for n in "abcd" if plan_cache.load(n) is not None] == ["a", "c", "d"]
    assert sorted(p.name for p in cache.glob(".tmp-*")) == [".tmp-live.json"]


@pytest.mark.parametrize("off", ["env", "attribute"])
def test_turned_off_nothing_is_written(engine, cache, monkeypatch, off):
    calls = _stub(engine, monkeypatch)
    if off == "env":
        monkeypatch.setenv("LTXENGINE_PLAN_CACHE", "0")
    else:
        monkeypatch.setattr(engine, "plan_cache", False)
    _fresh(engine)
    _fresh(engine)
    assert len(calls) == 2 and not cache.exists()


def test_a_stored_plan_that_does_not_fit_is_planned_again_for_its_suggestion(engine, cache, monkeypatch):
    import ltxengine.planning as planning
    calls = _stub(engine, monkeypatch)
    _fresh(engine)
    monkeypatch.setattr(planning, "available_bytes", lambda device: 1)  # what measure compares with:
    monkeypatch.setattr(planning, "module_bytes", lambda *m, device=None: 0)  # 1 byte free, none held
    with pytest.raises(InsufficientMemoryError, match=r"\(stub\)"):
        _fresh(engine)
    assert len(calls) == 2 and len(_files(cache)) == 1


def test_memory_budget_options_read_from_disk(engine, cache, monkeypatch):
    plans = engine.plan_options("a", **SIZE)  # traced: the reference
    calls = _stub(engine, monkeypatch)
    engine.__dict__.pop("_budget_plans", None)
    again = engine.plan_options("a", **SIZE)
    assert calls == [] and len(_files(cache)) == len(plans) >= 3
    assert [(c, _phases(p)) for c, p in again] == [(c, _phases(p)) for c, p in plans]
    assert [p.choice for _, p in again] == [str(c) for c, _ in again]


def test_key_has_no_address_and_source_stamp_sees_an_edit(engine, cache, monkeypatch, tmp_path):
    _stub(engine, monkeypatch)
    _fresh(engine, two_stage=True)  # the plan key's reprs (TwoStage) included
    (name,) = _files(cache)
    key = json.loads((cache / name).read_text())["key"]
    assert "TwoStage(" in key and not plan_cache.ADDRESS.search(key)
    assert plan_cache.key_text(engine, (repr(object()),), "f") is None  # an address: never kept on disk
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    before = plan_cache.source_stamp((str(tmp_path / "pkg"),))
    (tmp_path / "pkg" / "a.py").write_text("x = 12\n")
    assert plan_cache.source_stamp((str(tmp_path / "pkg"),)) != before


def test_a_plan_written_by_one_process_is_read_by_another(folders, engine, cache, monkeypatch):
    engine._plans.clear()
    engine.generate("a", **SIZE)
    expected = [list(p) for p in _phases(engine._plans[next(iter(engine._plans))])]
    script = textwrap.dedent(f"""
        import json, torch
        from ltxengine import Engine
        e = Engine.from_pretrained({str(folders[0])!r}, device="cpu", dtype=torch.float32,
                                   latent_upsampler={str(folders[1])!r})
        traced = []
        e._plan = lambda a: traced.append(a)
        e._generate = lambda a: None
        e.generate("a", height=64, width=96, num_frames=9)
        (plan,) = e._plans.values()
        print(json.dumps([len(traced), [[p.name, p.weights_bytes, p.kept_bytes, p.transient_bytes]
                                        for p in plan.phases]]))
    """)
    env = {**os.environ, "LTXENGINE_CACHE_DIR": str(cache.parent), "LTXENGINE_PLAN_CACHE": "1"}
    out = subprocess.run([sys.executable, "-c", script], cwd=cache.parent.parent, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [0, expected]


def test_ltx2_plans_are_read_back_equal(ltx2_engine, cache, monkeypatch):
    """LTX-2's plan key (guidance params, two-stage recipe, IC-LoRA references) has no address either:
    a fresh in-memory cache reads the stored plan, equal to a traced one."""
    from tests.pipelines.ltx2_fixtures import SEQ
    kwargs = dict(**SIZE, max_sequence_length=SEQ, pipeline="one-stage")
    monkeypatch.setattr(ltx2_engine, "_generate", lambda a: None)
    ltx2_engine._plans.clear()
    ltx2_engine.generate("a", **kwargs)
    traced = []
    monkeypatch.setattr(ltx2_engine, "_plan", lambda a: traced.append(a))
    ltx2_engine._plans.clear()
    ltx2_engine.generate("a", **kwargs)
    assert traced == [] and len(_files(cache)) == 1
    monkeypatch.undo()
    (plan,) = ltx2_engine._plans.values()
    assert _phases(plan) == _phases(ltx2_engine.plan("a", **kwargs))


@pytest.mark.gpu
def test_on_cuda_the_key_holds_the_device_and_a_second_engine_hits(folders, engine, cache, monkeypatch):
    """On CUDA the plan (free device memory, weights on the device) is keyed on the GPU's name and
    capability too; the CPU engine's plan of the same request is another file."""
    stamp = plan_cache.device_stamp(torch.device("cuda"))
    assert stamp[1] == torch.cuda.get_device_name() and stamp[2] == list(torch.cuda.get_device_capability())
    gpu = _engine(folders, device="cuda")
    gpu._plans.clear()
    gpu.generate("a", **SIZE)
    engine._plans.clear()
    engine.generate("a", **SIZE)
    assert len(_files(cache)) == 2
    other = _engine(folders, device="cuda")
    traced = []
    monkeypatch.setattr(other, "_plan", lambda a: traced.append(a))
    other.generate("a", **SIZE)
    assert traced == []
    (plan,) = other._plans.values()
    assert _phases(plan) == _phases(gpu.plan("a", **SIZE))
