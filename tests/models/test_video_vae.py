"""Video VAE against diffusers' AutoencoderKLLTXVideo, same weights, fp32, one tiny model per layout."""

import dataclasses

import pytest
import torch

from ltxengine.config import VideoVAEConfig
from ltxengine.models.video_vae import TilingConfig, VideoVAE
from ltxengine.ops import TORCH_OPS
from ltxengine.presets import TINY_VAE_095

from ..helpers import assert_close_scaled, preset_kwargs, randomize_vae_

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLLTXVideo  # noqa: E402

# fp32 on CPU, same torch convs/norms on both sides: the only admissible difference is fp32 rounding
# from a different op order (reshapes, reductions). Measured error is 0 (bit-equal) everywhere; a
# wiring error shows up at >1e-2.
REL_TOL = 1e-5

# 0.9.5 (presets.TINY_VAE_095, bench's --smoke VAE): space-to-depth downsamplers of all three kinds
_095 = preset_kwargs(TINY_VAE_095, VideoVAEConfig())
CASES = {
    # 0.9.0: strided-conv downsamplers, channel-changing conv_out / conv_in resnets, no conditioning
    "0.9.0": dict(latent_channels=8, block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(8, 16, 32, 32),
                  layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 2, 1)),
    # 0.9.1: timestep-conditioned decoder, noise injection, residual upsamplers with factor 2
    "0.9.1": dict(latent_channels=8, block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(16, 32, 64),
                  layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 2, 1),
                  decoder_spatio_temporal_scaling=(True, True, True), decoder_inject_noise=(True, True, True, False),
                  upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=True),
    "0.9.5": _095,
}
# Few layers -> a receptive field of ~3 latents, so tiles have interiors untouched by tile borders.
SHALLOW = dict(_095, layers_per_block=(0,) * 5, decoder_layers_per_block=(0,) * 4)
SMALL_TILES = TilingConfig(64, 64, 16, 32, 32, 8)  # 2x2 latent tiles, stride 1; 2-latent-frame tiles


