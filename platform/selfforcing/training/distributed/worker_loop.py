"""The Ray Train loop of every training job (``TorchTrainer(train_loop_per_worker, ...)``).

Per worker: the job's step program (``training.programs``) on the shared ``TrainingLoop``, with the
trained network in a DeepSpeed ZeRO engine (``DeepSpeedOptimizer``: the guarded step, one all-reduced
skip decision), ranks agreeing through the process group Ray Train made, and for Self Forcing the
scoring actor group (``RayScoring``). Rank 0 logs to the job's MLflow run, prints progress, writes
checkpoints, and at the end exports, logs artifacts and registers the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...tracking import MlflowTracker, Tracker
from ..config import OptimConfig
from ..job_config import SelfForcingJobConfig, TrainingJobBase
from ..loop import (
    ATTEMPTS_FILE,
    CHECKPOINT_DIR,
    FINAL_DIR,
    METRICS_FILE,
    PIDS_DIR,
    SUMMARY_FILE,
    TrainedNetwork,
    TrainingLoop,
    checkpoint_store,
)
from ..optim import build_adamw
from ..programs import build_program, job_config
from ..programs.self_forcing import build_source
from .deepspeed_config import build_deepspeed_config, resolve_precision
from .deepspeed_optim import DeepSpeedOptimizer
from .engine_state import consolidate, load_optimizer

__all__ = ["ATTEMPTS_FILE", "CHECKPOINT_DIR", "FINAL_DIR", "METRICS_FILE", "PIDS_DIR", "SUMMARY_FILE",
           "WorkerLoopConfig", "build_source", "checkpoint_store", "train_loop_per_worker"]


@dataclass
class WorkerLoopConfig:
    """What the driver hands every worker (plain data: Ray Train pickles it)."""

    kind: str
    job: dict[str, Any]
    run_id: str | None
    tracking_uri: str
    output_dir: str


class ProcessGroup:
    """The ranks of the Ray Train worker group, through the process group it made (gloo / NCCL)."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    @staticmethod
    def _active() -> bool:
        import torch.distributed as dist

        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def all_reduce_mean(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics averaged over the ranks (every rank holds the same keys at the same point)."""
        import torch.distributed as dist

        if not self._active():
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(values)
        values /= dist.get_world_size()
        return dict(zip(keys, values.tolist(), strict=True))

    def broadcast(self, value: Any) -> Any:
        import torch.distributed as dist

        if not self._active():
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        import torch.distributed as dist

        if self._active():
            dist.barrier()


def deepspeed_engine(job: TrainingJobBase, device: torch.device, world_size: int):
    """The engine factory of the loop: ``model`` in a DeepSpeed ZeRO engine with torch's AdamW."""

    def build(model: nn.Module, optim: OptimConfig) -> TrainedNetwork:
        import deepspeed

        s = job.scaling
        config = build_deepspeed_config(
            optim, zero_stage=s.zero_stage, micro_batch_size=job.micro_batch_size,
            gradient_accumulation_steps=s.gradient_accumulation_steps, world_size=world_size,
            precision=resolve_precision(s.precision, device.type == "cuda"),
        )
        engine, *_ = deepspeed.initialize(model=model, optimizer=build_adamw(model.parameters(), optim), config=config)
        return TrainedNetwork(engine.module, engine, DeepSpeedOptimizer(engine), lambda: consolidate(engine),
                              lambda state: load_optimizer(engine, state))

    return build


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    loop_config = WorkerLoopConfig(**config)
    job = job_config(loop_config.kind, loop_config.job)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if job.scaling.use_gpu else torch.device("cpu")
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(job.scaling.cpus_per_worker)))
    scoring = None
    if isinstance(job, SelfForcingJobConfig):
        from .scoring_backend import RayScoring

        scoring = RayScoring(job)
    tracker: Tracker | None = None
    if rank == 0 and loop_config.run_id is not None:
        tracker = MlflowTracker(loop_config.tracking_uri, run_id=loop_config.run_id)
    loop = TrainingLoop(
        job, build_program(job, scoring), ProcessGroup(rank, world), deepspeed_engine(job, device, world),
        Path(loop_config.output_dir), device, tracker, run_id=loop_config.run_id,
        tracking_uri=loop_config.tracking_uri,
    )
    summary = loop.run()
    ray.train.report({"steps": summary["steps"], "pid": os.getpid()})
