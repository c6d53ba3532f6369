"""fp8 (float8_e4m3fn) weights for the transformers' linear layers.

Two policies, named after the reference's (``ltx_core.quantization``, ltx-core 1.0.0):

- ``"fp8-cast"``: fp8 storage, compute in the activation dtype. The weight is dequantized
  (``w8 * weight_scale``) on each call and fed to an ordinary linear; runs on any device.
- ``"fp8-scaled-mm"``: fp8 GEMM. The activation is quantized too (static ``input_scale`` when
  the checkpoint has one, else dynamic per token) and ``ops.fp8_linear`` multiplies e4m3 x
  e4m3 with fp32 accumulation (cuBLASLt / our kernels on sm_89+, the fp32 emulation on CPU).

Every fp8 weight here carries a per-tensor fp32 scale (the layer's weight is
``weight.float() * weight_scale``), so the same module holds a bf16 checkpoint quantized at
load, a Lightricks ``-fp8`` file (its own scales) or a scale-less fp8 file (scale 1).
Weight layout is nn.Linear's (out, in), not the reference's transposed (in, out) cuBLAS copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Collection, Iterable

import torch
import torch.nn as nn

from ..models.common import OpsLinear
from ..ops import TORCH_OPS, Ops, reference

POLICIES = ("fp8-cast", "fp8-scaled-mm")
FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = reference.FP8_MAX


# -- which layers a policy converts ------------------------------------------------------------

@dataclass(frozen=True)
class TargetRule:
    """Linears inside ``transformer_blocks.<i>.`` that a policy converts.

    ``suffixes``: the module name must end with one of these (None: every linear of the block);
    ``skip_first`` / ``skip_last``: blocks at either end that stay in full precision;
    ``keep``: name endings that stay in full precision in every block (KEEP_FULL_PRECISION).
    """

    suffixes: tuple[str, ...] | None
    skip_first: int
    skip_last: int
    source: str
    keep: tuple[str, ...] = ()


# The reference's rules (ltx-core 1.0.0, ltx_core/quantization/):
# - fp8_cast.py TRANSFORMER_LINEAR_DOWNCAST_MAP: keys under "transformer_blocks." ending in
#   ".to_q/.to_k/.to_v/.to_out.0" or "ff.net.0.proj/ff.net.2" (no leading dot, so LTX-2's
#   "audio_ff.*" matches too; the attention suffixes match every attention of an LTX-2 block).
# - fp8_scaled_mm.py EXCLUDED_LAYER_SUBSTRINGS: every linear except patchify/proj_out, the
#   adaLN-singles, the caption projections, "transformer_blocks.0." and blocks 43-47 of the
#   48-block 19B model. We generalize the block list to "the first block and the last five" for
#   any depth (28-block 2B: 1-22 converted; 48-block 13B/19B: 1-42), and keep it to the blocks:
#   the linears outside them are the ones the reference excludes by name.
#
# LTX-2.3 / 2.5 add one linear per attention, the per-head gate ``to_gate_logits`` (dim -> heads),
# and Lightricks' reference (@400fd31) keeps it in bf16 wherever it quantizes at load: fp8_cast.py
# leaves it a plain nn.Linear (not in _FP8_CAST_LINEAR_SUFFIXES, and its prequant fold dequantizes
# it from a -fp8 file to bf16), blockwise/_impl.py lists it in EXCLUDED_LAYER_SUBSTRINGS and its
# module swap's skip_list, nvfp4/convert.py's allowlist leaves it out. The other names of those
# lists (patchify/proj_out, adaLN-singles, caption projections, scale_shift_table) are outside the
# blocks or not linears, which the rules exclude already. Its current fp8_scaled_mm.py quantizes
# nothing itself (it runs the layers a -fp8 file stores with a weight_scale; prepare_fp8 does too).
# 2.0 has no gate, so its targets are unchanged.
KEEP_FULL_PRECISION = (".to_gate_logits",)

RULES: dict[str, TargetRule] = {
    "fp8-cast": TargetRule((".to_q", ".to_k", ".to_v", ".to_out.0", "ff.net.0.proj", "ff.net.2"), 0, 0,
                           "ltx_core/quantization/fp8_cast.py TRANSFORMER_LINEAR_DOWNCAST_MAP", KEEP_FULL_PRECISION),
    "fp8-scaled-mm": TargetRule(None, 1, 5, "ltx_core/quantization/fp8_scaled_mm.py EXCLUDED_LAYER_SUBSTRINGS",
                                KEEP_FULL_PRECISION),
}

_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.(.+)$")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"quantization must be one of {POLICIES} or None, got {policy!r}")
    return policy


def fp8_targets(model: nn.Module, policy: str) -> list[str]:
    """Qualified names of the linear layers (OpsLinear, or Fp8Linear already converted) of an
    LTX-Video or LTX-2 transformer that ``policy`` stores in fp8, in module order."""
    rule = RULES[check_policy(policy)]
    blocks = getattr(model, "transformer_blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError(f"fp8_targets: model must be a transformer with a 'transformer_blocks' ModuleList, "
                         f"got {type(model).__name__}")
    first, last = rule.skip_first, len(blocks) - rule.skip_last
    names = []
    for name, module in model.named_modules():
        m = _BLOCK.match(name)
        if m is None or not isinstance(module, (OpsLinear, Fp8Linear)):
            continue
        if not first <= int(m.group(1)) < last:
            continue
        if name.endswith(rule.keep):
            continue
        if rule.suffixes is None or name.endswith(rule.suffixes):
            names.append(name)
    return names


def keeps_full_precision(name: str, policy: str) -> bool:
    """Whether ``policy`` keeps the linear ``name`` in full precision by name (the gate projections)."""
    return name.endswith(RULES[check_policy(policy)].keep)


# -- quantization ------------------------------------------------------------------------------

def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w (out, in) -> (w8 float8_e4m3fn (out, in), scale fp32 0-d) with w ~ w8 * scale.

    Per-tensor scale amax / 448 (an all-zero weight gets reference.FP8_MIN_AMAX / 448 so the
    scale stays positive); round to nearest even, saturating at +-448 (reference.quantize_fp8).
    """
    if not isinstance(w, torch.Tensor) or w.ndim != 2 or not w.is_floating_point():
        raise ValueError(f"quantize_weight: w must be a 2-D floating tensor (out, in), got "
                         f"{tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}"
                         f"{' ' + str(w.dtype) if isinstance(w, torch.Tensor) else ''}")
    if w.dtype == FP8_DTYPE:
        raise ValueError("quantize_weight: w is already float8_e4m3fn; it needs its own scale, not a new one")
    bad = int((~torch.isfinite(w)).sum())
    if bad:
        raise ValueError(f"quantize_weight: w {tuple(w.shape)} has {bad} non-finite values (inf/NaN); "
                         "an fp8 scale cannot represent them")
    w8, scale = reference.quantize_fp8(w)
    return w8.view(w.shape), scale.reshape(())


