"""Fp8Linear's per-channel weight scale (``channel_scale``), made once instead of per call.

The fp8 GEMM with per-token activation scales takes the weight scale per output channel (cuBLASLt
takes two per-tensor scales or two vectors). It used to be made on every call: cuBLASLt's wrapper
expanded the 0-d ``weight_scale`` (an aten.clone), packed q/k/v concatenated theirs (an aten.cat).
Now each layer keeps it as a buffer that every writer of ``weight_scale`` refreshes, and packing
lays the buffers of q/k/v end to end like their weights.

Oracles. "Before" is the old call recomputed here: the backend's fp8_linear / scaled_mm with the
0-d ``weight_scale`` (packed: the old torch.cat of the expanded scales). Each output element is the
same fp32 dot product times the same two fp32 scales plus the same bias, rounded once, whether
the scale is read as one value or from a vector, so the outputs are compared with torch.equal.
"Fresh" is ``channel_scale == weight_scale`` in every row, on the scale's device in its dtype.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn

from ltxengine.executor.block_offload import BlockOffload
from ltxengine.loading.lora import LoraSet, LoraWeights
from ltxengine.loading.strict import load_strict
from ltxengine.models.packing import channel_scales, joined, pack_projections, packable
from ltxengine.models.transformer import Attention
from ltxengine.ops import TORCH_OPS, get_ops
from ltxengine.quant.fp8 import Fp8Linear, convert_to_fp8

BACKENDS = ["torch", "triton"]


def _ops(kernels):
    return TORCH_OPS if kernels == "torch" else get_ops("triton", "cpu")


def model_of(ops=TORCH_OPS, seed=0, device=None):
    """One self-attention as a one-block model, every linear fp8 (dynamic per-token input scales),
    q / k / v with distinct per-tensor weight scales."""
    g = torch.Generator().manual_seed(seed)
    with torch.device(device or "cpu"):
        attn = Attention(32, 2, 16, None, bias=True, out_bias=True, ops=ops)
    if device != "meta":
        with torch.no_grad():
            for i, p in enumerate(attn.parameters()):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05 * (1 + i % 3))
    model = nn.ModuleDict({"transformer_blocks": nn.ModuleList([attn.to(torch.bfloat16)])})
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return convert_to_fp8(model, "fp8-scaled-mm", names=names)


def layers_of(model):
    return [m for m in model.modules() if isinstance(m, Fp8Linear)]


def assert_fresh(model):
    for layer in layers_of(model):
        want = layer.weight_scale.detach().reshape(1, 1).expand(layer.out_features, 1)
        assert layer.channel_scale.device == want.device and layer.channel_scale.dtype == want.dtype
        assert torch.equal(layer.channel_scale, want)


def old_forward(layer, x):
    """The layer's output as it was computed before: fp8_linear with the 0-d weight scale."""
    return layer.ops.fp8_linear(x, layer.weight, layer.weight_scale, layer.bias, layer.input_scale)


def x_of(seed=1):
    return torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(seed)).bfloat16()


def assert_outputs_as_before(model):
    x = x_of().to(layers_of(model)[0].bias.device)
    with torch.no_grad():
        for layer in layers_of(model):
            assert torch.equal(layer(x), old_forward(layer, x))


# -- same bits as before --------------------------------------------------------------------------

@pytest.mark.parametrize("kernels", BACKENDS)
def test_layer_outputs_equal_the_per_tensor_scale_call(kernels):
    ops = _ops(kernels)
    layer = layers_of(model_of(ops))[0]
    x = x_of()
    calls = []
    layer.ops = dataclasses.replace(ops, fp8_linear=lambda x, w, s, *a: calls.append(s) or ops.fp8_linear(x, w, s, *a))
    with torch.no_grad():
        assert torch.equal(layer(x), ops.fp8_linear(x, layer.weight, layer.weight_scale, layer.bias))
        q, s = ops.quantize_fp8(x, None, True)
        assert torch.equal(layer.forward_quantized(q, s, (2, 5), x.dtype),
                           ops.scaled_mm(q, layer.weight, s, layer.weight_scale, layer.bias, x.dtype).view(2, 5, 32))
    assert calls[0] is layer.channel_scale  # the kept vector itself, no copy per call


