"""The LTX-2.3 / 2.5 conv video VAE layout (VAE_LTX23) against diffusers' AutoencoderKLLTX2Video and
ltx-core's VideoEncoder / VideoDecoder, same weights, fp32, tiny configs; the released config, its
header and key names, and strict loading of both checkpoint formats."""

import dataclasses

import pytest
import torch

from ltxengine.config import parse_config
from ltxengine.loading import CheckpointError
from ltxengine.loading.ltx2 import load_ltx2, load_ltx2_component
from ltxengine.loading.ltx2_vae import KEYMAP, KEYMAP_VAE_FILE, vae_config_from_original
from ltxengine.models.video_vae import VAE_LTX23, LTX2VideoVAE, LTX2VideoVAEConfig, TilingConfig

from ..helpers import assert_close_scaled
from ..loading.formats import save_single_file
from .ltx2_video_vae_fixtures import CASES_V23, ltx_core_halves, make_pair, original_section, original_state_dict

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLLTX2Video  # noqa: E402

# The budget of test_ltx2_video_vae.py, for the same reason: the same convs on every side, and ours
# normalizes by x * rsqrt(...) where the references divide by sqrt(...), 1 ulp per norm carried along.
# A wiring error (padding mode, upsampler order or stride, a dropped frame) is > 1e-2.
REL_TOL = 1e-5
NAMES = list(CASES_V23)

# diffusers' converter, version "2.3" (scripts/convert_ltx2_to_diffusers.py @58eb52c, lines 754-791);
# its "2.5" entry is the same dict.
CONVERTER_23 = dict(
    in_channels=3, out_channels=3, latent_channels=128, block_out_channels=(256, 512, 1024, 1024),
    down_block_types=("LTX2VideoDownBlock3D",) * 4, decoder_block_out_channels=(256, 512, 512, 1024),
    layers_per_block=(4, 6, 4, 2, 2), decoder_layers_per_block=(4, 6, 4, 2, 2), spatio_temporal_scaling=(True,) * 4,
    decoder_spatio_temporal_scaling=(True,) * 4, decoder_inject_noise=(False,) * 5,
    downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    upsample_type=("spatiotemporal", "spatiotemporal", "temporal", "spatial"), upsample_residual=(False,) * 4,
    upsample_factor=(2, 2, 1, 2), timestep_conditioning=False, patch_size=4, patch_size_t=1, resnet_norm_eps=1e-6,
    encoder_causal=True, decoder_causal=False, encoder_spatial_padding_mode="zeros",
    decoder_spatial_padding_mode="zeros", spatial_compression_ratio=32, temporal_compression_ratio=8)

# The ``vae`` section of ltx-2.3-22b-dev.safetensors' header (2.5's -conv VAE file: byte-identical block
# lists, per diffusers' converter). Lightricks' repository does not print it; this is the metadata as
# quoted by ports that read the released file (TensorRT-LLM's LTX-2.3 VAE test, among others).
HEADER_23 = {
    "_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128,
    "encoder_blocks": [["res_x", {"num_layers": 4}], ["compress_space_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 6}], ["compress_time_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 4}], ["compress_all_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 2}], ["compress_all_res", {"multiplier": 1}],
                       ["res_x", {"num_layers": 2}]],
    "decoder_blocks": [["res_x", {"num_layers": 4}], ["compress_space", {"multiplier": 2}],
                       ["res_x", {"num_layers": 6}], ["compress_time", {"multiplier": 2}],
                       ["res_x", {"num_layers": 4}], ["compress_all", {"multiplier": 1}],
                       ["res_x", {"num_layers": 2}], ["compress_all", {"multiplier": 2}],
                       ["res_x", {"num_layers": 2}]],
    "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
    "use_quant_conv": False, "causal_decoder": False, "timestep_conditioning": False,
    "normalize_latent_channels": False, "encoder_base_channels": 128, "decoder_base_channels": 128,
    "spatial_padding_mode": "zeros",
}


def _temb(name, batch):
    return torch.linspace(0.03, 0.1, batch) if CASES_V23[name].get("timestep_conditioning") else None


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_equals_diffusers(name):
    ref, ours = make_pair(name)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert (ours.spatial_compression_ratio, ours.temporal_compression_ratio) == (32, 8)
    # the four up blocks: 2x2x2 halving, 2x2x2 keeping the width, time, space; none residual
    strides = [b.upsamplers[0].stride for b in ours.decoder.up_blocks]
    assert strides == [(2, 2, 2), (2, 2, 2), (2, 1, 1), (1, 2, 2)]
    assert not any(b.upsamplers[0].residual for b in ours.decoder.up_blocks)


