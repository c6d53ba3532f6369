"""A tiny LTX-2 diffusers pipeline folder with random weights (every component consistent with the
others), shared by the LTX-2 engine tests. Built once per session (~a few seconds)."""

from __future__ import annotations

import pytest
import torch

from ltxengine.models.audio_vae import AudioVAEConfig
from ltxengine.models.video_vae import VAE_LTX2
from ltxengine.presets import TINY_VAE_LTX2, demo_ltx2
from tests.helpers import perturb_, preset_kwargs, randomize_vae_
from tests.models import ltx2_text_fixtures as text_t
from tests.models import ltx2_transformer_fixtures as dit_t

diffusers = pytest.importorskip("diffusers")

LAYERS = 2
# DIT: presets.TINY_LTX2 at the text/audio widths; it, VOCODER and UPSAMPLER are below demo_ltx2()'s (latents 8 wide).
DIT = dict(dit_t.TINY["split64"], caption_channels=text_t.D, in_channels=8, out_channels=8, audio_in_channels=16,
           audio_out_channels=16, num_layers=LAYERS)
# The video VAE is presets.TINY_VAE_LTX2 (bench's --smoke VAE), the audio VAE the demo checkpoint's.
VAE = dict(preset_kwargs(TINY_VAE_LTX2, VAE_LTX2), decoder_causal=False, spatial_compression_ratio=32,
           temporal_compression_ratio=8)
AUDIO_VAE = preset_kwargs(demo_ltx2()["audio_vae"], AudioVAEConfig())
VOCODER = dict(in_channels=32, hidden_channels=16, upsample_kernel_sizes=(4, 7), upsample_factors=(2, 3),
               resnet_kernel_sizes=(3,), resnet_dilations=((1, 3),), output_sampling_rate=24000)
UPSAMPLER = dict(in_channels=8, mid_channels=32, num_blocks_per_stage=1)
SCHEDULER = dict(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                 max_image_seq_len=4096, shift_terminal=0.1)
SEQ = text_t.SEQ


def build_pipeline(root, timestep_conditioning: bool = False):
    """Write the folder (LTX2Pipeline.save_pretrained + latent_upsampler/) and return the pipeline."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2Pipeline
    from diffusers.models.autoencoders.autoencoder_kl_ltx2 import AutoencoderKLLTX2Video
    from diffusers.models.autoencoders.autoencoder_kl_ltx2_audio import AutoencoderKLLTX2Audio
    from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    import transformers

    gemma = text_t.write_gemma(root / "gemma")
    torch.manual_seed(0)
    transformer = LTX2VideoTransformer3DModel(**DIT, perturbed_attn=True).eval()
    perturb_(transformer, seed=1, std=0.2)
    _, connectors = text_t.make_pair()
    vae = AutoencoderKLLTX2Video(**VAE, timestep_conditioning=timestep_conditioning).eval()
    randomize_vae_(vae, 1)
    audio_vae = AutoencoderKLLTX2Audio(**AUDIO_VAE).eval()
    perturb_(audio_vae, seed=2)
    with torch.no_grad():  # the statistics are buffers: give them real spread
        g = torch.Generator().manual_seed(5)
        audio_vae.latents_mean.copy_(torch.randn(audio_vae.latents_mean.shape, generator=g) * 0.3)
        audio_vae.latents_std.copy_(torch.rand(audio_vae.latents_std.shape, generator=g) + 0.5)
    vocoder = LTX2Vocoder(**VOCODER).eval()
    perturb_(vocoder, seed=3)
    upsampler = LTX2LatentUpsamplerModel(**UPSAMPLER).eval()
    perturb_(upsampler, seed=4)
    text_encoder = transformers.Gemma3ForConditionalGeneration.from_pretrained(gemma).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(gemma / "tokenizer")
    pipe = LTX2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=vae, audio_vae=audio_vae,
                        text_encoder=text_encoder, tokenizer=tokenizer, connectors=connectors,
                        transformer=transformer, vocoder=vocoder)
    folder = root / "ltx2-tiny"
    pipe.save_pretrained(folder)
    upsampler.save_pretrained(folder / "latent_upsampler")
    return pipe, upsampler, folder


def write_lora(path, transformer, rank: int = 2, seed: int = 7, scale: float = 0.05):
    """A Lightricks-format LoRA (diffusion_model.<original name>.lora_A/B.weight) on every attention
    projection of the tiny DiT; returns (path, {diffusers parameter name: delta W})."""
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    for name, module in transformer.named_modules():
        if not (isinstance(module, torch.nn.Linear) and name.startswith("transformer_blocks.")
                and name.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v", "0")):
            continue
        a = torch.randn(rank, module.in_features, generator=g) * scale
        b = torch.randn(module.out_features, rank, generator=g) * scale
        # attention module names are the same in the original and the diffusers layout
        tensors[f"diffusion_model.{name}.lora_A.weight"] = a
        tensors[f"diffusion_model.{name}.lora_B.weight"] = b
        deltas[f"{name}.weight"] = b @ a
    save_file(tensors, str(path))
    return path, deltas
