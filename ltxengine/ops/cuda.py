"""Launchers for the CUDA C++ kernels of ``ltxengine._C`` (csrc/): tensors in, raw addresses out.

Each function has its reference's signature (``ltxengine.ops.reference``) plus destination
passing, validates its tensors here (device, dtypes, shapes, views) with ValueErrors that name
the rule, allocates outputs only when none is given, and hands the extension device addresses,
strides in elements (0 for broadcast dims) and the current stream. The extension re-checks
every raw argument, so a mistake in this file surfaces as a ValueError, never as a bad access.

What the kernels take, and so what raises here instead of computing: bf16 activations (an
Engine refuses kernels="cuda" with another dtype at load), a last dim that is a multiple of 8 (16 for
qk_norm_rope), rows up to 16384 wide. Strided views whose last dim is contiguous pass through
without a copy (q and k sliced from a fused projection, modulation rows sliced from a table);
inputs that do not fit the 16-byte vector loads are copied with ``.contiguous()``; outputs are
never copied (they must fit as given).
"""

from __future__ import annotations

import contextlib
import math

import torch

_MISSING = ("ltxengine was built without its CUDA extension (nvcc not found at install time); "
            "reinstall with nvcc on PATH or use kernels='triton'/'torch'")
_BF16 = torch.bfloat16
_FP8 = torch.float8_e4m3fn
_FLOATS = (torch.bfloat16, torch.float32)  # norm weights and modulation rows: converted on load
_MAX_DIM = 16384  # one row per block: 1024 threads x 16 elements
_KINDS = ("rms", "layer")

_module = None
_import_error: ImportError | None = None


def _load():
    """The compiled module, or None (and the import error kept for the message)."""
    global _module, _import_error
    if _module is None and _import_error is None:
        try:
            from .. import _C
            _module = _C
        except ImportError as err:
            _import_error = err
    return _module


def _ext():
    ext = _load()
    if ext is None:
        raise RuntimeError(f"{_MISSING} [{_import_error}]")
    return ext


def available() -> bool:
    """True when ``ltxengine._C`` imports and a CUDA device is usable."""
    return _load() is not None and torch.cuda.is_available()


# ---- validation -----------------------------------------------------------------------------

def _shape(t) -> object:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def _tensor(fn: str, name: str, t, ndim: int | None, dtypes: tuple) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or (ndim is not None and t.ndim != ndim):
        what = "a tensor" if ndim is None else f"a {ndim}-D tensor"
        raise ValueError(f"{fn}: {name} must be {what}, got {_shape(t)}")
    if t.dtype not in dtypes:
        names = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise ValueError(f"{fn}: {name} must be {names} (the CUDA kernels), got {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{fn}: {name} must not be empty, got shape {tuple(t.shape)}")
    return t


def _fits(t: torch.Tensor, align: int = 16) -> bool:
    """Last dim contiguous, address aligned, other strides whole 8-element vectors."""
    return (t.stride(-1) == 1 and t.data_ptr() % align == 0
            and all(s % 8 == 0 for s, n in zip(t.stride()[:-1], t.shape[:-1]) if n > 1))


def _view(t: torch.Tensor) -> torch.Tensor:
    """An input as the kernels read it: strided views kept when they fit, copied otherwise."""
    return t if _fits(t) else t.contiguous()


def _width(fn: str, name: str, d: int, multiple: int) -> None:
    if d % multiple or d > _MAX_DIM:
        raise ValueError(f"{fn}: {name}'s last dim must be a multiple of {multiple} up to {_MAX_DIM} "
                         f"(16-byte vectors, one row per block), got {d}")


def _eps(fn: str, eps) -> float:
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{fn}: eps must be a finite non-negative number, got {eps!r}")
    return float(eps)


def _broadcast_rows(fn: str, name: str, t, x: torch.Tensor) -> torch.Tensor | None:
    """A modulation tensor (B|1, N|1, D), bf16 or fp32, e.g. one row of a (B, T, 6, D) table."""
    if t is None:
        return None
    b, n, d = x.shape
    t = _tensor(fn, name, t, 3, _FLOATS)
    if t.shape[0] not in (1, b) or t.shape[1] not in (1, n) or t.shape[2] != d:
        raise ValueError(f"{fn}: {name} must be (B|1, N|1, D) = ({b}|1, {n}|1, {d}) for x {tuple(x.shape)}, "
                         f"got {tuple(t.shape)}")
    return _view(t)