@pytest.mark.parametrize("static_input", [True, False])
def test_per_tensor_pairs_keep_the_0d_weight_scale(static_input):
    """cuBLASLt's per-tensor x per-tensor path, as before: a static input_scale, or one row (its
    per-token scale is one value) runs with the 0-d weight scale."""
    layer = Fp8Linear(32, 16, policy="fp8-scaled-mm", static_input=static_input)
    layer.set_weight(torch.randn(16, 32))
    calls = []
    layer.ops = dataclasses.replace(TORCH_OPS, fp8_linear=lambda x, w, s, *a: calls.append(s) or
                                    TORCH_OPS.fp8_linear(x, w, s, *a),
                                    scaled_mm=lambda q, w, sa, s, *a: calls.append(s) or
                                    TORCH_OPS.scaled_mm(q, w, sa, s, *a))
    x = x_of().float()
    layer(x if static_input else x[:1, :1])
    if not static_input:
        layer.forward_quantized(*TORCH_OPS.quantize_fp8(x[0, :1], None, True), (1,), x.dtype)
    assert all(s is layer.weight_scale for s in calls) and calls[0].ndim == 0


@pytest.mark.parametrize("kernels", BACKENDS)
def test_packed_projections_equal_the_old_concatenated_scales(kernels):
    ops = _ops(kernels)
    model = model_of(ops)
    attn = model.transformer_blocks[0]
    layers = packable(attn)
    assert len({float(lay.weight_scale) for lay in layers}) == 3
    assert pack_projections(model) == 1 and joined(layers) is not None
    scales = channel_scales(layers)  # a view of the packed buffers: no copy
    assert scales.data_ptr() == layers[0].channel_scale.data_ptr() and scales.shape == (96, 1)
    old = torch.cat([lay.weight_scale.reshape(1, 1).expand(lay.out_features, 1) for lay in layers])
    weight, bias = joined(layers)
    x = x_of()
    with torch.no_grad():
        want = ops.fp8_linear(x, weight, old, bias).split(32, dim=-1)
        for got, w in zip(attn._in_proj(x, layers), want):
            assert torch.equal(got, w)


# -- never stale ----------------------------------------------------------------------------------

def packed_model():
    model = model_of()
    pack_projections(model)
    return model, packable(model.transformer_blocks[0])


def assert_still_packed(layers, address):
    """Refreshed in place: the packed vector is still one storage at its old address."""
    assert channel_scales(layers).data_ptr() == address == layers[0].channel_scale.data_ptr()


def lora_of(model, seed=4):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, m in model.named_modules():
        if isinstance(m, Fp8Linear):
            sd[f"transformer.{name}.lora_A.weight"] = torch.randn(4, m.in_features, generator=g) * 0.3
            sd[f"transformer.{name}.lora_B.weight"] = torch.randn(m.out_features, 4, generator=g) * 0.3
    return LoraWeights.load(sd)


def test_lora_merge_and_unmerge_refresh_the_vector():
    model, layers = packed_model()
    address = channel_scales(layers).data_ptr()
    before = [lay.weight_scale.clone() for lay in layers_of(model)]
    lora_set = LoraSet(model, fp8_lora="merge")
    lora_set.apply([(lora_of(model), 1.0)])
    assert all(not torch.equal(lay.weight_scale, b) for lay, b in zip(layers_of(model), before))  # rescaled
    assert_fresh(model)
    assert_still_packed(layers, address)
    assert_outputs_as_before(model)
    lora_set.clear()
    assert all(torch.equal(lay.weight_scale, b) for lay, b in zip(layers_of(model), before))
    assert_fresh(model)
    assert_still_packed(layers, address)


def test_set_weight_refreshes_the_vector():
    model, layers = packed_model()
    address = channel_scales(layers).data_ptr()
    k = layers[1]
    k.set_weight(k.dequantized(torch.float32) * 3)
    assert_fresh(model)
    assert k.channel_scale.data_ptr() == address + 32 * 4  # still its rows of the packed vector
    assert_outputs_as_before(model)


@pytest.mark.parametrize("assign", [False, True])
def test_load_state_dict_refreshes_the_vector(assign):
    model, layers = packed_model()
    address = channel_scales(layers).data_ptr()
    other = model_of(seed=7)
    model.load_state_dict(other.state_dict(), strict=True, assign=assign)
    assert_fresh(model)
    assert_outputs_as_before(model)
    x = x_of()
    with torch.no_grad():
        assert torch.equal(model.transformer_blocks[0].to_v(x), other.transformer_blocks[0].to_v(x))
    if not assign:
        assert_still_packed(layers, address)