def dequantize(w8: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """w8 * scale computed in fp32, rounded once to ``dtype``."""
    return (w8.float() * scale.float()).to(dtype)


# -- the module --------------------------------------------------------------------------------

class Fp8Linear(nn.Module):
    """A linear layer with an e4m3 weight (out, in) and a per-tensor fp32 ``weight_scale``.

    ``input_scale`` (static activation scale of Lightricks' scaled-mm files) exists only when
    ``static_input``; it is used by "fp8-scaled-mm", ignored by "fp8-cast". ``bias`` is kept in
    the model dtype. ``keep_dtype`` tells load_strict which tensors keep their stored dtype.

    ``channel_scale`` (out, 1) is ``weight_scale`` per output channel: the weight side of the
    scaled_mm with per-token activation scales (cuBLASLt takes two per-tensor scales or two
    vectors, so a 0-d weight scale would be expanded into a new vector on every call). A
    non-persistent buffer: not in the state dict (files keep the per-tensor scale), moved with
    the module (``.to``, block offload, residency). It is derived, so every writer of
    ``weight_scale`` calls ``refresh_scales``: ``set_weight``, ``load_state_dict``
    (``_load_from_state_dict``), load_strict, LoRA merge / unmerge (loading/lora.py).
    """

    keep_dtype = ("weight", "weight_scale", "input_scale")

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, policy: str,
                 ops: Ops = TORCH_OPS, static_input: bool = False, bias_dtype: torch.dtype = torch.bfloat16,
                 device=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.policy = check_policy(policy)
        self.ops = ops
        self.weight = nn.Parameter(torch.zeros((out_features, in_features), dtype=FP8_DTYPE, device=device),
                                   requires_grad=False)
        self.weight_scale = nn.Parameter(torch.ones((), dtype=torch.float32, device=device), requires_grad=False)
        if static_input:
            self.input_scale = nn.Parameter(torch.ones((), dtype=torch.float32, device=device),
                                            requires_grad=False)
        else:
            self.register_parameter("input_scale", None)
        with torch.inference_mode(False):  # refreshed in place later, maybe outside inference mode
            self.register_buffer("channel_scale", torch.ones((out_features, 1), dtype=torch.float32, device=device),
                                 persistent=False)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=bias_dtype, device=device),
                                     requires_grad=False)
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, policy: str, *, static_input: bool = False) -> "Fp8Linear":
        """An Fp8Linear shaped like ``linear`` (same device; bias in its dtype). The weight is
        quantized from ``linear``'s unless that lives on the meta device (build only)."""
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, policy=policy,
                    ops=getattr(linear, "ops", TORCH_OPS), static_input=static_input,
                    bias_dtype=w.dtype if linear.bias is None else linear.bias.dtype, device=w.device)
        if w.device.type != "meta":
            layer.set_weight(w.detach())
            if linear.bias is not None:
                layer.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)
        return layer

    def set_weight(self, w: torch.Tensor) -> None:
        """Quantize the full-precision weight ``w`` (out, in) into this layer (new per-tensor
        scale; e.g. after fusing a LoRA delta into ``dequantized(...)``)."""
        if tuple(w.shape) != (self.out_features, self.in_features):
            raise ValueError(f"Fp8Linear.set_weight: w has shape {tuple(w.shape)}, expected "
                             f"({self.out_features}, {self.in_features})")
        w8, scale = quantize_weight(w)
        self.weight = nn.Parameter(w8, requires_grad=False)
        self.weight_scale = nn.Parameter(scale.to(w8.device), requires_grad=False)
        self.refresh_scales()

    def refresh_scales(self) -> None:
        """``channel_scale`` := weight_scale in every row. In place when the buffer is on the scale's
        device in its dtype: the same address (a captured CUDA graph reads it) and, in a packed
        attention (models/packing.py), still a view of the packed vector. Else (a meta buffer after
        load_strict, a scale moved on its own) a new buffer."""
        src = self.weight_scale.detach()
        rows = src.reshape(1, 1).expand(self.out_features, 1)
        buf = self.channel_scale
        with torch.no_grad():
            if buf.device == src.device and buf.dtype == src.dtype:
                buf.copy_(rows)
                return
            with torch.inference_mode(False):  # packing may point its .data at a view later
                self.channel_scale = rows.clone()

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)  # weight_scale copied in place (or assigned)
        self.refresh_scales()

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize(self.weight, self.weight_scale, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.bias is None or self.bias.dtype == x.dtype else self.bias.to(x.dtype)
        if self.policy == "fp8-cast":
            return self.ops.linear(x, self.dequantized(x.dtype), bias)
        scale = self._weight_scale_for(x.numel() // max(x.shape[-1], 1))
        return self.ops.fp8_linear(x, self.weight, scale, bias, self.input_scale)

    def _weight_scale_for(self, rows: int) -> torch.Tensor:
        """The weight scale the scaled_mm takes: per channel beside per-token activation scales of
        several rows (the kept vector: nothing expanded per call); else the 0-d one, making a
        per-tensor pair (a static input_scale, or one row: cuBLASLt's per-tensor path, as before).
        Either way each output is the same fp32 products times the same two scales."""
        return self.channel_scale if self.input_scale is None and rows > 1 else self.weight_scale

    @property
    def quantizes_per_token(self) -> bool:
        """Whether forward quantizes its input dynamically per token (fp8-scaled-mm without a static
        input_scale): then a producer may hand it that quantization (``forward_quantized``)."""
        return self.policy == "fp8-scaled-mm" and self.input_scale is None

    def forward_quantized(self, q: torch.Tensor, scale: torch.Tensor, lead: tuple[int, ...],
                          dtype: torch.dtype) -> torch.Tensor:
        """forward's scaled matmul on an input already quantized per token: q (M, K) e4m3, scale
        (M, 1) fp32; output (*lead, out_features) in ``dtype`` (the unquantized input's)."""
        if not self.quantizes_per_token:
            raise ValueError(f"Fp8Linear.forward_quantized: needs policy 'fp8-scaled-mm' without a static "
                             f"input_scale, got policy={self.policy!r}, static_input={self.input_scale is not None}")
        if q.dtype != FP8_DTYPE or q.ndim != 2 or q.shape[1] != self.in_features:
            raise ValueError(f"Fp8Linear.forward_quantized: q must be (M, {self.in_features}) float8_e4m3fn, "
                             f"got {tuple(q.shape)} {q.dtype}")
        bias = self.bias if self.bias is None or self.bias.dtype == dtype else self.bias.to(dtype)
        y = self.ops.scaled_mm(q, self.weight, scale, self._weight_scale_for(q.shape[0]), bias, dtype)
        return y.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"policy={self.policy!r}, static_input={self.input_scale is not None}")


# -- converting a model ------------------------------------------------------------------------

def convert_to_fp8(model: nn.Module, policy: str, *, names: Iterable[str] | None = None,
                   static_input: Collection[str] = ()) -> nn.Module:
    """Swap the linears ``names`` (default ``fp8_targets(model, policy)``) for Fp8Linear.

    On a meta model (before loading) the new layers are only built. On a loaded model each
    weight is quantized and its full-precision copy released before the next layer, so the
    extra memory peaks at one layer. ``static_input``: names whose layer gets an input_scale
    (checkpoints that carry one). Layers already Fp8Linear are left as they are.
    """
    check_policy(policy)
    names = fp8_targets(model, policy) if names is None else list(names)
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, Fp8Linear):
            continue
        if not isinstance(module, nn.Linear):
            raise ValueError(f"convert_to_fp8: {name!r} is a {type(module).__name__}, not a linear layer")
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        replacement = Fp8Linear.from_linear(module, policy, static_input=name in static_input)
        setattr(parent, attr, replacement)
        del module  # the full-precision weight goes now, not after the whole model
    return model


