"""The step programs of the shared training loop (``training.loop``), one per training job.

- ``self_forcing``: Self Forcing / CausVid against a scoring backend (Ray actors or in-process).
- ``denoising``: flow matching on videos (the teacher; the Teacher / Diffusion Forcing baselines).
- ``ode_init``: regression of the causal student onto teacher ODE trajectories.

``JOB_CONFIGS`` maps a job kind to its typed config; ``build_program`` makes a job's program.
"""

from __future__ import annotations

from typing import Any

from ..job_config import SelfForcingJobConfig, TrainingJobBase
from ..loop import StepProgram
from ..supervised_config import ODEInitJobConfig, TeacherJobConfig

JOB_CONFIGS: dict[str, type[TrainingJobBase]] = {
    c.kind: c for c in (SelfForcingJobConfig, TeacherJobConfig, ODEInitJobConfig)
}


def job_config(kind: str, data: dict[str, Any]) -> TrainingJobBase:
    """The typed config of a job of ``kind`` from its dumped form (what crosses to Ray Train workers)."""
    if kind not in JOB_CONFIGS:
        raise ValueError(f"unknown training job kind {kind!r}; valid kinds: {sorted(JOB_CONFIGS)}")
    return JOB_CONFIGS[kind].model_validate(data)


def build_program(job: TrainingJobBase, scoring: Any = None) -> StepProgram:
    """The step program of ``job``; Self Forcing needs its ``scoring`` backend (where the critic lives)."""
    if isinstance(job, SelfForcingJobConfig):
        from .self_forcing import LocalScoring, SelfForcingProgram

        return SelfForcingProgram(job, scoring if scoring is not None else LocalScoring(job))
    if isinstance(job, TeacherJobConfig):
        from .denoising import DenoisingProgram

        return DenoisingProgram(job)
    if isinstance(job, ODEInitJobConfig):
        from .ode_init import ODEInitProgram

        return ODEInitProgram(job)
    raise TypeError(f"no step program for {type(job).__name__}; valid kinds: {sorted(JOB_CONFIGS)}")
