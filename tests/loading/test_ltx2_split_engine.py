"""Engine.from_pretrained on LTX-2.5's per-component files (issue 19): the folder of the published
layout builds the same engine as the single-file bundle of the same tensors with the Gemma folder the
text encoder file was packed from; a text encoder file also serves a bundle."""

from __future__ import annotations

import pytest
import torch

from ltxengine import Engine
from ltxengine.loading.ltx2_split import find_split_files, is_split_folder, load_split_folder
from tests.loading.ltx2_split_fixtures import DIT, GEMMA_VERSION, make_models, write_set
from tests.models import ltx2_text_fixtures as text_t

pytest.importorskip("diffusers")
PROMPTS = ["a red car drives at night", "a cat sits on the mat"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_set(tmp_path_factory.mktemp("ltx25_engine"), make_models())


def _encode(engine):
    with torch.no_grad():
        return engine.text_encoder.encode(PROMPTS, max_sequence_length=text_t.SEQ)


def test_engine_from_the_split_folder(files):
    split, bundle, gemma = files
    assert is_split_folder(split) and not is_split_folder(gemma)
    a = Engine.from_pretrained(split, device="cpu", dtype=torch.float32)
    b = Engine.from_pretrained(bundle, device="cpu", dtype=torch.float32, text_encoder=gemma)
    assert (a.family, a.model_version, a.release.version) == ("ltx-2", "2.5.0", "2.5")
    for name in ("transformer", "connectors", "vae", "audio_vae", "vocoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), name
    ga, gb = a.text_encoder.model.state_dict(), b.text_encoder.model.state_dict()
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)
    assert all(torch.equal(x, y) for x, y in zip(_encode(a), _encode(b)))
    # the text encoder file serves the bundle too
    c = Engine.from_pretrained(bundle, device="cpu", dtype=torch.float32,
                               text_encoder=find_split_files(split)["text_encoder"])
    assert all(torch.equal(x, y) for x, y in zip(_encode(c), _encode(b)))
    # a Gemma folder given explicitly replaces the set's own text encoder file
    d = Engine.from_pretrained(split, device="cpu", dtype=torch.float32, text_encoder=gemma)
    assert all(torch.equal(x, y) for x, y in zip(_encode(d), _encode(b)))


def test_split_folder_loads_like_load_ltx2(files):
    split, _, _ = files
    ckpt = load_split_folder(split, dtype=torch.float32, components=("vae", "vocoder"))
    assert ckpt.vae is not None and ckpt.vocoder is not None and ckpt.transformer is None
    assert ckpt.model_version == "2.5.0" and ckpt.gemma_source_checkpoint == {"gemma_version": GEMMA_VERSION}
    assert set(ckpt.extras["split_files"]) == {"transformer", "text_encoder", "video_vae", "audio_vae"}
    with pytest.raises(ValueError, match="modalities: .* per-component files, which loads both streams"):
        load_split_folder(split, dtype=torch.float32, modalities=("audio",))


def test_the_cli_reads_the_split_folder(files):
    """What `ltxengine generate` reads of a checkpoint before loading it (info.family, ltx2_release,
    transformer_layers) comes from the set's transformer file."""
    from ltxengine.info import family, ltx2_release, transformer_layers
    split, _, gemma = files
    assert (family(split), ltx2_release(split), transformer_layers(split)) == ("LTX-2", "2.5", DIT["num_layers"])
    assert family(gemma) == "LTX-Video"  # a folder that is no LTX-2 checkpoint keeps the fallback


def test_split_transformer_takes_the_fp8_policies(files):
    """quantization= reaches the split set's transformer as the bundle's: the policy's targets in fp8,
    the 2.5 gate projections kept in full precision (quant.KEEP_FULL_PRECISION)."""
    from ltxengine.models.common import OpsLinear
    from ltxengine.quant import Fp8Linear, fp8_targets
    split, _, _ = files
    model = load_split_folder(split, dtype=torch.bfloat16, components=("transformer",),
                              quantization="fp8-cast").transformer
    fp8 = sorted(n for n, m in model.named_modules() if isinstance(m, Fp8Linear))
    assert model.quantization == "fp8-cast" and fp8 == sorted(fp8_targets(model, "fp8-cast")) and fp8
    gates = [m for n, m in model.named_modules() if n.endswith("to_gate_logits")]
    assert gates and all(type(m) is OpsLinear and m.weight.dtype == torch.bfloat16 for m in gates)
