"""``ltxengine info`` names the family, the release and the real parameter counts of both
families (it called LTX-2 folders "version 0.9.1" by the LTX-Video VAE rule and a 48-layer 32-head
LTX-2 transformer "13B", and left the latent upsampler out)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from ltxengine.cli import main
from ltxengine.demo import write_demo_checkpoint, write_demo_ltx2_checkpoint
from ltxengine.presets import demo_ltx2
from ltxengine.info import describe, format_description, transformer_layers


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("info")
    return write_demo_checkpoint(root / "ltxv"), write_demo_ltx2_checkpoint(root / "ltx2")


def _count(module) -> int:
    return sum(t.numel() for t in module.state_dict().values())  # what the file stores, buffers included


def test_ltx2_folder_names_family_release_and_counts(demos, capsys):
    from ltxengine.models.latent_upsampler import LatentUpsampler
    from ltxengine.models.ltx2_transformer import LTX2Transformer

    d = describe(demos[1])
    assert d["family"] == "LTX-2" and d["version"] == "2.0" and d["version_source"] == "the transformer layout"
    cfgs = demo_ltx2()
    with torch.device("meta"):
        transformer, upsampler = LTX2Transformer(cfgs["transformer"]), LatentUpsampler(cfgs["latent_upsampler"])
    t = d["components"]["transformer"]
    assert (t["layers"], t["heads"], t["size"]) == (2, 2, "custom (2 layers, 2 heads)")
    assert t["parameters"] == _count(transformer)
    up = d["components"]["latent_upsampler"]  # the engine's two-stage pipelines pick it up: info lists it
    assert up["class"] == "LTX2LatentUpsamplerModel" and up["parameters"] == _count(upsampler)
    assert d["parameters"] == sum(c.get("parameters", 0) for c in d["components"].values())
    assert main(["info", str(demos[1])]) == 0
    text = capsys.readouterr().out
    assert "family:  LTX-2" in text and "version: 2.0 (from the transformer layout)" in text
    assert "0.9.1" not in text and "latent_upsampler: LTX2LatentUpsamplerModel" in text
    assert f"parameters: {d['parameters']:,} in all" in text
    assert main(["info", str(demos[1]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "2.0"


def test_ltx_video_folder_keeps_its_rule_and_lists_the_upsampler(demos):
    d = describe(demos[0])
    assert d["family"] == "LTX-Video" and d["version"] == "0.9.5+" and d["version_source"] == "the VAE layout"
    assert d["components"]["latent_upsampler"]["class"] == "LTXLatentUpsamplerModel"
    assert "version: 0.9.5+ (from the VAE layout)" in format_description(d)


def _folder(root, cls: str, transformer: dict, vae: dict | None = None):
    """A diffusers folder of configs only: the size and release come from them."""
    root.mkdir()
    index = {"_class_name": cls, "transformer": ["diffusers", "T"]}
    (root / "transformer").mkdir()
    (root / "transformer" / "config.json").write_text(json.dumps(transformer))
    if vae is not None:
        index["vae"] = ["diffusers", "V"]
        (root / "vae").mkdir()
        (root / "vae" / "config.json").write_text(json.dumps(vae))
    (root / "model_index.json").write_text(json.dumps(index))
    return root


@pytest.mark.parametrize("cls, extra, version, size", [
    ("LTX2Pipeline", {}, "2.0", "19B"),
    ("LTX2Pipeline", {"gated_attn": True, "cross_attn_mod": True}, "2.3", "22B"),
    ("LTXConditionPipeline", {}, "0.9.1", "13B"),  # same shape, the other family: 13B is LTX-Video's
])
def test_released_sizes_per_family(tmp_path, cls, extra, version, size):
    vae = None if cls.startswith("LTX2") else {"timestep_conditioning": True}
    d = describe(_folder(tmp_path / "m", cls, {"num_layers": 48, "num_attention_heads": 32, **extra}, vae))
    assert d["version"] == version and d["components"]["transformer"]["size"] == size
    assert transformer_layers(tmp_path / "m") == 48


def _bundle(path, transformer: dict, vocoder: dict | None = None, metadata: dict | None = None):
    tensors = {"model.diffusion_model.patchify_proj.weight": torch.zeros(4, 2),
               "model.diffusion_model.proj_out.weight": torch.zeros(2, 4), "vocoder.conv_pre.weight": torch.zeros(3)}
    config = {"transformer": transformer, "vocoder": vocoder or {}}
    save_file(tensors, str(path), metadata={"config": json.dumps(config), **(metadata or {})})
    return path


def test_ltx2_single_file_release_from_the_header(tmp_path):
    d = describe(_bundle(tmp_path / "a.safetensors", {}, metadata={"model_version": "2.0.0"}))
    assert d["family"] == "LTX-2" and d["version"] == "2.0" and d["model_version"] == "2.0.0"
    t = d["components"]["transformer"]
    assert t["size"] == "19B" and t["parameters"] == 16  # ltx-core's 48 x 32 default; the tensors counted
    assert transformer_layers(tmp_path / "a.safetensors") == 48
    later = describe(_bundle(tmp_path / "b.safetensors", {"apply_gated_attention": True, "num_layers": 48}))
    assert later["version"] == "2.3" and later["components"]["transformer"]["size"] == "22B"
    bwe = describe(_bundle(tmp_path / "c.safetensors", {"num_layers": 2}, vocoder={"bwe": {}}))
    assert bwe["version"] == "2.3" and bwe["components"]["transformer"]["size"] == "custom (2 layers, 32 heads)"


def test_transformer_layers_reads_configs_only(demos, tmp_path):
    assert transformer_layers(demos[0]) == transformer_layers(demos[1]) == 2
    (tmp_path / "x.safetensors").write_bytes(b"not a safetensors file")
    assert transformer_layers(tmp_path / "x.safetensors") is None and transformer_layers(tmp_path / "none") is None
