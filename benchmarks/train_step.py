"""Where a Self Forcing training step's time goes, in one process and split over Ray actors.

    python benchmarks/train_step.py                      # tiny preset, CPU: all three schedules + ZeRO memory
    python benchmarks/train_step.py --preset wan2.1-t2v-1.3b --device cuda --frames 21 \
        --in-process-only --gradient-checkpointing       # real size on one GPU (no Ray needed there)

1. In-process ``LocalTrainer``: the split of one step into rollout, scoring (real + fake score), critic
   update, and the generator's backward + optimiser step.
2. The distributed job on a local Ray with the same global batch and steps: actor-split sequential and
   actor-split overlapped (the critic's update hidden behind the generator's backward and next rollout),
   as steps/s ratios against each other, measured in the same run. Phase times come from the job's own
   ``metrics.jsonl``.
3. Per-rank memory of the generator's DeepSpeed engine for ZeRO 1 / 2 / 3 (bytes counted, not sampled).
Numbers on a shared 2-core machine are noisy: compare the ratios printed together, not across runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timed:
    """Wraps a callable and accumulates its wall time per call (device-synchronised)."""

    def __init__(self, fn, device: torch.device, store: dict[str, list[float]], name: str) -> None:
        self.fn, self.device, self.store, self.name = fn, device, store, name

    def __call__(self, *args, **kwargs):
        _sync(self.device)
        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        _sync(self.device)
        self.store.setdefault(self.name, []).append(time.perf_counter() - start)
        return out


def in_process(args) -> dict[str, float]:
    from selfforcing.config import load_config
    from selfforcing.models.factory import build_dit
    from selfforcing.training import CriticRole, GeneratorRole, LocalTrainer, TrainingConfig
    from selfforcing.training.batches import RandomSource

    device = torch.device(args.device)
    overrides = [f"runtime.gradient_checkpointing={str(args.gradient_checkpointing).lower()}"]
    if device.type == "cpu":
        overrides.append("runtime.dtype=float32")
    platform = load_config(args.preset, overrides=overrides)
    frames = args.frames
    config = TrainingConfig(
        rollout={"min_frames": frames, "max_frames": frames}, batch_size=args.batch, ema={"start_step": 0},
        critic_steps_per_generator_step=1,  # every step scores and updates: the full split each step
    )
    teacher = build_dit(platform, device, seed=1).requires_grad_(False)
    generator = GeneratorRole(build_dit(platform, device, seed=0), platform, config)
    critic = CriticRole(teacher, copy.deepcopy(teacher).requires_grad_(True), generator.schedule, config, seed=1)
    times: dict[str, list[float]] = {}
    generator.sample = Timed(generator.sample, device, times, "rollout")
    generator.apply_gradient = Timed(generator.apply_gradient, device, times, "generator_backward_and_step")
    critic.score_gradient = Timed(critic.score_gradient, device, times, "scoring")
    critic.update = Timed(critic.update, device, times, "critic_update")
    trainer = LocalTrainer(generator, critic, config)
    source = RandomSource(platform, args.batch, 8, frames)
    step_times = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            times.clear()
        start = time.perf_counter()
        trainer.train_step(source.batch(step, range(args.batch)))
        _sync(device)
        if step >= args.warmup:
            step_times.append(time.perf_counter() - start)
    out = {name: statistics.median(v) for name, v in times.items()}
    out["step"] = statistics.median(step_times)
    if device.type == "cuda":
        out["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def distributed(args, tmp: Path) -> dict[str, dict[str, float]]:
    import ray

    from selfforcing.config.job import load_job_config
    from selfforcing.training.distributed.launch import run_self_forcing
    from selfforcing.training.job_config import SelfForcingJobConfig

    root = Path(__file__).resolve().parents[1]

    def run(name: str, *overrides: str) -> list[dict[str, float]]:
        job = load_job_config(SelfForcingJobConfig, root / "jobs" / "configs" / "tiny_dmd.yaml", [
            f"run.name={name}", f"run.storage_path={tmp}", f"tracking.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
            "tracking.register_as=null", "logging.sample_video=false", f"platform.preset={args.preset}",
            f"training.batch_size={args.batch}", f"training.max_steps={args.warmup + args.steps}",
            f"training.rollout.min_frames={args.frames}", f"training.rollout.max_frames={args.frames}",
            "training.critic_steps_per_generator_step=1", *overrides,
        ])
        outcome = run_self_forcing(job)
        lines = (outcome.output_dir / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    ray.init(address="local", num_cpus=args.ray_cpus)
    try:
        results: dict[str, dict[str, float]] = {}
        for name, overlap in (("sequential", "false"), ("overlapped", "true")):
            records = run(name, f"overlap={overlap}")[args.warmup:]
            keys = [k for k in records[0] if k.startswith("time_")]
            results[name] = {k: statistics.median(r[k] for r in records) for k in keys}
        for stage in (1, 2, 3):
            first = run(f"zero{stage}", f"scaling.zero_stage={stage}", f"training.max_steps={1}")[0]
            results[f"zero{stage}"] = {k: v for k, v in first.items() if k.startswith("memory_")}
        return results
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=6, help="latent frames per rollout (a chunk multiple)")
    parser.add_argument("--batch", type=int, default=4, help="global batch")
    parser.add_argument("--steps", type=int, default=4, help="timed steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--in-process-only", action="store_true", help="skip the Ray runs (e.g. on a GPU box)")
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.manual_seed(0)

    local = in_process(args)
    print(f"== in-process LocalTrainer ({args.preset}, {args.device}, batch {args.batch}, {args.frames} frames) ==")
    for name, seconds in local.items():
        share = f"  ({seconds / local['step']:.0%} of a step)" if name not in ("step", "peak_memory_gb") else ""
        print(f"  {name:30s} {seconds:9.4f}{share}")
    results = {"in_process": local}
    if not args.in_process_only:
        with tempfile.TemporaryDirectory() as tmp:
            dist = distributed(args, Path(tmp))
        results.update(dist)
        seq, ovl = dist["sequential"], dist["overlapped"]
        print("== actor-split (2 workers ZeRO-2 + 1 critic actor), median seconds per step ==")
        for key in sorted(set(seq) | set(ovl)):
            print(f"  {key:30s} sequential {seq.get(key, float('nan')):8.4f}   overlapped {ovl.get(key, float('nan')):8.4f}")
        print(f"  steps/s ratio overlapped / sequential: {seq['time_step'] / ovl['time_step']:.2f}x")
        print(f"  steps/s ratio overlapped / in-process: {local['step'] / ovl['time_step']:.2f}x")
        print("== generator engine memory per rank (bytes, 2 ranks) ==")
        for stage in (1, 2, 3):
            m = dist[f"zero{stage}"]
            print(f"  ZeRO-{stage}: params {m['memory_param_bytes']:.3g}  fp32 master {m['memory_master_bytes']:.3g}  "
                  f"optimizer state {m['memory_optimizer_bytes']:.3g}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
