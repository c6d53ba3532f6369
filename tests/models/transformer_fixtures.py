"""The tiny LTX-Video transformer of the tests: diffusers' LTXVideoTransformer3DModel with random weights
and ours loaded from it. Used by the transformer and LoRA tests."""

import pytest
import torch

from ltxengine.config import TransformerConfig, parse_config
from ltxengine.models.transformer import LTXVideoTransformer
from ltxengine.presets import TINY_2B

from ..helpers import perturb_, preset_kwargs

diffusers = pytest.importorskip("diffusers")

TINY = preset_kwargs(TINY_2B, TransformerConfig())  # bench's --smoke LTX-Video transformer


def make_pair(**overrides):
    cfg = dict(TINY, **overrides)
    torch.manual_seed(0)
    ref = diffusers.LTXVideoTransformer3DModel(**cfg).eval()
    perturb_(ref, seed=1)
    ours = LTXVideoTransformer(parse_config(TransformerConfig, cfg, "test")).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def inputs(batch=2, f=3, h=4, w=5, L=7, cin=8, cap=12, seed=0):
    """Seeded (latents, text, text mask, timesteps) for make_pair's models; sample 0's text is padded."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, f * h * w, cin, generator=g)
    text = torch.randn(batch, L, cap, generator=g)
    mask = torch.ones(batch, L)
    mask[0, 5:] = 0  # padded text tokens must be masked out
    t = torch.tensor([937.5, 120.0])[:batch]
    return x, text, mask, t
