"""Console entry point: ``ltxengine demo``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def _demo(args) -> int:
    import torch

    from .config import TransformerConfig, VideoVAEConfig
    from .loading import load_ltx_video
    from .loading.export import save_pipeline
    from .media import write_mp4
    from .models.transformer import LTXVideoTransformer, grid_positions
    from .models.video_vae import VideoVAE

    if (args.frames - 1) % 8:
        raise SystemExit(f"demo: --frames must be 8k+1 (e.g. 9, 17), got {args.frames}")
    if args.height % 32 or args.width % 32:
        raise SystemExit(f"demo: --height and --width must be multiples of 32, got {args.height}x{args.width}")
    torch.manual_seed(args.seed)
    # A scaled-down 0.9.5-layout model: every structural feature of the released ones, random weights.
    tcfg = TransformerConfig(in_channels=32, out_channels=32, num_attention_heads=4, attention_head_dim=16,
                             cross_attention_dim=64, num_layers=2, caption_channels=64)
    vcfg = VideoVAEConfig(latent_channels=32, block_out_channels=(8, 16, 32, 64, 128),
                          down_block_types=("LTXVideo095DownBlock3D",) * 4, decoder_block_out_channels=(32, 64, 128),
                          layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
                          spatio_temporal_scaling=(True,) * 4, decoder_spatio_temporal_scaling=(True,) * 3,
                          decoder_inject_noise=(False,) * 4,
                          downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
                          upsample_residual=(True,) * 3, upsample_factor=(2,) * 3, timestep_conditioning=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pipeline(Path(tmp) / "pipe", transformer=LTXVideoTransformer(tcfg), vae=VideoVAE(vcfg))
        ckpt = load_ltx_video(Path(tmp) / "pipe", dtype=torch.float32)
    model, vae = ckpt.transformer, ckpt.vae
    f, h, w = (args.frames - 1) // 8 + 1, args.height // 32, args.width // 32
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(1, f * h * w, tcfg.in_channels, generator=gen)
    text = torch.randn(1, 16, tcfg.caption_channels, generator=gen)  # stands in for T5 features
    start = time.perf_counter()
    with torch.no_grad():
        context = model.prepare_context(text, torch.ones(1, 16))
        rope = model.rope(grid_positions(1, f, h, w, (8 / args.fps, 32, 32)))
        sigmas = torch.linspace(1.0, 0.0, args.steps + 1)
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            v = model(x, (s * 1000).expand(1), context=context, rope=rope).float()
            x = x + (s_next - s) * v  # rectified-flow Euler step
        latents = x.transpose(1, 2).reshape(1, -1, f, h, w)
        video = vae.decode(vae.denormalize_latents(latents), temb=torch.tensor([0.05]))
    frames = ((video[0].permute(1, 2, 3, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    out = write_mp4(args.output, frames, args.fps)
    print(f"demo: random-weight LTX-Video ({sum(p.numel() for p in model.parameters()):,} transformer params), "
          f"{args.steps} steps + decode in {time.perf_counter() - start:.2f}s -> {out} "
          f"({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]} @ {args.fps} fps)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ltxengine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a tiny random-weight model end to end (no weights needed)")
    demo.add_argument("--output", default="demo.mp4")
    demo.add_argument("--frames", type=int, default=17)
    demo.add_argument("--height", type=int, default=64)
    demo.add_argument("--width", type=int, default=96)
    demo.add_argument("--steps", type=int, default=4)
    demo.add_argument("--fps", type=float, default=24.0)
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return _demo(args)


if __name__ == "__main__":
    sys.exit(main())
