"""``GGUFLinear``: a linear layer whose weight stays in a GGUF block format on the device.

It keeps the file's bytes (uint8, shape (out, in / block_size * type_size)) and dequantizes them to
the activation dtype on every call through ``ops.gguf_dequant`` (the Triton kernel on GPUs, the
pure-torch reference of quant/gguf.py elsewhere), then runs an ordinary ``ops.linear``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..ops import TORCH_OPS
from .gguf import byte_shape, ggml_type


class GGUFLinear(nn.Module):
    """A linear layer whose weight (out, in) stays in a GGUF block format on the device.

    ``weight``: uint8 (out, in / block_size * type_size), the file's bytes; ``qtype``: the ggml
    type id; ``bias`` in the model dtype. Each call dequantizes the weight to the activation dtype
    (``ops.gguf_dequant``: fp32 math, one rounding) and runs ``ops.linear``.
    """

    keep_dtype = ("weight",)

    def __init__(self, in_features: int, out_features: int, bias: bool, qtype: int, *, ops=None,
                 bias_dtype: torch.dtype = torch.bfloat16, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.gguf_type = ggml_type(qtype)
        self.ops = TORCH_OPS if ops is None else ops
        shape = byte_shape((out_features, in_features), self.gguf_type)
        self.weight = nn.Parameter(torch.zeros(shape, dtype=torch.uint8, device=device), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=bias_dtype, device=device),
                                 requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, qtype: int) -> "GGUFLinear":
        """Built in place of ``linear`` (meta model: shapes only; the loader fills the bytes)."""
        bias = linear.bias
        return cls(linear.in_features, linear.out_features, bias is not None, qtype, ops=getattr(linear, "ops", None),
                   bias_dtype=linear.weight.dtype if bias is None else bias.dtype, device=linear.weight.device)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return self.ops.gguf_dequant(self.weight, self.gguf_type.id, self.in_features, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.bias is None or self.bias.dtype == x.dtype else self.bias.to(x.dtype)
        return self.ops.linear(x, self.dequantized(x.dtype), bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"type={self.gguf_type.name}")


def gguf_weight_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the linear weights kept in GGUF blocks vs in other dtypes (reports and tests)."""
    kept = other = 0
    for module in model.modules():
        if isinstance(module, GGUFLinear):
            kept += module.weight.numel()
        elif isinstance(module, nn.Linear):
            other += module.weight.numel() * module.weight.element_size()
    return {"gguf": kept, "other": other}


__all__ = ["GGUFLinear", "gguf_weight_bytes"]
