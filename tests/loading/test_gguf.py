"""GGUF transformers (issue 23): the reader (written from the spec) against files the ``gguf``
package writes, loading kept quantized, generation equal bit for bit (the latents; the decoded
frames up to the CPU convs' alignment noise) to the same weights dequantized into safetensors, and
every format error named.

The oracle of "the same weights" is ``gguf.quants.dequantize`` of the file's blocks, saved as a
diffusers folder: both engines then run the same kernels (fp32, CPU, kernels='torch') on the same
values, so their frames must be identical."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from ltxengine import Engine
from ltxengine.loading import CheckpointError
from ltxengine.loading.gguf import GGUFFile
from ltxengine.quant.gguf_linear import GGUFLinear
from tests.loading.gguf_fixtures import (Q, dequantized_folder, encode, ltx_video_name, transformer_state_dict,
                                         write_gguf)
from tests.pipelines.fixtures import build_pipeline_folder

gguf = pytest.importorskip("gguf")
pytest.importorskip("diffusers")

TINY = dict(height=64, width=96, num_frames=9, num_inference_steps=2, seed=0)
PROMPT = "a red car drives through the park"


def assert_decoded_alike(a, b) -> None:
    """The decoders (the same weights, loaded by both engines from the same files) give equal outputs
    up to ~2e-6: CPU conv kernels depend on buffer alignment, which differs between two loads (see
    tests/pipelines/test_single_file.py); 1e-5 is far below any wrong weight."""
    assert a.shape == b.shape and np.abs(np.asarray(a) - np.asarray(b)).max() <= 1e-5


@pytest.fixture(scope="module")
def ltxv(tmp_path_factory):
    """(base diffusers folder, its transformer as a GGUF, the dequantized-weights folder, entries)."""
    root = tmp_path_factory.mktemp("gguf")
    base = build_pipeline_folder(root, "tiny-095")
    entries, dequantized = encode(transformer_state_dict(base), ltx_video_name)
    path = write_gguf(root / "ltxv-tiny-mixed.gguf", entries)
    return base, path, dequantized_folder(base, root, dequantized), entries


def test_reader_agrees_with_the_gguf_package(ltxv):
    _, path, _, entries = ltxv
    ours, theirs = GGUFFile(path), gguf.GGUFReader(str(path))
    assert ours.version == 3 and ours.metadata["general.architecture"] == "ltxv"
    assert list(ours.tensors) == [t.name for t in theirs.tensors]
    for t in theirs.tensors:
        mine = ours.tensors[t.name]
        assert mine.shape == tuple(int(d) for d in reversed(t.shape)) and mine.type.id == int(t.tensor_type)
        assert mine.start == int(t.data_offset) and mine.nbytes == int(t.n_bytes)
        assert torch.equal(ours.raw(t.name).flatten(), torch.from_numpy(np.array(t.data).view(np.uint8)).flatten())
    kinds = {q for _, _, q in entries}
    assert {Q.Q8_0, Q.Q4_0, Q.F16, Q.F32} <= kinds and kinds & {Q.Q6_K, Q.Q5_K, Q.Q4_K, Q.Q3_K}


@pytest.fixture(scope="module")
def engines(ltxv):
    """(the engine of the GGUF, the engine of its dequantized weights)."""
    base, path, reference, _ = ltxv
    opts = dict(device="cpu", dtype=torch.float32, kernels="torch")
    return Engine.from_pretrained(path, components=base, **opts), Engine.from_pretrained(reference, **opts)


def test_ltx_video_gguf_generates_what_its_dequantized_weights_generate(ltxv, engines):
    ours, reference = engines
    quantized = [m for m in ours.transformer.modules() if isinstance(m, GGUFLinear)]
    assert quantized and all(m.weight.dtype == torch.uint8 for m in quantized)
    assert {m.gguf_type.name for m in quantized} >= {"Q8_0", "Q4_0"}
    assert ours.quantization == "gguf"
    # the memory plan sees the blocks: the GGUF engine's weights are smaller, so is its planned peak
    assert ours.plan(PROMPT, **TINY).peak_bytes < reference.plan(PROMPT, **TINY).peak_bytes
    a, b = ours.generate(PROMPT, **TINY), reference.generate(PROMPT, **TINY)
    assert torch.equal(a.latents, b.latents)  # the denoising: same kernels on the same values
    assert_decoded_alike(a.frames, b.frames)
    # the blocks streamed from host memory (offload=("transformer",)) carry the GGUF storages as they are
    base, path, _, _ = ltxv
    streamed = Engine.from_pretrained(path, components=base, device="cpu", dtype=torch.float32, kernels="torch",
                                      offload=("transformer",), offload_group_size=1)
    assert torch.equal(streamed.generate(PROMPT, **TINY).latents, a.latents)


def test_gguf_linear_dequantizes_per_call_in_the_compute_dtype(engines):
    ours, reference = engines
    ref_weights = dict(reference.transformer.named_parameters())
    for name, m in ours.transformer.named_modules():
        if isinstance(m, GGUFLinear):
            assert torch.equal(m.dequantized(torch.float32), ref_weights[name + ".weight"])
            x = torch.randn(2, m.in_features)
            expected = torch.nn.functional.linear(x.bfloat16(), ref_weights[name + ".weight"].bfloat16(),
                                                  None if m.bias is None else m.bias.bfloat16())
            assert torch.equal(m(x.bfloat16()), expected)


def _rewrite(ltxv, tmp_path, name, edit):
    """The GGUF with its entries changed by ``edit(entries) -> entries``."""
    base, _, _, entries = ltxv
    path = write_gguf(tmp_path / name, edit(list(entries)))
    return base, path


def _load(base, path):
    return Engine.from_pretrained(path, components=base, device="cpu", dtype=torch.float32, kernels="torch")


def test_missing_and_unused_tensors_are_named(ltxv, tmp_path):
    base, path = _rewrite(ltxv, tmp_path, "missing.gguf", lambda e: [x for x in e if x[0] != "scale_shift_table"])
    with pytest.raises(CheckpointError, match=r"1 model tensors missing from the checkpoint: 'scale_shift_table'"):
        _load(base, path)
    extra = ("transformer_blocks.0.attn1.extra.weight", np.zeros((4, 4), np.float32), Q.F32)
    base, path = _rewrite(ltxv, tmp_path, "unused.gguf", lambda e: e + [extra])
    with pytest.raises(CheckpointError, match=r"checkpoint tensors not used by the model: .*attn1.extra.weight"):
        _load(base, path)


def test_wrong_shapes_are_named(ltxv, tmp_path):
    def shrink(entries):  # a quantized linear with one output row too few, a float tensor too short
        out = []
        for name, data, q in entries:
            if q == Q.Q8_0 and not out_rows:
                out_rows.append(name)
                data = data[:-1]
            out.append((name, data, q))
        return out
    out_rows: list[str] = []
    base, path = _rewrite(ltxv, tmp_path, "shape.gguf", shrink)
    with pytest.raises(CheckpointError, match=rf"tensor '{out_rows[0]}' \(Q8_0\).*has shape .*the model expects"):
        _load(base, path)
    base, path = _rewrite(ltxv, tmp_path, "shape2.gguf", lambda e: [
        (n, d[:-1], q) if n == "scale_shift_table" else (n, d, q) for n, d, q in e])
    with pytest.raises(CheckpointError, match=r"'scale_shift_table' \(F32\).* has shape \(1, 16\), the model expects"):
        _load(base, path)


def test_reshaped_and_quantized_non_linear_tensors_load_dequantized(ltxv, engines, tmp_path):
    """ComfyUI-GGUF's ``comfy.gguf.orig_shape.<name>`` (a tensor stored reshaped) is read, and a
    quantized tensor that is no linear weight (here a bias in Q8_0) is dequantized at load."""
    base, _, _, entries = ltxv
    bias = "transformer_blocks.0.ff.net.0.proj.bias"
    changed, values = [], {}
    for name, data, q in entries:
        if name == "scale_shift_table":
            data = data.reshape(-1)  # stored flat, its shape in the metadata
        elif name == bias:
            data, q = gguf.quants.quantize(data, Q.Q8_0), Q.Q8_0
            values[bias] = torch.from_numpy(gguf.quants.dequantize(data, Q.Q8_0).copy())
        changed.append((name, data, q))
    shape = list(engines[1].transformer.scale_shift_table.shape)
    path = write_gguf(tmp_path / "comfy.gguf", changed, metadata={"comfy.gguf.orig_shape.scale_shift_table": shape})
    t = _load(base, path).transformer
    assert torch.equal(t.scale_shift_table, engines[0].transformer.scale_shift_table)
    assert torch.equal(t.transformer_blocks[0].ff.net[0].proj.bias, values[bias])


def test_format_errors_are_named(ltxv, tmp_path):
    _, path, _, _ = ltxv
    data = path.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + data[4:])
    with pytest.raises(CheckpointError, match=r"not a GGUF file: it starts with b'GGML'"):
        GGUFFile(bad)
    bad.write_bytes(data[:4] + struct.pack("<I", 1) + data[8:])
    with pytest.raises(CheckpointError, match=r"unsupported GGUF version 1; ltxengine reads little-endian versions"):
        GGUFFile(bad)
    bad.write_bytes(data[:4] + struct.pack(">I", 3) + data[8:])
    with pytest.raises(CheckpointError, match=r"unsupported GGUF version 50331648 \(a big-endian file\?\)"):
        GGUFFile(bad)
    bad.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"truncated GGUF file: tensor '.*' \(.*\) needs bytes \d+\.\.\d+, "
                                              r"the file ends at"):
        GGUFFile(bad)
    bad.write_bytes(data[:40])
    with pytest.raises(CheckpointError, match=r"truncated GGUF file: .* at byte \d+ needs \d+ bytes"):
        GGUFFile(bad)


@pytest.mark.parametrize("type_id, name", [(16, "IQ2_XXS"), (99, "unknown ggml type id 99")])
def test_unsupported_quant_types_are_named(ltxv, tmp_path, type_id, name):
    _, path, _, entries = ltxv
    data = bytearray(path.read_bytes())
    first = next(n for n, _, q in entries if q == Q.Q8_0)
    at = data.index(first.encode()) + len(first)  # then n_dims (u32), the dims (u64 each), the type (u32)
    n_dims = struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", data, at + 4 + 8 * n_dims, type_id)
    bad = tmp_path / "type.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"tensor '{first}' has quant type {name}, which ltxengine does not "
                                              r"dequantize \(supported: .*'Q6_K'"):
        GGUFFile(bad)


def test_options_are_checked_before_loading(ltxv):
    base, path, _, _ = ltxv
    with pytest.raises(ValueError, match=r"components: .* GGUF file holding the transformer alone; pass components="):
        Engine.from_pretrained(path, device="cpu", dtype=torch.float32)
    with pytest.raises(ValueError, match=r"quantization: .* quantization must be None, got 'fp8-cast'"):
        Engine.from_pretrained(path, components=base, device="cpu", dtype=torch.float32, quantization="fp8-cast")
    with pytest.raises(ValueError, match=r"components: only a \.gguf checkpoint takes components="):
        Engine.from_pretrained(base, components=base, device="cpu", dtype=torch.float32)
    with pytest.raises(ValueError, match=r"components: must be a diffusers folder or a \.safetensors single file"):
        Engine.from_pretrained(path, components=path, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def ltx2(tmp_path_factory):
    from tests.models.ltx2_transformer_fixtures import to_original
    from tests.pipelines.ltx2_fixtures import build_pipeline
    root = tmp_path_factory.mktemp("gguf2")
    base = build_pipeline(root)[2]
    entries, dequantized = encode(transformer_state_dict(base), to_original)
    path = write_gguf(root / "ltx2-tiny-mixed.gguf", entries, arch="ltxv2")
    return base, path, dequantized_folder(base, root, dequantized)


def test_ltx2_gguf_generates_what_its_dequantized_weights_generate(ltx2):
    from tests.pipelines.ltx2_fixtures import SEQ
    base, path, reference = ltx2
    opts = dict(device="cpu", dtype=torch.float32, kernels="torch")
    ours = Engine.from_pretrained(path, components=base, **opts)
    kinds = {m.gguf_type.name for m in ours.transformer.modules() if isinstance(m, GGUFLinear)}
    assert {"Q8_0", "Q4_0"} <= kinds and kinds & {"Q6_K", "Q5_K", "Q4_K", "Q3_K"}
    small = dict(height=64, width=64, num_frames=9, num_inference_steps=2, max_sequence_length=SEQ, seed=0,
                 pipeline="one-stage")
    a = ours.generate(PROMPT, **small)
    b = Engine.from_pretrained(reference, **opts).generate(PROMPT, **small)
    assert torch.equal(a.latents, b.latents)
    assert_decoded_alike(a.frames, b.frames)
    assert_decoded_alike(a.audio, b.audio)


# -- the command line ----------------------------------------------------------------------------------

def _cli(argv, capsys) -> tuple[int, str]:
    from ltxengine.cli import main
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_cli_generates_and_describes_a_gguf(ltxv, tmp_path, capsys):
    """`ltxengine generate` runs a GGUF with --components (the frames' equality with the dequantized
    weights is the API test's: two CLI runs of one checkpoint in one process differ in some pixels,
    GGUF or not, which this test does not chase), and `ltxengine info` names the file's format,
    family and quant types."""
    from ltxengine.media import read_media
    base, path, _, _ = ltxv
    out = tmp_path / "gguf.mp4"
    code, text = _cli(["generate", "--model", path, "--components", base, "--output", out, "--prompt", PROMPT,
                       "--height", TINY["height"], "--width", TINY["width"], "--num-frames", TINY["num_frames"],
                       "--steps", 1, "--seed", 0, "--dtype", "fp32", "--kernels", "torch", "--quiet"], capsys)
    assert code == 0, text
    assert read_media(out)[0].shape == (TINY["num_frames"], TINY["height"], TINY["width"], 3)
    code, text = _cli(["info", path], capsys)
    assert code == 0 and "GGUF v3" in text and "family:  LTX-Video" in text and "Q8_0" in text, text


def test_cli_names_a_missing_or_stray_components_flag(ltxv, capsys):
    base, path, _, _ = ltxv
    code, text = _cli(["generate", "--model", path, "--prompt", "p"], capsys)
    assert code == 2 and "--components:" in text and "GGUF holding the transformer alone" in text, text
    code, text = _cli(["generate", "--model", base, "--components", base, "--prompt", "p"], capsys)
    assert code == 2 and "--components: only a .gguf --model takes it" in text, text


def test_info_names_an_ltx2_gguf(ltx2):
    from ltxengine.info import describe
    d = describe(ltx2[1])
    assert d["family"] == "LTX-2" and d["format"].startswith("GGUF v3")
    assert {"Q8_0", "Q4_0", "F32"} <= set(d["components"]["transformer"]["dtypes"])


def test_a_lora_on_gguf_layers_is_refused_by_name(engines):
    from ltxengine.loading import LoraError
    ours = engines[0]
    name, layer = next((n, m) for n, m in ours.transformer.named_modules() if isinstance(m, GGUFLinear))
    lora = {f"transformer.{name}.lora_A.weight": torch.zeros(2, layer.in_features),
            f"transformer.{name}.lora_B.weight": torch.zeros(layer.out_features, 2)}
    with pytest.raises(LoraError, match=r"target layers kept in GGUF blocks; LoRAs on a GGUF transformer are not"):
        ours.load_lora_weights(lora, "x")
    assert ours.get_active_adapters() == []


def test_a_lightricks_single_file_supplies_the_config_and_the_rest(tmp_path):
    """components= may be a Lightricks single file (its header config; the VAE from it, the T5 from
    text_encoder=): the GGUF transformer loads as with the diffusers folder of the same weights."""
    from tests.pipelines.fixtures import single_file_and_folder
    folder, single, sched = single_file_and_folder(tmp_path)
    entries, _ = encode(transformer_state_dict(folder), ltx_video_name)
    path = write_gguf(tmp_path / "t.gguf", entries)
    opts = dict(device="cpu", dtype=torch.float32, kernels="torch")
    a = Engine.from_pretrained(path, components=single, text_encoder=folder, scheduler_config=sched, **opts)
    b = Engine.from_pretrained(path, components=folder, **opts)
    sa, sb = a.transformer.state_dict(), b.transformer.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(isinstance(m, GGUFLinear) for m in a.transformer.modules())



def test_the_gguf_own_header_config_builds_the_transformer(ltxv, ltx2, engines, tmp_path):
    """A GGUF carrying a Lightricks header as its ``config`` metadata is built from it, so components=
    needs no transformer config (here: a copy of the folder without transformer/); a malformed one
    is named."""
    import json
    import shutil

    from ltxengine.config import LTX2TransformerConfig, parse_config
    from tests.loading.formats import original_transformer_config
    from tests.models.ltx2_transformer_fixtures import original_section, to_original
    from tests.pipelines.fixtures import CONFIGS
    from tests.pipelines.ltx2_fixtures import DIT
    base, _, _, entries = ltxv
    header = {"transformer": original_transformer_config(CONFIGS["tiny-095"]["transformer"])}
    path = write_gguf(tmp_path / "own.gguf", entries, metadata={"config": json.dumps(header)})
    bare = tmp_path / "no-transformer"
    shutil.copytree(base, bare, ignore=shutil.ignore_patterns("transformer"))
    ours = _load(bare, path).transformer.state_dict()
    theirs = engines[0].transformer.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    base2, _, _ = ltx2
    entries2, _ = encode(transformer_state_dict(base2), to_original)
    section = original_section(parse_config(LTX2TransformerConfig, DIT, "test"))
    path2 = write_gguf(tmp_path / "own2.gguf", entries2, "ltxv2",
                       metadata={"config": json.dumps({"transformer": section})})
    bare2 = tmp_path / "no-transformer2"
    shutil.copytree(base2, bare2, ignore=shutil.ignore_patterns("transformer"))
    t = Engine.from_pretrained(path2, components=bare2, device="cpu", dtype=torch.float32, kernels="torch").transformer
    assert sum(isinstance(m, GGUFLinear) for m in t.modules()) > 0 and len(t.transformer_blocks) == DIT["num_layers"]

    bad = write_gguf(tmp_path / "bad.gguf", entries, metadata={"config": json.dumps({"vae": {}})})
    with pytest.raises(CheckpointError, match=r"metadata 'config' must be a JSON object with a 'transformer' object"):
        _load(base, bad)
