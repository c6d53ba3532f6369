"""decode.all_finite (one sum first, the elementwise test only when the sum is not finite) and
video_to_frames' CPU fast path: the same frames, bit for bit, as the isfinite/where form it skips
when every value is finite, and NaN where the VAE gave nan or inf (so check_finite refuses them)."""

import numpy as np
import pytest
import torch

from ltxengine.components.decode import all_finite, check_finite, video_to_frames


def _reference(video):  # the form video_to_frames had (and keeps on CUDA)
    x = video[0].permute(1, 0, 2, 3).float() * 0.5 + 0.5
    return torch.where(torch.isfinite(x), x.clamp(0, 1), torch.nan).permute(0, 2, 3, 1).contiguous()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("lib", ["torch", "numpy"])
def test_all_finite_finds_one_bad_value(bad, lib):
    x = torch.randn(3, 5, 7)
    assert all_finite(x if lib == "torch" else x.numpy())
    x[1, 2, 3] = bad
    assert not all_finite(x if lib == "torch" else x.numpy())


def test_all_finite_when_the_sum_overflows():
    # finite values whose float32 sum is inf: the elementwise test decides
    x = torch.full((4,), 3e38)
    assert not torch.isfinite(x.sum()) and all_finite(x) and all_finite(x.numpy())
    x[0] = float("nan")
    assert not all_finite(x)


def test_video_to_frames_equals_the_where_form():
    video = torch.randn(1, 3, 5, 8, 6) * 1.5  # many values clamp at both ends
    assert torch.equal(video_to_frames(video), _reference(video))
    half = video.bfloat16()
    assert torch.equal(video_to_frames(half), _reference(half)) and video_to_frames(half).is_contiguous()
    assert video_to_frames(video).shape == (5, 8, 6, 3) and video_to_frames(video).dtype == torch.float32
    video[0, 1, 2, 3, 4] = float("inf")
    video[0, 0, 0, 0, 0] = -float("inf")
    video[0, 2, 4, 7, 5] = float("nan")
    got = video_to_frames(video)
    assert torch.equal(got.isnan(), _reference(video).isnan()) and got.isnan().sum() == 3
    assert torch.equal(got.nan_to_num(), _reference(video).nan_to_num())
    with pytest.raises(FloatingPointError, match="decode produced non-finite frames"):
        check_finite(got.numpy(), "decode")
    assert check_finite(np.zeros(3, np.float32), "decode") is not None
