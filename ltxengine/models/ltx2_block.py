"""One LTX-2 block (video and audio streams, their text and audio<->video attentions) and the
per-call types the transformer hands it: which attentions each sample skips (``Skip``), the RoPE
tables, the text context, the timestep tables (``Temb``) and their hoisted sums (``BlockMods``).
The model around it, its conventions and references: ltx2_transformer.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn

from ..config import LTX2TransformerConfig
from ..ops import TORCH_OPS, Ops
from .residual import (Pending, attend_residual, ff_residual, modulated_context, quantizing_norm, residual_norm,
                       residual_norm_fp8, settle)
from .transformer import Attention, FeedForward

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
    video: torch.Tensor  # (B, L, D) projected (2.0) or the connectors' video output (2.3+)
    audio: torch.Tensor  # (B, L, Da)
    bias: torch.Tensor | None  # additive mask bias (B, 1, 1, L) or None when every token is valid


class Temb(NamedTuple):
    video: torch.Tensor  # (B, T', 6, D); 9 rows with cross_attn_mod (+ shift_q, scale_q, gate of attn2)
    audio: torch.Tensor  # (B, T', 6 or 9, Da)
    video_embedded: torch.Tensor  # (B, T', D) for the output modulation
    audio_embedded: torch.Tensor
    video_cross: torch.Tensor  # (B, T', 4, D): scale/shift rows of the a2v/v2a tables
    video_gate: torch.Tensor  # (B, T', 1, D)
    audio_cross: torch.Tensor
    audio_gate: torch.Tensor
    # Text K/V modulation (shift, scale) from prompt_adaln (sigma): (B, 1, 2, D) / (B, 1, 2, Da);
    # None without cross_attn_mod or with use_prompt_adaln_single=False (static table only).
    video_prompt: torch.Tensor | None = None
    audio_prompt: torch.Tensor | None = None


class BlockMods(NamedTuple):
    """One block's table + temb sums computed for all blocks at once (tables.hoist_blocks); a None
    field: the block adds its own table (not packed, per-token timesteps, no such table)."""

    video: torch.Tensor | None = None  # (B, 1, 6 or 9, D)
    audio: torch.Tensor | None = None
    video_cross: torch.Tensor | None = None  # (B, 1, 4, D)
    video_gate: torch.Tensor | None = None  # (B, 1, 1, D)
    audio_cross: torch.Tensor | None = None
    audio_gate: torch.Tensor | None = None
    video_prompt: torch.Tensor | None = None  # (B, 1, 2, D)
    audio_prompt: torch.Tensor | None = None


# (BlockMods / Temb field, block table, its rows that field adds)
_CROSS_V, _CROSS_A = "video_a2v_cross_attn_scale_shift_table", "audio_a2v_cross_attn_scale_shift_table"
HOISTED = (("video", "scale_shift_table", slice(None)), ("audio", "audio_scale_shift_table", slice(None)),
           ("video_cross", _CROSS_V, slice(0, 4)), ("video_gate", _CROSS_V, slice(4, 5)),
           ("audio_cross", _CROSS_A, slice(0, 4)), ("audio_gate", _CROSS_A, slice(4, 5)),
           ("video_prompt", "prompt_scale_shift_table", slice(None)),
           ("audio_prompt", "audio_prompt_scale_shift_table", slice(None)))


def added(table: torch.Tensor, temb: torch.Tensor, mods: BlockMods | None, field: str) -> torch.Tensor:
    """table + temb, or the block's hoisted slice of that same sum (the same bits)."""
    hoisted = None if mods is None else getattr(mods, field)
    return table + temb if hoisted is None else hoisted


def keep_mask(skips: list[Skip], kind: str, block: int, like: torch.Tensor):
    """None: nothing skipped; False: skipped for every sample; else a (B, 1, 1) 0/1 tensor."""
    hits = [s.hits(kind, block) for s in skips]
    if not any(hits):
        return None
    if all(hits):
        return False
    return torch.tensor([0.0 if h else 1.0 for h in hits], dtype=like.dtype, device=like.device).view(-1, 1, 1)


