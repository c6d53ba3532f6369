"""``ltxengine.Engine``: load once, generate many times.

    engine = Engine.from_pretrained("path/to/checkpoint")   # an LTXVideoEngine or an LTX2Engine
    result = engine.generate("a red car drives through the rain", height=512, width=704, num_frames=121,
                             seed=0)
    result.save("out.mp4")

This module is the core both families share: ``from_pretrained`` (which hands a checkpoint to its
family's engine class through a registry), the lock that serializes ``generate`` calls, the step
executor and where offloadable components live, the memory check against a plan cached per
request shape, and the kernels / quantization properties. A family's engine class (LTX-Video:
ltx_video/engine.py, LTX-2: ltx2/engine.py) registers itself by subclassing ``Engine`` with
``family=`` and ``detect=``, defines ``load`` and ``generate`` (its keyword API), and three hooks:
``_request(arguments) -> request`` (the checked, frozen request: every argument checked before any
work), ``_plan(request) -> MemoryPlan`` and ``_generate(request) -> GenerationResult`` (run under
the lock, after the memory check). The core never imports a family module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import threading
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch

from .checks import MAX_CONDITIONS, MAX_NUM_FRAMES, MAX_SEQUENCE_LENGTH, MAX_SIDE, MAX_STEPS, SEED_MAX
from .executor.graphs import MODES as EXECUTOR_MODES
from .executor.graphs import GraphExecutor
from .executor.block_offload import DEFAULT_GROUP_SIZE, BlockOffload, check_group_size, layer_stack
from .executor.plan import InsufficientMemoryError, MemoryPlan, MemoryPlanError, available_bytes, fmt_bytes
from .adapters import Adapters
from .executor.residency import Residency
from .loading.gguf import is_gguf
from .loading.gguf_transformer import gguf_base
from .loading.sources import resolve_source
from .ops import FUSED, get_ops, with_fp8_attention
from .models.packing import pack_projections
from .planning import disk_cached_plan, measure, store_plan
from .results import STOP, GenerationCancelled, GenerationResult

# the result types and the argument bounds live in results.py and checks.py; they stay importable
# from here, where they were first documented
__all__ = ["MAX_CONDITIONS", "MAX_NUM_FRAMES", "MAX_SEQUENCE_LENGTH", "MAX_SIDE", "MAX_STEPS", "SEED_MAX", "STOP",
           "Engine", "GenerationCancelled", "GenerationResult"]

# The model families: name -> (detect(path) -> bool, engine class). A family's engine class registers
# itself by subclassing Engine with family= and detect= (ltxengine/__init__.py imports each family's
# engine module); the one registered with fallback=True (LTX-Video) loads what no detect() claims,
# so its loader is the one that says what is wrong with an unknown checkpoint.
_FAMILIES: dict[str, tuple[Callable[[Path], bool] | None, type]] = {}
_FALLBACK: list[type] = []


def _family_of(path: Path, called: type) -> type:
    """The engine class that loads ``path``: the family whose detect() claims it, else the class
    called (a subclass loads what it is given), else the fallback family."""
    found = next((engine_cls for detect, engine_cls in _FAMILIES.values() if detect is not None and detect(path)),
                 None)
    if found is not None:
        return found
    return called if called is not Engine else _fallback_family()


def _fallback_family() -> type:
    if not _FALLBACK:
        raise RuntimeError("no engine family is registered (import ltxengine, not ltxengine.engine alone)")
    return _FALLBACK[0]


class Engine:
    """The core of every family's engine; ``Engine.from_pretrained`` returns the family's engine.
    ``generate`` calls are serialized by a lock, so concurrent calls from several threads run one
    after the other and each gets its own correct result."""

    family = ""
    # the VAE encoder only encodes image / video conditions: a text-to-video engine never needs it
    # "transformer_between_stages": the DiT in host memory while the text encoder or upsampler runs
    OFFLOADABLE = ("text_encoder", "latent_upsampler", "vae_encoder", "transformer_between_stages")
    # streamed block by block (executor/block_offload.py) rather than moved whole
    STREAMED = ("transformer", "text_encoder_layers")

    def __init_subclass__(cls, family: str | None = None, detect: Callable[[Path], bool] | None = None,
                          fallback: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        if family is not None:
            if (detect is None and not fallback) or family in _FAMILIES:
                raise TypeError(f"{cls.__name__}: family {family!r} needs a detect= function and a name of its "
                                f"own (registered: {sorted(_FAMILIES)})")
            if fallback and _FALLBACK:
                raise TypeError(f"{cls.__name__}: {_FALLBACK[0].__name__} is already the fallback family")
            _FAMILIES[family] = (detect, cls)
            cls.family = family
            if fallback:
                _FALLBACK.append(cls)

    def __new__(cls, *args, **kwargs):
        # Engine(transformer, vae, text_encoder, ...) built an LTX-Video engine before the families
        # were peers; it still does, with a warning
        if cls is Engine:
            warnings.warn("Engine(...) builds an LTXVideoEngine; construct ltxengine.LTXVideoEngine(...) (or use "
                          "Engine.from_pretrained)", DeprecationWarning, stacklevel=2)
            cls = _fallback_family()
        return super().__new__(cls)

    def _setup_runtime(self, executor: str, offload: Sequence[str]) -> None:
        """The step executor (CUDA graphs on CUDA, static buffers and the same keys elsewhere;
        "none" calls the model directly) and where offloadable components live between uses
        ("transformer": its blocks streamed in groups of 2, see ``stream_blocks``; "text_encoder_layers":
        the text encoder's layers, one at a time, see ``stream_text_encoder``)."""
        _check_runtime_options(executor, offload)
        names, offload, executor = _split_offload(offload, executor)
        pack_projections(self.transformer)  # q/k/v as one GEMM, before block streaming or graph capture
        self.block_offload = None
        self.memory_budget = None  # bytes: generate picks offload / tiling to fit (budget.py)
        self.memory_choice = None  # what it picked for the last request
        self._lock = threading.Lock()
        self._lora = None  # the LoraSet, made on first use (lora_manager)
        self.fp8_lora = "branch"  # each family's load sets from_pretrained's fp8_lora
        self.adapters = Adapters(self.lora_manager)
        self.executor = None if executor == "none" else GraphExecutor(self.device, executor)
        self.residency = Residency(self.device, offload, self.OFFLOADABLE)
        self.residency.transformer = self.transformer
        self._weights_version = 0
        self.check_memory = True
        self.plan_cache = True  # plans kept on disk too (executor/plan_cache.py; LTXENGINE_PLAN_CACHE=0: off)
        self._plans: dict[tuple, MemoryPlan] = {}
        self.parallel = None  # a ParallelState (parallel/config.py) when generations span several ranks
        for name in self.OFFLOADABLE:
            self.residency.park(name, self.offloadable(name))
        if "transformer" in names:
            self.stream_blocks(DEFAULT_GROUP_SIZE)
        if "text_encoder_layers" in names:
            self.stream_text_encoder(True)

    def stream_text_encoder(self, on: bool) -> None:
        """Stream the text encoder's layers (its largest layer stack: Gemma's 48 decoder layers, T5's
        24 blocks) one at a time from pinned host memory while it encodes, the rest of it moved
        whole as ``offload`` says; False: its layers move with it again."""
        te = self.offloadable("text_encoder")
        current = self.residency.streamed.get("text_encoder")
        if te is None or on == (current is not None):
            return
        if current is not None:
            current.close()
            del self.residency.streamed["text_encoder"]
            self.residency.park("text_encoder", te)
            return
        layers, owner = layer_stack(te)
        with torch.inference_mode(False):  # Parameter.data must not become an inference tensor
            self.residency.streamed["text_encoder"] = BlockOffload(layers, self.device, 1, owner=owner)

    def stream_blocks(self, group_size: int | None) -> None:
        """Keep the transformer's blocks in host memory and stream them to the device in groups of
        ``group_size`` (executor/block_offload.py); None: every block resident again. A captured
        step cannot hold the copies of changing blocks, so streamed engines run steps eagerly."""
        if group_size is not None:
            check_group_size(group_size, len(self.transformer.transformer_blocks))
        if self.block_offload is not None:
            if group_size == self.block_offload.group_size:
                return
            self.block_offload.close(to_device=group_size is None)  # regrouped: host to host, never whole on it
            self.block_offload = None
            del self.residency.streamed["transformer"]
            if group_size is None:  # resident again, each weight in its own storage: one q/k/v GEMM again
                pack_projections(self.transformer)
        if group_size is not None:
            if self.executor is not None and self.executor.mode == "graphs":
                self.executor = GraphExecutor(self.device, "eager")
            with torch.inference_mode(False):  # Parameter.data must not become an inference tensor
                self.block_offload = BlockOffload(self.transformer.transformer_blocks, self.device, group_size,
                                                  owner=self.transformer)
            self.residency.streamed["transformer"] = self.block_offload  # whole moves leave the blocks

    def offloadable(self, name: str):
        """The module an ``offload`` name moves."""
        if name == "vae_encoder":
            return getattr(self.vae, "encoder", None)  # None: an engine without a video VAE (LTX-2 audio only)
        if name == "transformer_between_stages":
            return None  # moved by Residency.use around the text encoder and upsampler, never parked
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

    # ---- LoRA adapters (diffusers' names; see adapters.py) -------------------------------------------
    def load_lora_weights(self, path_or_state_dict, adapter_name: str | None = None) -> str:
        """Load a LoRA (a .safetensors path or a state dict, diffusers/PEFT or Lightricks/ComfyUI
        layout) as ``adapter_name`` (default "default_<i>"); it is checked against the model and
        becomes active at weight 1.0 alongside the active ones. -> the adapter's name."""
        with self._lock:
            return self.adapters.load(path_or_state_dict, adapter_name)

    def set_adapters(self, adapter_names, adapter_weights=None) -> None:
        """Make exactly these loaded adapters active, with these weights (one for all, or one each)."""
        with self._lock:
            self.adapters.set(adapter_names, adapter_weights)

    def get_active_adapters(self) -> list[str]:
        return self.adapters.get_active()

    def delete_adapters(self, adapter_names) -> None:
        with self._lock:
            self.adapters.delete(adapter_names)

    def unload_lora_weights(self) -> None:
        """Remove every adapter: the weights are bit-exact the checkpoint's again."""
        with self._lock:
            self.adapters.unload()

    def lora_manager(self):
        """The LoraSet that fuses LoRAs into the modules of ``_lora_modules`` (made on first use)."""
        if self._lora is None:
            from .loading.lora import LoraSet
            self._lora = LoraSet(self._lora_modules(), fp8_lora=self.fp8_lora)
        return self._lora

    def _lora_modules(self) -> dict:
        """The modules LoRAs may touch, by the component names of LoRA files."""
        return {"transformer": self.transformer}

    @property
    def graph_variant(self) -> tuple:
        """What captured graphs depend on besides ``graph_state``: the fp8 LoRA branches active now."""
        return self._lora.graph_variant if self._lora is not None else ()

    @property
    def kernels(self) -> dict[str, str]:
        """Which implementation serves each fused op ("torch", "triton", "cuda", "cublas"), as
        chosen by ``from_pretrained(kernels=...)``."""
        sources = dict(self.transformer.ops.sources)
        return {op: sources.get(op, "torch") for op in FUSED}

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_repo_id, device=None, dtype: torch.dtype = torch.bfloat16, *,
                        text_encoder=None, latent_upsampler=None, kernels: str = "auto", components=None,
                        scheduler_config: dict | None = None, revision: str | None = None,
                        local_files_only: bool = False, distilled_lora=None,
                        quantization: str | None = None, fp8_attention: bool = False, fp8_lora: str = "branch",
                        executor: str = "auto", offload: Sequence[str] = (),
                        modalities: Sequence[str] | None = None,
                        offload_group_size: int | None = None, memory_budget: str | int | None = None,
                        parallel=None) -> "Engine":
        """A diffusers folder (``model_index.json``), a Lightricks single-file ``.safetensors``, or a
        Hugging Face repo id (downloaded with huggingface_hub; diffusers-format repos).

        text_encoder: for single files, a folder with the T5 encoder and tokenizer (a diffusers
        LTX-Video folder, or a folder holding ``text_encoder/`` and ``tokenizer/``, or one T5
        folder with both), or a loaded ``T5TextEncoder``.
        latent_upsampler: path of the spatial latent upsampler (folder or single file) for two-stage
        generation; a diffusers folder's own ``latent_upsampler/`` (or an LTX-2.5 folder's only spatial
        upscaler) is used when present. Its kind comes from its config: x2, or LTX-2.3's x1.5 (stage 1
        at 2/3 of the size); a temporal upscaler is refused (see loading/ltx2_upsamplers.py).
        scheduler_config: overrides the folder's ``scheduler/scheduler_config.json``; single files
        default to the 0.9.0/0.9.1 diffusers scheduler (resolution-dependent shift, terminal 0.1).
        A ``.gguf`` file (city96's LTX-Video GGUFs, LTX-2 GGUFs) holds the transformer alone, its
        linear weights kept in the file's quant types on the device (loading/gguf_transformer.py):
        components= is then the diffusers folder or Lightricks single file that supplies its config
        and every other component (its own transformer weights are not read).

        Each family's checkpoints return that family's engine: LTX-Video ones an
        ``LTXVideoEngine`` (ltx_video/engine.py), LTX-2 bundles and diffusers folders an
        ``LTX2Engine`` (ltx2/engine.py):
        text_encoder is then the Gemma folder (Gemma 3; Gemma 4 for 2.5; a diffusers folder's own
        ``text_encoder/`` is used), latent_upsampler the spatial x2 upsampler for the two-stage pipelines, and
        distilled_lora the LoRA fused for stage 2 (ltx-2-19b-distilled-lora-384).

        quantization: fp8 weights for the transformer's linear layers (see ltxengine.quant.fp8):
        "fp8-cast" (fp8 storage, compute in ``dtype``; any device and dtype) or "fp8-scaled-mm"
        (fp8 GEMM: CUDA sm_89+, or emulated on CPU; bf16/fp16 only). bf16 checkpoints are quantized
        at load; fp8 checkpoints (Lightricks ``-fp8``, ComfyUI fp8) load with their own scales, and
        with None they keep fp8 storage under the device's best policy. ``engine.quantization`` is
        the policy in force (None: full precision). fp8_attention: q/k/v of every attention in e4m3
        (opt-in: ~5% relative error per attention against ~0.4% for bf16; see README).
        fp8_lora: how LoRAs (adapters, LTX-2's distilled LoRA) reach fp8 layers, "branch"
        (unmerged, closest to bf16) or "merge" (dequantize, add, requantize).

        executor: "auto" (CUDA graphs on CUDA, else eager), "graphs", "eager" (the same static
        buffers, no capture) or "none" (plain calls). offload: components kept in host memory
        and moved to the device only while used, from ("text_encoder", "latent_upsampler",
        "vae_encoder"), and "transformer": its blocks load straight to pinned host memory (never the
        whole DiT on the device, loading/placement.py) and stream to the
        device ``offload_group_size`` blocks at a time (default 2), the next group prefetched while
        one computes; steps then run eagerly (executor "auto" -> "eager"; "graphs" is refused);
        "text_encoder_layers": the text encoder's layers stream the same way, one at a time.
        memory_budget: e.g. "24GB" / "20GiB" / bytes: each generate picks the least offload (components,
        then VAE tiling, then streamed blocks with the largest group size) whose planned peak fits
        (``engine.memory_choice``; ``engine.plan_options(...)`` lists every option's plan); a
        request nothing fits is refused naming the smallest plan's peak; a DiT larger than the budget
        loads its blocks to the host and streams from load. Not with ``offload``.
        modalities: LTX-2 only: ("audio",) loads the audio stream alone (text-to-audio; the video
        weights are neither built nor read); None: the whole model.
        parallel: a ``ltxengine.parallel.config.ParallelConfig(sequence=S, guidance=G)`` to run each
        generation over S x G processes (torchrun; see README "Several GPUs"), or None: torchrun's
        environment when WORLD_SIZE > 1 (every rank sequence parallel), else one process. Every
        rank loads the whole model and returns the same result; rank 0 alone writes ``output``.
        """
        from .parallel.config import resolve as resolve_parallel
        parallel = resolve_parallel(parallel)  # the world size checked before any work
        _check_runtime_options(executor, offload, fp8_lora)
        from .budget import check_load_options
        budget = check_load_options(offload, offload_group_size, memory_budget, executor)
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        from .quant.fp8 import validate_policy
        validate_policy(quantization, device, dtype)
        state = None
        if parallel is not None:
            from .parallel.config import init as init_parallel
            state = init_parallel(parallel, device)
            device = state.device  # CUDA: this rank's GPU
        if kernels == "cuda" and dtype != torch.bfloat16:
            raise ValueError(f"kernels='cuda': the CUDA C++ kernels take bfloat16 activations, got dtype={dtype}; "
                             f"use dtype=torch.bfloat16 or kernels='triton'/'torch'")
        ops = get_ops(kernels, device)
        if fp8_attention:
            ops = with_fp8_attention(ops)
        path = resolve_source(path_or_repo_id, revision, local_files_only)
        gguf = None
        if is_gguf(path):  # the transformer alone: its config and the other components from components=
            gguf, path = path, gguf_base(path, components, quantization)
        elif components is not None:
            raise ValueError(f"components: only a .gguf checkpoint takes components=, got {path}")
        family = _family_of(path, cls)
        extra = {} if gguf is None else {"gguf": gguf}
        if modalities is not None:  # only families that load a subset of their modalities take it
            if "modalities" not in inspect.signature(family.load).parameters:
                raise ValueError(f"modalities: {family.family} checkpoints load whole (LTX-2 ones may load "
                                 f"modalities=('audio',)), got modalities={modalities!r}")
            extra["modalities"] = modalities
        names, offload, executor = _split_offload(offload, executor)  # the streamed names apply after load
        streamed = "transformer" in names
        if budget is not None:  # the text encoder loads to the host: the budget's choice may bring it over
            offload = ("text_encoder",)  # (a budget comes without offload names: check_load_options)
        from .loading.placement import blocks_on_host
        # blocks that will stream load straight to the host, so a DiT larger than the device loads; under a
        # budget only a DiT larger than the budget (then every option it can pick streams): loading/placement.py
        host = blocks_on_host("cpu", None if streamed else budget) if streamed or budget else contextlib.nullcontext()
        with host as placed:
            engine = family.load(path, device, dtype, ops, text_encoder=text_encoder,
                                 latent_upsampler=latent_upsampler, scheduler_config=scheduler_config,
                                 distilled_lora=distilled_lora, quantization=quantization, fp8_lora=fp8_lora,
                                 executor=executor, offload=offload, **extra)
        if streamed:
            engine.stream_blocks(offload_group_size or DEFAULT_GROUP_SIZE)
        elif placed is not None and placed.used:  # the budget's first generate picks the group size
            engine.stream_blocks(min(DEFAULT_GROUP_SIZE, len(engine.transformer.transformer_blocks)))
        if "text_encoder_layers" in names:
            engine.stream_text_encoder(True)
        if budget is not None:  # only then: a family's load may return a stand-in (test_families)
            engine.memory_budget = budget
        if state is not None:
            engine._attach_parallel(state)
        return engine

    @classmethod
    def load(cls, path: Path, device, dtype, ops, **options) -> "Engine":
        """The family's engine from a local checkpoint (``from_pretrained`` has resolved the path
        and checked the options)."""
        raise NotImplementedError(f"{cls.__name__} is not a model family's engine: it cannot load {path}")

    # ---- several ranks (ltxengine/parallel) ------------------------------------------------------
    def _attach_parallel(self, state) -> None:
        """This engine's generations span the ranks of ``state`` (a ParallelState): with a sequence
        group of several ranks the transformer shards its video tokens over it."""
        self.parallel = state
        if state.config.sequence > 1:
            from .parallel import sequence
            sequence.enable(self.transformer, state.sequence_group)

    @property
    def guidance_group(self):
        """The group a step's guidance passes are split over (None: every pass on this rank)."""
        state = self.parallel
        return state.guidance_group if state is not None and state.config.guidance > 1 else None

    def _parallel_request(self, request):
        """The split checked against this request's video tokens (every stage's) before any work, the
        same random stream on every rank (rank 0's random seed; given generators must agree), and off
        rank 0 no file written."""
        state = self.parallel
        if state.config.sequence > 1:
            from .parallel import sequence
            for tokens in self._video_tokens(request):
                sequence.check(self.transformer, state.sequence_group, tokens)
        from .parallel.config import agreed_seed
        seed = agreed_seed(request.seed, request.generator)
        changes = {} if seed == request.seed else {"seed": seed}
        if not state.is_main:
            changes["output"] = None
        return dataclasses.replace(request, **changes) if changes else request

    def _video_tokens(self, request) -> list[int]:
        """The video token count of each transformer stage of ``request`` (the family knows them)."""
        raise NotImplementedError

    # ---- generation ----------------------------------------------------------------------------
    def _run(self, request):
        """``generate``'s body once its arguments are a checked request: one call at a time, the
        memory checked before any work."""
        with self._lock, torch.inference_mode():
            if self.parallel is not None:  # under the lock: two threads' collectives must not interleave
                request = self._parallel_request(request)
            if self.memory_budget is not None:  # offload / tiling picked for this request (budget.py)
                from .budget import fit_budget
                request = fit_budget(self, request)
            self._check_memory(request)
            try:
                with self.adapters.for_call(request.loras):
                    return self._generate(request)
            finally:
                if self.block_offload is not None:  # a failed step may leave groups on the device
                    self.block_offload.evict_all()

    def plan_options(self, prompt: str = "", negative_prompt: str | None = None, **kwargs) -> list:
        """[(MemoryChoice, MemoryPlan)] of ``generate(prompt, ...)`` under every offload / tiling
        option a ``memory_budget`` picks from, least offload first (budget.py)."""
        from .budget import plan_options
        bound = inspect.signature(self.generate).bind(prompt, negative_prompt, **kwargs)
        bound.apply_defaults()
        args = self._request(dict(bound.arguments))
        with self._lock, torch.inference_mode():
            return plan_options(self, args)

    def plan(self, prompt: str = "", negative_prompt: str | None = None, **kwargs) -> MemoryPlan:
        """The memory plan of ``generate(prompt, negative_prompt, **kwargs)`` without running it:
        the peak per phase (text, denoise, upsample, refine, decode), whether it fits the memory
        available now (device memory on CUDA, host RAM on the CPU), and if not the largest frame
        count / size that does. Nothing is allocated (the phases are traced on fake tensors), so
        any request within the argument bounds can be planned. With a ``memory_budget``: the plan
        of the option generate would pick (``plan.choice``; InsufficientMemoryError if none fits).
        Always traced afresh; it then serves ``generate``'s own check of the same request (in memory
        and, with the plan cache on, on disk), so an app can plan its shapes at startup."""
        bound = inspect.signature(self.generate).bind(prompt, negative_prompt, **kwargs)
        bound.apply_defaults()
        args = self._request(dict(bound.arguments))
        with self._lock, torch.inference_mode():
            if self.memory_budget is not None:
                from .budget import choose
                return choose(self, args, self.memory_budget)[1]
            plan = self._plan(args)
            if self.check_memory:
                shape, key = self._plan_keys(args)
                self._plans[key] = dataclasses.replace(plan)  # the check re-measures its own copy
                store_plan(self, shape, plan)
            return plan

    def _check_memory(self, args) -> None:
        """Refuse a generation whose planned peak does not fit the memory it can use (device
        memory on CUDA, host RAM on the CPU) before doing any work. Plans are cached per shape;
        ``engine.check_memory = False`` skips the check. A plan that fails stops the generation
        too (MemoryPlanError): unchecked, an oversized request could take the machine down."""
        if not self.check_memory or available_bytes(self.device) is None:  # None: free memory unknown
            return
        shape, key = self._plan_keys(args)
        plan = self._plans.get(key)
        if plan is None:
            try:  # on disk the weights' identity is their components' fingerprint (planning.disk_cached_plan)
                plan = self._plans[key] = disk_cached_plan(self, shape, lambda: self._plan(args))
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

    def _plan_keys(self, args) -> tuple[tuple, tuple]:
        """(what the plan of ``args`` reads besides the weights, that plus the weights' identity): the
        request, what is offloaded and what streams (the DiT's blocks and their group size, the text
        encoder's layers) - its weights terms -, the executor's mode (its kept buffers); each can
        change after load. On disk the weights' identity is their components' fingerprint."""
        streamed = tuple(sorted((name, s.group_size) for name, s in self.residency.streamed.items()))
        shape = (type(args).__name__, *args.plan_key(), tuple(sorted(self.residency.offload)), streamed,
                 getattr(self.executor, "mode", None))
        return shape, (*shape, self.graph_state())

    # ---- the family's hooks -----------------------------------------------------------------------
    def _request(self, args: dict):
        """``generate``'s arguments (its locals) -> the family's checked, frozen request."""
        raise NotImplementedError

    def _plan(self, request) -> MemoryPlan:
        raise NotImplementedError

    def _generate(self, request) -> GenerationResult:
        raise NotImplementedError


