"""LoRA loading and fusion against ltx-core 1.0.0 (SingleGPUModelBuilder + apply_loras, the path
ltx-pipelines uses) and diffusers' LoRA key conversion (LTX2LoraLoaderMixin / LTXVideoLoraLoaderMixin
.lora_state_dict), tiny random models on the CPU.

Tolerances. With LoRA entries in {-1, 0, 1} / 8 every product B @ A, its scaled sums and W + delta are
exact, so ours and ltx-core must agree bit for bit. With Gaussian LoRAs ltx-core rounds the scaled B,
the product and the sum into bf16 before adding, ours rounds once, so they may differ by about one
bf16 ulp (bound stated in the test). Model outputs from bit-equal weights use the fp32 model tolerance
of the LTX-2 transformer tests (tests/models/ltx2_transformer_fixtures.REL, 1e-5 relative).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from ltxengine.loading.keymaps import TRANSFORMER_SINGLE_FILE
from ltxengine.loading.lora import LoraError, LoraSet, LoraWeights
from ltxengine.loading.safetensors_io import CheckpointError

from ..helpers import assert_close_scaled
from ..models import ltx2_text_fixtures as text_case
from ..models import ltx2_transformer_fixtures as ltx2_case
from ..models.transformer_fixtures import make_pair as ltxv_pair
from ..oracles import ltx_core
from .lora_fixtures import RANK, bits_equal, linears, ltx2_model, random_lora

lora_pipeline = pytest.importorskip("diffusers.loaders.lora_pipeline")


# -- helpers -----------------------------------------------------------------------------------

def ltxv_model():
    return ltxv_pair()[1]


def ltxv_to_original(path: str) -> str:
    """Our LTX-Video module path -> the original name (inverse of keymaps.TRANSFORMER_SINGLE_FILE)."""
    if path.startswith("time_embed."):
        path = "adaln_single." + path[len("time_embed."):]
    return path.replace("proj_in", "patchify_proj")


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_state(model, expected: dict[str, torch.Tensor], what=""):
    actual = model.state_dict()
    bad = [k for k in expected if not bits_equal(actual[k], expected[k])]
    assert not bad, f"{what}: {len(bad)} tensors differ, e.g. {bad[:3]}"


def by_hand(weight: torch.Tensor, terms) -> torch.Tensor:
    """The documented rule: W + sum(coef * B @ A) in float32, rounded once to W's dtype."""
    delta = None
    for a, b, coef in terms:
        term = coef * (b.float() @ a.float())
        delta = term if delta is None else delta + term
    return (weight.float() + delta).to(weight.dtype)


def expected_state(model, loras):
    """State after fusing ``loras`` = [(Lightricks-layout dict, strength, scale)] into ``model``
    (LTX-2 names), by hand."""
    state = snapshot(model)
    per_target = {}
    for sd, strength, scale in loras:
        for path in linears(model):
            key = "diffusion_model." + ltx2_case.to_original(path)
            if key + ".lora_A.weight" in sd:
                per_target.setdefault(path + ".weight", []).append(
                    (sd[key + ".lora_A.weight"], sd[key + ".lora_B.weight"], strength * scale))
    for target, terms in per_target.items():
        state[target] = by_hand(state[target], terms)
    return state


# -- against ltx-core ----------------------------------------------------------------------------

def ltx_core_fused(tmp_path, cfg, base_state, loras):
    """ltx-core's own build path: a Lightricks single file + LoRA files, bf16."""
    loader = ltx_core("loader")
    conf = ltx_core("model.transformer.model_configurator")
    ckpt = tmp_path / "ltx2.safetensors"
    save_file({"model.diffusion_model." + ltx2_case.to_original(k): v.contiguous() for k, v in base_state.items()},
              str(ckpt), metadata={"config": json.dumps({"transformer": ltx2_case.original_section(cfg)})})
    specs = []
    for i, (sd, strength) in enumerate(loras):
        save_file(sd, str(tmp_path / f"lora{i}.safetensors"))
        specs.append(loader.LoraPathStrengthAndSDOps(str(tmp_path / f"lora{i}.safetensors"), strength,
                                                     loader.LTXV_LORA_COMFY_RENAMING_MAP))
    builder = loader.SingleGPUModelBuilder(model_class_configurator=conf.LTXModelConfigurator, model_path=str(ckpt),
                                           model_sd_ops=conf.LTXV_MODEL_COMFY_RENAMING_MAP, loras=tuple(specs))
    return builder.build(device=torch.device("cpu"), dtype=torch.bfloat16).eval()