class LTX2Block(nn.Module):
    # packed across blocks at load (models/tables.py), added to temb once per forward
    modulation_tables = ("scale_shift_table", "audio_scale_shift_table", _CROSS_V, _CROSS_A,
                         "prompt_scale_shift_table", "audio_prompt_scale_shift_table")

    def __init__(self, cfg: LTX2TransformerConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        dv, da, eps = cfg.inner_dim, cfg.audio_inner_dim, cfg.norm_eps
        hv, ha = cfg.num_attention_heads, cfg.audio_num_attention_heads
        cv, ca = cfg.attention_head_dim, cfg.audio_attention_head_dim

        def attn(dim, heads, head_dim, context_dim, gated):
            return Attention(dim, heads, head_dim, context_dim, True, True, ops, eps=eps, gated=gated)

        # Gating follows the query's stream: a2v is gated with the video flag, v2a with the audio's.
        gv, ga = cfg.gated_attn, cfg.audio_gated_attn
        self.attn1 = attn(dv, hv, cv, None, gv)
        self.attn2 = attn(dv, hv, cv, cfg.cross_attention_dim, gv)
        self.audio_attn1 = attn(da, ha, ca, None, ga)
        self.audio_attn2 = attn(da, ha, ca, cfg.audio_cross_attention_dim, ga)
        # Both audio<->video attentions use the audio head geometry.
        self.audio_to_video_attn = attn(dv, ha, ca, da, gv)
        self.video_to_audio_attn = attn(da, ha, ca, dv, ga)
        self.ff = FeedForward(dv, ops, bias=cfg.ff_bias)
        self.audio_ff = FeedForward(da, ops, bias=cfg.audio_ff_bias)
        self.q_mod, self.audio_q_mod = cfg.cross_attn_mod, cfg.audio_cross_attn_mod
        self.scale_shift_table = nn.Parameter(torch.randn(cfg.video_mod_rows, dv) / dv**0.5)
        self.audio_scale_shift_table = nn.Parameter(torch.randn(cfg.audio_mod_rows, da) / da**0.5)
        if cfg.kv_mod:
            # Text K/V modulation rows [shift, scale] of each stream (both streams as soon as either
            # modality has cross_attn_mod, as diffusers builds it; the reference has one flag).
            self.prompt_scale_shift_table = nn.Parameter(torch.randn(2, dv))
            self.audio_prompt_scale_shift_table = nn.Parameter(torch.randn(2, da))
        self.kv_mod = cfg.kv_mod
        # Rows: [scale_a2v, shift_a2v, scale_v2a, shift_v2a, gate]
        self.video_a2v_cross_attn_scale_shift_table = nn.Parameter(torch.randn(5, dv))
        self.audio_a2v_cross_attn_scale_shift_table = nn.Parameter(torch.randn(5, da))
        self.eps = eps
        self.ops = ops

    def forward(self, xv, xa, ctx: TextContext, temb: Temb, rope: RopeTables, keep: dict, video_bias=None,
                mods: BlockMods | None = None):
        ops, eps = self.ops, self.eps
        # Each residual may stay Pending until the adaLN that reads the stream next, the two then
        # run as one op (transformer.attend_residual / ff_residual / residual_norm); xv, xa and the
        # results too (the FFN residuals, applied by the next block's first norms or the final ones).
        # Self-attention (modulated, gated) then text cross-attention, per stream.
        mod = added(self.scale_shift_table, temb.video, mods, "video").unbind(2)
        shift, scale, gate, shift_mlp, scale_mlp, gate_mlp = mod[:6]
        xv, h, h8 = residual_norm_fp8(ops, xv, shift, scale, eps, self.attn1, keep["video_self_attn"])
        xv = attend_residual(ops, self.attn1, xv, gate, h, mask=video_bias, rope=rope.video,
                             keep=keep["video_self_attn"], x8=h8)
        xv = self._text_attn(xv, ctx.video, ctx.bias, self.attn2, mod[6:], self.q_mod,
                             getattr(self, "prompt_scale_shift_table", None), temb.video_prompt, defer=True,
                             kv=None if mods is None else mods.video_prompt)

        a_mod = added(self.audio_scale_shift_table, temb.audio, mods, "audio").unbind(2)
        a_shift, a_scale, a_gate, a_shift_mlp, a_scale_mlp, a_gate_mlp = a_mod[:6]
        xa, h, h8 = residual_norm_fp8(ops, xa, a_shift, a_scale, eps, self.audio_attn1, keep["audio_self_attn"])
        xa = attend_residual(ops, self.audio_attn1, xa, a_gate, h, rope=rope.audio, keep=keep["audio_self_attn"],
                             x8=h8)
        xa = self._text_attn(xa, ctx.audio, ctx.bias, self.audio_attn2, a_mod[6:], self.audio_q_mod,
                             getattr(self, "audio_prompt_scale_shift_table", None), temb.audio_prompt, defer=True,
                             kv=None if mods is None else mods.audio_prompt)
        xv, xa = self._cross_modal(xv, xa, temb, rope, keep, mods)
        # Output projections fused with their gated residual where the backend can (linear_residual).
        xv, h, h8 = residual_norm_fp8(ops, xv, shift_mlp, scale_mlp, eps, self.ff)
        xv = ff_residual(ops, self.ff, xv, h, gate_mlp, h8)
        xa, h, h8 = residual_norm_fp8(ops, xa, a_shift_mlp, a_scale_mlp, eps, self.audio_ff)
        xa = ff_residual(ops, self.audio_ff, xa, h, a_gate_mlp, h8)
        return xv, xa

    def _cross_modal(self, xv, xa, temb: Temb, rope: RopeTables, keep: dict, mods: BlockMods | None = None):
        """Audio<->video attention: both read the streams as they are now (v2a sees the video
        before the a2v residual is added), so all four norms come first."""
        keep_a2v, keep_v2a = keep["a2v"], keep["v2a"]
        if keep_a2v is False and keep_v2a is False:
            return xv, xa
        ops, eps = self.ops, self.eps
        tv, ta = self.video_a2v_cross_attn_scale_shift_table, self.audio_a2v_cross_attn_scale_shift_table
        v_scale_a2v, v_shift_a2v, v_scale_v2a, v_shift_v2a = added(tv[:4], temb.video_cross, mods,
                                                                   "video_cross").unbind(2)
        a_scale_a2v, a_shift_a2v, a_scale_v2a, a_shift_v2a = added(ta[:4], temb.audio_cross, mods,
                                                                   "audio_cross").unbind(2)
        v_gate = added(tv[4:], temb.video_gate, mods, "video_gate")[:, :, 0]
        a_gate_x = added(ta[4:], temb.audio_gate, mods, "audio_gate")[:, :, 0]
        q8 = k8 = {}  # the a2v / v2a queries' and contexts' per-token e4m3 copies, where the norms write them
        if keep_a2v is not False and keep_v2a is not False:  # each stream read once for both norms
            a2v, v2a = self.audio_to_video_attn, self.video_to_audio_attn
            xv, q_a2v, k_v2a, *v8 = _dual_norm(ops, xv, (v_shift_a2v, v_scale_a2v), (v_shift_v2a, v_scale_v2a), eps,
                                               a2v.takes_fp8_input() and v2a.takes_fp8_context())
            xa, k_a2v, q_v2a, *a8 = _dual_norm(ops, xa, (a_shift_a2v, a_scale_a2v), (a_shift_v2a, a_scale_v2a), eps,
                                               v2a.takes_fp8_input() and a2v.takes_fp8_context())
            q8, k8 = {"a2v": v8[0], "v2a": a8[1]}, {"a2v": a8[0], "v2a": v8[1]}
        elif keep_a2v is not False:
            xv, q_a2v = residual_norm(ops, xv, v_shift_a2v, v_scale_a2v, eps, "rms")
            xa, k_a2v = residual_norm(ops, xa, a_shift_a2v, a_scale_a2v, eps, "rms")
        else:
            xa, q_v2a = residual_norm(ops, xa, a_shift_v2a, a_scale_v2a, eps, "rms")
            xv, k_v2a = residual_norm(ops, xv, v_shift_v2a, v_scale_v2a, eps, "rms")
        xv_in, xa_in = xv, xa
        if keep_a2v is not False:
            xv = attend_residual(ops, self.audio_to_video_attn, xv_in,
                                 v_gate if keep_a2v is None else v_gate * keep_a2v,
                                 q_a2v, k_a2v, rope=rope.video_cross, k_rope=rope.audio_cross,
                                 x8=q8.get("a2v"), context8=k8.get("a2v"))
        if keep_v2a is not False:
            xa = attend_residual(ops, self.video_to_audio_attn, xa_in,
                                 a_gate_x if keep_v2a is None else a_gate_x * keep_v2a,
                                 q_v2a, k_v2a, rope=rope.audio_cross, k_rope=rope.video_cross,
                                 x8=q8.get("v2a"), context8=k8.get("v2a"))
        return xv, xa

    def _text_attn(self, x, context, bias, attn, q_mod, q_on: bool, kv_table, kv_temb, defer: bool = False,
                   kv=None):
        """Text cross-attention. 2.0: rms(x) attends to the context, ungated. cross_attn_mod (2.3+):
        the query is rms(x)(1 + scale_q) + shift_q and the output is gated (rows 6-8 of the table);
        the context becomes ctx(1 + scale_kv) + shift_kv, per step (prompt_adaln reads sigma), so
        its K/V are recomputed every step (``modulated_context``: one op, which also writes packed
        fp8 K/V's per-token input). x may be ``Pending``; ``defer``: the result may be too.
        ``kv``: kv_table + kv_temb hoisted out of the block loop (tables.hoist), or None."""
        ops, eps = self.ops, self.eps
        context8 = None
        if self.kv_mod:
            if kv is None:
                kv = kv_table if kv_temb is None else kv_table + kv_temb  # (2, D) or (B, 1, 2, D)
            shift_kv, scale_kv = kv.unbind(-2)
            context, context8 = modulated_context(ops, context, shift_kv, scale_kv, eps, attn)
        shift_q, scale_q, gate_q = q_mod if q_on else (None, None, None)
        x, h, h8 = residual_norm_fp8(ops, x, shift_q, scale_q, eps, attn)
        x = attend_residual(ops, attn, x, gate_q, h, context, bias, x8=h8, context8=context8)
        return x if defer else settle(ops, x)


def _dual_norm(ops: Ops, x, mod1, mod2, eps: float, quantize: bool = False):
    """(the stream x, its adaLN by mod1 = (shift, scale), its adaLN by mod2) for a tensor or a
    ``Pending`` stream: one ``ops.dual_ada_norm`` where it gives the unfused calls' result (the
    backend has its kernel; or the adaLN is the torch backend's, whose dual op is those calls' bits
    with one norm fewer, and no fused residual is pending), else residual_norm then ada_norm.
    Two more items, each norm's (q8, scale) for fp8 GEMMs reading it: from ``ops.dual_ada_norm_fp8``
    where ``quantize`` and the dual op runs (``quantizing_norm``), else None."""
    fused = ops.dual_ada_norm is not TORCH_OPS.dual_ada_norm
    if fused or (ops.ada_norm is TORCH_OPS.ada_norm and not isinstance(x, Pending)):
        x, y, gate = x if isinstance(x, Pending) else (x, None, None)
        if quantize and quantizing_norm(ops, False, dual=True):
            x, h1, h2, q1, s1, q2, s2 = ops.dual_ada_norm_fp8(x, y, gate, *mod1, *mod2, eps, "rms")
            return x, h1, h2, (q1, s1), (q2, s2)
        return (*ops.dual_ada_norm(x, y, gate, *mod1, *mod2, eps, "rms"), None, None)
    x, h1 = residual_norm(ops, x, *mod1, eps, "rms")
    return (x, h1, ops.ada_norm(x, *mod2, eps, "rms"), None, None)
