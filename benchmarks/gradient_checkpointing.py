"""Peak memory and time of one Self Forcing generator step (rollout + ``video.backward``), with and without
gradient checkpointing, for a full and a rolling (sink) KV cache.

Question: how much activation memory does ``runtime.gradient_checkpointing`` save, and what does the
recomputation (one extra forward per grad-carrying call) cost? Both settings run alternately in one
process on the same rollout plan (the last ``--grad-chunks`` chunks carry gradient, every chunk exits at
the last step), each twice, the second measurement kept. Read the ratios; peak memory is CUDA's
``max_memory_allocated`` above the weights (not measured on CPU). Exactness is the tests' job
(tests/forcing/test_self_forcing_checkpointing.py), not this script's.

    python benchmarks/gradient_checkpointing.py                     # small CPU preset
    python benchmarks/gradient_checkpointing.py --preset wan2.1-t2v-1.3b --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch

from selfforcing.config import load_config
from selfforcing.diffusion import FlowMatchSchedule
from selfforcing.forcing import NoiseSource, RolloutConfig, RolloutPlan, self_forcing_rollout
from selfforcing.models.factory import build_dit

SMALL = [
    "model.dim=128", "model.ffn_dim=256", "model.num_heads=4", "model.num_layers=4",
    "video.height=64", "video.width=64",
]


def run(args: argparse.Namespace) -> None:
    config = load_config(args.preset, overrides=(SMALL if args.preset == "tiny" else []) + args.set)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    with torch.device(device):  # build on the device: a 1.3B model is slow to initialise on the CPU
        model = build_dit(config, device)
    dtype = next(model.parameters()).dtype
    k, sc = config.video.frames_per_chunk, config.vae.spatial_compression
    shape = (config.model.in_dim, config.video.height // sc, config.video.width // sc)
    schedule = FlowMatchSchedule(1000, 5.0)
    steps = schedule.warp_timesteps([1000.0, 750.0, 500.0, 250.0])
    text = torch.randn(1, config.model.text_len, config.model.text_dim, device=device, dtype=dtype)
    plan = RolloutPlan(args.chunks, (len(steps) - 1,) * args.chunks, loss_start_chunk=args.chunks - args.grad_chunks)

    def step(checkpointing: bool, window: int | None, sink: int) -> tuple[float, float]:
        model.enable_gradient_checkpointing(checkpointing)
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) if cuda else 0
        start = time.perf_counter()
        try:
            video = self_forcing_rollout(
                model, text, plan, shape, RolloutConfig(steps, k), schedule, NoiseSource([1]),
                window_frames=window, sink_frames=sink,
            ).video
            video.backward(torch.ones_like(video))
        except torch.OutOfMemoryError:
            return float("nan"), float("inf")
        if cuda:
            torch.cuda.synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**30 if cuda else float("nan")
        return time.perf_counter() - start, peak

    step(True, None, 0)  # warm-up (kernels, allocator)
    print(f"preset={args.preset} device={device} dtype={dtype} latents={shape} chunks={args.chunks}x{k} "
          f"frames, grad chunks={args.grad_chunks}")
    for window, sink in ((None, 0), (args.window, args.sink)):
        results = {}
        for checkpointing in (False, True, False, True):
            results[checkpointing] = step(checkpointing, window, sink)
        (t0, m0), (t1, m1) = results[False], results[True]
        cache = "full cache" if window is None else f"rolling window={window} sink={sink}"
        print(f"  {cache}: peak above weights {m0:.2f} -> {m1:.2f} GiB ({m1 / m0:.2f}x); "
              f"step time checkpointed / plain {t1 / t0:.2f}x ({t0:.2f} s -> {t1:.2f} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunks", type=int, default=7, help="chunks in the rollout (7 x 3 = 21 latent frames)")
    p.add_argument("--grad-chunks", type=int, default=2, help="last chunks that carry gradient")
    p.add_argument("--window", type=int, default=12, help="rolling cache size in latent frames")
    p.add_argument("--sink", type=int, default=3, help="sink frames of the rolling cache")
    p.add_argument("--set", action="append", default=[], help="config override (repeatable)")
    run(p.parse_args())


if __name__ == "__main__":
    main()
