"""LTX-2 video conditions against diffusers' LTX2ConditionPipeline: same folder, same arguments,
same integer seed, video and audio, fp32 on CPU, budget 1e-4 absolute (as test_ltx2_parity);
measured max |d| 6.2e-5 video, 1.4e-5 audio (float32 reassociation over 3 guided steps, as there).

diffusers takes a condition at a latent index L (negative from the end) and images or videos
(cut to fit, then to 8k + 1 frames): L = 0 replaces the first latent frames, L > 0 appends
keyframe tokens at pixel frame 8 (L - 1) + 1. Ours: Condition(image= / video=, frame_index=that
pixel frame). diffusers draws its noise packed (video with the keyframe tokens, then audio), we in
LTX2Pipeline's order (video, audio unpacked, then the keyframe tokens), so its draws are replayed
from ours. Rescale is 0 for the reason test_ltx2_parity's image-to-video test gives; the shift is
set for the video's tokens with the appended ones (diffusers shifts for its whole sequence)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltxengine import Condition, Engine
from ltxengine.components import latents as lv
from tests.pipelines.ltx2_fixtures import GUIDED, SEQ, build_pipeline, params

diffusers = pytest.importorskip("diffusers")

BUDGET = 1e-4
PROMPT, NEGATIVE = "a cat sits on the mat", "red car"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pipe, _, folder = build_pipeline(tmp_path_factory.mktemp("ltx2cond"))
    return pipe, Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)


def _replayed(monkeypatch, seed, video_shape, keyframe_tokens, audio_shape):
    """diffusers' two draws (packed video + keyframe tokens, packed audio) made of ours."""
    import diffusers.pipelines.ltx2.pipeline_ltx2_condition as module
    g = torch.Generator().manual_seed(seed)
    video = lv.pack(torch.randn(video_shape, generator=g))
    audio = torch.randn(audio_shape, generator=g).permute(0, 2, 1, 3).flatten(2)
    video = torch.cat([video, torch.randn(1, keyframe_tokens, video_shape[1], generator=g)], 1)
    draws = [video, audio]

    def randn_tensor(shape, generator=None, device=None, dtype=None, **_):
        noise = draws.pop(0)
        assert tuple(shape) == tuple(noise.shape), (shape, noise.shape)
        return noise.to(dtype)
    monkeypatch.setattr(module, "randn_tensor", randn_tensor)
    return draws


@pytest.mark.parametrize("latent_index", [1, -2])
def test_image_and_video_conditions_match_ltx2_condition_pipeline(setup, monkeypatch, latent_index):
    """An image replacing frame 0 (CRF 33 on both sides) and a 12-frame video at latent index 1
    (-2 of 3 latent frames is the same), i.e. pixel frame 1: 16 frames fit, cut to 9 (2 latent
    frames, 12 appended tokens). Both at strength 1: for a partial strength diffusers takes x0 of
    every video token with the step's sigma (convert_velocity_to_x0), ltx-core's X0Model (and we)
    with the token's own timestep sigma x (1 - strength), so their results differ there (0.25 on
    the frames at strength 0.8 here) and ours is ltx-pipelines'."""
    from PIL import Image
    pipe, engine = setup
    # LTX2ConditionPipeline takes the tokenizer's padding side for the connectors once, when built,
    # and then encodes left-padded (as LTX2Pipeline does); the tiny tokenizer starts right-padded
    pipe.tokenizer.padding_side = "left"
    cond_pipe = diffusers.LTX2ConditionPipeline(**pipe.components)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    video = rng.integers(0, 256, (12, 64, 96, 3), dtype=np.uint8)
    g = dict(GUIDED, guidance_rescale=0.0, audio_guidance_rescale=0.0)
    kw = dict(height=64, width=96, num_frames=17, frame_rate=24.0, num_inference_steps=3)
    acfg = engine.audio_vae.config
    t_audio = round(17 / 24.0 * 25)
    draws = _replayed(monkeypatch, 4, (1, 8, 3, 2, 3), 12, (1, acfg.latent_channels, t_audio, acfg.latent_mel_bins))
    conditions = [diffusers.pipelines.ltx2.pipeline_ltx2_condition.LTX2VideoCondition(frames=image, index=0),
                  diffusers.pipelines.ltx2.pipeline_ltx2_condition.LTX2VideoCondition(
                      frames=torch.from_numpy(video).permute(0, 3, 1, 2).float(), index=latent_index, strength=1.0)]
    with torch.no_grad():
        ref_video, ref_audio = cond_pipe(conditions=conditions, prompt=PROMPT, negative_prompt=NEGATIVE,
                                         generator=torch.Generator().manual_seed(4), max_sequence_length=SEQ,
                                         output_type="np", return_dict=False, **kw, **g)
    assert not draws, "diffusers drew the replayed noise"
    frame = (latent_index % 3 - 1) * 8 + 1
    ours = engine.generate(PROMPT, NEGATIVE, conditions=[Condition(image=image, frame_index=0),
                                                         Condition(video=video, frame_index=frame, strength=1.0)],
                           **kw, pipeline="one-stage", video_guidance=params(g), audio_guidance=params(g, "audio_"),
                           shift_tokens=18 + 12, seed=4, max_sequence_length=SEQ)
    dv = np.abs(ours.frames - ref_video[0]).max()
    da = np.abs(ours.audio - ref_audio[0].numpy()).max()
    assert ours.frames.shape == ref_video[0].shape and ours.audio.shape == tuple(ref_audio[0].shape)
    assert dv <= BUDGET and da <= BUDGET, f"max |d| video {dv:.2e}, audio {da:.2e} (budget {BUDGET})"
    assert np.abs(ref_video[0] - ref_video[0].mean()).max() > 0.05  # not flat: the check means something
