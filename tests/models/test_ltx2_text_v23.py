"""LTX-2.3 / 2.5 text path: feature extractor V2 (per-token RMS norm, rescale, per-modality biased
projections), gated connectors at their own widths, ltx-core's connector_ff_bias, the Gemma 4 unified
encoder and the Gemma version check. Oracles: diffusers' LTX2TextConnectors(per_modality_projections=True)
and LTX2Pipeline.encode_prompt, ltx-core 1.0.0's FeatureExtractorV2 + gated Embeddings1DConnector;
tiny random models, fp32 on the CPU, the budget of test_ltx2_text.py (ltx2_text_fixtures.REL_TOL)."""

import dataclasses
import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from ltxengine.config import ConfigError, parse_config
from ltxengine.loading import CheckpointError
from ltxengine.loading.ltx2 import load_ltx2_component
from ltxengine.loading.ltx2_text import KEYMAP, config_from_original
from ltxengine.loading.strict import load_strict
from ltxengine.loading.text_encoders import check_gemma_version, model_version_tuple
from ltxengine.models.ltx2_text import (CONNECTORS_LTX20, CONNECTORS_LTX23, CONNECTORS_LTX25, GemmaTextEncoder,
                                        TextConnectors, TextConnectorsConfig)

from ..helpers import assert_close_scaled
from ..oracles import ltx_core
from .ltx2_text_fixtures import (D4, L4, SEQ, V23, V25, WORDS, D, L, compare, left_mask, ltx_processor, ltx_run,
                                 make_pair, random_states, to_original, write_gemma, write_gemma4)

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors  # noqa: E402

# 2.3: Gemma 3 width; 2.5: the same connectors on a Gemma 4 of another width; plus ltx-core's RoPE defaults.
CASES = {"2.3": (V23, D, L), "2.5": (V25, D4, L4),
         "2.3-interleaved-f32": (dict(V23, rope_type="interleaved", rope_double_precision=False), D, L)}
PROMPTS = ["a cat sits on the mat", "  red car drives fast at night  ", "dog"]
# diffusers' converter (scripts/convert_ltx2_to_diffusers.py @58eb52c, get_ltx2_connectors_config("2.3"))
CONVERTER_23 = {"caption_channels": 3840, "text_proj_in_factor": 49, "video_connector_num_attention_heads": 32,
                "video_connector_attention_head_dim": 128, "video_connector_num_layers": 8,
                "video_connector_num_learnable_registers": 128, "video_gated_attn": True,
                "audio_connector_num_attention_heads": 32, "audio_connector_attention_head_dim": 64,
                "audio_connector_num_layers": 8, "audio_connector_num_learnable_registers": 128,
                "audio_gated_attn": True, "connector_rope_base_seq_len": 4096, "rope_theta": 10000.0,
                "rope_double_precision": True, "causal_temporal_positioning": False, "rope_type": "split",
                "per_modality_projections": True, "video_hidden_dim": 4096, "audio_hidden_dim": 2048,
                "proj_bias": True}


def _states(case, b, seed=1):
    _, d, n = CASES[case]
    return random_states(b, seed=seed, d=d, n_layers=n)


# ---------------------------------------------------------------------------------------------- connectors


@pytest.mark.parametrize("case", CASES)
def test_v2_connectors_match_diffusers_and_ltx_core(case):
    ours, ref = make_pair(**CASES[case][0])
    states, mask = _states(case, 4), left_mask([5, SEQ, 1, 17])
    with torch.no_grad():
        got = ours(states, mask)
        compare(got, ref(states.flatten(2), mask), f"{case} vs diffusers")
        compare(ours(list(states.unbind(-1)), mask.bool()), got, f"{case} list input")
        processor = ltx_processor(ours.config, to_original(ours.state_dict()))
        compare(got, ltx_run(processor, states, mask), f"{case} vs ltx-core")
    assert got[0].shape == (4, SEQ, 64) and got[1].shape == (4, SEQ, 32) and bool((got[2] == 1).all())
    assert "video_connector.transformer_blocks.2.attn1.to_gate_logits.bias" in ours.state_dict()


