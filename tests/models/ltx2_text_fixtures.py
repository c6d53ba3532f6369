"""The tiny LTX-2 text path of the tests: a random Gemma 3 with an offline tokenizer written to a folder,
and diffusers' LTX2TextConnectors with random weights beside ours loaded from it, with the connectors'
original (Lightricks single-file) key names. Used by the text, loading, LoRA and pipeline tests."""

import pytest
import torch

from ltxengine.config import parse_config
from ltxengine.models.ltx2_text import TextConnectors, TextConnectorsConfig

from ..helpers import perturb_

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
WORDS = "a cat dog sits on the mat walks in park red blue car drives fast slow video of man woman at night".split()


def make_pair(**overrides):
    """diffusers' LTX2TextConnectors with perturbed weights and ours loaded from its state dict."""
    torch.manual_seed(0)
    ref = LTX2TextConnectors(**{**TINY, **overrides}).eval()
    perturb_(ref)
    ours = TextConnectors(parse_config(TextConnectorsConfig, dict(ref.config), "test")).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def to_original(sd):
    """Our (= diffusers) keys -> Lightricks single-file names, written from ltx-core's module names."""
    out = {}
    for key, value in sd.items():
        if key.startswith("text_proj_in."):
            out["text_embedding_projection.aggregate_embed." + key[len("text_proj_in."):]] = value
            continue
        which, rest = key.split(".", 1)
        rest = rest.replace("transformer_blocks", "transformer_1d_blocks").replace("norm_q", "q_norm")
        rest = rest.replace("norm_k", "k_norm")
        out[f"model.diffusion_model.{which.replace('_connector', '')}_embeddings_connector.{rest}"] = value
    return out


def _tokenizer():
    """A word-level tokenizer built offline; <bos> prepended like Gemma's, no pad token (eos is used).
    Spaces are kept as "\u2581" (SentencePiece style), so unstripped prompts tokenise differently."""
    from tokenizers import models, pre_tokenizers, processors

    words = ["<pad>", "<eos>", "<bos>", "<unk>", "\u2581"] + WORDS + ["\u2581" + w for w in WORDS]
    vocab = {w: i for i, w in enumerate(words)}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
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
