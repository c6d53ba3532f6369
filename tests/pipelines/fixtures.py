"""Tiny random-weight LTX-Video pipeline folders and diffusers reference runs on them.

The pipeline tests compare ltxengine end to end against diffusers' own LTX pipelines. For that
comparison to mean anything, the checkpoint both sides load must be exactly what a diffusers user
has on disk, so the folders here are not written by hand: each one is an in-memory
``diffusers.LTXPipeline`` (tiny transformer, VAE, T5 and an offline Unigram tokenizer) saved with
diffusers' ``save_pretrained``; the latent upsampler likewise with
``LTXLatentUpsamplerModel.save_pretrained``. Default initialisation leaves many tensors at 0 / 1 / a
constant (norms, scale-shift tables, per-channel scales, latent statistics), which would hide a
wrongly wired weight, so every parameter and the VAE's latent statistics are perturbed
deterministically before saving; the VAE's output convolutions are then rescaled so that latents
are unit-scale and decoded frames mostly stay inside (0, 1) instead of clamping.

The ``reference_*`` runners call diffusers' pipelines on such a folder (fp32, CPU,
``output_type="pt"``, a ``torch.Generator`` seeded with ``seed``) and return frames as
``(F, H, W, 3)`` float32 in [0, 1]. Extra keyword arguments go to the pipeline call unchanged.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..helpers import perturb_

__all__ = [
    "CONFIGS",
    "T5_CONFIG",
    "TwoStageResult",
    "build_pipeline_folder",
    "build_upsampler_folder",
    "load_reference",
    "load_reference_upsampler",
    "make_image",
    "make_tokenizer",
    "make_video",
    "reference_condition",
    "reference_i2v",
    "reference_t2v",
    "reference_two_stage",
    "single_file_and_folder",
]

WORDS = ("a cat dog sits on the mat walks in park red blue car drives fast slow video of man woman "
         "camera pans across street at night bird flies over green field with trees under cloudy sky "
         "river flows through city lights and people running beach waves sunset").split()

# transformers.T5Config kwargs (vocab_size is filled in from the tokenizer)
T5_CONFIG = dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, feed_forward_proj="gated-gelu",
                 relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0)

# 0.9.0 VAE: strided-conv downsamplers, no timestep conditioning; 32x spatial, 8x temporal
_VAE_090 = dict(latent_channels=8, block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(8, 16, 32, 32),
                layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 2, 1))
# 0.9.5 VAE: space-to-depth downsamplers, residual upsamplers, timestep-conditioned decoder
_VAE_095 = dict(block_out_channels=(8, 16, 32, 64, 64), down_block_types=("LTXVideo095DownBlock3D",) * 4,
                spatio_temporal_scaling=(True,) * 4,
                downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
                decoder_block_out_channels=(16, 32, 64), decoder_spatio_temporal_scaling=(True,) * 3,
                decoder_inject_noise=(False,) * 4, upsample_residual=(True,) * 3, upsample_factor=(2, 2, 2),
                timestep_conditioning=True, spatial_compression_ratio=32, temporal_compression_ratio=8,
                layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1))


def _transformer(latent_channels: int, heads: int, head_dim: int, layers: int) -> dict:
    # cross-attention keys/values come from the caption projection, whose width is the inner dim
    return dict(in_channels=latent_channels, out_channels=latent_channels, num_attention_heads=heads,
                attention_head_dim=head_dim, cross_attention_dim=heads * head_dim, num_layers=layers,
                caption_channels=T5_CONFIG["d_model"], qk_norm="rms_norm_across_heads")


def _upsampler(latent_channels: int) -> dict:
    # mid_channels must be a multiple of 32: every norm is GroupNorm(32, mid_channels)
    return dict(in_channels=latent_channels, mid_channels=32, num_blocks_per_stage=1, dims=3,
                spatial_upsample=True, temporal_upsample=False)


# name -> kwargs of each component's constructor, plus the seed its random weights come from.
CONFIGS: dict[str, dict] = {
    "tiny-090": dict(
        seed=0,
        transformer=_transformer(8, 2, 8, 2),
        vae=_VAE_090,
        scheduler=dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.95,
                       max_shift=2.05, base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1),
        upsampler=_upsampler(8),
    ),
    "tiny-095": dict(
        seed=10,
        transformer=_transformer(8, 2, 8, 2),
        vae=dict(latent_channels=8, **_VAE_095),
        scheduler=dict(use_dynamic_shifting=False),
        upsampler=_upsampler(8),
    ),
    "tiny-095b": dict(
        seed=20,
        transformer=_transformer(16, 4, 8, 3),
        vae=dict(latent_channels=16, **_VAE_095),
        scheduler=dict(use_dynamic_shifting=False, shift=2.0),
        upsampler=_upsampler(16),
    ),
}


def make_tokenizer():
    """A T5 Unigram tokenizer built in memory (no download): <pad>=0, </s>=1, <unk>=2 like the real one."""
    import transformers

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0 - 0.01 * i) for i, w in enumerate(WORDS)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return transformers.T5Tokenizer(vocab=vocab, extra_ids=4)


def _randomize_vae(vae, seed: int) -> None:
    """Non-trivial values for everything the VAE initialises to 0 / 1 / a constant, then output
    layers rescaled so that the random VAE behaves roughly like a trained one: unit-scale latent
    means with little posterior noise, decoded frames mostly inside [-1, 1] (not clamped)."""
    perturb_(vae, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        vae.latents_mean.copy_(torch.randn(vae.latents_mean.shape, generator=g) * 0.5)
        vae.latents_std.copy_(torch.rand(vae.latents_std.shape, generator=g) + 0.5)
        for name, p in vae.named_parameters():
            if "per_channel_scale" in name or "scale_shift_table" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            if name.endswith("timestep_scale_multiplier"):
                p.fill_(731.0)

        c = vae.config.latent_channels
        # encoder conv_out: channels [0, c) are the posterior mean, channel c the (shared) log-variance
        enc = vae.encoder.conv_out.conv
        video = make_video(9, 64, 64, seed).permute(1, 0, 2, 3)[None] * 2 - 1
        k = 1.0 / vae.encoder(video)[:, :c].std()
        enc.weight[:c] *= k
        enc.bias[:c] *= k
        enc.weight[c] *= 0.2
        enc.bias[c] = -5.0  # posterior std ~ exp(-2.5)

        # decoder conv_out feeds the unpatchify directly: scaling it scales the frames
        dec = vae.decoder.conv_out.conv
        stat = (1, c, 1, 1, 1)  # denormalized latents, as the pipelines decode them
        z = torch.randn(1, c, 2, 2, 2, generator=g) * vae.latents_std.view(stat) + vae.latents_mean.view(stat)
        temb = torch.tensor([0.05]) if vae.config.timestep_conditioning else None
        out = vae.decode(z, temb).sample
        k = 0.45 / out.std()
        dec.weight *= k
        dec.bias *= k
        dec.bias -= k * out.mean()


def build_pipeline_folder(root: Path, name: str) -> Path:
    """Write ``root/name/``: ``LTXPipeline(...).save_pretrained`` of the tiny model ``CONFIGS[name]``.

    The folder holds ``model_index.json`` and ``transformer/``, ``vae/``, ``text_encoder/``,
    ``tokenizer/``, ``scheduler/``. Weights depend only on ``name``; the global RNG is left untouched.
    """
    import diffusers
    import transformers

    cfg = CONFIGS[name]
    seed = cfg["seed"]
    folder = Path(root) / name
    with torch.random.fork_rng(devices=[]):
        tok = make_tokenizer()
        torch.manual_seed(seed)
        text_encoder = transformers.T5EncoderModel(transformers.T5Config(vocab_size=len(tok), **T5_CONFIG)).eval()
        perturb_(text_encoder, seed=seed + 1, std=0.05)  # default init gives tiny, near-uniform states
        transformer = diffusers.LTXVideoTransformer3DModel(**cfg["transformer"]).eval()
        perturb_(transformer, seed=seed + 2)
        vae = diffusers.AutoencoderKLLTXVideo(**cfg["vae"]).eval()
        _randomize_vae(vae, seed + 3)
    pipe = diffusers.LTXPipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**cfg["scheduler"]), vae=vae,
                                 text_encoder=text_encoder, tokenizer=tok, transformer=transformer)
    pipe.save_pretrained(folder)
    return folder


def build_upsampler_folder(root: Path, name: str) -> Path:
    """Write ``root/<name>-upsampler/``: ``LTXLatentUpsamplerModel.save_pretrained`` of
    ``CONFIGS[name]["upsampler"]`` (``config.json`` + ``diffusion_pytorch_model.safetensors``), a latent
    upsampler for the pipeline ``build_pipeline_folder(root, name)`` (in_channels = its latent channels)."""
    from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

    cfg = CONFIGS[name]
    folder = Path(root) / f"{name}-upsampler"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"] + 4)
        model = LTXLatentUpsamplerModel(**cfg["upsampler"]).eval()
        perturb_(model, seed=cfg["seed"] + 5)
    model.save_pretrained(folder)
    return folder


def single_file_and_folder(root: Path):
    """(diffusers folder, Lightricks single file, scheduler config) of the same tiny LTX-Video weights
    (0.9.5 VAE, 16 latent channels, latent statistics perturbed), the single file holding the
    transformer and VAE with its header config."""
    import json

    import diffusers
    import transformers

    from ..loading.formats import original_transformer_config, original_transformer_keys, original_vae_keys, \
        save_single_file
    from ..loading.vae_fixtures import make_ref, original_config

    vae = make_ref("0.9.5")  # latent channels 16, decode-timestep conditioned
    with torch.no_grad():
        vae.latents_std.uniform_(0.5, 1.5)
    torch.manual_seed(3)
    tcfg = dict(in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                num_layers=2, caption_channels=T5_CONFIG["d_model"])
    transformer = diffusers.LTXVideoTransformer3DModel(**tcfg)
    perturb_(transformer, seed=3)
    tok = make_tokenizer()
    te = transformers.T5EncoderModel(transformers.T5Config(vocab_size=len(tok), **T5_CONFIG)).eval()
    sched = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False, shift=1.5)
    folder = Path(root) / "folder"
    diffusers.LTXPipeline(scheduler=sched, vae=vae, text_encoder=te, tokenizer=tok,
                          transformer=transformer).save_pretrained(folder)
    tensors = {**original_transformer_keys(transformer.state_dict()), **original_vae_keys(vae.state_dict(), "0.9.5")}
    config = {"transformer": original_transformer_config(tcfg), "vae": original_config("0.9.5")}
    single = save_single_file(Path(root) / "ltxv-tiny.safetensors", tensors, config)
    return folder, single, json.loads((folder / "scheduler" / "scheduler_config.json").read_text())


def make_image(h: int, w: int, seed: int) -> torch.Tensor:
    """A smooth random image, ``(3, h, w)`` float32 in [0.05, 0.95]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, math.ceil(h / 8)), max(2, math.ceil(w / 8)), generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)[0]
    return (0.05 + 0.9 * img).contiguous()


