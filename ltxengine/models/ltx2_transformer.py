"""LTX-2 audio+video diffusion transformer (diffusers: LTX2VideoTransformer3DModel; Lightricks'
ltx-core 1.0.0: LTXModel), 48 blocks of a video stream (32 x 128) and an audio stream (32 x 64)
that read their own text context and each other through audio<->video cross-attention.

Parameter names equal diffusers' state-dict keys. Every fusable site goes through ``self.ops``
(shared with the LTX-Video transformer: the q/k norm + RoPE op takes both RoPE layouts). Work
constant over a generation has its own entry points: ``rope`` (all four RoPE tables) and
``prepare_context`` (caption projections and the text mask bias).

Conventions (ltx-core 1.0.0, which diffusers 0.42.1 reproduces with ``use_cross_timestep=True``):

* Inputs are sigmas in [0, 1]; the model multiplies them by ``timestep_scale_multiplier``.
  ``video_timesteps`` / ``audio_timesteps`` are per token (sigma x denoise mask) or per sample.
* The audio<->video modulation tables of one modality are driven by the *other* modality's
  per-sample sigma. ``legacy_cross_timestep=True`` gives the original 2.0 release behaviour
  (each modality's own per-token timesteps).
* STG replaces a self-attention's output by its value projection (ltx-core 1.0.0 and diffusers'
  perturbed processor); the initial LTX-2 release removed the branch instead. ``Skip`` selects
  per sample which attentions are skipped in which blocks, so guidance passes can share a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn

from ..config import LTX2TransformerConfig
from ..ops import TORCH_OPS, Ops
from .common import OpsLinear
from .transformer import AdaLNSingle, Attention, CaptionProjection, FeedForward

__all__ = ["LTX2Transformer", "Skip", "RopeTables", "TextContext", "video_positions", "audio_positions",
           "rope_tables"]

ALL = "all"


@dataclass(frozen=True)
class Skip:
    """Attention paths skipped for one sample (ltx-core's perturbations): block indices or "all".

    ``video_self_attn`` / ``audio_self_attn``: STG (the self-attention output becomes its value
    projection). ``a2v`` / ``v2a``: the audio->video / video->audio attention is removed
    (modality isolation for modality guidance).
    """

    video_self_attn: Sequence[int] | str = ()
    audio_self_attn: Sequence[int] | str = ()
    a2v: Sequence[int] | str = ()
    v2a: Sequence[int] | str = ()

    def __post_init__(self):
        for name in ("video_self_attn", "audio_self_attn", "a2v", "v2a"):
            v = getattr(self, name)
            if v == ALL:
                continue
            if not isinstance(v, str):
                v = tuple(v)  # a one-shot iterable would be spent by the check below
            if isinstance(v, str) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v):
                raise ValueError(f"Skip.{name} must be 'all' or a list of block indices >= 0, got {v!r}")
            object.__setattr__(self, name, frozenset(v))

    def hits(self, kind: str, block: int) -> bool:
        v = getattr(self, kind)
        return v == ALL or block in v

    @staticmethod
    def stg(blocks: Sequence[int]) -> "Skip":
        """Spatio-temporal guidance pass: video and audio self-attention skipped at ``blocks``."""
        return Skip(video_self_attn=blocks, audio_self_attn=blocks)

    @staticmethod
    def isolate() -> "Skip":
        """Modality-guidance pass: no audio<->video attention in any block."""
        return Skip(a2v=ALL, v2a=ALL)


class RopeTables(NamedTuple):
    video: tuple[torch.Tensor, torch.Tensor]
    audio: tuple[torch.Tensor, torch.Tensor]
    video_cross: tuple[torch.Tensor, torch.Tensor]  # time-only, for the a2v/v2a attentions
    audio_cross: tuple[torch.Tensor, torch.Tensor]


class TextContext(NamedTuple):
    video: torch.Tensor  # (B, L, D) projected
    audio: torch.Tensor  # (B, L, Da) projected
    bias: torch.Tensor | None  # additive mask bias (B, 1, 1, L) or None when every token is valid


class _Temb(NamedTuple):
    video: torch.Tensor  # (B, T', 6, D)
    audio: torch.Tensor  # (B, T', 6, Da)
    video_embedded: torch.Tensor  # (B, T', D) for the output modulation
    audio_embedded: torch.Tensor
    video_cross: torch.Tensor  # (B, T', 4, D): scale/shift rows of the a2v/v2a tables
    video_gate: torch.Tensor  # (B, T', 1, D)
    audio_cross: torch.Tensor
    audio_gate: torch.Tensor


# -- positions and RoPE --------------------------------------------------------------------------

def video_positions(batch: int, frames: int, height: int, width: int, fps: float,
                    scale_factors: Sequence[int] = (8, 32, 32), causal_offset: int = 1,
                    device=None) -> torch.Tensor:
    """Patch bounds (B, 3, F*H*W, 2) [start, end) of each latent token in pixel space, time in
    seconds: latent frame f covers pixel frames [max(0, 8f + 1 - 8), max(0, 8(f+1) + 1 - 8)),
    the causal first latent frame holding one pixel frame. fp32, diffusers' op order."""
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in (frames, height, width)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)  # (3, F, H, W)
    bounds = torch.stack([grid, grid + 1], dim=-1).flatten(1, 3)  # (3, N, 2) latent units
    scale = torch.tensor(scale_factors, dtype=torch.float32, device=device).view(3, 1, 1)
    pixels = bounds * scale
    t = (pixels[0] + causal_offset - scale_factors[0]).clamp(min=0) / fps
    pixels = torch.cat([t[None], pixels[1:]], dim=0)
    return pixels.unsqueeze(0).expand(batch, -1, -1, -1)


