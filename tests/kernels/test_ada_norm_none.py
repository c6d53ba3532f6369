"""ada_norm / ada_norm_fp8 of kind "none": x * (1 + scale) + shift without a norm, LTX-2.3+'s per-step
text-context modulation (models/residual.py ``modulated_context``), in every implementation.

- torch backend (native): the models' own eager ``x * (1 + scale) + shift`` bit for bit, on the
  tables as the model holds them ((D,) from a (2, D) table, or (B, 1, D) from a (B, 1, 2, D) sum)
  while the op gets them as (B|1, 1, D) views: kernels="torch" outputs cannot change;
- reference: the same in fp32, rounded once (on fp32 inputs that is the eager expression's bits);
- Triton: fp32 math rounded once, like the other kinds: within the rows kernels' budget of the fp64
  result (twice torch's own low-precision error plus one ulp; fp32: 2 ulp, room for an FMA on a GPU);
- ada_norm_fp8: rows equal to ada_norm's, (q, scale) = quantize_fp8 of those rows, bit for bit
  (reference and Triton quantizers), in Triton and the torch backend;
- the residual / dual norms refuse the kind (no model modulates after a residual without a norm).
"""

import pytest
import torch

from ltxengine.kernels import ada_norm as kernel
from ltxengine.kernels import fp8_gemm
from ltxengine.ops import get_ops, native, reference
from tests.kernels.budget import check_budget, max_err, ulp
from tests.kernels.rows import DEV, EPS, refuses_unchanged
from tests.kernels.rows import stream as _x
from tests.kernels.rows import table as _table

FP8 = torch.float8_e4m3fn
DTYPES = [torch.bfloat16, torch.float16, torch.float32]
B, L, D = 2, 7, 37  # D odd: masked lanes in the Triton row block


def _model_tables(dtype, per_sample):
    """(shift, scale) as ``LTX2Block._text_attn`` unbinds them: (D,) rows of the static (2, D) table,
    or (B, 1, D) strided rows of the (B, 1, 2, D) table + prompt_adaln sum."""
    kv = _table(B, 1, D, dtype, rows=2) if per_sample else _table(1, 1, D, dtype, rows=2)[0, 0]
    return kv.unbind(-2)


def _as_op(t):
    return None if t is None else t.reshape(-1, 1, t.shape[-1])  # what modulated_context passes


def _eager(x, shift, scale):
    """The models' expression before the op (``context * (1 + scale_kv) + shift_kv``), None = absent."""
    y = x if scale is None else x * (1 + scale)
    return y + shift if shift is not None else (y if y is not x else x.clone())


_MISSING = {"both": lambda sh, sc: (sh, sc), "no shift": lambda sh, sc: (None, sc),
            "no scale": lambda sh, sc: (sh, None), "neither": lambda sh, sc: (None, None)}