def make_video(f: int, h: int, w: int, seed: int) -> torch.Tensor:
    """A smooth random video, ``(f, 3, h, w)`` float32 in [0.05, 0.95]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, math.ceil(f / 4)), max(2, math.ceil(h / 8)), max(2, math.ceil(w / 8)),
                        generator=g)
    vid = torch.nn.functional.interpolate(coarse, size=(f, h, w), mode="trilinear", align_corners=True)[0]
    return (0.05 + 0.9 * vid).permute(1, 0, 2, 3).contiguous()


@functools.lru_cache(maxsize=None)
def _load_reference(folder: str) -> dict:
    import diffusers

    pipes = {}
    for key, cls in (("t2v", diffusers.LTXPipeline), ("i2v", diffusers.LTXImageToVideoPipeline),
                     ("condition", diffusers.LTXConditionPipeline)):
        pipe = cls.from_pretrained(folder, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        pipes[key] = pipe
    return pipes


def load_reference(folder) -> dict:
    """diffusers' pipelines on ``folder``, fp32 CPU, cached per folder:
    ``{"t2v": LTXPipeline, "i2v": LTXImageToVideoPipeline, "condition": LTXConditionPipeline}``.
    Each is loaded separately, so no scheduler state is shared between them."""
    return _load_reference(str(Path(folder).resolve()))


@functools.lru_cache(maxsize=None)
def _load_reference_upsampler(folder: str):
    from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

    path = Path(folder)
    if (path / "latent_upsampler").is_dir():  # a pipeline folder holding one, as on the Hub
        path = path / "latent_upsampler"
    return LTXLatentUpsamplerModel.from_pretrained(str(path), dtype=torch.float32).eval()


def load_reference_upsampler(folder):
    """diffusers' ``LTXLatentUpsamplerModel`` from ``folder``, fp32, cached per folder."""
    return _load_reference_upsampler(str(Path(folder).resolve()))


