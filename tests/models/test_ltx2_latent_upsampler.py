"""LTX-2 latent upsampler against diffusers' LTX2LatentUpsamplerModel and ltx-core's
LatentUpsampler, same weights, fp32; the upscaler file's header config."""

import dataclasses
import json

import pytest
import torch

from ltxengine.config import ConfigError, LatentUpsamplerConfig, parse_config
from ltxengine.loading.ltx2_vae import upsampler_config_from_diffusers, upsampler_config_from_original
from ltxengine.loading import CheckpointError, load_latent_upsampler
from ltxengine.models.latent_upsampler import (UPSAMPLER_LTX2, UPSAMPLER_LTX23_TEMPORAL_X2, UPSAMPLER_LTX23_X1_5,
                                               UPSAMPLER_LTX23_X2, LatentUpsampler, LTX2LatentUpsamplerConfig)

from ..helpers import assert_close_scaled, perturb_
from ..loading.formats import save_single_file
from ..oracles import ltx_core

diffusers = pytest.importorskip("diffusers")
from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel  # noqa: E402

# fp32 on CPU: the same torch convs / GroupNorms / depthwise blur on every side; the pixel shuffles
# and frame folding are pure data movement. Measured error 0 (bit-equal) everywhere; a wiring
# error (shuffle order, blur stride, dropped frame) shows up at > 1e-2.
REL_TOL = 1e-5

BASE = dict(in_channels=8, mid_channels=32, num_blocks_per_stage=1)
CASES = {
    "rational_2.0": dict(BASE, num_blocks_per_stage=2),  # the released layout (mid 1024, 4 blocks)
    "rational_1.5": dict(BASE, rational_spatial_scale=1.5),  # blur stride 2 uses the stored kernel
    "rational_0.75": dict(BASE, rational_spatial_scale=0.75),
    "rational_4.0": dict(BASE, rational_spatial_scale=4.0),
    "pixel_shuffle": dict(BASE, use_rational_resampler=False),  # LTX-2.3 style keys upsampler.0.*
    "dims2_rational": dict(BASE, dims=2, rational_spatial_scale=1.5),
    "temporal": dict(BASE, spatial_upsample=False, temporal_upsample=True),  # temporal x2 upscaler
    "spatiotemporal": dict(BASE, temporal_upsample=True),
}
# The LTX-2.3 upscalers (the presets), narrowed to mid 32 and 2 blocks per stage.
RELEASES_V23 = {"2.3_x2": UPSAMPLER_LTX23_X2, "2.3_x1.5": UPSAMPLER_LTX23_X1_5,
                "2.3_temporal_x2": UPSAMPLER_LTX23_TEMPORAL_X2}
CASES.update({name: dict(dataclasses.asdict(cfg), in_channels=8, mid_channels=32, num_blocks_per_stage=2)
              for name, cfg in RELEASES_V23.items()})


def make_pair(name, seed=0):
    torch.manual_seed(seed)
    ref = LTX2LatentUpsamplerModel(**CASES[name]).eval()
    perturb_(ref, seed=seed + 1)  # GroupNorm weights and the blur kernel move too
    ours = LatentUpsampler(parse_config(LTX2LatentUpsamplerConfig, CASES[name], "test")).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.mark.parametrize("name", list(CASES))
def test_matches_diffusers(name):
    ref, ours = make_pair(name)
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 8, 3, 6, 5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, actual = ref(x), ours(x)
    assert tuple(actual.shape) == ours.output_shape(tuple(x.shape))
    err = assert_close_scaled(actual, expected, REL_TOL, name)
    print(f"{name}: out {tuple(actual.shape)} max abs err {err:.1e}")


def test_blur_kernel_is_used_only_when_downsampling():
    """Control: the stored kernel matters at stride 2 and is skipped at stride 1 (scale 2)."""
    x = torch.randn(1, 8, 2, 4, 4)
    for name, used in (("rational_1.5", True), ("rational_2.0", False)):
        _, ours = make_pair(name)
        with torch.no_grad():
            base = ours(x)
            ours.upsampler.blur_down.kernel.mul_(2.0)
            changed = (ours(x) - base).abs().max().item()
        assert (changed > 1e-3) == used, name


