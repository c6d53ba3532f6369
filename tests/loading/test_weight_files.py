"""Weight files the diffusion loaders must refuse by name (issue 17, findings 4.10 and 4.11):

* a path that is a FIFO, a device or a symlink loop (reading one blocks or never ends; before, the
  message said "no such file" for a file that exists, or named a folder's listing that held it);
* integer or bool tensors where the model has a float weight (before, they were set as is);
* an LTX-2 latent upsampler given to an LTX-Video engine, and the reverse (before, accepted: the
  two families' latents have the same shape, so it ran and gave garbage).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ltxengine.presets import DEMO_TRANSFORMER, DEMO_UPSAMPLER, demo_ltx2
from ltxengine.loading import CheckpointError, load_latent_upsampler, load_transformer, load_vae
from ltxengine.loading.export import save_component
from ltxengine.loading.ltx2 import load_ltx2
from ltxengine.models.latent_upsampler import LatentUpsampler
from ltxengine.models.transformer import LTXVideoTransformer

from .formats import save_single_file

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def transformer_folder(tmp_path_factory):
    torch.manual_seed(0)
    return save_component(LTXVideoTransformer(DEMO_TRANSFORMER), tmp_path_factory.mktemp("ckpt") / "transformer")


def _copy_config(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    (dst / "config.json").write_text((src / "config.json").read_text())
    return dst


# -- special files ----------------------------------------------------------------------------------

def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _loop(path: Path) -> Path:
    path.symlink_to(path.name)
    return path


def _dangling(path: Path) -> Path:
    path.symlink_to(path.parent / "gone.safetensors")
    return path


def _device(path: Path) -> Path:
    path.symlink_to("/dev/zero")
    return path


SPECIAL = {"fifo": (_fifo, r"is a FIFO \(named pipe\), not a regular file"),
           "loop": (_loop, r"is a symlink loop"),
           "dangling": (_dangling, r"is a dangling symlink \(to '.*gone\.safetensors', which does not exist\)"),
           "device": (_device, r"is a character device, not a regular file")}

_PROBE = """\
import sys
from ltxengine.loading import CheckpointError, load_latent_upsampler, load_transformer, load_vae
loaders = {"transformer": load_transformer, "vae": load_vae, "latent_upsampler": load_latent_upsampler}
for loader, path in zip(*[iter(sys.argv[1:])] * 2):
    try:
        loaders[loader](path)
    except CheckpointError as e:
        print("REFUSED:", e)
    else:
        print("LOADED")
