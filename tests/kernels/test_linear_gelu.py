"""Triton linears with fused epilogues (GELU tanh; gated residual) against the references, and
cuBLASLt's GELU epilogue (CUDA only: torch's CPU kernel of _addmm_activation is the erf GELU).

Budget (STYLE rule 1, tests/kernels/budget.py): each result against the reference computed in
float64 from the same inputs; the kernel may be twice as wrong as the reference computed by torch
in the kernel's dtype, plus one ulp at the largest magnitude. The kernel rounds once where the
reference rounds the GEMM result first, so in bf16 it is usually the more exact of the two.
"""

import re

import pytest
import torch

from ltxengine.kernels import linear_gelu as kernel
from ltxengine.ops import reference
from ltxengine.ops.linear_gelu import cublaslt_linear_gelu
from tests.kernels.budget import check_budget

DEV = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def _r(*shape, dtype=torch.bfloat16, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(DEV, dtype)


def _double(*ts):
    return [None if t is None else t.double() for t in ts]


def _gemm_inputs(m=(2, 19), k=37, n=45, dtype=torch.bfloat16, bias=True):
    # Weights ~ 1/sqrt(K) as in a trained layer: pre-activations of order 1, where GELU bends.
    x = _r(*m, k, dtype=dtype, seed=1)
    w = _r(n, k, dtype=dtype, seed=2, scale=k ** -0.5)
    b = _r(n, dtype=dtype, seed=3) if bias else None
    return x, w, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gelu_matches_reference(dtype, bias):
    x, w, b = _gemm_inputs(dtype=dtype, bias=bias)  # M = 38, K = 37, N = 45: no dimension a tile multiple
    got = kernel.linear_gelu(x, w, b)
    assert got.shape == (2, 19, 45) and got.dtype == dtype
    check_budget(got, reference.linear_gelu(x, w, b), reference.linear_gelu(*_double(x, w, b)), f"{dtype} {bias}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gate_rows", [None, 1, 19])
def test_linear_gated_residual_matches_reference(dtype, gate_rows):
    h, w, b = _gemm_inputs(dtype=dtype)
    x = _r(2, 19, 45, dtype=dtype, seed=4, scale=3.0)
    # A slice of a (B, T|1, 6, N) modulation table, as the blocks pass it: strided rows.
    gate = None if gate_rows is None else _r(2, gate_rows, 6, 45, dtype=dtype, seed=5)[:, :, 2]
    got = kernel.linear_gated_residual(x, h, w, b, gate)
    check_budget(got, reference.linear_gated_residual(x, h, w, b, gate),
                 reference.linear_gated_residual(*_double(x, h, w, b, gate)), f"{dtype} gate {gate_rows}")


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # the interpreter's numpy exp; meant
def test_extreme_pre_activations_follow_gelu_limits():
    """|u| large: the sigmoid form must give v for v >> 0 and -0 for v << 0, never NaN."""
    x = torch.tensor([[1.0], [-1.0]], device=DEV).repeat(1, 16)
    w = torch.tensor([[0.0], [50.0], [-50.0], [1e20], [-1e20]], device=DEV).repeat(1, 16) / 16
    got = kernel.linear_gelu(x, w, None)
    ref = reference.linear_gelu(x.double(), w.double(), None)
    assert torch.isfinite(got).all()
    assert ((got.double() - ref).abs() <= 1e-6 * ref.abs() + 1e-6).all(), (got, ref)


def test_strided_inputs_and_out_in_place():
    x, w, b = _gemm_inputs(m=(2, 38))
    xs = x[:, ::2]  # token stride 2: folds into rows of stride 2K without a copy
    wt = _r(37, 45, seed=6, scale=37 ** -0.5).t()  # a transposed (column-major) weight
    before = [t.clone() for t in (x, w, b)]
    got = kernel.linear_gelu(xs, wt, b)
    check_budget(got, reference.linear_gelu(xs, wt, b), reference.linear_gelu(*_double(xs, wt, b)), "strided")
    out = torch.empty(2, 19, 45, dtype=x.dtype, device=DEV)
    assert kernel.linear_gelu(xs, wt, b, out=out) is out and torch.equal(out, got)
    for t, was in zip((x, w, b), before):
        assert torch.equal(t, was)
    # The residual stream may be updated in place: each element is read by the program writing it.
    res = _r(2, 19, 45, seed=7)
    gate = _r(2, 1, 45, seed=8)
    expect = kernel.linear_gated_residual(res, xs, w, b, gate)
    assert torch.equal(kernel.linear_gated_residual(res, xs, w, b, gate, out=res), expect)


def _e(message):
    return re.escape(message)


@pytest.mark.parametrize("call, message", [
    (lambda x, w, b: kernel.linear_gelu(x, w[:, :5], b),
     "linear_gelu: weight must be (N, K) with K = x.shape[-1] = 37"),
    (lambda x, w, b: kernel.linear_gelu(x, w.float(), b), "linear_gelu: weight must be torch.bfloat16 on"),
    (lambda x, w, b: kernel.linear_gelu(x, w, b[:3]), "linear_gelu: bias must be a (45,) float tensor"),
    (lambda x, w, b: kernel.linear_gelu(x.int(), w, b), "linear_gelu: x must be float32, bfloat16 or float16"),
    (lambda x, w, b: kernel.linear_gelu(x, w, b, out=torch.empty(2, 19, 44, device=DEV)),
     "linear_gelu: out must be (2, 19, 45) torch.bfloat16"),
    (lambda x, w, b: kernel.linear_gated_residual(x, x, w, b, None),
     "linear_gated_residual: x must have N = weight.shape[0] = 45 channels, got (2, 19, 37)"),
    (lambda x, w, b: kernel.linear_gated_residual(_r(2, 19, 45), x[:, :3], w, b, None),
     "linear_gated_residual: h must be (2, 19, K)"),
    (lambda x, w, b: kernel.linear_gated_residual(_r(2, 19, 45), x, w, b, _r(2, 2, 45)),
     "linear_gated_residual: gate must be (B|1, T|1, N) = (2|1, 19|1, 45)"),
    (lambda x, w, b: kernel.linear_gated_residual(_r(2, 19, 45)[0], x, w, b, None),
     "linear_gated_residual: x must be a 3-D (B, T, N) tensor, got (19, 45)"),
])
def test_errors_name_argument_rule_and_value(call, message):
    with pytest.raises(ValueError, match=_e(message)):
        call(*_gemm_inputs())


def test_cublaslt_backend_refuses_cpu_tensors():
    x, w, b = (t.cpu() for t in _gemm_inputs())
    with pytest.raises(ValueError, match=_e("linear_gelu: the cuBLASLt backend needs CUDA tensors")):
        cublaslt_linear_gelu(x, w, b)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_cublaslt_gelu_epilogue_is_the_tanh_gelu(dtype, bias):
    """cuBLASLt's GELU_BIAS epilogue (and torch's non-Lt fallback) against the tanh reference,
    in the budget; the erf GELU differs from it by up to ~5e-4, which this would catch."""
    x, w, b = _gemm_inputs(m=(2, 300), k=256, n=512, dtype=dtype, bias=bias)
    got = cublaslt_linear_gelu(x, w, b)
    check_budget(got, reference.linear_gelu(x, w, b), reference.linear_gelu(*_double(x, w, b)), f"{dtype}")
    out = torch.empty_like(got)
    assert cublaslt_linear_gelu(x, w, b, out=out) is out and torch.equal(out, got)


@pytest.mark.gpu
@pytest.mark.parametrize("m, k, n", [(2 * 6144, 2048, 8192), (2 * 6144, 8192, 2048), (126, 4096, 16384)])
def test_production_shapes_on_gpu(m, k, n):
    x, w, b = _gemm_inputs(m=(m,), k=k, n=n)
    check_budget(kernel.linear_gelu(x, w, b), reference.linear_gelu(x, w, b),
                 reference.linear_gelu(*_double(x, w, b)), "linear_gelu")
    w2, b2 = _r(k, k, seed=9, scale=k ** -0.5), _r(k, seed=10)  # a square output projection
    res, h, gate = _r(1, m, k, seed=11, scale=3.0), x.view(1, m, k), _r(1, 1, k, seed=12)
    check_budget(kernel.linear_gated_residual(res, h, w2, b2, gate),
                 reference.linear_gated_residual(res, h, w2, b2, gate),
                 reference.linear_gated_residual(*_double(res, h, w2, b2, gate)), "gated")
