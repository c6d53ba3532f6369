"""fp8 rules on LTX-2.3 / 2.5 transformers: the per-head gate projections (``to_gate_logits``) stay in
full precision, as Lightricks' policies keep them (ltx-core @400fd31: fp8_cast.py leaves them plain
nn.Linear and folds a -fp8 file's gate to bf16; blockwise/_impl.py and nvfp4/convert.py exclude them);
every other linear follows the 2.0 rules. 2.0 has no gate, so its targets are unchanged
(tests/quant/test_fp8_linear.py checks them against ltx-core 1.0.0).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltxengine.config import LTX2_TRANSFORMER_22B_V23, LTX2_TRANSFORMER_22B_V25
from ltxengine.loading import load_ltx2
from ltxengine.models.common import OpsLinear
from ltxengine.models.ltx2_transformer import LTX2Transformer
from ltxengine.presets import TINY_LTX23, TINY_LTX25
from ltxengine.quant import Fp8Linear, convert_to_fp8, fp8_targets, keeps_full_precision
from tests.loading.formats import lightricks_fp8, save_single_file
from tests.models.ltx2_transformer_fixtures import original_section, to_original

FP8 = torch.float8_e4m3fn
PFX = "model.diffusion_model."
LAYERS = 7  # the scaled-mm rule (first block and last five in full precision) converts block 1
TINY = {"2.3": dataclasses.replace(TINY_LTX23, num_layers=LAYERS),
        "2.5": dataclasses.replace(TINY_LTX25, num_layers=LAYERS)}
ATTNS = ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    model = LTX2Transformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.to(torch.bfloat16)


def _linears(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, (OpsLinear, Fp8Linear))}


def _gates(model):
    return sorted(n for n in _linears(model) if n.endswith(".to_gate_logits"))


@pytest.mark.parametrize("version", list(TINY))
def test_gates_stay_bf16_and_the_rest_follow_the_rules(version):
    cfg = TINY[version]
    model = _model(cfg)
    gates = _gates(model)
    assert len(gates) == LAYERS * len(ATTNS)  # every attention of every block is gated
    assert all(keeps_full_precision(g, p) for g in gates for p in ("fp8-cast", "fp8-scaled-mm"))
    block_linears = [n for n in _linears(model) if n.startswith("transformer_blocks.")]
    for policy, blocks in (("fp8-cast", range(LAYERS)), ("fp8-scaled-mm", range(1, LAYERS - 5))):
        # the 2.0 rule, gates aside: cast = q/k/v/out + both FFNs of every block; scaled-mm = every
        # linear of blocks 1..depth-6
        expected = [n for n in block_linears if int(n.split(".")[1]) in blocks and not n.endswith("to_gate_logits")
                    and (policy == "fp8-scaled-mm" or n.endswith((".to_q", ".to_k", ".to_v", ".to_out.0",
                                                                   "ff.net.0.proj", "ff.net.2")))]
        assert fp8_targets(model, policy) == expected
        assert len(expected) == len(blocks) * 28  # 6 attentions x 4 + 2 FFNs x 2, as 2.0
        converted = convert_to_fp8(_model(cfg), policy)
        layers = _linears(converted)
        assert sorted(n for n, m in layers.items() if isinstance(m, Fp8Linear)) == sorted(expected)
        for g in gates:
            assert type(layers[g]) is OpsLinear and layers[g].weight.dtype == torch.bfloat16
            assert torch.equal(layers[g].weight, model.get_submodule(g).weight)  # untouched
        assert all(m.weight.dtype == FP8 for n, m in layers.items() if n in expected)


def test_cast_rule_equals_ltx_cores_downcast_map_on_a_gated_model():
    """ltx-core's TRANSFORMER_LINEAR_DOWNCAST_MAP (1.0.0, installed; the suffix list @400fd31 is the same)
    on the 2.3 keys in the original layout: it downcasts exactly our targets, and no gate."""
    from tests.oracles import ltx_core
    ltx_core("loader")  # first: ltx_core.quantization imported on its own hits ltx-core's circular import
    quant = ltx_core("quantization")
    model = _model(TINY["2.3"])
    fp8_keys = {k for k, v in model.state_dict().items() if k.endswith(".weight")
                and quant.TRANSFORMER_LINEAR_DOWNCAST_MAP.apply_to_key_value(to_original(k), v)[0].new_value.dtype
                == FP8}
    assert fp8_keys == {n + ".weight" for n in fp8_targets(model, "fp8-cast")}
    assert not any("to_gate_logits" in k for k in fp8_keys)


@pytest.mark.parametrize("cfg, blocks", [(LTX2_TRANSFORMER_22B_V23, 48), (LTX2_TRANSFORMER_22B_V25, 48)])
def test_release_configs_on_meta(cfg, blocks):
    with torch.device("meta"):
        model = LTX2Transformer(cfg)
    assert len(_gates(model)) == blocks * 6
    assert len(fp8_targets(model, "fp8-cast")) == blocks * 28
    assert len(fp8_targets(model, "fp8-scaled-mm")) == 42 * 28


def _fp8_file(tmp_path, cfg, model, layers, input_scales=None):
    """A Lightricks -fp8 single file of ``model`` (original names) with ``layers`` (our names) in fp8."""
    bundle = {PFX + to_original(k): v.detach() for k, v in model.state_dict().items()}
    orig = {n: PFX + to_original(n + ".weight")[: -len(".weight")] for n in layers}
    tensors = lightricks_fp8(bundle, list(orig.values()), {orig[n]: s for n, s in (input_scales or {}).items()})
    path = save_single_file(tmp_path / "ltx23-fp8.safetensors", tensors, {"transformer": original_section(cfg)})
    return path, tensors, orig


def test_fp8_file_gates_per_policy(tmp_path):
    """A -fp8 file storing block 1 in fp8, gates included (the released 2.3 files hold 34 scaled layers
    per quantized block: 2924 = 43 x 34 x 2 scale keys). fp8-cast dequantizes its gates at load to the
    model dtype, (w8 * scale) in fp32 rounded once, as ltx-core's prequant fold; scaled-mm runs them as
    the file stores them (its FP8Linear swap covers every scaled F8_E4M3 layer of the file)."""
    cfg = TINY["2.3"]
    model = _model(cfg)
    block1 = [n for n in _linears(model) if n.startswith("transformer_blocks.1.")]
    assert len(block1) == 34
    gate = "transformer_blocks.1.attn1.to_gate_logits"
    path, tensors, orig = _fp8_file(tmp_path, cfg, model, block1, {gate: 0.05})
    w8, scale = tensors[orig[gate] + ".weight"], tensors[orig[gate] + ".weight_scale"]

    cast = load_ltx2(path, dtype=torch.bfloat16, components=("transformer",), quantization="fp8-cast").transformer
    layers = _linears(cast)
    for g in _gates(cast):
        assert type(layers[g]) is OpsLinear, g
    assert torch.equal(layers[gate].weight, (w8.float() * scale.float()).to(torch.bfloat16))
    assert sorted(n for n, m in layers.items() if isinstance(m, Fp8Linear)) == sorted(fp8_targets(cast, "fp8-cast"))

    mm = load_ltx2(path, dtype=torch.bfloat16, components=("transformer",),
                   quantization="fp8-scaled-mm").transformer
    layers = _linears(mm)
    fp8 = {n: m for n, m in layers.items() if isinstance(m, Fp8Linear)}
    assert sorted(fp8) == sorted(set(fp8_targets(mm, "fp8-scaled-mm")) | set(block1))
    assert fp8[gate].policy == "fp8-scaled-mm" and torch.equal(fp8[gate].weight.view(torch.uint8),
                                                               w8.view(torch.uint8))
    assert torch.equal(fp8[gate].weight_scale, scale.float()) and torch.equal(fp8[gate].input_scale,
                                                                              torch.tensor(0.05))
    # gates of blocks the file keeps in bf16 are never quantized at load
    assert all(type(layers[g]) is OpsLinear for g in _gates(mm) if not g.startswith("transformer_blocks.1."))

    # no policy on the CPU in fp32: the file decides, fp8-cast, so the gates come back dequantized
    auto = load_ltx2(path, dtype=torch.float32, components=("transformer",)).transformer
    layers = _linears(auto)
    assert type(layers[gate]) is OpsLinear and torch.equal(layers[gate].weight, w8.float() * scale.float())
    assert sorted(n for n, m in layers.items() if isinstance(m, Fp8Linear)) == sorted(set(block1) - set(_gates(auto)))
