"""fp8 checkpoint formats: Lightricks -fp8 (scaled and plain casts), ComfyUI mixed precision (tensor
tags and header tags), ComfyUI's older scaled_fp8 layout, and bf16 files quantized at load; single
files and diffusers folders, LTX-Video and LTX-2. The files are written by tests/loading/formats.py
from the producers' conventions (not by our loader's inverse); every fp8 layer must hold the file's
exact bits and scales, and every inconsistent file must fail naming the key and the rule.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ltxengine.config import LTX2TransformerConfig, parse_config
from ltxengine.loading import CheckpointError, load_ltx2, load_ltx2_component, load_transformer
from ltxengine.loading.strict import load_strict
from ltxengine.models.common import OpsLinear
from ltxengine.quant import Fp8Linear, fp8_targets, quantize_weight
from tests.helpers import perturb_
from tests.loading.formats import (comfy_fp8, comfy_scaled_fp8, comfy_tag, lightricks_fp8, original_transformer_config,
                                   original_transformer_keys, plain_fp8, save_diffusers_pipeline, save_single_file)

diffusers = pytest.importorskip("diffusers")

FP8 = torch.float8_e4m3fn
PFX = "model.diffusion_model."
LAYERS = 8  # enough blocks for the scaled-mm rule (first + last five excluded) to convert blocks 1-2
CFG = dict(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
           num_layers=LAYERS, caption_channels=12)
LINEARS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
           "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
# what a Lightricks -fp8 file of this depth quantizes: every linear of blocks 1..2 (model names)
FP8_LAYERS = [f"transformer_blocks.{i}.{s}" for i in (1, 2) for s in LINEARS]


@pytest.fixture(scope="module")
def ref():
    torch.manual_seed(0)
    model = diffusers.LTXVideoTransformer3DModel(**CFG).eval()
    perturb_(model, seed=2)
    return model


@pytest.fixture(scope="module")
def sd(ref):
    """The bf16 single-file tensors (original names)."""
    return {k: v.to(torch.bfloat16) for k, v in original_transformer_keys(ref.state_dict()).items()}


def _file(tmp_path, tensors, metadata=None, name="ltxv.safetensors"):
    return save_single_file(tmp_path / name, tensors, {"transformer": original_transformer_config(CFG)}, metadata)


def _fp8_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, Fp8Linear)}


def _check_file_bits(model, tensors, layers, prefix=PFX, scale_key="weight_scale", input_key="input_scale"):
    """Each fp8 layer holds the file's bits and scales; its forward uses them."""
    for name in layers:
        layer = model.get_submodule(name)
        assert isinstance(layer, Fp8Linear), name
        w8 = tensors[prefix + name + ".weight"]
        assert torch.equal(layer.weight.view(torch.uint8), w8.view(torch.uint8)), name
        scale = tensors.get(prefix + name + "." + scale_key)
        want = torch.ones(()) if scale is None else scale.float().reshape(())
        assert torch.equal(layer.weight_scale, want), name
        inp = tensors.get(prefix + name + "." + input_key)
        assert (layer.input_scale is None) == (inp is None or (input_key == "scale_input" and inp.item() == 1.0))
        if layer.input_scale is not None:
            assert torch.equal(layer.input_scale, inp.float().reshape(()))
        x = torch.randn(3, layer.in_features)
        bias = None if layer.bias is None else layer.bias.float()
        if layer.policy == "fp8-cast":  # the file's weight times the file's scale, nothing else
            assert torch.equal(layer(x), F.linear(x, w8.float() * want, bias))


# -- formats that load -----------------------------------------------------------------------------

