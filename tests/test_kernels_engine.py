"""An engine built with kernels="triton" (Triton's interpreter on the CPU, compiled kernels on a
GPU) generates the same video as kernels="torch" for tiny LTX-Video and LTX-2 models.

fp32 models: the kernels compute in fp32 like the references and differ only in summation order
(norm statistics, the implicit-GEMM conv's K order vs oneDNN's), i.e. ~1e-7 relative per op. Over
the denoising steps and the VAE that stays far inside the budget below; the measured gaps are
written next to each assertion. A wrong index in any kernel moves frames by O(0.1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltxengine import Engine
from tests.pipelines.fixtures import build_pipeline_folder
from tests.pipelines.ltx2_fixtures import SEQ, build_pipeline

pytest.importorskip("diffusers")

BUDGET = 1e-4  # frames in [0, 1]; audio in [-1, 1]


def _gap(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def test_ltx_video_engine_with_triton_kernels_matches_torch(tmp_path):
    folder = build_pipeline_folder(tmp_path, "tiny-095")
    results = {}
    for kernels in ("torch", "triton"):
        engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, kernels=kernels)
        results[kernels] = engine.generate("a red car drives through the park", height=64, width=96, num_frames=9,
                                           num_inference_steps=2, seed=0)
    assert engine.kernels == {op: "triton" for op in engine.kernels}
    assert set(engine.kernels) == {"qk_norm_rope", "ada_norm", "gated_residual", "causal_conv3d", "quantize_fp8",
                                   "scaled_mm", "fp8_linear", "attention_fp8", "head_gate",  # head_gate: LTX-2.3+
                                   "gguf_dequant", "linear_gelu", "linear_gated_residual", "residual_ada_norm",
                                   "dual_ada_norm", "gelu_quantize_fp8", "ada_norm_fp8", "residual_ada_norm_fp8",
                                   "dual_ada_norm_fp8", "gated_residual_fp8", "head_gate_fp8"}
    assert engine.vae.decoder.conv_in.ops is engine.transformer.ops  # one choice for every model
    gap = _gap(results["triton"].frames, results["torch"].frames)
    assert gap <= BUDGET, gap


def test_ltx2_engine_with_triton_kernels_matches_torch(tmp_path):
    folder = build_pipeline(tmp_path)[2]
    results = {}
    for kernels in ("torch", "triton"):
        engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, kernels=kernels)
        results[kernels] = engine.generate("a cat sits on the mat", height=64, width=64, num_frames=9,
                                           num_inference_steps=2, pipeline="one-stage",
                                           max_sequence_length=SEQ, seed=0)
    assert engine.kernels["qk_norm_rope"] == "triton"
    assert Engine.from_pretrained(folder, device="cpu", dtype=torch.float32).kernels == {
        op: "torch" for op in engine.kernels}  # "auto" on a CPU
    gap_v = _gap(results["triton"].frames, results["torch"].frames)
    gap_a = _gap(results["triton"].audio, results["torch"].audio)
    assert gap_v <= BUDGET and gap_a <= BUDGET, (gap_v, gap_a)
