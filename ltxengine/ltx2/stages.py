"""The stages LTX-2's recipes (``recipes/``, one file per pipeline) are built from: the inputs
(condition images, audio to generate to), the text contexts, one stage (noise, denoise with the
Denoiser and a sampler), and decoding video and audio. Every function reads the checked request
(``request.LTX2Request``) and never writes it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..components.decode import check_finite, decode_ltx2_frames, decode_or_stream, join_frames, ltx2_frame_chunks
from ..components.inputs import image_to_tensor
from ..components.latents import pack, randn, unpack
from ..parallel.layout import stage_layout
from ..parallel.text import on_main_rank
from ..results import step_hook
from . import samplers
from .denoise import (DEFAULT_NEGATIVE_PROMPT, DISTILLED_SIGMAS, Denoiser, GuidanceParams, KeyframeTokens,
                      guidance_passes, keyframe_marker, keyframe_positions, ltx2_sigmas, video_state)
from .diffusion_decode import diffusion_frames, diffusion_host_chunks
from .latent_io import LatentStart, latent_output, latent_start, start_noise


@dataclass
class StageOutput:
    frames: np.ndarray = None  # (F, H, W, 3) float32 in [0, 1]
    latents: torch.Tensor = None  # (1, C, F', H', W') normalized
    audio: np.ndarray | None = None  # (channels, samples) float32
    sample_rate: int | None = None
    timings: dict = field(default_factory=dict)
    audio_latents: torch.Tensor | None = None  # output_type="latent": (1, C, T, M) denormalized (latent_io.py)


# -- inputs ------------------------------------------------------------------------------------------

def uint8_image(image, arg: str) -> np.ndarray:
    """Any accepted image -> uint8 (H, W, 3), the form the H.264 round trip takes."""
    t = image_to_tensor(image, *_size_of(image, arg), arg)  # validates; (3, H, W) in [-1, 1]
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if not isinstance(image, (np.ndarray, torch.Tensor)):  # PIL
        return np.array(image)
    return ((t + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _size_of(image, arg: str) -> tuple[int, int]:
    if isinstance(image, np.ndarray) and image.ndim == 3:
        return image.shape[0], image.shape[1]
    if isinstance(image, torch.Tensor) and image.ndim == 3:
        return image.shape[1], image.shape[2]
    if hasattr(image, "size") and not isinstance(image, (np.ndarray, torch.Tensor)):
        w, h = image.size
        return max(h, 1), max(w, 1)
    return 1, 1  # image_to_tensor raises the error naming the type/shape


def fit_image(image: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> (3, height, width) in [-1, 1]: bilinear resize keeping the aspect ratio
    so the target is covered, then a centre crop (ltx-pipelines' resize_and_center_crop)."""
    t = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    src_h, src_w = t.shape[-2:]
    if (src_h, src_w) != (height, width):
        scale = max(height / src_h, width / src_w)
        new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
        t = F.interpolate(t, size=(new_h, new_w), mode="bilinear", align_corners=False)
        top, left = (new_h - height) // 2, (new_w - width) // 2
        t = t[:, :, top:top + height, left:left + width]
    return 2.0 * t[0] - 1.0


