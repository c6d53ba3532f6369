"""The engine for LTX-Video 0.9.x checkpoints: ``Engine.from_pretrained`` returns one for them.

    engine = Engine.from_pretrained("path/to/diffusers-folder")   # an LTXVideoEngine
    result = engine.generate("a red car drives through the rain", height=512, width=704, num_frames=121,
                             seed=0)
    result.save("out.mp4")

Keyword names follow diffusers. Which diffusers pipeline's semantics a call reproduces is chosen
from its inputs (or forced with ``pipeline=``):

* ``"text-to-video"`` (LTXPipeline): no image, no conditions.
* ``"image-to-video"`` (LTXImageToVideoPipeline): ``image=`` given.
* ``"condition"`` (LTXConditionPipeline): ``conditions=`` given, ``denoise_strength`` < 1, or
  ``two_stage=``; its default schedule is the linear-quadratic one and its prompts are 256 tokens.

With the same folder, arguments and integer ``seed`` (diffusers: ``generator=
torch.Generator().manual_seed(seed)``) the frames equal diffusers' in fp32 (tests/pipelines).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..components.inputs import Condition
from ..engine import Engine
from ..executor.plan import MemoryPlan
from ..loading import CheckpointError, load_latent_upsampler, load_ltx_video
from ..loading.safetensors_io import read_json
from ..models.text_encoder import T5TextEncoder
from ..models.video_vae import TilingConfig
from ..results import GenerationResult
from .plan import plan_ltx_video
from .request import PIPELINES, LTXVideoRequest, TwoStage, build_request
from .schedule import DEFAULT_SCHEDULER_CONFIG, SchedulerConfig
from .stages import run_generation

__all__ = ["LTXVideoEngine", "PIPELINES", "TwoStage"]


class LTXVideoEngine(Engine, family="ltx-video", fallback=True):
    """LTX-Video models on one device; ``generate`` calls are serialized by a lock."""

    def __init__(self, transformer, vae, text_encoder: T5TextEncoder, *, latent_upsampler=None,
                 scheduler_config: dict | None = None, device=None, dtype=torch.bfloat16, source: str = "",
                 executor: str = "auto", offload: Sequence[str] = ()):
        self.transformer = transformer.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.text_encoder = text_encoder
        self.latent_upsampler = latent_upsampler.eval().requires_grad_(False) if latent_upsampler else None
        self.scheduler_config = SchedulerConfig.from_dict(scheduler_config, f"{source}: scheduler config")
        self.device = torch.device(device) if device is not None else next(transformer.parameters()).device
        self.dtype = dtype
        self.source = source
        self._setup_runtime(executor, offload)
        if text_encoder.hidden_size != transformer.config.caption_channels:
            raise CheckpointError(f"{source}: text encoder width {text_encoder.hidden_size} != transformer "
                                  f"caption_channels {transformer.config.caption_channels}")
        if vae.config.latent_channels != transformer.config.in_channels:
            raise CheckpointError(f"{source}: VAE latent_channels {vae.config.latent_channels} != transformer "
                                  f"in_channels {transformer.config.in_channels}")

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path, device, dtype, ops, *, text_encoder=None, latent_upsampler=None,
             scheduler_config: dict | None = None, distilled_lora=None, quantization: str | None = None,
             fp8_lora: str = "branch", executor: str = "auto", offload: Sequence[str] = (),
             gguf: Path | None = None) -> "LTXVideoEngine":
        """An LTX-Video engine from a local checkpoint (``from_pretrained`` has resolved the path
        and checked the options; each family's engine class loads its own checkpoints)."""
        if distilled_lora is not None:
            raise ValueError("distilled_lora: only LTX-2 engines take a stage-2 LoRA, this is an LTX-Video "
                             "checkpoint")
        if gguf is not None:  # the transformer from the GGUF, the rest from path (Engine.from_pretrained)
            from ..loading.gguf_transformer import load_ltx_video_gguf
            ckpt = load_ltx_video_gguf(gguf, path, device, dtype, ops)
        else:
            ckpt = load_ltx_video(path, device=device, dtype=dtype, ops=ops, quantization=quantization)
        if path.is_dir():
            te_root = path if text_encoder is None else text_encoder
            up = latent_upsampler if latent_upsampler is not None else (
                path / "latent_upsampler" if (path / "latent_upsampler").is_dir() else None)
            sched = scheduler_config if scheduler_config is not None else ckpt.scheduler_config
        else:
            if text_encoder is None:
                raise ValueError(f"text_encoder: {path} is a single-file checkpoint without the T5 text encoder; "
                                 f"pass text_encoder=PATH (a diffusers LTX-Video folder or a T5 folder)")
            te_root, up = text_encoder, latent_upsampler
            sched = scheduler_config if scheduler_config is not None else DEFAULT_SCHEDULER_CONFIG
        te_device = "cpu" if "text_encoder" in offload else device  # never on the device while idle
        te = text_encoder if isinstance(text_encoder, T5TextEncoder) else _load_t5(te_root, te_device, dtype)
        ups = load_latent_upsampler(up, device=device, dtype=dtype, ops=ops, family="ltx-video") if up is not None \
            else None
        engine = cls(ckpt.transformer, ckpt.vae, te, latent_upsampler=ups, scheduler_config=sched, device=device,
                     dtype=dtype, source=str(path), executor=executor, offload=offload)
        engine.fp8_lora = fp8_lora
        return engine

    def graph_state(self) -> tuple:
        # the LTX-Video step keys its graphs on shapes only: fp8 LoRA branches (forward hooks) are
        # part of the state, so a changed set re-captures once
        return super().graph_state() + (self.graph_variant,)

    # ---- generation ----------------------------------------------------------------------------
    def generate(self, prompt: str, negative_prompt: str | None = None, image=None,
                 conditions: Sequence[Condition] | None = None, *, height: int = 512, width: int = 704,
                 num_frames: int = 161, frame_rate=25, num_inference_steps: int = 50,
                 guidance_scale: float = 3.0, guidance_rescale: float = 0.0,
                 timesteps: Sequence[float] | None = None, sigmas: Sequence[float] | None = None,
                 decode_timestep: float = 0.0, decode_noise_scale: float | None = None,
                 seed: int | None = None, generator: torch.Generator | None = None,
                 latents: torch.Tensor | None = None, callback: Callable | None = None,
                 denoise_strength: float = 1.0, image_cond_noise_scale: float = 0.15,
                 max_sequence_length: int | None = None, two_stage: TwoStage | bool | None = None,
                 pipeline: str | None = None, vae_tiling: TilingConfig | None = None,
                 output: str | os.PathLike | None = None,
                 loras: dict[str, float] | None = None) -> GenerationResult:
        """Generate one video. See the module docstring for which diffusers pipeline a call follows.

        callback(stage, step, total, timestep=..., latents=...) runs after every denoising step
        (stages "denoise", "refine" for two-stage stage 2, then "decode" once) with the current
        normalized latents (1, C, F', H', W'); returning ``STOP`` or raising ``GenerationCancelled``
        stops the generation and raises GenerationCancelled (with the stage and step).
        Prompts longer than max_sequence_length tokens are truncated with a warning.
        output: an mp4 path the frames are written to as the VAE decodes them (temporal tiles with
        ``vae_tiling``), so device memory does not grow with the clip; the file appears only when
        complete (the result also holds the frames).
        loras: {adapter name: strength} of loaded adapters for this call only (None: the active
        adapters, see ``load_lora_weights`` / ``set_adapters``; {}: none).
        """
        return self._run(self._request(locals()))

    def _request(self, args: dict[str, Any]) -> LTXVideoRequest:
        return build_request(self, args)

    def _plan(self, request: LTXVideoRequest) -> MemoryPlan:
        return plan_ltx_video(self, request)

    def _video_tokens(self, a: LTXVideoRequest) -> list[int]:
        """Video tokens of each stage (sequence parallel's check): stage 1's, and stage 2's at twice
        the side."""
        r, rt = self.vae.spatial_compression_ratio, self.vae.temporal_compression_ratio
        frames, (h, w) = (a.num_frames - 1) // rt + 1, a.stage1_size
        scales = (1,) if a.two_stage is None else (1, 2)
        return [frames * (s * h // r) * (s * w // r) for s in scales]

    def _generate(self, request: LTXVideoRequest) -> GenerationResult:
        """The checked call's run, stage by stage, in ltx_video/stages.py (one seam tests can replace)."""
        return run_generation(self, request)


def _load_t5(root, device, dtype) -> T5TextEncoder:
    root = Path(root)
    if (root / "text_encoder").is_dir():
        te_dir, tok_dir = root / "text_encoder", root / "tokenizer"
    else:
        te_dir = tok_dir = root
    if not te_dir.is_dir():
        raise CheckpointError(f"text_encoder: {root} has no T5 text encoder (expected text_encoder/ and tokenizer/ "
                              f"subfolders, or a T5 folder)")
    if (root / "model_index.json").is_file():
        index = read_json(root / "model_index.json", "diffusers model_index.json")
        if "text_encoder" not in index:
            raise CheckpointError(f"{root / 'model_index.json'}: no 'text_encoder' entry")
    return T5TextEncoder.from_folders(te_dir, tok_dir, device=device, dtype=dtype)
