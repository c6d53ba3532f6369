"""Benchmark fp8 attention (q, k, v in e4m3 with dynamic per-head scales) against bf16 SDPA.

    python bench/ops_fp8_attention.py [--shapes NAME,...] [--reps N] [--out DIR] [--smoke]

Shapes, batch 2 (classifier-free guidance) at 768x512x121 (6144 video tokens), bf16 inputs:
  ltxv-2b-self      Nq = Nk = 6144, H = 32, D = 64     LTX-Video 2B self-attention
  ltxv-13b-self     Nq = Nk = 6144, H = 32, D = 128    LTX-Video 13B self-attention
  ltx2-video-self   Nq = Nk = 6144, H = 32, D = 128    LTX-2 video self-attention (13B's geometry)
  ltxv-2b-cross     Nq = 6144, Nk = 128, H = 32, D = 64, key-padding bias -10000 (text cross-attention)
  ltx2-video-cross  Nq = 6144, Nk = 1024, H = 32, D = 128, key-padding bias -finfo(bf16).max
Implementations: the torch (fp32 reference), triton and cuda backends' attention_fp8; while no
triton backend serves it, "triton-kernel" (ltxengine.kernels.fp8_attention called directly);
sdpa-bf16 (torch SDPA on the bf16 inputs, default dispatch: what the models run today) and
sdpa-bf16-flash (the flash backend forced; unmasked shapes), the figures fp8 has to beat.
Verification: the fp8 implementations against reference.attention_fp8 (fp32) within 2 x the
error of a torch emulation of the kernel's arithmetic (e4m3 q, k, v and P, P's row sum over the
rounded P) + one bf16 ulp; the bf16 baselines against fp32 attention of the same bf16 inputs
within 2 x the error of an emulation with P rounded to bf16 + one ulp.
TFLOP/s counts 4 B H Nq Nk D (QK^T and PV; the quantization passes are not counted as work).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from ltxengine.ops import reference  # noqa: E402

SCRIPT = "ops_fp8_attention"
DTYPE = torch.bfloat16
FP8 = torch.float8_e4m3fn
EMULATION_ROWS = 512  # query rows per chunk of the emulations: (B, H, 512, Nk) fp32 scores


@dataclass(frozen=True)
class Shape:
    batch: int
    nq: int
    nk: int
    heads: int
    head_dim: int
    masked: int = 0  # keys masked in the last sample (key padding); 0: no mask
    mask_value: float = 0.0


SHAPES = {
    "ltxv-2b-self": Shape(2, 6144, 6144, 32, 64),
    "ltxv-13b-self": Shape(2, 6144, 6144, 32, 128),
    "ltx2-video-self": Shape(2, 6144, 6144, 32, 128),
    "ltxv-2b-cross": Shape(2, 6144, 128, 32, 64, masked=40, mask_value=-10000.0),
    "ltx2-video-cross": Shape(2, 6144, 1024, 32, 128, masked=300, mask_value=-torch.finfo(DTYPE).max),
}
# Odd lengths, several query and key tiles under the interpreter.
SMOKE_SHAPES = {
    "smoke-self-37-h2d64": Shape(2, 37, 37, 2, 64),
    "smoke-cross-37x29-h2d128": Shape(2, 37, 29, 2, 128, masked=11, mask_value=-10000.0),
}
BASELINES = {"sdpa_bf16": "sdpa-bf16", "sdpa_bf16_flash": "sdpa-bf16-flash"}


def make_inputs(s: Shape, device) -> tuple:
    """bf16 (q, k, v, mask): q and k unit-RMS per token (the models' RMSNorm), v standard normal,
    mask None or the models' key-padding bias (B, 1, 1, Nk) in bf16."""
    def normed(n):
        x = torch.randn(s.batch, n, s.heads * s.head_dim, device=device)
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)).to(DTYPE)

    q, k = normed(s.nq), normed(s.nk)
    v = torch.randn(s.batch, s.nk, s.heads * s.head_dim, device=device).to(DTYPE)
    mask = None
    if s.masked:
        mask = torch.zeros(s.batch, 1, 1, s.nk, device=device)
        mask[-1, ..., s.nk - s.masked:] = s.mask_value
        mask = mask.to(DTYPE)
    return q, k, v, mask


def _heads(x: torch.Tensor, heads: int, quantize: bool) -> torch.Tensor:
    """(B, N, H*D) -> fp32 (B, H, N, D); with ``quantize`` the reference's e4m3 values * scale."""
    x = x.float().unflatten(-1, (heads, -1)).transpose(1, 2)
    if not quantize:
        return x
    scale = x.abs().amax(dim=(2, 3), keepdim=True).clamp(min=reference.FP8_MIN_AMAX) / reference.FP8_MAX
    return (x / scale).clamp(-reference.FP8_MAX, reference.FP8_MAX).to(FP8).float() * scale