def _split_offload(offload, executor: str) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """``offload`` (a name or names) -> (every name, the components moved whole (no ``Engine.STREAMED``
    name), the executor mode): a captured step reads the DiT's weights by address, so a streamed or
    moved DiT runs its steps eagerly ("auto" becomes "eager")."""
    names = (offload,) if isinstance(offload, str) else tuple(offload)
    whole = tuple(n for n in names if n not in Engine.STREAMED)
    moved = "transformer" in names or "transformer_between_stages" in whole
    return names, whole, "eager" if moved and executor == "auto" else executor


def _check_runtime_options(executor, offload, fp8_lora: str = "branch") -> None:
    """from_pretrained checks these before any weight is read (and the engine again when built)."""
    if executor not in EXECUTOR_MODES + ("none",):
        raise ValueError(f"executor must be one of {EXECUTOR_MODES + ('none',)}, got {executor!r}")
    names = (offload,) if isinstance(offload, str) else offload
    known = Engine.OFFLOADABLE + Engine.STREAMED
    if not isinstance(names, (tuple, list)) or any(n not in known for n in names):
        raise ValueError(f"offload: components that can be offloaded are {known}, got {offload!r}")
    for moved in ("transformer", "transformer_between_stages"):
        if moved in names and executor == "graphs":
            raise ValueError(f"executor='graphs' cannot run with offload=('{moved}',): a captured step reads the "
                             f"transformer's weights where they were at capture, and they move; use executor='auto' "
                             f"or 'eager'")
    from .loading.lora import FP8_LORA_MODES
    if fp8_lora not in FP8_LORA_MODES:
        raise ValueError(f"fp8_lora must be one of {FP8_LORA_MODES}, got {fp8_lora!r}")
