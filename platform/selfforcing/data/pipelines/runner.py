"""What the data jobs share: shard tasks over a Ray Data actor pool, and the job's MLflow run.

A job splits its output into shards, writes a manifest (``shards.ShardedDataset.prepare``), and hands the
missing shards to ``run_shard_pool``: a Ray Data dataset with one row per shard task, mapped by a callable
class (one model per actor, ``num_cpus`` / ``num_gpus`` per actor, a fixed pool). Each actor computes a
whole shard and writes it itself (atomically, then its completion mark); only a small summary per shard
comes back to the driver, which logs progress as shards finish.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ...cluster import connect_ray
from ...config.job import dump_job_config
from ...tracking import MlflowTracker
from ..shards import ShardedDataset
from .config import ActorPoolConfig, DataJobConfig


@dataclass(frozen=True)
class ShardSummary:
    """One finished shard, as the driver sees it."""

    index: int
    rows: int
    seconds: float
    pid: int


class ShardActor(ABC):
    """Base of the pools' callable classes: ``compute(task) -> table`` of one shard; the base writes it.

    Ray Data builds one instance per actor (the model is loaded once, in ``__init__``) and calls it with
    batches of shard tasks (one per call: ``batch_size=1``).
    """

    kind: str

    def __init__(self, output: str) -> None:
        self.dataset = ShardedDataset(output, self.kind)

    @abstractmethod
    def compute(self, task: dict[str, Any]) -> pa.Table:
        """The rows of the shard ``task`` describes (a table of this actor's dataset kind)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list] = {"index": [], "rows": [], "seconds": [], "pid": []}
        for text in batch["task"]:
            task = json.loads(str(text))
            start = time.perf_counter()
            mark = self.dataset.write_shard(int(task["index"]), self.compute(task))
            for key, value in (("index", mark.index), ("rows", mark.rows),
                               ("seconds", time.perf_counter() - start), ("pid", os.getpid())):
                out[key].append(value)
        return {k: np.asarray(v) for k, v in out.items()}


def run_shard_pool(
    tasks: Sequence[dict[str, Any]],
    actor_cls: type[ShardActor],
    constructor_kwargs: dict[str, Any],
    pool: ActorPoolConfig,
    on_shard: Callable[[ShardSummary], None] | None = None,
) -> list[ShardSummary]:
    """Compute ``tasks`` (JSON-able dicts with an ``index``) on a pool of ``actor_cls`` actors.

    Returns a summary per shard in completion order. An exception in an actor fails the job (Ray Data
    does not retry application errors); an actor that dies is restarted and its shard recomputed.
    """
    if not tasks:
        return []
    import ray.data

    ds = ray.data.from_items([{"task": json.dumps(t)} for t in tasks], override_num_blocks=len(tasks))
    ds = ds.map_batches(
        actor_cls, fn_constructor_kwargs=constructor_kwargs, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(pool.size, len(tasks))),
        num_cpus=pool.num_cpus, num_gpus=pool.num_gpus,
    )
    summaries = []
    for row in ds.iter_rows():
        summary = ShardSummary(int(row["index"]), int(row["rows"]), float(row["seconds"]), int(row["pid"]))
        summaries.append(summary)
        if on_shard is not None:
            on_shard(summary)
    return summaries


def shard_ranges(num_rows: int, shard_size: int) -> list[range]:
    """Row ranges of consecutive shards of ``shard_size`` rows (the last may be shorter)."""
    return [range(a, min(a + shard_size, num_rows)) for a in range(0, num_rows, shard_size)]