def test_v2_controls():
    ours, _ = make_pair(**V23)
    states, mask = random_states(2), left_mask([6, 11])
    with torch.no_grad():
        base = ours(states, mask)
        # padded positions are zeroed: their content cannot matter
        noisy = states.clone()
        noisy[mask == 0] = torch.randn_like(noisy[mask == 0]) * 100
        assert all(torch.equal(x, y) for x, y in zip(ours(noisy, mask), base))
        # per-token RMS norm: scaling one hidden state of one token changes nothing (but eps)
        scaled = states.clone()
        scaled[0, -1, :, 2] *= 3.0
        for x, y in zip(ours(scaled, mask)[:2], base[:2]):
            assert_close_scaled(x, y, 1e-5, "per-token scale")
        # ... while the V1 statistics (min / max over the sample) would see it; and layer order matters
        assert (ours(states.flip(-1), mask)[0] - base[0]).abs().max() > 1e-2
        # the projections are per modality
        ours.audio_text_proj_in.bias.data += 1.0
        moved = ours(states, mask)
        assert torch.equal(moved[0], base[0]) and (moved[1] - base[1]).abs().max() > 1e-2
        # the gate is live (logits 0 would make it 1)
        ours.video_connector.transformer_blocks[1].attn1.to_gate_logits.bias.data -= 2.0
        assert (ours(states, mask)[0] - base[0]).abs().max() > 1e-2


def test_ff_bias_false_equals_zero_biases():
    """ltx-core's connector_ff_bias=False (not a diffusers option) = diffusers with its FF biases zeroed."""
    _, ref = make_pair(**V23)
    sd = ref.state_dict()
    for key in [k for k in sd if ".ff." in k and k.endswith(".bias")]:
        sd[key].zero_()
        del sd[key]
    ours = TextConnectors(dataclasses.replace(parse_config(TextConnectorsConfig, dict(ref.config), "t"),
                                              connector_ff_bias=False)).eval()
    ours.load_state_dict(sd, strict=True)
    states, mask = random_states(2), left_mask([9, 30])
    with torch.no_grad():
        compare(ours(states, mask), ref(states.flatten(2), mask), "connector_ff_bias=False")


def test_v2_bf16():
    """bf16 weights and states within bf16 rounding of the fp32 result (as test_ltx2_text.test_bf16).
    Measured: video 0.042 at output scale 4.1, audio 0.026 at 3.1 (~1.4 bf16 ulps); diffusers in bf16 is
    0.036 / 0.024 off its own fp32 result."""
    ours, _ = make_pair(**V23)
    states, mask = random_states(2), left_mask([5, 20])
    with torch.no_grad():
        truth = ours(states, mask)
        got = ours.to(torch.bfloat16)(states.bfloat16(), mask)
    for x, y, what in zip(got[:2], truth[:2], ("video", "audio")):
        assert x.dtype == torch.bfloat16
        err = assert_close_scaled(x.float(), y, 2e-2, f"bf16 {what}")
        print(f"bf16 {what}: {err:.3e} at scale {y.abs().max():.2f}")


def test_v2_config_checks():
    assert parse_config(TextConnectorsConfig, {**CONVERTER_23, "_class_name": "LTX2TextConnectors"},
                        "2.3") == CONNECTORS_LTX23
    bad = {"video_hidden_dim": (4000, "video_connector_num_attention_heads", "must equal video_hidden_dim = 4000"),
           "audio_connector_attention_head_dim": (128, "audio_connector_num_attention_heads",
                                                  "must equal audio_hidden_dim = 2048"),
           "audio_hidden_dim": (0, "audio_hidden_dim", "positive int")}
    for key, (value, named, message) in bad.items():
        with pytest.raises(ConfigError, match=message) as info:
            parse_config(TextConnectorsConfig, {**CONVERTER_23, key: value}, "cfg.json")
        assert named in str(info.value) and "cfg.json" in str(info.value)


