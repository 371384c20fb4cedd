"""The command line every training job shares (``jobs/self_forcing.py``, ``train_teacher.py``, ``ode_init.py``):
``--config YAML [--max-steps N] [--resume-from PATH] [--single-process] [key.sub=value ...]``.

Exit codes: 0 done (or already finished), 1 training stopped (non-finite, faults beyond the retry budget),
2 a bad config (the message names the field, the value and what is allowed).
"""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError
from ..config.job import load_job_config


def main(kind: str, argv: list[str] | None = None, description: str | None = None) -> int:
    from .programs import JOB_CONFIGS

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="job YAML (see jobs/configs/)")
    parser.add_argument("--max-steps", type=int, default=None, help="override training.max_steps")
    parser.add_argument("--resume-from", default=None, help="start from this checkpoint folder")
    parser.add_argument("--single-process", action="store_true",
                        help="train in this process (no Ray, plain AdamW; scaling.num_workers must be 1)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.batch_size=8")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.resume_from:
        overrides.append(f"checkpoint.resume_from={args.resume_from}")
    try:
        job = load_job_config(JOB_CONFIGS[kind], args.config, overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from .runs import TrainingStopped

    try:
        if args.single_process:
            from .single_process import run_single_process

            outcome = run_single_process(job, max_steps=args.max_steps, track=True)
        else:
            from .distributed.launch import run_training

            outcome = run_training(job, max_steps=args.max_steps)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingStopped as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if outcome.already_finished:
        return 0
    print(f"[{job.run.name}] finished {outcome.steps} steps; MLflow run {outcome.run_id}; "
          f"model {outcome.model_uri or outcome.model_dir}; outputs in {outcome.output_dir}", flush=True)
    return 0
