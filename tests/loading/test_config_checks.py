"""Every config value read from a checkpoint is checked for JSON type and range, naming the file
and the key (issue 17, finding 4.10): ``"num_layers": "2"`` (a string), ``"attention_bias": "false"``
(truthy), ``"norm_eps": "x"``, a config that is a JSON list. Before, these failed far from the file
or were silently read as something else."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from ltxengine.config import (ConfigError, LatentUpsamplerConfig, TransformerConfig, VideoVAEConfig, check_value,
                              parse_config, same_value)
from ltxengine.presets import DEMO_TRANSFORMER, DEMO_VAE, demo_ltx2
from ltxengine.loading import CheckpointError, load_latent_upsampler, load_ltx_video, load_transformer, load_vae
from ltxengine.loading.ltx2 import load_ltx2, load_ltx2_component
from ltxengine.loading.ltx2_audio import audio_vae_config_from_original, vocoder_config_from_original
from ltxengine.loading.ltx2_text import config_from_original as connectors_config_from_original
from ltxengine.loading.ltx2_transformer import transformer_config as ltx2_transformer_config
from ltxengine.loading.ltx2_vae import upsampler_config_from_original, vae_config_from_original
from ltxengine.loading.original_config import transformer_config, vae_config
from ltxengine.models.audio_vae import AudioVAEConfig
from ltxengine.models.ltx2_text import TextConnectorsConfig
from ltxengine.models.video_vae import LTX2VideoVAEConfig
from ltxengine.models.vocoder import VocoderConfig
from ltxengine.ltx_video.schedule import SchedulerConfig

from .formats import original_transformer_config, save_single_file


# -- the central checker -----------------------------------------------------------------------------

@pytest.mark.parametrize("cls, key, value, message", [
    (TransformerConfig, "num_layers", "2", r"'num_layers' must be a positive int, got '2' \(str\)"),
    (TransformerConfig, "num_layers", True, r"'num_layers' must be a positive int, got True \(bool\)"),
    (TransformerConfig, "num_layers", 2.0, r"'num_layers' must be a positive int, got 2\.0 \(float\)"),
    (TransformerConfig, "num_layers", 0, r"'num_layers' must be a positive int, got 0"),
    (TransformerConfig, "num_layers", 10 ** 12, r"'num_layers' must be a positive int \(ints at most 1048576\)"),
    (TransformerConfig, "attention_bias", "false", r"'attention_bias' must be true or false, got 'false'"),
    (TransformerConfig, "attention_bias", 0, r"'attention_bias' must be true or false, got 0 \(int\)"),
    (TransformerConfig, "norm_eps", "x", r"'norm_eps' must be a finite positive number, got 'x'"),
    (TransformerConfig, "norm_eps", math.nan, r"'norm_eps' must be a finite positive number, got nan"),
    (TransformerConfig, "norm_eps", -1e-6, r"'norm_eps' must be a finite positive number, got -1e-06"),
    (TransformerConfig, "activation_fn", 3, r"'activation_fn' must be a string, got 3"),
    (VideoVAEConfig, "layers_per_block", [1, 1, -1, 1, 1], r"must be a list of \(an int >= 0\) \(entry -1\)"),
    (VideoVAEConfig, "layers_per_block", 4, r"'layers_per_block' must be a list of \(an int >= 0\), got 4"),
    (VideoVAEConfig, "spatio_temporal_scaling", [1, 1, 1, 0], r"must be a list of \(true or false\)"),
    (VideoVAEConfig, "spatial_compression_ratio", "32", r"must be a positive int or null, got '32'"),
    (LatentUpsamplerConfig, "dims", "3", r"'dims' must be a positive int, got '3'"),
    (LTX2VideoVAEConfig, "decoder_inject_noise", "false", r"must be a list of \(true or false\) or true or false"),
    (VocoderConfig, "resnet_dilations", [[1, "3"]], r"must be a list of \(a list of \(a positive int\)\)"),
    (AudioVAEConfig, "attn_resolutions", "8", r"must be a list of \(a positive int\) or null, got '8'"),
    (TextConnectorsConfig, "connector_rope_base_seq_len", "4096", r"must be a finite positive number, got '4096'"),
])
def test_parse_config_checks_json_types_and_ranges(cls, key, value, message):
    with pytest.raises(ConfigError, match=r"cfg\.json: config option .*" + message) as info:
        parse_config(cls, {key: value}, "cfg.json")
    assert str(info.value).startswith(f"cfg.json: config option {key!r} must be ")


def test_converted_values_keep_their_meaning():
    cfg = parse_config(TransformerConfig, {"norm_eps": 1, "num_layers": 2, "attention_bias": False}, "c")
    assert cfg.norm_eps == 1.0 and type(cfg.norm_eps) is float and cfg.attention_bias is False
    vae = parse_config(LTX2VideoVAEConfig, {"decoder_inject_noise": True}, "c")  # diffusers' one-bool form
    assert vae.decoder_inject_noise == (True,) * 4
    vocoder = parse_config(VocoderConfig, {"resnet_dilations": [[1, 3], [5], [1]]}, "c")
    assert vocoder.resnet_dilations == ((1, 3), (5,), (1,))
    assert parse_config(VideoVAEConfig, {"layers_per_block": [0, 0, 0, 0, 0]}, "c").layers_per_block == (0,) * 5


@pytest.mark.parametrize("data", [[1, 2], "x", None, 3])
def test_a_config_that_is_not_an_object(data):
    with pytest.raises(ConfigError, match=rf"cfg\.json: config must be a JSON object, got {type(data).__name__}"):
        parse_config(TransformerConfig, data, "cfg.json")


def test_check_value_names_the_file_key():
    with pytest.raises(ConfigError, match=r"f: config option 'positional_embedding_max_pos\[0\]' must be a positive"):
        check_value("20", int, "f", "positional_embedding_max_pos[0]", "pos_embed_max_pos")


def test_same_value_does_not_mix_bools_and_numbers():
    assert same_value(True, True) and same_value(0, 0.0) and same_value([20, 2048], [20, 2048.0])
    assert not same_value(1, True) and not same_value(0, False) and not same_value("false", False)
    assert not same_value(None, 0) and not same_value([1], [True])


def test_scheduler_config_values_are_checked():
    with pytest.raises(ConfigError, match=r"sched\.json: config option 'shift' must be a finite positive number"):
        SchedulerConfig.from_dict({"shift": "1.0"}, "sched.json")
    with pytest.raises(ConfigError, match=r"'use_dynamic_shifting' must be true or false, got 'false'"):
        SchedulerConfig.from_dict({"use_dynamic_shifting": "false"}, "sched.json")
    assert SchedulerConfig.from_dict({"base_shift": -0.5, "shift": 3}, "s").shift == 3.0  # shifts may be negative


# -- diffusers folders (config.json of every component) ----------------------------------------------

def _write_config(folder, data):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(data))
    return folder


LTXV_FOLDERS = {
    "transformer": (load_transformer, {"_class_name": "LTXVideoTransformer3DModel",
                                       **dataclasses.asdict(DEMO_TRANSFORMER)}),
    "vae": (load_vae, {"_class_name": "AutoencoderKLLTXVideo", **dataclasses.asdict(DEMO_VAE)}),
    "latent_upsampler": (load_latent_upsampler, {"_class_name": "LTXLatentUpsamplerModel",
                                                 **dataclasses.asdict(LatentUpsamplerConfig())}),
}


@pytest.mark.parametrize("component, key, value, message", [
    ("transformer", "num_layers", "2", r"'num_layers' must be a positive int, got '2'"),
    ("transformer", "attention_bias", "false", r"'attention_bias' must be true or false, got 'false'"),
    ("transformer", "norm_eps", "x", r"'norm_eps' must be a finite positive number, got 'x'"),
    ("vae", "scaling_factor", "1.0", r"'scaling_factor' must be a finite positive number"),
    ("vae", "decoder_causal", 0, r"'decoder_causal' must be true or false, got 0"),
    ("latent_upsampler", "mid_channels", 5.12e2, r"'mid_channels' must be a positive int, got 512\.0"),
])
def test_ltx_video_folder_config_values(component, key, value, message, tmp_path):
    """Checked before any weight is looked for (the folders hold only config.json)."""
    load, config = LTXV_FOLDERS[component]
    folder = _write_config(tmp_path / component, {**config, key: value})
    with pytest.raises(ConfigError, match=rf"{folder / 'config.json'}: config option {message}"):
        load(folder)


@pytest.mark.parametrize("component", sorted(LTXV_FOLDERS))
def test_ltx_video_folder_config_that_is_a_list(component, tmp_path):
    load, _ = LTXV_FOLDERS[component]
    folder = tmp_path / component
    folder.mkdir()
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"config\.json: .*config\.json must be a JSON object, got list"):
        load(folder)


def test_pipeline_index_and_scheduler_config_must_be_objects(tmp_path):
    (tmp_path / "model_index.json").write_text('["LTXPipeline"]')
    with pytest.raises(CheckpointError, match=r"model_index\.json: diffusers model_index\.json must be a JSON object"):
        load_ltx_video(tmp_path)


LTX2_COMPONENTS = {
    "transformer": ("LTX2VideoTransformer3DModel", "num_layers", "2", r"'num_layers' must be a positive int"),
    "connectors": ("LTX2TextConnectors", "rope_double_precision", "true", r"'rope_double_precision' must be true or"),
    "vae": ("AutoencoderKLLTX2Video", "resnet_norm_eps", "1e-6", r"'resnet_norm_eps' must be a finite positive"),
    "audio_vae": ("AutoencoderKLLTX2Audio", "mel_bins", 64.5, r"'mel_bins' must be a positive int or null"),
    "vocoder": ("LTX2Vocoder", "upsample_factors", "65222", r"'upsample_factors' must be a list of"),
}


@pytest.mark.parametrize("component", sorted(LTX2_COMPONENTS))
def test_ltx2_folder_config_values(component, tmp_path):
    class_name, key, value, message = LTX2_COMPONENTS[component]
    config = dataclasses.asdict(demo_ltx2()[component])
    folder = _write_config(tmp_path / component, {"_class_name": class_name, **config, key: value})
    with pytest.raises(ConfigError, match=rf"{folder / 'config.json'}: config option {message}"):
        load_ltx2_component(folder, component)


# -- configs embedded in Lightricks single files -------------------------------------------------------

def _ltxv_transformer_header(**changes):
    cfg = {k: getattr(DEMO_TRANSFORMER, k) for k in ("in_channels", "out_channels", "num_attention_heads",
                                                 "attention_head_dim", "cross_attention_dim", "num_layers",
                                                 "caption_channels")}
    return {**original_transformer_config(cfg), **changes}


@pytest.mark.parametrize("changes, message", [
    (dict(num_layers="2"), r"'num_layers' must be a positive int, got '2'"),
    (dict(attention_bias="false"), r"'attention_bias' must be true or false, got 'false'"),
    (dict(attention_bias=1), r"'attention_bias' must be true or false, got 1"),
    (dict(use_linear_projection=0), r"'use_linear_projection' must be False, got 0"),  # a fixed option
    (dict(norm_eps="x"), r"'norm_eps' must be a finite positive number, got 'x'"),
    (dict(causal_temporal_positioning="false"), r"'causal_temporal_positioning' must be true or false, got 'false'"),
])
def test_ltx_video_single_file_transformer_header(changes, message):
    with pytest.raises(ConfigError, match=r"ltxv\.safetensors \[transformer\]: config option " + message):
        transformer_config(_ltxv_transformer_header(**changes), "ltxv.safetensors")


VAE_HEADER = {"_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
              "latent_channels": 32, "patch_size": 4, "timestep_conditioning": True,
              "encoder_blocks": [["res_x", {"num_layers": 1}], ["compress_space_res", {"multiplier": 2}],
                                 ["res_x", {"num_layers": 1}]],
              "decoder_blocks": [["res_x", {"num_layers": 1}], ["compress_all", {"multiplier": 2, "residual": True}],
                                 ["res_x", {"num_layers": 1}]]}


@pytest.mark.parametrize("path, value, message", [
    (("encoder_blocks", 1, 1, "multiplier"), "2", r"'encoder_blocks\[1\]\.multiplier' must be a positive int, got '2'"),
    (("encoder_blocks", 0, 1, "num_layers"), -1, r"'encoder_blocks\[0\]\.num_layers' must be an int >= 0"),
    (("decoder_blocks", 1, 1, "residual"), "yes", r"'decoder_blocks\[1\]\.residual' must be true or false"),
    (("encoder_blocks", 0, 1), True, r"encoder_blocks entries must be \[name, num_layers or params\]"),
    (("decoder_base_channels",), "128", r"'decoder_base_channels' must be a positive int, got '128'"),
    (("scaling_factor",), "1", r"'scaling_factor' must be a finite positive number, got '1'"),
    (("causal_decoder",), "false", r"'causal_decoder' must be true or false"),
])
def test_ltx_video_single_file_vae_header(path, value, message):
    header = json.loads(json.dumps(VAE_HEADER))
    target = header
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(ConfigError, match=r"ckpt \[vae\]: .*" + message):
        vae_config(header, "ckpt")


def test_ltx_video_single_file_header_structure(tmp_path):
    path = save_single_file(tmp_path / "a.safetensors", {}, [1, 2])
    with pytest.raises(CheckpointError, match=r"a\.safetensors: header 'config' must be a JSON object, got list"):
        load_transformer(path)
    path = save_single_file(tmp_path / "b.safetensors", {}, {"transformer": [1], "vae": {}})
    with pytest.raises(CheckpointError, match=r"b\.safetensors: header config section 'transformer' must be a JSON"):
        load_transformer(path)
    path = save_single_file(tmp_path / "c.safetensors", {}, {"transformer": _ltxv_transformer_header(num_layers="2")})
    with pytest.raises(ConfigError, match=r"c\.safetensors \[transformer\]: config option 'num_layers'"):
        load_transformer(path)


LTX2_TRANSFORMER = {"caption_channels": 32, "dropout": 0.0, "attention_bias": True, "num_vector_embeds": None,
                    "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000, "use_linear_projection": False,
                    "only_cross_attention": False, "cross_attention_norm": True, "double_self_attention": False,
                    "upcast_attention": False, "standardization_norm": "rms_norm", "norm_elementwise_affine": False,
                    "qk_norm": "rms_norm", "positional_embedding_type": "rope",
                    "use_audio_video_cross_attention": True, "share_ff": False, "av_cross_ada_norm": True,
                    "use_middle_indices_grid": True}


LTX2_VAE = dict(encoder_blocks=[["res_x", 1], ["compress_space_res", {"multiplier": 2}], ["res_x", 1]],
                decoder_blocks=[["res_x", 1], ["compress_all", {"multiplier": 2}], ["res_x", 1]])


@pytest.mark.parametrize("convert, section, message", [
    (ltx2_transformer_config, dict(LTX2_TRANSFORMER, num_layers="48"), r"\[transformer\]: config option 'num_layers'"),
    (ltx2_transformer_config, dict(LTX2_TRANSFORMER, positional_embedding_theta="1e4"),
     r"config option 'positional_embedding_theta' must be a finite positive number"),
    (ltx2_transformer_config, dict(LTX2_TRANSFORMER, positional_embedding_max_pos=["20", 2048, 2048]),
     r"config option 'positional_embedding_max_pos\[0\]' must be a positive int"),
    (ltx2_transformer_config, dict(LTX2_TRANSFORMER, attention_bias=1), r"'attention_bias' must be True"),
    (connectors_config_from_original, dict(connector_apply_gated_attention="false"),
     r"'connector_apply_gated_attention' must be true or false, got 'false'"),
    (connectors_config_from_original, dict(connector_num_layers=2.5), r"'connector_num_layers' must be a positive int"),
    (vae_config_from_original, dict(decoder_base_channels="128"), r"'decoder_base_channels' must be a positive int"),
    (vae_config_from_original, dict(encoder_blocks=[["res_x", {"num_layers": "4"}]]),
     r"'encoder_blocks\[0\]\.num_layers' must be an int >= 0, got '4'"),
    (vae_config_from_original, dict(LTX2_VAE, spatial_padding_mode=1), r"'spatial_padding_mode' must be a string"),
    (vae_config_from_original, dict(LTX2_VAE, timestep_conditioning="true"), r"'timestep_conditioning' must be true"),
    (audio_vae_config_from_original, {"model": {"params": {"ddconfig": {"ch": "128"}}}},
     r"'model\.params\.ddconfig\.ch' must be a positive int"),
    (audio_vae_config_from_original, {"model": {"params": {"ddconfig": {"attn_resolutions": "8"}}}},
     r"'model\.params\.ddconfig\.attn_resolutions' must be a list"),
    (audio_vae_config_from_original, {"model": {"params": {"sampling_rate": 16000.5}}},
     r"'model\.params\.sampling_rate' must be a positive int"),
    (audio_vae_config_from_original, {"preprocessing": {"mel": {"n_mel_channels": "64"}}},
     r"'preprocessing\.mel\.n_mel_channels' must be a positive int or null"),
    (vocoder_config_from_original, dict(resblock="1", stereo=True, upsample_initial_channel="1024"),
     r"'upsample_initial_channel' must be a positive int"),
    (vocoder_config_from_original, dict(resblock="1", stereo=True, use_tanh_at_final="false"),
     r"'use_tanh_at_final' must be true or false"),
    (vocoder_config_from_original, dict(resblock="1", stereo=True, upsample_rates=[6, 5, 2, 2, "2"]),
     r"'upsample_rates' must be a list of \(a positive int\)"),
    (upsampler_config_from_original, dict(mid_channels="512"), r"'mid_channels' must be a positive int"),
    (upsampler_config_from_original, dict(spatial_scale="2.0"), r"'spatial_scale' must be a finite positive number"),
    (upsampler_config_from_original, dict(rational_resampler="true"), r"'rational_resampler' must be true or false"),
])
def test_ltx2_single_file_header_sections(convert, section, message):
    """Each header section through the converter the bundle loader calls; the key is the file's."""
    with pytest.raises(ConfigError, match=r"ltx2\.safetensors.*" + message):
        convert(section, "ltx2.safetensors")


def test_ltx2_bundle_header_that_is_a_list(tmp_path):
    path = save_single_file(tmp_path / "ltx2.safetensors", {"vocoder.conv_pre.weight": torch.zeros(1)},
                            ["transformer"])
    with pytest.raises(CheckpointError, match=r"ltx2\.safetensors: header 'config' must be a JSON object, got list"):
        load_ltx2(path, components=("vocoder",))