def test_released_presets_on_meta():
    """Parameter counts of the released connectors, and diffusers' class on the converter's config
    with the same keys and shapes. 2.3 (and 2.5, the same connectors on Gemma-4-12B's 3840 x 49): 3.17 B."""
    expected = {"2.0": (CONNECTORS_LTX20, 1_431_475_200), "2.3": (CONNECTORS_LTX23, 3_172_227_584),
                "2.5": (CONNECTORS_LTX25, 3_172_227_584)}
    for version, (cfg, count) in expected.items():
        with torch.device("meta"):
            ours = TextConnectors(cfg)
            ref = LTX2TextConnectors(**_diffusers_kwargs(cfg))
        assert sum(p.numel() for p in ours.parameters()) == count, version
        shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        assert shapes == {k: tuple(v.shape) for k, v in ref.state_dict().items()}, version


def _diffusers_kwargs(cfg: TextConnectorsConfig) -> dict:
    kwargs = dataclasses.asdict(cfg)
    assert kwargs.pop("connector_ff_bias") is True  # diffusers' connectors always have FF biases
    return kwargs


# ------------------------------------------------------------------------------------------------- loading


@pytest.mark.parametrize("case", ["2.3", "2.5"])
def test_diffusers_folder_loads_strictly(case, tmp_path):
    ours, ref = make_pair(**CASES[case][0])
    ref.save_pretrained(tmp_path / "connectors")
    loaded = load_ltx2_component(tmp_path / "connectors", "connectors", device="cpu", dtype=torch.float32)
    assert loaded.config == ours.config
    states, mask = _states(case, 2), left_mask([3, 22])
    with torch.no_grad():
        assert all(torch.equal(x, y) for x, y in zip(loaded(states, mask), ours(states, mask)))
    path = next((tmp_path / "connectors").glob("*.safetensors"))
    sd = load_file(path)
    del sd["audio_connector.transformer_blocks.1.attn1.to_gate_logits.weight"]
    save_file(sd, path)
    with pytest.raises(CheckpointError, match="to_gate_logits"):
        load_ltx2_component(tmp_path / "connectors", "connectors", device="cpu", dtype=torch.float32)


SECTION_23 = {  # the connector keys of an LTX-2.3 transformer section, next to DiT keys
    "num_attention_heads": 32, "attention_head_dim": 128, "audio_num_attention_heads": 32,
    "audio_attention_head_dim": 64, "num_layers": 48, "rope_type": "split", "frequencies_precision": "float64",
    "apply_gated_attention": True, "cross_attention_adaln": True, "caption_proj_before_connector": True,
    "caption_projection_first_linear": False, "caption_proj_input_norm": False,
    "caption_projection_second_linear": False, "connector_positional_embedding_max_pos": [4096],
    "connector_num_attention_heads": 32, "connector_attention_head_dim": 128, "connector_num_layers": 8,
    "audio_connector_num_attention_heads": 32, "audio_connector_attention_head_dim": 64,
    "audio_connector_num_layers": 8, "connector_apply_gated_attention": True,
}


def test_config_from_original_v2():
    assert config_from_original(SECTION_23, "ckpt") == CONNECTORS_LTX23
    cfg = config_from_original({**SECTION_23, "connector_ff_bias": False}, "ckpt", caption_channels=D4,
                               text_proj_in_factor=L4)
    assert (cfg.connector_ff_bias, cfg.caption_channels, cfg.text_proj_in_factor) == (False, D4, L4)
    partial = {k: v for k, v in SECTION_23.items() if k != "caption_proj_input_norm"}
    bad = [(partial, "also needs \\['caption_proj_input_norm'\\]"),
           ({**SECTION_23, "caption_projection_first_linear": True}, "feature extractor V2 options must be"),
           ({**SECTION_23, "audio_attention_head_dim": 128}, "must equal audio_hidden_dim = 4096"),
           ({**SECTION_23, "connector_ff_bias": "no"}, "'connector_ff_bias' must be true or false")]
    for section, message in bad:
        with pytest.raises(ConfigError, match=message) as info:
            config_from_original(section, "ckpt.safetensors")
        assert "ckpt.safetensors" in str(info.value)