def test_load_strict_materializes_the_vector():
    other = model_of(seed=7)
    source = {k: (tuple(v.shape), lambda device, dtype, v=v: v.to(device, dtype or v.dtype), k)
              for k, v in other.state_dict().items()}
    model = load_strict(model_of(device="meta"), source, "test", "cpu", torch.bfloat16)
    assert_fresh(model)
    x = x_of()
    with torch.no_grad():
        for got, want in zip(layers_of(model), layers_of(other)):
            assert torch.equal(got(x), want(x))


def test_module_moves_carry_the_vector():
    """A registered buffer: ``.to`` (here the dtype; a device move on the GPU test) converts it
    with weight_scale."""
    model = model_of()
    assert all(n.endswith("channel_scale") for n, _ in model.named_buffers())
    model.to(torch.float64)
    assert_fresh(model)


def test_block_offload_streams_the_vector_and_a_merge_while_offloaded():
    model = model_of()
    offload = BlockOffload(model.transformer_blocks, torch.device("cpu"), 1)
    layer = model.transformer_blocks[0].to_q
    host = layer.channel_scale.data_ptr()
    assert_outputs_as_before(model)
    offload.evict_all()
    assert layer.channel_scale.data_ptr() == host  # streamed with the block, back to its host view
    LoraSet(model, fp8_lora="merge").apply([(lora_of(model), 1.0)])  # writes the host copies
    assert_fresh(model)
    assert_outputs_as_before(model)
    offload.close()


def test_the_state_dict_is_unchanged():
    model = model_of()
    layer = layers_of(model)[0]
    assert set(layer.state_dict()) == {"weight", "weight_scale", "bias"}
    assert not any("channel_scale" in k for k in model.state_dict())
    assert layer.state_dict()["weight_scale"].shape == ()


# -- launches -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny-2b", "tiny-ltx2"])
def test_an_fp8_step_launches_no_scale_copies(name, monkeypatch):
    from bench import roofline as R

    # 7 blocks: fp8-scaled-mm converts block 1 (the first block and the last five stay bf16)
    monkeypatch.setitem(R.M.TRANSFORMERS, "tiny-7", dataclasses.replace(R.M.TRANSFORMERS[name], num_layers=7))
    rows = R.trace_case("tiny-7", "s", (160, 96, 17), 2, "auto-fp8", True).trace.rows
    block = [r for r in rows if r.block == 1 and r.launches]
    assert sum(r.op == "aten._scaled_mm.default" for r in block) >= 6  # the block runs its fp8 GEMMs
    assert [r.op for r in block if r.op in ("aten.clone.default", "aten.cat.default")] == []


@pytest.mark.parametrize("m", [16, 1])
def test_cublas_takes_row_and_channel_vectors_without_a_copy(m):
    """The (M, 1) activation side and the (N, 1) weight side go to cuBLASLt as views; a 0-d weight
    scale beside a vector is still expanded (the copy the kept vector avoids)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from bench import roofline_count as rc
    from ltxengine.ops import cublas

    def launched(weight_scale_shape):
        with FakeTensorMode():
            a, b = torch.empty(m, 32, dtype=torch.float8_e4m3fn), torch.empty(48, 32, dtype=torch.float8_e4m3fn)
            sa, sb = torch.empty(m, 1), torch.empty(weight_scale_shape)
            trace = rc.count(lambda: cublas.scaled_mm(a, b, sa, sb, None, torch.bfloat16))
        return [r.op for r in trace.rows if r.launches]

    assert launched((48, 1)) == ["aten._scaled_mm.default"]
    # one row: its (1, 1) scale is per-tensor too, so a 0-d weight scale makes cuBLASLt's per-tensor pair
    assert launched(()) == ["aten.clone.default"] * (m > 1) + ["aten._scaled_mm.default"]


# -- GPU: cuBLASLt ----------------------------------------------------------------------------------

@pytest.mark.gpu
def test_cublas_outputs_equal_the_per_tensor_scale_call_after_a_move():
    from ltxengine.ops import cublas, fp8_linear, reference

    ops = dataclasses.replace(TORCH_OPS, scaled_mm=cublas.scaled_mm,
                              fp8_linear=fp8_linear.compose(reference.quantize_fp8, cublas.scaled_mm))
    model = model_of(ops).to("cuda")
    assert_fresh(model)
    assert_outputs_as_before(model)
    pack_projections(model)
    attn = model.transformer_blocks[0]
    layers = packable(attn)
    x = x_of().cuda()
    with torch.no_grad():
        for got, lay in zip(attn._in_proj(x, layers), layers):
            assert torch.equal(got, old_forward(lay, x))
