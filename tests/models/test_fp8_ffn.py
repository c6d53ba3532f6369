"""The fp8 FFN site: GELU and the down-projection's per-token quantization as one op.

Where ff.net.2 is an fp8-scaled-mm Fp8Linear with dynamic per-token scales and nothing hooks
into the FFN, FeedForward runs up-projection -> ``ops.gelu_quantize_fp8`` -> ff.net.2's scaled
matmul on that input (``Fp8Linear.forward_quantized``). Checked on tiny LTX-Video and LTX-2
models in bf16, every block linear converted:
- reference ops: bit-equal to the unfused path (FeedForward._quantizes_gelu forced off), through
  the plain gated residual and through the deferred (``Pending``) residual + adaLN;
- the Triton kernel (only this op; the rest stay the reference, as tests/models/
  test_fused_linears.py does): within the house budget (tests/kernels/budget.py) against the
  unconverted bf16 model run in fp32: at most twice the unfused fp8 path's error plus a bf16 ulp
  of the output scale;
- fallbacks (static input_scale, fp8-cast, a forward hook on either FFN layer) never call it.
"""

from __future__ import annotations

import functools

import pytest
import torch

from ltxengine.models.transformer import FeedForward
from ltxengine.ops import get_ops, set_ops
from ltxengine.quant.fp8 import Fp8Linear
from tests.models import ltx2_transformer_fixtures as ltx2
from tests.models.fp8_fixtures import counting
from tests.models.fp8_fixtures import ltx2_fp8 as _ltx2
from tests.models.fp8_fixtures import ltx_video as _ltx_video
from tests.models.fp8_fixtures import ltx_video_run as _ltx_video_run

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # GELU's -inf limit


_counting = functools.partial(counting, ("gelu_quantize_fp8",))  # (base, fused, deferred)


def _unfused(monkeypatch, run):
    with monkeypatch.context() as m:
        m.setattr(FeedForward, "_quantizes_gelu", lambda self: False)
        return run()


@pytest.mark.parametrize("deferred", [False, True], ids=["gated_residual", "pending"])
def test_ltx_video_reference_route_is_bit_equal_to_unfused(monkeypatch, deferred):
    model, _ = _ltx_video()
    ops, calls = _counting(deferred=deferred)
    set_ops(model, ops)
    expected = _unfused(monkeypatch, lambda: _ltx_video_run(model))
    assert calls["gelu_quantize_fp8"] == 0
    got = _ltx_video_run(model)
    assert calls["gelu_quantize_fp8"] == len(model.transformer_blocks)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", ["split64", "v25"])  # v25: no video FFN bias
def test_ltx2_reference_route_is_bit_equal_to_unfused(monkeypatch, name):
    model, _, x, kf = _ltx2(name)
    ops, calls = _counting(deferred=True)
    set_ops(model, ops)
    expected = _unfused(monkeypatch, lambda: ltx2.run_ours(model, x, keyframes=kf))
    got = ltx2.run_ours(model, x, keyframes=kf)
    assert calls["gelu_quantize_fp8"] == 2 * len(model.transformer_blocks)  # video and audio FFN
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def _check_triton_budget(got, unfused, ref32, what):
    err_t = (unfused.double() - ref32).abs().max().item()
    err_k = (got.double() - ref32).abs().max().item()
    budget = 2 * err_t + 2 ** -8 * ref32.abs().max().item()
    # measured: fused == unfused on these tiny models (no e4m3 byte flips): ltx-video 0.129 vs budget
    # 0.268, ltx2 video 0.803 vs 1.63, audio 0.358 vs 0.745 (errors of fp8 weights and activations)
    assert err_k <= budget, f"{what}: fused {err_k:.3e} > budget {budget:.3e} (unfused {err_t:.3e})"