"""
LOADERS = ("transformer", "vae", "latent_upsampler")


@pytest.fixture(scope="module")
def special_outcomes(transformer_folder, tmp_path_factory):
    """(kind, loader or "folder") -> what loading printed, every case in one subprocess with a
    timeout: on a FIFO, a loader that opens the file blocks forever."""
    root = tmp_path_factory.mktemp("special")
    cases = {}
    for kind, (make, _) in SPECIAL.items():
        path = make(root / f"{kind}.safetensors")
        cases.update({(kind, loader): (loader, path) for loader in LOADERS})
        folder = _copy_config(transformer_folder, root / f"{kind}-folder")
        make(folder / WEIGHTS)
        cases[kind, "folder"] = ("transformer", folder)
    args = [str(x) for case in cases.values() for x in case]
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == len(cases), done.stdout
    return {key: (path, line) for (key, (_, path)), line in zip(cases.items(), lines)}


@pytest.mark.parametrize("kind", sorted(SPECIAL))
@pytest.mark.parametrize("loader", LOADERS)
def test_single_file_path_that_is_not_a_regular_file(kind, loader, special_outcomes):
    path, out = special_outcomes[kind, loader]
    assert out.startswith(f"REFUSED: {path}: checkpoint ") and re.search(SPECIAL[kind][1], out), out


@pytest.mark.parametrize("kind", sorted(SPECIAL))
def test_folder_weights_that_are_not_a_regular_file(kind, special_outcomes):
    folder, out = special_outcomes[kind, "folder"]
    assert out.startswith(f"REFUSED: {folder / WEIGHTS}: checkpoint file "), out
    assert re.search(SPECIAL[kind][1], out), out


def test_config_and_index_that_are_not_regular_files(transformer_folder, tmp_path):
    folder = _copy_config(transformer_folder, tmp_path / "transformer")
    (folder / "config.json").unlink()
    _fifo(folder / "config.json")
    with pytest.raises(CheckpointError, match=r"config\.json: transformer config\.json is a FIFO"):
        load_transformer(folder)
    folder = _copy_config(transformer_folder, tmp_path / "sharded")
    _loop(folder / (WEIGHTS + ".index.json"))
    with pytest.raises(CheckpointError, match=r"index\.json: sharded-weights index is a symlink loop"):
        load_transformer(folder)


def test_pipeline_path_that_is_a_device():
    with pytest.raises(CheckpointError, match=r"^/dev/zero: checkpoint path is a character device"):
        load_ltx2("/dev/zero")
    from ltxengine import Engine
    with pytest.raises(CheckpointError, match=r"^/dev/zero: checkpoint path is a character device"):
        Engine.from_pretrained("/dev/zero", device="cpu", dtype=torch.float32)


# -- integer and bool weights -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, name", [(torch.int32, "I32"), (torch.int8, "I8"), (torch.bool, "BOOL"),
                                         (torch.uint8, "U8")])
def test_integer_or_bool_weights_are_refused(dtype, name, transformer_folder, tmp_path):
    folder = _copy_config(transformer_folder, tmp_path / "transformer")
    sd = load_file(transformer_folder / WEIGHTS)
    key = "transformer_blocks.0.attn1.to_q.weight"
    sd[key] = sd[key].to(dtype)
    save_file(sd, folder / WEIGHTS)
    with pytest.raises(CheckpointError, match=rf"{folder}: tensor '{key}' in .*{WEIGHTS} is stored as {name}, "
                                              rf"the model expects a torch\.float32 tensor for '{key}'"):
        load_transformer(folder, dtype=torch.float32)


def test_integer_weight_in_a_single_file(tmp_path):
    model = LatentUpsampler(DEMO_UPSAMPLER)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd["final_conv.bias"] = torch.ones_like(sd["final_conv.bias"], dtype=torch.int64)
    path = save_single_file(tmp_path / "up.safetensors", sd, {"in_channels": DEMO_UPSAMPLER.in_channels,
                                                               "mid_channels": DEMO_UPSAMPLER.mid_channels,
                                                               "num_blocks_per_stage": 1})
    with pytest.raises(CheckpointError, match=r"up\.safetensors: tensor 'final_conv\.bias' .* is stored as I64"):
        load_latent_upsampler(path)


def test_reader_refuses_an_integer_tensor_cast_to_float(tmp_path):
    """The reader itself (used by LoRA and fp8 paths too) will not cast an int tensor to a weight."""
    from ltxengine.loading import SafetensorsFile
    save_file({"w": torch.arange(4)}, tmp_path / "w.safetensors")
    with SafetensorsFile(tmp_path / "w.safetensors") as f:
        assert f.read("w").dtype == torch.int64  # as stored, when no cast is asked for
        with pytest.raises(CheckpointError, match=r"w\.safetensors: tensor 'w' is stored as I64; a weight must be"):
            f.read("w", "cpu", torch.float32)


# -- latent upsampler of the wrong family -------------------------------------------------------------

@pytest.fixture(scope="module")
def upsamplers(tmp_path_factory):
    """An LTX-Video and an LTX-2 upsampler, each as a diffusers folder and a Lightricks single file;
    both take the same latents (32 channels), so only the family tells them apart."""
    from ltxengine.demo import _save
    root = tmp_path_factory.mktemp("upsamplers")
    torch.manual_seed(0)
    ltxv, ltx2_cfg = LatentUpsampler(DEMO_UPSAMPLER), demo_ltx2()["latent_upsampler"]
    ltx2 = LatentUpsampler(ltx2_cfg)
    save_component(ltxv, root / "ltxv")
    _save(ltx2, root / "ltx2", "LTX2LatentUpsamplerModel", ltx2_cfg)
    header_v = {"_class_name": "LatentUpsampler", "in_channels": 32, "mid_channels": DEMO_UPSAMPLER.mid_channels,
                "num_blocks_per_stage": 1, "dims": 3, "spatial_upsample": True, "temporal_upsample": False}
    header_2 = dict(header_v, mid_channels=ltx2_cfg.mid_channels, rational_resampler=True, spatial_scale=2.0)
    save_single_file(root / "ltxv.safetensors", dict(ltxv.state_dict()), header_v)
    save_single_file(root / "ltx2.safetensors", dict(ltx2.state_dict()), header_2)
    return root


@pytest.mark.parametrize("name, family, message", [
    ("ltx2", "ltx-video", r"this is an LTX-2 latent upsampler \(_class_name 'LTX2LatentUpsamplerModel'\); "
                          r"an LTX-Video engine needs an LTX-Video one"),
    ("ltx2.safetensors", "ltx-video", r"this is an LTX-2 latent upsampler \(its header config has the LTX-2 "
                                      r"option\(s\) \['rational_resampler', 'spatial_scale'\]\)"),
    ("ltxv", "ltx-2", r"this is an LTX-Video latent upsampler \(_class_name 'LTXLatentUpsamplerModel'\); an LTX-2 "
                      r"engine needs an LTX-2 one \(ltx-2-spatial-upscaler-\*\)"),
])
def test_upsampler_of_the_other_family_is_refused(name, family, message, upsamplers):
    with pytest.raises(CheckpointError, match=message):
        load_latent_upsampler(upsamplers / name, family=family)


def test_upsampler_of_the_right_or_unknown_family_loads(upsamplers):
    for name, family in (("ltxv", "ltx-video"), ("ltx2", "ltx-2"), ("ltx2.safetensors", "ltx-2"),
                         ("ltxv.safetensors", "ltx-video"), ("ltxv.safetensors", "ltx-2"), ("ltx2", None)):
        load_latent_upsampler(upsamplers / name, family=family)  # a plain header belongs to either family
    with pytest.raises(ValueError, match=r"family must be None or one of \('ltx-video', 'ltx-2'\), got 'ltx2'"):
        load_latent_upsampler(upsamplers / "ltx2", family="ltx2")


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    from ltxengine.demo import write_demo_checkpoint, write_demo_ltx2_checkpoint
    root = tmp_path_factory.mktemp("demos")
    return write_demo_checkpoint(root / "ltxv"), write_demo_ltx2_checkpoint(root / "ltx2")


def test_engines_refuse_the_other_familys_upsampler(demos):
    from ltxengine import Engine
    ltxv, ltx2 = demos
    with pytest.raises(CheckpointError, match=r"latent_upsampler/config\.json: this is an LTX-2 latent upsampler"):
        Engine.from_pretrained(ltxv, latent_upsampler=ltx2 / "latent_upsampler", device="cpu", dtype=torch.float32)
    with pytest.raises(CheckpointError, match=r"latent_upsampler/config\.json: this is an LTX-Video latent upsampler"):
        Engine.from_pretrained(ltx2, latent_upsampler=ltxv / "latent_upsampler", device="cpu", dtype=torch.float32)
    # each demo's own upsampler still loads
    assert Engine.from_pretrained(ltxv, device="cpu", dtype=torch.float32).latent_upsampler is not None
    assert json.loads((ltx2 / "latent_upsampler" / "config.json").read_text())["_class_name"] == \
        "LTX2LatentUpsamplerModel"
