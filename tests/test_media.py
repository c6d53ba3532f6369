"""ltxengine.media (mp4 with AAC audio, audio reading, the conditioning-image CRF round trip) and
ltxengine.ltx2.audio_input (audio conditioning latents).

Oracles: ltx-pipelines' media_io.preprocess and diffusers' apply_image_conditioning_crf (same
libx264 through the same PyAV, so bit-exact); ltx-core's AudioEncoder (same weights) plus its
AudioLatentShape / AudioPatchifier for the audio conditioning, from the mel onwards (ltx-core's mel
front-end needs torchaudio; ours is checked against numpy in tests/models/test_audio_vae.py)."""

import math
import os
import signal
import stat
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from ltxengine import media
from ltxengine.engine import GenerationResult
from ltxengine.media import VideoWriter, compress_image, read_audio, read_media, read_mp4, write_mp4
from ltxengine.models.audio_vae import AudioVAE, AudioVAEConfig
from ltxengine.ltx2.audio_input import audio_latent_frames, load_audio_condition

from .helpers import assert_close_scaled, perturb_
from .models.audio_vae_fixtures import CASES, REL_TOL, original_header, to_original
from .oracles import ltx_core, ltx_pipelines

pytestmark = pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN:UserWarning")

SR = 24000  # LTX-2's vocoder rate
FPS = 24
N_FRAMES = 9
VIDEO_SAMPLES = N_FRAMES * SR // FPS  # 9000: 0.375 s
AAC_FRAME = 1024  # samples per AAC frame: the granularity of the encoded stream's length


@pytest.fixture(autouse=True)
def _plain_cpu_convs():
    """oneDNN builds a kernel per new conv shape; the native CPU convs keep the file fast."""
    with torch.backends.mkldnn.flags(enabled=False):
        yield


