"""Parallel tiled VAE decode (ltxengine/parallel/vae.py) on 2 and 3 gloo processes against the
one-process tiled decode, both families, with decode timestep, decode noise and (0.9.1) per-tile noise
injection drawn from the generator.

Tolerance: none; the frames must be bit-equal. Each tile is the same decoder call on the same slice on
the same CPU kernels, the gather copies bits, and the VAE's own code blends. Ranks run one intra-op
thread (tests/parallel/spawn.py), so the references are computed with one thread too: oneDNN's
convolutions split their reductions by thread count, which changes the last bits, not the result.
"""

import contextlib
import dataclasses

import pytest
import torch

from ltxengine.components.decode import decode_latents, join_frames, ltx2_frame_chunks
from ltxengine.config import VideoVAEConfig
from ltxengine.models.video_vae import LTX2VideoVAE, TilingConfig, VideoVAE
from ltxengine.parallel.vae import (assign_tiles, decode_parallel, ltx2_frames_parallel, ltx_video_frames_parallel,
                                    tile_windows)
from ltxengine.presets import TINY_VAE_LTX2

from ..helpers import randomize_vae_
from .spawn import run, run_outcomes

# 0.9.1: timestep-conditioned decoder with noise injection in three of four blocks, narrowed for speed
V091 = VideoVAEConfig(latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 16, 32),
                      layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
                      decoder_spatio_temporal_scaling=(True, True, True),
                      decoder_inject_noise=(True, True, True, False),
                      upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=True)
LTX2 = dataclasses.replace(TINY_VAE_LTX2, timestep_conditioning=True)  # reflect padding, decode noise
# 0.9.1: 2x2-latent tiles, stride 1; 2-latent-frame tiles, stride 1 -> (3 frames) x (1 row) x (3 cols) = 9 tiles
V091_TILES, V091_SHAPE = TilingConfig(64, 64, 16, 32, 32, 8), (1, 8, 3, 1, 3)
# LTX-2: reflect padding needs tiles of >= 2 latents: 3-latent tiles, stride 2 -> 3 frames x 2 rows = 6 tiles,
# a temporal-only case of 5 tiles (uneven on 2 and 3 ranks) and a spatial-only one of 2 (a rank of 3 idle)
LTX2_TILES, LTX2_SHAPES = TilingConfig(96, 96, 16, 64, 64, 8), ((1, 8, 3, 4, 2), (1, 8, 5, 2, 2), (1, 8, 2, 4, 2))


def build(family: str):
    torch.manual_seed(0)
    vae = VideoVAE(V091) if family == "0.9.1" else LTX2VideoVAE(LTX2)
    randomize_vae_(vae, 1)
    return vae.eval()


