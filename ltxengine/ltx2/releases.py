"""The LTX-2 releases and the generation defaults that change between them (ltx-pipelines'
``utils/constants.py``: 2.0, 2.3, and 2.4 = the internal name of 2.5).

The release of a loaded checkpoint is its header's ``model_version`` when the file has one, else
read from the transformer's layout: gated attention / cross-attention adaLN appear in 2.3, a video
FFN without bias and the keyframe embedding in 2.5.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .denoise import AUDIO_GUIDANCE, VIDEO_GUIDANCE, GuidanceParams

__all__ = ["RELEASES", "Release", "release_named", "release_of"]


@dataclass(frozen=True)
class Release:
    version: str  # "2.0", "2.3", "2.5"
    num_inference_steps: int  # stage 1's steps (non-distilled)
    stg_blocks: tuple[int, ...]  # the STG block of the default guidance (both modalities)
    image_crf: int  # the H.264 round trip of condition images
    ancestral_distilled: bool  # distilled stage 1 samples with Euler-ancestral (eta 1, seed + 10000)
    # what drives the audio<->video adaLN tables (models/ltx2_transformer.CROSS_TIMESTEPS). Only
    # per-token timesteps that differ from sigma (conditioned tokens: images, keyframes, retake,
    # IC-LoRA references) tell the conventions apart. 2.0: "sigma", where its two installable
    # references agree (ltx-core 1.0.0, diffusers 0.42.1). 2.3 / 2.5: "mixed", Lightricks' reference
    # since ltx-core 1.1.4 (2026-05-28, still at @400fd31): 2.5 was released after it and has run
    # with nothing else, and issue 19 makes Lightricks the reference for 2.3 / 2.5 where diffusers
    # (use_cross_timestep=True: "sigma") differs. generate(cross_timestep=...) overrides it.
    cross_timestep: str = "sigma"

    def guidance(self, modality: str) -> GuidanceParams:
        """ltx-pipelines' default stage-1 guidance of "video" or "audio" for this release."""
        return replace(VIDEO_GUIDANCE if modality == "video" else AUDIO_GUIDANCE, stg_blocks=self.stg_blocks)


RELEASES = {
    "2.0": Release("2.0", num_inference_steps=40, stg_blocks=(29,), image_crf=33, ancestral_distilled=False),
    "2.3": Release("2.3", num_inference_steps=30, stg_blocks=(28,), image_crf=33, ancestral_distilled=False,
                   cross_timestep="mixed"),
    "2.5": Release("2.5", num_inference_steps=30, stg_blocks=(28,), image_crf=18, ancestral_distilled=True,
                   cross_timestep="mixed"),
}


def release_named(model_version: str | None) -> Release | None:
    """The release a header's ``model_version`` ("2.3.0", "2.5.1", ...) names (the reference keys its
    choices off that string); None when it names none we know."""
    major_minor = ".".join(str(model_version or "").split(".")[:2])
    if major_minor == "2.4":  # the internal name of 2.5 (diffusers' pipelines/ltx2/utils.py)
        major_minor = "2.5"
    return RELEASES.get(major_minor)


def release_of(config, model_version: str | None = None) -> Release:
    """The release of a transformer ``config`` (an LTX2TransformerConfig): the one ``model_version``
    names, else the one its layout belongs to."""
    named = release_named(model_version)
    if named is not None:
        return named
    if config.use_keyframes_abs_pos_embedding or not config.ff_bias:
        return RELEASES["2.5"]
    if config.gated_attn or config.cross_attn_mod or not config.use_prompt_embeddings:
        return RELEASES["2.3"]
    return RELEASES["2.0"]
