"""LTX-2 latent upscaler files by kind (issue 19): the kind read from a file's header config or a
folder's config.json alone; LTX-2.5's per-component folder with ``latent_upscale_models/`` (spatial
x2 and temporal x2, as Lightricks/LTX-2.5 ships them) gives the engine its spatial one, several
spatial ones are refused with their kinds; ``ltxengine info`` lists every file of such a folder."""

from __future__ import annotations

import shutil

import pytest
import torch

from ltxengine import Engine
from ltxengine.info import describe, format_description
from ltxengine.loading import CheckpointError
from ltxengine.loading.ltx2_split_files import file_role
from ltxengine.loading.ltx2_upsamplers import (find_split_upscalers, pick_split_upscaler, spatial_upsampler_config,
                                               upsampler_config)
from ltxengine.loading.safetensors_io import SafetensorsFile
from ltxengine.models.latent_upsampler import LatentUpsampler, LTX2LatentUpsamplerConfig, upsampler_kind
from tests.loading.formats import save_single_file
from tests.loading.ltx2_split_fixtures import make_models, write_set

pytest.importorskip("diffusers")

BASE = dict(in_channels=32, mid_channels=32, num_blocks_per_stage=1)  # the tiny 2.5 VAE's 32 latent channels
# ltx-core's header keys (LatentUpsamplerConfigurator) of the three released kinds
HEADERS = {"spatial-x2": dict(BASE, spatial_upsample=True, temporal_upsample=False, rational_resampler=False),
           "spatial-x1.5": dict(BASE, spatial_upsample=True, temporal_upsample=False, spatial_scale=1.5,
                                rational_resampler=True),
           "temporal-x2": dict(BASE, spatial_upsample=False, temporal_upsample=True, rational_resampler=False)}
KINDS = {"spatial-x2": "spatial x2", "spatial-x1.5": "spatial x1.5", "temporal-x2": "temporal x2"}


def write_upscaler(path, name: str, seed: int = 0):
    """An upscaler file as Lightricks ships it: the model's own keys, ltx-core's header config."""
    from ltxengine.loading.ltx2_vae import upsampler_config_from_original
    torch.manual_seed(seed)
    model = LatentUpsampler(upsampler_config_from_original(HEADERS[name], name))
    return save_single_file(path, model.state_dict(), HEADERS[name]), model


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("ltx25_upscalers")
    folder, _, _ = write_set(root, make_models())
    (folder / "latent_upscale_models").mkdir()
    for name in ("spatial-x2", "temporal-x2"):
        write_upscaler(folder / "latent_upscale_models" / f"ltx-2.5-latent-{name}-tiny.safetensors", name)
    return folder


def test_kind_from_the_header_and_the_folder_config(tmp_path):
    for name, kind in KINDS.items():
        path, model = write_upscaler(tmp_path / f"{name}.safetensors", name)
        config = upsampler_config(path)
        assert isinstance(config, LTX2LatentUpsamplerConfig) and config == model.config
        assert upsampler_kind(config) == kind
        with SafetensorsFile(path) as f:
            assert file_role(f) == "latent_upsampler"
    diffusers_cfg = {"_class_name": "LTX2LatentUpsamplerModel", "in_channels": 8, "mid_channels": 32,
                     "num_blocks_per_stage": 1, "rational_spatial_scale": 1.5}
    (tmp_path / "latent_upsampler").mkdir()
    (tmp_path / "latent_upsampler" / "config.json").write_text(__import__("json").dumps(diffusers_cfg))
    assert upsampler_kind(upsampler_config(tmp_path)) == "spatial x1.5"  # a pipeline folder's own
    assert spatial_upsampler_config(tmp_path / "spatial-x1.5.safetensors").rational_spatial_scale == 1.5
    with pytest.raises(ValueError, match=r"temporal-x2.safetensors is the temporal x2 latent upscaler; the two-stage "
                                         r"recipes take a spatial one \(x2, or LTX-2.3's x1.5\).*DFRPipeline"):
        spatial_upsampler_config(tmp_path / "temporal-x2.safetensors")


def test_split_folder_gives_the_engine_its_spatial_upscaler(split):
    found = find_split_upscalers(split)
    assert sorted(upsampler_kind(c) for c in found.values()) == ["spatial x2", "temporal x2"]
    picked = pick_split_upscaler(split)
    assert picked.name == "ltx-2.5-latent-spatial-x2-tiny.safetensors"
    engine = Engine.from_pretrained(split, device="cpu", dtype=torch.float32)
    assert upsampler_kind(engine.latent_upsampler.config) == "spatial x2"
    _, expected = write_upscaler(split.parent / "again.safetensors", "spatial-x2")  # the same seed: the same weights
    sd = engine.latent_upsampler.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in expected.state_dict().items())


def test_several_spatial_upscalers_are_named(split, tmp_path):
    folder = tmp_path / "split"
    shutil.copytree(split, folder)
    write_upscaler(folder / "latent_upscale_models" / "ltx-2.3-spatial-upscaler-x1.5-tiny.safetensors", "spatial-x1.5")
    with pytest.raises(CheckpointError, match=r"more than one spatial latent upscaler \(latent_upscale_models/"
                                              r"ltx-2.3-spatial-upscaler-x1.5-tiny.safetensors \(spatial x1.5\), "
                                              r"latent_upscale_models/ltx-2.5-latent-spatial-x2-tiny.safetensors "
                                              r"\(spatial x2\)\); pass the one to use as latent_upsampler=PATH"):
        pick_split_upscaler(folder)
    with pytest.raises(CheckpointError, match="more than one spatial latent upscaler"):
        Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)


def test_info_names_an_upscaler_file_and_its_kind(tmp_path):
    for name, kind in KINDS.items():
        path, model = write_upscaler(tmp_path / f"{name}.safetensors", name)
        d = describe(path)
        assert (d["format"], d["family"], list(d["components"])) == ("latent upscaler file", "LTX-2",
                                                                    ["latent_upsampler"])
        assert d["components"]["latent_upsampler"]["kind"] == kind
        assert d["parameters"] == sum(t.numel() for t in model.state_dict().values())
        assert f"latent_upsampler: {kind}; " in format_description(d)


def test_info_lists_every_file_of_the_split_folder(split):
    d = describe(split)
    assert (d["format"], d["family"], d["version"], d["model_version"]) == (
        "LTX-2.5 per-component files", "LTX-2", "2.5", "2.5.0")
    roles = {name: (c["file"], c.get("kind")) for name, c in d["components"].items()}
    assert roles == {
        "transformer": ("diffusion_models/ltx-2.5-tiny-transformer.safetensors", None),
        "text_encoder": ("text_encoders/gemma4-tiny-with-proj.safetensors", None),
        "latent_upsampler": ("latent_upscale_models/ltx-2.5-latent-spatial-x2-tiny.safetensors", "spatial x2"),
        "latent_upsampler 2": ("latent_upscale_models/ltx-2.5-latent-temporal-x2-tiny.safetensors", "temporal x2"),
        "audio_vae": ("vae/ltx-2.5-tiny-audio-vae.safetensors", None),
        "video_vae": ("vae/ltx-2.5-tiny-video-vae-conv.safetensors", None)}
    assert d["parameters"] == sum(c["parameters"] for c in d["components"].values())
    text = format_description(d)
    assert "latent_upsampler 2: latent_upscale_models/ltx-2.5-latent-temporal-x2-tiny.safetensors; temporal x2" in text
