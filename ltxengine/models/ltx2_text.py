"""LTX-2 text path: Gemma hidden states -> feature extractor (V1 / V2) -> video / audio text connectors.

Two pieces, split the way Lightricks' single file stores them:

* ``GemmaTextEncoder`` (transformers, the stock Gemma 3 folder, or the Gemma 4 "unified" folder of
  LTX-2.5): tokenises with left padding to ``max_sequence_length`` and returns every hidden state
  (embedding output + one per layer).
* ``TextConnectors`` (weights in the LTX-2 checkpoint: ``text_embedding_projection.*aggregate_embed``
  and ``model.diffusion_model.{video,audio}_embeddings_connector``; diffusers' ``LTX2TextConnectors``,
  whose state-dict keys are ours): a feature extractor + its projection(s) + two 1-D connector
  transformers.

Feature extractor V1 (LTX-2.0). For each sample and each hidden state l, over the valid tokens
and all D channels: mean mu, minimum lo, maximum hi; x_hat = 8 * (x - mu) / (hi - lo + 1e-6); padded
positions are zeroed; the L states are flattened with the layer index fastest (feature d * L + l)
and projected by ``text_proj_in`` (Linear(D * L -> D), no bias). Both connectors read the same
projected features.

Feature extractor V2 (LTX-2.3 and 2.5, ``per_modality_projections``). Each hidden state of each token
is RMS-normalised over its D channels (x / sqrt(mean(x^2) + 1e-6), no weight), padded positions are
zeroed, the states are flattened as in V1, and two biased projections read them:
``video_text_proj_in`` (D * L -> video_hidden_dim) on the features times sqrt(video_hidden_dim / D),
``audio_text_proj_in`` (D * L -> audio_hidden_dim) on the features times sqrt(audio_hidden_dim / D).
Each connector then runs at its own width (2.3: video 32 x 128, audio 32 x 64).

Connector (``video_connector`` / ``audio_connector``): valid tokens move to the front (order kept)
and every later position p is filled with ``learnable_registers[p % R]``; from then on every
position is valid, so attention needs no mask and the returned mask is all ones. Then ``num_layers``
blocks x += Attn(RMSNorm(x)); x += FF(RMSNorm(x)) with 1-D RoPE (position p / base_seq_len) and Q/K
RMSNorm across heads, and a final weightless RMSNorm. LTX-2.3+ connectors gate the attention
(``{video,audio}_gated_attn``: head h of the attention output times 2 sigmoid(to_gate_logits(x))_h
before ``to_out``); ltx-core's ``connector_ff_bias`` = False drops the feed-forward biases (no
released checkpoint does; diffusers has no such option).

Where the references differ (ltx-core 1.0.0 followed):
* Both derive the normalisation mask from the sequence lengths and a padding side; ltx-core's
  register filling flips the mask, which is only right for left padding. We read valid positions
  from the mask itself, which equals both references for the left padding the tokenizer produces.
* Config: diffusers' converter hard-codes the 2.0 values (split RoPE, float64 grid, base 4096);
  ltx-core reads ``rope_type``, ``frequencies_precision`` and ``connector_positional_embedding_max_pos``
  from the checkpoint header, defaulting to interleaved / float32 / [1] (see
  ``ltxengine.loading.ltx2_text.config_from_original``). Both layouts and grids are implemented.
* ltx-core runs its connectors one prompt at a time (its register gather breaks for batch > 1);
  diffusers and we run batches.
* Precision: the references compute the normalisation and RoPE partly in the input dtype (ltx-core
  casts cos/sin to bf16 and rotates in bf16); we do those in fp32 and cast the result, so bf16 runs
  differ from the references at bf16 rounding level (~2 bf16 ulps, as the references differ from
  each other). fp32 runs agree to ~5e-7 of the output scale (feature statistics summed per layer).
  V2 likewise: the references take the per-token RMS and the sqrt(target / D) rescale in the
  states' dtype; we take the RMS in fp32 and round the normalised features once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from ..config import require
from ..ops import TORCH_OPS, Ops
from .common import OpsLinear
from .transformer import Attention, FeedForward

logger = logging.getLogger(__name__)

__all__ = ["TextConnectorsConfig", "CONNECTORS_LTX20", "CONNECTORS_LTX23", "CONNECTORS_LTX25", "TextConnectors",
           "ConnectorTransformer1d", "GemmaTextEncoder", "normalize_text_features", "rms_text_features",
           "connector_rope"]

NORM_EPS = 1e-6  # block pre-norms, Q/K norms and the final norm of the connectors
FEATURE_EPS = 1e-6  # V1: added to the valid-element count and to the range; V2: inside the RMS root
FEATURE_SCALE = 8.0


@dataclass(frozen=True)
class TextConnectorsConfig:
    """diffusers' ``LTX2TextConnectors`` config.json; defaults are the LTX-2.0 release values."""

    caption_channels: int = 3840  # Gemma hidden size (3840 for Gemma-3-12B and Gemma-4-12B); V1: connector width
    text_proj_in_factor: int = 49  # Gemma hidden states stacked: 48 layers + the embedding output
    video_connector_num_attention_heads: int = 30
    video_connector_attention_head_dim: int = 128
    video_connector_num_layers: int = 2
    video_connector_num_learnable_registers: int | None = 128
    video_gated_attn: bool = False  # LTX-2.3+: per-head output gate in the connector's attention
    audio_connector_num_attention_heads: int = 30
    audio_connector_attention_head_dim: int = 128
    audio_connector_num_layers: int = 2
    audio_connector_num_learnable_registers: int | None = 128
    audio_gated_attn: bool = False  # LTX-2.3+
    connector_rope_base_seq_len: int | float = 4096  # ltx-core: connector_positional_embedding_max_pos[0]
    rope_theta: float = 10000.0
    rope_double_precision: bool = True  # frequency grid computed in float64, then rounded to fp32
    causal_temporal_positioning: bool = False  # stored by diffusers, used by neither reference
    rope_type: str = "split"  # "split" (2.0 release) or "interleaved" (ltx-core's default)
    per_modality_projections: bool = False  # LTX-2.3+: feature extractor V2, one projection per connector
    video_hidden_dim: int = 4096  # V2 only: video projection output = video connector width
    audio_hidden_dim: int = 2048  # V2 only: audio projection output = audio connector width
    proj_bias: bool = False  # the feature projection(s) have a bias (V2 releases: true)
    connector_ff_bias: bool = True  # ltx-core's connector_ff_bias; not a diffusers option (always biased there)

    def connector(self, which: str) -> tuple[int, int, int, int]:
        """(heads, head_dim, layers, registers) of the "video" or "audio" connector."""
        p = f"{which}_connector_"
        return (getattr(self, p + "num_attention_heads"), getattr(self, p + "attention_head_dim"),
                getattr(self, p + "num_layers"), getattr(self, p + "num_learnable_registers"))

    def connector_width(self, which: str) -> int:
        """The width the "video" / "audio" connector reads: caption_channels (V1) or its projection's output."""
        return getattr(self, f"{which}_hidden_dim") if self.per_modality_projections else self.caption_channels

    def validate(self, source: str) -> None:
        require(self.rope_type in ("split", "interleaved"), source, "rope_type", "must be 'split' or 'interleaved'",
                self.rope_type)
        for key in ("connector_rope_base_seq_len", "rope_theta"):
            value = getattr(self, key)
            require(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0, source, key,
                    "must be a positive number", value)
        for which in ("video", "audio"):
            heads, head_dim, layers, registers = self.connector(which)
            p = f"{which}_connector_"
            for key, value in (("num_attention_heads", heads), ("num_layers", layers)):
                require(_positive_int(value), source, p + key, "must be a positive int", value)
            require(_positive_int(head_dim) and head_dim % 2 == 0, source, p + "attention_head_dim",
                    "must be a positive even int (RoPE rotates pairs)", head_dim)
            require(_positive_int(registers), source, p + "num_learnable_registers",
                    "must be a positive int (every released LTX-2 connector fills padding with registers)", registers)
        keys = ("caption_channels", "text_proj_in_factor") + (
            ("video_hidden_dim", "audio_hidden_dim") if self.per_modality_projections else ())
        for key in keys:
            require(_positive_int(getattr(self, key)), source, key, "must be a positive int", getattr(self, key))
        for which in ("video", "audio"):
            heads, head_dim, _, _ = self.connector(which)
            if self.per_modality_projections:
                rule = f"times attention_head_dim must equal {which}_hidden_dim = {self.connector_width(which)} " \
                       f"(the {which} connector reads the {which} projection)"
            else:
                rule = f"times attention_head_dim must equal caption_channels = {self.caption_channels} (both " \
                       "connectors read the projected Gemma features)"
            require(heads * head_dim == self.connector_width(which), source, f"{which}_connector_num_attention_heads",
                    rule, (heads, head_dim))


