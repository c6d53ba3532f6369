"""The transformers' fused linear sites: the FFN up-projection through ops.linear_gelu and every
output projection (attention out, FFN down) with its gated residual through
ops.linear_gated_residual, where the layer is a plain linear and the backend has the kernel.

The engine-level equality of kernels="triton" and "torch" is tests/test_kernels_engine.py's; here
the sites themselves: how many fused calls a block makes, that layers with their own forward
(fp8, forward hooks as LoRA branches use) stay unfused, that without a fused kernel the gated
residual keeps its own backend, and the error of the fused bf16 model.
"""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch

from ltxengine.models.common import OpsLinear, fusable
from ltxengine.models.ltx2_transformer import Skip, first_frame_keyframes
from ltxengine.models.residual import linear_residual
from ltxengine.ops import TORCH_OPS, get_ops, reference, set_ops
from ltxengine.quant.fp8 import Fp8Linear, convert_to_fp8
from tests.helpers import assert_close_scaled
from tests.models import ltx2_transformer_fixtures as ltx2
from tests.models.sites_fixtures import ltx_video_forward as _ltx_video
from tests.models.transformer_fixtures import make_pair

FUSED = ("linear_gelu", "linear_gated_residual")
# The interpreter's numpy exp overflows to inf in the GELU of large negative pre-activations (the
# result is the right limit, -0; tests/kernels/test_linear_gelu.py checks it).
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp")


def _counting(ops):
    """The reference ops with ``ops``' two fused linears, counting their calls: the other Triton
    kernels are tests/test_kernels_engine.py's (and would multiply the interpreter's time here)."""
    calls = collections.Counter()

    def spy(name):
        fn = getattr(ops, name)

        def counted(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return counted

    return dataclasses.replace(TORCH_OPS, **{name: spy(name) for name in FUSED}), calls


def test_ltx_video_blocks_fuse_every_projection_site():
    _, model = make_pair()
    expected = _ltx_video(model)
    ops, calls = _counting(get_ops("triton", "cpu"))
    got = _ltx_video(set_ops(model, ops))
    layers = len(model.transformer_blocks)
    # per block: the FFN up-projection; attn1, attn2 and the FFN down-projection with their residual
    assert calls == {"linear_gelu": layers, "linear_gated_residual": 3 * layers}
    assert_close_scaled(got, expected, 1e-5, "triton vs torch, fp32")  # measured ~1e-7 of scale


def test_ltx_video_bf16_error_within_budget():
    """The tiny model in bf16 with the fused linears: at most twice the error of the reference
    ops in bf16 (both against fp32), plus a bf16 ulp of the output scale."""
    _, model = make_pair()
    ref32 = _ltx_video(model).double()
    model = model.to(torch.bfloat16)
    torch_err = (_ltx_video(model, torch.bfloat16).double() - ref32).abs().max().item()
    triton_err = (_ltx_video(set_ops(model, _counting(get_ops("triton", "cpu"))[0]), torch.bfloat16).double()
                  - ref32).abs().max()
    assert triton_err <= 2 * torch_err + 2 ** -8 * ref32.abs().max(), (triton_err, torch_err)


@pytest.mark.parametrize("name", ["split64", "v25"])  # v25: no video FFN bias, gated attention, 9-row tables
def test_ltx2_blocks_fuse_every_projection_site(name):
    _, model, cfg = ltx2.pair(name)
    x = ltx2.inputs(cfg)
    skips = [Skip.stg([1]), Skip(a2v=[0])]  # value pass-through in block 1, a2v removed for sample 1
    kf = first_frame_keyframes(2, ltx2.F, ltx2.H, ltx2.W) if cfg.use_keyframes_abs_pos_embedding else None
    expected = ltx2.run_ours(model, x, skip=skips, keyframes=kf)
    ops, calls = _counting(get_ops("triton", "cpu"))
    got = ltx2.run_ours(set_ops(model, ops), x, skip=skips, keyframes=kf)
    layers = len(model.transformer_blocks)
    # per block: both FFN up-projections; 4 self/text attentions, a2v, v2a and both FFN down-projections
    assert calls == {"linear_gelu": 2 * layers, "linear_gated_residual": 8 * layers}
    for a, b, what in zip(got, expected, ("video", "audio")):
        assert_close_scaled(a, b, ltx2.REL, f"{name} {what}")


def test_layers_with_their_own_forward_stay_unfused():
    _, model = make_pair()
    ff = ["transformer_blocks.0.ff.net.0.proj", "transformer_blocks.0.ff.net.2"]
    convert_to_fp8(model, "fp8-cast", names=ff)
    assert isinstance(model.transformer_blocks[0].ff.net[0].proj, Fp8Linear)
    expected = _ltx_video(model)
    # A forward hook (how a LoRA branch attaches to a layer) must still see the layer's call.
    hooked = model.transformer_blocks[1].attn1.to_out[0]
    seen = []
    hooked.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    assert not fusable(hooked) and fusable(model.transformer_blocks[1].attn2.to_out[0])
    ops, calls = _counting(get_ops("triton", "cpu"))
    got = _ltx_video(set_ops(model, ops))
    assert calls == {"linear_gelu": 1, "linear_gated_residual": 4}  # 2 blocks x 4 sites - 2 fp8 - 1 hooked
    assert len(seen) == 1
    assert_close_scaled(got, expected, 1e-5, "fp8 / hooked layers")


def test_without_a_fused_kernel_the_gated_residual_keeps_its_backend():
    """kernels="auto" on a GPU has no fused linear_gated_residual: the sites must call the ops'
    linear and gated_residual (the Triton / CUDA gated residual as before), not the reference."""
    seen = []

    def gated(x, y, gate, *, out=None):
        seen.append(gate)
        return reference.gated_residual(x, y, gate, out=out)

    ops = dataclasses.replace(TORCH_OPS, gated_residual=gated)
    layer = OpsLinear(6, 4)
    x, h, gate = torch.randn(2, 3, 4), torch.randn(2, 3, 6), torch.randn(2, 1, 4)
    got = linear_residual(ops, layer, x, h, gate)
    assert len(seen) == 1 and seen[0] is gate
    with torch.no_grad():
        assert torch.equal(got, reference.linear_gated_residual(x, h, layer.weight, layer.bias, gate))
