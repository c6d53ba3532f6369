"""Streaming decode (VideoVAE.decode_frames, LTX2VideoVAE.decode_normalized_frames,
ltxengine.components.decode) and the streaming mp4 writer (media.VideoWriter).

Oracles are our own whole-clip paths, which the model tests check against diffusers / ltx-core:
VideoVAE.decode, LTX2VideoVAE.decode_normalized, decode.decode_latents + resize_frames,
ltx2.stages.decode_video and media.write_mp4. Streaming must not change a single bit, so every
comparison is exact (torch.equal / byte-identical files): the chunks run the same ops on the same
tiles; libx264 is deterministic for the same frames and settings.
"""

import gc
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ltxengine import media
from ltxengine.config import VideoVAEConfig, parse_config
from ltxengine.ltx2.stages import decode_video
from ltxengine.media import VideoWriter, read_media, read_mp4, write_mp4
from ltxengine.models.video_vae import LTX2VideoVAE, LTX2VideoVAEConfig, TilingConfig, VideoVAE
from ltxengine.presets import TINY_VAE_LTX2
from ltxengine.components import decode

from .helpers import preset_kwargs, randomize_vae_, record_encoded_frames

pytestmark = pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN:UserWarning")

# tiny layouts of tests/models/test_video_vae.py (0.9.1: timestep + noise injection) and
# tests/models/test_ltx2_video_vae.py (2.0: reflect padding, decode noise in normalized space)
VAE_091 = dict(latent_channels=8, block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(16, 32, 64),
               layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 2, 1),
               decoder_spatio_temporal_scaling=(True, True, True), decoder_inject_noise=(True, True, True, False),
               upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=True)
VAE_090 = dict(latent_channels=8, block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(8, 16, 32, 32),
               layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 2, 1))
VAE_LTX2 = preset_kwargs(TINY_VAE_LTX2, LTX2VideoVAEConfig())
# 3-latent-frame tiles (24 px frames) with a 2-latent stride (16): 8-frame cross-fades; 2x2-latent
# spatial tiles with stride 1 (LTX-2's reflect padding needs tiles of >= 2 latents: 3, stride 2).
TEMPORAL = TilingConfig(512, 512, 24, 448, 448, 16)
BOTH = TilingConfig(64, 64, 24, 32, 32, 16)
SPATIAL = TilingConfig(64, 64, 16, 32, 32, 8)
LTX2_BOTH = TilingConfig(96, 96, 24, 64, 64, 16)
FPS, SR = 24, 24000


@pytest.fixture(autouse=True)
def _plain_cpu_convs():
    """oneDNN builds a kernel per new conv shape; the native CPU convs keep the file fast."""
    with torch.backends.mkldnn.flags(enabled=False):
        yield


_MODELS = {}


def _vae(name):
    if name not in _MODELS:
        torch.manual_seed(0)
        if name == "ltx2":
            model = LTX2VideoVAE(parse_config(LTX2VideoVAEConfig, dict(VAE_LTX2, timestep_conditioning=True), "t"))
        else:
            model = VideoVAE(VideoVAEConfig(**(VAE_091 if name == "0.9.1" else VAE_090)))
        randomize_vae_(model.eval(), 1)
        _MODELS[name] = model
    return _MODELS[name]


