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