def git_commit() -> str | None:
    """The commit of the package's checkout, or None (an installed package, ``ray job submit`` uploads)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def job_tracker(config: DataJobConfig, job: str, output: Path) -> MlflowTracker:
    """The job's MLflow run: named after ``run.name``; params = the flattened config; tags = job name,
    preset, output, git commit (when known). The resolved config is logged as ``config.yaml``."""
    tags = {"selfforcing.job": job, "selfforcing.preset": config.platform.preset or "custom",
            "selfforcing.output": str(output)}
    commit = git_commit()
    if commit:
        tags["selfforcing.git_commit"] = commit
    tracker = MlflowTracker(config.tracking.tracking_uri, config.tracking.experiment, config.run.name, tags)
    params = _flat(config.model_dump(mode="json"))
    keys = sorted(params)
    for a in range(0, len(keys), 100):  # MLflow accepts at most 100 params per batch
        tracker.log_params({k: params[k] for k in keys[a : a + 100]})
    return tracker


def log_config_artifact(tracker: MlflowTracker, config: DataJobConfig) -> None:
    """The validated config the job ran with, as ``config.yaml`` of its run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(dump_job_config(config))
        tracker.log_artifact(path)


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass
class ShardPlan:
    """A job's output decided on the driver: where, what kind, how many shards, and what makes them."""

    output: Path
    kind: str
    num_shards: int
    rows: int
    fingerprint: dict[str, Any]
    task: Callable[[int], dict[str, Any]]


@dataclass
class DataJobResult:
    """What a data job run did: the dataset it writes and which shards it computed or found finished."""

    output: Path
    rows: int
    num_shards: int
    computed: list[int]
    skipped: list[int]
    remaining: list[int]
    run_id: str
    seconds: float
    summaries: list[ShardSummary] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.remaining

    def summary(self) -> dict[str, Any]:
        """A JSON-able line for logs and scripts."""
        return {"output": str(self.output), "rows": self.rows, "num_shards": self.num_shards,
                "computed": self.computed, "skipped": self.skipped, "remaining": self.remaining,
                "complete": self.complete, "run_id": self.run_id, "seconds": round(self.seconds, 3)}


def run_sharded_job(
    config: DataJobConfig, job: str, plan: ShardPlan, actor_cls: type[ShardActor], unit: str,
    actor_kwargs: dict[str, Any] | None = None,
) -> DataJobResult:
    """Prepare the dataset, compute its missing shards (at most ``config.max_shards``) on the actor pool,
    and record the run in MLflow (metrics per finished shard; ``unit`` names the rows, e.g. ``pairs``).
    Actors are built as ``actor_cls(output=..., config=config, **actor_kwargs)``."""
    start = time.perf_counter()
    dataset = ShardedDataset(plan.output, plan.kind)
    dataset.prepare(plan.num_shards, plan.fingerprint)
    missing = dataset.missing()
    todo = missing[: config.max_shards] if config.max_shards else missing
    skipped = sorted(set(range(plan.num_shards)) - set(missing))
    tracker = job_tracker(config, job, plan.output)
    started = False
    summaries: list[ShardSummary] = []

    def on_shard(s: ShardSummary) -> None:
        summaries.append(s)
        tracker.log_metrics({"shards_done": len(summaries), f"{unit}_done": sum(x.rows for x in summaries),
                             "shard_seconds": s.seconds}, step=len(summaries))

    try:
        log_config_artifact(tracker, config)
        tracker.log_metrics({"shards_total": plan.num_shards, "shards_skipped": len(skipped), unit: plan.rows})
        started = connect_ray(config.ray)
        run_shard_pool([plan.task(i) for i in todo], actor_cls,
                       {"output": str(plan.output), "config": config, **(actor_kwargs or {})}, config.pool, on_shard)
        seconds = time.perf_counter() - start
        rows = sum(s.rows for s in summaries)
        tracker.log_metrics({"shards_computed": len(summaries), "seconds": seconds,
                             f"{unit}_per_second": rows / seconds if seconds > 0 else 0.0})
    except BaseException:
        tracker.close("FAILED")
        raise
    finally:
        if started:
            import ray

            ray.shutdown()
    tracker.close("FINISHED")
    return DataJobResult(plan.output, plan.rows, plan.num_shards, sorted(s.index for s in summaries), skipped,
                         dataset.missing(), tracker.run_id, seconds, summaries)
