"""Benchmark the video VAE decode of a 768x512x121 clip: ltxengine against diffusers.

    python bench/scenario_vae_decode.py [--models ltxv-095,ltx2] [--tiling none,spatial,spatiotemporal]
                                        [--batch 1] [--kernels auto] [--reps N] [--warmup N] [--out DIR]
                                        [--compile | --no-compile] [--smoke]

Workload: latents (B, 128, 16, 16, 24) -> video (B, 3, 121, 512, 768). Decoders: ltxv-095 (the
LTX-Video 0.9.5+ decoder, timestep-conditioned: decode_timestep 0.05 as the pipelines use) and
ltx2 (the LTX-2 decoder, reflect padding; not timestep-conditioned in the preset, as diffusers
converts LTX-2.0). Random weights of realistic scale (bench/models.py), bfloat16. Smoke:
tiny-095 and tiny-ltx2 on latents (1, 8, 3, 4, 4), float32 on the CPU, tiles of 3 latents.

Tiling (the same settings in both libraries):
  none            one decoder call
  spatial         diffusers' default spatial tiles (512 px, stride 448; 64 px cross-fade), no
                  temporal tiles
  spatiotemporal  the same plus diffusers' temporal tiles (16 frames, stride 8). diffusers drops the
                  last frame of every temporal tile after the first, so from the first seam on its
                  frames are one late (ltxengine.models.video_vae.VideoVAE.decode); it is verified on
                  the frames before that seam (``verified_on``)

Implementations, all on the same weights: ltxengine-torch, ltxengine-<kernels> (default auto),
diffusers (``AutoencoderKLLTXVideo`` / ``AutoencoderKLLTX2Video`` ``decode``), diffusers+compile
(torch.compile of its decoder; untiled only, each tile shape would be another graph). Figures:
median ms, peak memory, frames per second of output video (B x 121 / median), ratios vs diffusers.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench import models as M  # noqa: E402
from ltxengine.models.video_vae import TilingConfig  # noqa: E402
from ltxengine.ops import TORCH_OPS  # noqa: E402

SCRIPT = "scenario_vae_decode"
FULL_MODELS = ("ltxv-095", "ltx2")
SMOKE_MODELS = ("tiny-095", "tiny-ltx2")
TILINGS = ("none", "spatial", "spatiotemporal")
DECODE_TIMESTEP = 0.05  # what the LTX pipelines pass to a timestep-conditioned decoder
LATENT_GRID = (16, 16, 24)  # frames, height, width of a 768x512x121 clip
SMOKE_GRID = (3, 4, 4)  # odd frame count, two spatial tiles of the smoke tiling (reflect needs >= 2)
SMOKE_TILES = TilingConfig(96, 96, 16, 64, 64, 8)  # 3-latent tiles, stride 2; 2+1-latent-frame tiles


def tiling_config(mode: str, frames: int, temporal_ratio: int, smoke: bool) -> TilingConfig | None:
    """``spatial`` keeps one temporal tile by making it as long as the clip."""
    if mode == "none":
        return None
    base = SMOKE_TILES if smoke else TilingConfig()
    if mode == "spatial":
        return dataclasses.replace(base, tile_sample_min_num_frames=max(frames * temporal_ratio,
                                                                        base.tile_sample_min_num_frames))
    return base


def configure_diffusers(ref, mode: str, tiling: TilingConfig | None) -> None:
    """diffusers keeps tiling as object state; set it before every call (the objects are shared)."""
    ref.use_framewise_decoding = mode == "spatiotemporal"
    if tiling is None:
        ref.disable_tiling()
    else:
        ref.enable_tiling(**dataclasses.asdict(tiling))


def make_inputs(vae, batch: int, grid: tuple[int, int, int], device, dtype, seed: int = 0) -> dict:
    """Unit-variance raw latents (the statistics are the identity) and the decode timestep."""
    g = torch.Generator(device=device).manual_seed(seed)
    z = torch.randn((batch, vae.config.latent_channels) + grid, generator=g, device=device).to(dtype)
    temb = torch.full((batch,), DECODE_TIMESTEP, device=device, dtype=dtype) \
        if vae.config.timestep_conditioning else None
    return {"z": z, "temb": temb}


def ltxengine_call(vae, inp: dict, tiling: TilingConfig | None):
    return M.no_grad(lambda: {"video": vae.decode(inp["z"], inp["temb"], tiling=tiling)})


def diffusers_call(ref, inp: dict, mode: str, tiling: TilingConfig | None):
    def decode():
        configure_diffusers(ref, mode, tiling)
        return {"video": ref.decode(inp["z"], inp["temb"], return_dict=False)[0]}
    return M.no_grad(decode)


def oracle(vae, inp: dict, tiling: TilingConfig | None):
    """float32 decode by ltxengine-torch on the same (bf16-valued) weights and latents."""
    def run():
        with M.fp32_weights(vae.decoder):
            f32 = {k: (v.float() if v is not None else None) for k, v in inp.items()}
            return {"video": ltxengine_call(vae, f32, tiling)()["video"].float()}
    return run


def first_frames(n: int):
    return lambda out: {k: v[:, :, :n] for k, v in out.items()}


def build_models(name: str, settings: common.Settings, dtype, kernels: list[str]) -> dict:
    vae = M.build(M.VAES[name], settings.device, dtype, TORCH_OPS)
    models = {"torch": vae, "twins": M.ltxengine_twins(vae, kernels, settings.device),
              "diffusers": M.build_diffusers(vae), "compiled": None, "compile_reason": settings.compile_skip_reason}
    if settings.compile:
        try:
            torch._dynamo.reset()
            compiled = M.build_diffusers(vae)
            compiled.decoder.compile(dynamic=False)  # the graph is built at the first call
            models.update(compiled=compiled, compile_reason="")
        except Exception as e:  # noqa: BLE001 - reported as unavailable
            models["compile_reason"] = f"unavailable: {common._short(e)}"
    return models


def candidates(models: dict, inp: dict, mode: str, tiling: TilingConfig | None) -> list[M.Candidate]:
    out = [M.Candidate(M.TORCH_IMPL, ltxengine_call(models["torch"], inp, tiling), "torch")]
    for k, (vae, sources, why) in models["twins"].items():
        out.append(M.Candidate(f"ltxengine-{k}", None, k, "unavailable", why) if vae is None else
                   M.Candidate(f"ltxengine-{k}", ltxengine_call(vae, inp, tiling), k, extra={"sources": sources}))
    view, note = None, {}
    if mode == "spatiotemporal":
        n = tiling.tile_sample_stride_num_frames + 1
        view, note = first_frames(n), {"verified_on": f"frames 0-{n - 1}: diffusers' temporal tiles are one "
                                                      "frame late after the first seam"}
    out.append(M.Candidate(M.DIFFUSERS, diffusers_call(models["diffusers"], inp, mode, tiling), "eager",
                           extra=note, view=view))
    if mode != "none":
        out.append(M.compile_skipped("skipped: compiled only untiled (every tile shape is another graph)"))
    elif models["compiled"] is None:
        out.append(M.compile_skipped(models["compile_reason"]))
    else:
        out.append(M.Candidate(M.DIFFUSERS_COMPILE, diffusers_call(models["compiled"], inp, mode, tiling),
                               "inductor, decoder.compile(dynamic=False)"))
    return out


def bench_shape(settings: common.Settings, models: dict, name: str, shape: str, mode: str, batch: int,
                dtype) -> list[dict]:
    vae = models["torch"]
    grid = SMOKE_GRID if settings.smoke else LATENT_GRID
    rt, r = vae.temporal_compression_ratio, vae.spatial_compression_ratio
    frames = (grid[0] - 1) * rt + 1
    tiling = tiling_config(mode, grid[0], rt, settings.smoke)
    inp = make_inputs(vae, batch, grid, settings.device, dtype)
    cands = M.keep(candidates(models, inp, mode, tiling), settings)
    orc = oracle(vae, inp, tiling) if dtype != torch.float32 else None
    results = M.run_group(cands, settings, dtype, orc)
    dims = {"model": name, "batch": batch, "latent": [vae.config.latent_channels, *grid],
            "output": [vae.config.out_channels, frames, grid[1] * r, grid[2] * r], "tiling": mode,
            "tiles": dataclasses.asdict(tiling) if tiling else None,
            "decode_timestep": DECODE_TIMESTEP if inp["temb"] is not None else None}
    records = []
    for res in results:
        fps = batch * frames / (res["median_ms"] / 1e3) if res["median_ms"] else None
        records.append(common.make_record(settings, res, op="vae_decode", shape=shape, dims=dims, dtype=dtype,
                                          output_frames=batch * frames, fps=fps))
    return records


def main(argv: list[str] | None = None) -> int:
    choices = list(M.VAES)
    parser = M.make_parser(__doc__.splitlines()[0], FULL_MODELS, SMOKE_MODELS, choices)
    parser.add_argument("--tiling", default=",".join(TILINGS), help=f"comma-separated, from {', '.join(TILINGS)}")
    args = parser.parse_args(argv)
    models, batches, kernels, dtype = M.parse_common(parser, args, FULL_MODELS, SMOKE_MODELS, choices)
    modes = common.pick_names("--tiling", args.tiling, list(TILINGS), parser) or list(TILINGS)
    shapes = {f"{m}-{t}-b{b}": (m, t, b) for m in models for t in modes for b in batches}
    settings = common.settings_from_args(SCRIPT, parser, args, list(shapes), default_reps=10, ceilings=("matmul",))
    M.apply_compile_flag(settings, args)
    records = []
    for model in models:
        picked = [s for s in settings.shapes if shapes[s][0] == model]
        if not picked:
            continue
        built = build_models(model, settings, dtype, kernels)
        for shape in picked:
            records += bench_shape(settings, built, model, shape, shapes[shape][1], shapes[shape][2], dtype)
        del built
        M.release()
    return M.exit_status(records, common.finish(settings, records))


if __name__ == "__main__":
    sys.exit(main())
