"""Video, audio and image files through PyAV. Writes go to a temporary file that is renamed into
place, so a failure never leaves a half-written output."""

from __future__ import annotations

import math
import os
import tempfile
from fractions import Fraction
from io import BytesIO
from pathlib import Path

import numpy as np

__all__ = ["frame_rate_fraction", "write_mp4", "read_mp4", "read_audio", "read_media", "compress_image"]

# Full scale of the integer sample formats PyAV hands out (the planar variants add a "p").
_INT_FULL_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0}
# AAC (and MP3) frames overlap their neighbours, so the first frame decoded after a seek is wrong;
# decoding from this much earlier and dropping the excess gives the same samples as a full decode.
_SEEK_PREROLL_S = 1.0


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


# ---------------------------------------------------------------- writing


def write_mp4(path, frames: np.ndarray, fps, crf: int = 18, audio=None, sample_rate: int | None = None) -> Path:
    """frames: uint8 (F, H, W, 3) RGB, H and W even (yuv420p), encoded with libx264 at ``crf``.

    ``audio``: float waveform (channels, samples), numpy or torch, 1 or 2 channels (mono is
    duplicated to stereo), at ``sample_rate`` Hz (LTX-2's vocoder: 24000); it becomes an AAC
    stereo stream. The audio is fitted to the video's duration F / fps: a longer waveform is
    trimmed, a shorter one padded with silence (LTX-2 audio lengths round to 1/25 s, so they differ
    from the video's by up to one audio-latent frame). Samples are clipped to [-1, 1] and stored
    as 16-bit before AAC encoding. Returns the written path."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_mp4: frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"write_mp4: height and width must be even for yuv420p, got {frames.shape[1:3]}")
    rate = frame_rate_fraction(fps, "write_mp4: fps")
    pcm = None
    if audio is not None:
        pcm = _fit_audio(_audio_array(audio, sample_rate, "write_mp4"), len(frames), rate, sample_rate)
    elif sample_rate is not None:
        raise ValueError(f"write_mp4: sample_rate is only meaningful with audio, got sample_rate={sample_rate!r} "
                         "and audio=None")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=path.parent if path.parent.exists() else None)
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            # every stream must exist before the first packet is muxed (that writes the header)
            video = _add_video_stream(container, frames, rate, crf)
            sound = None if pcm is None else _add_audio_stream(container, sample_rate)
            _encode_video(container, video, frames)
            if sound is not None:
                _encode_audio(container, sound, pcm, sample_rate)
        # mkstemp creates 0600; give the file the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _audio_array(audio, sample_rate, where: str) -> np.ndarray:
    """Validated float32 (channels, samples) copy of a numpy or torch waveform."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"{where}: sample_rate must be a positive integer (Hz) when audio is given, "
                         f"got {sample_rate!r}")
    if hasattr(audio, "detach"):  # a torch tensor; converted without importing torch here
        if not audio.is_floating_point():
            raise ValueError(f"{where}: audio must be floating point in [-1, 1], got {audio.dtype}")
        audio = audio.detach().float().cpu().numpy()
    audio = np.asarray(audio)
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"{where}: audio must be floating point in [-1, 1], got {audio.dtype}")
    if audio.ndim != 2 or audio.shape[0] not in (1, 2) or audio.shape[1] == 0:
        raise ValueError(f"{where}: audio must be (channels, samples) with 1 or 2 channels and at least one "
                         f"sample, got shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise ValueError(f"{where}: audio must be finite (found NaN or inf)")
    return audio.astype(np.float32)


def _fit_audio(audio: np.ndarray, num_frames: int, fps: Fraction, sample_rate: int) -> np.ndarray:
    """-> int16 (2, n) with n = the video's duration in samples: trimmed or zero-padded, mono doubled."""
    import av

    if sample_rate not in av.codec.Codec("aac", "w").audio_rates:
        raise ValueError(f"write_mp4: sample_rate must be one AAC supports "
                         f"{sorted(av.codec.Codec('aac', 'w').audio_rates)}, got {sample_rate}")
    n = round(num_frames * sample_rate / fps)  # exact: fps is a Fraction
    if n == 0:
        raise ValueError(f"write_mp4: audio needs a video of at least one frame, got {num_frames} frames")
    fitted = np.zeros((2, n), dtype=np.float32)
    fitted[:, : min(n, audio.shape[1])] = audio[:, :n]  # a (1, k) mono block broadcasts to both channels
    # Clip then scale by 32767, as ltx-pipelines does: +-1.0 maps to +-32767 without overflow.
    return (np.clip(fitted, -1.0, 1.0) * 32767.0).astype(np.int16)


def _add_video_stream(container, frames: np.ndarray, rate: Fraction, crf: int):
    stream = container.add_stream("libx264", rate=rate)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": str(crf)}
    return stream


def _add_audio_stream(container, sample_rate: int):
    stream = container.add_stream("aac", rate=sample_rate)
    stream.codec_context.layout = "stereo"
    stream.codec_context.time_base = Fraction(1, sample_rate)
    return stream


def _encode_video(container, stream, frames: np.ndarray) -> None:
    import av

    for frame in frames:
        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def _encode_audio(container, stream, pcm: np.ndarray, sample_rate: int) -> None:
    """int16 (2, n) -> AAC packets starting at time 0."""
    import av

    # one packed s16 frame holding the whole waveform; the resampler converts it to the encoder's
    # sample format (planar float for FFmpeg's AAC) and PyAV cuts it into codec-sized frames
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm.T).reshape(1, -1), format="s16", layout="stereo")
    frame.sample_rate, frame.pts, frame.time_base = sample_rate, 0, Fraction(1, sample_rate)
    resampler = av.AudioResampler(format=stream.codec_context.format or "fltp", layout="stereo", rate=sample_rate)
    for converted in resampler.resample(frame) + resampler.resample(None):
        container.mux(stream.encode(converted))
    container.mux(stream.encode())