def _z(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _gen(seed=5):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- VideoVAE.decode_frames

@pytest.mark.parametrize("tiling, frames, width, lengths", [
    (None, 4, 2, [25]),  # untiled: one chunk
    (SPATIAL, 2, 3, [9]),  # spatial tiles only (2 latent frames fit one 16-frame tile)
    # temporal, 4 latent frames: tiles at latents 0 (4 latents, 2*8+1 own frames) and 2 (2
    # latents: 9 frames less the lone first one, an 8-frame remainder)
    (TEMPORAL, 4, 2, [17, 8]),
    # 5 latent frames: the tile at latent 4 is one lone latent, whose only frame is dropped
    (TEMPORAL, 5, 2, [17, 16]),
    (BOTH, 4, 2, [17, 8]),  # temporal x spatial
])
def test_decode_frames_concatenate_to_decode(tiling, frames, width, lengths):
    vae = _vae("0.9.0")
    z = _z((1, 8, frames, 2, width))
    with torch.no_grad():
        expected = vae.decode(z, tiling=tiling)
        chunks = list(vae.decode_frames(z, tiling=tiling))
    assert [c.shape[2] for c in chunks] == lengths
    assert all(c.shape[:2] == expected.shape[:2] and c.shape[3:] == expected.shape[3:] for c in chunks)
    assert torch.equal(torch.cat(chunks, dim=2), expected)


@pytest.mark.parametrize("tiling", [None, TEMPORAL, BOTH])
def test_decode_frames_noise_injection_draws_like_decode(tiling):
    """0.9.1 injects noise in every resnet: the chunks draw the same fields in the same order,
    from a generator and from the global RNG, and leave the RNG in the same state."""
    vae, z, temb = _vae("0.9.1"), _z((1, 8, 4, 2, 2)), torch.tensor([0.07])
    with torch.no_grad():
        g1, g2 = _gen(), _gen()
        expected = vae.decode(z, temb, generator=g1, tiling=tiling)
        got = torch.cat(list(vae.decode_frames(z, temb, generator=g2, tiling=tiling)), dim=2)
        assert torch.equal(got, expected)
        assert torch.equal(g1.get_state(), g2.get_state())
        torch.manual_seed(9)
        expected = vae.decode(z, temb, tiling=tiling)
        torch.manual_seed(9)
        got = torch.cat(list(vae.decode_frames(z, temb, tiling=tiling)), dim=2)
        assert torch.equal(got, expected)
        other = vae.decode(z, temb, generator=_gen(6), tiling=tiling)
    assert (other - expected).abs().max() > 1e-3  # control: the noise is really injected


def test_each_chunk_comes_before_the_next_tile_is_decoded():
    vae, z = _vae("0.9.0"), _z((1, 8, 5, 2, 2))
    calls = []
    handle = vae.decoder.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        with torch.no_grad():
            frames = vae.decode_frames(z, tiling=TEMPORAL)
            assert calls == []  # nothing is decoded before the first chunk is asked for
            seen = [len(calls) for _ in frames]
    finally:
        handle.remove()
    # chunk k is handed out right after tile k; the third tile (one lone latent) yields nothing
    assert seen == [1, 2] and len(calls) == 3


def test_decode_frames_keeps_the_grad_mode_of_the_call():
    vae, z = _vae("0.9.0"), _z((1, 8, 4, 2, 2))
    with torch.no_grad():
        frames = vae.decode_frames(z, tiling=TEMPORAL)
        expected = vae.decode(z, tiling=TEMPORAL)
    chunks = list(frames)  # consumed with grad enabled
    assert not any(c.requires_grad for c in chunks)
    assert torch.equal(torch.cat(chunks, dim=2), expected)


def test_decode_frames_checks_arguments_at_the_call():
    vae = _vae("0.9.1")
    with pytest.raises(ValueError, match="z must have 8 channels"):
        vae.decode_frames(torch.zeros(1, 4, 2, 2, 2), 0.05)
    with pytest.raises(ValueError, match="temb is required"):
        vae.decode_frames(torch.zeros(1, 8, 2, 2, 2))
    with pytest.raises(ValueError, match="tile_sample_stride_num_frames must be a multiple"):
        vae.decode_frames(torch.zeros(1, 8, 2, 2, 2), 0.05, tiling=TilingConfig(tile_sample_stride_num_frames=4))


# ---------------------------------------------------------------- LTX2VideoVAE.decode_normalized_frames

@pytest.mark.parametrize("tiling, width, lengths", [(None, 2, [25]), (TEMPORAL, 2, [17, 8]), (LTX2_BOTH, 4, [17, 8])])
def test_ltx2_decode_normalized_frames(tiling, width, lengths):
    vae, z = _vae("ltx2"), _z((1, 8, 4, 2, width))
    with torch.no_grad():
        g1, g2 = _gen(), _gen()
        expected = vae.decode_normalized(z, 0.07, 0.3, generator=g1, tiling=tiling)
        chunks = list(vae.decode_normalized_frames(z, 0.07, 0.3, generator=g2, tiling=tiling))
        other = vae.decode_normalized(z, 0.07, 0.3, generator=_gen(6), tiling=tiling)
    assert [c.shape[2] for c in chunks] == lengths
    assert torch.equal(torch.cat(chunks, dim=2), expected)
    assert torch.equal(g1.get_state(), g2.get_state())
    assert (other - expected).abs().max() > 1e-3  # control: the decode noise is drawn
    with pytest.raises(ValueError, match="noise_scale must be a number in"):
        vae.decode_normalized_frames(z, 0.07, 1.5)


# ------------------------------------------------------------------- pipelines.decode streaming

@pytest.mark.parametrize("tiling, size", [(None, None), (TEMPORAL, (48, 80)), (BOTH, (96, 64))])
def test_decode_latents_frames_equal_decode_latents(tiling, size):
    vae, latents = _vae("0.9.1"), _z((1, 8, 4, 2, 2), seed=3)
    kw = dict(decode_timestep=0.05, decode_noise_scale=0.025, device="cpu", model_dtype=torch.float32,
              tiling=tiling)
    height, width = size or (64, 64)
    with torch.no_grad():
        expected = decode.resize_frames(decode.decode_latents(vae, latents, generator=_gen(), **kw), height, width).numpy()
        chunks = list(decode.decode_latents_frames(vae, latents, generator=_gen(), height=height, width=width,
                                                      **kw))
    assert all(isinstance(c, np.ndarray) and c.dtype == np.float32 for c in chunks)
    assert len(chunks) == (1 if tiling is None else 2)
    assert np.array_equal(np.concatenate(chunks), expected)
    with torch.no_grad():  # the device chunks, joined, are decode_latents itself (before resizing)
        joined = decode.join_frames(decode.ltx_video_frame_chunks(vae, latents, generator=_gen(), **kw))
        assert torch.equal(joined, decode.decode_latents(vae, latents, generator=_gen(), **kw))
    with pytest.raises(ValueError, match="height and width must be given together"):
        decode.decode_latents_frames(vae, latents, generator=_gen(), height=64, **kw)


@pytest.mark.parametrize("tiling", [None, TEMPORAL])
def test_decode_ltx2_frames_equal_decode_video(tiling):
    vae, latents = _vae("ltx2"), _z((1, 8, 4, 2, 2), seed=4)
    # the request fields it reads (decoder None: the VAE's conv decoder)
    a = SimpleNamespace(decode_timestep=0.07, decode_noise_scale=0.3, vae_tiling=tiling, decoder=None)
    with torch.no_grad():
        expected = decode_video(SimpleNamespace(vae=vae), a, latents, _gen()).numpy()
        chunks = list(decode.decode_ltx2_frames(vae, latents, decode_timestep=0.07, decode_noise_scale=0.3,
                                                   generator=_gen(), tiling=tiling))
    assert len(chunks) == (1 if tiling is None else 2)
    assert np.array_equal(np.concatenate(chunks), expected)
    with torch.no_grad():
        joined = decode.join_frames(decode.ltx2_frame_chunks(vae, latents, decode_timestep=0.07,
                                                                   decode_noise_scale=0.3, generator=_gen(),
                                                                   tiling=tiling))
    assert np.array_equal(joined.numpy(), expected)


# ---------------------------------------------------------------- VideoWriter

def _frames(n=20, h=32, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _tones(samples):
    t = np.arange(samples) / SR
    return (0.5 * np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)])).astype(np.float32)


