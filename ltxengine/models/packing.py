"""Attention input projections packed into one weight at load, so they run as one GEMM.

Every attention's to_q / to_k / to_v read the same input in a self-attention (and to_k / to_v
the same context in a cross-attention): three (or two) GEMMs of width I where one of width 3I
(2I) reads the input once and launches once. ``pack_projections`` copies each attention's
weights (and biases) into one (3I, K) tensor and points the three Parameters' ``.data`` at its
row blocks: no extra memory, the same Parameter objects, state-dict keys and values.

``joined`` is the forward's check (models/transformer.py ``Attention``): whether the layers'
parameters are still consecutive views of one storage - metadata only (storage identity and
offsets, no device sync; it also holds on meta and fake tensors, so bench/roofline.py traces
the packed step). Whatever replaces a parameter afterwards (fp8 / GGUF layers, block offload's
host buffers, ``module.to``, ``p.data = ...``) breaks the adjacency, and the attention runs
its projections one by one again, as before packing. In-place writes (LoRA merge / unmerge:
``weight.copy_``) keep it. Nothing holds the packed tensor but the views themselves, so a
replaced parameter frees its memory as it did before.

fp8 GEMM layers (quant.fp8.Fp8Linear, policy "fp8-scaled-mm", dynamic per-token activation
scales: no ``input_scale``) are packed the same way: their e4m3 weights become row blocks of one
(3I, K) tensor, so the shared input is quantized once and one scaled_mm runs, instead of a
quantization and a GEMM per layer. Their per-tensor ``weight_scale`` Parameters stay as they are
(0-d, the state dict unchanged). The GEMM takes a (3I, 1) per-output-channel vector: each layer
keeps its scale per channel in its ``channel_scale`` buffer (quant.fp8.Fp8Linear, refreshed in
place by every writer of ``weight_scale``: LoRA merge / unmerge, state-dict loads, set_weight),
and those buffers are packed here like the weights, so ``channel_scales`` is a view of them (no
launch per call) whose values follow an in-place rescale at the same address a captured CUDA graph
reads. Same products, same quantized x: the outputs equal the layers' own (``test_packing``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .common import fusable
from .tables import pack_tables

__all__ = ["channel_scales", "fp8_joined", "fp8_packable", "joined", "pack_projections", "packable"]


def packable(attn: nn.Module) -> tuple[nn.Module, ...]:
    """The layers of ``attn`` packed together: q, k, v when k reads inputs as wide as q's (then a
    self-attention runs all three at once and a cross-attention its k, v: a sub-range), else k, v."""
    if attn.to_q.in_features == attn.to_k.in_features:
        return attn.to_q, attn.to_k, attn.to_v
    return attn.to_k, attn.to_v


def _consecutive(tensors) -> torch.Tensor | None:
    """The tensor of all rows of ``tensors`` if each starts where the one before ends in one storage."""
    first = tensors[0]
    offset, rows = first.storage_offset(), 0
    for t in tensors:
        if (t.storage_offset() != offset or not t.is_contiguous() or t.dtype != first.dtype
                or t.shape[1:] != first.shape[1:] or not torch._C._is_alias_of(t, first)):
            return None
        offset, rows = offset + t.numel(), rows + t.shape[0]
    return first.detach().as_strided((rows, *first.shape[1:]), first.stride())


def joined(layers) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight, bias) whose row blocks are ``layers``' weights and biases, or None when they are
    not (any more) packed. The caller checks that the layers are plain linears."""
    weight = _consecutive([layer.weight for layer in layers])
    if weight is None:
        return None
    biases = [layer.bias for layer in layers]
    if all(b is None for b in biases):
        return weight, None
    bias = None if any(b is None for b in biases) else _consecutive(biases)
    return None if bias is None else (weight, bias)


def fp8_packable(layer: nn.Module) -> bool:
    """An fp8 GEMM layer with dynamic per-token input scales and no forward hooks (a LoRA branch):
    one of several that may share one quantization of their input and one scaled_mm."""
    from ..quant.fp8 import Fp8Linear  # quant.fp8 imports models.common

    return (type(layer) is Fp8Linear and layer.policy == "fp8-scaled-mm" and layer.input_scale is None
            and not (layer._forward_hooks or layer._forward_pre_hooks))


def fp8_joined(layers) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(e4m3 weight, bias) whose row blocks are ``layers``' when they are packable fp8 layers
    packed by ``pack_projections`` (and still are), else None."""
    return joined(layers) if all(fp8_packable(layer) for layer in layers) else None


def channel_scales(layers) -> torch.Tensor:
    """The layers' per-tensor weight scales as one (sum of out_features, 1) fp32 vector: row j
    carries the scale of the layer that owns output channel j. The packed ``channel_scale``
    buffers themselves (metadata only), else (something replaced one since packing) a new one."""
    vectors = [layer.channel_scale for layer in layers]
    packed = _consecutive(vectors)
    return torch.cat(vectors) if packed is None else packed


def _uniform(tensors: list[torch.Tensor]) -> bool:
    return len({(t.dtype, t.device, t.shape[1:]) for t in tensors}) == 1


def _pack(tensors: list[torch.Tensor]) -> None:
    whole = torch.cat([t.detach() for t in tensors])  # transiently one attention's weights twice
    for t, view in zip(tensors, whole.split([t.shape[0] for t in tensors])):
        t.data = view  # the Parameter object stays; its old storage is freed here


def pack_projections(model: nn.Module) -> int:
    """Pack the input projections of every attention of ``model`` whose layers are plain linears
    of one dtype and device, or fp8 GEMM layers with dynamic input scales (``fp8_packable``;
    fp8-cast / static-scale fp8, GGUF and LoRA-hooked layers keep theirs); returns how many
    attentions run packed. Call once the weights (and merged LoRAs) are in place; packing
    again is a no-op, and repacks an attention whose adjacency something broke. The blocks'
    modulation tables are packed here too (tables.pack_tables: one add per table kind per
    forward), so every place that packs at load, or again after a move, packs both."""
    count = 0
    # Parameter.data must not become an inference tensor (an engine may be built under inference_mode)
    with torch.no_grad(), torch.inference_mode(False):
        for attn in model.modules():
            if not getattr(type(attn), "packs_projections", False):  # transformer.Attention (it imports us)
                continue
            layers = packable(attn)
            if not (all(fusable(layer) for layer in layers) or all(fp8_packable(layer) for layer in layers)):
                continue
            weights, biases = [lay.weight for lay in layers], [lay.bias for lay in layers]
            if not _uniform(weights) or (None in biases and any(b is not None for b in biases)) or (
                    biases[0] is not None and not _uniform(biases)):
                continue
            if joined(layers) is None:
                _pack(weights)
                if biases[0] is not None:
                    _pack(biases)
            scales = [lay.channel_scale for lay in layers] if fp8_packable(layers[0]) else None
            if scales is not None and _uniform(scales) and _consecutive(scales) is None:
                _pack(scales)  # one per-channel vector for the one scaled_mm (channel_scales)
            count += 1
    pack_tables(model)
    return count
