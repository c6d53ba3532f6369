"""LTX-2's audio stream alone, for text-to-audio without the video weights (Lightricks'
``LTXAudioOnlyModelConfigurator`` + ``LTXV_AUDIO_ONLY_MODEL_COMFY_RENAMING_MAP``, ltx-core @400fd31
model_configurator.py: an ``LTXModel`` of ``model_type=AudioOnly`` loaded from the audio keys only):

* ``LTX2AudioTransformer``: the DiT's audio blocks (self-attention, text cross-attention, FFN)
  without the video stream and without the audio<->video attentions;
* ``AudioTextConnectors``: the text connectors' audio part (the Gemma feature projection the audio
  connector reads, V1's shared one or V2's ``audio_text_proj_in``, and ``audio_connector``).

Parameter names are the audio subset of ``LTX2Transformer`` / ``TextConnectors`` (the same key
maps and state-dict keys); ``owns(key)`` names that subset, so the loader keeps those keys and never
reads the others. The transformer takes ``LTX2Transformer``'s call with a video stream of zero
tokens ((B, 0, C), returned as (B, 0, C)): ltx-core's blocks skip a modality without tokens, and
without video there is no audio<->video attention, so the audio output is the full model's audio
output under ``Skip.isolate()``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn

from ..config import LTX2TransformerConfig
from ..ops import TORCH_OPS, Ops
from . import tables
from .common import OpsLinear, rope_storage
from .ltx2_text import ConnectorTransformer1d, TextConnectors, normalize_text_features, rms_text_features
from .ltx2_block import ALL, HOISTED, BlockMods, LTX2Block, RopeTables, Skip, TextContext, added, keep_mask
from .ltx2_transformer import CROSS_TIMESTEPS, LTX2Transformer, audio_positions, rope_tables
from .residual import attend_residual, ff_residual, residual_norm
from .transformer import AdaLNSingle, Attention, CaptionProjection, FeedForward

__all__ = ["LTX2AudioTransformer", "AudioTextConnectors", "MODALITIES"]

MODALITIES = (("video", "audio"), ("audio",))  # what an LTX-2 engine may load: both streams or audio alone

# our names of the audio stream (the reference's SDOps matches the same modules by their original names)
_TOP = ("audio_proj_in.", "audio_caption_projection.", "audio_time_embed.", "audio_prompt_adaln.",
        "audio_scale_shift_table", "audio_proj_out.")
_BLOCK = ("audio_attn1.", "audio_attn2.", "audio_ff.", "audio_scale_shift_table", "audio_prompt_scale_shift_table")


class AudioTemb(NamedTuple):
    """The timestep tables of one step, audio stream only (ltx2_block.Temb's audio fields)."""

    audio: torch.Tensor  # (B, T', 6 or 9, Da)
    audio_embedded: torch.Tensor  # (B, T', Da) for the output modulation
    audio_prompt: torch.Tensor | None = None  # (B, 1, 2, Da) text K/V shift/scale, or None


class LTX2AudioBlock(nn.Module):
    """LTX2Block's audio half: modulated self-attention, text cross-attention, FFN."""

    modulation_tables = ("audio_scale_shift_table", "audio_prompt_scale_shift_table")  # see models/tables.py

    def __init__(self, cfg: LTX2TransformerConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        da, ha, ca, eps = cfg.audio_inner_dim, cfg.audio_num_attention_heads, cfg.audio_attention_head_dim, cfg.norm_eps
        gated = cfg.audio_gated_attn
        self.audio_attn1 = Attention(da, ha, ca, None, True, True, ops, eps=eps, gated=gated)
        self.audio_attn2 = Attention(da, ha, ca, cfg.audio_cross_attention_dim, True, True, ops, eps=eps, gated=gated)
        self.audio_ff = FeedForward(da, ops, bias=cfg.audio_ff_bias)
        self.audio_q_mod = cfg.audio_cross_attn_mod
        self.audio_scale_shift_table = nn.Parameter(torch.randn(cfg.audio_mod_rows, da) / da**0.5)
        if cfg.kv_mod:
            self.audio_prompt_scale_shift_table = nn.Parameter(torch.randn(2, da))
        self.kv_mod = cfg.kv_mod
        self.eps = eps
        self.ops = ops

    _text_attn = LTX2Block._text_attn  # the same text attention (it reads only kv_mod, ops, eps)

    def forward(self, xa, ctx: TextContext, temb: AudioTemb, rope: RopeTables, keep, mods: BlockMods | None = None):
        # LTX2Block's audio calls: each residual may stay Pending for the next adaLN (xa and the result
        # too: the FFN residual, applied by the next block's first norm or the final norm), and the
        # output projections take their residual in the GEMM epilogue where the backend can.
        ops, eps = self.ops, self.eps
        a_mod = added(self.audio_scale_shift_table, temb.audio, mods, "audio").unbind(2)
        a_shift, a_scale, a_gate, a_shift_mlp, a_scale_mlp, a_gate_mlp = a_mod[:6]
        xa, h = residual_norm(ops, xa, a_shift, a_scale, eps, "rms")
        xa = attend_residual(ops, self.audio_attn1, xa, a_gate, h, rope=rope.audio, keep=keep)
        xa = self._text_attn(xa, ctx.audio, ctx.bias, self.audio_attn2, a_mod[6:], self.audio_q_mod,
                             getattr(self, "audio_prompt_scale_shift_table", None), temb.audio_prompt, defer=True,
                             kv=None if mods is None else mods.audio_prompt)
        xa, h = residual_norm(ops, xa, a_shift_mlp, a_scale_mlp, eps, "rms")
        return ff_residual(ops, self.audio_ff, xa, h, a_gate_mlp)


class LTX2AudioTransformer(nn.Module):
    """The audio stream of ``LTX2Transformer`` (same config, same parameter names), alone."""

    modalities = ("audio",)

    def __init__(self, config: LTX2TransformerConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        self.config = config
        da = config.audio_inner_dim
        self.audio_proj_in = OpsLinear(config.audio_in_channels, da, ops=ops)
        if config.use_prompt_embeddings:  # 2.0: the audio caption projection lives in the DiT
            self.audio_caption_projection = CaptionProjection(config.caption_channels, da, ops)
        self.audio_time_embed = AdaLNSingle(da, ops, rows=config.audio_mod_rows)
        if config.kv_mod and config.use_prompt_adaln_single:
            self.audio_prompt_adaln = AdaLNSingle(da, ops, rows=2)
        self.audio_scale_shift_table = nn.Parameter(torch.randn(2, da) / da**0.5)
        self.transformer_blocks = nn.ModuleList([LTX2AudioBlock(config, ops) for _ in range(config.num_layers)])
        self.audio_proj_out = OpsLinear(da, config.audio_out_channels, ops=ops)
        self.ops = ops

    @classmethod
    def view(cls, full: LTX2Transformer) -> "LTX2AudioTransformer":
        """The audio stream of a loaded ``LTX2Transformer``, sharing its modules and parameters (no
        copy: fused LoRAs and hooks apply); make one per use, as the full model's may change."""
        view = cls.__new__(cls)
        nn.Module.__init__(view)
        view.config, view.ops = full.config, full.ops
        blocks = []
        for block in full.transformer_blocks:
            audio = LTX2AudioBlock.__new__(LTX2AudioBlock)
            nn.Module.__init__(audio)
            for name in ("audio_attn1", "audio_attn2", "audio_ff", "audio_scale_shift_table",
                         "audio_prompt_scale_shift_table"):
                if hasattr(block, name):
                    setattr(audio, name, getattr(block, name))
            audio.audio_q_mod, audio.kv_mod = block.audio_q_mod, block.kv_mod
            audio.eps, audio.ops = block.eps, block.ops
            blocks.append(audio)
        view.transformer_blocks = nn.ModuleList(blocks)
        for name in ("audio_proj_in", "audio_caption_projection", "audio_time_embed", "audio_prompt_adaln",
                     "audio_scale_shift_table", "audio_proj_out"):
            if hasattr(full, name):
                setattr(view, name, getattr(full, name))
        return view

    @staticmethod
    def owns(key: str) -> bool:
        """Whether ``key`` (our state-dict name) is a tensor of the audio stream."""
        if key.startswith("transformer_blocks."):
            parts = key.split(".", 2)
            return len(parts) == 3 and parts[2].startswith(_BLOCK)
        return key.startswith(_TOP)

    # -- work done once per generation -----------------------------------------------------
    def audio_positions(self, batch: int, frames: int, device=None):
        c = self.config
        return audio_positions(batch, frames, c.audio_scale_factor, c.audio_hop_length, c.audio_sampling_rate,
                               c.causal_offset, device=device)

    def rope(self, video_pos: None, audio_pos: torch.Tensor) -> RopeTables:
        """The audio self-attention's RoPE table from patch bounds (B, 1, Na, 2); ``video_pos`` must be
        None (no video stream, so no cross-attention tables either)."""
        c = self.config
        if video_pos is not None:
            raise ValueError("rope: the audio-only transformer has no video stream, got video positions")
        if audio_pos.ndim != 4 or audio_pos.shape[1] != 1 or audio_pos.shape[-1] != 2:
            raise ValueError(f"rope: audio positions must be (B, 1, N, 2) patch bounds, got {tuple(audio_pos.shape)}")
        table = rope_tables(audio_pos.float(), (c.audio_pos_embed_max_pos,), c.audio_inner_dim,
                            c.audio_num_attention_heads, c.rope_theta, c.rope_double_precision, c.rope_type)
        return RopeTables(None, rope_storage(self.ops, self.audio_proj_in.weight.dtype, *table), None, None)

    def prepare_context(self, video_text: None, audio_text: torch.Tensor,
                        mask: torch.Tensor | None = None) -> TextContext:
        """LTX2Transformer.prepare_context for the audio text alone (``video_text`` must be None); the
        context's video text is (B, L, 0)."""
        c = self.config
        width = c.text_widths[1]
        if video_text is not None:
            raise ValueError("prepare_context: the audio-only transformer reads no video text, got a tensor")
        if audio_text.ndim != 3 or audio_text.shape[-1] != width:
            raise ValueError(f"prepare_context: audio_text must be (B, L, {width}), got {tuple(audio_text.shape)}")
        a = self.audio_caption_projection(audio_text) if c.use_prompt_embeddings else audio_text
        bias = None
        if mask is not None:
            if mask.shape != audio_text.shape[:2]:
                raise ValueError(f"prepare_context: mask must be (B, L) = {tuple(audio_text.shape[:2])}, "
                                 f"got {tuple(mask.shape)}")
            if not bool(mask.bool().all()):
                bias = ((mask.to(a.dtype) - 1) * torch.finfo(a.dtype).max)[:, None, None, :]
        # the video text of zero tokens' stream: zero wide, so guidance passes batch it like any context
        return TextContext(a.new_zeros(a.shape[:2] + (0,)), a, bias)

    _embed = LTX2Transformer._embed

    def embed_timesteps(self, video_sigma, audio_sigma, video_timesteps, audio_timesteps, batch, dtype,
                        legacy_cross_timestep: bool = False, cross_timestep: str | None = None) -> AudioTemb:
        """LTX2Transformer.embed_timesteps's audio tables (the video arguments are not read)."""
        if cross_timestep is not None and cross_timestep not in CROSS_TIMESTEPS:  # no cross tables here
            raise ValueError(f"transformer: cross_timestep must be one of {CROSS_TIMESTEPS}, got {cross_timestep!r}")
        c = self.config
        m = c.timestep_scale_multiplier
        ta, ea = self._embed(self.audio_time_embed, audio_timesteps * m, batch, c.audio_mod_rows, dtype)
        pa = None
        if hasattr(self, "audio_prompt_adaln"):
            pa, _ = self._embed(self.audio_prompt_adaln, audio_sigma * m, batch, 2, dtype)
        return AudioTemb(ta, ea, pa)

    # -- one denoising step ----------------------------------------------------------------
    def forward(self, video: torch.Tensor, audio: torch.Tensor, *, video_sigma: torch.Tensor,
                audio_sigma: torch.Tensor | None = None, video_timesteps: torch.Tensor | None = None,
                audio_timesteps: torch.Tensor | None = None, context: TextContext, rope: RopeTables,
                skip: Skip | Sequence[Skip] | None = None, legacy_cross_timestep: bool = False,
                temb: AudioTemb | None = None, keyframes: torch.Tensor | None = None,
                cross_timestep: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """LTX2Transformer's call with ``video`` (B, 0, in_channels): -> ((B, 0, out_channels), audio
        velocity (B, Na, audio_out_channels)). Of ``skip`` only ``audio_self_attn`` applies (there is
        no audio<->video attention to skip); ``keyframes`` mark video tokens, of which there are none."""
        b = audio.shape[0]
        audio_sigma = video_sigma if audio_sigma is None else audio_sigma
        audio_timesteps = audio_sigma if audio_timesteps is None else audio_timesteps
        skips = self._check(video, audio, audio_sigma, audio_timesteps, context, rope, skip)
        xa = self.audio_proj_in(audio)
        if temb is None:
            temb = self.embed_timesteps(video_sigma, audio_sigma, None, audio_timesteps, b, xa.dtype,
                                        legacy_cross_timestep, cross_timestep)
        like = xa  # the blocks may return a Pending stream (no dtype): the skip masks follow the input
        # the audio tables' adds once per forward, not once per block (LTX2Transformer's HOISTED)
        spec = [h for h in HOISTED if h[0] in AudioTemb._fields]
        mods = tables.hoist_blocks(self.transformer_blocks, temb, spec, BlockMods)
        mods = mods or [None] * len(self.transformer_blocks)
        for i, block in enumerate(self.transformer_blocks):
            xa = block(xa, context, temb, rope, keep_mask(skips, "audio_self_attn", i, like), mods=mods[i])
        mod = self.audio_scale_shift_table + temb.audio_embedded[:, :, None]
        _, xa = residual_norm(self.ops, xa, mod[:, :, 0], mod[:, :, 1], self.config.norm_eps, "layer")
        return audio.new_zeros((b, 0, self.config.out_channels)), self.audio_proj_out(xa)

    def _check(self, video, audio, audio_sigma, audio_timesteps, context, rope, skip) -> list[Skip]:
        c = self.config
        if audio.ndim != 3 or audio.shape[-1] != c.audio_in_channels:
            raise ValueError(f"transformer: audio must be (B, N, {c.audio_in_channels}), got {tuple(audio.shape)}")
        b, na = audio.shape[:2]
        if not isinstance(video, torch.Tensor) or video.ndim != 3 or video.shape[0] != b or video.shape[1] != 0:
            got = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise ValueError(f"transformer: the audio-only transformer takes a video of zero tokens (B={b}, 0, C), "
                             f"got {got}")
        for name, t, shapes in (("audio_sigma", audio_sigma, ((b,),)), ("audio_timesteps", audio_timesteps,
                                                                         ((b,), (b, na)))):
            if not isinstance(t, torch.Tensor) or tuple(t.shape) not in shapes:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"transformer: {name} must have shape " + " or ".join(map(str, shapes)) +
                                 f", got {got}")
        if (not isinstance(context, TextContext) or context.audio.shape[0] != b
                or (context.bias is not None and context.bias.shape[0] != b)):
            raise ValueError(f"transformer: context must be the TextContext of prepare_context for the same batch "
                             f"({b})")
        if not isinstance(rope, RopeTables) or rope.audio[0].shape[-2] != na or rope.audio[0].shape[0] not in (1, b):
            raise ValueError(f"transformer: rope must be the RopeTables of rope(None, positions) for {na} audio "
                             f"tokens (batch 1 or {b})")
        skips = [Skip()] * b if skip is None else [skip] * b if isinstance(skip, Skip) else list(skip)
        if len(skips) != b or not all(isinstance(s, Skip) for s in skips):
            raise ValueError(f"transformer: skip must be a Skip or a list of {b} Skip (one per sample), got {skip!r}")
        for s in skips:
            blocks = s.audio_self_attn
            if blocks != ALL and any(i >= c.num_layers for i in blocks):
                raise ValueError(f"transformer: Skip.audio_self_attn block indices must be < num_layers = "
                                 f"{c.num_layers} (0-based), got {sorted(blocks)}")
        return skips


class AudioTextConnectors(TextConnectors):
    """``TextConnectors``' audio part: Gemma hidden states -> the audio context alone. The feature
    projection is V1's shared ``text_proj_in`` (2.0) or V2's ``audio_text_proj_in`` (2.3+)."""

    modalities = ("audio",)

    def __init__(self, config, ops: Ops = TORCH_OPS):
        nn.Module.__init__(self)
        self.config = config
        flat = config.caption_channels * config.text_proj_in_factor
        if config.per_modality_projections:
            self.audio_text_proj_in = OpsLinear(flat, config.audio_hidden_dim, bias=config.proj_bias, ops=ops)
        else:
            self.text_proj_in = OpsLinear(flat, config.caption_channels, bias=config.proj_bias, ops=ops)
        self.audio_connector = ConnectorTransformer1d(config, "audio", ops)

    @staticmethod
    def owns(key: str) -> bool:
        return key.startswith(("text_proj_in.", "audio_text_proj_in.", "audio_connector."))

    @property
    def _weight(self) -> torch.Tensor:
        return (self.audio_text_proj_in if self.config.per_modality_projections else self.text_proj_in).weight

    @property
    def sequence_multiple(self) -> int:
        return self.audio_connector.learnable_registers.shape[0]

    def forward(self, hidden_states, attention_mask) -> tuple[None, torch.Tensor, torch.Tensor]:
        """TextConnectors.forward without the video context: -> (None, audio context, mask)."""
        states, valid = self._check_inputs(hidden_states, attention_mask)
        cfg = self.config
        if cfg.per_modality_projections:
            features = rms_text_features(states, valid, self._weight.dtype)
            audio_in = self.audio_text_proj_in(features * math.sqrt(cfg.audio_hidden_dim / cfg.caption_channels))
        else:
            audio_in = self.text_proj_in(normalize_text_features(states, valid, self._weight.dtype))
        audio = self.audio_connector(audio_in, valid)
        return None, audio, torch.ones(valid.shape, dtype=torch.long, device=valid.device)
