"""LTX-2.3+'s per-step text-context modulation ctx * (1 + scale_kv) + shift_kv as one op (models/residual.py
``modulated_context``: ``ops.ada_norm`` of kind "none"), which under fp8-scaled-mm with packed to_k /
to_v also writes their per-token fp8 input (``ops.ada_norm_fp8``, passed on as ``context8``).

Checked on the tiny LTX-2.3 transformer (cross_attn_mod, prompt_adaln: kv (B, 1, 2, D); with its
modulation tables packed: kv hoisted out of the block loop; static_kv: the (2, D) table alone):
- kernels="torch", bf16 and fp32: bit-identical to the eager expression (``modulating_norm`` forced
  False: the code before the op), the op called once per text cross-attention (2 per block);
- fp8 block linears, k/v packed: the torch route bit-identical to the unfused one (to_k / to_v
  quantizing the modulated context themselves: ``takes_fp8_context`` forced False) and to the eager
  one, the quantization written by the op (2 per block) and to_k / to_v's own quantizer skipped;
  the Triton rows (interpreted; GEMMs the reference) bit-identical to their own unfused route;
- Triton rows against the eager bf16 route: not bit-equal (the kernel rounds once from fp32, eager
  bf16 rounds 1 + scale, the product and the sum), so both are compared with the same model in fp32
  (reference ops): the fused route may be at most twice as far from it as the eager route, plus a
  bf16 ulp of the output scale (house rule 1; the outputs differ by bf16 noise only, a wrong table,
  row or stream moves them by far more: the swapped shift / scale control below fails the bound);
- fallbacks: a LoRA-style hook on to_k / to_v (it sees the bf16 modulated context; no fp8 copy
  written), and a backend whose ada_norm has no kind "none" (kernels="cuda": the eager expression).
"""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch

from ltxengine.models import residual
from ltxengine.models.packing import pack_projections, pack_tables
from ltxengine.models.residual import modulating_norm
from ltxengine.models.transformer import Attention
from ltxengine.ops import TORCH_OPS, build_backend, compose_auto, get_ops, native, set_ops
from tests.models import ltx2_transformer_fixtures as ltx2
from tests.models.fp8_fixtures import ltx2_fp8

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # GELU's -inf limit


def _model(name="v23", dtype=torch.bfloat16, hoisted=False):
    _, model, cfg = ltx2.pair(name)
    model = model.to(dtype)
    if hoisted:
        assert pack_tables(model) > 0
    x = {k: v.to(dtype) if k in ("video", "audio", "vtext", "atext") else v for k, v in ltx2.inputs(cfg).items()}
    return model, x


def _fp8_model():
    model, _, x, _ = ltx2_fp8("v23")
    assert pack_projections(model) > 0 and model.transformer_blocks[0].attn2.takes_fp8_context()
    return model, x


def _counting(ops):
    """``ops`` whose ada_norm / ada_norm_fp8 count their kind "none" calls and fp8_linear its calls (both
    norms wrapped alike: the rule reads them as the backend's own, as for Triton)."""
    calls = collections.Counter()

    def counted(name, fn):
        def call(*args, **kwargs):
            calls[name] += name == "fp8_linear" or (args[4] if len(args) > 4 else kwargs.get("kind")) == "none"
            return fn(*args, **kwargs)
        return call

    names = ("ada_norm", "ada_norm_fp8", "fp8_linear")
    return dataclasses.replace(ops, **{n: counted(n, getattr(ops, n)) for n in names}), calls


def _run(model, x, ops, monkeypatch=None, eager=False, unfused=False):
    set_ops(model, ops)
    if not (eager or unfused):
        return ltx2.run_ours(model, x)
    with monkeypatch.context() as m:
        if eager:  # the code before the op: ctx * (1 + scale_kv) + shift_kv in torch
            m.setattr(residual, "modulating_norm", lambda ops: False)
        if unfused:  # the modulation written in 16 bits, to_k / to_v quantizing it themselves
            m.setattr(Attention, "takes_fp8_context", lambda self: False)
        return ltx2.run_ours(model, x)