# The released connector configs (diffusers' converter, scripts/convert_ltx2_to_diffusers.py @58eb52c,
# get_ltx2_connectors_config; the same values from ltx-core's header keys). 2.0 is the defaults.
CONNECTORS_LTX20 = TextConnectorsConfig()
CONNECTORS_LTX23 = TextConnectorsConfig(
    video_connector_num_attention_heads=32, video_connector_attention_head_dim=128, video_connector_num_layers=8,
    video_gated_attn=True, audio_connector_num_attention_heads=32, audio_connector_attention_head_dim=64,
    audio_connector_num_layers=8, audio_gated_attn=True, per_modality_projections=True, video_hidden_dim=4096,
    audio_hidden_dim=2048, proj_bias=True)
# 2.5: the 2.3 connectors; the converter takes caption_channels / text_proj_in_factor from the Gemma 4
# config, and Gemma-4-12B (48 layers of width 3840, per its model card) gives 2.3's 3840 x 49.
CONNECTORS_LTX25 = CONNECTORS_LTX23


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def normalize_text_features(states: torch.Tensor | Sequence[torch.Tensor], mask: torch.Tensor,
                            dtype: torch.dtype | None = None) -> torch.Tensor:
    """Feature extractor V1 without the projection -> (B, T, D * L), feature index d * L + l.

    states: (B, T, D, L) stacked hidden states, or a sequence of L tensors (B, T, D) (no stacking
    copy); mask: (B, T) bool, True = valid token. Statistics and arithmetic in fp32; the result is in
    ``dtype`` (default: the states' dtype). Padded positions are exactly 0.
    """
    layers = list(states) if isinstance(states, (list, tuple)) else list(states.unbind(-1))
    b, t, d = layers[0].shape
    dtype = dtype or layers[0].dtype
    out = torch.empty(b, t, d, len(layers), dtype=dtype, device=layers[0].device)
    valid = mask[:, :, None]
    count = (mask.sum(1) * d).to(torch.float32) + FEATURE_EPS  # (B,)
    for i, h in enumerate(layers):
        hf = h.float()
        mean = torch.where(valid, hf, 0.0).sum((1, 2)) / count
        lo = torch.where(valid, hf, math.inf).amin((1, 2))
        hi = torch.where(valid, hf, -math.inf).amax((1, 2))
        normed = (hf - mean[:, None, None]) / (hi - lo + FEATURE_EPS)[:, None, None] * FEATURE_SCALE
        out[..., i] = torch.where(valid, normed, 0.0)
    return out.flatten(2)


