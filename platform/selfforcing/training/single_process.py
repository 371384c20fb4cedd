"""A training job in this process: the same step program and loop as on Ray, without Ray or DeepSpeed.

The trained network steps with torch's AdamW behind the guarded step (``GuardedOptimizer``: clipping, and
non-finite steps skipped and counted), gradient accumulation over ``scaling.gradient_accumulation_steps``
micro-batches, and Self Forcing's critic in this process (``LocalScoring``). Checkpoints have the layout
of the distributed job's, so either resumes the other. This is how the toy-world recipe runs its stages
(``selfforcing toyworld run``) and how small jobs run without a cluster; MLflow tracking is optional.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from torch import nn

from ..models.factory import resolve_device
from .config import OptimConfig
from .engine_state import load_local_optimizer, local_state
from .job_config import TrainingJobBase
from .loop import SingleProcess, TrainedNetwork, TrainingLoop
from .optim import GuardedOptimizer
from .programs import build_program
from .runs import (
    TrainingOutcome,
    finished_outcome,
    open_run,
    outcome_from_summary,
    prepare_output,
    run_output_dir,
)


def local_engine(accumulation_steps: int) -> Callable[[nn.Module, OptimConfig], TrainedNetwork]:
    """The loop's engine factory in one process: the module itself with a guarded AdamW."""

    def build(model: nn.Module, optim: OptimConfig) -> TrainedNetwork:
        opt = GuardedOptimizer(model.parameters(), optim, accumulation_steps=accumulation_steps)
        return TrainedNetwork(model, model, opt, lambda: local_state(model, opt.optimizer),
                              lambda state: load_local_optimizer(model, opt.optimizer, state))

    return build


def run_single_process(
    job: TrainingJobBase, max_steps: int | None = None, track: bool = False, quiet: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainingOutcome:
    """Train ``job`` here (``scaling.num_workers`` must be 1). ``track``: an MLflow run (and the model
    registered when ``tracking.register_as`` is set) as the Ray driver makes; ``on_step(done, total)`` is
    called after every step (a caller's wall-clock guard); ``quiet`` prints nothing."""
    if job.scaling.num_workers != 1:
        raise ValueError(
            f"scaling.num_workers={job.scaling.num_workers}: a single-process run has one worker; "
            "use gradient_accumulation_steps to keep the global batch, or run it on Ray"
        )
    job = job.with_max_steps(max_steps)
    output_dir = run_output_dir(job)
    done = finished_outcome(job, output_dir, quiet)
    if done is not None:
        return done
    prepare_output(job, output_dir)
    tracker = None
    tracking_uri = None
    if track:
        from ..tracking import tracking_uri_or_default

        tracking_uri = tracking_uri_or_default(job.tracking.tracking_uri)
        job = job.with_tracking_uri(tracking_uri)
        tracker = open_run(job, output_dir, tracking_uri)
    try:
        loop = TrainingLoop(
            job, build_program(job), SingleProcess(), local_engine(job.scaling.gradient_accumulation_steps),
            output_dir, resolve_device(job.platform.runtime.device), tracker,
            run_id=None if tracker is None else tracker.run_id, tracking_uri=tracking_uri,
            progress_stream=io.StringIO() if quiet else None, on_step=on_step,
        )
        loop.run()
    except BaseException:
        if tracker is not None:
            tracker.close("FAILED")
        raise
    return outcome_from_summary(job, output_dir, None if tracker is None else tracker.run_id, pull=False)