def fit_frames(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 (H, W, 3) image or (F, H, W, 3) video -> (3, F, height, width) in [-1, 1], each frame
    as ``fit_image``."""
    if frames.ndim == 3:
        return fit_image(frames, height, width)[:, None]
    return torch.stack([fit_image(f, height, width) for f in frames], dim=1)


def prepare_images(a) -> list[tuple[np.ndarray, int, float]]:
    """Each condition's image (uint8, converted by the argument check) after the H.264 round trip
    (once per call, at its own size); video conditions (F, H, W, 3) as they are (diffusers
    re-compresses single frames only)."""
    from ..media import compress_image
    return [(compress_image(img, a.image_crf) if a.image_crf and img.ndim == 3 else img, frame_index, strength)
            for img, frame_index, strength in a.images]


def encode_conditions(engine, images, height: int, width: int, fps: float, *, guiding: bool = False):
    """-> (frame-0 replacement (tokens (1, f*h*w, C), strength) or None, [KeyframeTokens]).
    ``images``: (uint8 image (H, W, 3) or video (F, H, W, 3), pixel frame_index, strength).
    ``guiding``: keyframe interpolation's guiding latents (ltx-core's VideoConditionByKeyframeIndex
    as of @400fd31): every condition is appended, frame 0 too, a single-frame one spans one pixel
    frame, and its noisy slot starts empty."""
    if not images:
        return None, []
    with engine.residency.use("vae_encoder", engine.vae.encoder):
        return _encode_conditions(engine, images, height, width, fps, guiding)


def _encode_conditions(engine, images, height: int, width: int, fps: float, guiding: bool = False):
    vae, dev = engine.vae, engine.device
    dtype = next(vae.parameters()).dtype
    first, keyframes = None, []
    for img, frame_index, strength in images:
        pixels = fit_frames(img, height, width)[None].to(dev, dtype)
        z = vae.encode_normalized(pixels).float()  # (1, C, f, h, w)
        tokens = pack(z)
        if frame_index == 0 and not guiding:
            first = (tokens, strength)
        else:
            pos = keyframe_positions(engine.transformer, z.shape[2], z.shape[3], z.shape[4], frame_index, fps, dev,
                                     narrow=guiding and img.ndim == 3)
            keyframes.append(KeyframeTokens(tokens, pos, strength, empty_slot=guiding))
    return first, keyframes


def encode_text(engine, a, need_negative: bool):
    te, tr = engine.text_encoder, engine.transformer
    dtype = next(tr.parameters()).dtype
    prompts = [a.prompt]
    if need_negative:
        neg = a.negative_prompt if a.negative_prompt is not None else DEFAULT_NEGATIVE_PROMPT
        prompts = [neg, a.prompt]  # one batch, as diffusers encodes [negative, positive]
    def encode():
        with engine.residency.use("text_encoder", te.model):
            return te.encode(prompts, a.max_sequence_length)
    v, au, mask = on_main_rank(getattr(engine, "parallel", None), encode)  # several ranks: rank 0's, broadcast
    v, au, mask = v.to(engine.device, dtype), au.to(engine.device, dtype), mask.to(engine.device)
    pos = tr.prepare_context(v[-1:], au[-1:], mask[-1:])
    negative = tr.prepare_context(v[:1], au[:1], mask[:1]) if need_negative else None
    return pos, negative


# -- one stage ---------------------------------------------------------------------------------------

def build_states(engine, gen, latent_shape, audio_frames: int, first, keyframes, *, video_init=None,
                 audio_init=None, audio_frozen=None, noise_scale: float = 1.0, video_mask=None, audio_mask=None,
                 start=None):
    """The stage's video and audio LatentStates and noise. Fresh stages draw diffusers' unpacked
    noise (video, then audio, then keyframe tokens); re-noised stages draw packed noise (video with
    keyframes, then audio), as both references do. ``video_mask`` (1, F*H*W, 1) / ``audio_mask``
    (1, T, 1): per-token denoise masks of the video's own tokens and of the audio (None: all 1;
    retake's temporal region)."""
    dev = engine.device
    _, c, f, h, w = latent_shape
    acfg = engine.audio_vae.config
    a_shape = (1, acfg.latent_channels, audio_frames, acfg.latent_mel_bins)
    n_key = sum(k.tokens.shape[1] for k in keyframes)
    if video_init is None:  # ``start``: given latents in place of the noise (latent_io.start_noise)
        video_noise, audio_noise = start_noise(start, gen, dev, latent_shape, a_shape)
        key_noise = randn((1, n_key, c), gen, dev) if n_key else None
        video_noise = torch.cat([video_noise, key_noise], 1) if n_key else video_noise
        clean = torch.zeros_like(video_noise)
    else:
        clean = torch.cat([pack(video_init.float()), *[k.tokens for k in keyframes]], 1)
        video_noise = randn(clean.shape, gen, dev)
        audio_noise = randn((1, audio_frames, a_shape[1] * a_shape[3]), gen, dev)
    mask = torch.ones(clean.shape[:2] + (1,), device=dev)
    if video_mask is not None:
        mask[:, :f * h * w] = video_mask
    if first is not None:
        tokens, strength = first
        clean[:, :tokens.shape[1]] = tokens
        mask[:, :tokens.shape[1]] = 1.0 - strength
    start = f * h * w
    for k in keyframes:
        clean[:, start:start + k.tokens.shape[1]] = k.tokens
        mask[:, start:start + k.tokens.shape[1]] = 1.0 - k.strength
        start += k.tokens.shape[1]
    video = video_state(clean, mask, video_noise, noise_scale)
    _empty_slots(video, keyframes, f * h * w, video_noise, noise_scale)
    if audio_frozen is not None:
        a_clean, a_mask = audio_frozen, torch.zeros(audio_frozen.shape[:2] + (1,), device=dev)
    else:
        a_clean = audio_init.float() if audio_init is not None else torch.zeros_like(audio_noise)
        a_mask = torch.ones(a_clean.shape[:2] + (1,), device=dev) if audio_mask is None else audio_mask.float()
    audio = video_state(a_clean, a_mask, audio_noise, noise_scale if audio_frozen is None else 0.0)
    return video, audio


