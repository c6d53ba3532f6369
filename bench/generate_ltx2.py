"""The ltx2-19b case of scenario_generate.py (see its docstring): LTX-2 models built once and
shared with diffusers, the distilled LoRA, and both sides of the two-stage video+audio recipe.
The LTX-Video cases are in generate_ltxv.py, what both share in generation.py."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Callable

import torch

from bench import common
from bench import models as M
from bench.generation import (FRAME_RATE, FULL_SIZE, PROMPT, SEED, SMOKE_SIZE_LTX2, WORDS, build_upsampler, measure,
                              records_for)

# -- LTX-2 19B: models -----------------------------------------------------------------------------

# diffusers' LTX2Pipeline scheduler (the released scheduler_config; our stage-1 schedule with
# shift_tokens=None computes the same shift from the video's own token count)
LTX2_SCHEDULER = dict(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                      max_image_seq_len=4096, shift_terminal=0.1)
LTX2_SEQ = 1024  # Gemma tokens: both LTX2Pipeline's and ltx-pipelines' max_sequence_length
LORA_RANK = {"full": 384, "tiny": 4}  # ltx-2-19b-distilled-lora-384
LORA_MODULES = ("to_q", "to_k", "to_v", "0")  # every attention projection of every block ("0" = to_out.0)
# Gemma 3 12B (google/gemma-3-12b-it): text tower + SigLIP vision tower (unused by text, but part of the
# released Gemma3ForConditionalGeneration both pipelines load)
GEMMA_12B = dict(vocab_size=262208, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256,
                 sliding_window=1024, rope_parameters={
                     "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})
SIGLIP_GEMMA = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                    image_size=896, patch_size=14)
GEMMA_TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=16, sliding_window=4, max_position_embeddings=256)
SIGLIP_TINY = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                   patch_size=14)


def ltx2_configs(smoke: bool) -> dict:
    """Released LTX-2.0 configs, or the demo's tiny consistent set (ltxengine/presets.py)."""
    from ltxengine.config import LTX2_TRANSFORMER_19B
    from ltxengine.models.audio_vae import AudioVAEConfig
    from ltxengine.models.latent_upsampler import UPSAMPLER_LTX2
    from ltxengine.models.ltx2_text import TextConnectorsConfig
    from ltxengine.models.video_vae import VAE_LTX2
    from ltxengine.models.vocoder import VocoderConfig

    if smoke:
        from ltxengine.presets import demo_ltx2
        cfg = dict(demo_ltx2(), gemma=(GEMMA_TINY, SIGLIP_TINY, 4))
        cfg["vae"] = dataclasses.replace(cfg["vae"], timestep_conditioning=False)  # as the released VAE
    else:
        cfg = {"transformer": LTX2_TRANSFORMER_19B, "connectors": TextConnectorsConfig(), "vae": VAE_LTX2,
               "audio_vae": AudioVAEConfig(), "vocoder": VocoderConfig(), "latent_upsampler": UPSAMPLER_LTX2,
               "gemma": (GEMMA_12B, SIGLIP_GEMMA, 256)}
    # diffusers installs its STG attention processor only with perturbed_attn (ours always has STG)
    cfg["transformer"] = dataclasses.replace(cfg["transformer"], perturbed_attn=True)
    return cfg


def gemma_tokenizer():
    """A word-level Gemma-style tokenizer (pad 0, eos 1, bos 2, unk 3; bos prepended) built in memory.
    Both sides pad to LTX2_SEQ tokens, so Gemma's work is the real one whatever the vocabulary."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = ["<pad>", "<eos>", "<bos>", "<unk>"] + sorted(set(WORDS))
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                                unk_token="<unk>", pad_token="<pad>")


@torch.no_grad()
def build_gemma(text: dict, vision: dict, mm_tokens: int, device, dtype):
    """Gemma3ForConditionalGeneration built directly on the device in ``dtype`` (not meta + to_empty:
    its rotary tables are computed buffers), then its parameters (only) refilled: N(0, 1/fan_in)
    matrices (the embedding too: Gemma multiplies it by sqrt(hidden)), Gemma's RMSNorm weights
    N(0, 0.05^2) (it scales by 1 + w), other norm weights N(1, 0.05^2), biases N(0, 0.02^2)."""
    import transformers

    config = transformers.Gemma3Config(text_config=dict(text), vision_config=dict(vision),
                                       mm_tokens_per_image=mm_tokens)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = transformers.Gemma3ForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    g = torch.Generator(device=device).manual_seed(4)
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            p.normal_(0.0, (p.numel() // p.shape[0]) ** -0.5, generator=g)
        elif name.endswith("bias"):
            p.normal_(0.0, M.BIAS_STD, generator=g)
        else:
            p.normal_(0.0 if "language_model" in name else 1.0, M.NORM_WEIGHT_STD, generator=g)
    return model.eval().requires_grad_(False)


def build_module(cls, config, device, dtype, ops, seed: int):
    """One of our LTX-2 components (no computed buffers) on meta, materialized and filled in place."""
    with torch.device("meta"):
        model = cls(config, ops=ops).to(dtype)
    return M.randomize_(model.to_empty(device=device), seed=seed).eval().requires_grad_(False)


def diffusers_twin(cls, model):
    """diffusers' class over the same storage (the config fields are its arguments, the names its keys)."""
    kwargs = dataclasses.asdict(model.config)
    if kwargs.get("connector_ff_bias") is True:  # ltx-core's option; diffusers' connectors always have the bias
        del kwargs["connector_ff_bias"]
    with torch.device("meta"):
        ref = cls(**kwargs)
    ref.load_state_dict(model.state_dict(), strict=True, assign=True)
    return ref.eval()


