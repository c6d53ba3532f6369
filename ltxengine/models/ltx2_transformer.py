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
  (each modality's own per-token timesteps). ``cross_timestep`` names the three conventions the
  references have used (``CROSS_TIMESTEPS``); "mixed" is Lightricks' since ltx-core 1.1.4
  (2026-05-28, still at @400fd31): scale/shift from the own per-token timesteps, gate from the other
  modality's sigma. Checked once against that source (not a test dependency): the tiny 2.0, 2.3 and
  2.5 configs agree with it to ~1e-6 of the output scale in "mixed" and differ by 0.2-1.1 otherwise.
* STG replaces a self-attention's output by its value projection (ltx-core 1.0.0 and diffusers'
  perturbed processor); the initial LTX-2 release removed the branch instead. ``Skip`` selects
  per sample which attentions are skipped in which blocks, so guidance passes can share a batch.

LTX-2.3 / 2.5 (config switches, off by default; diffusers' names, ltx-core @400fd31's math):
``gated_attn`` scales each head of every attention's output by 2 sigmoid(to_gate_logits(query
input)) (``ops.head_gate``), STG value pass-throughs included; ``cross_attn_mod`` grows the block
tables to 9 rows (text query shift/scale and a gate on the text attention) and modulates the text
context with ``prompt_scale_shift_table`` + ``prompt_adaln(sigma)``, so the text K/V are recomputed
every step from the context ``prepare_context`` returns once; ``use_prompt_embeddings=False`` takes
the connectors' per-modality outputs unprojected; ``ff_bias=False`` drops the video FFN biases;
``use_keyframes_abs_pos_embedding`` adds a learned vector to the tokens the caller marks
(``keyframes``): Lightricks' reference marks the first latent frame of every video state, diffusers'
pipelines mark none (it applies the vector only when given a mask).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from ..config import LTX2TransformerConfig
from ..ops import TORCH_OPS, Ops
from . import tables
from .common import OpsLinear, rope_storage
from .ltx2_block import ALL, HOISTED, BlockMods, LTX2Block, RopeTables, Skip, Temb, TextContext, keep_mask
from .residual import residual_norm
from .transformer import AdaLNSingle, CaptionProjection

__all__ = ["LTX2Transformer", "Skip", "RopeTables", "TextContext", "video_positions", "audio_positions",
           "rope_tables", "first_frame_keyframes", "CROSS_TIMESTEPS"]

# What drives the audio<->video tables (scale/shift, gate) of one modality: "sigma" both the other
# modality's sigma (ltx-core 1.0.0-1.1.3, diffusers use_cross_timestep=True); "own" both the own
# per-token timesteps (the 2.0 release, diffusers False); "mixed" scale/shift own, gate the other's
# sigma (ltx-core >= 1.1.4, @400fd31).
CROSS_TIMESTEPS = ("sigma", "own", "mixed")



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

def _cross_mode(legacy: bool, cross_timestep: str | None) -> str:
    if cross_timestep is None:
        return "own" if legacy else "sigma"
    if cross_timestep not in CROSS_TIMESTEPS:
        raise ValueError(f"transformer: cross_timestep must be one of {CROSS_TIMESTEPS}, got {cross_timestep!r}")
    if legacy and cross_timestep != "own":
        raise ValueError(f"transformer: legacy_cross_timestep=True is cross_timestep='own', got {cross_timestep!r}")
    return cross_timestep