def _frames(out: torch.Tensor) -> torch.Tensor:
    """diffusers' ``output_type="pt"`` video ``(B, F, 3, H, W)`` -> batch 0 as ``(F, H, W, 3)`` float32."""
    return out[0].permute(0, 2, 3, 1).float().contiguous()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference_t2v(folder, seed: int, **kw) -> torch.Tensor:
    """``LTXPipeline`` text-to-video; returns frames ``(F, H, W, 3)`` in [0, 1].

    Note: this diffusers version always passes its own ``sigmas``, so ``timesteps=`` raises there."""
    pipe = load_reference(folder)["t2v"]
    return _frames(pipe(output_type="pt", generator=_generator(seed), **kw).frames)


def reference_i2v(folder, image, seed: int, **kw) -> torch.Tensor:
    """``LTXImageToVideoPipeline``; ``image`` e.g. a ``(3, H, W)`` float tensor in [0, 1].
    Returns frames ``(F, H, W, 3)`` in [0, 1]."""
    pipe = load_reference(folder)["i2v"]
    return _frames(pipe(image=image, output_type="pt", generator=_generator(seed), **kw).frames)


def reference_condition(folder, conditions, seed: int, **kw) -> torch.Tensor:
    """``LTXConditionPipeline`` with ``conditions``, a list of
    ``diffusers.pipelines.ltx.pipeline_ltx_condition.LTXVideoCondition`` (images ``(3, H, W)`` /
    videos ``(F, 3, H, W)`` float in [0, 1]). Returns frames ``(F, H, W, 3)`` in [0, 1].

    Note: diffusers' condition pipeline cannot drive a dynamic-shifting scheduler (it raises
    "`mu` must be passed"), so this does not run on ``tiny-090``."""
    pipe = load_reference(folder)["condition"]
    return _frames(pipe(conditions=conditions, output_type="pt", generator=_generator(seed), **kw).frames)