def _ltx_core_model(name):
    cfg = CASES[name]
    raw = {"_class_name": "LatentUpsampler", "in_channels": cfg["in_channels"], "mid_channels": cfg["mid_channels"],
           "num_blocks_per_stage": cfg["num_blocks_per_stage"], "dims": cfg.get("dims", 3),
           "spatial_upsample": cfg.get("spatial_upsample", True),
           "temporal_upsample": cfg.get("temporal_upsample", False),
           "spatial_scale": cfg.get("rational_spatial_scale", 2.0),
           "rational_resampler": cfg.get("use_rational_resampler", True)}
    model = ltx_core("model.upsampler").LatentUpsamplerConfigurator.from_config(raw).eval()
    return raw, model


@pytest.mark.parametrize("name", ["rational_2.0", "rational_1.5", "pixel_shuffle", "temporal", "spatiotemporal",
                                  *RELEASES_V23])
def test_matches_ltx_core_and_header_config(name):
    """The upscaler file's keys load without renaming; its header config gives our config."""
    raw, core = _ltx_core_model(name)
    _, ours = make_pair(name)
    cfg = upsampler_config_from_original(raw, "upscaler.safetensors")
    assert cfg == ours.config
    core.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 8, 3, 4, 6, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        err = assert_close_scaled(ours(x), core(x), REL_TOL, name)
    print(f"{name}: max abs err vs ltx-core {err:.1e}")


def test_header_defaults_follow_ltx_core():
    cfg = upsampler_config_from_original({"_class_name": "LatentUpsampler"}, "f")
    assert (cfg.mid_channels, cfg.use_rational_resampler, cfg.rational_spatial_scale) == (512, False, 2.0)
    with pytest.raises(ConfigError, match=r"unknown config option 'rational_spatial_scale'"):
        upsampler_config_from_original({"rational_spatial_scale": 2.0}, "f")
    with pytest.raises(ConfigError, match=r"'rational_spatial_scale' must be one of \[0.75, 1.5, 2.0, 4.0\], got 3.0"):
        upsampler_config_from_original({"rational_resampler": True, "spatial_scale": 3.0}, "f")


def test_diffusers_config_dispatch():
    ltx2 = upsampler_config_from_diffusers({"_class_name": "LTX2LatentUpsamplerModel", "mid_channels": 1024,
                                            "rational_spatial_scale": 2.0, "use_rational_resampler": True}, "c")
    assert ltx2 == UPSAMPLER_LTX2
    ltxv = upsampler_config_from_diffusers({"_class_name": "LTXLatentUpsamplerModel", "mid_channels": 512}, "c")
    assert type(ltxv) is LatentUpsamplerConfig
    with pytest.raises(ConfigError, match=r"unknown config option 'use_rational_resampler'"):
        upsampler_config_from_diffusers({"_class_name": "LTXLatentUpsamplerModel", "use_rational_resampler": True},
                                        "c")
    with pytest.raises(ConfigError, match=r"_class_name must be LTXLatentUpsamplerModel or LTX2Latent"):
        upsampler_config_from_diffusers({"_class_name": "Other"}, "c")


def test_refused_configs():
    with pytest.raises(ConfigError, match=r"'rational_spatial_scale' must be one of .* got 3.0"):
        LatentUpsampler(LTX2LatentUpsamplerConfig(rational_spatial_scale=3.0))
    with pytest.raises(ConfigError, match=r"'mid_channels' must be a multiple of 32"):
        LatentUpsampler(LTX2LatentUpsamplerConfig(mid_channels=48))
    model = LatentUpsampler(LTX2LatentUpsamplerConfig(**CASES["rational_1.5"]))
    with pytest.raises(ValueError, match=r"latents must have C == in_channels = 8"):
        model(torch.zeros(1, 4, 2, 4, 4))