def _equal(a, b) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("name, hoisted", [("v23", False), ("v23", True), ("static_kv", False)],
                         ids=["per-step kv", "hoisted kv", "static table"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_torch_backend_is_bit_identical_to_the_eager_expression(monkeypatch, dtype, name, hoisted):
    model, x = _model(name, dtype, hoisted)
    eager = _run(model, x, TORCH_OPS, monkeypatch, eager=True)
    assert _equal(_run(model, x, TORCH_OPS), eager)
    ops, calls = _counting(TORCH_OPS)
    assert _equal(_run(model, x, ops), eager)
    assert calls["ada_norm"] == 2 * len(model.transformer_blocks) and calls["ada_norm_fp8"] == 0


def test_fp8_torch_route_writes_the_kv_input_bit_identically(monkeypatch):
    model, x = _fp8_model()
    ops, calls = _counting(TORCH_OPS)
    unfused = _run(model, x, ops, monkeypatch, unfused=True)
    blocks = len(model.transformer_blocks)
    assert calls["ada_norm"] == 2 * blocks and calls["ada_norm_fp8"] == 0
    before = calls["fp8_linear"]
    calls.clear()
    fused = _run(model, x, ops)
    # the text K/V's packed scaled_mm read the op's (q8, scale): two fp8_linear (quantizing) calls fewer a block
    assert calls["ada_norm_fp8"] == 2 * blocks and calls["ada_norm"] == 0
    assert calls["fp8_linear"] == before - 2 * blocks
    assert _equal(fused, unfused) and _equal(fused, _run(model, x, TORCH_OPS, monkeypatch, eager=True))


def _triton_rows(base=TORCH_OPS):
    triton = get_ops("triton", "cpu")  # the row kernels only: the rest stays the reference (fast enough)
    return dataclasses.replace(base, ada_norm=triton.ada_norm, ada_norm_fp8=triton.ada_norm_fp8)


def test_fp8_triton_rows_are_bit_identical_to_their_unfused_route(monkeypatch):
    model, x = _fp8_model()
    ops, calls = _counting(_triton_rows())
    unfused = _run(model, x, ops, monkeypatch, unfused=True)
    fused = _run(model, x, ops)
    assert calls["ada_norm_fp8"] == 2 * len(model.transformer_blocks)
    assert _equal(fused, unfused)


def _scaled_err(a, b) -> float:
    return max(((u.double() - v.double()).abs().max() / v.double().abs().max()).item() for u, v in zip(a, b))


def test_triton_rows_within_twice_the_eager_bf16_error(monkeypatch):
    model, x = _model()
    fp32_model, x32 = _model(dtype=torch.float32)
    exact = _run(fp32_model, x32, TORCH_OPS)
    ops = _triton_rows()
    fused, eager = _run(model, x, ops), _run(model, x, ops, monkeypatch, eager=True)
    assert not _equal(fused, eager)  # different roundings: the check below is not vacuous
    err_fused, err_eager = _scaled_err(fused, exact), _scaled_err(eager, exact)
    assert err_fused <= 2 * err_eager + 2 ** -8, (err_fused, err_eager)
    # control: the same op with shift and scale swapped lands far outside that bound
    with monkeypatch.context() as m:
        swap = residual.modulated_context
        m.setattr("ltxengine.models.ltx2_block.modulated_context",
                  lambda ops, c, sh, sc, eps, r: swap(ops, c, sc, sh, eps, r))
        wrong = _run(model, x, ops)
    assert _scaled_err(wrong, exact) > 2 * err_eager + 2 ** -8


def test_lora_style_hook_on_to_k_keeps_the_plain_modulation(monkeypatch):
    model, x = _fp8_model()
    seen = []
    for block in model.transformer_blocks:  # a LoRA branch attaches a forward hook the same way
        block.attn2.to_k.register_forward_hook(lambda module, args, output: seen.append(args[0].dtype))
    ops, calls = _counting(TORCH_OPS)
    got = _run(model, x, ops)
    blocks = len(model.transformer_blocks)
    assert calls["ada_norm"] == blocks and calls["ada_norm_fp8"] == blocks  # video: plain (hooked); audio: fp8
    assert seen == [torch.bfloat16] * len(model.transformer_blocks)
    assert _equal(got, _run(model, x, TORCH_OPS, monkeypatch, eager=True))


def _cuda_like_norm(x, shift, scale, eps, kind="rms", *, out=None):
    # kernels="cuda"'s ada_norm: a kernel of its own (not the torch backend's), rms and layer only
    if kind not in ("rms", "layer"):
        raise ValueError(f"ada_norm: kind must be 'rms' or 'layer', got {kind!r}")
    return native.ada_norm(x, shift, scale, eps, kind, out=out)


@pytest.mark.parametrize("fp8", [False, True])
def test_a_backend_without_the_kind_keeps_the_eager_expression(monkeypatch, fp8):
    model, x = _fp8_model() if fp8 else _model()
    ops = dataclasses.replace(TORCH_OPS, ada_norm=_cuda_like_norm)
    assert not modulating_norm(ops)
    assert _equal(_run(model, x, ops), _run(model, x, TORCH_OPS, monkeypatch, eager=True))


def test_the_rule_matches_the_backends_kinds():
    from ltxengine.ops import cuda

    with pytest.raises(ValueError, match="ada_norm: kind must be 'rms' or 'layer', got 'none'"):
        cuda.ada_norm(torch.zeros(1, 1, 8), None, None, 1e-6, "none")  # checked before anything else
    torch_only = {"torch": TORCH_OPS}
    triton, cuda_ops = build_backend("triton"), build_backend("cuda")
    cases = {"torch": TORCH_OPS, "triton": triton, "cuda": cuda_ops, "auto, no Triton": compose_auto(
        dict(torch_only, cuda=cuda_ops)), "auto": compose_auto(dict(torch_only, triton=triton, cuda=cuda_ops))}
    rules = {name: modulating_norm(ops) for name, ops in cases.items()}
    assert rules == {"torch": True, "triton": True, "cuda": False, "auto, no Triton": False, "auto": True}
    for name, ops in cases.items():  # wherever the rule says yes, the ada_norm is not CUDA's
        assert not rules[name] or dict(ops.sources).get("ada_norm", "torch") in ("torch", "triton"), name
