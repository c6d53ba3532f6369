"""Decoding, both families: normalized latents -> frames, as one clip or streamed as chunks to
an mp4, so that the device holds at most two temporal VAE tiles and the host never needs the whole
clip as uint8 (ltxengine issue 7).

The chunk generators compute exactly what the whole-clip paths compute (``decode_latents`` +
``resize_frames`` for LTX-Video, ``ltx2.stages.decode_video`` for LTX-2): the frames of all
chunks, concatenated, are bit-equal to theirs. Work happens as the chunks are consumed; argument
checks and the decode-noise draws happen at the call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor

from ..media import VideoWriter
from .latents import randn

__all__ = [
    "all_finite",
    "check_finite",
    "decode_latents",
    "decode_latents_frames",
    "decode_or_stream",
    "decode_ltx2_frames",
    "join_frames",
    "ltx2_frame_chunks",
    "ltx_video_decode_inputs",
    "ltx_video_frame_chunks",
    "quantize_frames",
    "resize_frames",
    "stream_to_file",
    "video_to_frames",
]


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """VAE output (B, 3, n, H, W) in [-1, 1] -> the first sample's frames (n, H, W, 3) float32 in
    [0, 1], contiguous, on the same device (both pipelines' post-processing; x * 0.5 and x / 2
    are the same IEEE operation, so LTX-2's form gives the same bits). A non-finite VAE output
    becomes NaN (the clamp alone would turn inf into a plausible 0 or 1), which ``check_finite``
    then refuses where the frames reach the host."""
    # One buffer in the output layout, worked on in place: the same elementwise float32 operations as
    # (x.float() * 0.5 + 0.5).clamp(0, 1), hence the same bits, with two passes and allocations fewer.
    x = torch.empty(video[0].permute(1, 2, 3, 0).shape, dtype=torch.float32, device=video.device)
    x.copy_(video[0].permute(1, 2, 3, 0)).mul_(0.5).add_(0.5)
    # the same bits without isfinite's and where's passes (~8% of a CPU call); on CUDA (no host sync
    # in the decode loop) and under the memory plan's fake tensors (no values) the where stays
    if x.device.type == "cpu" and not isinstance(x, FakeTensor) and all_finite(x):
        return x.clamp_(0, 1)
    return torch.where(torch.isfinite(x), x.clamp(0, 1), torch.nan)


def all_finite(values) -> bool:
    """Whether every element of ``values`` (tensor or array) is finite, by one sum first: a nan or inf
    element makes the sum non-finite (inf + x = inf, inf - inf = nan, nan + x = nan), so a finite sum
    proves them all finite; only a sum that overflowed from finite values needs the elementwise test.
    On the CPU that is one pass instead of isfinite's several (and its boolean temporaries)."""
    if isinstance(values, torch.Tensor):
        return bool(torch.isfinite(values.sum())) or bool(torch.isfinite(values).all())
    with np.errstate(over="ignore", invalid="ignore"):  # the sum's overflow / inf - inf is the answer, no warning
        return bool(np.isfinite(values.sum())) or bool(np.isfinite(values).all())


def check_finite(values, stage: str, what: str = "frames"):
    """``values`` (tensor or array) unchanged, or FloatingPointError naming the stage that produced
    NaN / inf: a broken or overflowing model must not become a saved video (NaN quantizes to black)."""
    if not all_finite(values):
        raise FloatingPointError(f"{stage} produced non-finite {what} (nan/inf): the model overflowed or its weights "
                                 f"are broken (try dtype=torch.float32 or check the weights); nothing was saved")
    return values


def join_frames(chunks: Iterable[torch.Tensor]) -> torch.Tensor:
    """All chunks as one (F, H, W, 3) tensor: the whole-clip result (no copy for a single chunk)."""
    chunks = list(chunks)
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def quantize_frames(frames: np.ndarray) -> np.ndarray:
    """float frames in [0, 1] -> uint8, x * 255 rounded half to even (``GenerationResult.video``).
    One scratch buffer rounded in place: half the time of ``(x * 255).round().astype``, same bytes."""
    scaled = np.multiply(frames, 255, dtype=frames.dtype)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


# -- LTX-Video ---------------------------------------------------------------------------------------

def ltx_video_decode_inputs(vae, latents: torch.Tensor, *, decode_timestep: float, decode_noise_scale: float | None,
                            generator, device, model_dtype: torch.dtype):
    """``decode_latents``' steps before the VAE -> (z in the VAE's dtype, temb or None).

    With a timestep-conditioned decoder, noise is mixed in *after* denormalization (diffusers'
    LTX-Video order) with scale decode_noise_scale (default: decode_timestep).
    """
    z = vae.denormalize_latents(latents).to(model_dtype)
    temb = None
    if vae.config.timestep_conditioning:
        noise = randn(z.shape, generator, device, dtype=z.dtype)
        scale = decode_timestep if decode_noise_scale is None else decode_noise_scale
        temb = torch.tensor([decode_timestep], device=device, dtype=z.dtype)
        s = torch.tensor([scale], device=device, dtype=z.dtype)[:, None, None, None, None]
        z = (1 - s) * z + s * noise
    return z.to(next(vae.parameters()).dtype), temb


def ltx_video_frame_chunks(vae, latents: torch.Tensor, *, decode_timestep: float, decode_noise_scale: float | None,
                           generator, device, model_dtype: torch.dtype, tiling=None, height: int | None = None,
                           width: int | None = None) -> Iterator[torch.Tensor]:
    """Device chunks (n, H, W, 3) float32 in [0, 1] of ``decode_latents``, resized to
    (height, width) by ``resize_frames`` when given (bilinear works frame by frame, so chunks
    resize exactly like the whole clip)."""
    if (height is None) != (width is None):
        raise ValueError(f"height and width must be given together, got height={height!r}, width={width!r}")
    z, temb = ltx_video_decode_inputs(vae, latents, decode_timestep=decode_timestep,
                                      decode_noise_scale=decode_noise_scale, generator=generator, device=device,
                                      model_dtype=model_dtype)
    # 0.9.1 decoders inject noise: drawn from the generation's generator, as decode_latents does
    videos = vae.decode_frames(z, temb, generator=generator, tiling=tiling)
    return (_resized(video_to_frames(video), height, width) for video in videos)


def _resized(frames: torch.Tensor, height: int | None, width: int | None) -> torch.Tensor:
    return frames if height is None else resize_frames(frames, height, width)


def decode_latents_frames(vae, latents: torch.Tensor, *, decode_timestep: float, decode_noise_scale: float | None,
                          generator, device, model_dtype: torch.dtype, tiling=None, height: int | None = None,
                          width: int | None = None) -> Iterator[np.ndarray]:
    """``ltx_video_frame_chunks`` moved to the host: float32 (n, H, W, 3) numpy chunks in [0, 1]."""
    return _on_host(ltx_video_frame_chunks(vae, latents, decode_timestep=decode_timestep,
                                           decode_noise_scale=decode_noise_scale, generator=generator, device=device,
                                           model_dtype=model_dtype, tiling=tiling, height=height, width=width))


def decode_latents(vae, latents: torch.Tensor, *, decode_timestep: float, decode_noise_scale: float | None,
                   generator, device, model_dtype: torch.dtype, tiling=None) -> torch.Tensor:
    """Normalized latents -> frames (F, H, W, 3) float32 in [0, 1].

    With a timestep-conditioned decoder, noise is mixed in *after* denormalization (diffusers'
    LTX-Video order; Lightricks' original mixes before) with scale decode_noise_scale (default:
    decode_timestep) and the decoder is conditioned on decode_timestep.
    """
    return join_frames(ltx_video_frame_chunks(vae, latents, decode_timestep=decode_timestep,
                                              decode_noise_scale=decode_noise_scale, generator=generator,
                                              device=device, model_dtype=model_dtype, tiling=tiling))


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(F, h, w, 3) -> (F, height, width, 3), bilinear (Lightricks' multi-scale pipeline)."""
    if frames.shape[1:3] == (height, width):
        return frames
    x = F.interpolate(frames.permute(0, 3, 1, 2), size=(height, width), mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).clamp(0, 1).contiguous()


# -- LTX-2 -------------------------------------------------------------------------------------------

def ltx2_frame_chunks(vae, latents: torch.Tensor, *, decode_timestep=None, decode_noise_scale=None, generator=None,
                      tiling=None) -> Iterator[torch.Tensor]:
    """Device chunks (n, H, W, 3) float32 in [0, 1] of ``ltx2.stages.decode_video``: normalized
    latents through ``LTX2VideoVAE.decode_normalized_frames`` (decode timestep and noise scale
    only for a timestep-conditioned decoder; None means ltx-core's defaults)."""
    kw = {}
    if vae.config.timestep_conditioning:
        kw = dict(timestep=decode_timestep, noise_scale=decode_noise_scale)
    dtype = next(vae.parameters()).dtype
    videos = vae.decode_normalized_frames(latents.to(dtype), generator=generator, tiling=tiling, **kw)
    return (video_to_frames(video) for video in videos)


def decode_ltx2_frames(vae, latents: torch.Tensor, *, decode_timestep=None, decode_noise_scale=None, generator=None,
                       tiling=None) -> Iterator[np.ndarray]:
    """``ltx2_frame_chunks`` moved to the host: float32 (n, H, W, 3) numpy chunks in [0, 1]."""
    return _on_host(ltx2_frame_chunks(vae, latents, decode_timestep=decode_timestep,
                                      decode_noise_scale=decode_noise_scale, generator=generator, tiling=tiling))


def _on_host(chunks: Iterator[torch.Tensor]) -> Iterator[np.ndarray]:
    for chunk in chunks:
        # the device copy is dropped before the next tile is decoded
        yield check_finite(chunk.cpu().numpy(), "decode")


# -- to a file ---------------------------------------------------------------------------------------

def stream_to_file(chunks: Iterable[np.ndarray], path, fps, *, crf=18, audio=None, sample_rate: int | None = None,
                   keep: bool = True) -> np.ndarray | None:
    """Quantize float (n, H, W, 3) chunks in [0, 1] and encode them to ``path`` as they come
    (``VideoWriter``: H.264 mp4, ``audio`` muxed at the end, nothing left at ``path`` if anything
    fails, chunk production included). -> all frames concatenated (float32) if ``keep``, else None.
    """
    if not isinstance(keep, bool):
        raise ValueError(f"stream_to_file: keep must be a bool, got {keep!r}")
    kept = []
    with VideoWriter(path, fps, crf=crf, audio=audio, sample_rate=sample_rate) as writer:
        for i, chunk in enumerate(chunks):
            chunk = _check_float_chunk(chunk, i)
            writer.write(quantize_frames(chunk))
            if keep:
                kept.append(chunk)
    return np.concatenate(kept) if keep else None


def _check_float_chunk(chunk, index: int) -> np.ndarray:
    if isinstance(chunk, torch.Tensor):
        chunk = chunk.detach().cpu().numpy()
    chunk = np.asarray(chunk)
    if not np.issubdtype(chunk.dtype, np.floating) or chunk.ndim != 4 or chunk.shape[-1] != 3:
        raise ValueError(f"stream_to_file: chunk {index} must be float (n, H, W, 3) frames, got {chunk.dtype} "
                         f"{chunk.shape}")
    # uint8 conversion wraps around outside [0, 1]; NaN fails both comparisons
    if chunk.size and not (chunk.min() >= 0.0 and chunk.max() <= 1.0):
        raise ValueError(f"stream_to_file: chunk {index} must hold values in [0, 1], got range "
                         f"[{chunk.min()}, {chunk.max()}]")
    return chunk.astype(np.float32, copy=False)


def decode_or_stream(whole: Callable[[], torch.Tensor], chunks: Callable[[], Iterable[np.ndarray]], output, fps, *,
                     audio=None, sample_rate: int | None = None) -> np.ndarray:
    """The end of both families' generations -> float32 frames (F, H, W, 3) on the host: without
    ``output`` the whole clip (``whole()``, on the device) is checked finite; with one, the host
    chunks (``chunks()``) go to the mp4 as they are decoded, so device memory does not grow with
    the clip."""
    if output is None:
        return check_finite(whole().cpu().numpy(), "decode")
    return stream_to_file(chunks(), output, fps, audio=audio, sample_rate=sample_rate)