def _frames(n=N_FRAMES, size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _tones(samples, rate=SR, freqs=(440.0, 660.0), amp=0.5):
    t = np.arange(samples) / rate
    return np.stack([amp * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)


def _corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


def _audio_info(path):
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return (stream.codec_context.name, stream.codec_context.sample_rate, len(stream.layout.channels),
                stream.duration * stream.time_base)


# ---------------------------------------------------------------- write_mp4 with audio


def test_aac_rates_are_pyav_encoders():
    # requests are checked against the constant (no PyAV import); the writer against PyAV's encoder itself
    assert media.AAC_RATES == tuple(sorted(av.codec.Codec("aac", "w").audio_rates))


def test_mp4_with_audio_round_trip(tmp_path):
    wave = _tones(VIDEO_SAMPLES)
    path = write_mp4(tmp_path / "av.mp4", _frames(), FPS, audio=wave, sample_rate=SR)
    frames, fps, back, rate = read_media(path)
    assert frames.shape == (N_FRAMES, 64, 64, 3) and fps == FPS
    codec, stream_rate, channels, seconds = _audio_info(path)
    assert (codec, stream_rate, channels, rate) == ("aac", SR, 2, SR)
    # the stream's declared length and the decoded length are the video's, to within one AAC frame
    assert abs(seconds - Fraction(N_FRAMES, FPS)) <= Fraction(AAC_FRAME, SR)
    assert back.dtype == np.float32 and back.shape[0] == 2 and abs(back.shape[1] - VIDEO_SAMPLES) <= AAC_FRAME
    # AAC at its default 128 kb/s is lossy: a 0.5-amplitude tone decodes with correlation > 0.99
    # (measured 0.9995, the encoder's priming delay removed); each channel keeps its own tone.
    n = VIDEO_SAMPLES
    assert _corr(back[0, :n], wave[0]) > 0.99 and _corr(back[1, :n], wave[1]) > 0.99
    assert abs(_corr(back[0, :n], wave[1])) < 0.1  # control: the other channel's tone is uncorrelated
    # the frames are the same as read_mp4's
    assert np.array_equal(read_mp4(path)[0], frames)


def test_mp4_audio_is_fitted_to_the_video(tmp_path):
    long = _tones(3 * VIDEO_SAMPLES)
    short = _tones(VIDEO_SAMPLES // 2)
    for name, wave in (("long", long), ("short", short)):
        path = write_mp4(tmp_path / f"{name}.mp4", _frames(), FPS, audio=wave, sample_rate=SR)
        assert abs(_audio_info(path)[3] - Fraction(N_FRAMES, FPS)) <= Fraction(AAC_FRAME, SR)
        back, _ = read_audio(path)
        assert abs(back.shape[1] - VIDEO_SAMPLES) <= AAC_FRAME
    # the short one: tone (RMS 0.35) then silence, past the codec's transition frame
    half = VIDEO_SAMPLES // 2
    assert np.sqrt(np.mean(back[:, : half - AAC_FRAME] ** 2)) > 0.3
    assert np.abs(back[:, half + AAC_FRAME:]).max() < 0.01


def test_mp4_mono_audio_becomes_stereo_and_tensors_work(tmp_path):
    mono = _tones(VIDEO_SAMPLES, freqs=(440.0,))
    path = write_mp4(tmp_path / "mono.mp4", _frames(), FPS, audio=mono, sample_rate=SR)
    assert _audio_info(path)[2] == 2
    back, _ = read_audio(path)
    for c in range(2):
        assert _corr(back[c, :VIDEO_SAMPLES], mono[0]) > 0.99
    # identical inputs give near-identical channels: they differ by AAC coding noise only
    # (measured 1.2e-3 on a 0.5-amplitude tone); a silent or different channel would differ by ~0.5
    assert np.abs(back[0] - back[1]).max() < 1e-2
    # a torch tensor (any float dtype, any device) encodes exactly as the same numpy array
    tensor_path = write_mp4(tmp_path / "tensor.mp4", _frames(), FPS, audio=torch.from_numpy(mono), sample_rate=SR)
    assert np.array_equal(read_audio(tensor_path)[0], back)


@pytest.mark.parametrize("audio, rate, match", [
    (np.zeros((3, 100), np.float32), SR, r"1 or 2 channels.*\(3, 100\)"),
    (np.zeros(100, np.float32), SR, r"\(channels, samples\).*\(100,\)"),
    (np.zeros((2, 0), np.float32), SR, r"at least one sample.*\(2, 0\)"),
    (np.zeros((2, 100), np.int16), SR, "floating point.*int16"),
    (torch.zeros(2, 100, dtype=torch.int32), SR, "floating point.*int32"),
    (np.full((2, 100), np.nan, np.float32), SR, "finite"),
    (np.zeros((2, 100), np.float32), None, "sample_rate must be a positive integer.*None"),
    (np.zeros((2, 100), np.float32), 0, "sample_rate must be a positive integer.*0"),
    (np.zeros((2, 100), np.float32), 24000.0, "sample_rate must be a positive integer.*24000.0"),
    (np.zeros((2, 100), np.float32), True, "sample_rate must be a positive integer.*True"),
    (np.zeros((2, 100), np.float32), 12345, "sample_rate must be one AAC supports.*12345"),
    (None, SR, "sample_rate is only meaningful with audio"),
])
def test_mp4_bad_audio_leaves_no_file(tmp_path, audio, rate, match):
    target = tmp_path / "out.mp4"
    with pytest.raises(ValueError, match=match):
        write_mp4(target, _frames(2, 16), FPS, audio=audio, sample_rate=rate)
    assert list(tmp_path.iterdir()) == []
    # an existing file at the target is left as it was
    target.write_bytes(b"keep me")
    with pytest.raises(ValueError, match=match):
        write_mp4(target, _frames(2, 16), FPS, audio=audio, sample_rate=rate)
    assert target.read_bytes() == b"keep me" and list(tmp_path.iterdir()) == [target]


def test_mp4_failure_while_encoding_audio_leaves_no_file(tmp_path, monkeypatch):
    """A failure after the video is muxed into the temporary file removes it."""
    def broken(*args):
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(media, "_encode_audio", broken)
    target = tmp_path / "out.mp4"
    target.write_bytes(b"keep me")
    with pytest.raises(RuntimeError, match="encoder exploded"):
        write_mp4(target, _frames(2, 16), FPS, audio=_tones(2000), sample_rate=SR)
    assert target.read_bytes() == b"keep me" and list(tmp_path.iterdir()) == [target]


# ---------------------------------------------------------------- saving over files, leftovers


_KILLED_WRITER = """
import sys, numpy as np
from ltxengine.media import VideoWriter
writer = VideoWriter(sys.argv[1], 24)
writer.write(np.zeros((2, 16, 16, 3), np.uint8))
print("writing", flush=True)
sys.stdin.read()  # killed here, mid-write
"""


def _parts(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".part"))


def _killed_writer_part(target):
    """The temporary file a writer leaves when it is killed with SIGKILL mid-write."""
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "writing\n", proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    (part,) = _parts(target.parent)
    assert part.startswith(f".{target.name}.{proc.pid}.")  # the writer's pid, for whoever looks
    return part


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals and flock")
def test_next_writer_removes_a_killed_writers_part_but_not_a_live_one(tmp_path):
    target = tmp_path / "out.mp4"
    dead = _killed_writer_part(target)
    old_format = tmp_path / ".out.mp4.k2j_x9ab.part"  # a leftover of the mkstemp names used before
    old_format.write_bytes(b"stale")
    other = tmp_path / ".other.mp4.1.abcd.part"  # another output's leftover is not this writer's business
    other.write_bytes(b"stale")
    live = VideoWriter(target, FPS)
    live.write(_frames(2, 16))  # holds its part (locked) in this process
    live_part = (set(_parts(tmp_path)) - {dead, old_format.name, other.name}).pop()
    with VideoWriter(target, FPS) as writer:
        writer.write(_frames(2, 16))
        parts = _parts(tmp_path)
        assert dead not in parts and old_format.name not in parts
        assert live_part in parts and other.name in parts and len(parts) == 3  # live, other, this writer's
    live.close()
    assert sorted(os.listdir(tmp_path)) == [other.name, "out.mp4"]
    assert len(read_mp4(target)[0]) == 2


def test_writer_remakes_its_part_when_a_cleaner_takes_it_before_the_lock(tmp_path, monkeypatch):
    """Between creating its file and locking it, a writer's part looks stale to a cleaner in another
    process; if the cleaner removed it, the writer makes a fresh one instead of writing unlocked."""
    real_lock, removed = media._try_lock, []

    def cleaner_first(fd, blocking):
        if blocking and not removed:
            (part,) = _parts(tmp_path)
            os.unlink(tmp_path / part)
            removed.append(part)
        return real_lock(fd, blocking)

    monkeypatch.setattr(media, "_try_lock", cleaner_first)
    with VideoWriter(tmp_path / "out.mp4", FPS) as writer:
        writer.write(_frames(2, 16))
        (part,) = _parts(tmp_path)
        assert removed and part != removed[0]
    assert os.listdir(tmp_path) == ["out.mp4"] and len(read_mp4(tmp_path / "out.mp4")[0]) == 2


@pytest.fixture
def _umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_saving_over_a_file_keeps_its_mode_and_a_new_file_gets_the_umasks(tmp_path, _umask_027):
    fresh = write_mp4(tmp_path / "new.mp4", _frames(2, 16), FPS)
    assert _mode(fresh) == 0o666 & ~0o027  # as open() makes it, not a temporary file's 0600
    private = tmp_path / "private.mp4"
    private.write_bytes(b"old")
    private.chmod(0o600)
    write_mp4(private, _frames(2, 16), FPS)
    assert _mode(private) == 0o600 and len(read_mp4(private)[0]) == 2
    private.chmod(0o604)  # the streaming writer and result.save go the same way
    with VideoWriter(private, FPS) as writer:
        writer.write(_frames(3, 16))
    assert _mode(private) == 0o604 and len(read_mp4(private)[0]) == 3
    result = GenerationResult(frames=np.zeros((2, 16, 16, 3), np.float32), video=_frames(2, 16),
                              latents=torch.zeros(1), fps=Fraction(FPS))
    private.chmod(0o640)
    assert result.save(private) == private and _mode(private) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["new.mp4", "private.mp4"]


def test_saving_to_a_symlink_writes_through_it(tmp_path, _umask_027):
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "real.mp4"
    real.write_bytes(b"old")
    real.chmod(0o600)
    link = tmp_path / "link.mp4"
    link.symlink_to(real)
    assert write_mp4(link, _frames(2, 16), FPS) == link
    assert link.is_symlink() and os.readlink(link) == str(real)  # the link stays, pointing where it did
    assert _mode(real) == 0o600 and len(read_mp4(real)[0]) == 2
    assert os.listdir(tmp_path / "store") == ["real.mp4"]  # the temporary file went next to the target
    chain = tmp_path / "chain.mp4"  # a link to a link: the last file is replaced
    chain.symlink_to(link)
    with VideoWriter(chain, FPS) as writer:
        writer.write(_frames(3, 16))
    assert chain.is_symlink() and link.is_symlink() and len(read_mp4(real)[0]) == 3
    dangling = tmp_path / "dangling.mp4"  # creates the file it names, as open(path, "w") would
    dangling.symlink_to(tmp_path / "store" / "made.mp4")
    write_mp4(dangling, _frames(2, 16), FPS)
    assert dangling.is_symlink() and _mode(tmp_path / "store" / "made.mp4") == 0o640
    assert sorted(os.listdir(tmp_path)) == ["chain.mp4", "dangling.mp4", "link.mp4", "store"]


def test_symlink_errors_name_the_link_and_its_target(tmp_path):
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    to_folder = tmp_path / "folder.mp4"
    to_folder.symlink_to(tmp_path)
    nowhere = tmp_path / "nowhere.mp4"
    nowhere.symlink_to(tmp_path / "missing" / "x.mp4")
    for path, match in [(loop, r"write_mp4: path '.*loop.mp4' is a symlink that cannot be resolved"),
                        (to_folder, r"is a folder, expected a file name \(path '.*folder.mp4' is a symlink to"),
                        (nowhere, r"path's folder '.*missing' does not exist \(path '.*nowhere.mp4' is a symlink")]:
        with pytest.raises(media.OutputPathError, match=match):
            write_mp4(path, _frames(2, 16), FPS)
    assert sorted(os.listdir(tmp_path)) == ["folder.mp4", "loop.mp4", "nowhere.mp4"]


# ---------------------------------------------------------------- read_audio


def _write_wav(path, wave, rate, codec, fmt):
    """Packed PCM through PyAV (what a WAV file holds; the decoder hands back the same packed format)."""
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.codec_context.layout = "stereo" if wave.shape[0] == 2 else "mono"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave.T).reshape(1, -1), format=fmt,
                                           layout=stream.codec_context.layout.name)
        frame.sample_rate, frame.pts = rate, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize("codec, fmt, to_int, tol", [
    ("pcm_s16le", "s16", lambda x: np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16), 1 / 32768),
    ("pcm_s32le", "s32", lambda x: np.clip(np.round(x * 2.0 ** 31), -2 ** 31, 2 ** 31 - 1).astype(np.int32), 1e-7),
    ("pcm_u8", "u8", lambda x: np.clip(np.round(x * 128) + 128, 0, 255).astype(np.uint8), 1 / 128),
    ("pcm_f32le", "flt", lambda x: x.astype(np.float32), 1e-7),
    ("pcm_f64le", "dbl", lambda x: x.astype(np.float64), 1e-7),
])
def test_read_audio_packed_formats(tmp_path, codec, fmt, to_int, tol):
    """Each format scaled to [-1, 1]. Tolerance: one quantization step (+1.0 is one step above the
    largest integer code), float32 rounding for s32 and the float formats."""
    rate = 8000
    wave = _tones(3 * rate, rate, amp=0.9).astype(np.float64)
    wave[0, :4] = [-1.0, 1.0, 0.0, -0.5]  # full scale both ways and the midpoint (u8's 128)
    path = _write_wav(tmp_path / f"{fmt}.wav", to_int(wave), rate, codec, fmt)
    back, back_rate = read_audio(path)
    assert back_rate == rate and back.dtype == np.float32 and back.shape == wave.shape
    err = np.abs(back - wave).max()
    assert err <= tol, err
    # start / duration cut exact sample ranges (start > 1 s also goes through the seek path)
    for start, duration in ((0.25, 0.5), (1.7, None), (2.5, 10.0)):
        cut, _ = read_audio(path, start, duration)
        first = round(start * rate)
        expected = back[:, first:] if duration is None else back[:, first:first + round(duration * rate)]
        assert np.array_equal(cut, expected), (start, duration)