def distilled_lora(transformer, rank: int, dtype, seed: int = 6) -> dict[str, torch.Tensor]:
    """A Lightricks-format LoRA (diffusion_model.<name>.lora_A/B.weight) on every attention projection,
    in the run dtype on the host (2.6B values at rank 384: no room on the device next to the 19B DiT
    and Gemma; both sides copy it in per call the same way). A ~ N(0, 1/in), B ~ N(0, 0.1^2/rank): the update is ~0.1 of the weight's scale,
    a LoRA that changes the model without dwarfing it."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, mod in transformer.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.startswith("transformer_blocks.") \
                and name.rsplit(".", 1)[-1] in LORA_MODULES:
            a = (torch.randn(rank, mod.in_features, generator=g) * mod.in_features ** -0.5).to(dtype)
            b = (torch.randn(mod.out_features, rank, generator=g) * (0.1 / rank ** 0.5)).to(dtype)
            pin = torch.cuda.is_available()  # pinned: the per-call host -> device copies run at full speed
            tensors[f"diffusion_model.{name}.lora_A.weight"] = a.pin_memory() if pin else a
            tensors[f"diffusion_model.{name}.lora_B.weight"] = b.pin_memory() if pin else b
    return tensors


@contextmanager
def fused(model, lora: dict[str, torch.Tensor]):
    """diffusers' stage 2 with the LoRA fused: W + B @ A in float32, rounded once (the parity test's
    recipe); the originals are kept on the host and written back (the weights are shared with ours)."""
    params = dict(model.named_parameters())
    saved = {}
    try:
        for key in (k for k in lora if k.endswith(".lora_A.weight")):
            name = key[len("diffusion_model."):-len(".lora_A.weight")] + ".weight"
            w = params[name]
            saved[name] = w.detach().to("cpu", copy=True)
            a = lora[key].to(w.device, torch.float32)
            b = lora[key.replace("lora_A", "lora_B")].to(w.device, torch.float32)
            w.data.copy_((w.float() + b @ a).to(w.dtype))
        yield
    finally:
        for name, host in saved.items():
            params[name].data.copy_(host)


def build_ltx2(settings: common.Settings, dtype, kernels: str) -> dict:
    """LTX2Engine and diffusers' LTX-2 pipelines over one set of weights (Gemma: one module object)."""
    import diffusers
    from diffusers.models.autoencoders.autoencoder_kl_ltx2_audio import AutoencoderKLLTX2Audio
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    from ltxengine.loading.lora import LoraWeights
    from ltxengine.loading.ltx2 import LTX2Checkpoint
    from ltxengine.ltx2.engine import LTX2Engine
    from ltxengine.models.audio_vae import AudioVAE
    from ltxengine.models.ltx2_text import GemmaTextEncoder, TextConnectors
    from ltxengine.models.vocoder import Vocoder

    diffusers.utils.logging.set_verbosity_error()
    ops, why = common.resolve_backend(kernels, settings.device)
    if ops is None:
        raise RuntimeError(f"scenario_generate: --kernels {kernels} {why}")
    cfg, dev = ltx2_configs(settings.smoke), settings.device
    ckpt = LTX2Checkpoint(source="bench", transformer=M.build(cfg["transformer"], dev, dtype, ops),
                          vae=M.build(cfg["vae"], dev, dtype, ops),
                          connectors=build_module(TextConnectors, cfg["connectors"], dev, dtype, ops, 7),
                          audio_vae=build_module(AudioVAE, cfg["audio_vae"], dev, dtype, ops, 8),
                          vocoder=build_module(Vocoder, cfg["vocoder"], dev, dtype, ops, 9))
    ups = build_upsampler(cfg["latent_upsampler"], dev, dtype, ops)
    gemma, tok = build_gemma(*cfg["gemma"], dev, dtype), gemma_tokenizer()
    lora = distilled_lora(ckpt.transformer, LORA_RANK["tiny" if settings.smoke else "full"], dtype)
    engine = LTX2Engine(ckpt, GemmaTextEncoder(gemma, tok, ckpt.connectors), latent_upsampler=ups,
                        distilled_lora=LoraWeights.load(lora, name="distilled-lora"), device=dev, dtype=dtype,
                        source="bench")
    engine.lora_manager().check(engine.distilled_lora)
    dvae = M.build_diffusers(ckpt.vae)
    pipe = diffusers.LTX2Pipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**LTX2_SCHEDULER), vae=dvae,
        audio_vae=diffusers_twin(AutoencoderKLLTX2Audio, ckpt.audio_vae), text_encoder=gemma, tokenizer=tok,
        connectors=diffusers_twin(LTX2TextConnectors, ckpt.connectors), transformer=M.build_diffusers(ckpt.transformer),
        vocoder=diffusers_twin(LTX2Vocoder, ckpt.vocoder))
    up_pipe = diffusers.LTX2LatentUpsamplePipeline(vae=dvae, latent_upsampler=diffusers_twin(LTX2LatentUpsamplerModel,
                                                                                              ups))
    for p in (pipe, up_pipe):
        p.set_progress_bar_config(disable=True)
    return {"engine": engine, "pipe": pipe, "up_pipe": up_pipe, "lora": lora, "sources": dict(ops.sources)}


