"""The tiny LTX-2.5 diffusion decoders of the tests: diffusers' LTX2VideoDiffusionDecoderModel with
perturbed random weights beside ours loaded from it (test_ltx2_diffusion_decoder / _tiling)."""

import pytest
import torch

from ltxengine.config import parse_config
from ltxengine.models.ltx2_diffusion_decoder import LTX2DiffusionDecoder, LTX2DiffusionDecoderConfig

pytest.importorskip("diffusers")
from diffusers import LTX2VideoDiffusionDecoderModel  # noqa: E402

# The budget of the other LTX-2 model tests (see test_ltx2_diffusion_decoder.py)
REL = 1e-5

# The release layout scaled down (head_dim 64 -> 16, widths / 16, one block per deterministic stage):
# the released strides, reductions (2, 2, 1, 2) and kernel shapes (3 x 3 x 3 where 3 x 7 x 7 would not fit
# a 3 x 4 latent), x0 in one step, the 1000 timestep multiplier.
RELEASE = dict(latent_channels=8, decoder_head_dim=16, decoder_stage_channels=(128, 64, 32, 32, 16),
               decoder_stage_depths=(1, 1, 1, 1, 2), decoder_stage_kernels=((3, 3, 3), (3, 3, 3), (3, 5, 5), (3, 5, 5)),
               decoder_stage5_kernel=(5, 7, 7), decoder_t_emb_dim=32)
# The stage-5 grid is what makes diffusers' CPU path slow (its flex mask is built over the whole grid
# per step), so the multi-step switches run on a small layout: stage 5 at 9 x 6 x 6 tokens.
SMALL = dict(latent_channels=8, patch_size=2, decoder_head_dim=16, decoder_stage_channels=(64, 32, 16, 16, 16),
             decoder_stage_depths=(1, 1, 1, 1, 2), decoder_stage_kernels=((3, 3, 3),) * 4,
             decoder_upsample_strides=((1, 2, 2), (2, 1, 1), (2, 1, 1), (2, 1, 1)),
             decoder_upsample_channel_reductions=(2, 2, 1, 1), decoder_stage5_kernel=(3, 3, 3), decoder_t_emb_dim=32,
             spatial_compression_ratio=4)
CASES = {
    "release": RELEASE,
    # x0 over 3 Euler steps (x0 turned into a velocity per step), and a velocity model over 2
    "x0_3_steps": dict(SMALL, decoder_num_inference_steps=3),
    "v_2_steps": dict(SMALL, decoder_model_output_type="v", decoder_num_inference_steps=2,
                      decoder_timestep_scale_multiplier=1.0, scaling_factor=0.5),
    # every other switch: head_dim 8 (the RoPE gives T no pairs), patch 2, strides with a temporal 1 at the
    # last upsample (no leading frame dropped) and temporal 2 first, stage-1 kernel_t 1 (no ghost frames),
    # a kernel equal to the grid (stage 1's H), other reductions and depths; a non-square latent
    "variant": dict(latent_channels=4, patch_size=2, decoder_head_dim=8, decoder_stage_channels=(32, 32, 16, 8, 8),
                    decoder_stage_depths=(2, 1, 1, 1, 1),
                    decoder_stage_kernels=((1, 3, 3), (3, 5, 3), (3, 3, 3), (5, 3, 3)),
                    decoder_upsample_strides=((2, 2, 1), (2, 1, 2), (1, 2, 2), (1, 2, 2)),
                    decoder_upsample_channel_reductions=(1, 2, 2, 1), decoder_stage5_kernel=(3, 3, 5),
                    decoder_t_emb_dim=16, spatial_compression_ratio=16, temporal_compression_ratio=4),
}
LATENT = {"release": (2, 8, 2, 3, 3), "variant": (2, 4, 3, 3, 4), "x0_3_steps": (1, 8, 2, 3, 3),
          "v_2_steps": (1, 8, 2, 3, 3)}


def latent_shape(name):
    return LATENT[name]


_PAIRS = {}


def make_pair(name):
    """(diffusers model, ours) with the same perturbed random weights and statistics; cached."""
    if name not in _PAIRS:
        torch.manual_seed(0)
        ref = LTX2VideoDiffusionDecoderModel(**CASES[name]).eval()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # scale_shift_table and the statistics start at 0 / 1: give them values
            for t in list(ref.parameters()) + list(ref.buffers()):
                t.add_(torch.randn(t.shape, generator=g) * 0.1)
        ours = LTX2DiffusionDecoder(parse_config(LTX2DiffusionDecoderConfig, dict(ref.config), "test")).eval()
        ours.load_state_dict(ref.state_dict(), strict=True)
        _PAIRS[name] = ref, ours
    return _PAIRS[name]
