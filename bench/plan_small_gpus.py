"""The memory plan of a released configuration under each offload option, without a GPU (issue 23):
does LTX-2.3 22B two-stage at 768x512x121 fit a 24 GB card with fp8 + streamed blocks + tiled decode?

    python bench/plan_small_gpus.py [--group-sizes 1,2,4] [--out bench/results/plan_small_gpus.md]

Weights: every component built on the meta device from its release config (ltxengine's classes;
Gemma 3 12B as transformers' Gemma3ForConditionalGeneration, vision tower included, as the engine
loads it), the DiT converted to fp8-cast (fp8 weights of the linear layers the policy targets, the
rest bf16), bytes counted as stored. Streamed blocks count as their two slots
(``block_offload.slot_bytes``). Activations: one DiT call per stage traced on fake tensors
(``executor.memory.trace_allocations``) at the stage's tokens and guidance batch, and the VAE decode
traced with and without tiles. Like ``engine.plan`` for LTX-2, the text phase counts Gemma's
weights, not its activations (a 1024-token forward: tens of MB). Not counted: the audio VAE and
vocoder activations (small), the executor's static buffers, cuBLAS workspaces and allocator
fragmentation (the GPU test compares plan and measurement).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltxengine.config import LTX2_TRANSFORMER_22B_V23  # noqa: E402
from ltxengine.executor.block_offload import layer_stack, slot_bytes  # noqa: E402
from ltxengine.executor.memory import trace_allocations  # noqa: E402
from ltxengine.executor.plan import GiB, module_bytes  # noqa: E402
from ltxengine.ltx2.denoise import keyframe_marker  # noqa: E402
from ltxengine.models.latent_upsampler import LatentUpsampler, LTX2LatentUpsamplerConfig  # noqa: E402
from ltxengine.models.ltx2_transformer import LTX2Transformer  # noqa: E402
from ltxengine.models.video_vae import VAE_LTX23, LTX2VideoVAE, TilingConfig  # noqa: E402
from ltxengine.quant import convert_to_fp8  # noqa: E402

DTYPE = torch.bfloat16
GB = 10 ** 9
# 768x512x121 at 24 fps: latent 16 frames x 16 x 24 (32x spatial, 8x temporal); stage 1 at half size
FRAMES, LATENT_HW, AUDIO_TOKENS, TEXT_TOKENS = 16, (16, 24), 126, 1024
STAGE1_BATCH = 4  # cond, uncond, STG, modality-isolated passes batched (guidance_batch=None)
STAGE2_BATCH = 1  # distilled refinement: no guidance


def gemma_12b():
    import transformers
    text = transformers.Gemma3TextConfig(hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
                                         num_attention_heads=16, num_key_value_heads=8, head_dim=256,
                                         vocab_size=262208)
    with torch.device("meta"):
        return transformers.Gemma3ForConditionalGeneration(transformers.Gemma3Config(text_config=text)).to(DTYPE)


def build_meta() -> dict:
    with torch.device("meta"):
        dit = convert_to_fp8(LTX2Transformer(LTX2_TRANSFORMER_22B_V23).to(DTYPE), "fp8-cast")
        vae = LTX2VideoVAE(VAE_LTX23).to(DTYPE)
        upsampler = LatentUpsampler(LTX2LatentUpsamplerConfig()).to(DTYPE)
    return {"dit": dit, "vae": vae, "upsampler": upsampler, "gemma": gemma_12b()}


def _fakeify(model, mode, device):
    """A copy of the meta ``model`` with fake tensors of ``mode`` on ``device``."""
    from bench.roofline_count import fake_tensors
    return fake_tensors(copy.deepcopy(model), mode, device)


def dit_peak(dit, h: int, w: int, batch: int) -> int:
    """Transient bytes of one DiT call at latent (FRAMES, h, w), ``batch`` guidance passes."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from bench.roofline_count import CudaSdpa
    # CPU fake tensors (this torch has no CUDA), attention dispatched to the kernels Hopper runs
    mode, dev, cfg = FakeTensorMode(allow_non_fake_inputs=True), torch.device("cpu"), dit.config
    model = _fakeify(dit, mode, dev)
    with mode:
        nv = FRAMES * h * w
        video = torch.empty(batch, nv, cfg.in_channels, dtype=DTYPE, device=dev)
        audio = torch.empty(batch, AUDIO_TOKENS, cfg.audio_in_channels, dtype=DTYPE, device=dev)
        texts = [torch.empty(batch, TEXT_TOKENS, c, dtype=DTYPE, device=dev) for c in cfg.text_widths]
        sigma = torch.full((batch,), 0.7, device=dev)
        rope = model.rope(model.video_positions(1, FRAMES, h, w, 24.0, device=dev),
                          model.audio_positions(1, AUDIO_TOKENS, device=dev))
        ctx = model.prepare_context(*texts, None)
        keyframes = keyframe_marker(cfg, FRAMES, h, w, 0, device=dev)
        with torch.no_grad(), CudaSdpa():
            trace = trace_allocations(lambda v, a: model(v, a, video_sigma=sigma, context=ctx, rope=rope,
                                                         keyframes=keyframes), video, audio)
    return trace.live_peak_bytes


