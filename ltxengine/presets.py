"""Tiny model configs: the one table that the demo checkpoints (demo.py), bench's ``--smoke`` runs
(bench/models.py) and the tests build from, as gpt-fast keeps its ``transformer_configs``. Random
weights at these sizes run every path of the real models on a CPU in seconds. The released configs
are in config.py; tests and parity checks depend on these exact values.
"""

from __future__ import annotations

import dataclasses

from .config import VAE_095, LatentUpsamplerConfig, LTX2TransformerConfig, TransformerConfig, VideoVAEConfig
from .models.video_vae import VAE_LTX2

# -- the LTX-Video demo checkpoint (demo.write_demo_checkpoint) ------------------------------------

DEMO_TRANSFORMER = TransformerConfig(in_channels=32, out_channels=32, num_attention_heads=4, attention_head_dim=16,
                                     cross_attention_dim=64, num_layers=2, caption_channels=32)
DEMO_VAE = VideoVAEConfig(latent_channels=32, block_out_channels=(8, 16, 32, 64, 128),
                          down_block_types=("LTXVideo095DownBlock3D",) * 4, decoder_block_out_channels=(32, 64, 128),
                          layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
                          spatio_temporal_scaling=(True,) * 4, decoder_spatio_temporal_scaling=(True,) * 3,
                          decoder_inject_noise=(False,) * 4,
                          downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
                          upsample_residual=(True,) * 3, upsample_factor=(2,) * 3, timestep_conditioning=True,
                          spatial_compression_ratio=32, temporal_compression_ratio=8)
DEMO_UPSAMPLER = LatentUpsamplerConfig(in_channels=32, mid_channels=64, num_blocks_per_stage=1)


# -- the LTX-2 demo checkpoint (demo.write_demo_ltx2_checkpoint) ----------------------------------

def demo_ltx2(version: str = "2.0") -> dict:
    """Component name -> config of the tiny, mutually consistent LTX-2 set of a release ("2.0", "2.3",
    "2.5"; Gemma hidden size 32). A function: the LTX-2 config classes live beside their models,
    imported only when asked for."""
    if version not in ("2.0", "2.3", "2.5"):
        raise ValueError(f"version must be one of ('2.0', '2.3', '2.5'), got {version!r}")
    cfgs = _demo_ltx20()
    if version == "2.0":
        return cfgs
    from .models.latent_upsampler import LTX2LatentUpsamplerConfig
    from .models.video_vae import VAE_LTX23
    from .models.vocoder import VocoderWithBWEConfig
    t = cfgs["transformer"]
    # 2.3: gated attention, cross-attention adaLN, text straight from the connectors' per-modality
    # projections (so they run at the DiT's widths), the STG processor; 2.5 adds no video FFN bias
    # and the keyframe embedding
    cfgs["transformer"] = dataclasses.replace(t, gated_attn=True, audio_gated_attn=True, cross_attn_mod=True,
                                              audio_cross_attn_mod=True, use_prompt_embeddings=False,
                                              perturbed_attn=True)
    if version == "2.5":
        cfgs["transformer"] = dataclasses.replace(cfgs["transformer"], ff_bias=False,
                                                  use_keyframes_abs_pos_embedding=True)
    cfgs["connectors"] = dataclasses.replace(
        cfgs["connectors"], per_modality_projections=True, proj_bias=True, video_hidden_dim=t.inner_dim,
        audio_hidden_dim=t.audio_inner_dim, audio_connector_attention_head_dim=t.audio_inner_dim // 2,
        video_gated_attn=True, audio_gated_attn=True)
    cfgs["vae"] = dataclasses.replace(VAE_LTX23, latent_channels=32, block_out_channels=(16, 32, 64, 64),
                                      layers_per_block=(1, 1, 1, 1, 1), decoder_block_out_channels=(16, 32, 32, 64),
                                      decoder_layers_per_block=(1, 1, 1, 1, 1))
    # BigVGAN-v2 to 24 kHz, then the bandwidth extension to 48 kHz (the release: 16 -> 48 kHz)
    cfgs["vocoder"] = VocoderWithBWEConfig(
        in_channels=32, hidden_channels=32, upsample_kernel_sizes=(12, 10, 4, 4, 4),
        upsample_factors=(6, 5, 2, 2, 2), resnet_kernel_sizes=(3,), resnet_dilations=((1, 3),),
        bwe_in_channels=12, bwe_hidden_channels=16, bwe_upsample_kernel_sizes=(8, 4, 4),
        bwe_upsample_factors=(4, 2, 2), bwe_resnet_kernel_sizes=(3,), bwe_resnet_dilations=((1, 3),),
        filter_length=32, hop_length=8, window_length=32, num_mel_channels=6, input_sampling_rate=24000,
        output_sampling_rate=48000)
    cfgs["latent_upsampler"] = LTX2LatentUpsamplerConfig(in_channels=32, mid_channels=32, num_blocks_per_stage=1,
                                                         use_rational_resampler=False)
    return cfgs