# -- choosing a policy for a device ------------------------------------------------------------

FP8_GEMM_CAPABILITY = (8, 9)  # Ada (sm_89) and Hopper (sm_90) have e4m3 tensor-core GEMMs


def has_fp8_gemm(device) -> bool:
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= FP8_GEMM_CAPABILITY


def default_policy(device) -> str:
    """The policy an fp8 checkpoint runs with when none is asked for: the fp8 GEMM where the
    device has one, else fp8 storage with compute in the model dtype."""
    return "fp8-scaled-mm" if has_fp8_gemm(device) else "fp8-cast"


def validate_policy(policy: str | None, device, dtype: torch.dtype) -> str | None:
    """Check ``quantization=`` against the device and model dtype (None passes)."""
    if policy is None:
        return None
    check_policy(policy)
    if dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    if policy == "fp8-scaled-mm":
        if dtype == torch.float32:
            raise ValueError("quantization='fp8-scaled-mm' needs dtype torch.bfloat16 or torch.float16 (its GEMM "
                             "output and bias are half precision), got torch.float32; use 'fp8-cast' for fp32")
        device = torch.device(device)
        if device.type == "cuda" and not has_fp8_gemm(device):
            cap = torch.cuda.get_device_capability(device)
            raise ValueError(f"quantization='fp8-scaled-mm' needs fp8 GEMMs (CUDA compute capability >= 8.9), "
                             f"device {device} has {cap[0]}.{cap[1]}; use 'fp8-cast'")
        if device.type not in ("cuda", "cpu"):
            raise ValueError(f"quantization='fp8-scaled-mm' runs on cuda (sm_89+) or cpu (emulated), got {device}")
    return policy


def fp8_weight_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the linear weights (+ scales) in fp8 vs in other dtypes: for reports and tests."""
    fp8 = other = 0
    for module in model.modules():
        if isinstance(module, Fp8Linear):
            fp8 += module.weight.numel() * module.weight.element_size() + 4 * (1 + (module.input_scale is not None))
        elif isinstance(module, nn.Linear):
            other += module.weight.numel() * module.weight.element_size()
    return {"fp8": fp8, "other": other}


__all__ = ["POLICIES", "RULES", "KEEP_FULL_PRECISION", "Fp8Linear", "keeps_full_precision", "quantize_weight",
           "dequantize", "fp8_targets", "convert_to_fp8", "check_policy", "default_policy", "validate_policy",
           "has_fp8_gemm", "fp8_weight_bytes"]