def test_lightricks_fp8_single_file(tmp_path, sd):
    inputs = {PFX + n: 0.01 * (i + 1) for i, n in enumerate(FP8_LAYERS)}
    tensors = lightricks_fp8(sd, [PFX + n for n in FP8_LAYERS], inputs)
    path = _file(tmp_path, tensors)
    model = load_transformer(path, dtype=torch.float32)
    # None keeps exactly the file's fp8 layers, with the CPU's policy
    assert model.quantization == "fp8-cast" and set(_fp8_layers(model)) == set(FP8_LAYERS)
    _check_file_bits(model, tensors, FP8_LAYERS)
    # the layers the file keeps in bf16 are plain linears with the file's values
    other = model.transformer_blocks[0].attn1.to_q
    assert type(other) is OpsLinear and torch.equal(other.weight, sd[PFX + "transformer_blocks.0.attn1.to_q.weight"]
                                                    .float())
    # scaled-mm (bf16): the same layers, the static input scales in force
    mm = load_transformer(path, dtype=torch.bfloat16, quantization="fp8-scaled-mm")
    assert {n: m.policy for n, m in _fp8_layers(mm).items()} == {n: "fp8-scaled-mm" for n in FP8_LAYERS}
    _check_file_bits(mm, tensors, FP8_LAYERS)


def test_lightricks_fp8_diffusers_folder(tmp_path, ref):
    folder = save_diffusers_pipeline(tmp_path / "pipe", {"transformer": ref})
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    tensors = lightricks_fp8({k: v.to(torch.bfloat16) for k, v in load_file(str(weights)).items()}, FP8_LAYERS)
    save_file(tensors, str(weights))
    for path in (folder, folder / "transformer"):
        model = load_transformer(path, dtype=torch.float32)
        assert set(_fp8_layers(model)) == set(FP8_LAYERS)
        _check_file_bits(model, tensors, FP8_LAYERS, prefix="")


def test_plain_fp8_cast_means_scale_one(tmp_path, sd):
    every = [f"transformer_blocks.{i}.{s}" for i in range(LAYERS) for s in LINEARS]
    tensors = plain_fp8(sd, [PFX + n for n in every])
    path = _file(tmp_path, tensors)
    model = load_transformer(path, dtype=torch.float32)
    _check_file_bits(model, tensors, every)
    # a named policy never re-quantizes an fp8 layer: blocks the scaled-mm rule excludes stay fp8,
    # weight-only
    mm = load_transformer(path, dtype=torch.bfloat16, quantization="fp8-scaled-mm")
    policies = {n: m.policy for n, m in _fp8_layers(mm).items()}
    assert set(policies) == set(every)
    assert {n for n, p in policies.items() if p == "fp8-scaled-mm"} == set(fp8_targets(mm, "fp8-scaled-mm"))
    assert policies["transformer_blocks.0.attn1.to_q"] == policies["transformer_blocks.7.ff.net.2"] == "fp8-cast"
    _check_file_bits(mm, tensors, every)


@pytest.mark.parametrize("header", [False, True], ids=["comfy_quant-tensors", "header-metadata"])
def test_comfy_mixed_precision(tmp_path, sd, header):
    layers = [PFX + n for n in FP8_LAYERS]
    tensors, meta = comfy_fp8(sd, layers[:-1], header=header, input_scales={layers[0]: 0.02})
    # one layer asks for full-precision matmul: it must run weight-only under scaled-mm
    extra, meta2 = comfy_fp8(sd, layers[-1:], header=header,
                             conf={"format": "float8_e4m3fn", "full_precision_matrix_mult": True})
    tensors.update({k: v for k, v in extra.items() if k.startswith(layers[-1])})
    if header:
        merged = json.loads(meta["_quantization_metadata"])
        merged["layers"].update(json.loads(meta2["_quantization_metadata"])["layers"])
        meta = {"_quantization_metadata": json.dumps(merged)}
    path = _file(tmp_path, tensors, meta)
    model = load_transformer(path, dtype=torch.bfloat16, quantization="fp8-scaled-mm")
    policies = {n: m.policy for n, m in _fp8_layers(model).items()}
    assert set(policies) == set(FP8_LAYERS)
    assert policies[FP8_LAYERS[-1]] == "fp8-cast" and policies[FP8_LAYERS[0]] == "fp8-scaled-mm"
    _check_file_bits(model, tensors, FP8_LAYERS)


