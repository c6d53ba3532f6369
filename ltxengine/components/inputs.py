"""User images and videos -> VAE input tensors, the way diffusers' VideoProcessor prepares them.

Accepted images: a PIL image in mode RGB; a numpy array (H, W, 3), uint8 or float in [0, 1]; a
torch tensor (3, H, W), uint8 or float in [0, 1]. Videos: a tensor (F, 3, H, W), an array
(F, H, W, 3), or a list of images. Everything is resized to the generation size as diffusers does
it (PIL: Lanczos; arrays and tensors: nearest-neighbour ``F.interpolate``) and mapped to [-1, 1].
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Condition", "ReferenceCondition", "image_to_tensor", "video_to_tensor"]


@dataclass(frozen=True)
class Condition:
    """An image or a video clip that pins the generation at ``frame_index`` with ``strength``
    (diffusers' ``LTXVideoCondition``). Exactly one of ``image`` and ``video`` is set."""

    image: Any = None
    video: Any = None
    frame_index: int = 0
    strength: float = 1.0


@dataclass(frozen=True)
class ReferenceCondition:
    """An IC-LoRA reference video (diffusers' ``LTX2ReferenceCondition(frames, strength)``): an mp4
    path, an array (F, H, W, 3), a tensor (F, 3, H, W) or a list of images, appended to the
    generation as clean tokens; ``strength`` 1 keeps them clean, 0 denoises them like the rest."""

    video: Any
    strength: float = 1.0


def _is_pil(x) -> bool:
    pil = sys.modules.get("PIL.Image")  # a PIL image exists only if PIL was imported
    return pil is not None and isinstance(x, pil.Image)


def _float01(t: torch.Tensor, arg: str) -> torch.Tensor:
    if t.dtype == torch.uint8:
        return t.to(torch.float32) / 255.0
    if not t.is_floating_point():
        raise ValueError(f"{arg}: pixel values must be uint8 or float in [0, 1], got dtype {t.dtype}")
    t = t.to(torch.float32)
    if not torch.isfinite(t).all():
        raise ValueError(f"{arg}: pixel values must be finite")
    lo, hi = t.min().item(), t.max().item()
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{arg}: float pixel values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return t


def image_to_tensor(image, height: int, width: int, arg: str = "image") -> torch.Tensor:
    """-> (3, height, width) float32 in [-1, 1]."""
    if image is None:
        raise ValueError(f"{arg}: expected an image, got None")
    if _is_pil(image):
        if image.mode != "RGB":
            raise ValueError(f"{arg}: PIL image mode must be 'RGB', got {image.mode!r} "
                             f"(convert it with image.convert('RGB'))")
        w, h = image.size
        if w == 0 or h == 0:
            raise ValueError(f"{arg}: image is empty ({w}x{h})")
        if (w, h) != (width, height):
            from PIL import Image  # present whenever a PIL image was passed
            image = image.resize((width, height), resample=Image.LANCZOS, reducing_gap=None)
        t = torch.from_numpy(np.array(image).astype(np.float32) / 255.0).permute(2, 0, 1)
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{arg}: numpy images must be (H, W, 3) RGB, got shape {image.shape}")
        t = _float01(torch.from_numpy(np.ascontiguousarray(image)), arg).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"{arg}: tensor images must be (3, H, W) RGB, got shape {tuple(image.shape)}")
        t = _float01(image.detach().cpu(), arg)
    else:
        raise ValueError(f"{arg}: expected a PIL image, a numpy array (H, W, 3) or a tensor (3, H, W), "
                         f"got {type(image).__name__}")
    if t.shape[1] == 0 or t.shape[2] == 0:
        raise ValueError(f"{arg}: image is empty ({t.shape[2]}x{t.shape[1]})")
    if tuple(t.shape[1:]) != (height, width):
        t = F.interpolate(t[None], size=(height, width))[0]
    return 2.0 * t - 1.0


def video_to_tensor(video, height: int, width: int, arg: str = "video") -> torch.Tensor:
    """-> (3, F, height, width) float32 in [-1, 1]."""
    if isinstance(video, torch.Tensor):
        if video.ndim != 4 or video.shape[1] != 3:
            raise ValueError(f"{arg}: tensor videos must be (F, 3, H, W), got shape {tuple(video.shape)}")
        frames = list(video)
    elif isinstance(video, np.ndarray):
        if video.ndim != 4 or video.shape[3] != 3:
            raise ValueError(f"{arg}: numpy videos must be (F, H, W, 3), got shape {video.shape}")
        frames = list(video)
    elif isinstance(video, (list, tuple)):
        frames = list(video)
    else:
        raise ValueError(f"{arg}: expected a tensor (F, 3, H, W), an array (F, H, W, 3) or a list of frames, "
                         f"got {type(video).__name__}")
    if not frames:
        raise ValueError(f"{arg}: video has no frames")
    out = [image_to_tensor(f, height, width, f"{arg}[{i}]") for i, f in enumerate(frames)]
    return torch.stack(out, dim=1)
