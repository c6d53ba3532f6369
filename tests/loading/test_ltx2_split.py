"""LTX-2.5's per-component files (Lightricks/LTX-2.5's layout: diffusion_models/, text_encoders/, vae/):
a tiny 2.5-like set written in the reference's key names loads to the same weights as the single-file
bundle of the same tensors and the diffusers modules they come from; the text encoder file's Gemma and
tokenizer equal the Gemma folder they were packed from.

The files are written from the reference's conventions (ltx-core / ltx-pipelines @400fd31), not from our
loader: the transformer file holds ``model.diffusion_model.*`` (DiT + connectors, transformer/
model_configurator.py and EMBEDDINGS_PROCESSOR_KEY_OPS), the video VAE file bare ``encoder.`` /
``decoder.`` / ``per_channel_statistics.`` keys (VAE_*_COMFY_KEYS_FILTER), the audio VAE file
``audio_vae.*`` + ``vocoder.*`` (AUDIO_VAE_*_COMFY_KEYS_FILTER, VOCODER_COMFY_KEYS_FILTER), the text
encoder file what gemma_assets.build_text_encoder_tensors_from_gemma_root packs: ComfyUI-flat Gemma keys,
the ``text_embedding_projection.*`` tensors, ``tokenizer_json`` and ``hf_asset__<name>`` uint8 tensors and
the ``gemma_config`` header entry.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from ltxengine.loading import CheckpointError
from ltxengine.loading.ltx2 import COMPONENTS, LTX2Checkpoint, load_ltx2
from ltxengine.loading.ltx2_split import find_split_files, is_split_folder, load_gemma_file, load_split
from ltxengine.models.ltx2_text import GemmaTextEncoder
from ltxengine.ops import TORCH_OPS
from tests.loading.ltx2_split_fixtures import (GEMMA_VERSION, META, header_of, make_models, tensors_of, write_set,
                                              write_split)
from tests.models import ltx2_text_fixtures as text_t

diffusers = pytest.importorskip("diffusers")

CPU = dict(device="cpu", dtype=torch.float32, ops=TORCH_OPS)


@pytest.fixture(scope="module")
def models():
    return make_models()


@pytest.fixture(scope="module")
def files(models, tmp_path_factory):
    return write_set(tmp_path_factory.mktemp("ltx25"), models)


def test_split_set_loads_the_bundles_weights(models, files):
    split, bundle, _ = files
    assert is_split_folder(split) and not is_split_folder(bundle.parent / "gemma4")
    roles = find_split_files(split)
    assert {r: p.parent.name for r, p in roles.items()} == {"transformer": "diffusion_models",
                                                            "text_encoder": "text_encoders", "video_vae": "vae",
                                                            "audio_vae": "vae"}
    a = load_split(split, LTX2Checkpoint(source=str(split)), COMPONENTS, **CPU)
    b = load_ltx2(bundle, dtype=torch.float32)
    assert a.model_version == b.model_version == "2.5.0"
    assert a.gemma_source_checkpoint == {"gemma_version": GEMMA_VERSION}
    for name in COMPONENTS:
        sa, sb, ref = getattr(a, name).state_dict(), getattr(b, name).state_dict(), models[name].state_dict()
        assert sa.keys() == sb.keys() == ref.keys(), name
        for k in sa:
            assert torch.equal(sa[k], sb[k]) and torch.equal(sa[k], ref[k]), f"{name}: {k}"
        assert getattr(a, name).config == getattr(b, name).config, name
    # the connectors' Gemma input comes from the text encoder file's projection: Gemma 4's width and states
    assert (a.connectors.config.caption_channels, a.connectors.config.text_proj_in_factor) == (text_t.D4, text_t.L4)
    # a subset reads only its files' components
    part = load_split(split, LTX2Checkpoint(source=str(split)), ("vae",), **CPU)
    assert part.vae is not None and part.transformer is None


def test_text_encoder_file_equals_the_gemma_folder(files):
    split, _, gemma = files
    path = find_split_files(split)["text_encoder"]
    ours = load_gemma_file(path, dtype=torch.float32, checkpoint_metadata=META)
    ref = GemmaTextEncoder.from_folder(gemma, dtype=torch.float32)
    sa, sb = ours.model.state_dict(), ref.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert type(ours.model) is type(ref.model) and ours.model.config.gemma_version == GEMMA_VERSION
    prompts = ["a red car drives at night", "a cat sits on the mat"]
    ids_a, mask_a = ours.tokenize(prompts, text_t.SEQ)
    ids_b, mask_b = ref.tokenize(prompts, text_t.SEQ)
    assert torch.equal(ids_a, ids_b) and torch.equal(mask_a, mask_b)
    with torch.no_grad():
        ha, hb = ours.hidden_states(prompts, text_t.SEQ)[0], ref.hidden_states(prompts, text_t.SEQ)[0]
    assert all(torch.equal(x, y) for x, y in zip(ha, hb))


# -- refusals ------------------------------------------------------------------------------------

def test_folder_errors_are_named(models, files, tmp_path):
    import shutil
    split, bundle, gemma = files
    two = shutil.copytree(split, tmp_path / "two")
    shutil.copy(two / "diffusion_models" / "ltx-2.5-tiny-transformer.safetensors",
                two / "diffusion_models" / "ltx-2.5-tiny-distilled.safetensors")
    with pytest.raises(CheckpointError, match="more than one transformer file .*distilled.* keep one per component"):
        find_split_files(two)
    mixed = shutil.copytree(split, tmp_path / "mixed")
    shutil.copy(bundle, mixed / "bundle.safetensors")
    with pytest.raises(CheckpointError, match="bundle.safetensors is a single-file LTX-2 checkpoint"):
        find_split_files(mixed)
    diff = shutil.copytree(split, tmp_path / "diffusion_vae")
    conv = diff / "vae" / "ltx-2.5-tiny-video-vae-conv.safetensors"
    header = header_of(models)
    save_file(load_file(conv), str(diff / "vae" / "ltx-2.5-video-vae.safetensors"),
              metadata={"config": json.dumps({"vae": {**header["vae"], "_class_name": "CausalDiffusionVAE"}})})
    conv.unlink()
    with pytest.raises(CheckpointError, match="ltx-2.5-video-vae.safetensors is the diffusion-decoder video VAE"):
        find_split_files(diff)
    no_te = shutil.copytree(split, tmp_path / "no_te")
    shutil.rmtree(no_te / "text_encoders")
    with pytest.raises(CheckpointError, match="no text encoder file .*needed for the connectors"):
        load_split(no_te, LTX2Checkpoint(source=""), COMPONENTS, **CPU)
    load_split(no_te, LTX2Checkpoint(source=""), ("transformer", "vae"), **CPU)  # not needed without connectors
    with pytest.raises(CheckpointError, match="no transformer file"):
        find_split_files(gemma)


def test_foreign_and_missing_tensors_are_named(models, files, tmp_path):
    _, _, gemma = files
    tensors = tensors_of(models)
    root = write_split(tmp_path / "foreign_vae", models, gemma,
                       tensors=dict(tensors, **{"vae.decoder.stray.weight": torch.zeros(2)}))
    # the bare VAE key map claims every key of its file: the stray tensor is one the model does not use
    with pytest.raises(CheckpointError, match="1 checkpoint tensors not used by the model: .*'decoder.stray.weight'"):
        load_split(root, LTX2Checkpoint(source=""), ("vae",), **CPU)
    root = write_split(tmp_path / "foreign_dit", models, gemma,
                       tensors=dict(tensors, **{"model.diffusion_model.stray": torch.zeros(2)}))
    tf = root / "diffusion_models" / "ltx-2.5-tiny-transformer.safetensors"
    with open(tf, "rb") as fh:
        meta = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))["__metadata__"]
    save_file(dict(load_file(tf), stray=torch.zeros(2)), str(tf), metadata=meta)
    # every file is checked before anything loads, whatever components are asked for
    with pytest.raises(CheckpointError, match="1 tensors belong to no component of this transformer file: 'stray'"):
        load_split(root, LTX2Checkpoint(source=""), ("vae",), **CPU)
    # a stray tensor under the DiT's prefix is the transformer's to refuse, as in the bundle
    with pytest.raises(CheckpointError, match="not used by the model: .*'model.diffusion_model.stray'"):
        save_file({k: v for k, v in load_file(tf).items() if k != "stray"}, str(tf), metadata=meta)
        load_split(root, LTX2Checkpoint(source=""), ("transformer",), **CPU)
    key = next(k for k in tensors if k.startswith("audio_vae.decoder."))
    root = write_split(tmp_path / "missing", models, gemma, tensors={k: v for k, v in tensors.items() if k != key})
    with pytest.raises(CheckpointError, match="missing from the checkpoint"):
        load_split(root, LTX2Checkpoint(source=""), ("audio_vae",), **CPU)


def test_text_encoder_file_errors_are_named(files, tmp_path):
    split, _, _ = files
    path = find_split_files(split)["text_encoder"]
    tensors = load_file(path)
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        meta = json.loads(fh.read(n))["__metadata__"]

    def write(t, m):
        out = tmp_path / "te.safetensors"
        save_file(t, str(out), metadata=m)
        return out

    with pytest.raises(CheckpointError, match="no 'gemma_config' entry"):
        load_gemma_file(write(tensors, {"format": "pt"}))
    with pytest.raises(CheckpointError, match="model_type one of .*got 'llama'"):
        load_gemma_file(write(tensors, dict(meta, gemma_config=json.dumps({"model_type": "llama"}))))
    layer = next(k for k in tensors if k.startswith("model.layers.0."))
    with pytest.raises(CheckpointError, match="model tensors missing from the file"):
        load_gemma_file(write({k: v for k, v in tensors.items() if k != layer}, meta))
    with pytest.raises(CheckpointError, match="no 'tokenizer_json' tensor"):
        load_gemma_file(write({k: v for k, v in tensors.items() if k != "tokenizer_json"}, meta))
    # the checkpoint's Gemma version against the file's config, before any weight is read
    with pytest.raises(CheckpointError, match="Gemma version mismatch"):
        load_gemma_file(path, checkpoint_metadata={"gemma_source_checkpoint": json.dumps({"gemma_version": "v9"})})
