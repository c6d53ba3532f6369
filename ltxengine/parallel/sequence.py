"""Ulysses sequence parallelism for the LTX-2 and LTX-Video transformers (issue 22).

``enable(transformer, group)``: every rank of ``group`` still calls the transformer with the full
inputs and gets the full outputs, but inside, the video tokens are split over the ranks right
after the input projection and gathered again after the output projection (diffusers' LTX2
``_cp_plan``: hidden states and the video RoPE tables split on the token dim, gathered at
proj_out). Audio tokens and text stay whole on every rank, as in every multi-GPU LTX stack.

The sequence is padded at its end to P * ceil(Nv / P) tokens, so rank r holds tokens
[r n, (r + 1) n). Per attention:

* video self-attention (attn1): q, k, v leave the q/k norm + RoPE token-sharded with every head
  (the norm spans all heads, so it must run before the exchange); an all-to-all makes them
  head-sharded over the whole sequence (H / P heads each), attention runs there, a second
  all-to-all brings the output back. Padding sits at the sequence's end after the exchange, so
  keys and queries are cut to the Nv real tokens: padded tokens are never attended to, and an
  additive bias (B, 1, Nv, Nv) applies whole, as every rank holds every query of its heads.
* video->audio (audio queries, video K/V): k, v are exchanged the same way, each rank attends
  with its H / P audio heads, and the heads are all-gathered, so every rank holds the same audio.
* text cross-attention and audio->video (video queries, replicated K/V): local, no exchange.
* per-token work (adaLN, FFN, gated residuals, RoPE, STG pass-through, head gates, per-token
  timesteps) sees the rank's slice of the tables.

Collectives: ``all_to_all_single`` and an all-gather of ``torch.distributed``, on the group's
backend (NCCL on GPUs, gloo on CPUs); their timeout is the process group's. The model files only
hold two hooks that ``enable`` sets (``sequence_parallel`` on the transformer, ``parallel_attention``
on the attentions that exchange), both None by default, so one process runs the code as before.
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..models.ltx2_transformer import LTX2Transformer, RopeTables
from ..models.transformer import Attention, LTXVideoTransformer

__all__ = ["enable", "disable", "check"]

# torch >= 2.11 names it all_gather_single (all_gather_into_tensor warns there as deprecated).
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _heads(transformer) -> dict[str, int]:
    """Head counts that must divide by the group size: the attentions that exchange heads."""
    c = getattr(transformer, "config", None)
    if isinstance(transformer, LTX2Transformer):
        return {"num_attention_heads": c.num_attention_heads,
                "audio_num_attention_heads (video->audio attention)": c.audio_num_attention_heads}
    if isinstance(transformer, LTXVideoTransformer):
        return {"num_attention_heads": c.num_attention_heads}
    raise ValueError(f"sequence parallel: transformer must be an LTX2Transformer or an LTXVideoTransformer, "
                     f"got {type(transformer).__name__}")


def check(transformer, group, num_video_tokens: int | None = None) -> None:
    """ValueError, before any work, when ``transformer`` cannot be split over ``group``: a head
    count not divisible by the group size, or fewer video tokens than ranks."""
    size = _size(group)
    for name, heads in _heads(transformer).items():
        if heads % size:
            raise ValueError(f"sequence parallel: the transformer's {name} must be divisible by the group size "
                             f"{size} (each rank attends with heads / {size} heads), got {heads}")
    if num_video_tokens is not None and num_video_tokens < size:
        raise ValueError(f"sequence parallel: num_video_tokens must be at least the group size {size} (one token "
                         f"per rank), got {num_video_tokens}")


def _size(group) -> int:
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("sequence parallel: group needs torch.distributed initialised (init_process_group)")
    # new_group gives the processes outside the group a sentinel (-100) instead of a ProcessGroup
    outside = group is dist.GroupMember.NON_GROUP_MEMBER
    if outside or (isinstance(group, dist.ProcessGroup) and dist.get_rank(group) < 0):
        raise ValueError(f"sequence parallel: group must contain this process (global rank {dist.get_rank()}), "
                         f"it does not")
    if group is not None and not isinstance(group, dist.ProcessGroup):
        raise ValueError(f"sequence parallel: group must be a torch.distributed ProcessGroup, got {group!r}")
    return dist.get_world_size(group)


def enable(transformer, group) -> None:
    """Split ``transformer``'s video tokens over ``group`` (see the module docstring). Every rank of
    the group must make the same calls with the same inputs. A group of one rank changes nothing."""
    check(transformer, group)
    disable(transformer)
    if _size(group) == 1:
        return
    ltx2 = isinstance(transformer, LTX2Transformer)
    sharding = (_LTX2Sharding if ltx2 else _LTXVideoSharding)(group)
    transformer.sequence_parallel = sharding
    for block in transformer.transformer_blocks:
        block.attn1.parallel_attention = functools.partial(_self_attention, block.attn1, sharding)
        if ltx2:
            block.video_to_audio_attn.parallel_attention = functools.partial(_video_to_audio, block.video_to_audio_attn,
                                                                             sharding)


def disable(transformer) -> None:
    """Back to one process: the hooks removed (the class defaults, None, apply again)."""
    transformer.__dict__.pop("sequence_parallel", None)
    for module in transformer.modules():
        if isinstance(module, Attention):
            module.__dict__.pop("parallel_attention", None)


class _Sharding:
    """Splits a forward's video tokens over the group and gathers them back; holds the forward's
    token count for the attention hooks."""

    def __init__(self, group):
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.tokens = 0  # Nv of the forward in flight
        self.local = 0  # tokens per rank, padding included

    def begin(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if n < self.size:  # every rank sees the same inputs, so all raise here, before any exchange
            raise ValueError(f"sequence parallel: the video must have at least one token per rank "
                             f"(group size {self.size}), got {n} video tokens")
        self.tokens, self.local = n, -(-n // self.size)
        return self.slice(x, 1)

    def slice(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's tokens of a per-token tensor (token axis ``dim`` of length Nv), zero-padded
        at the end; a tensor of length 1 there (one value per sample) is returned as it is."""
        if t.shape[dim] == 1:
            return t
        if t.shape[dim] != self.tokens:
            raise ValueError(f"sequence parallel: a per-token table has {t.shape[dim]} entries on dim {dim} "
                             f"for {self.tokens} video tokens")
        start = min(self.rank * self.local, self.tokens)
        part = t.narrow(dim, start, min(self.local, self.tokens - start))
        pad = self.local - part.shape[dim]
        if not pad:
            return part
        return F.pad(part, (0, 0) * (t.ndim - 1 - dim % t.ndim) + (0, pad))

    def slice_rope(self, table: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        # Both layouts keep tokens on dim -2: split (B, heads, N, d), interleaved (B, N, D).
        return tuple(self.slice(t, -2) for t in table)

    def gather(self, y: torch.Tensor) -> torch.Tensor:
        """(B, local, C) on each rank -> (B, Nv, C), the same on every rank."""
        return _gather(y, self).transpose(0, 1).flatten(1, 2)[:, : self.tokens]


class _LTX2Sharding(_Sharding):
    def shard(self, xv: torch.Tensor, temb, rope: RopeTables):
        """This rank's video tokens, their timestep tables and RoPE tables (audio ones unchanged)."""
        xv = self.begin(xv)
        temb = temb._replace(video=self.slice(temb.video, 1), video_embedded=self.slice(temb.video_embedded, 1),
                             video_cross=self.slice(temb.video_cross, 1), video_gate=self.slice(temb.video_gate, 1))
        rope = rope._replace(video=self.slice_rope(rope.video), video_cross=self.slice_rope(rope.video_cross))
        return xv, temb, rope


class _LTXVideoSharding(_Sharding):
    def shard(self, x: torch.Tensor, temb: torch.Tensor, embedded: torch.Tensor, rope):
        x = self.begin(x)
        return x, self.slice(temb, 1), self.slice(embedded, 1), self.slice_rope(rope)


# -- the exchanges around attention --------------------------------------------------------------

def _to_heads(s: _Sharding, *xs: torch.Tensor) -> list[torch.Tensor]:
    """Token-sharded (B, local, H*Dh) tensors -> head-sharded (B, Nv, H/P*Dh) over the whole
    sequence, the padding (at its end) cut off; one all-to-all for all of them."""
    b, n, width = xs[0].shape
    w = width // s.size
    send = xs[0].new_empty((s.size, len(xs), b, n, w))  # [j]: rank j's heads
    for i, x in enumerate(xs):
        send[:, i].copy_(x.unflatten(-1, (s.size, w)).permute(2, 0, 1, 3))
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=s.group)  # [i]: rank i's tokens
    full = recv.permute(1, 2, 0, 3, 4).reshape(len(xs), b, s.size * n, w)
    return list(full[:, :, : s.tokens].unbind(0))


