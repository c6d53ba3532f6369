"""Latent upsampler from a diffusers folder and from Lightricks' single file (config in header)."""

import pytest
import torch

from ltxengine.config import ConfigError
from ltxengine.loading import CheckpointError, load_latent_upsampler

from ..helpers import perturb_
from .formats import save_single_file

diffusers = pytest.importorskip("diffusers")
from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel  # noqa: E402

CFG = dict(in_channels=8, mid_channels=32, num_blocks_per_stage=1, dims=3, spatial_upsample=True,
           temporal_upsample=False)


@pytest.fixture(scope="module")
def ref():
    torch.manual_seed(0)
    model = LTXLatentUpsamplerModel(**CFG).eval()
    perturb_(model, seed=3)
    return model


def test_folder_and_single_file_give_identical_weights(tmp_path, ref):
    ref.save_pretrained(tmp_path / "pipe" / "latent_upsampler")
    single = save_single_file(tmp_path / "ltxv-spatial-upscaler.safetensors", ref.state_dict(),
                              dict(CFG, _class_name="LatentUpsampler"))
    for src in (tmp_path / "pipe", tmp_path / "pipe" / "latent_upsampler", single):
        model = load_latent_upsampler(src, dtype=torch.float32)
        sd = model.state_dict()
        assert sd.keys() == ref.state_dict().keys()
        assert all(torch.equal(sd[k], v) for k, v in ref.state_dict().items())
    x = torch.randn(1, 8, 2, 3, 4)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_unknown_header_option(tmp_path, ref):
    # (rational_resampler / spatial_scale are LTX-2 upscaler keys, so no longer unknown.)
    path = save_single_file(tmp_path / "up.safetensors", ref.state_dict(), dict(CFG, mystery_option=True))
    with pytest.raises(ConfigError, match=r"up\.safetensors \[latent upsampler\]: unknown config option "
                                          r"'mystery_option'"):
        load_latent_upsampler(path)


def test_missing_tensor(tmp_path, ref):
    sd = dict(ref.state_dict())
    sd.pop("final_conv.bias")
    path = save_single_file(tmp_path / "up.safetensors", sd, CFG)
    with pytest.raises(CheckpointError, match=r"missing.*'final_conv\.bias'"):
        load_latent_upsampler(path)
