"""Triton gelu_quantize_fp8 (the per-row quantizer with a GELU prologue) against the reference.

The reference is the unfused pair the fp8 FFN runs today: ``F.gelu(h, approximate="tanh")`` in
h's dtype, then ``quantize_fp8(..., per_row=True)``. The kernel rounds its GELU to h.dtype before
the amax and the division, so its e4m3 bytes can differ from the reference's only where its fp32
GELU (v * sigmoid(2u), the linear_gelu epilogue's form) and torch's (0.5 v (1 + tanh u)) round to
neighbouring h.dtype values. Checks, per dtype:
- bytes: at most 1 in 1000 differ (measured 1 in 19,000 for bf16). Without the rounding to h.dtype
  about 1 in 80 (bf16) and 1 in 600 (fp16) differ, so this catches a kernel that skips it;
- dequantized values (q * scale) within the budget of tests/kernels/budget.py against the fp64
  GELU: 2 x the reference's own error (the e4m3 rounding) + one fp32 ulp.
Values where both GELU forms are exact (zeros, large |h|: GELU = h or -0) must be bit-equal.
"""

import pytest
import torch
import torch.nn.functional as F

from ltxengine.kernels import fp8_gemm as kernel
from ltxengine.ops import get_ops
from ltxengine.ops import reference as ref
from tests.kernels.budget import check_budget

DEV = "cuda" if torch.cuda.is_available() else "cpu"
FP8 = torch.float8_e4m3fn
DTYPES = (torch.bfloat16, torch.float16, torch.float32)
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # GELU's -inf limit, on purpose


def _h(*shape, dtype=torch.bfloat16, seed=0):
    # pre-activations spread like an FFN's (most |h| < 4, some tails), so GELU's both branches matter
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 2.5).to(dtype).to(DEV)


def _check(h, q, s, what):
    qr, sr = ref.gelu_quantize_fp8(h)
    assert q.shape == qr.shape and s.shape == sr.shape == (qr.shape[0], 1), what
    differ = (q.view(torch.uint8) != qr.view(torch.uint8)).sum().item()
    assert differ <= max(1, q.numel() // 1000), f"{what}: {differ} of {q.numel()} e4m3 bytes differ"
    gelu64 = F.gelu(h.double(), approximate="tanh").reshape(qr.shape)
    check_budget(q.float() * s, qr.float() * sr, gelu64, what)
    # a scale is amax / 448 of the rounded GELU: one h.dtype rounding apart at most
    assert torch.allclose(s, sr, rtol=2 * torch.finfo(h.dtype).eps, atol=0), what


@pytest.mark.parametrize("dtype", DTYPES)
def test_bytes_and_dequantized_values_match_the_unfused_reference(dtype):
    h = _h(64, 300, dtype=dtype)  # 300: rows longer than the interpreter's 128-wide chunk, a ragged tail
    before = h.clone()
    q, s = kernel.gelu_quantize_fp8(h)
    _check(h, q, s, str(dtype))
    assert torch.equal(h, before), "h was modified"


@pytest.mark.parametrize("shape", [(2, 7, 37), (1, 1), (3, 1, 5)])
def test_odd_widths_and_leading_dims(shape):
    h = _h(*shape)
    q, s = kernel.gelu_quantize_fp8(h)
    _check(h, q, s, str(shape))


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_rows_view_and_transposed_copy(dtype):
    base = _h(12, 64, dtype=dtype, seed=1)
    rows = base[:, 5:42]  # row stride 64, unit column stride: read in place
    _check(rows, *kernel.gelu_quantize_fp8(rows), f"{dtype} row-strided")
    cols = base[:37].t()  # column stride 64: copied to rows first
    _check(cols, *kernel.gelu_quantize_fp8(cols), f"{dtype} transposed")
    assert torch.equal(base, _h(12, 64, dtype=dtype, seed=1)), "h was modified"


def test_exact_gelu_values_are_bit_equal():
    # rows: all zero (scale from FP8_MIN_AMAX), large positive (GELU = h), large negative (GELU = -0),
    # mixed large values; both GELU forms are exact on these, so nothing may differ
    big = torch.tensor([1e4, -1e4, 300.0, -300.0, 20.0, -20.0, 0.0, 8.0])
    h = torch.stack([torch.zeros(8), big.abs(), -big.abs(), big]).to(DEV, torch.bfloat16)
    q, s = kernel.gelu_quantize_fp8(h)
    qr, sr = ref.gelu_quantize_fp8(h)
    assert torch.equal(q.view(torch.uint8), qr.view(torch.uint8)) and torch.equal(s, sr)


def test_out_and_scale_out_written_in_place():
    h = _h(3, 5, 40)
    out = torch.empty(15, 40, dtype=FP8, device=DEV)
    scale_out = torch.empty(15, 1, device=DEV)
    q, s = kernel.gelu_quantize_fp8(h, out=out, scale_out=scale_out)
    assert q is out and s is scale_out
    _check(h, q, s, "out=")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_ops_field_honours_out_and_names_a_bad_h(backend):
    ops = get_ops(backend, DEV)
    h = _h(2, 3, 24)
    out, scale_out = torch.empty(6, 24, dtype=FP8, device=DEV), torch.empty(6, 1, device=DEV)
    q, s = ops.gelu_quantize_fp8(h, out=out, scale_out=scale_out)
    assert q is out and s is scale_out
    _check(h, q, s, backend)
    if backend == "triton":
        with pytest.raises(ValueError, match="gelu_quantize_fp8: h must be a tensor with at least 1 dim, got str"):
            ops.gelu_quantize_fp8("h")


def _esc(message):
    return "".join("\\" + c if c in "()[]|.*+?" else c for c in message)


_ERRORS = [
    (lambda h: kernel.gelu_quantize_fp8("h"), "gelu_quantize_fp8: h must be a tensor of shape (..., K), got str"),
    (lambda h: kernel.gelu_quantize_fp8(h.int()),
     "gelu_quantize_fp8: h must be bfloat16, float16 or float32, got torch.int32"),
    (lambda h: kernel.gelu_quantize_fp8(h[:0]), "gelu_quantize_fp8: h must not be empty, got shape (0, 8)"),
    (lambda h: kernel.gelu_quantize_fp8(h, out=torch.empty(4, 9, dtype=FP8, device=DEV)),
     "gelu_quantize_fp8: out must be (4, 8) torch.float8_e4m3fn"),
    (lambda h: kernel.gelu_quantize_fp8(h, scale_out=torch.empty(4, device=DEV)),
     "gelu_quantize_fp8: scale_out must be (4, 1) float32"),
    (lambda h: kernel.gelu_quantize_fp8(h, scale_out=torch.empty(4, 2, device=DEV)[:, :1]),
     "gelu_quantize_fp8: scale_out must be contiguous"),
]


@pytest.mark.parametrize("call, message", _ERRORS, ids=[m[:50] for _, m in _ERRORS])
def test_errors_name_argument_rule_and_value(call, message):
    with pytest.raises(ValueError, match=_esc(message)):
        call(_h(4, 8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("k", [8192, 15360])  # the 2B FFN's 4D; LTX-2 19B's video FFN
def test_production_width_on_gpu(k):
    h = _h(512, k)
    _check(h, *kernel.gelu_quantize_fp8(h), f"gpu k={k}")