def decode_peak(vae, tiling) -> int:
    from torch._subclasses.fake_tensor import FakeTensorMode
    mode, dev = FakeTensorMode(allow_non_fake_inputs=True), torch.device("cpu")
    model = _fakeify(vae, mode, dev)
    with mode:
        z = torch.empty(1, vae.config.latent_channels, FRAMES, *LATENT_HW, dtype=DTYPE, device=dev)
        with torch.no_grad():
            return trace_allocations(lambda z: model.decode(z, tiling=tiling), z).live_peak_bytes


def plan(group_sizes: list[int]) -> tuple[dict, list[dict]]:
    t0 = time.perf_counter()
    m = build_meta()
    dit, vae = m["dit"], m["vae"]
    blocks = dit.transformer_blocks
    sizes = {"dit_all": module_bytes(dit), "dit_blocks": module_bytes(*blocks),
             "vae_encoder": module_bytes(vae.encoder), "vae_decoder": module_bytes(vae) - module_bytes(vae.encoder),
             "upsampler": module_bytes(m["upsampler"]), "gemma": module_bytes(m["gemma"])}
    for g in group_sizes:
        sizes[f"slots_g{g}"] = slot_bytes(blocks, g)
    layers, _ = layer_stack(m["gemma"])  # offload=("text_encoder_layers",): Gemma's 48 decoder layers
    sizes["gemma_streamed"] = sizes["gemma"] - module_bytes(*layers) + slot_bytes(layers, 1)
    h, w = LATENT_HW
    act = {"stage1": dit_peak(dit, h // 2, w // 2, STAGE1_BATCH), "stage2": dit_peak(dit, h, w, STAGE2_BATCH),
           "decode": decode_peak(vae, None), "decode_tiled": decode_peak(vae, TilingConfig())}
    options = [("all resident", None, False, False, False, False),
               ("text encoder offloaded", None, True, False, False, False),
               ("+ tiled decode", None, True, True, False, False),
               ("+ text encoder layers streamed", None, True, True, True, False),
               ("+ DiT away during text encoding and upsampling", None, True, True, True, True)]
    options += [(f"+ DiT blocks streamed, groups of {g}", g, True, True, True, True) for g in group_sizes]
    rows = [_phases(*o, sizes, act) for o in options]
    return {"sizes": sizes, "activations": act, "seconds": time.perf_counter() - t0}, rows


def _phases(name, g, offload_text, tiled, text_streamed, dit_away, s, act) -> dict:
    dit = s["dit_all"] if g is None else s["dit_all"] - s["dit_blocks"] + s[f"slots_g{g}"]
    always = dit + s["vae_decoder"] + (0 if offload_text else s["gemma"] + s["vae_encoder"] + s["upsampler"])
    gemma = s["gemma_streamed" if text_streamed else "gemma"]
    # offload "transformer_between_stages": the DiT leaves, streamed blocks' two slots stay
    away = (dit - (s[f"slots_g{g}"] if g is not None else 0)) if dit_away else 0
    phases = {"text": always - away + (gemma if offload_text else 0),
              "denoise": always + act["stage1"],
              "upsample": always - away + (s["upsampler"] if offload_text else 0),
              "refine": always + act["stage2"],
              "decode": always + act["decode_tiled" if tiled else "decode"]}
    return {"option": name, "phases": phases, "peak": max(phases.values())}


def report(meta: dict, rows: list[dict]) -> str:
    s, a = meta["sizes"], meta["activations"]
    lines = ["# Planned peaks for small GPUs (plan, no GPU)", "",
             "LTX-2.3 22B (DiT fp8-cast), two-stage at 768x512x121 (stage 1 at 384x256 with 4 guidance passes "
             "batched, stage 2 distilled), Gemma 3 12B bf16, LTX-2.3 VAE. Produced by `bench/plan_small_gpus.py` "
             f"in {meta['seconds']:.0f} s on a CPU: weights counted from the release configs built on the meta "
             "device, activations traced on fake tensors. Not measured on a GPU.", "",
             "| component | GiB |", "|---|---|"]
    lines += [f"| {k} | {v / GiB:.2f} |" for k, v in s.items()]
    lines += ["", "| activations | GiB |", "|---|---|"] + [f"| {k} | {v / GiB:.2f} |" for k, v in a.items()]
    names = list(rows[0]["phases"])
    lines += ["", "| option | " + " | ".join(names) + " | peak GiB | fits 24 GB (22.35 GiB) | fits 24 GiB |",
              "|---" * (len(names) + 4) + "|"]
    for r in rows:
        cells = " | ".join(f"{r['phases'][n] / GiB:.2f}" for n in names)
        lines.append(f"| {r['option']} | {cells} | {r['peak'] / GiB:.2f} | {'yes' if r['peak'] <= 24 * GB else 'no'}"
                     f" | {'yes' if r['peak'] <= 24 * GiB else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--group-sizes", default="1,2,4")
    p.add_argument("--out", default=None, help="write the markdown table here (default: print only)")
    args = p.parse_args(argv)
    meta, rows = plan([int(g) for g in args.group_sizes.split(",")])
    text = report(meta, rows)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())



