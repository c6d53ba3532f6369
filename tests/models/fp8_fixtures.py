"""Tiny bf16 LTX-Video and LTX-2 models with every block linear converted to fp8, their inputs, and
ops that count the fused calls: shared by the fp8 site tests (test_fp8_ffn.py, test_norm_fp8_sites.py,
test_gated_residual_fp8_site.py, test_head_gate_fp8_site.py)."""

from __future__ import annotations

import collections
import copy
import dataclasses

import torch

from ltxengine.models.common import OpsLinear
from ltxengine.models.ltx2_transformer import first_frame_keyframes
from ltxengine.models.packing import pack_projections
from ltxengine.models.transformer import grid_positions
from ltxengine.ops import TORCH_OPS, native
from ltxengine.quant.fp8 import convert_to_fp8
from tests.models import ltx2_transformer_fixtures as ltx2
from tests.models.transformer_fixtures import make_pair


def block_linears(model):
    return [n for n, m in model.named_modules()
            if n.startswith("transformer_blocks.") and isinstance(m, OpsLinear) and not n.endswith("to_gate_logits")]


def ltx_video_run(model, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3 * 4 * 5, 8, generator=g).to(dtype)
    text = torch.randn(2, 7, 12, generator=g).to(dtype)
    t = torch.tensor([937.5, 120.0])
    with torch.no_grad():
        rope = model.rope(grid_positions(2, 3, 4, 5, (8 / 25, 32, 32)))
        return model(x, t, context=model.prepare_context(text, torch.ones(2, 7)), rope=rope)


def ltx_video(policy="fp8-scaled-mm", static_suffix=None):
    """(fp8 model, the unconverted fp32 copy); ``static_suffix``: layers (a suffix or a tuple of
    them) converted with a static input_scale."""
    _, model = make_pair()
    plain = copy.deepcopy(model)
    model, names = model.to(torch.bfloat16), block_linears(model)
    static = {n for n in names if static_suffix and n.endswith(static_suffix)}
    return convert_to_fp8(model, policy, names=names, static_input=static), plain


def ltx2_fp8(name="split64", policy="fp8-scaled-mm", static_suffix=None):
    """(fp8 model, the unconverted fp32 copy, bf16 inputs, keyframes or None); ``static_suffix`` as
    ``ltx_video``'s."""
    _, model, cfg = ltx2.pair(name)
    plain = copy.deepcopy(model)
    model, names = model.to(torch.bfloat16), block_linears(model)
    static = {n for n in names if static_suffix and n.endswith(static_suffix)}
    x = {k: v.bfloat16() if k in ("video", "audio", "vtext", "atext") else v for k, v in ltx2.inputs(cfg).items()}
    kf = first_frame_keyframes(2, ltx2.F, ltx2.H, ltx2.W) if cfg.use_keyframes_abs_pos_embedding else None
    return convert_to_fp8(model, policy, names=names, static_input=static), plain, x, kf


def packed(model):
    """``model`` with its q/k/v (fp8 or not) packed, as the engine loads it."""
    assert pack_projections(model) > 0
    return model


def counting(names, base=TORCH_OPS, fused=None, deferred=False):
    """(``base`` with the ops ``names`` (taken from ``fused``, default the base's own) counting their
    calls, the Counter); ``deferred``: a residual_ada_norm that is not the torch backend's, so
    residuals are left ``Pending`` for the next norm (the Triton backend's route), computed by the
    same native op."""
    calls = collections.Counter()

    def counted(name):
        fn = getattr(fused or base, name)

        def call(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return call

    extra = {"residual_ada_norm": lambda *a, **k: native.residual_ada_norm(*a, **k)} if deferred else {}
    return dataclasses.replace(base, **{n: counted(n) for n in names}, **extra), calls
