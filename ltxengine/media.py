"""Video, audio and image files through PyAV. Writes go to a temporary file that is renamed into
place, so a failure never leaves a half-written output; ``VideoWriter`` encodes chunk by chunk."""

from __future__ import annotations

import math
import os
import re
import stat
import weakref
from fractions import Fraction
from io import BytesIO
from pathlib import Path

import numpy as np

# The sample rates an mp4's AAC track can carry: MPEG-4 Audio's sampling-frequency index table, which
# is what PyAV's AAC encoder lists (tests/test_media.py compares). A constant, so checking a request
# does not import PyAV (~50 ms on a first call).
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)

try:
    import fcntl  # flock marks a temporary file as being written (POSIX only)
except ImportError:  # pragma: no cover - Windows: no locks, so leftovers are never removed
    fcntl = None

__all__ = ["frame_rate_fraction", "write_mp4", "VideoWriter", "OutputPathError", "read_mp4", "read_audio", "read_media",
           "compress_image"]

# Full scale of the integer sample formats PyAV hands out (the planar variants add a "p").
_INT_FULL_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0}
# AAC (and MP3) frames overlap their neighbours, so the first frame decoded after a seek is wrong;
# decoding from this much earlier and dropping the excess gives the same samples as a full decode.
_SEEK_PREROLL_S = 1.0


# Frame rates an mp4 written here can carry and be read back at (libx264 in PyAV's mp4 muxer):
# above ~4000 fps the file holds no readable frames; 1/65534 fps, or terms of 2**31, fail in the
# muxer. 1000 fps covers high-speed footage; 1/1000 fps is one frame every ~17 minutes.
MIN_FRAME_RATE, MAX_FRAME_RATE = Fraction(1, 1000), Fraction(1000)
MAX_FRAME_RATE_TERM = 10**6  # largest numerator / denominator of an exact rate (30000/1001 needs 30000)


def frame_rate_fraction(value, name: str = "fps") -> Fraction:
    """A frame rate as an exact Fraction: a Fraction as is, 'num/den' strings parsed, numbers
    snapped to the nearest fraction with denominator <= 1001 (23.976... -> 24000/1001). It must
    lie in [MIN_FRAME_RATE, MAX_FRAME_RATE] with terms <= MAX_FRAME_RATE_TERM."""
    if isinstance(value, str):
        try:
            rate = Fraction(value)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{name} must be a positive number or 'num/den', got {value!r}") from None
    elif isinstance(value, Fraction):
        rate = value
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
            and math.isfinite(value):
        rate = Fraction(float(value))
    else:
        raise ValueError(f"{name} must be a positive number or 'num/den', got {value!r}")
    if rate <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    if not isinstance(value, (str, Fraction)):
        rate = rate.limit_denominator(1001)  # a tiny rate may snap to 0: out of range below
    if not MIN_FRAME_RATE <= rate <= MAX_FRAME_RATE:
        raise ValueError(f"{name} must be in [1/1000, 1000] frames per second (MIN_FRAME_RATE, MAX_FRAME_RATE: what "
                         f"an mp4 carries), got {value!r}")
    if max(rate.numerator, rate.denominator) > MAX_FRAME_RATE_TERM:
        raise ValueError(f"{name} must be a fraction whose numerator and denominator are at most "
                         f"{MAX_FRAME_RATE_TERM} (MAX_FRAME_RATE_TERM: the mp4 time base), got {value!r}")
    return rate


# ---------------------------------------------------------------- writing


def write_mp4(path, frames: np.ndarray, fps, crf: int = 18, audio=None, sample_rate: int | None = None) -> Path:
    """frames: uint8 (F, H, W, 3) RGB, H and W even (yuv420p), encoded with libx264 at ``crf``.

    ``audio``: float waveform (channels, samples), numpy or torch, 1 or 2 channels (mono is
    duplicated to stereo), at ``sample_rate`` Hz (LTX-2's vocoder: 24000); it becomes an AAC
    stereo stream. The audio is fitted to the video's duration F / fps: a longer waveform is
    trimmed, a shorter one padded with silence (LTX-2 audio lengths round to 1/25 s, so they differ
    from the video's by up to one audio-latent frame). Samples are clipped to [-1, 1] and stored
    as 16-bit before AAC encoding. Returns the written path. One ``VideoWriter`` chunk."""
    with _Mp4Writer(path, fps, crf=crf, audio=audio, sample_rate=sample_rate) as writer:
        writer.write(frames)
    return writer.path


