"""Ulysses sequence parallel (ltxengine.parallel.sequence) on 2 and 4 gloo CPU processes: the
transformers' forward with the video tokens split over the ranks equals the one-process forward.

One process group per world size runs every case (a spawn costs more than a tiny forward). Each
rank builds the same seeded model and inputs, computes the one-process reference itself, then the
sharded forward, and returns both errors and outputs; the parent checks the budget and that every
rank holds the same video and audio. Budget REL = 1e-5 of the output scale: the sharded forward
runs the same fp32 ops on the same values, attention on head subsets and the (B, N, C) matmuls on
token subsets, so only blocking order can differ (measured: see the report in the commit); a
wrong slice, a padded key attended to or a head exchanged to the wrong rank moves outputs by > 1e-2.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.distributed as dist

from ltxengine.models.ltx2_transformer import LTX2Transformer, Skip, first_frame_keyframes
from ltxengine.models.transformer import LTXVideoTransformer, grid_positions
from ltxengine.parallel import sequence
from ltxengine.presets import TINY_2B, TINY_LTX2, TINY_LTX23, TINY_LTX25
from tests.helpers import assert_close_scaled, perturb_
from tests.parallel import spawn

REL = 1e-5
FPS = 24.0
# 4 heads in every exchanging attention (video self-attention, video->audio), so 4 ranks divide them.
_HEADS = dict(num_attention_heads=4, attention_head_dim=8, audio_num_attention_heads=4, audio_attention_head_dim=4)
# Each with another cross timestep (see _ltx2_call); 2.0 also with an additive attention bias (IC-LoRA).
CROSS = {"2.0": "mixed", "2.3": "own", "2.5": "sigma"}
LTX2_CONFIGS = {"2.0": dataclasses.replace(TINY_LTX2, **_HEADS),
                "2.3": dataclasses.replace(TINY_LTX23, **_HEADS),
                "2.5": dataclasses.replace(TINY_LTX25, **_HEADS)}
LTXV_CONFIG = dataclasses.replace(TINY_2B, num_attention_heads=4, attention_head_dim=4)
# (frames, height, width): 18 tokens (even on 2 ranks, 5 + 5 + 5 + 3 on 4), 6 tokens (2 + 2 + 2 + 0 on 4:
# the last rank holds padding only).
GRIDS = ((3, 2, 3), (2, 1, 3))
NA, L = 5, 7


def _model(cls, cfg, seed=0):
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    perturb_(model, seed=seed + 1, std=0.2)
    return model


def _ltx2_call(model, grid, seed, bias, cross="mixed"):
    """Guidance rows as one batch: cond, uncond, STG, modality isolation (no a2v / v2a); first latent
    frame clean (per-token video timesteps), a text mask; optionally an attention bias. ``cross``: the
    cross timestep, which makes the a2v/v2a tables per token ("own": scale/shift and gate, "mixed":
    scale/shift) or per sample ("sigma")."""
    c, (f, h, w), b = model.config, grid, 4
    nv = f * h * w
    g = torch.Generator().manual_seed(seed)
    video, audio = torch.randn(b, nv, c.in_channels, generator=g), torch.randn(b, NA, c.audio_in_channels, generator=g)
    vtext, atext = (torch.randn(b, L, width, generator=g) for width in c.text_widths)
    mask = torch.ones(b, L, dtype=torch.long)
    mask[1, -3:] = 0
    sigma = torch.full((b,), 0.7)
    den = torch.ones(b, nv)
    den[:, : h * w] = 0.0
    rope = model.rope(model.video_positions(b, f, h, w, FPS), model.audio_positions(b, NA))
    kw = dict(video_sigma=sigma, audio_sigma=sigma * 0.9, video_timesteps=sigma[:, None] * den,
              context=model.prepare_context(vtext, atext, mask), rope=rope, cross_timestep=cross,
              skip=[Skip(), Skip(), Skip.stg([1]), Skip.isolate()], keyframes=first_frame_keyframes(1, f, h, w))
    if bias:
        kw["video_attention_bias"] = torch.randn(1, 1, nv, nv, generator=g)
    return (video, audio), kw


def _ltxv_call(model, grid, seed):
    c, (f, h, w), b = model.config, grid, 2
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, f * h * w, c.in_channels, generator=g)
    t = torch.full((b, f * h * w), 700.0)
    t[:, : h * w] = 0.0
    text, mask = torch.randn(b, L, c.caption_channels, generator=g), torch.ones(b, L)
    mask[0, -2:] = 0
    return (x, t), dict(context=model.prepare_context(text, mask), rope=model.rope(grid_positions(b, f, h, w, None)))


def _compare(model, args, kw):
    """(errors, sharded outputs): the forward with sequence parallel on against the one-process one,
    under inference_mode as the engine runs it."""
    with torch.inference_mode():
        expected = model(*args, **kw)
        sequence.enable(model, dist.group.WORLD)
        try:
            actual = model(*args, **kw)
        finally:
            sequence.disable(model)
        again = model(*args, **kw)
    expected, actual, again = (t if isinstance(t, tuple) else (t,) for t in (expected, actual, again))
    assert all(torch.equal(a, e) for a, e in zip(again, expected)), "disable did not restore the one-process model"
    errors = [assert_close_scaled(a, e, REL, "sharded vs one process") for a, e in zip(actual, expected)]
    return errors, actual


def _parity_rank(rank, world):
    results = {}
    for i, grid in enumerate(GRIDS):
        for name, cfg in LTX2_CONFIGS.items():
            model = _model(LTX2Transformer, cfg)
            results[f"ltx2 {name} {grid}"] = _compare(model, *_ltx2_call(model, grid, i, name == "2.0", CROSS[name]))
        model = _model(LTXVideoTransformer, LTXV_CONFIG)
        results[f"ltx-video {grid}"] = _compare(model, *_ltxv_call(model, grid, seed=i))
    return results, _errors(world)


def _message(fn) -> str:
    try:
        fn()
    except ValueError as e:
        return str(e)
    return "no error"


def _errors(world):
    """check()'s and the forward's refusals, from inside the group (they need its size)."""
    group = dist.group.WORLD
    two_heads = _model(LTX2Transformer, TINY_LTX2)  # 2 video and 2 audio heads
    ltxv = _model(LTXVideoTransformer, LTXV_CONFIG)
    model = _model(LTX2Transformer, LTX2_CONFIGS["2.0"])
    out = {"heads": _message(lambda: sequence.check(two_heads, group, 64)),
           "enable heads": _message(lambda: sequence.enable(two_heads, group)),
           "tokens": _message(lambda: sequence.check(ltxv, group, world - 1)),
           "not a transformer": _message(lambda: sequence.check(torch.nn.Linear(2, 2), group)),
           "not a group": _message(lambda: sequence.check(ltxv, "world")),
           "not a member": _message(lambda: sequence.enable(ltxv, dist.new_group([0])))}
    sequence.enable(model, group)
    (video, audio), kw = _ltx2_call(model, (1, 1, world - 1), seed=0, bias=False)
    out["forward tokens"] = _message(lambda: model(video, audio, **kw))
    return out


@pytest.mark.parametrize("world", [2, 4])
def test_sequence_parallel_equals_one_process(world):
    ranks = spawn.run(_parity_rank, world)
    results, errors = ranks[0]
    worst = max(max(e) for e, _ in results.values())
    print(f"world {world}: max error {worst:.2e} over {len(results)} cases")
    for case, (errs, outputs) in results.items():
        assert max(errs) <= REL, case
        for r in range(1, world):  # every rank returns the same video (gathered) and audio (replicated)
            assert all(torch.equal(a, b) for a, b in zip(outputs, ranks[r][0][case][1])), f"{case}: rank {r} differs"
    if world == 4:
        assert "num_attention_heads must be divisible by the group size 4" in errors["heads"]
        assert "got 2" in errors["heads"] and errors["enable heads"] == errors["heads"]
        assert errors["tokens"] == ("sequence parallel: num_video_tokens must be at least the group size 4 "
                                    "(one token per rank), got 3")
        assert "must be an LTX2Transformer or an LTXVideoTransformer, got Linear" in errors["not a transformer"]
        assert errors["not a group"] == "sequence parallel: group must be a torch.distributed ProcessGroup, got 'world'"
        assert "group must contain this process (global rank 3)" in ranks[3][1]["not a member"]
        assert errors["forward tokens"] == ("sequence parallel: the video must have at least one token per rank "
                                            "(group size 4), got 3 video tokens")


@pytest.mark.skipif(dist.is_initialized(), reason="this process already has a process group")
def test_check_needs_a_process_group():
    with pytest.raises(ValueError, match=r"group needs torch.distributed initialised \(init_process_group\)"):
        sequence.check(_model(LTXVideoTransformer, LTXV_CONFIG), None, 16)


def _failing_rank(rank, world):
    model = _model(LTX2Transformer, LTX2_CONFIGS["2.0"])
    if rank == 1:
        def fail(*_):
            raise RuntimeError("rank 1 fails in block 1")
        model.transformer_blocks[1].register_forward_pre_hook(fail)
    args, kw = _ltx2_call(model, GRIDS[0], seed=0, bias=False)
    sequence.enable(model, dist.group.WORLD)
    with torch.no_grad():
        model(*args, **kw)


def test_a_failing_rank_makes_every_rank_fail():
    """Rank 1 raises inside the forward while rank 0 waits in an all-to-all: rank 0 must fail too (the
    peer's socket closes, or the 5 s collective timeout expires), never hang."""
    outcomes = spawn.run_outcomes(_failing_rank, 2, timeout=60, collective_timeout=5)
    assert not any(o.hung for o in outcomes), outcomes
    assert all(o.error is not None and o.exitcode != 0 for o in outcomes), outcomes
    assert "rank 1 fails in block 1" in outcomes[1].error
    assert "rank 1 fails" not in outcomes[0].error  # rank 0's own collective failed
