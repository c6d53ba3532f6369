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

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .engine import Engine, _call_args, _decreasing, _float, _generator, _int
from .loading import CheckpointError, load_latent_upsampler
from .loading.ltx2 import load_ltx2
from .media import frame_rate_fraction
from .models.ltx2_text import GemmaTextEncoder
from .pipelines.inputs import Condition
from .pipelines.ltx2 import AUDIO_GUIDANCE, NO_GUIDANCE, STAGE2_SIGMAS, VIDEO_GUIDANCE, GuidanceParams

__all__ = ["LTX2Engine", "LTX2TwoStage", "PIPELINES_LTX2", "SAMPLERS", "audio_frames"]

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


class LTX2Engine(Engine):
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
             distilled_lora=None, quantization: str | None = None, fp8_lora: str = "branch",
             executor: str = "auto", offload: Sequence[str] = ()) -> "LTX2Engine":
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
        ups = load_latent_upsampler(latent_upsampler, device=device, dtype=dtype, ops=ops) if latent_upsampler else None
        lora = None
        if distilled_lora is not None:
            from .loading.lora import LoraWeights
            lora = distilled_lora if isinstance(distilled_lora, LoraWeights) else LoraWeights.load(distilled_lora)
        engine = cls(ckpt, te, latent_upsampler=ups, distilled_lora=lora, device=device, dtype=dtype,
                     source=str(path), executor=executor, offload=offload)
        engine.fp8_lora = fp8_lora
        if lora is not None:
            engine._lora_manager().check(lora)  # a LoRA for another model fails at load, not in stage 2
        return engine

    def _lora_manager(self):
        if self._lora is None:
            from .loading.lora import LoraSet
            self._lora = LoraSet({"transformer": self.transformer, "connectors": self.connectors},
                                 fp8_lora=self.fp8_lora)
        return self._lora

    # ---- generation ----------------------------------------------------------------------------
    def generate(self, prompt: str, negative_prompt: str | None = None, image=None,
                 conditions: Sequence[Condition] | None = None, audio=None, *, height: int = 512, width: int = 768,
                 num_frames: int = 121, frame_rate=24, num_inference_steps: int = 40,
                 sigmas: Sequence[float] | None = None, video_guidance: GuidanceParams | None = None,
                 audio_guidance: GuidanceParams | None = None, shift_tokens: int | None = 4096,
                 pipeline: str | None = None, two_stage: LTX2TwoStage | None = None, sampler: str = "euler",
                 image_crf: int = 33, audio_start: float = 0.0, audio_sample_rate: int | None = None,
                 decode_timestep: float | None = None, decode_noise_scale: float | None = None,
                 seed: int | None = None, generator: torch.Generator | None = None, callback: Callable | None = None,
                 max_sequence_length: int = 1024, guidance_batch: int | None = None, vae_tiling=None,
                 output=None):
        """Generate a video with its audio track. See the module docstring for ``pipeline``.

        video_guidance / audio_guidance: stage-1 GuidanceParams (default ltx-pipelines' LTX-2.0
        values; none for "distilled"). image: conditions frame 0 (replaces the first latent frame);
        conditions: Condition(image=..., frame_index=k, strength=s) -- frame 0 replaces the first
        latent frame, k > 0 appends keyframe tokens at pixel frame k. Images are round-tripped
        through H.264 at ``image_crf`` (0: off) before encoding, as the reference does.
        audio: a file path or a (channels, samples) waveform with ``audio_sample_rate``: the video is
        generated to it (audio latents frozen) and the result carries that audio.
        shift_tokens: the token count that sets the schedule's shift (ltx-pipelines: 4096; None: the
        video's own token count, as diffusers' LTX2Pipeline). callback(stage, step, total,
        timestep=1000 x sigma, latents=video latents (1, C, F', H', W')) after every step (stages
        "denoise", "refine") and once at "decode"; returning STOP cancels (GenerationCancelled).
        output: an mp4 path written (video + audio) while the VAE decodes, as in Engine.generate.
        """
        args = self._check_ltx2(locals())
        with self._lock, torch.inference_mode():
            self._check_memory(args)
            return self._generate_ltx2(args)

    def _check_args(self, a: dict[str, Any]) -> dict[str, Any]:
        return self._check_ltx2(a)  # Engine.plan binds generate()'s arguments and checks them here

    def _plan(self, args: dict[str, Any]):
        from .planning import plan_ltx2
        return plan_ltx2(self, args)

    # ---- argument checks -------------------------------------------------------------------------
    def _check_ltx2(self, a: dict[str, Any]) -> dict[str, Any]:
        a = _call_args(a)
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
        multiple = 32 if mode == "one-stage" else 64
        for k in ("height", "width"):
            v = _int(k, a[k], multiple)
            if v % multiple:
                rule = "two-stage pipelines generate stage 1 at half size" if multiple == 64 else "the VAE's 32x32"
                raise ValueError(f"{k} must be a multiple of {multiple} for pipeline={mode!r} ({rule}), got {v}")
        n = _int("num_frames", a["num_frames"], 1)
        if (n - 1) % 8:
            raise ValueError(f"num_frames must be of the form 8k+1 (e.g. {8 * ((n - 1) // 8) + 1} or "
                             f"{8 * ((n - 1) // 8 + 1) + 1}), got {n}")
        a["fps"] = frame_rate_fraction(a["frame_rate"], "frame_rate")
        layers = self.transformer.config.num_layers
        distilled = mode == "distilled"
        for k, default in (("video_guidance", VIDEO_GUIDANCE), ("audio_guidance", AUDIO_GUIDANCE)):
            p = a[k] if a[k] is not None else (NO_GUIDANCE if distilled else _clip_blocks(default, layers))
            if not isinstance(p, GuidanceParams):
                raise ValueError(f"{k} must be a GuidanceParams or None, got {type(p).__name__}")
            a[k] = p.check(k, layers)
        two.video_guidance.check("two_stage.video_guidance", layers)
        two.audio_guidance.check("two_stage.audio_guidance", layers)
        if a["sigmas"] is not None:
            a["sigmas"] = _decreasing("sigmas", a["sigmas"], 1.0)
        elif not distilled:
            _int("num_inference_steps", a["num_inference_steps"], 1)
        if mode != "one-stage":
            vals = _decreasing("two_stage.sigmas", two.sigmas, 1.0)
            if len(vals) < 2:
                raise ValueError(f"two_stage.sigmas needs at least 2 values (start and end), got {vals}")
            ns = vals[0] if two.noise_scale is None else _float("two_stage.noise_scale", two.noise_scale, 0.0, 1.0)
            _float("two_stage.lora_strength", two.lora_strength)
            a["two_stage"] = replace(two, sigmas=tuple(vals), noise_scale=ns)
        if a["shift_tokens"] is not None:
            _int("shift_tokens", a["shift_tokens"], 1)
        if a["sampler"] not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {a['sampler']!r}")
        crf = _int("image_crf", a["image_crf"], 0)
        if crf > 51:
            raise ValueError(f"image_crf must be in [0, 51] (H.264 CRF; 0 = no re-compression), got {crf}")
        _int("max_sequence_length", a["max_sequence_length"], 1)
        if a["guidance_batch"] is not None:
            _int("guidance_batch", a["guidance_batch"], 1)
        for k in ("decode_timestep", "decode_noise_scale"):
            if a[k] is not None:
                _float(k, a[k], 0.0, 1.0)
        if a["seed"] is not None:
            _int("seed", a["seed"], 0)
        a["conditions"] = self._check_conditions_ltx2(a["image"], a["conditions"], n)
        return a

    def _check_conditions_ltx2(self, image, conditions, num_frames: int) -> list[Condition]:
        conds = [] if image is None else [Condition(image=image, frame_index=0, strength=1.0)]
        if conditions is not None:
            if isinstance(conditions, Condition):
                conditions = [conditions]
            if not isinstance(conditions, (list, tuple)):
                raise ValueError(f"conditions must be a list of Condition, got {type(conditions).__name__}")
            conds += list(conditions)
        for i, c in enumerate(conds):
            if not isinstance(c, Condition):
                raise ValueError(f"conditions[{i}] must be a ltxengine.Condition, got {type(c).__name__}")
            if c.image is None:
                raise ValueError(f"conditions[{i}]: LTX-2 conditions take image= (video conditions are not "
                                 f"implemented for LTX-2)")
            fi = _int(f"conditions[{i}].frame_index", c.frame_index, 0)
            if fi >= num_frames:
                raise ValueError(f"conditions[{i}].frame_index must be < num_frames ({num_frames}), got {fi}")
            _float(f"conditions[{i}].strength", c.strength, 0.0, 1.0)
        if sum(c.frame_index == 0 for c in conds) > 1:
            raise ValueError("conditions: at most one image may condition frame 0 (image= counts as one)")
        return conds

    # ---- generation internals ------------------------------------------------------------------
    def _generate_ltx2(self, a: dict[str, Any]):
        from .engine import GenerationResult
        from .ltx2_stages import run_generation
        t0 = time.perf_counter()
        gen, seed = _generator(a["generator"], a["seed"])
        out = run_generation(self, a, gen, seed if seed is not None else gen.initial_seed())
        frames = out.frames.cpu().numpy() if isinstance(out.frames, torch.Tensor) else out.frames
        video = (frames * 255).round().astype(np.uint8)
        out.timings["total"] = time.perf_counter() - t0
        return GenerationResult(frames=frames, video=video, latents=out.latents.float().cpu(), fps=a["fps"],
                                audio=out.audio, sample_rate=out.sample_rate, seed=seed, timings=out.timings)


def _clip_blocks(p: GuidanceParams, layers: int) -> GuidanceParams:
    """The released defaults name block 29 of 48; on smaller models (tests, demo) use the last block."""
    if all(b < layers for b in p.stg_blocks):
        return p
    return replace(p, stg_blocks=tuple(min(b, layers - 1) for b in p.stg_blocks))


def audio_frames(num_frames: int, fps: float, audio_vae) -> int:
    """Audio latent frames of a clip: round(duration x latents per second) (25 for LTX-2.0)."""
    cfg = audio_vae.config
    per_second = cfg.sample_rate / cfg.mel_hop_length / 4
    return round(num_frames / fps * per_second)

