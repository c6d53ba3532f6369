"""LTX-Video 0.9.x diffusion transformer (diffusers: LTXVideoTransformer3DModel).

Parameter names equal diffusers' state-dict keys. Every fusable site (q/k norm + RoPE, adaLN
modulation, gated residual, linears, attention) calls ``self.ops``. Work that is constant over a
generation (RoPE tables, projected caption and its mask bias) has its own entry point so a
pipeline computes it once and passes it to every step.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import TransformerConfig
from ..ops import TORCH_OPS, Ops
from . import packing, tables
from .common import OpsLinear, TimestepEmbedder, fusable, rope_storage
from .residual import (attend_residual, attend_residual_fp8, ff_residual, linear_residual, quantizing_gate,
                       residual_norm, residual_norm_fp8)

QK_NORM_EPS = 1e-5  # hard-coded in diffusers' LTXAttention and in the original repo
FINAL_NORM_EPS = 1e-6
ROPE_BASE = (20.0, 2048.0, 2048.0)  # max positions: seconds for time, pixels for height/width
ROPE_THETA = 10000.0


class Attention(nn.Module):
    """Multi-head attention with learned Q/K RMSNorm across heads and optional RoPE (LTX-Video
    and LTX-2; ``eps`` 1e-5 and 1e-6 respectively)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None, bias: bool, out_bias: bool,
                 ops: Ops = TORCH_OPS, eps: float = QK_NORM_EPS, gated: bool = False):
        super().__init__()
        inner = heads * head_dim
        self.cross = context_dim is not None  # always called with a context (its to_q reads x alone)
        context_dim = context_dim or dim
        self.heads = heads
        self.eps = eps
        # nn.RMSNorm only stores the learned weight (key norm_q.weight); the math is in ops.
        self.norm_q = nn.RMSNorm(inner, eps=eps)
        self.norm_k = nn.RMSNorm(inner, eps=eps)
        self.to_q = OpsLinear(dim, inner, bias=bias, ops=ops)
        self.to_k = OpsLinear(context_dim, inner, bias=bias, ops=ops)
        self.to_v = OpsLinear(context_dim, inner, bias=bias, ops=ops)
        self.to_out = nn.ModuleList([OpsLinear(inner, dim, bias=out_bias, ops=ops)])
        # LTX-2.3+ gated attention: head h of the output is scaled by 2 sigmoid(to_gate_logits(x))_h
        # before to_out (1 at zero logits); None keeps the 2.0 layout (no key).
        self.to_gate_logits = OpsLinear(dim, heads, ops=ops) if gated else None
        self.ops = ops

    # Set by ltxengine.parallel.sequence.enable on the attentions whose keys are split over ranks:
    # called instead of ops.attention with the same arguments. None: one process.
    parallel_attention = None
    # models/packing.py packs this attention's q/k/v (or k/v) weights; forward runs them through _in_proj
    packs_projections = True

    def forward(self, x, context=None, mask=None, rope=None, k_rope=None, keep=None, kv=None, residual=None,
                x8=None, context8=None):
        """``keep`` (LTX-2 STG): None = attention; False = every sample perturbed, the output is
        the value projection alone (q/k never computed); a (B, 1, 1) 0/1 tensor blends per sample
        (1 keeps attention, 0 takes the values). ``kv``: the (to_k, to_v) projections of a
        constant context computed once (``project_kv``), used instead of projecting it again.
        ``residual=(r, gate)``: returns r + gate * output, the gated residual fused into the
        output projection where the backend can (``linear_residual``). ``x8=(q8, scale)``: x quantized
        per token (``residual_norm_fp8``), read by packed fp8 q/k/v instead of quantizing x again;
        ``context8`` the same for the context's packed fp8 k/v."""
        q = None
        if kv is not None:
            k_proj, v = kv
        elif keep is False:
            k_proj, v = None, self.to_v(x if context is None else context)
        elif context is None:
            q, k_proj, v = self._in_proj(x, (self.to_q, self.to_k, self.to_v), x8)
        else:
            k_proj, v = self.project_kv(context, context8)
        if keep is False:
            return self._output(v, x, residual)
        q, k = self.ops.qk_norm_rope(self._query(x, x8) if q is None else q, k_proj, self.norm_q.weight,
                                     self.norm_k.weight, self.eps, rope, k_rope)
        attend = self.ops.attention if self.parallel_attention is None else self.parallel_attention
        out = attend(q, k, v, self.heads, mask)
        if keep is not None:
            out = out * keep + v * (1 - keep)
        return self._output(out, x, residual)

    def _output(self, out: torch.Tensor, x: torch.Tensor, residual) -> torch.Tensor:
        """to_out(gate(out)), with the gated residual if given. Where to_out quantizes its input per
        token with no hook (a LoRA hook needs the 16-bit input) and the backend may (``quantizing_gate``),
        the head gate writes that quantization itself and nothing else (``ops.head_gate_fp8``: to_out is
        the gate's only reader, STG's blend comes before it); the residual is then the plain gated
        residual, as ``linear_residual`` applies it to an fp8 to_out (no GEMM epilogue)."""
        if self.to_gate_logits is None or not packing.fp8_packable(self.to_out[0]) or not quantizing_gate(self.ops):
            return self._project(self._gate(out, x), residual)
        q8, scale = self.ops.head_gate_fp8(out, self.to_gate_logits(x))
        y = self.to_out[0].forward_quantized(q8, scale, tuple(out.shape[:-1]), out.dtype)
        return y if residual is None else self.ops.gated_residual(residual[0], y, residual[1])

    def _project(self, out: torch.Tensor, residual) -> torch.Tensor:
        if residual is None:
            return self.to_out[0](out)
        return linear_residual(self.ops, self.to_out[0], residual[0], out, residual[1])

    def _gate(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # The gate reads the query input and also scales an STG value pass-through (both references).
        if self.to_gate_logits is None:
            return out
        return self.ops.head_gate(out, self.to_gate_logits(x))

    def project_kv(self, context: torch.Tensor, context8=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(to_k(context), to_v(context)): constant over a generation for cross-attention.
        ``context8``: context quantized per token, for packed fp8 k/v (``takes_fp8_context``)."""
        return tuple(self._in_proj(context, (self.to_k, self.to_v), context8))

    def takes_fp8_context(self) -> bool:
        """Whether to_k / to_v are packed fp8 layers quantizing the context per token."""
        return packing.fp8_joined((self.to_k, self.to_v)) is not None

    def takes_fp8_input(self) -> bool:
        """Whether the GEMM reading x quantizes it per token: a self-attention's q/k/v packed fp8
        layers (``packing.fp8_joined``), a cross-attention's to_q as one (``packing.fp8_packable``:
        no hook); then the norm before it may write that quantization (x8)."""
        if self.cross:
            return packing.fp8_packable(self.to_q)
        return packing.fp8_joined((self.to_q, self.to_k, self.to_v)) is not None

    def _query(self, x: torch.Tensor, x8) -> torch.Tensor:
        # to_q's fp8_linear on the norm's quantization of x: the same (q, scale), the same scaled_mm
        if x8 is None:
            return self.to_q(x)
        return self.to_q.forward_quantized(*x8, tuple(x.shape[:-1]), x.dtype)

    def _in_proj(self, x: torch.Tensor, layers, x8=None) -> list[torch.Tensor]:
        """Each layer of ``layers`` applied to x: one GEMM of their summed width when they are plain
        linears whose weights ``packing.pack_projections`` packed (and nothing has replaced since),
        split into views; the same for packed fp8 GEMM layers (x quantized once, or ``x8`` given,
        one scaled_mm with per-channel weight scales); otherwise one call each (GGUF, LoRA hooks,
        unpacked weights; ``x8`` is then unused)."""
        widths = [layer.out_features for layer in layers]
        packed = packing.joined(layers) if all(fusable(layer) for layer in layers) else None
        if packed is not None:
            return list(self.ops.linear(x, *packed).split(widths, dim=-1))
        fp8 = packing.fp8_joined(layers)
        if fp8 is None:
            return [layer(x) for layer in layers]
        return list(self._fp8_in_proj(x, layers, *fp8, x8).split(widths, dim=-1))

    def _fp8_in_proj(self, x, layers, weight, bias, x8) -> torch.Tensor:
        bias = bias if bias is None or bias.dtype == x.dtype else bias.to(x.dtype)  # as Fp8Linear.forward
        scales = packing.channel_scales(layers)
        if x8 is None:
            return self.ops.fp8_linear(x, weight, scales, bias)
        # fp8_linear's scaled_mm on the quantization the norm wrote: the same (q, scale), the same bits
        y = self.ops.scaled_mm(x8[0], weight, x8[1], scales, bias, x.dtype)
        return y.view(*x.shape[:-1], weight.shape[0])


class GeluProj(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, ops: Ops, bias: bool = True):
        super().__init__()
        self.proj = OpsLinear(dim_in, dim_out, bias=bias, ops=ops)

    def forward(self, x):
        if fusable(self.proj):  # GELU in the GEMM's epilogue (the reference: this same unfused pair)
            return self.proj.ops.linear_gelu(x, self.proj.weight, self.proj.bias)
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """Linear(D, 4D) -> GELU(tanh) -> Linear(4D, D); keys ff.net.0.proj, ff.net.2. ``bias=False``:
    neither linear has a bias (the LTX-2.5 video FFN)."""

    def __init__(self, dim: int, ops: Ops = TORCH_OPS, bias: bool = True):
        super().__init__()
        self.net = nn.ModuleList([GeluProj(dim, 4 * dim, ops, bias), nn.Identity(),
                                  OpsLinear(4 * dim, dim, bias=bias, ops=ops)])

    def forward(self, x, x8=None):
        """``x8=(q8, scale)``: x quantized per token (``residual_norm_fp8``; only where
        ``takes_fp8_input``), read by the fp8 up-projection instead of quantizing x again."""
        if self._quantizes_gelu():
            return self._fp8_forward(x, x8)
        return self.net[2](self.net[0](x))

    def residual(self, ops: Ops, x: torch.Tensor, h: torch.Tensor, gate, h8=None) -> torch.Tensor:
        """x + gate * ff(h), the down-projection fused with the gated residual where it can be."""
        if self._quantizes_gelu():
            return ops.gated_residual(x, self._fp8_forward(h, h8), gate)
        return linear_residual(ops, self.net[2], x, self.net[0](h), gate)

    def takes_fp8_input(self) -> bool:
        """Whether both FFN GEMMs are fp8 quantizing their input per token (``_quantizes_gelu``)
        and no hook sees the up-projection's call: then its norm may write that quantization."""
        proj = self.net[0].proj if type(self.net[0]) is GeluProj else None
        return (self._quantizes_gelu() and getattr(proj, "quantizes_per_token", False)
                and not (proj._forward_hooks or proj._forward_pre_hooks))

    def _quantizes_gelu(self) -> bool:
        # ff.net.2 is an fp8 GEMM quantizing its input per token and no hook (a LoRA branch) sees
        # GELU's output: GELU + that quantization run as one pass (the reference: this unfused pair).
        gelu, down = self.net[0], self.net[2]
        hooked = gelu._forward_hooks or gelu._forward_pre_hooks or down._forward_hooks or down._forward_pre_hooks
        return getattr(down, "quantizes_per_token", False) and type(gelu) is GeluProj and not hooked

    def _fp8_forward(self, x: torch.Tensor, x8=None) -> torch.Tensor:
        proj, down = self.net[0].proj, self.net[2]
        # fp8_linear's scaled_mm on the norm's quantization of x: the same (q, scale), the same bits
        h = proj(x) if x8 is None else proj.forward_quantized(*x8, tuple(x.shape[:-1]), x.dtype)
        return down.forward_quantized(*down.ops.gelu_quantize_fp8(h), tuple(h.shape[:-1]), h.dtype)


class TransformerBlock(nn.Module):
    modulation_tables = ("scale_shift_table",)  # packed across blocks at load (models/tables.py)

    def __init__(self, cfg: TransformerConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        dim = cfg.inner_dim
        self.eps = cfg.norm_eps
        self.attn1 = Attention(dim, cfg.num_attention_heads, cfg.attention_head_dim, None, cfg.attention_bias,
                               cfg.attention_out_bias, ops)
        self.attn2 = Attention(dim, cfg.num_attention_heads, cfg.attention_head_dim, cfg.cross_attention_dim,
                               cfg.attention_bias, cfg.attention_out_bias, ops)
        self.ff = FeedForward(dim, ops)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)
        self.ops = ops

    def forward(self, x, context, context_bias, temb, rope, cross_kv=None, mod=None):
        # temb: (B, T', 6, D) with T' = 1 (per-sample timestep) or N (per-token). x, and the
        # result, may be ``Pending``: the previous block's FFN residual, applied with norm1.
        # mod: scale_shift_table + temb computed for every block at once (tables.hoist), or None.
        mod = self.scale_shift_table + temb if mod is None else mod
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.unbind(2)
        x, h, h8 = residual_norm_fp8(self.ops, x, shift_msa, scale_msa, self.eps, self.attn1)
        # Cross-attention reads the raw residual stream: no norm, no modulation, no gate. attn1's
        # residual may write its fp8 to_q's per-token input (x8); attn2's residual and norm2 may run
        # as one op (attend_residual).
        x, x8 = attend_residual_fp8(self.ops, self.attn1, x, gate_msa, self.attn2, h, rope=rope, x8=h8)
        x = attend_residual(self.ops, self.attn2, x, None, x, context, context_bias, kv=cross_kv, x8=x8)
        x, h, h8 = residual_norm_fp8(self.ops, x, shift_mlp, scale_mlp, self.eps, self.ff)
        return ff_residual(self.ops, self.ff, x, h, gate_mlp, h8)


class AdaLNSingle(nn.Module):
    """Timestep -> (k*D modulation, D embedding); keys time_embed.emb.*, time_embed.linear."""

    def __init__(self, dim: int, ops: Ops = TORCH_OPS, rows: int = 6):
        super().__init__()
        self.emb = TimestepEmbedder(dim, ops=ops)
        self.linear = OpsLinear(dim, rows * dim, ops=ops)

    def forward(self, t: torch.Tensor, dtype: torch.dtype):
        embedded = self.emb(t, dtype)
        return self.linear(F.silu(embedded)), embedded


class CaptionProjection(nn.Module):
    def __init__(self, in_features: int, dim: int, ops: Ops = TORCH_OPS):
        super().__init__()
        self.linear_1 = OpsLinear(in_features, dim, ops=ops)
        self.linear_2 = OpsLinear(dim, dim, ops=ops)

    def forward(self, x):
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


def rope_tables(positions: torch.Tensor, dim: int, theta: float = ROPE_THETA) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (B, N, dim) fp32 for fractional positions (B, N, 3) in units of ROPE_BASE.

    n = dim // 6 log-spaced frequencies (pi/2)*theta^(i/(n-1)) per axis; angle f_i*(2p - 1);
    entries ordered [frequency][axis], each repeated twice (interleaved pairs), front-padded with
    cos=1/sin=0 when dim % 6 != 0. The float op order follows diffusers so fp32 tables are equal.
    """
    freqs = theta ** torch.linspace(math.log(1.0, theta), math.log(theta, theta), dim // 6,
                                    device=positions.device, dtype=torch.float32)
    freqs = freqs * math.pi / 2.0
    angles = (freqs * (positions.unsqueeze(-1) * 2 - 1)).transpose(-1, -2).flatten(2)
    cos = angles.cos().repeat_interleave(2, dim=-1)
    sin = angles.sin().repeat_interleave(2, dim=-1)
    pad = dim % 6
    if pad:
        cos = torch.cat([torch.ones_like(cos[..., :pad]), cos], dim=-1)
        sin = torch.cat([torch.zeros_like(sin[..., :pad]), sin], dim=-1)
    return cos, sin


def grid_positions(batch: int, frames: int, height: int, width: int, scale: tuple[float, float, float] | None,
                   device=None) -> torch.Tensor:
    """Fractional positions (B, F*H*W, 3) of a latent grid, the T2V/I2V-pipeline convention:
    latent index x rope_interpolation_scale / ROPE_BASE (no causal first-frame fix)."""
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in (frames, height, width)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)
    if scale is not None:
        # (index * scale * patch) / base, in diffusers' order (patch = 1) so fp32 tables are equal
        grid = torch.stack([grid[i] * scale[i] * 1 / ROPE_BASE[i] for i in range(3)])
    return grid.flatten(1).transpose(0, 1).unsqueeze(0).expand(batch, -1, -1)


def coords_positions(video_coords: torch.Tensor) -> torch.Tensor:
    """Pixel-space coordinates (B, 3, N) (time already divided by fps) -> fractional (B, N, 3)."""
    return torch.stack([video_coords[:, i] / ROPE_BASE[i] for i in range(3)], dim=-1)


class LTXVideoTransformer(nn.Module):
    # ltxengine.parallel.sequence.enable's hook (splits the tokens over ranks); None: one process.
    sequence_parallel = None

    def __init__(self, config: TransformerConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        self.config = config
        dim = config.inner_dim
        self.proj_in = OpsLinear(config.in_channels, dim, ops=ops)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.time_embed = AdaLNSingle(dim, ops)
        self.caption_projection = CaptionProjection(config.caption_channels, dim, ops)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(config, ops) for _ in range(config.num_layers)])
        self.proj_out = OpsLinear(dim, config.out_channels, ops=ops)
        self.ops = ops

    # -- work done once per generation -------------------------------------------------------
    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cos/sin tables of ``positions`` (rope_tables), stored as the backend reads them."""
        return rope_storage(self.ops, self.proj_in.weight.dtype, *rope_tables(positions, self.config.inner_dim))

    def prepare_context(self, encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor | None):
        """Project the text once; mask (B, L) of 0/1 -> additive bias (B, 1, 1, L) = (1 - m) * -10000."""
        context = self.caption_projection(encoder_hidden_states)
        bias = None
        if encoder_attention_mask is not None:
            bias = ((1 - encoder_attention_mask.to(context.dtype)) * -10000.0)[:, None, None, :]
        return context, bias

    def cross_kv(self, context: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every block's cross-attention keys and values of the projected text (from
        ``prepare_context``): constant across steps, so a pipeline computes them once."""
        return [block.attn2.project_kv(context) for block in self.transformer_blocks]

    def embed_timestep(self, timestep: torch.Tensor, batch: int, dtype: torch.dtype):
        """(B,) or (B, N) timesteps in [0, 1000] -> temb (B, T', 6, D), embedded (B, T', D).

        Per-token timesteps hold only a few distinct values (sigma and 0 for conditioned
        tokens), so the MLPs run on the unique values and the result is gathered back.
        """
        flat = timestep.reshape(-1)
        if flat.numel() > batch:
            values, inverse = torch.unique(flat, return_inverse=True)
            temb, embedded = self.time_embed(values, dtype)
            temb, embedded = temb[inverse], embedded[inverse]
        else:
            temb, embedded = self.time_embed(flat, dtype)
        dim = self.config.inner_dim
        return temb.view(batch, -1, 6, dim), embedded.view(batch, -1, dim)

    # -- one denoising step ------------------------------------------------------------------
    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor | None, *,
                context: tuple[torch.Tensor, torch.Tensor | None],
                rope: tuple[torch.Tensor, torch.Tensor], temb=None, cross_kv=None) -> torch.Tensor:
        """hidden_states (B, N, in_channels) packed latents -> velocity (B, N, out_channels).

        context: from ``prepare_context``; rope: from ``rope(positions)``. Work done once per
        generation may be passed in: temb = ``embed_timestep(timestep, B, dtype)`` (then
        ``timestep`` may be None), cross_kv = ``cross_kv(context[0])``.
        """
        self._check_inputs(hidden_states, timestep, context, rope, temb, cross_kv)
        batch = hidden_states.shape[0]
        x = self.proj_in(hidden_states)
        temb, embedded = temb if temb is not None else self.embed_timestep(timestep, batch, x.dtype)
        ctx, bias = context
        kvs = cross_kv if cross_kv is not None else [None] * len(self.transformer_blocks)
        sp = self.sequence_parallel
        if sp is not None:
            x, temb, embedded, rope = sp.shard(x, temb, embedded, rope)
        mods = tables.hoist(self.transformer_blocks, "scale_shift_table", temb)  # one add, not one per block
        for i, (block, kv) in enumerate(zip(self.transformer_blocks, kvs)):
            x = block(x, ctx, bias, temb, rope, kv, mod=None if mods is None else mods[i])
        mod = self.scale_shift_table + embedded[:, :, None]
        _, x = residual_norm(self.ops, x, mod[:, :, 0], mod[:, :, 1], FINAL_NORM_EPS, "layer")
        return self.proj_out(x) if sp is None else sp.gather(self.proj_out(x))

    def _check_inputs(self, x, timestep, context, rope, temb, cross_kv):
        cfg = self.config
        if x.ndim != 3 or x.shape[-1] != cfg.in_channels:
            raise ValueError(f"transformer: hidden_states must be (B, N, {cfg.in_channels}), got {tuple(x.shape)}")
        b, n = x.shape[:2]
        if temb is not None:
            if temb[0].shape[0] != b or temb[0].shape[1] not in (1, n) or temb[0].shape[2:] != (6, cfg.inner_dim):
                raise ValueError(f"transformer: temb must be (B={b}, 1 or {n}, 6, {cfg.inner_dim}) from "
                                 f"embed_timestep, got {tuple(temb[0].shape)}")
        elif timestep is None:
            raise ValueError("transformer: timestep is required unless temb (from embed_timestep) is given")
        elif timestep.shape not in ((b,), (b, n)):
            raise ValueError(f"transformer: timestep must have shape ({b},) or ({b}, {n}), got {tuple(timestep.shape)}")
        if cross_kv is not None and len(cross_kv) != len(self.transformer_blocks):
            raise ValueError(f"transformer: cross_kv must hold one (k, v) pair per block ({len(self.transformer_blocks)}), "
                             f"got {len(cross_kv)}")
        ctx = context[0]
        if ctx.ndim != 3 or ctx.shape[0] != b or ctx.shape[-1] != cfg.inner_dim:
            raise ValueError(f"transformer: context must be (B={b}, L, {cfg.inner_dim}) from prepare_context, "
                             f"got {tuple(ctx.shape)}")
        cos = rope[0]
        if cos.shape[-2:] != (n, cfg.inner_dim) or cos.shape[0] not in (1, b):
            raise ValueError(f"transformer: rope tables must be (B or 1, {n}, {cfg.inner_dim}), got {tuple(cos.shape)}")
