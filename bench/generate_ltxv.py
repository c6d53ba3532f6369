"""The LTX-Video cases of scenario_generate.py (see its docstring): ltxengine's Engine and diffusers'
condition and upsample pipelines over one set of weights, and both sides of the 0.9.8 distilled two-stage
and the one-stage recipes."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from bench import common
from bench import models as M
from bench.generation import (FRAME_RATE, FULL_SIZE, PROMPT, SEED, SMOKE_SIZE, WORDS, build_upsampler, measure,
                              records_for)

T5_SEQ = 256  # LTXConditionPipeline's max_sequence_length (our Engine's default in condition mode)
DOWNSCALE = 2 / 3
SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)  # 0.9.7/0.9.8 distilled
DECODE = dict(decode_timestep=0.05, decode_noise_scale=0.025)

# T5-XXL encoder (google/t5-v1_1-xxl, the LTX-Video text encoder) and a tiny one for --smoke.
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
              relative_attention_max_distance=128, layer_norm_epsilon=1e-6, dropout_rate=0.0)
T5_TINY = dict(T5_XXL, vocab_size=128, d_model=M.TINY_2B.caption_channels, d_kv=6, d_ff=16, num_layers=2,
               num_heads=2)


# -- models ---------------------------------------------------------------------------------------

def t5_tokenizer():
    """A T5 Unigram tokenizer built in memory (pad 0, eos 1, unk 2 as in T5): no download."""
    import transformers

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0 - 0.01 * i) for i, w in enumerate(WORDS)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return transformers.T5Tokenizer(vocab=vocab, extra_ids=4)


def build_t5(config: dict, device, dtype):
    """T5EncoderModel on meta, cast, materialized on the device and filled in place (no fp32 copy)."""
    import transformers

    with torch.device("meta"):
        model = transformers.T5EncoderModel(transformers.T5Config(**config)).to(dtype)
    model = model.to_empty(device=device)
    model.tie_weights()  # the shared embedding and encoder.embed_tokens are one tensor
    return M.randomize_(model, seed=3).eval().requires_grad_(False)



def diffusers_upsampler(model):
    """diffusers' LTXLatentUpsamplerModel over the same storage (our names are its keys)."""
    from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

    with torch.device("meta"):
        ref = LTXLatentUpsamplerModel(**dataclasses.asdict(model.config))
    ref.load_state_dict(model.state_dict(), strict=True, assign=True)
    return ref.eval()


def ltxv_configs(smoke: bool) -> dict:
    from ltxengine.config import UPSAMPLER_097, TRANSFORMER_2B, VAE_095

    if smoke:
        up = dataclasses.replace(UPSAMPLER_097, in_channels=M.TINY_2B.in_channels, mid_channels=32,
                                 num_blocks_per_stage=1)
        return {"transformer": M.TINY_2B, "vae": M.TINY_VAE_095, "upsampler": up, "t5": T5_TINY}
    return {"transformer": TRANSFORMER_2B, "vae": VAE_095, "upsampler": UPSAMPLER_097, "t5": T5_XXL}


def build_ltxv(settings: common.Settings, dtype, kernels: str) -> dict:
    """ltxengine's Engine and diffusers' pipelines over one set of weights."""
    import diffusers

    from ltxengine import LTXVideoEngine

    # diffusers warns on every explicit-timesteps call (they are the distilled recipe's, unshifted)
    diffusers.utils.logging.set_verbosity_error()
    from ltxengine.models.text_encoder import T5TextEncoder

    ops, why = common.resolve_backend(kernels, settings.device)
    if ops is None:
        raise RuntimeError(f"scenario_generate: --kernels {kernels} {why}")
    cfg = ltxv_configs(settings.smoke)
    dev = settings.device
    transformer = M.build(cfg["transformer"], dev, dtype, ops)
    vae = M.build(cfg["vae"], dev, dtype, ops)
    upsampler = build_upsampler(cfg["upsampler"], dev, dtype, ops)
    t5, tok = build_t5(cfg["t5"], dev, dtype), t5_tokenizer()
    engine = LTXVideoEngine(transformer, vae, T5TextEncoder(t5, tok), latent_upsampler=upsampler,
                            scheduler_config=dict(SCHEDULER), device=dev, dtype=dtype, source="bench")
    dvae = M.build_diffusers(vae)
    pipe = diffusers.LTXConditionPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=dvae, text_encoder=t5,
        tokenizer=tok, transformer=M.build_diffusers(transformer))
    up_pipe = diffusers.LTXLatentUpsamplePipeline(vae=dvae, latent_upsampler=diffusers_upsampler(upsampler))
    for p in (pipe, up_pipe):
        p.set_progress_bar_config(disable=True)
    return {"engine": engine, "pipe": pipe, "up_pipe": up_pipe, "sources": dict(ops.sources)}


# -- the LTX-Video recipes ------------------------------------------------------------------------------