@pytest.mark.parametrize("name", NAMES)
def test_encode_decode_match_diffusers(name):
    ref, ours = make_pair(name)
    g = torch.Generator().manual_seed(2)
    x, z = torch.randn(2, 3, 17, 64, 96, generator=g), torch.randn(2, 8, 2, 2, 3, generator=g)
    temb = _temb(name, 2)
    with torch.no_grad():
        err_e = assert_close_scaled(ours.encode(x), ref.encode(x).latent_dist.parameters, REL_TOL, f"{name} encode")
        err_d = assert_close_scaled(ours.decode(z, temb), ref.decode(z, temb).sample, REL_TOL, f"{name} decode")
    print(f"{name}: encode err {err_e:.2e}, decode err {err_d:.2e}")


# 3x3-latent tiles with stride 2, 2-latent-frame tiles (as test_ltx2_video_vae.py)
SMALL_TILES = TilingConfig(96, 96, 16, 64, 64, 8)


@pytest.mark.parametrize("name", NAMES)
def test_tiled_paths_match_diffusers(name):
    """Spatial tiled encode / decode and temporal tiled encode equal diffusers' (its temporal tiled
    decode drops a frame per seam where ours keeps frames aligned; see VideoVAE.decode)."""
    ref, ours = make_pair(name)
    ref.enable_tiling(**dataclasses.asdict(SMALL_TILES))
    ref.use_framewise_decoding = True
    errs = []
    try:
        with torch.no_grad():
            for shape in [(1, 3, 9, 128, 128), (1, 3, 25, 64, 64)]:  # spatial only; temporal
                x = torch.randn(shape)
                errs.append(assert_close_scaled(ours.encode(x, tiling=SMALL_TILES),
                                                ref.encode(x).latent_dist.parameters, REL_TOL, f"{name} enc {shape}"))
            z, temb = torch.randn(1, 8, 2, 4, 5), _temb(name, 1)
            errs.append(assert_close_scaled(ours.decode(z, temb, tiling=SMALL_TILES), ref.decode(z, temb).sample,
                                            REL_TOL, f"{name} tiled decode"))
    finally:
        ref.disable_tiling()
        ref.use_framewise_decoding = False
    print(f"{name}: tiled errs {[f'{e:.1e}' for e in errs]}")


def test_controls_padding_changes_the_output():
    """The tests can fail: the 2.0 padding (decoder reflect) or a reflect-padded encoder moves the output."""
    _, ours = make_pair("2.3")
    g = torch.Generator().manual_seed(5)
    x, z = torch.randn(1, 3, 9, 64, 64, generator=g), torch.randn(1, 8, 2, 2, 2, generator=g)
    with torch.no_grad():
        for half, run, arg in (("decoder", LTX2VideoVAE.decode, z), ("encoder", LTX2VideoVAE.encode, x)):
            other = LTX2VideoVAE(dataclasses.replace(ours.config, **{f"{half}_spatial_padding_mode": "reflect"}))
            other.load_state_dict(ours.state_dict())
            assert (run(other.eval(), arg) - run(ours, arg)).abs().max() > 1e-2, half


@pytest.mark.parametrize("name", NAMES)
def test_matches_ltx_core(name):
    """ltx-core built from the tiny model's original header, loaded with its original key names."""
    _, ours = make_pair(name)
    encoder, decoder = ltx_core_halves(ours)
    g = torch.Generator().manual_seed(4)
    x, z = torch.randn(2, 3, 9, 64, 32, generator=g), torch.randn(2, 8, 2, 2, 2, generator=g)
    with torch.no_grad():
        errs = [assert_close_scaled(ours.encode_normalized(x), encoder(x), REL_TOL, f"{name} encode")]
        expected = decoder(z, generator=torch.Generator().manual_seed(5))
        got = ours.decode_normalized(z, generator=torch.Generator().manual_seed(5))
        errs.append(assert_close_scaled(got, expected, REL_TOL, f"{name} decode"))
        if ours.config.timestep_conditioning:
            t = torch.tensor([0.2, 0.7])
            expected = decoder(z, timestep=t, generator=torch.Generator().manual_seed(6))
            got = ours.decode_normalized(z, t, generator=torch.Generator().manual_seed(6))
            errs.append(assert_close_scaled(got, expected, REL_TOL, f"{name} decode t"))
    print(f"{name}: errs vs ltx-core {[f'{e:.1e}' for e in errs]}")


@pytest.mark.parametrize("name", NAMES)
def test_header_and_key_names_round_trip(name):
    """The original header gives our config; the one key map (2.0 and 2.3 alike) gives our keys."""
    _, ours = make_pair(name)
    assert vae_config_from_original(original_section(ours.config), "ckpt") == ours.config
    original = original_state_dict(ours)
    assert any(k.startswith("vae.decoder.up_blocks.8.") for k in original)  # the fourth up block's resnets
    mapped = {KEYMAP.apply(k): v for k, v in original.items() if KEYMAP.apply(k) is not None}
    assert set(mapped) == set(ours.state_dict())
    assert all(torch.equal(mapped[k], v) for k, v in ours.state_dict().items())


