"""Declarative key maps from checkpoint formats to ltxengine's layout (= diffusers' keys).

A map selects the keys under a prefix, drops the ones that carry no model weight, then applies
ordered substring replacements to each key (the order matters: earlier rules see the original
name, later rules see the result). Lightricks' single-file names come from the original
LTX-Video code; the renames are those of diffusers' single-file converter.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KeyMap:
    prefix: str  # only keys starting with this belong to the component; it is stripped
    renames: tuple[tuple[str, str], ...] = ()
    drop: tuple[str, ...] = ()  # keys (after the prefix) containing one of these are ignored

    def apply(self, key: str) -> str | None:
        """Model key for checkpoint ``key``, or None when the key is not part of the component
        or is dropped."""
        if not key.startswith(self.prefix):
            return None
        key = key[len(self.prefix):]
        if any(d in key for d in self.drop):
            return None
        for old, new in self.renames:
            key = key.replace(old, new)
        return key


IDENTITY = KeyMap(prefix="")

TRANSFORMER_SINGLE_FILE = KeyMap(
    prefix="model.diffusion_model.",
    renames=(("patchify_proj", "proj_in"), ("adaln_single", "time_embed"), ("q_norm", "norm_q"),
             ("k_norm", "norm_k")),
)

_VAE_COMMON_TAIL = (
    ("conv_shortcut", "conv_shortcut.conv"),
    ("res_blocks", "resnets"),
    ("norm3.norm", "norm3"),
    ("per_channel_statistics.mean-of-means", "latents_mean"),
    ("per_channel_statistics.std-of-means", "latents_std"),
)
# Statistics the model does not use (channel index, mean of stds).
_VAE_DROP = ("per_channel_statistics.channel", "per_channel_statistics.mean-of-stds")

# Original decoder: a flat list of up_blocks (mid, then upsampler / resnet groups);
# 0.9.0 additionally has channel-changing resnets (conv_in) and a stride-2 conv encoder.
_DEC_090 = (("up_blocks.0", "mid_block"), ("up_blocks.1", "up_blocks.0"), ("up_blocks.2", "up_blocks.1.upsamplers.0"),
            ("up_blocks.3", "up_blocks.1"), ("up_blocks.4", "up_blocks.2.conv_in"),
            ("up_blocks.5", "up_blocks.2.upsamplers.0"), ("up_blocks.6", "up_blocks.2"),
            ("up_blocks.7", "up_blocks.3.conv_in"), ("up_blocks.8", "up_blocks.3.upsamplers.0"),
            ("up_blocks.9", "up_blocks.3"))
_ENC_090 = (("down_blocks.0", "down_blocks.0"), ("down_blocks.1", "down_blocks.0.downsamplers.0"),
            ("down_blocks.2", "down_blocks.0.conv_out"), ("down_blocks.3", "down_blocks.1"),
            ("down_blocks.4", "down_blocks.1.downsamplers.0"), ("down_blocks.5", "down_blocks.1.conv_out"),
            ("down_blocks.6", "down_blocks.2"), ("down_blocks.7", "down_blocks.2.downsamplers.0"),
            ("down_blocks.8", "down_blocks.3"), ("down_blocks.9", "mid_block"))
_DEC_091 = (("up_blocks.0", "mid_block"), ("up_blocks.1", "up_blocks.0.upsamplers.0"), ("up_blocks.2", "up_blocks.0"),
            ("up_blocks.3", "up_blocks.1.upsamplers.0"), ("up_blocks.4", "up_blocks.1"),
            ("up_blocks.5", "up_blocks.2.upsamplers.0"), ("up_blocks.6", "up_blocks.2"),
            ("up_blocks.7", "up_blocks.3.upsamplers.0"), ("up_blocks.8", "up_blocks.3"))
_ENC_095 = (("down_blocks.0", "down_blocks.0"), ("down_blocks.1", "down_blocks.0.downsamplers.0"),
            ("down_blocks.2", "down_blocks.1"), ("down_blocks.3", "down_blocks.1.downsamplers.0"),
            ("down_blocks.4", "down_blocks.2"), ("down_blocks.5", "down_blocks.2.downsamplers.0"),
            ("down_blocks.6", "down_blocks.3"), ("down_blocks.7", "down_blocks.3.downsamplers.0"),
            ("down_blocks.8", "mid_block"))
_TIME = (("last_time_embedder", "time_embedder"), ("last_scale_shift_table", "scale_shift_table"))


def _merge(*groups: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Later groups override earlier rules with the same pattern, keeping the first position
    (the way diffusers composes its rename dicts)."""
    rules: dict[str, str] = {}
    for group in groups:
        rules.update(group)
    return tuple(rules.items())


VAE_SINGLE_FILE = {
    "0.9.0": KeyMap("vae.", _merge(_DEC_090, _ENC_090, _VAE_COMMON_TAIL), _VAE_DROP),
    "0.9.1": KeyMap("vae.", _merge(_DEC_090, _ENC_090, _VAE_COMMON_TAIL, _DEC_091, _TIME), _VAE_DROP),
    "0.9.5": KeyMap("vae.", _merge(_DEC_090, _ENC_090, _VAE_COMMON_TAIL, _DEC_091, _ENC_095, _TIME), _VAE_DROP),
}
