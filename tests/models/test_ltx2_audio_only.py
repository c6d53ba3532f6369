"""LTX-2's audio stream alone (models/ltx2_audio_only.py) against the full transformer and against
ltx-core's audio-only LTXModel, from the same random weights, fp32 on CPU.

* Ours vs our full model: without video there is no audio<->video attention, so the audio-only
  output must equal the full model's audio output under Skip.isolate() (any video input). The same
  modules in the same order: bit-equal.
* Ours vs ltx-core: ltx-core 1.0.0's ``LTXModel(model_type=AudioOnly)`` built with the arguments
  Lightricks' LTXAudioOnlyModelConfigurator passes (ltx-core @400fd31 model_configurator.py:146-196,
  transcribed in ltx2_audio_only_fixtures since 1.0.0 has no such configurator) and loaded strictly from the audio keys;
  called with video=None as t2a_one_stage calls it. Tolerance REL = 1e-5 of the output scale, as for
  the full model (tests/models/test_ltx2_transformer.py: fp32 re-ordering measures ~1e-6; a wiring error
  moves outputs by > 1e-2).
"""

from __future__ import annotations

import pytest
import torch

from ltxengine.models.ltx2_audio_only import AudioTextConnectors, LTX2AudioTransformer
from ltxengine.models.ltx2_transformer import Skip
from tests.helpers import assert_close_scaled
from tests.models.ltx2_audio_only_fixtures import audio_only, ltx_core_audio_only, run_audio
from tests.models.ltx2_transformer_fixtures import NA, REL, inputs, pair, run_ours
from tests.oracles import ltx_core

CONFIGS = ["split64", "interleaved32", "v23"]


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("stg", [False, True])
def test_equals_the_full_model_isolated(name, stg):
    _, ours, cfg = pair(name)
    model = audio_only(ours, cfg)
    x = inputs(cfg)
    last = cfg.num_layers - 1
    _, full = run_ours(ours, x, skip=Skip(a2v="all", v2a="all", audio_self_attn=[last] if stg else ()))
    got = run_audio(model, x, skip=Skip(audio_self_attn=[last]) if stg else None)
    assert torch.equal(got, full)
    _, crossed = run_ours(ours, x)  # control: with the audio<->video attention the audio differs
    assert (crossed - full).abs().max() > 1e-3


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("stg", [False, True])
def test_matches_ltx_core_audio_only(name, stg):
    _, ours, cfg = pair(name)
    model = audio_only(ours, cfg)
    core = ltx_core_audio_only(cfg, ours.state_dict())
    modality = ltx_core("model.transformer.modality")
    pert = ltx_core("guidance.perturbations")
    x = inputs(cfg)
    b = x["audio"].shape[0]
    audio = modality.Modality(latent=x["audio"], sigma=x["sigma_a"], timesteps=x["sigma_a"][:, None].expand(b, NA),
                              positions=model.audio_positions(b, NA), context=x["atext"], context_mask=x["mask"])
    last = cfg.num_layers - 1
    T = pert.PerturbationType
    sample = pert.PerturbationConfig([pert.Perturbation(T.SKIP_AUDIO_SELF_ATTN, [last])] if stg else [])
    with torch.no_grad():
        rv, ra = core(None, audio, pert.BatchedPerturbationConfig([sample] * b))
    assert rv is None
    got = run_audio(model, x, skip=Skip(audio_self_attn=[last]) if stg else None)
    assert_close_scaled(got, ra, REL, f"{name} stg={stg} audio-only vs ltx-core")


@pytest.mark.parametrize("name", ["split64", "v23"])
def test_view_of_a_full_model(name):
    """LTX2AudioTransformer.view shares the full model's audio modules (no copy) and computes what the
    audio-only model loaded from the same weights computes, bit for bit."""
    _, ours, cfg = pair(name)
    view = LTX2AudioTransformer.view(ours)
    assert set(view.state_dict()) == set(LTX2AudioTransformer(cfg).state_dict())
    full_params = {id(p) for p in ours.parameters()}
    assert all(id(p) in full_params for p in view.parameters())
    x = inputs(cfg)
    last = cfg.num_layers - 1
    assert torch.equal(run_audio(view, x, Skip(audio_self_attn=[last])),
                       run_audio(audio_only(ours, cfg), x, Skip(audio_self_attn=[last])))