def emulate(q, k, v, heads: int, mask, fp8: bool) -> torch.Tensor:
    """A low-precision attention in torch, fp32 result (B, Nq, H*D). fp8: the Triton kernel's
    arithmetic (quantized q, k, v; P * 448 rounded to e4m3; row sum of the rounded P). Otherwise a
    bf16 flash attention's (bf16 inputs; P rounded to bf16 for PV; row sum of the fp32 P)."""
    qd, kd, vd = (_heads(t, heads, fp8) for t in (q, k, v))
    outs = []
    for r0 in range(0, qd.shape[2], EMULATION_ROWS):
        s = qd[:, :, r0:r0 + EMULATION_ROWS] @ kd.transpose(-1, -2) / math.sqrt(qd.shape[-1])
        if mask is not None:
            s = s + mask.float()
        m = s.amax(-1, keepdim=True)
        p = torch.exp(s - torch.where(m == -math.inf, 0.0, m))  # rows of only -inf: P = 0, output 0
        if fp8:
            p = (p * reference.FP8_MAX).to(FP8).float()
            outs.append((p @ vd) / p.sum(-1, keepdim=True).clamp(min=1.0))  # >= 448 with any key
        else:
            outs.append((p.to(DTYPE).float() @ vd) / p.sum(-1, keepdim=True).clamp(min=1e-30))
        del s, p
    return torch.cat(outs, dim=2).transpose(1, 2).flatten(2)


def _sdpa_bf16(q, k, v, heads, mask, flash: bool):
    if not flash:
        return reference.attention(q, k, v, heads, mask)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        b = q.shape[0]
        qh, kh, vh = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
        return F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2).reshape(b, -1, q.shape[-1])


def _baseline_impls(q, k, v, heads, mask) -> list:
    """bf16 SDPA (default dispatch, and flash when there is no mask), each with its own oracle:
    fp32 attention of the same bf16 inputs."""
    with common.exact_fp32():
        oracle = reference.attention(q.float(), k.float(), v.float(), heads, None if mask is None else mask.float())
        tol = common.error_budget(common.max_abs_err(emulate(q, k, v, heads, mask, fp8=False).to(DTYPE), oracle),
                                  oracle)
    impls = [common.Impl("sdpa-bf16", lambda: _sdpa_bf16(q, k, v, heads, mask, False), oracle=oracle, tolerance=tol)]
    if mask is None:
        impls.append(common.Impl("sdpa-bf16-flash", lambda: _sdpa_bf16(q, k, v, heads, mask, True),
                                 oracle=oracle, tolerance=tol))
    else:
        impls.append(common.Impl("sdpa-bf16-flash", None, "skipped",
                                 "skipped: flash attention takes no additive mask"))
    return impls


def _direct_kernel_impl(impls: list, q, k, v, heads, mask) -> list:
    """The Triton launcher itself when the triton backend does not serve attention_fp8 (yet)."""
    triton_impl = next(i for i in impls if i.name == "triton")
    if triton_impl.fn is not None:
        return []
    try:
        from ltxengine.kernels.fp8_attention import attention_fp8
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return [common.Impl("triton-kernel", None, "unavailable", f"unavailable: {common._short(e)}")]
    return [common.Impl("triton-kernel", lambda: attention_fp8(q, k, v, heads, mask), source="triton")]


def attention_group(s: Shape, device) -> tuple[list, object, float]:
    """(impls, oracle, tolerance) for one shape."""
    q, k, v, mask = make_inputs(s, device)
    with common.exact_fp32():
        # The reference upcasts before quantizing: fp32 inputs give the same e4m3 values, fp32 out.
        oracle = reference.attention_fp8(q.float(), k.float(), v.float(), s.heads, mask)
        lowp = emulate(q, k, v, s.heads, mask, fp8=True).to(DTYPE)
        tol = common.error_budget(common.max_abs_err(lowp, oracle), oracle)
        del lowp
    impls = common.backend_impls("attention_fp8", lambda fn: fn(q, k, v, s.heads, mask), device)
    impls += _direct_kernel_impl(impls, q, k, v, s.heads, mask)
    impls += _baseline_impls(q, k, v, s.heads, mask)
    return impls, oracle, tol


def bench_shape(settings: common.Settings, name: str, s: Shape) -> list[dict]:
    impls, oracle, tol = attention_group(s, settings.device)
    results = [common.measure(i, oracle, tol, settings) for i in settings.keep(impls)]
    common.add_ratios(results, BASELINES)
    dims = {"B": s.batch, "Nq": s.nq, "Nk": s.nk, "H": s.heads, "D": s.head_dim, "masked_keys": s.masked}
    flops = 4 * s.batch * s.heads * s.nq * s.nk * s.head_dim
    return [common.make_record(settings, r, op="attention_fp8", shape=name, dims=dims, dtype=DTYPE,
                               **common.throughput(r, settings.ceilings, flops=flops))
            for r in results]


def main(argv: list[str] | None = None) -> int:
    parser = common.make_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    settings = common.settings_from_args(SCRIPT, parser, args, list(shapes), default_reps=30,
                                         ceilings=("matmul",))
    records = []
    for name in settings.shapes:
        records += bench_shape(settings, name, shapes[name])
    return common.finish(settings, records)


if __name__ == "__main__":
    sys.exit(main())