def ltx_core_forward(core, ours, cfg):
    modality = ltx_core("model.transformer.modality")
    pert = ltx_core("guidance.perturbations")
    x, b, c = ltx2_case.inputs(cfg), 2, ltx2_case
    video = modality.Modality(latent=x["video"], sigma=x["sigma_v"], timesteps=x["vt"],
                              positions=ours.video_positions(b, c.F, c.H, c.W, c.FPS), context=x["vtext"],
                              context_mask=x["mask"])
    audio = modality.Modality(latent=x["audio"], sigma=x["sigma_a"], timesteps=x["sigma_a"][:, None].expand(b, c.NA),
                              positions=ours.audio_positions(b, c.NA), context=x["atext"], context_mask=x["mask"])
    with torch.no_grad():
        return core(video, audio, pert.BatchedPerturbationConfig([pert.PerturbationConfig([])] * b)), x


def test_fused_weights_and_outputs_match_ltx_core(tmp_path):
    ours, cfg = ltx2_model(torch.bfloat16)
    base = snapshot(ours)
    first = random_lora(ours, seed=1, exact=True, dtype=torch.bfloat16)
    # The second LoRA touches only the attention layers: weights with one and with two LoRAs.
    second = random_lora(ours, seed=2, exact=True, dtype=torch.bfloat16,
                         modules=[p for p in linears(ours) if ".attn" in p or "_attn" in p])
    core = ltx_core_fused(tmp_path, cfg, base, [(first, 1.0), (second, 0.5)])
    LoraSet(ours).apply([(LoraWeights.load(first), 1.0), (LoraWeights.load(second), 0.5)])
    core_state = core.state_dict()
    fused = ours.state_dict()
    assert len(core_state) == len(fused)
    bad = [k for k, v in fused.items() if not bits_equal(v, core_state[ltx2_case.to_original(k)])]
    assert not bad, f"{len(bad)} fused tensors differ from ltx-core's, e.g. {bad[:3]}"
    assert sum(not torch.equal(fused[k], base[k]) for k in fused) == len(linears(ours))  # every linear changed

    # Outputs (fp32 copies of the bit-equal fused weights), with a control: the LoRA matters.
    (rv, ra), x = ltx_core_forward(core.float(), ours.float(), cfg)
    v, a = ltx2_case.run_ours(ours, x)
    assert_close_scaled(v, rv, ltx2_case.REL, "fused video vs ltx-core")
    assert_close_scaled(a, ra, ltx2_case.REL, "fused audio vs ltx-core")
    ours.load_state_dict(base)
    plain, _ = ltx2_case.run_ours(ours, x)
    assert (plain - v).abs().max() > 1e-2


