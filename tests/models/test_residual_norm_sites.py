"""The transformers' residual + adaLN sites (ops.residual_ada_norm): where a residual update is
immediately followed by an adaLN of the same stream, the pair runs as one op when the backend has
the kernel and the output projection's GEMM epilogue does not already take the residual.

Sites per block: LTX-Video the cross-attention residual + norm2, the FFN residual + the next
block's norm1 (the last block's: + the final norm) (2); LTX-2 per stream the self-attention
residual + the text query norm, the text residual + the first audio<->video norm (or the FFN norm
where a2v and v2a are skipped), the a2v / v2a residual + the FFN norm, the FFN residual + the next
block's first norm or the final norm (4 + 4).

Routed through the op's reference the models are bit-equal to the unfused path (the reference
is that pair). The Triton kernel is checked at the triton-vs-torch model tolerance of
tests/models/test_fused_linears.py (fp32: 1e-5 of the output scale; measured ~1e-7).
"""

from __future__ import annotations


import pytest
import torch

from ltxengine.models.ltx2_transformer import Skip, first_frame_keyframes
from ltxengine.ops import get_ops, reference, set_ops
from tests.helpers import assert_close_scaled
from tests.models import ltx2_transformer_fixtures as ltx2
from tests.models.sites_fixtures import ltx_video_forward as _ltx_video
from tests.models.sites_fixtures import spied as _spied
from tests.models.transformer_fixtures import make_pair


def _auto_like():
    """The row ops as kernels="auto" picks them on a GPU: Triton's adaLN, gated residual and the
    fused pair; the GEMMs (and their epilogues) stay cuBLAS, i.e. the reference here."""
    triton = get_ops("triton", "cpu")
    return _spied(**{n: getattr(triton, n) for n in ("ada_norm", "gated_residual", "residual_ada_norm")})


def test_ltx_video_reference_route_is_bit_exact():
    _, model = make_pair()
    expected = _ltx_video(model)
    ops, calls = _spied(residual_ada_norm=reference.residual_ada_norm)
    got = _ltx_video(set_ops(model, ops))
    assert calls == {"residual_ada_norm": 2 * len(model.transformer_blocks)}
    assert torch.equal(got, expected)


def test_ltx_video_triton_kernel_matches_torch():
    _, model = make_pair()
    expected = _ltx_video(model)
    ops, calls = _auto_like()
    got = _ltx_video(set_ops(model, ops))
    layers = len(model.transformer_blocks)
    # left unfused: the first block's norm1 and every attn1 residual (into the GEMM epilogue on a GPU)
    assert calls == {"residual_ada_norm": 2 * layers, "ada_norm": 1, "gated_residual": layers}
    assert_close_scaled(got, expected, 1e-5, "triton residual_ada_norm vs torch, fp32")


def test_the_gemm_epilogue_keeps_the_residual_where_it_can():
    """With a fused linear_gated_residual the projection takes the residual (fewer bytes); a layer
    that cannot (here: a forward hook, as a LoRA branch) gets the fused residual + norm instead."""
    _, model = make_pair()
    expected = _ltx_video(model)
    ops, calls = _spied(residual_ada_norm=reference.residual_ada_norm,
                        linear_gated_residual=reference.linear_gated_residual)
    hooked = model.transformer_blocks[1].attn2.to_out[0]
    hooked.register_forward_hook(lambda module, args, output: None)
    got = _ltx_video(set_ops(model, ops))
    layers = len(model.transformer_blocks)
    assert calls == {"residual_ada_norm": 1, "linear_gated_residual": 3 * layers - 1}
    assert torch.equal(got, expected)


# Per sample: STG in block 1 and a2v removed in block 0 / v2a removed in block 1 and a2v in block 0
# (a2v off for the whole batch in block 0: the text residual goes to the v2a key norm); isolation
# (no audio<->video attention anywhere: the text residual goes to the FFN norm).
SKIPS = {"mixed": ([Skip(video_self_attn=[1], a2v=[0]), Skip(a2v=[0], v2a=[1])], lambda n: 8 * n - 1),
         "isolated": ([Skip.isolate(), Skip.isolate()], lambda n: 6 * n)}


@pytest.mark.parametrize("name", ["split64", "v25"])  # v25: gated attention, text query modulation
@pytest.mark.parametrize("skips", sorted(SKIPS))
def test_ltx2_reference_route_is_bit_exact(name, skips):
    _, model, cfg = ltx2.pair(name)
    x = ltx2.inputs(cfg)
    skip, sites = SKIPS[skips]
    kf = first_frame_keyframes(2, ltx2.F, ltx2.H, ltx2.W) if cfg.use_keyframes_abs_pos_embedding else None
    expected = ltx2.run_ours(model, x, skip=skip, keyframes=kf)
    ops, calls = _spied(residual_ada_norm=reference.residual_ada_norm)
    got = ltx2.run_ours(set_ops(model, ops), x, skip=skip, keyframes=kf)
    assert calls == {"residual_ada_norm": sites(len(model.transformer_blocks))}
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def test_ltx2_triton_kernel_matches_torch():
    _, model, cfg = ltx2.pair("split64")
    x = ltx2.inputs(cfg)
    skip = SKIPS["mixed"][0]
    expected = ltx2.run_ours(model, x, skip=skip)
    ops, calls = _auto_like()
    got = ltx2.run_ours(set_ops(model, ops), x, skip=skip)
    assert calls["residual_ada_norm"] == SKIPS["mixed"][1](len(model.transformer_blocks))
    for a, b, what in zip(got, expected, ("video", "audio")):
        assert_close_scaled(a, b, ltx2.REL, f"triton residual_ada_norm vs torch, {what}")


def test_memory_plan_replays_blocks_that_pass_pending_streams(monkeypatch):
    """A block's input and output may be Pending (its FFN residual): the memory plan's block replay
    (executor/replay.py) must still key, record and replay those calls with the full trace's plan."""
    import copy

    import ltxengine.executor.replay as replay
    from ltxengine.executor.memory import trace_allocations
    from ltxengine.models.transformer import grid_positions

    _, model = make_pair()
    blocks = model.transformer_blocks
    blocks.extend(copy.deepcopy(blocks[0]) for _ in range(5 - len(blocks)))
    set_ops(model, _spied(residual_ada_norm=reference.residual_ada_norm)[0])
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(2, 60, 8, generator=g), torch.randn(2, 7, 12, generator=g)
    with torch.no_grad():
        context, rope = model.prepare_context(text, torch.ones(2, 7)), model.rope(grid_positions(2, 3, 4, 5, None))
    t = torch.tensor([937.5, 120.0])

    def step():
        return model(x, t, context=context, rope=rope)

    replays, original = [], replay._replay
    monkeypatch.setattr(replay, "_replay", lambda *a: replays.append(1) or original(*a))
    fast = trace_allocations(step, repeated=blocks)
    assert len(replays) == 3  # block 0 takes a tensor, block 1 the first Pending; 2-4 replay block 1
    monkeypatch.setattr(replay, "signature", lambda *a: None)
    full = trace_allocations(step, repeated=blocks)
    assert fast.ops == full.ops and fast.live_peak_bytes == full.live_peak_bytes > 0