@pytest.mark.parametrize("marker", [FP8, torch.float32])
def test_comfy_scaled_fp8_legacy(tmp_path, sd, marker):
    layers = [PFX + n for n in FP8_LAYERS]
    # scale_input 1.0 is ComfyUI's placeholder (dropped: dynamic); 0.03 is a real static scale
    tensors = comfy_scaled_fp8(sd, layers, PFX, marker_dtype=marker, scale_inputs={layers[0]: 1.0, layers[1]: 0.03})
    model = load_transformer(_file(tmp_path, tensors), dtype=torch.float32)
    _check_file_bits(model, tensors, FP8_LAYERS, scale_key="scale_weight", input_key="scale_input")
    assert model.get_submodule(FP8_LAYERS[0]).input_scale is None


def test_comfy_scaled_fp8_full_precision_marker_runs_weight_only(tmp_path, sd):
    tensors = comfy_scaled_fp8(sd, [PFX + n for n in FP8_LAYERS], PFX, full_precision=True)
    model = load_transformer(_file(tmp_path, tensors), dtype=torch.bfloat16, quantization="fp8-scaled-mm")
    assert {m.policy for m in _fp8_layers(model).values()} == {"fp8-cast"}


@pytest.mark.parametrize("policy", ["fp8-cast", "fp8-scaled-mm"])
def test_bf16_file_is_quantized_at_load(tmp_path, sd, policy):
    path = _file(tmp_path, sd)
    plain = load_transformer(path, dtype=torch.bfloat16)
    assert plain.quantization is None and not _fp8_layers(plain)
    model = load_transformer(path, dtype=torch.bfloat16, quantization=policy)
    assert model.quantization == policy
    layers = _fp8_layers(model)
    assert sorted(layers) == sorted(fp8_targets(model, policy))
    for name, layer in layers.items():
        w8, s = quantize_weight(sd[PFX + name + ".weight"])
        assert torch.equal(layer.weight.view(torch.uint8), w8.view(torch.uint8)) and torch.equal(layer.weight_scale, s)
        assert layer.input_scale is None and torch.equal(layer.bias, sd[PFX + name + ".bias"])


def test_named_policy_on_an_fp8_file_adds_its_targets(tmp_path, sd):
    """fp8-cast on a Lightricks scaled file uses the file's scales for its fp8 layers (the garbage
    others get by re-casting fp8 bits is impossible here) and quantizes the rest at load."""
    tensors = lightricks_fp8(sd, [PFX + n for n in FP8_LAYERS])
    model = load_transformer(_file(tmp_path, tensors), dtype=torch.float32, quantization="fp8-cast")
    layers = _fp8_layers(model)
    assert set(layers) == set(fp8_targets(model, "fp8-cast"))
    _check_file_bits(model, tensors, FP8_LAYERS)
    w8, s = quantize_weight(sd[PFX + "transformer_blocks.0.attn1.to_q.weight"])
    assert torch.equal(layers["transformer_blocks.0.attn1.to_q"].weight_scale, s)


