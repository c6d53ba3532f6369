"""Triton gated residual that also writes the new stream per-row quantized (gated_residual_fp8).

The contract is exact, as for the fp8 norms (test_ada_norm_fp8.py): the stream is the plain
gated_residual kernel's bit for bit (the same fp32 operations, one rounding), and (q, scale) is
``quantize_fp8(stream, per_row=True)`` of that stored stream, bit for bit against both the fp32
reference quantizer and the Triton per-row quantizer (kernels/fp8_gemm.py), which is what an fp8
GEMM quantizing the stream itself would compute. Against the reference composition
(reference.gated_residual_fp8, fp32 math) the stream stays within the plain kernel's budget (its
one rounding: the interpreter truncates to 16 bits where torch rounds to nearest, so one ulp),
and q * scale within e4m3's half ulp (2^-4 relative) of the stream plus that difference.
"""

import pytest
import torch

from ltxengine.kernels import ada_norm as kernel
from ltxengine.kernels import fp8_gemm
from ltxengine.ops import native, reference
from tests.kernels.budget import max_err, ulp
from tests.kernels.rows import DEV, refuses_unchanged
from tests.kernels.rows import stream as _x
from tests.kernels.rows import table as _table

FP8 = torch.float8_e4m3fn


def _equal(a, b):
    return torch.equal(a.view(torch.uint8), b.view(torch.uint8)) if a.dtype == FP8 else torch.equal(a, b)


def _check_quantized(rows, q, scale):
    expect_q, expect_s = reference.quantize_fp8(rows, per_row=True)
    assert _equal(q, expect_q) and _equal(scale, expect_s)
    tq, ts = fp8_gemm.quantize_fp8(rows, per_row=True)
    assert _equal(q, tq) and _equal(scale, ts)


@pytest.mark.parametrize("gate_rows", [None, 1, 7], ids=["ungated", "per_sample", "per_token"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_stream_is_the_plain_kernels_and_q_its_quantization(gate_rows, dtype):
    x, y = _x(n=7, d=37, dtype=dtype), _x(n=7, d=37, dtype=dtype, seed=5)  # d=37: masked lanes
    gate = None if gate_rows is None else _table(2, gate_rows, 37, dtype)[:, :, 2]  # a strided slice
    before = [t.clone() for t in (x, y)]
    out, q, scale = kernel.gated_residual_fp8(x, y, gate)
    assert _equal(out, kernel.gated_residual(x, y, gate))
    assert q.shape == (14, 37) and q.dtype == FP8 and scale.shape == (14, 1) and scale.dtype == torch.float32
    _check_quantized(out, q, scale)
    assert torch.equal(x, before[0]) and torch.equal(y, before[1])
    # against the reference composition: the stream within one rounding, q within e4m3's half ulp
    ref, ref_q, ref_s = reference.gated_residual_fp8(x, y, gate)
    ref64 = reference.gated_residual(x.double(), y.double(), None if gate is None else gate.double())
    assert max_err(out, ref) <= ulp(dtype, ref64.abs().max().item())
    rows, ref64 = out.reshape(-1, 37).double(), ref64.reshape(-1, 37)
    bound = 2 ** -4 * ref64.abs() + scale.double() * 2 ** -9 + (rows - ref64).abs()
    assert bool(((q.double() * scale.double() - ref64).abs() <= bound * 1.0001).all())
    if dtype == torch.float32 and DEV == "cpu":  # no 16-bit rounding in between: the reference's bits (a
        # GPU may contract x + g * y into one FMA, one rounding fewer than torch's)
        assert _equal(q, ref_q) and _equal(scale, ref_s)


def test_in_place_strided_zero_rows_and_destinations():
    # out=x updates the stream in place; y a strided view (every other token); an all-zero row has
    # scale FP8_MIN_AMAX / 448 and q 0
    x, y = _x(n=5, d=24), _x(n=10, d=24, seed=3)[:, ::2]
    x[1, 2], y[1, 2] = 0, 0
    expect = kernel.gated_residual(x, y, None)
    q, s = torch.empty(10, 24, dtype=FP8, device=DEV), torch.empty(10, 1, device=DEV)
    got = kernel.gated_residual_fp8(x, y, None, out=x, q_out=q, scale_out=s)
    assert got[0] is x and got[1] is q and got[2] is s
    assert _equal(x, expect)
    _check_quantized(x, q, s)
    assert s[7].item() == (torch.tensor(reference.FP8_MIN_AMAX) / reference.FP8_MAX).item() and not q[7].float().any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_torch_backend_is_its_unfused_pair(dtype):
    # native (the torch backend): its gated residual (16-bit: diffusers' rounding), then the quantizer
    x, y, gate = _x(n=7, d=37, dtype=dtype), _x(n=7, d=37, dtype=dtype, seed=5), _table(2, 1, 37, dtype)[:, :, 2]
    out, q, s = native.gated_residual_fp8(x, y, gate)
    assert _equal(out, native.gated_residual(x, y, gate))
    _check_quantized(out, q, s)


def _bad(**kwargs):
    return lambda x, m: kernel.gated_residual_fp8(x, x, m, **kwargs)


@pytest.mark.parametrize("call, message", [
    (_bad(q_out=torch.empty(14, 40, device=DEV)),
     f"gated_residual_fp8: q_out must be (14, 40) torch.float8_e4m3fn on {DEV}, got (14, 40) torch.float32"),
    (_bad(q_out=torch.empty(7, 40, dtype=FP8, device=DEV)), "gated_residual_fp8: q_out must be (14, 40)"),
    (_bad(scale_out=torch.empty(14, device=DEV)),
     f"gated_residual_fp8: scale_out must be (14, 1) torch.float32 on {DEV}, got (14,)"),
    (_bad(q_out=torch.empty(40, 14, dtype=FP8, device=DEV).T), "gated_residual_fp8: q_out must have a contiguous"),
    (_bad(out=torch.empty(2, 7, 40, device=DEV)), "gated_residual_fp8: out must be (2, 7, 40) torch.bfloat16"),
    (lambda x, m: kernel.gated_residual_fp8(x, x[:, :3], m), "gated_residual_fp8: y must match x (2, 7, 40)"),
    (lambda x, m: kernel.gated_residual_fp8(x, x, m[:1, :, :7]), "gated_residual_fp8: gate must be (B|1, N|1, D)"),
])
def test_errors_name_argument_rule_and_value(call, message):
    refuses_unchanged(call, message)


@pytest.mark.gpu
@pytest.mark.parametrize("d, per_token", [(2048, False), (4096, True)])  # 2B / 13B widths
def test_production_shapes_on_gpu(d, per_token):
    # on a GPU the cast to bf16 rounds to nearest even: still the plain kernel's stream, and q / scale
    # quantize_fp8 of it, bit for bit
    x, y = _x(2, 6144, d), _x(2, 6144, d, seed=9)
    gate = _table(2, 6144 if per_token else 1, d)[:, :, 2]
    out, q, scale = kernel.gated_residual_fp8(x, y, gate)
    assert _equal(out, kernel.gated_residual(x, y, gate))
    _check_quantized(out, q, scale)
