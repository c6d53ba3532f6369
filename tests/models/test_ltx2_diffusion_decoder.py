"""LTX-2.5's diffusion video decoder against diffusers' LTX2VideoDiffusionDecoderModel (0.42.1, its
FlexAttention processor: the NATTEN-equivalent window diffusers ships for CPUs), same random weights,
fp32 on the CPU; our plain-torch neighbourhood attention against diffusers' flex block mask and a
brute-force per-query window; the released config on meta; strict loading of a diffusers folder.

Tolerance: REL = 1e-5 x max(1, |reference|), the budget of the other LTX-2 model tests: the same
linears, norms and RoPE in the same order; the attention differs only in summation order (ours
softmaxes over each query tile's key box, flex over the whole grid, both with the window masked).
Measured: ~1e-6 of the output scale. A wiring error (window not shifted at the borders, ghost frames
not cropped or not added, a modulation row swapped) moves outputs by > 1e-2 (the controls below).
"""

import dataclasses
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from ltxengine.config import ConfigError, parse_config
from ltxengine.loading import ltx2 as ltx2_loading
from ltxengine.loading.safetensors_io import CheckpointError
from ltxengine.models.ltx2_diffusion_decoder import (LTX2DiffusionDecoder, LTX2DiffusionDecoderConfig,
                                                     count_parameters, neighborhood_attention)

from ..helpers import assert_close_scaled
from .ltx2_diffusion_decoder_fixtures import CASES, REL, RELEASE, latent_shape, make_pair

diffusers = pytest.importorskip("diffusers")
from diffusers import LTX2VideoDiffusionDecoderModel  # noqa: E402
from diffusers.models.autoencoders import ltx2_diffusion_decoder as dd  # noqa: E402

# flex_attention without torch.compile warns once that it materializes the scores (what a CPU oracle wants)
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile:UserWarning")

def _decode_both(name, seed=5):
    ref, ours = make_pair(name)
    z = torch.randn(latent_shape(name), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref.decode(z, generator=torch.Generator().manual_seed(seed)).sample
        got = ours.decode(z, generator=torch.Generator().manual_seed(seed))
    return got, expected


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_equals_diffusers(name):
    ref, ours = make_pair(name)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert all(a.shape == b.shape for a, b in zip(ours.state_dict().values(), ref.state_dict().values()))


@pytest.mark.parametrize("name", list(CASES))
def test_decode_matches_diffusers(name):
    got, expected = _decode_both(name)
    b, _, t, h, w = latent_shape(name)
    cfg = make_pair(name)[1].config
    ratio_t, ratio_s = cfg.temporal_compression_ratio, cfg.spatial_compression_ratio
    assert got.shape == (b, 3, (t - 1) * ratio_t + 1, h * ratio_s, w * ratio_s)
    err = assert_close_scaled(got, expected, REL, name)
    print(f"{name}: max err {err:.2e} of scale {expected.abs().max():.2f}")


def test_denormalize_is_diffusers_pipeline_step():
    """``denormalize`` is the decode pipeline's step (statistics and scaling factor from the model)."""
    ref, ours = make_pair("v_2_steps")
    z = torch.randn(latent_shape("v_2_steps"))
    stats = ref.latents_mean, ref.latents_std, ref.config.scaling_factor
    expected = diffusers.LTX2VideoDiffusionDecodePipeline._denormalize_latents(z, *stats)
    assert torch.equal(ours.denormalize(z), expected)


# -- neighbourhood attention ---------------------------------------------------------------------

def _qkv(grid, heads=2, d=8, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *grid, heads, d, generator=g) for _ in range(3)]