# -- LTX-2 19B: the two-stage recipe ----------------------------------------------------------------------

def ltx2_guidance(layers: int) -> tuple[dict, dict]:
    """(stage 1, stage 2) guidance in diffusers' argument names. Stage 1: our defaults (ltx-pipelines'
    LTX-2.0 values; STG block 29 clipped to the last block on the tiny model, as the engine does).
    Stage 2: diffusers' documented recipe passes guidance_scale=1.0 only, so its other guidance
    defaults (the same values) still act; ours is given exactly that."""
    from ltxengine.ltx2.denoise import AUDIO_GUIDANCE, VIDEO_GUIDANCE

    v, a = VIDEO_GUIDANCE, AUDIO_GUIDANCE
    stage1 = dict(guidance_scale=v.cfg, stg_scale=v.stg, modality_scale=v.modality, guidance_rescale=v.rescale,
                  audio_guidance_scale=a.cfg, audio_stg_scale=a.stg, audio_modality_scale=a.modality,
                  audio_guidance_rescale=a.rescale,
                  spatio_temporal_guidance_blocks=[min(b, layers - 1) for b in v.stg_blocks])
    return stage1, dict(stage1, guidance_scale=1.0)


def guidance_params(d: dict, prefix: str = ""):
    from ltxengine.ltx2.denoise import GuidanceParams

    return GuidanceParams(cfg=d[f"{prefix}guidance_scale"], stg=d[f"{prefix}stg_scale"],
                          stg_blocks=tuple(d["spatio_temporal_guidance_blocks"]),
                          rescale=d[f"{prefix}guidance_rescale"], modality=d[f"{prefix}modality_scale"])


