"""The transformers text encoders (T5, Gemma 3) load safely and strictly (issue 17, findings 4.1, 4.2).

* No code from a checkpoint runs: a folder whose config asks for its own Python (``auto_map``) is
  refused by file and key, without asking on stdin (checked in a subprocess answering "y", the answer
  that made transformers run the code).
* A missing tensor (transformers: random values), an unused one (transformers: a log line), a wrong
  shape, an integer weight or a truncated file is a CheckpointError naming the file and keys; the
  ties transformers declares (T5's embeddings) stay allowed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ltxengine.loading import CheckpointError
from ltxengine.models.ltx2_text import GemmaTextEncoder
from ltxengine.models.text_encoder import T5TextEncoder

transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    """A tiny T5 encoder + tokenizer as the LTX-Video folder holds them (text_encoder/, tokenizer/)."""
    from ltxengine.demo import _tokenizer
    root = tmp_path_factory.mktemp("t5")
    tok = _tokenizer()
    tok.save_pretrained(root / "tokenizer")
    torch.manual_seed(0)
    transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=len(tok), d_model=16, d_kv=8, num_heads=2, d_ff=32, num_layers=1, feed_forward_proj="gated-gelu",
        dropout_rate=0.0)).save_pretrained(root / "text_encoder")
    return root


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    """A tiny Gemma 3 (text_encoder/) and its tokenizer (tokenizer/), as the demo writes them."""
    from ltxengine.demo import _gemma
    root = tmp_path_factory.mktemp("gemma")
    torch.manual_seed(0)
    _gemma(root, hidden=16)
    return root


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite(folder: Path, change) -> Path:
    """Rewrite folder/model.safetensors with ``change(state_dict)`` applied."""
    path = folder / "model.safetensors"
    sd = load_file(path)
    change(sd)
    save_file(sd, path, metadata={"format": "pt"})
    return path


def _load_t5(root: Path, te: Path | None = None, tok: Path | None = None):
    return T5TextEncoder.from_folders(te or root / "text_encoder", tok or root / "tokenizer", dtype=torch.float32)


def _load_gemma(root: Path, te: Path | None = None, tok: Path | None = None):
    return GemmaTextEncoder.from_folder(te or root / "text_encoder", tok or root / "tokenizer", dtype=torch.float32)


# -- 4.1: no code from a checkpoint ---------------------------------------------------------------

_EVIL = """\
import pathlib
pathlib.Path({marker!r}).write_text("the checkpoint's code ran")
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel
class EvilTokenizer(PreTrainedTokenizerFast):
    pass
class EvilConfig(T5Config):
    pass
class EvilModel(T5EncoderModel):
    pass
"""


def _plant(folder: Path, config_name: str, marker: Path) -> None:
    """Make ``folder`` ask for its own code: an ``auto_map`` in ``config_name`` pointing at a module
    that writes ``marker`` when imported."""
    (folder / "evil.py").write_text(_EVIL.format(marker=str(marker)))
    path = folder / config_name
    config = json.loads(path.read_text())
    if config_name == "tokenizer_config.json":
        config.update(tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": [None, "evil.EvilTokenizer"]})
    else:
        config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel",
                              "AutoTokenizer": [None, "evil.EvilTokenizer"]}
    path.write_text(json.dumps(config))


_LOADER = """\
import sys, torch
from ltxengine.loading import CheckpointError
from ltxengine.models.ltx2_text import GemmaTextEncoder
from ltxengine.models.text_encoder import T5TextEncoder
for family, te, tok in zip(*[iter(sys.argv[1:])] * 3):
    try:
        if family == "t5":
            T5TextEncoder.from_folders(te, tok, dtype=torch.float32)
        else:
            GemmaTextEncoder.from_folder(te, tok, dtype=torch.float32)
    except CheckpointError as e:
        print("REFUSED:", str(e).replace("\\n", " "))
    else:
        print("LOADED")
