"""The tiny LTX-2 text path of the tests: a random Gemma 3 (or Gemma 4 unified) with an offline tokenizer
written to a folder, diffusers' LTX2TextConnectors with random weights beside ours loaded from it, the
connectors' original (Lightricks single-file) key names, ltx-core's EmbeddingsProcessor from them, and
the comparison with its error budget. Used by the text, loading, LoRA and pipeline tests."""

import pytest
import torch

from ltxengine.config import parse_config
from ltxengine.models.ltx2_text import TextConnectors, TextConnectorsConfig

from ..helpers import assert_close_scaled, perturb_
from ..oracles import ltx_core

pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors  # noqa: E402

D, L = 32, 4  # tiny Gemma: hidden 32, 3 layers -> 4 hidden states
SEQ = 32  # max_sequence_length: a multiple of both register counts
# Differs from presets.demo_ltx2()'s connectors on purpose: two video connector layers, 4 heads of 8,
# unequal register counts (16 / 8) and every RoPE option spelled out, so the tests see them all.
TINY = dict(caption_channels=D, text_proj_in_factor=L, video_connector_num_attention_heads=4,
            video_connector_attention_head_dim=8, video_connector_num_layers=2,
            video_connector_num_learnable_registers=16, audio_connector_num_attention_heads=2,
            audio_connector_attention_head_dim=16, audio_connector_num_layers=1,
            audio_connector_num_learnable_registers=8, connector_rope_base_seq_len=64, rope_theta=10000.0,
            rope_double_precision=True, rope_type="split", causal_temporal_positioning=False,
            per_modality_projections=False, proj_bias=False, video_gated_attn=False, audio_gated_attn=False)
# LTX-2.3-like (feature extractor V2, gated connectors, video and audio at different widths as the
# release's 32 x 128 / 32 x 64): overrides of TINY for make_pair.
V23 = dict(per_modality_projections=True, proj_bias=True, video_hidden_dim=64, audio_hidden_dim=32,
           video_connector_num_attention_heads=4, video_connector_attention_head_dim=16, video_connector_num_layers=3,
           audio_connector_num_attention_heads=4, audio_connector_attention_head_dim=8, audio_connector_num_layers=2,
           video_gated_attn=True, audio_gated_attn=True)
D4, L4 = 48, 4  # tiny Gemma 4 unified: hidden 48, 3 layers -> 4 hidden states
# LTX-2.5-like: the 2.3 connectors reading a Gemma 4 (diffusers' converter takes the input width from it).
V25 = dict(V23, caption_channels=D4, text_proj_in_factor=L4)
WORDS = "a cat dog sits on the mat walks in park red blue car drives fast slow video of man woman at night".split()


def make_pair(**overrides):
    """diffusers' LTX2TextConnectors with perturbed weights and ours loaded from its state dict."""
    torch.manual_seed(0)
    ref = LTX2TextConnectors(**{**TINY, **overrides}).eval()
    perturb_(ref)
    ours = TextConnectors(parse_config(TextConnectorsConfig, dict(ref.config), "test")).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


# fp32 on the CPU with the same torch ops on every side; what differs is summation order (feature
# statistics, the D*L -> D projection) and SDPA with / without an all-zero mask. Measured: <= 5e-7
# relative to the output scale; a wiring error (layer order, register position, RoPE layout) moves
# the outputs by > 1e-2.
REL_TOL = 1e-5


def left_mask(lengths, t=SEQ):
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, t - n:] = 1
    return mask


def random_states(b, t=SEQ, seed=1, d=D, n_layers=L):
    g = torch.Generator().manual_seed(seed)
    # per-layer offsets and scales, as Gemma's hidden states have
    return (torch.randn(b, t, d, n_layers, generator=g) * torch.linspace(0.5, 4, n_layers)
            + torch.linspace(-1, 1, n_layers))


def ltx_processor(cfg: TextConnectorsConfig, original_sd):
    """ltx-core 1.0.0's EmbeddingsProcessor (FeatureExtractorV1, or V2 with its two biased projections,
    + two Embeddings1DConnector, gated as configured) loaded from original keys."""
    conn = ltx_core("text_encoders.gemma.embeddings_connector")
    rope = ltx_core("model.transformer.rope")
    fe = ltx_core("text_encoders.gemma.feature_extractor")
    proc = ltx_core("text_encoders.gemma.embeddings_processor")
    key_ops = ltx_core("text_encoders.gemma.encoders.encoder_configurator").EMBEDDINGS_PROCESSOR_KEY_OPS

    def connector(which):
        heads, head_dim, layers, registers = cfg.connector(which)
        return conn.Embeddings1DConnector(
            attention_head_dim=head_dim, num_attention_heads=heads, num_layers=layers,
            positional_embedding_theta=cfg.rope_theta, positional_embedding_max_pos=[cfg.connector_rope_base_seq_len],
            num_learnable_registers=registers, rope_type=rope.LTXRopeType(cfg.rope_type),
            double_precision_rope=cfg.rope_double_precision, apply_gated_attention=getattr(cfg, f"{which}_gated_attn"))

    flat = cfg.caption_channels * cfg.text_proj_in_factor
    if cfg.per_modality_projections:
        extractor = fe.FeatureExtractorV2(torch.nn.Linear(flat, cfg.video_hidden_dim, bias=True), cfg.caption_channels,
                                          torch.nn.Linear(flat, cfg.audio_hidden_dim, bias=True))
    else:
        extractor = fe.FeatureExtractorV1(torch.nn.Linear(flat, cfg.caption_channels, bias=False), is_av=True)
    model = proc.EmbeddingsProcessor(feature_extractor=extractor, video_connector=connector("video"),
                                     audio_connector=connector("audio"))
    model = model.float().eval()  # ltx-core creates its registers in bf16
    model.load_state_dict({key_ops.apply_to_key(k): v for k, v in original_sd.items()}, strict=True)
    return model


