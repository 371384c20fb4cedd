"""The Ray Train loop of the generator workers (``TorchTrainer(train_loop_per_worker, ...)``).

Per worker: the generator in a DeepSpeed ZeRO engine, its ``GeneratorRole`` with the injected
``DeepSpeedOptimizer``, the ``WorkerTrainer`` step against scoring actor ``rank mod num_actors``. Rank 0
logs the all-reduced step metrics to the job's MLflow run, prints progress, and at the end exports the
EMA generator, logs a sample video and a loss plot, and registers the model.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...tracking import MlflowTracker, NullTracker, Tracker, register_generator
from ..batches import BatchSource, RandomSource, ToyWorldSource
from ..generator import GeneratorRole
from ..job_config import SelfForcingJobConfig
from ..networks import load_network
from ..optim import build_adamw
from ..reporting import ProgressPrinter, write_loss_plot, write_sample_video
from ..worker import BatchLayout, WorkerTrainer
from .deepspeed_config import build_deepspeed_config, resolve_precision
from .deepspeed_optim import DeepSpeedOptimizer
from .remote_client import RemoteScoringClient
from .scoring_actor import NAMESPACE

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"  # one line per step (rank 0, all-reduced): losses, phase times, memory
FINAL_DIR = "final"  # the run's final weights: generator.pt, ema.pt, and the scoring network's


@dataclass
class WorkerLoopConfig:
    """What the driver hands every worker (plain data: Ray Train pickles it)."""

    job: dict[str, Any]
    actor_names: list[str]
    run_id: str | None
    tracking_uri: str
    output_dir: str


def build_source(job: SelfForcingJobConfig) -> BatchSource:
    """The job's global-batch source."""
    ro = job.training.rollout
    frames = ro.loss_window_frames or ro.min_frames
    data = job.data
    if data.source == "random":
        return RandomSource(job.platform, job.training.batch_size, data.num_prompts, frames, data.seed)
    if data.source == "toyworld":
        return ToyWorldSource(job.platform, frames, data.seed)
    raise NotImplementedError(
        "data.source='embeddings' (prompt-embedding Parquet sets) is read by the pipeline jobs' datasets; "
        "use 'random' or 'toyworld' until then"
    )


