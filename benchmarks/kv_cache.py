"""Per-chunk generation latency vs chunk index: recompute the prefix, full KV cache, rolling KV cache.

Question: does the rolling cache keep the cost of a chunk flat as the video grows, and by how much does
caching beat recomputing the prefix? Each chunk does the few-step loop (``--steps`` denoising passes) plus
the cache-writing pass, as in generation. All three strategies run interleaved in one process, chunk by
chunk, so machine noise hits them alike; the ratios at the last chunk are what to read.

    python benchmarks/kv_cache.py                      # small CPU preset, 24 chunks
    python benchmarks/kv_cache.py --preset wan2.1-t2v-1.3b --device cuda --chunks 21
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from selfforcing.config import load_config
from selfforcing.models.factory import build_dit

SMALL = [
    "model.dim=128", "model.ffn_dim=256", "model.num_heads=4", "model.num_layers=4",
    "video.height=64", "video.width=64",
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def run(args: argparse.Namespace) -> dict[str, list[float]]:
    overrides = SMALL if args.preset == "tiny" else []
    config = load_config(args.preset, overrides=overrides + args.set)
    device = torch.device(args.device)
    model = build_dit(config, device)
    dtype = next(model.parameters()).dtype
    k = config.video.frames_per_chunk
    sc, (_, ph, pw) = config.vae.spatial_compression, config.model.patch_size
    shape = (config.model.in_dim, config.video.height // sc, config.video.width // sc)
    text = torch.randn(1, config.model.text_len, config.model.text_dim, device=device, dtype=dtype)
    total = args.chunks * k
    frames = torch.randn(1, total, *shape, device=device, dtype=dtype)
    t = torch.full((1, total), 500.0, device=device)
    passes = args.steps + 1  # denoising steps + the cache-writing pass

    caches = {
        "full": model.new_kv_cache(1, max_frames=total),
        "rolling": model.new_kv_cache(1, window_frames=args.window),
    }
    series: dict[str, list[float]] = {"recompute": [], "full": [], "rolling": []}
    for i in range(args.chunks):
        s, e = i * k, (i + 1) * k
        for name in series:
            _sync(device)
            start = time.perf_counter()
            for _ in range(passes):
                if name == "recompute":
                    model(frames[:, :e], t[:, :e], text, frames_per_chunk=k)
                else:
                    model(frames[:, s:e], t[:, s:e], text, kv_cache=caches[name], start_frame=s)
            _sync(device)
            series[name].append(time.perf_counter() - start)
    tokens = (shape[1] // ph) * (shape[2] // pw)
    print(f"preset={args.preset} device={device} dtype={dtype} tokens/frame={tokens} chunk={k} frames "
          f"passes/chunk={passes} rolling window={args.window} frames")
    print(f"{'chunk':>5} " + " ".join(f"{n + ' ms':>14}" for n in series))
    for i in range(args.chunks):
        print(f"{i:>5} " + " ".join(f"{1000 * series[n][i]:>14.1f}" for n in series))
    tail = max(1, args.chunks // 5)

    def late(n: str) -> float:
        return statistics.median(series[n][-tail:])

    def early(n: str) -> float:
        return statistics.median(series[n][1 : 1 + tail])

    print("\nratios (median of the last chunks; growth = late / early chunks of the same strategy):")
    print(f"  recompute / rolling at the last chunks: {late('recompute') / late('rolling'):.2f}x")
    print(f"  full cache / rolling at the last chunks: {late('full') / late('rolling'):.2f}x")
    for n in series:
        print(f"  growth of {n:<9}: {late(n) / early(n):.2f}x")
    print(f"  cache memory: full {caches['full'].nbytes / 2**20:.1f} MiB, "
          f"rolling {caches['rolling'].nbytes / 2**20:.1f} MiB")
    return series


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunks", type=int, default=24)
    p.add_argument("--steps", type=int, default=4, help="denoising steps per chunk")
    p.add_argument("--window", type=int, default=9, help="rolling cache size in latent frames")
    p.add_argument("--set", action="append", default=[], help="config override (repeatable)")
    run(p.parse_args())


if __name__ == "__main__":
    main()