def test_owns_exactly_the_audio_stream():
    """The audio-only model's state dict is the full model's keys that ``owns`` names, and those include
    no video or audio<->video tensor."""
    _, ours, cfg = pair("v23")
    full = set(ours.state_dict())
    audio = set(LTX2AudioTransformer(cfg).state_dict())
    assert audio == {k for k in full if LTX2AudioTransformer.owns(k)}
    assert not any(("a2v" in k or "v2a" in k or "video" in k) for k in audio)
    assert len(audio) < len(full) / 2


def test_audio_connectors_equal_the_full_connectors_audio():
    from tests.models import ltx2_text_fixtures as text_t
    _, connectors = text_t.make_pair()
    from ltxengine.config import parse_config
    from ltxengine.models.ltx2_text import TextConnectors, TextConnectorsConfig
    cfg = parse_config(TextConnectorsConfig, dict(connectors.config), "test")
    full = TextConnectors(cfg).eval()
    full.load_state_dict(connectors.state_dict(), strict=True)
    audio = AudioTextConnectors(cfg).eval()
    audio.load_state_dict({k: v for k, v in full.state_dict().items() if AudioTextConnectors.owns(k)}, strict=True)
    g = torch.Generator().manual_seed(0)
    states = [torch.randn(2, text_t.SEQ, cfg.caption_channels, generator=g) for _ in range(cfg.text_proj_in_factor)]
    mask = torch.ones(2, text_t.SEQ, dtype=torch.long)
    mask[0, : text_t.SEQ // 2] = 0
    with torch.no_grad():
        _, expected, m1 = full(states, mask)
        none, got, m2 = audio(states, mask)
    assert none is None and torch.equal(got, expected) and torch.equal(m1, m2)


def test_refuses_video_inputs():
    _, ours, cfg = pair("split64")
    model = audio_only(ours, cfg)
    x = inputs(cfg)
    ctx = model.prepare_context(None, x["atext"], x["mask"])
    rope = model.rope(None, model.audio_positions(2, NA))
    with pytest.raises(ValueError, match="video of zero tokens"):
        model(x["video"], x["audio"], video_sigma=x["sigma_v"], context=ctx, rope=rope)
    with pytest.raises(ValueError, match="no video stream"):
        model.rope(ours.video_positions(2, 1, 1, 1, 24.0), model.audio_positions(2, NA))
    with pytest.raises(ValueError, match="reads no video text"):
        model.prepare_context(x["vtext"], x["atext"])


@pytest.mark.parametrize("name", ["split64", "v23"])
def test_fused_residual_norm_sites_like_the_full_model(name):
    """The audio block takes LTX2Block's residual + adaLN helpers: with the fused op (here its
    reference, which is the unfused pair) 3 sites per block (self-attention residual + text query
    norm, text residual + FFN norm, FFN residual + the next block's first norm or the final norm),
    bit-equal to the unfused calls; the Triton row kernels within the model tolerance REL."""
    from ltxengine.ops import get_ops, reference, set_ops
    from tests.models.sites_fixtures import spied as _spied

    _, ours, cfg = pair(name)
    model = audio_only(ours, cfg)
    x = inputs(cfg)
    stg = Skip(audio_self_attn=[cfg.num_layers - 1])
    expected = run_audio(model, x, stg)
    ops, calls = _spied(residual_ada_norm=reference.residual_ada_norm)
    assert torch.equal(run_audio(set_ops(model, ops), x, stg), expected)
    assert calls == {"residual_ada_norm": 3 * cfg.num_layers}
    triton = get_ops("triton", "cpu")
    ops, calls = _spied(**{n: getattr(triton, n) for n in ("ada_norm", "gated_residual", "residual_ada_norm")})
    assert_close_scaled(run_audio(set_ops(model, ops), x, stg), expected, REL, f"{name} triton vs torch")
    assert calls["residual_ada_norm"] == 3 * cfg.num_layers
