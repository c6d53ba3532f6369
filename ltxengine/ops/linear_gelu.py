"""linear_gelu: gelu_tanh(x @ W^T + b), the FFN up-projection with its activation fused.

Reference: ``reference.linear_gelu`` (the models' unfused F.gelu(linear(...)), bit for bit).
Kernels: Triton ``kernels/linear_gelu.py`` (a tiled GEMM with the GELU in its epilogue); under
kernels="cuda", cuBLASLt's GELU_BIAS epilogue through ``torch._addmm_activation`` (an aten op,
so it is put on ``Ops`` as it is).

``auto`` on CUDA prefers cuBLASLt: a vendor GEMM with a library epilogue. The Triton GEMM only
becomes ``auto`` after bench/ has measured it beating cuBLAS(Lt) on the GPU (as ops/__init__.py's
AUTO comment says of our fp8 GEMMs); until then it is for kernels="triton" and the tests.

The models call this op only for a plain ``OpsLinear`` without forward hooks (models/
transformer.py ``fusable``): fp8, GGUF and LoRA-branch layers keep their own forward, then GELU.
"""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensor

from .library import FusedOp, check_tensor, empty

SCHEMA = "(Tensor x, Tensor weight, Tensor? bias, Tensor(a!) out) -> ()"
_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def adapter(launch):
    def impl(x, weight, bias, out) -> None:
        launch(x, weight, bias, out=out)

    return impl


def _check_shapes(fn: str, x, weight) -> int:
    check_tensor(fn, "weight", weight, 2)
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{fn}: x must be (..., K) with K = weight.shape[1] = {weight.shape[1]}, got {got}")
    return weight.shape[0]


def wrap(op):
    def linear_gelu(x, weight, bias=None, *, out=None):
        n = _check_shapes("linear_gelu", x, weight)
        out = empty((*x.shape[:-1], n), x) if out is None else out
        op(x, weight, bias, out)
        return out

    return linear_gelu


def cublaslt_linear_gelu(x, weight, bias=None, *, out=None):
    """Same contract as ``reference.linear_gelu``, through cuBLASLt's GELU_BIAS epilogue.

    torch takes the Lt path for a 1-D contiguous bias of x's dtype, 2-D contiguous operands
    with both sizes > 1 and a contiguous output (aten/src/ATen/native/cuda/Blas.cpp,
    isInputCompliesAddmmCudaLt); otherwise it runs cuBLAS then gelu_(approximate="tanh"),
    the same function unfused. A layer without a bias gets a zero one (one memset of N
    values) so that it keeps the epilogue. On the CPU torch computes the exact (erf) GELU
    here instead: this backend is for CUDA tensors only.
    """
    fn = "linear_gelu"
    n = _check_shapes(fn, x, weight)
    if not (x.is_cuda or isinstance(x, FakeTensor)):  # fake: traced (bench/roofline.py), never computed
        raise ValueError(f"{fn}: the cuBLASLt backend needs CUDA tensors (its CPU kernel is the erf GELU), "
                         f"got x on {x.device}")
    if x.dtype not in _DTYPES or weight.dtype != x.dtype:
        raise ValueError(f"{fn}: x and weight must share one of {_DTYPES}, got {x.dtype} and {weight.dtype}")
    if bias is not None and tuple(bias.shape) != (n,):
        raise ValueError(f"{fn}: bias must be ({n},), got {tuple(bias.shape)}")
    b = x.new_zeros(n) if bias is None else bias.to(x.dtype).contiguous()
    x2 = x.reshape(-1, x.shape[-1])
    if out is None:
        return torch._addmm_activation(b, x2, weight.t(), use_gelu=True).view(*x.shape[:-1], n)
    torch._addmm_activation(b, x2, weight.t(), use_gelu=True, out=out.view(-1, n))
    return out


def _triton():
    from ..kernels.linear_gelu import linear_gelu
    return linear_gelu


def _cublaslt():
    return cublaslt_linear_gelu


LINEAR_GELU = FusedOp("linear_gelu", SCHEMA, adapter, wrap, launchers={"triton": _triton},
                      plain={"cuda": ("cublaslt", _cublaslt)}, auto=("cuda",))