def test_ltx2_bundle_and_folder(tmp_path):
    from tests.models.ltx2_transformer_fixtures import TINY, original_section, to_original

    from ltxengine.models.ltx2_transformer import LTX2Transformer
    cfg = parse_config(LTX2TransformerConfig, dict(TINY["split64"], num_layers=7), "test")
    torch.manual_seed(1)
    ours = LTX2Transformer(cfg)
    state = {k: v.detach().to(torch.bfloat16) for k, v in ours.state_dict().items()}
    targets = fp8_targets(ours, "fp8-scaled-mm")  # block 1: all 28 linears of an LTX-2 block
    assert len(targets) == 28
    bundle = {PFX + to_original(k): v for k, v in state.items()}
    tensors = lightricks_fp8(bundle, [PFX + to_original(n + ".weight")[: -len(".weight")] for n in targets],
                             {PFX + to_original(targets[0] + ".weight")[: -len(".weight")]: 0.05})
    path = save_single_file(tmp_path / "ltx2-fp8.safetensors", tensors, {"transformer": original_section(cfg)})
    model = load_ltx2(path, dtype=torch.bfloat16, components=("transformer",), quantization="fp8-scaled-mm").transformer
    assert model.quantization == "fp8-scaled-mm" and set(_fp8_layers(model)) == set(targets)
    by_model_name = {PFX + n + "." + kind: tensors[PFX + to_original(n + ".weight")[: -len(".weight")] + "." + kind]
                     for n in targets for kind in ("weight", "weight_scale", "input_scale")
                     if PFX + to_original(n + ".weight")[: -len(".weight")] + "." + kind in tensors}
    _check_file_bits(model, by_model_name, targets)
    # diffusers folder of the same transformer (diffusers' own config.json), quantized at load
    from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformer3DModel
    kwargs = {k: v for k, v in TINY["split64"].items() if k not in ("rope_double_precision",)}
    folder = tmp_path / "transformer"
    LTX2VideoTransformer3DModel(**dict(kwargs, num_layers=7)).save_pretrained(folder)
    cast = load_ltx2_component(folder, "transformer", dtype=torch.float32, quantization="fp8-cast")
    assert cast.quantization == "fp8-cast" and len(_fp8_layers(cast)) == 7 * 28


# -- strictness ------------------------------------------------------------------------------------

def _err(tmp_path, tensors, match, metadata=None, **kw):
    with pytest.raises(CheckpointError, match=match):
        load_transformer(_file(tmp_path, tensors, metadata), dtype=torch.float32, **kw)


Q = PFX + "transformer_blocks.1.attn1.to_q"


def _scaled(sd):
    return lightricks_fp8(sd, [PFX + n for n in FP8_LAYERS], {Q: 0.01})


def test_missing_scale(tmp_path, sd):
    tensors = _scaled(sd)
    del tensors[Q + ".weight_scale"]
    _err(tmp_path, tensors, rf"fp8 weight '{Q}.weight' in .* has no weight_scale; other fp8 layers of the file have "
                            r"one \(e.g. 'transformer_blocks.1.attn1.to_k'\), so a missing scale is not 1")


def test_extra_scale_on_a_bf16_weight(tmp_path, sd):
    tensors = _scaled(sd)
    k = PFX + "transformer_blocks.0.attn1.to_q.weight_scale"
    tensors[k] = torch.tensor(0.5)
    _err(tmp_path, tensors, rf"weight_scale '{k}' in .* is for an fp8 weight, but "
                            rf"'{PFX}transformer_blocks.0.attn1.to_q.weight' in .* is stored as BF16")


def test_scale_for_something_that_is_not_a_linear(tmp_path, sd):
    tensors = _scaled(sd)
    k = PFX + "transformer_blocks.1.attn1.q_norm.weight_scale"
    tensors[k] = torch.tensor(0.5)
    _err(tmp_path, tensors, rf"weight_scale '{k}' in .* belongs to no linear layer of the model")


def test_input_scale_without_weight_scale(tmp_path, sd):
    tensors = plain_fp8(sd, [Q])
    tensors[Q + ".input_scale"] = torch.tensor(0.1)
    _err(tmp_path, tensors, rf"input_scale '{Q}.input_scale' in .* without a weight_scale")