def test_gaussian_lora_within_one_bf16_ulp_of_ltx_core(tmp_path):
    ours, cfg = ltx2_model(torch.bfloat16)
    base = snapshot(ours)
    sd = random_lora(ours, seed=3, dtype=torch.bfloat16)
    core_state = ltx_core_fused(tmp_path, cfg, base, [(sd, 0.7)]).state_dict()
    LoraSet(ours).apply([(LoraWeights.load(sd), 0.7)])
    worst_core, worst_exact = 0.0, 0.0
    for path in linears(ours):
        key = "diffusion_model." + ltx2_case.to_original(path)
        a, b = sd[key + ".lora_A.weight"].double(), sd[key + ".lora_B.weight"].double()
        exact = base[path + ".weight"].double() + 0.7 * (b @ a)
        mine = ours.get_submodule(path).weight.double()
        theirs = core_state[ltx2_case.to_original(path) + ".weight"].double()
        # Ours is W + delta rounded once: within half a bf16 ulp (unit roundoff 2^-8 relative) of the
        # exact value, plus the fp32 roundings before it (~2^-23 relative to |W| and 0.7 |B| @ |A|).
        size = 0.7 * (b.abs() @ a.abs())
        err = (mine - exact).abs() / ((2.0 ** -8 + 2.0 ** -20) * exact.abs() + 2.0 ** -20 * size)
        worst_exact = max(worst_exact, err.max().item())
        # ltx-core rounds 0.7 * B and B @ A to bf16 (2^-8 relative each) before its rounded add: the
        # two may differ by one ulp of the result (<= 2^-7 relative) plus those two roundings.
        bound = 2.0 ** -7 * theirs.abs() + 2.0 ** -6 * size
        worst_core = max(worst_core, ((mine - theirs).abs() / bound).max().item())
    print(f"gaussian LoRA, bf16: ours vs exact {worst_exact:.4f}, ours vs ltx-core {worst_core:.4f} of the bounds")
    assert worst_exact <= 1.0, f"ours vs exact: {worst_exact:.2f} of the half-ulp bound"
    assert worst_core <= 1.0, f"ours vs ltx-core: {worst_core:.2f} of the bound"


# -- against diffusers' key conversion -------------------------------------------------------------

def test_ltx2_diffusers_conversion_loads_identically():
    ours, _ = ltx2_model()
    connectors = text_case.make_pair()[0]
    sd = random_lora(ours, seed=4)
    proj = connectors.text_proj_in.weight
    g = torch.Generator().manual_seed(5)
    sd["text_embedding_projection.aggregate_embed.lora_A.weight"] = torch.randn(RANK, proj.shape[1], generator=g)
    sd["text_embedding_projection.aggregate_embed.lora_B.weight"] = torch.randn(proj.shape[0], RANK, generator=g)
    converted = lora_pipeline.LTX2LoraLoaderMixin.lora_state_dict(dict(sd))
    assert all(k.startswith(("transformer.", "connectors.")) for k in converted)
    mine, theirs = LoraWeights.load(sd), LoraWeights.load(converted)
    assert (mine.format, theirs.format) == ("lightricks", "diffusers")
    assert set(mine.targets) == set(theirs.targets)
    assert set(mine.targets) == {p + ".weight" for p in linears(ours)} | {"text_proj_in.weight"}
    for t in mine.targets:
        p, q = mine.pairs[t], theirs.pairs[t]
        assert (p.component, p.scale) == (q.component, q.scale)
        assert torch.equal(p.a, q.a) and torch.equal(p.b, q.b)
    states = []
    for weights in (mine, theirs):
        t, c = ltx2_model()[0], text_case.make_pair()[0]
        LoraSet({"transformer": t, "connectors": c}).apply([(weights, 0.8)])
        states.append((snapshot(t), snapshot(c)))
    for x, y in zip(*states):
        assert all(bits_equal(x[k], y[k]) for k in x)


def test_ltxv_diffusers_conversion_loads_identically():
    model = ltxv_model()
    same_name = [p for p in linears(model) if ltxv_to_original(p) == p]
    sd = random_lora(model, rename=ltxv_to_original, modules=same_name, seed=6)
    converted = lora_pipeline.LTXVideoLoraLoaderMixin.lora_state_dict(dict(sd))
    fused = []
    for source in (sd, converted):
        m = ltxv_model()
        LoraSet(m).apply([(LoraWeights.load(source), 1.3)])
        fused.append(snapshot(m))
    assert all(bits_equal(fused[0][k], fused[1][k]) for k in fused[0])
    assert not torch.equal(fused[0]["proj_out.weight"], snapshot(model)["proj_out.weight"])