def ltx2_tiling(mode: str, size, smoke: bool):
    from bench.scenario_vae_decode import tiling_config

    return tiling_config(mode, (size[2] - 1) // 8 + 1, 8, smoke)


def ours_ltx2(built: dict, size, steps: int, tiling_mode: str, stages: list) -> Callable[[], dict]:
    from ltxengine.ltx2.engine import LTX2TwoStage
    from ltxengine.ltx2.denoise import DEFAULT_NEGATIVE_PROMPT

    s1, s2 = ltx2_guidance(built["engine"].transformer.config.num_layers)
    two = LTX2TwoStage(video_guidance=guidance_params(s2), audio_guidance=guidance_params(s2, "audio_"))
    kw = dict(height=size[0], width=size[1], num_frames=size[2], frame_rate=FRAME_RATE, num_inference_steps=steps,
              pipeline="two-stage", two_stage=two, video_guidance=guidance_params(s1),
              audio_guidance=guidance_params(s1, "audio_"), shift_tokens=None, seed=SEED,
              max_sequence_length=LTX2_SEQ, vae_tiling=ltx2_tiling(tiling_mode, size, built["smoke"]))

    def run():
        result = built["engine"].generate(PROMPT, DEFAULT_NEGATIVE_PROMPT, **kw)
        stages.append(dict(result.timings))
        return {"frames": torch.from_numpy(result.frames), "audio": torch.from_numpy(result.audio)}
    return run


def diffusers_ltx2(built: dict, size, steps: int, tiling_mode: str) -> Callable[[], dict]:
    """tests/pipelines/test_ltx2_parity.py's two-stage recipe: stage 1 at half size, the upsample
    pipeline, the LoRA fused, an unshifted scheduler, the 3 stage-2 sigmas, noise_scale = their first,
    one CPU generator throughout (as ours)."""
    from bench.scenario_vae_decode import configure_diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ltxengine.ltx2.denoise import DEFAULT_NEGATIVE_PROMPT, STAGE2_SIGMAS

    pipe, up_pipe = built["pipe"], built["up_pipe"]
    s1, s2 = ltx2_guidance(built["engine"].transformer.config.num_layers)
    base = pipe.scheduler
    stage2_scheduler = FlowMatchEulerDiscreteScheduler.from_config(base.config, use_dynamic_shifting=False,
                                                                   shift_terminal=None)
    kw = dict(prompt=PROMPT, negative_prompt=DEFAULT_NEGATIVE_PROMPT, num_frames=size[2], frame_rate=FRAME_RATE,
              max_sequence_length=LTX2_SEQ, return_dict=False)
    tiling = ltx2_tiling(tiling_mode, size, built["smoke"])

    def run():
        gen = torch.Generator().manual_seed(SEED)
        configure_diffusers(pipe.vae, tiling_mode, tiling)
        v_lat, a_lat = pipe(height=size[0] // 2, width=size[1] // 2, num_inference_steps=steps, generator=gen,
                            output_type="latent", **kw, **s1)
        up = up_pipe(latents=v_lat, output_type="latent", return_dict=False)[0]
        pipe.scheduler = stage2_scheduler
        try:
            with fused(pipe.transformer, built["lora"]):
                video, audio = pipe(latents=up, audio_latents=a_lat, num_inference_steps=len(STAGE2_SIGMAS) - 1,
                                    noise_scale=STAGE2_SIGMAS[0], sigmas=list(STAGE2_SIGMAS[:-1]), generator=gen,
                                    output_type="np", **kw, **s2)
        finally:
            pipe.scheduler = base
        return {"frames": torch.from_numpy(video[0]).float(), "audio": audio[0].float().cpu()}
    return M.no_grad(run)


def bench_ltx2(settings, built: dict, dtype, steps: int, tiling_mode: str) -> list[dict]:
    from ltxengine.ltx2.denoise import STAGE2_SIGMAS

    size = SMOKE_SIZE_LTX2 if settings.smoke else FULL_SIZE
    built["smoke"] = settings.smoke
    stages: list[dict] = []
    fns = {"ltxengine": ours_ltx2(built, size, steps, tiling_mode, stages),
           M.DIFFUSERS: diffusers_ltx2(built, size, steps, tiling_mode)}
    fns = {k: v for k, v in fns.items() if k == "ltxengine" or settings.impls is None or k in settings.impls}
    sources = {"ltxengine": f"LTX2Engine.generate, kernels {built['sources'] or 'torch'}",
               M.DIFFUSERS: "LTX2Pipeline + LTX2LatentUpsamplePipeline + LTX2Pipeline (LoRA fused)"}
    results = measure(fns, sources, settings, dtype)
    s1, s2 = ltx2_guidance(built["engine"].transformer.config.num_layers)
    dims = {"model": "ltx2-19b", "config": "tiny" if settings.smoke else "full", "height": size[0],
            "width": size[1], "num_frames": size[2], "frame_rate": FRAME_RATE, "text_tokens": LTX2_SEQ,
            "recipe": "two-stage", "stage1": [size[0] // 2, size[1] // 2], "num_inference_steps": steps,
            "stage2_sigmas": list(STAGE2_SIGMAS), "guidance_stage1": s1, "guidance_stage2": s2,
            "lora_rank": LORA_RANK["tiny" if settings.smoke else "full"], "vae_tiling": tiling_mode,
            "audio": True}
    return records_for(settings, results, "ltx2-19b", size, dtype, dims, stages)


