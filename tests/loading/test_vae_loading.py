"""Video VAE from diffusers folders and Lightricks single files, every released layout."""

import pytest
import torch

from ltxengine.config import ConfigError, VideoVAEConfig, parse_config
from ltxengine.loading import load_ltx_video, load_vae
from ltxengine.loading.original_config import vae_config

from .formats import original_transformer_config, original_transformer_keys, original_vae_keys, save_single_file
from .vae_fixtures import VARIANTS, make_ref, original_config

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import convert_ltx_vae_checkpoint_to_diffusers  # noqa: E402


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_original_config_converts_to_the_diffusers_config(variant):
    ref = make_ref(variant)
    expected = parse_config(VideoVAEConfig, dict(ref.config), "diffusers")
    assert vae_config(original_config(variant), "test") == expected


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_both_formats_load_identical_weights(tmp_path, variant):
    ref = make_ref(variant)
    sd = ref.state_dict()
    original = original_vae_keys(sd, variant)
    # the test writer must be the inverse of diffusers' own converter. diffusers recognises the
    # 0.9.5 layout only by a 2048-wide encoder output conv: give it a stand-in of that width.
    probe = dict(original)
    key = "vae.encoder.conv_out.conv.weight"
    if variant == "0.9.5":
        probe[key] = torch.zeros(probe[key].shape[0], 2048, 3, 3, 3)
    back = convert_ltx_vae_checkpoint_to_diffusers(probe)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd if k != "encoder.conv_out.conv.weight" or variant != "0.9.5")

    ref.save_pretrained(tmp_path / "vae")
    path = save_single_file(tmp_path / "ltxv.safetensors", original, {"vae": original_config(variant)})
    for model in (load_vae(tmp_path / "vae", dtype=torch.float32), load_vae(path, dtype=torch.float32)):
        ours = model.state_dict()
        assert ours.keys() == sd.keys()
        assert all(torch.equal(ours[k], sd[k]) for k in sd)


def test_single_file_with_transformer_and_vae(tmp_path):
    ref = make_ref("0.9.5")
    torch.manual_seed(1)
    tcfg = dict(in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                num_layers=1, caption_channels=12)
    tref = diffusers.LTXVideoTransformer3DModel(**tcfg)
    tensors = {**original_transformer_keys(tref.state_dict()), **original_vae_keys(ref.state_dict(), "0.9.5")}
    config = {"transformer": original_transformer_config(tcfg), "vae": original_config("0.9.5"),
              "scheduler": {"_class_name": "RectifiedFlowScheduler", "shifting": "SD3"}}
    ckpt = load_ltx_video(save_single_file(tmp_path / "all.safetensors", tensors, config), dtype=torch.float32)
    assert ckpt.vae.config.is_095 and ckpt.transformer.config.num_layers == 1
    assert ckpt.scheduler_config["shifting"] == "SD3"
    z = torch.randn(1, 16, 2, 2, 2)
    with torch.no_grad():
        torch.manual_seed(5)
        expected = ref.decode(z, torch.tensor([0.05])).sample
        actual = ckpt.vae.decode(z, temb=torch.tensor([0.05]))
    assert torch.allclose(actual, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("change, match", [
    ({"norm_layer": "group_norm"}, r"'norm_layer' must be 'pixel_norm', got 'group_norm'"),
    ({"spatial_padding_mode": "reflect"}, r"'spatial_padding_mode' must be 'zeros', got 'reflect'"),
    ({"dims": 2}, r"'dims' must be 3, got 2"),
    ({"latent_log_var": "per_channel"}, r"'latent_log_var' must be 'uniform'"),
    ({"use_fancy_vae": True}, r"unknown config option 'use_fancy_vae'"),
    ({"_class_name": "VideoAutoencoder"}, r"_class_name must be 'CausalVideoAutoencoder'"),
])
def test_unsupported_vae_options_are_refused(change, match):
    with pytest.raises(ConfigError, match=r"ckpt \[vae\]: .*" + match):
        vae_config(original_config("0.9.5", **change), "ckpt")


def test_unsupported_block_is_refused():
    cfg = original_config("0.9.5")
    cfg["decoder_blocks"] = [["attn_res_x", {"num_layers": 1, "attention_head_dim": 8}]] + cfg["decoder_blocks"][1:]
    with pytest.raises(ConfigError, match=r"decoder block 'attn_res_x' is not supported"):
        vae_config(cfg, "ckpt")
    cfg = original_config("0.9.5")
    cfg["encoder_blocks"][1] = ["compress_all_x_y", {"multiplier": 2}]
    with pytest.raises(ConfigError, match=r"encoder stage \['res_x', 'compress_all_x_y'\] is not supported"):
        vae_config(cfg, "ckpt")
