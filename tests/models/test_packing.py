"""Attention input projections packed into one GEMM (ltxengine/models/packing.py).

fp32 on this CPU a (3I, K) GEMM gives bit for bit the three (I, K) GEMMs' rows (each output
element is one dot product over K either way), so packed and unpacked outputs are compared with
torch.equal; a BLAS that blocked the wider N differently could round differently (then an
assert_close_scaled at 1e-6 would be the budget: one fp32 GEMM's rounding).
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

from ltxengine.loading.export import save_component
from ltxengine.loading.lora import LoraSet, LoraWeights
from ltxengine.models.ltx2_transformer import Skip
from ltxengine.models.packing import joined, pack_projections, packable
from ltxengine.models.transformer import Attention, grid_positions
from ltxengine.ops import TORCH_OPS, set_ops
from ltxengine.quant.fp8 import convert_to_fp8
from tests.loading.lora_fixtures import random_lora
from tests.models import ltx2_transformer_fixtures as ltx2
from tests.models.transformer_fixtures import inputs, make_pair


def ltxv_run(model, dtype=torch.float32):
    x, text, mask, t = inputs()
    x, text = x.to(dtype), text.to(dtype)
    with torch.no_grad():
        ctx = model.prepare_context(text, mask)
        rope = model.rope(grid_positions(2, 3, 4, 5, None))
        plain = model(x, t, context=ctx, rope=rope)
        precomputed = model(x, t, context=ctx, rope=rope, cross_kv=model.cross_kv(ctx[0]))
    return torch.cat([plain, precomputed])


def ltx2_run(model, cfg):
    x = ltx2.inputs(cfg)
    # STG on block 0 (keep False: v alone), a2v off for sample 1 (a per-sample keep blend)
    outs = [*ltx2.run_ours(model, x), *ltx2.run_ours(model, x, skip=[Skip.stg([0]), Skip(a2v=[0])])]
    return torch.cat([o.flatten() for o in outs])


def counting(model):
    """The model's ops with linear counting the rows of every weight it is given."""
    rows = []

    def linear(x, w, b):
        rows.append(w.shape[0])
        return TORCH_OPS.linear(x, w, b)
    set_ops(model, dataclasses.replace(TORCH_OPS, linear=linear))
    return rows


def storages(model) -> dict[int, int]:
    return {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}


def test_ltx_video_packed_equals_unpacked_with_one_gemm_per_attention():
    _, model = make_pair()
    packed = copy.deepcopy(model)
    layers = len(model.transformer_blocks)
    assert pack_projections(packed) == 2 * layers
    expected = ltxv_run(model)
    rows = counting(packed)
    assert torch.equal(ltxv_run(packed), expected)
    inner = model.config.inner_dim
    # each forward: attn1's q/k/v as one (3I) GEMM, attn2's k/v as one (2I) (inline, then via cross_kv)
    assert rows.count(3 * inner) == 2 * layers and rows.count(2 * inner) == 2 * layers


@pytest.mark.parametrize("name", ["split64", "v23"])
def test_ltx2_packed_equals_unpacked(name):
    """2.0 and 2.3 (gated attention, text K/V recomputed per step from modulated context)."""
    _, model, cfg = ltx2.pair(name)
    packed = copy.deepcopy(model)
    attns = [m for m in packed.modules() if isinstance(m, Attention)]
    assert pack_projections(packed) == len(attns) == 6 * cfg.num_layers
    assert all(joined(packable(a)) is not None for a in attns)
    expected = ltx2_run(model, cfg)
    rows = counting(packed)
    assert torch.equal(ltx2_run(packed, cfg), expected)
    blocks = cfg.num_layers
    assert rows.count(3 * cfg.inner_dim) > 0 and rows.count(2 * cfg.audio_inner_dim) >= blocks  # a2v's k/v