def test_ltx_video_triton_within_budget(monkeypatch):
    model, plain = _ltx_video()
    # the unconverted model's bf16 weights in fp32 math, on the same bf16-rounded inputs
    ref32 = _ltx_video_run(plain.to(torch.bfloat16).float(), torch.float32).double()
    unfused = _unfused(monkeypatch, lambda: _ltx_video_run(model))
    ops, calls = _counting(fused=get_ops("triton", "cpu"))
    got = _ltx_video_run(set_ops(model, ops))
    assert calls["gelu_quantize_fp8"] == len(model.transformer_blocks)
    _check_triton_budget(got, unfused, ref32, "ltx-video")


def test_ltx2_triton_within_budget(monkeypatch):
    model, plain, x, _ = _ltx2()
    plain = plain.to(torch.bfloat16).float()
    ref32 = ltx2.run_ours(plain, {k: v.float() if v.is_floating_point() else v for k, v in x.items()})
    unfused = _unfused(monkeypatch, lambda: ltx2.run_ours(model, x))
    ops, calls = _counting(fused=get_ops("triton", "cpu"), deferred=True)
    got = ltx2.run_ours(set_ops(model, ops), x)
    assert calls["gelu_quantize_fp8"] == 2 * len(model.transformer_blocks)
    for a, b, r, what in zip(got, unfused, ref32, ("video", "audio")):
        _check_triton_budget(a, b, r.double(), f"ltx2 {what}")


def _fallback_cases():
    def static():
        model = _ltx_video(static_suffix="ff.net.2")[0]
        assert model.transformer_blocks[0].ff.net[2].input_scale is not None
        return model

    def cast():
        return _ltx_video("fp8-cast")[0]

    def hooked(layer):
        def build():
            model = _ltx_video()[0]
            for block in model.transformer_blocks:  # a LoRA branch attaches this way
                target = block.ff.net[0] if layer == "up" else block.ff.net[2]
                target.register_forward_hook(lambda module, args, output: None)
            return model
        return build

    return {"static input_scale": static, "fp8-cast": cast, "hooked up-projection": hooked("up"),
            "hooked down-projection": hooked("down")}


@pytest.mark.parametrize("case", list(_fallback_cases()))
def test_fallbacks_keep_the_unfused_path(monkeypatch, case):
    model = _fallback_cases()[case]()
    ops, calls = _counting()
    set_ops(model, ops)
    got = _ltx_video_run(model)
    assert calls["gelu_quantize_fp8"] == 0, case
    assert torch.equal(got, _unfused(monkeypatch, lambda: _ltx_video_run(model)))


def test_a_hook_on_the_up_projection_still_sees_its_call(monkeypatch):
    # the up-projection runs as a module call on the fused route too: a LoRA branch there stays
    model = _ltx_video()[0]
    seen = []
    for block in model.transformer_blocks:
        block.ff.net[0].proj.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    ops, calls = _counting()
    set_ops(model, ops)
    got = _ltx_video_run(model)
    assert calls["gelu_quantize_fp8"] == len(seen) == len(model.transformer_blocks)
    assert torch.equal(got, _unfused(monkeypatch, lambda: _ltx_video_run(model)))


def test_forward_quantized_refuses_what_forward_would_not_do():
    layer = Fp8Linear(16, 8, policy="fp8-cast")
    q = torch.zeros(3, 16, dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="Fp8Linear.forward_quantized: needs policy 'fp8-scaled-mm' without a "
                                         "static input_scale, got policy='fp8-cast', static_input=False"):
        layer.forward_quantized(q, torch.ones(3, 1), (3,), torch.bfloat16)
    layer = Fp8Linear(16, 8, policy="fp8-scaled-mm")
    with pytest.raises(ValueError, match=r"Fp8Linear.forward_quantized: q must be \(M, 16\) float8_e4m3fn, "
                                         r"got \(3, 16\) torch.bfloat16"):
        layer.forward_quantized(q.bfloat16(), torch.ones(3, 1), (3,), torch.bfloat16)
