"""kernels="triton": every fused op served by a Triton kernel of ``ltxengine.kernels``."""

from __future__ import annotations

from .library import bind, register


def build():
    from ..kernels import ada_norm, causal_conv3d, fp8_attention, fp8_gemm, qk_norm_rope

    handles = register("triton", {
        "qk_norm_rope": qk_norm_rope.qk_norm_rope,
        "ada_norm": ada_norm.ada_norm,
        "gated_residual": ada_norm.gated_residual,
        "causal_conv3d": causal_conv3d.causal_conv3d,
        "quantize_fp8": fp8_gemm.quantize_fp8,
        "scaled_mm": fp8_gemm.scaled_mm,
        "attention_fp8": fp8_attention.attention_fp8,
    })
    return bind(handles, "triton")
