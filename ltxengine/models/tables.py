"""Per-block modulation tables packed at load, so a forward adds the timestep embedding to all of
them in one op instead of one small add per block (issue 24: launches per block).

Every block of a DiT adds its learned ``scale_shift_table`` (rows x D; LTX-2 has several kinds)
to the same per-sample timestep embedding temb (B, 1, rows, D). ``pack_tables`` copies the tables
of one kind, over all blocks, into one (L, rows, D) tensor and points each block's Parameter at
its slice (no extra memory, the same Parameter objects, state-dict keys and values; as
models/packing.py packs q/k/v). ``hoist`` then computes ``stack[:, None, None] + temb[None]`` =
(L, B, 1, rows, D) once per forward and the transformer hands block i its slice [i]: the same
elementwise add of the same operands in the same dtypes, so the same bits as the block's own add.

``stacked`` is the forward's check, metadata only (it holds on meta and fake tensors): the tables
must be exactly the packed storage, slice i at offset i * rows * D. Whatever replaces a table
afterwards (block offload's host buffers, ``module.to``, fp8 / GGUF conversion, ``p.data = ...``,
a state-dict load with assign=True) breaks that, and each block adds its own table again. In-place
writes (``load_state_dict``'s copy, LoRA merge) keep it. Per-token timesteps (temb (B, N, rows,
D)) are never hoisted: (L, B, N, rows, D) would cost GBs at production sizes.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["hoist", "hoist_blocks", "pack_tables", "stacked", "table_names"]


def table_names(block: nn.Module) -> tuple[str, ...]:
    """The attribute names of ``block``'s modulation tables (its class's ``modulation_tables``)."""
    return tuple(getattr(type(block), "modulation_tables", ()))


def stacked(tables: list) -> torch.Tensor | None:
    """The (L, rows, D) tensor whose [i] is ``tables[i]`` when the tables are exactly one storage
    packed by ``pack_tables`` (and still are), else None."""
    first = tables[0]
    if not isinstance(first, torch.Tensor) or first.storage_offset() != 0 or not first.is_contiguous():
        return None
    numel = first.numel()
    for i, t in enumerate(tables):
        if (not isinstance(t, torch.Tensor) or t.storage_offset() != i * numel or not t.is_contiguous()
                or t.dtype != first.dtype or t.shape != first.shape or not torch._C._is_alias_of(t, first)):
            return None
    # exactly the packed storage: a table that merely lies at offset 0 of a larger one (a block
    # offload host buffer holding one block) is not a stack
    if first.untyped_storage().nbytes() != len(tables) * numel * first.element_size():
        return None
    return first.detach().as_strided((len(tables), *first.shape), (numel, *first.stride()), 0)


def hoist(blocks, name: str, temb: torch.Tensor | None, rows: slice = slice(None)) -> torch.Tensor | None:
    """(L, B, 1, r, D): every block's table ``name`` (its rows ``rows``) + ``temb`` (B, 1, r, D),
    one add; None (each block adds its own) when temb is None or per token, or the tables are not
    packed."""
    if temb is None or temb.ndim != 4 or temb.shape[1] != 1:
        return None
    stack = stacked([getattr(b, name, None) for b in blocks])
    if stack is None:
        return None
    return stack[:, None, None, rows] + temb[None]


def hoist_blocks(blocks, temb, spec, cls) -> list | None:
    """Per block a ``cls`` (a NamedTuple whose fields default to None) holding its slice of each
    hoisted table: ``spec`` lists (field, table name, rows) and ``getattr(temb, field)`` is what
    the tables of that field add. None when no field hoists (every block adds its own)."""
    hoisted = {field: hoist(blocks, name, getattr(temb, field), rows) for field, name, rows in spec}
    hoisted = {field: h for field, h in hoisted.items() if h is not None}
    if not hoisted:
        return None
    return [cls(**{field: h[i] for field, h in hoisted.items()}) for i in range(len(blocks))]


def _pack(params: list[nn.Parameter]) -> None:
    whole = torch.stack([p.detach() for p in params])  # transiently the tables twice (KBs to MBs)
    for p, view in zip(params, whole.unbind(0)):
        p.data = view  # the Parameter object stays; its old storage is freed here


def pack_tables(model: nn.Module) -> int:
    """Pack each kind of modulation table of ``model.transformer_blocks`` (blocks naming theirs in
    ``modulation_tables``) into one storage; returns how many kinds are packed. Kinds whose tables
    differ in shape, dtype or device, or are not Parameters, stay as they are. Packing again is a
    no-op, and repacks a kind whose adjacency something broke."""
    blocks = list(getattr(model, "transformer_blocks", ()))
    if not blocks:
        return 0
    count = 0
    # Parameter.data must not become an inference tensor (an engine may be built under inference_mode)
    with torch.no_grad(), torch.inference_mode(False):
        for name in table_names(blocks[0]):
            params = [b._parameters.get(name) for b in blocks]
            if any(p is None for p in params) or len({(p.dtype, p.device, p.shape) for p in params}) != 1:
                continue
            if stacked(params) is None:
                _pack(params)
            count += 1
    return count
