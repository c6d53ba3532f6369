"""``ltxengine.Engine``: load once, generate many times.

    engine = Engine.from_pretrained("path/to/diffusers-folder")
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

import inspect
import os
import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .checks import (MAX_CONDITIONS, MAX_NUM_FRAMES, MAX_SEQUENCE_LENGTH, MAX_SIDE, MAX_STEPS, SEED_MAX, call_args,
                     check_conditions, check_decreasing, check_float, check_int, check_kept_steps, check_random,
                     check_steps)
from .executor.graphs import MODES as EXECUTOR_MODES
from .executor.graphs import GraphExecutor
from .executor.plan import InsufficientMemoryError, MemoryPlan, MemoryPlanError, available_bytes, fmt_bytes
from .executor.residency import Residency
from .loading import CheckpointError, load_latent_upsampler, load_ltx_video
from .loading.safetensors_io import read_json
from .ltx_video.plan import plan_ltx_video
from .ltx_video.stages import run_generation, stage_pixels, stage_schedule
from .media import frame_rate_fraction
from .models.text_encoder import T5TextEncoder
from .models.video_vae import TilingConfig
from .ops import FUSED, get_ops, with_fp8_attention
from .components.inputs import Condition
from .ltx_video.schedule import DEFAULT_SCHEDULER_CONFIG, SchedulerConfig
from .planning import measure
from .results import STOP, GenerationCancelled, GenerationResult

# the result types and the argument bounds live in results.py and checks.py; they stay importable
# from here, where they were first documented
__all__ = ["MAX_CONDITIONS", "MAX_NUM_FRAMES", "MAX_SEQUENCE_LENGTH", "MAX_SIDE", "MAX_STEPS", "SEED_MAX", "STOP",
           "Engine", "GenerationCancelled", "GenerationResult", "TwoStage"]

PIPELINES = ("text-to-video", "image-to-video", "condition")
_HUB_PATTERNS = ["model_index.json", "transformer/*", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*",
                 "latent_upsampler/*", "connectors/*", "audio_vae/*", "vocoder/*"]


# generate() arguments that change a generation's memory plan
_PLAN_KEYS = ("height", "width", "num_frames", "pipeline", "two_stage", "stage1_size", "guidance_scale",
              "max_sequence_length", "vae_tiling", "sampler", "guidance_batch", "video_guidance", "audio_guidance")


@dataclass(frozen=True)
class TwoStage:
    """The multi-scale recipe in one call: generate at ``downscale_factor`` x the requested size
    (rounded down to multiples of 32), upsample the latents x2 with the latent upsampler (AdaIN
    towards the low-resolution statistics, optional tone map), refine at the doubled size with
    ``denoise_strength`` (or the distilled ``timesteps``), decode and, if the doubled size is not
    the requested one, resize the frames bilinearly (as Lightricks' LTXMultiScalePipeline does).

    Stage-2 fields left as None take the stage-1 value of ``generate``. Both stages follow the
    LTXConditionPipeline; stage 2 draws from a generator re-seeded with the same seed, as in
    diffusers' documented three-call recipe.
    """

    downscale_factor: float = 2 / 3
    adain_factor: float = 1.0
    tone_map_compression_ratio: float = 0.0
    denoise_strength: float = 0.4
    num_inference_steps: int = 10
    timesteps: Sequence[float] | None = None
    guidance_scale: float | None = None
    guidance_rescale: float | None = None
    image_cond_noise_scale: float | None = None

    def check(self, name: str = "two_stage") -> "TwoStage":
        """Every field's type, finiteness and range, and that the refinement keeps at least one
        step; -> the recipe with ``timesteps`` as a list. Needs no engine, so it runs before any work."""
        check_float(f"{name}.downscale_factor", self.downscale_factor, 0.0, 1.0, low_open=True)
        check_float(f"{name}.adain_factor", self.adain_factor, -10.0, 10.0)
        check_float(f"{name}.tone_map_compression_ratio", self.tone_map_compression_ratio, 0.0, 1.0)
        strength = check_float(f"{name}.denoise_strength", self.denoise_strength, 0.0, 1.0, low_open=True)
        for field_name, high in (("guidance_scale", None), ("guidance_rescale", 1.0), ("image_cond_noise_scale", None)):
            if getattr(self, field_name) is not None:  # None: the stage-1 value
                check_float(f"{name}.{field_name}", getattr(self, field_name), 0.0, high)
        timesteps = self.timesteps
        if timesteps is not None:
            timesteps = check_decreasing(f"{name}.timesteps", timesteps, 1000.0)
        if timesteps is None or self.num_inference_steps is not None:  # ignored, but never nonsense
            check_steps(f"{name}.num_inference_steps", self.num_inference_steps)
        if strength < 1:
            steps_name = f"{name}.timesteps" if timesteps is not None else f"{name}.num_inference_steps"
            check_kept_steps(f"{name}.denoise_strength", strength, steps_name,
                        len(timesteps) if timesteps is not None else self.num_inference_steps)
        return replace(self, timesteps=timesteps)


# -- the engine ------------------------------------------------------------------------------------

# The model families other than LTX-Video (the base class's own): name -> (detect(path) -> bool, engine
# class). A family's engine class registers itself by subclassing Engine with family= and detect=
# (ltxengine/__init__.py imports each family's module), so engine.py never names a family module.
_FAMILIES: dict[str, tuple[Callable[[Path], bool], type]] = {}


class Engine:
    """LTX-Video models on one device; ``generate`` calls are serialized by a lock, so concurrent
    calls from several threads run one after the other and each gets its own correct result."""

    def __init_subclass__(cls, family: str | None = None, detect: Callable[[Path], bool] | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if family is not None:
            if detect is None or family in _FAMILIES:
                raise TypeError(f"{cls.__name__}: family {family!r} needs a detect= function and a name of its "
                                f"own (registered: {sorted(_FAMILIES)})")
            _FAMILIES[family] = (detect, cls)

    # the VAE encoder only encodes image / video conditions: a text-to-video engine never needs it
    OFFLOADABLE = ("text_encoder", "latent_upsampler", "vae_encoder")

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
        self.family = "ltx-video"
        self._lock = threading.Lock()
        self._setup_runtime(executor, offload)
        if text_encoder.hidden_size != transformer.config.caption_channels:
            raise CheckpointError(f"{source}: text encoder width {text_encoder.hidden_size} != transformer "
                                  f"caption_channels {transformer.config.caption_channels}")
        if vae.config.latent_channels != transformer.config.in_channels:
            raise CheckpointError(f"{source}: VAE latent_channels {vae.config.latent_channels} != transformer "
                                  f"in_channels {transformer.config.in_channels}")

    def _setup_runtime(self, executor: str, offload: Sequence[str]) -> None:
        """The step executor (CUDA graphs on CUDA, static buffers and the same keys elsewhere;
        "none" calls the model directly) and where offloadable components live between uses."""
        _check_runtime_options(executor, offload)
        self.executor = None if executor == "none" else GraphExecutor(self.device, executor)
        self.residency = Residency(self.device, offload, self.OFFLOADABLE)
        self._weights_version = 0
        self.check_memory = True
        self._plans: dict[tuple, MemoryPlan] = {}
        for name in self.OFFLOADABLE:
            self.residency.park(name, self.offloadable(name))

    def offloadable(self, name: str):
        """The module an ``offload`` name moves."""
        if name == "vae_encoder":
            return self.vae.encoder
        module = getattr(self, name, None)
        return getattr(module, "model", module)  # text encoders wrap their transformers model

    @property
    def quantization(self) -> str | None:
        """The fp8 policy of the transformer's linear layers ("fp8-cast", "fp8-scaled-mm"), None
        when they are full precision."""
        return getattr(self.transformer, "quantization", None)

    def invalidate_graphs(self, reason: str = "weights changed") -> None:
        """Call after changing the transformer's weights by hand: captured graphs read them by address."""
        self._weights_version += 1
        if self.executor is not None:
            self.executor.invalidate(reason)

    def graph_state(self) -> tuple:
        """What captured graphs depend on besides shapes: the weights' identity and how they run."""
        return (id(self.transformer), self.transformer.ops.name, self.quantization, self._weights_version)

    def sync_executor(self) -> None:
        """Before a stage's steps: the step executor learns the graph state in force (a change
        drops the graphs captured under another)."""
        if self.executor is not None:
            self.executor.set_state(self.graph_state())

    @property
    def kernels(self) -> dict[str, str]:
        """Which implementation serves each fused op ("torch", "triton", "cuda", "cublas"), as
        chosen by ``from_pretrained(kernels=...)``."""
        sources = dict(self.transformer.ops.sources)
        return {op: sources.get(op, "torch") for op in FUSED}

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_repo_id, device=None, dtype: torch.dtype = torch.bfloat16, *,
                        text_encoder=None, latent_upsampler=None, kernels: str = "auto",
                        scheduler_config: dict | None = None, revision: str | None = None,
                        local_files_only: bool = False, distilled_lora=None,
                        quantization: str | None = None, fp8_attention: bool = False, fp8_lora: str = "branch",
                        executor: str = "auto", offload: Sequence[str] = ()) -> "Engine":
        """A diffusers folder (``model_index.json``), a Lightricks single-file ``.safetensors``, or a
        Hugging Face repo id (downloaded with huggingface_hub; diffusers-format repos).

        text_encoder: for single files, a folder with the T5 encoder and tokenizer (a diffusers
        LTX-Video folder, or a folder holding ``text_encoder/`` and ``tokenizer/``, or one T5
        folder with both), or a loaded ``T5TextEncoder``.
        latent_upsampler: path of the x2 latent upsampler (folder or single file) for two-stage
        generation; a diffusers folder's own ``latent_upsampler/`` is used when present.
        scheduler_config: overrides the folder's ``scheduler/scheduler_config.json``; single files
        default to the 0.9.0/0.9.1 diffusers scheduler (resolution-dependent shift, terminal 0.1).

        LTX-2 bundles and diffusers folders return an ``LTX2Engine`` (see ltx2_engine.py):
        text_encoder is then the Gemma 3 folder (a diffusers folder's own ``text_encoder/`` is
        used), latent_upsampler the spatial x2 upsampler for the two-stage pipelines, and
        distilled_lora the LoRA fused for stage 2 (ltx-2-19b-distilled-lora-384).

        quantization: fp8 weights for the transformer's linear layers (see ltxengine.quant.fp8):
        "fp8-cast" (fp8 storage, compute in ``dtype``; any device and dtype) or "fp8-scaled-mm"
        (fp8 GEMM: CUDA sm_89+, or emulated on CPU; bf16/fp16 only). bf16 checkpoints are quantized
        at load; fp8 checkpoints (Lightricks ``-fp8``, ComfyUI fp8) load with their own scales, and
        with None they keep fp8 storage under the device's best policy. ``engine.quantization`` is
        the policy in force (None: full precision). fp8_attention: q/k/v of every attention in e4m3
        (opt-in: ~5% relative error per attention against ~0.4% for bf16; see README).
        fp8_lora (LTX-2): how LoRAs reach fp8 layers, "branch" (unmerged, closest to bf16) or
        "merge" (dequantize, add, requantize).

        executor: "auto" (CUDA graphs on CUDA, else eager), "graphs", "eager" (the same static
        buffers, no capture) or "none" (plain calls). offload: components kept in host memory
        and moved to the device only while used, from ("text_encoder", "latent_upsampler").
        """
        _check_runtime_options(executor, offload, fp8_lora)
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        from .quant.fp8 import validate_policy
        validate_policy(quantization, device, dtype)
        if kernels == "cuda" and dtype != torch.bfloat16:
            raise ValueError(f"kernels='cuda': the CUDA C++ kernels take bfloat16 activations, got dtype={dtype}; "
                             f"use dtype=torch.bfloat16 or kernels='triton'/'torch'")
        ops = get_ops(kernels, device)
        if fp8_attention:
            ops = with_fp8_attention(ops)
        path = resolve_source(path_or_repo_id, revision, local_files_only)
        # no registered family's checkpoint: LTX-Video, loaded by the class called (a subclass stays one)
        family = next((engine_cls for detect, engine_cls in _FAMILIES.values() if detect(path)), cls)
        return family.load(path, device, dtype, ops, text_encoder=text_encoder, latent_upsampler=latent_upsampler,
                           scheduler_config=scheduler_config, distilled_lora=distilled_lora,
                           quantization=quantization, fp8_lora=fp8_lora, executor=executor, offload=offload)

    @classmethod
    def load(cls, path: Path, device, dtype, ops, *, text_encoder=None, latent_upsampler=None,
             scheduler_config: dict | None = None, distilled_lora=None, quantization: str | None = None,
             fp8_lora: str = "branch", executor: str = "auto", offload: Sequence[str] = ()) -> "Engine":
        """An LTX-Video engine from a local checkpoint (``from_pretrained`` has resolved the path
        and checked the options; each family's engine class loads its own checkpoints)."""
        if distilled_lora is not None:
            raise ValueError("distilled_lora: only LTX-2 engines take a stage-2 LoRA, this is an LTX-Video "
                             "checkpoint")
        if fp8_lora != "branch":
            raise ValueError(f"fp8_lora: only LTX-2 engines load LoRAs, this is an LTX-Video checkpoint (got "
                             f"{fp8_lora!r})")
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
        te = text_encoder if isinstance(text_encoder, T5TextEncoder) else _load_text_encoder(te_root, te_device, dtype)
        ups = load_latent_upsampler(up, device=device, dtype=dtype, ops=ops, family="ltx-video") if up is not None \
            else None
        return cls(ckpt.transformer, ckpt.vae, te, latent_upsampler=ups, scheduler_config=sched, device=device,
                   dtype=dtype, source=str(path), executor=executor, offload=offload)

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
                 output: str | os.PathLike | None = None) -> GenerationResult:
        """Generate one video. See the module docstring for which diffusers pipeline a call follows.

        callback(stage, step, total, timestep=..., latents=...) runs after every denoising step
        (stages "denoise", "refine" for two-stage stage 2, then "decode" once) with the current
        normalized latents (1, C, F', H', W'); returning ``STOP`` or raising ``GenerationCancelled``
        stops the generation and raises GenerationCancelled (with the stage and step).
        Prompts longer than max_sequence_length tokens are truncated with a warning.
        output: an mp4 path the frames are written to as the VAE decodes them (temporal tiles with
        ``vae_tiling``), so device memory does not grow with the clip; the file appears only when
        complete (the result also holds the frames).
        """
        args = self._check_args(locals())
        with self._lock, torch.inference_mode():
            self._check_memory(args)
            return self._generate(args)

    def plan(self, prompt: str = "", negative_prompt: str | None = None, **kwargs) -> MemoryPlan:
        """The memory plan of ``generate(prompt, negative_prompt, **kwargs)`` without running it:
        the peak per phase (text, denoise, upsample, refine, decode), whether it fits the memory
        available now (device memory on CUDA, host RAM on the CPU), and if not the largest frame
        count / size that does. Nothing is allocated (the phases are traced on fake tensors), so
        any request within the argument bounds can be planned."""
        bound = inspect.signature(self.generate).bind(prompt, negative_prompt, **kwargs)
        bound.apply_defaults()
        args = self._check_args(dict(bound.arguments))
        with self._lock, torch.inference_mode():
            return self._plan(args)

    def _plan(self, args: dict[str, Any]) -> MemoryPlan:
        return plan_ltx_video(self, args)

    def _check_memory(self, args: dict[str, Any]) -> None:
        """Refuse a generation whose planned peak does not fit the memory it can use (device
        memory on CUDA, host RAM on the CPU) before doing any work. Plans are cached per shape;
        ``engine.check_memory = False`` skips the check. A plan that fails stops the generation
        too (MemoryPlanError): unchecked, an oversized request could take the machine down."""
        if not self.check_memory or available_bytes(self.device) is None:  # None: free memory unknown
            return
        key = tuple(repr(args.get(k)) for k in _PLAN_KEYS) + (
            len(args.get("conditions") or ()), args.get("image") is not None,
            tuple(sorted(self.residency.offload)), self.graph_state())
        plan = self._plans.get(key)
        if plan is None:
            try:
                plan = self._plans[key] = self._plan(args)
            except Exception as e:  # noqa: BLE001 - any failure: the fit is unknown
                raise MemoryPlanError(
                    f"generate: the memory plan of this generation failed ({type(e).__name__}: {e}), so "
                    f"whether it fits in memory is unknown; nothing was generated. Set engine.check_memory = "
                    f"False to generate without the check.") from e
        else:
            measure(plan, self)
        if plan.fits is False:
            if plan.suggestion is None:
                plan = self._plans[key] = self._plan(args)
            raise InsufficientMemoryError(f"generate: this generation needs {fmt_bytes(plan.peak_bytes)} at its "
                                          f"peak ({plan.peak_phase}), {fmt_bytes(plan.available_bytes)} are "
                                          f"available on {self.device} (+ {fmt_bytes(plan.held_bytes)} of "
                                          f"weights already there).\n{plan}")

    # ---- internals -----------------------------------------------------------------------------
    def _check_args(self, a: dict[str, Any]) -> dict[str, Any]:
        """Every argument of ``generate`` (nested TwoStage, TilingConfig and Condition objects
        included) checked and normalized, and what could fail later tried here (schedules,
        pixels), so a bad call fails before any model work."""
        a = call_args(a)
        self._check_sizes(a)
        a["fps"] = frame_rate_fraction(a["frame_rate"], "frame_rate")
        self._check_numbers(a)
        self._check_objects(a)
        a["two_stage"] = self._check_two_stage(a["two_stage"])
        self._check_pipeline(a)
        self._check_schedules(a)
        return a

    def _check_sizes(self, a: dict[str, Any]) -> None:
        r, rt = self.vae.spatial_compression_ratio, self.vae.temporal_compression_ratio
        for k in ("height", "width"):
            v = check_int(k, a[k], r, MAX_SIDE, "MAX_SIDE")
            if v % r:
                raise ValueError(f"{k} must be a multiple of {r}, got {v}")
        n = check_int("num_frames", a["num_frames"], 1, MAX_NUM_FRAMES, "MAX_NUM_FRAMES")
        if (n - 1) % rt:
            raise ValueError(f"num_frames must be of the form {rt}k+1 (e.g. {rt * ((n - 1) // rt) + 1} or "
                             f"{rt * ((n - 1) // rt + 1) + 1}), got {n}")

    @staticmethod
    def _check_numbers(a: dict[str, Any]) -> None:
        if a["timesteps"] is not None and a["sigmas"] is not None:
            raise ValueError("pass at most one of timesteps and sigmas, got both")
        if a["timesteps"] is not None:
            a["timesteps"] = check_decreasing("timesteps", a["timesteps"], 1000.0)
        elif a["sigmas"] is not None:
            a["sigmas"] = check_decreasing("sigmas", a["sigmas"], 1.0)
        if (a["timesteps"] is None and a["sigmas"] is None) or a["num_inference_steps"] is not None:
            check_steps("num_inference_steps", a["num_inference_steps"])  # may be None only when unused
        check_float("guidance_scale", a["guidance_scale"], 0.0)
        check_float("guidance_rescale", a["guidance_rescale"], 0.0, 1.0)
        check_float("decode_timestep", a["decode_timestep"], 0.0, 1.0)
        if a["decode_noise_scale"] is not None:
            check_float("decode_noise_scale", a["decode_noise_scale"], 0.0, 1.0)
        check_float("denoise_strength", a["denoise_strength"], 0.0, 1.0, low_open=True)
        check_float("image_cond_noise_scale", a["image_cond_noise_scale"], 0.0)
        if a["max_sequence_length"] is not None:
            check_int("max_sequence_length", a["max_sequence_length"], 1, MAX_SEQUENCE_LENGTH, "MAX_SEQUENCE_LENGTH")

    def _check_objects(self, a: dict[str, Any]) -> None:
        check_random(a["seed"], a["generator"], "a torch.Generator")
        if a["callback"] is not None and not callable(a["callback"]):
            raise ValueError(f"callback must be callable, got {a['callback']!r}")
        tiling = a["vae_tiling"]
        if tiling is not None:
            if not isinstance(tiling, TilingConfig):
                raise ValueError(f"vae_tiling must be a TilingConfig or None, got {type(tiling).__name__}")
            try:  # tile sizes and strides must be whole latent cells of this VAE
                tiling.check(self.vae.spatial_compression_ratio, self.vae.temporal_compression_ratio)
            except ValueError as e:
                raise ValueError(f"vae_tiling: {e}") from None
        if a["image"] is not None and a["conditions"] is not None:
            raise ValueError("pass image or conditions, not both (an image is Condition(image=..., frame_index=0))")

    def _check_two_stage(self, two) -> TwoStage | None:
        if two is None or two is False:
            return None
        if two is True:
            two = TwoStage()
        if not isinstance(two, TwoStage):
            raise ValueError(f"two_stage must be a TwoStage, True or None, got {type(two).__name__}")
        if self.latent_upsampler is None:
            raise ValueError("two_stage needs a latent upsampler: load the engine with "
                             "Engine.from_pretrained(..., latent_upsampler=PATH)")
        return two.check("two_stage")

    def _check_pipeline(self, a: dict[str, Any]) -> None:
        """The pipeline, its inputs (image, conditions, latents) and the first stage's size."""
        two, n = a["two_stage"], a["num_frames"]
        mode = a["pipeline"]
        if mode is None:
            mode = ("condition" if a["conditions"] is not None or a["denoise_strength"] < 1 or two is not None
                    else "image-to-video" if a["image"] is not None else "text-to-video")
        if mode not in PIPELINES:
            raise ValueError(f"pipeline must be one of {PIPELINES} or None, got {mode!r}")
        if mode == "image-to-video" and a["image"] is None:
            raise ValueError("pipeline='image-to-video' needs image=")
        if mode != "image-to-video" and a["image"] is not None:
            if mode == "condition":
                a["conditions"], a["image"] = [Condition(image=a["image"], frame_index=0, strength=1.0)], None
            else:
                raise ValueError(f"image= is not used by pipeline={mode!r}")
        if mode != "condition" and a["denoise_strength"] < 1:
            raise ValueError(f"denoise_strength < 1 needs pipeline='condition', got pipeline={mode!r}")
        if two is not None and mode != "condition":
            raise ValueError(f"two_stage runs the 'condition' pipeline, got pipeline={mode!r}")
        a["pipeline"] = mode
        a["conditions"] = self._check_conditions(a["conditions"], n) if mode == "condition" else []
        a["stage1_size"] = (a["height"], a["width"]) if two is None else self._stage1_size(a, two)
        # preprocess the pixels at the first stage's size now, so a bad image fails before any work
        a["_pixels"] = {}
        stage_pixels(self, a, *a["stage1_size"])
        if a["max_sequence_length"] is None:
            a["max_sequence_length"] = 256 if mode == "condition" else 128
        if a["latents"] is not None:  # they start the first stage: its size
            a["latents"] = self._check_latents(a["latents"], *a["stage1_size"], n)

    def _stage1_size(self, a: dict[str, Any], two: TwoStage) -> tuple[int, int]:
        r = self.vae.spatial_compression_ratio
        h1 = int(a["height"] * two.downscale_factor) // r * r
        w1 = int(a["width"] * two.downscale_factor) // r * r
        if h1 < r or w1 < r:
            raise ValueError(f"two_stage.downscale_factor {two.downscale_factor} makes the first stage "
                             f"{h1}x{w1}, below one latent pixel ({r}x{r}); use a larger size or factor")
        return h1, w1

    def _check_schedules(self, a: dict[str, Any]) -> None:
        """Every stage's schedule built now (cheap: at most MAX_STEPS numbers), so one that cannot
        run, or a denoise strength that keeps none of its steps, fails before any model work."""
        r, rt = self.vae.spatial_compression_ratio, self.vae.temporal_compression_ratio
        f = (a["num_frames"] - 1) // rt + 1
        h1, w1 = a["stage1_size"]
        steps_name = ("timesteps" if a["timesteps"] is not None else "sigmas" if a["sigmas"] is not None
                      else "num_inference_steps")
        n = self._try_schedule(steps_name, a["pipeline"], f * (h1 // r) * (w1 // r), a["num_inference_steps"],
                               a["timesteps"], a["sigmas"])
        if a["pipeline"] == "condition" and a["denoise_strength"] < 1:
            check_kept_steps("denoise_strength", a["denoise_strength"], steps_name, n)
        two = a["two_stage"]
        if two is not None:  # TwoStage.check has checked its own strength against its steps
            name = "two_stage.timesteps" if two.timesteps is not None else "two_stage.num_inference_steps"
            self._try_schedule(name, "condition", f * (2 * h1 // r) * (2 * w1 // r), two.num_inference_steps,
                               two.timesteps, None)

    def _try_schedule(self, name: str, mode: str, seq_len: int, steps, timesteps, sigmas) -> int:
        try:
            return len(stage_schedule(self, mode, seq_len, steps, timesteps, sigmas))
        except ValueError as e:  # e.g. one step cannot be stretched to the config's shift_terminal
            raise ValueError(f"{name}: {e}") from None

    def _check_conditions(self, conditions, num_frames: int) -> list[Condition]:
        return check_conditions(conditions, num_frames, check_item=_check_condition_media)

    def _check_latents(self, latents, height: int, width: int, num_frames: int) -> torch.Tensor:
        r, rt = self.vae.spatial_compression_ratio, self.vae.temporal_compression_ratio
        shape = (1, self.transformer.config.in_channels, (num_frames - 1) // rt + 1, height // r, width // r)
        if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a tensor of shape {shape} (normalized, unpacked), got {got}")
        if not torch.isfinite(latents).all():
            raise ValueError("latents must be finite")
        return latents

    def _generate(self, a: dict[str, Any]) -> GenerationResult:
        """The checked call's run, stage by stage, in ltx_video_stages (one seam tests can replace)."""
        return run_generation(self, a)


def _check_condition_media(i: int, c: Condition) -> None:
    """An LTX-Video condition is an image or a video clip (of at most MAX_NUM_FRAMES frames: every
    frame is preprocessed before any work)."""
    if (c.image is None) == (c.video is None):
        raise ValueError(f"conditions[{i}]: set exactly one of image and video, got image="
                         f"{type(c.image).__name__} and video={type(c.video).__name__}")
    frames = len(c.video) if isinstance(c.video, (list, tuple)) or getattr(c.video, "ndim", 0) else 0
    if frames > MAX_NUM_FRAMES:
        raise ValueError(f"conditions[{i}].video must have at most {MAX_NUM_FRAMES} frames (MAX_NUM_FRAMES), "
                         f"got {frames}")


# -- sources -------------------------------------------------------------------------------------------

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _check_runtime_options(executor, offload, fp8_lora: str = "branch") -> None:
    """from_pretrained checks these before any weight is read (and the engine again when built)."""
    if executor not in EXECUTOR_MODES + ("none",):
        raise ValueError(f"executor must be one of {EXECUTOR_MODES + ('none',)}, got {executor!r}")
    names = (offload,) if isinstance(offload, str) else offload
    if not isinstance(names, (tuple, list)) or any(n not in Engine.OFFLOADABLE for n in names):
        raise ValueError(f"offload: components that can be offloaded are {Engine.OFFLOADABLE}, got {offload!r}")
    from .loading.lora import FP8_LORA_MODES
    if fp8_lora not in FP8_LORA_MODES:
        raise ValueError(f"fp8_lora must be one of {FP8_LORA_MODES}, got {fp8_lora!r}")


def resolve_source(path_or_repo_id, revision, local_files_only) -> Path:
    p = Path(path_or_repo_id).expanduser()
    if p.exists():
        return p
    name = str(path_or_repo_id)
    if not _REPO_ID.match(name):
        raise FileNotFoundError(f"path_or_repo_id: {name!r} is neither an existing file or folder nor a "
                                f"Hugging Face repo id ('owner/name')")
    try:
        from huggingface_hub import constants
    except ImportError:
        raise ImportError(f"path_or_repo_id: {name!r} looks like a Hugging Face repo id, but huggingface_hub is "
                          f"not installed; pip install huggingface_hub or pass a local path") from None
    timeout = constants.HF_HUB_ETAG_TIMEOUT
    try:
        folder = _hub_snapshot(name, revision, local_files_only, timeout)
    except Exception as e:  # offline, unknown repo, auth, no answer: one clear message, the cause chained
        # httpx's TimeoutException and requests' Timeout are not TimeoutErrors
        if isinstance(e, TimeoutError) or any("Timeout" in c.__name__ for c in type(e).__mro__):
            raise TimeoutError(f"path_or_repo_id: the Hugging Face Hub ({constants.ENDPOINT}) did not answer for "
                               f"{name!r} within {timeout} s (HF_HUB_ETAG_TIMEOUT). Check the network or "
                               f"HF_ENDPOINT, raise HF_HUB_ETAG_TIMEOUT, or download the folder elsewhere and pass "
                               f"its local path.") from e
        raise OSError(f"path_or_repo_id: could not get {name!r} from the Hugging Face Hub "
                      f"({type(e).__name__}: {e}). If this machine is offline, download the folder elsewhere "
                      f"and pass its local path.") from e
    return Path(folder)


def _hub_snapshot(name: str, revision, local_files_only: bool, timeout: float) -> str:
    """snapshot_download, after a first request that waits at most ``timeout``. snapshot_download's
    own listing requests have no timeout (huggingface_hub 0.2x to 2.x), so an endpoint that
    accepts and never answers hung it forever; such an endpoint now fails the probe. Its file
    requests wait ``timeout`` (metadata) and HF_HUB_DOWNLOAD_TIMEOUT per read. Not covered: a
    server that answers the probe, then stalls on a listing request."""
    from huggingface_hub import HfApi, constants, snapshot_download

    def download(local_only: bool) -> str:
        return snapshot_download(name, revision=revision, allow_patterns=_HUB_PATTERNS,
                                 local_files_only=local_only, etag_timeout=timeout)
    if local_files_only or constants.HF_HUB_OFFLINE:
        return download(local_files_only)
    try:
        HfApi().model_info(name, revision=revision, timeout=timeout)
    except Exception as probe:  # noqa: BLE001 - as snapshot_download does offline, a cached copy still serves
        try:
            return download(True)
        except Exception:  # noqa: BLE001 - not cached: the probe's error says why
            raise probe from None
    return download(False)


def _load_text_encoder(root, device, dtype) -> T5TextEncoder:
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
