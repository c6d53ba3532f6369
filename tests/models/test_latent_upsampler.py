"""Latent upsampler and the AdaIN / tone-map filters against diffusers, same weights, fp32."""

import pytest
import torch

from ltxengine.config import UPSAMPLER_097, ConfigError, LatentUpsamplerConfig, parse_config
from ltxengine.models.latent_upsampler import LatentUpsampler, adain_filter_latent, tone_map_latents

from ..helpers import assert_close_scaled, perturb_

diffusers = pytest.importorskip("diffusers")
from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel  # noqa: E402
from diffusers.pipelines.ltx.pipeline_ltx_latent_upsample import LTXLatentUpsamplePipeline  # noqa: E402

# fp32 on CPU: both sides run the same torch convs and GroupNorms; the only possible difference is
# op order in the pixel shuffle / frame folding (pure data movement), so the budget covers fp32
# op-order rounding only. Measured error is 0 (bit-equal); a wiring error shows up at >1e-2.
REL_TOL = 1e-5

CASES = {
    # the released 0.9.7 / 0.9.8 layout: Conv3d res blocks, per-frame Conv2d spatial x2 upsampler
    "dims3_spatial": dict(in_channels=8, mid_channels=64, num_blocks_per_stage=2, dims=3),
    "dims2_spatial": dict(in_channels=8, mid_channels=32, num_blocks_per_stage=2, dims=2),
    "dims3_temporal": dict(in_channels=8, mid_channels=32, num_blocks_per_stage=1, dims=3, spatial_upsample=False,
                           temporal_upsample=True),
    "dims3_spatiotemporal": dict(in_channels=8, mid_channels=32, num_blocks_per_stage=1, dims=3,
                                 spatial_upsample=True, temporal_upsample=True),
}


def make_pair(cfg, seed=0):
    torch.manual_seed(seed)
    ref = LTXLatentUpsamplerModel(**cfg).eval()
    perturb_(ref, seed=seed + 1)  # GroupNorm weights start at 1 / 0 and would hide a miswired norm
    ours = LatentUpsampler(parse_config(LatentUpsamplerConfig, cfg, "test")).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.mark.parametrize("case", list(CASES))
def test_matches_diffusers(case):
    cfg = CASES[case]
    ref, ours = make_pair(cfg)
    assert list(ours.state_dict()) == list(ref.state_dict())
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, cfg["in_channels"], 3, 6, 5, generator=g)
    with torch.no_grad():
        expected = ref(x)
        actual = ours(x)
    assert tuple(actual.shape) == ours.output_shape(tuple(x.shape))
    err = assert_close_scaled(actual, expected, REL_TOL, case)
    print(f"{case}: out {tuple(actual.shape)} max abs err {err:.3e} (ref max {expected.abs().max().item():.3e})")


def test_output_shapes():
    x = torch.zeros(1, 8, 3, 4, 5)
    for case, shape in [("dims3_spatial", (1, 8, 3, 8, 10)), ("dims2_spatial", (1, 8, 3, 8, 10)),
                        ("dims3_temporal", (1, 8, 5, 4, 5)), ("dims3_spatiotemporal", (1, 8, 5, 8, 10))]:
        model = LatentUpsampler(LatentUpsamplerConfig(**CASES[case]))
        with torch.no_grad():
            assert tuple(model(x).shape) == shape == model.output_shape(tuple(x.shape)), case


def test_released_preset_keys():
    ours = LatentUpsampler(UPSAMPLER_097)
    with torch.device("meta"):
        ref = LTXLatentUpsamplerModel()
    ours_sd = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ref_sd = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert ours_sd == ref_sd
    assert ours.ops.name == "torch"


def test_forward_validation():
    model = LatentUpsampler(LatentUpsamplerConfig(**CASES["dims2_spatial"]))
    with pytest.raises(ValueError, match=r"latents must be a 5-D tensor .*got \(1, 8, 4, 5\)"):
        model(torch.zeros(1, 8, 4, 5))
    with pytest.raises(ValueError, match=r"latents must have C == in_channels = 8 .*got C = 4"):
        model(torch.zeros(1, 4, 2, 4, 5))


def test_config_validation():
    with pytest.raises(ConfigError, match="temporal_upsample.*needs dims=3"):
        LatentUpsampler(LatentUpsamplerConfig(dims=2, spatial_upsample=False, temporal_upsample=True))
    with pytest.raises(ConfigError, match="mid_channels.*multiple of 32"):
        LatentUpsampler(LatentUpsamplerConfig(mid_channels=48))
    with pytest.raises(ConfigError, match="spatial_upsample.*or temporal_upsample must be true"):
        LatentUpsampler(LatentUpsamplerConfig(spatial_upsample=False, temporal_upsample=False))


def _pipe():
    return LTXLatentUpsamplePipeline(vae=None, latent_upsampler=None)


@pytest.mark.parametrize("factor", [1.0, 0.4, 0.0, -2.5, 10])
def test_adain_matches_diffusers(factor):
    g = torch.Generator().manual_seed(5)
    latents = torch.randn(2, 6, 5, 8, 10, generator=g) * 2.5 + 0.7
    reference = torch.randn(2, 6, 3, 4, 5, generator=g) * 0.6 - 0.3
    expected = _pipe().adain_filter_latent(latents, reference, factor)
    actual = adain_filter_latent(latents, reference, factor)
    err = assert_close_scaled(actual, expected, REL_TOL, f"adain factor={factor}")
    print(f"adain factor={factor}: max abs err {err:.3e}")


@pytest.mark.parametrize("compression", [0.0, 0.3, 1.0, 1])
def test_tone_map_matches_diffusers(compression):
    g = torch.Generator().manual_seed(6)
    latents = torch.randn(2, 6, 3, 4, 5, generator=g) * 3
    expected = _pipe().tone_map_latents(latents, compression)
    actual = tone_map_latents(latents, compression)
    err = assert_close_scaled(actual, expected, REL_TOL, f"tone map compression={compression}")
    print(f"tone map compression={compression}: max abs err {err:.3e}")
    if compression == 0.0:
        assert torch.equal(actual, latents)


def test_filter_validation():
    x = torch.randn(1, 2, 2, 3, 3)
    with pytest.raises(ValueError, match=r"compression must be in the range \[0.0, 1.0\], got 1.5"):
        tone_map_latents(x, 1.5)
    with pytest.raises(ValueError, match=r"compression must be in the range \[0.0, 1.0\], got -0.1"):
        tone_map_latents(x, -0.1)
    with pytest.raises(ValueError, match=r"compression must be a real number .*got 'a'"):
        tone_map_latents(x, "a")
    with pytest.raises(ValueError, match=r"factor must be in the range \[-10.0, 10.0\], got 11.0"):
        adain_filter_latent(x, x, 11.0)
    with pytest.raises(ValueError, match=r"factor must be in the range .*got nan"):
        adain_filter_latent(x, x, float("nan"))
    with pytest.raises(ValueError, match=r"reference must have the same \(B, C\) as latents"):
        adain_filter_latent(x, torch.randn(1, 3, 2, 3, 3), 1.0)
    with pytest.raises(ValueError, match=r"at least 2 elements"):
        adain_filter_latent(x, torch.randn(1, 2, 1, 1, 1), 1.0)