def _out(fn: str, name: str, out, shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Allocate, or check a given output: exact shape/dtype/device, rows the kernels can write
    (16-byte aligned whole vectors, no two rows overlapping). Never copied or reallocated."""
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(shape) or out.dtype != dtype \
            or out.device != device:
        got = f"{tuple(out.shape)} {out.dtype} on {out.device}" if isinstance(out, torch.Tensor) else _shape(out)
        raise ValueError(f"{fn}: {name} must be {tuple(shape)} {dtype} on {device}, got {got}")
    if not _fits(out) or not _rows_disjoint(out):
        raise ValueError(f"{fn}: {name} must be 16-byte aligned with a contiguous last dim, row strides in whole "
                         f"8-element vectors and rows that do not overlap, got strides {out.stride()}")
    return out


def _rows_disjoint(t: torch.Tensor) -> bool:
    """Rows laid out token-major inside each sample (the extension's output rule)."""
    d = t.shape[-1]
    if t.ndim == 2:
        return t.shape[0] == 1 or t.stride(0) >= d
    b, n, _ = t.shape
    return (n == 1 or t.stride(1) >= d) and (b == 1 or t.stride(0) >= (n - 1) * t.stride(1) + d)


def _same_cuda_device(fn: str, device: torch.device, tensors: dict) -> None:
    if device.type != "cuda":
        raise ValueError(f"{fn}: tensors must be on a CUDA device for the CUDA kernels, got {device}")
    for name, t in tensors.items():
        if t is not None and t.device != device:
            raise ValueError(f"{fn}: {name} must be on {device} like the other inputs, got {t.device}")


@contextlib.contextmanager
def _launch(device: torch.device):
    """Current device set to the tensors' (the kernels launch on the current device); yields the
    stream handle the kernels are queued on."""
    with torch.cuda.device(device):
        yield torch.cuda.current_stream(device).cuda_stream


# ---- arguments for the extension -------------------------------------------------------------

def _stride(t: torch.Tensor, dim: int) -> int:
    return 0 if t.shape[dim] == 1 else t.stride(dim)


def _row_stride(t: torch.Tensor) -> int:
    """Row stride of a 2-D (M, K) view; a single row's stride is arbitrary, K stands in."""
    return t.stride(0) if t.shape[0] > 1 else t.shape[1]


def _rows(ext, t: torch.Tensor | None):
    """ext.Rows for a (B, N, D) view; size-1 dims broadcast (stride 0); absent -> Rows() (ptr 0)."""
    if t is None:
        return ext.Rows()
    return ext.Rows(t.data_ptr(), _stride(t, 0), _stride(t, 1), t.dtype == torch.float32)


def _rope_table(fn: str, name: str, rope, x: torch.Tensor) -> tuple:
    """(layout, cos, sin, batch/head/token strides, heads) of an fp32 table for x (B, N, D)."""
    if not isinstance(rope, (tuple, list)) or len(rope) != 2:
        raise ValueError(f"{fn}: {name} must be a (cos, sin) pair, got {type(rope).__name__}")
    cos = _tensor(fn, f"{name} cos", rope[0], None, (torch.float32,))
    sin = _tensor(fn, f"{name} sin", rope[1], None, (torch.float32,))
    b, n, d = x.shape
    if cos.shape != sin.shape:
        raise ValueError(f"{fn}: {name} cos and sin must have one shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    if cos.ndim == 3 and cos.shape[0] in (1, b) and tuple(cos.shape[1:]) == (n, d):
        layout, heads = "interleaved", 1
    elif cos.ndim == 4 and cos.shape[0] in (1, b) and cos.shape[2] == n and cos.shape[3] * 2 * cos.shape[1] == d:
        layout, heads = "split", cos.shape[1]
        if d % (16 * heads):
            raise ValueError(f"{fn}: {name} split table needs head halves of whole 8-element vectors "
                             f"(D % (16 * H) == 0), got D={d}, H={heads}")
    else:
        raise ValueError(f"{fn}: {name} must be (B|1, N, D) interleaved or (B|1, H, N, D/H/2) split for "
                         f"{tuple(x.shape)}, got {tuple(cos.shape)}")
    if cos.stride() != sin.stride() or not (_fits(cos) and _fits(sin)):
        cos, sin = cos.contiguous(), sin.contiguous()
    if layout == "interleaved":
        return layout, cos, sin, _stride(cos, 0), 0, _stride(cos, 1), heads
    return layout, cos, sin, _stride(cos, 0), _stride(cos, 1), _stride(cos, 2), heads


def _address(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _fp8_scales(fn: str, scales) -> tuple[torch.Tensor, torch.Tensor]:
    """(q_scale, k_scale) for an e4m3 output: one-element fp32 tensors (static, per tensor)."""
    if not isinstance(scales, (tuple, list)) or len(scales) != 2:
        raise ValueError(f"{fn}: fp8_scales must be a (q_scale, k_scale) pair, got {type(scales).__name__}")
    for i, s in enumerate(scales):
        if not isinstance(s, torch.Tensor) or s.numel() != 1 or s.dtype != torch.float32:
            raise ValueError(f"{fn}: fp8_scales[{i}] must be a one-element float32 tensor, got {_shape(s)} "
                             f"{getattr(s, 'dtype', '')}")
    return tuple(scales)


# ---- ops -----------------------------------------------------------------------------------

def _qk_weights(fn: str, q_weight, k_weight, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    qw, kw = (_tensor(fn, name, w, 1, _FLOATS) for name, w in (("q_weight", q_weight), ("k_weight", k_weight)))
    if qw.shape[0] != d or kw.shape[0] != d or qw.dtype != kw.dtype:
        raise ValueError(f"{fn}: q_weight and k_weight must be ({d},) of one dtype, got {tuple(qw.shape)} "
                         f"{qw.dtype} and {tuple(kw.shape)} {kw.dtype}")
    return _view(qw), _view(kw)


_NO_ROPE = ("none", None, None, 0, 0, 0, 1)


def _qk_tables(fn: str, rope, k_rope, q: torch.Tensor, k: torch.Tensor) -> tuple[tuple, tuple]:
    """(q table, k table) as _rope_table gives them; k_rope is ignored without rope (reference)."""
    if rope is None:
        return _NO_ROPE, _NO_ROPE
    q_table = _rope_table(fn, "rope", rope, q)
    k_table = q_table if k_rope is None and k.shape[1] == q.shape[1] else \
        _rope_table(fn, "rope" if k_rope is None else "k_rope", rope if k_rope is None else k_rope, k)
    if k_table[0] != q_table[0]:
        raise ValueError(f"{fn}: k_rope must use rope's layout ({q_table[0]}), got {k_table[0]}")
    return q_table, k_table


def qk_norm_rope(q, k, q_weight, k_weight, eps, rope, k_rope=None, *, fp8_scales=None, q_out=None, k_out=None):
    """RMSNorm over the full width of q (B, Nq, D) and k (B, Nk, D) with learned weights, then
    RoPE (``rope`` for q, ``k_rope`` or ``rope`` for k; None: no rotation, k_rope ignored as in
    the reference), one launch. Outputs bf16, or e4m3 value / scale with ``fp8_scales``."""
    fn = "qk_norm_rope"
    q, k = _view(_tensor(fn, "q", q, 3, (_BF16,))), _view(_tensor(fn, "k", k, 3, (_BF16,)))
    b, nq, d = q.shape
    if k.shape[0] != b or k.shape[2] != d:
        raise ValueError(f"{fn}: k must be (B={b}, Nk, D={d}) like q, got {tuple(k.shape)}")
    _width(fn, "q", d, 16)
    qw, kw = _qk_weights(fn, q_weight, k_weight, d)
    eps = _eps(fn, eps)
    q_table, k_table = _qk_tables(fn, rope, k_rope, q, k)
    scales = (None, None) if fp8_scales is None else _fp8_scales(fn, fp8_scales)
    dtype = _BF16 if fp8_scales is None else _FP8
    q_out = _out(fn, "q_out", q_out, q.shape, dtype, q.device)
    k_out = _out(fn, "k_out", k_out, k.shape, dtype, q.device)
    _same_cuda_device(fn, q.device, {"k": k, "q_weight": qw, "k_weight": kw, "rope cos": q_table[1],
                                     "rope sin": q_table[2], "k_rope cos": k_table[1], "k_rope sin": k_table[2],
                                     "fp8_scales[0]": scales[0], "fp8_scales[1]": scales[1]})
    ext = _ext()
    ropes = [ext.Rope(layout, 0 if c is None else c.data_ptr(), 0 if s is None else s.data_ptr(), *strides)
             for layout, c, s, *strides in (q_table, k_table)]
    with _launch(q.device) as stream:
        ext.qk_norm_rope(_rows(ext, q), _rows(ext, k), _rows(ext, q_out), _rows(ext, k_out), qw.data_ptr(),
                         kw.data_ptr(), qw.dtype == torch.float32, ropes[0], ropes[1], _address(scales[0]),
                         _address(scales[1]), b, nq, k.shape[1], d, eps, stream)
    return q_out, k_out


def ada_norm(x, shift, scale, eps, kind="rms", *, out=None):
    """norm(x) * (1 + scale) + shift for x (B, N, D) bf16; norm = parameter-free RMSNorm ("rms")
    or LayerNorm ("layer"), fp32 statistics; shift/scale None, (B|1, 1, D) or (B|1, N, D)."""
    fn = "ada_norm"
    if kind not in _KINDS:
        raise ValueError(f"{fn}: kind must be 'rms' or 'layer', got {kind!r}")
    x = _view(_tensor(fn, "x", x, 3, (_BF16,)))
    _width(fn, "x", x.shape[2], 8)
    eps = _eps(fn, eps)
    shift, scale = _broadcast_rows(fn, "shift", shift, x), _broadcast_rows(fn, "scale", scale, x)
    out = _out(fn, "out", out, x.shape, _BF16, x.device)
    _same_cuda_device(fn, x.device, {"shift": shift, "scale": scale})
    ext = _ext()
    with _launch(x.device) as stream:
        ext.ada_norm(_rows(ext, x), _rows(ext, shift), _rows(ext, scale), _rows(ext, out), *x.shape, eps, kind,
                     stream)
    return out


def gated_residual(x, y, gate, *, out=None):
    """x + gate * y for x, y (B, N, D) bf16; gate None (means 1), (B|1, 1, D) or (B|1, N, D),
    bf16 or fp32. ``out=x`` updates the residual stream in place."""
    fn = "gated_residual"
    x, y = _view(_tensor(fn, "x", x, 3, (_BF16,))), _view(_tensor(fn, "y", y, 3, (_BF16,)))
    if y.shape != x.shape:
        raise ValueError(f"{fn}: y must have x's shape {tuple(x.shape)}, got {tuple(y.shape)}")
    _width(fn, "x", x.shape[2], 8)
    gate = _broadcast_rows(fn, "gate", gate, x)
    out = _out(fn, "out", out, x.shape, _BF16, x.device)
    _same_cuda_device(fn, x.device, {"y": y, "gate": gate})
    ext = _ext()
    with _launch(x.device) as stream:
        ext.gated_residual(_rows(ext, x), _rows(ext, y), _rows(ext, gate), _rows(ext, out), *x.shape, stream)
    return out


def quantize_fp8(x, scale=None, per_row=False, *, out=None, scale_out=None):
    """x (..., K) bf16 -> (q (M, K) float8_e4m3fn, scale) with q = e4m3(clamp(x / scale, +-448)).

    ``scale`` given: static, one element (per tensor) or M elements (per row), fp32; it is
    returned (copied into ``scale_out`` when one is given). Otherwise dynamic amax / 448 per row
    (M, 1) when ``per_row``, else a 0-d per-tensor scale reduced on the device (no host sync)."""
    fn = "quantize_fp8"
    x = _tensor(fn, "x", x, None, (_BF16,))
    if x.ndim < 1:
        raise ValueError(f"{fn}: x must have at least 1 dim, got a 0-d tensor")
    cols = x.shape[-1]
    if cols % 8:
        raise ValueError(f"{fn}: x's last dim must be a multiple of 8 (16-byte vectors), got {cols}")
    x2 = _view(x.reshape(-1, cols))
    rows = x2.shape[0]
    if scale is not None:
        scale = _tensor(fn, "scale", scale, None, (torch.float32,))
        if scale.numel() not in (1, rows):
            raise ValueError(f"{fn}: a static scale must have 1 (per tensor) or M={rows} (per row) elements, "
                             f"got shape {tuple(scale.shape)}")
        scale_shape = tuple(scale.shape)
    else:
        scale_shape = (rows, 1) if per_row else ()
    out = _out(fn, "out", out, (rows, cols), _FP8, x.device)
    if scale_out is not None and (not isinstance(scale_out, torch.Tensor) or tuple(scale_out.shape) != scale_shape
                                  or scale_out.dtype != torch.float32 or scale_out.device != x.device
                                  or not scale_out.is_contiguous()):
        raise ValueError(f"{fn}: scale_out must be a contiguous {scale_shape} float32 tensor on {x.device}, got "
                         f"{_shape(scale_out)} {getattr(scale_out, 'dtype', '')}")
    _same_cuda_device(fn, x.device, {"scale": scale})
    ext = _ext()
    with _launch(x.device) as stream:
        if scale is not None:
            flat = scale.contiguous()
            ext.quantize_fp8_static(x2.data_ptr(), _row_stride(x2), out.data_ptr(), _row_stride(out),
                                    flat.data_ptr(), 0 if flat.numel() == 1 else 1, rows, cols, stream)
            return out, scale if scale_out is None else scale_out.copy_(scale)
        if scale_out is None:
            scale_out = torch.empty(scale_shape, dtype=torch.float32, device=x.device)
        ext.quantize_fp8_dynamic(x2.data_ptr(), _row_stride(x2), out.data_ptr(), _row_stride(out),
                                 scale_out.data_ptr(), bool(per_row), rows, cols, stream)
    return out, scale_out


__all__ = ["available", "qk_norm_rope", "ada_norm", "gated_residual", "quantize_fp8"]
