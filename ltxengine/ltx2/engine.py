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
The sampling pieces are in ``pipelines/ltx2.py``; where ltx-pipelines and diffusers differ, the
README lists what we do.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..checks import (MAX_NUM_FRAMES, MAX_SEQUENCE_LENGTH, MAX_SIDE, MAX_STEPS, call_args, check_conditions,
                     check_decreasing, check_float, check_int, check_random, make_generator)
from ..engine import Engine
from ..loading import CheckpointError, load_latent_upsampler
from ..loading.ltx2 import is_ltx2, load_ltx2
from .plan import plan_ltx2
from .stages import run_generation, stage1_sigmas, uint8_image
from ..media import frame_rate_fraction
from ..models.ltx2_text import GemmaTextEncoder
from ..models.video_vae import TilingConfig
from ..components.inputs import Condition
from .denoise import AUDIO_GUIDANCE, NO_GUIDANCE, STAGE2_SIGMAS, VIDEO_GUIDANCE, GuidanceParams, audio_frames
from .samplers import check_schedule
from ..results import GenerationResult

__all__ = ["LTX2Engine", "LTX2TwoStage", "PIPELINES_LTX2", "SAMPLERS", "DIFFUSERS_GUIDANCE", "audio_frames"]

PIPELINES_LTX2 = ("two-stage", "distilled", "one-stage")
SAMPLERS = ("euler", "gradient-estimation", "res2s")


@dataclass(frozen=True)
class LTX2TwoStage:
    """Stage 2 of the two-stage pipelines. Defaults are ltx-pipelines': the 3 distilled sigmas,
    re-noising at the first of them, no guidance, the engine's distilled LoRA at strength 1."""

    sigmas: Sequence[float] = STAGE2_SIGMAS
    noise_scale: float | None = None  # None: sigmas[0]
    video_guidance: GuidanceParams = NO_GUIDANCE
    audio_guidance: GuidanceParams = NO_GUIDANCE
    lora_strength: float = 1.0
    adain_factor: float = 0.0
    tone_map_compression_ratio: float = 0.0