def test_v2_single_file_keys():
    ours, _ = make_pair(**V23)
    original = to_original(ours.state_dict())
    assert "text_embedding_projection.video_aggregate_embed.bias" in original
    assert "model.diffusion_model.audio_embeddings_connector.transformer_1d_blocks.1.attn1.to_gate_logits.weight" \
        in original
    assert all(KEYMAP.apply(k) == ours_k for k, ours_k in zip(original, ours.state_dict()))
    key_ops = ltx_core("text_encoders.gemma.encoders.encoder_configurator").EMBEDDINGS_PROCESSOR_KEY_OPS
    assert all(key_ops.apply_to_key(k) is not None for k in original)
    # a tiny 2.3 header section gives the config the weights were made with; strict fill on meta
    section = {**SECTION_23, "num_attention_heads": 4, "attention_head_dim": 16, "audio_num_attention_heads": 4,
               "audio_attention_head_dim": 8, "connector_num_attention_heads": 4, "connector_attention_head_dim": 16,
               "connector_num_layers": 3, "audio_connector_num_attention_heads": 4,
               "audio_connector_attention_head_dim": 8, "audio_connector_num_layers": 2,
               "connector_num_learnable_registers": 16, "connector_positional_embedding_max_pos": [64]}
    cfg = config_from_original(section, "tiny", caption_channels=D, text_proj_in_factor=L)
    assert cfg == dataclasses.replace(ours.config, audio_connector_num_learnable_registers=16)
    with torch.device("meta"):
        meta = TextConnectors(ours.config)
    source = {KEYMAP.apply(k): (tuple(v.shape), (lambda d, t, v=v: v.to(d, t)), k) for k, v in original.items()}
    loaded = load_strict(meta, source, "test", "cpu", torch.float32)
    states, mask = random_states(1), left_mask([9])
    with torch.no_grad():
        assert all(torch.equal(x, y) for x, y in zip(loaded(states, mask), ours(states, mask)))


# ------------------------------------------------------------------------------- end to end, Gemma 3 / 4


def _pipe(text_encoder, tokenizer, connectors):
    return diffusers.LTX2Pipeline(scheduler=None, vae=None, audio_vae=None, text_encoder=text_encoder,
                                  tokenizer=tokenizer, connectors=connectors, transformer=None, vocoder=None)


def diffusers_encode(pipe, prompts):
    """LTX2Pipeline.__call__'s text path with CFG: [negative, positive] through the connectors."""
    with torch.no_grad():
        pos, pos_mask, neg, neg_mask = pipe.encode_prompt(prompts, do_classifier_free_guidance=True,
                                                          max_sequence_length=SEQ, device=torch.device("cpu"))
        return pipe.connectors(torch.cat([neg, pos]), torch.cat([neg_mask, pos_mask]), padding_side="left")


@pytest.fixture(scope="module")
def gemma3_dir(tmp_path_factory):
    return write_gemma(tmp_path_factory.mktemp("gemma3") / "gemma-3")


@pytest.fixture(scope="module")
def gemma4_dir(tmp_path_factory):
    return write_gemma4(tmp_path_factory.mktemp("gemma4") / "gemma-4", gemma_version="gemma4-12b-ltx-v1")


