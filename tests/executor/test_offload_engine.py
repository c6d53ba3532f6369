"""offload=("transformer",) and memory_budget from the engine and the CLI (engine.py, budget.py,
planning.py). On the CPU streamed blocks copy between host buffers, so a generation with them is
compared bit for bit with a resident one; the budget chooser is checked against the plans' own
accounting (weights per phase by hand: components, blocks, slots)."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
import torch

from ltxengine import Engine
from ltxengine.budget import MemoryChoice, candidates, choose, parse_budget
from ltxengine.executor.block_offload import slot_bytes
from ltxengine.executor.plan import InsufficientMemoryError, fmt_bytes, module_bytes
from tests.pipelines.fixtures import build_pipeline_folder

KW = dict(seed=3, height=64, width=96, num_frames=9, num_inference_steps=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_pipeline_folder(tmp_path_factory.mktemp("offload"), "tiny-095b")  # 3 blocks


@pytest.fixture(scope="module")
def resident(folder):
    return Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, quantization="fp8-cast")


def _lora(engine, seed=5) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, m in engine.transformer.named_modules():
        if name.startswith("transformer_blocks.") and hasattr(m, "weight") and getattr(m, "in_features", None):
            sd[f"transformer.{name}.lora_A.weight"] = torch.randn(2, m.in_features, generator=g) * 0.3
            sd[f"transformer.{name}.lora_B.weight"] = torch.randn(m.out_features, 2, generator=g) * 0.3
    return sd


def test_ltx_video_streamed_generation_equals_resident_with_fp8_and_a_lora(folder, resident):
    streamed = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, quantization="fp8-cast",
                                      offload=("transformer", "text_encoder_layers"), offload_group_size=1)
    assert streamed.block_offload.group_size == 1 and streamed.executor.mode == "eager"
    for engine in (resident, streamed):
        engine.load_lora_weights(_lora(resident), adapter_name="style")  # fp8 layers: "branch" factors
    try:
        a, b = resident.generate("a red car", **KW), streamed.generate("a red car", **KW)
    finally:
        for engine in (resident, streamed):
            engine.unload_lora_weights()
    assert torch.equal(a.latents, b.latents) and np.array_equal(a.frames, b.frames)
    assert streamed.block_offload.stats["max_resident"] == 2 and streamed.block_offload.resident == []
    assert streamed.block_offload.stats["loads"] == 3 * (1 + 1)  # 3 groups: the cross K/V, then the step
    assert all(p.device.type == "cpu" for p in streamed.transformer.transformer_blocks.parameters())
    text = streamed.residency.streamed["text_encoder"]  # T5's 2 blocks, one per group
    assert len(text.groups) == 2 and text.resident == []
    assert text.stats["loads"] == 2 * 2  # both blocks, for the prompt and the negative prompt (CFG)


def test_ltx2_streamed_generation_equals_resident(tmp_path_factory):
    pytest.importorskip("diffusers")
    from tests.pipelines.ltx2_fixtures import SEQ, build_pipeline
    path = build_pipeline(tmp_path_factory.mktemp("ltx2off"))[2]
    kw = dict(height=64, width=64, num_frames=9, num_inference_steps=2, max_sequence_length=SEQ, seed=4,
              pipeline="one-stage")
    a = Engine.from_pretrained(path, device="cpu", dtype=torch.float32).generate("a cat", **kw)
    engine = Engine.from_pretrained(path, device="cpu", dtype=torch.float32,
                                    offload=["transformer", "text_encoder_layers"], offload_group_size=1)
    b = engine.generate("a cat", **kw)
    assert torch.equal(a.latents, b.latents) and np.array_equal(a.audio, b.audio)
    assert engine.block_offload.stats["max_resident"] == min(2, len(engine.transformer.transformer_blocks))
    gemma = engine.residency.streamed["text_encoder"]  # the tiny Gemma's decoder layers, one per group
    assert gemma.stats["loads"] >= len(gemma.groups) > 1 and gemma.resident == []


def test_load_options_are_checked_before_loading():
    cases = {
        (("transformer",), None, None, "graphs"): "executor='graphs' cannot run with offload=('transformer',)",
        (("text_encoder",), 2, None, "auto"): "offload_group_size: blocks are streamed only with "
                                              "offload=('transformer',), got offload=('text_encoder',)",
        (("transformer",), 0, None, "auto"): "offload_group_size must be a positive int (blocks per streamed "
                                             "group), got 0",
        ((), None, "lots", "auto"): "memory_budget must be a positive size like '24GB', '20GiB' or a number of "
                                    "bytes, got 'lots'",
        ((), None, "0GB", "auto"): "memory_budget must be a positive size",
        (("text_encoder",), None, "24GB", "auto"): "give memory_budget or offload, not both",
        ((), None, "24GB", "graphs"): "use executor='auto' or 'eager' with it, got executor='graphs'",
        (("vae",), None, None, "auto"): "offload: components that can be offloaded are ('text_encoder', "
                                        "'latent_upsampler', 'vae_encoder', 'transformer_between_stages', "
                                        "'transformer', 'text_encoder_layers'), got ('vae',)",
        (("transformer_between_stages",), None, None, "graphs"): "executor='graphs' cannot run with "
                                                                 "offload=('transformer_between_stages',)",
    }
    for (offload, group, budget, executor), message in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            Engine.from_pretrained("/nonexistent", device="cpu", offload=offload, offload_group_size=group,
                                   memory_budget=budget, executor=executor)
    assert parse_budget("24GB") == 24 * 10 ** 9 and parse_budget("20 GiB") == 20 * 2 ** 30
    assert parse_budget("1.5gib") == 3 * 2 ** 29 and parse_budget(1000) == 1000


def test_group_size_beyond_the_blocks_is_refused(folder):
    with pytest.raises(ValueError, match=re.escape("offload_group_size must be an int in [1, 3] (the transformer's "
                                                   "block count), got 4")):
        Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, offload=("transformer",),
                               offload_group_size=4)


COMPS = ("text_encoder", "vae_encoder")  # no latent upsampler in this folder
AWAY = COMPS + ("transformer_between_stages",)
STREAMED = MemoryChoice(AWAY, True, 1)  # T5's 2 blocks in two slots would save nothing: no text-layer option


def test_budget_options_account_for_components_blocks_and_slots(resident):
    options = resident.plan_options("a", **KW)
    assert [c for c, _ in options] == [MemoryChoice((), False, None), MemoryChoice(COMPS, False, None),
                                       MemoryChoice(COMPS, True, None), MemoryChoice(AWAY, True, None), STREAMED]
    # groups of 2 of 3 blocks would keep 2 x 2 blocks in slots: more than resident, never offered
    assert [c for c in candidates(resident)] == [c for c, _ in options]
    phase = [{p.name: p for p in plan.phases} for _, plan in options]
    te, enc = module_bytes(resident.text_encoder.model), module_bytes(resident.vae.encoder)
    dit, blocks = module_bytes(resident.transformer), resident.transformer.transformer_blocks
    assert phase[0]["denoise"].weights_bytes - phase[1]["denoise"].weights_bytes == te + enc
    assert phase[0]["text"].weights_bytes - phase[1]["text"].weights_bytes == enc  # the encoder visits for text
    assert all(p.total_bytes == q.total_bytes for p, q in zip(options[1][1].phases, options[2][1].phases)
               if p.name != "decode")  # tiling changes the decode only
    # the DiT away while the text encoder runs, back for denoising and decoding
    assert phase[2]["text"].weights_bytes - phase[3]["text"].weights_bytes == dit
    assert phase[2]["denoise"].weights_bytes == phase[3]["denoise"].weights_bytes
    assert (phase[3]["denoise"].weights_bytes - phase[4]["denoise"].weights_bytes
            == module_bytes(*blocks) - slot_bytes(blocks, 1) > 0)
    assert "with transformer blocks streamed" not in str(options[0][1])
    assert "transformer blocks streamed in groups of 1" in str(options[4][1])


def test_budget_picks_the_first_option_that_fits_and_refuses_below_the_smallest(resident):
    bound = inspect.signature(resident.generate).bind("a", None, **KW)
    bound.apply_defaults()
    request = resident._request(dict(bound.arguments))
    peaks = {c: plan.peak_bytes for c, plan in resident.plan_options("a", **KW)}
    resident_peak, streamed_peak = peaks[MemoryChoice((), False, None)], peaks[STREAMED]
    assert resident_peak > peaks[MemoryChoice(COMPS, False, None)] and min(peaks.values()) == streamed_peak
    picks = {budget: choose(resident, request, budget)[0] for budget in (resident_peak, resident_peak - 1,
                                                                         streamed_peak)}
    assert picks[resident_peak] == MemoryChoice((), False, None)
    assert picks[resident_peak - 1].offload and picks[resident_peak - 1].group_size is None
    assert picks[streamed_peak] == STREAMED
    with pytest.raises(InsufficientMemoryError, match=re.escape(f"the smallest plan (offload={AWAY}, VAE tiling, "
                                                                f"transformer blocks streamed in groups of 1) peaks "
                                                                f"at {fmt_bytes(streamed_peak)}")):
        choose(resident, request, streamed_peak - 1)


def test_generate_under_a_budget_streams_the_blocks_it_chose(folder, resident, caplog):
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, quantization="fp8-cast",
                                    memory_budget=1)
    with pytest.raises(InsufficientMemoryError, match="no offload / tiling option fits 1 B"):
        engine.generate("a red car", **KW)
    # refused before any change; streaming since the load (the DiT exceeds 1 B: loading/placement.py)
    assert engine.block_offload.group_size == 2 and engine.memory_choice is None
    peaks = {c: plan.peak_bytes for c, plan in engine.plan_options("a red car", **KW)}  # cached by the refusal
    engine.memory_budget = peaks[STREAMED]
    planned = engine.plan("a red car", **KW)  # the plan of the option generate will pick
    assert planned.peak_bytes == peaks[STREAMED] and "streamed in groups of 1" in str(planned)
    with caplog.at_level("INFO", logger="ltxengine.budget"):
        out = engine.generate("a red car", **KW)
    assert engine.block_offload.group_size == 1 and engine.memory_choice.group_size == 1
    assert "transformer blocks streamed in groups of 1" in caplog.text
    assert torch.equal(out.latents, resident.generate("a red car", **KW).latents)


def test_a_budget_loads_the_text_encoder_to_the_host(folder, monkeypatch):
    """Gemma 3 12B (22 GiB) and the DiT must not both land on a small GPU before the budget chooses."""
    seen = {}
    family = type(Engine.from_pretrained(folder, device="cpu", dtype=torch.float32))
    real = family.load.__func__

    def load(cls, path, device, dtype, ops, **kw):
        seen.update(kw)
        return real(cls, path, device, dtype, ops, **kw)

    monkeypatch.setattr(family, "load", classmethod(load))
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, memory_budget="24GB")
    assert seen["offload"] == ("text_encoder",) and engine.memory_budget == 24 * 10 ** 9


def test_cli_offload_flags_reach_from_pretrained(folder, monkeypatch):
    from ltxengine.cli import main
    seen = {}

    class Stop(Exception):
        pass

    def fake_load(path, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(Engine, "from_pretrained", fake_load)
    with pytest.raises(Stop):
        main(["generate", "--model", str(folder), "--prompt", "p", "--offload", "transformer",
              "--offload-group-size", "3", "--memory-budget", "24GB"])
    assert (seen["offload"], seen["offload_group_size"], seen["memory_budget"]) == (("transformer",), 3, "24GB")