@pytest.mark.parametrize("with_audio", [False, True])
def test_streamed_mp4_encodes_what_write_mp4_encodes(tmp_path, with_audio, monkeypatch):
    # the frames given to the encoder are compared, not the files: the same frames written in chunks
    # were seen to encode to other bytes about once in 10-40 runs (see helpers.record_encoded_frames)
    encoded = record_encoded_frames(monkeypatch)
    frames = _frames()
    kw = dict(audio=_tones(SR), sample_rate=SR) if with_audio else {}
    whole = write_mp4(tmp_path / "whole.mp4", frames, FPS, crf=23, **kw)
    assert np.array_equal(np.stack(encoded), frames)
    encoded.clear()
    with VideoWriter(tmp_path / "streamed.mp4", FPS, crf=23, width=48, height=32) as writer:
        if with_audio:
            writer.set_audio(kw["audio"], SR)  # after construction, before the first frames
        for chunk in (frames[:7], frames[7:7], frames[7:14], frames[14:]):  # uneven, one empty
            writer.write(chunk)
    assert writer.frames_written == 20
    assert writer.close() == tmp_path / "streamed.mp4"  # idempotent once closed
    assert np.array_equal(np.stack(encoded), frames)
    if with_audio:
        assert np.array_equal(read_media(tmp_path / "streamed.mp4")[2], read_media(whole)[2])
    back, fps, audio, rate = read_media(tmp_path / "streamed.mp4")
    assert back.shape == frames.shape and fps == FPS and (audio is not None) == with_audio
    assert sorted(os.listdir(tmp_path)) == ["streamed.mp4", "whole.mp4"]  # no temporary file left


