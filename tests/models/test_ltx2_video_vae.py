"""LTX-2 video VAE against diffusers' AutoencoderKLLTX2Video and ltx-core's VideoEncoder /
VideoDecoder, same weights, fp32, tiny configs; the single-file key map and header config."""

import dataclasses

import pytest
import torch

from ltxengine.config import ConfigError, parse_config
from ltxengine.loading.ltx2_vae import KEYMAP, vae_config_from_original, vae_keymap
from ltxengine.models.video_vae import VAE_LTX2, LTX2VideoVAE, LTX2VideoVAEConfig, TilingConfig
from ltxengine.ops import TORCH_OPS

from ..helpers import assert_close_scaled
from ..oracles import ltx_core
from .ltx2_video_vae_fixtures import CASES, DIFFUSERS_EXTRA, RELEASE, make_pair, original_section, original_state_dict

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLLTX2Video  # noqa: E402

# fp32 on CPU with the same convs on every side. The one arithmetic difference: the references
# normalize by x / sqrt(mean(x^2) + eps), ours by x * rsqrt(...) (shared with the LTX-Video VAE,
# where it is diffusers' form), a 1-ulp difference per norm that the network carries along.
# Measured <= 1e-6 relative; a wiring error (padding mode, block order, stride) is > 1e-2.
REL_TOL = 1e-5


def _temb(name, batch):
    return torch.linspace(0.03, 0.1, batch) if CASES[name]["timestep_conditioning"] else None


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_equals_diffusers(name):
    ref, ours = make_pair(name)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert (ours.spatial_compression_ratio, ours.temporal_compression_ratio) == (32, 8)


@pytest.mark.parametrize("name", list(CASES))
def test_encode_decode_match_diffusers(name):
    ref, ours = make_pair(name)
    g = torch.Generator().manual_seed(2)
    x, z = torch.randn(2, 3, 9, 64, 64, generator=g), torch.randn(2, 8, 2, 2, 3, generator=g)
    temb = _temb(name, 2)
    with torch.no_grad():
        posterior = ref.encode(x).latent_dist
        err_e = assert_close_scaled(ours.encode(x), posterior.parameters, REL_TOL, f"{name} encode")
        torch.manual_seed(7)  # noise injection: diffusers' LTX-2 decoder draws from the global RNG
        expected = ref.decode(z, temb).sample
        torch.manual_seed(7)
        err_d = assert_close_scaled(ours.decode(z, temb), expected, REL_TOL, f"{name} decode")
    print(f"{name}: encode err {err_e:.2e}, decode err {err_d:.2e}")


def test_controls_padding_and_timestep_change_the_output():
    """The tests can fail: zero padding in the decoder or another decode timestep moves the output."""
    ref, ours = make_pair("2.0")
    zeros = LTX2VideoVAE(dataclasses.replace(ours.config, decoder_spatial_padding_mode="zeros")).eval()
    zeros.load_state_dict(ours.state_dict())
    z = torch.randn(1, 8, 2, 2, 2)
    with torch.no_grad():
        base = ours.decode(z, 0.05)
        assert (zeros.decode(z, 0.05) - base).abs().max() > 1e-2
        assert (ours.decode(z, 0.5) - base).abs().max() > 1e-2


# 3x3-latent tiles with stride 2 (reflect padding needs tiles of >= 2 latents); 2-latent-frame tiles
SMALL_TILES = TilingConfig(96, 96, 16, 64, 64, 8)