def _empty_slots(video, keyframes, start: int, noise: torch.Tensor, noise_scale: float) -> None:
    """Keyframes whose noisy slot starts empty (``KeyframeTokens.empty_slot``): ltx-core's lerp
    noiser on a zero slot, clean x (1 - mask) + noise x mask x noise_scale."""
    for k in keyframes:
        end = start + k.tokens.shape[1]
        if k.empty_slot:
            m = video.mask[:, start:end]
            video.latent[:, start:end] = noise[:, start:end] * (m * noise_scale) + video.clean[:, start:end] * (1 - m)
        start = end


def run_stage(engine, a, gen, seed: int, *, stage: str, latent_shape, sigmas, video_params, audio_params, texts,
              first, keyframes, video_init=None, audio_init=None, audio_frozen=None, noise_scale=1.0,
              video_mask=None, audio_mask=None, attention_bias=None, start=None):
    """Noise, denoise and return (video latents (1, C, F, H, W), audio tokens (1, T, D)).
    ``video_mask`` / ``audio_mask``: per-token denoise masks (see ``build_states``).
    ``attention_bias``: (1, 1, Nv, Nv) on the video self-attention (None: unmasked)."""
    _, c, f, h, w = latent_shape
    tr, fps, dev = engine.transformer, float(a.fps), engine.device
    t_audio = a.audio_frames
    video, audio = build_states(engine, gen, latent_shape, t_audio, first, keyframes, video_init=video_init,
                                audio_init=audio_init, audio_frozen=audio_frozen, noise_scale=noise_scale,
                                video_mask=video_mask, audio_mask=audio_mask, start=start)
    vpos = tr.video_positions(1, f, h, w, fps, device=dev)
    if keyframes:
        vpos = torch.cat([vpos, *[k.positions for k in keyframes]], dim=2)
    rope = tr.rope(vpos, tr.audio_positions(1, t_audio, device=dev))
    engine.sync_executor()
    marker = keyframe_marker(tr.config, f, h, w, sum(k.tokens.shape[1] for k in keyframes), device=dev)
    # the stage's layout over the ranks (parallel/layout.py): one pass a step on several guidance
    # ranks runs sequence parallel over all of them instead
    with stage_layout(engine, guidance_passes(video_params, audio_params), video.mask.shape[1]) as layout:
        denoiser = Denoiser(tr, texts[0], texts[1], rope, video.mask, audio.mask, video_params, audio_params,
                            max_batch=a.guidance_batch, executor=engine.executor,
                            graph_variant=engine.graph_variant + layout.graph_tag, keyframes=marker,
                            attention_bias=attention_bias, group=layout.guidance_group,
                            cross_timestep=a.cross_timestep)
        video, audio = _sample(engine, a, seed, stage, denoiser, video, audio, sigmas, (f, h, w))
    n = f * h * w
    return unpack(video.latent[:, :n], f, h, w), audio.latent


