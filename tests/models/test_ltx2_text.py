"""LTX-2 text path (Gemma 3 -> feature extractor V1 -> connectors) against diffusers' LTX2TextConnectors /
LTX2Pipeline.encode_prompt and ltx-core's FeatureExtractorV1 + Embeddings1DConnector, tiny random models."""

import dataclasses
import logging

import pytest
import torch

from ltxengine.config import ConfigError, parse_config
from ltxengine.loading.ltx2_text import KEYMAP, config_from_original
from ltxengine.loading.strict import load_strict
from ltxengine.models.ltx2_text import GemmaTextEncoder, TextConnectors, TextConnectorsConfig

from ..helpers import assert_close_scaled, perturb_
from ..oracles import ltx_core
from .ltx2_text_fixtures import (SEQ, WORDS, D, L, compare, left_mask, ltx_processor, ltx_run, make_pair,
                                 random_states, to_original, write_gemma)

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

# Every switch of the 2.0 release: split RoPE with a float64 grid (the release), and ltx-core's
# defaults for a header without those keys (interleaved, float32).
VARIANTS = {"split-f64": dict(rope_type="split", rope_double_precision=True),
            "split-f32": dict(rope_type="split", rope_double_precision=False),
            "interleaved-f64": dict(rope_type="interleaved", rope_double_precision=True),
            "interleaved-f32": dict(rope_type="interleaved", rope_double_precision=False)}
PROMPTS = ["a cat sits on the mat", "  red car drives fast at night  ", "dog"]


# ---------------------------------------------------------------------------------------------- connectors


@pytest.mark.parametrize("variant", VARIANTS)
def test_connectors_match_diffusers_and_ltx_core(variant):
    ours, ref = make_pair(**VARIANTS[variant])
    states, mask = random_states(4), left_mask([5, SEQ, 1, 17])
    with torch.no_grad():
        got = ours(states, mask)
        compare(got, ref(states.flatten(2), mask), f"{variant} vs diffusers")
        compare(ours(states.flatten(2), mask), got, f"{variant} 3-D input")
        compare(ours(list(states.unbind(-1)), mask.bool()), got, f"{variant} list input")
        processor = ltx_processor(ours.config, to_original(ours.state_dict()))
        compare(got, ltx_run(processor, states, mask), f"{variant} vs ltx-core")
    assert got[0].shape == got[1].shape == (4, SEQ, D) and bool((got[2] == 1).all())


def test_right_padding_matches_diffusers():
    # diffusers derives the normalisation mask from lengths + padding_side; we read the mask itself.
    ours, ref = make_pair()
    states, mask = random_states(2), left_mask([7, 20]).flip(1)
    with torch.no_grad():
        compare(ours(states, mask), ref(states.flatten(2), mask, padding_side="right"), "right padding")


def test_controls():
    ours, _ = make_pair()
    states, mask = random_states(2), left_mask([6, 11])
    with torch.no_grad():
        base = ours(states, mask)
        # padded positions are zeroed and replaced by registers: their content cannot matter
        noisy = states.clone()
        noisy[mask == 0] = torch.randn_like(noisy[mask == 0]) * 100
        assert all(torch.equal(x, y) for x, y in zip(ours(noisy, mask), base))
        # ... but the layer order of the features does
        assert (ours(states.flip(-1), mask)[0] - base[0]).abs().max() > 1e-2
        # a register the padding uses (positions 6.. of sample 0 -> registers 6..15, 0..15)
        registers = ours.video_connector.learnable_registers
        saved = registers.detach().clone()
        registers.data[9] += 1.0
        assert (ours(states, mask)[0] - base[0]).abs().max() > 1e-2
        registers.data.copy_(saved)
        # the RoPE base (ltx-core's connector_positional_embedding_max_pos)
        other = TextConnectors(dataclasses.replace(ours.config, connector_rope_base_seq_len=4096)).eval()
        other.load_state_dict(ours.state_dict())
        assert (other(states, mask)[1] - base[1]).abs().max() > 1e-2


def test_bf16():
    """bf16 weights and states: bf16 outputs within bf16 rounding of the fp32 result. (Measured 0.028
    at output scale 3.5, ~2 bf16 ulps; diffusers and ltx-core in bf16 are 0.02-0.03 off as well.)"""
    ours, _ = make_pair()
    states, mask = random_states(2), left_mask([5, 20])
    with torch.no_grad():
        truth = ours(states, mask)
        got = ours.to(torch.bfloat16)(states.bfloat16(), mask)
    assert got[0].dtype == got[1].dtype == torch.bfloat16
    for x, y, what in zip(got[:2], truth[:2], ("video", "audio")):
        assert_close_scaled(x.float(), y, 2e-2, f"bf16 {what}")