def latents(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def decode_all(frames_of) -> dict:
    """Every case's frames and the generator's next draw (its state after the decode)."""
    out, v091, ltx2 = {}, build("0.9.1"), build("ltx2")
    with torch.no_grad():
        g = torch.Generator().manual_seed(7)
        out["0.9.1"] = frames_of(v091, latents(V091_SHAPE, 1), V091_TILES, g), torch.randn(4, generator=g)
        for i, shape in enumerate(LTX2_SHAPES):
            g = torch.Generator().manual_seed(8 + i)
            out[f"ltx2-{i}"] = frames_of(ltx2, latents(shape, 2 + i), LTX2_TILES, g), torch.randn(4, generator=g)
    return out


def one_process(vae, z, tiling, g):
    if isinstance(vae, LTX2VideoVAE):
        return join_frames(ltx2_frame_chunks(vae, z, decode_timestep=0.05, decode_noise_scale=0.025, generator=g,
                                             tiling=tiling))
    return decode_latents(vae, z, decode_timestep=0.05, decode_noise_scale=0.04, generator=g, device="cpu",
                          model_dtype=torch.float32, tiling=tiling)


def parallel(vae, z, tiling, g):
    if isinstance(vae, LTX2VideoVAE):
        return ltx2_frames_parallel(vae, z, decode_timestep=0.05, decode_noise_scale=0.025, generator=g,
                                    tiling=tiling)
    return ltx_video_frames_parallel(vae, z, decode_timestep=0.05, decode_noise_scale=0.04, generator=g,
                                     device="cpu", model_dtype=torch.float32, tiling=tiling)


def rank_main(rank, world):
    return decode_all(parallel)


@contextlib.contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def references():
    with one_thread():
        return decode_all(one_process)


@pytest.mark.parametrize("world", [2, 3])
def test_parallel_decode_equals_one_process_tiled_decode(world, references):
    for rank, result in enumerate(run(rank_main, world, timeout=120.0, collective_timeout=60.0)):
        for case, (frames, after) in references.items():
            got, got_after = result[case]
            assert got.shape == frames.shape, (rank, case)
            assert torch.equal(got, frames), f"rank {rank} {case}: max |d| {(got - frames).abs().max().item()}"
            assert torch.equal(got_after, after), f"rank {rank} {case}: the generator ends elsewhere"


def rank_with_bad_latents(rank, world):
    vae, z = build("ltx2"), latents(LTX2_SHAPES[1], 2)
    with torch.no_grad():
        return decode_parallel(vae, z if rank == 0 else z[:, :4], 0.05, tiling=LTX2_TILES)


def test_a_failing_rank_fails_its_peer_instead_of_hanging():
    outcomes = run_outcomes(rank_with_bad_latents, 2, timeout=60.0, collective_timeout=15.0)
    assert not any(o.hung for o in outcomes)
    assert "z must have 8 channels (dim 1), got 4" in outcomes[1].error
    assert "in _all_gather_tiles" in outcomes[0].error  # its peer is gone: the gather fails, no hang


def test_the_cases_really_tile_and_inject_noise():
    """The reference cases split into several tiles (else nothing is distributed) and the 0.9.1 noise
    matters (else the generator replay would be untested)."""
    vae = build("0.9.1")
    z = latents(V091_SHAPE, 1)
    with torch.no_grad(), one_thread():
        tiled = vae.decode(z, 0.05, torch.Generator().manual_seed(3), V091_TILES)
        whole = vae.decode(z, 0.05, torch.Generator().manual_seed(3))
        other_noise = vae.decode(z, 0.05, torch.Generator().manual_seed(4), V091_TILES)
    assert (tiled - whole).abs().max() > 1e-3
    assert (tiled - other_noise).abs().max() > 1e-3
    assert len(tile_windows(vae, V091_SHAPE, V091_TILES)) == 9
    assert [len(tile_windows(build("ltx2"), s, LTX2_TILES)) for s in LTX2_SHAPES] == [6, 5, 2]


def test_assign_tiles_longest_first():
    # sorted costs 9, 7, 6, 5, 4 -> r0 9; r1 7; r1 13 (6); r0 14 (5); r1 17 (4)
    assert assign_tiles([5, 9, 4, 7, 6], 2) == [0, 0, 1, 1, 1]
    assert assign_tiles([1, 1, 1], 3) == [0, 1, 2]
    assert assign_tiles([3, 3], 4) == [0, 1]  # more ranks than tiles: the rest decode nothing
    with pytest.raises(ValueError, match="world must be a positive integer, got 0"):
        assign_tiles([1], 0)


def test_one_process_without_distributed_is_the_plain_decode():
    vae, z = build("0.9.1"), latents(V091_SHAPE, 1)
    with torch.no_grad(), one_thread():
        expected = vae.decode(z, 0.05, torch.Generator().manual_seed(3), V091_TILES)
        got = decode_parallel(vae, z, 0.05, torch.Generator().manual_seed(3), V091_TILES)
    assert torch.equal(got, expected)


def test_bad_arguments_fail_before_any_work():
    vae = build("0.9.1")
    with pytest.raises(ValueError, match="z must have 8 channels"):
        decode_parallel(vae, torch.zeros(1, 4, 3, 1, 3), 0.05, None, V091_TILES)
    with pytest.raises(ValueError, match="temb is required"):
        decode_parallel(vae, latents(V091_SHAPE, 1), None, None, V091_TILES)
    with pytest.raises(ValueError, match="group given .* not initialized"):
        decode_parallel(vae, latents(V091_SHAPE, 1), 0.05, None, V091_TILES, group=object())