def _sample(engine, a, seed: int, stage: str, denoiser, video, audio, sigmas, dims):
    """The stage's sampler loop -> the final (video, audio) states."""
    dev = engine.device
    hook = _hook(engine, a, stage, dims)
    sampler = a.sampler
    if stage != "denoise" and sampler == "euler-ancestral":
        sampler = "euler"  # the reference's stage 2 stays deterministic Euler
    try:
        if sampler == "euler":
            video, audio = samplers.euler(denoiser, video, audio, sigmas, hook)
        elif sampler == "euler-ancestral":
            # the reference: eta 1, its own generator seeded with seed + 10000 (apart from the initial
            # noise's), noise drawn in bf16 as the reference's bf16 states draw it
            ancestral = torch.Generator(device=dev).manual_seed(seed + 10000)
            video, audio = samplers.euler_ancestral(denoiser, video, audio, sigmas, hook, ancestral, eta=1.0)
        elif sampler == "gradient-estimation":
            video, audio = samplers.gradient_estimation(denoiser, video, audio, sigmas, hook)
        else:
            video, audio = samplers.res2s(denoiser, video, audio, sigmas, hook, seed=seed)
    except FloatingPointError as e:  # the samplers' non-finite check knows the step, not the stage
        raise FloatingPointError(f"{stage}: {e}") from None
    return video, audio


def _hook(engine, a, stage: str, dims):
    callback = step_hook(a.callback, stage)
    if callback is None:
        return None

    def hook(step, total, sigma, video, audio):
        callback(step, total, 1000.0 * sigma, unpack(video[:, :dims[0] * dims[1] * dims[2]], *dims))
    return hook


# -- what every recipe does before and after its stages -------------------------------------------------

@dataclass(frozen=True)
class Given:
    """What a call gives besides the prompt, prepared once before the first stage: each condition
    image after the H.264 round trip, and for audio-to-video the frozen audio latents and the
    waveform the result carries."""

    images: list
    audio_latents: torch.Tensor | None = None
    waveform: tuple[np.ndarray, int] | None = None
    start: LatentStart | None = None  # latents= / audio_latents=: the first stage's start (latent_io.py)

    def guidance(self, video: GuidanceParams, audio: GuidanceParams) -> tuple[GuidanceParams, GuidanceParams]:
        """A stage's guidance: given audio is not generated, so it is not guided (ltx-pipelines'
        audio-to-video)."""
        return video, (audio if self.audio_latents is None else GuidanceParams())


def prepare(engine, a) -> Given:
    images = prepare_images(a)
    latents, waveform = _audio_condition(engine, a)
    return Given(images, latents, waveform, latent_start(engine, a))