def test_bad_inputs():
    ours, _ = make_pair()
    states, mask = random_states(2), left_mask([3, 4])
    with pytest.raises(ValueError, match="hidden_states must be"):
        ours(states[..., :3], mask)
    with pytest.raises(ValueError, match="hidden_states must be"):
        ours(list(states.unbind(-1))[:3], mask)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B, T\) = \(2, 32\), got \(2, 31\)"):
        ours(states, mask[:, 1:])
    with pytest.raises(ValueError, match="attention_mask must hold 0/1"):
        ours(states, mask * 2)
    with pytest.raises(ValueError, match="attention_mask must hold 0/1"):
        ours(states, mask.float())
    with pytest.raises(ValueError, match="multiple of 16"):
        ours(states[:, :24], mask[:, :24])


def test_config_refusals():
    defaults = dataclasses.asdict(TextConnectorsConfig())
    # diffusers' converter config for "2.0" parses to our defaults
    release = {"caption_channels": 3840, "text_proj_in_factor": 49, "video_connector_num_attention_heads": 30,
               "video_connector_attention_head_dim": 128, "video_connector_num_layers": 2,
               "video_connector_num_learnable_registers": 128, "video_gated_attn": False,
               "audio_connector_num_attention_heads": 30, "audio_connector_attention_head_dim": 128,
               "audio_connector_num_layers": 2, "audio_connector_num_learnable_registers": 128,
               "audio_gated_attn": False, "connector_rope_base_seq_len": 4096, "rope_theta": 10000.0,
               "rope_double_precision": True, "causal_temporal_positioning": False, "rope_type": "split",
               "per_modality_projections": False, "proj_bias": False, "_class_name": "LTX2TextConnectors"}
    assert dataclasses.asdict(parse_config(TextConnectorsConfig, release, "2.0")) == defaults
    # (the 2.3 switches, per_modality_projections and the gated attention, are checked in test_ltx2_text_v23.py)
    bad = {"video_connector_num_learnable_registers": (None, "registers"), "rope_type": ("rope", "'split' or"),
           "audio_connector_num_attention_heads": (16, "must equal caption_channels = 3840"),
           "video_connector_attention_head_dim": (127, "even"), "connector_rope_base_seq_len": (0, "positive"),
           "text_proj_in_factor": (0, "positive"), "video_connector_num_layers": (0, "positive")}
    for key, (value, message) in bad.items():
        with pytest.raises(ConfigError, match=message) as info:
            parse_config(TextConnectorsConfig, {**release, key: value}, "cfg.json")
        assert key in str(info.value) and "cfg.json" in str(info.value)
    with pytest.raises(ConfigError, match="unknown config option 'video_connector_norm'"):
        parse_config(TextConnectorsConfig, {"video_connector_norm": True}, "cfg.json")


# -------------------------------------------------------------------------------- single-file loading


def test_keymap_selects_and_renames():
    ours, _ = make_pair()
    original = to_original(ours.state_dict())
    assert "model.diffusion_model.video_embeddings_connector.transformer_1d_blocks.1.attn1.q_norm.weight" in original
    others = ["model.diffusion_model.transformer_blocks.0.attn1.q_norm.weight", "model.diffusion_model.proj_in.weight",
              "model.diffusion_model.caption_projection.linear_1.weight", "vae.decoder.conv_in.conv.weight",
              "audio_vae.encoder.conv_in.conv.weight"]
    assert {KEYMAP.apply(k) for k in original} == set(ours.state_dict())
    assert all(KEYMAP.apply(k) == ours_k for k, ours_k in zip(original, ours.state_dict()))
    assert [KEYMAP.apply(k) for k in others] == [None] * len(others)
    # ltx-core's own key ops claim the same keys
    key_ops = ltx_core("text_encoders.gemma.encoders.encoder_configurator").EMBEDDINGS_PROCESSOR_KEY_OPS
    assert all(key_ops.apply_to_key(k) is not None for k in original)
    assert all(key_ops.apply_to_key(k) is None for k in others)
    # strict fill of a model built on meta: every entry comes from the file, nothing else is needed
    with torch.device("meta"):
        meta = TextConnectors(ours.config)
    source = {KEYMAP.apply(k): (tuple(v.shape), (lambda d, t, v=v: v.to(d, t)), k) for k, v in original.items()}
    loaded = load_strict(meta, source, "test", "cpu", torch.float32)
    states, mask = random_states(1), left_mask([9])
    with torch.no_grad():
        compare(loaded(states, mask), ours(states, mask), "strict load")


