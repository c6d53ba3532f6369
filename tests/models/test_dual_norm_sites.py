"""LTX-2's audio<->video norms (ops.dual_ada_norm): where both a2v and v2a run, each stream's norm is
computed once and modulated twice (a2v and v2a rows), its pending text residual applied first, in
one op instead of residual_ada_norm (or ada_norm) then ada_norm. Used where the backend has the
kernel, and on the torch backend (its dual op is the unfused calls' bits); where a2v or v2a is
skipped for the whole batch the block keeps the separate calls.

Sites: 2 per block (video, audio) where both run. Routed through the op's reference the model is
bit-equal to the unfused path (the reference is those calls); the torch backend's route is bit-equal
in fp32 and bf16 (tests/ops/test_native.py checks bf16 against diffusers); the Triton kernel is
checked at the triton-vs-torch model tolerance (fp32: 1e-5 of the output scale).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltxengine.models.ltx2_transformer import Skip
from ltxengine.ops import TORCH_OPS, get_ops, native, reference, set_ops
from tests.helpers import assert_close_scaled
from tests.models import ltx2_transformer_fixtures as ltx2
from tests.models.sites_fixtures import spied as _spied

# a2v off for the whole batch in block 0 (separate calls there), v2a off for sample 1 in block 1 (a
# per-sample keep: both attentions still run, so the dual op does), STG elsewhere; and isolation.
SKIPS = {"mixed": [Skip(video_self_attn=[1], a2v=[0]), Skip(a2v=[0], v2a=[1])],
         "isolated": [Skip.isolate(), Skip.isolate()]}
DUAL_BLOCKS = {"mixed": lambda n: n - 1, "isolated": lambda n: 0}


def _unfused(ops):
    """``ops`` on the separate calls: an ada_norm that is not the torch backend's field (same
    function) and no dual kernel route the model takes without a kernel."""
    return dataclasses.replace(ops, ada_norm=lambda *a, **k: ops.ada_norm(*a, **k))


@pytest.mark.parametrize("name", ["split64", "v23"])  # 2.0; 2.3: gated attention, text query modulation
@pytest.mark.parametrize("skips", ["mixed", "isolated"])
def test_reference_route_is_bit_exact(name, skips):
    _, model, cfg = ltx2.pair(name)
    x = ltx2.inputs(cfg)
    expected = ltx2.run_ours(model, x, skip=SKIPS[skips])
    # residual_ada_norm's reference leaves the text residuals Pending, as a Triton backend does
    ops, calls = _spied(residual_ada_norm=reference.residual_ada_norm, dual_ada_norm=reference.dual_ada_norm)
    got = ltx2.run_ours(set_ops(model, ops), x, skip=SKIPS[skips])
    n = len(model.transformer_blocks)
    dual = DUAL_BLOCKS[skips](n)
    # of the 8 residual + norm sites per block (test_residual_norm_sites), the text residual + first
    # audio<->video norm of each stream moves into the dual op where it runs; STG removes none
    rest = {"mixed": 8 * n - 1, "isolated": 6 * n}[skips] - 2 * dual
    assert calls == ({"dual_ada_norm": 2 * dual, "residual_ada_norm": rest} if dual else {"residual_ada_norm": rest})
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_backend_takes_the_dual_op_bit_exact(dtype):
    _, model, cfg = ltx2.pair("split64")
    model = model.to(dtype)
    x = {k: v.to(dtype) if k in ("video", "audio", "vtext", "atext") else v for k, v in ltx2.inputs(cfg).items()}
    expected = ltx2.run_ours(set_ops(model, _unfused(TORCH_OPS)), x, skip=SKIPS["mixed"])
    got = ltx2.run_ours(set_ops(model, TORCH_OPS), x, skip=SKIPS["mixed"])
    for a, b in zip(got, expected):
        assert a.dtype == dtype and torch.equal(a, b)
    counted, calls = _spied(dual_ada_norm=native.dual_ada_norm)
    ltx2.run_ours(set_ops(model, counted), x)
    assert calls == {"dual_ada_norm": 2 * len(model.transformer_blocks)}


def test_a_backend_adaln_kernel_without_the_dual_kernel_keeps_the_separate_calls():
    """e.g. kernels="cuda": its ada_norm is a kernel, its dual_ada_norm the torch backend's; the
    native dual would replace the kernel's norms, so the block keeps the separate calls."""
    _, model, cfg = ltx2.pair("split64")
    ops, calls = _spied(ada_norm=reference.ada_norm)
    ops = dataclasses.replace(ops, dual_ada_norm=TORCH_OPS.dual_ada_norm)
    ltx2.run_ours(set_ops(model, ops), ltx2.inputs(cfg))
    # per block and stream: self-attention, text query, a2v, v2a, FFN; and the 2 final norms
    assert calls == {"ada_norm": 5 * 2 * len(model.transformer_blocks) + 2}


def test_triton_kernel_matches_torch():
    _, model, cfg = ltx2.pair("split64")
    x = ltx2.inputs(cfg)
    expected = ltx2.run_ours(model, x, skip=SKIPS["mixed"])
    triton = get_ops("triton", "cpu")
    # the row ops as kernels="auto" picks them on a GPU; the GEMMs (and epilogues) stay the reference
    ops, calls = _spied(**{n: getattr(triton, n) for n in ("ada_norm", "gated_residual", "residual_ada_norm",
                                                             "dual_ada_norm")})
    got = ltx2.run_ours(set_ops(model, ops), x, skip=SKIPS["mixed"])
    assert calls["dual_ada_norm"] == 2 * DUAL_BLOCKS["mixed"](len(model.transformer_blocks))
    for a, b, what in zip(got, expected, ("video", "audio")):
        assert_close_scaled(a, b, ltx2.REL, f"triton dual_ada_norm vs torch, {what}")
