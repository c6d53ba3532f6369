"""Triton dual_ada_norm (a pending residual, then one norm modulated twice) against float64.

Error budget as tests/kernels/test_residual_ada_norm.py: x_new is one fp32 multiply-add rounded to
x.dtype, each norm is the adaLN of that ROUNDED x_new, so the torch composition in the same dtype
(reference.dual_ada_norm) carries the same intermediate rounding and the kernel may be at most
twice its error against float64 plus one ulp of the output; fp32: 8 ulps (summation order of the
norm statistics only). Under the interpreter the kernel is also bit-equal to the unfused kernels it
replaces (residual_ada_norm or ada_norm, then ada_norm): the same fp32 operations in the same order."""

import pytest
import torch

from ltxengine.kernels import ada_norm as kernel
from ltxengine.ops import reference
from tests.kernels.budget import check_budget, max_err, ulp
from tests.kernels.rows import DEV, EPS, refuses_unchanged
from tests.kernels.rows import stream as _x
from tests.kernels.rows import table


def _table(b, n, d, dtype=torch.bfloat16, seed=1):
    return table(b, n, d, dtype, seed, rows=5)  # LTX-2's audio<->video rows


def _f64(args):
    return tuple(a.double() if isinstance(a, torch.Tensor) else a for a in args)


def _check(got, lowp, ref, what):
    if got.dtype == torch.float32:
        assert max_err(got, ref) <= 8 * ulp(torch.float32, ref.abs().max().item()), what
    else:
        check_budget(got, lowp, ref, what)


def _case(dtype, per_token, pending, kind="rms", n=7, d=40):
    x, y = _x(n=n, d=d, dtype=dtype), _x(n=n, d=d, dtype=dtype, seed=5)
    m = _table(2, n if per_token else 1, d, dtype)
    # LTX-2's row order: [scale_a2v, shift_a2v, scale_v2a, shift_v2a, gate]
    y, gate = (y, m[:, :, 4]) if pending else (None, None)
    return (x, y, gate, m[:, :, 1], m[:, :, 0], m[:, :, 3], m[:, :, 2], EPS, kind)


def _unfused_kernels(args):
    x, y, gate, sh1, sc1, sh2, sc2, eps, kind = args
    x_new = x if y is None else kernel.gated_residual(x, y, gate)
    return x_new, kernel.ada_norm(x_new, sh1, sc1, eps, kind), kernel.ada_norm(x_new, sh2, sc2, eps, kind)


