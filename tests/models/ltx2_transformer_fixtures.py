"""The tiny LTX-2 transformers of the tests: diffusers' LTX2VideoTransformer3DModel with random weights
and ours loaded from it, their inputs, and the same weights in Lightricks' original layout (key names,
header section, ltx-core's LTXModel). Used by the model, loading, LoRA, fp8 and pipeline tests."""

from __future__ import annotations

import pytest
import torch

from ltxengine.config import LTX2TransformerConfig, parse_config
from ltxengine.models.ltx2_transformer import LTX2Transformer
from ltxengine.presets import TINY_LTX2, TINY_LTX23, TINY_LTX25
from tests.helpers import perturb_, preset_kwargs
from tests.oracles import ltx_core

diffusers_ltx2 = pytest.importorskip("diffusers.models.transformers.transformer_ltx2")

# fp32 rounding of the same arithmetic in a different order (fused rms_norm in ltx-core, addcmul in the
# split rotary) over 2-3 blocks measures ~1e-6; a wiring error moves outputs by > 1e-2.
REL = 1e-5

# Tiny configs covering the 2.0 switches: split/interleaved RoPE, float64/float32 frequency grid,
# causal offset, gate timestep multiplier (1000 = diffusers' converter, 1 = ltx-core's default),
# equal and different video/audio head counts (the cross-modal RoPE is sliced per *video* head).
# "split64" is presets.TINY_LTX2 (bench's --smoke model); the other two differ in those switches on purpose.
TINY = {
    "split64": dict(preset_kwargs(TINY_LTX2, LTX2TransformerConfig()), rope_type="split",
                    rope_double_precision=True),
    "interleaved32": dict(num_attention_heads=4, attention_head_dim=8, cross_attention_dim=32,
                          audio_num_attention_heads=2, audio_attention_head_dim=8, audio_cross_attention_dim=16,
                          num_layers=3, caption_channels=20, in_channels=8, out_channels=8, audio_in_channels=4,
                          audio_out_channels=4, rope_type="interleaved", rope_double_precision=False,
                          causal_offset=0, cross_attn_timestep_scale_multiplier=1),
    "split_heads": dict(num_attention_heads=4, attention_head_dim=12, cross_attention_dim=48,
                        audio_num_attention_heads=2, audio_attention_head_dim=16, audio_cross_attention_dim=32,
                        num_layers=2, caption_channels=16, in_channels=8, out_channels=8, audio_in_channels=6,
                        audio_out_channels=6, rope_type="split", rope_double_precision=True),
}

# Tiny configs covering the 2.3 / 2.5 switches (diffusers' names): the presets (every switch on), the
# same switches on the other RoPE layout and head geometry, diffusers' per-stream flags set apart
# (the reference has one flag for both streams), and the static K/V modulation (use_prompt_adaln_single).
_BASE = LTX2TransformerConfig()
TINY_V23 = {
    "v23": preset_kwargs(TINY_LTX23, _BASE),
    "v25": preset_kwargs(TINY_LTX25, _BASE),
    "v25_interleaved32": dict(TINY["interleaved32"], **{k: v for k, v in preset_kwargs(TINY_LTX25, _BASE).items()
                                                       if k not in preset_kwargs(TINY_LTX2, _BASE)}),
    "video_gate_audio_mod": dict(TINY["split_heads"], gated_attn=True, audio_cross_attn_mod=True, ff_bias=False,
                                 perturbed_attn=True),
    "static_kv": dict(preset_kwargs(TINY_LTX23, _BASE), use_prompt_adaln_single=False),
}

F, H, W, NA, L, FPS = 3, 2, 3, 5, 7, 24.0


