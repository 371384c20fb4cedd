"""ODE initialisation: the block-causal student, from the teacher's weights, regressed onto the teacher's
ODE trajectories (the output of jobs/ode_pairs.py), on Ray Train with DeepSpeed.

    python jobs/ode_init.py --config jobs/configs/tiny_ode_init.yaml [--max-steps N] [key.sub=value ...]
    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/ode_init.py --config jobs/configs/toy_ode_init.yaml

Registers the student as tracking.register_as (models:/<name>-ode-init@candidate), the generator that
jobs/self_forcing.py starts from.
"""

from __future__ import annotations

import sys

from selfforcing.training.job_cli import main as run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("ode_init", argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