def _flex(q, k, v, kernel):
    """diffusers' path: its BlockMask over the flattened grid, flex_attention with scale 1."""
    from torch.nn.attention.flex_attention import flex_attention
    b, t, h, w, heads, d = q.shape
    mask = dd._neighborhood_block_mask(t, h, w, kernel, q.device)
    flat = [x.reshape(b, t * h * w, heads, d).transpose(1, 2) for x in (q, k, v)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = flex_attention(*flat, block_mask=mask, scale=1.0)
    return out.transpose(1, 2).reshape(b, t, h, w, heads * d)


def _brute_force(q, k, v, kernel, shift_inward=True):
    """Per query: its window (centred; shifted inward at borders as NATTEN, or truncated), softmax."""
    b, *grid, heads, d = q.shape
    out = torch.empty(b, *grid, heads, d)
    for i in range(grid[0]):
        for j in range(grid[1]):
            for m in range(grid[2]):
                box = []
                for pos, n, kk in zip((i, j, m), grid, kernel):
                    lo = min(max(pos - kk // 2, 0), n - kk) if shift_inward else max(pos - kk // 2, 0)
                    box.append(slice(lo, min(lo + kk, n) if not shift_inward else lo + kk))
                keys, vals = (x[:, box[0], box[1], box[2]].reshape(b, -1, heads, d) for x in (k, v))
                scores = torch.einsum("bhd,bnhd->bhn", q[:, i, j, m], keys).softmax(-1)
                out[:, i, j, m] = torch.einsum("bhn,bnhd->bhd", scores, vals)
    return out.flatten(-2)


@pytest.mark.parametrize("grid,kernel", [((5, 6, 7), (3, 3, 5)), ((4, 4, 4), (3, 3, 3)), ((3, 5, 9), (3, 5, 3)),
                                         ((6, 3, 2), (1, 3, 1))])
def test_neighborhood_attention_is_natten_window(grid, kernel):
    """Ours, with any query tiling, equals diffusers' flex mask and a per-query brute force."""
    q, k, v = _qkv(grid)
    flex, brute = _flex(q, k, v, kernel), _brute_force(q, k, v, kernel)
    assert_close_scaled(flex, brute, 1e-6, "flex vs brute force")
    for tile in (None, (1, 1, 1), (2, 3, 4), grid):
        got = neighborhood_attention(q, k, v, kernel, query_tile=tile)
        assert_close_scaled(got, flex, 1e-6, f"tile {tile}")


def test_neighborhood_attention_controls():
    """The check can fail: a window truncated at the borders instead of shifted differs; the centre
    of the grid (no border in reach) is the same either way."""
    q, k, v = _qkv((5, 7, 7))
    got, truncated = neighborhood_attention(q, k, v, (3, 3, 3)), _brute_force(q, k, v, (3, 3, 3), False)
    assert (got - truncated).abs().max() > 1e-2
    assert_close_scaled(got[:, 1:-1, 1:-1, 1:-1], truncated[:, 1:-1, 1:-1, 1:-1], 1e-6, "interior")


def test_grid_smaller_than_kernel_is_refused():
    q, k, v = _qkv((2, 5, 5))
    with pytest.raises(ValueError, match=r"at least its kernel size; got \(2, 5, 5\) with kernel \(3, 3, 3\)"):
        neighborhood_attention(q, k, v, (3, 3, 3))


def test_controls_ghost_frames_and_modulation_rows():
    """Without the ghost frames, or with the MLP reading the attention's modulation rows, the
    decode moves by far more than the budget."""
    _, ours = make_pair("x0_3_steps")
    z = torch.randn(1, 8, 3, 3, 3)  # 3 latent frames: stage 1's kernel_t 3 fits without the ghosts
    with torch.no_grad():
        base = ours.decode(z, generator=torch.Generator().manual_seed(5))
        ours.trailing_pad = 0
        try:
            no_ghost = ours.decode(z, generator=torch.Generator().manual_seed(5))
        finally:
            ours.trailing_pad = 2
        table = ours.decoder.diff_blocks[0].scale_shift_table
        saved = table.detach().clone()
        table.data[[3, 4]] = saved[[0, 1]]
        try:
            swapped = ours.decode(z, generator=torch.Generator().manual_seed(5))
        finally:
            table.data.copy_(saved)
    assert (no_ghost - base).abs().max() > 1e-2
    assert (swapped - base).abs().max() > 1e-2


# -- configs -------------------------------------------------------------------------------------

def test_release_config_is_diffusers_default_and_builds_on_meta():
    """The released config (diffusers' class defaults, which its converter writes for LTX-2.5's
    ltx-2.5-video-vae): 417,133,616 parameters, the count diffusers' class has on meta."""
    with torch.device("meta"):
        theirs = LTX2VideoDiffusionDecoderModel()
    defaults = {k: v for k, v in theirs.config.items() if not k.startswith("_")}
    assert parse_config(LTX2DiffusionDecoderConfig, defaults, "diffusers") == LTX2DiffusionDecoderConfig()
    assert count_parameters(LTX2DiffusionDecoderConfig()) == 417_133_616
    assert sum(p.numel() for p in theirs.parameters()) == 417_133_616


@pytest.mark.parametrize("change,match", [
    (dict(decoder_stage_channels=(128, 64, 32, 32, 32)), "entry 4 must be entry 3 / "),
    (dict(decoder_stage_depths=(1, 1, 1, 1)), "'decoder_stage_depths' needs 5 entries"),
    (dict(decoder_stage_kernels=((3, 3, 3),) * 3), "'decoder_stage_kernels' needs 4 entries"),
    (dict(decoder_head_dim=12), "multiple of 8"),
    (dict(decoder_head_dim=32), "multiples of decoder_head_dim 32"),
    (dict(decoder_model_output_type="eps"), "must be 'x0' or 'v', got 'eps'"),
    (dict(spatial_compression_ratio=16), "'spatial_compression_ratio' must be the upsamples' H and W stride"),
    (dict(temporal_compression_ratio=4), "'temporal_compression_ratio' must be the upsamples' T stride 8"),
    (dict(decoder_num_inference_steps=0), "'decoder_num_inference_steps' must be a positive int"),
    (dict(decoder_enable_tiling=True), "unknown config option 'decoder_enable_tiling'"),
])
def test_config_errors_are_named(change, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(LTX2DiffusionDecoderConfig, dict(RELEASE, **change), "cfg.json")


def test_num_inference_steps_is_checked():
    _, ours = make_pair("x0_3_steps")
    with pytest.raises(ValueError, match="num_inference_steps must be a positive int, got 1.5"):
        ours.decode(torch.randn(latent_shape("x0_3_steps")), num_inference_steps=1.5)


# -- loading -------------------------------------------------------------------------------------

def test_diffusers_folder_loads_strictly(tmp_path):
    """save_pretrained's folder through load_ltx2_component and as a pipeline folder's optional
    component (never loaded by default); a missing or extra tensor, another class, a single file
    are refused by name."""
    ref, ours = make_pair("variant")
    ref.save_pretrained(tmp_path / "diffusion_decoder")
    loaded = ltx2_loading.load_ltx2_component(tmp_path / "diffusion_decoder", "diffusion_decoder",
                                              dtype=torch.float32)
    assert isinstance(loaded, LTX2DiffusionDecoder) and loaded.config == ours.config
    a, b = loaded.state_dict(), ours.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    (tmp_path / "model_index.json").write_text(json.dumps(
        {"_class_name": "LTX2Pipeline", "diffusion_decoder": ["diffusers", "LTX2VideoDiffusionDecoderModel"]}))
    ckpt = ltx2_loading.load_ltx2(tmp_path, dtype=torch.float32, components=("diffusion_decoder",))
    assert isinstance(ckpt.diffusion_decoder, LTX2DiffusionDecoder) and ckpt.vae is None
    assert "diffusion_decoder" not in ltx2_loading.COMPONENTS

    weights = tmp_path / "diffusion_decoder" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    save_file({k: v for k, v in tensors.items() if k != "latents_std"}, weights)
    with pytest.raises(CheckpointError, match="latents_std"):
        ltx2_loading.load_ltx2_component(tmp_path / "diffusion_decoder", "diffusion_decoder")
    save_file(dict(tensors, extra=torch.zeros(2)), weights)
    with pytest.raises(CheckpointError, match="'extra'"):
        ltx2_loading.load_ltx2_component(tmp_path / "diffusion_decoder", "diffusion_decoder")

    config = tmp_path / "diffusion_decoder" / "config.json"
    config.write_text(json.dumps(dict(json.loads(config.read_text()), _class_name="AutoencoderKLLTX2Video")))
    with pytest.raises(CheckpointError, match="_class_name must be 'LTX2VideoDiffusionDecoderModel'"):
        ltx2_loading.load_ltx2_component(tmp_path / "diffusion_decoder", "diffusion_decoder")

    single = tmp_path / "ltx-2.5-video-vae.safetensors"
    save_file({"x": torch.zeros(1)}, str(single))
    with pytest.raises(CheckpointError, match="the diffusion_decoder loads from a diffusers folder only"):
        ltx2_loading.load_ltx2(single, components=("diffusion_decoder",))
    with pytest.raises(ValueError, match="components must be a non-empty subset of .*'diffusion_decoder'"):
        ltx2_loading.load_ltx2(tmp_path, components=("decoder",))


def test_loaded_bf16_is_within_twice_diffusers_bf16_error(tmp_path):
    """The folder loaded in bf16 (what the engine runs), against the fp32 model with the same noise,
    errs at most twice as much as diffusers' model cast to bf16 does, plus a 1e-3 floor (the house's
    low-precision budget; measured ~1x)."""
    ref, _ = make_pair("x0_3_steps")
    ref.save_pretrained(tmp_path / "diffusion_decoder")
    ours = ltx2_loading.load_ltx2_component(tmp_path / "diffusion_decoder", "diffusion_decoder")
    theirs = LTX2VideoDiffusionDecoderModel.from_pretrained(tmp_path / "diffusion_decoder").eval()
    z = torch.randn(latent_shape("x0_3_steps")).to(torch.bfloat16)
    with torch.no_grad():
        theirs.to(torch.bfloat16)
        expected = theirs.decode(z, generator=torch.Generator().manual_seed(5)).sample
        got = ours.decode(z, generator=torch.Generator().manual_seed(5))
        # fp32 on the same noise (CPU randn differs per dtype: redraw the bf16 noise, run fp32 from it)
        noise = torch.randn(got.shape, generator=torch.Generator().manual_seed(5), dtype=torch.bfloat16)
        context = ref.decoder.forward_stage_4(ref.decoder.forward_stages_1_to_3(z.float()))
        fp32 = ref.decoder.denoise(context, noise.float(), 3)
    assert got.dtype == torch.bfloat16
    budget = (expected.float() - fp32).abs().max().item()
    err = (got.float() - fp32).abs().max().item()
    print(f"bf16: ours {err:.2e}, diffusers {budget:.2e} against fp32 (scale {fp32.abs().max():.2f})")
    assert err <= 2 * budget + 1e-3 * max(1.0, fp32.abs().max().item())


def test_dataclass_fields_follow_diffusers_arguments():
    """Every config field is an argument of diffusers' class (the folder's config.json keys)."""
    import inspect
    params = set(inspect.signature(LTX2VideoDiffusionDecoderModel.__init__).parameters) - {"self"}
    assert {f.name for f in dataclasses.fields(LTX2DiffusionDecoderConfig)} == params
