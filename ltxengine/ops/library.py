"""What a fused op is, and the torch.library fragment their kernels are registered in.

Each fused op has one file under ops/ (``ops/ada_norm.py``, ...) that defines a ``FusedOp``: its
schema, the adapter from the schema's arguments to a backend's launcher, the function put on
``Ops`` and where each backend's launcher lives; ``ops/__init__.py`` lists them (``FUSED_OPS``).
``build(backend, ops)`` turns that table into the fields of the backend's ``Ops``: every launcher becomes a custom op
``ltxengine::<backend>_<op>`` whose outputs are mutated arguments, so the schema says exactly
what is written, the fake implementation has nothing to compute, and torch.compile / CUDA graph
capture see one opaque node per kernel. The function put on ``Ops`` allocates the outputs when
the caller passes none (the executor passes pool pages instead).

The path to a kernel: the ``Ops`` field -> ``torch.ops.ltxengine.<backend>_<op>`` (the
dispatcher) -> the op file's adapter -> the launcher (``kernels/<op>.py`` or ``ops/cuda.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

_LIB = torch.library.Library("ltxengine", "FRAGMENT")


@dataclass(frozen=True)
class FusedOp:
    """One op's row of the table; see any op file for an example.

    ``launchers``: backend -> a loader of its launcher (the reference's signature plus ``out=``),
    imported on first use so that ``import ltxengine`` never imports Triton or the extension.
    ``plain``: backend -> (source, loader) of a function put on ``Ops`` as it is, without a custom
    op (cuBLASLt through ``torch._scaled_mm``, itself an aten op). ``parts`` / ``compose``: an op
    made of other ops of the same backend (``fp8_linear``) instead of a kernel of its own.
    ``auto``: the backends ``kernels="auto"`` prefers on a CUDA device, first available wins.
    """

    name: str
    schema: str | None = None  # "(arguments) -> ()": the outputs are the mutated arguments
    adapter: Callable[[Callable], Callable] | None = None  # launcher -> impl of the schema
    wrap: Callable[[Callable], Callable] | None = None  # custom op handle -> the Ops field
    launchers: dict[str, Callable[[], Callable]] = field(default_factory=dict)
    plain: dict[str, tuple[str, Callable[[], Callable]]] = field(default_factory=dict)
    parts: tuple[str, ...] = ()
    compose: Callable[..., Callable] | None = None
    auto: tuple[str, ...] = ()

    def bind(self, backend: str) -> tuple[Callable, str] | None:
        """(the Ops field, its source) of a kernel op on ``backend``; None where it has none."""
        if backend in self.plain:
            source, load = self.plain[backend]
            return load(), source
        if backend in self.launchers:
            return self.wrap(self.custom_op(backend)), backend
        return None

    def custom_op(self, backend: str) -> Callable:
        """``ltxengine::<backend>_<name>``, defined once per process."""
        name = f"{backend}_{self.name}"
        if not hasattr(torch.ops.ltxengine, name):
            impl = self.adapter(self.launchers[backend]())  # first: an import error defines nothing
            _LIB.define(name + self.schema)
            _LIB.impl(name, impl, "CompositeExplicitAutograd")
            torch.library.register_fake(f"ltxengine::{name}", _no_outputs, lib=_LIB)
        return getattr(torch.ops.ltxengine, name).default


def _no_outputs(*args) -> None:
    # The fake of every op: the outputs are arguments the caller already allocated.
    return None


def build(backend: str, ops: tuple[FusedOp, ...]) -> tuple[dict[str, Callable], dict[str, str]]:
    """(Ops fields, op -> source) of ``backend``: the ``ops`` it has a kernel for, then the ops
    composed of those; the ops it lacks keep the reference."""
    fields, sources = {}, {}
    for op in ops:
        bound = None if op.compose is not None else op.bind(backend)
        if bound is not None:
            fields[op.name], sources[op.name] = bound
    for op in ops:
        if op.compose is not None and all(part in fields for part in op.parts):
            fields[op.name] = op.compose(*(fields[part] for part in op.parts))
            sources[op.name] = backend
    return fields, sources


# ---- helpers the op files share ----------------------------------------------------------------

def empty(shape, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device)


def fp8_rows(fn: str, name: str, x, out=None, scale_out=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs of a per-row e4m3 quantization of the input ``name`` x (..., D): values (rows, D)
    and fp32 scales (rows, 1), the given ones or new."""
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        raise ValueError(f"{fn}: {name} must be a tensor with at least 1 dim, got {type(x).__name__}")
    rows = x.numel() // max(x.shape[-1], 1)
    out = empty((rows, x.shape[-1]), x, torch.float8_e4m3fn) if out is None else out
    return out, empty((rows, 1), x, torch.float32) if scale_out is None else scale_out


def check_tensor(fn: str, name: str, x, ndim: int) -> None:
    # Enough to size the outputs; the launcher checks everything else.
    if not isinstance(x, torch.Tensor) or x.ndim != ndim:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{fn}: {name} must be a {ndim}-D tensor, got {got}")


__all__ = ["FusedOp", "build", "empty", "check_tensor", "fp8_rows"]
