"""What per-sample draws cost a toy teacher step: the shared loop's teacher program vs the old recipe loop.

The teacher job draws every sample's scene, caption dropout, timestep and noise from (seed, step, sample
index) (so any number of workers, accumulation or a resume compute the same numbers); the recipe's old
private loop drew a whole batch from one sequential generator. Both then run the same model step. This
measures, side by side on the same batch size, (1) the data and draws alone and (2) a whole training step
(forward, backward, clipped AdamW, EMA) with each, and prints their ratios.

    python benchmarks/teacher_step.py [--batch 256] [--steps 10] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from selfforcing.config import load_config
    from selfforcing.diffusion import FlowMatchSchedule
    from selfforcing.forcing import sample_generators
    from selfforcing.models.factory import build_dit
    from selfforcing.objectives.denoising import flow_matching_loss
    from selfforcing.recipes.toyworld.world import ToyData
    from selfforcing.training.batches import ToyWorldSource
    from selfforcing.training.programs.denoising import NOISE_STREAM, denoising_draws

    device = torch.device(args.device)
    config = load_config("toy", None, [f"runtime.device={device.type}"])
    schedule = FlowMatchSchedule(config.schedule.num_train_timesteps, config.schedule.shift)
    frames = config.video.num_frames
    ids = list(range(args.batch))
    source = ToyWorldSource(config, frames, 0)
    data = ToyData(config)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)

    def per_sample(step: int):
        b = source.batch(step, ids)
        gens = sample_generators(0, step, ids, NOISE_STREAM)
        drop = torch.tensor([float(torch.rand((), generator=g)) < 0.1 for g in gens])
        text = torch.where(drop[:, None, None], b.negative_text, b.text)
        t, noise, _ = denoising_draws("flow_matching", b.real_latents, gens, schedule, 3)
        return b.real_latents.to(device), text.to(device), t.to(device), noise.to(device)

    def batched(step: int):
        b = data.batch(args.batch, rng, 0.1)
        u = torch.rand(args.batch, 1, generator=gen, dtype=torch.float64)
        t = schedule.timestep(schedule.shift_sigma(u)).float().expand(args.batch, frames)
        noise = torch.randn(b.latents.shape, generator=gen)
        return b.latents.to(device), b.text.to(device), t.to(device), noise.to(device)

    model = build_dit(config, device, seed=0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train(draw, step: int) -> None:
        x0, text, t, noise = draw(step)
        loss = flow_matching_loss(model, x0, text, t, noise, schedule)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def timed(fn, draw) -> float:
        times = []
        for step in range(args.steps + 1):
            start = time.perf_counter()
            fn(draw, step) if fn is not None else draw(step)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:]) * 1000

    rows = {}
    for name, fn in (("data", None), ("step", train)):
        rows[name] = (timed(fn, batched), timed(fn, per_sample))  # interleaved: same load on both
    print(f"toy teacher, batch {args.batch}, {args.device}, {args.threads} thread(s); median ms over {args.steps}")
    for name, (old, new) in rows.items():
        print(f"{name:5s} batched {old:8.1f}  per-sample {new:8.1f}  ratio {new / old:5.2f}x")


if __name__ == "__main__":
    main()
