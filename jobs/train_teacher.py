"""Flow-matching training of a bidirectional teacher (or the causal Teacher / Diffusion Forcing baselines)
on Ray Train with DeepSpeed: the toy world's teacher, or fine-tuning a Wan teacher on a latents dataset.

    python jobs/train_teacher.py --config jobs/configs/tiny_teacher.yaml [--max-steps N] [key.sub=value ...]
    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/train_teacher.py --config jobs/configs/toy_teacher.yaml

Registers the EMA teacher as tracking.register_as (models:/<name>-teacher@candidate), which
jobs/ode_pairs.py and jobs/ode_init.py take as their teacher.
"""

from __future__ import annotations

import sys

from selfforcing.training.job_cli import main as run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("teacher", argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