def test_parameters_become_views_without_extra_memory():
    _, model, _ = ltx2.pair("v23")
    before = {name: (id(p), p.detach().clone()) for name, p in model.named_parameters()}
    nbytes = sum(storages(model).values())
    pack_projections(model)
    assert sum(storages(model).values()) == nbytes
    assert {name: id(p) for name, p in model.named_parameters()} == {n: i for n, (i, _) in before.items()}
    assert all(torch.equal(p, before[name][1]) for name, p in model.named_parameters())
    attn = model.transformer_blocks[0].attn1
    assert attn.to_k.weight.untyped_storage().data_ptr() == attn.to_q.weight.untyped_storage().data_ptr()
    assert list(model.state_dict()) == list(before)
    assert pack_projections(model) == 6 * len(model.transformer_blocks)  # again: nothing copied
    assert attn.to_q.weight.data_ptr() == joined(packable(attn))[0].data_ptr()


def test_export_round_trips(tmp_path):
    _, model = make_pair()
    pack_projections(model)
    save_component(model, tmp_path)  # safetensors refuses tensors sharing memory: export copies them
    saved = load_file(str(tmp_path / "diffusion_pytorch_model.safetensors"))
    state = model.state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], v) for k, v in state.items())


def test_a_replaced_parameter_falls_back_to_separate_projections():
    _, model = make_pair()
    packed = copy.deepcopy(model)
    pack_projections(packed)
    attn = packed.transformer_blocks[0].attn1
    attn.to_k.weight = nn.Parameter(attn.to_k.weight.detach().clone())
    assert joined(packable(attn)) is None
    assert torch.equal(ltxv_run(packed), ltxv_run(model))
    assert pack_projections(packed) == 2 * len(packed.transformer_blocks)  # packs it again
    assert joined(packable(attn)) is not None


def test_module_to_and_fp8_layers_fall_back():
    _, model = make_pair()
    packed = copy.deepcopy(model)
    pack_projections(packed)
    packed.to(torch.float64).to(torch.float32)  # new storage per parameter
    attn = packed.transformer_blocks[0].attn1
    assert joined(packable(attn)) is None
    assert torch.equal(ltxv_run(packed), ltxv_run(model))
    pack_projections(packed)
    fp8 = convert_to_fp8(copy.deepcopy(packed), "fp8-cast")
    assert pack_projections(fp8) == 0
    assert torch.equal(ltxv_run(fp8), ltxv_run(convert_to_fp8(copy.deepcopy(model), "fp8-cast")))


def test_lora_merge_and_unmerge_keep_the_packing():
    _, model, cfg = ltx2.pair("split64")
    packed = copy.deepcopy(model)
    pack_projections(packed)
    base = ltx2_run(model, cfg)
    weights = LoraWeights.load(random_lora(model, seed=8))
    sets = LoraSet(model), LoraSet(packed)
    for lora_set in sets:
        lora_set.apply([(weights, 0.7)])
    attns = [m for m in packed.modules() if isinstance(m, Attention)]
    assert all(joined(packable(a)) is not None for a in attns)  # merged in place
    merged = ltx2_run(model, cfg)
    assert (merged - base).abs().max() > 1e-3  # the LoRA matters
    assert torch.equal(ltx2_run(packed, cfg), merged)
    for lora_set in sets:
        lora_set.clear()
    assert all(joined(packable(a)) is not None for a in attns)
    assert torch.equal(ltx2_run(packed, cfg), base)


def test_the_engine_packs_its_transformer(tmp_path):
    from ltxengine import Engine
    from tests.pipelines.fixtures import build_pipeline_folder

    engine = Engine.from_pretrained(build_pipeline_folder(tmp_path, "tiny-095"), device="cpu", dtype=torch.float32)
    attns = [m for m in engine.transformer.modules() if isinstance(m, Attention)]
    assert attns and all(joined(packable(a)) is not None for a in attns)
    engine.stream_blocks(1)  # the blocks' tensors laid out in the offload's buffers, biases between: unpacked
    assert not any(joined(packable(a)) is not None for a in attns)
    engine.stream_blocks(None)  # resident again: packed again
    assert all(joined(packable(a)) is not None for a in attns)