def pair(name, perturbed_attn=False):
    """(diffusers model, ours, config) with the same random weights; ``name`` in TINY or TINY_V23."""
    torch.manual_seed(0)
    kwargs = dict(TINY[name] if name in TINY else TINY_V23[name])
    kwargs["perturbed_attn"] = kwargs.get("perturbed_attn", False) or perturbed_attn
    ref = diffusers_ltx2.LTX2VideoTransformer3DModel(**kwargs).eval()
    perturb_(ref, seed=1, std=0.2)
    cfg = parse_config(LTX2TransformerConfig, dict(ref.config), "test")
    ours = LTX2Transformer(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours, cfg


def inputs(cfg, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    nv = F * H * W
    video = torch.randn(batch, nv, cfg.in_channels, generator=g)
    audio = torch.randn(batch, NA, cfg.audio_in_channels, generator=g)
    widths = cfg.text_widths  # 2.0: caption features; 2.3+: the connectors' per-modality widths
    vtext = torch.randn(batch, L, widths[0], generator=g)
    atext = torch.randn(batch, L, widths[1], generator=g)
    mask = torch.ones(batch, L, dtype=torch.long)
    mask[0, -2:] = 0
    sigma_v = torch.tensor([0.7, 0.3])[:batch]
    sigma_a = torch.tensor([0.6, 0.3])[:batch]
    # Image conditioning: first latent frame clean (mask 0), so per-token video timesteps.
    den = torch.ones(batch, nv)
    den[:, : H * W] = 0.0
    return dict(video=video, audio=audio, vtext=vtext, atext=atext, mask=mask, sigma_v=sigma_v, sigma_a=sigma_a,
                vt=sigma_v[:, None] * den)


def run_ours(model, x, skip=None, legacy=False, keyframes=None):
    """Our transformer on ``inputs``: (video, audio) outputs."""
    b = x["video"].shape[0]
    rope = model.rope(model.video_positions(b, F, H, W, FPS), model.audio_positions(b, NA))
    ctx = model.prepare_context(x["vtext"], x["atext"], x["mask"])
    with torch.no_grad():
        return model(x["video"], x["audio"], video_sigma=x["sigma_v"], audio_sigma=x["sigma_a"],
                     video_timesteps=x["vt"], context=ctx, rope=rope, skip=skip, legacy_cross_timestep=legacy,
                     keyframes=keyframes)


def run_diffusers(ref, x, **kw):
    """diffusers' transformer on ``inputs`` (timesteps scaled to [0, 1000]), ltx-core's cross timestep."""
    with torch.no_grad():
        return ref(hidden_states=x["video"], audio_hidden_states=x["audio"], encoder_hidden_states=x["vtext"],
                   audio_encoder_hidden_states=x["atext"], timestep=x["vt"] * 1000,
                   audio_timestep=x["sigma_a"] * 1000, sigma=x["sigma_v"] * 1000, audio_sigma=x["sigma_a"] * 1000,
                   encoder_attention_mask=x["mask"], audio_encoder_attention_mask=x["mask"], num_frames=F, height=H,
                   width=W, fps=FPS, audio_num_frames=NA, return_dict=False, use_cross_timestep=True, **kw)


# -- the original (Lightricks / ltx-core) layout ---------------------------------------------------

_TO_ORIGINAL = (
    ("audio_proj_in", "audio_patchify_proj"), ("proj_in", "patchify_proj"),
    ("av_cross_attn_video_scale_shift", "av_ca_video_scale_shift_adaln_single"),
    ("av_cross_attn_audio_scale_shift", "av_ca_audio_scale_shift_adaln_single"),
    ("av_cross_attn_video_a2v_gate", "av_ca_a2v_gate_adaln_single"),
    ("av_cross_attn_audio_v2a_gate", "av_ca_v2a_gate_adaln_single"),
    ("video_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_video"),
    ("audio_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_audio"),
    ("norm_q", "q_norm"), ("norm_k", "k_norm"),
)


def to_original(key: str) -> str:
    """Our (diffusers) key -> Lightricks' original module path (without the file prefix)."""
    if key.startswith("time_embed."):
        key = "adaln_single." + key[len("time_embed."):]
    elif key.startswith("audio_time_embed."):
        key = "audio_adaln_single." + key[len("audio_time_embed."):]
    elif key.startswith(("prompt_adaln.", "audio_prompt_adaln.")):
        key = key.replace("prompt_adaln.", "prompt_adaln_single.", 1)
    for new, old in _TO_ORIGINAL:
        key = key.replace(new, old)
    return key


def original_section(cfg: LTX2TransformerConfig) -> dict:
    """The header ``transformer`` section ltx-core's configurator reads, for ``cfg``; the 2.3 / 2.5
    switches (ltx-core @400fd31 names; one flag for both streams) only where they are on."""
    section = {
        "num_attention_heads": cfg.num_attention_heads, "attention_head_dim": cfg.attention_head_dim,
        "in_channels": cfg.in_channels, "out_channels": cfg.out_channels, "num_layers": cfg.num_layers,
        "cross_attention_dim": cfg.cross_attention_dim, "norm_eps": cfg.norm_eps,
        "positional_embedding_theta": cfg.rope_theta,
        "positional_embedding_max_pos": [cfg.pos_embed_max_pos, cfg.base_height, cfg.base_width],
        "timestep_scale_multiplier": cfg.timestep_scale_multiplier, "use_middle_indices_grid": True,
        "audio_num_attention_heads": cfg.audio_num_attention_heads,
        "audio_attention_head_dim": cfg.audio_attention_head_dim, "audio_in_channels": cfg.audio_in_channels,
        "audio_out_channels": cfg.audio_out_channels, "audio_cross_attention_dim": cfg.audio_cross_attention_dim,
        "audio_positional_embedding_max_pos": [cfg.audio_pos_embed_max_pos],
        "av_ca_timestep_scale_multiplier": cfg.cross_attn_timestep_scale_multiplier, "rope_type": cfg.rope_type,
        "frequencies_precision": "float64" if cfg.rope_double_precision else "float32",
        "caption_channels": cfg.caption_channels,
        # Fixed values ltx-core's configurator insists on (so real headers carry them).
        "dropout": 0.0, "attention_bias": True, "num_vector_embeds": None, "activation_fn": "gelu-approximate",
        "num_embeds_ada_norm": 1000, "use_linear_projection": False, "only_cross_attention": False,
        "cross_attention_norm": True, "double_self_attention": False, "upcast_attention": False,
        "standardization_norm": "rms_norm", "norm_elementwise_affine": False, "qk_norm": "rms_norm",
        "positional_embedding_type": "rope", "use_audio_video_cross_attention": True, "share_ff": False,
        "av_cross_ada_norm": True,
    }
    if cfg.gated_attn or cfg.audio_gated_attn:
        assert cfg.gated_attn == cfg.audio_gated_attn, "the original format has one gating flag"
        section["apply_gated_attention"] = True
    if cfg.kv_mod:
        assert cfg.cross_attn_mod == cfg.audio_cross_attn_mod, "the original format has one adaLN flag"
        section["cross_attention_adaln"] = True
        if not cfg.use_prompt_adaln_single:
            section["use_prompt_adaln_single"] = False
    if not cfg.use_prompt_embeddings:
        section["caption_proj_before_connector"] = True
    for key in ("ff_bias", "audio_ff_bias"):
        if not getattr(cfg, key):
            section[key] = False
    if cfg.use_keyframes_abs_pos_embedding:
        section["use_keyframes_abs_pos_embedding"] = True
    return section


def ltx_core_model(cfg: LTX2TransformerConfig, state: dict):
    """ltx-core's LTXModel built by its configurator from ``original_section(cfg)``, holding ``state``
    (our keys) under the original names, loaded strictly."""
    configurator = ltx_core("model.transformer.model_configurator")
    with torch.device("meta"):
        model = configurator.LTXModelConfigurator.from_config({"transformer": original_section(cfg)})
    model.load_state_dict({to_original(k): v for k, v in state.items()}, strict=True, assign=True)
    return model.eval()
