"""GGUF test checkpoints written with the ``gguf`` package's own GGUFWriter (the format's reference
writer), from a diffusers transformer's state dict under Lightricks' single-file names without
the ``model.diffusion_model.`` prefix (what ComfyUI-GGUF's converter writes).

Each linear weight gets a quant type its input width allows: a K-quant (Q6_K, Q5_K, Q4_K, Q3_K
in turn) when it is a multiple of 256, written as random but valid raw blocks (small finite fp16
scales: the gguf package cannot quantize K-quants); Q8_0 / Q4_0 in turn when it is a multiple of
32, quantized by ``gguf.quants.quantize``; F16 otherwise. Other tensors are F32. ``dequantized``
is what the file holds, decoded by ``gguf.quants.dequantize`` (the oracle), under the diffusers keys.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

gguf = __import__("pytest").importorskip("gguf")

Q = gguf.GGMLQuantizationType
K_TYPES = (Q.Q6_K, Q.Q5_K, Q.Q4_K, Q.Q3_K)
SMALL_TYPES = (Q.Q8_0, Q.Q4_0)
# byte offsets of each K-quant's fp16 scales (d, and dmin where there is one)
K_SCALES = {Q.Q6_K: (208,), Q.Q5_K: (0, 2), Q.Q4_K: (0, 2), Q.Q3_K: (108,)}


def k_blocks(qtype, rows: int, cols: int, seed: int) -> np.ndarray:
    """Random valid blocks of a K-quant for a (rows, cols) weight: every bit pattern of the quants
    and packed scales is valid; the fp16 scales are set to small finite values."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    for off in K_SCALES[qtype]:
        scale = (rng.standard_normal(len(data)) * 2e-3).astype(np.float16)
        data[:, off:off + 2] = scale.view(np.uint8).reshape(-1, 2)
    return data.reshape(rows, cols // block * size)


def encode(sd: dict[str, torch.Tensor], to_original) -> tuple[list, dict[str, torch.Tensor]]:
    """(entries (file name, numpy data, ggml type), the values they hold under the diffusers keys)."""
    entries, dequantized = [], {}
    counters = {"k": 0, "small": 0}
    for i, (key, t) in enumerate(sorted(sd.items())):
        a = t.detach().float().numpy()
        if a.ndim == 2 and key.endswith(".weight") and a.shape[1] % 256 == 0:
            qtype = K_TYPES[counters["k"] % len(K_TYPES)]
            counters["k"] += 1
            data = k_blocks(qtype, *a.shape, seed=i)
        elif a.ndim == 2 and key.endswith(".weight") and a.shape[1] % 32 == 0:
            qtype = SMALL_TYPES[counters["small"] % len(SMALL_TYPES)]
            counters["small"] += 1
            data = gguf.quants.quantize(a, qtype)
        elif a.ndim == 2 and key.endswith(".weight"):
            qtype, data = Q.F16, a.astype(np.float16)
        else:
            qtype, data = Q.F32, a.astype(np.float32)
        entries.append((to_original(key), data, qtype))
        values = gguf.quants.dequantize(data, qtype).reshape(a.shape)
        dequantized[key] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    return entries, dequantized


def write_gguf(path: Path, entries, arch: str = "ltxv", metadata: dict | None = None) -> Path:
    """``metadata``: key -> a string or a list of ints (an array, as ComfyUI-GGUF's orig_shape)."""
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in (metadata or {}).items():
        w.add_array(key, value) if isinstance(value, list) else w.add_string(key, value)
    for name, data, qtype in entries:
        if qtype in (Q.F32, Q.F16):
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def ltx_video_name(key: str) -> str:
    """diffusers LTX-Video transformer key -> city96's GGUF name (Lightricks' without the prefix)."""
    key = key.replace("proj_in", "patchify_proj").replace("time_embed", "adaln_single")
    return key.replace("norm_q", "q_norm").replace("norm_k", "k_norm")


def transformer_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))


def dequantized_folder(base: Path, root: Path, dequantized: dict[str, torch.Tensor]) -> Path:
    """A copy of the diffusers folder ``base`` whose transformer weights are ``dequantized``."""
    import shutil

    from safetensors.torch import save_file
    out = root / (base.name + "-dequantized")
    shutil.copytree(base, out)
    save_file(dequantized, str(out / "transformer" / "diffusion_pytorch_model.safetensors"),
              metadata={"format": "pt"})
    return out

