"""Does admission's K/V accounting match the device memory a generator replica really uses?

A replica admits streams against ``admission.kv_row_nbytes`` per stream (the batch cache of ``max_streams``
rows plus a copy per parked stream). This builds the replica's pipeline and batcher at a given size,
runs one chunk step with ``--streams`` streams, parks some, and prints the accounted bytes beside the
bytes of the cache tensors and (on CUDA) beside ``torch.cuda.memory_allocated`` deltas; plus the budget
and the number of streams the replica would admit with the default settings.

    python benchmarks/serve_memory.py                                   # tiny preset, CPU (dry run)
    python benchmarks/serve_memory.py --preset wan2.1-t2v-1.3b --device cuda --streams 2 --park 1

Imports neither Ray nor MLflow (the GPU machine has neither); without PyAV it stubs ``av`` (no video is
written here).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import types

import torch

if importlib.util.find_spec("av") is None:  # video_io imports PyAV at module level; nothing here encodes
    sys.modules["av"] = types.ModuleType("av")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-streams", type=int, default=8, help="batch rows (the cache is allocated for all)")
    p.add_argument("--max-waiting", type=int, default=4)
    p.add_argument("--streams", type=int, default=2, help="streams in the measured step")
    p.add_argument("--park", type=int, default=1, help="streams parked after the step")
    p.add_argument("--window", type=int, default=None, help="latent frames (default: 81 pixel frames')")
    p.add_argument("--fraction", type=float, default=0.8, help="kv_memory_fraction")
    args = p.parse_args()

    from selfforcing.config import load_config
    from selfforcing.inference import VideoPipeline
    from selfforcing.inference.batching import ChunkBatcher
    from selfforcing.serving.admission import Capacity, default_kv_budget, kv_row_nbytes

    cuda = args.device.startswith("cuda")
    mem = (lambda: torch.cuda.memory_allocated()) if cuda else (lambda: 0)
    config = load_config(args.preset, overrides=[f"runtime.device={args.device}"])
    started = time.perf_counter()
    pipe = VideoPipeline.from_config(config, device=args.device, text_encoder=False)
    weights = mem()
    window = args.window or pipe.geometry(81).latent_frames
    row = kv_row_nbytes(pipe.model, pipe.geometry().tokens_per_frame, window)
    budget = default_kv_budget(pipe.device, args.fraction)
    print(f"{args.preset} on {args.device}: loaded in {time.perf_counter() - started:.1f} s, weights "
          f"{weights / 2**30:.2f} GiB; window {window} latent frames; accounted K/V row {row / 2**20:.2f} MiB")
    try:
        cap = Capacity(args.max_streams, args.max_waiting, 4, row, True, budget)
        print(f"budget {'unlimited' if budget is None else f'{budget / 2**30:.1f} GiB'} -> admits "
              f"{cap.max_admitted} of {args.max_streams} + {args.max_waiting} streams "
              f"(batch cache {cap.fixed_nbytes / 2**30:.2f} GiB)")
    except ValueError as exc:
        print(f"the default settings do not fit: {exc}")

    batcher = ChunkBatcher(pipe, max_streams=args.max_streams, window_frames=window, decode=False)
    cfg = pipe.model.config
    before = mem()
    for i in range(args.streams):
        text = torch.randn(1, cfg.text_len, cfg.text_dim, generator=torch.Generator().manual_seed(i))
        batcher.add(f"s{i}", text, i, None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        batcher.step()
    if cuda:
        torch.cuda.synchronize()
    held = mem() - before
    peak = (torch.cuda.max_memory_allocated() - before) if cuda else 0
    cache = batcher.cache
    text_kv = sum(k.nbytes + v.nbytes for k, v in filter(None, cache.text_kv))
    tensors = cache.nbytes + text_kv
    text_row = kv_row_nbytes(pipe.model, pipe.geometry().tokens_per_frame, 0)  # the prompt's part of a row
    accounted = args.max_streams * (row - text_row) + args.streams * text_row
    print(f"\nafter one step with {args.streams} streams in a {args.max_streams}-row batch:")
    print("| what | bytes | GiB |\n|---|---:|---:|")
    print(f"| cache tensors (frames, all rows) + prompt K/V (active rows) | {tensors} | {tensors / 2**30:.3f} |")
    print(f"| accounted: {args.max_streams} frame rows + {args.streams} prompt rows | {accounted} | "
          f"{accounted / 2**30:.3f} |")
    if cuda:
        print(f"| memory_allocated delta (kept after the step) | {held} | {held / 2**30:.3f} |")
        print(f"| peak during the step (activations included) | {peak} | {peak / 2**30:.3f} |")
    parked = []
    before = mem()
    for i in range(min(args.park, args.streams)):
        parked.append(batcher.park(f"s{i}"))
    copies = sum(x.k.nbytes + x.v.nbytes for x in parked if x.k is not None)
    print(f"| {len(parked)} parked copies (tensors) | {copies} | {copies / 2**30:.3f} |")
    if cuda:
        print(f"| memory_allocated delta of parking | {mem() - before} | {(mem() - before) / 2**30:.3f} |")
    print(f"| accounted per parked stream (frames + prompt) | {row} | {row / 2**30:.3f} |")


if __name__ == "__main__":
    main()