@pytest.mark.parametrize("missing", list(_MISSING))
@pytest.mark.parametrize("per_sample", [False, True], ids=["static table", "with prompt_adaln"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_backend_is_the_model_expression_bit_for_bit(dtype, per_sample, missing):
    x = _x(B, L, D, dtype)
    shift, scale = _MISSING[missing](*_model_tables(dtype, per_sample))
    before = x.clone()
    got = native.ada_norm(x, _as_op(shift), _as_op(scale), EPS, "none")
    want = _eager(x, shift, scale)
    assert got.dtype == dtype and got.data_ptr() != x.data_ptr() and torch.equal(x, before)
    assert torch.equal(got, want), f"{dtype} {missing}"
    out = torch.empty_like(x)
    assert native.ada_norm(x, _as_op(shift), _as_op(scale), EPS, "none", out=out) is out and torch.equal(out, want)
    # the reference: fp32 math rounded once (on fp32 inputs the same bits as the expression)
    ref = reference.ada_norm(x, _as_op(shift), _as_op(scale), EPS, "none")
    f32 = _eager(x.float(), *(None if t is None else t.float() for t in (shift, scale))).to(dtype)
    assert torch.equal(ref, f32) and ref.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("per_sample", [False, True], ids=["static table", "with prompt_adaln"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_rounds_once_within_the_rows_budget(dtype, per_sample):
    x = _x(B, L, D, dtype)
    shift, scale = (_as_op(t) for t in _model_tables(dtype, per_sample))
    before = [t.clone() for t in (x, shift, scale)]
    got = kernel.ada_norm(x, shift, scale, EPS, "none")
    ref = reference.ada_norm(x.double(), shift.double(), scale.double(), EPS, "none")
    if dtype == torch.float32:
        assert max_err(got, ref) <= 2 * ulp(torch.float32, ref.abs().max().item())
    else:  # torch's own 16-bit error: the models' expression (1 + scale and the product rounded apart)
        check_budget(got, native.ada_norm(x, shift, scale, EPS, "none"), ref, f"{dtype}")
    assert all(torch.equal(t, b) for t, b in zip((x, shift, scale), before))
    for sh, sc in ((None, scale), (shift, None), (None, None)):  # each table optional
        part = kernel.ada_norm(x, sh, sc, EPS, "none")
        want = reference.ada_norm(x.double(), *(None if t is None else t.double() for t in (sh, sc)), EPS, "none")
        assert max_err(part, want) <= ulp(dtype, want.abs().max().item())


def _check_quantized(rows, q, scale):
    for quantize in (reference.quantize_fp8, fp8_gemm.quantize_fp8):
        want_q, want_s = quantize(rows, per_row=True)
        assert torch.equal(q.view(torch.uint8), want_q.view(torch.uint8)) and torch.equal(scale, want_s)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fp8_rows_are_the_plain_ones_and_q_their_quantization(dtype):
    x = _x(B, L, D, dtype)
    shift, scale = (_as_op(t) for t in _model_tables(dtype, True))
    for impl in (kernel, native):
        rows, q, s = impl.ada_norm_fp8(x, shift, scale, EPS, "none")
        assert torch.equal(rows, impl.ada_norm(x, shift, scale, EPS, "none")), impl.__name__
        assert q.shape == (B * L, D) and q.dtype == FP8 and s.shape == (B * L, 1)
        _check_quantized(rows, q, s)
    ref = reference.ada_norm_fp8(x, shift, scale, EPS, "none")
    assert torch.equal(ref[0], reference.ada_norm(x, shift, scale, EPS, "none"))
    _check_quantized(*ref)


def test_the_ops_objects_pass_the_kind_through_their_custom_ops():
    triton = get_ops("triton", DEV)
    x = _x(B, L, D)
    shift, scale = (_as_op(t) for t in _model_tables(torch.bfloat16, True))
    assert torch.equal(triton.ada_norm(x, shift, scale, EPS, "none"), kernel.ada_norm(x, shift, scale, EPS, "none"))
    got = triton.ada_norm_fp8(x, shift, scale, EPS, "none")
    for a, b in zip(got, kernel.ada_norm_fp8(x, shift, scale, EPS, "none")):
        assert torch.equal(a.view(torch.uint8) if a.dtype == FP8 else a, b.view(torch.uint8) if b.dtype == FP8 else b)


_ONLY = "kind must be 'rms' or 'layer', got 'none'"


@pytest.mark.parametrize("call, message", [
    (lambda x, m: kernel.ada_norm(x, m, m, EPS, "None"), "ada_norm: kind must be 'rms', 'layer' or 'none', got 'None'"),
    (lambda x, m: kernel.ada_norm_fp8(x, m, m, EPS, "nil"), "ada_norm_fp8: kind must be 'rms', 'layer' or 'none'"),
    (lambda x, m: kernel.ada_norm(x, m, m, 0.0, "none"), "ada_norm: eps must be > 0, got 0.0"),  # checked for all
    (lambda x, m: reference.ada_norm(x, m, m, EPS, "nil"), "ada_norm: kind must be 'rms', 'layer' or 'none'"),
    (lambda x, m: native.ada_norm(x, m, m, EPS, "nil"), "ada_norm: kind must be 'rms', 'layer' or 'none'"),
    (lambda x, m: kernel.residual_ada_norm(x, x, m, m, m, EPS, "none", x_out=x), "residual_ada_norm: " + _ONLY),
    (lambda x, m: kernel.residual_ada_norm_fp8(x, x, m, m, m, EPS, "none"), "residual_ada_norm_fp8: " + _ONLY),
    (lambda x, m: kernel.dual_ada_norm(x, x, m, m, m, m, m, EPS, "none", x_out=x), "dual_ada_norm: " + _ONLY),
    (lambda x, m: reference.residual_ada_norm(x, x, m, m, m, EPS, "none", x_out=x), _ONLY),
    (lambda x, m: native.residual_ada_norm(x, x, m, m, m, EPS, "none", x_out=x), _ONLY),
    (lambda x, m: native.dual_ada_norm(x, x, m, m, m, m, m, EPS, "none", x_out=x), _ONLY),
])
def test_errors_name_argument_rule_and_value(call, message):
    refuses_unchanged(call, message)