def test_failure_inside_with_leaves_no_file(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="decoder exploded"):
        with VideoWriter(target, FPS, audio=_tones(SR), sample_rate=SR) as writer:
            writer.write(_frames(5))
            assert len(os.listdir(tmp_path)) == 1  # the temporary file, next to the target
            raise RuntimeError("decoder exploded")
    assert os.listdir(tmp_path) == []
    target.write_bytes(b"keep me")  # an existing file is left as it was
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(target, FPS) as writer:
            writer.write(_frames(5))
            raise KeyboardInterrupt
    assert target.read_bytes() == b"keep me" and os.listdir(tmp_path) == ["out.mp4"]


def test_abort_close_failure_and_dropped_writer_leave_no_file(tmp_path, monkeypatch):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"keep me")
    writer = VideoWriter(target, FPS)
    writer.write(_frames(3))
    writer.abort()
    writer.abort()  # no-op
    assert os.listdir(tmp_path) == ["out.mp4"]
    with pytest.raises(ValueError, match=r"VideoWriter.write: the writer is aborted"):
        writer.write(_frames(3))
    with pytest.raises(ValueError, match=r"VideoWriter.close: the writer is aborted"):
        writer.close()
    # never closed: the temporary file goes with the writer
    writer = VideoWriter(target, FPS)
    writer.write(_frames(3))
    assert len(os.listdir(tmp_path)) == 2
    del writer
    gc.collect()
    assert os.listdir(tmp_path) == ["out.mp4"]
    # a failure while closing (here: muxing the audio) removes the temporary file

    def broken(*args):
        raise RuntimeError("muxer exploded")

    monkeypatch.setattr(media, "_encode_audio", broken)
    writer = VideoWriter(target, FPS, audio=_tones(SR), sample_rate=SR)
    writer.write(_frames(3))
    with pytest.raises(RuntimeError, match="muxer exploded"):
        writer.close()
    assert target.read_bytes() == b"keep me" and os.listdir(tmp_path) == ["out.mp4"]


