"""Fp8Linear, quantize_weight, fp8_targets / convert_to_fp8 and the policy checks.

Error budget of an fp8 layer against the bf16 layer it replaces. e4m3 keeps 3 mantissa bits, so
round-to-nearest puts each normal value within a relative |d| <= u = 2^-4 of the original; the
per-tensor scale amax / 448 keeps N(0, sigma) weights (and activations, per token) far above the
subnormal range, where that holds. For an output y = sum_k x_k w_k the error is
sum_k x_k w_k d_k: the d_k are independent and zero-mean, so its variance is
sum_k x_k^2 w_k^2 E[d^2], and y's own variance (random x, w) is sum_k x_k^2 w_k^2: the relative
RMS error of the output is RMS(d) whatever the length K of the dot product (the sqrt(K) growth of
error and signal cancel). RMS(d) <= u / sqrt(3) (d at most uniform on [-u, u]). Weight-only
("fp8-cast"): u / sqrt(3) = 0.036; weight and activation ("fp8-scaled-mm"): two independent
terms, sqrt(2) u / sqrt(3) = 0.051; each plus 2^-8 for the bf16 roundings of the dequantized
weight and of the output. Measured (K=256, outlier columns in weights and activations): 0.027
(cast, ratio 0.73) and 0.036 (scaled-mm, ratio 0.71), for both kernel backends.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ltxengine.config import LTX2TransformerConfig, TransformerConfig
from ltxengine.models.common import OpsLinear
from ltxengine.ops import TORCH_OPS, get_ops, reference, set_ops
from ltxengine.quant import (POLICIES, Fp8Linear, convert_to_fp8, default_policy, fp8_targets, fp8_weight_bytes,
                             quantize_weight, validate_policy)

FP8 = torch.float8_e4m3fn
U = 2.0 ** -4
BOUND = {"fp8-cast": U / math.sqrt(3) + 2.0 ** -8, "fp8-scaled-mm": math.sqrt(2) * U / math.sqrt(3) + 2.0 ** -8}


def _layer(k=256, n=96, seed=0):
    """A bf16 OpsLinear with realistic weights: N(0, 0.02) plus a few 20x outlier input columns."""
    g = torch.Generator().manual_seed(seed)
    lin = OpsLinear(k, n)
    with torch.no_grad():
        w = torch.randn(n, k, generator=g) * 0.02
        w[:, :4] *= 20
        lin.weight.copy_(w)
        lin.bias.copy_(torch.randn(n, generator=g) * 0.01)
    return lin.to(torch.bfloat16)


def _activations(k=256, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 24, k, generator=g)
    x[..., 4:8] *= 10  # outlier channels, as in transformer activations
    return x.to(torch.bfloat16)


def _rel(y, ref):
    return ((y.float() - ref).norm() / ref.norm()).item()


# -- quantize_weight -------------------------------------------------------------------------------

def test_quantize_weight_rounds_within_half_ulp():
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(3)) * 0.02
    w8, s = quantize_weight(w)
    assert w8.dtype == FP8 and w8.shape == w.shape and s.dtype == torch.float32 and s.ndim == 0
    assert torch.equal(s, w.abs().max() / 448)  # per-tensor amax / 448
    assert w8.float().abs().max() == 448  # the largest weight maps to the top of the range
    # same bits as the reference quantizer (one formula, not a third)
    ref8, ref_s = reference.quantize_fp8(w)
    assert torch.equal(w8.view(torch.uint8), ref8.view(torch.uint8)) and torch.equal(s, ref_s)
    back = w8.float() * s
    scaled = w.abs() / s
    normal = scaled >= 2.0 ** -6  # e4m3 normal range: relative half-ulp bound 2^-4
    assert ((back - w).abs()[normal] <= U * w.abs()[normal]).all()
    # subnormals: spacing 2^-9, so absolute error <= 2^-10 in scaled units
    assert ((back - w).abs()[~normal] <= 2.0 ** -10 * s).all()


def test_quantize_weight_zeros_get_a_positive_scale():
    w8, s = quantize_weight(torch.zeros(4, 8))
    assert torch.isfinite(s) and s > 0
    assert (w8.float() == 0).all()


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_quantize_weight_refuses_non_finite(bad):
    w = torch.ones(4, 8)
    w[1, 2] = bad
    with pytest.raises(ValueError, match=r"quantize_weight: w \(4, 8\) has 1 non-finite values"):
        quantize_weight(w)


def test_quantize_weight_saturates_never_nan():
    # values whose scaled magnitude lands a hair above 448 after fp32 division must clamp to 448,
    # not overflow to e4m3's NaN (0x7f)
    for seed in range(20):
        w = torch.randn(16, 16, generator=torch.Generator().manual_seed(seed)) * 10 ** (seed % 7 - 3)
        w8, _ = quantize_weight(w)
        assert not torch.isnan(w8.float()).any() and w8.float().abs().max() == 448


@pytest.mark.parametrize("w, msg", [
    (torch.ones(8), r"must be a 2-D floating tensor \(out, in\), got \(8,\)"),
    (torch.ones(2, 2, dtype=torch.int32), r"must be a 2-D floating tensor \(out, in\), got \(2, 2\) torch.int32"),
    (torch.ones(2, 2).to(FP8), r"already float8_e4m3fn"),
])
def test_quantize_weight_refuses_bad_inputs(w, msg):
    with pytest.raises(ValueError, match=msg):
        quantize_weight(w)


# -- Fp8Linear ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernels", ["torch", "triton"])
@pytest.mark.parametrize("policy", POLICIES)
def test_fp8_linear_matches_bf16_layer_within_bound(kernels, policy):
    lin, x = _layer(), _activations()
    ref = F.linear(x.float(), lin.weight.float(), lin.bias.float())  # exact math on the bf16 layer
    layer = Fp8Linear.from_linear(lin, policy)
    set_ops(layer, get_ops(kernels, "cpu"))
    assert layer.ops.name == kernels
    with torch.no_grad():
        y = layer(x)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 24, 96)
    err = _rel(y, ref)
    assert err <= BOUND[policy], f"{kernels} {policy}: relative error {err:.4f} > bound {BOUND[policy]:.4f}"
    # and it is fp8 error, not a pass-through of the bf16 weight
    assert err > 2.0 ** -8


@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_scaled_mm_uses_the_static_input_scale(kernels):
    lin, x = _layer(), _activations()
    ref = F.linear(x.float(), lin.weight.float(), lin.bias.float())
    layer = Fp8Linear.from_linear(lin, "fp8-scaled-mm", static_input=True)
    set_ops(layer, get_ops(kernels, "cpu"))
    with torch.no_grad():
        layer.input_scale.fill_(x.float().abs().max().item() / 448)
        good = layer(x)
        assert _rel(good, ref) <= BOUND["fp8-scaled-mm"]
        # a scale 100x too small saturates every activation: the static scale is really used
        layer.input_scale.fill_(x.float().abs().max().item() / 448 / 100)
        assert _rel(layer(x), ref) > 0.5


def test_fp8_cast_is_the_dequantized_weight_in_the_input_dtype():
    lin = _layer()
    layer = Fp8Linear.from_linear(lin, "fp8-cast")
    x = _activations().float()
    w = layer.weight.float() * layer.weight_scale
    assert torch.equal(layer.dequantized(torch.float32), w)
    assert torch.equal(layer(x), F.linear(x, w, layer.bias.float()))  # fp32 input: fp32 compute
    assert layer.dequantized(torch.bfloat16).dtype == torch.bfloat16


def test_fp8_linear_layout_and_dtypes():
    layer = Fp8Linear(32, 16, policy="fp8-cast", bias_dtype=torch.float16)
    assert layer.weight.shape == (16, 32) and layer.weight.dtype == FP8
    assert layer.weight_scale.shape == () and layer.weight_scale.dtype == torch.float32
    assert layer.input_scale is None and layer.bias.dtype == torch.float16
    assert layer.keep_dtype == ("weight", "weight_scale", "input_scale")
    assert set(layer.state_dict()) == {"weight", "weight_scale", "bias"}
    static = Fp8Linear(32, 16, False, policy="fp8-scaled-mm", static_input=True)
    assert set(static.state_dict()) == {"weight", "weight_scale", "input_scale"} and static.bias is None
    with torch.device("meta"):
        assert Fp8Linear(8, 4, policy="fp8-cast").weight.is_meta
    with pytest.raises(ValueError, match=r"quantization must be one of \('fp8-cast', 'fp8-scaled-mm'\) or None, "
                                         r"got 'fp8'"):
        Fp8Linear(8, 4, policy="fp8")


def test_set_weight_checks_the_shape():
    layer = Fp8Linear(8, 4, policy="fp8-cast")
    with pytest.raises(ValueError, match=r"Fp8Linear.set_weight: w has shape \(8, 4\), expected \(4, 8\)"):
        layer.set_weight(torch.ones(8, 4))


# -- convert_to_fp8 ----------------------------------------------------------------------------------

def _tiny_ltxv(layers=8, meta=False):
    from ltxengine.models.transformer import LTXVideoTransformer
    cfg = TransformerConfig(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8,
                            cross_attention_dim=16, num_layers=layers, caption_channels=12)
    if meta:
        with torch.device("meta"):
            return LTXVideoTransformer(cfg)
    torch.manual_seed(0)
    return LTXVideoTransformer(cfg).to(torch.bfloat16)


def test_convert_quantizes_a_loaded_model_layer_by_layer():
    model = _tiny_ltxv()
    before = {n: (m.weight.detach().clone(), m.bias.detach().clone()) for n, m in model.named_modules()
              if isinstance(m, OpsLinear)}
    convert_to_fp8(model, "fp8-scaled-mm")
    converted = {n for n, m in model.named_modules() if isinstance(m, Fp8Linear)}
    assert converted == set(fp8_targets(model, "fp8-scaled-mm")) and len(converted) == 2 * 10  # blocks 1, 2
    for name in converted:
        layer = model.get_submodule(name)
        w8, s = quantize_weight(before[name][0])
        assert torch.equal(layer.weight.view(torch.uint8), w8.view(torch.uint8)) and torch.equal(layer.weight_scale, s)
        assert torch.equal(layer.bias, before[name][1]) and layer.policy == "fp8-scaled-mm"
    bytes_ = fp8_weight_bytes(model)
    assert bytes_["fp8"] == sum(before[n][0].numel() + 4 for n in converted)  # 1 byte per weight + fp32 scale
    assert convert_to_fp8(model, "fp8-scaled-mm") is model  # converting twice changes nothing


def test_convert_on_meta_only_builds_and_set_ops_reaches_the_layers():
    model = _tiny_ltxv(meta=True)
    convert_to_fp8(model, "fp8-cast", names=["transformer_blocks.0.attn1.to_q"], static_input={"x"})
    layer = model.transformer_blocks[0].attn1.to_q
    assert isinstance(layer, Fp8Linear) and layer.weight.is_meta and layer.input_scale is None
    ops = get_ops("triton", "cpu")
    set_ops(model, ops)
    assert layer.ops is ops
    set_ops(model, TORCH_OPS)
    assert layer.ops is TORCH_OPS


def test_convert_refuses_a_non_linear():
    with pytest.raises(ValueError, match=r"convert_to_fp8: 'transformer_blocks.0.attn1.norm_q' is a RMSNorm, "
                                         r"not a linear layer"):
        convert_to_fp8(_tiny_ltxv(meta=True), "fp8-cast", names=["transformer_blocks.0.attn1.norm_q"])


# -- which layers: the rules table on the released configs ----------------------------------------

_CAST_SUFFIXES = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                  "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")


@pytest.mark.parametrize("size, layers, head_dim", [("2B", 28, 64), ("13B", 48, 128)])
def test_targets_on_released_ltx_video_configs(size, layers, head_dim):
    from ltxengine.models.transformer import LTXVideoTransformer
    cfg = TransformerConfig(num_layers=layers, attention_head_dim=head_dim, cross_attention_dim=32 * head_dim)
    with torch.device("meta"):
        model = LTXVideoTransformer(cfg)
    # an LTX-Video block's linears are exactly the attention and feed-forward ones
    every = [f"transformer_blocks.{i}.{s}" for i in range(layers) for s in _CAST_SUFFIXES]
    assert fp8_targets(model, "fp8-cast") == every
    # scaled-mm: all but the first block and the last five (1..22 for 2B, 1..42 for 13B)
    assert fp8_targets(model, "fp8-scaled-mm") == [n for n in every if 1 <= int(n.split(".")[1]) < layers - 5]


def test_targets_on_ltx2_19b_match_ltx_core():
    """Both rules against ltx-core's own: its fp8-cast state-dict ops (which keys it downcasts)
    and its scaled-mm module swap (which nn.Linear become FP8Linear), on the 19B config on meta."""
    from tests.models.ltx2_transformer_fixtures import original_section, to_original
    from tests.oracles import ltx_core

    from ltxengine.models.ltx2_transformer import LTX2Transformer
    conf = ltx_core("model.transformer.model_configurator")
    quant = ltx_core("quantization")
    scaled = ltx_core("quantization.fp8_scaled_mm")
    cfg = LTX2TransformerConfig()
    with torch.device("meta"):
        ours = LTX2Transformer(cfg)
        core = conf.LTXModelConfigurator.from_config({"transformer": original_section(cfg)})
    cast_core = {k[: -len(".weight")] for k, v in core.state_dict().items() if k.endswith(".weight")
                 and quant.TRANSFORMER_LINEAR_DOWNCAST_MAP.apply_to_key_value(k, v)[0].new_value.dtype == FP8}
    cast_ours = fp8_targets(ours, "fp8-cast")
    assert {to_original(n + ".weight")[: -len(".weight")] for n in cast_ours} == cast_core
    assert len(cast_ours) == 48 * 28  # 6 attentions x 4 + 2 feed-forwards x 2 per block
    scaled._apply_fp8_prepare_to_model(core, scaled.EXCLUDED_LAYER_SUBSTRINGS)
    mm_core = {n for n, m in core.named_modules() if isinstance(m, scaled.FP8Linear)}
    mm_ours = fp8_targets(ours, "fp8-scaled-mm")
    assert {to_original(n + ".weight")[: -len(".weight")] for n in mm_ours} == mm_core
    assert len(mm_ours) == 42 * 28


def test_targets_refuse_a_model_without_blocks():
    with pytest.raises(ValueError, match=r"fp8_targets: model must be a transformer with a 'transformer_blocks' "
                                         r"ModuleList, got OpsLinear"):
        fp8_targets(OpsLinear(4, 4), "fp8-cast")


# -- policy checks -----------------------------------------------------------------------------------

def test_validate_policy():
    assert validate_policy(None, "cpu", torch.float32) is None
    assert validate_policy("fp8-cast", "cpu", torch.float32) == "fp8-cast"
    assert validate_policy("fp8-scaled-mm", "cpu", torch.bfloat16) == "fp8-scaled-mm"  # emulated on CPU
    with pytest.raises(ValueError, match=r"quantization must be one of \('fp8-cast', 'fp8-scaled-mm'\) or None, "
                                         r"got 'int8'"):
        validate_policy("int8", "cpu", torch.bfloat16)
    with pytest.raises(ValueError, match=r"quantization='fp8-scaled-mm' needs dtype torch.bfloat16 or "
                                         r"torch.float16 .*got torch.float32"):
        validate_policy("fp8-scaled-mm", "cpu", torch.float32)


def test_scaled_mm_needs_sm89_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(ValueError, match=r"needs fp8 GEMMs \(CUDA compute capability >= 8.9\), device cuda has "
                                         r"8.0; use 'fp8-cast'"):
        validate_policy("fp8-scaled-mm", "cuda", torch.bfloat16)
    assert validate_policy("fp8-cast", "cuda", torch.bfloat16) == "fp8-cast"
    assert default_policy("cuda") == "fp8-cast"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert default_policy("cuda") == "fp8-scaled-mm"
    assert default_policy("cpu") == "fp8-cast"