def _to_tokens(x: torch.Tensor, s: _Sharding) -> torch.Tensor:
    """Head-sharded (B, P*local, H/P*Dh), padding included -> token-sharded (B, local, H*Dh)."""
    b, _, w = x.shape
    send = x.reshape(b, s.size, s.local, w).transpose(0, 1).contiguous()  # chunk j: rank j's tokens
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=s.group)  # chunk i: rank i's heads
    return recv.permute(1, 2, 0, 3).reshape(b, s.local, s.size * w)


def _gather(x: torch.Tensor, s: _Sharding) -> torch.Tensor:
    """(P, *x.shape): every rank's x, rank i's at [i]."""
    out = x.new_empty((s.size * x.shape[0],) + tuple(x.shape[1:]))  # gloo wants the concatenated shape
    _all_gather(out, x.contiguous(), group=s.group)
    return out.view((s.size,) + tuple(x.shape))


def _pad_tokens(out: torch.Tensor, s: _Sharding) -> torch.Tensor:
    pad = s.size * s.local - out.shape[1]
    return F.pad(out, (0, 0, 0, pad)) if pad else out


def _self_attention(attn: Attention, s: _Sharding, q, k, v, heads: int, mask):
    """Video self-attention on token-sharded q, k, v (B, local, H*Dh) -> the same layout."""
    q, k, v = _to_heads(s, q, k, v)
    out = attn.ops.attention(q, k, v, heads // s.size, mask)
    return _to_tokens(_pad_tokens(out, s), s)


def _video_to_audio(attn: Attention, s: _Sharding, q, k, v, heads: int, mask):
    """Replicated audio queries (B, Na, H*Dh) on token-sharded video k, v -> (B, Na, H*Dh), equal on
    every rank."""
    if mask is not None:
        raise ValueError("sequence parallel: the video->audio attention takes no mask")
    width = q.shape[-1] // s.size
    q = q[..., s.rank * width:(s.rank + 1) * width].contiguous()
    k, v = _to_heads(s, k, v)
    out = attn.ops.attention(q, k, v, heads // s.size, None)
    b, na, _ = out.shape
    return _gather(out, s).permute(1, 2, 0, 3).reshape(b, na, s.size * width)  # chunk i: rank i's heads