def ltxv_recipe(model: str, steps: int) -> dict:
    """Stage-1 (or only-stage) sampling arguments shared by both libraries."""
    from ltxengine import DISTILLED_STAGE1_TIMESTEPS

    sched = dict(timesteps=list(DISTILLED_STAGE1_TIMESTEPS)) if model == "ltxv-098" or steps == 8 else \
        dict(num_inference_steps=steps)
    return dict(guidance_scale=1.0, image_cond_noise_scale=0.0, max_sequence_length=T5_SEQ, **sched)


def stage_sizes(size: tuple[int, int, int], r: int) -> tuple[int, int]:
    """Stage-1 height and width of the two-stage recipe (TwoStage's rounding)."""
    return int(size[0] * DOWNSCALE) // r * r, int(size[1] * DOWNSCALE) // r * r


def ours_ltxv(built: dict, model: str, size, steps: int, stages: list) -> Callable[[], dict]:
    from ltxengine import DISTILLED_STAGE2_TIMESTEPS, TwoStage

    two = TwoStage(downscale_factor=DOWNSCALE, adain_factor=1.0, tone_map_compression_ratio=0.6,
                   denoise_strength=0.999, timesteps=list(DISTILLED_STAGE2_TIMESTEPS),
                   guidance_scale=1.0) if model == "ltxv-098" else None
    kw = dict(height=size[0], width=size[1], num_frames=size[2], frame_rate=FRAME_RATE, seed=SEED,
              pipeline="condition", two_stage=two, **DECODE, **ltxv_recipe(model, steps))

    def run():
        result = built["engine"].generate(PROMPT, **kw)
        stages.append(dict(result.timings))
        return {"frames": torch.from_numpy(result.frames)}
    return run


def diffusers_ltxv(built: dict, model: str, size, steps: int) -> Callable[[], dict]:
    from ltxengine import DISTILLED_STAGE2_TIMESTEPS
    from ltxengine.components.decode import resize_frames

    pipe, up_pipe = built["pipe"], built["up_pipe"]
    common_kw = dict(prompt=PROMPT, num_frames=size[2], frame_rate=FRAME_RATE, **ltxv_recipe(model, steps))
    r = pipe.vae_spatial_compression_ratio

    def frames(out) -> dict:  # (1, F, 3, H, W) -> (F, H, W, 3) on the host, like the Engine's result
        f = out.frames[0].permute(0, 2, 3, 1).float()
        return {"frames": resize_frames(f, size[0], size[1]).cpu()}

    def one_stage():
        return frames(pipe(height=size[0], width=size[1], output_type="pt",
                           generator=torch.Generator().manual_seed(SEED), **common_kw, **DECODE))

    def two_stage():
        h1, w1 = stage_sizes(size, r)
        lat = pipe(height=h1, width=w1, output_type="latent", generator=torch.Generator().manual_seed(SEED),
                   **common_kw).frames
        up = up_pipe(latents=lat, output_type="latent", adain_factor=1.0, tone_map_compression_ratio=0.6).frames
        kw = dict(common_kw, timesteps=list(DISTILLED_STAGE2_TIMESTEPS))
        kw.pop("num_inference_steps", None)
        return frames(pipe(latents=up, height=2 * h1, width=2 * w1, denoise_strength=0.999, output_type="pt",
                           generator=torch.Generator().manual_seed(SEED), **kw, **DECODE))
    return M.no_grad(two_stage if model == "ltxv-098" else one_stage)



def bench_ltxv(settings, model: str, built: dict, dtype, steps: int) -> list[dict]:
    size = SMOKE_SIZE if settings.smoke else FULL_SIZE
    stages: list[dict] = []
    fns = {"ltxengine": ours_ltxv(built, model, size, steps, stages),
           M.DIFFUSERS: diffusers_ltxv(built, model, size, steps)}
    fns = {k: v for k, v in fns.items() if k == "ltxengine" or settings.impls is None or k in settings.impls}
    sources = {"ltxengine": f"Engine.generate, kernels {built['sources'] or 'torch'}",
               M.DIFFUSERS: "LTXConditionPipeline" + (" + LTXLatentUpsamplePipeline" if model == "ltxv-098" else "")}
    results = measure(fns, sources, settings, dtype)
    r = built["engine"].vae.spatial_compression_ratio
    dims = {"model": model, "config": "tiny" if settings.smoke else "full", "height": size[0], "width": size[1],
            "num_frames": size[2], "frame_rate": FRAME_RATE, "text_tokens": T5_SEQ,
            "recipe": ("two-stage distilled" if model == "ltxv-098" else "one-stage"),
            "stage1": list(stage_sizes(size, r)) if model == "ltxv-098" else [size[0], size[1]],
            **ltxv_recipe(model, steps), **DECODE}
    return records_for(settings, results, model, size, dtype, dims, stages)
