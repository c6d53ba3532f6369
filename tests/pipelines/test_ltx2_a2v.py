"""Audio-to-video's audio against ltx-pipelines 1.0.0's A2VidPipelineTwoStage: which audio is
encoded and which is returned, for a file and for a waveform, with audio_start and
audio_max_duration.

The reference reads the file with media_io.decode_audio_from_file(path, device, audio_start_time,
audio_max_duration) (from the start, at most round(max_duration * rate) samples; None: to the
end), encodes that and keeps the clip's latent frames, and returns that same waveform ("the
original input audio instead of VAE-decoded audio"). Its decode function is imported and compared
here on wav files. It has no waveform input: for a waveform the same window is derived from that
function's arithmetic (skip round(start * rate) samples, keep round(max_duration * rate))."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltxengine import Engine
from ltxengine.ltx2 import stages
from ltxengine.ltx2.audio_input import load_audio_condition
from tests.oracles import ltx_pipelines
from tests.pipelines.ltx2_fixtures import SEQ, build_pipeline

TINY = dict(pipeline="one-stage", height=64, width=64, num_frames=9, num_inference_steps=2, max_sequence_length=SEQ)
VIDEO_S = 9 / 24  # TINY's clip at generate's 24 fps
RATE = 24000
WAVE = (np.random.default_rng(4).standard_normal((2, 2 * RATE)) * 0.2).clip(-1, 1).astype(np.float32)  # 2 s


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    _, _, folder = build_pipeline(tmp_path_factory.mktemp("ltx2a2v"))
    return Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    """WAVE as a 16-bit stereo wav, in several frames (as a decoder hands them out)."""
    import av
    path = tmp_path_factory.mktemp("a2v") / "song.wav"
    pcm = np.clip(np.round(WAVE * 32768), -32768, 32767).astype(np.int16)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=RATE)
        stream.layout = "stereo"
        for i in range(0, pcm.shape[1], 4800):
            frame = av.AudioFrame.from_ndarray(pcm[:, i:i + 4800].T.reshape(1, -1).copy(), format="s16",
                                               layout="stereo")
            frame.sample_rate = RATE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _reference_audio(path, start, max_duration):
    media_io = ltx_pipelines("utils.media_io")
    audio = media_io.decode_audio_from_file(str(path), torch.device("cpu"), start, max_duration)
    return audio.waveform.squeeze(0).numpy(), audio.sampling_rate


def _recorded(engine, **kw):
    """generate's result and the audio latents its stages were conditioned on."""
    seen = []
    real = stages._audio_condition

    def record(engine_, a):
        seen.append(real(engine_, a))
        return seen[-1]

    with pytest.MonkeyPatch.context() as m:
        m.setattr(stages, "_audio_condition", record)
        result = engine.generate("a dog", seed=2, **TINY, **kw)
    return result, seen[0][0]


# (audio_start, audio_max_duration): the whole file, a start inside a codec frame, a window, the
# window exactly as long as the clip (the reference's command-line default)
WINDOWS = [(0.0, None), (0.13, None), (0.13, 0.5), (0.5, VIDEO_S)]


@pytest.mark.parametrize("start, max_duration", WINDOWS)
def test_file_audio_is_the_reference_window(engine, wav, start, max_duration):
    ref, ref_rate = _reference_audio(wav, start, max_duration)
    result, latents = _recorded(engine, audio=wav, audio_start=start, audio_max_duration=max_duration)
    assert result.sample_rate == ref_rate == RATE
    assert np.array_equal(result.audio, ref)  # returned unchanged, as the reference returns it
    expected = load_audio_condition(engine.audio_vae, ref, num_frames=9, frame_rate=24.0, sample_rate=RATE)
    assert torch.equal(latents, expected.float())  # and that window is what the video follows


@pytest.mark.parametrize("start, max_duration", WINDOWS)
def test_waveform_audio_is_the_same_window(engine, wav, start, max_duration):
    first = round(start * RATE)
    stop = None if max_duration is None else first + round(max_duration * RATE)
    window = WAVE[:, first:stop]
    result, latents = _recorded(engine, audio=WAVE, audio_sample_rate=RATE, audio_start=start,
                                audio_max_duration=max_duration)
    assert result.sample_rate == RATE and np.array_equal(result.audio, window)
    expected = load_audio_condition(engine.audio_vae, window, num_frames=9, frame_rate=24.0, sample_rate=RATE)
    assert torch.equal(latents, expected.float())
    # the wav holds WAVE in 16 bits: the reference's window of it is this window, to 16-bit rounding
    ref, _ = _reference_audio(wav, start, max_duration)
    assert ref.shape == window.shape and np.abs(ref - window).max() <= 0.5 / 32768 + 1e-7


def test_max_duration_reaches_the_conditioning(engine):
    """A cut 0.1 s after the clip changes the encoded audio (the tiny audio VAE attends over the
    whole clip), so the frames: the window is not only what is returned."""
    whole, _ = _recorded(engine, audio=WAVE, audio_sample_rate=RATE)
    cut, _ = _recorded(engine, audio=WAVE, audio_sample_rate=RATE, audio_max_duration=VIDEO_S + 0.1)
    assert cut.audio.shape[1] == round((VIDEO_S + 0.1) * RATE) and whole.audio.shape[1] == WAVE.shape[1]
    assert not np.array_equal(cut.frames, whole.frames)


@pytest.mark.parametrize("kw, match", [
    (dict(audio_max_duration=1.0), r"audio_max_duration caps the audio= read from audio_start, got "
                                   r"audio_max_duration=1.0 without audio"),
    (dict(audio=WAVE, audio_sample_rate=RATE, audio_max_duration=0.0), r"audio_max_duration must be > 0.0, got 0.0"),
    (dict(audio=WAVE, audio_sample_rate=RATE, audio_max_duration=float("nan")),
     "audio_max_duration must be finite, got nan"),
    (dict(audio=WAVE, audio_sample_rate=RATE, audio_max_duration="1"), "audio_max_duration must be a number"),
    (dict(audio=WAVE, audio_sample_rate=RATE, audio_max_duration=0.3),
     r"audio_max_duration must cover the video \(9 frames at 24 fps = 0.375 s: at least 9000 samples at 24000 Hz\), "
     r"got 0.3"),
])
def test_bad_max_duration_is_refused(engine, kw, match):
    with pytest.raises(ValueError, match=match):
        engine.generate("a dog", seed=0, **TINY, **kw)


def test_short_max_duration_is_refused_for_files(engine, wav):
    with pytest.raises(ValueError, match=r"audio_max_duration must cover the video .*got 0.37"):
        engine.generate("a dog", seed=0, audio=wav, audio_max_duration=0.37, **TINY)