def _demo_ltx20() -> dict:
    from .models.audio_vae import AudioVAEConfig
    from .models.latent_upsampler import LTX2LatentUpsamplerConfig
    from .models.ltx2_text import TextConnectorsConfig
    from .models.video_vae import LTX2VideoVAEConfig
    from .models.vocoder import VocoderConfig
    width = 32  # Gemma hidden size = caption channels
    return {
        "transformer": LTX2TransformerConfig(
            num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32, audio_num_attention_heads=2,
            audio_attention_head_dim=8, audio_cross_attention_dim=16, num_layers=2, caption_channels=width,
            in_channels=32, out_channels=32, audio_in_channels=16, audio_out_channels=16),
        "connectors": TextConnectorsConfig(
            caption_channels=width, text_proj_in_factor=4, video_connector_num_attention_heads=2,
            video_connector_attention_head_dim=16, video_connector_num_layers=1,
            video_connector_num_learnable_registers=16, audio_connector_num_attention_heads=2,
            audio_connector_attention_head_dim=16, audio_connector_num_layers=1,
            audio_connector_num_learnable_registers=16),
        "vae": LTX2VideoVAEConfig(latent_channels=32, block_out_channels=(16, 32, 64, 64),
                                  decoder_block_out_channels=(16, 32, 64), layers_per_block=(1, 1, 1, 1, 1),
                                  decoder_layers_per_block=(1, 1, 1, 1), timestep_conditioning=True),
        "audio_vae": AudioVAEConfig(base_channels=16, ch_mult=(1, 2, 4), num_res_blocks=1, latent_channels=4,
                                    mel_bins=16),
        "vocoder": VocoderConfig(in_channels=32, hidden_channels=32, upsample_kernel_sizes=(16, 15, 8, 4, 4),
                                 upsample_factors=(6, 5, 2, 2, 2), resnet_kernel_sizes=(3,),
                                 resnet_dilations=((1, 3),)),
        "latent_upsampler": LTX2LatentUpsamplerConfig(in_channels=32, mid_channels=32, num_blocks_per_stage=1),
    }


# -- bench's --smoke models (bench/models.py) ------------------------------------------------------

TINY_2B = TransformerConfig(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8,
                            cross_attention_dim=16, num_layers=2, caption_channels=12)
TINY_LTX2 = LTX2TransformerConfig(num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32,
                                  audio_num_attention_heads=2, audio_attention_head_dim=8,
                                  audio_cross_attention_dim=16, num_layers=2, caption_channels=24, in_channels=8,
                                  out_channels=8, audio_in_channels=6, audio_out_channels=6)
# TINY_LTX2 with every LTX-2.3 switch on (gated attention, cross-attention adaLN, text from the
# connectors' per-modality outputs, STG processor), and the 2.5 one (no video FFN bias, keyframe embedding).
TINY_LTX23 = dataclasses.replace(TINY_LTX2, gated_attn=True, audio_gated_attn=True, cross_attn_mod=True,
                                 audio_cross_attn_mod=True, use_prompt_embeddings=False, perturbed_attn=True)
TINY_LTX25 = dataclasses.replace(TINY_LTX23, ff_bias=False, use_keyframes_abs_pos_embedding=True)
# The 0.9.5 and LTX-2 decoder layouts scaled down (tests/models/test_*video_vae.py).
TINY_VAE_095 = dataclasses.replace(VAE_095, latent_channels=8, block_out_channels=(8, 16, 32, 64, 64),
                                   decoder_block_out_channels=(16, 32, 64), layers_per_block=(1, 1, 1, 1, 1),
                                   decoder_layers_per_block=(1, 1, 1, 1))
TINY_VAE_LTX2 = dataclasses.replace(VAE_LTX2, latent_channels=8, block_out_channels=(16, 32, 64, 64),
                                    decoder_block_out_channels=(16, 32, 64), layers_per_block=(1, 1, 1, 1, 1),
                                    decoder_layers_per_block=(1, 1, 1, 1))