def make_pair(name, seed=0):
    cfg = CASES[name]
    torch.manual_seed(seed)
    ref = AutoencoderKLLTXVideo(**cfg).eval()
    randomize_vae_(ref, seed + 1)
    ours = VideoVAE(VideoVAEConfig(**cfg)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _temb(cfg, batch):
    return torch.linspace(0.03, 0.1, batch) if cfg.get("timestep_conditioning") else None


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_keys_equal_diffusers(name):
    ref, ours = make_pair(name)
    assert set(ours.state_dict()) == set(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


@pytest.mark.parametrize("name", list(CASES))
def test_encode_decode_match_diffusers(name):
    ref, ours = make_pair(name)
    x = torch.randn(2, 3, 17, 64, 96)
    z = torch.randn(2, 8, 3, 2, 3)
    temb = _temb(CASES[name], 2)
    with torch.no_grad():
        posterior = ref.encode(x).latent_dist
        h = ours.encode(x)
        err_e = assert_close_scaled(h, posterior.parameters, REL_TOL, f"{name} encode")
        assert torch.equal(ours.latent_dist_mode(h), posterior.mode())
        torch.manual_seed(7)
        expected = ref.decode(z, temb).sample
        torch.manual_seed(7)
        err_d = assert_close_scaled(ours.decode(z, temb), expected, REL_TOL, f"{name} decode")
    print(f"{name}: encode err {err_e:.2e}, decode err {err_d:.2e}")


def test_091_noise_injection_follows_global_rng():
    ref, ours = make_pair("0.9.1")
    z = torch.randn(1, 8, 2, 2, 2)
    temb = torch.tensor([0.05])
    with torch.no_grad():
        torch.manual_seed(11)
        expected = ref.decode(z, temb).sample
        torch.manual_seed(11)
        got = ours.decode(z, temb)
        torch.manual_seed(12)
        other_seed = ours.decode(z, temb)
        seeded = ours.decode(z, temb, generator=torch.Generator().manual_seed(11))
    err = assert_close_scaled(got, expected, REL_TOL, "0.9.1 noisy decode")
    assert (other_seed - got).abs().max() > 1e-3  # the noise really is injected
    assert torch.equal(seeded, got)  # an explicit generator draws the same stream
    print(f"0.9.1 noisy decode err {err:.2e}")


@pytest.mark.parametrize("name", list(CASES))
def test_tiled_paths_match_diffusers(name):
    ref, ours = make_pair(name)
    ref.enable_tiling(**dataclasses.asdict(SMALL_TILES))
    ref.use_framewise_decoding = True  # diffusers' switch for temporal tiling of encode and decode
    cfg, errs = CASES[name], []
    with torch.no_grad():
        # spatial only (9 frames fit one temporal tile) and temporal + spatial (25 frames)
        for shape in [(1, 3, 9, 96, 128), (1, 3, 25, 96, 64)]:
            x = torch.randn(shape)
            errs.append(assert_close_scaled(ours.encode(x, tiling=SMALL_TILES),
                                            ref.encode(x).latent_dist.parameters, REL_TOL, f"{name} enc {shape}"))
        # decode: spatial tiles only (<= 2 latent frames); temporal tiles differ from diffusers by
        # design (test_diffusers_temporal_tiled_decode_is_one_frame_late)
        for shape in [(1, 8, 2, 3, 4), (2, 8, 2, 3, 2)]:
            z, temb = torch.randn(shape), _temb(cfg, shape[0])
            torch.manual_seed(3)  # same noise for the 0.9.1 injection: tiles run in diffusers' order
            expected = ref.decode(z, temb).sample
            torch.manual_seed(3)
            errs.append(assert_close_scaled(ours.decode(z, temb, tiling=SMALL_TILES), expected, REL_TOL,
                                            f"{name} dec {shape}"))
    print(f"{name}: tiled errs {[f'{e:.1e}' for e in errs]}")


def test_posterior_sample_and_latent_normalization():
    ref, ours = make_pair("0.9.5")
    h = torch.randn(2, 16, 2, 3, 3) * 3
    h[:, 8:] = h[:, 8:] * 20  # log-variances beyond the [-30, 20] clamp
    with torch.no_grad():
        dist = diffusers.models.autoencoders.vae.DiagonalGaussianDistribution(h)
        expected = dist.sample(generator=torch.Generator().manual_seed(4))
        got = ours.sample(h, generator=torch.Generator().manual_seed(4))
        assert torch.equal(got, expected)
        assert torch.equal(ours.latent_dist_mode(h), dist.mode())
        z = torch.randn(2, 8, 2, 3, 3)
        mean, std = ours.latents_mean.view(1, -1, 1, 1, 1), ours.latents_std.view(1, -1, 1, 1, 1)
        ours.config = dataclasses.replace(ours.config, scaling_factor=0.7)
        assert torch.allclose(ours.normalize_latents(z), (z - mean) * 0.7 / std)
        assert torch.allclose(ours.denormalize_latents(ours.normalize_latents(z)), z, atol=1e-6)


def test_every_conv_goes_through_ops():
    seen = set()

    def counting_conv(x, weight, bias, stride, causal, **prologue):
        seen.add(id(weight))
        return TORCH_OPS.causal_conv3d(x, weight, bias, stride, causal, **prologue)

    ops = dataclasses.replace(TORCH_OPS, name="counting", causal_conv3d=counting_conv)
    for name in CASES:
        model = VideoVAE(VideoVAEConfig(**CASES[name]), ops=ops).eval()
        with torch.no_grad():
            model.decode(model.encode(torch.randn(1, 3, 9, 64, 64))[:, :8], _temb(CASES[name], 1))
        convs = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Conv3d)}
        assert convs and convs <= seen, name


# ---- tiled vs untiled (our model) ---------------------------------------------------------------
# Tiles see zero padding (space) / edge replication (time) at their borders, so tiled and untiled
# outputs differ within the receptive field of every interior tile border, and cross-faded seams
# are mixtures. What must hold: an output position that one tile alone produces (outside the
# cross-fade) and whose receptive field lies inside that tile's input window (or whose window edge
# is the image edge) equals the untiled output. The receptive radius R is measured by perturbing
# one input slice, plus one latent of margin. "Equals" is up to conv rounding only: oneDNN blocks a
# conv differently for a different input size, so even a single conv3d's interior values move by a
# few fp32 ulps between a crop and the full input. Measured: decode spatial 0, decode temporal
# 3.3e-6, encode spatial / temporal 7.4e-6 (output scale ~10, i.e. < 1e-6 relative), inside REL_TOL.

