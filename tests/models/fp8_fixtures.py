"""Tiny bf16 LTX-Video and LTX-2 models with every block linear converted to fp8, and their inputs:
shared by the fp8 site tests (test_fp8_ffn.py, test_norm_fp8_sites.py)."""

from __future__ import annotations

import copy

import torch

from ltxengine.models.common import OpsLinear
from ltxengine.models.ltx2_transformer import first_frame_keyframes
from ltxengine.models.transformer import grid_positions
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


def ltx2_fp8(name="split64"):
    """(fp8 model, the unconverted fp32 copy, bf16 inputs, keyframes or None)."""
    _, model, cfg = ltx2.pair(name)
    plain = copy.deepcopy(model)
    model = model.to(torch.bfloat16)
    x = {k: v.bfloat16() if k in ("video", "audio", "vtext", "atext") else v for k, v in ltx2.inputs(cfg).items()}
    kf = first_frame_keyframes(2, ltx2.F, ltx2.H, ltx2.W) if cfg.use_keyframes_abs_pos_embedding else None
    return convert_to_fp8(model, "fp8-scaled-mm", names=block_linears(model)), plain, x, kf
