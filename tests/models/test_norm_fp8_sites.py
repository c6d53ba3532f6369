"""The adaLN before a self-attention, an FFN or (LTX-2) a text cross-attention's query writes its
fp8 input GEMM's quantized input itself.

Where attn1's q/k/v (LTX-2: the video and audio self-attentions') are fp8-scaled-mm layers with
dynamic per-token scales packed into one weight, where both FFN linears are such layers, and
where LTX-2's attn2 / audio_attn2 to_q is one (and the a2v / v2a queries and packed keys / values:
``ops.dual_ada_norm_fp8``), the norm before them runs as ``ops.ada_norm_fp8``
(after a pending residual ``ops.residual_ada_norm_fp8``) and the q/k/v scaled_mm / the
up-projection / to_q read its (q8, scale) instead of quantizing the normed rows again
(models/residual.py residual_norm_fp8). Checked on tiny LTX-Video and LTX-2 models in bf16, every
block linear converted and packed:
- reference ops: bit-equal to today's path (Attention / FeedForward.takes_fp8_input forced
  False), through the plain norm and the deferred (``Pending``) residual + norm;
- Triton (the norm ops only; the rest stay the reference): bit-equal to the same ops' unfused
  route too (the kernel's q is quantize_fp8 of its own bf16 rows, tests/kernels/test_ada_norm_fp8.py,
  and fp8_linear's scaled_mm runs on the same bytes);
- fallbacks (static input_scale, fp8-cast, unpacked / hooked layers, STG skipping the attention)
  never call it.
"""

from __future__ import annotations

import collections
import dataclasses
import functools

import pytest
import torch

from ltxengine.models.ltx2_transformer import Skip
from ltxengine.models.packing import pack_projections
from ltxengine.models.transformer import Attention, FeedForward
from ltxengine.ops import TORCH_OPS, get_ops, native, set_ops
from tests.models import ltx2_transformer_fixtures as ltx2
from tests.models.fp8_fixtures import counting, packed
from tests.models.fp8_fixtures import ltx2_fp8 as _ltx2
from tests.models.fp8_fixtures import ltx_video as _ltx_video
from tests.models.fp8_fixtures import ltx_video_run as _ltx_video_run

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # GELU's -inf limit

NAMES = ("ada_norm_fp8", "residual_ada_norm_fp8", "dual_ada_norm_fp8")
_counting = functools.partial(counting, NAMES)  # (base, fused, deferred): the three fused norms counted


def _today(monkeypatch, run):
    with monkeypatch.context() as m:
        m.setattr(Attention, "takes_fp8_input", lambda self: False)
        m.setattr(FeedForward, "takes_fp8_input", lambda self: False)
        m.setattr(Attention, "takes_fp8_context", lambda self: False)  # LTX-2's a2v / v2a, 2.3's text K/V
        return run()


@pytest.mark.parametrize("deferred", [False, True], ids=["ada_norm", "pending"])
def test_ltx_video_reference_route_is_bit_equal_to_today(monkeypatch, deferred):
    model = packed(_ltx_video()[0])
    ops, calls = _counting(deferred=deferred)
    set_ops(model, ops)
    expected = _today(monkeypatch, lambda: _ltx_video_run(model))
    assert sum(calls.values()) == 0
    got = _ltx_video_run(model)
    layers = len(model.transformer_blocks)
    # attn1's and the FFN's norms; pending: the first block's first norm has no residual before it
    assert calls == ({"ada_norm_fp8": 1, "residual_ada_norm_fp8": 2 * layers - 1} if deferred else
                     {"ada_norm_fp8": 2 * layers})
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", ["split64", "v23"])  # v23: modulated, gated text query; gated attentions
def test_ltx2_reference_route_is_bit_equal_to_today(monkeypatch, name):
    model, _, x, kf = _ltx2(name)
    packed(model)
    ops, calls = _counting()  # the torch backend: no Pending stream, the dual norm runs
    set_ops(model, ops)
    expected = _today(monkeypatch, lambda: ltx2.run_ours(model, x, keyframes=kf))
    got = ltx2.run_ours(model, x, keyframes=kf)
    # per stream: self-attention, text cross-attention query, the a2v / v2a pair (dual), FFN; 2.3+: the
    # text context's modulation too (models/residual.py modulated_context)
    per_block = 10 if model.transformer_blocks[0].kv_mod else 8
    assert sum(calls.values()) == per_block * len(model.transformer_blocks)
    assert calls["dual_ada_norm_fp8"] == 2 * len(model.transformer_blocks)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def test_ltx_video_triton_is_bit_equal_to_its_unfused_route(monkeypatch):
    model = packed(_ltx_video()[0])
    triton = get_ops("triton", "cpu")
    ops, calls = _counting(fused=triton, deferred=True)
    ops = dataclasses.replace(ops, ada_norm=triton.ada_norm, residual_ada_norm=triton.residual_ada_norm)
    set_ops(model, ops)
    expected = _today(monkeypatch, lambda: _ltx_video_run(model))
    got = _ltx_video_run(model)
    assert sum(calls.values()) == 2 * len(model.transformer_blocks)
    assert torch.equal(got, expected)


