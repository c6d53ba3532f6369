"""Triton head gate writing only its output's per-row e4m3 quantization (head_gate_fp8, LTX-2.3+).

The contract is exact, as for the other fp8-writing row kernels (test_gated_residual_fp8.py): (q,
scale) is ``quantize_fp8(head_gate(x, logits), per_row=True)`` of the plain head-gate kernel's own
output (the same fp32 operations, the same rounding to x.dtype), bit for bit against both the fp32
reference quantizer and the Triton per-row quantizer (kernels/fp8_gemm.py), which is what to_out's
fp8 GEMM quantizing the gated output itself would compute. Against the reference composition
(reference.head_gate_fp8, torch's sigmoid in fp32) q * scale stays within e4m3's half ulp (2^-4
relative) of the fp64 gated value plus the plain kernel's own error (its budget in test_head_gate.py).
"""

import re

import pytest
import torch

from ltxengine.kernels import fp8_gemm
from ltxengine.kernels import head_gate as kernel
from ltxengine.ops import native, reference
from tests.kernels.budget import max_err

DEV = "cuda" if torch.cuda.is_available() else "cpu"
FP8 = torch.float8_e4m3fn


def _equal(a, b):
    return torch.equal(a.view(torch.uint8), b.view(torch.uint8)) if a.dtype == FP8 else torch.equal(a, b)


def _inputs(b=2, n=7, heads=3, head_dim=12, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(b, n, heads * head_dim, generator=g) * 2).to(DEV, dtype)
    logits = (torch.randn(b, n, heads, generator=g) * 3).to(DEV, dtype)
    return x, logits


def _check_quantized(gated, q, scale):
    expect_q, expect_s = reference.quantize_fp8(gated, per_row=True)
    assert _equal(q, expect_q) and _equal(scale, expect_s)
    tq, ts = fp8_gemm.quantize_fp8(gated, per_row=True)
    assert _equal(q, tq) and _equal(scale, ts)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("heads,head_dim", [(3, 12), (5, 7)])  # 35 wide: masked lanes, an odd head count
def test_q_is_the_quantization_of_the_plain_kernels_output(dtype, heads, head_dim):
    x, logits = _inputs(heads=heads, head_dim=head_dim, dtype=dtype)
    before = x.clone(), logits.clone()
    q, scale = kernel.head_gate_fp8(x, logits)
    d = heads * head_dim
    assert q.shape == (14, d) and q.dtype == FP8 and scale.shape == (14, 1) and scale.dtype == torch.float32
    gated = kernel.head_gate(x, logits)
    _check_quantized(gated, q, scale)
    assert torch.equal(x, before[0]) and torch.equal(logits, before[1])
    # against the reference composition (fp64 gate): e4m3's half ulp plus the plain kernel's own error
    ref64 = reference.head_gate(x.double(), logits.double()).reshape(-1, d)
    ref_q, ref_s = reference.head_gate_fp8(x, logits)
    bound = 2 ** -4 * ref64.abs() + scale.double() * 2 ** -9 + (gated.reshape(-1, d).double() - ref64).abs()
    assert bool(((q.double() * scale.double() - ref64).abs() <= bound * 1.0001).all())
    assert max_err(ref_s, scale) <= 2 ** -7 * scale.abs().max().item()  # amax of a 16-bit rounding apart


def test_strided_inputs_zero_rows_and_destinations():
    # x as the STG value pass-through arrives (v split out of the packed q/k/v output: token stride
    # 3 D), fp32 logits strided too; an all-zero row has scale FP8_MIN_AMAX / 448 and q 0
    g = torch.Generator().manual_seed(3)
    qkv = (torch.randn(2, 5, 3 * 24, generator=g) * 2).to(DEV, torch.bfloat16)
    x = qkv[:, :, 48:]
    logits = (torch.randn(2, 5, 8, generator=g) * 3).to(DEV)[:, :, ::2]
    x[1, 2] = 0
    q, s = torch.empty(10, 24, dtype=FP8, device=DEV), torch.empty(10, 1, device=DEV)
    got = kernel.head_gate_fp8(x, logits, q_out=q, scale_out=s)
    assert got[0] is q and got[1] is s
    _check_quantized(kernel.head_gate(x, logits), q, s)
    assert s[7].item() == (torch.tensor(reference.FP8_MIN_AMAX) / reference.FP8_MAX).item() and not q[7].float().any()
    # the attention output's layout (B, H, N, Dh) transposed back: the same rows as the contiguous copy
    heads = x.unflatten(-1, (4, 6)).transpose(1, 2).contiguous()
    xt = heads.transpose(1, 2).flatten(-2)
    assert all(_equal(a, b) for a, b in zip(kernel.head_gate_fp8(xt, logits), (q, s)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_torch_backend_is_its_unfused_pair(dtype):
    # native (the torch backend): its head gate (16-bit: diffusers' rounding), then the quantizer
    x, logits = _inputs(heads=5, head_dim=7, dtype=dtype)
    q, s = native.head_gate_fp8(x[:, ::2], logits[:, ::2])
    _check_quantized(native.head_gate(x[:, ::2], logits[:, ::2]), q, s)
    if dtype == torch.float32:  # fp32: native is the reference
        assert all(_equal(a, b) for a, b in zip((q, s), reference.head_gate_fp8(x[:, ::2], logits[:, ::2])))


@pytest.mark.parametrize("kwargs, message", [
    (dict(q_out=torch.empty(14, 36)), "head_gate_fp8: q_out must be (14, 36) torch.float8_e4m3fn"),
    (dict(q_out=torch.empty(7, 36, dtype=FP8)), "head_gate_fp8: q_out must be (14, 36)"),
    (dict(scale_out=torch.empty(14)), "head_gate_fp8: scale_out must be (14, 1) torch.float32"),
    (dict(q_out=torch.empty(36, 14, dtype=FP8).T), "head_gate_fp8: q_out must have a contiguous"),
    (dict(logits=torch.zeros(2, 7, 5)), "head_gate_fp8: logits must be (B, N, H) = (2, 7, H) with H dividing 36"),
    (dict(x=torch.zeros(7, 36)), "head_gate_fp8: x must be a 3-D tensor, got (7, 36)"),
])
def test_errors_name_argument_rule_and_value(kwargs, message):
    x, logits = _inputs()
    args = {"x": x, "logits": logits, **{k: v.to(DEV) for k, v in kwargs.items()}}
    with pytest.raises(ValueError, match=re.escape(message)):
        kernel.head_gate_fp8(args.pop("x"), args.pop("logits"), **args)


@pytest.mark.gpu
@pytest.mark.parametrize("d, heads", [(4096, 32), (2048, 32)])  # LTX-2.3 22B video / audio widths
def test_production_shapes_on_gpu(d, heads):
    # on a GPU the cast to bf16 rounds to nearest even: still quantize_fp8 of the plain kernel's output
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 6144, d, generator=g).to(DEV, torch.bfloat16)
    logits = torch.randn(2, 6144, heads, generator=g).to(DEV, torch.bfloat16)
    q, scale = kernel.head_gate_fp8(x, logits)
    _check_quantized(kernel.head_gate(x, logits), q, scale)