def test_bare_key_names_of_a_vae_only_file():
    """2.5's per-component vae/ files spell the same keys without "vae." (ltx-core strips either)."""
    _, ours = make_pair("2.3")
    bare = {k[len("vae."):]: v for k, v in original_state_dict(ours).items()}
    mapped = {KEYMAP_VAE_FILE.apply(k): v for k, v in bare.items() if KEYMAP_VAE_FILE.apply(k) is not None}
    assert set(mapped) == set(ours.state_dict())
    assert all(torch.equal(mapped[k], v) for k, v in ours.state_dict().items())
    assert KEYMAP_VAE_FILE.apply("per_channel_statistics.channel") is None


@pytest.mark.parametrize("name", NAMES)
def test_folder_and_single_file_load_identical_models(tmp_path, name):
    """A diffusers ``vae/`` folder (save_pretrained) and a Lightricks single file (original names, the
    header's ``vae`` section) load strictly to diffusers' weights and outputs."""
    ref, ours = make_pair(name)
    ref.save_pretrained(tmp_path / "vae")
    path = save_single_file(tmp_path / "ltx-2.3.safetensors", original_state_dict(ours),
                            {"vae": original_section(ours.config)})
    z, temb = torch.randn(1, 8, 2, 2, 3, generator=torch.Generator().manual_seed(9)), _temb(name, 1)
    with torch.no_grad():
        expected = ref.decode(z, temb).sample
    for model in (load_ltx2_component(tmp_path / "vae", "vae", dtype=torch.float32),
                  load_ltx2(path, dtype=torch.float32, components=("vae",)).vae):
        # the folder's config.json states the compression ratios, which ours derives when absent
        assert dataclasses.replace(model.config, spatial_compression_ratio=None,
                                   temporal_compression_ratio=None) == ours.config
        sd = model.state_dict()
        assert sd.keys() == ref.state_dict().keys()
        assert all(torch.equal(sd[k], v) for k, v in ref.state_dict().items())
        with torch.no_grad():
            assert_close_scaled(model.eval().decode(z, temb), expected, REL_TOL, f"{name} loaded")


def test_single_file_stays_strict(tmp_path):
    _, ours = make_pair("2.3")
    section = {"vae": original_section(ours.config)}
    tensors = original_state_dict(ours)
    missing = {k: v for k, v in tensors.items() if not k.startswith("vae.decoder.up_blocks.7.")}
    with pytest.raises(CheckpointError, match=r"missing.*'decoder\.up_blocks\.3\.upsamplers\.0\.conv\.conv\.weight'"):
        load_ltx2(save_single_file(tmp_path / "missing.safetensors", missing, section), components=("vae",))
    extra = dict(tensors, **{"vae.decoder.up_blocks.9.res_blocks.0.conv1.conv.bias": torch.zeros(8)})
    with pytest.raises(CheckpointError, match=r"1 checkpoint tensors not used by the model: .*'vae\.decoder\."
                                              r"up_blocks\.9\.res_blocks\.0\.conv1\.conv\.bias'"):
        load_ltx2(save_single_file(tmp_path / "extra.safetensors", extra, section), components=("vae",))


# ---- released size ----------------------------------------------------------------------------

@pytest.mark.parametrize("tc, total, dec", [(False, 726_105_969, 407_169_072), (True, 755_252_850, 436_315_953)])
def test_release_builds_on_meta(tc, total, dec):
    """LTX-2.3 sizes: 318.9 M encoder + 407.2 M decoder (436.3 M with the decoder's timestep
    conditioning, which the released header turns off); keys and shapes equal diffusers' class built
    with its converter's 2.3 config, which is the preset field for field."""
    stated = dict(spatial_compression_ratio=32, temporal_compression_ratio=8)  # the preset derives them
    assert parse_config(LTX2VideoVAEConfig, CONVERTER_23, "converter 2.3") == dataclasses.replace(VAE_LTX23, **stated)
    assert vae_config_from_original(HEADER_23, "ltx-2.3-22b-dev.safetensors") == VAE_LTX23
    cfg = dataclasses.replace(VAE_LTX23, timestep_conditioning=tc)
    with torch.device("meta"):
        ours = LTX2VideoVAE(cfg)
        ref = AutoencoderKLLTX2Video(**dict(CONVERTER_23, timestep_conditioning=tc))
    assert sum(p.numel() for p in ours.parameters()) == total
    assert sum(p.numel() for p in ours.encoder.parameters()) == 318_936_897
    assert sum(p.numel() for p in ours.decoder.parameters()) == dec
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert (ours.spatial_compression_ratio, ours.temporal_compression_ratio) == (32, 8)
