"""LTX-2 checkpoints in both real formats: Lightricks' single-file bundle (original key names,
configs in the header) and a diffusers pipeline folder, from the same random weights.

The bundle is written with each component's original names as the component tests derive them
from ltx-core's module tree (and check against ltx-core loading them strictly); the folder is
written by diffusers' own ``save_pretrained``. Both must load to identical weights.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from ltxengine.loading import CheckpointError
from ltxengine.loading.ltx2 import COMPONENTS, is_ltx2, load_ltx2, load_ltx2_component
from ltxengine.loading.ltx2_text import V2_EXPECTED
from tests.helpers import perturb_
from tests.models import audio_vae_fixtures as audio_t
from tests.models import ltx2_text_fixtures as text_t
from tests.models import ltx2_transformer_fixtures as dit_t
from tests.models import ltx2_video_vae_fixtures as vae_t
from tests.models import vocoder_fixtures as voc_t

diffusers = pytest.importorskip("diffusers")

CAPTION = text_t.D  # the DiT's caption width = the connectors' width (one shared header key)
DIT = dict(dit_t.TINY["split64"], caption_channels=CAPTION)


@pytest.fixture(scope="module")
def models():
    """diffusers modules with random weights, one per component."""
    from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformer3DModel
    torch.manual_seed(0)
    dit = LTX2VideoTransformer3DModel(**DIT).eval()
    perturb_(dit, seed=3)
    _, connectors = text_t.make_pair(audio_connector_num_learnable_registers=16, connector_rope_base_seq_len=64)
    vae, _ = vae_t.make_pair("2.0")
    audio_vae, _ = audio_t.make_pair("release")
    vocoder, _ = voc_t.make_pair("release")
    return {"transformer": dit, "connectors": connectors, "vae": vae, "audio_vae": audio_vae, "vocoder": vocoder}


def _header(models) -> dict:
    from ltxengine.config import LTX2TransformerConfig, parse_config
    dit_cfg = parse_config(LTX2TransformerConfig, dict(models["transformer"].config), "test")
    c = models["connectors"].config
    transformer = dict(dit_t.original_section(dit_cfg),
                       connector_num_attention_heads=c.video_connector_num_attention_heads,
                       connector_attention_head_dim=c.video_connector_attention_head_dim,
                       connector_num_layers=c.video_connector_num_layers,
                       connector_num_learnable_registers=c.video_connector_num_learnable_registers,
                       audio_connector_num_attention_heads=c.audio_connector_num_attention_heads,
                       audio_connector_attention_head_dim=c.audio_connector_attention_head_dim,
                       audio_connector_num_layers=c.audio_connector_num_layers,
                       connector_positional_embedding_max_pos=[c.connector_rope_base_seq_len])
    from ltxengine.models.video_vae import LTX2VideoVAEConfig
    vae_cfg = parse_config(LTX2VideoVAEConfig, vae_t.CASES["2.0"], "test")
    return {"transformer": transformer, "vae": vae_t.original_section(vae_cfg),
            "audio_vae": audio_t.original_header(audio_t.CASES["release"])["audio_vae"],
            "vocoder": {"resblock": "1", "stereo": True, "upsample_initial_channel": 32}}


def _original_tensors(models) -> dict:
    sd = {}
    sd.update({"model.diffusion_model." + dit_t.to_original(k): v for k, v in models["transformer"].state_dict().items()})
    sd.update(text_t.to_original(models["connectors"].state_dict()))
    from ltxengine.models.video_vae import LTX2VideoVAE, LTX2VideoVAEConfig
    from ltxengine.config import parse_config
    ours_vae = LTX2VideoVAE(parse_config(LTX2VideoVAEConfig, vae_t.CASES["2.0"], "test"))
    ours_vae.load_state_dict(models["vae"].state_dict())
    sd.update(vae_t.original_state_dict(ours_vae))
    sd.update(audio_t.to_original(models["audio_vae"].state_dict()))
    sd.update(voc_t.to_original(models["vocoder"].state_dict()))
    return {k: v.detach().contiguous() for k, v in sd.items()}


def write_bundle(path, models, extra=None, header=None):
    tensors = dict(_original_tensors(models), **(extra or {}))
    meta = {"config": json.dumps(header or _header(models)), "model_version": "2.0.0"}
    save_file(tensors, str(path), metadata=meta)
    return path


def write_folder(root, models):
    index = {"_class_name": "LTX2Pipeline", "_diffusers_version": diffusers.__version__}
    for name, model in models.items():
        model.save_pretrained(root / name)
        index[name] = ["diffusers", type(model).__name__]
    (root / "model_index.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module")
def checkpoints(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("ltx2")
    return write_bundle(root / "ltx-2-tiny.safetensors", models), write_folder(root / "folder", models)


def test_bundle_and_folder_load_identical_weights(models, checkpoints):
    bundle, folder = checkpoints
    a = load_ltx2(bundle, dtype=torch.float32)
    b = load_ltx2(folder, dtype=torch.float32)
    assert a.model_version == "2.0.0"
    for name in COMPONENTS:
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        ref = models[name].state_dict()
        assert sa.keys() == sb.keys() == ref.keys(), name
        for k in sa:
            assert torch.equal(sa[k], sb[k]) and torch.equal(sa[k], ref[k]), f"{name}: {k}"
        assert type(getattr(a, name)).__name__ == type(getattr(b, name)).__name__


def test_bundle_matches_diffusers_single_file_converters(models, checkpoints):
    """diffusers' own single-file converters read our bundle back to the diffusers keys: the
    original names the tests write are the real format, not our loader's inverse."""
    from diffusers.loaders import single_file_utils as sfu
    from safetensors.torch import load_file
    sd = load_file(str(checkpoints[0]))
    dit = sfu.convert_ltx2_transformer_to_diffusers({k: v for k, v in sd.items()
                                                     if k.startswith("model.diffusion_model.")})
    assert dit.keys() == models["transformer"].state_dict().keys()
    audio = sfu.convert_ltx2_audio_vae_to_diffusers({k[len("audio_vae."):]: v for k, v in sd.items()
                                                     if k.startswith("audio_vae.")})
    assert audio.keys() == models["audio_vae"].state_dict().keys()


