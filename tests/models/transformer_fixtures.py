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
