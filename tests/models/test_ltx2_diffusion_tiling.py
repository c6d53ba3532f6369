"""Tiled decoding of the LTX-2.5 diffusion decoder against diffusers' enable_tiling / tiled_decode
(0.42.1), fp32 on the CPU, same weights and seed: the one-step x0 path (noise drawn per tile) on the
release-shaped tiny model and the multi-step path (one noise canvas, sliced) on the small one, with
tiles small enough for several per axis, a remnant merged into its neighbour, the origin tile's
dropped frame and the end tile's ghosts. Budget REL = 1e-5 of the output scale, as the untiled
decode (the same arithmetic per tile; blending is the same elementwise fade)."""

import pytest
import torch

from ltxengine.models.ltx2_diffusion_tiling import DIFFUSION_TILING, _intervals
from ltxengine.models.video_vae import TilingConfig

from ..helpers import assert_close_scaled
from .ltx2_diffusion_decoder_fixtures import REL, make_pair

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile:UserWarning")

# (case, latent shape, tiling): release-shaped cells are 2 frames x 8 x 8 px, the small model's 2 x 2 x 2
CASES = [("release", (1, 8, 2, 3, 3), TilingConfig(64, 64, 8, 32, 32, 4)),
         ("x0_3_steps", (1, 8, 3, 3, 4), TilingConfig(8, 8, 8, 4, 4, 4))]


@pytest.mark.parametrize("name,shape,tiling", CASES, ids=[c[0] for c in CASES])
def test_tiled_decode_matches_diffusers(name, shape, tiling):
    ref, ours = make_pair(name)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    ref.enable_tiling(**{f: getattr(tiling, f) for f in tiling.__dataclass_fields__})
    try:
        with torch.no_grad():
            expected = ref.decode(z, generator=torch.Generator().manual_seed(5)).sample
            got = ours.decode(z, generator=torch.Generator().manual_seed(5), tiling=tiling)
            whole = ours.decode(z, generator=torch.Generator().manual_seed(5))
    finally:
        ref.disable_tiling()
    assert got.shape == whole.shape
    err = assert_close_scaled(got, expected, REL, name)
    assert (got - whole).abs().max() > 1e-3  # tiles were used
    print(f"{name} tiled: max err {err:.2e} of scale {expected.abs().max():.2f}")


def test_latent_within_one_tile_is_not_tiled():
    _, ours = make_pair("x0_3_steps")
    z = torch.randn(1, 8, 2, 3, 3)
    with torch.no_grad():
        a = ours.decode(z, generator=torch.Generator().manual_seed(1), tiling=DIFFUSION_TILING)
        b = ours.decode(z, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_intervals_merge_a_short_remnant():
    assert _intervals(9, 4, 2, 3) == [(0, 4), (2, 6), (4, 8), (6, 9)]
    assert _intervals(6, 4, 2, 3) == [(0, 4), (2, 6)]
    assert _intervals(3, 4, 2, 3) == [(0, 3)]
    assert DIFFUSION_TILING == TilingConfig(768, 768, 80, 704, 704, 56)