@pytest.mark.parametrize("name", ["2.0", "variant"])
def test_tiled_paths_match_diffusers(name):
    """Spatial tiled encode / decode and temporal tiled encode equal diffusers' LTX-2 tiled paths.
    (Temporal tiled decode keeps frames aligned where diffusers drops one; see VideoVAE.decode.)"""
    ref, ours = make_pair(name)
    ref.enable_tiling(**dataclasses.asdict(SMALL_TILES))
    ref.use_framewise_decoding = True  # diffusers' switch for temporal tiling of encode and decode
    errs = []
    try:
        with torch.no_grad():
            for shape in [(1, 3, 9, 128, 128), (1, 3, 25, 64, 64)]:  # spatial only; temporal
                x = torch.randn(shape)
                errs.append(assert_close_scaled(ours.encode(x, tiling=SMALL_TILES),
                                                ref.encode(x).latent_dist.parameters, REL_TOL, f"{name} enc {shape}"))
            z, temb = torch.randn(1, 8, 2, 4, 4), _temb(name, 1)
            torch.manual_seed(3)
            expected = ref.decode(z, temb).sample
            torch.manual_seed(3)
            errs.append(assert_close_scaled(ours.decode(z, temb, tiling=SMALL_TILES), expected, REL_TOL,
                                            f"{name} tiled decode"))
    finally:
        ref.disable_tiling()
        ref.use_framewise_decoding = False
    print(f"{name}: tiled errs {[f'{e:.1e}' for e in errs]}")


def test_every_conv_goes_through_ops_with_its_padding_mode():
    seen = {}

    def counting_conv(x, weight, bias, stride, causal, spatial_padding_mode="zeros", **prologue):
        seen[id(weight)] = spatial_padding_mode
        return TORCH_OPS.causal_conv3d(x, weight, bias, stride, causal, spatial_padding_mode=spatial_padding_mode,
                                       **prologue)

    ops = dataclasses.replace(TORCH_OPS, name="counting", causal_conv3d=counting_conv)
    model = LTX2VideoVAE(parse_config(LTX2VideoVAEConfig, CASES["2.0"], "test"), ops=ops).eval()
    with torch.no_grad():
        model.decode(model.encode(torch.randn(1, 3, 9, 64, 64))[:, :8], 0.05)
    for half, mode in (("encoder", "zeros"), ("decoder", "reflect")):
        convs = [id(m.weight) for m in getattr(model, half).modules() if isinstance(m, torch.nn.Conv3d)]
        assert convs and all(seen.get(c) == mode for c in convs), half


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "zeros"])
def test_reference_conv_padding_modes_equal_nn_conv3d(mode):
    """ops.reference.causal_conv3d pads space like nn.Conv3d(padding_mode=...), bit for bit."""
    conv = torch.nn.Conv3d(4, 6, 3, padding=(0, 1, 1), padding_mode=mode)
    x = torch.randn(2, 4, 3, 5, 4)
    with torch.no_grad():
        expected = conv(torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2))
        got = TORCH_OPS.causal_conv3d(x, conv.weight, conv.bias, (1, 1, 1), False, spatial_padding_mode=mode)
    assert torch.equal(got, expected)
    with pytest.raises(ValueError, match=r"spatial_padding_mode must be one of .* got 'mirror'"):
        TORCH_OPS.causal_conv3d(x, conv.weight, conv.bias, (1, 1, 1), True, spatial_padding_mode="mirror")


# ---- ltx-core (the authors' implementation) ------------------------------------------------------

def _ltx_core_pair(name):
    vae_mod = ltx_core("model.video_vae")
    _, ours = make_pair(name)
    section = original_section(ours.config)
    original = original_state_dict(ours)
    stats = {k[len("vae."):]: v for k, v in original.items() if k.startswith("vae.per_channel_statistics.")
             and k.endswith("-of-means")}
    models = []
    for half, configurator in (("encoder", vae_mod.VideoEncoderConfigurator),
                               ("decoder", vae_mod.VideoDecoderConfigurator)):
        model = configurator.from_config({"vae": section}).eval()
        prefix = f"vae.{half}."
        model.load_state_dict({**{k[len(prefix):]: v for k, v in original.items() if k.startswith(prefix)},
                               **stats}, strict=True)
        models.append(model)
    return section, original, models, ours


@pytest.mark.parametrize("name", ["2.0", "2.0_no_tc"])
def test_header_config_builds_our_model(name):
    section, original, _, ours = _ltx_core_pair(name)
    cfg = vae_config_from_original(section, "ckpt.safetensors")
    assert cfg == dataclasses.replace(ours.config, decoder_causal=False)
    assert cfg == dataclasses.replace(VAE_LTX2, **{k: getattr(cfg, k) for k in
                                                   ("latent_channels", "block_out_channels", "layers_per_block",
                                                    "decoder_block_out_channels", "decoder_layers_per_block",
                                                    "timestep_conditioning")})