def test_ltxv_renamed_modules_follow_the_checkpoint_keymap():
    """patchify_proj / adaln_single LoRA keys land on proj_in / time_embed as the checkpoint map says.
    diffusers' LTX-Video converter does not rename them; our loader refuses its output."""
    model = ltxv_model()
    for path in linears(model):
        original = f"model.diffusion_model.{ltxv_to_original(path)}.weight"
        assert TRANSFORMER_SINGLE_FILE.apply(original) == path + ".weight"
    sd = random_lora(model, rename=ltxv_to_original, seed=7)
    assert set(LoraWeights.load(sd).targets) == {p + ".weight" for p in linears(model)}
    converted = lora_pipeline.LTXVideoLoraLoaderMixin.lora_state_dict(dict(sd))
    assert "transformer.patchify_proj.lora_A.weight" in converted
    before = snapshot(model)
    with pytest.raises(LoraError, match=r"transformer\.patchify_proj\.lora_A\.weight.*match no linear layer"):
        LoraSet(model).apply([(LoraWeights.load(converted), 1.0)])
    assert_state(model, before)


# -- fusion semantics --------------------------------------------------------------------------------

def test_two_loras_with_strengths_equal_the_rule():
    model, _ = ltx2_model()
    first = random_lora(model, seed=8)
    second = random_lora(model, seed=9, modules=linears(model)[::3])
    expected = expected_state(model, [(first, 0.5, 1.0), (second, -1.25, 1.0)])
    lora_set = LoraSet(model)
    w1, w2 = LoraWeights.load(first, name="one"), LoraWeights.load(second, name="two")
    lora_set.apply([(w1, 0.5), (w2, -1.25)])
    assert_state(model, expected, "two loras")
    assert [(w.name, s) for w, s in lora_set.active] == [("one", 0.5), ("two", -1.25)]


def test_switch_and_clear_are_bit_exact():
    model, _ = ltx2_model(torch.bfloat16)
    base = snapshot(model)
    a = LoraWeights.load(random_lora(model, seed=10))
    b = LoraWeights.load(random_lora(model, seed=11, modules=linears(model)[1::2]))
    alone = ltx2_model(torch.bfloat16)[0]
    LoraSet(alone).apply([(b, 0.9)])
    lora_set = LoraSet(model)
    lora_set.apply([(a, 1.0)])
    assert lora_set.version == 1
    lora_set.apply([(b, 0.9)])  # weights only A touched go back; B's start from the originals
    assert_state(model, snapshot(alone), "A then B vs B alone")
    for _ in range(3):
        lora_set.apply([(a, 0.7), (b, 0.9)])
    lora_set.clear()
    assert_state(model, base, "after clear")
    assert (lora_set.version, lora_set.active) == (6, ())


def test_bf16_delta_in_fp32_rounded_once():
    model, _ = ltx2_model(torch.bfloat16)
    sd = random_lora(model, seed=12)
    expected = expected_state(model, [(sd, 0.6, 1.0)])
    LoraSet(model).apply([(LoraWeights.load(sd), 0.6)])
    assert_state(model, expected, "bf16")
    # Control: rounding the delta to bf16 before the add (what ltx-core does) gives other bits.
    path = "transformer_blocks.0.attn1.to_q"
    key = "diffusion_model." + ltx2_case.to_original(path)
    w0 = ltx2_model(torch.bfloat16)[0].get_submodule(path).weight
    delta = 0.6 * (sd[key + ".lora_B.weight"] @ sd[key + ".lora_A.weight"])
    assert not torch.equal(w0 + delta.to(torch.bfloat16), model.get_submodule(path).weight)


def test_zero_strength_changes_nothing():
    model, _ = ltx2_model()
    before = snapshot(model)
    lora_set = LoraSet(model)
    weights = LoraWeights.load(random_lora(model, seed=13))
    lora_set.apply([(weights, 0)])
    assert_state(model, before)
    assert lora_set.active == ((weights, 0.0),) and lora_set.version == 1