def test_video_writer_validation(tmp_path):
    target = tmp_path / "out.mp4"
    bad_args = [
        (dict(path=tmp_path / "missing" / "a.mp4"), r"path's folder '.*missing' does not exist"),
        (dict(path=tmp_path), r"path '.*' is a folder, expected a file name"),
        (dict(path=3.5), r"path must be a str or path-like, got 3.5"),
        (dict(fps=0), r"VideoWriter: fps must be positive, got 0"),
        (dict(fps="fast"), r"fps must be a positive number or 'num/den', got 'fast'"),
        (dict(crf=52), r"crf must be a number in \[0, 51\].*got 52"),
        (dict(crf="18"), r"crf must be a number.*got '18'"),
        (dict(width=33), r"width must be a positive even integer \(yuv420p\) or None, got 33"),
        (dict(height=0), r"height must be a positive even integer.*got 0"),
        (dict(height=32.0), r"height must be a positive even integer.*got 32.0"),
        (dict(sample_rate=SR), r"sample_rate is only meaningful with audio"),
        (dict(audio=_tones(100)), r"sample_rate must be a positive integer .*None"),
        (dict(audio=_tones(100), sample_rate=12345), r"sample_rate must be one AAC supports.*12345"),
        (dict(audio=np.zeros((3, 10), np.float32), sample_rate=SR), r"1 or 2 channels"),
    ]
    for args, match in bad_args:
        args = {"path": target, "fps": FPS, **args}
        with pytest.raises(ValueError, match=match):
            VideoWriter(args.pop("path"), args.pop("fps"), **args)
    assert os.listdir(tmp_path) == []
    with pytest.raises(OSError, match="does not exist"):  # as write_mp4's failed rename used to raise
        write_mp4(tmp_path / "missing" / "a.mp4", _frames(2), FPS)
    with pytest.raises(media.OutputPathError):
        VideoWriter(tmp_path, FPS)


def test_video_writer_chunk_validation(tmp_path):
    target = tmp_path / "out.mp4"
    writer = VideoWriter(target, FPS, height=32)
    for chunk, match in [
        (np.zeros((2, 32, 48, 3), np.float32), r"frames must be uint8 \(n, H, W, 3\), got float32 \(2, 32, 48, 3\)"),
        (np.zeros((32, 48, 3), np.uint8), r"got uint8 \(32, 48, 3\)"),
        (np.zeros((2, 32, 48, 4), np.uint8), r"got uint8 \(2, 32, 48, 4\)"),
        (np.zeros((2, 32, 47, 3), np.uint8), r"height and width must be even for yuv420p, got \(32, 47\)"),
        (np.zeros((2, 64, 48, 3), np.uint8), r"every chunk must have the given height and width \(32, 48\) \(H, W\), "
                                             r"got \(64, 48\) after 0 frames"),
    ]:
        with pytest.raises(ValueError, match=match):
            writer.write(chunk)
    with pytest.raises(ValueError, match=r"no frames were written"):
        writer.close()  # closing without frames is an error and aborts
    assert os.listdir(tmp_path) == []
    with VideoWriter(target, FPS) as writer:
        writer.write(_frames(2, 32, 48))
        with pytest.raises(ValueError, match=r"the first chunk's height and width \(32, 48\) \(H, W\), got "
                                             r"\(32, 64\) after 2 frames"):
            writer.write(_frames(2, 32, 64))
        with pytest.raises(ValueError, match=r"set_audio: must be called before the first frames.*after 2 frames"):
            writer.set_audio(_tones(SR), SR)
        writer.write(_frames(1, 32, 48))  # the rejected chunks left the writer usable
    assert len(read_mp4(target)[0]) == 3
    with pytest.raises(ValueError, match=r"VideoWriter.write: the writer is closed"):
        writer.write(_frames(1, 32, 48))
    with pytest.raises(ValueError, match=r"write_mp4: no frames were written"):
        write_mp4(tmp_path / "empty.mp4", np.zeros((0, 32, 48, 3), np.uint8), FPS)
    assert os.listdir(tmp_path) == ["out.mp4"]


# ---------------------------------------------------------------- stream_to_file

def _float_chunks(frames, sizes, fail_after=None):
    start = 0
    for i, n in enumerate(sizes):
        if i == fail_after:
            raise RuntimeError("tile failed")
        yield frames[start: start + n]
        start += n