def audio_positions(batch: int, frames: int, scale_factor: int = 4, hop_length: int = 160,
                    sampling_rate: int = 16000, causal_offset: int = 1, shift: int = 0,
                    device=None) -> torch.Tensor:
    """Bounds (B, 1, T, 2) in seconds of each audio latent frame: mel frames
    [max(0, 4i + 1 - 4), max(0, 4(i+1) + 1 - 4)) x hop / rate. fp32."""
    idx = torch.arange(shift, frames + shift, dtype=torch.float32, device=device)
    start = ((idx * scale_factor + causal_offset - scale_factor).clip(min=0)) * hop_length / sampling_rate
    end = (((idx + 1) * scale_factor + causal_offset - scale_factor).clip(min=0)) * hop_length / sampling_rate
    return torch.stack([start, end], dim=-1)[None, None].expand(batch, -1, -1, -1)


def rope_tables(positions: torch.Tensor, max_pos: Sequence[float], dim: int, heads: int, theta: float,
                double_precision: bool, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for patch bounds ``positions`` (B, A, N, 2) over A axes.

    Position = bound midpoint / max_pos per axis; n = dim // (2A) frequencies
    (pi/2) * theta^(i/(n-1)) (computed in float64 when ``double_precision``), angle f_i (2p - 1),
    entries ordered [frequency][axis] and front-padded with cos 1 / sin 0. "split": (B, heads, N,
    dim/2/heads), the padded half-width list partitioned across heads; "interleaved": (B, N, dim),
    each angle twice.
    """
    mid = (positions[..., 0] + positions[..., 1]) / 2.0  # (B, A, N)
    axes = positions.shape[1]
    frac = torch.stack([mid[:, i] / max_pos[i] for i in range(axes)], dim=-1)  # (B, N, A)
    n = dim // (2 * axes)
    grid_dtype = torch.float64 if double_precision else torch.float32
    exponents = torch.linspace(0.0, 1.0, n, dtype=grid_dtype, device=positions.device)
    freqs = (torch.pow(theta, exponents) * math.pi / 2.0).to(torch.float32)
    angles = ((frac.unsqueeze(-1) * 2 - 1) * freqs).transpose(-1, -2).flatten(2)  # (B, N, n*A)
    cos, sin = angles.cos(), angles.sin()
    if layout == "split":
        pad = dim // 2 - angles.shape[-1]
        if pad:
            cos = torch.cat([torch.ones_like(cos[..., :pad]), cos], dim=-1)
            sin = torch.cat([torch.zeros_like(sin[..., :pad]), sin], dim=-1)
        b, t = cos.shape[:2]
        return (cos.reshape(b, t, heads, -1).transpose(1, 2), sin.reshape(b, t, heads, -1).transpose(1, 2))
    cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
    pad = dim % (2 * axes)
    if pad:
        cos = torch.cat([torch.ones_like(cos[..., :pad]), cos], dim=-1)
        sin = torch.cat([torch.zeros_like(sin[..., :pad]), sin], dim=-1)
    return cos, sin


# -- model ---------------------------------------------------------------------------------------

def _keep(skips: list[Skip], kind: str, block: int, like: torch.Tensor):
    """None: nothing skipped; False: skipped for every sample; else a (B, 1, 1) 0/1 tensor."""
    hits = [s.hits(kind, block) for s in skips]
    if not any(hits):
        return None
    if all(hits):
        return False
    return torch.tensor([0.0 if h else 1.0 for h in hits], dtype=like.dtype, device=like.device).view(-1, 1, 1)


class LTX2Block(nn.Module):
    def __init__(self, cfg: LTX2TransformerConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        dv, da, eps = cfg.inner_dim, cfg.audio_inner_dim, cfg.norm_eps
        hv, ha = cfg.num_attention_heads, cfg.audio_num_attention_heads
        cv, ca = cfg.attention_head_dim, cfg.audio_attention_head_dim

        def attn(dim, heads, head_dim, context_dim):
            return Attention(dim, heads, head_dim, context_dim, True, True, ops, eps=eps)

        self.attn1 = attn(dv, hv, cv, None)
        self.attn2 = attn(dv, hv, cv, cfg.cross_attention_dim)
        self.audio_attn1 = attn(da, ha, ca, None)
        self.audio_attn2 = attn(da, ha, ca, cfg.audio_cross_attention_dim)
        # Both audio<->video attentions use the audio head geometry.
        self.audio_to_video_attn = attn(dv, ha, ca, da)
        self.video_to_audio_attn = attn(da, ha, ca, dv)
        self.ff = FeedForward(dv, ops)
        self.audio_ff = FeedForward(da, ops)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dv) / dv**0.5)
        self.audio_scale_shift_table = nn.Parameter(torch.randn(6, da) / da**0.5)
        # Rows: [scale_a2v, shift_a2v, scale_v2a, shift_v2a, gate]
        self.video_a2v_cross_attn_scale_shift_table = nn.Parameter(torch.randn(5, dv))
        self.audio_a2v_cross_attn_scale_shift_table = nn.Parameter(torch.randn(5, da))
        self.eps = eps
        self.ops = ops

    def forward(self, xv, xa, ctx: TextContext, temb: _Temb, rope: RopeTables, keep: dict):
        ops, eps = self.ops, self.eps
        # Self-attention (modulated, gated) then text cross-attention (rms norm only), per stream.
        shift, scale, gate, shift_mlp, scale_mlp, gate_mlp = (self.scale_shift_table + temb.video).unbind(2)
        h = ops.ada_norm(xv, shift, scale, eps, "rms")
        xv = ops.gated_residual(xv, self.attn1(h, rope=rope.video, keep=keep["video_self_attn"]), gate)
        xv = ops.gated_residual(xv, self.attn2(ops.ada_norm(xv, None, None, eps), ctx.video, ctx.bias), None)

        a_shift, a_scale, a_gate, a_shift_mlp, a_scale_mlp, a_gate_mlp = (
            self.audio_scale_shift_table + temb.audio).unbind(2)
        h = ops.ada_norm(xa, a_shift, a_scale, eps, "rms")
        xa = ops.gated_residual(xa, self.audio_attn1(h, rope=rope.audio, keep=keep["audio_self_attn"]), a_gate)
        xa = ops.gated_residual(xa, self.audio_attn2(ops.ada_norm(xa, None, None, eps), ctx.audio, ctx.bias), None)

        # Audio<->video: both read the streams as they are now (v2a sees the video before the
        # a2v residual is added).
        keep_a2v, keep_v2a = keep["a2v"], keep["v2a"]
        if keep_a2v is not False or keep_v2a is not False:
            tv, ta = self.video_a2v_cross_attn_scale_shift_table, self.audio_a2v_cross_attn_scale_shift_table
            v_scale_a2v, v_shift_a2v, v_scale_v2a, v_shift_v2a = (tv[:4] + temb.video_cross).unbind(2)
            a_scale_a2v, a_shift_a2v, a_scale_v2a, a_shift_v2a = (ta[:4] + temb.audio_cross).unbind(2)
            v_gate = (tv[4:] + temb.video_gate)[:, :, 0]
            a_gate_x = (ta[4:] + temb.audio_gate)[:, :, 0]
            xv_in, xa_in = xv, xa
            if keep_a2v is not False:
                out = self.audio_to_video_attn(ops.ada_norm(xv_in, v_shift_a2v, v_scale_a2v, eps, "rms"),
                                               ops.ada_norm(xa_in, a_shift_a2v, a_scale_a2v, eps, "rms"),
                                               rope=rope.video_cross, k_rope=rope.audio_cross)
                xv = ops.gated_residual(xv, out, v_gate if keep_a2v is None else v_gate * keep_a2v)
            if keep_v2a is not False:
                out = self.video_to_audio_attn(ops.ada_norm(xa_in, a_shift_v2a, a_scale_v2a, eps, "rms"),
                                               ops.ada_norm(xv_in, v_shift_v2a, v_scale_v2a, eps, "rms"),
                                               rope=rope.audio_cross, k_rope=rope.video_cross)
                xa = ops.gated_residual(xa, out, a_gate_x if keep_v2a is None else a_gate_x * keep_v2a)

        xv = ops.gated_residual(xv, self.ff(ops.ada_norm(xv, shift_mlp, scale_mlp, eps, "rms")), gate_mlp)
        xa = ops.gated_residual(xa, self.audio_ff(ops.ada_norm(xa, a_shift_mlp, a_scale_mlp, eps, "rms")),
                                a_gate_mlp)
        return xv, xa


class LTX2Transformer(nn.Module):
    def __init__(self, config: LTX2TransformerConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        self.config = config
        dv, da = config.inner_dim, config.audio_inner_dim
        self.proj_in = OpsLinear(config.in_channels, dv, ops=ops)
        self.audio_proj_in = OpsLinear(config.audio_in_channels, da, ops=ops)
        self.caption_projection = CaptionProjection(config.caption_channels, dv, ops)
        self.audio_caption_projection = CaptionProjection(config.caption_channels, da, ops)
        self.time_embed = AdaLNSingle(dv, ops, rows=6)
        self.audio_time_embed = AdaLNSingle(da, ops, rows=6)
        self.av_cross_attn_video_scale_shift = AdaLNSingle(dv, ops, rows=4)
        self.av_cross_attn_audio_scale_shift = AdaLNSingle(da, ops, rows=4)
        self.av_cross_attn_video_a2v_gate = AdaLNSingle(dv, ops, rows=1)
        self.av_cross_attn_audio_v2a_gate = AdaLNSingle(da, ops, rows=1)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dv) / dv**0.5)
        self.audio_scale_shift_table = nn.Parameter(torch.randn(2, da) / da**0.5)
        self.transformer_blocks = nn.ModuleList([LTX2Block(config, ops) for _ in range(config.num_layers)])
        self.proj_out = OpsLinear(dv, config.out_channels, ops=ops)
        self.audio_proj_out = OpsLinear(da, config.audio_out_channels, ops=ops)
        self.ops = ops

    # -- work done once per generation -----------------------------------------------------
    def video_positions(self, batch: int, frames: int, height: int, width: int, fps: float, device=None):
        c = self.config
        return video_positions(batch, frames, height, width, fps, c.vae_scale_factors, c.causal_offset, device)

    def audio_positions(self, batch: int, frames: int, device=None):
        c = self.config
        return audio_positions(batch, frames, c.audio_scale_factor, c.audio_hop_length, c.audio_sampling_rate,
                               c.causal_offset, device=device)

    def rope(self, video_pos: torch.Tensor, audio_pos: torch.Tensor) -> RopeTables:
        """All RoPE tables from patch bounds (B, 3, Nv, 2) and (B, 1, Na, 2) (see video_positions)."""
        c = self.config
        if video_pos.ndim != 4 or video_pos.shape[1] != 3 or video_pos.shape[-1] != 2:
            raise ValueError(f"rope: video positions must be (B, 3, N, 2) patch bounds, got {tuple(video_pos.shape)}")
        if audio_pos.ndim != 4 or audio_pos.shape[1] != 1 or audio_pos.shape[-1] != 2:
            raise ValueError(f"rope: audio positions must be (B, 1, N, 2) patch bounds, got {tuple(audio_pos.shape)}")
        video_pos, audio_pos = video_pos.float(), audio_pos.float()
        args = (c.rope_theta, c.rope_double_precision, c.rope_type)
        cross_max = max(c.pos_embed_max_pos, c.audio_pos_embed_max_pos)
        return RopeTables(
            video=rope_tables(video_pos, (c.pos_embed_max_pos, c.base_height, c.base_width), c.inner_dim,
                              c.num_attention_heads, *args),
            audio=rope_tables(audio_pos, (c.audio_pos_embed_max_pos,), c.audio_inner_dim,
                              c.audio_num_attention_heads, *args),
            # Time-only tables over the cross-attention width, sliced per head of the *own*
            # modality's head count (as both reference implementations do).
            video_cross=rope_tables(video_pos[:, :1], (cross_max,), c.audio_cross_attention_dim,
                                    c.num_attention_heads, *args),
            audio_cross=rope_tables(audio_pos, (cross_max,), c.audio_cross_attention_dim,
                                    c.audio_num_attention_heads, *args),
        )

    def prepare_context(self, video_text: torch.Tensor, audio_text: torch.Tensor,
                        mask: torch.Tensor | None = None) -> TextContext:
        """Caption projections of the connectors' outputs (B, L, caption_channels); a 0/1 mask
        (B, L) becomes the additive bias (mask - 1) * finfo.max (ltx-core), None when all valid."""
        c = self.config
        for name, t in (("video_text", video_text), ("audio_text", audio_text)):
            if t.ndim != 3 or t.shape[-1] != c.caption_channels or t.shape[:2] != video_text.shape[:2]:
                raise ValueError(f"prepare_context: {name} must be (B, L, {c.caption_channels}) with the video "
                                 f"text's B, L = {tuple(video_text.shape[:2])}, got {tuple(t.shape)}")
        v = self.caption_projection(video_text)
        a = self.audio_caption_projection(audio_text)
        bias = None
        if mask is not None:
            if mask.shape != video_text.shape[:2]:
                raise ValueError(f"prepare_context: mask must be (B, L) = {tuple(video_text.shape[:2])}, "
                                 f"got {tuple(mask.shape)}")
            if not bool(mask.bool().all()):
                bias = ((mask.to(v.dtype) - 1) * torch.finfo(v.dtype).max)[:, None, None, :]
        return TextContext(v, a, bias)

    def _embed(self, adaln: AdaLNSingle, t: torch.Tensor, batch: int, rows: int, dtype):
        """Timesteps (B,) or (B, T) already scaled -> ((B, T', rows, D), (B, T', D)); per-token
        inputs hold few distinct values, so the MLPs run on those and are gathered back."""
        flat = t.reshape(-1)
        if flat.numel() > batch:
            values, inverse = torch.unique(flat, return_inverse=True)
            mod, emb = adaln(values, dtype)
            mod, emb = mod[inverse], emb[inverse]
        else:
            mod, emb = adaln(flat, dtype)
        dim = emb.shape[-1]
        return mod.view(batch, -1, rows, dim), emb.view(batch, -1, dim)

    def embed_timesteps(self, video_sigma, audio_sigma, video_timesteps, audio_timesteps, batch, dtype,
                        legacy_cross_timestep: bool = False) -> _Temb:
        c = self.config
        m = c.timestep_scale_multiplier
        gate_factor = c.cross_attn_timestep_scale_multiplier / m
        tv, ev = self._embed(self.time_embed, video_timesteps * m, batch, 6, dtype)
        ta, ea = self._embed(self.audio_time_embed, audio_timesteps * m, batch, 6, dtype)
        if legacy_cross_timestep:
            v_cross_t, a_cross_t = video_timesteps * m, audio_timesteps * m
        else:
            v_cross_t, a_cross_t = audio_sigma * m, video_sigma * m
        v_cross, _ = self._embed(self.av_cross_attn_video_scale_shift, v_cross_t, batch, 4, dtype)
        v_gate, _ = self._embed(self.av_cross_attn_video_a2v_gate, v_cross_t * gate_factor, batch, 1, dtype)
        a_cross, _ = self._embed(self.av_cross_attn_audio_scale_shift, a_cross_t, batch, 4, dtype)
        a_gate, _ = self._embed(self.av_cross_attn_audio_v2a_gate, a_cross_t * gate_factor, batch, 1, dtype)
        return _Temb(tv, ta, ev, ea, v_cross, v_gate, a_cross, a_gate)

    # -- one denoising step ----------------------------------------------------------------
    def forward(self, video: torch.Tensor, audio: torch.Tensor, *, video_sigma: torch.Tensor,
                audio_sigma: torch.Tensor | None = None, video_timesteps: torch.Tensor | None = None,
                audio_timesteps: torch.Tensor | None = None, context: TextContext, rope: RopeTables,
                skip: Skip | Sequence[Skip] | None = None,
                legacy_cross_timestep: bool = False, temb: _Temb | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed latents video (B, Nv, in_channels) and audio (B, Na, audio_in_channels) ->
        velocities of the same shapes.

        video_sigma / audio_sigma: (B,) sigmas in [0, 1] (audio defaults to video's);
        video_timesteps / audio_timesteps: (B,) or per token (B, N), sigma x denoise mask
        (default: the sigma). context: ``prepare_context``; rope: ``rope``. skip: one ``Skip``
        for the whole batch or one per sample. temb: ``embed_timesteps(...)`` of the same
        arguments computed beforehand (work done once per step list, outside a captured graph).
        """
        b = video.shape[0]
        audio_sigma = video_sigma if audio_sigma is None else audio_sigma
        video_timesteps = video_sigma if video_timesteps is None else video_timesteps
        audio_timesteps = audio_sigma if audio_timesteps is None else audio_timesteps
        skips = self._check(video, audio, video_sigma, audio_sigma, video_timesteps, audio_timesteps, context,
                            rope, skip)
        xv = self.proj_in(video)
        xa = self.audio_proj_in(audio)
        if temb is None:
            temb = self.embed_timesteps(video_sigma, audio_sigma, video_timesteps, audio_timesteps, b, xv.dtype,
                                        legacy_cross_timestep)
        for i, block in enumerate(self.transformer_blocks):
            keep = {kind: _keep(skips, kind, i, xv) for kind in ("video_self_attn", "audio_self_attn", "a2v", "v2a")}
            xv, xa = block(xv, xa, context, temb, rope, keep)
        eps = self.config.norm_eps
        mod = self.scale_shift_table + temb.video_embedded[:, :, None]
        xv = self.ops.ada_norm(xv, mod[:, :, 0], mod[:, :, 1], eps, "layer")
        mod = self.audio_scale_shift_table + temb.audio_embedded[:, :, None]
        xa = self.ops.ada_norm(xa, mod[:, :, 0], mod[:, :, 1], eps, "layer")
        return self.proj_out(xv), self.audio_proj_out(xa)

    def _check(self, video, audio, video_sigma, audio_sigma, video_timesteps, audio_timesteps, context, rope,
               skip) -> list[Skip]:
        c = self.config
        if video.ndim != 3 or video.shape[-1] != c.in_channels:
            raise ValueError(f"transformer: video must be (B, N, {c.in_channels}), got {tuple(video.shape)}")
        b, nv = video.shape[:2]
        if audio.ndim != 3 or audio.shape[0] != b or audio.shape[-1] != c.audio_in_channels:
            raise ValueError(f"transformer: audio must be (B={b}, N, {c.audio_in_channels}), got {tuple(audio.shape)}")
        na = audio.shape[1]
        for name, t, n in (("video_sigma", video_sigma, None), ("audio_sigma", audio_sigma, None),
                           ("video_timesteps", video_timesteps, nv), ("audio_timesteps", audio_timesteps, na)):
            shapes = ((b,),) if n is None else ((b,), (b, n))
            if not isinstance(t, torch.Tensor) or tuple(t.shape) not in shapes:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"transformer: {name} must have shape " + " or ".join(map(str, shapes)) +
                                 f", got {got}")
        if (not isinstance(context, TextContext) or context.video.shape[0] != b or context.audio.shape[0] != b
                or (context.bias is not None and context.bias.shape[0] != b)):
            raise ValueError(f"transformer: context must be the TextContext of prepare_context for the same batch "
                             f"({b}): video, audio text and mask bias all with batch {b}")
        if not isinstance(rope, RopeTables):
            raise ValueError("transformer: rope must be the RopeTables of rope(...)")
        for name, table, n in (("video", rope.video, nv), ("audio", rope.audio, na)):
            if table[0].shape[-2] != n or table[0].shape[0] not in (1, b):
                raise ValueError(f"transformer: {name} RoPE tables are for {table[0].shape[-2]} tokens "
                                 f"(batch {table[0].shape[0]}), the input has {n} (batch {b})")
        if skip is None:
            return [Skip()] * b
        skips = [skip] * b if isinstance(skip, Skip) else list(skip)
        if len(skips) != b or not all(isinstance(s, Skip) for s in skips):
            raise ValueError(f"transformer: skip must be a Skip or a list of {b} Skip (one per sample), got {skip!r}")
        for s in skips:
            for kind in ("video_self_attn", "audio_self_attn", "a2v", "v2a"):
                blocks = getattr(s, kind)
                if blocks != ALL and any(i >= c.num_layers for i in blocks):
                    raise ValueError(f"transformer: Skip.{kind} block indices must be < num_layers = {c.num_layers} "
                                     f"(0-based), got {sorted(blocks)}")
        return skips


def count_parameters(config: LTX2TransformerConfig) -> int:
    """Parameters of the model built on the meta device (no memory used)."""
    with torch.device("meta"):
        model = LTX2Transformer(config)
    return sum(p.numel() for p in model.parameters())