def test_the_transformer_is_packed_again_after_a_move_between_stages(monkeypatch):
    from ltxengine.executor.residency import Residency

    _, model = make_pair()
    pack_projections(model)
    residency = Residency("cpu")
    residency.offload, residency.transformer = frozenset({"transformer_between_stages"}), model

    def move(name, module, device):  # what a host <-> device round trip does: a storage per tensor
        for p in module.parameters():
            p.data = p.data.clone()
    monkeypatch.setattr(residency, "_move", move)
    attn = model.transformer_blocks[0].attn1
    with residency.use("text_encoder", None):
        assert joined(packable(attn)) is None
    assert joined(packable(attn)) is not None


# -- fp8 GEMM layers (quantization="fp8-scaled-mm", dynamic per-token input scales) -------------
# Packed, x is quantized once (the same e4m3 values and per-row scales each layer computes from
# it) and each output element is the same fp32 dot product times the same two scales plus the same
# bias, rounded once: torch.equal on the reference ops (the caveat of the module docstring about a
# BLAS blocking a wider N differently applies here too).

def block_linears(model) -> list[str]:
    """Every linear of every block (the policy's own targets skip the first and last five blocks,
    all of a tiny model): the gates too, whose width differs from q's, so they stay unpacked."""
    return [n for n, m in model.named_modules() if n.startswith("transformer_blocks.") and isinstance(m, nn.Linear)]


def fp8_model(model, **kwargs):
    model = copy.deepcopy(model).to(torch.bfloat16)
    return convert_to_fp8(model, "fp8-scaled-mm", names=block_linears(model), **kwargs)


def fp8_calls(model):
    """The model's ops with fp8_linear recording (weight rows, weight scale) of every call, and
    scaled_mm (on an input its adaLN quantized: attn1's q/k/v, ``residual_norm_fp8``) the same."""
    calls = []

    def fp8_linear(x, w, scale, *args, **kwargs):
        calls.append((w.shape[0], scale))
        return TORCH_OPS.fp8_linear(x, w, scale, *args, **kwargs)

    def scaled_mm(a, w, sa, scale, *args, **kwargs):
        calls.append((w.shape[0], scale))
        return TORCH_OPS.scaled_mm(a, w, sa, scale, *args, **kwargs)
    set_ops(model, dataclasses.replace(TORCH_OPS, fp8_linear=fp8_linear, scaled_mm=scaled_mm))
    return calls


def ltxv16(model):
    return ltxv_run(model, torch.bfloat16)


def bf16(x):
    return {k: v.bfloat16() if v.is_floating_point() else v for k, v in x.items()} if isinstance(x, dict) else x


def test_fp8_projections_quantize_their_input_once_and_equal_the_layers():
    _, model = make_pair()
    unpacked = fp8_model(model)
    packed = copy.deepcopy(unpacked)
    layers = len(model.transformer_blocks)
    assert pack_projections(packed) == 2 * layers
    attn = packed.transformer_blocks[0].attn1
    assert attn.to_q.weight.dtype == torch.float8_e4m3fn and joined(packable(attn)) is not None
    expected = ltxv16(unpacked)
    calls = fp8_calls(packed)
    assert torch.equal(ltxv16(packed), expected)
    inner = model.config.inner_dim
    assert [rows for rows, _ in calls].count(3 * inner) == 2 * layers  # attn1 q/k/v: one quantization, one GEMM
    assert [rows for rows, _ in calls].count(2 * inner) == 2 * layers  # attn2 k/v (inline, then cross_kv)
    scales = next(s for rows, s in calls if rows == 3 * inner)  # per output channel: each layer's own scale
    assert scales.shape == (3 * inner, 1) and scales.dtype == torch.float32
    first = packed.transformer_blocks[0].attn1
    for i, layer in enumerate((first.to_q, first.to_k, first.to_v)):
        assert torch.equal(scales[i * inner:(i + 1) * inner], layer.weight_scale.expand(inner, 1))


