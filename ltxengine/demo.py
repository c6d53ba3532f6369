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

from .loading.export import save_component, save_pipeline
from .models.latent_upsampler import LatentUpsampler
from .models.transformer import LTXVideoTransformer
from .models.video_vae import VideoVAE
from .presets import DEMO_TRANSFORMER, DEMO_UPSAMPLER, DEMO_VAE, demo_ltx2

_WORDS = ("a the of and in on with at red blue green car cat dog man woman street city night day sky sea "
          "walks drives flies runs camera pans slowly fast bright dark light river forest mountain").split()

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
        transformer, vae = LTXVideoTransformer(DEMO_TRANSFORMER), VideoVAE(DEMO_VAE)
        # random latent statistics and a non-zero decoder timestep table, as trained models have
        vae.latents_mean.normal_(0, 0.5)
        vae.latents_std.uniform_(0.5, 1.5)
        for name, p in vae.named_parameters():
            if "scale_shift_table" in name:
                p.normal_(0, 0.1)
    save_pipeline(folder, transformer=transformer, vae=vae)
    save_component(LatentUpsampler(DEMO_UPSAMPLER), folder / "latent_upsampler")
    tok = _tokenizer()
    tok.save_pretrained(folder / "tokenizer")
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=DEMO_TRANSFORMER.caption_channels, d_kv=8, num_heads=4,
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

def _gemma(folder: Path, hidden: int = 32, gemma4: bool = False) -> None:
    """A 3-layer random Gemma 3 (or LTX-2.5's Gemma 4 unified; 4 hidden states) and a word-level
    tokenizer built offline."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = ["<pad>", "<eos>", "<bos>", "<unk>"] + list(_WORDS)
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                                unk_token="<unk>", pad_token="<pad>")
    if gemma4:
        text4 = transformers.Gemma4UnifiedTextConfig(
            vocab_size=len(words), hidden_size=hidden, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=2, num_key_value_heads=1, head_dim=16, global_head_dim=32, sliding_window=4,
            max_position_embeddings=256, layer_types=["sliding_attention", "sliding_attention", "full_attention"])
        vision4 = transformers.Gemma4UnifiedVisionConfig(patch_size=4, pooling_kernel_size=2, mm_embed_dim=hidden,
                                                         mm_posemb_size=16, output_proj_dims=hidden)
        audio4 = transformers.Gemma4UnifiedAudioConfig(audio_embed_dim=16)
        config4 = transformers.Gemma4UnifiedConfig(text_config=text4.to_dict(), vision_config=vision4.to_dict(),
                                                   audio_config=audio4.to_dict())
        transformers.Gemma4UnifiedForConditionalGeneration(config4).save_pretrained(folder / "text_encoder")
        fast.save_pretrained(folder / "tokenizer")
        return
    text = transformers.Gemma3TextConfig(vocab_size=len(words), hidden_size=hidden, intermediate_size=64,
                                         num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                                         head_dim=16, sliding_window=4, max_position_embeddings=256,
                                         layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    vision = transformers.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=28, patch_size=14)
    config = transformers.Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                       mm_tokens_per_image=4)
    transformers.Gemma3ForConditionalGeneration(config).save_pretrained(folder / "text_encoder")
    fast.save_pretrained(folder / "tokenizer")


def write_demo_ltx2_checkpoint(folder, seed: int = 0, version: str = "2.0") -> Path:
    """A tiny random-weight LTX-2 diffusers folder (DiT, connectors, video and audio VAEs, vocoder,
    Gemma + tokenizer, spatial x2 upsampler) of a release ("2.0", "2.3": the 2.3 layouts and the BWE
    vocoder at 48 kHz, "2.5": also Gemma 4) for the two-stage video-and-audio demo."""
    from .loading.ltx2 import COMPONENT_SPECS
    from .models.latent_upsampler import LatentUpsampler
    from .models.vocoder import VocoderWithBWEConfig

    folder = Path(folder)
    torch.manual_seed(seed)
    cfgs = demo_ltx2(version)
    index = {"_class_name": "LTX2Pipeline"}
    for name, spec in COMPONENT_SPECS.items():
        model = _build(spec, cfgs[name])
        class_name = "LTX2VocoderWithBWE" if isinstance(cfgs[name], VocoderWithBWEConfig) else spec.diffusers_class
        _save(model, folder / name, class_name, cfgs[name])
        index[name] = ["diffusers", class_name]
    with torch.no_grad():
        up = LatentUpsampler(cfgs["latent_upsampler"])
    _save(up, folder / "latent_upsampler", "LTX2LatentUpsamplerModel", cfgs["latent_upsampler"])
    _gemma(folder, gemma4=version == "2.5")
    gemma = "Gemma4UnifiedForConditionalGeneration" if version == "2.5" else "Gemma3ForConditionalGeneration"
    index.update(text_encoder=["transformers", gemma],
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
