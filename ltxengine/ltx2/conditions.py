"""LTX-2's video conditions (``Condition(video=frames, frame_index=k, strength=s)``, diffusers'
``LTX2ConditionPipeline``) and the tokens conditions append to the video.

diffusers places a condition at a latent index L (negative counts from the end); ``frame_index``
is a pixel frame: L = 0 is frame_index 0 (the first latent frames are replaced), L > 0 is
frame_index 8 (L - 1) + 1 (appended as keyframe tokens from there), the pixel frame diffusers
offsets the keyframe positions by."""

from __future__ import annotations

import numpy as np
import torch

from .stages import uint8_image

__all__ = ["appended_tokens", "condition_video"]


def condition_video(video, arg: str, frame_index: int, num_frames: int) -> np.ndarray:
    """A video condition as uint8 (F, H, W, 3), cut as diffusers cuts it: to the frames left from
    ``frame_index`` on, then down to 8k + 1 frames (whole latent frames). A one-frame video is an
    image (H, W, 3), re-compressed at ``image_crf`` like one (diffusers: single frames only)."""
    if isinstance(video, torch.Tensor):
        if video.ndim != 4 or video.shape[1] != 3:
            raise ValueError(f"{arg}: tensor videos must be (F, 3, H, W), got shape {tuple(video.shape)}")
    elif isinstance(video, np.ndarray):
        if video.ndim != 4 or video.shape[3] != 3:
            raise ValueError(f"{arg}: numpy videos must be (F, H, W, 3), got shape {video.shape}")
    elif not isinstance(video, (list, tuple)):
        raise ValueError(f"{arg}: expected a tensor (F, 3, H, W), an array (F, H, W, 3) or a list of images, "
                         f"got {type(video).__name__}")
    if len(video) == 0:
        raise ValueError(f"{arg}: video has no frames")
    keep = min(len(video), num_frames - frame_index)
    keep = (keep - 1) // 8 * 8 + 1
    frames = [uint8_image(video[j], f"{arg}[{j}]") for j in range(keep)]
    for j, f in enumerate(frames):
        if f.shape != frames[0].shape:
            raise ValueError(f"{arg}: every frame must have the size of frame 0 ({frames[0].shape[0]}x"
                             f"{frames[0].shape[1]}), frame {j} is {f.shape[0]}x{f.shape[1]}")
    return frames[0] if len(video) == 1 else np.stack(frames)


def appended_tokens(images, guiding: bool, height: int, width: int) -> int:
    """The video tokens a stage at (height, width) appends for the request's ``images`` (see
    ``stages.encode_conditions``): every condition but one at frame 0, all with ``guiding``."""
    n = 0
    for img, frame_index, _ in images:
        if frame_index != 0 or guiding:
            frames = (img.shape[0] - 1) // 8 + 1 if img.ndim == 4 else 1
            n += frames * (height // 32) * (width // 32)
    return n