class LTX2Engine(Engine, family="ltx-2", detect=is_ltx2):
    """LTX-2 models on one device. ``generate`` calls are serialized by a lock."""

    def __init__(self, checkpoint, text_encoder: GemmaTextEncoder, *, latent_upsampler=None, distilled_lora=None,
                 device=None, dtype=torch.bfloat16, source: str = "", executor: str = "auto",
                 offload: Sequence[str] = ()):
        self.transformer = checkpoint.transformer.eval().requires_grad_(False)
        self.connectors = checkpoint.connectors
        self.vae = checkpoint.vae.eval().requires_grad_(False)
        self.audio_vae = checkpoint.audio_vae.eval().requires_grad_(False)
        self.vocoder = checkpoint.vocoder.eval().requires_grad_(False)
        self.text_encoder = text_encoder
        self.latent_upsampler = latent_upsampler.eval().requires_grad_(False) if latent_upsampler else None
        self.distilled_lora = distilled_lora
        self.device = torch.device(device) if device is not None else next(self.transformer.parameters()).device
        self.dtype = dtype
        self.source = source
        self.family = "ltx-2"
        self.model_version = getattr(checkpoint, "model_version", None)
        self._lock = threading.Lock()
        self._lora = None
        self.fp8_lora = "branch"
        self._setup_runtime(executor, offload)
        cfg = self.transformer.config
        if self.vae.config.latent_channels != cfg.in_channels:
            raise CheckpointError(f"{source}: VAE latent_channels {self.vae.config.latent_channels} != transformer "
                                  f"in_channels {cfg.in_channels}")

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path, device, dtype, ops, *, text_encoder=None, latent_upsampler=None,
             scheduler_config: dict | None = None, distilled_lora=None, quantization: str | None = None,
             fp8_lora: str = "branch", executor: str = "auto", offload: Sequence[str] = ()) -> "LTX2Engine":
        """An LTX-2 engine from a local bundle or diffusers folder (see ``Engine.load``)."""
        if scheduler_config is not None:
            raise ValueError("scheduler_config: LTX-2 engines take their schedule from generate(sigmas=..., "
                             "shift_tokens=...), got a scheduler config")
        ckpt = load_ltx2(path, device=device, dtype=dtype, ops=ops, quantization=quantization)
        te_device = "cpu" if "text_encoder" in offload else device  # never on the device while idle
        if isinstance(text_encoder, GemmaTextEncoder):
            te = text_encoder.attach(ckpt.connectors) if text_encoder.connectors is None else text_encoder
        elif text_encoder is not None:
            te = GemmaTextEncoder.from_folder(text_encoder, device=te_device, dtype=dtype, connectors=ckpt.connectors)
        elif path.is_dir() and (path / "text_encoder").is_dir():
            te = GemmaTextEncoder.from_folder(path / "text_encoder", path / "tokenizer", device=te_device,
                                              dtype=dtype, connectors=ckpt.connectors)
        else:
            raise ValueError(f"text_encoder: {path} holds no Gemma 3 text encoder; pass text_encoder=PATH (the "
                             f"gemma-3-12b-it folder with its tokenizer)")
        if latent_upsampler is None and path.is_dir() and (path / "latent_upsampler").is_dir():
            latent_upsampler = path / "latent_upsampler"
        ups = load_latent_upsampler(latent_upsampler, device=device, dtype=dtype, ops=ops,
                                    family="ltx-2") if latent_upsampler else None
        lora = None
        if distilled_lora is not None:
            from ..loading.lora import LoraWeights
            lora = distilled_lora if isinstance(distilled_lora, LoraWeights) else LoraWeights.load(distilled_lora)
        engine = cls(ckpt, te, latent_upsampler=ups, distilled_lora=lora, device=device, dtype=dtype,
                     source=str(path), executor=executor, offload=offload)
        engine.fp8_lora = fp8_lora
        if lora is not None:
            engine.lora_manager().check(lora)  # a LoRA for another model fails at load, not in stage 2
        return engine

    def lora_manager(self):
        """The LoraSet that fuses LoRAs into the transformer and connectors (made on first use)."""
        if self._lora is None:
            from ..loading.lora import LoraSet
            self._lora = LoraSet({"transformer": self.transformer, "connectors": self.connectors},
                                 fp8_lora=self.fp8_lora)
        return self._lora

    @property
    def graph_variant(self) -> tuple:
        """What captured graphs depend on besides ``graph_state``: the LoRA fused now, if any."""
        return self._lora.graph_variant if self._lora is not None else ()

    # ---- generation ----------------------------------------------------------------------------
    def generate(self, prompt: str, negative_prompt: str | None = None, image=None,
                 conditions: Sequence[Condition] | None = None, audio=None, *, height: int = 512, width: int = 768,
                 num_frames: int = 121, frame_rate=24, num_inference_steps: int = 40,
                 sigmas: Sequence[float] | None = None, video_guidance: GuidanceParams | None = None,
                 audio_guidance: GuidanceParams | None = None, guidance_scale: float | None = None,
                 stg_scale: float | None = None, modality_scale: float | None = None,
                 guidance_rescale: float | None = None, audio_guidance_scale: float | None = None,
                 audio_stg_scale: float | None = None, audio_modality_scale: float | None = None,
                 audio_guidance_rescale: float | None = None,
                 spatio_temporal_guidance_blocks: Sequence[int] | None = None, shift_tokens: int | None = 4096,
                 pipeline: str | None = None, two_stage: LTX2TwoStage | None = None, sampler: str = "euler",
                 image_crf: int = 33, audio_start: float = 0.0, audio_sample_rate: int | None = None,
                 decode_timestep: float | None = None, decode_noise_scale: float | None = None,
                 seed: int | None = None, generator: torch.Generator | None = None, callback: Callable | None = None,
                 max_sequence_length: int = 1024, guidance_batch: int | None = None, vae_tiling=None,
                 output=None):
        """Generate a video with its audio track. See the module docstring for ``pipeline``.

        video_guidance / audio_guidance: stage-1 GuidanceParams (default ltx-pipelines' LTX-2.0
        values; none for "distilled"). The same guidance may be spelled with diffusers'
        LTX2Pipeline keywords instead (see ``DIFFUSERS_GUIDANCE``): guidance_scale = cfg, stg_scale
        = stg, modality_scale = modality, guidance_rescale = rescale for video, the ``audio_*``
        ones for audio, spatio_temporal_guidance_blocks = stg_blocks of both; a keyword left None
        keeps that field's default (also for ``audio_*``, where diffusers copies the video value).
        One modality's guidance takes one spelling: a GuidanceParams and a keyword for the same
        modality is an error. image: conditions frame 0 (replaces the first latent frame);
        conditions: Condition(image=..., frame_index=k, strength=s) -- frame 0 replaces the first
        latent frame, k > 0 appends keyframe tokens at pixel frame k. Images are round-tripped
        through H.264 at ``image_crf`` (0: off) before encoding, as the reference does.
        audio: a file path or a (channels, samples) float waveform with ``audio_sample_rate`` (a
        rate AAC can carry: the result's mp4 carries it); ``audio_start`` seconds of either are
        skipped. The video is generated to the audio from there (audio latents frozen) and the
        result carries that audio. Without a distilled LoRA, pipeline="two-stage" warns once per
        engine that stage 2 refines with the base weights (LTX2TwoStage(lora_strength=0) says
        that is meant, e.g. with a distilled checkpoint).
        shift_tokens: the token count that sets the schedule's shift (ltx-pipelines: 4096; None: the
        video's own token count, as diffusers' LTX2Pipeline). callback(stage, step, total,
        timestep=1000 x sigma, latents=video latents (1, C, F', H', W')) after every step (stages
        "denoise", "refine") and once at "decode"; returning STOP cancels (GenerationCancelled).
        A non-finite value (nan/inf) in the latents or the decoded video or audio raises
        FloatingPointError naming the stage ("denoise", "refine" or "decode").
        output: an mp4 path written (video + audio) while the VAE decodes, as in Engine.generate.
        Every argument is checked before any model work.
        """
        args = self._check_ltx2(locals())
        with self._lock, torch.inference_mode():
            self._check_memory(args)
            self._warn_base_weights_refine(args)
            return self._generate_ltx2(args)

    def _check_args(self, a: dict[str, Any]) -> dict[str, Any]:
        return self._check_ltx2(a)  # Engine.plan binds generate()'s arguments and checks them here

    def _plan(self, args: dict[str, Any]):
        return plan_ltx2(self, args)

    def _warn_base_weights_refine(self, a: dict[str, Any]) -> None:
        """ltx-pipelines always refines with the distilled LoRA fused; base weights still work, so
        this warns (once per engine) rather than refuses."""
        if (a["pipeline"] != "two-stage" or self.distilled_lora is not None or a["two_stage"].lora_strength == 0
                or getattr(self, "_warned_base_refine", False)):
            return
        self._warned_base_refine = True
        warnings.warn("LTX-2 pipeline='two-stage' without a distilled LoRA: stage 2 refines with the base weights "
                      "on the distilled sigmas, which ltx-pipelines never does (its stage 2 fuses "
                      "ltx-2-19b-distilled-lora-384). Load it with Engine.from_pretrained(..., distilled_lora=PATH), "
                      "or pass two_stage=LTX2TwoStage(lora_strength=0) if base weights are meant (e.g. a distilled "
                      "checkpoint). Warned once per engine.", UserWarning, stacklevel=3)

    # ---- argument checks -------------------------------------------------------------------------
    def _check_ltx2(self, a: dict[str, Any]) -> dict[str, Any]:
        a = call_args(a)
        mode = self._check_pipeline(a)
        n = self._check_video_size(a, mode)
        self._check_guidance(a, mode == "distilled")
        if a["sampler"] not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {a['sampler']!r}")
        self._check_stage1_schedule(a, mode)
        if mode != "one-stage":
            a["two_stage"] = self._check_two_stage(a["two_stage"], a)
        crf = check_int("image_crf", a["image_crf"], 0)
        if crf > 51:
            raise ValueError(f"image_crf must be in [0, 51] (H.264 CRF; 0 = no re-compression), got {crf}")
        check_int("max_sequence_length", a["max_sequence_length"], 1, MAX_SEQUENCE_LENGTH, "MAX_SEQUENCE_LENGTH")
        if a["guidance_batch"] is not None:
            check_int("guidance_batch", a["guidance_batch"], 1)
        for k in ("decode_timestep", "decode_noise_scale"):
            if a[k] is not None:
                check_float(k, a[k], 0.0, 1.0)
        check_random(a["seed"], a["generator"])
        if a["callback"] is not None and not callable(a["callback"]):
            raise ValueError(f"callback must be callable (stage, step, total, timestep=, latents=), "
                             f"got {a['callback']!r}")
        self._check_audio_input(a, n)
        a["conditions"] = self._check_conditions_ltx2(a["image"], a["conditions"], n)
        a["_images"] = _condition_images(a)
        return a

    def _check_pipeline(self, a: dict[str, Any]) -> str:
        mode = a["pipeline"] or ("two-stage" if self.latent_upsampler is not None else "one-stage")
        if mode not in PIPELINES_LTX2:
            raise ValueError(f"pipeline must be one of {PIPELINES_LTX2} or None, got {mode!r}")
        if mode != "one-stage" and self.latent_upsampler is None:
            raise ValueError(f"pipeline={mode!r} needs the spatial latent upsampler: pass latent_upsampler=PATH to "
                             f"Engine.from_pretrained")
        two = a["two_stage"] if a["two_stage"] is not None else LTX2TwoStage()
        if not isinstance(two, LTX2TwoStage):
            raise ValueError(f"two_stage must be an LTX2TwoStage or None, got {type(two).__name__}")
        if mode == "one-stage" and a["two_stage"] is not None:
            raise ValueError("two_stage= configures stage 2, which pipeline='one-stage' does not have")
        a["pipeline"], a["two_stage"] = mode, two
        return mode

    def _check_video_size(self, a: dict[str, Any], mode: str) -> int:
        """height, width, num_frames, frame_rate and vae_tiling; -> num_frames."""
        multiple = 32 if mode == "one-stage" else 64
        for k in ("height", "width"):
            v = check_int(k, a[k], multiple, MAX_SIDE, "MAX_SIDE")
            if v % multiple:
                rule = "two-stage pipelines generate stage 1 at half size" if multiple == 64 else "the VAE's 32x32"
                raise ValueError(f"{k} must be a multiple of {multiple} for pipeline={mode!r} ({rule}), got {v}")
        n = check_int("num_frames", a["num_frames"], 1, MAX_NUM_FRAMES, "MAX_NUM_FRAMES")
        if (n - 1) % 8:
            raise ValueError(f"num_frames must be of the form 8k+1 (e.g. {8 * ((n - 1) // 8) + 1} or "
                             f"{8 * ((n - 1) // 8 + 1) + 1}), got {n}")
        a["fps"] = frame_rate_fraction(a["frame_rate"], "frame_rate")
        if audio_frames(n, float(a["fps"]), self.audio_vae) < 1:
            cfg = self.audio_vae.config
            latent_s = 4 * cfg.mel_hop_length / cfg.sample_rate
            raise ValueError(f"frame_rate: {n} frames at {a['frame_rate']} fps last {n / float(a['fps']):.3g} s, "
                             f"less than one audio latent frame ({latent_s:g} s), so the audio would be empty; "
                             f"lower frame_rate or generate more frames")
        tiling = a["vae_tiling"]
        if tiling is not None:
            if not isinstance(tiling, TilingConfig):
                raise ValueError(f"vae_tiling must be a ltxengine TilingConfig or None, got {type(tiling).__name__}")
            try:
                tiling.check(self.vae.spatial_compression_ratio, self.vae.temporal_compression_ratio)
            except ValueError as e:
                raise ValueError(f"vae_tiling: {e}") from None
        r = self.vae.spatial_compression_ratio
        h, w = a["height"], a["width"]
        try:  # the decoder's padding needs 2x2 latents (per tile): refuse now, not after denoising
            self.vae._check_reflect_grid("decoder", f"height x width = {h}x{w}", h // r, w // r, tiling)
        except ValueError as e:
            raise ValueError(f"{e}; one latent is {r}x{r} pixels{' (tiles from vae_tiling)' if tiling else ''}") \
                from None
        return n

    def _check_guidance(self, a: dict[str, Any], distilled: bool) -> None:
        """Stage 1's GuidanceParams per modality, from the GuidanceParams or diffusers' keywords."""
        layers = self.transformer.config.num_layers
        blocks = a.pop("spatio_temporal_guidance_blocks")
        spelled = {k: a.pop(k) for k in DIFFUSERS_GUIDANCE}
        for modality, default in (("video", VIDEO_GUIDANCE), ("audio", AUDIO_GUIDANCE)):
            k = f"{modality}_guidance"
            names = {f: name for name, (m, f) in DIFFUSERS_GUIDANCE.items() if m == modality}
            given = {name: spelled[name] for name in names.values() if spelled[name] is not None}
            if blocks is not None:
                given["spatio_temporal_guidance_blocks"] = blocks
            names["stg_blocks"] = "spatio_temporal_guidance_blocks"
            p = a[k]
            if p is not None and given:
                raise ValueError(f"{k} and {', '.join(given)} are two spellings of the same guidance: pass the "
                                 f"GuidanceParams or diffusers' keywords, not both")
            if p is not None and not isinstance(p, GuidanceParams):
                raise ValueError(f"{k} must be a GuidanceParams or None, got {type(p).__name__}")
            if p is None:
                p = NO_GUIDANCE if distilled else clip_blocks(default, layers)
            if given:
                fields = {f: given[name] for f, name in names.items() if name in given}
                a[k] = replace(p, **fields).check(k, layers, names=names)
            else:
                a[k] = p.check(k, layers)

    def _check_stage1_schedule(self, a: dict[str, Any], mode: str) -> None:
        """sigmas / num_inference_steps / shift_tokens: stage 1's schedule is built now (at most
        MAX_STEPS numbers) and checked as its sampler will check it."""
        if a["shift_tokens"] is not None:
            check_int("shift_tokens", a["shift_tokens"], 1)
        if a["sigmas"] is not None:
            a["sigmas"] = check_decreasing("sigmas", a["sigmas"], 1.0)
        elif mode == "distilled":
            return  # the fixed distilled sigmas
        else:
            steps = check_int("num_inference_steps", a["num_inference_steps"], 1, MAX_STEPS,
                         "MAX_STEPS: the scheduler's 1000 training timesteps")
            if steps < 2:  # ltx2_sigmas' stretch divides by 1 - sigma_last = 0
                raise ValueError(f"num_inference_steps must be >= 2 for the stretched LTX-2 schedule, got {steps} "
                                 f"(pass sigmas= for a custom schedule)")
        half = 1 if mode == "one-stage" else 2
        shape = (1, 0, (a["num_frames"] - 1) // 8 + 1, a["height"] // half // 32, a["width"] // half // 32)
        try:
            check_schedule(stage1_sigmas(a, mode, shape), a["sampler"], "sigmas")
        except (ValueError, OverflowError) as e:
            if a["sigmas"] is not None:
                raise
            tokens = a["shift_tokens"] or f"None (the video's {shape[2] * shape[3] * shape[4]} tokens)"
            raise ValueError(f"shift_tokens={tokens}: the {a['num_inference_steps']}-step LTX-2 schedule shifted for "
                             f"that many tokens degenerates ({e}); use a smaller shift_tokens (ltx-pipelines: "
                             f"4096)") from None

    def _check_two_stage(self, two: LTX2TwoStage, a: dict[str, Any]) -> LTX2TwoStage:
        """Every field of stage 2's configuration; -> the checked copy (sigmas a tuple, noise_scale set)."""
        layers = self.transformer.config.num_layers
        guidance = {}
        for k in ("video_guidance", "audio_guidance"):
            p = getattr(two, k)
            if not isinstance(p, GuidanceParams):
                raise ValueError(f"two_stage.{k} must be a GuidanceParams, got {type(p).__name__}")
            guidance[k] = p.check(f"two_stage.{k}", layers)
        vals = check_decreasing("two_stage.sigmas", two.sigmas, 1.0)
        if len(vals) < 2:
            raise ValueError(f"two_stage.sigmas needs at least 2 values (start and end), got {vals}")
        check_schedule(torch.tensor(vals, dtype=torch.float32), a["sampler"], "two_stage.sigmas")
        ns = vals[0] if two.noise_scale is None else check_float("two_stage.noise_scale", two.noise_scale, 0.0, 1.0)
        strength = check_float("two_stage.lora_strength", two.lora_strength)
        adain = check_float("two_stage.adain_factor", two.adain_factor, -10.0, 10.0)
        tone = check_float("two_stage.tone_map_compression_ratio", two.tone_map_compression_ratio, 0.0, 1.0)
        per_channel = ((a["num_frames"] - 1) // 8 + 1) * (a["height"] // 64) * (a["width"] // 64)
        if adain > 0 and per_channel < 2:
            raise ValueError(f"two_stage.adain_factor = {adain} needs at least 2 stage-1 latent values per channel "
                             f"(AdaIN matches their std), got 1 for {a['num_frames']} frames at "
                             f"{a['height']}x{a['width']}; use adain_factor=0 or a larger video")
        return replace(two, sigmas=tuple(vals), noise_scale=ns, lora_strength=strength, adain_factor=adain,
                       tone_map_compression_ratio=tone, **guidance)

    def _check_audio_input(self, a: dict[str, Any], num_frames: int) -> None:
        """audio, audio_sample_rate, audio_start; a waveform is replaced by its part from audio_start."""
        audio, rate = a["audio"], a["audio_sample_rate"]
        start = check_float("audio_start", a["audio_start"], 0.0)
        if audio is None:
            if rate is not None:
                raise ValueError(f"audio_sample_rate is the rate of a waveform audio=, got "
                                 f"audio_sample_rate={rate!r} without audio")
            if start != 0:
                raise ValueError(f"audio_start skips the start of audio=, got audio_start={a['audio_start']!r} "
                                 f"without audio")
            _check_aac_rate("the vocoder's output_sampling_rate (config.json of the checkpoint's vocoder)",
                            self.vocoder.config.output_sampling_rate)
            return
        if isinstance(audio, (str, os.PathLike)):
            if rate is not None:
                raise ValueError(f"audio_sample_rate is for a waveform audio= (a file carries its own rate), got "
                                 f"audio_sample_rate={rate!r} with a path")
            path = Path(audio).expanduser()
            _check_aac_rate(f"audio: the sample rate of {str(path)!r}", _audio_file_rate(path))
            a["audio"] = path
            return
        from .audio_input import as_waveform
        if rate is None:
            raise ValueError("audio_sample_rate (Hz) is required with a waveform audio=, got None")
        rate = check_int("audio_sample_rate", rate, 1)
        _check_aac_rate("audio_sample_rate", rate)
        wave = as_waveform(audio, "audio")
        if wave.shape[0] not in (1, 2):
            raise ValueError(f"audio waveform must have 1 or 2 channels, got shape {tuple(wave.shape)}")
        first = round(start * rate)
        video_s = num_frames / float(a["fps"])
        if wave.shape[1] - first < video_s * rate:
            raise ValueError(f"audio is {max(wave.shape[1] - first, 0) / rate:.3f} s long from audio_start={start} s, "
                             f"shorter than the video's {video_s:.3f} s ({num_frames} frames at {a['frame_rate']} "
                             f"fps); trim the video or give longer audio")
        a["audio"], a["audio_sample_rate"] = wave[:, first:].cpu(), rate

    def _check_conditions_ltx2(self, image, conditions, num_frames: int) -> list[Condition]:
        first = None if image is None else Condition(image=image, frame_index=0, strength=1.0)
        conds = check_conditions(conditions, num_frames, first=first, what="images, image= included",
                                 check_item=_check_condition_image)
        if sum(c.frame_index == 0 for c in conds) > 1:
            raise ValueError("conditions: at most one image may condition frame 0 (image= counts as one)")
        return conds

    # ---- generation internals ------------------------------------------------------------------
    def _generate_ltx2(self, a: dict[str, Any]):
        t0 = time.perf_counter()
        gen, seed = make_generator(a["generator"], a["seed"])
        out = run_generation(self, a, gen, seed if seed is not None else gen.initial_seed())
        result = GenerationResult.from_frames(out.frames, out.latents, a["fps"], seed=seed, timings=out.timings,
                                              audio=out.audio, sample_rate=out.sample_rate)
        out.timings["total"] = time.perf_counter() - t0
        return result


# diffusers' LTX2Pipeline keyword -> (modality, GuidanceParams field): the other spelling of the
# stage-1 guidance (spatio_temporal_guidance_blocks is stg_blocks of both modalities). Same
# formula and "off" values (cfg 1, stg 0, modality 1, rescale 0) on both sides.
DIFFUSERS_GUIDANCE = {
    "guidance_scale": ("video", "cfg"), "stg_scale": ("video", "stg"), "modality_scale": ("video", "modality"),
    "guidance_rescale": ("video", "rescale"), "audio_guidance_scale": ("audio", "cfg"),
    "audio_stg_scale": ("audio", "stg"), "audio_modality_scale": ("audio", "modality"),
    "audio_guidance_rescale": ("audio", "rescale"),
}


def _check_condition_image(i: int, c: Condition) -> None:
    if c.image is None:
        raise ValueError(f"conditions[{i}]: LTX-2 conditions take image= (video conditions are not implemented "
                         f"for LTX-2)")


def _check_aac_rate(what: str, rate: int) -> None:
    """The result's mp4 carries its audio as AAC, which takes only some rates (PyAV's encoder:
    7350 to 96000 Hz, 13 of them): refuse another before the generation, not when saving it."""
    import av
    rates = sorted(av.codec.Codec("aac", "w").audio_rates)
    if rate not in rates:
        raise ValueError(f"{what} must be one AAC (the mp4's audio codec) can carry, one of {rates}; got {rate!r}")


def _audio_file_rate(path: Path) -> int:
    """The sample rate of the first audio stream of ``path`` (the container is opened, nothing decoded)."""
    import av
    if not path.is_file():
        raise ValueError(f"audio: no file at {str(path)!r}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"audio: {str(path)!r} has no audio stream")
            return container.streams.audio[0].codec_context.sample_rate
    except av.error.FFmpegError as e:
        raise ValueError(f"audio: cannot read {str(path)!r} as media ({e})") from None


def _condition_images(a: dict[str, Any]) -> list:
    """Each condition's image as uint8 (H, W, 3), converted now so a bad one fails before any work."""
    out = []
    for i, c in enumerate(a["conditions"]):
        arg = "image" if i == 0 and a["image"] is not None else f"conditions[{i}].image"
        out.append((uint8_image(c.image, arg), c.frame_index, float(c.strength)))
    return out


def clip_blocks(p: GuidanceParams, layers: int) -> GuidanceParams:
    """The released defaults name block 29 of 48; on smaller models (tests, demo) use the last block."""
    if all(b < layers for b in p.stg_blocks):
        return p
    return replace(p, stg_blocks=tuple(min(b, layers - 1) for b in p.stg_blocks))