def test_fp8_projections_of_ltx2_equal_the_layers():
    """2.3: gated attentions (the bf16-kept gate is not packed), audio and cross-modal attentions."""
    _, model, cfg = ltx2.pair("v23")
    unpacked = fp8_model(model)
    packed = copy.deepcopy(unpacked)
    assert pack_projections(packed) == 6 * cfg.num_layers
    x = bf16(ltx2.inputs(cfg))
    run = lambda m: torch.cat([o.flatten() for o in ltx2.run_ours(m, x)])  # noqa: E731
    expected = run(unpacked)
    calls = fp8_calls(packed)
    assert torch.equal(run(packed), expected)
    assert [rows for rows, _ in calls].count(3 * cfg.inner_dim) >= cfg.num_layers


def test_fp8_layers_that_cannot_share_a_quantization_keep_theirs():
    _, model = make_pair()
    names = block_linears(model)
    for kept in (fp8_model(model, static_input=names),  # static input_scale: their own per-tensor x scale
                 convert_to_fp8(copy.deepcopy(model), "fp8-cast", names=names)):  # bf16 compute
        assert pack_projections(kept) == 0
    packed = fp8_model(model)
    pack_projections(packed)
    expected = ltxv16(fp8_model(model))
    attn = packed.transformer_blocks[0].attn1
    attn.to_k.register_forward_hook(lambda module, args, out: None)  # e.g. a LoRA branch: each layer runs alone
    calls = fp8_calls(packed)
    assert torch.equal(ltxv16(packed), expected)
    assert 3 * model.config.inner_dim in [rows for rows, _ in calls]  # the other blocks stay packed
    assert sum(rows == model.config.inner_dim for rows, _ in calls) >= 3


def test_fp8_lora_merge_rescales_in_place_and_stays_packed():
    _, model = make_pair()
    unpacked = fp8_model(model)
    packed = copy.deepcopy(unpacked)
    pack_projections(packed)
    base = ltxv16(packed)
    weights = LoraWeights.load(random_lora(model, seed=8))
    sets = LoraSet(unpacked, fp8_lora="merge"), LoraSet(packed, fp8_lora="merge")
    attn = packed.transformer_blocks[0].attn1
    scale_before = attn.to_k.weight_scale.clone()
    for lora_set in sets:
        lora_set.apply([(weights, 0.7)])
    assert not torch.equal(attn.to_k.weight_scale, scale_before)  # requantized: a new per-tensor scale
    assert joined(packable(attn)) is not None  # written in place: still packed
    assert torch.equal(ltxv16(packed), ltxv16(unpacked))
    for lora_set in sets:
        lora_set.clear()
    assert torch.equal(ltxv16(packed), base)


def test_fp8_projections_on_the_triton_kernels():
    """The Triton quantize + scaled_mm (interpreter): the packed call's per-channel weight scales in the
    GEMM epilogue give each layer's output as its own call does (same e4m3 x, one K loop per element)."""
    from ltxengine.ops import get_ops

    torch.manual_seed(3)
    attn = Attention(32, 2, 16, None, bias=True, out_bias=True, ops=get_ops("triton", "cpu")).to(torch.bfloat16)
    with torch.no_grad():
        for layer in packable(attn):
            layer.weight.mul_(torch.rand(()) * 4)  # distinct per-tensor scales
    attn = fp8_model(nn.ModuleDict({"transformer_blocks": nn.ModuleList([attn])})).transformer_blocks[0]
    layers = packable(attn)
    x = torch.randn(2, 5, 32, dtype=torch.bfloat16)
    expected = [layer(x) for layer in layers]
    assert len({float(layer.weight_scale) for layer in layers}) == 3
    pack_projections(attn)
    assert joined(layers) is not None
    for got, want in zip(attn._in_proj(x, layers), expected):
        assert torch.equal(got, want)