def first_stage(engine, a, given: Given, texts, gen, seed: int, height: int, width: int):
    """Stage 1 ("denoise") from noise at (height, width) with the request's schedule and stage-1
    guidance -> (video latents (1, C, F', H', W'), audio tokens)."""
    shape = (1, engine.transformer.config.in_channels, (a.num_frames - 1) // 8 + 1, height // 32, width // 32)
    sigmas = stage1_sigmas(a.recipe.distilled, a.sigmas, a.num_inference_steps, a.shift_tokens, shape)
    vp, ap = given.guidance(a.video_guidance, a.audio_guidance)
    first, keys = encode_conditions(engine, given.images, height, width, float(a.fps), guiding=a.recipe.guiding)
    return run_stage(engine, a, gen, seed, stage="denoise", latent_shape=shape, sigmas=sigmas, video_params=vp,
                     audio_params=ap, texts=texts, first=first, keyframes=keys, audio_frozen=given.audio_latents,
                     start=given.start)


def finish(engine, a, given: Given, video: torch.Tensor, audio: torch.Tensor, gen, timings: dict) -> StageOutput:
    """Decode audio and video (streamed to ``a.output`` when given) -> the recipe's output;
    output_type="latent": the latents in diffusers' form instead, nothing decoded."""
    out = StageOutput()
    if a.output_type == "latent":
        out.latents, out.audio_latents = latent_output(engine, video, audio)
        out.timings = timings
        return out
    t3 = time.perf_counter()
    # audio first (it draws no random numbers): a streamed mp4 needs it before the first frame
    if given.waveform is not None:
        out.audio, out.sample_rate = given.waveform
    else:
        out.audio = check_finite(decode_audio(engine, audio), "audio decode", "samples")
        out.sample_rate = engine.vocoder.config.output_sampling_rate
    if getattr(engine, "parallel", None) is not None and a.decoder != "diffusion":
        # every rank in one decode, its tiles spread over them (parallel/vae.py): rank 0 writes it whole
        from ..parallel.vae import ltx2_frames_parallel

        def whole():
            return ltx2_frames_parallel(engine.vae, video, decode_timestep=a.decode_timestep,
                                        decode_noise_scale=a.decode_noise_scale, generator=gen, tiling=a.vae_tiling)
        out.frames = decode_or_stream(whole, lambda: [whole()], a.output, a.fps, audio=out.audio,
                                      sample_rate=out.sample_rate)
    else:
        out.frames = _decode_or_stream(engine, a, video, gen, out)
    out.latents = video
    timings["decode"] = time.perf_counter() - t3
    if a.callback is not None:
        step_hook(a.callback, "decode")(1, 1, 0.0, video)
    out.timings = timings
    return out


def _decode_or_stream(engine, a, video: torch.Tensor, gen, out: StageOutput) -> np.ndarray:
    """One process's decode: whole, or streamed to ``a.output`` chunk by chunk."""
    return decode_or_stream(
        lambda: decode_video(engine, a, video, gen),
        lambda: diffusion_host_chunks(engine.diffusion_decoder, video, gen, engine.vae, a.vae_tiling)
        if a.decoder == "diffusion"
        else decode_ltx2_frames(engine.vae, video, decode_timestep=a.decode_timestep,
                                decode_noise_scale=a.decode_noise_scale, generator=gen, tiling=a.vae_tiling),
        a.output, a.fps, audio=out.audio, sample_rate=out.sample_rate)


def stage1_sigmas(distilled: bool, sigmas, num_inference_steps: int, shift_tokens: int | None,
                  shape) -> torch.Tensor:
    """Stage 1's sigmas: the given ones (a final 0 appended), the distilled ones (a distilled
    recipe's default), or the shifted
    LTX-2 schedule (shifted for ``shift_tokens``, else the video's own token count)."""
    if distilled and sigmas is None:
        return torch.tensor(DISTILLED_SIGMAS, dtype=torch.float32)
    tokens = shift_tokens if shift_tokens is not None else shape[2] * shape[3] * shape[4]
    if sigmas is not None:
        s = torch.tensor(sigmas, dtype=torch.float32)
        return s if float(s[-1]) == 0.0 else torch.cat([s, torch.zeros(1)])
    return ltx2_sigmas(num_inference_steps, tokens)


def _audio_condition(engine, a):
    """(the frozen audio latents, (waveform, rate)) of an audio-to-video call; (None, None) without
    audio=. A waveform arrives from the argument check already cut to [audio_start, audio_start +
    audio_max_duration); a file is read so. That audio is what the result carries, as ltx-pipelines'
    a2vid_two_stage returns its decode_audio_from_file output."""
    if a.audio is None:
        return None, None
    from ..media import read_audio
    from .audio_input import load_audio_condition
    audio, rate = a.audio, a.audio_sample_rate
    if isinstance(audio, (str, bytes)) or hasattr(audio, "__fspath__"):
        audio, rate = read_audio(audio, start=a.audio_start, duration=a.audio_max_duration)
    tokens = load_audio_condition(engine.audio_vae, audio, num_frames=a.num_frames, frame_rate=float(a.fps),
                                  sample_rate=rate)
    return tokens.to(engine.device, torch.float32), (np.asarray(audio, dtype=np.float32), int(rate))


def decode_video(engine, a, latents: torch.Tensor, gen) -> torch.Tensor:
    if a.decoder == "diffusion":  # LTX-2.5's diffusion decoder (diffusion_decode.py)
        return diffusion_frames(engine.diffusion_decoder, latents, gen, engine.vae, a.vae_tiling)
    return join_frames(ltx2_frame_chunks(engine.vae, latents, decode_timestep=a.decode_timestep,
                                         decode_noise_scale=a.decode_noise_scale, generator=gen,
                                         tiling=a.vae_tiling))


def decode_audio(engine, tokens: torch.Tensor) -> np.ndarray:
    return decode_waveform(engine, tokens).cpu().numpy()


def decode_waveform(engine, tokens: torch.Tensor) -> torch.Tensor:
    """``decode_audio`` up to the host copy: what the memory plan traces (fake tensors have no numpy)."""
    avae = engine.audio_vae
    dtype = next(avae.parameters()).dtype
    z = avae.unpack(avae.denormalize(tokens.float())).to(dtype)
    mel = avae.decode(z)
    wave = engine.vocoder(mel.to(next(engine.vocoder.parameters()).dtype))
    return wave[0].float()

