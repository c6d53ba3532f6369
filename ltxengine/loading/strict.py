"""Strict loading into a model built on the meta device.

Every parameter and persistent buffer must come from the checkpoint with the right shape and
every checkpoint tensor must be used; anything else is an error naming the file and key.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .placement import placer
from .safetensors_io import CheckpointError, is_float_dtype

# A source of tensors: model key -> (shape, reader(device, dtype), description for messages[,
# stored dtype name as safetensors spells it, e.g. "F8_E4M3"]). reader(device, None) returns the
# tensor in its stored dtype.
TensorSource = dict[str, tuple]


def _set(model: nn.Module, key: str, tensor: torch.Tensor) -> None:
    module_name, _, name = key.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if name in module._parameters:
        module._parameters[name] = nn.Parameter(tensor, requires_grad=False)
    else:
        module._buffers[name] = tensor


def load_strict(model: nn.Module, source: TensorSource, where: str, device, dtype: torch.dtype) -> nn.Module:
    """Materialize ``model`` (built on meta) from ``source``; floating tensors arrive in ``dtype``,
    except those a module lists in ``keep_dtype`` (Fp8Linear's fp8 weight and fp32 scales), which
    must arrive in the dtype the module declares."""
    expected = dict(model.state_dict(keep_vars=True))
    missing = [k for k in expected if k not in source]
    unused = [k for k in source if k not in expected]
    if missing or unused:
        parts = []
        if missing:
            parts.append(f"{len(missing)} model tensors missing from the checkpoint: {_some(missing)}")
        if unused:
            parts.append(f"{len(unused)} checkpoint tensors not used by the model: "
                         f"{_some([source[k][2] for k in unused])}")
        raise CheckpointError(f"{where}: " + "; ".join(parts))
    for key, target in expected.items():
        shape, desc = source[key][0], source[key][2]
        if tuple(shape) != tuple(target.shape):
            raise CheckpointError(f"{where}: tensor {desc} has shape {tuple(shape)}, the model expects "
                                  f"{tuple(target.shape)} for {key!r}")
    _check_weight_dtypes(model, expected, source, where)
    # a DiT whose blocks will stream reads them to the host (placement.blocks_on_host); else all to ``device``
    place = placer(model, expected, device, dtype, lambda key: _keeps_dtype(model, key))
    for key, target in expected.items():
        read, desc, device = source[key][1], source[key][2], place(key)
        if _keeps_dtype(model, key):
            tensor = read(device, None)
            if tensor.dtype != target.dtype:
                raise CheckpointError(f"{where}: tensor {desc} has dtype {tensor.dtype}, the model expects "
                                      f"{target.dtype} for {key!r} (an fp8 layer's tensor keeps its stored dtype)")
            _set(model, key, tensor)
        else:
            tensor = read(device, dtype if target.is_floating_point() else None)
            if target.is_floating_point() != tensor.is_floating_point():
                raise CheckpointError(f"{where}: tensor {desc} has dtype {tensor.dtype}, the model expects a "
                                      f"{target.dtype} tensor for {key!r}")
            _set(model, key, tensor)
    for module in model.modules():  # tensors derived from the loaded ones (Fp8Linear's per-channel scales)
        refresh = getattr(module, "refresh_scales", None)
        if callable(refresh):
            refresh()
    return model.eval()


def _check_weight_dtypes(model: nn.Module, expected: dict, source: TensorSource, where: str) -> None:
    """Before anything is read: a floating-point model tensor must be stored as floating point
    (an integer or bool tensor would be cast into a valid-looking weight), and the other way round."""
    for key, target in expected.items():
        stored = source[key][3] if len(source[key]) > 3 else None
        if stored is None or _keeps_dtype(model, key):
            continue
        if is_float_dtype(stored) != target.is_floating_point():
            raise CheckpointError(f"{where}: tensor {source[key][2]} is stored as {stored}, the model expects a "
                                  f"{target.dtype} tensor for {key!r}")


def _keeps_dtype(model: nn.Module, key: str) -> bool:
    module_name, _, name = key.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    return name in getattr(module, "keep_dtype", ())


def _some(names: list[str], n: int = 8) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")