def all_reduce_mean(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics averaged over the generator ranks (every rank holds the same keys at the same point)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(values)
    values /= dist.get_world_size()
    return dict(zip(keys, values.tolist(), strict=True))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import deepspeed
    import ray
    import ray.train
    import ray.train.torch

    loop = WorkerLoopConfig(**config)
    job = SelfForcingJobConfig.model_validate(loop.job)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if job.scaling.use_gpu else torch.device("cpu")
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(job.scaling.cpus_per_worker)))

    # 1. The generator in a DeepSpeed engine; the role gets it as runner and optimiser.
    model = load_network(job.models.generator, job.platform, device)
    precision = resolve_precision(job.scaling.precision, device.type == "cuda")
    gas = job.scaling.gradient_accumulation_steps
    ds_config = build_deepspeed_config(
        job.training.generator_optim, zero_stage=job.scaling.zero_stage, micro_batch_size=job.micro_batch_size,
        gradient_accumulation_steps=gas, world_size=world, precision=precision,
    )
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=build_adamw(model.parameters(), job.training.generator_optim), config=ds_config
    )
    optimizer = DeepSpeedOptimizer(engine)
    role = GeneratorRole(engine.module, job.platform, job.training, rank, optimizer=optimizer, runner=engine)

    # 2. The scoring actor of this rank and the step loop.
    actor = ray.get_actor(loop.actor_names[rank % len(loop.actor_names)], namespace=NAMESPACE)
    layout = BatchLayout(rank, world, job.micro_batch_size, gas)
    trainer = WorkerTrainer(role, RemoteScoringClient(actor), job.training, build_source(job), layout, job.overlap)

    tracker: Tracker = NullTracker()
    if rank == 0 and loop.run_id is not None:
        tracker = MlflowTracker(loop.tracking_uri, run_id=loop.run_id)
    progress = ProgressPrinter(job.run.name, job.training.max_steps, trainer.state.step)
    history: list[dict[str, float]] = []
    every = job.logging.every_n_steps
    metrics_file = Path(loop.output_dir) / METRICS_FILE
    for record in trainer.run(job.training.max_steps):
        if not history:  # after the first step: optimiser state exists
            record.update(optimizer.memory_footprint())
        record = all_reduce_mean(record)
        step = int(record["step"])
        history.append(record)
        if rank == 0:
            with metrics_file.open("a") as f:
                f.write(json.dumps(record) + "\n")
        if rank == 0 and (step % every == 0 or step + 1 == job.training.max_steps):
            tracker.log_metrics({k: v for k, v in record.items() if k != "step"}, step=step)
            progress.show(step, record)

    # 3. Final weights, export (the EMA when it exists), artifacts, registration: rank 0 writes;
    #    ZeRO-3 gathers on all ranks.
    _save_final_weights(role, Path(loop.output_dir) / FINAL_DIR, rank)
    export = _export_model(role, job)
    summary: dict[str, Any] = {"steps": trainer.state.step, "state": vars(trainer.state)}
    if rank == 0:
        summary.update(_finish(job, loop, export, history, tracker, build_source(job)))
        out = Path(loop.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        tracker.close()
    ray.train.report({"steps": trainer.state.step})


def _save_final_weights(role: GeneratorRole, folder: Path, rank: int) -> None:
    """generator.pt and ema.pt (fp32 state dicts of the plain network) for inspection and tests."""
    with role.optimizer.full_parameters():
        if rank == 0:
            folder.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().float().cpu().clone() for k, v in role.model.state_dict().items()}
            torch.save(state, folder / "generator.pt")
            if role.ema.active:
                torch.save({k: v.float().cpu() for k, v in role.ema.shadow.items()}, folder / "ema.pt")


def _export_model(role: GeneratorRole, job: SelfForcingJobConfig) -> torch.nn.Module:
    """A plain fp32 CPU copy of the weights to serve: the EMA when active, else the generator."""
    from ...models.factory import build_dit

    plain = build_dit(job.platform.model_copy(update={"runtime": job.platform.runtime.model_copy(
        update={"dtype": "float32", "gradient_checkpointing": False})}), device="cpu")
    with torch.no_grad():
        if role.ema.active:
            role.ema.copy_to(plain)
        else:
            with role.optimizer.full_parameters():
                for p, q in zip(plain.parameters(), role.model.parameters(), strict=True):
                    p.copy_(q.detach().float().cpu())
    return plain.eval().requires_grad_(False)


def _finish(
    job: SelfForcingJobConfig, loop: WorkerLoopConfig, model: torch.nn.Module, history: list[dict[str, float]],
    tracker: Tracker, source: BatchSource,
) -> dict[str, Any]:
    """Sample video + loss plot as artifacts, the generator registered with the job's alias."""
    from ...models.factory import save_generator

    summary: dict[str, Any] = {"final_metrics": history[-1] if history else {}}
    export_platform = job.platform.model_copy(update={"runtime": job.platform.runtime.model_copy(
        update={"dtype": "float32", "device": "auto", "gradient_checkpointing": False})})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plot = write_loss_plot(history, tmp / "losses.png")
        if plot is not None:
            tracker.log_artifact(plot)
        if job.logging.sample_video:
            text = source.batch(0, [0]).text
            video = write_sample_video(model, export_platform, text, tmp / "sample.mp4")
            tracker.log_artifact(video)
        folder = save_generator(export_platform, model, tmp / "generator")
        if job.tracking.register_as and loop.run_id is not None:
            registered = register_generator(
                folder, job.tracking.register_as, alias=job.tracking.alias, tracking_uri=loop.tracking_uri,
                run_id=loop.run_id, tags={"job": "self_forcing", "preset": str(job.platform.preset)},
            )
            summary["model_uri"] = registered.model_uri
            summary["model_version"] = registered.version
    return summary
