"""generate(decoder="diffusion"): LTX-2.5's diffusion video decoder at the end of a generation, against
diffusers 0.42.1's LTX2VideoDiffusionDecodePipeline, fp32 on the CPU, same seed.

* Given latents: ``diffusion_frames`` = the decode pipeline (denormalize=True, with and without the
  pipeline's ``vae``, whose statistics win) on the same latents and generator.
* End to end: the tiny LTX-2 folder (tests/pipelines/ltx2_fixtures.py) with a ``diffusion_decoder/``
  component; engine.generate(decoder="diffusion") = LTX2Pipeline(output_type="latent") then the decode
  pipeline (denormalize=False) with the same generator, which the decoder's noise continues.

Budget 1e-4 absolute on frames in [0, 1] (the LTX-2 parity budget, test_ltx2_parity.py); the decoder
alone is ~1e-6 (tests/models/test_ltx2_diffusion_decoder.py). The conv decoder stays the default.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ltxengine import Engine
from ltxengine.loading import CheckpointError
from ltxengine.ltx2.diffusion_decode import diffusion_frames, load_optional_decoder, stage_grids
from ltxengine.models.video_vae import TilingConfig
from ltxengine.ops import TORCH_OPS
from tests.pipelines.ltx2_fixtures import SEQ, build_pipeline

diffusers = pytest.importorskip("diffusers")
from diffusers import LTX2VideoDiffusionDecodePipeline, LTX2VideoDiffusionDecoderModel  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile:UserWarning")

BUDGET = 1e-4
PROMPT, NEGATIVE = "a cat sits on the mat", "red car"
NO_GUIDANCE = dict(guidance_scale=1.0, stg_scale=0.0, modality_scale=1.0, guidance_rescale=0.0,
                   audio_guidance_scale=1.0, audio_stg_scale=0.0, audio_modality_scale=1.0, audio_guidance_rescale=0.0)
# The release's strides and patch (32x spatial, 8x temporal compression: the tiny VAE's), a 3 x 1 x 3
# stage-1 window (the tiny clips' latents are 2-3 high), 8 latent channels as the tiny DiT
DECODER = dict(latent_channels=8, decoder_head_dim=8, decoder_stage_channels=(32, 16, 8, 8, 8),
               decoder_stage_depths=(1, 1, 1, 1, 1), decoder_stage_kernels=((3, 1, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
               decoder_upsample_channel_reductions=(2, 2, 1, 1), decoder_stage5_kernel=(3, 3, 3), decoder_t_emb_dim=16)


def _decoder(seed=11):
    torch.manual_seed(0)
    model = LTX2VideoDiffusionDecoderModel(**DECODER).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.parameters():
            t.add_(torch.randn(t.shape, generator=g) * 0.1)
        model.latents_mean.copy_(torch.randn(8, generator=g) * 0.3)
        model.latents_std.copy_(torch.rand(8, generator=g) + 0.5)
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pipe, _, folder = build_pipeline(tmp_path_factory.mktemp("ltx2dd"))
    decoder = _decoder()
    decoder.save_pretrained(folder / "diffusion_decoder")
    index = json.loads((folder / "model_index.json").read_text())
    index["diffusion_decoder"] = ["diffusers", "LTX2VideoDiffusionDecoderModel"]
    (folder / "model_index.json").write_text(json.dumps(index))
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    return pipe, decoder, folder, engine


def _decode_pipeline(decoder, vae=None):
    return LTX2VideoDiffusionDecodePipeline(diffusion_decoder=decoder, scheduler=None, vae=vae)


def _frames(video):  # the pipeline's "pt" (B, F, 3, H, W) -> ours (F, H, W, 3)
    return video[0].permute(0, 2, 3, 1).numpy()


def test_given_latents_match_the_decode_pipeline(setup):
    """Without the pipeline's vae the decoder's statistics denormalize, with it the VAE's (they differ
    here, and so do the two decodes)."""
    pipe, decoder, _, engine = setup
    latents = torch.randn(1, 8, 3, 2, 3, generator=torch.Generator().manual_seed(4))
    results = []
    for vae, ours_vae in ((None, None), (pipe.vae, engine.vae)):
        with torch.no_grad():
            expected = _frames(_decode_pipeline(decoder, vae)(latents, generator=torch.Generator().manual_seed(6),
                                                              output_type="pt", return_dict=False)[0])
            got = diffusion_frames(engine.diffusion_decoder, latents, torch.Generator().manual_seed(6), ours_vae)
        err = np.abs(got.numpy() - expected).max()
        assert got.shape == (17, 64, 96, 3) and err <= BUDGET, f"vae={vae is not None}: max |d| {err:.2e}"
        assert np.abs(expected - expected.mean()).max() > 0.05  # not flat
        results.append(expected)
        print(f"given latents (vae={vae is not None}): max |d| {err:.2e}")
    assert np.abs(results[0] - results[1]).max() > 0.05


def test_generate_with_the_diffusion_decoder_matches_diffusers(setup):
    """One-stage text-to-video, unguided for speed: LTX2Pipeline's latents, then the decode pipeline
    on the same generator; the conv decoder (the default) gives other frames."""
    pipe, decoder, _, engine = setup
    kw = dict(height=64, width=96, num_frames=17, frame_rate=24.0, num_inference_steps=2, **NO_GUIDANCE)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        latents = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, generator=g, max_sequence_length=SEQ,
                       output_type="latent", return_dict=False, **kw)[0]
        video = _decode_pipeline(decoder)(latents, generator=g, output_type="pt", denormalize=False,
                                          return_dict=False)[0]
    ours = engine.generate(PROMPT, NEGATIVE, **kw, pipeline="one-stage", shift_tokens=None, seed=3,
                           max_sequence_length=SEQ, decoder="diffusion")
    err = np.abs(ours.frames - _frames(video)).max()
    assert ours.frames.shape == _frames(video).shape and err <= BUDGET, f"max |d| {err:.2e}"
    conv = engine.generate(PROMPT, NEGATIVE, **kw, pipeline="one-stage", shift_tokens=None, seed=3,
                           max_sequence_length=SEQ)
    assert np.abs(conv.frames - ours.frames).max() > 0.05
    assert np.array_equal(conv.audio, ours.audio)
    print(f"generate(decoder='diffusion'): max |d| {err:.2e}")


def test_tiled_decode_matches_the_decode_pipeline_with_tiling(setup):
    """vae_tiling tiles the diffusion decoder as diffusers' enable_tiling, on the latents of a
    generation: two temporal tiles here (spatial tiles this small fail the conv VAE's tiling check,
    which the request applies to every vae_tiling; the model tests tile space)."""
    pipe, decoder, _, engine = setup
    tiling = TilingConfig(96, 96, 16, 96, 96, 8)
    kw = dict(height=64, width=96, num_frames=17, frame_rate=24.0, num_inference_steps=2, **NO_GUIDANCE)
    g = torch.Generator().manual_seed(4)
    decoder.enable_tiling(**{f: getattr(tiling, f) for f in tiling.__dataclass_fields__})
    try:
        with torch.no_grad():
            latents = pipe(prompt=PROMPT, generator=g, max_sequence_length=SEQ, output_type="latent",
                           return_dict=False, **kw)[0]
            video = _decode_pipeline(decoder)(latents, generator=g, output_type="pt", denormalize=False,
                                              return_dict=False)[0]
    finally:
        decoder.disable_tiling()
    ours = engine.generate(PROMPT, **kw, pipeline="one-stage", shift_tokens=None, seed=4, max_sequence_length=SEQ,
                           decoder="diffusion", vae_tiling=tiling)
    whole = engine.generate(PROMPT, **kw, pipeline="one-stage", shift_tokens=None, seed=4, max_sequence_length=SEQ,
                            decoder="diffusion")
    err = np.abs(ours.frames - _frames(video)).max()
    assert err <= BUDGET, f"max |d| {err:.2e}"
    assert np.abs(ours.frames - whole.frames).max() > 1e-3  # tiles were used
    print(f"generate(decoder='diffusion', vae_tiling=...): max |d| {err:.2e}")


def test_stage_grids_are_the_decoders():
    """The request's size check reads the grids each stage really attends over."""
    from ltxengine.config import parse_config
    from ltxengine.models.ltx2_diffusion_decoder import LTX2DiffusionDecoder, LTX2DiffusionDecoderConfig
    model = LTX2DiffusionDecoder(parse_config(LTX2DiffusionDecoderConfig, DECODER, "test")).eval()
    seen = []
    for blocks in list(model.decoder.det_stages) + [model.decoder.diff_blocks]:
        blocks[0].attn.register_forward_pre_hook(lambda m, args: seen.append((tuple(args[0].shape[1:4]), m.kernel)))
    with torch.no_grad():
        model.decode(torch.randn(1, 8, 3, 2, 3))
    assert [(g, k) for _, g, k in stage_grids(model.config, (3, 2, 3))] == seen


