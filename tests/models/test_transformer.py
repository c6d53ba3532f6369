"""LTX-Video transformer against diffusers' LTXVideoTransformer3DModel, same weights, fp32."""

import pytest
import torch

from ltxengine.config import TRANSFORMER_13B, TRANSFORMER_2B, ConfigError, TransformerConfig, parse_config
from ltxengine.models.transformer import LTXVideoTransformer, coords_positions, grid_positions

from ..helpers import assert_close_scaled
from .transformer_fixtures import TINY, inputs, make_pair

diffusers = pytest.importorskip("diffusers")

# fp32 on CPU: the two implementations differ only in op order and fused vs unfused kernels
# (torch RMSNorm, SDPA). Measured errors are ~1e-7 of the output scale; 1e-5 leaves headroom
# without hiding a wiring error (those show up at >1e-2).
REL_TOL = 1e-5


@pytest.mark.parametrize("head_dim", [8, 6])  # inner 16: D % 6 = 4 front padding; inner 12: none
def test_matches_diffusers_grid_rope(head_dim):
    ref, ours = make_pair(attention_head_dim=head_dim, cross_attention_dim=2 * head_dim)
    x, text, mask, t = inputs()
    scale = (8 / 25, 32, 32)
    with torch.no_grad():
        expected = ref(x, text, t, mask, num_frames=3, height=4, width=5, rope_interpolation_scale=scale).sample
        rope = ours.rope(grid_positions(2, 3, 4, 5, scale))
        actual = ours(x, t, context=ours.prepare_context(text, mask), rope=rope)
    assert_close_scaled(actual, expected, REL_TOL, "grid rope")


def test_matches_diffusers_per_token_timesteps_and_coords():
    ref, ours = make_pair()
    x, text, mask, _ = inputs()
    n = x.shape[1]
    t = torch.full((2, n), 700.0)
    t[:, :20] = 0.0  # image-conditioned first latent frame: timestep 0
    g = torch.Generator().manual_seed(3)
    coords = torch.rand(2, 3, n, generator=g) * torch.tensor([4.0, 256.0, 256.0])[None, :, None]
    with torch.no_grad():
        expected = ref(x, text, t, mask, video_coords=coords).sample
        actual = ours(x, t, context=ours.prepare_context(text, mask), rope=ours.rope(coords_positions(coords)))
    assert_close_scaled(actual, expected, REL_TOL, "per-token timesteps")


def test_mask_changes_output():
    """Guards the test above: the masked tokens really do matter."""
    _, ours = make_pair()
    x, text, mask, t = inputs()
    rope = ours.rope(grid_positions(2, 3, 4, 5, None))
    with torch.no_grad():
        a = ours(x, t, context=ours.prepare_context(text, mask), rope=rope)
        b = ours(x, t, context=ours.prepare_context(text, torch.ones_like(mask)), rope=rope)
    assert (a[0] - b[0]).abs().max() > 1e-3
    assert torch.equal(a[1], b[1])


def test_state_dict_keys_equal_diffusers():
    ref, ours = make_pair()
    assert list(ours.state_dict().keys()) == list(ref.state_dict().keys())


@pytest.mark.parametrize("cfg, expected", [(TRANSFORMER_2B, 1_923_385_472), (TRANSFORMER_13B, 13_042_569_344)])
def test_released_configs_parameter_count_on_meta(cfg, expected):
    with torch.device("meta"):
        model = LTXVideoTransformer(cfg)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("key, value, match", [
    ("qk_norm", "rms_norm", "qk_norm"),
    ("activation_fn", "gelu", "activation_fn"),
    ("norm_elementwise_affine", True, "norm_elementwise_affine"),
    ("patch_size", 2, "patch_size"),
    ("cross_attention_dim", 32, "cross_attention_dim"),
    ("frobnicate", 1, "unknown config option 'frobnicate'"),
])
def test_config_refuses_unsupported(key, value, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(TransformerConfig, dict(TINY, **{key: value}), "transformer/config.json")


def test_forward_validates_shapes():
    _, ours = make_pair()
    x, text, mask, t = inputs()
    ctx = ours.prepare_context(text, mask)
    rope = ours.rope(grid_positions(2, 3, 4, 5, None))
    with pytest.raises(ValueError, match="hidden_states must be"):
        ours(x[..., :4], t, context=ctx, rope=rope)
    with pytest.raises(ValueError, match="timestep must have shape"):
        ours(x, t[:1], context=ctx, rope=rope)
    with pytest.raises(ValueError, match="rope tables must be"):
        ours(x, t, context=ctx, rope=ours.rope(grid_positions(2, 2, 4, 5, None)))
    with pytest.raises(ValueError, match="context must be"):
        ours(x, t, context=(text, None), rope=rope)