def write_wav(path, audio, sample_rate: int) -> Path:
    """audio: float waveform (channels, samples), numpy or torch, 1 or 2 channels, at ``sample_rate``
    Hz -> a 16-bit PCM WAV (clipped to [-1, 1] and scaled by 32767 as ``write_mp4`` stores it). The
    file is written next to ``path`` and renamed onto it, as ``VideoWriter`` does. Returns the path."""
    import wave
    path, target = _output_path(path, "write_wav")
    wave_data = _audio_array(audio, sample_rate, "write_wav")
    pcm = (np.clip(wave_data, -1.0, 1.0) * 32767.0).astype("<i2")
    _remove_stale_parts(target)
    tmp, fd = _new_part(target)
    try:
        with open(tmp, "wb") as fh, wave.open(fh, "wb") as out:
            out.setnchannels(pcm.shape[0])
            out.setsampwidth(2)
            out.setframerate(int(sample_rate))
            out.writeframes(np.ascontiguousarray(pcm.T).tobytes())
        _keep_mode(tmp, target)
        os.replace(tmp, target)
    finally:
        _drop_part(tmp, fd)
    return path


class VideoWriter:
    """An H.264 (libx264, yuv420p) mp4 written chunk by chunk: ``write`` encodes uint8
    (n, H, W, 3) RGB frames as they come, so only the encoder holds frames.

    The container goes to a hidden temporary file ``.NAME.PID.RANDOM.part`` next to ``path``
    (created at the first frames) and is renamed onto ``path`` only by a clean ``close``; an
    exception inside ``with``, a failing ``close`` or ``abort()`` deletes it and leaves an existing
    file at ``path`` untouched. The writer holds a lock on its temporary file, so the next writer
    to the same name can tell a killed writer's leftover (unlocked) from a live one and removes it.
    A file replaced at ``path`` keeps its permission bits; a new one gets the umask's usual mode.
    A symlink at ``path`` is written through: the file it points to is replaced, the link stays.
    ``width`` / ``height`` fix the size up front (else the first chunk sets it); every chunk must
    match. ``audio`` / ``sample_rate`` are taken as ``write_mp4`` takes them and muxed at ``close``,
    fitted to the video's final duration; ``set_audio`` may provide them later, but before the
    first frames: the mp4 header lists every stream and the encoder may emit packets at once.
    """

    _name = "VideoWriter"  # prefix of error messages

    def __init__(self, path, fps, *, crf=18, width: int | None = None, height: int | None = None, audio=None,
                 sample_rate: int | None = None):
        self.path, self._target = _output_path(path, self._name)  # _target: path, or the file a link names
        self.fps = frame_rate_fraction(fps, f"{self._name}: fps")
        self.crf = _check_crf(crf, self._name)
        self._size = (_check_side(height, "height", self._name), _check_side(width, "width", self._name))
        self._size_source = "the given height and width"
        self.frames_written = 0
        self._state = "open"  # -> "closed" (renamed onto path) or "aborted" (nothing written)
        self._container = self._video = self._sound = self._tmp = self._lock = self._cleanup = None
        self._audio = self._sample_rate = None
        if audio is not None:
            self.set_audio(audio, sample_rate)
        elif sample_rate is not None:
            raise ValueError(f"{self._name}: sample_rate is only meaningful with audio, got "
                             f"sample_rate={sample_rate!r} and audio=None")

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def set_audio(self, audio, sample_rate: int) -> None:
        """The soundtrack, validated now and encoded at ``close``; only before the first frames."""
        self._check_state("set_audio")
        if self._container is not None:
            raise ValueError(f"{self._name}.set_audio: must be called before the first frames are written (the mp4 "
                             f"header lists every stream), got it after {self.frames_written} frames")
        waveform = _audio_array(audio, sample_rate, self._name)
        _check_aac_rate(sample_rate, self._name)
        self._audio, self._sample_rate = waveform, int(sample_rate)

    def write(self, frames) -> None:
        """Encode uint8 (n, H, W, 3) RGB frames (n may be 0). A failure in the encoder aborts."""
        self._check_state("write")
        frames = self._check_chunk(frames)
        if not len(frames):
            return
        try:
            if self._container is None:
                self._start()
            _encode_frames(self._container, self._video, frames)
        except BaseException:
            self.abort()
            raise
        self.frames_written += len(frames)

    def close(self) -> Path:
        """Flush the encoder, mux the audio, rename onto ``path``; -> path. Idempotent once closed."""
        if self._state == "closed":
            return self.path
        self._check_state("close")
        if self.frames_written == 0:
            self.abort()
            raise ValueError(f"{self._name}: no frames were written; an mp4 needs at least one frame")
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; ``path`` stays as it was. No-op once closed or aborted."""
        if self._state != "open":
            return
        self._state = "aborted"
        container, self._container = self._container, None
        try:
            if container is not None:
                container.close()
        except Exception:  # the partial file is deleted whatever state the muxer is in
            pass
        finally:
            if self._cleanup is not None:
                self._cleanup()  # deletes the temporary file

    # ---- internals
    def _check_state(self, what: str) -> None:
        if self._state != "open":
            raise ValueError(f"{self._name}.{what}: the writer is {self._state}")

    def _check_chunk(self, frames) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"{self._name}: frames must be uint8 (n, H, W, 3), got {frames.dtype} {frames.shape}")
        size = tuple(frames.shape[1:3])
        if size[0] % 2 or size[1] % 2:
            raise ValueError(f"{self._name}: height and width must be even for yuv420p, got {size}")
        expected = tuple(e if e is not None else s for e, s in zip(self._size, size))
        if size != expected:
            raise ValueError(f"{self._name}: every chunk must have {self._size_source} {expected} (H, W), got {size} "
                             f"after {self.frames_written} frames")
        if len(frames) and self._size != size:
            self._size, self._size_source = size, "the first chunk's height and width"
        return np.ascontiguousarray(frames)

    def _start(self) -> None:
        """Temporary file, container and streams (all of them before the first packet)."""
        import av

        _remove_stale_parts(self._target)
        self._tmp, self._lock = _new_part(self._target)
        # also removes the file if the writer is dropped without close() or abort()
        self._cleanup = weakref.finalize(self, _drop_part, self._tmp, self._lock)
        self._container = av.open(self._tmp, mode="w", format="mp4")
        self._video = _add_video_stream(self._container, self._size, self.fps, self.crf)
        self._sound = None if self._audio is None else _add_audio_stream(self._container, self._sample_rate)

    def _finish(self) -> None:
        container = self._container
        container.mux(self._video.encode())  # flush the encoder's delayed frames
        if self._sound is not None:
            pcm = _fit_audio(self._audio, self.frames_written, self.fps, self._sample_rate, self._name)
            _encode_audio(container, self._sound, pcm, self._sample_rate)
        self._container = None
        container.close()
        _keep_mode(self._tmp, self._target)
        os.replace(self._tmp, self._target)
        self._cleanup.detach()
        os.close(self._lock)


class _Mp4Writer(VideoWriter):
    _name = "write_mp4"


class OutputPathError(ValueError, OSError):
    """The output path cannot take a file (missing folder, a folder in the way). Also an OSError:
    before the checks moved to the start, these failures surfaced as OSErrors from the rename."""


def _output_path(path, where: str) -> tuple[Path, Path]:
    """-> (path, the file a write replaces: path itself, or the file a symlink at path names)."""
    try:
        path = Path(path)
    except TypeError:
        raise ValueError(f"{where}: path must be a str or path-like, got {path!r}") from None
    target = _link_target(path, where)
    via = "" if target == path else f" (path {str(path)!r} is a symlink to {str(target)!r})"
    if not target.parent.is_dir():
        raise OutputPathError(f"{where}: path's folder {str(target.parent)!r} does not exist{via}")
    if target.is_dir():
        raise OutputPathError(f"{where}: path {str(target)!r} is a folder, expected a file name{via}")
    return path, target


def _link_target(path: Path, where: str) -> Path:
    """A symlink is written through (the link stays and shows the new content, as ``open(path, "w")``
    would do), so the temporary file goes next to the file it names: a rename cannot cross folders."""
    if not path.is_symlink():
        return path
    try:
        return Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:  # a dangling link: the file it names is created
        return Path(os.path.realpath(path))
    except OSError as error:
        raise OutputPathError(f"{where}: path {str(path)!r} is a symlink that cannot be resolved "
                              f"({error.strerror})") from None


# ---- temporary files: "<folder>/.<name>.<pid>.<random>.part", flock-ed while their writer lives


def _part_pattern(name: str) -> re.Pattern:
    # the pid is optional and the random part allows "_": earlier versions named parts
    # ".<name>.<mkstemp's 8 characters>.part", and their leftovers are removed too
    return re.compile(re.escape(f".{name}.") + r"(?:\d+\.)?[a-z0-9_]+\.part")


def _new_part(target: Path) -> tuple[str, int]:
    """-> (path, fd holding an exclusive flock) of a new empty file next to ``target``, created
    with mode 0666 so the umask (and a default ACL) apply as for any new file."""
    while True:
        tmp = str(target.parent / f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.part")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        # A cleaner may have taken the unlocked file between open and flock and removed it: then
        # the name no longer leads to this file, and a fresh one is made.
        if not _try_lock(fd, blocking=True) or _same_file(fd, tmp):
            return tmp, fd
        os.close(fd)


def _drop_part(tmp: str, fd: int) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)  # releases the lock


def _remove_stale_parts(target: Path) -> None:
    """Delete the temporary files of earlier writers to ``target`` that nobody holds locked (their
    writer was killed). Best effort: a file that cannot be opened or locked is left alone."""
    if fcntl is None:
        return
    pattern = _part_pattern(target.name)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        if pattern.fullmatch(name):
            _remove_if_unlocked(str(target.parent / name))


def _remove_if_unlocked(part: str) -> None:
    try:
        fd = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # gone already, a symlink, or not ours to read
        return
    try:
        # only a regular file, still at that name, that no live writer holds
        if stat.S_ISREG(os.fstat(fd).st_mode) and _try_lock(fd, blocking=False) and _same_file(fd, part):
            os.unlink(part)
    except OSError:
        pass
    finally:
        os.close(fd)


def _try_lock(fd: int, blocking: bool) -> bool:
    """Exclusive flock on ``fd``: True when taken, False when another open file holds it or the
    file system has no locks (a writer then writes unlocked; a cleaner removes nothing)."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:  # EWOULDBLOCK: held; ENOLCK, EOPNOTSUPP, ...: no locks on this file system
        return False
    return True


