"""Benchmark one denoising step of the LTX transformers: ltxengine against diffusers.

    python bench/scenario_transformer.py [--models 2b,13b,ltx2-19b] [--batch 1,2] [--kernels auto,torch]
                                         [--reps N] [--warmup N] [--out DIR] [--compile | --no-compile] [--smoke]

Workload: 768x512 pixels, 121 frames -> latent grid 16 x 16 x 24 = 6144 video tokens (VAE ratios
8 in time, 32 in space); text 128 tokens (LTX-Video, T5) or 1024 (LTX-2, Gemma after its
connectors); LTX-2 also 126 audio tokens (121 frames at 24 fps, 25 audio latents per second).
Batch 1 (no guidance) and 2 (classifier-free guidance batched). Models: 2b, 13b (LTX-Video),
ltx2-19b (LTX-2 audio+video), random weights of realistic scale (bench/models.py), bfloat16.
Smoke: tiny-2b and tiny-ltx2 on a 17 x 96 x 160 clip (45 video, 18 audio tokens, 7 text tokens),
float32 on the CPU.

Implementations, all on the same weights:
  ltxengine-torch     our model with the pure-torch ops (the oracle's model)
  ltxengine-<kernels> the same storage with get_ops(<kernels>) (default: auto)
  diffusers           LTXVideoTransformer3DModel / LTX2VideoTransformer3DModel, eager
  diffusers+compile   the same with torch.compile of its repeated blocks (regional compilation,
                      diffusers' compile_repeated_blocks); --compile / --no-compile, on for GPU runs
Each gets what its pipeline computes once per generation outside the timed step: ltxengine its
RoPE tables and projected text context (``precomputed`` in the record); diffusers the inputs its
pipeline passes to every step (LTX-2: the video/audio coordinates). FLOPs per step follow
ltx-architecture.md section 6 (``transformer_flops``).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench import models as M  # noqa: E402
from ltxengine.config import VAE_095, LTX2TransformerConfig  # noqa: E402
from ltxengine.ltx2.denoise import keyframe_marker  # noqa: E402
from ltxengine.models.transformer import grid_positions  # noqa: E402
from ltxengine.models.video_vae import VideoVAE  # noqa: E402
from ltxengine.ops import TORCH_OPS  # noqa: E402

SCRIPT = "scenario_transformer"
FULL_MODELS = ("2b", "13b", "ltx2-19b")
SMOKE_MODELS = ("tiny-2b", "tiny-ltx2")
SIGMA = 0.7  # a mid-schedule noise level; the cost of a step does not depend on it


@dataclass(frozen=True)
class Geometry:
    frames: int
    height: int
    width: int
    fps: float  # LTXPipeline's default frame_rate 25; LTX-2's 24
    text_tokens: int


GEOMETRY = {"ltxv": Geometry(121, 512, 768, 25.0, 128), "ltx2": Geometry(121, 512, 768, 24.0, 1024)}
SMOKE_GEOMETRY = {"ltxv": Geometry(17, 96, 160, 25.0, 7), "ltx2": Geometry(17, 96, 160, 24.0, 7)}


# -- FLOP model (ltx-architecture.md section 6.2) ----------------------------------------------------

def attention_flops(nq: int, nk: int, d_q: int, d_kv: int, inner: int, d_out: int) -> float:
    """Q (nq x d_q -> inner), K and V (nk x d_kv -> inner), O (inner -> d_out), SDPA 4 nq nk inner."""
    return 2 * nq * d_q * inner + 2 * 2 * nk * d_kv * inner + 2 * nq * inner * d_out + 4 * nq * nk * inner


def ltxv_block_flops(config, n: int, text: int) -> float:
    d = config.inner_dim
    return attention_flops(n, n, d, d, d, d) + attention_flops(n, text, d, d, d, d) + 16 * n * d * d


def ltx2_block_flops(config: LTX2TransformerConfig, nv: int, na: int, text: int) -> float:
    dv, da, dx = config.inner_dim, config.audio_inner_dim, config.audio_cross_attention_dim
    video = attention_flops(nv, nv, dv, dv, dv, dv) + attention_flops(nv, text, dv, dv, dv, dv) + 16 * nv * dv * dv
    audio = attention_flops(na, na, da, da, da, da) + attention_flops(na, text, da, da, da, da) + 16 * na * da * da
    a2v = attention_flops(nv, na, dv, da, dx, dv)  # video queries, audio keys/values
    v2a = attention_flops(na, nv, da, dv, dx, da)
    return video + audio + a2v + v2a


def transformer_flops(config, video_tokens: int, text_tokens: int, audio_tokens: int = 0, batch: int = 1) -> float:
    """FLOPs of one transformer forward, the FLOP model of ltx-architecture.md section 6.2.

    A multiply-add is 2 FLOPs; linears 2 x rows x in x out, SDPA 4 N M D (QK^T and PV), the 4x
    feed-forward 16 N D^2; norms, RoPE, modulation, softmax and the timestep MLPs are left out
    (< 1 %). Per block (section 6.3-6.5): self-attention, text cross-attention (K/V on the text
    tokens) and feed-forward per stream, and for LTX-2 the audio<->video attentions (audio head
    geometry). Outside the blocks: proj_in / proj_out and the caption projections. At 768x512x121
    this gives 29.1 (2B), 169.3 (13B) and 198.8 (LTX-2 19B) TFLOP at batch 1; guidance batched
    as batch 2 doubles it.
    """
    nv, l = video_tokens, text_tokens
    if isinstance(config, LTX2TransformerConfig):
        dv, da, cap = config.inner_dim, config.audio_inner_dim, config.caption_channels
        block = ltx2_block_flops(config, nv, audio_tokens, l)
        outer = (2 * nv * config.in_channels * dv + 2 * nv * dv * config.out_channels
                 + 2 * audio_tokens * config.audio_in_channels * da + 2 * audio_tokens * da * config.audio_out_channels)
        if config.use_prompt_embeddings:  # 2.3+ project the caption in the text connectors
            outer += 2 * l * cap * dv + 2 * l * dv * dv + 2 * l * cap * da + 2 * l * da * da
    else:
        d = config.inner_dim
        block = ltxv_block_flops(config, nv, l)
        outer = (2 * nv * config.in_channels * d + 2 * nv * d * config.out_channels
                 + 2 * l * config.caption_channels * d + 2 * l * d * d)
    return float(batch * (config.num_layers * block + outer))


# -- geometry --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def ltxv_vae_ratios() -> tuple[int, int]:
    """(temporal, spatial) compression of the 0.9.5+ VAE the LTX-Video transformers pair with."""
    with torch.device("meta"):
        vae = VideoVAE(VAE_095)
    return vae.temporal_compression_ratio, vae.spatial_compression_ratio


def latent_grid(config, geo: Geometry) -> tuple[int, int, int]:
    rt, r = config.vae_scale_factors[:2] if isinstance(config, LTX2TransformerConfig) else ltxv_vae_ratios()
    return (geo.frames - 1) // rt + 1, geo.height // r, geo.width // r


def audio_tokens(config, geo: Geometry) -> int:
    """LTX2Pipeline's count: round(seconds x sampling rate / hop / audio latent stride)."""
    if not isinstance(config, LTX2TransformerConfig):
        return 0
    per_second = config.audio_sampling_rate / config.audio_hop_length / config.audio_scale_factor
    return round(geo.frames / geo.fps * per_second)