def test_encode_23_matches_diffusers_pipeline_and_ltx_core(gemma3_dir):
    connectors, ref_connectors = make_pair(**V23)
    ours = GemmaTextEncoder.from_folder(gemma3_dir, dtype=torch.float32, connectors=connectors)
    hf = transformers.Gemma3ForConditionalGeneration.from_pretrained(gemma3_dir).eval()
    pipe = _pipe(hf, transformers.AutoTokenizer.from_pretrained(gemma3_dir / "tokenizer"), ref_connectors)
    got = ours.encode([""] * 3 + PROMPTS, SEQ)
    compare(got, diffusers_encode(pipe, PROMPTS), "2.3 encode vs LTX2Pipeline")
    gemma = ltx_core("text_encoders.gemma.encoders.base_encoder")
    tokenizer = ltx_core("text_encoders.gemma.tokenizer").LTXVGemmaTokenizer(str(gemma3_dir / "tokenizer"), SEQ)
    encoder = gemma.GemmaTextEncoder(model=hf, tokenizer=tokenizer, dtype=torch.float32)
    processor = ltx_processor(connectors.config, to_original(connectors.state_dict()))
    with torch.no_grad():
        outs = [processor.process_hidden_states(*encoder.encode(p)) for p in PROMPTS]
    compare(ours.encode(PROMPTS, SEQ), tuple(torch.cat([o[j] for o in outs]) for j in range(3)),
            "2.3 encode vs ltx-core")


def test_gemma4_loads_and_encode_25_matches_diffusers_pipeline(gemma4_dir):
    connectors, ref_connectors = make_pair(**V25)
    ours = GemmaTextEncoder.from_folder(gemma4_dir, dtype=torch.float32, connectors=connectors)
    assert type(ours.model).__name__ == "Gemma4UnifiedForConditionalGeneration"
    assert (ours.hidden_size, ours.num_hidden_states) == (D4, L4)
    hf = transformers.Gemma4UnifiedForConditionalGeneration.from_pretrained(gemma4_dir).eval()
    pipe = _pipe(hf, transformers.AutoTokenizer.from_pretrained(gemma4_dir / "tokenizer"), ref_connectors)
    states, mask = ours.hidden_states(PROMPTS, SEQ)
    with torch.no_grad():
        ref, ref_mask = pipe._get_gemma_prompt_embeds(PROMPTS, max_sequence_length=SEQ, device=torch.device("cpu"))
    assert states.shape == (3, SEQ, D4, L4) and torch.equal(states.flatten(2), ref) and torch.equal(mask, ref_mask)
    compare(ours.encode([""] * 3 + PROMPTS, SEQ), diffusers_encode(pipe, PROMPTS), "2.5 encode vs LTX2Pipeline")


def test_bos_is_prepended_where_the_tokenizer_does_not(gemma4_dir, tmp_path, caplog):
    """ltx-core (LTXGemmaTokenizer) starts every prompt with <bos>; Gemma 4's tokenizer does not add it
    (diffusers passes its output as it is). The same weights with a bos-adding tokenizer are the oracle."""
    no_bos = write_gemma4(tmp_path / "gemma-4-nobos", bos=False)
    plain = GemmaTextEncoder.from_folder(no_bos, dtype=torch.float32)
    with_bos = GemmaTextEncoder.from_folder(gemma4_dir, dtype=torch.float32)
    assert plain.tokenizer("a cat").input_ids[0] != plain.tokenizer.bos_token_id
    ids, mask = plain.tokenize(PROMPTS + [""], SEQ)
    ref_ids, ref_mask = with_bos.tokenize(PROMPTS + [""], SEQ)
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask)
    assert torch.equal(plain.hidden_states(PROMPTS, SEQ)[0], with_bos.hidden_states(PROMPTS, SEQ)[0])
    long = " ".join(WORDS * 2)  # 44 words, + <bos> = 45 > 32: [bos, *ids][:32]
    with caplog.at_level(logging.WARNING, logger="ltxengine.models.ltx2_text"):
        ids, mask = plain.tokenize([long], SEQ)
    assert "prompt 0 has 45 tokens" in caplog.text and bool(mask.all())
    assert ids[0].tolist() == [plain.tokenizer.bos_token_id] + plain.tokenizer(long).input_ids[:SEQ - 1]


def test_gemma4_loads_strictly(gemma4_dir, tmp_path):
    import shutil
    bad = shutil.copytree(gemma4_dir, tmp_path / "g")
    sd = load_file(bad / "model.safetensors")
    del sd["model.language_model.layers.1.mlp.up_proj.weight"]
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="up_proj"):
        GemmaTextEncoder.from_folder(bad, dtype=torch.float32)
    cfg = json.loads((gemma4_dir / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "gemma4"}))
    with pytest.raises(ValueError, match="LTX-2 needs Gemma 3 \\(2.0, 2.3\\) or Gemma 4 unified \\(2.5\\)"):
        GemmaTextEncoder.from_folder(bad, dtype=torch.float32)