def _same_file(fd: int, path: str) -> bool:
    try:
        there = os.lstat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _keep_mode(tmp: str, target: Path) -> None:
    """A file saved over keeps its permission bits (the new one was created with the umask's)."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return
    os.chmod(tmp, mode)


def _check_crf(crf, where: str):
    # libx264's crf is a float in [0, 51] for 8-bit output
    if isinstance(crf, bool) or not isinstance(crf, (int, float, np.integer, np.floating)) \
            or not 0 <= crf <= 51:
        raise ValueError(f"{where}: crf must be a number in [0, 51] (libx264, 8-bit), got {crf!r}")
    return crf


def _check_side(value, name: str, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0 or value % 2:
        raise ValueError(f"{where}: {name} must be a positive even integer (yuv420p) or None, got {value!r}")
    return int(value)


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


def _check_aac_rate(sample_rate: int, where: str) -> None:
    import av

    rates = av.codec.Codec("aac", "w").audio_rates
    if sample_rate not in rates:
        raise ValueError(f"{where}: sample_rate must be one AAC supports {sorted(rates)}, got {sample_rate}")


def _fit_audio(audio: np.ndarray, num_frames: int, fps: Fraction, sample_rate: int, where: str) -> np.ndarray:
    """-> int16 (2, n) with n = the video's duration in samples: trimmed or zero-padded, mono doubled."""
    n = round(num_frames * sample_rate / fps)  # exact: fps is a Fraction
    if n == 0:
        raise ValueError(f"{where}: the video ({num_frames} frames at {fps} fps) is shorter than one audio sample "
                         f"at {sample_rate} Hz")
    fitted = np.zeros((2, n), dtype=np.float32)
    fitted[:, : min(n, audio.shape[1])] = audio[:, :n]  # a (1, k) mono block broadcasts to both channels
    # Clip then scale by 32767, as ltx-pipelines does: +-1.0 maps to +-32767 without overflow.
    return (np.clip(fitted, -1.0, 1.0) * 32767.0).astype(np.int16)


def _add_video_stream(container, size: tuple[int, int], rate: Fraction, crf):
    stream = container.add_stream("libx264", rate=rate)
    stream.height, stream.width = size
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": str(crf)}
    return stream


def _add_audio_stream(container, sample_rate: int):
    stream = container.add_stream("aac", rate=sample_rate)
    stream.codec_context.layout = "stereo"
    stream.codec_context.time_base = Fraction(1, sample_rate)
    return stream


def _encode_frames(container, stream, frames: np.ndarray) -> None:
    import av

    for frame in frames:
        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))


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
