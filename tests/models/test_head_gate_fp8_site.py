"""LTX-2.3+ gated attention: the head gate writes its fp8 to_out's per-token input (ops.head_gate_fp8,
models/transformer.py Attention._output).

Every LTX-2.3 attention (video / audio self, text cross, a2v / v2a) scales its output per head by
2 sigmoid(to_gate_logits(x)) and to_out reads only that; under fp8-scaled-mm to_out quantizes it per
token. Checked on the tiny LTX-2.3 transformer in bf16 with every block linear (to_gate_logits aside)
converted to fp8 and the q/k/v packed (tests/models/fp8_fixtures.py):
- the torch backend, with the residuals applied directly (``gated_residual`` of to_out's output, as
  ``linear_residual`` does for an fp8 to_out) and left ``Pending`` for the next norm (residual None),
  and under STG (one sample's video self-attention skipped: the keep blend; every sample's: the
  value pass-through, ``keep`` False): bit-equal to the unfused route (``quantizing_gate`` forced
  False), the fused op called once per gated attention;
- the Triton head gates and quantizer (interpreted; GEMMs the reference): bit-equal to their own
  unfused route (the kernel's q is quantize_fp8 of its own head_gate output,
  tests/kernels/test_head_gate_fp8.py, and to_out's scaled_mm runs on the same bytes);
- fallbacks never call it: a LoRA-style hook on to_out (it sees the 16-bit gated output), a static
  input_scale, fp8-cast, a backend with its own quantizer but no head gate kernel (kernels="cuda"),
  and the ungated 2.0 model.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from ltxengine.models import transformer
from ltxengine.models.ltx2_transformer import Skip
from ltxengine.models.transformer import Attention
from ltxengine.ops import TORCH_OPS, fp8_linear, get_ops, reference, set_ops
from tests.models import ltx2_transformer_fixtures as ltx2
from tests.models.fp8_fixtures import counting, ltx2_fp8, packed

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # GELU's -inf limit


def _model(name="v23", policy="fp8-scaled-mm", static=False):
    """(the tiny bf16 model with its block linears fp8 and q/k/v packed, bf16 inputs)."""
    model, _, x, _ = ltx2_fp8(name, policy, static_suffix="to_out.0" if static else None)
    return packed(model) if policy == "fp8-scaled-mm" else model, x


def _gated(model) -> int:
    attentions = [m for m in model.transformer_blocks.modules() if isinstance(m, Attention)]
    return sum(1 for m in attentions if m.to_gate_logits is not None)


_counting = functools.partial(counting, ("head_gate_fp8",))  # (base, fused, deferred)


def _both(monkeypatch, model, x, skip=None):
    """(fused run, unfused run) of the model on x."""
    got = ltx2.run_ours(model, x, skip=skip)
    with monkeypatch.context() as m:
        m.setattr(transformer, "quantizing_gate", lambda ops: False)
        return got, ltx2.run_ours(model, x, skip=skip)


def _equal(runs) -> bool:
    return all(torch.equal(a, b) for a, b in zip(*runs))


_SKIPS = {"none": None, "stg one sample": [Skip(video_self_attn=(0,)), Skip()],
          "stg every sample": Skip(video_self_attn=(0,))}


@pytest.mark.parametrize("deferred", [False, True], ids=["direct", "pending"])
@pytest.mark.parametrize("skip", list(_SKIPS))
def test_reference_route_is_bit_equal_to_the_unfused_one(monkeypatch, deferred, skip):
    model, x = _model()
    ops, calls = _counting(TORCH_OPS, deferred=deferred)
    set_ops(model, ops)
    runs = _both(monkeypatch, model, x, _SKIPS[skip])
    assert calls == {"head_gate_fp8": _gated(model)} and _gated(model) == 6 * len(model.transformer_blocks)
    assert _equal(runs)


def test_triton_is_bit_equal_to_its_unfused_route(monkeypatch):
    # the Triton head gates and per-token quantizer (the unfused to_out's); the GEMMs and the rest stay
    # the reference (the whole backend interpreted would take much longer for the same check)
    model, x = _model()
    triton = get_ops("triton", "cpu")
    names = ("head_gate", "head_gate_fp8", "quantize_fp8")
    ops = dataclasses.replace(TORCH_OPS, **{n: getattr(triton, n) for n in names},
                              fp8_linear=fp8_linear.compose(triton.quantize_fp8, TORCH_OPS.scaled_mm))
    ops, calls = _counting(ops)
    set_ops(model, ops)
    runs = _both(monkeypatch, model, x, [Skip(video_self_attn=(0,)), Skip()])
    assert calls == {"head_gate_fp8": _gated(model)}
    assert _equal(runs)


def _fallback_cases(seen):
    def hooked():
        model, x = _model()
        for m in model.transformer_blocks.modules():  # a LoRA branch attaches a forward hook the same way
            if isinstance(m, Attention):
                m.to_out[0].register_forward_hook(lambda module, args, output: seen.append(args[0].dtype))
        return model, x, {}

    def own_quantizer():  # kernels="cuda": a quantizer kernel, no head gate kernel
        def kernel(*args, **kwargs):
            seen.append("quantize_fp8")
            return reference.quantize_fp8(*args, **kwargs)
        return (*_model(), {"quantize_fp8": kernel, "fp8_linear": fp8_linear.compose(kernel, TORCH_OPS.scaled_mm)})

    return {"LoRA hook on to_out": hooked, "static input_scale": lambda: (*_model(static=True), {}),
            "fp8-cast": lambda: (*_model(policy="fp8-cast"), {}), "own quantizer, no head gate kernel": own_quantizer,
            "ungated 2.0": lambda: (*_model("split64"), {})}


@pytest.mark.parametrize("case", list(_fallback_cases([])))
def test_fallbacks_keep_the_unfused_path(monkeypatch, case):
    seen = []
    model, x, extra = _fallback_cases(seen)[case]()
    ops, calls = _counting(dataclasses.replace(TORCH_OPS, **extra))
    if case.startswith("own"):  # counting the fused op would make it the backend's own: count the kernel
        ops = dataclasses.replace(TORCH_OPS, **extra)
    set_ops(model, ops)
    fused = ltx2.run_ours(model, x)
    per_run = len(seen)
    runs = _both(monkeypatch, model, x)
    assert sum(calls.values()) == 0, case
    assert _equal(runs) and _equal((fused, runs[0]))
    if case.startswith("LoRA"):  # the hook saw to_out's 16-bit input, once per attention and run
        assert seen == [torch.bfloat16] * 3 * 6 * len(model.transformer_blocks)
    if case.startswith("own"):  # the kernel quantized every to_out's input in every run (fused: 6 fewer a block)
        assert len(seen) == 3 * per_run and per_run >= 6 * len(model.transformer_blocks)
    if case.startswith("ungated"):
        assert _gated(model) == 0
