"""The training loop every job runs, once per rank: the machinery shared by Self Forcing, teacher training
and ODE initialisation, which differ only in their ``StepProgram`` (``training.programs``).

What the loop does, whatever the program:
1. Where to start: rank 0 picks the newest complete checkpoint of the run (a restart after a fault, or the
   same command run again), else ``checkpoint.resume_from``; every rank follows.
2. The trained network: built by the program, its saved weights loaded, then wrapped by the injected
   engine (a DeepSpeed ZeRO engine on Ray Train workers, ``distributed.worker_loop``; torch's AdamW with the
   guarded step in one process, ``single_process``), then its AdamW moments, the EMA and the counters.
3. Steps: the program trains; each record is averaged over ranks and, on rank 0, appended to
   ``metrics.jsonl``, logged to the job's MLflow run and printed as progress. A streak of
   ``fault.max_consecutive_nonfinite`` skipped steps stops the run, naming the last good checkpoint.
4. Whole-trainer checkpoints every ``checkpoint.every_n_steps`` steps and at the end (layout-independent:
   weights and moments by name, so a run resumes on another number of workers or ZeRO stage).
5. The end: final weights, the exported model (the EMA when kept) in ``final/model`` (a ``save_generator``
   directory), a loss plot and a sample video as artifacts, and the registered model version.

Every random draw of a program is a function of (seed, step, global sample index), so the step count is
the whole data position and RNG state of a checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..config import PlatformConfig
from ..tracking import NullTracker, Tracker, register_generator
from .checkpoint_store import CHECKPOINT_DIR, Checkpoint, CheckpointStore
from .config import EMAConfig, OptimConfig
from .ema import EMA
from .engine_state import EngineState, load_weights, read_state, save_state
from .job_config import TrainingJobBase
from .local import TrainState
from .optim import RoleOptimizer
from .reporting import ProgressPrinter, write_loss_plot
from .run_storage import RunStorage
from .worker import BatchLayout

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"  # one line per step (rank 0, averaged over ranks): losses, phase times, memory
FINAL_DIR = "final"  # generator.pt, ema.pt (fp32 state dicts), model/ (the export), program extras
MODEL_DIR = "model"  # final/model: the exported network as a save_generator directory (what is registered)
PIDS_DIR = "pids"  # worker_<rank>.pid (+ the program's processes) of the current attempt
ATTEMPTS_FILE = "attempts.jsonl"
GENERATOR_PREFIX = "generator"  # checkpoint files of the trained network ("generator" whatever it is)
STATE_FILE = "state.json"
EMA_FILE = "ema.safetensors"
_NEVER = 2**62  # EMA start step of programs that keep none: the trained weights are exported


class Collective(Protocol):
    """How the ranks of one run agree (a process group, or nothing in one process)."""

    rank: int
    world_size: int

    def all_reduce_mean(self, metrics: dict[str, float]) -> dict[str, float]: ...

    def broadcast(self, value: Any) -> Any: ...

    def barrier(self) -> None: ...


class SingleProcess:
    """The collective of a run in one process."""

    rank, world_size = 0, 1

    def all_reduce_mean(self, metrics: dict[str, float]) -> dict[str, float]:
        return metrics

    def broadcast(self, value: Any) -> Any:
        return value

    def barrier(self) -> None:
        return None


@dataclass
class TrainedNetwork:
    """The network a job trains, as the engine holds it: ``model`` (the plain module: parameter names for
    the EMA and exports), ``runner`` (what forwards go through: the DeepSpeed engine or the model), its
    optimiser, and how to gather / restore the optimiser state (collectives under ZeRO 2/3)."""

    model: nn.Module
    runner: nn.Module
    optimizer: RoleOptimizer
    consolidate: Callable[[], EngineState]
    load_optimizer: Callable[[EngineState], None]


EngineFactory = Callable[[nn.Module, OptimConfig], TrainedNetwork]


@dataclass
class LoopContext:
    """What a program learns about the run when it starts."""

    job: TrainingJobBase
    output_dir: Path
    device: torch.device
    layout: BatchLayout
    collective: Collective
    resumed: Checkpoint | None


class StepProgram(Protocol):
    """One kind of training on the shared loop (``training.programs``)."""

    kind: str
    optim: OptimConfig  # AdamW of the trained network
    ema: EMAConfig | None  # None: no EMA, the trained weights are exported

    def build_network(self, device: torch.device) -> nn.Module:
        """The trained network with its starting weights (a checkpoint's weights are loaded after)."""

    def start(self, ctx: LoopContext, net: TrainedNetwork, ema: EMA, state: TrainState) -> None:
        """Build what the steps need (data, roles, actors); ``state`` and ``ema`` are the loop's objects."""

    def train_step(self) -> list[dict[str, float]]:
        """One step; the records of the steps completed by it (one step late when work is overlapped)."""

    def flush(self) -> list[dict[str, float]]:
        """Wait for in-flight work; the records it completes."""

    def save_state(self, folder: Path | None) -> None:
        """The program's own part of a checkpoint (every rank calls; ``folder`` on rank 0, else None)."""

    def finish(self, folder: Path | None) -> None:
        """Final files beyond the trained network's (every rank calls; ``folder`` on rank 0)."""

    def sample_video(self, model: nn.Module, platform: PlatformConfig, path: Path) -> Path | None:
        """A sample of the exported model as MP4 (rank 0), or None."""

    def close(self) -> None:
        """Release what ``start`` built (actors, placement groups)."""


def checkpoint_store(job: TrainingJobBase, output_dir: str | Path) -> CheckpointStore:
    return CheckpointStore(Path(output_dir) / CHECKPOINT_DIR, job.checkpoint.num_to_keep)


def resolve_checkpoint(
    job: TrainingJobBase, store: CheckpointStore, storage: RunStorage | None = None
) -> Checkpoint | None:
    """Where this attempt starts: the newest complete checkpoint of the run, else ``checkpoint.resume_from``
    (with a URI storage: the newest good remote one, downloaded into ``store``)."""
    if storage is not None and storage.is_remote:
        return storage.resolve(store, job.checkpoint.resume_from)
    store.clean_staging()
    latest = store.latest()
    if latest is not None:
        return latest
    if job.checkpoint.resume_from:
        return store.verify(Path(job.checkpoint.resume_from))
    return None


def read_history(path: Path) -> list[dict[str, float]]:
    """The run's step records over all attempts (a step re-run after a rollback counts once: the last)."""
    if not path.exists():
        return []
    by_step = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[int(record["step"])] = record
    return [by_step[k] for k in sorted(by_step)]


def export_platform(job: TrainingJobBase) -> PlatformConfig:
    """The job's platform as the exported model is saved and served: fp32, device auto, no checkpointing."""
    return job.platform.model_copy(update={"runtime": job.platform.runtime.model_copy(
        update={"dtype": "float32", "device": "auto", "gradient_checkpointing": False})})


class TrainingLoop:
    """One rank's run of ``program`` (see the module docstring)."""

    def __init__(
        self, job: TrainingJobBase, program: StepProgram, collective: Collective, engine: EngineFactory,
        output_dir: str | Path, device: torch.device, tracker: Tracker | None = None,
        run_id: str | None = None, tracking_uri: str | None = None, progress_stream=None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> None:
        self.job, self.program, self.collective = job, program, collective
        self.rank, self.world = collective.rank, collective.world_size
        self.out, self.device = Path(output_dir), device
        self.run_id, self.tracking_uri, self.on_step = run_id, tracking_uri, on_step
        (self.out / PIDS_DIR).mkdir(parents=True, exist_ok=True)
        (self.out / PIDS_DIR / f"worker_{self.rank}.pid").write_text(str(os.getpid()))

        # 1. Where to start (rank 0 decides, everyone follows; with a URI storage each process downloads
        #    the checkpoint when its node lacks it, and rank 0 continues the run's records).
        self.storage = RunStorage.for_run(job.run, self.out)
        if self.rank == 0:
            self.storage.pull(METRICS_FILE, ATTEMPTS_FILE)
        self.store = checkpoint_store(job, self.out)
        found = resolve_checkpoint(job, self.store, self.storage) if self.rank == 0 else None
        self.resumed: Checkpoint | None = collective.broadcast(found)
        if self.resumed is not None and self.rank != 0:
            self.resumed = self.storage.ensure_local(self.resumed)
        saved = read_state(self.resumed.path, GENERATOR_PREFIX) if self.resumed else None

        # 2. The network in its engine: weights before the engine is built, optimiser state after.
        model = program.build_network(device)
        if saved is not None:
            load_weights(model, saved)
        self.net = engine(model, program.optim)
        self.state = TrainState()
        self.ema = EMA(program.ema or EMAConfig(start_step=_NEVER))
        if self.resumed is not None:
            self.net.load_optimizer(saved)
            saved_state = json.loads(self.resumed.file(STATE_FILE).read_text())
            self.state = TrainState(**saved_state["train_state"])
            counters = saved_state["generator_optimizer"]  # the moments are in the engine state above
            self.net.optimizer.skipped, self.net.optimizer.applied = counters["skipped"], counters["applied"]
            if self.resumed.file(EMA_FILE).exists():
                from safetensors.torch import load_file

                shadow = load_file(str(self.resumed.file(EMA_FILE)))
                self.ema.shadow = {k: v.to(device) for k, v in shadow.items()}

        # 3. The program, tracking and progress.
        s = job.scaling
        layout = BatchLayout(self.rank, self.world, job.micro_batch_size, s.gradient_accumulation_steps)
        if self.rank == 0:
            with (self.out / ATTEMPTS_FILE).open("a") as f:
                f.write(json.dumps({"resumed_from": self.resumed.step if self.resumed else None,
                                    "checkpoint": str(self.resumed.path) if self.resumed else None}) + "\n")
            self.storage.push(ATTEMPTS_FILE)
        program.start(LoopContext(job, self.out, device, layout, collective, self.resumed), self.net, self.ema,
                      self.state)
        self.tracker: Tracker = tracker if tracker is not None and self.rank == 0 else NullTracker()
        self.progress = ProgressPrinter(job.run.name, job.training.max_steps, self.state.step, progress_stream)
        if self.rank == 0 and self.resumed is not None:
            self.progress.note(f"resumed from {self.resumed.source or self.resumed.path} (step {self.resumed.step})")
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ per step
    def record(self, records: list[dict[str, float]]) -> None:
        for record in records:
            if not self.history and hasattr(self.net.optimizer, "memory_footprint"):
                record.update(self.net.optimizer.memory_footprint())  # after the first step: state exists
            record = self.collective.all_reduce_mean(record)
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
        self.record(self.program.flush())
        step = self.state.step
        network = self.net.consolidate()  # collective
        staging = self.store.stage(step) if self.rank == 0 else None
        self.program.save_state(staging)
        if staging is not None:
            save_state(network, staging, GENERATOR_PREFIX)
            if self.ema.active:
                from safetensors.torch import save_file

                save_file({k: v.detach().float().cpu().contiguous() for k, v in self.ema.shadow.items()},
                          str(staging / EMA_FILE))
            s = self.job.scaling
            (staging / STATE_FILE).write_text(json.dumps({
                "train_state": asdict(self.state),
                "generator_optimizer": {"skipped": self.net.optimizer.skipped, "applied": self.net.optimizer.applied},
                "layout": {"num_workers": self.world, "zero_stage": s.zero_stage,
                           "gradient_accumulation_steps": s.gradient_accumulation_steps},
            }))
            saved = self.storage.push_checkpoint(self.store.commit(staging, step), self.job.checkpoint.num_to_keep)
            self.storage.push(METRICS_FILE, ATTEMPTS_FILE)
            self.progress.note(f"checkpoint {saved.source or saved.path}")
        self.collective.barrier()

    def train(self) -> str | None:
        """Train to ``max_steps``; returns why it stopped early (non-finite training), else None."""
        job, state = self.job, self.state
        every = job.checkpoint.every_n_steps
        limit = job.fault.max_consecutive_nonfinite
        while state.step < job.training.max_steps:
            self.record(self.program.train_step())
            if state.consecutive_skipped_steps >= limit:
                self.record(self.program.flush())
                last = self.storage.latest_location(self.store) if self.rank == 0 else None
                return (f"{state.consecutive_skipped_steps} steps in a row had a non-finite loss or gradient "
                        f"(fault.max_consecutive_nonfinite={limit}) at step {state.step}; the last good "
                        f"checkpoint is {last[0] if last else 'none (no checkpoint was written)'}")
            if self.on_step is not None:
                self.on_step(state.step, job.training.max_steps)
            if every and state.step % every == 0 and state.step < job.training.max_steps:
                self.checkpoint()
        self.checkpoint()
        return None

    # ------------------------------------------------------------------ the end
    def run(self) -> dict[str, Any]:
        """Train, then write the final weights, export and register (rank 0 keeps the summary)."""
        try:
            summary = self._run()
        except BaseException:
            try:
                self.program.close()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
            raise
        self.program.close()
        return summary

    def _run(self) -> dict[str, Any]:
        stopped = self.train()
        summary: dict[str, Any] = {"steps": self.state.step, "state": asdict(self.state),
                                   "finished": stopped is None, "job": self.program.kind}
        if stopped is not None:
            summary["stopped"] = stopped
        else:
            final = self.out / FINAL_DIR
            self._save_final_weights(final)
            self.program.finish(final if self.rank == 0 else None)
            export = self._export_model()  # ZeRO-3 gathers on every rank
            if self.rank == 0:
                summary.update(self._finish(export, final))
        if self.rank == 0:
            (self.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
            self.storage.push(FINAL_DIR, METRICS_FILE, ATTEMPTS_FILE, SUMMARY_FILE)  # the summary last
            self.tracker.close("FINISHED" if stopped is None else "FAILED")
        return summary

    def _save_final_weights(self, folder: Path) -> None:
        """generator.pt and ema.pt: fp32 state dicts of the plain network, for inspection and tests."""
        with self.net.optimizer.full_parameters():
            if self.rank == 0:
                folder.mkdir(parents=True, exist_ok=True)
                state = {k: v.detach().float().cpu().clone() for k, v in self.net.model.state_dict().items()}
                torch.save(state, folder / "generator.pt")
                if self.ema.active:
                    torch.save({k: v.float().cpu() for k, v in self.ema.shadow.items()}, folder / "ema.pt")

    def _export_model(self) -> nn.Module:
        """A plain fp32 CPU copy of the weights to serve: the EMA when active, else the trained weights."""
        from ..models.factory import build_dit

        plain = build_dit(export_platform(self.job), device="cpu")
        with torch.no_grad():
            if self.ema.active:
                self.ema.copy_to(plain)
            else:
                with self.net.optimizer.full_parameters():
                    for p, q in zip(plain.parameters(), self.net.model.parameters(), strict=True):
                        p.copy_(q.detach().float().cpu())
        return plain.eval().requires_grad_(False)

    def _finish(self, model: nn.Module, final: Path) -> dict[str, Any]:
        """The export as ``final/model``, the loss plot and a sample video as artifacts, the registration."""
        from ..models.factory import save_generator

        job = self.job
        history = read_history(self.out / METRICS_FILE) or self.history
        summary: dict[str, Any] = {"final_metrics": history[-1] if history else {}}
        platform = export_platform(job)
        folder = save_generator(platform, model, final / MODEL_DIR)
        summary["model_dir"] = str(folder)
        with tempfile.TemporaryDirectory() as tmp:
            plot = write_loss_plot(history, Path(tmp) / "losses.png")
            if plot is not None:
                self.tracker.log_artifact(plot)
            if job.logging.sample_video:
                video = self.program.sample_video(model, platform, Path(tmp) / "sample.mp4")
                if video is not None:
                    self.tracker.log_artifact(video)
        if job.tracking.register_as and self.run_id is not None:
            registered = register_generator(
                folder, job.tracking.register_as, alias=job.tracking.alias, tracking_uri=self.tracking_uri,
                run_id=self.run_id, tags={"job": self.program.kind, "preset": str(job.platform.preset)},
            )
            summary["model_uri"] = registered.model_uri
            summary["model_version"] = registered.version
        return summary
