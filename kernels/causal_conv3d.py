"""Causal 3D convolution of the LTX video VAE as an implicit GEMM, with the decoder's prologue fused.

Reference: ``ltxengine.ops.reference.causal_conv3d`` (fp32 oracle) and ``conv_prologue``.

GEMM view: M = B*To*Ho*Wo output voxels, N = Cout, K = kt*kh*kw*Cin. A program owns a
(BLOCK_M voxels x BLOCK_N channels) output tile and walks K one (tap, Cin block) at a time. The
source voxel of every tap is found by index arithmetic, so no padded copy of x is ever made
(a padded 128 x 121 x 512 x 768 decoder input would cost another 12 GB in bf16):
- time: LTX pads by repeating edge frames, i.e. the source frame index is clamped into [0, T-1];
- space: zeros -> masked load; reflect -> mirrored index; replicate -> clamped index.

Prologue (pixel norm -> per-sample modulation -> SiLU, as the decoder applies before its convs) is
evaluated on the fly on each loaded x tile, in fp32. Pixel norm needs a reduction over all
channels first, so a small kernel writes the per-voxel rstd (B, T, H, W) fp32 (one read of x);
the conv then reads x once more: two passes over x instead of the four of the unfused modules.
Padding follows the reference: reflect/replicate copy activated values (the prologue is applied
to the mirrored source voxel), zero padding is zero after the prologue (masked after it).
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from ._common import FLOAT_DTYPES, round_bf16

_PAD_MODES = {"zeros": 0, "reflect": 1, "replicate": 2}
_WIDE_FROM = 2**31  # element extent from which the conv kernel needs int64 offsets (tests lower it)


@triton.jit
def _pixel_rstd_kernel(
    x_ptr,  # (B, C, T, H, W), any strides
    rstd_ptr,  # (B, T, H, W) fp32, contiguous
    C, T, H, W, V,  # V = B*T*H*W voxels
    sxb, sxc, sxt, sxh, sxw, eps,
    BLOCK_C: tl.constexpr, BLOCK_V: tl.constexpr,
):
    # Voxels run along the tile's fast axis: in the usual layout w is contiguous, so every
    # channel row of the tile is one coalesced segment.
    v = tl.program_id(0) * BLOCK_V + tl.arange(0, BLOCK_V)
    v_ok = v < V
    w = v % W
    r = v // W
    h = r % H
    r = r // H
    t = r % T
    b = r // T
    # int64: a decoder's last-stage input has more than 2**31 elements.
    base = b.to(tl.int64) * sxb + t.to(tl.int64) * sxt + h.to(tl.int64) * sxh + w.to(tl.int64) * sxw
    acc = tl.zeros((BLOCK_V,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        mask = (c < C)[:, None] & v_ok[None, :]
        xs = tl.load(x_ptr + c.to(tl.int64)[:, None] * sxc + base[None, :], mask=mask, other=0.0)
        xs = xs.to(tl.float32)
        acc += tl.sum(xs * xs, axis=0)
    tl.store(rstd_ptr + v, tl.rsqrt(acc / C + eps), mask=v_ok)


@triton.jit
def _source_index(i, n, PAD_MODE: tl.constexpr):
    """Map a padded coordinate i to the unpadded source index in [0, n) and whether it reads x
    (False only for zero padding). Reflect needs pad < n, checked by the launcher."""
    if PAD_MODE == 1:
        i = tl.where(i < 0, -i, i)
        i = tl.where(i >= n, 2 * (n - 1) - i, i)
    elif PAD_MODE == 2:
        i = tl.minimum(tl.maximum(i, 0), n - 1)
    ok = (i >= 0) & (i < n)
    return tl.where(ok, i, 0), ok


@triton.jit
def _wide(i, WIDE: tl.constexpr):
    """Index as an offset type: int64 only when a tensor needs it (the decoder's last stage
    reaches 6e9 elements); int32 math otherwise saves the registers and instructions."""
    if WIDE:
        return i.to(tl.int64)
    return i


@triton.jit
def _prologue(a, mask, ok, vox, ci, ci_ok, rstd_ptr, scale_ptr, shift_ptr,
              HAS_NORM: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr,
              SILU: tl.constexpr):
    """Pixel norm, modulation and SiLU on an fp32 (BLOCK_M, BLOCK_K) tile of one sample's
    source voxels. rstd_ptr, scale_ptr, shift_ptr already point at that sample."""
    if HAS_NORM:
        a = a * tl.load(rstd_ptr + vox, mask=ok, other=0.0)[:, None]
    if HAS_SCALE:
        a = a * (1.0 + tl.load(scale_ptr + ci, mask=ci_ok, other=0.0).to(tl.float32))[None, :]
    if HAS_SHIFT:
        a = a + tl.load(shift_ptr + ci, mask=ci_ok, other=0.0).to(tl.float32)[None, :]
    if SILU:
        a = a * tl.sigmoid(a)
    # Zero padding is zero after the prologue (a shift would otherwise leak into the border).
    return tl.where(mask, a, 0.0)


@triton.jit
def _conv3d_kernel(
    x_ptr,  # (B, Cin, T, H, W), any strides
    w_ptr,  # (KT*KH*KW*Cin, Cout) contiguous: packed weight, row = tap * Cin + ci
    bias_ptr,  # (Cout,) or None
    rstd_ptr,  # (B, T, H, W) fp32 contiguous, or None without pixel norm
    scale_ptr, shift_ptr,  # (B, Cin) contiguous, or None
    out_ptr,  # (B, Cout, To, Ho, Wo), any strides
    Cin, Cout, T, H, W, To, Ho, Wo,
    sxb, sxc, sxt, sxh, sxw,
    sob, soc, sot, soh, sow,
    ST, SH, SW, FRONT,  # conv strides; frames repeated in front
    KT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, PAD_MODE: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_NORM: tl.constexpr, HAS_SCALE: tl.constexpr,
    HAS_SHIFT: tl.constexpr, SILU: tl.constexpr, DOT_PRECISION: tl.constexpr, INTERPRET_BF16: tl.constexpr,
    WIDE: tl.constexpr,  # int64 element offsets: x, out or the weight spans 2**31 elements or more
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    PROLOGUE: tl.constexpr = HAS_NORM or HAS_SCALE or HAS_SHIFT or SILU
    # 1-D grid over (sample, M tile, N tile), N fastest: the programs sharing one x tile run
    # together (L2 reuse), and the ~370k M tiles of the decoder's last stage are not bound by
    # the 65535 limit of grid axes 1 and 2. A tile never spans two samples, so the sample's
    # offsets and its (Cin,) modulation rows are per-program scalars and vectors, not gathers.
    n_tiles = tl.cdiv(Cout, BLOCK_N)
    m_tiles = tl.cdiv(To * Ho * Wo, BLOCK_M)
    pid = tl.program_id(0)
    b = pid // (n_tiles * m_tiles)
    n = (pid % n_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = (pid // n_tiles % m_tiles) * BLOCK_M + tl.arange(0, BLOCK_M)
    n_ok = n < Cout
    m_ok = m < To * Ho * Wo
    wo = m % Wo
    ho = m // Wo % Ho
    to = m // (Wo * Ho)
    # Padded-space origin of each output voxel's window; taps add their offsets in the loop.
    t0 = to * ST - FRONT
    h0 = ho * SH - KH // 2
    w0 = wo * SW - KW // 2
    x_b = x_ptr + _wide(b, WIDE) * sxb
    if HAS_NORM:
        rstd_ptr += _wide(b, WIDE) * T * H * W
    if HAS_SCALE:
        scale_ptr += b * Cin
    if HAS_SHIFT:
        shift_ptr += b * Cin
    w_cols = w_ptr + n[None, :]
    kk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    n_cb = tl.cdiv(Cin, BLOCK_K)
    # One flat loop over (tap, Cin block) keeps a single software-pipelined loop on the GPU.
    for it in range(0, KT * KH * KW * n_cb):
        tap = it // n_cb
        ci = (it - tap * n_cb) * BLOCK_K + kk
        ci_ok = ci < Cin
        ts = tl.minimum(tl.maximum(t0 + tap // (KH * KW), 0), T - 1)  # LTX: edge frames repeat
        hs, h_ok = _source_index(h0 + (tap // KW) % KH, H, PAD_MODE)
        ws, w_ok = _source_index(w0 + tap % KW, W, PAD_MODE)
        ok = m_ok & h_ok & w_ok
        mask = ok[:, None] & ci_ok[None, :]
        src = x_b + _wide(ts, WIDE) * sxt + _wide(hs, WIDE) * sxh + _wide(ws, WIDE) * sxw
        a = tl.load(src[:, None] + _wide(ci, WIDE)[None, :] * sxc, mask=mask, other=0.0)
        if PROLOGUE:
            a = _prologue(a.to(tl.float32), mask, ok, (ts * H + hs) * W + ws, ci, ci_ok,
                          rstd_ptr, scale_ptr, shift_ptr, HAS_NORM, HAS_SCALE, HAS_SHIFT, SILU)
        wt = tl.load(w_cols + _wide(tap * Cin + ci, WIDE)[:, None] * Cout,
                     mask=ci_ok[:, None] & n_ok[None, :], other=0.0)
        # The activated tile is rounded to the weight dtype for the tensor cores; fp32 accumulate.
        if INTERPRET_BF16:
            # bf16 products are exact in fp32, so fp32 operands holding bf16 values give the
            # tensor cores' numerics (see _common.round_bf16 for why the interpreter needs this).
            a = round_bf16(a.to(tl.float32))
            wt = wt.to(tl.float32)
        else:
            a = a.to(wt.dtype)
        acc = tl.dot(a, wt, acc, input_precision=DOT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    o_row = _wide(b, WIDE) * sob + _wide(to, WIDE) * sot + _wide(ho, WIDE) * soh + _wide(wo, WIDE) * sow
    o_ptr = out_ptr + o_row[:, None] + _wide(n, WIDE)[None, :] * soc
    if INTERPRET_BF16:
        acc = round_bf16(acc)
    tl.store(o_ptr, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def _interpreted(x: torch.Tensor) -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1" or not x.is_cuda


def _conv_config(interpreted: bool, x: torch.Tensor, m: int, cout: int) -> dict:
    """Block sizes, warps and stages. Untuned: no GPU has timed them yet, and no autotune (CI runs
    on the interpreter). Chosen from sm_90 compiles of the production layers (register and
    shared-memory reports of Triton 3.9, no spills, warpgroup MMA and cp.async pipelining seen):
    - 16-bit: a 128 x 128 tile (64 columns for narrow convs such as conv_out's 48), 8 warps,
      3 stages. BLOCK_K 64 when channels are contiguous (channels-last x: each row of the x
      tile is one 16-byte vector load); 32 for NCDHW x, whose x tile is a gather of scalars
      and whose prologue at K=64 pushed the kernel past 255 registers.
    - fp32: the IEEE (non-TF32) dot runs on FMA units; it is a test path, so a small tile.
    Interpreter: Python runs once per program, so few programs and the smallest dot-legal K/N."""
    cin = x.shape[1]
    if interpreted:
        def fit(size, cap):  # power of two, at least 16 (tl.dot's minimum), at most cap
            return max(16, min(cap, triton.next_power_of_2(size)))
        return dict(BLOCK_M=fit(m, 512), BLOCK_N=fit(cout, 64), BLOCK_K=fit(cin, 32), num_warps=4)
    if x.dtype == torch.float32:
        return dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=2)
    return dict(BLOCK_M=128, BLOCK_N=128 if cout >= 128 else 64, BLOCK_K=64 if x.stride(1) == 1 else 32,
                num_warps=8, num_stages=3)


def _check_tensor(name: str, t, ndim: int, x: torch.Tensor | None) -> None:
    if not isinstance(t, torch.Tensor) or t.ndim != ndim:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"causal_conv3d: {name} must be a {ndim}-D tensor, got {got}")
    if x is None:
        if t.dtype not in FLOAT_DTYPES:
            raise ValueError(f"causal_conv3d: {name} must be float32, bfloat16 or float16, got {t.dtype}")
        return
    if t.dtype != x.dtype:
        raise ValueError(f"causal_conv3d: {name} must have x's dtype {x.dtype}, got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"causal_conv3d: {name} must be on x's device {x.device}, got {t.device}")


def _check_operands(x, weight, bias) -> None:
    _check_tensor("x", x, 5, None)
    if x.numel() == 0:
        raise ValueError(f"causal_conv3d: x must not be empty, got shape {tuple(x.shape)}")
    voxels = x.shape[0] * math.prod(x.shape[2:])
    if voxels >= 2**31:  # voxel and output-row indices are int32 in the kernels (element offsets may widen)
        raise ValueError(f"causal_conv3d: x must have fewer than 2**31 voxels B*T*H*W, got {voxels}")
    _check_tensor("weight", weight, 5, x)
    if weight.shape[1] != x.shape[1] or weight.shape[0] == 0:
        raise ValueError(f"causal_conv3d: weight must be (Cout>0, Cin={x.shape[1]}, kt, kh, kw), "
                         f"got {tuple(weight.shape)}")
    if any(k % 2 == 0 for k in weight.shape[2:]):
        raise ValueError(f"causal_conv3d: kernel sizes must be odd, got {tuple(weight.shape[2:])}")
    if bias is not None:
        _check_tensor("bias", bias, 1, x)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"causal_conv3d: bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")


def _check_stride(stride) -> tuple[int, int, int]:
    ok = isinstance(stride, (tuple, list)) and len(stride) == 3
    ok = ok and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in stride)
    if not ok:
        raise ValueError(f"causal_conv3d: stride must be 3 positive ints, got {stride!r}")
    return tuple(stride)


def _check_padding(mode, x: torch.Tensor, weight: torch.Tensor) -> int:
    if mode == "circular":
        raise ValueError("causal_conv3d: spatial_padding_mode 'circular' is not supported "
                         "(no LTX model uses it), use 'zeros', 'reflect' or 'replicate'")
    if mode not in _PAD_MODES:
        raise ValueError(f"causal_conv3d: spatial_padding_mode must be one of {tuple(_PAD_MODES)}, got {mode!r}")
    kh, kw = weight.shape[3:]
    h, w = x.shape[3:]
    if mode == "reflect" and (kh // 2 >= h or kw // 2 >= w):
        raise ValueError(f"causal_conv3d: reflect padding ({kh // 2}, {kw // 2}) must be smaller than "
                         f"the input's (H, W) = ({h}, {w})")
    return _PAD_MODES[mode]


def _check_modulation(name: str, t, x: torch.Tensor) -> torch.Tensor | None:
    if t is None:
        return None
    want = (x.shape[0], x.shape[1])
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != want:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"causal_conv3d: {name} must be (B, Cin) = {want}, got {got}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"causal_conv3d: {name} must be float32, bfloat16 or float16, got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"causal_conv3d: {name} must be on x's device {x.device}, got {t.device}")
    return t.contiguous()  # (B, Cin): tiny


def _check_norm_eps(norm_eps) -> None:
    if norm_eps is None:
        return
    if isinstance(norm_eps, bool) or not isinstance(norm_eps, (int, float)) or not norm_eps > 0:
        raise ValueError(f"causal_conv3d: norm_eps must be a number > 0, got {norm_eps!r}")


def _geometry(x: torch.Tensor, weight: torch.Tensor, stride, causal: bool) -> tuple[tuple, int]:
    """Output shape (as the reference computes it from the padded sizes) and front frame count.
    With odd kernels the padded extent is T + kt - 1 (H + kh - 1, ...), so every output dim is
    (size - 1) // stride + 1 >= 1: a non-empty x (checked) never gives an empty output."""
    kt, kh, kw = weight.shape[2:]
    front = kt - 1 if causal else (kt - 1) // 2
    back = 0 if causal else (kt - 1) // 2
    t, h, w = x.shape[2:]
    st, sh, sw = stride
    to = (t + front + back - kt) // st + 1
    ho = (h + 2 * (kh // 2) - kh) // sh + 1
    wo = (w + 2 * (kw // 2) - kw) // sw + 1
    return (x.shape[0], weight.shape[0], to, ho, wo), front


def _check_out(out, shape, x: torch.Tensor) -> torch.Tensor:
    if out is None:
        return torch.empty(shape, dtype=x.dtype, device=x.device)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(shape) \
            or out.dtype != x.dtype or out.device != x.device:
        got = (tuple(out.shape), out.dtype, out.device) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"causal_conv3d: out must be {tuple(shape)} {x.dtype} on {x.device}, got {got}")
    return out


def _extent(t: torch.Tensor) -> int:
    """One past the largest element offset a (strided) tensor reaches."""
    return 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))


def _pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """(Cout, Cin, kt, kh, kw) -> (kt*kh*kw*Cin, Cout): K rows tap-major, Cout contiguous so a
    (BLOCK_K, BLOCK_N) tile is BLOCK_K coalesced row segments. Done per call (a few MB at most);
    the engine can pre-pack once at load time when the copy shows up in profiles."""
    cout = weight.shape[0]
    return weight.permute(2, 3, 4, 1, 0).reshape(-1, cout).contiguous()


def _pixel_rstd(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-voxel 1 / sqrt(mean_c x^2 + eps), (B, T, H, W) fp32: the one reduction the conv
    cannot do on the fly (it needs all channels before the first K block)."""
    b, c, t, h, w = x.shape
    rstd = torch.empty((b, t, h, w), dtype=torch.float32, device=x.device)
    v = rstd.numel()
    # 256 voxels x 16 channels per step on the GPU (8 fp32 per thread at 4 warps, 16 B bf16 loads).
    block_v, block_c = (128, 8) if _interpreted(x) else (256, 16)
    _pixel_rstd_kernel[(triton.cdiv(v, block_v),)](
        x, rstd, c, t, h, w, v, *x.stride(), float(eps), BLOCK_C=block_c, BLOCK_V=block_v, num_warps=4)
    return rstd


def causal_conv3d(x, weight, bias, stride, causal, spatial_padding_mode="zeros", *, norm_eps=None,
                  scale=None, shift=None, silu=False, out=None):
    """LTX causal 3D conv with its optional prologue; returns out (B, Cout, To, Ho, Wo) in x.dtype.

    Same arguments and result as ``reference.causal_conv3d`` (spatial padding zeros, reflect or
    replicate); x may be any strided view. ``out`` is written in place when given.
    """
    _check_operands(x, weight, bias)
    stride = _check_stride(stride)
    pad_mode = _check_padding(spatial_padding_mode, x, weight)
    _check_norm_eps(norm_eps)
    scale = _check_modulation("scale", scale, x)
    shift = _check_modulation("shift", shift, x)
    shape, front = _geometry(x, weight, stride, bool(causal))
    out = _check_out(out, shape, x)
    rstd = _pixel_rstd(x, norm_eps) if norm_eps is not None else None
    b, cin, t, h, w = x.shape
    cout, _, kt, kh, kw = weight.shape
    to, ho, wo = shape[2:]
    m = to * ho * wo  # output voxels per sample: M tiles stay within one sample
    interpreted = _interpreted(x)
    cfg = _conv_config(interpreted, x, m, cout)
    grid = (b * triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(cout, cfg["BLOCK_N"]),)
    _conv3d_kernel[grid](
        x, _pack_weight(weight), bias, rstd, scale, shift, out,
        cin, cout, t, h, w, to, ho, wo, *x.stride(), *out.stride(), *stride, front,
        KT=kt, KH=kh, KW=kw, PAD_MODE=pad_mode, HAS_BIAS=bias is not None, HAS_NORM=rstd is not None,
        HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None, SILU=bool(silu),
        # fp32 inputs: exact fp32 products (no TF32 rounding) so fp32 matches the reference tightly.
        DOT_PRECISION="ieee" if x.dtype == torch.float32 or interpreted else "tf32",
        INTERPRET_BF16=interpreted and x.dtype == torch.bfloat16,
        WIDE=max(_extent(x), _extent(out), weight.numel()) >= _WIDE_FROM, **cfg,
    )
    return out
