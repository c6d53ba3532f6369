"""Engine families (issue 18): each family's engine class registers itself with
``Engine.from_pretrained`` (``class LTX2Engine(Engine, family="ltx-2", detect=is_ltx2)``), so
engine.py never imports a family module; the public names of both families are top-level exports."""

from __future__ import annotations

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
    with pytest.raises(ValueError, match=r"fp8_lora: only LTX-2 engines load LoRAs"):
        Engine.from_pretrained(ltxv, device="cpu", dtype=torch.float32, fp8_lora="merge")


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