def ltx_run(processor, states, mask):
    """ltx-core processes one prompt at a time (its register gather assumes batch 1)."""
    outs = [processor.process_hidden_states(tuple(states[i:i + 1].unbind(-1)), mask[i:i + 1], "left")
            for i in range(states.shape[0])]
    return tuple(torch.cat([o[j] for o in outs]) for j in range(3))


def compare(actual, expected, what):
    (v, a, m), (ev, ea, em) = actual, expected
    errs = [assert_close_scaled(v, ev, REL_TOL, f"{what} video"), assert_close_scaled(a, ea, REL_TOL, f"{what} audio")]
    assert m.dtype == torch.long and torch.equal(m, em.long()), f"{what} mask"
    print(f"{what}: max abs error {max(errs):.2e} (output scale {ev.abs().max().item():.2f})")
    return max(errs)


def to_original(sd):
    """Our (= diffusers) keys -> Lightricks single-file names, written from ltx-core's module names."""
    out = {}
    for key, value in sd.items():
        if "text_proj_in." in key:  # V1 text_proj_in; V2 video_text_proj_in / audio_text_proj_in
            which, rest = key.split("text_proj_in.")
            out[f"text_embedding_projection.{which}aggregate_embed.{rest}"] = value
            continue
        which, rest = key.split(".", 1)
        rest = rest.replace("transformer_blocks", "transformer_1d_blocks").replace("norm_q", "q_norm")
        rest = rest.replace("norm_k", "k_norm")
        out[f"model.diffusion_model.{which.replace('_connector', '')}_embeddings_connector.{rest}"] = value
    return out


def _tokenizer(bos: bool = True):
    """A word-level tokenizer built offline; <bos> prepended like Gemma 3's (``bos=False``: not, like
    Gemma 4's), no pad token (eos is used). Spaces are kept as "\u2581" (SentencePiece style), so
    unstripped prompts tokenise differently."""
    from tokenizers import models, pre_tokenizers, processors

    words = ["<pad>", "<eos>", "<bos>", "<unk>", "\u2581"] + WORDS + ["\u2581" + w for w in WORDS]
    vocab = {w: i for i, w in enumerate(words)}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A",
                                                           special_tokens=[("<bos>", vocab["<bos>"])])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                                unk_token="<unk>")


def write_gemma(root):
    """A tiny random Gemma 3 (hidden D, L hidden states) and its tokenizer saved under root
    (tokenizer in root/tokenizer); returns root."""
    tok = _tokenizer()
    text = transformers.Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=D, intermediate_size=64, num_hidden_layers=L - 1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=4, max_position_embeddings=128,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    vision = transformers.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=28, patch_size=14)
    config = transformers.Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                       mm_tokens_per_image=4)
    torch.manual_seed(0)
    model = transformers.Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():  # default init: near-identity norms and tiny states; spread them out
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(root)
    tok.save_pretrained(root / "tokenizer")
    return root


def write_gemma4(root, bos: bool = True, gemma_version: str | None = None):
    """A tiny random Gemma 4 unified (hidden D4, L4 hidden states: the LTX-2.5 encoder's class) and its
    tokenizer saved under root (tokenizer in root/tokenizer); ``gemma_version`` goes into config.json's
    top level as LTX-2.5's Gemma carries it. Returns root."""
    import json

    tok = _tokenizer(bos)
    text = transformers.Gemma4UnifiedTextConfig(
        vocab_size=len(tok), hidden_size=D4, intermediate_size=96, num_hidden_layers=L4 - 1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, global_head_dim=32, sliding_window=4, max_position_embeddings=128,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"])
    vision = transformers.Gemma4UnifiedVisionConfig(patch_size=4, pooling_kernel_size=2, mm_embed_dim=D4,
                                                    mm_posemb_size=16, output_proj_dims=D4)
    config = transformers.Gemma4UnifiedConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                              audio_config=transformers.Gemma4UnifiedAudioConfig(audio_embed_dim=16)
                                              .to_dict())
    torch.manual_seed(0)
    model = transformers.Gemma4UnifiedForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(root)
    if gemma_version is not None:
        cfg = json.loads((root / "config.json").read_text())
        (root / "config.json").write_text(json.dumps({**cfg, "gemma_version": gemma_version}, indent=2))
    tok.save_pretrained(root / "tokenizer")
    return root