class LTX2Transformer(nn.Module):
    # ltxengine.parallel.sequence.enable's hook (splits the video tokens over ranks); None: one process.
    sequence_parallel = None

    def __init__(self, config: LTX2TransformerConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        self.config = config
        dv, da = config.inner_dim, config.audio_inner_dim
        self.proj_in = OpsLinear(config.in_channels, dv, ops=ops)
        self.audio_proj_in = OpsLinear(config.audio_in_channels, da, ops=ops)
        if config.use_keyframes_abs_pos_embedding:
            # LTX-2.5: added after proj_in to single-pixel-frame tokens (see ``keyframes``)
            self.keyframes_abs_pos_embedding = nn.Parameter(torch.zeros(1, dv))
        if config.use_prompt_embeddings:
            # 2.0 only: 2.3+ take the connectors' per-modality outputs as they are
            self.caption_projection = CaptionProjection(config.caption_channels, dv, ops)
            self.audio_caption_projection = CaptionProjection(config.caption_channels, da, ops)
        self.time_embed = AdaLNSingle(dv, ops, rows=config.video_mod_rows)
        self.audio_time_embed = AdaLNSingle(da, ops, rows=config.audio_mod_rows)
        if config.kv_mod and config.use_prompt_adaln_single:
            # Text K/V shift/scale driven by sigma (ltx-core: prompt_adaln_single)
            self.prompt_adaln = AdaLNSingle(dv, ops, rows=2)
            self.audio_prompt_adaln = AdaLNSingle(da, ops, rows=2)
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
        tables = RopeTables(
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
        # stored as the backend reads them (common.rope_storage: fp16 for 16-bit activations on Triton)
        return RopeTables(*(rope_storage(self.ops, self.proj_in.weight.dtype, *t) for t in tables))

    def prepare_context(self, video_text: torch.Tensor, audio_text: torch.Tensor,
                        mask: torch.Tensor | None = None) -> TextContext:
        """The connectors' outputs as the blocks read them: 2.0 projects both (B, L, caption_channels)
        to the stream widths; 2.3+ (use_prompt_embeddings=False) take video (B, L, D) and audio
        (B, L, Da) as they are. A 0/1 mask (B, L) becomes the additive bias (mask - 1) * finfo.max
        (ltx-core), None when all valid."""
        c = self.config
        widths = c.text_widths
        for name, t, width in (("video_text", video_text, widths[0]), ("audio_text", audio_text, widths[1])):
            if t.ndim != 3 or t.shape[-1] != width or t.shape[:2] != video_text.shape[:2]:
                raise ValueError(f"prepare_context: {name} must be (B, L, {width}) with the video "
                                 f"text's B, L = {tuple(video_text.shape[:2])}, got {tuple(t.shape)}")
        if c.use_prompt_embeddings:
            v, a = self.caption_projection(video_text), self.audio_caption_projection(audio_text)
        else:
            v, a = video_text, audio_text
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
                        legacy_cross_timestep: bool = False, cross_timestep: str | None = None) -> Temb:
        """Every timestep-driven table of one step; ``cross_timestep`` one of CROSS_TIMESTEPS (None:
        "own" with ``legacy_cross_timestep``, else "sigma")."""
        mode = _cross_mode(legacy_cross_timestep, cross_timestep)
        c = self.config
        m = c.timestep_scale_multiplier
        gate_factor = c.cross_attn_timestep_scale_multiplier / m
        tv, ev = self._embed(self.time_embed, video_timesteps * m, batch, c.video_mod_rows, dtype)
        ta, ea = self._embed(self.audio_time_embed, audio_timesteps * m, batch, c.audio_mod_rows, dtype)
        pv = pa = None
        if hasattr(self, "prompt_adaln"):
            # Per-sample sigma, never per token (both references).
            pv, _ = self._embed(self.prompt_adaln, video_sigma * m, batch, 2, dtype)
            pa, _ = self._embed(self.audio_prompt_adaln, audio_sigma * m, batch, 2, dtype)
        own_v, own_a = video_timesteps * m, audio_timesteps * m
        other_v, other_a = audio_sigma * m, video_sigma * m  # the other modality's sigma, per table
        v_ss, a_ss = (other_v, other_a) if mode == "sigma" else (own_v, own_a)
        v_gt, a_gt = (own_v, own_a) if mode == "own" else (other_v, other_a)
        v_cross, _ = self._embed(self.av_cross_attn_video_scale_shift, v_ss, batch, 4, dtype)
        v_gate, _ = self._embed(self.av_cross_attn_video_a2v_gate, v_gt * gate_factor, batch, 1, dtype)
        a_cross, _ = self._embed(self.av_cross_attn_audio_scale_shift, a_ss, batch, 4, dtype)
        a_gate, _ = self._embed(self.av_cross_attn_audio_v2a_gate, a_gt * gate_factor, batch, 1, dtype)
        return Temb(tv, ta, ev, ea, v_cross, v_gate, a_cross, a_gate, pv, pa)

    # -- one denoising step ----------------------------------------------------------------
    def forward(self, video: torch.Tensor, audio: torch.Tensor, *, video_sigma: torch.Tensor,
                audio_sigma: torch.Tensor | None = None, video_timesteps: torch.Tensor | None = None,
                audio_timesteps: torch.Tensor | None = None, context: TextContext, rope: RopeTables,
                skip: Skip | Sequence[Skip] | None = None, legacy_cross_timestep: bool = False,
                temb: Temb | None = None, keyframes: torch.Tensor | None = None,
                cross_timestep: str | None = None,
                video_attention_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed latents video (B, Nv, in_channels) and audio (B, Na, audio_in_channels) ->
        velocities of the same shapes.

        video_sigma / audio_sigma: (B,) sigmas in [0, 1] (audio defaults to video's);
        video_timesteps / audio_timesteps: (B,) or per token (B, N), sigma x denoise mask
        (default: the sigma). context: ``prepare_context``; rope: ``rope``. skip: one ``Skip``
        for the whole batch or one per sample. temb: ``embed_timesteps(...)`` of the same
        arguments computed beforehand (work done once per step list, outside a captured graph).
        keyframes: (B or 1, Nv) marker of single-pixel-frame video tokens, which get
        keyframes_abs_pos_embedding (use_keyframes_abs_pos_embedding models need it; others ignore
        it). Lightricks' reference marks the first latent frame of every video state
        (``first_frame_keyframes``) and generated keyframe slots; diffusers' pipelines mark none.
        legacy_cross_timestep / cross_timestep: see ``embed_timesteps`` and CROSS_TIMESTEPS.
        video_attention_bias: an additive bias (B or 1, 1, Nv, Nv) in the model's dtype on the video
        self-attention scores (IC-LoRA's attention strength, ltx-core's log-space self-attention
        mask); None (default) keeps the unmasked attention call unchanged.
        """
        b = video.shape[0]
        audio_sigma = video_sigma if audio_sigma is None else audio_sigma
        video_timesteps = video_sigma if video_timesteps is None else video_timesteps
        audio_timesteps = audio_sigma if audio_timesteps is None else audio_timesteps
        skips = self._check(video, audio, video_sigma, audio_sigma, video_timesteps, audio_timesteps, context,
                            rope, skip)
        if video_attention_bias is not None:
            _check_bias(video_attention_bias, video)
        xv = self.proj_in(video)
        xa = self.audio_proj_in(audio)
        if self.config.use_keyframes_abs_pos_embedding:
            xv = self._mark_keyframes(xv, keyframes)
        if temb is None:
            temb = self.embed_timesteps(video_sigma, audio_sigma, video_timesteps, audio_timesteps, b, xv.dtype,
                                        legacy_cross_timestep, cross_timestep)
        sp = self.sequence_parallel
        if sp is not None:
            xv, temb, rope = sp.shard(xv, temb, rope)
        like = xv  # the blocks may return Pending streams (see LTX2Block.forward)
        # every table + temb add once per forward, not once per block (per-sample timesteps only)
        mods = tables.hoist_blocks(self.transformer_blocks, temb, HOISTED, BlockMods)
        mods = mods or [None] * len(self.transformer_blocks)
        for i, block in enumerate(self.transformer_blocks):
            keep = {kind: keep_mask(skips, kind, i, like)
                    for kind in ("video_self_attn", "audio_self_attn", "a2v", "v2a")}
            xv, xa = block(xv, xa, context, temb, rope, keep, video_attention_bias, mods=mods[i])
        eps = self.config.norm_eps
        mod = self.scale_shift_table + temb.video_embedded[:, :, None]
        _, xv = residual_norm(self.ops, xv, mod[:, :, 0], mod[:, :, 1], eps, "layer")
        mod = self.audio_scale_shift_table + temb.audio_embedded[:, :, None]
        _, xa = residual_norm(self.ops, xa, mod[:, :, 0], mod[:, :, 1], eps, "layer")
        video = self.proj_out(xv) if sp is None else sp.gather(self.proj_out(xv))
        return video, self.audio_proj_out(xa)

    def _mark_keyframes(self, xv: torch.Tensor, keyframes: torch.Tensor | None) -> torch.Tensor:
        b, n = xv.shape[:2]
        if keyframes is None:
            raise ValueError("transformer: keyframes is required by a use_keyframes_abs_pos_embedding model (LTX-2.5): "
                             f"a (B, {n}) marker of single-pixel-frame tokens, e.g. first_frame_keyframes(...) as "
                             "Lightricks' reference marks them, or zeros for diffusers' pipelines")
        if keyframes.ndim != 2 or keyframes.shape[0] not in (1, b) or keyframes.shape[1] != n:
            raise ValueError(f"transformer: keyframes must be (B={b} or 1, {n}), got {tuple(keyframes.shape)}")
        marker = (keyframes > 0).to(xv.dtype).unsqueeze(-1)
        return xv + marker * self.keyframes_abs_pos_embedding.to(xv.dtype)

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


def _check_bias(bias: torch.Tensor, video: torch.Tensor) -> None:
    b, n = video.shape[:2]
    if bias.ndim != 4 or bias.shape[0] not in (1, b) or bias.shape[1] != 1 or bias.shape[2:] != (n, n):
        raise ValueError(f"transformer: video_attention_bias must be (B={b} or 1, 1, {n}, {n}), got "
                         f"{tuple(bias.shape)}")
    if bias.dtype != video.dtype:
        raise ValueError(f"transformer: video_attention_bias must have the latents' dtype {video.dtype} (SDPA adds "
                         f"it to the scores), got {bias.dtype}")


def first_frame_keyframes(batch: int, frames: int, height: int, width: int, device=None) -> torch.Tensor:
    """(B, F*H*W) marker of the first latent frame's tokens (the causal frame that encodes one pixel
    frame), which Lightricks' reference gives every video state (ltx-core tools.py
    ``_first_frame_keyframes_mask``)."""
    marker = torch.zeros(batch, frames * height * width, device=device)
    marker[:, : height * width] = 1.0
    return marker


def count_parameters(config: LTX2TransformerConfig) -> int:
    """Parameters of the model built on the meta device (no memory used)."""
    with torch.device("meta"):
        model = LTX2Transformer(config)
    return sum(p.numel() for p in model.parameters())