@pytest.mark.parametrize("fmt, scale, offset", [("s16p", 32768.0, 0.0), ("s32p", 2147483648.0, 0.0),
                                                ("u8p", 128.0, 128.0), ("fltp", 1.0, 0.0), ("dblp", 1.0, 0.0)])
def test_planar_frames_to_float(fmt, scale, offset):
    dtype = {"s16p": np.int16, "s32p": np.int32, "u8p": np.uint8, "fltp": np.float32, "dblp": np.float64}[fmt]
    data = (np.arange(10).reshape(2, 5) * 7 + (3 if fmt == "u8p" else -20)).astype(dtype)
    frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="stereo")
    out = media._frame_to_float(frame)
    assert out.dtype == np.float32 and out.shape == (2, 5)
    np.testing.assert_allclose(out, (data.astype(np.float64) - offset) / scale, rtol=1e-6)
    # the packed twin gives the same (channels, samples) array
    packed = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.T).reshape(1, -1), format=fmt[:-1],
                                        layout="stereo")
    assert np.array_equal(media._frame_to_float(packed), out)


def test_read_audio_after_seek_matches_full_decode(tmp_path):
    """AAC (planar float) from start > 1 s is decoded after a seek with a 1 s pre-roll. Tones only:
    AAC's noise substitution draws fresh noise after a seek, so noisy content does not repeat. The
    decoder's state converges within the pre-roll to ~2e-5 (measured); 1e-3 is far below an
    off-by-one-frame error (~1)."""
    wave = _tones(3 * SR)
    path = write_mp4(tmp_path / "long.mp4", _frames(72, 16), FPS, audio=wave, sample_rate=SR)
    full, _ = read_audio(path)
    for start in (1.3, 2.0417):
        cut, _ = read_audio(path, start, 0.5)
        expected = full[:, round(start * SR):][:, : SR // 2]
        assert cut.shape == expected.shape
        assert np.abs(cut - expected).max() < 1e-3, start


@pytest.mark.skipif("libmp3lame" not in av.codecs_available, reason="PyAV built without an MP3 encoder")
def test_read_audio_mp3(tmp_path):
    """MP3 (planar float from the decoder) with LAME's gapless header: the decoded length is exact
    and a tone correlates > 0.999 (measured 0.999999); after a seek (start > 1 s) the samples equal
    a full decode's to 1e-3 (measured 0)."""
    rate, wave = 24000, _tones(2 * 24000)
    with av.open(str(tmp_path / "t.mp3"), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate)
        stream.codec_context.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    full, back_rate = read_audio(tmp_path / "t.mp3")
    assert back_rate == rate and full.shape == wave.shape
    assert _corr(full[0], wave[0]) > 0.999 and _corr(full[1], wave[1]) > 0.999
    cut, _ = read_audio(tmp_path / "t.mp3", 1.25, 0.5)
    assert np.abs(cut - full[:, 30000:42000]).max() < 1e-3


def test_read_audio_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_audio(tmp_path / "missing.wav")
    video_only = write_mp4(tmp_path / "silent.mp4", _frames(2, 16), FPS)
    with pytest.raises(ValueError, match="no audio stream"):
        read_audio(video_only)
    assert read_media(video_only)[2:] == (None, None)
    wav = _write_wav(tmp_path / "a.wav", np.zeros((1, 800), np.int16), 8000, "pcm_s16le", "s16")
    with pytest.raises(ValueError, match=r"start=0.1 s is at or beyond the end.*0.100 s long"):
        read_audio(wav, 0.1)
    with pytest.raises(ValueError, match=r"start=5.0 s is at or beyond the end"):
        read_audio(wav, 5.0)  # through the seek path
    for bad in (-0.5, float("nan"), "1"):
        with pytest.raises(ValueError, match="start must be a finite number"):
            read_audio(wav, bad)
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="duration must be a positive number"):
            read_audio(wav, 0.0, bad)
    mono, rate = read_audio(wav)
    assert mono.shape == (1, 800) and rate == 8000