def test_stream_to_file_equals_write_mp4(tmp_path, monkeypatch):
    # the frames given to the encoder are compared, not the files (see helpers.record_encoded_frames)
    encoded = record_encoded_frames(monkeypatch)
    floats = np.random.default_rng(1).random((13, 32, 48, 3), dtype=np.float32)
    wave = _tones(SR // 2)
    kept = decode.stream_to_file(_float_chunks(floats, [5, 0, 8]), tmp_path / "s.mp4", FPS, crf=20, audio=wave,
                                    sample_rate=SR)
    assert kept.dtype == np.float32 and np.array_equal(kept, floats)
    streamed = np.stack(encoded)
    encoded.clear()
    write_mp4(tmp_path / "w.mp4", decode.quantize_frames(floats), FPS, crf=20, audio=wave, sample_rate=SR)
    assert np.array_equal(streamed, np.stack(encoded)) and np.array_equal(streamed, decode.quantize_frames(floats))
    s_media, w_media = read_media(tmp_path / "s.mp4"), read_media(tmp_path / "w.mp4")
    assert np.array_equal(s_media[2], w_media[2]) and s_media[3] == w_media[3] == SR  # the same audio track
    encoded.clear()
    assert decode.stream_to_file(iter([floats]), tmp_path / "k.mp4", FPS, keep=False) is None
    assert np.array_equal(np.stack(encoded), (floats * 255).round().astype(np.uint8))
    assert read_mp4(tmp_path / "k.mp4")[0].shape == floats.shape


def test_stream_to_file_failure_mid_stream_leaves_no_file(tmp_path):
    target = tmp_path / "out.mp4"
    floats = np.random.default_rng(1).random((13, 32, 48, 3), dtype=np.float32)
    with pytest.raises(RuntimeError, match="tile failed"):
        decode.stream_to_file(_float_chunks(floats, [5, 8, 3], fail_after=2), target, FPS)
    assert os.listdir(tmp_path) == []
    target.write_bytes(b"keep me")
    with pytest.raises(RuntimeError, match="tile failed"):
        decode.stream_to_file(_float_chunks(floats, [5, 8, 3], fail_after=1), target, FPS)
    assert target.read_bytes() == b"keep me" and os.listdir(tmp_path) == ["out.mp4"]


@pytest.mark.parametrize("chunk, match", [
    (np.zeros((2, 32, 48, 3), np.uint8), r"chunk 1 must be float \(n, H, W, 3\) frames, got uint8"),
    (np.zeros((32, 48, 3), np.float32), r"chunk 1 must be float.*\(32, 48, 3\)"),
    (np.full((2, 32, 48, 3), 1.5, np.float32), r"chunk 1 must hold values in \[0, 1\], got range \[1.5, 1.5\]"),
    (np.full((2, 32, 48, 3), np.nan, np.float32), r"chunk 1 must hold values in \[0, 1\]"),
])
def test_stream_to_file_validation(tmp_path, chunk, match):
    target = tmp_path / "out.mp4"
    with pytest.raises(ValueError, match=match):
        decode.stream_to_file(iter([np.zeros((2, 32, 48, 3), np.float32), chunk]), target, FPS)
    with pytest.raises(ValueError, match=r"keep must be a bool, got 1"):
        decode.stream_to_file(iter([]), target, FPS, keep=1)
    assert os.listdir(tmp_path) == []


def test_decode_stream_to_file_end_to_end(tmp_path, monkeypatch):
    """LTX-Video latents -> temporal tiles -> mp4 equals the whole-clip decode written by write_mp4;
    torch chunks are accepted too."""
    vae, latents = _vae("0.9.1"), _z((1, 8, 4, 2, 2), seed=8)
    kw = dict(decode_timestep=0.05, decode_noise_scale=None, device="cpu", model_dtype=torch.float32, tiling=TEMPORAL)
    with torch.no_grad():
        whole = decode.decode_latents(vae, latents, generator=_gen(), **kw).numpy()
        chunks = decode.ltx_video_frame_chunks(vae, latents, generator=_gen(), **kw)
        encoded = record_encoded_frames(monkeypatch)
        kept = decode.stream_to_file(chunks, tmp_path / "s.mp4", FPS)
    assert np.array_equal(kept, whole)
    assert np.array_equal(np.stack(encoded), decode.quantize_frames(whole))  # what write_mp4 would encode
    assert read_mp4(tmp_path / "s.mp4")[0].shape == whole.shape
