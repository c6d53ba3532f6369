"""The tiny LTX-Video VAEs of the loading tests, one per released layout: diffusers' AutoencoderKLLTXVideo
with random weights, and the original code's config (block lists) for the same layout. Used by the VAE
loading and single-file pipeline tests."""

import copy

import pytest
import torch

from ..helpers import perturb_

diffusers = pytest.importorskip("diffusers")

# Tiny versions of each release: diffusers config and the original code's block-list config. Not
# presets.TINY_VAE_095 (latents 8 wide, last 0.9.5 block 64): latents here are 16 wide and the 0.9.5
# blocks double at every step (multiplier 2 in the block lists).
_ENC_LEGACY = [["res_x", 1], ["compress_all", 1], ["res_x_y", 1], ["res_x", 1], ["compress_all", 1],
               ["res_x_y", 1], ["res_x", 1], ["compress_all", 1], ["res_x", 1], ["res_x", 1]]
VARIANTS = {
    "0.9.0": (
        dict(block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(8, 16, 32, 32),
             layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1), latent_channels=16),
        {"blocks": _ENC_LEGACY},
    ),
    "0.9.1": (
        dict(block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(16, 32, 64),
             layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
             decoder_spatio_temporal_scaling=(True, True, True), decoder_inject_noise=(True, True, True, False),
             upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=True,
             latent_channels=16),
        {"encoder_blocks": _ENC_LEGACY, "timestep_conditioning": True,
         "decoder_blocks": [["res_x", {"num_layers": 1, "inject_noise": True}],
                            ["compress_all", {"residual": True, "multiplier": 2}],
                            ["res_x", {"num_layers": 1, "inject_noise": True}],
                            ["compress_all", {"residual": True, "multiplier": 2}],
                            ["res_x", {"num_layers": 1, "inject_noise": True}],
                            ["compress_all", {"residual": True, "multiplier": 2}],
                            ["res_x", {"num_layers": 1, "inject_noise": False}]]},
    ),
    "0.9.5": (
        dict(block_out_channels=(8, 16, 32, 64, 128), decoder_block_out_channels=(16, 32, 64),
             down_block_types=("LTXVideo095DownBlock3D",) * 4, layers_per_block=(1, 1, 1, 1, 1),
             decoder_layers_per_block=(1, 1, 1, 1), spatio_temporal_scaling=(True,) * 4,
             decoder_spatio_temporal_scaling=(True,) * 3, decoder_inject_noise=(False,) * 4,
             downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
             upsample_residual=(True,) * 3, upsample_factor=(2,) * 3, timestep_conditioning=True, latent_channels=16),
        {"timestep_conditioning": True,
         "encoder_blocks": [["res_x", {"num_layers": 1}], ["compress_space_res", {"multiplier": 2}],
                            ["res_x", {"num_layers": 1}], ["compress_time_res", {"multiplier": 2}],
                            ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 2}],
                            ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 2}],
                            ["res_x", {"num_layers": 1}]],
         "decoder_blocks": [["res_x", {"num_layers": 1, "inject_noise": False}],
                            ["compress_all", {"residual": True, "multiplier": 2}],
                            ["res_x", {"num_layers": 1, "inject_noise": False}],
                            ["compress_all", {"residual": True, "multiplier": 2}],
                            ["res_x", {"num_layers": 1, "inject_noise": False}],
                            ["compress_all", {"residual": True, "multiplier": 2}],
                            ["res_x", {"num_layers": 1, "inject_noise": False}]]},
    ),
}


def original_config(variant, **extra):
    """The original code's VAE config (block lists) of ``variant``; ``extra`` keys added or replaced."""
    blocks = copy.deepcopy(VARIANTS[variant][1])  # callers edit the block lists
    return {"_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
            "latent_channels": 16, "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4,
            "latent_log_var": "uniform", "use_quant_conv": False, "causal_decoder": False,
            "encoder_base_channels": 8, "decoder_base_channels": 8, **blocks, **extra}


def make_ref(variant):
    """diffusers' VAE of ``variant`` with perturbed weights."""
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKLLTXVideo(**VARIANTS[variant][0]).eval()
    perturb_(ref, seed=4)
    return ref
