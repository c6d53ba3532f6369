"""LoRAs for the tests: random LoRA tensors in the Lightricks (or diffusers) layout over a model's linear
layers, the tiny LTX-2 transformer they go on, and a bitwise comparison. Used by the LoRA tests."""

from __future__ import annotations

import torch

from ..models import ltx2_transformer_fixtures as ltx2_case

RANK = 4


def ltx2_model(dtype=torch.float32):
    _, ours, cfg = ltx2_case.pair("split64")
    return ours.to(dtype), cfg


def linears(model) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def random_lora(model, rename=ltx2_case.to_original, modules=None, seed=0, exact=False, dtype=torch.float32,
                prefix="diffusion_model.", down_up=False):
    """A LoRA over ``modules`` (default: every linear layer) of ``model`` in the Lightricks layout
    (or the diffusers one with prefix="transformer." and rename=str)."""
    g = torch.Generator().manual_seed(seed)
    names = ("lora_down", "lora_up") if down_up else ("lora_A", "lora_B")
    sd = {}
    for path in modules or linears(model):
        out_f, in_f = model.get_submodule(path).weight.shape
        if exact:  # entries k/8: every product and sum below is exact in bf16
            a = torch.randint(-1, 2, (RANK, in_f), generator=g) / 8.0
            b = torch.randint(-1, 2, (out_f, RANK), generator=g) / 8.0
        else:
            a = torch.randn(RANK, in_f, generator=g) * 0.3
            b = torch.randn(out_f, RANK, generator=g) * 0.3
        sd[f"{prefix}{rename(path)}.{names[0]}.weight"] = a.to(dtype)
        sd[f"{prefix}{rename(path)}.{names[1]}.weight"] = b.to(dtype)
    return sd


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    ints = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(ints), b.view(ints))