def geometry(name: str, smoke: bool) -> Geometry:
    family = "ltx2" if M.is_ltx2(M.TRANSFORMERS[name]) else "ltxv"
    return (SMOKE_GEOMETRY if smoke else GEOMETRY)[family]


# -- inputs and calls --------------------------------------------------------------------------

def make_inputs(config, geo: Geometry, batch: int, device, dtype, seed: int = 0) -> dict:
    """Unit-variance latents (noise) and text features; a text mask; sigma per sample.

    LTX-Video's T5 mask has padding (a prompt shorter than 128 tokens); LTX-2's connectors
    fill every position with registers, so its mask is all ones (ltx-architecture.md 5.2)."""
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape):
        return torch.randn(shape, generator=g, device=device).to(dtype)

    f, h, w = latent_grid(config, geo)
    n, l = f * h * w, geo.text_tokens
    mask = torch.ones(batch, l, device=device)
    ltx2 = isinstance(config, LTX2TransformerConfig)
    # LTX-2.3+ read the connectors' per-modality outputs (stream widths) instead of caption features
    widths = config.text_widths if ltx2 else (config.caption_channels,) * 2
    inp = {"video": randn(batch, n, config.in_channels), "text": randn(batch, l, widths[0]),
           "mask": mask, "sigma": torch.full((batch,), SIGMA, device=device)}
    if ltx2:
        inp["audio"] = randn(batch, audio_tokens(config, geo), config.audio_in_channels)
        inp["audio_text"] = randn(batch, l, widths[1])
    else:
        mask[:, l - l // 4:] = 0
    return inp


def ltxengine_call(model, inp: dict, geo: Geometry, cross_kv: bool = True):
    """The per-step call with what the engine computes once per generation done here, untimed.
    ``cross_kv=False``: LTX-Video's text keys / values projected inside the step instead (the same
    arithmetic; the fp32 oracle needs it, its block weights are fp32 only while the block runs)."""
    f, h, w = latent_grid(model.config, geo)
    dev = inp["video"].device
    if isinstance(model.config, LTX2TransformerConfig):
        rope = model.rope(model.video_positions(1, f, h, w, geo.fps, device=dev),
                          model.audio_positions(1, inp["audio"].shape[1], device=dev))
        ctx = model.prepare_context(inp["text"], inp["audio_text"], inp["mask"])
        keyframes = keyframe_marker(model.config, f, h, w, 0, device=dev)

        def step():
            v, a = model(inp["video"], inp["audio"], video_sigma=inp["sigma"], context=ctx, rope=rope,
                         keyframes=keyframes)
            return {"video": v, "audio": a}
        return M.no_grad(step)
    rt, r = ltxv_vae_ratios()
    rope = model.rope(grid_positions(1, f, h, w, (rt / geo.fps, r, r), device=dev))
    ctx = model.prepare_context(inp["text"], inp["mask"])
    with torch.no_grad():  # the text keys / values: the sampler projects them once per generation
        kv = model.cross_kv(ctx[0]) if cross_kv else None
    t = inp["sigma"] * 1000  # LTX-Video's forward takes timesteps in [0, 1000]
    return M.no_grad(lambda: {"video": model(inp["video"], t, context=ctx, rope=rope, cross_kv=kv)})


def diffusers_call(ref, config, inp: dict, geo: Geometry):
    """The call diffusers' LTXPipeline / LTX2Pipeline makes at every step (timesteps x 1000)."""
    f, h, w = latent_grid(config, geo)
    t = inp["sigma"] * 1000
    if isinstance(config, LTX2TransformerConfig):
        b, na, dev = inp["video"].shape[0], inp["audio"].shape[1], inp["video"].device
        coords = ref.rope.prepare_video_coords(b, f, h, w, dev, fps=geo.fps)  # per generation in the pipeline
        audio_coords = ref.audio_rope.prepare_audio_coords(b, na, dev)
        keyframes = keyframe_marker(config, f, h, w, 0, device=dev)
        marker = {} if keyframes is None else {"video_keyframes_mask": keyframes[..., None]}

        def step():
            v, a = ref(hidden_states=inp["video"], audio_hidden_states=inp["audio"],
                       encoder_hidden_states=inp["text"], audio_encoder_hidden_states=inp["audio_text"], timestep=t,
                       sigma=t, encoder_attention_mask=inp["mask"], audio_encoder_attention_mask=inp["mask"],
                       num_frames=f, height=h, width=w, fps=geo.fps, audio_num_frames=na, video_coords=coords,
                       audio_coords=audio_coords, use_cross_timestep=True, return_dict=False, **marker)
            return {"video": v, "audio": a}
        return M.no_grad(step)
    rt, r = ltxv_vae_ratios()
    return M.no_grad(lambda: {"video": ref(
        hidden_states=inp["video"], encoder_hidden_states=inp["text"], timestep=t, encoder_attention_mask=inp["mask"],
        num_frames=f, height=h, width=w, rope_interpolation_scale=(rt / geo.fps, r, r), return_dict=False)[0]})


def oracle(model, inp: dict, geo: Geometry):
    """float32 forward of ltxengine-torch on the same (bf16-valued) weights and inputs."""
    def run():
        with M.fp32_weights(model, model.transformer_blocks):
            f32 = {k: v.float() for k, v in inp.items()}
            return {k: v.float() for k, v in ltxengine_call(model, f32, geo, cross_kv=False)().items()}
    return run


# -- implementations --------------------------------------------------------------------------

PRECOMPUTED_LTXV = ["rope_tables", "caption_projection", "text_mask_bias", "text keys / values (cross_kv)"]
PRECOMPUTED_LTX2 = ["rope_tables (video, audio, cross-modal)", "caption_projections (video, audio)",
                    "text_mask_bias"]


@dataclass
class ModelSet:
    """The models of one config: ltxengine-torch owns the storage, the others share it."""

    torch_model: torch.nn.Module
    twins: dict  # kernels name -> (model or None, {op: backend}, why)
    diffusers: torch.nn.Module
    compiled: torch.nn.Module | None
    compile_reason: str


def build_models(name: str, settings: common.Settings, dtype, kernels: list[str]) -> ModelSet:
    model = M.build(M.TRANSFORMERS[name], settings.device, dtype, TORCH_OPS)
    compiled, reason = None, settings.compile_skip_reason
    if settings.compile:
        try:
            torch._dynamo.reset()  # a fresh cache per model: the block graphs differ in width
            compiled = M.build_diffusers(model)
            compiled.compile_repeated_blocks(dynamic=False)  # graphs are built at the first call
        except Exception as e:  # noqa: BLE001 - reported as unavailable
            compiled, reason = None, f"unavailable: {common._short(e)}"
    return ModelSet(model, M.ltxengine_twins(model, kernels, settings.device), M.build_diffusers(model),
                    compiled, reason)


def candidates(ms: ModelSet, inp: dict, geo: Geometry) -> list[M.Candidate]:
    config = ms.torch_model.config
    ltx2 = isinstance(config, LTX2TransformerConfig)
    pre = {"precomputed": PRECOMPUTED_LTX2 if ltx2 else PRECOMPUTED_LTXV}
    pre_d = {"precomputed": ["video_coords", "audio_coords"] if ltx2 else []}
    out = [M.Candidate(M.TORCH_IMPL, ltxengine_call(ms.torch_model, inp, geo), "torch", extra=pre)]
    for k, (model, sources, why) in ms.twins.items():
        out.append(M.Candidate(f"ltxengine-{k}", None, k, "unavailable", why) if model is None else
                   M.Candidate(f"ltxengine-{k}", ltxengine_call(model, inp, geo), k,
                               extra={**pre, "sources": sources}))
    out.append(M.Candidate(M.DIFFUSERS, diffusers_call(ms.diffusers, config, inp, geo), "eager", extra=pre_d))
    if ms.compiled is None:
        out.append(M.compile_skipped(ms.compile_reason, pre_d))
    else:
        out.append(M.Candidate(M.DIFFUSERS_COMPILE, diffusers_call(ms.compiled, config, inp, geo),
                               "inductor, compile_repeated_blocks(dynamic=False)", extra=pre_d))
    return out


def bench_shape(settings: common.Settings, ms: ModelSet, name: str, shape: str, batch: int, dtype) -> list[dict]:
    config, geo = ms.torch_model.config, geometry(name, settings.smoke)
    inp = make_inputs(config, geo, batch, settings.device, dtype)
    cands = M.keep(candidates(ms, inp, geo), settings)
    orc = oracle(ms.torch_model, inp, geo) if dtype != torch.float32 else None
    results = M.run_group(cands, settings, dtype, orc)
    f, h, w = latent_grid(config, geo)
    na = audio_tokens(config, geo)
    dims = {"model": name, "batch": batch, "frames": geo.frames, "height": geo.height, "width": geo.width,
            "fps": geo.fps, "latent_grid": [f, h, w], "video_tokens": f * h * w, "text_tokens": geo.text_tokens,
            "audio_tokens": na, "layers": config.num_layers, "sigma": SIGMA}
    flops = transformer_flops(config, f * h * w, geo.text_tokens, na, batch)
    return [common.make_record(settings, r, op="transformer_step", shape=shape, dims=dims, dtype=dtype,
                               **common.throughput(r, settings.ceilings, flops=flops)) for r in results]


# -- command line --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    choices = list(M.TRANSFORMERS)
    parser = M.make_parser(__doc__.splitlines()[0], FULL_MODELS, SMOKE_MODELS, choices, batch="1,2")
    args = parser.parse_args(argv)
    models, batches, kernels, dtype = M.parse_common(parser, args, FULL_MODELS, SMOKE_MODELS, choices)
    shapes = {f"{m}-b{b}": (m, b) for m in models for b in batches}
    settings = common.settings_from_args(SCRIPT, parser, args, list(shapes), default_reps=10, ceilings=("matmul",))
    M.apply_compile_flag(settings, args)
    records = []
    for model in models:
        picked = [s for s in settings.shapes if shapes[s][0] == model]
        if not picked:
            continue
        ms = build_models(model, settings, dtype, kernels)
        for shape in picked:
            records += bench_shape(settings, ms, model, shape, shapes[shape][1], dtype)
        del ms
        M.release()
    return M.exit_status(records, common.finish(settings, records))


if __name__ == "__main__":
    sys.exit(main())
