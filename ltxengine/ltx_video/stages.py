"""One LTX-Video generation, stage by stage (called by ``LTXVideoEngine.generate`` with the checked
request, ``request.LTXVideoRequest``, which it only reads): text -> stage 1 -> (upsample -> stage 2)
-> decode. ``stage_schedule`` and ``condition_pixels`` also serve the request's checks, which build
every schedule and preprocess the first stage's pixels before any work."""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from ..checks import make_generator
from ..components.decode import check_finite, decode_latents, decode_latents_frames, decode_or_stream, resize_frames
from ..components.inputs import Condition, image_to_tensor, video_to_tensor
from ..components.latents import upsample_latents
from ..parallel.layout import stage_layout
from ..parallel.text import on_main_rank
from ..results import GenerationResult, step_hook
from . import sampling as lv
from .schedule import Schedule, calculate_shift, linear_quadratic_schedule, make_schedule


def run_generation(engine, a) -> GenerationResult:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    gen, seed = make_generator(a.generator, a.seed)
    # stage 2 restarts from this state (diffusers' recipe re-seeds its second call), so a seed
    # and a generator seeded with it give the same video
    start_state = gen.get_state()
    mode, two = a.pipeline, a.two_stage
    r, rt = engine.vae.spatial_compression_ratio, engine.vae.temporal_compression_ratio
    height, width, n = a.height, a.width, a.num_frames
    height1, width1 = a.stage1_size
    embeds, mask, neg, neg_mask = encode_prompt(engine, a.prompt, a.negative_prompt,
                                                 a.max_sequence_length, a.cfg, use_mask=mode == "condition")
    timings["text"] = time.perf_counter() - t0

    engine.sync_executor()

    def guide(scale, rescale, layout):
        return lv.Guidance(engine.transformer, embeds, mask, neg, neg_mask, scale, rescale, executor=engine.executor,
                           group=layout.guidance_group, graph_tag=layout.graph_tag)

    c = engine.transformer.config.in_channels
    f = (n - 1) // rt + 1
    t1 = time.perf_counter()
    # each stage's layout over the ranks (parallel/layout.py): one pass a step (no cfg) on several
    # guidance ranks runs sequence parallel over all of them instead
    with stage_layout(engine, _passes(a.guidance_scale), f * (height1 // r) * (width1 // r)) as layout:
        latents = denoise(engine, mode, guide(a.guidance_scale, a.guidance_rescale, layout), gen, a, height1, width1,
                          (1, c, f, height1 // r, width1 // r), a.num_inference_steps, a.timesteps,
                          a.sigmas, a.denoise_strength, a.image_cond_noise_scale, a.latents,
                          "denoise")
    timings["denoise"] = time.perf_counter() - t1
    if two is not None:
        t2 = time.perf_counter()
        with engine.residency.use("latent_upsampler", engine.latent_upsampler):
            up = upsample_latents(engine.latent_upsampler, engine.vae, latents, two.adain_factor,
                                  two.tone_map_compression_ratio).to(torch.float32)
        check_finite(up, "upsample", "latents")  # else stage 2 would be blamed for it
        gen = torch.Generator(gen.device)
        gen.set_state(start_state)
        h2, w2 = 2 * height1, 2 * width1
        scale2 = a.guidance_scale if two.guidance_scale is None else two.guidance_scale
        rescale2 = a.guidance_rescale if two.guidance_rescale is None else two.guidance_rescale
        noise2 = a.image_cond_noise_scale if two.image_cond_noise_scale is None else two.image_cond_noise_scale
        with stage_layout(engine, _passes(scale2), f * (h2 // r) * (w2 // r)) as layout:
            latents = denoise(engine, "condition", guide(scale2, rescale2, layout), gen, a, h2, w2,
                              (1, c, f, h2 // r, w2 // r), two.num_inference_steps, two.timesteps, None,
                              two.denoise_strength, noise2, up, "refine")
        timings["refine"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    decode = dict(decode_timestep=a.decode_timestep, decode_noise_scale=a.decode_noise_scale, generator=gen,
                  device=engine.device, model_dtype=engine.dtype, tiling=a.vae_tiling)
    if getattr(engine, "parallel", None) is None:
        frames = decode_or_stream(
            lambda: resize_frames(decode_latents(engine.vae, latents, **decode), height, width),
            lambda: decode_latents_frames(engine.vae, latents, height=height, width=width, **decode), a.output,
            a.fps)
    else:  # every rank in one decode, its tiles spread over them (parallel/vae.py): rank 0 writes it whole
        from ..parallel.vae import ltx_video_frames_parallel

        def whole():
            return ltx_video_frames_parallel(engine.vae, latents, height=height, width=width, **decode)
        frames = decode_or_stream(whole, lambda: [whole()], a.output, a.fps)
    timings["decode"] = time.perf_counter() - t3
    if a.callback is not None:
        step_hook(a.callback, "decode")(1, 1, 0.0, latents)
    result = GenerationResult.from_frames(frames, latents, a.fps, seed=seed, timings=timings)
    timings["total"] = time.perf_counter() - t0
    return result


def _passes(guidance_scale: float) -> int:
    """Transformer passes a step (Guidance.batch): cond, and uncond when guiding."""
    return 2 if guidance_scale > 1.0 else 1


def denoise(engine, mode, guide, gen, a, height, width, shape, steps, timesteps, sigmas, denoise_strength,
            cond_noise, latents, stage) -> torch.Tensor:
    if mode == "text-to-video":
        return _denoise_on_device(engine, mode, guide, gen, a, height, width, shape, steps, timesteps, sigmas,
                                  denoise_strength, cond_noise, latents, stage)
    with engine.residency.use("vae_encoder", engine.vae.encoder):  # conditions are encoded first
        return _denoise_on_device(engine, mode, guide, gen, a, height, width, shape, steps, timesteps, sigmas,
                                  denoise_strength, cond_noise, latents, stage)


def _denoise_on_device(engine, mode, guide, gen, a, height, width, shape, steps, timesteps, sigmas,
                       denoise_strength, cond_noise, latents, stage) -> torch.Tensor:
    hook = step_hook(a.callback, stage)
    r, rt = engine.vae.spatial_compression_ratio, engine.vae.temporal_compression_ratio
    ratios = (r, rt)
    fr = float(a.fps)
    seq_len = shape[2] * shape[3] * shape[4]
    schedule = stage_schedule(engine, mode, seq_len, steps, timesteps, sigmas)
    if mode == "text-to-video":
        return lv.sample_text_to_video(guide, schedule, shape, frame_rate=fr, ratios=ratios, generator=gen,
                                       device=engine.device, latents=latents, hook=hook, stage=stage)
    image, conds = stage_pixels(engine, a, height, width)
    if mode == "image-to-video":
        return lv.sample_image_to_video(guide, schedule, engine.vae, image, shape, frame_rate=fr,
                                        ratios=ratios, generator=gen, device=engine.device, latents=latents,
                                        hook=hook, stage=stage)
    sigma = None
    run = schedule
    if denoise_strength < 1:
        run = schedule.truncate(denoise_strength)
        if len(run) == 0:
            raise ValueError(f"denoise_strength {denoise_strength} keeps no step of the {len(schedule)}-step "
                             f"schedule; use a larger denoise_strength or more steps")
        sigma = run.sigmas[:1].to(engine.device)
    # At full strength diffusers' LTXConditionPipeline ignores given latents; here they replace the
    # initial noise (the noise is still drawn, so the random stream stays aligned).
    return lv.sample_condition(guide, run, schedule.sigmas, engine.vae, conds, shape, frame_rate=fr,
                               ratios=ratios, generator=gen, device=engine.device,
                               image_cond_noise_scale=cond_noise, latents=latents, denoise_sigma=sigma,
                               hook=hook, stage=stage)


def stage_schedule(engine, mode: str, seq_len: int, num_steps: int, timesteps, sigmas) -> Schedule:
    cfg = engine.scheduler_config
    mu = calculate_shift(seq_len, cfg) if cfg.use_dynamic_shifting else None
    if mode == "condition" and timesteps is None and sigmas is None:
        timesteps = linear_quadratic_schedule(num_steps) * 1000
    elif mode != "condition" and timesteps is None and sigmas is None:
        sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
    return make_schedule(cfg, sigmas=sigmas, timesteps=timesteps, mu=mu)


def encode_prompt(engine, prompt: str, negative: str | None, max_len: int, cfg: bool, use_mask: bool):
    te = engine.text_encoder
    n_tokens = len(te.tokenizer(prompt).input_ids)
    if n_tokens > max_len:  # stacklevel: the caller of Engine.generate (via _run, _generate, run_generation)
        warnings.warn(f"prompt: {n_tokens} tokens is longer than max_sequence_length={max_len}; the text "
                      f"encoder sees only the first {max_len} (the rest is dropped)", stacklevel=6)

    def encode():
        with engine.residency.use("text_encoder", te.model):
            return _encode_prompt_on_device(engine, te, prompt, negative, max_len, cfg, use_mask)
    return on_main_rank(getattr(engine, "parallel", None), encode)  # several ranks: rank 0's, broadcast


def _encode_prompt_on_device(engine, te, prompt, negative, max_len, cfg, use_mask):
    embeds, mask = te.encode(prompt, max_len, engine.device, dtype=te.dtype, use_attention_mask=use_mask)
    neg = neg_mask = None
    if cfg:
        neg, neg_mask = te.encode(negative if negative is not None else "", max_len, engine.device, dtype=te.dtype,
                                  use_attention_mask=use_mask)
    return embeds, mask, neg, neg_mask


def stage_pixels(engine, a, height: int, width: int):
    """The image (3, H, W) and conditions of a call at one stage's size, on the device (the first
    stage's were preprocessed by the request's check)."""
    if (height, width) == a.stage1_size:
        return a.stage1_pixels
    return condition_pixels(engine, a.image, a.conditions, a.num_frames, height, width)


def condition_pixels(engine, image, conditions, num_frames: int, height: int, width: int):
    """The image (3, H, W) and each condition's pixels at (height, width), on the device."""
    if image is not None:
        image = image_to_tensor(image, height, width, "image").to(engine.device)
    conds = [_encode_condition_pixels(engine, i, c, height, width, num_frames) for i, c in enumerate(conditions)]
    return image, tuple(conds)


def _encode_condition_pixels(engine, i: int, c: Condition, height: int, width: int, num_frames: int):
    rt = engine.vae.temporal_compression_ratio
    if c.image is not None:
        pixels = image_to_tensor(c.image, height, width, f"conditions[{i}].image")[:, None]
    else:
        pixels = video_to_tensor(c.video, height, width, f"conditions[{i}].video")
        keep = min(pixels.shape[1], num_frames - c.frame_index)
        keep = (keep - 1) // rt * rt + 1
        if keep < 1:
            raise ValueError(f"conditions[{i}].video: no frame fits between frame_index {c.frame_index} and "
                             f"num_frames {num_frames}")
        pixels = pixels[:, :keep]
    return lv.EncodedCondition(pixels[None].to(engine.device), c.frame_index, float(c.strength))
