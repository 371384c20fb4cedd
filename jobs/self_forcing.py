"""Distributed Self Forcing training (DMD / SiD / GAN; CausVid via training.rollout.kind).

    python jobs/self_forcing.py --config jobs/configs/tiny_dmd.yaml [--max-steps N] [key.sub=value ...]
    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/self_forcing.py --config jobs/configs/tiny_dmd.yaml

Without a cluster address it starts an embedded local Ray; under `ray job submit` it joins the cluster.
"""

from __future__ import annotations

import argparse
import sys

from selfforcing.config import ConfigError
from selfforcing.config.job import load_job_config
from selfforcing.training.job_config import SelfForcingJobConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="job YAML (see jobs/configs/)")
    parser.add_argument("--max-steps", type=int, default=None, help="override training.max_steps")
    parser.add_argument("--resume-from", default=None, help="start from this checkpoint folder")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.batch_size=8")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.resume_from:
        overrides.append(f"checkpoint.resume_from={args.resume_from}")
    try:
        job = load_job_config(SelfForcingJobConfig, args.config, overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from selfforcing.training.distributed.launch import TrainingStopped, run_self_forcing

    try:
        outcome = run_self_forcing(job, max_steps=args.max_steps)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingStopped as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if outcome.already_finished:
        return 0
    print(f"[{job.run.name}] finished {outcome.steps} steps; MLflow run {outcome.run_id}; "
          f"model {outcome.model_uri or '(not registered)'}; outputs in {outcome.output_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
