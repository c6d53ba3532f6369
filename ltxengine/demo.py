"""A tiny random-weight LTX-Video checkpoint in the real diffusers folder format, for the demo and
for trying the engine without downloading weights.

The folder has everything a released one has -- transformer, VAE (0.9.5+ layout with decode
timestep conditioning), T5 encoder + tokenizer, scheduler config -- plus an x2 latent upsampler,
so the demo exercises the full two-stage path. The output is noise-like video: the weights are
random; the point is that every stage runs and the mp4 plays.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import LatentUpsamplerConfig, TransformerConfig, VideoVAEConfig
from .loading.export import save_component, save_pipeline
from .models.latent_upsampler import LatentUpsampler
from .models.transformer import LTXVideoTransformer
from .models.video_vae import VideoVAE

_WORDS = ("a the of and in on with at red blue green car cat dog man woman street city night day sky sea "
          "walks drives flies runs camera pans slowly fast bright dark light river forest mountain").split()

TRANSFORMER = TransformerConfig(in_channels=32, out_channels=32, num_attention_heads=4, attention_head_dim=16,
                                cross_attention_dim=64, num_layers=2, caption_channels=32)
VAE = VideoVAEConfig(latent_channels=32, block_out_channels=(8, 16, 32, 64, 128),
                     down_block_types=("LTXVideo095DownBlock3D",) * 4, decoder_block_out_channels=(32, 64, 128),
                     layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
                     spatio_temporal_scaling=(True,) * 4, decoder_spatio_temporal_scaling=(True,) * 3,
                     decoder_inject_noise=(False,) * 4,
                     downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
                     upsample_residual=(True,) * 3, upsample_factor=(2,) * 3, timestep_conditioning=True,
                     spatial_compression_ratio=32, temporal_compression_ratio=8)
UPSAMPLER = LatentUpsamplerConfig(in_channels=32, mid_channels=64, num_blocks_per_stage=1)
SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 1.0,
             "use_dynamic_shifting": False}


def _tokenizer():
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0 - 0.01 * i) for i, w in enumerate(_WORDS)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5Tokenizer(vocab=vocab, extra_ids=4)


def write_demo_checkpoint(folder, seed: int = 0) -> Path:
    """Write the tiny pipeline folder (with ``latent_upsampler/``) and return its path."""
    from transformers import T5Config, T5EncoderModel

    folder = Path(folder)
    torch.manual_seed(seed)
    with torch.no_grad():
        transformer, vae = LTXVideoTransformer(TRANSFORMER), VideoVAE(VAE)
        # random latent statistics and a non-zero decoder timestep table, as trained models have
        vae.latents_mean.normal_(0, 0.5)
        vae.latents_std.uniform_(0.5, 1.5)
        for name, p in vae.named_parameters():
            if "scale_shift_table" in name:
                p.normal_(0, 0.1)
    save_pipeline(folder, transformer=transformer, vae=vae)
    save_component(LatentUpsampler(UPSAMPLER), folder / "latent_upsampler")
    tok = _tokenizer()
    tok.save_pretrained(folder / "tokenizer")
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=TRANSFORMER.caption_channels, d_kv=8, num_heads=4,
                                 d_ff=64, num_layers=2, feed_forward_proj="gated-gelu", dropout_rate=0.0))
    t5.save_pretrained(folder / "text_encoder")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=2))
    index = json.loads((folder / "model_index.json").read_text())
    index.update(_class_name="LTXConditionPipeline", scheduler=["diffusers", "FlowMatchEulerDiscreteScheduler"],
                 text_encoder=["transformers", "T5EncoderModel"], tokenizer=["transformers", "T5Tokenizer"])
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


# -- LTX-2 (video + audio) ---------------------------------------------------------------------------

def _ltx2_configs():
    from .config import LTX2TransformerConfig
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
                                 upsample_factors=(6, 5, 2, 2, 2), resnet_kernel_sizes=(3,), resnet_dilations=((1, 3),)),
        "latent_upsampler": LTX2LatentUpsamplerConfig(in_channels=32, mid_channels=32, num_blocks_per_stage=1),
    }


def _gemma(folder: Path, hidden: int = 32) -> None:
    """A 3-layer random Gemma 3 (4 hidden states) and a word-level tokenizer built offline."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = ["<pad>", "<eos>", "<bos>", "<unk>"] + list(_WORDS)
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                                unk_token="<unk>", pad_token="<pad>")
    text = transformers.Gemma3TextConfig(vocab_size=len(words), hidden_size=hidden, intermediate_size=64,
                                         num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                                         head_dim=16, sliding_window=4, max_position_embeddings=256,
                                         layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    vision = transformers.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=28, patch_size=14)
    config = transformers.Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4)
    transformers.Gemma3ForConditionalGeneration(config).save_pretrained(folder / "text_encoder")
    fast.save_pretrained(folder / "tokenizer")


def write_demo_ltx2_checkpoint(folder, seed: int = 0) -> Path:
    """A tiny random-weight LTX-2 diffusers folder (DiT, connectors, video and audio VAEs, vocoder,
    Gemma 3 + tokenizer, spatial x2 upsampler) for the two-stage video-and-audio demo."""
    from .loading.ltx2 import _SPECS
    from .models.latent_upsampler import LatentUpsampler

    folder = Path(folder)
    torch.manual_seed(seed)
    cfgs = _ltx2_configs()
    index = {"_class_name": "LTX2Pipeline"}
    for name, spec in _SPECS.items():
        model = _build(spec, cfgs[name])
        _save(model, folder / name, spec.diffusers_class, cfgs[name])
        index[name] = ["diffusers", spec.diffusers_class]
    with torch.no_grad():
        up = LatentUpsampler(cfgs["latent_upsampler"])
    _save(up, folder / "latent_upsampler", "LTX2LatentUpsamplerModel", cfgs["latent_upsampler"])
    _gemma(folder)
    index.update(text_encoder=["transformers", "Gemma3ForConditionalGeneration"],
                 tokenizer=["transformers", "PreTrainedTokenizerFast"])
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def _build(spec, cfg):
    import importlib
    mod, attr = spec.model.split(":")
    with torch.no_grad():
        model = getattr(importlib.import_module(mod), attr)(cfg)
        for name, p in model.named_parameters():  # spread the small default inits a little
            if p.ndim >= 1 and "norm" not in name:
                p.add_(torch.randn_like(p) * 0.02)
    return model


def _save(model, folder: Path, class_name: str, cfg) -> None:
    import dataclasses

    from safetensors.torch import save_file
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": class_name, **dataclasses.asdict(cfg)}, indent=2))
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / "diffusion_pytorch_model.safetensors"))
