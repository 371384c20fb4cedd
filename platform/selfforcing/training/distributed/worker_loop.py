"""The Ray Train loop of the generator workers (``TorchTrainer(train_loop_per_worker, ...)``).

Per worker: the generator in a DeepSpeed ZeRO engine, its ``GeneratorRole`` with the injected
``DeepSpeedOptimizer``, the ``WorkerTrainer`` step against scoring actor ``rank mod num_actors``.

Rank 0 owns the scoring actor group: it builds it at every (re)start of the worker group, from the same
checkpoint the workers resume from. A dead worker makes Ray Train restart the worker group, and the old
group's actors die with their owner; a dead actor fails its callers, which does the same. Either way
generator and actors restart together from one consistent step. Rank 0 also logs the all-reduced step
metrics to the job's MLflow run, prints progress, writes checkpoints, and at the end exports the EMA
generator, logs a sample video and a loss plot, and registers the model.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ...tracking import MlflowTracker, NullTracker, Tracker, register_generator
from ..batches import BatchSource, RandomSource, ToyWorldSource
from ..checkpoint_store import Checkpoint, CheckpointStore
from ..generator import GeneratorRole
from ..job_config import SelfForcingJobConfig
from ..local import TrainState
from ..networks import load_network
from ..optim import build_adamw
from ..reporting import ProgressPrinter, write_loss_plot, write_sample_video
from ..worker import BatchLayout, WorkerTrainer
from .deepspeed_config import build_deepspeed_config, resolve_precision
from .deepspeed_optim import DeepSpeedOptimizer
from .engine_state import consolidate, load_optimizer, load_weights, read_state, save_state
from .remote_client import RemoteScoringClient
from .scoring_actor import NAMESPACE, ScoringGroup

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"  # one line per step (rank 0, all-reduced): losses, phase times, memory
FINAL_DIR = "final"  # the run's final weights: generator.pt, ema.pt, scoring.pt
CHECKPOINT_DIR = "checkpoints"
PIDS_DIR = "pids"  # worker_<rank>.pid, scoring_<i>.pid of the current attempt (for operators and tests)
ATTEMPTS_FILE = "attempts.jsonl"
GENERATOR_PREFIX = "generator"
STATE_FILE = "state.json"
EMA_FILE = "ema.safetensors"


@dataclass
class WorkerLoopConfig:
    """What the driver hands every worker (plain data: Ray Train pickles it)."""

    job: dict[str, Any]
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


def checkpoint_store(job: SelfForcingJobConfig, output_dir: str | Path) -> CheckpointStore:
    return CheckpointStore(Path(output_dir) / CHECKPOINT_DIR, job.checkpoint.num_to_keep)


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


def _broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _resolve_checkpoint(job: SelfForcingJobConfig, store: CheckpointStore) -> Checkpoint | None:
    """Where this attempt starts: ``checkpoint.resume_from`` on the first attempt, else the newest
    complete checkpoint of the run (a restart after a fault, or the same command run again)."""
    store.clean_staging()
    latest = store.latest()
    if latest is not None:
        return latest
    if job.checkpoint.resume_from:
        return store.verify(Path(job.checkpoint.resume_from))
    return None


class _Run:
    """Everything one worker holds during the loop."""

    def __init__(self, loop: WorkerLoopConfig) -> None:
        import deepspeed
        import ray.train
        import ray.train.torch

        self.loop = loop
        self.job = job = SelfForcingJobConfig.model_validate(loop.job)
        self.out = Path(loop.output_dir)
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device() if job.scaling.use_gpu else torch.device("cpu")
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, int(job.scaling.cpus_per_worker)))
        (self.out / PIDS_DIR).mkdir(parents=True, exist_ok=True)
        (self.out / PIDS_DIR / f"worker_{self.rank}.pid").write_text(str(os.getpid()))

        # 1. Where to start (rank 0 decides, everyone follows).
        self.store = checkpoint_store(job, self.out)
        found = _resolve_checkpoint(job, self.store) if self.rank == 0 else None
        self.resumed: Checkpoint | None = _broadcast(found)
        saved = read_state(self.resumed.path, GENERATOR_PREFIX) if self.resumed else None

        # 2. The generator in a DeepSpeed engine (weights loaded before, optimiser state after init).
        model = load_network(job.models.generator, job.platform, self.device)
        if saved is not None:
            load_weights(model, saved)
        precision = resolve_precision(job.scaling.precision, self.device.type == "cuda")
        gas = job.scaling.gradient_accumulation_steps
        ds_config = build_deepspeed_config(
            job.training.generator_optim, zero_stage=job.scaling.zero_stage,
            micro_batch_size=job.micro_batch_size, gradient_accumulation_steps=gas, world_size=self.world,
            precision=precision,
        )
        self.engine, *_ = deepspeed.initialize(
            model=model, optimizer=build_adamw(model.parameters(), job.training.generator_optim), config=ds_config
        )
        self.optimizer = DeepSpeedOptimizer(self.engine)
        self.role = GeneratorRole(
            self.engine.module, job.platform, job.training, self.rank, optimizer=self.optimizer, runner=self.engine
        )
        state = TrainState()
        if self.resumed is not None:
            load_optimizer(self.engine, saved)
            saved_state = json.loads(self.resumed.file(STATE_FILE).read_text())
            state = TrainState(**saved_state["train_state"])
            self.optimizer.load_state_dict(saved_state["generator_optimizer"])
            if self.resumed.file(EMA_FILE).exists():
                from safetensors.torch import load_file

                self.role.ema.shadow = {k: v.to(self.device) for k, v in load_file(str(self.resumed.file(EMA_FILE))).items()}

        # 3. The scoring group (rank 0 owns it), this rank's actor, the step loop.
        self.group: ScoringGroup | None = None
        names = None
        if self.rank == 0:
            self.group = ScoringGroup(job, state.step, str(self.resumed.path) if self.resumed else None)
            names = self.group.names
            for i, pid in enumerate(self.group.pids()):
                (self.out / PIDS_DIR / f"scoring_{i}.pid").write_text(str(pid))
            with (self.out / ATTEMPTS_FILE).open("a") as f:
                f.write(json.dumps({"resumed_from": self.resumed.step if self.resumed else None,
                                    "checkpoint": str(self.resumed.path) if self.resumed else None}) + "\n")
        names = _broadcast(names)
        actor = ray_get_actor(names[self.rank % len(names)])
        layout = BatchLayout(self.rank, self.world, job.micro_batch_size, gas)
        self.trainer = WorkerTrainer(
            self.role, RemoteScoringClient(actor), job.training, build_source(job), layout, job.overlap, state
        )
        self.tracker: Tracker = NullTracker()
        if self.rank == 0 and loop.run_id is not None:
            self.tracker = MlflowTracker(loop.tracking_uri, run_id=loop.run_id)
        self.progress = ProgressPrinter(job.run.name, job.training.max_steps, state.step)
        if self.rank == 0 and self.resumed is not None:
            self.progress.note(f"resumed from {self.resumed.path} (step {self.resumed.step})")
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ per step
    def record(self, records: list[dict[str, float]]) -> None:
        for record in records:
            if not self.history:  # after the first step: the optimiser state exists
                record.update(self.optimizer.memory_footprint())
            record = all_reduce_mean(record)
            step = int(record["step"])
            self.history.append(record)
            if self.rank != 0:
                continue
            with (self.out / METRICS_FILE).open("a") as f:
                f.write(json.dumps(record) + "\n")
            every = self.job.logging.every_n_steps
            if step % every == 0 or step + 1 == self.job.training.max_steps:
                self.tracker.log_metrics({k: v for k, v in record.items() if k != "step"}, step=step)
                self.progress.show(step, record)

    def checkpoint(self) -> None:
        """A whole-trainer checkpoint of the state after ``state.step`` steps (all ranks call)."""
        import torch.distributed as dist

        self.record(self.trainer.flush())
        step = self.trainer.state.step
        generator = consolidate(self.engine)  # collective
        if self.rank == 0:
            staging = self.store.stage(step)
            self.group.save_state(str(staging))
            save_state(generator, staging, GENERATOR_PREFIX)
            if self.role.ema.active:
                from safetensors.torch import save_file

                save_file({k: v.detach().float().cpu().contiguous() for k, v in self.role.ema.shadow.items()},
                          str(staging / EMA_FILE))
            (staging / STATE_FILE).write_text(json.dumps({
                "train_state": asdict(self.trainer.state), "generator_optimizer": self.optimizer.state_dict(),
                "layout": {"num_workers": self.world, "zero_stage": self.job.scaling.zero_stage,
                           "gradient_accumulation_steps": self.job.scaling.gradient_accumulation_steps},
            }))
            saved = self.store.commit(staging, step)
            self.progress.note(f"checkpoint {saved.path}")
        if dist.is_initialized():
            dist.barrier()

    def train(self) -> str | None:
        """Train to ``max_steps``; returns why it stopped early (non-finite training), else None."""
        job, trainer = self.job, self.trainer
        every = job.checkpoint.every_n_steps
        limit = job.fault.max_consecutive_nonfinite
        while trainer.state.step < job.training.max_steps:
            self.record(trainer.train_step())
            if trainer.state.consecutive_skipped_steps >= limit:
                self.record(trainer.flush())
                last = self.store.latest() if self.rank == 0 else None
                return (f"{trainer.state.consecutive_skipped_steps} steps in a row had a non-finite loss or gradient "
                        f"(fault.max_consecutive_nonfinite={limit}) at step {trainer.state.step}; the last good "
                        f"checkpoint is {last.path if last else 'none (no checkpoint was written)'}")
            if every and trainer.state.step % every == 0 and trainer.state.step < job.training.max_steps:
                self.checkpoint()
        self.checkpoint()
        return None


def ray_get_actor(name: str):
    import ray

    return ray.get_actor(name, namespace=NAMESPACE)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train

    run = _Run(WorkerLoopConfig(**config))
    stopped = run.train()
    job, rank = run.job, run.rank
    summary: dict[str, Any] = {"steps": run.trainer.state.step, "state": asdict(run.trainer.state),
                               "finished": stopped is None}
    if stopped is not None:
        summary["stopped"] = stopped
    else:
        # Final weights, export (the EMA when it exists), artifacts, registration: rank 0 writes;
        # ZeRO-3 gathers on all ranks.
        _save_final_weights(run.role, run.out / FINAL_DIR, rank)
        if rank == 0:
            run.group.export_network(str(run.out / FINAL_DIR / "scoring.pt"))
        export = _export_model(run.role, job)
        if rank == 0:
            history = _read_history(run.out / METRICS_FILE) or run.history
            summary.update(_finish(job, run.loop, export, history, run.tracker, build_source(job)))
    if rank == 0:
        (run.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        run.tracker.close("FINISHED" if stopped is None else "FAILED")
        run.group.shutdown()
    ray.train.report({"steps": run.trainer.state.step})


def _read_history(path: Path) -> list[dict[str, float]]:
    """The run's step records over all attempts (a step re-run after a rollback counts once: the last)."""
    if not path.exists():
        return []
    by_step = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[int(record["step"])] = record
    return [by_step[k] for k in sorted(by_step)]


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

    plain = build_dit(_export_platform(job), device="cpu")
    with torch.no_grad():
        if role.ema.active:
            role.ema.copy_to(plain)
        else:
            with role.optimizer.full_parameters():
                for p, q in zip(plain.parameters(), role.model.parameters(), strict=True):
                    p.copy_(q.detach().float().cpu())
    return plain.eval().requires_grad_(False)


