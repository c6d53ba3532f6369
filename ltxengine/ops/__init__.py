"""The ops object: every fusable site in the models calls through one of these.

Models never import a kernel. They hold an ``Ops`` instance (``module.ops``) chosen once when
the engine is built (``Engine.from_pretrained(..., kernels=...)``); the default is the pure-torch
reference (``TORCH_OPS``). Backends:

- ``"torch"``: ``native.py``: on fp32 inputs the references in ``reference.py`` (fp32 math; the CPU
  path and the test oracle), on bf16/fp16 diffusers' arithmetic in the activation dtype;
- ``"triton"``: the Triton kernels of ``ltxengine.kernels`` (on a CPU they need Triton's
  interpreter, TRITON_INTERPRET=1, and are meant for testing);
- ``"cuda"``: the CUDA C++ kernels of ``ltxengine._C``, cuBLASLt (``torch._scaled_mm``) for fp8
  GEMMs, the references elsewhere;
- ``"auto"``: per op, the implementation we expect to be fastest on the device (see ``AUTO``).

Each fused op has one file here (``ada_norm.py``, ...) with its schema, the adapter to each
backend's launcher, the function put on ``Ops`` and its ``auto`` preference; ``FUSED_OPS`` lists
them and ``library.build`` makes a backend's ``Ops`` from that list.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from . import library, native, reference
from .ada_norm import ADA_NORM
from .ada_norm_fp8 import ADA_NORM_FP8, DUAL_ADA_NORM_FP8, RESIDUAL_ADA_NORM_FP8
from .attention_fp8 import ATTENTION_FP8
from .causal_conv3d import CAUSAL_CONV3D
from .dual_ada_norm import DUAL_ADA_NORM
from .fp8_linear import FP8_LINEAR
from .gated_residual import GATED_RESIDUAL
from .gated_residual_fp8 import GATED_RESIDUAL_FP8
from .gelu_quantize_fp8 import GELU_QUANTIZE_FP8
from .gguf_dequant import GGUF_DEQUANT, reference_gguf_dequant
from .head_gate import HEAD_GATE
from .head_gate_fp8 import HEAD_GATE_FP8
from .linear_gated_residual import LINEAR_GATED_RESIDUAL
from .linear_gelu import LINEAR_GELU
from .qk_norm_rope import QK_NORM_ROPE, reads_half_tables
from .quantize_fp8 import QUANTIZE_FP8
from .residual_ada_norm import RESIDUAL_ADA_NORM
from .scaled_mm import SCALED_MM

BACKENDS = ("auto", "torch", "triton", "cuda")


@dataclass(frozen=True)
class Ops:
    name: str
    # The torch backend (and any op a backend has no kernel for): the reference on fp32 inputs,
    # diffusers' 16-bit arithmetic on bf16/fp16 ones (native.py); the fp32 oracle stays reference.*.
    qk_norm_rope: Callable = native.qk_norm_rope
    ada_norm: Callable = native.ada_norm
    gated_residual: Callable = native.gated_residual
    # a gated residual and the adaLN that reads it next, in one pass; models call it only where a backend
    # has the kernel (transformer.attend_residual), so the torch backend keeps native's unfused pair
    residual_ada_norm: Callable = native.residual_ada_norm
    # one stream's norm modulated twice (LTX-2's a2v / v2a), after its pending residual if any; native's
    # is the unfused calls' bits with the norm computed once, so the torch backend uses it too
    dual_ada_norm: Callable = native.dual_ada_norm
    head_gate: Callable = native.head_gate  # LTX-2.3+ gated attention
    linear: Callable = reference.linear
    # Linears with their epilogue fused (the FFN up-projection's GELU, the output projections'
    # gated residual); the references are the models' unfused composition, bit for bit.
    linear_gelu: Callable = reference.linear_gelu
    linear_gated_residual: Callable = native.linear_gated_residual
    attention: Callable = reference.attention
    causal_conv3d: Callable = reference.causal_conv3d
    quantize_fp8: Callable = reference.quantize_fp8
    scaled_mm: Callable = reference.scaled_mm
    fp8_linear: Callable = reference.fp8_linear
    # the fp8 FFN's GELU + its down-projection's per-token quantization (models/transformer.py FeedForward)
    gelu_quantize_fp8: Callable = reference.gelu_quantize_fp8
    # an adaLN (after its pending residual) that also writes its output per-token quantized, for the
    # packed fp8 q/k/v that read it (models/residual.py ``residual_norm_fp8``); native: the unfused pair's bits
    ada_norm_fp8: Callable = native.ada_norm_fp8
    residual_ada_norm_fp8: Callable = native.residual_ada_norm_fp8
    dual_ada_norm_fp8: Callable = native.dual_ada_norm_fp8
    # a gated residual that also writes the new stream per-token quantized, for the fp8 GEMM reading the
    # raw stream next (LTX-Video's cross-attention to_q: models/residual.py ``attend_residual_fp8``)
    gated_residual_fp8: Callable = native.gated_residual_fp8
    # LTX-2.3+'s head gate writing only its output's per-token quantization, for an fp8 to_out (its only
    # reader: models/transformer.py Attention); native: the unfused head_gate + quantizer's bits
    head_gate_fp8: Callable = native.head_gate_fp8
    # q/k/v in e4m3 with per-(batch, head) scales: opt-in (``with_fp8_attention``), not a default:
    # ~5% relative error against fp32 attention on unit-RMS inputs vs ~0.4% for bf16 (tests/kernels/
    # test_fp8_attention.py), so it must first pass an end-to-end quality gate on a GPU
    attention_fp8: Callable = reference.attention_fp8
    gguf_dequant: Callable = reference_gguf_dequant  # GGUF weight blocks -> values (quant/gguf.py)
    # qk_norm_rope reads fp16 RoPE tables (models.common.rope_storage: 16-bit activations only)
    half_rope_tables: bool = False
    # op name -> backend that implements it (for `ltxengine info` and bench records)
    sources: tuple[tuple[str, str], ...] = ()


TORCH_OPS = Ops(name="torch")

# Every op with a fused implementation, one file each. The order is FUSED's, AUTO's and each
# backend's ``sources``' (ops composed of others, fp8_linear, come last there).
FUSED_OPS = (QK_NORM_ROPE, ADA_NORM, GATED_RESIDUAL, CAUSAL_CONV3D, QUANTIZE_FP8, SCALED_MM, FP8_LINEAR, ATTENTION_FP8,
             HEAD_GATE, GGUF_DEQUANT, LINEAR_GELU, LINEAR_GATED_RESIDUAL, RESIDUAL_ADA_NORM, DUAL_ADA_NORM,
             GELU_QUANTIZE_FP8, ADA_NORM_FP8, RESIDUAL_ADA_NORM_FP8, DUAL_ADA_NORM_FP8, GATED_RESIDUAL_FP8,
             HEAD_GATE_FP8)
FUSED = tuple(op.name for op in FUSED_OPS)
SCHEMAS = {op.name: op.schema for op in FUSED_OPS if op.schema is not None}  # the ops with kernels of their own

# kernels="auto" on a CUDA device: first available backend per op (each op file's ``auto``). A
# prior, not a measurement: the memory-bound fusions replace 4-8 eager kernels each, so Triton is
# expected to win; the implicit-GEMM conv and our fp8 GEMMs must first beat cuDNN / cuBLASLt in
# bench/ on the GPU before they are preferred there (see bench/README.md).
AUTO = {op.name: op.auto for op in FUSED_OPS}

_CACHE: dict[str, Ops] = {}


def _triton_ops(device: torch.device) -> Ops:
    if importlib.util.find_spec("triton") is None:
        raise ValueError("kernels='triton' needs the triton package (pip install triton)")
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("kernels='triton' on the CPU runs Triton's interpreter (slow, for testing): set "
                         "TRITON_INTERPRET=1 before importing ltxengine, or use kernels='torch'")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"kernels='triton' supports cuda (or cpu through the interpreter) devices, got {device}")
    if "triton" not in _CACHE:
        _CACHE["triton"] = build_backend("triton")
    return _CACHE["triton"]


def _cuda_ops(device: torch.device) -> Ops:
    if device.type != "cuda":
        raise ValueError(f"kernels='cuda' needs a CUDA device, got {device}")
    if "cuda" not in _CACHE:
        from . import cuda

        if not cuda.available():
            raise RuntimeError("kernels='cuda': ltxengine._C is missing or no CUDA device is usable")
        _CACHE["cuda"] = build_backend("cuda")
    return _CACHE["cuda"]


def build_backend(backend: str) -> Ops:
    """Every fused op ``backend`` has a kernel for (see library.build); the rest stay the reference.
    Nothing is loaded or checked here (bench/roofline.py builds the CUDA backend on any machine)."""
    fields, sources = library.build(backend, FUSED_OPS)
    return Ops(name=backend, sources=tuple(sources.items()), half_rope_tables=reads_half_tables(backend), **fields)


def compose_auto(backends: dict[str, Ops]) -> Ops:
    """kernels="auto" from the backends present (name -> Ops, "torch" always): per op the first of
    its ``AUTO`` preferences there. Also bench/roofline.py's model of auto on a CUDA device."""
    chosen = {}
    for op, prefs in AUTO.items():
        backend = next((b for b in prefs if b in backends), "torch")
        chosen[op] = (getattr(backends[backend], op), dict(backends[backend].sources).get(op, backend))
    return dataclasses.replace(TORCH_OPS, name="auto", **{op: f for op, (f, _) in chosen.items()},
                               sources=tuple((op, src) for op, (_, src) in chosen.items()),
                               half_rope_tables=reads_half_tables(chosen["qk_norm_rope"][1]))