@pytest.mark.parametrize("kw,match", [
    (dict(decoder="vae"), r"decoder must be one of \('conv', 'diffusion'\) or None \(the conv decoder\), got 'vae'"),
    (dict(decoder="diffusion", width=64), r"height=64, width=64 give stage 1 of the decoder a \(T, H, W\) grid "
                                          r"\(5, 2, 2\), smaller than its attention window \(3, 1, 3\)"),
    (dict(decoder="diffusion", decode_timestep=0.05), "decode_timestep configures the conv decoder"),
    (dict(decoder="diffusion", output_type="latent"), "output_type='latent' skips"),
])
def test_bad_decoder_arguments_are_named(setup, kw, match):
    engine = setup[3]
    args = dict(dict(height=64, width=96, num_frames=17, pipeline="one-stage"), **kw)
    with pytest.raises(ValueError, match=match):
        engine.generate(PROMPT, **args)


def test_no_diffusion_decoder_is_named(setup, tmp_path):
    engine = setup[3]
    saved, engine.diffusion_decoder = engine.diffusion_decoder, None
    try:
        with pytest.raises(ValueError, match="decoder='diffusion' needs LTX-2.5's diffusion video decoder"):
            engine.generate(PROMPT, height=64, width=96, num_frames=17, pipeline="one-stage", decoder="diffusion")
    finally:
        engine.diffusion_decoder = saved
    other = tmp_path / "other"
    other.mkdir()
    LTX2VideoDiffusionDecoderModel(**dict(DECODER, latent_channels=4)).save_pretrained(other / "diffusion_decoder")
    (other / "model_index.json").write_text(json.dumps({"diffusion_decoder": ["diffusers", "x"]}))
    with pytest.raises(CheckpointError, match=r"\(latent channels, spatial, temporal compression\) \(4, 32, 8\) "
                                              r"differ from the VAE's \(8, 32, 8\)"):
        load_optional_decoder(other, "cpu", torch.float32, TORCH_OPS, engine.vae)
