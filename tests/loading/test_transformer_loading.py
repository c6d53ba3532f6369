"""Loading the LTX-Video transformer from both checkpoint formats, strictly."""

import json

import pytest
import torch
from safetensors.torch import save_file

from ltxengine.config import ConfigError, TransformerConfig
from ltxengine.loading import CheckpointError, load_ltx_video, load_transformer
from ltxengine.presets import TINY_2B

from ..helpers import perturb_, preset_kwargs
from .formats import original_transformer_config, original_transformer_keys, save_diffusers_pipeline, save_single_file

diffusers = pytest.importorskip("diffusers")

CFG = preset_kwargs(TINY_2B, TransformerConfig())  # bench's --smoke LTX-Video transformer


@pytest.fixture(scope="module")
def ref():
    torch.manual_seed(0)
    model = diffusers.LTXVideoTransformer3DModel(**CFG).eval()
    perturb_(model, seed=2)
    return model


def single_file(tmp_path, ref, tensors=None, config=None, name="ltxv.safetensors"):
    tensors = original_transformer_keys(ref.state_dict()) if tensors is None else tensors
    config = {"transformer": original_transformer_config(CFG, True)} if config is None else config
    return save_single_file(tmp_path / name, tensors, config)


def assert_same_weights(model, sd):
    ours = model.state_dict()
    assert ours.keys() == sd.keys()
    for k, v in sd.items():
        assert torch.equal(ours[k], v.to(ours[k].dtype)), k


def test_diffusers_converter_agrees_with_test_writer(ref):
    """The test's original-format writer is the inverse of diffusers' single-file converter."""
    from diffusers.loaders.single_file_utils import convert_ltx_transformer_checkpoint_to_diffusers

    back = convert_ltx_transformer_checkpoint_to_diffusers(original_transformer_keys(ref.state_dict()))
    assert_same_weights_dicts(back, ref.state_dict())


def assert_same_weights_dicts(a, b):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_both_formats_load_identical_weights(tmp_path, ref):
    folder = save_diffusers_pipeline(tmp_path / "pipe", {"transformer": ref})
    from_folder = load_transformer(folder, dtype=torch.float32)
    from_component = load_transformer(folder / "transformer", dtype=torch.float32)
    ckpt = load_ltx_video(single_file(tmp_path, ref), dtype=torch.float32, components=("transformer",))
    for model in (from_folder, from_component, ckpt.transformer):
        assert_same_weights(model, ref.state_dict())
    assert ckpt.causal_temporal_positioning is True
    assert from_folder.config == ckpt.transformer.config


def test_streams_in_target_dtype_without_meta_leftovers(tmp_path, ref):
    model = load_transformer(single_file(tmp_path, ref), dtype=torch.bfloat16)
    tensors = list(model.parameters()) + list(model.buffers())
    assert all(t.dtype == torch.bfloat16 and t.device.type == "cpu" for t in tensors)
    assert_same_weights(model, {k: v.to(torch.bfloat16) for k, v in ref.state_dict().items()})


def test_sharded_diffusers_folder(tmp_path, ref):
    ref.save_pretrained(tmp_path / "transformer", max_shard_size="20KB")
    assert (tmp_path / "transformer" / "diffusion_pytorch_model.safetensors.index.json").exists()
    assert_same_weights(load_transformer(tmp_path / "transformer", dtype=torch.float32), ref.state_dict())


def test_missing_tensor_is_named(tmp_path, ref):
    tensors = original_transformer_keys(ref.state_dict())
    del tensors["model.diffusion_model.transformer_blocks.1.attn2.to_v.bias"]
    with pytest.raises(CheckpointError, match=r"missing.*'transformer_blocks\.1\.attn2\.to_v\.bias'"):
        load_transformer(single_file(tmp_path, ref, tensors), dtype=torch.float32)


