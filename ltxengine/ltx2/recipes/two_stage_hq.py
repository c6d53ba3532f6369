"""pipeline="two-stage-hq" (ltx-pipelines 1.0.0's ti2vid_two_stages_hq): the two-stage recipe
(``two_stage.run``: stage 1 at half the size, latent upsampling x2, stage 2 on the distilled
sigmas re-noised at the first) with the HQ preset in place of the two-stage defaults:

* the res_2s sampler in both stages (the reference has no other: another ``sampler`` is refused);
* 15 stage-1 steps, the schedule shifted for the stage-1 video's own token count (the reference's
  ``LTX2Scheduler.execute(latent=...)``; the other two-stage pipelines shift for 4096 tokens);
* stage-1 guidance without STG: video cfg 3, rescale 0.45, modality 3; audio cfg 7, rescale 1,
  modality 3 (``LTX_2_3_HQ_PARAMS``, used for every release);
* the distilled LoRA fused at 0.25 in stage 1 and 0.5 in stage 2 (the reference's
  ``--distilled-lora-strength-stage-1`` / ``-stage-2`` defaults);
* res_2s' SDE noise from generators seeded -1 (full steps) and 9999 (substeps) in both stages:
  the reference's loop default, which its HQ pipeline never overrides, so only the initial noise
  follows ``seed``.

A call's own num_inference_steps, sigmas, guidance (either spelling) and ``two_stage`` fields
(stage-2 sigmas and guidance, ``lora_strength``, ``stage1_lora_strength``) override the preset, as
the reference's command line (and, for the sigmas, its later ``stage_1_sigmas`` /
``stage_2_sigmas``) allows; the size stays ``generate``'s (the reference's command line defaults to
1088 x 1920)."""

from __future__ import annotations

from ..denoise import GuidanceParams
from ..stages import StageOutput
from . import two_stage
from .preset import Preset

# ltx-pipelines' res2s_audio_video_denoising_loop(noise_seed=-1): the HQ pipeline passes no seed
RES2S_NOISE_SEED = -1

# ltx-pipelines 1.0.0 utils/constants.py LTX_2_3_HQ_PARAMS
VIDEO_GUIDANCE_HQ = GuidanceParams(cfg=3.0, stg=0.0, stg_blocks=(), rescale=0.45, modality=3.0)
AUDIO_GUIDANCE_HQ = GuidanceParams(cfg=7.0, stg=0.0, stg_blocks=(), rescale=1.0, modality=3.0)


PRESET = Preset(num_inference_steps=15, sampler="res2s", video_guidance=VIDEO_GUIDANCE_HQ,
                audio_guidance=AUDIO_GUIDANCE_HQ, own_shift=True, lora_strength=0.5, stage1_lora_strength=0.25)


def run(engine, a, gen, seed: int) -> StageOutput:
    """The two-stage recipe; ``seed`` already made ``gen`` (the initial noise), res_2s gets the
    reference's fixed noise seed."""
    return two_stage.run(engine, a, gen, RES2S_NOISE_SEED)


def check(engine, a: dict) -> None:
    if a["sampler"] != "res2s":
        raise ValueError(f"sampler: pipeline='two-stage-hq' samples with 'res2s' in both stages (ltx-pipelines' "
                         f"HQ pipeline has no other), got sampler={a['sampler']!r}")