def test_components_subset_and_single_component_folder(checkpoints):
    bundle, folder = checkpoints
    ck = load_ltx2(bundle, dtype=torch.float32, components=("audio_vae", "vocoder"))
    assert ck.transformer is None and ck.vae is None and ck.vocoder is not None
    vae = load_ltx2_component(folder / "vae", "vae", dtype=torch.float32)
    assert type(vae).__name__ == "LTX2VideoVAE"
    with pytest.raises(ValueError, match="components must be a non-empty subset"):
        load_ltx2(bundle, components=("gemma",))


def test_detection(checkpoints, tmp_path):
    bundle, folder = checkpoints
    assert is_ltx2(bundle) and is_ltx2(folder) and is_ltx2(folder / "transformer")
    other = tmp_path / "other.safetensors"
    save_file({"model.diffusion_model.proj_in.weight": torch.zeros(2, 2)}, str(other))
    assert not is_ltx2(other)


def test_foreign_tensor_is_refused(models, tmp_path):
    path = write_bundle(tmp_path / "x.safetensors", models, extra={"lora_unet.foo.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="1 tensors belong to no LTX-2 component: 'lora_unet.foo.weight'"):
        load_ltx2(path, dtype=torch.float32)


def test_missing_tensor_and_section_are_named(models, tmp_path):
    tensors = _original_tensors(models)
    key = "vocoder.conv_post.weight"
    del tensors[key]
    path = tmp_path / "y.safetensors"
    save_file(tensors, str(path), metadata={"config": json.dumps(_header(models))})
    with pytest.raises(CheckpointError, match=r"\[vocoder\].*missing from the checkpoint: 'conv_out.weight'"):
        load_ltx2(path, dtype=torch.float32, components=("vocoder",))
    header = _header(models)
    del header["audio_vae"]
    path = write_bundle(tmp_path / "z.safetensors", models, header=header)
    with pytest.raises(CheckpointError, match="no 'audio_vae' section"):
        load_ltx2(path, dtype=torch.float32, components=("audio_vae",))


def test_refused_options_are_named(models, tmp_path):
    header = _header(models)
    header["transformer"]["apply_gated_attention"] = "true"
    path = write_bundle(tmp_path / "g.safetensors", models, header=header)
    with pytest.raises(ValueError, match="apply_gated_attention"):
        load_ltx2(path, dtype=torch.float32, components=("transformer",))
    # A 2.3 switch over 2.0 weights: the gate tensors it needs are missing, by name.
    header["transformer"]["apply_gated_attention"] = True
    path = write_bundle(tmp_path / "g2.safetensors", models, header=header)
    with pytest.raises(ValueError, match="to_gate_logits"):
        load_ltx2(path, dtype=torch.float32, components=("transformer",))


def test_folder_with_wrong_class_is_refused(models, tmp_path):
    folder = write_folder(tmp_path / "f", {"vocoder": models["vocoder"]})
    cfg = json.loads((folder / "vocoder" / "config.json").read_text())
    cfg["_class_name"] = "LTX2VideoTransformer3DModel"
    (folder / "vocoder" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="_class_name must be 'LTX2Vocoder' or 'LTX2VocoderWithBWE' for the "
                                              "vocoder, got 'LTX2VideoTransformer3DModel'"):
        load_ltx2_component(folder / "vocoder", "vocoder")


def test_meta_build_of_the_19b_bundle_sizes():
    """Released 2.0 configs on the meta device: the parameter counts of the reference doc."""
    from ltxengine.loading import ltx2 as L
    expected = {"transformer": 18_876_174_592, "connectors": 1_431_475_200, "vae": 1_222_479_601,
                "audio_vae": 53_248_146, "vocoder": 55_592_802}
    for name, count in expected.items():
        spec = L.COMPONENT_SPECS[name]
        cfg = L._attr(spec.config)()
        with torch.device("meta"):
            model = L._attr(spec.model)(cfg)
        assert sum(p.numel() for p in model.parameters()) == count, name


def test_info_describes_the_bundle(checkpoints):
    from ltxengine.info import describe, format_description
    d = describe(checkpoints[0])
    assert d["family"] == "LTX-2" and d["model_version"] == "2.0.0"
    assert set(d["components"]) == set(COMPONENTS)
    loaded = load_ltx2(checkpoints[0], dtype=torch.float32)
    for name in COMPONENTS:
        expected = sum(t.numel() for t in getattr(loaded, name).state_dict().values())
        dropped = 2 * 8 if name == "vae" else 0  # the two unused statistics the bundle carries
        assert d["components"][name]["parameters"] == expected + dropped, name
    assert "model_version: 2.0.0" in format_description(d)
    folder = describe(checkpoints[1])
    assert folder["family"] == "LTX-2" and set(folder["components"]) == set(COMPONENTS)


# -- LTX-2.3 (issue 19): the 22B bundle, ltx-2.3-22b-dev.safetensors ------------------------------------------

# The tiny 2.3 DiT (every 2.3 switch) at the connectors' RoPE (one header key serves both) and the Gemma width
# as caption_channels (the DiT no longer projects the caption; the header still names the width).
DIT_V23 = dict(dit_t.TINY_V23["v23"], rope_type="split", rope_double_precision=True, caption_channels=text_t.D)
# Feature extractor V2 and gated connectors at the DiT's widths (2 x 16 video, 2 x 8 audio), one register
# count (the header has one key).
CONNECTORS_V23 = dict(text_t.V23, video_hidden_dim=32, audio_hidden_dim=16, video_connector_num_attention_heads=2,
                      video_connector_attention_head_dim=16, audio_connector_num_attention_heads=2,
                      audio_connector_attention_head_dim=8, audio_connector_num_learnable_registers=16)


@pytest.fixture(scope="module")
def models_v23():
    """diffusers modules of an LTX-2.3-like bundle with random weights, one per component."""
    from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformer3DModel
    torch.manual_seed(0)
    dit = LTX2VideoTransformer3DModel(**DIT_V23).eval()
    perturb_(dit, seed=3)
    _, connectors = text_t.make_pair(**CONNECTORS_V23)
    vae, _ = vae_t.make_pair("2.3")
    audio_vae, _ = audio_t.make_pair("release")
    vocoder, _ = voc_t.make_bwe_pair("release")
    return {"transformer": dit, "connectors": connectors, "vae": vae, "audio_vae": audio_vae, "vocoder": vocoder}


def _header_v23(models) -> dict:
    from ltxengine.config import parse_config
    from ltxengine.models.video_vae import LTX2VideoVAEConfig
    header = _header(models)
    # ltx-core's feature extractor V2 switches (the DiT's writer sets only caption_proj_before_connector)
    header["transformer"].update(V2_EXPECTED, connector_apply_gated_attention=True)
    # keys the released 2.3 header carries that ltx-core reads nowhere (public ports' restatements of it), and
    # its float gate multiplier
    header["transformer"].update(use_embeddings_connector=True, text_encoder_norm_type="per_token_rms",
                                 causal_temporal_positioning=True)
    multiplier = header["transformer"]["av_ca_timestep_scale_multiplier"]
    header["transformer"]["av_ca_timestep_scale_multiplier"] = float(multiplier)
    header["vae"] = vae_t.original_section(parse_config(LTX2VideoVAEConfig, vae_t.CASES_V23["2.3"], "test"))
    header["vocoder"] = voc_t.release_bwe_section(vocoder=voc_t.BWE_CASES["release"]["hidden_channels"],
                                                  bwe=voc_t.BWE_CASES["release"]["bwe_hidden_channels"])
    return header


def _original_tensors_v23(models) -> dict:
    sd = {"model.diffusion_model." + dit_t.to_original(k): v for k, v in models["transformer"].state_dict().items()}
    sd.update(text_t.to_original(models["connectors"].state_dict()))
    sd.update(vae_t.original_state_dict(vae_t.make_pair("2.3")[1]))
    sd.update(audio_t.to_original(models["audio_vae"].state_dict()))
    sd.update(voc_t.bwe_to_original(models["vocoder"].state_dict()))
    return {k: v.detach().contiguous() for k, v in sd.items()}


@pytest.fixture(scope="module")
def checkpoints_v23(models_v23, tmp_path_factory):
    root = tmp_path_factory.mktemp("ltx23")
    meta = {"config": json.dumps(_header_v23(models_v23)), "model_version": "2.3.0"}
    save_file(_original_tensors_v23(models_v23), str(root / "ltx-2.3-tiny.safetensors"), metadata=meta)
    return root / "ltx-2.3-tiny.safetensors", write_folder(root / "folder", models_v23)


def test_v23_bundle_and_folder_load_identical_weights(models_v23, checkpoints_v23):
    """An LTX-2.3 bundle (all five components, ltx-core names, per-component header sections, the
    feature extractor V2 projections) and the diffusers folder of the same weights: identical state
    dicts, component by component, equal to the diffusers modules'."""
    bundle, folder = checkpoints_v23
    a = load_ltx2(bundle, dtype=torch.float32)
    b = load_ltx2(folder, dtype=torch.float32)
    assert a.model_version == "2.3.0"
    for name in COMPONENTS:
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        ref = models_v23[name].state_dict()
        assert sa.keys() == sb.keys() == ref.keys(), name
        for k in sa:
            assert torch.equal(sa[k], sb[k]) and torch.equal(sa[k], ref[k]), f"{name}: {k}"
        assert type(getattr(a, name)).__name__ == type(getattr(b, name)).__name__
    # the connectors' Gemma input (width x hidden states) comes from the projection's shape and the header
    cfg = a.connectors.config
    assert (cfg.caption_channels, cfg.text_proj_in_factor) == (text_t.D, text_t.L)
    assert cfg == b.connectors.config
    assert a.vocoder.config == b.vocoder.config


def test_v23_detection(checkpoints_v23, models_v23, tmp_path):
    assert is_ltx2(checkpoints_v23[0])
    # a 2.3 vocoder on its own: the BWE vocoder nests its generators under vocoder.vocoder / vocoder.bwe_generator
    vocoder = {k: v for k, v in _original_tensors_v23(models_v23).items() if k.startswith("vocoder.")}
    save_file(vocoder, str(tmp_path / "vocoder.safetensors"))
    assert is_ltx2(tmp_path / "vocoder.safetensors")


def test_v23_gemma_projection_errors_are_named(models_v23, tmp_path):
    """The connectors' Gemma input comes from the V2 projection's shape over the header's Gemma width:
    a width that does not divide it, a width that is not a positive integer, and a bundle with neither
    projection are refused by key."""
    tensors = _original_tensors_v23(models_v23)

    def load(header, tensors=tensors):
        path = tmp_path / "c.safetensors"
        save_file(tensors, str(path), metadata={"config": json.dumps(header), "model_version": "2.3.0"})
        return load_ltx2(path, dtype=torch.float32, components=("connectors",))

    header = _header_v23(models_v23)
    header["transformer"]["caption_channels"] = text_t.D * text_t.L - 1
    with pytest.raises(CheckpointError, match="'text_embedding_projection.video_aggregate_embed.weight' has 128 input "
                                              "features; that must be a multiple of the Gemma width 127"):
        load(header)
    header["transformer"]["caption_channels"] = "3840"
    with pytest.raises(CheckpointError, match="transformer.caption_channels \\(the Gemma width\\) must be a positive "
                                              "integer, got '3840'"):
        load(header)
    del header["transformer"]["caption_channels"]  # -> Gemma-3-12B's 3840, which 128 inputs do not fit
    with pytest.raises(CheckpointError, match="multiple of the Gemma width 3840"):
        load(header)
    no_projection = {k: v for k, v in tensors.items() if not k.startswith("text_embedding_projection.")}
    with pytest.raises(CheckpointError, match="no 'text_embedding_projection.aggregate_embed.weight' or "
                                              "'text_embedding_projection.video_aggregate_embed.weight'"):
        load(_header_v23(models_v23), no_projection)


def test_v23_engine_from_the_bundle(checkpoints_v23, tmp_path):
    """Engine.from_pretrained on the 2.3 bundle (with a Gemma folder) builds an LTX-2 engine of release
    2.3 whose prompt encoding (feature extractor V2, gated connectors) equals the folder engine's."""
    from ltxengine import Engine
    bundle, folder = checkpoints_v23
    gemma = text_t.write_gemma(tmp_path / "gemma")
    a = Engine.from_pretrained(bundle, device="cpu", dtype=torch.float32, text_encoder=gemma)
    b = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, text_encoder=gemma)
    assert (a.family, a.model_version, a.release.version) == ("ltx-2", "2.3.0", "2.3")
    assert b.release.version == "2.3"
    with torch.no_grad():
        encoded = a.text_encoder.encode(["a red car drives at night"], max_sequence_length=text_t.SEQ)
        expected = b.text_encoder.encode(["a red car drives at night"], max_sequence_length=text_t.SEQ)
    assert encoded[0].shape[-1] == 32 and encoded[1].shape[-1] == 16  # the DiT's video / audio widths
    assert all(torch.equal(x, y) for x, y in zip(encoded, expected))
