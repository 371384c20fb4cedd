"""Chunk-level batching: total frames/s of N concurrent streams, batched vs one stream at a time.

Question: how much does sharing model calls across streams (``ChunkBatcher``) buy over serving the same
N streams unbatched on the same replica? Both modes generate the same videos (same prompts, seeds and
cache window); they run side by side in one process, and the ratio is what to read.

    python benchmarks/batching.py                       # tiny preset on CPU
    python benchmarks/batching.py --preset wan2.1-t2v-1.3b --device cuda --streams 1 2 4
"""

from __future__ import annotations

import argparse
import time

import torch

from selfforcing.config import load_config
from selfforcing.inference import VideoPipeline
from selfforcing.inference.batching import ChunkBatcher


def _frames(chunk) -> int:
    return chunk.frames.shape[1] if chunk.frames is not None else chunk.latents.shape[1]


def unbatched(pipe: VideoPipeline, texts, seeds, window: int, num_frames: int) -> tuple[float, int]:
    start, frames = time.perf_counter(), 0
    for text, seed in zip(texts, seeds, strict=True):
        for chunk in pipe.stream([""], num_frames, [seed], window_frames=window, text_embeddings=text):
            frames += _frames(chunk)
    return time.perf_counter() - start, frames


def batched(pipe: VideoPipeline, texts, seeds, window: int, chunks: int) -> tuple[float, int]:
    batcher = ChunkBatcher(pipe, max_streams=len(texts), window_frames=window)
    start, frames = time.perf_counter(), 0
    for i, (text, seed) in enumerate(zip(texts, seeds, strict=True)):
        batcher.add(str(i), text, seed, chunks)
    while len(batcher):
        frames += sum(_frames(c) for _, c in batcher.step())
    return time.perf_counter() - start, frames


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--set", action="append", default=[], help="config override (repeatable)")
    args = p.parse_args()
    pipe = VideoPipeline.from_config(load_config(args.preset, overrides=args.set), device=args.device)
    geo = pipe.geometry()
    window = geo.latent_frames
    dtype = next(pipe.model.parameters()).dtype
    cfg = pipe.config.model
    batched(pipe, [torch.randn(1, cfg.text_len, cfg.text_dim, dtype=dtype)], [0], window, 1)  # warm-up
    print(f"preset={args.preset} device={args.device} video={geo.pixel_frames} frames "
          f"({geo.num_chunks} chunks), decode included")
    print(f"{'streams':>7} {'unbatched fps':>14} {'batched fps':>12} {'speed-up':>9}")
    for n in args.streams:
        texts = [torch.randn(1, cfg.text_len, cfg.text_dim, dtype=dtype) for _ in range(n)]
        seeds = list(range(n))
        tu, fu = unbatched(pipe, texts, seeds, window, geo.pixel_frames)
        tb, fb = batched(pipe, texts, seeds, window, geo.num_chunks)
        assert fu == fb, (fu, fb)
        print(f"{n:>7} {fu / tu:>14.1f} {fb / tb:>12.1f} {tu / tb:>8.2f}x")


if __name__ == "__main__":
    main()