def test_unused_tensor_is_named(tmp_path, ref):
    tensors = original_transformer_keys(ref.state_dict())
    tensors["model.diffusion_model.transformer_blocks.0.attn1.extra.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match=r"not used.*attn1\.extra\.weight"):
        load_transformer(single_file(tmp_path, ref, tensors), dtype=torch.float32)


def test_foreign_tensor_is_named(tmp_path, ref):
    tensors = original_transformer_keys(ref.state_dict())
    tensors["text_encoder.shared.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match=r"belong to no known component.*text_encoder\.shared\.weight"):
        load_transformer(single_file(tmp_path, ref, tensors), dtype=torch.float32)


def test_shape_mismatch_is_named(tmp_path, ref):
    tensors = original_transformer_keys(ref.state_dict())
    tensors["model.diffusion_model.proj_out.weight"] = torch.zeros(8, 15)
    with pytest.raises(CheckpointError, match=r"patchify_proj|proj_out\.weight.*shape \(8, 15\).*\(8, 16\)"):
        load_transformer(single_file(tmp_path, ref, tensors), dtype=torch.float32)


def test_unknown_config_option_in_header(tmp_path, ref):
    config = {"transformer": dict(original_transformer_config(CFG), frobnicate=3)}
    with pytest.raises(ConfigError, match=r"ltxv\.safetensors \[transformer\].*'frobnicate'"):
        load_transformer(single_file(tmp_path, ref, config=config), dtype=torch.float32)


def test_unsupported_config_value_in_header(tmp_path, ref):
    config = {"transformer": dict(original_transformer_config(CFG), standardization_norm="layer_norm")}
    with pytest.raises(ConfigError, match=r"'standardization_norm' must be 'rms_norm', got 'layer_norm'"):
        load_transformer(single_file(tmp_path, ref, config=config), dtype=torch.float32)


def test_unknown_option_in_diffusers_config(tmp_path, ref):
    ref.save_pretrained(tmp_path / "transformer")
    path = tmp_path / "transformer" / "config.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), use_magic=True)))
    with pytest.raises(ConfigError, match=r"config\.json: unknown config option 'use_magic'"):
        load_transformer(tmp_path / "transformer", dtype=torch.float32)


def test_header_without_config(tmp_path, ref):
    path = tmp_path / "bare.safetensors"
    save_file(original_transformer_keys(ref.state_dict()), str(path))
    with pytest.raises(CheckpointError, match=r"bare\.safetensors: no 'config' entry"):
        load_transformer(path, dtype=torch.float32)


def test_wrong_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"nowhere\.safetensors: no such file or folder"):
        load_transformer(tmp_path / "nowhere.safetensors")


def test_truncated_file(tmp_path, ref):
    path = single_file(tmp_path, ref)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"ltxv\.safetensors: not a readable safetensors file.*not fully covered"):
        load_transformer(path, dtype=torch.float32)


def test_corrupt_header(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"junk\.safetensors: not a readable safetensors file"):
        load_transformer(path, dtype=torch.float32)


def test_folder_without_weights(tmp_path, ref):
    ref.save_pretrained(tmp_path / "transformer")
    (tmp_path / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"transformer: no diffusion_pytorch_model\.safetensors"):
        load_transformer(tmp_path / "transformer", dtype=torch.float32)


def test_wrong_class_in_folder(tmp_path, ref):
    ref.save_pretrained(tmp_path / "transformer")
    path = tmp_path / "transformer" / "config.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), _class_name="FluxTransformer2DModel")))
    with pytest.raises(CheckpointError, match=r"_class_name must be 'LTXVideoTransformer3DModel'"):
        load_transformer(tmp_path / "transformer", dtype=torch.float32)


def test_bad_dtype_argument(tmp_path, ref):
    with pytest.raises(ValueError, match=r"dtype must be .* got torch\.int8"):
        load_transformer(single_file(tmp_path, ref), dtype=torch.int8)


def test_patchified_transformer_in_header_is_refused(tmp_path, ref):
    config = {"transformer": dict(original_transformer_config(CFG), patch_size=2)}
    with pytest.raises(ConfigError, match=r"'patch_size' must be 1, got 2"):
        load_transformer(single_file(tmp_path, ref, config=config), dtype=torch.float32)
