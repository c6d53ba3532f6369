"""The Engine for LTX-2 checkpoints (video and audio): ``Engine.from_pretrained`` returns one when
the path holds an LTX-2 bundle or diffusers folder.

    engine = Engine.from_pretrained("ltx-2-19b-dev.safetensors", text_encoder="gemma-3-12b-it",
                                    latent_upsampler="ltx-2-spatial-upscaler-x2-1.0.safetensors",
                                    distilled_lora="ltx-2-19b-distilled-lora-384.safetensors")
    result = engine.generate("a dog barks at the sea", height=1024, width=1536, num_frames=121, seed=10)
    result.save("out.mp4")  # H.264 + AAC

Pipelines (``pipeline=``), following ltx-pipelines 1.0.0:
* ``"two-stage"`` (default when a latent upsampler is loaded): stage 1 at half the size with
  multimodal guidance, latent upsampling x2, stage 2 on the distilled sigmas with the distilled
  LoRA fused (when given) and no guidance, after re-noising video and audio at the first sigma.
* ``"distilled"``: the same with the distilled schedule (8 sigmas) and no guidance in stage 1.
* ``"one-stage"``: one stage at the requested size.
* ``"text-to-audio"``: audio alone (Lightricks' t2a_one_stage), on an engine loaded with
  ``modalities=("audio",)``, which holds no video weights; the result has audio and no frames.
* ``"keyframe-interpolation"``: ltx-pipelines' keyframe_interpolation, the two-stage recipe with
  every condition image (frame 0 too) appended as guiding latents, re-encoded per stage.
* ``"two-stage-hq"``: ltx-pipelines' ti2vid_two_stages_hq, the two-stage recipe with its preset:
  res_2s in both stages, 15 steps, guidance without STG, the distilled LoRA at 0.25 in stage 1
  and 0.5 in stage 2 (recipes/two_stage_hq.py).
* ``"retake"``: regenerates [start_time, end_time) seconds of ``video=`` and keeps the rest
  (recipes/retake.py).
* ``"ic-lora"``: ltx-pipelines' ic_lora, video-to-video with an IC-LoRA adapter: stage 1 with the
  call's LoRAs and ``reference_conditions`` appended as clean tokens (optionally an attention
  strength / mask as a bias), stage 2 without them (recipes/ic_lora.py).
The checks are in ``request.py``, the stages in ``stages.py``, the sampling pieces in ``denoise.py``
and ``samplers.py``; where ltx-pipelines and diffusers differ, the
README lists what we do.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..checks import make_generator
from ..components.inputs import Condition
from ..engine import Engine
from ..loading import CheckpointError, load_latent_upsampler
from ..loading.ltx2 import check_modalities, is_ltx2, load_ltx2
from ..loading.ltx2_gemma import check_text_encoder
from ..loading.ltx2_split import is_split_folder, load_gemma_file, load_split_folder
from ..loading.ltx2_upsamplers import pick_split_upscaler, spatial_upsampler_config
from ..models.ltx2_text import GemmaTextEncoder
from ..results import GenerationResult
from .denoise import GuidanceParams
from .diffusion_decode import load_optional_decoder
from .plan import plan_ltx2
from .recipes import run_generation
from .releases import release_of
from .request import DIFFUSERS_GUIDANCE, PIPELINES_LTX2, SAMPLERS, LTX2Request, LTX2TwoStage, build_request

# the request's names stay importable from here, where they were first documented
__all__ = ["DIFFUSERS_GUIDANCE", "LTX2Engine", "LTX2TwoStage", "PIPELINES_LTX2", "SAMPLERS"]


class LTX2Engine(Engine, family="ltx-2", detect=is_ltx2):
    """LTX-2 models on one device. ``generate`` calls are serialized by a lock."""

    def __init__(self, checkpoint, text_encoder: GemmaTextEncoder, *, latent_upsampler=None, distilled_lora=None,
                 device=None, dtype=torch.bfloat16, source: str = "", executor: str = "auto",
                 offload: Sequence[str] = ()):
        self.transformer = checkpoint.transformer.eval().requires_grad_(False)
        self.connectors = checkpoint.connectors
        # an audio-only checkpoint (modalities=("audio",)) has no video VAE and an audio-only transformer
        self.vae = checkpoint.vae.eval().requires_grad_(False) if checkpoint.vae is not None else None
        self.modalities = getattr(self.transformer, "modalities", ("video", "audio"))
        self.audio_vae = checkpoint.audio_vae.eval().requires_grad_(False)
        self.vocoder = checkpoint.vocoder.eval().requires_grad_(False)
        self.text_encoder = text_encoder
        self.latent_upsampler = latent_upsampler.eval().requires_grad_(False) if latent_upsampler else None
        self.diffusion_decoder = getattr(checkpoint, "diffusion_decoder", None)  # LTX-2.5's, for decoder="diffusion"
        self.distilled_lora = distilled_lora
        self.device = torch.device(device) if device is not None else next(self.transformer.parameters()).device
        self.dtype = dtype
        self.source = source
        self.model_version = getattr(checkpoint, "model_version", None)
        self.release = release_of(self.transformer.config, self.model_version)  # 2.0, 2.3 or 2.5
        self._setup_runtime(executor, offload)
        cfg = self.transformer.config
        if self.vae is not None and self.vae.config.latent_channels != cfg.in_channels:
            raise CheckpointError(f"{source}: VAE latent_channels {self.vae.config.latent_channels} != transformer "
                                  f"in_channels {cfg.in_channels}")

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path, device, dtype, ops, *, text_encoder=None, latent_upsampler=None,
             scheduler_config: dict | None = None, distilled_lora=None, quantization: str | None = None,
             fp8_lora: str = "branch", executor: str = "auto", offload: Sequence[str] = (),
             modalities: Sequence[str] = ("video", "audio"), gguf: Path | None = None) -> "LTX2Engine":
        """An LTX-2 engine from a local bundle or diffusers folder (see ``Engine.load``).
        modalities=("audio",): the audio stream alone (pipeline="text-to-audio" only)."""
        if scheduler_config is not None:
            raise ValueError("scheduler_config: LTX-2 engines take their schedule from generate(sigmas=..., "
                             "shift_tokens=...), got a scheduler config")
        modalities = check_modalities(modalities)
        if modalities == ("audio",):
            _check_audio_only_options(latent_upsampler, distilled_lora, offload)
        else:  # its kind from its config, before any weight is read
            latent_upsampler = _spatial_upsampler_path(path, latent_upsampler)
        check_text_encoder(path, text_encoder)  # the Gemma the header names, before any weight is read
        load = load_split_folder if is_split_folder(path) else load_ltx2  # LTX-2.5's per-component files
        if gguf is not None:  # the transformer from the GGUF, the rest from path (Engine.from_pretrained)
            from ..loading.gguf_transformer import load_ltx2_gguf
            ckpt = load_ltx2_gguf(gguf, path, device, dtype, ops, modalities)
        else:
            ckpt = load(path, device=device, dtype=dtype, ops=ops, quantization=quantization, modalities=modalities)
        te_device = "cpu" if "text_encoder" in offload else device  # never on the device while idle
        if isinstance(text_encoder, GemmaTextEncoder):
            te = text_encoder.attach(ckpt.connectors) if text_encoder.connectors is None else text_encoder
        elif text_encoder is not None and Path(text_encoder).is_file():  # a text encoder file (LTX-2.5's)
            te = load_gemma_file(text_encoder, device=te_device, dtype=dtype, connectors=ckpt.connectors)
        elif "text_encoder" in ckpt.extras.get("split_files", {}) and text_encoder is None:
            te = load_gemma_file(ckpt.extras["split_files"]["text_encoder"], device=te_device, dtype=dtype,
                                 connectors=ckpt.connectors)
        elif text_encoder is not None:
            te = GemmaTextEncoder.from_folder(text_encoder, device=te_device, dtype=dtype, connectors=ckpt.connectors)
        elif path.is_dir() and (path / "text_encoder").is_dir():
            te = GemmaTextEncoder.from_folder(path / "text_encoder", path / "tokenizer", device=te_device,
                                              dtype=dtype, connectors=ckpt.connectors)
        else:
            raise ValueError(f"text_encoder: {path} holds no Gemma 3 text encoder; pass text_encoder=PATH (the "
                             f"gemma-3-12b-it folder with its tokenizer)")
        if latent_upsampler is None and path.is_dir() and (path / "latent_upsampler").is_dir() and ckpt.vae is not None:
            latent_upsampler = path / "latent_upsampler"
        ups = load_latent_upsampler(latent_upsampler, device=device, dtype=dtype, ops=ops,
                                    family="ltx-2") if latent_upsampler else None
        lora = None
        if distilled_lora is not None:
            from ..loading.lora import LoraWeights
            lora = distilled_lora if isinstance(distilled_lora, LoraWeights) else LoraWeights.load(distilled_lora)
        if ckpt.vae is not None:  # an audio-only engine decodes no video
            ckpt.diffusion_decoder = load_optional_decoder(path, device, dtype, ops, ckpt.vae)
        engine = cls(ckpt, te, latent_upsampler=ups, distilled_lora=lora, device=device, dtype=dtype,
                     source=str(path), executor=executor, offload=offload)
        engine.fp8_lora = fp8_lora
        if lora is not None:
            engine.lora_manager().check(lora)  # a LoRA for another model fails at load, not in stage 2
        return engine

    def _lora_modules(self) -> dict:
        return {"transformer": self.transformer, "connectors": self.connectors}

    # ---- generation ----------------------------------------------------------------------------
    def generate(self, prompt: str, negative_prompt: str | None = None, image=None,
                 conditions: Sequence[Condition] | None = None, audio=None, *, height: int = 512, width: int = 768,
                 num_frames: int = 121, frame_rate=24, num_inference_steps: int | None = None,
                 sigmas: Sequence[float] | None = None, video_guidance: GuidanceParams | None = None,
                 audio_guidance: GuidanceParams | None = None, guidance_scale: float | None = None,
                 stg_scale: float | None = None, modality_scale: float | None = None,
                 guidance_rescale: float | None = None, audio_guidance_scale: float | None = None,
                 audio_stg_scale: float | None = None, audio_modality_scale: float | None = None,
                 audio_guidance_rescale: float | None = None,
                 spatio_temporal_guidance_blocks: Sequence[int] | None = None, shift_tokens: int | None = 4096,
                 pipeline: str | None = None, two_stage: LTX2TwoStage | None = None, sampler: str | None = None,
                 image_crf: int | None = None, audio_start: float = 0.0, audio_sample_rate: int | None = None,
                 decode_timestep: float | None = None, decode_noise_scale: float | None = None,
                 seed: int | None = None, generator: torch.Generator | None = None, callback: Callable | None = None,
                 max_sequence_length: int = 1024, guidance_batch: int | None = None, vae_tiling=None,
                 output=None, loras: dict[str, float] | None = None, video=None, start_time: float | None = None,
                 end_time: float | None = None, regenerate_video: bool | None = None,
                 regenerate_audio: bool | None = None, reference_conditions=None,
                 reference_downscale_factor: int | None = None, conditioning_attention_strength: float | None = None,
                 conditioning_attention_mask=None, latents=None, audio_latents=None, noise_scale: float | None = None,
                 output_type: str | None = None,
                 audio_max_duration: float | None = None, decoder: str | None = None,
                 reference_temporal_scale_factor: int | None = None, cross_timestep: str | None = None):
        """Generate a video with its audio track. See the module docstring for ``pipeline``.

        Defaults that change between releases follow the checkpoint's (``engine.release``, see
        releases.py): num_inference_steps 40 / 30 / 30 for 2.0 / 2.3 / 2.5, the default guidance's
        STG block 29 / 28 / 28, image_crf 33 / 33 / 18, and the sampler: "euler", except 2.5's
        pipeline="distilled", whose stage 1 is "euler-ancestral" (eta 1, noise from seed + 10000;
        stage 2 stays Euler), and cross_timestep, what drives the audio<->video adaLN tables (one of
        models/ltx2_transformer.CROSS_TIMESTEPS): "sigma" for 2.0 (ltx-core 1.0.0 and diffusers),
        "mixed" for 2.3 / 2.5 (Lightricks' reference since ltx-core 1.1.4; diffusers' is "sigma").
        The conventions differ only on conditioned tokens (images, keyframes, retake, references).
        video_guidance / audio_guidance: stage-1 GuidanceParams (default ltx-pipelines' values for
        the release; none for "distilled"). The same guidance may be spelled with diffusers'
        LTX2Pipeline keywords instead (see ``DIFFUSERS_GUIDANCE``): guidance_scale = cfg, stg_scale
        = stg, modality_scale = modality, guidance_rescale = rescale for video, the ``audio_*``
        ones for audio, spatio_temporal_guidance_blocks = stg_blocks of both; a keyword left None
        keeps that field's default (also for ``audio_*``, where diffusers copies the video value).
        One modality's guidance takes one spelling: a GuidanceParams and a keyword for the same
        modality is an error. image: conditions frame 0 (replaces the first latent frame);
        conditions: Condition(image=..., frame_index=k, strength=s) -- frame 0 replaces the first
        latent frame, k > 0 appends keyframe tokens at pixel frame k; Condition(video=frames, ...)
        the same with a clip (cut to fit, then to 8j+1 frames; diffusers' LTX2ConditionPipeline
        latent index L > 0 is k = 8 (L - 1) + 1, see ltx2/conditions.py). Images are round-tripped
        through H.264 at ``image_crf`` (0: off) before encoding, as the reference does.
        audio: a file path or a (channels, samples) float waveform with ``audio_sample_rate`` (a
        rate AAC can carry: the result's mp4 carries it); ``audio_start`` seconds of either are
        skipped, and at most ``audio_max_duration`` seconds from there are used (None: to the end;
        less than the video is an error), as ltx-pipelines' a2vid_two_stage reads its file. The video
        is generated to that audio (audio latents frozen) and the result carries it unchanged.
        Without a distilled LoRA, pipeline="two-stage" (and "two-stage-hq") warns once per engine
        that stage 2 refines with the base weights (LTX2TwoStage(lora_strength=0) says that is
        meant, e.g. with a distilled checkpoint).
        shift_tokens: the token count that sets the schedule's shift (ltx-pipelines: 4096; None: the
        video's own token count, as diffusers' LTX2Pipeline). callback(stage, step, total,
        timestep=1000 x sigma, latents=video latents (1, C, F', H', W')) after every step (stages
        "denoise", "refine") and once at "decode"; returning STOP cancels (GenerationCancelled).
        A non-finite value (nan/inf) in the latents or the decoded video or audio raises
        FloatingPointError naming the stage ("denoise", "refine" or "decode").
        output: an mp4 path written (video + audio) while the VAE decodes, as in Engine.generate.
        loras: {adapter name: strength} of loaded adapters for this call only (None: the active
        adapters; {}: none); both stages use them, stage 2 with the distilled LoRA added.
        Recipe arguments (each read by the pipelines named in ``recipes.RECIPES``, refused by the
        others): video, start_time, end_time, regenerate_video, regenerate_audio (retake);
        reference_conditions, reference_downscale_factor, conditioning_attention_strength,
        conditioning_attention_mask, reference_temporal_scale_factor (IC-LoRA; None: the LoRA files'
        metadata, default 1: S > 1 keeps reference frame 0 and every S-th frame after it, timed at fps / S
        and shifted to end with the target).
        Latent in / out (diffusers' LTX2Pipeline names and form, ``latent_io.py``):
        output_type="latent" skips decoding and returns result.latents (1, C, F', H', W') and
        result.audio_latents (1, C, T, M), unpacked and denormalized (frames, audio None; no
        "decode" callback); latents= / audio_latents= in that form are the first stage's noisy
        start (two-stage pipelines: stage 1's, at half the size), mixed with noise_scale x noise
        (default 0); retake, IC-LoRA and text-to-audio refuse them (``latent_io.LATENT_START``).
        decoder="diffusion": the video decoded by LTX-2.5's diffusion video decoder (loaded from a
        diffusers folder's diffusion_decoder/, diffusers' LTX2VideoDiffusionDecodePipeline on these
        latents); None / "conv": the VAE's conv decoder.
        Every argument is checked before any model work.
        """
        return self._run(self._request(locals()))

    def _request(self, args: dict[str, Any]) -> LTX2Request:
        return build_request(self, args)

    def _plan(self, request: LTX2Request):
        return plan_ltx2(self, request)

    def _video_tokens(self, a: LTX2Request) -> list[int]:
        """Video tokens of each stage (sequence parallel's check): stage 1 at its size, stage 2 at the
        full size; none for text-to-audio."""
        if a.recipe.audio_only:
            return []
        from .recipes.two_stage import stage1_size
        frames = (a.num_frames - 1) // 8 + 1
        sizes = [(a.height, a.width)] if a.recipe.stages == 1 else [stage1_size(self, a.height, a.width),
                                                                    (a.height, a.width)]
        return [frames * (h // 32) * (w // 32) for h, w in sizes]

    def _generate(self, a: LTX2Request) -> GenerationResult:
        """The checked call's run: the pipeline's recipe (ltx2/recipes/)."""
        self._warn_base_weights_refine(a)
        t0 = time.perf_counter()
        gen, seed = make_generator(a.generator, a.seed)
        out = run_generation(self, a, gen, seed if seed is not None else gen.initial_seed())
        if a.recipe.audio_only:  # text-to-audio: the waveform and its latents (1, C, T, M), no frames
            result = GenerationResult(frames=None, video=None, latents=out.latents.float().cpu(), fps=a.fps,
                                      audio=out.audio, sample_rate=out.sample_rate, seed=seed, timings=out.timings)
        elif a.output_type == "latent":
            result = GenerationResult.from_latents(out.latents, out.audio_latents, a.fps, seed=seed,
                                                   timings=out.timings)
        else:
            result = GenerationResult.from_frames(out.frames, out.latents, a.fps, seed=seed, timings=out.timings,
                                                  audio=out.audio, sample_rate=out.sample_rate)
        out.timings["total"] = time.perf_counter() - t0
        return result

    def _warn_base_weights_refine(self, a: LTX2Request) -> None:
        """ltx-pipelines always refines with the distilled LoRA fused; base weights still work, so
        this warns (once per engine) rather than refuses."""
        if (a.pipeline not in ("two-stage", "two-stage-hq", "keyframe-interpolation") or self.distilled_lora is not None
                or a.two_stage.lora_strength == 0
                or getattr(self, "_warned_base_refine", False)):
            return
        self._warned_base_refine = True
        # stacklevel: the caller of generate (via _run, _generate)
        warnings.warn(f"LTX-2 pipeline={a.pipeline!r} without a distilled LoRA: stage 2 refines with the base weights "
                      "on the distilled sigmas, which ltx-pipelines never does (its stage 2 fuses "
                      "ltx-2-19b-distilled-lora-384). Load it with Engine.from_pretrained(..., distilled_lora=PATH), "
                      "or pass two_stage=LTX2TwoStage(lora_strength=0) if base weights are meant (e.g. a distilled "
                      "checkpoint). Warned once per engine.", UserWarning, stacklevel=5)


def _spatial_upsampler_path(path: Path, given):
    """``given`` (a temporal upscaler refused by name), else the only spatial upscaler file of an
    LTX-2.5 per-component folder (several refused with their kinds), else None (a diffusers folder's
    own ``latent_upsampler/`` is taken after the checkpoint loads)."""
    if given is not None:
        spatial_upsampler_config(given)
        return given
    return pick_split_upscaler(path) if is_split_folder(path) else None


def _check_audio_only_options(latent_upsampler, distilled_lora, offload) -> None:
    """An audio-only engine has no video stream: the options that serve the video refuse it."""
    for name, value in (("latent_upsampler", latent_upsampler), ("distilled_lora", distilled_lora)):
        if value is not None:
            raise ValueError(f"{name}: an audio-only engine (modalities=('audio',)) runs pipeline='text-to-audio', "
                             f"which does not use it, got {name}={value!r}")
    if "vae_encoder" in offload or "latent_upsampler" in offload:
        raise ValueError(f"offload: an audio-only engine has no video VAE or latent upsampler, got offload={offload!r}")
