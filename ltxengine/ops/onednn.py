"""oneDNN's 3D convolution on the CPU as a custom op (``torch.ops.ltxengine.onednn_conv3d``).

torch's own choice of CPU convolution (aten Convolution.cpp ``use_mkldnn``) sends a batch-1 fp32
conv with N*C*T*H <= 20480 -- every decoder conv of a small video -- to its im2col
``slow_conv3d``, 2-15x slower than oneDNN on the VAEs' shapes (bench/results/cpu_conv3d.md) for
the same fp32 accuracy. ``reference.conv3d`` calls oneDNN directly there. It is wrapped in a
custom op because ``aten.mkldnn_convolution`` has no meta kernel: as one op with a fake
implementation, the memory plan's fake trace, a trace of real tensors and the paged executor's
served run all see the same op (tests/executor/test_memory.py compares them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.library.custom_op("ltxengine::onednn_conv3d", mutates_args=(), device_types="cpu")
def onednn_conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int],
                  padding: list[int]) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, stride, padding)`` (groups 1, no dilation) through oneDNN."""
    return torch.mkldnn_convolution(x, weight, bias, padding, stride, [1, 1, 1], 1)


@onednn_conv3d.register_fake
def _(x, weight, bias, stride, padding):
    return F.conv3d(x, weight, bias, stride=stride, padding=padding)  # on fake tensors: metadata only


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``reference.conv3d(x, weight, ...)`` runs ``onednn_conv3d``: a contiguous fp32 input on
    the CPU, a kernel larger than 1x1x1, no gradient to record (the op has no backward), and weights
    that do not outweigh the input: oneDNN re-lays them out on every call, so for 1x1x1 kernels, or a
    released decoder's 1024-channel convs at a small video (1.9x slower there), torch's path stays:
    oneDNN only where one sample's input has >= 1/8 of the weights' elements. Metadata only, so a
    fake tensor gets the same answer as the real one it stands for."""
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and weight.shape[2:].numel() > 1
            and x.shape[1:].numel() * 8 >= weight.numel() and x.is_contiguous()
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and torch.backends.mkldnn.enabled and torch.backends.mkldnn.is_available())
