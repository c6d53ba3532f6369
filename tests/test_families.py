"""Engine families (issue 18): each family's engine class registers itself with
``Engine.from_pretrained`` (``class LTX2Engine(Engine, family="ltx-2", detect=is_ltx2)``), so
engine.py never imports a family module; the public names of both families are top-level exports."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest
import torch

import ltxengine
from ltxengine import engine as engine_module
from ltxengine.ltx2 import engine as ltx2_engine
from ltxengine.engine import Engine


def _index_only(folder, class_name: str):
    """A folder whose model_index.json names the pipeline: enough for detection, no weights."""
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    return folder


def test_the_ltx2_family_is_registered_by_its_own_module():
    detect, engine_cls = engine_module._FAMILIES["ltx-2"]
    assert engine_cls is ltx2_engine.LTX2Engine and detect is ltx2_engine.is_ltx2


def test_from_pretrained_hands_each_checkpoint_to_its_family(tmp_path):
    """Each family refuses the other's options in its own load, before reading a weight."""
    ltx2 = _index_only(tmp_path / "ltx2", "LTX2Pipeline")
    ltxv = _index_only(tmp_path / "ltxv", "LTXPipeline")
    with pytest.raises(ValueError, match=r"scheduler_config: LTX-2 engines take their schedule from generate"):
        Engine.from_pretrained(ltx2, device="cpu", dtype=torch.float32, scheduler_config={})
    with pytest.raises(ValueError, match=r"distilled_lora: only LTX-2 engines take a stage-2 LoRA"):
        Engine.from_pretrained(ltxv, device="cpu", dtype=torch.float32, distilled_lora="x.safetensors")


def test_a_new_family_registers_by_subclassing(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_module, "_FAMILIES", dict(engine_module._FAMILIES))
    loaded = []

    class ToyEngine(Engine, family="toy", detect=lambda path: path.name == "toy-checkpoint"):
        @classmethod
        def load(cls, path, device, dtype, ops, **options):
            loaded.append((path.name, options["distilled_lora"]))
            return "toy engine"

    folder = tmp_path / "toy-checkpoint"
    folder.mkdir()
    assert Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, distilled_lora="d") == "toy engine"
    assert loaded == [("toy-checkpoint", "d")]
    with pytest.raises(TypeError, match=r"family 'toy' needs a detect= function and a name of its own"):
        class Again(Engine, family="toy", detect=lambda path: False):
            pass
    with pytest.raises(TypeError, match=r"family 'other' needs a detect= function"):
        class NoDetect(Engine, family="other"):
            pass


def test_an_unregistered_subclass_loads_ltx_video_checkpoints_itself(tmp_path):
    """As before the registry: Sub.from_pretrained builds the class it is called on."""
    class Sub(Engine):
        @classmethod
        def load(cls, path, device, dtype, ops, **options):
            return cls

    assert Sub.from_pretrained(_index_only(tmp_path / "ltxv", "LTXPipeline"), device="cpu") is Sub


def test_both_families_public_names_are_top_level_exports():
    from ltxengine.models.video_vae import TilingConfig
    from ltxengine.ltx2.denoise import GuidanceParams
    assert ltxengine.LTX2Engine is ltx2_engine.LTX2Engine and ltxengine.LTX2TwoStage is ltx2_engine.LTX2TwoStage
    assert ltxengine.GuidanceParams is GuidanceParams and ltxengine.TilingConfig is TilingConfig
    assert {"LTX2Engine", "LTX2TwoStage", "GuidanceParams", "TilingConfig"} <= set(ltxengine.__all__)


# -- the families' requests ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ltx_video_engine(tmp_path_factory):
    from tests.pipelines.fixtures import build_pipeline_folder, build_upsampler_folder
    root = tmp_path_factory.mktemp("families-ltxv")
    return Engine.from_pretrained(build_pipeline_folder(root, "tiny-095"), device="cpu", dtype=torch.float32,
                                  latent_upsampler=build_upsampler_folder(root, "tiny-095"))


@pytest.fixture(scope="module")
def ltx2_engine_(tmp_path_factory):
    pytest.importorskip("diffusers")
    from tests.pipelines.ltx2_fixtures import build_pipeline
    return Engine.from_pretrained(build_pipeline(tmp_path_factory.mktemp("families-ltx2"))[2], device="cpu",
                                  dtype=torch.float32)


def _request_and_run(engine, kw):
    """The checked request of generate("a dog", **kw), a snapshot of its fields, and the request
    after the generation ran from it."""
    bound = inspect.signature(engine.generate).bind("a dog", **kw)
    bound.apply_defaults()
    request = engine._request(dict(bound.arguments))
    before = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
    with torch.inference_mode():
        engine._generate(request)
    return request, before


def _check_request(request, before, cls_name: str):
    assert type(request).__name__ == cls_name and dataclasses.is_dataclass(request)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.height = 64
    # no field is a container a stage could fill in (what used to be stashed in the argument dict)
    mutable = {k: type(v).__name__ for k, v in before.items() if isinstance(v, (list, dict, set, bytearray))}
    assert mutable == {}
    after = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
    assert all(after[k] is before[k] for k in before)  # the run rebound nothing


