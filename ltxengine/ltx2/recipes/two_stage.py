"""pipeline="two-stage" (ltx-pipelines' ti2vid_two_stages) and "distilled" (its distilled
pipeline: the same recipe on the distilled stage-1 schedule without guidance, resolved by the
request): text -> stage 1 at half the size -> latent upsampling x2 -> stage 2 ("refine") at the
requested size on ``two_stage.sigmas``, re-noised at ``two_stage.noise_scale``, with the distilled
LoRA fused for this stage only -> decode video and audio. Both stages encode the condition images
at their own size; "keyframe-interpolation" (``Recipe.guiding``) appends them all as guiding
latents. With LTX-2.3's x1.5 upscaler loaded instead of an x2 one, stage 1 runs at two thirds of
the size and the upscaler scales it by 3/2 (``stage1_size``)."""

from __future__ import annotations

import time

import torch

from ...components.latents import upsample_latents
from ...loading.ltx2_upsamplers import size_multiple as upsampler_size_multiple
from ...models.latent_upsampler import upsampler_scales
from ..stages import StageOutput, encode_conditions, encode_text, finish, first_stage, prepare, run_stage


def run(engine, a, gen, seed: int, *, stage1=None, stage2_weights=None) -> StageOutput:
    """``stage1(engine, a, given, texts, gen, seed) -> (video, audio)`` replaces stage 1 (ic-lora
    appends its references there); ``stage2_weights(engine, two)``: the context stage 2 runs in
    (default: the distilled LoRA at ``two.lora_strength`` added to the LoRAs fused now)."""
    two = a.two_stage
    timings = {}
    t0 = time.perf_counter()
    given = prepare(engine, a)
    vp, ap = given.guidance(a.video_guidance, a.audio_guidance)
    texts = encode_text(engine, a, vp.uncond or ap.uncond or two.video_guidance.uncond
                        or two.audio_guidance.uncond)
    timings["text"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    with _distilled_weights(engine, two.stage1_lora_strength):  # two-stage-hq's stage 1 (0 otherwise)
        video, audio = (stage1(engine, a, given, texts, gen, seed) if stage1 is not None
                        else first_stage(engine, a, given, texts, gen, seed, *stage1_size(engine, a.height, a.width)))
    timings["denoise"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    with engine.residency.use("latent_upsampler", engine.latent_upsampler):
        video = upsample_latents(engine.latent_upsampler, engine.vae, video, two.adain_factor,
                                 two.tone_map_compression_ratio).float()
    first, keys = encode_conditions(engine, given.images, a.height, a.width, float(a.fps), guiding=a.recipe.guiding)
    vp2, ap2 = given.guidance(two.video_guidance, two.audio_guidance)
    shape = (1, engine.transformer.config.in_channels, video.shape[2], a.height // 32, a.width // 32)
    stage2_weights = stage2_weights or (lambda engine, two: _distilled_weights(engine, two.lora_strength))
    with stage2_weights(engine, two):
        video, audio = run_stage(engine, a, gen, seed, stage="refine", latent_shape=shape,
                                 sigmas=torch.tensor(two.sigmas, dtype=torch.float32), video_params=vp2,
                                 audio_params=ap2, texts=texts, first=first, keyframes=keys, video_init=video,
                                 audio_init=audio, audio_frozen=given.audio_latents, noise_scale=two.noise_scale)
    timings["refine"] = time.perf_counter() - t2
    return finish(engine, a, given, video, audio, gen, timings)


def spatial_scale(engine) -> float:
    """The loaded spatial upscaler's factor: 2, or 1.5 for LTX-2.3's x1.5 (2 without one)."""
    up = engine.latent_upsampler
    return 2.0 if up is None else upsampler_scales(up.config)[0]


def size_multiple(engine) -> int:
    """What height and width must be a multiple of (64 for x2, 96 for x1.5: ltx2_upsamplers.size_multiple)."""
    return upsampler_size_multiple(spatial_scale(engine))


def stage1_size(engine, height: int, width: int) -> tuple[int, int]:
    """Stage 1's (height, width): the size / the upscaler's factor (half size for x2, as
    ltx-pipelines; two thirds for x1.5, which no ltx-pipelines recipe runs as of @400fd31)."""
    scale = spatial_scale(engine)
    return round(height / scale), round(width / scale)


class _distilled_weights:
    """The distilled LoRA at ``strength`` added to the LoRAs fused now (the user's: ltx-pipelines'
    stages add it to their ``loras`` list) for one stage; afterwards, also when the stage fails,
    the set fused before is fused again."""

    def __init__(self, engine, strength: float):
        self.engine, self.strength = engine, strength
        self.on = engine.distilled_lora is not None and strength != 0

    def __enter__(self):
        if self.on:
            lora_set = self.engine.lora_manager()
            self.before = list(lora_set.active)
            lora_set.apply(self.before + [(self.engine.distilled_lora, self.strength)])

    def __exit__(self, *exc):
        if self.on:
            self.engine.lora_manager().apply(self.before)
        return False