@pytest.mark.parametrize("layout", ["comfy", "peft-alpha", "peft-metadata"])
def test_alpha_scales_by_alpha_over_rank(tmp_path, layout):
    model, _ = ltx2_model()
    modules = linears(model)[:5]
    sd = random_lora(model, modules=modules, seed=14)
    expected = expected_state(model, [(sd, 0.5, 6.0 / RANK)])
    if layout == "comfy":  # kohya / ComfyUI: lora_down / lora_up and a per-module .alpha
        source = random_lora(model, modules=modules, seed=14, down_up=True)
        source.update({f"diffusion_model.{ltx2_case.to_original(p)}.alpha": torch.tensor(6.0) for p in modules})
    elif layout == "peft-alpha":
        source = random_lora(model, modules=modules, seed=14, prefix="transformer.", rename=str)
        source.update({f"transformer.{p}.alpha": torch.tensor(6.0) for p in modules})
    else:  # diffusers' save_lora_weights header (PEFT LoraConfig flattened under "transformer.")
        path = tmp_path / "peft.safetensors"
        save_file(random_lora(model, modules=modules, seed=14, prefix="transformer.", rename=str), str(path),
                  metadata={"lora_adapter_metadata": json.dumps({"transformer.r": RANK, "transformer.lora_alpha": 6,
                                                                 "transformer.use_dora": False})})
        source = path
    weights = LoraWeights.load(source)
    assert {p.scale for p in weights.pairs.values()} == {6.0 / RANK}
    LoraSet(model).apply([(weights, 0.5)])
    assert_state(model, expected, layout)


def test_text_connectors_are_fused_when_given():
    transformer, _ = ltx2_model()
    connectors = text_case.make_pair()[0]
    c_paths = ["text_proj_in", "video_connector.transformer_blocks.1.attn1.to_k",
               "audio_connector.transformer_blocks.0.ff.net.2"]
    originals = {p: connectors.get_submodule(p).weight.detach().clone() for p in c_paths}
    rename = {p: next(iter(text_case.to_original({p + ".weight": None}))).removeprefix("model.")[:-len(".weight")]
              for p in c_paths}
    sd = random_lora(connectors, rename=lambda p: rename[p], prefix="", modules=c_paths, seed=15)
    sd.update(random_lora(transformer, modules=["proj_out"], seed=16))
    weights = LoraWeights.load(sd)
    assert {p.component for p in weights.pairs.values()} == {"transformer", "connectors"}
    LoraSet({"transformer": transformer, "connectors": connectors}).apply([(weights, 2.0)])
    for p in c_paths:
        a, b = sd[f"{rename[p]}.lora_A.weight"], sd[f"{rename[p]}.lora_B.weight"]
        assert bits_equal(connectors.get_submodule(p).weight, by_hand(originals[p], [(a, b, 2.0)])), p


def test_loads_from_a_safetensors_file(tmp_path):
    model, _ = ltx2_model()
    sd = random_lora(model, seed=17, modules=linears(model)[:4])
    save_file(sd, str(tmp_path / "style.safetensors"))
    from_file, from_dict = LoraWeights.load(tmp_path / "style.safetensors"), LoraWeights.load(sd, name="x")
    assert (from_file.name, from_dict.name) == ("style", "x")
    assert all(torch.equal(from_file.pairs[t].b, from_dict.pairs[t].b) for t in from_dict.targets)


# -- errors ----------------------------------------------------------------------------------------

def _good(model):
    return random_lora(model, seed=20, modules=["proj_out", "transformer_blocks.0.attn1.to_q"])


def _without(sd, suffix):
    return {k: v for k, v in sd.items() if not k.endswith(suffix) or "proj_out" not in k}


def _ab(module, a_shape, b_shape):
    return {f"{module}.lora_A.weight": torch.zeros(a_shape), f"{module}.lora_B.weight": torch.zeros(b_shape)}