@pytest.mark.parametrize("pending", [True, False])
@pytest.mark.parametrize("per_token", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_matches_float64_reference_within_budget(dtype, per_token, pending):
    args = _case(dtype, per_token, pending)
    got = kernel.dual_ada_norm(*args)
    lowp = reference.dual_ada_norm(*args)  # the unfused torch calls in dtype
    ref = reference.dual_ada_norm(*_f64(args))
    what = f"{dtype} per_token={per_token} pending={pending}"
    for g, lo, r, name in zip(got, lowp, ref, ("x_new", "norm1", "norm2")):
        _check(g, lo, r, f"{name} {what}")
    assert (got[0] is args[0]) == (not pending)  # without a residual the stream is returned as it is
    if DEV == "cpu":
        for g, u, name in zip(got, _unfused_kernels(args), ("x_new", "norm1", "norm2")):
            assert torch.equal(g, u), f"{name} {what}"


def test_layer_kind_odd_width_strided_rows_fp32_tables():
    x = _x(n=10, d=33)[:, ::2]  # token stride 2 rows, 5 tokens
    y = _x(n=5, d=33, seed=3).transpose(1, 2).contiguous().transpose(1, 2)  # last dim strided: copied
    m = _table(1, 1, 33, torch.float32)  # a table shared by the batch, in fp32
    for args in ((x, y, None, None, None, m[:, :, 1], m[:, :, 0], EPS, "layer"),
                 (x, None, None, m[:, :, 1], None, None, m[:, :, 2], EPS, "rms")):
        got = kernel.dual_ada_norm(*args)
        lowp, ref = reference.dual_ada_norm(*args), reference.dual_ada_norm(*_f64(args))
        for g, lo, r, name in zip(got, lowp, ref, ("x_new", "norm1", "norm2")):
            _check(g, lo, r, f"{name} {args[-1]}")


def test_out_in_place_and_inputs_untouched():
    args = _case(torch.bfloat16, True, True)
    before = [a.clone() for a in args if isinstance(a, torch.Tensor)]
    outs = [torch.empty_like(args[0]) for _ in range(3)]
    got = kernel.dual_ada_norm(*args, x_out=outs[0], norm1_out=outs[1], norm2_out=outs[2])
    assert all(g is o for g, o in zip(got, outs))
    for a, b in zip((a for a in args if isinstance(a, torch.Tensor)), before):
        assert torch.equal(a, b)
    x = args[0]
    assert kernel.dual_ada_norm(*args, x_out=x)[0] is x  # the stream updated in place (rows read first)
    assert torch.equal(x, outs[0])


@pytest.mark.parametrize("call, message", [
    (lambda x, m: kernel.dual_ada_norm(x, x, m, m, m, m, m, EPS, "group"),
     "kind must be 'rms' or 'layer', got 'group'"),
    (lambda x, m: kernel.dual_ada_norm(x, x, m, m, m, m, m, -1.0), "eps must be > 0, got -1.0"),
    (lambda x, m: kernel.dual_ada_norm(x[0], x, m, m, m, m, m, EPS), "x must be a 3-D tensor, got (7, 40)"),
    (lambda x, m: kernel.dual_ada_norm(x, x[:, :3], m, m, m, m, m, EPS), "y must match x (2, 7, 40)"),
    (lambda x, m: kernel.dual_ada_norm(x, None, m, m, m, m, m, EPS), "gate and x_out need a residual y"),
    (lambda x, m: kernel.dual_ada_norm(x, None, None, m, m, m, m, EPS, x_out=x), "got y None with x_out set"),
    (lambda x, m: kernel.dual_ada_norm(x, x, m, m, m, m[:, :, :5], m, EPS), "shift2 must be (B|1, N|1, D)"),
    (lambda x, m: kernel.dual_ada_norm(x, x, m, m, m, m, m.int(), EPS), "scale2 must be a float tensor"),
    (lambda x, m: kernel.dual_ada_norm(x, x, m, m, m, m, m, EPS, norm2_out=torch.empty(2, 7, 40, device=DEV)),
     "norm2_out must be (2, 7, 40) torch.bfloat16"),
    (lambda x, m: reference.dual_ada_norm(x, x, m, m, m, m, m, EPS, "group", x_out=x),
     "kind must be 'rms' or 'layer', got 'group'"),
    (lambda x, m: reference.dual_ada_norm(x, x, m, m, m, m, m, EPS, x_out=x, norm2_out=x.float()),
     "norm2_out must be (2, 7, 40) torch.bfloat16"),
])
def test_errors_name_argument_rule_and_value_and_write_nothing(call, message):
    refuses_unchanged(call, message)


@pytest.mark.gpu
@pytest.mark.parametrize("b, n, d", [(4, 6144, 4096), (4, 126, 2048)])  # LTX-2 video / audio streams
@pytest.mark.parametrize("per_token", [False, True])
def test_production_shapes_on_gpu(b, n, d, per_token):
    for pending in (True, False):
        args = _case(torch.bfloat16, per_token, pending, n=n, d=d)
        got, lowp, ref = kernel.dual_ada_norm(*args), reference.dual_ada_norm(*args), reference.dual_ada_norm(
            *_f64(args))
        for g, lo, r, name in zip(got, lowp, ref, ("x_new", "norm1", "norm2")):
            _check(g, lo, r, f"{name} pending={pending}")
