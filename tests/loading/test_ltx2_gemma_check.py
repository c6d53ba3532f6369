"""The Gemma an LTX-2 checkpoint was trained with, checked when an engine loads (issue 19).

ltx-core's _check_gemma_version (encoder_configurator.py @400fd31, ours text_encoders.check_gemma_version,
its cases tested in tests/models/test_ltx2_text_v23.py) runs in Engine.from_pretrained against the header
of the single file or the split set's transformer file, with the text encoder given (a Gemma folder, a
text encoder file, a loaded GemmaTextEncoder) or the set's own, before any weight is read: a mismatch is
a CheckpointError naming both versions, and no component is loaded. The checkpoint carries the header's
gemma_source_checkpoint.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from ltxengine import Engine
from ltxengine.loading import CheckpointError
from ltxengine.loading.ltx2 import load_ltx2
from ltxengine.loading.ltx2_gemma import check_text_encoder, checkpoint_header
from ltxengine.loading.ltx2_split import find_split_files
from ltxengine.models.ltx2_text import GemmaTextEncoder
from tests.loading.ltx2_split_fixtures import GEMMA_VERSION, make_models, write_set
from tests.models import ltx2_text_fixtures as text_t

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ltx25_gemma")
    split, bundle, gemma4 = write_set(root, make_models())
    return split, bundle, gemma4, text_t.write_gemma(root / "gemma3")


@pytest.fixture
def no_weights(monkeypatch):
    """Fails the test if the engine gets as far as loading the checkpoint."""
    def refuse(*args, **kwargs):
        raise AssertionError("components were loaded before the Gemma check")
    monkeypatch.setattr("ltxengine.ltx2.engine.load_ltx2", refuse)


def _header(path):
    with open(path, "rb") as fh:
        return json.loads(fh.read(int.from_bytes(fh.read(8), "little")))["__metadata__"]


def _rewrite(path, out, **meta):
    save_file(load_file(path), str(out), metadata={**_header(path), **meta})
    return out


def test_checkpoint_carries_the_gemma_source(files):
    split, bundle, _, _ = files
    assert load_ltx2(bundle, dtype=torch.float32, components=("vae",)).gemma_source_checkpoint == {
        "gemma_version": GEMMA_VERSION}
    assert checkpoint_header(split) == checkpoint_header(bundle) == {
        "model_version": "2.5.0", "gemma_source_checkpoint": json.dumps({"gemma_version": GEMMA_VERSION})}
    assert checkpoint_header(bundle.parent / "gemma4") is None  # a folder that is no split set: no header


def test_wrong_gemma_is_refused_before_any_weight(files, no_weights, tmp_path):
    split, bundle, gemma4, gemma3 = files
    kw = dict(device="cpu", dtype=torch.float32)
    with pytest.raises(CheckpointError, match="gemma_dir .*gemma3.*Gemma version mismatch: .*expects "
                                              "gemma_version='gemma4-12b-ltx-v1', the Gemma config has "
                                              "gemma_version=None"):
        Engine.from_pretrained(bundle, text_encoder=gemma3, **kw)
    with pytest.raises(CheckpointError, match="Gemma version mismatch"):
        Engine.from_pretrained(split, text_encoder=gemma3, **kw)
    loaded = GemmaTextEncoder.from_folder(gemma3, dtype=torch.float32)
    with pytest.raises(CheckpointError, match="a loaded GemmaTextEncoder.*Gemma version mismatch"):
        Engine.from_pretrained(bundle, text_encoder=loaded, **kw)
    # another Gemma 4 fine-tune
    other = text_t.write_gemma4(tmp_path / "other", gemma_version="gemma4-12b-ltx-v2")
    with pytest.raises(CheckpointError, match="expects gemma_version='gemma4-12b-ltx-v1', the Gemma config has "
                                              "gemma_version='gemma4-12b-ltx-v2'"):
        Engine.from_pretrained(bundle, text_encoder=other, **kw)
    # an LTX-2.3 header (no gemma_source_checkpoint) needs Gemma 3
    v23 = _rewrite(bundle, tmp_path / "v23.safetensors", model_version="2.3.0")
    meta = _header(v23)
    del meta["gemma_source_checkpoint"]
    save_file(load_file(v23), str(v23), metadata=meta)
    with pytest.raises(CheckpointError, match="needs a Gemma 3 text encoder .*got model_type='gemma4_unified'"):
        Engine.from_pretrained(v23, text_encoder=gemma4, **kw)
    # a malformed header entry is named
    bad = _rewrite(bundle, tmp_path / "bad.safetensors", gemma_source_checkpoint="{oops")
    with pytest.raises(CheckpointError, match="'gemma_source_checkpoint' is not JSON"):
        Engine.from_pretrained(bad, text_encoder=gemma4, **kw)


def test_split_sets_own_text_encoder_is_checked(files, no_weights, tmp_path):
    import shutil
    split, _, _, _ = files
    copy = shutil.copytree(split, tmp_path / "split")
    te = find_split_files(copy)["text_encoder"]
    config = json.loads(_header(te)["gemma_config"])
    _rewrite(te, te, gemma_config=json.dumps({**config, "gemma_version": "gemma4-12b-ltx-v0"}))
    with pytest.raises(CheckpointError, match="text encoder file .*Gemma version mismatch: .*gemma4-12b-ltx-v0"):
        Engine.from_pretrained(copy, device="cpu", dtype=torch.float32)
    check_text_encoder(copy, text_t.write_gemma4(tmp_path / "ok", gemma_version=GEMMA_VERSION))  # given one wins