def test_release_builds_on_meta():
    """ltx-2-spatial-upscaler-x2-1.0: 497,867,904 parameters plus the blur kernel buffer."""
    with torch.device("meta"):
        ours = LatentUpsampler(UPSAMPLER_LTX2)
        ref = LTX2LatentUpsamplerModel()
    assert sum(p.numel() for p in ours.parameters()) == 497_867_904
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert "upsampler.blur_down.kernel" in ours.state_dict()
    assert ours.output_shape((1, 128, 4, 16, 24)) == (1, 128, 4, 32, 48)
    # the preset equals diffusers' class defaults (= the converter's 2.0 config), key for key
    assert dataclasses.asdict(UPSAMPLER_LTX2) == {k: ref.config[k] for k in dataclasses.asdict(UPSAMPLER_LTX2)}


# ---- LTX-2.3 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(RELEASES_V23))
def test_v23_folder_and_single_file_load_strictly(tmp_path, name):
    """A diffusers ``latent_upsampler/`` folder (save_pretrained) and an upscaler file (diffusers keys,
    ltx-core's header config) load to diffusers' weights and bit-equal outputs."""
    ref, _ = make_pair(name)
    ref.save_pretrained(tmp_path / "pipe" / "latent_upsampler")
    raw, _ = _ltx_core_model(name)
    single = save_single_file(tmp_path / f"ltx-{name}.safetensors", ref.state_dict(), raw)
    x = torch.randn(1, 8, 3, 4, 6, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = ref(x)
    for src in (tmp_path / "pipe", tmp_path / "pipe" / "latent_upsampler", single):
        model = load_latent_upsampler(src, dtype=torch.float32, family="ltx-2")
        assert model.config == parse_config(LTX2LatentUpsamplerConfig, CASES[name], "test")
        assert model.state_dict().keys() == ref.state_dict().keys()
        assert all(torch.equal(model.state_dict()[k], v) for k, v in ref.state_dict().items())
        with torch.no_grad():
            assert torch.equal(model(x), expected)


def test_v23_x2_refuses_rational_weights(tmp_path):
    """Strict: the 2.0 (rational resampler) weights under the 2.3 x2 config name what is missing and
    what is left over (upsampler.0.* against upsampler.conv.* and the blur kernel)."""
    ref, _ = make_pair("rational_2.0")
    ref.save_pretrained(tmp_path / "latent_upsampler")
    config = tmp_path / "latent_upsampler" / "config.json"
    config.write_text(json.dumps(dict(json.loads(config.read_text()), use_rational_resampler=False)))
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint: 'upsampler\.0\.weight', "
                                              r"'upsampler\.0\.bias'; 3 checkpoint tensors not used by the "
                                              r"model: .*'upsampler\.blur_down\.kernel'"):
        load_latent_upsampler(tmp_path / "latent_upsampler")


@pytest.mark.parametrize("name, params, kernel, out", [
    ("2.3_x2", 497_867_904, False, (1, 128, 4, 32, 48)),
    ("2.3_x1.5", 545_058_944, True, (1, 128, 4, 24, 36)),
    ("2.3_temporal_x2", 130_968_192, False, (1, 128, 7, 16, 24)),
])
def test_v23_releases_build_on_meta(name, params, kernel, out):
    """ltx-2.3-spatial-upscaler-x2-1.1 / -x1.5-1.0 / temporal-upscaler-x2-1.0. The released bf16 files
    have 995,743,560 / 1,090,125,794 / 261,944,000 bytes: 2 bytes a parameter (and kernel tap) plus a
    header of 7,752 / 7,856 / 7,616 bytes, so these configs are the released ones (a block more or less,
    or mid_channels 1024 for the temporal one, is off by megabytes). x2 is diffusers' converter "2.3"."""
    cfg = RELEASES_V23[name]
    with torch.device("meta"):
        ours = LatentUpsampler(cfg)
        ref = LTX2LatentUpsamplerModel(**dataclasses.asdict(cfg))
    assert sum(p.numel() for p in ours.parameters()) == params
    assert ("upsampler.blur_down.kernel" in ours.state_dict()) == kernel
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.output_shape((1, 128, 4, 16, 24)) == out
    if name == "2.3_x2":
        converter = dict(in_channels=128, mid_channels=1024, num_blocks_per_stage=4, dims=3, spatial_upsample=True,
                         temporal_upsample=False, rational_spatial_scale=2.0, use_rational_resampler=False)
        assert dataclasses.asdict(cfg) == converter
