"""A tiny LTX-2 diffusers pipeline folder with random weights (every component consistent with the
others), shared by the LTX-2 engine tests. Built once per session (~a few seconds)."""

from __future__ import annotations

from dataclasses import replace

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
# Full guidance in diffusers' LTX2Pipeline keywords (the engine takes them too): CFG, STG on the last
# block, modality isolation and rescale, for both modalities; ``params`` spells one modality's the
# engine's way (GuidanceParams).
STG = [LAYERS - 1]
GUIDED = dict(guidance_scale=3.0, stg_scale=1.0, modality_scale=3.0, guidance_rescale=0.7, audio_guidance_scale=7.0,
              audio_stg_scale=1.0, audio_modality_scale=3.0, audio_guidance_rescale=0.7,
              spatio_temporal_guidance_blocks=STG)
# Stage 2 of the two-stage recipe: the same guidance without CFG (the distilled LoRA is fused).
STAGE2_GUIDED = dict(GUIDED, guidance_scale=1.0)


def params(d: dict, prefix: str = ""):
    """The GuidanceParams of diffusers' keywords ``d`` for video (prefix "") or audio ("audio_")."""
    from ltxengine.ltx2.denoise import GuidanceParams
    return GuidanceParams(cfg=d[f"{prefix}guidance_scale"], stg=d[f"{prefix}stg_scale"],
                          stg_blocks=tuple(d["spatio_temporal_guidance_blocks"]),
                          rescale=d[f"{prefix}guidance_rescale"], modality=d[f"{prefix}modality_scale"])