SECTION_20 = {  # the connector keys of an LTX-2.0 transformer section, next to DiT keys
    "num_attention_heads": 32, "attention_head_dim": 128, "cross_attention_dim": 4096, "caption_channels": 3840,
    "audio_num_attention_heads": 32, "audio_attention_head_dim": 64, "num_layers": 48,
    "positional_embedding_theta": 10000.0, "positional_embedding_max_pos": [20, 2048, 2048],
    "rope_type": "split", "frequencies_precision": "float64", "use_middle_indices_grid": True,
    "connector_positional_embedding_max_pos": [4096], "connector_num_attention_heads": 30,
    "connector_attention_head_dim": 128, "connector_num_layers": 2, "connector_num_learnable_registers": 128,
}


def test_config_from_original():
    assert config_from_original(SECTION_20, "ckpt") == TextConnectorsConfig()
    # ltx-core's defaults for absent keys
    cfg = config_from_original({}, "ckpt")
    assert (cfg.rope_type, cfg.rope_double_precision, cfg.connector_rope_base_seq_len) == ("interleaved", False, 1)
    assert cfg.connector("audio") == cfg.connector("video") == (30, 128, 2, 128)
    cfg = config_from_original({"connector_num_attention_heads": 4, "connector_attention_head_dim": 8,
                                "audio_connector_num_layers": 3}, "ckpt", text_proj_in_factor=4)
    assert cfg.caption_channels == 32 and cfg.connector("audio") == (4, 8, 3, 128)
    bad = {"caption_proj_before_connector": (True, "feature extractor V2"),
           "frequencies_precision": ("bfloat16", "'float32' or 'float64'"),
           "connector_positional_embedding_max_pos": ([20, 2048], "one-element list"),
           "connector_norm_output": (False, "must be true"), "rope_type": ("3d", "'split' or 'interleaved'"),
           "caption_channels": (4096, "must equal caption_channels = 4096"),
           "connector_num_attention_heads": ("30", "must be a positive int")}
    for key, (value, message) in bad.items():
        with pytest.raises(ConfigError, match=message) as info:
            config_from_original({**SECTION_20, key: value}, "ckpt.safetensors")
        assert "ckpt.safetensors" in str(info.value)


@pytest.mark.parametrize("rope_keys", [{"rope_type": "split", "frequencies_precision": "float64"}, {}])
def test_config_from_original_matches_ltx_core_configurators(rope_keys):
    """A tiny header section -> ours via config_from_original; ltx-core's connectors via its own
    configurators (which hard-code 128 registers, hence T = 128)."""
    section = {"connector_num_attention_heads": 4, "connector_attention_head_dim": 8, "connector_num_layers": 2,
               "audio_connector_num_attention_heads": 2, "audio_connector_attention_head_dim": 16,
               "audio_connector_num_layers": 1, "connector_positional_embedding_max_pos": [256], **rope_keys}
    cfg = config_from_original(section, "tiny", text_proj_in_factor=L)
    conn = ltx_core("text_encoders.gemma.embeddings_connector")
    fe = ltx_core("text_encoders.gemma.feature_extractor")
    proc = ltx_core("text_encoders.gemma.embeddings_processor")
    key_ops = ltx_core("text_encoders.gemma.encoders.encoder_configurator").EMBEDDINGS_PROCESSOR_KEY_OPS
    torch.manual_seed(3)
    ref = proc.EmbeddingsProcessor(
        feature_extractor=fe.FeatureExtractorV1(torch.nn.Linear(D * L, D, bias=False), is_av=True),
        video_connector=conn.Embeddings1DConnectorConfigurator.from_config({"transformer": section}),
        audio_connector=conn.AudioEmbeddings1DConnectorConfigurator.from_config({"transformer": section}))
    ref = ref.float().eval()
    perturb_(ref)
    ours = TextConnectors(cfg).eval()
    ltx_to_original = {key_ops.apply_to_key(k): k for k in to_original(ours.state_dict())}
    original = {ltx_to_original[k]: v for k, v in ref.state_dict().items()}
    ours.load_state_dict({KEYMAP.apply(k): v for k, v in original.items()}, strict=True)
    states, mask = random_states(2, t=128), left_mask([40, 128], t=128)
    with torch.no_grad():
        compare(ours(states, mask), ltx_run(ref, states, mask), f"configurator {rope_keys}")


# ----------------------------------------------------------------------------------------- Gemma 3


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    return write_gemma(tmp_path_factory.mktemp("gemma") / "gemma-3")


@pytest.fixture(scope="module")
def setup(gemma_dir):
    hf_model = transformers.Gemma3ForConditionalGeneration.from_pretrained(gemma_dir).eval()
    connectors, ref_connectors = make_pair()
    ours = GemmaTextEncoder.from_folder(gemma_dir, device="cpu", dtype=torch.float32, connectors=connectors)
    tok = transformers.AutoTokenizer.from_pretrained(gemma_dir / "tokenizer")
    pipe = diffusers.LTX2Pipeline(scheduler=None, vae=None, audio_vae=None, text_encoder=hf_model, tokenizer=tok,
                                  connectors=ref_connectors, transformer=None, vocoder=None)
    return ours, pipe


