"""Triton fused adaLN (norm + modulation) and gated residual against the fp32 references."""

import pytest
import torch

from ltxengine.kernels import ada_norm as kernel
from ltxengine.ops import reference
from tests.kernels.budget import check_budget, max_err, ulp
from tests.kernels.rows import DEV, EPS, refuses_unchanged
from tests.kernels.rows import stream as _x
from tests.kernels.rows import table as _table


def _check(out, lowp, ref, what):
    if out.dtype == torch.float32:
        assert max_err(out, ref) <= 8 * ulp(torch.float32, ref.abs().max().item()), what
    else:
        check_budget(out, lowp, ref, what)


@pytest.mark.parametrize("kind", ["rms", "layer"])
@pytest.mark.parametrize("per_token", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_ada_norm_matches_reference(kind, per_token, dtype):
    x = _x(dtype=dtype)
    mod = _table(2, 7 if per_token else 1, 40, dtype)
    shift, scale = mod[:, :, 0], mod[:, :, 1]
    assert not shift.is_contiguous()
    out = kernel.ada_norm(x, shift, scale, EPS, kind)
    _check(out, reference.ada_norm(x, shift, scale, EPS, kind),
           reference.ada_norm(x.float(), shift.float(), scale.float(), EPS, kind), f"{kind} {per_token}")


@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_plain_norm_and_fp32_modulation_on_bf16_input(kind):
    x = _x(n=5, d=33)
    _check(kernel.ada_norm(x, None, None, EPS, kind), reference.ada_norm(x, None, None, EPS, kind),
           reference.ada_norm(x.float(), None, None, EPS, kind), "plain")
    mod = _table(1, 1, 33, torch.float32)  # a table shared by the batch, in fp32
    out = kernel.ada_norm(x, mod[:, :, 3], mod[:, :, 4], EPS, kind)
    _check(out, reference.ada_norm(x, mod[:, :, 3], mod[:, :, 4], EPS, kind),
           reference.ada_norm(x.float(), mod[:, :, 3], mod[:, :, 4], EPS, kind), "fp32 table")


@pytest.mark.parametrize("gate_rows", [None, 1, 7])
def test_gated_residual_matches_reference(gate_rows):
    x, y = _x(), _x(seed=5)
    gate = None if gate_rows is None else _table(2, gate_rows, 40)[:, :, 2]
    out = kernel.gated_residual(x, y, gate)
    ref = reference.gated_residual(x.float(), y.float(), None if gate is None else gate.float())
    _check(out, reference.gated_residual(x, y, gate), ref, f"gate rows {gate_rows}")


def test_strided_rows_and_transposed_inputs():
    base = _x(n=14)
    x = base[:, ::2]  # token stride 2 rows
    xt = _x(seed=3).transpose(1, 2).contiguous().transpose(1, 2)  # last dim strided: copied
    mod = _table(2, 1, 40)
    for inp in (x, xt):
        out = kernel.ada_norm(inp, mod[:, :, 0], mod[:, :, 1], EPS)
        _check(out, reference.ada_norm(inp, mod[:, :, 0], mod[:, :, 1], EPS),
               reference.ada_norm(inp.float(), mod[:, :, 0].float(), mod[:, :, 1].float(), EPS), "strided")
        g = kernel.gated_residual(inp, inp, mod[:, :, 2])
        assert max_err(g, reference.gated_residual(inp, inp, mod[:, :, 2])) <= ulp(torch.bfloat16, 20.0)


def test_out_is_written_in_place_and_inputs_untouched():
    x, y = _x(), _x(seed=5)
    mod = _table(2, 7, 40)
    before = [t.clone() for t in (x, y, mod)]
    out = torch.empty_like(x)
    assert kernel.ada_norm(x, mod[:, :, 0], mod[:, :, 1], EPS, out=out) is out
    assert torch.equal(out, kernel.ada_norm(x, mod[:, :, 0], mod[:, :, 1], EPS))
    out2 = torch.empty_like(x)
    assert kernel.gated_residual(x, y, mod[:, :, 2], out=out2) is out2
    for t, b in zip((x, y, mod), before):
        assert torch.equal(t, b)
    # The residual stream may be updated in place (each element is read before it is written).
    expect = kernel.gated_residual(x, y, mod[:, :, 2])
    assert torch.equal(kernel.gated_residual(x, y, mod[:, :, 2], out=x), expect)


@pytest.mark.parametrize("call, message", [
    (lambda x, m: kernel.ada_norm(x, m, m, EPS, "group"), "kind must be 'rms', 'layer' or 'none', got 'group'"),
    (lambda x, m: kernel.ada_norm(x, m, m, 0.0), "eps must be > 0, got 0.0"),
    (lambda x, m: kernel.ada_norm(x[0], m, m, EPS), "x must be a 3-D tensor, got (7, 40)"),
    (lambda x, m: kernel.ada_norm(x, m[:, :, :5], m, EPS), "shift must be (B|1, N|1, D) = (2|1, 7|1, 40)"),
    (lambda x, m: kernel.ada_norm(x, m, m.int(), EPS), "scale must be a float tensor"),
    (lambda x, m: kernel.ada_norm(x, m, m, EPS, out=torch.empty(2, 7, 40, device=DEV)),
     "out must be (2, 7, 40) torch.bfloat16"),
    (lambda x, m: kernel.gated_residual(x, x[:, :3], m), "y must match x (2, 7, 40)"),
    (lambda x, m: kernel.gated_residual(x, x, m[:1, :, :7]), "gate must be (B|1, N|1, D)"),
])
def test_errors_name_argument_rule_and_value(call, message):
    refuses_unchanged(call, message)


@pytest.mark.gpu
@pytest.mark.parametrize("b, n, d", [(2, 6144, 2048), (2, 6144, 4096), (2, 126, 2048)])
@pytest.mark.parametrize("per_token", [False, True])
def test_production_shapes_on_gpu(b, n, d, per_token):
    x = _x(b, n, d)
    mod = _table(b, n if per_token else 1, d)
    for kind in ("rms", "layer"):
        _check(kernel.ada_norm(x, mod[:, :, 0], mod[:, :, 1], EPS, kind),
               reference.ada_norm(x, mod[:, :, 0], mod[:, :, 1], EPS, kind),
               reference.ada_norm(x.float(), mod[:, :, 0].float(), mod[:, :, 1].float(), EPS, kind), kind)
    y = _x(b, n, d, seed=9)
    _check(kernel.gated_residual(x, y, mod[:, :, 2]), reference.gated_residual(x, y, mod[:, :, 2]),
           reference.gated_residual(x.float(), y.float(), mod[:, :, 2].float()), "gated")