def _shallow():
    torch.manual_seed(0)
    model = VideoVAE(VideoVAEConfig(**SHALLOW)).eval()
    randomize_vae_(model, 1)
    return model


def _changed_range(fn, inp, dim, start, stop, out_dim):
    base = fn(inp)
    bumped = inp.clone()
    index = [slice(None)] * inp.ndim
    index[dim] = slice(start, stop)
    bumped[tuple(index)] += 1.0
    diff = (fn(bumped) - base).abs().amax(dim=[d for d in range(base.ndim) if d != out_dim])
    changed = diff.nonzero().flatten()
    return changed.min().item(), changed.max().item()


def _blend_len(lengths, k, blend):
    return 0 if k == 0 else min(lengths[k - 1], lengths[k], blend)


def _tiles_1d(n_in, tile, stride, out_per_in):
    """Latent/pixel tiles along one dim: starts, input windows and output lengths (spatial tiling)."""
    starts = list(range(0, n_in, stride))
    ends = [min(s + tile, n_in) for s in starts]
    return starts, ends, [(e - s) * out_per_in for s, e in zip(starts, ends)]


def _safe_spatial(n_lat, tile_lat, stride_lat, blend_out, out_per_lat, radius, decode):
    """Mask over output positions (pixels for decode, latents for encode) along one spatial dim."""
    starts, ends, lengths = _tiles_1d(n_lat, tile_lat, stride_lat, out_per_lat)
    n_out = n_lat * out_per_lat
    safe = torch.zeros(n_out, dtype=torch.bool)
    for p in range(n_out):
        k = p // (stride_lat * out_per_lat)
        latent = p // out_per_lat if decode else p
        pure = p - k * stride_lat * out_per_lat >= _blend_len(lengths, k, blend_out)
        inside_lo = starts[k] == 0 or latent - radius >= starts[k]
        inside_hi = ends[k] == n_lat or latent + radius <= ends[k] - 1
        safe[p] = pure and inside_lo and inside_hi
    return safe