def diffusers_encode(pipe, prompts, max_sequence_length=SEQ):
    """LTX2Pipeline.__call__'s text path with CFG: [negative, positive] through the connectors."""
    with torch.no_grad():
        pos, pos_mask, neg, neg_mask = pipe.encode_prompt(prompts, do_classifier_free_guidance=True,
                                                          max_sequence_length=max_sequence_length,
                                                          device=torch.device("cpu"))
        return pipe.connectors(torch.cat([neg, pos]), torch.cat([neg_mask, pos_mask]),
                               padding_side=pipe.tokenizer.padding_side)


def test_gemma_features_match_diffusers(setup):
    ours, pipe = setup
    assert ours.tokenizer.pad_token == "<eos>" and ours.tokenizer.padding_side == "left"
    states, mask = ours.hidden_states(PROMPTS, SEQ)
    with torch.no_grad():
        ref, ref_mask = pipe._get_gemma_prompt_embeds(PROMPTS, max_sequence_length=SEQ, device=torch.device("cpu"))
    assert states.shape == (3, SEQ, D, L) and torch.equal(states.flatten(2), ref)
    assert torch.equal(mask, ref_mask) and mask.sum(1).tolist() == [7, 7, 2]  # <bos> + words, stripped
    assert mask[:, -1].all() and not mask[:, 0].any()  # left padding


def test_encode_matches_diffusers_pipeline(setup):
    ours, pipe = setup
    got = ours.encode([""] * 3 + PROMPTS, SEQ)
    compare(got, diffusers_encode(pipe, PROMPTS), "encode vs LTX2Pipeline")
    assert got[0].shape == (6, SEQ, D)


def test_encode_matches_ltx_core(setup, gemma_dir):
    ours, pipe = setup
    gemma = ltx_core("text_encoders.gemma.encoders.base_encoder")
    tokenizer = ltx_core("text_encoders.gemma.tokenizer").LTXVGemmaTokenizer(str(gemma_dir / "tokenizer"), SEQ)
    encoder = gemma.GemmaTextEncoder(model=pipe.text_encoder, tokenizer=tokenizer, dtype=torch.float32)
    processor = ltx_processor(ours.connectors.config, to_original(ours.connectors.state_dict()))
    with torch.no_grad():
        outs = [processor.process_hidden_states(*encoder.encode(p)) for p in PROMPTS]
    expected = tuple(torch.cat([o[j] for o in outs]) for j in range(3))
    compare(ours.encode(PROMPTS, SEQ), expected, "encode vs ltx-core")


def test_long_prompt_is_truncated_with_a_warning(setup, caplog):
    ours, pipe = setup
    long = " ".join(WORDS * 2)  # 44 words + <bos>
    with caplog.at_level(logging.WARNING, logger="ltxengine.models.ltx2_text"):
        got = ours.encode([long, "a dog"], SEQ)
    assert "prompt 0 has 45 tokens, more than max_sequence_length = 32" in caplog.text
    assert "prompt 1" not in caplog.text
    ref = diffusers_encode(pipe, [long, "a dog"])
    compare(got, tuple(x[2:] for x in ref), "truncated prompt")


def test_gemma_bad_inputs(setup, gemma_dir, tmp_path):
    ours, _ = setup
    for prompts in ([], [1], None, ["ok", None]):
        with pytest.raises(ValueError, match="prompts must be a str or a non-empty list of str"):
            ours.encode(prompts, SEQ)
    for n in (0, -32, 32.0, True):
        with pytest.raises(ValueError, match="max_sequence_length must be a positive int"):
            ours.hidden_states("a cat", n)
    with pytest.raises(ValueError, match="max_sequence_length must be a multiple of 16"):
        ours.encode("a cat", 40)
    bare = GemmaTextEncoder(ours.model, ours.tokenizer)
    with pytest.raises(ValueError, match="no TextConnectors attached"):
        bare.encode("a cat", SEQ)
    wrong = TextConnectors(dataclasses.replace(ours.connectors.config, text_proj_in_factor=L + 1))
    with pytest.raises(ValueError, match="expect 5 hidden states of width 32, this Gemma gives 4"):
        bare.attach(wrong)
    with pytest.raises(FileNotFoundError, match="gemma_dir"):
        GemmaTextEncoder.from_folder(tmp_path / "missing")
    (tmp_path / "g").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "g" / name).write_bytes((gemma_dir / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="tokenizer_dir"):
        GemmaTextEncoder.from_folder(tmp_path / "g")
    # explicit tokenizer folder
    explicit = GemmaTextEncoder.from_folder(tmp_path / "g", gemma_dir / "tokenizer", dtype=torch.float32)
    assert torch.equal(explicit.hidden_states("a cat", 16)[0], ours.hidden_states("a cat", 16)[0])
