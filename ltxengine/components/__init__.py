"""What both families' recipes are built from: inputs (images, video clips, conditions), latents
(noise, pack/unpack, latent upsampling) and decoding (whole clips, or streamed to an mp4)."""

from .inputs import Condition, ReferenceCondition

__all__ = ["Condition", "ReferenceCondition"]
