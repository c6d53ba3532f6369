"""fp8 scaled matmul through ``torch._scaled_mm`` (cuBLASLt on Hopper; a CPU kernel elsewhere).

The vendor library is the baseline every fp8 GEMM of ours is measured against, and the default
of ``kernels="auto"`` until a faster kernel of ours is measured on the device.
"""

from __future__ import annotations

import torch

_OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _check(a, b, scale_a, scale_b, bias, out_dtype):
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.dtype != torch.float8_e4m3fn:
            got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"scaled_mm: {name} must be a 2-D float8_e4m3fn tensor, got {got}")
    m, k = a.shape
    n = b.shape[0]
    if b.shape[1] != k:
        raise ValueError(f"scaled_mm: b must be (N, K={k}), got {tuple(b.shape)}")
    for name, s, rows in (("scale_a", scale_a, m), ("scale_b", scale_b, n)):
        if not isinstance(s, torch.Tensor) or s.dtype != torch.float32 or s.numel() not in (1, rows) \
                or (s.numel() == rows > 1 and s.shape != (rows, 1)):
            got = f"{tuple(s.shape)} {s.dtype}" if isinstance(s, torch.Tensor) else type(s).__name__
            raise ValueError(f"scaled_mm: {name} must be fp32 with one value or shape ({rows}, 1), got {got}")
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"scaled_mm: bias must be ({n},), got {tuple(bias.shape)}")
    if out_dtype not in _OUT_DTYPES:
        raise ValueError(f"scaled_mm: out_dtype must be one of {_OUT_DTYPES}, got {out_dtype}")


def scaled_mm(a, b, scale_a, scale_b, bias=None, out_dtype=torch.bfloat16, *, out=None):
    """Same contract as ``reference.scaled_mm``. cuBLASLt takes either two per-tensor scales or
    two row-wise vectors: (M, 1) and (N, 1) contiguous fp32 go in as they are (views, no launch),
    a per-tensor scale beside a vector is expanded to one (a copy per call: Fp8Linear therefore
    passes its kept ``channel_scale`` with per-token activation scales)."""
    _check(a, b, scale_a, scale_b, bias, out_dtype)
    m, n = a.shape[0], b.shape[0]
    if scale_a.numel() == 1 and scale_b.numel() == 1:
        sa, sb = scale_a.reshape(()), scale_b.reshape(())
    else:
        sa = scale_a.reshape(-1, 1).expand(m, 1).contiguous()
        sb = scale_b.reshape(1, -1).expand(1, n).contiguous()
    if a.stride(1) != 1:
        a = a.contiguous()
    kwargs = {} if out is None else {"out": out}
    return torch._scaled_mm(a, b.t(), sa, sb, bias=bias, out_dtype=out_dtype, **kwargs)
