"""Triton adaLN that also writes its output per-row quantized (ada_norm_fp8, residual_ada_norm_fp8).

The contract is exact, so most checks are bit equalities rather than budgets: the bf16/fp16/fp32
rows are the plain kernels' (ada_norm / residual_ada_norm: the same fp32 operations, same order),
and (q, scale) is ``quantize_fp8(rows, per_row=True)`` of those stored rows, bit for bit against
both the fp32 reference quantizer and the Triton per-row quantizer (kernels/fp8_gemm.py). Against
the fp32 reference composition (reference.ada_norm_fp8) the rows stay within the plain kernels'
budget (tests/kernels/budget.py: twice torch's own low-precision error plus one ulp), and q * scale
within e4m3's half ulp (2^-4 relative) of the reference rows plus that row difference.
"""

import pytest
import torch

from ltxengine.kernels import ada_norm as kernel
from ltxengine.kernels import fp8_gemm
from ltxengine.ops import reference
from tests.kernels.budget import check_budget, max_err, ulp
from tests.kernels.rows import DEV, EPS
from tests.kernels.rows import stream as _x
from tests.kernels.rows import table as _table

FP8 = torch.float8_e4m3fn


def _bits(t):
    return t.view(torch.uint8) if t.dtype == FP8 else t


def _equal(a, b):
    return torch.equal(_bits(a), _bits(b))


def _case(dtype, per_token, kind, residual, n=7, d=37):
    """(args, plain kernel) of one call; d=37: an odd width, masked lanes in the row block."""
    x = _x(n=n, d=d, dtype=dtype)
    mod = _table(2, n if per_token else 1, d, dtype)
    if residual:
        return (x, _x(n=n, d=d, dtype=dtype, seed=5), mod[:, :, 2], mod[:, :, 3], mod[:, :, 4], EPS, kind)
    return (x, mod[:, :, 0], mod[:, :, 1], EPS, kind)


def _check_quantized(rows, q, scale):
    expect_q, expect_s = reference.quantize_fp8(rows, per_row=True)
    assert _equal(q, expect_q) and _equal(scale, expect_s)
    tq, ts = fp8_gemm.quantize_fp8(rows, per_row=True)
    assert _equal(q, tq) and _equal(scale, ts)


