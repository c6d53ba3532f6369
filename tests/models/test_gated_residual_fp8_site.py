"""LTX-Video's cross-attention query reads the per-token fp8 copy of the stream written by attn1's
gated residual (ops.gated_residual_fp8, models/residual.py attend_residual_fp8).

attn2 reads the raw residual stream right after attn1's residual, no norm between; under
fp8-scaled-mm its to_q quantizes that stream per token. Checked on a tiny bf16 LTX-Video model with
every block linear converted to fp8 and packed (tests/models/fp8_fixtures.py):
- the torch backend, with attn2's residual applied directly and left ``Pending`` for norm2: bit-equal
  to the unfused route (``quantizing_residual`` forced False), the fused op called once per block;
- the Triton backend (interpreted): bit-equal to its own unfused route (its kernel's q is
  quantize_fp8 of its own stream, tests/kernels/test_gated_residual_fp8.py, and to_q's scaled_mm
  runs on the same bytes);
- fallbacks never call it: a LoRA hook on attn2.to_q (which must see the bf16 stream), a static
  input_scale, fp8-cast, attn1's residual in its output projection's epilogue, and a backend with its
  own gated residual but no fused one (kernels="cuda").
LTX-Video has no STG / skip path in this engine (only LTX-2's blocks take ``keep``): nothing to fall back.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from ltxengine.models import residual
from ltxengine.ops import TORCH_OPS, fp8_linear, get_ops, native, set_ops
from ltxengine.quant.fp8 import convert_to_fp8
from tests.models.fp8_fixtures import block_linears, counting, packed
from tests.models.fp8_fixtures import ltx_video as _ltx_video
from tests.models.fp8_fixtures import ltx_video_run as _run
from tests.models.transformer_fixtures import make_pair

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # GELU's -inf limit


_counting = functools.partial(counting, ("gated_residual_fp8",))  # (base, fused, deferred)


def _unfused(monkeypatch, model):
    with monkeypatch.context() as m:
        m.setattr(residual, "quantizing_residual", lambda ops: False)
        return _run(model)


@pytest.mark.parametrize("deferred", [False, True], ids=["direct", "pending"])
def test_reference_route_is_bit_equal_to_the_unfused_one(monkeypatch, deferred):
    model = packed(_ltx_video()[0])
    ops, calls = _counting(TORCH_OPS, deferred=deferred)
    set_ops(model, ops)
    expected = _unfused(monkeypatch, model)
    assert sum(calls.values()) == 0
    got = _run(model)
    assert calls == {"gated_residual_fp8": len(model.transformer_blocks)}
    assert torch.equal(got, expected)


def test_triton_is_bit_equal_to_its_unfused_route(monkeypatch):
    # the Triton residuals and per-token quantizer (the unfused to_q's); the GEMMs and the rest stay the
    # reference (the whole backend interpreted: 14 s for the same check)
    model = packed(_ltx_video()[0])
    triton = get_ops("triton", "cpu")
    ops = dataclasses.replace(TORCH_OPS, **{n: getattr(triton, n) for n in (
        "gated_residual", "gated_residual_fp8", "residual_ada_norm", "quantize_fp8")},
        fp8_linear=fp8_linear.compose(triton.quantize_fp8, TORCH_OPS.scaled_mm))
    ops, calls = _counting(ops)
    set_ops(model, ops)
    expected = _unfused(monkeypatch, model)
    got = _run(model)
    assert calls == {"gated_residual_fp8": len(model.transformer_blocks)}
    assert torch.equal(got, expected)


def _hooked(seen):
    model = _ltx_video()[0]
    for block in model.transformer_blocks:  # a LoRA branch attaches a forward hook the same way
        block.attn2.to_q.register_forward_hook(lambda module, args, output: seen.append(args[0].dtype))
    return packed(model)


def _fallback_cases(seen):
    def epilogue():
        # attn1.to_out left bf16 and a backend that fuses the residual into its GEMM's epilogue
        _, model = make_pair()
        names = [n for n in block_linears(model) if not n.endswith("attn1.to_out.0")]
        model = packed(convert_to_fp8(model.to(torch.bfloat16), "fp8-scaled-mm", names=names))
        return model, {"linear_gated_residual": lambda *a, **k: native.linear_gated_residual(*a, **k)}

    def own_plain_residual():  # kernels="cuda": a gated_residual kernel, no fused one
        def kernel(*args, **kwargs):
            seen.append("gated_residual")
            return native.gated_residual(*args, **kwargs)
        return packed(_ltx_video()[0]), {"gated_residual": kernel}

    return {"LoRA hook on attn2.to_q": lambda: (_hooked(seen), {}),
            "static input_scale": lambda: (packed(_ltx_video(static_suffix="attn2.to_q")[0]), {}),
            "fp8-cast": lambda: (_ltx_video("fp8-cast")[0], {}),
            "attn1 residual in the GEMM epilogue": epilogue, "own plain gated_residual": own_plain_residual}


@pytest.mark.parametrize("case", list(_fallback_cases([])))
def test_fallbacks_keep_the_unfused_path(monkeypatch, case):
    seen = []
    model, extra = _fallback_cases(seen)[case]()
    ops, calls = _counting(dataclasses.replace(TORCH_OPS, **extra))
    if case.startswith("own"):  # counting the fused op would make it the backend's own: count the kernel
        ops = dataclasses.replace(TORCH_OPS, **extra)
    set_ops(model, ops)
    got = _run(model)
    layers = len(model.transformer_blocks)
    assert sum(calls.values()) == 0, case
    if case.startswith("own"):  # attn1's, attn2's and the FFN's residuals through the backend's kernel
        assert seen == ["gated_residual"] * 3 * layers
    assert torch.equal(got, _unfused(monkeypatch, model))
    if case.startswith("LoRA"):  # the hook saw to_q's unquantized input, once per block and run
        assert seen == [torch.bfloat16] * 2 * layers