# ---------------------------------------------------------------- compress_image


def _image(h, w, seed=0):
    """Smooth gradients plus noise: content where CRF 33 visibly changes pixels."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) * 127 / max(h + w - 2, 1)], -1)
    noise = np.random.default_rng(seed).normal(0, 20, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(64, 96), (33, 47), (2, 2), (3, 5)])
@pytest.mark.parametrize("crf", [33, 18])
def test_compress_image_bit_exact_vs_ltx_pipelines_and_diffusers(shape, crf):
    preprocess = ltx_pipelines("utils.media_io").preprocess
    from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf

    image = _image(*shape)
    ours = compress_image(image, crf)
    assert ours.dtype == np.uint8 and ours.shape == (shape[0] // 2 * 2, shape[1] // 2 * 2, 3)
    assert np.array_equal(ours, preprocess(image, crf))
    assert np.array_equal(ours, apply_image_conditioning_crf(image, crf))
    if min(shape) > 2:  # control: the round trip really is lossy
        assert not np.array_equal(ours, image[: ours.shape[0], : ours.shape[1]])


def test_compress_image_crf0_and_strength():
    image = _image(33, 47)
    assert compress_image(image, 0) is image  # untouched, uncropped (as ltx-pipelines)
    even = _image(64, 64)
    err = [np.abs(compress_image(even, crf).astype(int) - even).mean() for crf in (10, 33, 51)]
    assert err[0] < err[1] < err[2]


@pytest.mark.parametrize("image, crf, match", [
    (np.zeros((8, 8, 3), np.float32), 33, "uint8 .H, W, 3."),
    (np.zeros((8, 8, 4), np.uint8), 33, r"\(8, 8, 4\)"),
    (np.zeros((8, 8), np.uint8), 33, r"\(8, 8\)"),
    (np.zeros((8, 8, 3), np.uint8), -1, r"crf must be an integer in \[0, 51\].*-1"),
    (np.zeros((8, 8, 3), np.uint8), 52, "crf must be an integer.*52"),
    (np.zeros((8, 8, 3), np.uint8), 33.0, "crf must be an integer.*33.0"),
    (np.zeros((8, 8, 3), np.uint8), True, "crf must be an integer.*True"),
    (np.zeros((1, 8, 3), np.uint8), 33, r"at least 2x2.*\(1, 8\)"),
])
def test_compress_image_errors(image, crf, match):
    with pytest.raises(ValueError, match=match):
        compress_image(image, crf)


# ---------------------------------------------------------------- audio conditioning latents


@pytest.mark.parametrize("num_frames, fps", [(121, 24), (121, 25), (97, 30.0), (9, 24), (1, 24), (241, 24000 / 1001),
                                             (3, 48)])
def test_audio_latent_frames_match_ltx_core(num_frames, fps):
    shape = ltx_core("types").AudioLatentShape
    assert audio_latent_frames(AudioVAEConfig(), num_frames, fps) == \
        shape.from_duration(batch=1, duration=num_frames / fps).frames
    # the rate follows the config (8 kHz / 160 / 4 = 12.5 latent frames per second)
    slow = AudioVAEConfig(sample_rate=8000)
    assert audio_latent_frames(slow, num_frames, fps) == \
        shape.from_duration(batch=1, duration=num_frames / fps, sample_rate=8000).frames
    assert audio_latent_frames(AudioVAEConfig(), 121, 24) == 126  # ltx-architecture.md 5.11


def _vae_pair(name):
    """Our tiny AudioVAE with random weights and statistics, and ltx-core's AudioEncoder built by
    its configurator from the same header and loaded with the same (original-key) weights."""
    mc = ltx_core("model.audio_vae.model_configurator")
    ours = AudioVAE(AudioVAEConfig(**CASES[name])).eval()
    perturb_(ours, seed=11)
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        ours.latents_mean.copy_(torch.randn(ours.latents_mean.shape, generator=g))
        ours.latents_std.copy_(torch.rand(ours.latents_std.shape, generator=g) + 0.5)
    encoder = mc.AudioEncoderConfigurator.from_config(original_header(CASES[name])).eval()
    sd = {mc.AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER.apply_to_key(k): v
          for k, v in to_original(ours.state_dict()).items()}
    encoder.load_state_dict({k: v for k, v in sd.items() if k is not None}, strict=True)
    return ours, encoder


def _reference(ours, encoder, wave, rate, num_frames, fps):
    """ltx-pipelines' a2vid steps on the whole waveform: mel (our front-end) -> ltx-core encoder
    (normalizes) -> first T frames by AudioLatentShape.from_duration -> AudioPatchifier tokens."""
    types, patchifiers = ltx_core("types"), ltx_core("components.patchifiers")
    with torch.no_grad():
        latents = encoder(ours.waveform_to_mel(wave[None], rate))
    t_lat = types.AudioLatentShape.from_duration(batch=1, duration=num_frames / fps, channels=4, mel_bins=4).frames
    return patchifiers.AudioPatchifier(patch_size=1).patchify(latents[:, :, :t_lat])


# The audio is 2.5 s at 22.05 kHz (resampled to 16 kHz inside); ours encodes only the video's
# duration + 1 s (causal VAE) or everything (attention): the same latents either way. 13 frames at
# 24 fps round T up (13.54 -> 14), so the last latent frame needs audio past the video's end.
@pytest.mark.parametrize("name", ["release", "attention"])
@pytest.mark.parametrize("num_frames", [9, 13])
def test_audio_condition_matches_ltx_core(name, num_frames, tmp_path):
    ours, encoder = _vae_pair(name)
    rate = 22050
    g = torch.Generator().manual_seed(13)
    wave = torch.from_numpy(_tones(int(2.5 * rate), rate, freqs=(300.0, 1200.0))) + 0.1 * torch.randn(
        2, int(2.5 * rate), generator=g)
    t_lat = round(num_frames / FPS * 25)
    for start in (0.0, 0.5):
        got = load_audio_condition(ours, wave, num_frames=num_frames, frame_rate=FPS, start=start, sample_rate=rate)
        expected = _reference(ours, encoder, wave[:, round(start * rate):], rate, num_frames, FPS)
        assert got.shape == expected.shape == (1, t_lat, 16)  # 4 channels x 4 mel bins
        err = assert_close_scaled(got, expected, REL_TOL, f"{name} start={start}")
        print(f"{name} {num_frames} frames, start={start}: max abs error vs ltx-core {err:.1e}")
    # from a file: the same samples (float WAV is lossless) give the same latents
    path = _write_wav(tmp_path / "a.wav", wave.numpy(), rate, "pcm_f32le", "flt")
    from_file = load_audio_condition(ours, path, num_frames=num_frames, frame_rate=FPS, start=0.5)
    assert torch.equal(from_file, got)


def test_audio_condition_channels_and_dtype():
    ours, _ = _vae_pair("release")
    mono = torch.from_numpy(_tones(16000, 16000, freqs=(500.0,)))
    kwargs = dict(num_frames=N_FRAMES, frame_rate=FPS, sample_rate=16000)
    stereo = load_audio_condition(ours, mono.expand(2, -1).clone(), **kwargs)
    assert torch.equal(load_audio_condition(ours, mono, **kwargs), stereo)  # mono duplicated for a stereo VAE
    assert torch.equal(load_audio_condition(ours, mono.numpy(), **kwargs), stereo)  # numpy waveforms too
    half = ours.to(torch.bfloat16)
    assert load_audio_condition(half, mono, **kwargs).dtype == torch.bfloat16


def test_audio_condition_errors(tmp_path):
    ours, _ = _vae_pair("release")
    wave = torch.zeros(2, 16000)
    kw = dict(num_frames=N_FRAMES, frame_rate=FPS)
    cases = [
        (dict(audio=torch.zeros(2, 4800), sample_rate=16000), r"audio is 0.300 s long.*video's 0.375 s"),
        (dict(audio=wave, sample_rate=16000, start=0.7), r"audio is 0.300 s long from start=0.7 s.*0.375 s"),
        (dict(audio=torch.zeros(2, 0), sample_rate=16000), "audio is empty"),
        (dict(audio=wave, sample_rate=16000, start=2.0), "audio is empty from start=2.0 s"),
        (dict(audio=torch.zeros(3, 16000), sample_rate=16000), r"1 or 2 channels, got 3"),
        (dict(audio=torch.zeros(16000), sample_rate=16000), r"\(channels, samples\)"),
        (dict(audio=torch.zeros(2, 16000, dtype=torch.int16), sample_rate=16000), "floating point"),
        (dict(audio=torch.full((2, 16000), float("nan")), sample_rate=16000), "finite"),
        (dict(audio=wave), "sample_rate must be a positive integer.*None"),
        (dict(audio=wave, sample_rate=16000.0), "sample_rate must be a positive integer.*16000.0"),
        (dict(audio=wave, sample_rate=16000, start=-1.0), "start must be a finite number"),
        (dict(audio=str(tmp_path / "x.wav"), sample_rate=16000), "sample_rate is for waveforms"),
        (dict(audio=wave, sample_rate=16000, num_frames=0), "num_frames must be a positive integer, got 0"),
        (dict(audio=wave, sample_rate=16000, num_frames=9.0), "num_frames must be a positive integer, got 9.0"),
        (dict(audio=wave, sample_rate=16000, frame_rate=0), "frame_rate must be a positive finite number, got 0"),
        (dict(audio=wave, sample_rate=16000, frame_rate=math.inf), "frame_rate must be a positive finite"),
        (dict(audio=wave, sample_rate=16000, num_frames=1, frame_rate=100), "shorter than one audio latent frame"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            load_audio_condition(ours, **{**kw, **args})
    with pytest.raises(FileNotFoundError):
        load_audio_condition(ours, tmp_path / "missing.wav", **kw)
    assert not os.listdir(tmp_path)