def _auto_ops(device: torch.device) -> Ops:
    if device.type != "cuda":
        return TORCH_OPS
    if "auto" not in _CACHE:
        backends = {"torch": TORCH_OPS}
        for name, resolve in (("triton", _triton_ops), ("cuda", _cuda_ops)):
            try:
                backends[name] = resolve(device)
            except (ValueError, RuntimeError, ImportError):
                continue  # that backend is absent on this install; the next preference serves
        _CACHE["auto"] = compose_auto(backends)
    return _CACHE["auto"]


def get_ops(kernels: str = "auto", device: torch.device | str = "cpu") -> Ops:
    """Resolve the ``kernels=`` option of Engine.from_pretrained to an Ops instance for ``device``."""
    if kernels not in BACKENDS:
        raise ValueError(f"kernels must be one of {BACKENDS}, got {kernels!r}")
    device = torch.device(device)
    if kernels == "torch":
        return TORCH_OPS
    if kernels == "triton":
        return _triton_ops(device)
    if kernels == "cuda":
        return _cuda_ops(device)
    return _auto_ops(device)


def with_fp8_attention(ops: Ops) -> Ops:
    """``ops`` whose attention runs with q/k/v in e4m3 (``attention_fp8``)."""
    if ops.name.endswith("+fp8-attention"):
        return ops
    sources = dict(ops.sources)
    sources["attention"] = sources.get("attention_fp8", "torch") + " (fp8)"
    return dataclasses.replace(ops, name=ops.name + "+fp8-attention", attention=ops.attention_fp8,
                               sources=tuple(sources.items()))


def set_ops(model: nn.Module, ops: Ops) -> nn.Module:
    """Point every ops-using submodule of ``model`` at ``ops``."""
    for module in model.modules():
        if hasattr(module, "ops"):
            module.ops = ops
    return model


__all__ = ["Ops", "TORCH_OPS", "BACKENDS", "FUSED", "FUSED_OPS", "SCHEMAS", "AUTO", "get_ops", "set_ops",
           "build_backend", "compose_auto",
           "with_fp8_attention", "reference"]