def reference_two_stage(pipe, upsampler, deltas: dict, prompt: str, negative: str, *, stage1: dict | None = None,
                        stage2: dict | None = None, output_type: str = "np"):
    """diffusers' documented two-stage recipe, the reference of the engine's pipeline="two-stage": stage 1
    at 64 x 64 with GUIDED, LTX2LatentUpsamplePipeline with ``upsampler``, the distilled LoRA's ``deltas``
    fused into pipe.transformer, a scheduler without shifting, stage 2 with the 3 distilled sigmas
    (noise_scale the first) and STAGE2_GUIDED; 9 frames at 24 fps, one generator (seed 11) throughout.
    ``stage1`` / ``stage2``: extra keywords of each call. The pipe's transformer and scheduler are
    restored. Returns (video, audio, the upsampled stage-1 latents)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2LatentUpsamplePipeline

    from ltxengine.ltx2.denoise import STAGE2_SIGMAS
    kw = dict(num_frames=9, frame_rate=24.0, prompt=prompt, negative_prompt=negative, num_inference_steps=3,
              max_sequence_length=SEQ, return_dict=False)
    gen = torch.Generator().manual_seed(11)
    original = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    scheduler = pipe.scheduler
    try:
        with torch.no_grad():
            v_lat, a_lat = pipe(height=64, width=64, generator=gen, output_type="latent", **kw, **GUIDED,
                                **(stage1 or {}))
            up = LTX2LatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=upsampler)(
                latents=v_lat, output_type="latent", return_dict=False)[0]
            sd = pipe.transformer.state_dict()
            for name, delta in deltas.items():
                sd[name].add_(delta)
            pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config, use_dynamic_shifting=False,
                                                                         shift_terminal=None)
            video, audio = pipe(latents=up, audio_latents=a_lat, noise_scale=STAGE2_SIGMAS[0],
                                sigmas=list(STAGE2_SIGMAS[:-1]), generator=gen, output_type=output_type, **kw,
                                **STAGE2_GUIDED, **(stage2 or {}))
    finally:
        pipe.transformer.load_state_dict(original)
        pipe.scheduler = scheduler
    return video, audio, up


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


# -- LTX-2.3 / 2.5-like pipelines (issue 19) -------------------------------------------------------------

# Every 2.3 switch of the DiT (presets.TINY_LTX23's) on the tiny pipeline's DiT; 2.5 adds no video FFN
# bias and the keyframe embedding. With use_prompt_embeddings=False the DiT reads the connectors'
# per-modality outputs, so the connectors run at the DiT's widths (video 2 x 16, audio 2 x 8).
DIT_V23 = dict(DIT, gated_attn=True, audio_gated_attn=True, cross_attn_mod=True, audio_cross_attn_mod=True,
               use_prompt_embeddings=False)
DIT_V25 = dict(DIT_V23, ff_bias=False, use_keyframes_abs_pos_embedding=True)
CONNECTORS_V23 = dict(text_t.TINY, per_modality_projections=True, proj_bias=True, video_hidden_dim=32,
                      audio_hidden_dim=16, video_connector_num_attention_heads=2, video_connector_attention_head_dim=16,
                      video_connector_num_layers=2, audio_connector_num_attention_heads=2,
                      audio_connector_attention_head_dim=8, audio_connector_num_layers=1, video_gated_attn=True,
                      audio_gated_attn=True)
UPSAMPLER_V23 = dict(UPSAMPLER, use_rational_resampler=False)  # the 2.3 x2 upscaler


def build_pipeline_version(root, version: str):
    """A tiny LTX-2.3-like ("2.3") or 2.5-like ("2.5": Gemma 4 unified text encoder) LTX2Pipeline folder
    (+ latent_upsampler/); -> (pipeline, upsampler, folder). The vocoder is the BWE one (BigVGAN-v2 +
    bandwidth extension to 48 kHz: tests/models/vocoder_fixtures.py's "variant", reading this audio VAE's mels)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2Pipeline
    from diffusers.models.autoencoders.autoencoder_kl_ltx2 import AutoencoderKLLTX2Video
    from diffusers.models.autoencoders.autoencoder_kl_ltx2_audio import AutoencoderKLLTX2Audio
    from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    import transformers

    from tests.models.ltx2_video_vae_fixtures import DIFFUSERS_EXTRA, RELEASE_V23
    from tests.models.vocoder_fixtures import make_bwe_pair
    assert version in ("2.3", "2.5"), version
    if version == "2.3":
        gemma = text_t.write_gemma(root / "gemma")
        text_encoder = transformers.Gemma3ForConditionalGeneration.from_pretrained(gemma).eval()
        width, layers = text_t.D, text_t.L
    else:
        gemma = text_t.write_gemma4(root / "gemma4")
        text_encoder = transformers.Gemma4UnifiedForConditionalGeneration.from_pretrained(gemma).eval()
        width, layers = text_t.D4, text_t.L4
    tokenizer = transformers.AutoTokenizer.from_pretrained(gemma / "tokenizer")
    torch.manual_seed(0)
    dit = dict(DIT_V23 if version == "2.3" else DIT_V25, caption_channels=width)
    transformer = LTX2VideoTransformer3DModel(**dit, perturbed_attn=True).eval()
    perturb_(transformer, seed=1, std=0.2)
    connectors = LTX2TextConnectors(**dict(CONNECTORS_V23, caption_channels=width, text_proj_in_factor=layers)).eval()
    perturb_(connectors, seed=6)
    vae = AutoencoderKLLTX2Video(**{**DIFFUSERS_EXTRA, **RELEASE_V23}).eval()
    randomize_vae_(vae, 1)
    audio_vae = AutoencoderKLLTX2Audio(**AUDIO_VAE).eval()
    perturb_(audio_vae, seed=2)
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        audio_vae.latents_mean.copy_(torch.randn(audio_vae.latents_mean.shape, generator=g) * 0.3)
        audio_vae.latents_std.copy_(torch.rand(audio_vae.latents_std.shape, generator=g) + 0.5)
    vocoder, _ = make_bwe_pair("variant", seed=3, in_channels=VOCODER["in_channels"])
    upsampler = LTX2LatentUpsamplerModel(**UPSAMPLER_V23).eval()
    perturb_(upsampler, seed=4)
    pipe = LTX2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=vae, audio_vae=audio_vae,
                        text_encoder=text_encoder, tokenizer=tokenizer, connectors=connectors,
                        transformer=transformer, vocoder=vocoder)
    folder = root / f"ltx{version}-tiny"
    pipe.save_pretrained(folder)
    upsampler.save_pretrained(folder / "latent_upsampler")
    return pipe, upsampler, folder


class ReplayNoiser:
    """ltx-core 1.0.0's GaussianNoiser arithmetic with given noise tensors instead of fresh draws;
    ``lerp``: @400fd31's (f4b06fb) lerp(clean, lerp(latent, noise, noise_scale), mask)."""

    def __init__(self, noises, lerp: bool = False):
        self.noises, self.lerp = list(noises), lerp

    def __call__(self, state, noise_scale=1.0):
        noise = self.noises.pop(0)
        assert noise.shape == state.latent.shape
        if self.lerp:
            x = torch.lerp(state.latent.float(), noise.float(), noise_scale)
            return replace(state, latent=torch.lerp(state.clean_latent.float(), x, state.denoise_mask))
        scaled = state.denoise_mask * noise_scale
        return replace(state, latent=noise * scaled + state.latent * (1 - scaled))
