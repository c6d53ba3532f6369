"""The tiny LTX-2 video VAEs of the tests: diffusers' AutoencoderKLLTX2Video with random weights beside
ours loaded from it, and the same weights in the original single-file layout (the header's ``vae``
section and key names, written from ltx-core's module tree). Used by the VAE and loading tests."""

import re

import pytest
import torch

from ltxengine.config import parse_config
from ltxengine.models.video_vae import VAE_LTX2, LTX2VideoVAE, LTX2VideoVAEConfig
from ltxengine.presets import TINY_VAE_LTX2

from ..helpers import preset_kwargs, randomize_vae_

pytest.importorskip("diffusers")
from diffusers import AutoencoderKLLTX2Video  # noqa: E402

# The 2.0 layout scaled down (presets.TINY_VAE_LTX2, bench's --smoke VAE): conv_in = latent width 8, four
# space-to-depth down blocks (spatial, temporal, spatiotemporal x2), three residual x2 spatiotemporal up blocks.
RELEASE = preset_kwargs(TINY_VAE_LTX2, VAE_LTX2)
CASES = {
    "2.0": dict(RELEASE, timestep_conditioning=True),  # what ltx-core builds when the header has no flag
    "2.0_no_tc": dict(RELEASE, timestep_conditioning=False),  # diffusers' converter default
    # every other switch diffusers' class has: a strided-conv down block, spatial / temporal up
    # blocks, a factor-1 non-residual upsampler, noise injection, causal decoder, swapped padding
    "variant": dict(latent_channels=8, block_out_channels=(16, 16, 32, 64), layers_per_block=(1, 0, 1, 1, 1),
                    downsample_type=("spatial", "conv", "spatiotemporal", "temporal"),
                    decoder_block_out_channels=(16, 32, 64), decoder_layers_per_block=(1, 1, 0, 1),
                    upsample_type=("spatial", "temporal", "spatiotemporal"), upsample_factor=(1, 2, 2),
                    upsample_residual=(False, True, True), decoder_inject_noise=(True, False, True, True),
                    timestep_conditioning=True, decoder_causal=True, encoder_spatial_padding_mode="reflect",
                    decoder_spatial_padding_mode="zeros"),
}
# diffusers' class defaults differ from the release here (see LTX2VideoVAEConfig).
DIFFUSERS_EXTRA = dict(decoder_causal=False, spatial_compression_ratio=32, temporal_compression_ratio=8)


_PAIRS = {}


def make_pair(name):
    """(diffusers model, ours) with the same random weights; cached, the models are read-only."""
    if name not in _PAIRS:
        cfg = CASES[name]
        torch.manual_seed(0)
        ref = AutoencoderKLLTX2Video(**{**DIFFUSERS_EXTRA, **cfg}).eval()
        randomize_vae_(ref, 1)
        ours = LTX2VideoVAE(parse_config(LTX2VideoVAEConfig, cfg, "test")).eval()
        ours.load_state_dict(ref.state_dict(), strict=True)
        _PAIRS[name] = ref, ours
    return _PAIRS[name]


# -- the original (Lightricks / ltx-core) layout --------------------------------------------------

def original_section(cfg: LTX2VideoVAEConfig) -> dict:
    """Our config written as the original header's ``vae`` section (ltx-core block lists)."""
    names = {"spatial": "compress_space_res", "temporal": "compress_time_res", "spatiotemporal": "compress_all_res"}
    enc, width = [], cfg.latent_channels
    for i, out in enumerate(cfg.block_out_channels):
        enc += [["res_x", {"num_layers": cfg.layers_per_block[i]}],
                [names[cfg.downsample_type[i]], {"multiplier": out // width}]]
        width = out
    enc.append(["res_x", {"num_layers": cfg.layers_per_block[-1]}])
    dec = []
    for i in range(len(cfg.decoder_block_out_channels)):
        dec += [["res_x", {"num_layers": cfg.decoder_layers_per_block[i], "inject_noise": False}],
                ["compress_all", {"residual": cfg.upsample_residual[i], "multiplier": cfg.upsample_factor[i]}]]
    dec.append(["res_x", {"num_layers": cfg.decoder_layers_per_block[-1], "inject_noise": False}])
    section = {"_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
               "latent_channels": cfg.latent_channels, "encoder_blocks": enc, "decoder_blocks": dec,
               "patch_size": 4, "norm_layer": "pixel_norm", "latent_log_var": "uniform", "causal_decoder": False,
               "decoder_base_channels": cfg.decoder_block_out_channels[-1] // 8}
    if not cfg.timestep_conditioning:
        section["timestep_conditioning"] = False  # absent means True in ltx-core
    return section


def _original_key(key: str, n_down: int) -> str:
    """Our (diffusers) key -> the original checkpoint key, from ltx-core's module tree: flat
    encoder down_blocks (resnets, downsampler alternating, mid block last), flat decoder up_blocks
    (mid block first), res_blocks, last_time_embedder / last_scale_shift_table, statistics."""
    stats = {"latents_mean": "per_channel_statistics.mean-of-means",
             "latents_std": "per_channel_statistics.std-of-means"}
    if key in stats:
        return "vae." + stats[key]
    subs = [(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", lambda m: f"encoder.down_blocks.{2 * int(m[1]) + 1}."),
            (r"^encoder\.down_blocks\.(\d+)\.", lambda m: f"encoder.down_blocks.{2 * int(m[1])}."),
            (r"^encoder\.mid_block\.", lambda m: f"encoder.down_blocks.{2 * n_down}."),
            (r"^decoder\.mid_block\.", lambda m: "decoder.up_blocks.0."),
            (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up_blocks.{2 * int(m[1]) + 1}."),
            (r"^decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.up_blocks.{2 * int(m[1]) + 2}."),
            (r"^decoder\.(time_embedder|scale_shift_table)", lambda m: f"decoder.last_{m[1]}")]
    for pattern, repl in subs:
        new = re.sub(pattern, repl, key)
        if new != key:
            key = new
            break
    return "vae." + key.replace("resnets", "res_blocks")


def original_state_dict(ours) -> dict:
    sd = {_original_key(k, len(ours.config.block_out_channels)): v for k, v in ours.state_dict().items()}
    sd["vae.per_channel_statistics.channel"] = torch.arange(ours.config.latent_channels)
    sd["vae.per_channel_statistics.mean-of-stds"] = torch.ones(ours.config.latent_channels)
    return sd