"""


def _load_in_subprocess(cases: list[tuple[str, Path, Path]], stdin_text: str | None) -> list[str]:
    """Load each (family, text encoder folder, tokenizer folder) in one fresh process whose stdin
    answers ``stdin_text`` (None: closed), so a prompt waiting for more input hits the timeout ->
    one output line per case."""
    kwargs = dict(input=stdin_text) if stdin_text is not None else dict(stdin=subprocess.DEVNULL)
    args = [str(x) for case in cases for x in case]
    done = subprocess.run([sys.executable, "-c", _LOADER, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}, **kwargs)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == len(cases), done.stdout
    return lines


PLANTS = [("t5", "tokenizer", "tokenizer_config.json"), ("t5", "text_encoder", "config.json"),
          ("gemma", "tokenizer", "tokenizer_config.json"), ("gemma", "text_encoder", "config.json")]


@pytest.mark.parametrize("stdin_text", ["y\n", None], ids=["stdin-says-yes", "stdin-closed"])
def test_checkpoint_code_never_runs(stdin_text, t5, gemma, tmp_path):
    cases, expected = [], []
    for i, (family, part, config_name) in enumerate(PLANTS):
        root = _copy(t5 if family == "t5" else gemma, tmp_path / f"ckpt{i}")
        _plant(root / part, config_name, tmp_path / f"marker{i}")
        cases.append((family, root / "text_encoder", root / "tokenizer"))
        expected.append(root / part / config_name)
    outputs = _load_in_subprocess(cases, stdin_text)
    assert not list(tmp_path.glob("marker*")), "code shipped with a checkpoint was imported"
    for out, path in zip(outputs, expected):
        assert out.startswith("REFUSED:"), out
        assert str(path) in out and "'auto_map'" in out and "evil." in out, out


def test_transformers_is_told_not_to_trust_remote_code(t5, gemma, monkeypatch):
    """Belt and braces: every transformers loading call carries trust_remote_code=False."""
    seen = []

    def spy(original):
        def call(*args, **kwargs):
            seen.append(kwargs.get("trust_remote_code", "absent"))
            return original(*args, **kwargs)
        return call

    for cls in (transformers.AutoTokenizer, transformers.T5EncoderModel, transformers.Gemma3ForConditionalGeneration):
        monkeypatch.setattr(cls, "from_pretrained", spy(cls.from_pretrained))
    _load_t5(t5)
    _load_gemma(gemma)
    assert seen == [False] * 4


def test_fifo_in_a_text_encoder_folder_is_refused_without_blocking(t5, tmp_path):
    """transformers would open a FIFO named tokenizer_config.json and wait for a writer forever."""
    root = _copy(t5, tmp_path / "ckpt")
    (root / "tokenizer" / "tokenizer_config.json").unlink()
    os.mkfifo(root / "tokenizer" / "tokenizer_config.json")
    [out] = _load_in_subprocess([("t5", root / "text_encoder", root / "tokenizer")], None)
    assert out.startswith("REFUSED:") and "tokenizer_config.json is a FIFO" in out, out


def test_symlink_loop_as_weights_is_named(t5, tmp_path):
    root = _copy(t5, tmp_path / "ckpt")
    weights = root / "text_encoder" / "model.safetensors"
    weights.unlink()
    weights.symlink_to(weights.name)
    with pytest.raises(CheckpointError, match=r"model\.safetensors is a symlink loop"):
        _load_t5(root)


# -- 4.2: strict -------------------------------------------------------------------------------------

def _drop(name):
    return lambda sd: sd.pop(name)


def _add(name):
    return lambda sd: sd.__setitem__(name, torch.zeros(3))


def _integer(name):
    return lambda sd: sd.__setitem__(name, sd[name].to(torch.int32))


def _reshape(name):
    return lambda sd: sd.__setitem__(name, torch.zeros(5))


T5_KEY = "encoder.block.0.layer.0.SelfAttention.q.weight"
GEMMA_KEY = "language_model.model.layers.0.mlp.gate_proj.weight"  # as transformers 5 saves it


@pytest.mark.parametrize("family, change, message", [
    ("t5", _drop(T5_KEY), rf"1 model tensors missing from the checkpoint .*'{T5_KEY}'"),
    ("t5", _add("encoder.extra.weight"), r"1 checkpoint tensors not used by the model: 'encoder\.extra\.weight'"),
    ("t5", _integer(T5_KEY), rf"tensors are not floating point \('{T5_KEY}' \(I32\)\)"),
    ("t5", _reshape("encoder.final_layer_norm.weight"), r"wrong shape: 'encoder\.final_layer_norm\.weight' \(5,\)"),
    ("gemma", _drop(GEMMA_KEY), r"1 model tensors missing .*'model\.language_model\.layers\.0\.mlp\.gate_proj\."),
    ("gemma", _add("language_model.model.extra"), r"1 checkpoint tensors not used by the model: '.*extra'"),
    ("gemma", _integer(GEMMA_KEY), rf"tensors are not floating point \('{GEMMA_KEY}' \(I32\)\)"),
], ids=["t5-missing", "t5-extra", "t5-integer", "t5-shape", "gemma-missing", "gemma-extra", "gemma-integer"])
def test_checkpoint_must_match_the_model(family, change, message, t5, gemma, tmp_path):
    root = _copy(t5 if family == "t5" else gemma, tmp_path / "ckpt")
    path = _rewrite(root / "text_encoder", change)
    with pytest.raises(CheckpointError, match=message) as info:
        (_load_t5 if family == "t5" else _load_gemma)(root)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("family", ["t5", "gemma"])
def test_truncated_weights_are_named(family, t5, gemma, tmp_path):
    root = _copy(t5 if family == "t5" else gemma, tmp_path / "ckpt")
    path = root / "text_encoder" / "model.safetensors"
    os.truncate(path, path.stat().st_size - 64)
    with pytest.raises(CheckpointError, match=rf"{path}: not a readable safetensors file"):
        (_load_t5 if family == "t5" else _load_gemma)(root)


def test_sharded_checkpoint_names_the_shard(t5, tmp_path):
    root = _copy(t5, tmp_path / "ckpt")
    te = root / "text_encoder"
    sd = load_file(te / "model.safetensors")
    (te / "model.safetensors").unlink()
    keys = sorted(sd)
    half = len(keys) // 2
    for name, part in (("model-00001-of-00002.safetensors", keys[:half]),
                       ("model-00002-of-00002.safetensors", keys[half:])):
        save_file({k: sd[k] for k in part}, te / name, metadata={"format": "pt"})
    weight_map = {k: "model-00001-of-00002.safetensors" if i < half else "model-00002-of-00002.safetensors"
                  for i, k in enumerate(keys)}
    (te / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    _load_t5(root)  # a sharded checkpoint loads
    os.truncate(te / "model-00002-of-00002.safetensors", 100)
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002\.safetensors: not a readable safetensors"):
        _load_t5(root)


def test_declared_ties_and_ignores_stay_allowed(t5, tmp_path):
    """T5's encoder.embed_tokens IS shared (transformers ties them), so a file holding either name
    is complete; a full T5 checkpoint's decoder is not used by T5EncoderModel by design."""
    reference = _load_t5(t5).model.state_dict()
    root = _copy(t5, tmp_path / "ckpt")
    _rewrite(root / "text_encoder", lambda sd: sd.__setitem__("encoder.embed_tokens.weight", sd.pop("shared.weight")))
    _rewrite(root / "text_encoder", _add("decoder.block.0.layer.0.SelfAttention.q.weight"))
    loaded = _load_t5(root).model.state_dict()
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], v) for k, v in reference.items())


def test_gemma_config_that_is_not_an_object(gemma, tmp_path):
    root = _copy(gemma, tmp_path / "ckpt")
    (root / "text_encoder" / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"config\.json: Gemma config\.json must be a JSON object, got list"):
        _load_gemma(root)


def test_every_transformers_load_goes_through_the_guarded_module():
    """A new ``X.from_pretrained(`` call elsewhere in the package would bypass the checks above
    (Engine.from_pretrained is ours, not transformers')."""
    calls = re.compile(r"(\w+)\.from_pretrained\(")
    found = {(str(p.relative_to(REPO)), m[1]) for p in (REPO / "ltxengine").rglob("*.py")
             for m in calls.finditer(p.read_text()) if m[1] not in ("Engine", "cls")}
    assert found == {("ltxengine/loading/text_encoders.py", "model_cls"),
                     ("ltxengine/loading/text_encoders.py", "AutoTokenizer")}, found