@pytest.mark.parametrize("name", ["2.0", "2.0_no_tc"])
def test_keymap_inverts_the_original_names(name):
    _, original, _, ours = _ltx_core_pair(name)
    mapped = {KEYMAP.apply(k): v for k, v in original.items() if KEYMAP.apply(k) is not None}
    assert set(mapped) == set(ours.state_dict())
    assert all(torch.equal(mapped[k], v) for k, v in ours.state_dict().items())
    if not CASES[name]["timestep_conditioning"]:
        # diffusers' single-file converter agrees (it lacks the last_time_embedder rename, so only
        # for the unconditioned decoder)
        from diffusers.loaders.single_file_utils import convert_ltx2_vae_to_diffusers
        assert set(convert_ltx2_vae_to_diffusers(dict(original))) == set(mapped)
    assert KEYMAP.apply("vae.per_channel_statistics.channel") is None
    assert KEYMAP.apply("model.diffusion_model.proj_in.weight") is None
    # more blocks than the release: index 1 must not capture index 10
    assert vae_keymap(6, 5).apply("vae.encoder.down_blocks.10.res_blocks.0.conv1.conv.weight") == \
        "encoder.down_blocks.5.resnets.0.conv1.conv.weight"
    assert vae_keymap(6, 5).apply("vae.decoder.up_blocks.10.res_blocks.0.conv1.conv.weight") == \
        "decoder.up_blocks.4.resnets.0.conv1.conv.weight"


@pytest.mark.parametrize("name", ["2.0", "2.0_no_tc"])
def test_matches_ltx_core(name):
    """ltx-core's encoder returns normalized means; its decoder takes normalized latents, mixes
    0.025 noise in (timestep-conditioned) and decodes at timestep 0.05 by default."""
    _, _, (encoder, decoder), ours = _ltx_core_pair(name)
    g = torch.Generator().manual_seed(4)
    x, z = torch.randn(2, 3, 9, 64, 32, generator=g), torch.randn(2, 8, 2, 2, 2, generator=g)
    tc = CASES[name]["timestep_conditioning"]
    with torch.no_grad():
        err_e = assert_close_scaled(ours.encode_normalized(x), encoder(x), REL_TOL, f"{name} encode")
        expected = decoder(z, generator=torch.Generator().manual_seed(5))
        got = ours.decode_normalized(z, generator=torch.Generator().manual_seed(5))
        err_d = assert_close_scaled(got, expected, REL_TOL, f"{name} decode")
        errs = [err_e, err_d]
        if tc:
            t = torch.tensor([0.2, 0.7])
            expected = decoder(z, timestep=t, generator=torch.Generator().manual_seed(6))
            got = ours.decode_normalized(z, t, generator=torch.Generator().manual_seed(6))
            errs.append(assert_close_scaled(got, expected, REL_TOL, f"{name} decode t"))
            decoder.decode_noise_scale = 0.0  # ltx-core's attribute; ours takes it as an argument
            try:
                expected = decoder(z, timestep=t)
            finally:
                decoder.decode_noise_scale = 0.025
            errs.append(assert_close_scaled(ours.decode_normalized(z, t, noise_scale=0.0), expected, REL_TOL,
                                            f"{name} decode no noise"))
            # the noise really is mixed in
            other = ours.decode_normalized(z, t, generator=torch.Generator().manual_seed(7))
            assert (other - got).abs().max() > 1e-3
    print(f"{name}: errs vs ltx-core {[f'{e:.1e}' for e in errs]}")


def test_decode_normalized_is_denormalize_then_decode():
    """The diffusers-pipeline convention: noise mixed in normalized space with a per-sample scale."""
    _, ours = make_pair("2.0")
    z, t = torch.randn(2, 8, 2, 2, 2), torch.tensor([0.05, 0.1])
    with torch.no_grad():
        eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(8))
        s = torch.tensor([0.05, 0.1]).view(-1, 1, 1, 1, 1)
        expected = ours.decode(ours.denormalize_latents((1 - s) * z + s * eps), t)
        got = ours.decode_normalized(z, t, noise_scale=torch.tensor([0.05, 0.1]),
                                     generator=torch.Generator().manual_seed(8))
    assert_close_scaled(got, expected, 1e-6, "per-sample noise scale")


