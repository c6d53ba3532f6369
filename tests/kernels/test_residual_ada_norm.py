"""Triton gated residual + adaLN in one pass (residual_ada_norm) against a float64 reference.

Error budget (tests/kernels/budget.py): x_new = x + gate * y is one fp32 multiply-add and one
rounding to x.dtype, as the reference's; normed is the adaLN of that ROUNDED x_new, so the torch
pair in the same dtype carries the same intermediate rounding and the kernel may be at most
twice its error against float64 plus one ulp of the output. fp32: 8 ulps (summation order of
the norm statistics only). Under the interpreter the kernel is also bit-equal to the two
unfused kernels it replaces (same fp32 operations in the same order)."""

import pytest
import torch

from ltxengine.kernels import ada_norm as kernel
from ltxengine.ops import reference
from tests.kernels.budget import check_budget, max_err, ulp
from tests.kernels.rows import DEV, EPS, refuses_unchanged
from tests.kernels.rows import stream as _x
from tests.kernels.rows import table as _table


def _f64(t):
    return None if t is None else t.double()


def _check(got, lowp, ref, what):
    if got.dtype == torch.float32:
        assert max_err(got, ref) <= 8 * ulp(torch.float32, ref.abs().max().item()), what
    else:
        check_budget(got, lowp, ref, what)


def _case(dtype, per_token, gated, kind, n=7, d=40):
    x, y = _x(n=n, d=d, dtype=dtype), _x(n=n, d=d, dtype=dtype, seed=5)
    mod = _table(2, n if per_token else 1, d, dtype)
    gate = mod[:, :, 2] if gated else None
    return (x, y, gate, mod[:, :, 3], mod[:, :, 4], EPS, kind)