_KEY = "diffusion_model.transformer_blocks.0.attn1.to_q"
_UNET = {f"lora_unet_b{i:02}.lora_down.weight": torch.zeros(1) for i in range(12)}
LOAD_ERRORS = {
    "empty": (lambda sd: {}, "holds no tensors"),
    "mixed": (lambda sd: {**sd, "transformer.proj_out.lora_A.weight": torch.zeros(4, 32)},
              r"mixes the Lightricks/ComfyUI layout .*diffusers layout \(1 keys"),
    "unknown prefix": (lambda sd: {**sd, **_UNET},
                       r"12 keys \['lora_unet_b00.*'lora_unet_b09.lora_down.weight'\] and 2 more start with none"),
    "unknown suffix": (lambda sd: {**sd, _KEY + ".diff": torch.zeros(32, 32)}, r"\.diff'\] are not LoRA tensors"),
    "dora": (lambda sd: {**sd, _KEY + ".dora_scale": torch.zeros(1, 32)}, "dora_scale'] are not LoRA tensors"),
    # (video_aggregate_embed was the example until LTX-2.3's feature extractor V2 mapped it)
    "unmapped module": (lambda sd: {**sd, **_ab("text_embedding_projection.no_such_embed", (4, 8), (8, 4))},
                        "2 keys .*no_such_embed.* are not LoRA tensors"),
    "nan": (lambda sd: {**sd, _KEY + ".lora_B.weight": torch.full((32, 4), float("nan"))},
            r"tensor 'diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight' holds non-finite values"),
    "inf alpha": (lambda sd: {**sd, _KEY + ".alpha": torch.tensor(float("inf"))}, "must be a finite, non-zero alpha"),
    "missing B": (lambda sd: _without(sd, "lora_B.weight"),
                  r"\['diffusion_model.proj_out.lora_A.weight'\] have no matching lora_B"),
    "missing A": (lambda sd: _without(sd, "lora_A.weight"), "proj_out.lora_B.weight'] have no matching lora_A"),
    "lone alpha": (lambda sd: {**sd, "diffusion_model.proj_in.alpha": torch.tensor(4.0)},
                   "alphas of modules without lora_A"),
    "two A": (lambda sd: {**sd, _KEY + ".lora_down.weight": sd[_KEY + ".lora_A.weight"]}, "are both the A tensor"),
    "two targets": (lambda sd: {**sd, **_ab("diffusion_model.proj_in", (4, 8), (32, 4)),
                                **_ab("diffusion_model.patchify_proj", (4, 8), (32, 4))},
                    r"both target 'proj_in.weight'"),
    "3-D": (lambda sd: {**sd, _KEY + ".lora_A.weight": torch.zeros(4, 32, 1)}, r"shape \(4, 32, 1\)"),
    "int": (lambda sd: {**sd, _KEY + ".lora_A.weight": torch.zeros(4, 32, dtype=torch.int32)},
            "non-empty 2-D floating tensor, got shape .* torch.int32"),
    "rank": (lambda sd: {**sd, _KEY + ".lora_B.weight": torch.zeros(32, 3)},
             r"lora_B.weight' has shape \(32, 3\), expected \(32, 4\) \(rank 4"),
    "alpha shape": (lambda sd: {**sd, _KEY + ".alpha": torch.ones(2)}, r"alpha' must be a scalar, got shape \(2,\)"),
    "not tensors": (lambda sd: {**sd, _KEY + ".alpha": 4.0}, "must map str keys to tensors"),
    "not a dict": (lambda sd: 42, "must be a .safetensors path or a dict of tensors, got int"),
}


@pytest.mark.parametrize("case", list(LOAD_ERRORS))
def test_load_errors(case):
    model, _ = ltx2_model()
    change, match = LOAD_ERRORS[case]
    with pytest.raises(LoraError, match=match):
        LoraWeights.load(change(_good(model)))