def test_ltx_video_request_is_frozen_and_the_run_only_reads_it(ltx_video_engine):
    from ltxengine.components import Condition
    from tests.pipelines.fixtures import make_image
    kw = dict(height=64, width=96, num_frames=9, num_inference_steps=2, seed=0,
              conditions=[Condition(image=make_image(64, 96, 1), frame_index=0)], two_stage=ltxengine.TwoStage(),
              timesteps=[1000.0, 500.0])
    request, before = _request_and_run(ltx_video_engine, kw)
    _check_request(request, before, "LTXVideoRequest")
    assert request.pipeline == "condition" and request.stage1_size == (32, 64) and len(request.stage1_pixels[1]) == 1
    assert request.timesteps == (1000.0, 500.0) and isinstance(request.conditions, tuple)


def test_ltx2_request_is_frozen_and_the_run_only_reads_it(ltx2_engine_):
    from tests.pipelines.fixtures import make_image
    from tests.pipelines.ltx2_fixtures import SEQ
    kw = dict(height=128, width=128, num_frames=9, num_inference_steps=2, max_sequence_length=SEQ, seed=0,
              image=make_image(128, 128, 2), two_stage=ltxengine.LTX2TwoStage(lora_strength=0), sigmas=[1.0, 0.5])
    request, before = _request_and_run(ltx2_engine_, kw)
    _check_request(request, before, "LTX2Request")
    assert request.pipeline == "two-stage" and request.sigmas == (1.0, 0.5) and len(request.images) == 1
    assert request.audio_frames > 0 and request.two_stage.sigmas == tuple(ltxengine.LTX2TwoStage().sigmas)


def test_every_ltx2_pipeline_has_a_recipe():
    from ltxengine.ltx2 import recipes, request
    assert request.PIPELINES_LTX2 == tuple(recipes.RECIPES) == (
        "two-stage", "distilled", "one-stage", "ic-lora", "retake", "keyframe-interpolation", "text-to-audio",
        "two-stage-hq")


def test_engine_built_directly_is_an_ltx_video_engine_with_a_deprecation_warning(ltx_video_engine):
    e = ltx_video_engine
    with pytest.warns(DeprecationWarning, match=r"Engine\(\.\.\.\) builds an LTXVideoEngine"):
        built = Engine(e.transformer, e.vae, e.text_encoder, device="cpu", dtype=torch.float32)
    assert type(built) is ltxengine.LTXVideoEngine and built.family == "ltx-video"


def _keys(engine, monkeypatch, **kw) -> tuple[tuple, list]:
    """(plan_key of generate("a dog", **kw), the trace keys its plan's phases would trace under):
    the phases' peak functions record their keys and return 0, so nothing is traced."""
    from ltxengine import planning
    from ltxengine.ltx2 import plan as ltx2_plan
    from ltxengine.ltx_video import plan as ltxv_plan
    seen = []

    def record(engine, key, compute):
        seen.append(key)
        return 0
    for module in (planning, ltx2_plan, ltxv_plan):
        monkeypatch.setattr(module, "scoped_peak", record)
        monkeypatch.setattr(module, "memo_peak", record)
    bound = inspect.signature(engine.generate).bind("a dog", **kw)
    bound.apply_defaults()
    request = engine._request(dict(bound.arguments))
    engine._plan(request)
    return request.plan_key(), seen


LTXV_SIZE = dict(height=64, width=96, num_frames=9)
LTX2_SIZE = dict(height=128, width=128, num_frames=9)


@pytest.mark.parametrize("change", [dict(guidance_rescale=0.7), dict(decode_timestep=0.05),
                                    dict(decode_noise_scale=0.025), dict(frame_rate=24.0)])
def test_ltx_video_plan_key_names_what_the_phases_trace(ltx_video_engine, monkeypatch, change):
    # The engine caches one memory plan per plan_key (in memory and on disk): a field the step or
    # decode trace depends on (their own keys in ltx_video/plan.py) must tell two requests apart here too.
    key, traces = _keys(ltx_video_engine, monkeypatch, **LTXV_SIZE)
    key2, traces2 = _keys(ltx_video_engine, monkeypatch, **LTXV_SIZE, **change)
    assert traces != traces2, "the change does not reach the phases' traces: the test would prove nothing"
    assert key != key2 and key == _keys(ltx_video_engine, monkeypatch, **LTXV_SIZE)[0]


@pytest.mark.parametrize("change", [dict(cross_timestep="mixed"), dict(frame_rate=30.0), dict(decode_timestep=0.1),
                                    dict(decode_noise_scale=0.01), dict(max_sequence_length=8)])
def test_ltx2_plan_key_names_what_the_phases_trace(ltx2_engine_, monkeypatch, change):
    # cross_timestep, fps and the decode's timestep / noise were in the step's and decode's trace
    # keys (ltx2/plan.py) but not in plan_key: a plan cached for one stood for the other.
    from tests.pipelines.ltx2_fixtures import SEQ
    base = dict(LTX2_SIZE, max_sequence_length=SEQ)
    key, traces = _keys(ltx2_engine_, monkeypatch, **base)
    key2, traces2 = _keys(ltx2_engine_, monkeypatch, **{**base, **change})
    assert traces != traces2, "the change does not reach the phases' traces: the test would prove nothing"
    assert key != key2 and key == _keys(ltx2_engine_, monkeypatch, **base)[0]