def test_tiled_decode_spatial_equals_untiled_inside_tiles():
    model, temb = _shallow(), torch.tensor([0.05])
    tiling = TilingConfig(384, 384, 16, 320, 320, 8)  # 12-latent tiles, stride 10, 64 px cross-fade
    z = torch.randn(1, 8, 1, 24, 24)
    with torch.no_grad():
        lo, hi = _changed_range(lambda t: model.decode(t, temb), z, 3, 12, 13, 3)
        radius = max(12 - lo // 32, hi // 32 - 12) + 1
        full = model.decode(z, temb)
        tiled = model.decode(z, temb, tiling=tiling)
    safe_1d = _safe_spatial(24, 12, 10, 64, 32, radius, decode=True)
    safe = safe_1d[:, None] & safe_1d[None, :]
    # the tiles at 0 and 10 latents have checked interiors (the last, 4-latent tile is seam and border)
    assert all(safe_1d[k * 320:(k + 1) * 320].any() for k in range(2))
    err = assert_close_scaled(tiled[..., safe], full[..., safe], REL_TOL, "tile interiors")
    seam = (tiled - full)[..., ~safe].abs().max().item()
    assert seam > 1e-3  # tiling really happened (borders differ)
    print(f"decode spatial: R={radius} latents, interior err {err:.1e} on {safe.float().mean():.0%} of pixels, "
          f"max diff elsewhere {seam:.2e}")


def test_tiled_decode_temporal_equals_untiled_inside_tiles():
    """Frames one temporal tile alone produces, with their receptive field inside the tile, equal
    the untiled decode at the same index: no frame shift (unlike diffusers, see below)."""
    model, temb = _shallow(), torch.tensor([0.05])
    tiling = TilingConfig(64, 64, 96, 64, 64, 64)  # 12-latent-frame tiles, stride 8, 32-frame cross-fade
    z = torch.randn(1, 8, 25, 2, 2)
    with torch.no_grad():
        lo, hi = _changed_range(lambda t: model.decode(t, temb), z, 2, 12, 13, 2)
        radius = max(12 - lo // 8, (hi + 7) // 8 - 12) + 1
        full = model.decode(z, temb)
        tiled = model.decode(z, temb, tiling=tiling)
    assert tiled.shape == full.shape
    n_lat, tile_lat, stride_lat, blend = 25, 12, 8, 32
    starts = list(range(0, n_lat, stride_lat))
    ends = [min(s + tile_lat + 1, n_lat) for s in starts]  # latent window [s, e)
    lengths = [(e - s - 1) * 8 + 1 - (k > 0) for k, (s, e) in enumerate(zip(starts, ends))]
    frames = []  # output frames one tile alone produces, inside its receptive window
    t = 0
    for k, (s, e) in enumerate(zip(starts, ends)):
        for u in range(min(64 + (k == 0), lengths[k])):
            frame = s * 8 + u + (k > 0)  # later tiles dropped their lone first frame
            latent = (frame + 7) // 8
            assert frame == t  # tiles line up with the untiled frame index
            ok = u >= _blend_len(lengths, k, blend) and (s == 0 or latent - radius >= s) and \
                (e == n_lat or latent + radius <= e - 1)
            if ok and t < full.shape[2]:
                frames.append(t)
            t += 1
    assert any(f > 64 for f in frames) and any(f < 64 for f in frames)  # frames of several tiles checked
    err = assert_close_scaled(tiled[:, :, frames], full[:, :, frames], REL_TOL, "frame interiors")
    assert (tiled - full).abs().max() > 1e-3  # tiling really happened
    print(f"decode temporal: R={radius} latent frames, err {err:.1e} on {len(frames)} frames")


def test_diffusers_temporal_tiled_decode_is_one_frame_late():
    """Documents why our temporal tiling departs from diffusers: its tiled output, from the first
    seam on, matches the untiled decode one frame earlier (so its last frame is lost)."""
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKLLTXVideo(**SHALLOW).eval()
    ours = VideoVAE(VideoVAEConfig(**SHALLOW)).eval()
    ours.load_state_dict(ref.state_dict())
    ref.enable_tiling(64, 64, 96, 64, 64, 64)
    ref.use_framewise_decoding = True
    z, temb = torch.randn(1, 8, 25, 2, 2), torch.tensor([0.05])
    with torch.no_grad():
        theirs = ref.decode(z, temb).sample
        full = ours.decode(z, temb)
    # frames 100..119 come from the second tile's interior (past the 32-frame cross-fade at 65..96)
    late = (theirs[:, :, 100:120] - full[:, :, 99:119]).abs().max().item()
    aligned = (theirs[:, :, 100:120] - full[:, :, 100:120]).abs().max().item()
    assert late < 1e-4 < aligned


def test_tiled_encode_spatial_equals_untiled_inside_tiles():
    model = _shallow()
    tiling = TilingConfig(384, 384, 16, 320, 320, 8)  # 12-latent tiles, stride 10, 2-latent cross-fade
    x = torch.randn(1, 3, 1, 768, 768)
    with torch.no_grad():
        lo, hi = _changed_range(model.encode, x, 3, 384, 416, 3)
        radius = max(12 - lo, hi - 12) + 1
        full = model.encode(x)
        tiled = model.encode(x, tiling=tiling)
    safe_1d = _safe_spatial(24, 12, 10, 2, 1, radius, decode=False)
    safe = safe_1d[:, None] & safe_1d[None, :]
    assert all(safe_1d[k * 10:(k + 1) * 10].any() for k in range(2))
    err = assert_close_scaled(tiled[..., safe], full[..., safe], REL_TOL, "tile interiors")
    print(f"encode spatial: R={radius} latents, interior err {err:.1e}, "
          f"max diff elsewhere {(tiled - full)[..., ~safe].abs().max().item():.2e}")


def test_tiled_encode_temporal_equals_untiled_inside_tiles():
    model = _shallow()
    tiling = TilingConfig(64, 64, 128, 64, 64, 96)  # 16-latent-frame tiles, stride 12, 4-latent cross-fade
    x = torch.randn(1, 3, 241, 64, 64)
    with torch.no_grad():
        lo, hi = _changed_range(model.encode, x, 2, 8 * 10 - 7, 8 * 10 + 1, 2)
        assert lo == 10  # causal: a frame never changes earlier latents
        radius = hi - 10 + 1
        full = model.encode(x)
        tiled = model.encode(x, tiling=tiling)
    n_lat, stride_lat, blend = 31, 12, 4
    starts = list(range(0, 241, 96))
    lengths = [(min(i + 129, 241) - i - 1) // 8 + (i == 0) for i in starts]  # later tiles drop latent 0
    safe = []
    for q in range(n_lat):
        k = 0 if q <= stride_lat else (q - 1) // stride_lat
        first = starts[k] // 8 + 1  # first real latent of tile k (its latent 0 is the lone start frame)
        ok = k == 0 or (q - first >= _blend_len(lengths, k, blend) and q - radius >= first)
        safe.append(ok)
    safe = torch.tensor(safe)
    assert safe[stride_lat + 1:].any()
    err = assert_close_scaled(tiled[:, :, safe], full[:, :, safe], REL_TOL, "tile interiors")
    print(f"encode temporal: R={radius} latent frames, err {err:.1e} on {int(safe.sum())}/{n_lat} latents, "
          f"max diff elsewhere {(tiled - full)[:, :, ~safe].abs().max().item():.2e}")


# ---- validation -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vae091():
    return make_pair("0.9.1")[1]


@pytest.mark.parametrize("shape, match", [
    ((3, 9, 64, 64), r"x must be a 5-D"),
    ((1, 4, 9, 64, 64), r"x must have 3 channels"),
    ((1, 3, 9, 48, 64), r"x height and width must be multiples of .* 32, got 48x64"),
    ((1, 3, 9, 64, 40), r"x height and width"),
    ((1, 3, 10, 64, 64), r"x frames must be of the form 8k\+1 .* got 10"),
])
def test_encode_validation(vae091, shape, match):
    with pytest.raises(ValueError, match=match):
        vae091.encode(torch.zeros(shape))


def test_decode_validation(vae091):
    z = torch.zeros(2, 8, 2, 1, 1)
    with pytest.raises(ValueError, match=r"z must be a 5-D"):
        vae091.decode(z[0], 0.05)
    with pytest.raises(ValueError, match=r"z must have 8 channels .* got 4"):
        vae091.decode(z[:, :4], 0.05)
    with pytest.raises(ValueError, match=r"temb is required"):
        vae091.decode(z)
    with pytest.raises(ValueError, match=r"temb must be a scalar or have shape \(B,\) = \(2,\), got \(3,\)"):
        vae091.decode(z, torch.zeros(3))
    with torch.no_grad():
        assert torch.equal(vae091.decode(z, 0.05, generator=torch.Generator().manual_seed(0)),
                           vae091.decode(z, torch.tensor([0.05, 0.05]), generator=torch.Generator().manual_seed(0)))
    plain = VideoVAE(VideoVAEConfig(**CASES["0.9.0"]))
    with pytest.raises(ValueError, match=r"temb must be None"):
        plain.decode(torch.zeros(1, 8, 1, 1, 1), torch.tensor([0.05]))


def test_tiling_config_validation(vae091):
    with pytest.raises(ValueError, match=r"tile_sample_stride_height must be a positive integer, got 0"):
        TilingConfig(tile_sample_stride_height=0)
    with pytest.raises(ValueError, match=r"tile_sample_stride_width must be <= tile_sample_min_width \(256\), got 448"):
        TilingConfig(tile_sample_min_width=256)
    with pytest.raises(ValueError, match=r"tile_sample_stride_num_frames must be a multiple of .* 8, got 4"):
        vae091.decode(torch.zeros(1, 8, 1, 1, 1), 0.05, tiling=TilingConfig(tile_sample_stride_num_frames=4))
    with pytest.raises(ValueError, match=r"tile_sample_min_height must be a multiple of .* 32, got 500"):
        vae091.encode(torch.zeros(1, 3, 1, 32, 32), tiling=TilingConfig(tile_sample_min_height=500))


@pytest.mark.parametrize("preset, enc, dec", [("VAE_090", 180.4e6, 238.8e6), ("VAE_091", 180.4e6, 754.6e6),
                                              ("VAE_095", 694.1e6, 552.8e6)])
def test_released_presets_build_on_meta(preset, enc, dec):
    """Encoder/decoder sizes of the released VAEs (shared/reference, measured with diffusers)."""
    import ltxengine.config as config

    with torch.device("meta"):
        vae = VideoVAE(getattr(config, preset))
    assert (vae.spatial_compression_ratio, vae.temporal_compression_ratio) == (32, 8)
    assert round(sum(p.numel() for p in vae.encoder.parameters()) / 1e5) == round(enc / 1e5)
    assert round(sum(p.numel() for p in vae.decoder.parameters()) / 1e5) == round(dec / 1e5)
