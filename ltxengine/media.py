"""Video files through PyAV. Writes go to a temporary file that is renamed into place, so a
failure never leaves a half-written output."""

from __future__ import annotations

import math
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np


def frame_rate_fraction(value, name: str = "fps") -> Fraction:
    """A frame rate as an exact Fraction: a Fraction as is, 'num/den' strings parsed, numbers
    snapped to the nearest fraction with denominator <= 1001 (23.976... -> 24000/1001)."""
    if isinstance(value, str):
        try:
            rate = Fraction(value)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{name} must be a positive number or 'num/den', got {value!r}") from None
    elif isinstance(value, Fraction):
        rate = value
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
            and math.isfinite(value):
        rate = Fraction(float(value)).limit_denominator(1001)
    else:
        raise ValueError(f"{name} must be a positive number or 'num/den', got {value!r}")
    if rate <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return rate


def write_mp4(path, frames: np.ndarray, fps, crf: int = 18) -> Path:
    """frames: uint8 (F, H, W, 3) RGB; H and W even (yuv420p). Returns the written path."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_mp4: frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"write_mp4: height and width must be even for yuv420p, got {frames.shape[1:3]}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=path.parent if path.parent.exists() else None)
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=frame_rate_fraction(fps, "write_mp4: fps"))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        # mkstemp creates 0600; give the file the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_mp4(path) -> tuple[np.ndarray, Fraction]:
    """-> (uint8 frames (F, H, W, 3), average frame rate)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, Fraction(stream.average_rate)