# ---------------------------------------------------------------- reading


def read_mp4(path) -> tuple[np.ndarray, Fraction]:
    """-> (uint8 frames (F, H, W, 3), average frame rate)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, Fraction(stream.average_rate)


def read_media(path) -> tuple[np.ndarray, Fraction, np.ndarray | None, int | None]:
    """-> (frames, fps) as ``read_mp4`` plus (waveform, sample_rate) as ``read_audio``, or
    (None, None) for those when the file has no audio stream."""
    import av

    frames, fps = read_mp4(path)
    with av.open(str(path)) as container:
        has_audio = len(container.streams.audio) > 0
    if not has_audio:
        return frames, fps, None, None
    waveform, sample_rate = read_audio(path)
    return frames, fps, waveform, sample_rate


def read_audio(path, start: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, int]:
    """The first audio stream of any container PyAV reads (mp4, m4a, wav, mp3, ...) ->
    (float32 waveform (channels, samples), sample rate), from ``start`` seconds (counted from the
    stream's first sample) for ``duration`` seconds (to the end when None; less when the audio ends
    first).

    Integer samples are scaled to [-1, 1) (unsigned 8-bit around its midpoint 128); float samples
    are returned as decoded (a lossy codec may overshoot +-1 slightly). A lossy stream may end with
    up to one codec frame of the encoder's padding (AAC: 1024 samples of near-silence)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_audio: path {str(path)!r} does not exist or is not a file")
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not math.isfinite(start) or start < 0:
        raise ValueError(f"read_audio: start must be a finite number of seconds >= 0, got {start!r}")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                 or not math.isfinite(duration) or duration <= 0):
        raise ValueError(f"read_audio: duration must be a positive number of seconds or None, got {duration!r}")
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError(f"read_audio: {str(path)!r} has no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        first = round(start * rate)
        stop = None if duration is None else first + round(duration * rate)
        seek = start > _SEEK_PREROLL_S
        begin, chunks, end = _decode_from(container, stream, first, stop, seek)
    if seek and (begin > first or not chunks):  # seeked past the target (or the end): decode from the start
        with av.open(str(path)) as container:
            begin, chunks, end = _decode_from(container, container.streams.audio[0], first, stop, False)
    if not chunks or end <= first:
        raise ValueError(f"read_audio: start={start} s is at or beyond the end of the audio in {str(path)!r} "
                         f"({end / rate:.3f} s long)")
    # begin > first only if the stream's first frame comes after its declared start: count from it
    waveform = np.concatenate(chunks, axis=1)[:, max(first - begin, 0):]
    return (waveform if stop is None else waveform[:, : stop - first]), rate


def _decode_from(container, stream, first: int, stop: int | None, seek: bool):
    """Decode frames overlapping samples [first, stop) -> (sample index of the first kept frame,
    float32 chunks, index one past the last decoded sample)."""
    rate = stream.codec_context.sample_rate
    origin = stream.start_time or 0  # times count from the stream's first sample
    if seek:  # a fresh container is at the start already; seeking to 0 could upset priming skips
        container.seek(origin + int((first / rate - _SEEK_PREROLL_S) / stream.time_base), stream=stream)
    begin, chunks, pos = None, [], None
    for frame in container.decode(stream):
        if frame.sample_rate != rate:
            raise ValueError(f"read_audio: the sample rate changes within the stream ({rate} -> "
                             f"{frame.sample_rate} Hz); convert the file to one rate first")
        if pos is None:  # later frames are taken as contiguous, as decoders deliver them
            pos = 0 if frame.pts is None else round((frame.pts - origin) * frame.time_base * rate)
        if pos + frame.samples > first:
            begin = pos if begin is None else begin
            chunks.append(_frame_to_float(frame))
        pos += frame.samples
        if stop is not None and pos >= stop:
            break
    return (first if begin is None else begin), chunks, (0 if pos is None else pos)


def _frame_to_float(frame) -> np.ndarray:
    """A decoded AudioFrame in any planar or packed int/float format -> float32 (channels, samples)."""
    name = frame.format.name
    base = name[:-1] if frame.format.is_planar else name
    data = frame.to_ndarray()  # planar: (channels, samples); packed: (1, samples * channels) interleaved
    if not frame.format.is_planar:
        data = data.reshape(-1, len(frame.layout.channels)).T
    if base in ("flt", "dbl"):
        return data.astype(np.float32)
    if base not in _INT_FULL_SCALE:
        raise ValueError(f"read_audio: unsupported sample format {name!r}")
    offset = 128.0 if base == "u8" else 0.0  # unsigned 8-bit PCM is centred on 128
    return ((data.astype(np.float64) - offset) / _INT_FULL_SCALE[base]).astype(np.float32)


# ---------------------------------------------------------------- image round trip


def compress_image(image: np.ndarray, crf: int) -> np.ndarray:
    """The lossy round trip LTX-2 applies to conditioning images: encode one uint8 (H, W, 3) RGB
    frame with libx264 at ``crf`` (yuv420p, preset veryfast) and decode it back.

    yuv420p needs even sizes, so an odd height or width loses its last row or column (as in
    ltx-pipelines): the result is (H // 2 * 2, W // 2 * 2, 3). ``crf=0`` returns ``image`` itself,
    untouched and uncropped. Default strength for LTX-2.0 conditioning: crf 33."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"compress_image: image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise ValueError(f"compress_image: crf must be an integer in [0, 51] (libx264, 8-bit), got {crf!r}")
    if crf == 0:
        return image
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"compress_image: image must be at least 2x2 for yuv420p, got {image.shape[:2]}")
    even = np.ascontiguousarray(image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2])
    with BytesIO() as buffer:
        _encode_still(buffer, even, int(crf))
        buffer.seek(0)
        return _decode_still(buffer)


def _encode_still(buffer, image: np.ndarray, crf: int) -> None:
    import av

    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.height, stream.width = image.shape[:2]
        # The RGB -> yuv420p conversion is done here (swscale defaults) rather than by the encoder
        # setup, the same call ltx-pipelines and diffusers make, so the results match bit for bit.
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _decode_still(buffer) -> np.ndarray:
    import av

    with av.open(buffer) as container:
        frame = next(container.decode(container.streams.video[0]))
        return frame.to_ndarray(format="rgb24")
