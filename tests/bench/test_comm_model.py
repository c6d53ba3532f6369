"""bench/comm_model.py: the byte counts of each collective on a hand-computed tiny case, the compute split,
and that the committed table is what the script writes now."""

import pytest

from bench import comm_model as C
from bench import scenario_transformer as S
from ltxengine.presets import TINY_2B, TINY_LTX2

# TINY_LTX2: 2 layers, video 2 heads x 16 = 32 wide, video->audio attention 16 wide, 8 output channels.
# 11 video tokens on 2 ranks pad to 12, 6 a rank; 3 audio and 5 text tokens.
STEP = C.Step(TINY_LTX2, video_tokens=11, audio_tokens=3, text_tokens=5, v2a="gather")


def test_sequence_parallel_bytes_by_hand():
    a2a, kv, out = C.sp_collectives(STEP, 2, passes=1)
    # a2a: q, k, v in one call and out in another per layer = 4 calls; 4 tensors a layer, each rank's shard
    # 6 x 32 x 2 B = 384 B, half of it leaves the rank
    assert (a2a.calls, a2a.bytes_per_rank) == (4, 8 * 384 / 2)
    # video K and V gathered for the audio queries: (12 x 16 x 2 B = 384 B) each, per layer = 4 calls, half received
    assert (kv.calls, kv.bytes_per_rank) == (4, 4 * 384 / 2)
    # the step's output (12 x 8 x 2 B = 192 B) gathered once
    assert (out.calls, out.bytes_per_rank) == (1, 192 / 2)
    seconds = (1536 + 768 + 96) / (450e9 * 0.8) + 9 * 25e-6
    assert sum(c.seconds() for c in (a2a, kv, out)) == pytest.approx(seconds, rel=1e-12)
    # three passes move three times the bytes; one rank moves nothing
    assert [c.bytes_per_rank for c in C.sp_collectives(STEP, 2, passes=3)] == [3 * 1536, 3 * 768, 3 * 96]
    assert C.sp_collectives(STEP, 1, passes=1) == []


def test_video_to_audio_ulysses_by_hand():
    """The engine's scheme (parallel/sequence.py _video_to_audio), the model's default."""
    step = C.Step(TINY_LTX2, 11, 3, 5)
    assert step.v2a == "ulysses"
    a2a, kv, heads, out = C.sp_collectives(step, 2, passes=1)
    # k and v in one all-to-all a layer: each rank's (6 x 16 x 2 B = 192 B) K and V, half of each leaves
    assert (kv.calls, kv.bytes_per_rank) == (2, 2 * 2 * 192 / 2)
    # the audio output's heads all-gathered a layer: (3 x 16 x 2 B = 96 B) whole, half comes from the other rank
    assert (heads.calls, heads.bytes_per_rank) == (2, 2 * 96 / 2)
    assert (a2a.bytes_per_rank, out.bytes_per_rank) == (1536, 96)  # unchanged
    assert C.replicated_flops(step, 12) == S.transformer_flops(TINY_LTX2, 0, 5, 3)  # its SDPA splits


def test_video_to_audio_combine_by_hand():
    step = C.Step(TINY_LTX2, 11, 3, 5, v2a="combine")
    a2a, combine, out = C.sp_collectives(step, 2, passes=1)
    # per layer one all-reduce of 3 audio tokens x (16 outputs + 2 head LSEs) x 4 B = 216 B; a ring sends 2 (P-1)/P
    assert (combine.calls, combine.bytes_per_rank) == (2, 2 * 2 * 0.5 * 216)
    assert (a2a.bytes_per_rank, out.bytes_per_rank) == (1536, 96)  # unchanged
    # its SDPA over the video keys splits over the ranks: no longer replicated
    assert C.replicated_flops(step, 12) == S.transformer_flops(TINY_LTX2, 0, 5, 3)


def test_ltx_video_has_no_audio_gather():
    step = C.Step(TINY_2B, video_tokens=10, audio_tokens=0, text_tokens=7)
    names = [c.name for c in C.sp_collectives(step, 2, 1)]
    assert names == ["a2a q,k,v,out (video self-attn)", "all-gather output"]


def test_guidance_parallel_bytes_by_hand():
    (x0,) = C.gp_collectives(C.Step(TINY_LTX2, 11, 3, 5, passes=2), 2)
    # each pass's x0: 11 tokens x 8 channels x 4 B (fp32) = 352 B; the other group's half comes in
    assert (x0.calls, x0.bytes_per_rank) == (1, 0.5 * 2 * 352)
    assert C.gp_collectives(STEP, 1) == []


def test_compute_split_adds_up_to_the_flop_model():
    rate = C.BF16_TFLOPS * 1e12 * C.MFU
    total = S.transformer_flops(TINY_LTX2, 12, 5, 3)
    replicated = C.replicated_flops(STEP, 12)
    # the replicated part: everything without video tokens plus the video->audio SDPA (4 x 3 x 12 x 16 a layer)
    assert replicated == S.transformer_flops(TINY_LTX2, 0, 5, 3) + 2 * 4 * 3 * 12 * 16
    assert 0 < replicated < total
    assert C.compute_seconds(STEP, 2, 1) == pytest.approx(((total - replicated) / 2 + replicated) / rate, rel=1e-12)
    assert C.compute_seconds(STEP, 1, 2) == pytest.approx(2 * S.transformer_flops(TINY_LTX2, 11, 5, 3) / rate,
                                                          rel=1e-12)


def test_layouts_and_predictions():
    assert C.layouts(4, 4) == [(1, 4), (2, 2), (4, 1)]
    assert C.layouts(8, 2) == [(1, 8), (2, 4)]
    with pytest.raises(ValueError, match="sequence degree 3 must divide the 2 heads"):
        C.predict(STEP, 1, 3)
    one = C.predict(STEP, 1, 1)
    assert (one["speedup"], one["comm"]) == (1.0, 0.0)
    two = C.predict(C.make_step("ltx2.3-22b", "1536x1024x121"), 1, 2)
    assert two["overlapped"] <= two["serial"] and 1 < two["speedup"] <= two["speedup_overlap"] <= 2


def test_the_committed_table_is_current(tmp_path, monkeypatch):
    text = C.report()
    assert "model, no measurement" in text
    assert C.RESULT.read_text() == text, "bench/results/multi_gpu_model.md is stale: python bench/comm_model.py --write"
    monkeypatch.setattr(C, "RESULT", tmp_path / "results" / "model.md")
    assert C.main(["--write"]) == 0
    assert (tmp_path / "results" / "model.md").read_text() == text
