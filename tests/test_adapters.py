"""LoRA adapters on both engines (ltxengine/adapters.py), with diffusers' names: load_lora_weights,
set_adapters, get_active_adapters, delete_adapters, unload_lora_weights, and generate(loras=...).

Oracles: diffusers' LTXPipeline with load_lora_weights + set_adapters (PEFT) for the frames, within
1e-4 in fp32 (the house's frame contract: tests/pipelines/test_parity.py); for the weights, the
formula the LoRA module documents, W + sum_i s_i (B_i A_i) in fp32 (exact here: the LoRA weights
are multiples of 1/8 and the strengths powers of two, so no term rounds), and bit-equality with
the checkpoint's weights after unloading.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ltxengine
from ltxengine import STOP, Engine, GenerationCancelled
from ltxengine.loading.lora import LoraError

from .loading.lora_fixtures import bits_equal, random_lora
from .pipelines import fixtures as fx

SIZE = dict(height=64, width=96, num_frames=9, num_inference_steps=2)
# the linear layers the test LoRAs touch (attention projections of every block, and one FFN layer)
MODULES = [f"transformer_blocks.{i}.{m}" for i in range(2) for m in ("attn1.to_q", "attn2.to_v", "ff.net.0.proj")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return fx.build_pipeline_folder(root, "tiny-095"), fx.build_upsampler_folder(root, "tiny-095")


@pytest.fixture()
def engine(folders):
    return Engine.from_pretrained(folders[0], device="cpu", dtype=torch.float32, latent_upsampler=folders[1])


def _lora(engine, seed: int, layout: str = "diffusers") -> dict:
    if layout == "diffusers":
        return random_lora(engine.transformer, rename=str, modules=MODULES, seed=seed, exact=True,
                           prefix="transformer.")
    return random_lora(engine.transformer, rename=str, modules=MODULES, seed=seed, exact=True)


def _delta(sd: dict, module: str) -> torch.Tensor:
    a = next(v for k, v in sd.items() if k.endswith(f"{module}.lora_A.weight"))
    b = next(v for k, v in sd.items() if k.endswith(f"{module}.lora_B.weight"))
    return b.float() @ a.float()


def _weights(engine) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in engine.transformer.state_dict().items()}


def _assert_fused(engine, base, terms):
    """The transformer's weights are the checkpoint's plus sum(strength * B A) of ``terms`` = [(sd, s)]."""
    now = engine.transformer.state_dict()
    for module in MODULES:
        key = f"{module}.weight"
        expected = base[key].float() + sum(s * _delta(sd, module) for sd, s in terms) if terms else base[key]
        assert torch.equal(now[key], expected.to(now[key].dtype)), key
    untouched = [k for k in base if k.rpartition(".")[0] not in MODULES]
    assert all(bits_equal(now[k], base[k]) for k in untouched)


# -- the calls ---------------------------------------------------------------------------------------

def test_load_set_switch_delete_unload(engine):
    base = _weights(engine)
    a, b = _lora(engine, 1), _lora(engine, 2, layout="lightricks")
    assert engine.load_lora_weights(a) == "default_0"
    assert engine.get_active_adapters() == ["default_0"]
    _assert_fused(engine, base, [(a, 1.0)])
    assert engine.load_lora_weights(b, adapter_name="b") == "b"  # loading adds to the active set
    assert engine.get_active_adapters() == ["default_0", "b"]
    _assert_fused(engine, base, [(a, 1.0), (b, 1.0)])
    engine.set_adapters(["default_0", "b"], adapter_weights=[0.5, 2.0])
    _assert_fused(engine, base, [(a, 0.5), (b, 2.0)])
    engine.set_adapters("b", 0.25)  # switching: the same weights as b loaded alone
    assert engine.get_active_adapters() == ["b"]
    _assert_fused(engine, base, [(b, 0.25)])
    engine.delete_adapters("b")
    assert engine.get_active_adapters() == [] and set(engine.adapters.loaded) == {"default_0"}
    _assert_fused(engine, base, [])
    engine.set_adapters(["default_0"])
    engine.unload_lora_weights()
    assert engine.get_active_adapters() == [] and engine.adapters.loaded == {}
    after = engine.transformer.state_dict()
    assert all(bits_equal(after[k], base[k]) for k in base)  # unload is bit-exact


def test_an_adapter_changes_the_video_and_unloading_restores_it(engine):
    before = engine.generate("a dog", seed=3, **SIZE).frames
    engine.load_lora_weights(_lora(engine, 1), adapter_name="a")
    with_lora = engine.generate("a dog", seed=3, **SIZE).frames
    assert np.abs(with_lora - before).max() > 1e-3  # the LoRA does something
    engine.unload_lora_weights()
    assert np.array_equal(engine.generate("a dog", seed=3, **SIZE).frames, before)


def test_a_calls_loras_apply_to_that_call_only(engine):
    base = _weights(engine)
    a, b = _lora(engine, 1), _lora(engine, 2)
    engine.load_lora_weights(a, adapter_name="a")
    engine.load_lora_weights(b, adapter_name="b")
    engine.set_adapters(["a"])
    once = engine.generate("a dog", seed=3, loras={"b": 0.5}, **SIZE).frames
    assert engine.get_active_adapters() == ["a"]
    _assert_fused(engine, base, [(a, 1.0)])  # the active set is back
    engine.set_adapters(["b"], [0.5])
    assert np.array_equal(engine.generate("a dog", seed=3, **SIZE).frames, once)
    none = engine.generate("a dog", seed=3, loras={}, **SIZE).frames
    engine.unload_lora_weights()
    assert np.array_equal(engine.generate("a dog", seed=3, **SIZE).frames, none)


def test_a_cancelled_or_failed_call_leaves_the_active_set(engine):
    base = _weights(engine)
    a, b = _lora(engine, 1), _lora(engine, 2)
    engine.load_lora_weights(a, adapter_name="a")
    engine.load_lora_weights(b, adapter_name="b")
    engine.set_adapters(["a"])
    with pytest.raises(GenerationCancelled):
        engine.generate("a dog", seed=3, loras={"b": 1.0}, callback=lambda *a, **k: STOP, **SIZE)
    _assert_fused(engine, base, [(a, 1.0)])

    def boom(*args, **kwargs):
        raise RuntimeError("callback failed")
    with pytest.raises(RuntimeError, match="callback failed"):
        engine.generate("a dog", seed=3, loras={"a": 0.5, "b": 1.0}, callback=boom, **SIZE)
    _assert_fused(engine, base, [(a, 1.0)])
    assert engine.get_active_adapters() == ["a"]


@pytest.mark.parametrize("call, match", [
    (lambda e: e.load_lora_weights({}, adapter_name="x"), "holds no tensors"),
    (lambda e: e.load_lora_weights(_lora(e, 5), adapter_name="a"), "an adapter named 'a' is already loaded"),
    (lambda e: e.load_lora_weights(_lora(e, 5), adapter_name=""), "adapter_name must be a non-empty str"),
    (lambda e: e.load_lora_weights({"transformer.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.ones(4, 7),
                                    "transformer.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.ones(64, 4)},
                                   adapter_name="x"), "transformer_blocks.0.attn1.to_q"),
    (lambda e: e.load_lora_weights({"transformer.no_such.lora_A.weight": torch.ones(4, 8),
                                    "transformer.no_such.lora_B.weight": torch.ones(8, 4)}, adapter_name="x"),
     "match no linear layer of the model"),
    (lambda e: e.set_adapters(["a", "nope"]), r"adapter_names: \['nope'\] are not loaded adapters"),
    (lambda e: e.set_adapters(["a"], [float("nan")]), r"adapter_weights\[0\] must be a finite number"),
    (lambda e: e.set_adapters(["a"], [1.0, 2.0]), "one weight per adapter name"),
    (lambda e: e.set_adapters(["a", "a"]), "names an adapter twice"),
    (lambda e: e.delete_adapters("nope"), "are not loaded adapters"),
    (lambda e: e.generate("a dog", loras={"nope": 1.0}, **SIZE), r"loras: \['nope'\] are not loaded adapters"),
    (lambda e: e.generate("a dog", loras={"a": True}, **SIZE), r"loras\['a'\] must be a finite number"),
    (lambda e: e.generate("a dog", loras=["a"], **SIZE), "loras must be a dict of adapter name -> strength"),
])
def test_bad_calls_are_refused_and_change_nothing(engine, call, match):
    a = _lora(engine, 1)
    engine.load_lora_weights(a, adapter_name="a")
    base = _weights(engine)
    with pytest.raises((ValueError, LoraError), match=match):
        call(engine)
    assert engine.get_active_adapters() == ["a"] and set(engine.adapters.loaded) == {"a"}
    after = engine.transformer.state_dict()
    assert all(bits_equal(after[k], base[k]) for k in base)


# -- against diffusers ---------------------------------------------------------------------------------

def test_two_adapters_match_diffusers_set_adapters(folders, engine):
    """LTXPipeline + load_lora_weights (a diffusers/PEFT-layout and a Lightricks/ComfyUI-layout file)
    + set_adapters with different weights: the same frames within 1e-4."""
    pytest.importorskip("peft")
    import diffusers
    a, b = _lora(engine, 1), _lora(engine, 2, layout="lightricks")
    kw = dict(prompt="a dog runs", negative_prompt="blurry", guidance_scale=3.0, **SIZE)
    pipe = diffusers.LTXPipeline.from_pretrained(str(folders[0]), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(a, adapter_name="a")
    pipe.load_lora_weights(b, adapter_name="b")
    pipe.set_adapters(["a", "b"], adapter_weights=[1.0, 0.5])
    theirs = pipe(output_type="pt", generator=torch.Generator().manual_seed(4), **kw).frames[0]
    theirs = theirs.permute(0, 2, 3, 1).float()
    engine.load_lora_weights(a, adapter_name="a")
    engine.load_lora_weights(b, adapter_name="b")
    engine.set_adapters(["a", "b"], adapter_weights=[1.0, 0.5])
    ours = torch.from_numpy(engine.generate(seed=4, **kw).frames)
    err = (ours - theirs).abs().max().item()
    assert err <= 1e-4, err
    plain = torch.from_numpy(engine.generate(seed=4, loras={}, **kw).frames)
    assert (plain - theirs).abs().max().item() > 1e-3  # the comparison sees the LoRAs


# -- LTX-2: user LoRAs and the stage-2 distilled LoRA ---------------------------------------------------

def test_ltx2_user_loras_compose_with_the_distilled_lora(tmp_path_factory):
    """Stage 1 runs with the user's LoRAs, stage 2 with the user's plus the distilled one (as
    ltx-pipelines' stage-2 ledger adds it to its loras list); afterwards only the user's remain."""
    pytest.importorskip("diffusers")
    from tests.pipelines.ltx2_fixtures import SEQ, build_pipeline, write_lora
    root = tmp_path_factory.mktemp("adapters-ltx2")
    folder = build_pipeline(root)[2]
    probe = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    distilled, d_dist = write_lora(root / "distilled.safetensors", probe.transformer, seed=7)
    user, d_user = write_lora(root / "user.safetensors", probe.transformer, seed=8)
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, distilled_lora=distilled)
    key = next(iter(d_user))
    base = engine.transformer.state_dict()[key].clone()
    engine.load_lora_weights(user, adapter_name="user")
    engine.set_adapters("user", 0.5)
    seen = {}

    def callback(stage, step, total, **kw):
        seen.setdefault(stage, engine.transformer.state_dict()[key].clone())
    engine.generate("a dog", seed=0, height=128, width=128, num_frames=9, num_inference_steps=2,
                    max_sequence_length=SEQ, callback=callback)
    user_only = (base + 0.5 * d_user[key]).to(base.dtype)
    assert torch.allclose(seen["denoise"], user_only, rtol=0, atol=1e-6)
    assert torch.allclose(seen["refine"], base + 0.5 * d_user[key] + d_dist[key], rtol=0, atol=1e-6)
    assert torch.equal(engine.transformer.state_dict()[key], seen["denoise"])  # back to the user's set
    assert isinstance(engine, ltxengine.LTX2Engine) and engine.get_active_adapters() == ["user"]


def test_ltx2_two_adapters_match_diffusers_set_adapters(tmp_path_factory):
    """LTX2Pipeline + load_lora_weights of two Lightricks-layout files + set_adapters with
    different weights, one stage with full guidance: the same video and audio within 1e-4."""
    pytest.importorskip("peft")
    from tests.pipelines.ltx2_fixtures import SEQ, build_pipeline, write_lora
    root = tmp_path_factory.mktemp("adapters-ltx2-parity")
    pipe, _, folder = build_pipeline(root)
    a, _ = write_lora(root / "a.safetensors", pipe.transformer, seed=3, scale=0.2)
    b, _ = write_lora(root / "b.safetensors", pipe.transformer, seed=4, scale=0.2)
    # diffusers' guidance keywords on both sides (the engine takes them too): CFG on, the rest off
    kw = dict(height=64, width=96, num_frames=9, frame_rate=24.0, num_inference_steps=3, guidance_scale=3.0,
              stg_scale=0.0, modality_scale=1.0, guidance_rescale=0.0, audio_guidance_scale=3.0, audio_stg_scale=0.0,
              audio_modality_scale=1.0, audio_guidance_rescale=0.0)
    pipe.load_lora_weights(str(a), adapter_name="a")
    pipe.load_lora_weights(str(b), adapter_name="b")
    pipe.set_adapters(["a", "b"], adapter_weights=[1.0, 0.5])
    with torch.no_grad():
        video, audio = pipe(prompt="a cat sits on the mat", negative_prompt="red car",
                            generator=torch.Generator().manual_seed(2), max_sequence_length=SEQ, output_type="np",
                            return_dict=False, **kw)
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    engine.load_lora_weights(a, adapter_name="a")
    engine.load_lora_weights(b, adapter_name="b")
    engine.set_adapters(["a", "b"], adapter_weights=[1.0, 0.5])
    ours = engine.generate("a cat sits on the mat", "red car", pipeline="one-stage",
                           shift_tokens=None, seed=2, max_sequence_length=SEQ, **kw)
    dv, da = np.abs(ours.frames - video[0]).max(), np.abs(ours.audio - audio[0].numpy()).max()
    assert dv <= 1e-4 and da <= 1e-4, (dv, da)
    plain = engine.generate("a cat sits on the mat", "red car", pipeline="one-stage",
                            shift_tokens=None, seed=2, max_sequence_length=SEQ, loras={}, **kw)
    assert np.abs(plain.frames - video[0]).max() > 1e-3  # the comparison sees the LoRAs


@pytest.mark.parametrize("fp8_lora", ["branch", "merge"])
def test_adapters_on_fp8_weights_follow_the_engines_fp8_lora_mode(folders, fp8_lora):
    """fp8 engines take adapters too: "branch" leaves the fp8 bits untouched (a forward hook adds
    the LoRA), "merge" requantizes; either way the LoRA changes the video and unloading gives the
    fp8 weights back bit for bit (LoraSet's fp8 modes are measured in tests/loading/test_lora_fp8.py)."""
    engine = Engine.from_pretrained(folders[0], device="cpu", dtype=torch.bfloat16, latent_upsampler=folders[1],
                                    quantization="fp8-cast", fp8_lora=fp8_lora)
    assert engine.quantization == "fp8-cast"
    before = {k: v.clone() for k, v in engine.transformer.state_dict().items()}
    plain = engine.generate("a dog", seed=3, **SIZE).frames
    engine.load_lora_weights(_lora(engine, 1), adapter_name="a")
    after_load = engine.transformer.state_dict()
    fp8_keys = [k for k, v in before.items() if v.dtype == torch.float8_e4m3fn]
    assert fp8_keys and all(bits_equal(after_load[k], before[k]) for k in fp8_keys) == (fp8_lora == "branch")
    assert np.abs(engine.generate("a dog", seed=3, **SIZE).frames - plain).max() > 1e-3
    engine.unload_lora_weights()
    after = engine.transformer.state_dict()
    assert all(bits_equal(after[k], before[k]) for k in before)
    assert np.array_equal(engine.generate("a dog", seed=3, **SIZE).frames, plain)