@pytest.mark.parametrize("residual", [False, True], ids=["ada_norm", "residual_ada_norm"])
@pytest.mark.parametrize("kind", ["rms", "layer"])
@pytest.mark.parametrize("per_token", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_rows_are_the_plain_kernels_and_q_their_quantization(residual, kind, per_token, dtype):
    args = _case(dtype, per_token, kind, residual)
    before = [a.clone() for a in args if isinstance(a, torch.Tensor)]
    fused = (kernel.residual_ada_norm_fp8 if residual else kernel.ada_norm_fp8)(*args)
    plain = (kernel.residual_ada_norm if residual else kernel.ada_norm)(*args)
    plain = plain if residual else (plain,)
    for got, want in zip(fused, plain):
        assert _equal(got, want)
    rows, q, scale = fused[-3:]
    assert q.shape == (2 * 7, 37) and q.dtype == FP8 and scale.shape == (2 * 7, 1)
    _check_quantized(rows, q, scale)
    assert all(torch.equal(a, b) for a, b in zip([a for a in args if isinstance(a, torch.Tensor)], before))
    # against the fp32 reference composition: the rows within the plain kernels' budget, q within e4m3
    f64 = [a.double() if isinstance(a, torch.Tensor) else a for a in args]
    ref = (reference.residual_ada_norm if residual else reference.ada_norm)(*f64)
    ref_rows = (ref[1] if residual else ref).reshape(-1, 37)
    lowp = (reference.residual_ada_norm_fp8 if residual else reference.ada_norm_fp8)(*args)
    if dtype == torch.float32:
        assert max_err(rows.reshape(-1, 37), ref_rows) <= 8 * ulp(torch.float32, ref_rows.abs().max().item())
    else:
        check_budget(rows.reshape(-1, 37), lowp[-3].reshape(-1, 37), ref_rows, f"{dtype} {kind}")
    deq = q.double() * scale.double()
    bound = 2 ** -4 * ref_rows.abs() + scale.double() * 2 ** -9 + (rows.reshape(-1, 37).double() - ref_rows).abs()
    assert bool(((deq - ref_rows).abs() <= bound * 1.0001).all())


@pytest.mark.parametrize("pending", [False, True])
@pytest.mark.parametrize("per_token", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_dual_rows_are_the_plain_kernels_and_q_their_quantization(pending, per_token, dtype):
    x = _x(n=7, d=37, dtype=dtype)
    mod = _table(2, 7 if per_token else 1, 37, dtype)
    y, gate = (_x(n=7, d=37, dtype=dtype, seed=5), mod[:, :, 2]) if pending else (None, None)
    args = (x, y, gate, mod[:, :, 0], mod[:, :, 1], mod[:, :, 3], mod[:, :, 4], EPS, "rms")
    fused = kernel.dual_ada_norm_fp8(*args)
    for got, want in zip(fused, kernel.dual_ada_norm(*args)):
        assert _equal(got, want)
    _check_quantized(fused[1], *fused[3:5])
    _check_quantized(fused[2], *fused[5:7])
    lowp = reference.dual_ada_norm_fp8(*args)  # the reference composition: the same rows within budget
    f64 = [a.double() if isinstance(a, torch.Tensor) else a for a in args]
    for got, low, ref in zip(fused[1:3], lowp[1:3], reference.dual_ada_norm(*f64)[1:]):
        if dtype != torch.float32:
            check_budget(got, low, ref, f"dual {dtype}")


def test_zero_rows_strided_input_and_destinations():
    # an all-zero row has scale FP8_MIN_AMAX / 448 and q 0; x a strided view (every other token)
    x = _x(n=10, d=24)[:, ::2]
    x[1, 2] = 0
    out = torch.empty(2, 5, 24, dtype=torch.bfloat16, device=DEV)
    q = torch.empty(10, 24, dtype=FP8, device=DEV)
    s = torch.empty(10, 1, device=DEV)
    got = kernel.ada_norm_fp8(x, None, None, EPS, "rms", out=out, q_out=q, scale_out=s)
    assert got[0] is out and got[1] is q and got[2] is s
    assert _equal(out, kernel.ada_norm(x.contiguous(), None, None, EPS, "rms"))
    _check_quantized(out, q, s)
    assert s[7].item() == (torch.tensor(reference.FP8_MIN_AMAX) / reference.FP8_MAX).item() and not q[7].float().any()


def _bad(fn, **kwargs):
    x = _x(n=3, d=8)
    if fn == "ada_norm_fp8":
        return lambda: kernel.ada_norm_fp8(x, None, None, EPS, **kwargs)
    return lambda: kernel.residual_ada_norm_fp8(x, x, None, None, None, EPS, **kwargs)


@pytest.mark.parametrize("fn", ["ada_norm_fp8", "residual_ada_norm_fp8"])
@pytest.mark.parametrize("kwargs, message", [
    ({"q_out": torch.empty(6, 8, device=DEV)}, r"q_out must be \(6, 8\) torch.float8_e4m3fn on cpu, got \(6, 8\) "
                                               r"torch.float32"),
    ({"q_out": torch.empty(3, 8, dtype=FP8, device=DEV)}, r"q_out must be \(6, 8\) torch.float8_e4m3fn"),
    ({"scale_out": torch.empty(6, device=DEV)}, r"scale_out must be \(6, 1\) torch.float32 on cpu, got \(6,\)"),
    ({"q_out": torch.empty(8, 6, dtype=FP8, device=DEV).T}, r"q_out must have a contiguous last dim"),
    ({"kind": "batch"}, r"kind must be KINDS, got 'batch'"),
])
def test_errors_name_argument_rule_and_value(fn, kwargs, message):
    # the norm-less kind (LTX-2.3+'s text-context modulation) is ada_norm's only: no residual before it
    message = message.replace("KINDS", "'rms', 'layer' or 'none'" if fn == "ada_norm_fp8" else "'rms' or 'layer'")
    if DEV != "cpu":
        message = message.replace("on cpu", f"on {DEV}")
    with pytest.raises(ValueError, match=f"{fn}: {message}"):
        _bad(fn, **kwargs)()


@pytest.mark.gpu
@pytest.mark.parametrize("d, per_token", [(2048, False), (4096, True)])  # 2B / LTX-2 19B video widths
def test_production_shapes_on_gpu(d, per_token):
    # On a GPU the fp32 -> bf16 cast rounds to nearest even (the interpreter truncates): the rows
    # must still be the plain kernels' and q / scale quantize_fp8 of them, bit for bit.
    x, y = _x(2, 6144, d), _x(2, 6144, d, seed=9)
    mod = _table(2, 6144 if per_token else 1, d)
    args = (x, mod[:, :, 0], mod[:, :, 1], EPS, "rms")
    rows, q, scale = kernel.ada_norm_fp8(*args)
    assert _equal(rows, kernel.ada_norm(*args))
    _check_quantized(rows, q, scale)
    res = (x, y, mod[:, :, 2], mod[:, :, 3], mod[:, :, 4], EPS, "rms")
    fused = kernel.residual_ada_norm_fp8(*res)
    for got, want in zip(fused, kernel.residual_ada_norm(*res)):
        assert _equal(got, want)
    _check_quantized(*fused[1:])
    dual = kernel.dual_ada_norm_fp8(x, y, mod[:, :, 2], *args[1:3], mod[:, :, 3], mod[:, :, 4], EPS, "rms")
    _check_quantized(dual[1], *dual[3:5])
    _check_quantized(dual[2], *dual[5:7])