@dataclass
class TwoStageResult:
    """``frames``: stage-2 output ``(F, H, W, 3)`` in [0, 1]; ``stage1_latents``: stage-1 output
    latents ``(1, C, f, h, w)`` (normalized, unpacked, as ``output_type="latent"`` returns them);
    ``upscaled_latents``: the upsample pipeline's output ``(1, C, f, 2h, 2w)``, stage 2's ``latents``."""

    frames: torch.Tensor
    stage1_latents: torch.Tensor
    upscaled_latents: torch.Tensor


# Request keys stage 2 takes over from stage 1 unless ``stage2`` sets them (the recipe repeats them).
_STAGE2_INHERITS = ("prompt", "negative_prompt", "conditions", "num_frames", "frame_rate", "max_sequence_length")


def reference_two_stage(folder, upsampler_folder, seed: int, stage1: dict, upsample: dict,
                        stage2: dict) -> TwoStageResult:
    """diffusers' documented LTX 0.9.7 recipe: generate, upsample latents, refine.

    1. ``LTXConditionPipeline(**stage1, output_type="latent", generator=seed)``; ``stage1`` must hold
       ``height`` and ``width`` (and usually ``prompt``, ``num_frames``, ``conditions``, steps...).
    2. ``LTXLatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=...)(latents=..., output_type="latent",
       **upsample)`` (``upsample``: ``adain_factor``, ``tone_map_compression_ratio``).
    3. The same condition pipeline with ``latents=upscaled``, ``height=2*h``, ``width=2*w``,
       ``output_type="pt"``, a fresh generator seeded with ``seed`` and ``**stage2`` (e.g.
       ``denoise_strength``, ``num_inference_steps``, ``decode_timestep``, ``image_cond_noise_scale``).
       ``prompt``, ``negative_prompt``, ``conditions``, ``num_frames``, ``frame_rate`` and
       ``max_sequence_length`` carry over from ``stage1`` unless ``stage2`` sets them.
    """
    from diffusers import LTXLatentUpsamplePipeline

    pipe = load_reference(folder)["condition"]
    latents = pipe(output_type="latent", generator=_generator(seed), **stage1).frames
    upsampler = LTXLatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=load_reference_upsampler(upsampler_folder))
    upsampler.set_progress_bar_config(disable=True)
    upscaled = upsampler(latents=latents, output_type="latent", **upsample).frames
    kw = {k: stage1[k] for k in _STAGE2_INHERITS if k in stage1}
    kw.update(height=2 * stage1["height"], width=2 * stage1["width"])
    kw.update(stage2)
    out = pipe(latents=upscaled, output_type="pt", generator=_generator(seed), **kw).frames
    return TwoStageResult(frames=_frames(out), stage1_latents=latents, upscaled_latents=upscaled)
