"""RoPE tables stored in fp16 where the backend's qk_norm_rope reads them (Triton) and the
activations are 16-bit (models.common.rope_storage); fp32 everywhere else.

Why fp16 is allowed: cos/sin lie in [-1, 1], so an fp16 table keeps 11 significant bits (relative
error <= 2^-12), below the rounding of the bf16 / fp16 output it produces (2^-9 / 2^-12 relative
per element). The accuracy test measures it at the released models' widths and the positions of
a 768x512x121 clip: the output's error against float64 math grows by at most 2% on average.
"""

from __future__ import annotations

import pytest
import torch

from ltxengine.config import LTX2TransformerConfig
from ltxengine.kernels import qk_norm_rope as kernel
from ltxengine.models import ltx2_transformer as L2
from ltxengine.models.common import rope_storage
from ltxengine.models.ltx2_transformer import LTX2Transformer
from ltxengine.models.transformer import LTXVideoTransformer, grid_positions, rope_tables
from ltxengine.ops import TORCH_OPS, get_ops, reference
from ltxengine.ops.qk_norm_rope import reads_half_tables
from ltxengine.presets import TINY_2B, TINY_LTX2

EPS = 1e-6


def _ltxv_tables(frames=16, height=16, width=24, dim=2048):
    """A 768x512x121 clip's LTX-Video tables (latent 16 x 16 x 24, the 2B width), fp32."""
    return rope_tables(grid_positions(1, frames, height, width, (8 / 25, 32, 32)), dim)


def _ltx2_tables(frames=16, height=16, width=24):
    """A 768x512x121 clip's LTX-2 video tables (the 19B config: split layout, 4096 wide, 32 heads), fp32."""
    c = LTX2TransformerConfig()
    pos = L2.video_positions(1, frames, height, width, 25.0, c.vae_scale_factors, c.causal_offset)
    return L2.rope_tables(pos.float(), (c.pos_embed_max_pos, c.base_height, c.base_width), c.inner_dim,
                          c.num_attention_heads, c.rope_theta, c.rope_double_precision, c.rope_type)


def _errors(tables, d, n_rows=512, seed=0):
    """Mean |error| against float64 math of the bf16 output, with fp32 and with fp16 tables (the
    reference op: the kernel reads either table dtype as the same fp32 values, tested below)."""
    g = torch.Generator().manual_seed(seed)
    n = tables[0].shape[-2]
    rows = torch.randperm(n, generator=g)[:n_rows].sort().values
    cos, sin = (t[..., rows, :] for t in tables)
    q = torch.randn(1, n_rows, d, generator=g).to(torch.bfloat16)
    w = (1 + 0.3 * torch.randn(d, generator=g)).to(torch.bfloat16)
    truth, _ = reference.qk_norm_rope(q.double(), q.double(), w.double(), w.double(), EPS,
                                      (cos.double(), sin.double()))
    errs = []
    for dtype in (torch.float32, torch.float16):
        out, _ = reference.qk_norm_rope(q, q, w, w, EPS, (cos.to(dtype), sin.to(dtype)))
        errs.append((out.double() - truth).abs().mean().item())
    return errs


@pytest.mark.parametrize("layout", ["interleaved", "split"])
def test_fp16_tables_cost_at_most_two_percent_of_the_bf16_error(layout):
    tables, d = (_ltxv_tables(), 2048) if layout == "interleaved" else (_ltx2_tables(), 4096)
    fp32_err, fp16_err = _errors(tables, d)
    assert fp16_err <= 1.02 * fp32_err, (fp32_err, fp16_err)


@pytest.mark.parametrize("layout", ["interleaved", "split"])
def test_kernel_reads_fp16_tables_as_their_fp32_values(layout):
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 6, 32, generator=g).bfloat16(), torch.randn(2, 6, 32, generator=g).bfloat16()
    w = torch.ones(32, dtype=torch.bfloat16)
    angle = torch.randn(1, 6, 16, generator=g).repeat_interleave(2, -1) if layout == "interleaved" \
        else torch.randn(1, 4, 6, 4, generator=g)
    half = (angle.cos().half(), angle.sin().half())
    widened = tuple(t.float() for t in half)
    for a, b in zip(kernel.qk_norm_rope(q, k, w, w, EPS, half), kernel.qk_norm_rope(q, k, w, w, EPS, widened)):
        assert torch.equal(a, b)


def test_which_backends_read_fp16_tables():
    assert reads_half_tables("triton") and not reads_half_tables("cuda") and not reads_half_tables("torch")
    assert get_ops("triton", "cpu").half_rope_tables  # conftest sets TRITON_INTERPRET=1
    assert not TORCH_OPS.half_rope_tables and not get_ops("auto", "cpu").half_rope_tables


@pytest.mark.parametrize("dtype, kernels, stored", [
    (torch.bfloat16, "triton", torch.float16), (torch.float16, "triton", torch.float16),
    (torch.float32, "triton", torch.float32), (torch.bfloat16, "torch", torch.float32)])
def test_models_store_tables_as_their_backend_reads_them(dtype, kernels, stored):
    ops = get_ops(kernels, "cpu")
    ltxv = LTXVideoTransformer(TINY_2B, ops=ops).to(dtype)
    cos, sin = ltxv.rope(grid_positions(1, 2, 3, 4, (8 / 25, 32, 32)))
    ltx2 = LTX2Transformer(TINY_LTX2, ops=ops).to(dtype)
    tables = ltx2.rope(ltx2.video_positions(1, 2, 3, 4, 25.0), ltx2.audio_positions(1, 5))
    assert {cos.dtype, sin.dtype} | {t.dtype for pair in tables for t in pair} == {stored}
    fp32 = rope_tables(grid_positions(1, 2, 3, 4, (8 / 25, 32, 32)), TINY_2B.inner_dim)
    assert torch.equal(cos, fp32[0].to(stored)) and torch.equal(sin, fp32[1].to(stored))


def test_rope_storage_passes_none_through():
    t = torch.zeros(2)
    assert rope_storage(get_ops("triton", "cpu"), torch.bfloat16, t, None)[1] is None
