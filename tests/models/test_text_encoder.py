"""T5 text encoding against diffusers' LTXPipeline._get_t5_prompt_embeds, tiny offline T5."""

import pytest
import torch

from ltxengine.models import text_encoder as text_encoder_module
from ltxengine.models.text_encoder import T5TextEncoder

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

WORDS = ("a cat dog sits on the mat walks in park red blue car drives fast slow video of man woman "
         "camera pans across street at night").split()


def _tokenizer():
    """A T5 Unigram tokenizer built in memory: <pad>=0, </s>=1, <unk>=2 like the real one."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0 - 0.01 * i) for i, w in enumerate(WORDS)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return transformers.T5Tokenizer(vocab=vocab, extra_ids=4)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("t5")
    tok = _tokenizer()
    tok.save_pretrained(root / "tokenizer")
    config = transformers.T5Config(vocab_size=len(tok), d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                                   feed_forward_proj="gated-gelu", relative_attention_num_buckets=8,
                                   relative_attention_max_distance=16, dropout_rate=0.0)
    torch.manual_seed(0)
    te = transformers.T5EncoderModel(config).eval()
    with torch.no_grad():  # default init gives tiny, near-uniform states; spread them out
        for p in te.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    te.save_pretrained(root / "text_encoder")
    return root / "text_encoder", root / "tokenizer"


@pytest.fixture(scope="module")
def pair(folders):
    te_dir, tok_dir = folders
    ours = T5TextEncoder.from_folders(te_dir, tok_dir, device="cpu", dtype=torch.float32)
    te = transformers.T5EncoderModel.from_pretrained(te_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(tok_dir)
    pipe = diffusers.LTXPipeline(scheduler=None, vae=None, text_encoder=te, tokenizer=tok, transformer=None)
    return ours, pipe


def reference(pipe, prompts, max_sequence_length, n=1):
    # LTXPipeline.__call__ is @torch.no_grad and so is encode(); with grad enabled torch's CPU SDPA
    # takes another kernel and the states move by ~1e-6, so compare in the context diffusers runs in.
    with torch.no_grad():
        return pipe._get_t5_prompt_embeds(prompts, num_videos_per_prompt=n,
                                          max_sequence_length=max_sequence_length, device=torch.device("cpu"),
                                          dtype=torch.float32)


def check(ours, pipe, prompts, max_sequence_length, n=1):
    exp_embeds, exp_mask = reference(pipe, prompts, max_sequence_length, n)
    embeds, mask = ours.encode(prompts, max_sequence_length, "cpu", num_videos_per_prompt=n)
    assert embeds.dtype == torch.float32 and mask.dtype == torch.long
    assert embeds.shape == exp_embeds.shape and mask.shape == exp_mask.shape
    err = (embeds - exp_embeds).abs().max().item()
    assert torch.equal(embeds, exp_embeds), f"max abs err {err:.3e}"
    assert torch.equal(mask, exp_mask.long())
    return embeds, mask


def test_short_prompt(pair):
    ours, pipe = pair
    embeds, mask = check(ours, pipe, "a cat sits on the mat", 16)
    assert embeds.shape == (1, 16, 32)
    assert mask[0].tolist() == [1] * 7 + [0] * 9  # 6 words + </s>
    # the encoder runs without the mask: padding positions carry real (non-zero) states
    assert embeds[0, 7:].abs().max() > 0
    with torch.no_grad():
        masked = ours.model(ours.tokenizer(["a cat sits on the mat"], padding="max_length", max_length=16,
                                           return_tensors="pt").input_ids, attention_mask=mask)[0]
    assert not torch.allclose(masked, embeds), "test cannot tell masked from unmasked encoding"
    # str and [str] are the same request
    e2, m2 = ours.encode(["a cat sits on the mat"], 16, "cpu")
    assert torch.equal(e2, embeds) and torch.equal(m2, mask)


def test_long_prompt_truncated(pair, caplog):
    ours, pipe = pair
    prompt = " ".join(WORDS) + " xyz qq"
    embeds, mask = check(ours, pipe, [prompt], 8)
    assert mask.tolist() == [[1] * 8]
    assert ours.tokenizer.convert_ids_to_tokens(ours.tokenizer(prompt, max_length=8, truncation=True)
                                                .input_ids)[-1] == "</s>"
    assert "truncated" in caplog.text


def test_batch_with_videos_per_prompt(pair):
    ours, pipe = pair
    prompts = ["a red car drives fast at night", "a dog walks"]
    embeds, mask = check(ours, pipe, prompts, 12, n=2)
    assert embeds.shape == (4, 12, 32)
    # embeddings are repeated per prompt: p0, p0, p1, p1
    assert torch.equal(embeds[0], embeds[1]) and torch.equal(embeds[2], embeds[3])
    assert not torch.equal(embeds[1], embeds[2])
    # diffusers tiles the mask instead (m0, m1, m0, m1) ...
    assert torch.equal(mask[0], mask[2]) and not torch.equal(mask[0], mask[1])
    # ... and the opt-out lines the mask up with the embeddings
    e2, m2 = ours.encode(prompts, 12, "cpu", num_videos_per_prompt=2, diffusers_mask_order=False)
    assert torch.equal(e2, embeds)
    assert torch.equal(m2, mask[[0, 2, 1, 3]])
    assert torch.equal(m2[0], m2[1]) and torch.equal(m2[2], m2[3])


def test_dtype(folders):
    ours = T5TextEncoder.from_folders(*folders, device="cpu", dtype=torch.bfloat16)
    assert ours.dtype == torch.bfloat16 and ours.hidden_size == 32
    embeds, mask = ours.encode(["a cat"], 4, None)
    assert embeds.dtype == torch.bfloat16 and embeds.shape == (1, 4, 32) and mask.tolist() == [[1, 1, 1, 0]]


def test_encode_validation(pair):
    ours, _ = pair
    with pytest.raises(ValueError, match=r"max_sequence_length must be a positive int, got 0"):
        ours.encode(["a cat"], 0, "cpu")
    with pytest.raises(ValueError, match=r"prompts must be a non-empty list of str, got \[\]"):
        ours.encode([], 8, "cpu")
    with pytest.raises(ValueError, match=r"prompts must be a non-empty list of str, got int at index 1"):
        ours.encode(["a cat", 3], 8, "cpu")
    with pytest.raises(ValueError, match=r"num_videos_per_prompt must be a positive int, got 0"):
        ours.encode(["a cat"], 8, "cpu", num_videos_per_prompt=0)


def test_missing_folders(folders, tmp_path):
    te_dir, tok_dir = folders
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=r"text_encoder_dir: T5 text encoder folder .*nope.* does not exist"
                                                r".*config\.json and one of model\.safetensors"):
        T5TextEncoder.from_folders(missing, tok_dir, "cpu", torch.float32)
    with pytest.raises(FileNotFoundError, match=r"tokenizer_dir: T5 tokenizer folder .*nope.* does not exist"
                                                r".*tokenizer\.json, spiece\.model"):
        T5TextEncoder.from_folders(te_dir, missing, "cpu", torch.float32)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"folder .*empty.* has no config\.json"):
        T5TextEncoder.from_folders(empty, tok_dir, "cpu", torch.float32)
    (empty / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"folder .*empty.* has none of model\.safetensors"):
        T5TextEncoder.from_folders(empty, tok_dir, "cpu", torch.float32)
    with pytest.raises(FileNotFoundError, match=r"tokenizer_dir: T5 tokenizer folder .*empty.* has none of "
                                                r"tokenizer\.json, spiece\.model"):
        T5TextEncoder.from_folders(te_dir, empty, "cpu", torch.float32)


def test_spiece_only_folder_needs_protobuf(folders, tmp_path, monkeypatch):
    # Lightricks' tokenizer/ folder ships spiece.model without tokenizer.json; transformers 5 needs
    # protobuf to convert it and would otherwise fail with a misleading tiktoken error.
    if tuple(int(x) for x in transformers.__version__.split(".")[:1]) < (5,):
        pytest.skip("the conversion check applies to transformers >= 5")
    spm_only = tmp_path / "spm_tokenizer"
    spm_only.mkdir()
    (spm_only / "spiece.model").write_bytes(b"not parsed")
    monkeypatch.setattr(text_encoder_module, "_missing_modules", lambda names: ["google.protobuf"])
    with pytest.raises(ImportError, match=r"spm_tokenizer.* has spiece.model but no tokenizer.json.*"
                                          r"pip install protobuf"):
        T5TextEncoder.from_folders(folders[0], spm_only, "cpu", torch.float32)
