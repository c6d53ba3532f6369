"""pipeline="text-to-audio" (Lightricks' t2a_one_stage, ltx-pipelines @400fd31; not in 1.0.0): text ->
audio alone, on an engine that holds the audio stream only (``Engine.from_pretrained(...,
modalities=("audio",))``: the video weights are neither built nor read), or on the audio stream of a
full engine (``LTX2AudioTransformer.view``: the same modules, the same result). One stage at the clip's
duration num_frames / frame_rate (as the reference derives it; 8k+1 frames as every LTX-2 clip),
the audio latents from noise, denoised with the audio guidance alone (CFG, STG, rescale, skip_step;
modality guidance off: there is no video to isolate from) and Euler, decoded to a waveform. The
result has audio and no frames (``GenerationResult.save`` writes it as WAV).

As the reference: the schedule is the LTX-2 one shifted for 4096 tokens (LTX2Scheduler's default);
the noise is drawn packed (1, T, C x mel bins) in the model dtype from the call's generator, as its
GaussianNoiser draws it on its state; the negative prompt's context comes from the same encoding.
Unlike it: latents stay float32 between steps (as in every recipe here).
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from ...components.decode import check_finite
from ...models.audio_vae import unpack_audio_latents
from ...models.ltx2_audio_only import LTX2AudioTransformer
from ...parallel.text import on_main_rank
from ...results import step_hook
from .. import samplers
from ..denoise import DEFAULT_NEGATIVE_PROMPT, NO_GUIDANCE, Denoiser, video_state
from ..stages import StageOutput, decode_audio, stage1_sigmas

__all__ = ["ARGUMENTS", "check", "check_duration", "run"]

ARGUMENTS = ()  # reads generate()'s shared arguments only


def check_duration(engine, a: dict) -> int:
    """num_frames / frame_rate, the clip's duration (the video size and vae_tiling are not read);
    -> num_frames."""
    from ...checks import MAX_NUM_FRAMES, check_int
    from ...media import frame_rate_fraction
    from ..denoise import audio_frames
    n = check_int("num_frames", a["num_frames"], 1, MAX_NUM_FRAMES, "MAX_NUM_FRAMES")
    if (n - 1) % 8:
        raise ValueError(f"num_frames must be of the form 8k+1 (e.g. {8 * ((n - 1) // 8) + 1} or "
                         f"{8 * ((n - 1) // 8 + 1) + 1}), got {n}")
    a["fps"] = frame_rate_fraction(a["frame_rate"], "frame_rate")
    if audio_frames(n, float(a["fps"]), engine.audio_vae) < 1:
        cfg = engine.audio_vae.config
        raise ValueError(f"frame_rate: {n} frames at {a['frame_rate']} fps last {n / float(a['fps']):.3g} s, less "
                         f"than one audio latent frame ({4 * cfg.mel_hop_length / cfg.sample_rate:g} s); lower "
                         f"frame_rate or give more frames")
    if a["vae_tiling"] is not None:
        raise ValueError(f"vae_tiling: pipeline='text-to-audio' decodes no video, got {a['vae_tiling']!r}")
    return n


def check(engine, a: dict) -> None:
    """What text-to-audio does not read is refused; the audio guidance's modality term is off."""
    for k, what in (("audio", "audio= is the input of audio-to-video"),
                    ("latents", "latents= start a video"), ("audio_latents", "audio_latents= are not taken yet"),
                    ("output_type", "output_type= is not taken yet"),
                    ("output", "output= streams an mp4 while the video decodes; save the result with "
                               "result.save('out.wav')")):
        if a.get(k) is not None:
            raise ValueError(f"{k}: pipeline='text-to-audio' generates audio from text alone ({what}), got "
                             f"{k}={a[k]!r}")
    if a["conditions"]:
        raise ValueError(f"image / conditions: pipeline='text-to-audio' generates no video to condition, got "
                         f"{len(a['conditions'])} condition(s)")
    if a["shift_tokens"] is None:
        raise ValueError("shift_tokens: pipeline='text-to-audio' has no video tokens to shift the schedule for; "
                         "give a token count (the reference: 4096, the default)")
    if a["sampler"] != "euler":
        raise ValueError(f"sampler: pipeline='text-to-audio' samples with Euler (t2a_one_stage's loop), got "
                         f"{a['sampler']!r}")
    # the video guidance left at its default (spatio_temporal_guidance_blocks may have set its blocks)
    video = replace(a["video_guidance"], stg_blocks=())
    if video not in (NO_GUIDANCE, replace(engine.release.guidance("video"), stg_blocks=())):
        raise ValueError(f"video_guidance: pipeline='text-to-audio' generates no video, got {a['video_guidance']!r}")
    a["video_guidance"] = NO_GUIDANCE
    p = a["audio_guidance"]
    if p.isolated:  # the release default's modality term (3) reads as off, as the reference sets it
        if p.modality != engine.release.guidance("audio").modality:
            raise ValueError(f"audio_guidance.modality / audio_modality_scale must be 1 for pipeline='text-to-audio' "
                             f"(no video to isolate the audio from), got {p.modality!r}")
        a["audio_guidance"] = replace(p, modality=1.0)  # t2a_one_stage: modality_scale=1.0