def rms_text_features(states: torch.Tensor | Sequence[torch.Tensor], mask: torch.Tensor,
                      dtype: torch.dtype | None = None) -> torch.Tensor:
    """Feature extractor V2 without the rescale and projections -> (B, T, D * L), feature index d * L + l.

    Each hidden state of each token divided by its RMS over the D channels (eps 1e-6 inside the
    root); same inputs, fp32 arithmetic, output dtype and zeroed padding as ``normalize_text_features``.
    """
    layers = list(states) if isinstance(states, (list, tuple)) else list(states.unbind(-1))
    b, t, d = layers[0].shape
    out = torch.empty(b, t, d, len(layers), dtype=dtype or layers[0].dtype, device=layers[0].device)
    valid = mask[:, :, None]
    for i, h in enumerate(layers):
        hf = h.float()
        normed = hf * torch.rsqrt(hf.square().mean(-1, keepdim=True) + FEATURE_EPS)
        out[..., i] = torch.where(valid, normed, 0.0)
    return out.flatten(2)


def connector_rope(seq_len: int, heads: int, head_dim: int, base_seq_len: float, theta: float,
                   double_precision: bool, rope_type: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D RoPE tables, fp32. Angle of frequency i at position p: f_i * (2 * p / base_seq_len - 1),
    f_i = (pi / 2) * theta ** (i / (n - 1)), n = heads * head_dim / 2 frequencies.

    "split": (1, heads, T, head_dim / 2), head h taking frequencies [h * head_dim / 2, (h + 1) * head_dim / 2)
    and rotating the first half of its channels against the second; "interleaved": (1, T, heads * head_dim),
    each angle twice, rotating adjacent channel pairs. Both are the layouts ``ops.qk_norm_rope`` takes
    (4-D = split, see ``ops.reference.apply_rope``).
    """
    n = heads * head_dim // 2
    grid_dtype = torch.float64 if double_precision else torch.float32
    freqs = (theta ** torch.linspace(0.0, 1.0, n, dtype=grid_dtype, device=device) * math.pi / 2).float()
    pos = torch.arange(seq_len, dtype=torch.float32, device=device) / base_seq_len
    angles = (pos[:, None] * 2 - 1) * freqs  # (T, n)
    cos, sin = angles.cos(), angles.sin()
    if rope_type == "split":
        return tuple(x.unflatten(-1, (heads, -1)).transpose(0, 1)[None] for x in (cos, sin))
    return cos.repeat_interleave(2, -1)[None], sin.repeat_interleave(2, -1)[None]


class ConnectorBlock(nn.Module):
    """x += Attn(RMSNorm(x)); x += FF(RMSNorm(x)), parameter-free pre-norms. Keys attn1.* (to_q/k/v, to_out.0,
    norm_q/k: the shared ``Attention``, Q/K RMSNorm + RoPE through ``ops.qk_norm_rope``; gated: to_gate_logits),
    ff.net.0.proj, ff.net.2."""

    def __init__(self, dim: int, heads: int, head_dim: int, ops: Ops = TORCH_OPS, gated: bool = False,
                 ff_bias: bool = True):
        super().__init__()
        self.attn1 = Attention(dim, heads, head_dim, None, True, True, ops, eps=NORM_EPS, gated=gated)
        self.ff = FeedForward(dim, ops, bias=ff_bias)
        self.ops = ops

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h = self.ops.ada_norm(x, None, None, NORM_EPS, "rms")
        x = self.ops.gated_residual(x, self.attn1(h, rope=rope), None)
        h = self.ops.ada_norm(x, None, None, NORM_EPS, "rms")
        return self.ops.gated_residual(x, self.ff(h), None)


class ConnectorTransformer1d(nn.Module):
    """One connector (diffusers' ``LTX2ConnectorTransformer1d``, ltx-core's ``Embeddings1DConnector``)."""

    def __init__(self, config: TextConnectorsConfig, which: str, ops: Ops = TORCH_OPS):
        super().__init__()
        heads, head_dim, layers, registers = config.connector(which)
        dim = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.rope_args = (config.connector_rope_base_seq_len, config.rope_theta, config.rope_double_precision,
                          config.rope_type)
        self.learnable_registers = nn.Parameter(torch.zeros(registers, dim))
        gated, ff_bias = getattr(config, f"{which}_gated_attn"), config.connector_ff_bias
        self.transformer_blocks = nn.ModuleList([ConnectorBlock(dim, heads, head_dim, ops, gated, ff_bias)
                                                 for _ in range(layers)])
        self.ops = ops

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D); valid: (B, T) bool. -> (B, T, D); every output position is valid."""
        x = self._fill_registers(x, valid)
        base, theta, double, rope_type = self.rope_args
        rope = connector_rope(x.shape[1], self.heads, self.head_dim, base, theta, double, rope_type, x.device)
        for block in self.transformer_blocks:
            x = block(x, rope)
        return self.ops.ada_norm(x, None, None, NORM_EPS, "rms")

    def _fill_registers(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        r = self.learnable_registers.shape[0]
        # Stable sort on "is padding": valid tokens first, in their original order.
        order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices
        packed = torch.gather(x, 1, order[..., None].expand(b, t, d))
        registers = self.learnable_registers.to(x.dtype).repeat(t // r, 1)  # position p -> register p % r
        keep = torch.arange(t, device=x.device)[None, :, None] < valid.sum(1)[:, None, None]
        return torch.where(keep, packed, registers[None])


class TextConnectors(nn.Module):
    """Feature extractor V1 + ``text_proj_in``, or V2 + ``video_text_proj_in`` / ``audio_text_proj_in``;
    then ``video_connector`` + ``audio_connector``."""

    def __init__(self, config: TextConnectorsConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        self.config = config
        flat = config.caption_channels * config.text_proj_in_factor
        if config.per_modality_projections:
            self.video_text_proj_in = OpsLinear(flat, config.video_hidden_dim, bias=config.proj_bias, ops=ops)
            self.audio_text_proj_in = OpsLinear(flat, config.audio_hidden_dim, bias=config.proj_bias, ops=ops)
        else:
            self.text_proj_in = OpsLinear(flat, config.caption_channels, bias=config.proj_bias, ops=ops)
        self.video_connector = ConnectorTransformer1d(config, "video", ops)
        self.audio_connector = ConnectorTransformer1d(config, "audio", ops)

    @property
    def _weight(self) -> torch.Tensor:
        """A projection weight: the device and dtype the connectors compute in."""
        proj = self.video_text_proj_in if self.config.per_modality_projections else self.text_proj_in
        return proj.weight

    @property
    def device(self) -> torch.device:
        return self._weight.device

    @property
    def sequence_multiple(self) -> int:
        """Text lengths must be multiples of this (register filling tiles the registers)."""
        return math.lcm(self.video_connector.learnable_registers.shape[0],
                        self.audio_connector.learnable_registers.shape[0])

    def forward(self, hidden_states: torch.Tensor | Sequence[torch.Tensor], attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gemma hidden states + tokenizer mask -> (video context, audio context, mask).

        hidden_states: (B, T, D, L), (B, T, D * L) with the layer index fastest (diffusers'
        ``prompt_embeds``), or a sequence of L tensors (B, T, D); attention_mask: (B, T), 1/True =
        token. Returns contexts (B, T, video width) and (B, T, audio width) in the weights' dtype and
        an all-ones (B, T) int64 mask.
        """
        states, valid = self._check_inputs(hidden_states, attention_mask)
        video_in, audio_in = self._features(states, valid)
        video = self.video_connector(video_in, valid)
        audio = self.audio_connector(audio_in, valid)
        return video, audio, torch.ones(valid.shape, dtype=torch.long, device=valid.device)

    def _features(self, states, valid) -> tuple[torch.Tensor, torch.Tensor]:
        """The projected features each connector reads (one shared tensor for V1)."""
        cfg = self.config
        if not cfg.per_modality_projections:
            projected = self.text_proj_in(normalize_text_features(states, valid, self._weight.dtype))
            return projected, projected
        features = rms_text_features(states, valid, self._weight.dtype)
        return (self.video_text_proj_in(features * math.sqrt(cfg.video_hidden_dim / cfg.caption_channels)),
                self.audio_text_proj_in(features * math.sqrt(cfg.audio_hidden_dim / cfg.caption_channels)))

    def _check_inputs(self, hidden_states, attention_mask):
        d, n_layers = self.config.caption_channels, self.config.text_proj_in_factor
        want = f"(B, T, {d}, {n_layers}), (B, T, {d * n_layers}) or {n_layers} tensors (B, T, {d})"
        is_tensor = isinstance(hidden_states, torch.Tensor)
        if isinstance(hidden_states, (list, tuple)):
            shapes = sorted({tuple(h.shape) for h in hidden_states})
            if len(hidden_states) != n_layers or len(shapes) != 1 or len(shapes[0]) != 3 or shapes[0][-1] != d:
                raise ValueError(f"TextConnectors: hidden_states must be {want}, got {len(hidden_states)} tensors of "
                                 f"shapes {shapes}")
            states = list(hidden_states)
        elif is_tensor and hidden_states.ndim == 3 and hidden_states.shape[-1] == d * n_layers:
            states = hidden_states.unflatten(-1, (d, n_layers))
        elif is_tensor and hidden_states.ndim == 4 and hidden_states.shape[2:] == (d, n_layers):
            states = hidden_states
        else:
            got = tuple(hidden_states.shape) if is_tensor else type(hidden_states).__name__
            raise ValueError(f"TextConnectors: hidden_states must be {want}, got {got}")
        b, t = hidden_states[0].shape[:2] if isinstance(hidden_states, (list, tuple)) else hidden_states.shape[:2]
        if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != (b, t):
            got = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else attention_mask
            raise ValueError(f"TextConnectors: attention_mask must have shape (B, T) = {(b, t)}, got {got}")
        if attention_mask.is_floating_point() or attention_mask.is_complex() or not bool(
                ((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError(f"TextConnectors: attention_mask must hold 0/1 (int or bool), got dtype "
                             f"{attention_mask.dtype} with values {attention_mask.unique().tolist()[:8]}")
        if t % self.sequence_multiple:
            raise ValueError(f"TextConnectors: sequence length must be a multiple of {self.sequence_multiple} (the "
                             f"connectors' learnable registers), got {t}")
        return states, attention_mask.to(device=self.device, dtype=torch.bool)


# model_type -> transformers class: Gemma 3 (LTX-2.0, 2.3) as Google releases it or text-only, and the
# Gemma 4 "unified" 12B LTX-2.5 encodes with (diffusers' and ltx-core's choice). The dense Gemma 4
# ("gemma4", e.g. gemma-4-E2B-it) is only ltx-core's prompt enhancer, not an encoder.
_GEMMA_CLASSES = {"gemma3": "Gemma3ForConditionalGeneration", "gemma3_text": "Gemma3ForCausalLM",
                  "gemma4_unified": "Gemma4UnifiedForConditionalGeneration"}
_GEMMA_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_GEMMA_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


class GemmaTextEncoder:
    """Gemma 3 or Gemma 4 unified (transformers) + its tokenizer, optionally with the LTX-2 ``TextConnectors``.

    Like ltx-core, the forward runs the model's backbone (``model.model``: no LM head, whose
    logits diffusers computes and discards); the hidden states are the same. Like ltx-core (not
    diffusers), every prompt starts with ``<bos>``: Gemma 3's tokenizer adds it, Gemma 4's does not,
    so it is prepended where missing.
    """

    def __init__(self, model, tokenizer, connectors: TextConnectors | None = None):
        self.model = model
        self.tokenizer = tokenizer
        # Both references tokenise with left padding and fall back to eos for padding.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.connectors = None
        if connectors is not None:
            self.attach(connectors)

    @classmethod
    def from_folder(cls, gemma_dir, tokenizer_dir=None, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.bfloat16, connectors: TextConnectors | None = None,
                    checkpoint_metadata: dict | None = None) -> "GemmaTextEncoder":
        """Load a local Gemma folder: Gemma 3 (``Gemma3ForConditionalGeneration`` as released by Google,
        or a text-only ``Gemma3ForCausalLM``) or Gemma 4 unified (``Gemma4UnifiedForConditionalGeneration``,
        LTX-2.5). The tokenizer comes from ``tokenizer_dir``, else from a ``tokenizer/`` subfolder when
        there is one, else from ``gemma_dir``. Nothing is downloaded, no code from the folders runs (an
        ``auto_map`` is refused), and the weights must match the model exactly (see
        ``ltxengine.loading.text_encoders``). ``checkpoint_metadata``: the LTX checkpoint's header
        metadata; when given, the Gemma must be the one it names (ltx-core's version check,
        ``loading.text_encoders.check_gemma_version``), checked before any weight is read."""
        import os

        import transformers

        from ..loading.safetensors_io import read_json
        from ..loading.text_encoders import (check_gemma_version, checked_folder, dtype_kwarg, load_model,
                                             load_tokenizer)

        root = checked_folder(gemma_dir, "Gemma", "gemma_dir", ("config.json",), _GEMMA_WEIGHTS)
        if tokenizer_dir is None:
            sub = root / "tokenizer"
            tokenizer_dir = sub if any(os.path.lexists(sub / f) for f in _GEMMA_TOKENIZER_FILES) else root
        tok_dir = checked_folder(tokenizer_dir, "Gemma tokenizer", "tokenizer_dir", (), _GEMMA_TOKENIZER_FILES)
        config = read_json(root / "config.json", "Gemma config.json")
        model_type = config.get("model_type")
        if model_type not in _GEMMA_CLASSES:
            raise ValueError(f"gemma_dir: {str(root)!r} holds a {model_type!r} model; LTX-2 needs Gemma 3 (2.0, 2.3) "
                             f"or Gemma 4 unified (2.5) (model_type one of {sorted(_GEMMA_CLASSES)})")
        if checkpoint_metadata is not None:
            check_gemma_version(checkpoint_metadata, config, f"gemma_dir {str(root)!r}")
        model_cls = getattr(transformers, _GEMMA_CLASSES[model_type])
        model = load_model(model_cls, root, "Gemma text encoder", **{dtype_kwarg(): dtype})
        model = model.to(device).eval().requires_grad_(False)
        tokenizer = load_tokenizer(tok_dir, "Gemma tokenizer")
        return cls(model, tokenizer, connectors)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def text_config(self):
        config = self.model.config
        return config.get_text_config() if hasattr(config, "get_text_config") else config

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    @property
    def num_hidden_states(self) -> int:
        """Embedding output + one per layer (49 for Gemma-3-12B)."""
        return self.text_config.num_hidden_layers + 1

    def attach(self, connectors: TextConnectors) -> "GemmaTextEncoder":
        cfg = connectors.config
        if (cfg.caption_channels, cfg.text_proj_in_factor) != (self.hidden_size, self.num_hidden_states):
            raise ValueError(
                f"attach: the connectors expect {cfg.text_proj_in_factor} hidden states of width "
                f"{cfg.caption_channels}, this Gemma gives {self.num_hidden_states} of width {self.hidden_size}")
        self.connectors = connectors
        return self

    def tokenize(self, prompts: str | Sequence[str], max_sequence_length: int = 1024
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (input_ids, attention_mask), both (B, max_sequence_length) int64, left padded.
        Prompts are stripped; longer ones are truncated with a warning."""
        prompts = _check_prompts(prompts, max_sequence_length)
        enc = self.tokenizer(prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
                             add_special_tokens=True, return_tensors="pt")
        bos = self.tokenizer.bos_token_id
        if bos is None:
            raise ValueError("tokenize: the Gemma tokenizer has no bos_token_id (every prompt starts with <bos>)")
        full = [ids if ids[:1] == [bos] else [bos] + ids
                for ids in self.tokenizer(prompts, add_special_tokens=True).input_ids]
        input_ids, mask = _with_bos(enc.input_ids, enc.attention_mask, bos, self.tokenizer.pad_token_id)
        for i, ids in enumerate(full):
            if len(ids) > max_sequence_length:
                left = getattr(self.tokenizer, "truncation_side", "right") == "left"
                dropped = ids[:len(ids) - max_sequence_length] if left else ids[max_sequence_length:]
                logger.warning("prompt %d has %d tokens, more than max_sequence_length = %d; dropped: %r", i,
                               len(ids), max_sequence_length, self.tokenizer.decode(dropped))
        return input_ids, mask

    @torch.no_grad()
    def _run(self, prompts, max_sequence_length: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        ids, mask = self.tokenize(prompts, max_sequence_length)
        backbone = getattr(self.model, "model", self.model)
        out = backbone(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                       output_hidden_states=True, use_cache=False)
        return tuple(out.hidden_states), mask.to(self.device)

    def hidden_states(self, prompts: str | Sequence[str], max_sequence_length: int = 1024
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (states (B, T, D, L) in the model dtype, attention_mask (B, T) int64), T = max_sequence_length."""
        states, mask = self._run(prompts, max_sequence_length)
        return torch.stack(states, dim=-1), mask

    @torch.no_grad()
    def encode(self, prompts: str | Sequence[str], max_sequence_length: int = 1024
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (video context, audio context, mask): (B, T, D), (B, T, D), (B, T) int64 (all ones)."""
        if self.connectors is None:
            raise ValueError("encode: no TextConnectors attached (pass connectors= or call attach() first; "
                             "hidden_states() returns the raw Gemma features)")
        multiple = self.connectors.sequence_multiple
        if _positive_int(max_sequence_length) and max_sequence_length % multiple:
            raise ValueError(f"encode: max_sequence_length must be a multiple of {multiple} (the connectors' "
                             f"learnable registers), got {max_sequence_length}")
        states, mask = self._run(prompts, max_sequence_length)
        device = self.connectors.device
        return self.connectors([h.to(device) for h in states], mask.to(device))


def _with_bos(ids: torch.Tensor, mask: torch.Tensor, bos: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded rows whose first token is not ``bos`` get it prepended, dropping their last token
    when the row is full (ltx-core's ``LTXGemmaTokenizer``: [bos, *ids][:max_length]). Rows that
    start with it (every Gemma 3 prompt) are returned as they are."""
    t = ids.shape[1]
    lengths = mask.sum(1)
    first = ids.gather(1, (t - lengths).clamp(max=t - 1)[:, None])[:, 0]
    missing = (lengths == 0) | (first != bos)
    if not bool(missing.any()):
        return ids, mask
    ids, mask = ids.clone(), mask.clone()
    for i in missing.nonzero()[:, 0].tolist():
        row = torch.cat([ids.new_tensor([bos]), ids[i, t - int(lengths[i]):]])[:t]
        ids[i], mask[i] = pad, 0
        ids[i, t - len(row):], mask[i, t - len(row):] = row, 1
    return ids, mask


def _check_prompts(prompts, max_sequence_length) -> list[str]:
    if not _positive_int(max_sequence_length):
        raise ValueError(f"max_sequence_length must be a positive int, got {max_sequence_length!r}")
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a str or a non-empty list of str, got {prompts!r}")
    return [p.strip() for p in prompts]
