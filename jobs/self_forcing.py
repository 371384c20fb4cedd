"""Distributed Self Forcing training (DMD / SiD / GAN; CausVid via training.rollout.kind).

    python jobs/self_forcing.py --config jobs/configs/tiny_dmd.yaml [--max-steps N] [key.sub=value ...]
    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/self_forcing.py --config jobs/configs/tiny_dmd.yaml

Without a cluster address it starts an embedded local Ray; under `ray job submit` it joins the cluster.
The generator starts from models.generator (the ODE-initialised student: models:/<name>-ode-init@candidate).
"""

from __future__ import annotations

import sys

from selfforcing.training.job_cli import main as run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("self_forcing", argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