@pytest.mark.parametrize("value, match", [
    (torch.tensor(float("nan")), r"must be a finite positive scale, got nan"),
    (torch.tensor(float("inf")), r"must be a finite positive scale, got inf"),
    (torch.tensor(0.0), r"must be a finite positive scale, got 0.0"),
    (torch.tensor(-0.5), r"must be a finite positive scale, got -0.5"),
    (torch.tensor([0.5, 0.5]), r"must be a per-tensor float scalar \(shape \(\) or \(1,\)\), got \(2,\) torch.float32"),
    (torch.tensor([1], dtype=torch.int32), r"must be a per-tensor float scalar .*got \(1,\) torch.int32"),
])
@pytest.mark.parametrize("kind", ["weight_scale", "input_scale"])
def test_bad_scale_values(tmp_path, sd, value, match, kind):
    tensors = _scaled(sd)
    tensors[Q + "." + kind] = value
    _err(tmp_path, tensors, rf"{kind} '{Q}.{kind}' in .* " + match)


def test_per_tensor_scale_of_shape_one_is_accepted(tmp_path, sd):
    tensors = _scaled(sd)
    tensors[Q + ".weight_scale"] = tensors[Q + ".weight_scale"].reshape(1)
    model = load_transformer(_file(tmp_path, tensors), dtype=torch.float32)
    assert model.get_submodule(Q[len(PFX):]).weight_scale.shape == ()


@pytest.mark.parametrize("conf", [{"format": "nvfp4"}, {"format": "float8_e5m2"}, {"format": "mxfp8"}])
@pytest.mark.parametrize("header", [False, True])
def test_unsupported_comfy_formats(tmp_path, sd, conf, header):
    tensors, meta = comfy_fp8(sd, [Q], header=header, conf=conf)
    where = f"_quantization_metadata layer '{Q}'" if header else f"comfy_quant tensor '{Q}.comfy_quant' in .*"
    _err(tmp_path, tensors, rf"{where} has format '{conf['format']}'; ltxengine loads only \('float8_e4m3fn',\)",
         meta)


def test_bad_comfy_tags(tmp_path, sd):
    tensors, _ = comfy_fp8(sd, [Q])
    tensors[Q + ".comfy_quant"] = torch.tensor(list(b"{not json"), dtype=torch.uint8)
    _err(tmp_path, tensors, rf"comfy_quant tensor '{Q}.comfy_quant' in .* is not UTF-8 JSON")
    tensors[Q + ".comfy_quant"] = comfy_tag({"no_format": 1})
    _err(tmp_path, tensors, r"must be a JSON object with a 'format', got \{'no_format': 1\}")
    _err(tmp_path, dict(sd), r"header '_quantization_metadata' is not valid JSON",
         {"_quantization_metadata": "{oops"})
    _err(tmp_path, dict(sd), r"header '_quantization_metadata' must be an object with a 'layers' object",
         {"_quantization_metadata": "[1]"})


def test_comfy_tag_on_a_bf16_weight_and_tag_without_scale(tmp_path, sd):
    tensors = dict(sd, **{Q + ".comfy_quant": comfy_tag({"format": "float8_e4m3fn"})})
    _err(tmp_path, tensors, rf"comfy_quant tag of 'transformer_blocks.1.attn1.to_q' is for an fp8 weight, but "
                            rf"'{Q}.weight' in .* is stored as BF16")
    tensors, _ = comfy_fp8(sd, [Q])
    del tensors[Q + ".weight_scale"]
    _err(tmp_path, tensors, rf"fp8 weight '{Q}.weight' in .* has no weight_scale; its comfy_quant tag requires one")


def test_e5m2_weights_and_markers_are_refused(tmp_path, sd):
    tensors = dict(sd, **{Q + ".weight": sd[Q + ".weight"].to(torch.float8_e5m2)})
    _err(tmp_path, tensors, rf"weight '{Q}.weight' in .* is stored as F8_E5M2; only F8_E4M3")
    tensors = comfy_scaled_fp8(sd, [Q], PFX, marker_dtype=torch.float8_e5m2)
    _err(tmp_path, tensors, r"scaled_fp8 marker .* has dtype torch.float8_e5m2; only float8_e4m3fn")