def run(engine, a, gen, seed: int) -> StageOutput:
    timings = {}
    t0 = time.perf_counter()
    texts = encode_audio_text(engine, a, a.audio_guidance.uncond)
    timings["text"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    tokens = denoise_audio(engine, a, texts, gen)
    timings["denoise"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    out = StageOutput(latents=unpack_audio_latents(tokens, engine.audio_vae.config.latent_channels))
    out.audio = check_finite(decode_audio(engine, tokens), "audio decode", "samples")
    out.sample_rate = engine.vocoder.config.output_sampling_rate
    timings["decode"] = time.perf_counter() - t2
    if a.callback is not None:
        step_hook(a.callback, "decode")(1, 1, 0.0, out.latents)
    out.timings = timings
    return out


def audio_transformer(engine) -> LTX2AudioTransformer:
    """The engine's audio-only transformer, or the audio stream of its full one (a view, made per call)."""
    tr = engine.transformer
    return tr if isinstance(tr, LTX2AudioTransformer) else LTX2AudioTransformer.view(tr)


def encode_audio_text(engine, a, need_negative: bool):
    """(positive, negative or None) audio contexts, [negative, positive] encoded as one batch as
    the other recipes do (stages.encode_text)."""
    te, tr = engine.text_encoder, audio_transformer(engine)
    dtype = next(tr.parameters()).dtype
    prompts = [a.prompt]
    if need_negative:
        prompts = [a.negative_prompt if a.negative_prompt is not None else DEFAULT_NEGATIVE_PROMPT, a.prompt]
    def encode():
        with engine.residency.use("text_encoder", te.model):
            return te.encode(prompts, a.max_sequence_length)
    _, audio, mask = on_main_rank(getattr(engine, "parallel", None), encode)  # several ranks: rank 0's
    audio, mask = audio.to(engine.device, dtype), mask.to(engine.device)
    positive = tr.prepare_context(None, audio[-1:], mask[-1:])
    return positive, tr.prepare_context(None, audio[:1], mask[:1]) if need_negative else None


def denoise_audio(engine, a, texts, gen) -> torch.Tensor:
    """Noise -> the denoised audio tokens (1, T, C x mel bins), float32."""
    tr, dev = audio_transformer(engine), engine.device
    acfg = engine.audio_vae.config
    width = acfg.latent_channels * acfg.latent_mel_bins
    noise = torch.randn((1, a.audio_frames, width), generator=gen, device=gen.device, dtype=engine.dtype)
    noise = noise.to(dev, torch.float32)
    ones = torch.ones((1, a.audio_frames, 1), device=dev)
    audio = video_state(torch.zeros_like(noise), ones, noise, 1.0)
    empty = torch.zeros((1, 0, tr.config.in_channels), device=dev)  # no video stream
    video = video_state(empty, torch.ones((1, 0, 1), device=dev), empty, 1.0)
    rope = tr.rope(None, tr.audio_positions(1, a.audio_frames, device=dev))
    engine.sync_executor()
    denoiser = Denoiser(tr, texts[0], texts[1], rope, video.mask, audio.mask, NO_GUIDANCE, a.audio_guidance,
                        max_batch=a.guidance_batch, executor=engine.executor, graph_variant=engine.graph_variant,
                        group=getattr(engine, "guidance_group", None))
    sigmas = stage1_sigmas(False, a.sigmas, a.num_inference_steps, a.shift_tokens, None)
    try:
        _, audio = samplers.euler(denoiser, video, audio, sigmas, _hook(a, acfg.latent_channels))
    except FloatingPointError as e:
        raise FloatingPointError(f"denoise: {e}") from None
    return audio.latent


def _hook(a, channels: int):
    callback = step_hook(a.callback, "denoise")
    if callback is None:
        return None

    def hook(step, total, sigma, video, audio):  # latents=: the audio latents (1, C, T, mel bins)
        callback(step, total, 1000.0 * sigma, unpack_audio_latents(audio, channels))
    return hook