def test_load_refuses_a_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        LoraWeights.load(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("metadata, alpha_key, match", [
    ({"transformer.use_dora": True}, False, "transformer.use_dora = True, which is not supported"),
    ({"transformer.use_rslora": True}, False, "use_rslora"),
    ({"transformer.alpha_pattern": {"proj_out": 2}}, False, "alpha_pattern"),
    ({"transformer.lora_alpha": 8}, True, "both give an alpha"),
    ("{not json", False, "is not valid JSON"),
    ("[1, 2]", False, "must be a JSON object"),
])
def test_peft_metadata_errors(tmp_path, metadata, alpha_key, match):
    model, _ = ltx2_model()
    sd = random_lora(model, modules=["proj_out"], prefix="transformer.", rename=str)
    if alpha_key:
        sd["transformer.proj_out.alpha"] = torch.tensor(8.0)
    raw = metadata if isinstance(metadata, str) else json.dumps(metadata)
    save_file(sd, str(tmp_path / "l.safetensors"), metadata={"lora_adapter_metadata": raw})
    with pytest.raises(LoraError, match=match):
        LoraWeights.load(tmp_path / "l.safetensors")


def _ltxv_on_ltx2(modules):
    return LoraWeights.load(random_lora(ltxv_model(), rename=ltxv_to_original, modules=modules), name="ltxv")


_MISSING_BLOCKS = {k: v for i in range(5, 11) for k, v in _ab(_KEY.replace(".0.", f".{i}."), (4, 4), (4, 4)).items()}
APPLY_ERRORS = {
    "no module": (lambda m: LoraWeights.load({**_good(m), **_MISSING_BLOCKS}, name="big"),
                  r"lora 'big': 12 keys \[.*\] and 2 more match no linear layer"),
    "not linear": (lambda m: LoraWeights.load(_ab("diffusion_model.transformer_blocks.0.attn1.q_norm", (4, 32),
                                                  (32, 4))), "match no linear layer"),
    "shape A": (lambda m: _ltxv_on_ltx2(["transformer_blocks.0.attn1.to_q"]),
                r"lora 'ltxv': tensor 'diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight' has shape "
                r"\(4, 16\), expected \(4, 32\) \(transformer transformer_blocks.0.attn1.to_q.weight is \(32, 32\)"),
    "shape B": (lambda m: _ltxv_on_ltx2(["time_embed.emb.timestep_embedder.linear_1"]),
                r"adaln_single.emb.timestep_embedder.linear_1.lora_B.weight' has shape \(16, 4\), expected \(32, 4\)"),
    "connectors": (lambda m: LoraWeights.load({**_good(m), **_ab("text_embedding_projection.aggregate_embed", (4, 8),
                                                                  (8, 4))}),
                   "1 keys .* target the connectors module, which LoraSet was not given"),
}


@pytest.mark.parametrize("case", list(APPLY_ERRORS) + ["fp8", "strength nan", "strength str", "strength bool",
                                                       "not a list", "not a pair"])
def test_apply_errors_leave_the_model_untouched(case):
    model, _ = ltx2_model()
    lora_set = LoraSet(model)
    lora_set.apply([(LoraWeights.load(random_lora(model, seed=21)), 0.8)])
    before, state = snapshot(model), (lora_set.version, lora_set.active)
    good = LoraWeights.load(random_lora(model, seed=22), name="good")
    if case in APPLY_ERRORS:
        make, match = APPLY_ERRORS[case]
        loras = [(good, 1.0), (make(model), 1.0)]
    elif case == "fp8":
        with torch.no_grad():
            model.proj_out.weight.data = model.proj_out.weight.data.to(torch.float8_e4m3fn)
        before = snapshot(model)
        loras, match = [(good, 1.0)], "proj_out.weight is stored as torch.float8_e4m3fn; LoRA fusion into fp8"
    elif case.startswith("strength"):
        bad = {"strength nan": float("nan"), "strength str": "1", "strength bool": True}[case]
        loras, match = [(good, 1.0), (good, bad)], "strength of lora 'good' must be a finite number"
    elif case == "not a list":
        loras, match = good, "loras must be a list of \\(LoraWeights, strength\\), got LoraWeights"
    else:
        loras, match = [good], r"loras\[0\] must be a \(LoraWeights, strength\) pair"
    with pytest.raises(LoraError, match=match):
        lora_set.apply(loras)
    assert_state(model, before, case)
    assert (lora_set.version, lora_set.active) == state


@pytest.mark.parametrize("bad", [{"vae": torch.nn.Linear(2, 2)}, {}, {"transformer": 3}, "model"])
def test_lora_set_refuses_bad_models(bad):
    with pytest.raises(LoraError, match="LoraSet: model must be an nn.Module or a dict"):
        LoraSet(bad)
