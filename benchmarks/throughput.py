"""End-to-end streaming throughput: frames per second and time to the first chunk, VAE decode included.

Question: how close is our streaming generator to the paper's 17.0 FPS / 0.69 s first-chunk latency
(Self Forcing chunk-wise, Wan2.1-1.3B, 832x480, 81 frames, 4 steps, one H100)? Random weights are fine
for speed. The text encoder is not timed (prompts are encoded once per request, off the hot path);
random prompt embeddings of the right shape stand in for UMT5-XXL here.

    python benchmarks/throughput.py --preset wan2.1-t2v-1.3b --device cuda          # real size, bf16
    python benchmarks/throughput.py                                                  # tiny, CPU
"""

from __future__ import annotations

import argparse
import statistics

import torch

from selfforcing.config import load_config
from selfforcing.inference import VideoPipeline
from selfforcing.models.factory import DTYPES, build_dit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-frames", type=int, default=None, help="pixel frames (default: the preset's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--window-frames", type=int, default=None, help="rolling cache (extrapolation runs)")
    p.add_argument("--no-decode", action="store_true", help="skip the VAE (DiT-only throughput)")
    p.add_argument("--set", action="append", default=[], help="config override (repeatable)")
    args = p.parse_args()

    from selfforcing.models.vae import build_vae

    config = load_config(args.preset, overrides=args.set)
    device = torch.device(args.device)
    dtype = DTYPES[config.runtime.dtype]
    model = build_dit(config, device)
    vae = build_vae(config.vae, device=device, dtype=dtype)
    pipe = VideoPipeline(config, model, None, vae, device)
    text = torch.randn(1, config.model.text_len, config.model.text_dim, device=device, dtype=dtype)
    geo = pipe.geometry(args.num_frames)

    def once() -> tuple[float, float, int]:
        first, total, frames = None, 0.0, 0
        for chunk in pipe.stream(
            [""], geo.pixel_frames, seed=0, text_embeddings=text,
            window_frames=args.window_frames, decode=not args.no_decode,
        ):
            first = chunk.elapsed if first is None else first
            total = chunk.elapsed
            frames += chunk.frames.shape[1] if chunk.frames is not None else chunk.latents.shape[1]
        return first, total, frames

    once()  # warm-up: kernels, allocator, cuDNN autotuning
    runs = [once() for _ in range(args.repeats)]
    first = statistics.median(r[0] for r in runs)
    total = statistics.median(r[1] for r in runs)
    frames = runs[0][2]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    unit = "latent frames" if args.no_decode else "frames"
    print(f"preset={args.preset} device={name} dtype={dtype} video={geo.pixel_frames} frames "
          f"({geo.latent_frames} latent, {geo.num_chunks} chunks of {geo.frames_per_chunk}) "
          f"{config.video.width}x{config.video.height} steps={len(config.schedule.denoising_steps)}")
    print(f"throughput: {frames / total:.2f} {unit}/s   first chunk: {first:.3f} s   total: {total:.3f} s")
    print(f"vs paper (17.0 FPS, 0.69 s on one H100): {frames / total / 17.0:.2f}x FPS, "
          f"{first / 0.69:.2f}x first-chunk latency")


if __name__ == "__main__":
    main()