# ----------------------------------------------------------------------------------- Gemma version check


GSC = json.dumps({"gemma_version": "gemma4-12b-ltx-v1"})  # safetensors metadata values are strings
GEMMA4 = {"model_type": "gemma4_unified", "gemma_version": "gemma4-12b-ltx-v1"}
GEMMA3 = {"model_type": "gemma3"}


@pytest.mark.parametrize("metadata, gemma", [
    ({"model_version": "2.5.0", "gemma_source_checkpoint": GSC}, GEMMA4),
    ({"gemma_source_checkpoint": {"gemma_version": "gemma4-12b-ltx-v1"}}, GEMMA4),  # parsed metadata
    ({"model_version": "2.3.0"}, GEMMA3), ({}, GEMMA3), ({"model_version": "2.3.rc1"}, GEMMA3),
    ({"model_version": "2.0.0"}, {"model_type": "gemma3_text"}),  # the text-only Gemma 3 we also load
])
def test_gemma_version_accepted(metadata, gemma):
    check_gemma_version(metadata, gemma, "here")


@pytest.mark.parametrize("metadata, gemma, message", [
    ({"gemma_source_checkpoint": GSC}, {**GEMMA4, "gemma_version": "gemma4-12b-ltx-v2"},
     "expects gemma_version='gemma4-12b-ltx-v1', the Gemma config has gemma_version='gemma4-12b-ltx-v2'"),
    ({"gemma_source_checkpoint": GSC}, GEMMA3, "the Gemma config has gemma_version=None"),
    ({"model_version": "2.5.0"}, GEMMA4, "must declare gemma_source_checkpoint.gemma_version"),
    ({"model_version": "2.4.0"}, GEMMA4, "must declare"),
    ({"model_version": "2.3.0"}, GEMMA4, "needs a Gemma 3 text encoder .* got model_type='gemma4_unified'"),
    ({}, {"model_type": "gemma4"}, "got model_type='gemma4'"),
    ({"gemma_source_checkpoint": "{oops"}, GEMMA4, "'gemma_source_checkpoint' is not JSON"),
    ({"gemma_source_checkpoint": "[1]"}, GEMMA4, "must be a JSON object"),
])
def test_gemma_version_refused(metadata, gemma, message):
    with pytest.raises(CheckpointError, match=message) as info:
        check_gemma_version(metadata, gemma, "gemma_dir '/g'")
    assert "gemma_dir '/g'" in str(info.value)


def test_gemma_version_warns_when_neither_side_declares(caplog):
    with caplog.at_level(logging.WARNING, logger="ltxengine.loading.text_encoders"):
        check_gemma_version({"model_version": "2.5.0"}, {"model_type": "gemma4_unified"}, "here")
    assert "version check skipped" in caplog.text
    assert [model_version_tuple(v) for v in ("2.5.0", "2.3.rc1", "2.4-rc2", None, "x")] == \
        [(2, 5, 0), (2, 3), (2,), (), ()]


def test_from_folder_checks_the_version_first(gemma4_dir, gemma3_dir):
    meta = {"model_version": "2.5.0", "gemma_source_checkpoint": GSC}
    GemmaTextEncoder.from_folder(gemma4_dir, dtype=torch.float32, checkpoint_metadata=meta)
    with pytest.raises(CheckpointError, match="gemma_dir .*Gemma version mismatch"):
        GemmaTextEncoder.from_folder(gemma3_dir, dtype=torch.float32, checkpoint_metadata=meta)
    with pytest.raises(CheckpointError, match="needs a Gemma 3 text encoder"):
        GemmaTextEncoder.from_folder(gemma4_dir, dtype=torch.float32, checkpoint_metadata={"model_version": "2.3.0"})