def test_quantize_at_load_refuses_non_finite_weights(tmp_path, sd):
    tensors = dict(sd)
    w = tensors[Q + ".weight"].clone()
    w[0, 0] = float("nan")
    tensors[Q + ".weight"] = w
    _err(tmp_path, tensors, rf"weight '{Q}.weight' in .*: quantize_weight: w \(16, 16\) has 1 non-finite values",
         quantization="fp8-cast")


def test_policy_errors_at_load(tmp_path, sd):
    path = _file(tmp_path, sd)
    with pytest.raises(ValueError, match=r"quantization must be one of \('fp8-cast', 'fp8-scaled-mm'\) or None, "
                                         r"got 'fp4'"):
        load_transformer(path, quantization="fp4")
    with pytest.raises(ValueError, match=r"quantization='fp8-scaled-mm' needs dtype torch.bfloat16 or torch.float16"):
        load_transformer(path, dtype=torch.float32, quantization="fp8-scaled-mm")
    # an fp8 file in fp32 with no policy named: storage stays fp8, compute is weight-only
    fp8 = load_transformer(_file(tmp_path, _scaled(sd), name="f.safetensors"), dtype=torch.float32)
    assert fp8.quantization == "fp8-cast"


def test_load_strict_keeps_fp8_dtypes_and_checks_them():
    layer = torch.nn.Module()
    with torch.device("meta"):
        layer.lin = Fp8Linear(4, 2, policy="fp8-cast")
    w8 = torch.ones(2, 4).to(FP8)
    good = {"lin.weight": ((2, 4), lambda d, t: w8.to(d), "w"),
            "lin.weight_scale": ((), lambda d, t: torch.tensor(0.5).to(d), "s"),
            "lin.bias": ((2,), lambda d, t: torch.ones(2, dtype=torch.float64).to(d, t), "b")}
    out = load_strict(layer, good, "test", "cpu", torch.float16)
    assert out.lin.weight.dtype == FP8 and out.lin.weight_scale.dtype == torch.float32
    assert out.lin.bias.dtype == torch.float16  # not an fp8 tensor: the model dtype
    with torch.device("meta"):
        layer.lin = Fp8Linear(4, 2, policy="fp8-cast")
    bad = dict(good, **{"lin.weight": ((2, 4), lambda d, t: torch.ones(2, 4, dtype=torch.bfloat16), "'x.weight'")})
    with pytest.raises(CheckpointError, match=r"test: tensor 'x.weight' has dtype torch.bfloat16, the model expects "
                                              r"torch.float8_e4m3fn for 'lin.weight'"):
        load_strict(layer, bad, "test", "cpu", torch.float16)


def test_info_names_the_fp8_layout(tmp_path, sd):
    from ltxengine.info import describe
    layers = [PFX + n for n in FP8_LAYERS]
    comfy, meta = comfy_fp8(sd, layers, header=True)
    cases = [(_scaled(sd), None, "Lightricks fp8 (weight_scale + input_scale), 20 fp8 weights"),
             (lightricks_fp8(sd, layers), None, "Lightricks fp8 (weight_scale), 20 fp8 weights"),
             (plain_fp8(sd, layers[:3]), None, "plain fp8 cast (no scales), 3 fp8 weights"),
             (comfy, meta, "ComfyUI mixed precision (comfy_quant), 20 fp8 weights"),
             (comfy_scaled_fp8(sd, layers, PFX), None, "ComfyUI scaled_fp8, 20 fp8 weights")]
    for i, (tensors, metadata, want) in enumerate(cases):
        d = describe(_file(tmp_path, tensors, metadata, name=f"{i}.safetensors"))
        assert d["components"]["transformer"]["fp8"] == want
    assert "fp8" not in describe(_file(tmp_path, sd, name="bf16.safetensors"))["components"]["transformer"]