def _export_platform(job: SelfForcingJobConfig):
    return job.platform.model_copy(update={"runtime": job.platform.runtime.model_copy(
        update={"dtype": "float32", "device": "auto", "gradient_checkpointing": False})})


def _finish(
    job: SelfForcingJobConfig, loop: WorkerLoopConfig, model: torch.nn.Module, history: list[dict[str, float]],
    tracker: Tracker, source: BatchSource,
) -> dict[str, Any]:
    """Sample video + loss plot as artifacts, the generator registered with the job's alias."""
    from ...models.factory import save_generator

    summary: dict[str, Any] = {"final_metrics": history[-1] if history else {}}
    platform = _export_platform(job)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plot = write_loss_plot(history, tmp / "losses.png")
        if plot is not None:
            tracker.log_artifact(plot)
        if job.logging.sample_video:
            text = source.batch(0, [0]).text
            video = write_sample_video(model, platform, text, tmp / "sample.mp4")
            tracker.log_artifact(video)
        folder = save_generator(platform, model, tmp / "generator")
        if job.tracking.register_as and loop.run_id is not None:
            registered = register_generator(
                folder, job.tracking.register_as, alias=job.tracking.alias, tracking_uri=loop.tracking_uri,
                run_id=loop.run_id, tags={"job": "self_forcing", "preset": str(job.platform.preset)},
            )
            summary["model_uri"] = registered.model_uri
            summary["model_version"] = registered.version
    return summary