@pytest.mark.parametrize("kind", ["rms", "layer"])
@pytest.mark.parametrize("per_token, gated", [(False, True), (True, True), (False, False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_matches_float64_reference_within_budget(kind, per_token, gated, dtype):
    args = _case(dtype, per_token, gated, kind)
    x_new, normed = kernel.residual_ada_norm(*args)
    lowp = reference.residual_ada_norm(*args)  # the unfused torch pair in dtype
    ref = reference.residual_ada_norm(*(_f64(a) if isinstance(a, torch.Tensor) else a for a in args))
    what = f"{dtype} {kind} per_token={per_token} gate={gated}"
    _check(x_new, lowp[0], ref[0], "x_new " + what)
    _check(normed, lowp[1], ref[1], "normed " + what)
    # the same operations as the two unfused kernels, in the same order
    pair_x = kernel.gated_residual(*args[:3])
    pair_h = kernel.ada_norm(pair_x, *args[3:])
    if DEV == "cpu":
        assert torch.equal(x_new, pair_x) and torch.equal(normed, pair_h), what
    else:  # a compiler may contract x + gate * y into an FMA in one kernel and not the other
        assert max_err(normed, pair_h) <= 2 * ulp(dtype, pair_h.abs().max().item()), what


def test_norm_reads_the_rounded_residual():
    """bf16 x_new rounded before the norm, like the pair: the norm of the fp32 sum differs."""
    x, y = _x(b=1, n=64, d=48), _x(b=1, n=64, d=48, seed=7) * 0.01
    x_new, normed = kernel.residual_ada_norm(x, y, None, None, None, EPS, "layer")
    of_rounded = reference.ada_norm(x_new.double(), None, None, EPS, "layer")
    of_unrounded = reference.ada_norm(x.double() + y.double(), None, None, EPS, "layer")
    assert max_err(normed, of_rounded) < max_err(normed, of_unrounded)


def test_plain_norm_fp32_table_odd_width_and_strided_rows():
    x = _x(n=10, d=33)[:, ::2]  # token stride 2 rows, 5 tokens
    y = _x(n=5, d=33, seed=3).transpose(1, 2).contiguous().transpose(1, 2)  # last dim strided: copied
    mod = _table(1, 1, 33, torch.float32)  # a table shared by the batch, in fp32
    for args in ((x, y, None, None, None, EPS, "rms"), (x, y, mod[:, :, 2], mod[:, :, 0], mod[:, :, 1], EPS, "layer")):
        got = kernel.residual_ada_norm(*args)
        lowp = reference.residual_ada_norm(*args)
        ref = reference.residual_ada_norm(*(_f64(a) if isinstance(a, torch.Tensor) else a for a in args))
        for g, lo, r, what in zip(got, lowp, ref, ("x_new", "normed")):
            _check(g, lo, r, what)


def test_out_in_place_and_inputs_untouched():
    x, y = _x(), _x(seed=5)
    mod = _table(2, 7, 40)
    before = [t.clone() for t in (x, y, mod)]
    x_out, norm_out = torch.empty_like(x), torch.empty_like(x)
    args = (x, y, mod[:, :, 2], mod[:, :, 3], mod[:, :, 4], EPS)
    got = kernel.residual_ada_norm(*args, x_out=x_out, norm_out=norm_out)
    assert got[0] is x_out and got[1] is norm_out
    for t, b in zip((x, y, mod), before):
        assert torch.equal(t, b)
    # The residual stream may be updated in place (each row is read before it is written).
    assert kernel.residual_ada_norm(*args, x_out=x)[0] is x
    assert torch.equal(x, x_out)


@pytest.mark.parametrize("call, message", [
    (lambda x, m: kernel.residual_ada_norm(x, x, m, m, m, EPS, "group"), "kind must be 'rms' or 'layer', got 'group'"),
    (lambda x, m: kernel.residual_ada_norm(x, x, m, m, m, 0.0), "eps must be > 0, got 0.0"),
    (lambda x, m: kernel.residual_ada_norm(x[0], x, m, m, m, EPS), "x must be a 3-D tensor, got (7, 40)"),
    (lambda x, m: kernel.residual_ada_norm(x, x[:, :3], m, m, m, EPS), "y must match x (2, 7, 40)"),
    (lambda x, m: kernel.residual_ada_norm(x, x, m[:, :, :5], m, m, EPS), "gate must be (B|1, N|1, D) = (2|1, 7|1, 40)"),
    (lambda x, m: kernel.residual_ada_norm(x, x, m, m.int(), m, EPS), "shift must be a float tensor"),
    (lambda x, m: kernel.residual_ada_norm(x, x, m, m, m[:1, :, :7], EPS), "scale must be (B|1, N|1, D)"),
    (lambda x, m: kernel.residual_ada_norm(x, x, m, m, m, EPS, norm_out=torch.empty(2, 7, 40, device=DEV)),
     "norm_out must be (2, 7, 40) torch.bfloat16"),
    (lambda x, m: reference.residual_ada_norm(x, x, m, m, m, EPS, "group", x_out=x),
     "kind must be 'rms' or 'layer', got 'group'"),
    (lambda x, m: reference.residual_ada_norm(x, x, m, m, m, EPS, x_out=x, norm_out=torch.empty(2, 7, 40, device=DEV)),
     "norm_out must be (2, 7, 40) torch.bfloat16"),
])
def test_errors_name_argument_rule_and_value_and_write_nothing(call, message):
    refuses_unchanged(call, message)


@pytest.mark.gpu
@pytest.mark.parametrize("b, n, d", [(2, 6144, 2048), (4, 6144, 4096), (2, 126, 2048)])
@pytest.mark.parametrize("per_token", [False, True])
def test_production_shapes_on_gpu(b, n, d, per_token):
    for kind in ("rms", "layer"):
        args = _case(torch.bfloat16, per_token, True, kind, n=n, d=d)
        got = kernel.residual_ada_norm(*args)
        lowp = reference.residual_ada_norm(*args)
        ref = reference.residual_ada_norm(*(_f64(a) if isinstance(a, torch.Tensor) else a for a in args))
        for g, lo, r, what in zip(got, lowp, ref, ("x_new", "normed")):
            _check(g, lo, r, f"{what} {kind}")
