"""Engine.from_pretrained on a Lightricks single file equals the same weights as a diffusers folder,
and ``ltxengine info`` reads both."""

import numpy as np
import pytest
import torch

import ltxengine
from ltxengine.info import describe, format_description

from . import fixtures as fx

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return fx.single_file_and_folder(tmp_path_factory.mktemp("single"))


def test_single_file_engine_equals_folder_engine(checkpoints):
    folder, single, sched = checkpoints
    a = ltxengine.Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    b = ltxengine.Engine.from_pretrained(single, device="cpu", dtype=torch.float32, text_encoder=folder,
                                         scheduler_config=sched)
    kw = dict(prompt="a dog runs in the park", height=64, width=64, num_frames=9, num_inference_steps=3,
              decode_timestep=0.05, seed=11)
    image = fx.make_image(64, 64, 2)
    for extra in ({}, {"image": image}):
        ra, rb = a.generate(**kw, **extra), b.generate(**kw, **extra)
        # identical weights and arithmetic: the latents are bit-equal. The decoded frames differ by
        # ~2e-6, most likely because the CPU conv kernels depend on buffer alignment, which differs between the two
        # loads (same process, same load twice gives equal bits); 1e-5 is 5x that, far below any
        # wrong weight (>1e-2).
        assert torch.equal(ra.latents, rb.latents)
        assert np.abs(ra.frames - rb.frames).max() <= 1e-5
        assert ra.frames.std() > 0.05


def test_single_file_needs_a_text_encoder(checkpoints):
    _, single, _ = checkpoints
    with pytest.raises(ValueError, match=r"text_encoder: .* single-file checkpoint without the T5 text encoder"):
        ltxengine.Engine.from_pretrained(single, device="cpu", dtype=torch.float32)


def test_single_file_default_scheduler_is_the_0_9_0_one(checkpoints):
    folder, single, _ = checkpoints
    eng = ltxengine.Engine.from_pretrained(single, device="cpu", dtype=torch.float32, text_encoder=folder)
    cfg = eng.scheduler_config
    assert cfg.use_dynamic_shifting and cfg.shift_terminal == 0.1 and cfg.base_shift == 0.95


def test_info_describes_both_formats(checkpoints):
    folder, single, _ = checkpoints
    d_single, d_folder = describe(single), describe(folder)
    assert d_single["format"] == "Lightricks single file" and d_folder["format"] == "diffusers folder"
    assert d_single["version"] == d_folder["version"] == "0.9.5+"
    for comp in ("transformer", "vae"):
        # the single file carries the same tensors (plus two VAE statistics the loader drops)
        n_single, n_folder = d_single["components"][comp]["parameters"], d_folder["components"][comp]["parameters"]
        assert n_single == n_folder + (32 if comp == "vae" else 0)
    assert d_folder["components"]["text_encoder"]["class"] == "T5EncoderModel"
    assert "custom (2 layers, 2 heads)" in format_description(d_single)