# ---- validation -------------------------------------------------------------------------------

def test_decode_normalized_validation():
    _, tc = make_pair("2.0")
    _, plain = make_pair("2.0_no_tc")
    z = torch.zeros(2, 8, 1, 1, 1)
    with pytest.raises(ValueError, match=r"timestep must be None for a decoder without timestep_conditioning"):
        plain.decode_normalized(z, 0.05)
    with pytest.raises(ValueError, match=r"noise_scale must be None for a decoder without"):
        plain.decode_normalized(z, noise_scale=0.025)
    with pytest.raises(ValueError, match=r"noise_scale must be a number in \[0, 1\] .*got 1.5"):
        tc.decode_normalized(z, noise_scale=1.5)
    with pytest.raises(ValueError, match=r"noise_scale must be a scalar or have shape \(B,\) = \(2,\), got \(3,\)"):
        tc.decode_normalized(z, noise_scale=torch.zeros(3))
    with pytest.raises(ValueError, match=r"temb must be a scalar or have shape \(B,\) = \(2,\), got \(3,\)"):
        tc.decode_normalized(z, torch.zeros(3))
    with pytest.raises(ValueError, match=r"z must have 8 channels"):
        tc.decode_normalized(z[:, :4])
    with pytest.raises(ValueError, match=r"x frames must be of the form 8k\+1"):
        tc.encode_normalized(torch.zeros(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match=r"z: the decoder's reflect padding needs .* at least 2x2 latents, got a "
                                         r"2x1 grid"):
        tc.decode_normalized(torch.zeros(1, 8, 1, 2, 1))
    with pytest.raises(ValueError, match=r"got a 1x2 tile \(latent grid 5x4\)"):
        tc.decode(torch.zeros(1, 8, 1, 5, 4), 0.05, tiling=SMALL_TILES)
    _, variant = make_pair("variant")  # reflect-padded encoder
    with pytest.raises(ValueError, match=r"x: the encoder's reflect padding .* got a 2x1 grid"):
        variant.encode(torch.zeros(1, 3, 1, 64, 32))


@pytest.mark.parametrize("change, match", [
    (dict(down_block_types=("LTXVideo095DownBlock3D",) * 4), r"'down_block_types' entries must be LTX2VideoDown"),
    (dict(downsample_type=("spatial", "temporal", "spatiotemporal", "diagonal")), r"'downsample_type' entries"),
    (dict(downsample_type=("conv", "temporal", "spatiotemporal", "spatiotemporal")),
     r"'block_out_channels' entry 0 must equal the block's input width 8"),
    (dict(block_out_channels=(16, 32, 64, 100)), r"'block_out_channels' entry 3 must divide 64\*8"),
    (dict(layers_per_block=(1, 1, 1, 1)), r"'layers_per_block' needs 5 entries"),
    (dict(upsample_type=("spatial", "up", "spatial")), r"'upsample_type' entries must be one of"),
    (dict(decoder_block_out_channels=(16, 48, 64)), r"'decoder_block_out_channels' must give every up block equal"),
    (dict(decoder_inject_noise=(False,) * 3), r"'decoder_inject_noise' needs 4 entries"),
    (dict(decoder_spatial_padding_mode="mirror"), r"'decoder_spatial_padding_mode' must be one of"),
    (dict(patch_size_t=2), r"'patch_size_t' must be 1"),
    (dict(spatial_compression_ratio=64), r"'spatial_compression_ratio' must equal the encoder's layout \(32\)"),
])
def test_refused_configs(change, match):
    with pytest.raises(ConfigError, match=match):
        LTX2VideoVAE(parse_config(LTX2VideoVAEConfig, {**CASES["2.0"], **change}, "test"))


def test_bool_shorthands_expand_like_diffusers():
    cfg = parse_config(LTX2VideoVAEConfig, dict(RELEASE, spatio_temporal_scaling=True, decoder_inject_noise=False,
                                                upsample_residual=True, decoder_spatio_temporal_scaling=True), "t")
    assert cfg.spatio_temporal_scaling == (True,) * 4 and cfg.decoder_inject_noise == (False,) * 4
    assert cfg.upsample_residual == (True,) * 3 and cfg.decoder_spatio_temporal_scaling == (True,) * 3


def _section(**change):
    _, ours = make_pair("2.0")
    section = original_section(ours.config)
    section.update(change)
    return section


@pytest.mark.parametrize("change, match", [
    (dict(norm_layer="group_norm"), r"'norm_layer' must be 'pixel_norm'"),
    (dict(latent_log_var="per_channel"), r"'latent_log_var' must be 'uniform'"),
    (dict(dims=2), r"'dims' must be 3"),
    (dict(scaling_factor=0.5), r"'scaling_factor' must be 1.0"),
    (dict(blocks=[["res_x", 1]]), r"unknown config option 'blocks'"),
    (dict(encoder_base_channels=16), r"'encoder_base_channels' must equal latent_channels \(8\)"),
    (dict(encoder_blocks=[["res_x", 1], ["res_x_y", 1], ["res_x", 1]]), r"encoder_blocks\[1\] 'res_x_y' is not supp"),
    (dict(encoder_blocks=[["res_x", 1], ["compress_all_res", 1]]), r"encoder_blocks must alternate"),
    (dict(decoder_blocks=[["res_x", 1], ["attn_res_x", 1], ["res_x", 1]]), r"'attn_res_x' is not supported"),
    (dict(decoder_blocks=[["compress_all", 1], ["res_x", 1]]), r"decoder_blocks must alternate"),
])
def test_refused_header_options(change, match):
    with pytest.raises(ConfigError, match=match):
        vae_config_from_original(_section(**change), "ckpt")


def test_header_defaults_follow_ltx_core():
    section = _section(spatial_padding_mode="reflect", causal_decoder=True)
    del section["decoder_base_channels"]
    section["decoder_blocks"] = [["res_x", 1], ["compress_all", {"residual": True, "multiplier": 2}],
                                 ["res_x", 1], ["compress_time", {"residual": True, "multiplier": 2}], ["res_x", 1]]
    cfg = vae_config_from_original(section, "ckpt")
    assert cfg.timestep_conditioning is True  # absent -> True (ltx-core), unlike diffusers' converter
    assert (cfg.encoder_spatial_padding_mode, cfg.decoder_spatial_padding_mode) == ("reflect", "reflect")
    assert cfg.decoder_causal is True
    # base 128 * 8 = 1024 channels after conv_in; compress_time never has the residual path in ltx-core
    assert cfg.decoder_block_out_channels == (512, 1024) and cfg.upsample_factor == (2, 2)
    # upsample_type is in decoding order (diffusers does not reverse it), the other tuples encoder-side first
    assert cfg.upsample_type == ("temporal", "spatiotemporal") and cfg.upsample_residual == (True, False)
    del section["spatial_padding_mode"]
    cfg = vae_config_from_original(section, "ckpt")
    assert (cfg.encoder_spatial_padding_mode, cfg.decoder_spatial_padding_mode) == ("zeros", "reflect")


# ---- released size ----------------------------------------------------------------------------

@pytest.mark.parametrize("tc, total, dec", [(False, 1_222_479_601, 528_380_720), (True, 1_246_913_522, 552_814_641)])
def test_release_builds_on_meta(tc, total, dec):
    """LTX-2.0 sizes (shared/reference: 1,222,479,601 = 694.1 M + 528.4 M without the decoder's
    timestep conditioning); keys and shapes equal diffusers' class."""
    cfg = dataclasses.replace(VAE_LTX2, timestep_conditioning=tc)
    with torch.device("meta"):
        ours = LTX2VideoVAE(cfg)
        ref = AutoencoderKLLTX2Video(timestep_conditioning=tc, **DIFFUSERS_EXTRA)
    assert sum(p.numel() for p in ours.parameters()) == total
    assert sum(p.numel() for p in ours.encoder.parameters()) == 694_098_881
    assert sum(p.numel() for p in ours.decoder.parameters()) == dec
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert (ours.spatial_compression_ratio, ours.temporal_compression_ratio) == (32, 8)