def test_ltx2_triton_is_bit_equal_to_its_unfused_route(monkeypatch):
    model, _, x, _ = _ltx2()
    packed(model)
    triton = get_ops("triton", "cpu")
    ops, calls = _counting(fused=triton)
    ops = dataclasses.replace(ops, ada_norm=triton.ada_norm, residual_ada_norm=triton.residual_ada_norm,
                              dual_ada_norm=triton.dual_ada_norm)
    set_ops(model, ops)
    expected = _today(monkeypatch, lambda: ltx2.run_ours(model, x))
    got = ltx2.run_ours(model, x)
    assert sum(calls.values()) == 8 * len(model.transformer_blocks)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def _fallback_cases():
    def static():
        model = packed(_ltx_video(static_suffix=("attn1.to_q", "ff.net.0.proj"))[0])
        assert model.transformer_blocks[0].attn1.to_q.input_scale is not None
        return model

    def hooked():
        model = _ltx_video()[0]
        for block in model.transformer_blocks:  # a LoRA branch attaches this way
            for layer in (block.attn1.to_q, block.ff.net[0].proj):
                layer.register_forward_hook(lambda module, args, output: None)
        packed(model)
        return model

    def cast():
        model = _ltx_video("fp8-cast")[0]
        assert pack_projections(model) == 0  # fp8-cast layers stay per layer (packing.fp8_packable)
        return model

    return {"static input_scale": static, "fp8-cast": cast, "hooked": hooked,
            "unpacked attention (its FFN's norm still fused)": lambda: _ltx_video()[0]}


@pytest.mark.parametrize("case", list(_fallback_cases()))
def test_fallbacks_keep_todays_path(monkeypatch, case):
    model = _fallback_cases()[case]()
    ops, calls = _counting(deferred=True)
    set_ops(model, ops)
    got = _ltx_video_run(model)
    assert sum(calls.values()) == (len(model.transformer_blocks) if case.startswith("unpacked") else 0), case
    assert torch.equal(got, _today(monkeypatch, lambda: _ltx_video_run(model)))


def test_ltx2_stg_skipping_self_attention_does_not_quantize(monkeypatch):
    # every sample perturbed in block 0 (keep False): that attention reads only to_v(x), no q8
    model, _, x, _ = _ltx2()
    packed(model)
    ops, calls = _counting()
    set_ops(model, ops)
    skip = Skip(video_self_attn=(0,))
    expected = _today(monkeypatch, lambda: ltx2.run_ours(model, x, skip=skip))
    got = ltx2.run_ours(model, x, skip=skip)
    assert sum(calls.values()) == 8 * len(model.transformer_blocks) - 1
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def test_a_backend_with_its_own_plain_norm_but_no_fused_one_keeps_it():
    # kernels="cuda": ada_norm has a kernel, ada_norm_fp8 none; its native composition would replace
    # the kernel by torch's unfused ops, so the kernel + quantizer stay (transformer.quantizing_norm)
    model = packed(_ltx_video()[0])
    plain = collections.Counter()

    def kernel_norm(*args, **kwargs):
        plain["ada_norm"] += 1
        return native.ada_norm(*args, **kwargs)
    set_ops(model, dataclasses.replace(TORCH_OPS, ada_norm=kernel_norm))
    got = _ltx_video_run(model)
    assert plain["ada_norm"] == 2 * len(model.transformer_blocks) + 1  # attn1's, norm2 and the final norm
    assert torch.equal(got, _today(monkeypatch=pytest.MonkeyPatch(), run=lambda: _ltx_video_run(model)))
